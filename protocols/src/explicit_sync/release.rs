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
//!    surface is destroyed, or at shutdown: dropped (`immediate_release`), or handed a render
//!    fence with [`BufferRelease::fenced`] (`fenced_release`) by a renderer whose GPU work on
//!    the buffer may still be in flight.
//!
//! A client that disconnects takes its objects with it: nothing is sent, nothing is owed.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use fence_bridge::SyncFile;
use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use smithay::reexports::wayland_server::Resource;

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

/// An owed release event: whoever holds it owes the client exactly one event, and dropping it
/// sends `immediate_release` (see [the module docs](crate::explicit_sync)).
#[must_use = "dropping a BufferRelease sends immediate_release to the client at once"]
pub struct BufferRelease {
    object: Option<ZwpLinuxBufferReleaseV1>,
}

impl BufferRelease {
    /// Takes on the obligation to send `object` its one event. `object` must have been created
    /// with [`BufferReleaseData`] as its user data.
    pub(crate) fn new(object: ZwpLinuxBufferReleaseV1) -> BufferRelease {
        BufferRelease {
            object: Some(object),
        }
    }

    /// The release object.
    pub fn object(&self) -> &ZwpLinuxBufferReleaseV1 {
        self.object
            .as_ref()
            .expect("a BufferRelease holds its object until it is consumed")
    }

    /// Sends `immediate_release` now: the compositor has finished with the buffer for this
    /// commit, or never read it. The same as dropping it, but says so.
    pub fn immediate(mut self) {
        if let Some(object) = self.object.take() {
            release_immediately(&object);
        }
    }

    /// Sends `fenced_release` with `fence`: the buffer may be reused once the fence signals —
    /// typically the sync_file of the render pass that last sampled it. The caller keeps
    /// `fence` (the event carries a duplicate of the fd).
    ///
    /// Returns whether the event was sent: false when the client is gone or the object was
    /// already released.
    pub fn fenced(mut self, fence: &SyncFile) -> bool {
        let object = self.object.take().expect("not consumed yet");
        if !claim(&object) {
            return false;
        }
        object.fenced_release(fence.as_fd());
        true
    }
}

impl Drop for BufferRelease {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            release_immediately(&object);
        }
    }
}

impl fmt::Debug for BufferRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => f.debug_tuple("BufferRelease").field(&object.id()).finish(),
            None => f.write_str("BufferRelease(consumed)"),
        }
    }
}
