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

say "h1: a service of 3 peers, one per host, named vp1..vp3 by swarm's template, using weft's DNS (10.77.0.1)"
d h1 service create --detach --no-resolve-image --name peer --replicas 3 --replicas-max-per-node 1 \
	--hostname 'vp{{.Task.Slot}}' --endpoint-mode dnsrr --dns 10.77.0.1 \
	--network fabric weftlab/busybox:latest sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null
for h in h1 h2 h3; do
	say "$h: docker run --network fabric --dns 10.77.0.1 (a chaincode-like container started outside swarm)"
	d $h run -d --name cc-$h --network fabric --dns 10.77.0.1 weftlab/busybox:latest sleep 1d >/dev/null
done

say "waiting for the peers to run"
for i in $(seq 1 180); do
	n=0
	for h in h1 h2 h3; do n=$((n + $(d $h ps -q --filter label=com.docker.swarm.service.name=peer | wc -l))); done
	[ "$n" -ge 3 ] && break
	sleep 1
done
for h in h1 h2 h3; do
	id=$(d $h ps -q --filter label=com.docker.swarm.service.name=peer | head -1)
	echo "on $h: $(d $h inspect -f '{{.Config.Hostname}} {{with index .NetworkSettings.Networks "fabric"}}{{.IPAddress}}{{end}}' "$id")"
done

for from in h1 h2 h3; do
	for peer in vp1 vp2 vp3; do
		say "cc-$from (on $from) -> $peer, by name: DNS, ping, HTTP"
		echo "$peer.weft.local is $(d $from exec cc-$from nslookup "$peer.weft.local" 10.77.0.1 | grep "^Address" | tail -1 | sed "s/^Address:* *//")"
		d $from exec cc-$from ping -c 2 -W 2 "$peer" | tail -2
		echo -n "HTTP answer from $peer: "
		d $from exec cc-$from sh -c 'printf "GET / HTTP/1.0\r\n\r\n" | nc -w 3 "$0" 8080 | tail -1' "$peer"
	done
done

say "weft status on h1"
"$lab" exec h1 build/weft status

say "done: the lab is still up. Try:  build/weftlab docker h2 ps   |   build/weftlab exec h1 bridge fdb show dev weft<VNI>"
echo "Remove everything with: make lab-down"
