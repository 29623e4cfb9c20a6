//! Linux dma-fence semantics in userspace Rust.
//!
//! fence-bridge models the kernel's `struct dma_fence` (`include/linux/dma-fence.h`,
//! `drivers/dma-buf/dma-fence.c`): one refcounted object, [`Fence`], with small verbs —
//! [`signal`](Fence::signal), [`set_error`](Fence::set_error), [`status`](Fence::status),
//! [`add_callback`](Fence::add_callback), [`wait_timeout`](Fence::wait_timeout),
//! [`is_later`](Fence::is_later) — and one backend trait, [`FenceOps`], through which every kind of
//! fence plugs in. This crate holds the core model and the software timeline ([`SwTimeline`],
//! like sw_sync); sync_file, DRM syncobj, dma-buf, KMS and EGL fences are further backends. Their
//! modules ([`sync_file`], [`syncobj`], [`dma_buf`], [`kms`], `egl` with the `smithay` feature,
//! and [`drm_device`] for the device they need) open with the kernel semantics they rely on;
//! every type is also re-exported here.
//!
//! # Fences overview
//!
//! A fence is a one-shot completion event. It belongs to a *context* (a timeline,
//! [`ContextId`], allocated in blocks by [`context_alloc`]) and carries a *seqno*; fences of one
//! context signal in seqno order, so [`Fence::is_later`] orders them and
//! [`latest_per_context`] keeps only the one worth waiting for. A fence is pending, then
//! signalled — successfully or with an error ([`FenceStatus`]) — at a `CLOCK_MONOTONIC`
//! [`Ktime`] timestamp that compares with the kernel's.
//!
//! # Lifecycle
//!
//! Listed in chronological order; the order is final (a fence never goes back).
//!
//! 1. **created** — [`Fence::new`] (or [`FenceContext::create_fence`],
//!    [`SwTimeline::create_fence`]): pending, nothing armed.
//! 2. **signalling enabled** — lazily, once: on the first wait with a non-zero timeout, callback,
//!    [`poll_fd`](Fence::poll_fd) or explicit [`enable_signaling`](Fence::enable_signaling), the
//!    backend's [`FenceOps::enable_signaling`] arms whatever it needs (eventfd, poll
//!    registration, thread). Fences nobody waits for never cost more than their allocation;
//!    [`stats`] and [`Fence::signaling_enabled`] let tests check this.
//! 3. **signalled** — once; an error set with [`set_error`](Fence::set_error) before it is part of
//!    the result; waiters wake and callbacks run exactly once, in the order they were added.
//! 4. **released** — when the last handle drops. Pending callbacks at that point are run after
//!    force-signalling with [`FenceError::EDEADLK`] (as `dma_fence_release()` does); then
//!    [`FenceOps::release`].
//!
//! # Fence cross-driver contract
//!
//! As in the kernel: once signalling is enabled, a fence **must** signal in reasonable time —
//! backends back every wait on hardware or another process with a timeout or an error path, and
//! a backend that gives up signals with an error rather than never. Waiters should still prefer
//! the bounded [`Fence::wait_timeout`], [`wait_any_timeout`] and [`wait_all_timeout`].
//!
//! # Signalling and callbacks
//!
//! Anyone holding a [`Fence`] may signal it; backends signal through the weak
//! [`FenceSignaler`] they get in [`FenceOps::enable_signaling`], from any thread or event loop.
//! Signalling is idempotent: the first signal wins and later ones return `false`. Callbacks and
//! backend methods are always called with no lock of this crate held, so they may call back into
//! the fence API (adding a callback from a callback, signalling another fence, waiting with a
//! zero timeout). Callbacks run on the signalling thread and should be short.
//!
//! # Deadline hints
//!
//! [`Fence::set_deadline`] passes "I'd like this by then" (typically the next vblank) to the
//! backend's [`FenceOps::set_deadline`]; it is a hint, never a guarantee.
//!
//! # Tracing
//!
//! Events with target `fence_bridge`: `fence emit`, `fence enable signaling`, `fence signal`,
//! `fence wait start`/`end` (trace level), and a warning for a fence released with pending
//! callbacks. They cost one atomic load when no subscriber listens.
//!
//! # Example
//!
//! ```
//! use fence_bridge::{wait_any_timeout, FenceError, FenceStatus, SwTimeline};
//! use std::sync::mpsc;
//! use std::time::Duration;
//!
//! // A software timeline, advanced by a "producer" thread.
//! let timeline = SwTimeline::new("producer");
//! let frame1 = timeline.create_fence(1);
//! let frame2 = timeline.create_fence(2);
//! assert!(frame2.is_later(&frame1));
//! assert!(!frame1.signaling_enabled()); // lazily: nothing armed yet
//!
//! // A callback: runs once, when the point signals.
//! let (tx, rx) = mpsc::channel();
//! frame1.add_callback(move |info| tx.send(info.status()).unwrap()).unwrap();
//!
//! std::thread::scope(|s| {
//!     s.spawn(|| timeline.advance(1));
//!     // Wait for whichever signals first.
//!     let idx = wait_any_timeout(&[frame2.clone(), frame1.clone()], Some(Duration::from_secs(10)));
//!     assert_eq!(idx, Ok(1));
//! });
//! assert_eq!(rx.recv().unwrap(), FenceStatus::Signaled);
//! // Adding a callback now reports "already signalled" and does not call it.
//! assert!(frame1.add_callback(|_| unreachable!()).is_err());
//!
//! // Destroying the timeline fails what it never reached.
//! drop(timeline);
//! assert_eq!(frame2.wait(), Err(FenceError::ENOENT));
//! ```

#![warn(missing_docs)]

mod callback_list;
mod context;
pub mod dma_buf;
pub mod drm_device;
#[cfg(feature = "smithay")]
pub mod egl;
mod error;
mod fence;
mod ioctl;
pub mod kms;
mod ops;
mod order;
mod poll;
mod reactor;
#[cfg(feature = "calloop")]
pub mod source;
mod stats;
mod sw_timeline;
pub mod sync_file;
pub mod syncobj;
mod syncobj_point;
mod time;
#[cfg(feature = "trace-export")]
pub mod trace_export;
mod wait;

pub use context::{context_alloc, ContextId, ContextRange, FenceContext};
pub use dma_buf::{Access, DmaBuf};
pub use drm_device::DrmDevice;
#[cfg(feature = "smithay")]
pub use egl::{fence_from_sync_point, EglFenceError, SyncPointFence};
pub use error::{AlreadySignaled, FenceError, Timeout, WaitAllError, WaitError};
pub use fence::{CallbackHandle, Fence, FenceSignaler, FenceStatus, SignalInfo};
pub use kms::{
    find_property, read_flip_events, FenceProps, FencedCommit, FlipEvent, OutFence, IN_FENCE_FD,
    OUT_FENCE_PTR,
};
pub use ops::FenceOps;
pub use order::{latest_per_context, seqno_is_later};
pub use poll::FencePollFd;
#[cfg(feature = "calloop")]
pub use source::{FenceEvent, FenceSource, Ready, Remaining, Signaled, WaitMode};
pub use stats::{stats, Stats};
pub use sw_timeline::SwTimeline;
pub use sync_file::{SyncFenceInfo, SyncFile, SyncFileFence, SyncFileInfo};
pub use syncobj::{Syncobj, SyncobjWaitFlags};
pub use syncobj_point::{wait_points, SyncobjPoint};
pub use time::Ktime;
#[cfg(feature = "trace-export")]
pub use trace_export::{ChromeTrace, ChromeTraceLayer};
pub use wait::{wait_all_timeout, wait_any_timeout};
