#!/usr/bin/env bash
# thunder — node mode, transfer on demand: a boot-like read of a few
# scattered blocks (offsets from a real boot trace, shared/traces) moves
# exactly those blocks across the network (identical ones once), with readahead off; with
# readahead on, a sequential reader gets its next blocks ahead of time.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import nbd' 2>/dev/null ||
    skip "Debian's python3 with the nbd module (python3-libnbd) is missing"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 64
image_add img "$images/img.raw" >/dev/null

start_origin "$images"
start_node 1 --readahead 0
attach 1 img "$origin_nbd"

# The first reads of a real guest boot, folded into the 64 MiB image.
# (tests/data/boot-trace-a.csv is shared/traces/trace-a.csv: see its README.)
trace=$(dirname "$0")/../data/boot-trace-a.csv
[ -f "$trace" ] || fail "no boot trace at $trace"
awk -F, -v size=$((64 * 1048576)) 'NR > 1 && NR <= 200 {
    off = $2 % size; len = $3; if (off + len > size) off = size - len
    print off, len }' "$trace" > "$tmpdir/reads"
want_blocks=$(awk '{ for (b = int($1 / 65536); b <= int(($1 + $2 - 1) / 65536); b++) print b }' \
    "$tmpdir/reads" | sort -un | wc -l)

IMG=$images/img.raw READS=$tmpdir/reads \
/usr/bin/python3 -m nbd -u "nbd+unix:///img?socket=${node_sock[1]}" -c '
import os
img = open(os.environ["IMG"], "rb")
for line in open(os.environ["READS"]):
    off, n = map(int, line.split())
    img.seek(off)
    assert h.pread(n, off) == img.read(n), "mismatch at %d" % off
' || fail "boot-like reads through node 1 failed"

# Exactly the blocks touched, except that a block identical to one the
# node holds already (the test image repeats its pattern blocks) is
# reused rather than fetched: at least one fetch per distinct content.
s=$(stats 1 img)
fetches=$(counter .counters.fetches <<<"$s")
reused=$(jq -r .cache.reused_blocks <<<"$s")
# shellcheck disable=SC2046
distinct=$(distinct_blocks "$images/img.raw" $(awk '{ for (b = int($1 / 65536); b <= int(($1 + $2 - 1) / 65536); b++) print b }' "$tmpdir/reads" | sort -un))
[ "$((fetches + reused))" -eq "$want_blocks" ] && [ "$fetches" -ge "$distinct" ] ||
    fail "node 1 fetched $fetches blocks and reused $reused, the reads touch $want_blocks ($distinct distinct): $s"
[ "$(origin_stats img | counter .counters.served_remote_bytes)" -eq $((fetches * 65536)) ] ||
    fail "the origin sent $(origin_stats img | counter .counters.served_remote_bytes) bytes, want $((fetches * 65536))"

# Readahead: a sequential reader on a fresh node gets blocks fetched ahead.
start_node 2 --readahead 4
attach 2 img "$origin_nbd"
/usr/bin/python3 -m nbd -u "nbd+unix:///img?socket=${node_sock[2]}" -c '
for i in range(16):
    h.pread(65536, i * 65536)
' || fail "sequential reads through node 2 failed"
s=$(stats 2 img)
[ "$(counter .counters.prefetches <<<"$s")" -gt 0 ] || fail "no readahead: $s"
[ "$(counter .counters.hits <<<"$s")" -gt 0 ] || fail "readahead gave no hits: $s"
exit 0
