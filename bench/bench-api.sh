#!/usr/bin/env bash
# thunder — thunder-api's throughput and latency (issue 5's performance
# targets), with baselines measured in the same run:
#   1. POST /v1/clusters of 1,000 VMs over 1,000 registered nodes (place,
#      plan the tree, persist all of it durably, answer 202), median of
#      BENCH_RUNS; baseline: the same POST of a 1-VM cluster.  Target
#      < 100 ms.
#   2. GET /v1/clusters/{id} per second with wrk (BENCH_SECONDS, 2 threads,
#      BENCH_CONNECTIONS connections) for a 10-VM and a 1,000-VM cluster;
#      baseline: GET /healthz (one SQLite read, a tiny body) in the same
#      run.  Target ≥ 2,000/s.
#
# The 1,000 nodes are registrations (POST /v1/nodes, as thunderd --api
# makes them) that all name one real thunderd node (--pool none; each by
# its own loopback address 127.1.X.Y, as the API refuses two ready nodes
# of one NBD address): the
# attaches the API pushes land there for real, and its VM creates are
# refused (no pool), so the clusters end "failed" without booting VMs —
# this measures the API, not QEMU.
#
#   bench/bench-api.sh            from the top of the source tree, as root
# Environment: THUNDERD, THUNDER_API (default ./build/...), BENCH_RUNS (5),
# BENCH_SECONDS (10), BENCH_CONNECTIONS (16), BENCH_NODES (1000).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
THUNDERD=${THUNDERD:-$top/build/src/daemon/thunderd}
THUNDERCTL=${THUNDERCTL:-$top/build/src/cli/thunderctl}
THUNDER_API=${THUNDER_API:-$top/build/src/api/thunder-api}
MAKE_IMAGE=${MAKE_IMAGE:-$top/build/tests/tools/make-image}
runs=${BENCH_RUNS:-5}
secs=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-16}
nodes=${BENCH_NODES:-1000}
for p in "$THUNDERD" "$THUNDERCTL" "$THUNDER_API" "$MAKE_IMAGE"; do
    [ -x "$p" ] || { echo "bench-api: not built: $p" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "bench-api: wrk is not installed (apt-get install wrk)" >&2; exit 2; }

work=$(mktemp -d /tmp/thunder-bench-api.XXXXXX)
pids=()
cleanup () { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
token=$work/token
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token"
chmod 600 "$token"
auth="Authorization: Bearer $(cat "$token")"

free_port () { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start () {   # start LOG PROGRAM ARGS...
    local log=$1
    shift
    "$@" 2>"$log" &
    pids+=($!)
    for _ in $(seq 100); do grep -qs ready "$log" && return 0; sleep 0.1; done
    echo "bench-api: $1 did not start: $(tail -n 3 "$log")" >&2
    exit 1
}

mkdir "$work/images"
"$MAKE_IMAGE" "$work/images/img.raw" $((64 << 20))
"$THUNDERCTL" image add img "$work/images/img.raw" >/dev/null
oport=$(free_port)
start "$work/origin.log" "$THUNDERD" --origin --images "$work/images" --socket none \
    --listen "127.0.0.1:$oport"
nport=$(free_port) cport=$(free_port) aport=$(free_port)
start "$work/node.log" "$THUNDERD" --cache "$work/cache" --socket none --pool none \
    --listen "0.0.0.0:$nport" --control "127.0.0.1:$cport" --token-file "$token"
start "$work/api.log" "$THUNDER_API" --listen "127.0.0.1:$aport" --db "$work/api.db" \
    --token-file "$token" --node-timeout 86400 --push-retries 0
api=http://127.0.0.1:$aport

echo "bench-api: registering $nodes nodes" >&2
/usr/bin/python3 - "$api" "$(cat "$token")" "$nodes" "$nport" "$cport" <<'EOF'
import http.client, json, sys
api, token, n, nport, cport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
host, port = api[len("http://"):].split(":")
c = http.client.HTTPConnection(host, int(port))
for i in range(n):
    # One loopback address each: the API refuses two ready nodes of one
    # NBD address; thunderd listens on 0.0.0.0, so all reach it.
    body = json.dumps({"name": "n%05d" % i,
                       "nbd_uri": "nbd://127.1.%d.%d:%s" % (i // 250, i % 250 + 1, nport),
                       "control_url": "http://127.0.0.1:" + cport,
                       "capacity": {"vcpus": 64, "memory_mib": 262144, "disk_gib": 4096},
                       "labels": {"rack": "r%03d" % (i // 40), "zone": "z%d" % (i // 400)}})
    c.request("POST", "/v1/nodes", body, {"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status not in (200, 201):
        sys.exit("register n%05d: %d" % (i, r.status))
EOF
curl -sf -o /dev/null -H "$auth" -H 'Content-Type: application/json' \
    --data "{\"name\":\"img\",\"origin\":\"nbd://127.0.0.1:$oport\"}" "$api/v1/images"

# post NAME COUNT  — prints the POST's time in ms; the id goes to $work/id.
post () {
    local out
    out=$(curl -s -o "$work/body" -w '%{http_code} %{time_total}' -H "$auth" \
        -H 'Content-Type: application/json' \
        --data "{\"name\":\"$1\",\"image\":\"img\",\"count\":$2,\"vcpus\":1,\"memory_mib\":128}" \
        "$api/v1/clusters")
    [ "${out%% *}" = 202 ] || { echo "bench-api: POST $1: $out $(cat "$work/body")" >&2; exit 1; }
    jq -r .id "$work/body" > "$work/id"
    awk -v t="${out#* }" 'BEGIN { printf "%.2f\n", t * 1000 }'
}
median () { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "bench-api: POST /v1/clusters, $runs runs each" >&2
small=$(for r in $(seq "$runs"); do post "one$r" 1; done | median)
big=$(for r in $(seq "$runs"); do post "big$r" "$nodes"; done | median)
big_id=$(cat "$work/id")
post ten 10 >/dev/null
ten_id=$(cat "$work/id")

rate () {   # rate PATH — requests/s by wrk
    wrk -t2 -c"$conns" -d"${secs}s" -H "$auth" "$api$1" 2>&1 |
        awk '/^Requests\/sec:/ { print int($2) } /Non-2xx/ { bad = 1 } END { if (bad) print "non-2xx" > "/dev/stderr" }'
}
echo "bench-api: wrk, ${secs} s each" >&2
r_health=$(rate /healthz)
r_ten=$(rate "/v1/clusters/$ten_id")
r_big=$(rate "/v1/clusters/$big_id")
size_ten=$(curl -s -H "$auth" "$api/v1/clusters/$ten_id" | wc -c)
size_big=$(curl -s -H "$auth" "$api/v1/clusters/$big_id" | wc -c)

printf '\n| row | baseline | thunder-api | ratio | target |\n|---|---|---|---|---|\n'
awk -v s="$small" -v b="$big" -v n="$nodes" 'BEGIN {
  printf "| POST /v1/clusters, %d VMs over %d nodes (ms, median) | 1 VM: %.1f ms | %.1f ms | %.1f× the 1-VM POST | < 100 ms: %s |\n", n, n, s, b, b / s, (b < 100 ? "met" : "NOT met") }'
awk -v h="$r_health" -v t="$r_ten" -v sz="$size_ten" 'BEGIN {
  printf "| GET /v1/clusters/{id}, 10 VMs (%d B), req/s | /healthz: %d/s | %d/s | %.2f | ≥ 2,000/s: %s |\n", sz, h, t, t / h, (t >= 2000 ? "met" : "NOT met") }'
awk -v h="$r_health" -v t="$r_big" -v sz="$size_big" -v n="$nodes" 'BEGIN {
  printf "| GET /v1/clusters/{id}, %d VMs (%d B), req/s | /healthz: %d/s | %d/s | %.2f | – |\n", n, sz, h, t, t / h }'
echo
echo "wrk: 2 threads, $conns connections, $secs s; $(nproc) CPUs; the API, the node and wrk share them"
