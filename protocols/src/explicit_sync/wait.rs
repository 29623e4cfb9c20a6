//! Holding a commit until its acquire fence signals, without blocking the event loop: the
//! zwp_linux_explicit_synchronization_v1 side of [`crate::acquire_wait`].
//!
//! An acquire fence is a sync_file. `set_acquire_fence` already asks it once
//! (`SYNC_IOC_FILE_INFO`, which both checks the fd and reports its status); a fence that had
//! signalled then is not asked again: the commit costs nothing more (counted in
//! [`AcquireStats::already_signaled`]). A fence still pending is handed to the shared wait: one
//! more `poll()` at commit time, then, if still pending, a blocker and a poll fd in the loop
//! until it signals, with the timeout report of the shared module.
//!
//! The hook also hands every buffer commit to the buffer-reuse tracking
//! ([`ExplicitSyncState::buffer_reuse_stats`]): a commit with an acquire fence that reuses a
//! buffer whose previous commit asked for a release has its write judged when the fence is seen
//! signalled (when set, or when the blocker fires) against that release.
//!
//! [`ExplicitSyncState::buffer_reuse_stats`]: super::ExplicitSyncState::buffer_reuse_stats

use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::DisplayHandle;
use smithay::wayland::compositor::{add_pre_commit_hook, with_states, CompositorHandler};

use crate::acquire_wait::{block_commit_with_action, What};

use crate::attachment::pending_buffer;

use super::dispatch::pending_commit;
use super::validation::{validate_commit, Verdict};
use super::{AcquireStats, BufferRelease, ExplicitSyncCachedState, ExplicitSyncHandler};

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
/// an unsignalled one; hands a commit that reuses a buffer to the buffer-reuse tracking.
fn add_acquire_blocker<D>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    loop_handle: &LoopHandle<'static, D>,
) where
    D: ExplicitSyncHandler + CompositorHandler + 'static,
{
    let commit = with_states(surface, |states| {
        if !states.cached_state.has::<ExplicitSyncCachedState>() {
            return None; // never used the extension
        }
        let (attachment, fence, release) = pending_commit(states);
        let verdict = validate_commit(attachment, fence, release);
        if !matches!(verdict, Ok(Verdict::Buffer { .. })) {
            return None;
        }
        let (acquire, this_use) = {
            let mut cached = states.cached_state.get::<ExplicitSyncCachedState>();
            let pending = cached.pending();
            let this_use = pending.release.as_ref().and_then(BufferRelease::buffer_use);
            (pending.acquire.clone(), this_use)
        };
        Some((acquire, pending_buffer(states), this_use))
    });
    let Some((acquire, buffer, this_use)) = commit else {
        return;
    };
    let Some(sync_state) = state.explicit_sync_state() else {
        return;
    };
    // Every buffer commit, so that one without a fence or release ends what a later commit of
    // the buffer is judged against; only those with an acquire fence are judged.
    let reuse = buffer.and_then(|buffer| {
        sync_state.buffer_reuse.committed(
            "zwp_linux_explicit_synchronization_v1",
            surface,
            &buffer,
            acquire.as_ref().map(|a| &a.fence),
            this_use,
        )
    });
    let Some(acquire) = acquire else {
        return;
    };
    if let Some(signaled_at) = acquire.signaled_at {
        sync_state.stats.already_signaled += 1;
        if let Some(reuse) = reuse {
            reuse.acquired(signaled_at);
        }
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
        reuse,
    );
}

fn stats<D: ExplicitSyncHandler>(state: &mut D) -> Option<&mut AcquireStats> {
    state.explicit_sync_state().map(|s| &mut s.stats)
}
