//! `misbehave --scenario NAME`: a linux-drm-syncobj-v1 (or, `v1-` scenarios,
//! zwp_linux_explicit_synchronization_v1) client that breaks one rule (or tries a compositor's
//! patience) and checks that the compositor answers as documented: the exact
//! protocol error, or the documented absence of one ("surface frozen", "released anyway").
//! `--list` prints every scenario and its documented response ([`catalog`]).
//!
//! [`run`] returns an [`Outcome`]: what was observed and whether it is what the scenario
//! documents. The binary exits 0 when it is, 1 when it is not, 2 when the scenario could not
//! run (bad arguments, no compositor, no device).

pub mod catalog;

use std::fmt;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use fence_bridge::DrmDevice;
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;

pub use catalog::{list, Expected, Scenario};

use crate::allocator::PixelBuffer;
use crate::dmabuf_window::DmabufWindow;
use crate::explicit_sync_v1_client::ReleaseSlot;
use crate::fence_worker::FenceWorker;
use crate::options::{parse_size, AllocatorChoice, DmabufWindowArgs};
use crate::paint::solid;
use crate::syncobj_timeline::{
    bind_manager, import_timeline, is_signalled, open_timeline_device, set_points, wait_signalled,
    Timeline,
};
use crate::vgem::{signalled_sync_file, PendingFence};
use crate::{drm_nodes, Client, IgnoreEvents, Timeout};

/// The client's name.
pub const NAME: &str = "misbehave";
/// The first buffer every two-buffer scenario shows.
pub const FIRST_COLOR: u32 = 0xff0000;
/// The second buffer (the one whose acquire point misbehaves; flood-commits' last).
pub const SECOND_COLOR: u32 = 0x0000ff;
/// What rewrites-before-release draws into the buffer on screen.
pub const REWRITE_COLOR: u32 = 0x00ff00;

/// `wl_display.error.implementation`.
const WL_DISPLAY_IMPLEMENTATION: u32 = 3;
/// How long a protocol error, frame callback or due release may take (the guest is slow).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Break one rule of linux-drm-syncobj-v1 (or zwp_linux_explicit_synchronization_v1) and check
/// the compositor's answer.
#[derive(Parser, Clone, Debug)]
#[command(
    name = NAME,
    version,
    after_help = "Exit status: 0 the compositor answered as documented (see --list), \
                  1 it did not, 2 the scenario could not run."
)]
pub struct Args {
    /// The misbehaviour (see --list).
    #[arg(long, value_enum, required_unless_present = "list")]
    pub scenario: Option<Scenario>,

    /// Print every scenario with what it does and the documented response, and exit.
    #[arg(long)]
    pub list: bool,

    /// Wayland display: a socket name in $XDG_RUNTIME_DIR or an absolute path (default: the
    /// environment, as libwayland).
    #[arg(long, value_name = "NAME")]
    pub display: Option<String>,

    /// DRM node to use instead of linux-dmabuf's main device.
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,

    /// Where the dma-bufs come from.
    #[arg(long, value_enum, default_value_t = AllocatorChoice::Auto)]
    pub allocator: AllocatorChoice,

    /// Buffer size WxH.
    #[arg(long, default_value = "32x32", value_parser = parse_size)]
    pub size: (u32, u32),

    /// How long to watch for an answer that should not come (a frame callback for a held
    /// commit), or for a due release point.
    #[arg(long, value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub hold_ms: u64,

    /// signals-late: when the acquire point is signalled, after the commit.
    #[arg(long, value_name = "MS", default_value_t = 2500,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub late_ms: u64,

    /// flood-commits: how many commits.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub commits: u32,
}

/// What a scenario observed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// What the compositor did, in words.
    pub observed: String,
    /// Whether that is the documented response.
    pub as_expected: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}\n  expected: {}\n  observed: {}",
            self.scenario.name(),
            if self.as_expected {
                "as documented"
            } else {
                "NOT as documented"
            },
            self.scenario.response(),
            self.observed
        )
    }
}

/// Runs `args.scenario` against the compositor.
pub fn run(args: &Args) -> anyhow::Result<Outcome> {
    let Some(scenario) = args.scenario else {
        bail!("no --scenario given (see --list)");
    };
    let (as_expected, observed) = match scenario {
        Scenario::NotATimeline => not_a_timeline(args)?,
        Scenario::V1RewritesBeforeRelease => v1_rewrites_before_release(args)?,
        _ => {
            let mut stage = Stage::open(args)?;
            match scenario {
                Scenario::NeverSignals => never_signals(&mut stage, args)?,
                Scenario::SignalsLate => signals_late(&mut stage, args)?,
                Scenario::RewritesBeforeRelease => rewrites_before_release(&mut stage)?,
                Scenario::PointsWithoutBuffer => points_without_buffer(&mut stage)?,
                Scenario::BufferWithoutPoints => buffer_without_points(&mut stage)?,
                Scenario::AcquireNotBeforeRelease => acquire_not_before_release(&mut stage)?,
                Scenario::DestroyWithPointsPending => destroy_with_points_pending(stage, args)?,
                Scenario::DisconnectWithPointsPending => {
                    disconnect_with_points_pending(stage, args)?
                }
                Scenario::FloodCommits => flood_commits(&mut stage, args)?,
                Scenario::NotATimeline | Scenario::V1RewritesBeforeRelease => {
                    unreachable!("handled above")
                }
            }
        }
    };
    Ok(Outcome {
        scenario,
        observed,
        as_expected,
    })
}

// --- what the compositor said --------------------------------------------------------------

/// What came back while listening.
#[derive(Debug)]
enum Heard {
    /// A protocol error: (interface, code, message).
    ProtocolError(String, u32, String),
    /// The connection closed without a protocol error.
    Disconnected(String),
    /// The awaited condition came true.
    Condition,
    /// Nothing until the time ran out.
    Nothing,
}

impl fmt::Display for Heard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Heard::ProtocolError(interface, code, message) => {
                let name = catalog::error_name(interface, *code)
                    .map_or_else(String::new, |n| format!(" {n}"));
                write!(f, "protocol error{name} ({code}) on {interface}: {message}")
            }
            Heard::Disconnected(why) => write!(f, "disconnected without a protocol error ({why})"),
            Heard::Condition => write!(f, "the awaited event"),
            Heard::Nothing => write!(f, "nothing"),
        }
    }
}

/// Sends what is queued and dispatches for up to `within` until `cond` holds, an error
/// arrives, or the connection closes.
fn listen(
    client: &mut Client,
    within: Duration,
    cond: impl FnMut(&crate::ClientState) -> bool,
) -> Heard {
    let _ = client.flush();
    match client.dispatch_until(within, "the compositor's answer", cond) {
        Ok(()) => Heard::Condition,
        Err(err) if err.is::<Timeout>() => Heard::Nothing,
        Err(err) => match client.protocol_error() {
            Some(pe) => Heard::ProtocolError(pe.object_interface, pe.code, pe.message),
            None => Heard::Disconnected(format!("{err:#}")),
        },
    }
}

/// (as expected, observed) for a scenario that expects a protocol error.
fn judge_error(scenario: Scenario, heard: Heard) -> (bool, String) {
    let Expected::ProtocolError {
        interface, code, ..
    } = scenario.expected()
    else {
        unreachable!("only for scenarios that expect an error");
    };
    let matches = matches!(&heard, Heard::ProtocolError(i, c, _) if i == interface && *c == code);
    let observed = match heard {
        Heard::Nothing => format!("no protocol error within {ANSWER_TIMEOUT:?}"),
        other => other.to_string(),
    };
    (matches, observed)
}

// --- the shared setup ----------------------------------------------------------------------

/// A configured window with a syncobj surface, a timeline device and an allocator.
struct Stage {
    win: DmabufWindow,
    manager: WpLinuxDrmSyncobjManagerV1,
    device: DrmDevice,
    sync: WpLinuxDrmSyncobjSurfaceV1,
}

/// The window every scenario draws in.
fn open_window(args: &Args) -> anyhow::Result<DmabufWindow> {
    let window_args = DmabufWindowArgs {
        display: args.display.clone(),
        size: args.size,
        color: None,
        frames: None,
        buffers: 2,
        device: args.device.clone(),
        allocator: args.allocator,
        title: args.scenario.map(|s| format!("{NAME} {}", s.name())),
        fullscreen: false,
        fullscreen_on: None,
    };
    DmabufWindow::open(&window_args, NAME)
}

impl Stage {
    fn open(args: &Args) -> anyhow::Result<Stage> {
        let win = open_window(args)?;
        let manager = bind_manager(&win.client)?;
        let (device, _) = open_timeline_device(args.device.as_deref(), win.device.as_ref())?;
        let sync = manager.get_surface(&win.surface, win.client.qh(), IgnoreEvents);
        Ok(Stage {
            win,
            manager,
            device,
            sync,
        })
    }

    fn timeline(&self) -> anyhow::Result<Timeline> {
        import_timeline(&self.win.client, &self.manager, &self.device)
    }

    /// A new buffer filled with `color`.
    fn buffer(&mut self, color: u32) -> anyhow::Result<(PixelBuffer, WlBuffer)> {
        let (mut pixels, buffer) = self.win.new_buffer()?;
        let (w, h) = self.win.size;
        pixels.write(&solid(w, h, color))?;
        Ok((pixels, buffer))
    }

    /// Commits `buffer` with acquire `acquire` (signalled first if `signal`) and release
    /// `release` on `timeline`; returns the frame count to wait past.
    fn commit(
        &mut self,
        buffer: &WlBuffer,
        timeline: &Timeline,
        (acquire, release): (u64, u64),
        signal: bool,
    ) -> anyhow::Result<u32> {
        if signal {
            timeline
                .syncobj
                .signal_point(acquire)
                .context("signalling an acquire point")?;
        }
        let tl = &timeline.object;
        set_points(&self.sync, Some((tl, acquire)), Some((tl, release)));
        self.win.commit(buffer)
    }

    /// Commits `buffer` already acquired and waits until it is shown.
    fn show(
        &mut self,
        buffer: &WlBuffer,
        timeline: &Timeline,
        points: (u64, u64),
    ) -> anyhow::Result<()> {
        let before = self.commit(buffer, timeline, points, true)?;
        self.win
            .wait_frame(before, ANSWER_TIMEOUT)
            .context("a correctly synced first buffer was not shown")?;
        Ok(())
    }

    fn frames(&self) -> u32 {
        self.win.client.state.windows[self.win.window.0].frames_done
    }
}

fn points_without_buffer(stage: &mut Stage) -> anyhow::Result<(bool, String)> {
    let tl = stage.timeline()?;
    set_points(&stage.sync, Some((&tl.object, 1)), Some((&tl.object, 2)));
    stage.win.surface.commit();
    let heard = listen(&mut stage.win.client, ANSWER_TIMEOUT, |_| false);
    Ok(judge_error(Scenario::PointsWithoutBuffer, heard))
}

fn buffer_without_points(stage: &mut Stage) -> anyhow::Result<(bool, String)> {
    let (_pixels, buffer) = stage.buffer(FIRST_COLOR)?;
    stage.win.commit(&buffer)?;
    let heard = listen(&mut stage.win.client, ANSWER_TIMEOUT, |_| false);
    Ok(judge_error(Scenario::BufferWithoutPoints, heard))
}

fn acquire_not_before_release(stage: &mut Stage) -> anyhow::Result<(bool, String)> {
    let (_pixels, buffer) = stage.buffer(FIRST_COLOR)?;
    let tl = stage.timeline()?;
    // Signalled, so a compositor that wrongly accepts it shows the buffer (observed below).
    stage.commit(&buffer, &tl, (2, 2), true)?;
    let heard = listen(&mut stage.win.client, ANSWER_TIMEOUT, |_| false);
    Ok(judge_error(Scenario::AcquireNotBeforeRelease, heard))
}

fn not_a_timeline(args: &Args) -> anyhow::Result<(bool, String)> {
    let mut client = match &args.display {
        Some(name) => Client::connect_to(name)?,
        None => Client::connect_env()?,
    };
    let manager = bind_manager(&client)?;
    let not_a_syncobj = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let _timeline = manager.import_timeline(not_a_syncobj.as_fd(), client.qh(), IgnoreEvents);
    let heard = listen(&mut client, ANSWER_TIMEOUT, |_| false);
    Ok(judge_error(Scenario::NotATimeline, heard))
}

fn never_signals(stage: &mut Stage, args: &Args) -> anyhow::Result<(bool, String)> {
    let hold = Duration::from_millis(args.hold_ms);
    let (_a_pixels, a) = stage.buffer(FIRST_COLOR)?;
    let tl_a = stage.timeline()?;
    stage.show(&a, &tl_a, (1, 2))?;
    let (_b_pixels, b) = stage.buffer(SECOND_COLOR)?;
    let tl_b = stage.timeline()?;
    let before = stage.commit(&b, &tl_b, (1, 2), false)?;
    let heard = listen(&mut stage.win.client, hold, |s| {
        s.windows.iter().any(|w| w.frames_done > before)
    });
    let first_released = is_signalled(&tl_a.syncobj, 2)?;
    Ok(match heard {
        Heard::Nothing if !first_released => (
            true,
            format!(
                "held for {hold:?}: no frame callback, no error, the first buffer not released"
            ),
        ),
        Heard::Nothing => (
            false,
            "no frame callback, but the first buffer (still on screen) was released".to_owned(),
        ),
        // The compositor's other documented answer: give up on the client after its timeout.
        Heard::ProtocolError(interface, code, message)
            if interface == "wl_display" && code == WL_DISPLAY_IMPLEMENTATION =>
        {
            (
                true,
                format!("disconnected after the fence timeout: wl_display error {code}: {message}"),
            )
        }
        Heard::Disconnected(why) => (
            true,
            format!("disconnected without a protocol error after the fence timeout ({why})"),
        ),
        Heard::Condition => (
            false,
            "the commit was applied (frame callback) although its acquire point never signalled"
                .to_owned(),
        ),
        other @ Heard::ProtocolError(..) => (false, other.to_string()),
    })
}

fn signals_late(stage: &mut Stage, args: &Args) -> anyhow::Result<(bool, String)> {
    let late = Duration::from_millis(args.late_ms);
    let (_a_pixels, a) = stage.buffer(FIRST_COLOR)?;
    let tl_a = stage.timeline()?;
    stage.show(&a, &tl_a, (1, 2))?;
    let (_b_pixels, b) = stage.buffer(SECOND_COLOR)?;
    let tl_b = stage.timeline()?;
    let before = stage.commit(&b, &tl_b, (1, 2), false)?;
    let committed = Instant::now();

    let mut worker = FenceWorker::spawn("misbehave-late-gpu")?;
    let signalling = Arc::new(AtomicBool::new(false));
    let flag = signalling.clone();
    let syncobj = tl_b.syncobj.clone();
    worker.after(late, "the late acquire point", move || {
        // Set before the signal: a frame callback seen while it is false came too early.
        flag.store(true, Ordering::SeqCst);
        syncobj.signal_point(1)
    });

    let mut early = false;
    let heard = listen(&mut stage.win.client, late + ANSWER_TIMEOUT, |s| {
        let shown = s.windows.iter().any(|w| w.frames_done > before);
        if shown && !signalling.load(Ordering::SeqCst) {
            early = true;
        }
        shown
    });
    let shown_after = committed.elapsed();
    drop(worker);
    Ok(match heard {
        Heard::Condition if early => (
            false,
            format!("shown {shown_after:?} after the commit, before its acquire point signalled"),
        ),
        Heard::Condition => match wait_signalled(&tl_a.syncobj, 2, ANSWER_TIMEOUT) {
            Ok(()) => (
                true,
                format!(
                    "held until the point signalled {late:?} after the commit, shown \
                     {shown_after:?} after the commit; the first buffer released then"
                ),
            ),
            Err(err) => (
                false,
                format!("shown after the signal, but the first buffer was not released: {err:#}"),
            ),
        },
        Heard::Nothing => (
            false,
            format!(
                "never shown, {:?} after its acquire point signalled",
                ANSWER_TIMEOUT
            ),
        ),
        other => (false, other.to_string()),
    })
}

fn rewrites_before_release(stage: &mut Stage) -> anyhow::Result<(bool, String)> {
    let (mut pixels, a) = stage.buffer(FIRST_COLOR)?;
    let tl_a = stage.timeline()?;
    stage.show(&a, &tl_a, (1, 2))?;
    let released_before = is_signalled(&tl_a.syncobj, 2)?;
    // The misbehaviour: the buffer is on screen, its release point not signalled.
    let (w, h) = stage.win.size;
    pixels.write(&solid(w, h, REWRITE_COLOR))?;
    let tl_again = stage.timeline()?;
    let before = stage.commit(&a, &tl_again, (1, 2), true)?;
    let heard = listen(&mut stage.win.client, ANSWER_TIMEOUT, |s| {
        s.windows.iter().any(|w| w.frames_done > before)
    });
    let when = if released_before {
        "after its release point had signalled (the compositor released a buffer on screen)"
    } else {
        "while its release point was unsignalled"
    };
    Ok(match heard {
        Heard::Condition => (
            !released_before,
            format!("rewritten {when}, committed again: no protocol error, the frame was shown"),
        ),
        other => (false, format!("rewritten {when}, committed again: {other}")),
    })
}

fn destroy_with_points_pending(mut stage: Stage, args: &Args) -> anyhow::Result<(bool, String)> {
    let hold = Duration::from_millis(args.hold_ms).max(ANSWER_TIMEOUT);
    let (_a_pixels, a) = stage.buffer(FIRST_COLOR)?;
    let tl_a = stage.timeline()?;
    stage.show(&a, &tl_a, (1, 2))?;
    let (_b_pixels, b) = stage.buffer(SECOND_COLOR)?;
    let tl_b = stage.timeline()?;
    stage.commit(&b, &tl_b, (1, 2), false)?;
    stage.win.client.roundtrip()?;

    stage.sync.destroy();
    let destroyed = stage.win.destroy();
    let heard = listen(&mut stage.win.client, Duration::from_millis(100), |_| false);
    let released = release_report(
        &[("the held buffer", &tl_b), ("the shown buffer", &tl_a)],
        hold,
    );
    // Let the pending point go, whatever happened.
    let _ = tl_b.syncobj.signal_point(1);
    Ok(match (destroyed, heard) {
        (Ok(()), Heard::Nothing) => (released.0, format!("no protocol error; {}", released.1)),
        (Err(err), _) => (false, format!("destroying failed: {err:#}")),
        (Ok(()), other) => (false, other.to_string()),
    })
}

fn disconnect_with_points_pending(mut stage: Stage, args: &Args) -> anyhow::Result<(bool, String)> {
    let hold = Duration::from_millis(args.hold_ms).max(ANSWER_TIMEOUT);
    let (_a_pixels, a) = stage.buffer(FIRST_COLOR)?;
    let tl_a = stage.timeline()?;
    stage.show(&a, &tl_a, (1, 2))?;
    let (_b_pixels, b) = stage.buffer(SECOND_COLOR)?;
    let tl_b = stage.timeline()?;
    stage.commit(&b, &tl_b, (1, 2), false)?;
    stage.win.client.roundtrip()?;

    // Hang up: no destroy requests, the socket just closes.
    rustix::net::shutdown(
        stage.win.client.connection().backend().poll_fd(),
        rustix::net::Shutdown::Both,
    )
    .context("shutdown(2) of the Wayland socket")?;
    let released = release_report(
        &[("the held buffer", &tl_b), ("the shown buffer", &tl_a)],
        hold,
    );
    let _ = tl_b.syncobj.signal_point(1);
    Ok(released)
}

/// Waits (up to `within` in all) for point 2 of every timeline: (all signalled, report).
fn release_report(timelines: &[(&str, &Timeline)], within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    let mut all = true;
    let mut parts = Vec::new();
    for (what, tl) in timelines {
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_signalled(&tl.syncobj, 2, left) {
            Ok(()) => parts.push(format!("{what}'s release point signalled")),
            Err(err) => {
                all = false;
                parts.push(format!("{what}'s release point NOT signalled: {err:#}"));
            }
        }
    }
    (all, parts.join("; "))
}

fn flood_commits(stage: &mut Stage, args: &Args) -> anyhow::Result<(bool, String)> {
    let n = args.commits;
    let (_a_pixels, a) = stage.buffer(FIRST_COLOR)?;
    let (_b_pixels, b) = stage.buffer(SECOND_COLOR)?;
    let acquire = stage.timeline()?;
    let release = [stage.timeline()?, stage.timeline()?];
    let buffers = [&a, &b];
    let (w, h) = (stage.win.size.0 as i32, stage.win.size.1 as i32);
    let qh = stage.win.client.qh().clone();
    let frames_before = stage.frames();
    for i in 0..n {
        let which = (i % 2) as usize;
        let release_point = u64::from(i / 2 + 1);
        set_points(
            &stage.sync,
            Some((&acquire.object, u64::from(i) + 1)),
            Some((&release[which].object, release_point)),
        );
        let surface = &stage.win.surface;
        surface.attach(Some(buffers[which]), 0, 0);
        surface.damage_buffer(0, 0, w, h);
        if i + 1 == n {
            surface.frame(&qh, stage.win.window);
        }
        surface.commit();
        stage.win.client.flush()?;
    }
    let asked = Instant::now();
    if let Err(err) = stage.win.client.roundtrip() {
        return Ok((
            false,
            format!("{n} commits waiting: the round trip failed: {err:#}"),
        ));
    }
    let answered = asked.elapsed();
    let frames_before_signal = stage.frames();
    acquire
        .syncobj
        .signal_point(u64::from(n))
        .context("signalling the acquire points")?;
    let heard = listen(&mut stage.win.client, ANSWER_TIMEOUT, |s| {
        s.windows.iter().any(|w| w.frames_done > frames_before)
    });
    if !matches!(heard, Heard::Condition) {
        return Ok((
            false,
            format!("after the acquire points signalled: {heard}"),
        ));
    }
    // Release points: every commit's but the last one's.
    let last = ((n - 1) % 2) as usize;
    let uses = [u64::from(n.div_ceil(2)), u64::from(n / 2)];
    let mut problems = Vec::new();
    for which in 0..2 {
        let expect = if which == last {
            uses[which] - 1
        } else {
            uses[which]
        };
        if expect > 0 {
            if let Err(err) = wait_signalled(&release[which].syncobj, expect, ANSWER_TIMEOUT) {
                problems.push(format!("buffer {which}: {err:#}"));
            }
        }
    }
    let last_point = uses[last];
    if is_signalled(&release[last].syncobj, last_point)? {
        problems.push("the last commit's release point was signalled while it is on screen".into());
    }
    if frames_before_signal > frames_before {
        problems.push("a frame callback came before any acquire point signalled".into());
    }
    let summary = format!(
        "{n} commits queued, a round trip answered in {answered:?} meanwhile, all applied after \
         the signal"
    );
    Ok(if problems.is_empty() {
        (
            true,
            format!("{summary}; every release point but the last commit's signalled"),
        )
    } else {
        (false, format!("{summary}; but {}", problems.join("; ")))
    })
}

/// How long after its commit v1-rewrites-before-release signals the pending acquire fence.
const V1_ACQUIRE_DELAY: Duration = Duration::from_millis(100);

fn v1_rewrites_before_release(args: &Args) -> anyhow::Result<(bool, String)> {
    // Before connecting: the pending acquire fence needs vgem.
    let vgem = drm_nodes::open_vgem().context("the pending acquire fence is a vgem fence")?;
    let mut win = open_window(args)?;
    let manager: ZwpLinuxExplicitSynchronizationV1 = win.client.bind_global(2, IgnoreEvents)?;
    let sync = manager.get_synchronization(&win.surface, win.client.qh(), IgnoreEvents);
    let (mut pixels, buffer) = win.new_buffer()?;
    let (w, h) = win.size;
    pixels.write(&solid(w, h, FIRST_COLOR))?;

    // Shown right: a signalled acquire fence (the idle buffer's), a release asked for.
    sync.set_acquire_fence(signalled_sync_file(pixels.dmabuf())?.as_fd());
    let mut owed = ReleaseSlot::default();
    let _first: ZwpLinuxBufferReleaseV1 = sync.get_release(win.client.qh(), owed.clone());
    let before = win.commit(&buffer)?;
    win.wait_frame(before, ANSWER_TIMEOUT)
        .context("a correctly synced first buffer was not shown")?;

    let mut worker = FenceWorker::spawn("misbehave-v1-gpu")?;
    let mut observed = Vec::new();
    let mut as_expected = true;
    for (round, pending) in [(1, false), (2, true)] {
        win.client.roundtrip()?;
        let released_before = owed.arrived();
        // The misbehaviour: the buffer is on screen, its release not sent.
        pixels.write(&solid(w, h, REWRITE_COLOR ^ round))?;
        // The write's fence: a vgem fence, signalled now (the write is done) or after the commit.
        let mut fence = PendingFence::new(&vgem).context("a vgem acquire fence")?;
        if !pending {
            fence.signal().context("signalling a vgem fence")?;
        }
        sync.set_acquire_fence(fence.sync_file.as_fd());
        let next = ReleaseSlot::default();
        let _release: ZwpLinuxBufferReleaseV1 = sync.get_release(win.client.qh(), next.clone());
        let before = win.commit(&buffer)?;
        worker.after(V1_ACQUIRE_DELAY, "the rewrite's acquire fence", move || {
            fence.signal()
        });
        let heard = listen(&mut win.client, ANSWER_TIMEOUT, |s| {
            s.windows.iter().any(|w| w.frames_done > before)
        });
        worker.check()?;
        let acquire = if pending {
            "an acquire fence signalled after the commit"
        } else {
            "a signalled acquire fence"
        };
        let (right, what) = match heard {
            Heard::Condition if released_before => (
                false,
                "but the buffer on screen had been released before the rewrite".to_owned(),
            ),
            Heard::Condition => {
                let slot = owed.clone();
                match win
                    .client
                    .dispatch_until(ANSWER_TIMEOUT, "the release", |_| slot.arrived())
                {
                    Ok(()) => (
                        true,
                        "no protocol error, the frame was shown and the previous commit's \
                         release came after it"
                            .to_owned(),
                    ),
                    Err(err) => (
                        false,
                        format!("shown, but no release of the previous commit: {err:#}"),
                    ),
                }
            }
            other => (false, other.to_string()),
        };
        as_expected &= right;
        observed.push(format!(
            "rewrite {round}, on screen and unreleased, committed again with {acquire}: {what}"
        ));
        owed = next;
    }
    drop(worker);
    Ok((as_expected, observed.join("; ")))
}
