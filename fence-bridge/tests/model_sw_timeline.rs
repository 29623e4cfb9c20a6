//! The software timeline: points, advancing, one timestamp per advance, destruction, poll fds,
//! signalling from other threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use fence_bridge::{wait_all_timeout, FenceError, FenceStatus, SwTimeline, WaitError};
use proptest::prelude::*;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn points_signal_when_the_counter_reaches_them() {
    let tl = SwTimeline::new("tl");
    let points: Vec<_> = (1..=5).map(|n| tl.create_fence(n)).collect();
    assert!(points.iter().all(|p| p.context() == tl.context()));
    assert_eq!(points[0].driver_name(), "sw_sync");
    assert_eq!(points[0].timeline_name(), "tl");
    assert_eq!(tl.pending_count(), 5);
    assert_eq!(tl.advance(2), 2);
    assert_eq!(tl.value(), 2);
    let signaled: Vec<bool> = points.iter().map(|p| p.is_signaled()).collect();
    assert_eq!(signaled, [true, true, false, false, false]);
    assert_eq!(tl.signal_to(4), 2);
    assert_eq!(tl.signal_to(3), 0, "never goes back");
    assert_eq!(tl.value(), 4);
    assert_eq!(tl.advance(0), 0);
    assert!(!points[4].is_signaled());
    assert_eq!(tl.pending_count(), 1);
}

#[test]
fn one_timestamp_per_advance_and_in_seqno_order() {
    let tl = SwTimeline::new("tl");
    let order = Arc::new(Mutex::new(Vec::new()));
    // Created out of order; must still signal 1, 2, 3.
    let points: Vec<_> = [3, 1, 2].iter().map(|&n| tl.create_fence(n)).collect();
    for p in &points {
        let order = order.clone();
        p.add_callback(move |info| order.lock().unwrap().push((info.seqno, info.timestamp)))
            .unwrap();
    }
    tl.advance(3);
    let order = order.lock().unwrap();
    assert_eq!(order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(order.iter().all(|(_, t)| *t == order[0].1));
}

#[test]
fn point_at_or_below_the_counter_is_born_signalled() {
    let tl = SwTimeline::new("tl");
    tl.advance(10);
    let p = tl.create_fence(7);
    assert_eq!(p.status(), FenceStatus::Signaled);
    assert!(p.timestamp().is_some());
    assert!(tl.create_fence(10).is_signaled());
    assert!(!tl.create_fence(11).is_signaled());
}

#[test]
fn same_seqno_returns_the_same_pending_fence() {
    let tl = SwTimeline::new("tl");
    let a = tl.create_fence(4);
    let b = tl.create_fence(4);
    assert!(a.ptr_eq(&b));
    assert_eq!(tl.pending_count(), 1);
}

#[test]
fn points_are_ordered_by_is_later() {
    let tl = SwTimeline::new("tl");
    let (a, b) = (tl.create_fence(1), tl.create_fence(u64::MAX));
    assert!(b.is_later(&a));
    assert_eq!(tl.signal_to(u64::MAX), 2);
    assert_eq!(tl.advance(1), 0, "saturates at u64::MAX");
}

#[test]
fn dropping_the_timeline_fails_pending_points_with_enoent() {
    let tl = SwTimeline::new("tl");
    let done = tl.create_fence(1);
    let pending = tl.create_fence(2);
    let (tx, rx) = mpsc::channel();
    pending
        .add_callback(move |info| tx.send(info.error).unwrap())
        .unwrap();
    tl.advance(1);
    drop(tl);
    assert_eq!(rx.recv_timeout(LONG).unwrap(), Some(FenceError::ENOENT));
    assert_eq!(done.status(), FenceStatus::Signaled);
    assert_eq!(pending.status(), FenceStatus::Error(FenceError::ENOENT));
    assert_eq!(
        pending.wait_timeout(Some(LONG)),
        Err(WaitError::Failed(FenceError::ENOENT))
    );
    assert_eq!(pending.timeline_name(), "tl", "points keep the name alive");
}

#[test]
fn timeline_keeps_pending_points_alive_for_their_callbacks() {
    let tl = SwTimeline::new("tl");
    let (tx, rx) = mpsc::channel();
    tl.create_fence(1)
        .add_callback(move |info| tx.send(info.status()).unwrap())
        .unwrap();
    // The only handle was a temporary: the timeline's list keeps the point alive, so the
    // callback sees the real signal, not EDEADLK.
    tl.advance(1);
    assert_eq!(rx.recv_timeout(LONG).unwrap(), FenceStatus::Signaled);
}

#[test]
fn advance_from_other_threads() {
    let tl = Arc::new(SwTimeline::new("tl"));
    let points: Vec<_> = (1..=100).map(|n| tl.create_fence(n)).collect();
    let signalled = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (tl, signalled) = (tl.clone(), signalled.clone());
            thread::spawn(move || {
                for _ in 0..25 {
                    signalled.fetch_add(tl.advance(1), Ordering::SeqCst);
                }
            })
        })
        .collect();
    assert_eq!(wait_all_timeout(&points, Some(LONG)), Ok(()));
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(tl.value(), 100);
    assert_eq!(
        signalled.load(Ordering::SeqCst),
        100,
        "each point signalled exactly once"
    );
}

#[test]
fn waiter_on_one_thread_producer_on_another() {
    let tl = SwTimeline::new("tl");
    let p = tl.create_fence(3);
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(2));
                tl.advance(1);
            }
        });
        assert_eq!(p.wait_timeout(Some(LONG)), Ok(()));
    });
}

#[test]
fn poll_fd_becomes_readable_on_signal() {
    let tl = SwTimeline::new("tl");
    let p = tl.create_fence(1);
    let fd = p.poll_fd().unwrap();
    let again = p.poll_fd().unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(fd.as_raw_fd(), again.as_raw_fd(), "one eventfd per fence");
    assert!(!fd.is_readable().unwrap());
    assert!(!fd.wait_readable(Some(Duration::from_millis(5))).unwrap());
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(5));
            tl.advance(1);
        });
        assert!(fd.wait_readable(Some(LONG)).unwrap());
    });
    assert!(fd.is_readable().unwrap(), "stays readable");
}

#[test]
fn poll_fd_of_signalled_fence_is_readable_at_once() {
    let tl = SwTimeline::new("tl");
    tl.advance(1);
    let fd = tl.create_fence(1).poll_fd().unwrap();
    assert!(fd.is_readable().unwrap());
}

#[test]
fn poll_fd_is_readable_after_timeline_destruction() {
    let tl = SwTimeline::new("tl");
    let p = tl.create_fence(1);
    let fd = p.poll_fd().unwrap();
    drop(tl);
    assert!(fd.is_readable().unwrap());
    assert_eq!(p.status(), FenceStatus::Error(FenceError::ENOENT));
}

/// One step of [`timeline_matches_its_model`].
#[derive(Debug, Clone)]
enum Op {
    Create(u64),
    Advance(u64),
    SignalTo(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..40).prop_map(Op::Create),
        1 => (0u64..6).prop_map(Op::Advance),
        1 => (0u64..45).prop_map(Op::SignalTo),
    ]
}

proptest! {
    /// Points created in any order, reached a few at a time, against a plain model: a point is
    /// signalled iff the counter reached it, one pending fence per seqno, and each advance
    /// signals exactly the points it reached, in seqno order.
    #[test]
    fn timeline_matches_its_model(ops in proptest::collection::vec(op(), 1..80)) {
        let tl = SwTimeline::new("model");
        let mut value = 0u64;
        let mut created: Vec<fence_bridge::Fence> = Vec::new();
        let signalled = Arc::new(Mutex::new(Vec::new()));
        for op in ops {
            match op {
                Op::Create(seqno) => {
                    let fence = tl.create_fence(seqno);
                    prop_assert_eq!(fence.seqno(), seqno);
                    prop_assert_eq!(fence.is_signaled(), seqno <= value);
                    if let Some(same) = created.iter().find(|f| f.seqno() == seqno && !f.is_signaled()) {
                        prop_assert!(same.ptr_eq(&fence), "one pending fence per seqno");
                    } else if !fence.is_signaled() {
                        let log = signalled.clone();
                        fence.add_callback(move |info| log.lock().unwrap().push(info.seqno)).unwrap();
                    }
                    created.push(fence);
                }
                Op::Advance(_) | Op::SignalTo(_) => {
                    let target = match op {
                        Op::Advance(inc) => value + inc,
                        Op::SignalTo(to) => value.max(to),
                        Op::Create(_) => unreachable!(),
                    };
                    let mut expected: Vec<u64> = created
                        .iter()
                        .filter(|f| !f.is_signaled() && f.seqno() <= target)
                        .map(|f| f.seqno())
                        .collect();
                    expected.sort_unstable();
                    expected.dedup();
                    let count = match op {
                        Op::Advance(inc) => tl.advance(inc),
                        _ => tl.signal_to(target),
                    };
                    value = target;
                    prop_assert_eq!(tl.value(), value);
                    prop_assert_eq!(count, expected.len());
                    prop_assert_eq!(std::mem::take(&mut *signalled.lock().unwrap()), expected);
                }
            }
            for fence in &created {
                prop_assert_eq!(fence.is_signaled(), fence.seqno() <= value);
            }
            let mut pending: Vec<u64> = created.iter().filter(|f| !f.is_signaled()).map(|f| f.seqno()).collect();
            pending.sort_unstable();
            pending.dedup();
            prop_assert_eq!(tl.pending_count(), pending.len());
        }
    }
}
