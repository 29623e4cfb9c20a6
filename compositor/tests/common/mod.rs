//! Shared by the integration tests: finding binaries, reading screenshots, pixel checks; for the
//! kernel tests also devices, vgem dma-bufs and fences, syncobj timelines, protocol errors, a DRM
//! session under seatd-launch, KMS readback and leak probes.

#![allow(dead_code)]

pub mod check_report;
pub mod dmabuf;
pub mod drm_session;
pub mod fence_trace;
pub mod kms_readback;
pub mod leak_probe;
pub mod protocol_errors;
pub mod syncobj;
pub mod test_server;
pub mod uinput;
pub mod vgem_fence;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fencegate::screenshot::Capture;

/// A client binary from example-clients, built once per test process so a stale or missing
/// binary can never be what a test runs. In the kernel guest (whose `/` is read-only) cargo
/// cannot build: there `cargo xtask vm-test` has built them on the host just before.
pub fn client_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var("FENCEGATE_REQUIRE_KERNEL").as_deref() == Ok("1") {
            return;
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "fencegate-clients", "--bins"])
            .status()
            .expect("running cargo build for the example clients");
        assert!(status.success(), "building the example clients failed");
    });
    let path = target_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn fencegate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fencegate"))
}

fn target_dir() -> PathBuf {
    fencegate_bin()
        .parent()
        .expect("binaries live in the target dir")
        .to_path_buf()
}

/// A fresh absolute socket path (absolute, so tests don't depend on XDG_RUNTIME_DIR).
pub fn socket_path(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "fg-{tag}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

pub fn read_png(path: &Path) -> Capture {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("screenshot exists"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut rgba = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgba).expect("PNG data");
    assert_eq!(
        info.color_type,
        png::ColorType::Rgba,
        "fencegate writes RGBA"
    );
    rgba.truncate(info.buffer_size());
    Capture {
        width: info.width,
        height: info.height,
        rgba,
    }
}

/// 0xRRGGBB as the [r, g, b] a capture holds.
pub fn rgb(color: u32) -> [u8; 3] {
    [(color >> 16) as u8, (color >> 8) as u8, color as u8]
}

pub fn is_color(pixel: [u8; 4], color: [u8; 3]) -> bool {
    // Exact but for one step of rounding, which some GL paths introduce.
    pixel[..3]
        .iter()
        .zip(color)
        .all(|(&p, c)| p.abs_diff(c) <= 1)
}

/// The bounding box (x, y, w, h) of every pixel of `color`, and how many there are.
pub fn find_color(capture: &Capture, color: [u8; 3]) -> Option<((u32, u32, u32, u32), usize)> {
    let (mut min_x, mut min_y, mut max_x, mut max_y, mut count) =
        (u32::MAX, u32::MAX, 0, 0, 0usize);
    for y in 0..capture.height {
        for x in 0..capture.width {
            if is_color(capture.pixel(x, y), color) {
                min_x = min_x.min(x);
                min_y = min_y.min(y);
                max_x = max_x.max(x);
                max_y = max_y.max(y);
                count += 1;
            }
        }
    }
    (count > 0).then(|| ((min_x, min_y, max_x - min_x + 1, max_y - min_y + 1), count))
}

// --- kernel tests (`tests/kernel_*.rs`, run in the guest by `cargo xtask vm-test`) -------------
// The same convention as fence-bridge/tests/support/mod.rs (copied, not shared: test support
// modules are per package).

/// Returns the device `find` looks for, or `None` after printing a SKIP line when it is absent
/// and the kernel guest is not required. Panics (fails the test) when it is absent and
/// `FENCEGATE_REQUIRE_KERNEL=1` (set inside the `cargo xtask vm-test` guest).
pub fn require_device<T>(what: &str, find: impl FnOnce() -> Option<T>) -> Option<T> {
    use std::io::Write;
    if let Some(dev) = find() {
        return Some(dev);
    }
    if std::env::var("FENCEGATE_REQUIRE_KERNEL").as_deref() == Ok("1") {
        panic!("FENCEGATE_REQUIRE_KERNEL=1 but there is no {what}: the kernel guest is incomplete");
    }
    // One write to the real stderr, so libtest's capture does not hide it.
    let line = format!("SKIP (no {what}): needs the kernel guest, run `cargo xtask vm-test`\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    None
}

/// The first node under /dev/dri whose file name starts with `prefix` ("card", "renderD") and
/// whose driver (DRM_IOCTL_VERSION) is `driver`, opened read-write.
pub fn find_drm_node(prefix: &str, driver: &str) -> Option<fence_bridge::DrmDevice> {
    fencegate_clients::drm_nodes::open_by_driver(prefix, driver)
}

/// vgem's card node, through [`require_device`]: dumb buffers, dma-bufs, controllable fences.
pub fn vgem_card() -> Option<fence_bridge::DrmDevice> {
    require_device("vgem card node under /dev/dri", || {
        find_drm_node("card", "vgem")
    })
}

/// virtio-gpu's render node, through [`require_device`]: where the syncobj global lives and the
/// tests (as the "client GPU") make timelines.
pub fn virtio_gpu_render() -> Option<fence_bridge::DrmDevice> {
    require_device("virtio_gpu renderD* node under /dev/dri", || {
        find_drm_node("renderD", "virtio_gpu")
    })
}
