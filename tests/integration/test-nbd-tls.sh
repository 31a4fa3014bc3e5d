#!/usr/bin/env bash
# thunder — NBD over TLS on thunderd's TCP listener (issue 15, item 1),
# certificates made by thunderctl pki:
#  - a chain origin → n1 → n2, every one with --tls require and nbds://
#    upstreams: nbdcopy through n2 equals the image (over n2's plaintext
#    Unix socket, and over TLS on its TCP port); nbdinfo and nbdcopy with
#    the tls-certificates URI parameter; qemu-img info with a
#    tls-creds-x509 object;
#  - with require, a plaintext client gets NBD_REP_ERR_TLS_REQD and no
#    export list or size; a client without a certificate, or with one of
#    another CA (trusting the fleet's CA or not), fails the TLS handshake
#    (and thunderd's log says why);
#  - a slow reader over TLS (the server's sends stop part way through a
#    batch of records) gets the image's bytes;
#  - a KeyUpdate and a request read ahead together: the request is
#    answered;
#  - 160 slow TLS readers hold thunderd's memory within the reply budget
#    (the TLS records waiting to be sent count in it);
#  - with on, plaintext and TLS clients are both served; many reads in
#    flight over TLS on a cold node are all answered with the image's
#    bytes (nbdbench --verify);
#  - through thunder-api: nodes with --tls require register nbds://; the
#    image is registered with an nbds:// origin (thunder-api reads the
#    manifest with its client certificate; nbd:// to it is refused, 502);
#    the planner's chain origin → node4 → node5 is pushed with nbds://
#    upstreams and node5 serves the image's bytes; a node with TLS off and
#    no client certificate under the nbds:// origin fails its attach, the
#    VM's reason naming the upstream.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/api-functions.sh"
requires_program nbdinfo
requires_program nbdcopy

pki=$tmpdir/pki
mkdir "$pki"
"$THUNDERCTL" pki init "$pki/ca" >/dev/null
for h in origin node1 node2 node4 node5 api op; do
    "$THUNDERCTL" pki issue "$h" --ca "$pki/ca" --out "$pki/$h" \
        --ip 127.0.0.1 --dns localhost >/dev/null
done
"$THUNDERCTL" pki init "$pki/other" >/dev/null
"$THUNDERCTL" pki issue evil --ca "$pki/other" --out "$pki/evil" \
    --ip 127.0.0.1 --dns localhost >/dev/null
# The fleet's CA but no client certificate.
mkdir "$pki/nocert"
cp "$pki/ca/ca-cert.pem" "$pki/nocert/"
# The fleet's CA (the client trusts the server) but a client certificate
# of another CA: the server must refuse it.
mkdir "$pki/mixed"
cp "$pki/ca/ca-cert.pem" "$pki/mixed/"
cp -p "$pki/evil/client-cert.pem" "$pki/evil/client-key.pem" "$pki/mixed/"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 4 777
image_add img "$images/img.raw" >/dev/null

start_origin "$images" --tls require --tls-certificates "$pki/origin"
start_node 1 --tls require --tls-certificates "$pki/node1"
start_node 2 --tls require --tls-certificates "$pki/node2"
o=${origin_nbd#nbd://}; n1=${node_nbd[1]#nbd://}; n2=${node_nbd[2]#nbd://}
# The version is given: thunderctl itself has no client certificate to
# read the manifest over TLS.
ver=$(sha256 "$images/img.manifest.json")
tls_attach ()
{
    local n=$1 out
    shift
    out=$("$THUNDERCTL" --node "${node_ctl[$n]}" --token-file "$token_file"           image attach img "$@" --version "$ver" 2>&1) ||
        fail "attach img on node $n: $out"
}
tls_attach 1 --upstream "nbds://$o/img"
tls_attach 2 --upstream "nbds://$n1/img" --upstream "nbds://$o/img"

# Bytes exact through the chain: n2's local socket (plaintext), then
# n2's TCP port over TLS.
copy_and_check "nbd+unix:///img?socket=${node_sock[2]}" "$images/img.raw"
[ "$(stats 2 img | counter .counters.fetch_failures)" -eq 0 ] ||
    fail "node 2: fetch failures: $(stats 2 img)"
copy_and_check "nbds://$n2/img?tls-certificates=$pki/op" "$images/img.raw"
size=$(nbdinfo --size "nbds://$n1/img?tls-certificates=$pki/op") ||
    fail "nbdinfo over TLS to node 1"
[ "$size" -eq "$(stat -c %s "$images/img.raw")" ] ||
    fail "nbdinfo over TLS: size $size"
nbdinfo --list "nbds://$o?tls-certificates=$pki/op" | grep -q '^export="img"' ||
    fail "nbdinfo --list over TLS does not list img"

if command -v qemu-img >/dev/null; then
    out=$(qemu-img info --output=json \
          --object "tls-creds-x509,id=tls0,dir=$pki/op,endpoint=client" \
          --image-opts "driver=nbd,host=127.0.0.1,port=${n2##*:},export=img,tls-creds=tls0" 2>&1) ||
        fail "qemu-img info over TLS: $out"
    # QEMU rounds the size up to whole sectors.
    [ "$(jq -r '."virtual-size"' <<<"$out")" -eq $(( (size + 511) / 512 * 512 )) ] ||
        fail "qemu-img info over TLS: $out"
else
    echo "$0: SKIPPED qemu-img over TLS: no qemu-img" >&2
fi

# refused MESSAGE-REGEX CMD...  — CMD must fail, print nothing on stdout,
# and say MESSAGE-REGEX on stderr.
refused ()
{
    local want=$1 out rc
    shift
    set +e
    out=$("$@" 2>"$tmpdir/refused.err")
    rc=$?
    set -e
    [ $rc -ne 0 ] || fail "$*: succeeded: $out"
    [ -z "$out" ] || fail "$*: printed data: $out"
    grep -Eqi -- "$want" "$tmpdir/refused.err" ||
        fail "$*: stderr does not match '$want': $(cat "$tmpdir/refused.err")"
}

# Plaintext: told TLS is required, no size, no list.
refused "server requires TLS" nbdinfo --size "nbd://$n1/img"
# (libnbd says "Operation not supported" for a refused list; its debug
# output has the server's message.)
refused "server error message: TLS is required" \
    env LIBNBD_DEBUG=1 nbdinfo --list "nbd://$o"
# No client certificate; another CA's certificate.
refused "handshake|certificate|TLS" \
    nbdinfo --size "nbds://$n1/img?tls-certificates=$pki/nocert"
refused "handshake|certificate|TLS|verif" \
    nbdinfo --size "nbds://$n1/img?tls-certificates=$pki/evil"
refused "handshake|certificate|TLS|verif|alert" \
    nbdinfo --size "nbds://$n1/img?tls-certificates=$pki/mixed"
refused "." nbdcopy "nbds://$n2/img?tls-certificates=$pki/evil" "$tmpdir/evil.copy"
[ ! -s "$tmpdir/evil.copy" ] || fail "nbdcopy with another CA's certificate wrote data"
grep -qi "TLS handshake:.*certificate" "${node_log[1]}" ||
    fail "node 1's log does not say why a client was refused: $(grep -i tls "${node_log[1]}" | tail -n 5)"
# A client that presents another CA's certificate anyway (GnuTLS clients
# send none the server's CA did not sign): refused during the handshake,
# no list; the origin (no refusal logged yet: its log lines are
# rate-limited) says why.  Then the fleet's certificate lists img.
tlsclient=$(dirname "$0")/nbd-tls-client.py
out=$(/usr/bin/python3 "$tlsclient" 127.0.0.1 "${o##*:}" "$pki/ca/ca-cert.pem" \
      "$pki/evil/client-cert.pem" "$pki/evil/client-key.pem")
[[ "$out" == error:* ]] || fail "another CA's client certificate: $out"
for (( i = 0; i < 20; ++i )); do
    grep -q "TLS handshake:.*client certificate refused" "$origin_log" && break
    sleep 0.1
done
grep -q "TLS handshake:.*client certificate refused" "$origin_log" ||
    fail "the origin's log does not name the refused certificate: $(grep -i tls "$origin_log" | tail -n 5)"
out=$(/usr/bin/python3 "$tlsclient" 127.0.0.1 "${o##*:}" "$pki/ca/ca-cert.pem" \
      "$pki/op/client-cert.pem" "$pki/op/client-key.pem")
[ "$out" = "list: img" ] || fail "the raw TLS client with the fleet's certificate: $out"
# A reader the server must wait for (16 KiB receive buffer, 8 MiB and 256
# small reads asked for at once, read 0.3 s later; TLS 1.3): the server's
# batches of TLS records stop part way and resume, and every reply is the
# image's bytes.
out=$(/usr/bin/python3 "$tlsclient" --slow-read "$images/img.raw" 127.0.0.1 \
      "${n1##*:}" "$pki/ca/ca-cert.pem" "$pki/op/client-cert.pem" \
      "$pki/op/client-key.pem" img) ||
    fail "a slow reader over TLS: $out"
[ "$out" = "read: 8 MiB and 256 small over TLSv1.3" ] || fail "a slow reader over TLS: $out"
# TLS 1.3 key updates (the client asks for the server's too) while 1 MiB
# replies stream, 16 connections at once for 1.5 s, every byte compared: a
# KeyUpdate is handled in the server's receiving thread and re-keys its
# sending side, so without the session's lock (nbdtls.c, "Threads")
# records went out under a reused sequence number and the client failed
# with "Decryption has failed".
out=$("$TEST_TOOLS_DIR/nbd-tls-keyupdate" 127.0.0.1 "${o##*:}" img \
      "$images/img.raw" "$pki/op" 16 1500 2>&1) ||
    fail "TLS 1.3 key updates while replies stream: $out"
grep -Eq '^ok: 16 connections over TLS1.3, [0-9]+ replies of 1 MiB, [1-9][0-9]* key updates$' <<<"$out" ||
    fail "TLS 1.3 key updates while replies stream: $out"
echo "key updates: $out"
# A KeyUpdate and a request in one TCP segment: the server's read-ahead
# takes both records at once; GnuTLS handles the KeyUpdate and returns
# GNUTLS_E_AGAIN, and the request record, out of epoll's sight in the
# read-ahead buffer, must still be answered (it stalled: in_settle marked
# it stale and the reader waited for EPOLLIN).  6 rounds: GnuTLS ends a
# connection after 8 key updates within a second.
out=$(timeout 30 "$TEST_TOOLS_DIR/nbd-tls-keyupdate" --coalesced 127.0.0.1 \
      "${o##*:}" img "$images/img.raw" "$pki/op" 1 6 2>&1) ||
    fail "a KeyUpdate and a request in one segment: $out"
[ "$out" = "coalesced: 6" ] || fail "a KeyUpdate and a request in one segment: $out"
if command -v qemu-img >/dev/null; then
    set +e
    out=$(qemu-img info --image-opts "driver=nbd,host=127.0.0.1,port=${n2##*:},export=img" 2>&1)
    rc=$?
    set -e
    [ $rc -ne 0 ] || fail "plaintext qemu-img info served by a --tls require node: $out"
    grep -qi "tls" <<<"$out" || fail "plaintext qemu-img: no word of TLS: $out"
fi

# --tls on: both.
start_node 3 --tls on --tls-certificates "$pki/node2"
n3=${node_nbd[3]#nbd://}
tls_attach 3 --upstream "nbds://$n1/img"
# Many requests in flight over TLS on a cold node: reads that wait for
# the upstream hand the connection to another worker, so one thread reads
# the session while another sends on it, and replies go out of order;
# every reply is compared with the image.
nbdbench=$TOP_BUILDDIR/bench/nbdbench
if [ -x "$nbdbench" ]; then
    "$nbdbench" --uri "nbds://$n3/img?tls-certificates=$pki/op" --clients 4 \
        --depth 8 --size 65536 --pattern rand --seconds 2 --warmup 0 \
        --verify "$images/img.raw" >/dev/null ||
        fail "nbdbench --verify over TLS on a cold node"
fi
copy_and_check "nbd://$n3/img" "$images/img.raw"
copy_and_check "nbds://$n3/img?tls-certificates=$pki/op" "$images/img.raw"
refused "handshake|certificate|TLS|verif" \
    nbdinfo --size "nbds://$n3/img?tls-certificates=$pki/evil"

# Slow TLS readers stay within the reply budget: 160 connections from one
# address, each asking for one 256 KiB read with a 4 KiB receive window
# and reading nothing.  A reply's TLS records wait in the session's send
# batch until the client takes them, and their memory counts in the
# budget with the reply's data (nbdtls_send_cost), so what the server
# holds for them stays within inflight-per-address (32 MiB) -- plus 8 MiB
# of slack.  (Without that, the batch's ciphertext was counted nowhere and
# held a 272 KiB buffer each: measured +63 MiB, twice the budget; +24 MiB
# with it.)
# (Under AddressSanitizer freed memory stays resident in its quarantine:
# none for this daemon, so RSS shows what is held; its allocator still
# costs more: 20 MiB of slack then.  Measured +38 to +42 MiB with ASan.)
per_addr=32
slack=8
ldd "$THUNDERD" | grep -q libasan && slack=20
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" \
start_thunderd --origin --images "$images" --socket none \
    --listen 127.0.0.1:@PORT@ --tls on --tls-certificates "$pki/origin" \
    --inflight-per-address $per_addr --max-connections-per-address 200
copy_and_check "nbds://127.0.0.1:$port/img?tls-certificates=$pki/op" "$images/img.raw"
mkfifo "$tmpdir/hold.in"
/usr/bin/python3 "$tlsclient" --hold 160 262144 127.0.0.1 "$port" \
    "$pki/ca/ca-cert.pem" "$pki/op/client-cert.pem" "$pki/op/client-key.pem" \
    img <"$tmpdir/hold.in" >"$tmpdir/hold.out" 2>&1 &
hold_pid=$!
exec 7>"$tmpdir/hold.in"
cleanup_fn kill "$hold_pid"
wait_line ()
{
    local i
    for (( i = 0; i < 300; ++i )); do
        grep -qx "$1" "$tmpdir/hold.out" && return 0
        _pid_running "$hold_pid" || break
        sleep 0.05
    done
    fail "slow TLS readers: no '$1': $(cat "$tmpdir/hold.out")"
}
wait_line "connected 160"
base=$(( $(proc_status "$thunderd_pid" VmRSS) / 1024 ))
echo go >&7
wait_line "holding 160"
max=0
for (( i = 0; i < 15; ++i )); do
    sleep 0.1
    r=$(( $(proc_status "$thunderd_pid" VmRSS) / 1024 ))
    (( r > max )) && max=$r
done
echo "slow TLS readers: RSS $base MiB connected, max $max MiB with 160 x 256 KiB replies unread"
(( max - base <= per_addr + slack )) ||
    fail "160 slow TLS readers took thunderd from $base to $max MiB, want <= $per_addr MiB (inflight-per-address) + $slack more"
exec 7>&-
wait "$hold_pid" || fail "slow TLS readers: $(cat "$tmpdir/hold.out")"
assert_thunderd_alive "slow TLS readers"
stop_thunderd

# ---- through thunder-api: a fleet with --tls require on NBD ----------------------

# Plain HTTP here (HTTPS is test-tls's); --tls-certificates gives
# thunder-api the client certificate it reads nbds:// manifests with.
start_api --tls-certificates "$pki/api" --origin-cap 1 --poll-interval 50 \
    --push-timeout 5000 --push-retries 0
for n in 4 5; do start_api_node "$n" --tls require --tls-certificates "$pki/node$n"; done
# Node 6: TLS off, the fleet's CA but no client certificate.
start_api_node 6 --tls-certificates "$pki/nocert"
wait_nodes_ready 3
call GET /v1/nodes
expect 200 '[.nodes[] | select(.name != "node6") | .nbd_uri | startswith("nbds://127.0.0.1:")] | all and length == 2'
expect 200 '.nodes[] | select(.name == "node6") | .nbd_uri | startswith("nbd://")'
# An nbd:// advertisement under --tls require does not start.
set +e
out=$("$THUNDERD" --cache "$tmpdir/cache9" --socket none --pool none \
      --listen "127.0.0.1:$(free_port)" --control 127.0.0.1:0 \
      --token-file "$token_file" --api "$api_url" --tls require \
      --tls-certificates "$pki/node4" --advertise-nbd "nbd://127.0.0.1:9" 2>&1)
rc=$?
set -e
[ $rc -eq 1 ] && grep -q -- "--advertise-nbd: 'nbd://127.0.0.1:9' is plaintext NBD, but --tls require refuses it" <<<"$out" ||
    fail "an nbd:// advertisement under --tls require: exit $rc: $out"

call POST /v1/images "{\"name\":\"img\",\"origin\":\"nbd://$o\"}"
expect 502 ".error.message | test(\"nbd://$o export img@manifest: Operation not supported .*requires TLS.*nbds://\")"
out=$("$THUNDERCTL" --api "$api_url" --token-file "$token_file" api image register img \
      --origin "nbds://$o" 2>&1) || fail "thunderctl api image register --origin nbds://: $out"
call GET /v1/images/img
expect 200 ".version == \"$ver\" and .origin == \"nbds://$o\""
call POST /v1/clusters '{"name":"tls","image":"img","count":2,"vcpus":1,"memory_mib":64,"fanout":1,"placement":{"nodes":["node4","node5"]}}'
expect 202
id=$(jq -r .id "$tmpdir/body")
# No pool on the nodes: the VMs fail after the attach.
wait_cluster "$id" failed 30
jq -e '[.vms[].reason | test("pool")] | all' "$tmpdir/body" >/dev/null ||
    fail "a VM failed for another reason than the missing pool: $(jq -c . "$tmpdir/body")"
call GET "/v1/clusters/$id/tree"
expect 200 '.depth == 2 and .origin_children == 1'
expect_schema api-cluster-tree
leaf=$(jq -r '.nodes[] | select(.depth == 2) | .node' "$tmpdir/body")
root=$(jq -r '.nodes[] | select(.depth == 1) | .node' "$tmpdir/body")
jq -e --arg o "nbds://$o/img" --arg p "${node_nbd[${root#node}]/nbd:/nbds:}/img" \
    '(.nodes[] | select(.depth == 1) | .upstreams) == [$o] and
     (.nodes[] | select(.depth == 2) | .upstreams) == [$p, $o]' "$tmpdir/body" >/dev/null ||
    fail "the tree's upstreams are not the nodes' nbds:// addresses: $(jq -c . "$tmpdir/body")"
# What the leaf was pushed, and that it fetched over TLS: its bytes.
l=${leaf#node}
jq -e --arg p "${node_nbd[${root#node}]/nbd:/nbds:}/img" '.upstreams[0].uri == $p' \
    <<<"$(stats "$l" img)" >/dev/null || fail "$leaf's img: $(stats "$l" img)"
copy_and_check "nbds://${node_nbd[$l]#nbd://}/img?tls-certificates=$pki/op" "$images/img.raw"
[ "$(stats "$l" img | counter .counters.fetch_failures)" -eq 0 ] ||
    fail "$leaf: fetch failures: $(stats "$l" img)"

# The mixed fleet: node6 has no client certificate for the origin's
# require: its attach fails, and the VM's reason says where and why.
call POST /v1/clusters '{"name":"plain","image":"img","count":1,"vcpus":1,"memory_mib":64,"placement":{"nodes":["node6"]}}'
expect 202
id=$(jq -r .id "$tmpdir/body")
wait_cluster "$id" failed 30
jq -e --arg o "nbds://$o/img" '.vms[0].reason | test("attaching image img on node node6: .*" + $o + ".*(TLS|handshake|certificate)"; "i")' \
    "$tmpdir/body" >/dev/null ||
    fail "node6's attach under an nbds:// origin: $(jq -c . "$tmpdir/body")"

assert_thunderd_alive
echo "nbd-tls: ok"
