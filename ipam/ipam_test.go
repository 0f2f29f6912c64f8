package ipam

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
)

func TestAllocateReleasePersist(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.RequestPool(&ipam.RequestPoolRequest{Pool: "10.40.0.0/29"})
	if err != nil || p.Pool != "10.40.0.0/29" {
		t.Fatalf("RequestPool = %+v, %v", p, err)
	}
	gw, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID, Options: map[string]string{requestAddressType: gatewayType}})
	if err != nil || gw.Address != "10.40.0.1/29" {
		t.Fatalf("gateway = %+v, %v", gw, err)
	}
	var got []string
	for {
		r, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID})
		if err != nil {
			break
		}
		got = append(got, r.Address)
	}
	if len(got) != 5 || got[0] != "10.40.0.2/29" || got[4] != "10.40.0.6/29" {
		t.Fatalf("addresses = %v", got)
	}
	if _, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID, Address: "10.40.0.3"}); err == nil {
		t.Fatal("an address in use was handed out again")
	}
	if err := a.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: p.PoolID, Address: "10.40.0.3"}); err != nil {
		t.Fatal(err)
	}
	// A restarted allocator remembers what is used.
	b, _ := New(Config{StateDir: dir})
	r, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID})
	if err != nil || r.Address != "10.40.0.3/29" {
		t.Fatalf("after restart = %+v, %v", r, err)
	}
	for name, req := range map[string]*ipam.RequestPoolRequest{
		"overlap": {Pool: "10.40.0.0/16"}, "v6 tiny": {Pool: "fd00::/96", V6: true}, "empty": {},
		"bad": {Pool: "10.40.0.0"}, "tiny": {Pool: "10.50.0.0/31"}, "subpool": {Pool: "10.60.0.0/24", SubPool: "10.60.0.0/25"},
	} {
		if _, err := b.RequestPool(req); err == nil {
			t.Errorf("%s: RequestPool succeeded", name)
		}
	}
	if _, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: "nope"}); err == nil {
		t.Fatal("unknown pool accepted")
	}
	if _, err := b.RequestAddress(&ipam.RequestAddressRequest{PoolID: p.PoolID, Address: "10.40.0.7"}); err == nil {
		t.Fatal("broadcast address handed out")
	}
}

// The single-host allocator's ipam.json (a map of pools) is read as pools
// with nothing claimed.
func TestLoadsSingleHostState(t *testing.T) {
	dir := t.TempDir()
	old := `{"10.40.0.0/24":{"prefix":"10.40.0.0/24","refs":1,"used":{"10.40.0.1":true}}}`
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.RequestAddress(&ipam.RequestAddressRequest{PoolID: "10.40.0.0/24"})
	if err != nil || !strings.HasPrefix(r.Address, "10.40.0.") {
		t.Fatalf("after the old state: %v, %v", r, err)
	}
	// A corrupt file is set aside, not lost.
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile+".corrupt")); err != nil {
		t.Fatalf("corrupt state not kept aside: %v", err)
	}
}
