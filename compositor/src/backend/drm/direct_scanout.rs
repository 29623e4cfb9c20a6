//! Direct scanout: a client dma-buf that covers the whole output goes onto the primary plane
//! as it is, with no copy through the renderer.
//!
//! # Which surface
//! The topmost window, if it covers the output exactly with one surface: no subsurface, no
//! popup, buffer scale 1, no transform, no viewport cropping or scaling, and a dma-buf buffer
//! the device can import as a framebuffer. Anything else is composited.
//!
//! # Its acquire fence: awaited before the commit, not passed as IN_FENCE_FD
//! fencegate latches a surface state only once its acquire fences have signalled
//! (`fencegate_protocols::commit_blocker`), so by the time a buffer is a candidate its fence is
//! done. The alternative, putting the client's fence on the plane as `IN_FENCE_FD`, would make
//! the **whole CRTC's** commit wait for it: one slow client would hold every plane of the output,
//! and the compositor's frame timing with it. What goes on the plane instead is a fence that
//! is already signalled: an explicit in-fence switches off the kernel's wait for the buffer's
//! implicit fences (`drm_gem_plane_helper_prepare_fb`), which may belong to work of the client's
//! that has nothing to do with this frame (see `fence_bridge::kms`).
//!
//! # Its release
//! The buffer is read by the display until the frame after it starts scanning out: its release
//! waits for that commit's `OUT_FENCE_PTR` fence ([`fencegate_protocols::ScanoutFence`]).

use std::collections::HashMap;
use std::rc::Rc;

use smithay::backend::allocator::dmabuf::{Dmabuf, WeakDmabuf};
use smithay::backend::allocator::gbm::GbmDevice;
use smithay::backend::allocator::Buffer as _;
use smithay::backend::drm::gbm::{framebuffer_from_dmabuf, GbmFramebuffer};
use smithay::backend::drm::DrmDeviceFd;
use smithay::backend::renderer::element::{
    Id, RenderElementPresentationState, RenderElementState, RenderElementStates,
};
use smithay::backend::renderer::utils::{with_renderer_surface_state, Buffer, CommitCounter};
use smithay::desktop::{PopupManager, Window};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::utils::{Logical, Rectangle, Transform};
use smithay::wayland::compositor::get_children;
use smithay::wayland::dmabuf::get_dmabuf;
use tracing::{debug, info};

use crate::state::Core;

/// A surface whose buffer could go straight onto the primary plane.
pub struct Candidate {
    pub surface: WlSurface,
    /// Keeps the client's `wl_buffer` from being released while the display reads it.
    pub buffer: Buffer,
    pub dmabuf: Dmabuf,
    /// The surface commit whose buffer this is: a new commit needs a new flip, even of the same
    /// buffer (its content changed).
    pub commit: CommitCounter,
}

impl Candidate {
    /// What presentation feedback and release marking see: the surface was shown, zero-copy.
    pub fn states(&self, area: Rectangle<i32, Logical>) -> RenderElementStates {
        let mut states = RenderElementStates::default();
        states.states.insert(
            Id::from_wayland_resource(&self.surface),
            RenderElementState {
                visible_area: (area.size.w * area.size.h) as usize,
                presentation_state: RenderElementPresentationState::ZeroCopy,
            },
        );
        states
    }
}

/// Whether `window` covers the output's `area` exactly: what makes it a candidate, and what
/// earns it the scanout feedback.
pub fn covers(core: &Core, window: &Window, area: Rectangle<i32, Logical>) -> bool {
    core.space.element_bbox(window) == Some(area)
}

/// The topmost window's surface, if it can be scanned out on an output covering `area`.
pub fn candidate(core: &Core, area: Rectangle<i32, Logical>) -> Option<Candidate> {
    let window = core.space.elements().rev().find(|window| {
        core.space
            .element_bbox(window)
            .is_some_and(|bbox| bbox.overlaps(area))
    })?;
    if !covers(core, window, area) {
        return None;
    }
    let surface = window.toplevel()?.wl_surface().clone();
    if !get_children(&surface).is_empty()
        || PopupManager::popups_for_surface(&surface).next().is_some()
    {
        return None;
    }
    let (buffer, commit) = with_renderer_surface_state(&surface, |state| {
        let view = state.view()?;
        let full = state.buffer_size()?;
        let plain = state.buffer_scale() == 1
            && state.buffer_transform() == Transform::Normal
            && view.dst == area.size
            && view.src.loc.x == 0.0
            && view.src.loc.y == 0.0
            && view.src.size.w == f64::from(full.w)
            && view.src.size.h == f64::from(full.h)
            && full == area.size;
        plain.then(|| (state.buffer().cloned(), state.current_commit()))
    })
    .flatten()?;
    let buffer = buffer?;
    let dmabuf = get_dmabuf(&buffer).ok()?.clone();
    Some(Candidate {
        surface,
        buffer,
        dmabuf,
        commit,
    })
}

/// The framebuffers of client dma-bufs, added once per buffer and removed when the buffer is
/// gone; `None` for a buffer the device cannot scan out (tried once).
#[derive(Default)]
pub struct ClientFramebuffers {
    framebuffers: HashMap<WeakDmabuf, Option<Rc<GbmFramebuffer>>>,
}

impl ClientFramebuffers {
    /// The framebuffer of `dmabuf` on `card`, adding it the first time.
    pub fn get(
        &mut self,
        card: &DrmDeviceFd,
        gbm: &GbmDevice<DrmDeviceFd>,
        dmabuf: &Dmabuf,
    ) -> Option<Rc<GbmFramebuffer>> {
        // Buffers the client destroyed: their framebuffers go (unless still on screen: the
        // flip holds its own reference).
        self.framebuffers.retain(|weak, _| !weak.is_gone());
        self.framebuffers
            .entry(dmabuf.weak())
            .or_insert_with(|| {
                // The primary plane is opaque: an alpha format is scanned out as its X twin.
                match framebuffer_from_dmabuf(card, gbm, dmabuf, true, false) {
                    Ok(framebuffer) => Some(Rc::new(framebuffer)),
                    Err(err) => {
                        info!(
                            format = ?dmabuf.format(),
                            "drm: a client buffer cannot be scanned out ({err}); it is composited"
                        );
                        None
                    }
                }
            })
            .clone()
    }

    /// `dmabuf` failed the kernel's test commit: never try it again.
    pub fn refuse(&mut self, dmabuf: &Dmabuf) {
        debug!("drm: test commit refused a client buffer; it is composited");
        self.framebuffers.insert(dmabuf.weak(), None);
    }
}
