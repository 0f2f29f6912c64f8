package plugin

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weftnet/weft/mesh"
)

// TestKeyControl: weft key's operations reach the plugin's keyring through
// the control socket, which only its owner may open.
func TestKeyControl(t *testing.T) {
	dir := t.TempDir()
	k1, _ := mesh.GenerateKey()
	k2, _ := mesh.GenerateKey()
	b1, _ := mesh.ParseKey(k1)
	b2, _ := mesh.ParseKey(k2)
	kr, _, err := mesh.LoadKeyring(dir, k1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := serveControl(ctx, dir, kr, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got, err := KeyCommand(ctx, dir, "", ""); err != nil || !slices.Equal(got, []string{mesh.Fingerprint(b1)}) {
		t.Fatalf("list: %v, %v", got, err)
	}
	if _, err := KeyCommand(ctx, dir, "use", k2); err == nil {
		t.Fatal("using a key that is not installed succeeded")
	}
	for _, s := range []struct {
		op, key string
		want    []string
	}{
		{"install", k2, []string{mesh.Fingerprint(b1), mesh.Fingerprint(b2)}},
		{"use", k2, []string{mesh.Fingerprint(b2), mesh.Fingerprint(b1)}},
		{"remove", k1, []string{mesh.Fingerprint(b2)}},
	} {
		got, err := KeyCommand(ctx, dir, s.op, s.key)
		if err != nil || !slices.Equal(got, s.want) {
			t.Fatalf("%s: %v, %v; want %v", s.op, got, err, s.want)
		}
	}
	if _, err := KeyCommand(ctx, dir, "install", "not base64!"); err == nil {
		t.Fatal("a malformed key was installed")
	}
	if st, err := os.Stat(filepath.Join(dir, ControlSocket)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v, %v", st, err)
	}

	// Without a keyring, the socket says how to get one.
	other := t.TempDir()
	if err := serveControl(ctx, other, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := KeyCommand(ctx, other, "", ""); err == nil {
		t.Fatal("listing the keys of an unencrypted mesh succeeded")
	}
}
