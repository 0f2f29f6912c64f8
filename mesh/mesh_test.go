package mesh

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/weftnet/weft/internal/statefile"
)

const converge = 15 * time.Second

func TestConvergePutDelete(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(4, nil)

	var want []string
	for i, m := range ms {
		for k := range 5 {
			key := fmt.Sprintf("ep-%d-%d", i, k)
			m.Put("endpoint", key, []byte("v1"))
			want = append(want, fmt.Sprintf("%s=v1@n%d", key, i))
		}
	}
	waitView(t, converge, ms, "endpoint", want)

	// Delete one entry per owner, update another.
	want = want[:0]
	for i, m := range ms {
		m.Delete("endpoint", fmt.Sprintf("ep-%d-0", i))
		m.Put("endpoint", fmt.Sprintf("ep-%d-1", i), []byte("v2"))
		want = append(want, fmt.Sprintf("ep-%d-1=v2@n%d", i, i))
		for k := 2; k < 5; k++ {
			want = append(want, fmt.Sprintf("ep-%d-%d=v1@n%d", i, k, i))
		}
	}
	waitView(t, converge, ms, "endpoint", want)
	for _, m := range ms {
		if _, ok := m.Get("endpoint", "ep-0-0"); ok {
			t.Errorf("%s: Get returns a deleted entry", m.LocalNode())
		}
		e, ok := m.Get("endpoint", "ep-1-1")
		if !ok || string(e.Value) != "v2" || e.Owner != "n1" {
			t.Errorf("%s: Get(ep-1-1) = %+v, %v", m.LocalNode(), e, ok)
		}
	}
	// Tables are independent.
	if got := ms[0].Entries("network"); len(got) != 0 {
		t.Errorf("table network has %d entries", len(got))
	}
}

func TestEntriesReturnsCopies(t *testing.T) {
	l := newLab(t)
	m := l.start("solo", nil)
	v := []byte("abc")
	m.Put("t", "k", v)
	v[0] = 'X' // the caller's slice is not kept
	es := m.Entries("t")
	es[0].Value[0] = 'Y' // nor is the returned one shared
	e, _ := m.Get("t", "k")
	if string(e.Value) != "abc" {
		t.Fatalf("value = %q, want abc", e.Value)
	}
	// Putting the same value again writes nothing.
	c := e.Clock
	m.Put("t", "k", []byte("abc"))
	if e, _ := m.Get("t", "k"); e.Clock != c {
		t.Fatalf("re-put of same value bumped the clock %d -> %d", c, e.Clock)
	}
}

func TestChangesNotifies(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(2, nil)
	drain := func(m *Mesh) {
		for {
			select {
			case <-m.Changes():
			default:
				return
			}
		}
	}
	drain(ms[1])
	ms[0].Put("t", "k", []byte("v"))
	select {
	case <-ms[1].Changes():
	case <-time.After(converge):
		t.Fatal("no change notification on the remote node")
	}
	waitView(t, converge, ms[1:], "t", []string{"k=v@n0"})
}

func TestLeaveWithdrawsAndRestartRestores(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(3, nil)
	ms[2].Put("endpoint", "a", []byte("1"))
	ms[2].Put("endpoint", "b", []byte("2"))
	waitView(t, converge, ms, "endpoint", []string{"a=1@n2", "b=2@n2"})

	if err := ms[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	ms[2].Close()
	waitView(t, converge, ms[:2], "endpoint", nil)
	for _, m := range ms[:2] {
		if s := memberState(m, "n2"); s != StateLeft {
			t.Errorf("%s sees n2 %q, want left", m.LocalNode(), s)
		}
	}

	// The host comes back (empty memory, same name and address) and puts
	// its entries again.
	n2 := l.start("n2", nil, "n0")
	n2.Put("endpoint", "a", []byte("1"))
	n2.Put("endpoint", "b", []byte("2"))
	ms[2] = n2
	waitView(t, converge, ms, "endpoint", []string{"a=1@n2", "b=2@n2"})
}

func TestKilledMemberWithdrawn(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(4, nil)
	ms[3].Put("endpoint", "x", []byte("1"))
	ms[0].Put("endpoint", "y", []byte("2"))
	waitView(t, converge, ms, "endpoint", []string{"x=1@n3", "y=2@n0"})

	// Shutdown without Leave: the others must find it dead.
	start := time.Now()
	ms[3].Close()
	waitView(t, converge, ms[:3], "endpoint", []string{"y=2@n0"})
	t.Logf("dead member withdrawn everywhere after %v", time.Since(start).Round(10*time.Millisecond))
	for _, m := range ms[:3] {
		if s := memberState(m, "n3"); s != StateDead {
			t.Errorf("%s sees n3 %q, want dead", m.LocalNode(), s)
		}
	}
}

func TestFailureDetectionWithinThreeSeconds(t *testing.T) {
	// Default (production) timing, not the lab's.
	l := newLab(t)
	ms := l.cluster(5, func(c *Config) {
		d := DefaultConfig()
		c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult = d.ProbeInterval, d.ProbeTimeout, d.SuspicionMult
	})
	ms[4].Put("endpoint", "x", []byte("1"))
	waitView(t, converge, ms, "endpoint", []string{"x=1@n4"})
	start := time.Now()
	ms[4].Close()
	waitView(t, converge, ms[:4], "endpoint", nil)
	took := time.Since(start)
	t.Logf("dead member withdrawn on all 4 others after %v", took.Round(10*time.Millisecond))
	// ~3 s is the target; allow for a loaded machine and -race.
	if took > 6*time.Second {
		t.Errorf("withdrawal took %v, want about 3 s", took)
	}
}

func TestPartitionHeals(t *testing.T) {
	l := newLab(t)
	// Every node knows n0 and n3 (two "managers", one on each side).
	var ms []*Mesh
	for i := range 5 {
		ms = append(ms, l.start(fmt.Sprintf("n%d", i), nil, "n0", "n3"))
	}
	waitAlive(t, converge, ms, 5)
	for i, m := range ms {
		m.Put("endpoint", fmt.Sprintf("before-%d", i), []byte("1"))
	}
	var want []string
	for i := range ms {
		want = append(want, fmt.Sprintf("before-%d=1@n%d", i, i))
	}
	waitView(t, converge, ms, "endpoint", want)

	a, b := ms[:3], ms[3:]
	l.net.Partition(
		[]string{l.addr("n0"), l.addr("n1"), l.addr("n2")},
		[]string{l.addr("n3"), l.addr("n4")},
	)
	// Each side withdraws the other's entries.
	waitView(t, converge, a, "endpoint", want[:3])
	waitView(t, converge, b, "endpoint", want[3:])

	// Both sides change while apart.
	ms[1].Put("endpoint", "during-a", []byte("A"))
	ms[4].Put("endpoint", "during-b", []byte("B"))
	ms[0].Delete("endpoint", "before-0")
	ms[3].Put("endpoint", "before-3", []byte("3"))
	waitView(t, converge, a, "endpoint", []string{"before-1=1@n1", "before-2=1@n2", "during-a=A@n1"})

	l.net.Heal()
	waitAlive(t, converge, ms, 5)
	waitView(t, converge, ms, "endpoint", []string{
		"before-1=1@n1", "before-2=1@n2", "before-3=3@n3", "before-4=1@n4",
		"during-a=A@n1", "during-b=B@n4",
	})
}

func TestOwnerRepairsStaleEntriesAfterRestart(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(3, nil)
	ms[2].Put("endpoint", "kept", []byte("old"))
	ms[2].Put("endpoint", "gone", []byte("old"))
	ms[2].Put("endpoint", "same", []byte("same"))
	waitView(t, converge, ms, "endpoint", []string{"gone=old@n2", "kept=old@n2", "same=same@n2"})

	// Watch n0: "same" must never blink while n2 restarts, thanks to the
	// repair grace.
	var blinked atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if _, ok := ms[0].Get("endpoint", "same"); !ok {
				blinked.Store(true)
			}
		}
	}()

	// Restart n2 at once with an empty memory and no saved clock: the
	// others still hold its old entries.
	ms[2].Close()
	n2 := l.start("n2", func(c *Config) { c.RepairGrace = time.Second }, "n0")
	ms[2] = n2
	n2.Put("endpoint", "kept", []byte("new"))
	n2.Put("endpoint", "same", []byte("same"))

	waitView(t, converge, ms, "endpoint", []string{"kept=new@n2", "same=same@n2"})
	close(stop)
	<-done
	if blinked.Load() {
		t.Error(`"same" disappeared from n0 while its owner restarted`)
	}
	// The repaired versions carry clocks above the stale ones.
	e, _ := ms[0].Get("endpoint", "kept")
	if e.Clock < 3 {
		t.Errorf("repaired entry has clock %d, want above the stale copies'", e.Clock)
	}
}

func TestTombstonesReaped(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(3, func(c *Config) { c.TombstoneTTL = 500 * time.Millisecond })
	ms[0].Put("t", "k", []byte("v"))
	waitView(t, converge, ms, "t", []string{"k=v@n0"})
	ms[0].Delete("t", "k")
	waitView(t, converge, ms, "t", nil)
	waitFor(t, converge, "tombstones reaped", func() error {
		for _, m := range ms {
			if held(m, "t", "k") {
				return fmt.Errorf("%s still holds the tombstone", m.LocalNode())
			}
		}
		return nil
	})
	// Reaping must not let the delete be undone: nothing comes back during
	// a few more anti-entropy rounds (lab SyncInterval is 200 ms).
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if held(m, "t", "k") {
				t.Fatalf("%s holds the key again after reaping", m.LocalNode())
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLargeEntryTravelsOverTCP(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(4, func(c *Config) { c.PushPullInterval = time.Minute })
	big := bytes.Repeat([]byte("x"), 8000)
	ms[1].Put("t", "big", big)
	waitFor(t, converge, "large entry everywhere", func() error {
		for _, m := range ms {
			e, ok := m.Get("t", "big")
			if !ok || !bytes.Equal(e.Value, big) {
				return fmt.Errorf("%s lacks it", m.LocalNode())
			}
		}
		return nil
	})
}

func TestMembersVersionAndProtocol(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(2, func(c *Config) { c.Version = "v-" + c.NodeName })
	got := ms[0].Members()
	if len(got) != 2 {
		t.Fatalf("members = %+v", got)
	}
	for _, mb := range got {
		want := Member{Name: mb.Name, Addr: l.addr(mb.Name), State: StateAlive, Version: "v-" + mb.Name, Protocol: Protocol, DownGrace: DefaultConfig().DownGrace}
		if age := time.Since(mb.Started); age < 0 || age > time.Minute {
			t.Errorf("member %s announced it started at %s", mb.Name, mb.Started)
		}
		mb.Started = time.Time{}
		if mb != want {
			t.Errorf("member %+v, want %+v", mb, want)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without NodeName succeeded")
	}
	if _, err := New(Config{NodeName: "x", Version: strings.Repeat("v", maxVersionLen+1)}); err == nil {
		t.Error("New with an oversized Version succeeded")
	}
}

// TestOlderMemberMeta: a member whose node metadata is empty is a build
// from before protocols were announced: protocol 1, no version. Metadata
// a later protocol extends is read for the fields this build knows. A
// member that announces no down grace (a build from before the down
// state) gets this member's own.
func TestOlderMemberMeta(t *testing.T) {
	old := func(protocol int, version string) []byte {
		return appendString(binary.AppendUvarint(nil, uint64(protocol)), version)
	}
	for _, tc := range []struct {
		meta []byte
		want nodeMeta
	}{
		{nil, nodeMeta{Protocol: 1}},
		{[]byte{}, nodeMeta{Protocol: 1}},
		{[]byte("garbage that is not ours"), nodeMeta{Protocol: 1}},
		{old(1, "1.2.3"), nodeMeta{Protocol: 1, Version: "1.2.3"}},
		{encodeMeta(nodeMeta{Protocol: 1, Version: "1.2.3", DownGrace: 90 * time.Second}), nodeMeta{Protocol: 1, Version: "1.2.3", DownGrace: 90 * time.Second, HasGrace: true}},
		{encodeMeta(nodeMeta{Protocol: 1, Version: "1.2.3"}), nodeMeta{Protocol: 1, Version: "1.2.3", HasGrace: true}},
		{encodeMeta(nodeMeta{Protocol: 1, DownGrace: 1000 * 24 * time.Hour}), nodeMeta{Protocol: 1, DownGrace: maxDownGrace, HasGrace: true}},
		{append(old(7, "9.0"), 0x80), nodeMeta{Protocol: 7, Version: "9.0"}},
		{append(encodeMeta(nodeMeta{Protocol: 7, Version: "9.0", DownGrace: time.Second}), 0xde, 0xad), nodeMeta{Protocol: 7, Version: "9.0", DownGrace: time.Second, HasGrace: true}},
		{encodeMeta(nodeMeta{Protocol: 2, DownGrace: time.Minute, Started: 1796000000123}), nodeMeta{Protocol: 2, DownGrace: time.Minute, HasGrace: true, Started: 1796000000123}},
		{encodeMeta(nodeMeta{Protocol: 2, DownGrace: time.Minute, Started: maxStarted + 1}), nodeMeta{Protocol: 2, DownGrace: time.Minute, HasGrace: true}},
	} {
		if got := decodeMeta(tc.meta); got != tc.want {
			t.Errorf("decodeMeta(%q) = %+v; want %+v", tc.meta, got, tc.want)
		}
	}
	if n := len(encodeMeta(nodeMeta{Protocol: Protocol, Version: strings.Repeat("v", maxVersionLen), DownGrace: maxDownGrace})); n > memberlist.MetaMaxSize {
		t.Errorf("metadata of %d bytes, over memberlist's %d", n, memberlist.MetaMaxSize)
	}

	l := newLab(t)
	m := l.start("n0", func(c *Config) { c.DownGrace = 42 * time.Second })
	d := &delegate{m}
	d.NotifyJoin(&memberlist.Node{Name: "old", Addr: net.ParseIP("10.99.9.9"), Port: DefaultPort})
	d.NotifyJoin(&memberlist.Node{Name: "new", Addr: net.ParseIP("10.99.9.8"), Port: DefaultPort,
		Meta: encodeMeta(nodeMeta{Protocol: 1, Version: "x", DownGrace: time.Minute})})
	for _, mb := range m.Members() {
		switch mb.Name {
		case "old":
			if mb.Protocol != 1 || mb.Version != "" || mb.DownGrace != 42*time.Second {
				t.Errorf("older member shown as %+v", mb)
			}
		case "new":
			if mb.DownGrace != time.Minute {
				t.Errorf("member announcing a grace shown as %+v", mb)
			}
		}
	}
}

func TestPeersFileAndClockPersisted(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	ms := l.cluster(2, nil)
	n2 := l.start("n2", func(c *Config) { c.StateDir = dir }, "n0")
	waitAlive(t, converge, append(ms, n2), 3)
	n2.Put("t", "k", []byte("v"))
	before, _ := n2.Get("t", "k")
	waitFor(t, converge, "peers.json written", func() error {
		var pd peersDoc
		if _, err := statefile.Load(filepath.Join(dir, peersFile), &pd, stateVersion); err != nil {
			return err
		}
		if len(pd.Peers) != 2 {
			return fmt.Errorf("peers.json has %v", pd.Peers)
		}
		return nil
	})
	n2.Close()

	// Restart without configured peers: the saved ones bring it back, and
	// its clock continues above what it wrote before.
	n2 = l.start("n2", func(c *Config) { c.StateDir = dir })
	waitAlive(t, converge, append(ms, n2), 3)
	n2.Put("t", "k2", []byte("v"))
	after, _ := n2.Get("t", "k2")
	if after.Clock <= before.Clock {
		t.Errorf("clock after restart %d, want above %d", after.Clock, before.Clock)
	}
}

func TestCorruptStateFilesIgnored(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	for _, f := range []string{peersFile, clockFile} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recordLog{}
	l.start("n0", nil)
	n1 := l.start("n1", func(c *Config) {
		c.StateDir = dir
		c.Logger = slog.New(rec)
	}, "n0")
	waitAlive(t, converge, []*Mesh{n1}, 2)
	n1.Put("t", "k", []byte("v"))
	if e, ok := n1.Get("t", "k"); !ok || e.Clock != 1 {
		t.Errorf("after a corrupt clock file, first put = %+v, %v", e, ok)
	}
	for _, f := range []string{peersFile, clockFile} {
		if n := rec.count(slog.LevelWarn, f); n != 1 {
			t.Errorf("%s: %d warnings, want 1", f, n)
		}
		if b, err := os.ReadFile(filepath.Join(dir, f+statefile.CorruptSuffix)); err != nil || string(b) != "{not json" {
			t.Errorf("%s not set aside: %q, %v", f, b, err)
		}
	}
}

// TestStateFilesFormatZero: peers.json and clock.json as written before
// they had a format version are read as they are.
func TestStateFilesFormatZero(t *testing.T) {
	dir := t.TempDir()
	for f, body := range map[string]string{
		peersFile: `{"peers":["10.99.0.7:7950","10.99.0.8"]}`,
		clockFile: `{"clock":5000}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(Config{NodeName: "n0", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m.Put("t", "k", []byte("v"))
	if e, _ := m.Get("t", "k"); e.Clock != 5001 {
		t.Errorf("first put after a saved clock of 5000 has clock %d", e.Clock)
	}
	m.mu.Lock()
	boot := slices.Sorted(maps.Keys(m.boot))
	m.mu.Unlock()
	if want := []string{"10.99.0.7:7950", "10.99.0.8:7950"}; !slices.Equal(boot, want) {
		t.Errorf("saved peers %v, want %v", boot, want)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	var cd clockDoc
	if v, err := statefile.Load(filepath.Join(dir, clockFile), &cd, stateVersion); err != nil || v != stateVersion || cd.Clock <= 5001 {
		t.Errorf("clock saved as version %d, %+v, %v", v, cd, err)
	}
}

func TestMissingStateDirFilesAreFine(t *testing.T) {
	l := newLab(t)
	dir := filepath.Join(t.TempDir(), "sub", "state")
	m := l.start("n0", func(c *Config) { c.StateDir = dir })
	m.Put("t", "k", []byte("v"))
	m.Close()
	if _, err := os.Stat(filepath.Join(dir, clockFile)); err != nil {
		t.Errorf("clock not saved: %v", err)
	}
}

func TestLoopbackUDPAndTCP(t *testing.T) {
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	var ms []*Mesh
	t.Cleanup(func() {
		for _, m := range ms {
			m.Close()
		}
	})
	var first string
	for i, ip := range ips {
		port := freePort(t, ip)
		c := DefaultConfig()
		c.NodeName = fmt.Sprintf("lo%d", i)
		c.Port = port
		start := ip // the others bind and advertise the address given to Start
		if i == 0 {
			c.BindAddr, c.AdvertiseAddr, start = ip, ip, ""
		}
		c.Logger = testLogger()
		c.RejoinInterval = 200 * time.Millisecond
		if first != "" {
			c.Peers = []string{first}
		}
		m, err := New(c)
		if err == nil {
			err = m.Start(start, nil)
		}
		if err != nil {
			t.Fatalf("start on %s:%d: %v", ip, port, err)
		}
		ms = append(ms, m)
		if first == "" {
			first = net.JoinHostPort(ip, strconv.Itoa(port))
		}
	}
	waitAlive(t, converge, ms, 3)
	ms[2].Put("endpoint", "a", []byte("over-udp"))
	ms[0].Put("endpoint", "b", bytes.Repeat([]byte("z"), 5000)) // too big for a packet
	waitFor(t, converge, "loopback convergence", func() error {
		for _, m := range ms {
			if len(m.Entries("endpoint")) != 2 {
				return fmt.Errorf("%s: %s", m.LocalNode(), view(m, "endpoint"))
			}
		}
		return nil
	})
	ms[2].Delete("endpoint", "a")
	waitFor(t, converge, "loopback delete", func() error {
		for _, m := range ms {
			if _, ok := m.Get("endpoint", "a"); ok {
				return fmt.Errorf("%s still has a", m.LocalNode())
			}
		}
		return nil
	})
}

// freePort finds a port free for TCP and UDP on ip, or skips the test.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	for range 20 {
		tl, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ip, err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		tl.Close()
		if err == nil {
			ul.Close()
			return port
		}
	}
	t.Skip("no free port")
	return 0
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	l := newLab(t)
	ms := l.cluster(3, nil)
	ms[0].Put("t", "k", []byte("v"))
	waitView(t, converge, ms, "t", []string{"k=v@n0"})
	for _, m := range ms {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		m.Close() // twice is fine
	}
	waitFor(t, 10*time.Second, "goroutines gone", func() error {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "weft/mesh.(*Mesh)") || strings.Contains(g, "memberlist.(*Memberlist)") {
				return fmt.Errorf("still running:\n%s", g)
			}
		}
		return nil
	})
	if _, err := ms[0].Join([]string{"10.0.0.1"}); err == nil {
		t.Error("Join after Close succeeded")
	}
	if err := ms[0].Leave(time.Second); err == nil {
		t.Error("Leave after Close succeeded")
	}
}

func TestGarbageMessagesDropped(t *testing.T) {
	l := newLab(t)
	rec := &recordLog{}
	m := l.start("n0", func(c *Config) { c.Logger = slog.New(rec) })
	d := &delegate{m}
	good := encodeEntries(msgBroadcast, []wireEntry{{Entry: Entry{Table: "t", Key: "k", Owner: "x", Clock: 5, Value: []byte("v")}}})
	inputs := [][]byte{
		nil, {0}, {msgMagic}, {msgMagic, msgVersion}, {msgMagic, 99, msgSync},
		{msgMagic, msgVersion, 'z'},
		{msgMagic, msgVersion, msgSync, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{msgMagic, msgVersion, msgDigest, 0xff, 0xff, 0xff, 0x7f},
		good[:len(good)-1],
		append(append([]byte{}, good...), 0),
	}
	for _, in := range inputs {
		d.NotifyMsg(in)
		d.MergeRemoteState(in, false)
		d.MergeRemoteState(in, true)
	}
	// Many bad messages, few log lines.
	if n := rec.count(slog.LevelWarn, "bad"); n == 0 || n > 2 {
		t.Errorf("%d warnings for %d bad messages, want 1 or 2", n, 3*len(inputs))
	}
	if n := len(m.Entries("t")); n != 0 {
		t.Errorf("garbage produced %d entries", n)
	}
}

// TestUnknownTypeSkipped: a message of a type this build does not know (a
// newer protocol's) is skipped without a word, and does not count as a
// merged state.
func TestUnknownTypeSkipped(t *testing.T) {
	rec := &recordLog{}
	m, err := New(Config{NodeName: "n0", Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.startedAt = time.Now() // Synced would otherwise be false anyway
	m.cfg.RepairGrace = time.Hour
	d := &delegate{m}
	for _, in := range [][]byte{{msgMagic, msgVersion, 'z'}, {msgMagic, msgVersion, 'Z', 1, 2, 3}} {
		d.NotifyMsg(in)
		d.MergeRemoteState(in, true)
	}
	if n := rec.count(slog.LevelDebug, ""); n != 0 {
		t.Errorf("%d log lines for messages of unknown types", n)
	}
	if m.Synced() {
		t.Error("a join's state of an unknown type counted as merged")
	}
}

func TestGetBroadcastsFitsLimit(t *testing.T) {
	l := newLab(t)
	m := l.start("n0", nil)
	m.numAlive.Store(10)
	for i := range 500 {
		m.Put("endpoint", fmt.Sprintf("key-%04d", i), bytes.Repeat([]byte("v"), i%200))
	}
	d := &delegate{m}
	seen := map[string]bool{}
	for range 1000 {
		msgs := d.GetBroadcasts(3, 1300)
		if len(msgs) == 0 {
			break
		}
		for _, b := range msgs {
			if len(b)+3 > 1300 {
				t.Fatalf("message of %d bytes over the limit", len(b))
			}
			msg, err := decodeMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range msg.Entries {
				seen[e.Key] = true
			}
		}
	}
	if len(seen) != 500 {
		t.Errorf("%d distinct entries broadcast, want 500", len(seen))
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":      "10.0.0.1:7950",
		"10.0.0.1:99":   "10.0.0.1:99",
		"fd00::1":       "[fd00::1]:7950",
		"[fd00::1]:99":  "[fd00::1]:99",
		"manager":       "manager:7950",
		"manager:12345": "manager:12345",
	} {
		if got, ok := normalizeAddr(in, DefaultPort); !ok || got != want {
			t.Errorf("normalizeAddr(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", ":99", "host:"} {
		if got, ok := normalizeAddr(in, DefaultPort); ok {
			t.Errorf("normalizeAddr(%q) = %q, want refusal", in, got)
		}
	}
}

// TestSyncMessages: what a peer lacks goes out in chunks of blocks; the
// answering digest rides in the last message.
func TestSyncMessages(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 64<<10)
	var delta []block
	want := 0
	for o := range 3 {
		bl := block{Digest: ownerDigest{Owner: fmt.Sprintf("o%d", o), Count: 40, MaxClock: 40, Hash: uint64(o)}}
		for i := range 40 {
			bl.Entries = append(bl.Entries, wireEntry{Entry: Entry{Table: "t", Key: fmt.Sprintf("o%d-%d", o, i), Owner: bl.Digest.Owner, Clock: uint64(i + 1), Value: big}})
		}
		want += len(bl.Entries)
		delta = append(delta, bl)
	}
	dg := &digestMsg{Sender: "me", Answer: true, Owners: []ownerDigest{{Owner: "me", Count: 1, MaxClock: 1, Hash: 9}}}

	msgs := syncMessages(delta, dg)
	if len(msgs) < 2 {
		t.Fatalf("%d messages for %d KiB, want it split", len(msgs), want*64)
	}
	got := 0
	for i, b := range msgs {
		if len(b) > syncChunk+128<<10 {
			t.Errorf("message %d is %d bytes", i, len(b))
		}
		msg, err := decodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		last := i == len(msgs)-1
		if last != (msg.Type == msgAnswer) || (last && !reflect.DeepEqual(msg.Digest, dg)) {
			t.Fatalf("message %d of %d has type %q", i+1, len(msgs), msg.Type)
		}
		for _, bl := range msg.Blocks {
			got += len(bl.Entries)
		}
	}
	if got != want {
		t.Errorf("%d entries sent, want %d", got, want)
	}
	// Without an answer (a push/pull's digest), blocks only.
	for _, b := range syncMessages(delta, nil) {
		if b[2] != msgBlocks {
			t.Fatalf("without an answer, a message of type %q", b[2])
		}
	}
	if msgs := syncMessages(nil, dg); len(msgs) != 1 || msgs[0][2] != msgAnswer {
		t.Errorf("nothing lacking: %d messages, want one answer", len(msgs))
	}
}

// TestBadBlockEndsMessage: blocks are checked one by one as they are
// read; a corrupt block ends the message and is reported, the blocks before
// it stay applied, and a block already held is skipped unread.
func TestBadBlockEndsMessage(t *testing.T) {
	l := newLab(t)
	m := l.start("n0", nil)
	e := func(key string) wireEntry {
		return wireEntry{Entry: Entry{Table: "t", Key: key, Owner: "n1", Clock: 1, Value: []byte("v")}}
	}
	good := block{Digest: ownerDigest{Owner: "n1", Count: 1, MaxClock: 1, Hash: 1}, Entries: []wireEntry{e("first")}}
	bad := block{Digest: ownerDigest{Owner: "n1", Count: 1, MaxClock: 1, Hash: 2}, Entries: []wireEntry{e("second")}}
	msg := encodeBlocks([]block{good, bad})
	// Corrupt the second block's entry flags, inside its body.
	i := bytes.LastIndex(msg, []byte("second")) + len("second") + 4 // owner, clock, flags
	msg[i] = 0x80
	if m.receive(msg, false) {
		t.Fatal("a message with a corrupt block was taken")
	}
	if !held(m, "t", "first") || held(m, "t", "second") {
		t.Fatalf("first block held %v, corrupt block held %v; want true, false", held(m, "t", "first"), held(m, "t", "second"))
	}

	// A block whose digest equals what we hold of its owner is not read:
	// here it claims n1's exact digest but carries a garbage body.
	m.mu.Lock()
	d := m.st.ownerDigest("n1", m.st.owners["n1"])
	m.mu.Unlock()
	skipped := m.Stats().Skipped
	b := appendHeader(nil, msgBlocks)
	b = binary.AppendUvarint(b, 1)
	b = appendOwnerDigest(b, &d)
	b = binary.AppendUvarint(b, 3)
	b = append(b, 1, 0xff, 0xff)
	if !m.receive(b, false) {
		t.Fatal("a block already held was read")
	}
	if got := m.Stats().Skipped - skipped; got != 1 {
		t.Errorf("skipped %d entries, want 1", got)
	}
}
