#!/usr/bin/env bash
# Benchmark `bfcfs mount` (stored and zstd) against squashfuse, squashfuse_ll and the native
# directory, side by side in one run, on a Debian minbase rootfs. Prints a markdown table of
# medians and ratios against native; `--record` also appends it to BENCHMARKS.md.
#
#   sudo scripts/bench-mount.sh [--runs N] [--record]
#
# Needs root (mounts, drop_caches), debootstrap, squashfs-tools, squashfuse, fuse3, fio.
# Rows (issue 3):
#   1. mount -> first `ls` returns           4. `tar cf - MNT | wc -c`, cold (drop_caches) and warm
#   2. `find MNT | wc -l` on a fresh mount   5. fio random 4 KiB reads of a 1 GiB file (cold, IOPS)
#   3. `ls -lR MNT` warm                     6. peak RSS of the server after 4
set -euo pipefail

RUNS=5
RECORD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --record) RECORD=1; shift ;;
        *) echo "usage: $0 [--runs N] [--record]" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${BFCFS_BENCH_CACHE:-/var/cache/bfcfs-bench}
ROOTFS=$CACHE/rootfs-bookworm
BIGDIR=$CACHE/bigfile
WORK=$(mktemp -d /tmp/bfcfs-bench.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT" "$CACHE"

if [ -z "${BFCFS:-}" ]; then
    cargo build --release --quiet --bin bfcfs
    BFCFS=$REPO/target/release/bfcfs
fi

cleanup() {
    if grep -q " $MNT " /proc/mounts; then umount -l "$MNT" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- inputs (cached between runs) ---------------------------------------------------------
if [ ! -d "$ROOTFS/usr" ]; then
    echo "building $ROOTFS (debootstrap --variant=minbase bookworm)" >&2
    rm -rf "$ROOTFS.tmp"
    debootstrap --variant=minbase bookworm "$ROOTFS.tmp" >&2
    mv "$ROOTFS.tmp" "$ROOTFS"
fi
if [ ! -f "$BIGDIR/big.bin" ]; then
    echo "building $BIGDIR/big.bin (1 GiB, compressible)" >&2
    mkdir -p "$BIGDIR"
    (set +o pipefail; base64 -w 0 /dev/urandom | head -c $((1 << 30)) > "$BIGDIR/big.bin.tmp")
    mv "$BIGDIR/big.bin.tmp" "$BIGDIR/big.bin"
fi
# Images are rebuilt when the bfcfs binary or the inputs are newer.
build_bfc() { # SRC OUT COMPRESSION
    if [ ! -f "$2" ] || [ "$BFCFS" -nt "$2" ] || [ "$1" -nt "$2" ]; then
        (cd "$1" && "$BFCFS" create -f -c "$3" "$2.tmp" . >/dev/null 2>&1) && mv "$2.tmp" "$2"
    fi
}
build_sq() { # SRC OUT
    if [ ! -f "$2" ] || [ "$1" -nt "$2" ]; then
        mksquashfs "$1" "$2.tmp" -comp zstd -noappend -quiet -no-progress >/dev/null && mv "$2.tmp" "$2"
    fi
}
for set in rootfs big; do
    src=$ROOTFS; [ $set = big ] && src=$BIGDIR
    build_bfc "$src" "$CACHE/$set-stored.bfc" none
    build_bfc "$src" "$CACHE/$set-zstd.bfc" zstd
    build_sq "$src" "$CACHE/$set.squashfs"
done

TARGETS=(native bfcfs-stored bfcfs-zstd squashfuse squashfuse_ll)

# mount_target TARGET SET: mounts on $MNT (nothing for native); prints the tree's path.
mount_target() {
    case "$1" in
        native) if [ "$2" = rootfs ]; then echo "$ROOTFS"; else echo "$BIGDIR"; fi; return ;;
        bfcfs-stored) "$BFCFS" mount "$CACHE/$2-stored.bfc" "$MNT" ;;
        bfcfs-zstd) "$BFCFS" mount "$CACHE/$2-zstd.bfc" "$MNT" ;;
        squashfuse) squashfuse "$CACHE/$2.squashfs" "$MNT" ;;
        squashfuse_ll) squashfuse_ll "$CACHE/$2.squashfs" "$MNT" ;;
    esac
    echo "$MNT"
}
unmount_target() { # TARGET STEP
    [ "$1" = native ] && return
    if ! grep -q " $MNT " /proc/mounts; then echo "warning: $1 was no longer mounted after $2; retrying" >&2; return 1; fi
    umount "$MNT" 2>/dev/null || umount -l "$MNT"
}
server_pid() { # the process whose command line names $MNT
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q " $MNT\( \|$\)"; then basename "$p"; return; fi
    done 2>/dev/null
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); } # START END -> milliseconds
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print a[int((NR + 1) / 2)]}'; }

# measure TARGET: one run of every row; values go to V. Returns 1 if the mount went away under a
# row (seen on this shared machine now and then, for squashfuse and bfcfs alike): the caller retries.
declare -A R V
measure() {
    local t=$1 s e dir n pid
    V=()
    # 1. mount -> first ls (image file warm in the page cache, fresh mount)
    s=$(now); dir=$(mount_target $t rootfs); ls "$dir" >/dev/null; e=$(now)
    V[mount]=$(ms $s $e)
    # 2. find on the fresh mount
    s=$(now); n=$(find "$dir" | wc -l); e=$(now)
    V[find]=$(ms $s $e); V[count]=$n
    # 3. ls -lR warm
    ls -lR "$dir" >/dev/null
    s=$(now); ls -lR "$dir" >/dev/null; e=$(now)
    V[lslr]=$(ms $s $e)
    unmount_target $t ls-lR || return 1
    # 4. tar cold (fresh mount, caches dropped) and warm
    dir=$(mount_target $t rootfs); drop_caches
    s=$(now); tar cf - -C "$dir" . 2>/dev/null | wc -c >/dev/null; e=$(now)
    V[tarcold]=$(ms $s $e)
    s=$(now); tar cf - -C "$dir" . 2>/dev/null | wc -c >/dev/null; e=$(now)
    V[tarwarm]=$(ms $s $e)
    # 6. server peak and anonymous RSS (KiB)
    pid=$(server_pid)
    if [ -n "$pid" ]; then
        V[rss]=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
        V[anon]=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)
    fi
    unmount_target $t tar || return 1
    # 5. random 4 KiB reads, 1 GiB file, cold
    dir=$(mount_target $t big); drop_caches
    V[iops]=$(fio --name=rr --filename="$dir/big.bin" --readonly --rw=randread --bs=4k --size=1G \
        --ioengine=psync --runtime=5 --time_based --invalidate=1 --output-format=terse \
        --terse-version=3 2>/dev/null | awk -F';' '{print $8}')
    unmount_target $t fio || return 1
}

RETRIES=0
for run in $(seq 1 "$RUNS"); do
    for t in "${TARGETS[@]}"; do
        for try in 1 2 3; do
            if measure $t; then break; fi
            RETRIES=$((RETRIES + 1))
            [ $try = 3 ] && { echo "error: $t kept losing its mount" >&2; exit 1; }
        done
        for k in "${!V[@]}"; do
            if [ $k = count ]; then R[$t,count]=${V[$k]}; else R[$t,$k]+="${V[$k]} "; fi
        done
    done
    echo "run $run/$RUNS done" >&2
done

med() { echo "${R[$1,$2]:-}" | tr ' ' '\n' | { grep -v '^$' || true; } | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-") print "-"; else printf "%.2f", a / b }'; }

{
    echo "### bench-mount $(date -u +%Y-%m-%d) — medians of $RUNS runs"
    echo
    echo "Command: \`sudo scripts/bench-mount.sh --runs $RUNS\` on $(nproc) CPUs, kernel $(uname -r);"
    echo "rootfs: Debian bookworm minbase, $(find "$ROOTFS" | wc -l) entries, $(du -sh "$ROOTFS" | cut -f1)."
    echo "Times in ms (ratio to native in parentheses; lower is better). IOPS: higher is better,"
    echo "ratio = native IOPS / IOPS. Server memory after the tar rows, MiB: peak RSS (VmHWM, which"
    echo "counts the pages of a memory-mapped image that were touched: page cache, shared, reclaimable)"
    echo "and anonymous RSS (RssAnon: the server's own memory)."
    echo
    printf '| row |'; for t in "${TARGETS[@]}"; do printf ' %s |' "$t"; done; echo
    printf '|---|'; for t in "${TARGETS[@]}"; do printf -- '---|'; done; echo
    for row in mount find lslr tarcold tarwarm; do
        case $row in
            mount) label="mount → first ls" ;; find) label="find \| wc -l (fresh mount)" ;;
            lslr) label="ls -lR (warm)" ;; tarcold) label="tar cold" ;; tarwarm) label="tar warm" ;;
        esac
        base=$(med native $row)
        printf '| %s |' "$label"
        for t in "${TARGETS[@]}"; do v=$(med $t $row); printf ' %s (%s×) |' "$v" "$(ratio "$v" "$base")"; done
        echo
    done
    base=$(med native iops)
    printf '| random 4 KiB reads, IOPS |'
    for t in "${TARGETS[@]}"; do v=$(med $t iops); printf ' %s (%s×) |' "$v" "$(ratio "$base" "$v")"; done
    echo
    for m in rss anon; do
        if [ $m = rss ]; then printf '| server peak RSS (VmHWM), MiB |'; else printf '| server RssAnon, MiB |'; fi
        for t in "${TARGETS[@]}"; do
            v=$(med $t $m); if [ "$v" = - ]; then printf ' - |'; else printf ' %s |' "$(awk -v k="$v" 'BEGIN {printf "%.1f", k / 1024}')"; fi
        done
        echo
    done
    printf '| entries seen by find |'; for t in "${TARGETS[@]}"; do printf ' %s |' "${R[$t,count]}"; done; echo
    [ $RETRIES = 0 ] || { echo; echo "($RETRIES measurement(s) repeated: a mount went away under them.)"; }
} > "$WORK/table.md"

cat "$WORK/table.md"
if [ $RECORD = 1 ]; then
    [ -f BENCHMARKS.md ] || printf '# Benchmarks\n\n' > BENCHMARKS.md
    { echo; cat "$WORK/table.md"; } >> BENCHMARKS.md
    echo "appended to BENCHMARKS.md" >&2
fi
