#!/usr/bin/env bash
# Restart survival costs (issue 12), on a small read-only .bfc tree:
#   1. the stall a client sees per SIGKILL of the server: a probe stats a missing name in a loop
#      (an ENOENT lookup is never cached, so each one is a request to the server) and the
#      longest single stat around each kill is the stall; median, min and max of N kills;
#   2. the same for `bfcfs restart` (graceful handover);
#   3. RSS of the supervisor and of the server;
#   4. mount -> first `ls` returns, supervised and with BFCFS_SUPERVISE=0 (no supervisor), N
#      runs each, alternating, median.
#
#   sudo scripts/bench-restart.sh [--runs N]      (default 10; needs root and Linux >= 6.9)
#
# BFCFS_BIN=PATH runs another build; BFCFS_COMPARE=PATH adds that build's supervised mount ->
# first ls, timed in the same alternating loop (before/after comparisons on a loaded machine).
set -euo pipefail

RUNS=10
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
BIN=${BFCFS_BIN:-$PWD/target/release/bfcfs}
[ -x "$BIN" ] || cargo build --release
WORK=$(mktemp -d /tmp/bench-restart.XXXXXX)
MNT=$WORK/mnt
cleanup() {
    if grep -q " $MNT " /proc/self/mounts; then umount -l "$MNT" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/tree/d" "$MNT"
for i in $(seq 1 200); do echo "file $i" >"$WORK/tree/d/f$i"; done
(cd "$WORK" && "$BIN" create t.bfc tree >/dev/null)

server_pid() { "$BIN" mounts --json | python3 -c "import json,sys; print(next(r['server_pid'] for r in json.load(sys.stdin) if r['mountpoint']=='$MNT'))"; }
supervisor_pid() { "$BIN" mounts --json | python3 -c "import json,sys; print(next(r['supervisor_pid'] for r in json.load(sys.stdin) if r['mountpoint']=='$MNT'))"; }

# The probe: one thread stats a missing name back to back, logging (start, end) of each stat;
# the main thread disturbs the server RUNS times, 0.5 s apart (kill: SIGKILL, then wait until a
# new server is recorded; restart: `bfcfs restart`). The stall of a disturbance is the longest
# stat that overlaps the half second after it began. Prints the stalls in ms.
PROBE='
import json, os, signal, subprocess, sys, threading, time
bin, mnt, how, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def server():
    out = subprocess.run([bin, "mounts", "--json"], capture_output=True, check=True).stdout
    return next(r["server_pid"] for r in json.loads(out) if r["mountpoint"] == mnt)
log, stop = [], False
def probe():
    i = 0
    while not stop:
        t = time.monotonic()
        try:
            os.stat(f"{mnt}/tree/missing{i}")
        except FileNotFoundError:
            pass
        log.append((t, time.monotonic()))
        i += 1
th = threading.Thread(target=probe)
th.start()
marks = []
for _ in range(runs):
    time.sleep(0.5)
    old = server()
    marks.append(time.monotonic())
    if how == "kill":
        os.kill(old, signal.SIGKILL)
        while server() == old:
            time.sleep(0.005)
    else:
        subprocess.run([bin, "restart", mnt], capture_output=True, check=True)
time.sleep(0.5)
stop = True
th.join()
print(" ".join(f"{max(e - s for s, e in log if e >= m and s <= m + 0.5) * 1000:.1f}" for m in marks))
'

median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f ms (min %.1f, max %.1f)", m, a[1], a[NR]}'; }

stalls() { python3 -c "$PROBE" "$BIN" "$MNT" "$1" "$RUNS" | median; }

"$BIN" mount "$WORK/t.bfc" "$MNT"
ls "$MNT/tree/d" >/dev/null

echo "## Restart survival (bench-restart.sh, $RUNS runs, $(date -u +%F))"
echo
echo "| what | result |"
echo "|---|---|"
echo "| stall per SIGKILL of the server (longest stat(2) of a probe) | $(stalls kill) |"
echo "| stall per \`bfcfs restart\` (graceful handover) | $(stalls restart) |"
sup=$(supervisor_pid); srv=$(server_pid)
rss() { awk '/^(VmRSS|RssAnon)/ {printf "%s%s", s, $2; s=" KiB (anon "} END {print " KiB)"}' "/proc/$1/status"; }
echo "| RSS of the supervisor | $(rss "$sup") |"
echo "| RSS of the server after the runs | $(rss "$srv") |"
"$BIN" umount "$MNT"
while kill -0 "$sup" 2>/dev/null; do sleep 0.01; done

first_ls() { # prints ms from mount start to the first ls returning, with bfcfs binary $1
    local t0 t1
    t0=$(date +%s%N)
    "$1" mount "$WORK/t.bfc" "$MNT"
    ls "$MNT" >/dev/null
    t1=$(date +%s%N)
    "$1" umount "$MNT"
    echo "scale=1; ($t1 - $t0) / 1000000" | bc
}
with=""; without=""; other=""
for _ in $(seq 1 "$RUNS"); do
    with="$with $(first_ls "$BIN")"
    without="$without $(BFCFS_SUPERVISE=0 first_ls "$BIN")"
    if [ -n "${BFCFS_COMPARE:-}" ]; then other="$other $(first_ls "$BFCFS_COMPARE")"; fi
done
echo "| mount -> first ls, supervised | $(echo $with | median) |"
echo "| mount -> first ls, BFCFS_SUPERVISE=0 (no supervisor) | $(echo $without | median) |"
if [ -n "${BFCFS_COMPARE:-}" ]; then
    echo "| mount -> first ls, supervised, $BFCFS_COMPARE | $(echo $other | median) |"
fi
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
