#!/usr/bin/env bash
# thunder — node mode, failover: origin → n1 → n2; a client reads through
# n2 block by block while n1 is killed (SIGKILL).  Every read succeeds with
# the image's bytes, through the origin, and none waits 2 s or more.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import nbd' 2>/dev/null ||
    skip "Debian's python3 with the nbd module (python3-libnbd) is missing"

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 16
image_add img "$images/img.raw" >/dev/null

start_origin "$images"
start_node 1 --readahead 0
start_node 2 --readahead 0
attach 1 img "$origin_nbd"
attach 2 img "${node_nbd[1]}" "$origin_nbd"

marker=$tmpdir/half
IMG=$images/img.raw MARKER=$marker \
/usr/bin/python3 -m nbd -u "nbd+unix:///img?socket=${node_sock[2]}" -c '
import os, time
img = open(os.environ["IMG"], "rb")
worst = 0.0
for b in range(256):
    t = time.monotonic()
    data = h.pread(65536, b * 65536)
    worst = max(worst, time.monotonic() - t)
    img.seek(b * 65536)
    assert data == img.read(65536), "block %d differs" % b
    if b == 64:
        open(os.environ["MARKER"], "w").close()
        while os.path.exists(os.environ["MARKER"]):
            time.sleep(0.01)
print("worst read %.3f s" % worst)
assert worst < 2.0, "a read took %.3f s" % worst
' > "$tmpdir/reader.out" 2>&1 &
reader=$!
for _ in $(seq 200); do [ -e "$marker" ] && break; sleep 0.05; done
[ -e "$marker" ] || fail "the reader did not get going: $(cat "$tmpdir/reader.out")"
kill -KILL "${node_pid[1]}"
rm -f "$marker"
wait "$reader" || fail "reads through node 2 failed after its parent died: $(cat "$tmpdir/reader.out")"
cat "$tmpdir/reader.out"

s=$(stats 2 img)
[ "$(counter .upstreams[1].blocks <<<"$s")" -gt 0 ] || fail "nothing came from the origin: $s"
[ "$(counter .counters.fetch_failures <<<"$s")" -eq 0 ] || fail "fetch failures: $s"
exit 0
