#!/usr/bin/env bash
# thunder — an emulated cluster on one machine: network namespaces joined by
# shaped veth links to a bridge.  See bench/README.md ("cluster.sh").
#
#   cluster.sh up N [--rate MBIT] [--down-rate MBIT] [--origin-rate MBIT]
#                   [--delay MS]
#   cluster.sh down
#   cluster.sh exec NODE CMD [ARGS...]     NODE: origin, 1..N (or sw)
#   cluster.sh addr NODE                   prints NODE's address
#   cluster.sh status                      prints the cluster; 1 if it is not up
#   cluster.sh check [--seconds S] [--json] [--no-all]
#   cluster.sh probe                       0 if this host can run a cluster
#
# Layout (PREFIX is $THN_PREFIX, default "thn"):
#   PREFIX-sw      the switch: bridge thnbr0 and one port per node
#                  ("o" for the origin, "nI" for node I); no address
#   PREFIX-origin  eth0 198.18.0.1/16
#   PREFIX-I       eth0 198.18.(1 + I / 256).(I % 256)/16, so node I is
#                  198.18.1.I for I <= 255 (I = 1 .. 1000)
# Every namespace has lo up, IPv6 off, one connected route 198.18.0.0/16 and
# no default route: nothing leaves the cluster, and the host's own network
# (the root namespace) is never touched.
#
# Shaping: every link is shaped in both directions, on the egress of each
# end of its veth pair: HTB at the link rate, small packets (requests,
# ACKs) ahead of bulk data, each in a byte FIFO of max(256 KiB, 20 ms at
# the rate) — or, with --delay, netem adding that one-way delay per
# direction (a node-to-node path crosses two links: round trip 4 x delay).
# --rate is a node link's rate both ways unless --down-rate sets its
# downlink (switch -> node) apart; --origin-rate is the origin's, both ways.  Defaults: 50 Mbit/s per node, 100 Mbit/s for the
# origin, no added delay.
#
# Idempotent: "up" first removes what "down" removes; "down" stops every
# process still inside a PREFIX-origin/-sw/-I namespace (SIGTERM, SIGKILL
# after 5 s) and deletes those namespaces, whoever made them, also after a
# crash.  Needs root, ip and tc (iproute2); "check" needs iperf3 and jq.
#
# Exit status: 0 done (check: passed), 1 an error, 3 check ran and failed
# (a rate off by more than 10% or the host CPU at 80% or more).
set -euo pipefail

prog=cluster.sh
prefix=${THN_PREFIX:-thn}
state_dir=${THN_STATE_DIR:-/run/thunder-bench}
state_file=$state_dir/$prefix.env
bridge=thnbr0
max_nodes=1000

die() { echo "$prog: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

[[ $prefix =~ ^[a-z][a-z0-9]{0,11}$ ]] ||
    die "THN_PREFIX '$prefix': want 1-12 lower-case letters and digits, a letter first"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

is_number() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
is_positive() { is_number "$1" && awk -v v="$1" 'BEGIN { exit !(v > 0) }'; }

# ---- names and addresses ------------------------------------------------

sw_ns=$prefix-sw

# ns_of NODE: the namespace of origin, sw or node I.
ns_of() {
    case $1 in
        origin) echo "$prefix-origin" ;;
        sw) echo "$sw_ns" ;;
        *)
            [[ $1 =~ ^[1-9][0-9]*$ && $1 -le $max_nodes ]] ||
                die "node '$1': want origin, sw or 1..$max_nodes"
            echo "$prefix-$1" ;;
    esac
}

# addr_of NODE: the address of origin or node I.
addr_of() {
    case $1 in
        origin) echo 198.18.0.1 ;;
        *)
            [[ $1 =~ ^[1-9][0-9]*$ && $1 -le $max_nodes ]] ||
                die "node '$1': want origin or 1..$max_nodes"
            echo "198.18.$((1 + $1 / 256)).$(($1 % 256))" ;;
    esac
}

# Our namespaces that exist now, one a line.
our_namespaces() {
    ip netns list 2>/dev/null | awk '{ print $1 }' |
        grep -E "^$prefix-(origin|sw|[1-9][0-9]*)\$" || true
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, tc)"
    command -v ip >/dev/null && command -v tc >/dev/null ||
        die "ip and tc not found (apt-get install iproute2)"
}

load_state() {
    [[ -f $state_file ]] || die "no cluster '$prefix' is up (no $state_file); run: $prog up N"
    # shellcheck disable=SC1090
    source "$state_file"
}

# ---- down ---------------------------------------------------------------

cmd_down() {
    require_root
    local ns pid i
    local -a all=() pids=()
    mapfile -t all < <(our_namespaces)
    for ns in "${all[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$pid"); done
    done
    if ((${#pids[@]} > 0)); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            local alive=0
            for pid in "${pids[@]}"; do
                kill -0 "$pid" 2>/dev/null && alive=1 && break
            done
            ((alive)) || break
            sleep 0.1
        done
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for ns in "${all[@]}"; do
        ip netns delete "$ns" 2>/dev/null || note "ip netns delete $ns failed"
    done
    rm -f "$state_file"
    local left
    left=$(our_namespaces)
    [[ -z $left ]] || die "namespaces left over: $left"
}

# ---- up -----------------------------------------------------------------

# shape NS DEV MBIT DELAY_MS: the egress of DEV in NS at MBIT.  HTB
# class 1:1 holds the link rate; under it, packets of under 256 bytes
# (requests, ACKs: IPv4 total length < 256) go to class 1:10, served
# first, and everything else to 1:20.  Each leaf is a byte FIFO of
# max(256 KiB, 20 ms at the rate), or netem adding DELAY_MS.  (A FIFO
# alone would hold a request behind up to 20 ms of bulk data; a host's
# fq_codel or fq lets it pass: this kernel has neither, nor sfq.)
shape() {
    local ns=$1 dev=$2 mbit=$3 delay=$4 leaf limit
    if is_positive "$delay"; then
        leaf="netem delay ${delay}ms limit 1000"
    else
        limit=$(awk -v m="$mbit" 'BEGIN { b = m * 1e6 / 8 * 0.020;
                 printf "%d", (b > 262144 ? b : 262144) }')
        leaf="bfifo limit $limit"
    fi
    local small bulk
    small=$(awk -v m="$mbit" 'BEGIN { printf "%.0fkbit", m * 1000 / 20 }')
    bulk=$(awk -v m="$mbit" 'BEGIN { printf "%.0fkbit", m * 1000 * 19 / 20 }')
    tc -n "$ns" -batch - <<EOF || die "tc on $ns/$dev failed (--delay needs sch_netem in the kernel)"
qdisc replace dev $dev root handle 1: htb default 20
class add dev $dev parent 1: classid 1:1 htb rate ${mbit}mbit ceil ${mbit}mbit quantum 1514
class add dev $dev parent 1:1 classid 1:10 htb rate $small ceil ${mbit}mbit prio 0 quantum 1514
class add dev $dev parent 1:1 classid 1:20 htb rate $bulk ceil ${mbit}mbit prio 1 quantum 1514
qdisc add dev $dev parent 1:10 handle 10: $leaf
qdisc add dev $dev parent 1:20 handle 20: $leaf
filter add dev $dev parent 1: protocol ip prio 1 u32 match u16 0x0000 0xff00 at 2 flowid 1:10
EOF
}

# make_ns NS: a namespace with lo up and IPv6 off.
make_ns() {
    ip netns add "$1" || die "ip netns add $1 failed"
    ip netns exec "$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1 >/dev/null ||
        die "sysctl in $1 failed"
    ip -n "$1" link set lo up
}

# add_member NODE PORT UP_MBIT DOWN_MBIT DELAY: NODE's namespace, linked
# to the switch.
add_member() {
    local node=$1 port=$2 mbit=$3 down=$4 delay=$5 ns addr
    ns=$(ns_of "$node")
    addr=$(addr_of "$node")
    make_ns "$ns"
    ip -n "$sw_ns" link add name "$port" type veth peer name eth0 netns "$ns" ||
        die "veth $port <-> $ns/eth0 failed"
    ip -n "$sw_ns" link set "$port" master "$bridge" up
    ip -n "$ns" addr add "$addr/16" dev eth0
    ip -n "$ns" link set eth0 up
    shape "$ns" eth0 "$mbit" "$delay"         # its uplink
    shape "$sw_ns" "$port" "$down" "$delay"   # its downlink
}

cmd_up() {
    local n="" rate=50 down_rate="" origin_rate=100 delay=0
    while (($# > 0)); do
        case $1 in
            --rate) rate=${2:-}; shift 2 || die "--rate needs a value" ;;
            --down-rate) down_rate=${2:-}; shift 2 || die "--down-rate needs a value" ;;
            --origin-rate) origin_rate=${2:-}; shift 2 || die "--origin-rate needs a value" ;;
            --delay) delay=${2:-}; shift 2 || die "--delay needs a value" ;;
            -*) die "up: unknown option '$1'" ;;
            *) [[ -z $n ]] || die "up: one node count, not '$1' too"; n=$1; shift ;;
        esac
    done
    [[ $n =~ ^[1-9][0-9]*$ && $n -le $max_nodes ]] || die "up: N '$n': want 1..$max_nodes"
    is_positive "$rate" || die "--rate '$rate': want Mbit/s above 0"
    down_rate=${down_rate:-$rate}
    is_positive "$down_rate" || die "--down-rate '$down_rate': want Mbit/s above 0"
    is_positive "$origin_rate" || die "--origin-rate '$origin_rate': want Mbit/s above 0"
    is_number "$delay" || die "--delay '$delay': want milliseconds (0 or more)"
    require_root

    local t0=$EPOCHREALTIME
    cmd_down
    mkdir -p "$state_dir"
    # Write the state first: a failed "up" is still cleaned by "down".
    {
        printf 'N=%q\nRATE=%q\nDOWN_RATE=%q\nORIGIN_RATE=%q\nDELAY=%q\n' \
            "$n" "$rate" "$down_rate" "$origin_rate" "$delay"
    } > "$state_file"

    make_ns "$sw_ns"
    ip -n "$sw_ns" link add name "$bridge" type bridge stp_state 0 forward_delay 0 \
        mcast_snooping 0 || die "bridge $bridge failed"
    ip -n "$sw_ns" link set "$bridge" up
    add_member origin o "$origin_rate" "$origin_rate" "$delay"
    local i
    for ((i = 1; i <= n; i++)); do
        add_member "$i" "n$i" "$rate" "$down_rate" "$delay"
    done
    local took
    took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "cluster $prefix: origin $(addr_of origin), nodes 1..$n at $(addr_of 1)..$(addr_of "$n") (/16);" \
         "links $rate Mbit/s up, $down_rate down, origin $origin_rate Mbit/s; added delay $delay ms; up in $took s"
}

# ---- exec, addr, status -------------------------------------------------

cmd_exec() {
    (($# >= 2)) || die "exec NODE CMD [ARGS...]"
    local ns
    ns=$(ns_of "$1")
    shift
    [[ -e /run/netns/$ns ]] || die "namespace $ns does not exist (cluster not up?)"
    exec ip netns exec "$ns" "$@"
}

cmd_status() {
    load_state
    local ns missing=0 i
    for ns in "$sw_ns" "$(ns_of origin)"; do
        [[ -e /run/netns/$ns ]] || { note "missing namespace $ns"; missing=1; }
    done
    for ((i = 1; i <= N; i++)); do
        ns=$(ns_of "$i")
        [[ -e /run/netns/$ns ]] || { note "missing namespace $ns"; missing=1; }
    done
    echo "cluster $prefix: $N nodes, links $RATE Mbit/s up, ${DOWN_RATE:-$RATE} down, origin $ORIGIN_RATE Mbit/s, added delay $DELAY ms"
    return $missing
}

# ---- probe --------------------------------------------------------------

# Can this host make namespaces, veth pairs, a bridge and HTB?  Uses a
# namespace of its own ("PREFIX-probe..."), removed at once.
cmd_probe() {
    [[ $(id -u) -eq 0 ]] || { echo "$prog: probe: not root" >&2; return 1; }
    command -v ip >/dev/null && command -v tc >/dev/null ||
        { echo "$prog: probe: ip or tc missing" >&2; return 1; }
    local ns=${prefix}probe$$ ok=1
    ip netns add "$ns" 2>/dev/null || { echo "$prog: probe: cannot create a network namespace" >&2; return 1; }
    {
        ip -n "$ns" link add name pa type veth peer name pb &&
        ip -n "$ns" link add name pbr type bridge &&
        ip -n "$ns" link set pa master pbr &&
        tc -n "$ns" qdisc add dev pa root handle 1: htb default 1 &&
        tc -n "$ns" class add dev pa parent 1: classid 1:1 htb rate 10mbit ceil 10mbit &&
        tc -n "$ns" qdisc add dev pa parent 1:1 handle 10: bfifo limit 262144
    } >/dev/null 2>&1 || ok=0
    local netem=no
    tc -n "$ns" qdisc add dev pb root netem delay 1ms >/dev/null 2>&1 && netem=yes
    ip netns delete "$ns"
    if ((ok)); then
        echo "$prog: probe: namespaces, veth, bridge, htb: yes; netem (--delay): $netem"
        return 0
    fi
    echo "$prog: probe: veth, bridge or htb missing in this kernel" >&2
    return 1
}

# ---- check --------------------------------------------------------------

# A CPU sampler: /proc/stat's first line every second into FILE.
cpu_sampler_start() {
    local file=$1
    (while :; do head -n1 /proc/stat; sleep 1; done) > "$file" &
    sampler_pid=$!
}
cpu_sampler_stop() {
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
}
# cpu_max FILE SKIP: the busiest 1-s interval in %, skipping SKIP intervals.
cpu_max() {
    awk -v skip="$2" '
        { tot = 0; for (i = 2; i <= NF; i++) tot += $i
          idle = $5 + $6
          if (NR > 1 && NR - 1 > skip && tot > ptot) {
              b = 100 * (1 - (idle - pidle) / (tot - ptot))
              if (b > max) max = b
          }
          ptot = tot; pidle = idle }
        END { printf "%.0f", max }' "$1"
}

# iperf_servers NODE...: one iperf3 server per NODE (on its address, port
# 5201, one test then exit), waits until each listens.
iperf_servers() {
    local node ns addr i
    for node in "$@"; do
        ns=$(ns_of "$node")
        addr=$(addr_of "$node")
        ip netns exec "$ns" iperf3 -s -1 -B "$addr" -p 5201 > "$tmp/server-$node.log" 2>&1 &
        server_pids+=($!)
    done
    for node in "$@"; do
        ns=$(ns_of "$node")
        for ((i = 0; i < 100; i++)); do
            ip netns exec "$ns" ss -Hltn 'sport = :5201' 2>/dev/null | grep -q . && break
            sleep 0.05
        done
        ((i < 100)) || die "check: iperf3 server in $ns did not listen"
    done
}

# transfer NAME SRC:DST...: TCP bulk transfers, all at once, of
# seconds + 1 s (the first second, slow start, is left out); sets
# rates[] (Mbit/s, received) and cpu (busiest second, %).
transfer() {
    local name=$1 pair src dst i
    shift
    local -a srcs=() dsts=() pids=()
    for pair in "$@"; do srcs+=("${pair%%:*}"); dsts+=("${pair##*:}"); done
    server_pids=()
    iperf_servers "${dsts[@]}"
    cpu_sampler_start "$tmp/cpu-$name"
    for ((i = 0; i < ${#srcs[@]}; i++)); do
        src=${srcs[i]}; dst=${dsts[i]}
        ip netns exec "$(ns_of "$src")" iperf3 -c "$(addr_of "$dst")" -p 5201 \
            -t $((seconds + 1)) -O 1 -J > "$tmp/$name-$i.json" 2> "$tmp/$name-$i.err" &
        pids+=($!)
    done
    local failed=0
    for ((i = 0; i < ${#pids[@]}; i++)); do
        wait "${pids[i]}" || failed=1
    done
    cpu_sampler_stop
    for pid in "${server_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ((failed == 0)) || die "check: iperf3 $name failed: $(cat "$tmp/$name"-*.err "$tmp"/server-*.log 2>/dev/null | head -n 5)"
    rates=()
    for ((i = 0; i < ${#srcs[@]}; i++)); do
        rates+=("$(jq -r '.end.sum_received.bits_per_second / 1e6' "$tmp/$name-$i.json")")
    done
    cpu=$(cpu_max "$tmp/cpu-$name" 1)
}

cmd_check() {
    local json=0 ring=1
    seconds=3
    while (($# > 0)); do
        case $1 in
            --seconds) seconds=${2:-}; shift 2 || die "--seconds needs a value" ;;
            --json) json=1; shift ;;
            --no-all) ring=0; shift ;;
            *) die "check: unknown option '$1'" ;;
        esac
    done
    [[ $seconds =~ ^[1-9][0-9]*$ ]] || die "--seconds '$seconds': want whole seconds >= 1"
    require_root
    load_state
    cmd_status >/dev/null || die "check: cluster $prefix is incomplete; run up again"
    command -v iperf3 >/dev/null || die "check: iperf3 not found (apt-get install iperf3)"
    command -v jq >/dev/null || die "check: jq not found (apt-get install jq)"

    tmp=$(mktemp -d /tmp/cluster-check.XXXXXX)
    trap 'cpu_sampler_stop 2>/dev/null; rm -rf "$tmp"' EXIT

    local -a lines=() js=()
    local lo=999 hi=0 cpu_all=0 before
    # How busy the host is before any transfer (other load skews the CPU).
    cpu_sampler_start "$tmp/cpu-before"
    sleep 1.2
    cpu_sampler_stop
    before=$(cpu_max "$tmp/cpu-before" 0)

    # add_result LABEL WANT RATE...: a line, the JSON, the extremes.
    add_result() {
        local label=$1 want=$2 min max mean
        shift 2
        read -r min max mean < <(printf '%s\n' "$@" | awk '
            NR == 1 { mn = $1; mx = $1 } { s += $1; if ($1 < mn) mn = $1; if ($1 > mx) mx = $1 }
            END { printf "%.2f %.2f %.2f\n", mn, mx, s / NR }')
        local rmin rmax
        rmin=$(awk -v a="$min" -v w="$want" 'BEGIN { printf "%.3f", a / w }')
        rmax=$(awk -v a="$max" -v w="$want" 'BEGIN { printf "%.3f", a / w }')
        lo=$(awk -v a="$lo" -v b="$rmin" 'BEGIN { print (b < a ? b : a) }')
        hi=$(awk -v a="$hi" -v b="$rmax" 'BEGIN { print (b > a ? b : a) }')
        ((cpu > cpu_all)) && cpu_all=$cpu
        if (($# == 1)); then
            lines+=("$(printf '%-34s %7.1f Mbit/s of %-6s (%.2f)  cpu max %3d%%' \
                "$label" "$min" "$want" "$rmin" "$cpu")")
        else
            lines+=("$(printf '%-34s %7.1f Mbit/s of %-6s (%.2f)  min, mean %.1f, max %.1f; cpu max %3d%%' \
                "$label" "$min" "$want" "$rmin" "$mean" "$max" "$cpu")")
        fi
        js+=("{\"test\":\"$label\",\"flows\":$#,\"want_mbit\":$want,\"min_mbit\":$min,\"mean_mbit\":$mean,\"max_mbit\":$max,\"cpu_max_pct\":$cpu}")
    }

    # A node-to-node flow runs at the slower of uplink and downlink.
    local down=${DOWN_RATE:-$RATE} n2n
    n2n=$(awk -v u="$RATE" -v d="$down" 'BEGIN { print (u < d ? u : d) }')
    if ((N >= 2)); then
        transfer n2n 1:2
        add_result "node 1 -> node 2" "$n2n" "${rates[@]}"
    fi
    # The origin sends to as many nodes as it takes to fill its link.
    local k want_o sum pairs=()
    k=$(awk -v o="$ORIGIN_RATE" -v r="$down" 'BEGIN { k = o / r; k = (k == int(k)) ? k : int(k) + 1; print (k < 1 ? 1 : k) }')
    ((k > N)) && k=$N
    for ((i = 1; i <= k; i++)); do pairs+=("origin:$i"); done
    want_o=$(awk -v o="$ORIGIN_RATE" -v r="$down" -v k="$k" 'BEGIN { w = k * r; print (w < o ? w : o) }')
    transfer o2n "${pairs[@]}"
    sum=$(printf '%s\n' "${rates[@]}" | awk '{ s += $1 } END { printf "%.2f", s }')
    add_result "origin -> nodes 1..$k (sum)" "$want_o" "$sum"
    if ((ring && N >= 2)); then
        pairs=()
        for ((i = 1; i <= N; i++)); do pairs+=("$i:$((i % N + 1))"); done
        transfer ring "${pairs[@]}"
        add_result "all $N nodes at once (ring)" "$n2n" "${rates[@]}"
    fi

    local verdict=PASS
    awk -v lo="$lo" -v hi="$hi" 'BEGIN { exit !(lo >= 0.9 && hi <= 1.1) }' || verdict=FAIL
    ((cpu_all < 80)) || verdict=FAIL
    local summary
    summary="emulation check: $N nodes, links $RATE Mbit/s$([[ $down == "$RATE" ]] || echo " up, $down down"), origin $ORIGIN_RATE Mbit/s, delay $DELAY ms: rate $(printf '%.2f' "$lo")-$(printf '%.2f' "$hi") of configured (want 0.90-1.10), host CPU max $cpu_all% (want < 80%; $before% before): $verdict"
    if ((json)); then
        local IFS=,
        printf '{"nodes":%s,"rate_mbit":%s,"down_rate_mbit":%s,"origin_rate_mbit":%s,"delay_ms":%s,"ratio_min":%s,"ratio_max":%s,"cpu_max_pct":%s,"cpu_before_pct":%s,"pass":%s,"tests":[%s]}\n' \
            "$N" "$RATE" "$down" "$ORIGIN_RATE" "$DELAY" "$lo" "$hi" "$cpu_all" "$before" \
            "$([[ $verdict == PASS ]] && echo true || echo false)" "${js[*]}"
    else
        printf '  %s\n' "${lines[@]}"
        echo "$summary"
    fi
    [[ $verdict == PASS ]] || exit 3
}

# ---- main ---------------------------------------------------------------

(($# >= 1)) || { usage >&2; exit 2; }
cmd=$1
shift
case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    exec) cmd_exec "$@" ;;
    addr) (($# == 1)) || die "addr NODE"; addr_of "$1" ;;
    status) cmd_status ;;
    check) cmd_check "$@" ;;
    probe) cmd_probe ;;
    -h|--help|help) usage ;;
    *) die "unknown command '$cmd' (up, down, exec, addr, status, check, probe)" ;;
esac
