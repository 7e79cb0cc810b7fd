#!/usr/bin/env bash
# Union mount benchmark (issue 5): the two-layer Debian bookworm minbase image (as bench-pull.sh
# builds it: everything but /usr/share, then /usr/share) mounted read-write
#   A) bfcfs mount --upper UPPER IMAGE MNT            (layers from the store, FUSE passthrough)
#   B) fuse-overlayfs -o lowerdir=L2:L1,upperdir,workdir   over the plainly extracted layers
#   C) kernel overlayfs (mount -t overlay) over the same extracted layers: the limit
# Workloads, each on a fresh mount (cold = page cache dropped first):
#   mount+ls   mount command until `ls MNT` returns (cold)
#   find       find MNT (cold: one lookup per entry)
#   ls -lR     warm (second walk of the same mount)
#   tar cold / tar warm   tar -cf /dev/null MNT (reads every byte)
#   RSS        the server's resident memory after the warm tar
# Metadata (writes into the union, each tool on a fresh mount after one `ls -lR` of it):
#   untar N     tar -xf of N small files (100 B each, 500 per directory) into the mount, N = 5000, 40000
#   rm -rf N    then removing them; per-file cost at 40000 over 5000 shows growth with size
#   mkdir during copy-up   a mkdir timed while `truncate`-free open(O_WRONLY) of a 1 GiB lower file
#                          copies it up (a third layer holds the file)
# Then lookup cost on synthetic images with 1, 10 and 50 layers (scripts/synth-image.py: 5000 files
# in d/, spread round-robin over the layers): lstat of every file on a fresh read-only mount.
# Prints medians of RUNS runs (interleaved) and the ratio bfcfs / fuse-overlayfs.
# SECTIONS=requests instead counts the requests the kernel sends each FUSE server, per opcode (and
# per error), for untar of 5,000 files into a fresh mount, rm -rf of them, a warm ls -lR and a warm
# tar c | wc -c, from the kernel's fuse_request_send/fuse_request_end trace events of the mount's
# connection (FORGET is not a request and is not traced).
# SPIN=1 keeps every CPU awake for the run with one SCHED_IDLE busy loop per CPU (they run only
# when nothing else wants the CPU): what guest halt polling does on a VM that has it off, where
# each request and reply that wakes a halted vCPU pays for the wakeup.
# Usage: scripts/bench-union.sh [RUNS]   (root; needs fuse-overlayfs, python3)
#        SECTIONS="read meta copyup layers" (the default: all) picks what to measure.
set -euo pipefail
RUNS=${1:-5}
SECTIONS=${SECTIONS:-read meta copyup layers}
has() { case " $SECTIONS " in *" $1 "*) return 0;; *) return 1;; esac; }
. "$(dirname "$0")/lib/bench-common.sh"
need_rootfs
build_bfcfs

W=$(mktemp -d /var/tmp/bfcfs-union.XXXXXX)
MNT=$W/mnt
mkdir -p "$MNT"
SPINNERS=()
cleanup() {
  mountpoint -q "$MNT" && umount -l "$MNT"; rm -rf "$W"
  [ ${#SPINNERS[@]} = 0 ] || { kill "${SPINNERS[@]}"; wait "${SPINNERS[@]}" 2>/dev/null; } || true
}
trap cleanup EXIT
if [ "${SPIN:-0}" = 1 ]; then
  for _ in $(seq "$(nproc)"); do chrt -i 0 sh -c 'while :; do :; done' & SPINNERS+=($!); done
fi

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
since() { echo "$(now) - $1" | bc -l; }

# put(): a blob into the OCI layout at ociput.out (a file moved in, or bytes); its descriptor.
cat >"$W/ociput.py" <<'PY'
import hashlib, os, shutil
out = None
def put(path=None, data=None):
    h = hashlib.sha256()
    if data is None:
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
        n = os.path.getsize(path); shutil.move(path, f"{out}/blobs/sha256/{h.hexdigest()}")
    else:
        h.update(data); n = len(data)
        with open(f"{out}/blobs/sha256/{h.hexdigest()}", "wb") as f: f.write(data)
    return {"digest": "sha256:" + h.hexdigest(), "size": n}
PY

# The image: two layers, into a bfcfs store; the same layers extracted for fuse-overlayfs.
mkdir -p "$W/tars"
(cd "$ROOTFS" && tar --exclude=./usr/share -cf - .) >"$W/tars/0.tar"
(cd "$ROOTFS" && tar -cf - ./usr/share) >"$W/tars/1.tar"
PYTHONPATH=$W python3 - "$W/oci" "$W/tars/0.tar" "$W/tars/1.tar" <<'PY'
import json, os, sys, ociput
from ociput import put
out, tars = sys.argv[1], sys.argv[2:]
ociput.out = out
os.makedirs(f"{out}/blobs/sha256")
layers = [dict(put(t), mediaType="application/vnd.oci.image.layer.v1.tar") for t in tars]
cfg = put(data=json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
      "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
man = put(data=json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers}).encode())
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [dict(man, mediaType="application/vnd.oci.image.manifest.v1+json",
          annotations={"org.opencontainers.image.ref.name": "deb"})]}, open(f"{out}/index.json", "w"))
PY
STORE=$W/store
IMAGE=oci:$W/oci:deb
"$BFCFS" --root "$STORE" pull -q "$IMAGE"
mapfile -t LAYERS < <("$BFCFS" --root "$STORE" inspect --json "$IMAGE" | python3 -c '
import json,sys; [print(l["bfc"]) for l in json.load(sys.stdin)["layers"]]')
for i in "${!LAYERS[@]}"; do
  mkdir -p "$W/L$i"; "$BFCFS" extract "${LAYERS[$i]}" -C "$W/L$i" >/dev/null
done
LOWER="$W/L1:$W/L0"

mount_tool() { # $1 = bfcfs | fuse-overlayfs | overlayfs; fresh upper each time
  rm -rf "$W/up" "$W/up.work" "$W/work"; mkdir -p "$W/up" "$W/work"
  case $1 in
    bfcfs) "$BFCFS" --root "$STORE" mount --upper "$W/up" "$IMAGE" "$MNT" ;;
    fuse-overlayfs) fuse-overlayfs -o "lowerdir=$LOWER,upperdir=$W/up,workdir=$W/work" "$MNT" ;;
    overlayfs) mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$W/up,workdir=$W/work" "$MNT" ;;
  esac
}
unmount() { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
server_rss_kib() { # the process serving $MNT (bfcfs: its server, as `bfcfs mounts` names it)
  local pid
  pid=$("$BFCFS" mounts --json 2>/dev/null | python3 -c 'import json,sys; print(next((str(m["server_pid"]) for m in json.load(sys.stdin) if m["mountpoint"] == sys.argv[1]), ""))' "$MNT" || true)
  [ -n "$pid" ] || pid=$(pgrep -f -n -- " $MNT\$" || true)
  [ -n "$pid" ] && awk '/VmRSS/ {print $2}' "/proc/$pid/status" || echo 0
}

declare -A R
TOOLS=(bfcfs fuse-overlayfs overlayfs)
for run in $(seq "$RUNS"); do
  has read || break
  for t in "${TOOLS[@]}"; do
    drop_caches; t0=$(now); mount_tool "$t"; ls "$MNT" >/dev/null; R[$t,mount]+="$(since "$t0") "
    t0=$(now); find "$MNT" >/dev/null; R[$t,find]+="$(since "$t0") "
    t0=$(now); ls -lR "$MNT" >/dev/null; R[$t,lslr]+="$(since "$t0") "
    unmount
    drop_caches; mount_tool "$t"
    t0=$(now); tar -cf /dev/null -C "$MNT" . 2>/dev/null; R[$t,tarcold]+="$(since "$t0") "
    t0=$(now); tar -cf /dev/null -C "$MNT" . 2>/dev/null; R[$t,tarwarm]+="$(since "$t0") "
    R[$t,rss]+="$(server_rss_kib "$t") "
    unmount
    echo "run $run $t done" >&2
  done
done

# Metadata rows: small-file trees made once.
for n in 5000 40000; do
  has meta || { has requests && [ "$n" = 5000 ]; } || break
  small_files_tar "$n" "$W/small$n.tar"
done
for run in $(seq "$RUNS"); do
  has meta || break
  for t in "${TOOLS[@]}"; do
    for n in 5000 40000; do
      mount_tool "$t"; ls -lR "$MNT" >/dev/null; mkdir "$MNT/tmp/u"
      t0=$(now); tar -xf "$W/small$n.tar" -C "$MNT/tmp/u"; R[$t,untar$n]+="$(since "$t0") "
      t0=$(now); rm -rf "$MNT/tmp/u"; R[$t,rm$n]+="$(since "$t0") "
      unmount
    done
    echo "run $run $t metadata done" >&2
  done
done

# Requests per opcode (SECTIONS=requests): tracefs events of this mount's connection only (the
# other FUSE mounts of the machine have other connections), in a trace instance of our own.
if has requests; then
TRACE=/sys/kernel/tracing/instances/bfcfs-bench-$$
mkdir "$TRACE"
trap 'cleanup; rmdir "$TRACE" 2>/dev/null || true' EXIT
echo 65536 >"$TRACE/buffer_size_kb"
trace_on() { # $1 = connection (the minor of the mount's st_dev)
  echo 0 >"$TRACE/tracing_on"; : >"$TRACE/trace"
  for e in send end; do
    echo "connection == $1" >"$TRACE/events/fuse/fuse_request_$e/filter"
    echo 1 >"$TRACE/events/fuse/fuse_request_$e/enable"
  done
  echo 1 >"$TRACE/tracing_on"
}
trace_off() { # $1 tool, $2 workload: appends "tool workload opcode[/errno] count" to $W/requests
  echo 0 >"$TRACE/tracing_on"
  grep -q 'overrun: [1-9]' "$TRACE"/per_cpu/cpu*/stats && echo "trace buffer overrun: counts are low" >&2
  awk -v t="$1" -v w="$2" '
    function stamp() { for (i = 1; i < NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) return $i + 0 }
    / fuse_request_send: / { for (i = 1; i < NF; i++) { if ($i == "req") u = $(i + 1); if ($i == "opcode") o = $(i + 2) }
                            gsub(/[()]|FUSE_/, "", o); op[u] = o; t0[u] = stamp() }
    / fuse_request_end: /  { for (i = 1; i < NF; i++) { if ($i == "req") u = $(i + 1); if ($i == "error") e = $(i + 1) }
                            if (u in op) { k = op[u] (e == 0 ? "" : "/" e); n[k]++; us[k] += (stamp() - t0[u]) * 1e6; delete op[u] } }
    END { for (u in op) n[op[u] "/unanswered"]++; for (k in n) print t, w, k, n[k], us[k] + 0 }' "$TRACE/trace" >>"$W/requests"
}
: >"$W/requests"
for t in bfcfs fuse-overlayfs; do
  mount_tool "$t"; conn=$(mountpoint -d "$MNT"); conn=${conn#*:}
  ls -lR "$MNT" >/dev/null; mkdir "$MNT/tmp/u"
  trace_on "$conn"; tar -xf "$W/small5000.tar" -C "$MNT/tmp/u"; trace_off "$t" untar
  trace_on "$conn"; rm -rf "$MNT/tmp/u"; trace_off "$t" rm
  ls -lR "$MNT" >/dev/null
  trace_on "$conn"; ls -lR "$MNT" >/dev/null; trace_off "$t" lslr
  tar -cf - -C "$MNT" . 2>/dev/null | wc -c >/dev/null
  trace_on "$conn"; tar -cf - -C "$MNT" . 2>/dev/null | wc -c >/dev/null; trace_off "$t" tar
  unmount
done
for e in send end; do echo 0 >"$TRACE/events/fuse/fuse_request_$e/enable"; done
printf '\nrequests per opcode (errno after /), bfcfs %s; untar/rm: 5,000 files in 10 directories\n' "$(git rev-parse --short HEAD)"
python3 - "$W/requests" <<'PY'
import collections, sys
n, us = collections.Counter(), collections.Counter()
for line in open(sys.argv[1]):
    t, w, k, c, u = line.split(); n[t, w, k] += int(c); us[t, w] += float(u)
works = ["untar", "rm", "lslr", "tar"]
heads = {"untar": "untar 5,000", "rm": "rm -rf 5,000", "lslr": "ls -lR (warm)", "tar": "tar c (warm)"}
for t in ["bfcfs", "fuse-overlayfs"]:
    keys = sorted({k for (tt, w, k) in n if tt == t})
    print(f"\n{t}\n| request | " + " | ".join(heads[w] for w in works) + " |")
    print("|---|" + "---:|" * len(works))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(n[t, w, k]) for w in works) + " |")
    tot = [sum(c for (tt, ww, _), c in n.items() if tt == t and ww == w) for w in works]
    print("| total | " + " | ".join(map(str, tot)) + " |")
    print(f"| per file (untar, rm) | {tot[0] / 5000:.2f} | {tot[1] / 5000:.2f} | | |")
    print("| mean send→reply µs | " + " | ".join(f"{us[t, w] / max(1, x):.1f}" for w, x in zip(works, tot)) + " |")
PY
exit 0
fi

# mkdir during the copy-up of a 1 GiB lower file: a third image layer with that file.
if has copyup; then
head -c $((1 << 30)) /dev/urandom >"$W/big.bin"
mkdir -p "$W/L2/big" && mv "$W/big.bin" "$W/L2/big/file"
tar -cf "$W/tars/2.tar" -C "$W/L2" .
PYTHONPATH=$W python3 - "$W/oci" "$W/tars/2.tar" <<'PY'
import json, sys, ociput
from ociput import put
out, tar = sys.argv[1], sys.argv[2]
ociput.out = out
idx = json.load(open(f"{out}/index.json"))
man = json.load(open(f"{out}/blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
cfg = json.load(open(f"{out}/blobs/sha256/" + man["config"]["digest"][7:]))
layer = dict(put(tar), mediaType="application/vnd.oci.image.layer.v1.tar")
man["layers"].append(layer); cfg["rootfs"]["diff_ids"].append(layer["digest"])
man["config"] = dict(put(data=json.dumps(cfg).encode()), mediaType="application/vnd.oci.image.config.v1+json")
m = put(data=json.dumps(man).encode())
idx["manifests"].append(dict(m, mediaType="application/vnd.oci.image.manifest.v1+json",
    annotations={"org.opencontainers.image.ref.name": "big"}))
json.dump(idx, open(f"{out}/index.json", "w"))
PY
"$BFCFS" --root "$STORE" pull -q "oci:$W/oci:big"
IMAGE=oci:$W/oci:big LOWER="$W/L2:$W/L1:$W/L0"
for run in $(seq "$RUNS"); do
  for t in "${TOOLS[@]}"; do
    drop_caches; mount_tool "$t"; ls "$MNT/big" "$MNT/tmp" >/dev/null
    python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_WRONLY))' "$MNT/big/file" &
    cp=$!
    sleep 0.3
    t0=$(now); mkdir "$MNT/tmp/during-copy-up"; R[$t,mkdir]+="$(since "$t0") "
    wait "$cp"; unmount
  done
done
fi

med() { [ -n "${R[$1,$2]:-}" ] || { echo 0; return; }; printf '%s\n' ${R[$1,$2]} | median; }
ratio() { if [ "$(echo "$2 > 0" | bc)" = 1 ]; then echo "$1 / $2" | bc -l; else echo 0; fi; }
ENTRIES=$(find "$ROOTFS" | wc -l)
printf '\nimage: debian bookworm minbase, 2 layers, %s entries · %s runs, medians · bfcfs %s%s\n' \
  "$ENTRIES" "$RUNS" "$(git rev-parse --short HEAD)" "$([ ${#SPINNERS[@]} = 0 ] || echo ' · SPIN=1')"
printf '| workload | bfcfs | fuse-overlayfs | kernel overlayfs | bfcfs / fuse-overlayfs | bfcfs / overlayfs |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for w in mount find lslr tarcold tarwarm untar5000 untar40000 rm5000 rm40000 mkdir; do
  a=$(med bfcfs $w); b=$(med fuse-overlayfs $w); c=$(med overlayfs $w)
  label=$w; case $w in mount) label="mount + ls (cold)";; find) label="find (cold)";; lslr) label="ls -lR (warm)";;
    tarcold) label="tar (cold)";; tarwarm) label="tar (warm)";; untar5000) label="untar 5,000 files";;
    untar40000) label="untar 40,000 files";; rm5000) label="rm -rf 5,000 files";; rm40000) label="rm -rf 40,000 files";;
    mkdir) label="mkdir during a 1 GiB copy-up";; esac
  [ "$a" = 0 ] && continue
  printf '| %s | %.3f s | %.3f s | %.3f s | %.2f× | %.2f× |\n' "$label" "$a" "$b" "$c" \
    "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
done
a=$(med bfcfs rss); b=$(med fuse-overlayfs rss)
has read && printf '| server RSS after tar | %.1f MiB | %.1f MiB | (kernel) | %.2f× | |\n' \
  "$(echo "$a/1024" | bc -l)" "$(echo "$b/1024" | bc -l)" "$(ratio "$a" "$b")"
if has meta; then
  printf '\nper-file cost, 40,000 files over 5,000 files (1.0 = no growth with size):\n'
  for t in "${TOOLS[@]}"; do
    printf '  %-15s untar %.2f×   rm -rf %.2f×\n' "$t" \
      "$(ratio "$(med "$t" untar40000)" "$(echo "8 * $(med "$t" untar5000)" | bc -l)")" \
      "$(ratio "$(med "$t" rm40000)" "$(echo "8 * $(med "$t" rm5000)" | bc -l)")"
  done
fi
has layers || exit 0

# Lookup cost vs layer count.
printf '\n| layers | lstat of 5000 files, fresh mount | per lookup | vs 1 layer |\n|---:|---:|---:|---:|\n'
BASE=
for n in 1 10 50; do
  python3 scripts/synth-image.py "$W/synth$n" "$n" 5000
  "$BFCFS" --root "$STORE" pull -q "oci:$W/synth$n:synth"
  T=()
  for run in $(seq "$RUNS"); do
    "$BFCFS" --root "$STORE" mount --ro "oci:$W/synth$n:synth" "$MNT"
    t=$(python3 -c '
import os, sys, time
m = sys.argv[1]; t0 = time.perf_counter()
for j in range(5000): os.lstat(f"{m}/d/f{j:05d}")
print(time.perf_counter() - t0)' "$MNT")
    T+=("$t"); unmount
  done
  m=$(printf '%s\n' "${T[@]}" | median)
  [ -z "$BASE" ] && BASE=$m
  printf '| %s | %.3f s | %.1f µs | %.2f× |\n' "$n" "$m" "$(echo "$m * 1000000 / 5000" | bc -l)" "$(echo "$m / $BASE" | bc -l)"
done
