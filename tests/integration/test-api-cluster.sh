#!/usr/bin/env bash
# thunder — the main job end to end: thunder-api, an origin and three
# thunderd nodes on one host (each its own ports, cache and libvirt pool,
# sharing the host's libvirtd; real QEMU TCG and the test guest):
#  - POST /v1/clusters count=6 (Idempotency-Key), thunder-api SIGKILLed
#    right after the 202, restarted; thunderctl cluster create --wait with
#    the same key finds the same cluster and waits: all 6 VMs reach
#    running, each guest's serial log shows it booted and read its disk
#    right, and there are exactly 6 domains of the cluster;
#  - the upstream lists the nodes were given are GET …/tree's; the origin
#    sent about one image (≤ 1.05 × its size) for six VMs;
#  - thunderctl cluster show/tree/list; GET /metrics;
#  - a real Prometheus scrapes thunder-api and the three nodes (their
#    /metrics with the node token) while the cluster comes up: VMs running,
#    bytes relayed between nodes and fetched per upstream, read latencies;
#    promtool checks every exposition; the tree carries the bytes on its
#    edges;
#  - the status page (/ui/) in headless Chromium (tests/tools/ui-check.py):
#    a wrong token is refused with a message, the cluster's tree is drawn
#    with every node and edge and its VMs reach running; a screenshot is
#    kept in the build tree (tests/artifacts/status-page.png);
#  - running guests keep the image attached past thunder-api's
#    --detach-grace (3 s here);
#  - DELETE removes the domains and the VMs' volumes; the attachments (and
#    the anchors) go once unused for the grace.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/libvirt-functions.sh"
source "$(dirname "$0")/api-functions.sh"
source "$(dirname "$0")/prom-functions.sh"
source "$TOP_SRCDIR/tests/guest/guest-functions.sh"

requires_program jq qemu-img virsh prometheus promtool chromium chromedriver
start_libvirt

guestdir=$TOP_BUILDDIR/tests/guest
"$TOP_SRCDIR/tests/guest/build-guest.sh" "$guestdir" >/dev/null 2>"$tmpdir/guest-build.log" ||
    { cat "$tmpdir/guest-build.log" >&2; fail "building the test guest failed"; }
# shellcheck source=/dev/null
. "$guestdir/guest.env"

mkdir "$tmpdir/images"
cp "$guestdir/guest.img" "$tmpdir/images/guest.img"
"$THUNDERCTL" image add guest "$tmpdir/images/guest.img" >/dev/null
size=$(stat -c %s "$tmpdir/images/guest.img")
start_origin "$tmpdir/images"

start_api --node-timeout 10 --poll-interval 200 --link-mbit 1000 --origin-cap 1 \
    --detach-grace 3 --ui-dir "$TOP_SRCDIR/src/api/ui"
for n in 1 2 3; do
    pool=$(test_pool_name "n$n")
    cleanup_pool "$pool"
    start_api_node "$n" --pool "$pool" --pool-path "$tmpdir/pool$n" \
        --libvirt-uri "$LIBVIRT_URI" --readahead 0
done
wait_nodes_ready 3
start_prometheus "$api_url" "$token_file" "${node_ctl[1]}" "${node_ctl[2]}" "${node_ctl[3]}"

ctl () { "$THUNDERCTL" --api "$api_url" --token-file "$token_file" "$@"; }
ctl api image register guest --origin "$origin_nbd" >/dev/null ||
    fail "thunderctl api image register failed"

cname=t$$
for i in 0 1 2 3 4 5; do
    cleanup_domain "$cname-000$i"
    cleanup_fn rm -f "/var/log/thunder/vm/$cname-000$i.log"
done
domains () { vsh list --all --name | grep -c "^$cname-" || true; }

# ---- create, kill -9, restart, wait ----------------------------------------------

body="{\"name\":\"$cname\",\"image\":\"guest\",\"count\":6,\"vcpus\":1,\"memory_mib\":128}"
call POST /v1/clusters "$body" -H "Idempotency-Key: key-$cname"
expect 202
id=$(jq -r .id "$tmpdir/body")
kill_api
echo "$0: thunder-api killed after the 202; $(domains) domains so far" >&2
start_api --node-timeout 10 --poll-interval 200 --detach-grace 3 \
    --ui-dir "$TOP_SRCDIR/src/api/ui"
# The status page follows the cluster in a browser while it comes up.
shot=$TOP_BUILDDIR/tests/artifacts/status-page.png
rm -f "$shot"
/usr/bin/python3 "$TOP_SRCDIR/tests/tools/ui-check.py" "$api_url" "$token_file" "$cname" 6 \
    "$shot" 480 >"$tmpdir/ui-check.log" 2>&1 &
ui_pid=$!
cleanup_fn kill "$ui_pid"
t0=$(now_ms)
out=$(ctl cluster create --name "$cname" --image guest --count 6 --vcpus 1 --memory 128 \
      --idempotency-key "key-$cname" --wait --timeout 300 2>"$tmpdir/progress") ||
    fail "thunderctl cluster create --wait: exit $?: $out $(tail -n 5 "$tmpdir/progress")"
[ "$out" = "$id" ] || fail "the retried create gave '$out', not the cluster $id"
grep -Eq "^$cname: 6/6 running, 0 failed" "$tmpdir/progress" ||
    fail "no final progress line: $(cat "$tmpdir/progress")"
echo "$0: all 6 running $(( $(now_ms) - t0 )) ms after the restart" >&2
t_running=$(now_ms)

call GET "/v1/clusters/$id"
expect 200 '.state == "running" and .counts.running == 6 and (.vms | length == 6)
            and (.vms | all(.state == "running" and .running_at != null))'
expect_schema api-cluster
[ "$(domains)" = 6 ] || fail "$(domains) domains of $cname, want exactly 6: $(vsh list --all --name)"

# Every guest booted through thunder and read its disk right.
for i in 0 1 2 3 4 5; do
    log=/var/log/thunder/vm/$cname-000$i.log
    for (( w = 0; w < 750; ++w )); do
        grep -q 'THUNDER-GUEST: done' "$log" 2>/dev/null && break
        sleep 0.2
    done
    guest_check_log "$log" "$guestdir/guest.env" 1 ||
        fail "$cname-000$i: the guest did not boot and read its disk right"
done

# ---- the tree, the origin's bytes --------------------------------------------------

call GET "/v1/clusters/$id/tree"
expect 200 '.nodes | length == 3'
expect_schema api-cluster-tree
cp "$tmpdir/body" "$tmpdir/tree.json"
for n in 1 2 3; do
    want=$(jq -c --arg n "node$n" '.nodes[] | select(.node == $n) | .upstreams' "$tmpdir/tree.json")
    got=$(stats "$n" guest | jq -c '[.upstreams[].uri]')
    [ "$want" = "$got" ] || fail "node$n was given $got, the tree says $want"
done
sent=$(origin_stats guest | jq '.counters.served_remote_bytes')
echo "$0: origin sent $sent bytes for 6 VMs; image $size bytes" >&2
[ "$sent" -le $(( size * 105 / 100 )) ] ||
    fail "the origin sent $sent bytes for 6 VMs of a $size-byte image (> 1.05 ×)"
for (( w = 0; w < 20; ++w )); do
    call GET "/v1/clusters/$id"
    [ "$(jq .origin_bytes "$tmpdir/body")" -gt 0 ] && break
    sleep 0.5
done
ob=$(jq .origin_bytes "$tmpdir/body")
[ "$ob" -gt 0 ] && [ "$ob" -le "$sent" ] ||
    fail "cluster origin_bytes $ob; the origin served $sent"

ctl cluster show "$id" > "$tmpdir/show" || fail "thunderctl cluster show failed"
[ "$(grep -c " running" "$tmpdir/show")" -ge 6 ] || fail "cluster show: $(cat "$tmpdir/show")"
ctl cluster tree "$cname" > "$tmpdir/tree.txt" || fail "thunderctl cluster tree failed"
for n in 1 2 3; do grep -q "node$n" "$tmpdir/tree.txt" || fail "cluster tree: $(cat "$tmpdir/tree.txt")"; done
ctl cluster list --state running | grep -q "$id" || fail "cluster list does not show $id"
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' "$api_url/metrics")
grep -qF 'thunder_api_vms{state="running"} 6' "$tmpdir/body" || fail "metrics: $(cat "$tmpdir/body")"

# ---- what Prometheus saw, the tree's edge bytes, the status page -------------------

check_exposition "$api_url/metrics"
for n in 1 2 3; do check_exposition "${node_ctl[$n]}/metrics" "$token_file"; done
prom_wait "VMs running" 'thunder_api_vms{state="running"} == 6' 20
prom_wait "bytes relayed between nodes" \
    'sum(thunder_nbd_served_bytes_total{job="thunderd",image="guest",client="remote"}) > 0' 20
prom_wait "bytes the guests read" \
    'sum(thunder_nbd_served_bytes_total{job="thunderd",image="guest",client="local"}) > 0' 20
prom_wait "bytes fetched per upstream" \
    'count(thunder_upstream_bytes_total{job="thunderd",image="guest"} > 0) >= 3' 20
prom_wait "reads that waited for a fetch" \
    'sum(thunder_nbd_read_duration_seconds_count{job="thunderd",cache="miss"}) > 0' 20
prom_wait "every target up" 'count(up == 1) == 4' 20
call GET "/v1/clusters/$id/tree"
expect 200
expect_schema api-cluster-tree
edge=$(jq '[.nodes[] | .upstream_bytes | add] | add' "$tmpdir/body")
[ "$edge" -gt 0 ] || fail "the tree's edges carry no bytes: $(cat "$tmpdir/body")"
wait "$ui_pid" || fail "status page: exit $?: $(cat "$tmpdir/ui-check.log")"
cat "$tmpdir/ui-check.log" >&2
[ -s "$shot" ] || fail "status page: no screenshot at $shot"

# Running guests keep the image attached however long the grace has passed.
while (( $(now_ms) - t_running < 5000 )); do sleep 0.5; done
for n in 1 2 3; do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$token_file")" \
        "${node_ctl[$n]}/v1/images/guest")
    [ "$c" = 200 ] || fail "node$n: the image was detached under running guests ($c)"
done

# ---- delete ----------------------------------------------------------------------------

ctl cluster delete "$id" --wait >/dev/null 2>"$tmpdir/progress" ||
    fail "thunderctl cluster delete --wait: $(cat "$tmpdir/progress")"
call GET "/v1/clusters/$id"
expect 200 '.state == "deleted" and .counts.deleted == 6'
[ "$(domains)" = 0 ] || fail "domains left after DELETE: $(vsh list --all --name)"
# Detached once unused for the grace (3 s), the anchor volume with it.
for (( w = 0; w < 50; ++w )); do
    left=0
    for n in 1 2 3; do
        c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$token_file")" \
            "${node_ctl[$n]}/v1/images/guest")
        [ "$c" = 404 ] || left=1
    done
    [ "$left" = 0 ] && break
    sleep 0.2
done
for n in 1 2 3; do
    vols=$(vsh vol-list "$(test_pool_name "n$n")" | awk 'NR > 2 && $1 != "" { print $1 }')
    [ -z "$vols" ] || fail "node$n: volumes left after DELETE: $vols"
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$token_file")" \
        "${node_ctl[$n]}/v1/images/guest")
    [ "$c" = 404 ] || fail "node$n: the image is still attached 10 s after DELETE ($c)"
done
echo "api-cluster: ok"
