//! linux-dmabuf: buffers are imported into the renderer as they are created, so a client learns
//! at once (not at its first commit) that a buffer cannot be used: `failed` for `create`,
//! `invalid_wl_buffer` for `create_immed`. This is also where a buffer the renderer could not
//! read safely is stopped (see `backend::headless`, kms_swrast): a client buffer must never be
//! able to crash the compositor.

use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::delegate_dmabuf;
use smithay::wayland::dmabuf::{DmabufGlobal, DmabufHandler, DmabufState, ImportNotifier};
use tracing::warn;

use crate::state::State;

impl DmabufHandler for State {
    fn dmabuf_state(&mut self) -> &mut DmabufState {
        &mut self
            .core
            .dmabuf
            .as_mut()
            .expect("the dmabuf global exists only with its state")
            .0
    }

    fn dmabuf_imported(
        &mut self,
        _global: &DmabufGlobal,
        dmabuf: Dmabuf,
        notifier: ImportNotifier,
    ) {
        match self.backend.import_dmabuf(&dmabuf) {
            Ok(()) => {
                // The buffer object is created by Smithay here; nothing else to keep.
                let _ = notifier.successful::<State>();
            }
            Err(err) => {
                warn!("refusing a client dma-buf: {err:#}");
                notifier.failed();
            }
        }
    }
}

delegate_dmabuf!(State);
