//! [`SyncFile`]: an owned sync_file fd (`include/uapi/linux/sync_file.h`,
//! `drivers/dma-buf/sync_file.c`), its verbs, and the [`Fence`] backed by it.
//!
//! A sync_file is the kernel's way of passing a `dma_fence` (possibly an array of fences from
//! many timelines) between processes and drivers as an fd. It is immutable: the fences it holds
//! are fixed when it is created, and it signals once, when all of them have.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rustix::event::{epoll, PollFlags};
use rustix::io::Errno;

use crate::context::context_alloc;
use crate::error::FenceError;
use crate::fence::{Fence, FenceSignaler, FenceStatus, TARGET};
use crate::ioctl::{self, ioctl_ptr, iow, iowr, Opcode};
use crate::ops::FenceOps;
use crate::reactor::{self, Watch};
use crate::time::Ktime;

// ---- UAPI (include/uapi/linux/sync_file.h) --------------------------------------------------

const SYNC_IOC_MAGIC: u8 = b'>';

/// `struct sync_merge_data`.
#[repr(C)]
struct SyncMergeData {
    name: [u8; 32],
    fd2: i32,
    fence: i32,
    flags: u32,
    pad: u32,
}

/// `struct sync_fence_info`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SyncFenceInfoRaw {
    obj_name: [u8; 32],
    driver_name: [u8; 32],
    status: i32,
    flags: u32,
    timestamp_ns: u64,
}

impl SyncFenceInfoRaw {
    const ZERO: SyncFenceInfoRaw = SyncFenceInfoRaw {
        obj_name: [0; 32],
        driver_name: [0; 32],
        status: 0,
        flags: 0,
        timestamp_ns: 0,
    };
}

/// `struct sync_file_info`.
#[repr(C)]
struct SyncFileInfoRaw {
    name: [u8; 32],
    status: i32,
    flags: u32,
    num_fences: u32,
    pad: u32,
    /// User pointer to `num_fences` `struct sync_fence_info`.
    sync_fence_info: u64,
}

/// `struct sync_set_deadline`.
#[repr(C)]
struct SyncSetDeadline {
    deadline_ns: u64,
    pad: u64,
}

// The layouts the kernel expects (x86_64 and every other 64-bit or 32-bit Linux ABI: all
// fields are naturally aligned and the structs have no implicit padding).
const _: () = assert!(std::mem::size_of::<SyncMergeData>() == 48);
const _: () = assert!(std::mem::size_of::<SyncFenceInfoRaw>() == 80);
const _: () = assert!(std::mem::size_of::<SyncFileInfoRaw>() == 56);
const _: () = assert!(std::mem::size_of::<SyncSetDeadline>() == 16);

/// `SYNC_IOC_MERGE`: `_IOWR(SYNC_IOC_MAGIC, 3, struct sync_merge_data)`.
const SYNC_IOC_MERGE: Opcode = iowr::<SyncMergeData>(SYNC_IOC_MAGIC, 3);
/// `SYNC_IOC_FILE_INFO`: `_IOWR(SYNC_IOC_MAGIC, 4, struct sync_file_info)`.
const SYNC_IOC_FILE_INFO: Opcode = iowr::<SyncFileInfoRaw>(SYNC_IOC_MAGIC, 4);
/// `SYNC_IOC_SET_DEADLINE`: `_IOW(SYNC_IOC_MAGIC, 5, struct sync_set_deadline)` (Linux 6.5+).
const SYNC_IOC_SET_DEADLINE: Opcode = iow::<SyncSetDeadline>(SYNC_IOC_MAGIC, 5);

/// Decodes a `sync_*_info.status` (1 signalled, 0 active, negative errno).
fn status_from_kernel(status: i32) -> FenceStatus {
    FenceStatus::from_kernel(status).unwrap_or(if status > 0 {
        FenceStatus::Signaled
    } else {
        FenceStatus::Error(FenceError::EIO)
    })
}

// ---- SyncFile ---------------------------------------------------------------------------------

/// An owned sync_file fd: one fence (or a set of fences) the kernel signals.
///
/// # Lifecycle
///
/// 1. **Obtained** from the kernel: exported from a dma-buf
///    ([`crate::DmaBuf::export_sync_file`]), a DRM syncobj, a KMS `OUT_FENCE_PTR`, an EGL native
///    fence, a Wayland client — or [`merge`](SyncFile::merge)d from two others. Adopted with
///    [`from_fd`](SyncFile::from_fd) (no syscall, no check: a verb on an fd that is not a
///    sync_file fails with `ENOTTY`/`EINVAL`).
/// 2. **Pending, then signalled** — once, by the kernel, when every fence it holds has signalled
///    (successfully, or with the first error). Its content never changes: a sync_file is a
///    snapshot of fences. Observe it with [`is_signaled`](SyncFile::is_signaled) (one `poll()`),
///    [`wait_timeout`](SyncFile::wait_timeout), [`status`](SyncFile::status),
///    [`info`](SyncFile::info), or turn it into a [`Fence`] with
///    [`into_fence`](SyncFile::into_fence) to use it with the rest of the crate.
/// 3. **Closed** on drop (or handed on with [`into_fd`](SyncFile::into_fd)). Closing never
///    affects the fences: other holders keep them.
///
/// The fd itself is pollable: `POLLIN` once signalled, for good. It is `O_CLOEXEC` when the
/// kernel created it through the ioctls used here.
///
/// # Example
///
/// ```no_run
/// use fence_bridge::{Access, DmaBuf, SyncFile};
/// use std::os::fd::OwnedFd;
/// use std::time::Duration;
///
/// # fn get_dmabuf() -> OwnedFd { unimplemented!() }
/// let buffer = DmaBuf::new(get_dmabuf());
/// // What a reader of the buffer must wait for (its pending writers).
/// let readers_wait = buffer.export_sync_file(Access::Read)?;
/// if !readers_wait.is_signaled()? {
///     let info = readers_wait.info()?;
///     for f in &info.fences {
///         println!("waiting for {}:{} ({:?})", f.driver_name, f.timeline_name, f.status);
///     }
///     readers_wait.set_deadline(fence_bridge::Ktime::now())
///         .or_else(|e| if e.kind() == std::io::ErrorKind::Unsupported { Ok(()) } else { Err(e) })?;
///     readers_wait.wait_timeout(Some(Duration::from_millis(100)))?;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SyncFile {
    fd: OwnedFd,
}

impl SyncFile {
    /// Adopts `fd` as a sync_file. No syscall and no check is made; see the type's docs.
    pub fn from_fd(fd: OwnedFd) -> SyncFile {
        SyncFile { fd }
    }

    /// Gives the fd back (e.g. to send it to another process or set it as a KMS `IN_FENCE_FD`).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Borrows the fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second sync_file fd for the same fences (`fcntl(F_DUPFD_CLOEXEC)`).
    pub fn try_clone(&self) -> io::Result<SyncFile> {
        Ok(SyncFile {
            fd: rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?,
        })
    }

    /// Whether it has signalled (successfully or not): a zero-timeout `poll()`, one syscall.
    ///
    /// # Errors
    ///
    /// `EBADF` if the fd is not pollable (an `O_PATH` fd); `poll()`'s own errors.
    pub fn is_signaled(&self) -> io::Result<bool> {
        ioctl::poll_one(self.fd.as_fd(), PollFlags::IN, Some(Duration::ZERO))
    }

    /// Blocks in `poll()` until it signals or `timeout` elapses (`None`: forever; `EINTR` is
    /// retried against the same deadline). Returns whether it signalled. A sync_file that
    /// signalled *with an error* also returns `true`: see [`status`](SyncFile::status).
    ///
    /// # Errors
    ///
    /// As [`is_signaled`](SyncFile::is_signaled).
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> io::Result<bool> {
        ioctl::poll_one(self.fd.as_fd(), PollFlags::IN, timeout)
    }

    /// A new sync_file that signals when both `a` and `b` have (`SYNC_IOC_MERGE`).
    ///
    /// The kernel flattens both into one set of fences (`dma_fence_unwrap_merge()`): it keeps
    /// only the later fence of each context and drops fences that already signalled (if all
    /// did, the result is a signalled stub fence carrying the latest timestamp). `name` is the
    /// merged sync_file's name in [`SyncFileInfo::name`], cut to 31 bytes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `name` contains a NUL; `ENOTTY`/`EINVAL` if `a` is not a sync_file,
    /// `ENOENT` if `b` is not one; `EMFILE`, `ENOMEM`.
    pub fn merge(a: &SyncFile, b: &SyncFile, name: &str) -> io::Result<SyncFile> {
        let mut data = SyncMergeData {
            name: ioctl::name_to_field::<32>(name)?,
            fd2: b.fd.as_raw_fd(),
            fence: -1,
            flags: 0,
            pad: 0,
        };
        // SAFETY: SYNC_IOC_MERGE takes a `struct sync_merge_data *`; SyncMergeData is its
        // #[repr(C)] layout (size asserted above).
        unsafe { ioctl_ptr::<SYNC_IOC_MERGE, _>(a.fd.as_fd(), &mut data)? };
        // SAFETY: on success the kernel installed a new fd (O_CLOEXEC) in `fence` and it is
        // ours to own; nobody else knows its number.
        Ok(SyncFile {
            fd: unsafe { OwnedFd::from_raw_fd(data.fence) },
        })
    }

    /// The overall status with one `SYNC_IOC_FILE_INFO` call (`num_fences = 0`, which makes the
    /// kernel report `dma_fence_get_status()` of the whole sync_file): pending, signalled, or
    /// the first error.
    ///
    /// # Errors
    ///
    /// `ENOTTY` or `EINVAL` if the fd is not a sync_file; `EBADF` for an `O_PATH` fd.
    pub fn status(&self) -> io::Result<FenceStatus> {
        let raw = file_info_header(self.fd.as_fd())?;
        Ok(status_from_kernel(raw.status))
    }

    /// The status and, once signalled, when: the latest of its fences' kernel timestamps
    /// (`CLOCK_MONOTONIC`). What a waiter woken by the fd needs, from one `SYNC_IOC_FILE_INFO`
    /// into a stack array for a sync_file of up to four fences (no names, no allocation); more
    /// take the two calls of [`info`](SyncFile::info). The timestamp is `None` while pending.
    ///
    /// # Errors
    ///
    /// As [`status`](SyncFile::status).
    pub fn status_and_timestamp(&self) -> io::Result<(FenceStatus, Option<Ktime>)> {
        file_status(self.fd.as_fd())
    }

    /// Everything the kernel tells about the sync_file (`SYNC_IOC_FILE_INFO`, two calls: the
    /// first learns the number of fences, the second fills one [`SyncFenceInfo`] each — the
    /// count cannot change in between, a sync_file is immutable).
    ///
    /// Fences are listed flattened (arrays and chains unwrapped), in the kernel's order.
    ///
    /// # Errors
    ///
    /// As [`status`](SyncFile::status).
    pub fn info(&self) -> io::Result<SyncFileInfo> {
        file_info(self.fd.as_fd())
    }
    /// Deadline hint: the fences should signal by `deadline` (`SYNC_IOC_SET_DEADLINE`,
    /// Linux 6.5+; forwarded to every fence as `dma_fence_set_deadline()`). Drivers may boost
    /// clocks for it, or ignore it; it never changes what is waited for.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] if the kernel lacks the ioctl (`ENOTTY`, or `EINVAL` from
    /// a kernel that rejects the number) while the fd *is* a sync_file (checked with one
    /// `SYNC_IOC_FILE_INFO` on that error path only); otherwise the ioctl's errno (`ENOTTY` for
    /// an fd that is not a sync_file, `EBADF`).
    pub fn set_deadline(&self, deadline: Ktime) -> io::Result<()> {
        match set_deadline_raw(self.fd.as_fd(), deadline) {
            Ok(()) => Ok(()),
            Err(err)
                if matches!(
                    Errno::from_io_error(&err),
                    Some(Errno::NOTTY) | Some(Errno::INVAL)
                ) && file_info_header(self.fd.as_fd()).is_ok() =>
            {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("SYNC_IOC_SET_DEADLINE is not supported by this kernel (needs Linux 6.5+): {err}"),
                ))
            }
            Err(err) => Err(err),
        }
    }

    /// Turns the sync_file into a [`Fence`] (it keeps the fd). See [`SyncFileFence`] for how
    /// that fence behaves.
    pub fn into_fence(self) -> Fence {
        let signaler = Arc::new(OnceLock::new());
        let ops = SyncFileFence {
            fd: Arc::new(self.fd),
            signaler: signaler.clone(),
            names: OnceLock::new(),
            watch: Mutex::new(None),
        };
        let fence = Fence::new(context_alloc(1).first(), 1, ops);
        let _ = signaler.set(fence.signaler());
        fence
    }
}

/// `SYNC_IOC_FILE_INFO` with `num_fences = 0`: the count and the overall status.
fn file_info_header(fd: BorrowedFd<'_>) -> io::Result<SyncFileInfoRaw> {
    let mut raw = SyncFileInfoRaw {
        name: [0; 32],
        status: 0,
        flags: 0,
        num_fences: 0,
        pad: 0,
        sync_fence_info: 0,
    };
    // SAFETY: SYNC_IOC_FILE_INFO takes a `struct sync_file_info *`; SyncFileInfoRaw is its
    // #[repr(C)] layout. With num_fences == 0 the kernel writes no array (the null
    // sync_fence_info pointer is never used) and fills in num_fences and status.
    unsafe { ioctl_ptr::<SYNC_IOC_FILE_INFO, _>(fd, &mut raw)? };
    Ok(raw)
}

/// How many fences the first `SYNC_IOC_FILE_INFO` makes room for. Most sync_files hold one
/// fence (a merge of a few at most), so one call usually returns the status, the count and
/// every fence's timestamp.
const INLINE_FENCES: u32 = 4;

/// `SYNC_IOC_FILE_INFO`; see [`SyncFile::info`]. One call when the sync_file holds at most
/// [`INLINE_FENCES`] fences; otherwise the kernel answers `EINVAL` (the array is too small)
/// and a header call learns the count first.
fn file_info(fd: BorrowedFd<'_>) -> io::Result<SyncFileInfo> {
    let mut inline = [SyncFenceInfoRaw::ZERO; INLINE_FENCES as usize];
    let (raw, fences) = match file_info_into(fd, &mut inline) {
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            let header = file_info_header(fd)?;
            let mut all = vec![SyncFenceInfoRaw::ZERO; header.num_fences as usize];
            let (raw, n) = file_info_into(fd, &mut all)?;
            all.truncate(n);
            (raw, all)
        }
        Err(err) => return Err(err),
        Ok((raw, n)) => (raw, inline[..n].to_vec()),
    };
    Ok(SyncFileInfo {
        name: ioctl::name_from_field(&raw.name),
        status: status_from_kernel(raw.status),
        fences: fences
            .iter()
            .map(|f| {
                let status = status_from_kernel(f.status);
                SyncFenceInfo {
                    driver_name: ioctl::name_from_field(&f.driver_name),
                    timeline_name: ioctl::name_from_field(&f.obj_name),
                    status,
                    timestamp: fence_timestamp(f),
                }
            })
            .collect(),
    })
}

/// The sync_file's status and, once signalled, its timestamp (the latest fence's): what a
/// waiter woken by the fd needs, from one `SYNC_IOC_FILE_INFO` into a stack array (no names, no
/// allocation) when it holds at most [`INLINE_FENCES`] fences.
fn file_status(fd: BorrowedFd<'_>) -> io::Result<(FenceStatus, Option<Ktime>)> {
    let mut inline = [SyncFenceInfoRaw::ZERO; INLINE_FENCES as usize];
    match file_info_into(fd, &mut inline) {
        Ok((raw, n)) => {
            let status = status_from_kernel(raw.status);
            let timestamp = status
                .is_signaled()
                .then(|| inline[..n].iter().map(fence_timestamp).max().flatten())
                .flatten();
            Ok((status, timestamp))
        }
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            let info = file_info(fd)?;
            Ok((info.status, info.timestamp()))
        }
        Err(err) => Err(err),
    }
}

/// A fence's signal time, if it signalled and the driver recorded one.
fn fence_timestamp(f: &SyncFenceInfoRaw) -> Option<Ktime> {
    (status_from_kernel(f.status).is_signaled() && f.timestamp_ns != 0)
        .then(|| Ktime::from_nanos(f.timestamp_ns as i64))
}

/// `SYNC_IOC_FILE_INFO` with room for `fences.len()` fences: the header and how many of
/// `fences` the kernel filled in.
fn file_info_into(
    fd: BorrowedFd<'_>,
    fences: &mut [SyncFenceInfoRaw],
) -> io::Result<(SyncFileInfoRaw, usize)> {
    let mut raw = SyncFileInfoRaw {
        name: [0; 32],
        status: 0,
        flags: 0,
        num_fences: fences.len() as u32,
        pad: 0,
        sync_fence_info: if fences.is_empty() {
            0
        } else {
            fences.as_mut_ptr() as u64
        },
    };
    // SAFETY: SYNC_IOC_FILE_INFO takes a `struct sync_file_info *`; SyncFileInfoRaw is its
    // #[repr(C)] layout, and `sync_fence_info` points to `fences.len()` writable, #[repr(C)]
    // `struct sync_fence_info` (size asserted above) that outlive the call. The kernel writes
    // at most that many (it fails with EINVAL rather than overrun), and with none it writes
    // only the header.
    unsafe { ioctl_ptr::<SYNC_IOC_FILE_INFO, _>(fd, &mut raw)? };
    let written = (raw.num_fences as usize).min(fences.len());
    Ok((raw, written))
}

/// `SYNC_IOC_SET_DEADLINE`.
fn set_deadline_raw(fd: BorrowedFd<'_>, deadline: Ktime) -> io::Result<()> {
    let mut data = SyncSetDeadline {
        // A deadline in the past is still a valid hint ("as soon as possible").
        deadline_ns: deadline.as_nanos().max(0) as u64,
        pad: 0,
    };
    // SAFETY: SYNC_IOC_SET_DEADLINE takes a `struct sync_set_deadline *` (read only);
    // SyncSetDeadline is its #[repr(C)] layout.
    unsafe { ioctl_ptr::<SYNC_IOC_SET_DEADLINE, _>(fd, &mut data) }
}

impl AsFd for SyncFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SyncFile {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for SyncFile {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl From<OwnedFd> for SyncFile {
    fn from(fd: OwnedFd) -> Self {
        SyncFile::from_fd(fd)
    }
}

impl From<SyncFile> for OwnedFd {
    fn from(sync_file: SyncFile) -> Self {
        sync_file.fd
    }
}

impl fmt::Debug for SyncFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncFile")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// What `SYNC_IOC_FILE_INFO` reports about a sync_file ([`SyncFile::info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// The sync_file's name: the one given to [`SyncFile::merge`], or one the kernel makes up
    /// from the fence (`driver-timeline-context-seqno`).
    pub name: String,
    /// Overall status: pending until every fence signalled; then signalled, or the first error.
    pub status: FenceStatus,
    /// Each fence, flattened.
    pub fences: Vec<SyncFenceInfo>,
}

impl SyncFileInfo {
    /// When the whole sync_file signalled: the latest fence timestamp, or `None` while any
    /// fence is pending.
    pub fn timestamp(&self) -> Option<Ktime> {
        if !self.status.is_signaled() {
            return None;
        }
        self.fences.iter().map(|f| f.timestamp).max().flatten()
    }
}

/// One fence of a sync_file (`struct sync_fence_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFenceInfo {
    /// The fence's driver (`dma_fence_ops.get_driver_name`), e.g. `"vgem"`, `"virtio_gpu"`,
    /// `"stub"` for the kernel's "nothing to wait for" fence.
    pub driver_name: String,
    /// The fence's timeline (`obj_name`, `dma_fence_ops.get_timeline_name`).
    pub timeline_name: String,
    /// Its status.
    pub status: FenceStatus,
    /// When it signalled (`CLOCK_MONOTONIC`), `None` while pending.
    pub timestamp: Option<Ktime>,
}

// ---- the Fence backend ------------------------------------------------------------------------

/// The [`FenceOps`] of a [`Fence`] made by [`SyncFile::into_fence`] (not constructed directly;
/// named here so its behaviour is documented in one place).
///
/// * **Context**: every imported sync_file gets a context of its own (seqno 1). A sync_file may
///   hold fences from many timelines, and the kernel does not export context ids, so there is
///   no honest way to order two imported sync_files: [`Fence::is_later`] is only meaningful
///   for the same import.
/// * **Names** ([`Fence::driver_name`], [`Fence::timeline_name`]): computed on first use with
///   `SYNC_IOC_FILE_INFO` and cached: a single fence's driver and timeline; for several fences
///   their common driver (or `"sync_file"` when they differ) and the sync_file's name.
/// * **Polling** ([`Fence::is_signaled`], [`Fence::status`], zero-timeout waits): one
///   `SYNC_IOC_FILE_INFO` (with room for a few fences, so one call for nearly every sync_file),
///   which gives the status and, once signalled, the kernel's own result: the fence signals with
///   the kernel's timestamp (the latest of its fences, `CLOCK_MONOTONIC`, comparable with
///   [`Ktime::now`]) and the kernel's error, if any. An already-signalled sync_file costs that
///   one ioctl.
/// * **Poll fd** ([`Fence::poll_fd`]): a `dup` of the sync_file fd — it is itself pollable, so
///   no eventfd and no callback exist. A poll loop registers it and calls
///   [`Fence::is_signaled`] when it is readable.
/// * **Blocking waits** ([`Fence::wait_timeout`] with a non-zero timeout): the core polls the
///   native fd in the waiting thread (`Fence::wait_native`); nothing is armed.
/// * **Signalling** (callbacks, [`crate::wait_any_timeout`], [`Fence::enable_signaling`]): the
///   fd is registered with the crate's kernel-fence reactor — one process-wide thread in
///   `epoll_wait()`, started on first use, the userspace stand-in for the interrupt that
///   signals a fence in the kernel. It signals the fence (as above) when the fd turns readable,
///   so the core's contract holds without any event loop: callbacks run, waiters wake. If the
///   fd cannot be registered (`EMFILE`, `ENOMEM`) the fence signals with that error, as the
///   cross-driver contract asks of a backend that gives up.
/// * **Deadline** ([`Fence::set_deadline`]): `SYNC_IOC_SET_DEADLINE`; silently nothing on a
///   kernel without it (it is a hint). Use [`SyncFile::set_deadline`] to see the error.
/// * **Release**: the reactor registration is removed and the fd closed with the last handle.
pub struct SyncFileFence {
    fd: Arc<OwnedFd>,
    /// The fence's own signaller, set right after creation, so that the transition can be
    /// recorded with the kernel's timestamp and error (the core would stamp "now").
    signaler: Arc<OnceLock<FenceSignaler>>,
    names: OnceLock<(String, String)>,
    watch: Mutex<Option<Watch>>,
}

impl SyncFileFence {
    fn sync_file(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn info(&self) -> io::Result<SyncFileInfo> {
        file_info(self.sync_file())
    }

    /// One `SYNC_IOC_FILE_INFO`: the status and, once signalled, the kernel's timestamp and
    /// error, which this signals the fence with (an already-signalled sync_file costs that one
    /// ioctl, no poll, no allocation).
    fn check(&self) -> bool {
        let (status, timestamp) = match file_status(self.sync_file()) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(target: TARGET, "sync_file fence: SYNC_IOC_FILE_INFO failed: {err}");
                return false;
            }
        };
        if !status.is_signaled() {
            return false;
        }
        // Idempotent: a fence that signalled already (or was released) stays as it is.
        if let Some(signaler) = self.signaler.get() {
            signaler.signal_with(timestamp.unwrap_or_else(Ktime::now), status.error());
        }
        true
    }
}

impl FenceOps for SyncFileFence {
    fn driver_name(&self) -> &str {
        &self.names().0
    }

    fn timeline_name(&self) -> &str {
        &self.names().1
    }

    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        if self.check() {
            return false;
        }
        // Readable means signalled for a sync_file.
        let watch = reactor::watch_fence(
            self.fd.clone(),
            epoll::EventFlags::IN,
            &signaler,
            "sync_file fence",
        );
        *self.watch.lock().unwrap_or_else(PoisonError::into_inner) = watch;
        true
    }

    fn signaled(&self) -> bool {
        self.check()
    }

    fn set_deadline(&self, deadline: Ktime) {
        if let Err(err) = set_deadline_raw(self.sync_file(), deadline) {
            tracing::trace!(target: TARGET, "sync_file fence: deadline hint not passed: {err}");
        }
    }

    fn native_poll_fd(&self) -> Option<io::Result<OwnedFd>> {
        Some(rustix::io::fcntl_dupfd_cloexec(&*self.fd, 0).map_err(io::Error::from))
    }

    fn release(&self) {
        // Unregister before the fd closes (epoll registrations belong to the open file).
        drop(
            self.watch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

impl SyncFileFence {
    fn names(&self) -> &(String, String) {
        self.names.get_or_init(|| match self.info() {
            Ok(info) => match info.fences.as_slice() {
                [one] => (one.driver_name.clone(), one.timeline_name.clone()),
                [first, rest @ ..] if rest.iter().all(|f| f.driver_name == first.driver_name) => {
                    (first.driver_name.clone(), info.name)
                }
                _ => ("sync_file".to_owned(), info.name),
            },
            Err(_) => ("sync_file".to_owned(), "<invalid>".to_owned()),
        })
    }
}
