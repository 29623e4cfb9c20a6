//! zwp_linux_explicit_synchronization_v1 (version 2): explicit synchronization with sync_file
//! fences, server side, for Smithay 0.7 compositors.
//!
//! The older explicit-sync protocol, superseded by linux-drm-syncobj-v1 but still what
//! Chromium/ChromeOS and older Mesa/Weston clients speak. Weston is the only other compositor
//! implementing it. A client extends a `wl_surface` with a
//! `zwp_linux_surface_synchronization_v1` (`get_synchronization`), and per commit may give an
//! **acquire fence** (`set_acquire_fence`, a sync_file fd: the compositor must not read the
//! buffer before it signals) and ask for a **release** (`get_release`, a
//! `zwp_linux_buffer_release_v1` that receives exactly one event, `fenced_release` or
//! `immediate_release`, when the compositor is done with the buffer of that commit).
//!
//! What this module does:
//!
//! * **Every protocol error**: `synchronization_exists`; at the request `invalid_fence` (the fd
//!   is not a sync_file: one `SYNC_IOC_FILE_INFO`), `duplicate_fence`, `duplicate_release`,
//!   `no_surface`; at commit `no_buffer` and `unsupported_buffer`. The commit rules are a pure
//!   function, [`validation`], tested on the host.
//! * **Release exactly once.** A release is a [`BufferRelease`], a `#[must_use]` value whose
//!   `Drop` sends `immediate_release`, and whose object records that its event went out: replaced
//!   by a newer buffer, surface destroyed, synchronization object destroyed before the commit,
//!   compositor shut down ([`ExplicitSyncState`]'s `Drop` sweeps every release still owed) — no
//!   path forgets one, none sends two. A client that disconnects has no objects left to tell.
//! * **Fenced release, after the GPU.** A renderer records each frame's fence on the current
//!   release of every surface the frame sampled ([`BufferRelease::sampled_by`]); when the buffer
//!   is replaced or its surface goes away, the release goes out as `fenced_release` with that
//!   fence, so the client reuses the buffer once the GPU has read it and the compositor never
//!   waits on the CPU. A buffer no fenced frame read (pixman, never drawn) gets
//!   `immediate_release`. [`ExplicitSyncState::release_stats`] counts every release asked for
//!   and which event it got.
//! * **The waiting half, shipped**, shared with drm_syncobj ([`crate::acquire_wait`]):
//!   [`wait_for_acquire_fences`] holds a commit until its acquire fence signals, without
//!   blocking the loop. An acquire fence found signalled when it is set costs that one
//!   `SYNC_IOC_FILE_INFO` (the same that checks the fd) and nothing else: no poll fd, no loop
//!   source, no blocker.
//! * **Buffer reuse**, measured as for drm_syncobj ([`ExplicitSyncState::buffer_reuse_stats`]):
//!   a buffer committed again with an acquire fence that signalled before the release of its
//!   previous commit took effect (`immediate_release` sent, or the `fenced_release` fence
//!   signalled) was rewritten while the compositor could still read it.
//!
//! # Decisions the protocol leaves open
//!
//! * "No buffer attached" means no non-null `wl_surface.attach` in this commit (as Weston):
//!   `attach(NULL)` with a fence or release is `no_buffer`.
//! * `unsupported_buffer` applies to the acquire fence only; a release may be asked for an shm
//!   buffer (Weston does the same).
//! * `destroy` of the synchronization object discards a pending fence (as the protocol says) and
//!   sends `immediate_release` to a pending, uncommitted release (as Weston: no buffer will be
//!   read for it).
//! * A commit without `attach` keeps the current buffer, and its release stays owed.
//! * A commit that raises an error is never waited for (the client is being disconnected).
//!
//! # Wiring it in
//!
//! ```no_run
//! # use fencegate_protocols::explicit_sync::*;
//! # use smithay::reexports::calloop::LoopHandle;
//! # use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
//! # struct State { loop_handle: LoopHandle<'static, State>, explicit_sync: Option<ExplicitSyncState> }
//! # impl smithay::wayland::compositor::CompositorHandler for State {
//! #   fn compositor_state(&mut self) -> &mut smithay::wayland::compositor::CompositorState { todo!() }
//! #   fn client_compositor_state<'a>(&self, _: &'a smithay::reexports::wayland_server::Client) -> &'a smithay::wayland::compositor::CompositorClientState { todo!() }
//! #   fn commit(&mut self, _: &WlSurface) {}
//! # }
//! # let display = smithay::reexports::wayland_server::Display::<State>::new().unwrap();
//! impl ExplicitSyncHandler for State {
//!     fn explicit_sync_state(&mut self) -> Option<&mut ExplicitSyncState> {
//!         self.explicit_sync.as_mut()
//!     }
//! }
//! fencegate_protocols::delegate_fencegate_explicit_sync!(State);
//!
//! // At startup, wherever the renderer imports dma-bufs (sync_files need no device).
//! let explicit_sync = ExplicitSyncState::new::<State>(&display.handle());
//!
//! // In CompositorHandler::new_surface: hold commits until their acquire fence signals.
//! # let surface: WlSurface = todo!();
//! wait_for_acquire_fences::<State>(&surface, |state| state.loop_handle.clone());
//! ```

mod dispatch;
mod release;
pub mod validation;
mod wait;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fence_bridge::{Fence, Ktime};
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;
use smithay::reexports::wayland_server::backend::GlobalId;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, GlobalDispatch, Resource, Weak};
use smithay::wayland::compositor::Cacheable;

pub use crate::acquire_wait::{AcquireStats, DEFAULT_ACQUIRE_TIMEOUT};
pub use crate::buffer_reuse::BufferReuseStats;
pub use release::{BufferRelease, BufferReleaseCounters, BufferReleaseData, BufferReleaseStats};
pub use wait::wait_for_acquire_fences;

/// The protocol version implemented.
pub const VERSION: u32 = 2;

/// Implemented by the compositor: where its [`ExplicitSyncState`] is.
pub trait ExplicitSyncHandler {
    /// The state, or `None` while the protocol is not offered (acquire fences are then not
    /// waited for).
    fn explicit_sync_state(&mut self) -> Option<&mut ExplicitSyncState>;
}

/// The `zwp_linux_explicit_synchronization_v1` global, the releases still owed, and the
/// waiting statistics.
///
/// Dropping it sends `immediate_release` to every release still owed (the compositor is
/// shutting down: it reads nothing any more) and removes the global.
pub struct ExplicitSyncState {
    global: GlobalId,
    display: DisplayHandle,
    remove_global: fn(&DisplayHandle, GlobalId),
    acquire_timeout: Duration,
    timeout_action: crate::TimeoutAction,
    stats: AcquireStats,
    /// Release objects handed out, pruned of the ones that are done; swept at drop.
    owed: Vec<ZwpLinuxBufferReleaseV1>,
    release_counters: Arc<BufferReleaseCounters>,
    pub(crate) binds: u64,
    pub(crate) buffer_reuse: crate::buffer_reuse::BufferReuse,
}

impl ExplicitSyncState {
    /// Creates the `zwp_linux_explicit_synchronization_v1` global (version 2); every client sees
    /// it. Offer it only where dma-bufs can be imported: that is the buffer type it supports.
    pub fn new<D>(display: &DisplayHandle) -> ExplicitSyncState
    where
        D: GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData> + 'static,
    {
        Self::new_with_filter::<D, _>(display, |_| true)
    }

    /// [`ExplicitSyncState::new`], showing the global only to clients `filter` accepts.
    pub fn new_with_filter<D, F>(display: &DisplayHandle, filter: F) -> ExplicitSyncState
    where
        D: GlobalDispatch<ZwpLinuxExplicitSynchronizationV1, ExplicitSyncGlobalData> + 'static,
        F: Fn(&Client) -> bool + Send + Sync + 'static,
    {
        let global = display.create_global::<D, ZwpLinuxExplicitSynchronizationV1, _>(
            VERSION,
            ExplicitSyncGlobalData {
                filter: Box::new(filter),
            },
        );
        ExplicitSyncState {
            global,
            display: display.clone(),
            remove_global: |display, global| display.remove_global::<D>(global),
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            timeout_action: crate::TimeoutAction::Report,
            stats: AcquireStats::default(),
            owed: Vec::new(),
            release_counters: Arc::default(),
            binds: 0,
            buffer_reuse: Default::default(),
        }
    }

    /// The global's id.
    pub fn global(&self) -> GlobalId {
        self.global.clone()
    }

    /// How long a commit may wait for its acquire fence before it is reported
    /// ([`DEFAULT_ACQUIRE_TIMEOUT`] unless set).
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Sets the report timeout for commits made from now on. The commit keeps waiting after
    /// the report: only the client can make its buffer safe to read.
    pub fn set_acquire_timeout(&mut self, timeout: Duration) {
        self.acquire_timeout = timeout;
    }

    /// What happens to a client whose acquire fence has not signalled within the timeout
    /// ([`TimeoutAction::Report`](crate::TimeoutAction::Report) unless set).
    pub fn timeout_action(&self) -> crate::TimeoutAction {
        self.timeout_action
    }

    /// Sets the timeout action for commits made from now on.
    pub fn set_timeout_action(&mut self, action: crate::TimeoutAction) {
        self.timeout_action = action;
    }

    /// How acquire fences were waited for so far.
    pub fn stats(&self) -> AcquireStats {
        self.stats.clone()
    }

    /// How many times clients bound the global.
    pub fn binds(&self) -> u64 {
        self.binds
    }

    /// Release objects whose event has not been sent yet (of live clients).
    pub fn releases_owed(&self) -> usize {
        self.owed.iter().filter(|o| owes(o)).count()
    }

    /// How clients reused their buffers: whether each write finished after the release of the
    /// buffer's previous commit took effect (`immediate_release` sent, or the `fenced_release`
    /// fence signalled; see [`BufferReuseStats`]). Counts commits with an acquire fence of buffers
    /// whose previous commit asked for a release. Measured by [`wait_for_acquire_fences`].
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

    /// Every release asked for so far, and which event each got.
    pub fn release_stats(&self) -> BufferReleaseStats {
        self.release_counters.stats()
    }

    /// Tracks `object` until its event goes out, and returns the obligation to send it.
    fn take_on(&mut self, object: ZwpLinuxBufferReleaseV1) -> BufferRelease {
        self.owed.retain(owes);
        self.owed.push(object.clone());
        BufferRelease::new(object, self.release_counters.clone())
    }
}

fn owes(object: &ZwpLinuxBufferReleaseV1) -> bool {
    object.is_alive()
        && object
            .data::<BufferReleaseData>()
            .is_some_and(|data| !data.sent())
}

impl Drop for ExplicitSyncState {
    fn drop(&mut self) {
        let mut sent = 0;
        for object in self.owed.drain(..) {
            sent += u64::from(release::release_immediately(&object));
        }
        self.release_counters.count_immediate(sent);
        if sent > 0 {
            tracing::debug!(
                sent,
                "shutdown: immediate_release for every release still owed"
            );
            let _ = self.display.flush_clients();
        }
        (self.remove_global)(&self.display, self.global.clone());
    }
}

impl fmt::Debug for ExplicitSyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExplicitSyncState")
            .field("global", &self.global)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("stats", &self.stats)
            .field("releases_owed", &self.releases_owed())
            .finish()
    }
}

/// User data of the global: the client filter.
pub struct ExplicitSyncGlobalData {
    filter: Box<dyn Fn(&Client) -> bool + Send + Sync>,
}

impl fmt::Debug for ExplicitSyncGlobalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExplicitSyncGlobalData")
            .finish_non_exhaustive()
    }
}

/// User data of a `zwp_linux_surface_synchronization_v1`: the surface it extends.
#[derive(Debug)]
pub struct SurfaceSyncData {
    surface: Weak<WlSurface>,
}

impl SurfaceSyncData {
    /// The `wl_surface`, while it exists.
    pub fn surface(&self) -> Option<WlSurface> {
        self.surface.upgrade().ok()
    }
}

/// An acquire fence set with `set_acquire_fence`: the sync_file as a fence_bridge [`Fence`],
/// and whether it had already signalled when it was set (then nothing waits for it).
#[derive(Debug, Clone)]
pub struct AcquireFence {
    fence: Fence,
    /// When it signalled, if it had when set: the kernel's timestamp (or the time it was set,
    /// for the kernel's stub fence).
    signaled_at: Option<Ktime>,
}

impl AcquireFence {
    /// The fence.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether the fence had signalled when the client set it.
    pub fn signaled_when_set(&self) -> bool {
        self.signaled_at.is_some()
    }
}

/// The double-buffered explicit-sync state of a surface (Smithay's cached state): the fence and
/// release of its commits, and the release owed for its current buffer.
///
/// `merge_into` applies the rule of the [module docs](self): a commit that brings a buffer or
/// `attach(NULL)` replaces fence and release (dropping, so sending `immediate_release` to, the
/// release it supersedes); a commit without `attach` keeps them.
#[derive(Debug, Default)]
pub struct ExplicitSyncCachedState {
    /// The fence that must signal before the buffer of this state is read.
    pub acquire: Option<AcquireFence>,
    /// The release owed to the client for the buffer of this state. A renderer that knows the
    /// fence of its last read of the buffer takes it and calls [`BufferRelease::fenced`].
    pub release: Option<BufferRelease>,
    /// Whether the commit attached something (a buffer or NULL), recorded by the pre-commit
    /// hook so that `merge_into` knows whether the previous buffer is superseded.
    replaces_buffer: bool,
}

impl Cacheable for ExplicitSyncCachedState {
    fn commit(&mut self, _dh: &DisplayHandle) -> Self {
        ExplicitSyncCachedState {
            acquire: self.acquire.take(),
            release: self.release.take(),
            replaces_buffer: std::mem::take(&mut self.replaces_buffer),
        }
    }

    fn merge_into(self, into: &mut Self, _dh: &DisplayHandle) {
        if self.replaces_buffer {
            into.acquire = self.acquire;
            // The superseded release drops here: immediate_release, exactly once.
            into.release = self.release;
            into.replaces_buffer = true;
        }
        // Otherwise validation has made sure there is no fence or release in `self` (a commit
        // that broke the rules has its release dropped, and released, here).
    }
}

/// Delegates zwp_linux_explicit_synchronization_v1 to [`ExplicitSyncState`] (Smithay 0.7
/// style): implement [`ExplicitSyncHandler`] and call
/// `delegate_fencegate_explicit_sync!(State);`.
#[macro_export]
macro_rules! delegate_fencegate_explicit_sync {
    ($(@<$( $lt:tt $( : $clt:tt $(+ $dlt:tt )* )? ),+>)? $ty: ty) => {
        $crate::__reexports::wayland_server::delegate_global_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1: $crate::explicit_sync::ExplicitSyncGlobalData
        ] => $crate::explicit_sync::ExplicitSyncState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1: ()
        ] => $crate::explicit_sync::ExplicitSyncState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1: $crate::explicit_sync::SurfaceSyncData
        ] => $crate::explicit_sync::ExplicitSyncState);
        $crate::__reexports::wayland_server::delegate_dispatch!($(@< $( $lt $( : $clt $(+ $dlt )* )? ),+ >)? $ty: [
            $crate::__reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1: $crate::explicit_sync::BufferReleaseData
        ] => $crate::explicit_sync::ExplicitSyncState);
    };
}
