//! One frame of the outputs: render each, present, send frame callbacks, take a due screenshot.
//!
//! A calloop timer drives it at the fastest output's refresh rate for every backend, so a client
//! that never stops committing cannot make the compositor spin, and a quiet output costs one
//! timer wake-up per frame with no rendering (the damage tracker skips undamaged frames). An
//! output whose last frame has not reached the screen yet skips the tick (DRM: one flip per
//! vblank), so a slower output runs at its own rate.
//!
//! After each frame, every fence a blocked commit waits for gets the next frame's time as its
//! deadline (`fencegate_protocols::hint_deadline`, `SYNC_IOC_SET_DEADLINE`).
//!
//! # Release after GPU completion
//!
//! A rendered frame's fence (`RenderedFrame::sync`, exported once as a sync_file) is recorded on
//! the current release of every surface the frame presented: a linux-drm-syncobj-v1 release
//! point ([`ReleasePoint::sampled_by`]) or a zwp_linux_buffer_release_v1
//! ([`BufferRelease::sampled_by`]). When the buffer is later replaced, detached or its surface
//! destroyed, the release is due. A release point's `Drop` imports that fence into it: the
//! kernel signals the client's point once the GPU work that last sampled the buffer has
//! completed, with no CPU wait. A buffer release's `Drop` sends `fenced_release` with it.
//!
//! A frame with no fence to export (pixman, a skipped frame, a GLES frame finished with
//! `glFinish`) leaves nothing to wait for: such points are signalled from the CPU at once, and
//! such buffer releases get `immediate_release`.
//!
//! [`ReleasePoint::sampled_by`]: fencegate_protocols::drm_syncobj::ReleasePoint::sampled_by
//! [`BufferRelease::sampled_by`]: fencegate_protocols::explicit_sync::BufferRelease::sampled_by

use std::time::{Duration, Instant};

use fence_bridge::Ktime;
use fencegate_protocols::drm_syncobj::DrmSyncobjCachedState;
use fencegate_protocols::explicit_sync::ExplicitSyncCachedState;
use fencegate_protocols::{Reader, ReleaseFence};

use smithay::backend::renderer::element::{
    default_primary_scanout_output_compare, RenderElementStates,
};
use smithay::desktop::utils::{
    surface_presentation_feedback_flags_from_states, surface_primary_scanout_output,
    update_surface_primary_scanout_output, OutputPresentationFeedback,
};
use smithay::output::Output;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::utils::{Monotonic, Time};
use smithay::wayland::presentation::Refresh;
use tracing::{error, info};

use crate::output_hotplug::refresh_period;
use crate::render::RenderedFrame;
use crate::screenshot::Capture;
use crate::state::{Core, State};

/// Starts the frame timer; the first frame is rendered at once.
pub fn start(state: &mut State) {
    let result =
        state
            .core
            .loop_handle
            .insert_source(Timer::immediate(), move |deadline, _, state| {
                state.frame();
                // Never schedule into the past: a slow frame delays the next one instead of bunching.
                let next = (deadline + state.core.frame_interval).max(Instant::now());
                TimeoutAction::ToInstant(next)
            });
    if let Err(err) = result {
        error!("cannot start the frame timer: {err}");
    }
}

impl State {
    /// Renders one frame of each output and does everything that follows from it.
    pub fn frame(&mut self) {
        let windows_with_content = self.core.windows_with_content();
        let plan_due = self
            .core
            .screenshot
            .as_mut()
            .is_some_and(|plan| plan.is_due(windows_with_content));
        let capture = plan_due || !self.core.capture_requests.is_empty();
        let outputs: Vec<Output> = self.core.space.outputs().cloned().collect();
        for output in outputs {
            // Screenshots and captures read the primary output.
            let capture = capture && output == *self.core.primary_output();
            self.output_frame(&output, capture, plan_due);
        }
        self.backend.send_dmabuf_feedback(&self.core);
        // Fences that commits wait for should be done by the next frame (the next vblank on
        // DRM, where the frame timer runs at the mode's refresh rate): tell the GPUs.
        if let Some(next_frame) = Ktime::now().checked_add(self.core.frame_interval) {
            fencegate_protocols::hint_deadline(next_frame);
        }
        let now = self.core.clock.now();
        self.core.send_frame_callbacks(now);
        self.core.space.refresh();
        self.core.popups.cleanup();
        if let Err(err) = self.core.display_handle.flush_clients() {
            error!("flushing clients failed: {err}");
        }
    }

    fn output_frame(&mut self, output: &Output, capture: bool, plan_due: bool) {
        let frame = match self.backend.render(&self.core, output, capture) {
            Ok(frame) => {
                if self.core.frame_errors.remove(&output.name()).is_some() {
                    info!(output = %output.name(), "frames render again");
                }
                frame
            }
            Err(err) => {
                // Said once while it lasts, not at every tick.
                let err = format!("{err:#}");
                if self.core.frame_errors.get(&output.name()) != Some(&err) {
                    error!(output = %output.name(), "frame failed (said again only if the \
                        error changes): {err}");
                    self.core.frame_errors.insert(output.name(), err);
                }
                return;
            }
        };
        let now = self.core.clock.now();
        if frame.rendered {
            self.core.frames_rendered += 1;
            self.core.mark_sampled_buffers(output, &frame);
            let feedback = self.core.presentation_feedback(output, &frame.states);
            let refresh = output
                .current_mode()
                .map(|mode| refresh_period(mode.refresh))
                .unwrap_or(self.core.frame_interval);
            self.backend.present(
                output,
                feedback,
                now,
                Refresh::fixed(refresh),
                self.core.frames_rendered,
            );
        }
        if let Some(capture) = frame.capture {
            for request in std::mem::take(&mut self.core.capture_requests) {
                request(&capture);
            }
            if plan_due {
                self.core.finish_screenshot(capture);
            }
        }
    }
}

impl Core {
    /// The presentation feedback of every surface this frame showed, to answer when it is
    /// on screen ([`Backend::present`](crate::backend::Backend::present)).
    fn presentation_feedback(
        &mut self,
        output: &Output,
        states: &RenderElementStates,
    ) -> OutputPresentationFeedback {
        let mut feedback = OutputPresentationFeedback::new(output);
        for window in self.space.elements() {
            window.with_surfaces(|surface, data| {
                update_surface_primary_scanout_output(
                    surface,
                    output,
                    data,
                    states,
                    default_primary_scanout_output_compare,
                );
            });
            window.take_presentation_feedback(
                &mut feedback,
                surface_primary_scanout_output,
                |surface, _| surface_presentation_feedback_flags_from_states(surface, states),
            );
        }
        feedback
    }

    /// Records this frame's fence on the current release of every surface it presented, a
    /// linux-drm-syncobj-v1 release point or a zwp_linux_buffer_release_v1 (see the [module
    /// docs](self)). Only for rendered frames: a skipped frame sampled nothing.
    fn mark_sampled_buffers(&self, output: &Output, frame: &RenderedFrame) {
        let states = &frame.states;
        let reader = self.reader(output);
        // Exported only when some sampled buffer has a release (and once per frame).
        let fence = || match &frame.scanned_out {
            Some(scanout) => Some(ReleaseFence::Scanout(scanout.clone())),
            None => frame.render_fence().map(ReleaseFence::Rendered),
        };
        for window in self.space.elements() {
            window.with_surfaces(|surface, data| {
                if !states.element_was_presented(surface) {
                    return;
                }
                if data.cached_state.has::<DrmSyncobjCachedState>() {
                    let mut cached = data.cached_state.get::<DrmSyncobjCachedState>();
                    if let Some(release) = cached.current().release_point.as_mut() {
                        release.sampled_by(reader, fence());
                    }
                }
                if data.cached_state.has::<ExplicitSyncCachedState>() {
                    let mut cached = data.cached_state.get::<ExplicitSyncCachedState>();
                    if let Some(release) = cached.current().release.as_mut() {
                        release.sampled_by(reader, fence());
                    }
                }
            });
        }
    }

    /// Every window gets its frame callbacks each tick, from an output it is on (the primary
    /// one when it is on none).
    fn send_frame_callbacks(&self, now: Time<Monotonic>) {
        let now: Duration = now.into();
        for window in self.space.elements() {
            let output = self
                .space
                .outputs_for_element(window)
                .into_iter()
                .next()
                .unwrap_or_else(|| self.primary_output().clone());
            window.send_frame(&output, now, Some(Duration::ZERO), |_, _| {
                Some(output.clone())
            });
        }
    }

    /// The release-fence reader an output's frames are recorded as: its index, stable because
    /// outputs are never removed from the list.
    fn reader(&self, output: &Output) -> Reader {
        let index = self.outputs.iter().position(|o| o == output).unwrap_or(0);
        Reader(index as u32)
    }

    fn finish_screenshot(&mut self, capture: Capture) {
        let Some(plan) = self.screenshot.as_mut() else {
            return;
        };
        plan.mark_taken();
        match capture.write_png(&plan.path) {
            Ok(()) => {
                info!(path = %plan.path.display(), width = capture.width, height = capture.height, "screenshot written");
                println!("fencegate: screenshot written to {}", plan.path.display());
                if plan.exit_after {
                    self.request_exit(0, "screenshot taken");
                }
            }
            Err(err) => {
                error!("writing the screenshot failed: {err:#}");
                if plan.exit_after {
                    self.request_exit(1, "screenshot failed");
                }
            }
        }
    }
}
