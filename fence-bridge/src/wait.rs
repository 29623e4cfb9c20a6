//! Waiting on several fences: [`wait_any_timeout`] and [`wait_all_timeout`].

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Timeout, WaitAllError, WaitError};
use crate::fence::{Fence, FenceStatus, TARGET};

/// Blocks until any fence of `fences` signals or `timeout` elapses
/// (`dma_fence_wait_any_timeout()`); `None` waits forever. Returns the index of a signalled fence:
/// the lowest index among those signalled when the call returns.
///
/// A fence signalled *with an error* counts as signalled; look at `fences[i].status()`.
/// `Some(Duration::ZERO)` only polls and enables nothing; any other timeout enables signalling on
/// every fence (through a callback that is removed again before returning).
///
/// # Errors
///
/// [`Timeout`] if none signalled in time. An empty slice times out at once (the kernel returns
/// `-EINVAL`).
///
/// ```
/// use fence_bridge::{wait_any_timeout, FenceContext, Timeout};
/// use std::time::Duration;
///
/// let ctx = FenceContext::new("doc");
/// let fences = [ctx.create_fence(), ctx.create_fence(), ctx.create_fence()];
/// assert_eq!(wait_any_timeout(&fences, Some(Duration::from_millis(1))), Err(Timeout));
/// fences[1].signal();
/// assert_eq!(wait_any_timeout(&fences, None), Ok(1));
/// ```
pub fn wait_any_timeout(fences: &[Fence], timeout: Option<Duration>) -> Result<usize, Timeout> {
    let first_signaled = || fences.iter().position(Fence::is_signaled);
    if let Some(i) = first_signaled() {
        return Ok(i);
    }
    if fences.is_empty() || timeout == Some(Duration::ZERO) {
        return Err(Timeout);
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    tracing::trace!(target: TARGET, fences = fences.len(), "fence wait any start");

    let woken = Arc::new((Mutex::new(false), Condvar::new()));
    let wake = |woken: &Arc<(Mutex<bool>, Condvar)>| {
        let woken = woken.clone();
        move |_: &crate::SignalInfo| {
            *woken.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
            woken.1.notify_all();
        }
    };
    let mut handles = Vec::with_capacity(fences.len());
    let mut any_signaled = false;
    for fence in fences {
        match fence.add_callback(wake(&woken)) {
            Ok(handle) => handles.push((fence, handle)),
            Err(_) => {
                any_signaled = true;
                break;
            }
        }
    }
    if !any_signaled {
        let (lock, cond) = &*woken;
        let mut done = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            match deadline {
                None => done = cond.wait(done).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    done = cond
                        .wait_timeout(done, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
    for (fence, handle) in handles {
        fence.remove_callback(handle);
    }
    let result = first_signaled().ok_or(Timeout);
    tracing::trace!(target: TARGET, index = result.ok(), "fence wait any end");
    result
}

/// Blocks until every fence of `fences` signals or `timeout` elapses; `None` waits forever.
/// (The kernel has no such call; it builds a `dma_fence_array` instead.)
///
/// `Some(Duration::ZERO)` only polls and enables nothing; otherwise the fences are waited on in
/// order, each enabled as its turn comes, all against one deadline.
///
/// # Errors
///
/// [`WaitAllError::TimedOut`] with the indices still pending at the deadline;
/// [`WaitAllError::Failed`] with the first (lowest-index) error if all signalled but some failed.
/// An empty slice succeeds at once.
///
/// ```
/// use fence_bridge::{wait_all_timeout, FenceContext, FenceError, WaitAllError};
/// use std::time::Duration;
///
/// let ctx = FenceContext::new("doc");
/// let fences = [ctx.create_fence(), ctx.create_fence(), ctx.create_fence()];
/// fences[1].signal();
/// assert_eq!(
///     wait_all_timeout(&fences, Some(Duration::from_millis(1))),
///     Err(WaitAllError::TimedOut { pending: vec![0, 2] })
/// );
/// fences[0].signal();
/// fences[2].signal_with_error(FenceError::EIO);
/// assert_eq!(
///     wait_all_timeout(&fences, None),
///     Err(WaitAllError::Failed { index: 2, error: FenceError::EIO })
/// );
/// ```
pub fn wait_all_timeout(fences: &[Fence], timeout: Option<Duration>) -> Result<(), WaitAllError> {
    let deadline = match timeout {
        Some(t) => Instant::now().checked_add(t),
        None => None,
    };
    tracing::trace!(target: TARGET, fences = fences.len(), "fence wait all start");
    for fence in fences {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            break;
        }
        if let Err(WaitError::TimedOut) = fence.wait_timeout(remaining) {
            break;
        }
    }
    let statuses: Vec<FenceStatus> = fences.iter().map(Fence::status).collect();
    let pending: Vec<usize> = (0..fences.len())
        .filter(|&i| !statuses[i].is_signaled())
        .collect();
    tracing::trace!(target: TARGET, pending = pending.len(), "fence wait all end");
    if !pending.is_empty() {
        return Err(WaitAllError::TimedOut { pending });
    }
    match statuses
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.error().map(|e| (i, e)))
    {
        Some((index, error)) => Err(WaitAllError::Failed { index, error }),
        None => Ok(()),
    }
}
