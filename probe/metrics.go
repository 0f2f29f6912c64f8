package probe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The probe's metrics, read from Peers at each scrape (the Prober is a
// prometheus.Collector): one series per peer, labelled with its mesh name
// and VTEP.
var (
	descRunning = prometheus.NewDesc("weft_probe_running",
		"1 when this host's data-path probe port is open, else 0.", nil, nil)
	descTarget = prometheus.NewDesc("weft_probe_target_packet_bytes",
		"Size the probe checks the paths carry: the underlay path MTU less VXLAN's overhead (the networks' MTU).", nil, nil)
	peerLabels     = []string{"peer", "vtep"}
	descReachable  = prometheus.NewDesc("weft_probe_reachable", "1 when the peer tells back the data-path probe's messages through VXLAN, 0 when its last ones were not (absent until known).", peerLabels, nil)
	descUnanswered = prometheus.NewDesc("weft_probe_unanswered_seconds", "Seconds since the first data-path probe message to the peer that is still not told back; 0 while it answers.", peerLabels, nil)
	descRTT        = prometheus.NewDesc("weft_probe_rtt_seconds", "Round-trip time of the data-path probe to the peer, smoothed.", peerLabels, nil)
	descLargest    = prometheus.NewDesc("weft_probe_largest_packet_bytes", "Largest packet (IP length) the path to the peer carries, up to the target size, as last measured.", peerLabels, nil)
	descSent       = prometheus.NewDesc("weft_probe_sent_total", "Data-path probe messages sent to the peer.", peerLabels, nil)
	descAnswered   = prometheus.NewDesc("weft_probe_answered_total", "Data-path probe messages the peer told back (answered).", peerLabels, nil)
)

var _ prometheus.Collector = (*Prober)(nil)

// Describe implements prometheus.Collector.
func (p *Prober) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descTarget, descReachable, descUnanswered, descRTT, descLargest, descSent, descAnswered} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Prober) Collect(ch chan<- prometheus.Metric) {
	running, _ := p.Running()
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, b2f(running))
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target > 0 {
		ch <- prometheus.MustNewConstMetric(descTarget, prometheus.GaugeValue, float64(target))
	}
	now := time.Now()
	for _, st := range p.Peers() {
		lv := []string{st.Name, st.VTEP.String()}
		if st.State != StateWaiting {
			ch <- prometheus.MustNewConstMetric(descReachable, prometheus.GaugeValue, b2f(st.State == StateOK), lv...)
		}
		unanswered := 0.0
		if st.State == StateUnreachable {
			unanswered = now.Sub(st.Since).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descUnanswered, prometheus.GaugeValue, unanswered, lv...)
		if st.RTT > 0 {
			ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, st.RTT.Seconds(), lv...)
		}
		if st.Largest > 0 {
			ch <- prometheus.MustNewConstMetric(descLargest, prometheus.GaugeValue, float64(st.Largest), lv...)
		}
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(st.Sent), lv...)
		ch <- prometheus.MustNewConstMetric(descAnswered, prometheus.CounterValue, float64(st.Answered), lv...)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
