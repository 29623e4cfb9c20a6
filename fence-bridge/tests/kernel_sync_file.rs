//! Kernel tests: sync_files and dma-buf implicit fences, with vgem's controllable fences.
//!
//! Run for real in the guest by `cargo xtask vm-test -p fence-bridge --test kernel_sync_file`;
//! on a machine without vgem they print SKIP and pass (the fd-validation test needs no device
//! and runs everywhere). Modelled on IGT's `dmabuf_sync_file` (export-basic,
//! export-before-signal, export-multiwait, import-basic, import-multiple-read-write).
//!
//! Every test holds [`serial`]: they share the vgem device, the process-wide fence-bridge
//! counters and the fd table. No test relies on a vgem fence staying pending for more than a
//! couple of seconds (vgem signals a forgotten fence by itself after ~10 s).

mod support;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use fence_bridge::{
    stats, wait_any_timeout, Access, DmaBuf, FenceStatus, Ktime, SyncFile, WaitError,
};
use rustix::io::Errno;
use support::vgem::{open_fd_count, serial, Vgem};

/// Generous: everything is slow under TCG; a signalled vgem fence shows up in 2–4 ms there.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

fn errno(err: &io::Error) -> Option<Errno> {
    Errno::from_io_error(err)
}

#[track_caller]
fn assert_pending(sync_file: &SyncFile, what: &str) {
    assert!(
        !sync_file.is_signaled().expect("poll"),
        "{what}: expected pending"
    );
    assert_eq!(
        sync_file.status().expect("FILE_INFO"),
        FenceStatus::Pending,
        "{what}"
    );
}

#[track_caller]
fn assert_ready(sync_file: &SyncFile, what: &str) {
    assert!(
        sync_file.wait_timeout(Some(SIGNAL_TIMEOUT)).expect("poll"),
        "{what}: expected signalled within {SIGNAL_TIMEOUT:?}"
    );
    assert_eq!(
        sync_file.status().expect("FILE_INFO"),
        FenceStatus::Signaled,
        "{what}"
    );
}

// ---- export -----------------------------------------------------------------------------------

#[test]
fn export_basic_idle_buffer_is_ready() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());
    for access in [Access::Read, Access::Write] {
        assert!(
            buf.is_idle(access).unwrap(),
            "{access:?}: idle buffer polls ready"
        );
        let sf = buf
            .export_sync_file(access)
            .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
        assert!(sf.is_signaled().unwrap(), "{access:?}: nothing to wait for");
        let info = sf.info().unwrap();
        assert_eq!(info.status, FenceStatus::Signaled);
        assert_eq!(info.fences.len(), 1, "{info:?}");
        assert_eq!(info.fences[0].driver_name, "stub", "{info:?}");
    }
    vgem.destroy_bo(bo);
}

#[test]
fn export_before_signal_is_pending_then_ready_with_kernel_timestamp() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());
    let fence = vgem.attach(&bo, true);

    let read = buf.export_sync_file(Access::Read).unwrap();
    let write = buf.export_sync_file(Access::Write).unwrap();
    assert_pending(&read, "READ export with a pending write fence");
    assert_pending(&write, "WRITE export with a pending write fence");
    assert!(!buf.is_idle(Access::Read).unwrap());
    assert!(!read.wait_timeout(Some(Duration::from_millis(50))).unwrap());

    let info = read.info().unwrap();
    assert_eq!(info.status, FenceStatus::Pending);
    assert_eq!(info.fences.len(), 1, "{info:?}");
    assert_eq!(info.fences[0].driver_name, "vgem");
    assert_eq!(info.fences[0].status, FenceStatus::Pending);
    assert_eq!(info.fences[0].timestamp, None);
    assert_eq!(info.timestamp(), None);
    assert_eq!(
        read.status_and_timestamp().unwrap(),
        (FenceStatus::Pending, None)
    );

    let before_signal = Ktime::now();
    vgem.signal(fence);
    assert_ready(&read, "READ export after the signal");
    assert_ready(&write, "WRITE export after the signal");
    let info = read.info().unwrap();
    assert_eq!(info.fences[0].status, FenceStatus::Signaled);
    let ts = info
        .timestamp()
        .expect("a signalled sync_file has a timestamp");
    assert!(
        ts >= before_signal,
        "kernel timestamp {ts:?} before the signal {before_signal:?}"
    );
    assert!(ts <= Ktime::now());
    assert_eq!(
        read.status_and_timestamp().unwrap(),
        (FenceStatus::Signaled, Some(ts)),
        "one ioctl gives what info() does"
    );
    // The snapshot does not change; the buffer is idle now.
    assert!(buf.is_idle(Access::Write).unwrap());
    vgem.destroy_bo(bo);
}

#[test]
fn write_fence_blocks_read_export_read_fence_blocks_only_write_export() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());

    // A read-only fence: readers need not wait, writers must.
    let reader = vgem.attach(&bo, false);
    let read = buf.export_sync_file(Access::Read).unwrap();
    let write = buf.export_sync_file(Access::Write).unwrap();
    assert!(
        read.is_signaled().unwrap(),
        "a read fence must not block READ export"
    );
    assert_pending(&write, "WRITE export with a pending read fence");
    assert!(buf.is_idle(Access::Read).unwrap());
    assert!(!buf.is_idle(Access::Write).unwrap());
    // vgem refuses a write fence while a fence is pending.
    assert_eq!(
        vgem.try_attach(&bo, true).map_err(|e| errno(&e)).err(),
        Some(Some(Errno::BUSY))
    );
    vgem.signal(reader);
    assert_ready(&write, "WRITE export after the read fence signalled");

    // A write fence blocks readers.
    let writer = vgem.attach(&bo, true);
    let read = buf.export_sync_file(Access::Read).unwrap();
    assert_pending(&read, "READ export with a pending write fence");
    vgem.signal(writer);
    assert_ready(&read, "READ export after the write fence signalled");
    vgem.destroy_bo(bo);
}

#[test]
fn export_multiwait_several_fences_on_one_buffer() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());
    let f1 = vgem.attach(&bo, false);
    let f2 = vgem.attach(&bo, false);
    let f3 = vgem.attach(&bo, false);

    let write = buf.export_sync_file(Access::Write).unwrap();
    let info = write.info().unwrap();
    assert_eq!(
        info.fences.len(),
        3,
        "one entry per pending read fence: {info:?}"
    );
    assert!(info.fences.iter().all(|f| f.driver_name == "vgem"));
    assert!(buf
        .export_sync_file(Access::Read)
        .unwrap()
        .is_signaled()
        .unwrap());

    vgem.signal(f2);
    assert_pending(&write, "WRITE export with 2 of 3 fences pending");
    let info = write.info().unwrap();
    let statuses: Vec<_> = info.fences.iter().map(|f| f.status).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == FenceStatus::Signaled)
            .count(),
        1,
        "{info:?}"
    );
    vgem.signal(f1);
    assert_pending(&write, "WRITE export with 1 of 3 fences pending");
    let before_last = Ktime::now();
    vgem.signal(f3);
    assert_ready(&write, "WRITE export after all 3 signalled");
    let info = write.info().unwrap();
    assert!(info
        .fences
        .iter()
        .all(|f| f.status == FenceStatus::Signaled));
    assert!(
        info.timestamp().unwrap() >= before_last,
        "the latest timestamp counts"
    );
    assert_eq!(
        write.status_and_timestamp().unwrap(),
        (FenceStatus::Signaled, info.timestamp()),
        "the latest of three"
    );
    vgem.destroy_bo(bo);
}

#[test]
fn status_and_timestamp_of_more_fences_than_the_inline_array() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());
    let fences: Vec<_> = (0..6).map(|_| vgem.attach(&bo, false)).collect();
    let write = buf.export_sync_file(Access::Write).unwrap();
    assert_eq!(write.info().unwrap().fences.len(), 6);
    assert_eq!(
        write.status_and_timestamp().unwrap(),
        (FenceStatus::Pending, None)
    );
    for fence in fences {
        vgem.signal(fence);
    }
    assert_ready(&write, "WRITE export after all 6 signalled");
    let (status, timestamp) = write.status_and_timestamp().unwrap();
    assert_eq!(status, FenceStatus::Signaled);
    assert_eq!(
        timestamp,
        write.info().unwrap().timestamp(),
        "the latest of six"
    );
    assert!(timestamp.is_some());
    vgem.destroy_bo(bo);
}

// ---- import -----------------------------------------------------------------------------------

#[test]
fn import_adds_and_never_replaces() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let idle = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());
    let signalled = DmaBuf::new(idle.dmabuf.as_fd())
        .export_sync_file(Access::Write)
        .unwrap();
    assert!(signalled.is_signaled().unwrap());

    // A pending write fence; importing an already-signalled sync_file as a write fence must not
    // replace it: readers and writers still wait for the vgem fence.
    let writer = vgem.attach(&bo, true);
    buf.import_sync_file(&signalled, Access::Write)
        .expect("DMA_BUF_IOCTL_IMPORT_SYNC_FILE");
    assert_pending(
        &buf.export_sync_file(Access::Write).unwrap(),
        "WRITE after import",
    );
    assert_pending(
        &buf.export_sync_file(Access::Read).unwrap(),
        "READ after import",
    );
    buf.import_sync_file(&signalled, Access::Read).unwrap();
    let write = buf.export_sync_file(Access::Write).unwrap();
    assert_pending(&write, "WRITE after a read import");
    vgem.signal(writer);
    assert_ready(&write, "WRITE export after the vgem fence signalled");
    assert!(buf.is_idle(Access::Write).unwrap());
    vgem.destroy_bo(bo);
    vgem.destroy_bo(idle);
}

#[test]
fn import_multiple_read_write() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let a = vgem.create_bo();
    let b = vgem.create_bo();
    let buf_a = DmaBuf::new(a.dmabuf.as_fd());
    let buf_b = DmaBuf::new(b.dmabuf.as_fd());

    // b has only a reader; a has a writer whose fence is imported into b as a write fence.
    let fa = vgem.attach(&a, true);
    let fb = vgem.attach(&b, false);
    assert!(buf_b
        .export_sync_file(Access::Read)
        .unwrap()
        .is_signaled()
        .unwrap());
    let from_a = buf_a.export_sync_file(Access::Read).unwrap();
    buf_b.import_sync_file(&from_a, Access::Write).unwrap();
    let b_read = buf_b.export_sync_file(Access::Read).unwrap();
    let b_write = buf_b.export_sync_file(Access::Write).unwrap();
    assert_pending(&b_read, "b READ after importing a's writer");
    let info = b_write.info().unwrap();
    assert_eq!(info.fences.len(), 2, "a's writer and b's reader: {info:?}");

    vgem.signal(fa);
    assert_ready(&b_read, "b READ once a's writer signalled");
    assert_pending(&b_write, "b WRITE still waits for b's reader");
    vgem.signal(fb);
    assert_ready(&b_write, "b WRITE once both signalled");

    // Importing as a read fence: only writers wait for it.
    let fa2 = vgem.attach(&a, true);
    buf_b
        .import_sync_file(&buf_a.export_sync_file(Access::Read).unwrap(), Access::Read)
        .unwrap();
    assert!(buf_b
        .export_sync_file(Access::Read)
        .unwrap()
        .is_signaled()
        .unwrap());
    let b_write = buf_b.export_sync_file(Access::Write).unwrap();
    assert_pending(&b_write, "b WRITE after a read import of a pending fence");
    vgem.signal(fa2);
    assert_ready(&b_write, "b WRITE after a's second writer");
    vgem.destroy_bo(a);
    vgem.destroy_bo(b);
}

// ---- merge, info, deadline ----------------------------------------------------------------------

#[test]
fn merge_and_info() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let a = vgem.create_bo();
    let b = vgem.create_bo();
    let fa = vgem.attach(&a, true);
    let fb = vgem.attach(&b, true);
    let sa = DmaBuf::new(a.dmabuf.as_fd())
        .export_sync_file(Access::Read)
        .unwrap();
    let sb = DmaBuf::new(b.dmabuf.as_fd())
        .export_sync_file(Access::Read)
        .unwrap();

    let merged = SyncFile::merge(&sa, &sb, "fencegate-merge").expect("SYNC_IOC_MERGE");
    let info = merged.info().unwrap();
    assert_eq!(info.name, "fencegate-merge");
    assert_eq!(info.status, FenceStatus::Pending);
    assert_eq!(info.fences.len(), 2, "{info:?}");
    for f in &info.fences {
        assert_eq!(f.driver_name, "vgem");
        assert_eq!(f.status, FenceStatus::Pending);
        assert_eq!(f.timestamp, None);
    }
    // A merge with itself keeps one fence per context.
    assert_eq!(
        SyncFile::merge(&sa, &sa, "self")
            .unwrap()
            .info()
            .unwrap()
            .fences
            .len(),
        1
    );
    // Long names are cut to 31 bytes; NUL is refused before any syscall.
    let long = SyncFile::merge(&sa, &sb, &"x".repeat(64)).unwrap();
    assert_eq!(long.info().unwrap().name, "x".repeat(31));
    assert_eq!(
        SyncFile::merge(&sa, &sb, "a\0b").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );

    let t0 = Ktime::now();
    vgem.signal(fa);
    assert!(sa.wait_timeout(Some(SIGNAL_TIMEOUT)).unwrap());
    assert_pending(&merged, "merged with one of two signalled");
    let info = merged.info().unwrap();
    let done: Vec<_> = info
        .fences
        .iter()
        .filter(|f| f.status.is_signaled())
        .collect();
    assert_eq!(done.len(), 1, "{info:?}");
    assert!(done[0].timestamp.unwrap() >= t0);
    assert_eq!(info.timestamp(), None);

    let t1 = Ktime::now();
    vgem.signal(fb);
    assert_ready(&merged, "merged after both signalled");
    let info = merged.info().unwrap();
    assert_eq!(info.status, FenceStatus::Signaled);
    assert!(info
        .fences
        .iter()
        .all(|f| f.status == FenceStatus::Signaled));
    assert!(info.timestamp().unwrap() >= t1);
    // try_clone shares the fences.
    assert!(merged.try_clone().unwrap().is_signaled().unwrap());
    vgem.destroy_bo(a);
    vgem.destroy_bo(b);
}

#[test]
fn deadline_is_accepted_or_clearly_unsupported() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let f = vgem.attach(&bo, true);
    let sf = DmaBuf::new(bo.dmabuf.as_fd())
        .export_sync_file(Access::Read)
        .unwrap();
    let deadline = Ktime::now().checked_add(Duration::from_millis(16)).unwrap();
    match sf.set_deadline(deadline) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            eprintln!("SYNC_IOC_SET_DEADLINE unsupported here: {e}")
        }
        Err(e) => panic!("SYNC_IOC_SET_DEADLINE on a vgem sync_file: {e}"),
    }
    // A hint changes nothing about what is waited for.
    assert_pending(&sf, "after a deadline hint");
    // Through the Fence: a hint, never an error.
    let fence = sf.try_clone().unwrap().into_fence();
    fence.set_deadline(deadline);
    vgem.signal(f);
    assert_ready(&sf, "after the signal");
    // After the signal the ioctl is still accepted (or still unsupported).
    if let Err(e) = sf.set_deadline(deadline) {
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }
    vgem.destroy_bo(bo);
}

// ---- as fence-bridge Fences ---------------------------------------------------------------------

#[test]
fn sync_file_fence_native_poll_fd_wait_callback_and_kernel_timestamp() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let vf = vgem.attach(&bo, true);
    let sf = DmaBuf::new(bo.dmabuf.as_fd())
        .export_sync_file(Access::Read)
        .unwrap();
    let before = stats();
    let fence = sf.into_fence();
    assert_eq!(fence.driver_name(), "vgem");
    assert!(!fence.is_signaled());
    assert_eq!(fence.status(), FenceStatus::Pending);
    assert_eq!(
        fence.wait_timeout(Some(Duration::ZERO)),
        Err(WaitError::TimedOut)
    );
    assert!(
        !fence.signaling_enabled(),
        "zero-timeout checks arm nothing"
    );

    // The native fd: the sync_file itself (a dup), no eventfd.
    let poll_fd = fence.poll_fd().unwrap();
    assert!(!poll_fd.is_readable().unwrap());
    assert!(!fence.signaling_enabled(), "a native poll fd arms nothing");
    assert_eq!(stats().since(&before).eventfds_created, 0);

    // A bounded wait that times out: the core polls the native fd, still nothing armed.
    assert_eq!(
        fence.wait_timeout(Some(Duration::from_millis(100))),
        Err(WaitError::TimedOut)
    );
    assert_eq!(stats().since(&before).eventfds_created, 0);

    // A callback and a blocked waiter on another thread, both woken by the kernel's signal
    // with nobody polling.
    let (tx, rx) = mpsc::channel();
    fence
        .add_callback(move |info| {
            let _ = tx.send(*info);
        })
        .unwrap();
    assert!(fence.signaling_enabled(), "a callback arms the reactor");
    let waiter = {
        let fence = fence.clone();
        std::thread::spawn(move || fence.wait_timeout(Some(SIGNAL_TIMEOUT)))
    };
    std::thread::sleep(Duration::from_millis(50));
    let before_signal = Ktime::now();
    vgem.signal(vf);
    let info = rx
        .recv_timeout(SIGNAL_TIMEOUT)
        .expect("the callback runs without anyone polling");
    assert_eq!(info.status(), FenceStatus::Signaled);
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(fence.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
    assert_eq!(fence.status(), FenceStatus::Signaled);
    let ts = fence.timestamp().unwrap();
    assert_eq!(ts, info.timestamp);
    assert!(
        ts >= before_signal,
        "the kernel's timestamp: {ts:?} < {before_signal:?}"
    );
    assert!(
        poll_fd.is_readable().unwrap(),
        "the native fd stays readable"
    );
    assert_eq!(
        stats().since(&before).eventfds_created,
        0,
        "no eventfd at any point"
    );
    vgem.destroy_bo(bo);
}

#[test]
fn readiness_fences_export_path_and_wait_any() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let a = vgem.create_bo();
    let b = vgem.create_bo();
    let buf_a = DmaBuf::new(a.dmabuf.as_fd());
    let buf_b = DmaBuf::new(b.dmabuf.as_fd());
    let fa = vgem.attach(&a, false);
    let fb = vgem.attach(&b, true);

    let a_read = buf_a.readiness(Access::Read).unwrap();
    assert!(
        a_read.is_signaled(),
        "a reader never waits for a read fence"
    );
    let a_write = buf_a.readiness(Access::Write).unwrap();
    let b_read = buf_b.readiness(Access::Read).unwrap();
    assert_eq!(a_write.driver_name(), "vgem");
    assert!(!a_write.is_signaled() && !b_read.is_signaled());

    let fences = [a_write.clone(), b_read.clone()];
    assert!(wait_any_timeout(&fences, Some(Duration::from_millis(50))).is_err());
    vgem.signal(fb);
    assert_eq!(wait_any_timeout(&fences, Some(SIGNAL_TIMEOUT)), Ok(1));
    assert!(!a_write.is_signaled());
    vgem.signal(fa);
    assert_eq!(a_write.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
    // A readiness taken now, on an idle buffer, is signalled at once.
    assert!(buf_a.readiness(Access::Write).unwrap().is_signaled());
    vgem.destroy_bo(a);
    vgem.destroy_bo(b);
}

#[test]
fn poll_fallback_read_and_write() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());

    // Read readiness by POLLIN: blocked by a writer only.
    let writer = vgem.attach(&bo, true);
    let read = buf
        .poll_readiness(Access::Read)
        .expect("dma-buf poll fallback");
    assert_eq!(read.driver_name(), "dma-buf");
    assert!(!read.is_signaled());
    assert_eq!(
        read.wait_timeout(Some(Duration::from_millis(100))),
        Err(WaitError::TimedOut)
    );
    let (tx, rx) = mpsc::channel();
    read.add_callback(move |_| {
        let _ = tx.send(());
    })
    .unwrap();
    vgem.signal(writer);
    rx.recv_timeout(SIGNAL_TIMEOUT)
        .expect("reactor signals the POLLIN fallback fence");
    assert_eq!(read.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));

    // Write readiness by POLLOUT: blocked by a reader too.
    let reader = vgem.attach(&bo, false);
    assert!(buf.poll_readiness(Access::Read).unwrap().is_signaled());
    let write = buf.poll_readiness(Access::Write).unwrap();
    assert!(!write.is_signaled());
    let waiter = {
        let write = write.clone();
        std::thread::spawn(move || write.wait_timeout(Some(SIGNAL_TIMEOUT)))
    };
    std::thread::sleep(Duration::from_millis(50));
    vgem.signal(reader);
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(write.status(), FenceStatus::Signaled);

    // Not a snapshot: fences added before the first check are waited for too.
    let late = buf.poll_readiness(Access::Write).unwrap();
    let reader = vgem.attach(&bo, false);
    assert!(
        !late.is_signaled(),
        "the poll fallback sees fences added after its creation"
    );
    vgem.signal(reader);
    assert_eq!(late.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
    vgem.destroy_bo(bo);
}

// ---- errors and leaks ---------------------------------------------------------------------------

/// Needs no device: the sync_file and dma-buf ioctls fail cleanly on fds that are not theirs.
#[test]
fn invalid_fds_are_errors() {
    let _serial = serial();
    let dev_null = || OwnedFd::from(File::open("/dev/null").unwrap());
    // ioctl() on an O_PATH fd: EBADF; poll(): POLLNVAL, reported as EBADF.
    let o_path = || {
        rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap()
    };
    let bad = SyncFile::from_fd(o_path());
    assert_eq!(errno(&bad.info().unwrap_err()), Some(Errno::BADF));
    assert_eq!(errno(&bad.status().unwrap_err()), Some(Errno::BADF));
    assert_eq!(errno(&bad.is_signaled().unwrap_err()), Some(Errno::BADF));
    assert_eq!(
        errno(
            &DmaBuf::new(o_path())
                .export_sync_file(Access::Read)
                .unwrap_err()
        ),
        Some(Errno::BADF)
    );

    let not_sync_file = SyncFile::from_fd(dev_null());
    let err = not_sync_file.info().unwrap_err();
    assert!(
        matches!(errno(&err), Some(Errno::NOTTY) | Some(Errno::INVAL)),
        "SYNC_IOC_FILE_INFO on /dev/null: {err}"
    );
    let err = SyncFile::merge(&not_sync_file, &not_sync_file, "x").unwrap_err();
    assert!(
        matches!(errno(&err), Some(Errno::NOTTY) | Some(Errno::INVAL)),
        "{err}"
    );
    let err = not_sync_file.set_deadline(Ktime::now()).unwrap_err();
    assert_ne!(
        err.kind(),
        io::ErrorKind::Unsupported,
        "not a sync_file is not 'unsupported'"
    );

    let not_dmabuf = DmaBuf::new(dev_null());
    for access in [Access::Read, Access::Write] {
        assert_eq!(
            errno(&not_dmabuf.export_sync_file(access).unwrap_err()),
            Some(Errno::NOTTY)
        );
        // Not mistaken for "old kernel": the fallback checks for a real dma-buf.
        assert_eq!(
            errno(&not_dmabuf.readiness(access).unwrap_err()),
            Some(Errno::NOTTY)
        );
        assert_eq!(
            errno(&not_dmabuf.poll_readiness(access).unwrap_err()),
            Some(Errno::NOTTY)
        );
    }
}

#[test]
fn import_or_merge_of_a_non_sync_file_fails() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let buf = DmaBuf::new(bo.dmabuf.as_fd());
    let not_sync_file = SyncFile::from_fd(OwnedFd::from(File::open("/dev/null").unwrap()));
    assert_eq!(
        errno(
            &buf.import_sync_file(&not_sync_file, Access::Write)
                .unwrap_err()
        ),
        Some(Errno::INVAL)
    );
    let real = buf.export_sync_file(Access::Write).unwrap();
    let err = SyncFile::merge(&real, &not_sync_file, "x").unwrap_err();
    assert_eq!(errno(&err), Some(Errno::NOENT), "{err}");
    // A dma-buf is not a sync_file either.
    let as_sync_file = SyncFile::from_fd(rustix::io::fcntl_dupfd_cloexec(&bo.dmabuf, 0).unwrap());
    let err = as_sync_file.info().unwrap_err();
    assert!(
        matches!(errno(&err), Some(Errno::NOTTY) | Some(Errno::INVAL)),
        "{err}"
    );
    vgem.destroy_bo(bo);
}

#[test]
fn no_fd_leak_over_10000_export_merge_wait_cycles() {
    let _serial = serial();
    let Some(vgem) = Vgem::open() else { return };
    let idle = vgem.create_bo();
    let busy = vgem.create_bo();
    let idle_buf = DmaBuf::new(idle.dmabuf.as_fd());
    let busy_buf = DmaBuf::new(busy.dmabuf.as_fd());

    let pending_cycle = || {
        let vf = vgem.attach(&busy, true);
        let fence = busy_buf.readiness(Access::Read).unwrap();
        let fallback = busy_buf.poll_readiness(Access::Write).unwrap();
        let (tx, rx) = mpsc::channel();
        fence
            .add_callback(move |_| {
                let _ = tx.send(());
            })
            .unwrap();
        fallback.enable_signaling();
        vgem.signal(vf);
        rx.recv_timeout(SIGNAL_TIMEOUT).unwrap();
        assert_eq!(fallback.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
    };
    let idle_cycle = || {
        let a = idle_buf.export_sync_file(Access::Write).unwrap();
        let b = idle_buf.export_sync_file(Access::Read).unwrap();
        let merged = SyncFile::merge(&a, &b, "leak").unwrap();
        assert!(merged.wait_timeout(Some(SIGNAL_TIMEOUT)).unwrap());
        assert_eq!(merged.info().unwrap().status, FenceStatus::Signaled);
        let fence = merged.into_fence();
        assert_eq!(fence.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
        let ready = idle_buf.readiness(Access::Write).unwrap();
        assert!(ready.poll_fd().unwrap().is_readable().unwrap());
    };
    // Warm up: the reactor's epoll fd exists for the life of the process once started.
    pending_cycle();
    idle_cycle();

    let before = open_fd_count();
    for _ in 0..10_000 {
        idle_cycle();
    }
    for _ in 0..200 {
        pending_cycle();
    }
    // The reactor drops its fd references on its own thread, right after signalling.
    let mut after = open_fd_count();
    for _ in 0..50 {
        if after == before {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        after = open_fd_count();
    }
    assert_eq!(after, before, "fds open before and after 10,200 cycles");
    vgem.destroy_bo(idle);
    vgem.destroy_bo(busy);
}
