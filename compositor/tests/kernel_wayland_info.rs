//! What a client sees of fencegate on a real kernel, and when it gets its buffers back.
//!
//! Runs in the guest of `cargo xtask vm-test` (virtio-gpu for timeline syncobjs, vgem for
//! dma-bufs); on a machine without /dev/dri each test prints SKIP and passes.
//!
//! * Debian's `wayland-info` (package wayland-utils) run against a headless fencegate lists
//!   `wp_linux_drm_syncobj_manager_v1` and `zwp_linux_dmabuf_v1` version 4 or later whose
//!   default feedback names a main device and tranches with formats;
//! * a buffer's release point is signalled by importing the fence of the last frame that
//!   sampled the buffer (llvmpipe's fence is the kernel's signalled stub, so this checks the
//!   path, not GPU timing), exactly once and only after the buffer is replaced or its surface
//!   destroyed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::dmabuf::{bind_linux_dmabuf, commit_buffer, dmabuf_buffer};
use common::syncobj::{assert_released, timeline};
use common::test_server::{configured_window, headless_server};
use common::{find_color, require_device, rgb, vgem_card, virtio_gpu_render};
use fence_bridge::Syncobj;
use fencegate_clients::{Client, IgnoreEvents};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;

const T: Duration = Duration::from_secs(30);

/// `interface: 'NAME', version: N, name: M` lines of wayland-info: (interface, version).
fn globals(output: &str) -> Vec<(String, u32)> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("interface: '")?;
            let (interface, rest) = rest.split_once('\'')?;
            let version = rest.split("version:").nth(1)?.split(',').next()?.trim();
            Some((interface.to_string(), version.parse().ok()?))
        })
        .collect()
}

/// The lines wayland-info printed about one global (its header up to the next header).
fn section<'a>(output: &'a str, interface: &str) -> Vec<&'a str> {
    let header = format!("interface: '{interface}'");
    output
        .lines()
        .skip_while(|line| !line.starts_with(&header))
        .skip(1)
        .take_while(|line| !line.starts_with("interface: "))
        .collect()
}

#[test]
fn wayland_info_lists_syncobj_and_dmabuf_feedback() {
    let Some(_device) = virtio_gpu_render() else {
        return;
    };
    let Some(wayland_info) = require_device("wayland-info (Debian wayland-utils)", || {
        ["/usr/bin/wayland-info", "/usr/local/bin/wayland-info"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
    }) else {
        return;
    };
    let server = headless_server();
    let output = Command::new(wayland_info)
        .env("WAYLAND_DISPLAY", server.socket_str())
        .env_remove("WAYLAND_SOCKET")
        .output()
        .expect("running wayland-info");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wayland-info failed ({}): {}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let globals = globals(&stdout);
    let version = |name: &str| {
        globals
            .iter()
            .find(|(interface, _)| interface == name)
            .map(|(_, v)| *v)
    };

    assert_eq!(
        version("wp_linux_drm_syncobj_manager_v1"),
        Some(1),
        "{globals:?}"
    );
    let dmabuf = version("zwp_linux_dmabuf_v1").expect("zwp_linux_dmabuf_v1 is listed");
    assert!(dmabuf >= 4, "linux-dmabuf v4+ with feedback, got v{dmabuf}");
    let explicit = version("zwp_linux_explicit_synchronization_v1");
    assert!(
        explicit.is_some(),
        "zwp_linux_explicit_synchronization_v1 is listed: {globals:?}"
    );

    // v4+: wayland-info prints the default feedback: main device, then tranches of formats.
    let feedback = section(&stdout, "zwp_linux_dmabuf_v1");
    let text = feedback.join("\n");
    assert!(
        feedback.iter().any(|l| l.contains("main device")),
        "the default feedback names its main device:\n{text}"
    );
    assert!(
        feedback.iter().any(|l| l.contains("tranche")),
        "the default feedback has a tranche:\n{text}"
    );
    let formats = feedback
        .iter()
        .filter(|l| l.contains("'XR24'") || l.contains("'AR24'"))
        .count();
    assert!(
        formats > 0,
        "the tranche lists XRGB8888/ARGB8888 among its formats:\n{text}"
    );
}

// --- release after GPU completion ----------------------------------------------------------

#[track_caller]
fn wait_released(syncobj: &Syncobj, what: &str) {
    assert_released(syncobj, 1, what);
    // Signalled once, at its point: nothing moved the timeline further.
    assert_eq!(
        syncobj.query().unwrap(),
        1,
        "{what}: released at point 1 only"
    );
}

#[test]
fn release_points_are_signalled_after_the_fence_of_the_frame_that_sampled_them() {
    let Some(device) = virtio_gpu_render() else {
        return;
    };
    let Some(vgem) = vgem_card() else {
        return;
    };
    let server = headless_server();
    assert_eq!(server.snapshot().unwrap().renderer, "gles");
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let manager = client
        .bind_global::<WpLinuxDrmSyncobjManagerV1, _>(1, IgnoreEvents)
        .expect("the syncobj manager is advertised");
    let linux_dmabuf = bind_linux_dmabuf(&client);
    let (w, surface) = configured_window(&mut client, "release", "test.release", T);
    let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);
    let (acquire, acquire_tl) = timeline(&client, &manager, &device);
    let (red_release, red_tl) = timeline(&client, &manager, &device);
    let (blue_release, blue_tl) = timeline(&client, &manager, &device);
    let red = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x00ff0000);
    let blue = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x000000ff);

    // Red, already acquired: drawn by GLES frames, each recording its fence on red's point.
    acquire.signal_point(1).unwrap();
    sync.set_acquire_point(&acquire_tl, 0, 1);
    sync.set_release_point(&red_tl, 0, 1);
    commit_buffer(&surface, &red.buffer);
    client.roundtrip().unwrap();
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0xff0000)).is_some(),
        "red on screen"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        red_release.query().unwrap(),
        0,
        "red is on screen: not released"
    );
    let s = server.snapshot().unwrap();
    assert_eq!(
        s.release.fence_imported + s.release.cpu_signaled,
        0,
        "{s:?}"
    );

    // Blue replaces red: red's point is due and gets the fence of the last frame that drew it.
    acquire.signal_point(2).unwrap();
    sync.set_acquire_point(&acquire_tl, 0, 2);
    sync.set_release_point(&blue_tl, 0, 1);
    commit_buffer(&surface, &blue.buffer);
    client.roundtrip().unwrap();
    wait_released(&red_release, "red, replaced by blue");
    let s = server.snapshot().unwrap();
    assert_eq!(
        (
            s.release.fence_imported,
            s.release.cpu_signaled,
            s.release.import_failed
        ),
        (1, 0, 0),
        "red's release point was signalled by importing its last frame's fence: {s:?}"
    );
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0x0000ff)).is_some(),
        "blue on screen"
    );
    assert_eq!(
        blue_release.query().unwrap(),
        0,
        "blue is on screen: not released"
    );

    // The surface goes away: blue's point is due, also through its last frame's fence.
    client.destroy_window(w);
    client.roundtrip().unwrap();
    wait_released(&blue_release, "the surface was destroyed");
    let s = server.snapshot().unwrap();
    assert_eq!(
        (
            s.release.taken,
            s.release.fence_imported,
            s.release.cpu_signaled
        ),
        (2, 2, 0),
        "{s:?}"
    );
    assert_eq!(
        red_release.query().unwrap(),
        1,
        "red was not signalled again"
    );
}
