#!/usr/bin/env bash
# Import through the daemon, as a user does: starts stratad on an empty
# data directory, creates a folder, times `strata image import FILE` and
# reads the daemon's CPU seconds from /proc. Prints one line per run.
#
#   scripts/bench-import.sh FILE [RUNS] [BINDIR]
#
# BINDIR holds stratad and strata (default: builds them into a temporary
# directory from this checkout); point it at another build to compare.
set -euo pipefail
file=${1:?usage: scripts/bench-import.sh FILE [RUNS] [BINDIR]}
runs=${2:-3}
cd "$(dirname "$0")/.."
work="$(mktemp -d "${TMPDIR:-/var/tmp}/strata-bench-import.XXXXXX")"
pid=
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
bin=${3:-}
if [ -z "$bin" ]; then
	bin="$work/bin"
	"${GO:-go}" build -o "$bin/" ./cmd/stratad ./cmd/strata
fi
size=$(stat -c %s "$file")
tick=$(getconf CLK_TCK)
cpu() { awk -v t="$tick" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
for run in $(seq "$runs"); do
	data="$work/data"
	rm -rf "$data"
	"$bin/stratad" --data-dir "$data" >"$work/stratad.log" 2>&1 &
	pid=$!
	export STRATA_SOCKET="$data/admin.sock"
	"$bin/strata" status --wait 30s >/dev/null
	"$bin/strata" folder create bench >/dev/null
	c0=$(cpu "$pid")
	t0=$(date +%s.%N)
	"$bin/strata" image import "$file" --name bench --folder bench -q -o id >/dev/null
	t1=$(date +%s.%N)
	c1=$(cpu "$pid")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=
	awk -v r="$run" -v s="$size" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" 'BEGIN {
		w = t1 - t0; c = c1 - c0
		printf "run %d: %.2f s, %.0f MB/s, daemon %.2f CPU-s (%.0f MB/cpu-s)\n", r, w, s / 1e6 / w, c, s / 1e6 / c
	}'
done
