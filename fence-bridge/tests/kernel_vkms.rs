//! Kernel tests on vkms, the virtual KMS driver: what virtio-gpu cannot show. Run in the guest by
//! `cargo xtask vm-test`, which builds vkms out of tree for the guest kernel (Debian does not
//! ship it) and loads it with `enable_overlay=1`.
//!
//! vkms is built on the GEM atomic helpers: its `prepare_fb` (`vkms_prepare_fb()`,
//! `drivers/gpu/drm/vkms/vkms_plane.c`) calls `drm_gem_plane_helper_prepare_fb()`, so a flip
//! waits for the **implicit fences** of its framebuffer's dma-buf — virtio-gpu in Linux 6.12
//! does not (`kernel_kms::implicit_fences_on_the_framebuffer`). And it has overlay planes.
//!
//! The framebuffers under test are **vgem** buffers imported into vkms through PRIME: the
//! imported GEM object shares the dma-buf's reservation object, so a `VGEM_FENCE_ATTACH` write
//! fence on the vgem BO is an implicit fence vkms sees — a producer on one device, the display on
//! another, as with a GPU and a display controller. A vgem fence signals itself after ~10 s:
//! every wait here is well below that (`HELD` + `GENEROUS` < 10 s), so a flip that completes
//! was released by `VGEM_FENCE_SIGNAL` (or by nothing), never by vgem's timeout.
//!
//! The tests share one display ([`Kms::setup_on`] holds the binary's lock), each with its own
//! modeset; under TCG everything is slow: few flips, generous timeouts.

mod support;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::{framebuffer, property, Device as _};
use fence_bridge::{Access, DmaBuf, FenceStatus, FencedCommit, OutFence};
use support::kms::{prop, Kms, FLIP, PLANE_TYPE_CURSOR, PLANE_TYPE_OVERLAY, PLANE_TYPE_PRIMARY};
use support::readable;
use support::vgem::{Bo, PendingFence, Vgem, VgemFence};

/// TCG is slow: how long anything that should happen "now" may take.
const GENEROUS: Duration = Duration::from_secs(5);
/// How long a held flip must stay held.
const HELD: Duration = Duration::from_millis(300);
/// vgem's own fence timeout is ~10 s: a flip completing later than this after the fence was
/// attached may have been released by that timeout, not by the test.
const BEFORE_VGEM_TIMEOUT: Duration = Duration::from_secs(9);
const EBUSY: i32 = 16;
/// vkms' `NUM_OVERLAY_PLANES` (`drivers/gpu/drm/vkms/vkms_drv.h`), with `enable_overlay=1`.
const VKMS_OVERLAY_PLANES: usize = 8;

fn vkms() -> Option<Kms> {
    Kms::setup_on("vkms")
}

/// A full-screen vgem BO and the vkms framebuffer made of it (PRIME import).
fn vgem_framebuffer(kms: &Kms, vgem: &Vgem) -> (framebuffer::Handle, Bo) {
    let (w, h) = kms.mode.size();
    let (w, h) = (u32::from(w), u32::from(h));
    let bo = vgem.create_bo_sized(w, h);
    let pitch = bo.buffer.as_ref().expect("a dumb buffer").pitch();
    let fb = kms.import_framebuffer(bo.dmabuf.as_fd(), (w, h), pitch);
    (fb, bo)
}

/// A vgem write fence attached to a BO the test holds (`VGEM_FENCE_ATTACH`), signalled on drop
/// if the test did not signal it (a failing test must not leave a flip waiting for vgem's
/// timeout).
struct Writer<'v> {
    vgem: &'v Vgem,
    fence: Option<VgemFence>,
}

impl<'v> Writer<'v> {
    fn attach(vgem: &'v Vgem, bo: &Bo) -> Self {
        let fence = vgem.attach(bo, true);
        Writer {
            vgem,
            fence: Some(fence),
        }
    }

    fn signal(&mut self) {
        let fence = self.fence.take().expect("signalled once");
        self.vgem.signal(fence);
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if let Some(fence) = self.fence.take() {
            let _ = self.vgem.try_signal(fence);
        }
    }
}

fn user_data(events: &[fence_bridge::FlipEvent]) -> Vec<u64> {
    events.iter().map(|e| e.user_data).collect()
}

/// (a) vkms honours implicit fences: a flip (no `IN_FENCE_FD`) to a framebuffer whose dma-buf
/// carries a pending vgem write fence is held — no flip event, its `OUT_FENCE_PTR` fence pending,
/// the CRTC busy — until the vgem fence is signalled; then it completes.
#[test]
fn flip_waits_for_the_framebuffers_implicit_fence() {
    let Some(kms) = vkms() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let (fb, bo) = vgem_framebuffer(&kms, &vgem);
    let dmabuf = DmaBuf::new(bo.dmabuf.as_fd());
    assert!(
        dmabuf.is_idle(Access::Write).unwrap(),
        "a fresh vgem BO has no fences"
    );

    let mut writer = Writer::attach(&vgem, &bo);
    let attached = Instant::now();
    assert!(
        !dmabuf.is_idle(Access::Read).unwrap(),
        "the framebuffer's dma-buf has a pending writer"
    );

    let mut out = OutFence::new();
    let mut c = kms.flip_to(fb);
    // IN_FENCE_FD = -1: no explicit fence, implicit sync decides.
    c.clear_in_fence(kms.plane).unwrap();
    c.set_out_fence(kms.crtc, &mut out).unwrap();
    c.commit(FLIP, 0xa1)
        .expect("non-blocking flip to the vgem framebuffer");
    let release = out
        .take_sync_file()
        .expect("OUT_FENCE_PTR filled by a successful commit");

    assert!(
        !readable(kms.card.as_fd(), HELD),
        "vkms completed the flip while the framebuffer's implicit write fence was pending"
    );
    let info = release.info().expect("SYNC_IOC_FILE_INFO");
    assert_eq!(
        info.status,
        FenceStatus::Pending,
        "out-fence of the held flip: {info:?}"
    );
    assert_eq!(
        info.fences[0].driver_name, "vkms",
        "the CRTC's fence: {info:?}"
    );
    // Held in the kernel, not just a late event: the CRTC still has the commit pending.
    let busy = kms.flip_request(0).commit(FLIP, 0xa2).unwrap_err();
    assert_eq!(
        busy.raw_os_error(),
        Some(EBUSY),
        "a second non-blocking commit while the first waits: {busy}"
    );

    let signalled = Instant::now();
    writer.signal();
    let events = kms.wait_flip(GENEROUS);
    let latency = signalled.elapsed();
    assert_eq!(
        user_data(&events),
        [0xa1],
        "the held flip completes once the vgem fence is signalled: {events:?}"
    );
    assert!(
        release.is_signaled().unwrap(),
        "out-fence signalled with the flip"
    );
    assert!(
        attached.elapsed() < BEFORE_VGEM_TIMEOUT,
        "released before vgem's own fence timeout could have done it"
    );
    eprintln!(
        "vkms: flip held by the implicit fence, completed {latency:?} after VGEM_FENCE_SIGNAL"
    );
}

/// (b) An already-signalled `IN_FENCE_FD` switches the implicit wait off: the same kind of
/// framebuffer with the same kind of pending vgem write fence flips promptly, and the implicit
/// fence is still pending when the flip event arrives.
///
/// The kernel (6.12.95, as built for the guest): `IN_FENCE_FD` sets the plane state's `fence`
/// while the request is parsed (`drm_atomic_plane_set_property()`, `drm_atomic_uapi.c`:
/// `state->fence = sync_file_get_fence(val)`); then `drm_gem_plane_helper_prepare_fb()`
/// (`drm_gem_atomic_helper.c`), called by `vkms_prepare_fb()`, picks the reservation fences to
/// add to it with `usage = fence ? DMA_RESV_USAGE_KERNEL : DMA_RESV_USAGE_WRITE;` — "Only add
/// the kernel fences here if there is already a fence set via explicit fencing interfaces on the
/// atomic ioctl. This way explicit fencing can be used to overrule implicit fencing". A vgem
/// write fence is `DMA_RESV_USAGE_WRITE`, so only the explicit fence is waited for
/// (`drm_atomic_helper_wait_for_fences()`).
#[test]
fn signalled_in_fence_overrides_the_implicit_fence() {
    let Some(kms) = vkms() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let (fb, bo) = vgem_framebuffer(&kms, &vgem);
    let mut done = PendingFence::new(&vgem);
    done.signal();
    assert!(
        readable(done.sync_file.as_fd(), GENEROUS),
        "the explicit in-fence is signalled"
    );

    let mut writer = Writer::attach(&vgem, &bo);
    let attached = Instant::now();
    // A snapshot of the framebuffer's pending writer, to check it later.
    let implicit = DmaBuf::new(bo.dmabuf.as_fd())
        .export_sync_file(Access::Read)
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    assert!(
        !implicit.is_signaled().unwrap(),
        "the framebuffer has a pending write fence"
    );

    let mut out = OutFence::new();
    let mut c = kms.flip_to(fb);
    c.set_in_fence(kms.plane, done.sync_file.as_fd()).unwrap();
    c.set_out_fence(kms.crtc, &mut out).unwrap();
    let committed = Instant::now();
    c.commit(FLIP, 0xb1)
        .expect("flip with an already-signalled IN_FENCE_FD");
    let release = out.take_sync_file().expect("OUT_FENCE_PTR filled");
    let events = kms.wait_flip(GENEROUS);
    let latency = committed.elapsed();
    assert_eq!(
        user_data(&events),
        [0xb1],
        "the flip with a signalled IN_FENCE_FD did not complete (waiting for the implicit \
         fence?): {events:?}"
    );
    assert!(
        release.is_signaled().unwrap(),
        "out-fence signalled with the flip"
    );
    assert!(
        !implicit.is_signaled().unwrap(),
        "the implicit write fence is still pending: the flip did not wait for it"
    );
    assert!(attached.elapsed() < BEFORE_VGEM_TIMEOUT);

    writer.signal();
    assert!(
        readable(implicit.as_fd(), GENEROUS),
        "the vgem fence signals when told"
    );
    eprintln!(
        "vkms: flip with a signalled IN_FENCE_FD over a pending implicit fence completed in \
         {latency:?}"
    );
}

/// (c) vkms has overlay planes (8 with `enable_overlay=1`, besides one primary and one cursor
/// plane), each with `IN_FENCE_FD`, and an overlay's in-fence holds the commit until it signals.
#[test]
fn overlay_planes_take_in_fences() {
    let Some(kms) = vkms() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let planes = kms.planes_with_type();
    let of_type = |ty: u64| -> Vec<_> {
        planes
            .iter()
            .filter(|(_, t)| *t == ty)
            .map(|(p, _)| *p)
            .collect()
    };
    let overlays = of_type(PLANE_TYPE_OVERLAY);
    assert_eq!(
        overlays.len(),
        VKMS_OVERLAY_PLANES,
        "overlay planes of the CRTC: {planes:?}"
    );
    assert_eq!(of_type(PLANE_TYPE_PRIMARY), [kms.plane], "{planes:?}");
    assert_eq!(of_type(PLANE_TYPE_CURSOR).len(), 1, "{planes:?}");
    for &p in &overlays {
        let in_prop = kms
            .props
            .in_fence_fd(&kms.card, p)
            .unwrap_or_else(|e| panic!("IN_FENCE_FD on overlay {p:?}: {e}"));
        let info = kms.card.get_property(in_prop).unwrap();
        assert!(
            matches!(info.value_type(), property::ValueType::SignedRange(-1, max) if max == i64::from(i32::MAX)),
            "IN_FENCE_FD on an overlay is a signed range -1..=INT_MAX"
        );
    }

    // Switch the first overlay on (64x64 at 16,16) with a pending in-fence: held; then signalled.
    let overlay = overlays[0];
    let size = 64u32;
    let db = kms
        .card
        .create_dumb_buffer((size, size), DrmFourcc::Xrgb8888, 32)
        .expect("vkms CREATE_DUMB");
    let fb = kms.card.add_framebuffer(&db, 24, 32).expect("ADDFB");
    let mut acquire = PendingFence::new(&vgem);
    let mut out = OutFence::new();
    let mut c = FencedCommit::new(&kms.card, &kms.props);
    c.add_property(
        overlay,
        prop(&kms.card, overlay, c"FB_ID"),
        property::Value::Framebuffer(Some(fb)),
    )
    .unwrap();
    c.add_property(
        overlay,
        prop(&kms.card, overlay, c"CRTC_ID"),
        property::Value::CRTC(Some(kms.crtc)),
    )
    .unwrap();
    for (name, v) in [
        (c"SRC_X", 0u64),
        (c"SRC_Y", 0),
        (c"SRC_W", u64::from(size) << 16),
        (c"SRC_H", u64::from(size) << 16),
        (c"CRTC_X", 16),
        (c"CRTC_Y", 16),
        (c"CRTC_W", u64::from(size)),
        (c"CRTC_H", u64::from(size)),
    ] {
        c.add_property(
            overlay,
            prop(&kms.card, overlay, name),
            property::Value::UnsignedRange(v),
        )
        .unwrap();
    }
    c.set_in_fence(overlay, acquire.sync_file.as_fd()).unwrap();
    c.set_out_fence(kms.crtc, &mut out).unwrap();
    c.commit(FLIP, 0xc1)
        .expect("overlay on, with a pending IN_FENCE_FD");
    let release = out.take_sync_file().expect("OUT_FENCE_PTR filled");
    assert!(
        !readable(kms.card.as_fd(), HELD),
        "the overlay commit completed while its in-fence was pending"
    );
    assert!(!release.is_signaled().unwrap());
    acquire.signal();
    let events = kms.wait_flip(GENEROUS);
    assert_eq!(user_data(&events), [0xc1], "{events:?}");
    assert!(release.is_signaled().unwrap());
}
