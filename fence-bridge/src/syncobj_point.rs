//! [`SyncobjPoint`]: one point of a [`Syncobj`], waited for with [`wait_points`] or turned into
//! a [`Fence`] ([`SyncobjPoint::fence`]) whose signalling goes through the crate's kernel-fence
//! reactor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drm::control::{syncobj, Device as _};
use rustix::event::epoll;
use rustix::io::Errno;

use crate::error::FenceError;
use crate::fence::{Fence, FenceSignaler, TARGET};
use crate::ops::FenceOps;
use crate::reactor::{self, Watch};
use crate::syncobj::{Syncobj, SyncobjWaitFlags};
use crate::time::Ktime;

/// Blocks until any (or with [`SyncobjWaitFlags::WAIT_ALL`] every) point of `points` signals,
/// or `timeout` elapses; returns the index of the first signalled point (meaningful without
/// `WAIT_ALL`). `None` waits forever, `Some(Duration::ZERO)` only checks.
///
/// Uses `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT`, or `DRM_IOCTL_SYNCOBJ_WAIT` when every point is 0 and
/// `WAIT_AVAILABLE` is not asked for (so binary syncobjs work on drivers without timelines).
/// The kernel's timeout is absolute on `CLOCK_MONOTONIC`; it is computed here from `timeout`, so
/// a wait restarted after a signal does not start over.
///
/// # Errors
///
/// `ETIME` when the timeout elapsed; `EINVAL` for an unsubmitted point without
/// `WAIT_FOR_SUBMIT`, for an empty list, or points on different DRM files; `ENOENT` for an unknown
/// handle.
pub fn wait_points(
    points: &[SyncobjPoint],
    timeout: Option<Duration>,
    flags: SyncobjWaitFlags,
) -> io::Result<usize> {
    let einval = || io::Error::from_raw_os_error(Errno::INVAL.raw_os_error());
    let Some(first) = points.first() else {
        return Err(einval());
    };
    let device = first.syncobj.device();
    if points.iter().any(|p| !p.syncobj.device().same_file(device)) {
        return Err(einval());
    }
    let abs_timeout = match timeout {
        Some(Duration::ZERO) => 0,
        Some(t) => Ktime::now()
            .checked_add(t)
            .map_or(i64::MAX, Ktime::as_nanos),
        None => i64::MAX,
    };
    let handles: Vec<syncobj::Handle> = points.iter().map(|p| p.syncobj.handle()).collect();
    let values: Vec<u64> = points.iter().map(|p| p.point).collect();
    let wait_all = flags.contains(SyncobjWaitFlags::WAIT_ALL);
    let for_submit = flags.contains(SyncobjWaitFlags::WAIT_FOR_SUBMIT);
    let available = flags.contains(SyncobjWaitFlags::WAIT_AVAILABLE);
    let first_signaled = if values.iter().all(|&v| v == 0) && !available {
        device.syncobj_wait(&handles, abs_timeout, wait_all, for_submit)?
    } else {
        device.syncobj_timeline_wait(
            &handles,
            &values,
            abs_timeout,
            wait_all,
            for_submit,
            available,
        )?
    };
    Ok(first_signaled as usize)
}

/// One point of a [`Syncobj`]: `(syncobj, point)`, what `wp_linux_drm_syncobj_surface_v1`'s
/// acquire and release points are. Point 0 means the binary syncobj's current fence.
#[derive(Clone, Debug)]
pub struct SyncobjPoint {
    syncobj: Syncobj,
    point: u64,
}

impl SyncobjPoint {
    /// `syncobj`'s point `point` (same as [`Syncobj::point`]).
    pub fn new(syncobj: Syncobj, point: u64) -> SyncobjPoint {
        SyncobjPoint { syncobj, point }
    }

    /// The syncobj.
    pub fn syncobj(&self) -> &Syncobj {
        &self.syncobj
    }

    /// The point.
    pub fn point(&self) -> u64 {
        self.point
    }

    /// Whether the point has signalled, in one ioctl: a timeline point by
    /// `DRM_IOCTL_SYNCOBJ_QUERY` (`query() >= point`), point 0 by a zero-timeout wait (an
    /// unsubmitted binary syncobj reads as not signalled).
    pub fn is_signaled(&self) -> io::Result<bool> {
        if self.point > 0 {
            return Ok(self.syncobj.query()? >= self.point);
        }
        match self.syncobj.wait(0, Some(Duration::ZERO), NO_FLAGS) {
            Ok(()) => Ok(true),
            Err(e)
                if e.raw_os_error() == Some(Errno::TIME.raw_os_error())
                    || e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Signals the point from the CPU ([`Syncobj::signal_point`]; point 0: [`Syncobj::signal`]).
    pub fn signal(&self) -> io::Result<()> {
        match self.point {
            0 => self.syncobj.signal(),
            p => self.syncobj.signal_point(p),
        }
    }

    /// [`Syncobj::wait`] on this point.
    pub fn wait(&self, timeout: Option<Duration>, flags: SyncobjWaitFlags) -> io::Result<()> {
        self.syncobj.wait(self.point, timeout, flags)
    }

    /// A [`Fence`] that signals when this point does: context = the syncobj's
    /// [`Syncobj::context`], seqno = the point, driver name `"drm_syncobj"`.
    ///
    /// Costs nothing until someone waits:
    /// * [`Fence::is_signaled`] / zero-timeout waits: one `DRM_IOCTL_SYNCOBJ_QUERY`;
    /// * [`Fence::poll_fd`] (poll loops, the calloop source, blocking
    ///   [`Fence::wait_timeout`]): the native fd — a fresh eventfd registered with
    ///   `DRM_IOCTL_SYNCOBJ_EVENTFD` for this point. No thread, no core eventfd. Unsubmitted
    ///   points are fine: the kernel waits for submission;
    /// * callbacks ([`Fence::add_callback`], [`crate::wait_any_timeout`],
    ///   [`Fence::enable_signaling`]): such an eventfd, registered with the crate's kernel-fence
    ///   reactor (the one process-wide `epoll_wait()` thread that also serves sync_files and
    ///   dma-bufs; no thread of its own). When the kernel writes it, one
    ///   `DRM_IOCTL_SYNCOBJ_QUERY` confirms and the fence signals. A fence released while
    ///   pending is unregistered and its eventfd closed.
    ///
    /// The fence keeps the syncobj (and so the handle) alive. A point-0 fence follows the binary
    /// syncobj's *current* fence, as kernel waits on point 0 do.
    pub fn fence(&self) -> Fence {
        Fence::new(
            self.syncobj.context(),
            self.point,
            SyncobjFenceOps {
                point: self.clone(),
                watch: Mutex::new(None),
            },
        )
    }
}

/// The [`FenceOps`] of [`SyncobjPoint::fence`].
struct SyncobjFenceOps {
    point: SyncobjPoint,
    /// The reactor's registration of the point's eventfd, once signalling is enabled.
    watch: Mutex<Option<Watch>>,
}

impl SyncobjFenceOps {
    /// A fresh eventfd for the point (`DRM_IOCTL_SYNCOBJ_EVENTFD`), registered with the reactor.
    fn arm(&self, signaler: &FenceSignaler) -> io::Result<Watch> {
        let eventfd = Arc::new(self.point.syncobj.eventfd(self.point.point, NO_FLAGS)?);
        let (point, fd, signaler) = (self.point.clone(), eventfd.clone(), signaler.clone());
        let on_ready: reactor::OnReady = Box::new(move || on_ready(&point, &fd, &signaler));
        reactor::watch(eventfd, epoll::EventFlags::IN, on_ready)
    }
}

const NO_FLAGS: SyncobjWaitFlags = SyncobjWaitFlags::empty();

/// The reactor's callback, run when the kernel wrote the point's eventfd: confirms with one
/// `DRM_IOCTL_SYNCOBJ_QUERY` (point 0: a zero-timeout wait) and signals. Returns `true` when
/// done, `false` to be called again for the next write.
fn on_ready(point: &SyncobjPoint, eventfd: &OwnedFd, signaler: &FenceSignaler) -> bool {
    if signaler.is_released() {
        return true;
    }
    match point.is_signaled() {
        Ok(true) => {}
        Ok(false) => {
            // The fence that fired is no longer the point's (a binary syncobj reset or replaced
            // meanwhile): drain the eventfd and have the kernel write it for the point's next
            // fence. The kernel writes an eventfd once per registration.
            let _ = rustix::io::read(eventfd, &mut [0u8; 8]);
            return match point
                .syncobj
                .register_eventfd(point.point, eventfd.as_fd(), NO_FLAGS)
            {
                Ok(()) => false,
                Err(err) => {
                    signaler.signal_with_error(fence_error(&err));
                    true
                }
            };
        }
        // The kernel's eventfd write is the signal; the query only confirms it.
        Err(err) => tracing::warn!(target: TARGET, %err, point = point.point,
            "syncobj point query failed after its eventfd fired; signalling"),
    }
    signaler.signal();
    true
}

/// An errno as the error a fence signals with (`EIO` if it is none).
fn fence_error(err: &io::Error) -> FenceError {
    err.raw_os_error()
        .and_then(FenceError::from_errno)
        .unwrap_or(FenceError::EIO)
}

impl FenceOps for SyncobjFenceOps {
    fn driver_name(&self) -> &str {
        "drm_syncobj"
    }

    fn timeline_name(&self) -> &str {
        self.point.syncobj.name()
    }

    fn signaled(&self) -> bool {
        match self.point.is_signaled() {
            Ok(signaled) => signaled,
            Err(err) => {
                tracing::warn!(target: TARGET, %err, point = self.point.point,
                    "syncobj point query failed");
                false
            }
        }
    }

    fn native_poll_fd(&self) -> Option<io::Result<OwnedFd>> {
        Some(self.point.syncobj.eventfd(self.point.point, NO_FLAGS))
    }

    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        if self.signaled() {
            return false;
        }
        match self.arm(&signaler) {
            Ok(watch) => *self.watch.lock().unwrap_or_else(PoisonError::into_inner) = Some(watch),
            Err(err) => {
                // The contract: signal with an error rather than never.
                tracing::warn!(target: TARGET, %err, "cannot arm a syncobj fence");
                signaler.signal_with_error(fence_error(&err));
            }
        }
        true
    }

    /// The deadline goes to the fence at the point, through a sync_file of it (a syncobj has no
    /// deadline ioctl of its own outside a wait): `SYNC_IOC_SET_DEADLINE` reaches the very
    /// `dma_fence`. A point with no fence yet (not submitted) has nobody to tell: skipped.
    fn set_deadline(&self, deadline: Ktime) {
        let passed = self
            .point
            .syncobj
            .export_sync_file(self.point.point)
            .and_then(|sync_file| sync_file.set_deadline(deadline));
        if let Err(err) = passed {
            tracing::trace!(target: TARGET, %err, point = self.point.point,
                "syncobj point: deadline hint not passed");
        }
    }

    fn release(&self) {
        // Unregisters from the reactor; the eventfd closes with the last reference.
        let watch = self
            .watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(watch);
    }
}
