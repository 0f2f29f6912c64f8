package plugin

import (
	"net"
	"testing"

	"github.com/weftnet/weft/catalog"
	"github.com/weftnet/weft/dataplane"
	"github.com/weftnet/weft/driver"
	"github.com/weftnet/weft/mesh"
	"github.com/weftnet/weft/mesh/meshtest"
)

// nopPlane accepts every kernel write without doing it.
type nopPlane struct{}

func (nopPlane) EnsureSegment(dataplane.Segment) error                  { return nil }
func (nopPlane) DeleteSegment(uint32) error                             { return nil }
func (nopPlane) Segments() ([]uint32, error)                            { return nil, nil }
func (nopPlane) CreateInterface(uint32, string, net.HardwareAddr) error { return nil }
func (nopPlane) DeleteInterface(string) error                           { return nil }
func (nopPlane) SetRemote(uint32, dataplane.RemoteEndpoint) error       { return nil }
func (nopPlane) DeleteRemote(uint32, dataplane.RemoteEndpoint) error    { return nil }
func (nopPlane) SetRemotes(uint32, []dataplane.RemoteEndpoint) (dataplane.Repair, error) {
	return dataplane.Repair{}, nil
}
func (nopPlane) Remotes(uint32) ([]dataplane.RemoteEndpoint, error) { return nil, nil }
func (nopPlane) AddFlood(uint32, net.IP) error                      { return nil }
func (nopPlane) DeleteFlood(uint32, net.IP) error                   { return nil }
func (nopPlane) SetFlood(uint32, []net.IP) (dataplane.FloodRepair, error) {
	return dataplane.FloodRepair{}, nil
}
func (nopPlane) Flood(uint32) ([]net.IP, error) { return nil, nil }

// newDriver returns a driver over no kernel, with a real catalog on a
// mesh that is not on any network.
func newDriver(t testing.TB) *driver.Driver {
	t.Helper()
	m, err := mesh.New(meshtest.Config("h1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	d, err := driver.New(driver.DefaultConfig(), nopPlane{}, catalog.New(catalog.Config{Store: m}), nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
