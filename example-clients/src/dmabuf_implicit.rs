//! `dmabuf-implicit`: dma-bufs committed with no explicit sync at all, as most clients still do.
//! The compositor learns when a buffer is ready only from the fences in the dma-buf itself.
//!
//! * buffers from the allocator chain ([`crate::allocator`]: GBM, vgem, and udmabuf where there
//!   is no DRM device at all), drawn with the CPU, one colour per frame;
//! * `--busy-ms N` plays a slow GPU: after drawing, a pending vgem write fence is imported into
//!   the buffer (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`), and a worker thread signals it N ms after
//!   the commit, so the compositor must not show the frame before then;
//! * a buffer is written again only after `wl_buffer.release` **and** once every fence in it
//!   (the compositor's reads included) has signalled — the CPU's side of implicit sync;
//! * after `--frames N` it exits 0.

use std::fmt;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use fence_bridge::{Access, DmaBuf};
use wayland_client::protocol::wl_buffer::WlBuffer;

use crate::allocator::PixelBuffer;
use crate::dmabuf_window::{DmabufWindow, FrameWait, Shown};
use crate::drm_nodes;
use crate::fence_worker::FenceWorker;
use crate::linux_dmabuf::buffer_releases;
use crate::options::DmabufWindowArgs;
use crate::paint::{color_of, solid};
use crate::vgem::{PendingFence, MAX_PENDING};

/// The client's name: binary, window title and app_id suffix.
pub const NAME: &str = "dmabuf-implicit";
/// How long a frame callback may take beyond `--busy-ms`.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a buffer may stay unreleased, or busy, once due.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A dma-buf client without explicit sync: the buffers' own fences are all the compositor has.
#[derive(Parser, Clone, Debug)]
#[command(name = NAME, version)]
pub struct Args {
    #[command(flatten)]
    pub window: DmabufWindowArgs,

    /// Keep each committed buffer busy for this long with a vgem write fence (a slow GPU; needs
    /// vgem). At most 8000: vgem signals a fence by itself after about 10 s.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PENDING.as_millis() as u64))]
    pub busy_ms: u64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Frames shown.
    pub frames: u32,
    /// Where the buffers came from.
    pub allocator: String,
    /// The shortest commit-to-frame-callback time (with `--busy-ms`, at least that long if the
    /// compositor waits for implicit fences).
    pub min_latency: Option<Duration>,
    /// Whether the compositor closed the window before `--frames` were shown.
    pub closed: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames shown{}; buffers: {}; shortest commit-to-frame time {:?}",
            self.frames,
            if self.closed {
                " (closed by the compositor)"
            } else {
                ""
            },
            self.allocator,
            self.min_latency.unwrap_or_default(),
        )
    }
}

struct Slot {
    pixels: PixelBuffer,
    buffer: WlBuffer,
    /// Committed and no `wl_buffer.release` seen since.
    attached: bool,
    /// Release events seen so far.
    releases_seen: u32,
}

/// Runs the client; `on_frame` as for [`crate::syncobj_client::run`].
pub fn run(
    args: &Args,
    on_frame: &mut dyn FnMut(&Shown) -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
    let busy = Duration::from_millis(args.busy_ms);
    let vgem = if busy.is_zero() {
        None
    } else {
        Some(drm_nodes::open_vgem().context("--busy-ms above 0 makes write fences with vgem")?)
    };
    let mut win = DmabufWindow::open(&args.window, NAME)?;
    let mut slots = Vec::new();
    for i in 0..args.window.buffers {
        let (pixels, buffer) = win.new_buffer().with_context(|| format!("buffer {i}"))?;
        slots.push(Slot {
            pixels,
            buffer,
            attached: false,
            releases_seen: 0,
        });
    }

    let mut worker = FenceWorker::spawn("dmabuf-implicit-gpu")?;
    let (width, height) = win.size;
    let mut report = Report {
        frames: 0,
        allocator: win.allocator.describe().to_owned(),
        min_latency: None,
        closed: false,
    };

    let mut frame = 0u32;
    while args.window.frames.is_none_or(|n| frame < n) {
        if win.close_requested() {
            report.closed = true;
            break;
        }
        let index = frame as usize % slots.len();
        if slots[index].attached {
            let releases = buffer_releases(&slots[index].buffer);
            let seen = slots[index].releases_seen;
            win.client
                .dispatch_until(RELEASE_TIMEOUT, "wl_buffer.release", |_| {
                    releases.count() > seen
                })
                .with_context(|| format!("buffer {index} before frame {frame}"))?;
            slots[index].releases_seen = releases.count();
            slots[index].attached = false;
        }
        let slot = &mut slots[index];
        // Released is not idle: wait for every fence in the buffer, readers' too.
        let fences = DmaBuf::new(slot.pixels.dmabuf().as_fd())
            .export_sync_file(Access::Write)
            .context("DMA_BUF_IOCTL_EXPORT_SYNC_FILE")?;
        if !fences.wait_timeout(Some(RELEASE_TIMEOUT))? {
            bail!("buffer {index}: its fences did not signal within {RELEASE_TIMEOUT:?}");
        }
        let color = color_of(args.window.color, frame);
        slot.pixels.write(&solid(width, height, color))?;

        let gpu = match &vgem {
            None => None,
            Some(vgem) => {
                let fence = PendingFence::new(vgem).context("a vgem write fence")?;
                DmaBuf::new(slot.pixels.dmabuf().as_fd())
                    .import_sync_file(&fence.sync_file, Access::Write)
                    .context("DMA_BUF_IOCTL_IMPORT_SYNC_FILE of the write fence")?;
                Some(fence)
            }
        };
        let committed = Instant::now();
        let frames_before = win.commit(&slot.buffer)?;
        slot.attached = true;
        if let Some(mut fence) = gpu {
            worker.after(
                busy,
                format!("the write fence of frame {frame}"),
                move || fence.signal(),
            );
        }
        let waited = win
            .wait_frame(frames_before, FRAME_TIMEOUT + busy)
            .with_context(|| format!("frame {frame}"))?;
        worker.check()?;
        if waited == FrameWait::Closed {
            report.closed = true;
            break;
        }
        let latency = committed.elapsed();
        report.frames += 1;
        report.min_latency = Some(report.min_latency.map_or(latency, |m| m.min(latency)));
        on_frame(&Shown {
            frame,
            color,
            buffer: index,
            size: win.size,
            latency,
            scanout_offered: win.scanout_tranche().is_some(),
        })?;
        frame += 1;
    }
    drop(worker);
    win.destroy()?;
    for slot in slots {
        slot.buffer.destroy();
    }
    win.client.roundtrip()?;
    Ok(report)
}
