#!/usr/bin/env bash
# thunder — node cache capacity, eviction and reuse (docs/node.md "Cache
# capacity"):
#   cap       8 images' working sets read in turn through a node capped at
#             3 working sets: exact bytes, the cache never above cap + slack
#   load      random reads with many requests in flight while eviction runs
#             on the very image being read: exact bytes
#   crash     kill -9 while reading and evicting, restart, full read exact,
#             no evicted block valid (CACHE_CRASH_ROUNDS, default 10; the
#             100-round model is blkcache-crash-kill)
#   update    v2 with 5% of its blocks changed: upstream bytes ≤ 1.1 × the
#             changed bytes, for the node and for a child reading v2 first
#   zeros     zero blocks move no bytes upstream and take no cache space
#   twins     two images of equal blocks read at once: the origin sends
#             each block once (single flight across images)
#   crossed   two nodes relaying those two images to each other at once: no
#             wait cycle (no failover, no upstream error)
#   cache     thunderctl cache show lists v1 unattached; cache gc removes it
#   errors    attach with no room: 507 insufficient_storage; a full cache
#             while serving: exact bytes, one log line per interval
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"

MiB=1048576
images=$tmpdir/images
mkdir "$images"
for i in 1 2 3 4 5 6 7 8; do
    head -c $((4 * MiB)) /dev/urandom > "$images/img$i.raw"
    image_add "img$i" "$images/img$i.raw" >/dev/null
done
head -c $((32 * MiB)) /dev/urandom > "$images/big.raw" # for "load"
image_add big "$images/big.raw" >/dev/null
start_origin "$images"

# du of a cache in bytes allocated (files may vanish while it runs).
cache_du () { du -sB1 "$1" 2>/dev/null | cut -f1 || true; }

# ---- cap ---------------------------------------------------------------
cap=$((3 * 4 * MiB))
slack=$MiB # blocks being stored at that instant, directories, records
start_node 1 --cache-max "$cap"
for i in 1 2 3 4 5 6 7 8; do attach 1 "img$i" "$origin_nbd"; done
( while :; do cache_du "${node_cache[1]}"; sleep 0.02; done ) \
    > "$tmpdir/samples" 2>/dev/null &
sampler=$!
cleanup_fn kill "$sampler"
for round in 1 2; do
    for i in 1 2 3 4 5 6 7 8; do
        copy_and_check "nbd+unix:///img$i?socket=${node_sock[1]}" \
            "$images/img$i.raw"
    done
done
kill "$sampler"
wait "$sampler" 2>/dev/null || true
max=$(sort -n "$tmpdir/samples" | tail -n1)
nsamples=$(wc -l < "$tmpdir/samples")
[ "$max" -le $((cap + slack)) ] ||
    fail "the cache reached $max bytes, cap $cap + slack $slack"
s=$(stats 1 img1)
[ "$(jq -r .cache.evicted_blocks <<<"$s")" -gt 0 ] ||
    fail "nothing of img1 was evicted: $s"
[ "$(jq -r .cache.cap_bytes <<<"$s")" -eq "$cap" ] || fail "cap_bytes: $s"
echo "cap: $nsamples samples, at most $max bytes for a cap of $cap"

# ---- load: eviction on the image being read --------------------------
# A 32 MiB image through a 2 MiB cache: random reads leave most cached
# blocks unread for longer than eviction's guard (RECLAIM_GUARD_MS), so
# eviction runs under the reads.  (With img1, 4 MiB, a quiet machine read
# every cached block again within the guard: all of them hot, nothing
# evicted until the reads ended -- by design, but not this case.)
start_node 2 --cache-max $((2 * MiB))
attach 2 big "$origin_nbd"
"$TEST_TOOLS_DIR/nbd-verify" "nbd+unix:///big?socket=${node_sock[2]}" \
    "$images/big.raw" 400 16 "$RANDOM" ||
    fail "random reads under eviction returned wrong bytes"
s=$(stats 2 big)
[ "$(jq -r .cache.evicted_blocks <<<"$s")" -gt 0 ] ||
    fail "no eviction ran under the reads: $s"
echo "load: $(jq -r .cache.evicted_blocks <<<"$s") blocks evicted under reads"
stop_thunderd

# ---- crash ---------------------------------------------------------------
rounds=${CACHE_CRASH_ROUNDS:-10}
for (( r = 1; r <= rounds; r++ )); do
    start_node 3 --cache-max $((2 * MiB)) --commit-interval 5
    [ "$r" -eq 1 ] && attach 3 img2 "$origin_nbd"
    "$TEST_TOOLS_DIR/nbd-verify" "nbd+unix:///img2?socket=${node_sock[3]}" \
        "$images/img2.raw" 100000 16 "$RANDOM" >/dev/null 2>&1 &
    reader=$!
    sleep "0.$(( RANDOM % 8 + 2 ))"
    kill9_node 3
    wait "$reader" 2>/dev/null || true
    start_node 3 --cache-max $((2 * MiB))
    copy_and_check "nbd+unix:///img2?socket=${node_sock[3]}" "$images/img2.raw"
    s=$(stats 3 img2)
    [ "$(counter .counters.cache_corrupt_evicted <<<"$s")" -eq 0 ] ||
        fail "crash round $r: a block marked valid was not the image's: $s"
    stop_thunderd
done
echo "crash: $rounds kill -9 rounds, every read exact, no evicted block valid"

# ---- update: v2 with 5% of the blocks changed ----------------------------
head -c $((16 * MiB)) /dev/urandom > "$images/os.raw"
image_add os "$images/os.raw" >/dev/null
rescan_origin os
start_node 4
start_node 5
attach 4 os "$origin_nbd"
copy_and_check "nbd+unix:///os?socket=${node_sock[4]}" "$images/os.raw"
v1=$(origin_stats os | jq -r .version)

nblocks=256
new_version "$images/os.raw" 5
changed=$changed_blocks
image_add os "$images/os.raw" >/dev/null
rescan_origin os "$v1"
sent0=$(origin_stats os | counter .counters.served_remote_bytes)
attach 4 os "$origin_nbd"
attach 5 os "${node_nbd[4]}" "$origin_nbd"
# The child first: node 4 answers it from v1's identical blocks.
copy_and_check "${node_nbd[5]}/os" "$images/os.raw"
copy_and_check "nbd+unix:///os?socket=${node_sock[4]}" "$images/os.raw"
sent=$(( $(origin_stats os | counter .counters.served_remote_bytes) - sent0 ))
changed_bytes=$(( changed * 65536 ))
s=$(stats 4 os)
[ "$sent" -le $(( changed_bytes * 11 / 10 )) ] ||
    fail "update: the origin sent $sent bytes for $changed_bytes changed: $s"
[ "$(jq -r '.reused_from' <<<"$(jq .cache <<<"$s")" | grep -c "${v1:0:16}")" -eq 1 ] ||
    fail "update: no reuse from v1 reported: $s"
# thunderctl cache show|gc: v1 is unattached now; gc removes it.
ctl4 () { "$THUNDERCTL" --node "${node_ctl[4]}" --token-file "$token_file" "$@"; }
out=$(ctl4 cache show --json) || fail "cache show: $out"
[ "$(jq -r --arg v "$v1" '.versions[] | select(.version == $v) | .attached' <<<"$out")" = false ] ||
    fail "cache show: v1 is not listed as unattached: $out"
ctl4 cache show | grep -q unattached || fail "cache show (text): $(ctl4 cache show)"
freed=$(ctl4 cache gc --json | jq -r .freed_bytes)
[ "$freed" -gt 0 ] || fail "cache gc freed $freed bytes"
[ ! -e "${node_cache[4]}/$v1" ] || fail "cache gc left v1's directory"
[ "$(ctl4 cache show --json | jq '.versions | length')" -eq 1 ] ||
    fail "cache gc: $(ctl4 cache show --json)"
copy_and_check "nbd+unix:///os?socket=${node_sock[4]}" "$images/os.raw"
echo "update: origin sent $sent bytes for v2, $changed_bytes bytes changed ($changed of $nblocks blocks); node 4 reused $(jq -r .cache.reused_bytes <<<"$s") bytes"
stop_thunderd

# ---- zeros -----------------------------------------------------------------
head -c $((4 * MiB)) /dev/urandom > "$images/z.raw"
dd if=/dev/zero of="$images/z.raw" bs=65536 seek=8 count=32 conv=notrunc status=none
image_add z "$images/z.raw" >/dev/null
rescan_origin z
start_node 6
attach 6 z "$origin_nbd"
copy_and_check "nbd+unix:///z?socket=${node_sock[6]}" "$images/z.raw"
s=$(stats 6 z)
nonzero=$(( (64 - 32) * 65536 ))
[ "$(counter '.upstreams[0].bytes' <<<"$s")" -eq "$nonzero" ] ||
    fail "zeros: fetched $(counter '.upstreams[0].bytes' <<<"$s") bytes, want $nonzero: $s"
[ "$(counter .counters.present_cache_bytes <<<"$s")" -eq "$nonzero" ] ||
    fail "zeros: zero blocks were stored: $s"
[ "$(jq -r .cache.zero_blocks_skipped <<<"$s")" -ge 32 ] || fail "zeros: $s"
echo "zeros: $(counter '.upstreams[0].bytes' <<<"$s") bytes fetched for 32 data and 32 zero blocks"
stop_thunderd

# ---- twins: two images of equal blocks read at the same time ---------------------
head -c $((8 * MiB)) /dev/urandom > "$images/twin1.raw"
cp "$images/twin1.raw" "$images/twin2.raw"
image_add twin1 "$images/twin1.raw" >/dev/null
image_add twin2 "$images/twin2.raw" >/dev/null
rescan_origin twin2
start_node 9 --readahead 0
attach 9 twin1 "$origin_nbd"
attach 9 twin2 "$origin_nbd"
copy_and_check "nbd+unix:///twin1?socket=${node_sock[9]}" "$images/twin1.raw" &
p1=$!
copy_and_check "nbd+unix:///twin2?socket=${node_sock[9]}" "$images/twin2.raw" &
p2=$!
wait "$p1" || fail "twins: twin1 read wrong"
wait "$p2" || fail "twins: twin2 read wrong"
sent=$(( $(origin_stats twin1 | counter .counters.served_remote_bytes) +
         $(origin_stats twin2 | counter .counters.served_remote_bytes) ))
shared=$(( $(stats 9 twin1 | jq .cache.shared_fetch_blocks) + $(stats 9 twin2 | jq .cache.shared_fetch_blocks) ))
reused=$(( $(stats 9 twin1 | jq .cache.reused_blocks) + $(stats 9 twin2 | jq .cache.reused_blocks) ))
echo "twins: origin sent $sent bytes for two 8 MiB images of equal blocks read at once; $shared blocks waited for the other image's fetch, $reused copied"
[ "$sent" -eq $((8 * MiB)) ] || fail "twins: the origin sent $sent bytes, want $((8 * MiB)) (each block once)"

# ---- crossed: two nodes relay two versions of equal blocks to each other ----
# (a rolling update whose relay trees cross): node 10 reads twin2 through
# node 11 while node 11 reads twin1 through node 10, at once.  A child's
# read waiting for the other version's fetch would close a cycle that only
# the fetch timeout breaks (failovers, upstream errors, seconds of stall).
start_node 10 --readahead 0
start_node 11 --readahead 0
attach 10 twin1 "$origin_nbd"
attach 11 twin2 "$origin_nbd"
attach 10 twin2 "${node_nbd[11]}" "$origin_nbd"
attach 11 twin1 "${node_nbd[10]}" "$origin_nbd"
copy_and_check "nbd+unix:///twin2?socket=${node_sock[10]}" "$images/twin2.raw" &
p1=$!
copy_and_check "nbd+unix:///twin1?socket=${node_sock[11]}" "$images/twin1.raw" &
p2=$!
wait "$p1" || fail "crossed: twin2 through node 10 read wrong"
wait "$p2" || fail "crossed: twin1 through node 11 read wrong"
for s in "$(stats 10 twin2)" "$(stats 11 twin1)"; do
    jq -e '.counters.failovers == 0 and .upstreams[0].errors == 0' <<<"$s" >/dev/null ||
        fail "crossed: a parent timed out or failed (a wait cycle between the nodes?): $s"
done
echo "crossed: both nodes read through each other without a failover"
stop_thunderd

# ---- errors ------------------------------------------------------------------
start_node 7 --cache-max 4K
code=$(curl -s -o "$tmpdir/reply" -w '%{http_code}' -X PUT \
    -H "Authorization: Bearer $(cat "$token_file")" \
    -d "{\"version\": \"$(origin_stats img3 | jq -r .version)\", \"upstreams\": [\"$origin_nbd/img3\"]}" \
    "${node_ctl[7]}/v1/images/img3")
[ "$code" = 507 ] || fail "attach with no room: HTTP $code: $(cat "$tmpdir/reply")"
jq -e '.error.code == "insufficient_storage" and (.error.message | test("cannot hold"))' \
    "$tmpdir/reply" >/dev/null || fail "attach with no room: $(cat "$tmpdir/reply")"
stop_thunderd

# Room for the metadata and a few blocks only.
start_node 8 --cache-max 300K
attach 8 img3 "$origin_nbd"
copy_and_check "nbd+unix:///img3?socket=${node_sock[8]}" "$images/img3.raw"
copy_and_check "nbd+unix:///img3?socket=${node_sock[8]}" "$images/img3.raw"
s=$(stats 8 img3)
[ "$(jq -r .cache.uncached_blocks <<<"$s")" -gt 0 ] || fail "full: $s"
lines=$(grep -c "served without caching" "${node_log[8]}" || true)
[ "$lines" -eq 1 ] || fail "full: $lines log lines, want 1 in the interval"
echo "full: $(jq -r .cache.uncached_blocks <<<"$s") blocks served uncached, one log line"
exit 0
