//! What the client has learned from the server: globals, bound singletons, outputs and windows.
//!
//! Everything here is plain data that the `Dispatch` impls (in `dispatch.rs`) fill in, so that
//! tests can assert on it directly after a [`Client::dispatch_until`](crate::Client::dispatch_until).

use wayland_client::protocol::wl_compositor::WlCompositor;
use wayland_client::protocol::wl_output::WlOutput;
use wayland_client::protocol::wl_shm::{self, WlShm};
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::presentation_time::client::wp_presentation::WpPresentation;
use wayland_protocols::xdg::shell::client::xdg_surface::XdgSurface;
use wayland_protocols::xdg::shell::client::xdg_toplevel::{self, XdgToplevel};
use wayland_protocols::xdg::shell::client::xdg_wm_base::XdgWmBase;

use crate::shm::ShmBuffer;

/// Index of a window in [`ClientState::windows`].
///
/// Windows are never removed from that list (a destroyed one is only marked
/// [`WindowState::destroyed`]), so an id stays valid for the client's whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowId(pub usize);

/// Everything the server told us, plus the objects we bound.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Every global currently advertised, as `(name, interface, version)`; removed globals are
    /// dropped so tests can check what is on offer right now.
    pub globals: Vec<(u32, String, u32)>,
    /// `wl_compositor`, bound at the highest version up to 6 that the server offers.
    pub compositor: Option<WlCompositor>,
    /// `wl_shm`, needed by every `draw_*` call.
    pub shm: Option<WlShm>,
    /// `xdg_wm_base`; pings are answered automatically.
    pub wm_base: Option<XdgWmBase>,
    /// `wp_presentation`, if advertised; when bound every draw asks for feedback.
    pub presentation: Option<WpPresentation>,
    /// The clock `wp_presentation.clock_id` announced (e.g. 1 = `CLOCK_MONOTONIC`).
    pub presentation_clock_id: Option<u32>,
    /// Formats announced by `wl_shm.format`, in arrival order.
    pub shm_formats: Vec<wl_shm::Format>,
    /// Windows by [`WindowId`]; destroyed ones stay in place so ids remain stable.
    pub windows: Vec<WindowState>,
    /// Every bound `wl_output`, with what it reported about itself.
    pub outputs: Vec<OutputInfo>,
}

impl ClientState {
    /// The window behind `id`, if it exists.
    pub fn window(&self, id: WindowId) -> Option<&WindowState> {
        self.windows.get(id.0)
    }

    /// Whether a global with this interface name is currently advertised.
    pub fn has_global(&self, interface: &str) -> bool {
        self.globals.iter().any(|(_, i, _)| i == interface)
    }
}

/// One xdg_toplevel window and what happened to it.
#[derive(Debug)]
pub struct WindowState {
    /// The window's `wl_surface`.
    pub surface: WlSurface,
    /// The `xdg_surface` role object.
    pub xdg_surface: XdgSurface,
    /// The `xdg_toplevel` role object.
    pub toplevel: XdgToplevel,
    /// Number of `xdg_surface.configure` events received (each one is acked immediately).
    pub configures: u32,
    /// Size from the `xdg_toplevel.configure` that the last `xdg_surface.configure` completed;
    /// (0, 0) means the client picks.
    pub last_configure_size: (i32, i32),
    /// Whether the last completed configure had the `fullscreen` state.
    pub fullscreen: bool,
    /// All states of the last completed configure (activated, maximized, …).
    pub last_states: Vec<xdg_toplevel::State>,
    /// Serial of the last `xdg_surface.configure` (already acked).
    pub last_configure_serial: u32,
    /// Set when the compositor sent `xdg_toplevel.close`.
    pub close_requested: bool,
    /// Number of `wl_surface.frame` callbacks that fired.
    pub frames_done: u32,
    /// The timestamp (ms, unspecified base) of the last frame callback.
    pub last_frame_time_ms: Option<u32>,
    /// Every `wp_presentation_feedback.presented`, in arrival order.
    pub presented: Vec<Presented>,
    /// Number of `wp_presentation_feedback.discarded` events.
    pub discarded: u32,
    /// Number of `wl_surface.commit` requests we sent, including the initial buffer-less one.
    pub commits: u32,
    /// Set by [`Client::destroy_window`](crate::Client::destroy_window); the proxies are dead.
    pub destroyed: bool,
    /// Configure data from `xdg_toplevel.configure`, applied when `xdg_surface.configure` ends
    /// the sequence (xdg-shell's double buffering).
    pub(crate) pending: PendingConfigure,
    /// Buffers this window owns; one is reused only after the server released it.
    pub(crate) buffers: Vec<ShmBuffer>,
}

impl WindowState {
    pub(crate) fn new(surface: WlSurface, xdg_surface: XdgSurface, toplevel: XdgToplevel) -> Self {
        WindowState {
            surface,
            xdg_surface,
            toplevel,
            configures: 0,
            last_configure_size: (0, 0),
            fullscreen: false,
            last_states: Vec::new(),
            last_configure_serial: 0,
            close_requested: false,
            frames_done: 0,
            last_frame_time_ms: None,
            presented: Vec::new(),
            discarded: 0,
            commits: 0,
            destroyed: false,
            pending: PendingConfigure::default(),
            buffers: Vec::new(),
        }
    }

    /// How many of this window's buffers the server still holds (attached and not yet released).
    pub fn buffers_busy(&self) -> usize {
        self.buffers.iter().filter(|b| b.busy).count()
    }

    /// How many buffers this window has allocated and not yet destroyed.
    pub fn buffers_allocated(&self) -> usize {
        self.buffers.len()
    }
}

/// The `xdg_toplevel.configure` half of a configure sequence, waiting for its `xdg_surface.configure`.
#[derive(Debug, Default)]
pub(crate) struct PendingConfigure {
    pub size: (i32, i32),
    pub states: Vec<xdg_toplevel::State>,
}

/// One `wp_presentation_feedback.presented` event, with the split hi/lo fields joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presented {
    /// Seconds of the presentation timestamp, in the clock from `clock_id`.
    pub tv_sec: u64,
    /// Nanoseconds of the presentation timestamp.
    pub tv_nsec: u32,
    /// Refresh period in ns, 0 if unknown.
    pub refresh_ns: u32,
    /// The output's vertical retrace counter (MSC), 0 if none.
    pub seq: u64,
    /// `wp_presentation_feedback.kind` bits (vsync, hw_clock, hw_completion, zero_copy).
    pub flags: u32,
}

/// A bound `wl_output` and what it reported about itself.
#[derive(Clone, Debug)]
pub struct OutputInfo {
    /// The registry name of the global, used to forget it on `global_remove`.
    pub global_name: u32,
    /// The bound proxy.
    pub output: WlOutput,
    /// `wl_output.name` (v4+), e.g. "HEADLESS-1".
    pub name: Option<String>,
    /// `wl_output.description` (v4+).
    pub description: Option<String>,
    /// Size of the mode flagged `current`, in pixels.
    pub mode_size: Option<(i32, i32)>,
    /// Refresh of the current mode, in mHz.
    pub refresh_mhz: Option<i32>,
    /// `wl_output.scale`; 1 until told otherwise.
    pub scale: i32,
    /// Whether a `wl_output.done` has arrived since the last change (v2+).
    pub done: bool,
}
