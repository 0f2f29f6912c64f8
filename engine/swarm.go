package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
)

// NetworkService is one service of a network as the engine's verbose
// network inspect reports it: its virtual IP on the network ("<nil>" or
// empty for services without one, such as dnsrr services and plain
// containers) and its tasks' endpoints, this host's and the other nodes'
// alike (the engine learns them through its own gossip).
type NetworkService struct {
	VIP   string
	Tasks []NetworkTask
}

// NetworkTask is one task endpoint of a NetworkService.
type NetworkTask struct {
	Name       string
	EndpointID string
	EndpointIP string
}

// NetworkServices returns the services of a swarm-scoped network by name
// (GET /networks/{id}?verbose=true). It is empty on a node that has no
// endpoint on the network.
func (c *Client) NetworkServices(ctx context.Context, networkID string) (map[string]NetworkService, error) {
	var out struct {
		Services map[string]NetworkService
	}
	err := c.get(ctx, "/networks/"+url.PathEscape(networkID)+"?verbose=true", &out)
	return out.Services, err
}

// Service is the part of a swarm service (a manager's /services) that weft
// uses.
type Service struct {
	ID   string
	Spec struct {
		Name string
	}
	Endpoint struct {
		// VirtualIPs are the service's addresses, one per network, as
		// CIDR ("10.0.0.5/24"); none in dnsrr mode.
		VirtualIPs []struct {
			NetworkID string
			Addr      string
		}
	}
}

// Services lists the swarm's services; only a manager answers.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var out []Service
	err := c.get(ctx, "/services", &out)
	return out, err
}

// Task is the part of a swarm task (a manager's /tasks) that weft uses.
type Task struct {
	ID        string
	ServiceID string
	// DesiredState is what the orchestrator wants ("running", or
	// "shutdown" and "remove" once the task is to go).
	DesiredState string
	Status       struct {
		// State is where the task is ("running", "shutdown", ...).
		State string
	}
	NetworksAttachments []struct {
		Network struct {
			ID string
		}
		// Addresses are the task's addresses on the network, as CIDR.
		Addresses []string
	}
}

// Tasks lists the tasks of the swarm's services matching filters (the
// API's, e.g. {"desired-state": ["shutdown"]}); only a manager answers.
func (c *Client) Tasks(ctx context.Context, filters map[string][]string) ([]Task, error) {
	path := "/tasks"
	if len(filters) > 0 {
		b, err := json.Marshal(filters)
		if err != nil {
			return nil, err
		}
		path += "?filters=" + url.QueryEscape(string(b))
	}
	var out []Task
	err := c.get(ctx, path, &out)
	return out, err
}

// PluginNames returns the names under which the engine lists the managed
// plugin whose binary is entrypoint ("/weft"), enabled or not: while the
// plugin starts, the engine has not yet marked it enabled.
func (c *Client) PluginNames(ctx context.Context, entrypoint string) ([]string, error) {
	plugins, err := c.Plugins(ctx)
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	var names []string
	for _, p := range plugins {
		if len(p.Config.Entrypoint) > 0 && p.Config.Entrypoint[0] == entrypoint {
			names = append(names, p.Name)
		}
	}
	return names, nil
}
