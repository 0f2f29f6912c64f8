package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/weftnet/weft/plugin"
)

const tunnelUsage = `usage: weft tunnel [--state DIR] rotate
  rotate    replace this host's WireGuard key (encrypted networks) now, as
            WEFT_WG_ROTATION does on its own: a second interface takes the
            new key, the peers learn it through the mesh, and traffic moves
            over with nothing lost; the old interface closes after
`

func runTunnel(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("weft tunnel", flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", "/var/lib/weft", "the plugin's state directory on this host (the state mount's source)")
	fs.Usage = func() { fmt.Fprint(stderr, tunnelUsage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || fs.Arg(0) != "rotate" {
		fs.Usage()
		return 2
	}
	key, err := plugin.TunnelRotate(context.Background(), *state)
	if err != nil {
		fmt.Fprintln(stderr, "weft tunnel:", err)
		return 1
	}
	fmt.Fprintln(stdout, "key rotation begun; new public key", key)
	return 0
}
