//! `fencegate --backend drm` on a real DRM session: seatd, udev, virtio-gpu's atomic KMS and
//! Mesa's software renderer, in the guest of `cargo xtask vm-test`. fencegate runs as its own
//! process under `seatd-launch` (`common::drm_session`); the test is its Wayland client and
//! reads back what the display shows from a second, non-master fd (`common::kms_readback`).
//!
//! * a client's window is on screen: the framebuffer KMS scans out has its pixels;
//! * a fullscreen dma-buf is scanned out directly: the primary plane shows the client's own
//!   buffer (zero-copy in presentation feedback), its previous buffer's release point signals
//!   with the timestamp of the flip that replaced it (the next commit's OUT_FENCE_PTR fence
//!   imported into the point, not a CPU signal), and the surface's dma-buf feedback offers a
//!   scanout tranche on the card;
//! * a surface held on a never-signalled acquire point leaves another client's frames at the
//!   rate they have alone;
//! * each commit carries an in-fence, read back from the kernel's own `dma_fence_wait_start`
//!   tracepoint in the commit's tail (`common::fence_trace`): a direct scanout's is the
//!   already signalled `stub` fence of a signalled syncobj, a composited frame's the render
//!   fence (llvmpipe's is a `stub` fence too);
//! * a client leaving with an acquire point pending leaves no fd, framebuffer, dma-buf, GEM
//!   handle or syncobj handle behind in fencegate (handles asked of its own DRM files,
//!   `common::leak_probe`);
//! * the connector unplugged and plugged back turns the CRTC off and on again;
//! * a second connector plugged in is driven on a CRTC of its own: a client fullscreen on it is
//!   scanned out there while a window is composited on the first, and a window across both is
//!   released only after both outputs' frames (their fences merged);
//! * a pending client acquire fence is given the next vblank as its deadline
//!   (`SYNC_IOC_SET_DEADLINE`, seen with strace);
//! * on vkms, a fullscreen client's buffer with someone else's pending implicit write fence is
//!   scanned out at once: fencegate's signalled `IN_FENCE_FD` switches the implicit wait off;
//! * a virtual keyboard and mouse (uinput) reach clients through libinput, and Ctrl+Alt+F2
//!   switches VT;
//! * a VT switch pauses the session and switching back resumes it: the surface shows new
//!   content again, and no fd, framebuffer, GEM handle or syncobj handle is left over.
//!
//! On a machine without the guest each test prints SKIP and passes.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::drm_session::{DrmSession, SeatedChild, SeatedCommand};
use common::fence_trace::{
    commit_waits, flip_at, flip_file, parse_trace, CommitWaits, FenceTrace, TraceKind,
};
use common::kms_readback::{
    read_atomic_state, read_framebuffers, read_scanouts_at, FramebufferImage, Scanout,
};
use common::leak_probe::{dma_buf_count, drm_handles, open_fds, HandleCensus};
use common::uinput::{VirtualInput, KEY_A, KEY_F2, KEY_LEFTALT, KEY_LEFTCTRL};
use common::vgem_fence::{signalled_sync_file, PendingFence};
use common::{fencegate_bin, find_drm_node, require_device, vgem_card};

use fence_bridge::{Access, DmaBuf, DrmDevice, FenceStatus, Syncobj};
use fencegate_clients::dmabuf_window::{DmabufWindow, FrameWait};
use fencegate_clients::linux_dmabuf::XRGB8888;
use fencegate_clients::options::{AllocatorChoice, DmabufWindowArgs};
use fencegate_clients::paint::solid;
use fencegate_clients::syncobj_timeline::{
    bind_manager, import_timeline, open_timeline_device, set_points, wait_signalled, Timeline,
};
use fencegate_clients::{EventLog, IgnoreEvents};
use wayland_client::protocol::wl_seat::WlSeat;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
    wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
};

/// TCG is slow: how long anything that should happen "now" may take.
const GENEROUS: Duration = Duration::from_secs(30);
/// `wp_presentation_feedback.kind.zero_copy`.
const ZERO_COPY: u32 = 0x8;

/// virtio-gpu's card node: atomic KMS with fences, timelines, GBM through kms_swrast.
fn virtio_gpu_card() -> Option<PathBuf> {
    require_device("virtio-gpu card node", || {
        find_drm_node("card", "virtio_gpu").and_then(|d| d.path().map(Path::to_path_buf))
    })
}

/// vkms's card node (built for the guest): atomic KMS that honours implicit fences, no
/// syncobjs.
fn vkms_card() -> Option<PathBuf> {
    require_device("vkms card node", || {
        find_drm_node("card", "vkms").and_then(|d| d.path().map(Path::to_path_buf))
    })
}

/// fencegate on `card`, its socket ready.
struct Fencegate {
    child: SeatedChild,
    socket: PathBuf,
}

impl Fencegate {
    fn start(session: &DrmSession, card: &Path, tag: &str) -> Fencegate {
        Fencegate::start_with(session, card, tag, &[])
    }

    /// [`Fencegate::start`] with more arguments for fencegate.
    fn start_with(session: &DrmSession, card: &Path, tag: &str, more: &[&str]) -> Fencegate {
        let socket = session.runtime_dir.join(format!("fencegate-{tag}"));
        let _ = std::fs::remove_file(&socket);
        let child = SeatedCommand::new(&format!("fencegate-{tag}"), fencegate_bin())
            .args(["--backend", "drm", "--drm-device"])
            .arg(card)
            .args(more)
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "info,smithay=warn")
            .spawn(session);
        let mut fencegate = Fencegate { child, socket };
        let deadline = Instant::now() + GENEROUS * 2;
        while !fencegate.stdout().contains("listening on") {
            if let Some(status) = fencegate.child.try_wait() {
                panic!("fencegate exited ({status}):\n{}", fencegate.child.output());
            }
            assert!(
                Instant::now() < deadline,
                "fencegate did not start:\n{}",
                fencegate.child.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fencegate
    }

    fn stdout(&self) -> String {
        self.child.stdout()
    }

    fn log(&self) -> String {
        self.child.output()
    }

    fn pid(&self) -> i32 {
        self.child.command_pid().expect("fencegate runs")
    }

    fn window_args(&self, card: &Path, size: (u32, u32), fullscreen: bool) -> DmabufWindowArgs {
        DmabufWindowArgs {
            display: Some(self.socket.to_string_lossy().into_owned()),
            size,
            color: None,
            frames: None,
            buffers: 2,
            // GBM cannot allocate on virtio-gpu's render node under kms_swrast: the card node.
            device: Some(card.to_path_buf()),
            allocator: AllocatorChoice::Auto,
            title: None,
            fullscreen,
            fullscreen_on: None,
        }
    }

    /// SIGTERM, and the clean exit it must make.
    fn stop(mut self) {
        let status = self.child.terminate(GENEROUS);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "fencegate's exit:\n{}",
            self.child.output()
        );
    }
}

/// fencegate started on virtio-gpu's card (`tag` names its socket and logs); None, after a
/// SKIP line, outside the guest.
fn fencegate_on_virtio_gpu(tag: &str) -> Option<(Fencegate, PathBuf)> {
    let session = DrmSession::setup()?;
    let card = virtio_gpu_card()?;
    Some((Fencegate::start(session, &card, tag), card))
}

/// linux-drm-syncobj-v1 on `win`'s surface, with timelines made on `card`.
fn explicit_sync(
    win: &DmabufWindow,
    card: &Path,
) -> (
    WpLinuxDrmSyncobjManagerV1,
    DrmDevice,
    WpLinuxDrmSyncobjSurfaceV1,
) {
    let manager = bind_manager(&win.client).expect("linux-drm-syncobj-v1");
    let (device, _) = open_timeline_device(Some(card), win.device.as_ref()).expect("timelines");
    let sync = manager.get_surface(&win.surface, win.client.qh(), IgnoreEvents);
    (manager, device, sync)
}

/// The one active CRTC's scanout of `card`.
fn scanout(card: &Path) -> Scanout {
    let mut scanouts = read_scanouts_at(card).expect("reading the scanout back");
    assert_eq!(scanouts.len(), 1, "one active CRTC: {scanouts:?}");
    scanouts.remove(0)
}

/// Sets acquire point 1 and release point 2 of `timeline` on the surface, as every test here
/// does.
fn points_1_and_2(sync: &WpLinuxDrmSyncobjSurfaceV1, timeline: &Timeline) {
    set_points(
        sync,
        Some((&timeline.object, 1)),
        Some((&timeline.object, 2)),
    );
}

/// Commits `buffer` (already drawn) with acquire point 1, signalled first, and release point 2
/// of `timeline`, and waits until it is presented (see [`commit_and_wait_presented`]).
fn commit_signalled_and_wait_presented(
    win: &mut DmabufWindow,
    sync: &WpLinuxDrmSyncobjSurfaceV1,
    timeline: &Timeline,
    buffer: &wayland_client::protocol::wl_buffer::WlBuffer,
) -> (u64, u32) {
    points_1_and_2(sync, timeline);
    timeline.syncobj.signal_point(1).expect("acquire signalled");
    commit_and_wait_presented(win, buffer)
}

/// Switches the console to VT `vt`, as a user at the keyboard would (`busybox chvt`).
fn chvt(vt: &str) {
    let ok = std::process::Command::new("busybox")
        .args(["chvt", vt])
        .status()
        .expect("busybox chvt")
        .success();
    assert!(ok, "chvt {vt}");
}

/// Polls `f` until it holds, for `GENEROUS`.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + GENEROUS;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many GEM and syncobj handles each DRM fd of `pid` has (`common::leak_probe`), keyed by
/// fd and node.
fn handle_counts(pid: i32) -> Vec<((i32, String), (usize, usize))> {
    let census: HandleCensus = drm_handles(pid).expect("fencegate's GEM and syncobj handles");
    census.counts().into_iter().collect()
}

/// Commits `buffer` (already drawn) and waits until it is presented; returns the presentation
/// (its time in ns, CLOCK_MONOTONIC, and its flags).
fn commit_and_wait_presented(
    win: &mut DmabufWindow,
    buffer: &wayland_client::protocol::wl_buffer::WlBuffer,
) -> (u64, u32) {
    let presented_before = win.client.state.windows[win.window.0].presented.len();
    let frames_before = win.commit(buffer).expect("commit");
    assert_eq!(
        win.wait_frame(frames_before, GENEROUS).expect("frame"),
        FrameWait::Shown
    );
    let w = win.window.0;
    win.client
        .dispatch_until(GENEROUS, "the presentation feedback", |s| {
            s.windows[w].presented.len() > presented_before
        })
        .expect("presented");
    let p = &win.client.state.windows[w].presented[presented_before];
    (p.tv_sec * 1_000_000_000 + u64::from(p.tv_nsec), p.flags)
}

#[test]
fn a_client_window_is_on_the_screen() {
    let Some((fencegate, card)) = fencegate_on_virtio_gpu("window") else {
        return;
    };
    window_on_the_screen(fencegate, &card);
}

#[test]
fn a_client_window_is_on_the_screen_of_vkms() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = vkms_card() else {
        return;
    };
    window_on_the_screen(Fencegate::start(session, &card, "vkms"), &card);
}

#[test]
fn a_client_window_is_on_the_screen_with_pixman() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = virtio_gpu_card() else {
        return;
    };
    let fencegate = Fencegate::start_with(session, &card, "pixman", &["--pixman"]);
    let log = fencegate.log();
    assert!(log.contains("drm: pixman renderer"), "{log}");
    window_on_the_screen(fencegate, &card);
}

/// A window's pixels are in the framebuffer `card` scans out, composited by the software
/// renderer that fencegate says it supports (or pixman, when asked for).
fn window_on_the_screen(fencegate: Fencegate, card: &Path) {
    let log = fencegate.log();
    assert!(log.contains("backend Drm"), "{log}");
    assert!(
        log.contains("a supported configuration") || log.contains("drm: pixman renderer"),
        "the software renderer on a KMS device is said to be supported:\n{log}"
    );

    let size = (96, 64);
    let mut win = DmabufWindow::open(&fencegate.window_args(card, size, false), "drm-window")
        .expect("window");
    let (mut pixels, buffer) = win.new_buffer().expect("buffer");
    let color = 0x3366cc;
    pixels.write(&solid(size.0, size.1, color)).expect("draw");
    let (_, flags) = commit_and_wait_presented(&mut win, &buffer);
    assert_eq!(flags & ZERO_COPY, 0, "a window is composited");

    let shown = scanout(card);
    let image = shown.image.expect("the primary plane has a framebuffer");
    let count = image
        .pixels
        .iter()
        .filter(|&&p| p & 0xff_ffff == color)
        .count();
    assert_eq!(
        count,
        (size.0 * size.1) as usize,
        "the window's pixels on screen ({}x{} {})",
        image.width,
        image.height,
        image.format_name()
    );
    let background = image.rgb(image.width - 1, image.height - 1);
    assert_ne!(background, color, "the rest is the background");
    drop(win);
    fencegate.stop();
}

#[test]
fn a_fullscreen_dmabuf_is_scanned_out_and_released_by_the_next_flip() {
    let Some((fencegate, card)) = fencegate_on_virtio_gpu("scanout") else {
        return;
    };
    let mut win = DmabufWindow::open(&fencegate.window_args(&card, (64, 64), true), "drm-fs")
        .expect("fullscreen window");
    let mode = {
        let s = scanout(&card);
        let image = s.image.expect("a frame before the client's");
        (image.width, image.height)
    };
    assert_eq!(
        win.size, mode,
        "the fullscreen configure has the mode's size"
    );

    let (manager, device, sync) = explicit_sync(&win, &card);
    let mut buffers = Vec::new();
    for _ in 0..2 {
        let (pixels, buffer) = win.new_buffer().expect("buffer");
        let timeline = import_timeline(&win.client, &manager, &device).expect("timeline");
        buffers.push((pixels, buffer, timeline));
    }
    win.client.roundtrip().expect("imports accepted");

    // Each buffer once: acquire point 1 signalled before the commit, release point 2.
    let colors = [0xff0000, 0x00ff00];
    let mut presented = Vec::new();
    for (i, (pixels, buffer, timeline)) in buffers.iter_mut().enumerate() {
        pixels
            .write(&solid(win.size.0, win.size.1, colors[i]))
            .expect("draw");
        presented.push(commit_signalled_and_wait_presented(
            &mut win, &sync, timeline, buffer,
        ));
        // The display shows the client's buffer itself.
        let shown = scanout(&card);
        let image = shown.image.expect("a framebuffer");
        assert!(
            image.pixels.iter().all(|&p| p & 0xff_ffff == colors[i]),
            "frame {i} on screen is the client's colour {:06x}",
            colors[i]
        );
        // Several frames may flip before the client's first buffer reaches the plane; after
        // that each presentation of a client buffer is zero-copy.
        assert_ne!(
            presented[i].1 & ZERO_COPY,
            0,
            "frame {i} presented zero-copy"
        );
    }
    let log = fencegate.log();
    assert!(log.contains("drm: direct scanout"), "{log}");

    // The first buffer's release point: signalled by the kernel when the second buffer's
    // flip happened, with that flip's timestamp, not by the CPU afterwards.
    let first = &buffers[0].2.syncobj;
    wait_signalled(first, 2, GENEROUS).expect("the first buffer released");
    let release = first
        .export_sync_file(2)
        .expect("release point as a sync_file");
    let info = release.info().expect("SYNC_IOC_FILE_INFO");
    assert_eq!(info.status, FenceStatus::Signaled, "{info:?}");
    let released_at = info.fences[0]
        .timestamp
        .expect("a signalled fence has a timestamp")
        .as_nanos() as u64;
    let second_shown_at = presented[1].0;
    let gap = released_at.abs_diff(second_shown_at);
    assert!(
        gap < 1_000,
        "released at {released_at} ns, the next frame flipped at {second_shown_at} ns: the \
         release is the flip's out-fence ({info:?})"
    );
    // The second buffer is on screen: its release point has not signalled.
    assert_eq!(
        buffers[1].2.syncobj.query().expect("query"),
        1,
        "the buffer on screen is not released"
    );

    let tranche = win
        .scanout_tranche()
        .expect("the fullscreen surface's feedback has a scanout tranche");
    let card_dev = std::fs::metadata(&card).expect("card").rdev();
    assert_eq!(tranche.target_device, Some(card_dev), "{tranche:?}");
    assert!(
        tranche.formats.iter().any(|&(f, _)| f == XRGB8888),
        "{tranche:?}"
    );
    let default = &win.linux_dmabuf.info;
    assert!(
        default.feedback_done && !default.tranches.is_empty(),
        "the default feedback arrived: {default:?}"
    );
    assert!(
        default.tranches.iter().all(|t| !t.scanout),
        "the default (render) feedback has no scanout tranche: {:?}",
        default.tranches
    );
    drop(sync);
    drop(win);
    fencegate.stop();
}

/// How far a traced flip event may be from the presentation time a client got for it.
const FLIP_MATCH_NS: u64 = 2_000_000;

#[test]
fn commits_carry_an_in_fence_that_the_kernel_waits_for() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = virtio_gpu_card() else {
        return;
    };
    let trace = FenceTrace::start("in-fence").expect("a tracefs instance of our own");
    let fencegate = Fencegate::start(session, &card, "in-fence");

    // Composited frames: a window.
    let mut win = DmabufWindow::open(&fencegate.window_args(&card, (48, 48), false), "in-win")
        .expect("window");
    let (mut pixels, buffer) = win.new_buffer().expect("buffer");
    let mut composited = Vec::new();
    for color in [0x204060, 0x406080, 0x6080a0] {
        pixels.write(&solid(48, 48, color)).expect("draw");
        let (at, flags) = commit_and_wait_presented(&mut win, &buffer);
        assert_eq!(flags & ZERO_COPY, 0, "a window is composited");
        composited.push(at);
    }
    drop(win);

    // Client buffers scanned out directly: a fullscreen window.
    let mut win = DmabufWindow::open(&fencegate.window_args(&card, (64, 64), true), "in-fs")
        .expect("fullscreen window");
    let (manager, device, sync) = explicit_sync(&win, &card);
    // The in-fence fencegate puts on the plane for a client buffer, made the same way: a
    // signalled syncobj on the card exported as a sync_file. Its names are what to look for.
    let signalled = Syncobj::create_signaled(&device)
        .and_then(|s| s.export_sync_file(0))
        .expect("a signalled syncobj's sync_file");
    let signalled = signalled.info().expect("SYNC_IOC_FILE_INFO");
    eprintln!("a signalled syncobj exported as a sync_file: {signalled:?}");
    assert_eq!(signalled.fences.len(), 1, "{signalled:?}");
    let expected = &signalled.fences[0];
    let mut direct = Vec::new();
    // Kept until the end: a buffer destroyed while on screen would make fencegate composite.
    let mut kept = Vec::new();
    for (i, color) in [0xff0000, 0x00ff00, 0x0000ff].into_iter().enumerate() {
        let (mut pixels, buffer) = win.new_buffer().expect("buffer");
        let timeline = import_timeline(&win.client, &manager, &device).expect("timeline");
        pixels
            .write(&solid(win.size.0, win.size.1, color))
            .expect("draw");
        let (at, flags) = commit_signalled_and_wait_presented(&mut win, &sync, &timeline, &buffer);
        assert_ne!(
            flags & ZERO_COPY,
            0,
            "fullscreen frame {i} presented zero-copy"
        );
        direct.push(at);
        kept.push((pixels, buffer, timeline));
    }
    drop((kept, sync, win));
    let text = trace.text().expect("the trace");
    let lost = trace.lost_events().expect("the trace's stats");
    let log = fencegate.log();
    trace
        .stop()
        .expect("tracing stopped and its instance removed");
    fencegate.stop();
    assert_eq!(lost, 0, "the trace lost events");

    let events = parse_trace(&text);
    // fencegate's file: the one the flip of its first zero-copy presentation went to.
    let file = flip_file(&events, direct[0], FLIP_MATCH_NS).unwrap_or_else(|| {
        panic!(
            "no traced flip event within {FLIP_MATCH_NS} ns of the presentation at {} ns:\n{text}",
            direct[0]
        )
    });
    let commits = commit_waits(&events, &file);
    let summary = |c: &CommitWaits| {
        let waits: Vec<String> = c
            .waits
            .iter()
            .map(|(t, f)| format!("{:.3} ms before: {f}", (c.flip_ns - t) as f64 / 1e6))
            .collect();
        format!("flip at {} ns: {waits:?}", c.flip_ns)
    };
    let flip = |at: u64, what: &str| -> &CommitWaits {
        flip_at(&commits, at, FLIP_MATCH_NS).unwrap_or_else(|| {
            panic!(
                "no traced flip event within {FLIP_MATCH_NS} ns of {what} presented at {at} ns; \
                 {} flips traced, {} events",
                commits.len(),
                events.len()
            )
        })
    };
    // Fences of the device's own driver are not in-fences: virtio-gpu may wait for its own in a
    // plane update (none showed up in the guest).
    let own = "virtio_gpu";
    for (i, &at) in direct.iter().enumerate() {
        let commit = flip(at, &format!("fullscreen frame {i}"));
        let in_fences = commit.in_fences(own);
        eprintln!(
            "fullscreen frame {i} presented at {at} ns: {}",
            summary(commit)
        );
        assert!(
            in_fences
                .iter()
                .any(|f| f.driver == expected.driver_name && f.timeline == expected.timeline_name),
            "the commit that scanned out fullscreen frame {i} waited for a {}:{} fence (the \
             signalled syncobj's): {}",
            expected.driver_name,
            expected.timeline_name,
            summary(commit)
        );
    }
    // A composited frame's in-fence is the render fence: GLES gives one (an
    // EGL_ANDROID_native_fence_sync fence exported as a sync_file; llvmpipe's is the kernel's
    // stub, already signalled) unless fencegate said it cannot export it (then it waits on the
    // CPU and commits without one); pixman renders on the CPU and has none.
    let render_fence =
        log.contains("renderer gles") && !log.contains("the render fence cannot be exported");
    for (i, &at) in composited.iter().enumerate() {
        let commit = flip(at, &format!("composited frame {i}"));
        let in_fences = commit.in_fences(own);
        eprintln!(
            "composited frame {i} presented at {at} ns: {}",
            summary(commit)
        );
        if render_fence {
            assert!(
                !in_fences.is_empty(),
                "the commit of composited frame {i} waited for the render fence: {}",
                summary(commit)
            );
        }
    }
    if !render_fence {
        eprintln!("no render fence on this setup (fencegate's log):\n{log}");
    }
    let waits = events
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::FenceWaitStart(_)))
        .count();
    eprintln!(
        "{} flips and {waits} fence waits traced; {} fullscreen and {} composited frames checked",
        commits.len(),
        direct.len(),
        composited.len()
    );
}

#[test]
fn a_stuck_surface_leaves_another_clients_frames_at_full_rate() {
    let Some((fencegate, card)) = fencegate_on_virtio_gpu("stuck") else {
        return;
    };
    // The bystander draws at a steady 15 Hz, well within what the guest manages (30+ frames/s
    // alone): each frame should be presented whether a stuck surface is there or not. Unpaced,
    // the count would only measure the emulator's noise.
    let frames_in = |win: &mut DmabufWindow, buffer, period: Duration| {
        let tick = Duration::from_millis(66);
        let started = Instant::now();
        let mut times = Vec::new();
        let mut next = started;
        while started.elapsed() < period {
            times.push(commit_and_wait_presented(win, buffer).0);
            next += tick;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        assert!(
            times.windows(2).all(|t| t[0] < t[1]),
            "presentation times increase: {times:?}"
        );
        times.len()
    };
    let mut bystander = DmabufWindow::open(&fencegate.window_args(&card, (48, 48), false), "by")
        .expect("bystander");
    let (mut pixels, buffer) = bystander.new_buffer().expect("buffer");
    pixels.write(&solid(48, 48, 0x00ff00)).expect("draw");
    let period = Duration::from_secs(3);
    // The first frames pay for Mesa's start-up and the first modeset: not counted.
    frames_in(&mut bystander, &buffer, Duration::from_secs(2));
    let alone = frames_in(&mut bystander, &buffer, period);

    // A second client commits with an acquire point that never signals.
    let mut stuck = DmabufWindow::open(&fencegate.window_args(&card, (48, 48), false), "stuck")
        .expect("stuck window");
    let (manager, device, sync) = explicit_sync(&stuck, &card);
    let (mut stuck_pixels, stuck_buffer) = stuck.new_buffer().expect("buffer");
    stuck_pixels.write(&solid(48, 48, 0xff0000)).expect("draw");
    let timeline = import_timeline(&stuck.client, &manager, &device).expect("timeline");
    points_1_and_2(&sync, &timeline);
    stuck.commit(&stuck_buffer).expect("commit");
    stuck.client.roundtrip().expect("roundtrip");

    let beside = frames_in(&mut bystander, &buffer, period);
    eprintln!("bystander frames in {period:?}: {alone} alone, {beside} beside a stuck surface");
    assert!(
        beside * 100 >= alone * 85,
        "{beside} frames beside a stuck surface, {alone} alone"
    );
    // The stuck buffer never reached the screen.
    let image = scanout(&card).image.expect("framebuffer");
    assert!(
        !image.pixels.iter().any(|&p| p & 0xff_ffff == 0xff0000),
        "a buffer whose acquire point never signalled is not shown"
    );
    drop((sync, stuck, bystander));
    fencegate.stop();
}

#[test]
fn a_client_leaving_with_a_pending_fence_leaves_nothing_behind() {
    let Some((fencegate, card)) = fencegate_on_virtio_gpu("leak") else {
        return;
    };
    let pid = fencegate.pid();
    // A first client and its goodbye settle whatever fencegate opens once (EGL, caches).
    let one_client = |color: u32, leave_pending: bool| {
        let mut win = DmabufWindow::open(&fencegate.window_args(&card, (32, 32), true), "leak")
            .expect("window");
        let (manager, device, sync) = explicit_sync(&win, &card);
        let timeline = import_timeline(&win.client, &manager, &device).expect("timeline");
        let (mut pixels, buffer) = win.new_buffer().expect("buffer");
        pixels
            .write(&solid(win.size.0, win.size.1, color))
            .expect("draw");
        commit_signalled_and_wait_presented(&mut win, &sync, &timeline, &buffer);
        if leave_pending {
            // The next commit waits on a point that never signals; then the client is gone.
            let (mut pixels, buffer) = win.new_buffer().expect("buffer");
            pixels
                .write(&solid(win.size.0, win.size.1, !color))
                .expect("draw");
            let pending = import_timeline(&win.client, &manager, &device).expect("timeline");
            points_1_and_2(&sync, &pending);
            win.commit(&buffer).expect("commit");
            win.client.roundtrip().expect("roundtrip");
        }
        drop(win); // the connection closes without destroying anything
    };
    let count = || {
        (
            open_fds(pid).expect("fencegate's fds").len(),
            read_framebuffers(&card)
                .expect("debugfs framebuffers")
                .len(),
            dma_buf_count().expect("dma-bufs"),
            handle_counts(pid),
        )
    };
    one_client(0x112233, false);
    // Back to compositing (no window): a frame of fencegate's own.
    eventually("the screen back to fencegate's frame", || {
        scanout(&card)
            .image
            .is_some_and(|image| image.rgb(0, 0) != 0x112233)
    });
    let before = count();
    let fds_before = open_fds(pid).expect("fencegate's fds");
    let handles_before = drm_handles(pid).expect("fencegate's GEM and syncobj handles");
    for i in 0..3 {
        one_client(0x400000 * (i + 1), true);
    }
    eventually("fencegate back to its own frame", || {
        scanout(&card)
            .image
            .is_some_and(|image| image.rgb(0, 0) & 0xff0000 == image.rgb(1, 1) & 0xff0000)
    });
    // Releases and closes may trail the disconnect by a frame or two.
    let deadline = Instant::now() + GENEROUS;
    while count() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let handles_after = drm_handles(pid).expect("fencegate's GEM and syncobj handles");
    eprintln!(
        "fencegate's (fds, framebuffers, dma-bufs, (GEM, syncobj) handles per DRM fd): \
         {before:?} before, {:?} after\nhandles before: {handles_before}\nhandles after: \
         {handles_after}",
        count()
    );
    let fds_after = open_fds(pid).expect("fencegate's fds");
    let new: Vec<_> = fds_after
        .iter()
        .filter(|fd| !fds_before.contains(fd))
        .collect();
    let gone: Vec<_> = fds_before
        .iter()
        .filter(|fd| !fds_after.contains(fd))
        .collect();
    assert_eq!(
        count(),
        before,
        "(fds, framebuffers, dma-bufs, handles) as before; fds new {new:?}, gone {gone:?}; \
         handles: {:?}",
        handles_after.changes_since(&handles_before)
    );
    fencegate.stop();
}

#[test]
fn an_unplugged_output_is_turned_off_and_back_on() {
    let Some((fencegate, card)) = fencegate_on_virtio_gpu("hotplug") else {
        return;
    };
    let status = Path::new("/sys/class/drm/card0-Virtual-1/status");
    assert!(status.exists(), "virtio-gpu's connector in sysfs");
    let crtc_active = || {
        read_atomic_state(&card)
            .expect("debugfs state")
            .crtcs
            .iter()
            .any(|c| c.active)
    };
    assert!(crtc_active());
    // Forcing the connector's status changes what a probe sees; the kernel sends no uevent for
    // a forced status, so the change event a real unplug sends is synthesised with udevadm.
    let hotplug = |state: &str| {
        std::fs::write(status, state).expect("forcing the connector");
        let ok = std::process::Command::new("udevadm")
            .args(["trigger", "--action=change", "/sys/class/drm/card0"])
            .status()
            .expect("udevadm")
            .success();
        assert!(ok);
    };
    hotplug("off");
    eventually("the CRTC off", || !crtc_active());
    eventually("the log to say so", || {
        fencegate.log().contains("drm: output disconnected")
    });
    hotplug("on");
    eventually("the CRTC on again", crtc_active);
    std::fs::write(status, "detect").expect("unforcing the connector");
    assert!(fencegate.log().contains("drm: output connected"));
    // A client still gets its frames on the output that came back.
    let mut win = DmabufWindow::open(&fencegate.window_args(&card, (32, 32), false), "after")
        .expect("window");
    let (mut pixels, buffer) = win.new_buffer().expect("buffer");
    pixels.write(&solid(32, 32, 0x00ffff)).expect("draw");
    commit_and_wait_presented(&mut win, &buffer);
    drop(win);
    fencegate.stop();
}

#[test]
fn a_vt_switch_pauses_and_resumes_the_session() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = virtio_gpu_card() else {
        return;
    };
    let active_vt = || std::fs::read_to_string("/sys/class/tty/tty0/active").unwrap_or_default();
    assert_eq!(
        active_vt().trim(),
        "tty1",
        "the seat's VT is the active one"
    );
    let fencegate = Fencegate::start(session, &card, "vt");
    let pid = fencegate.pid();
    let size = (40, 40);
    let mut win =
        DmabufWindow::open(&fencegate.window_args(&card, size, false), "vt").expect("window");
    let (mut pixels, buffer) = win.new_buffer().expect("buffer");
    pixels
        .write(&solid(size.0, size.1, 0xffff00))
        .expect("draw");
    commit_and_wait_presented(&mut win, &buffer);
    let count = || {
        (
            open_fds(pid).expect("fencegate's fds").len(),
            read_framebuffers(&card)
                .expect("debugfs framebuffers")
                .len(),
            handle_counts(pid),
        )
    };
    let before = count();
    let handles_before = drm_handles(pid).expect("fencegate's GEM and syncobj handles");

    chvt("2");
    eventually("the session paused", || {
        fencegate.log().contains("drm: session paused")
    });
    chvt("1");
    eventually("the session resumed", || {
        fencegate.log().contains("drm: session resumed")
    });
    // The same surface and buffer, new content: shown after the resume.
    pixels
        .write(&solid(size.0, size.1, 0xff00ff))
        .expect("draw");
    commit_and_wait_presented(&mut win, &buffer);
    eventually("the new content on screen", || {
        scanout(&card).image.is_some_and(|image| {
            image
                .pixels
                .iter()
                .filter(|&&p| p & 0xff_ffff == 0xff00ff)
                .count()
                == (size.0 * size.1) as usize
        })
    });
    let deadline = Instant::now() + GENEROUS;
    while count() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let handles_after = drm_handles(pid).expect("fencegate's GEM and syncobj handles");
    eprintln!(
        "fencegate's (fds, framebuffers, (GEM, syncobj) handles per DRM fd): {before:?} \
         before the VT switch, {:?} after\nhandles before: {handles_before}\nhandles after: \
         {handles_after}",
        count()
    );
    assert_eq!(
        count(),
        before,
        "(fds, framebuffers, handles) as before the VT switch; handles: {:?}",
        handles_after.changes_since(&handles_before)
    );
    drop(win);
    fencegate.stop();
}

#[test]
fn pending_client_fences_get_the_next_vblank_as_deadline() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = virtio_gpu_card() else {
        return;
    };
    // The client's acquire fences are vgem fences, signalled 400 ms after each commit.
    let Some(_vgem) = common::vgem_card() else {
        return;
    };
    let trace = session.log_dir.join("deadline.strace");
    let socket = session.runtime_dir.join("fencegate-deadline");
    let mut child = SeatedCommand::new("fencegate-deadline", "strace")
        .args(["-f", "-e", "trace=ioctl", "-o"])
        .arg(&trace)
        .arg(fencegate_bin())
        .args(["--backend", "drm", "--drm-device"])
        .arg(&card)
        .arg("--socket")
        .arg(&socket)
        .arg("--")
        .arg(common::client_bin("explicit-sync-v1-client"))
        .args(["--frames", "3", "--acquire-delay-ms", "400", "--device"])
        .arg(&card)
        .spawn(session);
    let status = child.wait_timeout(GENEROUS * 4);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the client's run:\n{}",
        child.output()
    );
    assert!(
        child.stdout().contains("frame 2 shown"),
        "{}",
        child.output()
    );
    // SYNC_IOC_SET_DEADLINE = _IOW('>', 5, struct sync_set_deadline): strace names it, or
    // spells out the number where its tables predate Linux 6.5.
    let calls = std::fs::read_to_string(&trace).expect("strace's log");
    let deadlines: Vec<&str> = calls
        .lines()
        .filter(|l| {
            l.contains("SYNC_IOC_SET_DEADLINE") || l.contains("_IOC(_IOC_WRITE, 0x3e, 0x5, 0x10)")
        })
        .collect();
    eprintln!("SYNC_IOC_SET_DEADLINE calls: {}", deadlines.len());
    assert!(
        deadlines.iter().any(|l| l.trim_end().ends_with("= 0")),
        "fencegate set a deadline on a pending acquire fence, and the kernel took it: {deadlines:?}"
    );
}

/// A connector's status forced through sysfs (`on`, `off`) until dropped, then probed again.
struct ForcedStatus(&'static Path);

impl ForcedStatus {
    fn new(status: &'static Path, state: &str) -> ForcedStatus {
        std::fs::write(status, state).expect("forcing the connector");
        ForcedStatus(status)
    }
}

impl Drop for ForcedStatus {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, "detect");
    }
}

#[test]
fn every_connected_output_is_driven_on_its_own() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = virtio_gpu_card() else {
        return;
    };
    let second = Path::new("/sys/class/drm/card0-Virtual-2/status");
    assert!(
        second.exists(),
        "a second virtio-gpu connector (the guest's virtio-gpu has max_outputs=2)"
    );
    // QEMU without a display enables only its first scanout: the second starts unplugged and
    // is plugged in by force, with the change event a real plug sends synthesised.
    // Declared before fencegate, so it is unforced after fencegate is gone.
    let _forced = ForcedStatus::new(second, "off");
    let fencegate = Fencegate::start(session, &card, "outputs");
    let showing = || {
        read_scanouts_at(&card)
            .expect("reading the scanouts back")
            .into_iter()
            .filter_map(|s| s.image.map(|image| (s.crtc, image)))
            .collect::<Vec<_>>()
    };
    eventually("a CRTC scanning out fencegate's frames", || {
        showing().len() == 1
    });
    std::fs::write(second, "on").expect("plugging the second connector in");
    let ok = std::process::Command::new("udevadm")
        .args(["trigger", "--action=change", "/sys/class/drm/card0"])
        .status()
        .expect("udevadm")
        .success();
    assert!(ok);
    eventually("two CRTCs scanning out fencegate's frames", || {
        showing().len() == 2
    });
    assert!(fencegate.log().contains("drm: new output connected"));

    // A fullscreen dma-buf on the second output is scanned out there, while a window on the
    // first is composited there.
    let mut args = fencegate.window_args(&card, (64, 64), false);
    args.fullscreen_on = Some("Virtual-2".into());
    let mut fullscreen = DmabufWindow::open(&args, "on-virtual-2").expect("fullscreen window");
    let outputs = &fullscreen.client.state.outputs;
    let mode_of = |name: &str| {
        let info = outputs
            .iter()
            .find(|o| o.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("wl_output {name} among {outputs:?}"));
        let (w, h) = info.mode_size.expect("a current mode");
        (w as u32, h as u32)
    };
    let (first_mode, second_mode) = (mode_of("Virtual-1"), mode_of("Virtual-2"));
    assert_ne!(
        first_mode, second_mode,
        "the outputs are told apart by their sizes below"
    );
    assert_eq!(
        fullscreen.size, second_mode,
        "fullscreen at Virtual-2's size"
    );
    let (mut pixels, buffer) = fullscreen.new_buffer().expect("buffer");
    let full_color = 0x00cc66;
    pixels
        .write(&solid(second_mode.0, second_mode.1, full_color))
        .expect("draw");
    let (_, flags) = commit_and_wait_presented(&mut fullscreen, &buffer);
    assert_ne!(flags & ZERO_COPY, 0, "scanned out directly on Virtual-2");

    let mut window =
        DmabufWindow::open(&fencegate.window_args(&card, (96, 64), false), "on-1").expect("window");
    let (mut pixels, window_buffer) = window.new_buffer().expect("buffer");
    let window_color = 0xcc3366;
    pixels.write(&solid(96, 64, window_color)).expect("draw");
    let (_, flags) = commit_and_wait_presented(&mut window, &window_buffer);
    assert_eq!(flags & ZERO_COPY, 0, "a window is composited");

    let shown = showing();
    let (first, second) = (on_mode(&shown, first_mode), on_mode(&shown, second_mode));
    assert_eq!(
        count(first, window_color),
        96 * 64,
        "the window on Virtual-1"
    );
    assert_eq!(
        count(first, full_color),
        0,
        "nothing of the other output's client"
    );
    assert_eq!(
        count(second, full_color),
        (second_mode.0 * second_mode.1) as usize,
        "the fullscreen client's buffer on Virtual-2"
    );
    assert_ne!(shown[0].0, shown[1].0, "two CRTCs");

    // A window across both outputs is composited by both: its buffer's release waits for
    // both outputs' render fences, merged, and comes once the next buffer replaces it.
    let wide = (first_mode.0 + 60, 48);
    let mut across =
        DmabufWindow::open(&fencegate.window_args(&card, wide, false), "across").expect("window");
    let (manager, device, sync) = explicit_sync(&across, &card);
    let across_color = 0x3399ff;
    let mut buffers = Vec::new();
    for _ in 0..2 {
        let (mut pixels, buffer) = across.new_buffer().expect("buffer");
        pixels
            .write(&solid(wide.0, wide.1, across_color))
            .expect("draw");
        let timeline = import_timeline(&across.client, &manager, &device).expect("timeline");
        buffers.push((buffer, timeline));
    }
    across.client.roundtrip().expect("imports accepted");
    for (buffer, timeline) in &buffers {
        commit_signalled_and_wait_presented(&mut across, &sync, timeline, buffer);
        let shown = showing();
        let on_each = [on_mode(&shown, first_mode), on_mode(&shown, second_mode)]
            .map(|image| count(image, across_color));
        assert!(
            on_each.iter().all(|&n| n > 0)
                && on_each.iter().sum::<usize>() == (wide.0 * wide.1) as usize,
            "the window's pixels split across the outputs: {on_each:?}"
        );
    }
    wait_signalled(&buffers[0].1.syncobj, 2, GENEROUS)
        .expect("the first buffer released after both outputs' frames");
    assert_eq!(
        buffers[1].1.syncobj.query().expect("query"),
        1,
        "the buffer on screen is not released"
    );
    let log = fencegate.log();
    assert!(!log.contains("merging release fences failed"), "{log}");
    drop(sync);
    drop(across);
    drop(window);
    drop(fullscreen);
    fencegate.stop();
}

/// The image of the CRTC in `shown` whose mode is `mode`.
fn on_mode(shown: &[(u32, FramebufferImage)], mode: (u32, u32)) -> &FramebufferImage {
    shown
        .iter()
        .find(|(_, image)| (image.width, image.height) == mode)
        .map(|(_, image)| image)
        .unwrap_or_else(|| panic!("a CRTC showing {mode:?}"))
}

/// How many pixels of `image` are `color` (RGB).
fn count(image: &FramebufferImage, color: u32) -> usize {
    image
        .pixels
        .iter()
        .filter(|&&p| p & 0xff_ffff == color)
        .count()
}

/// vkms honours a framebuffer's implicit fences (virtio-gpu does not): a client buffer scanned
/// out directly is flipped with fencegate's already signalled `IN_FENCE_FD`, which switches the
/// kernel's wait for the buffer's implicit fences off. The client's buffer carries a pending
/// write fence (a vgem fence imported into it) unrelated to the frame; the client syncs
/// explicitly (zwp_linux_explicit_synchronization_v1, with a signalled acquire fence), and the
/// frame flips while that implicit fence is still pending. Without the in-fence the flip would
/// wait for it (`fence_bridge`'s kernel_vkms shows both halves on bare KMS) until vgem's own
/// timeout, about 10 s.
#[test]
fn a_signalled_in_fence_keeps_implicit_fences_from_holding_a_scanout_on_vkms() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = vkms_card() else {
        return;
    };
    let Some(vgem) = vgem_card() else {
        return;
    };
    let fencegate = Fencegate::start(session, &card, "vkms-implicit");
    let log = fencegate.log();
    assert!(
        !log.contains("no signalled fence for direct scanout"),
        "fencegate makes its signalled fence on vkms (no syncobjs there):\n{log}"
    );
    let mut win = DmabufWindow::open(&fencegate.window_args(&card, (64, 64), true), "vkms-fs")
        .expect("fullscreen window");
    let manager: ZwpLinuxExplicitSynchronizationV1 = win
        .client
        .bind_global(2, IgnoreEvents)
        .expect("zwp_linux_explicit_synchronization_v1");
    let sync = manager.get_synchronization(&win.surface, win.client.qh(), IgnoreEvents);

    let (mut pixels, buffer) = win.new_buffer().expect("buffer");
    let color = 0x996633;
    pixels
        .write(&solid(win.size.0, win.size.1, color))
        .expect("draw");
    // Someone else's pending write on the buffer: an implicit fence the frame does not need.
    let mut writer = PendingFence::new(&vgem);
    let dmabuf = DmaBuf::new(pixels.dmabuf().as_fd());
    dmabuf
        .import_sync_file(&writer.sync_file, Access::Write)
        .expect("DMA_BUF_IOCTL_IMPORT_SYNC_FILE");
    let implicit = dmabuf
        .export_sync_file(Access::Read)
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    assert!(
        !implicit.is_signaled().unwrap(),
        "the buffer has a pending writer"
    );

    let acquire = signalled_sync_file(&vgem);
    sync.set_acquire_fence(acquire.as_fd());
    let committed = Instant::now();
    let (_, flags) = commit_and_wait_presented(&mut win, &buffer);
    let latency = committed.elapsed();
    assert_ne!(flags & ZERO_COPY, 0, "scanned out directly");
    assert!(
        !implicit.is_signaled().unwrap(),
        "the frame flipped while the buffer's implicit write fence was pending (after {latency:?})"
    );
    assert!(
        latency < Duration::from_secs(5),
        "presented {latency:?} after the commit: vgem's ~10 s timeout did not release it"
    );
    // Before vgem's timeout signals it (reading the screen back below takes seconds in TCG).
    writer.signal();
    let shown = scanout(&card);
    let image = shown.image.expect("a framebuffer");
    assert!(
        image.pixels.iter().all(|&p| p & 0xff_ffff == color),
        "the client's buffer is on screen"
    );
    eprintln!("vkms: a scanout over a pending implicit fence presented {latency:?} after commit");
    drop(sync);
    drop(win);
    fencegate.stop();
}

/// Lines of a fence trace as the guest's 6.12 kernel writes them (`common::fence_trace`); the
/// `virtio_gpu` wait is made up (none showed up in the guest), to be left out of the in-fences.
#[test]
fn parses_fence_and_flip_trace_lines_of_linux_6_12() {
    let text = "\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
     kworker/1:1-46      [001] d..1.    10.774081: drm_vblank_event_delivered: file=0000000000000000, crtc=0, seq=0
    kworker/u8:0-12      [001] .....    24.077660: dma_fence_wait_start: driver=stub timeline=stub context=0 seqno=0
    kworker/u8:0-12      [001] .....    24.077680: dma_fence_wait_end: driver=stub timeline=stub context=0 seqno=0
    kworker/u8:0-12      [001] d..1.    24.077823: drm_vblank_event_delivered: file=0000000014f59e65, crtc=0, seq=0
    kworker/u8:0-12      [001] .....    24.100000: dma_fence_wait_start: driver=virtio_gpu timeline=controlq context=5 seqno=9
    kworker/u8:0-12      [001] d..1.    24.107727: drm_vblank_event_delivered: file=0000000014f59e65, crtc=0, seq=0
    kworker/u8:0-12      [001] .....    24.133417: dma_fence_wait_start: driver=stub timeline=stub context=0 seqno=0
";
    let events = parse_trace(text);
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events[0].task, "kworker/1:1-46");
    assert_eq!(events[1].time_ns, 24_077_660_000);
    assert_eq!(
        events[3].kind,
        TraceKind::VblankDelivered {
            file: "0000000014f59e65".into(),
            crtc: 0,
            seq: 0
        }
    );
    let TraceKind::FenceWaitStart(stub) = &events[1].kind else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(
        (stub.driver.as_str(), stub.timeline.as_str()),
        ("stub", "stub")
    );

    let file = flip_file(&events, 24_077_817_000, FLIP_MATCH_NS).expect("a flip near");
    assert_eq!(file, "0000000014f59e65");
    assert_eq!(flip_file(&events, 30_000_000_000, FLIP_MATCH_NS), None);
    // fbcon's flip (file 0) does not split fencegate's commits; the wait after the last flip
    // belongs to no flip yet.
    let commits = commit_waits(&events, &file);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert_eq!(commits[0].previous_flip_ns, 0);
    assert_eq!(commits[0].in_fences("virtio_gpu"), [stub]);
    assert_eq!(commits[1].waits.len(), 1);
    assert!(commits[1].in_fences("virtio_gpu").is_empty());
    let second = flip_at(&commits, 24_107_720_000, FLIP_MATCH_NS).expect("the second flip");
    assert_eq!(second.previous_flip_ns, 24_077_823_000);
}

/// Input through the session: a virtual keyboard and mouse (uinput), found by udev, opened by
/// libinput through seatd. Moving the mouse over a window gives its client `wl_pointer.enter`,
/// a key reaches the focused client as `wl_keyboard.key`, and Ctrl+Alt+F2 switches VT (the
/// session pauses; `chvt 1` brings it back).
#[test]
fn a_keyboard_and_mouse_reach_clients_and_switch_vt() {
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let Some(card) = virtio_gpu_card() else {
        return;
    };
    let fencegate = Fencegate::start(session, &card, "input");
    let mut input = VirtualInput::new("fencegate test keyboard and mouse").expect("uinput");
    let mut win = DmabufWindow::open(&fencegate.window_args(&card, (96, 64), false), "input")
        .expect("window");
    let (mut pixels, buffer) = win.new_buffer().expect("buffer");
    pixels.write(&solid(96, 64, 0x6699cc)).expect("draw");
    commit_and_wait_presented(&mut win, &buffer);

    let (seat_log, pointer_log, keyboard_log) = (EventLog::new(), EventLog::new(), EventLog::new());
    let seat: WlSeat = win
        .client
        .bind_global(7, seat_log.clone())
        .expect("wl_seat");
    win.client
        .dispatch_until(GENEROUS, "the seat's capabilities", |_| {
            seat_log.contains("Capabilities")
        })
        .expect("capabilities");
    let _pointer = seat.get_pointer(win.client.qh(), pointer_log.clone());
    let _keyboard = seat.get_keyboard(win.client.qh(), keyboard_log.clone());
    win.client.roundtrip().expect("roundtrip");

    // The pointer starts at the top-left corner; the window is at the cascade's first place.
    let deadline = Instant::now() + GENEROUS;
    while !pointer_log.contains("Enter") {
        assert!(
            Instant::now() < deadline,
            "no wl_pointer.enter: {:?}\n{}",
            pointer_log.events(),
            fencegate.log()
        );
        input.move_by(8, 8).expect("moving the mouse");
        let _ = win
            .client
            .dispatch_until(Duration::from_millis(200), "pointer", |_| {
                pointer_log.contains("Enter")
            });
    }

    input.chord(&[KEY_A]).expect("typing a");
    win.client
        .dispatch_until(GENEROUS, "the key", |_| keyboard_log.contains("key: 30"))
        .unwrap_or_else(|err| panic!("{err}: {:?}", keyboard_log.events()));

    input
        .chord(&[KEY_LEFTCTRL, KEY_LEFTALT, KEY_F2])
        .expect("Ctrl+Alt+F2");
    eventually("the session paused by Ctrl+Alt+F2", || {
        fencegate.log().contains("drm: session paused")
    });
    chvt("1");
    eventually("the session resumed", || {
        fencegate.log().contains("drm: session resumed")
    });
    drop(input);
    drop(win);
    fencegate.stop();
}
