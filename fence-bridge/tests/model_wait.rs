//! Waiting: single, any, all; timeouts; error propagation; signalling from other threads.
//!
//! Timing bounds are generous on purpose: the checks are "it did time out" and "it did not wait
//! for the timeout", never how precisely.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use fence_bridge::{
    wait_all_timeout, wait_any_timeout, Fence, FenceContext, FenceError, Timeout, WaitAllError,
    WaitError,
};

const SHORT: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(30);

fn fences(n: usize) -> Vec<Fence> {
    let ctx = FenceContext::new("wait");
    (0..n).map(|_| ctx.create_fence()).collect()
}

/// Signals `fence` from another thread after a short delay.
fn signal_later(fence: &Fence, error: Option<FenceError>) -> thread::JoinHandle<()> {
    let fence = fence.clone();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        match error {
            Some(err) => fence.signal_with_error(err),
            None => fence.signal(),
        };
    })
}

#[test]
fn wait_times_out_on_pending_fence() {
    let f = &fences(1)[0];
    let start = Instant::now();
    assert_eq!(f.wait_timeout(Some(SHORT)), Err(WaitError::TimedOut));
    assert!(start.elapsed() >= SHORT);
    assert!(f.signaling_enabled(), "a non-zero wait enables signalling");
}

#[test]
fn zero_timeout_polls_without_enabling() {
    let f = &fences(1)[0];
    assert_eq!(
        f.wait_timeout(Some(Duration::ZERO)),
        Err(WaitError::TimedOut)
    );
    assert!(!f.signaling_enabled());
    f.signal();
    assert_eq!(f.wait_timeout(Some(Duration::ZERO)), Ok(()));
}

#[test]
fn wait_returns_when_signalled_from_another_thread() {
    let f = &fences(1)[0];
    let t = signal_later(f, None);
    let start = Instant::now();
    assert_eq!(f.wait_timeout(Some(LONG)), Ok(()));
    assert!(start.elapsed() < LONG);
    t.join().unwrap();
    let f = &fences(1)[0];
    let t = signal_later(f, None);
    assert_eq!(f.wait(), Ok(()));
    t.join().unwrap();
}

#[test]
fn wait_propagates_the_error() {
    let f = &fences(1)[0];
    let t = signal_later(f, Some(FenceError::ETIMEDOUT));
    assert_eq!(
        f.wait_timeout(Some(LONG)),
        Err(WaitError::Failed(FenceError::ETIMEDOUT))
    );
    assert_eq!(f.wait(), Err(FenceError::ETIMEDOUT));
    t.join().unwrap();
    let err: Box<dyn std::error::Error> = WaitError::Failed(FenceError::EIO).into();
    assert!(err.source().is_some());
}

#[test]
fn huge_timeout_is_treated_as_forever() {
    let f = &fences(1)[0];
    let t = signal_later(f, None);
    assert_eq!(f.wait_timeout(Some(Duration::MAX)), Ok(()));
    t.join().unwrap();
}

#[test]
fn many_waiters_one_signaller() {
    let f = fences(1).remove(0);
    let barrier = Arc::new(Barrier::new(9));
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let (f, barrier) = (f.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                f.wait_timeout(Some(LONG))
            })
        })
        .collect();
    barrier.wait();
    thread::sleep(Duration::from_millis(5));
    f.signal_with_error(FenceError::EIO);
    for w in waiters {
        assert_eq!(w.join().unwrap(), Err(WaitError::Failed(FenceError::EIO)));
    }
}

#[test]
fn racing_signallers_signal_exactly_once() {
    for _ in 0..50 {
        let f = fences(1).remove(0);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        f.add_callback(move |_| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap();
        let barrier = Arc::new(Barrier::new(4));
        let winners: usize = (0..4)
            .map(|_| {
                let (f, barrier) = (f.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    f.signal()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(winners, 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

#[test]
fn callback_added_while_signalling_runs_or_is_refused_never_lost() {
    // add_callback racing signal: each callback either runs once or is refused.
    for _ in 0..50 {
        let f = fences(1).remove(0);
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let adder = {
            let (f, ran) = (f.clone(), ran.clone());
            thread::spawn(move || {
                let mut accepted = 0;
                for _ in 0..100 {
                    let ran = ran.clone();
                    let added = f.add_callback(move |_| {
                        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    });
                    accepted += usize::from(added.is_ok());
                }
                accepted
            })
        };
        f.signal();
        let accepted = adder.join().unwrap();
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), accepted);
    }
}

#[test]
fn wait_any_reports_the_signalled_index() {
    let fs = fences(4);
    let t = signal_later(&fs[2], None);
    assert_eq!(wait_any_timeout(&fs, Some(LONG)), Ok(2));
    t.join().unwrap();
    // Lowest signalled index wins when several are.
    fs[1].signal();
    assert_eq!(wait_any_timeout(&fs, Some(LONG)), Ok(1));
    assert_eq!(wait_any_timeout(&fs, None), Ok(1));
}

#[test]
fn wait_any_counts_errors_as_signalled() {
    let fs = fences(3);
    let t = signal_later(&fs[0], Some(FenceError::EIO));
    assert_eq!(wait_any_timeout(&fs, Some(LONG)), Ok(0));
    assert_eq!(fs[0].status().error(), Some(FenceError::EIO));
    t.join().unwrap();
}

#[test]
fn wait_any_times_out_and_cleans_up() {
    let fs = fences(3);
    let start = Instant::now();
    assert_eq!(wait_any_timeout(&fs, Some(SHORT)), Err(Timeout));
    assert!(start.elapsed() >= SHORT);
    // Its callbacks were removed: signalling now must not wake anything stale, and a plain
    // callback added afterwards still runs.
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    fs[0]
        .add_callback(move |_| r.store(true, std::sync::atomic::Ordering::SeqCst))
        .unwrap();
    fs[0].signal();
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn wait_any_zero_timeout_and_empty() {
    let fs = fences(2);
    assert_eq!(wait_any_timeout(&fs, Some(Duration::ZERO)), Err(Timeout));
    assert!(fs.iter().all(|f| !f.signaling_enabled()));
    assert_eq!(wait_any_timeout(&[], None), Err(Timeout));
    fs[1].signal();
    assert_eq!(wait_any_timeout(&fs, Some(Duration::ZERO)), Ok(1));
}

#[test]
fn wait_all_succeeds_when_all_signal_from_threads() {
    let fs = fences(5);
    let threads: Vec<_> = fs.iter().map(|f| signal_later(f, None)).collect();
    assert_eq!(wait_all_timeout(&fs, Some(LONG)), Ok(()));
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wait_all_timeout(&[], Some(Duration::ZERO)), Ok(()));
}

#[test]
fn wait_all_reports_which_are_pending() {
    let fs = fences(5);
    fs[0].signal();
    fs[3].signal_with_error(FenceError::EIO);
    let start = Instant::now();
    assert_eq!(
        wait_all_timeout(&fs, Some(SHORT)),
        Err(WaitAllError::TimedOut {
            pending: vec![1, 2, 4]
        })
    );
    assert!(start.elapsed() >= SHORT);
    assert_eq!(
        wait_all_timeout(&fs, Some(Duration::ZERO)),
        Err(WaitAllError::TimedOut {
            pending: vec![1, 2, 4]
        })
    );
}

#[test]
fn wait_all_reports_the_first_error() {
    let fs = fences(4);
    fs[0].signal();
    fs[1].signal();
    fs[2].signal_with_error(FenceError::ECANCELED);
    fs[3].signal_with_error(FenceError::EIO);
    assert_eq!(
        wait_all_timeout(&fs, None),
        Err(WaitAllError::Failed {
            index: 2,
            error: FenceError::ECANCELED
        })
    );
}

#[test]
fn wait_all_zero_timeout_enables_nothing() {
    let fs = fences(3);
    let _ = wait_all_timeout(&fs, Some(Duration::ZERO));
    assert!(fs.iter().all(|f| !f.signaling_enabled()));
}

#[test]
fn many_blocking_waiters_all_wake_on_one_signal() {
    // The signal only issues the futex wake when a waiter is counted: make sure none is missed,
    // with and without timeouts, including waiters arriving while others already sleep.
    let fence = fences(1).pop().unwrap();
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let fence = fence.clone();
            thread::spawn(move || {
                if i % 2 == 0 {
                    fence.wait_timeout(Some(Duration::from_secs(30)))
                } else {
                    fence.wait_timeout(None)
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    assert!(fence.signal());
    for w in waiters {
        assert_eq!(w.join().unwrap(), Ok(()));
    }
}
