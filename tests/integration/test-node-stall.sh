#!/usr/bin/env bash
# thunder — node mode, upstream outage (--stall-timeout): origin → n1, the
# node's only upstream.
#  - the origin killed: a cached block is still served at once; an uncached
#    one fails with EIO at the bound (3 s here: not before, not much
#    after); the node stays healthy and counts the stall and the outage;
#  - the origin killed and started again within the bound: a read started
#    during the outage returns the image's exact bytes, no error; the
#    outage's end is logged with its duration;
#  - SIGTERM while a read waits out an outage: the node exits at once, 0,
#    and the read gets no error reply (its connection is shut down);
#  - one NBD connection, the origin stopped (SIGSTOP): a read of an
#    uncached block waits, and a cached read pipelined behind it on the
#    same connection is answered at once (no head-of-line blocking), out
#    of order; both with the image's bytes once the origin resumes.
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

# ---- one connection: a miss does not hold up the cached reads behind it ----

kill -STOP "$origin_pid"
IMG=$images/img.raw ORIGIN=$origin_pid /usr/bin/python3 -m nbd \
    -u "nbd+unix:///img?socket=${node_sock[1]}" -c '
import os, signal, sys, time
img = open(os.environ["IMG"], "rb").read()
B = 65536
def done(c):
    return h.aio_command_completed(c)
def wait(cs, limit):
    end = time.monotonic() + limit
    while not all(c in finished for c in cs) and time.monotonic() < end:
        h.poll(10)
        for c in list(pending):
            if done(c):
                finished[c] = time.monotonic()
                pending.remove(c)
finished, pending = {}, set()
miss, hit = nbd.Buffer(B), nbd.Buffer(B)
t0 = time.monotonic()
cmiss = h.aio_pread(miss, 20 * B)
pending.add(cmiss)
wait([cmiss], 0.3)
assert cmiss in pending, "block 20 was answered with the origin stopped"
t1 = time.monotonic()
chit = h.aio_pread(hit, 0)
pending.add(chit)
wait([chit], 2.0)
took = finished.get(chit, time.monotonic()) - t1
still = cmiss in pending
print("one connection, origin stopped: cached read answered in %.3f s, sent"
      " %.3f s after a miss, which was still pending: %s"
      % (took, t1 - t0, still), file=sys.stderr)
wait([cmiss], 0.3)
os.kill(int(os.environ["ORIGIN"]), signal.SIGCONT)
t2 = time.monotonic()
wait([cmiss], 10.0)
assert cmiss in finished, "the miss did not complete after the origin resumed"
print("the miss answered %.3f s after the origin resumed (%.3f s in all)"
      % (finished[cmiss] - t2, finished[cmiss] - t0), file=sys.stderr)
assert chit in finished and took <= 0.5, \
    "the cached read waited %.3f s behind the miss" % took
assert still and finished[cmiss] > t2, "the miss did not wait for the origin"
assert hit.to_bytearray() == img[0:B], "cached block 0 differs"
assert miss.to_bytearray() == img[20 * B:21 * B], "block 20 differs"
' || { kill -CONT "$origin_pid"; fail "a miss held up a cached read on its connection"; }

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
# The waiting read is failed by the stop: its connection must be shut
# down without an error reply, so that QEMU resends it after reconnecting.
[[ "$(cat "$tmpdir/read14")" != *"Input/output error"* ]] ||
    fail "the stop answered the waiting read with an error"
exit 0
