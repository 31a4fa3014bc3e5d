#!/usr/bin/env bash
# thunder — node mode, upstream outage (--stall-timeout): origin → n1, the
# node's only upstream.
#  - the origin killed: a cached block is still served at once; an uncached
#    one fails with EIO at the bound (3 s here: not before, not much
#    after); the node stays healthy and counts the stall and the outage;
#  - the origin killed and started again within the bound: a read started
#    during the outage returns the image's exact bytes, no error; the
#    outage's end is logged with its duration;
#  - SIGTERM while a read waits out an outage: the node exits at once, 0.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import nbd' 2>/dev/null ||
    skip "Debian's python3 with the nbd module (python3-libnbd) is missing"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 4
image_add img "$images/img.raw" >/dev/null

start_origin "$images"
origin_port=${origin_nbd##*:}
start_node 1 --readahead 0 --stall-timeout 3 --fetch-timeout 500
attach 1 img "$origin_nbd"

# read_block B [EXPECT]  — reads block B through node 1; prints the seconds
# it took and "ok" or the error.  The bytes must be the image's.
read_block ()
{
    IMG=$images/img.raw B=$1 /usr/bin/python3 -m nbd \
        -u "nbd+unix:///img?socket=${node_sock[1]}" -c '
import os, time
b = int(os.environ["B"])
img = open(os.environ["IMG"], "rb")
img.seek(b * 65536)
t = time.monotonic()
try:
    data = h.pread(65536, b * 65536)
    assert data == img.read(65536), "block %d differs" % b
    print("%.3f ok" % (time.monotonic() - t))
except nbd.Error as e:
    print("%.3f %s" % (time.monotonic() - t, e.string))
'
}

# restart_origin  — the origin again, on the port the node knows.
restart_origin ()
{
    start_thunderd --origin --images "$images" --socket "$tmpdir/origin.sock" \
        --listen "127.0.0.1:$origin_port" --control 127.0.0.1:0 \
        --token-file "$token_file"
    origin_pid=$thunderd_pid
}

read -r t res < <(read_block 0)
[ "$res" = ok ] || fail "block 0 with the origin up: $res"

# ---- every upstream gone for longer than the bound -------------------------------

kill -KILL "$origin_pid"
read -r t res < <(read_block 0)
[ "$res" = ok ] || fail "cached block 0 with the origin down: $res"
awk -v t="$t" 'BEGIN { exit !(t < 0.5) }' || fail "cached block 0 took $t s"

read -r t res < <(read_block 5)
echo "uncached block, origin down: $res after $t s" >&2
[[ "$res" == *"Input/output error"* ]] || fail "block 5 with the origin down: $res"
awk -v t="$t" 'BEGIN { exit !(t >= 2.9 && t <= 4.0) }' ||
    fail "block 5 failed after $t s, not at the 3 s bound"
_pid_running "${node_pid[1]}" || fail "node 1 died"
s=$(stats 1 img)
[ "$(counter .counters.stall_failures <<<"$s")" -eq 1 ] &&
    [ "$(counter .counters.stalls <<<"$s")" -eq 1 ] &&
    [ "$(counter .counters.outages <<<"$s")" -eq 1 ] ||
    fail "stall counters after a stall ran out: $(jq -c .counters <<<"$s")"
[ "$(grep -c 'no upstream of 1 can deliver' "${node_log[1]}")" -eq 1 ] ||
    fail "the outage's start is not logged once: $(grep -c 'no upstream of 1' "${node_log[1]}")"

# ---- the origin back within the bound ------------------------------------------

read_block 9 > "$tmpdir/read9" &
reader=$!
sleep 1.5
restart_origin
wait "$reader" || fail "reader: exit $?"
read -r t res < "$tmpdir/read9"
echo "uncached block, origin back after 1.5 s: $res after $t s" >&2
[ "$res" = ok ] || fail "block 9 while the origin restarted: $res"
s=$(stats 1 img)
[ "$(counter .counters.stall_failures <<<"$s")" -eq 1 ] &&
    [ "$(counter .counters.stalls <<<"$s")" -eq 2 ] &&
    [ "$(counter .counters.stalled_now <<<"$s")" -eq 0 ] ||
    fail "stall counters after the origin came back: $(jq -c .counters <<<"$s")"
grep -q 'delivers again: the outage lasted' "${node_log[1]}" ||
    fail "the outage's end is not logged"
read -r t res < <(read_block 12)
[ "$res" = ok ] || fail "block 12 after the outage: $res"

# ---- stopping while a read waits ---------------------------------------------------

kill -KILL "$origin_pid"
read_block 14 > "$tmpdir/read14" &
reader=$!
sleep 1
t0=$(now_ms)
thunderd_pid=${node_pid[1]}
stop_thunderd
took=$(( $(now_ms) - t0 ))
wait "$reader" || true
echo "SIGTERM with a read waiting: exited $thunderd_status in $took ms; the read: $(cat "$tmpdir/read14")" >&2
[ "$thunderd_status" -eq 0 ] || fail "the node exited $thunderd_status"
[ "$took" -lt 1500 ] || fail "the node took $took ms to stop"
exit 0
