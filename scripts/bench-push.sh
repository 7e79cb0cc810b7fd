#!/usr/bin/env bash
# Push benchmark (issue 11): the Debian bookworm minbase rootfs as a one-layer OCI image (umoci),
# pulled into a store, then pushed to a fresh local docker-registry on 127.0.0.1 each run by
#   A) bfcfs push --compression-format zstd   (tar rebuilt from the tar-split side file + the BFC
#      file, compressed with zstd -3)
#   B) skopeo copy --dest-compress-format zstd  (decompresses the layout's gzip blob, zstd -3)
#   C) bfcfs push --format bfc                 (the ordinary gzip image + the layer as a zstd BFC)
# and checks that A keeps the config digest. Prints wall and user seconds of each run, the
# medians, and the BFC layer's size and index range (what a lazy pull fetches first).
# Usage: scripts/bench-push.sh [RUNS]   (root; needs umoci, skopeo, docker-registry, curl)
set -euo pipefail
RUNS=${1:-3}
. "$(dirname "$0")/lib/bench-common.sh"
need_rootfs
build_bfcfs

W=$(mktemp -d /var/tmp/bfcfs-bench-push.XXXXXX)
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:deb" >/dev/null
umoci insert --image "$W/oci:deb" "$ROOTFS" / >/dev/null
"$BFCFS" --root "$W/store" pull -q "oci:$W/oci:deb"
IMG="oci:$W/oci:deb"

fresh_registry() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
  rm -rf "$W/reg"
  start_registry "$W/reg"
}
measure() { # label command...
  /usr/bin/time -f "%e %U" -o "$W/t" "${@:2}" >/dev/null
  read -r wall user <"$W/t"
  echo "$1 $wall $user" | tee -a "$W/results"
}
for i in $(seq "$RUNS"); do
  fresh_registry
  rm -f "$W/store/blob-info.json"
  measure A "$BFCFS" --root "$W/store" push -q --compression-format zstd "$IMG" "127.0.0.1:$PORT/a:v1"
  measure B skopeo copy --quiet --dest-tls-verify=false --dest-compress-format zstd "oci:$W/oci:deb" "docker://127.0.0.1:$PORT/b:v1"
  rm -f "$W/store/blob-info.json"
  measure C "$BFCFS" --root "$W/store" push -q --format bfc "$IMG" "127.0.0.1:$PORT/c:v1"
done
want=$(python3 -c "import json,sys; i=json.load(open('$W/oci/index.json')); d=i['manifests'][0]['digest'][7:]; print(json.load(open('$W/oci/blobs/sha256/'+d))['config']['digest'])")
got=$(skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:$PORT/a:v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["digest"])')
echo "config digest kept by A: $([ "$want" = "$got" ] && echo yes || echo "NO ($want vs $got)")"
python3 - "$W/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for k in "ABC":
    w = [float(r[1]) for r in rows if r[0] == k]; u = [float(r[2]) for r in rows if r[0] == k]
    print(f"{k}: median wall {statistics.median(w):.2f} s, user {statistics.median(u):.2f} s over {len(w)} runs")
EOF
idx=$(curl -s -H 'Accept: application/vnd.oci.image.index.v1+json' "http://127.0.0.1:$PORT/v2/c/manifests/v1")
bfc=$(echo "$idx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][1]["digest"])')
curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$PORT/v2/c/manifests/$bfc" |
  python3 -c 'import json,sys
for l in json.load(sys.stdin)["layers"]:
    n, size = int(l["annotations"]["io.bfcfs.bfc.index.length"]), l["size"]
    print("BFC layer %d bytes; index range %d bytes (%.2f%%)" % (size, n, 100.0 * n / size))'
