//! Kernel tests of DRM syncobjs (binary and timeline) on virtio-gpu: `DrmDevice`, `Syncobj`,
//! `SyncobjPoint` and the `Fence` of a point. IGT's `syncobj_timeline`, `syncobj_wait` and
//! `syncobj_eventfd` are the reference for the semantics asserted here.
//!
//! Pending fences come from vgem (`support::vgem::PendingFence`: `VGEM_FENCE_ATTACH` on a dumb
//! BO, exported from its dma-buf as a sync_file): host-signalled syncobj points are always already signalled, and a point that
//! is *submitted but not signalled* needs a real pending fence. vgem signals such a fence by
//! itself after ~10 s, so every wait on one here is far shorter.
//!
//! All tests of this binary run one at a time (`serial()`), because the leak test counts the
//! process's fds.

mod support;

use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use drm::control::{syncobj, Device as _};
use fence_bridge::{
    stats, wait_points, DrmDevice, FenceStatus, SyncFile, Syncobj, SyncobjWaitFlags, WaitError,
};
use rustix::io::Errno;
use support::vgem::{open_fd_count, serial, PendingFence, Vgem};
use support::{find_node, readable, require_device, virtio_gpu};

const EINVAL: i32 = Errno::INVAL.raw_os_error();
const ENOENT: i32 = Errno::NOENT.raw_os_error();
const EBADF: i32 = Errno::BADF.raw_os_error();
const ETIME: i32 = Errno::TIME.raw_os_error();
const NONE: SyncobjWaitFlags = SyncobjWaitFlags::empty();
const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(5);

/// Threads of this process.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Whether fence-bridge's kernel-fence reactor thread (`fence-bridge-kfence`) runs.
fn reactor_running() -> bool {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|comm| comm.starts_with("fence-bridge-kf"))
    })
}

/// Waits (up to [`LONG`]) for the reactor to close what it holds, then asserts `n` open fds.
#[track_caller]
fn settle_fds(n: usize, what: &str) {
    let deadline = Instant::now() + LONG;
    while open_fd_count() != n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open_fd_count(), n, "{what}");
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

#[test]
fn capability_probe_true_on_virtio_gpu_false_on_vgem() {
    let _serial = serial();
    let Some(card) = virtio_gpu("card") else {
        return;
    };
    assert_eq!(card.driver_name(), "virtio_gpu");
    assert!(card.supports_syncobj());
    assert!(
        card.supports_syncobj_timeline(),
        "DRM_CAP_SYNCOBJ_TIMELINE + SYNCOBJ_EVENTFD"
    );
    let render = virtio_gpu("renderD").expect("virtio_gpu render node");
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
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
    let vgem_node = Vgem::open().expect("vgem is part of the guest");
    let mut vgem = PendingFence::new(&vgem_node);
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
    let t = Syncobj::create(&dev).unwrap();
    let available = SyncobjWaitFlags::WAIT_AVAILABLE;
    assert_eq!(errno(t.wait(1, Some(SHORT), available)), ETIME);
    let vgem_node = Vgem::open().expect("vgem is part of the guest");
    let mut vgem = PendingFence::new(&vgem_node);
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
    let t = Syncobj::create(&dev).unwrap();
    let u = Syncobj::create(&dev).unwrap();
    let b = Syncobj::create(&dev).unwrap();
    // Nothing at point 1 yet: EINVAL, nothing blocks.
    assert_eq!(errno(u.transfer(&t, 1, 2)), EINVAL);

    // A pending fence moves along with the transfers.
    let vgem_node = Vgem::open().expect("vgem is part of the guest");
    let mut vgem = PendingFence::new(&vgem_node);
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
    let Some(dev) = virtio_gpu("renderD") else {
        return;
    };
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
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
    let vgem_node = Vgem::open().expect("vgem is part of the guest");
    let mut vgem = PendingFence::new(&vgem_node);
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
    let t = Syncobj::create(&dev).unwrap();
    // Nothing submitted: no sync_file.
    assert_eq!(errno(t.export_sync_file(1)), EINVAL);
    let vgem_node = Vgem::open().expect("vgem is part of the guest");
    let mut vgem = PendingFence::new(&vgem_node);
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
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

    // Callbacks: the crate's kernel-fence reactor signals the fence (its thread and epoll fd
    // exist from the first armed kernel fence of the process on).
    let fds_before = open_fd_count() + usize::from(!reactor_running());
    let f8 = t.point(8).fence();
    let (tx, rx) = mpsc::channel();
    f8.add_callback(move |info| tx.send((info.seqno, info.status())).unwrap())
        .unwrap();
    assert!(f8.signaling_enabled());
    t.signal_point(8).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), (8, FenceStatus::Signaled));
    assert!(reactor_running());
    settle_fds(fds_before, "f8's eventfd closed after the signal");
    // Arming ten more fences (timeline points and a binary point 0) starts no thread: one
    // eventfd each, in the reactor's epoll set, closed once signalled.
    let threads_before = thread_count();
    let b = Syncobj::create(&dev).unwrap();
    let (tx, rx) = mpsc::channel();
    let armed: Vec<_> = (30..39)
        .map(|p| t.point(p))
        .chain([b.point(0)])
        .map(|point| {
            let fence = point.fence();
            let tx = tx.clone();
            fence
                .add_callback(move |info| tx.send(info.seqno).unwrap())
                .unwrap();
            fence
        })
        .collect();
    assert_eq!(thread_count(), threads_before, "no thread per armed fence");
    assert_eq!(
        open_fd_count(),
        fds_before + 10,
        "one eventfd per armed fence"
    );
    t.signal_point(38).unwrap();
    b.signal().unwrap();
    let mut seqnos: Vec<u64> = (0..10).map(|_| rx.recv_timeout(LONG).unwrap()).collect();
    seqnos.sort_unstable();
    assert_eq!(seqnos, [0, 30, 31, 32, 33, 34, 35, 36, 37, 38]);
    drop(armed);
    settle_fds(fds_before, "eventfds closed after the signal");
    // An armed fence released while pending (past point 38): unregistered, its eventfd closed,
    // nothing hangs.
    let f100 = t.point(100).fence();
    f100.enable_signaling();
    assert_eq!(open_fd_count(), fds_before + 1);
    drop(f100);
    assert_eq!(
        open_fd_count(),
        fds_before,
        "released while pending: eventfd closed"
    );
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
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
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
    let other = virtio_gpu("renderD").unwrap();
    let o = Syncobj::create(&other).unwrap();
    assert_eq!(errno(t.transfer(&o, 0, 1)), EINVAL);
}

#[test]
fn no_handle_or_fd_leak_over_10000_cycles() {
    let _serial = serial();
    let Some(dev) = virtio_gpu("card") else {
        return;
    };
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
    // The reactor closes the eventfds of signalled fences right after their callbacks: let it.
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = open_fd_count();

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

    assert_eq!(open_fd_count(), fds_before, "fds leaked");
    assert_eq!(probe(), handles_before, "syncobj handles leaked");
    eprintln!(
        "handles probed: {:?}..{:?}",
        handles_before.first(),
        handles_before.last()
    );
    // Sanity of both measures: a kept fd and a leaked handle are seen.
    let kept = Syncobj::create(&dev).unwrap().export().unwrap();
    assert_eq!(open_fd_count(), fds_before + 1);
    drop(kept);
    std::mem::forget(Syncobj::create(&dev).unwrap()); // leaks the handle (and this device fd)
    assert_ne!(probe(), handles_before, "a leaked handle shifts the probe");
}
