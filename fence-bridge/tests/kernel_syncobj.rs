//! Kernel tests of DRM syncobjs (binary and timeline) on virtio-gpu: `DrmDevice`, `Syncobj`,
//! `SyncobjPoint` and the `Fence` of a point. IGT's `syncobj_timeline`, `syncobj_wait` and
//! `syncobj_eventfd` are the reference for the semantics asserted here.
//!
//! Pending fences come from vgem (`VGEM_FENCE_ATTACH` on a dumb BO, exported from its dma-buf as
//! a sync_file): host-signalled syncobj points are always already signalled, and a point that
//! is *submitted but not signalled* needs a real pending fence. vgem signals such a fence by
//! itself after ~10 s, so every wait on one here is far shorter.
//!
//! All tests of this binary run one at a time (`serial()`), because the leak test counts the
//! process's fds.

mod support;

use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use drm::buffer::Buffer as _;
use drm::control::{syncobj, Device as _};
use fence_bridge::{
    stats, wait_points, DrmDevice, FenceStatus, SyncFile, Syncobj, SyncobjWaitFlags, WaitError,
};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use support::{find_node, require_device};

const EINVAL: i32 = Errno::INVAL.raw_os_error();
const ENOENT: i32 = Errno::NOENT.raw_os_error();
const EBADF: i32 = Errno::BADF.raw_os_error();
const ETIME: i32 = Errno::TIME.raw_os_error();
const NONE: SyncobjWaitFlags = SyncobjWaitFlags::empty();
const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(5);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn virtio(prefix: &str) -> Option<DrmDevice> {
    let what = format!("virtio_gpu {prefix}* node under /dev/dri");
    let node = require_device(&what, || find_node(prefix, "virtio_gpu"))?;
    Some(DrmDevice::from_fd(node.file.into()).expect("DRM_IOCTL_VERSION"))
}

#[track_caller]
fn errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an errno: {e}")),
    }
}

fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    poll(&mut fds, Some(&ts)).expect("poll") == 1 && fds[0].revents().contains(PollFlags::IN)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A pending fence from vgem, as a sync_file, signalled on demand.
struct VgemFence {
    vgem: support::Node,
    fence: u32,
    sync_file: SyncFile,
}

#[repr(C)]
struct VgemFenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}
#[repr(C)]
struct VgemFenceSignal {
    fence: u32,
    flags: u32,
}
#[repr(C)]
struct DmaBufExportSyncFile {
    flags: u32,
    fd: i32,
}

impl VgemFence {
    fn new() -> VgemFence {
        use rustix::ioctl::{ioctl, opcode, Updater};
        let vgem = require_device("vgem node", || find_node("card", "vgem"))
            .expect("vgem is part of the guest");
        let bo = vgem
            .create_dumb_buffer((16, 16), drm::buffer::DrmFourcc::Xrgb8888, 32)
            .expect("vgem dumb buffer");
        let dmabuf = vgem
            .buffer_to_prime_fd(bo.handle(), drm::CLOEXEC | drm::RDWR)
            .expect("PRIME export");
        let mut attach = VgemFenceAttach {
            handle: bo.handle().into(),
            flags: 1, // VGEM_FENCE_WRITE
            out_fence: 0,
            pad: 0,
        };
        // SAFETY: DRM_IOCTL_VGEM_FENCE_ATTACH is _IOWR('d', 0x41, struct drm_vgem_fence_attach).
        unsafe {
            ioctl(
                &vgem.file,
                Updater::<{ opcode::read_write::<VgemFenceAttach>(b'd', 0x41) }, _>::new(
                    &mut attach,
                ),
            )
        }
        .expect("VGEM_FENCE_ATTACH");
        let mut export = DmaBufExportSyncFile { flags: 1, fd: -1 }; // DMA_BUF_SYNC_READ
                                                                    // SAFETY: DMA_BUF_IOCTL_EXPORT_SYNC_FILE is _IOWR('b', 2, struct dma_buf_export_sync_file).
        unsafe {
            ioctl(
                &dmabuf,
                Updater::<{ opcode::read_write::<DmaBufExportSyncFile>(b'b', 2) }, _>::new(
                    &mut export,
                ),
            )
        }
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
        // SAFETY: the kernel installed a new fd.
        let sync_file = unsafe { OwnedFd::from_raw_fd(export.fd) };
        vgem.destroy_dumb_buffer(bo).expect("destroy vgem BO");
        VgemFence {
            vgem,
            fence: attach.out_fence,
            sync_file: SyncFile::from_fd(sync_file),
        }
    }

    fn signal(&self) {
        use rustix::ioctl::{ioctl, opcode, Updater};
        let mut signal = VgemFenceSignal {
            fence: self.fence,
            flags: 0,
        };
        // SAFETY: DRM_IOCTL_VGEM_FENCE_SIGNAL is _IOW('d', 0x42, struct drm_vgem_fence_signal).
        unsafe {
            ioctl(
                &self.vgem.file,
                Updater::<{ opcode::write::<VgemFenceSignal>(b'd', 0x42) }, _>::new(&mut signal),
            )
        }
        .expect("VGEM_FENCE_SIGNAL");
    }
}

#[test]
fn capability_probe_true_on_virtio_gpu_false_on_vgem() {
    let _serial = serial();
    let Some(card) = virtio("card") else { return };
    assert_eq!(card.driver_name(), "virtio_gpu");
    assert!(card.supports_syncobj());
    assert!(
        card.supports_syncobj_timeline(),
        "DRM_CAP_SYNCOBJ_TIMELINE + SYNCOBJ_EVENTFD"
    );
    let render = virtio("renderD").expect("virtio_gpu render node");
    assert!(render.supports_syncobj_timeline());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    eprintln!(
        "kernel {kernel}: direct sync_file import/export at a point: {}",
        card.supports_syncobj_point_sync_file()
    );

    let vgem = require_device("vgem node", || find_node("card", "vgem")).expect("vgem");
    let vgem = DrmDevice::from_fd(vgem.file.into()).unwrap();
    assert_eq!(vgem.driver_name(), "vgem");
    assert!(!vgem.supports_syncobj(), "vgem has no DRIVER_SYNCOBJ");
    assert!(!vgem.supports_syncobj_timeline());
    assert!(!vgem.supports_syncobj_point_sync_file());
    // What the probe saw: the ioctl refuses a driver without timelines.
    assert_eq!(
        errno(Syncobj::create(&vgem)),
        Errno::OPNOTSUPP.raw_os_error()
    );
}

#[test]
fn timeline_host_signal_points_and_query() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    assert_eq!(t.query().unwrap(), 0);
    assert_eq!(t.query_last().unwrap(), 0);
    t.signal_point(3).unwrap();
    assert_eq!(t.query().unwrap(), 3);
    assert_eq!(t.query_last().unwrap(), 3);
    assert!(t.point(1).is_signaled().unwrap() && t.point(3).is_signaled().unwrap());
    assert!(!t.point(4).is_signaled().unwrap());
    t.signal_point(5).unwrap();
    assert_eq!(t.query().unwrap(), 5);
    // 32-bit limit (IGT 32bits-limit): points are 64-bit.
    let big = (1u64 << 32) + 7;
    t.signal_point(big).unwrap();
    assert_eq!(t.query().unwrap(), big);
    t.wait(big, Some(Duration::ZERO), NONE).unwrap();

    // A submitted but unsignalled point: query and query_last disagree.
    let vgem = VgemFence::new();
    let u = Syncobj::create(&dev).unwrap();
    u.signal_point(1).unwrap();
    u.import_sync_file(2, &vgem.sync_file).unwrap();
    assert_eq!(u.query().unwrap(), 1);
    assert_eq!(u.query_last().unwrap(), 2);
    vgem.signal();
    u.wait(2, Some(LONG), NONE).unwrap();
    assert_eq!(u.query().unwrap(), 2);
}

#[test]
fn wait_for_submit() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    // IGT wait-for-submit-*: an unsubmitted point without WAIT_FOR_SUBMIT is EINVAL…
    assert_eq!(errno(t.wait(5, Some(Duration::ZERO), NONE)), EINVAL);
    assert_eq!(errno(t.wait(5, Some(SHORT), NONE)), EINVAL);
    // …with it, it times out (ETIME)…
    let submit = SyncobjWaitFlags::WAIT_FOR_SUBMIT;
    assert_eq!(errno(t.wait(5, Some(SHORT), submit)), ETIME);
    // …and returns once another thread submits and signals.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            t.signal_point(5).unwrap();
        });
        let start = Instant::now();
        t.wait(5, Some(LONG), submit).unwrap();
        assert!(start.elapsed() < LONG);
    });
    assert_eq!(t.query().unwrap(), 5);
}

#[test]
fn wait_available() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    let available = SyncobjWaitFlags::WAIT_AVAILABLE;
    assert_eq!(errno(t.wait(1, Some(SHORT), available)), ETIME);
    let vgem = VgemFence::new();
    t.import_sync_file(1, &vgem.sync_file).unwrap();
    // Submitted, not signalled: WAIT_AVAILABLE returns, a plain wait times out.
    t.wait(1, Some(SHORT), available).unwrap();
    assert_eq!(errno(t.wait(1, Some(SHORT), NONE)), ETIME);
    vgem.signal();
    t.wait(1, Some(LONG), NONE).unwrap();
}

#[test]
fn transfer_between_points_and_syncobjs() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    let u = Syncobj::create(&dev).unwrap();
    let b = Syncobj::create(&dev).unwrap();
    // Nothing at point 1 yet: EINVAL, nothing blocks.
    assert_eq!(errno(u.transfer(&t, 1, 2)), EINVAL);

    // A pending fence moves along with the transfers.
    let vgem = VgemFence::new();
    t.import_sync_file(1, &vgem.sync_file).unwrap();
    t.transfer(&t, 1, 4).unwrap(); // between points of one timeline
    u.transfer(&t, 4, 2).unwrap(); // timeline → timeline
    b.transfer(&t, 4, 0).unwrap(); // timeline → binary
    assert_eq!(t.query_last().unwrap(), 4);
    assert_eq!(u.query_last().unwrap(), 2);
    for (s, p) in [(&t, 4), (&u, 2), (&b, 0)] {
        assert_eq!(
            errno(s.wait(p, Some(SHORT), NONE)),
            ETIME,
            "point {p} pending"
        );
    }
    vgem.signal();
    let points = [t.point(4), u.point(2), b.point(0)];
    wait_points(&points, Some(LONG), SyncobjWaitFlags::WAIT_ALL).unwrap();
    assert_eq!(u.query().unwrap(), 2);
}

#[test]
fn binary_signal_reset_wait() {
    let _serial = serial();
    let Some(dev) = virtio("renderD") else { return };
    let a = Syncobj::create(&dev).unwrap();
    let b = Syncobj::create_signaled(&dev).unwrap();
    b.wait(0, Some(Duration::ZERO), NONE).unwrap();
    // No fence: EINVAL; with WAIT_FOR_SUBMIT a timeout.
    assert_eq!(errno(a.wait(0, Some(Duration::ZERO), NONE)), EINVAL);
    assert_eq!(
        errno(a.wait(0, Some(SHORT), SyncobjWaitFlags::WAIT_FOR_SUBMIT)),
        ETIME
    );
    assert!(!a.point(0).is_signaled().unwrap());
    // Any: b (index 1) is signalled; all: a is not.
    let both = [a.point(0), b.point(0)];
    let submit = SyncobjWaitFlags::WAIT_FOR_SUBMIT;
    assert_eq!(wait_points(&both, Some(Duration::ZERO), submit).unwrap(), 1);
    assert_eq!(
        errno(wait_points(
            &both,
            Some(SHORT),
            submit | SyncobjWaitFlags::WAIT_ALL
        )),
        ETIME
    );
    a.signal().unwrap();
    assert!(a.point(0).is_signaled().unwrap());
    wait_points(&both, Some(Duration::ZERO), SyncobjWaitFlags::WAIT_ALL).unwrap();
    a.reset().unwrap();
    assert_eq!(errno(a.wait(0, Some(Duration::ZERO), NONE)), EINVAL);
    // Signalled from another thread while a WAIT_FOR_SUBMIT wait blocks.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            a.signal().unwrap();
        });
        a.wait(0, Some(LONG), submit).unwrap();
    });
}

#[test]
fn eventfd_fires_at_the_right_point() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    // Registered before the signal (IGT wait-before-signal): not at 3, at 5.
    let ev = t.eventfd(5, NONE).unwrap();
    assert!(!readable(ev.as_fd(), Duration::ZERO));
    t.signal_point(3).unwrap();
    assert!(
        !readable(ev.as_fd(), SHORT),
        "point 3 must not fire an eventfd for 5"
    );
    t.signal_point(5).unwrap();
    assert!(readable(ev.as_fd(), LONG));
    assert!(readable(ev.as_fd(), Duration::ZERO), "stays readable");
    // Registered after the signal, and on an older point (IGT wait-signaled): readable at once.
    for point in [5, 2] {
        let ev = t.eventfd(point, NONE).unwrap();
        assert!(readable(ev.as_fd(), Duration::ZERO), "point {point}");
    }
    // WAIT_AVAILABLE: fires at submission, not at the signal.
    let vgem = VgemFence::new();
    let avail = t.eventfd(7, SyncobjWaitFlags::WAIT_AVAILABLE).unwrap();
    let signal = t.eventfd(7, NONE).unwrap();
    assert!(!readable(avail.as_fd(), SHORT));
    t.import_sync_file(7, &vgem.sync_file).unwrap();
    assert!(
        readable(avail.as_fd(), LONG),
        "WAIT_AVAILABLE fires once submitted"
    );
    assert!(!readable(signal.as_fd(), SHORT), "not signalled yet");
    vgem.signal();
    assert!(readable(signal.as_fd(), LONG));
    // A binary syncobj: point 0.
    let b = Syncobj::create(&dev).unwrap();
    let ev = b.eventfd(0, NONE).unwrap();
    assert!(!readable(ev.as_fd(), SHORT));
    b.signal().unwrap();
    assert!(readable(ev.as_fd(), LONG));
}

#[test]
fn sync_file_export_and_import() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    // Nothing submitted: no sync_file.
    assert_eq!(errno(t.export_sync_file(1)), EINVAL);
    let vgem = VgemFence::new();
    t.import_sync_file(1, &vgem.sync_file).unwrap();
    let exported = t.export_sync_file(1).unwrap();
    assert!(
        !readable(exported.as_fd(), SHORT),
        "exported point 1 is pending"
    );
    vgem.signal();
    assert!(
        readable(exported.as_fd(), LONG),
        "exported sync_file signals with the point"
    );

    // Import: a sync_file exported from another syncobj's point, into point 3 of a timeline.
    let src = Syncobj::create(&dev).unwrap();
    src.signal_point(9).unwrap();
    let sf = src.export_sync_file(9).unwrap();
    assert!(
        readable(sf.as_fd(), Duration::ZERO),
        "a signalled point exports signalled"
    );
    let dst = Syncobj::create(&dev).unwrap();
    dst.signal_point(2).unwrap();
    dst.import_sync_file(3, &sf).unwrap();
    assert_eq!(dst.query_last().unwrap(), 3);
    dst.wait(3, Some(LONG), NONE).unwrap();
    assert_eq!(dst.query().unwrap(), 3);
    // Point 0 (binary): import replaces the fence, export gives it back.
    let b = Syncobj::create(&dev).unwrap();
    b.import_sync_file(0, &sf).unwrap();
    b.wait(0, Some(Duration::ZERO), NONE).unwrap();
    let again = b.export_sync_file(0).unwrap();
    assert!(readable(again.as_fd(), Duration::ZERO));
    // The syncobj fd round trip: another handle, the same kernel object.
    let fd = dst.export().unwrap();
    let twin = Syncobj::import(&dev, fd.as_fd()).unwrap();
    assert_ne!(u32::from(twin.handle()), u32::from(dst.handle()));
    assert_eq!(twin.query().unwrap(), 3);
    twin.signal_point(4).unwrap();
    assert_eq!(dst.query().unwrap(), 4);
}

#[test]
fn fence_of_a_point() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let t = Syncobj::create(&dev).unwrap();
    let f5 = t.point(5).fence();
    let f6 = t.point(6).fence();
    assert_eq!((f5.context(), f5.seqno()), (t.context(), 5));
    assert_eq!(f5.driver_name(), "drm_syncobj");
    assert!(f6.is_later(&f5) && !f5.is_later(&f6));
    let other = Syncobj::create(&dev).unwrap();
    assert_ne!(other.context(), t.context());
    assert_eq!(f5.status(), FenceStatus::Pending);

    // poll_fd is the native eventfd: the core creates none.
    let before = stats();
    let fd = f5.poll_fd().unwrap();
    assert_eq!(
        stats().since(&before).eventfds_created,
        0,
        "no core eventfd"
    );
    assert!(!f5.signaling_enabled(), "the native fd arms nothing");
    assert!(!fd.is_readable().unwrap());
    // An unsubmitted point is waited for (the eventfd waits for submission): a timeout.
    assert_eq!(f5.wait_timeout(Some(SHORT)), Err(WaitError::TimedOut));
    t.signal_point(3).unwrap();
    assert!(!f5.is_signaled());
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            t.signal_point(5).unwrap();
        });
        f5.wait_timeout(Some(LONG)).unwrap();
    });
    assert!(f5.is_signaled() && fd.is_readable().unwrap());
    assert!(!f6.is_signaled());
    assert_eq!(stats().since(&before).eventfds_created, 0);

    // Callbacks: a watcher thread signals the fence.
    let f8 = t.point(8).fence();
    let (tx, rx) = mpsc::channel();
    f8.add_callback(move |info| tx.send((info.seqno, info.status())).unwrap())
        .unwrap();
    assert!(f8.signaling_enabled());
    t.signal_point(8).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), (8, FenceStatus::Signaled));
    // An armed fence released while pending: the watcher stops, nothing hangs.
    let f20 = t.point(20).fence();
    f20.enable_signaling();
    drop(f20);
    // A fence keeps its syncobj alive.
    let keep = Syncobj::create(&dev).unwrap().point(1).fence();
    assert_eq!(
        keep.wait_timeout(Some(Duration::ZERO)),
        Err(WaitError::TimedOut)
    );
}

#[test]
fn invalid_handles_and_fds() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    let bogus: syncobj::Handle = NonZeroU32::new(0xdead_beef).unwrap().into();
    // Unknown handles: ENOENT (IGT invalid-*-bad-handle).
    assert_eq!(errno(dev.destroy_syncobj(bogus)), EINVAL);
    assert_eq!(errno(dev.syncobj_wait(&[bogus], 0, false, false)), ENOENT);
    let mut p = [0u64];
    assert_eq!(
        errno(dev.syncobj_timeline_query(&[bogus], &mut p, false)),
        ENOENT
    );
    assert_eq!(errno(dev.syncobj_timeline_signal(&[bogus], &[1])), ENOENT);
    assert_eq!(errno(dev.syncobj_to_fd(bogus, false)), EINVAL);
    assert_eq!(errno(dev.syncobj_to_fd(bogus, true)), ENOENT);

    let t = Syncobj::create(&dev).unwrap();
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    // SAFETY: a number far above any fd this process has open; the kernel sees a closed fd.
    let closed = unsafe { BorrowedFd::borrow_raw(1_000_000) };
    // Not a syncobj fd / a closed fd: EINVAL (drm_syncobj_fd_to_handle).
    assert_eq!(errno(Syncobj::import(&dev, eventfd.as_fd())), EINVAL);
    assert_eq!(errno(Syncobj::import(&dev, closed)), EINVAL);
    // Not a sync_file / a closed fd: EINVAL (sync_file_get_fence).
    let not_a_sync_file = SyncFile::from_fd(eventfd.try_clone().unwrap());
    assert_eq!(errno(t.import_sync_file(1, &not_a_sync_file)), EINVAL);
    // SAFETY: never dropped (ManuallyDrop), so the closed number is never closed by us.
    let closed_sync_file = std::mem::ManuallyDrop::new(SyncFile::from_fd(unsafe {
        OwnedFd::from_raw_fd(1_000_000)
    }));
    assert_eq!(errno(t.import_sync_file(0, &closed_sync_file)), EINVAL);
    // eventfd ioctl (IGT syncobj_eventfd invalid-*): bad flags EINVAL, not an eventfd EINVAL,
    // a closed fd EBADF.
    assert_eq!(
        errno(t.eventfd(1, SyncobjWaitFlags::WAIT_FOR_SUBMIT)),
        EINVAL
    );
    assert_eq!(errno(t.register_eventfd(1, dev.as_fd(), NONE)), EINVAL);
    assert_eq!(errno(t.register_eventfd(1, closed, NONE)), EBADF);
    // An empty wait list.
    assert_eq!(errno(wait_points(&[], Some(Duration::ZERO), NONE)), EINVAL);
    // Points on two DRM files cannot be mixed in one call.
    let other = virtio("renderD").unwrap();
    let o = Syncobj::create(&other).unwrap();
    assert_eq!(errno(t.transfer(&o, 0, 1)), EINVAL);
}

#[test]
fn no_handle_or_fd_leak_over_10000_cycles() {
    let _serial = serial();
    let Some(dev) = virtio("card") else { return };
    const PROBE: usize = 64;
    let probe = || -> Vec<u32> {
        let objs: Vec<Syncobj> = (0..PROBE).map(|_| Syncobj::create(&dev).unwrap()).collect();
        objs.iter().map(|s| u32::from(s.handle())).collect()
    };
    // The measure: handles come from an idr that hands out the lowest free id. Check that first.
    {
        let a = Syncobj::create(&dev).unwrap();
        let b = Syncobj::create(&dev).unwrap();
        let c = Syncobj::create(&dev).unwrap();
        let b_handle = u32::from(b.handle());
        drop(b);
        let d = Syncobj::create(&dev).unwrap();
        assert_eq!(
            u32::from(d.handle()),
            b_handle,
            "the idr reuses the lowest free id"
        );
        drop((a, c, d));
    }
    // So 64 fresh handles are the 64 lowest free ids; a leaked handle would sit among them
    // (each cycle allocates the lowest ids) and shift the set.
    let handles_before = probe();
    // Watcher threads of earlier tests close their eventfds when they wake: let them finish.
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = open_fds();

    for i in 0..10_000u64 {
        let t = Syncobj::create(&dev).unwrap();
        t.signal_point(1).unwrap();
        let fd = t.export().unwrap();
        let twin = Syncobj::import(&dev, fd.as_fd()).unwrap();
        let sf = twin.export_sync_file(1).unwrap(); // temporary syncobj path
        twin.import_sync_file(2, &sf).unwrap(); // temporary syncobj path
        t.wait(2, Some(Duration::ZERO), NONE).unwrap();
        if i % 100 == 0 {
            let fence = t.point(3).fence();
            let _ = fence.poll_fd().unwrap(); // native eventfd, closed with the fence
            t.signal_point(3).unwrap();
            fence.wait_timeout(Some(LONG)).unwrap();
        }
        // Error paths must not leak a temporary either.
        assert_eq!(errno(t.export_sync_file(50)), EINVAL);
    }

    assert_eq!(open_fds(), fds_before, "fds leaked");
    assert_eq!(probe(), handles_before, "syncobj handles leaked");
    eprintln!(
        "handles probed: {:?}..{:?}",
        handles_before.first(),
        handles_before.last()
    );
    // Sanity of both measures: a kept fd and a leaked handle are seen.
    let kept = Syncobj::create(&dev).unwrap().export().unwrap();
    assert_eq!(open_fds(), fds_before + 1);
    drop(kept);
    std::mem::forget(Syncobj::create(&dev).unwrap()); // leaks the handle (and this device fd)
    assert_ne!(probe(), handles_before, "a leaked handle shifts the probe");
}
