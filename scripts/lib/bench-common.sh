# Shared by scripts/bench-{pull,push,lazy,union}.sh; sourced after `set -euo pipefail`.
# Moves to the repository root and sets ROOTFS (the Debian bookworm minbase tree bench-pull.sh
# makes with debootstrap; $BENCH_ROOTFS overrides it) and BFCFS (the binary measured; $BFCFS
# overrides it).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOTFS=${BENCH_ROOTFS:-/var/cache/bfcfs-bench/rootfs-bookworm}
BFCFS=${BFCFS:-$PWD/target/release/bfcfs}

# Exits unless ROOTFS is there.
need_rootfs() {
  [ -d "$ROOTFS/usr" ] || { echo "no $ROOTFS: run scripts/bench-pull.sh once to create it" >&2; exit 1; }
}

# Builds the release binary unless BFCFS is there.
build_bfcfs() { [ -x "$BFCFS" ] || cargo build --release --quiet; }

now() { date +%s.%N; }

# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# start_registry DIR: Debian's docker-registry on a free port of 127.0.0.1, storing in DIR (its
# config in DIR.yml). Sets PORT and REG_PID (the caller's cleanup kills it) and returns once it
# answers.
start_registry() {
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$1.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $1}}
http: {addr: 127.0.0.1:$PORT, secret: bench}
YML
  docker-registry serve "$1.yml" >/dev/null 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && return; sleep 0.1; done
  echo "docker-registry did not start on port $PORT" >&2
  exit 1
}

# small_files_tar N OUT: a tar of N files of 100 bytes, 500 per directory (d000/f000000, ...),
# the metadata workload of bench-union.sh and bench-roundtrip.sh.
small_files_tar() {
  local dir
  dir=$(mktemp -d "$(dirname "$2")/small.XXXXXX")
  python3 - "$dir" "$1" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = f"{root}/d{i // 500:03d}"
    if i % 500 == 0: os.makedirs(d)
    with open(f"{d}/f{i:06d}", "wb") as f: f.write(b"x" * 100)
PY
  tar -cf "$2" -C "$dir" . && rm -rf "$dir"
}
