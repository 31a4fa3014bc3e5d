#!/usr/bin/env bash
# thunder — guests never notice a thunderd restart or a short origin outage
# (real libvirtd, virtlogd, QEMU TCG, the test guest of tests/guest/):
#  - qemu-io reads through a VM volume's chain (overlay → anchor → thunderd)
#    in a loop while thunderd is restarted (SIGTERM + start, SIGKILL +
#    start): no read fails (the anchor's json: backing carries QEMU's NBD
#    reconnect-delay);
#  - a guest boots from a pool volume while its node's thunderd is
#    restarted three times (SIGTERM + start twice, SIGKILL + start once):
#    QEMU pauses it on the failed reads (error_policy='stop'), the new
#    thunderd resumes it, it boots, its checksum is right and it printed no
#    error;
#  - a VM defined without the error policy (an older thunder's) gets it in
#    its definition when thunderd starts;
#  - the origin killed during a boot on a node with a cold cache and started
#    again 10 s later: the reads wait (--stall-timeout), the guest boots,
#    checksum right.
# Prints the longest pause the guest saw and the origin outage's length.
set -euo pipefail
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/node-functions.sh"
source "$(dirname "$0")/libvirt-functions.sh"
source "$TOP_SRCDIR/tests/guest/guest-functions.sh"

requires_program jq qemu-img qemu-io virsh
start_libvirt

guest_image_add
start_origin "$tmpdir/images"
origin_port=${origin_nbd##*:}

pool=$(test_pool_name)
cleanup_pool "$pool"
export THUNDER_LIBVIRT_URI=$LIBVIRT_URI
declare -a node1_args=(--pool "$pool" --pool-path "$tmpdir/pool" --libvirt-uri "$LIBVIRT_URI")
start_node 1 "${node1_args[@]}"
attach 1 guest "$origin_nbd"

# restart_node1 SIGNAL  — stops node 1 with SIGNAL and starts it again.
restart_node1 ()
{
    local t0
    t0=$(now_ms)
    kill -"$1" "${node_pid[1]}"
    while _pid_running "${node_pid[1]}"; do sleep 0.01; done
    start_node 1 "${node1_args[@]}"
    echo "node 1: SIG$1 and started again in $(( $(now_ms) - t0 )) ms" >&2
}

# ---- qemu-io through the anchor chain while thunderd restarts -------------------

anchor=$tmpdir/pool/guest.base
qemu-img info -U "$anchor" | grep -q '"reconnect-delay"' ||
    fail "the anchor's backing has no reconnect-delay: $(qemu-img info -U "$anchor")"
qemu-img create -q -f qcow2 -F qcow2 -b "$anchor" "$tmpdir/io.qcow2"
# 64 KiB reads over the first 8 MiB, again and again, one qemu-io per pass.
io_loop ()
{
    local pass off
    for (( pass = 0; ; ++pass )); do
        [ -e "$tmpdir/io.stop" ] && break
        cmds=()
        for (( off = 0; off < 8388608; off += 65536 )); do
            cmds+=(-c "read -P 0 0 0" -c "read $off 64k")
        done
        qemu-io -f qcow2 "${cmds[@]}" "$tmpdir/io.qcow2" 2>&1 |
            grep -E '^read|failed|error' >> "$tmpdir/io.out" || true
    done
}
io_loop &
io_pid=$!
sleep 1
restart_node1 TERM
sleep 1
restart_node1 KILL
sleep 1
touch "$tmpdir/io.stop"
wait "$io_pid"
reads=$(grep -c '^read 65536/65536' "$tmpdir/io.out" || true)
failed=$(grep -vc '^read' "$tmpdir/io.out" || true)
echo "qemu-io: $reads reads through the chain, $failed failed" >&2
[ "$failed" -eq 0 ] || fail "qemu-io: $failed reads failed: $(grep -v '^read' "$tmpdir/io.out" | head -5)"
[ "$reads" -gt 128 ] || fail "qemu-io: only $reads reads"

# ---- a guest boots while thunderd restarts three times -------------------------------

# pause_report EVENTS  — the longest suspended → resumed span in a virsh
# event --timestamp log, in ms, and how many pauses.
pause_report ()
{
    awk '
        function ms(d, t,   a) { split(t, a, /[:+]/); return ((a[1] * 60 + a[2]) * 60 + a[3]) * 1000 }
        /Suspended/ { s = ms($1, $2); n++ }
        /Resumed/ && s { d = ms($1, $2) - s; if (d > max) max = d; s = 0 }
        END { printf "%d %d\n", max, n }' "$1"
}

cleanup_domain vm1
virsh -c "$LIBVIRT_URI" event --loop --timestamp --event lifecycle > "$tmpdir/events1" 2>&1 &
ev_pid=$!
cleanup_fn kill "$ev_pid"
THUNDER_POOL=$pool "$THUNDERCTL" vm create vm1 --image guest --vcpus 1 --memory 256 \
    --accel tcg --console-log "$tmpdir/vm1.log" >/dev/null || fail "vm create vm1 failed"
sleep 1
restart_node1 TERM
sleep 1.5
restart_node1 TERM
sleep 1.5
restart_node1 KILL

vm_wait_off vm1 "$tmpdir/vm1.log"
guest_check_log "$tmpdir/vm1.log" "$guestdir/guest.env" 1 ||
    fail "vm1 did not boot right across thunderd restarts"
! grep -qi 'I/O error' "$tmpdir/vm1.log" || fail "vm1's console shows an I/O error"
read -r longest pauses < <(pause_report "$tmpdir/events1")
resumed=$(cat "${_thunderd_logs[@]}" | grep -c 'resumed VM vm1' || true)
echo "vm1: booted across 3 restarts; paused $pauses times, longest pause $longest ms; thunderd logged $resumed resumes" >&2
grep "THUNDER-GUEST: uptime" "$tmpdir/vm1.log" >&2 || true

# A VM made by an older thunder (no error policy on its disk) gets the
# policy in its definition when thunderd starts (effective at its next
# start).
vsh dumpxml --inactive vm1 | sed -e "s/ error_policy='stop'//" -e "s/ rerror_policy='stop'//" \
    > "$tmpdir/vm1-old.xml"
vsh define "$tmpdir/vm1-old.xml" >/dev/null || fail "virsh define of vm1 without error policy"
! vsh dumpxml --inactive vm1 | grep -q error_policy || fail "vm1 still has an error policy"
restart_node1 TERM
for (( i = 0; i < 50; ++i )); do
    vsh dumpxml --inactive vm1 | grep -q "error_policy='stop' rerror_policy='stop'" && break
    sleep 0.1
done
vsh dumpxml --inactive vm1 | grep -q "error_policy='stop' rerror_policy='stop'" ||
    fail "thunderd did not give vm1's disk its error policy: $(vsh dumpxml --inactive vm1 | grep '<driver')"
grep -q "VM vm1: its disk pauses on I/O errors" "${node_log[1]}" ||
    fail "the policy change of vm1 is not logged"

# ---- the origin down for 10 s during a cold boot -------------------------------

pool2=$(test_pool_name 2)
cleanup_pool "$pool2"
start_node 2 --pool "$pool2" --pool-path "$tmpdir/pool2" --libvirt-uri "$LIBVIRT_URI"
attach 2 guest "$origin_nbd"
cleanup_domain vm2
THUNDER_POOL=$pool2 "$THUNDERCTL" vm create vm2 --image guest --vcpus 1 --memory 256 \
    --accel tcg --console-log "$tmpdir/vm2.log" >/dev/null || fail "vm create vm2 failed"
sleep 1
kill -KILL "$origin_pid"
sleep 10
start_thunderd --origin --images "$tmpdir/images" --socket "$tmpdir/origin.sock" \
    --listen "127.0.0.1:$origin_port" --control 127.0.0.1:0 --token-file "$token_file"
vm_wait_off vm2 "$tmpdir/vm2.log"
guest_check_log "$tmpdir/vm2.log" "$guestdir/guest.env" 1 ||
    fail "vm2 did not boot right across a 10 s origin outage"
s=$(stats 2 guest)
echo "vm2: booted across a 10 s origin outage: $(jq -c '.counters | {stalls, stall_failures, outages, outage_ms, fetch_failures}' <<<"$s")" >&2
[ "$(counter .counters.stall_failures <<<"$s")" -eq 0 ] || fail "reads failed at the stall bound: $s"
grep "THUNDER-GUEST: uptime" "$tmpdir/vm2.log" >&2 || true
echo "ok"
