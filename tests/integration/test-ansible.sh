#!/usr/bin/env bash
# thunder — deploy/ansible rolls thunder out (issue 7):
#  - ansible-playbook --syntax-check of site.yml with the sample inventory;
#  - ansible-lint (Debian's, offline: deploy/ansible/.ansible-lint) is clean;
#  - a real run of site.yml against localhost (connection local, the three
#    groups on this machine, no systemd: thunder_systemd false), every path
#    under this test's directory, its own ports, pool and user: thunder is
#    built from a snapshot of the source tree and installed, the tokens file
#    is made (0600), the origin, the node (and thunder-api when it is built)
#    run as the right users, the pool exists, the origin serves the test
#    guest image with a manifest;
#  - a second run (nodes one at a time, -e thunder_node_serial=1, as a
#    rolling upgrade runs) reports changed=0, and so does a run with --check;
#  - with thunder-api built, TLS is on (require): the API host made the CA,
#    every host has its certificates, the API and the node's control
#    endpoint speak HTTPS and refuse a client without a certificate;
#  - with thunder-api built: the node registered itself, the image is
#    registered, and POST /v1/clusters with count=2 reaches "running"; the
#    cluster is then deleted;
#  - with thunder-api built, the fleet switched to -e thunder_tls=off (per-node
#    enrolment, docs/security.md (b)): the node's enrolment token file is
#    root 0600 NAME:<64 hex>, the node registered at its plain addresses and
#    heartbeats over HTTP with it, the fleet token gets 403 for that name
#    (heartbeat and registration); a second run of the nodes' part (--tags
#    node) is changed=0 (no re-enrolment); with the file removed, one enrols
#    again: a new token, the old one 401, the node heartbeating again.
#  Without thunder-api (build/src/api/thunder-api) the last two parts are
#  skipped with a message.
# Everything started is stopped at exit: the daemons, the pool, the user,
# and virtlogd/libvirtd if the play started them.
set -euo pipefail
: "${TOP_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/libvirt-functions.sh"

requires_root
requires_program ansible-playbook ansible-lint
requires ansible-playbook --version
requires ansible-lint --version
requires_program openssl virsh libvirtd virtlogd qemu-img qemu-system-x86_64 jq curl \
    start-stop-daemon meson ninja nbdinfo
getent passwd libvirt-qemu >/dev/null ||
    skip "no user libvirt-qemu (install libvirt-daemon-system)"
getent group kvm >/dev/null || skip "no group kvm"

deploy=$TOP_SRCDIR/deploy/ansible
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0
export ANSIBLE_LOCAL_TEMP=$tmpdir/ansible-tmp ANSIBLE_REMOTE_TEMP=$tmpdir/ansible-tmp
export ANSIBLE_CONFIG=$deploy/ansible.cfg

api_built=false
[ -x "$TOP_BUILDDIR/src/api/thunder-api" ] && api_built=true

# ---- syntax and lint ---------------------------------------------------------

(cd "$deploy" && ansible-playbook --syntax-check -i inventory/sample/hosts.yml site.yml) \
    >"$tmpdir/syntax.log" 2>&1 ||
    { cat "$tmpdir/syntax.log" >&2; fail "ansible-playbook --syntax-check failed"; }

(cd "$deploy" && ansible-lint --nocolor) >"$tmpdir/lint.log" 2>&1 ||
    { cat "$tmpdir/lint.log" >&2; fail "ansible-lint found violations"; }
grep -q 'Passed with' "$tmpdir/lint.log" ||
    { cat "$tmpdir/lint.log" >&2; fail "ansible-lint: no 'Passed with' in its output"; }

# ---- the machine's state before, and its restoration -------------------------

user=thunder-ansible
getent passwd "$user" >/dev/null && fail "user $user exists already (another run?)"
getent group "$user" >/dev/null && fail "group $user exists already (another run?)"
_remove_user ()
{
    userdel "$user" >/dev/null 2>&1
    groupdel "$user" >/dev/null 2>&1
    return 0
}
cleanup_fn _remove_user

# "PIDFILE SOCKET" of each libvirt daemon: stopped at exit if the play
# started it (not running now, running after the play).
_daemon_running ()
{
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && _pid_running "$pid" && [ -S "$2" ]
}
virtlogd_before=false libvirtd_before=false
_daemon_running /run/virtlogd.pid /run/libvirt/virtlogd-sock && virtlogd_before=true
_daemon_running /run/libvirtd.pid /run/libvirt/libvirt-sock && libvirtd_before=true

root=$tmpdir/root
mkdir -m 0755 "$root"
pool=thunder-ansible-$$
cleanup_pool "$pool"

# The daemons' wrappers, stopped at exit (registered after the pool: run
# before it).
_stop_services ()
{
    local s
    for s in thunderd-node thunderd-origin thunder-api; do
        [ -x "$root/usr/local/libexec/thunder/$s" ] &&
            "$root/usr/local/libexec/thunder/$s" stop >/dev/null 2>&1
    done
    return 0
}
cleanup_fn _stop_services

# On failure, functions.sh shows the end of these logs.
_thunderd_logs+=("$root/var/log/thunder/thunderd-origin.log"
                 "$root/var/log/thunder/thunderd-node.log"
                 "$root/var/log/thunder/thunder-api.log")

cluster=ansible-c$$
_delete_domains ()
{
    local d
    for d in $(vsh list --all --name 2>/dev/null | grep -- "^$cluster-" || true); do
        _undefine_domain "$d"
    done
    return 0
}
cleanup_fn _delete_domains

# ---- the inventory -----------------------------------------------------------

# A snapshot of the source tree the play builds ($THUNDER_ANSIBLE_SOURCE,
# default this one): others may edit it while this test runs, and the
# second run must see the same tree as the first.
mkdir "$tmpdir/source"
tar -C "${THUNDER_ANSIBLE_SOURCE:-$TOP_SRCDIR}" --anchored --exclude=./build* --exclude=./.git --exclude=./tmp -cf - . |
    tar -C "$tmpdir/source" -xf - || fail "snapshot of $TOP_SRCDIR failed"

guestdir=$TOP_BUILDDIR/tests/guest
"$TOP_SRCDIR/tests/guest/build-guest.sh" "$guestdir" >/dev/null 2>"$tmpdir/guest-build.log" ||
    { cat "$tmpdir/guest-build.log" >&2; fail "building the test guest failed"; }
cp "$guestdir/guest.img" "$tmpdir/guest.img"

api_port=$(free_port)
origin_port=$(free_port)
node_port=$(free_port)
node_control_port=$(free_port)
origin_control_port=$(free_port)
[ "$(printf '%s\n' "$api_port" "$origin_port" "$node_port" "$node_control_port" \
     "$origin_control_port" | sort -u | wc -l)" -eq 5 ] || fail "free_port gave a port twice"

mkdir -p "$tmpdir/inventory/group_vars"
if $api_built; then
    api_group=$'\n          hosts:\n            localhost:'
else
    api_group=' {}'
fi
cat >"$tmpdir/inventory/hosts.yml" <<EOF
all:
  children:
    thunder:
      children:
        thunder_origin:
          hosts:
            localhost:
        thunder_nodes:
          hosts:
            localhost:
        thunder_api:$api_group
  vars:
    ansible_connection: local
    ansible_python_interpreter: /usr/bin/python3
EOF
cat >"$tmpdir/inventory/group_vars/thunder.yml" <<EOF
thunder_root: $root
thunder_source_dir: $tmpdir/source
thunder_systemd: false
thunder_apt_update_cache: false
thunder_user: $user
thunder_group: $user
thunder_bind_host: 127.0.0.1
thunder_advertise_host: 127.0.0.1
thunder_api_port: $api_port
thunder_origin_port: $origin_port
thunder_origin_control_port: $origin_control_port
thunder_node_port: $node_port
thunder_node_control_port: $node_control_port
thunder_node_name: ansible-node
thunder_node_zone: z1
# Heartbeats every second (thunderd's default is 5 s): the TLS-off part
# waits for one after each run.
thunder_node_extra_config:
  heartbeat-interval: 1000
thunder_pool_name: $pool
thunder_log_level: debug
thunder_prometheus_scrape_dir: $tmpdir/prometheus
thunder_origin_images:
  - name: guest
    file: guest.img
    src: $tmpdir/guest.img
EOF

# play LOG [ARGS...]  — runs site.yml; fails unless the recap says
# failed=0 unreachable=0; sets $changed (the recap's changed= of localhost).
play ()
{
    local log=$1 recap status=0
    shift
    local t0=$SECONDS
    echo "$0: ansible-playbook site.yml $*" >&2
    (cd "$deploy" && ansible-playbook -i "$tmpdir/inventory/hosts.yml" site.yml "$@") \
        >"$log" 2>&1 || status=$?
    echo "$0: ... $((SECONDS - t0)) s" >&2
    if [ "${status:-0}" -ne 0 ]; then
        tail -n 60 "$log" >&2
        fail "ansible-playbook $*: exit status $status"
    fi
    recap=$(grep -E '^localhost +: ' "$log" | tail -n 1) ||
        { tail -n 30 "$log" >&2; fail "ansible-playbook $*: no PLAY RECAP line"; }
    echo "$0: $recap" >&2
    if ! [[ "$recap" =~ \ failed=0\  ]] || ! [[ "$recap" =~ \ unreachable=0\  ]]; then
        tail -n 60 "$log" >&2
        fail "ansible-playbook $*: $recap"
    fi
    [[ "$recap" =~ changed=([0-9]+) ]] || fail "no changed= in: $recap"
    changed=${BASH_REMATCH[1]}
}

# changed_tasks LOG  — the names of the tasks that reported changed.
changed_tasks ()
{
    awk '/^TASK \[/ { t = $0 } /^changed:/ { print t }' "$1" | sort -u
}

# ---- first run ---------------------------------------------------------------

play "$tmpdir/run1.log"
[ "$changed" -gt 0 ] || fail "first run changed nothing"

# Stop at exit whatever libvirt daemon the play started.
$virtlogd_before || ! _daemon_running /run/virtlogd.pid /run/libvirt/virtlogd-sock ||
    cleanup_fn _stop_daemon virtlogd /run/virtlogd.pid "$(cat /run/virtlogd.pid)"
$libvirtd_before || ! _daemon_running /run/libvirtd.pid /run/libvirt/libvirt-sock ||
    cleanup_fn _stop_daemon libvirtd /run/libvirtd.pid "$(cat /run/libvirtd.pid)"

prefix=$root/usr/local
for f in "$prefix/sbin/thunderd" "$prefix/bin/thunderctl"; do
    [ -x "$f" ] || fail "not installed: $f"
done
# The status page is installed with thunder-api; the scrape jobs the api
# role wrote name the node and the origin with the node token, and
# promtool accepts them.
for f in index.html app.js app.css; do
    [ -s "$prefix/share/thunder/ui/$f" ] || fail "status page not installed: $prefix/share/thunder/ui/$f"
done
if command -v promtool >/dev/null; then
    out=$(promtool check config "$tmpdir/prometheus/thunder.yml" 2>&1) ||
        fail "promtool check config of the role's scrape jobs: $out"
    grep -q "127.0.0.1:$node_control_port" "$tmpdir/prometheus/thunder.yml" ||
        fail "scrape jobs without the node: $(cat "$tmpdir/prometheus/thunder.yml")"
fi
$api_built && { [ -x "$prefix/bin/thunder-api" ] || fail "not installed: $prefix/bin/thunder-api"; }
[ -f "$prefix/share/thunder/installed-source" ] || fail "no install stamp"

secrets=$tmpdir/inventory/thunder-secrets.yml
[ "$(stat -c %a "$secrets")" = 600 ] || fail "$secrets: mode $(stat -c %a "$secrets"), want 600"
grep -Eq '^thunder_api_token: "[A-Za-z0-9]{48}"$' "$secrets" || fail "$secrets: no thunder_api_token"
grep -Eq '^thunder_node_token: "[A-Za-z0-9]{48}"$' "$secrets" || fail "$secrets: no thunder_node_token"
api_token=$(sed -n 's/^thunder_api_token: "\(.*\)"$/\1/p' "$secrets")
node_token=$(sed -n 's/^thunder_node_token: "\(.*\)"$/\1/p' "$secrets")
etc=$root/etc/thunder
[ "$(cat "$etc/node.token")" = "$node_token" ] || fail "$etc/node.token is not the node token"
[ "$(stat -c %U:%G:%a "$etc/node.token")" = "root:$user:640" ] ||
    fail "$etc/node.token: $(stat -c %U:%G:%a "$etc/node.token"), want root:$user:640"
if $api_built; then
    [ "$(stat -c %U:%a "$etc/api.token")" = "$user:600" ] ||
        fail "$etc/api.token: $(stat -c %U:%a "$etc/api.token"), want $user:600"
fi
# With an API host, TLS is on (require): the API host keeps the CA, every
# host has its certificates (CN the node name) with the key 0640
# root:group; curl below verifies with them and presents the client
# certificate (a curlrc: -q turns it off).
scheme=http
origin_uri=nbd://127.0.0.1:$origin_port/guest
if $api_built; then
    scheme=https
    pki=$etc/pki
    origin_uri="nbds://127.0.0.1:$origin_port/guest?tls-certificates=$pki"
    for f in ca-cert.pem server-cert.pem client-cert.pem; do
        [ "$(stat -c %U:%G:%a "$pki/$f")" = "root:$user:644" ] ||
            fail "$pki/$f: $(stat -c %U:%G:%a "$pki/$f" 2>&1), want root:$user:644"
    done
    for f in server-key.pem client-key.pem; do
        [ "$(stat -c %U:%G:%a "$pki/$f")" = "root:$user:640" ] ||
            fail "$pki/$f: $(stat -c %U:%G:%a "$pki/$f" 2>&1), want root:$user:640"
    done
    [ "$(stat -c %a "$etc/pki-ca")" = 700 ] && [ -f "$etc/pki-ca/ca-key.pem" ] ||
        fail "no CA directory 0700 at $etc/pki-ca"
    openssl x509 -in "$pki/client-cert.pem" -noout -subject | grep -q "CN *= *ansible-node" ||
        fail "the node's certificate: $(openssl x509 -in "$pki/client-cert.pem" -noout -subject)"
    grep -qx 'tls = require' "$etc/thunder-api.conf" || fail "thunder-api.conf: no tls = require"
    grep -qx 'control-tls = require' "$etc/thunderd-node.conf" || fail "thunderd-node.conf: no control-tls = require"
    grep -qx 'tls = require' "$etc/thunderd-node.conf" && grep -qx 'tls = require' "$etc/thunderd-origin.conf" ||
        fail "thunderd-node.conf or thunderd-origin.conf: no tls = require (NBD)"
    mkdir "$tmpdir/curlhome"
    printf 'cacert = "%s"\ncert = "%s"\nkey = "%s"\n' "$pki/ca-cert.pem" \
        "$pki/client-cert.pem" "$pki/client-key.pem" > "$tmpdir/curlhome/.curlrc"
    export CURL_HOME=$tmpdir/curlhome
    code=$(curl -q -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca-cert.pem" \
           "https://127.0.0.1:$api_port/healthz") || true
    [ "$code" = 403 ] || fail "thunder-api answered $code to a client without a certificate, want 403"
fi
if grep -rlsq -- "$root" /etc/systemd/system; then
    fail "a systemd unit was installed with thunder_systemd false"
fi

# The daemons run, as their users.
libexec=$prefix/libexec/thunder
services=(thunderd-origin thunderd-node)
$api_built && services+=(thunder-api)
for s in "${services[@]}"; do
    out=$("$libexec/$s" status) || fail "$s is not running: $out"
    pid=${out#running }
    want=$user
    [ "$s" = thunderd-node ] && want=root
    [ "$(ps -o user= -p "$pid")" = "$want" ] ||
        fail "$s (pid $pid) runs as $(ps -o user= -p "$pid"), want $want"
done

# The origin serves the guest image (with its manifest), the node's socket
# is root:kvm 0660, the pool is there.
[ -f "$root/srv/thunder/images/guest.manifest.json" ] || fail "no manifest for the guest image"
out=$(nbdinfo --size "$origin_uri") ||
    fail "nbdinfo of the origin's export guest failed"
[ "$out" = "$(stat -c %s "$tmpdir/guest.img")" ] || fail "origin export guest: size $out"
sock=$root/run/thunder/thunderd.sock
[ -S "$sock" ] || fail "no node socket $sock"
[ "$(stat -c %U:%G:%a "$sock")" = root:kvm:660 ] ||
    fail "$sock: $(stat -c %U:%G:%a "$sock"), want root:kvm:660"
vsh pool-info "$pool" >"$tmpdir/pool-info" || fail "no pool $pool"
grep -Eq '^State: +running$' "$tmpdir/pool-info" || fail "pool $pool is not running"
grep -Eq '^Autostart: +yes$' "$tmpdir/pool-info" || fail "pool $pool does not autostart"
vsh pool-dumpxml "$pool" | grep -q "<path>$root/var/lib/thunder/pool</path>" ||
    fail "pool $pool is not at $root/var/lib/thunder/pool"
out=$(curl -sf -H "Authorization: Bearer $node_token" \
    "$scheme://127.0.0.1:$node_control_port/v1/node") || fail "GET /v1/node of the node failed"
jq -e --arg p "$pool" '.mode == "node" and .pool == $p' <<<"$out" >/dev/null ||
    fail "GET /v1/node: $out"
grep -qx 'stall-timeout = 120' "$etc/thunderd-node.conf" ||
    fail "$etc/thunderd-node.conf: no stall-timeout = 120"

# The systemd units the roles install where systemd runs (not here): render
# them for the programs just installed and let systemd-analyze check them.
if command -v systemd-analyze >/dev/null; then
    mkdir "$tmpdir/units"
    # render_unit TEMPLATE NAME EXEC USER RUNTIME_DIR PRIVATE_DEVICES
    render_unit ()
    {
        jq -n --arg name "$2" --arg exec "$3" --arg user "$4" --arg rt "$5" \
            --argjson pd "$6" --arg src "$root/usr/local/src/thunder" \
            --arg conf "$etc/$2.conf" --arg rw "$root/var/lib/thunder" \
            '{thunder_svc_name: $name, thunder_svc_description: $name,
              thunder_svc_exec: $exec, thunder_svc_config: $conf,
              thunder_svc_user: $user, thunder_svc_group: $user,
              thunder_svc_supplementary_groups: ["kvm"], thunder_svc_rw_paths: [$rw],
              thunder_svc_runtime_dir: $rt, thunder_svc_private_devices: $pd,
              thunder_svc_after: ["libvirtd.service"], thunder_src_dest: $src}' \
            >"$tmpdir/units/$2.json"
        ansible localhost -c local -m ansible.builtin.template \
            -a "src=$TOP_SRCDIR/deploy/systemd/$1 dest=$tmpdir/units/$2.service mode=0644" \
            -e "@$tmpdir/units/$2.json" >"$tmpdir/units/$2.log" 2>&1 ||
            { cat "$tmpdir/units/$2.log" >&2; fail "rendering deploy/systemd/$1 failed"; }
    }
    render_unit thunderd.service.j2 thunderd-origin "$prefix/sbin/thunderd" "$user" "" true
    render_unit thunderd.service.j2 thunderd-node "$prefix/sbin/thunderd" root thunder false
    units=("$tmpdir/units/thunderd-origin.service" "$tmpdir/units/thunderd-node.service")
    if $api_built; then
        render_unit thunder-api.service.j2 thunder-api "$prefix/bin/thunder-api" "$user" "" true
        units+=("$tmpdir/units/thunder-api.service")
    fi
    out=$(systemd-analyze verify "${units[@]}" 2>&1) || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    for u in "${units[@]}"; do
        for k in NoNewPrivileges=yes ProtectSystem=strict "ReadWritePaths=\"$root/var/lib/thunder\""; do
            grep -qxF -- "$k" "$u" || fail "$u: no $k"
        done
    done
    grep -qx 'SupplementaryGroups=kvm' "$tmpdir/units/thunderd-node.service" ||
        fail "thunderd-node.service: not in group kvm"
fi

# ---- idempotence -------------------------------------------------------------

# (As a rolling upgrade runs it: the nodes one at a time.)
play "$tmpdir/run2.log" -e thunder_node_serial=1
[ "$changed" -eq 0 ] ||
    fail "second run: changed=$changed: $(changed_tasks "$tmpdir/run2.log" | tr '\n' ' ')"

play "$tmpdir/run3.log" --check
[ "$changed" -eq 0 ] ||
    fail "run with --check: changed=$changed: $(changed_tasks "$tmpdir/run3.log" | tr '\n' ' ')"

# ---- provisioning through the deployed API -----------------------------------

if ! $api_built; then
    echo "$0: SKIPPED the cluster and TLS-off parts: $TOP_BUILDDIR/src/api/thunder-api is not built" >&2
    exit 0
fi

api=https://127.0.0.1:$api_port
auth="Authorization: Bearer $api_token"
out=$(curl -sf -H "$auth" "$api/v1/nodes/ansible-node") || fail "GET /v1/nodes/ansible-node failed"
jq -e '.state == "ready" and .labels.zone == "z1"' <<<"$out" >/dev/null ||
    fail "node ansible-node: $out"
out=$(curl -sf -H "$auth" "$api/v1/images/guest") || fail "GET /v1/images/guest failed"
jq -e --arg o "nbds://127.0.0.1:$origin_port" \
    --arg v "$(sha256 "$root/srv/thunder/images/guest.manifest.json")" \
    '.origin == $o and .version == $v' <<<"$out" >/dev/null || fail "image guest: $out"

out=$(curl -s -w '\n%{http_code}' -H "$auth" -H 'Content-Type: application/json' \
    --data-binary "{\"name\": \"$cluster\", \"image\": \"guest\", \"count\": 2,
                    \"vcpus\": 1, \"memory_mib\": 256}" "$api/v1/clusters") ||
    fail "POST /v1/clusters failed"
[ "$(tail -n 1 <<<"$out")" = 202 ] || fail "POST /v1/clusters: $out"
id=$(head -n -1 <<<"$out" | jq -r .id)
state=""
for (( i = 0; i < 300; ++i )); do
    out=$(curl -sf -H "$auth" "$api/v1/clusters/$id") || fail "GET /v1/clusters/$id failed"
    state=$(jq -r .state <<<"$out")
    case $state in running|failed) break ;; esac
    sleep 1
done
[ "$state" = running ] || fail "cluster $cluster: state $state after 300 s: $out"
jq -e '.counts.running == 2 and ([.vms[] | select(.state == "running")] | length) == 2' \
    <<<"$out" >/dev/null || fail "cluster $cluster is running but not both VMs: $out"
[ "$(vsh list --all --name | grep -c -- "^$cluster-")" -eq 2 ] ||
    fail "libvirt does not have the cluster's 2 domains"
# NBD over TLS on the node: plaintext refused; the fleet's certificate reads
# the image's first MiB.
nbdinfo --size "nbd://127.0.0.1:$node_port/guest" >/dev/null 2>&1 && fail "the node served a plaintext NBD client"
/usr/bin/python3 -c 'import nbd, sys; h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1]); sys.stdout.buffer.write(h.pread(1 << 20, 0))' \
    "nbds://127.0.0.1:$node_port/guest?tls-certificates=$pki" | cmp -s - <(head -c 1M "$tmpdir/guest.img") ||
    fail "the node over nbds:// does not serve the image's first MiB"

curl -sf -X DELETE -H "$auth" "$api/v1/clusters/$id" >/dev/null || fail "DELETE /v1/clusters/$id failed"
for (( i = 0; i < 120; ++i )); do
    state=$(curl -sf -H "$auth" "$api/v1/clusters/$id" | jq -r .state) || state=""
    [ "$state" = deleted ] && break
    sleep 1
done
[ "$state" = deleted ] || fail "cluster $cluster: state $state 120 s after DELETE"

# ---- TLS off: per-node enrolment tokens --------------------------------------

# The same fleet switched to thunder_tls off (docs/security.md "Node
# identity: three modes", (b)): the node role enrols the node with the
# operator token and thunderd registers and heartbeats over plain HTTP with
# its own token; the fleet token no longer speaks for that name.  (The
# packages were checked by the runs above: not again, ~2 s a task.)
off=(-e thunder_tls=off -e thunder_install_packages=false)
api=http://127.0.0.1:$api_port
enrolfile=$etc/node-enrolment.token
iso_now () { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# enrolment_token  — the token in $enrolfile, checked: root (the node
# user) 0600, NAME:<64 hex>.
enrolment_token ()
{
    [ "$(stat -c %U:%G:%a "$enrolfile" 2>&1)" = root:root:600 ] ||
        fail "$enrolfile: $(stat -c %U:%G:%a "$enrolfile" 2>&1), want root:root:600"
    grep -Eqx 'ansible-node:[0-9a-f]{64}' "$enrolfile" ||
        fail "$enrolfile: not ansible-node:<64 hex>: $(wc -c <"$enrolfile") bytes"
    cat "$enrolfile"
}

# node_fresh SINCE  — waits until thunder-api lists ansible-node ready at
# its plain addresses (registered over HTTP), with a heartbeat after SINCE
# (ISO time): the node restarted by the play sends heartbeats its token
# only can make (the fleet token is refused for an enrolled name).
node_fresh ()
{
    local out="" i
    for (( i = 0; i < 20; ++i )); do
        out=$(curl -q -sf -H "$auth" "$api/v1/nodes") || fail "GET $api/v1/nodes failed"
        jq -e --arg t "$1" --arg n "nbd://127.0.0.1:$node_port" \
            --arg c "http://127.0.0.1:$node_control_port" \
            '.nodes[] | select(.name == "ansible-node") | .state == "ready" and .nbd_uri == $n
             and .control_url == $c and .last_heartbeat_at > $t' \
            <<<"$out" >/dev/null && return 0
        sleep 0.5
    done
    fail "node ansible-node is not ready and heartbeating since $1 over HTTP: $out"
}

# heartbeat TOKEN  — the HTTP status of a heartbeat of ansible-node with
# TOKEN; its body in $tmpdir/heartbeat.json.
heartbeat ()
{
    curl -q -s -o "$tmpdir/heartbeat.json" -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $1" -H 'Content-Type: application/json' -d '{}' \
        "$api/v1/nodes/ansible-node/heartbeat" || true
}

play "$tmpdir/run-off1.log" "${off[@]}"
t=$(iso_now)
grep -q '^tls' "$etc/thunder-api.conf" && fail "thunder-api.conf: tls with thunder_tls off"
grep -Eq '^(control-)?tls' "$etc/thunderd-node.conf" && fail "thunderd-node.conf: tls with thunder_tls off"
grep -qx "api = $api" "$etc/thunderd-node.conf" && grep -qx "node-token-file = $enrolfile" "$etc/thunderd-node.conf" ||
    fail "thunderd-node.conf: not api = $api with node-token-file = $enrolfile"
token1=$(enrolment_token)
node_fresh "$t"
code=$(heartbeat "$node_token")
[ "$code" = 403 ] && jq -e '.error.message | test("is enrolled")' "$tmpdir/heartbeat.json" >/dev/null ||
    fail "a heartbeat of the enrolled node with the fleet token: $code $(cat "$tmpdir/heartbeat.json"), want 403"
code=$(heartbeat "$token1")
[ "$code" = 200 ] || fail "a heartbeat with the enrolment token: $code $(cat "$tmpdir/heartbeat.json")"
# Nor may the fleet token register the name elsewhere (node_fresh below
# checks that the addresses stayed).
code=$(curl -q -s -o "$tmpdir/register.json" -w '%{http_code}' \
    -H "Authorization: Bearer $node_token" -H 'Content-Type: application/json' \
    --data-binary '{"name": "ansible-node", "nbd_uri": "nbd://127.0.0.1:1",
                    "control_url": "http://127.0.0.1:1",
                    "capacity": {"vcpus": 1, "memory_mib": 256, "disk_gib": 1}}' \
    "$api/v1/nodes") || true
[ "$code" = 403 ] ||
    fail "a registration of the enrolled node with the fleet token: $code $(cat "$tmpdir/register.json"), want 403"

# Idempotent: the file is there, the node is not enrolled again (the
# nodes' part: api and origin did what they do with TLS on, above).
play "$tmpdir/run-off2.log" "${off[@]}" --tags node
[ "$changed" -eq 0 ] ||
    fail "second run with TLS off: changed=$changed: $(changed_tasks "$tmpdir/run-off2.log" | tr '\n' ' ')"
[ "$(enrolment_token)" = "$token1" ] || fail "the second run changed the enrolment token"

# Rotation: without the file the play enrols again (rotate) and restarts
# the node with the new token; the old one is refused.  Only the nodes'
# part of the play (--tags node) is needed.
rm "$enrolfile"
play "$tmpdir/run-off3.log" "${off[@]}" --tags node
[ "$(changed_tasks "$tmpdir/run-off3.log" | grep -c -e 'Enrol the node' -e "Install the node's enrolment token" \
     -e 'Start without systemd thunderd-node')" -eq 3 ] ||
    fail "rotation run: changed tasks: $(changed_tasks "$tmpdir/run-off3.log" | tr '\n' ' ')"
t=$(iso_now)
grep -q 'node ansible-node enrolled again' "$root/var/log/thunder/thunder-api.log" ||
    fail "thunder-api did not log the node's enrolment again"
token2=$(enrolment_token)
[ "$token2" != "$token1" ] || fail "the enrolment token did not change"
code=$(heartbeat "$token1")
[ "$code" = 401 ] || fail "a heartbeat with the rotated-out token: $code $(cat "$tmpdir/heartbeat.json"), want 401"
node_fresh "$t"
