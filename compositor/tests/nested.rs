//! Nested: `fencegate --backend winit` inside a real X server (Xvfb) shows a client; the test
//! reads the X screen back and finds the client's pixels where the compositor put them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client_bin, fencegate_bin, find_color, rgb, socket_path};
use fencegate::placement::CASCADE_ORIGIN;
use fencegate::screenshot::Capture;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat};

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_xvfb() -> (Killed, String) {
    let mut xvfb = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb runs (Debian package xvfb; `cargo xtask test` installs it)");
    let mut line = String::new();
    BufReader::new(xvfb.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let display = format!(":{}", line.trim());
    assert!(
        line.trim().parse::<u32>().is_ok(),
        "Xvfb did not report a display number: {line:?}"
    );
    (Killed(xvfb), display)
}

fn grab_screen(display: &str) -> Capture {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connecting to Xvfb");
    let root = &conn.setup().roots[screen];
    let (width, height) = (root.width_in_pixels, root.height_in_pixels);
    let image = conn
        .get_image(ImageFormat::Z_PIXMAP, root.root, 0, 0, width, height, !0)
        .unwrap()
        .reply()
        .unwrap();
    // Depth 24 in 32 bits per pixel, little-endian: B, G, R, X.
    let rgba = image
        .data
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0], 255])
        .collect();
    Capture {
        width: width as u32,
        height: height as u32,
        rgba,
    }
}

#[test]
fn winit_under_xvfb_shows_the_client() {
    let (_xvfb, display) = start_xvfb();
    let socket = socket_path("nested");
    let shot = socket.with_extension("png");
    let mut compositor = Killed(
        Command::new(fencegate_bin())
            .args(["--backend", "winit", "--socket", socket.to_str().unwrap()])
            .args([
                "--screenshot",
                shot.to_str().unwrap(),
                "--screenshot-after-frames",
                "5",
                "--",
            ])
            .arg(client_bin("shm-client"))
            .args(["--color", "0000ff", "--size", "200x150", "--fixed-size"])
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let (bbox, count) = loop {
        if let Some(found) = find_color(&grab_screen(&display), rgb(0x0000ff)) {
            break found;
        }
        if let Some(status) = compositor.0.try_wait().unwrap() {
            panic!("fencegate exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the client never appeared on the X screen"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Give the frame a moment to settle, then measure once more.
    std::thread::sleep(Duration::from_millis(300));
    let screen = grab_screen(&display);
    let (bbox, count) = find_color(&screen, rgb(0x0000ff)).unwrap_or((bbox, count));
    assert_eq!(
        (bbox.2, bbox.3, count),
        (200, 150, 200 * 150),
        "the whole client, unscaled, unclipped"
    );

    // The compositor's window sits somewhere on the X screen; its background starts where the
    // output does. The client must be at the cascade origin relative to that, right side up.
    let background = fencegate::render::CLEAR_COLOR
        .components()
        .map(|c| (c * 255.0).round() as u32);
    let background = (background[0] << 16) | (background[1] << 8) | background[2];
    let ((out_x, out_y, _, _), _) =
        find_color(&screen, rgb(background)).expect("the compositor's window");
    assert_eq!(
        ((bbox.0 - out_x) as i32, (bbox.1 - out_y) as i32),
        (CASCADE_ORIGIN.x, CASCADE_ORIGIN.y),
        "client at the cascade origin of the nested output"
    );

    // fencegate's own screenshot of the nested output agrees with what X shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !shot.exists() {
        assert!(
            Instant::now() < deadline,
            "no screenshot from the winit backend"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let own = common::read_png(&shot);
    let ((x, y, w, h), _) =
        find_color(&own, rgb(0x0000ff)).expect("the client in fencegate's own screenshot");
    assert_eq!(
        (x as i32, y as i32, w, h),
        (CASCADE_ORIGIN.x, CASCADE_ORIGIN.y, 200, 150)
    );
    let _ = std::fs::remove_file(&shot);

    let pid = rustix::process::Pid::from_raw(compositor.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while compositor.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "fencegate did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!socket.exists(), "socket left behind");
}
