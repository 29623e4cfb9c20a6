//! [`DmaBuf`]: a dma-buf's implicit fences (its reservation object, `struct dma_resv`), as
//! sync_files and as [`Fence`]s (`include/uapi/linux/dma-buf.h`, `drivers/dma-buf/dma-buf.c`).
//!
//! # Implicit synchronisation in the kernel
//!
//! Every dma-buf carries a reservation object: a list of fences, each with a *usage*. Drivers
//! add a **write** fence (`DMA_RESV_USAGE_WRITE`) for work that writes the buffer and a **read**
//! fence (`DMA_RESV_USAGE_READ`) for work that only reads it. Fences are dropped from the list
//! once signalled (or replaced by a later fence of the same context); a pending fence of another
//! context is never removed. So:
//!
//! * a **reader** must wait for the pending **writers** ([`Access::Read`]);
//! * a **writer** must wait for **everybody**, readers and writers ([`Access::Write`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::event::{epoll, PollFlags};
use rustix::io::Errno;

use crate::context::context_alloc;
use crate::fence::{Fence, FenceSignaler, TARGET};
use crate::ioctl::{self, ioctl_ptr, iow, iowr, Opcode};
use crate::ops::FenceOps;
use crate::reactor::{self, Watch};
use crate::sync_file::SyncFile;

// ---- UAPI (include/uapi/linux/dma-buf.h) ------------------------------------------------------

const DMA_BUF_BASE: u8 = b'b';
const DMA_BUF_SYNC_READ: u32 = 1;
const DMA_BUF_SYNC_WRITE: u32 = 2;
/// `DMA_BUF_MAGIC` from `include/uapi/linux/magic.h`: `f_type` of the dma-buf pseudo-fs.
const DMA_BUF_MAGIC: u64 = 0x444d_4142;

/// `struct dma_buf_export_sync_file`.
#[repr(C)]
struct DmaBufExportSyncFile {
    flags: u32,
    fd: i32,
}

/// `struct dma_buf_import_sync_file`.
#[repr(C)]
struct DmaBufImportSyncFile {
    flags: u32,
    fd: i32,
}

const _: () = assert!(std::mem::size_of::<DmaBufExportSyncFile>() == 8);
const _: () = assert!(std::mem::size_of::<DmaBufImportSyncFile>() == 8);

/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: `_IOWR(DMA_BUF_BASE, 2, struct dma_buf_export_sync_file)`
/// (Linux 6.0+).
const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: Opcode = iowr::<DmaBufExportSyncFile>(DMA_BUF_BASE, 2);
/// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: `_IOW(DMA_BUF_BASE, 3, struct dma_buf_import_sync_file)`
/// (Linux 6.0+).
const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: Opcode = iow::<DmaBufImportSyncFile>(DMA_BUF_BASE, 3);

/// Which side of implicit synchronisation: what the caller is about to do with the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading (`DMA_BUF_SYNC_READ`; dma-buf `POLLIN`). Export: the fences a reader must wait
    /// for, i.e. the pending *writers* (`DMA_RESV_USAGE_WRITE`). Import: the fence is added as
    /// a *read* fence (`DMA_RESV_USAGE_READ`): later writers wait for it, readers don't.
    Read,
    /// Writing (`DMA_BUF_SYNC_WRITE`; dma-buf `POLLOUT`). Export: the fences a writer must wait
    /// for, i.e. *every* pending fence, readers and writers (`DMA_RESV_USAGE_READ` and
    /// below). Import: the fence is added as a *write* fence (`DMA_RESV_USAGE_WRITE`):
    /// everybody after waits for it.
    Write,
}

impl Access {
    fn sync_flags(self) -> u32 {
        match self {
            Access::Read => DMA_BUF_SYNC_READ,
            Access::Write => DMA_BUF_SYNC_WRITE,
        }
    }

    fn poll_flags(self) -> PollFlags {
        match self {
            Access::Read => PollFlags::IN,
            Access::Write => PollFlags::OUT,
        }
    }
}

/// A dma-buf fd, owned (`DmaBuf<OwnedFd>`, the default) or borrowed (`DmaBuf<BorrowedFd<'_>>`),
/// seen through its implicit fences.
///
/// # Lifecycle
///
/// The `DmaBuf` only wraps the fd: no syscall at creation, the fd is closed on drop when owned.
/// The buffer's reservation object lives in the kernel and changes under it (other processes
/// and drivers add fences), so every verb is a fresh question to the kernel:
///
/// * [`export_sync_file`](DmaBuf::export_sync_file) takes a **snapshot** of the fences an
///   [`Access`] must wait for, as a [`SyncFile`];
/// * [`import_sync_file`](DmaBuf::import_sync_file) **adds** a sync_file's fences;
/// * [`readiness`](DmaBuf::readiness) makes a [`Fence`] from the snapshot (or, on kernels
///   without the export ioctl, from [`poll_readiness`](DmaBuf::poll_readiness));
/// * [`is_idle`](DmaBuf::is_idle) asks once, with a zero-timeout `poll()`.
///
/// # Example
///
/// ```no_run
/// use fence_bridge::{Access, DmaBuf};
/// use std::time::Duration;
///
/// # fn client_buffer() -> std::os::fd::OwnedFd { unimplemented!() }
/// let buffer = DmaBuf::new(client_buffer());
/// // Before sampling a client's buffer: wait for its rendering (the writers), without blocking
/// // the event loop — register `ready.poll_fd()?` with it, or block here with a bound:
/// let ready = buffer.readiness(Access::Read)?;
/// if ready.wait_timeout(Some(Duration::from_millis(50))).is_err() {
///     // still rendering: latch it on a later frame
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct DmaBuf<F: AsFd = OwnedFd> {
    fd: F,
}

impl<F: AsFd> DmaBuf<F> {
    /// Wraps a dma-buf fd. No syscall and no check; verbs on an fd that is not a dma-buf fail
    /// with `ENOTTY`.
    pub fn new(fd: F) -> Self {
        DmaBuf { fd }
    }

    /// The wrapped fd.
    pub fn into_inner(self) -> F {
        self.fd
    }

    /// Borrows the fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A [`SyncFile`] with the buffer's current fences that `access` must wait for
    /// (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`, Linux 6.0+): for [`Access::Read`] the pending write
    /// fences, for [`Access::Write`] all pending fences.
    ///
    /// A snapshot: fences added afterwards are not in it. With nothing to wait for, the kernel
    /// returns a sync_file holding its signalled stub fence (driver `"stub"`).
    ///
    /// # Errors
    ///
    /// `ENOTTY` if the fd is not a dma-buf or the kernel predates the ioctl; `EMFILE`, `ENOMEM`.
    pub fn export_sync_file(&self, access: Access) -> io::Result<SyncFile> {
        let mut arg = DmaBufExportSyncFile {
            flags: access.sync_flags(),
            fd: -1,
        };
        // SAFETY: DMA_BUF_IOCTL_EXPORT_SYNC_FILE takes a `struct dma_buf_export_sync_file *`;
        // DmaBufExportSyncFile is its #[repr(C)] layout (size asserted above).
        unsafe { ioctl_ptr::<DMA_BUF_IOCTL_EXPORT_SYNC_FILE, _>(self.fd.as_fd(), &mut arg)? };
        // SAFETY: on success the kernel installed a new O_CLOEXEC sync_file fd in `fd`; we are
        // its only owner.
        Ok(SyncFile::from_fd(unsafe { OwnedFd::from_raw_fd(arg.fd) }))
    }

    /// Adds the fences of `sync_file` to the buffer's reservation object
    /// (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`, Linux 6.0+): as write fences for [`Access::Write`],
    /// as read fences for [`Access::Read`]. This is how work the kernel does not know about (a
    /// Vulkan queue, another device) is made visible to implicit-sync users of the buffer.
    ///
    /// It **adds, never replaces**: the kernel's `dma_resv_add_fence()` only drops fences that
    /// have signalled, or an earlier fence of the *same* context; every pending fence already on
    /// the buffer stays, so importing an already-signalled sync_file changes nothing for anyone
    /// waiting. (This is why an already-signalled fence is no way to "clear" implicit sync.)
    ///
    /// # Errors
    ///
    /// `EINVAL` if `sync_file` is not a sync_file; `ENOTTY` if the fd is not a dma-buf or the
    /// kernel predates the ioctl; `ENOMEM`.
    pub fn import_sync_file(&self, sync_file: &SyncFile, access: Access) -> io::Result<()> {
        let mut arg = DmaBufImportSyncFile {
            flags: access.sync_flags(),
            fd: sync_file.as_raw_fd(),
        };
        // SAFETY: DMA_BUF_IOCTL_IMPORT_SYNC_FILE takes a `struct dma_buf_import_sync_file *`
        // (read only); DmaBufImportSyncFile is its #[repr(C)] layout. The kernel takes its own
        // reference to the fences; our fd stays ours.
        unsafe { ioctl_ptr::<DMA_BUF_IOCTL_IMPORT_SYNC_FILE, _>(self.fd.as_fd(), &mut arg) }
    }

    /// Whether `access` could proceed right now: a zero-timeout `poll()` of the dma-buf fd
    /// (`POLLIN` for [`Access::Read`]: no pending writers; `POLLOUT` for [`Access::Write`]: no
    /// pending fences at all). One syscall, no fd created.
    ///
    /// # Errors
    ///
    /// `poll()`'s. On an fd that is not a dma-buf the answer is meaningless (most files poll
    /// ready); use [`readiness`](DmaBuf::readiness) if the fd is untrusted.
    pub fn is_idle(&self, access: Access) -> io::Result<bool> {
        ioctl::poll_one(self.fd.as_fd(), access.poll_flags(), Some(Duration::ZERO))
    }

    /// A [`Fence`] that signals when the fences `access` must wait for *now* have signalled:
    /// [`export_sync_file`](DmaBuf::export_sync_file) turned into a fence with
    /// [`SyncFile::into_fence`] (kernel timestamps, a native poll fd, no eventfd). On a kernel
    /// without the export ioctl (`ENOTTY` from a real dma-buf) it falls back to
    /// [`poll_readiness`](DmaBuf::poll_readiness).
    ///
    /// # Errors
    ///
    /// `ENOTTY` if the fd is not a dma-buf; `EMFILE`, `ENOMEM`.
    pub fn readiness(&self, access: Access) -> io::Result<Fence> {
        match self.export_sync_file(access) {
            Ok(sync_file) => Ok(sync_file.into_fence()),
            Err(err) if Errno::from_io_error(&err) == Some(Errno::NOTTY) => {
                self.poll_readiness(access)
            }
            Err(err) => Err(err),
        }
    }

    /// The fallback of [`readiness`](DmaBuf::readiness) for kernels before 6.0 (what Smithay,
    /// gamescope and Mutter's fallback do): a [`Fence`] backed by polling a `dup` of the
    /// dma-buf fd — `POLLIN` for [`Access::Read`], `POLLOUT` for [`Access::Write`]. Public so
    /// that it can be used and tested on any kernel.
    ///
    /// Differences from the export path, all from the kernel's `dma_buf_poll()`:
    ///
    /// * **not a snapshot**: each check looks at the fences on the buffer *at that moment*, so
    ///   fences added after this call are waited for too (a stronger wait, never a weaker one).
    ///   Once the fence has signalled it stays signalled, like every [`Fence`];
    /// * the timestamp is when this process noticed, not the kernel's;
    /// * no native poll fd: a dma-buf fd may stop polling ready when new fences arrive, which
    ///   breaks the "stays readable" promise of [`FenceOps::native_poll_fd`], so
    ///   [`Fence::poll_fd`] makes an eventfd (written when the fence signals);
    /// * when signalling is enabled the dup'ed fd is watched by the crate's kernel-fence reactor
    ///   (see [`crate::SyncFileFence`]); a readiness that turns out stale (new fences arrived)
    ///   re-arms the watch.
    ///
    /// # Errors
    ///
    /// `ENOTTY` if the fd is not a dma-buf (checked with `fstatfs()`: the dma-buf pseudo-fs);
    /// `EMFILE` for the dup.
    pub fn poll_readiness(&self, access: Access) -> io::Result<Fence> {
        let fs = rustix::fs::fstatfs(self.fd.as_fd())?;
        #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
        if fs.f_type as u64 != DMA_BUF_MAGIC {
            return Err(Errno::NOTTY.into());
        }
        let fd = rustix::io::fcntl_dupfd_cloexec(self.fd.as_fd(), 0)?;
        let ops = DmaBufPollFence {
            fd: Arc::new(fd),
            access,
            watch: Mutex::new(None),
        };
        Ok(Fence::new(context_alloc(1).first(), 1, ops))
    }
}

impl<F: AsFd> AsFd for DmaBuf<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Backend of [`DmaBuf::poll_readiness`] fences. Each gets its own context, seqno 1.
struct DmaBufPollFence {
    fd: Arc<OwnedFd>,
    access: Access,
    watch: Mutex<Option<Watch>>,
}

impl FenceOps for DmaBufPollFence {
    fn driver_name(&self) -> &str {
        "dma-buf"
    }

    fn timeline_name(&self) -> &str {
        match self.access {
            Access::Read => "implicit-read",
            Access::Write => "implicit-write",
        }
    }

    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        if self.signaled() {
            return false;
        }
        let events = match self.access {
            Access::Read => epoll::EventFlags::IN,
            Access::Write => epoll::EventFlags::OUT,
        };
        // The fd may be ready while new fences arrived since: `is_signaled` says no and the
        // watch is re-armed.
        let watch = reactor::watch_fence(self.fd.clone(), events, &signaler, "dma-buf poll fence");
        *self.watch.lock().unwrap_or_else(PoisonError::into_inner) = watch;
        true
    }

    fn signaled(&self) -> bool {
        match ioctl::poll_one(
            self.fd.as_fd(),
            self.access.poll_flags(),
            Some(Duration::ZERO),
        ) {
            Ok(ready) => ready,
            Err(err) => {
                tracing::warn!(target: TARGET, "dma-buf poll fence: poll failed: {err}");
                false
            }
        }
    }

    fn release(&self) {
        drop(
            self.watch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}
