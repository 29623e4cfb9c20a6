//! Headless backend: one virtual output rendered offscreen at a fixed size and refresh rate.
//! Used by tests, CI and `fencegate check`.
//!
//! It renders with GLES on an EGL device that has a DRM render node, else on Mesa's surfaceless
//! platform (llvmpipe), and falls back to pixman where EGL is not usable at all. The log says
//! which one is in use.
//!
//! # Main device
//!
//! On an EGL device the backend knows its DRM render node ([`Headless::render_node`]): the
//! node whose dma-bufs the renderer imports, so linux-dmabuf gets version 4+ with default
//! feedback naming it as the main device. In the VM guest that is an EGL device Mesa drives with
//! its software path (`kms_swrast` + llvmpipe: Mesa reports it as a device with a render node,
//! not as `EGL_MESA_device_software`), e.g. vgem's render node. On the surfaceless platform
//! (software, no device) and with pixman there is no node: linux-dmabuf stays version 3.
//!
//! Client dma-bufs go through [`GuardedGles`]: on Mesa's kms_swrast a buffer it cannot map is
//! never handed to it (see `guarded_gles`).

use anyhow::{anyhow, Context};
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::format::FormatSet;
use smithay::backend::allocator::Fourcc;
use smithay::backend::drm::DrmNode;
use smithay::backend::egl::native::EGLSurfacelessDisplay;
use smithay::backend::egl::{EGLContext, EGLDevice, EGLDisplay};
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::gles::{GlesRenderbuffer, GlesRenderer};
use smithay::backend::renderer::pixman::PixmanRenderer;
use smithay::backend::renderer::{
    Bind, ExportMem, ImportAll, ImportDma, Offscreen, Renderer, Texture,
};
use smithay::output::Output;
use smithay::reexports::pixman;
use smithay::reexports::wayland_protocols::wp::presentation_time::server::wp_presentation_feedback;
use smithay::utils::{Size, Transform};
use tracing::{info, warn};

use super::guarded_gles::GuardedGles;
use crate::render::{render_space, RenderedFrame};
use crate::state::Core;

/// Pixel format of the offscreen output.
const OUTPUT_FORMAT: Fourcc = Fourcc::Abgr8888;

pub struct Headless {
    renderer: OffscreenRenderer,
    /// The render node of the EGL device rendering, if it is one (see the module docs).
    render_node: Option<DrmNode>,
    damage_tracker: OutputDamageTracker,
    size: Size<i32, smithay::utils::Physical>,
}

enum OffscreenRenderer {
    Gles {
        renderer: Box<GuardedGles>,
        target: GlesRenderbuffer,
    },
    Pixman {
        renderer: PixmanRenderer,
        target: pixman::Image<'static, 'static>,
    },
}

impl Headless {
    /// Creates the renderer and its offscreen target of `width`x`height`.
    pub fn new(width: i32, height: i32, force_pixman: bool) -> anyhow::Result<Headless> {
        let size = Size::from((width, height));
        let buffer_size = Size::from((width, height));
        let renderer = if force_pixman {
            info!("headless: pixman renderer (asked for with --pixman)");
            None
        } else {
            match init_gles() {
                Ok((renderer, what, node)) => {
                    info!("headless: GLES renderer on {what}");
                    Some((renderer, node))
                }
                Err(err) => {
                    warn!("headless: no usable EGL ({err:#}); using the pixman renderer");
                    None
                }
            }
        };
        let render_node = renderer.as_ref().and_then(|(_, node)| *node);
        let renderer = match renderer.map(|(renderer, _)| renderer) {
            Some(mut renderer) => {
                let target = renderer
                    .create_buffer(OUTPUT_FORMAT, buffer_size)
                    .context("creating the GLES offscreen buffer")?;
                let renderer = Box::new(GuardedGles::new(renderer, render_node));
                OffscreenRenderer::Gles { renderer, target }
            }
            None => {
                let mut renderer = PixmanRenderer::new().context("creating the pixman renderer")?;
                let target = renderer
                    .create_buffer(OUTPUT_FORMAT, buffer_size)
                    .context("creating the pixman offscreen image")?;
                OffscreenRenderer::Pixman { renderer, target }
            }
        };
        Ok(Headless {
            renderer,
            render_node,
            damage_tracker: OutputDamageTracker::new(size, 1.0, Transform::Normal),
            size,
        })
    }

    pub fn size(&self) -> Size<i32, smithay::utils::Physical> {
        self.size
    }

    /// The DRM render node of the EGL device the renderer runs on; None on the surfaceless
    /// platform and with pixman.
    pub fn render_node(&self) -> Option<DrmNode> {
        self.render_node
    }

    pub fn renderer_name(&self) -> &'static str {
        match self.renderer {
            OffscreenRenderer::Gles { .. } => "gles",
            OffscreenRenderer::Pixman { .. } => "pixman",
        }
    }

    /// pixman has finished drawing when `render` returns, so the timestamp taken then is the
    /// completion time; GL work may still be queued, so GLES claims nothing.
    pub fn presentation_flags(&self) -> wp_presentation_feedback::Kind {
        match self.renderer {
            OffscreenRenderer::Gles { .. } => wp_presentation_feedback::Kind::empty(),
            OffscreenRenderer::Pixman { .. } => wp_presentation_feedback::Kind::HwCompletion,
        }
    }

    pub fn dmabuf_formats(&self) -> FormatSet {
        match &self.renderer {
            OffscreenRenderer::Gles { renderer, .. } => renderer.inner.dmabuf_formats(),
            OffscreenRenderer::Pixman { renderer, .. } => renderer.dmabuf_formats(),
        }
    }

    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> anyhow::Result<()> {
        match &mut self.renderer {
            OffscreenRenderer::Gles { renderer, .. } => renderer.import_client_dmabuf(dmabuf),
            OffscreenRenderer::Pixman { renderer, .. } => renderer
                .import_dmabuf(dmabuf, None)
                .map(drop)
                .map_err(|e| anyhow!("{e:?}")),
        }
    }

    /// Renders the one output's next frame.
    pub fn render(
        &mut self,
        core: &Core,
        output: &Output,
        capture: bool,
    ) -> anyhow::Result<RenderedFrame> {
        let tracker = &mut self.damage_tracker;
        match &mut self.renderer {
            OffscreenRenderer::Gles { renderer, target } => {
                render_into(&mut **renderer, target, tracker, core, output, capture)
            }
            OffscreenRenderer::Pixman { renderer, target } => {
                render_into(renderer, target, tracker, core, output, capture)
            }
        }
    }
}

/// Renders into an offscreen target. It keeps its contents between frames, so only the damage
/// since the last frame needs redrawing: its age is always 1 (the first frame is drawn whole
/// anyway, as the damage tracker has no history yet).
fn render_into<R, T>(
    renderer: &mut R,
    target: &mut T,
    tracker: &mut OutputDamageTracker,
    core: &Core,
    output: &Output,
    capture: bool,
) -> anyhow::Result<RenderedFrame>
where
    R: Renderer + ImportAll + ExportMem + Bind<T>,
    R::TextureId: Clone + Texture + 'static,
{
    let mut framebuffer = renderer
        .bind(target)
        .map_err(|e| anyhow!("binding the offscreen target: {e:?}"))?;
    render_space(
        renderer,
        &mut framebuffer,
        tracker,
        1,
        core,
        output,
        capture,
    )
}

/// A GLES renderer on the best EGL display there is, a description of it for the log, and the
/// device's render node (None on the surfaceless platform).
fn init_gles() -> anyhow::Result<(GlesRenderer, String, Option<DrmNode>)> {
    // A device with a render node is a real (or virtual) GPU; prefer it over software rendering.
    let device = EGLDevice::enumerate().ok().and_then(|mut devices| {
        devices.find(|device| {
            !device.is_software() && device.try_get_render_node().ok().flatten().is_some()
        })
    });
    let (display, what, node) = match device {
        Some(device) => {
            let node: Option<DrmNode> = device.try_get_render_node().ok().flatten();
            let what = format!(
                "EGL device {}",
                node.map(|n| n.to_string()).unwrap_or_default()
            );
            // SAFETY: the device outlives nothing here; EGLDisplay keeps what it needs.
            (
                unsafe { EGLDisplay::new(device) }.context("EGL display on the device")?,
                what,
                node,
            )
        }
        None => (
            // SAFETY: the surfaceless platform has no native resources to keep alive.
            unsafe { EGLDisplay::new(EGLSurfacelessDisplay) }.context("EGL surfaceless display")?,
            "the surfaceless EGL platform (software)".to_string(),
            None,
        ),
    };
    let context = EGLContext::new(&display).context("EGL context")?;
    // SAFETY: the context is fresh and only this renderer uses it.
    let renderer = unsafe { GlesRenderer::new(context) }.context("GLES renderer")?;
    Ok((renderer, what, node))
}
