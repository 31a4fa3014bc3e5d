#!/bin/bash
# Starts virtlogd and libvirtd as daemons, without systemd (CI, containers,
# test machines), unless they already run.  Used by scripts/demo.sh and by
# the integration tests (tests/integration/libvirt-functions.sh).  Root.
#
#   scripts/start-libvirt.sh
#
# Prints "started NAME PID" for each daemon it started, nothing for one
# already running; exits 0 once libvirtd answers (1 if it does not within
# 20 s).
#
# /dev/kvm: Debian's udev makes it root:kvm 0660.  Where nothing did (a
# container with no udev leaves it root 0600), libvirt's check as the QEMU
# user fails while its capability probe, run by QEMU, succeeds; libvirt
# then never caches QEMU's capabilities and probes QEMU again on nearly
# every call, seconds each, a minute per domain start.  So give it udev's
# owner and mode first.  (Whether KVM really runs guests is a separate
# question, which thunderctl vm create --accel auto answers.)
set -euo pipefail

answers() {
  timeout 5 virsh -q -c qemu:///system list --all --name >/dev/null 2>&1
}

running() {  # running PIDFILE SOCKET
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && [ -S "$2" ]
}

# without_inherited_fds CMD...: runs CMD with every descriptor above 2
# closed.  The daemons outlive whoever started them and must not keep what
# that caller holds open: a test run as "flock /work/libvirt.lock meson
# test ..." would otherwise leave its lock held by libvirtd and virtlogd
# (every later flock waits for ever), and a pipe of meson's test runner
# open.
without_inherited_fds() {
  local fd
  for fd in /proc/self/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ]; then
      eval "exec $fd>&-" 2>/dev/null || true
    fi
  done
  exec "$@"
}

start() {  # start NAME PIDFILE SOCKET
  local i
  running "$2" "$3" && return 0
  (without_inherited_fds "$1" -d)
  for (( i = 0; i < 100; ++i )); do
    if running "$2" "$3"; then
      echo "started $1 $(cat "$2")"
      return 0
    fi
    sleep 0.1
  done
  echo "start-libvirt: $1 did not start (no pid file $2 or socket $3)" >&2
  exit 1
}

if [ -c /dev/kvm ] && getent group kvm >/dev/null &&
   [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ]; then
  echo "start-libvirt: /dev/kvm was $(stat -c %U:%G %a /dev/kvm); making it root:kvm 0660 as udev does" >&2
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

mkdir -p /var/log/libvirt /run/libvirt
start virtlogd /run/virtlogd.pid /run/libvirt/virtlogd-sock
start libvirtd /run/libvirtd.pid /run/libvirt/libvirt-sock

for (( i = 0; i < 100; ++i )); do
  answers && exit 0
  sleep 0.2
done
echo "start-libvirt: libvirtd does not answer at qemu:///system" >&2
exit 1
