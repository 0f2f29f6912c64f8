package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestCodecRoundTrip(t *testing.T) {
	es := []wireEntry{
		{Entry: Entry{Table: "endpoint", Key: "abc", Owner: "host-1", Clock: 1, Value: []byte(`{"ip":"10.0.0.2"}`)}},
		{Entry: Entry{Table: "endpoint", Key: "", Owner: "host-2", Clock: 1 << 60, Value: []byte{}}},
		{Entry: Entry{Table: "network", Key: "n", Owner: "host-1", Clock: 7, Deleted: true}, Residual: 90 * time.Second},
	}
	for _, typ := range []byte{msgBroadcast, msgSync} {
		msg, err := decodeMessage(encodeEntries(typ, es), nil)
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
	msg, err := decodeMessage(encodeDigest(d), nil)
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
	msg, err = decodeMessage(enc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != msgBlocks || !reflect.DeepEqual(msg.Blocks, bls) {
		t.Fatalf("blocks round trip:\n got %+v\nwant %+v", msg.Blocks, bls)
	}
	ans := &digestMsg{Sender: "host-2", Answer: true, Blocks: true, Owners: d.Owners}
	msg, err = decodeMessage(encodeAnswer(ans, bls), nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != msgAnswer || !reflect.DeepEqual(msg.Digest, ans) || !reflect.DeepEqual(msg.Blocks, bls) {
		t.Fatalf("answer round trip: %+v %+v", msg.Digest, msg.Blocks)
	}
	if msg, err = decodeMessage(encodeAnswer(ans, nil), nil); err != nil || len(msg.Blocks) != 0 {
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
	it, err := viewEntries(b[headerLen:], viewString)
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
	msg, err := decodeMessage(b, nil)
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
	huge = appendUvarint(huge, 1)
	huge = appendUvarint(huge, maxTableLen+1)
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
			b = appendUvarint(b, 1)
			b = appendString(b, "t")
			b = appendString(b, "k")
			b = appendString(b, "o")
			b = appendUvarint(b, 1)
			return append(b, 0x80, 0)
		}(),
		"digest without sender": encodeDigest(&digestMsg{}),
		"digest truncated":      encodeDigest(&digestMsg{Sender: "s", Owners: []ownerDigest{{Owner: "o"}}})[:10],
	} {
		if _, err := decodeMessage(in, nil); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := decodeMessage(huge, nil); !errors.Is(err, errTooLarge) {
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
		if msg, err := decodeMessage(b, s.internBytes); err == nil {
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
		msg, err := decodeMessage(b, nil)
		if err != nil {
			return
		}
		switch msg.Type {
		case msgLeave:
			again, err := decodeMessage(encodeLeave(msg.Node), nil)
			if err != nil || again.Node != msg.Node {
				t.Fatalf("leave does not round trip: %v", err)
			}
			s := newTestState("me", "o")
			s.memberLeaving(msg.Node)
		case msgDigest:
			if re := encodeDigest(msg.Digest); !bytes.Equal(re, b) {
				// Varints may be non-minimal on input; decoding again must agree.
				again, err := decodeMessage(re, nil)
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
			again, err := decodeMessage(re, nil)
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
			again, err := decodeMessage(re, nil)
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
		encodeDigest(&digestMsg{Sender: "o", Reply: true, Blocks: true, Owners: []ownerDigest{{Owner: "o", Count: 2, MaxClock: 9, Hash: 42}}}),
		encodeBlocks([]block{{Digest: ownerDigest{Owner: "o", Count: 1, MaxClock: 3, Hash: 7}, Entries: []wireEntry{
			{Entry: Entry{Table: "endpoint", Key: "ep1", Owner: "o", Clock: 3, Value: []byte(`{"ip":"10.1.0.2"}`)}},
		}}}),
		encodeAnswer(&digestMsg{Sender: "p", Answer: true, Blocks: true, Owners: []ownerDigest{{Owner: "p", Count: 1, MaxClock: 2, Hash: 5}}},
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
