//! udmabuf (`/dev/udmabuf`): a dma-buf made from a sealed memfd, for machines with no DRM device
//! at all. The CPU writes through the memfd (the same pages), so no mapping is needed.
//!
//! Its exported sync_files are always signalled (there is no GPU behind it), but fences can be
//! imported into it like into any dma-buf.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{MemfdFlags, SealFlags};

/// The udmabuf device.
pub const DEVICE: &str = "/dev/udmabuf";

/// `struct udmabuf_create` (include/uapi/linux/udmabuf.h).
#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// `UDMABUF_CREATE`: `_IOW('u', 0x42, struct udmabuf_create)` (24 bytes).
const UDMABUF_CREATE: libc::c_ulong = 0x4018_7542;
const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// A linear XRGB8888 buffer in a memfd, shared as a dma-buf by udmabuf.
pub struct Udmabuf {
    memfd: File,
    /// The dma-buf.
    pub dmabuf: OwnedFd,
    width: u32,
    height: u32,
    stride: u32,
}

impl Udmabuf {
    /// Whether this machine has `/dev/udmabuf`.
    pub fn available() -> bool {
        Path::new(DEVICE).exists()
    }

    /// A zero-filled `width`×`height` XRGB8888 buffer (stride `width * 4`, the memfd rounded up
    /// to whole pages as udmabuf requires).
    pub fn new(width: u32, height: u32) -> io::Result<Udmabuf> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        if width == 0 || height == 0 {
            return Err(invalid(format!("a {width}x{height} udmabuf")));
        }
        let stride = width
            .checked_mul(4)
            .ok_or_else(|| invalid(format!("width {width} overflows the stride")))?;
        let page = rustix::param::page_size() as u64;
        let size = (u64::from(stride) * u64::from(height)).div_ceil(page) * page;

        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map_err(|err| io::Error::new(err.kind(), format!("opening {DEVICE}: {err}")))?;
        let memfd = rustix::fs::memfd_create(
            "fencegate-udmabuf",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&memfd, size)?;
        // udmabuf refuses a memfd that could still shrink under it.
        rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK)?;

        let mut arg = UdmabufCreate {
            memfd: memfd.as_raw_fd() as u32,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: 0,
            size,
        };
        // SAFETY: UDMABUF_CREATE takes a pointer to a `struct udmabuf_create`, which `arg` is;
        // on success it returns a new fd that nothing else owns.
        let fd = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                UDMABUF_CREATE as _,
                &mut arg as *mut UdmabufCreate as *mut libc::c_void,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("UDMABUF_CREATE: {err}")));
        }
        // SAFETY: a fresh fd returned by the ioctl above, owned by nobody else.
        let dmabuf = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Udmabuf {
            memfd: File::from(memfd),
            dmabuf,
            width,
            height,
            stride,
        })
    }

    /// Bytes per row.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// (width, height) in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Copies `pixels` (row-major XRGB8888, `width * height` entries) into the buffer.
    pub fn write(&self, pixels: &[u32]) -> io::Result<()> {
        if pixels.len() != self.width as usize * self.height as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} pixels for a {}x{} buffer",
                    pixels.len(),
                    self.width,
                    self.height
                ),
            ));
        }
        let bytes: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.memfd.write_all_at(&bytes, 0)
    }
}
