//! What the `fencegate` binary is asked to do: the command line, parsed once into [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which backend drives outputs and input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// winit when a display server is reachable (WAYLAND_DISPLAY or DISPLAY), headless otherwise.
    Auto,
    /// A window on the host's Wayland or X11 session.
    Winit,
    /// No display: renders offscreen, for tests, CI and `fencegate check`.
    Headless,
    /// A DRM/KMS session (udev + libseat + libinput + GBM).
    Drm,
}

impl BackendChoice {
    /// Resolves `Auto` from the environment, the same rule the README documents.
    pub fn resolve(self) -> BackendChoice {
        match self {
            BackendChoice::Auto => {
                let has_display =
                    |var: &str| std::env::var_os(var).is_some_and(|value| !value.is_empty());
                if has_display("WAYLAND_DISPLAY") || has_display("DISPLAY") {
                    BackendChoice::Winit
                } else {
                    BackendChoice::Headless
                }
            }
            other => other,
        }
    }
}

/// Output size as `WIDTHxHEIGHT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputSize {
    pub width: i32,
    pub height: i32,
}

impl std::str::FromStr for OutputSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (w, h) = s
            .split_once('x')
            .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
        let parse = |v: &str| {
            v.parse::<i32>()
                .ok()
                .filter(|n| (1..=16384).contains(n))
                .ok_or_else(|| format!("{v:?} is not a size between 1 and 16384"))
        };
        Ok(OutputSize {
            width: parse(w)?,
            height: parse(h)?,
        })
    }
}

/// The `fencegate` command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "fencegate",
    version,
    about = "A Smithay compositor that never blocks on a client fence",
    after_help = "To test how a client uses explicit and implicit sync: fencegate check --help"
)]
pub struct Config {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,

    /// Listening socket: a name in $XDG_RUNTIME_DIR, or an absolute path. Default: the first free
    /// `wayland-N`.
    #[arg(long)]
    pub socket: Option<String>,

    /// Output size of the headless backend (winit follows its window).
    #[arg(long, default_value = "1280x800")]
    pub size: OutputSize,

    /// Refresh rate of the headless output, in Hz.
    #[arg(long, default_value_t = 60.0, value_parser = parse_refresh)]
    pub refresh: f64,

    /// Headless and DRM: use the pixman renderer even where an EGL device exists.
    #[arg(long)]
    pub pixman: bool,

    /// DRM only: the GPU's card node (default: udev's primary GPU of the seat).
    #[arg(long, value_name = "PATH")]
    pub drm_device: Option<PathBuf>,

    /// Write a PNG screenshot of the output to this path (see --screenshot-after-frames).
    #[arg(long)]
    pub screenshot: Option<PathBuf>,

    /// Take the screenshot this many frames after --screenshot-windows windows have content.
    #[arg(long, default_value_t = 2, requires = "screenshot")]
    pub screenshot_after_frames: u32,

    /// How many mapped windows with a buffer the screenshot waits for.
    #[arg(long, default_value_t = 1, requires = "screenshot")]
    pub screenshot_windows: usize,

    /// Exit (status 0) once the screenshot is written.
    #[arg(long, requires = "screenshot")]
    pub exit_after_screenshot: bool,

    /// How long a commit may wait for a client fence (an acquire point or fence, or a dma-buf's
    /// implicit write fence) before --fence-timeout-action is taken, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub fence_timeout: u64,

    /// What happens to a client whose fence is still unsignalled after --fence-timeout: `report`
    /// (log a warning, keep its last content on screen, keep waiting) or `disconnect` it.
    #[arg(long, value_enum, default_value = "report")]
    pub fence_timeout_action: FenceTimeoutAction,

    /// Client to spawn with WAYLAND_DISPLAY set; fencegate exits with its status when it exits.
    #[arg(last = true, value_name = "CMD ARGS")]
    pub command: Vec<String>,

    /// Print nothing on stdout, and send the client's stdout to stderr (`fencegate check`
    /// keeps stdout for its report).
    #[arg(skip)]
    pub quiet: bool,
}

/// `--fence-timeout-action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FenceTimeoutAction {
    /// Warn once and keep waiting; the surface keeps its last content.
    #[default]
    Report,
    /// Warn and disconnect the client.
    Disconnect,
}

impl From<FenceTimeoutAction> for fencegate_protocols::TimeoutAction {
    fn from(action: FenceTimeoutAction) -> Self {
        match action {
            FenceTimeoutAction::Report => fencegate_protocols::TimeoutAction::Report,
            FenceTimeoutAction::Disconnect => fencegate_protocols::TimeoutAction::Disconnect,
        }
    }
}

fn parse_refresh(s: &str) -> Result<f64, String> {
    let hz: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (1.0..=1000.0).contains(&hz) {
        Ok(hz)
    } else {
        Err(format!("{hz} Hz is outside 1..=1000"))
    }
}

impl Config {
    /// The output's frame interval.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.refresh)
    }

    /// `--fence-timeout`.
    pub fn fence_timeout(&self) -> Duration {
        Duration::from_millis(self.fence_timeout)
    }

    /// A config for a headless server, as the tests and tools that embed fencegate want it.
    pub fn headless() -> Config {
        Config::parse_from(["fencegate", "--backend", "headless"])
    }
}
