package probe

import (
	"encoding/binary"
	"errors"
	"time"
)

// The probe's message, a UDP payload on the probe segment. Each host
// sends its peers one per turn, and never answers one: the news of what it
// received from a peer rides on its next message to that peer (as BFD's
// and NTP's do), so a pair of hosts exchanges one packet each way per turn.
//
//	0  magic "wfp1"
//	4  flags: 1 sized (a size probe)
//	5  reserved, 0
//	6  size: this message's IP packet length, in bytes
//	8  seq: the sender's sequence number
//	12 echo: the seq of the receiver's message the sender got last (0: none)
//	16 held: microseconds from that message's arrival to this one's sending
//	20 sizedSeq, sizedSize: the receiver's last size probe the sender got
//	   (0: none), and its size
//	26 reserved, 0
//	28 padding, to size in all
//
// All numbers are big endian. A message shorter than its size was cut on
// the way and is dropped.

const (
	magic      = "wfp1"
	headerLen  = 28
	flagSized  = 1
	ipUDPLen   = 28 // IPv4 and UDP headers: an IP packet of size n carries n-28 bytes
	minSize    = ipUDPLen + headerLen
	maxPayload = 65507
)

// msg is one decoded message.
type msg struct {
	sized     bool
	size      int
	seq       uint32
	echo      uint32
	held      time.Duration
	sizedSeq  uint32
	sizedSize int
}

// encode writes m into buf, padded to m.size, and returns the payload.
func encode(buf []byte, m msg) []byte {
	b := buf[:max(m.size-ipUDPLen, headerLen)]
	copy(b, magic)
	b[4], b[5] = 0, 0
	if m.sized {
		b[4] = flagSized
	}
	binary.BigEndian.PutUint16(b[6:], uint16(m.size))
	binary.BigEndian.PutUint32(b[8:], m.seq)
	binary.BigEndian.PutUint32(b[12:], m.echo)
	binary.BigEndian.PutUint32(b[16:], uint32(min(m.held.Microseconds(), 1<<32-1)))
	binary.BigEndian.PutUint32(b[20:], m.sizedSeq)
	binary.BigEndian.PutUint16(b[24:], uint16(m.sizedSize))
	clear(b[26:])
	return b
}

var errNotProbe = errors.New("not a probe message")

// decode reads a message.
func decode(b []byte) (msg, error) {
	if len(b) < headerLen || string(b[:4]) != magic {
		return msg{}, errNotProbe
	}
	m := msg{
		sized:     b[4]&flagSized != 0,
		size:      int(binary.BigEndian.Uint16(b[6:])),
		seq:       binary.BigEndian.Uint32(b[8:]),
		echo:      binary.BigEndian.Uint32(b[12:]),
		held:      time.Duration(binary.BigEndian.Uint32(b[16:])) * time.Microsecond,
		sizedSeq:  binary.BigEndian.Uint32(b[20:]),
		sizedSize: int(binary.BigEndian.Uint16(b[24:])),
	}
	// As large as it says: a shorter one was cut somewhere, and taking it
	// would credit the path with a size that did not pass.
	if len(b)+ipUDPLen != max(m.size, minSize) || m.seq == 0 {
		return msg{}, errNotProbe
	}
	return m, nil
}
