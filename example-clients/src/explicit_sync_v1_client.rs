//! `explicit-sync-v1-client`: the older `zwp_linux_explicit_synchronization_v1`, done right.
//!
//! * dma-bufs from the same allocator chain as `syncobj-client` ([`crate::allocator`]), drawn
//!   with the CPU, one colour per frame;
//! * an **acquire fence per commit, as a sync_file**: with `--acquire-delay-ms 0` the buffer's
//!   own implicit fences, exported while it is idle (the kernel's signalled stub fence); with a
//!   delay, a vgem fence (see [`crate::vgem::PendingFence`]) that a worker thread signals that
//!   long after the commit. (fence-bridge's `SwTimeline` cannot be used here: its fences live
//!   in userspace and only a kernel fence can be a sync_file; Debian's kernel has no sw_sync.)
//! * `get_release` with every commit; a buffer is written again only after its release object
//!   got `immediate_release`, or `fenced_release` and that fence has signalled;
//! * after `--frames N` it destroys its surface, checks that every release still owed arrives,
//!   and exits 0.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use fence_bridge::SyncFile;
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::{Connection, Dispatch, QueueHandle};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_buffer_release_v1::{self, ZwpLinuxBufferReleaseV1};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;

use crate::allocator::PixelBuffer;
use crate::dmabuf_window::{DmabufWindow, FrameWait, Shown};
use crate::fence_worker::FenceWorker;
use crate::options::DmabufWindowArgs;
use crate::paint::{color_of, solid};
use crate::vgem::{signalled_sync_file, PendingFence, MAX_PENDING};
use crate::{drm_nodes, Client, ClientState, IgnoreEvents};

/// The client's name: binary, window title and app_id suffix.
pub const NAME: &str = "explicit-sync-v1-client";
/// How long a frame callback may take beyond the acquire delay.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a release event, and then its fence, may take once due.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A zwp_linux_explicit_synchronization_v1 client: sync_file acquire fences, a release object
/// per commit, buffers reused only after their release.
#[derive(Parser, Clone, Debug)]
#[command(name = NAME, version)]
pub struct Args {
    #[command(flatten)]
    pub window: DmabufWindowArgs,

    /// Each commit's acquire fence signals this long after the commit (a vgem fence signalled
    /// from a worker thread; needs vgem). At most 8000: vgem signals a fence by itself after
    /// about 10 s. 0: an already signalled fence.
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_PENDING.as_millis() as u64))]
    pub acquire_delay_ms: u64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Frames shown.
    pub frames: u32,
    /// Where the buffers came from.
    pub allocator: String,
    /// `fenced_release` events (each fence waited for before reuse).
    pub fenced_releases: u32,
    /// `immediate_release` events.
    pub immediate_releases: u32,
    /// Whether the compositor closed the window before `--frames` were shown.
    pub closed: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames shown{}; buffers: {}; {} fenced and {} immediate releases, every one \
             received",
            self.frames,
            if self.closed {
                " (closed by the compositor)"
            } else {
                ""
            },
            self.allocator,
            self.fenced_releases,
            self.immediate_releases,
        )
    }
}

/// The one event a `zwp_linux_buffer_release_v1` receives.
#[derive(Debug)]
pub enum Released {
    /// `fenced_release`: the buffer may be reused once this fence signals.
    Fenced(SyncFile),
    /// `immediate_release`: reusable now.
    Immediate,
}

/// Where a release object's event lands (its user data).
#[derive(Clone, Debug, Default)]
pub struct ReleaseSlot(Arc<Mutex<Option<Released>>>);

impl ReleaseSlot {
    /// Whether the event arrived.
    pub fn arrived(&self) -> bool {
        self.lock().is_some()
    }

    /// Takes the event, if it arrived.
    pub fn take(&self) -> Option<Released> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Released>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Dispatch<ZwpLinuxBufferReleaseV1, ReleaseSlot> for ClientState {
    fn event(
        _: &mut Self,
        _: &ZwpLinuxBufferReleaseV1,
        event: zwp_linux_buffer_release_v1::Event,
        slot: &ReleaseSlot,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let released = match event {
            zwp_linux_buffer_release_v1::Event::FencedRelease { fence } => {
                Released::Fenced(SyncFile::from(fence))
            }
            zwp_linux_buffer_release_v1::Event::ImmediateRelease => Released::Immediate,
            _ => return,
        };
        *slot.lock() = Some(released);
    }
}

struct Slot {
    pixels: PixelBuffer,
    buffer: WlBuffer,
    /// The release of the buffer's last commit, until its event was handled.
    owed: Option<ReleaseSlot>,
}

/// Waits for `owed`'s event and, for a fenced release, for its fence; counts it in `report`.
fn wait_release(
    client: &mut Client,
    owed: &ReleaseSlot,
    report: &mut Report,
    what: &str,
) -> anyhow::Result<()> {
    let slot = owed.clone();
    client
        .dispatch_until(RELEASE_TIMEOUT, what, |_| slot.arrived())
        .with_context(|| format!("{what}: no release event"))?;
    match owed.take() {
        Some(Released::Immediate) => report.immediate_releases += 1,
        Some(Released::Fenced(fence)) => {
            let signalled = fence
                .wait_timeout(Some(RELEASE_TIMEOUT))
                .with_context(|| format!("{what}: waiting on the fenced_release fence"))?;
            if !signalled {
                bail!("{what}: the fenced_release fence did not signal within {RELEASE_TIMEOUT:?}");
            }
            report.fenced_releases += 1;
        }
        None => unreachable!("dispatch_until returned once it arrived"),
    }
    Ok(())
}

/// Runs the client; `on_frame` as for [`crate::syncobj_client::run`].
pub fn run(
    args: &Args,
    on_frame: &mut dyn FnMut(&Shown) -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
    let delay = Duration::from_millis(args.acquire_delay_ms);
    // Before connecting: a missing vgem is an error of the arguments' making.
    let vgem = if delay.is_zero() {
        None
    } else {
        Some(
            drm_nodes::open_vgem()
                .context("--acquire-delay-ms above 0 makes pending acquire fences with vgem")?,
        )
    };
    let mut win = DmabufWindow::open(&args.window, NAME)?;
    let manager: ZwpLinuxExplicitSynchronizationV1 = win.client.bind_global(2, IgnoreEvents)?;
    let sync = manager.get_synchronization(&win.surface, win.client.qh(), IgnoreEvents);

    let mut slots = Vec::new();
    for i in 0..args.window.buffers {
        let (pixels, buffer) = win.new_buffer().with_context(|| format!("buffer {i}"))?;
        slots.push(Slot {
            pixels,
            buffer,
            owed: None,
        });
    }

    let mut worker = FenceWorker::spawn("explicit-sync-v1-gpu")?;
    let (width, height) = win.size;
    let mut report = Report {
        frames: 0,
        allocator: win.allocator.describe().to_owned(),
        fenced_releases: 0,
        immediate_releases: 0,
        closed: false,
    };

    let mut frame = 0u32;
    while args.window.frames.is_none_or(|n| frame < n) {
        if win.close_requested() {
            report.closed = true;
            break;
        }
        let index = frame as usize % slots.len();
        if let Some(owed) = slots[index].owed.take() {
            let what = format!("buffer {index} before frame {frame}");
            wait_release(&mut win.client, &owed, &mut report, &what)?;
        }
        let slot = &mut slots[index];
        let color = color_of(args.window.color, frame);
        slot.pixels.write(&solid(width, height, color))?;

        let pending = match &vgem {
            None => {
                let fence = signalled_sync_file(slot.pixels.dmabuf())
                    .context("exporting an idle buffer's fences as the acquire fence")?;
                sync.set_acquire_fence(fence.as_fd());
                None
            }
            Some(vgem) => {
                let fence = PendingFence::new(vgem).context("a vgem acquire fence")?;
                sync.set_acquire_fence(fence.sync_file.as_fd());
                Some(fence)
            }
        };
        let owed = ReleaseSlot::default();
        let _release: ZwpLinuxBufferReleaseV1 = sync.get_release(win.client.qh(), owed.clone());
        slot.owed = Some(owed);

        let committed = Instant::now();
        let frames_before = win.commit(&slot.buffer)?;
        if let Some(mut fence) = pending {
            worker.after(
                delay,
                format!("the acquire fence of frame {frame}"),
                move || fence.signal(),
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

    // The surface goes: every release still owed must arrive.
    win.destroy()?;
    sync.destroy();
    for (index, slot) in slots.iter_mut().enumerate() {
        if let Some(owed) = slot.owed.take() {
            let what = format!("buffer {index} after the surface was destroyed");
            wait_release(&mut win.client, &owed, &mut report, &what)?;
        }
    }
    for slot in slots {
        slot.buffer.destroy();
    }
    manager.destroy();
    win.client.roundtrip()?;
    Ok(report)
}
