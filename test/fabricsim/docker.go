package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// dockerClient speaks the few calls of the Docker Engine API a peer needs,
// over a unix socket (unix://path) or TCP (tcp://host:port), unversioned
// so that any engine answers at its own API version.
type dockerClient struct {
	http *http.Client
	base string
}

// errConflict is the engine's answer to a container name already in use.
var errConflict = errors.New("container name in use")

func newDockerClient(endpoint string) (*dockerClient, error) {
	tr := &http.Transport{Proxy: nil}
	base := "http://docker"
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		path := strings.TrimPrefix(endpoint, "unix://")
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
	case strings.HasPrefix(endpoint, "tcp://"):
		base = "http://" + strings.TrimPrefix(endpoint, "tcp://")
	default:
		return nil, fmt.Errorf("docker endpoint %q: want unix:///path or tcp://host:port", endpoint)
	}
	return &dockerClient{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: base}, nil
}

func (d *dockerClient) close() { d.http.CloseIdleConnections() }

// containerSpec is the body of POST /containers/create, as far as used.
type containerSpec struct {
	Image      string
	Cmd        []string
	Env        []string
	Labels     map[string]string
	HostConfig hostConfig
}

type hostConfig struct {
	NetworkMode string
	DNS         []string `json:"Dns,omitempty"`
}

func (d *dockerClient) createContainer(ctx context.Context, name string, spec containerSpec) (string, error) {
	var created struct{ ID string }
	err := d.call(ctx, http.MethodPost, "/containers/create?name="+url.QueryEscape(name), spec, &created)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	return created.ID, nil
}

func (d *dockerClient) startContainer(ctx context.Context, id string) error {
	if err := d.call(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/start", nil, nil); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

func (d *dockerClient) removeContainer(ctx context.Context, name string) error {
	if err := d.call(ctx, http.MethodDelete, "/containers/"+url.PathEscape(name)+"?force=1", nil, nil); err != nil {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	return nil
}

// call sends body as JSON and decodes the answer into out (if not nil).
// A 409 is errConflict; any other status from 400 on is an error carrying
// the engine's message.
func (d *dockerClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var msg struct{ Message string }
		_ = json.Unmarshal(data, &msg)
		if msg.Message == "" {
			msg.Message = strings.TrimSpace(string(data))
		}
		err := fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg.Message)
		if resp.StatusCode == http.StatusConflict {
			err = fmt.Errorf("%w: %w", errConflict, err)
		}
		return err
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}
