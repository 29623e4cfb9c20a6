# fencegate VM guest, stage 2: PID 1 on the host's / (read-only 9p), run by busybox sh.
#
# Mounts the pseudo filesystems and a writable /tmp over the host's, loads the DRM modules from the extracted
# kernel tree and the out-of-tree ones the initramfs carries (vkms), runs the job the host wrote
# to the writable 9p share (tag "fgjob", mounted on /run/fencegate/job), writes its exit code
# there and powers off. Files in the job dir:
#   guest.env   (host -> guest) FG_KVER, FG_MODROOT, FG_MODULES, FG_STRICT_MODULES,
#               FG_DUMP_AFTER (seconds: when to dump every task's stack, before the host's
#               watchdog kills the guest)
#   job.sh      (host -> guest) cd + `exec env -i VARS... command`, run with /bin/bash
#   stdout, stderr           (guest -> host) the command's output
#   exit-code                (guest -> host) written last: its presence means the job finished
#   boot-seconds             (guest -> host) guest uptime when the command started
#   guest.log                (guest -> host) this script's own messages
BB=/run/fencegate/busybox
JOB=/run/fencegate/job
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "fencegate-vm: $*" >/dev/console; [ -w "$JOB" ] && echo "$*" >>"$JOB/guest.log"; }
finish() {
    $BB sync
    $BB umount "$JOB" 2>/dev/null
    $BB poweroff -f
    echo o >/proc/sysrq-trigger
    $BB sleep 5
    $BB reboot -f
}
die() { log "FATAL: $*"; finish; }

$BB mount -t proc proc /proc || die "mount /proc"
$BB mount -t sysfs sysfs /sys || die "mount /sys"
$BB mkdir -p /dev/pts /dev/shm
$BB mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$BB mount -t tmpfs -o mode=1777 tmpfs /dev/shm
$BB mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
$BB mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 fgjob "$JOB" || die "mount job share (tag fgjob)"
[ -f "$JOB/guest.env" ] || die "no guest.env in the job share"
. "$JOB/guest.env"

# The host has no /lib/modules/$FG_KVER (and / is read-only here), so every modprobe is pointed
# at the extracted kernel tree: MODPROBE_OPTIONS for userspace, a wrapper for the kernel's own
# request_module().
printf '#!/bin/sh\nexec /sbin/modprobe -d "%s" "$@"\n' "$FG_MODROOT" >/run/fencegate/modprobe
$BB chmod 755 /run/fencegate/modprobe
echo /run/fencegate/modprobe >/proc/sys/kernel/modprobe
export MODPROBE_OPTIONS="-d $FG_MODROOT"

# /tmp: the host's /tmp stays visible (a checkout or target dir may live there, as in CI), and
# writes land in a tmpfs layered over it, so the guest never writes to the host.
$BB mkdir -p /run/fencegate/tmp-upper /run/fencegate/tmp-work
$BB chmod 1777 /run/fencegate/tmp-upper
if /sbin/modprobe overlay >>"$JOB/guest.log" 2>&1 &&
    $BB mount -t overlay overlay \
        -o lowerdir=/tmp,upperdir=/run/fencegate/tmp-upper,workdir=/run/fencegate/tmp-work /tmp; then
    :
else
    log "overlay on /tmp failed: /tmp is a plain tmpfs, host files under /tmp are hidden"
    $BB mount -t tmpfs -o mode=1777 tmpfs /tmp || die "tmpfs on /tmp"
fi
for m in $FG_MODULES; do
    if ! /sbin/modprobe "$m" >>"$JOB/guest.log" 2>&1; then
        log "modprobe $m failed"
        [ "${FG_STRICT_MODULES:-1}" = 1 ] && die "module $m could not be loaded"
    fi
done
# Out-of-tree modules built by xtask for this kernel (vkms), from the initramfs: their in-tree
# dependencies with modprobe, then insmod with their parameters. Always loaded, whatever
# FG_MODULES says, and a failure stops the guest: tests must never run without them.
EXTRA=/run/fencegate/extra
if [ -f "$EXTRA/order" ]; then
    while read -r name deps params; do
        [ -n "$name" ] || continue
        for d in $(echo "$deps" | $BB tr ',' ' '); do
            [ "$d" = - ] && continue
            /sbin/modprobe "$d" >>"$JOB/guest.log" 2>&1 || die "modprobe $d (needed by $name) failed"
        done
        # shellcheck disable=SC2086 # params are separate words
        /sbin/insmod "$EXTRA/$name.ko" $params >>"$JOB/guest.log" 2>&1 || die "insmod $name.ko $params failed"
        log "loaded out-of-tree $name.ko ($params)"
    done <"$EXTRA/order"
fi
# Probing is synchronous for these drivers, but give devtmpfs a moment for the nodes.
i=0
while [ $i -lt 20 ] && ! $BB ls /dev/dri/card* >/dev/null 2>&1; do $BB sleep 0.1; i=$((i+1)); done
$BB ls -l /dev/dri >>"$JOB/guest.log" 2>&1

# A job still running at FG_DUMP_AFTER is about to be killed by the host's watchdog: say where
# every task is first, on the console (not the 9p share, which may be what hangs): the processes,
# the kernel stack of each user thread, then sysrq-w (blocked tasks, kernel threads too) and
# sysrq-l (what each CPU runs).
if [ -n "${FG_DUMP_AFTER:-}" ]; then
    (
        $BB sleep "$FG_DUMP_AFTER"
        exec >/dev/console 2>&1
        echo 8 >/proc/sys/kernel/printk
        echo "fencegate-vm: GUEST HANG DUMP: the job has run ${FG_DUMP_AFTER}s"
        $BB ps -o pid,ppid,stat,args
        for task in /proc/[0-9]*/task/[0-9]*; do
            # A kernel thread has an empty cmdline (and procfs sizes are all 0, so read it).
            [ -n "$($BB head -c1 "${task%/task/*}/cmdline" 2>/dev/null)" ] || continue
            echo "--- ${task#/proc/} $($BB cat "$task/comm") state $($BB cut -d' ' -f3 "$task/stat") wchan $($BB cat "$task/wchan")"
            $BB cat "$task/stack"
        done
        for t in w l; do echo "$t" >/proc/sysrq-trigger; done
        echo "fencegate-vm: GUEST HANG DUMP done"
    ) &
fi
$BB cut -d' ' -f1 /proc/uptime >"$JOB/boot-seconds"
/bin/bash "$JOB/job.sh" </dev/null >"$JOB/stdout" 2>"$JOB/stderr"
code=$?
echo "$code" >"$JOB/exit-code.tmp" && $BB mv "$JOB/exit-code.tmp" "$JOB/exit-code"
finish
