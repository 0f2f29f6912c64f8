package main

import (
	"fmt"
	"io"
)

func status(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "weft status: not available yet")
	return 1
}
