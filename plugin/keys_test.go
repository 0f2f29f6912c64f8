package plugin

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/mesh"
)

// TestOpenKeyring: how the mesh may run, by mode and key. Swarm mode
// waits for the key service; local mode needs a key, runs open only with
// WEFT_MESH_INSECURE on a host that never had one, and says so loudly.
func TestOpenKeyring(t *testing.T) {
	k, _ := mesh.GenerateKey()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	open := func(dir string, env map[string]string) (*mesh.Keyring, bool) {
		env["WEFT_STATE_DIR"] = dir
		cfg, err := ConfigFromEnv(func(s string) string { return env[s] })
		if err != nil {
			t.Fatal(err)
		}
		logs.Reset()
		return openKeyring(cfg, log)
	}

	swarm, off := open(t.TempDir(), map[string]string{})
	if swarm == nil || off || !swarm.Empty() {
		t.Fatalf("swarm mode, no key: keys %v off %v; want an empty keyring to fill", swarm, off)
	}
	local, off := open(t.TempDir(), map[string]string{"WEFT_SCOPE": "local"})
	if local == nil || off || !local.Empty() || !strings.Contains(logs.String(), "local mode needs a mesh key") {
		t.Fatalf("local mode, no key: keys %v off %v, log %s", local, off, logs.String())
	}
	insecure, off := open(t.TempDir(), map[string]string{"WEFT_SCOPE": "local", "WEFT_MESH_INSECURE": "true"})
	if insecure != nil || off || !strings.Contains(logs.String(), "RUNS OPEN") {
		t.Fatalf("local mode, insecure: keys %v off %v, log %s", insecure, off, logs.String())
	}
	dir := t.TempDir()
	keyed, _ := open(dir, map[string]string{"WEFT_SCOPE": "local", "WEFT_MESH_KEY": k})
	if keyed == nil || keyed.Empty() {
		t.Fatal("local mode with WEFT_MESH_KEY: no key")
	}
	// The keyring is lost, the seed too: WEFT_MESH_INSECURE does not
	// reopen a host that had a key.
	if err := os.Remove(filepath.Join(dir, mesh.KeysFile)); err != nil {
		t.Fatal(err)
	}
	again, off := open(dir, map[string]string{"WEFT_SCOPE": "local", "WEFT_MESH_INSECURE": "true"})
	if again == nil || off || !again.Empty() || !strings.Contains(logs.String(), "HAD A MESH KEY") {
		t.Fatalf("keyed host without keys, insecure set: keys %v off %v, log %s", again, off, logs.String())
	}
	if _, err := ConfigFromEnv(env(map[string]string{"WEFT_MESH_INSECURE": "true"})); err == nil {
		t.Fatal("WEFT_MESH_INSECURE accepted in swarm mode")
	}
	c, err := ConfigFromEnv(env(map[string]string{"WEFT_KEY_ROTATION": "never", "WEFT_FIREWALL": "false", "WEFT_KEY_PORT": "8000"}))
	if err != nil || c.KeyRotation >= 0 || c.Firewall || c.KeyPort != 8000 {
		t.Fatalf("key settings: %+v, %v", c, err)
	}
	if c, _ := ConfigFromEnv(env(nil)); c.KeyRotation != 24*time.Hour || !c.Firewall || c.KeyPort != 7952 {
		t.Fatalf("key defaults: %+v", c)
	}
	if _, err := ConfigFromEnv(env(map[string]string{"WEFT_KEY_PORT": "7950"})); err == nil {
		t.Fatal("a key port equal to the mesh's accepted")
	}
}
