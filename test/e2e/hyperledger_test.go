package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/labtest"
)

// The Hyperledger test's names. Chaincode containers carry the label
// fabricsim.peer=<peer id> (set by test/fabricsim).
const (
	fabricImage    = "weftlab/fabricsim:latest"
	fabricNetwork  = "fabnet"
	fabricSubnet   = "10.98.0.0/24"
	fabricGateway  = "10.98.0.1"
	fabricService  = "fabpeer"
	fabricPeers    = 3
	chaincodeLabel = "fabricsim.peer"
)

// TestHyperledger plays Hyperledger Fabric's pattern on swarm with weft:
// peers run as a dnsrr service named vp<slot> by --hostname templates,
// each starts its chaincode container through its own host's Docker API on
// the weft network, the chaincode registers with its peer by name, and the
// peers dial each other by name. An outside client reaches each peer on
// its host's underlay address through a host-mode published port. Then a
// peer's host is cut off the underlay: swarm starts that slot on another
// host, and its name leads to the new task from every remaining host.
//
// The status port is published in host mode without a fixed host port:
// swarm never places two tasks that publish the same host port on one
// node, so with a fixed port and three peers on three hosts the slot of a
// lost host could go nowhere.
func TestHyperledger(t *testing.T) {
	l := need(t)
	ctx := context.Background()
	start := time.Now()

	labtest.GoImage(t, l, "github.com/weftnet/weft/test/fabricsim", fabricImage)
	nodes := nodeHosts(t, l)

	labtest.CreateSwarmNetwork(t, l, fabricNetwork, fabricSubnet)
	// Registered before the service, so it runs after the service is
	// removed: the peers' chaincode containers are not swarm's.
	t.Cleanup(func() { removeChaincodes(t, l) })
	probes := map[*lab.Host]string{}
	for _, h := range l.Hosts {
		probes[h] = "fabprobe-" + h.Name
		labtest.Run(t, h, probes[h], fabricNetwork, "--dns", fabricGateway)
	}
	createPeers(t, l)

	tasks := waitPeerTasks(t, l, nodes, 3*time.Minute, func(ts map[int]peerTask) error {
		if len(ts) != fabricPeers {
			return fmt.Errorf("%d of %d peers running", len(ts), fabricPeers)
		}
		return nil
	})
	hosts := map[*lab.Host]bool{}
	for _, pt := range tasks {
		hosts[pt.host] = true
	}
	if len(hosts) != fabricPeers {
		t.Fatalf("swarm did not spread the peers over the hosts: %v", tasks)
	}
	t.Logf("%d peers running after %s: %v", fabricPeers, time.Since(start).Round(time.Second), tasks)

	checkPeers(t, tasks, 2*time.Minute)
	t.Logf("every chaincode registered with its peer, every peer reached the others, statuses read on the underlay, after %s", time.Since(start).Round(time.Second))

	// Cut a peer's host off, a worker's: the lab's only manager must stay
	// to reschedule.
	var victim peerTask
	for _, slot := range slices.Sorted(maps.Keys(tasks)) {
		if tasks[slot].host != l.Manager() {
			victim = tasks[slot]
			break
		}
	}
	name := fmt.Sprintf("vp%d", victim.slot)
	t.Logf("cutting %s (holding %s at %s) off the underlay", victim.host.Name, name, victim.addr)
	if err := victim.host.CutUnderlay(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := victim.host.RestoreUnderlay(context.Background()); err != nil {
			t.Errorf("restore %s: %v", victim.host.Name, err)
			return
		}
		if err := l.WaitSwarmReady(context.Background(), 2*time.Minute); err != nil {
			t.Errorf("after restoring %s: %v", victim.host.Name, err)
		}
	})
	cut := time.Now()
	moved := waitPeerTasks(t, l, nodes, 3*time.Minute, func(ts map[int]peerTask) error {
		if len(ts) != fabricPeers {
			return fmt.Errorf("%d of %d peers running", len(ts), fabricPeers)
		}
		if pt := ts[victim.slot]; pt.host == victim.host {
			return fmt.Errorf("%s still on %s", name, pt.host.Name)
		}
		return nil
	})
	newTask := moved[victim.slot]
	t.Logf("swarm runs %s on %s at %s, %s after the cut", name, newTask.host.Name, newTask.addr, time.Since(cut).Round(time.Second))
	if newTask.addr == victim.addr {
		t.Fatalf("%s's new task has its old address %s", name, victim.addr)
	}

	for _, h := range l.Hosts {
		if h == victim.host {
			continue
		}
		expectName(t, h, probes[h], name, fabricGateway, newTask.addr)
		expectName(t, h, probes[h], name+".weft.local", fabricGateway, newTask.addr)
		// Through Docker's resolver, as the peers and chaincode resolve.
		expectName(t, h, probes[h], name, "", newTask.addr)
	}
	t.Logf("%s resolves to %s from every remaining host, %s after the cut", name, newTask.addr, time.Since(cut).Round(time.Second))

	checkPeers(t, moved, 2*time.Minute)
	t.Logf("the moved peer's chaincode registered and every peer reached it at its new address, %s after the cut (%s in all)",
		time.Since(cut).Round(time.Second), time.Since(start).Round(time.Second))
}

// createPeers starts the peers as Fabric's are deployed on swarm: named
// vp<slot> by templates, dnsrr, weft's name server, the host's Docker API
// mounted for chaincode, the status port published on the host.
func createPeers(t *testing.T, l *lab.Lab) {
	t.Helper()
	var bootstrap []string
	for i := 1; i <= fabricPeers; i++ {
		bootstrap = append(bootstrap, fmt.Sprintf("vp%d:7051", i))
	}
	// Every host's engine socket is <run root>/h<i>/docker.sock, and h<i>
	// is its swarm node's hostname.
	socket := filepath.Join(filepath.Dir(filepath.Dir(l.Manager().Socket)), "{{.Node.Hostname}}", "docker.sock")
	l.Manager().MustDocker(t, "service", "create", "--detach", "--no-resolve-image", "--name", fabricService,
		"--network", fabricNetwork, "--replicas", strconv.Itoa(fabricPeers), "--endpoint-mode", "dnsrr",
		"--hostname", "vp{{.Task.Slot}}", "--dns", fabricGateway,
		"--publish", "mode=host,target=9000",
		"--mount", "type=bind,source="+socket+",target=/var/run/docker.sock",
		"--restart-delay", "1s",
		"--env", "CORE_PEER_ID=vp{{.Task.Slot}}",
		"--env", "CORE_PEER_ADDRESS=vp{{.Task.Slot}}:7051",
		"--env", "CORE_PEER_GOSSIP_BOOTSTRAP="+strings.Join(bootstrap, " "),
		"--env", "CORE_VM_ENDPOINT=unix:///var/run/docker.sock",
		"--env", "CORE_VM_DOCKER_HOSTCONFIG_NETWORKMODE="+fabricNetwork,
		"--env", "CORE_VM_DOCKER_HOSTCONFIG_DNS="+fabricGateway,
		"--env", "FABRICSIM_IMAGE="+fabricImage,
		fabricImage, "peer")
	t.Cleanup(func() { _, _ = l.Manager().Docker(context.Background(), "service", "rm", fabricService) })
}

// peerTask is one running peer as the swarm manager sees it.
type peerTask struct {
	slot int
	host *lab.Host
	addr string // on the weft network
	port int    // the status port published on the host
}

func (p peerTask) String() string {
	return fmt.Sprintf("vp%d@%s(%s, :%d)", p.slot, p.host.Name, p.addr, p.port)
}

// swarmTask is the part of a task's "docker inspect" read here.
type swarmTask struct {
	Slot         int
	NodeID       string
	DesiredState string
	Status       struct {
		State      string
		PortStatus struct {
			Ports []struct {
				TargetPort    int
				PublishedPort int
			}
		}
	}
	NetworksAttachments []struct {
		Network   struct{ Spec struct{ Name string } }
		Addresses []string
	}
}

// nodeHosts maps swarm node IDs to the lab's hosts.
func nodeHosts(t *testing.T, l *lab.Lab) map[string]*lab.Host {
	t.Helper()
	nodes := map[string]*lab.Host{}
	for _, h := range l.Hosts {
		nodes[h.MustDocker(t, "info", "-f", "{{.Swarm.NodeID}}")] = h
	}
	return nodes
}

// peerTasks lists, by slot, the peers the manager knows as running and
// meant to run. A host cut off may still run its old task, unseen here.
func peerTasks(ctx context.Context, l *lab.Lab, nodes map[string]*lab.Host) (map[int]peerTask, error) {
	ids, err := l.Manager().Docker(ctx, "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", fabricService)
	if err != nil {
		return nil, err
	}
	got := map[int]peerTask{}
	if strings.TrimSpace(ids) == "" {
		return got, nil
	}
	out, err := l.Manager().Docker(ctx, append([]string{"inspect", "--type", "task"}, strings.Fields(ids)...)...)
	if err != nil {
		return nil, err
	}
	var tasks []swarmTask
	if err := json.Unmarshal([]byte(out), &tasks); err != nil {
		return nil, fmt.Errorf("parse tasks: %w", err)
	}
	for _, st := range tasks {
		if st.Status.State != "running" || st.DesiredState != "running" {
			continue
		}
		pt := peerTask{slot: st.Slot, host: nodes[st.NodeID]}
		if pt.host == nil {
			return nil, fmt.Errorf("vp%d runs on unknown node %s", st.Slot, st.NodeID)
		}
		for _, na := range st.NetworksAttachments {
			if na.Network.Spec.Name == fabricNetwork && len(na.Addresses) > 0 {
				pt.addr, _, _ = strings.Cut(na.Addresses[0], "/")
			}
		}
		for _, p := range st.Status.PortStatus.Ports {
			if p.TargetPort == 9000 {
				pt.port = p.PublishedPort
			}
		}
		if pt.addr == "" || pt.port == 0 {
			return nil, fmt.Errorf("vp%d on %s: no address on %s or no published port yet", st.Slot, pt.host.Name, fabricNetwork)
		}
		if prev, ok := got[st.Slot]; ok {
			return nil, fmt.Errorf("two running tasks for slot %d: %v and %v", st.Slot, prev, pt)
		}
		got[st.Slot] = pt
	}
	return got, nil
}

// waitPeerTasks waits until the running peers satisfy ok.
func waitPeerTasks(t *testing.T, l *lab.Lab, nodes map[string]*lab.Host, within time.Duration, ok func(map[int]peerTask) error) map[int]peerTask {
	t.Helper()
	var tasks map[int]peerTask
	err := lab.WaitFor(context.Background(), within, time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if tasks, err = peerTasks(ctx, l, nodes); err != nil {
			return err
		}
		return ok(tasks)
	})
	if err != nil {
		ps, _ := l.Manager().Docker(context.Background(), "service", "ps", "--no-trunc", fabricService)
		t.Fatalf("peers: %v\n%s", err, ps)
	}
	return tasks
}

// peerStatus is the part of a fabricsim peer's status read here.
type peerStatus struct {
	ID        string
	Chaincode struct {
		Name    string
		Started bool
		Error   string
	}
	Registered []struct{ Chaincode, Remote string }
	Peers      map[string]struct {
		ID, Remote, Error string
		OK                bool
	}
}

// fabricClient is a client in the root namespace, outside every lab host: it
// reaches the hosts' underlay addresses through the lab's bridge.
var fabricClient = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// checkPeers waits until every peer's status, read from outside on its
// host's underlay address, shows its own chaincode registered from the
// chaincode container on its host, and every other peer reached by name at
// that peer's current address.
func checkPeers(t *testing.T, tasks map[int]peerTask, within time.Duration) {
	t.Helper()
	for _, slot := range slices.Sorted(maps.Keys(tasks)) {
		pt := tasks[slot]
		err := lab.WaitFor(context.Background(), within, 500*time.Millisecond, func() error {
			return checkPeer(pt, tasks)
		})
		if err != nil {
			t.Fatalf("%v: %v", pt, err)
		}
	}
}

func checkPeer(pt peerTask, tasks map[int]peerTask) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id := fmt.Sprintf("vp%d", pt.slot)
	url := fmt.Sprintf("http://%s/", net.JoinHostPort(pt.host.Addr().String(), strconv.Itoa(pt.port)))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := fabricClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var st peerStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("status from %s: %w", url, err)
	}
	if st.ID != id {
		return lab.Permanent(fmt.Errorf("%s answers as %q, want %s", url, st.ID, id))
	}

	if !st.Chaincode.Started {
		return fmt.Errorf("chaincode %s not started: %s", st.Chaincode.Name, st.Chaincode.Error)
	}
	ccs, err := pt.host.Docker(ctx, "ps", "-q", "--filter", "label="+chaincodeLabel+"="+id)
	if err != nil {
		return err
	}
	if n := len(strings.Fields(ccs)); n != 1 {
		return fmt.Errorf("%d running chaincode containers of %s on %s, want 1", n, id, pt.host.Name)
	}
	// The peer made it as Fabric does: on the weft network, with weft's
	// name server.
	cc, err := pt.host.Docker(ctx, "inspect", "-f",
		fmt.Sprintf(`{{.HostConfig.NetworkMode}} {{json .HostConfig.Dns}} {{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, fabricNetwork),
		strings.TrimSpace(ccs))
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%s [%q] ", fabricNetwork, fabricGateway)
	ccAddr, ok := strings.CutPrefix(cc, want)
	if !ok || ccAddr == "" {
		return lab.Permanent(fmt.Errorf("chaincode container of %s: network mode, DNS and address %q, want %q and an address", id, cc, want))
	}
	registered := false
	for _, r := range st.Registered {
		ip, _, _ := net.SplitHostPort(r.Remote)
		registered = registered || (r.Chaincode == "simcc:"+id && ip == ccAddr)
	}
	if !registered {
		return fmt.Errorf("chaincode simcc:%s at %s on %s not registered with %s: %+v", id, ccAddr, pt.host.Name, id, st.Registered)
	}

	for _, slot := range slices.Sorted(maps.Keys(tasks)) {
		if slot == pt.slot {
			continue
		}
		other := tasks[slot]
		ep := fmt.Sprintf("vp%d:7051", slot)
		c, ok := st.Peers[ep]
		if !ok {
			return fmt.Errorf("%s has not tried %s yet", id, ep)
		}
		ip, _, _ := net.SplitHostPort(c.Remote)
		if !c.OK || c.ID != fmt.Sprintf("vp%d", slot) || ip != other.addr {
			return fmt.Errorf("%s's last hello to %s: ok=%v id=%q remote=%q err=%q; want vp%d at %s",
				id, ep, c.OK, c.ID, c.Remote, c.Error, slot, other.addr)
		}
	}
	return nil
}

// removeChaincodes waits for the peers' containers to go (the service is
// removed first), then removes the chaincode containers the peers started,
// on every host: swarm does not know them.
func removeChaincodes(t *testing.T, l *lab.Lab) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	err := lab.WaitFor(ctx, 2*time.Minute, time.Second, func() error {
		for _, h := range l.Hosts {
			ids, err := h.Docker(ctx, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+fabricService)
			if err != nil {
				return err
			}
			if ids != "" {
				return fmt.Errorf("%s still holds peer containers %s", h.Name, strings.Fields(ids))
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("peers left behind: %v", err)
	}
	removed := 0
	for _, h := range l.Hosts {
		for _, filter := range []string{"label=" + chaincodeLabel, "label=com.docker.swarm.service.name=" + fabricService} {
			ids, err := h.Docker(ctx, "ps", "-aq", "--filter", filter)
			if err != nil {
				t.Errorf("%s: %v", h.Name, err)
				continue
			}
			if ids == "" {
				continue
			}
			if _, err := h.Docker(ctx, append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
				t.Errorf("%s: %v", h.Name, err)
			}
			removed += len(strings.Fields(ids))
		}
		if left, err := h.Docker(ctx, "ps", "-aq", "--filter", "label="+chaincodeLabel); err != nil || left != "" {
			t.Errorf("%s: chaincode containers left: %q (%v)", h.Name, left, err)
		}
	}
	t.Logf("removed %d chaincode containers", removed)
}
