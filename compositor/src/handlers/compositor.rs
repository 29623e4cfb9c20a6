//! wl_compositor, wl_subcompositor, wl_shm and buffer lifetimes.

use fencegate_protocols::{drm_syncobj, explicit_sync, implicit_sync};
use smithay::backend::renderer::utils::on_commit_buffer_handler;
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::Client;
use smithay::wayland::buffer::BufferHandler;
use smithay::wayland::compositor::{
    get_parent, is_sync_subsurface, CompositorClientState, CompositorHandler, CompositorState,
};
use smithay::wayland::shm::{ShmHandler, ShmState};
use smithay::{delegate_compositor, delegate_shm};

use crate::client_log::CommitKind;
use crate::state::{ClientState, State};

impl CompositorHandler for State {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.core.compositor_state
    }

    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        &client
            .get_data::<ClientState>()
            .expect("every client is inserted with ClientState")
            .compositor_state
    }

    fn new_surface(&mut self, surface: &WlSurface) {
        self.core.surfaces_alive += 1;
        // Commits with an unsignalled acquire point wait (off the loop) until it signals.
        drm_syncobj::wait_for_acquire_points::<State>(surface, |state| {
            state.core.loop_handle.clone()
        });
        explicit_sync::wait_for_acquire_fences::<State>(surface, |state| {
            state.core.loop_handle.clone()
        });
        // dma-bufs committed without explicit sync wait for their implicit write fences.
        implicit_sync::wait_for_dmabuf_readiness::<State>(surface, |state| {
            state.core.loop_handle.clone()
        });
    }

    fn destroyed(&mut self, _surface: &WlSurface) {
        self.core.surfaces_alive -= 1;
    }

    fn commit(&mut self, surface: &WlSurface) {
        on_commit_buffer_handler::<Self>(surface);
        self.core.client_log.committed(commit_kind(surface));
        if !is_sync_subsurface(surface) {
            let mut root = surface.clone();
            while let Some(parent) = get_parent(&root) {
                root = parent;
            }
            if let Some(window) = self.core.window_for_surface(&root) {
                window.on_commit();
            }
        }
        self.core.xdg_commit(surface);
    }
}

/// What `surface` shows after its commit was applied.
fn commit_kind(surface: &WlSurface) -> CommitKind {
    use smithay::backend::renderer::utils::with_renderer_surface_state;
    let buffer = with_renderer_surface_state(surface, |state| state.buffer().map(|b| (*b).clone()))
        .flatten();
    match buffer {
        None => CommitKind::WithoutBuffer,
        Some(buffer) if smithay::wayland::dmabuf::get_dmabuf(&buffer).is_ok() => CommitKind::Dmabuf,
        Some(_) => CommitKind::Shm,
    }
}

impl BufferHandler for State {
    fn buffer_destroyed(&mut self, buffer: &WlBuffer) {
        if let Some(syncobj) = self.core.drm_syncobj.as_mut() {
            syncobj.buffer_destroyed(buffer);
        }
        if let Some(explicit_sync) = self.core.explicit_sync.as_mut() {
            explicit_sync.buffer_destroyed(buffer);
        }
    }
}

impl ShmHandler for State {
    fn shm_state(&self) -> &ShmState {
        &self.core.shm_state
    }
}

delegate_compositor!(State);
delegate_shm!(State);
