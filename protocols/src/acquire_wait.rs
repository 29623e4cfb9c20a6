//! Holding a commit until its acquire fence signals, without blocking the event loop: the
//! machinery shared by [`drm_syncobj`](crate::drm_syncobj) (timeline acquire points) and
//! [`explicit_sync`](crate::explicit_sync) (sync_file acquire fences).
//!
//! # How
//!
//! 1. A protocol's pre-commit hook decides that the pending commit carries a buffer with an
//!    acquire fence (and passes that protocol's validation), and calls `block_commit_with_action` with
//!    the fence as a fence_bridge [`Fence`].
//! 2. [`FenceSource::new`] asks the fence once (one ioctl for a kernel fence). Already
//!    signalled means `Ready`: no blocker, no eventfd or poll fd, no loop source; the commit
//!    applies at once ([`AcquireStats::already_signaled`]).
//! 3. Otherwise a Smithay [`Barrier`] is added as the commit's blocker and the source goes into
//!    the loop. When the fence signals, the callback releases the barrier and calls
//!    `CompositorClientState::blocker_cleared`, which applies the commit.
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

use std::time::{Duration, Instant};

use fence_bridge::{Fence, FenceEvent, FenceSource, FenceStatus, WaitMode};
use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{DisplayHandle, Resource, Weak};
use smithay::wayland::compositor::{add_blocker, Barrier, CompositorHandler};

use crate::implicit_sync::{disconnect_stuck_client, TimeoutAction};

/// How long a commit waits for its acquire point or fence before it is reported.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How acquire points (or fences) were waited for, since the state was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
/// disconnects the client.
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
) where
    D: CompositorHandler + 'static,
{
    let source = match FenceSource::new([((), fence.clone())], WaitMode::Any) {
        Ok(source) => source,
        Err(_ready) => {
            if let Some(stats) = stats(state) {
                stats.already_signaled += 1;
            }
            return;
        }
    };
    if let Some(stats) = stats(state) {
        stats.blocked += 1;
    }
    let barrier = Barrier::new(false);
    add_blocker(surface, barrier.clone());
    let wait = Wait {
        barrier: barrier.clone(),
        surface: surface.downgrade(),
        dh: dh.clone(),
        what,
        since: Instant::now(),
        reported: false,
        stats,
        action,
    };
    if !insert(
        loop_handle,
        source.with_timeout(timeout),
        fence,
        timeout,
        wait,
    ) {
        // Still inside the commit: released now, the commit applies as if nothing waited.
        barrier.signal();
    }
}

/// One blocked commit.
struct Wait<D> {
    barrier: Barrier,
    surface: Weak<WlSurface>,
    dh: DisplayHandle,
    what: What,
    since: Instant,
    reported: bool,
    stats: StatsOf<D>,
    action: TimeoutAction,
}

fn insert<D>(
    loop_handle: &LoopHandle<'static, D>,
    source: FenceSource<()>,
    fence: Fence,
    timeout: Duration,
    wait: Wait<D>,
) -> bool
where
    D: CompositorHandler + 'static,
{
    let handle = loop_handle.clone();
    let kind = wait.what.kind;
    let mut wait = Some(wait);
    let inserted = loop_handle.insert_source(source, move |event, _, state: &mut D| {
        // One event per source: a signal or the timeout.
        let Some(w) = wait.take() else {
            return;
        };
        match event {
            FenceEvent::Signaled(signaled) => release(state, w, signaled.status),
            FenceEvent::AllSignaled(all) => {
                let status = all.first().map_or(FenceStatus::Signaled, |s| s.status);
                release(state, w, status)
            }
            FenceEvent::TimedOut { .. } => timed_out(state, &handle, fence.clone(), timeout, w),
        }
    });
    match inserted {
        Ok(_) => true,
        Err(err) => {
            // Without a source nothing would release the blocker and the surface would freeze:
            // the caller releases it. An fd limit or an epoll failure: a bug or an exhausted
            // process.
            tracing::error!(error = %err.error, kind,
                "cannot watch an acquire fence; applying the commit without waiting");
            false
        }
    }
}

/// The fence signalled: let the commit (and those queued behind it) apply.
fn release<D>(state: &mut D, wait: Wait<D>, status: FenceStatus)
where
    D: CompositorHandler + 'static,
{
    wait.barrier.signal();
    if let Some(stats) = (wait.stats)(state) {
        stats.released += 1;
    }
    if let FenceStatus::Error(error) = status {
        tracing::debug!(
            ?error,
            kind = wait.what.kind,
            point = wait.what.point,
            "acquire fence signalled with an error"
        );
    }
    let Ok(surface) = wait.surface.upgrade() else {
        return; // Smithay cancels the transactions of a dead surface itself
    };
    if wait.reported {
        tracing::info!(surface = %surface.id(), kind = wait.what.kind, point = wait.what.point,
            after = ?wait.since.elapsed(), "late acquire fence signalled; applying the commit");
    }
    let Some(client) = surface.client() else {
        return;
    };
    state
        .client_compositor_state(&client)
        .blocker_cleared(state, &wait.dh);
}

/// The timeout elapsed: report once, give up if the surface is gone, else keep waiting.
fn timed_out<D>(
    state: &mut D,
    loop_handle: &LoopHandle<'static, D>,
    fence: Fence,
    timeout: Duration,
    mut wait: Wait<D>,
) where
    D: CompositorHandler + 'static,
{
    let alive = wait.surface.upgrade().ok().and_then(|surface| {
        let client = surface.client()?;
        Some((surface, client))
    });
    let Some((surface, client)) = alive else {
        if let Some(stats) = (wait.stats)(state) {
            stats.abandoned += 1;
        }
        return; // the source is removed: its fd closes
    };
    if !wait.reported {
        wait.reported = true;
        if let Some(stats) = (wait.stats)(state) {
            stats.timed_out += 1;
        }
        if wait.action == TimeoutAction::Disconnect {
            let what = format!("{} {}", wait.what.kind, wait.what.point);
            disconnect_stuck_client(&wait.dh, &client, &surface, wait.since.elapsed(), &what);
            return; // the source is removed: its fd closes; the client's commits go with it
        }
        let pid = client.get_credentials(&wait.dh).map(|c| c.pid).ok();
        tracing::warn!(
            client = ?client.id(),
            pid,
            surface = %surface.id(),
            kind = wait.what.kind,
            point = wait.what.point,
            waited = ?wait.since.elapsed(),
            "acquire fence has not signalled: the surface keeps its last content until it does"
        );
    }
    match FenceSource::new([((), fence.clone())], WaitMode::Any) {
        Err(_ready) => release(state, wait, FenceStatus::Signaled),
        Ok(source) => {
            let fallback = Wait {
                barrier: wait.barrier.clone(),
                surface: wait.surface.clone(),
                dh: wait.dh.clone(),
                ..wait
            };
            if !insert(
                loop_handle,
                source.with_timeout(timeout),
                fence,
                timeout,
                wait,
            ) {
                release(state, fallback, FenceStatus::Signaled);
            }
        }
    }
}
