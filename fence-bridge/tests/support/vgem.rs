//! vgem: the kernel's virtual GEM driver, as a source of dma-bufs with *controllable* fences.
//!
//! `VGEM_FENCE_ATTACH` puts a pending fence (driver `"vgem"`) on a buffer's reservation object,
//! as a write fence (`VGEM_FENCE_WRITE`) or a read fence; `VGEM_FENCE_SIGNAL` signals it. The
//! kernel refuses to attach a write fence while any fence is pending and a read fence while a
//! write fence is pending (`EBUSY`). An unsignalled vgem fence signals itself after ~10 s
//! (`VGEM_FENCE_TIMEOUT`): tests must not rely on one staying pending for more than a few
//! seconds. Closing the node signals every fence still pending on it.
//!
//! Everything here is the real kernel (the guest of `cargo xtask vm-test` loads vgem).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::Device as _;
use fence_bridge::{Access, DmaBuf, SyncFile};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};

use super::{find_node, require_device, Node};

/// `DRM_IOCTL_BASE`.
const DRM_IOCTL_BASE: u8 = b'd';
/// `DRM_COMMAND_BASE`: driver ioctls start here.
const DRM_COMMAND_BASE: u8 = 0x40;

/// `struct drm_vgem_fence_attach` (include/uapi/drm/vgem_drm.h).
#[repr(C)]
struct DrmVgemFenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}

/// `struct drm_vgem_fence_signal`.
#[repr(C)]
struct DrmVgemFenceSignal {
    fence: u32,
    flags: u32,
}

const VGEM_FENCE_WRITE: u32 = 0x1;
/// `DRM_IOCTL_VGEM_FENCE_ATTACH`: `DRM_IOWR(DRM_COMMAND_BASE + 0x01, struct drm_vgem_fence_attach)`.
const VGEM_FENCE_ATTACH: Opcode =
    opcode::read_write::<DrmVgemFenceAttach>(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 0x01);
/// `DRM_IOCTL_VGEM_FENCE_SIGNAL`: `DRM_IOW(DRM_COMMAND_BASE + 0x02, struct drm_vgem_fence_signal)`.
const VGEM_FENCE_SIGNAL: Opcode =
    opcode::write::<DrmVgemFenceSignal>(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 0x02);

/// Kernel tests in one binary share the vgem device and the process-wide fence-bridge counters
/// and fd table; they take this lock so that counts and fd numbers are their own.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An open vgem card node (dumb buffers need the card node; the fence ioctls work on both).
pub struct Vgem {
    pub node: Node,
}

/// A vgem fence id (`out_fence` of `VGEM_FENCE_ATTACH`), for [`Vgem::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgemFence(pub u32);

/// A dumb buffer on vgem and its PRIME dma-buf fd.
pub struct Bo {
    pub buffer: Option<DumbBuffer>,
    pub handle: u32,
    pub dmabuf: OwnedFd,
}

impl Vgem {
    /// The vgem card node; `None` (after a SKIP line) on a machine without one, a test failure
    /// in the guest (see [`require_device`]).
    pub fn open() -> Option<Vgem> {
        let node = require_device("vgem card node under /dev/dri", || {
            find_node("card", "vgem")
        })?;
        Some(Vgem { node })
    }

    /// A small dumb buffer (DRM_IOCTL_MODE_CREATE_DUMB), PRIME-exported as a dma-buf
    /// (DRM_IOCTL_PRIME_HANDLE_TO_FD, O_RDWR | O_CLOEXEC).
    pub fn create_bo(&self) -> Bo {
        let buffer = self
            .node
            .create_dumb_buffer((16, 16), DrmFourcc::Xrgb8888, 32)
            .expect("DRM_IOCTL_MODE_CREATE_DUMB on vgem");
        let handle = buffer.handle();
        let dmabuf = self
            .node
            .buffer_to_prime_fd(handle, drm::CLOEXEC | drm::RDWR)
            .expect("DRM_IOCTL_PRIME_HANDLE_TO_FD on vgem");
        Bo {
            buffer: Some(buffer),
            handle: u32::from(handle),
            dmabuf,
        }
    }

    /// Like [`create_bo`](Self::create_bo), `width` x `height` XRGB8888: big enough to scan out
    /// (e.g. imported into a KMS driver through PRIME). The pitch is the DumbBuffer's.
    pub fn create_bo_sized(&self, width: u32, height: u32) -> Bo {
        let buffer = self
            .node
            .create_dumb_buffer((width, height), DrmFourcc::Xrgb8888, 32)
            .expect("DRM_IOCTL_MODE_CREATE_DUMB on vgem");
        let handle = buffer.handle();
        let dmabuf = self
            .node
            .buffer_to_prime_fd(handle, drm::CLOEXEC | drm::RDWR)
            .expect("DRM_IOCTL_PRIME_HANDLE_TO_FD on vgem");
        Bo {
            buffer: Some(buffer),
            handle: u32::from(handle),
            dmabuf,
        }
    }

    /// `VGEM_FENCE_ATTACH`: a pending write (`write`) or read fence on `bo`.
    pub fn try_attach(&self, bo: &Bo, write: bool) -> io::Result<VgemFence> {
        let mut arg = DrmVgemFenceAttach {
            handle: bo.handle,
            flags: if write { VGEM_FENCE_WRITE } else { 0 },
            out_fence: 0,
            pad: 0,
        };
        // SAFETY: DRM_IOCTL_VGEM_FENCE_ATTACH takes a `struct drm_vgem_fence_attach *`;
        // DrmVgemFenceAttach is its #[repr(C)] layout (4 x u32).
        retry(|| unsafe {
            ioctl(
                self.node.as_fd(),
                Updater::<VGEM_FENCE_ATTACH, _>::new(&mut arg),
            )
        })?;
        Ok(VgemFence(arg.out_fence))
    }

    pub fn attach(&self, bo: &Bo, write: bool) -> VgemFence {
        self.try_attach(bo, write)
            .unwrap_or_else(|e| panic!("VGEM_FENCE_ATTACH (write: {write}): {e}"))
    }

    /// `VGEM_FENCE_SIGNAL`.
    pub fn try_signal(&self, fence: VgemFence) -> io::Result<()> {
        let mut arg = DrmVgemFenceSignal {
            fence: fence.0,
            flags: 0,
        };
        // SAFETY: DRM_IOCTL_VGEM_FENCE_SIGNAL takes a `struct drm_vgem_fence_signal *`;
        // DrmVgemFenceSignal is its #[repr(C)] layout (2 x u32).
        retry(|| unsafe {
            ioctl(
                self.node.as_fd(),
                Updater::<VGEM_FENCE_SIGNAL, _>::new(&mut arg),
            )
        })
    }

    pub fn signal(&self, fence: VgemFence) {
        self.try_signal(fence)
            .unwrap_or_else(|e| panic!("VGEM_FENCE_SIGNAL {fence:?}: {e}"))
    }

    pub fn destroy_bo(&self, mut bo: Bo) {
        if let Some(buffer) = bo.buffer.take() {
            let _ = self.node.destroy_dumb_buffer(buffer);
        }
    }
}

/// A pending vgem write fence on a fresh vgem BO, and a sync_file for it (the BO's dma-buf
/// implicit fences, `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`). Signalled on drop if still pending, so no
/// test leaves a fence to vgem's 10 s timeout.
pub struct PendingFence<'v> {
    vgem: &'v Vgem,
    bo: Option<Bo>,
    fence: Option<VgemFence>,
    pub sync_file: SyncFile,
}

impl<'v> PendingFence<'v> {
    pub fn new(vgem: &'v Vgem) -> Self {
        let bo = vgem.create_bo();
        let fence = vgem.attach(&bo, true);
        let sync_file = DmaBuf::new(bo.dmabuf.as_fd())
            .export_sync_file(Access::Write)
            .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
        PendingFence {
            vgem,
            bo: Some(bo),
            fence: Some(fence),
            sync_file,
        }
    }

    /// The BO's dma-buf: its implicit fences hold the vgem fence (as a write fence).
    pub fn dmabuf(&self) -> BorrowedFd<'_> {
        self.bo
            .as_ref()
            .expect("the BO lives until drop")
            .dmabuf
            .as_fd()
    }

    /// `VGEM_FENCE_SIGNAL`, once.
    pub fn signal(&mut self) {
        let fence = self.fence.take().expect("signalled once");
        self.vgem.signal(fence);
    }
}

impl Drop for PendingFence<'_> {
    fn drop(&mut self) {
        if let Some(fence) = self.fence.take() {
            let _ = self.vgem.try_signal(fence);
        }
        if let Some(bo) = self.bo.take() {
            self.vgem.destroy_bo(bo);
        }
    }
}

/// As libdrm's `drmIoctl`: restart on EINTR and EAGAIN.
fn retry(mut f: impl FnMut() -> rustix::io::Result<()>) -> io::Result<()> {
    loop {
        match f() {
            Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Number of open fds of this process (entries of /proc/self/fd, minus the one read_dir uses).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1)
}
