//! xdg-shell: toplevels placed in a cascade, popups, fullscreen, configure on first commit.

use std::cell::Cell;

use smithay::delegate_xdg_shell;
use smithay::desktop::{PopupKind, Window};
use smithay::output::Output;
use smithay::reexports::wayland_protocols::xdg::shell::server::xdg_toplevel;
use smithay::reexports::wayland_server::protocol::wl_output::WlOutput;
use smithay::reexports::wayland_server::protocol::wl_seat::WlSeat;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::utils::{Logical, Point, Serial, SERIAL_COUNTER};
use smithay::wayland::shell::xdg::{
    PopupSurface, PositionerState, ToplevelSurface, XdgShellHandler, XdgShellState,
};
use tracing::{info, warn};

use crate::state::{Core, State};

/// Where a fullscreen window was before, to put it back when it leaves fullscreen.
type RestorePosition = Cell<Option<Point<i32, Logical>>>;

impl XdgShellHandler for State {
    fn xdg_shell_state(&mut self) -> &mut XdgShellState {
        &mut self.core.xdg_shell_state
    }

    fn new_toplevel(&mut self, surface: ToplevelSurface) {
        let window = Window::new_wayland_window(surface.clone());
        let area = self.core.output_area();
        let location = self.core.placement.next(area);
        surface.with_pending_state(|state| {
            state.states.set(xdg_toplevel::State::Activated);
        });
        self.core.space.map_element(window, location, true);
        self.focus(Some(surface.wl_surface().clone()));
    }

    fn toplevel_destroyed(&mut self, surface: ToplevelSurface) {
        let gone = surface.wl_surface();
        if let Some(window) = self.core.window_for_surface(gone) {
            self.core.space.unmap_elem(&window);
        }
        // Focus must not keep a dead surface: a WlSurface handle keeps the surface's data, and
        // with it whatever its commits still hold (fences, fds), alive. The topmost window left
        // gets it.
        let focused = self
            .core
            .seat
            .get_keyboard()
            .and_then(|keyboard| keyboard.current_focus());
        if focused.is_none_or(|focused| &focused == gone) {
            let next = self
                .core
                .space
                .elements()
                .next_back()
                .and_then(|window| window.toplevel().map(|t| t.wl_surface().clone()));
            self.focus(next);
        }
    }

    fn new_popup(&mut self, surface: PopupSurface, positioner: PositionerState) {
        surface.with_pending_state(|state| state.geometry = positioner.get_geometry());
        if let Err(err) = self.core.popups.track_popup(PopupKind::Xdg(surface)) {
            warn!("cannot track popup: {err}");
        }
    }

    fn reposition_request(
        &mut self,
        surface: PopupSurface,
        positioner: PositionerState,
        token: u32,
    ) {
        surface.with_pending_state(|state| {
            state.geometry = positioner.get_geometry();
            state.positioner = positioner;
        });
        surface.send_repositioned(token);
    }

    // Popup grabs are not implemented: the popup shows, but input is not confined to it.
    fn grab(&mut self, _surface: PopupSurface, _seat: WlSeat, _serial: Serial) {}

    /// Fullscreen on the output asked for, if it is plugged in, else on the primary one.
    fn fullscreen_request(&mut self, surface: ToplevelSurface, wl_output: Option<WlOutput>) {
        let Some(window) = self.core.window_for_surface(surface.wl_surface()) else {
            return;
        };
        let area = wl_output
            .as_ref()
            .and_then(Output::from_resource)
            .and_then(|output| self.core.space.output_geometry(&output))
            .unwrap_or_else(|| self.core.output_area());
        window
            .user_data()
            .insert_if_missing(RestorePosition::default);
        let restore = window
            .user_data()
            .get::<RestorePosition>()
            .expect("inserted above");
        // A second fullscreen request must not overwrite the original position.
        if restore.get().is_none() {
            restore.set(self.core.space.element_location(&window));
        }
        surface.with_pending_state(|state| {
            state.states.set(xdg_toplevel::State::Fullscreen);
            state.size = Some(area.size);
        });
        self.core.space.map_element(window, area.loc, true);
        if surface.is_initial_configure_sent() {
            surface.send_configure();
        }
        info!(?area, "toplevel went fullscreen");
    }

    fn unfullscreen_request(&mut self, surface: ToplevelSurface) {
        let Some(window) = self.core.window_for_surface(surface.wl_surface()) else {
            return;
        };
        surface.with_pending_state(|state| {
            state.states.unset(xdg_toplevel::State::Fullscreen);
            state.size = None;
        });
        let restore = window
            .user_data()
            .get::<RestorePosition>()
            .and_then(Cell::take)
            .unwrap_or_else(|| self.core.output_area().loc);
        self.core.space.map_element(window, restore, true);
        if surface.is_initial_configure_sent() {
            surface.send_pending_configure();
        }
    }
}

delegate_xdg_shell!(State);

impl Core {
    /// The window whose toplevel surface is `surface`.
    pub fn window_for_surface(&self, surface: &WlSurface) -> Option<Window> {
        self.space
            .elements()
            .find(|window| {
                window
                    .toplevel()
                    .is_some_and(|toplevel| toplevel.wl_surface() == surface)
            })
            .cloned()
    }

    /// xdg-shell's part of a commit: the initial configure, and popups.
    pub fn xdg_commit(&mut self, surface: &WlSurface) {
        if let Some(window) = self.window_for_surface(surface) {
            if let Some(toplevel) = window.toplevel() {
                if !toplevel.is_initial_configure_sent() {
                    toplevel.send_configure();
                }
            }
        }
        self.popups.commit(surface);
        if let Some(PopupKind::Xdg(popup)) = self.popups.find_popup(surface) {
            if !popup.is_initial_configure_sent() {
                if let Err(err) = popup.send_configure() {
                    warn!("initial popup configure failed: {err}");
                }
            }
        }
    }
}

impl State {
    /// Gives keyboard focus to `surface` (None: nobody).
    pub fn focus(&mut self, surface: Option<WlSurface>) {
        if let Some(keyboard) = self.core.seat.get_keyboard() {
            let serial = SERIAL_COUNTER.next_serial();
            keyboard.set_focus(self, surface, serial);
        }
    }
}
