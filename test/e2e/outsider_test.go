package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/weftnet/weft/firewall"
	"github.com/weftnet/weft/keyservice"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// These tests play an attacker on the lab's underlay: an outsider (a
// namespace with a veth on the lab's bridge and an address no host has),
// against the default install (no key set anywhere). Each has a positive
// control from a member's address showing that the path it tries works.

// h1Mesh is the mesh address of the lab's first host.
func h1Mesh(l *lab.Lab) string { return l.Hosts[0].Addr().String() + ":7950" }

func hasPeer(t *testing.T, h *lab.Host, name string) bool {
	for _, p := range labtest.Status(t, h).Members {
		if p.Name == name && p.State == "alive" {
			return true
		}
	}
	return false
}

// outsider adds outsider i to the lab for the test.
func outsider(t *testing.T, l *lab.Lab, i int) *lab.Outsider {
	t.Helper()
	o, err := l.AddOutsider(context.Background(), i)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Remove(context.Background()) })
	return o
}

// meshProbeArg makes the test binary a plain memberlist node instead of
// running tests (see TestMain), so that a test can try to join the mesh
// from another network namespace.
const meshProbeArg = "mesh-probe"

// probeResult is what a mesh probe reports on its stdout.
type probeResult struct {
	Name    string   `json:"name"`
	Joined  int      `json:"joined"`
	Err     string   `json:"err,omitempty"`
	Members []string `json:"members,omitempty"`
}

// meshProbeMain is a plain memberlist node: it binds -bind:-port, joins
// -join (with the key in -key-file, if any), waits for the members it
// learns, reports them as JSON, and leaves.
func meshProbeMain(args []string) int {
	fs := flag.NewFlagSet(meshProbeArg, flag.ContinueOnError)
	bind := fs.String("bind", "", "address to bind and advertise")
	port := fs.Int("port", 7960, "port to bind")
	join := fs.String("join", "", "member to join, ip:port")
	keyFile := fs.String("key-file", "", "file holding the gossip key (base64)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = fmt.Sprintf("probe-%s-%d", *bind, *port)
	cfg.BindAddr, cfg.BindPort = *bind, *port
	cfg.AdvertiseAddr, cfg.AdvertisePort = *bind, *port
	cfg.TCPTimeout = 3 * time.Second
	cfg.LogOutput = io.Discard
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err == nil {
			cfg.SecretKey, err = mesh.ParseKey(strings.TrimSpace(string(b)))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res := probeResult{Name: cfg.Name}
	res.Joined, err = ml.Join([]string{*join})
	if err != nil {
		res.Err = err.Error()
	}
	if res.Joined > 0 {
		// The members arrive with the join's state exchange; give gossip
		// a moment to bring the rest.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && ml.NumMembers() < 4 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, m := range ml.Members() {
		if m.Name != cfg.Name {
			res.Members = append(res.Members, m.Name)
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.Joined > 0 {
		_ = ml.Leave(time.Second)
	}
	_ = ml.Shutdown()
	return 0
}

// probe runs a mesh probe with cmd (an outsider's or a host's ExecCmd),
// bound to bind:port, joining h1's mesh with key (none if nil).
func probe(t *testing.T, l *lab.Lab, cmd func(ctx context.Context, name string, args ...string) *exec.Cmd, bind netip.Addr, port int, key string) probeResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{meshProbeArg, "-bind", bind.String(), "-port", strconv.Itoa(port), "-join", h1Mesh(l)}
	if key != "" {
		f := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(f, []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-key-file", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := cmd(ctx, exe, args...)
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("mesh probe: %v", err)
	}
	var res probeResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("mesh probe said %q: %v", out, err)
	}
	return res
}

// clusterKey reads the mesh's primary key on h, as a thief who got hold of
// a host's state directory would.
func clusterKey(t *testing.T, h *lab.Host) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.StateDir, mesh.KeysFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Primary string }
	if err := json.Unmarshal(b, &doc); err != nil || doc.Primary == "" {
		t.Fatalf("%s's keyring: %v", h.Name, err)
	}
	return doc.Primary
}

// TestOutsiderCannotJoin: on the default install (no key set anywhere),
// a plain memberlist node on an outsider's address cannot join the mesh,
// not even with the cluster's key (weft's table drops it); on a member's
// address it cannot without the key (the gossip is encrypted); with the
// key, from a member's address, it joins (the positive control: the join
// path works, so the refusals are the defences').
func TestOutsiderCannotJoin(t *testing.T) {
	l := need(t)
	h1, h3 := l.Hosts[0], l.Hosts[2]
	meshWhole(t, l, time.Minute)
	// weft's table exists while the host has a weft network.
	labtest.CreateSwarmNetwork(t, l, "fw", "10.95.0.0/24")
	labtest.Run(t, h1, "fw-h1", "fw")
	labtest.WaitFirewall(t, h1, l.Hosts, true, 30*time.Second)
	o := outsider(t, l, 1)
	key := clusterKey(t, h1)

	for _, tc := range []struct {
		name string
		cmd  func(ctx context.Context, name string, args ...string) *exec.Cmd
		addr netip.Addr
		key  string
		join bool
	}{
		{"outsider, no key (the default install's attacker)", o.ExecCmd, o.Addr(), "", false},
		{"outsider with the cluster's key (stolen): weft's table drops it", o.ExecCmd, o.Addr(), key, false},
		{"member's address, no key: the gossip is encrypted", h3.ExecCmd, h3.Addr(), "", false},
		{"member's address with the key: the positive control", h3.ExecCmd, h3.Addr(), key, true},
	} {
		start := time.Now()
		res := probe(t, l, tc.cmd, tc.addr, 7961, tc.key)
		t.Logf("FIGURE join %s: joined %d, saw %d members, in %s (%s)", tc.name, res.Joined, len(res.Members), time.Since(start).Round(time.Millisecond), res.Err)
		if tc.join {
			if res.Joined == 0 || len(res.Members) < len(l.Hosts) {
				t.Fatalf("%s: positive control failed, so the refusals prove nothing: %+v", tc.name, res)
			}
			continue
		}
		if res.Joined > 0 || len(res.Members) > 0 {
			t.Fatalf("%s: joined and saw %v", tc.name, res.Members)
		}
		if hasPeer(t, h1, res.Name) {
			t.Fatalf("%s: h1 lists the probe as a member", tc.name)
		}
	}
}

// icmpInEchos reads a container's count of ICMP echo requests received.
func icmpInEchos(t *testing.T, h *lab.Host, ctr string) int {
	t.Helper()
	out := h.MustDocker(t, "exec", ctr, "cat", "/proc/net/snmp")
	var head []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		if i := slices.Index(head, "InEchos"); i > 0 && i < len(f) {
			n, _ := strconv.Atoi(f[i])
			return n
		}
	}
	t.Fatalf("no Icmp InEchos in %s's /proc/net/snmp", ctr)
	return 0
}

// TestOutsiderFramesDeliverNothing: an outsider that builds a VXLAN
// device with a network's VNI, aimed at a host, delivers none of 20 ICMP
// echo requests into a container there, even with the inner source of a
// container of another host; the same frames sent with that host's
// underlay address (spoofed, from the same machine) are delivered — the
// positive control, and the measured limit (only an encrypted network
// stops a spoofer on the link who knows a container's addresses); and a
// member's own container reaches the container.
func TestOutsiderFramesDeliverNothing(t *testing.T) {
	l := need(t)
	h1, h2 := l.Hosts[0], l.Hosts[1]
	const subnet = "10.94.0.0/24"
	labtest.CreateSwarmNetwork(t, l, "inj", subnet)
	ip1 := labtest.Run(t, h1, "inj-h1", "inj")
	ip2 := labtest.Run(t, h2, "inj-h2", "inj")
	labtest.Reach(t, h2, "inj-h2", ip1, 30*time.Second)
	vni := vniOf(t, h1, subnet)
	mac := h1.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "inj"}}{{.MacAddress}}{{end}}`, "inj-h1")
	// The frames carry h2's container's MAC and address inside: weft's
	// table of sources lets in only sources the catalog places behind the
	// outer address, so that is what a spoofer has to know.
	mac2 := strings.TrimSpace(h2.MustDocker(t, "inspect", "-f", `{{with index .NetworkSettings.Networks "inj"}}{{.MacAddress}}{{end}}`, "inj-h2"))
	labtest.WaitFirewall(t, h1, l.Hosts, true, 30*time.Second)
	h1MAC, err := h1.Exec(context.Background(), "cat", "/sys/class/net/"+lab.UnderlayIf+"/address")
	if err != nil {
		t.Fatal(err)
	}
	o := outsider(t, l, 2)
	ox := func(args ...string) string {
		t.Helper()
		out, err := o.Exec(context.Background(), args[0], args[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// No ARP from the outsider's side at all: h1's MAC is written in, and
	// it answers no ARP for an address it borrows.
	ox("sysctl", "-qw", "net.ipv4.conf."+lab.UnderlayIf+".arp_ignore=8", "net.ipv4.conf."+lab.UnderlayIf+".arp_announce=2")
	ox("ip", "neigh", "replace", h1.Addr().String(), "lladdr", strings.TrimSpace(h1MAC), "dev", lab.UnderlayIf, "nud", "permanent")

	// deliver sends 20 echo requests to the container through a VXLAN
	// device of the network's VNI whose outer source is src, and returns
	// how many the container received.
	deliver := func(src netip.Addr) int {
		t.Helper()
		ox("ip", "link", "add", "vxa", "address", mac2, "type", "vxlan", "id", strconv.Itoa(int(vni)), "remote", h1.Addr().String(),
			"local", src.String(), "dstport", "4790", "dev", lab.UnderlayIf, "nolearning")
		defer func() { _, _ = o.Exec(context.Background(), "ip", "link", "del", "vxa") }()
		ox("ip", "addr", "add", ip2+"/24", "dev", "vxa")
		ox("ip", "link", "set", "vxa", "up")
		ox("ip", "neigh", "replace", ip1, "lladdr", mac, "dev", "vxa", "nud", "permanent")
		before := icmpInEchos(t, h1, "inj-h1")
		// No reply comes back (the container's host has no entry for the
		// sender): ping's exit status says nothing; the container's
		// counter does.
		_, _ = o.Exec(context.Background(), "ping", "-c", "20", "-i", "0.05", "-W", "1", ip1)
		return icmpInEchos(t, h1, "inj-h1") - before
	}
	got := deliver(o.Addr())
	t.Logf("FIGURE frames with VNI %d from the outsider's own address: %d of 20 delivered", vni, got)

	// The same machine spoofing h2's underlay address.
	ox("ip", "addr", "add", h2.Addr().String()+"/32", "dev", lab.UnderlayIf)
	spoofed := deliver(h2.Addr())
	ox("ip", "addr", "del", h2.Addr().String()+"/32", "dev", lab.UnderlayIf)
	t.Logf("FIGURE the same frames with a member's (h2's) address spoofed: %d of 20 delivered (the limit: a plain network trusts the outer source address)", spoofed)
	labtest.Reach(t, h2, "inj-h2", ip1, 10*time.Second)

	if spoofed == 0 {
		t.Fatal("positive control failed: not even frames from a member's address were delivered, so 0 from the outsider proves nothing")
	}
	if got != 0 {
		t.Fatalf("%d of 20 frames from an outsider were delivered into a container", got)
	}
}

// TestFirewallFollowsNetworks: weft's table appears on a host with its
// first weft network, letting in every member, and goes a minute after
// the last.
func TestFirewallFollowsNetworks(t *testing.T) {
	l := need(t)
	h := l.Hosts[2]
	if n := len(labtest.Status(t, h).Networks); n > 0 {
		t.Skipf("%s has %d weft networks from other tests: the table cannot go", h.Name, n)
	}
	// An earlier test's last network on h may have gone just now: its
	// table stays a minute more.
	labtest.WaitFirewall(t, h, nil, false, 90*time.Second)
	labtest.CreateSwarmNetwork(t, l, "fwn", "10.93.0.0/24")
	labtest.Run(t, h, "fwn-h3", "fwn")
	start := time.Now()
	m := labtest.WaitFirewall(t, h, l.Hosts, true, 30*time.Second)
	t.Logf("table on %s with the first network after %s: lets in %v", h.Name, time.Since(start).Round(time.Millisecond), m)
	// Members only on every weft port: VXLAN, the mesh's two, and the
	// encrypted networks' WireGuard (on in the lab, at its default port).
	table := h.MustExec(t, "nft", "list", "table", "ip", firewall.TableName)
	for _, rule := range []string{"udp dport 4790", "tcp dport 7950", "udp dport 7950", "udp dport 51820"} {
		if !strings.Contains(table, rule+" ip saddr != @members") {
			t.Errorf("%s's table has no members-only rule for %s:\n%s", h.Name, rule, table)
		}
	}
	h.MustDocker(t, "rm", "-f", "fwn-h3")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := labtest.RemoveNetwork(ctx, l.Manager(), "fwn", 50*time.Second); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	labtest.WaitFirewall(t, h, nil, false, 2*time.Minute)
	t.Logf("table gone from %s %s after its last network (a minute's hold)", h.Name, time.Since(start).Round(time.Millisecond))
}

// keyList reads h's `weft key list`: fingerprints, the primary first.
func keyList(t *testing.T, h *lab.Host) []string {
	t.Helper()
	out, err := labtest.WeftCLI(context.Background(), h, "key", "--state", h.StateDir, "list")
	if err != nil {
		t.Fatalf("%s: weft key list: %v", h.Name, err)
	}
	var fps []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			fps = append(fps, f[0])
		}
	}
	return fps
}

// TestKeyRotation: `weft key rotate` on a manager reaches every member,
// which end on the new key alone, while containers on two hosts keep
// talking; the old key then opens nothing, the new one does (from a
// member's address); manual steps and workers' rotations are refused.
func TestKeyRotation(t *testing.T) {
	l := need(t)
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	meshWhole(t, l, time.Minute)
	labtest.CreateSwarmNetwork(t, l, "rot", "10.98.0.0/24")
	ip1 := labtest.Run(t, h1, "rot-h1", "rot")
	labtest.Run(t, h2, "rot-h2", "rot")
	labtest.Reach(t, h2, "rot-h2", ip1, 30*time.Second)
	before := keyList(t, h1)
	oldKey := clusterKey(t, h3)
	for _, h := range l.Hosts {
		if got := keyList(t, h); !slices.Equal(got, before) || len(got) != 1 {
			t.Fatalf("%s holds %v, h1 %v: one key everywhere before the rotation", h.Name, got, before)
		}
	}
	p := labtest.StartPinger(t, h2, "rot-ping", "rot", ip1)
	p.WaitMore(t, 20)

	if out, err := labtest.WeftCLI(context.Background(), h2, "key", "--state", h2.StateDir, "rotate"); err == nil {
		t.Fatalf("a worker rotated the key: %s", out)
	}
	start := time.Now()
	if out, err := labtest.WeftCLI(context.Background(), h1, "key", "--state", h1.StateDir, "rotate"); err != nil {
		t.Fatalf("weft key rotate: %v %s", err, out)
	}
	var after []string
	err := lab.WaitFor(context.Background(), 2*time.Minute, 100*time.Millisecond, func() error {
		after = keyList(t, h1)
		if len(after) != 1 || after[0] == before[0] {
			return fmt.Errorf("h1 holds %v", after)
		}
		for _, h := range l.Hosts[1:] {
			if got := keyList(t, h); !slices.Equal(got, after) {
				return fmt.Errorf("%s holds %v, h1 %v", h.Name, got, after)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE rotation: every host on the new key alone, the old one dropped, %s after weft key rotate", time.Since(start).Round(time.Millisecond))
	meshWhole(t, l, 10*time.Second)
	p.WaitMore(t, 20)
	res := p.Stop(t)
	t.Logf("FIGURE rotation: %s during it", res)
	res.Check(t, p)
	ip3 := labtest.Run(t, h3, "rot-h3", "rot")
	labtest.Reach(t, h1, "rot-h1", ip3, 30*time.Second)

	if res := probe(t, l, h3.ExecCmd, h3.Addr(), 7962, oldKey); res.Joined > 0 {
		t.Fatalf("the rotated-out key still joins: %+v", res)
	}
	if res := probe(t, l, h3.ExecCmd, h3.Addr(), 7963, clusterKey(t, h3)); res.Joined == 0 {
		t.Fatalf("positive control: the new key does not join from a member's address: %+v", res)
	}
	cmd := labtest.WeftCLIStdin(h1, oldKey, "key", "--state", h1.StateDir, "install")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("a manual key step was accepted while the swarm manages the keyring: %s", out)
	} else {
		t.Logf("manual step refused: %s", strings.TrimSpace(string(out)))
	}
}

// swarmIdentity reads h's swarm node certificate, key and root CA.
func swarmIdentity(t *testing.T, h *lab.Host) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	dir := filepath.Join(h.SwarmDir(), "certificates")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "swarm-node.crt"), filepath.Join(dir, "swarm-node.key"))
	if err != nil {
		t.Fatal(err)
	}
	return cert, cert.Leaf
}

// forged makes a certificate that claims to be a worker of the lab's
// swarm (its cluster ID, a node name) from a CA of the attacker's own.
func forged(t *testing.T, cluster string) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "swarm-ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		Subject:     pkix.Name{Organization: []string{cluster}, OrganizationalUnit: []string{keyservice.RoleWorker}, CommonName: "forged"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// askKeys asks h's key service for the keyring with cert (none if nil),
// from the root namespace (the lab bridge's address: no member), and
// returns the handshake's duration and the fingerprints handed out.
func askKeys(h *lab.Host, cert *tls.Certificate) (time.Duration, []string, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := &tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(h.Addr(), keyservice.DefaultPort).String())
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	took := time.Since(start)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(`{"v":1}`)); err != nil {
		return took, nil, err
	}
	var resp struct {
		Err  string
		Ring struct {
			Primary string
			Keys    []struct{ Key []byte }
		}
	}
	if err := json.NewDecoder(io.LimitReader(c, 1<<16)).Decode(&resp); err != nil {
		return took, nil, err
	}
	if resp.Err != "" {
		return took, nil, fmt.Errorf("refused: %s", resp.Err)
	}
	fps := []string{resp.Ring.Primary}
	for _, k := range resp.Ring.Keys {
		if fp := mesh.Fingerprint(k.Key); fp != resp.Ring.Primary {
			fps = append(fps, fp)
		}
	}
	return took, fps, nil
}

// TestKeyService: the key port is open to anyone (TLS protects it): a
// client holding a member's swarm certificate gets the keyring (the same
// the host uses), one with no certificate or a forged one (the swarm's
// cluster ID, another CA) gets nothing. Measures the handshake.
func TestKeyService(t *testing.T) {
	l := need(t)
	h1, h2 := l.Hosts[0], l.Hosts[1]
	meshWhole(t, l, time.Minute)
	cert, leaf := swarmIdentity(t, h2)
	var took []time.Duration
	var fps []string
	for range 20 {
		d, got, err := askKeys(h1, &cert)
		if err != nil {
			t.Fatalf("a member's certificate: %v", err)
		}
		took, fps = append(took, d), got
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("FIGURE key service: TCP connect + TLS 1.3 mutual handshake with a worker's swarm certificate, 20 runs: median %s, max %s",
		took[len(took)/2].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond))
	if want := keyList(t, h1); !slices.Equal(fps, want) {
		t.Fatalf("handed out %v, h1 uses %v", fps, want)
	}
	f := forged(t, leaf.Subject.Organization[0])
	for name, c := range map[string]*tls.Certificate{"no certificate": nil, "a forged certificate of the swarm's cluster ID": &f} {
		if _, got, err := askKeys(h1, c); err == nil {
			t.Fatalf("%s: handed out %v", name, got)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
}
