//! Requests of zwp_linux_explicit_synchronization_v1 and the surface hooks that check commits.

use fence_bridge::{Ktime, SyncFile};
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::{
    zwp_linux_buffer_release_v1::{self, ZwpLinuxBufferReleaseV1},
    zwp_linux_explicit_synchronization_v1::{self, ZwpLinuxExplicitSynchronizationV1},
    zwp_linux_surface_synchronization_v1::{self, ZwpLinuxSurfaceSynchronizationV1},
};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{
    Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource,
};
use smithay::wayland::compositor::{
    add_destruction_hook, add_pre_commit_hook, with_states, SurfaceData,
};

use crate::attachment::pending_attachment;
use crate::surface_link;

use super::validation::{
    validate_commit, validate_get_release, validate_set_acquire_fence, Attachment, RequestError,
};
use super::{
    AcquireFence, BufferRelease, BufferReleaseData, ExplicitSyncCachedState,
    ExplicitSyncGlobalData, ExplicitSyncHandler, ExplicitSyncState, SurfaceSyncData,
};

impl<D> GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData, D>
    for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxExplicitSynchronizationV1, ()> + 'static,
    D: ExplicitSyncHandler + 'static,
{
    fn bind(
        state: &mut D,
        _dh: &DisplayHandle,
        _client: &Client,
        resource: New<ZwpLinuxExplicitSynchronizationV1>,
        _global_data: &ExplicitSyncGlobalData,
        data_init: &mut DataInit<'_, D>,
    ) {
        if let Some(sync_state) = state.explicit_sync_state() {
            sync_state.binds += 1;
        }
        data_init.init(resource, ());
    }

    fn can_view(client: Client, global_data: &ExplicitSyncGlobalData) -> bool {
        (global_data.filter)(&client)
    }
}

impl<D> Dispatch<ZwpLinuxExplicitSynchronizationV1, (), D> for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxSurfaceSynchronizationV1, SurfaceSyncData>
        + Dispatch<ZwpLinuxBufferReleaseV1, BufferReleaseData>
        + ExplicitSyncHandler
        + 'static,
{
    fn request(
        _state: &mut D,
        _client: &Client,
        manager: &ZwpLinuxExplicitSynchronizationV1,
        request: zwp_linux_explicit_synchronization_v1::Request,
        _data: &(),
        _dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        use zwp_linux_explicit_synchronization_v1::{Error, Request};
        match request {
            Request::GetSynchronization { id, surface } => {
                let claimed =
                    surface_link::claim::<ZwpLinuxSurfaceSynchronizationV1>(&surface, |surface| {
                        // Once per wl_surface, kept after the synchronization object is destroyed:
                        // the hook also records buffer changes, which decide when a committed
                        // release is due even for commits made without the extension.
                        add_pre_commit_hook::<D, _>(surface, commit_hook::<D>);
                        add_destruction_hook::<D, _>(surface, destruction_hook::<D>);
                    });
                if claimed.is_err() {
                    manager.post_error(
                        Error::SynchronizationExists,
                        format!(
                            "{} already has a zwp_linux_surface_synchronization_v1",
                            surface.id()
                        ),
                    );
                    return;
                }
                let object = data_init.init(
                    id,
                    SurfaceSyncData {
                        surface: surface.downgrade(),
                    },
                );
                surface_link::link(&surface, object);
            }
            Request::Destroy => {}
            _ => unreachable!("zwp_linux_explicit_synchronization_v1 has two requests"),
        }
    }
}

impl<D> Dispatch<ZwpLinuxSurfaceSynchronizationV1, SurfaceSyncData, D> for ExplicitSyncState
where
    D: Dispatch<ZwpLinuxBufferReleaseV1, BufferReleaseData> + ExplicitSyncHandler + 'static,
{
    fn request(
        state: &mut D,
        _client: &Client,
        object: &ZwpLinuxSurfaceSynchronizationV1,
        request: zwp_linux_surface_synchronization_v1::Request,
        data: &SurfaceSyncData,
        _dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        use zwp_linux_surface_synchronization_v1::Request;
        let surface = data.surface();
        match request {
            Request::Destroy => {
                let Some(surface) = surface else {
                    return;
                };
                let discarded = with_states(&surface, |states| {
                    surface_link::unlink::<ZwpLinuxSurfaceSynchronizationV1>(states);
                    // "Any fence set by this object with set_acquire_fence since the last commit
                    // will be discarded"; a pending release gets immediate_release (as Weston).
                    let mut cached = states.cached_state.get::<ExplicitSyncCachedState>();
                    cached.pending().acquire = None;
                    cached.pending().release.take()
                });
                drop(discarded);
            }
            Request::SetAcquireFence { fd } => {
                let fence_pending = surface.as_ref().is_some_and(|surface| {
                    with_states(surface, |states| {
                        states
                            .cached_state
                            .get::<ExplicitSyncCachedState>()
                            .pending()
                            .acquire
                            .is_some()
                    })
                });
                let sync_file = SyncFile::from_fd(fd);
                let mut info = None;
                let checked = validate_set_acquire_fence(surface.is_some(), fence_pending, || {
                    // One SYNC_IOC_FILE_INFO: is it a sync_file, has it signalled, and when?
                    info = sync_file.info().ok();
                    info.is_some()
                });
                if let Err(error) = checked {
                    post_request_error(object, error, "set_acquire_fence");
                    return;
                }
                let (Some(surface), Some(info)) = (surface, info) else {
                    unreachable!("validated above");
                };
                let acquire = AcquireFence {
                    fence: sync_file.into_fence(),
                    signaled_at: info
                        .status
                        .is_signaled()
                        .then(|| crate::buffer_reuse::acquired_at(&info, Ktime::now())),
                };
                with_states(&surface, |states| {
                    states
                        .cached_state
                        .get::<ExplicitSyncCachedState>()
                        .pending()
                        .acquire = Some(acquire);
                });
            }
            Request::GetRelease { release } => {
                let release_pending = surface.as_ref().is_some_and(|surface| {
                    with_states(surface, |states| {
                        states
                            .cached_state
                            .get::<ExplicitSyncCachedState>()
                            .pending()
                            .release
                            .is_some()
                    })
                });
                // The new_id must be initialised whatever happens next.
                let release = data_init.init(release, BufferReleaseData::default());
                if let Err(error) = validate_get_release(surface.is_some(), release_pending) {
                    post_request_error(object, error, "get_release");
                    return;
                }
                let surface = surface.expect("validated above");
                let owed = match state.explicit_sync_state() {
                    Some(sync_state) => sync_state.take_on(release),
                    // No state, no global: only reachable while the compositor tears it down.
                    None => BufferRelease::new(release, Default::default()),
                };
                owed.due_with(&surface);
                with_states(&surface, |states| {
                    states
                        .cached_state
                        .get::<ExplicitSyncCachedState>()
                        .pending()
                        .release = Some(owed);
                });
            }
            _ => unreachable!("zwp_linux_surface_synchronization_v1 has three requests"),
        }
    }
}

fn post_request_error(object: &ZwpLinuxSurfaceSynchronizationV1, error: RequestError, what: &str) {
    let message = match error {
        RequestError::InvalidFence => format!("{what}: the fd is not a sync_file"),
        RequestError::DuplicateFence => {
            format!("{what}: an acquire fence is already set for this commit")
        }
        RequestError::DuplicateRelease => {
            format!("{what}: a release is already requested for this commit")
        }
        RequestError::NoSurface => {
            format!("{what} on {}, whose wl_surface was destroyed", object.id())
        }
    };
    object.post_error(error.code(), message);
}

impl<D> Dispatch<ZwpLinuxBufferReleaseV1, BufferReleaseData, D> for ExplicitSyncState
where
    D: ExplicitSyncHandler + 'static,
{
    fn request(
        _state: &mut D,
        _client: &Client,
        _object: &ZwpLinuxBufferReleaseV1,
        request: zwp_linux_buffer_release_v1::Request,
        _data: &BufferReleaseData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        // zwp_linux_buffer_release_v1 has no requests.
        let _ = request;
    }
}

/// What the pending commit carries, for [`validate_commit`]: (attachment, fence set, release
/// requested). Takes the locks of `SurfaceAttributes` and `ExplicitSyncCachedState` in turn,
/// never both at once.
pub(super) fn pending_commit(states: &SurfaceData) -> (Attachment, bool, bool) {
    let attachment = pending_attachment(states);
    let mut cached = states.cached_state.get::<ExplicitSyncCachedState>();
    let pending = cached.pending();
    (
        attachment,
        pending.acquire.is_some(),
        pending.release.is_some(),
    )
}

/// Pre-commit hook, installed at the first `get_synchronization` of a wl_surface and kept for
/// its life: records whether the commit replaces the buffer and, while a synchronization object
/// exists, raises the commit errors of the protocol on it.
fn commit_hook<D: ExplicitSyncHandler + 'static>(
    _state: &mut D,
    _dh: &DisplayHandle,
    surface: &WlSurface,
) {
    with_states(surface, |states| {
        let (attachment, fence, release) = pending_commit(states);
        states
            .cached_state
            .get::<ExplicitSyncCachedState>()
            .pending()
            .replaces_buffer = attachment.replaces_buffer();

        let object = surface_link::linked::<ZwpLinuxSurfaceSynchronizationV1>(states);
        let Some(object) = object else {
            return;
        };
        if let Err(error) = validate_commit(attachment, fence, release) {
            tracing::debug!(surface = %surface.id(), %error,
                "zwp_linux_explicit_synchronization_v1 commit error");
            object.post_error(error.code(), error.to_string());
        }
    });
}

/// Destruction hook: every release of the surface is due now, pending, current or in a commit
/// still queued behind a blocker (see `crate::owed`); its acquire fences are dropped.
fn destruction_hook<D: ExplicitSyncHandler + 'static>(_state: &mut D, surface: &WlSurface) {
    crate::owed::settle_all_on::<super::release::Debt>(surface);
    with_states(surface, |states| {
        let mut cached = states.cached_state.get::<ExplicitSyncCachedState>();
        cached.pending().acquire = None;
        cached.current().acquire = None;
    });
}
