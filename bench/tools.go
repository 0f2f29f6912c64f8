package bench

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// The tools below run inside the lab's containers and host namespaces: the
// static weftbench binary is bind-mounted into the containers at /wb, so
// one binary is both the harness and its load generators. Every loop is
// bounded by a duration and a count.

// RRResult is what RRClient measured: TCP request/response transactions
// (a small request, an equal reply, one at a time over one connection, as
// netperf's TCP_RR does).
type RRResult struct {
	Transactions int     `json:"transactions"`
	Seconds      float64 `json:"seconds"`
	Rate         float64 `json:"rate"` // transactions per second
	P50us        float64 `json:"p50_us"`
	P99us        float64 `json:"p99_us"`
}

// rrSize is the request and reply size in bytes.
const rrSize = 64

// RRServer echoes rrSize-byte messages on addr until it is killed.
func RRServer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			buf := make([]byte, rrSize)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

// RRClient runs transactions against an RRServer at addr for d (at most
// maxTrans of them) and reports their rate and latency.
func RRClient(addr string, d time.Duration, maxTrans int) (RRResult, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return RRResult{}, err
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	buf := make([]byte, rrSize)
	lat := make([]time.Duration, 0, 1<<16)
	// A short warm-up, not counted.
	for range 200 {
		if _, err := c.Write(buf); err != nil {
			return RRResult{}, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return RRResult{}, err
		}
	}
	start := time.Now()
	end := start.Add(d)
	_ = c.SetDeadline(end.Add(5 * time.Second))
	for len(lat) < maxTrans {
		t := time.Now()
		if !t.Before(end) {
			break
		}
		if _, err := c.Write(buf); err != nil {
			return RRResult{}, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return RRResult{}, err
		}
		lat = append(lat, time.Since(t))
	}
	secs := time.Since(start).Seconds()
	us := make([]float64, len(lat))
	for i, l := range lat {
		us[i] = float64(l.Nanoseconds()) / 1e3
	}
	return RRResult{
		Transactions: len(lat),
		Seconds:      secs,
		Rate:         float64(len(lat)) / secs,
		P50us:        finite(Percentile(us, 50)),
		P99us:        finite(Percentile(us, 99)),
	}, nil
}

// Reach prints "ready", then tries to open a TCP connection to addr every
// interval (each try bounded by interval) until one succeeds or timeout
// passes, and prints the wall-clock time of the success in Unix
// nanoseconds. The harness reads that time against its own clock: the lab
// runs on one machine, so both clocks are the same.
func Reach(addr string, interval, timeout time.Duration, out io.Writer) error {
	fmt.Fprintln(out, "ready")
	if f, ok := out.(*os.File); ok {
		_ = f.Sync()
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		t := time.Now()
		c, err := net.DialTimeout("tcp", addr, interval)
		if err == nil {
			at := time.Now()
			c.Close()
			fmt.Fprintf(out, "reached %d\n", at.UnixNano())
			return nil
		}
		last = err
		if rest := interval - time.Since(t); rest > 0 {
			time.Sleep(rest)
		}
	}
	return fmt.Errorf("%s not reached within %s: %v", addr, timeout, last)
}

// DNSResult is what DNSLoad measured.
type DNSResult struct {
	Clients  int     `json:"clients"`
	Queries  int     `json:"queries"`
	Answered int     `json:"answered"` // NOERROR with at least one answer
	Failed   int     `json:"failed"`   // timeouts, errors, other rcodes
	Seconds  float64 `json:"seconds"`
	QPS      float64 `json:"qps"` // answered queries per second
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

// DNSLoad sends A queries for name to server ("ip:port") from clients
// concurrent clients, each with its own UDP socket and one query in
// flight, for d (at most maxQueries queries in all).
func DNSLoad(server, name string, clients int, d time.Duration, maxQueries int) (DNSResult, error) {
	q, err := dnsQuery(name)
	if err != nil {
		return DNSResult{}, err
	}
	// One check query first, so a name that does not resolve is an error,
	// not a table of fast failures.
	if err := dnsCheck(server, q); err != nil {
		return DNSResult{}, fmt.Errorf("query %s at %s: %w", name, server, err)
	}
	type clientOut struct {
		lat      []float64
		answered int
		failed   int
	}
	outs := make([]clientOut, clients)
	per := maxQueries / clients
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[i]
			c, err := net.Dial("udp", server)
			if err != nil {
				o.failed++
				return
			}
			defer c.Close()
			msg := slices.Clone(q)
			resp := make([]byte, 1500)
			for n := 0; n < per; n++ {
				t := time.Now()
				if !t.Before(end) {
					return
				}
				id := uint16(rand.Uint32())
				binary.BigEndian.PutUint16(msg, id)
				if _, err := c.Write(msg); err != nil {
					o.failed++
					continue
				}
				_ = c.SetReadDeadline(t.Add(time.Second))
				ok := false
				for {
					k, err := c.Read(resp)
					if err != nil {
						break
					}
					if k >= 12 && binary.BigEndian.Uint16(resp) == id {
						ok = resp[3]&0x0f == 0 && binary.BigEndian.Uint16(resp[6:]) > 0
						break
					}
					// A late answer to an earlier query: read on.
				}
				if ok {
					o.answered++
					o.lat = append(o.lat, float64(time.Since(t).Nanoseconds())/1e6)
				} else {
					o.failed++
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	r := DNSResult{Clients: clients, Seconds: secs}
	var lat []float64
	for _, o := range outs {
		r.Answered += o.answered
		r.Failed += o.failed
		lat = append(lat, o.lat...)
	}
	r.Queries = r.Answered + r.Failed
	r.QPS = float64(r.Answered) / secs
	r.P50ms = finite(Percentile(lat, 50))
	r.P99ms = finite(Percentile(lat, 99))
	return r, nil
}

// dnsQuery builds a recursive A query for name (ID left zero).
func dnsQuery(name string) ([]byte, error) {
	b := []byte{0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if name == "" {
		return nil, errors.New("empty DNS name")
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			l := i - start
			if l == 0 || l > 63 {
				return nil, fmt.Errorf("bad DNS name %q", name)
			}
			b = append(b, byte(l))
			b = append(b, name[start:i]...)
			start = i + 1
		}
	}
	return append(b, 0, 0, 1, 0, 1), nil
}

// dnsCheck sends one query and wants an answer.
func dnsCheck(server string, q []byte) error {
	c, err := net.DialTimeout("udp", server, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := slices.Clone(q)
	binary.BigEndian.PutUint16(msg, 0x5eed)
	resp := make([]byte, 1500)
	for try := 0; try < 3; try++ {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := c.Read(resp)
		if err != nil {
			continue
		}
		if k < 12 || binary.BigEndian.Uint16(resp) != 0x5eed {
			continue
		}
		if rc := resp[3] & 0x0f; rc != 0 {
			return fmt.Errorf("rcode %d", rc)
		}
		if binary.BigEndian.Uint16(resp[6:]) == 0 {
			return errors.New("no answer")
		}
		return nil
	}
	return errors.New("no reply")
}

// finite maps NaN (no sample) to 0, which JSON can carry.
func finite(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return x
}

// PrintJSON writes v as one line of JSON.
func PrintJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// ConnResult is what ConnRate measured.
type ConnResult struct {
	Connections int     `json:"connections"` // completed
	Failed      int     `json:"failed"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"` // completed connections per second
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
}

// ConnRate opens TCP connections to addrs (taken in turn; names are
// resolved once, before the clock starts) from workers concurrent
// workers for d (at most maxConns in all): each connection sends one
// rrSize-byte request to an RRServer, reads the reply, and is closed with
// a reset, so that neither the client's ports nor conntrack's entries
// pile up in TIME_WAIT.
func ConnRate(addrs []string, d time.Duration, workers, maxConns int) (ConnResult, error) {
	var targets []*net.TCPAddr
	for _, a := range addrs {
		ta, err := net.ResolveTCPAddr("tcp", a)
		if err != nil {
			return ConnResult{}, err
		}
		targets = append(targets, ta)
	}
	if len(targets) == 0 || workers < 1 {
		return ConnResult{}, errors.New("connrate needs addresses and at least one worker")
	}
	var mu sync.Mutex
	var lat []time.Duration
	failed := 0
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, rrSize)
			var mine []time.Duration
			bad := 0
			for i := w; time.Now().Before(end); i++ {
				mu.Lock()
				full := len(lat)+len(mine) >= maxConns
				mu.Unlock()
				if full {
					break
				}
				t := time.Now()
				if err := oneConn(targets[i%len(targets)], buf); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			failed += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	us := make([]float64, len(lat))
	for i, l := range lat {
		us[i] = float64(l.Nanoseconds()) / 1e3
	}
	return ConnResult{
		Connections: len(lat), Failed: failed, Seconds: secs, Rate: float64(len(lat)) / secs,
		P50us: finite(Percentile(us, 50)), P99us: finite(Percentile(us, 99)),
	}, nil
}

// oneConn makes one connection of ConnRate.
func oneConn(addr *net.TCPAddr, buf []byte) error {
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetLinger(0)
	_ = c.SetNoDelay(true)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err = io.ReadFull(c, buf)
	return err
}
