//! How clients reuse their buffers, under either explicit-sync protocol: linux-drm-syncobj-v1
//! (a release point per commit) and zwp_linux_explicit_synchronization_v1 (a release object per
//! commit, answered with `immediate_release` or `fenced_release`).
//!
//! # The rule, and what breaks it
//!
//! A client may write into a buffer again only once the compositor has released the commit that
//! last showed it. "Released" is the compositor's side, and it has two steps:
//!
//! 1. **the release is made**: the release point signalled from the CPU, or the render fence of
//!    the last frame that read the buffer imported into it; `immediate_release`, or
//!    `fenced_release` with that fence;
//! 2. **the release takes effect**: at once for a CPU signal or `immediate_release`, else when
//!    that render fence signals (the kernel then signals the release point).
//!
//! Committing the buffer again *before* that is legitimate: a client may queue GPU work that
//! waits for the release point (or fence) and commit at once with an acquire point that signals
//! when the work is done ([`BufferReuseStats::committed_before_release`] counts them). What is
//! wrong is the client's **write finishing** before the release took effect, and the acquire
//! fence of the reusing commit is when the client says its write finished. So a reuse is
//! **rewritten while held** when its acquire fence signalled before the previous commit's release
//! took effect:
//!
//! * the release was not made yet, or
//! * it was made at `t_r` and the acquire fence signalled before `t_r`, or
//! * it waits for a render fence, and the acquire fence signalled while that fence was pending
//!   (before its signal timestamp).
//!
//! # When it is judged
//!
//! Two moments, so that the order of two events in one event-loop dispatch cannot hide a case:
//!
//! * **when the acquire fence is seen signalled** — at commit time when it had signalled already,
//!   else when the commit's blocker fires — the previous release is looked at
//!   ([`PendingReuse::acquired`]): not made, made later than the acquire signal, or waiting for a
//!   render fence that is still pending or signalled later (`SYNC_IOC_FILE_INFO` gives its signal
//!   timestamp) is a rewrite;
//! * **when the release is made** ([`BufferUse::released`]), just before the point is signalled
//!   or the event is sent: if the next commit of the buffer is still waiting for its acquire
//!   fence and that fence has signalled by now, it is a rewrite too. This catches the acquire
//!   that signalled before the release but whose blocker runs after it (two commits released in
//!   the same dispatch).
//!
//! Each reuse is judged once, by whichever comes first.
//!
//! The acquire fence's signal time is the kernel's timestamp for a sync_file
//! (zwp_linux_explicit_synchronization_v1), except for the kernel's "nothing to wait for" stub
//! fence (whose timestamp is when the stub was first made, not when the client wrote): then
//! the time fencegate saw it. For a syncobj point (linux-drm-syncobj-v1) the kernel keeps no
//! timestamp: it is the time fencegate saw the point signalled, a little after the true signal.
//! So under linux-drm-syncobj-v1 an acquire point that signals less than one event-loop wake-up
//! before the render fence in its release point, and is seen after it, is not caught: nothing
//! that is reported is wrong, a few near misses may go unreported.
//!
//! # What is kept
//!
//! Per buffer, its last commit's [`BufferUse`]: the release time and, only while it is pending,
//! the render fence the release waits for (an `Arc` of the frame's sync_file, shared with every
//! buffer the frame read; a render fence found signalled is kept as its timestamp only). The
//! acquire fence of a commit waiting for it is kept *weakly* ([`FenceSignaler`]). So no syncobj
//! handle is held by this module, and no fd but pending render fences. A destroyed buffer's
//! entry goes when the compositor reports the destruction (`buffer_destroyed` of the protocol
//! states, from Smithay's `BufferHandler`); in any case entries of destroyed buffers are pruned
//! (and their render fences asked again) whenever the table has doubled since the last pruning.
//!
//! A compositor cannot see CPU writes: an acquire fence that signalled is the client's word that
//! its write is done. A buffer committed again with a fresh, signalled acquire fence while the
//! compositor holds it counts as rewritten even if the client wrote nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fence_bridge::{Fence, FenceSignaler, Ktime, SyncFile, SyncFileInfo};
use smithay::reexports::wayland_server::backend::{ClientId, ObjectId};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Resource, Weak};

use crate::wait_times::WaitTimes;

/// Buffers tracked before the first pruning of destroyed ones; later, twice what the last
/// pruning left.
const PRUNE_AT_LEAST: usize = 64;

/// How a protocol's clients reused their buffers.
///
/// A client may write a buffer again once the compositor's release of the commit that last
/// showed it has taken effect: made (release point signalled or given the render fence to signal
/// after; `immediate_release` or `fenced_release` sent) and, when it waits for a render fence,
/// that fence signalled. Committing the buffer again before that is allowed (GPU work queued
/// behind the release); the write *finishing* before it — the new commit's acquire fence or
/// point signalling — is a rewrite while held. Measured by the acquire wait
/// (`wait_for_acquire_points`, `wait_for_acquire_fences`): a compositor that does not install it
/// gets zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferReuseStats {
    /// Commits that attached, with a new acquire fence (or point), a buffer whose previous commit
    /// carried a release (point or object).
    pub reused: u64,
    /// Of those, commits made before the previous commit's release took effect (not made yet, or
    /// waiting for a render fence). Allowed: the client's write must only *finish* after it.
    pub committed_before_release: u64,
    /// Of those, commits whose acquire fence signalled before the previous commit's release took
    /// effect: the client finished writing a buffer the compositor could still be reading.
    pub rewritten_while_held: u64,
    /// For the reuses committed after the release took effect: from the release (the later of
    /// making it and its render fence's signal) to the commit that reused the buffer.
    pub after_release: WaitTimes,
}

/// The fence a release waits for: the render fence of the last frame that read the buffer.
/// Implemented by [`SyncFile`] (what the renderer exports) and [`Fence`].
pub(crate) trait RenderFence: Send + Sync + 'static {
    /// Whether it signalled, and when.
    fn signal(&self) -> Signal;
}

/// A fence's signal, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Not signalled yet.
    Pending,
    /// Signalled at this time.
    At(Ktime),
    /// Signalled, at a time nobody knows (the kernel's stub fence, a failed query): taken as
    /// "no later than when it was handed over".
    Unknown,
}

/// The kernel's "nothing to wait for" fence (`dma_fence_get_stub()`): signalled once, at
/// boot or first use, so its timestamp says nothing about the buffer.
const STUB_DRIVER: &str = "stub";

impl Signal {
    /// From `SYNC_IOC_FILE_INFO`: the latest timestamp of its fences that are not stubs.
    pub(crate) fn of_sync_file(info: &SyncFileInfo) -> Signal {
        if !info.status.is_signaled() {
            return Signal::Pending;
        }
        info.fences
            .iter()
            .filter(|f| f.driver_name != STUB_DRIVER)
            .filter_map(|f| f.timestamp)
            .max()
            .map_or(Signal::Unknown, Signal::At)
    }
}

impl RenderFence for SyncFile {
    fn signal(&self) -> Signal {
        match self.info() {
            Ok(info) => Signal::of_sync_file(&info),
            // Not a sync_file any more cannot happen (it is ours); the kernel refused: count it
            // as signalled, so that a failure never makes a finding.
            Err(_) => Signal::Unknown,
        }
    }
}

impl RenderFence for Fence {
    fn signal(&self) -> Signal {
        if !self.is_signaled() {
            return Signal::Pending;
        }
        self.timestamp().map_or(Signal::Unknown, Signal::At)
    }
}

/// When an acquire fence found signalled at `seen` signalled, from its `SYNC_IOC_FILE_INFO`:
/// the kernel's timestamp, or `seen` for the stub fence (see the [module docs](self)).
pub(crate) fn acquired_at(info: &SyncFileInfo, seen: Ktime) -> Ktime {
    match Signal::of_sync_file(info) {
        Signal::At(at) => at.min(seen),
        Signal::Pending | Signal::Unknown => seen,
    }
}

/// Who a reuse is about, for the log line of a rewrite.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    /// The protocol's name.
    protocol: &'static str,
    client: Option<ClientId>,
    surface: ObjectId,
    buffer: ObjectId,
}

impl Who {
    pub(crate) fn of(protocol: &'static str, surface: &WlSurface, buffer: &WlBuffer) -> Who {
        Who {
            protocol,
            client: surface.client().map(|c| c.id()),
            surface: surface.id(),
            buffer: buffer.id(),
        }
    }
}

impl Default for Who {
    fn default() -> Self {
        Who {
            protocol: "",
            client: None,
            surface: ObjectId::null(),
            buffer: ObjectId::null(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks but a caller's bug; the data stays consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One commit of a buffer that carried a release, from the commit to its release. Shared by the
/// release obligation ([`ReleasePoint`](crate::drm_syncobj::ReleasePoint),
/// [`BufferRelease`](crate::explicit_sync::BufferRelease)), which calls
/// [`BufferUse::released`], and the tracking, which judges the buffer's next commit against it.
#[derive(Default)]
pub(crate) struct BufferUse {
    state: Mutex<UseState>,
}

#[derive(Default)]
struct UseState {
    released: Option<Release>,
    /// The buffer's next commit, while its write is not judged yet.
    next: Option<Arc<Reuse>>,
}

/// A release, once made.
struct Release {
    /// When it was made (just before the point was signalled or the event sent).
    at: Ktime,
    /// The render fence it waits for.
    after: After,
}

enum After {
    /// Nothing: it took effect when made.
    Nothing,
    /// A render fence still pending when last asked (kept until it is seen signalled).
    Pending(Arc<dyn RenderFence>),
    /// A render fence that signalled then (`None`: at an unknown time).
    Signalled(Option<Ktime>),
}

impl Release {
    /// When the release took effect, `None` while its render fence is pending. Asks the fence
    /// (one `SYNC_IOC_FILE_INFO`) while it is pending and forgets it once signalled.
    fn took_effect(&mut self) -> Option<Ktime> {
        if let After::Pending(fence) = &self.after {
            let signal = fence.signal();
            self.after = match signal {
                Signal::Pending => return None,
                Signal::At(at) => After::Signalled(Some(at)),
                Signal::Unknown => After::Signalled(None),
            };
        }
        match self.after {
            After::Nothing | After::Signalled(None) => Some(self.at),
            After::Signalled(Some(signalled)) => Some(signalled.max(self.at)),
            After::Pending(_) => unreachable!("settled above"),
        }
    }
}

impl BufferUse {
    /// The release is being made now, waiting for `after` (the render fence of the last frame
    /// that read the buffer) if given. Call it *before* the release can be seen by the client
    /// (before the point is signalled, the fence imported, the event sent). Judges the buffer's
    /// next commit if its acquire fence has signalled already (see the [module docs](self)).
    pub(crate) fn released(&self, after: Option<Arc<dyn RenderFence>>) {
        let at = Ktime::now();
        let after = match after {
            None => After::Nothing,
            // Asked once now: a fence that has signalled (the usual case, and always llvmpipe's
            // stub) is not kept.
            Some(fence) => match fence.signal() {
                Signal::Pending => After::Pending(fence),
                Signal::At(at) => After::Signalled(Some(at)),
                Signal::Unknown => After::Signalled(None),
            },
        };
        let next = {
            let mut state = lock(&self.state);
            if state.released.is_some() {
                return; // released once; a second call is a caller's slip, ignored
            }
            state.released = Some(Release { at, after });
            state.next.take()
        };
        let Some(next) = next else {
            return;
        };
        // Still waiting (the wait holds the fence): has its acquire fence signalled already?
        let signalled = next
            .acquire
            .upgrade()
            .is_some_and(|fence| fence.is_signaled());
        if signalled && next.judge() {
            next.count_rewrite("the release was made after its acquire fence signalled");
        }
    }

    /// The release made by [`BufferUse::released`] did not wait for its render fence after all
    /// (importing it failed): it takes effect now.
    pub(crate) fn took_effect_now(&self) {
        if let Some(release) = lock(&self.state).released.as_mut() {
            release.after = After::Signalled(Some(Ktime::now()));
        }
    }

    /// Whether the release has taken effect, and when (see [`BufferUse::released`]).
    fn took_effect(&self) -> Option<Ktime> {
        lock(&self.state).released.as_mut()?.took_effect()
    }
}

impl fmt::Debug for BufferUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("BufferUse")
            .field("released_at", &state.released.as_ref().map(|r| r.at))
            .field("next", &state.next.is_some())
            .finish()
    }
}

/// A reuse of a buffer, shared by its commit's acquire wait ([`PendingReuse`]) and the previous
/// commit's [`BufferUse`], whichever judges it first.
struct Reuse {
    judged: AtomicBool,
    /// The acquire fence of the reusing commit, weakly: the wait owns it.
    acquire: FenceSignaler,
    stats: Arc<Mutex<BufferReuseStats>>,
    who: Who,
}

impl Reuse {
    /// Claims the judgement: true once.
    fn judge(&self) -> bool {
        !self.judged.swap(true, Ordering::AcqRel)
    }

    fn count_rewrite(&self, how: &str) {
        lock(&self.stats).rewritten_while_held += 1;
        let who = &self.who;
        tracing::warn!(
            protocol = who.protocol,
            client = ?who.client,
            surface = %who.surface,
            buffer = %who.buffer,
            "buffer rewritten while the compositor held it: the acquire fence of its new commit \
             signalled before the compositor's release of its previous commit took effect ({how})"
        );
    }
}

/// A reusing commit whose write is judged when its acquire fence is seen signalled
/// ([`PendingReuse::acquired`]). Dropped unjudged (its wait abandoned), it judges nothing.
pub(crate) struct PendingReuse {
    previous: Arc<BufferUse>,
    reuse: Arc<Reuse>,
}

impl PendingReuse {
    /// The commit's acquire fence was seen signalled; it signalled at `acquired`.
    pub(crate) fn acquired(self, acquired: Ktime) {
        if !self.reuse.judge() {
            return; // judged when the release was made
        }
        let rewritten = {
            let mut state = lock(&self.previous.state);
            state.next = None;
            match state.released.as_mut().map(Release::took_effect) {
                None => Some("the release was not made yet"),
                Some(None) => Some("the render fence the release waits for was still pending"),
                // The later of making the release and its render fence's signal.
                Some(Some(effect)) if acquired < effect => {
                    Some("the release took effect after its acquire fence signalled")
                }
                Some(Some(_)) => None,
            }
        };
        if let Some(how) = rewritten {
            self.reuse.count_rewrite(how);
        }
    }
}

impl Drop for PendingReuse {
    fn drop(&mut self) {
        // Unjudged (the wait was abandoned): the release must not judge it either.
        self.reuse.judged.store(true, Ordering::Release);
    }
}

impl fmt::Debug for PendingReuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReuse")
            .field("previous", &self.previous)
            .field("who", &self.reuse.who)
            .finish()
    }
}

/// A commit that reuses the buffer of `previous`, with the acquire fence `acquire`: counts it
/// and returns what judges its write once the fence is seen signalled.
pub(crate) fn reuse(
    stats: &Arc<Mutex<BufferReuseStats>>,
    previous: Arc<BufferUse>,
    acquire: &Fence,
    who: Who,
) -> PendingReuse {
    let released = previous.took_effect();
    {
        let mut stats = lock(stats);
        stats.reused += 1;
        match released {
            Some(at) => stats
                .after_release
                .record(Ktime::now().saturating_duration_since(at)),
            None => stats.committed_before_release += 1,
        }
    }
    let reuse = Arc::new(Reuse {
        judged: AtomicBool::new(false),
        acquire: acquire.signaler(),
        stats: stats.clone(),
        who,
    });
    lock(&previous.state).next = Some(reuse.clone());
    PendingReuse { previous, reuse }
}

/// The last commit of every buffer committed with a release, and the statistics.
#[derive(Debug)]
pub(crate) struct BufferReuse {
    held: HashMap<ObjectId, Held>,
    prune_at: usize,
    stats: Arc<Mutex<BufferReuseStats>>,
}

#[derive(Debug)]
struct Held {
    buffer: Weak<WlBuffer>,
    last: Arc<BufferUse>,
}

impl Default for BufferReuse {
    fn default() -> Self {
        BufferReuse {
            held: HashMap::new(),
            prune_at: PRUNE_AT_LEAST,
            stats: Arc::default(),
        }
    }
}

impl BufferReuse {
    pub(crate) fn stats(&self) -> BufferReuseStats {
        lock(&self.stats).clone()
    }

    /// A valid commit attaches `buffer` to `surface`, with `acquire` (its acquire fence or point,
    /// if any) and `this_use` (what its release records, if it carries one). Returns the
    /// judgement of its write when it reuses a buffer whose previous commit carried a release:
    /// hand it to the acquire wait, which calls [`PendingReuse::acquired`].
    pub(crate) fn committed(
        &mut self,
        protocol: &'static str,
        surface: &WlSurface,
        buffer: &WlBuffer,
        acquire: Option<&Fence>,
        this_use: Option<Arc<BufferUse>>,
    ) -> Option<PendingReuse> {
        let previous = match this_use {
            Some(last) => {
                if self.held.len() >= self.prune_at {
                    self.prune();
                }
                self.held.insert(
                    buffer.id(),
                    Held {
                        buffer: buffer.downgrade(),
                        last,
                    },
                )
            }
            // No release: the buffer's next commit cannot be judged against this one.
            None => self.held.remove(&buffer.id()),
        };
        let previous = previous?.last;
        let acquire = acquire?;
        Some(reuse(
            &self.stats,
            previous,
            acquire,
            Who::of(protocol, surface, buffer),
        ))
    }

    /// `buffer` is gone: its last commit (and a render fence kept to judge its reuse) is
    /// forgotten now rather than at the next pruning.
    pub(crate) fn forget(&mut self, buffer: &WlBuffer) {
        self.held.remove(&buffer.id());
    }

    /// Forgets destroyed buffers, and the render fences that have signalled since.
    fn prune(&mut self) {
        self.held.retain(|_, held| held.buffer.upgrade().is_ok());
        for held in self.held.values() {
            held.last.took_effect();
        }
        self.prune_at = (2 * self.held.len()).max(PRUNE_AT_LEAST);
    }
}

#[cfg(test)]
mod tests {
    //! The decision, with fence_bridge's software timelines standing in for the acquire fence
    //! and the render fence (their signal timestamps are exact, as a sync_file's are).

    use std::time::Duration;

    use fence_bridge::SwTimeline;

    use super::*;

    fn stats() -> Arc<Mutex<BufferReuseStats>> {
        Arc::default()
    }

    fn counts(stats: &Arc<Mutex<BufferReuseStats>>) -> (u64, u64, u64, u64) {
        let s = lock(stats);
        (
            s.reused,
            s.committed_before_release,
            s.rewritten_while_held,
            s.after_release.count(),
        )
    }

    /// Lets CLOCK_MONOTONIC move on, so that two events have distinct timestamps.
    fn tick() {
        std::thread::sleep(Duration::from_millis(1));
    }

    fn render_fence(fence: &Fence) -> Option<Arc<dyn RenderFence>> {
        Some(Arc::new(fence.clone()))
    }

    // Each timeline lives as long as its fences: dropping one signals its pending points (with
    // ENOENT), as closing a sw_sync timeline does.

    /// The acquire fence as the wait sees it when it fires.
    fn seen(pending: PendingReuse, acquire: &Fence) {
        assert!(acquire.is_signaled());
        pending.acquired(acquire.timestamp().expect("signalled"));
    }

    #[test]
    fn a_write_after_a_cpu_release_is_right_and_timed() {
        let stats = stats();
        let first = Arc::new(BufferUse::default());
        first.released(None);
        tick();
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first, &acquire, Who::default());
        client.advance(1);
        seen(pending, &acquire);
        assert_eq!(counts(&stats), (1, 0, 0, 1));
    }

    #[test]
    fn a_write_finished_before_the_release_was_made_is_a_rewrite() {
        // Seen at commit time: the acquire fence signalled, the release not made.
        let stats = stats();
        let first = Arc::new(BufferUse::default());
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        client.advance(1);
        let pending = reuse(&stats, first.clone(), &acquire, Who::default());
        seen(pending, &acquire);
        first.released(None);
        assert_eq!(counts(&stats), (1, 1, 1, 0));
    }

    #[test]
    fn committing_before_the_release_is_right_when_the_write_waits_for_it() {
        let stats = stats();
        let first = Arc::new(BufferUse::default());
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first.clone(), &acquire, Who::default());
        first.released(None);
        tick();
        client.advance(1);
        seen(pending, &acquire);
        assert_eq!(counts(&stats), (1, 1, 0, 0));
    }

    #[test]
    fn the_release_catches_an_acquire_signalled_before_it_and_seen_after_it() {
        // Two commits released in one dispatch: the acquire fence signalled first, its blocker
        // runs only after the release was made.
        let stats = stats();
        let first = Arc::new(BufferUse::default());
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first.clone(), &acquire, Who::default());
        client.advance(1);
        tick();
        first.released(None);
        assert_eq!(counts(&stats), (1, 1, 1, 0));
        // The blocker fires now: judged already, counted once.
        seen(pending, &acquire);
        assert_eq!(counts(&stats), (1, 1, 1, 0));
    }

    #[test]
    fn timestamps_catch_an_acquire_signalled_before_the_release_and_judged_after_it() {
        // The same order, with the release made while the acquire fence had not been asked yet
        // (the fence's own timestamp says when it signalled).
        let stats = stats();
        let first = Arc::new(BufferUse::default());
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first.clone(), &acquire, Who::default());
        client.advance(1);
        let signalled = acquire.timestamp().unwrap();
        tick();
        // Made with the fence unreachable from the release (as if the wait held it elsewhere).
        lock(&first.state).next = None;
        first.released(None);
        pending.acquired(signalled);
        assert_eq!(counts(&stats), (1, 1, 1, 0));
    }

    // --- B: the release waits for a render fence ----------------------------------------------

    #[test]
    fn a_write_finished_while_the_render_fence_is_pending_is_a_rewrite() {
        // fencegate imported its render fence into the release point; the client's write
        // finished (acquire signalled) before the kernel signalled that fence.
        let stats = stats();
        let gpu = SwTimeline::new("fencegate-render");
        let frame = gpu.create_fence(1);
        let first = Arc::new(BufferUse::default());
        first.released(render_fence(&frame));
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first, &acquire, Who::default());
        client.advance(1);
        seen(pending, &acquire);
        gpu.advance(1);
        assert_eq!(counts(&stats), (1, 1, 1, 0));
    }

    #[test]
    fn a_write_finished_before_the_render_fence_signalled_is_a_rewrite_even_if_seen_after() {
        let stats = stats();
        let gpu = SwTimeline::new("fencegate-render");
        let frame = gpu.create_fence(1);
        let first = Arc::new(BufferUse::default());
        first.released(render_fence(&frame));
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first, &acquire, Who::default());
        client.advance(1);
        tick();
        gpu.advance(1);
        // Seen after the render fence signalled: the timestamps tell.
        seen(pending, &acquire);
        assert_eq!(counts(&stats), (1, 1, 1, 0));
    }

    #[test]
    fn a_write_that_waited_for_the_render_fence_is_right() {
        // Committed right after the import (GPU work queued behind the release point), written
        // once the render fence signalled.
        let stats = stats();
        let gpu = SwTimeline::new("fencegate-render");
        let frame = gpu.create_fence(1);
        let first = Arc::new(BufferUse::default());
        first.released(render_fence(&frame));
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first, &acquire, Who::default());
        gpu.advance(1);
        tick();
        client.advance(1);
        seen(pending, &acquire);
        assert_eq!(counts(&stats), (1, 1, 0, 0));
    }

    #[test]
    fn release_to_reuse_starts_at_the_render_fences_signal() {
        let stats = stats();
        let gpu = SwTimeline::new("fencegate-render");
        let frame = gpu.create_fence(1);
        let first = Arc::new(BufferUse::default());
        first.released(render_fence(&frame));
        std::thread::sleep(Duration::from_millis(30));
        gpu.advance(1);
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        client.advance(1);
        let pending = reuse(&stats, first, &acquire, Who::default());
        seen(pending, &acquire);
        assert_eq!(counts(&stats), (1, 0, 0, 1));
        let after = lock(&stats).after_release.summary().unwrap().max;
        assert!(
            after < Duration::from_millis(25),
            "timed from the import, not from the fence's signal: {after:?}"
        );
    }

    #[test]
    fn a_signalled_render_fence_is_not_kept() {
        let gpu = SwTimeline::new("fencegate-render");
        let frame = gpu.create_fence(1);
        gpu.advance(1);
        let first = BufferUse::default();
        first.released(render_fence(&frame));
        assert!(matches!(
            lock(&first.state).released.as_ref().unwrap().after,
            After::Signalled(Some(_))
        ));
        // A pending one is kept until it is seen signalled.
        let pending = gpu.create_fence(2);
        let second = BufferUse::default();
        second.released(render_fence(&pending));
        assert!(second.took_effect().is_none());
        gpu.advance(1);
        assert!(second.took_effect().is_some());
        assert!(matches!(
            lock(&second.state).released.as_ref().unwrap().after,
            After::Signalled(Some(_))
        ));
    }

    #[test]
    fn an_abandoned_wait_is_judged_by_nobody() {
        let stats = stats();
        let first = Arc::new(BufferUse::default());
        let client = SwTimeline::new("client");
        let acquire = client.create_fence(1);
        let pending = reuse(&stats, first.clone(), &acquire, Who::default());
        client.advance(1);
        drop(pending); // the surface went away before the wait fired
        first.released(None);
        assert_eq!(counts(&stats), (1, 1, 0, 0));
    }

    #[test]
    fn the_kernels_stub_fence_tells_no_time() {
        use fence_bridge::{FenceStatus, SyncFenceInfo};
        let fence = |driver: &str, at: i64| SyncFenceInfo {
            driver_name: driver.into(),
            timeline_name: driver.into(),
            status: FenceStatus::Signaled,
            timestamp: Some(Ktime::from_nanos(at)),
        };
        let info = |fences| SyncFileInfo {
            name: "x".into(),
            status: FenceStatus::Signaled,
            fences,
        };
        let seen = Ktime::from_nanos(1_000);
        let stub_only = info(vec![fence(STUB_DRIVER, 5)]);
        assert_eq!(Signal::of_sync_file(&stub_only), Signal::Unknown);
        assert_eq!(acquired_at(&stub_only, seen), seen);
        let merged = info(vec![fence(STUB_DRIVER, 5), fence("vgem", 700)]);
        assert_eq!(
            Signal::of_sync_file(&merged),
            Signal::At(Ktime::from_nanos(700))
        );
        assert_eq!(acquired_at(&merged, seen), Ktime::from_nanos(700));
        let pending = SyncFileInfo {
            status: FenceStatus::Pending,
            ..info(vec![])
        };
        assert_eq!(Signal::of_sync_file(&pending), Signal::Pending);
    }
}
