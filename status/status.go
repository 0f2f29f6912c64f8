// Package status serves a host's view of weft as JSON on a loopback HTTP
// port, and renders that view for `weft status`.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/engine"
	"github.com/weftnet/weft/mesh"
)

// Report is one host's view of weft.
type Report struct {
	Node     string    `json:"node"`
	VTEP     string    `json:"vtep"`
	Version  string    `json:"version"`
	Scope    string    `json:"scope"`
	Members  []Member  `json:"members"`
	Networks []Network `json:"networks"`

	// Problems are what this host finds wrong (Problems), worst first.
	Problems []string `json:"problems,omitempty"`
	// VXLANPort and MeshPort are the ports the hosts must reach each other
	// on, named in the problems.
	VXLANPort int `json:"vxlan_port,omitempty"`
	MeshPort  int `json:"mesh_port,omitempty"`
	// Probe is the data-path probe's view; nil from builds without one.
	Probe *Probe `json:"probe,omitempty"`
	// Repairs is the drift the periodic repair fixed in the last hour.
	Repairs Repairs `json:"repairs_last_hour"`
	// Links are the encrypted links (WireGuard peers) of this host.
	Links []Link `json:"encrypted_links,omitempty"`
}

// Member is one member of the mesh.
type Member struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// State is the mesh's: alive, suspect, down (its weft stopped, its
	// host still answers: rendered "plugin down"), dead or left.
	State string `json:"state"`
	// Version is the member's weft version; empty for a build older than
	// 0.2.0, which does not announce it (Render says "older build").
	Version string `json:"version,omitempty"`
}

// StateText is how a member state reads for people.
func StateText(state string) string {
	if state == mesh.StateDown {
		return "plugin down"
	}
	return state
}

// olderBuild is how Render names the version of a member that announces
// none.
const olderBuild = "older build"

// Network is one weft network on this host.
type Network struct {
	ID     string     `json:"id"`
	VNI    uint32     `json:"vni"`
	Subnet string     `json:"subnet"`
	MTU    int        `json:"mtu"`
	Local  []Endpoint `json:"local"`
	Remote []Endpoint `json:"remote"`
}

// Endpoint is one endpoint of a network.
type Endpoint struct {
	ID        string   `json:"id"`
	IP        string   `json:"ip"`
	MAC       string   `json:"mac"`
	Interface string   `json:"interface,omitempty"`
	Host      string   `json:"host,omitempty"`
	VTEP      string   `json:"vtep,omitempty"`
	Names     []string `json:"names,omitempty"`
	// Down: its host's weft is down; the endpoint is kept meanwhile.
	Down bool `json:"down,omitempty"`
}

// Handler serves the report that get returns at /status, to requests
// addressed to this listener by IP address or as localhost only: a page a
// browser loaded from elsewhere, whose name an attacker rebound to the
// loopback address, sends its own name in Host and is refused (DNS
// rebinding). Mount further endpoints (metrics) on the returned mux.
func Handler(get func() Report) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(get())
	})
	return mux
}

// LocalOnly refuses requests whose Host is a name other than localhost.
func LocalOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && host != "localhost" {
			http.Error(w, "weft: the status endpoint answers requests for its address, not for "+r.Host, http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Fetch reads the report of the plugin listening on addr.
func Fetch(ctx context.Context, addr string) (Report, error) {
	var rep Report
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return rep, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rep, fmt.Errorf("no weft plugin answers on %s (is it enabled on this host?): %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("weft status on %s: %s", addr, resp.Status)
	}
	var doc struct {
		Report
		// Peers are the members in the report of a plugin older than
		// 0.2.0, met on a host not yet upgraded during a roll.
		Peers []Member `json:"peers"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&doc); err != nil {
		return rep, fmt.Errorf("weft status on %s: %w", addr, err)
	}
	rep = doc.Report
	if rep.Members == nil {
		rep.Members = doc.Peers
	}
	return rep, nil
}

// Render writes the report for people.
func Render(w io.Writer, r Report) error {
	renderHealth(w, r)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node %s  vtep %s  scope %s  version %s\n\n", r.Node, r.VTEP, r.Scope, r.Version)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tVERSION")
	members := append([]Member(nil), r.Members...)
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	for _, m := range members {
		v := m.Version
		if v == "" {
			v = olderBuild
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Addr, StateText(m.State), v)
	}
	renderProbe(tw, r)
	renderLinks(tw, r)
	for _, n := range r.Networks {
		fmt.Fprintf(tw, "\nNETWORK %s  vni %d  subnet %s  mtu %d\n", engine.ShortID(n.ID), n.VNI, n.Subnet, n.MTU)
		fmt.Fprintln(tw, "ENDPOINT\tIP\tMAC\tWHERE\tNAMES")
		for _, e := range n.Local {
			fmt.Fprintf(tw, "%s\t%s\t%s\tlocal %s\t%s\n", engine.ShortID(e.ID), e.IP, e.MAC, e.Interface, strings.Join(e.Names, ","))
		}
		for _, e := range n.Remote {
			where := strings.TrimSpace(e.Host + " " + e.VTEP)
			if e.Down {
				where += " (plugin down)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", engine.ShortID(e.ID), e.IP, e.MAC, where, strings.Join(e.Names, ","))
		}
	}
	return tw.Flush()
}
