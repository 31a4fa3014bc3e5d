#!/usr/bin/env bash
# thunder — per-node enrolment tokens with TLS off (issue 15 item 3,
# docs/security.md "Node identity"), with a real thunder-api and a real
# thunderd node:
#  - thunderctl api node enrol writes the token shown once to a 0600 file;
#    enrolling again without --rotate is refused (409);
#  - the node registers and heartbeats with it (thunderd --node-token-file),
#    a token file readable by others stops thunderd at start;
#  - the enrolled name is refused (403) with the fleet token, and the token
#    is refused under another name (403 naming its node); a token nobody
#    issued is 401;
#  - after --rotate the old token is 401 (as any token nobody holds), the
#    running node's heartbeats are refused, and the node restarted with the
#    new file registers;
#  - after revoke the token is 401;
#  - a name never enrolled still registers with the fleet token, unless
#    thunder-api runs with --require-enrolment.
# The rule itself, case by case, is tests/unit/test-enrol.c; the table,
# rotation and the 3 -> 4 upgrade are test-store's.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/api-functions.sh"

start_api --node-timeout 5
tctl () { "$THUNDERCTL" --api "$api_url" --token-file "$token_file" "$@"; }

# as TOKEN METHOD PATH [BODY]  — a request with bearer TOKEN; sets $code.
as ()
{
    local tok=$1 method=$2 path=$3
    shift 3
    code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X "$method" \
        -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
        --data-binary "${1:-{\}}" "$api_url$path") || fail "curl $method $path failed"
}
# refused CODE JQ-FILTER  — the last reply was the error CODE and its
# message satisfies the filter (expect would also validate the error
# schema, a python start of 0.5 s each: api-basic checks the schema).
refused ()
{
    [ "$code" = "$1" ] && jq -e ".error.code and ($2)" "$tmpdir/body" >/dev/null ||
        fail "expected HTTP $1 with $2, got $code: $(head -c 2000 "$tmpdir/body")"
}
# log_within SECONDS LOG PATTERN  — whether LOG gets a line matching PATTERN.
log_within ()
{
    local i
    for (( i = 0; i < $1 * 10; ++i )); do
        grep -q -- "$3" "$2" && return 0
        sleep 0.1
    done
    return 1
}
node_body () { printf '{"name":"%s","nbd_uri":"nbd://127.0.0.1:%s","control_url":"http://127.0.0.1:%s","capacity":{"vcpus":1,"memory_mib":64,"disk_gib":1}}' "$1" "$2" "$2"; }
fleet=$(cat "$token_file")

# ---- enrol -----------------------------------------------------------------------
tctl api node enrol node1 --out "$tmpdir/node1.token" 2>"$tmpdir/out" ||
    fail "api node enrol: $(cat "$tmpdir/out")"
[ "$(stat -c %a "$tmpdir/node1.token")" = 600 ] ||
    fail "token file mode $(stat -c %a "$tmpdir/node1.token")"
tok1=$(cat "$tmpdir/node1.token")
[[ $tok1 =~ ^node1:[0-9a-f]{64}$ ]] || fail "token: $tok1"
# Stored as a salted hash only: the token is nowhere in the database.
! grep -qaF "${tok1#node1:}" "$api_db" "$api_db-wal" 2>/dev/null ||
    fail "the token is stored in clear"
set +e
out=$(tctl api node enrol node1 2>&1); rc=$?
set -e
[ $rc -eq 1 ] && grep -q "already enrolled" <<<"$out" || fail "enrol twice: exit $rc: $out"
call POST /v1/nodes/node5/enrolment
expect 201 '.name == "node5" and .enrolled and (.token | startswith("node5:"))'
expect_schema api-node-enrolment
as "$fleet" POST /v1/nodes/-bad/enrolment
refused 404 '.error.message | test("not a node name")'
as "$fleet" POST '/v1/nodes/node1/enrolment?rotate=maybe'
refused 400 '.error.message | test("rotate")'

# ---- the node registers and heartbeats with its token -----------------------------
chmod 0604 "$tmpdir/node1.token"
set +e
out=$(timeout 10 "$THUNDERD" --cache "$tmpdir/bad" --socket none --pool none \
      --listen none --control 127.0.0.1:0 --token-file "$token_file" \
      --api "$api_url" --node-name node1 --node-token-file "$tmpdir/node1.token" 2>&1)
rc=$?
set -e
[ $rc -eq 1 ] && grep -qF "token file $tmpdir/node1.token: mode 0604" <<<"$out" ||
    fail "a token file readable by others: exit $rc: $out"
chmod 0600 "$tmpdir/node1.token"
start_api_node 1 --node-token-file "$tmpdir/node1.token"
wait_nodes_ready 1
grep -q "registered with .* as node node1" "${node_log[1]}" ||
    fail "node1 did not register: $(cat "${node_log[1]}")"
call GET /v1/nodes/node1
beat=$(jq -r .last_heartbeat_at "$tmpdir/body")
for (( i = 0; i < 30; ++i )); do
    call GET /v1/nodes/node1
    [ "$(jq -r .last_heartbeat_at "$tmpdir/body")" != "$beat" ] && break
    sleep 0.1
done
[ "$(jq -r .last_heartbeat_at "$tmpdir/body")" != "$beat" ] ||
    fail "node1's heartbeats do not arrive: $(cat "${node_log[1]}")"
as "$tok1" POST /v1/nodes/node1/heartbeat
expect 200 '.name == "node1"'

# ---- refusals ---------------------------------------------------------------------
as "$fleet" POST /v1/nodes/node1/heartbeat
refused 403 '.error.message | test("node .node1. is enrolled.*not the fleet or operator token")'
as "$fleet" POST /v1/nodes "$(node_body node1 1)"
refused 403 '.error.message | test("registration of node .node1.")'
as "$tok1" POST /v1/nodes "$(node_body node2 2)"
refused 403 '.error.message | test("enrolment token of node .node1.")'
as "$tok1" POST /v1/nodes/node2/heartbeat
refused 403 '.error.message | test("enrolment token of node .node1.")'
as "node1:$(printf '%064d' 0)" POST /v1/nodes/node1/heartbeat
refused 401 '.error.message | test("wrong bearer token")'
as "not-a-token-of-anyone" POST /v1/nodes/node2/heartbeat
refused 401 '.error.message | startswith("heartbeat of node '"'node2'"': wrong bearer token")'
# Enrolment is the operator's: the node's token cannot enrol or revoke.
as "$tok1" POST /v1/nodes/node1/enrolment
refused 401 true
as "$tok1" DELETE /v1/nodes/node1/enrolment
refused 401 true

# ---- rotate -----------------------------------------------------------------------
tctl api node enrol node1 --rotate --out "$tmpdir/node1.token" 2>"$tmpdir/out" ||
    fail "api node enrol --rotate: $(cat "$tmpdir/out")"
tok1b=$(cat "$tmpdir/node1.token")
[ "$tok1b" != "$tok1" ] || fail "rotate kept the token"
as "$tok1" POST /v1/nodes/node1/heartbeat
refused 401 '.error.message | test("rotated or revoked")'
# The running node, still on the old token, is refused.
log_within 5 "${node_log[1]}" "heartbeat: POST .* HTTP 401 (.*heartbeat of node 'node1': wrong bearer token" ||
    fail "node1's heartbeats on the old token are not refused: $(cat "${node_log[1]}")"
thunderd_pid=${node_pid[1]} stop_thunderd
start_api_node 1 --node-token-file "$tmpdir/node1.token"
log_within 5 "${node_log[1]}" "registered with .* as node node1 (known)" ||
    fail "node1 with the new token: $(cat "${node_log[1]}")"
as "$tok1b" POST /v1/nodes/node1/heartbeat
expect 200

# ---- revoke -----------------------------------------------------------------------
out=$(tctl api node revoke node1) || fail "api node revoke: $out"
as "$tok1b" POST /v1/nodes/node1/heartbeat
refused 401 '.error.message | test("revoked")'
set +e
out=$(tctl api node revoke node1 2>&1); rc=$?
set -e
[ $rc -eq 1 ] && grep -q "404.*not enrolled" <<<"$out" || fail "revoke twice: exit $rc: $out"
# A name longer than a node name is refused, not cut to another node's.
set +e
out=$(tctl api node revoke "$(printf 'n%.0s' {1..65})" 2>&1); rc=$?
set -e
[ $rc -eq 2 ] && grep -q "longer than 64" <<<"$out" ||
    fail "revoke of a 65-character name: exit $rc: $out"

# ---- the fleet token, for names never enrolled ------------------------------------
as "$fleet" POST /v1/nodes "$(node_body node3 3)"
expect 201
stop_api
start_api --node-timeout 5 --require-enrolment
as "$fleet" POST /v1/nodes/node3/heartbeat
refused 403 '.error.message | test("requires enrolment")'
as "$fleet" POST /v1/nodes "$(node_body node4 4)"
refused 403 '.error.message | test("requires enrolment")'
tok3=$(tctl api node enrol node3)
as "$tok3" POST /v1/nodes/node3/heartbeat
expect 200
echo "ok"
