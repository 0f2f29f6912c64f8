package plugin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/ipam"
)

// panicDriver panics in Join, standing for any bug in a handler.
type panicDriver struct{ *driver.Driver }

func (panicDriver) Join(*network.JoinRequest) (*network.JoinResponse, error) { panic("boom") }

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	d := newDriver(t)
	a, _ := ipam.New(ipam.Config{})
	srv := httptest.NewServer(NewHandler(panicDriver{d}, a, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, srv *httptest.Server, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: response is not JSON: %v", path, err)
	}
	return resp.StatusCode, out
}

func TestActivateDeclaresBothDrivers(t *testing.T) {
	srv := newServer(t)
	code, out := post(t, srv, "/Plugin.Activate", "")
	impl, _ := out["Implements"].([]any)
	if code != 200 || len(impl) != 2 || impl[0] != "NetworkDriver" || impl[1] != "IpamDriver" {
		t.Fatalf("Activate = %d %v", code, out)
	}
	code, out = post(t, srv, "/NetworkDriver.GetCapabilities", "")
	if code != 200 || out["Scope"] != "global" || out["ConnectivityScope"] != "global" {
		t.Fatalf("GetCapabilities = %d %v", code, out)
	}
	code, out = post(t, srv, "/IpamDriver.GetDefaultAddressSpaces", "null")
	if code != 200 || out["GlobalDefaultAddressSpace"] != "weft" {
		t.Fatalf("GetDefaultAddressSpaces = %d %v", code, out)
	}
}

func TestBadRequestsGetOneSentence(t *testing.T) {
	srv := newServer(t)
	cases := []struct{ path, body, want string }{
		{"/NetworkDriver.CreateNetwork", "{not json", "malformed NetworkDriver.CreateNetwork request"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID": 5}`, "malformed"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{"com.docker.network.generic":{"bogus":"1"}},"IPv4Data":[{"Pool":"10.0.0.0/24"}]}`, `unknown option "bogus"`},
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"nope","EndpointID":"e","Interface":{"Address":"10.0.0.2/24"}}`, "not known on this host"},
		{"/NetworkDriver.Join", `{"NetworkID":"n","EndpointID":"e"}`, "internal error in NetworkDriver.Join"},
		{"/NetworkDriver.CreateNetwork", `{"NetworkID":"` + strings.Repeat("x", 2<<20) + `"}`, "larger than"},
		{"/IpamDriver.RequestPool", `{"Pool":""}`, "--subnet"},
		{"/NetworkDriver.Nonsense", `{}`, "does not implement"},
	}
	for _, c := range cases {
		code, out := post(t, srv, c.path, c.body)
		msg, _ := out["Err"].(string)
		if code == 200 || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s %.40q: got %d %q, want an error containing %q", c.path, c.body, code, msg, c.want)
		}
	}
	// The server still answers after all that.
	if code, _ := post(t, srv, "/NetworkDriver.GetCapabilities", ""); code != 200 {
		t.Fatalf("server broken after bad requests: %d", code)
	}
}

// FuzzRequests sends arbitrary bodies to every call of the plugin API: the
// answer is always one JSON object, never a panic or a dropped connection.
func FuzzRequests(f *testing.F) {
	paths := []string{
		"/NetworkDriver.CreateNetwork", "/NetworkDriver.AllocateNetwork", "/NetworkDriver.CreateEndpoint",
		"/NetworkDriver.Join", "/NetworkDriver.Leave", "/NetworkDriver.DeleteEndpoint", "/NetworkDriver.DeleteNetwork",
		"/NetworkDriver.EndpointOperInfo", "/IpamDriver.RequestPool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
	}
	f.Add(uint8(0), []byte(`{"NetworkID":"n1","Options":{"com.docker.network.generic":{"weft.vni":"42"}},"IPv4Data":[{"Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24"}]}`))
	f.Add(uint8(1), []byte(`{"NetworkID":"n1","Options":{"weft.vni":"x"},"IPv4Data":[{"Pool":"10.0.0.0/24"}]}`))
	f.Add(uint8(2), []byte(`{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.0.0.2/24"}}`))
	f.Add(uint8(3), []byte(`{"NetworkID":"n1","EndpointID":"e1"}`))
	f.Add(uint8(8), []byte(`{"Pool":"10.1.0.0/24"}`))
	f.Add(uint8(9), []byte(`{"PoolID":"10.1.0.0/24","Address":"10.1.0.9"}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		// A fresh plugin per input: failures reproduce from the input alone.
		d := newDriver(t)
		a, _ := ipam.New(ipam.Config{})
		h := NewHandler(d, a, slog.New(slog.DiscardHandler))
		path := paths[int(which)%len(paths)]
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(body))))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%s took %s", path, d)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s: answer is not a JSON object: %q", path, rec.Body.String())
		}
		if rec.Code != 200 {
			if msg, _ := out["Err"].(string); msg == "" {
				t.Fatalf("%s: error status %d without a message", path, rec.Code)
			}
		}
	})
}
