#!/usr/bin/env bash
# thunder — a client that pipelines maximal reads and never reads the
# replies is stopped from reading, not served into memory (issue 12).
# Four such connections from 127.0.0.2 each send 16 READs of 32 MiB (2 GiB
# asked for; before the event-loop server this took an origin to 2.1 GB
# RSS): thunderd's RSS must stay within what the address may hold in
# flight (inflight-per-address) plus a small slack, and meanwhile a local
# client (Unix socket) and a TCP client from another address are served
# in full.  Then --send-timeout closes a connection whose reply makes no
# progress.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdcopy sha256sum

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
make_image "$img" 64
image_add base "$img" >/dev/null
raw=$TEST_TOOLS_DIR/nbd-raw

# rss_mib PID  — resident set of PID in MiB.
rss_mib ()
{
    echo $(( $(proc_status "$1" VmRSS) / 1024 ))
}

per_addr=64
start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen 127.0.0.1:@PORT@ --inflight-per-connection 32 \
    --inflight-per-address $per_addr --inflight-total 128 \
    --local-inflight-total 64 --send-timeout 120

# Warm up: both transports once, so the baseline holds the code and the
# workers' kept buffers.
copy_and_check "$(uri_unix base)" "$img"
copy_and_check "$(uri_tcp base)" "$img"
base=$(rss_mib "$thunderd_pid")
echo "baseline RSS: $base MiB"

NBD_RAW_SRC=127.0.0.2 timeout 60 "$raw" "127.0.0.1:$port" pipeline base 4 16 12 \
    >"$tmpdir/pipeline.out" 2>&1 &
ppid_=$!
for (( i = 0; i < 100; ++i )); do
    grep -q 'read nothing' "$tmpdir/pipeline.out" && break
    sleep 0.1
done
grep -q 'read nothing' "$tmpdir/pipeline.out" ||
    fail "pipeline client did not start: $(cat "$tmpdir/pipeline.out")"

# While only the hostile client runs: RSS within its address's budget.
limit=$(( base + per_addr + 16 ))
max=0
for (( i = 0; i < 20; ++i )); do
    r=$(rss_mib "$thunderd_pid")
    (( r > max )) && max=$r
    sleep 0.1
done
echo "RSS with 4 x 16 x 32 MiB READs unread: max $max MiB (limit $limit MiB)"
(( max <= limit )) ||
    fail "RSS $max MiB with unread replies, want <= $limit MiB (baseline $base + inflight-per-address $per_addr + 16)"

# Others are served meanwhile: local and TCP, each in full.
t0=$(now_ms)
copy_and_check "$(uri_unix base)" "$img"
copy_and_check "$(uri_tcp base)" "$img"
out=$("$raw" "127.0.0.1:$port" first-read base) || fail "first-read: $out"
echo "other clients served in $(( $(now_ms) - t0 )) ms; $out"
assert_thunderd_alive "the pipelining client"
r=$(rss_mib "$thunderd_pid")
# Everything in flight at once is bounded by the class budgets.
(( r <= base + 128 + 64 + 64 )) ||
    fail "RSS $r MiB, want <= baseline $base + 128 + 64 + 64"
wait "$ppid_" || fail "pipeline client: exit $?: $(cat "$tmpdir/pipeline.out")"
cat "$tmpdir/pipeline.out"
stop_thunderd
[ "$thunderd_status" -eq 0 ] || fail "thunderd exited $thunderd_status after SIGTERM"

# --send-timeout: a reply that makes no progress for 2 s ends its
# connection (and frees its budget).
start_thunderd --origin --images "$images" --socket none \
    --listen 127.0.0.1:@PORT@ --send-timeout 2
out=$(timeout 30 "$raw" "127.0.0.1:$port" pipeline base 1 4 5 2>&1) ||
    fail "pipeline: $out"
echo "$out"
grep -q '1 of 1 connections closed by the server' <<<"$out" ||
    fail "--send-timeout 2: a connection that read no reply for 5 s was not closed: $out"
grep -q 'made no progress' "$thunderd_log" ||
    fail "--send-timeout 2: no 'made no progress' in the log"
copy_and_check "$(uri_tcp base)" "$img"
