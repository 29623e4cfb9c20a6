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
//! 4. Otherwise a Smithay [`Barrier`] blocks the commit and a [`FenceSource`] (the sync_files'
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
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use fence_bridge::{Access, DmaBuf, Fence, FenceEvent, FenceSource, SyncFile, WaitMode};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::reexports::calloop::LoopHandle;
use smithay::reexports::wayland_server::backend::protocol::ProtocolError;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, Resource, Weak};
use smithay::wayland::compositor::{
    add_blocker, add_pre_commit_hook, with_states, Barrier, BufferAssignment, CompositorHandler,
    SurfaceAttributes, SurfaceData,
};
use smithay::wayland::dmabuf::get_dmabuf;

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

/// `wl_display.error.implementation`.
const WL_DISPLAY_ERROR_IMPLEMENTATION: u32 = 3;

/// Disconnects `client` because `what` has not signalled after `waited`, with a log line that
/// says so. Shared by every fence wait of this crate.
pub(crate) fn disconnect_stuck_client(
    dh: &DisplayHandle,
    client: &Client,
    surface: &WlSurface,
    waited: Duration,
    what: &str,
) {
    let pid = client.get_credentials(dh).map(|c| c.pid).ok();
    tracing::warn!(
        client = ?client.id(),
        pid,
        surface = %surface.id(),
        ?waited,
        "{what} has not signalled within the fence timeout: disconnecting the client \
         (fence timeout action: disconnect)"
    );
    let message = format!(
        "{what} of {} not signalled after {} ms: disconnected by the compositor",
        surface.id(),
        waited.as_millis()
    );
    // A wl_display.error on the client's wl_display (object 1): the client learns why. A bare
    // `Client::kill` closes the socket without sending the error.
    let display = dh.backend_handle().object_for_protocol_id(
        client.id(),
        &smithay::reexports::wayland_server::protocol::__interfaces::WL_DISPLAY_INTERFACE,
        1,
    );
    match (display, std::ffi::CString::new(message.clone())) {
        (Ok(display), Ok(text)) => {
            dh.backend_handle()
                .post_error(display, WL_DISPLAY_ERROR_IMPLEMENTATION, text)
        }
        _ => client.kill(
            dh,
            ProtocolError {
                code: WL_DISPLAY_ERROR_IMPLEMENTATION,
                object_id: 1,
                object_interface: "wl_display".into(),
                message,
            },
        ),
    }
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
    let source = match FenceSource::new(fences.iter().cloned(), WaitMode::All) {
        Ok(source) => source,
        Err(_ready) => {
            implicit.stats.idle += 1;
            return;
        }
    };
    implicit.stats.blocked += 1;
    let barrier = Barrier::new(false);
    add_blocker(surface, barrier.clone());
    let wait = Wait {
        barrier: barrier.clone(),
        surface: surface.downgrade(),
        dh: dh.clone(),
        fences,
        since: Instant::now(),
        reported: false,
    };
    if !insert(loop_handle, source.with_timeout(timeout), timeout, wait) {
        barrier.signal(); // still inside the commit: it applies as if nothing waited
    }
}

/// One blocked commit.
struct Wait {
    barrier: Barrier,
    surface: Weak<WlSurface>,
    dh: DisplayHandle,
    /// Every plane's readiness fence (signalled ones included: a re-armed source skips them).
    fences: Vec<(usize, Fence)>,
    since: Instant,
    reported: bool,
}

fn insert<D>(
    loop_handle: &LoopHandle<'static, D>,
    source: FenceSource<usize>,
    timeout: Duration,
    wait: Wait,
) -> bool
where
    D: ImplicitSyncHandler + CompositorHandler + 'static,
{
    let handle = loop_handle.clone();
    let mut wait = Some(wait);
    let inserted = loop_handle.insert_source(source, move |event, _, state: &mut D| {
        let Some(w) = wait.take() else {
            return;
        };
        match event {
            FenceEvent::TimedOut { .. } => timed_out(state, &handle, timeout, w),
            FenceEvent::Signaled(_) | FenceEvent::AllSignaled(_) => release(state, w),
        }
    });
    match inserted {
        Ok(_) => true,
        Err(err) => {
            tracing::error!(error = %err.error,
                "cannot watch a dma-buf's implicit fences; applying the commit without waiting");
            false
        }
    }
}

fn release<D>(state: &mut D, wait: Wait)
where
    D: ImplicitSyncHandler + CompositorHandler + 'static,
{
    wait.barrier.signal();
    state.implicit_sync_state().stats.released += 1;
    let Ok(surface) = wait.surface.upgrade() else {
        return;
    };
    if wait.reported {
        tracing::info!(surface = %surface.id(), after = ?wait.since.elapsed(),
            "late dma-buf write fence signalled; applying the commit");
    }
    let Some(client) = surface.client() else {
        return;
    };
    state
        .client_compositor_state(&client)
        .blocker_cleared(state, &wait.dh);
}

fn timed_out<D>(
    state: &mut D,
    loop_handle: &LoopHandle<'static, D>,
    timeout: Duration,
    mut wait: Wait,
) where
    D: ImplicitSyncHandler + CompositorHandler + 'static,
{
    let alive = wait.surface.upgrade().ok().and_then(|surface| {
        let client = surface.client()?;
        Some((surface, client))
    });
    let Some((surface, client)) = alive else {
        state.implicit_sync_state().stats.abandoned += 1;
        return;
    };
    let implicit = state.implicit_sync_state();
    if !wait.reported {
        wait.reported = true;
        implicit.stats.timed_out += 1;
        if implicit.action == TimeoutAction::Disconnect {
            implicit.stats.disconnected += 1;
            disconnect_stuck_client(
                &wait.dh,
                &client,
                &surface,
                wait.since.elapsed(),
                "a dma-buf's implicit write fence",
            );
            return; // the source goes: its fds close; Smithay drops the client's transactions
        }
        let pid = client.get_credentials(&wait.dh).map(|c| c.pid).ok();
        tracing::warn!(
            client = ?client.id(),
            pid,
            surface = %surface.id(),
            waited = ?wait.since.elapsed(),
            "dma-buf write fence has not signalled: the surface keeps its last content until it does"
        );
    }
    match FenceSource::new(wait.fences.iter().cloned(), WaitMode::All) {
        Err(_ready) => release(state, wait),
        Ok(source) => {
            let fallback = Wait {
                barrier: wait.barrier.clone(),
                surface: wait.surface.clone(),
                dh: wait.dh.clone(),
                fences: Vec::new(),
                ..wait
            };
            if !insert(loop_handle, source.with_timeout(timeout), timeout, wait) {
                release(state, fallback);
            }
        }
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
