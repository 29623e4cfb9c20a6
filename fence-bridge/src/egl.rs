//! Smithay renderer [`SyncPoint`]s as sync_files and fences (cargo feature `smithay`).
//!
//! When a Smithay renderer finishes a frame (`Frame::finish`) it returns a [`SyncPoint`]: the
//! point in the GPU's command stream where that frame's rendering completes. What it holds
//! depends on the display and the renderer:
//!
//! | the `SyncPoint` holds | when | [`SyncFile::from_sync_point`] | [`fence_from_sync_point`] |
//! |---|---|---|---|
//! | an `EGL_SYNC_NATIVE_FENCE_ANDROID` [`EGLFence`] | `GlesRenderer` on a display with `EGL_ANDROID_native_fence_sync` (and `GL_OES_EGL_sync`) | the sync_file (`eglDupNativeFenceFDANDROID`) | the sync_file's fence: a native poll fd, no thread |
//! | an `EGL_SYNC_FENCE_KHR` [`EGLFence`] | a display with `EGL_KHR_fence_sync` only | [`EglFenceError::NotExportable`] | a [`SyncPointFence`] (a helper thread once waited for) |
//! | another [`smithay::backend::renderer::sync::Fence`] (e.g. a CPU fence) | custom renderers | its `export()` if it says it is exportable, else `NotExportable` | as above |
//! | nothing ([`SyncPoint::signaled`], `Default`) | a renderer without fence support (the GLES renderer then ran `glFinish`: the work is done), a frame finished twice | [`EglFenceError::NoFence`] | [`Fence::stub`]: already signalled |
//!
//! The exported fd is a sync_file holding the driver's `dma_fence` for the rendering (with
//! Mesa on a DRM device that is the kernel driver's fence; for llvmpipe on a KMS node Mesa's own
//! software fence): it can be passed to KMS as `IN_FENCE_FD`, to another process, or to
//! [`SyncFile::into_fence`]. It stays valid after the `SyncPoint` (and the EGL sync object) is
//! dropped.

use std::fmt;
use std::time::Duration;

use smithay::backend::egl::fence::EGLFence;
use smithay::backend::renderer::sync::SyncPoint;

use crate::context::context_alloc;
use crate::error::FenceError;
use crate::fence::{Fence, FenceSignaler, TARGET};
use crate::ops::FenceOps;
use crate::sync_file::SyncFile;

/// Why a [`SyncPoint`] could not be turned into a [`SyncFile`] ([`SyncFile::from_sync_point`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum EglFenceError {
    /// The `SyncPoint` holds no fence ([`SyncPoint::signaled`], `SyncPoint::default()`, or a
    /// frame from a renderer without fence support, which completed the work with `glFinish`
    /// before returning). There is nothing to export and nothing to wait for: the point is
    /// reached. [`fence_from_sync_point`] gives an already signalled fence for it.
    NoFence,
    /// The `SyncPoint` holds a fence that cannot be exported as a native fence fd: an
    /// `EGL_SYNC_FENCE_KHR` (the display lacks `EGL_ANDROID_native_fence_sync`) or a non-EGL
    /// fence (a CPU fence). [`fence_from_sync_point`] still gives a [`Fence`] for it, at the cost
    /// of a helper thread (see [`SyncPointFence`]).
    NotExportable {
        /// What the fence is (for messages): `"EGL_KHR_fence_sync"`, or `"non-EGL fence"`.
        kind: &'static str,
    },
    /// The fence claims to be exportable but exporting failed: `eglDupNativeFenceFDANDROID`
    /// returned `EGL_NO_NATIVE_FENCE_FD_ANDROID` (e.g. the fence was never flushed to the
    /// driver, or the process is out of fds). `source` is the EGL error when the fence is an
    /// [`EGLFence`]; other fence types do not report one.
    ExportFailed {
        /// The EGL error, if known.
        source: Option<smithay::backend::egl::Error>,
    },
}

impl fmt::Display for EglFenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EglFenceError::NoFence => f.write_str(
                "the SyncPoint holds no fence (already reached): there is no native fence to export",
            ),
            EglFenceError::NotExportable { kind } => write!(
                f,
                "the SyncPoint's fence ({kind}) cannot be exported as a native fence fd \
                 (needs EGL_ANDROID_native_fence_sync)"
            ),
            EglFenceError::ExportFailed { source: Some(err) } => {
                write!(f, "eglDupNativeFenceFDANDROID failed: {err}")
            }
            EglFenceError::ExportFailed { source: None } => {
                f.write_str("exporting the SyncPoint's native fence gave no fd")
            }
        }
    }
}

impl std::error::Error for EglFenceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EglFenceError::ExportFailed { source: Some(err) } => Some(err),
            _ => None,
        }
    }
}

/// What a fence-holding `SyncPoint` holds, for names and messages.
fn fence_kind(sync_point: &SyncPoint) -> &'static str {
    match sync_point.get::<EGLFence>() {
        Some(fence) if fence.is_native() => "EGL_ANDROID_native_fence_sync",
        Some(_) => "EGL_KHR_fence_sync",
        None => "non-EGL fence",
    }
}

impl SyncFile {
    /// Exports the native fence of a Smithay renderer's [`SyncPoint`] (what `Frame::finish`
    /// returns) as a sync_file: `eglDupNativeFenceFDANDROID` on an `EGL_ANDROID_native_fence_sync`
    /// [`EGLFence`], or the fence's own `export()` for other exportable fence types.
    ///
    /// The `SyncPoint` is left as it was (it may be waited on or dropped); the sync_file is an
    /// independent reference to the same driver fence and stays valid after the `SyncPoint` (and
    /// its EGL sync object) is gone. Costs one `dup` inside EGL; nothing is waited for. The fd is
    /// trusted to be a sync_file (EGL guarantees it); it is not checked.
    ///
    /// Which kernel fence the sync_file holds is the driver's business: a hardware driver gives
    /// its job fence, pending until the GPU is done. Mesa's llvmpipe on a KMS node (the software
    /// GL of `kms_swrast`, e.g. on virtio-gpu without virgl) renders on CPU threads and, as
    /// observed with Mesa 25.0.7, exports the kernel's `stub` fence, already signalled.
    ///
    /// To get a [`Fence`] for *any* `SyncPoint`, exportable or not, use
    /// [`fence_from_sync_point`].
    ///
    /// # Errors
    ///
    /// * [`EglFenceError::NoFence`] for a `SyncPoint` with no fence (already reached);
    /// * [`EglFenceError::NotExportable`] for a plain `EGL_KHR_fence_sync` or a CPU fence;
    /// * [`EglFenceError::ExportFailed`] when EGL gives no fd.
    pub fn from_sync_point(sync_point: &SyncPoint) -> Result<SyncFile, EglFenceError> {
        if !sync_point.contains_fence() {
            return Err(EglFenceError::NoFence);
        }
        if !sync_point.is_exportable() {
            return Err(EglFenceError::NotExportable {
                kind: fence_kind(sync_point),
            });
        }
        if let Some(fence) = sync_point.get::<EGLFence>() {
            // EGLFence's own export keeps the EGL error that `SyncPoint::export` drops.
            return fence
                .export()
                .map(SyncFile::from_fd)
                .map_err(|err| EglFenceError::ExportFailed { source: Some(err) });
        }
        sync_point
            .export()
            .map(SyncFile::from_fd)
            .ok_or(EglFenceError::ExportFailed { source: None })
    }
}

/// A [`Fence`] for any Smithay [`SyncPoint`]:
///
/// * **no fence** (already reached): [`Fence::stub`], already signalled — the kernel's
///   `dma_fence_get_stub()` for "nothing to wait for";
/// * **exportable** (`EGL_ANDROID_native_fence_sync`): the sync_file from
///   [`SyncFile::from_sync_point`] as [`SyncFile::into_fence`] — a kernel fence with its own
///   pollable fd, no eventfd and no thread ([`crate::SyncFileFence`]);
/// * **not exportable**, or exporting failed (logged): a fence backed by [`SyncPointFence`],
///   which polls `SyncPoint::is_reached` and waits on a helper thread once signalling is enabled.
///
/// The fence gets a context of its own (seqno 1), like an imported sync_file.
pub fn fence_from_sync_point(sync_point: SyncPoint) -> Fence {
    if !sync_point.contains_fence() {
        return Fence::stub();
    }
    if sync_point.is_exportable() {
        match SyncFile::from_sync_point(&sync_point) {
            Ok(sync_file) => return sync_file.into_fence(),
            Err(err) => tracing::warn!(
                target: TARGET,
                "SyncPoint fence: {err}; falling back to waiting on a helper thread"
            ),
        }
    }
    let timeline = fence_kind(&sync_point);
    Fence::new(
        context_alloc(1).first(),
        1,
        SyncPointFence {
            sync_point,
            timeline,
        },
    )
}

/// How long one `eglClientWaitSync` of the helper thread blocks before it checks whether the
/// fence was released (so an abandoned fence does not pin its thread for long).
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Consecutive failed waits after which the helper thread gives up and signals `EIO` (Smithay's
/// `Interrupted` means "try again"; a wait that keeps failing is an EGL error that will not heal).
const MAX_FAILED_WAITS: u32 = 10;
/// The helper thread's stack: it only calls into EGL's client wait.
const HELPER_STACK: usize = 256 * 1024;

/// The [`FenceOps`] of a [`Fence`] made by [`fence_from_sync_point`] for a [`SyncPoint`] whose
/// fence cannot be exported as a native fd (an `EGL_KHR_fence_sync`, a CPU fence). Not
/// constructed directly; named here so its behaviour and cost are documented in one place.
///
/// * **Names**: driver `"smithay"`; timeline `"EGL_KHR_fence_sync"`, `"non-EGL fence"`, or
///   `"EGL_ANDROID_native_fence_sync"` when exporting a native fence failed.
/// * **Polling** ([`Fence::is_signaled`], [`Fence::status`], zero-timeout waits):
///   `SyncPoint::is_reached` — for an [`EGLFence`] an `eglClientWaitSync` with a zero timeout
///   and no flush; never blocks, nothing is armed. The timestamp is the time it was noticed.
/// * **Signalling** (blocking waits, callbacks, [`Fence::poll_fd`],
///   [`Fence::enable_signaling`]): there is no fd to poll, so the cross-driver contract ("an
///   enabled fence signals in finite time") is kept by **one helper thread per fence**, spawned
///   at the first enable (never before, never for a fence nobody waits on), which blocks in
///   EGL and signals the fence when the point is reached:
///   - for an [`EGLFence`]: `eglClientWaitSync` in slices of 100 ms, checking between slices
///     whether the fence was released (then the thread just ends);
///   - for other fence types: `SyncPoint::wait`, which cannot be interrupted: the thread lives
///     until the point is reached even if the fence is dropped (Smithay's `Fence` trait
///     promises that happens in finite time).
///
///   A wait that fails 10 times in a row (Smithay's `Interrupted`: an EGL error) signals the
///   fence with [`FenceError::EIO`]; a thread that cannot be spawned signals with that errno.
/// * **Cost**: a thread spawn (256 KiB stack) per waited-on fence, plus — for
///   [`Fence::poll_fd`] — the core's eventfd. A compositor that waits on many frames should make
///   sure the display has `EGL_ANDROID_native_fence_sync`, where none of this exists.
/// * **Deadline hints**: ignored (EGL has no way to pass them).
pub struct SyncPointFence {
    sync_point: SyncPoint,
    timeline: &'static str,
}

impl FenceOps for SyncPointFence {
    fn driver_name(&self) -> &str {
        "smithay"
    }

    fn timeline_name(&self) -> &str {
        self.timeline
    }

    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        if self.sync_point.is_reached() {
            return false;
        }
        let sync_point = self.sync_point.clone();
        let for_thread = signaler.clone();
        let spawned = std::thread::Builder::new()
            .name("fence-bridge-syncpoint".into())
            .stack_size(HELPER_STACK)
            .spawn(move || wait_and_signal(&sync_point, &for_thread));
        // The thread is never joined: it ends by itself (see the type docs).
        if let Err(err) = spawned {
            tracing::error!(
                target: TARGET,
                "SyncPoint fence: cannot spawn the waiting thread ({err}); signalling with that error"
            );
            let error = err
                .raw_os_error()
                .and_then(FenceError::from_errno)
                .unwrap_or(FenceError::EIO);
            signaler.signal_with_error(error);
        }
        true
    }

    fn signaled(&self) -> bool {
        self.sync_point.is_reached()
    }
}

/// The helper thread of [`SyncPointFence`].
fn wait_and_signal(sync_point: &SyncPoint, signaler: &FenceSignaler) {
    let mut failures = 0;
    loop {
        if signaler.is_released() {
            // Nobody holds the fence any more: nothing to signal.
            return;
        }
        let result = match sync_point.get::<EGLFence>() {
            Some(fence) => fence
                .client_wait(Some(WAIT_SLICE), false)
                .map_err(|err| err.to_string()),
            None => sync_point
                .wait()
                .map(|()| true)
                .map_err(|err| err.to_string()),
        };
        match result {
            Ok(true) => {
                signaler.signal();
                return;
            }
            Ok(false) => failures = 0,
            Err(err) => {
                failures += 1;
                tracing::warn!(
                    target: TARGET,
                    "SyncPoint fence: wait failed ({err}), attempt {failures}/{MAX_FAILED_WAITS}"
                );
                if failures >= MAX_FAILED_WAITS {
                    signaler.signal_with_error(FenceError::EIO);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The paths that need no EGL display: empty SyncPoints and CPU fences (Smithay's `Fence`
    //! trait implemented by a flag, exactly what a custom CPU renderer would do). The EGL paths
    //! are in `tests/kernel_egl.rs`, run in the kernel guest.

    use super::*;
    use smithay::backend::renderer::sync::{Fence as SmithayFence, Interrupted};
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    /// A CPU fence: reached when `signal` is called.
    #[derive(Debug, Default)]
    struct CpuFence {
        done: Mutex<bool>,
        cond: Condvar,
        waited: AtomicBool,
    }

    impl CpuFence {
        fn signal(&self) {
            *self.done.lock().unwrap() = true;
            self.cond.notify_all();
        }
    }

    #[derive(Debug, Clone, Default)]
    struct SharedCpuFence(Arc<CpuFence>);

    impl SmithayFence for SharedCpuFence {
        fn is_signaled(&self) -> bool {
            *self.0.done.lock().unwrap()
        }
        fn wait(&self) -> Result<(), Interrupted> {
            self.0.waited.store(true, Ordering::SeqCst);
            let mut done = self.0.done.lock().unwrap();
            while !*done {
                done = self.0.cond.wait(done).unwrap();
            }
            Ok(())
        }
        fn is_exportable(&self) -> bool {
            false
        }
        fn export(&self) -> Option<OwnedFd> {
            None
        }
    }

    #[test]
    fn empty_sync_point_has_nothing_to_export_and_is_signalled() {
        for sp in [SyncPoint::signaled(), SyncPoint::default()] {
            assert!(matches!(
                SyncFile::from_sync_point(&sp),
                Err(EglFenceError::NoFence)
            ));
            let fence = fence_from_sync_point(sp);
            assert!(fence.is_signaled());
            assert_eq!(fence.wait_timeout(Some(Duration::ZERO)), Ok(()));
        }
    }

    #[test]
    fn cpu_fence_is_not_exportable_and_signals_through_the_helper_thread() {
        let cpu = SharedCpuFence::default();
        let sp = SyncPoint::from(cpu.clone());
        let err = SyncFile::from_sync_point(&sp).unwrap_err();
        assert!(
            matches!(
                err,
                EglFenceError::NotExportable {
                    kind: "non-EGL fence"
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("non-EGL fence"), "{err}");

        let fence = fence_from_sync_point(sp);
        assert_eq!(fence.driver_name(), "smithay");
        assert_eq!(fence.timeline_name(), "non-EGL fence");
        assert!(!fence.is_signaled());
        assert!(!fence.signaling_enabled());
        assert!(
            !cpu.0.waited.load(Ordering::SeqCst),
            "no thread before a waiter"
        );

        let (tx, rx) = std::sync::mpsc::channel();
        fence
            .add_callback(move |info| tx.send(info.status()).unwrap())
            .unwrap();
        assert!(fence.signaling_enabled());
        // The helper thread blocks in SyncPoint::wait.
        while !cpu.0.waited.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!fence.is_signaled());
        cpu.0.signal();
        let status = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            status.is_signaled() && status.error().is_none(),
            "{status:?}"
        );
        assert!(fence.is_signaled());
    }

    #[test]
    fn cpu_fence_polls_is_reached_without_a_thread() {
        let cpu = SharedCpuFence::default();
        let fence = fence_from_sync_point(SyncPoint::from(cpu.clone()));
        assert!(!fence.is_signaled());
        cpu.0.signal();
        assert!(
            fence.is_signaled(),
            "signaled() follows SyncPoint::is_reached"
        );
        assert!(!fence.signaling_enabled());
        assert!(!cpu.0.waited.load(Ordering::SeqCst));
    }

    #[test]
    fn reached_cpu_fence_enables_without_a_thread() {
        let cpu = SharedCpuFence::default();
        cpu.0.signal();
        let fence = fence_from_sync_point(SyncPoint::from(cpu.clone()));
        fence.enable_signaling();
        assert!(fence.is_signaled());
        assert_eq!(fence.wait_timeout(Some(Duration::from_secs(1))), Ok(()));
        assert!(!cpu.0.waited.load(Ordering::SeqCst));
    }
}
