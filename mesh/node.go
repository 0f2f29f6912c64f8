package mesh

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/weftnet/weft/internal/statefile"
)

// NodeFile keeps a host's mesh identity across restarts, in its state
// directory.
const NodeFile = "node.json"

const nodeVersion = 1

// Node is a host's identity in the mesh.
type Node struct {
	// Name is the host's unique, stable name in the mesh: entries are
	// owned by name.
	Name string `json:"name"`
	// Addr is the last underlay address the host advertised, so that after
	// a reboot its mesh starts before the engine's API answers.
	Addr string `json:"addr,omitempty"`
	// Keyed is when the host's mesh first had a key (RFC 3339). Once set,
	// the host never runs its mesh open again on its own: losing the
	// keyring and the seed keeps the mesh off instead (see LoadKeyring).
	// Only removing this field by hand undoes it.
	Keyed string `json:"keyed,omitempty"`
	// Seeds are the fingerprints of WEFT_MESH_KEY values this host has
	// seeded its keyring from: a seed is used once, never read again.
	Seeds []string `json:"seeds,omitempty"`
}

type nodeDoc struct {
	Version int `json:"version"`
	Node
}

// LoadNode reads the host's identity from dir, making a new one when
// there is none or it is unreadable (reported in the returned error, which
// is not fatal: the caller logs it and goes on with the new identity).
func LoadNode(dir string) (Node, error) {
	var doc nodeDoc
	_, err := statefile.Load(filepath.Join(dir, NodeFile), &doc, nodeVersion)
	n := doc.Node
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = nil
	case err != nil:
		n = Node{}
		err = fmt.Errorf("starting with a new mesh identity: %w", err)
	case n.Name == "":
		err = fmt.Errorf("starting with a new mesh identity: %w", statefile.SetAside(filepath.Join(dir, NodeFile), errors.New("no name")))
	}
	if n.Addr != "" {
		if _, perr := netip.ParseAddr(n.Addr); perr != nil {
			n.Addr = ""
		}
	}
	if n.Name == "" {
		var id [8]byte
		if _, rerr := rand.Read(id[:]); rerr != nil {
			return n, fmt.Errorf("make a node name: %w", rerr)
		}
		n.Name = "weft-" + hex.EncodeToString(id[:])
		if host, _ := os.Hostname(); host != "" && len(host) < 40 {
			n.Name = host + "-" + hex.EncodeToString(id[:4])
		}
	}
	return n, err
}

// SaveNode writes the host's identity to dir.
func SaveNode(dir string, n Node) error {
	nodeMu.Lock()
	defer nodeMu.Unlock()
	return statefile.Save(filepath.Join(dir, NodeFile), nodeDoc{Version: nodeVersion, Node: n})
}

// nodeMu serialises UpdateNode and SaveNode: the plugin's start, its
// keyring and its mesh each change a part of the file.
var nodeMu sync.Mutex

// UpdateNode changes the host's identity in dir with f and saves it,
// keeping what f does not touch. A missing or unreadable file starts from
// a new identity, as LoadNode does.
func UpdateNode(dir string, f func(*Node)) error {
	nodeMu.Lock()
	defer nodeMu.Unlock()
	n, _ := LoadNode(dir)
	f(&n)
	return statefile.Save(filepath.Join(dir, NodeFile), nodeDoc{Version: nodeVersion, Node: n})
}
