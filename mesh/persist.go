package mesh

// This file owns what the mesh keeps in Config.StateDir: the last known
// peers (peers.json) and a ceiling of the Lamport clock (clock.json).
// Writes are serialised by Mesh.persistMu, never held with Mesh.mu.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
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

type peersDoc struct {
	Peers []string `json:"peers"`
}

type clockDoc struct {
	// Clock is a ceiling: every clock this node has written is below it.
	Clock uint64 `json:"clock"`
}

// loadState reads the saved peers and clock ceiling into m before memberlist
// starts. Problems are logged and ignored: the mesh works without them.
func (m *Mesh) loadState() {
	dir := m.cfg.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		m.log.Warn("mesh state directory unusable, peers and clock will not be saved", "dir", dir, "err", err)
		return
	}
	var pd peersDoc
	if err := readJSON(filepath.Join(dir, peersFile), &pd); err != nil {
		m.logLoad(peersFile, err)
	} else {
		for _, p := range pd.Peers {
			if a, ok := normalizeAddr(p, m.cfg.Port); ok {
				m.boot[a] = true
			}
		}
	}
	var cd clockDoc
	if err := readJSON(filepath.Join(dir, clockFile), &cd); err != nil {
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

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// writeJSON replaces path atomically: a crash leaves the old or the new
// file, never half of one.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// saveClock persists a clock ceiling if it is above what is saved.
func (m *Mesh) saveClock(c uint64) {
	m.persistMu.Lock()
	defer m.persistMu.Unlock()
	if c <= m.savedClock {
		return
	}
	if err := writeJSON(filepath.Join(m.cfg.StateDir, clockFile), clockDoc{Clock: c}); err != nil {
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
	if err := writeJSON(filepath.Join(m.cfg.StateDir, peersFile), peersDoc{Peers: addrs}); err != nil {
		m.bad.warn("save peers", "cannot save mesh peers", "err", err)
	}
}
