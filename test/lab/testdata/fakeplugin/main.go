// Command fakeplugin is a do-nothing libnetwork remote driver, used by the
// lab's own test to check plugin installation and binary images. With
// -version it prints a line and exits.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

func main() {
	version := flag.Bool("version", false, "print the version and exit")
	socket := flag.String("socket", "/run/docker/plugins/weft.sock", "socket to serve on")
	flag.Parse()
	if *version {
		fmt.Println("fakeplugin 1")
		return
	}
	// The state mount must be writable: record that we ran.
	if err := os.WriteFile("/var/lib/weft/started", []byte("ok\n"), 0o644); err != nil {
		log.Printf("write state: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(*socket), 0o755); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*socket)
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatal(err)
	}
	reply := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			log.Printf("fakeplugin: %s", r.URL.Path)
			w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
			_ = json.NewEncoder(w).Encode(v)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", reply(map[string]any{"Implements": []string{"NetworkDriver"}}))
	mux.HandleFunc("/NetworkDriver.GetCapabilities", reply(map[string]any{"Scope": "local", "ConnectivityScope": "local"}))
	mux.HandleFunc("/", reply(map[string]any{}))
	log.Fatal(http.Serve(ln, mux))
}
