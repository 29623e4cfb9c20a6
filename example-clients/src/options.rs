//! Command-line options the dma-buf clients share (`syncobj-client`, `explicit-sync-v1-client`,
//! `dmabuf-implicit`, `misbehave`), and their value parsers. Pure: tested on the host.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::Client;

/// How a client gets its dma-bufs; see [`crate::allocator`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AllocatorChoice {
    /// GBM on the device's render node, else its card node, else a vgem BO, else udmabuf.
    #[default]
    Auto,
    /// GBM only (render node, then card node of the same device).
    Gbm,
    /// A vgem dumb buffer only.
    Vgem,
    /// udmabuf (a sealed memfd) only.
    Udmabuf,
}

/// Options every dma-buf client takes.
#[derive(clap::Args, Clone, Debug)]
pub struct DmabufWindowArgs {
    /// Wayland display to connect to: a socket name in $XDG_RUNTIME_DIR or an absolute path
    /// (default: $WAYLAND_SOCKET, then $WAYLAND_DISPLAY, then wayland-0).
    #[arg(long, value_name = "NAME")]
    pub display: Option<String>,

    /// Buffer size WxH (fixed: the window does not follow configure sizes).
    #[arg(long, default_value = "64x64", value_parser = parse_size)]
    pub size: (u32, u32),

    /// Solid fill colour RRGGBB (hex); default: a new colour every frame, the hue turning
    /// 30 degrees a frame (red, orange, yellow, ...).
    #[arg(long, value_parser = parse_color)]
    pub color: Option<u32>,

    /// Exit 0 after N frames were shown (default: until the compositor closes the window).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub frames: Option<u32>,

    /// Number of buffers to cycle through; at least 2, since the buffer on screen is only
    /// released once another replaces it.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=8))]
    pub buffers: u32,

    /// DRM node to use instead of linux-dmabuf's main device (e.g. /dev/dri/renderD128).
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,

    /// Where the dma-bufs come from.
    #[arg(long, value_enum, default_value_t = AllocatorChoice::Auto)]
    pub allocator: AllocatorChoice,

    /// Window title (default: the client's name).
    #[arg(long)]
    pub title: Option<String>,

    /// Ask to be fullscreen and draw at the size the compositor configures (--size is then
    /// only the fallback if it picks none): on a DRM output, a candidate for direct scanout.
    #[arg(long)]
    pub fullscreen: bool,

    /// Ask to be fullscreen on the output with this name (`wl_output.name`, e.g. `Virtual-2`);
    /// implies --fullscreen.
    #[arg(long, value_name = "OUTPUT")]
    pub fullscreen_on: Option<String>,
}

impl DmabufWindowArgs {
    /// Connects to `--display`, or as libwayland does from the environment.
    pub fn connect(&self) -> anyhow::Result<Client> {
        match &self.display {
            Some(name) => Client::connect_to(name),
            None => Client::connect_env(),
        }
    }
}

/// `WxH`, both sides 1..=16384.
pub fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let Some((w, h)) = s.split_once(['x', 'X']) else {
        bail!("expected WxH, e.g. 64x64")
    };
    let w: u32 = w
        .trim()
        .parse()
        .with_context(|| format!("bad width {w:?}"))?;
    let h: u32 = h
        .trim()
        .parse()
        .with_context(|| format!("bad height {h:?}"))?;
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        bail!("both sides must be between 1 and 16384");
    }
    Ok((w, h))
}

/// `RRGGBB` (6 hex digits, optional leading `#`) as 0x00RRGGBB.
pub fn parse_color(s: &str) -> anyhow::Result<u32> {
    let hex = s.strip_prefix('#').unwrap_or(s);
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("expected RRGGBB (6 hex digits), e.g. ff0000");
    }
    u32::from_str_radix(hex, 16).with_context(|| format!("{s:?} is not hexadecimal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        window: DmabufWindowArgs,
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64x32").unwrap(), (64, 32));
        assert_eq!(parse_size(" 8 X 9 ").unwrap(), (8, 9));
        for bad in ["", "64", "0x5", "5x0", "-1x4", "axb", "16385x1", "4x4x4"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn colors() {
        assert_eq!(parse_color("ff0000").unwrap(), 0xff0000);
        assert_eq!(parse_color("#00Ff80").unwrap(), 0x00ff80);
        for bad in ["", "fff", "ff00000", "gg0000", "+f0000", "#", "12345"] {
            assert!(parse_color(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_and_limits() {
        let p = Probe::try_parse_from(["x"]).unwrap();
        assert_eq!(p.window.size, (64, 64));
        assert_eq!(p.window.buffers, 2);
        assert_eq!(p.window.frames, None);
        assert_eq!(p.window.allocator, AllocatorChoice::Auto);

        let p = Probe::try_parse_from([
            "x",
            "--size",
            "16x8",
            "--color",
            "0000ff",
            "--frames",
            "3",
            "--buffers",
            "3",
            "--allocator",
            "udmabuf",
            "--device",
            "/dev/dri/card0",
        ])
        .unwrap();
        assert_eq!(p.window.size, (16, 8));
        assert_eq!(p.window.color, Some(0xff));
        assert_eq!(p.window.frames, Some(3));
        assert_eq!(p.window.buffers, 3);
        assert_eq!(p.window.allocator, AllocatorChoice::Udmabuf);

        // One buffer can never be reused (it is only released when replaced); 0 frames is
        // nothing to do; unknown allocators are refused.
        for bad in [
            &["x", "--buffers", "1"][..],
            &["x", "--buffers", "9"],
            &["x", "--frames", "0"],
            &["x", "--allocator", "dumb"],
            &["x", "--size", "0x1"],
            &["x", "--color", "red"],
        ] {
            let err = Probe::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }
}
