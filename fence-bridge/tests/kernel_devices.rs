//! Kernel tests: the guest of `cargo xtask vm-test` has the DRM devices the project relies on.
//!
//! Convention for kernel-dependent tests (see `xtask/src/vm.rs`):
//! * a test target named `kernel_*` (`tests/kernel_*.rs`) is a kernel test binary: `cargo xtask
//!   vm-test` runs it inside a QEMU guest (Linux 6.12, virtio-gpu + vgem), one boot per binary;
//! * a kernel test first looks for its device with [`require_device`]. Without it (the build
//!   machines have no `/dev/dri`) it prints `SKIP (no …): needs the kernel guest, run
//!   `cargo xtask vm-test`` and returns, so a plain `cargo test` passes on the host;
//! * in the guest `FENCEGATE_REQUIRE_KERNEL=1` is set, and there a missing device is a FAILURE.
//!
//! `require_device` will move into a shared dev crate; keep its behaviour identical.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use drm::control::Device as _;
use drm::{Device as _, DriverCapability};

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
struct Node {
    file: File,
    path: PathBuf,
}

impl AsFd for Node {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
impl drm::Device for Node {}
impl drm::control::Device for Node {}

impl Node {
    fn driver_name(&self) -> String {
        self.get_driver()
            .unwrap_or_else(|e| panic!("DRM_IOCTL_VERSION on {}: {e}", self.path.display()))
            .name()
            .to_string_lossy()
            .into_owned()
    }
}

/// The first node under /dev/dri whose file name starts with `prefix` ("card", "renderD")
/// and whose driver (DRM_IOCTL_VERSION) is `driver`.
fn find_node(prefix: &str, driver: &str) -> Option<Node> {
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
        let name = node.get_driver().ok()?.name().to_string_lossy().into_owned();
        (name == driver).then_some(node)
    })
}

#[test]
fn virtio_gpu_card_has_timeline_syncobjs() {
    let Some(card) = require_device("virtio_gpu card node under /dev/dri", || {
        find_node("card", "virtio_gpu")
    }) else {
        return;
    };
    assert_eq!(card.driver_name(), "virtio_gpu");

    let cap = |c: DriverCapability| {
        card.get_driver_capability(c)
            .unwrap_or_else(|e| panic!("DRM_IOCTL_GET_CAP({c:?}) on {}: {e}", card.path.display()))
    };
    assert_eq!(cap(DriverCapability::SyncObj), 1, "DRM_CAP_SYNCOBJ");
    assert_eq!(cap(DriverCapability::TimelineSyncObj), 1, "DRM_CAP_SYNCOBJ_TIMELINE");

    // A syncobj used as a timeline: starts at point 0, signal point 3, query 3.
    let syncobj = card.create_syncobj(false).expect("DRM_IOCTL_SYNCOBJ_CREATE");
    let mut points = [u64::MAX];
    card.syncobj_timeline_query(&[syncobj], &mut points, false)
        .expect("DRM_IOCTL_SYNCOBJ_QUERY on a new syncobj");
    assert_eq!(points, [0], "a new timeline syncobj is at point 0");
    card.syncobj_timeline_signal(&[syncobj], &[3])
        .expect("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL point 3");
    card.syncobj_timeline_query(&[syncobj], &mut points, false)
        .expect("DRM_IOCTL_SYNCOBJ_QUERY after signalling");
    assert_eq!(points, [3], "timeline point after signalling 3");

    card.destroy_syncobj(syncobj).expect("DRM_IOCTL_SYNCOBJ_DESTROY");
    assert!(
        card.destroy_syncobj(syncobj).is_err(),
        "destroying a destroyed syncobj handle must fail"
    );
}

#[test]
fn virtio_gpu_has_a_render_node_with_syncobjs() {
    let Some(render) = require_device("virtio_gpu render node under /dev/dri", || {
        find_node("renderD", "virtio_gpu")
    }) else {
        return;
    };
    assert_eq!(render.driver_name(), "virtio_gpu");
    let syncobj = render.create_syncobj(true).expect("DRM_IOCTL_SYNCOBJ_CREATE on the render node");
    render
        .syncobj_wait(&[syncobj], 0, true, false)
        .expect("a syncobj created signalled is signalled");
    render.destroy_syncobj(syncobj).expect("DRM_IOCTL_SYNCOBJ_DESTROY");
}

#[test]
fn vgem_node_exists() {
    let Some(vgem) = require_device("vgem node under /dev/dri", || find_node("card", "vgem")) else {
        return;
    };
    assert_eq!(vgem.driver_name(), "vgem");
    assert!(
        find_node("renderD", "vgem").is_some(),
        "vgem has a card node but no render node"
    );
}
