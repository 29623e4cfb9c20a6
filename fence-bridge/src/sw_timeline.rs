//! [`SwTimeline`]: fences signalled from userspace by advancing a counter, like the kernel's
//! sw_sync (`drivers/dma-buf/sw_sync.c`). For CPU clients and tests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::context::{context_alloc, ContextId};
use crate::error::FenceError;
use crate::fence::{Fence, TARGET};
use crate::ops::FenceOps;
use crate::time::Ktime;

/// A software timeline: a counter, and fences ("points") that signal when it reaches them.
///
/// Like sw_sync: [`create_fence(n)`](SwTimeline::create_fence) makes the point `n`;
/// [`advance`](SwTimeline::advance) / [`signal_to`](SwTimeline::signal_to) move the counter and
/// signal every point at or below it, in seqno order, all with one timestamp. Points are
/// ordinary [`Fence`]s: lazily enabled, and poll-able through [`Fence::poll_fd`] (an eventfd made
/// only when asked). A software timeline arms nothing of its own: no fd, no thread.
///
/// Seqnos are 64-bit and compare as plain `u64` (sw_sync's are 32-bit and wrap); the counter
/// starts at 0 and never goes back.
///
/// # Ownership
///
/// `SwTimeline` is the owner handle, like the sw_sync file: not `Clone` (share it with an `Arc` or
/// a scoped thread). While it lives it holds a reference to every pending point — as sw_sync's
/// point list does — so a callback on a point fires when the counter reaches it even if every
/// other handle was dropped. **Dropping it signals every pending point with
/// [`FenceError::ENOENT`]**, as closing a sw_sync timeline file does; points keep the timeline's
/// name alive for diagnostics.
///
/// ```
/// use fence_bridge::{FenceError, FenceStatus, SwTimeline};
///
/// let timeline = SwTimeline::new("frames");
/// let (p1, p2, p3) = (timeline.create_fence(1), timeline.create_fence(2), timeline.create_fence(3));
/// assert_eq!(timeline.advance(2), 2); // signals p1 and p2
/// assert!(p1.is_signaled() && p2.is_signaled() && !p3.is_signaled());
/// assert_eq!(p1.timestamp(), p2.timestamp()); // one timestamp per advance
/// drop(timeline);
/// assert_eq!(p3.status(), FenceStatus::Error(FenceError::ENOENT));
/// ```
pub struct SwTimeline {
    shared: Arc<Shared>,
}

struct Shared {
    context: ContextId,
    name: Box<str>,
    state: Mutex<State>,
}

struct State {
    /// The counter: every point `<= value` has signalled.
    value: u64,
    /// Pending points in seqno order (at most one fence per seqno: `create_fence` reuses it).
    /// Points usually come in order, so creating one appends and an advance takes from the
    /// front; one out of order is found by binary search and inserted, shifting the shorter
    /// side. A flat buffer rather than a `BTreeMap`: the signal that wakes a waiter reads one
    /// buffer instead of a tree node, which took about 0.02x off the lone fence's
    /// signal-to-callback ratio in `bench_fences`.
    pending: VecDeque<(u64, Fence)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Fences are signalled after this lock is released, so it is never held across user code.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The backend of a point: nothing to arm, the timeline signals it.
struct SwPointOps {
    timeline: Arc<Shared>,
}

impl FenceOps for SwPointOps {
    fn driver_name(&self) -> &str {
        "sw_sync"
    }

    fn timeline_name(&self) -> &str {
        &self.timeline.name
    }
}

impl SwTimeline {
    /// A new timeline at value 0, with a freshly allocated context.
    pub fn new(name: &str) -> Self {
        SwTimeline {
            shared: Arc::new(Shared {
                context: context_alloc(1).first(),
                name: name.into(),
                state: Mutex::new(State {
                    value: 0,
                    pending: VecDeque::new(),
                }),
            }),
        }
    }

    /// The timeline's context.
    pub fn context(&self) -> ContextId {
        self.shared.context
    }

    /// The timeline's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The counter: every point at or below it has signalled.
    pub fn value(&self) -> u64 {
        self.shared.lock().value
    }

    /// How many points are pending.
    pub fn pending_count(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// The fence for point `seqno` (`SW_SYNC_IOC_CREATE_FENCE`).
    ///
    /// If the counter is already at or past `seqno`, the fence is created signalled. If a point
    /// `seqno` is pending, it is returned (as sw_sync does), so one seqno never has two pending
    /// fences. Arms nothing.
    pub fn create_fence(&self, seqno: u64) -> Fence {
        let mut st = self.shared.lock();
        // Where the new point goes in `pending` (`None`: already reached): after the last, as
        // points usually come, else where a binary search puts it.
        let at = if seqno <= st.value {
            None
        } else {
            match st.pending.back() {
                Some(&(last, _)) if last >= seqno => {
                    match st.pending.binary_search_by_key(&seqno, |&(s, _)| s) {
                        Ok(same) => return st.pending[same].1.clone(),
                        Err(at) => Some(at),
                    }
                }
                _ => Some(st.pending.len()),
            }
        };
        let fence = Fence::new(
            self.shared.context,
            seqno,
            SwPointOps {
                timeline: self.shared.clone(),
            },
        );
        if let Some(at) = at {
            st.pending.insert(at, (seqno, fence.clone()));
        } else {
            drop(st);
            fence.signal();
        }
        fence
    }

    /// Advances the counter by `inc` (`SW_SYNC_IOC_INC`), saturating at `u64::MAX`, and signals
    /// the points reached. Returns how many points this call signalled.
    pub fn advance(&self, inc: u64) -> usize {
        self.bump(|value| value.saturating_add(inc))
    }

    /// Moves the counter to `value` if that is ahead of it (never back) and signals the points
    /// reached. Returns how many points this call signalled.
    pub fn signal_to(&self, value: u64) -> usize {
        self.bump(|current| current.max(value))
    }

    /// Signals, outside the lock, in seqno order with one timestamp. Concurrent calls each signal
    /// their own points in order, but may interleave with each other.
    fn bump(&self, new_value: impl FnOnce(u64) -> u64) -> usize {
        let reached = {
            let mut st = self.shared.lock();
            let value = new_value(st.value);
            if value <= st.value {
                return 0;
            }
            st.value = value;
            if st.pending.back().is_none_or(|&(last, _)| last <= value) {
                // Every point reached (the usual case): no allocation before the signal.
                std::mem::take(&mut st.pending)
            } else {
                let reached = st.pending.partition_point(|&(s, _)| s <= value);
                st.pending.drain(..reached).collect()
            }
        };
        // Straight to the signal (it wakes the waiters); the trace comes after.
        let timestamp = Ktime::now();
        let points = reached.len();
        let mut count = 0;
        for (_, fence) in reached {
            count += usize::from(fence.signal_timestamp(timestamp));
        }
        tracing::trace!(
            target: TARGET,
            context = self.shared.context.as_u64(),
            points,
            "sw timeline advance"
        );
        count
    }
}

impl Drop for SwTimeline {
    /// Signals every pending point with `ENOENT`, as closing a sw_sync timeline does.
    fn drop(&mut self) {
        let pending = std::mem::take(&mut self.shared.lock().pending);
        if pending.is_empty() {
            return;
        }
        tracing::debug!(
            target: TARGET,
            context = self.shared.context.as_u64(),
            points = pending.len(),
            "sw timeline destroyed with pending points"
        );
        for (_, fence) in pending {
            fence.signal_with_error(FenceError::ENOENT);
        }
    }
}

impl fmt::Debug for SwTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("SwTimeline")
            .field("name", &self.shared.name)
            .field("context", &self.shared.context)
            .field("value", &st.value)
            .field("pending", &st.pending.len())
            .finish()
    }
}
