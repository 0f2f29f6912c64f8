package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/keyservice"
	"github.com/weftnet/weft/mesh"
)

// ControlSocket is the name of the plugin's control socket in the state
// directory: only root reaches it (the directory is 0700), unlike the
// loopback status port, so operations that change security live here.
const ControlSocket = "control.sock"

// keyRequest is one key operation sent to the control socket: a manual
// rotation step (install, use, remove, with the key), or rotate (a new
// generation from the swarm's key service).
type keyRequest struct {
	Op  string `json:"op"`
	Key string `json:"key,omitempty"`
}

// KeyInfo describes one key of a host's keyring, without the key.
type KeyInfo struct {
	Fingerprint string    `json:"fingerprint"`
	Primary     bool      `json:"primary,omitempty"`
	Gen         uint64    `json:"gen,omitempty"`
	Origin      string    `json:"origin,omitempty"`
	Created     time.Time `json:"created,omitzero"`
}

// keyResponse lists the installed keys, or says what failed.
type keyResponse struct {
	Keys []KeyInfo `json:"keys,omitempty"`
	// Managed: the swarm's key service rotates this keyring.
	Managed bool   `json:"managed,omitempty"`
	Err     string `json:"err,omitempty"`
}

// Tunnel is the encrypted networks' tunnel as the control socket drives
// it; *wg.Tunnel implements it.
type Tunnel interface {
	// Rotate begins a key rotation; false when one is under way or the
	// tunnel is closed.
	Rotate() bool
	Rotating() bool
	// PublicKey is the newest public key; zero while closed.
	PublicKey() wgtypes.Key
}

// tunnelRequest is one operation on the tunnel: rotate.
type tunnelRequest struct {
	Op string `json:"op"`
}

// tunnelResponse says what a tunnel operation did, or what failed.
type tunnelResponse struct {
	// Key is the newest public key (empty: the tunnel is closed).
	Key string `json:"key,omitempty"`
	// Began: this request began a rotation.
	Began bool   `json:"began,omitempty"`
	Err   string `json:"err,omitempty"`
}

// serveControl serves the control socket until ctx ends. svc, if not nil,
// manages the keyring: manual steps are refused while it does. tun is the
// encrypted networks' tunnel; nil when they are off.
func serveControl(ctx context.Context, dir string, kr *mesh.Keyring, svc *keyservice.Service, tun Tunnel, log *slog.Logger) error {
	path := filepath.Join(dir, ControlSocket)
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fail := func(status int, msg string) {
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(keyResponse{Err: msg})
		}
		if kr == nil {
			fail(http.StatusConflict, "the mesh runs open (WEFT_MESH_INSECURE=true) and has no keyring: unset it, write the cluster key to "+mesh.KeyFile+" in the state directory, and restart the plugin")
			return
		}
		managed := svc != nil && svc.Managing()
		if r.Method == http.MethodPost {
			var req keyRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
				fail(http.StatusBadRequest, "malformed request: "+err.Error())
				return
			}
			switch {
			case req.Op == "rotate" && svc == nil:
				fail(http.StatusBadRequest, "weft key rotate is for swarm mode; in local mode rotate by hand with install, use and remove")
				return
			case req.Op == "rotate":
				ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
				id, err := svc.Rotate(ctx)
				cancel()
				if err != nil {
					fail(http.StatusBadRequest, err.Error())
					return
				}
				log.Info("mesh key rotation requested", "generation", id.String())
			case managed:
				fail(http.StatusConflict, "the swarm's key service manages this keyring (manual steps would fight it): use weft key rotate on a manager")
				return
			default:
				if err := kr.Apply(req.Op, req.Key); err != nil {
					fail(http.StatusBadRequest, err.Error())
					return
				}
				log.Info("mesh keyring changed", "op", req.Op, "keys", kr.List())
			}
		}
		_ = json.NewEncoder(w).Encode(keyResponse{Keys: keyInfos(kr.Ring()), Managed: managed})
	})
	mux.HandleFunc("/tunnel", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fail := func(status int, msg string) {
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(tunnelResponse{Err: msg})
		}
		if tun == nil {
			fail(http.StatusConflict, "encrypted networks are off on this host (WEFT_WG_PORT=0): there is no WireGuard key to rotate")
			return
		}
		var req tunnelRequest
		if r.Method != http.MethodPost || json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req) != nil || req.Op != "rotate" {
			fail(http.StatusBadRequest, `the tunnel takes one operation: POST {"op":"rotate"}`)
			return
		}
		rotating := tun.Rotating()
		began := tun.Rotate()
		key := tun.PublicKey()
		switch {
		case !began && rotating:
			fail(http.StatusConflict, "a key rotation is under way on this host; it finishes (within a minute) before another begins")
			return
		case !began:
			fail(http.StatusConflict, "this host has no endpoint on an encrypted network, so no tunnel open: it opens with a new key when one comes")
			return
		}
		log.Info("tunnel key rotation requested", "public", key.String())
		_ = json.NewEncoder(w).Encode(tunnelResponse{Key: key.String(), Began: true})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() { _ = srv.Serve(l) }()
	return nil
}

// keyInfos describes a keyring, the primary first, then the newest.
func keyInfos(r mesh.Ring) []KeyInfo {
	var out []KeyInfo
	for i := len(r.Keys) - 1; i >= 0; i-- {
		k := r.Keys[i]
		info := KeyInfo{Fingerprint: mesh.Fingerprint(k.Secret), Primary: string(k.Secret) == string(r.Primary), Created: k.Created}
		if k.ID.Gen > 0 {
			info.Gen, info.Origin = k.ID.Gen, k.ID.Origin
		}
		if info.Primary {
			out = append([]KeyInfo{info}, out...)
		} else {
			out = append(out, info)
		}
	}
	return out
}

// TunnelRotate asks the plugin whose state directory is dir to rotate its
// WireGuard key, and returns the new public key.
func TunnelRotate(ctx context.Context, dir string) (string, error) {
	path := filepath.Join(dir, ControlSocket)
	resp, err := controlClient(path).Post("http://weft/tunnel", "application/json", strings.NewReader(`{"op":"rotate"}`))
	if err != nil {
		return "", fmt.Errorf("no weft plugin answers on %s (is it enabled, and is this its state directory?): %w", path, err)
	}
	defer resp.Body.Close()
	var tr tunnelResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&tr); err != nil {
		return "", fmt.Errorf("control socket: %w", err)
	}
	if tr.Err != "" {
		return "", fmt.Errorf("%s", tr.Err)
	}
	return tr.Key, nil
}

// controlClient talks HTTP to the control socket at path.
func controlClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}, Timeout: 30 * time.Second}
}

// KeyCommand sends one key operation (op "" lists) to the plugin whose
// state directory is dir, and returns the installed keys, the primary
// first, and whether the swarm's key service manages them.
func KeyCommand(ctx context.Context, dir, op, key string) ([]KeyInfo, bool, error) {
	path := filepath.Join(dir, ControlSocket)
	c := controlClient(path)
	var (
		resp *http.Response
		err  error
	)
	if op == "" {
		resp, err = c.Get("http://weft/keys")
	} else {
		b, _ := json.Marshal(keyRequest{Op: op, Key: key})
		resp, err = c.Post("http://weft/keys", "application/json", strings.NewReader(string(b)))
	}
	if err != nil {
		return nil, false, fmt.Errorf("no weft plugin answers on %s (is it enabled, and is this its state directory?): %w", path, err)
	}
	defer resp.Body.Close()
	var kr keyResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&kr); err != nil {
		return nil, false, fmt.Errorf("control socket: %w", err)
	}
	if kr.Err != "" {
		return nil, false, fmt.Errorf("%s", kr.Err)
	}
	return kr.Keys, kr.Managed, nil
}
