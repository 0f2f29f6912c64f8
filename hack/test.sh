#!/usr/bin/env bash
# Runs weft's whole test suite on this machine, as root: static checks,
# unit and namespace tests with the race detector, then the end-to-end
# tests on a lab of three Docker engines in a swarm. Installs what is
# missing first.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/hack/setup.sh"
export PATH="/usr/local/go/bin:$PATH"
cd "$here"
start=$(date +%s)
make --no-print-directory test
echo "test: all passed in $(( $(date +%s) - start )) s"
