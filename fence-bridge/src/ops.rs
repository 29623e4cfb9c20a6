//! [`FenceOps`]: the backend of a fence kind, like the kernel's `struct dma_fence_ops`.

use crate::fence::FenceSignaler;
use crate::time::Ktime;

/// The backend of one kind of fence (`struct dma_fence_ops`).
///
/// A [`crate::Fence`] owns one `FenceOps` value for its whole life; the core calls it to learn
/// names, to arm signalling lazily, to poll cheaply and to forward deadline hints. Software
/// timelines, sync_files, DRM syncobj points, dma-buf implicit fences, KMS out-fences and EGL
/// fences each plug in through this trait.
///
/// Two members are mandatory ([`driver_name`](FenceOps::driver_name) and
/// [`timeline_name`](FenceOps::timeline_name)); the rest are optional with defaults that fit a
/// fence signalled by hand.
///
/// # Calling context
///
/// The core never holds one of its locks while calling into `FenceOps`, so every member may call
/// any [`crate::Fence`] or [`FenceSignaler`] method, including signalling the same fence.
/// Members are called from whatever thread made the triggering call (a waiter, the thread adding
/// a callback, the thread dropping the last reference), so implementations are `Send + Sync`.
///
/// # Example: a backend signalled from another thread
///
/// ```
/// use fence_bridge::{Fence, FenceOps, FenceSignaler, context_alloc};
/// use std::time::Duration;
///
/// /// Pretend hardware: a thread that "finishes the work" after a while.
/// struct Worker;
///
/// impl FenceOps for Worker {
///     fn driver_name(&self) -> &str { "doc-worker" }
///     fn timeline_name(&self) -> &str { "queue0" }
///     fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
///         // Arm the "interrupt": only now that someone waits.
///         std::thread::spawn(move || {
///             std::thread::sleep(Duration::from_millis(5));
///             signaler.signal();
///         });
///         true
///     }
/// }
///
/// let fence = Fence::new(context_alloc(1).first(), 1, Worker);
/// assert!(!fence.signaling_enabled()); // no thread yet
/// fence.wait_timeout(Some(Duration::from_secs(10))).unwrap();
/// assert!(fence.is_signaled());
/// ```
pub trait FenceOps: Send + Sync + 'static {
    /// **Mandatory.** Name of the driver (backend) that produced the fence, e.g. `"sw_sync"`.
    ///
    /// Called for diagnostics (tracing events, `Debug`), from any thread, at any point of the
    /// fence's life, including after it signalled and during release.
    fn driver_name(&self) -> &str;

    /// **Mandatory.** Name of the timeline the fence belongs to, e.g. a ring or an output.
    ///
    /// Called like [`driver_name`](FenceOps::driver_name).
    fn timeline_name(&self) -> &str;

    /// **Optional.** Arm signalling: the first waiter has arrived.
    ///
    /// Called **at most once per fence**, and only when someone first waits (with a non-zero
    /// timeout), adds a callback, asks for a [`crate::Fence::poll_fd`] or calls
    /// [`crate::Fence::enable_signaling`] — never at creation, and never if the fence already
    /// signalled. This is where a backend registers an fd with a poll loop, creates an eventfd,
    /// starts a thread or turns an interrupt on; nothing of that kind may exist before.
    ///
    /// `signaler` is a weak handle: store it wherever the completion is noticed (an event loop,
    /// another thread) and call [`FenceSignaler::signal`] (or a variant) from there. It does not
    /// keep the fence alive: when the last [`crate::Fence`] goes away, signalling through it does
    /// nothing and [`release`](FenceOps::release) runs. A backend that must outlive its users
    /// (like a software timeline's list of pending points) keeps a [`crate::Fence`] instead.
    ///
    /// Return `true` if signalling is armed; the backend then **must** eventually signal the
    /// fence (see the cross-driver contract in the crate docs). Return `false` if the fence turned
    /// out to be already complete: the core then signals it at once (with the error set by
    /// [`crate::Fence::set_error`], if any). The default returns `true` and arms nothing: right for
    /// fences signalled by hand.
    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        let _ = signaler;
        true
    }

    /// **Optional.** Cheap, non-blocking check whether the fence has completed (e.g. a
    /// zero-timeout `poll()` on a sync_file, or reading a seqno the hardware writes).
    ///
    /// Called from [`crate::Fence::is_signaled`], [`crate::Fence::status`] and zero-timeout waits
    /// while the fence is still pending, possibly many times and from any thread, whether or not
    /// signalling is enabled. When it returns `true` the core signals the fence with the current
    /// time as the timestamp. Must not block. The default returns `false`.
    fn signaled(&self) -> bool {
        false
    }

    /// **Optional.** Deadline hint: someone would like the fence signalled by `deadline`
    /// (`dma_fence_set_deadline()`, e.g. the next vblank). Backends may boost clocks or
    /// reprioritise; they may also ignore it.
    ///
    /// Called from [`crate::Fence::set_deadline`] only while the fence is pending, possibly
    /// several times with different deadlines; the backend keeps the earliest if it cares. The
    /// default ignores the hint.
    fn set_deadline(&self, deadline: Ktime) {
        let _ = deadline;
    }

    /// **Optional.** Whether seqnos of this kind are 64-bit (`dma_fence_ops.use_64bit_seqno`).
    ///
    /// `true` (the default, unlike the kernel's): [`crate::Fence::is_later`] compares seqnos as
    /// plain `u64`. `false`: only the low 32 bits count and they may wrap; `a` is later than `b`
    /// when `(a - b) as i32 > 0`, as in `__dma_fence_is_later()`. Called from `is_later` on the
    /// first fence's ops; both fences of a context must agree.
    fn use_64bit_seqno(&self) -> bool {
        true
    }

    /// **Optional.** The fence's own pollable fd: one that becomes readable (`POLLIN`) when the
    /// kernel object behind the fence signals, and stays readable — a sync_file's fd, or an
    /// eventfd the kernel writes (`DRM_IOCTL_SYNCOBJ_EVENTFD`).
    ///
    /// Called lazily by [`crate::Fence::poll_fd`], at most once per fence, only while it is
    /// pending; poll loops (the calloop source) register this fd directly, so a kernel fence
    /// costs no extra eventfd and no thread. Creating it may cost a syscall (a `dup`, the
    /// syncobj eventfd ioctl), never a thread. Whoever sees it readable learns the state through
    /// [`signaled`](FenceOps::signaled), which must then return `true`.
    ///
    /// The default, `None`, makes the core create an eventfd written by a callback: right for
    /// fences that are signalled by hand or by a thread of their own.
    fn native_poll_fd(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        None
    }
    /// **Optional.** The fence is being released: the last [`crate::Fence`] reference is gone.
    ///
    /// Called exactly once, on the thread that dropped the last reference, after any pending
    /// callbacks ran (a fence released with callbacks pending is first signalled with
    /// [`crate::FenceError::EDEADLK`], as `dma_fence_release()` does). The fence may still be
    /// pending if nobody was waiting on it; the backend must then stop its armed machinery
    /// (drop its [`FenceSignaler`], close fds). After this returns the ops value is dropped, so a
    /// plain `Drop` impl serves the same purpose; this hook exists for parity with
    /// `dma_fence_ops.release` and for backends that want to log. The default does nothing.
    fn release(&self) {}
}
