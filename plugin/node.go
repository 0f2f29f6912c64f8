package plugin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// nodeFile keeps this host's mesh identity across plugin restarts.
const nodeFile = "node.json"

// nodeState is this host's identity in the mesh.
type nodeState struct {
	// Name is this host's unique, stable name in the mesh.
	Name string `json:"name"`
	// Addr is the last underlay address this host advertised, so that
	// after a reboot the mesh starts before the engine's API answers.
	Addr string `json:"addr,omitempty"`
}

// loadNode reads the node file, making a new identity when there is none
// or it is unreadable (reported in the returned error, which is not fatal).
func loadNode(dir string) (nodeState, error) {
	var n nodeState
	b, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err == nil {
		if jerr := json.Unmarshal(b, &n); jerr != nil || n.Name == "" {
			err = fmt.Errorf("node file %s is corrupt; starting with a new identity", filepath.Join(dir, nodeFile))
			n = nodeState{}
		} else if n.Addr != "" {
			if _, perr := netip.ParseAddr(n.Addr); perr != nil {
				n.Addr = ""
			}
		}
	} else if os.IsNotExist(err) {
		err = nil
	}
	if n.Name == "" {
		var id [8]byte
		if _, rerr := rand.Read(id[:]); rerr != nil {
			return n, fmt.Errorf("make node name: %w", rerr)
		}
		host, _ := os.Hostname()
		n.Name = "weft-" + hex.EncodeToString(id[:])
		if host != "" && len(host) < 40 {
			n.Name = host + "-" + hex.EncodeToString(id[:4])
		}
	}
	return n, err
}

func saveNode(dir string, n nodeState) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, nodeFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write node file: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, nodeFile))
}
