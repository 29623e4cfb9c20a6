//! The compositor with real clients on a real socket: mapping, pixels, frame callbacks,
//! presentation feedback, fullscreen, cleanup on disconnect, and bad input.

mod common;

use std::time::Duration;

use common::{find_color, is_color, rgb};
use fencegate::placement::{CASCADE_ORIGIN, CASCADE_STEP};
use fencegate::testing::TestServer;
use fencegate::Config;
use fencegate_clients::{Client, IgnoreEvents};
use wayland_client::protocol::{wl_shm, wl_shm_pool};

const T: Duration = Duration::from_secs(20);

fn server() -> TestServer {
    let mut config = Config::headless();
    config.size = "320x240".parse().unwrap();
    TestServer::start(config).expect("the test server starts")
}

#[test]
fn toplevel_maps_where_the_cascade_says_and_its_pixels_are_on_screen() {
    let server = server();
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let red = client.create_window("red", "test.red");
    assert_eq!(
        client.wait_configured(red, T).unwrap(),
        (0, 0),
        "no size imposed on a floating window"
    );
    client.draw_solid(red, 100, 80, 0xffff0000).unwrap();
    let green = client.create_window("green", "test.green");
    client.wait_configured(green, T).unwrap();
    client.draw_solid(green, 40, 30, 0xff00ff00).unwrap();
    client.roundtrip().unwrap();

    let snapshot = server
        .wait_for("two windows with content", T, |s| {
            s.windows_with_content == 2
        })
        .unwrap();
    let origin = CASCADE_ORIGIN;
    let red_geo = &snapshot.windows[0].geometry;
    assert_eq!(snapshot.windows[0].title.as_deref(), Some("red"));
    assert_eq!(
        (red_geo.loc.x, red_geo.loc.y, red_geo.size.w, red_geo.size.h),
        (origin.x, origin.y, 100, 80)
    );
    let green_geo = &snapshot.windows[1].geometry;
    assert_eq!(
        (green_geo.loc.x, green_geo.loc.y),
        (origin.x + CASCADE_STEP, origin.y + CASCADE_STEP)
    );

    let capture = server.capture().unwrap();
    assert_eq!((capture.width, capture.height), (320, 240));
    // The red window shows where it was placed, exactly its size, but for the part the green
    // window (mapped later, so on top) covers.
    let ((x, y, w, h), _) = find_color(&capture, rgb(0xff0000)).expect("red pixels on screen");
    assert_eq!((x, y, w, h), (32, 32, 100, 80));
    let ((x, y, w, h), count) =
        find_color(&capture, rgb(0x00ff00)).expect("green pixels on screen");
    assert_eq!((x, y, w, h, count), (64, 64, 40, 30, 40 * 30));
    assert!(
        is_color(capture.pixel(5, 5), [20, 20, 26]),
        "background elsewhere: {:?}",
        capture.pixel(5, 5)
    );
}

#[test]
fn frame_callbacks_pace_a_redrawing_client() {
    let server = server();
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let w = client.create_window("frames", "test.frames");
    client.wait_configured(w, T).unwrap();
    for n in 1..=5u32 {
        client.draw_solid(w, 64, 64, 0xff000000 | (n * 40)).unwrap();
        client
            .dispatch_until(T, "a frame callback", |s| s.windows[w.0].frames_done >= n)
            .unwrap();
    }
    let window = &client.state.windows[w.0];
    assert_eq!(window.frames_done, 5);
    assert!(window.last_frame_time_ms.is_some());
}

#[test]
fn presentation_feedback_carries_monotonic_timestamps_and_increasing_sequence() {
    let server = server();
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    assert_eq!(
        client.state.presentation_clock_id,
        Some(libc_clock_monotonic()),
        "wp_presentation uses CLOCK_MONOTONIC"
    );
    let w = client.create_window("presented", "test.presented");
    client.wait_configured(w, T).unwrap();
    for n in 1..=3usize {
        client.draw_solid(w, 50, 50, 0xff0000ff - n as u32).unwrap();
        client
            .dispatch_until(T, "presentation feedback", |s| {
                s.windows[w.0].presented.len() >= n
            })
            .unwrap();
    }
    let presented = client.state.windows[w.0].presented.clone();
    let now = monotonic_now();
    for p in &presented {
        let t = Duration::new(p.tv_sec, p.tv_nsec);
        assert!(
            t <= now && now - t < Duration::from_secs(30),
            "timestamp {t:?} is not a recent CLOCK_MONOTONIC time (now {now:?})"
        );
        assert_eq!(p.refresh_ns, 16_666_667, "60 Hz headless output");
    }
    assert!(
        presented.windows(2).all(|pair| pair[1].seq > pair[0].seq),
        "sequence increases: {presented:?}"
    );
    assert!(presented
        .windows(2)
        .all(|pair| (pair[1].tv_sec, pair[1].tv_nsec) > (pair[0].tv_sec, pair[0].tv_nsec)));
    assert_eq!(client.state.windows[w.0].discarded, 0);
}

#[test]
fn fullscreen_fills_the_output_and_unfullscreen_puts_it_back() {
    let server = server();
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let w = client.create_window("fs", "test.fs");
    client.wait_configured(w, T).unwrap();
    client.draw_solid(w, 60, 40, 0xff123456).unwrap();
    server
        .wait_for("the window", T, |s| s.windows_with_content == 1)
        .unwrap();

    client.set_fullscreen(w, true);
    client
        .dispatch_until(T, "a fullscreen configure", |s| s.windows[w.0].fullscreen)
        .unwrap();
    assert_eq!(client.state.windows[w.0].last_configure_size, (320, 240));
    client.draw_solid(w, 320, 240, 0xff123456).unwrap();
    client.roundtrip().unwrap();
    let s = server
        .wait_for("the fullscreen window at the origin", T, |s| {
            s.windows[0].geometry.loc == (0, 0).into()
                && s.windows[0].geometry.size == (320, 240).into()
        })
        .unwrap();
    assert_eq!(s.windows.len(), 1);
    let ((x, y, w_, h), _) = find_color(&server.capture().unwrap(), rgb(0x123456)).unwrap();
    assert_eq!((x, y, w_, h), (0, 0, 320, 240));

    client.set_fullscreen(w, false);
    client
        .dispatch_until(T, "the configure leaving fullscreen", |s| {
            !s.windows[w.0].fullscreen
        })
        .unwrap();
    assert_eq!(client.state.windows[w.0].last_configure_size, (0, 0));
    client.draw_solid(w, 60, 40, 0xff123456).unwrap();
    client.roundtrip().unwrap();
    server
        .wait_for("the window back at its place", T, |s| {
            s.windows[0].geometry.loc == CASCADE_ORIGIN
        })
        .unwrap();
}

#[test]
fn a_disconnecting_client_leaves_no_surface_behind() {
    let server = server();
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    for n in 0..3 {
        let w = client.create_window(&format!("w{n}"), "test.gone");
        client.wait_configured(w, T).unwrap();
        client.draw_solid(w, 30, 30, 0xffabcdef).unwrap();
    }
    client.roundtrip().unwrap();
    let s = server
        .wait_for("three windows", T, |s| s.windows_with_content == 3)
        .unwrap();
    assert_eq!(s.surfaces_alive, 3);

    drop(client);
    let s = server
        .wait_for("the client's surfaces to go", T, |s| {
            s.surfaces_alive == 0 && s.windows.is_empty()
        })
        .unwrap();
    assert_eq!(s.windows_with_content, 0);
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0xabcdef)).is_none(),
        "a gone client's pixels are still on screen"
    );
}

#[test]
fn shm_pool_offset_past_the_end_is_a_protocol_error_and_others_carry_on() {
    let server = server();
    let mut bystander = Client::connect_to(server.socket_str()).unwrap();
    let w = bystander.create_window("bystander", "test.bystander");
    bystander.wait_configured(w, T).unwrap();

    let mut bad = Client::connect_to(server.socket_str()).unwrap();
    let shm = bad.state.shm.clone().expect("wl_shm");
    let fd = memfd(4096);
    let qh = bad.qh().clone();
    let pool: wl_shm_pool::WlShmPool =
        shm.create_pool(std::os::fd::AsFd::as_fd(&fd), 4096, &qh, IgnoreEvents);
    // 16x16 at stride 64 needs 1 KiB; at offset 8 KiB it lies wholly past the 4 KiB pool.
    let _buffer = pool.create_buffer(
        8192,
        16,
        16,
        64,
        wl_shm::Format::Argb8888,
        &qh,
        IgnoreEvents,
    );
    let err = bad
        .roundtrip()
        .expect_err("the server must reject the buffer");
    let protocol_error = bad
        .protocol_error()
        .unwrap_or_else(|| panic!("expected a protocol error, got {err:#}"));
    assert_eq!(protocol_error.object_interface, "wl_shm_pool");
    assert_eq!(protocol_error.code, wl_shm::Error::InvalidStride as u32);

    // The compositor and the other client carry on, and new clients still connect.
    bystander.draw_solid(w, 40, 40, 0xff00ffff).unwrap();
    bystander.roundtrip().unwrap();
    server
        .wait_for("the bystander's window", T, |s| s.windows_with_content == 1)
        .unwrap();
    assert!(find_color(&server.capture().unwrap(), rgb(0x00ffff)).is_some());
    let mut late = Client::connect_to(server.socket_str()).unwrap();
    late.roundtrip().unwrap();
}

#[test]
fn advertises_what_ordinary_clients_need() {
    let server = server();
    let client = Client::connect_to(server.socket_str()).unwrap();
    for interface in [
        "wl_compositor",
        "wl_subcompositor",
        "wl_shm",
        "xdg_wm_base",
        "wl_seat",
        "wl_output",
        "zxdg_output_manager_v1",
        "wp_viewporter",
        "wp_presentation",
        "wl_data_device_manager",
    ] {
        assert!(
            client.state.has_global(interface),
            "{interface} is not advertised: {:?}",
            client.state.globals
        );
    }
}

fn memfd(size: u64) -> std::os::fd::OwnedFd {
    let fd = rustix::fs::memfd_create("fencegate-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    fd
}

fn libc_clock_monotonic() -> u32 {
    1 // CLOCK_MONOTONIC in <time.h>
}

fn monotonic_now() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn the_pixman_renderer_puts_the_same_pixels_in_the_same_place() {
    let mut config = Config::headless();
    config.size = "320x240".parse().unwrap();
    config.pixman = true;
    let server = TestServer::start(config).unwrap();
    assert_eq!(server.snapshot().unwrap().renderer, "pixman");
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let w = client.create_window("pixman", "test.pixman");
    client.wait_configured(w, T).unwrap();
    client.draw_solid(w, 70, 50, 0xff8040c0).unwrap();
    client.roundtrip().unwrap();
    server
        .wait_for("the window", T, |s| s.windows_with_content == 1)
        .unwrap();
    let ((x, y, w_, h), count) = find_color(&server.capture().unwrap(), rgb(0x8040c0)).unwrap();
    assert_eq!((x, y, w_, h, count), (32, 32, 70, 50, 70 * 50));
}
