//! `Dispatch` impls: how each server event updates [`ClientState`].
//!
//! Objects that belong to a window carry its [`WindowId`] as user data, so events find their
//! window without searching. Objects without user data (`()`) either have no events we need or
//! are looked up by proxy (buffers, outputs).

use wayland_client::protocol::wl_buffer::{self, WlBuffer};
use wayland_client::protocol::wl_callback::{self, WlCallback};
use wayland_client::protocol::wl_compositor::WlCompositor;
use wayland_client::protocol::wl_output::{self, WlOutput};
use wayland_client::protocol::wl_registry::{self, WlRegistry};
use wayland_client::protocol::wl_shm::{self, WlShm};
use wayland_client::protocol::wl_shm_pool::WlShmPool;
use wayland_client::protocol::wl_surface::{self, WlSurface};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle, WEnum};
use wayland_protocols::wp::presentation_time::client::wp_presentation::{self, WpPresentation};
use wayland_protocols::wp::presentation_time::client::wp_presentation_feedback::{
    self, WpPresentationFeedback,
};
use wayland_protocols::xdg::shell::client::xdg_surface::{self, XdgSurface};
use wayland_protocols::xdg::shell::client::xdg_toplevel::{self, XdgToplevel};
use wayland_protocols::xdg::shell::client::xdg_wm_base::{self, XdgWmBase};

use crate::state::{ClientState, OutputInfo, Presented, WindowId, WindowState};

/// Highest versions we bind. wl_compositor 6 adds preferred scale/transform events we can ignore;
/// wl_output 4 adds `name`/`description`, which tests use to tell outputs apart.
const COMPOSITOR_MAX_VERSION: u32 = 6;
const SHM_MAX_VERSION: u32 = 1;
const OUTPUT_MAX_VERSION: u32 = 4;

impl ClientState {
    fn window_mut(&mut self, id: WindowId) -> Option<&mut WindowState> {
        self.windows.get_mut(id.0)
    }

    fn output_mut(&mut self, output: &WlOutput) -> Option<&mut OutputInfo> {
        self.outputs.iter_mut().find(|o| o.output == *output)
    }
}

impl Dispatch<WlRegistry, ()> for ClientState {
    fn event(
        state: &mut Self,
        registry: &WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        match event {
            wl_registry::Event::Global {
                name,
                interface,
                version,
            } => {
                // The generated code knows each interface's highest version, so we never bind
                // past what it can parse, whatever the server offers.
                let cap = |ours: u32, max: u32| version.min(ours).min(max);
                match interface.as_str() {
                    "wl_compositor" if state.compositor.is_none() => {
                        let v = cap(COMPOSITOR_MAX_VERSION, WlCompositor::interface().version);
                        state.compositor = Some(registry.bind(name, v, qh, ()));
                    }
                    "wl_shm" if state.shm.is_none() => {
                        let v = cap(SHM_MAX_VERSION, WlShm::interface().version);
                        state.shm = Some(registry.bind(name, v, qh, ()));
                    }
                    "xdg_wm_base" if state.wm_base.is_none() => {
                        let v = cap(u32::MAX, XdgWmBase::interface().version);
                        state.wm_base = Some(registry.bind(name, v, qh, ()));
                    }
                    "wp_presentation" if state.presentation.is_none() => {
                        let v = cap(u32::MAX, WpPresentation::interface().version);
                        state.presentation = Some(registry.bind(name, v, qh, ()));
                    }
                    "wl_output" => {
                        let v = cap(OUTPUT_MAX_VERSION, WlOutput::interface().version);
                        let output = registry.bind(name, v, qh, ());
                        state.outputs.push(OutputInfo {
                            global_name: name,
                            output,
                            name: None,
                            description: None,
                            mode_size: None,
                            refresh_mhz: None,
                            scale: 1,
                            done: false,
                        });
                    }
                    _ => {}
                }
                state.globals.push((name, interface, version));
            }
            wl_registry::Event::GlobalRemove { name } => {
                state.globals.retain(|(n, _, _)| *n != name);
                if let Some(i) = state.outputs.iter().position(|o| o.global_name == name) {
                    let info = state.outputs.remove(i);
                    if info.output.version() >= 3 {
                        info.output.release();
                    }
                }
            }
            _ => {}
        }
    }
}

// Neither has events; they only need a Dispatch impl to be created on our queue.
wayland_client::delegate_noop!(ClientState: WlCompositor);
wayland_client::delegate_noop!(ClientState: WlShmPool);

impl Dispatch<WlShm, ()> for ClientState {
    fn event(
        state: &mut Self,
        _: &WlShm,
        event: wl_shm::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_shm::Event::Format {
            format: WEnum::Value(format),
        } = event
        {
            state.shm_formats.push(format);
        }
    }
}

impl Dispatch<WlBuffer, ()> for ClientState {
    fn event(
        state: &mut Self,
        buffer: &WlBuffer,
        event: wl_buffer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            let slot = state
                .windows
                .iter_mut()
                .flat_map(|w| w.buffers.iter_mut())
                .find(|b| b.buffer == *buffer);
            if let Some(slot) = slot {
                slot.busy = false;
            }
        }
    }
}

impl Dispatch<WlSurface, WindowId> for ClientState {
    // enter/leave and the v6 preferred scale/transform hints don't matter to a 1x shm client.
    fn event(
        _: &mut Self,
        _: &WlSurface,
        _: wl_surface::Event,
        _: &WindowId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

/// Frame callbacks carry their window; `wl_display.sync` callbacks from roundtrips are handled
/// inside wayland-client and never reach this impl.
impl Dispatch<WlCallback, WindowId> for ClientState {
    fn event(
        state: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        id: &WindowId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { callback_data } = event {
            if let Some(window) = state.window_mut(*id) {
                window.frames_done += 1;
                window.last_frame_time_ms = Some(callback_data);
            }
        }
    }
}

impl Dispatch<WlOutput, ()> for ClientState {
    fn event(
        state: &mut Self,
        output: &WlOutput,
        event: wl_output::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(info) = state.output_mut(output) else {
            return;
        };
        match event {
            wl_output::Event::Mode {
                flags,
                width,
                height,
                refresh,
            } => {
                let current = match flags {
                    WEnum::Value(f) => f.contains(wl_output::Mode::Current),
                    WEnum::Unknown(bits) => bits & wl_output::Mode::Current.bits() != 0,
                };
                if current {
                    info.mode_size = Some((width, height));
                    info.refresh_mhz = Some(refresh);
                }
                info.done = false;
            }
            wl_output::Event::Scale { factor } => {
                info.scale = factor;
                info.done = false;
            }
            wl_output::Event::Name { name } => info.name = Some(name),
            wl_output::Event::Description { description } => info.description = Some(description),
            wl_output::Event::Done => info.done = true,
            _ => {}
        }
    }
}

impl Dispatch<XdgWmBase, ()> for ClientState {
    /// A client that doesn't pong gets flagged unresponsive, so answer every ping.
    fn event(
        _: &mut Self,
        wm_base: &XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm_base.pong(serial);
        }
    }
}

impl Dispatch<XdgSurface, WindowId> for ClientState {
    /// Ends a configure sequence: apply the toplevel half and ack at once. The caller commits
    /// (with a buffer of the new size) whenever it next draws.
    fn event(
        state: &mut Self,
        xdg_surface: &XdgSurface,
        event: xdg_surface::Event,
        id: &WindowId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let xdg_surface::Event::Configure { serial } = event else {
            return;
        };
        xdg_surface.ack_configure(serial);
        if let Some(window) = state.window_mut(*id) {
            let pending = std::mem::take(&mut window.pending);
            window.fullscreen = pending.states.contains(&xdg_toplevel::State::Fullscreen);
            window.last_configure_size = pending.size;
            window.last_states = pending.states;
            window.last_configure_serial = serial;
            window.configures += 1;
        }
    }
}

impl Dispatch<XdgToplevel, WindowId> for ClientState {
    fn event(
        state: &mut Self,
        _: &XdgToplevel,
        event: xdg_toplevel::Event,
        id: &WindowId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(window) = state.window_mut(*id) else {
            return;
        };
        match event {
            xdg_toplevel::Event::Configure {
                width,
                height,
                states,
            } => {
                window.pending.size = (width, height);
                // `states` is an array of native-endian u32 enum values; unknown ones are skipped.
                window.pending.states = states
                    .chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(u32::from_ne_bytes))
                    .filter_map(|v| xdg_toplevel::State::try_from(v).ok())
                    .collect();
            }
            xdg_toplevel::Event::Close => window.close_requested = true,
            _ => {}
        }
    }
}

impl Dispatch<WpPresentation, ()> for ClientState {
    fn event(
        state: &mut Self,
        _: &WpPresentation,
        event: wp_presentation::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wp_presentation::Event::ClockId { clk_id } = event {
            state.presentation_clock_id = Some(clk_id);
        }
    }
}

impl Dispatch<WpPresentationFeedback, WindowId> for ClientState {
    fn event(
        state: &mut Self,
        _: &WpPresentationFeedback,
        event: wp_presentation_feedback::Event,
        id: &WindowId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(window) = state.window_mut(*id) else {
            return;
        };
        match event {
            wp_presentation_feedback::Event::Presented {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
                refresh,
                seq_hi,
                seq_lo,
                flags,
            } => {
                let flags = match flags {
                    WEnum::Value(kind) => kind.bits(),
                    WEnum::Unknown(bits) => bits,
                };
                window.presented.push(Presented {
                    tv_sec: (u64::from(tv_sec_hi) << 32) | u64::from(tv_sec_lo),
                    tv_nsec,
                    refresh_ns: refresh,
                    seq: (u64::from(seq_hi) << 32) | u64::from(seq_lo),
                    flags,
                });
            }
            wp_presentation_feedback::Event::Discarded => window.discarded += 1,
            _ => {}
        }
    }
}
