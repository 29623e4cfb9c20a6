//! linux-drm-syncobj-v1 (fencegate-protocols): explicit sync with DRM syncobj timelines. The
//! acquire-point wait is installed per surface in `compositor.rs`'s `new_surface`.

use fencegate_protocols::delegate_fencegate_drm_syncobj;
use fencegate_protocols::drm_syncobj::{DrmSyncobjHandler, DrmSyncobjState};

use crate::state::State;

impl DrmSyncobjHandler for State {
    fn drm_syncobj_state(&mut self) -> Option<&mut DrmSyncobjState> {
        self.core.drm_syncobj.as_mut()
    }
}

delegate_fencegate_drm_syncobj!(State);
