package mesh

// This file owns the wire: how messages and node metadata are encoded and
// decoded, and the rule that keeps builds of different protocols talking.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"
	"unsafe"
)

// Wire format. Every message the mesh hands to memberlist starts with a
// three-byte header: magic, version, type. Integers are unsigned varints,
// strings and byte slices are a varint length followed by the bytes.
//
//	entries message (msgBroadcast, msgSync): count, then count entries
//	entry:  table, key, owner, clock, flags (bit 0: deleted), then
//	        deleted: residual time to reap, in milliseconds
//	        live:    value
//	digest message (msgDigest): sender, flags (bit 0: reply wanted, bit 1:
//	        the sender reads blocks messages, always set, bit 2: an answer,
//	        send nothing back), count, then
//	        count × (owner, entries, max clock, 8-byte little-endian hash)
//	blocks message (msgBlocks): count, then count × block
//	block:  owner, entries, max clock, 8-byte hash (the sender's digest of
//	        that owner), body length, body (count, then count entries)
//	answer message (msgAnswer): a digest message's body, then a blocks
//	        message's body
//	leave message (msgLeave): node name
//	node metadata (memberlist's, not a message): protocol, version, down
//	        grace in milliseconds (builds from before the down state end
//	        after the version)
//
// A tombstone carries how long it has left to live rather than a deadline,
// so every holder reaps it at about the same moment whatever its wall clock
// says, and a tombstone that reaches a node which already reaped it comes
// back with nothing left to live and is not stored again.
//
// Decoding never trusts a length: each is checked against what is left of
// the buffer and against a per-field limit before anything is allocated.
// Each message type has one decoder (receive in delegate.go dispatches);
// entries and blocks are read in place, as views into the message.
//
// Compatibility rule. Members of different builds share one mesh (a
// rolling upgrade runs them side by side), so the wire is versioned by a
// protocol number, not by the header:
//
//   - Protocol N is announced in the node metadata (encodeMeta); a member
//     with empty metadata is protocol 1 (builds before the announcement).
//   - The header's version byte stays 1: it names the framing above, which
//     every build reads. Builds of protocol 1 drop any other value.
//   - A member reads every message of protocol 1 and later that it knows,
//     and skips message types it does not know, silently.
//   - It sends a newer message type only to members whose metadata
//     announces a protocol that reads it.
//   - A change that an older member cannot read needs a new message type,
//     never a new layout of an old one. Fields may not be added to an
//     existing message; flags it ignores may be (the blocks and answer
//     flags of the digest were added so).
//   - Node metadata may grow by fields appended at its end; readers skip
//     what follows the fields they know.
//
// Protocol 1 is every message above. The digest's blocks flag dates from
// before any release: a digest without it was answered with entries
// messages, which this build no longer sends. The first release of
// protocol 1 sends blocks only to a digest that sets the flag, so this
// build always sets it, and reads any digest as one that does. msgSync is
// still read: a join carries the full state in it.
const (
	msgMagic   byte = 0xf7
	msgVersion byte = 1

	// msgBroadcast carries entries gossiped by the broadcast queue (or fanned
	// out over TCP when too large for a packet); a receiver whose table
	// changes passes them on.
	msgBroadcast byte = 'b'
	// msgSync carries a join's full state; its entries are not passed on
	// (anti-entropy spreads them further).
	msgSync byte = 's'
	// msgDigest carries a per-owner summary of the sender's table.
	msgDigest byte = 'd'
	// msgBlocks carries anti-entropy's entries grouped by owner, each group
	// with the sender's digest of that owner: a receiver whose digest of the
	// owner already equals it (another exchange brought the same entries
	// meanwhile) skips the group unread.
	msgBlocks byte = 'o'
	// msgAnswer answers a digest that asked for a reply: the answering
	// digest, then a blocks body with what the requester lacked. One
	// message, so the requester has merged the entries by the time it
	// reads the digest and starts its next exchange.
	msgAnswer byte = 'a'
	// msgLeave says the named node is leaving on purpose. memberlist's
	// event callbacks do not tell a node that left from one that died.
	msgLeave byte = 'l'

	headerLen = 3

	// Limits on decoded fields; Put refuses anything larger, so a message
	// beyond them is garbage or hostile.
	maxTableLen = 256
	maxKeyLen   = 4096
	maxOwnerLen = 512
	maxValueLen = 4 << 20
	// minEntryLen is the smallest possible encoded entry: empty table, key
	// and owner, one-byte clock, flags and one-byte value length or residual.
	minEntryLen = 6
	// maxDigestOwners bounds a digest: it names only alive members.
	maxDigestOwners = 4096
	// minDigestLen is the smallest encoded digest item.
	minDigestLen = 1 + 1 + 1 + 8
	// minBlockLen is the smallest encoded block: a digest item, a body
	// length and a body with no entries.
	minBlockLen = minDigestLen + 1 + 1

	flagDeleted = 1 << 0
	flagReply   = 1 << 0
	flagBlocks  = 1 << 1
	flagAnswer  = 1 << 2
)

var (
	errShort    = errors.New("truncated message")
	errTooLarge = errors.New("field exceeds its limit")
	errOverflow = errors.New("varint overflow")
)

// wireEntry is an entry as it travels: a tombstone also carries how long it
// has left before it is reaped.
type wireEntry struct {
	Entry
	Residual time.Duration
}

// ownerDigest summarises the entries (tombstones included) one owner has in
// a node's table: how many, the newest clock, and the XOR of their hashes,
// which does not depend on the order entries arrived in.
type ownerDigest struct {
	Owner    string
	Count    uint64
	MaxClock uint64
	Hash     uint64
}

// digestMsg is a node's summary of its table, sent so the receiver can send
// back what the sender lacks. On the wire it always says the sender reads
// blocks (flagBlocks), which protocol 1's first builds need to send them.
type digestMsg struct {
	Sender string
	Reply  bool // the sender wants the receiver's digest back
	// Answer marks the digest that answers a Reply request, after the
	// entries the requester lacked: the requester only compares it with
	// its own (to know whether to go on syncing) and sends nothing back.
	// Each member thus receives entries from the exchanges it starts, one
	// at a time, and not from others' at the same moment, which would bring
	// it the same entries twice.
	Answer bool
	Owners []ownerDigest
}

// block is one owner's part of a blocks message: the sender's digest of
// that owner and entries of it (all of them, or those newer than what the
// receiver was known to hold).
type block struct {
	Digest  ownerDigest
	Entries []wireEntry
}

// Protocol is the mesh protocol this build speaks, announced to every
// member in its node metadata (see the wire rule above).
const Protocol = 1

// maxVersionLen bounds Config.Version, so node metadata stays far below
// memberlist.MetaMaxSize.
const maxVersionLen = 128

// nodeMeta is what a member announces in its memberlist metadata:
// protocol, then version, then (builds that know the down state) its down
// grace in milliseconds. A later protocol may append fields; readers skip
// what follows the fields they know.
type nodeMeta struct {
	Protocol int
	Version  string
	// DownGrace is how long the member asks the others to keep its entries
	// while it is down (its Config.DownGrace; 0: not at all). HasGrace is
	// false for builds that announce none.
	DownGrace time.Duration
	HasGrace  bool
	// Started is when the member's mesh was made, in Unix milliseconds of
	// its host's clock; 0 for builds that announce none. Two names at one
	// gossip address are two lives of weft on one host, so their start
	// times, read from one clock, tell the newer (state.supersede).
	Started int64
}

// maxDownGrace bounds an announced down grace.
const maxDownGrace = 30 * 24 * time.Hour

// maxStarted bounds an announced start time (Unix milliseconds): one past
// it does not decode, as if none were announced.
const maxStarted = 1 << 53

// encodeMeta builds this node's memberlist metadata.
func encodeMeta(m nodeMeta) []byte {
	b := binary.AppendUvarint(nil, uint64(m.Protocol))
	b = appendString(b, m.Version)
	b = binary.AppendUvarint(b, uint64(max(m.DownGrace, 0)/time.Millisecond))
	return binary.AppendUvarint(b, uint64(max(m.Started, 0)))
}

// decodeMeta reads a member's metadata. Empty metadata is a build from
// before protocols were announced: protocol 1, no version. So is metadata
// that does not decode. A down grace that is absent or does not decode is
// not announced; one above maxDownGrace is cut to it.
func decodeMeta(b []byte) nodeMeta {
	d := decoder{b: b}
	p := d.uvarint()
	v := d.bytes(maxVersionLen)
	if len(b) == 0 || d.err != nil || p == 0 || p > 1<<16 {
		return nodeMeta{Protocol: 1}
	}
	m := nodeMeta{Protocol: int(p), Version: string(v)}
	if len(d.b) > 0 {
		if ms := d.uvarint(); d.err == nil {
			m.DownGrace = min(time.Duration(min(ms, uint64(maxDownGrace/time.Millisecond)))*time.Millisecond, maxDownGrace)
			m.HasGrace = true
		}
	}
	if len(d.b) > 0 {
		if ms := d.uvarint(); d.err == nil && ms <= maxStarted {
			m.Started = int64(ms)
		}
	}
	return m
}

func appendHeader(b []byte, typ byte) []byte {
	return append(b, msgMagic, msgVersion, typ)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendEntry encodes one entry; residual only matters for tombstones.
func appendEntry(b []byte, e *Entry, residual time.Duration) []byte {
	b = appendString(b, e.Table)
	b = appendString(b, e.Key)
	b = appendString(b, e.Owner)
	b = binary.AppendUvarint(b, e.Clock)
	if e.Deleted {
		b = append(b, flagDeleted)
		return binary.AppendUvarint(b, residualMS(residual))
	}
	b = append(b, 0)
	b = binary.AppendUvarint(b, uint64(len(e.Value)))
	return append(b, e.Value...)
}

// residualMS is a tombstone's time left as sent: whole milliseconds.
func residualMS(residual time.Duration) uint64 {
	return uint64(max(residual, 0) / time.Millisecond)
}

// encodeEntries builds one entries message of the given type.
func encodeEntries(typ byte, es []wireEntry) []byte {
	n := headerLen + binary.MaxVarintLen64
	for i := range es {
		n += entrySize(&es[i].Entry)
	}
	b := make([]byte, 0, n)
	b = appendHeader(b, typ)
	b = binary.AppendUvarint(b, uint64(len(es)))
	for i := range es {
		b = appendEntry(b, &es[i].Entry, es[i].Residual)
	}
	return b
}

// entrySize is an upper bound of an entry's encoded size.
func entrySize(e *Entry) int {
	return len(e.Table) + len(e.Key) + len(e.Owner) + len(e.Value) + 6*binary.MaxVarintLen64
}

func encodeDigest(d *digestMsg) []byte {
	b := make([]byte, 0, headerLen+digestSize(d))
	return appendDigest(appendHeader(b, msgDigest), d)
}

// digestSize is an upper bound of a digest's encoded size.
func digestSize(d *digestMsg) int {
	n := 2*binary.MaxVarintLen64 + len(d.Sender) + 1
	for i := range d.Owners {
		n += len(d.Owners[i].Owner) + 3*binary.MaxVarintLen64 + 8
	}
	return n
}

// appendDigest appends a digest message's body.
func appendDigest(b []byte, d *digestMsg) []byte {
	b = appendString(b, d.Sender)
	flags := byte(flagBlocks)
	if d.Reply {
		flags |= flagReply
	}
	if d.Answer {
		flags |= flagAnswer
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(d.Owners)))
	for i := range d.Owners {
		b = appendOwnerDigest(b, &d.Owners[i])
	}
	return b
}

func appendOwnerDigest(b []byte, o *ownerDigest) []byte {
	b = appendString(b, o.Owner)
	b = binary.AppendUvarint(b, o.Count)
	b = binary.AppendUvarint(b, o.MaxClock)
	return binary.LittleEndian.AppendUint64(b, o.Hash)
}

// encodeBlocks builds one blocks message.
func encodeBlocks(bls []block) []byte {
	b := make([]byte, 0, headerLen+blocksLen(bls))
	return appendBlocks(appendHeader(b, msgBlocks), bls)
}

// encodeAnswer builds an answer message: the digest answering a request
// and the blocks the requester lacked, in one message so that they arrive
// together.
func encodeAnswer(d *digestMsg, bls []block) []byte {
	b := make([]byte, 0, headerLen+digestSize(d)+blocksLen(bls))
	return appendBlocks(appendDigest(appendHeader(b, msgAnswer), d), bls)
}

// blocksLen is the exact encoded size of a blocks message's body.
func blocksLen(bls []block) int {
	n := uvarintLen(uint64(len(bls)))
	for i := range bls {
		body := blockBodyLen(&bls[i])
		n += ownerDigestLen(&bls[i].Digest) + uvarintLen(uint64(body)) + body
	}
	return n
}

func blockBodyLen(bl *block) int {
	n := uvarintLen(uint64(len(bl.Entries)))
	for j := range bl.Entries {
		n += entryLen(&bl.Entries[j].Entry, bl.Entries[j].Residual)
	}
	return n
}

func ownerDigestLen(o *ownerDigest) int {
	return uvarintLen(uint64(len(o.Owner))) + len(o.Owner) + uvarintLen(o.Count) + uvarintLen(o.MaxClock) + 8
}

// appendBlocks appends a blocks message's body.
func appendBlocks(b []byte, bls []block) []byte {
	b = binary.AppendUvarint(b, uint64(len(bls)))
	for i := range bls {
		bl := &bls[i]
		b = appendOwnerDigest(b, &bl.Digest)
		b = binary.AppendUvarint(b, uint64(blockBodyLen(bl)))
		b = binary.AppendUvarint(b, uint64(len(bl.Entries)))
		for j := range bl.Entries {
			b = appendEntry(b, &bl.Entries[j].Entry, bl.Entries[j].Residual)
		}
	}
	return b
}

// entryLen is the exact encoded size of an entry.
func entryLen(e *Entry, residual time.Duration) int {
	n := uvarintLen(uint64(len(e.Table))) + len(e.Table) +
		uvarintLen(uint64(len(e.Key))) + len(e.Key) +
		uvarintLen(uint64(len(e.Owner))) + len(e.Owner) +
		uvarintLen(e.Clock) + 1
	if e.Deleted {
		return n + uvarintLen(residualMS(residual))
	}
	return n + uvarintLen(uint64(len(e.Value))) + len(e.Value)
}

func uvarintLen(v uint64) int {
	return (bits.Len64(v|1) + 6) / 7
}

func encodeLeave(node string) []byte {
	return appendString(appendHeader(nil, msgLeave), node)
}

// errUnknownType marks a message of a type this build does not know: a
// newer protocol's, skipped without a word (see the compatibility rule).
var errUnknownType = errors.New("unknown message type")

// parseHeader checks a message's header and returns its type and body.
func parseHeader(buf []byte) (typ byte, body []byte, err error) {
	switch {
	case len(buf) < headerLen:
		return 0, nil, errShort
	case buf[0] != msgMagic:
		return 0, nil, fmt.Errorf("bad magic byte %#x", buf[0])
	case buf[1] != msgVersion:
		return 0, nil, fmt.Errorf("unsupported message version %d", buf[1])
	}
	return buf[2], buf[headerLen:], nil
}

// decodeLeave reads a leave message's body: the node leaving.
func decodeLeave(body []byte) (string, error) {
	d := decoder{b: body}
	node := string(d.bytes(maxOwnerLen))
	if err := d.done(); err != nil {
		return "", err
	}
	if node == "" {
		return "", errors.New("leave without node")
	}
	return node, nil
}

// decodeDigest reads a digest message's body off d (errors stick in d).
// The digest owns its strings. The blocks flag is not read: every build
// reads blocks.
func decodeDigest(d *decoder) *digestMsg {
	dm := &digestMsg{}
	dm.Sender = string(d.bytes(maxOwnerLen))
	flags := d.byte()
	dm.Reply = flags&flagReply != 0
	dm.Answer = flags&flagAnswer != 0
	n := d.count(minDigestLen, "digest")
	if n > maxDigestOwners {
		d.err = fmt.Errorf("digest of %d owners: %w", n, errTooLarge)
		return dm
	}
	dm.Owners = make([]ownerDigest, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		var o ownerDigest
		o.Owner = string(d.bytes(maxOwnerLen))
		o.Count = d.uvarint()
		o.MaxClock = d.uvarint()
		o.Hash = d.uint64()
		dm.Owners = append(dm.Owners, o)
	}
	if d.err == nil && dm.Sender == "" {
		d.err = errors.New("digest without sender")
	}
	return dm
}

// blockIter walks the blocks of a blocks message's body; each block's
// entries come as an entryIter of views (see entryIter).
type blockIter struct {
	d    decoder
	left uint64
}

// viewBlocks checks the framing of a whole blocks body (every block's
// digest and length) and returns an iterator over it. Each block's entries
// are checked whole when it is read (viewEntries): a receiver skips the
// blocks it already holds without parsing them.
func viewBlocks(body []byte) (*blockIter, error) {
	check := newBlockIter(body)
	var od ownerDigest
	var b []byte
	for check.next(&od, &b) {
	}
	if err := check.d.done(); err != nil {
		return nil, err
	}
	return newBlockIter(body), nil
}

func newBlockIter(body []byte) *blockIter {
	bi := &blockIter{d: decoder{b: body}}
	bi.left = bi.d.count(minBlockLen, "block")
	return bi
}

// next decodes the next block's digest into od, its owner a view into the
// body, and sets *body to its entries body (for viewEntries). It returns
// false at the end or at the first error (in bi.d.err).
func (bi *blockIter) next(od *ownerDigest, body *[]byte) bool {
	if bi.left == 0 || bi.d.err != nil {
		return false
	}
	bi.left--
	d := &bi.d
	owner := d.bytes(maxOwnerLen)
	od.Count = d.uvarint()
	od.MaxClock = d.uvarint()
	od.Hash = d.uint64()
	*body = d.bytes(len(d.b))
	if d.err != nil {
		return false
	}
	if len(owner) == 0 {
		d.err = errors.New("block without owner")
		return false
	}
	od.Owner = viewString(owner)
	return true
}

// entryIter walks the entries of an entries message's body without copying
// them: each entry's strings and value are views into the body, valid only
// as long as the body is. Whoever keeps an entry copies them (state.store
// does). Received entries that change nothing, most of them in a bulk
// exchange, so cost no allocation at all.
type entryIter struct {
	d    decoder
	left uint64
}

// viewEntries checks a whole entries body (so that a bad message is
// refused before any of it is applied) and returns an iterator over it.
func viewEntries(body []byte) (*entryIter, error) {
	check := newEntryIter(body)
	var w wireEntry
	for check.next(&w) {
	}
	if err := check.d.done(); err != nil {
		return nil, err
	}
	return newEntryIter(body), nil
}

func newEntryIter(body []byte) *entryIter {
	it := &entryIter{d: decoder{b: body}}
	it.left = it.d.count(minEntryLen, "entry")
	return it
}

// next decodes the next entry into w. It returns false at the end of the
// entries or at the first error (in it.d.err).
func (it *entryIter) next(w *wireEntry) bool {
	if it.left == 0 || it.d.err != nil {
		return false
	}
	it.left--
	d := &it.d
	*w = wireEntry{}
	w.Table = viewString(d.bytes(maxTableLen))
	w.Key = viewString(d.bytes(maxKeyLen))
	w.Owner = viewString(d.bytes(maxOwnerLen))
	w.Clock = d.uvarint()
	flags := d.byte()
	if flags&^flagDeleted != 0 && d.err == nil {
		d.err = fmt.Errorf("unknown entry flags %#x", flags)
	}
	if flags&flagDeleted != 0 {
		w.Deleted = true
		ms := d.uvarint()
		if ms > uint64(24*time.Hour/time.Millisecond) {
			ms = uint64(24 * time.Hour / time.Millisecond)
		}
		w.Residual = time.Duration(ms) * time.Millisecond
	} else if v := d.bytes(maxValueLen); d.err == nil {
		w.Value = v[:len(v):len(v)]
		if w.Value == nil {
			w.Value = []byte{} // never nil for a live entry
		}
	}
	if d.err == nil && (w.Table == "" || w.Owner == "") {
		d.err = errors.New("entry without table or owner")
	}
	return d.err == nil
}

// viewString returns b as a string without copying: the string is only valid as
// long as b is unchanged. Whoever keeps it copies it (strings.Clone).
func viewString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// decoder reads fields off a buffer; the first error sticks and every later
// read returns zero values.
type decoder struct {
	b   []byte
	err error
}

// count reads how many elements follow, refusing more than the rest of
// the buffer can hold at minLen bytes each (0 on error).
func (d *decoder) count(minLen int, what string) uint64 {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minLen) {
		d.err = fmt.Errorf("%s count %d: %w", what, n, errShort)
		return 0
	}
	return n
}

// done returns the first error, or one for bytes left over.
func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return d.err
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.err = errShort
		return 0
	case n < 0:
		d.err = errOverflow
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errShort
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// bytes returns a slice of the input (not a copy) of at most max bytes.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.err = errTooLarge
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
