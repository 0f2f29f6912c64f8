package plugin

import (
	"net"

	"github.com/weftnet/weft/dataplane"
)

// nopPlane accepts every kernel write without doing it.
type nopPlane struct{}

func (nopPlane) EnsureNetwork(dataplane.Network) error                  { return nil }
func (nopPlane) DeleteNetwork(uint32) error                             { return nil }
func (nopPlane) CreateInterface(uint32, string, net.HardwareAddr) error { return nil }
func (nopPlane) DeleteInterface(string) error                           { return nil }
func (nopPlane) SetPeers(uint32, []dataplane.Peer) error                { return nil }
func (nopPlane) Peers(uint32) ([]dataplane.Peer, error)                 { return nil, nil }
