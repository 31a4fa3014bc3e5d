#!/bin/bash
# Installs the Debian 12 packages thunder needs to build, test and run.
# Idempotent: does nothing when everything is present.  Run as root.
set -euo pipefail

packages=(
  # build
  gcc clang libclang-rt-14-dev meson ninja-build pkg-config
  # libraries
  nettle-dev libjson-c-dev libcunit1-dev libnbd-dev libmicrohttpd-dev libsqlite3-dev
  libcurl4-gnutls-dev curl libgnutls28-dev
  # real NBD peers for tests and benchmarks
  libnbd-bin python3-libnbd nbdkit qemu-utils
  # the libvirt pool, VMs (QEMU TCG) and the test guest (tests/guest/)
  libvirt-dev libxml2-dev libxml2-utils libvirt-daemon-system
  libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 dnsmasq-base
  busybox-static syslinux syslinux-common mtools dosfstools cpio openssl
  # scripts
  coreutils procps iproute2 jq
  # benchmarks and their smoke test; API schema checks and load
  iperf3 gnuplot-nox wrk python3-jsonschema python3-yaml
  # the Ansible rollout (deploy/ansible) and its test
  ansible ansible-lint
  # observability tests: a real Prometheus (and promtool), the status page
  # in headless Chromium driven by Selenium
  prometheus chromium chromium-driver python3-selenium
)

# The test guest's kernel: Debian's cloud kernel package, downloaded (not
# installed) into the guest cache once the packages are there.
fetch_kernel() {
  "$(dirname "$0")/../tests/guest/fetch-kernel.sh"
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  fetch_kernel
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fetch_kernel
echo "install-deps: done"
