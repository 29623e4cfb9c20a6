//! Kernel tests: KMS explicit fencing (`IN_FENCE_FD`, `OUT_FENCE_PTR`) on virtio-gpu's card node,
//! with vgem fences as controllable in-fences. Run in the guest by `cargo xtask vm-test`.
//!
//! The tests share one display, so they run one at a time (`support::kms::Kms::setup` holds the
//! lock); each opens the card node (becoming DRM master: root, only client), does its own modeset
//! with two dumb-buffer framebuffers and closes it again. Under TCG everything is slow: few
//! flips, generous timeouts.
//!
//! In-fences that stay pending until the test says so are vgem write fences
//! (`support::vgem::PendingFence`), exported from the vgem BO's dma-buf as sync_files
//! (`DmaBuf::export_sync_file`).

mod support;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use drm::control::atomic::AtomicModeReq;
use drm::control::{property, AtomicCommitFlags, Device as _};
use fence_bridge::{Access, DmaBuf, FenceStatus, FencedCommit, Ktime, OutFence};
use support::kms::{Kms, FLIP};
use support::readable;
use support::vgem::{open_fd_count, PendingFence, Vgem};

/// TCG is slow: how long anything that should happen "now" may take.
const GENEROUS: Duration = Duration::from_secs(5);
/// How long a held flip must stay held (a vgem fence signals itself after ~10 s).
const HELD: Duration = Duration::from_millis(200);

fn errno(err: &io::Error) -> Option<i32> {
    err.raw_os_error()
}
const EINVAL: i32 = 22;
const EFAULT: i32 = 14;

#[test]
fn fence_properties_resolve_on_virtio_gpu() {
    let Some(kms) = Kms::setup() else { return };
    let in_prop = kms
        .props
        .in_fence_fd(&kms.card, kms.plane)
        .expect("IN_FENCE_FD");
    let out_prop = kms
        .props
        .out_fence_ptr(&kms.card, kms.crtc)
        .expect("OUT_FENCE_PTR");
    let in_info = kms.card.get_property(in_prop).unwrap();
    let out_info = kms.card.get_property(out_prop).unwrap();
    assert_eq!(in_info.name(), fence_bridge::IN_FENCE_FD);
    assert_eq!(out_info.name(), fence_bridge::OUT_FENCE_PTR);
    assert!(
        matches!(in_info.value_type(), property::ValueType::SignedRange(-1, max) if max == i64::from(i32::MAX)),
        "IN_FENCE_FD is a signed range -1..=INT_MAX"
    );
    assert!(matches!(
        out_info.value_type(),
        property::ValueType::UnsignedRange(0, u64::MAX)
    ));
    // Cached: the same id, no second lookup needed.
    assert_eq!(
        kms.props.in_fence_fd(&kms.card, kms.plane).unwrap(),
        in_prop
    );
    let (w, h) = kms.mode.size();
    assert_eq!(
        (w, h),
        (640, 480),
        "QEMU runs virtio-gpu-pci with xres=640,yres=480"
    );

    // The fence properties cannot be set through add_property (no raw addresses / fd numbers).
    let mut c = FencedCommit::new(&kms.card, &kms.props);
    let err = c
        .add_property(kms.crtc, out_prop, property::Value::UnsignedRange(8))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = c
        .add_property(kms.plane, in_prop, property::Value::SignedRange(-1))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// (a) A pending in-fence holds a non-blocking flip: neither its event nor its out-fence within
/// 200 ms; both right after the fence is signalled.
#[test]
fn pending_in_fence_holds_the_flip() {
    let Some(kms) = Kms::setup() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let mut acquire = PendingFence::new(&vgem);
    assert!(
        !readable(acquire.sync_file.as_fd(), Duration::ZERO),
        "a fresh vgem fence is pending"
    );

    let mut out = OutFence::new();
    let mut c = kms.flip_request(1);
    c.set_in_fence(kms.plane, acquire.sync_file.as_fd())
        .unwrap();
    c.set_out_fence(kms.crtc, &mut out).unwrap();
    c.commit(FLIP, 0xa)
        .expect("non-blocking flip with a pending IN_FENCE_FD");
    let release = out
        .take()
        .expect("OUT_FENCE_PTR filled by a successful commit");

    // Held: nothing within 200 ms (the drm crate's event reader, non-blocking poll first).
    assert!(
        !readable(kms.card.as_fd(), HELD),
        "flip event arrived while the in-fence was pending"
    );
    assert!(
        !readable(release.as_fd(), Duration::ZERO),
        "out-fence signalled while held"
    );
    // A second non-blocking commit on the CRTC is refused while this one is pending.
    let busy = kms.flip_request(0).commit(FLIP, 0xb).unwrap_err();
    assert_eq!(
        errno(&busy),
        Some(16),
        "EBUSY while the previous commit waits: {busy}"
    );

    let signalled_at = Instant::now();
    acquire.signal();
    assert!(
        readable(kms.card.as_fd(), GENEROUS),
        "no flip event after the signal"
    );
    let events: Vec<_> = kms.card.receive_events().expect("receive_events").collect();
    let flip_latency = signalled_at.elapsed();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, drm::control::Event::PageFlip(f) if f.crtc == kms.crtc)),
        "a page-flip event for the CRTC"
    );
    assert!(
        readable(release.as_fd(), GENEROUS),
        "out-fence not signalled after the flip"
    );
    eprintln!("kms: held flip completed {flip_latency:?} after VGEM_FENCE_SIGNAL");
}

/// (b) Flip N's out-fence signals when flip N's frame starts scanning out: already signalled
/// when its event is read, with the event's timestamp; user_data comes back intact.
#[test]
fn out_fence_signals_with_the_flip_event() {
    let Some(kms) = Kms::setup() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let mut previous_ts = Ktime::from_nanos(0);
    for n in 0..3u64 {
        let mut acquire = PendingFence::new(&vgem);
        let mut out = OutFence::new();
        let user_data = 0xfe00_0000_0000_0000 | n;
        let mut c = kms.flip_request((n as usize + 1) % 2);
        c.set_in_fence(kms.plane, acquire.sync_file.as_fd())
            .unwrap();
        c.set_out_fence(kms.crtc, &mut out).unwrap();
        c.commit(FLIP, user_data).expect("flip");
        let release = out.take_sync_file().expect("out-fence");
        // The same out-fence as a fence-bridge Fence (a second fd for it).
        let release_fence = release.try_clone().expect("dup").into_fence();

        // Still pending: the frame is not on screen yet.
        let info = release.info().expect("SYNC_IOC_FILE_INFO");
        assert_eq!(info.fences.len(), 1, "{info:?}");
        assert_eq!(
            info.status,
            FenceStatus::Pending,
            "out-fence of a held flip is pending"
        );
        assert!(!release_fence.is_signaled());
        assert_eq!(info.fences[0].driver_name, "virtio_gpu");
        assert!(
            info.fences[0].timeline_name.starts_with("CRTC:"),
            "{info:?}"
        );

        let before_signal = Ktime::now();
        acquire.signal();
        let events = kms.wait_flip(GENEROUS);
        let after_event = Ktime::now();
        assert_eq!(events.len(), 1, "one flip event for flip {n}: {events:?}");
        let ev = events[0];
        assert_eq!(ev.user_data, user_data, "user_data intact");
        assert_eq!(ev.crtc, Some(kms.crtc));
        // The kernel signals the out-fence, then queues the event: signalled by now.
        assert!(
            release.is_signaled().unwrap(),
            "out-fence of flip {n} signalled"
        );
        let info = release.info().unwrap();
        assert_eq!(info.status, FenceStatus::Signaled);
        let fence_ts = info.timestamp().expect("signal timestamp").as_nanos();
        let event_ts = ev.timestamp.as_nanos();
        // Same instant (one `now` for both); the event is truncated to microseconds.
        assert!(
            (0..1_000).contains(&(fence_ts - event_ts)),
            "fence ts {fence_ts} vs event ts {event_ts}"
        );
        assert!(
            before_signal.as_nanos() <= fence_ts && fence_ts <= after_event.as_nanos(),
            "fence signalled between the vgem signal and reading the event"
        );
        // The Fence carries the kernel's timestamp too.
        assert!(release_fence.is_signaled());
        assert_eq!(
            release_fence.timestamp().map(Ktime::as_nanos),
            Some(fence_ts)
        );
        assert!(event_ts > previous_ts.as_nanos(), "flips complete in order");
        previous_ts = ev.timestamp;
    }
}

/// (c) Invalid fence parameters, as IGT kms_atomic checks them, and TEST_ONLY.
#[test]
fn invalid_fence_params() {
    let Some(kms) = Kms::setup() else { return };
    let in_prop = kms.props.in_fence_fd(&kms.card, kms.plane).unwrap();
    let out_prop = kms.props.out_fence_ptr(&kms.card, kms.crtc).unwrap();
    let fds_before = open_fd_count();

    // IN_FENCE_FD that is not a sync_file (the DRM fd itself): EINVAL, also with TEST_ONLY; the
    // out-fence slot of the failed commit stays empty.
    for flags in [AtomicCommitFlags::empty(), AtomicCommitFlags::TEST_ONLY] {
        let mut out = OutFence::new();
        let mut c = kms.flip_request(1);
        c.set_in_fence(kms.plane, kms.card.as_fd()).unwrap();
        c.set_out_fence(kms.crtc, &mut out).unwrap();
        let err = c.commit(flags, 0).unwrap_err();
        assert_eq!(errno(&err), Some(EINVAL), "{flags:?}: {err}");
        assert!(out.take().is_none(), "no out-fence from a failed commit");
    }
    // IN_FENCE_FD naming no open fd: EINVAL (drm crate request, raw value).
    let mut req = AtomicModeReq::new();
    req.add_property(kms.plane, in_prop, property::Value::SignedRange(1 << 20));
    let err = kms
        .card
        .atomic_commit(AtomicCommitFlags::TEST_ONLY, req)
        .unwrap_err();
    assert_eq!(errno(&err), Some(EINVAL), "{err}");

    // OUT_FENCE_PTR to an invalid pointer: EFAULT — a low address and read-only memory.
    static READ_ONLY: i32 = 7;
    for ptr in [8u64, &READ_ONLY as *const i32 as u64] {
        for flags in [AtomicCommitFlags::empty(), AtomicCommitFlags::TEST_ONLY] {
            let mut req = AtomicModeReq::new();
            req.add_raw_property(kms.crtc.into(), out_prop, ptr);
            let err = kms.card.atomic_commit(flags, req).unwrap_err();
            assert_eq!(
                errno(&err),
                Some(EFAULT),
                "OUT_FENCE_PTR={ptr:#x} {flags:?}: {err}"
            );
        }
    }
    assert_eq!(READ_ONLY, 7);

    // OUT_FENCE_PTR with TEST_ONLY is accepted: the kernel writes -1 and creates no fence.
    let mut raw_slot: i32 = 12345;
    let mut req = AtomicModeReq::new();
    req.add_raw_property(kms.crtc.into(), out_prop, &mut raw_slot as *mut i32 as u64);
    kms.card
        .atomic_commit(AtomicCommitFlags::TEST_ONLY, req)
        .expect("OUT_FENCE_PTR with TEST_ONLY is accepted");
    // SAFETY-free read: the kernel wrote through the pointer during the (returned) ioctl.
    assert_eq!(
        unsafe { std::ptr::read_volatile(&raw_slot) },
        -1,
        "TEST_ONLY writes -1"
    );
    let mut out = OutFence::new();
    let mut c = kms.flip_request(1);
    c.set_out_fence(kms.crtc, &mut out).unwrap();
    c.commit(AtomicCommitFlags::TEST_ONLY, 0)
        .expect("TEST_ONLY with an out-fence");
    assert!(out.take().is_none(), "TEST_ONLY yields no out-fence");
    // OUT_FENCE_PTR = 0 means "none".
    let mut req = AtomicModeReq::new();
    req.add_raw_property(kms.crtc.into(), out_prop, 0);
    kms.card
        .atomic_commit(AtomicCommitFlags::TEST_ONLY, req)
        .expect("OUT_FENCE_PTR=0");
    // IN_FENCE_FD = -1 means none.
    let mut c = kms.flip_request(1);
    c.clear_in_fence(kms.plane).unwrap();
    c.commit(AtomicCommitFlags::TEST_ONLY, 0)
        .expect("IN_FENCE_FD=-1 with TEST_ONLY");
    // TEST_ONLY with PAGE_FLIP_EVENT: EINVAL.
    let err = kms
        .flip_request(1)
        .commit(
            AtomicCommitFlags::TEST_ONLY | AtomicCommitFlags::PAGE_FLIP_EVENT,
            0,
        )
        .unwrap_err();
    assert_eq!(errno(&err), Some(EINVAL), "{err}");

    assert_eq!(
        open_fd_count(),
        fds_before,
        "no fd leaked by failed / TEST_ONLY commits"
    );
    assert!(
        !readable(kms.card.as_fd(), Duration::ZERO),
        "no event from TEST_ONLY commits"
    );
}

/// (d) An already-signalled sync_file as IN_FENCE_FD flips at once.
#[test]
fn signalled_in_fence_flips_at_once() {
    let Some(kms) = Kms::setup() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let mut acquire = PendingFence::new(&vgem);
    acquire.signal();
    assert!(
        readable(acquire.sync_file.as_fd(), GENEROUS),
        "the vgem sync_file signalled"
    );

    let mut out = OutFence::new();
    let mut c = kms.flip_request(1);
    c.set_in_fence(kms.plane, acquire.sync_file.as_fd())
        .unwrap();
    c.set_out_fence(kms.crtc, &mut out).unwrap();
    let t0 = Instant::now();
    c.commit(FLIP, 7).expect("flip with a signalled in-fence");
    let release = out.take().expect("out-fence");
    let events = kms.wait_flip(GENEROUS);
    let latency = t0.elapsed();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].user_data, 7);
    assert!(readable(release.as_fd(), Duration::ZERO));
    // "At once": well inside the hold the pending case shows, even under TCG.
    assert!(
        latency < Duration::from_secs(2),
        "signalled in-fence flip took {latency:?}"
    );
    eprintln!("kms: flip with a signalled in-fence completed in {latency:?}");
}

/// (e) 100 flips with in- and out-fences leak no fd: every out-fence is taken and closed, each
/// becoming the next flip's (signalled) in-fence.
#[test]
fn no_fd_leak_over_100_fenced_flips() {
    let Some(kms) = Kms::setup() else { return };
    let mut slot = OutFence::new();
    let mut in_fence: Option<OwnedFd> = None;
    let mut count_at_start = None;
    for n in 0..101u64 {
        if n == 1 {
            // After one round-trip every lazily created fd (none expected) exists.
            count_at_start = Some(open_fd_count());
        }
        let mut c = kms.flip_request((n % 2) as usize);
        if let Some(fd) = &in_fence {
            c.set_in_fence(kms.plane, fd.as_fd()).unwrap();
        }
        c.set_out_fence(kms.crtc, &mut slot).unwrap();
        c.commit(FLIP, n)
            .unwrap_or_else(|e| panic!("flip {n}: {e}"));
        let release = slot.take().expect("out-fence");
        let events = kms.wait_flip(GENEROUS);
        assert_eq!(events.iter().map(|e| e.user_data).collect::<Vec<_>>(), [n]);
        assert!(readable(release.as_fd(), Duration::ZERO));
        // The previous in-fence is closed here, the new out-fence kept for the next flip.
        in_fence = Some(release);
    }
    drop(in_fence);
    let start = count_at_start.unwrap();
    assert_eq!(
        open_fd_count(),
        start - 1,
        "fds after 100 fenced flips (minus the last in-fence)"
    );
}

/// Implicit fences on the framebuffer's dma-buf (a pending vgem fence imported as a write
/// fence). (1) A flip with an already-signalled explicit in-fence is not held by them — the reason
/// compositors pass one. (2) Measured on virtio-gpu in Linux 6.12: a flip *without* an in-fence is
/// not held either — its `prepare_fb` does not call `drm_gem_plane_helper_prepare_fb()`, so this
/// driver ignores implicit fences on scanout buffers altogether (drivers using the GEM helpers,
/// e.g. vkms, would hold it). If a kernel update changes that, (2) fails and says so.
#[test]
fn implicit_fences_on_the_framebuffer() {
    let Some(kms) = Kms::setup() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let dmabuf = DmaBuf::new(
        kms.card
            .buffer_to_prime_fd(kms.bos[1], drm::CLOEXEC | drm::RDWR)
            .expect("PRIME export of the framebuffer BO"),
    );

    // 1. Explicit, signalled in-fence: not held by the pending implicit fence.
    let mut implicit = PendingFence::new(&vgem);
    dmabuf
        .import_sync_file(&implicit.sync_file, Access::Write)
        .expect("DMA_BUF_IOCTL_IMPORT_SYNC_FILE");
    assert!(
        !dmabuf.is_idle(Access::Read).unwrap(),
        "the framebuffer has a pending writer"
    );
    let mut done = PendingFence::new(&vgem);
    done.signal();
    let mut c = kms.flip_request(1);
    c.set_in_fence(kms.plane, done.sync_file.as_fd()).unwrap();
    c.commit(FLIP, 1).expect("flip with a signalled in-fence");
    let events = kms.wait_flip(GENEROUS);
    assert_eq!(events.iter().map(|e| e.user_data).collect::<Vec<_>>(), [1]);
    assert!(
        !implicit.sync_file.is_signaled().unwrap(),
        "flipped while the implicit fence was still pending"
    );
    implicit.signal();

    // 2. Back to fb 0, then fb 1 again with a pending implicit fence and no in-fence.
    kms.flip_request(0).commit(FLIP, 2).expect("flip to fb 0");
    assert_eq!(kms.wait_flip(GENEROUS).len(), 1);
    let mut implicit = PendingFence::new(&vgem);
    dmabuf
        .import_sync_file(&implicit.sync_file, Access::Write)
        .unwrap();
    let mut c = kms.flip_request(1);
    c.clear_in_fence(kms.plane).unwrap();
    c.commit(FLIP, 3).expect("flip without an in-fence");
    let held = !readable(kms.card.as_fd(), HELD);
    implicit.signal();
    assert_eq!(
        kms.wait_flip(GENEROUS)
            .iter()
            .map(|e| e.user_data)
            .collect::<Vec<_>>(),
        [3]
    );
    assert!(
        !held,
        "virtio-gpu now holds a flip for the framebuffer's implicit fences: update this test and \
         the docs of fence_bridge::kms (6.12 ignored them)"
    );
}
