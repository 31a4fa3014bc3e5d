#!/usr/bin/env bash
# thunder — origin mode, the basics: a 64 MiB raw image served over the
# Unix socket and TCP is listed, described, copied bit for bit and read at
# random offsets by nbdinfo, nbdcopy, qemu-img and qemu-io; SIGTERM exits 0
# and removes the socket, and the clients it stopped with reads in flight
# get whole replies and an end of file, not a reset.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdinfo nbdcopy qemu-img qemu-io jq sha256sum
requires qemu-img --help

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
make_image "$img" 64
size=$(stat -c %s "$img")
image_add base "$img"
# A file without a manifest is not an export.
make_image "$images/other.img" 1

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen 127.0.0.1:@PORT@ --log-level debug

# --- nbdinfo --list -------------------------------------------------------
list=$(nbdinfo --list "nbd+unix:///?socket=$sock") ||
    fail "nbdinfo --list: exit $?"
grep -q 'export="base":' <<<"$list" ||
    fail "nbdinfo --list does not show export base: $list"
listed=$(nbdinfo --list --json "nbd+unix:///?socket=$sock" |
         jq -r '.exports[]["export-name"]' | sort | tr '\n' ' ')
[ "$listed" = "base " ] ||
    fail "nbdinfo --list --json: exports '$listed', want only 'base '"

# --- nbdinfo --json -------------------------------------------------------
check_info ()
{
    local uri=$1 json
    json=$(nbdinfo --json "$uri") || fail "nbdinfo --json $uri: exit $?"
    jq -e --argjson size "$size" '
        .exports | length == 1 and
        (.[0] | ."export-size" == $size and
                .is_read_only == true and
                .can_multi_conn == true and
                .can_flush == true and
                .can_cache == true and
                .can_trim == false and
                .can_zero == false and
                .block_size_minimum == 1 and
                .block_size_preferred == 65536 and
                .block_size_maximum == 33554432)' <<<"$json" >/dev/null ||
        fail "nbdinfo --json $uri: want size $size, read-only, multi-conn, flush, cache, no trim/zero, block sizes 1/65536/33554432; got: $json"
    jq -e '.structured == false' <<<"$json" >/dev/null ||
        fail "nbdinfo --json $uri: structured replies were negotiated (thunderd must refuse NBD_OPT_STRUCTURED_REPLY): $json"
}
check_info "$(uri_unix base)"
check_info "$(uri_tcp base)"

# --- nbdcopy over both transports -----------------------------------------
copy_and_check "$(uri_unix base)" "$img"
copy_and_check "$(uri_tcp base)" "$img"

# --- qemu-img compare -----------------------------------------------------
out=$(qemu-img compare -f raw -F raw "$img" "$(uri_unix base)" 2>&1) ||
    fail "qemu-img compare $img $(uri_unix base): exit $?: $out"
grep -q 'Images are identical' <<<"$out" ||
    fail "qemu-img compare: $out"
out=$(qemu-img compare -f raw -F raw "$img" "$(uri_tcp base)" 2>&1) ||
    fail "qemu-img compare $img $(uri_tcp base): exit $?: $out"

# --- qemu-io: 200 reads at random offsets, patterns predicted ------------
nblocks=$(( size / BLOCK ))
cmds=()
expected=()
RANDOM=42                       # replayable
while [ ${#expected[@]} -lt 200 ]; do
    i=$(( (RANDOM * 32768 + RANDOM) % nblocks ))
    is_random_block "$i" && continue
    o=$(( RANDOM % BLOCK ))
    len=$(( 1 + RANDOM % (BLOCK - o) ))
    off=$(( i * BLOCK + o ))
    cmds+=(-c "read -P $(pattern_byte "$i") $off $len")
    expected+=("$off:$len")
done
out=$(qemu-io -r -f raw "${cmds[@]}" "$(uri_unix base)" 2>&1) ||
    fail "qemu-io: exit $?: $(head -n 5 <<<"$out")"
if grep -q 'Pattern verification failed' <<<"$out"; then
    fail "qemu-io: data differs from the generator's pattern: $(grep -m 5 -B1 'Pattern verification failed' <<<"$out")"
fi
nread=$(grep -c '^read [0-9]*/[0-9]* bytes at offset' <<<"$out" || true)
[ "$nread" -eq 200 ] ||
    fail "qemu-io: $nread of 200 reads reported success: $(grep -v '^read\|^[0-9]* bytes\|^[0-9.]* [KMG]*i*B' <<<"$out" | head -n 5)"

# Whole adjacent blocks and the very last byte, over TCP.
last=$(( nblocks - 1 ))
out=$(qemu-io -r -f raw \
        -c "read -P $(pattern_byte 0) 0 65536" \
        -c "read -P $(pattern_byte 1) 65536 65536" \
        -c "read -P $(pattern_byte "$last") $(( size - 1 )) 1" \
        "$(uri_tcp base)" 2>&1) || fail "qemu-io over TCP: exit $?: $out"
if grep -q 'Pattern verification failed' <<<"$out"; then
    fail "qemu-io over TCP: $out"
fi

assert_thunderd_alive "the clients"

# --- SIGTERM: exit 0, socket removed --------------------------------------
# Stopped while two clients (Unix socket, TCP) have 16 reads of 1 MiB in
# flight and read nothing: once they read, every reply comes whole and the
# connection ends, not reset (closing a socket with requests left unread
# in it resets the connection, and a reset may cut a reply that was sent).
drain_log=$tmpdir/drain
"$TEST_TOOLS_DIR/nbd-raw" "$sock" drain base 16 1.5 > "$drain_log.unix" 2>&1 &
drain_unix=$!
"$TEST_TOOLS_DIR/nbd-raw" "127.0.0.1:$port" drain base 16 1.5 \
    > "$drain_log.tcp" 2>&1 &
drain_tcp=$!
for (( i = 0; i < 100; ++i )); do
    [ "$(cat "$drain_log.unix" "$drain_log.tcp" 2>/dev/null |
         grep -c '^drain: sent')" -eq 2 ] && break
    sleep 0.05
done
sleep 0.3 # the first replies fill the sockets, the rest are parked
stop_thunderd
wait "$drain_unix" || fail "SIGTERM, Unix client: $(cat "$drain_log.unix")"
wait "$drain_tcp" || fail "SIGTERM, TCP client: $(cat "$drain_log.tcp")"
cat "$drain_log.unix" "$drain_log.tcp"
[ "$thunderd_status" -eq 0 ] ||
    fail "thunderd exited with status $thunderd_status after SIGTERM, want 0"
[ ! -e "$sock" ] || fail "thunderd left its socket $sock behind after SIGTERM"
