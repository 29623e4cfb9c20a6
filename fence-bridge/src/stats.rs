//! Process-wide counters, so tests (and curious users) can check that signalling stays lazy.

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) static FENCES_CREATED: AtomicU64 = AtomicU64::new(0);
pub(crate) static SIGNALING_ENABLED: AtomicU64 = AtomicU64::new(0);
pub(crate) static FENCES_SIGNALED: AtomicU64 = AtomicU64::new(0);
pub(crate) static CALLBACKS_RUN: AtomicU64 = AtomicU64::new(0);
pub(crate) static EVENTFDS_CREATED: AtomicU64 = AtomicU64::new(0);
pub(crate) static RELEASED_WITH_PENDING: AtomicU64 = AtomicU64::new(0);

#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of fence-bridge's process-wide counters (see [`stats`]).
///
/// The counters only grow. Tests running in parallel in one process share them, so compare
/// two snapshots taken around code that nothing else runs concurrently with, or use the
/// per-fence [`crate::Fence::signaling_enabled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Fences created ([`crate::Fence::new`] and everything built on it).
    pub fences_created: u64,
    /// Calls made to [`crate::FenceOps::enable_signaling`]: at most one per fence, and only once
    /// someone waits, adds a callback, asks for a poll fd or calls
    /// [`crate::Fence::enable_signaling`].
    pub signaling_enabled: u64,
    /// Fences signalled (with or without an error).
    pub fences_signaled: u64,
    /// Callbacks run.
    pub callbacks_run: u64,
    /// eventfds created by [`crate::Fence::poll_fd`].
    pub eventfds_created: u64,
    /// Fences released with waiters: callbacks pending, or a [`crate::FencePollFd`] of the core's
    /// eventfd still held by someone (force-signalled with `EDEADLK`). The core's own reference
    /// to its poll eventfd is not a waiter.
    pub released_with_pending_callbacks: u64,
}

impl Stats {
    /// The per-counter difference `self - earlier`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            fences_created: self.fences_created - earlier.fences_created,
            signaling_enabled: self.signaling_enabled - earlier.signaling_enabled,
            fences_signaled: self.fences_signaled - earlier.fences_signaled,
            callbacks_run: self.callbacks_run - earlier.callbacks_run,
            eventfds_created: self.eventfds_created - earlier.eventfds_created,
            released_with_pending_callbacks: self.released_with_pending_callbacks
                - earlier.released_with_pending_callbacks,
        }
    }
}

/// Reads fence-bridge's process-wide counters.
///
/// ```
/// use fence_bridge::{stats, SwTimeline};
///
/// let before = stats();
/// let timeline = SwTimeline::new("doc");
/// let fence = timeline.create_fence(1);
/// // Nobody waits yet: nothing is armed.
/// assert_eq!(stats().since(&before).eventfds_created, 0);
/// assert!(!fence.signaling_enabled());
/// # drop(fence);
/// ```
pub fn stats() -> Stats {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Stats {
        fences_created: get(&FENCES_CREATED),
        signaling_enabled: get(&SIGNALING_ENABLED),
        fences_signaled: get(&FENCES_SIGNALED),
        callbacks_run: get(&CALLBACKS_RUN),
        eventfds_created: get(&EVENTFDS_CREATED),
        released_with_pending_callbacks: get(&RELEASED_WITH_PENDING),
    }
}
