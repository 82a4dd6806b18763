#!/usr/bin/env bash
# Runs the quick start of README.md, the lines between <!-- quickstart -->
# and <!-- /quickstart --> (code fences dropped), in order, in one shell,
# in a scratch copy of this checkout: README and test cannot drift, and the
# run touches neither ./var nor ./bin of the real checkout. Any failing
# line fails the script. Background jobs the quick start leaves running
# (the daemon) are stopped at the end.
#
# Usage: scripts/quickstart-test.sh [README]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme=${1:-$root/README.md}
block=$(awk '/<!-- quickstart -->/ {on=1; next} /<!-- \/quickstart -->/ {on=0} on' "$readme" | sed '/^[[:space:]]*```/d')
if [ -z "${block//[[:space:]]/}" ]; then
  echo "quickstart-test: no quick start between <!-- quickstart --> and <!-- /quickstart --> in $readme" >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/strata-quickstart.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# The working tree as it is (tracked and new files, not ignored ones such
# as bin/ and var/), so uncommitted README edits are tested too.
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z -co --exclude-standard) \
    | (cd "$root" && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) \
    | tar -xf - -C "$scratch"
else
  # Not a git checkout (a release tarball): everything but build output.
  tar -C "$root" --exclude=./bin --exclude=./var -cf - . | tar -xf - -C "$scratch"
fi

# Debian's tools first, as in the Makefile: mkfs/e2fsck live in sbin.
export PATH="/usr/bin:/usr/sbin:/sbin:$PATH"
cd "$scratch"
echo "quickstart-test: running in $scratch:"
printf '%s\n' "$block" | sed 's/^/  | /'
# The quick start runs in a child shell with -x so a failure shows the
# line; its EXIT trap stops whatever it started in the background.
bash -c "set -euxo pipefail
trap '{ jobs -p | xargs -r kill; } 2>/dev/null || true; wait || true' EXIT
$block"
echo "quickstart-test: ok"
