package plugin

import (
	"net"

	"github.com/weftnet/weft/dataplane"
)

// nopPlane accepts every kernel write without doing it.
type nopPlane struct{}

func (nopPlane) EnsureSegment(dataplane.Segment) error                  { return nil }
func (nopPlane) DeleteSegment(uint32) error                             { return nil }
func (nopPlane) CreateInterface(uint32, string, net.HardwareAddr) error { return nil }
func (nopPlane) DeleteInterface(string) error                           { return nil }
func (nopPlane) SetRemotes(uint32, []dataplane.RemoteEndpoint) (dataplane.Repair, error) {
	return dataplane.Repair{}, nil
}
func (nopPlane) Remotes(uint32) ([]dataplane.RemoteEndpoint, error) { return nil, nil }
