package mesh

// This file owns what the mesh keeps in Config.StateDir: the last known
// peers (peers.json) and a ceiling of the Lamport clock (clock.json).
// Writes are serialised by Mesh.persistMu, never held with Mesh.mu.

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/weftnet/weft/internal/statefile"
)

// Files kept in Config.StateDir.
const (
	peersFile = "peers.json"
	clockFile = "clock.json"
)

const (
	// clockReserve is how far ahead of the clock its ceiling is persisted.
	clockReserve = 1 << 10
	// maxSavedPeers bounds peers.json.
	maxSavedPeers = 64
)

// stateVersion is the format of both files written now. Version 0 had no
// version field; version 1 only adds it.
const stateVersion = 1

type peersDoc struct {
	Version int      `json:"version"`
	Peers   []string `json:"peers"`
}

type clockDoc struct {
	Version int `json:"version"`
	// Clock is a ceiling: every clock this node has written is below it.
	Clock uint64 `json:"clock"`
}

// loadState reads the saved peers and clock ceiling into m, in New.
// Problems are logged and ignored: the mesh works without them (a corrupt
// file is set aside by statefile, once).
func (m *Mesh) loadState() {
	dir := m.cfg.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		m.log.Warn("mesh state directory unusable, peers and clock will not be saved", "dir", dir, "err", err)
		return
	}
	var pd peersDoc
	if _, err := statefile.Load(filepath.Join(dir, peersFile), &pd, stateVersion); err != nil {
		m.logLoad(peersFile, err)
	} else {
		for _, p := range pd.Peers {
			if a, ok := normalizeAddr(p, m.cfg.Port); ok {
				m.boot[a] = true
			}
		}
	}
	var cd clockDoc
	if _, err := statefile.Load(filepath.Join(dir, clockFile), &cd, stateVersion); err != nil {
		m.logLoad(clockFile, err)
	} else {
		m.st.clock = cd.Clock
		m.clockCeil = cd.Clock
		m.savedClock = cd.Clock
	}
}

func (m *Mesh) logLoad(name string, err error) {
	if errors.Is(err, fs.ErrNotExist) {
		m.log.Info("no saved mesh state, starting without it", "file", name)
		return
	}
	m.log.Warn("ignoring unreadable mesh state file", "file", name, "err", err)
}

// saveClock persists a clock ceiling if it is above what is saved.
func (m *Mesh) saveClock(c uint64) {
	m.persistMu.Lock()
	defer m.persistMu.Unlock()
	if c <= m.savedClock {
		return
	}
	if err := statefile.Save(filepath.Join(m.cfg.StateDir, clockFile), clockDoc{Version: stateVersion, Clock: c}); err != nil {
		m.bad.warn("save clock", "cannot save mesh clock", "err", err)
		return
	}
	m.savedClock = c
}

// savePeers persists the addresses of (some of) the alive members. With no
// other member alive it keeps the old file: an isolated host should still
// find its way back after a restart.
func (m *Mesh) savePeers() {
	m.mu.Lock()
	var addrs []string
	for name, mb := range m.st.members {
		if name != m.self && (mb.State == StateAlive || mb.State == StateSuspect) {
			addrs = append(addrs, mb.Addr)
		}
	}
	m.mu.Unlock()
	if len(addrs) == 0 {
		return
	}
	if len(addrs) > maxSavedPeers {
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		addrs = addrs[:maxSavedPeers]
	}
	sort.Strings(addrs)
	m.persistMu.Lock()
	defer m.persistMu.Unlock()
	if err := statefile.Save(filepath.Join(m.cfg.StateDir, peersFile), peersDoc{Version: stateVersion, Peers: addrs}); err != nil {
		m.bad.warn("save peers", "cannot save mesh peers", "err", err)
	}
}
