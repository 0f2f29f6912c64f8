package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/plugin"
)

const keyUsage = `usage: weft key [--state DIR] COMMAND
  generate                  print a new random cluster key
  list                      list this host's keys (fingerprints, primary first)
  rotate                    swarm mode, on a manager: make a new key now; it
                            reaches every member and replaces the old one
  install [--key-file F]    local mode: add a key to this host's keyring
  use [--key-file F]        local mode: send with that key (install it on every host first)
  remove [--key-file F]     local mode: drop that key (after every host uses the new one)
install, use and remove read the key from standard input, or from the file
given: never from the command line, where it would show in the process
list and the shell's history.
In swarm mode the swarm's managers hand out and rotate the key; nothing is
set by hand. In local mode, rotate without downtime: install the new key on
every host, then use it on every host, then remove the old one everywhere.
`

func runKey(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
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
	ctx := context.Background()
	switch cmd := rest[0]; cmd {
	case "generate":
		k, err := mesh.GenerateKey()
		if err != nil {
			fmt.Fprintln(stderr, "weft key:", err)
			return 1
		}
		fmt.Fprintln(stdout, k)
		return 0
	case "list", "rotate":
		if len(rest) != 1 {
			fmt.Fprintf(stderr, "weft key %s takes no argument\n", cmd)
			return 2
		}
		op := ""
		if cmd == "rotate" {
			op = "rotate"
		}
		return keyOp(ctx, *state, op, "", stdout, stderr)
	case "install", "use", "remove":
		sub := flag.NewFlagSet("weft key "+cmd, flag.ContinueOnError)
		sub.SetOutput(stderr)
		file := sub.String("key-file", "", "read the key from this file instead of standard input")
		sub.Usage = func() { fmt.Fprint(stderr, keyUsage) }
		if err := sub.Parse(rest[1:]); err != nil {
			return 2
		}
		if sub.NArg() > 0 {
			fmt.Fprintf(stderr, "weft key %s reads the key from standard input or --key-file, never from the command line (it would show in the process list and the shell's history)\n", cmd)
			return 2
		}
		key, err := readKey(stdin, *file)
		if err != nil {
			fmt.Fprintln(stderr, "weft key:", err)
			return 1
		}
		return keyOp(ctx, *state, cmd, key, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "weft key: unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
}

// readKey reads one key: the first line of file, or of stdin.
func readKey(stdin io.Reader, file string) (string, error) {
	r := stdin
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	} else if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return "", errors.New("pipe the key to standard input (weft key install < mesh.key) or give --key-file")
		}
	}
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	key := strings.TrimSpace(line)
	if key == "" {
		return "", errors.New("no key read")
	}
	if _, err := mesh.ParseKey(key); err != nil {
		return "", err
	}
	return key, nil
}

func keyOp(ctx context.Context, state, op, key string, stdout, stderr io.Writer) int {
	keys, managed, err := plugin.KeyCommand(ctx, state, op, key)
	if err != nil {
		fmt.Fprintln(stderr, "weft key:", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		role := ""
		if k.Primary {
			role = "primary"
		}
		gen := "-"
		if k.Gen > 0 {
			gen = fmt.Sprintf("%d/%s", k.Gen, k.Origin)
		}
		created := "-"
		if !k.Created.IsZero() {
			created = k.Created.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Fingerprint, role, gen, created)
	}
	_ = tw.Flush()
	if managed && op == "" {
		fmt.Fprintln(stderr, "(managed by the swarm's key service)")
	}
	return 0
}
