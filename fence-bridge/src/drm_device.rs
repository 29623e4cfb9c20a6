//! [`DrmDevice`]: an open DRM node (card or render node) that syncobjs live on, with the
//! capability probes a compositor needs before it advertises explicit sync.
//!
//! # Lifecycle
//!
//! 1. **opened** — [`DrmDevice::open`] (a path) or [`DrmDevice::from_fd`] (an fd you already
//!    have, e.g. from a session); `DRM_IOCTL_VERSION` is read once for the driver name.
//! 2. **shared** — `DrmDevice` is a cheap-clone handle; every [`crate::Syncobj`] holds one, because
//!    a syncobj handle only means something on the DRM file that created it.
//! 3. **closed** — when the last clone *and* the last syncobj of the device drop. Closing the
//!    DRM file would destroy every syncobj handle on it; holding the device in each syncobj makes
//!    "handle outlives its file" impossible.

use std::ffi::OsStr;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use drm::{Device as _, DriverCapability};
use rustix::io::Errno;

use crate::syncobj::{ioctl_eventfd, ioctl_export_sync_file};

/// An open DRM node (`/dev/dri/card*` or `/dev/dri/renderD*`): the file syncobj handles belong to.
///
/// Cheap to clone (an `Arc`); the fd is closed when the last clone and the last
/// [`crate::Syncobj`] created on it are dropped. Implements [`drm::Device`] and
/// [`drm::control::Device`], so the whole `drm` crate API is available on it.
///
/// # Example
///
/// ```no_run
/// use fence_bridge::DrmDevice;
///
/// let device = DrmDevice::open("/dev/dri/renderD128")?;
/// println!("driver: {}", device.driver_name());
/// if device.supports_syncobj_timeline() {
///     // Safe to expose wp_linux_drm_syncobj_manager_v1.
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct DrmDevice {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    fd: OwnedFd,
    path: Option<PathBuf>,
    driver: String,
    syncobj: OnceLock<bool>,
    timeline: OnceLock<bool>,
    point_sync_file: OnceLock<bool>,
}

impl DrmDevice {
    /// Opens a DRM node read-write, close-on-exec, and reads its driver name.
    ///
    /// # Errors
    ///
    /// Whatever `open(2)` returns, or the error of `DRM_IOCTL_VERSION` if the file is not a DRM
    /// node (`ENOTTY` for a regular file).
    pub fn open(path: impl AsRef<Path>) -> io::Result<DrmDevice> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
            .open(path)?;
        Self::new(file.into(), Some(path.to_owned()))
    }

    /// Wraps an already-open DRM node (e.g. one handed out by libseat) and reads its driver name.
    ///
    /// # Errors
    ///
    /// The error of `DRM_IOCTL_VERSION` if `fd` is not a DRM node.
    pub fn from_fd(fd: OwnedFd) -> io::Result<DrmDevice> {
        Self::new(fd, None)
    }

    fn new(fd: OwnedFd, path: Option<PathBuf>) -> io::Result<DrmDevice> {
        let driver = Borrowed(fd.as_fd()).get_driver()?;
        let driver = driver.name().to_string_lossy().into_owned();
        Ok(DrmDevice {
            inner: Arc::new(DeviceInner {
                fd,
                path,
                driver,
                syncobj: OnceLock::new(),
                timeline: OnceLock::new(),
                point_sync_file: OnceLock::new(),
            }),
        })
    }

    /// The kernel driver's name (`DRM_IOCTL_VERSION`), e.g. `"virtio_gpu"`, `"amdgpu"`, `"vgem"`.
    pub fn driver_name(&self) -> &str {
        &self.inner.driver
    }

    /// The path the node was opened from ([`DrmDevice::open`]); `None` after
    /// [`DrmDevice::from_fd`].
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Whether the driver has syncobjs at all (`DRM_CAP_SYNCOBJ`): binary create, signal, wait,
    /// fd and sync_file import/export. Probed once, then cached.
    pub fn supports_syncobj(&self) -> bool {
        *self
            .inner
            .syncobj
            .get_or_init(|| self.cap(DriverCapability::SyncObj))
    }

    /// Whether timeline syncobjs can be waited for *without blocking a thread* — what
    /// `wp_linux_drm_syncobj_v1` needs. Probed once, then cached. Both must hold:
    ///
    /// 1. `DRM_CAP_SYNCOBJ_TIMELINE` is 1 (timeline signal/wait/query/transfer exist). Smithay 0.7
    ///    skips this check.
    /// 2. `DRM_IOCTL_SYNCOBJ_EVENTFD` exists (Linux 6.6+, and only for drivers with timelines).
    ///    Probed as wlroots and Mutter do: called with handle 0 (never a valid handle) and fd −1,
    ///    it must fail with `ENOENT` — the kernel checks the feature, flags and pad first, then
    ///    looks the handle up. `ENOTTY`/`EINVAL` mean an older kernel without the ioctl,
    ///    `EOPNOTSUPP` a driver without timelines.
    ///
    /// ```no_run
    /// let device = fence_bridge::DrmDevice::open("/dev/dri/card0")?;
    /// if !device.supports_syncobj_timeline() {
    ///     eprintln!("{}: no timeline syncobjs, explicit sync disabled", device.driver_name());
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn supports_syncobj_timeline(&self) -> bool {
        *self.inner.timeline.get_or_init(|| {
            self.cap(DriverCapability::TimelineSyncObj)
                && probe(ioctl_eventfd(self.as_fd(), 0, 0, -1, 0)) == Some(Errno::NOENT)
        })
    }

    /// Whether the kernel exports and imports a sync_file at a timeline *point* directly
    /// (`DRM_SYNCOBJ_{HANDLE_TO_FD,FD_TO_HANDLE}_FLAGS_TIMELINE`, Linux 6.15+). Without it,
    /// [`crate::Syncobj::export_sync_file`] and [`crate::Syncobj::import_sync_file`] go through a
    /// temporary binary syncobj (and destroy it). Probed once: the flag with handle 0 gives
    /// `ENOENT` where it is known and `EINVAL` where it is not.
    pub fn supports_syncobj_point_sync_file(&self) -> bool {
        *self.inner.point_sync_file.get_or_init(|| {
            self.supports_syncobj()
                && probe(ioctl_export_sync_file(self.as_fd(), 0, 1)) == Some(Errno::NOENT)
        })
    }

    fn cap(&self, cap: DriverCapability) -> bool {
        self.get_driver_capability(cap).is_ok_and(|v| v != 0)
    }

    /// Whether `self` and `other` are clones of one open file (so their handles are shared).
    pub fn same_file(&self, other: &DrmDevice) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The errno of a capability probe (an ioctl made to fail), `None` if it succeeded.
fn probe<T>(result: io::Result<T>) -> Option<Errno> {
    result.err().and_then(|err| Errno::from_io_error(&err))
}

/// `get_driver` before the `DrmDevice` exists.
struct Borrowed<'a>(BorrowedFd<'a>);
impl AsFd for Borrowed<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0
    }
}
impl drm::Device for Borrowed<'_> {}

impl AsFd for DrmDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl drm::Device for DrmDevice {}
impl drm::control::Device for DrmDevice {}

impl fmt::Debug for DrmDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrmDevice")
            .field("fd", &self.inner.fd.as_raw_fd())
            .field("path", &self.inner.path.as_deref().map(Path::as_os_str))
            .field("driver", &OsStr::new(&self.inner.driver))
            .finish()
    }
}
