#!/usr/bin/env bash
# thunder — thunderd's GET /metrics on a chain origin → n1 → n2, scraped by
# a real Prometheus with the node token: promtool accepts every exposition
# (and thunder-api's); without the token it is 401 JSON; after a read
# through n2, Prometheus sees n1 relay to n2 exactly the bytes n2 fetched
# from n1 (thunder_nbd_served_bytes_total{client="remote"} against
# thunder_upstream_bytes_total), the reads that waited for a fetch in the
# latency histogram, the cache's size and the origin's bytes; the
# families and labels are the documented ones (docs/metrics.md); the
# NBD connections gauge counts a held Unix-socket client, a client still
# negotiating and node 2's TCP connection to node 1 by kind; a client that
# sends 16 reads of blocks not cached yet and reads no reply for 0.3 s gets
# its replies in fewer sends than replies (thunder_nbd_reply_sends_total
# against thunder_nbd_replies_total: the replies parked behind the blocked
# writer go out several per sendmsg).
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/api-functions.sh"
source "$(dirname "$0")/prom-functions.sh"

requires_program prometheus promtool jq curl nbdcopy

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 8 0
size=$(stat -c %s "$images/img.raw")
image_add img "$images/img.raw" >/dev/null

start_origin "$images"
start_node 1
start_node 2
attach 1 img "$origin_nbd"
attach 2 img "${node_nbd[1]}" "$origin_nbd"
start_api

code=$(curl -s -o "$tmpdir/body" -w '%{http_code}' "${node_ctl[1]}/metrics")
[ "$code" = 401 ] && jq -e '.error.code == "unauthorized"' "$tmpdir/body" >/dev/null ||
    fail "GET /metrics without the token: $code $(cat "$tmpdir/body")"

# Several replies per send: 16 reads of 256 KiB in flight on node 2, none
# cached there yet, and a client that reads no reply for 0.3 s: the first
# replies fill the socket (1 MiB: UNIX_SNDBUF, doubled by the kernel), a
# writer gives up after its send timeout, the others park behind it, and
# when the client reads they go out together.
# replies_sends: node 2's unix "replies sends".
replies_sends() {
    curl -sf -H "Authorization: Bearer $(cat "$token_file")" "${node_ctl[2]}/metrics" |
        awk '$1 == "thunder_nbd_replies_total{kind=\"unix\"}" { r = $2 }
             $1 == "thunder_nbd_reply_sends_total{kind=\"unix\"}" { s = $2 }
             END { print r + 0, s + 0 }'
}
read -r r0 s0 <<<"$(replies_sends)"
/usr/bin/python3 -c '
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
bufs = [nbd.Buffer(262144) for _ in range(16)]
for i, b in enumerate(bufs):
    h.aio_pread(b, i * 262144)
time.sleep(0.3)
while h.aio_in_flight() > 0:
    h.poll(-1)
' "nbd+unix:///img?socket=${node_sock[2]}" || fail "the 16 reads in flight failed"
read -r r1 s1 <<<"$(replies_sends)"
replies=$((r1 - r0)) sends=$((s1 - s0))
[ "$replies" -eq 16 ] || fail "node 2 counted $replies replies of the 16 reads"
# One send per reply (and more for a reply the socket took in parts) would
# be >= 16 (17 with SEND_JOBS 1); measured 8.
[ "$sends" -ge 1 ] && [ $((sends * 4)) -le $((replies * 3)) ] ||
    fail "16 replies in $sends sends: parked replies did not share a sendmsg"

start_prometheus "$api_url" "$token_file" "$origin_ctl" "${node_ctl[1]}" "${node_ctl[2]}"
copy_and_check "nbd+unix:///img?socket=${node_sock[2]}" "$images/img.raw"

for u in "$origin_ctl" "${node_ctl[1]}" "${node_ctl[2]}"; do
    check_exposition "$u/metrics" "$token_file"
done
check_exposition "$api_url/metrics"
curl -sf -H "Authorization: Bearer $(cat "$token_file")" "${node_ctl[2]}/metrics" >"$tmpdir/n2.txt"
for f in thunder_build_info thunder_images thunder_nbd_served_bytes_total \
         thunder_nbd_reads_total thunder_cache_hits_total thunder_cache_misses_total \
         thunder_fetch_blocks_total thunder_upstream_bytes_total \
         thunder_nbd_read_duration_seconds thunder_cache_used_bytes \
         thunder_cache_limit_bytes process_resident_memory_bytes process_threads \
         thunder_nbd_replies_total thunder_nbd_reply_sends_total; do
    grep -q "^# TYPE $f " "$tmpdir/n2.txt" || fail "node 2's /metrics has no family $f"
done
grep -q '^thunder_build_info{version="[^"]*",mode="node"} 1$' "$tmpdir/n2.txt" ||
    fail "node 2's build info: $(grep thunder_build_info "$tmpdir/n2.txt")"
# Threads by role (top -H, perf --sort comm): node 2 has fetched, cached
# and served, so each of these runs.
names=$(cat /proc/"${node_pid[2]}"/task/*/comm | sort -u | tr '\n' ' ')
for t in fetch nbd-worker cache-commit cache-reclaim signals; do
    [[ " $names" == *" $t "* ]] || fail "node 2 has no thread named $t (threads: $names)"
done

n1=${node_ctl[1]#http://}
n2=${node_ctl[2]#http://}
# What n2 fetched from n1 is what n1 served to remote clients.
fetched=$(stats 2 img | jq '.upstreams[0].bytes')
[ "$fetched" -gt 0 ] || fail "node 2 fetched nothing from node 1"
prom_wait "node 1 relayed to node 2" \
    "thunder_nbd_served_bytes_total{instance=\"$n1\",image=\"img\",client=\"remote\"} == $fetched" 20
prom_wait "node 2 fetched from node 1" \
    "thunder_upstream_bytes_total{instance=\"$n2\",image=\"img\",upstream=\"${node_nbd[1]}/img\"} == $fetched" 20
prom_wait "node 2 served the local read" \
    "thunder_nbd_served_bytes_total{instance=\"$n2\",image=\"img\",client=\"local\"} >= $size" 20
prom_wait "reads that waited for a fetch" \
    "thunder_nbd_read_duration_seconds_count{instance=\"$n2\",cache=\"miss\"} > 0" 20
prom_wait "node 2's cache holds the image" \
    "thunder_cache_used_bytes{instance=\"$n2\"} > 0" 20
prom_wait "the origin served node 1" \
    "sum(thunder_nbd_served_bytes_total{job=\"thunderd\",image=\"img\",client=\"remote\",instance=\"${origin_ctl#http://}\"}) > 0" 20
prom_wait "every target up" 'count(up == 1) == 4' 20

# Connections by kind: node 2 holds a TCP connection to node 1; on node 2,
# one Unix-socket client that negotiated and one that only connected.
prom_wait "node 1 holds node 2's TCP connection" \
    "thunder_nbd_connections{instance=\"$n1\",kind=\"tcp\"} >= 1" 20
/usr/bin/python3 -c '
import nbd, socket, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[2])
print("held", flush=True)
time.sleep(30)
' "nbd+unix:///img?socket=${node_sock[2]}" "${node_sock[2]}" >"$tmpdir/held" &
holder=$!
for _ in $(seq 50); do [ -s "$tmpdir/held" ] && break; sleep 0.1; done
curl -sf -H "Authorization: Bearer $(cat "$token_file")" "${node_ctl[2]}/metrics" >"$tmpdir/n2.txt"
kill "$holder"; wait "$holder" 2>/dev/null || true
for want in 'kind="tcp"} 0' 'kind="unix"} 1' 'kind="handshaking"} 1'; do
    grep -qF "thunder_nbd_connections{$want" "$tmpdir/n2.txt" ||
        fail "node 2's connections, want $want: $(grep thunder_nbd_connections "$tmpdir/n2.txt")"
done
prom_wait "thunder-api's nodes gauge" 'count(thunder_api_nodes) > 0' 20
echo "node-metrics: ok"
