package probe

import (
	"encoding/binary"
	"errors"
	"time"
)

// The probe's messages, UDP payloads on the probe segment:
//
//	0  magic "wfp1"
//	4  kind: 1 request, 2 reply
//	5  reserved, 0
//	6  size: the request's IP packet length, in bytes (big endian)
//	8  seq (big endian)
//	12 the request's send time, Unix nanoseconds of the sender's clock
//	20 padding, to size in all (requests only)
//
// A reply is the request's header with kind 2, never padded: only the
// request's way is measured for size, each host measuring its own way
// out. The sender's clock travels in the message and back, so RTT needs
// no state but the sequence number.

const (
	magic      = "wfp1"
	headerLen  = 20
	kindReq    = 1
	kindReply  = 2
	ipUDPLen   = 28 // IPv4 and UDP headers: an IP packet of size n carries n-28 bytes
	minSize    = ipUDPLen + headerLen
	maxPayload = 65507
)

// msg is one decoded message.
type msg struct {
	kind byte
	size int
	seq  uint32
	sent time.Time
}

// encode writes m into buf (a request padded to m.size) and returns the
// payload.
func encode(buf []byte, m msg) []byte {
	n := headerLen
	if m.kind == kindReq {
		n = max(m.size-ipUDPLen, headerLen)
	}
	b := buf[:n]
	copy(b, magic)
	b[4], b[5] = m.kind, 0
	binary.BigEndian.PutUint16(b[6:], uint16(m.size))
	binary.BigEndian.PutUint32(b[8:], m.seq)
	binary.BigEndian.PutUint64(b[12:], uint64(m.sent.UnixNano()))
	clear(b[headerLen:])
	return b
}

var errNotProbe = errors.New("not a probe message")

// decode reads a message; n is the payload's length as received.
func decode(b []byte) (msg, error) {
	if len(b) < headerLen || string(b[:4]) != magic {
		return msg{}, errNotProbe
	}
	m := msg{
		kind: b[4],
		size: int(binary.BigEndian.Uint16(b[6:])),
		seq:  binary.BigEndian.Uint32(b[8:]),
		sent: time.Unix(0, int64(binary.BigEndian.Uint64(b[12:]))),
	}
	switch m.kind {
	case kindReq:
		// A request is as large as it says: a shorter one was cut
		// somewhere, and a reply would claim a size that did not pass.
		if len(b)+ipUDPLen != m.size {
			return msg{}, errNotProbe
		}
	case kindReply:
	default:
		return msg{}, errNotProbe
	}
	return m, nil
}
