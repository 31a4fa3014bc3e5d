# thunder integration tests — several thunderd processes: an origin and
# nodes, each on loopback ports picked by the kernel (port 0) and read
# back from its log.  Sourced after functions.sh.
#
#   start_origin IMAGES_DIR [ARGS...]     → origin_nbd (nbd://127.0.0.1:PORT),
#                                            origin_ctl (http://127.0.0.1:PORT)
#   start_node N [ARGS...]                → node_nbd[N], node_ctl[N],
#                                            (no libvirt pool unless ARGS
#                                            give --pool NAME)
#                                            node_sock[N], node_pid[N], node_cache[N]
#   attach N NAME UPSTREAM_BASE...        → thunderctl image attach via node N
#   stats N NAME                          → the node's image JSON on stdout
#   kill9_node N                          → SIGKILL node N (a crash)
#   rescan_origin NAME [NOT_VERSION]      → SIGHUP the origin, wait for NAME
#   new_version FILE PCT                  → change PCT % of FILE's blocks
#   origin_stats NAME                     → the origin's image JSON

requires_program jq curl nbdcopy nbdinfo

token_file=$tmpdir/token
printf 'test-token-%s\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    > "$token_file"
chmod 0600 "$token_file"
export THUNDER_TOKEN_FILE=$token_file

declare -A node_nbd=() node_ctl=() node_sock=() node_pid=() node_cache=() \
    node_log=()

# _ports_from_log LOG  — sets nbd_port and ctl_port from a thunderd log.
_ports_from_log ()
{
    nbd_port=$(sed -n 's/.*listening on tcp 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$1" | head -n1)
    ctl_port=$(sed -n 's/.*control endpoint on .* port \([0-9]*\).*/\1/p' "$1" | head -n1)
}

start_origin ()
{
    local dir=$1
    shift
    start_thunderd --origin --images "$dir" --socket "$tmpdir/origin.sock" \
        --listen 127.0.0.1:0 --control 127.0.0.1:0 \
        --token-file "$token_file" "$@"
    _ports_from_log "$thunderd_log"
    [ -n "$nbd_port" ] && [ -n "$ctl_port" ] ||
        fail "origin: no ports in its log"
    origin_nbd=nbd://127.0.0.1:$nbd_port
    origin_ctl=http://127.0.0.1:$ctl_port
    origin_pid=$thunderd_pid
    origin_log=$thunderd_log
}

# start_node N [ARGS...]  — starts (or restarts, keeping its cache) node N.
start_node ()
{
    local n=$1
    shift
    node_cache[$n]=${node_cache[$n]:-$tmpdir/cache$n}
    start_thunderd --cache "${node_cache[$n]}" --socket "$tmpdir/node$n.sock" \
        --listen 127.0.0.1:0 --control 127.0.0.1:0 \
        --token-file "$token_file" --pool none "$@"
    _ports_from_log "$thunderd_log"
    [ -n "$nbd_port" ] && [ -n "$ctl_port" ] ||
        fail "node $n: no ports in its log"
    node_nbd[$n]=nbd://127.0.0.1:$nbd_port
    node_ctl[$n]=http://127.0.0.1:$ctl_port
    node_sock[$n]=$tmpdir/node$n.sock
    node_pid[$n]=$thunderd_pid
    node_log[$n]=$thunderd_log
}

# attach N NAME BASE...  — attaches NAME on node N with upstreams BASE/NAME
# (bases like nbd://127.0.0.1:PORT), parent first.
attach ()
{
    local n=$1 name=$2 b out
    shift 2
    local -a ups=()
    for b in "$@"; do ups+=(--upstream "$b/$name"); done
    out=$("$THUNDERCTL" --node "${node_ctl[$n]}" --token-file "$token_file" \
          image attach "$name" "${ups[@]}" 2>&1) ||
        fail "attach $name on node $n: $out"
}

stats ()
{
    curl -sf -H "Authorization: Bearer $(cat "$token_file")" \
        "${node_ctl[$1]}/v1/images/$2" || fail "stats of $2 on node $1"
}

origin_stats ()
{
    curl -sf -H "Authorization: Bearer $(cat "$token_file")" \
        "$origin_ctl/v1/images/$1" || fail "origin stats of $1"
}

# rescan_origin NAME [NOT_VERSION]  — SIGHUPs the origin and waits until
# it serves NAME (at another version than NOT_VERSION, if given).
rescan_origin ()
{
    local i v
    kill -HUP "$origin_pid"
    for (( i = 0; i < 100; ++i )); do
        v=$(origin_stats "$1" 2>/dev/null | jq -r .version) || v=
        [ -n "$v" ] && [ "$v" != "${2:-}" ] && return 0
        sleep 0.1
    done
    fail "the origin does not serve $1${2:+ at a new version} after SIGHUP"
}

# new_version FILE PCT  — rewrites PCT % of FILE's 64 KiB blocks (chosen at
# random) with random bytes, in place (write, then rename); sets
# changed_blocks to how many.
new_version ()
{
    local file=$1 nblocks b
    nblocks=$(( ($(stat -c %s "$file") + 65535) / 65536 ))
    changed_blocks=$(( nblocks * $2 / 100 ))
    cp "$file" "$file.new"
    for b in $(shuf -i 0-$((nblocks - 2)) -n "$changed_blocks"); do
        head -c 65536 /dev/urandom |
            dd of="$file.new" bs=65536 seek="$b" conv=notrunc status=none
    done
    mv "$file.new" "$file"
}

# kill9_node N  — SIGKILLs node N and reaps it (a crash).
kill9_node ()
{
    kill -KILL "${node_pid[$1]}"
    wait "${node_pid[$1]}" 2>/dev/null || true
    _thunderd_reaped[${node_pid[$1]}]=1
}

# counter JSON PATH  — a number from JSON on stdin, e.g. counter .counters.hits
counter ()
{
    jq -r "$1"
}
