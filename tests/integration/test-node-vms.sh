#!/usr/bin/env bash
# thunder — the VM API of thunderd's control endpoint (real libvirtd,
# virtlogd, QEMU TCG, the test guest of tests/guest/):
#  - GET /v1/node reports the host, the pool, libvirt "ok", the attached
#    images and the number of VMs;
#  - PUT /v1/vms/NAME makes the VM (201, running), which boots the guest
#    through thunderd and powers off: GET then says shutoff and the serial
#    log shows the right checksum; two PUTs at once make one VM (201 and
#    200);
#  - PUT again with the same spec is 200 (no second domain, not started
#    again); another spec is 409 naming the field; an image not attached
#    is 404 and leaves nothing; bad bodies are 400;
#  - GET /v1/vms lists thunder's VMs only: a domain defined by hand with
#    virsh (no thunder metadata) is not listed, and GET, PUT, DELETE of it
#    leave it alone;
#  - DELETE removes domain and volume (200), then GET and DELETE are 404,
#    and the image detaches;
#  - a node with --pool none answers the VM routes with 409 no_pool; one
#    whose libvirt does not answer with 503 (and GET /v1/node says
#    "unreachable").
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/libvirt-functions.sh"
source "$TOP_SRCDIR/tests/guest/guest-functions.sh"

requires_program jq qemu-img virsh
start_libvirt

guestdir=$TOP_BUILDDIR/tests/guest
"$TOP_SRCDIR/tests/guest/build-guest.sh" "$guestdir" >/dev/null 2>"$tmpdir/guest-build.log" ||
    { cat "$tmpdir/guest-build.log" >&2; fail "building the test guest failed"; }
# shellcheck source=/dev/null
. "$guestdir/guest.env"

mkdir "$tmpdir/images"
cp "$guestdir/guest.img" "$tmpdir/images/guest.img"
"$THUNDERCTL" image add guest "$tmpdir/images/guest.img" >/dev/null
start_origin "$tmpdir/images"

pool=$(test_pool_name)
pooldir=$tmpdir/pool
cleanup_pool "$pool"
start_node 1 --pool "$pool" --pool-path "$pooldir" --libvirt-uri "$LIBVIRT_URI"

auth="Authorization: Bearer $(cat "$token_file")"

# api N METHOD PATH [BODY]  — a request to node N's control endpoint; sets
# $code (the HTTP status) and leaves the reply in $tmpdir/body.
api ()
{
    local n=$1 method=$2 path=$3
    local -a data=()
    [ $# -ge 4 ] && data=(-H 'Content-Type: application/json' --data-binary "$4")
    code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X "$method" -H "$auth" \
        "${data[@]}" "${node_ctl[$n]}$path") || fail "curl $method $path failed"
}

# expect CODE [JQ-FILTER]  — the last reply had status CODE (and the body
# satisfies the jq filter).
expect ()
{
    [ "$code" = "$1" ] || fail "expected HTTP $1, got $code: $(cat "$tmpdir/body")"
    if [ $# -ge 2 ]; then
        jq -e "$2" "$tmpdir/body" >/dev/null ||
            fail "reply does not satisfy $2: $(cat "$tmpdir/body")"
    fi
}

vol_names () { vsh vol-list "$pool" | awk '{ print $1 }' | sort | tr '\n' ' '; }
domain_count () { vsh list --all --name | grep -cx -- "$1" || true; }

# ---- the node ----------------------------------------------------------------

api 1 GET /v1/node
expect 200 ".pool == \"$pool\" and .pool_path == \"$pooldir\" and .libvirt == \"ok\"
            and .images == [] and .vms == 0 and .mode == \"node\""
jq -e --arg h "$(hostname)" --argjson c "$(nproc)" \
    '.hostname == $h and .vcpus == $c and .memory_mib > 0 and .disk_free_bytes > 0' \
    "$tmpdir/body" >/dev/null || fail "GET /v1/node: $(cat "$tmpdir/body")"

attach 1 guest "$origin_nbd"
api 1 GET /v1/node
expect 200 '.images == ["guest"]'
out=$("$THUNDERCTL" --node "${node_ctl[1]}" --token-file "$token_file" node show) ||
    fail "thunderctl node show: $out"
grep -qx "pool        $pool at $pooldir" <<<"$out" && grep -qx "libvirt     ok" <<<"$out" &&
    grep -qx "images      guest" <<<"$out" && grep -qx "vms         0" <<<"$out" ||
    fail "thunderctl node show: $out"

# ---- create, boot, power off ---------------------------------------------------

vm=tvm$$
spec='{"image": "guest", "vcpus": 1, "memory_mib": 256, "accel": "tcg"}'
cleanup_domain "$vm"
cleanup_fn rm -f "/var/log/thunder/vm/$vm.log"
t0=$SECONDS
# Two at once: one makes the VM, the other waits for it and finds it.
pids=()
for k in 1 2; do
    curl -s -o "$tmpdir/put$k" -w '%{http_code}' -X PUT -H "$auth" --data-binary "$spec" \
        "${node_ctl[1]}/v1/vms/$vm" > "$tmpdir/code$k" &
    pids+=($!)
done
wait "${pids[@]}"
codes="$(cat "$tmpdir/code1") $(cat "$tmpdir/code2")"
case $codes in
    "201 200") cp "$tmpdir/put1" "$tmpdir/body" ;;
    "200 201") cp "$tmpdir/put2" "$tmpdir/body" ;;
    *) fail "two PUTs at once: $codes: $(cat "$tmpdir/put1") $(cat "$tmpdir/put2")" ;;
esac
code=201
[ "$(domain_count "$vm")" = 1 ] || fail "two PUTs at once made $(domain_count "$vm") domains"
expect 201 ".name == \"$vm\" and .image == \"guest\" and .vcpus == 1 and .memory_mib == 256
            and .disk_bytes == $IMAGE_SIZE and .accel == \"tcg\"
            and .volume == \"$pooldir/$vm.qcow2\" and .console_log == \"/var/log/thunder/vm/$vm.log\"
            and (.state == \"running\" or .state == \"starting\")"
log=$(jq -r .console_log "$tmpdir/body")
vsh dumpxml "$vm" | grep -q 'xmlns:thunder="https://thunder.example/xmlns/vm/1"' ||
    fail "domain $vm has no thunder metadata: $(vsh dumpxml "$vm")"

state=""
for (( i = 0; i < 1800; ++i )); do
    api 1 GET "/v1/vms/$vm"
    expect 200
    state=$(jq -r .state "$tmpdir/body")
    [ "$state" = shutoff ] && break
    sleep 0.1
done
[ "$state" = shutoff ] || { cat "$log" >&2 || true; fail "VM $vm still '$state' after 180 s"; }
echo "$vm: created, booted and powered off in $((SECONDS - t0)) s" >&2
guest_check_log "$log" "$guestdir/guest.env" 1 || fail "$vm: the guest did not boot and read its disk right"

# ---- idempotence and conflicts ---------------------------------------------------

api 1 PUT "/v1/vms/$vm" "$spec"
expect 200 ".name == \"$vm\" and .state == \"shutoff\""
# Without accel, and with disk_gib left out (the image's size): the same.
api 1 PUT "/v1/vms/$vm" '{"image": "guest", "vcpus": 1, "memory_mib": 256}'
expect 200 '.state == "shutoff"'
[ "$(domain_count "$vm")" = 1 ] || fail "a second PUT made another domain"

api 1 PUT "/v1/vms/$vm" '{"image": "guest", "vcpus": 2, "memory_mib": 256}'
expect 409 '.error.code == "conflict" and (.error.message | test("vcpus 1 \\(asked: 2\\)"))'
api 1 PUT "/v1/vms/$vm" '{"image": "guest", "vcpus": 1, "memory_mib": 256, "disk_gib": 1}'
expect 409 '.error.code == "conflict" and (.error.message | test("disk"))'

api 1 PUT "/v1/vms/other$$" '{"image": "nope", "vcpus": 1, "memory_mib": 256}'
expect 404 '.error.code == "not_found" and (.error.message | test("image nope is not attached"))'
[ "$(domain_count "other$$")" = 0 ] || fail "a PUT for a missing image defined a domain"

api 1 PUT "/v1/vms/other$$" '{"image": "guest", "vcpus": 0, "memory_mib": 256}'
expect 400 '.error.code == "invalid" and (.error.message | test("vcpus"))'
api 1 PUT "/v1/vms/other$$" '{"image": "guest", "vcpus": 1, "memory_mib": 256, "size": 1}'
expect 400 '.error.code == "invalid" and (.error.message | test("unknown field"))'
api 1 PUT "/v1/vms/other$$" '{"image": "guest", "vcpus": 1'
expect 400 '.error.message | test("not JSON")'
api 1 PUT "/v1/vms/.bad" "$spec"
expect 400 '.error.message | test("VM name")'
[ "$(vol_names)" = "guest.base $vm.qcow2 " ] || fail "vol-list: $(vol_names)"

# ---- only thunder's domains ---------------------------------------------------------

plain=plain$$
cleanup_domain "$plain"
cat > "$tmpdir/plain.xml" <<EOF
<domain type='qemu'>
  <name>$plain</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='$pool' volume='$vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
EOF
vsh define "$tmpdir/plain.xml" >/dev/null
api 1 GET /v1/vms
expect 200 "[.vms[].name] == [\"$vm\"]"
api 1 GET "/v1/vms/$plain"
expect 404 '.error.message | test("not made by thunder")'
api 1 DELETE "/v1/vms/$plain"
expect 404
api 1 PUT "/v1/vms/$plain" "$spec"
expect 409 '.error.message | test("not made by thunder")'
[ "$(domain_count "$plain")" = 1 ] || fail "the hand-made domain was touched"
api 1 GET /v1/node
expect 200 '.vms == 1'
vsh undefine "$plain" >/dev/null

# ---- delete ---------------------------------------------------------------------------

api 1 DELETE "/v1/vms/$vm"
expect 200 '. == {}'
api 1 GET "/v1/vms/$vm"
expect 404 '.error.code == "not_found"'
api 1 DELETE "/v1/vms/$vm"
expect 404
[ "$(domain_count "$vm")" = 0 ] || fail "domain $vm still defined"
[ "$(vol_names)" = "guest.base " ] || fail "vol-list after DELETE: $(vol_names)"
api 1 GET /v1/vms
expect 200 '.vms == []'
"$THUNDERCTL" --node "${node_ctl[1]}" --token-file "$token_file" image detach guest >/dev/null ||
    fail "detach after DELETE failed"
[ "$(vol_names)" = "" ] || fail "vol-list after detach: $(vol_names)"

# ---- a node without a pool -------------------------------------------------------------

start_node 2
api 2 PUT "/v1/vms/$vm" "$spec"
expect 409 '.error.code == "no_pool"'
api 2 GET /v1/vms
expect 409 '.error.code == "no_pool"'
api 2 GET /v1/node
expect 200 '.pool == null and .pool_path == null and .libvirt == "disabled" and .vms == 0'
"$THUNDERCTL" node show --json --node "${node_ctl[2]}" --token-file "$token_file" |
    jq -e '.libvirt == "disabled" and .mode == "node"' >/dev/null ||
    fail "thunderctl node show --json on a node without a pool"

# ---- libvirt unreachable ---------------------------------------------------------------

start_node 3 --pool "$pool" --pool-path "$pooldir" \
    --libvirt-uri "qemu:///system?socket=$tmpdir/no-libvirt.sock"
api 3 GET /v1/node
expect 200 ".libvirt == \"unreachable\" and .vms == null and .pool == \"$pool\"
            and (.libvirt_error | test(\"cannot connect\"))"
api 3 PUT "/v1/vms/$vm" "$spec"
expect 503 '.error.code == "unavailable"'
api 3 GET /v1/vms
expect 503 '.error.code == "unavailable"'
[ "$(domain_count "$vm")" = 0 ] || fail "domain $vm defined through an unreachable libvirt?"

echo "ok"
