//! [`Owed`]: a release owed to a client, payable by whoever holds it **or** by its surface's
//! destruction, whichever comes first, and only once.
//!
//! A release (a drm_syncobj release point, a zwp_linux_buffer_release_v1 event) travels with its
//! commit through Smithay's cached state. A commit held by a blocker sits in Smithay's queue of
//! committed states, which nothing outside Smithay can reach, and that queue lives as long as the
//! surface's data: not when the surface is destroyed, but when the last `WlSurface` handle goes,
//! which a compositor may keep for a while (keyboard focus, a window list, a screencopy). A
//! release that waits for that may wait forever, with the client's syncobj and fds held too.
//!
//! So each one is an `Owed<T>`: the value sits in a shared slot, its holder settles it on drop,
//! and the surface's [`OwedOnSurface`] ledger (in the surface's data map) keeps a weak reference
//! so that [`settle_all_on`], called from the protocol's destruction hook, settles every release
//! of the surface at once: pending, queued behind a blocker, or current. The slot is emptied by
//! whichever comes first, so the debt is paid exactly once.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::wayland::compositor::with_states;

/// How a debt is paid. Runs outside every lock.
pub(crate) trait Settle: Send + 'static {
    fn settle(self);
}

type Slot<T> = Mutex<Option<T>>;

fn lock<T>(slot: &Slot<T>) -> std::sync::MutexGuard<'_, Option<T>> {
    // Settling happens outside the lock, so a panic can only have come from a caller's closure.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A debt, settled when dropped unless taken or settled by its surface first.
pub(crate) struct Owed<T: Settle> {
    slot: Arc<Slot<T>>,
}

impl<T: Settle> Owed<T> {
    pub(crate) fn new(value: T) -> Owed<T> {
        Owed {
            slot: Arc::new(Mutex::new(Some(value))),
        }
    }

    /// Lists the debt in `surface`'s ledger, so that its destruction settles it.
    pub(crate) fn list_on(&self, surface: &WlSurface) {
        with_states(surface, |states| {
            states
                .data_map
                .insert_if_missing_threadsafe(OwedOnSurface::<T>::default);
            let ledger = states
                .data_map
                .get::<OwedOnSurface<T>>()
                .expect("inserted above");
            let mut entries = ledger
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            entries.retain(|entry| entry.strong_count() > 0);
            entries.push(Arc::downgrade(&self.slot));
        });
    }

    /// Runs `f` on the debt, `None` once it has been settled.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        f(lock(&self.slot).as_mut())
    }

    /// Takes the debt out, unsettled: the caller now pays it. `None` if it was settled already.
    pub(crate) fn take(&self) -> Option<T> {
        lock(&self.slot).take()
    }
}

impl<T: Settle> Drop for Owed<T> {
    fn drop(&mut self) {
        let value = self.take();
        if let Some(value) = value {
            value.settle();
        }
    }
}

/// A surface's ledger of [`Owed`] debts of one kind (in its data map).
pub(crate) struct OwedOnSurface<T> {
    entries: Mutex<Vec<Weak<Slot<T>>>>,
}

impl<T> Default for OwedOnSurface<T> {
    fn default() -> Self {
        OwedOnSurface {
            entries: Mutex::new(Vec::new()),
        }
    }
}

/// Settles every debt of kind `T` still owed on `surface` (from its destruction hook); returns
/// how many.
pub(crate) fn settle_all_on<T: Settle>(surface: &WlSurface) -> usize {
    let due: Vec<T> = with_states(surface, |states| {
        let Some(ledger) = states.data_map.get::<OwedOnSurface<T>>() else {
            return Vec::new();
        };
        let entries = std::mem::take(
            &mut *ledger
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        entries
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|slot| lock(&slot).take())
            .collect()
    });
    let n = due.len();
    // Settled outside the surface's lock.
    for value in due {
        value.settle();
    }
    n
}
