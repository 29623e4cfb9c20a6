//! "Did this commit attach something": the buffer side of a commit, as both explicit-sync
//! protocols see it (their commit rules, and whether a commit supersedes the previous buffer and
//! so makes its release due).

use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::wayland::compositor::{BufferAssignment, SurfaceAttributes, SurfaceData};
use smithay::wayland::dmabuf::get_dmabuf;

/// What a commit did to the surface's buffer (`wl_surface.attach` since the previous commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attachment {
    /// No `wl_surface.attach` in this commit: the surface keeps its buffer.
    Unchanged,
    /// `wl_surface.attach(NULL)`: the surface's content is removed.
    Null,
    /// A non-null buffer; `dmabuf` tells whether it is a linux-dmabuf buffer (the only kind
    /// explicit sync is defined for here).
    Buffer {
        /// Whether the buffer was created through linux-dmabuf.
        dmabuf: bool,
    },
}

impl Attachment {
    /// Whether the commit replaces the surface's buffer (a new buffer or `attach(NULL)`), so
    /// that the release owed for the previous one is due once it is applied.
    pub fn replaces_buffer(self) -> bool {
        self != Attachment::Unchanged
    }
}

/// What the pending commit in `states` did to the buffer. Takes the lock of
/// `SurfaceAttributes` only, and releases it before returning.
pub(crate) fn pending_attachment(states: &SurfaceData) -> Attachment {
    let mut attributes = states.cached_state.get::<SurfaceAttributes>();
    match &attributes.pending().buffer {
        None => Attachment::Unchanged,
        Some(BufferAssignment::Removed) => Attachment::Null,
        Some(BufferAssignment::NewBuffer(buffer)) => Attachment::Buffer {
            dmabuf: get_dmabuf(buffer).is_ok(),
        },
    }
}

/// The buffer the pending commit in `states` attaches, if any. Takes the lock of
/// `SurfaceAttributes` only, and releases it before returning.
pub(crate) fn pending_buffer(states: &SurfaceData) -> Option<WlBuffer> {
    let mut attributes = states.cached_state.get::<SurfaceAttributes>();
    match &attributes.pending().buffer {
        Some(BufferAssignment::NewBuffer(buffer)) => Some(buffer.clone()),
        _ => None,
    }
}
