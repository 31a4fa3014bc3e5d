#!/usr/bin/env bash
# thunder — origin mode under 32 concurrent clients, all started at once:
# 24 nbd-verify clients (random reads, 8 in flight each, every byte checked
# against the file) and 8 nbdcopy clients, half over the Unix socket and
# half over TCP.  Every client must get correct data within 45 s.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdcopy sha256sum

images=$tmpdir/images
mkdir "$images"
img=$images/base.img
make_image "$img" 64 12345     # an unaligned tail too
image_add base "$img" >/dev/null
want=$(sha256 "$img")

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen 127.0.0.1:@PORT@ --threads 4

declare -a pids=() what=()
for k in $(seq 1 32); do
    if (( k % 2 )); then uri=$(uri_unix base); else uri=$(uri_tcp base); fi
    if (( k % 4 == 0 )); then
        (
            timeout 45 nbdcopy -- "$uri" "$tmpdir/copy.$k" ||
                { echo "nbdcopy $uri: exit $?"; exit 1; }
            if [ "$(sha256 "$tmpdir/copy.$k")" != "$want" ]; then
                echo "nbdcopy $uri: SHA-256 differs from $img"
                exit 1
            fi
            rm -f "$tmpdir/copy.$k"
        ) >"$tmpdir/client.$k.log" 2>&1 &
        what[k]="nbdcopy $uri"
    else
        timeout 45 "$TEST_TOOLS_DIR/nbd-verify" "$uri" "$img" 300 8 "$k" \
            >"$tmpdir/client.$k.log" 2>&1 &
        what[k]="nbd-verify $uri $img 300 8 $k"
    fi
    pids[k]=$!
done

failed=0
for k in $(seq 1 32); do
    if ! wait "${pids[k]}"; then
        echo "client $k failed: ${what[k]}: $(tail -n 5 "$tmpdir/client.$k.log")" >&2
        failed=$(( failed + 1 ))
    fi
done
[ "$failed" -eq 0 ] || fail "$failed of 32 concurrent clients got errors or wrong data"

assert_thunderd_alive "32 concurrent clients"
# And the server still answers afterwards.
"$TEST_TOOLS_DIR/nbd-verify" "$(uri_unix base)" "$img" 50 4 99 >/dev/null ||
    fail "a client after the 32 concurrent ones got errors or wrong data"
