//! [`ReleasePoint`]: the compositor's promise to signal a client's release point, kept by the
//! type.
//!
//! A client that sets a release point waits on it before it reuses the buffer. A release point
//! the compositor forgets hangs the client (and, with an infinite wait in the client's driver,
//! has deadlocked real client/compositor pairs); one signalled twice is harmless but means the
//! first signal was a guess. So the obligation is a value: whoever holds a `ReleasePoint` owes
//! exactly one signal, and dropping it pays the debt. Every path — replaced by a newer commit,
//! surface or syncobj surface destroyed, client gone, compositor shut down, a panic unwinding —
//! ends in [`Drop`], and the consuming methods disarm it, so the point is signalled **exactly
//! once, whatever happens**.
//!
//! # Lifecycle
//!
//! 1. **set** — `set_release_point` makes one (pending state). Replaced by another
//!    `set_release_point` before the commit, or discarded by the syncobj surface's `destroy`,
//!    it is dropped and so signalled at once: the compositor will never read a buffer for it.
//! 2. **committed** — travels with its commit through Smithay's cache
//!    ([`super::DrmSyncobjCachedState`]) and becomes the surface's current release point when
//!    the commit is applied.
//! 3. **due** — when a later applied commit brings a new buffer or `attach(NULL)`, when the
//!    surface is destroyed, or at shutdown: dropped, or handed to [`ReleasePoint::signal_after`]
//!    by a renderer that knows when its GPU work on the buffer ends. Destroying the surface
//!    settles every point of it at once, including those of commits still queued behind a
//!    blocker, which Smithay keeps until the surface's last handle is gone (see
//!    `crate::owed`); the `ReleasePoint` left behind is then spent, and dropping it does
//!    nothing.
//!
//! # Release after GPU completion
//!
//! Signalling from the CPU at "due" is what Smithay and most compositors do. It is exact for
//! pixman and for a renderer that has finished sampling by then, but a GPU renderer may still
//! have queued work reading the buffer. So a renderer marks the *current* release point of every
//! surface a frame sampled with that frame's fence ([`ReleasePoint::sampled_by`]; the newest
//! frame of each output wins, as one output's frames complete in order). When the point becomes due, `Drop` then imports
//! that fence into the point (`Syncobj::import_sync_file`, through
//! [`ReleasePoint::signal_after`]): the kernel signals the point when the GPU work that last
//! sampled the buffer completes, with no CPU wait. A point no frame marked, or marked by a frame
//! with no exportable fence (already complete: pixman, a `glFinish`ed frame), is signalled from
//! the CPU at once. Either way exactly once; [`ReleaseStats`] counts every point taken on and
//! which path each one's signal took, so `taken - signalled` is what is still owed.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fence_bridge::{SyncFile, SyncobjPoint};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;

use crate::buffer_reuse::{BufferUse, RenderFence};
use crate::owed::{Owed, Settle};
use crate::release_fence::{Reader, ReleaseFence, Sampled};

/// An owed signal of a client's release point (see the [module docs](self)). Dropping it
/// signals the point.
#[must_use = "dropping a ReleasePoint signals the client's release point immediately"]
pub struct ReleasePoint {
    owed: Owed<Debt>,
}

/// What a [`ReleasePoint`] owes, until paid.
pub(crate) struct Debt {
    point: SyncobjPoint,
    /// The fence of the last frame of each reader that read the buffer
    /// ([`ReleasePoint::sampled_by`]).
    sampled: Sampled,
    /// Where to count how the point was released.
    counters: Option<Arc<ReleaseCounters>>,
    /// The buffer's use this point ends: told when the release is made, and what it waits for.
    used: Arc<BufferUse>,
}

/// How many release points were taken on and how they were signalled (see [`ReleaseCounters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleaseStats {
    /// Release points taken on ([`ReleasePoint::counted`]): every `set_release_point`.
    pub taken: u64,
    /// Signalled by the kernel after a render fence: the fence of the last frame that sampled
    /// the buffer was imported into the point (it may have been signalled already).
    pub fence_imported: u64,
    /// Signalled from the CPU at once: no frame with an exportable fence sampled the buffer, the
    /// point was signalled explicitly ([`ReleasePoint::signal`]), or an import failed.
    pub cpu_signaled: u64,
    /// Fence imports that failed (then signalled from the CPU, so also in `cpu_signaled`).
    pub import_failed: u64,
}

impl ReleaseStats {
    /// Points signalled, by either path.
    pub fn signalled(&self) -> u64 {
        self.fence_imported + self.cpu_signaled
    }

    /// Points taken on and not signalled yet.
    pub fn owed(&self) -> u64 {
        self.taken.saturating_sub(self.signalled())
    }
}

/// Shared counters behind [`ReleaseStats`]: a point made with [`ReleasePoint::counted`] counts
/// itself taken then, and signalled when it is signalled, wherever that happens.
#[derive(Debug, Default)]
pub struct ReleaseCounters {
    taken: AtomicU64,
    fence_imported: AtomicU64,
    cpu_signaled: AtomicU64,
    import_failed: AtomicU64,
}

impl ReleaseCounters {
    /// The counts so far.
    pub fn stats(&self) -> ReleaseStats {
        ReleaseStats {
            taken: self.taken.load(Ordering::Relaxed),
            fence_imported: self.fence_imported.load(Ordering::Relaxed),
            cpu_signaled: self.cpu_signaled.load(Ordering::Relaxed),
            import_failed: self.import_failed.load(Ordering::Relaxed),
        }
    }
}

fn count(counters: &Option<Arc<ReleaseCounters>>, what: fn(&ReleaseCounters) -> &AtomicU64) {
    if let Some(counters) = counters {
        what(counters).fetch_add(1, Ordering::Relaxed);
    }
}

impl ReleasePoint {
    /// Takes on the obligation to signal `point` once.
    pub fn new(point: SyncobjPoint) -> ReleasePoint {
        ReleasePoint {
            owed: Owed::new(Debt {
                point,
                sampled: Sampled::default(),
                counters: None,
                used: Arc::default(),
            }),
        }
    }

    /// [`ReleasePoint::new`], counted in `counters`: taken now, and how it is signalled later.
    pub fn counted(point: SyncobjPoint, counters: Arc<ReleaseCounters>) -> ReleasePoint {
        counters.taken.fetch_add(1, Ordering::Relaxed);
        ReleasePoint {
            owed: Owed::new(Debt {
                point,
                sampled: Sampled::default(),
                counters: Some(counters),
                used: Arc::default(),
            }),
        }
    }

    /// Makes `surface`'s destruction signal this point, wherever the point is then: pending,
    /// queued behind a blocker, or current.
    pub(crate) fn due_with(&self, surface: &WlSurface) {
        self.owed.list_on(surface);
    }

    /// Records that a frame of `reader` (an output) read the buffer this point belongs to:
    /// `fence` is that frame's render fence, or the [`ScanoutFence`](crate::ScanoutFence) of the
    /// frame that scans it out; `None` when the frame's work is known complete (no fence, or
    /// not exportable and finished). Per reader the last call wins: one output's frames
    /// complete in submission order, so its newest fence covers its older ones. Fences of
    /// different readers are all waited for.
    ///
    /// When the point becomes due ([`Drop`], [`ReleasePoint::release`]) the recorded fences are
    /// imported into the point (merged into one; a scanout fence once the replacing commit is
    /// made); without any the point is signalled from the CPU.
    pub fn sampled_by(&mut self, reader: Reader, fence: Option<ReleaseFence>) {
        self.owed.with(|debt| {
            if let Some(debt) = debt {
                debt.sampled.record(reader, fence);
            }
        });
    }

    /// The buffer use this point ends, told of the release when it is made (buffer-reuse
    /// tracking); `None` once it has been released.
    pub(crate) fn buffer_use(&self) -> Option<Arc<BufferUse>> {
        self.owed.with(|debt| debt.map(|d| d.used.clone()))
    }

    /// The point owed; `None` once it has been signalled (its surface was destroyed).
    pub fn point(&self) -> Option<SyncobjPoint> {
        self.owed.with(|debt| debt.map(|d| d.point.clone()))
    }

    /// Releases the point now that the compositor will not read the buffer again: after the
    /// fence of the last frame that sampled it ([`ReleasePoint::sampled_by`]), else from the CPU
    /// at once. What [`Drop`] does, with the error returned.
    pub fn release(self) -> io::Result<()> {
        match self.owed.take() {
            Some(debt) => debt.release(),
            None => Ok(()), // paid when its surface was destroyed
        }
    }

    /// Signals the point now, from the CPU (`DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`), ignoring any
    /// fence recorded by [`ReleasePoint::sampled_by`]: for a caller that knows the buffer is no
    /// longer read. Dropping a point that no frame marked does the same.
    pub fn signal(self) -> io::Result<()> {
        match self.owed.take() {
            Some(debt) => debt.signal(),
            None => Ok(()),
        }
    }

    /// Signals the point when `fence` signals: the sync_file's fence is put at the point
    /// ([`fence_bridge::Syncobj::import_sync_file`]), so the kernel signals it after, say, the
    /// render pass that sampled the buffer, with no CPU wait.
    ///
    /// If the import fails the point is signalled from the CPU at once (a release too early
    /// beats one that never comes) and the import error is returned.
    pub fn signal_after(self, fence: &SyncFile) -> io::Result<()> {
        match self.owed.take() {
            Some(debt) => {
                // Buffer-reuse tracking may need the fence after the import, while it is pending.
                let kept = fence
                    .try_clone()
                    .ok()
                    .map(|f| Arc::new(f) as Arc<dyn RenderFence>);
                debt.signal_after(fence, kept)
            }
            None => Ok(()),
        }
    }

    /// Gives up the obligation without signalling, returning the point (`None` if it was
    /// signalled already). For a caller that hands the duty to something else that signals it
    /// (e.g. a KMS out-fence import); the point is then that caller's to signal. Buffer-reuse
    /// tracking, which cannot know when that is, counts the release as taking effect now: a
    /// write that finishes between now and the caller's signal is not seen.
    pub fn into_point(self) -> Option<SyncobjPoint> {
        self.owed.take().map(|debt| {
            debt.used.released(None);
            debt.point
        })
    }
}

impl Debt {
    fn release(mut self) -> io::Result<()> {
        match std::mem::take(&mut self.sampled).ready() {
            Ok(Some(fence)) => {
                let kept: Arc<dyn RenderFence> = fence.clone();
                self.signal_after(&fence, Some(kept))
            }
            Ok(None) => self.signal(),
            Err(pending) => {
                // Paid when the commit that takes the buffer off screen is made (see
                // `crate::release_fence`); failures are logged there, as for a settle.
                pending.then(move |fence| {
                    let result = match fence {
                        Some(fence) => {
                            let kept: Arc<dyn RenderFence> = fence.clone();
                            self.signal_after(&fence, Some(kept))
                        }
                        None => self.signal(),
                    };
                    if let Err(err) = result {
                        tracing::error!(%err, "releasing a scanned-out buffer's point failed");
                    }
                });
                Ok(())
            }
        }
    }

    fn signal(self) -> io::Result<()> {
        // Before the signal: the client cannot have seen the release yet.
        self.used.released(None);
        count(&self.counters, |c| &c.cpu_signaled);
        self.point.signal()
    }

    /// Imports `fence` into the point; `kept` is the same fence for buffer-reuse tracking.
    fn signal_after(self, fence: &SyncFile, kept: Option<Arc<dyn RenderFence>>) -> io::Result<()> {
        // Before the import: the client cannot have seen the release yet. The release takes
        // effect when the fence signals.
        self.used.released(kept);
        let point = &self.point;
        match point.syncobj().import_sync_file(point.point(), fence) {
            Ok(()) => {
                count(&self.counters, |c| &c.fence_imported);
                Ok(())
            }
            Err(err) => {
                tracing::warn!(%err, point = point.point(),
                    "importing a render fence into a release point failed; signalling it now");
                count(&self.counters, |c| &c.import_failed);
                count(&self.counters, |c| &c.cpu_signaled);
                self.used.took_effect_now();
                if let Err(err) = point.signal() {
                    // The syncobj is ours (an imported handle): a kernel or device failure.
                    tracing::error!(%err, point = point.point(),
                        "signalling a syncobj release point failed");
                }
                Err(err)
            }
        }
    }
}

impl Settle for Debt {
    fn settle(self) {
        let cpu = self.sampled.is_empty();
        // An import failure is logged (and falls back to the CPU) inside; log a CPU failure.
        if let Err(err) = self.release() {
            if cpu {
                tracing::error!(%err, "signalling a syncobj release point failed");
            }
        }
    }
}

impl fmt::Debug for ReleasePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.owed.with(|debt| match debt {
            Some(debt) => f
                .debug_struct("ReleasePoint")
                .field("syncobj", debt.point.syncobj())
                .field("point", &debt.point.point())
                .field("sampled", &!debt.sampled.is_empty())
                .finish(),
            None => f.write_str("ReleasePoint(signalled)"),
        })
    }
}
