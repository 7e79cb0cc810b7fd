#!/usr/bin/env bash
# Lazy pull benchmark (issue 11): the two-layer Debian bookworm minbase image (everything but
# /usr/share, then /usr/share), pushed with `bfcfs push --format bfc` to a local docker-registry
# (one tag: an OCI index of the ordinary and the BFC manifest), reached through
# scripts/shape-proxy.py: +20 ms round trip, 100 Mbit/s for all connections together.
#   a) skopeo copy + umoci unpack + runc run
#   b) bfcfs pull + bfcfs bundle + runc run
#   c) bfcfs pull --lazy + bfcfs bundle + runc run      (then: time until every layer is local)
# The command is `cat /etc/debian_version`. For each: seconds until `ls ROOTFS` answers, seconds
# until runc's command has finished, bytes the registry sent and requests made until then.
# Prints medians of RUNS runs (interleaved a, b, c) and the ratios against (b).
# Usage: scripts/bench-lazy.sh [RUNS]   (root; needs docker-registry, skopeo, umoci, runc, python3)
#        BG_RATE (default 4M) is the background fetch rate of (c).
set -euo pipefail
RUNS=${1:-3}
BG_RATE=${BG_RATE:-4M}
. "$(dirname "$0")/lib/bench-common.sh"
need_rootfs
build_bfcfs

W=$(mktemp -d /var/tmp/bfcfs-lazy.XXXXXX)
REG_PID= PROXY_PID=
cleanup() {
  for m in $(grep -o " $W/[^ ]*" /proc/self/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

# The image, as bench-pull.sh builds it.
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:deb" >/dev/null
umoci unpack --image "$W/oci:deb" "$W/bundle" >/dev/null
(cd "$ROOTFS" && tar --exclude=./usr/share -cf - .) | tar -xf - -C "$W/bundle/rootfs"
umoci repack --image "$W/oci:deb" "$W/bundle" >/dev/null
(cd "$ROOTFS" && tar -cf - ./usr/share) | tar -xf - -C "$W/bundle/rootfs"
umoci repack --image "$W/oci:deb" "$W/bundle" >/dev/null
umoci config --image "$W/oci:deb" --config.cmd /bin/sh >/dev/null
rm -rf "$W/bundle"

start_registry "$W/registry"
skopeo copy --quiet --dest-tls-verify=false "oci:$W/oci:deb" "docker://127.0.0.1:$PORT/bench/debian:plain"
# The BFC variant: a full pull with zstd chunks, pushed with --format bfc under :bfc.
"$BFCFS" --root "$W/seed" pull -q -c zstd "127.0.0.1:$PORT/bench/debian:plain"
"$BFCFS" --root "$W/seed" push --format bfc "127.0.0.1:$PORT/bench/debian:plain" \
  "127.0.0.1:$PORT/bench/debian:bfc" >/dev/null 2>&1

STATS=$W/proxy.stats
python3 scripts/shape-proxy.py "$PORT" 10 100 "$STATS" >"$W/proxy.port" &
PROXY_PID=$!
for _ in $(seq 100); do [ -s "$W/proxy.port" ] && break; sleep 0.05; done
REF=127.0.0.1:$(cat "$W/proxy.port")/bench/debian:bfc
stat_bytes() { cut -d' ' -f1 "$STATS"; }
stat_reqs() { cut -d' ' -f2 "$STATS"; }

# runc's config: the command, no terminal.
set_command() {
  python3 - "$1/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["cat", "/etc/debian_version"]
c["process"]["terminal"] = False
json.dump(c, open(sys.argv[1], "w"))
PY
}

# One run of one way: prints "ls_s done_s bytes requests [complete_s total_bytes]".
run_a() {
  local d=$W/a-$1 b0 r0 t0 tl td
  mkdir -p "$d"
  b0=$(stat_bytes); r0=$(stat_reqs); t0=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$d/oci:x"
  umoci unpack --image "$d/oci:x" "$d/b" >/dev/null
  ls "$d/b/rootfs" >/dev/null; tl=$(now)
  set_command "$d/b"
  runc run -b "$d/b" "lazy-a-$1-$$" >"$d/out"; td=$(now)
  grep -q . "$d/out"
  echo "$(echo "$tl - $t0" | bc -l) $(echo "$td - $t0" | bc -l) $(($(stat_bytes) - b0)) $(($(stat_reqs) - r0))"
  rm -rf "$d"
}
run_bfcfs() { # $1 = b | c, $2 = run
  local d=$W/$1-$2 b0 r0 t0 tl td lazy=() name bd br tc
  [ "$1" = c ] && lazy=(--lazy)
  mkdir -p "$d"
  b0=$(stat_bytes); r0=$(stat_reqs); t0=$(now)
  "$BFCFS" --root "$d/store" pull -q "${lazy[@]}" "$REF"
  name=$("$BFCFS" --root "$d/store" bundle --bg-rate "$BG_RATE" "$REF" "$d/b")
  ls "$d/b/rootfs" >/dev/null; tl=$(now)
  set_command "$d/b"
  runc run -b "$d/b" "lazy-$1-$2-$$" >"$d/out"; td=$(now)
  grep -q . "$d/out"
  bd=$(($(stat_bytes) - b0)); br=$(($(stat_reqs) - r0))
  local extra=""
  if [ "$1" = c ]; then
    while "$BFCFS" --root "$d/store" images | grep -q "lazy:"; do sleep 0.2; done
    tc=$(now)
    extra=" $(echo "$tc - $t0" | bc -l) $(($(stat_bytes) - b0))"
  fi
  echo "$(echo "$tl - $t0" | bc -l) $(echo "$td - $t0" | bc -l) $bd $br$extra"
  umount "$d/b/rootfs" 2>/dev/null || umount -l "$d/b/rootfs"
  "$BFCFS" --root "$d/store" rm-container -f "$name" >/dev/null
  rm -rf "$d"
}

: >"$W/a"; : >"$W/b"; : >"$W/c"
for i in $(seq "$RUNS"); do
  run_a "$i" >>"$W/a"
  run_bfcfs b "$i" >>"$W/b"
  run_bfcfs c "$i" >>"$W/c"
done
col() { awk -v c="$2" '{print $c}' "$W/$1" | median; }
"$BFCFS" --root "$W/seed" pull -q --lazy "$REF"
IMG=$("$BFCFS" --root "$W/seed" inspect --json "$REF" | python3 -c '
import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
OCI=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$PORT/bench/debian:plain" | python3 -c '
import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
printf 'image: debian bookworm minbase, 2 layers: %.1f MiB as gzip tar layers, %.1f MiB as BFC (zstd) layers\n' \
  "$(echo "$OCI / 1048576" | bc -l)" "$(echo "$IMG / 1048576" | bc -l)"
printf 'link: +20 ms round trip, 100 Mbit/s (scripts/shape-proxy.py); runs: %s (medians)\n' "$RUNS"
printf '%-34s %8s %10s %10s %9s\n' "" "first ls" "runc done" "MiB" "requests"
for w in a b c; do
  case $w in
    a) label="a) skopeo + umoci + runc" ;;
    b) label="b) bfcfs pull + bundle + runc" ;;
    c) label="c) bfcfs pull --lazy + bundle + runc" ;;
  esac
  printf '%-34s %7.2fs %9.2fs %10.1f %9.0f\n' "$label" "$(col $w 1)" "$(col $w 2)" \
    "$(echo "$(col $w 3) / 1048576" | bc -l)" "$(col $w 4)"
done
printf 'c) bytes before the output / BFC image bytes:  %.1f%%   (target <= 15%%)\n' \
  "$(echo "100 * $(col c 3) / $IMG" | bc -l)"
printf 'c) / b) time until runc done:                  %.2f    (target <= 0.35)\n' \
  "$(echo "$(col c 2) / $(col b 2)" | bc -l)"
printf 'c) time until every layer is local (bg %s/s):  %.2fs, %.1f MiB fetched in all\n' \
  "$BG_RATE" "$(col c 5)" "$(echo "$(col c 6) / 1048576" | bc -l)"
