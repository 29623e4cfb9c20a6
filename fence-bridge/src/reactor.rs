//! The kernel-fence reactor: one lazily started thread per process, blocked in `epoll_wait()` on
//! the fds of kernel fences that somebody waits for — the userspace stand-in for the interrupt
//! that signals a `dma_fence` in the kernel.
//!
//! # Why a reactor
//!
//! A kernel fence (a sync_file, a dma-buf's implicit fences, a syncobj eventfd) is signalled by
//! the kernel, and the kernel tells userspace only through an fd becoming ready. The core's
//! contract says that once signalling is enabled a fence **must** signal in bounded time, with
//! callbacks run and waiters woken — also when nobody drives an event loop (a blocking
//! [`crate::Fence::wait_timeout`], [`crate::wait_any_timeout`], a callback added from a worker
//! thread). So [`crate::FenceOps::enable_signaling`] of a kernel backend registers its fd here,
//! and this thread calls the backend's `on_ready` when the fd is ready; the backend then signals
//! the fence (with the kernel's own timestamp where it has one).
//!
//! Costs: nothing until the first kernel fence is *enabled* (zero-timeout checks and
//! [`crate::Fence::poll_fd`] never come here: a poll loop registers the fence's native fd itself
//! and needs no thread); then one epoll fd and one thread for the life of the process, and one
//! `epoll_ctl()` per armed fence. Each registration is `EPOLLONESHOT`; a backend whose fd can be
//! ready without its fence being done (a dma-buf that gained new fences) asks to be re-armed.
//!
//! Backends in this crate use it through [`watch`]; a [`Watch`] unregisters on drop, so a fence
//! released while pending stops being watched.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustix::event::epoll;
use rustix::io::Errno;

use crate::error::FenceError;
use crate::fence::{FenceSignaler, TARGET};

/// Called on the reactor thread when the watched fd is ready. Returns `true` when done (the
/// registration is dropped), `false` to be re-armed for the next readiness.
pub(crate) type OnReady = Box<dyn FnMut() -> bool + Send + 'static>;

struct Entry {
    fd: Arc<OwnedFd>,
    events: epoll::EventFlags,
    /// Taken out while it runs, so no lock is held during the call (it may drop the last
    /// reference to the fence and with it this entry's [`Watch`]).
    on_ready: Mutex<Option<OnReady>>,
    cancelled: AtomicBool,
}

struct Reactor {
    epoll: OwnedFd,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    next_key: AtomicU64,
}

static REACTOR: OnceLock<Reactor> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

fn reactor() -> io::Result<&'static Reactor> {
    if let Some(r) = REACTOR.get() {
        return Ok(r);
    }
    // Fallible initialisation (epoll_create, thread spawn), once; a failure is retried by the
    // next caller.
    let _guard = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(r) = REACTOR.get() {
        return Ok(r);
    }
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let _ = REACTOR.set(Reactor {
        epoll,
        entries: Mutex::new(HashMap::new()),
        next_key: AtomicU64::new(1),
    });
    let r = REACTOR.get().expect("just set");
    std::thread::Builder::new()
        .name("fence-bridge-kfence".into())
        .spawn(move || run(r))?;
    Ok(r)
}

/// A registration made by [`watch`]; dropping it unregisters (`epoll_ctl(EPOLL_CTL_DEL)`). If
/// `on_ready` is running at that moment it finishes, and is not called again.
pub(crate) struct Watch {
    key: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(r) = REACTOR.get() else { return };
        let entry = r
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        if let Some(entry) = entry {
            entry.cancelled.store(true, Ordering::Release);
            // ENOENT if the reactor already dropped it: fine.
            let _ = epoll::delete(&r.epoll, &*entry.fd);
            // Drop the closure here unless the reactor thread holds it right now.
            let on_ready = entry
                .on_ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(on_ready);
        }
    }
}

/// Calls `on_ready` on the reactor thread when `fd` reports any of `events` (`EPOLLIN` for a
/// sync_file or a syncobj eventfd, `EPOLLOUT` for a dma-buf's write readiness), until it
/// returns `true` or the returned [`Watch`] is dropped. `fd` is shared so that it stays open
/// while registered (epoll registrations belong to the open file, not to the fd number: the
/// reactor unregisters explicitly before the last reference closes it).
///
/// # Errors
///
/// If the reactor cannot be started (`epoll_create`, thread spawn) or `epoll_ctl` fails
/// (`ENOMEM`, `ENOSPC`, an fd epoll does not support: `EPERM`).
pub(crate) fn watch(
    fd: Arc<OwnedFd>,
    events: epoll::EventFlags,
    on_ready: OnReady,
) -> io::Result<Watch> {
    let r = reactor()?;
    let key = r.next_key.fetch_add(1, Ordering::Relaxed);
    let events = events | epoll::EventFlags::ONESHOT;
    let entry = Arc::new(Entry {
        fd,
        events,
        on_ready: Mutex::new(Some(on_ready)),
        cancelled: AtomicBool::new(false),
    });
    // Into the map before epoll_ctl, so that an immediate event finds its entry.
    r.entries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, entry.clone());
    if let Err(err) = epoll::add(
        &r.epoll,
        entry.fd.as_fd(),
        epoll::EventData::new_u64(key),
        events,
    ) {
        r.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        return Err(err.into());
    }
    Ok(Watch { key })
}

/// What a kernel fence's [`crate::FenceOps::enable_signaling`] does: watch `fd` for `events`
/// and, each time it is ready, let the fence confirm with [`crate::Fence::is_signaled`] (the
/// backend's cheap check records status and timestamp; `false` re-arms the watch). If the fd
/// cannot be watched, the fence is signalled with that error at once: a fence whose signalling
/// is enabled must signal (the cross-driver contract), and an error is the honest outcome.
/// `what` names the fence kind in the log line.
pub(crate) fn watch_fence(
    fd: Arc<OwnedFd>,
    events: epoll::EventFlags,
    signaler: &FenceSignaler,
    what: &str,
) -> Option<Watch> {
    let for_reactor = signaler.clone();
    let on_ready: OnReady = Box::new(move || {
        for_reactor
            .upgrade()
            .is_none_or(|fence| fence.is_signaled())
    });
    match watch(fd, events, on_ready) {
        Ok(watch) => Some(watch),
        Err(err) => {
            tracing::error!(
                target: TARGET,
                "{what}: cannot watch the fd ({err}); signalling with that error"
            );
            let error = err
                .raw_os_error()
                .and_then(FenceError::from_errno)
                .unwrap_or(FenceError::EIO);
            signaler.signal_with_error(error);
            None
        }
    }
}

fn run(r: &'static Reactor) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    loop {
        events.clear();
        // Into the spare capacity (a `&mut Vec` would mean "its current length", i.e. none).
        match epoll::wait(&r.epoll, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(err) => {
                // Only EFAULT/EINVAL/EBADF are possible, none with a valid epoll fd and buffer.
                tracing::error!(target: TARGET, "kernel fence reactor: epoll_wait: {err}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        }
        for event in &events {
            let key = event.data.u64();
            let entry = r
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned();
            if let Some(entry) = entry {
                dispatch(r, key, &entry);
            }
        }
    }
}

fn dispatch(r: &Reactor, key: u64, entry: &Arc<Entry>) {
    let taken = entry
        .on_ready
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(mut on_ready) = taken else { return };
    if entry.cancelled.load(Ordering::Acquire) {
        return;
    }
    // No lock held: the callback signals a fence, which runs user callbacks.
    let done = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut on_ready)) {
        Ok(done) => done,
        Err(_) => {
            tracing::error!(target: TARGET, "kernel fence reactor: a fence callback panicked");
            true
        }
    };
    if done || entry.cancelled.load(Ordering::Acquire) {
        let _ = epoll::delete(&r.epoll, &*entry.fd);
        r.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        entry.cancelled.store(true, Ordering::Release);
        return;
    }
    *entry
        .on_ready
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(on_ready);
    // Re-arm the one-shot registration; if a concurrent Watch drop deleted it meanwhile this
    // fails with ENOENT and the entry is gone: nothing to do.
    let _ = epoll::modify(
        &r.epoll,
        entry.fd.as_fd(),
        epoll::EventData::new_u64(key),
        entry.events,
    );
}
