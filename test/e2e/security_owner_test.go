package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// rogueArg makes the test binary a rogue mesh member instead of running
// tests: a weft mesh holding the cluster's gossip key that writes the
// endpoint records it is given, as a member that forges would.
const rogueArg = "owner-rogue"

// rogueName is the rogue's mesh name.
const rogueName = "rogue-owner"

func init() {
	// Before TestMain: the tests run this binary again in a host's
	// namespace as the rogue (TestForgedRecordsMoveNoTraffic).
	if len(os.Args) > 1 && os.Args[1] == rogueArg {
		os.Exit(rogueMain(os.Args[2:]))
	}
}

// rogueRecord is one forged endpoint record: its mesh key and value.
type rogueRecord struct {
	Key    string         `json:"key"`
	Record catalog.Record `json:"record"`
}

// rogueMain joins -join from -bind:-port with the key in -key-file,
// writes the records in -records, says "ready" and stays until its
// standard input closes.
func rogueMain(args []string) int {
	if len(args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: owner-rogue bind port join key-file records-file")
		return 2
	}
	port, _ := strconv.Atoi(args[1])
	keyb, err := os.ReadFile(args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	key, err := mesh.ParseKey(strings.TrimSpace(string(keyb)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var recs []rogueRecord
	b, err := os.ReadFile(args[4])
	if err == nil {
		err = json.Unmarshal(b, &recs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := mesh.DefaultConfig()
	cfg.NodeName = rogueName
	cfg.Port = port
	cfg.SecretKey = key
	cfg.RepairGrace = -1
	m, err := mesh.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	for _, r := range recs {
		v, _ := json.Marshal(r.Record)
		m.Put(catalog.Table, r.Key, v)
	}
	if err := m.Start(args[0], []string{args[2]}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = m.Leave(time.Second)
	return 0
}

// neighbours renders h's neighbour entries of vni as "IP MAC", and its
// FDB entries as "MAC VTEP".
func neighbours(t *testing.T, h *lab.Host, vni uint32) (map[string]string, map[string]string) {
	t.Helper()
	neigh, fdb := map[string]string{}, map[string]string{}
	for _, d := range labtest.MustKernel(t, h).Devices {
		if d.VNI != vni {
			continue
		}
		for _, n := range d.Neighbors {
			neigh[n.IP.String()] = n.MAC.String()
		}
		for _, f := range d.FDB {
			fdb[f.MAC.String()] = f.VTEP.String()
		}
	}
	return neigh, fdb
}

// TestForgedRecordsMoveNoTraffic: a member-keyed rogue (a weft mesh with
// the cluster's key, taken from a host's state directory, on a member's
// address) writes endpoint records: under another host's key, claiming a
// container's address with its own VTEP, aimed at an address that is not
// its own, outside the subnet, and on the gateway. None is programmed on
// h1, whose entries for the container stay as they were and whose pings
// to it lose nothing. The positive control: the rogue's record for a free
// address, with its own VTEP, is programmed on h1 by the same path.
func TestForgedRecordsMoveNoTraffic(t *testing.T) {
	l := need(t)
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	meshWhole(t, l, time.Minute)
	const subnet = "10.96.0.0/24"
	labtest.CreateSwarmNetwork(t, l, "own", subnet)
	labtest.Run(t, h2, "own-h2", "own")
	ip2 := labtest.ContainerIP(t, h2, "own-h2", "own")
	p := labtest.StartPinger(t, h1, "own-ping", "own", ip2)
	vni := vniOf(t, h1, subnet)
	netID := strings.TrimSpace(h1.MustDocker(t, "network", "inspect", "-f", "{{.Id}}", "own"))
	h2node := labtest.Status(t, h2).Node
	neigh0, fdb0 := neighbours(t, h1, vni)
	mac2 := neigh0[ip2]
	if mac2 == "" {
		t.Fatalf("h1 has no entry for %s: %v", ip2, neigh0)
	}

	vtep := h3.Addr().String() // the rogue's own address: it runs on h3's
	rec := func(host, ep, ip, mac, vtep string) rogueRecord {
		return rogueRecord{Key: catalog.Key(host, ep), Record: catalog.Record{Network: netID, VNI: vni, Endpoint: ep, IP: ip, MAC: mac, VTEP: vtep}}
	}
	elsewhere := netip.MustParseAddr("198.18.0.77").String()
	recs := []rogueRecord{
		rec(h2node, "forged", ip2, "02:00:00:0f:00:01", vtep),                // h2's key
		rec(rogueName, "dup", ip2, "02:00:00:0f:00:02", vtep),                // h2's container's address
		rec(rogueName, "aim", "10.96.0.201", "02:00:00:0f:00:03", elsewhere), // VTEP not its own
		rec(rogueName, "out", "10.97.0.5", "02:00:00:0f:00:04", vtep),        // outside the subnet
		rec(rogueName, "gw", "10.96.0.1", "02:00:00:0f:00:05", vtep),         // the gateway
		rec(rogueName, "ok", "10.96.0.200", "02:00:00:0f:00:09", vtep),       // the positive control
	}
	dir := t.TempDir()
	b, _ := json.Marshal(recs)
	if err := os.WriteFile(filepath.Join(dir, "records"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(clusterKey(t, h1)), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := h3.ExecCmd(ctx, exe, rogueArg, h3.Addr().String(), "7962", h1Mesh(l), filepath.Join(dir, "key"), filepath.Join(dir, "records"))
	c.Stderr = os.Stderr
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = c.Wait()
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("rogue said %q: %v", line, err)
	}

	start := time.Now()
	err = lab.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		neigh, fdb := neighbours(t, h1, vni)
		if neigh["10.96.0.200"] != "02:00:00:0f:00:09" || fdb["02:00:00:0f:00:09"] != vtep {
			return fmt.Errorf("the rogue's own record is not programmed on h1")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("positive control: %v, so the refusals prove nothing", err)
	}
	t.Logf("FIGURE the rogue's honest record programmed on h1 %s after it joined", time.Since(start).Round(time.Millisecond))
	// The forged records arrived with it; let a few more pings go by.
	p.WaitMore(t, 100)
	neigh, fdb := neighbours(t, h1, vni)
	if neigh[ip2] != mac2 || fdb[mac2] != fdb0[mac2] {
		t.Errorf("h1's entries for %s moved: %s at %s (was %s at %s)", ip2, neigh[ip2], fdb[neigh[ip2]], mac2, fdb0[mac2])
	}
	for _, ip := range []string{"10.96.0.201", "10.97.0.5", "10.96.0.1"} {
		if m, ok := neigh[ip]; ok {
			t.Errorf("a forged record for %s is programmed on h1: %s", ip, m)
		}
	}
	for mac, to := range fdb {
		if to == elsewhere || (strings.HasPrefix(mac, "02:00:00:0f:00:0") && mac != "02:00:00:0f:00:09") {
			t.Errorf("a forged FDB entry on h1: %s to %s", mac, to)
		}
	}
	res := p.Stop(t)
	t.Logf("FIGURE pings h1 -> h2 while the rogue's records were in the mesh: %s", res)
	res.Check(t, p)
}
