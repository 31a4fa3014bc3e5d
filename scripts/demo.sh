#!/bin/bash
# thunder's main job on one machine, on the embedded defaults.
#
# This stage of thunder (the origin daemon): install and build, generate a
# sample VM image, write its manifest, serve it with thunderd over NBD (a
# Unix socket and TCP on loopback), read it back with real NBD clients
# (nbdinfo, nbdcopy) and show that the bytes match.  Later stages grow this
# into a demo cluster booting through a relay tree.
#
#   scripts/demo.sh            (as root on Debian 12)
# Environment: DEMO_IMAGE_MB (default 256), DEMO_PORT (default 10809).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh build

THUNDERD=$PWD/build/src/daemon/thunderd
THUNDERCTL=$PWD/build/src/cli/thunderctl
size_mb=${DEMO_IMAGE_MB:-256}
port=${DEMO_PORT:-10809}

work=$(mktemp -d /tmp/thunder-demo.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a sample image: $size_mb MiB, half data, half zeroes (like a fresh VM disk)"
mkdir -p "$work/images"
img=$work/images/sample.img
head -c $((size_mb / 2 * 1024 * 1024)) /dev/urandom > "$img"
truncate -s "${size_mb}M" "$img"
ls -l "$img"

step "2. its manifest: one SHA-256 per 64 KiB block"
"$THUNDERCTL" image add sample "$img"
head -c 400 "$work/images/sample.manifest.json"; echo " ..."

step "3. thunderd serving it (origin mode)"
sock=$work/thunderd.sock
"$THUNDERD" --origin --images "$work/images" --socket "$sock" \
  --socket-group root --listen "127.0.0.1:$port" 2> "$work/thunderd.log" &
pid=$!
for _ in $(seq 100); do
  grep -q ready "$work/thunderd.log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/thunderd.log"; exit 1; }
  sleep 0.1
done
cat "$work/thunderd.log"

step "4. nbdinfo: the exports, and the sample export over TCP"
nbdinfo --list "nbd+unix:///?socket=$sock"
nbdinfo "nbd://127.0.0.1:$port/sample"

step "5. nbdcopy it back, over the Unix socket and over TCP"
start=$(date +%s.%N)
nbdcopy "nbd+unix:///sample?socket=$sock" "$work/copy-unix.img"
nbdcopy "nbd://127.0.0.1:$port/sample" "$work/copy-tcp.img"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v mb="$size_mb" \
  'BEGIN { printf "copied 2 x %d MiB in %.2f s (%.0f MB/s)\n", mb, e - s, 2 * mb * 1.048576 / (e - s) }'

want=$(sha256sum < "$img" | cut -d' ' -f1)
got_unix=$(sha256sum < "$work/copy-unix.img" | cut -d' ' -f1)
got_tcp=$(sha256sum < "$work/copy-tcp.img" | cut -d' ' -f1)
printf '%-22s %s\n' "image" "$want" "via unix socket" "$got_unix" "via tcp" "$got_tcp"

step "6. stop thunderd (SIGTERM)"
rc=0
kill -TERM "$pid"; wait "$pid" || rc=$?; pid=
tail -n 2 "$work/thunderd.log"

if [ "$want" = "$got_unix" ] && [ "$want" = "$got_tcp" ] && [ $rc -eq 0 ]; then
  printf '\n\033[1;32mdemo: OK — the bytes served by thunderd match the image\033[0m\n'
else
  printf '\n\033[1;31mdemo: FAILED — the bytes differ or thunderd did not stop cleanly\033[0m\n'
  exit 1
fi
