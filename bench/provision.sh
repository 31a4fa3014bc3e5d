#!/usr/bin/env bash
# thunder — the provisioning benchmark (issue 6): N nodes boot one image
# over an emulated cluster (bench/netem/cluster.sh), four strategies back to
# back in one run, same image and trace, against the physical limit T_lb.
#
#   bench/provision.sh [--smoke]
#
#   a  thunder relay tree: upstream lists from the real planner (bench/plan,
#      src/api/tree.c), attached level by level
#   b  every node's only upstream is the origin (shared-storage baseline)
#   c  full copy: every node copies the whole image from the origin's NBD
#      export (nbdcopy --no-extents, inside its namespace), then replays the
#      trace against its local copy (nbdkit file, Unix socket).  When the
#      copy would take longer than BENCH_COPY_MAX_S, every node copies the
#      first P bytes only (P = BENCH_COPY_SAMPLE_S at its fair share of the
#      link) and the copy time is extrapolated to the image size (marked)
#   d  thunder tree as in (a), plus a boot-profile prefetcher on every node:
#      a second replay of the trace's reads, --fast with
#      BENCH_PREFETCH_DEPTH in flight, started with the guest, so the
#      node fetches the boot's blocks ahead of the guest
#
# For each N: cluster.sh up N, the emulation check (printed, and in the
# table), the origin thunderd; per strategy, fresh node caches (the
# manifest pre-seeded, so attaching costs no link time), all replays start
# together (--start-at).  The clock of a node runs from that start until
# its last read completes.  Host CPU is sampled every second during each
# run (from that start on); >= 80% marks the row.
#
# Output: the table on stdout and in $BENCH_RESULTS/provision-TAG.md, the
# plot in provision-TAG.png (gnuplot), the raw rows in provision-TAG.tsv.
# TAG is BENCH_TAG (default: "latest", "smoke" in smoke mode).
#
# Settings (environment): see bench/README.md ("provision.sh").
#
# Exit status: 0 the benchmark ran (targets met or not); 1 an error (a
# server did not start, a replay failed or returned wrong data).
set -euo pipefail

prog=provision.sh
top=$(cd "$(dirname "$0")/.." && pwd)
cluster=$top/bench/netem/cluster.sh
smoke=${BENCH_SMOKE:-0}
[[ ${1:-} == --smoke ]] && { smoke=1; shift; }
(($# == 0)) || { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }

die() { echo "$prog: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

build=${BENCH_BUILD:-$top/build}
THUNDERD=${THUNDERD:-$build/src/daemon/thunderd}
THUNDERCTL=${THUNDERCTL:-$build/src/cli/thunderctl}
REPLAY=${REPLAY:-$build/bench/replay}
PLAN=${PLAN:-$build/bench/plan}
MODEL=${BENCH_MODEL:-$top/../shared/tools/provmodel.py}

if ((smoke)); then
    d_ns="4" d_trace="synthetic" d_rate=200 d_orate=200 d_check=1 d_tag=smoke
    d_results="" d_trace_ws=""
else
    # Scaled so that the links, not the two CPUs, set the pace at N = 64,
    # and the run stays under 15 minutes (docs/benchmarks.md, "Method").
    d_ns="1 4 16 64" d_trace=$top/../shared/traces/trace-a.csv d_rate=15
    d_orate=30 d_check=3 d_tag=latest d_results=$top/bench/results d_trace_ws=16M
fi
NS=${BENCH_NS:-$d_ns}
STRATS=${BENCH_STRATEGIES:-a b c d}
TRACE=${BENCH_TRACE:-$d_trace}
TRACE_WS=${BENCH_TRACE_WS-$d_trace_ws}
SYN_SIZE=${BENCH_SYN_SIZE:-32M}
SYN_WS=${BENCH_SYN_WS:-4M}
SYN_LOC=${BENCH_SYN_LOCALITY:-0.7}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-2G}
RATE=${BENCH_RATE:-$d_rate}
DOWN_RATE=${BENCH_DOWN_RATE:-$RATE}
ORATE=${BENCH_ORIGIN_RATE:-$d_orate}
PACE=${BENCH_PACE:-fast}
CHECK_S=${BENCH_CHECK_SECONDS:-$d_check}
NODE_ARGS=${BENCH_NODE_ARGS:---readahead 0 --fetch-timeout 30000 --tcp-congestion cubic}
# The origin too: BBR (this host's default) stalls application-limited
# replies for 80-100 ms (docs/benchmarks.md, finding 2).
ORIGIN_ARGS=${BENCH_ORIGIN_ARGS:---tcp-congestion cubic}
PF_DEPTH=${BENCH_PREFETCH_DEPTH:-16}
COPY_MAX_S=${BENCH_COPY_MAX_S:-60}
COPY_SAMPLE_S=${BENCH_COPY_SAMPLE_S:-20}
RESULTS=${BENCH_RESULTS-$d_results}
TAG=${BENCH_TAG:-$d_tag}
TMPBASE=${BENCH_TMPDIR:-/var/tmp}
KEEP=${BENCH_KEEP:-0}
((KEEP)) || KEEP=""
PLAN_ARGS=${BENCH_PLAN_ARGS:-}
# The manifest's block size (thunderctl image add --block-size); W and the
# planner count in it too.  32 KiB, not thunderctl's 64 KiB: a relay
# forwards a block once it holds all of it (verified), so a chain's last
# node trails the head by (depth - 1) x S/B; the links here are scaled
# down 30-60x from real ones, which inflates S/B by as much, and half the
# block size gives some of that back (docs/benchmarks.md, finding 9).
BLOCK=${BENCH_BLOCK_SIZE:-32768}
name=bootimg

for v in RATE DOWN_RATE ORATE; do
    [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_${v/ORATE/ORIGIN_RATE}='${!v}': want Mbit/s, a plain number"
done
for v in CHECK_S PF_DEPTH COPY_MAX_S COPY_SAMPLE_S; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v='${!v}': want a whole number"
done
[[ -z $TRACE_WS || $TRACE_WS =~ ^[0-9]+[KMG]?$ ]] ||
    die "BENCH_TRACE_WS='$TRACE_WS': want bytes, a whole number with an optional K, M or G suffix (powers of 1024), or empty"
[[ $PACE =~ ^(fast|think|think-gap)$ ]] || die "BENCH_PACE='$PACE': want fast, think or think-gap"
[[ $TAG =~ ^[A-Za-z0-9._-]{1,40}$ ]] || die "BENCH_TAG='$TAG': want 1-40 of [A-Za-z0-9._-]"
for n in $NS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] && ((n <= 250)) || die "BENCH_NS: '$n' is not a node count 1..250"
done
for s in $STRATS; do
    [[ $s =~ ^[abcd]$ ]] || die "BENCH_STRATEGIES: '$s' is not one of a b c d"
done
for b in "$THUNDERD" "$THUNDERCTL" "$REPLAY" "$PLAN"; do
    [[ -x $b ]] || die "not built: $b (set BENCH_BUILD or THUNDERD/THUNDERCTL/REPLAY/PLAN)"
done
for p in jq curl nbdcopy nbdkit ip tc awk; do
    command -v "$p" >/dev/null || die "$p not found"
done
[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"

tmp=$(mktemp -d "$TMPBASE/provision.XXXXXX")
export THN_PREFIX=${THN_PREFIX:-thp} THN_STATE_DIR=$tmp/cluster
declare -a bg_pids=()
cleanup() {
    local p
    for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$cluster" down >/dev/null 2>&1 || true
    if [[ -n $KEEP ]]; then note "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- the image and the trace ---------------------------------------------

images=$tmp/images
mkdir -p "$images" "$tmp/run"
if [[ $TRACE == synthetic ]]; then
    trace=$tmp/trace.csv
    "$REPLAY" --synthetic --size "$SYN_SIZE" --working-set "$SYN_WS" \
        --locality "$SYN_LOC" --seed 6 > "$trace"
    IMAGE_SIZE=$SYN_SIZE
    trace_label="synthetic (image $SYN_SIZE, W $SYN_WS, locality $SYN_LOC, seed 6)"
    plot_label="synthetic"
else
    [[ -r $TRACE ]] || die "BENCH_TRACE: cannot read '$TRACE'"
    trace=$TRACE
    trace_label=$(basename "$TRACE")
    plot_label=$trace_label
    ws_max=0
    if [[ -n $TRACE_WS ]]; then
        ws_max=$(awk -v v="$TRACE_WS" 'BEGIN { m = 1; u = substr(v, length(v))
            if (u == "K") m = 1024; else if (u == "M") m = 1048576; else if (u == "G") m = 1073741824
            printf "%.0f", (m > 1 ? substr(v, 1, length(v) - 1) : v) * m }')
    fi
    if ((ws_max > 0)); then
        # The longest prefix of the trace (the boot's first reads, in their
        # order) whose working set in 64 KiB blocks is at most ws_max.
        # replay --info checks every row first, and the cut again after.
        full_reads=$("$REPLAY" --info --json "$TRACE" | jq -r .reads) ||
            die "replay --info $TRACE failed"
        trace=$tmp/trace.csv
        awk -F, -v max="$ws_max" 'NR == 1 { print; next }
            { b1 = int(($2 + $3 - 1) / 65536); nb = 0
              for (b = int($2 / 65536); b <= b1; b++) if (!(b in seen)) { seen[b] = 1; nb++ }
              if ((n + nb) * 65536 > max) exit
              n += nb; print }' "$TRACE" > "$trace"
        cut_reads=$(($(wc -l < "$trace") - 1))
        ((cut_reads > 0)) || die "BENCH_TRACE_WS=$TRACE_WS: the first read of $TRACE alone exceeds it"
        trace_label+=" cut to its first reads with W ≤ $TRACE_WS (BENCH_TRACE_WS; the whole trace has $full_reads reads)"
        plot_label+=" (W ≤ $TRACE_WS)"
    fi
fi
[[ $BLOCK =~ ^[0-9]+$ ]] && ((BLOCK >= 4096 && BLOCK <= 16777216)) ||
    die "BENCH_BLOCK_SIZE='$BLOCK': want bytes, 4096 to 16777216"
info=$("$REPLAY" --info --block-size "$BLOCK" --json "$trace") || die "replay --info $trace failed"
W=$(jq -r .working_set_bytes <<<"$info")
reads=$(jq -r .reads <<<"$info")
burst=$(jq -r .max_length <<<"$info")
read_size=$(( $(jq -r .bytes <<<"$info") / reads ))
img=$images/$name.raw
"$REPLAY" --make-image "$img" --size "$IMAGE_SIZE" "$trace" >/dev/null ||
    die "replay --make-image failed"
I=$(stat -c %s "$img")
addout=$("$THUNDERCTL" image add "$name" "$img" --block-size "$BLOCK" 2>&1) ||
    die "thunderctl image add: $addout"
version=$(sed -n 's/.* version \([0-9a-f]\{64\}\)$/\1/p' <<<"$addout")
[[ -n $version ]] || die "thunderctl image add: no version in '$addout'"
manifest=$images/$name.manifest.json
cat "$img" > /dev/null    # the origin serves from the page cache

token=$tmp/token
(umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token")
auth="Authorization: Bearer $(cat "$token")"

awkf() { awk "BEGIN { $1 }"; }
now() { printf '%s' "$EPOCHREALTIME"; }

# ---- CPU sampling ---------------------------------------------------------

# cpu_start FILE START_AT: samples /proc/stat every second from START_AT
# (the replays' common start) on, so that the window is the run itself and
# not the spawning and connecting of the N (2N for d) replays before it.
cpu_start() {
    (sleep "$(awkf "d = $2 - $(now); print (d > 0 ? d : 0)")"
     while :; do head -n1 /proc/stat; sleep 1; done) > "$1" &
    cpu_pid=$!
    bg_pids+=("$cpu_pid")
}
cpu_stop() {   # prints the busiest 1-s interval from START_AT to now, %
    kill "$cpu_pid" 2>/dev/null || true
    wait "$cpu_pid" 2>/dev/null || true
    head -n1 /proc/stat >> "$1"   # the last, partial interval
    # Intervals under 10 ticks (50 ms of 2 CPUs) are too short to count.
    awk '{ tot = 0; for (i = 2; i <= NF; i++) tot += $i; idle = $5 + $6
           if (NR > 1 && tot - ptot >= 10) { b = 100 * (1 - (idle - pidle) / (tot - ptot)); if (b > max) max = b }
           ptot = tot; pidle = idle }
         END { printf "%.0f", max }' "$1"
}

# ---- T_local: the trace against a local file --------------------------------

tlocal_runs=()
for r in 1 2 3; do
    out=$(nbdkit -U - --readonly file "$img" --run "'$REPLAY' --json --$PACE '$trace' \"\$uri\"") ||
        die "T_local: replay against nbdkit file failed: $out"
    tlocal_runs+=("$(jq -r .elapsed_s <<<"$out")")
done
T_local=$(printf '%s\n' "${tlocal_runs[@]}" | sort -g | sed -n 2p)

# ---- helpers --------------------------------------------------------------

addr() { "$cluster" addr "$1"; }
stats() {   # stats NODE: the image's state from NODE's control endpoint
    "$cluster" exec "$1" curl -sf --max-time 10 -H "$auth" \
        "http://$(addr "$1"):10810/v1/images/$name"
}
wait_ready() {   # wait_ready LOG SOCKET|"" PID
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$3" 2>/dev/null || die "thunderd did not start: $(tail -n 3 "$1")"
        grep -qsw ready "$1" && { [[ -z $2 ]] || [[ -S $2 ]]; } && return 0
        sleep 0.05
    done
    die "thunderd not ready in 10 s: $(tail -n 3 "$1")"
}
stop_pids() {   # SIGTERM, then wait (SIGKILL after 10 s)
    local p i
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

# start_nodes N: a fresh thunderd in each node's namespace, manifest seeded
# once it is ready (attach then reads it from the cache instead of fetching
# it over the emulated links).  Not before: thunderd removes a version
# directory it finds at start with no block in it (an unattached version
# holding nothing), and it looks for a version's directory when attaching.
start_nodes() {
    local n=$1 i
    node_pids=()
    for ((i = 1; i <= n; i++)); do
        local c=$tmp/run/cache$i
        rm -rf "$c"
        mkdir -p "$c"
        # shellcheck disable=SC2086
        "$cluster" exec "$i" "$THUNDERD" --cache "$c" --socket "$tmp/run/n$i.sock" \
            --socket-group root --listen "$(addr "$i"):10809" \
            --control "$(addr "$i"):10810" --token-file "$token" --pool none \
            $NODE_ARGS 2> "$tmp/run/node$i.log" < /dev/null &
        node_pids+=($!)
        bg_pids+=($!)
    done
    for ((i = 1; i <= n; i++)); do
        wait_ready "$tmp/run/node$i.log" "$tmp/run/n$i.sock" "${node_pids[i - 1]}"
        mkdir -p "$tmp/run/cache$i/$version"
        cp "$manifest" "$tmp/run/cache$i/$version/manifest.json"
    done
}

# attach_level LIST...: "I UP,UP,..." entries attached at once.
attach_level() {
    local e i ups u body pids=() fails=0
    for e in "$@"; do
        i=${e%% *}; ups=${e#* }
        body="{\"version\":\"$version\",\"upstreams\":["
        local first=1
        for u in ${ups//,/ }; do
            ((first)) || body+=","
            first=0
            if [[ $u == origin ]]; then body+="\"nbd://$(addr origin):10809/$name\""
            else body+="\"nbd://$(addr "$u"):10809/$name\""; fi
        done
        body+="]}"
        "$cluster" exec "$i" curl -sf --max-time 30 -X PUT -H "$auth" \
            -H 'Content-Type: application/json' --data "$body" \
            "http://$(addr "$i"):10810/v1/images/$name" > "$tmp/run/attach$i.out" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || fails=$((fails + 1)); done
    ((fails == 0)) || die "attach failed on $fails nodes: $(cat "$tmp"/run/attach*.out | head -n 3)"
}

# plan_lists N: "DEPTH I UP,UP,..." per node from the real planner; the
# model's figures go to $tmp/run/shape.
plan_lists() {
    local n=$1 out
    # shellcheck disable=SC2086
    out=$(seq 1 "$n" | sed 's/^/n/' | "$PLAN" --origin-mbit "$ORATE" --node-mbit "$RATE" \
        --rtt-ms 0.1 --local-s "$T_local" --working-set "$W" --read-size "$read_size" \
        --burst-size "$burst" --block-size "$BLOCK" $PLAN_ARGS) || die "bench/plan failed for $n nodes"
    sed -n 's/^# //p' <<<"$out" > "$tmp/run/shape"
    grep -v '^#' <<<"$out" | awk '{ ups = ""; for (i = 4; i <= NF; i++) { u = $i; sub(/^n/, "", u); ups = ups (i > 4 ? "," : "") u }
                                     id = $1; sub(/^n/, "", id); print $2, id, ups }' | sort -n -k1,1 -k2,2
}

# ---- one strategy at one N -------------------------------------------------

# Sets: r_p50 r_max r_obytes r_maxsent r_cpu r_note; appends to the TSV.
run_thunder() {   # run_thunder N STRAT
    local n=$1 st=$2 i lists level t_phase
    t_phase=$(now)
    start_nodes "$n"
    note "N=$n $st: $n nodes ready in $(awkf "printf \"%.1f\", $(now) - $t_phase") s"
    t_phase=$(now)
    if [[ $st == b ]]; then
        lists=$(for ((i = 1; i <= n; i++)); do echo "1 $i origin"; done)
        plan_shape="every node: origin only"
    else
        lists=$(plan_lists "$n")
        plan_shape="planner: $(cat "$tmp/run/shape")"
    fi
    for level in $(awk '{ print $1 }' <<<"$lists" | sort -nu); do
        local -a entries=()
        while read -r _ i ups; do entries+=("$i $ups"); done < <(awk -v l="$level" '$1 == l' <<<"$lists")
        attach_level "${entries[@]}"
    done
    note "N=$n $st: attached in $(awkf "printf \"%.1f\", $(now) - $t_phase") s"
    local o0 start_at
    o0=$(stats origin | jq -r .counters.served_remote_bytes)
    start_at=$(awkf "printf \"%.3f\", $(now) + 1.0 + $n * 0.01")
    cpu_start "$tmp/run/cpu" "$start_at"
    local -a pids=()
    for ((i = 1; i <= n; i++)); do
        "$REPLAY" --json --"$PACE" --timeout 120 --start-at "$start_at" --label "node$i" \
            ${KEEP:+--log "$tmp/run/log$i.csv"} "$trace" "nbd+unix:///$name?socket=$tmp/run/n$i.sock" \
            > "$tmp/run/r$i.json" 2> "$tmp/run/r$i.err" &
        pids+=($!)
        if [[ $st == d ]]; then
            "$REPLAY" --json --fast --max-in-flight "$PF_DEPTH" --timeout 120 \
                --start-at "$start_at" --label "prefetch$i" \
                "$trace" "nbd+unix:///$name?socket=$tmp/run/n$i.sock" \
                > "$tmp/run/p$i.json" 2> "$tmp/run/p$i.err" &
            pids+=($!)
        fi
    done
    bg_pids+=("${pids[@]}")
    local fails=0 p
    for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
    r_cpu=$(cpu_stop "$tmp/run/cpu")
    local failed_note=""
    if ((fails > 0)); then
        failed_note="FAILED: $fails replays failed, first: $(cat "$tmp"/run/[rp]*.err | grep -m1 . | tr '|' '/')"
        note "strategy $st, N=$n: $failed_note"
    fi
    local o1
    o1=$(stats origin | jq -r .counters.served_remote_bytes)
    r_obytes=$((o1 - o0))
    local sent=0 s fo=0 ff=0 ue=0 pf=0 v
    for ((i = 1; i <= n; i++)); do
        s=$(stats "$i") || die "no stats from node $i"
        v=$(jq -r .counters.served_remote_bytes <<<"$s"); ((v > sent)) && sent=$v
        fo=$((fo + $(jq -r .counters.failovers <<<"$s")))
        ff=$((ff + $(jq -r .counters.fetch_failures <<<"$s")))
        ue=$((ue + $(jq -r '[.upstreams[].errors] | add // 0' <<<"$s")))
        pf=$((pf + $(jq -r .counters.prefetches <<<"$s")))
        echo "$s" > "$tmp/run/stats$i.json"
    done
    r_maxsent=$sent
    if [[ -n $failed_note ]]; then
        r_p50=nan r_max=nan
    else
        read -r r_p50 r_max < <(for ((i = 1; i <= n; i++)); do
            jq -r --argjson s "$start_at" '.end_unix - $s' "$tmp/run/r$i.json"; done |
            sort -g | awk '{ v[NR] = $1 } END { printf "%.3f %.3f\n", v[int((NR + 1) / 2)], v[NR] }')
    fi
    r_note="$plan_shape; failovers $fo, upstream errors $ue, fetch failures $ff${failed_note:+; $failed_note}"
    [[ $st == d ]] && r_note+=", prefetch depth $PF_DEPTH"
    t_phase=$(now)
    stop_pids "${node_pids[@]}"
    note "N=$n $st: $n nodes stopped in $(awkf "printf \"%.1f\", $(now) - $t_phase") s"
    if [[ -n $KEEP ]]; then   # the links' drops and the nodes' TCP counters, cumulative per N
        mkdir -p "$tmp/keep/$st-$n"
        ip netns exec "$THN_PREFIX-sw" tc -s qdisc show > "$tmp/keep/$st-$n/tc-sw.txt" 2>&1 || true
        for ((i = 1; i <= n; i++)); do
            ip netns exec "$THN_PREFIX-$i" tc -s qdisc show dev eth0 > "$tmp/keep/$st-$n/tc-$i.txt" 2>&1 || true
            ip netns exec "$THN_PREFIX-$i" nstat -az > "$tmp/keep/$st-$n/nstat-$i.txt" 2>&1 || true
        done
        ip netns exec "$THN_PREFIX-origin" nstat -az > "$tmp/keep/$st-$n/nstat-origin.txt" 2>&1 || true
    fi
    [[ -n $KEEP ]] && { cp "$tmp"/run/*.json "$tmp"/run/*.log "$tmp"/run/log*.csv "$tmp/run/shape" "$tmp/keep/$st-$n/" 2>/dev/null || true; }
    rm -rf "$tmp"/run/cache* "$tmp"/run/*.json
}

run_copy() {   # run_copy N
    local n=$1 i P whole
    # Goodput each node gets: its downlink, or its share of the origin's link.
    local share
    share=$(awkf "d = $DOWN_RATE; o = $ORATE / $n; printf \"%.0f\", (d < o ? d : o) * 1e6 / 8 * 0.95")
    if awkf "exit !($I / $share <= $COPY_MAX_S)"; then
        P=$I; whole=1
    else
        P=$(awkf "printf \"%.0f\", int($share * $COPY_SAMPLE_S / 1048576) * 1048576")
        ((P >= 1048576)) || P=1048576
        whole=0
    fi
    local o0 start_at
    o0=$(stats origin | jq -r .counters.served_remote_bytes)
    start_at=$(awkf "printf \"%.3f\", $(now) + 1.0 + $n * 0.01")
    cpu_start "$tmp/run/cpu" "$start_at"
    local -a pids=()
    for ((i = 1; i <= n; i++)); do
        (
            set -e
            dst=$tmp/run/copy$i.raw
            sleep "$(awkf "d = $start_at - $(now); print (d > 0 ? d : 0)")"
            t0=$(now)
            if ((whole)); then
                "$cluster" exec "$i" nbdcopy --no-extents \
                    "nbd://$(addr origin):10809/$name" "$dst"
                local_img=$dst
            else
                "$cluster" exec "$i" nbdcopy --no-extents -- \
                    [ nbdkit --readonly --filter=truncate nbd \
                      "uri=nbd://$(addr origin):10809/$name" "truncate=$P" ] "$dst"
                local_img=$img    # the same bytes as a whole copy would hold
            fi
            t1=$(now)
            nbdkit -U - --readonly file "$local_img" \
                --run "'$REPLAY' --json --$PACE --timeout 120 --label copy$i '$trace' \"\$uri\"" \
                > "$tmp/run/r$i.json"
            rm -f "$dst"
            echo "$t0 $t1" > "$tmp/run/copy$i.t"
        ) 2> "$tmp/run/r$i.err" &
        pids+=($!)
    done
    bg_pids+=("${pids[@]}")
    local fails=0 p
    for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
    r_cpu=$(cpu_stop "$tmp/run/cpu")
    ((fails == 0)) || die "strategy c, N=$n: $fails nodes failed: $(cat "$tmp"/run/r*.err | head -n 3)"
    local o1
    o1=$(stats origin | jq -r .counters.served_remote_bytes)
    r_obytes=$(awkf "printf \"%.0f\", ($o1 - $o0) * $I / $P")
    r_maxsent=0
    read -r r_p50 r_max < <(for ((i = 1; i <= n; i++)); do
        read -r t0 t1 < "$tmp/run/copy$i.t"
        jq -r --argjson s "$start_at" --argjson t0 "$t0" --argjson t1 "$t1" \
            --argjson f "$(awkf "printf \"%.9f\", $I / $P")" \
            '($t0 - $s) + ($t1 - $t0) * $f + .elapsed_s' "$tmp/run/r$i.json"; done |
        sort -g | awk '{ v[NR] = $1 } END { printf "%.3f %.3f\n", v[int((NR + 1) / 2)], v[NR] }')
    if ((whole)); then
        r_note="whole image copied ($I bytes per node)"
    else
        r_note="extrapolated: each node copied the first $P of $I bytes; copy time x $(awkf "printf \"%.1f\", $I / $P")"
    fi
    rm -f "$tmp"/run/*.json "$tmp"/run/copy*
}

# ---- the runs ---------------------------------------------------------------

tsv=$tmp/rows.tsv
: > "$tsv"
checks=()
shapes=()
started=$(date -u +%Y-%m-%dT%H:%MZ)
t_begin=$(now)
host_load=$(cut -d' ' -f1-3 /proc/loadavg)
for n in $NS; do
    note "N=$n: cluster up"
    "$cluster" up "$n" --rate "$RATE" --down-rate "$DOWN_RATE" --origin-rate "$ORATE" >/dev/null
    chk_ok=1 chk_line="not run (no iperf3)"
    if command -v iperf3 >/dev/null; then
        rc=0
        chk=$("$cluster" check --seconds "$CHECK_S" --json 2>&1) || rc=$?
        if ((rc == 0 || rc == 3)); then
            chk_line=$(jq -r '"rate \(.ratio_min)-\(.ratio_max) of configured, host CPU max \(.cpu_max_pct)% (\(.cpu_before_pct)% before): \(if .pass then "PASS" else "FAIL" end)"' <<<"$chk")
            [[ $(jq -r .pass <<<"$chk") == true ]] || chk_ok=0
        else
            chk_line="error: $chk"; chk_ok=0
        fi
    fi
    note "N=$n: emulation check: $chk_line"
    checks+=("N=$n: $chk_line")
    "$cluster" exec origin "$THUNDERD" --origin --images "$images" --socket none \
        --listen "$(addr origin):10809" --control "$(addr origin):10810" \
        --token-file "$token" $ORIGIN_ARGS 2> "$tmp/origin.log" < /dev/null &
    origin_pid=$!
    bg_pids+=("$origin_pid")
    wait_ready "$tmp/origin.log" "" "$origin_pid"
    for st in $STRATS; do
        t0=$(now)
        if [[ $st == c ]]; then run_copy "$n"; else run_thunder "$n" "$st"; fi
        [[ $st == a ]] && shapes+=("N=$n: $plan_shape")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$st" "$r_p50" "$r_max" \
            "$r_obytes" "$r_maxsent" "$r_cpu" "$chk_ok" "$r_note" >> "$tsv"
        note "N=$n $st: all finished p50 $r_p50 s, max $r_max s, origin $(awkf "printf \"%.2f\", $r_obytes / $W") W, CPU max $r_cpu% ($(awkf "printf \"%.0f\", $(now) - $t0") s; $r_note)"
    done
    stop_pids "$origin_pid"
done
t_total=$(awkf "printf \"%.0f\", $(now) - $t_begin")
"$cluster" down >/dev/null

# ---- the table --------------------------------------------------------------

Bo=$(awkf "print $ORATE * 1e6 / 8")
B=$(awkf "print $RATE * 1e6 / 8")
Bd=$(awkf "print $DOWN_RATE * 1e6 / 8")
declare -A label=([a]="a thunder tree (planner)" [b]="b all from origin" [c]="c full copy" [d]="d thunder tree + prefetch")
table=$tmp/table.md
{
    echo "# Provisioning benchmark ($TAG, $started)"
    echo
    echo "- trace: $trace_label, $reads reads, W = $W bytes ($(awkf "printf \"%.1f\", $W / 1e6") MB), image $I bytes; pace: $PACE"
    echo "- links: nodes $RATE Mbit/s up, $DOWN_RATE Mbit/s down; origin $ORATE Mbit/s; no added delay (this kernel has no sch_netem)"
    echo "- planner arguments: --origin-mbit $ORATE --node-mbit $RATE --rtt-ms 0.1 --working-set $W --read-size $read_size --burst-size $burst --block-size $BLOCK${PLAN_ARGS:+ $PLAN_ARGS}"
    echo "- node thunderd arguments: $NODE_ARGS; T_local = $T_local s (median of 3 replays against nbdkit file: $(IFS=' '; echo "${tlocal_runs[*]}"))"
    echo "- T_lb = max(W/Bo, N·W/(Bo+(N−1)·B)) + T_local (issue 6); T_lb,emu also counts W/B_down, which these links impose"
    echo "- host: $(nproc) CPUs, load average $host_load at the start; whole run $t_total s"
    echo "- emulation check before each N:"
    printf '  - %s\n' "${checks[@]}"
    ((${#shapes[@]})) && { echo "- planner (strategy a, d):"; printf '  - %s\n' "${shapes[@]}"; }
    echo
    echo "| N | strategy | all finished p50 s | max s | origin bytes / W | most sent by a node (MB) | T_lb s | max / T_lb | T_lb,emu s | max / T_lb,emu | CPU max | note |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    any_failed=0
    while IFS=$'\t' read -r n st p50 mx ob ms cpu ok nt; do
        tlb=$(awkf "a = $W / $Bo; b = $n * $W / ($Bo + ($n - 1) * $B); printf \"%.3f\", (a > b ? a : b) + $T_local")
        tle=$(awkf "a = $W / $Bo; b = $n * $W / ($Bo + ($n - 1) * $B); c = $W / $Bd; m = a > b ? a : b; m = m > c ? m : c; printf \"%.3f\", m + $T_local")
        flag=""
        ((ok)) || flag=" (emulation check FAILED)"
        ((cpu < 80)) || flag+=" (host CPU ≥ 80%: CPU-bound)"
        if [[ $mx == nan ]]; then
            any_failed=1
            printf '| %s | %s | failed | failed | %.3f | %.1f | %.2f | – | %.2f | – | %s%% | %s%s |\n' \
                "$n" "${label[$st]}" "$(awkf "print $ob / $W")" "$(awkf "print $ms / 1e6")" \
                "$tlb" "$tle" "$cpu" "$nt" "$flag"
            continue
        fi
        printf '| %s | %s | %.2f | %.2f | %.3f | %.1f | %.2f | %.2f | %.2f | %.2f | %s%% | %s%s |\n' \
            "$n" "${label[$st]}" "$p50" "$mx" "$(awkf "print $ob / $W")" "$(awkf "print $ms / 1e6")" \
            "$tlb" "$(awkf "print $mx / $tlb")" "$tle" "$(awkf "print $mx / $tle")" "$cpu" "$nt" "$flag"
        printf '%s\t%s\t%s\t%s\n' "$n" "$st" "$mx" "$tlb" >> "$tmp/plot.tsv"
    done < "$tsv"
    echo
    echo "## Targets (issue 6)"
    echo
    get() { awk -F'\t' -v n="$1" -v s="$2" '$1 == n && $2 == s && $4 != "nan" { print $4 }' "$tsv"; }
    nmax=$(tr ' ' '\n' <<<"$NS" | sort -n | tail -n 1)
    verdict() { awkf "exit !($1)" && echo met || echo "**not met**"; }
    if [[ -n $(get 1 a) && -n $(get "$nmax" a) ]]; then
        r=$(awkf "printf \"%.2f\", $(get "$nmax" a) / $(get 1 a)")
        echo "- thunder (a) at N=$nmax ≤ 1.25 × N=1: $(get "$nmax" a) s / $(get 1 a) s = $r: $(verdict "$r <= 1.25")"
    fi
    worst=$(awk -F'\t' -v w="$W" '($2 == "a" || $2 == "d") && $4 != "nan" { r = $5 / w; if (r > m) m = r } END { printf "%.3f", m }' "$tsv")
    echo "- origin bytes ≤ 1.05 W for every N (a, d): worst $worst W: $(verdict "$worst <= 1.05")"
    if [[ -n $(get "$nmax" a) && -n $(get "$nmax" b) ]]; then
        r=$(awkf "printf \"%.1f\", $(get "$nmax" b) / $(get "$nmax" a)")
        echo "- N=$nmax: thunder ≥ 20× faster than all-from-origin: $r×: $(verdict "$r >= 20")"
    fi
    if [[ -n $(get "$nmax" a) && -n $(get "$nmax" c) ]]; then
        r=$(awkf "printf \"%.1f\", $(get "$nmax" c) / $(get "$nmax" a)")
        echo "- N=$nmax: thunder ≥ 100× faster than full copy: $r×: $(verdict "$r >= 100")"
    fi
    if [[ -n $(get "$nmax" a) ]]; then
        tl=$(awk -F'\t' -v n="$nmax" '$1 == n && $2 == "a" { print $4 }' "$tmp/plot.tsv")
        r=$(awkf "printf \"%.2f\", $(get "$nmax" a) / $tl")
        echo "- N=$nmax: thunder ≤ 1.3 × T_lb: $r: $(verdict "$r <= 1.3")"
    fi
    ((nmax == 64)) || echo "- (the targets are stated at N=64; this run's largest N is $nmax)"
} > "$table"

if [[ -f $MODEL ]] && command -v python3 >/dev/null; then
    {
        echo
        echo "## provmodel.py on the same parameters (k=2; rtt 0.1 ms)"
        echo
        echo '```'
        think_arg=()
        [[ $PACE == fast ]] || think_arg=(--think)
        python3 "$MODEL" --mbit "$RATE" --origin-mbit "$ORATE" --rtt-ms 0.1 --k 2 \
            --img "$I" --ns "$(tr ' ' ',' <<<"$NS" | sed 's/,$//')" \
            "${think_arg[@]}" "$trace" 2>&1 | grep -v '| stripe |' || true
        echo '```'
    } >> "$table"
fi
cat "$table"

if [[ -n $RESULTS ]]; then
    mkdir -p "$RESULTS"
    cp "$table" "$RESULTS/provision-$TAG.md"
    cp "$tsv" "$RESULTS/provision-$TAG.tsv"
    if command -v gnuplot >/dev/null; then
        plot=$RESULTS/provision-$TAG.png
        for st in a b c d; do
            awk -F'\t' -v s="$st" '$2 == s { print $1, $3 }' "$tmp/plot.tsv" > "$tmp/plot-$st.dat"
        done
        awk -F'\t' '{ print $1, $4 }' "$tmp/plot.tsv" | sort -n -u -k1,1 > "$tmp/plot-lb.dat"
        cmd="set terminal pngcairo size 900,600 noenhanced; set output '$plot';"
        cmd+=" set title 'Provisioning N nodes: $plot_label, nodes $RATE Mbit/s, origin $ORATE Mbit/s ($started)';"
        cmd+=" set xlabel 'nodes N'; set ylabel 'all finished (max), s'; set logscale xy; set grid;"
        cmd+=" set key left top; set xtics ($(tr ' ' '\n' <<<"$NS" | sed 's/.*/"&" &/' | paste -sd,));"
        cmd+=" plot"
        sep=""
        for st in a b c d; do
            [[ -s $tmp/plot-$st.dat ]] || continue
            cmd+="$sep '$tmp/plot-$st.dat' using 1:2 with linespoints lw 2 title '${label[$st]}'"
            sep=","
        done
        cmd+="$sep '$tmp/plot-lb.dat' using 1:2 with lines dt 2 lw 2 title 'T_lb (issue 6)'"
        gnuplot -e "$cmd" 2> "$tmp/gnuplot.err" || note "gnuplot failed: $(cat "$tmp/gnuplot.err")"
        [[ -s $plot ]] && note "wrote $RESULTS/provision-$TAG.md and $plot"
    else
        note "gnuplot not found: no plot"
    fi
fi
((any_failed == 0)) || { note "some runs failed (marked in the table)"; exit 1; }
exit 0
