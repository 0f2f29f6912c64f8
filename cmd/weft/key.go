package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/plugin"
)

const keyUsage = `usage: weft key [--state DIR] COMMAND
  generate        print a new random cluster key
  list            list the keys of this host's plugin (fingerprints, primary first)
  install KEY     add KEY to this host's keyring
  use KEY         make KEY the primary (install it on every host first)
  remove KEY      remove KEY (after every host uses the new primary)
Rotation without downtime: install the new key on every host, then use it on
every host, then remove the old one on every host.
`

func runKey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("weft key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	state := fs.String("state", "/var/lib/weft", "the plugin's state directory on this host (the state mount's source)")
	fs.Usage = func() { fmt.Fprint(stderr, keyUsage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	switch cmd := rest[0]; cmd {
	case "generate":
		k, err := mesh.GenerateKey()
		if err != nil {
			fmt.Fprintln(stderr, "weft key:", err)
			return 1
		}
		fmt.Fprintln(stdout, k)
		return 0
	case "list", "install", "use", "remove":
		op, key := "", ""
		if cmd != "list" {
			if len(rest) != 2 {
				fmt.Fprintf(stderr, "weft key %s needs the key\n", cmd)
				return 2
			}
			op, key = cmd, rest[1]
		}
		keys, err := plugin.KeyCommand(context.Background(), *state, op, key)
		if err != nil {
			fmt.Fprintln(stderr, "weft key:", err)
			return 1
		}
		fmt.Fprintln(stdout, strings.Join(keys, "\n"))
		return 0
	default:
		fmt.Fprintf(stderr, "weft key: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
}
