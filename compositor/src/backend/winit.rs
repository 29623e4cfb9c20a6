//! Nested backend: one window on the host's Wayland or X11 session, rendered with GLES.

use anyhow::{anyhow, Context};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::format::FormatSet;
use smithay::backend::allocator::Fourcc;
use smithay::backend::drm::DrmNode;
use smithay::backend::egl::EGLDevice;
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::gles::{GlesRenderbuffer, GlesRenderer};
use smithay::backend::renderer::{Bind, ImportDma, Offscreen};
use smithay::backend::winit::{self, WinitEvent, WinitEventLoop, WinitGraphicsBackend};
use smithay::output::{Mode, Output};
use smithay::reexports::calloop::LoopHandle;
use smithay::utils::{Physical, Size, Transform};
use tracing::info;

use crate::backend::Backend;
use crate::render::{render_space, RenderedFrame};
use crate::state::{Core, State};

pub struct Winit {
    backend: WinitGraphicsBackend<GlesRenderer>,
    damage_tracker: OutputDamageTracker,
    render_node: Option<DrmNode>,
}

impl Winit {
    /// Opens the window; its event source must then be inserted with [`Winit::insert_events`].
    pub fn new() -> anyhow::Result<(Winit, WinitEventLoop)> {
        let (mut backend, events) = winit::init::<GlesRenderer>()
            .map_err(|err| anyhow!("cannot open a winit window: {err}"))?;
        let render_node = EGLDevice::device_for_display(backend.renderer().egl_context().display())
            .ok()
            .and_then(|device| device.try_get_render_node().ok().flatten());
        info!(
            "winit: GLES renderer, window {:?}, render node {}",
            backend.window_size(),
            render_node
                .map(|n| n.to_string())
                .unwrap_or_else(|| "none (software)".into())
        );
        let damage_tracker = window_damage_tracker(backend.window_size());
        Ok((
            Winit {
                backend,
                damage_tracker,
                render_node,
            },
            events,
        ))
    }

    pub fn window_size(&self) -> Size<i32, Physical> {
        self.backend.window_size()
    }

    /// The window changed size: the next frame is drawn whole at the new size.
    pub fn resize(&mut self, size: Size<i32, Physical>) {
        self.damage_tracker = window_damage_tracker(size);
    }

    pub fn render_node(&self) -> Option<DrmNode> {
        self.render_node
    }

    pub fn dmabuf_formats(&mut self) -> FormatSet {
        self.backend.renderer().dmabuf_formats()
    }

    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> anyhow::Result<()> {
        self.backend
            .renderer()
            .import_dmabuf(dmabuf, None)
            .map(drop)
            .map_err(|e| anyhow!("{e:?}"))
    }

    /// Renders the window's (the one output's) next frame.
    pub fn render(
        &mut self,
        core: &Core,
        output: &Output,
        capture: bool,
    ) -> anyhow::Result<RenderedFrame> {
        let age = self.backend.buffer_age().unwrap_or(0);
        let (renderer, mut framebuffer) = self.backend.bind().context("binding the window")?;
        let mut frame = render_space(
            renderer,
            &mut framebuffer,
            &mut self.damage_tracker,
            age,
            core,
            output,
            false,
        )?;
        drop(framebuffer);
        if frame.rendered {
            self.backend
                .submit(frame.damage.as_deref())
                .context("presenting the window")?;
        }
        if capture {
            frame.capture = Some(self.capture(core, output)?);
        }
        Ok(frame)
    }

    /// Draws the same scene again into an offscreen buffer and reads that back: reading the
    /// window's own framebuffer breaks the next swap on some EGL stacks (Mesa on Xvfb).
    fn capture(
        &mut self,
        core: &Core,
        output: &Output,
    ) -> anyhow::Result<crate::screenshot::Capture> {
        let size = self.backend.window_size();
        let renderer = self.backend.renderer();
        let mut target: GlesRenderbuffer = renderer
            .create_buffer(Fourcc::Abgr8888, (size.w, size.h).into())
            .map_err(|e| anyhow!("creating the capture buffer: {e:?}"))?;
        let mut framebuffer = renderer
            .bind(&mut target)
            .map_err(|e| anyhow!("binding the capture buffer: {e:?}"))?;
        let mut tracker = OutputDamageTracker::new(size, 1.0, Transform::Normal);
        let frame = render_space(
            renderer,
            &mut framebuffer,
            &mut tracker,
            0,
            core,
            output,
            true,
        )?;
        frame
            .capture
            .ok_or_else(|| anyhow!("the capture pass returned no pixels"))
    }

    /// Routes the window's events into the loop: resizes change the output mode, input goes to
    /// the seat, closing the window stops the compositor.
    pub fn insert_events(
        events: WinitEventLoop,
        handle: &LoopHandle<'static, State>,
    ) -> anyhow::Result<()> {
        handle
            .insert_source(events, |event, _, state| match event {
                WinitEvent::Resized { size, .. } => {
                    let output = state.core.primary_output();
                    let mode = Mode {
                        size,
                        refresh: output.current_mode().map_or(60_000, |m| m.refresh),
                    };
                    output.change_current_state(Some(mode), None, None, None);
                    output.set_preferred(mode);
                    if let Backend::Winit(winit) = &mut state.backend {
                        winit.resize(size);
                    }
                    info!(?size, "winit: window resized");
                }
                WinitEvent::Input(event) => state.handle_input(event),
                WinitEvent::CloseRequested => state.core.request_exit(0, "the window was closed"),
                WinitEvent::Focus(_) | WinitEvent::Redraw => {}
            })
            .map_err(|err| anyhow!("inserting the winit source: {err}"))?;
        Ok(())
    }
}

/// GL's window framebuffer has its origin at the bottom left, so the window is drawn flipped.
/// This stays inside the backend: clients are told the output is upright, which it is on screen.
fn window_damage_tracker(size: Size<i32, Physical>) -> OutputDamageTracker {
    OutputDamageTracker::new(size, 1.0, Transform::Flipped180)
}
