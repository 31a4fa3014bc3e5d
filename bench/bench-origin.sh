#!/usr/bin/env bash
# thunder — origin read throughput: thunderd --origin against `nbdkit file`
# serving the same image, measured in the same run (issue 2).
#
# Usage: bench/bench-origin.sh
#
# Builds nothing: takes the binaries from the environment.  Makes an image
# of random-ish data in a temporary directory, registers it with
# `thunderctl image add`, starts `nbdkit --readonly file` and
# `thunderd --origin` on it, checks that both return the file's bytes,
# then for each row runs nbdbench against each server, alternating which
# goes first, and prints the median of the runs and the ratio
# thunderd / nbdkit.  The target is a ratio >= 0.9 on every row.
# Finally runs bench/bench-hash.sh if it exists.
#
# Environment:
#   THUNDERD         default ./build/src/daemon/thunderd
#   THUNDERCTL       default ./build/src/cli/thunderctl
#   NBDBENCH         default ./build/bench/nbdbench
#   NBDKIT           default nbdkit
#   BENCH_IMAGE_MB   image size in MiB (default 1024)
#   BENCH_SECONDS    measured seconds per run (default 8)
#   BENCH_WARMUP     unmeasured seconds before each run (default 1)
#   BENCH_RUNS       runs per server and row; the median counts (default 3)
#   BENCH_TRANSPORT  unix (default) or tcp (127.0.0.1, random free ports)
#   BENCH_CANDIDATE  thunderd (default), or nbdkit: a second nbdkit in
#                    thunderd's place, to measure the noise (ratio ~1.0)
#   BENCH_ROWS       which rows, e.g. "1 3" (default "1 2 3 4")
#   BENCH_THUNDERD_ARGS  extra thunderd arguments (e.g. --threads 8)
#   BENCH_NBDKIT_ARGS    extra nbdkit arguments (e.g. --threads 8)
#   BENCH_RESULTS    append every nbdbench JSON result to this file
#   BENCH_HASH       0 to skip bench-hash.sh (default 1)
#   BENCH_TMPDIR     where the temporary directory goes (default /var/tmp:
#                    a disk-backed file, like an origin's images)
#
# Exit status: 0 when the benchmark ran, whether or not the target holds;
# 1 on errors (a server did not start, a read failed or returned wrong data).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
thunderd=${THUNDERD:-./build/src/daemon/thunderd}
thunderctl=${THUNDERCTL:-./build/src/cli/thunderctl}
nbdbench=${NBDBENCH:-./build/bench/nbdbench}
nbdkit=${NBDKIT:-nbdkit}
image_mb=${BENCH_IMAGE_MB:-1024}
seconds=${BENCH_SECONDS:-8}
warmup=${BENCH_WARMUP:-1}
runs=${BENCH_RUNS:-3}
transport=${BENCH_TRANSPORT:-unix}
candidate=${BENCH_CANDIDATE:-thunderd}
rows_wanted=${BENCH_ROWS:-1 2 3 4}
results=${BENCH_RESULTS:-}
target=0.9
name=benchimg

die() { echo "bench-origin: $*" >&2; exit 1; }
note() { echo "bench-origin: $*" >&2; }

[[ $image_mb =~ ^[1-9][0-9]*$ ]] || die "BENCH_IMAGE_MB '$image_mb': not a positive number"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS '$runs': not a positive number"
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_SECONDS '$seconds': not a number"
[[ $warmup =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_WARMUP '$warmup': not a number"
[[ $transport == unix || $transport == tcp ]] || die "BENCH_TRANSPORT '$transport': unix or tcp"
[[ $candidate == thunderd || $candidate == nbdkit ]] || die "BENCH_CANDIDATE '$candidate': thunderd or nbdkit"
[[ -x $nbdbench ]] || die "$nbdbench: not executable; build it (ninja -C build bench/nbdbench) or set NBDBENCH"
command -v "$nbdkit" >/dev/null || die "$nbdkit: not found (apt-get install nbdkit)"
if [[ $candidate == thunderd ]]; then
    [[ -x $thunderd ]] || die "$thunderd: not executable; build first or set THUNDERD"
    [[ -x $thunderctl ]] || die "$thunderctl: not executable; build first or set THUNDERCTL"
fi
nbdbench=$(readlink -f -- "$nbdbench")

# The rows: label, read size, pattern, clients, depth per client, metric.
row_label=( "" "4K rand, 1 client " "4K rand, 8 clients" "1M seq,  1 client " "1M seq,  8 clients")
row_size=(  "" 4096 4096 1048576 1048576 )
row_pat=(   "" rand rand seq seq )
row_cli=(   "" 1 8 1 8 )
row_depth=( "" 8 8 4 4 )
row_metric=("" iops iops mbps mbps )
for r in $rows_wanted; do
    [[ $r =~ ^[1-4]$ ]] || die "BENCH_ROWS: '$r' is not a row (1-4)"
done

# ---- temporary directory and cleanup --------------------------------------

tmp=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/bench-origin.XXXXXX")
pids=()
# Stops the servers this script started (by pid), bounded: one that
# ignores SIGTERM for 5 s gets SIGKILL.
stop_servers() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in {1..50}; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_servers
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the image --------------------------------------------------------------

images=$tmp/images
mkdir "$images"
file=$images/$name.raw
note "making a $image_mb MiB image in $tmp"
# Random-ish and cheap: one random MiB repeated with a per-MiB counter in
# front, so no two MiB are alike and nothing compresses or dedups away.
head -c 1048576 /dev/urandom > "$tmp/seed"
for ((i = 0; i < image_mb; i++)); do
    printf '%016d' "$i"
    tail -c +17 "$tmp/seed"
done > "$file"
rm -f "$tmp/seed"

if [[ $candidate == thunderd ]]; then
    note "thunderctl image add $name"
    "$thunderctl" image add "$name" "$file" > "$tmp/image-add.out" 2>&1 ||
        { cat "$tmp/image-add.out" >&2; die "thunderctl image add failed"; }
fi

# ---- the servers ------------------------------------------------------------

free_port() {
    local p
    for _ in {1..100}; do
        p=$(( 20000 + RANDOM % 40000 ))
        # Nothing listening there: the connect fails.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    die "no free TCP port found"
}

# uri_for SOCKET_OR_PORT
uri_for() {
    if [[ $transport == unix ]]; then
        echo "nbd+unix:///$name?socket=$1"
    else
        echo "nbd://127.0.0.1:$1/$name"
    fi
}

# wait_nbd URI PID LOG: until a short nbdbench run succeeds (at most 30 s).
wait_nbd() {
    local uri=$1 pid=$2 log=$3
    for _ in {1..300}; do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "server exited: $log"; }
        if "$nbdbench" --uri "$uri" --seconds 0.05 --warmup 0 > /dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    cat "$log" >&2
    die "server not answering on $uri after 30 s"
}

# start_nbdkit TAG -> sets uri_TAG
start_nbdkit() {
    local tag=$1 addr log=$tmp/$1.log
    local -a listen
    if [[ $transport == unix ]]; then
        addr=$tmp/$tag.sock; listen=(-U "$addr")
    else
        addr=$(free_port); listen=(-i 127.0.0.1 -p "$addr")
    fi
    # shellcheck disable=SC2086  # BENCH_NBDKIT_ARGS is a list of words
    "$nbdkit" -f --readonly "${listen[@]}" -e "$name" ${BENCH_NBDKIT_ARGS:-} \
        file "$file" > "$log" 2>&1 &
    pids+=($!)
    printf -v "uri_$tag" '%s' "$(uri_for "$addr")"
    wait_nbd "$(uri_for "$addr")" "$!" "$log"
}

start_thunderd() {
    local tag=$1 log=$tmp/$1.log sock=$tmp/$1.sock tcp=none addr
    if [[ $transport == unix ]]; then
        addr=$sock
    else
        addr=$(free_port); tcp=127.0.0.1:$addr
    fi
    # shellcheck disable=SC2086  # BENCH_THUNDERD_ARGS is a list of words
    "$thunderd" --origin --images "$images" --socket "$sock" \
        --listen "$tcp" --socket-group root ${BENCH_THUNDERD_ARGS:-} \
        > "$log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in {1..300}; do
        grep -q ready "$log" && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "thunderd exited"; }
        sleep 0.1
    done
    grep -q ready "$log" || { cat "$log" >&2; die "thunderd: no 'ready' after 30 s"; }
    printf -v "uri_$tag" '%s' "$(uri_for "$addr")"
    wait_nbd "$(uri_for "$addr")" "$pid" "$log"
}

uri_base="" uri_cand=""
start_nbdkit base
if [[ $candidate == thunderd ]]; then
    start_thunderd cand
    cand_label=thunderd
else
    start_nbdkit cand
    cand_label=nbdkit#2
fi
note "nbdkit:   $uri_base"
note "$cand_label: $uri_cand"

# Warm the page cache (twice: the second pass confirms it fits), so both
# servers read from memory and the servers, not the disk, are compared.
cat -- "$file" > /dev/null
cat -- "$file" > /dev/null

# How busy the CPUs are without us (1 s sample of /proc/stat): other load
# on this machine makes every ratio noisier, so the table says so.
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
busy_before=$(cpu_busy_pct)
(( busy_before <= 10 )) ||
    note "warning: the CPUs are ${busy_before}% busy before the runs: expect noisy ratios"

# ---- correctness: every byte read is checked against the file --------------

for tag in base cand; do
    uri_var=uri_$tag
    for spec in "4096 rand 2 8" "1048576 seq 2 4"; do
        read -r sz pat cl dp <<< "$spec"
        out=$("$nbdbench" --uri "${!uri_var}" --size "$sz" --pattern "$pat" \
              --clients "$cl" --depth "$dp" --seconds 1 --warmup 0 \
              --verify "$file" 2>&1) ||
            { echo "$out" >&2; die "verification failed on ${!uri_var}"; }
    done
done
note "both servers return the file's bytes (verified 4K rand and 1M seq)"

# ---- the runs -----------------------------------------------------------------

# run_one TAG ROW -> prints the metric of one run
run_one() {
    local tag=$1 r=$2 uri_var=uri_$1 json
    json=$("$nbdbench" --uri "${!uri_var}" --size "${row_size[r]}" \
           --pattern "${row_pat[r]}" --clients "${row_cli[r]}" \
           --depth "${row_depth[r]}" --seconds "$seconds" --warmup "$warmup" \
           --json) || die "nbdbench failed against ${!uri_var} (row $r)"
    [[ -n $results ]] && echo "{\"server\":\"$tag\",\"row\":$r,\"result\":$json}" >> "$results"
    local key=${row_metric[r]}
    sed -n "s/.*\"$key\":\([0-9.]*\).*/\1/p" <<< "$json"
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

declare -A med_base med_cand spread_base spread_cand
total=0
for r in $rows_wanted; do total=$((total + 1)); done
note "$total rows x 2 servers x $runs runs x $(awk -v s="$seconds" -v w="$warmup" 'BEGIN{print s+w}') s"
k=0
for r in $rows_wanted; do
    vb=() vc=()
    for ((i = 0; i < runs; i++)); do
        # Alternate which server goes first, so drift (thermal, page cache,
        # other load) does not favour one side.
        if (( (i + k) % 2 == 0 )); then
            x=$(run_one base "$r"); vb+=("$x")
            x=$(run_one cand "$r"); vc+=("$x")
        else
            x=$(run_one cand "$r"); vc+=("$x")
            x=$(run_one base "$r"); vb+=("$x")
        fi
        note "row $r run $((i + 1))/$runs: nbdkit ${vb[-1]}  $cand_label ${vc[-1]}"
    done
    k=$((k + 1))
    read -r m lo hi <<< "$(stats "${vb[@]}")"
    med_base[$r]=$m
    spread_base[$r]=$(awk -v m="$m" -v lo="$lo" -v hi="$hi" 'BEGIN { printf "%.0f", (m > 0 ? (hi - lo) * 100 / m : 0) }')
    read -r m lo hi <<< "$(stats "${vc[@]}")"
    med_cand[$r]=$m
    spread_cand[$r]=$(awk -v m="$m" -v lo="$lo" -v hi="$hi" 'BEGIN { printf "%.0f", (m > 0 ? (hi - lo) * 100 / m : 0) }')
done

# ---- the table ----------------------------------------------------------------

echo
echo "thunder origin read benchmark: $cand_label vs nbdkit file ($("$nbdkit" --version 2>/dev/null | head -1))"
echo "image: $image_mb MiB, page cache warm; transport: $transport; $(nproc) CPUs"
echo "each cell: median of $runs runs of ${seconds} s (after ${warmup} s warm-up), servers alternated;"
echo "queue depth per client: 8 (4K rand), 4 (1M seq); one nbdbench thread per client"
echo "spread: (max - min) / median of the runs; ratio = $cand_label / nbdkit; target >= $target"
echo "CPU busy before the runs (other load): ${busy_before}%"
echo
printf '%-20s %-5s %12s %7s %12s %7s %7s  %s\n' \
    row unit nbdkit spread "$cand_label" spread ratio result
fails=0
for r in $rows_wanted; do
    unit=IOPS; [[ ${row_metric[r]} == mbps ]] && unit=MB/s
    line=$(awk -v b="${med_base[$r]}" -v c="${med_cand[$r]}" -v t="$target" \
               -v sb="${spread_base[$r]}" -v sc="${spread_cand[$r]}" \
               -v label="${row_label[r]}" -v unit="$unit" '
        BEGIN {
            ratio = b > 0 ? c / b : 0
            printf "%-20s %-5s %12.0f %6s%% %12.0f %6s%% %7.2f  %s\n",
                   label, unit, b, sb, c, sc, ratio, (ratio >= t ? "pass" : "FAIL")
        }')
    echo "$line"
    [[ $line == *FAIL ]] && fails=$((fails + 1))
done
echo
if (( fails == 0 )); then
    echo "target: $cand_label >= $target x nbdkit on every row: met"
else
    echo "target: $cand_label >= $target x nbdkit on every row: NOT met ($fails rows below)"
fi

# Stop the servers before the hashing bench, so it has the CPUs to itself.
stop_servers

# ---- hashing ------------------------------------------------------------------

if [[ ${BENCH_HASH:-1} != 0 && -f $here/bench-hash.sh ]]; then
    echo
    echo "== bench-hash.sh =="
    THUNDERCTL=$thunderctl bash "$here/bench-hash.sh" || note "bench-hash.sh failed (exit $?)"
fi
