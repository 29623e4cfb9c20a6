//! The output coming and going (a DRM connector unplugged and plugged back): its `wl_output`
//! global and its place in the space follow it. Windows stay where they are; while the output
//! is gone nothing is shown, so no frame callbacks go out and clients idle.

use std::time::Duration;

use smithay::output::Mode;
use smithay::utils::{Physical, Size};
use tracing::info;

use crate::state::{Core, State};

impl Core {
    /// The output's connector went away: its global is removed and it leaves the space.
    pub fn output_disconnected(&mut self) {
        if let Some(global) = self.output_global.take() {
            self.display_handle.remove_global::<State>(global);
        }
        self.space.unmap_output(&self.output);
        info!(output = %self.output.name(), "output removed");
    }

    /// The connector is back, or has a new mode: the output takes the mode and (again) has a
    /// global and a place in the space.
    pub fn output_connected(&mut self, size: Size<i32, Physical>, refresh_mhz: i32) {
        let mode = Mode {
            size,
            refresh: refresh_mhz,
        };
        self.output
            .change_current_state(Some(mode), None, None, Some((0, 0).into()));
        self.output.set_preferred(mode);
        self.frame_interval = Duration::from_secs_f64(1000.0 / f64::from(refresh_mhz.max(1)));
        if self.output_global.is_none() {
            self.output_global = Some(self.output.create_global::<State>(&self.display_handle));
        }
        self.space.map_output(&self.output, (0, 0));
        info!(output = %self.output.name(), ?size, refresh_mhz, "output added");
    }
}
