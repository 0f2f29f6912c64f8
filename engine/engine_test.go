package engine

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

func TestInfoOverUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/info" {
			w.WriteHeader(404)
			w.Write([]byte(`{"message":"page not found"}`))
			return
		}
		w.Write([]byte(`{"Name":"h1","Swarm":{"NodeID":"n1","NodeAddr":"198.18.0.1","LocalNodeState":"active","RemoteManagers":[{"NodeID":"n1","Addr":"198.18.0.1:2377"}]}}`))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := New(sock)
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "h1" || info.Swarm.NodeAddr != "198.18.0.1" || len(info.Swarm.RemoteManagers) != 1 || info.Swarm.RemoteManagers[0].Addr != "198.18.0.1:2377" {
		t.Fatalf("Info = %+v", info)
	}
	var v struct{}
	if err := c.get(context.Background(), "/nope", &v); err == nil {
		t.Fatal("404 not reported")
	}
	if _, err := New(filepath.Join(t.TempDir(), "absent.sock")).Info(context.Background()); err == nil {
		t.Fatal("absent socket not reported")
	}
}
