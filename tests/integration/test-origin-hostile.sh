#!/usr/bin/env bash
# thunder — origin mode survives hostile clients (DESIGN: "survives any byte
# sequence a client sends").  After each nbd-raw scenario thunderd must be
# alive and a good client (nbdcopy) must get the image bit for bit.  Then:
# the handshake timeout drops an idle negotiating client (and spares one
# that finished the handshake), and --local-max-handshakes closes the extra
# negotiating connection at once, before the greeting.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdcopy qemu-io sha256sum

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
make_image "$img" 8
image_add base "$img" >/dev/null
raw=$TEST_TOOLS_DIR/nbd-raw

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen 127.0.0.1:@PORT@ --handshake-timeout 2

# survives DESCRIPTION  — thunderd alive, a good client gets correct data.
survives ()
{
    assert_thunderd_alive "$1"
    copy_and_check "$(uri_unix base)" "$img"
}

# scenario ADDR ARGS...  — runs nbd-raw ADDR ARGS; it must pass.
scenario ()
{
    local out
    out=$(timeout 30 "$raw" "$@" 2>&1) ||
        fail "nbd-raw $*: exit $?: $out"
    echo "nbd-raw $*: $out"
    survives "nbd-raw $*"
}

tcp=127.0.0.1:$port

# --- garbage ---------------------------------------------------------------
for n in 1 3 17 1000 100000; do
    scenario "$sock" garbage "$n"
done
scenario "$tcp" garbage 4096
# Garbage straight from /dev/urandom through bash's /dev/tcp as well.
exec {fd}<>"/dev/tcp/127.0.0.1/$port"
head -c 65536 /dev/urandom 1>&"$fd" || true   # the server may hang up first
exec {fd}>&-
survives "/dev/urandom through /dev/tcp"

# Twenty garbage clients at once.
declare -a gpids=()
for k in $(seq 1 20); do
    timeout 30 "$raw" "$sock" garbage $(( k * 97 )) >/dev/null 2>&1 &
    gpids+=($!)
done
for pid in "${gpids[@]}"; do
    wait "$pid" || fail "a client of 20 concurrent garbage clients saw the connection left open or hung (exit $?)"
done
survives "20 concurrent garbage clients"

# --- broken handshakes -----------------------------------------------------
scenario "$sock" truncated-greeting
scenario "$tcp" truncated-greeting
scenario "$sock" partial-option
scenario "$sock" opt-length 100000
scenario "$sock" opt-length 2147483647
scenario "$sock" opt-length 4294967295

# --- valid handshake, then bad requests ------------------------------------
scenario "$sock" bad-magic base
scenario "$tcp" bad-magic base
scenario "$sock" garbage-requests base 4096
scenario "$tcp" garbage-requests base 100000
scenario "$sock" huge-read base
scenario "$tcp" huge-read base
scenario "$sock" read-hang-up base
scenario "$tcp" read-hang-up base
scenario "$sock" huge-write base

# --- handshake timeout (2 s) ------------------------------------------------
out=$(timeout 30 "$raw" "$sock" idle 3.5 2>&1) ||
    fail "an idle negotiating client was not dropped within 3.5 s with --handshake-timeout 2: $out"
echo "$out"
secs=$(sed -n 's/.*closed by server after \([0-9.]*\) s.*/\1/p' <<<"$out")
[ -n "$secs" ] || fail "nbd-raw idle: unexpected output: $out"
awk -v s="$secs" 'BEGIN { exit !(s >= 1.5) }' ||
    fail "an idle negotiating client was dropped after $secs s, before the 2 s handshake timeout"
out=$(timeout 30 "$raw" "$tcp" idle 3.5 2>&1) ||
    fail "an idle negotiating TCP client was not dropped within 3.5 s: $out"
survives "the handshake timeout"

# A client past the handshake is not subject to it: idle 3 s, then read.
out=$(timeout 30 qemu-io -r -f raw -c 'sleep 3000' \
        -c "read -P $(pattern_byte 3) $(( 3 * BLOCK )) 65536" \
        "$(uri_unix base)" 2>&1) ||
    fail "qemu-io: a read 3 s after the handshake failed: $out"
if grep -q 'Pattern verification failed' <<<"$out" ||
   ! grep -q '^read 65536/65536 bytes' <<<"$out"; then
    fail "qemu-io: a read 3 s after the handshake (past the handshake timeout) failed: $out"
fi

stop_thunderd
[ "$thunderd_status" -eq 0 ] ||
    fail "thunderd exited $thunderd_status after SIGTERM, want 0"

# --- cap on negotiating connections ----------------------------------------
start_thunderd --origin --images "$images" --socket "$tmpdir/sock2" \
    --listen none --local-max-handshakes 4 --handshake-timeout 3
# 6 connections finish the handshake first (they must not count); then
# 4 get the greeting and idle; the 5th negotiating one must be closed at
# once without a byte; the 4 are dropped by the 3 s timeout; the 6 still
# serve reads.
out=$(timeout 30 "$raw" "$sock" cap 4 5 base 6 2>&1) ||
    fail "--local-max-handshakes 4: $out"
echo "$out"
survives "the --local-max-handshakes cap"
