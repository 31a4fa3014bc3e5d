#!/usr/bin/env bash
# thunder — the libvirt pool (src/pool) with a real libvirtd:
#  - "thunderctl pool ensure" makes a dir pool (active, autostart, its path),
#    again is a no-op, restarts an inactive pool and rebuilds its directory;
#    a pool of that name with another path or another type is refused, and a
#    path that is a regular file defines nothing;
#  - an anchor (tests/tools/pool-anchor, standing in for thunderd's attach)
#    over an origin thunderd's Unix socket: kept when unchanged; VM volumes
#    on it through "virsh vol-create", "virsh vol-create-as" and "thunderctl
#    vol create" (default capacity, larger, smaller refused); vol-dumpxml
#    shows the chain; dependents (also made by hand, also two deep) are
#    listed and block the anchor's removal and replacement;
#  - failures leave nothing behind: a vol.xml naming a missing anchor, an
#    image with no anchor, an anchor whose thunderd does not serve;
#  - "thunderctl vm create" starts a tiny TCG domain (it sits in SeaBIOS on a
#    disk of test pattern; it is never booted) and "vm delete" removes it and
#    its volume; --accel auto picks what kvm_really_works says; a domain that
#    cannot be defined or cannot start is undone.
# Slow where libvirt re-probes QEMU's capabilities on every call (a
# /dev/kvm that QEMU opens but that libvirt-qemu may not access, e.g. mode
# 0600): each domain define or start then takes tens of seconds.
# (Output is captured before grep -q: with pipefail, "virsh ... | grep -q"
# fails whenever grep exits before virsh has written everything.)
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/libvirt-functions.sh"

requires_program jq qemu-img stat xmllint
start_libvirt

anchor_tool=$TEST_TOOLS_DIR/pool-anchor
[ -x "$anchor_tool" ] || fail "test tool not built: $anchor_tool"

pool=$(test_pool_name)
pooldir=$tmpdir/pool
cleanup_pool "$pool"
# Every thunderctl below works on the test pool unless told otherwise.
export THUNDER_POOL=$pool THUNDER_POOL_PATH=$pooldir
export THUNDER_LIBVIRT_URI=$LIBVIRT_URI

ctl () { "$THUNDERCTL" "$@"; }

# must_fail PATTERN CMD...  — CMD must exit 1 with one line on stderr,
# "thunderctl: ..." or "pool-anchor: ...", matching the ERE PATTERN.
must_fail ()
{
    local pattern=$1 err rc=0
    shift
    err=$("$@" 2>&1 >/dev/null) || rc=$?
    [ "$rc" -eq 1 ] || fail "$*: exit $rc, want 1 (stderr: $err)"
    [ "$(wc -l <<<"$err")" -eq 1 ] || fail "$*: want one line on stderr, got: $err"
    grep -Eq -- "$pattern" <<<"$err" || fail "$*: stderr does not match /$pattern/: $err"
}

pool_xpath () { vsh pool-dumpxml "$1" | xmllint --xpath "$2" - 2>/dev/null; }
vol_xpath () { vsh vol-dumpxml --pool "$pool" "$1" | xmllint --xpath "$2" - 2>/dev/null; }
vol_names () { vsh vol-list "$pool" | awk '{ print $1 }' | sort | tr '\n' ' '; }

# ---- pool ensure ---------------------------------------------------------------

out=$(ctl pool ensure) || fail "pool ensure: $out"
[ "$out" = "pool $pool at $pooldir: active, autostart" ] ||
    fail "pool ensure printed: $out"
info=$(vsh pool-info "$pool")
grep -Eq '^State: +running' <<<"$info" || fail "pool not running: $info"
grep -Eq '^Autostart: +yes' <<<"$info" || fail "pool not autostarted: $info"
[ "$(pool_xpath "$pool" 'string(/pool/@type)')" = dir ] || fail "pool type is not dir"
[ "$(pool_xpath "$pool" 'string(/pool/target/path)')" = "$pooldir" ] ||
    fail "pool path is $(pool_xpath "$pool" 'string(/pool/target/path)')"
[ "$(stat -c %a "$pooldir")" = 755 ] || fail "pool dir mode $(stat -c %a "$pooldir")"
uuid=$(vsh pool-uuid "$pool")

# Again: nothing changes.  The same path spelled otherwise is the same.
ctl pool ensure >/dev/null || fail "second pool ensure"
ctl pool ensure --pool-path "$tmpdir/x/../pool/" >/dev/null ||
    fail "pool ensure with a non-canonical spelling of the path"
ln -s "$pooldir" "$tmpdir/link"
ctl pool ensure --pool-path "$tmpdir/link" >/dev/null ||
    fail "pool ensure through a symlink to the path"
[ "$(vsh pool-uuid "$pool")" = "$uuid" ] || fail "pool ensure redefined the pool"

# Inactive, and its directory gone: started again, directory rebuilt.
vsh pool-destroy "$pool" >/dev/null
rmdir "$pooldir"
ctl pool ensure >/dev/null || fail "pool ensure of an inactive pool"
[ -d "$pooldir" ] || fail "pool ensure did not rebuild $pooldir"
grep -Eq '^State: +running' <<<"$(vsh pool-info "$pool")" || fail "pool not restarted"

# Another path: refused, nothing made there.
must_fail "storage pool $pool exists with path $pooldir, not $tmpdir/other" \
    ctl pool ensure --pool-path "$tmpdir/other"
[ ! -e "$tmpdir/other" ] || fail "a refused pool ensure made $tmpdir/other"

# A regular file as the path: refused, nothing defined.
touch "$tmpdir/file"
fpool=$(test_pool_name f)
cleanup_pool "$fpool"
must_fail "storage pool $fpool: its path $tmpdir/file exists and is not a directory; nothing was defined" \
    ctl pool ensure --pool "$fpool" --pool-path "$tmpdir/file"
if grep -qx "$fpool" <<<"$(vsh pool-list --all --name)"; then
    fail "pool $fpool was defined"
fi

# Another type (an 'fs' pool, defined, never started): refused, untouched.
tpool=$(test_pool_name fs)
cleanup_pool "$tpool"
vsh pool-define-as "$tpool" fs --source-dev /dev/null --target "$tmpdir/fs" >/dev/null ||
    fail "virsh pool-define-as $tpool fs"
must_fail "storage pool $tpool exists with type 'fs'" \
    ctl pool ensure --pool "$tpool" --pool-path "$tmpdir/fs"
[ "$(pool_xpath "$tpool" 'string(/pool/@type)')" = fs ] || fail "pool $tpool changed"
grep -Eq '^State: +inactive' <<<"$(vsh pool-info "$tpool")" || fail "pool $tpool was started"

# ---- anchors -------------------------------------------------------------------

images=$tmpdir/images
mkdir "$images"
make_image "$images/img.raw" 8 4096
size=$(stat -c %s "$images/img.raw")
image_add img "$images/img.raw" >/dev/null
start_origin "$images"
osock=$tmpdir/origin.sock
# The backing: thunderd's export as a QEMU json: name with NBD reconnect
# options (pool_anchor_backing).
url="json:{\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$osock\"},\"export\":\"img\",\"reconnect-delay\":60,\"open-timeout\":5}}"

"$anchor_tool" ensure "$pool" "$pooldir" img "$size" raw "$osock" ||
    fail "pool-anchor ensure img"
anchor=$pooldir/img.base
[ -f "$anchor" ] || fail "no anchor $anchor"
[ "$(stat -c %a "$anchor")" = 644 ] || fail "anchor mode $(stat -c %a "$anchor")"
[ "$(vol_xpath img.base 'string(/volume/backingStore/path)')" = "$url" ] ||
    fail "anchor backing: $(vol_xpath img.base 'string(/volume/backingStore/path)')"
[ "$(vol_xpath img.base 'string(/volume/backingStore/format/@type)')" = raw ] ||
    fail "anchor backing format is not raw"
[ "$(vol_xpath img.base 'string(/volume/capacity)')" = "$size" ] ||
    fail "anchor capacity is not $size"
qemu-img info -U --output=json "$anchor" |
    jq -e --arg url "$url" '."backing-filename" == $url and ."virtual-size" > 0' >/dev/null ||
    fail "qemu-img info $anchor: $(qemu-img info -U "$anchor")"
ino=$(stat -c %i "$anchor")
"$anchor_tool" ensure "$pool" "$pooldir" img "$size" raw "$osock" ||
    fail "pool-anchor ensure img, again"
[ "$(stat -c %i "$anchor")" = "$ino" ] || fail "an unchanged anchor was remade"
! grep -q '^\.' <<<"$(ls -A "$pooldir")" || fail "temporary files left in $pooldir: $(ls -A "$pooldir")"
[ -z "$("$anchor_tool" dependents "$pool" "$pooldir" img)" ] ||
    fail "a new anchor has dependents"

# VM volumes: virsh vol-create with a vol.xml naming the anchor ...
cat > "$tmpdir/vol.xml" <<EOF
<volume>
  <name>vm-a.qcow2</name>
  <capacity unit='bytes'>$size</capacity>
  <target><format type='qcow2'/></target>
  <backingStore><path>$anchor</path><format type='qcow2'/></backingStore>
</volume>
EOF
vsh vol-create "$pool" "$tmpdir/vol.xml" >/dev/null || fail "virsh vol-create vm-a.qcow2"
[ "$(vol_xpath vm-a.qcow2 'string(/volume/backingStore/path)')" = "$anchor" ] ||
    fail "vm-a.qcow2 is not backed by the anchor: $(vsh vol-dumpxml --pool "$pool" vm-a.qcow2)"
[ "$(vol_xpath vm-a.qcow2 'string(/volume/backingStore/format/@type)')" = qcow2 ] ||
    fail "vm-a.qcow2 backing format is not qcow2"

# ... virsh vol-create-as --backing-vol ...
vsh vol-create-as "$pool" vm-b.qcow2 "$size" --format qcow2 \
    --backing-vol img.base --backing-vol-format qcow2 >/dev/null ||
    fail "virsh vol-create-as vm-b.qcow2"
[ "$(vol_xpath vm-b.qcow2 'string(/volume/backingStore/path)')" = "$anchor" ] ||
    fail "vm-b.qcow2 is not backed by the anchor"

# ... and thunderctl vol create: the image's size, a larger one; a smaller
# one, a taken name, an anchor's name are refused.
out=$(ctl vol create vm-c --image img) || fail "vol create vm-c: $out"
[ "$out" = "$pooldir/vm-c" ] || fail "vol create vm-c printed: $out"
[ "$(vol_xpath vm-c 'string(/volume/capacity)')" = "$size" ] ||
    fail "vm-c capacity $(vol_xpath vm-c 'string(/volume/capacity)'), want $size"
[ "$(vol_xpath vm-c 'string(/volume/backingStore/path)')" = "$anchor" ] ||
    fail "vm-c is not backed by the anchor"
[ "$(stat -c %a "$pooldir/vm-c")" = 600 ] || fail "vm-c mode $(stat -c %a "$pooldir/vm-c")"
ctl vol create vm-d --image img --size 64M >/dev/null || fail "vol create vm-d --size 64M"
[ "$(vol_xpath vm-d 'string(/volume/capacity)')" = $(( 64 * 1048576 )) ] ||
    fail "vm-d capacity $(vol_xpath vm-d 'string(/volume/capacity)')"
must_fail "volume vm-e: capacity 1048576 bytes is smaller than image img \\($size bytes\\)" \
    ctl vol create vm-e --image img --size 1M
must_fail "volume vm-c already exists in storage pool $pool" ctl vol create vm-c --image img
must_fail "ends with '.base'" ctl vol create other.base --image img
must_fail "image name 'a/b' is not valid" ctl vol create vm-f --image a/b
must_fail "--size 'lots': expected a size" ctl vol create vm-f --image img --size lots
[ ! -e "$pooldir/vm-e" ] || fail "a refused vol create left vm-e"

# The chain, end to end: qemu-img reads the image through vm-c → anchor → NBD.
qemu-img compare -U -f qcow2 -F raw "$pooldir/vm-c" "$images/img.raw" >/dev/null ||
    fail "vm-c does not read as the image"

# By hand: an overlay of the anchor, and an overlay of a VM volume.
qemu-img create -q -f qcow2 -u -F qcow2 -b "$anchor" "$pooldir/byhand.qcow2" "$size"
qemu-img create -q -f qcow2 -u -F qcow2 -b "$pooldir/vm-c" "$pooldir/snap.qcow2" "$size"

want="byhand.qcow2 snap.qcow2 vm-a.qcow2 vm-b.qcow2 vm-c vm-d"
deps=$("$anchor_tool" dependents "$pool" "$pooldir" img | tr '\n' ' ')
[ "$deps" = "$want " ] || fail "dependents: '$deps', want '$want '"
[ "$(vol_names)" = "byhand.qcow2 img.base snap.qcow2 vm-a.qcow2 vm-b.qcow2 vm-c vm-d " ] ||
    fail "vol-list: $(vol_names)"

# The anchor can be neither removed nor replaced while they depend on it.
must_fail "^pool-anchor: BUSY: anchor img.base in storage pool $pool cannot be removed: 6 volumes depend on it: ${want// /, }\$" \
    "$anchor_tool" remove "$pool" "$pooldir" img
must_fail "^pool-anchor: BUSY: anchor img.base in storage pool $pool cannot be replaced: 6 volumes depend on it: .*wanted json:.*\"path\":\"$tmpdir/other.sock\"" \
    "$anchor_tool" ensure "$pool" "$pooldir" img "$size" raw "$tmpdir/other.sock"
[ "$(stat -c %i "$anchor")" = "$ino" ] || fail "a busy anchor was replaced"
[ "$(vol_xpath img.base 'string(/volume/backingStore/path)')" = "$url" ] ||
    fail "a busy anchor changed"

# An anchor made before the reconnect options (backing: the plain URL of the
# same export) is upgraded in place although volumes depend on it: both
# read the same bytes.
qemu-img create -q -f qcow2 -u -F raw -b "nbd+unix:///img?socket=$osock" \
    "$pooldir/.legacy" "$size"
chmod 0644 "$pooldir/.legacy"
mv "$pooldir/.legacy" "$anchor"
vsh pool-refresh "$pool" >/dev/null
"$anchor_tool" ensure "$pool" "$pooldir" img "$size" raw "$osock" ||
    fail "pool-anchor ensure of a legacy anchor with dependents"
[ "$(vol_xpath img.base 'string(/volume/backingStore/path)')" = "$url" ] ||
    fail "a legacy anchor was not upgraded: $(vol_xpath img.base 'string(/volume/backingStore/path)')"
deps=$("$anchor_tool" dependents "$pool" "$pooldir" img | tr '\n' ' ')
[ "$deps" = "$want " ] || fail "dependents after the upgrade: '$deps', want '$want '"
qemu-img compare -U -f qcow2 -F raw "$pooldir/vm-c" "$images/img.raw" >/dev/null ||
    fail "vm-c does not read as the image after its anchor's upgrade"

# ---- failures leave nothing behind -------------------------------------------------

before=$(vol_names)
sed -e 's/vm-a.qcow2/vm-g.qcow2/' -e 's/img\.base/nope.base/' "$tmpdir/vol.xml" > "$tmpdir/vol-bad.xml"
if err=$(vsh vol-create "$pool" "$tmpdir/vol-bad.xml" 2>&1); then
    fail "virsh vol-create with a missing anchor succeeded"
fi
grep -q "inaccessible backing store volume $pooldir/nope.base" <<<"$err" ||
    fail "virsh vol-create with a missing anchor: unexpected error: $err"
[ "$(vol_names)" = "$before" ] || fail "a failed vol-create left: $(vol_names)"

must_fail "image nope is not attached on this node: storage pool $pool has no anchor volume nope.base" \
    ctl vol create vm-g --image nope

# An anchor whose thunderd is not serving: made (-u), but a VM volume on it
# fails with libvirt's (qemu-img's) message, and nothing stays.
"$anchor_tool" ensure "$pool" "$pooldir" ghost 1M raw "$tmpdir/nobody.sock" ||
    fail "pool-anchor ensure ghost"
before=$(vol_names)
must_fail "volume vm-g \\(image ghost\\) in storage pool $pool: .*($tmpdir/nobody.sock|Failed to connect)" \
    ctl vol create vm-g --image ghost
[ "$(vol_names)" = "$before" ] || fail "a failed vol create left: $(vol_names)"
[ ! -e "$pooldir/vm-g" ] || fail "a failed vol create left $pooldir/vm-g"
"$anchor_tool" remove "$pool" "$pooldir" ghost || fail "pool-anchor remove ghost"
[ ! -e "$pooldir/ghost.base" ] || fail "ghost.base was not removed"
"$anchor_tool" remove "$pool" "$pooldir" ghost || fail "pool-anchor remove of an absent anchor"

# vol delete: a VM volume goes; an anchor, a missing volume are refused.
ctl vol delete vm-d >/dev/null || fail "vol delete vm-d"
[ ! -e "$pooldir/vm-d" ] || fail "vol delete left $pooldir/vm-d"
must_fail "volume img.base is the anchor of an image" ctl vol delete img.base
must_fail "storage pool $pool has no volume vm-d" ctl vol delete vm-d

# ---- VMs -----------------------------------------------------------------------------

vm=$(test_pool_name vm)
cleanup_domain "$vm"
cleanup_fn rm -f "/var/log/thunder/vm/$vm.log"
out=$(ctl vm create "$vm" --image img --vcpus 1 --memory 64 --accel tcg) ||
    fail "vm create $vm: $out"
[ "$out" = "domain $vm started (tcg)
console log /var/log/thunder/vm/$vm.log" ] || fail "vm create printed: $out"
[ "$(vsh domstate "$vm")" = running ] || fail "domain $vm is $(vsh domstate "$vm")"
xml=$(vsh dumpxml "$vm")
dx () { xmllint --xpath "$1" - 2>/dev/null <<<"$xml"; }
[ "$(dx 'string(/domain/@type)')" = qemu ] || fail "domain type $(dx 'string(/domain/@type)')"
[ "$(dx 'string(/domain/devices/disk/source/@pool)')" = "$pool" ] ||
    fail "domain disk: $(dx '/domain/devices/disk')"
[ "$(dx 'string(/domain/devices/disk/source/@volume)')" = "$vm.qcow2" ] ||
    fail "domain disk: $(dx '/domain/devices/disk')"
[ "$(dx 'string(/domain/devices/serial/log/@file)')" = "/var/log/thunder/vm/$vm.log" ] ||
    fail "serial log: $(dx '/domain/devices/serial')"
[ "$(dx 'count(/domain/devices/interface)')" = 0 ] || fail "the domain has a network"
[ "$(dx 'count(/domain/devices/graphics)')" = 0 ] || fail "the domain has graphics"
[ -f "/var/log/thunder/vm/$vm.log" ] || fail "no console log /var/log/thunder/vm/$vm.log"
[ "$(stat -c %a /var/log/thunder/vm)" = 755 ] || fail "console log dir mode"
grep -qw "$vm.qcow2" <<<"$(vol_names)" || fail "no volume $vm.qcow2: $(vol_names)"

must_fail "domain $vm already exists" ctl vm create "$vm" --image img --vcpus 1 --memory 64
must_fail "cannot be removed: 6 volumes depend on it: .*$vm.qcow2" \
    "$anchor_tool" remove "$pool" "$pooldir" img

ctl vm delete "$vm" >/dev/null || fail "vm delete $vm"
if vsh dominfo "$vm" >/dev/null 2>&1; then fail "domain $vm still exists"; fi
[ ! -e "$pooldir/$vm.qcow2" ] || fail "vm delete left $vm.qcow2"
must_fail "no domain $vm and no volume $vm.qcow2 in storage pool $pool" ctl vm delete "$vm"

# A domain libvirt refuses to define (more vCPUs than machine 'pc' takes):
# its volume is deleted again, libvirt's message is passed on.
vm2=$(test_pool_name vm2)
cleanup_domain "$vm2"
before=$(vol_names)
must_fail "domain $vm2: defining it: .*255" \
    ctl vm create "$vm2" --image img --vcpus 1000 --memory 64 --accel tcg
if vsh dominfo "$vm2" >/dev/null 2>&1; then fail "a failed vm create left domain $vm2"; fi
[ "$(vol_names)" = "$before" ] || fail "a failed vm create left: $(vol_names)"

# --accel auto: KVM only if a real-mode → protected-mode program runs under
# it (kvm_really_works asks QEMU, independently of pool_kvm_usable).  Shown
# by a domain that cannot start (more memory than the kernel lets QEMU map;
# with overcommit_memory=1 it would start, so then it must start): it is
# undone, no domain, no volume, libvirt's message.
if kvm_really_works; then want_accel=kvm want_type=kvm; else want_accel=tcg want_type=qemu; fi
vm3=$(test_pool_name vm3)
cleanup_domain "$vm3"
before=$(vol_names)
if [ "$(cat /proc/sys/vm/overcommit_memory)" != 1 ]; then
    must_fail "domain $vm3: starting it \\($want_accel\\): " \
        ctl vm create "$vm3" --image img --vcpus 1 --memory 16777216 --size 16M \
            --console-log "$tmpdir/logs/vm3.log"
    if vsh dominfo "$vm3" >/dev/null 2>&1; then fail "a failed vm create left domain $vm3"; fi
    [ "$(vol_names)" = "$before" ] || fail "a failed vm create left: $(vol_names)"
else
    out=$(ctl vm create "$vm3" --image img --vcpus 1 --memory 64 --size 16M \
              --console-log "$tmpdir/logs/vm3.log") || fail "vm create $vm3: $out"
    [ "$out" = "domain $vm3 started ($want_accel)
console log $tmpdir/logs/vm3.log" ] || fail "vm create --accel auto printed: $out"
    [ "$(vsh dumpxml "$vm3" | xmllint --xpath 'string(/domain/@type)' -)" = "$want_type" ] ||
        fail "--accel auto: domain type is not $want_type"
    [ "$(vol_xpath "$vm3.qcow2" 'string(/volume/capacity)')" = $(( 16 * 1048576 )) ] ||
        fail "$vm3.qcow2 capacity"
    ctl vm delete "$vm3" >/dev/null || fail "vm delete $vm3"
fi
[ -d "$tmpdir/logs" ] || fail "vm create did not make the console log's directory"
# An image with no anchor: nothing defined.
must_fail "image nope is not attached on this node" \
    ctl vm create "$vm3" --image nope --vcpus 1 --memory 64
if vsh dominfo "$vm3" >/dev/null 2>&1; then fail "vm create of a missing image defined $vm3"; fi

# ---- the anchor goes once nothing depends on it --------------------------------------

for v in byhand.qcow2 snap.qcow2 vm-a.qcow2 vm-b.qcow2 vm-c; do
    vsh vol-delete --pool "$pool" "$v" >/dev/null || fail "virsh vol-delete $v"
done
"$anchor_tool" remove "$pool" "$pooldir" img || fail "pool-anchor remove img"
[ ! -e "$anchor" ] || fail "the anchor is still there"
[ -z "$(vol_names | tr -d ' ')" ] || fail "volumes left: $(vol_names)"
assert_thunderd_alive "the pool tests"
exit 0
