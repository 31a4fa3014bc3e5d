#!/usr/bin/env bash
# thunder — what idle TCP connections cost thunderd (issue 12): RSS and
# threads of `thunderd --origin` holding N connections that finished the
# handshake and idle, and the time a local client (Unix socket) and a new
# TCP client take to their first read meanwhile, against the same figures
# with no connection held (same run, same binary).
#
# Usage: bench/bench-idle.sh
#
# Environment:
#   THUNDERD, THUNDERCTL  default ./build/src/daemon/thunderd, ./build/src/cli/thunderctl
#   NBD_RAW               default ./build/tests/tools/nbd-raw (the first reads)
#   BENCH_CONNS           connections to hold (default 10000)
#   BENCH_THUNDERD_ARGS   extra thunderd arguments (default: limits raised
#                         so that all BENCH_CONNS may connect:
#                         --max-connections N+100 --max-connections-per-address N)
#
# The connections come from 127.0.0.2 (a python3 holder, stdlib only);
# refused ones are counted, not retried.  Exit 0 when it ran.
set -euo pipefail

thunderd=${THUNDERD:-./build/src/daemon/thunderd}
thunderctl=${THUNDERCTL:-./build/src/cli/thunderctl}
raw=${NBD_RAW:-./build/tests/tools/nbd-raw}
conns=${BENCH_CONNS:-10000}
args=${BENCH_THUNDERD_ARGS---max-connections $(( conns + 100 )) --max-connections-per-address $conns}

die() { echo "bench-idle: $*" >&2; exit 1; }
for p in "$thunderd" "$thunderctl" "$raw"; do
    [[ -x $p ]] || die "$p: not executable; build first"
done
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) > conns + 100 )) || die "open files limit $(ulimit -n) too low for $conns connections"

tmp=$(mktemp -d /tmp/bench-idle.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

head -c $(( 16 * 1048576 )) /dev/urandom >"$tmp/img"
"$thunderctl" image add img "$tmp/img" >/dev/null
port=$(( 20000 + RANDOM % 10000 ))
# shellcheck disable=SC2086
"$thunderd" --origin --images "$tmp" --socket "$tmp/sock" --socket-group root \
    --listen "127.0.0.1:$port" $args 2>"$tmp/log" &
tpid=$!
pids+=("$tpid")
for (( i = 0; i < 100; ++i )); do
    grep -qw ready "$tmp/log" && break
    sleep 0.1
done
grep -qw ready "$tmp/log" || { cat "$tmp/log" >&2; die "thunderd did not start"; }

status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
first_ms() {  # ADDR: milliseconds to the first 4 KiB read, median of 5
    local i out v=()
    for i in 1 2 3 4 5; do
        out=$(timeout 20 "$raw" "$1" first-read img 2>&1) || { echo "failed"; return; }
        v+=("$(awk '{ printf "%.1f", $2 * 1000 }' <<<"$out")")
    done
    printf '%s\n' "${v[@]}" | sort -n | sed -n 3p
}

rss0=$(status "$tpid" VmRSS); thr0=$(status "$tpid" Threads)
unix0=$(first_ms "$tmp/sock"); tcp0=$(first_ms "127.0.0.1:$port")

python3 - "$port" "$conns" >"$tmp/held" 2>&1 <<'EOF' &
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
def recvn(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c:
            raise EOFError
        b += c
    return b
held, refused, t0 = [], 0, time.time()
for i in range(n):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        recvn(s, 18)
        s.sendall(struct.pack(">I", 3))
        name = b"img"
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
        while True:
            _, _, typ, ln = struct.unpack(">QIII", recvn(s, 20))
            recvn(s, ln)
            if typ == 1:
                break
            if typ != 3:
                raise EOFError
        held.append(s)
    except (OSError, EOFError):
        refused += 1
        s.close()
print("held %d refused %d in %.1f s" % (len(held), refused, time.time() - t0), flush=True)
time.sleep(3600)
EOF
hpid=$!
pids+=("$hpid")
for (( i = 0; i < 1200; ++i )); do
    grep -q '^held' "$tmp/held" && break
    kill -0 "$hpid" 2>/dev/null || { cat "$tmp/held" >&2; die "holder died"; }
    sleep 0.1
done
grep -q '^held' "$tmp/held" || die "holder did not finish in 120 s"
sleep 2
rss1=$(status "$tpid" VmRSS); thr1=$(status "$tpid" Threads)
unix1=$(first_ms "$tmp/sock")
tcp1=$(first_ms "127.0.0.1:$port")

echo "thunderd: $thunderd ${args}"
echo "uptime: $(uptime)"
printf '%-34s %14s %14s\n' "" "no connection" "$(sed -n 's/^held \([0-9]*\).*/\1/p' "$tmp/held") idle"
printf '%-34s %14s %14s\n' "RSS (MB)" "$(( rss0 / 1024 ))" "$(( rss1 / 1024 ))"
printf '%-34s %14s %14s\n' "threads" "$thr0" "$thr1"
printf '%-34s %14s %14s\n' "first read, Unix socket (ms)" "$unix0" "$unix1"
printf '%-34s %14s %14s\n' "first read, new TCP client (ms)" "$tcp0" "$tcp1"
echo "holder: $(cat "$tmp/held")"
