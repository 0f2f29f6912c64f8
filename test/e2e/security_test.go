package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// vniOf returns the VNI of the network whose subnet is given, on h.
func vniOf(t *testing.T, h *lab.Host, subnet string) uint32 {
	t.Helper()
	var vni uint32
	err := lab.WaitFor(context.Background(), 20*time.Second, 250*time.Millisecond, func() error {
		for _, n := range labtest.Status(t, h).Networks {
			if n.Subnet == subnet {
				vni = n.VNI
				return nil
			}
		}
		return fmt.Errorf("no network %s in %s's status", subnet, h.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
	return vni
}

// TestGarbageInput: garbage on the mesh port (UDP and TCP) and malformed or
// oversized requests on the plugin's socket change nothing: the plugin
// answers with an error sentence, stays up, and the mesh stays whole.
func TestGarbageInput(t *testing.T) {
	l := need(t)
	h := l.Hosts[0]
	meshWhole(t, l, time.Minute) // first the mesh as it should be
	target := h1Mesh(l)
	junk := [][]byte{{}, {0}, {0xff, 0xff, 0xff}, make([]byte, 1400), []byte("GET / HTTP/1.0\r\n\r\n"), bytesOf(0x42, 70000)}
	for _, b := range junk {
		if c, err := net.Dial("udp", target); err == nil {
			_, _ = c.Write(b[:min(len(b), 1400)])
			c.Close()
		}
		if c, err := net.DialTimeout("tcp", target, 2*time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write(b)
			c.Close()
		}
	}

	// Docker keeps a managed plugin's socket under /run/docker/plugins/<id>.
	sock := filepath.Join("/run/docker/plugins", h.MustDocker(t, "plugin", "inspect", "-f", "{{.Id}}", pluginName), "weft.sock")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	for path, body := range map[string]string{
		"/NetworkDriver.CreateNetwork":  "{not json",
		"/NetworkDriver.CreateEndpoint": `{"NetworkID":"nope","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"}}`,
		"/NetworkDriver.Join":           strings.Repeat("[", 3<<20),
		"/IpamDriver.RequestAddress":    `{"PoolID":"nope"}`,
	} {
		resp, err := c.Post("http://weft"+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var out struct{ Err string }
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || out.Err == "" || strings.Contains(out.Err, "\n") {
			t.Fatalf("%s: status %d, error %q: want one error sentence", path, resp.StatusCode, out.Err)
		}
	}

	// Still whole: every host sees every other alive, and a new network
	// carries traffic across hosts.
	meshWhole(t, l, 10*time.Second)
	labtest.CreateSwarmNetwork(t, l, "junk", "10.99.0.0/24")
	ip := labtest.Run(t, l.Hosts[1], "junk-h2", "junk")
	labtest.Run(t, h, "junk-h1", "junk")
	labtest.Reach(t, h, "junk-h1", ip, 30*time.Second)
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// meshWhole waits until every host sees every other alive in the mesh.
func meshWhole(t *testing.T, l *lab.Lab, within time.Duration) {
	t.Helper()
	err := lab.WaitFor(context.Background(), within, 250*time.Millisecond, func() error {
		for _, x := range l.Hosts {
			for _, y := range l.Hosts {
				if name := labtest.Status(t, y).Node; x != y && !hasPeer(t, x, name) {
					return fmt.Errorf("%s does not see %s alive", x.Name, y.Name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
