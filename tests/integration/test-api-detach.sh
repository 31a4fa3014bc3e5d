#!/usr/bin/env bash
# thunder — thunder-api detaches an image version from a node once nothing
# there has used it for --detach-grace (docs/api.md "Detaching unused
# images"), with real thunderd nodes (no libvirt pool: their VMs fail, so
# nothing uses the image once the cluster has failed):
#  - within the grace period the nodes keep the image attached;
#  - the idle time is in SQLite: thunder-api stopped during the grace and
#    started again detaches at the first deadline, not a grace later;
#  - the node then holds the version unattached (GET /v1/cache), its
#    blocks the first to evict, and still serves nothing of it as an
#    export;
#  - a cluster made again attaches the image again.
# Which VMs and trees keep an attachment in use is test-store's
# "attachments in use and idle"; a running guest keeping it is
# api-cluster's.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/api-functions.sh"

grace=6
mkdir "$tmpdir/images"
make_image "$tmpdir/images/img.raw" 4
image_add img "$tmpdir/images/img.raw" >/dev/null
start_origin "$tmpdir/images"
version=$(sha256sum "$tmpdir/images/img.manifest.json" | cut -d' ' -f1)

api_args=(--detach-grace "$grace" --poll-interval 200 --node-timeout 10)
start_api "${api_args[@]}"
for n in 1 2; do start_api_node "$n"; done
wait_nodes_ready 2
call POST /v1/images "{\"name\":\"img\",\"origin\":\"$origin_nbd\"}"
expect 201

# node_image N  — the status of GET /v1/images/img on node N.
node_image ()
{
    curl -s -o "$tmpdir/nbody" -w '%{http_code}' \
        -H "Authorization: Bearer $(cat "$token_file")" "${node_ctl[$1]}/v1/images/img"
}

call POST /v1/clusters '{"name":"web","image":"img","count":2,"vcpus":1,"memory_mib":128}'
expect 202
id=$(jq -r .id "$tmpdir/body")
wait_cluster "$id" failed 30
t_failed=$(now_ms)
for n in 1 2; do
    [ "$(node_image "$n")" = 200 ] || fail "node$n: img not attached after the cluster failed"
done
# Some blocks in node1's cache, read by a local client.
nbdcopy "nbd+unix:///img?socket=${node_sock[1]}" - | cmp -s - "$tmpdir/images/img.raw" ||
    fail "node1 serves other bytes than the image"

# thunder-api away for 4 s inside the grace period.
sleep 1
stop_api
sleep 4
start_api "${api_args[@]}"

declare -A detached_ms=()
done_nodes=0
for (( i = 0; i < 100 && done_nodes < 2; ++i )); do
    for n in 1 2; do
        [ -n "${detached_ms[$n]:-}" ] && continue
        c=$(node_image "$n")
        if [ "$c" = 404 ]; then
            detached_ms[$n]=$(( $(now_ms) - t_failed ))
            done_nodes=$(( done_nodes + 1 ))
        fi
        [ "$c" = 200 ] || [ "$c" = 404 ] || fail "node$n: GET /v1/images/img: $c"
    done
    sleep 0.2
done
for n in 1 2; do
    d=${detached_ms[$n]:-}
    [ -n "$d" ] || fail "node$n: img still attached $(( ($(now_ms) - t_failed) / 1000 )) s after the cluster failed (grace $grace s)"
    echo "node$n: detached $d ms after the cluster failed (grace $grace s, thunder-api down 4 s of it)"
    # Not before the grace; and not a grace after the restart (>= 11 s).
    [ "$d" -ge $(( grace * 1000 - 1000 )) ] || fail "node$n: detached after $d ms, before the grace of $grace s"
    [ "$d" -le $(( grace * 1000 + 3500 )) ] ||
        fail "node$n: detached after $d ms: the restart of thunder-api started the grace again"
done
grep -q "node node1: image img version ${version:0:16} detached: unused for" "$api_log" ||
    fail "thunder-api did not log the detach: $(grep -i detach "$api_log" | head)"

# The node keeps the version, unattached: the first its reclaimer evicts.
curl -sf -H "Authorization: Bearer $(cat "$token_file")" "${node_ctl[1]}/v1/cache" > "$tmpdir/cache.json" ||
    fail "GET /v1/cache on node1"
jq -e --arg v "$version" '.versions[] | select(.version == $v) | .attached == false and .bytes > 0' \
    "$tmpdir/cache.json" >/dev/null || fail "node1's cache after the detach: $(cat "$tmpdir/cache.json")"
nbdinfo "nbd+unix:///img?socket=${node_sock[1]}" >/dev/null 2>&1 &&
    fail "node1 still exports img after the detach"

# A new cluster attaches it again (and the reused cache serves it).
call DELETE "/v1/clusters/$id"
expect 202
wait_cluster "$id" deleted 30
call POST /v1/clusters '{"name":"web2","image":"img","count":2,"vcpus":1,"memory_mib":128}'
expect 202
id2=$(jq -r .id "$tmpdir/body")
wait_cluster "$id2" failed 30
for n in 1 2; do
    [ "$(node_image "$n")" = 200 ] || fail "node$n: img not attached again for a new cluster"
done
jq -e --arg v "$version" '.version == $v' "$tmpdir/nbody" >/dev/null ||
    fail "node2 attached another version: $(cat "$tmpdir/nbody")"
echo "api-detach: ok"
