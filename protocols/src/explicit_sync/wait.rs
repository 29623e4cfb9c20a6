//! Holding a commit until its acquire fence signals, without blocking the event loop: the
//! zwp_linux_explicit_synchronization_v1 side of [`crate::acquire_wait`].
//!
//! An acquire fence is a sync_file. `set_acquire_fence` already asks it once
//! (`SYNC_IOC_FILE_INFO`, which both checks the fd and reports its status); a fence that had
//! signalled then is not asked again: the commit costs nothing more (counted in
//! [`AcquireStats::already_signaled`]). A fence still pending is handed to the shared wait: one
//! more `poll()` at commit time, then, if still pending, a blocker and a poll fd in the loop
//! until it signals, with the timeout report of the shared module.

use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::DisplayHandle;
use smithay::wayland::compositor::{add_pre_commit_hook, with_states, CompositorHandler};

use crate::acquire_wait::{block_commit_with_action, What};

use super::dispatch::pending_commit;
use super::validation::{validate_commit, Verdict};
use super::{AcquireStats, ExplicitSyncCachedState, ExplicitSyncHandler};

/// Holds every commit of `surface` that carries an unsignalled acquire fence until the fence
/// signals. Call it once per surface, from `CompositorHandler::new_surface`; `loop_handle`
/// fetches the event loop from the state (the hook cannot capture it: hooks must be `Send`).
pub fn wait_for_acquire_fences<D>(
    surface: &WlSurface,
    loop_handle: fn(&D) -> LoopHandle<'static, D>,
) where
    D: ExplicitSyncHandler + CompositorHandler + 'static,
{
    add_pre_commit_hook::<D, _>(surface, move |state, dh, surface| {
        let handle = loop_handle(state);
        add_acquire_blocker(state, dh, surface, &handle);
    });
}

/// The body of the hook: blocks the pending commit of `surface` on its acquire fence, if it has
/// an unsignalled one.
fn add_acquire_blocker<D>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    loop_handle: &LoopHandle<'static, D>,
) where
    D: ExplicitSyncHandler + CompositorHandler + 'static,
{
    let acquire = with_states(surface, |states| {
        if !states.cached_state.has::<ExplicitSyncCachedState>() {
            return None; // never used the extension
        }
        let (attachment, fence, release) = pending_commit(states);
        let verdict = validate_commit(attachment, fence, release);
        if !matches!(verdict, Ok(Verdict::Buffer { fence: true, .. })) {
            return None;
        }
        states
            .cached_state
            .get::<ExplicitSyncCachedState>()
            .pending()
            .acquire
            .clone()
    });
    let Some(acquire) = acquire else {
        return;
    };
    let Some(sync_state) = state.explicit_sync_state() else {
        return;
    };
    if acquire.signaled_when_set {
        sync_state.stats.already_signaled += 1;
        return;
    }
    let timeout = (sync_state.acquire_timeout, sync_state.timeout_action);
    let what = What {
        kind: "acquire fence",
        point: acquire.fence.seqno(),
    };
    block_commit_with_action(
        state,
        dh,
        surface,
        loop_handle,
        acquire.fence,
        timeout,
        what,
        stats::<D>,
    );
}

fn stats<D: ExplicitSyncHandler>(state: &mut D) -> Option<&mut AcquireStats> {
    state.explicit_sync_state().map(|s| &mut s.stats)
}
