#!/usr/bin/env bash
# Benchmark `bfcfs mount` (stored and zstd) against squashfuse, squashfuse_ll, kernel erofs
# (uncompressed and lz4hc) and the native directory, side by side in one run, on a Debian
# minbase rootfs; then a synthetic image of N entries (default 1,000,000) against the same tree
# on the native file system. Prints markdown tables of medians and ratios against native;
# `--record` also appends them to BENCHMARKS.md.
#
#   sudo scripts/bench-mount.sh [--runs N] [--synth ENTRIES] [--synth-only] [--record]
#                               [--targets T1,T2,...] [--rows tar,...]
#
# Needs root (mounts, drop_caches), debootstrap, squashfs-tools, squashfuse, erofs-utils
# (`mount -t erofs IMAGE` of a file needs no loop device on kernels >= 6.12), fuse3, fio,
# python3 (scripts/gen-synthetic-image.py). `--synth 0` skips the synthetic image,
# `--synth-only` runs only it. `--targets` picks columns (native is always measured, first) and
# `--rows` the Debian rows (mount, find, lslr, tar, fio; default all), e.g. `--targets
# bfcfs-stored,bfcfs-zstd --rows tar` for the cold and warm tar of native, stored and zstd.
# Targets base-stored and base-zstd mount the same images with another build, BFCFS_BASE=binary
# (an A/B comparison in one run, e.g. `--targets base-zstd,bfcfs-zstd`).
# Rows (issues 3, 15):
#   1. mount -> first `ls` returns           4. `tar cf - MNT | wc -c`, cold (drop_caches) and warm
#   2. `find MNT | wc -l` on a fresh mount   5. fio random 4 KiB reads of a 1 GiB file (cold, IOPS)
#   3. `ls -lR MNT` warm                     6. peak and anonymous RSS of the server after 4
# Synthetic image: mount -> first ls, find | wc -l, ls -lR, server RssAnon after mount and after
# find, and `bfcfs pull` of its single uncompressed tar layer: time and peak RSS.
set -euo pipefail

RUNS=5
RECORD=0
SYNTH=1000000
SYNTH_ONLY=0
ONLY_TARGETS=
ALL_ROWS=mount,find,lslr,tar,fio
ROWS=$ALL_ROWS
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --synth) SYNTH="$2"; shift 2 ;;
        --synth-only) SYNTH_ONLY=1; shift ;;
        --record) RECORD=1; shift ;;
        --targets) ONLY_TARGETS="$2"; shift 2 ;;
        --rows) ROWS="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--synth ENTRIES] [--synth-only] [--record] [--targets T,...] [--rows R,...]" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
row() { case ",$ROWS," in *",$1,"*) return 0 ;; esac; return 1; }
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
if [ "$SYNTH_ONLY" = 0 ]; then
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
build_erofs() { # SRC OUT [mkfs.erofs options]
    local src=$1 out=$2; shift 2
    if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
        mkfs.erofs "$@" "$out.tmp" "$src" >/dev/null 2>&1 && mv "$out.tmp" "$out"
    fi
}
for set in rootfs big; do
    [ $set = big ] && ! row fio && continue
    src=$ROOTFS; [ $set = big ] && src=$BIGDIR
    build_bfc "$src" "$CACHE/$set-stored.bfc" none
    build_bfc "$src" "$CACHE/$set-zstd.bfc" zstd
    build_sq "$src" "$CACHE/$set.squashfs"
    build_erofs "$src" "$CACHE/$set.erofs"
    build_erofs "$src" "$CACHE/$set-lz4hc.erofs" -zlz4hc
done

fi
TARGETS=(native bfcfs-stored bfcfs-zstd squashfuse squashfuse_ll erofs erofs-lz4hc)
if [ -n "$ONLY_TARGETS" ]; then
    TARGETS=(native)
    for t in ${ONLY_TARGETS//,/ }; do [ "$t" = native ] || TARGETS+=("$t"); done
fi

# mount_target TARGET SET: mounts on $MNT (nothing for native); prints the tree's path.
mount_target() {
    case "$1" in
        native) if [ "$2" = rootfs ]; then echo "$ROOTFS"; else echo "$BIGDIR"; fi; return ;;
        bfcfs-stored) "$BFCFS" mount "$CACHE/$2-stored.bfc" "$MNT" ;;
        bfcfs-zstd) "$BFCFS" mount "$CACHE/$2-zstd.bfc" "$MNT" ;;
        base-stored) "$BFCFS_BASE" mount "$CACHE/$2-stored.bfc" "$MNT" ;;
        base-zstd) "$BFCFS_BASE" mount "$CACHE/$2-zstd.bfc" "$MNT" ;;
        squashfuse) squashfuse "$CACHE/$2.squashfs" "$MNT" ;;
        squashfuse_ll) squashfuse_ll "$CACHE/$2.squashfs" "$MNT" ;;
        erofs) mount -t erofs -o ro "$CACHE/$2.erofs" "$MNT" ;;
        erofs-lz4hc) mount -t erofs -o ro "$CACHE/$2-lz4hc.erofs" "$MNT" ;;
    esac
    echo "$MNT"
}
unmount_target() { # TARGET STEP
    [ "$1" = native ] && return
    if ! grep -q " $MNT " /proc/mounts; then echo "warning: $1 was no longer mounted after $2; retrying" >&2; return 1; fi
    umount "$MNT" 2>/dev/null || umount -l "$MNT"
}
server_pid() { # the process whose command line names $MNT (a supervised mount: `bfcfs __serve`,
    # which names it inside its JSON spec, as its supervisor does)
    local p cmd found=
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null < "$p/cmdline") || continue
        case "$cmd" in *" __supervise "*) continue ;; esac
        if echo "$cmd" | grep -q "[ \"]$MNT\([ \"]\|$\)"; then found=$(basename "$p"); fi
    done
    echo "$found"
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); } # START END -> milliseconds
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print a[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-") print "-"; else printf "%.2f", a / b }'; }

# measure TARGET: one run of every row; values go to V. Returns 1 if the mount went away under a
# row (seen on this shared machine now and then, for squashfuse and bfcfs alike): the caller retries.
declare -A R V
measure() {
    local t=$1 s e dir n pid
    V=()
    if row mount || row find || row lslr; then
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
    fi
    if row tar; then
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
    fi
    if row fio; then
    # 5. random 4 KiB reads, 1 GiB file, cold
    dir=$(mount_target $t big); drop_caches
    V[iops]=$(fio --name=rr --filename="$dir/big.bin" --readonly --rw=randread --bs=4k --size=1G \
        --ioengine=psync --runtime=5 --time_based --invalidate=1 --output-format=terse \
        --terse-version=3 2>/dev/null | awk -F';' '{print $8}')
    unmount_target $t fio || return 1
    fi
}

if [ "$SYNTH_ONLY" = 0 ]; then
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
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

{
    echo "### bench-mount $(date -u +%Y-%m-%d) — medians of $RUNS runs"
    echo
    echo "Command: \`sudo scripts/bench-mount.sh --runs $RUNS${ONLY_TARGETS:+ --targets $ONLY_TARGETS}$([ "$ROWS" = $ALL_ROWS ] || echo " --rows $ROWS")\` on $(nproc) CPUs, kernel $(uname -r);"
    echo "Load average (1, 5, 15 min) before: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "rootfs: Debian bookworm minbase, $(find "$ROOTFS" | wc -l) entries, $(du -sh "$ROOTFS" | cut -f1)."
    echo "Times in ms (ratio to native in parentheses; lower is better). IOPS: higher is better,"
    echo "ratio = native IOPS / IOPS. Server memory after the tar rows, MiB: peak RSS (VmHWM, which"
    echo "counts the pages of a memory-mapped image that were touched: page cache, shared, reclaimable)"
    echo "and anonymous RSS (RssAnon: the server's own memory); \`-\` for kernel file systems."
    echo
    printf '| row |'; for t in "${TARGETS[@]}"; do printf ' %s |' "$t"; done; echo
    printf '|---|'; for t in "${TARGETS[@]}"; do printf -- '---|'; done; echo
    for row in mount find lslr tarcold tarwarm; do
        [ -n "${R[native,$row]:-}" ] || continue # a row not selected with --rows
        case $row in
            mount) label="mount → first ls" ;; find) label="find \| wc -l (fresh mount)" ;;
            lslr) label="ls -lR (warm)" ;; tarcold) label="tar cold" ;; tarwarm) label="tar warm" ;;
        esac
        base=$(med native $row)
        printf '| %s |' "$label"
        for t in "${TARGETS[@]}"; do v=$(med $t $row); printf ' %s (%s×) |' "$v" "$(ratio "$v" "$base")"; done
        echo
    done
    if row fio; then
    base=$(med native iops)
    printf '| random 4 KiB reads, IOPS |'
    for t in "${TARGETS[@]}"; do v=$(med $t iops); printf ' %s (%s×) |' "$v" "$(ratio "$base" "$v")"; done
    echo
    fi
    for m in rss anon; do
        row tar || continue
        if [ $m = rss ]; then printf '| server peak RSS (VmHWM), MiB |'; else printf '| server RssAnon, MiB |'; fi
        for t in "${TARGETS[@]}"; do
            v=$(med $t $m); if [ "$v" = - ]; then printf ' - |'; else printf ' %s |' "$(awk -v k="$v" 'BEGIN {printf "%.1f", k / 1024}')"; fi
        done
        echo
    done
    if row find; then
    printf '| entries seen by find |'; for t in "${TARGETS[@]}"; do printf ' %s |' "${R[$t,count]:--}"; done; echo
    fi
    [ $RETRIES = 0 ] || { echo; echo "($RETRIES measurement(s) repeated: a mount went away under them.)"; }
} > "$WORK/table.md"
else
    : > "$WORK/table.md"
fi

# --- synthetic image of $SYNTH entries ----------------------------------------------------
if [ "$SYNTH" -gt 0 ]; then
    SYN=$CACHE/synth-$SYNTH
    if [ ! -f "$SYN/index.json" ]; then
        echo "building $SYN (OCI layout, one tar layer of $SYNTH entries)" >&2
        rm -rf "$SYN.tmp"
        python3 "$REPO/scripts/gen-synthetic-image.py" "$SYN.tmp" "$SYNTH"
        mv "$SYN.tmp" "$SYN"
    fi
    if [ ! -d "$SYN-tree" ]; then
        echo "extracting $SYN-tree (the same tree on the native file system)" >&2
        rm -rf "$SYN-tree.tmp"; mkdir -p "$SYN-tree.tmp"
        layer=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["manifests"][0]["digest"].split(":")[1])' "$SYN/index.json")
        layer=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["layers"][0]["digest"].split(":")[1])' "$SYN/blobs/sha256/$layer")
        tar xf "$SYN/blobs/sha256/$layer" -C "$SYN-tree.tmp"
        mv "$SYN-tree.tmp" "$SYN-tree"
    fi
    declare -A S
    for run in $(seq 1 "$RUNS"); do
        # pull: time and peak RSS (a fresh store each run)
        rm -rf "$WORK/store"
        /usr/bin/time -f "%e %M" -o "$WORK/pull.time" "$BFCFS" --root "$WORK/store" pull -q "oci:$SYN" >/dev/null
        read -r secs kib < "$WORK/pull.time"
        S[pull]+="$(awk -v s="$secs" 'BEGIN {printf "%d", s * 1000}') "; S[pullrss]+="$kib "
        # the layer file is written back before the walks (the native tree is not being written)
        sync
        layer_file=$(ls "$WORK/store/layers/"*.bfc)
        # mount -> first ls, find, ls -lR, RssAnon (the layer file, read-only)
        s=$(now); "$BFCFS" mount "$layer_file" "$MNT"; ls "$MNT" >/dev/null; e=$(now)
        S[bfcfs,mount]+="$(ms $s $e) "
        pid=$(server_pid)
        S[bfcfs,anon0]+="$(awk '/RssAnon/ {print $2}' /proc/$pid/status) "
        s=$(now); n=$(find "$MNT" | wc -l); e=$(now)
        S[bfcfs,find]+="$(ms $s $e) "; S[bfcfs,count]=$n
        S[bfcfs,anon1]+="$(awk '/RssAnon/ {print $2}' /proc/$pid/status) "
        s=$(now); ls -lR "$MNT" >/dev/null; e=$(now)
        S[bfcfs,lslr]+="$(ms $s $e) "
        umount "$MNT" 2>/dev/null || umount -l "$MNT"
        # the native tree (warm)
        s=$(now); ls "$SYN-tree" >/dev/null; e=$(now); S[native,mount]+="$(ms $s $e) "
        s=$(now); n=$(find "$SYN-tree" | wc -l); e=$(now)
        S[native,find]+="$(ms $s $e) "; S[native,count]=$n
        s=$(now); ls -lR "$SYN-tree" >/dev/null; e=$(now); S[native,lslr]+="$(ms $s $e) "
        echo "synthetic run $run/$RUNS done" >&2
    done
    smed() { echo "${S[$1]:-}" | tr ' ' '\n' | { grep -v '^$' || true; } | median; }
    mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }'; }
    {
        echo
        echo "Synthetic image: $SYNTH entries ($(( SYNTH / 1000 )) directories of 1,000 files of a few"
        echo "bytes, \`scripts/gen-synthetic-image.py\`), pulled from an OCI layout with one uncompressed"
        echo "tar layer; bfcfs mounts the layer's BFC file read-only; native is the same tree on $(df -T "$CACHE" | awk 'NR==2 {print $2}')."
        echo
        echo "| row | native | bfcfs |"
        echo "|---|---|---|"
        for row in mount find lslr; do
            case $row in
                mount) label="mount → first ls, ms" ;; find) label="find \| wc -l (fresh mount), ms" ;;
                lslr) label="ls -lR, ms" ;;
            esac
            base=$(smed native,$row); v=$(smed bfcfs,$row)
            echo "| $label | $base | $v ($(ratio "$v" "$base")×) |"
        done
        echo "| server RssAnon after mount → ls, MiB | - | $(mib "$(smed bfcfs,anon0)") |"
        echo "| server RssAnon after find, MiB | - | $(mib "$(smed bfcfs,anon1)") |"
        echo "| bfcfs pull (convert the layer), ms | - | $(smed pull) |"
        echo "| bfcfs pull peak RSS, MiB | - | $(mib "$(smed pullrss)") |"
        echo "| entries seen by find | ${S[native,count]} | ${S[bfcfs,count]} |"
    } >> "$WORK/table.md"
fi

cat "$WORK/table.md"
if [ $RECORD = 1 ]; then
    [ -f BENCHMARKS.md ] || printf '# Benchmarks\n\n' > BENCHMARKS.md
    { echo; cat "$WORK/table.md"; } >> BENCHMARKS.md
    echo "appended to BENCHMARKS.md" >&2
fi
