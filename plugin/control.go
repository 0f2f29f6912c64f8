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

	"github.com/weftnet/weft/mesh"
)

// ControlSocket is the name of the plugin's control socket in the state
// directory: only root reaches it (the directory is 0700), unlike the
// loopback status port, so operations that change security live here.
const ControlSocket = "control.sock"

// keyRequest is one rotation step sent to the control socket.
type keyRequest struct {
	Op  string `json:"op"`
	Key string `json:"key"`
}

// keyResponse lists the installed keys by fingerprint, or says what failed.
type keyResponse struct {
	Keys []string `json:"keys,omitempty"`
	Err  string   `json:"err,omitempty"`
}

// serveControl serves the control socket until ctx ends.
func serveControl(ctx context.Context, dir string, kr *mesh.Keyring, log *slog.Logger) error {
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
		if kr == nil {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(keyResponse{Err: "the mesh has no key: set WEFT_MESH_KEY or write " + mesh.KeyFile + " in the state directory, then restart the plugin"})
			return
		}
		if r.Method == http.MethodPost {
			var req keyRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(keyResponse{Err: "malformed request: " + err.Error()})
				return
			}
			if err := kr.Apply(req.Op, req.Key); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(keyResponse{Err: err.Error()})
				return
			}
			log.Info("mesh keyring changed", "op", req.Op, "keys", kr.List())
		}
		_ = json.NewEncoder(w).Encode(keyResponse{Keys: kr.List()})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() { _ = srv.Serve(l) }()
	return nil
}

// KeyCommand sends one key operation (op "" lists) to the plugin whose
// state directory is dir, and returns the installed keys' fingerprints.
func KeyCommand(ctx context.Context, dir, op, key string) ([]string, error) {
	path := filepath.Join(dir, ControlSocket)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}, Timeout: 10 * time.Second}
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
		return nil, fmt.Errorf("no weft plugin answers on %s (is it enabled, and is this its state directory?): %w", path, err)
	}
	defer resp.Body.Close()
	var kr keyResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&kr); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if kr.Err != "" {
		return nil, fmt.Errorf("%s", kr.Err)
	}
	return kr.Keys, nil
}
