//! "The one extension object of this `wl_surface`": the per-surface link both explicit-sync
//! protocols keep (`wp_linux_drm_syncobj_surface_v1`, `zwp_linux_surface_synchronization_v1`).
//!
//! Each protocol allows at most one live extension object per `wl_surface` (a second one is its
//! `*_exists` error), installs its surface hooks once per `wl_surface` at the first request that
//! creates one (kept after the object is destroyed: they also record buffer changes), and lets
//! its commit hook find the live object to raise commit errors on.

use std::cell::RefCell;

use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Resource;
use smithay::wayland::compositor::{with_states, SurfaceData};

/// Per-wl_surface bookkeeping in its data map: the live extension object of type `R`, if any.
/// Present from the first claim on; its presence means the hooks are installed.
struct SurfaceLink<R> {
    object: RefCell<Option<R>>,
}

impl<R> Default for SurfaceLink<R> {
    fn default() -> Self {
        SurfaceLink {
            object: RefCell::new(None),
        }
    }
}

/// The surface already has a live extension object of this type (the protocol's `*_exists`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlreadyLinked;

/// Checks that `surface` has no live extension object of type `R`, and at the first claim on
/// this `wl_surface` calls `install_hooks` (outside the surface lock, as hooks need it). The
/// new object is then recorded with [`link`].
pub(crate) fn claim<R: Resource + 'static>(
    surface: &WlSurface,
    install_hooks: impl FnOnce(&WlSurface),
) -> Result<(), AlreadyLinked> {
    let (exists, first_time) = with_states(surface, |states| {
        let first_time = states.data_map.insert_if_missing(SurfaceLink::<R>::default);
        let link = states
            .data_map
            .get::<SurfaceLink<R>>()
            .expect("just inserted");
        let exists = link.object.borrow().is_some();
        (exists, first_time)
    });
    if exists {
        return Err(AlreadyLinked);
    }
    if first_time {
        install_hooks(surface);
    }
    Ok(())
}

/// Records `object` as the live extension object of `surface` (after [`claim`]).
pub(crate) fn link<R: Resource + 'static>(surface: &WlSurface, object: R) {
    with_states(surface, |states| {
        let link = states
            .data_map
            .get::<SurfaceLink<R>>()
            .expect("claimed before");
        *link.object.borrow_mut() = Some(object);
    });
}

/// Forgets the live extension object (at its `destroy`).
pub(crate) fn unlink<R: Resource + 'static>(states: &SurfaceData) {
    if let Some(link) = states.data_map.get::<SurfaceLink<R>>() {
        *link.object.borrow_mut() = None;
    }
}

/// The live extension object, if any.
pub(crate) fn linked<R: Resource + Clone + 'static>(states: &SurfaceData) -> Option<R> {
    states
        .data_map
        .get::<SurfaceLink<R>>()
        .and_then(|link| link.object.borrow().clone())
}
