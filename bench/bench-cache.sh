#!/usr/bin/env bash
# thunder — the node cache (issue 14): two ratios measured in one run, on
# loopback (no network emulation: the ratios are of bytes and hits, which
# the link speed does not change).
#
# Usage: bench/bench-cache.sh
#
#   1. update   an origin and a chain of BENCH_NODES nodes (origin → n1 →
#               … → nN); every node reads v1 of an image (its working set:
#               the whole image), then v2, with BENCH_CHANGED_PCT % of its
#               blocks changed, is published and every node reads v2.
#               Origin bytes for v2 after v1 / origin bytes for a cold read
#               of v2 by a fresh chain of as many nodes.  Target <= 0.1 at
#               5 % changed.
#   2. churn    one node, cache capped at 3 working sets, reads a hot
#               image, then BENCH_COLD_IMAGES colder images, each followed
#               by the hot image again: the hot reads' hit ratio after the
#               first, against the same with a cap of 1 working set (where
#               each cold image pushes the hot one out).
#
# Builds nothing: binaries from the environment (defaults under ./build).
# Uses the integration tests' helpers (tests/integration/functions.sh,
# node-functions.sh): servers on 127.0.0.1 ports chosen by the kernel,
# everything in a temporary directory removed at the end.
#
# Environment:
#   BENCH_NODES        nodes in each chain of part 1 (default 16)
#   BENCH_IMAGE_MB     image size in MiB, part 1 (default 32)
#   BENCH_CHANGED_PCT  % of the blocks v2 changes (default 5)
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
source "$top/tests/integration/functions.sh"
source "$top/tests/integration/node-functions.sh"

nodes=${BENCH_NODES:-16}
image_mb=${BENCH_IMAGE_MB:-32}
pct=${BENCH_CHANGED_PCT:-5}
ws_mb=${BENCH_WS_MB:-8}
ncold=${BENCH_COLD_IMAGES:-6}
MiB=1048576
images=$tmpdir/images
mkdir "$images"
sent() { origin_stats "$1" | counter .counters.served_remote_bytes; }
read_via() { nbdcopy "nbd+unix:///$2?socket=${node_sock[$1]}" null: ||
                 fail "read of $2 through node $1"; }

# chain FIRST LAST NAME: nodes FIRST..LAST, each the child of the one
# before (FIRST of the origin), attach NAME, read it through each in turn.
chain() {
    local a=$1 b=$2 name=$3 n
    for (( n = a; n <= b; n++ )); do
        [ -n "${node_pid[$n]:-}" ] || start_node "$n"
        local -a ups=()
        for (( u = n - 1; u >= a; u-- )); do ups+=("${node_nbd[$u]}"); done
        attach "$n" "$name" "${ups[@]}" "$origin_nbd"
    done
    for (( n = a; n <= b; n++ )); do read_via "$n" "$name"; done
}

# ---- 1. update ---------------------------------------------------------------
head -c $((image_mb * MiB)) /dev/urandom > "$images/os.raw"
image_add os "$images/os.raw" >/dev/null
start_origin "$images"
chain 1 "$nodes" os
v1=$(origin_stats os | jq -r .version)

nblocks=$(( image_mb * MiB / 65536 ))
new_version "$images/os.raw" "$pct"
changed=$changed_blocks
image_add os "$images/os.raw" >/dev/null
rescan_origin os "$v1"
s0=$(sent os)
chain 1 "$nodes" os
upd=$(( $(sent os) - s0 ))
s0=$(sent os)
chain $((nodes + 1)) $((2 * nodes)) os
cold=$(( $(sent os) - s0 ))
for (( n = 1; n <= 2 * nodes; n++ )); do
    thunderd_pid=${node_pid[$n]}
    stop_thunderd
done

# ---- 2. churn -----------------------------------------------------------------
for k in hot $(seq 1 "$ncold"); do
    head -c $((ws_mb * MiB)) /dev/urandom > "$images/w$k.raw"
    image_add "w$k" "$images/w$k.raw" >/dev/null
done
rescan_origin "w$ncold"
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

echo
printf '%-58s %14s %14s %8s %s\n' "row" "candidate" "baseline" "ratio" "target"
printf '%-58s %14s %14s %8.3f %s\n' \
    "update: origin bytes, v2 after v1 / cold v2 (N=$nodes, $pct% changed)" \
    "$upd" "$cold" "$(awk -v a="$upd" -v b="$cold" 'BEGIN { print (b > 0 ? a / b : 0) }')" "<= 0.1"
printf '%-58s %14s %14s %8.3f %s\n' \
    "churn: hot hit ratio, cap 3 WS / cap 1 WS ($ncold cold images)" \
    "$r3" "$r1" "$(awk -v a="$r3" -v b="$r1" 'BEGIN { print (b > 0 ? a / b : 0) }')" \
    "hot ratio ~1.0"
echo "changed blocks: $changed of $nblocks ($(( changed * 65536 )) bytes); image $image_mb MiB, working set = the image"
exit 0
