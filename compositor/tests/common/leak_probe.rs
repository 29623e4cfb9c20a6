//! Leak probes against a process (e.g. a compositor under `seatd-launch`): its open fds by kind,
//! the GEM and syncobj handles of its DRM files, the DRM clients the kernel lists, the dma-bufs
//! that exist. Framebuffer counts are in [`super::kms_readback`].
//!
//! What Linux 6.12 offers, looked at in the guest: `/proc/PID/fdinfo/FD` of a virtio_gpu, vgem
//! or vkms fd has only `pos`, `flags`, `mnt_id`, `ino` (none of these drivers implements
//! `show_fdinfo`, so no `drm-client-id` or `drm-*-memory` keys), and debugfs `gem_names` lists
//! only flink'd names: nothing *lists* a client's GEM handles. Per client there is only the
//! `clients` line; per device the framebuffer list (with the creating thread's comm as
//! "allocated by") and the atomic state (with each framebuffer's GEM object refcounts); and the
//! global dma-buf list in `/sys/kernel/debug/dma_buf/bufinfo`.
//!
//! # GEM and syncobj handles: asked of the process's own DRM files ([`drm_handles`])
//! `pidfd_open` + `pidfd_getfd` (root in the guest may) duplicate each DRM fd of the process into
//! the test. A duplicate shares the `struct file`, hence the `drm_file` and its two handle
//! namespaces (GEM `object_idr`, syncobj `syncobj_idr`), and each handle is asked about with an
//! ioctl that only looks it up:
//! * GEM: `DRM_IOCTL_MODE_MAP_DUMB`. 6.12's `drm_mode_mmap_dumb_ioctl` calls the driver's
//!   `dumb_map_offset`: virtio-gpu's `virtio_gpu_mode_dumb_mmap` is a plain
//!   `drm_gem_object_lookup` (ENOENT, else 0); vkms and vgem (GEM shmem) use
//!   `drm_gem_dumb_map_offset`, which gives ENOENT for no object, EINVAL for an imported one
//!   and otherwise 0 (creating the object's mmap offset if it had none: no handle, no fd, no
//!   dma-buf). So ENOENT means no handle and 0 or EINVAL means one. The ioctl is not
//!   `DRM_RENDER_ALLOW`: on a render node every call is EACCES. There, on virtio-gpu,
//!   `DRM_IOCTL_VIRTGPU_RESOURCE_INFO` (render-allowed, a plain `drm_gem_object_lookup`: ENOENT,
//!   else 0 and the object's size) asks instead; on another driver's render node (or a driver
//!   without dumb buffers, ENOSYS) the file is reported [`Handles::Unprobed`].
//! * syncobj: `DRM_IOCTL_SYNCOBJ_QUERY` of one handle: ENOENT when it does not exist
//!   (`drm_syncobj_array_find`), 0 when it does; EOPNOTSUPP on a driver without
//!   `DRIVER_SYNCOBJ_TIMELINE` (vkms, vgem), reported as [`Handles::NoneOnDriver`]. (A driver
//!   with binary syncobjs but no timelines would be miscounted as none; the guest has none.)
//!
//! None of these creates anything: `PRIME_HANDLE_TO_FD` or `GEM_FLINK` would (a dma-buf, a
//! name). Handles are allocated lowest-free from 1 (`idr_alloc(.., 1, 0, ..)`), so a scan of 1,
//! 2, ... that stops [`SCAN_SLACK`] handles past the highest one found sees them all. fds that
//! are one open file (dups, as fencegate's card fd is under four numbers) are probed once
//! (`kcmp(KCMP_FILE)`). Seen in the guest: a fullscreen client's buffer is one GEM handle more
//! in fencegate's card file while fencegate holds it, and each imported timeline one syncobj
//! handle more in its render-node file; both go when the client leaves. Compare counts, not
//! handle numbers: a swapchain made anew (after a VT switch) takes new numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::kms_readback::{debugfs_dir, DrmModeMapDumb, DRM_IOCTL_MODE_MAP_DUMB};

/// What an fd of a process is, from its `/proc/PID/fd` link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FdKind {
    /// `/dev/dri/*`
    Drm,
    /// `/dmabuf:<name>`
    DmaBuf,
    /// `anon_inode:sync_file`
    SyncFile,
    /// `anon_inode:syncobj` (a syncobj exported as an fd)
    Syncobj,
    /// `socket:[...]`
    Socket,
    /// `anon_inode:[eventfd]`, `[eventpoll]`, `[timerfd]`, `[signalfd]`, ...
    AnonInode,
    /// `/memfd:...`
    Memfd,
    Pipe,
    Other,
}

impl FdKind {
    pub fn of_link(link: &str) -> FdKind {
        match link {
            l if l.starts_with("/dev/dri/") => FdKind::Drm,
            l if l.starts_with("/dmabuf:") => FdKind::DmaBuf,
            "anon_inode:sync_file" => FdKind::SyncFile,
            l if l.starts_with("anon_inode:syncobj") => FdKind::Syncobj,
            l if l.starts_with("socket:") => FdKind::Socket,
            l if l.starts_with("anon_inode:") => FdKind::AnonInode,
            l if l.starts_with("/memfd:") => FdKind::Memfd,
            l if l.starts_with("pipe:") => FdKind::Pipe,
            _ => FdKind::Other,
        }
    }
}

/// The open fds of `pid`: fd number and link target.
pub fn open_fds(pid: i32) -> io::Result<Vec<(i32, String)>> {
    let mut fds = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // An fd closed between readdir and readlink is simply gone.
        if let Ok(link) = fs::read_link(entry.path()) {
            fds.push((fd, link.to_string_lossy().into_owned()));
        }
    }
    fds.sort();
    Ok(fds)
}

/// How many fds of each kind `pid` has open.
pub fn fd_summary(pid: i32) -> io::Result<BTreeMap<FdKind, usize>> {
    let mut summary = BTreeMap::new();
    for (_, link) in open_fds(pid)? {
        *summary.entry(FdKind::of_link(&link)).or_insert(0) += 1;
    }
    Ok(summary)
}

/// `pid`'s open DRM fds (fd, node path).
pub fn drm_fds(pid: i32) -> io::Result<Vec<(i32, String)>> {
    Ok(open_fds(pid)?
        .into_iter()
        .filter(|(_, l)| FdKind::of_link(l) == FdKind::Drm)
        .collect())
}

/// One line of debugfs `clients`: an open file of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmClient {
    pub command: String,
    /// The process that opened the file (a file that was ever master keeps its opener: under
    /// seatd that is seatd, not the compositor).
    pub tgid: i32,
    /// The node's minor (0: card0, 128: renderD128).
    pub minor: u32,
    pub master: bool,
    pub authenticated: bool,
    pub uid: u32,
}

/// `/sys/kernel/debug/dri/<minor>/clients` of `node` (all files of the device, every node).
pub fn drm_clients(node: &Path) -> io::Result<Vec<DrmClient>> {
    Ok(parse_clients(&fs::read_to_string(
        debugfs_dir(node)?.join("clients"),
    )?))
}

/// Parses the `clients` text (6.12):
/// ```text
///              command  tgid dev master a   uid      magic
///           explore.sh   180   0   y    y     0          0
/// ```
pub fn parse_clients(text: &str) -> Vec<DrmClient> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // The command is right-aligned in 20 columns and may hold spaces: parse from the end.
            let words: Vec<&str> = line.split_whitespace().collect();
            let n = words.len();
            if n < 7 {
                return None;
            }
            Some(DrmClient {
                command: words[..n - 6].join(" "),
                tgid: words[n - 6].parse().ok()?,
                minor: words[n - 5].parse().ok()?,
                master: words[n - 4] == "y",
                authenticated: words[n - 3] == "y",
                uid: words[n - 2].parse().ok()?,
            })
        })
        .collect()
}

/// One dma-buf of debugfs `dma_buf/bufinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaBufInfo {
    pub size: u64,
    /// The exporter's module: `virtio_gpu`; `drm` for the core PRIME helper (vkms, vgem);
    /// `udmabuf` (Mesa makes one in every GL/GBM process).
    pub exporter: String,
    /// The dma-buf's inode: unique while it lives (as `ino` in `/proc/PID/fdinfo` of its fds).
    pub ino: u64,
    /// References to its file (fds, mappings, the exporter's cache).
    pub file_count: u64,
}

/// Every dma-buf in the system (debugfs `dma_buf/bufinfo`).
pub fn dma_bufs() -> io::Result<Vec<DmaBufInfo>> {
    let text = fs::read_to_string("/sys/kernel/debug/dma_buf/bufinfo")?;
    Ok(parse_dma_bufs(&text))
}

/// How many dma-bufs exist system-wide.
pub fn dma_buf_count() -> io::Result<usize> {
    Ok(dma_bufs()?.len())
}

/// Parses `bufinfo` (6.12; tabs shown as spaces): a header, then per buffer a tab-separated
/// line (size decimal, flags and mode hex, file count, exporter, ino, name) and its
/// attachments; the totals last:
/// ```text
/// Dma-buf Objects:
/// size        flags       mode        count       exp_name    ino         name
/// 03194880    00000000    00080005    00000001    drm    00000001    <none>
///     Attached Devices:
/// Total 0 devices attached
///
///
/// Total 1 objects, 3194880 bytes
/// ```
pub fn parse_dma_bufs(text: &str) -> Vec<DmaBufInfo> {
    text.lines()
        .filter(|l| !l.starts_with('\t'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 7 {
                return None;
            }
            Some(DmaBufInfo {
                size: f[0].trim().parse().ok()?,
                exporter: f[4].to_string(),
                ino: f[5].trim().parse().ok()?,
                file_count: f[3].trim().parse().ok()?,
            })
        })
        .collect()
}

// --- GEM and syncobj handles of another process's DRM files ------------------------------------

/// How many handle numbers past the highest live one a scan probes before it stops.
pub const SCAN_SLACK: u32 = 256;
/// No scan goes past this handle (a runaway leak is reported as such, not scanned forever).
pub const SCAN_CAP: u32 = 1 << 16;

/// `fd` of process `pid`, duplicated into this process (`pidfd_open` + `pidfd_getfd`): the same
/// open file, so the same `drm_file` for a DRM node.
pub fn dup_fd_of(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// What a probe found in one DRM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handles {
    /// The live handles.
    Live(BTreeSet<u32>),
    /// The driver has no such handles (why): syncobjs on vkms or vgem.
    NoneOnDriver(String),
    /// The probe does not work on this file (why): GEM handles of a render node.
    Unprobed(String),
}

impl Handles {
    /// How many live handles; 0 when unprobed.
    pub fn count(&self) -> usize {
        match self {
            Handles::Live(h) => h.len(),
            Handles::NoneOnDriver(_) | Handles::Unprobed(_) => 0,
        }
    }

    /// The handles live in `self` and not in `before`.
    pub fn added_since(&self, before: &Handles) -> Vec<u32> {
        match (self, before) {
            (Handles::Live(now), Handles::Live(then)) => now.difference(then).copied().collect(),
            (Handles::Live(now), _) => now.iter().copied().collect(),
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handles::Live(h) => write!(f, "{} {:?}", h.len(), h),
            Handles::NoneOnDriver(why) => write!(f, "none ({why})"),
            Handles::Unprobed(why) => write!(f, "unprobed ({why})"),
        }
    }
}

/// The GEM and syncobj handles of one DRM file of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandles {
    /// Every fd of the process that is this open file (dups: `kcmp(KCMP_FILE)`), lowest first.
    pub fds: Vec<i32>,
    pub gem: Handles,
    pub syncobjs: Handles,
}

/// The handles of every DRM file a process has open, keyed by (its lowest fd, node path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandleCensus(pub BTreeMap<(i32, String), FileHandles>);

impl HandleCensus {
    /// How many live GEM and syncobj handles each DRM file has: what a leak check compares
    /// (handle numbers may change without a leak, e.g. a swapchain made anew, so the sets are
    /// not compared).
    pub fn counts(&self) -> BTreeMap<(i32, String), (usize, usize)> {
        self.0
            .iter()
            .map(|(k, h)| (k.clone(), (h.gem.count(), h.syncobjs.count())))
            .collect()
    }

    /// What changed since `before`, one line per DRM file that appeared or went, and per file
    /// and kind whose handle count differs: the handles that are new and those that are gone.
    pub fn changes_since(&self, before: &HandleCensus) -> Vec<String> {
        let mut changes = Vec::new();
        for ((fd, node), now) in &self.0 {
            let fds = &now.fds;
            let Some(then) = before.0.get(&(*fd, node.clone())) else {
                changes.push(format!(
                    "fds {fds:?} ({node}) are new: GEM {}, syncobjs {}",
                    now.gem, now.syncobjs
                ));
                continue;
            };
            for (kind, now, then) in [
                ("GEM", &now.gem, &then.gem),
                ("syncobj", &now.syncobjs, &then.syncobjs),
            ] {
                if now.count() != then.count()
                    || matches!(now, Handles::Live(_)) != matches!(then, Handles::Live(_))
                {
                    changes.push(format!(
                        "fds {fds:?} ({node}): {kind} handles new {:?}, gone {:?} (before: \
                         {then}; after: {now})",
                        now.added_since(then),
                        then.added_since(now)
                    ));
                }
            }
        }
        for ((fd, node), then) in &before.0 {
            if !self.0.contains_key(&(*fd, node.clone())) {
                changes.push(format!(
                    "fds {:?} ({node}) are gone: they had GEM {}, syncobjs {}",
                    then.fds, then.gem, then.syncobjs
                ));
            }
        }
        changes
    }
}

impl fmt::Display for HandleCensus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ((_, node), h)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "fds {:?} {node}: GEM {}, syncobjs {}",
                h.fds, h.gem, h.syncobjs
            )?;
        }
        Ok(())
    }
}

/// The live GEM and syncobj handles of every DRM file `pid` has open (see the module docs),
/// each probed once however many fds it is open under. An fd the process closes meanwhile is
/// left out.
pub fn drm_handles(pid: i32) -> io::Result<HandleCensus> {
    let mut census: BTreeMap<(i32, String), FileHandles> = BTreeMap::new();
    'fds: for (fd, node) in drm_fds(pid)? {
        for h in census.values_mut() {
            if same_file(pid, h.fds[0], fd)? {
                h.fds.push(fd);
                continue 'fds;
            }
        }
        let file = match dup_fd_of(pid, fd) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("pidfd_getfd of fd {fd}: {e}"),
                ))
            }
        };
        let handles = file_handles(file.as_fd())?;
        census.insert(
            (fd, node),
            FileHandles {
                fds: vec![fd],
                ..handles
            },
        );
    }
    Ok(HandleCensus(census))
}

/// Whether fds `a` and `b` of `pid` are the same open file (`kcmp(KCMP_FILE)`).
pub fn same_file(pid: i32, a: i32, b: i32) -> io::Result<bool> {
    const KCMP_FILE: libc::c_int = 0;
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// A borrowed DRM fd, for the `drm` crate's `DRM_IOCTL_VERSION`.
struct Node<'a>(BorrowedFd<'a>);
impl AsFd for Node<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0
    }
}
impl drm::Device for Node<'_> {}

/// The live GEM and syncobj handles of the DRM file open as `file`.
pub fn file_handles(file: BorrowedFd<'_>) -> io::Result<FileHandles> {
    let gem = match scan(|h| gem_handle_exists(file, h))? {
        // MODE_MAP_DUMB is refused on render nodes: virtio-gpu's own lookup is not.
        Handles::Unprobed(why) if driver_name(file)? == "virtio_gpu" => {
            match scan(|h| virtgpu_handle_exists(file, h))? {
                Handles::Unprobed(also) => Handles::Unprobed(format!("{why}; {also}")),
                handles => handles,
            }
        }
        handles => handles,
    };
    Ok(FileHandles {
        fds: Vec::new(),
        gem,
        syncobjs: scan(|h| syncobj_handle_exists(file, h))?,
    })
}

/// The kernel driver of a DRM file (`DRM_IOCTL_VERSION`).
fn driver_name(file: BorrowedFd<'_>) -> io::Result<String> {
    let driver = drm::Device::get_driver(&Node(file))?;
    Ok(driver.name().to_string_lossy().into_owned())
}

/// A probe's answer for one handle.
enum Probe {
    Exists,
    Missing,
    /// The driver has no such objects at all.
    NoneOnDriver(String),
    /// The probe cannot work on this file at all.
    Unusable(String),
}

/// Probes handles 1, 2, ... until [`SCAN_SLACK`] in a row past the highest live one are missing.
fn scan(mut probe: impl FnMut(u32) -> io::Result<Probe>) -> io::Result<Handles> {
    let mut live = BTreeSet::new();
    let mut highest = 0;
    let mut handle = 1;
    while handle - highest <= SCAN_SLACK {
        if handle > SCAN_CAP {
            return Err(io::Error::other(format!(
                "handles up to {SCAN_CAP} and more are live: {} of them",
                live.len()
            )));
        }
        match probe(handle)? {
            Probe::Exists => {
                live.insert(handle);
                highest = handle;
            }
            Probe::Missing => {}
            Probe::NoneOnDriver(why) => return Ok(Handles::NoneOnDriver(why)),
            Probe::Unusable(why) => return Ok(Handles::Unprobed(why)),
        }
        handle += 1;
    }
    Ok(Handles::Live(live))
}

#[repr(C)]
struct DrmSyncobjTimelineArray {
    handles: u64,
    points: u64,
    count_handles: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct DrmVirtgpuResourceInfo {
    bo_handle: u32,
    res_handle: u32,
    size: u32,
    blob_mem: u32,
}

/// `DRM_IOWR(DRM_COMMAND_BASE + DRM_VIRTGPU_RESOURCE_INFO (0x05), struct
/// drm_virtgpu_resource_info)`: virtio-gpu only (another driver's ioctl has this number).
const DRM_IOCTL_VIRTGPU_RESOURCE_INFO: u64 = 0xc010_6445;
const _: () = assert!(std::mem::size_of::<DrmVirtgpuResourceInfo>() == 16);
/// `DRM_IOWR(0xCB, struct drm_syncobj_timeline_array)`
const DRM_IOCTL_SYNCOBJ_QUERY: u64 = 0xc018_64cb;
const _: () = assert!(std::mem::size_of::<DrmModeMapDumb>() == 16);
const _: () = assert!(std::mem::size_of::<DrmSyncobjTimelineArray>() == 24);

/// `ioctl`, retried on EINTR/EAGAIN; the errno on failure.
fn ioctl<T>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> Result<(), i32> {
    loop {
        if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) } == 0 {
            return Ok(());
        }
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if !matches!(errno, libc::EINTR | libc::EAGAIN) {
            return Err(errno);
        }
    }
}

/// Errors that say the ioctl does not apply to this file at all, whatever the handle.
fn unusable(ioctl: &str, errno: i32) -> Option<Probe> {
    matches!(
        errno,
        libc::EACCES | libc::ENOSYS | libc::ENOTTY | libc::EOPNOTSUPP | libc::EPERM
    )
    .then(|| Probe::Unusable(format!("{ioctl}: {}", io::Error::from_raw_os_error(errno))))
}

fn gem_handle_exists(file: BorrowedFd<'_>, handle: u32) -> io::Result<Probe> {
    let mut arg = DrmModeMapDumb {
        handle,
        ..Default::default()
    };
    match ioctl(file, DRM_IOCTL_MODE_MAP_DUMB, &mut arg) {
        Ok(()) => Ok(Probe::Exists),
        Err(libc::ENOENT) => Ok(Probe::Missing),
        // drm_gem_dumb_map_offset: an imported object is not mapped, but it is there.
        Err(libc::EINVAL) => Ok(Probe::Exists),
        Err(errno) => unusable("MODE_MAP_DUMB", errno).ok_or_else(|| {
            io::Error::other(format!(
                "MODE_MAP_DUMB of GEM handle {handle}: {}",
                io::Error::from_raw_os_error(errno)
            ))
        }),
    }
}

/// virtio-gpu's `virtio_gpu_resource_info_ioctl` (`DRM_RENDER_ALLOW`): `drm_gem_object_lookup`,
/// ENOENT when there is no object, else the object's size and host resource id, nothing more.
fn virtgpu_handle_exists(file: BorrowedFd<'_>, handle: u32) -> io::Result<Probe> {
    let mut arg = DrmVirtgpuResourceInfo {
        bo_handle: handle,
        ..Default::default()
    };
    match ioctl(file, DRM_IOCTL_VIRTGPU_RESOURCE_INFO, &mut arg) {
        Ok(()) => Ok(Probe::Exists),
        Err(libc::ENOENT) => Ok(Probe::Missing),
        Err(errno) => unusable("VIRTGPU_RESOURCE_INFO", errno).ok_or_else(|| {
            io::Error::other(format!(
                "VIRTGPU_RESOURCE_INFO of GEM handle {handle}: {}",
                io::Error::from_raw_os_error(errno)
            ))
        }),
    }
}

fn syncobj_handle_exists(file: BorrowedFd<'_>, handle: u32) -> io::Result<Probe> {
    let handles = [handle];
    let mut points = [0u64];
    let mut arg = DrmSyncobjTimelineArray {
        handles: handles.as_ptr() as u64,
        points: points.as_mut_ptr() as u64,
        count_handles: 1,
        flags: 0,
    };
    match ioctl(file, DRM_IOCTL_SYNCOBJ_QUERY, &mut arg) {
        Ok(()) => Ok(Probe::Exists),
        Err(libc::ENOENT) => Ok(Probe::Missing),
        // No timeline syncobjs on this driver (vkms, vgem): none to leak.
        Err(libc::EOPNOTSUPP) => Ok(Probe::NoneOnDriver(
            "no syncobjs: SYNCOBJ_QUERY is EOPNOTSUPP".into(),
        )),
        Err(errno) => unusable("SYNCOBJ_QUERY", errno).ok_or_else(|| {
            io::Error::other(format!(
                "SYNCOBJ_QUERY of syncobj handle {handle}: {}",
                io::Error::from_raw_os_error(errno)
            ))
        }),
    }
}
