//! Outputs coming and going (DRM connectors plugged and unplugged): each one's `wl_output`
//! global and place in the space follow it. Plugged-in outputs sit side by side, left to right
//! in the order they were first seen, tops aligned. Windows stay where they are; a window on an
//! output that is gone is not shown, so it gets no frame callbacks and its client idles.

use std::time::Duration;

use smithay::output::{Mode, Output, PhysicalProperties, Subpixel};
use smithay::utils::{Physical, Size, Transform};
use tracing::info;

use crate::state::{Core, State};

/// An output a backend drives, as the compositor announces it.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// The connector's name (`Virtual-1`, `HDMI-A-1`), or the backend's (`HEADLESS-1`).
    pub name: String,
    /// The backend, as the output's model.
    pub model: &'static str,
    pub size: Size<i32, Physical>,
    /// mHz.
    pub refresh_mhz: i32,
}

/// The period of a refresh rate given in mHz (a rate of 0, unknown, counts as 1 mHz).
pub fn refresh_period(refresh_mhz: i32) -> Duration {
    Duration::from_secs_f64(1000.0 / f64::from(refresh_mhz.max(1)))
}

impl Core {
    /// The output new windows open on and screenshots read.
    pub fn primary_output(&self) -> &Output {
        &self.outputs[0]
    }

    /// `spec` is plugged in (at startup, again, or with another mode): the output takes the
    /// mode, is created if new, and has a global and a place in the space.
    pub fn output_connected(&mut self, spec: &OutputSpec) {
        let output = match self.outputs.iter().find(|o| o.name() == spec.name) {
            Some(output) => output.clone(),
            None => {
                let output = Output::new(
                    spec.name.clone(),
                    PhysicalProperties {
                        size: (0, 0).into(),
                        subpixel: Subpixel::Unknown,
                        make: "fencegate".into(),
                        model: spec.model.into(),
                    },
                );
                self.outputs.push(output.clone());
                output
            }
        };
        let mode = Mode {
            size: spec.size,
            refresh: spec.refresh_mhz,
        };
        output.change_current_state(Some(mode), Some(Transform::Normal), None, None);
        output.set_preferred(mode);
        if !self.output_globals.contains_key(&spec.name) {
            let global = output.create_global::<State>(&self.display_handle);
            self.output_globals.insert(spec.name.clone(), global);
        }
        self.arrange_outputs();
        info!(output = %spec.name, size = ?spec.size, refresh_mhz = spec.refresh_mhz, "output added");
    }

    /// The output named `name` was unplugged: its global is removed and it leaves the space.
    pub fn output_disconnected(&mut self, name: &str) {
        if let Some(global) = self.output_globals.remove(name) {
            self.display_handle.remove_global::<State>(global);
        }
        if let Some(output) = self.outputs.iter().find(|o| o.name() == name).cloned() {
            self.space.unmap_output(&output);
        }
        self.arrange_outputs();
        info!(output = %name, "output removed");
    }

    /// Maps the plugged-in outputs side by side and sets the frame timer to the fastest one.
    fn arrange_outputs(&mut self) {
        let mut x = 0;
        let mut fastest_mhz = 0;
        for output in &self.outputs {
            if !self.output_globals.contains_key(&output.name()) {
                continue;
            }
            let Some(mode) = output.current_mode() else {
                continue;
            };
            output.change_current_state(None, None, None, Some((x, 0).into()));
            self.space.map_output(output, (x, 0));
            x += mode.size.w;
            fastest_mhz = fastest_mhz.max(mode.refresh);
        }
        if fastest_mhz > 0 {
            self.frame_interval = refresh_period(fastest_mhz);
        }
    }
}
