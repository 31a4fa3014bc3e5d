#!/usr/bin/env bash
# thunder — floods of TCP connections cannot refuse or slow a local client
# (issue 12).  1,100 connections from 127.0.0.2 finish the handshake and
# idle, and 127.0.0.3 keeps 300 half-open ones (never answering the
# greeting): a Unix-socket client and a fresh TCP client from 127.0.0.1
# each get their first read within 2 s, every time, and thunderd's thread
# count stays bounded (it does not grow with the connections).  Then
# --idle-timeout closes an idle TCP connection, not a local one.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdcopy
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= 4096 )) || skip "open files limit $(ulimit -n) < 4096"

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
make_image "$img" 8
image_add base "$img" >/dev/null
raw=$TEST_TOOLS_DIR/nbd-raw

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen 127.0.0.1:@PORT@ --max-connections 2000 \
    --max-connections-per-address 1200 --handshake-timeout 3
tcp=127.0.0.1:$port
idle_threads=$(proc_status "$thunderd_pid" Threads)

NBD_RAW_SRC=127.0.0.2 timeout 120 "$raw" "$tcp" hold base 1100 25 \
    >"$tmpdir/hold.out" 2>&1 &
hold_pid=$!
for (( i = 0; i < 300; ++i )); do
    grep -q 'finished the handshake' "$tmpdir/hold.out" && break
    _pid_running "$hold_pid" || fail "hold: $(cat "$tmpdir/hold.out")"
    sleep 0.1
done
grep -q 'finished the handshake' "$tmpdir/hold.out" ||
    fail "1100 idle connections were not all set up in 30 s: $(cat "$tmpdir/hold.out")"
cat "$tmpdir/hold.out"
NBD_RAW_SRC=127.0.0.3 timeout 120 "$raw" "$tcp" half-open 300 15 \
    >"$tmpdir/half.out" 2>&1 &
half_pid=$!
sleep 1

# bound: main, signal, 16 + 16 workers, 64 + 16 handshake threads.
bound=120
maxthreads=0
for round in 1 2 3 4 5; do
    for addr in "$sock" "$tcp"; do
        out=$(timeout 10 "$raw" "$addr" first-read base 2>&1) ||
            fail "round $round: first read over $addr failed during the floods: $out"
        secs=${out#first-read: }
        secs=${secs% s}
        awk -v s="$secs" 'BEGIN { exit !(s <= 2.0) }' ||
            fail "round $round: first read over $addr took $secs s (> 2 s) during the floods"
        echo "round $round: $addr: $out"
    done
    t=$(proc_status "$thunderd_pid" Threads)
    (( t > maxthreads )) && maxthreads=$t
    sleep 1
done
copy_and_check "$(uri_unix base)" "$img"
echo "threads: $idle_threads idle, at most $maxthreads with 1100 idle + 300 half-open connections (bound $bound); RSS $(proc_status "$thunderd_pid" VmRSS) kB"
(( maxthreads <= bound )) ||
    fail "thunderd ran $maxthreads threads with 1100 idle connections, want <= $bound"
grep -q 'max-handshakes-per-address' "$thunderd_log" ||
    fail "the half-open flood from one address was never refused (max-handshakes-per-address)"
nrefused=$(grep -c 'connection refused' "$thunderd_log" || true)
(( nrefused <= 5 )) ||
    fail "$nrefused 'connection refused' lines: the flood floods the log"
kill "$hold_pid" "$half_pid" 2>/dev/null || true
wait "$hold_pid" "$half_pid" 2>/dev/null || true
assert_thunderd_alive "the floods"
stop_thunderd
[ "$thunderd_status" -eq 0 ] || fail "thunderd exited $thunderd_status after SIGTERM"

# --idle-timeout 2: an idle TCP connection is closed; a local one is not.
start_thunderd --origin --images "$images" --socket "$tmpdir/sock2" \
    --listen 127.0.0.1:@PORT@ --idle-timeout 2
out=$(timeout 30 "$raw" "127.0.0.1:$port" idle-open base 5 2>&1) ||
    fail "--idle-timeout 2: an idle TCP connection was not closed within 5 s: $out"
echo "$out"
secs=$(sed -n 's/.*after \([0-9.]*\) s.*/\1/p' <<<"$out")
awk -v s="$secs" 'BEGIN { exit !(s >= 1.5 && s <= 4.0) }' ||
    fail "--idle-timeout 2: closed after $secs s, want 2-3 s"
if out=$(timeout 30 "$raw" "$sock" idle-open base 4 2>&1); then
    fail "--idle-timeout 2 closed a local (Unix socket) connection: $out"
fi
grep -q 'kept an idle connection open' <<<"$out" ||
    fail "idle-open over the Unix socket: $out"
echo "local connection kept open for 4 s: ok"
