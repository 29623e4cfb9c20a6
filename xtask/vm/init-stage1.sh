#!/bin/busybox sh
# fencegate VM guest, stage 1: the initramfs /init.
#
# Built into the initramfs by xtask/src/vm/initramfs.rs (which embeds this file). The initramfs
# holds only busybox, this script, stage 2 (guest-init.sh), the decompressed .ko files needed to
# mount the host's / (virtio-9p, tag "fgroot"), in load order, listed in /modules/order, and the
# out-of-tree modules for stage 2 in /extra (vkms; see /extra/order).
# Stage 1 loads the 9p modules, mounts the host root read-only on /newroot, puts a tmpfs on
# /newroot/run with busybox, stage 2 and /extra in /run/fencegate, and switch_roots into stage 2.
/bin/busybox --install -s /bin
export PATH=/bin

die() {
    echo "fencegate-vm stage1: FATAL: $*" >/dev/console
    echo "fencegate-vm stage1: FATAL: $*" >/dev/kmsg 2>/dev/null
    sleep 1
    poweroff -f
    echo o >/proc/sysrq-trigger
    exit 1
}

mount -t proc proc /proc || die "mount /proc"
mount -t sysfs sysfs /sys || die "mount /sys"
mount -t devtmpfs devtmpfs /dev || die "mount /dev"

for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || die "insmod $m"
done

# msize: bigger 9p messages are much faster under TCG. The host tree is read-only and only
# lives as long as this guest, so the kernel may cache it (cache=loose).
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose fgroot /newroot \
    || die "mount host / over 9p (tag fgroot)"
[ -x /newroot/bin/sh ] || die "host root mounted but /bin/sh is missing there"

mount -t tmpfs -o mode=0755,size=256m tmpfs /newroot/run || die "tmpfs on /run"
mkdir -p /newroot/run/fencegate/job || die "mkdir /run/fencegate"
cp /bin/busybox /guest-init.sh /newroot/run/fencegate/ || die "copy stage 2"
if [ -d /extra ]; then
    cp -r /extra /newroot/run/fencegate/extra || die "copy the out-of-tree modules (/extra)"
fi
mount --move /dev /newroot/dev || die "move /dev"
umount /proc /sys
exec switch_root /newroot /run/fencegate/busybox sh /run/fencegate/guest-init.sh
