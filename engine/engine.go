// Package engine is weft's small client of the Docker engine's API: just
// the calls weft needs (the node's swarm membership and address), over the
// engine's unix socket. It never blocks the plugin's start: callers poll it
// in the background, since the engine starts plugins before its API.
package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Client talks to one engine.
type Client struct {
	socket string
	http   *http.Client
}

// New returns a client of the engine listening on the unix socket path.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// Swarm is the part of the engine's /info about swarm that weft uses.
type Swarm struct {
	// NodeID is this node's swarm ID; empty outside a swarm.
	NodeID string
	// NodeAddr is this node's address in the swarm (its underlay address).
	NodeAddr string
	// LocalNodeState is "active" when the node is in a swarm.
	LocalNodeState string
	// RemoteManagers are the swarm's managers, as "ip:port" of the
	// swarm's control plane.
	RemoteManagers []Peer
}

// Peer is one swarm manager.
type Peer struct {
	NodeID string
	Addr   string
}

// Info is the part of the engine's /info weft uses.
type Info struct {
	Name  string
	Swarm Swarm
}

// Info asks the engine about itself.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var out Info
	err := c.get(ctx, "/info", &out)
	return out, err
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("engine API at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("engine API %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Message string }
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("engine API %s: %s: %s", path, resp.Status, e.Message)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("engine API %s: decode: %w", path, err)
	}
	return nil
}
