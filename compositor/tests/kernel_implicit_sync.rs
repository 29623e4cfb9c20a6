//! Implicit sync against a real kernel: dma-bufs from vgem with controllable implicit fences.
//!
//! Runs in the guest of `cargo xtask vm-test` (vgem); on a machine without /dev/dri each test
//! prints SKIP and passes.
//!
//! * a dma-buf committed without explicit sync while a write fence is pending on it is not
//!   shown until the fence signals, while another client's frames keep coming; an idle one is
//!   shown at once and costs no blocker;
//! * `--fence-timeout-action disconnect` disconnects the client whose fence stays pending, and
//!   only that client;
//! * an acquire fence imported into a dma-buf (explicit → implicit) holds its readers until it
//!   signals, and keeps the fences already there.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::dmabuf::{bind_linux_dmabuf, commit_buffer, Bo, SIZE};
use common::protocol_errors::expect_error;
use common::test_server::{configured_window, headless_server_with_args};
use common::vgem_fence::VgemFence;
use common::{find_color, rgb, vgem_card};
use fence_bridge::{Access, DmaBuf};
use fencegate::testing::TestServer;
use fencegate::Config;
use fencegate_clients::Client;
use smithay::backend::allocator::dmabuf::{Dmabuf, DmabufFlags};
use smithay::backend::allocator::{Fourcc, Modifier};
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;

const T: Duration = Duration::from_secs(30);

/// A client with a configured window: (client, linux-dmabuf, window surface).
fn dmabuf_client(server: &TestServer, title: &str) -> (Client, ZwpLinuxDmabufV1, WlSurface) {
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let linux_dmabuf = bind_linux_dmabuf(&client);
    let (_, surface) = configured_window(&mut client, title, "test.implicit", T);
    (client, linux_dmabuf, surface)
}

#[test]
fn a_dmabuf_with_a_pending_write_fence_is_shown_only_once_it_signals() {
    let Some(vgem) = vgem_card() else {
        return;
    };
    let server = headless_server_with_args(&[]);
    let mut bystander = Client::connect_to(server.socket_str()).unwrap();
    let b = bystander.create_window("bystander", "test.bystander");
    bystander.wait_configured(b, T).unwrap();
    bystander.draw_solid(b, 16, 16, 0xff00ff00).unwrap();
    bystander.roundtrip().unwrap();

    let (mut client, linux_dmabuf, surface) = dmabuf_client(&server, "implicit");
    let red = Bo::new(&vgem, 0x00ff0000);
    let blue = Bo::new(&vgem, 0x000000ff);
    let red_buffer = red.wl_buffer(&mut client, &linux_dmabuf);
    let blue_buffer = blue.wl_buffer(&mut client, &linux_dmabuf);
    server
        .wait_for("the bystander's window", T, |s| s.windows_with_content == 1)
        .unwrap();

    // 1. The client's GPU is still writing the red buffer: the commit is held.
    let mut fence = VgemFence::attach(&vgem, red.handle(), true);
    let held_since = Instant::now();
    commit_buffer(&surface, &red_buffer);
    client.roundtrip().unwrap();
    let s = server.snapshot().unwrap();
    assert_eq!((s.implicit.blocked, s.implicit.idle), (1, 0), "{s:?}");
    assert_eq!(
        s.windows_with_content, 1,
        "the red commit is not applied: {s:?}"
    );

    // Meanwhile the other client's frames keep coming.
    let frames = s.frames_rendered;
    bystander.draw_solid(b, 16, 16, 0xffffff00).unwrap();
    bystander.roundtrip().unwrap();
    let s = server
        .wait_for("the bystander's next frames", T, |s| {
            s.frames_rendered > frames
        })
        .unwrap();
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0xffff00)).is_some(),
        "the bystander's new frame is on screen while the other surface waits"
    );
    assert!(
        find_color(&capture, rgb(0xff0000)).is_none(),
        "the red buffer is not shown while its write fence is pending"
    );
    assert_eq!(s.implicit.released, 0, "{s:?}");
    assert!(
        held_since.elapsed() < Duration::from_secs(2),
        "the hold stays well inside vgem's self-signal timeout"
    );

    // 2. The fence signals: the commit applies and the red pixels appear.
    fence.signal();
    let s = server
        .wait_for("the red buffer after its fence", T, |s| {
            s.windows_with_content == 2
        })
        .unwrap();
    assert_eq!(s.implicit.released, 1, "{s:?}");
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0xff0000)).is_some(),
        "red dma-buf pixels on screen after the signal"
    );

    // 3. An idle buffer: shown at once, no blocker.
    commit_buffer(&surface, &blue_buffer);
    client.roundtrip().unwrap();
    let s = server.snapshot().unwrap();
    assert_eq!((s.implicit.blocked, s.implicit.idle), (1, 1), "{s:?}");
    let deadline = Instant::now() + T;
    loop {
        let capture = server.capture().unwrap();
        if find_color(&capture, rgb(0x0000ff)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle blue buffer never showed"
        );
    }
    let s = server.snapshot().unwrap();
    assert_eq!(
        (s.implicit.timed_out, s.implicit.disconnected),
        (0, 0),
        "{s:?}"
    );
}

#[test]
fn disconnect_action_disconnects_only_the_stuck_client() {
    let Some(vgem) = vgem_card() else {
        return;
    };
    let server = headless_server_with_args(&[
        "--fence-timeout",
        "300",
        "--fence-timeout-action",
        "disconnect",
    ]);
    let mut bystander = Client::connect_to(server.socket_str()).unwrap();
    let b = bystander.create_window("bystander", "test.bystander");
    bystander.wait_configured(b, T).unwrap();

    let (mut client, linux_dmabuf, surface) = dmabuf_client(&server, "stuck");
    let red = Bo::new(&vgem, 0x00ff0000);
    let red_buffer = red.wl_buffer(&mut client, &linux_dmabuf);
    let _fence = VgemFence::attach(&vgem, red.handle(), true);
    commit_buffer(&surface, &red_buffer);
    client.roundtrip().unwrap();

    let s = server
        .wait_for(
            "the stuck client's disconnection",
            Duration::from_secs(2),
            |s| s.implicit.disconnected == 1,
        )
        .unwrap();
    assert_eq!((s.implicit.blocked, s.implicit.timed_out), (1, 1), "{s:?}");

    // The stuck client sees its connection closed, with the reason.
    assert!(client.roundtrip().is_err(), "the connection is closed");
    expect_error(&mut client, 3, "wl_display");

    // The other client carries on.
    bystander.draw_solid(b, 16, 16, 0xff00ff00).unwrap();
    bystander.roundtrip().unwrap();
    server
        .wait_for("the bystander's window", T, |s| s.windows_with_content == 1)
        .unwrap();
}

#[test]
fn an_acquire_fence_imported_into_a_dmabuf_holds_its_readers_and_keeps_other_fences() {
    let Some(vgem) = vgem_card() else {
        return;
    };
    // The "client GPU" work: a pending write fence on another BO, as a sync_file.
    let work = Bo::new(&vgem, 0);
    let mut acquire_fence = VgemFence::attach(&vgem, work.handle(), true);
    let acquire = DmaBuf::new(work.dmabuf.as_fd())
        .export_sync_file(Access::Write)
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    assert!(!acquire.is_signaled().unwrap());

    // The client's buffer, with a pending read fence already on it (someone still reading).
    let target = Bo::new(&vgem, 0x00ff0000);
    let mut reader = VgemFence::attach(&vgem, target.handle(), false);
    let view = DmaBuf::new(target.dmabuf.as_fd());
    assert!(
        view.is_idle(Access::Read).unwrap(),
        "a read fence does not hold readers"
    );
    assert!(!view.is_idle(Access::Write).unwrap());

    let buffer = {
        let mut builder = Dmabuf::builder(
            (SIZE as i32, SIZE as i32),
            Fourcc::Xrgb8888,
            Modifier::Linear,
            DmabufFlags::empty(),
        );
        builder.add_plane(target.dmabuf.try_clone().unwrap(), 0, 0, target.pitch());
        builder.build().expect("a one-plane dma-buf")
    };
    fencegate_protocols::implicit_sync::export_acquire_to_dmabuf(&buffer, &acquire)
        .expect("DMA_BUF_IOCTL_IMPORT_SYNC_FILE");

    // An implicit-sync reader now waits for the acquire fence.
    let read = view.export_sync_file(Access::Read).unwrap();
    assert!(
        !read.is_signaled().unwrap(),
        "readers wait for the imported fence"
    );
    assert!(!view.is_idle(Access::Read).unwrap());

    acquire_fence.signal();
    assert!(
        read.wait_timeout(Some(Duration::from_secs(5))).unwrap(),
        "the reader's snapshot signals with the acquire fence"
    );
    assert!(view.is_idle(Access::Read).unwrap());
    // The pre-existing read fence was kept: writers still wait for it.
    let write = view.export_sync_file(Access::Write).unwrap();
    assert!(
        !write.is_signaled().unwrap(),
        "the earlier read fence is kept"
    );
    reader.signal();
    assert!(write.wait_timeout(Some(Duration::from_secs(5))).unwrap());
}

#[test]
fn fence_timeout_flags_default_to_one_second_and_report() {
    use clap::Parser as _;
    use fencegate::config::FenceTimeoutAction;
    let config = Config::headless();
    assert_eq!(config.fence_timeout(), Duration::from_secs(1));
    assert_eq!(config.fence_timeout_action, FenceTimeoutAction::Report);
    let config = Config::parse_from([
        "fencegate",
        "--fence-timeout",
        "250",
        "--fence-timeout-action",
        "disconnect",
    ]);
    assert_eq!(config.fence_timeout(), Duration::from_millis(250));
    assert_eq!(
        fencegate_protocols::TimeoutAction::from(config.fence_timeout_action),
        fencegate_protocols::TimeoutAction::Disconnect
    );
    assert!(Config::try_parse_from(["fencegate", "--fence-timeout", "0"]).is_err());
    assert!(Config::try_parse_from(["fencegate", "--fence-timeout-action", "kill"]).is_err());
}
