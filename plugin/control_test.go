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

func fingerprints(keys []KeyInfo) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Fingerprint)
	}
	return out
}

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
	if err := serveControl(ctx, dir, kr, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	got, managed, err := KeyCommand(ctx, dir, "", "")
	if err != nil || managed || !slices.Equal(fingerprints(got), []string{mesh.Fingerprint(b1)}) || !got[0].Primary {
		t.Fatalf("list: %+v, %v, %v", got, managed, err)
	}
	if _, _, err := KeyCommand(ctx, dir, "use", k2); err == nil {
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
		got, _, err := KeyCommand(ctx, dir, s.op, s.key)
		if err != nil || !slices.Equal(fingerprints(got), s.want) {
			t.Fatalf("%s: %v, %v; want %v", s.op, fingerprints(got), err, s.want)
		}
	}
	if _, _, err := KeyCommand(ctx, dir, "install", "not base64!"); err == nil {
		t.Fatal("a malformed key was installed")
	}
	if _, _, err := KeyCommand(ctx, dir, "rotate", ""); err == nil {
		t.Fatal("rotate accepted without a key service")
	}
	if st, err := os.Stat(filepath.Join(dir, ControlSocket)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v, %v", st, err)
	}

	// An open mesh (WEFT_MESH_INSECURE) has no keyring: the socket says so.
	other := t.TempDir()
	if err := serveControl(ctx, other, nil, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := KeyCommand(ctx, other, "", ""); err == nil {
		t.Fatal("listing the keys of an open mesh succeeded")
	}

	// A host waiting for its key (an empty keyring) takes one by hand.
	waiting := t.TempDir()
	empty, _, err := mesh.LoadKeyring(waiting, "")
	if err != nil || !empty.Empty() {
		t.Fatalf("empty keyring: %v", err)
	}
	if err := serveControl(ctx, waiting, empty, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got, _, err := KeyCommand(ctx, waiting, "install", k1); err != nil || len(got) != 1 {
		t.Fatalf("install into an empty keyring: %v, %v", got, err)
	}
	select {
	case <-empty.Ready():
	default:
		t.Fatal("the keyring is not ready after a key was installed")
	}
}
