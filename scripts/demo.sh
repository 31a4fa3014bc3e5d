#!/bin/bash
# thunder's main job on one machine, on the embedded defaults.
#
# This stage of thunder (origin and node daemons): install and build,
# generate a sample VM image, write its manifest, serve it from an origin
# thunderd, read it back with real NBD clients (nbdinfo, nbdcopy), then
# relay it through a chain of two node daemons (origin → node1 → node2)
# that fetch blocks on demand, verify and cache them, and show that the
# origin sent every block once.  Later stages grow this into a demo cluster
# of VMs booting through a relay tree.
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
node_pids=()
cleanup() {
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
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
token=$work/token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token"
chmod 600 "$token"
"$THUNDERD" --origin --images "$work/images" --socket "$sock" \
  --socket-group root --listen "127.0.0.1:$port" --control 127.0.0.1:0 \
  --token-file "$token" 2> "$work/thunderd.log" &
pid=$!
wait_ready() {          # wait_ready PID LOG
  for _ in $(seq 100); do
    grep -q ready "$2" 2>/dev/null && return 0
    kill -0 "$1" 2>/dev/null || { cat "$2"; exit 1; }
    sleep 0.1
  done
  echo "demo: thunderd did not start" >&2; cat "$2"; exit 1
}
wait_ready "$pid" "$work/thunderd.log"
cat "$work/thunderd.log"
ctl_port() { sed -n 's/.*control endpoint on .* port \([0-9]*\).*/\1/p' "$1" | head -n1; }
nbd_port() { sed -n 's/.*listening on tcp 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$1" | head -n1; }
origin_ctl=http://127.0.0.1:$(ctl_port "$work/thunderd.log")

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

step "6. a relay chain: origin → node1 → node2 (node daemons with empty caches)"
for n in 1 2; do
  "$THUNDERD" --cache "$work/cache$n" --socket "$work/node$n.sock" --socket-group root \
    --listen 127.0.0.1:0 --control 127.0.0.1:0 --token-file "$token" --pool none \
    2> "$work/node$n.log" &
  node_pids+=($!)
  wait_ready "$!" "$work/node$n.log"
done
n1_nbd=nbd://127.0.0.1:$(nbd_port "$work/node1.log")
n1_ctl=http://127.0.0.1:$(ctl_port "$work/node1.log")
n2_ctl=http://127.0.0.1:$(ctl_port "$work/node2.log")
origin_before=$(curl -s -H "Authorization: Bearer $(cat "$token")" "$origin_ctl/v1/images/sample" |
                jq .counters.served_remote_bytes)
"$THUNDERCTL" --node "$n1_ctl" --token-file "$token" image attach sample \
  --upstream "nbd://127.0.0.1:$port/sample"
"$THUNDERCTL" --node "$n2_ctl" --token-file "$token" image attach sample \
  --upstream "$n1_nbd/sample" --upstream "nbd://127.0.0.1:$port/sample"

step "7. read the image through node2 (what a VM on node2 would see)"
nbdcopy "nbd+unix:///sample?socket=$work/node2.sock" "$work/copy-node2.img"
got_node2=$(sha256sum < "$work/copy-node2.img" | cut -d' ' -f1)
printf '%-22s %s\n' "image" "$want" "via node2" "$got_node2"
origin_after=$(curl -s -H "Authorization: Bearer $(cat "$token")" "$origin_ctl/v1/images/sample" |
               jq .counters.served_remote_bytes)
sent=$((origin_after - origin_before))
echo "the origin sent $sent bytes for the chain (the image is $(stat -c %s "$img") bytes: each block once)"
"$THUNDERCTL" --node "$n2_ctl" --token-file "$token" image stats sample

step "8. stop every thunderd (SIGTERM)"
rc=0
for p in "${node_pids[@]}"; do kill -TERM "$p"; wait "$p" || rc=$?; done
node_pids=()
kill -TERM "$pid"; wait "$pid" || rc=$?; pid=
tail -n 2 "$work/thunderd.log"

if [ "$want" = "$got_unix" ] && [ "$want" = "$got_tcp" ] && [ "$want" = "$got_node2" ] &&
   [ "$sent" -eq "$(stat -c %s "$img")" ] && [ $rc -eq 0 ]; then
  printf '\n\033[1;32mdemo: OK — the bytes served by the origin and relayed by two nodes match the image\033[0m\n'
else
  printf '\n\033[1;31mdemo: FAILED — the bytes differ, a block crossed twice, or a thunderd did not stop cleanly\033[0m\n'
  exit 1
fi
