//! zwp_linux_explicit_synchronization_v1 (fencegate-protocols): explicit sync with sync_file
//! fences and per-commit release events. The acquire-fence wait is installed per surface in
//! `compositor.rs`'s `new_surface`.

use fencegate_protocols::delegate_fencegate_explicit_sync;
use fencegate_protocols::explicit_sync::{ExplicitSyncHandler, ExplicitSyncState};

use crate::state::State;

impl ExplicitSyncHandler for State {
    fn explicit_sync_state(&mut self) -> Option<&mut ExplicitSyncState> {
        self.core.explicit_sync.as_mut()
    }
}

delegate_fencegate_explicit_sync!(State);
