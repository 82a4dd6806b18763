#!/usr/bin/env bash
# Installs the Debian packages the tests use (real NBD peers, image tools,
# filesystem tools) when any is missing. Needs root (apt-get); otherwise it
# says what to install and fails.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [qemu-img]=qemu-utils [qemu-io]=qemu-utils [qemu-nbd]=qemu-utils
  [nbdinfo]=libnbd-bin [nbdcopy]=libnbd-bin [nbdsh]=python3-libnbd
  [nbdkit]=nbdkit [mke2fs]=e2fsprogs [e2fsck]=e2fsprogs [debugfs]=e2fsprogs
  [fio]=fio [setpriv]=util-linux [curl]=curl [zstd]=zstd
)
missing=()
for cmd in "${!need[@]}"; do
  PATH="/usr/sbin:/sbin:$PATH" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: missing Debian packages: $pkgs" >&2
  echo "test-deps: run as root, or: sudo apt-get install -y $pkgs" >&2
  exit 1
fi
echo "test-deps: installing $pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
