//! vgem: dumb buffers shared as dma-bufs, and the fences userspace attaches to them and signals
//! (`include/uapi/drm/vgem_drm.h`). vgem is the kernel's "virtual GEM" driver: no rendering, but
//! its fences are real `dma_fence`s in a dma-buf's reservation object, so a compositor sees them
//! exactly as it would see a GPU's — which is how these clients play a slow GPU.
//!
//! **An unsignalled vgem fence signals itself after about 10 s** (`VGEM_FENCE_TIMEOUT`):
//! nothing here may rely on one staying pending longer; [`MAX_PENDING`] is the limit the
//! clients enforce.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::Device as _;
use fence_bridge::{Access, DmaBuf, DrmDevice, SyncFile};

/// How long the clients let a vgem fence stay pending: safely below vgem's own ~10 s timeout,
/// after which the kernel signals it (with an error) by itself.
pub const MAX_PENDING: Duration = Duration::from_secs(8);

/// A linear XRGB8888 dumb buffer on vgem and its dma-buf. The GEM handle stays open, so that
/// fences can be attached to it ([`VgemFence::attach`]).
pub struct VgemBo {
    /// The dumb buffer (its GEM handle lives while this does, unless destroyed by hand).
    pub dumb: DumbBuffer,
    /// The buffer as a dma-buf (`DRM_IOCTL_PRIME_HANDLE_TO_FD`, read-write).
    pub dmabuf: OwnedFd,
}

impl VgemBo {
    /// A zero-filled `width`×`height` XRGB8888 buffer.
    pub fn new(vgem: &DrmDevice, width: u32, height: u32) -> io::Result<VgemBo> {
        let dumb = vgem.create_dumb_buffer((width, height), DrmFourcc::Xrgb8888, 32)?;
        let dmabuf = match vgem.buffer_to_prime_fd(dumb.handle(), drm::CLOEXEC | drm::RDWR) {
            Ok(fd) => fd,
            Err(err) => {
                let _ = vgem.destroy_dumb_buffer(dumb);
                return Err(err);
            }
        };
        Ok(VgemBo { dumb, dmabuf })
    }

    /// A `width`×`height` buffer filled with `xrgb`.
    pub fn filled(vgem: &DrmDevice, width: u32, height: u32, xrgb: u32) -> io::Result<VgemBo> {
        let mut bo = VgemBo::new(vgem, width, height)?;
        bo.fill(vgem, xrgb)?;
        Ok(bo)
    }

    /// Fills every pixel with `xrgb` through a CPU mapping of the dumb buffer.
    pub fn fill(&mut self, vgem: &DrmDevice, xrgb: u32) -> io::Result<()> {
        let width = self.dumb.size().0 as usize;
        self.write_rows(vgem, |row| {
            for px in row[..width * 4].chunks_exact_mut(4) {
                px.copy_from_slice(&xrgb.to_le_bytes());
            }
        })
    }

    /// Copies `pixels` (row-major XRGB8888, `width * height` entries) into the buffer.
    pub fn write(&mut self, vgem: &DrmDevice, pixels: &[u32]) -> io::Result<()> {
        let (width, height) = self.dumb.size();
        let width = width as usize;
        if pixels.len() != width * height as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} pixels for a {width}x{height} buffer", pixels.len()),
            ));
        }
        let mut rows = pixels.chunks_exact(width);
        self.write_rows(vgem, |row| {
            if let Some(src) = rows.next() {
                for (dst, px) in row[..width * 4].chunks_exact_mut(4).zip(src) {
                    dst.copy_from_slice(&px.to_le_bytes());
                }
            }
        })
    }

    /// Maps the buffer (`DRM_IOCTL_MODE_MAP_DUMB` + mmap of the vgem fd) and hands each row
    /// (`pitch` bytes) to `f`, top to bottom.
    fn write_rows(&mut self, vgem: &DrmDevice, mut f: impl FnMut(&mut [u8])) -> io::Result<()> {
        let pitch = self.dumb.pitch() as usize;
        let height = self.dumb.size().1 as usize;
        let mut map = vgem.map_dumb_buffer(&mut self.dumb)?;
        for row in map.as_mut().chunks_mut(pitch).take(height) {
            f(row);
        }
        Ok(())
    }

    /// The GEM handle, for vgem's fence ioctls.
    pub fn handle(&self) -> u32 {
        u32::from(self.dumb.handle())
    }

    /// Bytes per row.
    pub fn pitch(&self) -> u32 {
        self.dumb.pitch()
    }

    /// (width, height) in pixels.
    pub fn size(&self) -> (u32, u32) {
        self.dumb.size()
    }

    /// Closes the GEM handle; the dma-buf keeps the memory while it (or an importer) lives.
    pub fn destroy(self, vgem: &DrmDevice) -> OwnedFd {
        let _ = vgem.destroy_dumb_buffer(self.dumb);
        self.dmabuf
    }
}

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

fn ioctl<T>(device: &DrmDevice, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
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
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// A pending vgem fence on a BO, signalled on drop if nobody did (vgem would after ~10 s).
///
/// Holds a clone of the device, so it can move to another thread (a "GPU" worker).
pub struct VgemFence {
    vgem: DrmDevice,
    id: Option<u32>,
}

impl VgemFence {
    /// Attaches a new fence (a write fence if `write`, else a read fence) to the BO `handle`
    /// (`DRM_IOCTL_VGEM_FENCE_ATTACH`). A write fence fails with `EBUSY` while another fence
    /// is pending on the BO.
    pub fn attach(vgem: &DrmDevice, handle: u32, write: bool) -> io::Result<VgemFence> {
        let mut arg = FenceAttach {
            handle,
            flags: if write { VGEM_FENCE_WRITE } else { 0 },
            out_fence: 0,
            pad: 0,
        };
        ioctl(vgem, VGEM_FENCE_ATTACH, &mut arg)?;
        Ok(VgemFence {
            vgem: vgem.clone(),
            id: Some(arg.out_fence),
        })
    }

    /// Signals the fence (`DRM_IOCTL_VGEM_FENCE_SIGNAL`). Signalling twice is a no-op; a fence
    /// vgem already timed out answers `ETIMEDOUT`, reported as an error.
    pub fn signal(&mut self) -> io::Result<()> {
        let Some(fence) = self.id.take() else {
            return Ok(());
        };
        let mut arg = FenceSignal { fence, flags: 0 };
        ioctl(&self.vgem, VGEM_FENCE_SIGNAL, &mut arg)
    }

    /// Whether [`signal`](Self::signal) was called.
    pub fn is_signalled(&self) -> bool {
        self.id.is_none()
    }
}

impl Drop for VgemFence {
    fn drop(&mut self) {
        let _ = self.signal();
    }
}

/// A pending vgem write fence on a small BO of its own, and a sync_file of it: an acquire fence
/// that is not signalled until [`signal`](Self::signal) (or drop, which also closes the BO's
/// GEM handle).
pub struct PendingFence {
    fence: VgemFence,
    bo: Option<VgemBo>,
    /// The fence as a sync_file (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` of the BO's write fences).
    pub sync_file: SyncFile,
}

impl PendingFence {
    /// A new pending fence.
    pub fn new(vgem: &DrmDevice) -> io::Result<PendingFence> {
        let bo = VgemBo::new(vgem, 16, 16)?;
        let attached = VgemFence::attach(vgem, bo.handle(), true).and_then(|fence| {
            let sync_file = DmaBuf::new(bo.dmabuf.as_fd()).export_sync_file(Access::Write)?;
            Ok((fence, sync_file))
        });
        match attached {
            Ok((fence, sync_file)) => Ok(PendingFence {
                fence,
                bo: Some(bo),
                sync_file,
            }),
            Err(err) => {
                bo.destroy(vgem);
                Err(err)
            }
        }
    }

    /// Signals the fence (and so the sync_file).
    pub fn signal(&mut self) -> io::Result<()> {
        self.fence.signal()
    }

    /// The BO's dma-buf, e.g. to import the fence into another buffer.
    pub fn dmabuf(&self) -> &OwnedFd {
        &self.bo.as_ref().expect("taken only on drop").dmabuf
    }
}

impl Drop for PendingFence {
    fn drop(&mut self) {
        // Signalled before its BO goes.
        let _ = self.fence.signal();
        if let Some(bo) = self.bo.take() {
            bo.destroy(&self.fence.vgem);
        }
    }
}

/// A sync_file that has signalled: the implicit fences of an idle dma-buf (the kernel's stub
/// fence). Errs if the buffer is not idle.
pub fn signalled_sync_file(dmabuf: impl AsFd) -> io::Result<SyncFile> {
    let sync_file = DmaBuf::new(dmabuf.as_fd()).export_sync_file(Access::Write)?;
    if !sync_file.is_signaled()? {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the dma-buf is busy: its fences have not signalled",
        ));
    }
    Ok(sync_file)
}
