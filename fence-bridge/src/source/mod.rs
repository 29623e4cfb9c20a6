//! [`FenceSource`]: a calloop event source that waits for a set of fences of any kind.
//!
//! # Overview
//!
//! One source, one job: wait for the fences it was built with, report them, then remove itself.
//! It is a composite in calloop's sense: sub-sources with their own sub-tokens from the
//! [`TokenFactory`], plus an optional [`Timer`] for the timeout. How a pending fence is watched
//! depends on its kind:
//!
//! * a **kernel fence** (a sync_file, a syncobj eventfd — [`crate::FenceOps::native_poll_fd`])
//!   registers its **own** fd in a [`Generic`]: no extra eventfd, no thread;
//! * a **software fence** that is the only one registers its [`Fence::poll_fd`], the core's
//!   eventfd, which the signal writes first thing: the fewest steps from signal to wakeup;
//! * **two or more software fences** share one eventfd (`SharedWakeup`): a callback on each
//!   queues the fence's slot and writes it, the kernel's own wait-any (one waiter, a
//!   `dma_fence_add_callback()` per fence). Setup is one eventfd and one registration for any
//!   number of fences, and a wakeup names the fences that signalled. The callback is the
//!   wakeup itself with the fence's slot, not a boxed closure (a kernel waiter embeds its
//!   `struct dma_fence_cb` the same way), and signalling allocates nothing.
//!
//! # Implementation notes
//!
//! * **Already signalled costs nothing.** [`FenceSource::new`] asks [`Fence::is_signaled`]
//!   first (for a kernel fence: one ioctl) and never creates an fd or a
//!   registration for a fence that has signalled. When nothing is left to wait for (every fence
//!   signalled, or in [`WaitMode::Any`] one of them), it returns [`Ready`] instead of a source,
//!   like Smithay's `DmabufSource::new` returns `AlreadyReady`. Fences found signalled next to
//!   pending ones are delivered on the first dispatch, through a synthetic event from
//!   [`EventSource::before_sleep`] (no fd either).
//! * **One-shot per fence.** Each fd is registered level-triggered. When it is readable the
//!   source calls [`Fence::is_signaled`] (so the backend's `signaled()` confirms and the core
//!   records status and timestamp), delivers the event and drops that fence's [`Generic`], which
//!   removes the fd from the epoll set. A readable fd whose fence is not signalled (a spurious
//!   wakeup) stays registered and nothing is delivered. A queued software fence carries its
//!   status and timestamp from its callback.
//! * **Removal.** When everything is delivered (or the timeout fired, or the callback called
//!   [`Remaining::cancel`]), `process_events` returns [`PostAction::Remove`]. Dropping the source,
//!   removing it from the loop or [`FenceSource::cancel`] removes every fd from the epoll set and
//!   every callback from its fence at once (a [`Generic`] deregisters on drop, a callback guard
//!   removes its callback).
//! * **Shared fds.** A fence has one poll fd, so two sources waiting for the same kernel fence
//!   in one loop would register the same fd twice, which epoll refuses (`EEXIST`). The second
//!   registration then uses a `dup` of the fd: one extra fd, only in that case.
//! * **Lookup.** calloop tokens are opaque and cannot be hashed, and each [`Generic`] keeps its
//!   token to itself, so an fd event is matched by asking each pending Generic (a token
//!   comparison each): O(pending kernel fences) per wakeup. Software fences are never searched:
//!   their callbacks say which one signalled.
//! * **Hot path.** Signalling a lone software fence writes its eventfd first thing after the
//!   state change (no callback, no allocation, no futex wake unless a thread sleeps in a
//!   blocking wait); delivering it takes one lock of the fence and allocates nothing. The rest
//!   of a wakeup is calloop's, whose `polling` backend this workspace carries patched so that
//!   `epoll_wait` is the only syscall it makes (`third_party/polling/FENCEGATE.md`).
//! * **Limits.** calloop gives one source 65,536 sub-tokens; the source needs two for itself,
//!   hence [`FenceSource::MAX_PENDING`].
//!
//! # Example
//!
//! ```
//! use calloop::EventLoop;
//! use fence_bridge::{FenceEvent, FenceSource, FenceStatus, SwTimeline, WaitMode};
//! use std::time::Duration;
//!
//! let mut event_loop = EventLoop::<Vec<&str>>::try_new()?;
//! let timeline = SwTimeline::new("render");
//! let fences = [("shadow", timeline.create_fence(1)), ("main", timeline.create_fence(2))];
//!
//! let source = FenceSource::new(fences, WaitMode::Each)
//!     .expect("nothing signalled yet")
//!     .with_timeout(Duration::from_secs(10));
//! event_loop.handle().insert_source(source, |event, _remaining, done| match event {
//!     FenceEvent::Signaled(s) => {
//!         assert_eq!(s.status, FenceStatus::Signaled);
//!         done.push(s.key);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! })?;
//!
//! let mut done = Vec::new();
//! timeline.advance(2); // from another thread, in real life
//! while done.len() < 2 {
//!     event_loop.dispatch(Duration::from_secs(10), &mut done)?;
//! }
//! assert_eq!(done, ["shadow", "main"]);
//!
//! // Already signalled: no source, no fd.
//! let ready = FenceSource::new([(0, timeline.create_fence(1))], WaitMode::All).unwrap_err();
//! assert_eq!(ready.signaled[0].key, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use calloop::generic::Generic;
use calloop::timer::{TimeoutAction, Timer};
use calloop::{EventSource, Interest, Mode, Poll, PostAction, Readiness, Token, TokenFactory};

use crate::fence::{Fence, FenceStatus, TARGET};
use crate::poll::FencePollFd;
use crate::time::Ktime;

mod shared_wakeup;
use shared_wakeup::{CallbackGuard, SharedWakeup};

/// When a [`FenceSource`] calls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// Once per fence, as each signals ([`FenceEvent::Signaled`] each time).
    Each,
    /// Once, for the first fence that signals ([`FenceEvent::Signaled`]); the others are then
    /// dropped unwatched.
    Any,
    /// Once, when every fence has signalled ([`FenceEvent::AllSignaled`]).
    All,
}

/// One fence that signalled, as a [`FenceSource`] reports it.
///
/// Two are equal when they have equal keys, statuses and timestamps and the same fence
/// ([`Fence::ptr_eq`]).
#[derive(Debug, Clone)]
pub struct Signaled<K> {
    /// The key the fence was added with.
    pub key: K,
    /// The fence.
    pub fence: Fence,
    /// [`FenceStatus::Signaled`], or [`FenceStatus::Error`] if it signalled with an error.
    pub status: FenceStatus,
    /// When it signalled.
    pub timestamp: Ktime,
}

impl<K: PartialEq> PartialEq for Signaled<K> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.fence.ptr_eq(&other.fence)
            && self.status == other.status
            && self.timestamp == other.timestamp
    }
}

impl<K: Eq> Eq for Signaled<K> {}

/// What a [`FenceSource`] delivers to its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceEvent<K> {
    /// A fence signalled: every fence in [`WaitMode::Each`], the first one in [`WaitMode::Any`].
    Signaled(Signaled<K>),
    /// [`WaitMode::All`]: every fence signalled; here they are, by signal timestamp.
    AllSignaled(Vec<Signaled<K>>),
    /// The timeout elapsed; these keys were still pending (in the order they were added). The
    /// last event: the source removes itself.
    TimedOut {
        /// Keys of the fences still pending, in the order they were given.
        pending: Vec<K>,
    },
}

/// Returned by [`FenceSource::new`] instead of a source: nothing needs waiting for.
///
/// Holds the fences found signalled: all of them ([`WaitMode::Each`], [`WaitMode::All`]), or the
/// first one found ([`WaitMode::Any`]). Empty if no fence was given. No fd was created and
/// nothing was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready<K> {
    /// The fences that had signalled, in the order they were given.
    pub signaled: Vec<Signaled<K>>,
}

impl<K: fmt::Debug> fmt::Display for Ready<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fence(s) already signalled, nothing to wait for",
            self.signaled.len()
        )
    }
}

impl<K: fmt::Debug> std::error::Error for Ready<K> {}

/// The callback's view of the source (its `Metadata`): what is left, and a way to stop.
#[derive(Debug)]
pub struct Remaining {
    pending: usize,
    cancel: bool,
}

impl Remaining {
    /// How many fences are still pending after this event.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Stop waiting: every registration is removed and the source removes itself; no further
    /// event is delivered.
    pub fn cancel(&mut self) {
        self.cancel = true;
    }
}

/// The fd a [`Generic`] watches: the fence's shared poll fd, or a `dup` of it when the same fd
/// is already in this epoll set (see "Shared fds").
#[derive(Debug)]
enum WatchFd {
    Shared(FencePollFd),
    Dup(OwnedFd),
}

impl AsFd for WatchFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            WatchFd::Shared(fd) => fd.as_fd(),
            WatchFd::Dup(fd) => fd.as_fd(),
        }
    }
}

/// How a pending fence is watched.
enum Watch {
    /// Its own poll fd in the epoll set: a kernel fence, or the only software fence.
    Fd(Generic<WatchFd>),
    /// A callback into the source's [`SharedWakeup`]: one of several software fences. Held for
    /// its `Drop`, which removes the callback.
    Callback { _guard: CallbackGuard },
}

/// A pending fence: created with the source, watched from the first registration on.
struct Waiting<K> {
    /// Declared first so that it drops first: when this held the fence's last handle, the fence
    /// is released after its poll fd left the loop (or its callback was removed), so that it is
    /// not taken for a waiter.
    watch: Option<Watch>,
    key: K,
    fence: Fence,
}

/// A calloop event source that waits for a set of fences and reports each, the first or all of
/// them ([`WaitMode`]), with an optional timeout. One-shot: it removes itself when done.
///
/// Keys (`K`) name the fences in events: an index, a surface id, anything. See the
/// [module docs](self) for how it works and an example.
///
/// # Events
///
/// The callback gets a [`FenceEvent`] and a [`Remaining`] (call [`Remaining::cancel`] to stop).
/// In [`WaitMode::Each`] it is called once per fence, in signal order (fences found signalled
/// at construction come first); in [`WaitMode::Any`] once; in [`WaitMode::All`] once with all of
/// them; or once with [`FenceEvent::TimedOut`] if the timeout elapses first.
///
/// # Errors
///
/// Inserting the source fails (calloop's `InsertError`, which hands the source back) if a poll
/// fd cannot be created or registered (e.g. `EMFILE`), or with more than
/// [`MAX_PENDING`](FenceSource::MAX_PENDING) pending fences.
pub struct FenceSource<K = usize> {
    mode: WaitMode,
    /// The pending fences, in the order given (a slot is emptied when its fence is delivered;
    /// slots never move, so the slot number a callback queued stays valid).
    slots: Vec<Option<Waiting<K>>>,
    /// How many of `slots` are occupied.
    waiting: usize,
    /// Found signalled before being watched; delivered on the first dispatch.
    ready: Vec<Signaled<K>>,
    /// [`WaitMode::All`]: the fences delivered so far, kept for the final event.
    collected: Vec<Signaled<K>>,
    timer: Option<Timer>,
    /// The eventfd that two or more software fences share (created at registration).
    shared: Option<SharedWakeup>,
    /// Our sub-token for synthetic events (`ready` and cancel); no fd behind it.
    self_token: Option<Token>,
    cancelled: bool,
}

impl<K> FenceSource<K> {
    /// The most pending fences one source can watch (calloop sub-tokens are 16 bits).
    pub const MAX_PENDING: usize = 65_000;

    /// A source waiting for `fences` (key, fence) in `mode`, or [`Ready`] if nothing needs
    /// waiting for.
    ///
    /// Asks each fence [`Fence::is_signaled`] (one ioctl for a kernel fence, an atomic
    /// load for a software one) and creates nothing for the signalled ones: no eventfd, no
    /// registration. Poll fds (or callbacks) for the pending ones are made when the source is
    /// inserted into a loop.
    ///
    /// Returns `Err(Ready)` when every fence has signalled, when [`WaitMode::Any`] finds one that
    /// has (it stops looking there) or when `fences` is empty.
    pub fn new(
        fences: impl IntoIterator<Item = (K, Fence)>,
        mode: WaitMode,
    ) -> Result<Self, Ready<K>> {
        let mut slots = Vec::new();
        let mut ready = Vec::new();
        for (key, fence) in fences {
            match fence.signaled_result() {
                Some((status, timestamp)) => {
                    ready.push(Signaled {
                        key,
                        fence,
                        status,
                        timestamp,
                    });
                    if mode == WaitMode::Any {
                        return Err(Ready { signaled: ready });
                    }
                }
                None => slots.push(Some(Waiting {
                    watch: None,
                    key,
                    fence,
                })),
            }
        }
        if slots.is_empty() {
            return Err(Ready { signaled: ready });
        }
        let (ready, collected) = match mode {
            WaitMode::All => (Vec::new(), ready),
            WaitMode::Each | WaitMode::Any => (ready, Vec::new()),
        };
        tracing::trace!(
            target: TARGET,
            pending = slots.len(),
            ready = ready.len() + collected.len(),
            ?mode,
            "fence source new"
        );
        Ok(FenceSource {
            mode,
            waiting: slots.len(),
            slots,
            ready,
            collected,
            timer: None,
            shared: None,
            self_token: None,
            cancelled: false,
        })
    }

    /// Gives up after `timeout` (from now) with [`FenceEvent::TimedOut`]; composes a calloop
    /// [`Timer`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline(deadline),
            None => self,
        }
    }

    /// Gives up at `deadline` with [`FenceEvent::TimedOut`].
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.timer = Some(Timer::from_deadline(deadline));
        self
    }

    /// The wait mode.
    pub fn mode(&self) -> WaitMode {
        self.mode
    }

    /// Fences not delivered yet (pending, or found signalled and not reported yet).
    pub fn pending(&self) -> usize {
        self.waiting + self.ready.len()
    }

    /// How many fds this source has in the epoll set right now.
    pub fn registered_fds(&self) -> usize {
        // A Generic is registered from `register` until it is dropped or unregistered; we drop
        // it on delivery and clear `self_token` on unregister.
        if self.self_token.is_none() {
            return 0;
        }
        let own_fds = self
            .slots
            .iter()
            .flatten()
            .filter(|w| matches!(w.watch, Some(Watch::Fd(_))))
            .count();
        own_fds + usize::from(self.shared.is_some())
    }

    /// Stops waiting (e.g. through `calloop::Dispatcher::as_source_mut`): every fd leaves the
    /// epoll set now, no further event is delivered, and the source removes itself from the loop
    /// on the next dispatch.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.slots.clear(); // drops every Generic (epoll_ctl(DEL)) and removes every callback
        self.shared = None;
        self.waiting = 0;
        self.ready.clear();
        self.collected.clear();
    }

    fn remaining(&self) -> Remaining {
        Remaining {
            pending: self.pending(),
            cancel: false,
        }
    }

    /// Delivers `signaled` according to the mode. Returns whether the source is done.
    fn deliver<F>(&mut self, signaled: Signaled<K>, callback: &mut F) -> bool
    where
        F: FnMut(FenceEvent<K>, &mut Remaining),
    {
        match self.mode {
            WaitMode::Each => {
                let mut remaining = self.remaining();
                callback(FenceEvent::Signaled(signaled), &mut remaining);
                if remaining.cancel {
                    self.cancel();
                    return true;
                }
                false
            }
            WaitMode::Any => {
                // Call back first: tearing down the other registrations (one epoll_ctl each)
                // must not delay the event.
                let mut remaining = Remaining {
                    pending: 0,
                    cancel: false,
                };
                callback(FenceEvent::Signaled(signaled), &mut remaining);
                self.cancel();
                true
            }
            WaitMode::All => {
                self.collected.push(signaled);
                false
            }
        }
    }

    /// Takes `slot`'s fence out and delivers it. Its watch goes after the callback, so that
    /// leaving the epoll set (or removing a callback) does not delay the event. `None` if the
    /// slot was delivered already; otherwise whether the source is done.
    fn deliver_slot<F>(
        &mut self,
        slot: usize,
        status: FenceStatus,
        timestamp: Ktime,
        callback: &mut F,
    ) -> Option<bool>
    where
        F: FnMut(FenceEvent<K>, &mut Remaining),
    {
        let Waiting { watch, key, fence } = self.slots[slot].take()?;
        self.waiting -= 1;
        let signaled = Signaled {
            key,
            fence,
            status,
            timestamp,
        };
        let done = self.deliver(signaled, callback);
        drop(watch);
        Some(done)
    }

    /// Finishes if nothing is pending: the final event of [`WaitMode::All`]. Returns whether the
    /// source is done.
    fn finish_if_done<F>(&mut self, callback: &mut F) -> bool
    where
        F: FnMut(FenceEvent<K>, &mut Remaining),
    {
        if self.cancelled {
            return true;
        }
        if self.pending() > 0 {
            return false;
        }
        if self.mode == WaitMode::All {
            let mut all = std::mem::take(&mut self.collected);
            all.sort_by_key(|s| s.timestamp); // stable: delivery order among equal timestamps
            callback(FenceEvent::AllSignaled(all), &mut self.remaining());
        }
        true
    }

    /// The pending slot whose watch owns `token`, if any.
    fn find(&mut self, readiness: Readiness, token: Token) -> io::Result<Option<usize>> {
        for (slot, waiting) in self.slots.iter_mut().enumerate() {
            if Self::owns(waiting, readiness, token)? {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// Whether `waiting`'s Generic is registered with `token`.
    fn owns(
        waiting: &mut Option<Waiting<K>>,
        readiness: Readiness,
        token: Token,
    ) -> io::Result<bool> {
        let Some(Watch::Fd(watch)) = waiting.as_mut().and_then(|w| w.watch.as_mut()) else {
            return Ok(false);
        };
        let mut ours = false;
        // Generic skips tokens that are not its own without calling back.
        watch.process_events(readiness, token, |_, _| {
            ours = true;
            Ok(PostAction::Continue)
        })?;
        Ok(ours)
    }

    /// Registers (or re-registers) every pending fence. Kernel fences, and a software fence
    /// that is the only one, get a Generic on their own poll fd; two or more software fences
    /// share one eventfd, written by a callback on each (see [`SharedWakeup`]).
    fn register_slots(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
        reregister: bool,
    ) -> calloop::Result<()> {
        let mut software = Vec::new();
        for (slot, waiting) in self.slots.iter_mut().enumerate() {
            let Some(waiting) = waiting else { continue };
            match &mut waiting.watch {
                Some(Watch::Fd(watch)) if reregister => watch.reregister(poll, token_factory)?,
                Some(Watch::Fd(_)) => Self::register_fd(waiting, None, poll, token_factory)?,
                Some(Watch::Callback { .. }) => {}
                None => match waiting.fence.native_poll_fd() {
                    Some(fd) => Self::register_fd(waiting, Some(fd?), poll, token_factory)?,
                    None => software.push(slot),
                },
            }
        }
        if let [slot] = software[..] {
            if self.shared.is_none() {
                let waiting = self.slots[slot].as_mut().expect("occupied");
                let fd = waiting.fence.poll_fd()?;
                return Self::register_fd(waiting, Some(fd), poll, token_factory);
            }
        }
        if !software.is_empty() {
            let shared = match &mut self.shared {
                Some(shared) => shared,
                None => {
                    let mut shared = SharedWakeup::new()?;
                    shared.register(poll, token_factory)?;
                    self.shared.insert(shared)
                }
            };
            for slot in software {
                let waiting = self.slots[slot].as_mut().expect("occupied");
                waiting.watch = Some(Watch::Callback {
                    _guard: shared.watch(slot, &waiting.fence),
                });
            }
        } else if let Some(shared) = &mut self.shared {
            if reregister {
                shared.reregister(poll, token_factory)?;
            } else {
                shared.register(poll, token_factory)?;
            }
        }
        Ok(())
    }

    /// Registers `waiting`'s Generic, made on `fd` if it has none yet.
    fn register_fd(
        waiting: &mut Waiting<K>,
        fd: Option<FencePollFd>,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        let watch = match (&mut waiting.watch, fd) {
            (Some(Watch::Fd(watch)), _) => watch,
            (_, Some(fd)) => match waiting.watch.insert(Watch::Fd(Generic::new(
                WatchFd::Shared(fd),
                Interest::READ,
                Mode::Level,
            ))) {
                Watch::Fd(watch) => watch,
                Watch::Callback { .. } => unreachable!("just inserted"),
            },
            (_, None) => unreachable!("a fence without a Generic comes with its fd"),
        };
        match watch.register(poll, token_factory) {
            Err(calloop::Error::IoError(err))
                if err.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) =>
            {
                // The same fd is already in this epoll set (another source, or the same fence
                // twice): watch a dup of it.
                let dup =
                    rustix::io::fcntl_dupfd_cloexec(watch.get_ref(), 0).map_err(io::Error::from)?;
                let mut watch = Generic::new(WatchFd::Dup(dup), Interest::READ, Mode::Level);
                let registered = watch.register(poll, token_factory);
                waiting.watch = Some(Watch::Fd(watch));
                registered
            }
            other => other,
        }
    }

    /// Delivers the software fences the shared wakeup queued.
    fn deliver_queued<F>(&mut self, callback: &mut F) -> PostAction
    where
        F: FnMut(FenceEvent<K>, &mut Remaining),
    {
        // What is queued first, then the eventfd reset, then what was queued in between: a
        // fence queued after the reset has written the eventfd again. The event comes before
        // the reset's read().
        for pass in 0..2 {
            let Some(shared) = &mut self.shared else {
                break;
            };
            if pass == 1 {
                shared.reset();
            }
            let mut batch = shared.take();
            for (slot, status, timestamp) in batch.drain(..) {
                // `None`: delivered already (the same fence queued twice).
                if self.deliver_slot(slot, status, timestamp, callback) == Some(true) {
                    return PostAction::Remove;
                }
            }
            if let Some(shared) = &mut self.shared {
                shared.recycle(batch);
            }
        }
        if self.finish_if_done(callback) {
            PostAction::Remove
        } else {
            PostAction::Continue
        }
    }
}

impl<K> EventSource for FenceSource<K> {
    type Event = FenceEvent<K>;
    type Metadata = Remaining;
    type Ret = ();
    type Error = io::Error;

    const NEEDS_EXTRA_LIFECYCLE_EVENTS: bool = true;

    fn process_events<F>(
        &mut self,
        readiness: Readiness,
        token: Token,
        mut callback: F,
    ) -> Result<PostAction, Self::Error>
    where
        F: FnMut(Self::Event, &mut Self::Metadata) -> Self::Ret,
    {
        if self.cancelled {
            return Ok(PostAction::Remove);
        }

        // Our synthetic event: fences found signalled before they were watched.
        if self.self_token == Some(token) {
            for signaled in std::mem::take(&mut self.ready) {
                if self.deliver(signaled, &mut callback) {
                    return Ok(PostAction::Remove);
                }
            }
            return Ok(if self.finish_if_done(&mut callback) {
                PostAction::Remove
            } else {
                PostAction::Continue
            });
        }

        // The timeout.
        if let Some(timer) = &mut self.timer {
            let mut fired = false;
            timer.process_events(readiness, token, |_, _| {
                fired = true;
                TimeoutAction::Drop
            })?;
            if fired {
                // Slots are in the order the fences were given.
                let pending: Vec<K> = std::mem::take(&mut self.slots)
                    .into_iter()
                    .flatten()
                    .map(|w| w.key)
                    .collect();
                tracing::trace!(target: TARGET, pending = pending.len(), "fence source timeout");
                self.cancel();
                callback(FenceEvent::TimedOut { pending }, &mut self.remaining());
                return Ok(PostAction::Remove);
            }
        }

        // Software fences signalled through the shared wakeup.
        if let Some(shared) = &mut self.shared {
            if shared.owns(readiness, token)? {
                return Ok(self.deliver_queued(&mut callback));
            }
        }

        // One of the fences' fds is readable.
        let Some(slot) = self.find(readiness, token)? else {
            return Ok(PostAction::Continue);
        };
        let fence = &self.slots[slot]
            .as_ref()
            .expect("found slots are occupied")
            .fence;
        let Some((status, timestamp)) = fence.signaled_result() else {
            tracing::trace!(
                target: TARGET,
                context = fence.context().as_u64(),
                seqno = fence.seqno(),
                "fence source spurious wakeup"
            );
            return Ok(PostAction::Continue);
        };
        let done = self
            .deliver_slot(slot, status, timestamp, &mut callback)
            .expect("found slots are occupied")
            || self.finish_if_done(&mut callback);
        Ok(if done {
            PostAction::Remove
        } else {
            PostAction::Continue
        })
    }

    fn register(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        if self.waiting > Self::MAX_PENDING {
            return Err(calloop::Error::IoError(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "FenceSource: {} pending fences, at most {} per source",
                    self.waiting,
                    Self::MAX_PENDING
                ),
            )));
        }
        self.self_token = Some(token_factory.token());
        self.register_slots(poll, token_factory, false)?;
        if let Some(timer) = &mut self.timer {
            timer.register(poll, token_factory)?;
        }
        Ok(())
    }

    fn reregister(
        &mut self,
        poll: &mut Poll,
        token_factory: &mut TokenFactory,
    ) -> calloop::Result<()> {
        self.self_token = Some(token_factory.token());
        self.register_slots(poll, token_factory, true)?;
        if let Some(timer) = &mut self.timer {
            timer.reregister(poll, token_factory)?;
        }
        Ok(())
    }

    fn unregister(&mut self, poll: &mut Poll) -> calloop::Result<()> {
        self.self_token = None;
        let mut result = Ok(());
        if let Some(timer) = &mut self.timer {
            result = timer.unregister(poll);
        }
        if let Some(shared) = &mut self.shared {
            result = result.and(shared.unregister(poll));
        }
        for waiting in self.slots.iter_mut().flatten() {
            if let Some(Watch::Fd(watch)) = &mut waiting.watch {
                // Keep going on error: leave nothing behind in the epoll set.
                let r = watch.unregister(poll);
                if result.is_ok() {
                    result = r;
                }
            }
        }
        result
    }

    fn before_sleep(&mut self) -> calloop::Result<Option<(Readiness, Token)>> {
        // Fences found signalled at construction, and a cancel, are delivered without an fd.
        if self.ready.is_empty() && !self.cancelled {
            return Ok(None);
        }
        Ok(self.self_token.map(|token| (Readiness::EMPTY, token)))
    }
}

impl<K: fmt::Debug> fmt::Debug for FenceSource<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceSource")
            .field("mode", &self.mode)
            .field(
                "waiting",
                &self
                    .slots
                    .iter()
                    .flatten()
                    .map(|w| &w.key)
                    .collect::<Vec<_>>(),
            )
            .field("ready", &self.ready.len())
            .field("collected", &self.collected.len())
            .field(
                "timer",
                &self.timer.as_ref().and_then(Timer::current_deadline),
            )
            .field("registered_fds", &self.registered_fds())
            .field("cancelled", &self.cancelled)
            .finish()
    }
}
