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

/// Sends one fake X input event through XTEST (what `xdotool` does).
fn fake(conn: &impl Connection, kind: u8, detail: u8, x: i16, y: i16) {
    use x11rb::protocol::xtest::ConnectionExt as _;
    let root = conn.setup().roots[0].root;
    conn.xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, root, x, y, 0)
        .unwrap();
    conn.flush().unwrap();
}

#[test]
fn winit_forwards_pointer_and_keyboard_and_alt_f4_closes_the_focused_window() {
    use fencegate_clients::{Client, EventLog};
    use wayland_client::protocol::wl_seat::WlSeat;
    use x11rb::protocol::xproto::{
        BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, KEY_PRESS_EVENT, KEY_RELEASE_EVENT,
        MOTION_NOTIFY_EVENT,
    };

    const T: Duration = Duration::from_secs(30);
    let (_xvfb, display) = start_xvfb();
    let socket = socket_path("input");
    let mut compositor = Killed(
        Command::new(fencegate_bin())
            .args(["--backend", "winit", "--socket", socket.to_str().unwrap()])
            .env("DISPLAY", &display)
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(compositor.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");

    let mut client = Client::connect_to(socket.to_str().unwrap()).unwrap();
    let seat: WlSeat = client.bind_global(5, EventLog::new()).unwrap();
    let (pointer_log, keyboard_log) = (EventLog::new(), EventLog::new());
    let _pointer = seat.get_pointer(client.qh(), pointer_log.clone());
    let _keyboard = seat.get_keyboard(client.qh(), keyboard_log.clone());
    let w = client.create_window("input", "test.input");
    client.wait_configured(w, T).unwrap();
    client.draw_solid(w, 200, 150, 0xffff00ff).unwrap();
    client.roundtrip().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let window = loop {
        if let Some((bbox, _)) = find_color(&grab_screen(&display), rgb(0xff00ff)) {
            break bbox;
        }
        assert!(Instant::now() < deadline, "the client never appeared");
        client.roundtrip().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    };
    client
        .dispatch_until(T, "keyboard focus on the new window", |_| {
            keyboard_log.contains("Enter")
        })
        .unwrap();

    let (conn, _) = x11rb::connect(Some(&display)).unwrap();
    let (cx, cy) = ((window.0 + 100) as i16, (window.1 + 75) as i16);
    fake(&conn, MOTION_NOTIFY_EVENT, 0, cx, cy);
    client
        .dispatch_until(T, "wl_pointer.enter", |_| pointer_log.contains("Enter"))
        .unwrap();
    let enter = pointer_log
        .events()
        .into_iter()
        .find(|e| e.contains("Enter"))
        .unwrap();
    assert!(
        enter.contains("surface_x: 100.0") && enter.contains("surface_y: 75.0"),
        "{enter}"
    );
    fake(&conn, BUTTON_PRESS_EVENT, 1, cx, cy);
    fake(&conn, BUTTON_RELEASE_EVENT, 1, cx, cy);
    // BTN_LEFT is 0x110 = 272.
    client
        .dispatch_until(T, "wl_pointer.button", |_| {
            pointer_log.contains("button: 272")
        })
        .unwrap();

    // There is no window manager to give fencegate's window the X input focus: do it as one would.
    {
        use x11rb::protocol::xproto::{ConnectionExt as _, InputFocus};
        let root = conn.setup().roots[0].root;
        let tree = conn.query_tree(root).unwrap().reply().unwrap();
        let top = *tree
            .children
            .last()
            .expect("fencegate's window is a child of the root");
        conn.set_input_focus(InputFocus::POINTER_ROOT, top, x11rb::CURRENT_TIME)
            .unwrap();
        conn.flush().unwrap();
    }
    // X keycode 38 is 'a' (evdev 30).
    fake(&conn, KEY_PRESS_EVENT, 38, cx, cy);
    fake(&conn, KEY_RELEASE_EVENT, 38, cx, cy);
    client
        .dispatch_until(T, "wl_keyboard.key for 'a'", |_| {
            keyboard_log.contains("key: 30")
        })
        .unwrap();

    // Alt+F4 (X keycodes 64 and 70) is the compositor's: the client gets close, not the keys.
    let keys_before = keyboard_log
        .events()
        .iter()
        .filter(|e| e.contains("Key {"))
        .count();
    fake(&conn, KEY_PRESS_EVENT, 64, cx, cy);
    fake(&conn, KEY_PRESS_EVENT, 70, cx, cy);
    fake(&conn, KEY_RELEASE_EVENT, 70, cx, cy);
    fake(&conn, KEY_RELEASE_EVENT, 64, cx, cy);
    client
        .dispatch_until(T, "xdg_toplevel.close", |s| s.windows[w.0].close_requested)
        .unwrap();
    let f4_keys = keyboard_log
        .events()
        .iter()
        .filter(|e| e.contains("Key {") && e.contains("key: 62"))
        .count();
    assert_eq!(
        f4_keys, 0,
        "F4 leaked to the client (after {keys_before} keys)"
    );
}
