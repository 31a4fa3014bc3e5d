#!/usr/bin/env bash
# thunder — the node cache (issue 14): two ratios measured in one run.
#
# Usage: bench/bench-cache.sh            (root: network namespaces)
#
#   1. update   on the emulated cluster (bench/netem/cluster.sh): an origin
#               and BENCH_NODES nodes in a binary relay tree (node i's
#               parent is node i/2, the root's the origin; each upstream
#               list is the node's ancestors then the origin, as thunder-api
#               pushes them).  Every node boots v1 of an image at the same
#               moment (bench/replay of a boot trace against its Unix
#               socket), then v2, with BENCH_CHANGED_PCT % of the blocks of
#               the boot's working set changed, is published, attached and
#               booted on every node at once; then the same nodes, their
#               caches emptied, boot v2 cold.  Ratio: origin bytes for v2
#               after v1 / origin bytes for the cold boot of v2 (the
#               baseline, same run).  Target <= 0.1 at 5 %.  The boot times
#               (slowest node) are printed too.
#   2. churn    one node (loopback: hits do not depend on the links), cache
#               capped at 3 working sets, reads a hot image, then
#               BENCH_COLD_IMAGES colder images, each followed by the hot
#               image again: the hot reads' hit ratio after the first,
#               against the same with a cap of 1 working set (where each
#               cold image pushes the hot one out).
#
# Builds nothing: binaries from the environment (defaults under ./build).
# Part 2 uses the integration tests' helpers (tests/integration/
# functions.sh, node-functions.sh).  Everything in temporary directories
# removed at the end; the cluster's namespaces (prefix thc) are removed too.
#
# Environment:
#   BENCH_NODES        nodes of part 1 (default 16)
#   BENCH_TRACE        the boot trace (default ../shared/traces/trace-a.csv)
#   BENCH_IMAGE_SIZE   the image's size (default 2G: the trace's extent)
#   BENCH_CHANGED_PCT  % of the working set's blocks v2 changes (default 5)
#   BENCH_RATE         node links, Mbit/s (default 200)
#   BENCH_ORIGIN_RATE  the origin's link, Mbit/s (default 200)
#   BENCH_WS_MB        image (working set) size in MiB, part 2 (default 8)
#   BENCH_COLD_IMAGES  colder images cycled through in part 2 (default 6)
#
# Exit status: 0 when the benchmark ran, whether or not the targets hold.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export THUNDERD=${THUNDERD:-$top/build/src/daemon/thunderd}
export THUNDERCTL=${THUNDERCTL:-$top/build/src/cli/thunderctl}
export THUNDER_API=${THUNDER_API:-$top/build/src/api/thunder-api}
export TEST_TOOLS_DIR=${TEST_TOOLS_DIR:-$top/build/tests/tools}
export TOP_SRCDIR=$top
REPLAY=${REPLAY:-$top/build/bench/replay}
source "$top/tests/integration/functions.sh"
source "$top/tests/integration/node-functions.sh"

nodes=${BENCH_NODES:-16}
trace=${BENCH_TRACE:-$top/../shared/traces/trace-a.csv}
image_size=${BENCH_IMAGE_SIZE:-2G}
pct=${BENCH_CHANGED_PCT:-5}
rate=${BENCH_RATE:-200}
orate=${BENCH_ORIGIN_RATE:-200}
ws_mb=${BENCH_WS_MB:-8}
ncold=${BENCH_COLD_IMAGES:-6}
MiB=1048576
BS=65536
images=$tmpdir/images
mkdir "$images"
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
[ -x "$REPLAY" ] || fail "not built: $REPLAY"
[ -r "$trace" ] || fail "cannot read the trace $trace (BENCH_TRACE)"

# ---- 1. update, on the emulated cluster ------------------------------------------
cluster=$top/bench/netem/cluster.sh
export THN_PREFIX=thc THN_STATE_DIR=$tmpdir/cluster
cleanup_fn "$cluster" down
"$cluster" up "$nodes" --rate "$rate" --origin-rate "$orate" >/dev/null ||
    fail "cluster.sh up $nodes failed"
addr() { "$cluster" addr "$1"; }
auth="Authorization: Bearer $(cat "$token_file")"
nstats() {   # nstats NODE NAME: NAME's stats from NODE's control endpoint
    "$cluster" exec "$1" curl -sf --max-time 10 -H "$auth" \
        "http://$(addr "$1"):10810/v1/images/$2" || fail "stats of $2 on $1"
}
osent() { nstats origin os | counter .counters.served_remote_bytes; }
declare -a npids=()
quiet_kill() { kill "$@" 2>/dev/null || true; }
cpu_ticks() { awk 'NR == 1 { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
cpu_busy() {   # cpu_busy "TOTAL IDLE" (from cpu_ticks): % busy since
    local t0 i0 t1 i1
    read -r t0 i0 <<<"$1"
    read -r t1 i1 < <(cpu_ticks)
    awk -v t="$((t1 - t0))" -v i="$((i1 - i0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * (1 - i / t) : 0) }'
}
wait_ready() {   # wait_ready LOG PID
    local i
    for (( i = 0; i < 200; i++ )); do
        kill -0 "$2" 2>/dev/null || fail "thunderd did not start: $(tail -n 3 "$1")"
        grep -qsw ready "$1" && return 0
        sleep 0.05
    done
    fail "thunderd not ready in 10 s: $(tail -n 3 "$1")"
}
start_nodes() {   # fresh caches
    local i
    npids=()
    for (( i = 1; i <= nodes; i++ )); do
        rm -rf "$tmpdir/ncache$i"
        "$cluster" exec "$i" "$THUNDERD" --cache "$tmpdir/ncache$i" \
            --socket "$tmpdir/n$i.sock" --socket-group root \
            --listen "$(addr "$i"):10809" --control "$(addr "$i"):10810" \
            --token-file "$token_file" --pool none --readahead 0 \
            --fetch-timeout 30000 --tcp-congestion cubic \
            2> "$tmpdir/node$i.log" < /dev/null &
        npids+=($!)
        cleanup_fn quiet_kill "$!"
    done
    for (( i = 1; i <= nodes; i++ )); do wait_ready "$tmpdir/node$i.log" "${npids[i - 1]}"; done
}
stop_nodes() {
    local p
    for p in "${npids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${npids[@]}"; do wait "$p" 2>/dev/null || true; done
}
attach_tree() {   # attach_tree VERSION: level by level, parents first
    local v=$1 i j lo=1 hi=1 body fails
    while (( lo <= nodes )); do
        local -a pids=()
        for (( i = lo; i <= hi && i <= nodes; i++ )); do
            body="{\"version\":\"$v\",\"upstreams\":["
            for (( j = i / 2; j >= 1; j /= 2 )); do
                body+="\"nbd://$(addr "$j"):10809/os\","
            done
            body+="\"nbd://$(addr origin):10809/os\"]}"
            "$cluster" exec "$i" curl -sf --max-time 60 -X PUT -H "$auth" \
                -H 'Content-Type: application/json' --data "$body" \
                "http://$(addr "$i"):10810/v1/images/os" > "$tmpdir/attach$i.out" 2>&1 &
            pids+=($!)
        done
        fails=0
        for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
        (( fails == 0 )) || fail "attach failed on $fails nodes: $(head -c 300 "$tmpdir"/attach*.out)"
        lo=$(( hi + 1 )); hi=$(( 2 * hi + 1 ))
    done
}
boot_all() {   # boot_all: every node replays the trace at once; prints the slowest, s
    local start_at i fails=0
    start_at=$(awk -v t="$EPOCHREALTIME" -v n="$nodes" 'BEGIN { printf "%.3f", t + 1 + n * 0.02 }')
    local -a pids=()
    for (( i = 1; i <= nodes; i++ )); do
        "$REPLAY" --json --fast --timeout 120 --start-at "$start_at" \
            --verify "$images/os.raw" "$trace" "nbd+unix:///os?socket=$tmpdir/n$i.sock" \
            > "$tmpdir/r$i.json" 2> "$tmpdir/r$i.err" &
        pids+=($!)
    done
    local c0
    c0=$(cpu_ticks)
    for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
    (( fails == 0 )) || fail "$fails boots failed: $(cat "$tmpdir"/r*.err | grep -m1 .)"
    cpu_notes+=" $(cpu_busy "$c0")%"
    for (( i = 1; i <= nodes; i++ )); do
        jq -r --argjson s "$start_at" '.end_unix - $s' "$tmpdir/r$i.json"
    done | sort -g | tail -n 1 | awk '{ printf "%.2f", $1 }'
}
cpu_notes=""

"$REPLAY" --make-image "$images/os.raw" --size "$image_size" "$trace" >/dev/null ||
    fail "replay --make-image failed"
image_add os "$images/os.raw" >/dev/null
"$cluster" exec origin "$THUNDERD" --origin --images "$images" \
    --socket "$tmpdir/origin.sock" --listen "$(addr origin):10809" \
    --control "$(addr origin):10810" --token-file "$token_file" \
    --tcp-congestion cubic 2> "$tmpdir/origin.log" < /dev/null &
opid=$!
cleanup_fn quiet_kill "$opid"
wait_ready "$tmpdir/origin.log" "$opid"
v1=$(nstats origin os | jq -r .version)

start_nodes
attach_tree "$v1"
s0=$(osent)
boot_all > "$tmpdir/t"; t_v1=$(cat "$tmpdir/t")
o_v1=$(( $(osent) - s0 ))

# v2: pct % of the working set's blocks (the blocks the trace reads) get
# new bytes, chosen at random; the rest of the image is unchanged.
awk -F, -v bs=$BS 'NR > 1 { for (b = int($2 / bs); b <= int(($2 + $3 - 1) / bs); b++) print b }' \
    "$trace" | sort -nu > "$tmpdir/ws-blocks"
wsblocks=$(wc -l < "$tmpdir/ws-blocks")
changed=$(( wsblocks * pct / 100 ))
cp "$images/os.raw" "$images/os.new"
for b in $(shuf -n "$changed" "$tmpdir/ws-blocks"); do
    head -c $BS /dev/urandom | dd of="$images/os.new" bs=$BS seek="$b" conv=notrunc status=none
done
mv "$images/os.new" "$images/os.raw"
image_add os "$images/os.raw" >/dev/null
kill -HUP "$opid"
for (( i = 0; i < 100; i++ )); do
    v2=$(nstats origin os | jq -r .version)
    [ "$v2" != "$v1" ] && break
    sleep 0.1
done
[ "$v2" != "$v1" ] || fail "the origin does not serve v2 after SIGHUP"

attach_tree "$v2"
s0=$(osent)
boot_all > "$tmpdir/t"; t_upd=$(cat "$tmpdir/t")
o_upd=$(( $(osent) - s0 ))
reused=0
for (( i = 1; i <= nodes; i++ )); do
    reused=$(( reused + $(nstats "$i" os | jq .cache.reused_blocks) ))
done
stop_nodes

start_nodes
attach_tree "$v2"
s0=$(osent)
boot_all > "$tmpdir/t"; t_cold=$(cat "$tmpdir/t")
o_cold=$(( $(osent) - s0 ))
stop_nodes
kill -TERM "$opid"; wait "$opid" 2>/dev/null || true
"$cluster" down >/dev/null 2>&1 || true

# ---- 2. churn -----------------------------------------------------------------
rm -f "$images"/os.*
read_via() { nbdcopy "nbd+unix:///$2?socket=${node_sock[$1]}" null: ||
                 fail "read of $2 through node $1"; }
for k in hot $(seq 1 "$ncold"); do
    head -c $((ws_mb * MiB)) /dev/urandom > "$images/w$k.raw"
    image_add "w$k" "$images/w$k.raw" >/dev/null
done
start_origin "$images"
meta=$(( (ncold + 1) * 64 * 1024 ))   # manifests and bitmaps, generously
hot_ratio() {   # NODE CAP → hit ratio of the hot reads after the first
    local n=$1 k h0 m0
    start_node "$n" --cache-max "$2" --readahead 0
    for k in hot $(seq 1 "$ncold"); do attach "$n" "w$k" "$origin_nbd"; done
    read_via "$n" whot
    h0=$(stats "$n" whot | counter .counters.hits)
    m0=$(stats "$n" whot | counter .counters.misses)
    for k in $(seq 1 "$ncold"); do
        read_via "$n" "w$k"
        sleep 0.3   # let the reclaimer catch up, as time between boots would
        read_via "$n" whot
    done
    local h m
    h=$(( $(stats "$n" whot | counter .counters.hits) - h0 ))
    m=$(( $(stats "$n" whot | counter .counters.misses) - m0 ))
    awk -v h="$h" -v m="$m" 'BEGIN { printf "%.3f", (h + m > 0 ? h / (h + m) : 0) }'
    stop_thunderd
}
r3=$(hot_ratio 100 $(( 3 * ws_mb * MiB + meta )))
r1=$(hot_ratio 101 $(( ws_mb * MiB + meta )))

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > 0 ? a / b : 0) }'; }
echo
printf '%-64s %14s %14s %8s %s\n' "row" "candidate" "baseline" "ratio" "target"
printf '%-64s %14s %14s %8.3f %s\n' \
    "update: origin bytes, boot v2 after v1 / cold boot of v2 (N=$nodes)" \
    "$o_upd" "$o_cold" "$(ratio "$o_upd" "$o_cold")" "<= 0.1"
printf '%-64s %14s %14s %8.3f %s\n' \
    "update: slowest boot, s, v2 after v1 / cold v2" \
    "$t_upd" "$t_cold" "$(ratio "$t_upd" "$t_cold")" "-"
printf '%-64s %14s %14s %8.3f %s\n' \
    "churn: hot hit ratio, cap 3 WS / cap 1 WS ($ncold cold images)" \
    "$r3" "$r1" "$(awk -v a="$r3" -v b="$r1" 'BEGIN { print (b > 0 ? a / b : 0) }')" \
    "hot ratio ~1.0"
echo "update: $changed of the working set's $wsblocks blocks changed ($(( changed * BS )) bytes); image $image_size, trace $(basename "$trace"); links $rate Mbit/s, origin $orate Mbit/s; binary tree of $nodes nodes"
echo "update: v1 boot cost the origin $o_v1 bytes, slowest boot $t_v1 s; the v2 boots reused $reused blocks (all nodes)"
echo "update: host CPU busy during the boots (v1, v2 after v1, cold v2; from the replays' spawn, 2 cores):$cpu_notes; load average $(cut -d' ' -f1-3 /proc/loadavg)"
exit 0
