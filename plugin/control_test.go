package plugin

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

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
	if err := serveControl(ctx, dir, kr, nil, nil, slog.New(slog.DiscardHandler)); err != nil {
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
	if err := serveControl(ctx, other, nil, nil, nil, slog.New(slog.DiscardHandler)); err != nil {
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
	if err := serveControl(ctx, waiting, empty, nil, nil, slog.New(slog.DiscardHandler)); err != nil {
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

// fakeTunnel is the tunnel as the control socket sees it.
type fakeTunnel struct {
	open, rotating bool
	key            wgtypes.Key
}

func (f *fakeTunnel) Rotating() bool         { return f.rotating }
func (f *fakeTunnel) PublicKey() wgtypes.Key { return f.key }
func (f *fakeTunnel) Rotate() bool {
	if !f.open || f.rotating {
		return false
	}
	k, _ := wgtypes.GeneratePrivateKey()
	f.key, f.rotating = k.PublicKey(), true
	return true
}

// TestTunnelControl: weft tunnel rotate begins a rotation and prints the
// new key; a second one while it runs, a closed tunnel and a host with
// encrypted networks off each get one sentence saying why not.
func TestTunnelControl(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tun := &fakeTunnel{}
	dir := t.TempDir()
	if err := serveControl(ctx, dir, nil, nil, tun, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := TunnelRotate(ctx, dir); err == nil || !strings.Contains(err.Error(), "no endpoint on an encrypted network") {
		t.Fatalf("rotate with the tunnel closed: %v", err)
	}
	tun.open = true
	key, err := TunnelRotate(ctx, dir)
	if err != nil || key != tun.key.String() || !tun.rotating {
		t.Fatalf("rotate: %q, %v (tunnel %+v)", key, err, tun)
	}
	if _, err := TunnelRotate(ctx, dir); err == nil || !strings.Contains(err.Error(), "under way") {
		t.Fatalf("a second rotate while one runs: %v", err)
	}
	off := t.TempDir()
	if err := serveControl(ctx, off, nil, nil, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := TunnelRotate(ctx, off); err == nil || !strings.Contains(err.Error(), "WEFT_WG_PORT=0") {
		t.Fatalf("rotate with encrypted networks off: %v", err)
	}
}
