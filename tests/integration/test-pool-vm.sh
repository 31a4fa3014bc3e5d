#!/usr/bin/env bash
# thunder — VMs boot from thunder volumes (real libvirtd, virtlogd, QEMU TCG,
# the test guest of tests/guest/):
#  - attaching the guest image on a node with a pool makes its anchor
#    IMAGE.base in the pool (vol-list, vol-dumpxml show the NBD backing);
#  - "thunderctl vm create" boots the guest from its volume: the marker and
#    the checksum of its disk appear in the serial log, and the node's
#    counters show that its reads came through thunderd;
#  - the guest's write is in its overlay only: the image file and the anchor
#    are unchanged, and a second boot of the same VM finds its record;
#  - a second VM on the node boots from the node's cache: nothing more is
#    fetched upstream, the origin sends nothing more;
#  - the node restarts: the image is re-attached from its record, the anchor
#    is kept as it was, a VM boots again from the node's cache;
#  - detaching while VM volumes use the image is refused with their names;
#    after "vm delete" of both the detach removes the anchor;
#  - a node whose socket QEMU cannot open: "vm create" fails with libvirt's
#    reason and leaves no domain and no volume.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/libvirt-functions.sh"
source "$TOP_SRCDIR/tests/guest/guest-functions.sh"

requires_program jq qemu-img virsh sha256sum
start_libvirt

# The guest, built once per build tree (the builder skips work when its
# inputs did not change).
guest_image_add
image_sum=$(sha256sum < "$tmpdir/images/guest.img")
start_origin "$tmpdir/images"

pool=$(test_pool_name)
pooldir=$tmpdir/pool
cleanup_pool "$pool"
export THUNDER_POOL=$pool THUNDER_POOL_PATH=$pooldir
export THUNDER_LIBVIRT_URI=$LIBVIRT_URI
start_node 1 --pool "$pool" --pool-path "$pooldir" --libvirt-uri "$LIBVIRT_URI"

vol_names () { vsh vol-list "$pool" | awk '{ print $1 }' | sort | tr '\n' ' '; }

# vm_boot NAME LOG  — creates VM NAME and waits until the guest powered off.
vm_boot ()
{
    local name=$1 log=$2 t0=$SECONDS
    cleanup_domain "$name"
    "$THUNDERCTL" vm create "$name" --image guest --vcpus 1 --memory 256 \
        --accel tcg --console-log "$log" >/dev/null ||
        fail "vm create $name failed"
    vm_wait_off "$name" "$log"
    echo "$name: created, booted and powered off in $((SECONDS - t0)) s" >&2
}

node_counter () { stats 1 guest | jq -r ".counters.$1"; }
origin_sent () { origin_stats guest | jq -r .counters.served_remote_bytes; }

# ---- attach makes the anchor -----------------------------------------------------

attach 1 guest "$origin_nbd"
[ "$(vol_names)" = "guest.base " ] || fail "vol-list after attach: $(vol_names)"
anchor=$pooldir/guest.base
xml=$(vsh vol-dumpxml --pool "$pool" guest.base)
grep -q "<path>json:{&quot;file&quot;:{&quot;driver&quot;:&quot;nbd&quot;,&quot;server&quot;:{&quot;type&quot;:&quot;unix&quot;,&quot;path&quot;:&quot;$tmpdir/node1.sock&quot;},&quot;export&quot;:&quot;guest&quot;,&quot;reconnect-delay&quot;:60," <<<"$xml" ||
    fail "anchor backing is not node 1's export with a reconnect delay: $xml"
grep -q "<format type='raw'/>" <<<"$xml" || fail "anchor backing format: $xml"
anchor_sum=$(sha256sum < "$anchor")

# ---- the first VM boots through thunderd ------------------------------------------

vm_boot vm1 "$tmpdir/vm1.log"
guest_check_log "$tmpdir/vm1.log" "$guestdir/guest.env" 1 ||
    fail "vm1: the guest did not boot and read its disk right"
hits1=$(node_counter hits) misses1=$(node_counter misses)
fetched1=$(node_counter fetches) cached1=$(node_counter valid_cache_bytes)
sent1=$(origin_sent)
echo "vm1: node hits $hits1, misses $misses1, fetched $fetched1 blocks, cached $cached1 bytes; origin sent $sent1" >&2
# The node never stores an all-zero block (docs/node.md): what it must hold
# is the checked range's non-zero blocks.
nonzero=$(python3 - "$guestdir/guest.img" "$CHECK_BYTES" <<'PY'
import sys
bs, n, left = 65536, 0, int(sys.argv[2])
with open(sys.argv[1], "rb") as f:
    while left > 0:
        b = f.read(min(bs, left))
        if not b:
            break
        left -= len(b)
        n += len(b) if b.count(0) != len(b) else 0
print(n)
PY
)
[ "$misses1" -gt 0 ] && [ "$cached1" -ge "$nonzero" ] ||
    fail "vm1's reads did not come through thunderd (misses $misses1, cached $cached1 bytes of $nonzero non-zero bytes checked)"
[ "$sent1" -le "$IMAGE_SIZE" ] || fail "the origin sent $sent1 bytes for a $IMAGE_SIZE-byte image"

# Writes stay in the overlay: the image and the anchor are unchanged, the
# overlay holds data at the guest's write offset.
[ "$(sha256sum < "$tmpdir/images/guest.img")" = "$image_sum" ] || fail "the image file changed"
[ "$(sha256sum < "$anchor")" = "$anchor_sum" ] || fail "the anchor changed"
qemu-img map --output=json -U "$pooldir/vm1.qcow2" > "$tmpdir/map.json"
jq -e --argjson off "$WRITE_OFFSET" \
    'any(.[]; .depth == 0 and .data and .start <= $off and $off < .start + .length)' \
    "$tmpdir/map.json" >/dev/null ||
    fail "vm1's overlay holds no data at $WRITE_OFFSET: $(cat "$tmpdir/map.json")"
jq -e --argjson off "$WRITE_OFFSET" \
    'all(.[]; .depth == 0 and .data | not) or
     all(.[] | select(.depth == 0 and .data); .start >= $off)' \
    "$tmpdir/map.json" >/dev/null ||
    fail "vm1's overlay holds data below the scratch region: $(cat "$tmpdir/map.json")"

# A second boot of vm1 finds the record its first boot wrote.
vsh start vm1 >/dev/null
vm_wait_off vm1 "$tmpdir/vm1.log"
guest_check_log "$tmpdir/vm1.log" "$guestdir/guest.env" 2 ||
    fail "vm1's second boot did not find its first write"

# ---- a second VM on the node shares the cache -----------------------------------

vm_boot vm2 "$tmpdir/vm2.log"
guest_check_log "$tmpdir/vm2.log" "$guestdir/guest.env" 1 ||
    fail "vm2: the guest did not boot and read its disk right"
fetched2=$(node_counter fetches) sent2=$(origin_sent) hits2=$(node_counter hits)
echo "vm2: node hits $hits2 (was $hits1), fetched $fetched2 blocks (was $fetched1); origin sent $sent2" >&2
[ "$fetched2" -eq "$fetched1" ] || fail "vm2's boot fetched $((fetched2 - fetched1)) blocks upstream"
[ "$sent2" -eq "$sent1" ] || fail "the origin sent $((sent2 - sent1)) bytes for vm2"
[ "$hits2" -gt "$hits1" ] || fail "vm2's reads were not served from the cache"
[ "$(vol_names)" = "guest.base vm1.qcow2 vm2.qcow2 " ] || fail "vol-list: $(vol_names)"

# ---- the node restarts: the image is re-attached, the anchor kept, VMs boot ------

thunderd_pid=${node_pid[1]}
stop_thunderd
start_node 1 --pool "$pool" --pool-path "$pooldir" --libvirt-uri "$LIBVIRT_URI"
[ "$(sha256sum < "$anchor")" = "$anchor_sum" ] || fail "the anchor changed across a restart"
vsh start vm2 >/dev/null
vm_wait_off vm2 "$tmpdir/vm2.log"
guest_check_log "$tmpdir/vm2.log" "$guestdir/guest.env" 2 ||
    fail "vm2 did not boot again after the node restarted"
[ "$(node_counter fetches)" -eq 0 ] ||
    fail "the restarted node fetched $(node_counter fetches) blocks: its cache was not reused"

# ---- detach while VMs use the image ----------------------------------------------

rc=0
err=$("$THUNDERCTL" --node "${node_ctl[1]}" --token-file "$token_file" image detach guest 2>&1) || rc=$?
[ "$rc" -eq 1 ] || fail "detach with VM volumes: exit $rc ($err)"
grep -q "vm1.qcow2" <<<"$err" && grep -q "vm2.qcow2" <<<"$err" ||
    fail "detach refusal does not name the VM volumes: $err"
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X DELETE \
    -H "Authorization: Bearer $(cat "$token_file")" "${node_ctl[1]}/v1/images/guest")
[ "$code" = 409 ] && jq -e '.error.message | test("vm1.qcow2")' "$tmpdir/body" >/dev/null ||
    fail "DELETE with VM volumes: $code $(cat "$tmpdir/body")"
stats 1 guest >/dev/null || fail "the image was detached anyway"
[ -f "$anchor" ] || fail "the anchor was removed anyway"

"$THUNDERCTL" vm delete vm1 >/dev/null
"$THUNDERCTL" vm delete vm2 >/dev/null
! vsh dominfo vm1 >/dev/null 2>&1 || fail "vm1 still defined after vm delete"
[ "$(vol_names)" = "guest.base " ] || fail "vol-list after vm delete: $(vol_names)"
"$THUNDERCTL" --node "${node_ctl[1]}" --token-file "$token_file" image detach guest >/dev/null
[ "$(vol_names)" = "" ] || fail "vol-list after detach: $(vol_names)"
[ ! -e "$anchor" ] || fail "the anchor file is still there"

# ---- QEMU cannot reach the node's socket -------------------------------------------

pool2=$(test_pool_name 2)
cleanup_pool "$pool2"
start_node 2 --pool "$pool2" --pool-path "$tmpdir/pool2" --libvirt-uri "$LIBVIRT_URI" \
    --socket-group root --socket-mode 0600
attach 2 guest "$origin_nbd"
cleanup_domain vm3
rc=0
err=$(THUNDER_POOL=$pool2 THUNDER_POOL_PATH=$tmpdir/pool2 "$THUNDERCTL" vm create vm3 \
    --image guest --vcpus 1 --memory 256 --accel tcg 2>&1) || rc=$?
[ "$rc" -eq 1 ] || fail "vm create on an unreachable socket: exit $rc ($err)"
grep -q "Permission denied" <<<"$err" || fail "vm create: no reason given: $err"
! vsh dominfo vm3 >/dev/null 2>&1 || fail "vm3 left defined after a failed start"
[ "$(vsh vol-list "$pool2" | awk '{ print $1 }' | tr '\n' ' ')" = "guest.base " ] ||
    fail "vm3's volume left behind: $(vsh vol-list "$pool2")"

echo "ok"
