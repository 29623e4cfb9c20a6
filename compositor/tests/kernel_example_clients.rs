//! The example clients (`example-clients`) against a real kernel and an in-process headless
//! fencegate: each well-behaved client shows every frame it draws (its exact colour, all of its
//! pixels, in a capture of the output), is held by the compositor as long as its fences say, and
//! ends with `Ok` — what its binary turns into exit status 0; `misbehave` scenarios get their
//! documented answers, protocol errors included, while a bystander carries on.
//!
//! Runs in the guest of `cargo xtask vm-test` (virtio-gpu for timeline syncobjs, vgem for
//! fences, Mesa GBM on the card nodes); on a machine without /dev/dri each test prints SKIP and
//! passes.
//!
//! The clients run in-process through their library modules (each binary is a thin wrapper
//! over the same `run`): the guest's filesystem is read-only, so `common::client_bin` cannot
//! build the binaries there. The binaries themselves are tested on the host
//! (`example-clients/tests/cli.rs`).

mod common;

use std::time::Duration;

use clap::Parser;
use common::protocol_errors::others_carry_on;
use common::test_server::{headless_server, headless_server_with_args};
use common::{find_color, rgb, vgem_card, virtio_gpu_render};
use fencegate::testing::TestServer;
use fencegate_clients::dmabuf_window::Shown;
use fencegate_clients::misbehave::{self, Expected, Scenario};
use fencegate_clients::paint::frame_color;
use fencegate_clients::{dmabuf_implicit, explicit_sync_v1_client, syncobj_client, Client};

const T: Duration = Duration::from_secs(30);
/// Small buffers: the guest draws with llvmpipe under TCG.
const SIZE: &str = "32x24";
const FRAMES: u32 = 4;
/// How late the clients' fences signal; every frame must take at least this long to show.
const DELAY_MS: u64 = 300;
const DELAY: Duration = Duration::from_millis(DELAY_MS);

/// Both kernel devices the clients use, or None after a SKIP line (host).
fn devices() -> Option<()> {
    virtio_gpu_render()?;
    vgem_card()?;
    Some(())
}

/// Checks a shown frame against the output: every pixel of its colour, in one block of the
/// buffer's size, and none of the previous frame's colour left.
fn on_screen(server: &TestServer, shown: &Shown, previous: Option<u32>) -> anyhow::Result<()> {
    let capture = server.capture()?;
    let (w, h) = shown.size;
    let Some((rect, count)) = find_color(&capture, rgb(shown.color)) else {
        anyhow::bail!(
            "frame {}: no #{:06x} pixel on screen",
            shown.frame,
            shown.color
        );
    };
    anyhow::ensure!(
        count == (w * h) as usize && (rect.2, rect.3) == (w, h),
        "frame {}: {count} pixels of #{:06x} in {rect:?}, expected a {w}x{h} block",
        shown.frame,
        shown.color
    );
    if let Some(previous) = previous.filter(|&p| p != shown.color) {
        anyhow::ensure!(
            find_color(&capture, rgb(previous)).is_none(),
            "frame {}: the previous frame's #{previous:06x} is still on screen",
            shown.frame
        );
    }
    Ok(())
}

/// Runs a client's `run` with `on_screen` checking every frame; returns the frames.
fn shown_frames(
    server: &TestServer,
    run: impl FnOnce(&mut dyn FnMut(&Shown) -> anyhow::Result<()>) -> anyhow::Result<String>,
) -> (Vec<Shown>, String) {
    let mut frames: Vec<Shown> = Vec::new();
    let report = run(&mut |shown| {
        on_screen(server, shown, frames.last().map(|f| f.color))?;
        frames.push(shown.clone());
        Ok(())
    })
    .unwrap_or_else(|err| panic!("the client failed: {err:#}"));
    (frames, report)
}

#[track_caller]
fn assert_frames(frames: &[Shown], count: u32, fixed: Option<u32>, at_least: Duration) {
    assert_eq!(frames.len(), count as usize, "{frames:?}");
    for (i, shown) in frames.iter().enumerate() {
        let color = fixed.unwrap_or_else(|| frame_color(i as u32));
        assert_eq!((shown.frame, shown.color), (i as u32, color), "{shown:?}");
        assert!(
            shown.latency >= at_least,
            "frame {i} was shown {:?} after its commit, before its fence signalled ({at_least:?})",
            shown.latency
        );
    }
}

fn client_args<A: Parser>(name: &str, server: &TestServer, extra: &[&str]) -> A {
    let mut argv = vec![name, "--display", server.socket_str(), "--size", SIZE];
    argv.extend_from_slice(extra);
    A::try_parse_from(&argv).unwrap_or_else(|err| panic!("{argv:?}: {err}"))
}

#[test]
fn syncobj_client_shows_each_frame_once_its_acquire_point_signals() {
    let Some(()) = devices() else {
        return;
    };
    let server = headless_server();
    let frames = FRAMES.to_string();
    let delay = DELAY_MS.to_string();
    let args: syncobj_client::Args = client_args(
        syncobj_client::NAME,
        &server,
        &["--frames", &frames, "--acquire-delay-ms", &delay],
    );
    let (shown, report) = shown_frames(&server, |on_frame| {
        syncobj_client::run(&args, on_frame).map(|r| {
            assert_eq!(r.frames, FRAMES);
            // Here GBM cannot allocate on the main device's render node: the card node must
            // have been used, not the vgem fallback.
            assert!(r.allocator.starts_with("GBM"), "{r}");
            r.to_string()
        })
    });
    assert_frames(&shown, FRAMES, None, DELAY);
    let s = server.snapshot().unwrap();
    assert!(
        s.acquire.blocked >= u64::from(FRAMES),
        "every commit waited: {report}\n{s:?}"
    );
    assert_eq!(s.acquire.timed_out, 0, "{s:?}");
    assert!(s.release.taken >= u64::from(FRAMES), "{s:?}");
    assert_eq!(
        s.release.owed(),
        0,
        "every release point was signalled: {s:?}"
    );

    // The last-resort allocator, a fixed colour, three buffers, points signalled up front.
    let args: syncobj_client::Args = client_args(
        syncobj_client::NAME,
        &server,
        &[
            "--frames",
            "3",
            "--buffers",
            "3",
            "--allocator",
            "vgem",
            "--color",
            "00ff80",
        ],
    );
    let (shown, _) = shown_frames(&server, |on_frame| {
        syncobj_client::run(&args, on_frame).map(|r| {
            assert!(r.allocator.starts_with("vgem"), "{r}");
            r.to_string()
        })
    });
    assert_frames(&shown, 3, Some(0x00ff80), Duration::ZERO);
    let s = server.snapshot().unwrap();
    assert!(s.acquire.already_signaled >= 3, "{s:?}");
    assert_eq!(s.release.owed(), 0, "{s:?}");
}

#[test]
fn explicit_sync_v1_client_waits_for_its_sync_files_and_gets_every_release() {
    let Some(()) = devices() else {
        return;
    };
    let server = headless_server();
    let frames = FRAMES.to_string();
    let delay = DELAY_MS.to_string();
    let args: explicit_sync_v1_client::Args = client_args(
        explicit_sync_v1_client::NAME,
        &server,
        &["--frames", &frames, "--acquire-delay-ms", &delay],
    );
    let (shown, report) = shown_frames(&server, |on_frame| {
        explicit_sync_v1_client::run(&args, on_frame).map(|r| {
            // One release object per commit, each answered once (GLES frames: fenced).
            assert_eq!(r.fenced_releases + r.immediate_releases, FRAMES, "{r}");
            assert_eq!(r.fenced_releases, FRAMES, "{r}");
            r.to_string()
        })
    });
    assert_frames(&shown, FRAMES, None, DELAY);
    let s = server.snapshot().unwrap();
    assert!(
        s.explicit_acquire.blocked >= u64::from(FRAMES),
        "{report}\n{s:?}"
    );
    assert_eq!(s.explicit_releases_owed, 0, "{s:?}");

    // Already signalled fences: no blocker.
    let args: explicit_sync_v1_client::Args =
        client_args(explicit_sync_v1_client::NAME, &server, &["--frames", "2"]);
    let (shown, _) = shown_frames(&server, |on_frame| {
        explicit_sync_v1_client::run(&args, on_frame).map(|r| r.to_string())
    });
    assert_frames(&shown, 2, None, Duration::ZERO);
    let s = server.snapshot().unwrap();
    assert!(s.explicit_acquire.already_signaled >= 2, "{s:?}");
}

#[test]
fn dmabuf_implicit_is_held_by_its_busy_write_fences() {
    let Some(()) = devices() else {
        return;
    };
    let server = headless_server();
    let delay = DELAY_MS.to_string();
    let args: dmabuf_implicit::Args = client_args(
        dmabuf_implicit::NAME,
        &server,
        &["--frames", "3", "--busy-ms", &delay],
    );
    let (shown, report) = shown_frames(&server, |on_frame| {
        dmabuf_implicit::run(&args, on_frame).map(|r| r.to_string())
    });
    assert_frames(&shown, 3, None, DELAY);
    let s = server.snapshot().unwrap();
    assert!(
        s.implicit.blocked >= 3,
        "every commit waited for its write fence: {report}\n{s:?}"
    );
    assert_eq!(s.implicit.timed_out, 0, "{s:?}");
}

#[test]
fn dmabuf_implicit_draws_into_udmabufs() {
    let Some(()) = devices() else {
        return;
    };
    // The default server renders with GLES: llvmpipe on vgem's KMS device (kms_swrast), which
    // cannot map a dma-buf vgem did not export and used to sample a udmabuf at address 0
    // (SIGSEGV); fencegate now copies such buffers through the CPU. pixman maps them itself.
    for renderer in ["gles", "pixman"] {
        let server = match renderer {
            "gles" => headless_server(),
            _ => headless_server_with_args(&["--pixman"]),
        };
        assert_eq!(server.snapshot().unwrap().renderer, renderer);
        let args: dmabuf_implicit::Args = client_args(
            dmabuf_implicit::NAME,
            &server,
            &[
                "--frames",
                "3",
                "--allocator",
                "udmabuf",
                "--busy-ms",
                "200",
            ],
        );
        let (shown, _) = shown_frames(&server, |on_frame| {
            dmabuf_implicit::run(&args, on_frame).map(|r| {
                assert!(r.allocator.starts_with("udmabuf"), "{renderer}: {r}");
                r.to_string()
            })
        });
        assert_frames(&shown, 3, None, Duration::from_millis(200));
        let s = server.snapshot().unwrap();
        assert!(s.implicit.blocked >= 3, "{renderer}: {s:?}");
    }
}

fn misbehave_args(server: &TestServer, scenario: Scenario, extra: &[&str]) -> misbehave::Args {
    let mut argv = vec![
        misbehave::NAME,
        "--display",
        server.socket_str(),
        "--scenario",
        scenario.name(),
    ];
    argv.extend_from_slice(extra);
    misbehave::Args::try_parse_from(&argv).unwrap_or_else(|err| panic!("{argv:?}: {err}"))
}

/// A client that keeps a window on screen and must keep getting answers.
fn bystander(server: &TestServer) -> Client {
    let mut client = Client::connect_to(server.socket_str()).unwrap();
    let w = client.create_window("bystander", "test.bystander");
    client.wait_configured(w, T).unwrap();
    client.draw_solid(w, 8, 8, 0xffffffff).unwrap();
    client.roundtrip().unwrap();
    client
}

#[test]
fn misbehaving_syncobj_clients_get_their_documented_protocol_errors() {
    let Some(()) = devices() else {
        return;
    };
    let server = headless_server();
    let mut bystander = bystander(&server);
    let scenarios = [
        Scenario::PointsWithoutBuffer,
        Scenario::BufferWithoutPoints,
        Scenario::AcquireNotBeforeRelease,
        Scenario::NotATimeline,
    ];
    for scenario in scenarios {
        let Expected::ProtocolError {
            interface,
            code,
            name,
        } = scenario.expected()
        else {
            panic!("{} documents a protocol error", scenario.name());
        };
        let outcome = misbehave::run(&misbehave_args(&server, scenario, &[]))
            .unwrap_or_else(|err| panic!("{}: {err:#}", scenario.name()));
        assert!(outcome.as_expected, "{outcome}");
        assert!(
            outcome
                .observed
                .starts_with(&format!("protocol error {name} ({code}) on {interface}")),
            "{outcome}"
        );
        others_carry_on(&server, &mut bystander);
    }
    let s = server.snapshot().unwrap();
    assert_eq!(
        s.acquire.blocked, 0,
        "no rejected commit is waited for: {s:?}"
    );
}

#[test]
fn a_never_signalled_acquire_point_freezes_the_surface_and_is_reported() {
    let Some(()) = devices() else {
        return;
    };
    let server = headless_server();
    let args = misbehave_args(&server, Scenario::NeverSignals, &["--hold-ms", "6000"]);
    std::thread::scope(|scope| {
        let client = scope.spawn(|| misbehave::run(&args));
        // fencegate's default fence timeout is 1 s: the report comes while the client waits.
        let s = server
            .wait_for("the acquire timeout report", T, |s| {
                s.acquire.timed_out >= 1
            })
            .unwrap();
        assert_eq!(s.acquire.blocked, 1, "{s:?}");
        let capture = server.capture().unwrap();
        let (_, count) = find_color(&capture, rgb(misbehave::FIRST_COLOR))
            .expect("the first buffer stays on screen");
        assert_eq!(count, 32 * 32);
        assert!(
            find_color(&capture, rgb(misbehave::SECOND_COLOR)).is_none(),
            "the held buffer is not shown"
        );
        let outcome = client.join().unwrap().unwrap();
        assert!(outcome.as_expected, "{outcome}");
    });
    server
        .wait_for("the held commit given up", T, |s| s.acquire.abandoned == 1)
        .unwrap();
}

#[test]
fn late_points_rewrites_and_floods_are_answered_as_documented() {
    let Some(()) = devices() else {
        return;
    };
    let server = headless_server();
    let mut bystander = bystander(&server);

    let outcome = misbehave::run(&misbehave_args(
        &server,
        Scenario::SignalsLate,
        &["--late-ms", "2000"],
    ))
    .unwrap();
    assert!(outcome.as_expected, "{outcome}");
    let s = server.snapshot().unwrap();
    assert_eq!((s.acquire.timed_out, s.acquire.released), (1, 1), "{s:?}");

    let outcome = misbehave::run(&misbehave_args(
        &server,
        Scenario::RewritesBeforeRelease,
        &[],
    ))
    .unwrap();
    assert!(outcome.as_expected, "{outcome}");

    let outcome = misbehave::run(&misbehave_args(
        &server,
        Scenario::FloodCommits,
        &["--commits", "40"],
    ))
    .unwrap();
    assert!(outcome.as_expected, "{outcome}");
    let s = others_carry_on(&server, &mut bystander);
    assert_eq!(s.release.owed(), 0, "{s:?}");

    // Gone with a commit still held on its acquire point: every release point is signalled,
    // the held commit's too, and its wait is given up at once.
    for scenario in [
        Scenario::DestroyWithPointsPending,
        Scenario::DisconnectWithPointsPending,
    ] {
        let abandoned = server.snapshot().unwrap().acquire.abandoned;
        let outcome = misbehave::run(&misbehave_args(&server, scenario, &[]))
            .unwrap_or_else(|err| panic!("{}: {err:#}", scenario.name()));
        assert!(outcome.as_expected, "{}: {outcome}", scenario.name());
        let s = server
            .wait_for("the held commit's wait given up", T, |s| {
                s.acquire.abandoned > abandoned && s.release.owed() == 0
            })
            .unwrap_or_else(|err| panic!("{}: {err:#}", scenario.name()));
        assert_eq!(s.release.owed(), 0, "{}: {s:?}", scenario.name());
    }
    others_carry_on(&server, &mut bystander);
}
