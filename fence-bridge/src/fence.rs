//! [`Fence`]: the refcounted fence object and its verbs; [`FenceSignaler`], the weak handle
//! a backend signals through.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::callback_list::{Callback, CallbackList, SignalWaiter};
use crate::context::ContextId;
use crate::error::{AlreadySignaled, FenceError, WaitError};
use crate::ops::FenceOps;
use crate::stats;
use crate::time::Ktime;

/// tracing target of every event this crate emits.
pub(crate) const TARGET: &str = "fence_bridge";

/// A fence's status, as `dma_fence_get_status()` reports it.
///
/// An error set with [`Fence::set_error`] on a pending fence is not visible here until the fence
/// signals, as in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceStatus {
    /// Not signalled yet (kernel: `0`).
    Pending,
    /// Signalled successfully (kernel: `1`).
    Signaled,
    /// Signalled with an error (kernel: the negative errno).
    Error(FenceError),
}

impl FenceStatus {
    /// Whether the fence has signalled, successfully or not.
    pub fn is_signaled(self) -> bool {
        !matches!(self, FenceStatus::Pending)
    }

    /// The error, if the fence signalled with one.
    pub fn error(self) -> Option<FenceError> {
        match self {
            FenceStatus::Error(err) => Some(err),
            _ => None,
        }
    }

    /// The kernel encoding: `0` pending, `1` signalled, negative errno on error.
    ///
    /// ```
    /// use fence_bridge::{FenceError, FenceStatus};
    /// assert_eq!(FenceStatus::Pending.to_kernel(), 0);
    /// assert_eq!(FenceStatus::Signaled.to_kernel(), 1);
    /// let s = FenceStatus::Error(FenceError::ENOENT);
    /// assert_eq!(FenceStatus::from_kernel(s.to_kernel()), Some(s));
    /// ```
    pub fn to_kernel(self) -> i32 {
        match self {
            FenceStatus::Pending => 0,
            FenceStatus::Signaled => 1,
            FenceStatus::Error(err) => err.to_kernel(),
        }
    }

    /// Decodes the kernel encoding (`dma_fence_get_status()`, `sync_fence_info.status`).
    /// Returns `None` for values above 1 or below `-MAX_ERRNO`.
    pub fn from_kernel(status: i32) -> Option<Self> {
        match status {
            0 => Some(FenceStatus::Pending),
            1 => Some(FenceStatus::Signaled),
            s if s < 0 => FenceError::from_errno(s.checked_neg()?).map(FenceStatus::Error),
            _ => None,
        }
    }
}

/// What a callback learns about the fence that signalled.
///
/// Callbacks get this rather than the [`Fence`] because they may run while the fence is being
/// released (see [`Fence`]'s "Release" section); capture a [`Fence`] clone if you need the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalInfo {
    /// The fence's context.
    pub context: ContextId,
    /// The fence's seqno.
    pub seqno: u64,
    /// When it signalled.
    pub timestamp: Ktime,
    /// The error it signalled with, if any.
    pub error: Option<FenceError>,
}

impl SignalInfo {
    /// [`FenceStatus::Signaled`] or [`FenceStatus::Error`].
    pub fn status(&self) -> FenceStatus {
        self.error.map_or(FenceStatus::Signaled, FenceStatus::Error)
    }

    /// `Ok(())` or the error.
    pub fn result(&self) -> Result<(), FenceError> {
        self.error.map_or(Ok(()), Err)
    }
}

/// Identifies a callback added with [`Fence::add_callback`], for [`Fence::remove_callback`].
///
/// Dropping the handle does not remove the callback.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CallbackHandle {
    id: u64,
}

/// Unique across all fences, so a handle can never remove another fence's callback.
static NEXT_CALLBACK_ID: AtomicU64 = AtomicU64::new(1);

/// The lifecycle, in chronological order (the kernel keeps it in a union: `cb_list`, then
/// `timestamp`, then `rcu`). "Released" is the drop of [`Inner`].
enum Phase {
    /// Created; callbacks wait here in the order they were added.
    Pending {
        error: Option<FenceError>,
        callbacks: CallbackList,
    },
    /// Signalled: final. Callbacks have been taken out and run (or are running).
    Signaled {
        error: Option<FenceError>,
        timestamp: Ktime,
    },
}

pub(crate) struct State {
    phase: Phase,
    /// The fd handed out by [`Fence::poll_fd`], made on first request only: the backend's own
    /// ([`FenceOps::native_poll_fd`]), which blocking waits then poll instead of the condvar, or
    /// the core's eventfd. Set at most once ([`State::set_poll_fd`]) and dropped only with the
    /// fence.
    pub(crate) poll_fd: Option<crate::poll::SharedEventFd>,
    /// When `poll_fd` is the core's eventfd, its number: the signal writes it directly, without
    /// touching (or counting a reference on) the `Arc` it lives in, one cache line fewer before
    /// the wakeup. It is not a callback, so it never counts as a pending waiter at release unless
    /// a [`crate::FencePollFd`] is still held somewhere (see `Drop for Inner`).
    core_fd: Option<RawFd>,
    /// Threads asleep on `cond` (only counted under this lock). The signal calls
    /// `Condvar::notify_all` — a futex syscall even with nobody waiting — only if non-zero.
    waiters: u32,
}

impl State {
    /// Keeps `fd` as the fence's poll fd: the backend's own (`native`) or the core's eventfd.
    /// Only ever called while `poll_fd` is `None`.
    pub(crate) fn set_poll_fd(&mut self, fd: crate::poll::SharedEventFd, native: bool) {
        debug_assert!(self.poll_fd.is_none(), "a fence's poll fd is set once");
        self.core_fd = (!native).then(|| fd.as_raw_fd());
        self.poll_fd = Some(fd);
    }

    /// Whether `poll_fd` is the backend's own fd.
    pub(crate) fn poll_fd_native(&self) -> bool {
        self.poll_fd.is_some() && self.core_fd.is_none()
    }
}

pub(crate) struct Inner {
    context: ContextId,
    seqno: u64,
    ops: Box<dyn FenceOps>,
    /// `DMA_FENCE_FLAG_SIGNALED_BIT`: set (under `state`'s lock) when `phase` becomes `Signaled`.
    pub(crate) signaled: AtomicBool,
    /// `DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT`: someone asked for signalling.
    enable_requested: AtomicBool,
    state: Mutex<State>,
    /// Woken on signal.
    cond: Condvar,
}

impl Inner {
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Callbacks and ops never run under this lock, so poisoning means a bug in this file;
        // the state is still consistent (every mutation is a single assignment).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self, timestamp: Ktime, error: Option<FenceError>) -> SignalInfo {
        SignalInfo {
            context: self.context,
            seqno: self.seqno,
            timestamp,
            error,
        }
    }

    /// `dma_fence_signal_timestamp()`: the one place a fence becomes signalled.
    /// `error: Some` overrides an error set earlier.
    fn signal(&self, timestamp: Ktime, error: Option<FenceError>) -> bool {
        let (callbacks, error, poll_fd, wake) = {
            let mut st = self.lock();
            let Phase::Pending {
                error: set_error,
                callbacks,
            } = &mut st.phase
            else {
                return false;
            };
            let error = error.or(*set_error);
            let callbacks = callbacks.take();
            st.phase = Phase::Signaled { error, timestamp };
            self.signaled.store(true, Ordering::Release);
            (callbacks, error, st.core_fd, st.waiters > 0)
        };
        // The poll fd first: it is what wakes event loops, the latency-critical path.
        if let Some(fd) = poll_fd {
            // SAFETY: `core_fd` is the number of the eventfd `State::poll_fd` owns, which is set
            // once and dropped only with this `Inner`, and `&self` keeps this `Inner` alive.
            crate::poll::notify(unsafe { BorrowedFd::borrow_raw(fd) });
        }
        if wake {
            self.cond.notify_all();
        }
        stats::bump(&stats::FENCES_SIGNALED);
        tracing::trace!(
            target: TARGET,
            context = self.context.as_u64(),
            seqno = self.seqno,
            timestamp_ns = timestamp.as_nanos(),
            error = error.map(FenceError::errno),
            callbacks = callbacks.len(),
            "fence signal"
        );
        if !callbacks.is_empty() {
            callbacks.run(&self.info(timestamp, error));
        }
        true
    }
}

impl Drop for Inner {
    /// Release (`dma_fence_release()`): force-signal with `EDEADLK` if someone still waits —
    /// callbacks are pending (never leak or skip them), or a [`crate::FencePollFd`] of the core's
    /// eventfd is still held by someone (it becomes readable, so they do not wait forever) —
    /// then tell the backend.
    ///
    /// The core's own reference to its poll eventfd is not a waiter: a fence whose poll fd nobody
    /// else holds any more (e.g. a `FenceSource` that already let go of it) is released quietly,
    /// like one without callbacks.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let core_fd_held = st.core_fd.is_some()
            && st
                .poll_fd
                .as_ref()
                .is_some_and(|fd| std::sync::Arc::strong_count(fd) > 1);
        let (pending_callbacks, fd_waiter) = match &mut st.phase {
            Phase::Pending { callbacks, .. } => (callbacks.take(), core_fd_held),
            Phase::Signaled { .. } => (CallbackList::default(), false),
        };
        if !pending_callbacks.is_empty() || fd_waiter {
            let timestamp = Ktime::now();
            let error = Some(FenceError::EDEADLK);
            st.phase = Phase::Signaled { error, timestamp };
            *self.signaled.get_mut() = true;
            if fd_waiter {
                if let Some(fd) = &st.poll_fd {
                    crate::poll::notify(fd);
                }
            }
            stats::bump(&stats::RELEASED_WITH_PENDING);
            stats::bump(&stats::FENCES_SIGNALED);
            tracing::warn!(
                target: TARGET,
                callbacks = pending_callbacks.len(),
                poll_fd_held = fd_waiter,
                "fence {}:{}:{}:{} released with pending signals",
                self.ops.driver_name(),
                self.ops.timeline_name(),
                self.context,
                self.seqno
            );
            pending_callbacks.run(&self.info(timestamp, error));
        }
        self.ops.release();
    }
}

/// A fence: a one-shot completion event on a timeline (`struct dma_fence`).
///
/// `Fence` is a cheap-clone, reference-counted handle (`dma_fence_get()` is `clone`,
/// `dma_fence_put()` is `drop`); it is `Send + Sync`, and every verb takes `&self`.
///
/// # Lifecycle
///
/// 1. **Created** by a backend ([`Fence::new`], [`crate::FenceContext::create_fence`],
///    [`crate::SwTimeline::create_fence`]): pending, with a context and seqno that never change.
///    Nothing is armed.
/// 2. **Signalling enabled** — lazily, at most once: on the first wait with a non-zero timeout,
///    [`add_callback`](Fence::add_callback), [`poll_fd`](Fence::poll_fd) or
///    [`enable_signaling`](Fence::enable_signaling). Only then does the backend's
///    [`FenceOps::enable_signaling`] arm an eventfd, poll registration or thread.
/// 3. **Signalled** — once, by whoever completes first: [`signal`](Fence::signal) and its
///    variants on the fence or on a [`FenceSignaler`], or the backend's
///    [`FenceOps::signaled`] poll. From then on the status (success or the error set before the
///    signal) and the timestamp are fixed, waiters wake, and callbacks run.
/// 4. **Released** when the last handle drops. If callbacks are still pending then (or someone
///    still holds a [`crate::FencePollFd`] of the core's eventfd, which then becomes readable),
///    the fence is first signalled with [`FenceError::EDEADLK`] and they run (the kernel's "released with
///    pending signals" warning, also emitted as a `tracing` warning), then
///    [`FenceOps::release`] runs. A backend that will signal later must hold a `Fence` (not just
///    its [`FenceSignaler`]) if the callbacks should see that real signal.
///
/// # Example
///
/// ```
/// use fence_bridge::{FenceContext, FenceError, FenceStatus, WaitError};
/// use std::time::Duration;
///
/// let ctx = FenceContext::new("example");
/// let fence = ctx.create_fence();
/// assert_eq!(fence.status(), FenceStatus::Pending);
/// assert_eq!(fence.wait_timeout(Some(Duration::ZERO)), Err(WaitError::TimedOut));
///
/// let waiter = {
///     let fence = fence.clone();
///     std::thread::spawn(move || fence.wait_timeout(Some(Duration::from_secs(10))))
/// };
/// fence.set_error(FenceError::EIO).unwrap();
/// assert!(fence.signal());
/// assert!(!fence.signal()); // idempotent
/// assert_eq!(waiter.join().unwrap(), Err(WaitError::Failed(FenceError::EIO)));
/// assert_eq!(fence.status(), FenceStatus::Error(FenceError::EIO));
/// assert!(fence.timestamp().is_some());
/// ```
#[derive(Clone)]
pub struct Fence {
    pub(crate) inner: Arc<Inner>,
}

impl Fence {
    /// Creates a pending fence on `context` with `seqno`, backed by `ops` (`dma_fence_init()`).
    ///
    /// Does not call into `ops` and arms nothing. Backends usually wrap this (see
    /// [`crate::FenceContext::create_fence_with`]).
    pub fn new(context: ContextId, seqno: u64, ops: impl FenceOps) -> Fence {
        let fence = Fence {
            inner: Arc::new(Inner {
                context,
                seqno,
                ops: Box::new(ops),
                signaled: AtomicBool::new(false),
                enable_requested: AtomicBool::new(false),
                state: Mutex::new(State {
                    phase: Phase::Pending {
                        error: None,
                        callbacks: CallbackList::default(),
                    },
                    poll_fd: None,
                    core_fd: None,
                    waiters: 0,
                }),
                cond: Condvar::new(),
            }),
        };
        stats::bump(&stats::FENCES_CREATED);
        tracing::trace!(
            target: TARGET,
            context = context.as_u64(),
            seqno,
            driver = fence.driver_name(),
            timeline = fence.timeline_name(),
            "fence emit"
        );
        fence
    }

    /// An already-signalled fence on [`ContextId::STUB`] with seqno 0 (`dma_fence_get_stub()`):
    /// for "nothing to wait for". Every call returns a handle to the same fence.
    pub fn stub() -> Fence {
        static STUB: OnceLock<Fence> = OnceLock::new();
        STUB.get_or_init(|| {
            struct StubOps;
            impl FenceOps for StubOps {
                fn driver_name(&self) -> &str {
                    "stub"
                }
                fn timeline_name(&self) -> &str {
                    "stub"
                }
            }
            let fence = Fence::new(ContextId::STUB, 0, StubOps);
            fence.signal();
            fence
        })
        .clone()
    }

    /// The fence's context (its timeline).
    pub fn context(&self) -> ContextId {
        self.inner.context
    }

    /// The fence's sequence number within its context.
    pub fn seqno(&self) -> u64 {
        self.inner.seqno
    }

    /// [`FenceOps::driver_name`].
    pub fn driver_name(&self) -> &str {
        self.inner.ops.driver_name()
    }

    /// [`FenceOps::timeline_name`].
    pub fn timeline_name(&self) -> &str {
        self.inner.ops.timeline_name()
    }

    /// Whether `self` and `other` are handles to the same fence.
    pub fn ptr_eq(&self, other: &Fence) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The backend's ops, for backends that need to reach their own state through a fence.
    pub fn ops(&self) -> &dyn FenceOps {
        &*self.inner.ops
    }

    /// A weak handle that can signal this fence without keeping it alive.
    pub fn signaler(&self) -> FenceSignaler {
        FenceSignaler {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Signals the fence now (`dma_fence_signal()`). Idempotent: returns `true` if this call
    /// signalled it, `false` if it was already signalled.
    ///
    /// Wakes waiters and runs pending callbacks on this thread, outside all locks, before
    /// returning. If a callback panics, the others still run and the first panic then
    /// propagates out of this call (the fence stays signalled).
    pub fn signal(&self) -> bool {
        self.inner.signal(Ktime::now(), None)
    }

    /// Like [`signal`](Fence::signal), with the time the completion actually happened
    /// (`dma_fence_signal_timestamp()`), e.g. from a page-flip event or a hardware timestamp.
    #[inline]
    pub fn signal_timestamp(&self, timestamp: Ktime) -> bool {
        self.inner.signal(timestamp, None)
    }

    /// Sets the error and signals in one step, so no other signaller can slip in between
    /// [`set_error`](Fence::set_error) and [`signal`](Fence::signal). Returns `false` (and
    /// changes nothing) if the fence had already signalled.
    pub fn signal_with_error(&self, error: FenceError) -> bool {
        self.inner.signal(Ktime::now(), Some(error))
    }

    /// Records the error the fence will signal with (`dma_fence_set_error()`); the latest call
    /// wins. The error becomes visible in [`status`](Fence::status) only once the fence signals.
    ///
    /// # Errors
    ///
    /// [`AlreadySignaled`] if the fence signalled already: setting an error afterwards is a
    /// programming error (the kernel `WARN`s) and changes nothing. Use
    /// [`signal_with_error`](Fence::signal_with_error) when another thread may signal
    /// concurrently.
    pub fn set_error(&self, error: FenceError) -> Result<(), AlreadySignaled> {
        let mut st = self.inner.lock();
        match &mut st.phase {
            Phase::Pending { error: slot, .. } => {
                *slot = Some(error);
                Ok(())
            }
            Phase::Signaled { .. } => Err(AlreadySignaled),
        }
    }

    /// Whether the fence has signalled (`dma_fence_is_signaled()`).
    ///
    /// If not yet, asks the backend's cheap [`FenceOps::signaled`] poll and signals the fence if
    /// it says so. Never blocks and never enables signalling.
    #[inline]
    pub fn is_signaled(&self) -> bool {
        if self.inner.signaled.load(Ordering::Acquire) {
            return true;
        }
        if self.inner.ops.signaled() {
            // A backend that knows the kernel's timestamp and error has signalled already
            // (see `FenceSignaler::signal_with`); the core stamps "now" only for one that has not.
            if !self.inner.signaled.load(Ordering::Acquire) {
                self.signal();
            }
            return true;
        }
        false
    }

    /// The fence's status (`dma_fence_get_status()`); polls like [`is_signaled`](Fence::is_signaled).
    pub fn status(&self) -> FenceStatus {
        self.is_signaled();
        match &self.inner.lock().phase {
            Phase::Pending { .. } => FenceStatus::Pending,
            Phase::Signaled { error, .. } => {
                error.map_or(FenceStatus::Signaled, FenceStatus::Error)
            }
        }
    }

    /// Status and timestamp in one lock, if signalled (after the backend poll of
    /// [`is_signaled`](Fence::is_signaled)); for event sources delivering a signalled fence.
    #[cfg_attr(not(feature = "calloop"), allow(dead_code))] // used by the calloop source
    pub(crate) fn signaled_result(&self) -> Option<(FenceStatus, Ktime)> {
        if !self.is_signaled() {
            return None;
        }
        match &self.inner.lock().phase {
            Phase::Pending { .. } => None,
            Phase::Signaled { error, timestamp } => Some((
                error.map_or(FenceStatus::Signaled, FenceStatus::Error),
                *timestamp,
            )),
        }
    }

    /// When the fence signalled, or `None` while pending (the kernel's `fence->timestamp`).
    pub fn timestamp(&self) -> Option<Ktime> {
        match &self.inner.lock().phase {
            Phase::Pending { .. } => None,
            Phase::Signaled { timestamp, .. } => Some(*timestamp),
        }
    }

    /// Adds a callback run exactly once when the fence signals (`dma_fence_add_callback()`), and
    /// enables signalling.
    ///
    /// The callback runs on the signalling thread, outside all of this crate's locks, so it may
    /// call back into any fence API. It should be short: it delays the signaller and the
    /// callbacks after it. If the last handle is dropped while the callback is pending, it runs
    /// then, with [`FenceError::EDEADLK`] (see "Lifecycle").
    ///
    /// # Errors
    ///
    /// [`AlreadySignaled`] if the fence has signalled (including during the enabling this call
    /// performs); `f` is then dropped without being called, as in the kernel.
    pub fn add_callback<F>(&self, f: F) -> Result<CallbackHandle, AlreadySignaled>
    where
        F: FnOnce(&SignalInfo) + Send + 'static,
    {
        if self.is_signaled() {
            return Err(AlreadySignaled);
        }
        self.add(Callback::Closure(Box::new(f)))
    }

    /// [`add_callback`](Fence::add_callback) for a crate-internal waiter: `waiter` is told
    /// `token` when the fence signals. Allocates nothing.
    pub(crate) fn add_waiter(
        &self,
        waiter: Arc<dyn SignalWaiter>,
        token: usize,
    ) -> Result<CallbackHandle, AlreadySignaled> {
        if self.is_signaled() {
            return Err(AlreadySignaled);
        }
        self.add(Callback::Waiter(waiter, token))
    }

    fn add(&self, callback: Callback) -> Result<CallbackHandle, AlreadySignaled> {
        self.enable_signaling();
        let id = NEXT_CALLBACK_ID.fetch_add(1, Ordering::Relaxed);
        let mut st = self.inner.lock();
        match &mut st.phase {
            Phase::Pending { callbacks, .. } => {
                callbacks.push(id, callback);
                Ok(CallbackHandle { id })
            }
            // Dropped after the lock is released: a closure's captures may run code.
            Phase::Signaled { .. } => {
                drop(st);
                drop(callback);
                Err(AlreadySignaled)
            }
        }
    }

    /// Removes a callback that has not run yet (`dma_fence_remove_callback()`).
    ///
    /// Returns `true` if it was removed: it will never run. `false` if it already ran, is
    /// running right now on the signalling thread, or `handle` belongs to another fence.
    pub fn remove_callback(&self, handle: CallbackHandle) -> bool {
        let mut st = self.inner.lock();
        match &mut st.phase {
            Phase::Pending { callbacks, .. } => match callbacks.remove(handle.id) {
                Some(removed) => {
                    // Dropped after the lock is released: a closure's captures may run code.
                    drop(st);
                    drop(removed);
                    true
                }
                None => false,
            },
            Phase::Signaled { .. } => false,
        }
    }

    /// Asks the backend to arm signalling now (`dma_fence_enable_sw_signaling()`).
    ///
    /// The first call on a pending fence calls [`FenceOps::enable_signaling`]; later calls, and
    /// calls on a signalled fence, do nothing. Waits, callbacks and [`poll_fd`](Fence::poll_fd)
    /// call this themselves.
    pub fn enable_signaling(&self) {
        if self.inner.enable_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.inner.signaled.load(Ordering::Acquire) {
            return;
        }
        stats::bump(&stats::SIGNALING_ENABLED);
        tracing::trace!(
            target: TARGET,
            context = self.context().as_u64(),
            seqno = self.seqno(),
            "fence enable signaling"
        );
        if !self.inner.ops.enable_signaling(self.signaler()) {
            self.signal();
        }
    }

    /// Whether signalling has been asked for (the kernel's `DMA_FENCE_FLAG_ENABLE_SIGNAL_BIT`).
    /// Stays `false` until the first wait, callback, poll fd or
    /// [`enable_signaling`](Fence::enable_signaling): the laziness check.
    pub fn signaling_enabled(&self) -> bool {
        self.inner.enable_requested.load(Ordering::Acquire)
    }

    /// Passes a deadline hint to the backend if the fence is pending (`dma_fence_set_deadline()`).
    pub fn set_deadline(&self, deadline: Ktime) {
        if !self.is_signaled() {
            self.inner.ops.set_deadline(deadline);
        }
    }

    /// Blocks until the fence signals (`dma_fence_wait(fence, false)`): `Ok(())`, or the error it
    /// signalled with. Enables signalling.
    ///
    /// Unbounded: prefer [`wait_timeout`](Fence::wait_timeout) unless the backend is known to
    /// signal in bounded time.
    pub fn wait(&self) -> Result<(), FenceError> {
        match self.wait_timeout(None) {
            Ok(()) => Ok(()),
            Err(WaitError::Failed(err)) => Err(err),
            Err(WaitError::TimedOut) => unreachable!("an unbounded wait cannot time out"),
        }
    }

    /// Blocks until the fence signals or `timeout` elapses (`dma_fence_wait_timeout()`);
    /// `None` waits forever.
    ///
    /// `Some(Duration::ZERO)` only polls (like [`status`](Fence::status)) and, unlike the
    /// kernel, does **not** enable signalling: a zero-timeout check must not arm anything. Any
    /// other timeout enables signalling first — except on a fence whose backend has a
    /// [`FenceOps::native_poll_fd`] (a kernel fence): that fd is polled instead (no thread, no
    /// callback; a signal by hand is noticed within 100 ms).
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`] if still pending at the deadline; [`WaitError::Failed`] if the
    /// fence signalled with an error.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> Result<(), WaitError> {
        if timeout == Some(Duration::ZERO) {
            return match self.status() {
                FenceStatus::Pending => Err(WaitError::TimedOut),
                FenceStatus::Signaled => Ok(()),
                FenceStatus::Error(err) => Err(WaitError::Failed(err)),
            };
        }
        // Overflowing deadlines count as "forever".
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        tracing::trace!(
            target: TARGET,
            context = self.context().as_u64(),
            seqno = self.seqno(),
            timeout_ms = timeout.map(|t| t.as_millis() as u64),
            "fence wait start"
        );
        // A kernel fence is waited for on its own fd: nothing else would wake the condvar.
        let result = match self.wait_native(deadline) {
            Some(result) => result,
            None => {
                self.enable_signaling();
                self.wait_signaled(deadline)
            }
        };
        tracing::trace!(
            target: TARGET,
            context = self.context().as_u64(),
            seqno = self.seqno(),
            ok = result.is_ok(),
            "fence wait end"
        );
        result
    }

    /// Sleeps on the condvar until signalled or `deadline`. Signalling must already be enabled.
    fn wait_signaled(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        let mut st = self.inner.lock();
        loop {
            if let Phase::Signaled { error, .. } = st.phase {
                return error.map_or(Ok(()), |e| Err(WaitError::Failed(e)));
            }
            match deadline {
                None => {
                    st.waiters += 1;
                    st = self
                        .inner
                        .cond
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                    st.waiters -= 1;
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        drop(st);
                        // Last chance for a backend that can only be polled.
                        return match self.status() {
                            FenceStatus::Pending => Err(WaitError::TimedOut),
                            FenceStatus::Signaled => Ok(()),
                            FenceStatus::Error(err) => Err(WaitError::Failed(err)),
                        };
                    }
                    st.waiters += 1;
                    st = self
                        .inner
                        .cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    st.waiters -= 1;
                }
            }
        }
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.inner.lock().phase {
            Phase::Pending { .. } => FenceStatus::Pending,
            Phase::Signaled { error, .. } => {
                error.map_or(FenceStatus::Signaled, FenceStatus::Error)
            }
        };
        f.debug_struct("Fence")
            .field("driver", &self.driver_name())
            .field("timeline", &self.timeline_name())
            .field("context", &self.context())
            .field("seqno", &self.seqno())
            .field("status", &status)
            .finish()
    }
}

/// A weak handle a backend signals a fence through, from any thread or event loop.
///
/// Handed to [`FenceOps::enable_signaling`], or made with [`Fence::signaler`]. It does not keep
/// the fence alive: once the last [`Fence`] is dropped, every method is a no-op returning
/// `false` (or `None`). Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct FenceSignaler {
    inner: Weak<Inner>,
}

impl FenceSignaler {
    /// [`Fence::signal`]; `false` if already signalled or released.
    pub fn signal(&self) -> bool {
        self.inner
            .upgrade()
            .is_some_and(|inner| inner.signal(Ktime::now(), None))
    }

    /// [`Fence::signal_timestamp`]; `false` if already signalled or released.
    pub fn signal_timestamp(&self, timestamp: Ktime) -> bool {
        self.inner
            .upgrade()
            .is_some_and(|inner| inner.signal(timestamp, None))
    }

    /// [`Fence::signal_with_error`]; `false` if already signalled or released.
    pub fn signal_with_error(&self, error: FenceError) -> bool {
        self.inner
            .upgrade()
            .is_some_and(|inner| inner.signal(Ktime::now(), Some(error)))
    }

    /// Signals with `timestamp` and, if `Some`, `error` (overriding one set earlier), in one
    /// step: for a backend that learns both from the kernel at once. `false` if already
    /// signalled or released.
    pub(crate) fn signal_with(&self, timestamp: Ktime, error: Option<FenceError>) -> bool {
        self.inner
            .upgrade()
            .is_some_and(|inner| inner.signal(timestamp, error))
    }

    /// The fence, if it is still alive.
    pub fn upgrade(&self) -> Option<Fence> {
        self.inner.upgrade().map(|inner| Fence { inner })
    }

    /// Whether the fence has been released (no [`Fence`] handle is left).
    pub fn is_released(&self) -> bool {
        self.inner.strong_count() == 0
    }
}

impl fmt::Debug for FenceSignaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.upgrade() {
            Some(fence) => f.debug_tuple("FenceSignaler").field(&fence).finish(),
            None => f.write_str("FenceSignaler(<released>)"),
        }
    }
}
