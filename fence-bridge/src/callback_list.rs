//! A pending fence's callbacks (the kernel's `cb_list`): what runs when it signals, in the order
//! it was added.
//!
//! A callback is a boxed closure ([`crate::Fence::add_callback`]) or, inside the crate, a
//! [`SignalWaiter`] with a token: a waiter watching many fences (the shared wakeup of
//! `FenceSource`) registers itself on each without a closure to box, as a kernel waiter embeds
//! its `struct dma_fence_cb`. The list itself stays a plain `Vec`: keeping the first entry
//! inline saved its allocation but grew every fence by a cache line, and signalling a lone fence
//! got slower (measured with `cargo xtask bench fences`).

use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::fence::SignalInfo;
use crate::stats;

/// A waiter told about the signal of each fence it was added to, with the token it gave.
pub(crate) trait SignalWaiter: Send + Sync {
    /// Runs on the signalling thread, outside every fence lock; must not block.
    fn signaled(&self, token: usize, info: &SignalInfo);
}

/// One callback.
pub(crate) enum Callback {
    Closure(Box<dyn FnOnce(&SignalInfo) + Send + 'static>),
    Waiter(Arc<dyn SignalWaiter>, usize),
}

impl Callback {
    fn call(self, info: &SignalInfo) {
        match self {
            Callback::Closure(f) => f(info),
            Callback::Waiter(waiter, token) => waiter.signaled(token, info),
        }
    }
}

/// Callbacks by id, in the order they were added.
#[derive(Default)]
pub(crate) struct CallbackList {
    entries: Vec<(u64, Callback)>,
}

impl CallbackList {
    pub(crate) fn push(&mut self, id: u64, callback: Callback) {
        self.entries.push((id, callback));
    }

    /// Takes the callback `id` out, if it is here (the order of the others is kept).
    pub(crate) fn remove(&mut self, id: u64) -> Option<Callback> {
        let i = self.entries.iter().position(|(other, _)| *other == id)?;
        Some(self.entries.remove(i).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn take(&mut self) -> CallbackList {
        mem::take(self)
    }

    /// Runs every callback exactly once, in order, outside all locks. A panicking callback does
    /// not stop the others; the first panic is resumed after all ran (unless the thread is
    /// already unwinding).
    pub(crate) fn run(self, info: &SignalInfo) {
        let mut panicked = None;
        for (_, callback) in self.entries {
            stats::bump(&stats::CALLBACKS_RUN);
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| callback.call(info))) {
                panicked.get_or_insert(payload);
            }
        }
        if let Some(payload) = panicked {
            // Re-panicking while already unwinding (a fence released during a panic) would abort.
            if !std::thread::panicking() {
                panic::resume_unwind(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recorder(log: &Arc<Mutex<Vec<u64>>>, n: u64) -> Callback {
        let log = log.clone();
        Callback::Closure(Box::new(move |_| log.lock().unwrap().push(n)))
    }

    fn info() -> SignalInfo {
        SignalInfo {
            context: crate::ContextId::STUB,
            seqno: 0,
            timestamp: crate::Ktime::now(),
            error: None,
        }
    }

    #[test]
    fn runs_in_the_order_added_after_any_removal() {
        for removed in [None, Some(1), Some(2), Some(4)] {
            let log = Arc::new(Mutex::new(Vec::new()));
            let mut list = CallbackList::default();
            for id in 1..=4 {
                list.push(id, recorder(&log, id));
            }
            if let Some(id) = removed {
                assert!(list.remove(id).is_some());
                assert!(list.remove(id).is_none(), "removed twice");
            }
            assert_eq!(list.len(), 4 - usize::from(removed.is_some()));
            list.take().run(&info());
            let want: Vec<u64> = (1..=4).filter(|id| Some(*id) != removed).collect();
            assert_eq!(*log.lock().unwrap(), want, "removed {removed:?}");
        }
    }

    #[test]
    fn a_waiter_gets_its_token() {
        struct Tokens(Mutex<Vec<usize>>);
        impl SignalWaiter for Tokens {
            fn signaled(&self, token: usize, _: &SignalInfo) {
                self.0.lock().unwrap().push(token);
            }
        }
        let tokens = Arc::new(Tokens(Mutex::new(Vec::new())));
        let mut list = CallbackList::default();
        list.push(1, Callback::Waiter(tokens.clone(), 7));
        list.push(2, Callback::Waiter(tokens.clone(), 9));
        assert!(list.remove(1).is_some());
        assert!(!list.is_empty());
        list.run(&info());
        assert_eq!(*tokens.0.lock().unwrap(), [9]);
    }
}
