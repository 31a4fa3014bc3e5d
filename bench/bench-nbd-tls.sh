#!/usr/bin/env bash
# thunder — NBD over TLS against plaintext on the same thunderd, in one
# run, printed as ratios (issue 15's benchmark, the server side).
#
# Usage: bench/bench-nbd-tls.sh
#
# One origin thunderd with --tls on serves an image on 127.0.0.1; each row
# runs against its TCP listener twice, plaintext (nbd://) and TLS
# (nbds://…?tls-certificates=DIR), alternating, median of BENCH_RUNS:
#   full read   nbdcopy of the whole image to null: (MB/s)
#   nbdbench    4K rand x 1 client depth 8, 1M seq x 1 client depth 4 (MB/s)
# ratio = TLS / plaintext.  Target (issue 15) >= 0.8.  Both sides are
# encrypted or not by the same host: on 2 cores the client's decryption
# competes with the server's encryption, so the ratio is a lower bound.
#
# Environment: THUNDERD, THUNDERCTL, NBDBENCH (defaults under ./build),
# BENCH_IMAGE_MB (default 256), BENCH_RUNS (default 3), BENCH_SECONDS
# (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
THUNDERD=${THUNDERD:-$PWD/build/src/daemon/thunderd}
THUNDERCTL=${THUNDERCTL:-$PWD/build/src/cli/thunderctl}
NBDBENCH=${NBDBENCH:-$PWD/build/bench/nbdbench}
mb=${BENCH_IMAGE_MB:-256}
runs=${BENCH_RUNS:-3}
seconds=${BENCH_SECONDS:-5}

tmp=$(mktemp -d)
pid=
cleanup () { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

"$THUNDERCTL" pki init "$tmp/ca" >/dev/null
for h in origin op; do
    "$THUNDERCTL" pki issue "$h" --ca "$tmp/ca" --out "$tmp/$h" --ip 127.0.0.1 >/dev/null
done
mkdir "$tmp/images"
head -c $((mb << 20)) /dev/urandom > "$tmp/images/img.raw"
"$THUNDERCTL" image add img "$tmp/images/img.raw" >/dev/null
"$THUNDERD" --origin --images "$tmp/images" --socket none --listen 127.0.0.1:0 \
    --tls on --tls-certificates "$tmp/origin" 2>"$tmp/origin.log" &
pid=$!
for (( i = 0; i < 100; ++i )); do grep -qw ready "$tmp/origin.log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on tcp 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$tmp/origin.log" | head -n1)
[ -n "$port" ] || { echo "origin did not start: $(tail -n 5 "$tmp/origin.log")" >&2; exit 1; }
plain="nbd://127.0.0.1:$port/img"
tls="nbds://127.0.0.1:$port/img?tls-certificates=$tmp/op"

median () { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

copy_mbs ()
{
    local t0 t1
    t0=$(date +%s%N)
    nbdcopy -- "$1" null: >/dev/null
    t1=$(date +%s%N)
    awk -v b=$((mb << 20)) -v ns=$((t1 - t0)) 'BEGIN {printf "%.1f", b / (ns / 1e9) / 1e6}'
}

bench_mbs ()
{
    local uri=$1; shift
    "$NBDBENCH" --uri "$uri" --seconds "$seconds" --warmup 1 --json "$@" |
        jq -r .mbps
}

row ()
{
    local label=$1; shift
    local -a p=() t=()
    for (( r = 0; r < runs; ++r )); do
        if (( r % 2 == 0 )); then
            p+=("$("$@" "$plain")"); t+=("$("$@" "$tls")")
        else
            t+=("$("$@" "$tls")"); p+=("$("$@" "$plain")")
        fi
    done
    local mp mt
    mp=$(median "${p[@]}"); mt=$(median "${t[@]}")
    printf '%-28s plain %8s MB/s  tls %8s MB/s  ratio %s\n' "$label" "$mp" "$mt" \
        "$(awk -v a="$mt" -v b="$mp" 'BEGIN {printf "%.2f", a / b}')"
}

rand4k () { bench_mbs "$1" --clients 1 --depth 8 --size 4096 --pattern rand; }
seq1m () { bench_mbs "$1" --clients 1 --depth 4 --size 1048576 --pattern seq; }

echo "image $mb MiB, median of $runs runs, plaintext and TLS alternated; load: $(cut -d' ' -f1-3 /proc/loadavg)"
row "full read (nbdcopy)" copy_mbs
row "4K rand x1 depth 8" rand4k
row "1M seq x1 depth 4" seq1m
