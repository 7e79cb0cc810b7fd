#!/usr/bin/env bash
# Installs the Debian packages bfcfs and its tests use (idempotent; needs root).
set -euo pipefail
pkgs=(
  fuse3 attr               # FUSE mounts, xattr tools
  squashfs-tools squashfuse erofs-utils fio hyperfine debootstrap   # benchmarks
  docker-registry skopeo umoci apache2-utils            # registry tests
  runc fuse-overlayfs                                   # container tests
  pkg-config libzstd-dev                                # crates that build C
  man-db                                                # man -l in the man page test
  pass golang-docker-credential-helpers gnupg openssl   # credential helper and TLS tests (tests/login.rs)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing: FUSE tests cannot run" >&2; exit 1; }
