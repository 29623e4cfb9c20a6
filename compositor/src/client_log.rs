//! What fencegate records about its clients over a session, for `fencegate check` and the
//! tests: how many connected, the protocol errors that ended them, and their commits by kind of
//! buffer.
//!
//! Protocol errors are recorded where every one of them ends up, whichever module raised it:
//! the client's disconnection, whose reason carries the error.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use smithay::reexports::wayland_server::backend::DisconnectReason;

/// A protocol error a client was disconnected with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolErrorRecord {
    /// The interface of the object the error was posted on.
    pub interface: String,
    /// The object's protocol id.
    pub object_id: u32,
    /// The error code (the interface's error enum).
    pub code: u32,
    pub message: String,
}

/// Commits applied, by what the surface shows after them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommitCounts {
    pub total: u64,
    /// The surface shows a wl_shm buffer.
    pub shm: u64,
    /// The surface shows a linux-dmabuf buffer.
    pub dmabuf: u64,
    /// The surface has no buffer (none yet, or detached).
    pub without_buffer: u64,
}

/// The records themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRecords {
    pub connected: u64,
    pub protocol_errors: Vec<ProtocolErrorRecord>,
    pub commits: CommitCounts,
}

/// Shared by the compositor and every client's data (which sees disconnections).
#[derive(Debug, Clone, Default)]
pub struct ClientLog {
    records: Arc<Mutex<ClientRecords>>,
}

impl ClientLog {
    pub fn records(&self) -> ClientRecords {
        self.lock().clone()
    }

    pub(crate) fn connected(&self) {
        self.lock().connected += 1;
    }

    pub(crate) fn disconnected(&self, reason: &DisconnectReason) {
        if let DisconnectReason::ProtocolError(error) = reason {
            self.lock().protocol_errors.push(ProtocolErrorRecord {
                interface: error.object_interface.clone(),
                object_id: error.object_id,
                code: error.code,
                message: error.message.clone(),
            });
        }
    }

    pub(crate) fn committed(&self, kind: CommitKind) {
        let mut records = self.lock();
        let commits = &mut records.commits;
        commits.total += 1;
        match kind {
            CommitKind::Shm => commits.shm += 1,
            CommitKind::Dmabuf => commits.dmabuf += 1,
            CommitKind::WithoutBuffer => commits.without_buffer += 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClientRecords> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a surface shows after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitKind {
    Shm,
    Dmabuf,
    WithoutBuffer,
}
