package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Wire format. Every message the mesh hands to memberlist starts with a
// three-byte header: magic, version, type. Integers are unsigned varints,
// strings and byte slices are a varint length followed by the bytes.
//
//	entries message (msgBroadcast, msgSync): count, then count entries
//	entry:  table, key, owner, clock, flags (bit 0: deleted), then
//	        deleted: residual time to reap, in milliseconds
//	        live:    value
//	digest message (msgDigest): sender, flags (bit 0: reply wanted), count,
//	        then count × (owner, entries, max clock, 8-byte little-endian hash)
//	leave message (msgLeave): node name
//
// A tombstone carries how long it has left to live rather than a deadline,
// so every holder reaps it at about the same moment whatever its wall clock
// says, and a tombstone that reaches a node which already reaped it comes
// back with nothing left to live and is not stored again.
//
// Decoding never trusts a length: each is checked against what is left of
// the buffer and against a per-field limit before anything is allocated.
const (
	msgMagic   byte = 0xf7
	msgVersion byte = 1

	// msgBroadcast carries entries gossiped by the broadcast queue (or fanned
	// out over TCP when too large for a packet); a receiver whose table
	// changes passes them on.
	msgBroadcast byte = 'b'
	// msgSync carries entries sent by anti-entropy or a join's full state;
	// they are not passed on (anti-entropy spreads them further).
	msgSync byte = 's'
	// msgDigest carries a per-owner summary of the sender's table.
	msgDigest byte = 'd'
	// msgLeave says the named node is leaving on purpose. memberlist's
	// event callbacks do not tell a node that left from one that died.
	msgLeave byte = 'l'

	headerLen = 3

	// Limits on decoded fields; Put refuses anything larger, so a message
	// beyond them is garbage or hostile.
	maxTableLen = 256
	maxKeyLen   = 4096
	maxOwnerLen = 512
	maxValueLen = 4 << 20
	// minEntryLen is the smallest possible encoded entry: empty table, key
	// and owner, one-byte clock, flags and one-byte value length or residual.
	minEntryLen = 6
	// minDigestLen is the smallest encoded digest item.
	minDigestLen = 1 + 1 + 1 + 8

	flagDeleted = 1 << 0
	flagReply   = 1 << 0
)

var (
	errShort    = errors.New("truncated message")
	errTooLarge = errors.New("field exceeds its limit")
	errOverflow = errors.New("varint overflow")
)

// wireEntry is an entry as it travels: a tombstone also carries how long it
// has left before it is reaped.
type wireEntry struct {
	Entry
	Residual time.Duration
}

// ownerDigest summarises the entries (tombstones included) one owner has in
// a node's table: how many, the newest clock, and the XOR of their hashes,
// which does not depend on the order entries arrived in.
type ownerDigest struct {
	Owner    string
	Count    uint64
	MaxClock uint64
	Hash     uint64
}

// digestMsg is a node's summary of its table, sent so the receiver can send
// back what the sender lacks.
type digestMsg struct {
	Sender string
	Reply  bool // the sender wants the receiver's digest back
	Owners []ownerDigest
}

func appendHeader(b []byte, typ byte) []byte {
	return append(b, msgMagic, msgVersion, typ)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendEntry encodes one entry; residual only matters for tombstones.
func appendEntry(b []byte, e *Entry, residual time.Duration) []byte {
	b = appendString(b, e.Table)
	b = appendString(b, e.Key)
	b = appendString(b, e.Owner)
	b = binary.AppendUvarint(b, e.Clock)
	if e.Deleted {
		b = append(b, flagDeleted)
		if residual < 0 {
			residual = 0
		}
		return binary.AppendUvarint(b, uint64(residual/time.Millisecond))
	}
	b = append(b, 0)
	b = binary.AppendUvarint(b, uint64(len(e.Value)))
	return append(b, e.Value...)
}

// encodeEntries builds one entries message of the given type.
func encodeEntries(typ byte, es []wireEntry) []byte {
	n := headerLen + binary.MaxVarintLen64
	for i := range es {
		n += entrySize(&es[i].Entry)
	}
	b := make([]byte, 0, n)
	b = appendHeader(b, typ)
	b = binary.AppendUvarint(b, uint64(len(es)))
	for i := range es {
		b = appendEntry(b, &es[i].Entry, es[i].Residual)
	}
	return b
}

// entrySize is an upper bound of an entry's encoded size.
func entrySize(e *Entry) int {
	return len(e.Table) + len(e.Key) + len(e.Owner) + len(e.Value) + 6*binary.MaxVarintLen64
}

func encodeDigest(d *digestMsg) []byte {
	n := headerLen + 2*binary.MaxVarintLen64 + len(d.Sender) + 1
	for i := range d.Owners {
		n += len(d.Owners[i].Owner) + 3*binary.MaxVarintLen64 + 8
	}
	b := make([]byte, 0, n)
	b = appendHeader(b, msgDigest)
	b = appendString(b, d.Sender)
	var flags byte
	if d.Reply {
		flags |= flagReply
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(d.Owners)))
	for i := range d.Owners {
		o := &d.Owners[i]
		b = appendString(b, o.Owner)
		b = binary.AppendUvarint(b, o.Count)
		b = binary.AppendUvarint(b, o.MaxClock)
		b = binary.LittleEndian.AppendUint64(b, o.Hash)
	}
	return b
}

// message is a decoded message: entries (Type msgBroadcast or msgSync), a
// digest, or a leave notice.
type message struct {
	Type    byte
	Entries []wireEntry
	Digest  *digestMsg
	Node    string // msgLeave
}

func encodeLeave(node string) []byte {
	return appendString(appendHeader(nil, msgLeave), node)
}

// decodeMessage decodes a whole message. It copies everything it keeps, so
// buf may be reused by the caller. intern, if not nil, is used for table and
// owner names, which repeat across entries.
func decodeMessage(buf []byte, intern func([]byte) string) (message, error) {
	if len(buf) < headerLen {
		return message{}, errShort
	}
	if buf[0] != msgMagic {
		return message{}, fmt.Errorf("bad magic byte %#x", buf[0])
	}
	if buf[1] != msgVersion {
		return message{}, fmt.Errorf("unsupported message version %d", buf[1])
	}
	if intern == nil {
		intern = func(b []byte) string { return string(b) }
	}
	d := decoder{b: buf[headerLen:]}
	msg := message{Type: buf[2]}
	switch msg.Type {
	case msgBroadcast, msgSync:
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.b)/minEntryLen) {
			return message{}, fmt.Errorf("entry count %d: %w", n, errShort)
		}
		msg.Entries = make([]wireEntry, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			var w wireEntry
			w.Table = intern(d.bytes(maxTableLen))
			w.Key = string(d.bytes(maxKeyLen))
			w.Owner = intern(d.bytes(maxOwnerLen))
			w.Clock = d.uvarint()
			flags := d.byte()
			if flags&^flagDeleted != 0 && d.err == nil {
				d.err = fmt.Errorf("unknown entry flags %#x", flags)
			}
			if flags&flagDeleted != 0 {
				w.Deleted = true
				ms := d.uvarint()
				if ms > uint64(24*time.Hour/time.Millisecond) {
					ms = uint64(24 * time.Hour / time.Millisecond)
				}
				w.Residual = time.Duration(ms) * time.Millisecond
			} else if v := d.bytes(maxValueLen); d.err == nil {
				w.Value = make([]byte, len(v)) // never nil for a live entry
				copy(w.Value, v)
			}
			if d.err == nil && (w.Table == "" || w.Owner == "") {
				d.err = errors.New("entry without table or owner")
			}
			msg.Entries = append(msg.Entries, w)
		}
	case msgDigest:
		dm := &digestMsg{}
		dm.Sender = string(d.bytes(maxOwnerLen))
		dm.Reply = d.byte()&flagReply != 0
		n := d.uvarint()
		if d.err == nil && n > uint64(len(d.b)/minDigestLen) {
			return message{}, fmt.Errorf("digest count %d: %w", n, errShort)
		}
		dm.Owners = make([]ownerDigest, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			var o ownerDigest
			o.Owner = intern(d.bytes(maxOwnerLen))
			o.Count = d.uvarint()
			o.MaxClock = d.uvarint()
			o.Hash = d.uint64()
			dm.Owners = append(dm.Owners, o)
		}
		if d.err == nil && dm.Sender == "" {
			d.err = errors.New("digest without sender")
		}
		msg.Digest = dm
	case msgLeave:
		msg.Node = string(d.bytes(maxOwnerLen))
		if d.err == nil && msg.Node == "" {
			d.err = errors.New("leave without node")
		}
	default:
		return message{}, fmt.Errorf("unknown message type %#x", msg.Type)
	}
	if d.err != nil {
		return message{}, d.err
	}
	if len(d.b) != 0 {
		return message{}, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return msg, nil
}

// decoder reads fields off a buffer; the first error sticks and every later
// read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.err = errShort
		return 0
	case n < 0:
		d.err = errOverflow
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uint64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errShort
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// bytes returns a slice of the input (not a copy) of at most max bytes.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.err = errTooLarge
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
