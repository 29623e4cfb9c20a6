//! [`BufferRelease`]: the compositor's promise to send a `zwp_linux_buffer_release_v1` its one
//! event, kept by the type.
//!
//! "Exactly one event, either a fenced_release or an immediate_release, will be emitted for the
//! wl_surface.commit request." A release the compositor forgets leaves the client waiting for a
//! buffer it never gets back; a second event is a protocol violation (the first one destroyed the
//! object). So the obligation is a value, as [`ReleasePoint`](crate::drm_syncobj::ReleasePoint)
//! is for drm_syncobj: whoever holds a `BufferRelease` owes exactly one event, and dropping it
//! sends `immediate_release`. On top of that the object's user data ([`BufferReleaseData`])
//! records that an event went out, so no path — a drop, [`BufferRelease::fenced`], the sweep at
//! shutdown ([`ExplicitSyncState`](super::ExplicitSyncState)'s `Drop`) — can send a second.
//!
//! # Lifecycle
//!
//! 1. **requested** — `get_release` creates the object and its `BufferRelease` (pending state).
//!    Discarded by `destroy` of the surface synchronization object before the commit, it is
//!    dropped, so released at once: no buffer will be read for it.
//! 2. **committed** — travels with its commit through Smithay's cache
//!    ([`super::ExplicitSyncCachedState`]) and becomes the surface's current release when the
//!    commit is applied.
//! 3. **due** — when a later applied commit brings a new buffer or `attach(NULL)`, when the
//!    surface is destroyed, or at shutdown: dropped, which sends `fenced_release` with the fence
//!    of the last frame that sampled the buffer ([`BufferRelease::sampled_by`]), or
//!    `immediate_release` when no frame with a fence read it.
//!
//! A client that disconnects takes its objects with it: nothing is sent, nothing is owed.
//!
//! # Release after GPU completion
//!
//! As for drm_syncobj's release points: a renderer records each frame's fence on the current
//! release of every surface the frame sampled ([`BufferRelease::sampled_by`]; the newest frame
//! of each output wins, one output's frames complete in order). When the release is due the client gets `fenced_release`
//! with that fence and reuses the buffer once the GPU has finished reading it; the compositor
//! never waits on the CPU. [`BufferReleaseStats`] counts which event each release got.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use fence_bridge::SyncFile;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use smithay::reexports::wayland_server::Resource;

use crate::buffer_reuse::{BufferUse, RenderFence};
use crate::owed::{Owed, Settle};
use crate::release_fence::{Reader, Sampled};

/// User data of a `zwp_linux_buffer_release_v1`: whether its one event has been sent.
#[derive(Debug, Default)]
pub struct BufferReleaseData {
    sent: AtomicBool,
}

impl BufferReleaseData {
    /// Whether `fenced_release` or `immediate_release` went out.
    pub fn sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }
}

/// Claims the one event of `object`: true (once) if the caller may send it now.
fn claim(object: &ZwpLinuxBufferReleaseV1) -> bool {
    if !object.is_alive() {
        return false; // the client is gone: nothing can be sent, nothing is owed
    }
    object
        .data::<BufferReleaseData>()
        .is_some_and(|data| !data.sent.swap(true, Ordering::AcqRel))
}

/// Sends `immediate_release` unless an event already went out (or the client is gone).
pub(crate) fn release_immediately(object: &ZwpLinuxBufferReleaseV1) -> bool {
    if claim(object) {
        object.immediate_release();
        true
    } else {
        false
    }
}

/// How many releases were asked for and which event each got (see [`BufferReleaseCounters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferReleaseStats {
    /// Releases asked for (`get_release`).
    pub taken: u64,
    /// Answered with `fenced_release`: the fence of the last frame that sampled the buffer.
    pub fenced: u64,
    /// Answered with `immediate_release`: no frame with a fence read the buffer.
    pub immediate: u64,
    /// Owed to clients that disconnected first: nothing could be sent, nothing is owed.
    pub client_gone: u64,
}

impl BufferReleaseStats {
    /// Releases neither answered nor made moot by a disconnect.
    pub fn owed(&self) -> u64 {
        self.taken
            .saturating_sub(self.fenced + self.immediate + self.client_gone)
    }
}

/// Shared counters behind [`BufferReleaseStats`], counted by each [`BufferRelease`] when it is
/// made and when its one event goes out, wherever that happens.
#[derive(Debug, Default)]
pub struct BufferReleaseCounters {
    taken: AtomicU64,
    fenced: AtomicU64,
    immediate: AtomicU64,
    client_gone: AtomicU64,
}

impl BufferReleaseCounters {
    /// Counts `n` releases sent as `immediate_release` outside a [`BufferRelease`] (the sweep
    /// at shutdown).
    pub(crate) fn count_immediate(&self, n: u64) {
        self.immediate.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn stats(&self) -> BufferReleaseStats {
        BufferReleaseStats {
            taken: self.taken.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            immediate: self.immediate.load(Ordering::Relaxed),
            client_gone: self.client_gone.load(Ordering::Relaxed),
        }
    }
}

/// An owed release event: whoever holds it owes the client exactly one event, and dropping it
/// sends it: `fenced_release` after the fence of the last frame that sampled the buffer
/// ([`BufferRelease::sampled_by`]), else `immediate_release` (see [the module
/// docs](crate::explicit_sync)). Destroying the surface sends it at once wherever it is, even in
/// a commit still queued behind a blocker (see `crate::owed`); the `BufferRelease` left behind
/// is then spent.
#[must_use = "dropping a BufferRelease sends its release event to the client at once"]
pub struct BufferRelease {
    owed: Owed<Debt>,
}

/// What a [`BufferRelease`] owes, until sent.
pub(crate) struct Debt {
    object: ZwpLinuxBufferReleaseV1,
    /// The fence of the last frame that read the buffer.
    sampled: Sampled,
    counters: Arc<BufferReleaseCounters>,
    /// The buffer's use this release ends: told when the event is sent, and what it waits for.
    used: Arc<BufferUse>,
}

impl BufferRelease {
    /// Takes on the obligation to send `object` its one event, counted in `counters`. `object`
    /// must have been created with [`BufferReleaseData`] as its user data.
    pub(crate) fn new(
        object: ZwpLinuxBufferReleaseV1,
        counters: Arc<BufferReleaseCounters>,
    ) -> BufferRelease {
        counters.taken.fetch_add(1, Ordering::Relaxed);
        BufferRelease {
            owed: Owed::new(Debt {
                object,
                sampled: Sampled::default(),
                counters,
                used: Arc::default(),
            }),
        }
    }

    /// Makes `surface`'s destruction send this release, wherever it is then.
    pub(crate) fn due_with(&self, surface: &WlSurface) {
        self.owed.list_on(surface);
    }

    /// Records that a frame of `reader` (an output) read the buffer: `fence` is that frame's
    /// render fence or the [`ScanoutFence`](crate::ScanoutFence) of the frame scanning it out,
    /// `None` when its work is known complete. Per reader the last call wins (one output's
    /// frames complete in order); different readers' fences are all waited for. When the
    /// release is due, the recorded fences go out merged as `fenced_release` (a scanout fence
    /// once the replacing commit is made).
    pub fn sampled_by(&mut self, reader: Reader, fence: Option<crate::ReleaseFence>) {
        self.owed.with(|debt| {
            if let Some(debt) = debt {
                debt.sampled.record(reader, fence);
            }
        });
    }

    /// The buffer use this release ends, told of the release when its event goes out
    /// (buffer-reuse tracking); `None` once it went out.
    pub(crate) fn buffer_use(&self) -> Option<Arc<BufferUse>> {
        self.owed.with(|debt| debt.map(|d| d.used.clone()))
    }

    /// The release object; `None` once its event went out (its surface was destroyed).
    pub fn object(&self) -> Option<ZwpLinuxBufferReleaseV1> {
        self.owed.with(|debt| debt.map(|d| d.object.clone()))
    }

    /// Sends the one event now: what [`Drop`] does. Returns whether an event went out (false
    /// when the client is gone or the event went out already).
    pub fn release(self) -> bool {
        self.owed.take().is_some_and(Debt::send_sampled)
    }

    /// Sends `immediate_release` now, ignoring any recorded fence: for a caller that knows the
    /// compositor has finished with the buffer.
    pub fn immediate(self) -> bool {
        self.owed.take().is_some_and(|debt| debt.send(None, None))
    }

    /// Sends `fenced_release` with `fence` now: the buffer may be reused once the fence signals.
    /// The caller keeps `fence` (the event carries a duplicate of the fd).
    pub fn fenced(self, fence: &SyncFile) -> bool {
        self.owed.take().is_some_and(|debt| {
            // Buffer-reuse tracking may need the fence after the event, while it is pending.
            let kept = fence
                .try_clone()
                .ok()
                .map(|f| Arc::new(f) as Arc<dyn RenderFence>);
            debt.send(Some(fence), kept)
        })
    }
}

impl Debt {
    fn send_sampled(mut self) -> bool {
        match std::mem::take(&mut self.sampled).ready() {
            Ok(Some(fence)) => {
                let kept: Arc<dyn RenderFence> = fence.clone();
                self.send(Some(&fence), Some(kept))
            }
            Ok(None) => self.send(None, None),
            Err(pending) => {
                // Sent when the commit that takes the buffer off screen is made.
                pending.then(move |fence| {
                    let kept = fence.clone().map(|fence| fence as Arc<dyn RenderFence>);
                    self.send(fence.as_deref(), kept);
                });
                true
            }
        }
    }

    /// Sends `fenced_release` with `fence` (`kept`: the same fence, for buffer-reuse tracking),
    /// or `immediate_release` without one.
    fn send(self, fence: Option<&SyncFile>, kept: Option<Arc<dyn RenderFence>>) -> bool {
        let object = &self.object;
        if !object.is_alive() {
            self.counters.client_gone.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !claim(object) {
            return false; // swept at shutdown already, and counted there
        }
        // Before the event: the client cannot have seen the release yet.
        self.used.released(kept);
        match fence {
            Some(fence) => {
                object.fenced_release(fence.as_fd());
                self.counters.fenced.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                object.immediate_release();
                self.counters.immediate.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }
}

impl Settle for Debt {
    fn settle(self) {
        self.send_sampled();
    }
}

impl fmt::Debug for BufferRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.owed.with(|debt| match debt {
            Some(debt) => f
                .debug_struct("BufferRelease")
                .field("object", &debt.object.id())
                .field("sampled", &!debt.sampled.is_empty())
                .finish(),
            None => f.write_str("BufferRelease(sent)"),
        })
    }
}
