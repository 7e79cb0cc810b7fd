#!/usr/bin/env bash
# Pull benchmark (issue 4): a two-layer Debian bookworm minbase image, built with debootstrap +
# umoci and pushed with skopeo to a local docker-registry on 127.0.0.1, pulled by
#   A) bfcfs pull                      (into an empty store each run)
#   B) skopeo copy + umoci unpack      (what users do without bfcfs)
#   C) bfcfs pull of an image already in the store
# Prints the median of RUNS runs of each and the ratio A/B (target: <= 0.5).
# Usage: scripts/bench-pull.sh [RUNS]   (root; needs debootstrap, umoci, skopeo, docker-registry)
set -euo pipefail
RUNS=${1:-5}
. "$(dirname "$0")/lib/bench-common.sh"

if [ ! -d "$ROOTFS/usr" ]; then
  echo "creating $ROOTFS with debootstrap (minbase)" >&2
  mkdir -p "$(dirname "$ROOTFS")"
  debootstrap --variant=minbase bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >&2
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
build_bfcfs

W=$(mktemp -d /var/tmp/bfcfs-bench.XXXXXX)
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# Two layers: everything but /usr/share, then /usr/share.
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:deb" >/dev/null
umoci unpack --image "$W/oci:deb" "$W/bundle" >/dev/null
rsync -a --exclude=/usr/share "$ROOTFS/" "$W/bundle/rootfs/" 2>/dev/null \
  || (cd "$ROOTFS" && tar --exclude=./usr/share -cf - .) | tar -xf - -C "$W/bundle/rootfs"
umoci repack --image "$W/oci:deb" "$W/bundle" >/dev/null
(cd "$ROOTFS" && tar -cf - ./usr/share) | tar -xf - -C "$W/bundle/rootfs"
umoci repack --image "$W/oci:deb" "$W/bundle" >/dev/null
rm -rf "$W/bundle"

start_registry "$W/registry"
REF=127.0.0.1:$PORT/bench/debian:bookworm
skopeo copy --quiet --dest-tls-verify=false "oci:$W/oci:deb" "docker://$REF"
SIZE=$(du -sb "$W/registry" | cut -f1)

A=(); B=(); C=()
for i in $(seq "$RUNS"); do
  sync
  t0=$(now); "$BFCFS" --root "$W/store-$i" pull -q "$REF"; t1=$(now)
  A+=("$(echo "$t1 - $t0" | bc -l)")
  t0=$(now); "$BFCFS" --root "$W/store-$i" pull -q "$REF"; t1=$(now)
  C+=("$(echo "$t1 - $t0" | bc -l)")
  rm -rf "$W/store-$i"
  sync
  t0=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$W/sk-$i:x"
  umoci unpack --image "$W/sk-$i:x" "$W/unp-$i" >/dev/null
  t1=$(now)
  B+=("$(echo "$t1 - $t0" | bc -l)")
  rm -rf "$W/sk-$i" "$W/unp-$i"
done
MA=$(printf '%s\n' "${A[@]}" | median)
MB=$(printf '%s\n' "${B[@]}" | median)
MC=$(printf '%s\n' "${C[@]}" | median)
printf 'image: debian bookworm minbase, 2 layers, %s MiB compressed in the registry\n' "$((SIZE / 1048576))"
printf 'runs: %s (medians)\n' "$RUNS"
printf 'bfcfs pull (empty store):      %.3f s\n' "$MA"
printf 'skopeo copy + umoci unpack:    %.3f s\n' "$MB"
printf 'ratio bfcfs / (skopeo+umoci):  %.2f   (target <= 0.5)\n' "$(echo "$MA / $MB" | bc -l)"
printf 'bfcfs pull (already present):  %.3f s\n' "$MC"
