//! Implicit sync, bridged both ways for dma-buf clients.
//!
//! # Implicit → explicit: holding a commit until its dma-buf is ready
//!
//! A client that attaches a dma-buf **without** explicit sync (no linux-drm-syncobj acquire
//! point on that commit) relies on the kernel's implicit fences: the buffer's reservation
//! object carries the write fences of the GPU work that renders it. Smithay 0.7 (and niri,
//! cosmic-comp) wait for them by polling every plane fd; KWin and Mutter export them as a
//! sync_file. [`wait_for_dmabuf_readiness`] does the latter, as one call in
//! `CompositorHandler::new_surface`:
//!
//! 1. A pre-commit hook looks at the pending state. A commit that is explicitly synced
//!    ([`ImplicitSyncHandler::commit_is_explicitly_synced`]; by default: it carries a
//!    linux-drm-syncobj acquire point, [`has_drm_syncobj_acquire_point`]) or that attaches no
//!    new dma-buf is left alone.
//! 2. Each plane's fences that a *reader* must wait for (the pending writers) are exported with
//!    `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` (READ) — a snapshot taken at commit time — through
//!    [`DmaBuf::readiness`], which falls back to polling the dma-buf fd on kernels without
//!    the ioctl.
//! 3. An idle buffer (every sync_file already signalled) costs one export ioctl per plane: no
//!    blocker, no eventfd, no loop source ([`ImplicitSyncStats::idle`]).
//! 4. Otherwise a Smithay [`Barrier`](smithay::wayland::compositor::Barrier) blocks the commit and a
//!    [`FenceSource`](fence_bridge::FenceSource) (the sync_files'
//!    own fds) waits for all of them; when they have signalled the barrier is released and
//!    `blocker_cleared` applies the commit. Later commits of the surface queue behind it in
//!    order (Smithay's transaction queue); other surfaces are not held.
//!
//! A fence that has not signalled after [`ImplicitSyncState::timeout`] is handled like a stuck
//! linux-drm-syncobj acquire point: reported once (warning naming client, pid and surface;
//! [`ImplicitSyncStats::timed_out`]) while the surface keeps its last content, or — with
//! [`TimeoutAction::Disconnect`] — the client is disconnected.
//!
//! # Explicit → implicit: handing an explicitly synced buffer to an implicit-sync consumer
//!
//! A consumer that only knows implicit sync (a screencopy into another process, a V4L2
//! encoder, a KMS plane without IN_FENCE_FD, another GPU's importer) must see the client's
//! acquire fence on the dma-buf itself. [`export_acquire_to_dmabuf`] imports it into every
//! plane as a **write** fence (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`): every later reader and
//! writer waits for it; fences already on the buffer are kept (the kernel only adds).
//!
//! fencegate itself has no such consumer today: its screenshots and captures read its own
//! output framebuffer, and client buffers are only read by its renderer, which latches a
//! commit only once its acquire point has signalled. The helper is for embedders, and for the
//! direct-scanout and screencopy paths when they come.

use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use fence_bridge::{Access, DmaBuf, Fence, SyncFile, WaitMode};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::reexports::calloop::{self, LoopHandle};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, Resource};
use smithay::wayland::compositor::{
    add_pre_commit_hook, with_states, BufferAssignment, CompositorHandler, SurfaceAttributes,
    SurfaceData,
};
use smithay::wayland::dmabuf::get_dmabuf;

use crate::commit_blocker::{block_commit, BlockedOn, Counted};

use crate::drm_syncobj::DrmSyncobjCachedState;
use crate::explicit_sync::ExplicitSyncCachedState;

/// How long a commit waits for its fences before the [`TimeoutAction`] is taken.
pub const DEFAULT_FENCE_TIMEOUT: Duration = Duration::from_secs(1);

/// What to do about a client whose fence (an acquire point, or a dma-buf's implicit write
/// fence) is still unsignalled after the timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TimeoutAction {
    /// Warn once and keep waiting: the surface keeps its last content until the fence
    /// signals. Never unsafe, the default.
    #[default]
    Report,
    /// Warn, then disconnect the client (a `wl_display.error` of code `implementation`, so the
    /// client learns why). For sessions where one stuck client must not keep a frozen window.
    Disconnect,
}

/// Implemented by the compositor: where its [`ImplicitSyncState`] is, and which commits are
/// explicitly synced (and so are not waited for here).
pub trait ImplicitSyncHandler {
    /// The state: timeout, action, statistics.
    fn implicit_sync_state(&mut self) -> &mut ImplicitSyncState;

    /// Whether the pending commit in `states` is explicitly synced, so that its implicit
    /// fences must not be waited for (the explicit-sync module waits for its own fence).
    ///
    /// The default knows both explicit-sync protocols of this crate: a linux-drm-syncobj-v1
    /// acquire point ([`has_drm_syncobj_acquire_point`]) or a
    /// zwp_linux_explicit_synchronization_v1 acquire fence ([`has_explicit_sync_acquire_fence`]).
    /// A compositor with a protocol of its own overrides it.
    fn commit_is_explicitly_synced(&self, states: &SurfaceData) -> bool {
        has_drm_syncobj_acquire_point(states) || has_explicit_sync_acquire_fence(states)
    }
}

/// Whether the pending commit carries a linux-drm-syncobj-v1 acquire point. Takes the lock of
/// [`DrmSyncobjCachedState`] only (and only where the surface has used the extension).
pub fn has_drm_syncobj_acquire_point(states: &SurfaceData) -> bool {
    states.cached_state.has::<DrmSyncobjCachedState>()
        && states
            .cached_state
            .get::<DrmSyncobjCachedState>()
            .pending()
            .acquire_point
            .is_some()
}

/// Whether the pending commit carries a zwp_linux_explicit_synchronization_v1 acquire fence.
/// Takes the lock of [`ExplicitSyncCachedState`] only (and only where the surface has used the
/// extension).
pub fn has_explicit_sync_acquire_fence(states: &SurfaceData) -> bool {
    states.cached_state.has::<ExplicitSyncCachedState>()
        && states
            .cached_state
            .get::<ExplicitSyncCachedState>()
            .pending()
            .acquire
            .is_some()
}

/// How dma-bufs committed without explicit sync were waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImplicitSyncStats {
    /// Commits whose dma-buf had no pending writer: one export ioctl per plane, nothing else.
    pub idle: u64,
    /// Commits held by a blocker until their dma-buf's write fences signalled.
    pub blocked: u64,
    /// Blocked commits released (their fences signalled).
    pub released: u64,
    /// Blocked commits still waiting after the timeout (each counted once).
    pub timed_out: u64,
    /// Clients disconnected by [`TimeoutAction::Disconnect`].
    pub disconnected: u64,
    /// Blocked commits given up because their surface or client went away first.
    pub abandoned: u64,
    /// Planes whose fences could not be read (not a dma-buf fd, fd limit): not waited for.
    pub errors: u64,
}

/// Timeout, action and statistics of the implicit-sync wait.
#[derive(Debug, Clone, Default)]
pub struct ImplicitSyncState {
    timeout: Option<Duration>,
    action: TimeoutAction,
    stats: ImplicitSyncStats,
}

impl ImplicitSyncState {
    /// [`DEFAULT_FENCE_TIMEOUT`], [`TimeoutAction::Report`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a commit may wait before [`action`](Self::action) is taken.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_FENCE_TIMEOUT)
    }

    /// Sets the timeout for commits made from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = Some(timeout);
    }

    /// What happens at the timeout.
    pub fn action(&self) -> TimeoutAction {
        self.action
    }

    /// Sets what happens at the timeout, for commits made from now on.
    pub fn set_action(&mut self, action: TimeoutAction) {
        self.action = action;
    }

    /// The statistics so far.
    pub fn stats(&self) -> ImplicitSyncStats {
        self.stats
    }
}

/// Holds every commit of `surface` that attaches a dma-buf without explicit sync until the
/// buffer's pending writers have finished (see the [module docs](self)). Call it once per
/// surface, from `CompositorHandler::new_surface`:
///
/// `implicit_sync::wait_for_dmabuf_readiness::<State>(surface, |s| s.loop_handle.clone());`
pub fn wait_for_dmabuf_readiness<D>(
    surface: &WlSurface,
    loop_handle: fn(&D) -> LoopHandle<'static, D>,
) where
    D: ImplicitSyncHandler + CompositorHandler + 'static,
{
    add_pre_commit_hook::<D, _>(surface, move |state, dh, surface| {
        let handle = loop_handle(state);
        add_readiness_blocker(state, dh, surface, &handle);
    });
}

/// The body of the hook, for compositors that run their own pre-commit hook.
pub fn add_readiness_blocker<D>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    loop_handle: &LoopHandle<'static, D>,
) where
    D: ImplicitSyncHandler + CompositorHandler + 'static,
{
    let dmabuf = with_states(surface, |states| {
        if state.commit_is_explicitly_synced(states) {
            return None;
        }
        let mut attributes = states.cached_state.get::<SurfaceAttributes>();
        match &attributes.pending().buffer {
            Some(BufferAssignment::NewBuffer(buffer)) => get_dmabuf(buffer).ok().cloned(),
            _ => None,
        }
    });
    let Some(dmabuf) = dmabuf else {
        return;
    };
    let mut fences = Vec::new();
    let mut errors = 0;
    for (plane, fd) in dmabuf.handles().enumerate() {
        match DmaBuf::new(fd).readiness(Access::Read) {
            Ok(fence) => fences.push((plane, fence)),
            Err(err) => {
                errors += 1;
                tracing::warn!(surface = %surface.id(), plane, %err,
                    "cannot read a dma-buf plane's implicit fences; not waiting for them");
            }
        }
    }
    let implicit = state.implicit_sync_state();
    implicit.stats.errors += errors;
    let timeout = implicit.timeout();
    let planes = DmaBufPlanes {
        fences,
        state: PhantomData,
    };
    block_commit(state, dh, surface, loop_handle, timeout, planes);
}

/// The readiness fences of a committed dma-buf's planes, all waited for.
struct DmaBufPlanes<D> {
    /// Every plane's readiness fence (signalled ones included: a re-armed source skips them).
    fences: Vec<(usize, Fence)>,
    state: PhantomData<fn(&mut D)>,
}

impl<D: ImplicitSyncHandler + 'static> BlockedOn<D> for DmaBufPlanes<D> {
    type Key = usize;
    const MODE: WaitMode = WaitMode::All;

    fn fences(&self) -> Vec<(usize, Fence)> {
        self.fences.clone()
    }

    fn count(&self, state: &mut D, step: Counted) {
        let stats = &mut state.implicit_sync_state().stats;
        match step {
            Counted::AlreadySignaled => stats.idle += 1,
            Counted::Blocked => stats.blocked += 1,
            Counted::Released(_) => stats.released += 1,
            Counted::TimedOut => stats.timed_out += 1,
            Counted::Disconnected => stats.disconnected += 1,
            Counted::Abandoned => stats.abandoned += 1,
        }
    }

    /// Read at the timeout: the action in force then.
    fn action(&self, state: &mut D) -> TimeoutAction {
        state.implicit_sync_state().action
    }

    fn stuck(&self) -> String {
        "a dma-buf's implicit write fence".to_string()
    }

    fn log_unwatchable(&self, error: &calloop::Error) {
        tracing::error!(%error,
            "cannot watch a dma-buf's implicit fences; applying the commit without waiting");
    }

    fn log_late(&self, surface: &WlSurface, after: Duration) {
        tracing::info!(surface = %surface.id(), ?after,
            "late dma-buf write fence signalled; applying the commit");
    }

    fn log_stuck(&self, client: &Client, pid: Option<i32>, surface: &WlSurface, waited: Duration) {
        tracing::warn!(
            client = ?client.id(),
            pid,
            surface = %surface.id(),
            ?waited,
            "dma-buf write fence has not signalled: the surface keeps its last content until it does"
        );
    }
}

/// Makes the client's acquire fence visible to implicit-sync consumers of `buffer`: imports
/// `acquire` into every plane as a write fence (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`, WRITE), so
/// that every later reader and writer of the dma-buf waits for it. Fences already on the
/// buffer are kept. Call it before handing the buffer to such a consumer.
///
/// For a linux-drm-syncobj acquire point, export it as a sync_file first (its fence must have
/// materialised: wait for submission, e.g. with the acquire wait of
/// [`crate::drm_syncobj`]).
///
/// # Errors
///
/// The first plane's import error (`ENOTTY` on kernels before 6.0 or a non-dma-buf fd,
/// `EINVAL` if `acquire` is not a sync_file); the planes before it keep the fence.
pub fn export_acquire_to_dmabuf(buffer: &Dmabuf, acquire: &SyncFile) -> io::Result<()> {
    import_into_planes(buffer.handles(), acquire, Access::Write)
}

/// [`export_acquire_to_dmabuf`] on raw plane fds, with the access of the import.
pub fn import_into_planes<'a>(
    planes: impl IntoIterator<Item = BorrowedFd<'a>>,
    fence: &SyncFile,
    access: Access,
) -> io::Result<()> {
    for fd in planes {
        DmaBuf::new(fd).import_sync_file(fence, access)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_report_after_one_second() {
        let mut state = ImplicitSyncState::new();
        assert_eq!(state.timeout(), Duration::from_secs(1));
        assert_eq!(state.action(), TimeoutAction::Report);
        state.set_timeout(Duration::from_millis(250));
        state.set_action(TimeoutAction::Disconnect);
        assert_eq!(state.timeout(), Duration::from_millis(250));
        assert_eq!(state.action(), TimeoutAction::Disconnect);
        assert_eq!(state.stats(), ImplicitSyncStats::default());
    }

    #[test]
    fn importing_into_a_non_dmabuf_fails_with_enotty_or_einval() {
        use std::os::fd::AsFd;
        let file = std::fs::File::open("/dev/null").unwrap();
        let sync_file = SyncFile::from_fd(std::fs::File::open("/dev/null").unwrap().into());
        let err = import_into_planes([file.as_fd()], &sync_file, Access::Write).unwrap_err();
        assert!(err.raw_os_error().is_some(), "{err}");
    }

    #[test]
    fn no_planes_is_nothing_to_do() {
        let sync_file = SyncFile::from_fd(std::fs::File::open("/dev/null").unwrap().into());
        import_into_planes(std::iter::empty(), &sync_file, Access::Write).unwrap();
    }
}
