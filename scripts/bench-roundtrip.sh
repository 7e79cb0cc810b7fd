#!/usr/bin/env bash
# What a FUSE round trip costs on this machine, and where the writable union's metadata floor is.
# Untar of N small files (100 B, 500 per directory) into a writable union, then `rm -rf` of them,
# with the upper dir on a tmpfs (default) so the disk takes no part: only the kernel's own work
# and the round trips to the server are left. Run by run, interleaved:
#   kernel   kernel overlayfs (the limit; no round trips)
#   free     bfcfs as it runs by default (the scheduler places server threads and workload)
#   same     bfcfs server and workload pinned to one CPU: every request and reply wakes a thread
#            on the CPU that is already running (taskset)
#   cross    bfcfs server on CPU 1, workload on CPU 0: every request and reply wakes the other CPU
#   fuse-overlayfs   as it runs by default (if installed)
# Prints medians, the ratio to kernel overlayfs and the cost per round trip (untar sends 10
# requests per file, rm -rf 2: docs/fuse-requests.md).
# UPPER=disk puts the upper dirs on the disk (under /var/tmp) instead, as bench-union.sh does.
# HALT_POLL_NS=N sets the guest's cpuidle halt polling (/sys/module/haltpoll/parameters/
# guest_halt_poll_ns) for the run and restores it after: what a host with halt polling gives.
# Usage: scripts/bench-roundtrip.sh [RUNS] [FILES]   (root; 2+ CPUs; defaults 5 runs, 5000 files)
set -euo pipefail
RUNS=${1:-5}
FILES=${2:-5000}
. "$(dirname "$0")/lib/bench-common.sh"
build_bfcfs
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (same vs cross)" >&2; exit 1; }

W=$(mktemp -d /var/tmp/bfcfs-roundtrip.XXXXXX)
MNT=$W/mnt
T=$W/t
mkdir -p "$MNT" "$T"
HP=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HP_WAS=
cleanup() {
  mountpoint -q "$MNT" && umount -l "$MNT"
  mountpoint -q "$T" && umount -l "$T"
  [ -z "$HP_WAS" ] || echo "$HP_WAS" >"$HP"
  rm -rf "$W"
}
trap cleanup EXIT
[ "${UPPER:-tmpfs}" = disk ] || mount -t tmpfs -o size=1g tmpfs "$T"
if [ -n "${HALT_POLL_NS:-}" ]; then
  [ -w "$HP" ] || { echo "no $HP on this machine" >&2; exit 1; }
  HP_WAS=$(cat "$HP"); echo "$HALT_POLL_NS" >"$HP"
fi

# The lower layer: a few files, as a BFC container and as a directory for the overlays.
mkdir -p "$W/lower/etc" "$W/lower/tmp"
echo hello >"$W/lower/etc/hello"
(cd "$W/lower" && "$BFCFS" create "$W/lower.bfc" etc tmp >/dev/null)
small_files_tar "$FILES" "$W/small.tar"

MODES=(kernel free same cross)
command -v fuse-overlayfs >/dev/null && MODES+=(fuse-overlayfs)
: >"$W/times"
for run in $(seq "$RUNS"); do
  for m in "${MODES[@]}"; do
    rm -rf "$T/up" "$T/work"; mkdir -p "$T/up" "$T/work"
    pre=()
    case $m in
      kernel) mount -t overlay overlay -o "lowerdir=$W/lower,upperdir=$T/up,workdir=$T/work" "$MNT" ;;
      fuse-overlayfs) fuse-overlayfs -o "lowerdir=$W/lower,upperdir=$T/up,workdir=$T/work" "$MNT" ;;
      *)
        "$BFCFS" mount --upper "$T/up" "$W/lower.bfc" "$MNT"
        pid=$("$BFCFS" mounts --json | python3 -c 'import json,sys; print(next(str(m["server_pid"]) for m in json.load(sys.stdin) if m["mountpoint"] == sys.argv[1]))' "$MNT")
        case $m in
          same) taskset -a -p -c 0 "$pid" >/dev/null; pre=(taskset -c 0) ;;
          cross) taskset -a -p -c 1 "$pid" >/dev/null; pre=(taskset -c 0) ;;
        esac
        ;;
    esac
    ls -lR "$MNT" >/dev/null; mkdir "$MNT/tmp/u"
    t0=$(now); "${pre[@]}" tar -xf "$W/small.tar" -C "$MNT/tmp/u"; t1=$(now)
    "${pre[@]}" rm -rf "$MNT/tmp/u"; t2=$(now)
    umount "$MNT"
    echo "$m $(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t1" | bc -l)" >>"$W/times"
  done
  echo "run $run done" >&2
done

printf '\n%s files, upper dir on %s, medians of %s runs (bfcfs %s, load %s)%s\n\n' "$FILES" "${UPPER:-tmpfs}" "$RUNS" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$([ -z "${HALT_POLL_NS:-}" ] || echo ", guest_halt_poll_ns=$HALT_POLL_NS")"
python3 - "$W/times" "$FILES" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, u, r = line.split(); rows.setdefault(m, ([], []))[0].append(float(u)); rows[m][1].append(float(r))
n = int(sys.argv[2])
med = {m: (statistics.median(u), statistics.median(r)) for m, (u, r) in rows.items()}
k = med["kernel"]
print("| mode | untar | rm -rf | untar / kernel | rm -rf / kernel | µs per round trip beyond kernel (untar, rm) |")
print("|---|---:|---:|---:|---:|---:|")
for m, (u, r) in med.items():
    rt = "" if m == "kernel" else f"{(u - k[0]) * 1e6 / (10 * n):.1f}, {(r - k[1]) * 1e6 / (2 * n):.1f}"
    print(f"| {m} | {u:.3f} s | {r:.3f} s | {u / k[0]:.2f}× | {r / k[1]:.2f}× | {rt} |")
PY
