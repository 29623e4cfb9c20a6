//! Requests of linux-drm-syncobj-v1 and the surface hooks that check commits.

use std::os::fd::AsFd;
use std::sync::Arc;

use fence_bridge::{Syncobj, SyncobjPoint};
use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::{
    wp_linux_drm_syncobj_manager_v1::{self, WpLinuxDrmSyncobjManagerV1},
    wp_linux_drm_syncobj_surface_v1::{self, WpLinuxDrmSyncobjSurfaceV1},
    wp_linux_drm_syncobj_timeline_v1::{self, WpLinuxDrmSyncobjTimelineV1},
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

use super::validation::{error_message, validate_commit, Attachment, PointKey, TimelineKey};
use super::{
    DrmSyncobjCachedState, DrmSyncobjGlobalData, DrmSyncobjHandler, DrmSyncobjState,
    DrmSyncobjSurfaceData, DrmSyncobjTimelineData, ReleaseCounters, ReleasePoint,
};

impl<D> GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData, D> for DrmSyncobjState
where
    D: Dispatch<WpLinuxDrmSyncobjManagerV1, ()> + 'static,
    D: DrmSyncobjHandler + 'static,
{
    fn bind(
        state: &mut D,
        _dh: &DisplayHandle,
        _client: &Client,
        resource: New<WpLinuxDrmSyncobjManagerV1>,
        _global_data: &DrmSyncobjGlobalData,
        data_init: &mut DataInit<'_, D>,
    ) {
        if let Some(syncobj_state) = state.drm_syncobj_state() {
            syncobj_state.binds += 1;
        }
        data_init.init(resource, ());
    }

    fn can_view(client: Client, global_data: &DrmSyncobjGlobalData) -> bool {
        (global_data.filter)(&client)
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjManagerV1, (), D> for DrmSyncobjState
where
    D: Dispatch<WpLinuxDrmSyncobjSurfaceV1, DrmSyncobjSurfaceData>
        + Dispatch<WpLinuxDrmSyncobjTimelineV1, DrmSyncobjTimelineData>
        + DrmSyncobjHandler
        + 'static,
{
    fn request(
        state: &mut D,
        _client: &Client,
        manager: &WpLinuxDrmSyncobjManagerV1,
        request: wp_linux_drm_syncobj_manager_v1::Request,
        _data: &(),
        _dh: &DisplayHandle,
        data_init: &mut DataInit<'_, D>,
    ) {
        use wp_linux_drm_syncobj_manager_v1::{Error, Request};
        match request {
            Request::GetSurface { id, surface } => {
                let claimed =
                    surface_link::claim::<WpLinuxDrmSyncobjSurfaceV1>(&surface, |surface| {
                        // Once per wl_surface, kept after the syncobj surface is destroyed: the
                        // hook also records buffer changes, which decide when a committed release
                        // point is due even for commits made without the extension.
                        add_pre_commit_hook::<D, _>(surface, commit_hook::<D>);
                        add_destruction_hook::<D, _>(surface, destruction_hook::<D>);
                    });
                if claimed.is_err() {
                    manager.post_error(
                        Error::SurfaceExists,
                        format!(
                            "{} already has a wp_linux_drm_syncobj_surface_v1",
                            surface.id()
                        ),
                    );
                    return;
                }
                let object = data_init.init(
                    id,
                    DrmSyncobjSurfaceData {
                        surface: surface.downgrade(),
                    },
                );
                surface_link::link(&surface, object);
            }
            Request::ImportTimeline { id, fd } => {
                let Some(syncobj_state) = state.drm_syncobj_state() else {
                    manager.post_error(
                        Error::InvalidTimeline,
                        "explicit sync is unavailable: the compositor has no import device",
                    );
                    return;
                };
                match Syncobj::import(&syncobj_state.import_device, fd.as_fd()) {
                    Ok(syncobj) => {
                        data_init.init(id, DrmSyncobjTimelineData { syncobj });
                    }
                    Err(err) => manager.post_error(
                        Error::InvalidTimeline,
                        format!("the fd is not an importable DRM syncobj: {err}"),
                    ),
                }
            }
            Request::Destroy => {}
            _ => unreachable!("wp_linux_drm_syncobj_manager_v1 has three requests"),
        }
    }
}

impl<D> Dispatch<WpLinuxDrmSyncobjSurfaceV1, DrmSyncobjSurfaceData, D> for DrmSyncobjState
where
    D: DrmSyncobjHandler + 'static,
{
    fn request(
        state: &mut D,
        _client: &Client,
        object: &WpLinuxDrmSyncobjSurfaceV1,
        request: wp_linux_drm_syncobj_surface_v1::Request,
        data: &DrmSyncobjSurfaceData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        use wp_linux_drm_syncobj_surface_v1::Request;
        match request {
            Request::Destroy => {
                let Some(surface) = data.surface() else {
                    return;
                };
                with_states(&surface, |states| {
                    surface_link::unlink::<WpLinuxDrmSyncobjSurfaceV1>(states);
                    // "Any timeline point set by this object since the last commit may be
                    // discarded": the pending release point is dropped, so signalled.
                    let mut cached = states.cached_state.get::<DrmSyncobjCachedState>();
                    cached.pending().acquire_point = None;
                    cached.pending().release_point = None;
                });
            }
            Request::SetAcquirePoint {
                timeline,
                point_hi,
                point_lo,
            } => set_point(object, data, &timeline, point_hi, point_lo, Which::Acquire),
            Request::SetReleasePoint {
                timeline,
                point_hi,
                point_lo,
            } => {
                let counters = state
                    .drm_syncobj_state()
                    .map(|state| state.release_counters().clone());
                set_point(
                    object,
                    data,
                    &timeline,
                    point_hi,
                    point_lo,
                    Which::Release(counters),
                )
            }
            _ => unreachable!("wp_linux_drm_syncobj_surface_v1 has three requests"),
        }
    }
}

enum Which {
    Acquire,
    /// With the counters the point counts into, where the global has them.
    Release(Option<Arc<ReleaseCounters>>),
}

/// `set_acquire_point` / `set_release_point`: double-buffered, a second call replaces the first.
fn set_point(
    object: &WpLinuxDrmSyncobjSurfaceV1,
    data: &DrmSyncobjSurfaceData,
    timeline: &WpLinuxDrmSyncobjTimelineV1,
    point_hi: u32,
    point_lo: u32,
    which: Which,
) {
    use wp_linux_drm_syncobj_surface_v1::Error;
    let Some(surface) = data.surface() else {
        let what = match which {
            Which::Acquire => "set_acquire_point",
            Which::Release(_) => "set_release_point",
        };
        object.post_error(
            Error::NoSurface,
            format!("{what} on {}, whose wl_surface was destroyed", object.id()),
        );
        return;
    };
    let Some(timeline) = timeline.data::<DrmSyncobjTimelineData>() else {
        // Only objects created by our import_timeline have this interface on this client.
        return;
    };
    let point = SyncobjPoint::new(
        timeline.syncobj.clone(),
        (u64::from(point_hi) << 32) | u64::from(point_lo),
    );
    let release = match which {
        Which::Acquire => None,
        Which::Release(counters) => {
            let release = match counters {
                Some(counters) => ReleasePoint::counted(point.clone(), counters),
                None => ReleasePoint::new(point.clone()),
            };
            // Listed on the surface before its data is locked below (the lock is not reentrant).
            release.due_with(&surface);
            Some(release)
        }
    };
    let replaced = with_states(&surface, |states| {
        let mut cached = states.cached_state.get::<DrmSyncobjCachedState>();
        match release {
            None => {
                cached.pending().acquire_point = Some(point);
                None
            }
            Some(release) => cached.pending().release_point.replace(release),
        }
    });
    // A release point replaced before its commit is signalled now, outside the surface's lock.
    drop(replaced);
}

impl<D> Dispatch<WpLinuxDrmSyncobjTimelineV1, DrmSyncobjTimelineData, D> for DrmSyncobjState
where
    D: DrmSyncobjHandler + 'static,
{
    fn request(
        _state: &mut D,
        _client: &Client,
        _object: &WpLinuxDrmSyncobjTimelineV1,
        request: wp_linux_drm_syncobj_timeline_v1::Request,
        _data: &DrmSyncobjTimelineData,
        _dh: &DisplayHandle,
        _data_init: &mut DataInit<'_, D>,
    ) {
        match request {
            // Points already set keep their own reference to the syncobj.
            wp_linux_drm_syncobj_timeline_v1::Request::Destroy => {}
            _ => unreachable!("wp_linux_drm_syncobj_timeline_v1 has one request"),
        }
    }
}

/// The validation key of a point: its timeline object (one fence context per import) and value.
pub(super) fn point_key(point: &SyncobjPoint) -> PointKey {
    PointKey {
        timeline: TimelineKey(point.syncobj().context().as_u64()),
        point: point.point(),
    }
}

/// What the pending commit carries, for [`validate_commit`]. Takes the locks of
/// `SurfaceAttributes` and `DrmSyncobjCachedState` in turn, never both at once.
pub(super) fn pending_commit(
    states: &SurfaceData,
) -> (Attachment, Option<SyncobjPoint>, Option<SyncobjPoint>) {
    let attachment = pending_attachment(states);
    let mut cached = states.cached_state.get::<DrmSyncobjCachedState>();
    let pending = cached.pending();
    (
        attachment,
        pending.acquire_point.clone(),
        pending.release_point.as_ref().and_then(ReleasePoint::point),
    )
}

/// Pre-commit hook, installed at the first `get_surface` of a wl_surface and kept for its life:
/// records whether the commit replaces the buffer and, while a syncobj surface object exists,
/// raises the commit errors of the protocol on it.
fn commit_hook<D: DrmSyncobjHandler + 'static>(
    _state: &mut D,
    _dh: &DisplayHandle,
    surface: &WlSurface,
) {
    with_states(surface, |states| {
        let (attachment, acquire, release) = pending_commit(states);
        states
            .cached_state
            .get::<DrmSyncobjCachedState>()
            .pending()
            .replaces_buffer = attachment.replaces_buffer();

        let Some(object) = surface_link::linked::<WpLinuxDrmSyncobjSurfaceV1>(states) else {
            return;
        };
        let keys = (
            acquire.as_ref().map(point_key),
            release.as_ref().map(point_key),
        );
        if let Err(error) = validate_commit(attachment, keys.0, keys.1) {
            tracing::debug!(surface = %surface.id(), %error, "linux-drm-syncobj-v1 commit error");
            object.post_error(error.code(), error_message(error, keys.0, keys.1));
        }
    });
}

/// Destruction hook: every release point of the surface is due now, pending, current or in a
/// commit still queued behind a blocker (see `crate::owed`); its acquire points are dropped.
fn destruction_hook<D: DrmSyncobjHandler + 'static>(_state: &mut D, surface: &WlSurface) {
    crate::owed::settle_all_on::<super::release::Debt>(surface);
    with_states(surface, |states| {
        let mut cached = states.cached_state.get::<DrmSyncobjCachedState>();
        cached.pending().acquire_point = None;
        cached.current().acquire_point = None;
    });
}
