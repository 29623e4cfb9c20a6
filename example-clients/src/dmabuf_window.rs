//! The part the dma-buf clients share: connect, bind linux-dmabuf, find the device, pick an
//! allocator, open a configured toplevel, import buffers, commit and wait for frames.

use std::time::Duration;

use anyhow::{bail, Context};
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_client::Proxy;

use crate::allocator::{Allocator, PixelBuffer};
use crate::drm_nodes::DeviceNodes;
use crate::linux_dmabuf::{
    self, fourcc, LinuxDmabuf, SurfaceFeedback, MOD_INVALID, MOD_LINEAR, XRGB8888,
};
use crate::options::DmabufWindowArgs;
use crate::{Client, WindowId};

/// How long the compositor gets to configure the window.
pub const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(30);

/// A frame the compositor has shown: its frame callback fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// 0-based frame number.
    pub frame: u32,
    /// The colour drawn (0x00RRGGBB).
    pub color: u32,
    /// Which of the client's buffers it was.
    pub buffer: usize,
    /// Buffer size in pixels.
    pub size: (u32, u32),
    /// From the commit to the frame callback.
    pub latency: Duration,
    /// Whether the surface's dma-buf feedback offered a scanout tranche by then (`--fullscreen`).
    pub scanout_offered: bool,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frame {} shown: #{:06x} in buffer {}, {:?} after its commit",
            self.frame, self.color, self.buffer, self.latency
        )?;
        if self.scanout_offered {
            write!(f, " (scanout tranche offered)")?;
        }
        Ok(())
    }
}

/// What happened while waiting for a frame callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameWait {
    /// The frame callback fired.
    Shown,
    /// The compositor asked the window to close.
    Closed,
}

/// A toplevel showing linear XRGB8888 dma-bufs.
pub struct DmabufWindow {
    /// The connection.
    pub client: Client,
    /// The toplevel.
    pub window: WindowId,
    /// Its surface.
    pub surface: WlSurface,
    /// linux-dmabuf and what it announced.
    pub linux_dmabuf: LinuxDmabuf,
    /// The device buffers are allocated for: `--device`, or linux-dmabuf's main device.
    pub device: Option<DeviceNodes>,
    /// Where buffers come from.
    pub allocator: Allocator,
    /// Buffer size.
    pub size: (u32, u32),
    /// The modifier sent with every buffer.
    pub modifier: u64,
    /// The surface's own dma-buf feedback, watched with `--fullscreen`.
    pub surface_feedback: Option<SurfaceFeedback>,
}

impl DmabufWindow {
    /// Connects as `args` say, binds linux-dmabuf, picks the device and the allocator (see
    /// [`crate::allocator`]) and waits for the first configure of a new toplevel.
    pub fn open(args: &DmabufWindowArgs, name: &str) -> anyhow::Result<DmabufWindow> {
        let mut client = args.connect()?;
        let linux_dmabuf = LinuxDmabuf::bind(&mut client)?;
        let modifier = pick_modifier(&linux_dmabuf)?;
        let device = match (&args.device, linux_dmabuf.info.main_device) {
            (Some(path), _) => Some(DeviceNodes::from_path(path)?),
            (None, Some(dev)) => {
                Some(DeviceNodes::from_dev_id(dev).context("linux-dmabuf's main device")?)
            }
            (None, None) => None,
        };
        let title = args.title.clone().unwrap_or_else(|| name.to_owned());
        let window = client.try_create_window(&title, &format!("fencegate.{name}"))?;
        client.wait_configured(window, CONFIGURE_TIMEOUT)?;
        let mut size = args.size;
        let fullscreen = args.fullscreen || args.fullscreen_on.is_some();
        if fullscreen {
            match &args.fullscreen_on {
                Some(output) => client.set_fullscreen_on(window, output)?,
                None => client.set_fullscreen(window, true),
            }
            client.dispatch_until(CONFIGURE_TIMEOUT, "the fullscreen configure", |state| {
                state.windows[window.0].fullscreen
            })?;
            let (width, height) = client.state.windows[window.0].last_configure_size;
            if width > 0 && height > 0 {
                size = (width as u32, height as u32);
            }
        }
        let allocator = Allocator::open(args.allocator, device.as_ref(), size)?;
        let surface = client.state.windows[window.0].surface.clone();
        let surface_feedback = if fullscreen {
            SurfaceFeedback::watch(&client, &linux_dmabuf, &surface)
        } else {
            None
        };
        Ok(DmabufWindow {
            client,
            window,
            surface,
            linux_dmabuf,
            device,
            allocator,
            size,
            modifier,
            surface_feedback,
        })
    }

    /// A new buffer of the window's size and its `wl_buffer`.
    pub fn new_buffer(&mut self) -> anyhow::Result<(PixelBuffer, WlBuffer)> {
        let (width, height) = self.size;
        let pixels = self.allocator.allocate(width, height)?;
        let mut plane = pixels.plane();
        plane.modifier = self.modifier;
        let buffer = linux_dmabuf::create_buffer(
            &mut self.client,
            &self.linux_dmabuf.global,
            plane,
            self.size,
            XRGB8888,
        )
        .with_context(|| format!("importing a buffer from {}", self.allocator.describe()))?;
        Ok((pixels, buffer))
    }

    /// Attaches `buffer`, damages all of it, asks for a frame callback and a presentation
    /// feedback (if `wp_presentation` is bound) and commits (whatever sync state the caller set
    /// before is part of this commit). Returns the frame-callback count to pass to
    /// [`wait_frame`](Self::wait_frame).
    pub fn commit(&mut self, buffer: &WlBuffer) -> anyhow::Result<u32> {
        let (w, h) = (self.size.0 as i32, self.size.1 as i32);
        let qh = self.client.qh().clone();
        let presentation = self.client.state.presentation.clone();
        let window = &mut self.client.state.windows[self.window.0];
        let frames_before = window.frames_done;
        let surface = &window.surface;
        surface.attach(Some(buffer), 0, 0);
        if surface.version() >= 4 {
            surface.damage_buffer(0, 0, w, h);
        } else {
            surface.damage(0, 0, w, h);
        }
        surface.frame(&qh, self.window);
        if let Some(presentation) = &presentation {
            presentation.feedback(surface, &qh, self.window);
        }
        surface.commit();
        window.commits += 1;
        self.client.flush()?;
        Ok(frames_before)
    }

    /// The scanout tranche of the surface's feedback, if the compositor offers one now.
    pub fn scanout_tranche(&self) -> Option<crate::linux_dmabuf::Tranche> {
        self.surface_feedback.as_ref()?.scanout_tranche()
    }

    /// Waits until a frame callback newer than `frames_before` fired (or the compositor asked
    /// the window to close).
    pub fn wait_frame(
        &mut self,
        frames_before: u32,
        timeout: Duration,
    ) -> anyhow::Result<FrameWait> {
        let w = self.window;
        self.client
            .dispatch_until(timeout, "the frame callback of the commit", |s| {
                let win = &s.windows[w.0];
                win.frames_done > frames_before || win.close_requested
            })?;
        let win = &self.client.state.windows[w.0];
        Ok(if win.frames_done > frames_before {
            FrameWait::Shown
        } else {
            FrameWait::Closed
        })
    }

    /// Whether the compositor asked the window to close.
    pub fn close_requested(&self) -> bool {
        self.client.state.windows[self.window.0].close_requested
    }

    /// Destroys the toplevel and its surface and waits for a round trip.
    pub fn destroy(&mut self) -> anyhow::Result<()> {
        self.client.destroy_window(self.window);
        self.client.roundtrip()
    }
}

/// LINEAR if the compositor offers XRGB8888 with it, else the implicit modifier if offered
/// (our buffers are linear either way); a version-1/2 global lists no modifiers: LINEAR.
fn pick_modifier(linux_dmabuf: &LinuxDmabuf) -> anyhow::Result<u64> {
    let info = &linux_dmabuf.info;
    if info.version < 3 || info.supports(XRGB8888, MOD_LINEAR) {
        return Ok(MOD_LINEAR);
    }
    if info.supports(XRGB8888, MOD_INVALID) {
        return Ok(MOD_INVALID);
    }
    let offered: Vec<String> = info
        .formats
        .iter()
        .filter(|(f, _)| *f == XRGB8888)
        .map(|(_, m)| format!("{m:#x}"))
        .collect();
    bail!(
        "the compositor does not take linear {} dma-bufs (modifiers offered for it: [{}]; {} formats in all)",
        fourcc(XRGB8888),
        offered.join(", "),
        info.formats.len()
    )
}

/// What a client's `run` calls after each frame is shown; an error stops the run.
pub type OnFrame<'a> = &'a mut dyn FnMut(&Shown) -> anyhow::Result<()>;

/// The `main` of a binary over a dma-buf client's `run`: prints each frame as it is shown and
/// the report, exits 0 after `--frames`, 1 on any error (clap exits 2 on bad arguments).
pub fn binary_main<A, R>(
    name: &str,
    run: fn(&A, OnFrame<'_>) -> anyhow::Result<R>,
) -> std::process::ExitCode
where
    A: clap::Parser,
    R: std::fmt::Display,
{
    let args = A::parse();
    let result = run(&args, &mut |shown| {
        println!("{name}: {shown}");
        Ok(())
    });
    match result {
        Ok(report) => {
            println!("{name}: done: {report}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{name}: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
