//! Catch-all user data for objects the harness has no dedicated handling for.
//!
//! Integration tests build their own requests through [`Client::qh`](crate::Client::qh), often for
//! protocols this crate knows nothing about (drm-syncobj, linux-dmabuf, the project's own). The
//! orphan rule stops a test crate from writing `impl Dispatch<TheirObject, _> for ClientState`, so
//! these two generic impls stand in: give a new object [`IgnoreEvents`] or an [`EventLog`] as its
//! user data and the queue can dispatch it.
//!
//! ```no_run
//! # use fencegate_clients::{Client, EventLog};
//! # use wayland_client::protocol::wl_callback::WlCallback;
//! # let mut client = Client::connect_env()?;
//! let log = EventLog::new();
//! let _cb: WlCallback = client.connection().display().sync(client.qh(), log.clone());
//! client.dispatch_until(std::time::Duration::from_secs(1), "sync done", |_| !log.is_empty())?;
//! # anyhow::Ok(())
//! ```

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use wayland_client::{Connection, Dispatch, Proxy, QueueHandle};

use crate::ClientState;

/// User data for an object whose events nobody needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreEvents;

impl<I: Proxy + 'static> Dispatch<I, IgnoreEvents> for ClientState {
    fn event(
        _: &mut Self,
        _: &I,
        _: I::Event,
        _: &IgnoreEvents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

/// User data that records every event of an object as `"interface@id: {event:?}"`.
///
/// Clones share one log, so a test keeps a clone to read it (or to wait on it in a
/// `dispatch_until` condition) while the object holds the other.
#[derive(Clone, Debug, Default)]
pub struct EventLog(Arc<Mutex<Vec<String>>>);

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        EventLog::default()
    }

    /// A copy of every event recorded so far, oldest first.
    pub fn events(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// Number of events recorded so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Whether some recorded event contains `needle` (e.g. an event name like `"Failed"`).
    pub fn contains(&self, needle: &str) -> bool {
        self.lock().iter().any(|e| e.contains(needle))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A panic while holding the lock can only have been a formatting panic; the Vec is fine.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<I> Dispatch<I, EventLog> for ClientState
where
    I: Proxy + 'static,
    I::Event: Debug,
{
    fn event(
        _: &mut Self,
        proxy: &I,
        event: I::Event,
        log: &EventLog,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        log.lock().push(format!("{}: {event:?}", proxy.id()));
    }
}
