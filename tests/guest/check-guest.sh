#!/bin/bash
# check-guest.sh — build the test guest and prove it boots, by hand or in CI.
#
# Usage: tests/guest/check-guest.sh OUTDIR
#
# 1. builds OUTDIR/guest.img (build-guest.sh)
# 2. boots a copy of it twice as a raw file: boot 1 then boot 2, same checksum
# 3. serves guest.img read-only with qemu-nbd and boots twice from a qcow2
#    overlay whose backing file is the NBD export, as thunder's VMs do
# 4. checks that guest.img did not change
# Prints the wall time of each boot.  Exit 0 pass, 1 fail, 77 skip (no QEMU).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/guest-functions.sh"

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
outdir=$1

for p in qemu-system-x86_64 qemu-nbd qemu-img; do
  command -v "$p" >/dev/null || { echo "SKIP: $0: $p not found" >&2; exit 77; }
done

"$here/build-guest.sh" "$outdir"
img=$outdir/guest.img
env=$outdir/guest.env
before=$(sha256sum < "$img")

tmp=$(mktemp -d)
nbd_pid=
cleanup() {
  [ -z "$nbd_pid" ] || kill "$nbd_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# boot NAME BOOTNO DRIVE-OPTIONS...: one boot, checked, timed.
boot() {
  local name=$1 n=$2 t0 t1
  shift 2
  t0=$(date +%s%N)
  guest_qemu_boot "$tmp/$name.log" 300 "$@" || { echo "FAIL: $name: qemu exited $?" >&2; exit 1; }
  t1=$(date +%s%N)
  guest_check_log "$tmp/$name.log" "$env" "$n" || { echo "FAIL: $name" >&2; exit 1; }
  echo "check-guest: $name: ok in $(( (t1 - t0) / 1000000 )) ms"
}

cp "$img" "$tmp/copy.img"
boot raw-1 1 -drive "file=$tmp/copy.img,format=raw,if=virtio"
boot raw-2 2 -drive "file=$tmp/copy.img,format=raw,if=virtio"
echo "--- serial console of raw-1:"
tr -d '\r' < "$tmp/raw-1.log"
echo "---"

qemu-nbd -r -f raw -t -k "$tmp/nbd.sock" "$img" &
nbd_pid=$!
for _ in $(seq 50); do [ -S "$tmp/nbd.sock" ] && break; sleep 0.1; done
[ -S "$tmp/nbd.sock" ] || { echo "FAIL: qemu-nbd did not start" >&2; exit 1; }
# A bigger virtual disk than the image, like a VM volume with more capacity.
qemu-img create -q -f qcow2 -u -F raw -b "nbd+unix:///?socket=$tmp/nbd.sock" "$tmp/overlay.qcow2" 1G
boot nbd-overlay-1 1 -drive "file=$tmp/overlay.qcow2,format=qcow2,if=virtio"
boot nbd-overlay-2 2 -drive "file=$tmp/overlay.qcow2,format=qcow2,if=virtio"

[ "$(sha256sum < "$img")" = "$before" ] || { echo "FAIL: $img changed" >&2; exit 1; }
echo "check-guest: $img unchanged; all boots ok"
