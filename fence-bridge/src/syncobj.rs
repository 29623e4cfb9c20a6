//! DRM sync objects (`drivers/gpu/drm/drm_syncobj.c`): [`Syncobj`], an owned handle, binary or
//! timeline; [`SyncobjPoint`], one point on it, which becomes a [`Fence`](crate::Fence).
//!
//! # What a syncobj is
//!
//! A syncobj is a kernel container for a `dma_fence`, named by a per-file handle. Used as
//! **binary**, it holds one fence that submissions replace ([`Syncobj::signal`],
//! [`Syncobj::reset`], point 0 everywhere). Used as a **timeline**, it holds a
//! `dma_fence_chain`: each point `n > 0` is a chain node whose seqno is `n`, and a point is
//! signalled when its node and every earlier node are. A timeline syncobj therefore *is* a
//! dma-fence timeline: its points order like the seqnos of one fence context, and that is how they
//! are mapped here — one fence-bridge [`ContextId`] per `Syncobj`, seqno = point
//! ([`SyncobjPoint::fence`]), so [`Fence::is_later`](crate::Fence::is_later) and [`crate::latest_per_context`] work on
//! points. (Two imports of the same kernel syncobj are two handles and two contexts.)
//!
//! A point is *submitted* (or *available*) once a fence for it exists — some producer attached
//! work to it, or the host signalled it — and *signalled* when that fence signals. Waiting for a
//! point nobody submitted yet fails with `EINVAL` unless
//! [`SyncobjWaitFlags::WAIT_FOR_SUBMIT`] is given.
//!
//! # Lifecycle
//!
//! 1. **created** — [`Syncobj::create`] / [`Syncobj::create_signaled`] (`DRM_IOCTL_SYNCOBJ_CREATE`)
//!    or **imported** from a syncobj fd ([`Syncobj::import`], `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`,
//!    what a compositor does with a client's `wp_linux_drm_syncobj_timeline_v1` fd).
//! 2. **used** — clones share the handle; every [`Fence`](crate::Fence) made from a point holds a clone too.
//! 3. **destroyed** — `DRM_IOCTL_SYNCOBJ_DESTROY`, exactly once, when the last clone and the last
//!    fence drop. The kernel object lives on while other files or fds hold it.
//!
//! Temporary syncobjs (sync_file import/export on a point, on kernels without the direct
//! point flags) are destroyed before the call returns, on success and on error alike.
//!
//! # Example
//!
//! ```no_run
//! use fence_bridge::{DrmDevice, Syncobj, SyncobjWaitFlags};
//! use std::time::Duration;
//!
//! let device = DrmDevice::open("/dev/dri/renderD128")?;
//! assert!(device.supports_syncobj_timeline());
//! let timeline = Syncobj::create(&device)?;
//!
//! // A compositor waiting for a client's acquire point 5, without a thread:
//! let fence = timeline.point(5).fence();
//! let fd = fence.poll_fd()?; // a kernel eventfd: register it with the event loop
//! assert!(!fd.is_readable()?);
//!
//! timeline.signal_point(3)?;
//! assert_eq!(timeline.query()?, 3);
//! assert!(!fence.is_signaled());
//! timeline.signal_point(5)?;
//! assert!(fd.wait_readable(Some(Duration::from_secs(1)))?);
//! assert!(fence.is_signaled());
//!
//! // A release point as a sync_file, for KMS IN_FENCE_FD or EGL.
//! let sync_file = timeline.export_sync_file(5)?;
//! # drop(sync_file);
//! timeline.wait(5, Some(Duration::ZERO), SyncobjWaitFlags::empty())?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use drm::control::{syncobj, Device as _};
use rustix::event::{eventfd, EventfdFlags};

use crate::context::{context_alloc, ContextId};
use crate::drm_device::DrmDevice;
use crate::fence::TARGET;
use crate::ioctl::{drm_ioctl_ptr, iowr, Opcode, DRM_IOCTL_BASE};
use crate::sync_file::SyncFile;
use crate::syncobj_point::{wait_points, SyncobjPoint};

/// Flags of [`Syncobj::wait`], [`wait_points`] and [`Syncobj::eventfd`]
/// (`DRM_SYNCOBJ_WAIT_FLAGS_*`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SyncobjWaitFlags(u32);

impl SyncobjWaitFlags {
    /// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL`: [`wait_points`] returns when *every* point is
    /// signalled (default: any one).
    pub const WAIT_ALL: Self = Self(1 << 0);
    /// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT`: a point with no fence yet is waited for until
    /// one is submitted and signals. Without it such a point fails the wait at once with
    /// `EINVAL`.
    pub const WAIT_FOR_SUBMIT: Self = Self(1 << 1);
    /// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE`: return once the point's fence *exists*
    /// (submitted), without waiting for it to signal. Implies waiting for submission. With
    /// [`Syncobj::eventfd`]: the eventfd fires at submission rather than at the signal.
    pub const WAIT_AVAILABLE: Self = Self(1 << 2);

    /// No flags: wait for the signal of points that must already be submitted.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw `DRM_SYNCOBJ_WAIT_FLAGS_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for SyncobjWaitFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for SyncobjWaitFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for SyncobjWaitFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_set();
        for (flag, name) in [
            (Self::WAIT_ALL, "WAIT_ALL"),
            (Self::WAIT_FOR_SUBMIT, "WAIT_FOR_SUBMIT"),
            (Self::WAIT_AVAILABLE, "WAIT_AVAILABLE"),
        ] {
            if self.contains(flag) {
                list.entry(&format_args!("{name}"));
            }
        }
        list.finish()
    }
}

/// An owned DRM syncobj handle, binary or timeline (see the [module docs](self)).
///
/// Cheap to clone: clones share the handle, which is destroyed
/// (`DRM_IOCTL_SYNCOBJ_DESTROY`) exactly once, when the last clone and the last [`Fence`](crate::Fence) made
/// from one of its points are dropped. Holds its [`DrmDevice`], so the DRM file outlives it.
///
/// Errors are the kernel's errnos as [`io::Error`]s (`raw_os_error()`): `ETIME` for a wait that
/// timed out, `EINVAL` for a point nobody submitted, `ENOENT` for a handle the file does not know,
/// `EBADF` for a closed fd, `EOPNOTSUPP` on a driver without (timeline) syncobjs.
#[derive(Clone)]
pub struct Syncobj {
    inner: Arc<SyncobjInner>,
}

struct SyncobjInner {
    device: DrmDevice,
    handle: syncobj::Handle,
    context: ContextId,
    name: String,
}

impl Drop for SyncobjInner {
    fn drop(&mut self) {
        if let Err(err) = self.device.destroy_syncobj(self.handle) {
            tracing::warn!(target: TARGET, handle = u32::from(self.handle), %err,
                "DRM_IOCTL_SYNCOBJ_DESTROY failed");
        }
    }
}

impl Syncobj {
    /// Creates an unsignalled syncobj: a timeline at point 0, or a binary syncobj with no fence
    /// (`DRM_IOCTL_SYNCOBJ_CREATE`).
    pub fn create(device: &DrmDevice) -> io::Result<Syncobj> {
        Ok(Self::wrap(device, device.create_syncobj(false)?))
    }

    /// Creates a binary syncobj that is already signalled (`DRM_SYNCOBJ_CREATE_SIGNALED`: it
    /// holds the kernel's signalled stub fence).
    pub fn create_signaled(device: &DrmDevice) -> io::Result<Syncobj> {
        Ok(Self::wrap(device, device.create_syncobj(true)?))
    }

    /// Imports a syncobj fd (one from [`Syncobj::export`], `drmSyncobjHandleToFD` or a
    /// Wayland client) as a new handle on `device` (`DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`). The fd
    /// stays the caller's. Not for sync_files: use [`Syncobj::import_sync_file`].
    ///
    /// # Errors
    ///
    /// `EINVAL` if `fd` is open but not a syncobj (e.g. a sync_file or an eventfd); `EBADF`
    /// (from the kernel's `fget`) is reported as `EINVAL` too, as the kernel does.
    pub fn import(device: &DrmDevice, fd: BorrowedFd<'_>) -> io::Result<Syncobj> {
        Ok(Self::wrap(device, device.fd_to_syncobj(fd, false)?))
    }

    fn wrap(device: &DrmDevice, handle: syncobj::Handle) -> Syncobj {
        let name = format!("{}:syncobj{}", device.driver_name(), u32::from(handle));
        Syncobj {
            inner: Arc::new(SyncobjInner {
                device: device.clone(),
                handle,
                context: context_alloc(1).first(),
                name,
            }),
        }
    }

    /// Exports the syncobj itself as an fd another process (or [`Syncobj::import`]) turns back
    /// into a handle to the same kernel object (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`, no flags).
    pub fn export(&self) -> io::Result<OwnedFd> {
        self.device().syncobj_to_fd(self.handle(), false)
    }

    /// The device the handle belongs to.
    pub fn device(&self) -> &DrmDevice {
        &self.inner.device
    }

    /// The raw handle, for driver submission ioctls. Valid while `self` (or a clone) lives.
    pub fn handle(&self) -> syncobj::Handle {
        self.inner.handle
    }

    /// The fence context of this syncobj's points ([`SyncobjPoint::fence`]).
    pub fn context(&self) -> ContextId {
        self.inner.context
    }

    /// Whether `self` and `other` are clones of one handle.
    pub fn ptr_eq(&self, other: &Syncobj) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// One point of the timeline (0: the binary syncobj's current fence).
    pub fn point(&self, point: u64) -> SyncobjPoint {
        SyncobjPoint::new(self.clone(), point)
    }

    /// The timeline name of its points' fences: `"<driver>:syncobj<handle>"`.
    pub(crate) fn name(&self) -> &str {
        &self.inner.name
    }

    // --- timeline -------------------------------------------------------------------------

    /// The timeline's current value: the highest point such that it and all before it have
    /// signalled (`DRM_IOCTL_SYNCOBJ_QUERY`). A point `p` is signalled iff `query() >= p`.
    /// 0 for a new timeline and for any binary syncobj.
    pub fn query(&self) -> io::Result<u64> {
        self.query_flags(false)
    }

    /// The last *submitted* point, signalled or not (`DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED`).
    pub fn query_last(&self) -> io::Result<u64> {
        self.query_flags(true)
    }

    fn query_flags(&self, last_submitted: bool) -> io::Result<u64> {
        let mut points = [0u64];
        self.device()
            .syncobj_timeline_query(&[self.handle()], &mut points, last_submitted)?;
        Ok(points[0])
    }

    /// Signals timeline point `point` from the CPU (`DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`): adds a
    /// signalled chain node, so every point up to `point` reads as signalled. `point` 0 replaces
    /// the fence with a signalled one, as [`Syncobj::signal`] does.
    pub fn signal_point(&self, point: u64) -> io::Result<()> {
        self.device()
            .syncobj_timeline_signal(&[self.handle()], &[point])
    }

    /// Moves the fence at `src`'s `src_point` to `self`'s `dst_point`
    /// (`DRM_IOCTL_SYNCOBJ_TRANSFER`). `dst_point` 0 replaces `self`'s fence (binary);
    /// `dst_point > 0` adds a timeline point. `src_point` 0 takes `src`'s current fence.
    /// `self` and `src` may be the same syncobj; both must live on the same DRM file.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `src_point` has no fence yet (nothing is waited for), or the two syncobjs are
    /// on different files.
    pub fn transfer(&self, src: &Syncobj, src_point: u64, dst_point: u64) -> io::Result<()> {
        if !self.device().same_file(src.device()) {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::INVAL.raw_os_error(),
            ));
        }
        self.device()
            .syncobj_timeline_transfer(src.handle(), self.handle(), src_point, dst_point)
    }

    // --- binary ---------------------------------------------------------------------------

    /// Replaces the fence with a signalled one (`DRM_IOCTL_SYNCOBJ_SIGNAL`): binary "signal".
    pub fn signal(&self) -> io::Result<()> {
        self.device().syncobj_signal(&[self.handle()])
    }

    /// Removes the fence (`DRM_IOCTL_SYNCOBJ_RESET`): a binary syncobj becomes unsubmitted
    /// again; waits without [`SyncobjWaitFlags::WAIT_FOR_SUBMIT`] then fail with `EINVAL`.
    pub fn reset(&self) -> io::Result<()> {
        self.device().syncobj_reset(&[self.handle()])
    }

    // --- waiting --------------------------------------------------------------------------

    /// Blocks until `point` (0: the binary fence) signals, or `timeout` elapses (`None`: never;
    /// `Some(ZERO)`: just checks). See [`wait_points`].
    pub fn wait(
        &self,
        point: u64,
        timeout: Option<Duration>,
        flags: SyncobjWaitFlags,
    ) -> io::Result<()> {
        wait_points(&[self.point(point)], timeout, flags).map(drop)
    }

    /// Registers a new eventfd for `point` and returns it (`DRM_IOCTL_SYNCOBJ_EVENTFD`): the
    /// kernel writes 1 to it once, when `point` signals — or, with
    /// [`SyncobjWaitFlags::WAIT_AVAILABLE`] (the only flag accepted), when a fence for `point`
    /// is submitted. No thread waits: register the fd with a poll loop.
    ///
    /// Registration never fails for an unsubmitted point (the kernel waits for submission
    /// itself); on a point already signalled (or available) the eventfd is readable at once.
    /// Nobody reads it here, so once readable it stays readable. The fd is non-blocking and
    /// close-on-exec. If the syncobj is destroyed first, it never fires.
    ///
    /// # Errors
    ///
    /// `EINVAL` for other flags; `EOPNOTSUPP` without timeline support (see
    /// [`DrmDevice::supports_syncobj_timeline`]).
    pub fn eventfd(&self, point: u64, flags: SyncobjWaitFlags) -> io::Result<OwnedFd> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        self.register_eventfd(point, fd.as_fd(), flags)?;
        Ok(fd)
    }

    /// Like [`Syncobj::eventfd`] with an eventfd of the caller's (e.g. one shared by several
    /// points). The kernel keeps a reference to it until it fires or the syncobj is destroyed.
    pub fn register_eventfd(
        &self,
        point: u64,
        eventfd: BorrowedFd<'_>,
        flags: SyncobjWaitFlags,
    ) -> io::Result<()> {
        ioctl_eventfd(
            self.device().as_fd(),
            self.handle().into(),
            flags.bits(),
            eventfd.as_raw_fd(),
            point,
        )
    }

    // --- sync_file ------------------------------------------------------------------------

    /// Puts the fence of a sync_file at `point` (0: replaces the binary fence). The kernel way:
    /// directly with `DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE` where the kernel has it
    /// ([`DrmDevice::supports_syncobj_point_sync_file`]), else imported into a temporary binary
    /// syncobj (`DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE`), transferred to `point` and
    /// the temporary destroyed (on every path). The sync_file stays the caller's.
    ///
    /// Importing at a point at or below the timeline's last point breaks the timeline's order
    /// (the kernel warns and keeps going): producers import at increasing points.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `sync_file` is not a sync_file (the kernel's `sync_file_get_fence` fails);
    /// `ENOENT` if the handle is unknown.
    pub fn import_sync_file(&self, point: u64, sync_file: &SyncFile) -> io::Result<()> {
        let (dev, fd) = (self.device().as_fd(), sync_file.as_fd());
        if point == 0 || self.device().supports_syncobj_point_sync_file() {
            return ioctl_import_sync_file(dev, self.handle(), fd, point);
        }
        let temp = Temporary::create(self.device())?;
        ioctl_import_sync_file(dev, temp.handle, fd, 0)?;
        self.device()
            .syncobj_timeline_transfer(temp.handle, self.handle(), 0, point)
        // `temp` destroyed here, whatever happened.
    }

    /// Exports the fence at `point` (0: the binary fence) as a new sync_file. The kernel way:
    /// directly with `DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE` where the kernel has it, else a
    /// temporary binary syncobj receives the point (`DRM_IOCTL_SYNCOBJ_TRANSFER`) and is exported
    /// with `DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE` — and then **destroyed**, on success
    /// too (Smithay 0.7's `export_sync_file` leaks it there).
    ///
    /// A point already signalled gives a signalled sync_file.
    ///
    /// # Errors
    ///
    /// `EINVAL` if nothing was submitted for `point` yet (a sync_file cannot wait for
    /// submission).
    pub fn export_sync_file(&self, point: u64) -> io::Result<SyncFile> {
        let dev = self.device().as_fd();
        if point == 0 || self.device().supports_syncobj_point_sync_file() {
            return ioctl_export_sync_file(dev, self.handle().into(), point).map(SyncFile::from_fd);
        }
        let temp = Temporary::create(self.device())?;
        self.device()
            .syncobj_timeline_transfer(self.handle(), temp.handle, point, 0)?;
        ioctl_export_sync_file(dev, temp.handle.into(), 0).map(SyncFile::from_fd)
        // `temp` destroyed here, whatever happened.
    }
}

impl fmt::Debug for Syncobj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Syncobj")
            .field("handle", &u32::from(self.handle()))
            .field("driver", &self.device().driver_name())
            .field("context", &self.context())
            .finish()
    }
}

/// A temporary binary syncobj, destroyed when it goes out of scope on every path.
struct Temporary<'a> {
    device: &'a DrmDevice,
    handle: syncobj::Handle,
}

impl<'a> Temporary<'a> {
    fn create(device: &'a DrmDevice) -> io::Result<Self> {
        Ok(Temporary {
            device,
            handle: device.create_syncobj(false)?,
        })
    }
}

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.device.destroy_syncobj(self.handle) {
            tracing::warn!(target: TARGET, %err, "destroying a temporary syncobj failed");
        }
    }
}

// ---- the syncobj UAPI the `drm` crate 0.14 lacks (include/uapi/drm/drm.h) ----------------------
//
// Import of a sync_file into an *existing* handle (drm-ffi always passes handle 0, which the
// kernel rejects with `ENOENT`), the `point` of `struct drm_syncobj_handle`, and the eventfd ioctl
// with a raw handle and fd (the capability probes of `DrmDevice` pass handle 0 and fd -1).

/// `DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE`.
const IMPORT_SYNC_FILE: u32 = 1 << 0;
/// `DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE` (Linux 6.15+).
const FD_TO_HANDLE_TIMELINE: u32 = 1 << 1;
/// `DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE`.
const EXPORT_SYNC_FILE: u32 = 1 << 0;
/// `DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE` (Linux 6.15+).
const HANDLE_TO_FD_TIMELINE: u32 = 1 << 1;

/// `struct drm_syncobj_handle` (Linux 6.15 layout; older kernels read the first 16 bytes and
/// reject the TIMELINE flags).
#[repr(C)]
struct DrmSyncobjHandle {
    handle: u32,
    flags: u32,
    fd: i32,
    pad: u32,
    point: u64,
}

/// `struct drm_syncobj_eventfd` (Linux 6.6+).
#[repr(C)]
struct DrmSyncobjEventfd {
    handle: u32,
    flags: u32,
    point: u64,
    fd: i32,
    pad: u32,
}

// Naturally aligned, no implicit padding: the same layout on every Linux ABI.
const _: () = assert!(std::mem::size_of::<DrmSyncobjHandle>() == 24);
const _: () = assert!(std::mem::size_of::<DrmSyncobjEventfd>() == 24);

/// `DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`: `DRM_IOWR(0xC1, struct drm_syncobj_handle)`.
const SYNCOBJ_HANDLE_TO_FD: Opcode = iowr::<DrmSyncobjHandle>(DRM_IOCTL_BASE, 0xC1);
/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`: `DRM_IOWR(0xC2, struct drm_syncobj_handle)`.
const SYNCOBJ_FD_TO_HANDLE: Opcode = iowr::<DrmSyncobjHandle>(DRM_IOCTL_BASE, 0xC2);
/// `DRM_IOCTL_SYNCOBJ_EVENTFD`: `DRM_IOWR(0xCF, struct drm_syncobj_eventfd)`.
const SYNCOBJ_EVENTFD: Opcode = iowr::<DrmSyncobjEventfd>(DRM_IOCTL_BASE, 0xCF);

/// `DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD` with `EXPORT_SYNC_FILE`: the fence at `point` of `handle`
/// as a new sync_file (point 0: the binary fence; `point > 0` needs the `TIMELINE` flag, Linux
/// 6.15+, see [`DrmDevice::supports_syncobj_point_sync_file`]).
pub(crate) fn ioctl_export_sync_file(
    dev: BorrowedFd<'_>,
    handle: u32,
    point: u64,
) -> io::Result<OwnedFd> {
    let timeline = if point > 0 { HANDLE_TO_FD_TIMELINE } else { 0 };
    let mut args = DrmSyncobjHandle {
        handle,
        flags: EXPORT_SYNC_FILE | timeline,
        fd: -1,
        pad: 0,
        point,
    };
    // SAFETY: the opcode takes a `struct drm_syncobj_handle *`; DrmSyncobjHandle is its
    // #[repr(C)] layout (size asserted above).
    unsafe { drm_ioctl_ptr::<SYNCOBJ_HANDLE_TO_FD, _>(dev, &mut args)? };
    // SAFETY: on success the kernel installed a new fd for us in `args.fd`; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(args.fd) })
}

/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE` with `IMPORT_SYNC_FILE`: the fence of `sync_file` into the
/// existing `handle` at `point` (as for [`ioctl_export_sync_file`]). The fd stays the caller's.
fn ioctl_import_sync_file(
    dev: BorrowedFd<'_>,
    handle: syncobj::Handle,
    sync_file: BorrowedFd<'_>,
    point: u64,
) -> io::Result<()> {
    let timeline = if point > 0 { FD_TO_HANDLE_TIMELINE } else { 0 };
    let mut args = DrmSyncobjHandle {
        handle: handle.into(),
        flags: IMPORT_SYNC_FILE | timeline,
        fd: sync_file.as_raw_fd(),
        pad: 0,
        point,
    };
    // SAFETY: as in ioctl_export_sync_file; the kernel only looks the fd up.
    unsafe { drm_ioctl_ptr::<SYNCOBJ_FD_TO_HANDLE, _>(dev, &mut args) }
}

/// `DRM_IOCTL_SYNCOBJ_EVENTFD`: the kernel writes `fd` (an eventfd) when `point` of `handle`
/// signals (or is submitted, with `WAIT_AVAILABLE`).
pub(crate) fn ioctl_eventfd(
    dev: BorrowedFd<'_>,
    handle: u32,
    flags: u32,
    fd: RawFd,
    point: u64,
) -> io::Result<()> {
    let mut args = DrmSyncobjEventfd {
        handle,
        flags,
        point,
        fd,
        pad: 0,
    };
    // SAFETY: the opcode takes a `struct drm_syncobj_eventfd *`; DrmSyncobjEventfd is its
    // #[repr(C)] layout (size asserted above). The kernel takes its own eventfd reference.
    unsafe { drm_ioctl_ptr::<SYNCOBJ_EVENTFD, _>(dev, &mut args) }
}
