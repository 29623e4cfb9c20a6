//! `syncobj-client`: linux-drm-syncobj-v1 done right.
//!
//! * binds `wp_linux_drm_syncobj_manager_v1` and opens the DRM device linux-dmabuf's default
//!   feedback names as its main device (or `--device`), where it creates its timelines;
//! * allocates dma-bufs there (GBM on the render node, else GBM on the card node of the same
//!   device, else a vgem BO: see [`crate::allocator`]) and draws them with the CPU: one solid
//!   colour per frame ([`crate::paint::frame_color`], or `--color`);
//! * gives every buffer **one timeline syncobj** of its own, exported and imported with
//!   `import_timeline`; each use of a buffer takes the next two points of its timeline, acquire
//!   `2k+1` and release `2k+2` (acquire before release on one timeline, as the protocol asks);
//! * signals each acquire point from a worker thread `--acquire-delay-ms` after the commit, as
//!   a GPU finishes rendering some time after submission (0: signalled before the commit);
//! * writes a buffer again only after its last release point has signalled, waiting in the
//!   kernel (`DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT` through fence-bridge), never polling;
//! * paces itself by frame callbacks, and after `--frames N` destroys its surface, checks that
//!   the compositor signalled every buffer's last release point, and exits 0.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use wayland_client::protocol::wl_buffer::WlBuffer;

use crate::allocator::PixelBuffer;
use crate::dmabuf_window::{DmabufWindow, FrameWait, Shown};
use crate::fence_worker::FenceWorker;
use crate::options::DmabufWindowArgs;
use crate::paint::{color_of, solid};
use crate::syncobj_timeline::{
    bind_manager, import_timeline, open_timeline_device, set_points, wait_signalled, Timeline,
};
use crate::IgnoreEvents;

/// The client's name: binary, window title and app_id suffix.
pub const NAME: &str = "syncobj-client";
/// How long a frame callback may take beyond the acquire delay (the guest under TCG is slow).
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a release point may take once it is due.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest acquire delay accepted.
const MAX_ACQUIRE_DELAY_MS: u64 = 60_000;

/// A linux-drm-syncobj-v1 client: dma-bufs drawn by the CPU, one timeline per buffer, acquire
/// points signalled from a worker thread, buffers reused only after their release point.
#[derive(Parser, Clone, Debug)]
#[command(name = NAME, version)]
pub struct Args {
    #[command(flatten)]
    pub window: DmabufWindowArgs,

    /// Signal each frame's acquire point this long after its commit, from a worker thread (a
    /// GPU finishing late); 0 signals it before the commit.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_ACQUIRE_DELAY_MS))]
    pub acquire_delay_ms: u64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Frames shown (frame callbacks received).
    pub frames: u32,
    /// Where the buffers came from.
    pub allocator: String,
    /// The device the timelines live on.
    pub timeline_device: String,
    /// Why the timelines are not on linux-dmabuf's main device, if they are not.
    pub timeline_note: Option<String>,
    /// How often a buffer's release point was not yet signalled when it was next needed.
    pub release_waits: u32,
    /// Time spent in those waits.
    pub release_wait_time: Duration,
    /// Whether the compositor closed the window before `--frames` were shown.
    pub closed: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames shown{}; buffers: {}; timelines on {}{}; waited {} times for a release \
             point ({:?}); every last release point signalled after the surface went",
            self.frames,
            if self.closed {
                " (closed by the compositor)"
            } else {
                ""
            },
            self.allocator,
            self.timeline_device,
            self.timeline_note
                .as_ref()
                .map_or_else(String::new, |n| format!(" ({n})")),
            self.release_waits,
            self.release_wait_time,
        )
    }
}

struct Slot {
    pixels: PixelBuffer,
    buffer: WlBuffer,
    timeline: Timeline,
    /// The release point of the buffer's last commit; 0 before its first.
    last_release: u64,
}

/// Runs the client: `on_frame` is called after each frame's callback, before the next frame is
/// drawn (so the frame is what the compositor shows meanwhile). An error from it stops the run.
pub fn run(
    args: &Args,
    on_frame: &mut dyn FnMut(&Shown) -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
    let mut win = DmabufWindow::open(&args.window, NAME)?;
    let manager = bind_manager(&win.client)?;
    let (device, timeline_note) =
        open_timeline_device(args.window.device.as_deref(), win.device.as_ref())?;
    let timeline_device = format!(
        "{} ({})",
        device
            .path()
            .map_or_else(|| "?".into(), |p| p.display().to_string()),
        device.driver_name()
    );
    let sync = manager.get_surface(&win.surface, win.client.qh(), IgnoreEvents);

    let mut slots = Vec::new();
    for i in 0..args.window.buffers {
        let (pixels, buffer) = win.new_buffer().with_context(|| format!("buffer {i}"))?;
        let timeline = import_timeline(&win.client, &manager, &device)
            .with_context(|| format!("the timeline of buffer {i}"))?;
        slots.push(Slot {
            pixels,
            buffer,
            timeline,
            last_release: 0,
        });
    }
    win.client
        .roundtrip()
        .context("the compositor refused a timeline import")?;

    let mut worker = FenceWorker::spawn("syncobj-client-gpu")?;
    let delay = Duration::from_millis(args.acquire_delay_ms);
    let (width, height) = win.size;
    let mut report = Report {
        frames: 0,
        allocator: win.allocator.describe().to_owned(),
        timeline_device,
        timeline_note,
        release_waits: 0,
        release_wait_time: Duration::ZERO,
        closed: false,
    };

    let mut frame = 0u32;
    while args.window.frames.is_none_or(|n| frame < n) {
        if win.close_requested() {
            report.closed = true;
            break;
        }
        let index = frame as usize % slots.len();
        let slot = &mut slots[index];

        // Reuse only after the compositor is done with the buffer's last commit.
        if slot.last_release > 0 {
            let syncobj = &slot.timeline.syncobj;
            if syncobj.query().context("DRM_IOCTL_SYNCOBJ_QUERY")? < slot.last_release {
                let started = Instant::now();
                wait_signalled(syncobj, slot.last_release, RELEASE_TIMEOUT).with_context(|| {
                    format!("buffer {index}: waiting for its release point before drawing frame {frame}")
                })?;
                report.release_waits += 1;
                report.release_wait_time += started.elapsed();
            }
        }

        let color = color_of(args.window.color, frame);
        slot.pixels.write(&solid(width, height, color))?;
        let acquire = slot.last_release + 1;
        let release = acquire + 1;
        slot.last_release = release;
        let tl = &slot.timeline.object;
        set_points(&sync, Some((tl, acquire)), Some((tl, release)));

        let syncobj = slot.timeline.syncobj.clone();
        if delay.is_zero() {
            syncobj
                .signal_point(acquire)
                .context("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL of an acquire point")?;
        }
        let committed = Instant::now();
        let frames_before = win.commit(&slot.buffer)?;
        if !delay.is_zero() {
            worker.after(
                delay,
                format!("acquire point {acquire} of buffer {index}"),
                move || syncobj.signal_point(acquire),
            );
        }

        let waited = win
            .wait_frame(frames_before, FRAME_TIMEOUT + delay)
            .with_context(|| format!("frame {frame}"))?;
        worker.check()?;
        if waited == FrameWait::Closed {
            report.closed = true;
            break;
        }
        report.frames += 1;
        on_frame(&Shown {
            frame,
            color,
            buffer: index,
            size: win.size,
            latency: committed.elapsed(),
            scanout_offered: win.scanout_tranche().is_some(),
        })?;
        frame += 1;
    }
    drop(worker);

    // The surface goes: every buffer's last release point is due now.
    win.destroy()?;
    sync.destroy();
    win.client.roundtrip()?;
    for (index, slot) in slots.iter().enumerate() {
        if slot.last_release > 0 {
            wait_signalled(&slot.timeline.syncobj, slot.last_release, RELEASE_TIMEOUT)
                .with_context(|| {
                    format!(
                        "buffer {index}: its last release point after the surface was destroyed"
                    )
                })?;
        }
    }
    for slot in slots {
        slot.timeline.object.destroy();
        slot.buffer.destroy();
    }
    win.client.roundtrip()?;
    Ok(report)
}
