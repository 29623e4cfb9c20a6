//! linux-drm-syncobj-v1: explicit synchronization with DRM syncobj timelines, server side, for
//! Smithay 0.7 compositors.
//!
//! A client imports DRM syncobj timelines (`import_timeline`), extends a `wl_surface` with a
//! `wp_linux_drm_syncobj_surface_v1` (`get_surface`), and with every buffer it commits sets an
//! **acquire point** (the compositor must not read the buffer before it signals) and a
//! **release point** (the compositor signals it when it no longer needs the buffer).
//!
//! What this module does that Smithay 0.7's `wayland::drm_syncobj` does not:
//!
//! * **Capability check.** [`DrmSyncobjState::new`] refuses (and creates no global) unless the
//!   import device has timeline syncobjs *and* `DRM_IOCTL_SYNCOBJ_EVENTFD`
//!   ([`DrmDevice::supports_syncobj_timeline`]); Smithay only probes the eventfd ioctl.
//! * **Every protocol error**, including "both points *if and only if* a non-null buffer is
//!   attached in the same commit": a buffer committed without points is `no_acquire_point`
//!   (Smithay lets it through). The rules are a pure function, [`validation`], tested on the
//!   host.
//! * **Release exactly once.** A release point is a [`ReleasePoint`], a `#[must_use]` value
//!   whose `Drop` signals it: replaced by a newer buffer, surface destroyed, syncobj surface
//!   destroyed, client gone, shutdown — no path forgets one, none signals twice.
//! * **The waiting half, shipped.** [`wait_for_acquire_points`] is the one line every compositor
//!   otherwise re-types (anvil's ~55): a pre-commit hook that holds a commit until its acquire
//!   point signals. An already-signalled point costs one query ioctl — no eventfd, no loop
//!   source, no blocker. A point that does not signal within a timeout (1 s by default) is
//!   reported (a warning naming client and surface, [`AcquireStats::timed_out`]) while the surface
//!   keeps showing its last content; later commits of that surface queue behind it, in order.
//! * **Buffer reuse**, measured by that wait ([`DrmSyncobjState::buffer_reuse_stats`]): a buffer
//!   committed again is fine, even before its release point signalled (GPU work may wait for
//!   it); its new acquire point signalling before the release took effect (the point signalled,
//!   or the render fence imported into it signalled) means the client finished writing a buffer
//!   the compositor could still read. Only a weak handle of the acquire fence and, while it is
//!   pending, the frame's render fence are kept: no syncobj handle.
//!
//! # Decisions the protocol leaves open
//!
//! * `wl_surface.attach(NULL)` is not "a non-null buffer": it must come **without** points
//!   (else `no_buffer`). It detaches the current buffer, so the current release point is
//!   signalled when that commit is applied.
//! * A commit without any `attach` keeps the current buffer: points must be unset (else
//!   `no_buffer`), and the current release point stays owed.
//! * The acquire point is waited for only for commits that pass validation; a commit that
//!   raises an error is never waited for (the client is being disconnected anyway).
//! * A release point replaced by a second `set_release_point` before the commit, or discarded
//!   by `destroy` of the syncobj surface, is signalled at once: the compositor never reads a
//!   buffer for it, and a point nobody signals can hang the client.
//! * "Same timeline" (`conflicting_points`) means the same timeline *object*, as in wlroots and
//!   Smithay.
//! * The release point is due when the buffer is replaced or detached (or the surface dies).
//!   It is then signalled after the render fence of the last frame that sampled the buffer, if
//!   the renderer recorded one on the surface's current point ([`ReleasePoint::sampled_by`]),
//!   else from the CPU at once.
//! * `wl_buffer.release` is undefined under this protocol; Smithay still sends it, which is
//!   allowed.
//!
//! # Wiring it in
//!
//! ```no_run
//! # use fencegate_protocols::drm_syncobj::*;
//! # use smithay::reexports::calloop::LoopHandle;
//! # use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
//! # struct State { loop_handle: LoopHandle<'static, State>, syncobj: Option<DrmSyncobjState> }
//! # impl smithay::wayland::compositor::CompositorHandler for State {
//! #   fn compositor_state(&mut self) -> &mut smithay::wayland::compositor::CompositorState { todo!() }
//! #   fn client_compositor_state<'a>(&self, _: &'a smithay::reexports::wayland_server::Client) -> &'a smithay::wayland::compositor::CompositorClientState { todo!() }
//! #   fn commit(&mut self, _: &WlSurface) {}
//! # }
//! # let display = smithay::reexports::wayland_server::Display::<State>::new().unwrap();
//! impl DrmSyncobjHandler for State {
//!     fn drm_syncobj_state(&mut self) -> Option<&mut DrmSyncobjState> {
//!         self.syncobj.as_mut()
//!     }
//! }
//! fencegate_protocols::delegate_fencegate_drm_syncobj!(State);
//!
//! // At startup: only where the device has timeline syncobjs (else Err, and no global).
//! let device = fence_bridge::DrmDevice::open("/dev/dri/renderD128")?;
//! let syncobj = DrmSyncobjState::new::<State>(&display.handle(), device).ok();
//!
//! // In CompositorHandler::new_surface: hold commits until their acquire point signals.
//! # let surface: WlSurface = todo!();
//! wait_for_acquire_points::<State>(&surface, |state| state.loop_handle.clone());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dispatch;
mod release;
pub mod validation;
mod wait;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fence_bridge::{DrmDevice, Syncobj, SyncobjPoint};
use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;
use smithay::reexports::wayland_server::backend::GlobalId;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, GlobalDispatch, Weak};
use smithay::wayland::compositor::Cacheable;

pub use crate::acquire_wait::AcquireStats;
pub use crate::buffer_reuse::BufferReuseStats;
pub use release::{ReleaseCounters, ReleasePoint, ReleaseStats};
pub use wait::{wait_for_acquire_points, DEFAULT_ACQUIRE_TIMEOUT};

/// The protocol version implemented.
pub const VERSION: u32 = 1;

/// Implemented by the compositor: where its [`DrmSyncobjState`] is.
pub trait DrmSyncobjHandler {
    /// The state, or `None` while there is no import device (timeline imports then fail with
    /// `invalid_timeline`, and acquire points are not waited for).
    fn drm_syncobj_state(&mut self) -> Option<&mut DrmSyncobjState>;
}

/// The `wp_linux_drm_syncobj_manager_v1` global, its import device and the waiting statistics.
///
/// Dropping it removes the global.
pub struct DrmSyncobjState {
    global: GlobalId,
    display: DisplayHandle,
    remove_global: fn(&DisplayHandle, GlobalId),
    import_device: DrmDevice,
    acquire_timeout: Duration,
    timeout_action: crate::TimeoutAction,
    stats: AcquireStats,
    release_counters: Arc<ReleaseCounters>,
    pub(crate) binds: u64,
    pub(crate) buffer_reuse: crate::buffer_reuse::BufferReuse,
}

/// The import device cannot wait for timeline points without a thread, so the global must not
/// be advertised (clients would render assuming explicit sync works).
#[derive(Debug, Clone)]
pub struct NoTimelineSupport {
    /// The device that was offered.
    pub device: DrmDevice,
}

impl fmt::Display for NoTimelineSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self
            .device
            .path()
            .map_or_else(|| "(fd)".to_string(), |p| p.display().to_string());
        write!(
            f,
            "{path} ({}) has no timeline syncobjs with eventfd \
             (DRM_CAP_SYNCOBJ_TIMELINE and DRM_IOCTL_SYNCOBJ_EVENTFD, Linux 6.6+)",
            self.device.driver_name()
        )
    }
}

impl std::error::Error for NoTimelineSupport {}

impl DrmSyncobjState {
    /// Creates the `wp_linux_drm_syncobj_manager_v1` global, importing timelines on
    /// `import_device`; every client sees it.
    ///
    /// # Errors
    ///
    /// [`NoTimelineSupport`] (and no global) unless
    /// [`import_device.supports_syncobj_timeline()`](DrmDevice::supports_syncobj_timeline).
    pub fn new<D>(
        display: &DisplayHandle,
        import_device: DrmDevice,
    ) -> Result<DrmSyncobjState, NoTimelineSupport>
    where
        D: GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData> + 'static,
    {
        Self::new_with_filter::<D, _>(display, import_device, |_| true)
    }

    /// [`DrmSyncobjState::new`], showing the global only to clients `filter` accepts.
    pub fn new_with_filter<D, F>(
        display: &DisplayHandle,
        import_device: DrmDevice,
        filter: F,
    ) -> Result<DrmSyncobjState, NoTimelineSupport>
    where
        D: GlobalDispatch<WpLinuxDrmSyncobjManagerV1, DrmSyncobjGlobalData> + 'static,
        F: Fn(&Client) -> bool + Send + Sync + 'static,
    {
        if !import_device.supports_syncobj_timeline() {
            return Err(NoTimelineSupport {
                device: import_device,
            });
        }
        let global = display.create_global::<D, WpLinuxDrmSyncobjManagerV1, _>(
            VERSION,
            DrmSyncobjGlobalData {
                filter: Box::new(filter),
            },
        );
        Ok(DrmSyncobjState {
            global,
            display: display.clone(),
            remove_global: |display, global| display.remove_global::<D>(global),
            import_device,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            timeout_action: crate::TimeoutAction::Report,
            stats: AcquireStats::default(),
            release_counters: Arc::default(),
            binds: 0,
            buffer_reuse: Default::default(),
        })
    }

    /// The global's id.
    pub fn global(&self) -> GlobalId {
        self.global.clone()
    }

    /// The device timelines are imported on.
    pub fn import_device(&self) -> &DrmDevice {
        &self.import_device
    }

    /// How long a commit may wait for its acquire point before it is reported
    /// ([`DEFAULT_ACQUIRE_TIMEOUT`] unless set).
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Sets the report timeout for commits made from now on. The commit keeps waiting after
    /// the report: only the client can make its buffer safe to read.
    pub fn set_acquire_timeout(&mut self, timeout: Duration) {
        self.acquire_timeout = timeout;
    }

    /// What happens when an acquire point is still unsignalled after the timeout
    /// ([`TimeoutAction::Report`](crate::TimeoutAction::Report) unless set).
    pub fn timeout_action(&self) -> crate::TimeoutAction {
        self.timeout_action
    }

    /// Sets the timeout action for commits made from now on.
    pub fn set_timeout_action(&mut self, action: crate::TimeoutAction) {
        self.timeout_action = action;
    }

    /// How acquire points were waited for so far.
    pub fn stats(&self) -> AcquireStats {
        self.stats.clone()
    }

    /// How many times clients bound the global.
    pub fn binds(&self) -> u64 {
        self.binds
    }

    /// How clients reused their buffers: whether each write finished after fencegate's release
    /// of the buffer's previous commit took effect (see [`BufferReuseStats`]). Measured by
    /// [`wait_for_acquire_points`].
    pub fn buffer_reuse_stats(&self) -> BufferReuseStats {
        self.buffer_reuse.stats()
    }

    /// Call from Smithay's `BufferHandler::buffer_destroyed`: what is kept to judge the
    /// buffer's reuse (its last commit, a render fence still pending) goes now.
    pub fn buffer_destroyed(
        &mut self,
        buffer: &smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer,
    ) {
        self.buffer_reuse.forget(buffer);
    }

    /// Every release point clients have set so far, and how each was signalled: after a
    /// render fence or from the CPU. `owed()` is what is still to be signalled.
    pub fn release_stats(&self) -> ReleaseStats {
        self.release_counters.stats()
    }

    /// The counters every release point set through this global counts into
    /// ([`ReleasePoint::counted`]).
    pub fn release_counters(&self) -> &Arc<ReleaseCounters> {
        &self.release_counters
    }
}

impl Drop for DrmSyncobjState {
    fn drop(&mut self) {
        (self.remove_global)(&self.display, self.global.clone());
    }
}

impl fmt::Debug for DrmSyncobjState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrmSyncobjState")
            .field("global", &self.global)
            .field("import_device", &self.import_device)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("stats", &self.stats)
            .finish()
    }
}

/// User data of the global: the client filter.
pub struct DrmSyncobjGlobalData {
    filter: Box<dyn Fn(&Client) -> bool + Send + Sync>,
}

impl fmt::Debug for DrmSyncobjGlobalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrmSyncobjGlobalData")
            .finish_non_exhaustive()
    }
}

/// User data of a `wp_linux_drm_syncobj_surface_v1`: the surface it extends.
#[derive(Debug)]
pub struct DrmSyncobjSurfaceData {
    surface: Weak<WlSurface>,
}

impl DrmSyncobjSurfaceData {
    /// The `wl_surface`, while it exists.
    pub fn surface(&self) -> Option<WlSurface> {
        self.surface.upgrade().ok()
    }
}

/// User data of a `wp_linux_drm_syncobj_timeline_v1`: the imported syncobj.
#[derive(Debug)]
pub struct DrmSyncobjTimelineData {
    syncobj: Syncobj,
}

impl DrmSyncobjTimelineData {
    /// The syncobj, imported on the state's import device.
    pub fn syncobj(&self) -> &Syncobj {
        &self.syncobj
    }
}

/// The double-buffered explicit-sync state of a surface (Smithay's cached state): the points
/// of its commits, and the release obligation of its current buffer.
///
/// `merge_into` applies the rule of the [module docs](self): a commit that brings a buffer or
/// `attach(NULL)` replaces the points (dropping, so signalling, the release point it
/// supersedes); a commit without `attach` keeps them.
#[derive(Debug, Default)]
pub struct DrmSyncobjCachedState {
    /// The point that must signal before the buffer of this state is read.
    pub acquire_point: Option<SyncobjPoint>,
    /// The point owed to the client for the buffer of this state.
    pub release_point: Option<ReleasePoint>,
    /// Whether the commit attached something (a buffer or NULL), recorded by the pre-commit
    /// hook so that `merge_into` knows whether the previous buffer is superseded.
    replaces_buffer: bool,
}

impl Cacheable for DrmSyncobjCachedState {
    fn commit(&mut self, _dh: &DisplayHandle) -> Self {
        DrmSyncobjCachedState {
            acquire_point: self.acquire_point.take(),
            release_point: self.release_point.take(),
            replaces_buffer: std::mem::take(&mut self.replaces_buffer),
        }
    }

    fn merge_into(self, into: &mut Self, _dh: &DisplayHandle) {
        if self.replaces_buffer {
            into.acquire_point = self.acquire_point;
            // The superseded release point drops here: signalled, exactly once.
            into.release_point = self.release_point;
            into.replaces_buffer = true;
        }
        // Otherwise validation has made sure there are no points in `self` (a commit that
        // broke the rules has its points dropped, and signalled, here).
    }
}

/// Delegates linux-drm-syncobj-v1 to [`DrmSyncobjState`] (Smithay 0.7 style): implement
/// [`DrmSyncobjHandler`] and call `delegate_fencegate_drm_syncobj!(State);`.
#[macro_export]
macro_rules! delegate_fencegate_drm_syncobj {
    ($(@<$( $lt:tt $( : $clt:tt $(+ $dlt:tt )* )? ),+>)? $ty: ty) => {
        $crate::__reexports::wayland_server::delegate_global_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1: $crate::drm_syncobj::DrmSyncobjGlobalData
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1: ()
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1: $crate::drm_syncobj::DrmSyncobjSurfaceData
        ] => $crate::drm_syncobj::DrmSyncobjState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1: $crate::drm_syncobj::DrmSyncobjTimelineData
        ] => $crate::drm_syncobj::DrmSyncobjState);
    };
}
