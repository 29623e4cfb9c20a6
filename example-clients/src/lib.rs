//! Wayland clients for exercising fencegate compositors, and the blocking harness they share.
//!
//! The harness ([`Client`]) is deliberately synchronous: tests and small example programs read
//! top to bottom ("create a window, wait for its configure, draw, wait for the frame callback")
//! and every wait has a timeout, so a compositor bug fails a test instead of hanging it.
//!
//! ```no_run
//! use std::time::Duration;
//! use fencegate_clients::Client;
//!
//! let mut client = Client::connect_env()?;
//! let w = client.create_window("demo", "fencegate.demo");
//! client.wait_configured(w, Duration::from_secs(5))?;
//! client.draw_solid(w, 64, 64, 0xff_ff0000)?;
//! client.dispatch_until(Duration::from_secs(5), "a frame callback", |s| s.windows[w.0].frames_done > 0)?;
//! # anyhow::Ok(())
//! ```
//!
//! Binaries: `shm-client`, an animated (or solid) shm window paced by frame callbacks.

mod client;
mod dispatch;
mod event_log;
mod shm;
mod state;
mod window;

pub use client::{Client, Timeout};
pub use event_log::{EventLog, IgnoreEvents};
pub use state::{ClientState, OutputInfo, Presented, WindowId, WindowState};
