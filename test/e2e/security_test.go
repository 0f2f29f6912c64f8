package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/mesh"
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

// rogue starts a mesh member outside the cluster, on the lab bridge's
// address, that tries to join h1 (in the background, and again at once
// with Join) and inject an endpoint on vni.
func rogue(t *testing.T, l *lab.Lab, name string, port int, key []byte, vni uint32) *mesh.Mesh {
	t.Helper()
	cfg := mesh.DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = l.Config().Underlay.Addr().String()
	cfg.AdvertiseAddr = cfg.BindAddr
	cfg.Port = port
	cfg.Peers = []string{h1Mesh(l)}
	cfg.SecretKey = key
	m, err := mesh.New(cfg)
	if err == nil {
		err = m.Start("", nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Leave(time.Second); _ = m.Close() })
	rec, _ := json.Marshal(catalog.Record{Network: "rogue", VNI: vni, Endpoint: "evil-" + name, IP: "10.97.0.250",
		MAC: "02:66:66:66:66:66", VTEP: cfg.AdvertiseAddr})
	m.Put(catalog.Table, catalog.Key(name, "evil-"+name), rec)
	return m
}

// h1Mesh is the mesh address of the lab's first host.
func h1Mesh(l *lab.Lab) string { return l.Hosts[0].Addr().String() + ":7950" }

// injected reports which hosts programmed an FDB entry towards vtep.
func injected(t *testing.T, l *lab.Lab, vtep string) []string {
	var hosts []string
	for _, h := range l.Hosts {
		if labtest.EntriesTowards(t, h, vtep) > 0 {
			hosts = append(hosts, h.Name)
		}
	}
	return hosts
}

func hasPeer(t *testing.T, h *lab.Host, name string) bool {
	for _, p := range labtest.Status(t, h).Members {
		if p.Name == name && p.State == "alive" {
			return true
		}
	}
	return false
}

// TestKeyedMesh: a member without the cluster key, or with another key,
// can neither join, nor learn, nor inject anything; one with the key can
// (which proves the probes would see it).
func TestKeyedMesh(t *testing.T) {
	l := need(t)
	labtest.CreateSwarmNetwork(t, l, "sec", "10.97.0.0/24")
	labtest.Run(t, l.Hosts[0], "sec-h1", "sec")
	vni := vniOf(t, l.Hosts[0], "10.97.0.0/24")
	bridge := l.Config().Underlay.Addr().String()

	wrong := []byte("another-clusters-key-of-32-bytes")
	for i, key := range [][]byte{nil, wrong} {
		name := fmt.Sprintf("rogue-%d", i)
		r := rogue(t, l, name, 7960+i, key, vni)
		// h1 refuses the join outright, so the member knows nobody to
		// gossip with, and h1 took nothing from it: what was not there
		// when the join was refused never comes.
		if n, err := r.Join([]string{h1Mesh(l)}); err == nil {
			t.Fatalf("%s (key %v) joined %d members", name, key != nil, n)
		} else {
			t.Logf("%s (key %v): join refused: %v", name, key != nil, err)
		}
		if hs := injected(t, l, bridge); len(hs) > 0 {
			t.Fatalf("%s (key %v) injected an endpoint on %v", name, key != nil, hs)
		}
		if hasPeer(t, l.Hosts[0], name) {
			t.Fatalf("%s joined the mesh", name)
		}
		if n := len(r.Entries("endpoint")); n > 1 {
			t.Fatalf("%s learned %d endpoints", name, n-1)
		}
		_ = r.Close()
	}

	// Positive control: the same member with the key joins and injects.
	key, err := base64.StdEncoding.DecodeString(testMeshKey)
	if err != nil {
		t.Fatal(err)
	}
	r := rogue(t, l, "insider", 7970, key, vni)
	if _, err := r.Join([]string{h1Mesh(l)}); err != nil {
		t.Fatalf("positive control: a member with the key cannot join: %v", err)
	}
	err = lab.WaitFor(context.Background(), 15*time.Second, 250*time.Millisecond, func() error {
		if !hasPeer(t, l.Hosts[0], "insider") {
			return fmt.Errorf("a member with the key did not join")
		}
		if hs := injected(t, l, bridge); len(hs) == 0 {
			return fmt.Errorf("a member with the key could not publish an endpoint")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("positive control failed, so the negative checks prove nothing: %v", err)
	}
	_ = r.Leave(time.Second)
	_ = r.Close()
	err = lab.WaitFor(context.Background(), 15*time.Second, 250*time.Millisecond, func() error {
		if hs := injected(t, l, bridge); len(hs) > 0 {
			return fmt.Errorf("entries of a departed member remain on %v", hs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeyRotation: install, use, remove, host by host, as README says,
// while containers on two hosts keep talking; afterwards the old key is
// useless.
func TestKeyRotation(t *testing.T) {
	l := need(t)
	labtest.CreateSwarmNetwork(t, l, "rot", "10.98.0.0/24")
	ip1 := labtest.Run(t, l.Hosts[0], "rot-h1", "rot")
	ip2 := labtest.Run(t, l.Hosts[1], "rot-h2", "rot")
	labtest.Reach(t, l.Hosts[0], "rot-h1", ip2, 30*time.Second)

	newKey := base64.StdEncoding.EncodeToString([]byte("rotated-weft-cluster-key-32bytes"))
	step := func(op, key string) {
		t.Helper()
		for _, h := range l.Hosts {
			if out, err := labtest.WeftCLI(context.Background(), h, "key", "--state", h.StateDir, op, key); err != nil {
				t.Fatalf("%s: weft key %s: %v %s", h.Name, op, err, out)
			}
		}
		for _, h := range l.Hosts {
			for _, o := range l.Hosts {
				if name := labtest.Status(t, o).Node; o != h && !hasPeer(t, h, name) {
					t.Fatalf("%s does not see %s (%s) alive after key %s", h.Name, o.Name, name, op)
				}
			}
		}
		labtest.Reach(t, l.Hosts[1], "rot-h2", ip1, 10*time.Second)
	}
	step("install", newKey)
	step("use", newKey)
	step("remove", testMeshKey)
	t.Cleanup(func() {
		for _, op := range []string{"install", "use"} {
			for _, h := range l.Hosts {
				_, _ = labtest.WeftCLI(context.Background(), h, "key", "--state", h.StateDir, op, testMeshKey)
			}
		}
		for _, h := range l.Hosts {
			_, _ = labtest.WeftCLI(context.Background(), h, "key", "--state", h.StateDir, "remove", newKey)
		}
	})
	// The mesh still converges on a change: a new container is reachable.
	ip3 := labtest.Run(t, l.Hosts[2], "rot-h3", "rot")
	labtest.Reach(t, l.Hosts[0], "rot-h1", ip3, 15*time.Second)

	old, _ := base64.StdEncoding.DecodeString(testMeshKey)
	vni := vniOf(t, l.Hosts[0], "10.98.0.0/24")
	r := rogue(t, l, "old-key", 7980, old, vni)
	if n, err := r.Join([]string{h1Mesh(l)}); err == nil {
		t.Fatalf("a member with the removed key joined %d members", n)
	}
	if hasPeer(t, l.Hosts[0], "old-key") {
		t.Fatal("a member with the removed key joined")
	}
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
