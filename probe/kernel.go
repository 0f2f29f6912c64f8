package probe

import (
	"net/netip"

	"github.com/weftnet/weft/dataplane"
)

// KernelPorts opens probe ports as dataplane.ProbePort: the probe
// segment's device on the networks' VXLAN port vxlanPort.
func KernelPorts(k *dataplane.Kernel, vxlanPort int) func(vtep netip.Addr) (Port, error) {
	return func(vtep netip.Addr) (Port, error) {
		pp, err := k.OpenProbe(vtep, vxlanPort)
		if err != nil {
			return nil, err
		}
		return kernelPort{pp}, nil
	}
}

// kernelPort sends and receives on a dataplane.ProbePort's socket.
type kernelPort struct{ *dataplane.ProbePort }

func (k kernelPort) WriteTo(b []byte, vtep netip.Addr) error {
	_, err := k.Conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(vtep, dataplane.ProbeUDPPort))
	return err
}

func (k kernelPort) ReadFrom(b []byte) (int, netip.Addr, error) {
	n, from, err := k.Conn.ReadFromUDPAddrPort(b)
	return n, from.Addr().Unmap(), err
}
