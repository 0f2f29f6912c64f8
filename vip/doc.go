// Package vip makes swarm's service addresses (VIPs) work on weft's
// networks: the engine allocates a VIP for every service in the default
// endpoint mode and its resolver answers the service's name with it, but
// since Docker 18.06 it programs load balancing only for networks of its own
// overlay driver, so on a plugin network the VIP leads nowhere. This package
// balances each VIP in the kernel, per connection, in the network namespace
// of every container attached to a weft network on this host.
//
// Kernel model, per container (sandbox) on a weft network:
//
//	table ip weft-vip {
//	    map vips { ipv4_addr : verdict }      VIP N -> jump vip-N (VIPs with a backend)
//	    set dead { ipv4_addr }                every VIP of the container's networks
//	    map backends-N { integer : ipv4_addr } 0..K-1 -> the K backends of VIP N
//	    chain nat-output {                    type nat hook output priority -100
//	        ip daddr vmap @vips               (comment: the marker, see below)
//	    }
//	    chain vip-N {
//	        dnat to numgen inc mod K map @backends-N
//	    }
//	    chain filter-output {                 type filter hook output priority 0
//	        ip daddr @dead reject             (TCP with a reset)
//	    }
//	}
//
// A new connection (the first packet of a conntrack flow) from a process in
// the container to a VIP, any protocol and port, is DNATed to the next of
// the service's backends in turn (round robin, as Docker's IPVS did); the
// flow keeps it, replies are translated back, the client's source address
// is kept. A packet still addressed to a VIP after the nat chain (the VIP
// has no backend, or conntrack did not take the packet) is refused at once
// instead of waiting on an ARP that nobody answers. Nothing runs per packet
// in userspace, and the table lives in the container's namespace: it stays
// in force while the plugin restarts, and goes with the container.
//
// The whole table is rewritten in one nftables transaction whenever the
// container's VIPs or their backends change, so a packet sees either the old
// table or the new one. The rule holding the vmap carries a marker (a hash
// of what the table says) as its comment: a restarted plugin, and the
// periodic repair, compare it with what the table should say and write only
// on a difference. After a write that drops a backend or a VIP (and once
// for every sandbox a process takes over), the container's conntrack flows
// towards a VIP whose translation is no longer wanted (a backend removed,
// a VIP gone, or a flow that started before the VIP was known) are deleted,
// so that the next packet of such a connection is translated afresh: to
// another backend, which answers a TCP segment it does not know with a
// reset, so the connection ends at once rather than hang. Every table of a
// change is written before any flow is swept: a sweep walks the kernel's
// whole conntrack table (milliseconds), a write does not.
//
// Where the state comes from:
//
//   - VIPs: this host's engine (verbose network inspect: each service's VIP
//     on the network; on managers also /services), published to the other
//     hosts in the mesh table "vip" for the services that have a task here
//     (every service, on managers), so a host whose engine has not learnt a
//     VIP yet (a container just attached) still balances it.
//   - Backends: the endpoint catalog, whose records carry each task's names
//     (dns.ContainerNames: "tasks.<service>"): a task's record leaves every
//     host as fast as the catalog withdraws it (its endpoint deleted, its
//     host found dead), and so does its backend. The engine's verbose
//     inspect vouches for a local task's service while its names are not
//     yet learnt.
//   - Draining: a manager reads the tasks the orchestrator has decided to
//     stop (desired state shutdown or remove, still running) and publishes
//     them in its entries: they get no new connection from the moment the
//     decision is made, as Docker's own balancing does, while swarm waits
//     (about 2 s) before it signals them.
//   - Sandboxes: the engine's containers on weft networks, found on network
//     connect and container start events (and a periodic full read), and
//     earlier still by their sandbox keys (early_linux.go). A container's
//     namespace is reached through the engine's mount of it (its
//     SandboxKey, opened under /proc/<engine's pid>/root, which needs the
//     host's PID namespace, the plugin's "pidhost", and CAP_SYS_PTRACE,
//     without which the kernel refuses a process the /proc entries of one
//     with more capabilities), so the plugin's own mounts do not matter.
//
// Until its first full read of the engine and the mesh's first state
// exchange, a starting plugin writes nothing: the tables the previous
// process left are complete, a half-known view is not.
package vip
