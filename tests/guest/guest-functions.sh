# shellcheck shell=bash
# guest-functions.sh — helpers for tests that boot the thunder test guest.
# Source it from bash (set -euo pipefail is fine); see README.md.
#
#   guest_qemu_boot LOG TIMEOUT QEMU-DRIVE-OPTIONS...
#       Boots the guest in QEMU (TCG, 256 MiB, serial console to LOG, no
#       reboot), e.g.  guest_qemu_boot log 120 -drive file=x.qcow2,format=qcow2,if=virtio
#       Returns QEMU's status (124 on timeout).
#
#   guest_check_log LOG ENVFILE [BOOT]
#       Checks a serial log (from QEMU or libvirt) against guest.env: the guest
#       booted, its checksum is EXPECT_SHA256 over CHECK_BYTES, it wrote at
#       WRITE_OFFSET (as boot number BOOT when given) and reached "done".
#       Returns 0, or prints what is wrong on stderr and returns 1.

guest_qemu_boot ()
{
    local log=$1 timeout=$2
    shift 2
    timeout "$timeout" qemu-system-x86_64 -accel tcg -m 256 -nodefaults \
        -display none -no-reboot -serial "file:$log" "$@"
}

guest_check_log ()
{
    local log=$1 envfile=$2 boot=${3:-} text line
    (
        # shellcheck source=/dev/null
        . "$envfile"
        text=$(tr -d '\r' < "$log")
        if line=$(grep -m 1 '^THUNDER-GUEST: FAIL' <<< "$text"); then
            echo "guest_check_log: $log: the guest failed: $line" >&2
            exit 1
        fi
        for line in \
            "THUNDER-GUEST: booted" \
            "THUNDER-GUEST: sha256 $EXPECT_SHA256 bytes $CHECK_BYTES" \
            "THUNDER-GUEST: wrote $WRITE_OFFSET boot ${boot:-[0-9][0-9]*}" \
            "THUNDER-GUEST: done"; do
            if ! grep -qx -- "$line" <<< "$text"; then
                echo "guest_check_log: $log: no line \"$line\"; the guest printed:" >&2
                grep '^THUNDER-GUEST:' <<< "$text" | sed 's/^/  /' >&2 || true
                exit 1
            fi
        done
    )
}
