package antispoof

import (
	"encoding/json"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkThroughput measures TCP throughput (iperf3, one stream, 2 s per
// run) between the containers of two hosts built as in the tests, with
// weft's real devices, without the table ("off") and with it on both hosts
// ("on"), one run of each per iteration:
//
//	go test -run '^$' -bench Throughput -benchtime 5x ./antispoof
func BenchmarkThroughput(b *testing.B) {
	needRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("the throughput benchmark needs iperf3")
	}
	a, o, _ := pair(b)
	srv := exec.Command("ip", "netns", "exec", o.ctr, "iperf3", "-s")
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	// The server is up once a client gets through.
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("ip", "netns", "exec", a.ctr, "iperf3", "-c", o.ip.String(), "-t", "1").Run() != nil {
		if time.Now().After(deadline) {
			b.Fatal("iperf3 server not reachable")
		}
		time.Sleep(100 * time.Millisecond)
	}
	filters := func(on bool) {
		if !on {
			for _, tb := range []*Table{a.table, o.table} {
				if err := tb.Remove(); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		syncs(b, a.table, Sources{Local: []Entry{a.local()}, Remote: []Entry{o.remote()}})
		syncs(b, o.table, Sources{Local: []Entry{o.local()}, Remote: []Entry{a.remote()}})
	}
	gbits := func() float64 {
		out, err := exec.Command("ip", "netns", "exec", a.ctr, "iperf3", "-c", o.ip.String(), "-t", "2", "-J").Output()
		if err != nil {
			b.Fatalf("iperf3: %v", err)
		}
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			b.Fatal(err)
		}
		return r.End.SumReceived.BitsPerSecond / 1e9
	}
	// Each iteration measures both, off then on, so that the load of a
	// shared machine weighs on the two alike.
	var off, on float64
	for i := 0; i < b.N; i++ {
		filters(false)
		off += gbits()
		filters(true)
		on += gbits()
	}
	b.ReportMetric(off/float64(b.N), "off-Gbit/s")
	b.ReportMetric(on/float64(b.N), "on-Gbit/s")
	if d := a.table.Dropped(); d != (Dropped{}) {
		b.Errorf("the filters dropped legitimate packets: %+v", d)
	}
}
