//! [`ReleaseFence`]: what a buffer's release waits for after the last frame that read it.
//!
//! A composited buffer is read by a render pass: its release follows that pass's fence, known
//! when the frame is submitted. A buffer the display scans out directly is read until the frame
//! that **replaces** it starts scanning out. That moment has a kernel fence too, the CRTC's
//! `OUT_FENCE_PTR` fence of the replacing commit, but the commit does not exist yet when the
//! buffer goes on screen, and the client may well hand the compositor its next buffer before
//! then. A [`ScanoutFence`] stands for that fence until the backend makes the commit
//! ([`ScanoutFence::resolve`]); a release that falls due earlier waits inside it, so it is
//! still paid exactly once, and by the kernel, with no CPU wake-up at the flip.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use fence_bridge::SyncFile;

/// The fence of the last frame that read a buffer, recorded on its release
/// (`ReleasePoint::sampled_by`, `BufferRelease::sampled_by`).
#[derive(Clone, Debug)]
pub enum ReleaseFence {
    /// A render pass sampled the buffer: released when this fence signals.
    Rendered(Arc<SyncFile>),
    /// The display scanned the buffer out: released when the frame after it starts scanning out.
    Scanout(Arc<ScanoutFence>),
}

impl ReleaseFence {
    /// The sync_file a release waits for, if it is known now.
    pub fn known_fence(&self) -> Option<Arc<SyncFile>> {
        match self {
            ReleaseFence::Rendered(fence) => Some(fence.clone()),
            ReleaseFence::Scanout(scanout) => scanout.known().flatten(),
        }
    }
}

/// What waits for a [`ScanoutFence`]: runs once, with the out-fence, or with `None` when there
/// is none (the frame left the screen without a fenced commit: session paused, output gone).
type Waiter = Box<dyn FnOnce(Option<&Arc<SyncFile>>) + Send>;

/// The out-fence of a KMS commit not made yet: the one that takes a frame off screen (see the
/// [module docs](self)).
///
/// # Lifecycle
/// 1. **new**: the backend makes one for each frame it commits.
/// 2. **waited on**: releases of the buffers the frame scans out ([`ScanoutFence::then`]) wait
///    inside it when they fall due before step 3.
/// 3. **resolved**: the next commit on the CRTC returned its out-fence; waiting releases run now,
///    later ones at once. Dropping an unresolved fence resolves it with `None`: every waiter
///    still runs, exactly once.
pub struct ScanoutFence {
    state: Mutex<State>,
}

enum State {
    Awaited(Vec<Waiter>),
    Resolved(Option<Arc<SyncFile>>),
}

impl ScanoutFence {
    /// A fence still to come.
    pub fn new() -> Arc<ScanoutFence> {
        Arc::new(ScanoutFence {
            state: Mutex::new(State::Awaited(Vec::new())),
        })
    }

    /// The commit that replaces the frame was made: `fence` is its out-fence (`None`: nothing to
    /// wait for, the frame is off screen already). Runs every waiter now. A second resolve is
    /// ignored: the first commit after the frame is the one that took it off screen.
    pub fn resolve(&self, fence: Option<Arc<SyncFile>>) {
        let waiters = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *state {
                State::Resolved(_) => return,
                State::Awaited(waiters) => {
                    let waiters = std::mem::take(waiters);
                    *state = State::Resolved(fence.clone());
                    waiters
                }
            }
        };
        // Outside the lock: a waiter may do anything, including look at this fence.
        for waiter in waiters {
            waiter(fence.as_ref());
        }
    }

    /// Runs `waiter` with the out-fence once it is known (now, if it is).
    pub fn then(&self, waiter: impl FnOnce(Option<&Arc<SyncFile>>) + Send + 'static) {
        let resolved = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *state {
                State::Awaited(waiters) => {
                    waiters.push(Box::new(waiter));
                    return;
                }
                State::Resolved(fence) => fence.clone(),
            }
        };
        waiter(resolved.as_ref());
    }

    /// `None` while the replacing commit has not been made; then its out-fence, if it had one.
    pub fn known(&self) -> Option<Option<Arc<SyncFile>>> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Awaited(_) => None,
            State::Resolved(fence) => Some(fence.clone()),
        }
    }

    /// Releases waiting for it now.
    pub fn waiting(&self) -> usize {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Awaited(waiters) => waiters.len(),
            State::Resolved(_) => 0,
        }
    }
}

impl Drop for ScanoutFence {
    fn drop(&mut self) {
        self.resolve(None);
    }
}

impl fmt::Debug for ScanoutFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Awaited(waiters) => write!(f, "ScanoutFence(awaited by {})", waiters.len()),
            State::Resolved(fence) => {
                write!(f, "ScanoutFence(resolved, fence: {})", fence.is_some())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> usize) {
        let count = Arc::new(AtomicUsize::new(0));
        let read = count.clone();
        (count, move || read.load(Ordering::SeqCst))
    }

    #[test]
    fn a_waiter_runs_once_at_resolve() {
        let fence = ScanoutFence::new();
        let (count, runs) = counter();
        let c = count.clone();
        fence.then(move |out| {
            assert!(out.is_none());
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs(), 0, "nothing runs before the commit");
        assert_eq!(fence.waiting(), 1);
        fence.resolve(None);
        fence.resolve(None);
        assert_eq!(runs(), 1);
        assert!(matches!(fence.known(), Some(None)));
    }

    #[test]
    fn a_waiter_after_resolve_runs_at_once() {
        let fence = ScanoutFence::new();
        fence.resolve(None);
        let (count, runs) = counter();
        fence.then(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs(), 1);
    }

    #[test]
    fn dropping_an_unresolved_fence_runs_every_waiter() {
        let fence = ScanoutFence::new();
        let (count, runs) = counter();
        for _ in 0..3 {
            let c = count.clone();
            fence.then(move |out| {
                assert!(out.is_none());
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(fence);
        assert_eq!(runs(), 3);
    }
}
