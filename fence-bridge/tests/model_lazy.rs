//! Lazy signalling: nothing (no eventfd, no `enable_signaling` call) is armed until someone
//! waits, adds a callback or asks for a poll fd.
//!
//! These tests read the process-wide [`fence_bridge::stats`], so they serialise on one lock and
//! this file holds nothing else.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fence_bridge::{stats, wait_all_timeout, wait_any_timeout, FenceContext, SwTimeline};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn creating_polling_and_signalling_arm_nothing() {
    let _g = serial();
    let before = stats();
    let tl = SwTimeline::new("lazy");
    let points: Vec<_> = (1..=10).map(|n| tl.create_fence(n)).collect();
    for p in &points {
        assert!(!p.is_signaled());
        let _ = p.status();
        let _ = p.wait_timeout(Some(Duration::ZERO));
    }
    let _ = wait_any_timeout(&points, Some(Duration::ZERO));
    let _ = wait_all_timeout(&points, Some(Duration::ZERO));
    tl.advance(10);
    let d = stats().since(&before);
    assert_eq!(d.fences_created, 10);
    assert_eq!(d.fences_signaled, 10);
    assert_eq!(d.signaling_enabled, 0);
    assert_eq!(d.eventfds_created, 0);
    assert_eq!(d.callbacks_run, 0);
    assert!(points.iter().all(|p| !p.signaling_enabled()));
}

#[test]
fn a_wait_enables_once_without_an_eventfd() {
    let _g = serial();
    let before = stats();
    let f = FenceContext::new("lazy").create_fence();
    let _ = f.wait_timeout(Some(Duration::from_millis(1)));
    let _ = f.wait_timeout(Some(Duration::from_millis(1)));
    f.add_callback(|_| {}).unwrap();
    let d = stats().since(&before);
    assert_eq!(d.signaling_enabled, 1);
    assert_eq!(d.eventfds_created, 0, "waiting uses no fd");
    f.signal();
    assert_eq!(stats().since(&before).callbacks_run, 1);
}

#[test]
fn eventfd_only_on_request_and_once_per_fence() {
    let _g = serial();
    let before = stats();
    let tl = SwTimeline::new("lazy");
    let a = tl.create_fence(1);
    let b = tl.create_fence(2);
    assert_eq!(stats().since(&before).eventfds_created, 0);
    let _fd1 = a.poll_fd().unwrap();
    let _fd2 = a.poll_fd().unwrap();
    let d = stats().since(&before);
    assert_eq!(d.eventfds_created, 1);
    assert_eq!(d.signaling_enabled, 1);
    assert!(a.signaling_enabled() && !b.signaling_enabled());
}

#[test]
fn released_with_pending_callbacks_is_counted() {
    let _g = serial();
    let before = stats();
    let f = FenceContext::new("lazy").create_fence();
    f.add_callback(|_| {}).unwrap();
    drop(f);
    let d = stats().since(&before);
    assert_eq!(d.released_with_pending_callbacks, 1);
    assert_eq!(d.callbacks_run, 1);
}

// --- Release and the core's poll eventfd ---------------------------------------------------------

#[test]
fn released_with_an_unheld_poll_fd_is_quiet() {
    let _g = serial();
    let before = stats();
    let f = FenceContext::new("lazy").create_fence();
    let fd = f.poll_fd().unwrap();
    drop(fd);
    drop(f);
    let d = stats().since(&before);
    assert_eq!(d.eventfds_created, 1);
    assert_eq!(
        d.released_with_pending_callbacks, 0,
        "the core's own poll-fd reference is not a waiter"
    );
    assert_eq!(d.fences_signaled, 0, "nobody to wake: not force-signalled");
    assert_eq!(d.callbacks_run, 0, "the poll fd is not a callback");
}

#[test]
fn released_with_a_held_poll_fd_wakes_it_with_the_error() {
    let _g = serial();
    let before = stats();
    let f = FenceContext::new("lazy").create_fence();
    let fd = f.poll_fd().unwrap();
    let signaler = f.signaler();
    assert!(!fd.is_readable().unwrap());
    drop(f);
    let d = stats().since(&before);
    assert_eq!(
        d.released_with_pending_callbacks, 1,
        "the fd's holder was a waiter"
    );
    assert_eq!(d.fences_signaled, 1, "force-signalled (EDEADLK)");
    assert!(
        fd.is_readable().unwrap(),
        "the holder is woken, not left waiting forever"
    );
    assert!(signaler.is_released());
}

#[test]
fn released_with_a_poll_fd_and_a_callback_runs_the_callback_once() {
    let _g = serial();
    let before = stats();
    let f = FenceContext::new("lazy").create_fence();
    let fd = f.poll_fd().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    f.add_callback(move |info| tx.send(info.status()).unwrap())
        .unwrap();
    drop(f);
    assert_eq!(
        rx.try_recv().unwrap(),
        fence_bridge::FenceStatus::Error(fence_bridge::FenceError::EDEADLK)
    );
    assert!(fd.is_readable().unwrap());
    let d = stats().since(&before);
    assert_eq!(d.released_with_pending_callbacks, 1);
    assert_eq!(d.callbacks_run, 1, "only the user's callback");
}

#[test]
fn signalled_fence_with_poll_fd_releases_quietly() {
    let _g = serial();
    let before = stats();
    let f = FenceContext::new("lazy").create_fence();
    let fd = f.poll_fd().unwrap();
    f.signal();
    assert!(fd.is_readable().unwrap(), "the signal writes the eventfd");
    drop(f);
    assert_eq!(stats().since(&before).released_with_pending_callbacks, 0);
    assert!(fd.is_readable().unwrap());
}

#[test]
fn poll_fd_of_a_signalled_fence_costs_no_callback() {
    let _g = serial();
    let f = FenceContext::new("lazy").create_fence();
    f.signal();
    let before = stats();
    let fd = f.poll_fd().unwrap();
    assert!(fd.is_readable().unwrap());
    let d = stats().since(&before);
    assert_eq!(d.eventfds_created, 1);
    assert_eq!(d.signaling_enabled, 0);
    assert_eq!(d.callbacks_run, 0);
}
