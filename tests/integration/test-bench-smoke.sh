#!/usr/bin/env bash
# thunder — the benchmark's smoke mode, so the benchmark cannot rot: an
# emulated cluster (bench/netem/cluster.sh) of an origin and 4 nodes in
# network namespaces behind 200 Mbit/s links, a thunderd in each, a
# binary relay tree attached with thunderctl inside the namespaces, and
# bench/replay playing one small synthetic boot trace on all 4 nodes at
# once.  Every node must finish with the right bytes; the origin must send
# the working set W about once (<= 1.05 W).  Also: replay's checks of
# hostile traces and of reads past the export, the generator's
# determinism, and one short emulation check when iperf3 is there.
# Skips (77) where network namespaces cannot be made (not root, a kernel
# without them).
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program jq curl ip tc
replay=${REPLAY:-$TOP_BUILDDIR/bench/replay}
cluster=$TOP_SRCDIR/bench/netem/cluster.sh
[ -x "$replay" ] || fail "bench/replay is not built: $replay"
[ -x "$cluster" ] || fail "not executable: $cluster"
requires_root
"$cluster" probe >/dev/null 2>&1 ||
    skip "cannot make network namespaces, veth pairs, a bridge or HTB here: $("$cluster" probe 2>&1 || true)"

# ---- replay on its own: the generator and hostile traces ------------------

images=$tmpdir/images
mkdir "$images"
trace=$tmpdir/trace.csv
"$replay" --synthetic --size 64M --working-set 8M --locality 0.7 --seed 6 > "$trace" ||
    fail "replay --synthetic failed"
"$replay" --synthetic --size 64M --working-set 8M --locality 0.7 --seed 6 |
    cmp -s - "$trace" || fail "replay --synthetic is not deterministic"
"$replay" --synthetic --size 64M --working-set 8M --locality 0.7 --seed 7 |
    cmp -s - "$trace" && fail "replay --synthetic ignores --seed"
info=$("$replay" --info --json "$trace") || fail "replay --info failed"
W=$(jq -r .working_set_bytes <<<"$info")
[ "$W" -eq $((8 * 1048576)) ] || fail "synthetic trace: W $W, want 8 MiB: $info"
[ "$(jq -r .distinct_bytes <<<"$info")" -eq "$W" ] ||
    fail "synthetic trace reads a block twice: $info"

# bad_trace NAME CONTENT WANT: replay --info must exit 2 and say WANT with
# the file and line.
bad_trace ()
{
    local f=$tmpdir/$1.csv out rc=0
    printf '%b' "$2" > "$f"
    out=$("$replay" --info "$f" 2>&1) || rc=$?
    [ "$rc" -eq 2 ] || fail "bad trace $1: exit $rc, want 2: $out"
    grep -qF -- "$f$3" <<<"$out" || fail "bad trace $1: '$out', want '$f$3'"
}
h='t_ms,offset,length\n'
bad_trace header 'offset,length\n0,0\n' ':1: header'
bad_trace empty '' ': empty file'
bad_trace norows "$h" ': no reads'
bad_trace negative "${h}0,0,512\n1,-5,512\n" ":3: offset '-5' is not a non-negative integer"
bad_trace overflow "${h}0,18446744073709551616,512\n" ":2: offset '18446744073709551616' is out of range"
bad_trace end "${h}0,9223372036854775000,4096\n" ':2: read 9223372036854775000+4096 ends past 2^63 - 1'
bad_trace zero "${h}0,0,0\n" ":2: length '0' is out of range"
bad_trace huge "${h}0,0,33554433\n" ":2: length '33554433' is out of range"
bad_trace number "${h}1e3,0,512\n" ":2: t_ms '1e3' is not a non-negative decimal number"
bad_trace fields "${h}0,0,512,9\n" ':2: more than 3 fields'
bad_trace order "${h}5,0,512\n4,0,512\n" ':3: t_ms 4.000 is before'

# The image: 64 MiB, sparse, with data in the blocks the trace reads.
"$replay" --make-image "$images/img.raw" --size 64M "$trace" >/dev/null ||
    fail "replay --make-image failed"
image_add img "$images/img.raw" >/dev/null

# ---- the cluster ----------------------------------------------------------

export THN_PREFIX=tst$$ THN_STATE_DIR=$tmpdir/cluster
cleanup_fn "$cluster" down
"$cluster" up 4 --rate 200 --origin-rate 200 >/dev/null || fail "cluster.sh up 4 failed"
"$cluster" status >/dev/null || fail "cluster.sh status: not up"
[ "$("$cluster" addr 3)" = 198.18.1.3 ] || fail "node 3's address: $("$cluster" addr 3)"
"$cluster" exec 2 ip route | grep -q default && fail "node 2 has a default route"

# start_thunderd (functions.sh) runs $THUNDERD: a wrapper runs the real one
# inside the namespace of $THN_NODE (all exec: the pid stays thunderd's).
real_thunderd=$THUNDERD
cat > "$tmpdir/thunderd-in-ns" <<EOF
#!/bin/sh
exec "$cluster" exec "\$THN_NODE" "$real_thunderd" "\$@"
EOF
chmod +x "$tmpdir/thunderd-in-ns"
THUNDERD=$tmpdir/thunderd-in-ns
token_file=$tmpdir/token
printf 'smoke-%s\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$token_file"
chmod 0600 "$token_file"
auth="Authorization: Bearer $(cat "$token_file")"

addr () { "$cluster" addr "$1"; }
in_ns () { local n=$1; shift; "$cluster" exec "$n" "$@"; }

export THN_NODE=origin
start_thunderd --origin --images "$images" --socket none \
    --listen "$(addr origin):10809" --control "$(addr origin):10810" \
    --token-file "$token_file"
for n in 1 2 3 4; do
    export THN_NODE=$n
    start_thunderd --cache "$tmpdir/cache$n" --socket "$tmpdir/node$n.sock" \
        --socket-group root --listen "$(addr $n):10809" \
        --control "$(addr $n):10810" --token-file "$token_file" --pool none \
        --readahead 0
done

# A binary tree: origin -> 1 -> {2, 3}, 2 -> 4; each node lists its
# ancestors up to the origin.
declare -A parents=([1]="origin" [2]="1 origin" [3]="1 origin" [4]="2 1 origin")
for n in 1 2 3 4; do
    ups=()
    for p in ${parents[$n]}; do ups+=(--upstream "nbd://$(addr "$p"):10809/img"); done
    out=$(in_ns "$n" "$THUNDERCTL" --node "http://$(addr $n):10810" \
          --token-file "$token_file" image attach img "${ups[@]}" 2>&1) ||
        fail "attach on node $n: $out"
done

# A trace that reads past the 64 MiB export: the message names the line.
bigtrace=$tmpdir/big.csv
printf 't_ms,offset,length\n0,0,4096\n1,67104768,8192\n' > "$bigtrace"
rc=0
out=$("$replay" "$bigtrace" "nbd+unix:///img?socket=$tmpdir/node1.sock" 2>&1) || rc=$?
[ "$rc" -eq 2 ] && grep -qF "$bigtrace:3: read 67104768+8192 ends past the export's size 67108864" <<<"$out" ||
    fail "replay past the export: exit $rc: $out"

# All four nodes replay the trace at once (started together), checked
# against the image file.
start_at=$(awk -v t="$EPOCHREALTIME" 'BEGIN { printf "%.3f", t + 1 }')
pids=()
for n in 1 2 3 4; do
    in_ns "$n" "$replay" --json --timeout 20 --start-at "$start_at" \
        --verify "$images/img.raw" --label "node$n" "$trace" \
        "nbd+unix:///img?socket=$tmpdir/node$n.sock" \
        > "$tmpdir/replay$n.json" 2> "$tmpdir/replay$n.err" &
    pids+=($!)
done
for i in 0 1 2 3; do
    wait "${pids[i]}" || fail "replay on node $((i + 1)) failed: $(cat "$tmpdir/replay$((i + 1)).err")"
done
for n in 1 2 3 4; do
    r=$tmpdir/replay$n.json
    [ "$(jq -r .reads "$r")" -eq "$(jq -r .reads <<<"$info")" ] &&
        [ "$(jq -r .verified "$r")" = true ] ||
        fail "node $n did not replay the whole trace: $(cat "$r")"
    echo "node $n: $(jq -r '"\(.elapsed_s) s, p50 \(.latency_us.p50) us, max \(.latency_us.max) us"' "$r")"
done

stats_of () {   # stats_of NODE: GET /v1/images/img from inside NODE's namespace
    in_ns "$1" curl -sf -H "$auth" "http://$(addr "$1"):10810/v1/images/img" ||
        fail "stats of img on $1"
}
sent=$(stats_of origin | jq -r .counters.served_remote_bytes)
echo "origin sent $sent bytes for W = $W"
[ "$sent" -ge "$W" ] && [ "$sent" -le $((W * 105 / 100)) ] ||
    fail "the origin sent $sent bytes; want W = $W to 1.05 W"
for n in 1 2 3 4; do
    s=$(stats_of "$n")
    echo "node $n: $(jq -r '"fetches \(.counters.fetches), joined \(.counters.joined), failovers \(.counters.failovers); from upstreams: blocks \([.upstreams[].blocks]), errors \([.upstreams[].errors])"' <<<"$s")"
    [ "$(jq -r .counters.fetch_failures <<<"$s")" -eq 0 ] ||
        fail "node $n: fetch failures: $s"
done

# A short emulation check (rates, CPU), where iperf3 exists: it must run
# and print its line; on a busy test host the verdict may be FAIL (exit 3).
if command -v iperf3 >/dev/null; then
    rc=0
    out=$("$cluster" check --seconds 1 --no-all 2>&1) || rc=$?
    echo "$out"
    { [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; } &&
        grep -q '^emulation check: 4 nodes, links 200 Mbit/s' <<<"$out" ||
        fail "cluster.sh check: exit $rc: $out"
else
    echo "iperf3 not installed: emulation check not run"
fi
# ---- bench/plan: the planner on the command line --------------------------

plan=${PLAN:-$TOP_BUILDDIR/bench/plan}
[ -x "$plan" ] || fail "bench/plan is not built: $plan"
out=$(printf 'n1\nn2\nn3\nn4\n' | "$plan" --origin-mbit 200 --node-mbit 200 --working-set "$W") ||
    fail "plan of 4 nodes failed: $out"
# Every node's list ends with the origin and starts with its parent.
awk '!/^#/ { if ($NF != "origin" || $3 != $4) exit 1; n++ } END { exit n != 4 }' <<<"$out" ||
    fail "plan: bad upstream lists: $out"
grep -q '^# c=[0-9]* k=[0-9]* depth=' <<<"$out" || fail "plan: no figures line: $out"
bad_plan ()   # bad_plan INPUT WANT-RC WANT-MESSAGE [ARGS...]
{
    local in=$1 want=$2 msg=$3 rc=0
    shift 3
    out=$(printf '%b' "$in" | "$plan" "$@" 2>&1) || rc=$?
    [ "$rc" -eq "$want" ] && grep -qF -- "$msg" <<<"$out" ||
        fail "plan $* < '$in': exit $rc, '$out'; want $want and '$msg'"
}
bad_plan 'a\nb\na\n' 1 'duplicate id "a"'
bad_plan 'a\nx/y\n' 2 "stdin:2: id 'x/y' is not"
bad_plan 'origin\n' 2 "stdin:1: 'origin' is reserved"
bad_plan '' 2 'stdin: no nodes'
bad_plan 'a\n' 2 "--node-mbit '-3' is not a plain decimal number" --node-mbit -3

# ---- bench/provision.sh in smoke mode -------------------------------------
# N=4, a 32 MiB synthetic image, all four strategies back to back on a
# cluster of its own (prefix tsp<pid>); nothing is written to bench/results.

prov=$tmpdir/provision.out
rc=0
THN_PREFIX=tsp$$ BENCH_RESULTS='' BENCH_TMPDIR=$tmpdir THUNDERD=$real_thunderd \
    THUNDERCTL=$THUNDERCTL REPLAY=$replay PLAN=$plan \
    "$TOP_SRCDIR/bench/provision.sh" --smoke > "$prov" 2> "$tmpdir/provision.err" || rc=$?
cat "$prov"
[ "$rc" -eq 0 ] || fail "provision.sh --smoke: exit $rc: $(tail -n 5 "$tmpdir/provision.err")"
row () { grep -F "| 4 | $1 " "$prov" || fail "provision.sh: no row for N=4, $1"; }
obw () { row "$1" | awk -F'|' '{ gsub(/ /, "", $6); print $6 }'; }
awk -v a="$(obw 'a thunder tree')" 'BEGIN { exit !(a >= 1 && a <= 1.05) }' ||
    fail "provision.sh: the tree's origin bytes are $(obw 'a thunder tree') W; want 1 to 1.05 W"
awk -v b="$(obw 'b all from origin')" 'BEGIN { exit !(b >= 3.99 && b <= 4.2) }' ||
    fail "provision.sh: all-from-origin sent $(obw 'b all from origin') W; want 4 W"
row 'c full copy' | grep -q 'whole image copied' || fail "provision.sh: the smoke copy was not whole"
row 'd thunder tree + prefetch' >/dev/null
grep -q '^- N=4: thunder ≤ 1.3 × T_lb' "$prov" || fail "provision.sh: no targets section"

exit 0
