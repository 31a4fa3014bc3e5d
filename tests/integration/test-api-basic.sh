#!/usr/bin/env bash
# thunder — thunder-api without VMs (nodes without a libvirt pool):
#  - tokens: /healthz and /metrics need none, /v1 needs the operator's
#    (401 without, with a wrong one, and with the node token except for
#    node registration);
#  - three thunderd nodes register themselves (--api) and heartbeat;
#  - images: registered from the origin's manifest (201, then 200), a
#    wrong version 409, an image the origin lacks 422, an origin that does
#    not answer 502;
#  - every bad request gets its documented status and a JSON error that
#    names the field, and every reply validates against schemas/;
#  - capacity: too many VMs is 409 insufficient_capacity, a VM bigger than
#    any node 422, and neither creates anything;
#  - a cluster: 202 + Location; Idempotency-Key replays (200, same id) and
#    conflicts (409); the tree pushed to the nodes is GET …/tree; the VMs
#    fail (no pool on these nodes) with the node's reason, the cluster
#    ends failed;
#  - a node killed stops heartbeating and is marked down; its children are
#    re-parented (their upstream lists on the nodes lose it);
#  - DELETE ends deleted, the image staying attached on the nodes for
#    the detach grace (600 s by default; api-detach lets it run out); the
#    state survives a restart of thunder-api.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/api-functions.sh"

node_token_file=$tmpdir/node-token
printf 'node-token-%s\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    > "$node_token_file"
chmod 0600 "$node_token_file"

mkdir "$tmpdir/images"
make_image "$tmpdir/images/img.raw" 8
image_add img "$tmpdir/images/img.raw" >/dev/null
start_origin "$tmpdir/images"
version=$(sha256sum "$tmpdir/images/img.manifest.json" | cut -d' ' -f1)

# The nodes' token is theirs for their control endpoints as well.
saved_token_file=$token_file
start_api --node-token-file "$node_token_file" --node-timeout 2 --poll-interval 200 \
    --push-timeout 5000 --push-retries 1 --origin-cap 1 --link-mbit 100 --origin-mbit 100

# ---- tokens and service routes ----------------------------------------------

code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' "$api_url/healthz")
expect 200 '.status == "ok" and .db == "ok"'
expect_schema api-health
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' "$api_url/v1/clusters")
expect 401
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -H 'Authorization: Bearer wrong-token-wrong-token' "$api_url/v1/clusters")
expect 401
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' \
    -H "Authorization: Bearer $(cat "$node_token_file")" "$api_url/v1/clusters")
expect 401 '.error.message | test("node token")'
call POST /healthz '{}'
expect 405
call GET /v1/nothing
expect 404
call GET /v1/clusters/../../etc
expect 404

# ---- nodes register ------------------------------------------------------------

token_file=$node_token_file
for n in 1 2 3; do
    start_api_node "$n" --rack "r$(( (n + 1) / 2 ))" --zone z1
done
token_file=$saved_token_file
wait_nodes_ready 3
call GET /v1/nodes
expect 200 '[.nodes[].name] == ["node1","node2","node3"]
            and (.nodes | all(.capacity.vcpus == 4 and .capacity.memory_mib == 4096
                               and .used.vms == 0 and .labels.zone == "z1"))
            and .nodes[0].labels.rack == "r1" and .nodes[2].labels.rack == "r2"'
expect_schema api-node-list
call GET /v1/nodes/node2
expect 200 ".nbd_uri == \"${node_nbd[2]}\" and .control_url == \"${node_ctl[2]}\""
expect_schema api-node
call GET /v1/nodes/nosuch
expect 404
call POST /v1/nodes/nosuch/heartbeat
expect 404
# Registration by hand, with the node token; bad bodies name the field.
nodecall () {
    code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $(cat "$node_token_file")" \
        -H 'Content-Type: application/json' --data-binary "$1" "$api_url/v1/nodes")
}
good_node='{"name":"extra","nbd_uri":"nbd://127.0.0.1:1","control_url":"http://127.0.0.1:1","capacity":{"vcpus":1,"memory_mib":64,"disk_gib":1}}'
bad_node ()
{
    nodecall "$1"
    expect 400 ".error.message | test(\"$2\")"
}
bad_node '{"nbd_uri":"nbd://127.0.0.1:1","control_url":"http://127.0.0.1:1","capacity":{"vcpus":1,"memory_mib":64,"disk_gib":1}}' "'name'"
bad_node "$(jq -c '.name = "-x"' <<<"$good_node")" "'name'"
bad_node "$(jq -c '.nbd_uri = "http://x:1"' <<<"$good_node")" "'nbd_uri'"
bad_node "$(jq -c '.nbd_uri = "nbd://x:99999"' <<<"$good_node")" "'nbd_uri'"
bad_node "$(jq -c '.control_url = "nbd://x:1"' <<<"$good_node")" "'control_url'"
bad_node "$(jq -c '.capacity.vcpus = 0' <<<"$good_node")" "'capacity.vcpus'"
bad_node "$(jq -c '.capacity.memory_mib = "lots"' <<<"$good_node")" "'capacity.memory_mib'"
bad_node "$(jq -c '.capacity.gpus = 1' <<<"$good_node")" "capacity.'gpus'"
bad_node "$(jq -c '.labels = {"rack": 7}' <<<"$good_node")" "'labels.rack'"
bad_node "$(jq -c '.extra = 1' <<<"$good_node")" "'extra'"
call GET /v1/nodes
expect 200 '.nodes | length == 3'

# nstats N NAME  — node N's image JSON (its endpoint takes the node token).
nstats () { local token_file=$node_token_file; stats "$@"; }

# ---- images ------------------------------------------------------------------------

call POST /v1/images "{\"name\":\"img\",\"origin\":\"$origin_nbd\"}"
expect 201 ".version == \"$version\" and .size == 8388608 and .origin == \"$origin_nbd\""
expect_schema api-image
call POST /v1/images "{\"name\":\"img\",\"origin\":\"$origin_nbd\",\"version\":\"$version\"}"
expect 200
call POST /v1/images "{\"name\":\"img\",\"origin\":\"$origin_nbd\",\"version\":\"$(printf '%064d' 0)\"}"
expect 409 '.error.message | test("version")'
call POST /v1/images "{\"name\":\"nosuch\",\"origin\":\"$origin_nbd\"}"
expect 422 '.error.message | test("no image")'
call POST /v1/images "{\"name\":\"img\",\"origin\":\"nbd://127.0.0.1:$(free_port)\"}"
expect 502
call POST /v1/images '{"name":"img"}'
expect 400 ".error.message | test(\"'origin'\")"
call GET /v1/images
expect 200 '[.images[].name] == ["img"]'
expect_schema api-image-list
call GET /v1/images/img
expect 200
call GET /v1/images/nosuch
expect 404
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' "$api_url/healthz")
expect 200 '.status == "ok"'

# ---- bad cluster requests --------------------------------------------------------

good='{"name":"web","image":"img","count":3,"vcpus":1,"memory_mib":128}'
bad ()
{
    local want=$1 body=$2 pattern=$3
    shift 3
    call POST /v1/clusters "$body" "$@"
    expect "$want" ".error.message | test(\"$pattern\")"
}
bad 400 "$(jq -c 'del(.name)' <<<"$good")" "'name'"
bad 400 "$(jq -c '.name = "a b"' <<<"$good")" "'name'"
bad 400 "$(jq -c '.name = "n23456789012345678901234567890123456789012345678901"' <<<"$good")" "'name'"
bad 400 "$(jq -c '.count = 0' <<<"$good")" "'count'"
bad 400 "$(jq -c '.count = 1.5' <<<"$good")" "'count'"
bad 400 "$(jq -c '.count = 100000' <<<"$good")" "'count'"
bad 400 "$(jq -c '.vcpus = -1' <<<"$good")" "'vcpus'"
bad 400 "$(jq -c '.memory_mib = "1G"' <<<"$good")" "'memory_mib'"
bad 400 "$(jq -c '.fanout = 0' <<<"$good")" "'fanout'"
bad 400 "$(jq -c '.placement = {"strategy":"random"}' <<<"$good")" "'placement.strategy'"
bad 400 "$(jq -c '.placement = {"nodes":"node1"}' <<<"$good")" "'placement.nodes'"
bad 400 "$(jq -c '.placement = {"colour":"red"}' <<<"$good")" "'colour'"
bad 400 "$(jq -c '.owner = "me"' <<<"$good")" "'owner'"
bad 400 '{"name":' "not valid JSON"
bad 400 '[1,2,3]' "JSON object"
bad 400 "$good$good" "after its JSON|not valid JSON"
bad 400 '{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{}}}}}}}}}}' "deeper"
# A key given twice is refused (json-c alone would keep the last one),
# at the top and inside an object, with a JSON error body.
bad 400 "$(jq -c '.' <<<"$good" | sed 's/^{/{"count":1,/')" "field 'count': appears more than once"
bad 400 "$(jq -c '.placement = {"strategy":"pack"}' <<<"$good" | sed 's/"strategy":"pack"/"strategy":"pack","strategy":"spread"/')" "placement.strategy.*more than once"
jq -e '.error.code == "bad_request"' "$tmpdir/body" >/dev/null || fail "duplicate key: not a bad_request JSON error: $(cat "$tmpdir/body")"
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $(cat "$token_file")" -H 'Content-Type: text/plain' \
    --data-binary "$good" "$api_url/v1/clusters")
expect 415 '.error.message | test("Content-Type")'
bad 400 "$good" "Idempotency-Key" -H "Idempotency-Key: $(printf 'k%.0s' {1..300})"
head -c 70000 /dev/zero | tr '\0' ' ' > "$tmpdir/big"
code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $(cat "$token_file")" -H 'Content-Type: application/json' \
    --data-binary @"$tmpdir/big" "$api_url/v1/clusters")
expect 413
bad 422 "$(jq -c '.image = "nosuch"' <<<"$good")" "not registered"
bad 422 "$(jq -c '.vcpus = 8' <<<"$good")" "."
bad 422 "$(jq -c '.placement = {"nodes":["node9"]}' <<<"$good")" "node9"
bad 422 "$(jq -c '.placement = {"zone":"z9"}' <<<"$good")" "."
bad 422 "$(jq -c '.count = 13' <<<"$good")" "at most 12"
call GET /v1/clusters
expect 200 '.clusters == []'
expect_schema api-cluster-list

# ---- a cluster ---------------------------------------------------------------------

call POST /v1/clusters "$good" -H 'Idempotency-Key: web-1' -D "$tmpdir/headers"
expect 202 '.state == "pending" and .count == 3 and (.vms | length == 3)
            and ([.vms[].node] | sort == ["node1","node2","node3"])'
expect_schema api-cluster
id=$(jq -r .id "$tmpdir/body")
grep -qi "^location: /v1/clusters/$id" "$tmpdir/headers" ||
    fail "no Location header: $(cat "$tmpdir/headers")"
call POST /v1/clusters "$good" -H 'Idempotency-Key: web-1'
expect 200 ".id == \"$id\""
call POST /v1/clusters "$(jq -c '.count = 2' <<<"$good")" -H 'Idempotency-Key: web-1'
expect 409 '.error.message | test("Idempotency-Key")'
call POST /v1/clusters "$good"
expect 409 '.error.message | test("web")'

call GET "/v1/clusters/$id/tree"
expect 200 ".cluster == \"$id\" and .origin == \"$origin_nbd\" and (.nodes | length == 3)
            and .origin_children == 1 and (.nodes | all(.upstreams[-1] == \"$origin_nbd/img\"))"
expect_schema api-cluster-tree
cp "$tmpdir/body" "$tmpdir/tree.json"

wait_cluster "$id" failed 30
expect 200 '.counts.failed == 3 and (.vms | all(.state == "failed" and (.reason | test("pool"))))
            and (.error | test("3 of 3"))'
expect_schema api-cluster
# The upstream lists the nodes were given are the tree's.
for n in 1 2 3; do
    want=$(jq -c --arg n "node$n" '.nodes[] | select(.node == $n) | .upstreams' "$tmpdir/tree.json")
    got=$(nstats "$n" img | jq -c '[.upstreams[].uri]')
    [ "$want" = "$got" ] || fail "node$n was given $got, the tree says $want"
done
call GET "/v1/clusters?state=failed"
expect 200 "[.clusters[].id] == [\"$id\"]"
call GET "/v1/clusters?state=bogus"
expect 400

code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' "$api_url/metrics")
[ "$code" = 200 ] || fail "GET /metrics: $code"
for line in 'thunder_api_clusters{state="failed"} 1' 'thunder_api_vms{state="failed"} 3' \
            'thunder_api_nodes{state="ready"} 3' 'thunder_api_provision_seconds_count 1' \
            'thunder_api_requests_total{method="POST",code="202"} 1'; do
    grep -qF "$line" "$tmpdir/body" || fail "metrics lack '$line': $(cat "$tmpdir/body")"
done
grep -q '^thunder_api_node_heartbeats_total [1-9]' "$tmpdir/body" || fail "no heartbeats counted"

# ---- a node fails: its children are re-parented -------------------------------------------

# The chain origin → a → b → c (origin cap 1, 100 Mbit/s: a chain at N=3).
mid=$(jq -r '.nodes[] | select(.depth == 2) | .node' "$tmpdir/tree.json")
leaf=$(jq -r '.nodes[] | select(.depth == 3) | .node' "$tmpdir/tree.json")
[ -n "$mid" ] && [ -n "$leaf" ] || fail "expected a chain: $(cat "$tmpdir/tree.json")"
kill -KILL "${node_pid[${mid#node}]}"
for (( i = 0; i < 50; ++i )); do
    call GET "/v1/nodes/$mid"
    [ "$(jq -r .state "$tmpdir/body")" = down ] && break
    sleep 0.2
done
expect 200 '.state == "down"'
for (( i = 0; i < 50; ++i )); do
    got=$(nstats "${leaf#node}" img | jq -c '[.upstreams[].uri]')
    [ "$(jq length <<<"$got")" = 2 ] && break
    sleep 0.2
done
call GET "/v1/clusters/$id/tree"
want=$(jq -c --arg n "$leaf" '.nodes[] | select(.node == $n) | .upstreams' "$tmpdir/body")
[ "$want" = "$got" ] && [ "$(jq length <<<"$want")" = 2 ] ||
    fail "after $mid failed, $leaf has $got, the tree says $want"
jq -e --arg n "$leaf" --arg p "$(jq -r '.nodes[] | select(.depth == 1) | .node' "$tmpdir/tree.json")" \
    '.nodes[] | select(.node == $n) | .parent == $p' "$tmpdir/body" >/dev/null ||
    fail "$leaf was not re-parented: $(cat "$tmpdir/body")"

# Capacity short now (a node is down), not forever: 409, nothing made.
bad 409 "$(jq -c '.count = 12 | .name = "big"' <<<"$good")" "fit 8 now"
expect 409 '.error.code == "insufficient_capacity"'
call GET /v1/clusters
expect 200 '.clusters | length == 1'

# ---- delete, restart ---------------------------------------------------------------------

call DELETE "/v1/clusters/$id"
expect 202 '.state == "deleting" or .state == "deleted"'
wait_cluster "$id" deleted 30
for n in 1 2 3; do
    [ "$n" = "${mid#node}" ] && continue
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$node_token_file")" \
        "${node_ctl[$n]}/v1/images/img")
    [ "$c" = 200 ] || fail "node$n: GET /v1/images/img is $c after DELETE, want 200 (detached after the grace)"
done
call DELETE "/v1/clusters/$id"
expect 200 '.state == "deleted"'

stop_api
start_api --node-token-file "$node_token_file" --node-timeout 2
call GET "/v1/clusters/$id"
expect 200 '.state == "deleted" and .name == "web"'
call GET /v1/images/img
expect 200 ".version == \"$version\""
echo "api-basic: ok"
