//! The `fencegate` binary as a user runs it: screenshots of real clients, the spawned client's
//! exit status, clean shutdown on signals, no socket left behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client_bin, fencegate_bin, find_color, read_png, rgb, socket_path};
use fencegate::placement::CASCADE_ORIGIN;
use fencegate::render::CLEAR_COLOR;

fn fencegate(socket: &std::path::Path) -> Command {
    let mut command = Command::new(fencegate_bin());
    command.args([
        "--backend",
        "headless",
        "--size",
        "400x300",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    command
}

fn assert_socket_removed(socket: &std::path::Path) {
    assert!(!socket.exists(), "socket {} left behind", socket.display());
    let lock = format!("{}.lock", socket.display());
    assert!(
        !std::path::Path::new(&lock).exists(),
        "lock file {lock} left behind"
    );
}

#[test]
fn screenshot_shows_our_shm_client_where_it_was_placed() {
    let socket = socket_path("shot");
    let shot = socket.with_extension("png");
    let output = fencegate(&socket)
        .args([
            "--screenshot",
            shot.to_str().unwrap(),
            "--exit-after-screenshot",
            "--",
        ])
        .arg(client_bin("shm-client"))
        .args(["--color", "ff8000", "--size", "120x90", "--fixed-size"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fencegate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "listening on WAYLAND_DISPLAY={}",
            socket.display()
        )),
        "{stdout}"
    );
    let capture = read_png(&shot);
    assert_eq!((capture.width, capture.height), (400, 300));
    let ((x, y, w, h), count) =
        find_color(&capture, rgb(0xff8000)).expect("the client's colour on screen");
    assert_eq!(
        (x as i32, y as i32, w, h, count),
        (CASCADE_ORIGIN.x, CASCADE_ORIGIN.y, 120, 90, 120 * 90)
    );
    assert_socket_removed(&socket);
    let _ = std::fs::remove_file(shot);
}

#[test]
fn a_debian_client_draws_real_content() {
    let socket = socket_path("weston");
    let shot = socket.with_extension("png");
    let output = fencegate(&socket)
        .args([
            "--screenshot",
            shot.to_str().unwrap(),
            "--screenshot-after-frames",
            "10",
            "--exit-after-screenshot",
        ])
        .args(["--", "weston-simple-shm"])
        .output()
        .expect("fencegate runs (weston-simple-shm comes from Debian's weston package)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let capture = read_png(&shot);
    // weston-simple-shm draws a 250x250 window of changing colours: count what is not background.
    let background = CLEAR_COLOR.components().map(|c| (c * 255.0).round() as u8);
    let mut drawn = 0;
    for y in CASCADE_ORIGIN.y as u32..CASCADE_ORIGIN.y as u32 + 250 {
        for x in CASCADE_ORIGIN.x as u32..CASCADE_ORIGIN.x as u32 + 250 {
            if capture.pixel(x, y)[..3] != background[..3] {
                drawn += 1;
            }
        }
    }
    assert!(
        drawn > 250 * 250 * 9 / 10,
        "only {drawn} pixels of weston-simple-shm's window differ from the background"
    );
    let _ = std::fs::remove_file(shot);
}

#[test]
fn exits_with_the_spawned_clients_status() {
    for (script, expected) in [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 128 + 15)] {
        let socket = socket_path("status");
        let status = fencegate(&socket)
            .args(["--", "sh", "-c", script])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(expected), "client `{script}`");
        assert_socket_removed(&socket);
    }
}

#[test]
fn the_client_gets_our_socket_and_not_the_hosts_display() {
    let socket = socket_path("env");
    let output = fencegate(&socket)
        .env("DISPLAY", ":99")
        .args([
            "--",
            "sh",
            "-c",
            "echo \"WD=$WAYLAND_DISPLAY DISPLAY=${DISPLAY:-unset}\"",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("WD={} DISPLAY=unset", socket.display())),
        "{stdout}"
    );
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let socket = socket_path("signal");
        let mut child = fencegate(&socket).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{line}");
        assert!(socket.exists());
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "fencegate ignored {signal:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.code(),
            Some(0),
            "a requested shutdown is a clean one ({signal:?})"
        );
        assert_socket_removed(&socket);
    }
}

#[test]
fn drm_backend_names_what_it_could_not_open() {
    // A device that cannot exist: the error path is the same with or without a GPU here.
    let socket = socket_path("drm");
    let output = Command::new(fencegate_bin())
        .args(["--backend", "drm", "--drm-device", "/nonexistent/card9"])
        .args(["--socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // Without a seat the session cannot open; with one, the device cannot.
    assert!(
        stderr.contains("/nonexistent/card9") || stderr.contains("no libseat session"),
        "{stderr}"
    );
    assert_socket_removed(&socket);
}

#[test]
fn a_taken_socket_is_an_error_not_a_hijack() {
    let socket = socket_path("taken");
    let mut first = fencegate(&socket).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let second = fencegate(&socket).output().unwrap();
    assert!(
        !second.status.success(),
        "a second compositor must not take over a live socket"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}
