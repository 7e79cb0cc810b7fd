#!/usr/bin/env bash
# Set up a fresh Debian machine and run the main job: pack a tree into a BFC file, check it,
# mount it read-only through FUSE, browse it, unmount. Needs root (FUSE, apt) and a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh
cargo build --release
bfcfs=$PWD/target/release/bfcfs
work=$(mktemp -d)
trap 'mountpoint -q "$work/mnt" && "$bfcfs" umount "$work/mnt"; rm -rf "$work"' EXIT
(cd /usr/share && "$bfcfs" create -f -c zstd "$work/doc.bfc" doc)
"$bfcfs" verify --deep "$work/doc.bfc"
"$bfcfs" info "$work/doc.bfc"
if "$bfcfs" mount --help >/dev/null 2>&1; then
  mkdir "$work/mnt"
  "$bfcfs" mount "$work/doc.bfc" "$work/mnt"
  ls "$work/mnt/doc" | head
  echo "files in the mounted image: $(find "$work/mnt" -type f | wc -l)"
else
  "$bfcfs" list "$work/doc.bfc" | head
fi
