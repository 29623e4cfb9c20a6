//! Kernel tests: EGL native fences from Smithay's GLES renderer as sync_files (feature `smithay`).
//!
//! Run for real in the guest by `cargo xtask vm-test -p fence-bridge --test kernel_egl` (the
//! xtask enables this target's required feature `smithay`); on a machine without virtio-gpu they
//! print SKIP and pass (the test of an empty `SyncPoint` needs no device and runs everywhere).
//!
//! The renderer is Smithay's `GlesRenderer` on an `EGLDisplay` of the GBM platform on virtio-gpu's
//! **card** node (GBM cannot allocate on the render node there: kms_swrast needs dumb buffers),
//! GLES 3.2 on llvmpipe, with `EGL_ANDROID_native_fence_sync` (Mesa 25.0.7, see vm-lab.md). Each
//! test renders into an offscreen `GlesRenderbuffer`, so no KMS and no DRM master are involved.
//!
//! Every test holds [`serial`]: they share the device, the process-wide fence-bridge counters and
//! the fd table.

// Deliberately no `#![cfg(feature = "smithay")]`: the target's `required-features` makes cargo
// build it only with the feature, and an empty binary would hide a missing feature.

mod support;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fence_bridge::{
    fence_from_sync_point, stats, Access, DmaBuf, EglFenceError, FenceStatus, SyncFile,
};
use smithay::backend::allocator::gbm::GbmDevice;
use smithay::backend::allocator::Fourcc;
use smithay::backend::egl::fence::EGLFence;
use smithay::backend::egl::{EGLContext, EGLDisplay};
use smithay::backend::renderer::gles::{GlesRenderbuffer, GlesRenderer};
use smithay::backend::renderer::sync::SyncPoint;
use smithay::backend::renderer::{Bind, Color32F, Frame, Offscreen, Renderer};
use smithay::utils::{Rectangle, Size, Transform};
use support::vgem::{open_fd_count, serial, Vgem};
use support::{find_node, require_device, Node};

/// Generous: llvmpipe under TCG is slow, and the first Mesa start over 9p takes seconds.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The offscreen target: big enough that llvmpipe has some work, small enough for TCG.
const SIZE: (i32, i32) = (256, 256);
/// What `EGL_ANDROID_native_fence_sync` is called in the display's extension list.
const NATIVE_FENCE_EXT: &str = "EGL_ANDROID_native_fence_sync";

/// A GLES renderer on the virtio-gpu card node and an offscreen renderbuffer to draw into.
struct Gl {
    renderer: GlesRenderer,
    target: GlesRenderbuffer,
    display: EGLDisplay,
}

impl Gl {
    /// `None` (after printing SKIP) without virtio-gpu; panics when EGL/GLES does not come up or
    /// lacks native fences (the guest has them: a failure there is a real failure).
    fn open() -> Option<Gl> {
        let node: Node = require_device("virtio_gpu card node (/dev/dri/card*)", || {
            find_node("card", "virtio_gpu")
        })?;
        let path = node.path.clone();
        let gbm = GbmDevice::new(node)
            .unwrap_or_else(|e| panic!("gbm_create_device on {}: {e}", path.display()));
        // SAFETY: `EGLDisplay::new` is unsafe because EGL returns the same display for the same
        // native display, so code outside Smithay calling `eglTerminate` on it would invalidate
        // Smithay's instance. Nothing else in this process creates EGL displays: this test only
        // uses Smithay's EGL, and the GBM device is owned by (moved into) the display.
        let display = unsafe { EGLDisplay::new(gbm) }
            .unwrap_or_else(|e| panic!("EGLDisplay on GBM ({}): {e}", path.display()));
        let extensions = display.extensions();
        assert!(
            extensions.iter().any(|e| e == NATIVE_FENCE_EXT),
            "the EGL display on {} lacks {NATIVE_FENCE_EXT} (vm-lab.md: Mesa 25.0.7 has it): {extensions:?}",
            path.display()
        );
        let context = EGLContext::new(&display).expect("EGLContext::new");
        // SAFETY: the context is fresh and made current only by this renderer, on this thread.
        let mut renderer = unsafe { GlesRenderer::new(context) }.expect("GlesRenderer::new");
        let target: GlesRenderbuffer = renderer
            .create_buffer(Fourcc::Abgr8888, Size::from(SIZE))
            .expect("offscreen renderbuffer");
        Some(Gl {
            renderer,
            target,
            display,
        })
    }

    /// Clears the target with `color` and returns the frame's SyncPoint (`Frame::finish`).
    fn frame(&mut self, color: [f32; 4]) -> SyncPoint {
        let size = Size::from(SIZE);
        let mut framebuffer = self.renderer.bind(&mut self.target).expect("bind");
        let mut frame = self
            .renderer
            .render(&mut framebuffer, size, Transform::Normal)
            .expect("render");
        let [r, g, b, a] = color;
        frame
            .clear(Color32F::new(r, g, b, a), &[Rectangle::from_size(size)])
            .expect("clear");
        // A few more draws, so the frame is not a single trivial clear.
        for i in 0..8 {
            let rect = Rectangle::new((i * 16, i * 16).into(), (128, 128).into());
            frame
                .draw_solid(rect, &[rect], Color32F::new(b, r, g, 1.0))
                .expect("draw_solid");
        }
        frame.finish().expect("finish")
    }
}

#[test]
fn frame_sync_point_exports_a_native_sync_file() {
    let _serial = serial();
    let Some(mut gl) = Gl::open() else { return };
    assert!(gl
        .display
        .extensions()
        .iter()
        .any(|e| e == NATIVE_FENCE_EXT));

    let sync_point = gl.frame([0.2, 0.4, 0.6, 1.0]);
    assert!(
        sync_point.contains_fence(),
        "GlesRenderer with GL_OES_EGL_sync returns a fence"
    );
    assert!(
        sync_point.is_exportable(),
        "a display with {NATIVE_FENCE_EXT} makes native fences"
    );
    let sync_file = SyncFile::from_sync_point(&sync_point).expect("SyncFile::from_sync_point");

    let started = Instant::now();
    assert!(
        sync_file.wait_timeout(Some(SIGNAL_TIMEOUT)).expect("poll"),
        "the frame's sync_file is not ready after {SIGNAL_TIMEOUT:?}"
    );
    let waited = started.elapsed();
    assert_eq!(
        sync_file.status().expect("FILE_INFO"),
        FenceStatus::Signaled
    );
    assert!(
        sync_point.is_reached(),
        "sync_file ready but the EGL fence is not"
    );

    let info = sync_file.info().expect("SYNC_IOC_FILE_INFO");
    assert!(!info.fences.is_empty(), "{info:?}");
    for fence in &info.fences {
        assert!(
            !fence.driver_name.is_empty(),
            "a fence with no driver: {info:?}"
        );
    }
    println!(
        "EGL native fence sync_file: name {:?}, drivers {:?}, timelines {:?}, ready after {waited:?}",
        info.name,
        info.fences.iter().map(|f| &f.driver_name).collect::<Vec<_>>(),
        info.fences.iter().map(|f| &f.timeline_name).collect::<Vec<_>>(),
    );
    assert!(
        info.timestamp().is_some(),
        "a signalled sync_file has a timestamp: {info:?}"
    );

    // Exporting twice gives two fds for the same fence; dropping the SyncPoint (and with it the
    // EGL sync object) leaves the sync_files valid.
    let again = SyncFile::from_sync_point(&sync_point).expect("second export");
    drop(sync_point);
    assert!(again.is_signaled().unwrap());
    assert_eq!(again.info().unwrap().fences.len(), info.fences.len());
}

#[test]
fn frame_fence_from_sync_point_is_a_sync_file_fence() {
    let _serial = serial();
    let Some(mut gl) = Gl::open() else { return };

    // Blocking wait.
    let fence = fence_from_sync_point(gl.frame([1.0, 0.0, 0.0, 1.0]));
    assert_ne!(
        fence.driver_name(),
        "smithay",
        "an exportable SyncPoint must become a sync_file fence, not a helper-thread fence"
    );
    assert_eq!(fence.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
    assert_eq!(fence.status(), FenceStatus::Signaled);
    assert!(fence.timestamp().is_some());
    println!(
        "frame fence: {}/{}",
        fence.driver_name(),
        fence.timeline_name()
    );

    // Poll fd.
    let fence = fence_from_sync_point(gl.frame([0.0, 1.0, 0.0, 1.0]));
    let poll_fd = fence.poll_fd().expect("poll_fd");
    assert!(poll_fd.wait_readable(Some(SIGNAL_TIMEOUT)).expect("poll"));
    assert!(fence.is_signaled());

    // Callback.
    let fence = fence_from_sync_point(gl.frame([0.0, 0.0, 1.0, 1.0]));
    let (tx, rx) = std::sync::mpsc::channel();
    match fence.add_callback(move |info| tx.send(info.status()).unwrap()) {
        Ok(_) => assert_eq!(
            rx.recv_timeout(SIGNAL_TIMEOUT).expect("callback"),
            FenceStatus::Signaled
        ),
        Err(_) => assert!(fence.is_signaled(), "add_callback refused a pending fence"),
    }
}

/// A *pending* EGL native fence. Mesa's llvmpipe (the only GL in the guest) hands out native
/// fences that are already signalled when exported, so the frame tests cannot see one pending.
/// Here a pending vgem fence goes through EGL for real — `eglCreateSyncKHR(
/// EGL_SYNC_NATIVE_FENCE_ANDROID, fd)` (Smithay's `EGLFence::import`) into a `SyncPoint`, then
/// `eglDupNativeFenceFDANDROID` (`SyncFile::from_sync_point`) — and must stay pending until
/// vgem signals it.
#[test]
fn pending_native_fence_polls_the_sync_file_itself() {
    let _serial = serial();
    let Some(gl) = Gl::open() else { return };
    let Some(vgem) = Vgem::open() else { return };
    let bo = vgem.create_bo();
    let vgem_fence = vgem.attach(&bo, true);
    let pending = DmaBuf::new(bo.dmabuf.as_fd())
        .export_sync_file(Access::Read)
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    assert!(!pending.is_signaled().unwrap());

    assert!(EGLFence::supports_importing(&gl.display));
    let egl_fence = EGLFence::import(&gl.display, pending.into()).expect("EGLFence::import");
    assert!(egl_fence.is_native());
    let sync_point = SyncPoint::from(egl_fence);
    assert!(sync_point.is_exportable());
    assert!(
        !sync_point.is_reached(),
        "EGL says the pending vgem fence is reached"
    );

    let sync_file = SyncFile::from_sync_point(&sync_point).expect("SyncFile::from_sync_point");
    let info = sync_file.info().unwrap();
    assert_eq!(info.status, FenceStatus::Pending, "{info:?}");
    assert_eq!(
        info.fences
            .iter()
            .map(|f| f.driver_name.as_str())
            .collect::<Vec<_>>(),
        ["vgem"],
        "EGL exported the fence it imported: {info:?}"
    );

    let before = stats();
    let fence = fence_from_sync_point(sync_point.clone());
    assert_eq!(fence.driver_name(), "vgem");
    assert!(!fence.is_signaled());
    let poll_fd = fence.poll_fd().expect("poll_fd");
    let delta = stats().since(&before);
    assert_eq!(
        delta.eventfds_created, 0,
        "poll_fd() of an exported native fence must be the sync_file, not an eventfd"
    );
    assert!(
        !fence.signaling_enabled(),
        "poll_fd() of a kernel fence arms nothing"
    );
    assert!(!poll_fd.is_readable().unwrap());
    assert!(fence.wait_timeout(Some(Duration::from_millis(50))).is_err());

    vgem.signal(vgem_fence);
    assert!(
        poll_fd.wait_readable(Some(SIGNAL_TIMEOUT)).unwrap(),
        "not readable after the vgem signal"
    );
    assert!(fence.is_signaled());
    assert_eq!(fence.wait_timeout(Some(SIGNAL_TIMEOUT)), Ok(()));
    assert!(sync_file.wait_timeout(Some(SIGNAL_TIMEOUT)).unwrap());
    assert!(sync_point.is_reached(), "EGL does not see the vgem signal");
    assert_eq!(stats().since(&before).eventfds_created, 0);
    drop((fence, poll_fd, sync_file, sync_point));
    vgem.destroy_bo(bo);
}

#[test]
fn empty_sync_point_has_nothing_to_export_and_is_signalled() {
    // No device needed: runs everywhere.
    let _serial = serial();
    let before = stats();
    for sync_point in [SyncPoint::signaled(), SyncPoint::default()] {
        assert!(!sync_point.contains_fence());
        assert!(!sync_point.is_exportable());
        let err = SyncFile::from_sync_point(&sync_point).unwrap_err();
        assert!(matches!(err, EglFenceError::NoFence), "{err:?}");
        assert!(err.to_string().contains("no fence"), "{err}");
        let fence = fence_from_sync_point(sync_point);
        assert!(fence.is_signaled());
        assert_eq!(fence.status(), FenceStatus::Signaled);
        assert_eq!(fence.wait_timeout(Some(Duration::ZERO)), Ok(()));
        assert!(fence.add_callback(|_| unreachable!()).is_err());
    }
    assert_eq!(stats().since(&before).eventfds_created, 0);
}

/// One frame of the leak test, converted and waited for in one of three ways.
fn leak_test_frame(gl: &mut Gl, i: u32) {
    let t = (i % 200) as f32 / 200.0;
    let sync_point = gl.frame([t, 1.0 - t, 0.5, 1.0]);
    match i % 3 {
        // The sync_file, waited on directly.
        0 => {
            let sf = SyncFile::from_sync_point(&sync_point).unwrap();
            assert!(sf.wait_timeout(Some(SIGNAL_TIMEOUT)).unwrap(), "frame {i}");
        }
        // A fence, waited on (blocking wait on the native fd).
        1 => {
            let fence = fence_from_sync_point(sync_point.clone());
            assert_eq!(
                fence.wait_timeout(Some(SIGNAL_TIMEOUT)),
                Ok(()),
                "frame {i}"
            );
        }
        // A fence with its poll fd and a callback (the reactor registration), then dropped.
        _ => {
            let fence = fence_from_sync_point(sync_point.clone());
            let fd = fence.poll_fd().unwrap();
            let _ = fence.add_callback(|_| {});
            assert!(fd.wait_readable(Some(SIGNAL_TIMEOUT)).unwrap(), "frame {i}");
            assert!(fence.is_signaled());
        }
    }
    assert!(
        sync_point.is_reached(),
        "frame {i}: sync_file ready, EGL fence not reached"
    );
}

#[test]
fn no_fd_leaked_over_200_frames() {
    let _serial = serial();
    let Some(mut gl) = Gl::open() else { return };
    // Warm up every path once: the first frames may open fds that stay (Mesa's threads and
    // caches, fence-bridge's process-wide reactor).
    for i in 0..3 {
        leak_test_frame(&mut gl, i);
    }
    let fds_before = open_fd_count();
    let started = Instant::now();
    for i in 0..200 {
        leak_test_frame(&mut gl, i);
    }
    let fds_after = open_fd_count();
    println!(
        "200 frames in {:?}; open fds before {fds_before}, after {fds_after}",
        started.elapsed()
    );
    assert_eq!(fds_after, fds_before, "fds leaked over 200 frames");
}
