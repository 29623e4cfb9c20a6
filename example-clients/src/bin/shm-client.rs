//! `shm-client`: the baseline window every compositor must get right, drawn with wl_shm buffers.
//!
//! It animates diagonal stripes over a colour gradient (or shows a solid `--color`), drawing each
//! frame when the previous frame's callback fires, so it exercises the compositor's frame pacing
//! and buffer release without any GPU or fence involvement.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use fencegate_clients::{Client, WindowId};

/// How long the compositor gets to answer the initial commit with a configure.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// An animated (or solid) wl_shm window, paced by frame callbacks.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Window title.
    #[arg(long, default_value = "shm-client")]
    title: String,

    /// xdg_toplevel app_id.
    #[arg(long, default_value = "fencegate.shm-client")]
    app_id: String,

    /// Buffer size WxH, used where the compositor's configure leaves the size to us.
    #[arg(long, default_value = "256x256", value_parser = parse_size)]
    size: (i32, i32),

    /// Always use --size, even when the compositor suggests another size.
    #[arg(long)]
    fixed_size: bool,

    /// Solid fill colour RRGGBB (hex); disables the animation.
    #[arg(long, value_parser = parse_color)]
    color: Option<u32>,

    /// Exit 0 after N frame callbacks (default: run until the compositor closes the window).
    #[arg(long, value_name = "N")]
    frames: Option<u32>,

    /// Ask to be fullscreen.
    #[arg(long)]
    fullscreen: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shm-client: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut client = Client::connect_env()?;
    println!("shm-client: connected to {}", client.endpoint());

    let w = client.try_create_window(&args.title, &args.app_id)?;
    if args.fullscreen {
        client.set_fullscreen(w, true);
    }
    client.wait_configured(w, CONFIGURE_TIMEOUT)?;

    // A solid window without --frames has nothing to animate: it only redraws on configures.
    let idle_between_configures = args.color.is_some() && args.frames.is_none();
    let mut frame = 0u32;
    loop {
        let window = &client.state.windows[w.0];
        if window.close_requested {
            report(&client, w, "closed by the compositor");
            return Ok(());
        }
        if args.frames.is_some_and(|n| window.frames_done >= n) {
            report(&client, w, "done");
            return Ok(());
        }

        let (width, height) = pick_size(args, window.last_configure_size);
        let configures_seen = window.configures;
        let size_seen = window.last_configure_size;
        let frames_seen = window.frames_done;
        match args.color {
            Some(rgb) => client.draw_solid(w, width, height, 0xff00_0000 | rgb)?,
            None => client.draw_with(w, width, height, |px| paint_stripes(px, width, frame))?,
        }
        frame = frame.wrapping_add(1);

        // Frame pacing: sleep until the compositor wants the next frame. A resize can't wait for
        // that (a hidden window may never get a callback), so a new configure size wakes us too.
        client
            .dispatch_until(Duration::MAX, "the next frame callback or configure", |s| {
                let win = &s.windows[w.0];
                let reconfigured = win.configures != configures_seen;
                let resized = reconfigured && win.last_configure_size != size_seen;
                win.close_requested
                    || resized
                    || if idle_between_configures {
                        reconfigured
                    } else {
                        win.frames_done > frames_seen
                    }
            })
            .context("while waiting for the compositor")?;
    }
}

/// The compositor's suggested size wins per axis unless it is 0 ("you pick") or `--fixed-size`.
fn pick_size(args: &Args, suggested: (i32, i32)) -> (i32, i32) {
    if args.fixed_size {
        return args.size;
    }
    let pick = |suggested: i32, ours: i32| if suggested > 0 { suggested } else { ours };
    (
        pick(suggested.0, args.size.0),
        pick(suggested.1, args.size.1),
    )
}

/// Diagonal stripes sliding 4 px per frame over a red/green gradient whose blue cycles with time,
/// so both motion and tearing are easy to spot.
fn paint_stripes(pixels: &mut [u32], width: i32, frame: u32) {
    let width = width as usize; // positive: draw_with only calls us for valid sizes
    let height = pixels.len() / width;
    let shift = frame as usize * 4;
    let blue = ((frame * 3) % 512) as i32;
    let blue = (if blue > 255 { 511 - blue } else { blue }) as u32;
    for (y, row) in pixels.chunks_exact_mut(width).enumerate() {
        let green = (y * 255 / height.max(1)) as u32;
        for (x, pixel) in row.iter_mut().enumerate() {
            let red = (x * 255 / width) as u32;
            let dark_stripe = ((x + y + shift) / 24) % 2 == 1;
            let (r, g, b) = if dark_stripe {
                (red / 3, green / 3, blue / 3)
            } else {
                (red, green, blue)
            };
            *pixel = 0xff00_0000 | (r << 16) | (g << 8) | b;
        }
    }
}

fn report(client: &Client, w: WindowId, why: &str) {
    let win = &client.state.windows[w.0];
    println!(
        "shm-client: {why}: {} frame callbacks, {} commits, {} presented, {} discarded",
        win.frames_done,
        win.commits,
        win.presented.len(),
        win.discarded
    );
}

fn parse_size(s: &str) -> anyhow::Result<(i32, i32)> {
    let Some((w, h)) = s.split_once(['x', 'X']) else {
        bail!("expected WxH, e.g. 256x256")
    };
    let w: i32 = w
        .trim()
        .parse()
        .with_context(|| format!("bad width {w:?}"))?;
    let h: i32 = h
        .trim()
        .parse()
        .with_context(|| format!("bad height {h:?}"))?;
    if w <= 0 || h <= 0 || w > 16384 || h > 16384 {
        bail!("both sides must be between 1 and 16384");
    }
    Ok((w, h))
}

fn parse_color(s: &str) -> anyhow::Result<u32> {
    let hex = s.trim_start_matches('#');
    if hex.len() != 6 {
        bail!("expected RRGGBB (6 hex digits), e.g. ff0000");
    }
    u32::from_str_radix(hex, 16).with_context(|| format!("{s:?} is not hexadecimal"))
}
