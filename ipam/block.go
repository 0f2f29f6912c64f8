package ipam

import (
	"encoding/binary"
	"net/netip"
)

// Address arithmetic on IPv4 prefixes, blocks and ranges.

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func fromU32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// size is the number of addresses of p.
func size(p netip.Prefix) int { return 1 << (32 - p.Bits()) }

// start and end are the first and last address of p, as integers.
func start(p netip.Prefix) uint32 { return u32(p.Masked().Addr()) }
func end(p netip.Prefix) uint32   { return start(p) + uint32(size(p)) - 1 }

func lastAddr(p netip.Prefix) netip.Addr { return fromU32(end(p)) }

// gatewayOf is the pool's gateway: its first address after the network
// address, the same on every host.
func gatewayOf(pool netip.Prefix) netip.Addr { return fromU32(start(pool) + 1) }

// reserved reports whether a is never handed to a container in pool: the
// network address, the gateway and the broadcast address.
func reserved(pool netip.Prefix, a netip.Addr) bool {
	v := u32(a)
	return v == start(pool) || v == start(pool)+1 || v == end(pool)
}

// blockOf is the block of pool, blocks of bits, that holds a.
func blockOf(a netip.Addr, bits int) netip.Prefix {
	return netip.PrefixFrom(a, bits).Masked()
}

// blocks lists the blocks of pool, in order.
func blocks(pool netip.Prefix, bits int) []netip.Prefix {
	n := 1 << (bits - pool.Bits())
	step := uint32(1) << (32 - bits)
	out := make([]netip.Prefix, n)
	for i := range n {
		out[i] = netip.PrefixFrom(fromU32(start(pool)+uint32(i)*step), bits)
	}
	return out
}

// offset is a's index in block b.
func offset(b netip.Prefix, a netip.Addr) int { return int(u32(a) - start(b)) }

// at is the address at index i of block b.
func at(b netip.Prefix, i int) netip.Addr { return fromU32(start(b) + uint32(i)) }

// chunkOf is by how many addresses a window grows: a quarter of the
// block, at least 2.
func chunkOf(b netip.Prefix) int { return max(2, size(b)/4) }

// span is an inclusive range of addresses.
type span struct {
	From netip.Addr `json:"from"`
	To   netip.Addr `json:"to"`
}

func (s span) contains(a netip.Addr) bool { return u32(a) >= u32(s.From) && u32(a) <= u32(s.To) }

func (s span) overlaps(p netip.Prefix) bool {
	return u32(s.From) <= end(p) && u32(s.To) >= start(p)
}

// within clips s to p; ok is false when they do not overlap.
func (s span) within(p netip.Prefix) (span, bool) {
	if !s.overlaps(p) {
		return span{}, false
	}
	return span{From: fromU32(max(u32(s.From), start(p))), To: fromU32(min(u32(s.To), end(p)))}, true
}

// window is the range of the first limit addresses of block b.
func window(b netip.Prefix, limit int) (span, bool) {
	if limit <= 0 {
		return span{}, false
	}
	limit = min(limit, size(b))
	return span{From: at(b, 0), To: at(b, limit-1)}, true
}

// mergeSpans adds s to list, joining it with a span of the same start by
// keeping the larger end (the windows of one block as different hosts saw
// them).
func mergeSpans(list []span, s span) []span {
	for i := range list {
		if list[i].From == s.From {
			if u32(s.To) > u32(list[i].To) {
				list[i].To = s.To
			}
			return list
		}
	}
	return append(list, s)
}

// bitmap marks the used addresses of a block, one bit per address.
type bitmap []byte

func newBitmap(n int) bitmap { return make(bitmap, (n+7)/8) }

func (b bitmap) has(i int) bool {
	return i >= 0 && i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0
}

func (b bitmap) set(i int) {
	if i >= 0 && i/8 < len(b) {
		b[i/8] |= 1 << (i % 8)
	}
}

func (b bitmap) clear(i int) {
	if i >= 0 && i/8 < len(b) {
		b[i/8] &^= 1 << (i % 8)
	}
}

func (b bitmap) count() int {
	n := 0
	for _, c := range b {
		for ; c != 0; c &= c - 1 {
			n++
		}
	}
	return n
}

// highest is the largest index set, or -1.
func (b bitmap) highest() int {
	for i := len(b)*8 - 1; i >= 0; i-- {
		if b.has(i) {
			return i
		}
	}
	return -1
}
