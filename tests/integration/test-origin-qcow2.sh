#!/usr/bin/env bash
# thunder — origin mode with a qcow2 image: "image add" detects qcow2, the
# export carries the qcow2 file's bytes, and QEMU's qcow2 driver on top of
# the NBD export sees the same disk as on the local file.  The image is
# added with --block-size 262144, which must come back as the preferred
# block size.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdinfo nbdcopy qemu-img qemu-io jq sha256sum

images=$tmpdir/images
mkdir "$images"
raw=$tmpdir/seed.raw
q=$images/disk.qcow2

# A 16 MiB generated raw image, converted to qcow2, grown to 1 GiB, with
# patterns written far into it.
make_image "$raw" 16
qemu-img convert -q -f raw -O qcow2 "$raw" "$q" || fail "qemu-img convert: exit $?"
qemu-img resize -q -f qcow2 "$q" 1G || fail "qemu-img resize: exit $?"
qemu-io -f qcow2 \
    -c 'write -P 0xaa 512M 1M' \
    -c 'write -P 0x55 1023M 64k' \
    -c 'write -P 0x3c 100M 4k' \
    "$q" >/dev/null || fail "qemu-io write: exit $?"
qsize=$(stat -c %s "$q")

out=$(image_add disk "$q" --block-size 262144)
grep -q "^image disk: format qcow2, size $qsize bytes, block size 262144," <<<"$out" ||
    fail "thunderctl image add disk: want format qcow2, size $qsize, block size 262144; got: $out"
fmt=$(jq -r .format "$images/disk.manifest.json")
[ "$fmt" = qcow2 ] || fail "manifest format is '$fmt', want qcow2"

start_thunderd --origin --images "$images" --socket "$tmpdir/sock" \
    --listen none
uri=$(uri_unix disk)

# The export is the qcow2 file itself.
json=$(nbdinfo --json "$uri") || fail "nbdinfo --json $uri: exit $?"
jq -e --argjson size "$qsize" \
    '.exports[0] | ."export-size" == $size and .block_size_preferred == 262144' \
    <<<"$json" >/dev/null ||
    fail "nbdinfo --json $uri: want size $qsize and preferred block size 262144; got: $json"
copy_and_check "$uri" "$q"

# QEMU probes qcow2 through NBD and sees the virtual disk.
info=$(qemu-img info --output=json "$uri") ||
    fail "qemu-img info $uri: exit $?"
jq -e '.format == "qcow2" and ."virtual-size" == 1073741824' <<<"$info" \
    >/dev/null ||
    fail "qemu-img info $uri: want format qcow2, virtual size 1073741824; got: $info"

out=$(qemu-img compare -f qcow2 -F qcow2 "$q" "$uri" 2>&1) ||
    fail "qemu-img compare $q $uri: exit $?: $out"
grep -q 'Images are identical' <<<"$out" || fail "qemu-img compare: $out"

# Guest-visible data through qcow2-over-NBD: the patterns written above,
# blocks of the converted raw image, and zeroes where nothing was written.
out=$(qemu-io -r -f qcow2 \
        -c 'read -P 0xaa 512M 1M' \
        -c 'read -P 0x55 1023M 64k' \
        -c 'read -P 0x3c 100M 4k' \
        -c "read -P $(pattern_byte 0) 0 64k" \
        -c "read -P $(pattern_byte 200) $(( 200 * BLOCK + 100 )) 1000" \
        -c 'read -P 0 17M 1M' \
        -c 'read -P 0 1000M 64k' \
        "$uri" 2>&1) || fail "qemu-io -f qcow2 $uri: exit $?: $out"
if grep -q 'Pattern verification failed' <<<"$out"; then
    fail "qemu-io -f qcow2 $uri: $(grep 'Pattern verification failed' <<<"$out")"
fi
nread=$(grep -c '^read [0-9]*/[0-9]* bytes at offset' <<<"$out" || true)
[ "$nread" -eq 7 ] || fail "qemu-io -f qcow2: $nread of 7 reads succeeded: $out"

assert_thunderd_alive "the qcow2 clients"
