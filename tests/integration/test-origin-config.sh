#!/usr/bin/env bash
# thunder — thunderd configuration: the origin server started from a config
# file alone (every key set there, and the values honoured: socket mode and
# group, handshake cap and timeout); the command line overrides the file;
# config errors (unknown key, bad value, out of range, bad octal mode, bad
# boolean, a line without '=') stop thunderd with a message naming the
# file, line and key; a missing --images dir is an error; corrupt
# manifests are logged by name while the good images are served; the
# default socket group.
set -euo pipefail
source "$(dirname "$0")/functions.sh"

requires_program nbdinfo nbdcopy jq sha256sum stat getent

images=$tmpdir/images
mkdir "$images"
img=$images/good.img
make_image "$img" 4
image_add good "$img" >/dev/null
raw=$TEST_TOOLS_DIR/nbd-raw

# A group for the socket other than the process's own: any group for root,
# else one of the user's supplementary groups (chown needs that).
group=""
if [ "$(id -u)" -eq 0 ]; then
    candidates="daemon bin sys adm nogroup"
else
    candidates=$(id -Gn)
fi
for g in $candidates; do
    if getent group "$g" >/dev/null && [ "$g" != "$(id -gn)" ]; then
        group=$g
        break
    fi
done
[ -n "$group" ] || skip "no group other than $(id -gn) to give the socket"

# --- the server from a config file only --------------------------------------
conf=$tmpdir/thunderd.conf
cport=$(free_port)
cat >"$conf" <<EOF
# thunderd test configuration: every key, no flags.
origin = true
images = $images
socket = $tmpdir/conf.sock
listen = 127.0.0.1:$cport

socket-group = $group
socket-mode = 0640
threads = 4
max-connections = 50
max-handshakes = 2
local-max-connections = 20
local-max-handshakes = 2
max-connections-per-address = 40
max-handshakes-per-address = 8
workers = 3
local-workers = 2
idle-timeout = 300
send-timeout = 20
inflight-per-connection = 40
inflight-per-address = 50
inflight-total = 100
local-inflight-total = 80
handshake-timeout = 2
log = stderr
log-level = debug
debug = nbd
EOF
start_thunderd --config "$conf"
port=$cport
[ "$sock" = "$tmpdir/conf.sock" ] || fail "start_thunderd: socket '$sock'"

[ "$(stat -c %a "$sock")" = 640 ] ||
    fail "socket-mode = 0640 in $conf: socket mode is $(stat -c %a "$sock")"
[ "$(stat -c %G "$sock")" = "$group" ] ||
    fail "socket-group = $group in $conf: socket group is $(stat -c %G "$sock")"
copy_and_check "$(uri_unix good)" "$img"
copy_and_check "$(uri_tcp good)" "$img"
# local-max-handshakes = 2, max-handshakes = 2 and handshake-timeout = 2
# from the file are honoured.
out=$(timeout 30 "$raw" "$sock" cap 2 4 2>&1) ||
    fail "local-max-handshakes = 2, handshake-timeout = 2 in $conf not honoured: $out"
echo "$out"
out=$(timeout 30 "$raw" "127.0.0.1:$port" cap 2 4 2>&1) ||
    fail "max-handshakes = 2, handshake-timeout = 2 in $conf not honoured: $out"
echo "$out"
assert_thunderd_alive "the config-file server's checks"
stop_thunderd
[ "$thunderd_status" -eq 0 ] || fail "thunderd --config: exit $thunderd_status after SIGTERM"

# --- the command line overrides the file --------------------------------------
start_thunderd --config "$conf" --socket "$tmpdir/flag.sock" --listen none \
    --socket-mode 0600
[ "$sock" = "$tmpdir/flag.sock" ] || fail "start_thunderd: socket '$sock'"
[ "$(stat -c %a "$sock")" = 600 ] ||
    fail "--socket-mode 0600 over socket-mode = 0640: mode is $(stat -c %a "$sock")"
[ ! -e "$tmpdir/conf.sock" ] ||
    fail "--socket $tmpdir/flag.sock did not override socket = $tmpdir/conf.sock"
copy_and_check "$(uri_unix good)" "$img"
stop_thunderd

# --- config errors ------------------------------------------------------------
# A valid base (with --origin on the command line); each case appends one
# bad line and names its line number.
base=$tmpdir/base.conf
cat >"$base" <<EOF
images = $images
socket = $tmpdir/bad.sock
listen = none
EOF
baselines=$(wc -l <"$base")

# expect_refused DESC FILE-OR-"" PATTERN... -- ARGS...
#
# thunderd ARGS must exit non-zero within 10 s, create no socket, and say
# every PATTERN (fixed strings) on stderr.
expect_refused ()
{
    local desc=$1 out status=0 p
    shift
    local -a pats=()
    while [ "$1" != -- ]; do pats+=("$1"); shift; done
    shift
    rm -f "$tmpdir/bad.sock"
    out=$(timeout 10 "$THUNDERD" "$@" 2>&1 </dev/null) || status=$?
    [ "$status" -ne 124 ] ||
        fail "$desc: thunderd $*: still running after 10 s; it must refuse to start"
    [ "$status" -ne 0 ] ||
        fail "$desc: thunderd $*: exit 0, want an error"
    for p in "${pats[@]}"; do
        grep -qF -- "$p" <<<"$out" ||
            fail "$desc: thunderd $*: exit $status, but the message does not say '$p': $out"
    done
    [ ! -e "$tmpdir/bad.sock" ] ||
        fail "$desc: thunderd $*: left a socket behind"
    echo "$desc: exit $status: $out"
}

# bad_line DESC LINE KEY [PATTERN...]  — base config + LINE must be refused
# with a message naming the file, the line number and KEY.
bad_line ()
{
    local desc=$1 line=$2 key=$3 f
    shift 3
    f=$tmpdir/bad.$RANDOM.conf
    { cat "$base"; echo "$line"; } >"$f"
    expect_refused "$desc" "$f:$(( baselines + 1 ))" "$key" "$@" -- \
        --config "$f" --origin
}

bad_line "unknown key" "bogus-key = 1" bogus-key
bad_line "bad decimal value" "threads = lots" threads lots
bad_line "value out of range" "max-handshakes = 0" max-handshakes
bad_line "value out of range" "inflight-per-connection = 16" inflight-per-connection
bad_line "value too large" "handshake-timeout = 99999999999999999999999" handshake-timeout
bad_line "bad octal mode" "socket-mode = 0999" socket-mode 0999
bad_line "octal mode out of range" "socket-mode = 01777" socket-mode
bad_line "bad boolean" "origin = maybe" origin maybe
bad_line "key given twice" "images = /tmp" images

# A line without '=' (no key to name: file and line only).
f=$tmpdir/noeq.conf
{ cat "$base"; echo "threads 4"; } >"$f"
expect_refused "line without '='" "$f:$(( baselines + 1 ))" -- \
    --config "$f" --origin

# A --config file that does not exist.
expect_refused "missing config file" "$tmpdir/nope.conf" -- \
    --config "$tmpdir/nope.conf"

# Bad flags are refused as well, naming the flag.
expect_refused "bad flag value" "threads" -- --origin --images "$images" \
    --socket "$tmpdir/bad.sock" --listen none --threads many
expect_refused "unknown flag" "no-such-flag" -- --origin --images "$images" \
    --socket "$tmpdir/bad.sock" --listen none --no-such-flag 1

# --- missing --images dir -----------------------------------------------------
expect_refused "missing --images dir" "$tmpdir/no-such-dir" -- --origin \
    --images "$tmpdir/no-such-dir" --socket "$tmpdir/bad.sock" --listen none
expect_refused "--origin without --images" "images" -- --origin \
    --socket "$tmpdir/bad.sock" --listen none

# --- an explicit socket group that does not exist ----------------------------
expect_refused "unknown --socket-group" "no-such-group-thunder" -- --origin \
    --images "$images" --socket "$tmpdir/bad.sock" --listen none \
    --socket-group no-such-group-thunder

# --- corrupt manifests: logged by name, the good images still served ---------
mixed=$tmpdir/mixed
mkdir "$mixed"
cp "$img" "$mixed/good.img"
image_add good "$mixed/good.img" >/dev/null
for n in trunc baddigest resized; do
    make_image "$mixed/$n.img" 1
    image_add "$n" "$mixed/$n.img" >/dev/null
done
# Cut in the middle of the JSON.
head -c 200 "$images/good.manifest.json" >"$mixed/trunc.manifest.json"
# A block digest that is not hex.
sed -i '0,/"[0-9a-f]\{64\}"/s//"zz0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"/' \
    "$mixed/baddigest.manifest.json"
grep -q '"zz0123' "$mixed/baddigest.manifest.json" ||
    fail "could not corrupt baddigest.manifest.json"
# The image grew after its manifest was written.
head -c 4096 /dev/zero >>"$mixed/resized.img"

start_thunderd --origin --images "$mixed" --socket "$tmpdir/mixed.sock" \
    --listen none
for n in trunc baddigest; do
    grep -i 'error' "$thunderd_log" | grep -qF "$n.manifest.json" ||
        fail "corrupt manifest $n.manifest.json: no error naming it in the log: $(cat "$thunderd_log")"
done
grep -i 'error' "$thunderd_log" | grep -qF "resized.img" ||
    fail "resized.img (size differs from its manifest): no error naming it in the log: $(cat "$thunderd_log")"
listed=$(nbdinfo --list --json "$(uri_unix '')" |
         jq -r '.exports[]["export-name"]' | sort | tr '\n' ' ')
[ "$listed" = "good " ] ||
    fail "with corrupt manifests beside it: exports '$listed', want only 'good '"
copy_and_check "$(uri_unix good)" "$img"
stop_thunderd

# --- default socket group: kvm, or a warning and the process's group ---------
start_thunderd --origin --images "$images" --socket "$tmpdir/default.sock" \
    --listen none
[ "$(stat -c %a "$sock")" = 660 ] ||
    fail "default socket mode is $(stat -c %a "$sock"), want 660"
if getent group kvm >/dev/null; then
    [ "$(stat -c %G "$sock")" = kvm ] ||
        fail "default socket group is $(stat -c %G "$sock"), want kvm"
else
    [ "$(stat -c %G "$sock")" = "$(id -gn)" ] ||
        fail "no kvm group: socket group is $(stat -c %G "$sock"), want $(id -gn)"
    grep -i 'warn' "$thunderd_log" | grep -qF kvm ||
        fail "no kvm group: no warning naming kvm in the log: $(cat "$thunderd_log")"
fi
copy_and_check "$(uri_unix good)" "$img"
stop_thunderd

# --- tcp-congestion: the served TCP connections use it; bad names refused -----
expect_refused "unknown congestion control" "tcp-congestion" "bogus" -- \
    --origin --images "$images" --socket "$tmpdir/bad.sock" --listen 127.0.0.1:0 \
    --tcp-congestion bogus
expect_refused "empty congestion control" "tcp-congestion" -- \
    --origin --images "$images" --socket "$tmpdir/bad.sock" --listen 127.0.0.1:0 \
    --tcp-congestion ''
expect_refused "congestion control name too long" "tcp-congestion" -- \
    --origin --images "$images" --socket "$tmpdir/bad.sock" --listen 127.0.0.1:0 \
    --tcp-congestion abcdefghijklmnopq
cc=$(awk '{ for (i = 1; i <= NF; i++) if ($i != "bbr") { print $i; exit } }' \
     /proc/sys/net/ipv4/tcp_available_congestion_control)
if [ -n "$cc" ] && [ "$(id -u)" = 0 ]; then
    start_thunderd --origin --images "$images" --socket none \
        --listen 127.0.0.1:@PORT@ --tcp-congestion "$cc"
    # Hold a connection open and look at its congestion control with ss.
    nbdsh_py=(/usr/bin/python3 -c "
import nbd, sys, time
h = nbd.NBD(); h.set_export_name('good'); h.connect_uri('nbd://127.0.0.1:$port/good')
h.pread(65536, 0); sys.stdout.write('connected\n'); sys.stdout.flush(); time.sleep(3)")
    "${nbdsh_py[@]}" > "$tmpdir/held" &
    held=$!
    for _ in $(seq 50); do grep -q connected "$tmpdir/held" 2>/dev/null && break; sleep 0.1; done
    ss -tin "sport = :$port" > "$tmpdir/ss" || true
    kill "$held" 2>/dev/null; wait "$held" 2>/dev/null || true
    grep -qw "$cc" "$tmpdir/ss" ||
        fail "--tcp-congestion $cc: the served connection does not use it: $(cat "$tmpdir/ss")"
    stop_thunderd
    echo "tcp-congestion $cc: in use on the served connection"
fi
echo "origin-config: ok"
