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
//! Binaries, each a thin wrapper over its module here (so tests run the same logic in-process):
//!
//! | binary | module | what it does |
//! |---|---|---|
//! | `shm-client` | (the harness) | an animated (or solid) wl_shm window paced by frame callbacks |
//! | `syncobj-client` | [`syncobj_client`] | linux-drm-syncobj-v1 done right: a timeline per buffer, acquire points signalled by a worker thread, reuse after release |
//! | `explicit-sync-v1-client` | [`explicit_sync_v1_client`] | zwp_linux_explicit_synchronization_v1: sync_file acquire fences, a release per commit |
//! | `dmabuf-implicit` | [`dmabuf_implicit`] | dma-bufs without explicit sync; `--busy-ms` keeps them busy with vgem write fences |
//! | `misbehave` | [`misbehave`] | breaks one linux-drm-syncobj-v1 rule and checks the documented answer |
//!
//! The dma-buf clients share [`dmabuf_window`] (connection, linux-dmabuf, device, allocator,
//! window), [`allocator`] (GBM, vgem, udmabuf), [`options`] and [`paint`]. The kernel-object
//! helpers ([`vgem`], [`udmabuf`], [`syncobj_timeline`], [`linux_dmabuf`], [`drm_nodes`]) are also
//! what fencegate's kernel tests use.

mod client;
mod dispatch;
mod event_log;
mod shm;
mod state;
mod window;

pub mod allocator;
pub mod dmabuf_implicit;
pub mod dmabuf_window;
pub mod drm_nodes;
pub mod explicit_sync_v1_client;
pub mod fence_worker;
pub mod linux_dmabuf;
pub mod misbehave;
pub mod options;
pub mod paint;
pub mod syncobj_client;
pub mod syncobj_timeline;
pub mod udmabuf;
pub mod vgem;

pub use client::{Client, Timeout};
pub use event_log::{EventLog, IgnoreEvents};
pub use state::{ClientState, OutputInfo, Presented, WindowId, WindowState};
