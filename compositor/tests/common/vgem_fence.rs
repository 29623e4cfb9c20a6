//! vgem's controllable fences for the kernel tests: panicking wrappers over
//! `fencegate_clients::vgem` (the ioctls live there, shared with the example clients).

use std::ops::Deref;

use fence_bridge::{DrmDevice, SyncFile};
use fencegate_clients::vgem;

use super::dmabuf::Bo;

/// A pending vgem fence, signalled on drop if the test did not (vgem would after ~10 s).
pub struct VgemFence(vgem::VgemFence);

impl VgemFence {
    /// Attaches a new fence (a write fence if `write`, else a read fence) to the BO `handle`.
    pub fn attach(vgem: &DrmDevice, handle: u32, write: bool) -> Self {
        VgemFence(vgem::VgemFence::attach(vgem, handle, write).expect("VGEM_FENCE_ATTACH"))
    }

    pub fn signal(&mut self) {
        self.0.signal().expect("VGEM_FENCE_SIGNAL");
    }
}

/// A pending vgem write fence on a BO of its own, and a sync_file of it (`sync_file`).
pub struct PendingFence(vgem::PendingFence);

impl Deref for PendingFence {
    type Target = vgem::PendingFence;

    fn deref(&self) -> &vgem::PendingFence {
        &self.0
    }
}

impl PendingFence {
    pub fn new(vgem: &DrmDevice) -> Self {
        PendingFence(vgem::PendingFence::new(vgem).expect("a pending vgem fence as a sync_file"))
    }

    pub fn signal(&mut self) {
        self.0.signal().expect("VGEM_FENCE_SIGNAL");
    }
}

/// A sync_file that has signalled: the implicit fences of an idle vgem buffer (a stub fence).
pub fn signalled_sync_file(vgem: &DrmDevice) -> SyncFile {
    let bo = Bo::new(vgem, 0);
    vgem::signalled_sync_file(&bo.dmabuf)
        .unwrap_or_else(|err| panic!("an idle buffer's fences: {err}"))
}
