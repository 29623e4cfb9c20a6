//! Drawing the space onto one output, for any renderer, and reading the result back.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::anyhow;
use fence_bridge::{EglFenceError, SyncFile};
use fencegate_protocols::ScanoutFence;
use smithay::backend::allocator::Fourcc;
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::element::surface::WaylandSurfaceRenderElement;
use smithay::backend::renderer::element::RenderElementStates;
use smithay::backend::renderer::sync::SyncPoint;
use smithay::backend::renderer::{Color32F, ExportMem, ImportAll, Renderer, Texture};
use smithay::output::Output;
use smithay::utils::{Physical, Rectangle};
use tracing::warn;

use crate::screenshot::Capture;
use crate::state::Core;

/// The output's background: dark enough that any client content stands out in a screenshot.
pub const CLEAR_COLOR: Color32F = Color32F::new(0.08, 0.08, 0.1, 1.0);

/// What one render pass did.
pub struct RenderedFrame {
    /// False when nothing was damaged and the renderer skipped the frame.
    pub rendered: bool,
    /// What changed, where the renderer knows (None: everything).
    pub damage: Option<Vec<Rectangle<i32, Physical>>>,
    /// Which surfaces ended up on screen and how; feeds presentation feedback and says whose
    /// buffers this frame sampled.
    pub states: RenderElementStates,
    /// Where the frame's rendering completes (the renderer's fence; signalled for a skipped
    /// frame and for renderers that finish before returning, like pixman). Release points of
    /// the buffers it sampled are signalled after it (see `frame_clock`).
    pub sync: SyncPoint,
    /// Set when the display scans the frame's surface out directly, with no render pass: its
    /// buffer is read until the next frame is on screen, so its release waits for this fence
    /// instead of `sync` (see `backend::drm::direct_scanout`).
    pub scanned_out: Option<Arc<ScanoutFence>>,
    pub capture: Option<Capture>,
    /// `sync` as a sync_file, exported on first use ([`RenderedFrame::render_fence`]).
    render_fence: OnceCell<Option<Arc<SyncFile>>>,
}

impl RenderedFrame {
    /// A frame that is shown by the display's reading a client buffer, with no render pass
    /// (see `backend::drm::direct_scanout`).
    pub fn scanned_out(states: RenderElementStates, scanout: Arc<ScanoutFence>) -> RenderedFrame {
        RenderedFrame {
            rendered: true,
            damage: None,
            states,
            sync: SyncPoint::signaled(),
            scanned_out: Some(scanout),
            capture: None,
            render_fence: OnceCell::new(),
        }
    }

    /// The frame's render fence as a sync_file, exported from EGL once per frame for whoever
    /// asks first (the KMS commit's `IN_FENCE_FD`, the release points of the buffers it
    /// sampled). `None` when there is nothing to wait for (no fence: the work is complete), or
    /// when the fence cannot be exported (said once): `sync` must then be waited for.
    pub fn render_fence(&self) -> Option<Arc<SyncFile>> {
        self.render_fence
            .get_or_init(|| export_render_fence(&self.sync))
            .clone()
    }

    /// A frame the backend could not draw now (a flip still in flight, the session paused): the
    /// damage stays for the next one.
    pub fn skipped() -> RenderedFrame {
        RenderedFrame {
            rendered: false,
            damage: None,
            states: RenderElementStates::default(),
            sync: SyncPoint::signaled(),
            scanned_out: None,
            capture: None,
            render_fence: OnceCell::new(),
        }
    }
}

fn export_render_fence(sync: &SyncPoint) -> Option<Arc<SyncFile>> {
    match SyncFile::from_sync_point(sync) {
        Ok(sync_file) => Some(Arc::new(sync_file)),
        Err(EglFenceError::NoFence) => None,
        Err(err) => {
            // A fence that cannot be exported (EGL_KHR_fence_sync only) or failed to export.
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!(%err, "the render fence cannot be exported as a sync_file: release points \
                    are signalled from the CPU when due, which may be before the GPU has \
                    finished sampling, and on DRM each frame waits for its rendering before the \
                    commit");
            }
            None
        }
    }
}

/// Renders `output`'s part of `core`'s space onto `framebuffer`; with `capture`, redraws
/// everything and reads the pixels back (offscreen targets only: see `Winit::capture`).
pub fn render_space<R>(
    renderer: &mut R,
    framebuffer: &mut R::Framebuffer<'_>,
    damage_tracker: &mut OutputDamageTracker,
    buffer_age: usize,
    core: &Core,
    output: &Output,
    capture: bool,
) -> anyhow::Result<RenderedFrame>
where
    R: Renderer + ImportAll + ExportMem,
    R::TextureId: Clone + Texture + 'static,
{
    // Age 0 forces a full redraw, so a capture never reads stale regions.
    let age = if capture { 0 } else { buffer_age };
    let result = smithay::desktop::space::render_output::<_, WaylandSurfaceRenderElement<R>, _, _>(
        output,
        renderer,
        framebuffer,
        1.0,
        age,
        [&core.space],
        &[],
        damage_tracker,
        CLEAR_COLOR,
    )
    .map_err(|err| anyhow!("rendering the output failed: {err:?}"))?;
    let rendered = result.damage.is_some();
    let damage = result.damage.cloned();
    let states = result.states;
    let sync = result.sync;

    let capture = if capture {
        Some(read_back(renderer, framebuffer, output)?)
    } else {
        None
    };
    Ok(RenderedFrame {
        rendered,
        damage,
        states,
        sync,
        scanned_out: None,
        capture,
        render_fence: OnceCell::new(),
    })
}

fn read_back<R>(
    renderer: &mut R,
    framebuffer: &R::Framebuffer<'_>,
    output: &Output,
) -> anyhow::Result<Capture>
where
    R: Renderer + ExportMem,
{
    let mode = output
        .current_mode()
        .ok_or_else(|| anyhow!("output has no mode"))?;
    let (width, height) = (mode.size.w, mode.size.h);
    let region = Rectangle::from_size((width, height).into());
    // Abgr8888 is R, G, B, A in memory order: exactly what PNG wants.
    let mapping = renderer
        .copy_framebuffer(framebuffer, region, Fourcc::Abgr8888)
        .map_err(|err| anyhow!("reading the framebuffer back failed: {err:?}"))?;
    let bytes = renderer
        .map_texture(&mapping)
        .map_err(|err| anyhow!("mapping the framebuffer copy failed: {err:?}"))?;
    // Offscreen targets only: Smithay's projection flips them, so rows come top first.
    let rgba = bytes[..width as usize * 4 * height as usize].to_vec();
    Ok(Capture {
        width: width as u32,
        height: height as u32,
        rgba,
    })
}
