//! [`FencePollFd`]: an fd that becomes readable when a fence signals, for poll loops and CPU
//! clients. Created only on request.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags, PollFlags};

use crate::error::WaitError;
use crate::fence::{Fence, FenceStatus, TARGET};

/// Longest single `poll()` of [`Fence::wait_native`].
const NATIVE_WAIT_SLICE: Duration = Duration::from_millis(100);
use crate::stats;

pub(crate) type SharedEventFd = Arc<OwnedFd>;

/// An fd that becomes readable (`POLLIN`) when its fence signals, and stays readable — like a
/// sync_file. Returned by [`Fence::poll_fd`].
///
/// It is an eventfd written by the fence's signal (directly, not through a callback); nobody
/// reads it, so it is level-triggered for good. Register it with calloop/epoll, or block on it
/// with [`wait_readable`](FencePollFd::wait_readable). Clones share one fd, which is closed when
/// the last clone and the fence are gone.
///
/// If the fence is released unsignalled while a `FencePollFd` of it is still held, the holder is
/// a waiter: the fence is force-signalled with [`crate::FenceError::EDEADLK`] (the "released with
/// pending signals" warning) and the fd becomes readable. If nobody holds one any more, the fence
/// is released quietly: the core's own reference to its eventfd is not a waiter.
#[derive(Debug, Clone)]
pub struct FencePollFd {
    fd: SharedEventFd,
}

impl FencePollFd {
    /// Polls the fd for readability for up to `timeout` (`None`: forever). Returns whether it is
    /// readable, i.e. whether the fence signalled. Retries on `EINTR`.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        crate::ioctl::poll_one(self.fd.as_fd(), PollFlags::IN, timeout)
    }

    /// Whether the fd is readable right now (a zero-timeout poll).
    pub fn is_readable(&self) -> io::Result<bool> {
        self.wait_readable(Some(Duration::ZERO))
    }
}

impl AsFd for FencePollFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for FencePollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[inline]
pub(crate) fn notify(fd: impl AsFd) {
    // The counter cannot overflow with one write per fence; EAGAIN would only mean "readable".
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

impl Fence {
    /// The backend's own fd ([`crate::FenceOps::native_poll_fd`]), created once and kept in
    /// `poll_fd`; `None` if the backend has none or `poll_fd` already holds a core eventfd.
    /// Asked without our lock held, as every FenceOps call is; a racing caller's fd wins.
    pub(crate) fn native_poll_fd(&self) -> Option<io::Result<FencePollFd>> {
        {
            let st = self.inner.lock();
            if let Some(fd) = &st.poll_fd {
                let fd = fd.clone();
                return st.poll_fd_native().then_some(Ok(FencePollFd { fd }));
            }
        }
        let native: SharedEventFd = match self.ops().native_poll_fd()? {
            Ok(fd) => Arc::new(fd),
            Err(err) => return Some(Err(err)),
        };
        let mut st = self.inner.lock();
        if st.poll_fd.is_none() {
            st.set_poll_fd(native, true);
        }
        let fd = st.poll_fd.clone()?;
        st.poll_fd_native().then_some(Ok(FencePollFd { fd }))
    }

    /// A blocking wait on a kernel fence: polls its native fd until readable or `deadline`,
    /// in slices of at most [`NATIVE_WAIT_SLICE`] so that a signal by hand is noticed too.
    /// `None` if the fence has no native fd (or it cannot be made, or it is readable while the
    /// backend still reports pending): the caller then enables signalling and waits as usual.
    pub(crate) fn wait_native(&self, deadline: Option<Instant>) -> Option<Result<(), WaitError>> {
        let fd = match self.native_poll_fd()? {
            Ok(fd) => fd,
            Err(_) => return None,
        };
        let result = |fence: &Fence| match fence.status() {
            FenceStatus::Pending => Err(WaitError::TimedOut),
            FenceStatus::Signaled => Ok(()),
            FenceStatus::Error(err) => Err(WaitError::Failed(err)),
        };
        loop {
            if self.is_signaled() {
                return Some(result(self));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Some(result(self));
            }
            let slice = left.map_or(NATIVE_WAIT_SLICE, |l| l.min(NATIVE_WAIT_SLICE));
            match fd.wait_readable(Some(slice)) {
                Ok(true) if self.is_signaled() => return Some(result(self)),
                Ok(true) | Err(_) => return None,
                Ok(false) => {}
            }
        }
    }

    /// An fd that becomes readable when this fence signals (what makes a software timeline
    /// "poll-able", like sw_sync's sync_files).
    ///
    /// A fence whose backend has its own pollable fd ([`crate::FenceOps::native_poll_fd`]: a
    /// sync_file, a syncobj eventfd) returns that. Otherwise the first call creates one eventfd
    /// for this fence, which the signal writes (before waking waiters and running callbacks), and
    /// enables signalling; later calls return the same fd. No eventfd exists before the
    /// first call. On an already-signalled fence the eventfd is created readable — check
    /// [`Fence::is_signaled`] first if you can avoid the fd altogether.
    ///
    /// # Errors
    ///
    /// If the eventfd cannot be created (e.g. `EMFILE`).
    ///
    /// ```
    /// use fence_bridge::SwTimeline;
    /// use std::time::Duration;
    ///
    /// let timeline = SwTimeline::new("doc");
    /// let fence = timeline.create_fence(1);
    /// let fd = fence.poll_fd()?;
    /// assert!(!fd.is_readable()?);
    /// timeline.advance(1);
    /// assert!(fd.wait_readable(Some(Duration::from_secs(10)))?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll_fd(&self) -> io::Result<FencePollFd> {
        if let Some(fd) = &self.inner.lock().poll_fd {
            return Ok(FencePollFd { fd: fd.clone() });
        }
        // A kernel fence polls on its own fd: no eventfd, no callback.
        if !self.is_signaled() {
            if let Some(native) = self.native_poll_fd() {
                return native;
            }
        }
        let (fd, signaled) = {
            let mut st = self.inner.lock();
            if let Some(fd) = &st.poll_fd {
                return Ok(FencePollFd { fd: fd.clone() });
            }
            let fd: SharedEventFd =
                Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
            stats::bump(&stats::EVENTFDS_CREATED);
            // From here on the signal writes it (it reads `poll_fd` under this lock); if the
            // fence signalled already, nobody else will.
            st.set_poll_fd(fd.clone(), false);
            (
                fd,
                self.inner
                    .signaled
                    .load(std::sync::atomic::Ordering::Acquire),
            )
        };
        tracing::trace!(
            target: TARGET,
            context = self.context().as_u64(),
            seqno = self.seqno(),
            fd = fd.as_raw_fd(),
            "fence poll fd created"
        );
        if signaled {
            notify(&fd);
        } else {
            self.enable_signaling();
        }
        Ok(FencePollFd { fd })
    }
}
