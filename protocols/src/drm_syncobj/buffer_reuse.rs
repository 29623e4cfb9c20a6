//! How clients reuse their buffers under linux-drm-syncobj-v1.
//!
//! A client may write into a buffer again only once the release point of the commit that last
//! showed it has signalled. [`BufferReuse`] sees each commit that attaches a buffer with both
//! points and asks whether the compositor has released that buffer's previous commit yet: if so
//! the reuse is right and its delay since the release is recorded; if not, the client gave new
//! work to a buffer the compositor may still be reading (tearing, or worse), which is counted
//! and logged.
//!
//! "Released" is the compositor's side: the point signalled from the CPU, or the render fence
//! imported into it. A client that reuses a buffer after that import but before the kernel
//! signals the point also breaks the rule, and is not seen: telling would mean keeping every
//! buffer's syncobj (and its handle) alive for a query.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use smithay::reexports::wayland_server::backend::ObjectId;
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Resource, Weak};

use crate::wait_times::WaitTimes;

/// Buffers tracked at most before the destroyed ones are pruned.
const PRUNE_AT: usize = 4096;

/// What [`BufferReuse`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferReuseStats {
    /// Commits that attached a buffer already committed before with a release point.
    pub reused: u64,
    /// Of those, commits whose buffer's previous commit the compositor had not released: the client
    /// wrote into it while the compositor could still read it.
    pub rewritten_while_held: u64,
    /// For the right reuses: from the compositor releasing the buffer (signalling its release
    /// point, or importing the render fence into it) to the commit that reused it.
    pub after_release: WaitTimes,
}

/// The release point each buffer was last committed with.
#[derive(Debug, Default)]
pub(crate) struct BufferReuse {
    held: HashMap<ObjectId, Held>,
    stats: BufferReuseStats,
}

#[derive(Debug)]
struct Held {
    buffer: Weak<WlBuffer>,
    /// The release point's release time, once released; nothing else of it is kept.
    released_at: Arc<OnceLock<Instant>>,
    point: u64,
}

impl BufferReuse {
    pub(crate) fn stats(&self) -> &BufferReuseStats {
        &self.stats
    }

    /// `buffer` is committed to `surface` with the release point `point`, whose release time
    /// will be written into `released_at`.
    pub(crate) fn committed(
        &mut self,
        surface: &WlSurface,
        buffer: &WlBuffer,
        point: u64,
        released_at: Arc<OnceLock<Instant>>,
    ) {
        if let Some(previous) = self.held.get(&buffer.id()) {
            self.stats.reused += 1;
            match previous.released_at.get() {
                Some(released) => self.stats.after_release.record(released.elapsed()),
                None => {
                    self.stats.rewritten_while_held += 1;
                    tracing::warn!(
                        client = ?surface.client().map(|c| c.id()),
                        surface = %surface.id(),
                        buffer = %buffer.id(),
                        release_point = previous.point,
                        "buffer given a new acquire point before the compositor released its \
                         previous commit: the client wrote into a buffer the compositor may \
                         still read"
                    );
                }
            }
        }
        if self.held.len() >= PRUNE_AT {
            self.held.retain(|_, held| held.buffer.upgrade().is_ok());
        }
        self.held.insert(
            buffer.id(),
            Held {
                buffer: buffer.downgrade(),
                released_at,
                point,
            },
        );
    }
}
