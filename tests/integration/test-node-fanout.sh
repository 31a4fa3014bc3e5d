#!/usr/bin/env bash
# thunder — node mode, fan-out origin → n1 → {n2 … n6}, all read at once:
# every copy equals the image and the origin sends each block at most once
# (n1's single flight joins its children's concurrent misses).
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 16
size=$(stat -c %s "$images/img.raw")
image_add img "$images/img.raw" >/dev/null

start_origin "$images"
for n in 1 2 3 4 5 6; do start_node $n --threads 4; done
attach 1 img "$origin_nbd"
for n in 2 3 4 5 6; do attach $n img "${node_nbd[1]}" "$origin_nbd"; done

pids=()
for n in 2 3 4 5 6; do
    nbdcopy "nbd+unix:///img?socket=${node_sock[$n]}" "$tmpdir/copy$n" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "an nbdcopy failed"; done
want=$(sha256 "$images/img.raw")
for n in 2 3 4 5 6; do
    [ "$(sha256 "$tmpdir/copy$n")" = "$want" ] || fail "copy through node $n differs"
done

sent=$(origin_stats img | counter .counters.served_remote_bytes)
[ "$sent" -le "$size" ] ||
    fail "the origin sent $sent bytes for a $size-byte image (a block went twice)"
s1=$(stats 1 img)
# At most once each (children reuse identical blocks of their own cache,
# so some blocks may never reach node 1).
[ "$(counter .counters.fetches <<<"$s1")" -le "$(counter .blocks <<<"$s1")" ] ||
    fail "node 1 fetched some block twice: $s1"
distinct=$(distinct_blocks "$images/img.raw")
[ "$(counter .counters.served_remote_bytes <<<"$s1")" -ge $((5 * (distinct - 1) * 65536)) ] ||
    fail "node 1 relayed less than five copies of the distinct blocks: $s1"
exit 0
