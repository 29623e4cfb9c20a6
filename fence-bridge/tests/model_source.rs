//! `FenceSource`, the calloop source: per-fence / any / all delivery, timeouts, the
//! already-signalled fast path, cross-thread wakeups, deregistration, the native-fd path and
//! scale.
//!
//! What is registered is checked in the kernel's own books: the epoll fd's
//! `/proc/self/fdinfo/<fd>` lists one `tfd:` line per registered fd. Tests take one lock so that
//! the process-wide `stats()` counters are not shared with a concurrent test.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use calloop::{Dispatcher, EventLoop};
use fence_bridge::{
    context_alloc, stats, Fence, FenceContext, FenceError, FenceEvent, FenceOps, FenceSource,
    FenceStatus, SwTimeline, WaitMode,
};

const LONG: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

type Events<K> = Vec<FenceEvent<K>>;

/// Fds registered in `event_loop`'s epoll set, from the kernel's fdinfo.
fn registered<D>(event_loop: &EventLoop<'_, D>) -> usize {
    let path = format!("/proc/self/fdinfo/{}", event_loop.as_raw_fd());
    std::fs::read_to_string(path)
        .expect("fdinfo of the epoll fd")
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .count()
}

/// Inserts `source`, collecting its events into the loop data.
fn insert<K: 'static>(
    event_loop: &EventLoop<'static, Events<K>>,
    source: FenceSource<K>,
) -> calloop::RegistrationToken {
    event_loop
        .handle()
        .insert_source(source, |event, _, events: &mut Events<K>| {
            events.push(event)
        })
        .map_err(|e| e.error)
        .unwrap()
}

/// Dispatches until `events` holds `n` events (or fails after `LONG`).
fn dispatch_until<K>(
    event_loop: &mut EventLoop<'static, Events<K>>,
    events: &mut Events<K>,
    n: usize,
) {
    let deadline = Instant::now() + LONG;
    while events.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events",
            events.len()
        );
        event_loop.dispatch(Some(LONG), events).unwrap();
    }
}

fn signaled_key<K: Clone>(event: &FenceEvent<K>) -> K {
    match event {
        FenceEvent::Signaled(s) => s.key.clone(),
        other => panic!("expected Signaled, got {:?}", std::mem::discriminant(other)),
    }
}

#[test]
fn each_mode_reports_every_fence_in_signal_order() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("each");
    let fences: Vec<Fence> = (0..5).map(|_| ctx.create_fence()).collect();
    let source = FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each).unwrap();
    insert(&event_loop, source);
    // Five software fences share one eventfd (a callback on each writes it).
    assert_eq!(registered(&event_loop), base + 1);

    let mut events = Vec::new();
    event_loop.dispatch(Duration::ZERO, &mut events).unwrap();
    assert!(events.is_empty());

    // Signalled out of index order, all before the loop runs: delivered in signal order.
    for i in [3, 0, 4] {
        fences[i].signal();
    }
    fences[1].signal_with_error(FenceError::EIO);
    fences[2].signal();
    dispatch_until(&mut event_loop, &mut events, 5);
    let keys: Vec<usize> = events.iter().map(signaled_key).collect();
    assert_eq!(keys, [3, 0, 4, 1, 2]);
    let mut last = None;
    for event in &events {
        let FenceEvent::Signaled(s) = event else {
            unreachable!()
        };
        assert!(s.fence.ptr_eq(&fences[s.key]));
        assert_eq!(Some(s.timestamp), s.fence.timestamp());
        assert!(last <= Some(s.timestamp), "timestamps in signal order");
        last = Some(s.timestamp);
        let expected = if s.key == 1 {
            FenceStatus::Error(FenceError::EIO)
        } else {
            FenceStatus::Signaled
        };
        assert_eq!(s.status, expected);
    }
    // Done: the source removed itself and every fd left the epoll set.
    assert_eq!(registered(&event_loop), base);
    event_loop.dispatch(Duration::ZERO, &mut events).unwrap();
    assert_eq!(events.len(), 5);
}

#[test]
fn any_mode_reports_the_first_and_removes_everything() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<&str>>::try_new().unwrap();
    let base = registered(&event_loop);
    let timelines = [
        SwTimeline::new("a"),
        SwTimeline::new("b"),
        SwTimeline::new("c"),
    ];
    let fences = [
        ("a", timelines[0].create_fence(1)),
        ("b", timelines[1].create_fence(1)),
        ("c", timelines[2].create_fence(1)),
    ];
    insert(
        &event_loop,
        FenceSource::new(fences.clone(), WaitMode::Any).unwrap(),
    );
    assert_eq!(registered(&event_loop), base + 1, "one shared eventfd");

    timelines[1].advance(1);
    let mut events = Vec::new();
    dispatch_until(&mut event_loop, &mut events, 1);
    assert_eq!(signaled_key(&events[0]), "b");
    assert_eq!(registered(&event_loop), base);

    timelines[0].advance(1);
    timelines[2].advance(1);
    event_loop
        .dispatch(Duration::from_millis(10), &mut events)
        .unwrap();
    assert_eq!(events.len(), 1);

    // Any with one already signalled: no source at all.
    let t = SwTimeline::new("d");
    let ready = FenceSource::new(
        [(0, t.create_fence(5)), (1, fences[0].1.clone())],
        WaitMode::Any,
    )
    .unwrap_err();
    assert_eq!(ready.signaled.len(), 1);
    assert_eq!(ready.signaled[0].key, 1);
}

#[test]
fn all_mode_reports_once_with_every_status() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<u32>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("all");
    let early = ctx.create_fence();
    early.signal();
    let (a, b) = (ctx.create_fence(), ctx.create_fence());
    let source = FenceSource::new(
        [(10, a.clone()), (20, early.clone()), (30, b.clone())],
        WaitMode::All,
    )
    .unwrap();
    insert(&event_loop, source);
    assert_eq!(
        registered(&event_loop),
        base + 1,
        "the two pending fences share one eventfd; the signalled one is not watched"
    );

    let mut events = Vec::new();
    b.signal_with_error(FenceError::ECANCELED);
    event_loop
        .dispatch(Duration::from_millis(10), &mut events)
        .unwrap();
    assert!(events.is_empty(), "nothing until all have signalled");
    a.signal();
    dispatch_until(&mut event_loop, &mut events, 1);
    let FenceEvent::AllSignaled(all) = &events[0] else {
        panic!("expected AllSignaled")
    };
    let keys: Vec<u32> = all.iter().map(|s| s.key).collect();
    assert_eq!(keys, [20, 30, 10], "by signal timestamp");
    assert_eq!(all[1].status, FenceStatus::Error(FenceError::ECANCELED));
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn timeout_reports_the_pending_fences() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("timeout");
    let fences: Vec<Fence> = (0..4).map(|_| ctx.create_fence()).collect();
    let source = FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each)
        .unwrap()
        .with_timeout(Duration::from_millis(50));
    insert(&event_loop, source);
    fences[3].signal();
    fences[1].signal();

    let started = Instant::now();
    let mut events = Vec::new();
    dispatch_until(&mut event_loop, &mut events, 3);
    assert!(started.elapsed() >= Duration::from_millis(45));
    assert_eq!(signaled_key(&events[0]), 3);
    assert_eq!(signaled_key(&events[1]), 1);
    assert_eq!(
        events[2],
        FenceEvent::TimedOut {
            pending: vec![0, 2]
        }
    );
    assert_eq!(registered(&event_loop), base);
    // The fences are untouched: they may still signal, nobody listens.
    assert!(fences[0].signal());
}

#[test]
fn already_signalled_fences_create_and_register_nothing() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let timeline = SwTimeline::new("done");
    let fences: Vec<Fence> = (1..=3).map(|i| timeline.create_fence(i)).collect();
    timeline.advance(3);

    // All signalled: no source.
    let before = stats();
    for mode in [WaitMode::Each, WaitMode::Any, WaitMode::All] {
        let ready = FenceSource::new(fences.iter().cloned().enumerate(), mode).unwrap_err();
        let expected = if mode == WaitMode::Any { 1 } else { 3 };
        assert_eq!(ready.signaled.len(), expected);
        assert!(ready
            .signaled
            .iter()
            .all(|s| s.status == FenceStatus::Signaled));
    }
    assert!(FenceSource::<usize>::new([], WaitMode::All)
        .unwrap_err()
        .signaled
        .is_empty());
    let delta = stats().since(&before);
    assert_eq!(delta.eventfds_created, 0);
    assert_eq!(delta.signaling_enabled, 0);

    // Mixed: the signalled ones come first, on the first dispatch, without an fd.
    let pending = timeline.create_fence(4);
    let mut all = fences.clone();
    all.push(pending.clone());
    let before = stats();
    insert(
        &event_loop,
        FenceSource::new(all.into_iter().enumerate(), WaitMode::Each).unwrap(),
    );
    assert_eq!(
        stats().since(&before).eventfds_created,
        1,
        "one eventfd: the pending fence's"
    );
    assert_eq!(registered(&event_loop), base + 1);
    let mut events = Vec::new();
    event_loop.dispatch(Duration::ZERO, &mut events).unwrap();
    let keys: Vec<usize> = events.iter().map(signaled_key).collect();
    assert_eq!(keys, [0, 1, 2]);
    timeline.advance(1);
    dispatch_until(&mut event_loop, &mut events, 4);
    assert_eq!(signaled_key(&events[3]), 3);
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn signalling_from_another_thread_wakes_the_loop() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let timeline = SwTimeline::new("producer");
    let fence = timeline.create_fence(1);
    insert(
        &event_loop,
        FenceSource::new([(7, fence)], WaitMode::Any).unwrap(),
    );
    let mut events = Vec::new();
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(20));
            timeline.advance(1);
        });
        let started = Instant::now();
        // One blocking dispatch: the signal must wake it, long before LONG.
        event_loop.dispatch(Some(LONG), &mut events).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
    });
    assert_eq!(events.len(), 1);
    assert_eq!(signaled_key(&events[0]), 7);
}

#[test]
fn removing_dropping_or_cancelling_unregisters_every_fd() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("cancel");
    let fences: Vec<Fence> = (0..10).map(|_| ctx.create_fence()).collect();
    let with_timeout = || {
        FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each)
            .unwrap()
            .with_timeout(Duration::from_millis(20))
    };

    // LoopHandle::remove.
    let token = insert(&event_loop, with_timeout());
    assert_eq!(registered(&event_loop), base + 1);
    event_loop.handle().remove(token);
    assert_eq!(registered(&event_loop), base);

    // FenceSource::cancel through a Dispatcher: fds leave at once, the source on the next dispatch.
    let dispatcher = Dispatcher::new(with_timeout(), |event, _, events: &mut Events<usize>| {
        events.push(event)
    });
    event_loop
        .handle()
        .register_dispatcher(dispatcher.clone())
        .unwrap();
    assert_eq!(registered(&event_loop), base + 1);
    assert_eq!(dispatcher.as_source_ref().registered_fds(), 1);
    dispatcher.as_source_mut().cancel();
    assert_eq!(registered(&event_loop), base);
    let mut events = Vec::new();
    event_loop
        .dispatch(Duration::from_millis(40), &mut events)
        .unwrap();
    assert!(
        events.is_empty(),
        "a cancelled source delivers nothing, not even its timeout"
    );

    // Remaining::cancel from the callback.
    let source = FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each).unwrap();
    event_loop
        .handle()
        .insert_source(source, |event, remaining, events: &mut Events<usize>| {
            assert_eq!(remaining.pending(), 9);
            remaining.cancel();
            events.push(event);
        })
        .unwrap();
    assert_eq!(registered(&event_loop), base + 1);
    fences[4].signal();
    fences[5].signal();
    event_loop
        .dispatch(Duration::from_millis(10), &mut events)
        .unwrap();
    event_loop
        .dispatch(Duration::from_millis(10), &mut events)
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(registered(&event_loop), base);

    // Dropping the loop drops the source: the eventfds are no longer in any epoll set (they
    // stay readable and usable).
    insert(&event_loop, with_timeout());
    drop(event_loop);
    assert!(fences[9].poll_fd().unwrap().is_readable().is_ok());
}

// --- The native-fd path, exercised generically with a pipe --------------------------------------

/// A "kernel" fence whose own pollable fd is the read end of a socket pair: readable once the
/// "hardware" writes a byte. `signaled()` reads the completion flag, as a sync_file backend
/// polls its fd.
struct PipeFence {
    done: Arc<AtomicBool>,
    read_end: UnixStream,
}

impl FenceOps for PipeFence {
    fn driver_name(&self) -> &str {
        "test-pipe"
    }
    fn timeline_name(&self) -> &str {
        "pipe"
    }
    fn signaled(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
    fn native_poll_fd(&self) -> Option<std::io::Result<OwnedFd>> {
        Some(self.read_end.try_clone().map(OwnedFd::from))
    }
}

/// A pipe fence and its "hardware": (fence, done flag, write end).
fn pipe_fence() -> (Fence, Arc<AtomicBool>, UnixStream) {
    let (read_end, write_end) = UnixStream::pair().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let fence = Fence::new(
        context_alloc(1).first(),
        1,
        PipeFence {
            done: done.clone(),
            read_end,
        },
    );
    (fence, done, write_end)
}

#[test]
fn native_fds_are_registered_directly_and_spurious_wakeups_wait_on() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let (fence, done, mut hw) = pipe_fence();
    let before = stats();
    insert(
        &event_loop,
        FenceSource::new([(1, fence.clone())], WaitMode::Each).unwrap(),
    );
    assert_eq!(
        stats().since(&before).eventfds_created,
        0,
        "no eventfd for a native fence"
    );
    assert!(
        !fence.signaling_enabled(),
        "the native fd needs no callback"
    );
    assert_eq!(registered(&event_loop), base + 1);

    // Readable, but the backend says not signalled: a spurious wakeup, nothing delivered.
    hw.write_all(b"x").unwrap();
    let mut events = Vec::new();
    event_loop
        .dispatch(Duration::from_millis(10), &mut events)
        .unwrap();
    assert!(events.is_empty());
    assert_eq!(registered(&event_loop), base + 1, "still waiting");
    // The spurious byte stays in the pipe: level-triggered, the real signal is still noticed.

    // The real completion: the backend confirms and the core records status and timestamp.
    done.store(true, Ordering::Release);
    hw.write_all(b"x").unwrap();
    dispatch_until(&mut event_loop, &mut events, 1);
    let FenceEvent::Signaled(s) = &events[0] else {
        panic!()
    };
    assert_eq!((s.key, s.status), (1, FenceStatus::Signaled));
    assert_eq!(fence.timestamp(), Some(s.timestamp));
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn one_fence_in_two_sources_of_one_loop() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<&str>>::try_new().unwrap();
    let base = registered(&event_loop);
    let (fence, done, mut hw) = pipe_fence();
    // The same native fd twice in one epoll set: the second registration uses a dup.
    insert(
        &event_loop,
        FenceSource::new([("first", fence.clone())], WaitMode::Any).unwrap(),
    );
    insert(
        &event_loop,
        FenceSource::new([("second", fence.clone())], WaitMode::Any).unwrap(),
    );
    assert_eq!(registered(&event_loop), base + 2);
    done.store(true, Ordering::Release);
    hw.write_all(b"x").unwrap();
    let mut events = Vec::new();
    dispatch_until(&mut event_loop, &mut events, 2);
    let mut keys: Vec<&str> = events.iter().map(signaled_key).collect();
    keys.sort();
    assert_eq!(keys, ["first", "second"]);
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn a_thousand_fences() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<u64>>::try_new().unwrap();
    let base = registered(&event_loop);
    let timeline = SwTimeline::new("many");
    let fences: Vec<(u64, Fence)> = (1..=1000).map(|i| (i, timeline.create_fence(i))).collect();
    let before = stats();
    let dispatcher = Dispatcher::new(
        FenceSource::new(fences, WaitMode::Each)
            .unwrap()
            .with_timeout(LONG),
        |event, _, events: &mut Events<u64>| events.push(event),
    );
    event_loop
        .handle()
        .register_dispatcher(dispatcher.clone())
        .unwrap();
    // A thousand software fences: one eventfd, one registration.
    assert_eq!(stats().since(&before).eventfds_created, 1);
    assert_eq!(registered(&event_loop), base + 1);

    let mut events = Vec::new();
    thread::scope(|s| {
        s.spawn(|| {
            // Half in one step, then the rest one by one.
            timeline.signal_to(500);
            for _ in 500..1000 {
                timeline.advance(1);
            }
        });
        dispatch_until(&mut event_loop, &mut events, 1000);
    });
    let keys: Vec<u64> = events.iter().map(signaled_key).collect();
    assert_eq!(
        keys,
        (1..=1000).collect::<Vec<_>>(),
        "seqno order is signal order"
    );
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn inserting_fails_cleanly_and_hands_the_source_back() {
    let _serial = serial();
    let event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    struct Broken;
    impl FenceOps for Broken {
        fn driver_name(&self) -> &str {
            "broken"
        }
        fn timeline_name(&self) -> &str {
            "broken"
        }
        fn native_poll_fd(&self) -> Option<std::io::Result<OwnedFd>> {
            Some(Err(std::io::Error::from_raw_os_error(24))) // EMFILE
        }
    }
    let ctx = FenceContext::new("ok");
    let ok = ctx.create_fence();
    let broken = Fence::new(context_alloc(1).first(), 1, Broken);
    let source = FenceSource::new([(0, ok), (1, broken)], WaitMode::All).unwrap();
    let err = event_loop
        .handle()
        .insert_source(source, |_, _, _: &mut Events<usize>| {})
        .unwrap_err();
    assert_eq!(err.inserted.pending(), 2);
    drop(err);
    assert_eq!(
        registered(&event_loop),
        base,
        "the partial registration is gone"
    );
}

// --- Large sets (the shared wakeup), duplicates inside one, and quiet release -------------------

#[test]
fn large_set_delivers_every_fence_by_key_in_any_order() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("large");
    let fences: Vec<Fence> = (0..300).map(|_| ctx.create_fence()).collect();
    let dispatcher = Dispatcher::new(
        FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each)
            .unwrap()
            .with_timeout(LONG),
        |event, _, events: &mut Events<usize>| events.push(event),
    );
    event_loop
        .handle()
        .register_dispatcher(dispatcher.clone())
        .unwrap();
    assert_eq!(registered(&event_loop), base + 1);
    // A scrambled order (7 is coprime with 300), one dispatch each: each wakeup names its fence.
    let order: Vec<usize> = (0..300).map(|i| (i * 7 + 3) % 300).collect();
    let mut events = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        fences[i].signal();
        dispatch_until(&mut event_loop, &mut events, n + 1);
        assert_eq!(signaled_key(&events[n]), i);
        let left = if n + 1 < 300 { 1 } else { 0 };
        assert_eq!(registered(&event_loop), base + left);
    }
    assert_eq!(events.len(), 300);
}

#[test]
fn large_set_any_mode_and_a_fence_twice() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("twice");
    let mut fences: Vec<Fence> = (0..40).map(|_| ctx.create_fence()).collect();
    // The same fence at keys 5 and 40: two callbacks on it, both delivered.
    fences.push(fences[5].clone());
    fences.push(ctx.create_fence()); // key 41, after the dup
    insert(
        &event_loop,
        FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each).unwrap(),
    );
    assert_eq!(registered(&event_loop), base + 1);
    let mut events = Vec::new();
    fences[41].signal();
    dispatch_until(&mut event_loop, &mut events, 1);
    assert_eq!(signaled_key(&events[0]), 41);
    fences[5].signal();
    dispatch_until(&mut event_loop, &mut events, 3);
    let mut keys: Vec<usize> = events[1..].iter().map(signaled_key).collect();
    keys.sort();
    assert_eq!(keys, [5, 40]);
    fences[39].signal();
    dispatch_until(&mut event_loop, &mut events, 4);
    assert_eq!(signaled_key(&events[3]), 39);
    assert_eq!(registered(&event_loop), base + 1);

    // Any over 1,000: the one signalled is found.
    let many: Vec<Fence> = (0..1000).map(|_| ctx.create_fence()).collect();
    insert(
        &event_loop,
        FenceSource::new(many.iter().cloned().enumerate(), WaitMode::Any).unwrap(),
    );
    many[777].signal();
    let mut any = Vec::new();
    let mut event_loop_any = event_loop;
    // The Each source above still holds 38 pending fences; only the Any source fires.
    let deadline = Instant::now() + LONG;
    while any.is_empty() {
        assert!(Instant::now() < deadline);
        event_loop_any.dispatch(Some(LONG), &mut any).unwrap();
    }
    assert_eq!(any.len(), 1);
    assert_eq!(signaled_key(&any[0]), 777);
    assert_eq!(
        registered(&event_loop_any),
        base + 1,
        "the Each source's eventfd"
    );
}

#[test]
fn fences_only_the_source_held_are_released_quietly() {
    let _serial = serial();
    let event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("quiet");
    let before = stats();
    // The source holds the only handles: removing it releases every fence, unsignalled, after
    // its callbacks are removed and its eventfd left the loop. Nobody waits any more: no EDEADLK,
    // no warning.
    let token = insert(
        &event_loop,
        FenceSource::new((0..50).map(|i| (i, ctx.create_fence())), WaitMode::Each).unwrap(),
    );
    assert_eq!(registered(&event_loop), base + 1);
    event_loop.handle().remove(token);
    assert_eq!(registered(&event_loop), base);
    let d = stats().since(&before);
    assert_eq!(d.eventfds_created, 1);
    assert_eq!(d.released_with_pending_callbacks, 0);
    assert_eq!(d.fences_signaled, 0);

    // Same through cancel.
    let before = stats();
    let dispatcher = Dispatcher::new(
        FenceSource::new((0..20).map(|i| (i, ctx.create_fence())), WaitMode::Any).unwrap(),
        |event, _, events: &mut Events<usize>| events.push(event),
    );
    event_loop
        .handle()
        .register_dispatcher(dispatcher.clone())
        .unwrap();
    dispatcher.as_source_mut().cancel();
    assert_eq!(registered(&event_loop), base);
    assert_eq!(stats().since(&before).released_with_pending_callbacks, 0);
}

// --- How fences are watched: own fd, or the shared wakeup -----------------------------------------

#[test]
fn kernel_fences_keep_their_fds_and_software_fences_share_one_eventfd() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<&str>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("mixed");

    // A lone software fence: its own poll fd, the fewest steps from signal to wakeup.
    let lone = ctx.create_fence();
    let before = stats();
    insert(
        &event_loop,
        FenceSource::new([("lone", lone.clone())], WaitMode::Any).unwrap(),
    );
    assert_eq!(stats().since(&before).eventfds_created, 1);
    assert_eq!(registered(&event_loop), base + 1);

    // Two native fences and three software fences: two fds plus one shared eventfd.
    let (native_a, done_a, mut hw_a) = pipe_fence();
    let (native_b, done_b, mut hw_b) = pipe_fence();
    let soft: Vec<Fence> = (0..3).map(|_| ctx.create_fence()).collect();
    let before = stats();
    insert(
        &event_loop,
        FenceSource::new(
            [
                ("a", native_a.clone()),
                ("s0", soft[0].clone()),
                ("b", native_b.clone()),
                ("s1", soft[1].clone()),
                ("s2", soft[2].clone()),
            ],
            WaitMode::Each,
        )
        .unwrap(),
    );
    assert_eq!(
        stats().since(&before).eventfds_created,
        1,
        "only the shared one"
    );
    assert_eq!(registered(&event_loop), base + 1 + 3);

    let mut events = Vec::new();
    soft[1].signal();
    done_b.store(true, Ordering::Release);
    hw_b.write_all(b"x").unwrap();
    dispatch_until(&mut event_loop, &mut events, 2);
    let mut keys: Vec<&str> = events.iter().map(signaled_key).collect();
    keys.sort();
    assert_eq!(keys, ["b", "s1"]);
    assert_eq!(
        registered(&event_loop),
        base + 1 + 2,
        "b's fd left; the shared one stays"
    );

    lone.signal();
    soft[0].signal();
    soft[2].signal_with_error(FenceError::EIO);
    done_a.store(true, Ordering::Release);
    hw_a.write_all(b"x").unwrap();
    dispatch_until(&mut event_loop, &mut events, 6);
    let mut keys: Vec<&str> = events[2..].iter().map(signaled_key).collect();
    keys.sort();
    assert_eq!(keys, ["a", "lone", "s0", "s2"]);
    let s2 = events
        .iter()
        .find_map(|e| match e {
            FenceEvent::Signaled(s) if s.key == "s2" => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(s2.status, FenceStatus::Error(FenceError::EIO));
    assert_eq!(Some(s2.timestamp), soft[2].timestamp());
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn a_fence_signalled_between_new_and_insertion_is_delivered() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let ctx = FenceContext::new("race");
    let fences: Vec<Fence> = (0..3).map(|_| ctx.create_fence()).collect();
    let source = FenceSource::new(fences.iter().cloned().enumerate(), WaitMode::Each).unwrap();
    // Pending when the source was made, signalled before it is registered: no callback can be
    // added any more, so registration queues it itself.
    fences[1].signal();
    insert(&event_loop, source);
    let mut events = Vec::new();
    dispatch_until(&mut event_loop, &mut events, 1);
    assert_eq!(signaled_key(&events[0]), 1);
    fences[0].signal();
    fences[2].signal();
    dispatch_until(&mut event_loop, &mut events, 3);
    assert_eq!(registered(&event_loop), base);
}

#[test]
fn native_fences_are_found_among_many() {
    let _serial = serial();
    let mut event_loop = EventLoop::<Events<usize>>::try_new().unwrap();
    let base = registered(&event_loop);
    let natives: Vec<(Fence, Arc<AtomicBool>, UnixStream)> =
        (0..60).map(|_| pipe_fence()).collect();
    insert(
        &event_loop,
        FenceSource::new(
            natives.iter().map(|(f, _, _)| f.clone()).enumerate(),
            WaitMode::Each,
        )
        .unwrap(),
    );
    assert_eq!(registered(&event_loop), base + 60);
    // A scrambled order (7 is coprime with 60), one dispatch each: every event is looked up
    // among the fds still registered.
    let mut natives = natives;
    let mut events = Vec::new();
    for n in 0..60 {
        let i = (n * 7 + 3) % 60;
        let (_, done, hw) = &mut natives[i];
        done.store(true, Ordering::Release);
        hw.write_all(b"x").unwrap();
        dispatch_until(&mut event_loop, &mut events, n + 1);
        assert_eq!(signaled_key(&events[n]), i);
        assert_eq!(registered(&event_loop), base + 60 - n - 1);
    }
}
