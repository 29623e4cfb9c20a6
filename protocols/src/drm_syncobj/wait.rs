//! Holding a commit until its acquire point signals, without blocking the event loop.
//!
//! # How
//!
//! 1. [`wait_for_acquire_points`] adds a pre-commit hook to a surface (call it from
//!    `CompositorHandler::new_surface`).
//! 2. On each commit the hook looks at the pending state. Only a commit that passes validation
//!    and carries a buffer with an acquire point is considered (the validation hook may run
//!    after this one; a commit it rejects is never waited for).
//! 3. The acquire point becomes a fence_bridge [`Fence`] and a [`FenceSource`]. Already
//!    signalled — one `DRM_IOCTL_SYNCOBJ_QUERY` — means `FenceSource::new` returns `Ready`:
//!    no blocker, no eventfd, no loop source; the commit applies at once.
//! 4. Otherwise a Smithay [`Barrier`] is added as the commit's blocker and the source (one
//!    syncobj eventfd) goes into the loop. When the point signals, the callback releases the
//!    barrier and calls `CompositorClientState::blocker_cleared`, which applies the commit.
//!
//! Until then the surface shows its previous content. Smithay queues the transactions of a
//! client and applies those of one surface in commit order, so later commits of the surface wait
//! behind the blocked one (even if their own acquire points signal first); other surfaces are
//! not held.
//!
//! # Timeout
//!
//! A point that has not signalled after [`DrmSyncobjState::acquire_timeout`] (1 s by default) is
//! reported once: a warning naming the client (and its pid) and the surface, and
//! [`AcquireStats::timed_out`]. The commit keeps waiting — reading a buffer the client's GPU
//! may still be writing is never safe — and the surface keeps its last content. The source is
//! re-armed each period to notice a surface or client that went away; then the wait is given up
//! ([`AcquireStats::abandoned`]) and its eventfd closed.
//!
//! [`DrmSyncobjState::acquire_timeout`]: super::DrmSyncobjState::acquire_timeout

use std::time::{Duration, Instant};

use fence_bridge::{Fence, FenceEvent, FenceSource, FenceStatus, WaitMode};
use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{DisplayHandle, Resource, Weak};
use smithay::wayland::compositor::{
    add_blocker, add_pre_commit_hook, with_states, Barrier, CompositorHandler,
};

use super::dispatch::{pending_commit, point_key};
use super::validation::{validate_commit, Verdict};
use super::{AcquireStats, DrmSyncobjCachedState, DrmSyncobjHandler};

/// How long a commit waits for its acquire point before it is reported.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Holds every commit of `surface` that carries an unsignalled acquire point until the point
/// signals (see the [module docs](self)). Call it once per surface, from
/// `CompositorHandler::new_surface`; `loop_handle` fetches the event loop from the state (the
/// hook cannot capture it: hooks must be `Send`).
///
/// In `new_surface`: `wait_for_acquire_points::<State>(surface, |state| state.loop_handle.clone());`
pub fn wait_for_acquire_points<D>(
    surface: &WlSurface,
    loop_handle: fn(&D) -> LoopHandle<'static, D>,
) where
    D: DrmSyncobjHandler + CompositorHandler + 'static,
{
    add_pre_commit_hook::<D, _>(surface, move |state, dh, surface| {
        let handle = loop_handle(state);
        add_acquire_blocker(state, dh, surface, &handle);
    });
}

/// The body of the hook: blocks the pending commit of `surface` on its acquire point, if it
/// has an unsignalled one. For compositors that run their own pre-commit hook.
pub fn add_acquire_blocker<D>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    loop_handle: &LoopHandle<'static, D>,
) where
    D: DrmSyncobjHandler + CompositorHandler + 'static,
{
    let acquire = with_states(surface, |states| {
        if !states.cached_state.has::<DrmSyncobjCachedState>() {
            return None; // never used the extension
        }
        let (attachment, acquire, release) = pending_commit(states);
        let verdict = validate_commit(
            attachment,
            acquire.as_ref().map(point_key),
            release.as_ref().map(point_key),
        );
        (verdict == Ok(Verdict::Synced))
            .then_some(acquire)
            .flatten()
    });
    let Some(acquire) = acquire else {
        return;
    };
    let Some(syncobj_state) = state.drm_syncobj_state() else {
        return;
    };
    let timeout = syncobj_state.acquire_timeout;
    let fence = acquire.fence();
    let source = match FenceSource::new([((), fence.clone())], WaitMode::Any) {
        Ok(source) => source,
        Err(_ready) => {
            syncobj_state.stats.already_signaled += 1;
            return;
        }
    };
    syncobj_state.stats.blocked += 1;
    let barrier = Barrier::new(false);
    add_blocker(surface, barrier.clone());
    let wait = Wait {
        barrier: barrier.clone(),
        surface: surface.downgrade(),
        dh: dh.clone(),
        point: acquire.point(),
        since: Instant::now(),
        reported: false,
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
struct Wait {
    barrier: Barrier,
    surface: Weak<WlSurface>,
    dh: DisplayHandle,
    point: u64,
    since: Instant,
    reported: bool,
}

fn insert<D>(
    loop_handle: &LoopHandle<'static, D>,
    source: FenceSource<()>,
    fence: Fence,
    timeout: Duration,
    wait: Wait,
) -> bool
where
    D: DrmSyncobjHandler + CompositorHandler + 'static,
{
    let handle = loop_handle.clone();
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
            tracing::error!(error = %err.error,
                "cannot watch an acquire point; applying the commit without waiting");
            false
        }
    }
}

/// The point signalled: let the commit (and those queued behind it) apply.
fn release<D>(state: &mut D, wait: Wait, status: FenceStatus)
where
    D: DrmSyncobjHandler + CompositorHandler + 'static,
{
    wait.barrier.signal();
    if let Some(stats) = stats(state) {
        stats.released += 1;
    }
    if let FenceStatus::Error(error) = status {
        tracing::debug!(
            ?error,
            point = wait.point,
            "acquire point signalled with an error"
        );
    }
    let Ok(surface) = wait.surface.upgrade() else {
        return; // Smithay cancels the transactions of a dead surface itself
    };
    if wait.reported {
        tracing::info!(surface = %surface.id(), point = wait.point,
            after = ?wait.since.elapsed(), "late acquire point signalled; applying the commit");
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
    mut wait: Wait,
) where
    D: DrmSyncobjHandler + CompositorHandler + 'static,
{
    let alive = wait.surface.upgrade().ok().and_then(|surface| {
        let client = surface.client()?;
        Some((surface, client))
    });
    let Some((surface, client)) = alive else {
        if let Some(stats) = stats(state) {
            stats.abandoned += 1;
        }
        return; // the source is removed: its eventfd closes
    };
    if !wait.reported {
        wait.reported = true;
        if let Some(stats) = stats(state) {
            stats.timed_out += 1;
        }
        let pid = client.get_credentials(&wait.dh).map(|c| c.pid).ok();
        tracing::warn!(
            client = ?client.id(),
            pid,
            surface = %surface.id(),
            point = wait.point,
            waited = ?wait.since.elapsed(),
            "acquire point has not signalled: the surface keeps its last content until it does"
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

fn stats<D: DrmSyncobjHandler>(state: &mut D) -> Option<&mut AcquireStats> {
    state.drm_syncobj_state().map(|s| &mut s.stats)
}
