#!/bin/bash
# thunder's main job on one machine: an operator asks thunder-api for a
# cluster of VMs from one image, and they boot at once through a relay
# tree that thunder-api planned and pushed to the nodes.
#
#   origin thunderd ── node1 ── node2 ── node3     (the tree is thunder-api's
#   (the image)        each node: a thunderd, a     choice; see step 6)
#                      libvirt pool, two VMs
#
# It installs the Debian packages, builds thunder, builds the test guest
# from Debian packages (tests/guest/: Debian's cloud kernel and busybox on
# a 64 MiB disk), writes its manifest and serves it from an origin
# thunderd; starts libvirtd (no systemd needed), thunder-api on its
# defaults (127.0.0.1:7080) and three node daemons that register with it:
# node1 on the embedded defaults (libvirt pool "thunder" at
# /var/lib/thunder/pool, socket /run/thunder/thunderd.sock), node2 and
# node3 with pools of their own.  Everything between them is TLS with
# client certificates of a fleet CA made here (thunderctl pki init/issue):
# NBD (--tls require, nbds://) and HTTPS (thunder-api --tls require,
# --control-tls require); only the guests' Unix sockets are plaintext.
# Then, as an operator would (with --cacert/--cert/--key):
#   thunderctl api image register guest --origin nbds://…
#   thunderctl cluster create --name demo --image guest --count 6 --wait
# thunder-api places the six VMs (spread: two per node), plans the relay
# tree, attaches the image on each node with its upstream list, creates
# the VMs and follows them until they run.  Each guest reads its disk
# through its node, prints the checksum of what it read, writes to its
# overlay and powers off.  The demo checks the checksums, shows the tree
# and that the origin sent the image about once for all six VMs, deletes
# the cluster through the API and cleans up.
#
#   scripts/demo.sh            (as root on Debian 12)
# Environment: DEMO_PORT (origin's NBD port on 127.0.0.1, default 10809;
# the nodes use the next three, their control endpoints 7071-7073).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh build

THUNDERD=$PWD/build/src/daemon/thunderd
THUNDERCTL=$PWD/build/src/cli/thunderctl
THUNDER_API=$PWD/build/src/api/thunder-api
port=${DEMO_PORT:-10809}
api=https://127.0.0.1:7080

work=$(mktemp -d /tmp/thunder-demo.XXXXXX)
chmod 0755 "$work"   # QEMU (user libvirt-qemu) reaches node sockets in it
declare -A pid_of=() ctl_of=()
token=$work/token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token"
chmod 600 "$token"
id=""
# The fleet's certificates: one directory per host (CN = its name), "op"
# for the operator's thunderctl, curl and nbdinfo.
pki=$work/pki
op_tls=(--cacert "$pki/op/ca-cert.pem" --cert "$pki/op/client-cert.pem"
        --key "$pki/op/client-key.pem")
ctl() { "$THUNDERCTL" --api "$api" --token-file "$token" "${op_tls[@]}" "$@"; }

cleanup() {
  set +e
  if [ -n "$id" ]; then
    ctl cluster delete "$id" --wait >/dev/null 2>&1
  fi
  for n in node3 node2 node1 api origin; do
    [ -n "${pid_of[$n]:-}" ] && kill "${pid_of[$n]}" 2>/dev/null && wait "${pid_of[$n]}" 2>/dev/null
  done
  for n in node2 node3; do   # the demo's extra pools; "thunder" stays
    virsh -q pool-destroy "thunder-demo-$n" >/dev/null 2>&1
    virsh -q pool-undefine "thunder-demo-$n" >/dev/null 2>&1
  done
  rm -f /var/log/thunder/vm/demo-000?.log
  rm -rf "$work" /var/lib/thunder/demo
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
counters() { curl -s "${op_tls[@]}" -H "Authorization: Bearer $(cat "$token")" "$1/v1/images/guest" | jq -c .counters; }

# start NAME PROGRAM ARGS...: a daemon, waiting for "ready" in its log.
start() {
  local name=$1 prog=$2
  shift 2
  "$prog" "$@" 2> "$work/$name.log" &
  pid_of[$name]=$!
  for _ in $(seq 100); do
    grep -qs ready "$work/$name.log" && return 0
    kill -0 "${pid_of[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: $name did not start" >&2
  cat "$work/$name.log" >&2
  exit 1
}

step "1. the image: a tiny Debian guest (cloud kernel + busybox), built from Debian packages"
./tests/guest/build-guest.sh "$work/guest" >/dev/null
# shellcheck source=/dev/null
. "$work/guest/guest.env"
mkdir "$work/images"
cp "$work/guest/guest.img" "$work/images/guest.img"
"$THUNDERCTL" image add guest "$work/images/guest.img"

step "2. the origin serves it over NBD (TLS: a fleet CA and a certificate per host)"
mkdir -m 0700 "$pki"
"$THUNDERCTL" pki init "$pki/ca" >/dev/null
for h in origin api node1 node2 node3 op; do
  "$THUNDERCTL" pki issue "$h" --ca "$pki/ca" --out "$pki/$h" --ip 127.0.0.1 --dns localhost >/dev/null
done
start origin "$THUNDERD" --origin --images "$work/images" --socket none \
  --listen "127.0.0.1:$port" --control 127.0.0.1:0 --token-file "$token" \
  --tls require --control-tls require --tls-certificates "$pki/origin"
ctl_of[origin]=https://127.0.0.1:$(sed -n 's/.*control endpoint on .* port \([0-9]*\).*/\1/p' "$work/origin.log" | head -n1)
nbdinfo "nbds://127.0.0.1:$port/guest?tls-certificates=$pki/op" | head -n 4

step "3. libvirtd and virtlogd (started here without systemd if they are not running)"
./scripts/start-libvirt.sh

step "4. thunder-api on its defaults ($api), state in $work/api.db"
start api "$THUNDER_API" --db "$work/api.db" --token-file "$token" \
  --ui-dir "$PWD/src/api/ui" --tls require --tls-certificates "$pki/api"
tail -n 1 "$work/api.log"
echo "status page: $api/ui/ (the operator token is in $token; HTTPS with the client certificate in $pki/op); each node's metrics: /metrics on its control endpoint"

step "5. three node daemons register with it: node1 on the defaults, node2 and node3 with their own pools"
for i in 1 2 3; do
  args=(--cache "$work/cache$i" --listen "127.0.0.1:$((port + i))"
        --control "127.0.0.1:$((7070 + i))" --token-file "$token"
        --api "$api" --node-name "node$i" --rack "rack$(( (i + 1) / 2 ))"
        --tls require --control-tls require --tls-certificates "$pki/node$i")
  if [ "$i" -gt 1 ]; then
    args+=(--socket "$work/node$i.sock" --pool "thunder-demo-node$i"
           --pool-path "/var/lib/thunder/demo/node$i/pool")
  fi
  start "node$i" "$THUNDERD" "${args[@]}"
  ctl_of[node$i]=https://127.0.0.1:$((7070 + i))
done
for _ in $(seq 50); do
  [ "$(ctl api node list --json 2>/dev/null | jq '[.nodes[] | select(.state == "ready")] | length')" = 3 ] && break
  sleep 0.2
done
ctl api node list

sent_before=$(counters "${ctl_of[origin]}" | jq .served_remote_bytes)

step "6. the operator: register the image, ask for six VMs, wait until they run"
ctl api image register guest --origin "nbds://127.0.0.1:$port"
start_s=$(date +%s.%N)
id=$(ctl cluster create --name demo --image guest --count 6 --vcpus 1 --memory 128 --wait --timeout 300)
running_s=$(date +%s.%N)
ctl cluster tree "$id"
for i in 0 1 2 3 4 5; do
  for _ in $(seq 1200); do
    grep -qs 'THUNDER-GUEST: done' "/var/log/thunder/vm/demo-000$i.log" && break
    sleep 0.1
  done
done
end_s=$(date +%s.%N)
awk -v s="$start_s" -v r="$running_s" -v e="$end_s" 'BEGIN {
  printf "six VMs running %.1f s after the request; booted, read their disks and done %.1f s after it\n", r - s, e - s }'
ok=true
for i in 0 1 2 3 4 5; do
  log=/var/log/thunder/vm/demo-000$i.log
  printf 'demo-000%s: %s\n' "$i" "$(tr -d '\r' < "$log" | grep '^THUNDER-GUEST: sha256' || echo 'no checksum')"
  grep -q "THUNDER-GUEST: sha256 $EXPECT_SHA256 bytes" "$log" || ok=false
done
echo "expected sha256 $EXPECT_SHA256 (the image minus its 1 MiB scratch region)"

step "7. what crossed the tree"
for n in origin node1 node2 node3; do
  printf '%-7s %s\n' "$n" "$(counters "${ctl_of[$n]}" |
    jq -r '"sent to children \(.served_remote_bytes) B, to local VMs \(.served_local_bytes // 0) B, fetched \(.fetches // "-") blocks"')"
done
sent=$(( $(counters "${ctl_of[origin]}" | jq .served_remote_bytes) - sent_before ))
echo "the origin sent $sent bytes for six VMs (the image is $IMAGE_SIZE bytes)"
[ "$(sha256sum < "$work/images/guest.img")" = "$(sha256sum < "$work/guest/guest.img")" ] ||
  { echo "the image changed: the guests' writes leaked into it" >&2; ok=false; }

step "8. clean up: thunderctl cluster delete (VMs, volumes, attachments), stop the daemons"
ctl cluster delete "$id" --wait
id=""
trap - EXIT
cleanup
if $ok && [ "$sent" -le $(( IMAGE_SIZE * 105 / 100 )) ]; then
  printf '\n\033[1;32mdemo: OK — six VMs booted at once from one image through a relay tree planned by thunder-api; the origin sent the image once\033[0m\n'
else
  printf '\n\033[1;31mdemo: FAILED — a guest read wrong bytes or did not finish, or the origin sent the image more than once\033[0m\n'
  exit 1
fi
