package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/feed"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/mesh/meshtest"
)

// hosts are catalogs over a real mesh of len(names) members.
func hosts(t *testing.T, names ...string) (*meshtest.Cluster, []*Catalog) {
	t.Helper()
	c := meshtest.New(t, names, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var cats []*Catalog
	for _, m := range c.Members {
		cat := New(Config{Store: m, NamesWait: time.Hour})
		go cat.Run(ctx)
		cats = append(cats, cat)
	}
	return c, cats
}

// view replays a subscription's events onto a map, as a consumer would.
type view struct {
	sub *feed.Sub[Event]
	m   map[string]Record // by key; local records under "local/<id>"
	// seen lists the events replayed: "kind endpoint down=mark".
	seen []string
}

func newView(c *Catalog) *view { return &view{sub: c.Subscribe(), m: map[string]Record{}} }

func (v *view) drain(t *testing.T) {
	t.Helper()
	for _, ev := range v.sub.Take() {
		v.seen = append(v.seen, fmt.Sprintf("%s %s down=%v", ev.Kind, ev.Record.Endpoint, ev.Record.Down))
		k := Key(ev.Record.Host, ev.Record.Endpoint)
		if ev.Local {
			k = "local/" + ev.Record.Endpoint
		}
		switch ev.Kind {
		case Added:
			if _, ok := v.m[k]; ok {
				t.Errorf("added twice: %s", k)
			}
			v.m[k] = ev.Record
		case Updated:
			if old, ok := v.m[k]; !ok || !old.Equal(ev.Old) {
				t.Errorf("update of %s: old %+v, view has %+v", k, ev.Old, old)
			}
			v.m[k] = ev.Record
		case Removed:
			if _, ok := v.m[k]; !ok {
				t.Errorf("removed unknown %s", k)
			}
			delete(v.m, k)
		}
	}
}

// equalsCatalog checks the view against the catalog's own snapshot.
func (v *view) equalsCatalog(t *testing.T, c *Catalog) error {
	t.Helper()
	v.drain(t)
	want := map[string]Record{}
	for _, r := range c.Local() {
		want["local/"+r.Endpoint] = r
	}
	for _, r := range c.Remote() {
		want[Key(r.Host, r.Endpoint)] = r
	}
	if len(want) != len(v.m) {
		return fmt.Errorf("view holds %d records, catalog %d", len(v.m), len(want))
	}
	for k, r := range want {
		if !v.m[k].Equal(r) {
			return fmt.Errorf("%s: view %+v, catalog %+v", k, v.m[k], r)
		}
	}
	return nil
}

func remoteOf(c *Catalog, endpoint string) (Record, bool) {
	for _, r := range c.Remote() {
		if r.Endpoint == endpoint {
			return r, true
		}
	}
	return Record{}, false
}

func TestLocalRecordsWaitForVTEPAndNames(t *testing.T) {
	_, cats := hosts(t, "h1", "h2")
	h1, h2 := cats[0], cats[1]
	h1.SetLocal(Record{Network: "n", VNI: 7, Endpoint: "e1", IP: "10.0.0.2", MAC: "02:77:0a:00:00:02"})
	if got := h1.Local(); len(got) != 1 || got[0].Host != "h1" {
		t.Fatalf("local records %+v", got)
	}
	h1.SetNames("e1", []string{"vp1", "peer.1"})
	h1.SetVTEP("10.99.0.1")
	// Names not ready yet: nothing reaches h2. A put, were it made, would
	// be there by the time h2 sees another record put after it.
	h2.SetLocal(Record{Network: "n", VNI: 7, Endpoint: "marker", IP: "10.0.0.9", MAC: "02:77:0a:00:00:09"})
	h2.SetVTEP("10.99.0.2")
	h2.NamesReady()
	meshtest.WaitFor(t, 5*time.Second, "h2's record on h1", func() error {
		if _, ok := remoteOf(h1, "marker"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if _, ok := remoteOf(h2, "e1"); ok {
		t.Fatal("h1's record was published before its names were ready")
	}
	h1.NamesReady()
	meshtest.WaitFor(t, 5*time.Second, "h1's record on h2", func() error {
		r, ok := remoteOf(h2, "e1")
		if !ok {
			return fmt.Errorf("not yet")
		}
		if r.Host != "h1" || r.VTEP != "10.99.0.1" || !slices.Equal(r.Names, []string{"vp1", "peer.1"}) {
			return fmt.Errorf("record %+v", r)
		}
		return nil
	})
}

func TestEventsFollowTheCatalog(t *testing.T) {
	c, cats := hosts(t, "h1", "h2", "h3")
	for i, cat := range cats {
		cat.SetVTEP(fmt.Sprintf("10.99.0.%d", i+1))
		cat.NamesReady()
	}
	v := newView(cats[0])
	for i, cat := range cats {
		for j := range 3 {
			cat.SetLocal(Record{Network: "n", VNI: 7, Endpoint: fmt.Sprintf("e%d%d", i, j), IP: fmt.Sprintf("10.0.%d.%d", i, j+2), MAC: fmt.Sprintf("02:77:0a:00:%02x:%02x", i, j+2)})
		}
	}
	all := func() error {
		if n := len(cats[0].Remote()); n != 6 {
			return fmt.Errorf("%d remote records, want 6", n)
		}
		return v.equalsCatalog(t, cats[0])
	}
	meshtest.WaitFor(t, 5*time.Second, "every record on h1", all)

	// An update, a removal, and names.
	cats[1].SetLocal(Record{Network: "n", VNI: 7, Endpoint: "e10", IP: "10.0.1.2", MAC: "02:77:0a:00:01:99"})
	cats[2].RemoveLocal("e20")
	cats[1].SetNames("e11", []string{"web"})
	meshtest.WaitFor(t, 5*time.Second, "changes on h1", func() error {
		if err := v.equalsCatalog(t, cats[0]); err != nil {
			return err
		}
		r, ok := remoteOf(cats[0], "e10")
		if !ok || r.MAC != "02:77:0a:00:01:99" {
			return fmt.Errorf("update not seen: %+v", r)
		}
		if _, ok := remoteOf(cats[0], "e20"); ok {
			return fmt.Errorf("removal not seen")
		}
		if r, _ := remoteOf(cats[0], "e11"); !slices.Equal(r.Names, []string{"web"}) {
			return fmt.Errorf("names not seen: %+v", r)
		}
		return nil
	})

	// A host that goes takes its records with it, and they come back
	// with it.
	c.Net.Partition([]string{c.Addr(0), c.Addr(1)}, []string{c.Addr(2)})
	meshtest.WaitFor(t, 10*time.Second, "h3's records gone from h1", func() error {
		for _, r := range cats[0].Remote() {
			if r.Host == "h3" {
				return fmt.Errorf("still holds %s of h3", r.Endpoint)
			}
		}
		return v.equalsCatalog(t, cats[0])
	})
	c.Net.Heal()
	meshtest.WaitFor(t, 15*time.Second, "h3's records back on h1", func() error {
		n := 0
		for _, r := range cats[0].Remote() {
			if r.Host == "h3" {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d records of h3, want 2", n)
		}
		return v.equalsCatalog(t, cats[0])
	})
}

// A host whose weft stops while the host answers keeps its records, each
// marked Down by an Updated event (never Removed); when it is back and
// puts them again they are unmarked; when the host is then lost they go.
func TestDownHostRecordsMarked(t *testing.T) {
	c, cats := hosts(t, "h1", "h2", "h3")
	h3 := cats[2]
	h3.SetVTEP("10.99.0.3")
	h3.NamesReady()
	for j := range 2 {
		h3.SetLocal(Record{Network: "n", VNI: 7, Endpoint: fmt.Sprintf("e%d", j), IP: fmt.Sprintf("10.0.3.%d", j+2), MAC: fmt.Sprintf("02:77:0a:00:03:%02x", j+2)})
	}
	v := newView(cats[0])
	marks := func(want bool) func() error {
		return func() error {
			// The view, not the catalog: once it agrees with the
			// catalog, the events that made it so are in v.seen.
			if err := v.equalsCatalog(t, cats[0]); err != nil {
				return err
			}
			if len(v.m) != 2 {
				return fmt.Errorf("%d records of h3, want 2", len(v.m))
			}
			for _, r := range v.m {
				if r.Down != want {
					return fmt.Errorf("%s: Down %v, want %v", r.Endpoint, r.Down, want)
				}
			}
			return nil
		}
	}
	meshtest.WaitFor(t, 5*time.Second, "h3's records on h1", marks(false))
	v.seen = nil

	if err := c.StopWeft(2); err != nil {
		t.Fatal(err)
	}
	meshtest.WaitFor(t, 10*time.Second, "h3's records marked down on h1", func() error {
		return marks(true)()
	})
	if want := []string{"updated e0 down=true", "updated e1 down=true"}; !slices.Equal(v.seen, want) {
		t.Fatalf("events %q, want %q", v.seen, want)
	}
	// A catalog made meanwhile (a restart on h1) starts with them marked.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fresh := New(Config{Store: c.Members[0], NamesWait: time.Hour})
	go fresh.Run(ctx)
	meshtest.WaitFor(t, 5*time.Second, "h3's records marked in a new catalog", func() error {
		rs := fresh.Remote()
		if len(rs) != 2 || !rs[0].Down || !rs[1].Down {
			return fmt.Errorf("records %+v", rs)
		}
		return nil
	})
	// The mark is not on the wire.
	if b, err := encode(cats[0].Remote()[0]); err != nil || strings.Contains(strings.ToLower(string(b)), "down") {
		t.Fatalf("a marked record encodes as %s (%v)", b, err)
	}

	// h3's plugin is back (a new mesh and catalog, same name and address)
	// and puts its records again.
	v.seen = nil
	tr, err := c.Net.NewTransport(c.Addr(2))
	if err != nil {
		t.Fatal(err)
	}
	cfg := meshtest.Config("h3")
	cfg.Transport = tr
	m3, err := mesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m3.Close() })
	if err := m3.Start(c.Addr(2), []string{c.Addr(0)}); err != nil {
		t.Fatal(err)
	}
	back := New(Config{Store: m3, NamesWait: time.Hour})
	go back.Run(ctx)
	back.SetVTEP("10.99.0.3")
	for j := range 2 {
		back.SetLocal(Record{Network: "n", VNI: 7, Endpoint: fmt.Sprintf("e%d", j), IP: fmt.Sprintf("10.0.3.%d", j+2), MAC: fmt.Sprintf("02:77:0a:00:03:%02x", j+2)})
	}
	back.NamesReady()
	meshtest.WaitFor(t, 15*time.Second, "h3's records unmarked on h1", func() error {
		return marks(false)()
	})
	if want := []string{"updated e0 down=false", "updated e1 down=false"}; !slices.Equal(v.seen, want) {
		t.Fatalf("events %q, want %q", v.seen, want)
	}

	// Down again, then the host lost: the records go, as they last were.
	v.seen = nil
	c.Net.KeepHost(c.Addr(2), true)
	m3.Close()
	meshtest.WaitFor(t, 10*time.Second, "h3's records marked down again", func() error {
		return marks(true)()
	})
	c.Net.KeepHost(c.Addr(2), false)
	meshtest.WaitFor(t, 10*time.Second, "h3's records gone from h1", func() error {
		if n := len(cats[0].Remote()); n != 0 {
			return fmt.Errorf("%d records of h3 left", n)
		}
		return v.equalsCatalog(t, cats[0])
	})
	slices.Sort(v.seen)
	if want := []string{"removed e0 down=true", "removed e1 down=true", "updated e0 down=true", "updated e1 down=true"}; !slices.Equal(v.seen, want) {
		t.Fatalf("events %q, want %q", v.seen, want)
	}
}

func TestMalformedRecordsIgnored(t *testing.T) {
	c, cats := hosts(t, "h1", "h2")
	v := newView(cats[0])
	// h2 writes straight into the mesh: garbage, a record without an
	// endpoint, one with a bad address, and a good one.
	m2 := c.Members[1]
	m2.Put(Table, Key("h2", "x"), []byte("{not json"))
	m2.Put(Table, Key("h2", "y"), []byte(`{"ip":"10.0.0.3"}`))
	m2.Put(Table, Key("h2", "z"), []byte(`{"ep":"z","ip":"nonsense","mac":"02:77:0a:00:00:04","vtep":"10.99.0.2"}`))
	m2.Put(Table, Key("h2", "ok"), []byte(`{"ep":"ok","vni":7,"ip":"10.0.0.5","mac":"02:77:0a:00:00:05","vtep":"10.99.0.2"}`))
	meshtest.WaitFor(t, 5*time.Second, "the good record on h1", func() error {
		if _, ok := remoteOf(cats[0], "ok"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if n := len(cats[0].Remote()); n != 1 {
		t.Fatalf("%d remote records, want only the good one: %+v", n, cats[0].Remote())
	}
	if err := v.equalsCatalog(t, cats[0]); err != nil {
		t.Fatal(err)
	}
	// A good record turned bad is removed.
	m2.Put(Table, Key("h2", "ok"), []byte(`{"ep":"ok","ip":"10.0.0.5","mac":"zz","vtep":"10.99.0.2"}`))
	meshtest.WaitFor(t, 5*time.Second, "the spoiled record gone", func() error {
		if _, ok := remoteOf(cats[0], "ok"); ok {
			return fmt.Errorf("still there")
		}
		return v.equalsCatalog(t, cats[0])
	})
}

// A host's own records that come back from the mesh (after a restart) are
// not taken for remote ones.
func TestOwnRecordsAreNotRemote(t *testing.T) {
	c, cats := hosts(t, "h1", "h2")
	c.Members[0].Put(Table, Key("h1", "old"), []byte(`{"ep":"old","ip":"10.0.0.5","mac":"02:77:0a:00:00:05","vtep":"10.99.0.1"}`))
	cats[1].SetLocal(Record{Network: "n", VNI: 7, Endpoint: "marker", IP: "10.0.0.9", MAC: "02:77:0a:00:00:09"})
	cats[1].SetVTEP("10.99.0.2")
	cats[1].NamesReady()
	meshtest.WaitFor(t, 5*time.Second, "h2's record on h1", func() error {
		if _, ok := remoteOf(cats[0], "marker"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if _, ok := remoteOf(cats[0], "old"); ok {
		t.Fatal("h1's own record listed as remote")
	}
	if got := cats[0].Local(); len(got) != 0 {
		t.Fatalf("local records %+v, want none", got)
	}
}

var _ Store = (*mesh.Mesh)(nil)

// fakeStore is a Store whose events the test publishes itself.
type fakeStore struct {
	feed   feed.Feed[mesh.Event]
	synced bool
}

func (s *fakeStore) LocalNode() string               { return "h1" }
func (s *fakeStore) Put(table, key string, v []byte) {}
func (s *fakeStore) Delete(table, key string)        {}
func (s *fakeStore) Synced() bool                    { return s.synced }
func (s *fakeStore) Watch(string, bool) *feed.Sub[mesh.Event] {
	return s.feed.Subscribe()
}

// Synced answers true only with everything the mesh queued for the
// catalog applied, and its events in the subscribers' queues: a consumer
// that checks Synced, then takes its queue, has the whole catalog.
func TestSyncedCatchesUp(t *testing.T) {
	st := &fakeStore{}
	c := New(Config{Store: st, NamesWait: time.Hour}) // not run: nothing applies the queue but Synced
	sub := c.Subscribe()
	st.feed.Publish(mesh.Event{Kind: mesh.MemberChanged, Member: mesh.Member{Name: "h2", Addr: "10.99.0.2:7950", State: mesh.StateAlive}})
	st.feed.Publish(mesh.Event{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Key: Key("h2", "e1"), Owner: "h2", Clock: 1,
		Value: []byte(`{"ep":"e1","vni":7,"ip":"10.0.0.5","mac":"02:77:0a:00:00:05","vtep":"10.99.0.2"}`)}})
	if c.Synced() {
		t.Fatal("synced before the mesh")
	}
	st.synced = true
	if !c.Synced() {
		t.Fatal("not synced with the mesh")
	}
	evs := sub.Take()
	if len(evs) != 1 || evs[0].Kind != Added || evs[0].Record.Endpoint != "e1" {
		t.Fatalf("events after Synced: %+v", evs)
	}
	if rs := c.Remote(); len(rs) != 1 {
		t.Fatalf("remote records after Synced: %+v", rs)
	}
}

// A host speaks only for itself: a record under another host's key, or
// whose VTEP is not its host's address, is not taken in; one parked for
// its VTEP is taken in once its host's address matches, and parked again
// when the address moves away. The positive control: the host's own
// record at its own address is taken in.
func TestRecordsBoundToTheirHost(t *testing.T) {
	st := &fakeStore{}
	c := New(Config{Store: st, NamesWait: time.Hour})
	sub := c.Subscribe()
	member := func(name, addr string) {
		st.feed.Publish(mesh.Event{Kind: mesh.MemberChanged, Member: mesh.Member{Name: name, Addr: addr, State: mesh.StateAlive}})
	}
	put := func(owner, key, ep, vtep string) {
		st.feed.Publish(mesh.Event{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Key: key, Owner: owner, Clock: 1,
			Value: []byte(`{"ep":"` + ep + `","vni":7,"ip":"10.0.0.5","mac":"02:77:0a:00:00:05","vtep":"` + vtep + `"}`)}})
	}
	remote := func() string {
		c.catchUp()
		var out []string
		for _, r := range c.Remote() {
			out = append(out, r.Host+"/"+r.Endpoint+"@"+r.VTEP)
		}
		return strings.Join(out, " ")
	}
	member("h2", "10.99.0.2:7950")
	member("h3", "10.99.0.3:7950")
	put("h3", Key("h2", "forged"), "forged", "10.99.0.3") // h2's key, written by h3
	put("h3", Key("h3", "other"), "forged2", "10.99.0.3") // a key that is not its endpoint's
	put("h3", Key("h3", "aim"), "aim", "10.99.0.9")       // VTEP elsewhere
	put("h3", Key("h3", "ok"), "ok", "10.99.0.3")         // the positive control
	if got := remote(); got != "h3/ok@10.99.0.3" {
		t.Fatalf("remote records %q", got)
	}
	// h3's address moves to the one its parked record names: that record
	// is taken in, the other parked.
	member("h3", "10.99.0.9:7950")
	if got := remote(); got != "h3/aim@10.99.0.9" {
		t.Fatalf("after h3 moved: %q", got)
	}
	var kinds []string
	for _, ev := range sub.Take() {
		kinds = append(kinds, ev.Kind.String()+" "+ev.Record.Endpoint)
	}
	if got := strings.Join(kinds, ", "); got != "added ok, added aim, removed ok" {
		t.Fatalf("events %q", got)
	}
	// Gone while parked: nothing comes back.
	st.feed.Publish(mesh.Event{Kind: mesh.EntryGone, Entry: mesh.Entry{Table: Table, Key: Key("h3", "ok"), Owner: "h3"}})
	member("h3", "10.99.0.3:7950")
	if got := remote(); got != "" {
		t.Fatalf("after the parked record went: %q", got)
	}
}

// Run ends a handover by itself at its deadline, with no change from the
// mesh to wake it, and arms no timer while none is pending.
func TestRunEndsAHandoverAtItsDeadline(t *testing.T) {
	st := &fakeStore{}
	c := New(Config{Store: st, NamesWait: time.Hour, Handover: 200 * time.Millisecond})
	if _, ok := c.nextHandover(); ok {
		t.Fatal("a handover deadline before any handover")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := c.Subscribe()
	member := func(name, addr, state string) {
		st.feed.Publish(mesh.Event{Kind: mesh.MemberChanged, Member: mesh.Member{Name: name, Addr: addr, State: state}})
	}
	member("h2", "10.99.0.2:7950", mesh.StateAlive)
	st.feed.Publish(mesh.Event{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Key: Key("h2", "e1"), Owner: "h2", Clock: 1,
		Value: []byte(`{"ep":"e1","vni":7,"ip":"10.0.0.5","mac":"02:77:0a:00:00:05","vtep":"10.99.0.2"}`)}})
	c.catchUp()
	sub.Take()
	go c.Run(ctx)
	member("h2b", "10.99.0.2:7950", mesh.StateAlive)
	member("h2", "10.99.0.2:7950", mesh.StateDead)
	began := time.Now()
	st.feed.Publish(mesh.Event{Kind: mesh.EntryGone, Entry: mesh.Entry{Table: Table, Key: Key("h2", "e1"), Owner: "h2"}})
	var seen []string
	deadline := time.After(5 * time.Second)
	for !slices.Contains(seen, "removed h2/e1") {
		select {
		case <-sub.Ready():
			for _, ev := range sub.Take() {
				seen = append(seen, ev.Kind.String()+" "+ev.Record.Host+"/"+ev.Record.Endpoint)
			}
		case <-deadline:
			t.Fatalf("the handover did not end: events %q", seen)
		}
	}
	if took := time.Since(began); took < 200*time.Millisecond {
		t.Fatalf("the handover ended after %s, before its deadline", took)
	}
	if want := []string{"updated h2/e1", "removed h2/e1"}; !slices.Equal(seen, want) {
		t.Fatalf("events %q, want %q", seen, want)
	}
	if _, ok := c.nextHandover(); ok {
		t.Fatal("a handover deadline left once it ended")
	}
}

// Weft back on a host under another name (its state directory lost): the
// records of the earlier life stay until the new life publishes the same
// endpoint, which takes each one's place in one batch (no Removed before
// its Added), or until the handover's deadline. The controls: a host gone
// with no new life loses its records at once, and so does a live owner
// that withdraws one.
func TestHandoverToANewLife(t *testing.T) {
	st := &fakeStore{}
	c := New(Config{Store: st, NamesWait: time.Hour, Handover: 15 * time.Second})

	sub := c.Subscribe()
	kinds := func() string {
		c.catchUp()
		var out []string
		for _, ev := range sub.Take() {
			out = append(out, fmt.Sprintf("%s %s/%s down=%v", ev.Kind, ev.Record.Host, ev.Record.Endpoint, ev.Record.Down))
		}
		return strings.Join(out, ", ")
	}
	member := func(name, addr, state string) {
		st.feed.Publish(mesh.Event{Kind: mesh.MemberChanged, Member: mesh.Member{Name: name, Addr: addr, State: state}})
	}
	put := func(owner, ep, ip, vtep string) {
		st.feed.Publish(mesh.Event{Kind: mesh.EntryPut, Entry: mesh.Entry{Table: Table, Key: Key(owner, ep), Owner: owner, Clock: 1,
			Value: []byte(`{"ep":"` + ep + `","vni":7,"ip":"` + ip + `","mac":"02:77:0a:00:00:05","vtep":"` + vtep + `"}`)}})
	}
	gone := func(owner, ep string) {
		st.feed.Publish(mesh.Event{Kind: mesh.EntryGone, Entry: mesh.Entry{Table: Table, Key: Key(owner, ep), Owner: owner}})
	}
	events := func() string {
		c.catchUp()
		var out []string
		for _, ev := range sub.Take() {
			out = append(out, ev.Kind.String()+" "+ev.Record.Host+"/"+ev.Record.Endpoint)
		}
		return strings.Join(out, ", ")
	}
	member("h2", "10.99.0.2:7950", mesh.StateAlive)
	member("h3", "10.99.0.3:7950", mesh.StateAlive)
	put("h2", "e1", "10.0.0.5", "10.99.0.2")
	put("h2", "e2", "10.0.0.6", "10.99.0.2")
	put("h3", "e3", "10.0.0.7", "10.99.0.3")
	events()

	// h2 comes back as h2b; the mesh ends h2 and withdraws its records.
	member("h2b", "10.99.0.2:7950", mesh.StateAlive)
	member("h2", "10.99.0.2:7950", mesh.StateDead)
	gone("h2", "e1")
	gone("h2", "e2")
	if got := kinds(); got != "updated h2/e1 down=true, updated h2/e2 down=true" {
		t.Fatalf("events when the earlier life ended: %q, want its records marked down", got)
	}
	if n := len(c.Remote()); n != 3 {
		t.Fatalf("%d remote records in the handover, want 3", n)
	}
	put("h2b", "e1", "10.0.0.5", "10.99.0.2")
	if got := events(); got != "added h2b/e1, removed h2/e1" {
		t.Fatalf("events when the new life published e1: %q", got)
	}
	// e2 is not published again: it goes at the deadline, not before.
	c.endHandovers(time.Now().Add(10 * time.Second))
	if got := events(); got != "" {
		t.Fatalf("events before the deadline: %q", got)
	}
	c.endHandovers(time.Now().Add(16 * time.Second))
	if got := events(); got != "removed h2/e2" {
		t.Fatalf("events at the deadline: %q", got)
	}

	// Controls: a live owner's withdrawal, and a host gone for good.
	gone("h2b", "e1")
	member("h3", "10.99.0.3:7950", mesh.StateDead)
	gone("h3", "e3")
	if got := events(); got != "removed h2b/e1, removed h3/e3" {
		t.Fatalf("events of the controls: %q", got)
	}
	if n := len(c.Remote()); n != 0 {
		t.Fatalf("%d remote records left", n)
	}
}

// Names learned for an endpoint the driver has not given the catalog yet
// (a restart that lost the driver's state: the learner reads the engine
// first) are taken when the endpoint comes, within a bound; an endpoint
// removed meanwhile leaves none behind.
func TestNamesBeforeTheirEndpoint(t *testing.T) {
	c := New(Config{Store: &fakeStore{}, NamesWait: time.Hour})
	if c.SetNames("e1", []string{"vp1", "tasks.peer"}) {
		t.Fatal("SetNames said an unknown endpoint was known")
	}
	c.SetNames("e2", []string{"gone"})
	c.RemoveLocal("e2")
	c.SetLocal(Record{Network: "n", VNI: 7, Endpoint: "e1", IP: "10.0.0.2", MAC: "02:77:0a:00:00:02"})
	c.SetLocal(Record{Network: "n", VNI: 7, Endpoint: "e2", IP: "10.0.0.3", MAC: "02:77:0a:00:00:03"})
	got := map[string][]string{}
	for _, r := range c.Local() {
		got[r.Endpoint] = r.Names
	}
	if !slices.Equal(got["e1"], []string{"vp1", "tasks.peer"}) || got["e2"] != nil {
		t.Fatalf("names %v; want e1's learned before it came, none for e2", got)
	}
	if len(c.early) != 0 {
		t.Fatalf("%d early names left", len(c.early))
	}

	// Bounded: old ones go, and no more than maxEarly are held.
	now := time.Now()
	c.mu.Lock()
	c.keepEarlyLocked("old", []string{"x"}, now.Add(-earlyKeep-time.Second))
	for i := range maxEarly + 10 {
		c.keepEarlyLocked(fmt.Sprintf("ep%d", i), []string{"x"}, now)
	}
	_, oldKept := c.early["old"]
	n := len(c.early)
	c.mu.Unlock()
	if oldKept || n != maxEarly {
		t.Fatalf("early names: old kept %v, %d held (max %d)", oldKept, n, maxEarly)
	}
}
