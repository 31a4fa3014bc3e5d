#!/usr/bin/env bash
# thunder — a node's CPU per relayed GiB (issue 17): origin → one node →
# nbdcopy over the node's Unix socket, against the CPU cost of hashing the
# same bytes and of `nbdkit file` serving them, all measured in this run.
#
# Usage: bench/bench-relay.sh
#
#   cold relay   a fresh node with an empty cache; one full read of the
#                image through it (nbdcopy to null:).  The node fetches
#                every block from the origin, verifies it (SHA-256),
#                caches it and sends it on.  CPU of the node (utime +
#                stime from /proc/PID/stat) per GiB; the origin's too.
#   cached       the same node, its cache now full: one more full read.
#   nbdkit file  `nbdkit --readonly file` on the image file: the same read.
#   floor        bench/relayfloor: the same GiB relayed by the least a relay
#                must do, in one thread with no protocol: recv from
#                loopback TCP, SHA-256 per block (nettle), pwrite into a
#                sparse cache file, send to a Unix socket; fdatasync.  Run
#                after each cold relay, so both see the same load.
#   SHA-256      bench/shacost: the image hashed block by block with nettle
#                (the library thunder uses), CPU inside the hash only; and
#                `openssl dgst -sha256` on the file (user + system CPU,
#                reading included).  The file is in the page cache.
#
# Ratios: cold relay / nettle hash (target <= 1.5; also shown against
# OpenSSL), cached / nbdkit file (target <= 1.0); for information the
# floor / nettle hash (what this host allows at best) and cold relay /
# floor (thunderd's own overhead).  Each figure is the
# median of BENCH_RUNS runs (fresh node and empty cache per cold run).
#
# Environment:
#   THUNDERD         default ./build/src/daemon/thunderd
#   THUNDERCTL       default ./build/src/cli/thunderctl
#   SHACOST          default ./build/bench/shacost
#   RELAYFLOOR       default ./build/bench/relayfloor
#   NBDKIT           default nbdkit
#   NBDCOPY          default nbdcopy
#   BENCH_IMAGE_MB   image size in MiB (default 1024)
#   BENCH_RUNS       runs of each measurement; median (default 3)
#   BENCH_COPY_ARGS  nbdcopy arguments of every full read
#                    (default "--connections=1 --requests=16 --request-size=1048576")
#   BENCH_NODE_ARGS  extra thunderd arguments for the node
#   THUNDERD_BEFORE  another thunderd (e.g. built from the commit before a
#                    change): its node is measured too, alternating with
#                    THUNDERD's run by run, and the table adds its rows and
#                    the ratios after / before (a loaded machine moves both
#                    alike)
#   BENCH_PERF       a file: `perf record -g` the node during the last cold
#                    relay into it (perf must be installed)
#   BENCH_PERF_STAT  a file: `perf stat` of the node during the last cold relay
#                    into it (context switches, page faults, system calls;
#                    BENCH_PERF_EVENTS: other events, perf stat -e syntax)
#   BENCH_SETTLE_S   seconds to wait before each cold relay and each floor run
#                    (default 3): a relay frees a GiB of page cache when its
#                    cache is removed, and a VM that returns free pages to
#                    its host (free page reporting) makes writes right after
#                    that pay for the host taking them back
#   BENCH_TMPDIR     where the temporary directory goes (default /var/tmp)
#   BENCH_KEEP       1: keep the temporary directory at the end
#
# Exit status: 0 when the benchmark ran, whether or not the targets hold;
# 1 on errors (a server did not start, a read failed or returned wrong data).
set -euo pipefail

thunderd=${THUNDERD:-./build/src/daemon/thunderd}
thunderctl=${THUNDERCTL:-./build/src/cli/thunderctl}
shacost=${SHACOST:-./build/bench/shacost}
relayfloor=${RELAYFLOOR:-./build/bench/relayfloor}
nbdkit=${NBDKIT:-nbdkit}
nbdcopy=${NBDCOPY:-nbdcopy}
image_mb=${BENCH_IMAGE_MB:-1024}
runs=${BENCH_RUNS:-3}
read -r -a copy_args <<< "${BENCH_COPY_ARGS:---connections=1 --requests=16 --request-size=1048576}"
perf_out=${BENCH_PERF:-}
perf_stat_out=${BENCH_PERF_STAT:-}
settle=${BENCH_SETTLE_S:-3}
name=benchimg

die() { echo "bench-relay: $*" >&2; exit 1; }
note() { echo "bench-relay: $*" >&2; }

[[ $image_mb =~ ^[1-9][0-9]*$ ]] || die "BENCH_IMAGE_MB '$image_mb': not a positive number"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS '$runs': not a positive number"
[[ $settle =~ ^[0-9]+$ ]] || die "BENCH_SETTLE_S '$settle': not a number of seconds"
[[ -x $thunderd ]] || die "$thunderd: not executable; build first (ninja -C build) or set THUNDERD"
[[ -x $thunderctl ]] || die "$thunderctl: not executable; build first or set THUNDERCTL"
[[ -x $shacost ]] || die "$shacost: not executable; build it (ninja -C build bench/shacost) or set SHACOST"
[[ -x $relayfloor ]] || die "$relayfloor: not executable; build it (ninja -C build bench/relayfloor) or set RELAYFLOOR"
for prog in "$nbdcopy" "$nbdkit" openssl curl jq; do
    command -v "$prog" >/dev/null || die "$prog: not found (apt-get install libnbd-bin nbdkit openssl curl jq)"
done
[[ -z $perf_out ]] || command -v perf >/dev/null || die "BENCH_PERF: perf not found"
[[ -z $perf_stat_out ]] || command -v perf >/dev/null || die "BENCH_PERF_STAT: perf not found"
thunderd=$(readlink -f -- "$thunderd")
before_bin=${THUNDERD_BEFORE:-}
if [[ -n $before_bin ]]; then
    [[ -x $before_bin ]] || die "THUNDERD_BEFORE $before_bin: not executable"
    before_bin=$(readlink -f -- "$before_bin")
fi
thunderctl=$(readlink -f -- "$thunderctl")
shacost=$(readlink -f -- "$shacost")
relayfloor=$(readlink -f -- "$relayfloor")

tmp=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/bench-relay.XXXXXX")
chmod 0755 "$tmp"
declare -A pid_of=()   # tag -> pid of a server this script started

# stop TAG...: SIGTERM, SIGKILL after 5 s, reap.
stop() {
    local t p
    for t in "$@"; do
        p=${pid_of[$t]:-}
        [[ -n $p ]] || continue
        kill "$p" 2>/dev/null || true
        for _ in {1..50}; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        unset "pid_of[$t]"
    done
}
cleanup() {
    set +e
    trap '' INT TERM
    stop "${!pid_of[@]}"
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then note "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
# median WORD...: the median of the numbers (a list in one string too).
# shellcheck disable=SC2048,SC2086  # split on purpose
median() { printf '%s\n' $* | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- the image (as bench-node.sh: no two 4 KiB blocks alike) ---------------

images=$tmp/images
mkdir "$images"
file=$images/$name.raw
size=$((image_mb * 1048576))
gib=$(awk -v s="$size" 'BEGIN { print s / 1073741824 }')
note "making a $image_mb MiB image in $tmp"
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
[[ $block_size =~ ^[0-9]+$ ]] || die "no block size in thunderctl's output"
cat -- "$file" > /dev/null
cat -- "$file" > /dev/null
want_sum=$(sha256sum < "$file" | cut -d' ' -f1)

token_file=$tmp/token
(umask 077; printf 'bench-%s\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$token_file")

# ---- servers (as bench-node.sh) ---------------------------------------------

declare -A nbd_of=() ctl_of=()

# start_thunderd TAG ARGS...: Unix socket $tmp/TAG.sock, TCP and control
# on 127.0.0.1 (ports from the log), waits for "ready".
start_thunderd() {
    local tag=$1 log=$tmp/$1.log sock=$tmp/$1.sock p
    shift
    "${bin:-$thunderd}" --socket "$sock" --socket-group root --listen 127.0.0.1:0 \
        --control 127.0.0.1:0 --token-file "$token_file" "$@" > "$log" 2>&1 &
    p=$!
    pid_of[$tag]=$p
    for _ in {1..300}; do
        grep -qw ready "$log" && [[ -S $sock ]] && break
        kill -0 "$p" 2>/dev/null || { cat "$log" >&2; die "thunderd $tag exited"; }
        sleep 0.05
    done
    grep -qw ready "$log" || { cat "$log" >&2; die "thunderd $tag: no 'ready' after 15 s"; }
    nbd_of[$tag]=nbd://127.0.0.1:$(sed -n 's/.*listening on tcp 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$log" | head -n1)
    ctl_of[$tag]=http://127.0.0.1:$(sed -n 's/.*control endpoint on .* port \([0-9]*\).*/\1/p' "$log" | head -n1)
}

uri_of() { echo "nbd+unix:///$name?socket=$tmp/$1.sock"; }

# cpu_ticks TAG: user + system CPU of TAG's process so far, in ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${pid_of[$1]}/stat"; }
clk_tck=$(getconf CLK_TCK)
per_gib() { awk -v t="$1" -v hz="$clk_tck" -v g="$gib" 'BEGIN { printf "%.3f", t / hz / g }'; }

# read_cpu TAG [TAG2]: one full read of TAG's export to null:; prints
# "CPU-s/GiB of TAG, CPU-s/GiB of TAG2 (or 0), seconds".
read_cpu() {
    local a0 b0=0 a1 b1=0 t0 t1
    a0=$(cpu_ticks "$1"); [[ -z ${2:-} ]] || b0=$(cpu_ticks "$2")
    t0=$EPOCHREALTIME
    "$nbdcopy" "${copy_args[@]}" -- "$(uri_of "$1")" null: || die "nbdcopy from $1 failed"
    t1=$EPOCHREALTIME
    a1=$(cpu_ticks "$1"); [[ -z ${2:-} ]] || b1=$(cpu_ticks "$2")
    echo "$(per_gib $((a1 - a0))) $(per_gib $((b1 - b0))) $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
}

start_thunderd origin --origin --images "$images"

busy_before=$(cpu_busy_pct)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
(( busy_before <= 10 )) || note "warning: the CPUs are ${busy_before}% busy before the runs: expect noisy ratios"

# ---- SHA-256 --------------------------------------------------------------------

declare -a nettle=() ssl=()
for ((i = 0; i < runs; i++)); do
    out=$("$shacost" "$file" "$block_size") || die "shacost failed"
    nettle+=("$(awk -v g="$gib" '{ sub("hash_cpu_s=", "", $2); printf "%.3f", $2 / g }' <<< "$out")")
    # bash's time: openssl's user + system CPU.
    t=$( { TIMEFORMAT='%U %S'; time openssl dgst -sha256 "$file" > /dev/null; } 2>&1 ) ||
        die "openssl dgst failed"
    ssl+=("$(awk -v g="$gib" '{ printf "%.3f", ($1 + $2) / g }' <<< "$t")")
done
note "SHA-256 CPU-s/GiB: nettle ${nettle[*]}; openssl ${ssl[*]}"

# ---- cold relay and cached serving ----------------------------------------------

declare -A cold=() cold_origin=() cold_s=() cached=() cached_s=()   # "SIDE" -> list
# relay SIDE BIN I: one cold relay and one cached read through a fresh node
# running BIN, appended to the lists of SIDE.
relay() {
    local side=$1 bin=$2 i=$3 out c o s perf_pid= stat_pid=
    stop n1
    rm -rf "$tmp/cache-n1"
    sync -f "$tmp"
    # shellcheck disable=SC2086  # BENCH_NODE_ARGS is a list of words
    start_thunderd n1 --cache "$tmp/cache-n1" --pool none ${BENCH_NODE_ARGS:-}
    out=$(env -u THUNDER_TOKEN "$thunderctl" --node "${ctl_of[n1]}" --token-file "$token_file" \
          image attach "$name" --upstream "${nbd_of[origin]}/$name" 2>&1) || die "attach: $out"
    if [[ -n $perf_out && $side == after ]] && (( i == runs - 1 )); then
        perf record -g -o "$perf_out" -p "${pid_of[n1]}" > "$tmp/perf.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    if [[ -n $perf_stat_out && $side == after ]] && (( i == runs - 1 )); then
        perf stat -e "${BENCH_PERF_EVENTS:-task-clock,context-switches,page-faults,raw_syscalls:sys_enter}" \
            -o "$perf_stat_out" -p "${pid_of[n1]}" > /dev/null 2>&1 &
        stat_pid=$!
        sleep 0.5
    fi
    sleep "$settle"
    read -r c o s <<< "$(read_cpu n1 origin)"
    if [[ -n $perf_pid ]]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    if [[ -n $stat_pid ]]; then kill -INT "$stat_pid"; wait "$stat_pid" || true; fi
    cold[$side]+=" $c"; cold_origin[$side]+=" $o"; cold_s[$side]+=" $s"
    local cc cs
    read -r cc _ cs <<< "$(read_cpu n1)"
    cached[$side]+=" $cc"; cached_s[$side]+=" $cs"
    note "  run $((i + 1))/$runs ($side): cold relay $c CPU-s/GiB in $s s (origin $o), cached $cc in $cs s"
    local f got
    f=$(curl -sf -H "Authorization: Bearer $(cat "$token_file")" "${ctl_of[n1]}/v1/images/$name" |
        jq -r .counters.fetch_failures) || die "counters of n1"
    [[ $f == 0 ]] || die "n1: $f blocks could not be fetched"
    if (( i == 0 )); then
        got=$("$nbdcopy" -- "$(uri_of n1)" - | sha256sum | cut -d' ' -f1) || die "nbdcopy from n1 failed"
        [[ $got == "$want_sum" ]] || die "the image read through n1 ($side) differs from the file"
    fi
    stop n1
}
declare -a floor=() floor_move=()
# relay_floor: one run of relayfloor on the image; appends its "+cache"
# and "move" CPU-s/GiB.
relay_floor() {
    local out
    sleep "$settle"
    out=$("$relayfloor" "$file" "$tmp" "$block_size") || die "relayfloor failed"
    floor+=("$(awk '$1 == "+cache" { print $2 }' <<< "$out")")
    floor_move+=("$(awk '$1 == "move" { print $2 }' <<< "$out")")
    note "  floor: +cache ${floor[-1]} CPU-s/GiB (recv + send alone ${floor_move[-1]})"
}
for ((i = 0; i < runs; i++)); do
    relay_floor
    if [[ -z $before_bin ]]; then
        relay after "$thunderd" "$i"
    elif (( i % 2 == 0 )); then
        relay before "$before_bin" "$i"; relay after "$thunderd" "$i"
    else
        relay after "$thunderd" "$i"; relay before "$before_bin" "$i"
    fi
done

# ---- nbdkit file ------------------------------------------------------------------

"$nbdkit" -f --readonly -U "$tmp/nbdkit.sock" -e "$name" file "$file" > "$tmp/nbdkit.log" 2>&1 &
pid_of[nbdkit]=$!
for _ in {1..100}; do [[ -S $tmp/nbdkit.sock ]] && break; sleep 0.05; done
[[ -S $tmp/nbdkit.sock ]] || { cat "$tmp/nbdkit.log" >&2; die "nbdkit did not start"; }
declare -a kit=() kit_s=()
for ((i = 0; i < runs; i++)); do
    read -r c _ s <<< "$(read_cpu nbdkit)"
    kit+=("$c"); kit_s+=("$s")
done
note "nbdkit file CPU-s/GiB: ${kit[*]}"
stop nbdkit origin

busy_after=$(cpu_busy_pct)

# ---- the table ----------------------------------------------------------------------

m_nettle=$(median "${nettle[@]}"); m_ssl=$(median "${ssl[@]}")
m_cold=$(median "${cold[after]}"); m_origin=$(median "${cold_origin[after]}")
m_cached=$(median "${cached[after]}"); m_kit=$(median "${kit[@]}")
m_floor=$(median "${floor[@]}"); m_move=$(median "${floor_move[@]}")
echo
echo "thunder relay CPU benchmark ($(date -u +%Y-%m-%dT%H:%MZ)); image $image_mb MiB, blocks of $block_size bytes; $(nproc) CPUs"
echo "other load: load average $load_before before; CPUs ${busy_before}% busy in the second before the runs, ${busy_after}% after"
echo "reads: nbdcopy ${copy_args[*]} to null: over a Unix socket; median of $runs runs"
echo
printf '%-46s %10s %8s\n' measurement CPU-s/GiB seconds
printf '%-46s %10.3f %8s\n' "SHA-256, nettle (hash only)" "$m_nettle" -
printf '%-46s %10.3f %8s\n' "SHA-256, openssl dgst (with reading)" "$m_ssl" -
printf '%-46s %10.3f %8s\n' "floor: recv + SHA-256 + pwrite + send" "$m_floor" -
printf '%-46s %10.3f %8s\n' "  floor's recv + send alone" "$m_move" -
printf '%-46s %10.3f %8.2f\n' "node, cold relay (origin -> node -> nbdcopy)" "$m_cold" "$(median "${cold_s[after]}")"
printf '%-46s %10.3f %8s\n' "  origin during the cold relay" "$m_origin" -
printf '%-46s %10.3f %8.2f\n' "node, cached serving" "$m_cached" "$(median "${cached_s[after]}")"
if [[ -n $before_bin ]]; then
    b_cold=$(median "${cold[before]}"); b_origin=$(median "${cold_origin[before]}"); b_cached=$(median "${cached[before]}")
    printf '%-46s %10.3f %8.2f\n' "THUNDERD_BEFORE node, cold relay" "$b_cold" "$(median "${cold_s[before]}")"
    printf '%-46s %10.3f %8s\n' "  origin during its cold relay" "$b_origin" -
    printf '%-46s %10.3f %8.2f\n' "THUNDERD_BEFORE node, cached serving" "$b_cached" "$(median "${cached_s[before]}")"
fi
printf '%-46s %10.3f %8.2f\n' "nbdkit file" "$m_kit" "$(median "${kit_s[@]}")"
echo
printf '%-46s %7s  %6s  %s\n' ratio value target result
fails=0
ratio() {   # LABEL NUM DEN TARGET ("-": information only)
    local line
    line=$(awk -v l="$1" -v a="$2" -v b="$3" -v t="$4" 'BEGIN {
        r = b > 0 ? a / b : 0
        if (t == "-") printf "%-46s %7.2f  %6s  %s\n", l, r, "-", "(info)"
        else printf "%-46s %7.2f  %6.2f  %s\n", l, r, t, (r <= t ? "pass" : "FAIL") }')
    echo "$line"
    [[ $line != *FAIL ]] || fails=$((fails + 1))
}
ratio "cold relay / SHA-256 (nettle)" "$m_cold" "$m_nettle" 1.5
ratio "cold relay / SHA-256 (openssl)" "$m_cold" "$m_ssl" -
ratio "floor / SHA-256 (nettle)" "$m_floor" "$m_nettle" -
ratio "cold relay / floor" "$m_cold" "$m_floor" -
ratio "cached / nbdkit file" "$m_cached" "$m_kit" 1.0
if [[ -n $before_bin ]]; then
    ratio "cold relay: after / before" "$m_cold" "$b_cold" -
    ratio "  origin's CPU: after / before" "$m_origin" "$b_origin" -
    ratio "cached: after / before" "$m_cached" "$b_cached" -
    ratio "before: cold relay / SHA-256 (nettle)" "$b_cold" "$m_nettle" -
fi
echo
if (( fails == 0 )); then echo "targets: all met"; else echo "targets: NOT met on $fails rows"; fi
