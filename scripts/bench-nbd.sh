#!/usr/bin/env bash
# Side-by-side NBD benchmark of strata and qemu-nbd (issue 3): builds
# cmd/strata-bench and runs it; arguments go to it (try --help). The
# default is the full run: a 4 GiB data set, 3 rounds of 10 s per phase,
# about 10 minutes on 2 cores. Quick check: --size 256M --runtime 3s.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's tools first (fio, nbdcopy, qemu-nbd), as the Makefile does.
export PATH="/usr/bin:/usr/sbin:/sbin:$PATH"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
"${GO:-go}" build -o "$bin/strata-bench" ./cmd/strata-bench
"$bin/strata-bench" "$@"
