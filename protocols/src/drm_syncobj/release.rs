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
//!    by a renderer that knows when its GPU work on the buffer ends.
//!
//! Signalling from the CPU at "due" is what Smithay and most compositors do. It is exact for
//! pixman and for a renderer that has finished sampling by then; a GPU renderer with work in
//! flight should pass that work's fence to [`ReleasePoint::signal_after`] instead (the kernel
//! then signals the point when the GPU is done, without a CPU wait).

use std::fmt;
use std::io;

use fence_bridge::{SyncFile, SyncobjPoint};

/// An owed signal of a client's release point (see the [module docs](self)). Dropping it
/// signals the point from the CPU.
#[must_use = "dropping a ReleasePoint signals the client's release point immediately"]
pub struct ReleasePoint {
    point: Option<SyncobjPoint>,
}

impl ReleasePoint {
    /// Takes on the obligation to signal `point` once.
    pub fn new(point: SyncobjPoint) -> ReleasePoint {
        ReleasePoint { point: Some(point) }
    }

    /// The point owed.
    pub fn point(&self) -> &SyncobjPoint {
        self.point
            .as_ref()
            .expect("a ReleasePoint holds its point until it is consumed")
    }

    /// Signals the point now, from the CPU (`DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`). The same as
    /// dropping it, but says so and returns the error.
    pub fn signal(mut self) -> io::Result<()> {
        let point = self.point.take().expect("not consumed yet");
        point.signal()
    }

    /// Signals the point when `fence` signals: the sync_file's fence is put at the point
    /// ([`fence_bridge::Syncobj::import_sync_file`]), so the kernel signals it after, say, the
    /// render pass that sampled the buffer, with no CPU wait.
    ///
    /// If the import fails the point is signalled from the CPU at once (a release too early
    /// beats one that never comes) and the import error is returned.
    pub fn signal_after(mut self, fence: &SyncFile) -> io::Result<()> {
        let point = self.point.take().expect("not consumed yet");
        match point.syncobj().import_sync_file(point.point(), fence) {
            Ok(()) => Ok(()),
            Err(err) => {
                tracing::warn!(%err, point = point.point(),
                    "importing a render fence into a release point failed; signalling it now");
                signal_or_log(&point);
                Err(err)
            }
        }
    }

    /// Gives up the obligation without signalling, returning the point. For a caller that
    /// hands the duty to something else that signals it (e.g. a KMS out-fence import); the
    /// point is then that caller's to signal.
    pub fn into_point(mut self) -> SyncobjPoint {
        self.point.take().expect("not consumed yet")
    }
}

fn signal_or_log(point: &SyncobjPoint) {
    if let Err(err) = point.signal() {
        // The syncobj is ours (an imported handle), so this is a kernel or device failure.
        tracing::error!(%err, point = point.point(), "signalling a syncobj release point failed");
    }
}

impl Drop for ReleasePoint {
    fn drop(&mut self) {
        if let Some(point) = self.point.take() {
            signal_or_log(&point);
        }
    }
}

impl fmt::Debug for ReleasePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.point {
            Some(point) => f
                .debug_struct("ReleasePoint")
                .field("syncobj", point.syncobj())
                .field("point", &point.point())
                .finish(),
            None => f.write_str("ReleasePoint(consumed)"),
        }
    }
}
