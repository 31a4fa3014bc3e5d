# thunder integration tests — common functions, sourced by every test
# (after nbdkit's tests/functions.sh.in).
#
# Environment (set by tests/integration/meson.build; defaults for running
# a test by hand from the build directory):
#   THUNDERD, THUNDERCTL   the programs under test
#   TEST_TOOLS_DIR         tests/tools in the build tree (make-image, nbd-raw,
#                          nbd-errors, nbd-verify)
#
# Every test: bash, set -euo pipefail, exit 0 pass / 1 fail / 77 skip; only
# loopback addresses; private temp dir ($tmpdir) removed on exit.

: "${TOP_BUILDDIR:=$PWD}"
: "${THUNDERD:=$TOP_BUILDDIR/src/daemon/thunderd}"
: "${THUNDERCTL:=$TOP_BUILDDIR/src/cli/thunderctl}"
: "${TEST_TOOLS_DIR:=$TOP_BUILDDIR/tests/tools}"

# ---------------------------------------------------------------------------
# Cleanup stack.

# cleanup_fn CMD [ARGS...]
#
# Runs CMD ARGS when the script exits for any reason; hooks run last
# registered first.  Arguments are kept exactly (quoted with %q).
declare -a _cleanup_hooks=()
cleanup_fn ()
{
    local cmd
    printf -v cmd '%q ' "$@"
    _cleanup_hooks+=("$cmd")
}

_run_cleanup_hooks ()
{
    local status=$? i
    set +e
    trap '' INT QUIT TERM EXIT
    if [ "$status" -ne 0 ] && [ "$status" -ne 77 ]; then
        _dump_logs
    fi
    for (( i = ${#_cleanup_hooks[@]} - 1; i >= 0; --i )); do
        eval "${_cleanup_hooks[i]}"
    done
    echo "$0: exit code $status"
    exit "$status"
}
trap _run_cleanup_hooks INT QUIT TERM EXIT

# ---------------------------------------------------------------------------
# Outcomes.

# fail MESSAGE...  — the test failed: says what, exits 1.
fail ()
{
    echo "FAIL: $0: $*" >&2
    exit 1
}

# skip MESSAGE...  — a prerequisite is missing: exits 77.
skip ()
{
    echo "SKIP: $0: $*" >&2
    exit 77
}

# requires CMD [ARGS...]
#
# Skips the test (exit 77) unless CMD ARGS runs successfully, e.g.
# "requires nbdinfo --version".
requires ()
{
    "$@" </dev/null >/dev/null 2>&1 ||
        skip "prerequisite missing or not working: $*"
}

# requires_program PROGRAM...  — skips unless each PROGRAM is on $PATH.
requires_program ()
{
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 || skip "program not found: $p"
    done
}

# requires_root  — skips unless running as root.
requires_root ()
{
    [ "$(id -u)" -eq 0 ] || skip "must run as root"
}

# ---------------------------------------------------------------------------
# Private temp dir, programs.

tmpdir=$(mktemp -d /tmp/thunder-test.XXXXXX)
chmod 0755 "$tmpdir"
cleanup_fn rm -rf "$tmpdir"

[ -x "$THUNDERD" ] || fail "THUNDERD is not an executable: $THUNDERD"
[ -x "$THUNDERCTL" ] || fail "THUNDERCTL is not an executable: $THUNDERCTL"
for _t in make-image nbd-raw nbd-errors nbd-verify nbd-tls-keyupdate; do
    [ -x "$TEST_TOOLS_DIR/$_t" ] ||
        fail "test tool not built: $TEST_TOOLS_DIR/$_t"
done
unset _t

# now_ms  — monotonic-enough wall clock in milliseconds.
now_ms ()
{
    local s ns
    IFS=. read -r s ns <<<"$EPOCHREALTIME"
    echo $(( s * 1000 + 10#${ns:0:3} ))
}

# ---------------------------------------------------------------------------
# Test images.
#
# make_image PATH SIZE_MB [EXTRA_BYTES]
#
# Writes SIZE_MB MiB (+ EXTRA_BYTES) of deterministic content: 64 KiB
# blocks, block i filled with the byte $(pattern_byte i), except the blocks
# where is_random_block i, which hold fixed pseudo-random bytes.  Same rule
# as tests/tools/make-image.c.
make_image ()
{
    local path=$1 mb=$2 extra=${3:-0}
    "$TEST_TOOLS_DIR/make-image" "$path" $(( mb * 1048576 + extra )) ||
        fail "make_image $path $mb $extra"
}

# shellcheck disable=SC2034  # used by the tests
BLOCK=65536

# pattern_byte I  — prints the fill byte of pattern block I as 0xNN.
pattern_byte ()
{
    printf '0x%02x' $(( 1 + ($1 * 37 + ($1 >> 8)) % 255 ))
}

# is_random_block I  — true if block I holds pseudo-random bytes.
is_random_block ()
{
    (( $1 % 16 == 7 ))
}

# distinct_blocks IMAGE [BLOCK...]  — prints how many distinct contents
# the image's 64 KiB blocks have (the listed blocks only, if any): what a
# node that reuses identical blocks (docs/node.md) fetches at least.
distinct_blocks ()
{
    python3 - "$@" <<'PYEOF'
import hashlib, sys
f = open(sys.argv[1], "rb")
blocks = [int(b) for b in sys.argv[2:]]
if not blocks:
    import os
    blocks = range((os.path.getsize(sys.argv[1]) + 65535) // 65536)
seen = set()
for b in blocks:
    f.seek(b * 65536)
    seen.add(hashlib.sha256(f.read(65536)).digest())
print(len(seen))
PYEOF
}

# sha256 FILE  — prints the SHA-256 of FILE.
sha256 ()
{
    sha256sum "$1" | cut -d' ' -f1
}

# image_add NAME PATH [ARGS...]
#
# Runs "thunderctl image add NAME PATH ARGS", checks its summary line and
# that the manifest was written beside the image.
image_add ()
{
    local name=$1 path=$2 out
    shift 2
    out=$("$THUNDERCTL" image add "$name" "$path" "$@" 2>&1) ||
        fail "thunderctl image add $name $path $*: exit $?: $out"
    echo "$out"
    grep -Eq "^image $name: format (raw|qcow2), size [0-9]+ bytes, block size [0-9]+, [0-9]+ blocks, version [0-9a-f]{64}\$" <<<"$out" ||
        fail "thunderctl image add $name: unexpected summary: $out"
    [ -f "$(dirname "$path")/$name.manifest.json" ] ||
        fail "thunderctl image add $name: no $(dirname "$path")/$name.manifest.json"
}

# ---------------------------------------------------------------------------
# TCP ports.

# _port_in_use PORT  — true if any TCP socket (v4 or v6) uses PORT locally
# or remotely (conservative).
_port_in_use ()
{
    local hex
    printf -v hex ':%04X ' "$1"
    grep -qF -- "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# free_port  — prints a TCP port that nothing uses now, below the
# ephemeral range (20000-31999).  start_thunderd also retries when a port
# was taken between the check and the bind (use @PORT@ there).
free_port ()
{
    local p i
    for i in {1..200}; do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
        _port_in_use "$p" || { echo "$p"; return 0; }
    done
    fail "no free TCP port found"
}

# ---------------------------------------------------------------------------
# thunderd.

declare -a _thunderd_logs=()
declare -A _thunderd_reaped=()   # pids already waited for: never signal them
_thunderd_n=0

# _pid_running PID  — true if PID exists and is not a zombie.
_pid_running ()
{
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# _kill_thunderd PID  — cleanup hook: SIGTERM, then SIGKILL after 5 s.
_kill_thunderd ()
{
    local pid=$1 i
    [ -z "${_thunderd_reaped[$pid]:-}" ] || return 0
    _thunderd_reaped[$pid]=1
    _pid_running "$pid" || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for (( i = 0; i < 250; ++i )); do
        _pid_running "$pid" || break
        sleep 0.02
    done
    if _pid_running "$pid"; then
        echo "$0: thunderd $pid ignored SIGTERM for 5 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

_dump_logs ()
{
    local log
    for log in "${_thunderd_logs[@]}"; do
        [ -f "$log" ] || continue
        echo "---- $log (last 40 lines) ----" >&2
        tail -n 40 "$log" >&2
    done
}

# _arg_value KEY ARGS...  — the value of --KEY V / --KEY=V in ARGS, or of
# "KEY = V" in the file named by --config; empty if absent.
_arg_value ()
{
    local key=$1 v="" conf="" prev="" a
    shift
    for a in "$@"; do
        case "$prev" in
            --"$key") v=$a ;;
            --config) conf=$a ;;
        esac
        case "$a" in
            --"$key"=*) v=${a#--"$key"=} ;;
            --config=*) conf=${a#--config=} ;;
        esac
        prev=$a
    done
    if [ -z "$v" ] && [ -n "$conf" ] && [ -f "$conf" ]; then
        v=$(sed -n "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\\([^#[:space:]]*\\).*/\\1/p" "$conf" | tail -n 1)
    fi
    echo "$v"
}

# start_thunderd ARGS...
#
# Starts "$THUNDERD ARGS" in the background (stderr to a log in $tmpdir),
# waits up to 10 s for it to log the word "ready" (it does once it listens)
# and for its socket to appear, and registers a kill on cleanup.  The
# readiness check makes no connection of its own, so it cannot take a slot
# of --max-handshakes.  The token @PORT@ in ARGS is replaced by a free port
# (retried if the port turns out to be taken).  Sets:
#   thunderd_pid, thunderd_log, port (if @PORT@ was used),
#   sock (the --socket path, or "" if none).
start_thunderd ()
{
    local a
    local -a args
    for _ in 1 2 3 4 5; do
        args=()
        if [[ "$*" == *@PORT@* ]]; then
            port=$(free_port)
            for a in "$@"; do args+=("${a//@PORT@/$port}"); done
        else
            args=("$@")
        fi
        if _start_thunderd_once "${args[@]}"; then
            return 0
        fi
        if [[ "$*" == *@PORT@* ]] && grep -qi 'in use' "$thunderd_log"; then
            echo "$0: port $port was taken; retrying" >&2
            continue
        fi
        fail "thunderd ${args[*]}: did not start (exit ${thunderd_status:-?}): $(tail -n 5 "$thunderd_log")"
    done
    fail "thunderd: no free port after 5 attempts"
}

_start_thunderd_once ()
{
    local i
    _thunderd_n=$(( _thunderd_n + 1 ))
    thunderd_log=$tmpdir/thunderd.$_thunderd_n.log
    _thunderd_logs+=("$thunderd_log")
    sock=$(_arg_value socket "$@")
    [ "$sock" = none ] && sock=""
    echo "$0: starting: $THUNDERD $*" >&2
    "$THUNDERD" "$@" 2>"$thunderd_log" </dev/null &
    thunderd_pid=$!
    thunderd_status=""
    cleanup_fn _kill_thunderd "$thunderd_pid"
    # Polled every 20 ms (10 s in all): the suite starts and stops
    # thunderd hundreds of times (node-crash alone 160 starts), and a
    # 100 ms poll cost ~50 ms at each.
    for (( i = 0; i < 500; ++i )); do
        if ! _pid_running "$thunderd_pid"; then
            thunderd_status=0
            wait "$thunderd_pid" || thunderd_status=$?
            _thunderd_reaped[$thunderd_pid]=1
            return 1
        fi
        if grep -qw ready "$thunderd_log" &&
           { [ -z "$sock" ] || [ -S "$sock" ]; }; then
            return 0
        fi
        sleep 0.02
    done
    fail "thunderd $*: not ready within 10 s (no \"ready\" in its log${sock:+ or no socket $sock})"
}

# stop_thunderd  — sends SIGTERM to $thunderd_pid and waits up to 10 s;
# sets thunderd_status to its exit status.  Fails if it does not exit.
stop_thunderd ()
{
    local i
    kill -TERM "$thunderd_pid" || fail "thunderd $thunderd_pid: already gone"
    for (( i = 0; i < 500; ++i )); do
        _pid_running "$thunderd_pid" || break
        sleep 0.02
    done
    _pid_running "$thunderd_pid" &&
        fail "thunderd $thunderd_pid: still running 10 s after SIGTERM"
    thunderd_status=0
    wait "$thunderd_pid" || thunderd_status=$?
    _thunderd_reaped[$thunderd_pid]=1
}

# proc_status PID KEY  — the number of KEY in /proc/PID/status (VmRSS in
# kB, Threads, ...).
proc_status ()
{
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# assert_thunderd_alive [CONTEXT]  — fails if thunderd has exited.
assert_thunderd_alive ()
{
    _pid_running "$thunderd_pid" ||
        fail "thunderd $thunderd_pid died${1:+ after $1}"
}

# uri_unix NAME / uri_tcp NAME  — NBD URIs of export NAME.
uri_unix ()
{
    echo "nbd+unix:///$1?socket=$sock"
}

uri_tcp ()
{
    echo "nbd://127.0.0.1:$port/$1"
}

# copy_and_check URI FILE  — nbdcopy of URI must have FILE's SHA-256.
copy_and_check ()
{
    local uri=$1 file=$2 out
    out=$tmpdir/copy.$$.$RANDOM
    nbdcopy -- "$uri" "$out" || fail "nbdcopy $uri: exit $?"
    [ "$(sha256 "$out")" = "$(sha256 "$file")" ] ||
        fail "nbdcopy $uri: SHA-256 differs from $file"
    rm -f "$out"
}
