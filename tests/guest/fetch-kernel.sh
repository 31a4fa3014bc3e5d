#!/bin/bash
# fetch-kernel.sh — put Debian's cloud kernel package into the guest cache.
#
# Usage: tests/guest/fetch-kernel.sh
#
# Finds the kernel package that linux-image-cloud-amd64 currently depends on
# (linux-image-6.1.0-NN-cloud-amd64 on Debian 12), and makes sure its .deb is
# in ${THUNDER_GUEST_CACHE:-/var/cache/thunder/guest}, downloading it with
# `apt-get download` when it is missing.  The package is never installed on
# the host: build-guest.sh only unpacks it with `dpkg-deb -x`.
#
# Prints the path of the .deb on stdout.  When apt knows no candidate (no
# package lists, e.g. in a trimmed CI image), the newest kernel .deb already in
# the cache is used.  THUNDER_GUEST_KERNEL_DEB=/path/to/file.deb bypasses all
# of this.
#
# Run as root at setup time (scripts/install-deps.sh), or as any user that can
# write the cache directory.  apt's "Download is performed unsandboxed as root"
# warning is harmless.
set -euo pipefail

cache=${THUNDER_GUEST_CACHE:-/var/cache/thunder/guest}

if [ -n "${THUNDER_GUEST_KERNEL_DEB:-}" ]; then
  [ -f "$THUNDER_GUEST_KERNEL_DEB" ] || {
    echo "fetch-kernel: $THUNDER_GUEST_KERNEL_DEB: no such file" >&2
    exit 1
  }
  echo "$THUNDER_GUEST_KERNEL_DEB"
  exit 0
fi

# Newest cached cloud kernel .deb, or nothing.
newest_cached() {
  find "$cache" -maxdepth 1 -name 'linux-image-[0-9]*-cloud-amd64_*_amd64.deb' 2>/dev/null |
    sort -V | tail -n 1 || true
}

# The versioned package behind the metapackage, e.g. linux-image-6.1.0-56-cloud-amd64.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n 1 || true)

if [ -z "$pkg" ]; then
  deb=$(newest_cached)
  if [ -z "$deb" ]; then
    echo "fetch-kernel: apt knows no linux-image-cloud-amd64 and $cache has no kernel .deb" >&2
    exit 1
  fi
  echo "$deb"
  exit 0
fi

deb=$(find "$cache" -maxdepth 1 -name "${pkg}_*_amd64.deb" 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$deb" ]; then
  mkdir -p "$cache"
  echo "fetch-kernel: downloading $pkg into $cache" >&2
  # apt-get download writes into the current directory.
  (cd "$cache" && apt-get download -q "$pkg" >&2)
  deb=$(find "$cache" -maxdepth 1 -name "${pkg}_*_amd64.deb" 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$deb" ] || { echo "fetch-kernel: $pkg: download left no .deb in $cache" >&2; exit 1; }
fi
echo "$deb"
