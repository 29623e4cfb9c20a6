//! Server-side Wayland protocol modules for fence handling, for any Smithay compositor.
//!
//! Each protocol is one module shaped like Smithay's own `src/wayland/*`: a `*State` that owns
//! the global, a `*Handler` trait the compositor implements, per-object user data types, a
//! `*CachedState` for double-buffered surface state, and a delegate macro, so a compositor
//! wires it in a few lines. Built against Smithay 0.7 (crates.io): the request impls sit on the
//! State type and a `delegate_fencegate_*!` macro forwards to them.
//!
//! - [`drm_syncobj`]: linux-drm-syncobj-v1 (timeline acquire and release points), with the
//!   acquire-point wait every compositor needs shipped as one call.
//!
//! - [`explicit_sync`]: zwp_linux_explicit_synchronization_v1 (sync_file acquire fences, one
//!   release event per commit), sharing the acquire wait ([`acquire_wait`]) with drm_syncobj.
//!
//! - [`implicit_sync`]: dma-bufs committed without explicit sync wait for their implicit write
//!   fences (exported as sync_files); an acquire fence can be imported into a dma-buf for
//!   implicit-sync consumers. [`TimeoutAction`] says what every fence wait does at its timeout.
//!
//! Planned: linux-dmabuf v4+ feedback with scanout tranches. The fence model they build on is [`fence_bridge`].

#![warn(missing_docs)]

pub mod acquire_wait;
mod attachment;
mod buffer_reuse;
mod commit_blocker;
pub mod drm_syncobj;
pub mod explicit_sync;
pub mod implicit_sync;
mod owed;
pub mod release_fence;
mod surface_link;
pub mod wait_times;

pub use commit_blocker::hint_deadline;
pub use implicit_sync::TimeoutAction;
pub use release_fence::{Reader, ReleaseFence, Sampled, ScanoutFence};

pub use fence_bridge;

/// What the delegate macros expand to; not public API.
#[doc(hidden)]
pub mod __reexports {
    pub use smithay::reexports::wayland_protocols;
    pub use smithay::reexports::wayland_server;
}
