//! fencegate's patch to the epoll backend (see ../FENCEGATE.md): a wait without a timeout leaves
//! the timerfd alone unless an earlier wait armed it, and the notifier is cleared and re-armed
//! only when a wait received its event. These check that no wakeup is lost or left stale.

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};

#[test]
fn a_timeout_cut_short_does_not_wake_a_later_wait_without_one() -> io::Result<()> {
    let poller = Poller::new()?;
    let mut events = Events::new();
    thread::scope(|s| -> io::Result<()> {
        // Armed for 100 ms, woken after ~10 ms by a notification.
        s.spawn(|| {
            thread::sleep(Duration::from_millis(10));
            poller.notify().unwrap();
        });
        let start = Instant::now();
        poller.wait(&mut events, Some(Duration::from_millis(100)))?;
        assert!(start.elapsed() < Duration::from_millis(100));
        Ok(())
    })?;
    // No timeout now: the 100 ms timer must have been disarmed, so only the socket written at
    // 400 ms ends this wait (a socket, not a notification, so that this test cannot hang on a
    // broken notifier).
    let (mut tx, rx) = UnixStream::pair()?;
    unsafe { poller.add(&rx, Event::readable(1))? };
    thread::scope(|s| -> io::Result<()> {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(400));
            tx.write_all(b"x").unwrap();
        });
        let start = Instant::now();
        poller.wait(&mut events, None)?;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "woken after {waited:?} by a stale timeout"
        );
        Ok(())
    })?;
    poller.delete(&rx)
}

#[test]
fn the_notifier_works_after_a_timeout_fired() -> io::Result<()> {
    let poller = Poller::new()?;
    let mut events = Events::new();
    for _ in 0..3 {
        let start = Instant::now();
        poller.wait(&mut events, Some(Duration::from_millis(20)))?;
        assert!(start.elapsed() >= Duration::from_millis(20));
        poller.notify()?;
        let start = Instant::now();
        poller.wait(&mut events, Some(Duration::from_secs(10)))?;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "notification lost"
        );
    }
    Ok(())
}

#[test]
fn an_undelivered_notification_wakes_the_next_wait_and_is_then_cleared() -> io::Result<()> {
    let poller = Poller::new()?;
    let (mut tx, rx) = UnixStream::pair()?;
    rx.set_nonblocking(true)?;
    unsafe { poller.add_with_mode(&rx, Event::readable(1), PollMode::Oneshot)? };
    tx.write_all(b"x")?; // ready first...
    poller.notify()?; // ...then the notification

    // Room for one event per wait: the socket's comes first, the notification stays pending.
    let mut events = Events::with_capacity(std::num::NonZeroUsize::new(1).unwrap());
    let start = Instant::now();
    poller.wait(&mut events, None)?;
    assert_eq!(events.iter().map(|ev| ev.key).collect::<Vec<_>>(), [1]);
    events.clear();

    // The next wait gets the pending notification at once (no events for the caller)...
    poller.wait(&mut events, Some(Duration::from_secs(10)))?;
    assert!(events.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "notification lost"
    );

    // ...and then it is gone: this one times out.
    events.clear();
    let start = Instant::now();
    poller.wait(&mut events, Some(Duration::from_millis(100)))?;
    assert!(events.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "a delivered notification was not cleared"
    );
    poller.delete(&rx)?;
    Ok(())
}
