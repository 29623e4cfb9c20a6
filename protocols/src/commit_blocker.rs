//! A commit held by a Smithay blocker until its fences signal, with the timeout that reports
//! (or disconnects) a client whose fence is stuck: the machinery shared by the acquire wait of
//! the explicit-sync protocols ([`crate::acquire_wait`]) and the dma-buf readiness wait of
//! [`crate::implicit_sync`].
//!
//! [`block_commit`] asks the fences once. Already signalled: nothing else (no blocker, no poll
//! fd, no loop source). Otherwise a [`Barrier`] blocks the commit and a [`FenceSource`] waits in
//! the loop; when it fires the barrier is released and `blocker_cleared` applies the commit. At
//! each timeout the wait reports once (or disconnects the client, per [`TimeoutAction`]), gives
//! up if its surface or client went away, else re-arms. What is waited for, where it is counted
//! and how it is logged is the [`BlockedOn`] of the caller.
//!
//! A surface destroyed (or a client gone) while commits of it wait cancels those waits at once,
//! from a destruction hook: their loop sources and fences (eventfds, sync_file and syncobj
//! references) are dropped then, not at the next timeout.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fence_bridge::{Fence, FenceEvent, FenceSource, FenceStatus, Ktime, WaitMode};
use smithay::reexports::calloop::{self, LoopHandle, RegistrationToken};
use smithay::reexports::wayland_server::backend::protocol::ProtocolError;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, DisplayHandle, Resource, Weak};
use smithay::wayland::compositor::{
    add_blocker, add_destruction_hook, with_states, Barrier, CompositorHandler,
};

use crate::implicit_sync::TimeoutAction;

/// A step of a blocked commit's life, for the caller's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Every fence had signalled at commit time: no blocker.
    AlreadySignaled,
    /// The commit is held by a blocker.
    Blocked,
    /// The fences signalled and the commit was released, after waiting this long.
    Released(Duration),
    /// The timeout elapsed (counted once per commit).
    TimedOut,
    /// The client was disconnected ([`TimeoutAction::Disconnect`]).
    Disconnected,
    /// The surface or client went away first: the wait was given up.
    Abandoned,
}

/// What one blocked commit waits for, where it counts, and its log lines.
pub(crate) trait BlockedOn<D>: 'static {
    /// The key of each fence in the [`FenceSource`].
    type Key: 'static;
    /// Whether any fence (`Any`) or every fence (`All`) must signal.
    const MODE: WaitMode;
    /// The fences, asked at commit time and again at each re-arm.
    fn fences(&self) -> Vec<(Self::Key, Fence)>;
    /// Counts `step` in the caller's statistics.
    fn count(&self, state: &mut D, step: Counted);
    /// What happens at the timeout.
    fn action(&self, state: &mut D) -> TimeoutAction;
    /// What a disconnected client is told has not signalled.
    fn stuck(&self) -> String;
    /// The fences signalled (with `status` for a single fence: the first one).
    fn signalled(&self, _status: FenceStatus) {}
    /// The source could not be inserted: the commit applies without waiting.
    fn log_unwatchable(&self, error: &calloop::Error);
    /// The fences signalled after the timeout report.
    fn log_late(&self, surface: &WlSurface, after: Duration);
    /// The timeout report.
    fn log_stuck(&self, client: &Client, pid: Option<i32>, surface: &WlSurface, waited: Duration);
}

/// Blocks the pending commit of `surface` until `what`'s fences signal (see the
/// [module docs](self)), re-armed every `timeout`.
pub(crate) fn block_commit<D, W>(
    state: &mut D,
    dh: &DisplayHandle,
    surface: &WlSurface,
    loop_handle: &LoopHandle<'static, D>,
    timeout: Duration,
    what: W,
) where
    D: CompositorHandler + 'static,
    W: BlockedOn<D>,
{
    let fences = what.fences();
    let pending: Vec<Fence> = fences.iter().map(|(_, fence)| fence.clone()).collect();
    let source = match FenceSource::new(fences, W::MODE) {
        Ok(source) => source,
        Err(_ready) => {
            what.count(state, Counted::AlreadySignaled);
            return;
        }
    };
    what.count(state, Counted::Blocked);
    let barrier = Barrier::new(false);
    add_blocker(surface, barrier.clone());
    let wait = Wait {
        barrier,
        surface: surface.downgrade(),
        dh: dh.clone(),
        since: Instant::now(),
        reported: false,
        what,
    };
    let registration = Rc::new(RefCell::new(Registration {
        loop_handle: loop_handle.clone(),
        token: None,
        wait: Some(wait),
        fences: pending,
    }));
    if let Err(wait) = insert(&registration, source.with_timeout(timeout), timeout) {
        // Still inside the commit: released now, the commit applies as if nothing waited.
        wait.barrier.signal();
        return;
    }
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        pending.retain(|wait| wait.upgrade().is_some_and(|wait| !wait.ended()));
        pending.push(Rc::downgrade(&registration) as std::rc::Weak<dyn Pending>);
    });
    cancel_on_destruction(surface, registration);
}

/// Passes `deadline` as a hint to every fence a blocked commit of this thread's compositor
/// waits for (`Fence::set_deadline`: `SYNC_IOC_SET_DEADLINE` on the kernel fence, where the
/// kernel has it), and returns how many waits got it. A compositor calls it with the time of
/// its next vblank, so that a GPU that can hurry (clock boost) knows when the frame is due.
///
/// Blocked commits live on the loop thread, so this sees those of the compositor running on the
/// calling thread only.
pub fn hint_deadline(deadline: Ktime) -> usize {
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        pending.retain(|wait| wait.upgrade().is_some_and(|wait| !wait.ended()));
        for wait in pending.iter().filter_map(std::rc::Weak::upgrade) {
            wait.set_deadline(deadline);
        }
        pending.len()
    })
}

thread_local! {
    /// Every blocked commit's wait of this (loop) thread, for [`hint_deadline`].
    static PENDING: RefCell<Vec<std::rc::Weak<dyn Pending>>> = const { RefCell::new(Vec::new()) };
}

/// A wait whose fences can be told a deadline.
trait Pending {
    fn set_deadline(&self, deadline: Ktime);
    fn ended(&self) -> bool;
}

impl<D: 'static, W: 'static> Pending for RefCell<Registration<D, W>> {
    fn set_deadline(&self, deadline: Ktime) {
        let registration = self.borrow();
        if registration.wait.is_some() {
            for fence in &registration.fences {
                fence.set_deadline(deadline);
            }
        }
    }

    fn ended(&self) -> bool {
        self.borrow().wait.is_none()
    }
}

/// A blocked commit's wait as its surface's destruction hook sees it: where its source is
/// registered (changing at each re-arm), and the wait itself until it ends.
struct Registration<D: 'static, W> {
    loop_handle: LoopHandle<'static, D>,
    token: Option<RegistrationToken>,
    wait: Option<Wait<W>>,
    /// The fences waited for (references shared with the source), for deadline hints.
    fences: Vec<Fence>,
}

/// A wait its surface's destruction can cancel.
trait Cancel<D> {
    /// Ends the wait now, if it has not ended: its source leaves the loop, its fences drop.
    fn cancel(&self, state: &mut D);
    fn ended(&self) -> bool;
}

impl<D: 'static, W: BlockedOn<D>> Cancel<D> for RefCell<Registration<D, W>> {
    fn cancel(&self, state: &mut D) {
        let (wait, token, loop_handle) = {
            let mut registration = self.borrow_mut();
            let wait = registration.wait.take();
            let token = registration.token.take();
            registration.fences.clear();
            (wait, token, registration.loop_handle.clone())
        };
        if let Some(token) = token {
            loop_handle.remove(token);
        }
        if let Some(wait) = wait {
            wait.what.count(state, Counted::Abandoned);
        }
    }

    fn ended(&self) -> bool {
        self.borrow().wait.is_none()
    }
}

/// The waits of a surface's blocked commits (in its data map; loop-thread only).
struct BlockedWaits<D>(RefCell<Vec<Rc<dyn Cancel<D>>>>);

/// Lists `registration` on `surface`, whose destruction hook cancels it.
fn cancel_on_destruction<D, W>(surface: &WlSurface, registration: Rc<RefCell<Registration<D, W>>>)
where
    D: CompositorHandler + 'static,
    W: BlockedOn<D>,
{
    let first = with_states(surface, |states| {
        let first = states
            .data_map
            .insert_if_missing(|| BlockedWaits::<D>(RefCell::new(Vec::new())));
        let waits = states
            .data_map
            .get::<BlockedWaits<D>>()
            .expect("inserted above");
        let mut waits = waits.0.borrow_mut();
        waits.retain(|wait| !wait.ended());
        waits.push(registration);
        first
    });
    if first {
        add_destruction_hook::<D, _>(surface, cancel_blocked_waits::<D>);
    }
}

/// Destruction hook: cancels every wait of `surface`'s blocked commits (see the module docs).
fn cancel_blocked_waits<D: 'static>(state: &mut D, surface: &WlSurface) {
    let waits = with_states(surface, |states| {
        states
            .data_map
            .get::<BlockedWaits<D>>()
            .map(|waits| std::mem::take(&mut *waits.0.borrow_mut()))
            .unwrap_or_default()
    });
    for wait in waits {
        wait.cancel(state);
    }
}

/// One blocked commit.
struct Wait<W> {
    barrier: Barrier,
    surface: Weak<WlSurface>,
    dh: DisplayHandle,
    since: Instant,
    reported: bool,
    what: W,
}

/// Puts the source into the loop for `registration`'s wait; gives the wait back if that fails
/// (without a source nothing would release the blocker and the surface would freeze: the caller
/// releases it).
fn insert<D, W>(
    registration: &Rc<RefCell<Registration<D, W>>>,
    source: FenceSource<W::Key>,
    timeout: Duration,
) -> Result<(), Wait<W>>
where
    D: CompositorHandler + 'static,
    W: BlockedOn<D>,
{
    let in_source = Rc::clone(registration);
    let loop_handle = registration.borrow().loop_handle.clone();
    let inserted = loop_handle.insert_source(source, move |event, _, state: &mut D| {
        // One event per source: a signal or the timeout. The source is gone after it.
        let w = {
            let mut registration = in_source.borrow_mut();
            registration.token = None;
            registration.wait.take()
        };
        let Some(w) = w else {
            return;
        };
        match event {
            FenceEvent::Signaled(signaled) => release(state, w, signaled.status),
            FenceEvent::AllSignaled(all) => {
                let status = all.first().map_or(FenceStatus::Signaled, |s| s.status);
                release(state, w, status)
            }
            FenceEvent::TimedOut { .. } => timed_out(state, &in_source, timeout, w),
        }
        // Over for good (not re-armed): its fences go now, not with the last reference.
        let mut registration = in_source.borrow_mut();
        if registration.wait.is_none() {
            registration.fences.clear();
        }
    });
    match inserted {
        Ok(token) => {
            registration.borrow_mut().token = Some(token);
            Ok(())
        }
        Err(err) => {
            let wait = registration
                .borrow_mut()
                .wait
                .take()
                .expect("the source never ran");
            // An fd limit or an epoll failure: a bug or an exhausted process.
            wait.what.log_unwatchable(&err.error);
            Err(wait)
        }
    }
}

/// The fences signalled: let the commit (and those queued behind it) apply.
fn release<D, W>(state: &mut D, wait: Wait<W>, status: FenceStatus)
where
    D: CompositorHandler + 'static,
    W: BlockedOn<D>,
{
    wait.barrier.signal();
    wait.what
        .count(state, Counted::Released(wait.since.elapsed()));
    wait.what.signalled(status);
    let Ok(surface) = wait.surface.upgrade() else {
        return; // Smithay cancels the transactions of a dead surface itself
    };
    if wait.reported {
        wait.what.log_late(&surface, wait.since.elapsed());
    }
    let Some(client) = surface.client() else {
        return;
    };
    state
        .client_compositor_state(&client)
        .blocker_cleared(state, &wait.dh);
}

/// The timeout elapsed: report once (or disconnect), give up if the surface is gone, else keep
/// waiting.
fn timed_out<D, W>(
    state: &mut D,
    registration: &Rc<RefCell<Registration<D, W>>>,
    timeout: Duration,
    mut wait: Wait<W>,
) where
    D: CompositorHandler + 'static,
    W: BlockedOn<D>,
{
    let alive = wait.surface.upgrade().ok().and_then(|surface| {
        let client = surface.client()?;
        Some((surface, client))
    });
    let Some((surface, client)) = alive else {
        wait.what.count(state, Counted::Abandoned);
        return; // the source is removed: its fds close
    };
    if !wait.reported {
        wait.reported = true;
        wait.what.count(state, Counted::TimedOut);
        if wait.what.action(state) == TimeoutAction::Disconnect {
            wait.what.count(state, Counted::Disconnected);
            let what = wait.what.stuck();
            disconnect_stuck_client(&wait.dh, &client, &surface, wait.since.elapsed(), &what);
            return; // the source is removed: its fds close; the client's commits go with it
        }
        let pid = client.get_credentials(&wait.dh).map(|c| c.pid).ok();
        wait.what
            .log_stuck(&client, pid, &surface, wait.since.elapsed());
    }
    match FenceSource::new(wait.what.fences(), W::MODE) {
        Err(_ready) => release(state, wait, FenceStatus::Signaled),
        Ok(source) => {
            registration.borrow_mut().wait = Some(wait);
            if let Err(wait) = insert(registration, source.with_timeout(timeout), timeout) {
                release(state, wait, FenceStatus::Signaled);
            }
        }
    }
}

/// `wl_display.error.implementation`.
const WL_DISPLAY_ERROR_IMPLEMENTATION: u32 = 3;

/// Disconnects `client` because `what` has not signalled after `waited`, with a log line that
/// says so. Shared by every fence wait of this crate.
fn disconnect_stuck_client(
    dh: &DisplayHandle,
    client: &Client,
    surface: &WlSurface,
    waited: Duration,
    what: &str,
) {
    let pid = client.get_credentials(dh).map(|c| c.pid).ok();
    tracing::warn!(
        client = ?client.id(),
        pid,
        surface = %surface.id(),
        ?waited,
        "{what} has not signalled within the fence timeout: disconnecting the client \
         (fence timeout action: disconnect)"
    );
    let message = format!(
        "{what} of {} not signalled after {} ms: disconnected by the compositor",
        surface.id(),
        waited.as_millis()
    );
    // A wl_display.error on the client's wl_display (object 1): the client learns why. A bare
    // `Client::kill` closes the socket without sending the error.
    let display = dh.backend_handle().object_for_protocol_id(
        client.id(),
        &smithay::reexports::wayland_server::protocol::__interfaces::WL_DISPLAY_INTERFACE,
        1,
    );
    match (display, std::ffi::CString::new(message.clone())) {
        (Ok(display), Ok(text)) => {
            dh.backend_handle()
                .post_error(display, WL_DISPLAY_ERROR_IMPLEMENTATION, text)
        }
        _ => client.kill(
            dh,
            ProtocolError {
                code: WL_DISPLAY_ERROR_IMPLEMENTATION,
                object_id: 1,
                object_interface: "wl_display".into(),
                message,
            },
        ),
    }
}
