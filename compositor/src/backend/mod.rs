//! Backends: what drives the output and the input. A closed enum, as in niri: each method is a
//! `match`, and a backend without a feature has a no-op arm.

pub mod drm;
mod guarded_gles;
pub mod headless;
pub mod winit;

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::format::FormatSet;
use smithay::backend::drm::DrmNode;
use smithay::desktop::utils::OutputPresentationFeedback;
use smithay::output::Output;
use smithay::reexports::wayland_protocols::wp::presentation_time::server::wp_presentation_feedback;

pub use self::drm::Drm;
pub use self::headless::Headless;
pub use self::winit::Winit;
use crate::render::RenderedFrame;
use crate::state::Core;

pub enum Backend {
    Headless(Box<Headless>),
    Winit(Box<Winit>),
    Drm(Box<Drm>),
}

impl Backend {
    /// Renders `output`'s next frame (headless and winit have one output only).
    pub fn render(
        &mut self,
        core: &Core,
        output: &Output,
        capture: bool,
    ) -> anyhow::Result<RenderedFrame> {
        match self {
            Backend::Headless(headless) => headless.render(core, output, capture),
            Backend::Winit(winit) => winit.render(core, output, capture),
            Backend::Drm(drm) => drm.render(core, output, capture),
        }
    }

    /// Which renderer draws (for the log and the tests).
    pub fn renderer_name(&self) -> &'static str {
        match self {
            Backend::Headless(headless) => headless.renderer_name(),
            Backend::Winit(_) => "gles",
            Backend::Drm(drm) => drm.renderer_name(),
        }
    }

    pub fn dmabuf_formats(&mut self) -> FormatSet {
        match self {
            Backend::Headless(headless) => headless.dmabuf_formats(),
            Backend::Winit(winit) => winit.dmabuf_formats(),
            Backend::Drm(drm) => drm.dmabuf_formats(),
        }
    }

    /// The render node clients should allocate dma-bufs on, where one is known.
    pub fn render_node(&self) -> Option<DrmNode> {
        match self {
            Backend::Headless(headless) => headless.render_node(),
            Backend::Winit(winit) => winit.render_node(),
            Backend::Drm(drm) => drm.render_node(),
        }
    }

    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> anyhow::Result<()> {
        match self {
            Backend::Headless(headless) => headless.import_dmabuf(dmabuf),
            Backend::Winit(winit) => winit.import_dmabuf(dmabuf),
            Backend::Drm(drm) => drm.import_dmabuf(dmabuf),
        }
    }

    /// What presentation feedback can truthfully claim about our timestamps.
    pub fn presentation_flags(&self) -> wp_presentation_feedback::Kind {
        match self {
            Backend::Headless(headless) => headless.presentation_flags(),
            // The host compositor shows the frame some time after our swap; we cannot know when.
            Backend::Winit(_) => wp_presentation_feedback::Kind::empty(),
            Backend::Drm(drm) => drm.presentation_flags(),
        }
    }

    /// Answers the presentation feedback of a frame of `output` just rendered: at once with
    /// `time`, or, on DRM, with the time its flip reaches the screen.
    pub fn present(
        &mut self,
        output: &Output,
        mut feedback: OutputPresentationFeedback,
        time: smithay::utils::Time<smithay::utils::Monotonic>,
        refresh: smithay::wayland::presentation::Refresh,
        sequence: u64,
    ) {
        match self {
            Backend::Drm(drm) => drm.defer_presentation(output, feedback, sequence),
            _ => feedback.presented(time, refresh, sequence, self.presentation_flags()),
        }
    }

    /// Per-surface dma-buf feedback after a frame (DRM: scanout tranches for fullscreen
    /// surfaces; elsewhere the default feedback is all there is).
    pub fn send_dmabuf_feedback(&self, core: &Core) {
        if let Backend::Drm(drm) = self {
            drm.send_dmabuf_feedback(core);
        }
    }

    /// Ctrl+Alt+F<n>: switches the session to another VT (DRM only).
    pub fn change_vt(&mut self, vt: i32) {
        if let Backend::Drm(drm) = self {
            drm.change_vt(vt);
        }
    }
}
