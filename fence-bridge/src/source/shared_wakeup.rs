//! [`SharedWakeup`]: how a [`super::FenceSource`] waits for several software fences at once —
//! one eventfd, and a callback on each fence that queues the fence's slot and writes it.
//!
//! This is the kernel's wait-any (`dma_fence_wait_any_timeout()`: one waiter, a
//! `dma_fence_add_callback()` per fence) instead of an eventfd per fence: setup costs one eventfd
//! and one registration whatever the number of fences, and a wakeup names the fences that
//! signalled, so nothing is searched.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use calloop::generic::Generic;
use calloop::{EventSource, Interest, Mode, Poll, PostAction, Readiness, Token, TokenFactory};
use rustix::event::{eventfd, EventfdFlags};

use crate::callback_list::SignalWaiter;
use crate::fence::{CallbackHandle, Fence, FenceStatus, SignalInfo};
use crate::stats;
use crate::time::Ktime;

/// A fence that signalled, as its callback queued it: (slot, status, timestamp).
pub(super) type Queued = (usize, FenceStatus, Ktime);

struct Shared {
    /// Written by every callback; read (reset) by the source.
    eventfd: OwnedFd,
    queue: Mutex<Vec<Queued>>,
}

impl Shared {
    fn push(&self, queued: Queued) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(queued);
        crate::poll::notify(&self.eventfd);
    }
}

/// The callback on each watched fence: no closure, no allocation, only the slot.
impl SignalWaiter for Shared {
    fn signaled(&self, slot: usize, info: &SignalInfo) {
        self.push((slot, info.status(), info.timestamp));
    }
}

/// The fd calloop watches: the shared eventfd.
struct WakeupFd(Arc<Shared>);

impl AsFd for WakeupFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.eventfd.as_fd()
    }
}

/// The eventfd and queue that the callbacks of one source's software fences share, with the
/// [`Generic`] that watches the eventfd.
pub(super) struct SharedWakeup {
    shared: Arc<Shared>,
    watch: Generic<WakeupFd>,
    /// The queue's other buffer: [`take`](Self::take) swaps it in, so that the signalling
    /// thread's push never allocates.
    spare: Vec<Queued>,
}

/// Queue entries allocated up front, in each of the two buffers.
const QUEUE_CAPACITY: usize = 4;

impl SharedWakeup {
    /// One eventfd, not yet registered.
    pub(super) fn new() -> io::Result<Self> {
        let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        stats::bump(&stats::EVENTFDS_CREATED);
        let shared = Arc::new(Shared {
            eventfd,
            queue: Mutex::new(Vec::with_capacity(QUEUE_CAPACITY)),
        });
        Ok(SharedWakeup {
            watch: Generic::new(WakeupFd(shared.clone()), Interest::READ, Mode::Level),
            shared,
            spare: Vec::with_capacity(QUEUE_CAPACITY),
        })
    }

    /// Queues `slot` when `fence` signals (at once if it already has). The returned guard
    /// removes the callback when dropped.
    pub(super) fn watch(&self, slot: usize, fence: &Fence) -> CallbackGuard {
        match fence.add_waiter(self.shared.clone(), slot) {
            Ok(handle) => CallbackGuard {
                fence: fence.clone(),
                handle: Some(handle),
            },
            Err(_already_signaled) => {
                let (status, timestamp) = fence
                    .signaled_result()
                    .expect("add_callback refuses only a signalled fence");
                self.shared.push((slot, status, timestamp));
                CallbackGuard {
                    fence: fence.clone(),
                    handle: None,
                }
            }
        }
    }

    /// The fences queued since the last call, in the order they signalled. Hand the emptied
    /// buffer back with [`recycle`](Self::recycle).
    pub(super) fn take(&mut self) -> Vec<Queued> {
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(
            &mut *self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            spare,
        )
    }

    /// Keeps an emptied buffer from [`take`](Self::take) for the next swap.
    pub(super) fn recycle(&mut self, mut buffer: Vec<Queued>) {
        buffer.clear();
        self.spare = buffer;
    }

    /// Makes the eventfd unreadable again. Take the queue once more afterwards: a fence queued
    /// before the reset but after the last take has no write left to wake the loop.
    pub(super) fn reset(&self) {
        // EAGAIN only means it was not readable.
        let _ = rustix::io::read(&self.shared.eventfd, &mut [0u8; 8]);
    }

    /// Whether `token` is this eventfd's.
    pub(super) fn owns(&mut self, readiness: Readiness, token: Token) -> io::Result<bool> {
        let mut ours = false;
        // Generic skips tokens that are not its own without calling back.
        self.watch.process_events(readiness, token, |_, _| {
            ours = true;
            Ok(PostAction::Continue)
        })?;
        Ok(ours)
    }

    pub(super) fn register(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        self.watch.register(poll, token_factory)
    }

    pub(super) fn reregister(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        self.watch.reregister(poll, token_factory)
    }

    pub(super) fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.watch.unregister(poll)
    }
}

/// A fence's callback into a [`SharedWakeup`]; removed when dropped (`dma_fence_remove_callback`),
/// so that a source that stops waiting leaves nothing behind on its fences.
pub(super) struct CallbackGuard {
    fence: Fence,
    /// `None` when the fence had signalled before the callback could be added.
    handle: Option<CallbackHandle>,
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.fence.remove_callback(handle);
        }
    }
}
