package status

import (
	"fmt"
	"io"
	"time"
)

// Link is one encrypted link of this host: a WireGuard peer of its
// tunnel, for the encrypted networks.
type Link struct {
	Peer   string `json:"peer"`
	VTEP   string `json:"vtep"`
	Tunnel string `json:"tunnel"`
	// Path is "kernel" or "userspace" (wireguard-go in the plugin).
	Path string `json:"path"`
	// HandshakeAgeSeconds is the time since the last handshake; -1: none
	// yet.
	HandshakeAgeSeconds float64 `json:"handshake_age_seconds"`
	RxBytes             int64   `json:"rx_bytes"`
	TxBytes             int64   `json:"tx_bytes"`
}

// renderLinks writes the encrypted links, if any.
func renderLinks(w io.Writer, r Report) {
	if len(r.Links) == 0 {
		return
	}
	fmt.Fprintln(w, "\nENCRYPTED LINK\tVTEP\tTUNNEL\tPATH\tHANDSHAKE\tRX/TX")
	for _, l := range r.Links {
		hs := "none yet"
		if l.HandshakeAgeSeconds >= 0 {
			hs = (time.Duration(l.HandshakeAgeSeconds * float64(time.Second))).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d\n", l.Peer, l.VTEP, l.Tunnel, l.Path, hs, l.RxBytes, l.TxBytes)
	}
}
