# thunder integration tests — thunder-api and the thunderd nodes that
# register with it.  Sourced after functions.sh and node-functions.sh.
#
#   start_api [ARGS...]            → api_url, api_port, api_pid, api_db,
#                                  api_log (a restart keeps the port)
#   stop_api / kill_api            SIGTERM (must exit 0) / SIGKILL
#   start_api_node N [ARGS...]     start_node N registered as "nodeN"
#   wait_nodes_ready K             until K nodes are ready (10 s)
#   call METHOD PATH [BODY [CURL-ARGS...]]
#                                  a request with the operator token; sets
#                                  $code, the reply is in $tmpdir/body
#   expect CODE [JQ-FILTER]        the last reply had CODE (and satisfies
#                                  the filter); an error status must come
#                                  with {"error":{"code","message"}}
#   expect_schema NAME             the last reply validates against
#                                  schemas/NAME.schema.json
#   wait_cluster ID STATE SECONDS  until the cluster is in STATE

: "${THUNDER_API:=$TOP_BUILDDIR/src/api/thunder-api}"
[ -x "$THUNDER_API" ] || fail "thunder-api is not built: $THUNDER_API"

api_db=$tmpdir/api.db
schema_check=$TOP_SRCDIR/tests/tools/check-response.py

# A restart keeps the port: the nodes know the API by its URL.
start_api ()
{
    local saved=$THUNDERD
    THUNDERD=$THUNDER_API
    start_thunderd --listen "127.0.0.1:${api_port:-@PORT@}" --db "$api_db" \
        --token-file "$token_file" "$@"
    THUNDERD=$saved
    api_port=${api_port:-$port}
    api_url=http://127.0.0.1:$api_port
    api_pid=$thunderd_pid
    api_log=$thunderd_log
}

stop_api ()
{
    thunderd_pid=$api_pid stop_thunderd
    [ "$thunderd_status" -eq 0 ] ||
        fail "thunder-api exited $thunderd_status after SIGTERM"
}

kill_api ()
{
    kill -KILL "$api_pid"
    wait "$api_pid" 2>/dev/null || true
    _thunderd_reaped[$api_pid]=1
}

# start_api_node N [ARGS...]  — node N on its own ports, registered with
# the API as "nodeN" (capacity given, so tests do not depend on the host).
start_api_node ()
{
    local n=$1 nbd ctl
    shift
    nbd=$(free_port)
    ctl=$(free_port)
    start_node "$n" --listen "127.0.0.1:$nbd" --control "127.0.0.1:$ctl" \
        --api "$api_url" --node-name "node$n" --heartbeat-interval 500 \
        --capacity-vcpus 4 --capacity-memory-mib 4096 --capacity-disk-gib 100 \
        "$@"
}

call ()
{
    local method=$1 path=$2
    shift 2
    local -a data=()
    if [ $# -ge 1 ]; then
        data=(-H 'Content-Type: application/json' --data-binary "$1")
        shift
    fi
    code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' -X "$method" \
        -H "Authorization: Bearer $(cat "$token_file")" "${data[@]}" "$@" \
        "$api_url$path") || fail "curl $method $path failed"
}

expect ()
{
    [ "$code" = "$1" ] ||
        fail "expected HTTP $1, got $code: $(head -c 2000 "$tmpdir/body")"
    if [ "$code" -ge 400 ]; then
        jq -e '(.error.code | type == "string") and (.error.message | type == "string")' \
            "$tmpdir/body" >/dev/null ||
            fail "HTTP $code without a JSON error body: $(head -c 2000 "$tmpdir/body")"
        expect_schema api-error
    fi
    if [ $# -ge 2 ]; then
        jq -e "$2" "$tmpdir/body" >/dev/null ||
            fail "reply does not satisfy $2: $(head -c 2000 "$tmpdir/body")"
    fi
}

expect_schema ()
{
    [ -f "$schema_check" ] || return 0
    /usr/bin/python3 "$schema_check" "$1" "$tmpdir/body" >"$tmpdir/schema.out" 2>&1 ||
        fail "reply does not validate against schemas/$1.schema.json: $(cat "$tmpdir/schema.out"): $(head -c 2000 "$tmpdir/body")"
}

wait_nodes_ready ()
{
    local want=$1 i
    for (( i = 0; i < 100; ++i )); do
        call GET /v1/nodes
        [ "$code" = 200 ] &&
            [ "$(jq '[.nodes[] | select(.state == "ready")] | length' "$tmpdir/body")" -ge "$want" ] &&
            return 0
        sleep 0.1
    done
    fail "fewer than $want nodes ready after 10 s: $(cat "$tmpdir/body")"
}

wait_cluster ()
{
    local id=$1 state=$2 secs=$3 i
    for (( i = 0; i < secs * 5; ++i )); do
        call GET "/v1/clusters/$id"
        [ "$code" = 200 ] || fail "GET /v1/clusters/$id: $code $(cat "$tmpdir/body")"
        [ "$(jq -r .state "$tmpdir/body")" = "$state" ] && return 0
        sleep 0.2
    done
    fail "cluster $id not $state after $secs s: $(jq -c '{state, counts, error, vms: [.vms[] | {name, node, state, reason}]}' "$tmpdir/body")"
}
