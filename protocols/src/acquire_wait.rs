//! Holding a commit until its acquire fence signals, without blocking the event loop: the
//! machinery shared by [`drm_syncobj`](crate::drm_syncobj) (timeline acquire points) and
//! [`explicit_sync`](crate::explicit_sync) (sync_file acquire fences).
//!
//! # How
//!
//! 1. A protocol's pre-commit hook decides that the pending commit carries a buffer with an
//!    acquire fence (and passes that protocol's validation), and calls `block_commit_with_action` with
//!    the fence as a fence_bridge [`Fence`].
//! 2. [`FenceSource::new`](fence_bridge::FenceSource::new) asks the fence once (one ioctl for a kernel fence). Already
//!    signalled means `Ready`: no blocker, no eventfd or poll fd, no loop source; the commit
//!    applies at once ([`AcquireStats::already_signaled`]).
//! 3. Otherwise a Smithay [`Barrier`](smithay::wayland::compositor::Barrier) is added as the commit's blocker and the source goes into
//!    the loop. When the fence signals, the callback releases the barrier and calls
//!    `CompositorClientState::blocker_cleared`, which applies the commit.
//!
//! When the fence is seen signalled (at commit time, or when the blocker fires) a commit that
//! reuses a buffer has its write judged against the release of the buffer's previous commit
//! (`crate::buffer_reuse`).
//!
//! Until then the surface shows its previous content. Smithay queues the transactions of a
//! client and applies those of one surface in commit order, so later commits of the surface wait
//! behind the blocked one (even if their own fences signal first); other surfaces are not held.
//!
//! # Timeout
//!
//! A fence that has not signalled after the protocol state's acquire timeout (1 s by default)
//! is reported once: a warning naming the client (and its pid) and the surface, and
//! [`AcquireStats::timed_out`]. The commit keeps waiting — reading a buffer the client's GPU
//! may still be writing is never safe — and the surface keeps its last content. The source is
//! re-armed each period to notice a surface or client that went away; then the wait is given up
//! ([`AcquireStats::abandoned`]) and its fd closed.

use std::cell::Cell;
use std::time::Duration;

use fence_bridge::{Fence, FenceStatus, Ktime, WaitMode};
use smithay::reexports::calloop::{self, LoopHandle};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, Resource};
use smithay::wayland::compositor::CompositorHandler;

use crate::buffer_reuse::PendingReuse;
use crate::commit_blocker::{block_commit, BlockedOn, Counted};
use crate::implicit_sync::TimeoutAction;
use crate::wait_times::WaitTimes;

/// How long a commit waits for its acquire point or fence before it is reported.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How acquire points (or fences) were waited for, since the state was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcquireStats {
    /// Commits whose acquire point had signalled at commit time: one query ioctl, nothing else.
    pub already_signaled: u64,
    /// Commits held by a blocker until their acquire point signalled.
    pub blocked: u64,
    /// Blocked commits that were released (their point signalled).
    pub released: u64,
    /// Blocked commits whose point had not signalled within the timeout (each reported once).
    pub timed_out: u64,
    /// Blocked commits given up because their surface or client went away first.
    pub abandoned: u64,
    /// How long each released commit waited, from its commit to its acquire fence's signal.
    pub waited: WaitTimes,
}

impl AcquireStats {
    /// Blocked commits still waiting now.
    pub fn waiting(&self) -> u64 {
        self.blocked.saturating_sub(self.released + self.abandoned)
    }
}

/// Where a protocol keeps its [`AcquireStats`] in the compositor state (`None` while the
/// protocol has no state: nothing is counted).
pub(crate) type StatsOf<D> = fn(&mut D) -> Option<&mut AcquireStats>;

/// What is waited for, for the logs: the protocol's word for it and a number (a timeline point
/// value, or a fence seqno).
#[derive(Clone, Copy)]
pub(crate) struct What {
    pub(crate) kind: &'static str,
    pub(crate) point: u64,
}

/// Blocks the pending commit of `surface` until `fence` signals (see the [module docs](self)),
/// counting in `stats(state)` (already signalled: no blocker; or blocked). At the timeout
/// [`TimeoutAction::Report`] reports and waits on; [`TimeoutAction::Disconnect`] reports and
/// disconnects the client. `reuse`, when the commit reuses a buffer, is judged when the fence
/// is seen signalled.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_commit_with_action<D>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    loop_handle: &LoopHandle<'static, D>,
    fence: Fence,
    (timeout, action): (Duration, TimeoutAction),
    what: What,
    stats: StatsOf<D>,
    reuse: Option<PendingReuse>,
) where
    D: CompositorHandler + 'static,
{
    let acquire = AcquireFence {
        fence,
        what,
        stats,
        action,
        reuse: Cell::new(reuse),
    };
    block_commit(state, dh, surface, loop_handle, timeout, acquire);
}

/// One acquire fence (or point) a commit waits for, with the protocol's statistics and the
/// timeout action in force when it was committed.
struct AcquireFence<D> {
    fence: Fence,
    what: What,
    stats: StatsOf<D>,
    action: TimeoutAction,
    /// The commit's reuse of a buffer, judged once the fence is seen signalled.
    reuse: Cell<Option<PendingReuse>>,
}

impl<D> AcquireFence<D> {
    /// The fence was seen signalled: judge the buffer reuse, if the commit is one.
    fn judge_reuse(&self) {
        if let Some(reuse) = self.reuse.take() {
            // The fence's signal time: the kernel's for a sync_file, the time it was seen for a
            // syncobj point.
            reuse.acquired(self.fence.timestamp().unwrap_or_else(Ktime::now));
        }
    }
}

impl<D: 'static> BlockedOn<D> for AcquireFence<D> {
    type Key = ();
    const MODE: WaitMode = WaitMode::Any;

    fn fences(&self) -> Vec<((), Fence)> {
        vec![((), self.fence.clone())]
    }

    fn count(&self, state: &mut D, step: Counted) {
        if matches!(step, Counted::AlreadySignaled | Counted::Released(_)) {
            self.judge_reuse();
        }
        let Some(stats) = (self.stats)(state) else {
            return;
        };
        match step {
            Counted::AlreadySignaled => stats.already_signaled += 1,
            Counted::Blocked => stats.blocked += 1,
            Counted::Released(waited) => {
                stats.released += 1;
                stats.waited.record(waited);
            }
            Counted::TimedOut => stats.timed_out += 1,
            Counted::Abandoned => stats.abandoned += 1,
            Counted::Disconnected => {}
        }
    }

    fn action(&self, _state: &mut D) -> TimeoutAction {
        self.action
    }

    fn stuck(&self) -> String {
        format!("{} {}", self.what.kind, self.what.point)
    }

    fn signalled(&self, status: FenceStatus) {
        if let FenceStatus::Error(error) = status {
            tracing::debug!(
                ?error,
                kind = self.what.kind,
                point = self.what.point,
                "acquire fence signalled with an error"
            );
        }
    }

    fn log_unwatchable(&self, error: &calloop::Error) {
        tracing::error!(%error, kind = self.what.kind,
            "cannot watch an acquire fence; applying the commit without waiting");
    }

    fn log_late(&self, surface: &WlSurface, after: Duration) {
        tracing::info!(surface = %surface.id(), kind = self.what.kind, point = self.what.point,
            ?after, "late acquire fence signalled; applying the commit");
    }

    fn log_stuck(&self, client: &Client, pid: Option<i32>, surface: &WlSurface, waited: Duration) {
        tracing::warn!(
            client = ?client.id(),
            pid,
            surface = %surface.id(),
            kind = self.what.kind,
            point = self.what.point,
            ?waited,
            "acquire fence has not signalled: the surface keeps its last content until it does"
        );
    }
}
