//! Shared by the kernel tests (`tests/kernel_*.rs`): finding devices, and the skip-or-fail rule.
//!
//! Convention for kernel-dependent tests (see `xtask/src/vm.rs`):
//! * a test target named `kernel_*` (`tests/kernel_*.rs`) is a kernel test binary: `cargo xtask
//!   vm-test` runs it inside a QEMU guest (Linux 6.12, virtio-gpu + vgem), one boot per binary;
//! * a kernel test first looks for its device with [`require_device`]. Without it (the build
//!   machines have no `/dev/dri`) it prints `SKIP (no …): needs the kernel guest, run
//!   `cargo xtask vm-test`` and returns, so a plain `cargo test` passes on the host;
//! * in the guest `FENCEGATE_REQUIRE_KERNEL=1` is set, and there a missing device is a FAILURE.

#![allow(dead_code)]

pub mod kms;
pub mod vgem;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drm::Device as _;
use fence_bridge::DrmDevice;
use rustix::event::{poll, PollFd, PollFlags};

/// Returns the device `find` looks for, or `None` after printing a SKIP line when it is absent
/// and the kernel guest is not required. Panics (fails the test) when it is absent and
/// `FENCEGATE_REQUIRE_KERNEL=1` (set inside the `cargo xtask vm-test` guest).
pub fn require_device<T>(what: &str, find: impl FnOnce() -> Option<T>) -> Option<T> {
    if let Some(dev) = find() {
        return Some(dev);
    }
    if std::env::var("FENCEGATE_REQUIRE_KERNEL").as_deref() == Ok("1") {
        panic!("FENCEGATE_REQUIRE_KERNEL=1 but there is no {what}: the kernel guest is incomplete");
    }
    // Written to the real stderr in one write, not through eprintln!, so that libtest's output
    // capture does not hide it and parallel tests do not interleave inside the line.
    let line = format!("SKIP (no {what}): needs the kernel guest, run `cargo xtask vm-test`\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    None
}

/// An open DRM node (card or render node).
pub struct Node {
    pub file: File,
    pub path: PathBuf,
}

impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
impl drm::Device for Node {}
impl drm::control::Device for Node {}

impl Node {
    pub fn driver_name(&self) -> String {
        self.get_driver()
            .unwrap_or_else(|e| panic!("DRM_IOCTL_VERSION on {}: {e}", self.path.display()))
            .name()
            .to_string_lossy()
            .into_owned()
    }
}

/// The first node under /dev/dri whose file name starts with `prefix` ("card", "renderD")
/// and whose driver (DRM_IOCTL_VERSION) is `driver`.
pub fn find_node(prefix: &str, driver: &str) -> Option<Node> {
    let dir = Path::new("/dev/dri");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    paths.into_iter().find_map(|path| {
        let file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        let node = Node { file, path };
        let name = node
            .get_driver()
            .ok()?
            .name()
            .to_string_lossy()
            .into_owned();
        (name == driver).then_some(node)
    })
}

/// A virtio-gpu node (`prefix` "card" or "renderD") as a [`DrmDevice`], through
/// [`require_device`].
pub fn virtio_gpu(prefix: &str) -> Option<DrmDevice> {
    let what = format!("virtio_gpu {prefix}* node under /dev/dri");
    let node = require_device(&what, || find_node(prefix, "virtio_gpu"))?;
    Some(DrmDevice::from_fd(node.file.into()).expect("DRM_IOCTL_VERSION"))
}

/// Whether `fd` is readable within `timeout` (`poll()`, restarted on `EINTR`).
pub fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => return n > 0 && fds[0].revents().contains(PollFlags::IN),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}
