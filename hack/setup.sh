#!/usr/bin/env bash
# Installs what weft's build, demo and tests need on a Debian machine, as
# root: Docker 20.10 (dockerd, containerd, runc), busybox and iperf3 for the
# test image, iproute2/iptables, and a Go toolchain recent enough for
# go.mod (fetched from the Go module proxy when Debian's is older).
# Safe to run again: it only installs what is missing.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "setup: run as root (weft's lab creates network namespaces and Docker engines)" >&2
	exit 1
fi

pkgs=(docker.io busybox-static iperf3 iptables nftables iproute2 iputils-ping make git curl ca-certificates unzip util-linux procps kmod)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go: the newest version weft's go.mod or the test registry's asks for, or
# newer.
here="$(cd "$(dirname "$0")/.." && pwd)"
want="$(awk '/^go [0-9]/ {print $2}' "$here/go.mod" "$here/test/registry/go.mod" | sort -V | tail -1)"
export PATH="/usr/local/go/bin:$PATH"
have=""
if command -v go >/dev/null; then
	have="$(go env GOVERSION 2>/dev/null | sed 's/^go//')"
fi
older() { # older A B: A < B as versions
	[ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]
}
if [ -z "$have" ] || older "$have" "$want"; then
	ver="1.26.8"
	proxy="${GOPROXY:-https://proxy.golang.org}"
	proxy="${proxy%%,*}"
	echo "setup: installing Go $ver from the module proxy (found: ${have:-none}, need $want)"
	tmp="$(mktemp -d)"
	curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$ver.linux-amd64.zip"
	unzip -q "$tmp/go.zip" -d "$tmp"
	rm -rf /usr/local/go
	mv "$tmp/golang.org/toolchain@v0.0.1-go$ver.linux-amd64" /usr/local/go
	chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* 2>/dev/null || true
	rm -rf "$tmp"
	ln -sf /usr/local/go/bin/go /usr/local/bin/go
	ln -sf /usr/local/go/bin/gofmt /usr/local/bin/gofmt
fi
go version
(cd "$here" && go mod download)
# The container registry the release tests build (distribution's), a module
# of its own so that its dependencies stay out of weft's go.mod.
(cd "$here/test/registry" && go mod download)
echo "setup: done"
