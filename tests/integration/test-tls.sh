#!/usr/bin/env bash
# thunder — HTTPS and node identity (issue 15), with certificates made by
# thunderctl pki:
#  - thunder-api --tls require and a node's control endpoint
#    (--control-tls require): thunderctl reaches both with --cacert and a
#    client certificate; a wrong CA fails naming the URL and the
#    verification; no client certificate is refused (403);
#  - the node registers and heartbeats over HTTPS as the CN of its client
#    certificate, and thunder-api's converger pushes an attach to the
#    node's HTTPS control endpoint with its own client certificate;
#  - the node takes its certificate's CN as its name; node1's certificate
#    claiming node2 (registration or heartbeat) is refused (403), and a
#    thunderd started so refuses to start;
#  - another node advertising node1's NBD address or control URL is
#    refused (409); a node whose control URL is node1's endpoint under
#    another spelling gets no call through: the endpoint's certificate must
#    name the node the call is for;
#  - a down node whose NBD address another node took gets 409 on its
#    heartbeat and stays down;
#  - a client key readable by others is refused at start, like a server
#    key;
#  - NBD over TLS, the fetcher's side: node1 attaches an image from
#    nbdkit --tls=require --tls-verify-peer (nbds:// upstream, its
#    --tls-certificates) and serves its exact bytes; plaintext gets
#    nothing from nbdkit; a node whose certificates are of another CA
#    cannot attach, and its log says why.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/api-functions.sh"

pki=$tmpdir/pki
mkdir "$pki"
"$THUNDERCTL" pki init "$pki/ca" >/dev/null
for h in api node1 node2 op; do
    "$THUNDERCTL" pki issue "$h" --ca "$pki/ca" --out "$pki/$h" \
        --ip 127.0.0.1 --dns localhost >/dev/null
done
"$THUNDERCTL" pki init "$pki/other" >/dev/null

# Bad settings stop the services at start, naming the option or the file.
bad_start ()
{
    local want=$1 out rc
    shift
    set +e
    out=$("$@" --token-file "$token_file" 2>&1 </dev/null)
    rc=$?
    set -e
    [ $rc -eq 1 ] && grep -q -- "$want" <<<"$out" || fail "$*: exit $rc: $out"
}
bad_start "tls: 'maybe': expected off, on or require" \
    "$THUNDER_API" --listen 127.0.0.1:0 --db "$tmpdir/bad.db" --tls maybe
bad_start "tls: $tmpdir/nodir/ca-cert.pem: No such file" \
    "$THUNDER_API" --listen 127.0.0.1:0 --db "$tmpdir/bad.db" --tls on --tls-certificates "$tmpdir/nodir"
cp -a "$pki/api" "$pki/loose"
chmod 0644 "$pki/loose/server-key.pem"
bad_start "loose/server-key.pem: a key readable or writable by others (mode 0644)" \
    "$THUNDER_API" --listen 127.0.0.1:0 --db "$tmpdir/bad.db" --tls require --tls-certificates "$pki/loose"
# The client key is held to the server key's rule (thunder-api and
# thunderd load it the same way).
cp -a "$pki/api" "$pki/looseclient"
chmod 0604 "$pki/looseclient/client-key.pem"
bad_start "looseclient/client-key.pem: a key readable or writable by others (mode 0604)" \
    timeout 10 "$THUNDER_API" --listen 127.0.0.1:0 --db "$tmpdir/bad.db" --tls require --tls-certificates "$pki/looseclient"
bad_start "control-tls: 'yes': expected off, on or require" \
    "$THUNDERD" --cache "$tmpdir/bad" --socket none --pool none --listen none \
    --control 127.0.0.1:0 --control-tls yes

# Every curl of the helpers (call, stats) verifies with the fleet CA and
# presents the operator's client certificate.
mkdir "$tmpdir/curlhome"
printf 'cacert = "%s"\ncert = "%s"\nkey = "%s"\n' "$pki/ca/ca-cert.pem" \
    "$pki/op/client-cert.pem" "$pki/op/client-key.pem" > "$tmpdir/curlhome/.curlrc"
export CURL_HOME=$tmpdir/curlhome

mkdir "$tmpdir/images"
make_image "$tmpdir/images/img.raw" 2
image_add img "$tmpdir/images/img.raw" >/dev/null
start_origin "$tmpdir/images"

start_api --tls require --tls-certificates "$pki/api" --node-timeout 5 \
    --poll-interval 200 --push-timeout 5000 --push-retries 1
api_url=https://127.0.0.1:$api_port
grep -q "ready: https://.*tls require" "$api_log" || fail "thunder-api: not HTTPS: $(cat "$api_log")"

tctl () { "$THUNDERCTL" --token-file "$token_file" "$@"; }
op_tls=(--cacert "$pki/ca/ca-cert.pem" --cert "$pki/op/client-cert.pem"
        --key "$pki/op/client-key.pem")

# ---- thunderctl against thunder-api ----------------------------------------------

out=$(tctl --api "$api_url" "${op_tls[@]}" api node list 2>&1) ||
    fail "thunderctl api node list over HTTPS: $out"
grep -q "no nodes" <<<"$out" || fail "api node list: $out"
set +e
out=$(tctl --api "$api_url" --cacert "$pki/other/ca-cert.pem" \
      --cert "$pki/op/client-cert.pem" --key "$pki/op/client-key.pem" api node list 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && grep -qF "$api_url/v1/nodes" <<<"$out" &&
    grep -q "certificate verification failed" <<<"$out" &&
    grep -q "not signed by the CA file given" <<<"$out" ||
    fail "a wrong CA: exit $rc: $out"
set +e
out=$(tctl --api "$api_url" --cacert "$pki/ca/ca-cert.pem" api node list 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "403.*client certificate of the fleet CA is required" <<<"$out" ||
    fail "no client certificate under require: exit $rc: $out"
code=$(curl -q -s -o "$tmpdir/body" -w '%{http_code}' "$api_url/healthz") && false
[ "${code:-000}" = 000 ] || fail "curl without the fleet CA got HTTP $code"

# ---- node1 registers as its certificate's CN ------------------------------------

# No --node-name: the name is the certificate's CN.
start_node 1 --listen "127.0.0.1:$(free_port)" --control "127.0.0.1:$(free_port)" \
    --api "$api_url" --heartbeat-interval 500 --capacity-vcpus 4 \
    --capacity-memory-mib 4096 --capacity-disk-gib 100 \
    --control-tls require --tls-certificates "$pki/node1"
node_ctl[1]=https://127.0.0.1:${node_ctl[1]##*:}
grep -q "registering node node1 at" "${node_log[1]}" ||
    fail "node1 does not register under its certificate's name: $(cat "${node_log[1]}")"
grep -q "control endpoint on .* (https, tls require)" "${node_log[1]}" ||
    fail "node1's control endpoint is not HTTPS: $(cat "${node_log[1]}")"
wait_nodes_ready 1
call GET /v1/nodes/node1
expect 200 ".control_url == \"${node_ctl[1]}\" and .nbd_uri == \"${node_nbd[1]}\""

# thunderctl against the node's control endpoint.
out=$(tctl --node "${node_ctl[1]}" "${op_tls[@]}" node show 2>&1) ||
    fail "thunderctl node show over HTTPS: $out"
set +e
out=$(tctl --node "${node_ctl[1]}" --cacert "$pki/other/ca-cert.pem" \
      --cert "$pki/op/client-cert.pem" --key "$pki/op/client-key.pem" node show 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && grep -qF "${node_ctl[1]}" <<<"$out" &&
    grep -q "certificate verification failed" <<<"$out" ||
    fail "node show with a wrong CA: exit $rc: $out"
set +e
out=$(tctl --node "${node_ctl[1]}" --cacert "$pki/ca/ca-cert.pem" node show 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "client certificate of the fleet CA is required" <<<"$out" ||
    fail "node show without a client certificate: exit $rc: $out"

# ---- node1's certificate claiming node2 ----------------------------------------------

# curl with the client certificate of $1, the body to $tmpdir/body: prints
# the status.
curl_as ()
{
    local who=$1
    shift
    curl -q -s --cacert "$pki/ca/ca-cert.pem" --cert "$pki/$who/client-cert.pem" \
        --key "$pki/$who/client-key.pem" -o "$tmpdir/body" -w '%{http_code}' \
        -H "Authorization: Bearer $(cat "$token_file")" -H 'Content-Type: application/json' "$@"
}
reg='{"name":"node2","nbd_uri":"nbd://127.0.0.1:1","control_url":"https://127.0.0.1:1","capacity":{"vcpus":1,"memory_mib":64,"disk_gib":1}}'
code=$(curl_as node1 --data-binary "$reg" "$api_url/v1/nodes")
expect 403 '.error.code == "forbidden" and (.error.message | test("names .node1.; a node may only speak for itself"))'
code=$(curl_as node1 --data-binary '{}' "$api_url/v1/nodes/node2/heartbeat")
expect 403 '.error.message | test("heartbeat of node .node2.")'
# Its own heartbeat passes.
code=$(curl_as node1 --data-binary '{}' "$api_url/v1/nodes/node1/heartbeat")
expect 200
# A thunderd with node1's certificate and --node-name node2 does not start.
set +e
out=$("$THUNDERD" --cache "$tmpdir/cache9" --socket none --pool none \
      --listen "127.0.0.1:$(free_port)" --control 127.0.0.1:0 --token-file "$token_file" \
      --api "$api_url" --node-name node2 --tls-certificates "$pki/node1" 2>&1)
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "node-name: 'node2', but the client certificate .*/node1/client-cert.pem names 'node1'" <<<"$out" ||
    fail "thunderd claiming node2 with node1's certificate: exit $rc: $out"
call GET /v1/nodes/node2
expect 404

# ---- one NBD address, two nodes -------------------------------------------------------

reg=$(jq -c --arg u "${node_nbd[1]}" '.nbd_uri = $u' <<<"$reg")
code=$(curl_as node2 --data-binary "$reg" "$api_url/v1/nodes")
expect 409 ".error.message | test(\"already advertised by node .node1.\")"
reg=$(jq -c '.nbd_uri = "nbd://127.0.0.1:2"' <<<"$reg")
code=$(curl_as node2 --data-binary "$reg" "$api_url/v1/nodes")
expect 201 '.name == "node2"'

# ---- one control URL, two nodes ---------------------------------------------------------

# "op" (a valid fleet certificate) claims node1's control endpoint: the same
# URL is refused like an NBD address ...
reg=$(jq -c --arg c "${node_ctl[1]}" '.name = "op" | .nbd_uri = "nbd://127.0.0.1:3" | .control_url = $c' <<<"$reg")
code=$(curl_as op --data-binary "$reg" "$api_url/v1/nodes")
expect 409 ".error.message | test(\"control_url ${node_ctl[1]} is already advertised by node .node1.\")"
# ... and another spelling of it (node1's certificate is valid for
# localhost too) passes registration, but thunder-api's calls for "op"
# stop at the certificate, which names node1: no request reaches node1.
reg=$(jq -c --arg c "https://localhost:${node_ctl[1]##*:}" '.control_url = $c' <<<"$reg")
code=$(curl_as op --data-binary "$reg" "$api_url/v1/nodes")
expect 201 '.name == "op"'

# ---- thunder-api calls the node over HTTPS ----------------------------------------------

call POST /v1/images "{\"name\":\"img\",\"origin\":\"$origin_nbd\"}"
expect 201
call POST /v1/clusters '{"name":"web","image":"img","count":1,"vcpus":1,"memory_mib":128,"placement":{"nodes":["node1"]}}'
expect 202
id=$(jq -r .id "$tmpdir/body")
wait_cluster "$id" failed 30
# The attach reached node1 (its VM is refused: no pool on it).
curl -q -sf --cacert "$pki/ca/ca-cert.pem" --cert "$pki/api/client-cert.pem" \
    --key "$pki/api/client-key.pem" -H "Authorization: Bearer $(cat "$token_file")" \
    "${node_ctl[1]}/v1/images/img" -o "$tmpdir/img.json" ||
    fail "node1 has no image img: the API's attach did not arrive: $(jq -c . "$tmpdir/body")"
jq -e ".upstreams[-1].uri == \"$origin_nbd/img\"" "$tmpdir/img.json" >/dev/null ||
    fail "node1's img: $(cat "$tmpdir/img.json")"
jq -e '.vms[0].reason | test("pool")' "$tmpdir/body" >/dev/null ||
    fail "the VM failed for another reason than the missing pool: $(jq -c . "$tmpdir/body")"

# The cluster placed on "op" goes nowhere: its endpoint proves node1.
call POST /v1/clusters '{"name":"stolen","image":"img","count":1,"vcpus":1,"memory_mib":64,"placement":{"nodes":["op"]}}'
expect 202
id=$(jq -r .id "$tmpdir/body")
wait_cluster "$id" failed 30
grep -q "certificate names node 'node1', not 'op'" "$tmpdir/body" "$api_log" ||
    fail "the calls for op were not refused on node1's certificate: $(jq -c . "$tmpdir/body")"
jq -e '[.vms[].reason // "" | test("pool")] | any | not' "$tmpdir/body" >/dev/null ||
    fail "a VM of op reached node1 (refused there for its pool): $(jq -c . "$tmpdir/body")"

# ---- a down node's NBD address taken, then its heartbeat -----------------------------

# node2 (registered by hand, no heartbeats) goes down; "op" takes its NBD
# address; node2's heartbeat is then refused, naming op, and node2 stays
# down: one ready node per address.
for (( i = 0; i < 60; ++i )); do
    call GET /v1/nodes/node2
    [ "$(jq -r .state "$tmpdir/body")" = down ] && break
    sleep 0.2
done
expect 200 '.state == "down"'
reg=$(jq -c '.nbd_uri = "nbd://127.0.0.1:2" | .control_url = "https://127.0.0.1:3"' <<<"$reg")
code=$(curl_as op --data-binary "$reg" "$api_url/v1/nodes")
expect 200 '.name == "op" and .nbd_uri == "nbd://127.0.0.1:2"'
code=$(curl_as node2 --data-binary '{}' "$api_url/v1/nodes/node2/heartbeat")
expect 409 '.error.code == "conflict" and (.error.message | test("heartbeat of node .node2.: nbd_uri nbd://127.0.0.1:2 is already advertised by node .op., which is ready"))'
call GET /v1/nodes/node2
expect 200 '.state == "down"'

# ---- NBD over TLS: node1 fetches from nbdkit --tls=require -------------------------

if nbdkit --tls=require --dump-config >/dev/null 2>&1 && nbdkit file --version >/dev/null 2>&1; then
    mkdir "$tmpdir/tlsexports"
    cp "$tmpdir/images/img.raw" "$tmpdir/tlsexports/tlsimg"
    # The manifest export of image tlsimg (docs/manifest.md), for the same
    # bytes under another name.
    sed 's/"name": *"img"/"name":"tlsimg"/' "$tmpdir/images/img.manifest.json" \
        > "$tmpdir/tlsexports/tlsimg@manifest"
    grep -q '"tlsimg"' "$tmpdir/tlsexports/tlsimg@manifest" ||
        fail "could not rename the manifest: $(head -c 300 "$tmpdir/tlsexports/tlsimg@manifest")"
    tlsver=$(sha256sum "$tmpdir/tlsexports/tlsimg@manifest" | cut -d' ' -f1)
    kport=$(free_port)
    nbdkit --exit-with-parent -f -r --tls=require --tls-certificates="$pki/api" \
        --tls-verify-peer -i 127.0.0.1 -p "$kport" file dir="$tmpdir/tlsexports" \
        2>"$tmpdir/nbdkit.log" &
    cleanup_fn kill $!
    for (( i = 0; i < 50; ++i )); do
        nbdinfo --size "nbds://127.0.0.1:$kport/tlsimg?tls-certificates=$pki/op" >/dev/null 2>&1 && break
        sleep 0.1
    done
    # Plaintext gets nothing from it.
    if nbdinfo --size "nbd://127.0.0.1:$kport/tlsimg" >/dev/null 2>&1; then
        fail "nbdkit --tls=require served a plaintext client"
    fi
    out=$(tctl --node "${node_ctl[1]}" "${op_tls[@]}" image attach tlsimg \
          --upstream "nbds://127.0.0.1:$kport/tlsimg" --version "$tlsver" 2>&1) ||
        fail "attach tlsimg from nbdkit over TLS: $out"
    nbdcopy "nbd+unix:///tlsimg?socket=${node_sock[1]}" "$tmpdir/tlsimg.copy" ||
        fail "nbdcopy of tlsimg from node1"
    cmp "$tmpdir/tlsimg.copy" "$tmpdir/images/img.raw" ||
        fail "tlsimg through node1 differs from the image"
    # node9's directory has another CA: its attach finds no upstream.
    "$THUNDERCTL" pki issue node9 --ca "$pki/other" --out "$pki/node9" --ip 127.0.0.1 >/dev/null
    start_node 9 --tls-certificates "$pki/node9"
    set +e
    out=$(tctl --node "${node_ctl[9]}" image attach tlsimg \
          --upstream "nbds://127.0.0.1:$kport/tlsimg" --version "$tlsver" 2>&1)
    rc=$?
    set -e
    [ $rc -ne 0 ] || fail "node9 attached over TLS with another CA's certificates: $out"
    grep -q "nbds://127.0.0.1:$kport/tlsimg: manifest: .*certificate" "${node_log[9]}" ||
        fail "node9's log does not say why: $(grep -i tlsimg "${node_log[9]}" | tail -n 3)"
else
    echo "$0: SKIPPED NBD over TLS: nbdkit without --tls or its file plugin" >&2
fi

echo "tls: ok"
