//! vgem's controllable fences (include/uapi/drm/vgem_drm.h), for the kernel tests.

use std::os::fd::{AsFd, AsRawFd};

use fence_bridge::{Access, DmaBuf, DrmDevice, SyncFile};

use super::dmabuf::Bo;

/// `struct drm_vgem_fence_attach`.
#[repr(C)]
struct FenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}

/// `struct drm_vgem_fence_signal`.
#[repr(C)]
struct FenceSignal {
    fence: u32,
    flags: u32,
}

/// `DRM_IOCTL_VGEM_FENCE_ATTACH`: `_IOWR('d', 0x41, struct drm_vgem_fence_attach)` (16 bytes).
const VGEM_FENCE_ATTACH: libc::c_ulong = 0xc010_6441;
/// `DRM_IOCTL_VGEM_FENCE_SIGNAL`: `_IOW('d', 0x42, struct drm_vgem_fence_signal)` (8 bytes).
const VGEM_FENCE_SIGNAL: libc::c_ulong = 0x4008_6442;
const VGEM_FENCE_WRITE: u32 = 0x1;

fn ioctl<T>(device: &DrmDevice, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    loop {
        // SAFETY: `request` is a vgem ioctl whose argument is the #[repr(C)] struct `T`.
        let ret = unsafe {
            libc::ioctl(
                device.as_fd().as_raw_fd(),
                request as _,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// A pending vgem fence, signalled on drop if the test did not (vgem would after ~10 s).
pub struct VgemFence<'v> {
    vgem: &'v DrmDevice,
    id: Option<u32>,
}

impl<'v> VgemFence<'v> {
    /// Attaches a new fence (a write fence if `write`, else a read fence) to the BO `handle`.
    pub fn attach(vgem: &'v DrmDevice, handle: u32, write: bool) -> Self {
        let mut arg = FenceAttach {
            handle,
            flags: if write { VGEM_FENCE_WRITE } else { 0 },
            out_fence: 0,
            pad: 0,
        };
        ioctl(vgem, VGEM_FENCE_ATTACH, &mut arg).expect("VGEM_FENCE_ATTACH");
        VgemFence {
            vgem,
            id: Some(arg.out_fence),
        }
    }

    pub fn signal(&mut self) {
        let fence = self.id.take().expect("signalled once");
        let mut arg = FenceSignal { fence, flags: 0 };
        ioctl(self.vgem, VGEM_FENCE_SIGNAL, &mut arg).expect("VGEM_FENCE_SIGNAL");
    }
}

impl Drop for VgemFence<'_> {
    fn drop(&mut self) {
        if let Some(fence) = self.id.take() {
            let mut arg = FenceSignal { fence, flags: 0 };
            let _ = ioctl(self.vgem, VGEM_FENCE_SIGNAL, &mut arg);
        }
    }
}

/// A pending vgem write fence on a BO of its own, and a sync_file of it.
pub struct PendingFence<'v> {
    // Declared first: signalled (on drop) before its BO goes.
    fence: VgemFence<'v>,
    _bo: Bo,
    pub sync_file: SyncFile,
}

impl<'v> PendingFence<'v> {
    pub fn new(vgem: &'v DrmDevice) -> Self {
        let bo = Bo::new(vgem, 0);
        let fence = VgemFence::attach(vgem, bo.handle(), true);
        let sync_file = DmaBuf::new(bo.dmabuf.as_fd())
            .export_sync_file(Access::Write)
            .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
        PendingFence {
            fence,
            _bo: bo,
            sync_file,
        }
    }

    pub fn signal(&mut self) {
        self.fence.signal();
    }
}

/// A sync_file that has signalled: the implicit fences of an idle vgem buffer (a stub fence).
pub fn signalled_sync_file(vgem: &DrmDevice) -> SyncFile {
    let bo = Bo::new(vgem, 0);
    let sync_file = DmaBuf::new(bo.dmabuf.as_fd())
        .export_sync_file(Access::Write)
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    assert!(sync_file.is_signaled().unwrap(), "an idle buffer's fences");
    sync_file
}
