//! The fence object: status, signal, errors, timestamps, callbacks, release, the ops contract.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fence_bridge::{
    context_alloc, AlreadySignaled, ContextId, Fence, FenceContext, FenceError, FenceOps,
    FenceSignaler, FenceStatus, Ktime, SignalInfo,
};

/// A backend that records every call made to it.
#[derive(Default)]
struct Recorder {
    enable_calls: AtomicUsize,
    release_calls: AtomicUsize,
    signaled_polls: AtomicUsize,
    /// What `signaled()` answers.
    complete: AtomicBool,
    /// What `enable_signaling()` returns.
    refuse_enable: AtomicBool,
    deadlines: Mutex<Vec<Ktime>>,
    signaler: Mutex<Option<FenceSignaler>>,
}

/// `FenceOps` for `Arc<Recorder>`, so the test keeps a view of the backend.
struct RecorderOps(Arc<Recorder>);

impl FenceOps for RecorderOps {
    fn driver_name(&self) -> &str {
        "recorder"
    }
    fn timeline_name(&self) -> &str {
        "rec0"
    }
    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        self.0.enable_calls.fetch_add(1, Ordering::SeqCst);
        *self.0.signaler.lock().unwrap() = Some(signaler);
        !self.0.refuse_enable.load(Ordering::SeqCst)
    }
    fn signaled(&self) -> bool {
        self.0.signaled_polls.fetch_add(1, Ordering::SeqCst);
        self.0.complete.load(Ordering::SeqCst)
    }
    fn set_deadline(&self, deadline: Ktime) {
        self.0.deadlines.lock().unwrap().push(deadline);
    }
    fn release(&self) {
        self.0.release_calls.fetch_add(1, Ordering::SeqCst);
    }
}

fn recorded_fence() -> (Fence, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (
        Fence::new(context_alloc(1).first(), 7, RecorderOps(rec.clone())),
        rec,
    )
}

fn plain() -> Fence {
    FenceContext::new("test").create_fence()
}

#[test]
fn new_fence_is_pending_with_identity() {
    let (fence, rec) = recorded_fence();
    assert_eq!(fence.seqno(), 7);
    assert_eq!(fence.driver_name(), "recorder");
    assert_eq!(fence.timeline_name(), "rec0");
    assert_eq!(fence.status(), FenceStatus::Pending);
    assert!(!fence.is_signaled());
    assert_eq!(fence.timestamp(), None);
    assert!(!fence.signaling_enabled());
    assert_eq!(rec.enable_calls.load(Ordering::SeqCst), 0);
    assert!(format!("{fence:?}").contains("Pending"));
}

#[test]
fn signal_is_idempotent_and_stamps_once() {
    let fence = plain();
    let before = Ktime::now();
    assert!(fence.signal());
    let ts = fence
        .timestamp()
        .expect("signalled fences have a timestamp");
    assert!(ts >= before && ts <= Ktime::now());
    assert!(!fence.signal());
    assert!(!fence.signal_timestamp(Ktime::from_nanos(1)));
    assert!(!fence.signal_with_error(FenceError::EIO));
    assert_eq!(fence.timestamp(), Some(ts));
    assert_eq!(fence.status(), FenceStatus::Signaled);
}

#[test]
fn signal_timestamp_keeps_the_given_time() {
    let fence = plain();
    assert!(fence.signal_timestamp(Ktime::from_nanos(42)));
    assert_eq!(fence.timestamp(), Some(Ktime::from_nanos(42)));
}

#[test]
fn error_is_hidden_until_signal_then_final() {
    let fence = plain();
    fence.set_error(FenceError::ETIMEDOUT).unwrap();
    fence.set_error(FenceError::EIO).unwrap(); // latest wins
    assert_eq!(fence.status(), FenceStatus::Pending);
    fence.signal();
    assert_eq!(fence.status(), FenceStatus::Error(FenceError::EIO));
    assert_eq!(fence.status().to_kernel(), -FenceError::EIO.errno());
    // After the signal: a programming error, reported and ignored.
    assert_eq!(fence.set_error(FenceError::ECANCELED), Err(AlreadySignaled));
    assert_eq!(fence.status(), FenceStatus::Error(FenceError::EIO));
}

#[test]
fn signal_with_error_overrides_set_error() {
    let fence = plain();
    fence.set_error(FenceError::EIO).unwrap();
    assert!(fence.signal_with_error(FenceError::ECANCELED));
    assert_eq!(fence.status().error(), Some(FenceError::ECANCELED));
}

#[test]
fn status_kernel_encoding_round_trips() {
    for s in [
        FenceStatus::Pending,
        FenceStatus::Signaled,
        FenceStatus::Error(FenceError::ENOENT),
    ] {
        assert_eq!(FenceStatus::from_kernel(s.to_kernel()), Some(s));
    }
    assert_eq!(FenceStatus::from_kernel(2), None);
    assert_eq!(FenceStatus::from_kernel(-5000), None);
    assert_eq!(FenceStatus::from_kernel(i32::MIN), None);
    assert!(FenceError::from_errno(FenceError::MAX_ERRNO).is_some());
    assert!(FenceError::from_errno(FenceError::MAX_ERRNO + 1).is_none());
}

#[test]
fn stub_is_signalled_on_context_zero() {
    let stub = Fence::stub();
    assert!(stub.is_signaled());
    assert_eq!(stub.context(), ContextId::STUB);
    assert_eq!(stub.seqno(), 0);
    assert!(stub.ptr_eq(&Fence::stub()));
    assert_eq!(stub.add_callback(|_| {}), Err(AlreadySignaled));
}

#[test]
fn callbacks_run_once_in_order_with_info() {
    let fence = plain();
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        let log = log.clone();
        fence
            .add_callback(move |info: &SignalInfo| log.lock().unwrap().push((i, *info)))
            .unwrap();
    }
    assert!(fence.signaling_enabled());
    fence.signal_with_error(FenceError::EIO);
    fence.signal();
    let log = log.lock().unwrap();
    assert_eq!(log.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
    let info = log[0].1;
    assert_eq!((info.context, info.seqno), (fence.context(), fence.seqno()));
    assert_eq!(Some(info.timestamp), fence.timestamp());
    assert_eq!(info.status(), FenceStatus::Error(FenceError::EIO));
    assert_eq!(info.result(), Err(FenceError::EIO));
}

#[test]
fn callback_after_signal_is_refused_and_not_called() {
    let fence = plain();
    fence.signal();
    let called = Arc::new(AtomicBool::new(false));
    let c = called.clone();
    assert_eq!(
        fence.add_callback(move |_| c.store(true, Ordering::SeqCst)),
        Err(AlreadySignaled)
    );
    assert!(!called.load(Ordering::SeqCst));
}

#[test]
fn removed_callback_never_runs() {
    let fence = plain();
    let hits = Arc::new(AtomicUsize::new(0));
    let (h1, h2) = {
        let (a, b) = (hits.clone(), hits.clone());
        (
            fence
                .add_callback(move |_| {
                    a.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
            fence
                .add_callback(move |_| {
                    b.fetch_add(10, Ordering::SeqCst);
                })
                .unwrap(),
        )
    };
    assert!(fence.remove_callback(h1));
    fence.signal();
    assert_eq!(hits.load(Ordering::SeqCst), 10);
    assert!(!fence.remove_callback(h2), "already ran");
}

#[test]
fn remove_callback_with_foreign_handle_is_false() {
    let (a, b) = (plain(), plain());
    let h = a.add_callback(|_| {}).unwrap();
    assert!(!b.remove_callback(h));
}

#[test]
fn callbacks_may_reenter_the_fence_api() {
    let fence = plain();
    let other = plain();
    let seen = Arc::new(Mutex::new(None));
    {
        let (fence2, other2, seen) = (fence.clone(), other.clone(), seen.clone());
        fence
            .add_callback(move |_| {
                // All of these take the fence's lock: they must not deadlock.
                let again = fence2.add_callback(|_| panic!("must not run"));
                *seen.lock().unwrap() =
                    Some((fence2.status(), again, fence2.timestamp().is_some()));
                other2.signal();
                fence2.signal();
                let _ = fence2.set_error(FenceError::EIO);
            })
            .unwrap();
    }
    fence.signal();
    assert_eq!(
        *seen.lock().unwrap(),
        Some((FenceStatus::Signaled, Err(AlreadySignaled), true))
    );
    assert!(other.is_signaled());
}

#[test]
fn panicking_callback_does_not_skip_the_others() {
    let fence = plain();
    let ran = Arc::new(AtomicBool::new(false));
    fence.add_callback(|_| panic!("callback panics")).unwrap();
    let r = ran.clone();
    fence
        .add_callback(move |_| r.store(true, Ordering::SeqCst))
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fence.signal()));
    assert!(
        result.is_err(),
        "the panic is resumed on the signalling thread"
    );
    assert!(ran.load(Ordering::SeqCst));
    assert!(fence.is_signaled());
}

#[test]
fn release_with_pending_callbacks_signals_edeadlk() {
    let (fence, rec) = recorded_fence();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    fence
        .add_callback(move |info| *g.lock().unwrap() = Some(info.status()))
        .unwrap();
    let signaler = fence.signaler();
    drop(fence);
    assert_eq!(
        *got.lock().unwrap(),
        Some(FenceStatus::Error(FenceError::EDEADLK))
    );
    assert_eq!(rec.release_calls.load(Ordering::SeqCst), 1);
    assert!(signaler.is_released());
    assert!(!signaler.signal(), "signalling a released fence is a no-op");
    assert!(signaler.upgrade().is_none());
}

#[test]
fn release_without_callbacks_just_releases() {
    let (fence, rec) = recorded_fence();
    let clone = fence.clone();
    drop(fence);
    assert_eq!(
        rec.release_calls.load(Ordering::SeqCst),
        0,
        "a clone is alive"
    );
    drop(clone);
    assert_eq!(rec.release_calls.load(Ordering::SeqCst), 1);
    assert_eq!(rec.enable_calls.load(Ordering::SeqCst), 0);
}

#[test]
fn enable_signaling_is_called_once_and_lazily() {
    let (fence, rec) = recorded_fence();
    assert_eq!(rec.enable_calls.load(Ordering::SeqCst), 0);
    fence.is_signaled();
    fence.status();
    assert_eq!(
        fence.wait_timeout(Some(Duration::ZERO)),
        Err(fence_bridge::WaitError::TimedOut)
    );
    assert_eq!(
        rec.enable_calls.load(Ordering::SeqCst),
        0,
        "polling arms nothing"
    );
    fence.add_callback(|_| {}).unwrap();
    fence.enable_signaling();
    let _ = fence.wait_timeout(Some(Duration::from_millis(1)));
    assert_eq!(rec.enable_calls.load(Ordering::SeqCst), 1);
    assert!(fence.signaling_enabled());
}

#[test]
fn enable_signaling_not_called_on_signalled_fence() {
    let (fence, rec) = recorded_fence();
    fence.signal();
    fence.enable_signaling();
    fence.wait().unwrap();
    assert_eq!(rec.enable_calls.load(Ordering::SeqCst), 0);
}

#[test]
fn enable_signaling_returning_false_signals_now() {
    let (fence, rec) = recorded_fence();
    rec.refuse_enable.store(true, Ordering::SeqCst);
    fence.set_error(FenceError::ECANCELED).unwrap();
    assert_eq!(
        fence.add_callback(|_| panic!("not stored")),
        Err(AlreadySignaled)
    );
    assert_eq!(fence.status(), FenceStatus::Error(FenceError::ECANCELED));
}

#[test]
fn backend_signals_through_its_signaler() {
    let (fence, rec) = recorded_fence();
    fence.enable_signaling();
    let signaler = rec
        .signaler
        .lock()
        .unwrap()
        .clone()
        .expect("given to enable_signaling");
    assert!(signaler.upgrade().unwrap().ptr_eq(&fence));
    assert!(signaler.signal_timestamp(Ktime::from_nanos(5)));
    assert!(!signaler.signal());
    assert_eq!(fence.timestamp(), Some(Ktime::from_nanos(5)));
    let (fence, _rec) = recorded_fence();
    assert!(fence.signaler().signal_with_error(FenceError::EIO));
    assert_eq!(fence.status(), FenceStatus::Error(FenceError::EIO));
}

#[test]
fn signaled_poll_completes_the_fence() {
    let (fence, rec) = recorded_fence();
    assert!(!fence.is_signaled());
    assert!(rec.signaled_polls.load(Ordering::SeqCst) >= 1);
    rec.complete.store(true, Ordering::SeqCst);
    assert_eq!(fence.status(), FenceStatus::Signaled);
    assert!(fence.timestamp().is_some());
    let polls = rec.signaled_polls.load(Ordering::SeqCst);
    assert!(fence.is_signaled());
    assert_eq!(
        rec.signaled_polls.load(Ordering::SeqCst),
        polls,
        "no poll once signalled"
    );
}

#[test]
fn deadline_is_forwarded_only_while_pending() {
    let (fence, rec) = recorded_fence();
    let d = Ktime::now();
    fence.set_deadline(d);
    fence.signal();
    fence.set_deadline(d);
    assert_eq!(*rec.deadlines.lock().unwrap(), [d]);
}

#[test]
fn fences_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Fence>();
    check::<FenceSignaler>();
    fn check_send_sync<T: Send + Sync>() {}
    check_send_sync::<FenceContext>();
    check_send_sync::<fence_bridge::SwTimeline>();
}

#[test]
fn fence_context_hands_out_increasing_seqnos() {
    let ctx = FenceContext::new("seq");
    assert_eq!(ctx.last_seqno(), 0);
    let fences: Vec<_> = (0..5).map(|_| ctx.create_fence()).collect();
    assert!(fences.iter().all(|f| f.context() == ctx.id()));
    assert_eq!(
        fences.iter().map(Fence::seqno).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(ctx.last_seqno(), 5);
    assert_eq!(ctx.next_seqno(), 6);
    assert_eq!(fences[0].timeline_name(), "seq");
}

#[test]
fn concurrent_enabling_calls_the_backend_once() {
    for _ in 0..20 {
        let (fence, rec) = recorded_fence();
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (fence, barrier) = (fence.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    match i % 3 {
                        0 => fence.enable_signaling(),
                        1 => drop(fence.add_callback(|_| {})),
                        _ => drop(fence.wait_timeout(Some(Duration::from_millis(1)))),
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(rec.enable_calls.load(Ordering::SeqCst), 1);
    }
}

/// A backend whose "hardware" is a thread started lazily in `enable_signaling`.
struct ThreadBackend {
    started: Arc<AtomicUsize>,
    error: Option<FenceError>,
}

impl FenceOps for ThreadBackend {
    fn driver_name(&self) -> &str {
        "thread"
    }
    fn timeline_name(&self) -> &str {
        "worker"
    }
    fn enable_signaling(&self, signaler: FenceSignaler) -> bool {
        self.started.fetch_add(1, Ordering::SeqCst);
        let error = self.error;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            match error {
                Some(err) => signaler.signal_with_error(err),
                None => signaler.signal(),
            }
        });
        true
    }
}

#[test]
fn backend_thread_is_started_lazily_and_signals() {
    let started = Arc::new(AtomicUsize::new(0));
    let ctx = FenceContext::new("threads");
    let ok = ctx.create_fence_with(ThreadBackend {
        started: started.clone(),
        error: None,
    });
    let bad = ctx.create_fence_with(ThreadBackend {
        started: started.clone(),
        error: Some(FenceError::EIO),
    });
    assert_eq!(
        started.load(Ordering::SeqCst),
        0,
        "no thread before a waiter"
    );
    assert_eq!(ok.wait_timeout(Some(Duration::from_secs(30))), Ok(()));
    assert_eq!(bad.wait(), Err(FenceError::EIO));
    assert_eq!(started.load(Ordering::SeqCst), 2);
}
