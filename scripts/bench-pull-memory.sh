#!/usr/bin/env bash
# Memory of converting a large layer (issue 15): `bfcfs pull` of synthetic images with one
# uncompressed tar layer (scripts/gen-synthetic-image.py: directories of 1,000 small files) at
# several entry counts, into an empty store each run. Prints the medians of RUNS runs: pull
# seconds and peak RSS (GNU time's "Maximum resident set size"). BFCFS_COMPARE=PATH runs another
# build in the same loop (alternating), so the two columns share the machine's noise.
#
#   scripts/bench-pull-memory.sh [--runs N] [--shuffled] [ENTRIES...]   (default 250000 1000000)
#
# --shuffled uses layers whose members come in a random order (the generator's `shuffled`).
# Images are kept in $BFCFS_BENCH_CACHE (default /var/cache/bfcfs-bench) as synth-N[-shuffled].
set -euo pipefail
RUNS=5
ORDER=
SIZES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --shuffled) ORDER=shuffled; shift ;;
        [0-9]*) SIZES+=("$1"); shift ;;
        *) echo "usage: $0 [--runs N] [--shuffled] [ENTRIES...]" >&2; exit 2 ;;
    esac
done
[ ${#SIZES[@]} -gt 0 ] || SIZES=(250000 1000000)
. "$(dirname "$0")/lib/bench-common.sh"
build_bfcfs
CACHE=${BFCFS_BENCH_CACHE:-/var/cache/bfcfs-bench}
W=$(mktemp -d /var/tmp/bfcfs-pull-memory.XXXXXX)
trap 'rm -rf "$W"' EXIT

BUILDS=("$BFCFS")
[ -n "${BFCFS_COMPARE:-}" ] && BUILDS+=("$BFCFS_COMPARE")

echo "| entries | build | pull, s (median of $RUNS) | peak RSS, MiB (median) |"
echo "|---|---|---|---|"
for n in "${SIZES[@]}"; do
    img=$CACHE/synth-$n${ORDER:+-$ORDER}
    if [ ! -f "$img/index.json" ]; then
        echo "building $img" >&2
        rm -rf "$img.tmp"
        python3 scripts/gen-synthetic-image.py "$img.tmp" "$n" $ORDER
        mv "$img.tmp" "$img"
    fi
    declare -A secs=() rss=()
    for run in $(seq 1 "$RUNS"); do
        for b in "${BUILDS[@]}"; do
            rm -rf "$W/store"
            /usr/bin/time -f "%e %M" -o "$W/time" "$b" --root "$W/store" pull -q "oci:$img" >/dev/null
            read -r s k < "$W/time"
            secs[$b]+="$s "; rss[$b]+="$k "
        done
        echo "$n: run $run/$RUNS done" >&2
    done
    for b in "${BUILDS[@]}"; do
        s=$(echo ${secs[$b]} | tr ' ' '\n' | median)
        k=$(echo ${rss[$b]} | tr ' ' '\n' | median)
        echo "| $n${ORDER:+ ($ORDER)} | $b | $s | $(awk -v k="$k" 'BEGIN {printf "%.1f", k / 1024}') |"
    done
    unset secs rss
done
