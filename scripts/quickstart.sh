#!/usr/bin/env bash
# The main job on a fresh Debian machine, without internet past the package mirrors: install
# the packages, build, make a small image from files on this host (`bfcfs import`), run a
# container from it with runc (`bfcfs run`), then pack a directory into a .bfc file, verify it,
# mount it, list it and unmount it. Needs root (apt, FUSE, runc) and a Rust toolchain.
# Everything happens in a temporary directory with a store of its own, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (apt-get, FUSE mounts, runc)" >&2; exit 1; }
./scripts/setup-debian.sh
cargo build --release
bfcfs=$PWD/target/release/bfcfs
work=$(mktemp -d /tmp/bfcfs-quickstart.XXXXXX)
export BFCFS_ROOT=$work/store
cleanup() {
  if mountpoint -q "$work/mnt" 2>/dev/null; then "$bfcfs" umount "$work/mnt" || true; fi
  # Never delete through a mount that is still there.
  if grep -q " $work/" /proc/self/mounts; then
    echo "quickstart: something is still mounted under $work; left in place" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "A small root file system from this host: sh, ls, cat and the libraries they load"
rootfs=$work/rootfs
for b in sh ls cat; do
  install -D "$(command -v "$b")" "$rootfs/usr/bin/$b"
done
# ldd prints "FILE:" headers and "name => /path (addr)" lines: keep the absolute paths (a
# static binary makes ldd exit 1: that is not an error here).
{ ldd "$rootfs"/usr/bin/* || true; } | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\// && $i !~ /:$/) print $i }' \
  | sort -u | while read -r lib; do install -D "$lib" "$rootfs$lib"; done
ln -s usr/bin "$rootfs/bin"
mkdir -p "$rootfs/etc"
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'hello from an image made with bfcfs import' > "$rootfs/etc/motd"
du -sh "$rootfs"

step "bfcfs import: the directory becomes a one-layer image in the store"
"$bfcfs" import --change 'CMD ["/bin/cat", "/etc/motd"]' --change 'ENV GREETING=hi' \
  "$rootfs" quickstart:v1
"$bfcfs" images
"$bfcfs" inspect quickstart:v1

step "bfcfs run: the image's command, in a container run by runc (removed after, --rm)"
"$bfcfs" run --rm quickstart:v1

step "bfcfs run with a command of our own; its exit status passes through"
status=0
"$bfcfs" run --rm -e WHO=quickstart -w /etc quickstart:v1 \
  sh -c 'echo "$GREETING from $WHO in $(pwd); / holds:" $(ls /); exit 3' || status=$?
echo "exit status: $status"
[ "$status" = 3 ]

step "A named container keeps what its command wrote"
"$bfcfs" run --name demo quickstart:v1 sh -c 'echo written in the container > /etc/note'
"$bfcfs" run --name demo quickstart:v1 cat /etc/note
"$bfcfs" containers
"$bfcfs" rm-container demo

step "bfcfs create: pack a directory into one .bfc file (zstd), verify every byte, show it"
(cd "$work" && "$bfcfs" create -f -c zstd "$work/rootfs.bfc" rootfs)
"$bfcfs" verify --deep "$work/rootfs.bfc"
"$bfcfs" info "$work/rootfs.bfc"

step "bfcfs mount: browse the .bfc file read-only through FUSE, then unmount"
mkdir "$work/mnt"
"$bfcfs" mount "$work/rootfs.bfc" "$work/mnt"
ls -l "$work/mnt/rootfs" "$work/mnt/rootfs/usr/bin"
echo "files in the mounted .bfc: $(find "$work/mnt" -type f | wc -l)"
cat "$work/mnt/rootfs/etc/motd"
"$bfcfs" umount "$work/mnt"
echo
echo "quickstart: done (bfcfs --help lists every command; each has examples in its --help)"
