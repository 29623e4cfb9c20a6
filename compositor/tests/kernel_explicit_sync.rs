//! linux-drm-syncobj-v1 against a real kernel: the compositor (an in-process headless fencegate)
//! advertises the global on virtio-gpu's render node, and real clients import real timelines.
//!
//! Runs in the guest of `cargo xtask vm-test` (virtio-gpu for timeline syncobjs, vgem for
//! dma-bufs); on a machine without /dev/dri each test prints SKIP and passes.
//!
//! * every protocol error of the extension reaches the offending client, on the right object,
//!   while the compositor and a bystander client carry on;
//! * a dma-buf commit waits for its acquire point (nothing shown, no blocker cost when already
//!   signalled), later commits of the surface queue behind it in order, a stuck point is
//!   reported after the timeout, and each release point is signalled when its buffer is
//!   replaced or the surface is destroyed — not before.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::dmabuf::{bind_linux_dmabuf, commit_buffer, dmabuf_buffer, SIZE};
use common::protocol_errors::{expect_error, others_carry_on};
use common::syncobj::{assert_not_released, assert_released, timeline};
use common::test_server::{bare_surface, client_with_global, configured_window, headless_server};
use common::{find_color, rgb, vgem_card, virtio_gpu_render};
use fencegate::testing::TestServer;
use fencegate_clients::syncobj_timeline::set_points;
use fencegate_clients::{Client, IgnoreEvents};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;

const T: Duration = Duration::from_secs(30);
const MANAGER: &str = "wp_linux_drm_syncobj_manager_v1";
const SURFACE: &str = "wp_linux_drm_syncobj_surface_v1";

/// A client with the manager bound.
fn syncobj_client(server: &TestServer) -> (Client, WpLinuxDrmSyncobjManagerV1) {
    client_with_global(server, 1)
}

#[test]
fn every_protocol_error_reaches_its_client_and_the_others_carry_on() {
    let Some(device) = virtio_gpu_render() else {
        return;
    };
    let server = headless_server();
    let snapshot = server.snapshot().unwrap();
    assert!(snapshot.drm_syncobj_global, "{snapshot:?}");

    let (mut bystander, bystander_manager) = syncobj_client(&server);
    let (_keep, _bystander_timeline) = timeline(&bystander, &bystander_manager, &device);
    let w = bystander.create_window("bystander", "test.bystander");
    bystander.wait_configured(w, T).unwrap();

    // Success: a real timeline imports; accepted commits without buffers pass.
    {
        let (mut client, manager) = syncobj_client(&server);
        let (_syncobj, tl) = timeline(&client, &manager, &device);
        let surface = bare_surface(&client);
        let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        surface.commit(); // no attach, no points
        surface.attach(None, 0, 0);
        surface.commit(); // attach(NULL), no points
        client
            .roundtrip()
            .expect("import and point-free commits are accepted");
        // Destroying the syncobj surface with points pending discards them; a new one may be
        // created for the same wl_surface.
        set_points(&sync, Some((&tl, 1)), Some((&tl, 2)));
        sync.destroy();
        surface.commit();
        let _again = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        client
            .roundtrip()
            .expect("get_surface after destroy is accepted");
    }

    // invalid_timeline: an fd that is not a syncobj.
    {
        let (mut client, manager) = syncobj_client(&server);
        let not_a_syncobj = std::fs::File::open("/dev/null").unwrap();
        let _tl = manager.import_timeline(not_a_syncobj.as_fd(), client.qh(), IgnoreEvents);
        expect_error(&mut client, 1, MANAGER);
        others_carry_on(&server, &mut bystander);
    }

    // surface_exists: get_surface twice for one wl_surface.
    {
        let (mut client, manager) = syncobj_client(&server);
        let surface = bare_surface(&client);
        let _a = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        let _b = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        expect_error(&mut client, 0, MANAGER);
        others_carry_on(&server, &mut bystander);
    }

    // no_surface: the wl_surface is gone, then set_acquire_point.
    {
        let (mut client, manager) = syncobj_client(&server);
        let (_syncobj, tl) = timeline(&client, &manager, &device);
        let surface = bare_surface(&client);
        let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        surface.destroy();
        set_points(&sync, Some((&tl, 1)), None);
        expect_error(&mut client, 1, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // no_buffer: points set, no attach in the commit; and points with attach(NULL).
    for null_attach in [false, true] {
        let (mut client, manager) = syncobj_client(&server);
        let (_a, acquire) = timeline(&client, &manager, &device);
        let (_r, release) = timeline(&client, &manager, &device);
        let surface = bare_surface(&client);
        let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        set_points(&sync, Some((&acquire, 1)), Some((&release, 1)));
        if null_attach {
            surface.attach(None, 0, 0);
        }
        surface.commit();
        expect_error(&mut client, 3, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // With an shm buffer (checked after the point rules, so these need no dma-buf):
    // no points → no_acquire_point (Smithay 0.7 lets this through), acquire only →
    // no_release_point, same timeline with acquire ≥ release → conflicting_points, both points
    // on an shm buffer → unsupported_buffer.
    type Points = (Option<u64>, Option<u64>, bool);
    let cases: [(Points, u32); 4] = [
        ((None, None, false), 4),
        ((Some(1), None, false), 5),
        ((Some(2), Some(2), true), 6),
        ((Some(1), Some(1), false), 2),
    ];
    for ((acq, rel, same_timeline), code) in cases {
        let (mut client, manager) = syncobj_client(&server);
        let (_a, acquire) = timeline(&client, &manager, &device);
        let (_r, release) = timeline(&client, &manager, &device);
        let (w, surface) = configured_window(&mut client, "bad", "test.bad", T);
        let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);
        let release_tl = if same_timeline { &acquire } else { &release };
        set_points(
            &sync,
            acq.map(|p| (&acquire, p)),
            rel.map(|p| (release_tl, p)),
        );
        let _ = client.draw_solid(w, 8, 8, 0xff00ff00); // attach + commit
        expect_error(&mut client, code, SURFACE);
        let snapshot = others_carry_on(&server, &mut bystander);
        assert_eq!(
            snapshot.acquire.blocked, 0,
            "no rejected commit is waited for"
        );
    }

    // The bystander, which never used the extension, still draws.
    bystander.draw_solid(w, 10, 10, 0xffff0000).unwrap();
    server
        .wait_for("the bystander's window", T, |s| s.windows_with_content == 1)
        .unwrap();
}

// --- dma-buf buffers from vgem -------------------------------------------------------------

#[test]
fn dmabuf_commits_wait_for_acquire_points_in_order_and_release_what_they_replace() {
    let Some(device) = virtio_gpu_render() else {
        return;
    };
    let Some(vgem) = vgem_card() else {
        return;
    };
    let server = headless_server();
    let (mut client, manager) = syncobj_client(&server);
    let linux_dmabuf = bind_linux_dmabuf(&client);
    let (w, surface) = configured_window(&mut client, "explicit", "test.explicit", T);
    let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);

    let (acquire, acquire_tl) = timeline(&client, &manager, &device);
    let (early, early_tl) = timeline(&client, &manager, &device);
    // One release timeline per buffer, as the protocol recommends.
    let releases: Vec<_> = (0..4)
        .map(|_| timeline(&client, &manager, &device))
        .collect();
    let red = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x00ff0000);
    let blue = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x000000ff);

    // 1. Acquire point 1 not signalled (not even submitted): the commit is held, nothing shows.
    set_points(&sync, Some((&acquire_tl, 1)), Some((&releases[0].1, 1)));
    commit_buffer(&surface, &red.buffer);
    client.roundtrip().unwrap();
    let s = server.snapshot().unwrap();
    assert_eq!((s.acquire.blocked, s.windows_with_content), (1, 0), "{s:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.snapshot().unwrap().windows_with_content, 0);

    // The client's GPU finishes: the commit applies and its pixels are on screen.
    acquire.signal_point(1).unwrap();
    let s = server
        .wait_for("the red buffer after its acquire point", T, |s| {
            s.windows_with_content == 1
        })
        .unwrap();
    assert_eq!(s.acquire.released, 1);
    let capture = server.capture().unwrap();
    let (_, count) = find_color(&capture, rgb(0xff0000)).expect("red dma-buf pixels on screen");
    assert_eq!(count, (SIZE * SIZE) as usize);
    assert_not_released(&releases[0].0, "the red buffer is still on screen");

    // 2. Acquire point already signalled: no blocker at all; the red buffer's release is due.
    acquire.signal_point(2).unwrap();
    set_points(&sync, Some((&acquire_tl, 2)), Some((&releases[1].1, 1)));
    commit_buffer(&surface, &blue.buffer);
    client.roundtrip().unwrap();
    let s = server.snapshot().unwrap();
    assert_eq!(
        (s.acquire.already_signaled, s.acquire.blocked),
        (1, 1),
        "{s:?}"
    );
    assert_released(&releases[0].0, 1, "red, replaced by blue");
    assert_not_released(&releases[1].0, "blue is on screen");

    // 3. A held commit (point 3, unsignalled) and a later one whose point has signalled: the
    //    later one queues behind, so nothing is released yet — even after the report timeout.
    set_points(&sync, Some((&acquire_tl, 3)), Some((&releases[2].1, 1)));
    commit_buffer(&surface, &red.buffer);
    early.signal_point(1).unwrap();
    set_points(&sync, Some((&early_tl, 1)), Some((&releases[3].1, 1)));
    commit_buffer(&surface, &blue.buffer);
    client.roundtrip().unwrap();
    let s = server
        .wait_for("the acquire timeout report", T, |s| {
            s.acquire.timed_out == 1
        })
        .unwrap();
    assert_eq!(s.acquire.blocked, 2, "{s:?}");
    assert_eq!(s.acquire.already_signaled, 2, "{s:?}");
    assert_not_released(&releases[1].0, "blue stays while the next commit waits");
    assert_not_released(&releases[2].0, "queued");
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0x0000ff)).is_some(),
        "the surface keeps its last content while its commit waits"
    );

    // Point 3 signals: both commits apply, in order.
    acquire.signal_point(3).unwrap();
    assert_released(&releases[1].0, 1, "blue, replaced by commit 3");
    assert_released(&releases[2].0, 1, "commit 3's buffer, replaced by commit 4");
    assert_not_released(&releases[3].0, "commit 4 is on screen");
    let s = server.snapshot().unwrap();
    assert_eq!((s.acquire.released, s.acquire.timed_out), (2, 1), "{s:?}");

    // 4. The surface goes away: its last release point is due.
    client.destroy_window(w);
    client.roundtrip().unwrap();
    assert_released(&releases[3].0, 1, "the surface was destroyed");

    // Every point set was counted and signalled, including commit 3's, which no frame ever drew
    // (it was replaced in the same dispatch that applied it): that one from the CPU.
    let s = server.snapshot().unwrap();
    assert_eq!((s.release.taken, s.release.owed()), (4, 0), "{s:?}");
    assert!(s.release.cpu_signaled >= 1, "{s:?}");
    assert!(
        s.release.fence_imported >= 2,
        "red and blue were drawn: {s:?}"
    );
}
