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
//!
//! # Several outputs
//! A buffer shown on two outputs is read by two pipelines that finish independently: one may
//! scan it out while the other composites it. Each pipeline is a [`Reader`]; a release keeps the
//! newest fence of each reader ([`Sampled`]) and waits for all of them. One reader's frames
//! complete in order, so its newer fence covers its older ones.

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

/// A pipeline that reads client buffers: one per output (its renderer pass or its planes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reader(pub u32);

/// The newest fence of each [`Reader`] that read a buffer: what its release waits for (see the
/// [module docs](self)).
#[derive(Default, Debug)]
pub struct Sampled {
    by: Vec<(Reader, ReleaseFence)>,
}

/// What [`Sampled::then`] runs once every fence is known.
type Done = Box<dyn FnOnce(Option<Arc<SyncFile>>) + Send>;

impl Sampled {
    /// A frame of `reader` read the buffer: `fence` replaces that reader's earlier fence, or
    /// forgets it when `None` (the frame's work is complete).
    pub fn record(&mut self, reader: Reader, fence: Option<ReleaseFence>) {
        self.by.retain(|(r, _)| *r != reader);
        if let Some(fence) = fence {
            self.by.push((reader, fence));
        }
    }

    /// True when no fence is recorded: nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }

    /// The one fence to wait for, if every recorded fence is known now: `Ok(None)` when none is
    /// left to wait for. `Err(self)` while a scanout fence awaits its commit.
    pub fn ready(self) -> Result<Option<Arc<SyncFile>>, Sampled> {
        let mut known = Vec::with_capacity(self.by.len());
        for (_, fence) in &self.by {
            match fence {
                ReleaseFence::Rendered(fence) => known.push(fence.clone()),
                ReleaseFence::Scanout(scanout) => match scanout.known() {
                    Some(fence) => known.extend(fence),
                    None => return Err(self),
                },
            }
        }
        Ok(merge_all(known))
    }

    /// Runs `done` once every recorded fence is known (now, if they are), with the one fence
    /// that signals after all of them; `None` when there is nothing to wait for.
    pub fn then(self, done: impl FnOnce(Option<Arc<SyncFile>>) + Send + 'static) {
        wait_all(
            self.by.into_iter().map(|(_, fence)| fence).collect(),
            Vec::new(),
            Box::new(done),
        );
    }
}

/// Waits for each scanout fence in `left` to be resolved, collecting the sync_files in `known`,
/// then calls `done` with them merged.
fn wait_all(mut left: Vec<ReleaseFence>, mut known: Vec<Arc<SyncFile>>, done: Done) {
    while let Some(fence) = left.pop() {
        match fence {
            ReleaseFence::Rendered(fence) => known.push(fence),
            ReleaseFence::Scanout(scanout) => {
                scanout.then(move |fence| {
                    known.extend(fence.cloned());
                    wait_all(left, known, done);
                });
                return;
            }
        }
    }
    done(merge_all(known));
}

/// One sync_file that signals when all of `fences` have (`SYNC_IOC_MERGE`); the fence itself
/// when there is one. If the kernel cannot merge (out of memory or fds), the fences are waited
/// for here: late, never early.
fn merge_all(fences: Vec<Arc<SyncFile>>) -> Option<Arc<SyncFile>> {
    let mut fences = fences.into_iter();
    let first = fences.next()?;
    fences.try_fold(first, |merged, fence| {
        match SyncFile::merge(&merged, &fence, "fencegate-release") {
            Ok(both) => Some(Arc::new(both)),
            Err(err) => {
                tracing::error!(%err, "merging release fences failed; waiting for them on the CPU");
                for fence in [&merged, &fence] {
                    if let Err(err) = fence.wait_timeout(None) {
                        tracing::error!(%err, "waiting for a release fence failed");
                    }
                }
                Some(fence)
            }
        }
    })
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

    #[test]
    fn a_release_waits_for_every_reader() {
        let (left, right) = (ScanoutFence::new(), ScanoutFence::new());
        let mut sampled = Sampled::default();
        sampled.record(Reader(0), Some(ReleaseFence::Scanout(left.clone())));
        sampled.record(Reader(1), Some(ReleaseFence::Scanout(right.clone())));
        let sampled = sampled
            .ready()
            .expect_err("both scanout fences are still to come");
        let (count, runs) = counter();
        sampled.then(move |fence| {
            assert!(
                fence.is_none(),
                "both frames left the screen without a fenced commit"
            );
            count.fetch_add(1, Ordering::SeqCst);
        });
        right.resolve(None);
        assert_eq!(runs(), 0, "the other output still shows the buffer");
        left.resolve(None);
        assert_eq!(runs(), 1);
    }

    #[test]
    fn a_readers_newer_fence_replaces_its_older_one() {
        let (older, newer) = (ScanoutFence::new(), ScanoutFence::new());
        let mut sampled = Sampled::default();
        sampled.record(Reader(3), Some(ReleaseFence::Scanout(older.clone())));
        sampled.record(Reader(3), Some(ReleaseFence::Scanout(newer.clone())));
        newer.resolve(None);
        assert!(
            matches!(sampled.ready(), Ok(None)),
            "the older fence of the same output is covered by the newer"
        );
    }

    #[test]
    fn a_reader_done_with_the_buffer_is_forgotten() {
        let pending = ScanoutFence::new();
        let mut sampled = Sampled::default();
        sampled.record(Reader(0), Some(ReleaseFence::Scanout(pending)));
        sampled.record(Reader(0), None);
        assert!(sampled.is_empty());
        assert!(matches!(sampled.ready(), Ok(None)));
    }
}
