package ipam

import (
	"net/netip"
	"strings"
	"sync"

	"github.com/weftnet/weft/mesh"
)

// Table is the replicated table the allocator shares with the other
// hosts: a mesh table in the plugin, an in-memory fake in tests. Every
// host writes only its own entries; an entry of a host that is not alive
// is not shown. Implementations are safe for concurrent use, never block
// on the network and never call back into the allocator.
type Table interface {
	// Self is this host's name; the entries it writes carry it as Owner.
	Self() string
	// Put writes (or overwrites) one of this host's entries.
	Put(key string, value []byte)
	// Delete removes one of this host's entries; removing an absent one
	// does nothing.
	Delete(key string)
	// Entries returns copies of the entries of this host and of the hosts
	// alive now.
	Entries() []mesh.Entry
	// Alive returns the names of the hosts alive now, this one included.
	Alive() []string
	// Changes receives a value, coalesced, whenever Entries or Alive may
	// have changed.
	Changes() <-chan struct{}
}

// Keys of the table. Every key names its owner, so no two hosts ever write
// one key:
//
//	h/<owner>            hostRec: epoch, foreign addresses, wants
//	c/<owner>/<block>    claimRec: a claim on a block
//	v/<owner>/<block>    voteRec: the owner's vote on a block
//	d/<owner>/<host>     deadRec: the owner has seen host dead, or removed
//	g/<owner>/<to>/<ip>  grantRec: an address of the owner's block lent to, or refused to, host to
const (
	kindHost  = "h"
	kindClaim = "c"
	kindVote  = "v"
	kindDead  = "d"
	kindGrant = "g"
)

func hostKey(owner string) string                  { return kindHost + "/" + owner }
func claimKey(owner string, b netip.Prefix) string { return kindClaim + "/" + owner + "/" + b.String() }
func voteKey(owner string, b netip.Prefix) string  { return kindVote + "/" + owner + "/" + b.String() }
func deadKey(owner, host string) string            { return kindDead + "/" + owner + "/" + host }
func grantKey(owner, to string, a netip.Addr) string {
	return kindGrant + "/" + owner + "/" + to + "/" + a.String()
}

// KeyOwner names the host a key of the IPAM's mesh table belongs to (the
// mesh's Config.KeyOwner for MeshTableName): the segment after the kind.
func KeyOwner(key string) string {
	_, rest, _ := strings.Cut(key, "/")
	owner, _, _ := strings.Cut(rest, "/")
	return owner
}

// splitKey returns the kind and the subject (block, host or address) of
// owner's key; ok is false for a key that is not owner's.
func splitKey(owner, key string) (kind, subject string, ok bool) {
	kind, rest, found := strings.Cut(key, "/")
	if !found {
		return "", "", false
	}
	if kind == kindHost {
		return kind, "", rest == owner
	}
	o, subject, found := strings.Cut(rest, "/")
	if !found || o != owner {
		// Owner names hold no "/" (they are host names), so the first
		// segment is the owner.
		return "", "", false
	}
	return kind, subject, true
}

// hostRec is a host's own entry.
type hostRec struct {
	// Epoch grows each time the host learns the others removed it.
	Epoch uint64 `json:"epoch"`
	// Restoring: the host came back after a removal and has not yet
	// re-homed the addresses it kept; its Foreign list is not complete.
	Restoring bool `json:"restoring,omitempty"`
	// Foreign are addresses this host uses in blocks it does not hold.
	Foreign []netip.Addr `json:"foreign,omitempty"`
	// Wants are addresses this host asks their block's holder to lend.
	Wants []netip.Addr `json:"wants,omitempty"`
}

// claimRec is a host's claim on a block.
type claimRec struct {
	Pool  string `json:"pool"`
	Epoch uint64 `json:"epoch"`
	// Limit: the holder uses the first Limit addresses of the block at
	// most, and only those a majority has seen.
	Limit int `json:"limit"`
	// Used marks the addresses in use, as information for the others
	// (a request for a specific address is refused at once).
	Used bitmap `json:"used,omitempty"`
	// Released: the claim is given up; voters drop their votes.
	Released bool `json:"released,omitempty"`
	// Quar are the windows of removed hosts in the block, never handed out
	// until their host is back and has listed what it still uses.
	Quar []quarSpan `json:"quar,omitempty"`
}

// quarSpan is a quarantined range of a removed host.
type quarSpan struct {
	Host  string `json:"host"`
	Epoch uint64 `json:"epoch"`
	span
}

// voteRec is a host's vote for one claim on a block.
type voteRec struct {
	For   string `json:"for"`
	Epoch uint64 `json:"epoch"` // the claim's
	// Seen is the largest Limit of the claim the voter has seen.
	Seen int `json:"seen"`
	// Voter is the voter's own epoch; votes from an older one are void.
	Voter uint64 `json:"voter"`
}

// deadRec says that the owner has seen a host dead for the reclaim time;
// with Removed, that a majority has, so the host is removed.
type deadRec struct {
	Epoch   uint64 `json:"epoch"` // the dead host's
	Removed bool   `json:"removed,omitempty"`
	// Windows are the dead host's windows as the owner saw them (merged
	// over the majority once Removed).
	Windows []span `json:"windows,omitempty"`
	Voter   uint64 `json:"voter"`
}

// grantRec answers a want: the address is lent to To, or refused.
type grantRec struct {
	To      string `json:"to"`
	Refused string `json:"refused,omitempty"`
}

// loneTable serves an allocator that has no mesh: this host alone.
type loneTable struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newLoneTable() *loneTable { return &loneTable{m: map[string][]byte{}} }

const loneName = "local"

func (t *loneTable) Self() string { return loneName }

func (t *loneTable) Put(key string, value []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[key] = append([]byte(nil), value...)
}

func (t *loneTable) Delete(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
}

func (t *loneTable) Entries() []mesh.Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]mesh.Entry, 0, len(t.m))
	for k, v := range t.m {
		out = append(out, mesh.Entry{Owner: loneName, Key: k, Value: append([]byte(nil), v...)})
	}
	return out
}

func (t *loneTable) Alive() []string          { return []string{loneName} }
func (t *loneTable) Changes() <-chan struct{} { return nil }
