package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// message is a whole decoded message, for tests: decoded by the decoders
// receive uses (one per type), with everything copied out of the buffer.
type message struct {
	Type    byte
	Entries []wireEntry
	Blocks  []block
	Digest  *digestMsg
	Node    string // msgLeave
}

func decodeMessage(buf []byte) (message, error) {
	typ, body, err := parseHeader(buf)
	if err != nil {
		return message{}, err
	}
	msg := message{Type: typ}
	switch typ {
	case msgBroadcast, msgSync:
		msg.Entries, err = copyEntries(body)
	case msgBlocks:
		msg.Blocks, err = copyBlocks(body)
	case msgAnswer:
		d := decoder{b: body}
		if msg.Digest = decodeDigest(&d); d.err != nil {
			return message{}, d.err
		}
		msg.Blocks, err = copyBlocks(d.b)
	case msgDigest:
		d := decoder{b: body}
		msg.Digest = decodeDigest(&d)
		err = d.done()
	case msgLeave:
		msg.Node, err = decodeLeave(body)
	default:
		err = errUnknownType
	}
	if err != nil {
		return message{}, err
	}
	return msg, nil
}

// copyEntries decodes an entries body into entries that own their bytes.
func copyEntries(body []byte) ([]wireEntry, error) {
	it, err := viewEntries(body)
	if err != nil {
		return nil, err
	}
	out := make([]wireEntry, 0, it.left)
	var w wireEntry
	for it.next(&w) {
		w.Table, w.Key, w.Owner = strings.Clone(w.Table), strings.Clone(w.Key), strings.Clone(w.Owner)
		if w.Value != nil {
			w.Value = bytes.Clone(w.Value)
		}
		out = append(out, w)
	}
	return out, nil
}

// copyBlocks decodes a blocks body into blocks that own their bytes.
func copyBlocks(body []byte) ([]block, error) {
	bi, err := viewBlocks(body)
	if err != nil {
		return nil, err
	}
	out := make([]block, 0, bi.left)
	var bl block
	var entries []byte
	for bi.next(&bl.Digest, &entries) {
		bl.Digest.Owner = strings.Clone(bl.Digest.Owner)
		if bl.Entries, err = copyEntries(entries); err != nil {
			return nil, err
		}
		out = append(out, bl)
	}
	return out, bi.d.err
}

func TestCodecRoundTrip(t *testing.T) {
	es := []wireEntry{
		{Entry: Entry{Table: "endpoint", Key: "abc", Owner: "host-1", Clock: 1, Value: []byte(`{"ip":"10.0.0.2"}`)}},
		{Entry: Entry{Table: "endpoint", Key: "", Owner: "host-2", Clock: 1 << 60, Value: []byte{}}},
		{Entry: Entry{Table: "network", Key: "n", Owner: "host-1", Clock: 7, Deleted: true}, Residual: 90 * time.Second},
	}
	for _, typ := range []byte{msgBroadcast, msgSync} {
		msg, err := decodeMessage(encodeEntries(typ, es))
		if err != nil {
			t.Fatal(err)
		}
		if msg.Type != typ || !reflect.DeepEqual(msg.Entries, es) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", msg.Entries, es)
		}
	}
	d := &digestMsg{Sender: "host-1", Reply: true, Owners: []ownerDigest{
		{Owner: "host-1", Count: 3, MaxClock: 99, Hash: 0xdeadbeefcafef00d},
		{Owner: "host-2", Count: 0, MaxClock: 0, Hash: 0},
	}}
	msg, err := decodeMessage(encodeDigest(d))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != msgDigest || !reflect.DeepEqual(msg.Digest, d) {
		t.Fatalf("digest round trip: %+v", msg.Digest)
	}

	bls := []block{
		{Digest: ownerDigest{Owner: "host-1", Count: 2, MaxClock: 7, Hash: 1}, Entries: []wireEntry{es[0], es[2]}},
		{Digest: ownerDigest{Owner: "host-2", Count: 1, MaxClock: 1 << 60, Hash: 2}, Entries: es[1:2]},
	}
	enc := encodeBlocks(bls)
	if len(enc) != cap(enc) || len(enc) != headerLen+blocksLen(bls) {
		t.Errorf("blocks message is %d bytes in %d allocated; sized %d", len(enc), cap(enc), headerLen+blocksLen(bls))
	}
	msg, err = decodeMessage(enc)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != msgBlocks || !reflect.DeepEqual(msg.Blocks, bls) {
		t.Fatalf("blocks round trip:\n got %+v\nwant %+v", msg.Blocks, bls)
	}
	ans := &digestMsg{Sender: "host-2", Answer: true, Owners: d.Owners}
	msg, err = decodeMessage(encodeAnswer(ans, bls))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != msgAnswer || !reflect.DeepEqual(msg.Digest, ans) || !reflect.DeepEqual(msg.Blocks, bls) {
		t.Fatalf("answer round trip: %+v %+v", msg.Digest, msg.Blocks)
	}
	if msg, err = decodeMessage(encodeAnswer(ans, nil)); err != nil || len(msg.Blocks) != 0 {
		t.Fatalf("empty answer: %v %+v", err, msg.Blocks)
	}
}

// TestEntryLenExact checks the exact sizes used to allocate messages
// against the encoder, across varint length boundaries.
func TestEntryLenExact(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384} {
		for _, clock := range []uint64{0, 127, 128, 1 << 63} {
			e := Entry{Table: "t", Key: string(make([]byte, n)), Owner: "o", Clock: clock, Value: make([]byte, n)}
			if got, want := entryLen(&e, 0), len(appendEntry(nil, &e, 0)); got != want {
				t.Errorf("entryLen(key/value %d, clock %d) = %d, encoded %d", n, clock, got, want)
			}
			e.Deleted, e.Value = true, nil
			for _, res := range []time.Duration{-time.Second, 0, 127 * time.Millisecond, time.Hour} {
				if got, want := entryLen(&e, res), len(appendEntry(nil, &e, res)); got != want {
					t.Errorf("entryLen(tombstone, residual %v) = %d, encoded %d", res, got, want)
				}
			}
		}
	}
}

// TestViewEntriesStoredAsCopies: merging reads entries as views into the
// received message; what the table keeps must not change when the
// message's buffer is reused.
func TestViewEntriesStoredAsCopies(t *testing.T) {
	b := encodeEntries(msgSync, []wireEntry{
		we("t", "k1", "o", 1, false, "value-1"),
		we("t", "k2", "o", 2, true, ""),
	})
	it, err := viewEntries(b[headerLen:])
	if err != nil {
		t.Fatal(err)
	}
	s := newTestState("me", "o")
	var w wireEntry
	for it.next(&w) {
		s.apply(w, t0)
	}
	for i := range b {
		b[i] = 'x'
	}
	if r := s.lookup("t", "k1"); r == nil || r.Key != "k1" || string(r.Value) != "value-1" || r.Owner != "o" || r.Table != "t" {
		t.Fatalf("stored entry changed with the message's buffer: %+v", r)
	}
	if r := s.lookup("t", "k2"); r == nil || r.Key != "k2" || !r.Deleted {
		t.Fatalf("stored tombstone changed with the message's buffer: %+v", r)
	}
	checkInvariants(t, s)
}

func TestDecodeCopiesInput(t *testing.T) {
	b := encodeEntries(msgSync, []wireEntry{{Entry: Entry{Table: "t", Key: "k", Owner: "o", Clock: 1, Value: []byte("value")}}})
	msg, err := decodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if e := msg.Entries[0]; e.Key != "k" || string(e.Value) != "value" || e.Owner != "o" {
		t.Fatalf("decoded entry aliases its input: %+v", e)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encodeEntries(msgSync, []wireEntry{{Entry: Entry{Table: "t", Key: "k", Owner: "o", Clock: 1, Value: []byte("v")}}})
	huge := appendHeader(nil, msgSync)
	huge = binary.AppendUvarint(huge, 1)
	huge = binary.AppendUvarint(huge, maxTableLen+1)
	huge = append(huge, bytes.Repeat([]byte("t"), maxTableLen+1)...)
	for name, in := range map[string][]byte{
		"empty":           nil,
		"short header":    {msgMagic, msgVersion},
		"bad magic":       {0, msgVersion, msgSync, 0},
		"future version":  {msgMagic, msgVersion + 1, msgSync, 0},
		"unknown type":    {msgMagic, msgVersion, 'q', 0},
		"count too large": {msgMagic, msgVersion, msgSync, 0xff, 0xff, 0x03},
		"varint overflow": {msgMagic, msgVersion, msgSync, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
		"truncated":       good[:len(good)-2],
		"trailing bytes":  append(append([]byte{}, good...), 1),
		"oversized table": huge,
		"no owner":        encodeEntries(msgSync, []wireEntry{{Entry: Entry{Table: "t", Key: "k", Clock: 1}}}),
		"bad flags": func() []byte {
			b := appendHeader(nil, msgSync)
			b = binary.AppendUvarint(b, 1)
			b = appendString(b, "t")
			b = appendString(b, "k")
			b = appendString(b, "o")
			b = binary.AppendUvarint(b, 1)
			return append(b, 0x80, 0)
		}(),
		"digest without sender": encodeDigest(&digestMsg{}),
		"digest truncated":      encodeDigest(&digestMsg{Sender: "s", Owners: []ownerDigest{{Owner: "o"}}})[:10],
	} {
		if _, err := decodeMessage(in); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := decodeMessage(huge); !errors.Is(err, errTooLarge) {
		t.Errorf("oversized table: %v", err)
	}
}

func TestDecodeRandomGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	good := encodeEntries(msgBroadcast, []wireEntry{
		{Entry: Entry{Table: "t", Key: "k", Owner: "o", Clock: 1, Value: []byte("v")}},
		{Entry: Entry{Table: "t", Key: "k2", Owner: "o", Clock: 2, Deleted: true}, Residual: time.Second},
	})
	s := newTestState("me", "o")
	for range 20000 {
		b := append([]byte(nil), good...)
		for range 1 + r.IntN(4) {
			b[r.IntN(len(b))] = byte(r.Uint32())
		}
		b = b[:r.IntN(len(b)+1)]
		if msg, err := decodeMessage(b); err == nil {
			for _, e := range msg.Entries {
				s.apply(e, t0)
			}
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder and merges whatever
// decodes into a table: nothing may panic, a decoded message must encode
// back to the same bytes, and merging must keep the table's invariants.
func FuzzDecode(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := decodeMessage(b)
		if err != nil {
			return
		}
		switch msg.Type {
		case msgLeave:
			again, err := decodeMessage(encodeLeave(msg.Node))
			if err != nil || again.Node != msg.Node {
				t.Fatalf("leave does not round trip: %v", err)
			}
			s := newTestState("me", "o")
			s.memberLeaving(msg.Node, t0)
		case msgDigest:
			if re := encodeDigest(msg.Digest); !bytes.Equal(re, b) {
				// Varints may be non-minimal on input; decoding again must agree.
				again, err := decodeMessage(re)
				if err != nil || !reflect.DeepEqual(again.Digest, msg.Digest) {
					t.Fatalf("digest does not round trip: %v", err)
				}
			}
			s := newTestState("me", "o")
			s.delta(msg.Digest.Owners, t0, true)
			checkInvariants(t, s)
		case msgBlocks, msgAnswer:
			var re []byte
			if msg.Type == msgBlocks {
				re = encodeBlocks(msg.Blocks)
			} else {
				re = encodeAnswer(msg.Digest, msg.Blocks)
			}
			again, err := decodeMessage(re)
			if err != nil || !reflect.DeepEqual(again.Blocks, msg.Blocks) || !reflect.DeepEqual(again.Digest, msg.Digest) {
				t.Fatalf("blocks do not round trip: %v", err)
			}
			s := newTestState("me", "o", "p")
			for _, bl := range msg.Blocks {
				if s.holds(&bl.Digest) {
					continue
				}
				for _, e := range bl.Entries {
					s.apply(e, t0)
				}
			}
			checkInvariants(t, s)
		default:
			re := encodeEntries(msg.Type, msg.Entries)
			again, err := decodeMessage(re)
			if err != nil || !reflect.DeepEqual(again.Entries, msg.Entries) {
				t.Fatalf("entries do not round trip: %v", err)
			}
			s := newTestState("me", "o", "p")
			for _, e := range msg.Entries {
				s.apply(e, t0)
			}
			checkInvariants(t, s)
		}
	})
}

// TestDigestSaysBlocks: every digest sent says its sender reads blocks,
// which the first release of protocol 1 needs to answer with them; a
// digest without the flag (from a build before it) is read all the same.
func TestDigestSaysBlocks(t *testing.T) {
	for _, d := range []*digestMsg{{Sender: "a"}, {Sender: "a", Reply: true}, {Sender: "a", Answer: true}} {
		b := encodeDigest(d)
		if flags := b[headerLen+1+len(d.Sender)]; flags&flagBlocks == 0 {
			t.Errorf("digest %+v sent without the blocks flag", d)
		}
		b = encodeAnswer(d, nil)
		if flags := b[headerLen+1+len(d.Sender)]; flags&flagBlocks == 0 {
			t.Errorf("answer %+v sent without the blocks flag", d)
		}
	}
	old := appendString(appendHeader(nil, msgDigest), "old")
	old = append(old, flagReply, 0)
	msg, err := decodeMessage(old)
	if err != nil || msg.Digest.Sender != "old" || !msg.Digest.Reply {
		t.Fatalf("digest without the blocks flag: %+v, %v", msg.Digest, err)
	}
}

// FuzzEntries feeds arbitrary bytes to the entries decoder (entries
// messages, and each block's body) and merges what decodes.
func FuzzEntries(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		if typ, body, err := parseHeader(seed); err == nil && (typ == msgBroadcast || typ == msgSync) {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		it, err := viewEntries(body)
		if err != nil {
			return
		}
		s := newTestState("me", "o", "p")
		var w wireEntry
		n := 0
		for it.next(&w) {
			n++
			s.apply(w, t0)
		}
		if it.d.err != nil || len(it.d.b) != 0 {
			t.Fatalf("checked entries fail when read: %v, %d bytes left", it.d.err, len(it.d.b))
		}
		checkInvariants(t, s)
	})
}

// FuzzBlocks feeds arbitrary bytes to the blocks decoder: framing checked
// whole, then block by block.
func FuzzBlocks(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		if typ, body, err := parseHeader(seed); err == nil && typ == msgBlocks {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		bi, err := viewBlocks(body)
		if err != nil {
			return
		}
		s := newTestState("me", "o", "p")
		var od ownerDigest
		var entries []byte
		for bi.next(&od, &entries) {
			if od.Owner == "" {
				t.Fatal("block without owner")
			}
			if s.holds(&od) {
				continue
			}
			it, err := viewEntries(entries)
			if err != nil {
				continue
			}
			var w wireEntry
			for it.next(&w) {
				s.apply(w, t0)
			}
		}
		if bi.d.err != nil {
			t.Fatalf("checked framing fails when read: %v", bi.d.err)
		}
		checkInvariants(t, s)
	})
}

// FuzzDigest feeds arbitrary bytes to the digest decoder and compares what
// decodes with a table.
func FuzzDigest(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		if typ, body, err := parseHeader(seed); err == nil && (typ == msgDigest || typ == msgAnswer) {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d := decoder{b: body}
		dg := decodeDigest(&d)
		if d.done() != nil {
			return
		}
		again := decoder{b: appendDigest(nil, dg)}
		if got := decodeDigest(&again); again.done() != nil || !reflect.DeepEqual(got, dg) {
			t.Fatalf("digest does not round trip: %+v, %+v", got, dg)
		}
		s := newTestState("me", "o")
		s.put("t", "k", []byte("v"), t0)
		s.delta(dg.Owners, t0, true)
		checkInvariants(t, s)
	})
}

// FuzzMeta feeds arbitrary node metadata to its decoder: it never fails,
// and what it reads round trips.
func FuzzMeta(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodeMeta(nodeMeta{Protocol: 1, Version: "0.4.0"}))
	f.Add(append(encodeMeta(nodeMeta{Protocol: 2, Version: "1.0", DownGrace: time.Minute}), 9, 9))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := decodeMeta(b)
		if m.Protocol < 1 || len(m.Version) > maxVersionLen || m.DownGrace < 0 || m.DownGrace > maxDownGrace || (!m.HasGrace && m.DownGrace != 0) {
			t.Fatalf("decodeMeta = %+v", m)
		}
		m.HasGrace = true
		if m2 := decodeMeta(encodeMeta(m)); m2 != m {
			t.Fatalf("meta does not round trip: %+v -> %+v", m, m2)
		}
	})
}

// FuzzReceive feeds arbitrary bytes to a member's receive path, as gossip
// and as a push/pull: nothing may panic and the table keeps its invariants.
func FuzzReceive(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	m, err := New(Config{NodeName: "me"})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	m.mu.Lock()
	for _, name := range []string{"o", "p"} {
		m.st.memberUp(Member{Name: name}, 0, t0)
	}
	m.mu.Unlock()
	f.Fuzz(func(t *testing.T, b []byte, pushPull bool) {
		m.receive(b, pushPull)
		for len(m.tasks) > 0 {
			<-m.tasks // not started: nobody sends them
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		checkInvariants(t, m.st)
	})
}

// checkInvariants verifies the state's indexes and digests agree.
func checkInvariants(t *testing.T, s *state) {
	t.Helper()
	n := 0
	for table, keys := range s.tables {
		for key, r := range keys {
			n++
			if r.Table != table || r.Key != key {
				t.Fatalf("record %s/%s filed under %s/%s", r.Table, r.Key, table, key)
			}
			if set := s.owners[r.Owner]; set == nil || !set.has(r) {
				t.Fatalf("record %s/%s missing from its owner's set", table, key)
			}
			if _, ok := s.tombs[r]; ok != r.Deleted {
				t.Fatalf("record %s/%s tombstone index wrong", table, key)
			}
		}
	}
	m := 0
	for owner, os := range s.owners {
		var h uint64
		for i, r := range os.recs {
			if r.idx != i {
				t.Fatalf("record %s/%s at %d of its owner's set thinks it is at %d", r.Table, r.Key, i, r.idx)
			}
			h ^= entryHash(&r.Entry)
			if r.Owner != owner {
				t.Fatalf("record of %s in %s's set", r.Owner, owner)
			}
		}
		if h != os.hash {
			t.Fatalf("owner %s hash out of date", owner)
		}
		m += len(os.recs)
	}
	if n != m {
		t.Fatalf("%d records in tables, %d in owner sets", n, m)
	}
}

func fuzzSeeds() [][]byte {
	return [][]byte{
		encodeEntries(msgBroadcast, []wireEntry{{Entry: Entry{Table: "endpoint", Key: "ep1", Owner: "o", Clock: 3, Value: []byte(`{"ip":"10.1.0.2"}`)}}}),
		encodeEntries(msgSync, []wireEntry{
			{Entry: Entry{Table: "endpoint", Key: "ep1", Owner: "me", Clock: 9, Value: []byte("stale")}},
			{Entry: Entry{Table: "endpoint", Key: "ep1", Owner: "p", Clock: 9, Deleted: true}, Residual: time.Minute},
			{Entry: Entry{Table: "network", Key: "n1", Owner: "o", Clock: 1, Value: []byte{}}},
		}),
		encodeDigest(&digestMsg{Sender: "o", Reply: true, Owners: []ownerDigest{{Owner: "o", Count: 2, MaxClock: 9, Hash: 42}}}),
		encodeBlocks([]block{{Digest: ownerDigest{Owner: "o", Count: 1, MaxClock: 3, Hash: 7}, Entries: []wireEntry{
			{Entry: Entry{Table: "endpoint", Key: "ep1", Owner: "o", Clock: 3, Value: []byte(`{"ip":"10.1.0.2"}`)}},
		}}}),
		encodeAnswer(&digestMsg{Sender: "p", Answer: true, Owners: []ownerDigest{{Owner: "p", Count: 1, MaxClock: 2, Hash: 5}}},
			[]block{{Digest: ownerDigest{Owner: "p", Count: 1, MaxClock: 2, Hash: 5}, Entries: []wireEntry{
				{Entry: Entry{Table: "endpoint", Key: "ep2", Owner: "p", Clock: 2, Deleted: true}, Residual: time.Second},
			}}}),
		{msgMagic, msgVersion, msgSync, 0},
		encodeLeave("o"),
	}
}

// TestWriteFuzzSeeds refreshes testdata/fuzz/FuzzDecode when
// MESH_WRITE_FUZZ_SEEDS is set; the files are checked in.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("MESH_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set MESH_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
