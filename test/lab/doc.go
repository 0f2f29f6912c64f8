// Package lab brings up a small cluster of Docker "hosts" on one Linux
// machine, for weft's end-to-end tests and demos.
//
// Kernel model. The underlay is one Linux bridge in the root namespace
// (weftlab0, 198.18.0.254/24 by default). Host i is a network namespace
// weftlab-h<i> joined to the bridge by a veth pair (wlh<i> in the root
// namespace, eth0 inside, 198.18.0.<i>), plus a UTS namespace pinned by a bind
// mount so the host has its own hostname. With Config.Outside, each host
// also has eth1 on a second bridge (<Bridge>o), which then carries its
// default route. Each host runs its own containerd and dockerd, entered with
// nsenter (never "ip netns exec", which remounts /sys and breaks dockerd's
// cgroup handling) and detached in their own session, so a lab outlives the
// process that started it (the weftlab CLI relies on that). A registry
// program of the caller's may run in the root namespace on the bridge's
// address (StartRegistry), which every engine trusts as an insecure
// registry.
//
// Everything a lab makes is named from Config.Name and lives under
// Config.StateRoot and Config.RunRoot. Cleanup never relies on memory: it
// scans /proc, /proc/self/mountinfo, /run/netns and the link list for objects
// of the lab, so Up can clear a run that was killed halfway and Down works after
// a failed Up or from another process.
package lab
