#!/usr/bin/env bash
# thunder — node mode, verification: a parent serving corrupted bytes for
# some blocks (nbdkit over a tampered copy of the image).  Every corrupt
# block is caught, counted and fetched from the next upstream (the
# origin); what the client reads equals the image.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
requires_program nbdkit

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 8
image_add img "$images/img.raw" >/dev/null

# A copy with one byte flipped in blocks 3, 17, 40 and 127 (the last).
cp "$images/img.raw" "$tmpdir/tampered.raw"
tampered=(3 17 40 127)
for b in "${tampered[@]}"; do
    printf '\xff' | dd of="$tmpdir/tampered.raw" bs=1 seek=$((b * 65536 + 100)) \
        conv=notrunc status=none
    cmp -s <(dd if="$images/img.raw" bs=65536 skip=$b count=1 status=none) \
           <(dd if="$tmpdir/tampered.raw" bs=65536 skip=$b count=1 status=none) &&
        fail "block $b was not changed (pattern byte is 0xff?)"
done
nbdkit -f --readonly -U "$tmpdir/bad.sock" -e img file "$tmpdir/tampered.raw" &
bad_pid=$!
cleanup_fn kill "$bad_pid"
for _ in $(seq 50); do [ -S "$tmpdir/bad.sock" ] && break; sleep 0.1; done

start_origin "$images"
# No hold-off, so the bad parent is asked for every block and each corrupt
# block is caught on its own.
start_node 1 --fault-holdoff 0 --readahead 0
# The manifest comes from the first upstream that has the right version;
# nbdkit has no img@manifest export, so it comes from the origin.
"$THUNDERCTL" --node "${node_ctl[1]}" --token-file "$token_file" image attach img \
    --upstream "nbd+unix:///img?socket=$tmpdir/bad.sock" \
    --upstream "$origin_nbd/img" >/dev/null || fail "attach with a bad parent"

copy_and_check "nbd+unix:///img?socket=${node_sock[1]}" "$images/img.raw"

s=$(stats 1 img)
[ "$(counter .upstreams[0].verify_failures <<<"$s")" -eq ${#tampered[@]} ] ||
    fail "want ${#tampered[@]} verification failures at the bad parent: $s"
[ "$(counter .counters.failovers <<<"$s")" -eq ${#tampered[@]} ] ||
    fail "want ${#tampered[@]} failovers: $s"
[ "$(counter .upstreams[1].blocks <<<"$s")" -eq ${#tampered[@]} ] ||
    fail "want the ${#tampered[@]} corrupt blocks from the origin: $s"
grep -q "bad.sock" "${node_log[1]}" || fail "the bad upstream is not named in the log"
exit 0
