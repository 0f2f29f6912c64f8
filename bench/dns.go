package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// DNS: queries per second and latency from a container on h1, by
// weftbench's load tool (1, 8 and 32 clients, each with one query in
// flight), against:
//
//   - Docker's embedded DNS (127.0.0.11) on the overlay network, for the
//     name of a container on another host (its own names);
//   - Docker's embedded DNS on the weft network, for a container name on
//     that network, when it answers one at all;
//   - weft's DNS (Options.WeftDNS, by default the weft network's gateway
//     address, where it listens), for the name of a container on another
//     host, asked directly as a container started with --dns <gateway>
//     would have Docker's resolver forward it.

// dnsTarget is one server to load.
type dnsTarget struct {
	label  string
	ctr    string // the client container on h1
	server string // ip:port as the container sees it
	name   string
}

// dns runs the DNS part.
func (e *env) dns(ctx context.Context) ([]DNSRow, error) {
	o := e.o
	h1 := e.h(1)
	targets := []dnsTarget{
		{label: "Docker embedded DNS (overlay)", ctr: "cli-" + NetOverlay, server: "127.0.0.11:53", name: "srv-" + NetOverlay},
		{label: "Docker embedded DNS (weft network)", ctr: "cli-" + NetWeft, server: "127.0.0.11:53", name: "srv-" + NetWeft},
	}
	if o.WeftDNS != "" {
		server := o.WeftDNS
		if server == "gateway" {
			out, err := h1.Docker(ctx, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", weftNet)
			if err != nil {
				return nil, err
			}
			server = strings.TrimSpace(out)
		}
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(server, "53")
		}
		targets = append(targets, dnsTarget{label: "weft DNS", ctr: "cli-" + NetWeft, server: server, name: "srv-" + NetWeft})
	}
	var rows []DNSRow
	for _, t := range targets {
		// Does the server answer the name at all?
		if _, err := e.dnsLoad(ctx, t, 1, time.Second); err != nil {
			o.note(PartDNS, "DNS: %s does not answer %s: %v", t.label, t.name, err)
			continue
		}
		for _, clients := range o.DNSClients {
			row := DNSRow{Server: t.label, Name: t.name, Clients: clients}
			for rep := range o.Reps {
				r, err := e.dnsLoad(ctx, t, clients, o.DNSTime)
				if err != nil {
					o.note(PartDNS, "DNS %s, %d clients, rep %d: %v", t.label, clients, rep+1, err)
					continue
				}
				o.Logf("DNS %s %d clients rep %d/%d: %.0f q/s p50 %.2f ms p99 %.2f ms (%d failed)", t.label, clients, rep+1, o.Reps, r.QPS, r.P50ms, r.P99ms, r.Failed)
				row.Reps = append(row.Reps, r)
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func (e *env) dnsLoad(ctx context.Context, t dnsTarget, clients int, d time.Duration) (DNSResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	out, err := e.h(1).Docker(ctx, "exec", t.ctr, toolMount, "dnsload",
		"-server", t.server, "-name", t.name, "-clients", strconv.Itoa(clients), "-d", d.String())
	if err != nil {
		return DNSResult{}, err
	}
	var r DNSResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("dnsload output %q: %w", out, err)
	}
	return r, nil
}
