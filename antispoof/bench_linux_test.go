package antispoof

import (
	"encoding/json"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkThroughput measures TCP throughput (iperf3, one stream, 2 s per
// iteration) between the containers of two hosts built as in the tests,
// with weft's real devices, without the table ("off") and with it on both
// hosts ("on"), side by side:
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
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			if on {
				syncs(b, a.table, Sources{Local: []Entry{a.local()}, Remote: []Entry{o.remote()}})
				syncs(b, o.table, Sources{Local: []Entry{o.local()}, Remote: []Entry{a.remote()}})
			} else {
				for _, tb := range []*Table{a.table, o.table} {
					if err := tb.Remove(); err != nil {
						b.Fatal(err)
					}
				}
			}
			var sum float64
			for i := 0; i < b.N; i++ {
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
				sum += r.End.SumReceived.BitsPerSecond
			}
			b.ReportMetric(sum/float64(b.N)/1e9, "Gbit/s")
			if on && (a.table.Dropped() != Dropped{} || o.table.Dropped() != Dropped{}) {
				b.Errorf("the filters dropped legitimate packets: %+v, %+v", a.table.Dropped(), o.table.Dropped())
			}
		})
	}
}
