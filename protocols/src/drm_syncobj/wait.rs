//! Holding a commit until its acquire point signals, without blocking the event loop.
//!
//! # How
//!
//! 1. [`wait_for_acquire_points`] adds a pre-commit hook to a surface (call it from
//!    `CompositorHandler::new_surface`).
//! 2. On each commit the hook looks at the pending state. Only a commit that passes validation
//!    and carries a buffer with an acquire point is considered (the validation hook may run
//!    after this one; a commit it rejects is never waited for).
//! 3. The acquire point becomes a fence_bridge [`Fence`](fence_bridge::Fence) and goes to the
//!    wait machinery shared with zwp_linux_explicit_synchronization_v1
//!    ([`crate::acquire_wait`]). A commit that reuses a buffer is also handed to the
//!    buffer-reuse tracking ([`DrmSyncobjState::buffer_reuse_stats`]), which judges its write
//!    when the point is seen signalled. Already signalled — one `DRM_IOCTL_SYNCOBJ_QUERY` — means no
//!    blocker, no eventfd, no loop source; the commit applies at once.
//! 4. Otherwise a Smithay [`Barrier`](smithay::wayland::compositor::Barrier) is added as the
//!    commit's blocker and the source (one syncobj eventfd) goes into the loop. When the point
//!    signals, the callback releases the barrier and calls
//!    `CompositorClientState::blocker_cleared`, which applies the commit.
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
//! [`DrmSyncobjState::buffer_reuse_stats`]: super::DrmSyncobjState::buffer_reuse_stats

use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::DisplayHandle;
use smithay::wayland::compositor::{add_pre_commit_hook, with_states, CompositorHandler};

pub use crate::acquire_wait::DEFAULT_ACQUIRE_TIMEOUT;
use crate::acquire_wait::{block_commit_with_action, What};

use crate::attachment::pending_buffer;

use super::dispatch::{pending_commit, point_key};
use super::validation::{validate_commit, Verdict};
use super::{AcquireStats, DrmSyncobjCachedState, DrmSyncobjHandler, ReleasePoint};

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
    let commit = with_states(surface, |states| {
        if !states.cached_state.has::<DrmSyncobjCachedState>() {
            return None; // never used the extension
        }
        let (attachment, acquire, release) = pending_commit(states);
        let verdict = validate_commit(
            attachment,
            acquire.as_ref().map(point_key),
            release.as_ref().map(point_key),
        );
        if verdict != Ok(Verdict::Synced) {
            return None;
        }
        let this_use = states
            .cached_state
            .get::<DrmSyncobjCachedState>()
            .pending()
            .release_point
            .as_ref()
            .and_then(ReleasePoint::buffer_use);
        Some((acquire?, pending_buffer(states), this_use))
    });
    let Some((acquire, buffer, this_use)) = commit else {
        return;
    };
    let Some(syncobj_state) = state.drm_syncobj_state() else {
        return;
    };
    let fence = acquire.fence();
    let reuse = buffer.and_then(|buffer| {
        syncobj_state.buffer_reuse.committed(
            "linux-drm-syncobj-v1",
            surface,
            &buffer,
            Some(&fence),
            this_use,
        )
    });
    let timeout = (syncobj_state.acquire_timeout, syncobj_state.timeout_action);
    let what = What {
        kind: "acquire point",
        point: acquire.point(),
    };
    block_commit_with_action(
        state,
        dh,
        surface,
        loop_handle,
        fence,
        timeout,
        what,
        stats::<D>,
        reuse,
    );
}

fn stats<D: DrmSyncobjHandler>(state: &mut D) -> Option<&mut AcquireStats> {
    state.drm_syncobj_state().map(|s| &mut s.stats)
}
