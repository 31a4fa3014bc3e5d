#!/usr/bin/env bash
# thunder — node mode, crash safety: CRASH_ROUNDS (default 80 in the suite;
# set it higher for a long run, e.g. CRASH_ROUNDS=1000) times, a
# node is killed with SIGKILL while it fetches, restarted (it re-attaches
# from its records, keeping its cache), and a full read through it must
# equal the image.  Then a byte flipped in the cache's data file is
# detected on the next read, evicted, fetched again and counted.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"

rounds=${CRASH_ROUNDS:-80}
images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 8
image_add img "$images/img.raw" >/dev/null
want=$(sha256 "$images/img.raw")

start_origin "$images"
version=$(origin_stats img | jq -r .version)
start_node 1 --readahead 4 --commit-interval 5
attach 1 img "$origin_nbd"
stop_thunderd

for (( r = 1; r <= rounds; r++ )); do
    # A fresh cache every few rounds, so the kills land while fetching.
    if (( r % 4 == 1 )); then
        rm -rf "${node_cache[1]:?}/$version"
    fi
    start_node 1 --readahead 4 --commit-interval 5
    nbdcopy "nbd+unix:///img?socket=${node_sock[1]}" "$tmpdir/partial" 2>/dev/null &
    copier=$!
    sleep "0.0$(( RANDOM % 60 ))"
    kill9_node 1
    wait "$copier" 2>/dev/null || true

    start_node 1 --readahead 4 --commit-interval 5
    nbdcopy "nbd+unix:///img?socket=${node_sock[1]}" "$tmpdir/full" ||
        fail "round $r: full read failed after restart"
    [ "$(sha256 "$tmpdir/full")" = "$want" ] ||
        fail "round $r: the read after a crash differs from the image"
    [ "$(stats 1 img | counter .counters.cache_corrupt_evicted)" -eq 0 ] ||
        fail "round $r: a block marked valid was corrupt: $(stats 1 img)"
    stop_thunderd
done
echo "$rounds crash rounds: every read equal to the image"

# A flipped byte in the cache is found, evicted, fetched again, counted.
data=${node_cache[1]}/$version/data
[ -f "$data" ] || fail "no cache data file at $data"
printf '\x00' | dd of="$data" bs=1 seek=$((5 * 65536 + 7)) conv=notrunc status=none
start_node 1
fetches=$(stats 1 img | counter .counters.fetches)
copy_and_check "nbd+unix:///img?socket=${node_sock[1]}" "$images/img.raw"
s=$(stats 1 img)
[ "$(counter .counters.cache_corrupt_evicted <<<"$s")" -eq 1 ] ||
    fail "the flipped byte was not detected: $s"
[ "$(counter .counters.fetches <<<"$s")" -eq $((fetches + 1)) ] ||
    fail "want exactly the corrupt block fetched again: $s"
cmp -s <(dd if="$data" bs=65536 skip=5 count=1 status=none) \
       <(dd if="$images/img.raw" bs=65536 skip=5 count=1 status=none) ||
    fail "the cache still holds the corrupt block"
exit 0
