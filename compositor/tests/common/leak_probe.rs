//! Leak probes against a process (e.g. a compositor under `seatd-launch`): its open fds by kind,
//! the DRM clients the kernel lists, the dma-bufs that exist. Framebuffer counts are in
//! [`super::kms_readback`].
//!
//! What Linux 6.12 offers, looked at in the guest: `/proc/PID/fdinfo/FD` of a virtio_gpu, vgem
//! or vkms fd has only `pos`, `flags`, `mnt_id`, `ino` (none of these drivers implements
//! `show_fdinfo`, so no `drm-client-id` or `drm-*-memory` keys), and debugfs `gem_names` lists
//! only flink'd names: **nothing gives a client's GEM handles**. Per client there is only the
//! `clients` line; per device the framebuffer list (with the creating thread's comm as
//! "allocated by") and the atomic state (with each framebuffer's GEM object refcounts); and the
//! global dma-buf list in `/sys/kernel/debug/dma_buf/bufinfo`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use super::kms_readback::debugfs_dir;

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
