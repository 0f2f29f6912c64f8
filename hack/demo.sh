#!/usr/bin/env bash
# weft's demo, on this one machine, as root: installs what is missing,
# builds the plugin, brings up three Docker hosts (network namespaces, each
# with its own dockerd) in a swarm with weft installed as a managed plugin,
# creates a weft network, starts a service with a task on every host and a
# plain `docker run` container on every host, and shows them talking across
# hosts. The lab stays up afterwards to play with; `make lab-down` removes it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/hack/setup.sh"
export PATH="/usr/local/go/bin:$PATH"
cd "$here"
make --no-print-directory plugin-dir

lab=build/weftlab
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
d() { local h=$1; shift; "$lab" docker "$h" "$@"; }

say "bringing up 3 Docker hosts in a swarm, weft installed on each"
"$lab" up -hosts 3 -swarm -image -plugin build/plugin

say "h1: docker network create -d weft:latest --scope swarm --attachable --subnet 10.77.0.0/24 fabric"
d h1 network create -d weft:latest --scope swarm --attachable --subnet 10.77.0.0/24 fabric

say "h1: a service with one task on every host (peers)"
d h1 service create --detach --no-resolve-image --name peer --mode global --endpoint-mode dnsrr \
	--network fabric weftlab/busybox:latest sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null
for h in h1 h2 h3; do
	say "$h: docker run --network fabric (a chaincode-like container started outside swarm)"
	d $h run -d --name cc-$h --network fabric weftlab/busybox:latest sleep 1d >/dev/null
done

ip_of() { d "$1" inspect -f '{{with index .NetworkSettings.Networks "fabric"}}{{.IPAddress}}{{end}}' "$2"; }
say "waiting for the peers to run"
for i in $(seq 1 120); do
	n=0
	for h in h1 h2 h3; do n=$((n + $(d $h ps -q --filter label=com.docker.swarm.service.name=peer | wc -l))); done
	[ "$n" -ge 3 ] && break
	sleep 1
done
declare -A peer
for h in h1 h2 h3; do
	id=$(d $h ps -q --filter label=com.docker.swarm.service.name=peer | head -1)
	peer[$h]=$(ip_of $h "$id")
	echo "peer task on $h: ${peer[$h]}"
done

for from in h1 h2 h3; do
	for to in h1 h2 h3; do
		say "cc-$from (on $from) -> peer on $to (${peer[$to]}): ping and HTTP"
		d $from exec cc-$from ping -c 2 -W 2 "${peer[$to]}" | tail -2
		echo -n "HTTP answer: "; d $from exec cc-$from wget -q -T 3 -O - "http://${peer[$to]}:8080/"
	done
done

say "weft status on h1"
"$lab" exec h1 build/weft status

say "done: the lab is still up. Try:  build/weftlab docker h2 ps   |   build/weftlab exec h1 bridge fdb show dev weft<VNI>"
echo "Remove everything with: make lab-down"
