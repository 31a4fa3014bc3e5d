#!/bin/bash
# build-guest.sh — build the thunder test guest: a small raw disk image that a
# VM boots from its own disk (MBR → syslinux → Debian cloud kernel → busybox
# initramfs), so every byte the guest reads goes through thunder.
#
# Usage: tests/guest/build-guest.sh OUTDIR
#
# Writes:
#   OUTDIR/guest.img     raw disk image, THUNDER_GUEST_SIZE_MIB MiB (default 64)
#   OUTDIR/guest.sha256  sha256 (hex) of the first CHECK_BYTES bytes of guest.img,
#                        the bytes the guest checksums (all but the scratch region)
#   OUTDIR/guest.env     shell-sourceable layout and expectations (see README.md)
#   OUTDIR/guest.inputs  what the image was built from; the build is skipped
#                        when it still matches
#
# The image is deterministic: the same packages and sources give the same bytes.
# No root, no loop devices, no mounts: mkfs.fat --offset, mtools and
# syslinux --offset work on the image file directly.
#
# Environment:
#   THUNDER_GUEST_SIZE_MIB    image size in MiB (default 64)
#   THUNDER_GUEST_CACHE       where the kernel .deb is kept (default /var/cache/thunder/guest)
#   THUNDER_GUEST_KERNEL_DEB  use this kernel .deb instead of the cached one
#
# Debian packages needed on the host (none of the kernel is installed):
#   busybox-static syslinux syslinux-common mtools dosfstools cpio gzip openssl
#   coreutils util-linux dpkg apt
# plus, at setup time, the kernel .deb fetched by tests/guest/fetch-kernel.sh:
#   linux-image-6.1.0-*-cloud-amd64 (whatever linux-image-cloud-amd64 depends on)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
die() { echo "build-guest: $*" >&2; exit 1; }

[ $# -eq 1 ] || usage
outdir=$1
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

# Fixed clocks and locale so timestamps in the FAT and the cpio never vary.
export TZ=UTC LC_ALL=C
export SOURCE_DATE_EPOCH=1704067200   # 2024-01-01 00:00:00 UTC
umask 022

# ---- inputs -------------------------------------------------------------------

mib=1048576
size_mib=${THUNDER_GUEST_SIZE_MIB:-64}
[[ $size_mib =~ ^[0-9]+$ ]] || die "THUNDER_GUEST_SIZE_MIB=$size_mib: not a number of MiB"

busybox=/bin/busybox
syslinux_mbr=/usr/lib/syslinux/mbr/mbr.bin
for f in "$busybox" "$syslinux_mbr"; do
  [ -f "$f" ] || die "$f: missing (install busybox-static and syslinux-common)"
done
for c in mkfs.fat mcopy mmd syslinux cpio gzip openssl dpkg-deb flock sha256sum; do
  command -v "$c" >/dev/null || die "$c: not found (see the package list at the top of $0)"
done

# One build per OUTDIR at a time; parallel tests wait for the first one.
exec 9>"$outdir/.guest.lock"
flock 9

kernel_deb=$("$here/fetch-kernel.sh") || die "no kernel package (tests/guest/fetch-kernel.sh failed)"
kernel_pkg=$(dpkg-deb -f "$kernel_deb" Package)
kernel_pkgver=$(dpkg-deb -f "$kernel_deb" Version)

# Everything the image depends on; if it matches the last build, stop here.
inputs=$(
  echo "size_mib $size_mib"
  echo "kernel $kernel_pkg $kernel_pkgver"
  for f in "$here/build-guest.sh" "$here/init" "$kernel_deb" "$busybox" "$syslinux_mbr"; do
    echo "$(sha256sum < "$f" | cut -d' ' -f1) ${f##*/}"
  done
  dpkg-query -W -f='${Package} ${Version}\n' syslinux syslinux-common mtools dosfstools \
    cpio gzip openssl 2>/dev/null || true
)
if [ -f "$outdir/guest.img" ] && [ -f "$outdir/guest.env" ] && [ -f "$outdir/guest.sha256" ] &&
   [ "$(cat "$outdir/guest.inputs" 2>/dev/null)" = "$inputs" ]; then
  echo "build-guest: $outdir/guest.img is up to date"
  exit 0
fi

work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- kernel and modules -----------------------------------------------------------

dpkg-deb -x "$kernel_deb" "$work/kernel"
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-*)
kver=${vmlinuz##*/vmlinuz-}
moddir=$work/kernel/lib/modules/$kver
[ -d "$moddir/kernel" ] || die "$kernel_deb: no $moddir"

# Module name (dashes as underscores) → file, compressed or not.
declare -A modfile
while IFS= read -r f; do
  name=${f##*/}
  name=${name%%.ko*}
  modfile[${name//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')

initrd=$work/initrd
mkdir -p "$initrd"/{bin,dev,etc,lib/modules,proc,sys,tmp}

# add_module NAME: copy NAME and, first, what it depends on (the "depends=" of
# its .modinfo) into the initramfs as plain .ko files, and append them to
# modload in dependency order.  Modules built into the kernel are skipped.
declare -A seen
modload=()
add_module() {
  local m=$1 src ko deps d
  [ -z "${seen[$m]:-}" ] || return 0
  seen[$m]=1
  src=${modfile[$m]:-}
  if [ -z "$src" ]; then
    grep -qE "/${m//_/[-_]}\.ko\$" "$moddir/modules.builtin" ||
      die "module $m: neither in $kernel_pkg nor built in"
    return 0
  fi
  ko=$initrd/lib/modules/$m.ko
  case $src in
    *.ko.xz)  xz -dc "$src" > "$ko" ;;
    *.ko.zst) zstd -qdc "$src" > "$ko" ;;
    *.ko.gz)  gzip -dc "$src" > "$ko" ;;
    *)        cp "$src" "$ko" ;;
  esac
  deps=$(grep -a -o -m 1 'depends=[A-Za-z0-9_,-]*' "$ko" | head -n 1 || true)
  deps=${deps#depends=}
  for d in ${deps//,/ }; do
    add_module "${d//-/_}"
  done
  modload+=("$m")
}
add_module virtio_pci
add_module virtio_blk
printf '%s\n' "${modload[@]}" > "$initrd/etc/modules.order"

# ---- disk layout ---------------------------------------------------------------
#
#   0            MBR: syslinux mbr.bin + one bootable FAT16 partition
#   1 MiB        FAT16 partition: ldlinux.sys/.c32, syslinux.cfg, vmlinuz, initrd.gz
#   PAYLOAD      deterministic pseudo-random bytes (AES-128-CTR keystream)
#   WRITE_OFFSET scratch: the last 1 MiB, zeros; the guest writes its record here
#
# The guest checksums [0, CHECK_BYTES) = everything but the scratch region, so a
# second boot of a disk the guest already wrote to gives the same sum.

marker=THUNDER-GUEST-WRITE
image_size=$((size_mib * mib))
part_offset=$mib
scratch_size=$mib
write_offset=$((image_size - scratch_size))
check_bytes=$write_offset

cat > "$initrd/etc/guest.conf" <<EOF
IMAGE_SIZE=$image_size
CHECK_BYTES=$check_bytes
WRITE_OFFSET=$write_offset
MARKER=$marker
EOF
install -m 0755 "$here/init" "$initrd/init"
install -m 0755 "$busybox" "$initrd/bin/busybox"

# ---- initramfs -----------------------------------------------------------------

# cpio_newc_entry NAME MODE RDEVMAJOR RDEVMINOR: one empty newc entry (a device
# node, which cpio cannot archive without root creating it first).
cpio_newc_entry() {
  local name=$1 mode=$2 major=$3 minor=$4 namesize=$((${#1} + 1))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    0 "$mode" 0 0 1 "$SOURCE_DATE_EPOCH" 0 0 0 "$major" "$minor" "$namesize" 0
  printf '%s\0' "$name"
  # header (110) + name, padded to a multiple of 4
  head -c $(( (4 - (110 + namesize) % 4) % 4 )) /dev/zero
}

find "$initrd" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
{
  (cd "$initrd" && find . -mindepth 1 | sed 's|^\./||' | sort |
     cpio -o -H newc -R 0:0 --reproducible --quiet)
  # /dev/console, so the kernel gives /init the serial console as stdin/out/err.
  cpio_newc_entry dev/console $((8#020600)) 5 1
  cpio_newc_entry TRAILER!!! 0 0 0
} | gzip -n -9 > "$work/initrd.gz"

# ---- image ---------------------------------------------------------------------

# The FAT partition: the boot files plus 2 MiB, rounded up to 4 MiB.
boot_bytes=$(( $(stat -c %s "$vmlinuz") + $(stat -c %s "$work/initrd.gz") + 2 * mib ))
part_size=$(( (boot_bytes + 4 * mib - 1) / (4 * mib) * (4 * mib) ))
payload_offset=$((part_offset + part_size))
payload_size=$((write_offset - payload_offset))
[ "$payload_size" -ge "$mib" ] ||
  die "THUNDER_GUEST_SIZE_MIB=$size_mib is too small: the boot partition alone takes $((part_size / mib)) MiB"

img=$work/guest.img
truncate -s "$image_size" "$img"

# MBR: syslinux boot code, partition 1 = active, type 0x0e (FAT16 LBA), CHS
# fields set to "use LBA", then the 0x55AA signature.
le32() {   # 32-bit little-endian bytes of $1
  printf '%b' "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' \
    $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"
}
dd if="$syslinux_mbr" of="$img" bs=440 count=1 conv=notrunc status=none
{
  printf '\x80\xfe\xff\xff\x0e\xfe\xff\xff'   # active, CHS "LBA", type 0x0e, CHS "LBA"
  le32 $((part_offset / 512))                # first sector
  le32 $((part_size / 512))                  # number of sectors
} | dd of="$img" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none

# FAT16 in the partition; hidden sectors = partition start, as the boot sector needs.
# (Its output, which warns that the file is larger than the FAT, only on failure.)
mkfs.fat --invariant -F 16 -n THUNDER -i 54485544 \
  --offset $((part_offset / 512)) -h $((part_offset / 512)) "$img" $((part_size / 1024)) \
  > "$work/mkfs.log" 2>&1 || { cat "$work/mkfs.log" >&2; die "mkfs.fat failed"; }

cat > "$work/syslinux.cfg" <<'EOF'
DEFAULT thunder
PROMPT 0
TIMEOUT 0
LABEL thunder
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet loglevel=3 panic=-1
EOF
fat="$img@@$part_offset"
mcopy -i "$fat" "$work/syslinux.cfg" ::/syslinux.cfg
mcopy -i "$fat" "$vmlinuz" ::/vmlinuz
mcopy -i "$fat" "$work/initrd.gz" ::/initrd.gz
syslinux --install --offset "$part_offset" "$img"

# Payload: AES-128-CTR keystream with a fixed key — deterministic, incompressible.
head -c "$payload_size" /dev/zero |
  openssl enc -aes-128-ctr -nosalt -K 7468756e6465722d67756573742d3031 -iv 00000000000000000000000000000000 |
  dd of="$img" bs=$mib seek=$((payload_offset / mib)) iflag=fullblock conv=notrunc status=none
[ "$(stat -c %s "$img")" -eq "$image_size" ] || die "$img: size changed while building"

expect=$(head -c "$check_bytes" "$img" | sha256sum)
expect=${expect%% *}

cat > "$work/guest.env" <<EOF
# thunder test guest, written by tests/guest/build-guest.sh (see tests/guest/README.md)
KERNEL_PACKAGE=$kernel_pkg
KERNEL_PACKAGE_VERSION=$kernel_pkgver
IMAGE_SIZE=$image_size
PART_OFFSET=$part_offset
PART_SIZE=$part_size
PAYLOAD_OFFSET=$payload_offset
PAYLOAD_SIZE=$payload_size
WRITE_OFFSET=$write_offset
SCRATCH_SIZE=$scratch_size
CHECK_BYTES=$check_bytes
MARKER=$marker
EXPECT_SHA256=$expect
EOF
echo "$expect" > "$work/guest.sha256"
echo "$inputs" > "$work/guest.inputs"

# Publish: drop the stamp, rename the image and its metadata, the stamp last.
rm -f "$outdir/guest.inputs"
for f in guest.img guest.env guest.sha256 guest.inputs; do
  mv -f "$work/$f" "$outdir/$f"
done
echo "build-guest: $outdir/guest.img ($size_mib MiB, $kernel_pkg $kernel_pkgver, sha256 of the first $check_bytes bytes $expect)"
