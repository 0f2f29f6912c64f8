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
	"net/url"
	"slices"
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
	RemoteManagers []RemoteManager
	// ControlAvailable is set on managers: the engine answers /services
	// and /tasks.
	ControlAvailable bool
}

// RemoteManager is one swarm manager.
type RemoteManager struct {
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

// Container is the part of a container's inspect that weft uses.
type Container struct {
	ID    string
	Name  string // with Docker's leading "/"
	State struct {
		Running bool
		Pid     int
	}
	Config struct {
		Hostname string
		Labels   map[string]string
	}
	NetworkSettings struct {
		// SandboxKey is the path, in the engine's mount namespace, where
		// the engine mounts the container's network namespace.
		SandboxKey string
		Networks   map[string]EndpointSettings
	}
}

// EndpointSettings is a container's attachment to one network.
type EndpointSettings struct {
	NetworkID  string
	EndpointID string
	IPAddress  string
	Aliases    []string
}

// ContainerSummary is one line of the engine's container list.
type ContainerSummary struct {
	ID              string
	NetworkSettings struct {
		// Networks are the container's attachments, by network name.
		Networks map[string]struct{ NetworkID string }
	}
}

// Inspect returns a container's details.
func (c *Client) Inspect(ctx context.Context, id string) (Container, error) {
	var out Container
	err := c.get(ctx, "/containers/"+url.PathEscape(id)+"/json", &out)
	return out, err
}

// Containers lists the running containers.
func (c *Client) Containers(ctx context.Context) ([]ContainerSummary, error) {
	var out []ContainerSummary
	err := c.get(ctx, "/containers/json", &out)
	return out, err
}

// Event is one engine event.
type Event struct {
	Type   string
	Action string
	Actor  struct {
		ID         string
		Attributes map[string]string
	}
}

// Events streams the engine's events that match filters (the API's
// filters, e.g. {"type": ["network"], "event": ["connect"]}) to fn until
// ctx ends or the stream breaks; it returns once the stream is closed.
// ready is called once the stream is established.
func (c *Client) Events(ctx context.Context, filters map[string][]string, ready func(), fn func(Event)) error {
	q := ""
	if len(filters) > 0 {
		b, err := json.Marshal(filters)
		if err != nil {
			return err
		}
		q = "?filters=" + url.QueryEscape(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/events"+q, nil)
	if err != nil {
		return err
	}
	// The shared client's timeout would cut the stream: use one without.
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("engine API at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("engine events: %s", resp.Status)
	}
	ready()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("engine events: %w", err)
		}
		fn(ev)
	}
}

// Network is the part of a network's inspect that weft uses. Containers
// holds the endpoints on this host only.
type Network struct {
	ID      string `json:"Id"`
	Driver  string
	Options map[string]string
	IPAM    struct {
		Config []struct {
			Subnet  string
			Gateway string
		}
	}
	Containers map[string]struct {
		EndpointID  string
		MacAddress  string
		IPv4Address string
		IPv6Address string
	}
}

// Networks returns the engine's networks of the given drivers, each with
// its endpoints on this host.
func (c *Client) Networks(ctx context.Context, drivers []string) ([]Network, error) {
	var list []Network
	if err := c.get(ctx, "/networks", &list); err != nil {
		return nil, err
	}
	var out []Network
	for _, n := range list {
		if !slices.Contains(drivers, n.Driver) {
			continue
		}
		var full Network
		if err := c.get(ctx, "/networks/"+url.PathEscape(n.ID), &full); err != nil {
			return nil, err
		}
		out = append(out, full)
	}
	return out, nil
}

// Plugin is one line of the engine's plugin list.
type Plugin struct {
	Name    string
	Enabled bool
	Config  struct {
		Entrypoint []string
	}
}

// Plugins lists the engine's managed plugins.
func (c *Client) Plugins(ctx context.Context) ([]Plugin, error) {
	var out []Plugin
	err := c.get(ctx, "/plugins", &out)
	return out, err
}

// ShortID abbreviates a Docker ID as the docker CLI prints it: its first
// 12 characters.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// NodeIDs lists the IDs of the swarm's nodes. Only a manager's engine
// answers; a node removed from the swarm (docker node rm) is not listed.
func (c *Client) NodeIDs(ctx context.Context) ([]string, error) {
	var nodes []struct{ ID string }
	if err := c.get(ctx, "/nodes", &nodes); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(nodes))
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	return ids, nil
}
