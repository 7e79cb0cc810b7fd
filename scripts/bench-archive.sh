#!/usr/bin/env bash
# Archive benchmark: bfcfs vs tar vs squashfs. Prints a Markdown table (for BENCHMARKS.md).
#
#   sudo scripts/bench-archive.sh [-n RUNS] [-r ROOTFS] [-w WORKDIR] [-s BIG_BYTES] [-t TAR_READS]
#
# 1. create and extract of a Debian minbase rootfs: bfcfs -c none / -c zstd, tar cf / tar --zstd,
#    mksquashfs -comp zstd / unsquashfs. Median of RUNS runs (default 5).
#    - create: the source tree is warm in the page cache; the time includes a final `sync`, so
#      every tool pays for getting its output to disk (bfcfs fsyncs its output itself).
#    - extract: cold (page cache dropped before each run); the time includes a final `sync`.
#    - zstd level 3 everywhere (bfcfs and tar/zstd default; mksquashfs defaults to 15, so it is
#      given -Xcompression-level 3). Block/chunk size 128 KiB for both bfcfs and squashfs.
# 2. 4 KiB reads at 1000 random offsets of a 1 GiB text-like file (deterministic), stored with
#    zstd: bfcfs Container::read_at (examples/bench_random_reads.rs), squashfs through squashfuse,
#    and tar.zst, which has no index: each read decompresses from the start. tar.zst is measured
#    on the first TAR_READS offsets (default 20) and extrapolated to 1000, and says so.
#
# Needs root (drop_caches, extracting devices and owners), tar, zstd, mksquashfs, unsquashfs,
# squashfuse (optional), and debootstrap if ROOTFS is missing.
set -euo pipefail

RUNS=5
ROOTFS=/var/cache/bfcfs-bench/rootfs-bookworm
WORK=/var/tmp/bfcfs-bench
BIG=$((1 << 30))
READS=1000
TAR_READS=20

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while getopts "n:r:w:s:t:h" o; do
    case $o in
        n) RUNS=$OPTARG ;;
        r) ROOTFS=$OPTARG ;;
        w) WORK=$OPTARG ;;
        s) BIG=$OPTARG ;;
        t) TAR_READS=$OPTARG ;;
        *) usage ;;
    esac
done

die() { echo "bench-archive: $*" >&2; exit 1; }
log() { echo "bench-archive: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (it drops the page cache and extracts device nodes)"
for c in tar zstd mksquashfs unsquashfs; do
    command -v "$c" >/dev/null || die "$c is missing (apt-get install tar zstd squashfs-tools)"
done
HAVE_SQUASHFUSE=0
if command -v squashfuse >/dev/null && [ -e /dev/fuse ]; then HAVE_SQUASHFUSE=1; fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
log "building (release)"
(cd "$REPO" && cargo build --release --quiet --bin bfcfs --example bench_random_reads)
BFCFS=$REPO/target/release/bfcfs
RR=$REPO/target/release/examples/bench_random_reads

if [ ! -d "$ROOTFS" ]; then
    command -v debootstrap >/dev/null || die "$ROOTFS is missing and debootstrap is not installed"
    log "creating $ROOTFS with debootstrap"
    debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >&2
fi
SRC_PARENT=$(dirname "$ROOTFS")
SRC_NAME=$(basename "$ROOTFS")

mkdir -p "$WORK"
cd "$WORK"
MNT=$WORK/mnt
cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || true; fi
}
trap cleanup EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
size_of() { stat -c %s "$1"; }
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }

declare -A T   # median seconds by key
declare -A S   # sizes by key

# bench_set PREP KEY CMD [KEY CMD]...: RUNS rounds; each round runs PREP (not timed) and then
# times CMD plus `sync`, for every CMD in turn. Interleaving the tools round by round spreads
# the noise of a shared machine over all of them instead of over whichever ran during a spike.
declare -A TS
bench_set() {
    local prep=$1
    shift
    local keys=() cmds=() r k t0 t1
    while (($#)); do keys+=("$1"); cmds+=("$2"); shift 2; done
    for ((r = 1; r <= RUNS; r++)); do
        for k in "${!keys[@]}"; do
            $prep
            t0=$(now)
            eval "${cmds[$k]}" >/dev/null
            sync
            t1=$(now)
            TS[${keys[$k]}]+="$(echo "$t1 - $t0" | bc -l) "
        done
    done
    for k in "${keys[@]}"; do
        # shellcheck disable=SC2086 # word splitting of the run list is wanted
        T[$k]=$(printf '%s\n' ${TS[$k]} | median)
        log "$k: ${T[$k]} s (runs: ${TS[$k]})"
    done
}

# ---------------------------------------------------------------- 1. rootfs create / extract
log "rootfs: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1), $(find "$ROOTFS" | wc -l) entries)"
warm_source() { tar -C "$SRC_PARENT" -cf - "$SRC_NAME" | cat >/dev/null; }
no_prep() { :; }
warm_source

bfc_create() { (cd "$SRC_PARENT" && "$BFCFS" create -f -c "$1" "$WORK/$2" "$SRC_NAME"); }
bench_set no_prep \
    create-bfc-none 'bfc_create none rootfs.bfc' \
    create-tar 'tar -C "$SRC_PARENT" -cf "$WORK/rootfs.tar" "$SRC_NAME"' \
    create-bfc-zstd 'bfc_create zstd rootfs-zstd.bfc' \
    create-tar-zstd 'tar --zstd -C "$SRC_PARENT" -cf "$WORK/rootfs.tar.zst" "$SRC_NAME"' \
    create-sqfs 'mksquashfs "$ROOTFS" "$WORK/rootfs.sqfs" -noappend -quiet -no-progress -comp zstd -Xcompression-level 3'
for f in rootfs.bfc rootfs-zstd.bfc rootfs.tar rootfs.tar.zst rootfs.sqfs; do S[$f]=$(size_of "$f"); done

OUT=$WORK/out
fresh_out_cold() { rm -rf "$OUT"; mkdir -p "$OUT"; drop_caches; }
bench_set fresh_out_cold \
    extract-bfc-none '"$BFCFS" extract -C "$OUT" rootfs.bfc' \
    extract-tar 'tar -C "$OUT" -xf rootfs.tar' \
    extract-bfc-zstd '"$BFCFS" extract -C "$OUT" rootfs-zstd.bfc' \
    extract-tar-zstd 'tar --zstd -C "$OUT" -xf rootfs.tar.zst' \
    extract-sqfs 'unsquashfs -q -n -f -d "$OUT/$SRC_NAME" rootfs.sqfs'
rm -rf "$OUT"

# ---------------------------------------------------------------- 2. random reads
mkdir -p big
if [ ! -f big/data.txt ] || [ "$(size_of big/data.txt)" != "$BIG" ]; then
    log "generating big/data.txt ($BIG bytes)"
    "$RR" gen big/data.txt "$BIG"
fi
log "packing the big file (one run each, source warm)"
RUNS_SAVED=$RUNS
RUNS=1
bench_set no_prep \
    big-create-bfc '"$BFCFS" create -f -c zstd big.bfc big' \
    big-create-tar-zstd 'tar --zstd -cf big.tar.zst big' \
    big-create-sqfs 'mksquashfs big big.sqfs -noappend -quiet -no-progress -comp zstd -Xcompression-level 3'
RUNS=$RUNS_SAVED
for f in big/data.txt big.bfc big.tar.zst big.sqfs; do S[$f]=$(size_of "$f"); done
"$RR" offsets "$READS" $((BIG - 4096)) 1 > offsets.txt

# reads KEY COLD CMD...: RUNS runs of CMD, which prints "<seconds> <hash>"; COLD=1 drops caches.
declare -A H
reads() {
    local key=$1 cold=$2
    shift 2
    local ts=() r out
    for ((r = 1; r <= RUNS; r++)); do
        [ "$cold" = 1 ] && drop_caches
        out=$("$@")
        ts+=("${out% *}")
        H[$key]=${out#* }
    done
    T[$key]=$(printf '%s\n' "${ts[@]}" | median)
    log "$key: ${T[$key]} s for $READS reads (runs: ${ts[*]})"
}
reads rr-bfc-cold 1 "$RR" bfc big.bfc big/data.txt offsets.txt
reads rr-bfc-warm 0 "$RR" bfc big.bfc big/data.txt offsets.txt
reads rr-raw-cold 1 "$RR" file big/data.txt offsets.txt

if [ "$HAVE_SQUASHFUSE" = 1 ]; then
    mkdir -p "$MNT"
    sqfs_reads() {
        squashfuse big.sqfs "$MNT"
        "$RR" file "$MNT/data.txt" offsets.txt
        umount "$MNT"
    }
    reads rr-sqfs-cold 1 sqfs_reads
    reads rr-sqfs-warm 0 sqfs_reads
fi
for k in rr-bfc-cold rr-sqfs-cold; do
    if [ -n "${H[$k]:-}" ] && [ "${H[$k]}" != "${H[rr-raw-cold]}" ]; then
        die "$k read different bytes than the raw file (hash ${H[$k]} vs ${H[rr-raw-cold]})"
    fi
done

# tar.zst: no index, every read decompresses the archive from the start up to its offset.
log "tar.zst: $TAR_READS of the $READS reads (each decompresses from the start)"
tar_reads() {
    local t0 t1 off
    t0=$(now)
    head -n "$TAR_READS" offsets.txt | while read -r off; do
        { tar --zstd -xOf big.tar.zst big/data.txt || true; } |
            dd bs=4096 iflag=skip_bytes,fullblock skip="$off" count=1 status=none >/dev/null
    done
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
drop_caches
T[rr-tar-subset]=$(tar_reads)
T[rr-tar]=$(echo "${T[rr-tar-subset]} * $READS / $TAR_READS" | bc -l)
log "rr-tar: ${T[rr-tar-subset]} s for $TAR_READS reads"

# ---------------------------------------------------------------- table
f2() { printf '%.2f' "$1"; }
ratio() { printf '%.2f×' "$(echo "$1 / $2" | bc -l)"; }
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo
echo "bfcfs $commit · $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')) · kernel $(uname -r) · $(date -u +%Y-%m-%d)"
echo "rootfs: $ROOTFS, $(du -sh --apparent-size "$ROOTFS" | cut -f1) in $(find "$ROOTFS" | wc -l) entries · median of $RUNS runs"
echo
echo "| operation | tool | median s | vs tar | output size |"
echo "|---|---|---:|---:|---:|"
row() { echo "| $1 | $2 | $(f2 "${T[$3]}") | $(ratio "${T[$3]}" "${T[$4]}") | ${5:-} |"; }
row "create (warm source, + sync)" "bfcfs create -c none" create-bfc-none create-tar "$(human "${S[rootfs.bfc]}")"
row "" "tar cf" create-tar create-tar "$(human "${S[rootfs.tar]}")"
row "" "bfcfs create -c zstd" create-bfc-zstd create-tar-zstd "$(human "${S[rootfs-zstd.bfc]}")"
row "" "tar --zstd -cf" create-tar-zstd create-tar-zstd "$(human "${S[rootfs.tar.zst]}")"
row "" "mksquashfs -comp zstd (level 3)" create-sqfs create-tar-zstd "$(human "${S[rootfs.sqfs]}")"
row "extract (cold, + sync)" "bfcfs extract (none)" extract-bfc-none extract-tar
row "" "tar xf" extract-tar extract-tar
row "" "bfcfs extract (zstd)" extract-bfc-zstd extract-tar-zstd
row "" "tar --zstd -xf" extract-tar-zstd extract-tar-zstd
row "" "unsquashfs" extract-sqfs extract-tar-zstd
echo
echo "zstd rows compare with tar --zstd, plain rows with tar cf. Tools run interleaved, round by round."
echo
echo "$(human "${S[big/data.txt]}") text-like file, $READS reads of 4 KiB at random offsets (same offsets for every reader):"
echo
echo "| reader | total s | per read ms | vs bfcfs cold | stored size |"
echo "|---|---:|---:|---:|---:|"
rrow() { echo "| $1 | $(f2 "${T[$2]}") | $(printf '%.3f' "$(echo "${T[$2]} * 1000 / $READS" | bc -l)") | $(ratio "${T[$2]}" "${T[rr-bfc-cold]}") | ${3:-} |"; }
rrow "bfcfs read_at, cold (open + reads)" rr-bfc-cold "$(human "${S[big.bfc]}")"
rrow "bfcfs read_at, warm page cache" rr-bfc-warm
if [ "$HAVE_SQUASHFUSE" = 1 ]; then
    rrow "squashfuse + pread, cold (mount + reads)" rr-sqfs-cold "$(human "${S[big.sqfs]}")"
    rrow "squashfuse + pread, warm page cache" rr-sqfs-warm
fi
rrow "tar --zstd -xOf per read, extrapolated from $TAR_READS reads (archive warm after the first)" rr-tar "$(human "${S[big.tar.zst]}")"
rrow "uncompressed file, pread, cold (reference)" rr-raw-cold "$(human "${S[big/data.txt]}")"
echo
echo "Packing the big file (one run, + sync): bfcfs -c zstd $(f2 "${T[big-create-bfc]}") s, tar --zstd $(f2 "${T[big-create-tar-zstd]}") s, mksquashfs $(f2 "${T[big-create-sqfs]}") s."
