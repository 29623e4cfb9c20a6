//! Server-side Wayland protocol modules for fence handling, for any Smithay compositor.
//!
//! Each protocol will be one module shaped like Smithay's own `src/wayland/*`: a `*State` that
//! owns the global, a `*Handler` trait the compositor implements, and a delegate macro, so a
//! compositor wires it in a few lines:
//!
//! - linux-drm-syncobj-v1 (timeline acquire and release points),
//! - zwp_linux_explicit_synchronization_v1 (sync_file fences, per-commit release),
//! - implicit-to-explicit conversion for dma-bufs committed without explicit sync,
//! - linux-dmabuf v4+ feedback with scanout tranches.
//!
//! None of them is implemented yet: this crate exists so the workspace has its final shape.
//! The fence model they build on is [`fence_bridge`].

pub use fence_bridge;
