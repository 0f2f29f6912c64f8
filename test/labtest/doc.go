// Package labtest holds what weft's end-to-end suites (test/e2e, swarm;
// test/e2elocal, local mode) do in a lab: start containers and networks,
// check reachability, read the hosts' kernel state, watch the plugin, ping
// without pause, and check the invariants every test may call on:
//
//   - on every host, one VXLAN device per weft network the engine has, and
//     on it exactly one static FDB entry (MAC -> VTEP) and one permanent
//     neighbour entry (IP -> MAC) per endpoint of that network on the other
//     hosts the engines report;
//   - no endpoint interface, veth or bridge of weft's or Docker's left
//     behind in a host's namespace;
//   - `weft status` lists the same networks and endpoints, and every host
//     alive in its mesh.
//
// Kernel state is read through dataplane.Inspect in the host's namespace,
// never parsed from command output. The lab itself (test/lab) knows nothing
// of weft; this package does.
package labtest
