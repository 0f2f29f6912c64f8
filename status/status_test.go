package status

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftnet/weft/mesh"
)

func TestServeFetchRender(t *testing.T) {
	want := Report{Node: "h1", VTEP: "198.18.0.1", Scope: "global", Members: []Member{
		{Name: "h2", Addr: "198.18.0.2", State: "alive", Version: "v9"},
		{Name: "h3", Addr: "198.18.0.3", State: mesh.StateDown, Version: "v9"},
		{Name: "h4", Addr: "198.18.0.4", State: "alive"}},
		Networks: []Network{{ID: "0123456789abcdef", VNI: 4242, Subnet: "10.1.0.0/24", MTU: 1450,
			Local: []Endpoint{{ID: "e1", IP: "10.1.0.2", MAC: "02:77:0a:01:00:02", Interface: "wve1"}},
			Remote: []Endpoint{{ID: "e2", IP: "10.1.0.3", MAC: "02:77:0a:01:00:03", Host: "h2", VTEP: "198.18.0.2"},
				{ID: "e3", IP: "10.1.0.4", MAC: "02:77:0a:01:00:04", Host: "h3", VTEP: "198.18.0.3", Down: true}}}}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(func() Report { return want })}
	go srv.Serve(l)
	defer srv.Close()
	got, err := Fetch(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != "h1" || len(got.Networks) != 1 || got.Networks[0].Remote[0].VTEP != "198.18.0.2" {
		t.Fatalf("Fetch = %+v", got)
	}
	var b bytes.Buffer
	if err := Render(&b, got); err != nil {
		t.Fatal(err)
	}
	if got.Members[1].State != "down" || !got.Networks[0].Remote[1].Down {
		t.Fatalf("the down member or its endpoint lost its mark: %+v", got)
	}
	for _, s := range []string{"NETWORK 0123456789ab", "vni 4242", "10.1.0.3", "h2 198.18.0.2", "local wve1", "h2      198.18.0.2  alive        v9",
		"h3      198.18.0.3  plugin down  v9", "h3 198.18.0.3 (plugin down)", "h4      198.18.0.4  alive        older build"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("rendered status lacks %q:\n%s", s, b.String())
		}
	}
	if _, err := Fetch(context.Background(), "127.0.0.1:1"); err == nil {
		t.Fatal("Fetch from a closed port succeeded")
	}
}

// A page whose name was rebound to the loopback address sends its own name
// as Host: refused. Requests by address or as localhost pass.
func TestLocalOnly(t *testing.T) {
	h := LocalOnly(Handler(func() Report { return Report{Node: "h1"} }))
	for host, want := range map[string]int{
		"127.0.0.1:7951": http.StatusOK, "localhost:7951": http.StatusOK, "[::1]:7951": http.StatusOK,
		"198.18.0.1": http.StatusOK, "evil.example:7951": http.StatusForbidden, "evil.example": http.StatusForbidden,
	} {
		req := httptest.NewRequest(http.MethodGet, "/status", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %s: %d, want %d", host, rec.Code, want)
		}
	}
}

// TestFetchOlderReport: the report of a plugin older than 0.2.0 names its
// members "peers"; Fetch reads them as members, without a version.
func TestFetchOlderReport(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := `{"node":"h1-1a2b3c4d","vtep":"198.18.0.1","version":"0.1.0","scope":"global",` +
		`"peers":[{"name":"h2-5e6f7a8b","addr":"198.18.0.2:7950","state":"alive"}],"networks":[]}`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(old)) })}
	go srv.Serve(l)
	defer srv.Close()
	got, err := Fetch(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "0.1.0" || len(got.Members) != 1 || got.Members[0].Name != "h2-5e6f7a8b" || got.Members[0].State != "alive" || got.Members[0].Version != "" {
		t.Fatalf("Fetch of a 0.1.0 report = %+v", got)
	}
}
