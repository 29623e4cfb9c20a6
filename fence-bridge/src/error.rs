//! Error types: the error a fence is signalled with, and the errors of the verbs.

use std::fmt;
use std::num::NonZeroI32;

/// The error a fence was signalled with: a Linux errno, like `dma_fence.error`.
///
/// The kernel stores a *negative* errno in `dma_fence.error` and reports it through
/// `dma_fence_get_status()` and `sync_fence_info.status`. This type stores the positive
/// errno (the Rust [`std::io::Error::from_raw_os_error`] convention); [`FenceError::to_kernel`]
/// gives the kernel's negative value and [`crate::FenceStatus::from_kernel`] reads one.
///
/// ```
/// use fence_bridge::FenceError;
///
/// let err = FenceError::from_errno(2).unwrap(); // ENOENT on every Linux architecture
/// assert_eq!(err, FenceError::ENOENT);
/// assert_eq!(err.to_kernel(), -2);
/// assert!(FenceError::from_errno(0).is_none());
/// assert!(FenceError::from_errno(-2).is_none()); // positive errnos only
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FenceError(NonZeroI32);

impl FenceError {
    /// The kernel's `MAX_ERRNO`: `dma_fence_set_error()` rejects anything outside `-MAX_ERRNO..0`.
    pub const MAX_ERRNO: i32 = 4095;

    /// `ENOENT`: the software timeline was destroyed before reaching the point
    /// (what sw_sync does when its timeline file is closed).
    pub const ENOENT: Self = Self::errno_const(rustix::io::Errno::NOENT.raw_os_error());
    /// `EDEADLK`: the fence was released with callbacks still pending (what `dma_fence_release()`
    /// force-signals).
    pub const EDEADLK: Self = Self::errno_const(rustix::io::Errno::DEADLK.raw_os_error());
    /// `ETIMEDOUT`: the producer gave up on the work (e.g. a GPU hang detected by a timeout).
    pub const ETIMEDOUT: Self = Self::errno_const(rustix::io::Errno::TIMEDOUT.raw_os_error());
    /// `ECANCELED`: the work was cancelled before it ran.
    pub const ECANCELED: Self = Self::errno_const(rustix::io::Errno::CANCELED.raw_os_error());
    /// `EIO`: the work failed.
    pub const EIO: Self = Self::errno_const(rustix::io::Errno::IO.raw_os_error());

    const fn errno_const(errno: i32) -> Self {
        match NonZeroI32::new(errno) {
            Some(e) => Self(e),
            None => panic!("errno constants are non-zero"),
        }
    }

    /// Wraps a positive errno (`1..=MAX_ERRNO`). Returns `None` for 0, negative values and
    /// values above [`FenceError::MAX_ERRNO`].
    pub const fn from_errno(errno: i32) -> Option<Self> {
        if errno <= 0 || errno > Self::MAX_ERRNO {
            return None;
        }
        match NonZeroI32::new(errno) {
            Some(e) => Some(Self(e)),
            None => None,
        }
    }

    /// The positive errno.
    pub const fn errno(self) -> i32 {
        self.0.get()
    }

    /// The kernel's representation: the negative errno, as in `dma_fence.error`.
    pub const fn to_kernel(self) -> i32 {
        -self.0.get()
    }
}

impl fmt::Debug for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FenceError({}: {})",
            self.errno(),
            std::io::Error::from_raw_os_error(self.errno())
        )
    }
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = std::io::Error::from_raw_os_error(self.errno());
        write!(f, "fence signalled with an error: {io}")
    }
}

impl std::error::Error for FenceError {}

impl From<FenceError> for std::io::Error {
    fn from(err: FenceError) -> Self {
        std::io::Error::from_raw_os_error(err.errno())
    }
}

/// The fence was already signalled.
///
/// Returned by [`crate::Fence::add_callback`] (the kernel's `-ENOENT` from
/// `dma_fence_add_callback()`: the callback was *not* called and not stored) and by
/// [`crate::Fence::set_error`] (setting an error after the signal is a programming error; the
/// kernel `WARN`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlreadySignaled;

impl fmt::Display for AlreadySignaled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fence already signalled")
    }
}

impl std::error::Error for AlreadySignaled {}

/// A bounded wait ended before the fence(s) signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeout;

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting for a fence")
    }
}

impl std::error::Error for Timeout {}

/// Why [`crate::Fence::wait_timeout`] did not return `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitError {
    /// The timeout elapsed; the fence is still pending.
    TimedOut,
    /// The fence signalled, with this error.
    Failed(FenceError),
}

impl WaitError {
    /// Whether the wait timed out (as opposed to the fence failing).
    pub fn is_timeout(&self) -> bool {
        matches!(self, WaitError::TimedOut)
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut => Timeout.fmt(f),
            WaitError::Failed(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for WaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::TimedOut => None,
            WaitError::Failed(err) => Some(err),
        }
    }
}

impl From<Timeout> for WaitError {
    fn from(_: Timeout) -> Self {
        WaitError::TimedOut
    }
}

impl From<FenceError> for WaitError {
    fn from(err: FenceError) -> Self {
        WaitError::Failed(err)
    }
}

/// Why [`crate::wait_all_timeout`] did not return `Ok`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WaitAllError {
    /// The timeout elapsed; these indices (into the slice that was passed, ascending) were
    /// still pending at that moment.
    TimedOut {
        /// Indices of the fences still pending, ascending.
        pending: Vec<usize>,
    },
    /// Every fence signalled, but at least one with an error; this is the lowest such index.
    Failed {
        /// Index of the first fence (in slice order) that signalled with an error.
        index: usize,
        /// Its error.
        error: FenceError,
    },
}

impl fmt::Display for WaitAllError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitAllError::TimedOut { pending } => {
                write!(
                    f,
                    "timed out waiting for fences; still pending: {pending:?}"
                )
            }
            WaitAllError::Failed { index, error } => write!(f, "fence #{index}: {error}"),
        }
    }
}

impl std::error::Error for WaitAllError {}
