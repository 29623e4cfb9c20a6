//! Shared-memory buffers: one memfd and one `wl_shm_pool` per `wl_buffer`.
//!
//! One pool per buffer is wasteful but can't go wrong: no sub-allocation, no pool resizing, and a
//! buffer's memory is only ever touched by us while the server has released it. The pool is
//! destroyed right after the buffer is created; the protocol keeps the memory alive until the last
//! buffer made from it is gone. Pixels are written through the fd (`pwrite`), so no `mmap` and no
//! `unsafe` is needed.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context};
use rustix::fs::MemfdFlags;
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::protocol::wl_shm::{self, WlShm};
use wayland_client::QueueHandle;

use crate::ClientState;

/// Bytes per pixel of the two formats we use (ARGB8888 and XRGB8888).
const BYTES_PER_PIXEL: i32 = 4;

/// A `wl_buffer` backed by its own memfd.
#[derive(Debug)]
pub(crate) struct ShmBuffer {
    pub buffer: WlBuffer,
    file: File,
    pub width: i32,
    pub height: i32,
    pub format: wl_shm::Format,
    /// Attached and committed, and no `wl_buffer.release` seen since: the server may read it.
    pub busy: bool,
}

impl ShmBuffer {
    /// Allocates a zero-filled buffer of `width` x `height` pixels in `format`.
    pub fn new(
        shm: &WlShm,
        qh: &QueueHandle<ClientState>,
        width: i32,
        height: i32,
        format: wl_shm::Format,
    ) -> anyhow::Result<ShmBuffer> {
        if width <= 0 || height <= 0 {
            bail!("invalid buffer size {width}x{height}: both sides must be positive");
        }
        let (stride, size) = width
            .checked_mul(BYTES_PER_PIXEL)
            .and_then(|stride| Some((stride, stride.checked_mul(height)?)))
            .with_context(|| format!("buffer size {width}x{height} overflows an i32 pool size"))?;

        let fd = rustix::fs::memfd_create("fencegate-shm", MemfdFlags::CLOEXEC)
            .context("memfd_create for a shm buffer")?;
        // `size` is positive, checked above.
        rustix::fs::ftruncate(&fd, size as u64).context("ftruncate of a shm buffer's memfd")?;

        let pool = shm.create_pool(fd.as_fd(), size, qh, ());
        let buffer = pool.create_buffer(0, width, height, stride, format, qh, ());
        pool.destroy();

        Ok(ShmBuffer {
            buffer,
            file: File::from(fd),
            width,
            height,
            format,
            busy: false,
        })
    }

    /// Whether this buffer can be reused for a frame of this size and format.
    pub fn fits(&self, width: i32, height: i32, format: wl_shm::Format) -> bool {
        self.width == width && self.height == height && self.format == format
    }

    /// Copies `pixels` (row-major, `width * height` entries) into the buffer.
    ///
    /// wl_shm's 32-bit formats are little-endian words, which is exactly `u32::to_le_bytes`.
    pub fn write(&self, pixels: &[u32]) -> anyhow::Result<()> {
        let bytes: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.file
            .write_all_at(&bytes, 0)
            .context("writing pixels into a shm buffer")
    }

    /// Destroys the `wl_buffer`; the memfd is closed when `self` drops.
    pub fn destroy(self) {
        self.buffer.destroy();
    }
}
