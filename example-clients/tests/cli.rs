//! The client binaries on the host, where there is no compositor and no DRM device: `--help`
//! and `--list` work, bad arguments are refused with a clear message (exit 2), a missing
//! compositor or device is an error (exit 1 or, for misbehave, 2) — and nothing panics.

use std::process::{Command, Output};

const CLIENTS: [&str; 3] = [
    "syncobj-client",
    "explicit-sync-v1-client",
    "dmabuf-implicit",
];

fn bin(name: &str) -> Command {
    let path = match name {
        "syncobj-client" => env!("CARGO_BIN_EXE_syncobj-client"),
        "explicit-sync-v1-client" => env!("CARGO_BIN_EXE_explicit-sync-v1-client"),
        "dmabuf-implicit" => env!("CARGO_BIN_EXE_dmabuf-implicit"),
        "misbehave" => env!("CARGO_BIN_EXE_misbehave"),
        other => panic!("no binary {other}"),
    };
    let mut cmd = Command::new(path);
    // Never reach a real compositor of the machine running the tests.
    cmd.env_remove("WAYLAND_SOCKET")
        .env("WAYLAND_DISPLAY", "/nonexistent/fencegate-test.sock");
    cmd
}

fn run(name: &str, args: &[&str]) -> Output {
    bin(name).args(args).output().expect("running the client")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_exit(name: &str, args: &[&str], code: i32, stderr_has: &str) {
    let out = run(name, args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{name} {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(stderr_has),
        "{name} {args:?}: stderr lacks {stderr_has:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{name} {args:?} panicked:\n{stderr}"
    );
}

#[test]
fn help_names_the_options() {
    for name in CLIENTS {
        let out = run(name, &["--help"]);
        let (stdout, _) = text(&out);
        assert!(out.status.success(), "{name} --help");
        for option in [
            "--frames",
            "--size",
            "--color",
            "--device",
            "--allocator",
            "--display",
        ] {
            assert!(
                stdout.contains(option),
                "{name} --help lacks {option}:\n{stdout}"
            );
        }
    }
    let (stdout, _) = text(&run("syncobj-client", &["--help"]));
    assert!(stdout.contains("--acquire-delay-ms"));
    let (stdout, _) = text(&run("explicit-sync-v1-client", &["--help"]));
    assert!(stdout.contains("--acquire-delay-ms"));
    let (stdout, _) = text(&run("dmabuf-implicit", &["--help"]));
    assert!(stdout.contains("--busy-ms"));
    let out = run("misbehave", &["--help"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for option in ["--scenario", "--list", "--hold-ms", "Exit status"] {
        assert!(
            stdout.contains(option),
            "misbehave --help lacks {option}:\n{stdout}"
        );
    }
}

#[test]
fn misbehave_lists_every_scenario_with_its_expected_answer() {
    let out = run("misbehave", &["--list"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for name in [
        "never-signals",
        "signals-late",
        "rewrites-before-release",
        "points-without-buffer",
        "buffer-without-points",
        "acquire-not-before-release",
        "not-a-timeline",
        "destroy-with-points-pending",
        "disconnect-with-points-pending",
        "flood-commits",
        "v1-rewrites-before-release",
    ] {
        assert!(
            stdout.lines().any(|l| l == name),
            "--list lacks {name}:\n{stdout}"
        );
    }
    for error in [
        "no_buffer (3) on wp_linux_drm_syncobj_surface_v1",
        "no_acquire_point (4) on wp_linux_drm_syncobj_surface_v1",
        "conflicting_points (6) on wp_linux_drm_syncobj_surface_v1",
        "invalid_timeline (1) on wp_linux_drm_syncobj_manager_v1",
    ] {
        assert!(stdout.contains(error), "--list lacks {error}:\n{stdout}");
    }
    assert_eq!(stdout.matches("    expected: ").count(), 11);
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    for name in CLIENTS {
        assert_exit(name, &["--frames", "0"], 2, "--frames");
        assert_exit(name, &["--buffers", "1"], 2, "--buffers");
        assert_exit(name, &["--size", "64"], 2, "expected WxH");
        assert_exit(name, &["--color", "blue"], 2, "RRGGBB");
        assert_exit(name, &["--allocator", "dumb"], 2, "--allocator");
        assert_exit(name, &["--no-such-flag"], 2, "--no-such-flag");
    }
    // vgem fences signal themselves after ~10 s: longer delays are refused up front.
    assert_exit(
        "explicit-sync-v1-client",
        &["--acquire-delay-ms", "9000"],
        2,
        "--acquire-delay-ms",
    );
    assert_exit("dmabuf-implicit", &["--busy-ms", "9000"], 2, "--busy-ms");
    assert_exit(
        "syncobj-client",
        &["--acquire-delay-ms", "60001"],
        2,
        "--acquire-delay-ms",
    );
    assert_exit("misbehave", &[], 2, "--scenario");
    assert_exit("misbehave", &["--scenario", "be-nice"], 2, "be-nice");
    assert_exit(
        "misbehave",
        &["--scenario", "flood-commits", "--commits", "1"],
        2,
        "--commits",
    );
}

#[test]
fn no_compositor_is_an_error_not_a_panic() {
    for name in CLIENTS {
        assert_exit(
            name,
            &["--frames", "1"],
            1,
            "/nonexistent/fencegate-test.sock",
        );
    }
    assert_exit(
        "misbehave",
        &["--scenario", "not-a-timeline"],
        2,
        "/nonexistent/fencegate-test.sock",
    );
    assert_exit(
        "syncobj-client",
        &["--display", "/nonexistent/other.sock", "--frames", "1"],
        1,
        "/nonexistent/other.sock",
    );
}

#[test]
fn a_missing_vgem_is_named_before_connecting() {
    // On the host there is no /dev/dri; in the guest vgem exists and this is skipped.
    if std::path::Path::new("/dev/dri").exists() {
        eprintln!("SKIP: this machine has /dev/dri");
        return;
    }
    assert_exit("dmabuf-implicit", &["--busy-ms", "100"], 1, "vgem");
    assert_exit(
        "explicit-sync-v1-client",
        &["--acquire-delay-ms", "100"],
        1,
        "vgem",
    );
}
