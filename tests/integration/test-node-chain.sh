#!/usr/bin/env bash
# thunder — node mode, relay on cache along a chain origin → n1 → n2 → n3:
# nbdcopy through n3 equals the image; the origin sent each block at most
# once; a second read through n3 fetches nothing; n2's cache serves a new
# child without asking upstream again.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 24 12345
size=$(stat -c %s "$images/img.raw")
image_add img "$images/img.raw" >/dev/null

start_origin "$images"
start_node 1
start_node 2
start_node 3
attach 1 img "$origin_nbd"
attach 2 img "${node_nbd[1]}" "$origin_nbd"
attach 3 img "${node_nbd[2]}" "${node_nbd[1]}" "$origin_nbd"

copy_and_check "nbd+unix:///img?socket=${node_sock[3]}" "$images/img.raw"

# Each block at most once; identical blocks (the test image repeats its
# pattern blocks) may be reused from the node's own cache instead.
sent=$(origin_stats img | counter .counters.served_remote_bytes)
distinct=$(distinct_blocks "$images/img.raw")
[ "$sent" -le "$size" ] && [ "$sent" -ge $(( (distinct - 1) * 65536 )) ] ||
    fail "the origin sent $sent bytes for a $size-byte image with $distinct distinct blocks (want each block at most once)"
for n in 1 2 3; do
    s=$(stats $n img)
    [ "$(counter .counters.fetch_failures <<<"$s")" -eq 0 ] ||
        fail "node $n: fetch failures: $s"
    got=$(counter .upstreams[0].bytes <<<"$s")
    [ "$got" -le "$size" ] && [ "$got" -ge $(( (distinct - 1) * 65536 )) ] ||
        fail "node $n: got $got bytes from its parent, want each of the $distinct distinct blocks once"
done

# The cache marks every block valid (the last one short) within its
# commit interval.
for (( i = 0; i < 50; ++i )); do
    [ "$(stats 3 img | counter .counters.valid_cache_bytes)" -eq "$size" ] && break
    sleep 0.1
done
[ "$(stats 3 img | counter .counters.valid_cache_bytes)" -eq "$size" ] ||
    fail "node 3: valid cache bytes $(stats 3 img | counter .counters.valid_cache_bytes), want $size"

# Again through n3: all hits, nothing fetched anywhere.
before=$(stats 3 img | counter .counters.fetches)
copy_and_check "nbd+unix:///img?socket=${node_sock[3]}" "$images/img.raw"
after=$(stats 3 img | counter .counters.fetches)
[ "$after" -eq "$before" ] || fail "node 3 fetched $((after - before)) blocks on a cached read"
[ "$(origin_stats img | counter .counters.served_remote_bytes)" -eq "$sent" ] ||
    fail "the origin sent more on a cached read"

# A fourth node under n2: n2 relays from its cache, the origin sends nothing.
start_node 4
attach 4 img "${node_nbd[2]}" "$origin_nbd"
copy_and_check "${node_nbd[4]}/img" "$images/img.raw"
[ "$(origin_stats img | counter .counters.served_remote_bytes)" -eq "$sent" ] ||
    fail "the origin sent bytes for a child of a cached node"
[ "$(stats 2 img | counter .counters.fetches)" -le "$(stats 2 img | counter .blocks)" ] ||
    fail "node 2 fetched a block twice: $(stats 2 img)"

# The same through thunderctl: stats (table and JSON), list, detach.
ctl () { "$THUNDERCTL" --node "${node_ctl[3]}" --token-file "$token_file" "$@"; }
out=$(ctl image stats img) || fail "thunderctl image stats: $out"
grep -q "$(stats 3 img | counter .version)" <<<"$out" ||
    fail "thunderctl image stats does not show the version: $out"
[ "$(ctl image stats img --json | jq -r .counters.fetches)" = "$(stats 3 img | counter .counters.fetches)" ] ||
    fail "thunderctl image stats --json differs from the endpoint"
[ "$(ctl image list --json | jq -r '.images[].name')" = img ] ||
    fail "thunderctl image list: $(ctl image list --json)"
ctl image detach img >/dev/null || fail "thunderctl image detach"
ctl image stats img >/dev/null 2>&1 && fail "stats of a detached image succeeded"
nbdinfo "nbd+unix:///img?socket=${node_sock[3]}" >/dev/null 2>&1 &&
    fail "a detached image is still served"
exit 0
