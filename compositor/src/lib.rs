//! fencegate: a small Smithay compositor that waits on client fences before it latches a commit,
//! without ever blocking its event loop.
//!
//! The binary is a thin wrapper around [`run`]; tests and tools embed the same compositor through
//! [`testing::TestServer`].

pub mod backend;
pub mod check;
pub mod client_log;
pub mod config;
mod frame_clock;
mod handlers;
mod input;
mod output_hotplug;
pub mod placement;
pub mod render;
pub mod screenshot;
mod socket;
mod spawn;
mod startup;
pub mod state;
pub mod testing;

pub use config::{BackendChoice, Config};
pub use startup::{run, Setup};
