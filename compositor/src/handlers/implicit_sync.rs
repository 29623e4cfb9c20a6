//! Implicit sync (fencegate-protocols): dma-bufs committed without explicit sync wait for their
//! implicit write fences. Installed per surface in `compositor.rs`'s `new_surface`; the default
//! check skips commits that carry an acquire point or fence of either explicit-sync protocol.

use fencegate_protocols::implicit_sync::{ImplicitSyncHandler, ImplicitSyncState};

use crate::state::State;

impl ImplicitSyncHandler for State {
    fn implicit_sync_state(&mut self) -> &mut ImplicitSyncState {
        &mut self.core.implicit_sync
    }
}
