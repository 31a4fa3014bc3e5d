#!/bin/bash
# thunder's main job on one machine: a small cluster of VMs booting at once
# from one image through a relay tree, on the embedded defaults.
#
#   origin thunderd ── node1 ──┬── node2        each node: a thunderd, a libvirt
#   (the image)        (vm1)   └── node3        pool and one VM booting from it
#                                (vm2, vm3)
#
# It installs the Debian packages, builds thunder, builds the test guest
# from Debian packages (tests/guest/: Debian's cloud kernel and busybox on a
# 64 MiB disk), writes its manifest, serves it from an origin thunderd,
# starts libvirtd (no systemd needed) and three node daemons: node1 on the
# defaults (libvirt pool "thunder" at /var/lib/thunder/pool, socket
# /run/thunder/thunderd.sock), node2 and node3 with pools of their own,
# children of node1.  Attaching the image makes each node's anchor volume;
# then "thunderctl vm create" boots one VM per node, all at once.  Each
# guest reads its disk through its node (node2 and node3 through node1),
# prints the checksum of what it read, writes to its disk (its overlay)
# and powers off.  The demo checks the checksums, shows that the origin
# sent each block at most once for the whole tree, and cleans up.
#
#   scripts/demo.sh            (as root on Debian 12)
# Environment: DEMO_PORT (origin's NBD port on 127.0.0.1, default 10809).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh build

THUNDERD=$PWD/build/src/daemon/thunderd
THUNDERCTL=$PWD/build/src/cli/thunderctl
port=${DEMO_PORT:-10809}

work=$(mktemp -d /tmp/thunder-demo.XXXXXX)
chmod 0755 "$work"   # QEMU (user libvirt-qemu) reaches node sockets in it
declare -A pid_of=() ctl_of=() nbd_of=() pool_of=() path_of=() sock_of=()
vms=()
token=$work/token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token"
chmod 600 "$token"

cleanup() {
  set +e
  for vm in "${vms[@]}"; do "$THUNDERCTL" vm delete "$vm" --pool "${pool_of[$vm]}" >/dev/null 2>&1; done
  for n in node3 node2 node1; do
    [ -n "${ctl_of[$n]:-}" ] &&
      "$THUNDERCTL" --node "${ctl_of[$n]}" --token-file "$token" image detach guest >/dev/null 2>&1
  done
  for n in node3 node2 node1 origin; do
    [ -n "${pid_of[$n]:-}" ] && kill "${pid_of[$n]}" 2>/dev/null && wait "${pid_of[$n]}" 2>/dev/null
  done
  for n in node2 node3; do   # the demo's extra pools; "thunder" stays
    virsh -q pool-destroy "thunder-demo-$n" >/dev/null 2>&1
    virsh -q pool-undefine "thunder-demo-$n" >/dev/null 2>&1
  done
  rm -rf "$work" /var/lib/thunder/demo
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ctl_port() { sed -n 's/.*control endpoint on .* port \([0-9]*\).*/\1/p' "$1" | head -n1; }
nbd_port() { sed -n 's/.*listening on tcp 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$1" | head -n1; }
counters() { curl -s -H "Authorization: Bearer $(cat "$token")" "$1/v1/images/guest" | jq -c .counters; }

# start NAME ARGS...: a thunderd, waiting for "ready" in its log.
start() {
  local name=$1
  shift
  "$THUNDERD" --listen 127.0.0.1:0 --control 127.0.0.1:0 --token-file "$token" "$@" \
    2> "$work/$name.log" &
  pid_of[$name]=$!
  for _ in $(seq 100); do
    grep -qs ready "$work/$name.log" && break
    kill -0 "${pid_of[$name]}" 2>/dev/null || { cat "$work/$name.log"; exit 1; }
    sleep 0.1
  done
  grep -q ready "$work/$name.log" || { echo "demo: $name did not start" >&2; cat "$work/$name.log"; exit 1; }
  ctl_of[$name]=http://127.0.0.1:$(ctl_port "$work/$name.log")
  nbd_of[$name]=nbd://127.0.0.1:$(nbd_port "$work/$name.log")
}

step "1. the image: a tiny Debian guest (cloud kernel + busybox), built from Debian packages"
./tests/guest/build-guest.sh "$work/guest" >/dev/null
# shellcheck source=/dev/null
. "$work/guest/guest.env"
mkdir "$work/images"
cp "$work/guest/guest.img" "$work/images/guest.img"
"$THUNDERCTL" image add guest "$work/images/guest.img"

step "2. the origin serves it over NBD"
start origin --origin --images "$work/images" --socket none --listen "127.0.0.1:$port"
nbd_of[origin]=nbd://127.0.0.1:$port
nbdinfo "${nbd_of[origin]}/guest" | head -n 4

step "3. libvirtd and virtlogd (started here without systemd if they are not running)"
./scripts/start-libvirt.sh

step "4. three node daemons: node1 on the defaults, node2 and node3 its children"
start node1 --cache "$work/cache1"
pool_of[vm1]=thunder sock_of[node1]=/run/thunder/thunderd.sock
for n in node2 node3; do
  path_of[$n]=/var/lib/thunder/demo/$n/pool
  sock_of[$n]=$work/$n.sock
  start "$n" --cache "$work/cache-$n" --socket "${sock_of[$n]}" \
    --pool "thunder-demo-$n" --pool-path "${path_of[$n]}"
done
pool_of[vm2]=thunder-demo-node2 pool_of[vm3]=thunder-demo-node3
grep -h "anchor: libvirt pool" "$work"/node*.log | sed 's/^.*anchor: /  /'

sent_before=$(counters "${ctl_of[origin]}" | jq .served_remote_bytes)

step "5. attach the image: node1 ← origin; node2, node3 ← node1 ← origin (each makes its anchor volume)"
"$THUNDERCTL" --node "${ctl_of[node1]}" --token-file "$token" image attach guest \
  --upstream "${nbd_of[origin]}/guest" >/dev/null
for n in node2 node3; do
  "$THUNDERCTL" --node "${ctl_of[$n]}" --token-file "$token" image attach guest \
    --upstream "${nbd_of[node1]}/guest" --upstream "${nbd_of[origin]}/guest" >/dev/null
done
virsh vol-list thunder
virsh vol-dumpxml --pool thunder guest.base | grep -A3 '<backingStore>'

step "6. boot one VM per node, all at once (QEMU TCG; thunderctl vm create)"
start_s=$(date +%s.%N)
for i in 1 2 3; do
  vms+=("vm$i")
  "$THUNDERCTL" vm create "vm$i" --pool "${pool_of[vm$i]}" --image guest \
    --vcpus 1 --memory 256 --console-log "$work/vm$i.log" | sed 's/^/  /'
done
for i in 1 2 3; do
  for _ in $(seq 1200); do
    [ "$(virsh domstate "vm$i" 2>/dev/null)" = "shut off" ] && break
    sleep 0.1
  done
done
end_s=$(date +%s.%N)
awk -v s="$start_s" -v e="$end_s" 'BEGIN { printf "all three VMs booted, read their disks and powered off in %.1f s\n", e - s }'
ok=true
for i in 1 2 3; do
  echo "vm$i:"
  tr -d '\r' < "$work/vm$i.log" | grep '^THUNDER-GUEST:' | sed 's/^/  /'
  grep -q "THUNDER-GUEST: sha256 $EXPECT_SHA256 bytes" "$work/vm$i.log" || ok=false
done
echo "expected sha256 $EXPECT_SHA256 (the image minus its 1 MiB scratch region)"

step "7. what crossed the tree"
for n in origin node1 node2 node3; do
  printf '%-7s %s\n' "$n" "$(counters "${ctl_of[$n]}" |
    jq -r '"sent to children \(.served_remote_bytes) B, to local VMs \(.served_local_bytes // 0) B, fetched \(.fetches // "-") blocks"')"
done
sent=$(( $(counters "${ctl_of[origin]}" | jq .served_remote_bytes) - sent_before ))
echo "the origin sent $sent bytes for three VMs (the image is $IMAGE_SIZE bytes; each block at most once)"
virsh vol-dumpxml --pool thunder vm1.qcow2 | sed -n '/<backingStore>/,/<\/backingStore>/p'
[ "$(sha256sum < "$work/images/guest.img")" = "$(sha256sum < "$work/guest/guest.img")" ] ||
  { echo "the image changed: the guests' writes leaked into it" >&2; ok=false; }

step "8. clean up: vm delete, detach (removes the anchors), stop the daemons"
trap - EXIT
cleanup
if $ok && [ "$sent" -le "$IMAGE_SIZE" ]; then
  printf '\n\033[1;32mdemo: OK — three VMs booted at once from one image through a relay tree; the origin sent it once\033[0m\n'
else
  printf '\n\033[1;31mdemo: FAILED — a guest read wrong bytes or did not finish, or the origin sent a block twice\033[0m\n'
  exit 1
fi
