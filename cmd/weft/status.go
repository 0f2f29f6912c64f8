package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/weftnet/weft/status"
)

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("weft status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the raw JSON report")
	addr := fs.String("addr", "127.0.0.1:7951", "the plugin's status address (WEFT_STATUS_ADDR)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rep, err := status.Fetch(context.Background(), *addr)
	if err != nil {
		fmt.Fprintln(stderr, "weft status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return 1
		}
		return 0
	}
	if err := status.Render(stdout, rep); err != nil {
		return 1
	}
	return 0
}
