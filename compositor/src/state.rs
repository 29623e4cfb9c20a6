//! The compositor's state, split the niri way: [`State`] is what Smithay dispatches to; it holds
//! the [`Backend`] and the backend-independent [`Core`], so both can be borrowed mutably at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fencegate_protocols::drm_syncobj::DrmSyncobjState;
use fencegate_protocols::explicit_sync::ExplicitSyncState;
use fencegate_protocols::implicit_sync::ImplicitSyncState;
use smithay::desktop::{PopupManager, Space, Window};
use smithay::input::{Seat, SeatState};
use smithay::output::Output;
use smithay::reexports::calloop::{LoopHandle, LoopSignal};
use smithay::reexports::wayland_server::backend::{
    ClientData, ClientId, DisconnectReason, GlobalId,
};
use smithay::reexports::wayland_server::DisplayHandle;

use crate::client_log::ClientLog;
use smithay::utils::{Clock, Monotonic};
use smithay::wayland::compositor::{CompositorClientState, CompositorState};
use smithay::wayland::dmabuf::{DmabufGlobal, DmabufState};
use smithay::wayland::output::OutputManagerState;
use smithay::wayland::presentation::PresentationState;
use smithay::wayland::selection::data_device::DataDeviceState;
use smithay::wayland::shell::xdg::XdgShellState;
use smithay::wayland::shm::ShmState;
use smithay::wayland::viewporter::ViewporterState;
use tracing::info;

use crate::backend::Backend;
use crate::placement::Cascade;
use crate::screenshot::{Capture, ScreenshotPlan};

/// Everything Smithay dispatches to.
pub struct State {
    pub backend: Backend,
    pub core: Core,
}

/// Backend-independent compositor state.
pub struct Core {
    pub display_handle: DisplayHandle,
    pub loop_handle: LoopHandle<'static, State>,
    pub loop_signal: LoopSignal,
    /// The presentation clock (CLOCK_MONOTONIC); also the time base of frame callbacks.
    pub clock: Clock<Monotonic>,

    // Protocol globals. Dropping one removes its global.
    pub compositor_state: CompositorState,
    pub xdg_shell_state: XdgShellState,
    pub shm_state: ShmState,
    pub seat_state: SeatState<State>,
    pub output_manager_state: OutputManagerState,
    pub data_device_state: DataDeviceState,
    pub viewporter_state: ViewporterState,
    pub presentation_state: PresentationState,
    /// None where the renderer imports no dma-buf format (the log says why).
    pub dmabuf: Option<(DmabufState, DmabufGlobal)>,
    /// The linux-dmabuf version advertised (0: none; 5 with default feedback, else 3).
    pub dmabuf_version: u32,
    /// linux-drm-syncobj-v1; None where no DRM node has timeline syncobjs (the log says why).
    pub drm_syncobj: Option<DrmSyncobjState>,
    /// zwp_linux_explicit_synchronization_v1; None where linux-dmabuf is not advertised.
    pub explicit_sync: Option<ExplicitSyncState>,
    /// dma-bufs committed without explicit sync: fence timeout, action and statistics.
    pub implicit_sync: ImplicitSyncState,

    // Desktop.
    pub space: Space<Window>,
    pub popups: PopupManager,
    pub seat: Seat<State>,
    /// Every output, the primary first: new windows open on the primary output, screenshots
    /// read it. An unplugged output stays listed, out of the space and without a global.
    pub outputs: Vec<Output>,
    /// The `wl_output` global of each plugged-in output, by output name.
    pub output_globals: HashMap<String, GlobalId>,
    pub placement: Cascade,
    /// Keys whose press a compositor shortcut consumed; their release is consumed too.
    pub suppressed_keys: Vec<smithay::input::keyboard::Keycode>,

    // Session.
    pub socket_name: String,
    pub screenshot: Option<ScreenshotPlan>,
    /// Set when the loop should stop; the process exits with this status.
    pub exit_code: Option<i32>,
    /// Frames rendered (not skipped for lack of damage): the presentation sequence number.
    pub frames_rendered: u64,
    /// The frame timer's period: the shortest refresh period of the outputs.
    pub frame_interval: Duration,
    /// The last frame error of each output whose frames fail, by output name (logged once).
    pub frame_errors: HashMap<String, String>,
    /// wl_surfaces that exist now, across all clients (a leak shows here).
    pub surfaces_alive: usize,
    /// Asked-for captures of the next frame (embedders and tests).
    pub capture_requests: Vec<CaptureRequest>,
    /// Connections, protocol errors and commits of the session's clients.
    pub client_log: ClientLog,
    /// Run once the loop has stopped, before the state is dropped (`fencegate check`'s report).
    pub at_exit: Vec<AtExit>,
}

/// Run once the loop has stopped (see [`Core::at_exit`]).
pub type AtExit = Box<dyn FnOnce(&mut State)>;

/// Called with the next frame's pixels.
pub type CaptureRequest = Box<dyn FnOnce(&Capture)>;

impl Core {
    /// Asks the loop to stop; `fencegate` then exits with `code` (the first one asked wins).
    pub fn request_exit(&mut self, code: i32, why: &str) {
        if self.exit_code.is_none() {
            info!(code, why, "shutting down");
            self.exit_code = Some(code);
        }
        self.loop_signal.stop();
        self.loop_signal.wakeup();
    }

    /// Mapped toplevels that have committed a buffer: what a screenshot waits for.
    pub fn windows_with_content(&self) -> usize {
        self.space
            .elements()
            .filter(|window| {
                window.toplevel().is_some_and(|toplevel| {
                    smithay::backend::renderer::utils::with_renderer_surface_state(
                        toplevel.wl_surface(),
                        |state| state.buffer().is_some(),
                    )
                    .unwrap_or(false)
                })
            })
            .count()
    }
}

/// Per-client data Smithay needs, and where its disconnection is recorded.
pub struct ClientState {
    pub compositor_state: CompositorClientState,
    log: ClientLog,
}

impl ClientData for ClientState {
    fn initialized(&self, client_id: ClientId) {
        tracing::debug!(?client_id, "client connected");
        self.log.connected();
    }

    fn disconnected(&self, client_id: ClientId, reason: DisconnectReason) {
        tracing::debug!(?client_id, ?reason, "client disconnected");
        self.log.disconnected(&reason);
    }
}

/// Client data to insert a new client with, recording into `log`.
pub fn new_client_data(log: &ClientLog) -> Arc<ClientState> {
    Arc::new(ClientState {
        compositor_state: CompositorClientState::default(),
        log: log.clone(),
    })
}
