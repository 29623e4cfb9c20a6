//! Input from the winit window or libinput: pointer and keyboard to the surface under the pointer or focused.

use smithay::backend::input::{
    AbsolutePositionEvent, Axis, AxisSource, ButtonState, Event, InputBackend, InputEvent,
    KeyState, KeyboardKeyEvent, PointerAxisEvent, PointerButtonEvent, PointerMotionEvent,
};
use smithay::input::keyboard::{keysyms, FilterResult};
use smithay::input::pointer::{AxisFrame, ButtonEvent, MotionEvent};
use smithay::utils::SERIAL_COUNTER;

use crate::state::State;

impl State {
    pub fn handle_input<B: InputBackend>(&mut self, event: InputEvent<B>) {
        match event {
            InputEvent::Keyboard { event } => self.on_key::<B>(event),
            InputEvent::PointerMotionAbsolute { event } => {
                let area = self.core.output_area();
                let location = event.position_transformed(area.size) + area.loc.to_f64();
                self.pointer_to(location, event.time_msec());
            }
            InputEvent::PointerMotion { event } => {
                // A mouse on the DRM backend: move by the delta, kept on the outputs.
                let Some(pointer) = self.core.seat.get_pointer() else {
                    return;
                };
                let area = self.core.outputs_area().to_f64();
                let mut location = pointer.current_location() + event.delta();
                location.x = location.x.clamp(area.loc.x, area.loc.x + area.size.w - 1.0);
                location.y = location.y.clamp(area.loc.y, area.loc.y + area.size.h - 1.0);
                self.pointer_to(location, event.time_msec());
            }
            InputEvent::PointerButton { event } => {
                let Some(pointer) = self.core.seat.get_pointer() else {
                    return;
                };
                let serial = SERIAL_COUNTER.next_serial();
                if event.state() == ButtonState::Pressed {
                    // Click to focus and raise.
                    let location = pointer.current_location();
                    let window = self
                        .core
                        .space
                        .element_under(location)
                        .map(|(window, _)| window.clone());
                    if let Some(window) = window {
                        self.core.space.raise_element(&window, true);
                        let surface = window
                            .toplevel()
                            .map(|toplevel| toplevel.wl_surface().clone());
                        self.focus(surface);
                    }
                }
                pointer.button(
                    self,
                    &ButtonEvent {
                        button: event.button_code(),
                        state: event.state(),
                        serial,
                        time: event.time_msec(),
                    },
                );
                pointer.frame(self);
            }
            InputEvent::PointerAxis { event } => {
                let Some(pointer) = self.core.seat.get_pointer() else {
                    return;
                };
                let mut frame = AxisFrame::new(event.time_msec()).source(event.source());
                for axis in [Axis::Horizontal, Axis::Vertical] {
                    let amount = event
                        .amount(axis)
                        .unwrap_or_else(|| event.amount_v120(axis).unwrap_or(0.0) * 15.0 / 120.0);
                    if amount != 0.0 {
                        frame = frame.value(axis, amount);
                        if let Some(discrete) = event.amount_v120(axis) {
                            frame = frame.v120(axis, discrete as i32);
                        }
                    } else if event.source() == AxisSource::Finger {
                        frame = frame.stop(axis);
                    }
                }
                pointer.axis(self, frame);
                pointer.frame(self);
            }
            _ => {}
        }
    }

    /// Moves the pointer to `location` (space coordinates), focusing the surface under it.
    fn pointer_to(
        &mut self,
        location: smithay::utils::Point<f64, smithay::utils::Logical>,
        time: u32,
    ) {
        let Some(pointer) = self.core.seat.get_pointer() else {
            return;
        };
        let under = self.core.surface_under(location);
        let serial = SERIAL_COUNTER.next_serial();
        pointer.motion(
            self,
            under,
            &MotionEvent {
                location,
                serial,
                time,
            },
        );
        pointer.frame(self);
    }

    fn on_key<B: InputBackend>(&mut self, event: B::KeyboardKeyEvent) {
        let Some(keyboard) = self.core.seat.get_keyboard() else {
            return;
        };
        let serial = SERIAL_COUNTER.next_serial();
        let keycode = event.key_code();
        let pressed = event.state() == KeyState::Pressed;
        // Alt+F4 closes the focused window, Ctrl+Alt+F<n> (XF86Switch_VT_<n>) switches VT;
        // everything else goes to the client. The release of a key whose press we kept is kept
        // too: a client must never see a lone release.
        let shortcut = keyboard.input::<Shortcut, _>(
            self,
            keycode,
            event.state(),
            serial,
            event.time_msec(),
            |state, modifiers, keysym| {
                let sym = keysym.modified_sym().raw();
                if pressed && modifiers.alt && sym == keysyms::KEY_F4 {
                    state.core.suppressed_keys.push(keycode);
                    FilterResult::Intercept(Shortcut::CloseWindow)
                } else if pressed
                    && (keysyms::KEY_XF86Switch_VT_1..=keysyms::KEY_XF86Switch_VT_12).contains(&sym)
                {
                    state.core.suppressed_keys.push(keycode);
                    let vt = (sym - keysyms::KEY_XF86Switch_VT_1 + 1) as i32;
                    FilterResult::Intercept(Shortcut::SwitchVt(vt))
                } else if let Some(i) = state
                    .core
                    .suppressed_keys
                    .iter()
                    .position(|k| !pressed && *k == keycode)
                {
                    state.core.suppressed_keys.swap_remove(i);
                    FilterResult::Intercept(Shortcut::None)
                } else {
                    FilterResult::Forward
                }
            },
        );
        match shortcut {
            Some(Shortcut::SwitchVt(vt)) => self.backend.change_vt(vt),
            Some(Shortcut::CloseWindow) => self.close_focused_window(),
            Some(Shortcut::None) | None => {}
        }
    }

    fn close_focused_window(&mut self) {
        let Some(keyboard) = self.core.seat.get_keyboard() else {
            return;
        };
        let focused = keyboard
            .current_focus()
            .and_then(|surface| self.core.window_for_surface(&surface));
        if let Some(toplevel) = focused.as_ref().and_then(|window| window.toplevel()) {
            toplevel.send_close();
        }
    }
}

/// What a key press meant to the compositor itself.
enum Shortcut {
    /// A press fencegate kept, or the release of one: nothing more to do.
    None,
    CloseWindow,
    SwitchVt(i32),
}
