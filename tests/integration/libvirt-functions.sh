# thunder integration tests — libvirt: the daemons, per-test pools and
# domains, all cleaned up at exit.  Sourced after functions.sh.
#
#   start_libvirt            skips (77) unless root with libvirtd, virtlogd
#                            and virsh installed; starts virtlogd and libvirtd
#                            with scripts/start-libvirt.sh (daemonised, no
#                            systemd) if they are not running, and stops at
#                            exit only what it started.  Uses LIBVIRT_URI.
#   vsh ARGS...              virsh -q -c $LIBVIRT_URI ARGS
#   test_pool_name [SUFFIX]  a per-run pool name: thunder-t$$[-SUFFIX]
#   cleanup_pool NAME        destroys and undefines pool NAME at exit
#   cleanup_domain NAME      destroys and undefines domain NAME at exit
#   guest_image_add          builds the test guest (tests/guest/, skipped when
#                            up to date) into the build tree, sources its
#                            guest.env, and adds it as image "guest" in
#                            $tmpdir/images; sets guestdir
#   vm_wait_off NAME LOG     waits (up to 180 s) for domain NAME to shut off;
#                            fails showing LOG (its console) if it does not
#   kvm_really_works         true if QEMU under KVM runs a real-mode → protected
#                            mode → IRET program to the end (tests what
#                            pool_kvm_usable decides, independently of it)
#
# Test pools never use the real pool: their names carry the test's pid and
# their directories live under $tmpdir (mode 0755, so QEMU, which runs as
# libvirt-qemu, can reach volumes in it).

LIBVIRT_URI=${THUNDER_TEST_LIBVIRT_URI:-qemu:///system}

vsh ()
{
    virsh -q -c "$LIBVIRT_URI" "$@"
}

# _libvirt_answers  — true if libvirtd answers within 5 s.  ("virsh
# version" is no good: asking the hypervisor's version makes libvirtd probe
# QEMU's capabilities, which hangs where /dev/kvm exists but KVM does not
# work, as on the CI machines.)
_libvirt_answers ()
{
    timeout 5 virsh -q -c "$LIBVIRT_URI" list --all --name >/dev/null 2>&1
}

# _stop_daemon NAME PIDFILE PID  — cleanup hook: SIGTERM the daemon this
# test started (if PIDFILE still names PID), wait up to 10 s, then SIGKILL.
_stop_daemon ()
{
    local name=$1 pidfile=$2 pid=$3 i
    [ -n "$pid" ] || return 0
    [ "$(cat "$pidfile" 2>/dev/null)" = "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    # (A daemon's parent is init, which may be slow to reap it: a zombie
    # counts as stopped.)
    for (( i = 0; i < 100; ++i )); do
        _pid_running "$pid" || return 0
        sleep 0.1
    done
    echo "$0: $name $pid ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null
    return 0
}

start_libvirt ()
{
    local out word name pid
    requires_root
    requires_program virsh qemu-img
    if [ "$LIBVIRT_URI" != qemu:///system ]; then
        _libvirt_answers || fail "libvirt at $LIBVIRT_URI does not answer"
        return 0
    fi
    requires_program libvirtd virtlogd qemu-system-x86_64
    getent passwd libvirt-qemu >/dev/null ||
        skip "no user libvirt-qemu (install libvirt-daemon-system)"
    # The same start as the demo's (and the /dev/kvm fix it explains).
    out=$("$TOP_SRCDIR/scripts/start-libvirt.sh") ||
        fail "scripts/start-libvirt.sh failed: $out"
    while read -r word name pid; do
        [ "$word" = started ] || continue
        echo "$0: started $name ($pid)" >&2
        cleanup_fn _stop_daemon "$name" "/run/$name.pid" "$pid"
    done <<< "$out"
}

test_pool_name ()
{
    echo "thunder-t$$${1:+-$1}"
}

_undefine_pool ()
{
    vsh pool-destroy "$1" >/dev/null 2>&1
    vsh pool-undefine "$1" >/dev/null 2>&1
    return 0
}

cleanup_pool ()
{
    cleanup_fn _undefine_pool "$1"
}

_undefine_domain ()
{
    vsh destroy "$1" >/dev/null 2>&1
    vsh undefine "$1" --nvram >/dev/null 2>&1 || vsh undefine "$1" >/dev/null 2>&1
    return 0
}

cleanup_domain ()
{
    cleanup_fn _undefine_domain "$1"
}

# _put FILE OFFSET HEX  — writes the bytes HEX ("fa b8 00") at OFFSET.
_put ()
{
    local bytes="" b
    for b in $3; do bytes+="\\x$b"; done
    # shellcheck disable=SC2059  # the bytes are the format
    printf "$bytes" | dd of="$1" bs=1 seek=$(( $2 )) conv=notrunc status=none
}

kvm_really_works ()
{
    local bios=$tmpdir/kvm-probe.bios rc=0
    [ -e /dev/kvm ] || return 1
    command -v qemu-system-x86_64 >/dev/null || return 1
    # A 64 KiB BIOS of HLTs.  The reset vector jumps to a stub that copies
    # the program to 0000:1000 and runs it: the same program as src/pool/
    # kvm.c, its final HLT replaced by "out 0xf4" to isa-debug-exit.
    head -c 65536 /dev/zero | tr '\0' '\364' > "$bios"
    _put "$bios" 0 "fa 66 0f 01 16 20 11 0f 20 c0 0c 01 0f 22 c0 ea 14 10 08 00
                    66 b8 10 00 8e d8 8e d0 8e c0 bc 00 18 00 00 9c 6a 08 68 2c
                    10 00 00 cf b0 01 e6 f4 f4"
    _put "$bios" 0x100 "00 00 00 00 00 00 00 00 ff ff 00 00 00 9a cf 00
                        ff ff 00 00 00 92 cf 00"
    _put "$bios" 0x120 "17 00 00 11 00 00"
    _put "$bios" 0xff00 "fa b8 00 f0 8e d8 31 c0 8e c0 31 f6 bf 00 10 b9 00 02
                         f3 a4 31 c0 8e d8 ea 00 10 00 00"
    _put "$bios" 0xfff0 "ea 00 ff 00 f0"
    timeout 5 qemu-system-x86_64 -accel kvm -M pc -m 16 -display none \
        -nodefaults -no-user-config -no-reboot -bios "$bios" \
        -device isa-debug-exit,iobase=0xf4,iosize=1 </dev/null >/dev/null 2>&1 ||
        rc=$?
    # isa-debug-exit: status (1 << 1) | 1.
    [ "$rc" -eq 3 ]
}

guest_image_add ()
{
    guestdir=$TOP_BUILDDIR/tests/guest
    "$TOP_SRCDIR/tests/guest/build-guest.sh" "$guestdir" >/dev/null 2>"$tmpdir/guest-build.log" ||
        { cat "$tmpdir/guest-build.log" >&2; fail "building the test guest failed"; }
    # shellcheck source=/dev/null
    . "$guestdir/guest.env"
    mkdir -p "$tmpdir/images"
    cp "$guestdir/guest.img" "$tmpdir/images/guest.img"
    "$THUNDERCTL" image add guest "$tmpdir/images/guest.img" >/dev/null ||
        fail "thunderctl image add guest failed"
}

vm_wait_off ()
{
    local i state
    for (( i = 0; i < 1800; ++i )); do
        state=$(vsh domstate "$1" 2>/dev/null || true)
        [ "$state" = "shut off" ] && return 0
        sleep 0.1
    done
    cat "$2" >&2 || true
    fail "domain $1 still '$state' after 180 s"
}
