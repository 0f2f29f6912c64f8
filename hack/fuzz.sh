#!/usr/bin/env bash
# Runs every Go fuzz target of the module for FUZZ_TIME each. A crash
# fails the run (its input is written under testdata/fuzz/, to be kept as a
# seed once fixed). One failure is not a crash: the Go toolchain reports
# "context deadline exceeded" when fuzztime ends while a worker is still
# minimizing a new input; that run is repeated once.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZ_TIME=${FUZZ_TIME:-10s}
status=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		for try in 1 2; do
			echo "fuzz $dir $f (try $try)"
			out=$("$GO" test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZ_TIME" "$dir" 2>&1)
			rc=$?
			echo "$out" | tail -3
			if [ $rc -eq 0 ]; then
				break
			fi
			if echo "$out" | grep -q "context deadline exceeded" && ! echo "$out" | grep -q "Failing input written"; then
				continue
			fi
			echo "$out"
			status=1
			break
		done
	done
done
exit $status
