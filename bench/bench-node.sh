#!/usr/bin/env bash
# thunder — node mode: reads through thunderd nodes, each part measured
# against a baseline in the same run, printed as ratios.
#
# Usage: bench/bench-node.sh
#
#   1. cold chain   origin → n1 → n2 → n3 on loopback, empty caches: one
#                   full read of the image through the leaf n3 (nbdcopy to
#                   null:, over its Unix socket) against the same nbdcopy
#                   reading the origin directly (its Unix socket).  Median
#                   of BENCH_COLD_RUNS runs, each with fresh nodes and empty
#                   caches.  Target >= 0.7.  Also: bytes the origin sent per
#                   chain read / image size (target 1.0).
#   2. cached       after part 1 filled n1's cache: nbdbench rows (4K rand
#                   x 1 and x 8 clients, 1M seq x 1 client) on n1's Unix
#                   socket against `nbdkit file` on the image file (Unix
#                   socket), median of BENCH_RUNS runs, alternating order.
#                   Target >= 0.9 on every row.
#   3. fan-out      origin → f1 → {f2 … f6}, fresh caches, the five leaves
#                   each read the whole image at once (nbdcopy): bytes the
#                   origin sent / image size (target 1.0) and bytes f1
#                   relayed / image size (5.0 expected).
#   4. TLS          (issue 15; not in the default parts: BENCH_PARTS=4)
#                   NBD over TLS against plaintext on one node, in the
#                   same run, sides alternated; an origin and a node with
#                   --tls on (certificates from thunderctl pki):
#                   cold relay: a full read (nbdcopy) of the node's Unix
#                   socket with an empty cache, its upstream the origin
#                   over nbds:// or nbd:// (TLS is between machines; a VM
#                   reads its node's Unix socket, which stays plaintext);
#                   cached: nbdbench rows (4K rand x 1 client, 1M seq x 1
#                   client) on the node's TCP port, nbds:// or nbd://, as
#                   a child node or a remote reader reads it.  Median of
#                   BENCH_COLD_RUNS / BENCH_RUNS runs; target >= 0.8.
#                   Both ends of every TLS connection run on this host's
#                   CPUs, so a ratio is also bounded by the client's
#                   decryption (the CPU ms of each side are printed).
#
# Builds nothing: takes the binaries from the environment (defaults under
# ./build).  Everything listens on 127.0.0.1 (TCP ports picked by the
# kernel, read from the logs) or on Unix sockets in a temporary directory.
#
# Environment:
#   THUNDERD         default ./build/src/daemon/thunderd
#   THUNDERCTL       default ./build/src/cli/thunderctl
#   NBDBENCH         default ./build/bench/nbdbench
#   NBDKIT           default nbdkit
#   NBDCOPY          default nbdcopy
#   BENCH_IMAGE_MB   image size in MiB (default 512)
#   BENCH_COLD_RUNS  cold full reads per side in part 1 (default 3)
#   BENCH_SECONDS    measured seconds per nbdbench run in part 2 (default 8)
#   BENCH_WARMUP     unmeasured seconds before each nbdbench run (default 1)
#   BENCH_RUNS       nbdbench runs per server and row; median (default 3)
#   BENCH_PARTS      which parts, e.g. "1 3" (default "1 2 3"; 2 needs 1;
#                    4 is the TLS part)
#   BENCH_COPY_ARGS  nbdcopy arguments of every full read
#                    (default "--connections=1 --requests=16 --request-size=1048576")
#   BENCH_NODE_ARGS  extra thunderd arguments for the nodes
#   BENCH_ORIGIN_ARGS extra thunderd arguments for the origin
#   BENCH_RESULTS    append every nbdbench JSON result to this file
#   BENCH_TMPDIR     where the temporary directory goes (default /var/tmp:
#                    the node caches are files on disk, as on a node)
#   BENCH_KEEP       1: keep the temporary directory (logs, caches) at the end
#
# Exit status: 0 when the benchmark ran, whether or not the targets hold;
# 1 on errors (a server did not start, a read failed or returned wrong data).
set -euo pipefail

thunderd=${THUNDERD:-./build/src/daemon/thunderd}
thunderctl=${THUNDERCTL:-./build/src/cli/thunderctl}
nbdbench=${NBDBENCH:-./build/bench/nbdbench}
nbdkit=${NBDKIT:-nbdkit}
nbdcopy=${NBDCOPY:-nbdcopy}
image_mb=${BENCH_IMAGE_MB:-512}
cold_runs=${BENCH_COLD_RUNS:-3}
seconds=${BENCH_SECONDS:-8}
warmup=${BENCH_WARMUP:-1}
runs=${BENCH_RUNS:-3}
parts=${BENCH_PARTS:-1 2 3}
read -r -a copy_args <<< "${BENCH_COPY_ARGS:---connections=1 --requests=16 --request-size=1048576}"
results=${BENCH_RESULTS:-}
name=benchimg

die() { echo "bench-node: $*" >&2; exit 1; }
note() { echo "bench-node: $*" >&2; }

[[ $image_mb =~ ^[1-9][0-9]*$ ]] || die "BENCH_IMAGE_MB '$image_mb': not a positive number"
[[ $cold_runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_COLD_RUNS '$cold_runs': not a positive number"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS '$runs': not a positive number"
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_SECONDS '$seconds': not a number"
[[ $warmup =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_WARMUP '$warmup': not a number"
want_part() { [[ " $parts " == *" $1 "* ]]; }
for p in $parts; do [[ $p =~ ^[1234]$ ]] || die "BENCH_PARTS: '$p' is not a part (1-4)"; done
want_part 2 && ! want_part 1 && die "BENCH_PARTS: part 2 reads the cache part 1 fills; add 1"
[[ -x $thunderd ]] || die "$thunderd: not executable; build first (ninja -C build) or set THUNDERD"
[[ -x $thunderctl ]] || die "$thunderctl: not executable; build first or set THUNDERCTL"
[[ -x $nbdbench ]] || die "$nbdbench: not executable; build it (ninja -C build bench/nbdbench) or set NBDBENCH"
for prog in "$nbdcopy" curl jq; do
    command -v "$prog" >/dev/null || die "$prog: not found (apt-get install libnbd-bin curl jq)"
done
if want_part 2; then
    command -v "$nbdkit" >/dev/null || die "$nbdkit: not found (apt-get install nbdkit)"
fi
thunderd=$(readlink -f -- "$thunderd")
thunderctl=$(readlink -f -- "$thunderctl")
nbdbench=$(readlink -f -- "$nbdbench")

# ---- temporary directory, processes, cleanup --------------------------------

tmp=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/bench-node.XXXXXX")
chmod 0755 "$tmp"
declare -A pid_of=()   # tag -> pid of a server this script started

# stop TAG...: SIGTERM, SIGKILL after 5 s, reap.
stop() {
    local t p
    for t in "$@"; do
        p=${pid_of[$t]:-}
        if [[ -n $p ]]; then kill "$p" 2>/dev/null || true; fi
    done
    for t in "$@"; do
        p=${pid_of[$t]:-}
        [[ -n $p ]] || continue
        for _ in {1..50}; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        unset "pid_of[$t]"
    done
}
cleanup() {
    set +e
    trap '' INT TERM
    # Background readers (part 3) first, then the servers.
    local j
    for j in $(jobs -p); do
        [[ " ${pid_of[*]:-} " == *" $j "* ]] || kill "$j" 2>/dev/null
    done
    stop "${!pid_of[@]}"
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        note "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }

# How busy the CPUs are (1 s sample of /proc/stat), in %.
cpu_busy_pct() {
    local a b
    a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); tot = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (tot > 0 ? (tot - idle) * 100 / tot : 0)
    }'
}

# Median of the arguments; with the min and max: "median min max".
stats() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m, v[1], v[NR]
        }'
}
spread_pct() {   # MEDIAN MIN MAX
    awk -v m="$1" -v lo="$2" -v hi="$3" 'BEGIN { printf "%.0f", (m > 0 ? (hi - lo) * 100 / m : 0) }'
}

# ---- the image --------------------------------------------------------------

images=$tmp/images
mkdir "$images"
file=$images/$name.raw
size=$((image_mb * 1048576))
note "making a $image_mb MiB image in $tmp"
# Random-ish and cheap: one random MiB repeated, with a counter at the
# start of every 4 KiB, so no two blocks are alike at any block size (a
# node reuses identical blocks and never stores zero ones: docs/node.md).
/usr/bin/python3 - "$file" "$image_mb" <<'PY'
import os, sys
seed = bytearray(os.urandom(1048576))
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        for j in range(256):
            seed[j * 4096:j * 4096 + 16] = b"%016d" % (i * 256 + j)
        f.write(seed)
PY
"$thunderctl" image add "$name" "$file" > "$tmp/image-add.out" 2>&1 ||
    { cat "$tmp/image-add.out" >&2; die "thunderctl image add failed"; }
block_size=$(sed -n 's/.*block size \([0-9]*\),.*/\1/p' "$tmp/image-add.out")
# The origin serves the file from the page cache, in every part alike.
cat -- "$file" > /dev/null
cat -- "$file" > /dev/null
want_sum=$(sha256sum < "$file" | cut -d' ' -f1)

token_file=$tmp/token
(umask 077; printf 'bench-%s\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$token_file")
auth="Authorization: Bearer $(cat "$token_file")"

# ---- servers ----------------------------------------------------------------

declare -A nbd_of=() ctl_of=() sock_of=()

# start_thunderd TAG ARGS...: starts thunderd with a Unix socket, TCP and
# the control endpoint on 127.0.0.1 (port 0), waits for "ready", reads the
# ports from its log.  Sets nbd_of[TAG] (nbd://127.0.0.1:PORT),
# ctl_of[TAG] (http://127.0.0.1:PORT), sock_of[TAG].
start_thunderd() {
    local tag=$1 log=$tmp/$1.log sock=$tmp/$1.sock p
    shift
    "$thunderd" --socket "$sock" --socket-group root --listen 127.0.0.1:0 \
        --control 127.0.0.1:0 --token-file "$token_file" "$@" > "$log" 2>&1 &
    p=$!
    pid_of[$tag]=$p
    for _ in {1..300}; do
        grep -qw ready "$log" && [[ -S $sock ]] && break
        kill -0 "$p" 2>/dev/null || { cat "$log" >&2; die "thunderd $tag exited"; }
        sleep 0.05
    done
    grep -qw ready "$log" || { cat "$log" >&2; die "thunderd $tag: no 'ready' after 15 s"; }
    local nbd_port ctl_port
    nbd_port=$(sed -n 's/.*listening on tcp 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$log" | head -n1)
    ctl_port=$(sed -n 's/.*control endpoint on .* port \([0-9]*\).*/\1/p' "$log" | head -n1)
    [[ -n $nbd_port && -n $ctl_port ]] || { cat "$log" >&2; die "thunderd $tag: no ports in its log"; }
    nbd_of[$tag]=nbd://127.0.0.1:$nbd_port
    ctl_of[$tag]=http://127.0.0.1:$ctl_port
    sock_of[$tag]=$sock
}

# start_node TAG [ARGS...]: a node with an empty cache of its own.
start_node() {
    local tag=$1
    shift
    rm -rf "$tmp/cache-$tag"
    # shellcheck disable=SC2086  # BENCH_NODE_ARGS is a list of words
    start_thunderd "$tag" --cache "$tmp/cache-$tag" --pool none ${BENCH_NODE_ARGS:-} "$@"
}

# attach_uri TAG URI... [--OPTION VALUE]: attaches the image on node TAG,
# upstreams given as URIs, parent first; options go to thunderctl.
attach_uri() {
    local tag=$1 out
    shift
    local -a ups=()
    while (( $# > 0 )); do
        if [[ $1 == --* ]]; then ups+=("$1" "$2"); shift 2; else ups+=(--upstream "$1"); shift; fi
    done
    out=$(env -u THUNDER_TOKEN "$thunderctl" --node "${ctl_of[$tag]}" --token-file "$token_file" \
          image attach "$name" "${ups[@]}" 2>&1) ||
        die "attach on $tag: $out"
}

# attach TAG UPSTREAM_TAG...: attaches the image on node TAG, parent first.
attach() {
    local tag=$1 u
    shift
    local -a ups=()
    for u in "$@"; do ups+=("${nbd_of[$u]}/$name"); done
    attach_uri "$tag" "${ups[@]}"
}

# counter TAG JQ-PATH: a number from GET /v1/images/NAME on TAG.
counter() {
    local v
    v=$(curl -sf -H "$auth" "${ctl_of[$1]}/v1/images/$name" | jq -r "$2") ||
        die "counters of $1"
    [[ $v =~ ^[0-9]+$ ]] || die "counter $2 of $1: '$v'"
    echo "$v"
}

uri_unix() { echo "nbd+unix:///$name?socket=${sock_of[$1]}"; }

# full_read TAG: one nbdcopy of the whole image from TAG's Unix socket to
# null:, prints the seconds it took.
full_read() {
    local t0 t1
    t0=$(now)
    "$nbdcopy" "${copy_args[@]}" -- "$(uri_unix "$1")" null: ||
        die "nbdcopy from $1 failed"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# check_copy TAG: the image read through TAG is the file.
check_copy() {
    local got
    got=$("$nbdcopy" -- "$(uri_unix "$1")" - | sha256sum | cut -d' ' -f1) ||
        die "nbdcopy from $1 failed"
    [[ $got == "$want_sum" ]] || die "the image read through $1 differs from the file"
}

mbps() { awk -v s="$size" -v t="$1" 'BEGIN { printf "%.0f", (t > 0 ? s / t / 1e6 : 0) }'; }

# shellcheck disable=SC2086  # BENCH_ORIGIN_ARGS is a list of words
start_thunderd origin --origin --images "$images" ${BENCH_ORIGIN_ARGS:-}

busy_before=$(cpu_busy_pct)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
(( busy_before <= 10 )) ||
    note "warning: the CPUs are ${busy_before}% busy before the runs: expect noisy ratios"

# ---- part 1: cold chain of depth 3 --------------------------------------------

clk_tck=$(getconf CLK_TCK)
# cpu_ticks TAG: user + system CPU time of TAG's process so far, in ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${pid_of[$1]}/stat"; }

# /proc/stat's CPU line: busy and total ticks of the whole machine.
machine_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

declare -a t_origin=() t_chain=() o_bytes=()
declare -A chain_cpu=()   # TAG -> CPU ms of the last cold chain read
chain_busy=0              # % of the machine's CPUs busy during it
# chain_read: a full read through n3, timed (appended to t_chain), with
# the CPU time of each thunderd and how busy the machine was.
chain_read() {
    local -A c0=()
    local t b0 a0 b1 a1
    for t in origin n1 n2 n3; do c0[$t]=$(cpu_ticks "$t"); done
    read -r b0 a0 <<< "$(machine_ticks)"
    t_chain+=("$(full_read n3)")
    read -r b1 a1 <<< "$(machine_ticks)"
    for t in origin n1 n2 n3; do
        chain_cpu[$t]=$(( ($(cpu_ticks "$t") - c0[$t]) * 1000 / clk_tck ))
    done
    chain_busy=$(( a1 > a0 ? (b1 - b0) * 100 / (a1 - a0) : 0 ))
}
if want_part 1; then
    note "part 1: $cold_runs x (full read of the origin, full read through n3 with empty caches)"
    for ((i = 0; i < cold_runs; i++)); do
        start_node n1; start_node n2; start_node n3
        attach n1 origin
        attach n2 n1 origin
        attach n3 n2 n1 origin
        before=$(counter origin .counters.served_remote_bytes)
        # Nothing left to write back from the previous run.
        sync -f "$tmp"
        # Alternate which side reads first.
        if (( i % 2 == 0 )); then
            t_origin+=("$(full_read origin)")
            chain_read
        else
            chain_read
            t_origin+=("$(full_read origin)")
        fi
        after=$(counter origin .counters.served_remote_bytes)
        o_bytes+=($((after - before)))
        note "  run $((i + 1))/$cold_runs: origin ${t_origin[-1]} s ($(mbps "${t_origin[-1]}") MB/s), through n3 ${t_chain[-1]} s ($(mbps "${t_chain[-1]}") MB/s), origin sent $((after - before)) bytes; CPU ms origin ${chain_cpu[origin]} n1 ${chain_cpu[n1]} n2 ${chain_cpu[n2]} n3 ${chain_cpu[n3]}, machine ${chain_busy}% busy"
        # The last run's nodes stay: part 2 reads n1's full cache.
        if (( i < cold_runs - 1 )); then
            stop n1 n2 n3
            rm -rf "$tmp/cache-n1" "$tmp/cache-n2" "$tmp/cache-n3"
        fi
    done
    for t in n1 n2 n3; do
        f=$(counter "$t" .counters.fetch_failures)
        [[ $f == 0 ]] || die "$t: $f blocks could not be fetched"
    done
    # Correctness: the leaf returns the file's bytes (now from its cache).
    check_copy n3
    stop n2 n3
fi

# ---- part 2: cached reads on n1 against nbdkit file -----------------------------

row_label=( "" "4K rand, 1 client " "4K rand, 8 clients" "1M seq,  1 client " )
row_size=(  "" 4096 4096 1048576 )
row_pat=(   "" rand rand seq )
row_cli=(   "" 1 8 1 )
row_depth=( "" 8 8 4 )
row_metric=("" iops iops mbps )
declare -A med_base=() med_cand=() spread_base=() spread_cand=()

# run_one URI ROW TAG [SERVER] -> prints the metric of one nbdbench run.
# With SERVER (a tag), also appends to $tmp/cpu.txt "TAG ROW SERVER-CPU-MS
# CLIENT-CPU-MS SERVER-BYTES CLIENT-BYTES": the server's CPU over the
# whole run (warm-up too: its bytes are estimated at the measured rate)
# and nbdbench's own in the measured window.
run_one() {
    local uri=$1 r=$2 json c0
    [[ -n ${4:-} ]] && c0=$(cpu_ticks "$4")
    json=$("$nbdbench" --uri "$uri" --size "${row_size[r]}" \
           --pattern "${row_pat[r]}" --clients "${row_cli[r]}" \
           --depth "${row_depth[r]}" --seconds "$seconds" --warmup "$warmup" \
           --json) || die "nbdbench failed against $uri (row $r)"
    [[ -n $results ]] && echo "{\"server\":\"$3\",\"row\":$r,\"result\":$json}" >> "$results"
    if [[ -n ${4:-} ]]; then
        awk -v tag="$3" -v r="$r" -v ms=$(( ($(cpu_ticks "$4") - c0) * 1000 / clk_tck )) \
            -v s="$seconds" -v w="$warmup" -v j="$json" 'BEGIN {
            mb = j; sub(/.*"mbps":/, "", mb); mb += 0
            c = j; sub(/.*"cpu_ms":/, "", c); c += 0
            printf "%s %s %d %.1f %.0f %.0f\n", tag, r, ms, c, mb * 1e6 * (s + w), mb * 1e6 * s
        }' >> "$tmp/cpu.txt"
    fi
    sed -n "s/.*\"${row_metric[r]}\":\([0-9.]*\).*/\1/p" <<< "$json"
}

# row_runs ROW URI_BASE TAG_BASE URI_CAND TAG_CAND: BENCH_RUNS runs of ROW
# on each side, alternating which goes first; sets row_med_base,
# row_spread_base, row_med_cand, row_spread_cand.
row_runs() {
    local r=$1 ub=$2 tb=$3 uc=$4 tc=$5 i m lo hi
    local -a vb=() vc=()
    for ((i = 0; i < runs; i++)); do
        if (( (i + r) % 2 == 1 )); then
            vb+=("$(run_one "$ub" "$r" "$tb" "${cpu_server:-}")"); vc+=("$(run_one "$uc" "$r" "$tc" "${cpu_server:-}")")
        else
            vc+=("$(run_one "$uc" "$r" "$tc" "${cpu_server:-}")"); vb+=("$(run_one "$ub" "$r" "$tb" "${cpu_server:-}")")
        fi
        note "  row $r run $((i + 1))/$runs: $tb ${vb[-1]}  $tc ${vc[-1]}"
    done
    read -r m lo hi <<< "$(stats "${vb[@]}")"
    row_med_base=$m; row_spread_base=$(spread_pct "$m" "$lo" "$hi")
    read -r m lo hi <<< "$(stats "${vc[@]}")"
    row_med_cand=$m; row_spread_cand=$(spread_pct "$m" "$lo" "$hi")
}

if want_part 2; then
    note "part 2: cached reads on n1 vs nbdkit file, 3 rows x 2 servers x $runs runs x $(awk -v s="$seconds" -v w="$warmup" 'BEGIN{print s+w}') s"
    "$nbdkit" -f --readonly -U "$tmp/nbdkit.sock" -e "$name" file "$file" \
        > "$tmp/nbdkit.log" 2>&1 &
    pid_of[nbdkit]=$!
    uri_nbdkit="nbd+unix:///$name?socket=$tmp/nbdkit.sock"
    for _ in {1..300}; do
        "$nbdbench" --uri "$uri_nbdkit" --seconds 0.05 --warmup 0 > /dev/null 2>&1 && break
        kill -0 "${pid_of[nbdkit]}" 2>/dev/null || { cat "$tmp/nbdkit.log" >&2; die "nbdkit exited"; }
        sleep 0.1
    done
    uri_n1=$(uri_unix n1)
    [[ $(counter n1 .counters.cached_blocks) == $(counter n1 .blocks) ]] ||
        die "n1's cache is not full after part 1"
    # Correctness: both return the file's bytes.
    for uri in "$uri_nbdkit" "$uri_n1"; do
        for spec in "4096 rand 2 8" "1048576 seq 2 4"; do
            read -r sz pat cl dp <<< "$spec"
            out=$("$nbdbench" --uri "$uri" --size "$sz" --pattern "$pat" \
                  --clients "$cl" --depth "$dp" --seconds 1 --warmup 0 \
                  --verify "$file" 2>&1) ||
                { echo "$out" >&2; die "verification failed on $uri"; }
        done
    done
    fetches_before=$(counter n1 .counters.fetches)
    hits_before=$(counter n1 .counters.hits)
    for r in 1 2 3; do
        row_runs "$r" "$uri_nbdkit" nbdkit "$uri_n1" node
        med_base[$r]=$row_med_base; spread_base[$r]=$row_spread_base
        med_cand[$r]=$row_med_cand; spread_cand[$r]=$row_spread_cand
    done
    part2_fetches=$(( $(counter n1 .counters.fetches) - fetches_before ))
    part2_hits=$(( $(counter n1 .counters.hits) - hits_before ))
    stop nbdkit
fi
want_part 1 && stop n1

# ---- part 3: fan-out origin → f1 → {f2 … f6} -------------------------------------

if want_part 3; then
    note "part 3: fan-out, five leaves under one parent read the whole image at once"
    for n in 1 2 3 4 5 6; do start_node "f$n"; done
    attach f1 origin
    for n in 2 3 4 5 6; do attach "f$n" f1 origin; done
    before=$(counter origin .counters.served_remote_bytes)
    readers=()
    t0=$(now)
    for n in 2 3 4 5 6; do
        "$nbdcopy" "${copy_args[@]}" -- "$(uri_unix "f$n")" null: &
        readers+=($!)
    done
    for p in "${readers[@]}"; do wait "$p" || die "an nbdcopy of the fan-out failed"; done
    t1=$(now)
    fan_time=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    fan_origin=$(( $(counter origin .counters.served_remote_bytes) - before ))
    fan_relayed=$(counter f1 .counters.served_remote_bytes)
    fan_fetches=$(counter f1 .counters.fetches)
    fan_joined=$(counter f1 .counters.joined)
    fan_blocks=$(counter f1 .blocks)
    for n in 1 2 3 4 5 6; do
        f=$(counter "f$n" .counters.fetch_failures)
        [[ $f == 0 ]] || die "f$n: $f blocks could not be fetched"
    done
    for n in 2 3 4 5 6; do check_copy "f$n"; done
    note "  five leaves in $fan_time s; origin sent $fan_origin bytes, f1 relayed $fan_relayed bytes"
    stop f1 f2 f3 f4 f5 f6
fi

# ---- part 4: TLS against plaintext on one node ---------------------------------

declare -a t4_plain=() t4_tls=()
declare -A cpu4=()   # "MODE TAG" -> CPU ms of the last cold read
if want_part 4; then
    note "part 4: TLS vs plaintext: $cold_runs x 2 cold relays through one node, then cached rows on its TCP port"
    pki=$tmp/pki
    mkdir "$pki"
    "$thunderctl" pki init "$pki/ca" > /dev/null || die "thunderctl pki init failed"
    for h in torigin tnode op; do
        "$thunderctl" pki issue "$h" --ca "$pki/ca" --out "$pki/$h" --ip 127.0.0.1 > /dev/null ||
            die "thunderctl pki issue $h failed"
    done
    # shellcheck disable=SC2086  # BENCH_ORIGIN_ARGS is a list of words
    start_thunderd torigin --origin --images "$images" --tls on \
        --tls-certificates "$pki/torigin" ${BENCH_ORIGIN_ARGS:-}
    ver4=$(sha256sum < "$images/$name.manifest.json" | cut -d' ' -f1)
    # tls_uri TAG: TAG's TCP listener over TLS.
    tls_uri() { echo "nbds://${nbd_of[$1]#nbd://}/$name"; }
    # cold4 MODE: a node with an empty cache fetching from torigin over
    # MODE (plain or tls), one full read of its Unix socket, timed
    # (appended to t4_MODE) with the CPU ms of the origin and the node.
    # The node stays (tnode) for the cached rows.
    cold4() {
        local mode=$1 up t c0o c0n
        stop tnode
        start_node tnode --tls on --tls-certificates "$pki/tnode"
        up=${nbd_of[torigin]}/$name
        # thunderctl has no client certificate to read the manifest
        # over TLS: the version is given.
        [[ $mode == tls ]] && up=$(tls_uri torigin)
        attach_uri tnode "$up" --version "$ver4"
        sync -f "$tmp"
        c0o=$(cpu_ticks torigin); c0n=$(cpu_ticks tnode)
        t=$(full_read tnode)
        cpu4["$mode torigin"]=$(( ($(cpu_ticks torigin) - c0o) * 1000 / clk_tck ))
        cpu4["$mode tnode"]=$(( ($(cpu_ticks tnode) - c0n) * 1000 / clk_tck ))
        [[ $(counter tnode .counters.fetch_failures) == 0 ]] || die "tnode ($mode): fetch failures"
        if [[ $mode == tls ]]; then t4_tls+=("$t"); else t4_plain+=("$t"); fi
        note "  cold relay ($mode): $t s ($(mbps "$t") MB/s); CPU ms origin ${cpu4["$mode torigin"]}, node ${cpu4["$mode tnode"]}"
    }
    for ((i = 0; i < cold_runs; i++)); do
        if (( i % 2 == 0 )); then cold4 plain; cold4 tls; else cold4 tls; cold4 plain; fi
    done
    # The last node fetched everything (over TLS or not): cached rows on
    # its TCP port, both sides on one server.
    check_copy tnode
    uri4_plain=${nbd_of[tnode]}/$name
    uri4_tls="$(tls_uri tnode)?tls-certificates=$pki/op"
    out=$("$nbdbench" --uri "$uri4_tls" --size 1048576 --pattern seq --clients 1 \
          --depth 4 --seconds 1 --warmup 0 --verify "$file" 2>&1) ||
        { echo "$out" >&2; die "verification over TLS failed on tnode"; }
    declare -A med4_plain=() med4_tls=() spread4_plain=() spread4_tls=()
    cpu_server=tnode   # the CPU of both ends per GiB, printed with the rows
    for r in 1 3; do
        row_runs "$r" "$uri4_plain" plain "$uri4_tls" tls
        med4_plain[$r]=$row_med_base; spread4_plain[$r]=$row_spread_base
        med4_tls[$r]=$row_med_cand; spread4_tls[$r]=$row_spread_cand
    done
    cpu_server=
    stop tnode torigin
fi

busy_after=$(cpu_busy_pct)

# ---- the table --------------------------------------------------------------------

ratio_line() {   # LABEL UNIT BASE CAND TARGET [BASE_SPREAD CAND_SPREAD]
    awk -v label="$1" -v unit="$2" -v b="$3" -v c="$4" -v t="$5" \
        -v sb="${6:--}" -v sc="${7:--}" 'BEGIN {
        r = b > 0 ? c / b : 0
        printf "%-28s %-5s %10.0f %6s %10.0f %6s %7.2f  %5.2f  %s\n",
               label, unit, b, sb, c, sc, r, t, (r >= t ? "pass" : "FAIL")
    }'
}
fails=0
echo
echo "thunder node benchmark ($(date -u +%Y-%m-%dT%H:%MZ)); image $image_mb MiB, blocks of $block_size bytes; $(nproc) CPUs"
echo "other load: load average $load_before before the runs; CPUs ${busy_before}% busy in the second before"
echo "the runs and ${busy_after}% in the second after them, with no benchmark process running"
echo
if want_part 1; then
    read -r mo lo hi <<< "$(stats "${t_origin[@]}")"; so=$(spread_pct "$mo" "$lo" "$hi")
    read -r mc lo hi <<< "$(stats "${t_chain[@]}")"; sc=$(spread_pct "$mc" "$lo" "$hi")
    echo "1. cold chain origin -> n1 -> n2 -> n3: one full read, nbdcopy ${copy_args[*]} to null:"
    echo "   baseline: the same nbdcopy on the origin's Unix socket (image in its page cache);"
    echo "   median of $cold_runs runs, each with fresh nodes and empty caches, sides alternated"
    printf '%-28s %-5s %10s %6s %10s %6s %7s  %5s  %s\n' row unit origin spread "via n3" spread ratio target result
    line=$(ratio_line "full read, cold caches" MB/s "$(mbps "$mo")" "$(mbps "$mc")" 0.7 "$so%" "$sc%")
    echo "$line"; [[ $line == *FAIL ]] && fails=$((fails + 1))
    read -r _ _ ob <<< "$(stats "${o_bytes[@]}")"   # the largest
    line=$(awk -v o="$ob" -v s="$size" 'BEGIN {
        r = o / s; printf "%-28s %-5s %10.0f %6s %10.0f %6s %7.2f  %5.2f  %s\n",
        "origin bytes / image size", "bytes", s, "", o, "", r, 1.0, (r <= 1.0 ? "pass" : "FAIL") }')
    echo "$line"; [[ $line == *FAIL ]] && fails=$((fails + 1))
    echo "   last chain read: machine ${chain_busy}% busy; CPU ms: origin ${chain_cpu[origin]}, n1 ${chain_cpu[n1]}, n2 ${chain_cpu[n2]}, n3 ${chain_cpu[n3]}" \
         "= $(awk -v a="${chain_cpu[n1]}" -v b="${chain_cpu[n2]}" -v c="${chain_cpu[n3]}" -v s="$size" -v bs="$block_size" \
              'BEGIN { printf "%.0f", (a + b + c) / 3 * 1000 / (s / bs) }') us per block per node"
    echo
fi
if want_part 2; then
    echo "2. cached reads on n1 (Unix socket) vs nbdkit file (Unix socket, same image file), nbdbench"
    echo "   median of $runs runs of $seconds s (after $warmup s warm-up), servers alternated;"
    echo "   depth per client 8 (4K), 4 (1M); n1 fetched $part2_fetches blocks and hit $part2_hits during these runs"
    printf '%-28s %-5s %10s %6s %10s %6s %7s  %5s  %s\n' row unit nbdkit spread node spread ratio target result
    for r in 1 2 3; do
        unit=IOPS; [[ ${row_metric[r]} == mbps ]] && unit=MB/s
        line=$(ratio_line "${row_label[r]}" "$unit" "${med_base[$r]}" "${med_cand[$r]}" 0.9 \
               "${spread_base[$r]}%" "${spread_cand[$r]}%")
        echo "$line"; [[ $line == *FAIL ]] && fails=$((fails + 1))
    done
    echo
fi
if want_part 3; then
    echo "3. fan-out origin -> f1 -> {f2 ... f6}: the five leaves each read the whole image at once"
    echo "   (nbdcopy ${copy_args[*]} to null:, all done in $fan_time s: $(awk -v s="$size" -v t="$fan_time" 'BEGIN { printf "%.0f", 5 * s / t / 1e6 }') MB/s in total)"
    printf '%-28s %-5s %10s %6s %10s %6s %7s  %5s  %s\n' row unit "image" "" bytes "" ratio target result
    line=$(awk -v o="$fan_origin" -v s="$size" 'BEGIN {
        r = o / s; printf "%-28s %-5s %10.0f %6s %10.0f %6s %7.2f  %5.2f  %s\n",
        "origin bytes / image size", "bytes", s, "", o, "", r, 1.0, (r <= 1.0 ? "pass" : "FAIL") }')
    echo "$line"; [[ $line == *FAIL ]] && fails=$((fails + 1))
    awk -v o="$fan_relayed" -v s="$size" 'BEGIN {
        printf "%-28s %-5s %10.0f %6s %10.0f %6s %7.2f  %5s  %s\n",
        "f1 relayed / image size", "bytes", s, "", o, "", o / s, "5", "(info)" }'
    echo "   f1: $fan_fetches fetches for $fan_blocks blocks, $fan_joined misses joined a fetch in flight"
    echo
fi
if want_part 4; then
    echo "4. TLS vs plaintext on one node (--tls on), same run, sides alternated"
    echo "   cold relay: full read of the node's Unix socket, empty cache, upstream the origin over"
    echo "   nbds:// or nbd:// (nbdcopy ${copy_args[*]} to null:), median of $cold_runs runs;"
    echo "   cached: nbdbench on the node's TCP port, nbds:// or nbd://, median of $runs runs of $seconds s"
    printf '%-28s %-5s %10s %6s %10s %6s %7s  %5s  %s\n' row unit plain spread tls spread ratio target result
    read -r mp lo hi <<< "$(stats "${t4_plain[@]}")"; sp=$(spread_pct "$mp" "$lo" "$hi")
    read -r mt lo hi <<< "$(stats "${t4_tls[@]}")"; st=$(spread_pct "$mt" "$lo" "$hi")
    line=$(ratio_line "cold relay, full read" MB/s "$(mbps "$mp")" "$(mbps "$mt")" 0.8 "$sp%" "$st%")
    echo "$line"; [[ $line == *FAIL ]] && fails=$((fails + 1))
    for r in 1 3; do
        unit=IOPS; [[ ${row_metric[r]} == mbps ]] && unit=MB/s
        line=$(ratio_line "cached ${row_label[r]}" "$unit" "${med4_plain[$r]}" "${med4_tls[$r]}" 0.8 \
               "${spread4_plain[$r]}%" "${spread4_tls[$r]}%")
        echo "$line"; [[ $line == *FAIL ]] && fails=$((fails + 1))
    done
    echo "   last cold reads, CPU ms: plain origin ${cpu4[plain torigin]} node ${cpu4[plain tnode]};" \
         "tls origin ${cpu4[tls torigin]} node ${cpu4[tls tnode]} (the node decrypts, the origin encrypts)"
    echo "   CPU ms per GiB read on the cached rows (all runs; both ends share this host's CPUs):"
    echo "   thunderd = the node serving (its whole run, bytes of the warm-up estimated), client = nbdbench"
    echo "   (libnbd, and GnuTLS decrypting over TLS) in the measured window"
    for r in 1 3; do
        awk -v r="$r" -v label="cached ${row_label[r]}" '
            $2 == r { s[$1] += $3; c[$1] += $4; sb[$1] += $5; cb[$1] += $6 }
            function per(ms, b) { return b > 0 ? ms / (b / 1073741824) : 0 }
            END {
                printf "   %-26s thunderd plain %6.0f  tls %6.0f (x%.2f); client plain %6.0f  tls %6.0f (x%.2f)\n",
                    label, per(s["plain"], sb["plain"]), per(s["tls"], sb["tls"]),
                    per(s["tls"], sb["tls"]) / (per(s["plain"], sb["plain"]) + 1e-9),
                    per(c["plain"], cb["plain"]), per(c["tls"], cb["tls"]),
                    per(c["tls"], cb["tls"]) / (per(c["plain"], cb["plain"]) + 1e-9)
            }' "$tmp/cpu.txt"
    done
    echo
fi
if (( fails == 0 )); then
    echo "targets: all met"
else
    echo "targets: NOT met on $fails rows"
fi
