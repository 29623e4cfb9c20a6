//! Kernel tests of the calloop [`FenceSource`] with every kind of kernel fence, in the guest of
//! `cargo xtask vm-test`:
//!
//! * a **sync_file** from a vgem fence (`SyncFile::into_fence`);
//! * a **dma-buf readiness** fence (`DmaBuf::readiness`) of a vgem BO with a pending write fence;
//! * a **syncobj timeline point** on virtio-gpu (`SyncobjPoint::fence`: its poll fd is a
//!   `DRM_IOCTL_SYNCOBJ_EVENTFD` eventfd);
//! * a **KMS out-fence** (`OUT_FENCE_PTR`) of a flip on virtio-gpu held by a pending vgem in-fence.
//!
//! Each is registered in the loop with its own fd (no core eventfd); the tests check the three
//! wait modes, the timeout, the already-signalled path (no source, no fd, and — measured with
//! `strace -c -f` — one `SYNC_IOC_FILE_INFO` for a sync_file, one query ioctl for a syncobj point), and that
//! removing the source empties the loop's epoll set (`/proc/self/fdinfo` of the epoll fd).
//!
//! Every test holds the binary's lock through [`Kms::setup`]: one display, shared counters.
//! vgem signals a forgotten fence by itself after ~10 s; every test here is far shorter.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calloop::EventLoop;
use fence_bridge::{
    stats, Access, DmaBuf, DrmDevice, Fence, FenceEvent, FenceSource, FenceStatus, Ktime, OutFence,
    Syncobj, WaitMode,
};
use support::kms::{Kms, FLIP};
use support::vgem::{open_fd_count, PendingFence, Vgem};
use support::{readable, virtio_gpu};

/// TCG is slow: how long anything that should happen "now" may take.
const GENEROUS: Duration = Duration::from_secs(5);

/// The kinds of kernel fence, the keys of the sources under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    SyncFile,
    DmaBuf,
    Syncobj,
    KmsOut,
}

const KINDS: [Kind; 4] = [Kind::SyncFile, Kind::DmaBuf, Kind::Syncobj, Kind::KmsOut];

type Events = Vec<FenceEvent<Kind>>;

/// The devices every test needs; `None` (after a SKIP line) without the guest.
fn devices() -> Option<(Kms, Vgem, DrmDevice)> {
    let kms = Kms::setup()?;
    let vgem = Vgem::open().expect("vgem is part of the guest");
    let render = virtio_gpu("renderD").expect("virtio_gpu render node");
    Some((kms, vgem, render))
}

/// One pending fence of each kind, and how to signal each.
struct Rig<'a> {
    kms: &'a Kms,
    sync_file: PendingFence<'a>,
    dma_buf: PendingFence<'a>,
    timeline: Syncobj,
    /// The in-fence holding the flip whose out-fence is `Kind::KmsOut`.
    acquire: PendingFence<'a>,
    flip_user_data: u64,
    flip_done: Option<Ktime>,
    signalled: Vec<Kind>,
}

impl<'a> Rig<'a> {
    /// The rig and its four pending fences, in [`KINDS`] order. Flips to `fb` (0 or 1; the
    /// modeset shows fb 0).
    fn new(
        kms: &'a Kms,
        vgem: &'a Vgem,
        render: &DrmDevice,
        fb: usize,
    ) -> (Self, Vec<(Kind, Fence)>) {
        let sync_file = PendingFence::new(vgem);
        let dma_buf = PendingFence::new(vgem);
        let timeline = Syncobj::create(render).expect("DRM_IOCTL_SYNCOBJ_CREATE");
        let acquire = PendingFence::new(vgem);
        let flip_user_data = 0x50_0000 | fb as u64;
        let mut out = OutFence::new();
        let mut commit = kms.flip_request(fb);
        commit
            .set_in_fence(kms.plane, acquire.sync_file.as_fd())
            .unwrap();
        commit.set_out_fence(kms.crtc, &mut out).unwrap();
        commit
            .commit(FLIP, flip_user_data)
            .expect("a flip held by a pending in-fence");
        let fences = vec![
            (
                Kind::SyncFile,
                sync_file.sync_file.try_clone().expect("dup").into_fence(),
            ),
            (
                Kind::DmaBuf,
                DmaBuf::new(dma_buf.dmabuf())
                    .readiness(Access::Read)
                    .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE"),
            ),
            (Kind::Syncobj, timeline.point(1).fence()),
            (
                Kind::KmsOut,
                out.take_fence().expect("OUT_FENCE_PTR filled"),
            ),
        ];
        for (kind, fence) in &fences {
            assert!(!fence.is_signaled(), "{kind:?} starts pending");
        }
        let rig = Rig {
            kms,
            sync_file,
            dma_buf,
            timeline,
            acquire,
            flip_user_data,
            flip_done: None,
            signalled: Vec::new(),
        };
        (rig, fences)
    }

    fn signal(&mut self, kind: Kind) {
        assert!(!self.signalled.contains(&kind), "{kind:?} signalled twice");
        self.signalled.push(kind);
        match kind {
            Kind::SyncFile => self.sync_file.signal(),
            Kind::DmaBuf => self.dma_buf.signal(),
            Kind::Syncobj => self.timeline.signal_point(1).expect("TIMELINE_SIGNAL"),
            Kind::KmsOut => self.acquire.signal(),
        }
    }

    /// The flip's completion: its event's timestamp (read once).
    fn flip_timestamp(&mut self) -> Ktime {
        if let Some(ts) = self.flip_done {
            return ts;
        }
        let events = self.kms.wait_flip(GENEROUS);
        assert_eq!(events.len(), 1, "one flip event: {events:?}");
        assert_eq!(events[0].user_data, self.flip_user_data);
        *self.flip_done.insert(events[0].timestamp)
    }

    /// Signals what is still pending and waits for the flip, so that the next flip is not
    /// refused with `EBUSY`.
    fn finish(mut self) {
        for kind in KINDS {
            if !self.signalled.contains(&kind) {
                self.signal(kind);
            }
        }
        self.flip_timestamp();
    }
}

/// Fds registered in `event_loop`'s epoll set: the `tfd:` lines of its fdinfo.
fn registered(event_loop: &EventLoop<'_, Events>) -> usize {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", event_loop.as_raw_fd()));
    let fdinfo = fdinfo.expect("fdinfo of the epoll fd");
    fdinfo.lines().filter(|l| l.starts_with("tfd:")).count()
}

fn insert(
    event_loop: &EventLoop<'static, Events>,
    source: FenceSource<Kind>,
) -> calloop::RegistrationToken {
    event_loop
        .handle()
        .insert_source(source, |event, _, events: &mut Events| events.push(event))
        .map_err(|e| e.error)
        .expect("insert the FenceSource")
}

/// Dispatches until `events` holds `n` events; fails after [`GENEROUS`].
fn dispatch_until(event_loop: &mut EventLoop<'static, Events>, events: &mut Events, n: usize) {
    let deadline = Instant::now() + GENEROUS;
    while events.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events: {events:?}",
            events.len()
        );
        event_loop
            .dispatch(Duration::from_millis(100), events)
            .expect("dispatch");
    }
    assert_eq!(events.len(), n, "{events:?}");
}

/// Dispatches for `d` and asserts nothing was delivered.
fn dispatch_nothing(event_loop: &mut EventLoop<'static, Events>, d: Duration) {
    let mut events = Events::new();
    event_loop.dispatch(d, &mut events).expect("dispatch");
    assert!(events.is_empty(), "{events:?}");
}

#[track_caller]
fn signaled(event: &FenceEvent<Kind>) -> (Kind, FenceStatus, Ktime) {
    match event {
        FenceEvent::Signaled(s) => (s.key, s.status, s.timestamp),
        other => panic!("expected Signaled, got {other:?}"),
    }
}

#[test]
fn each_mode_fires_for_every_kind_of_kernel_fence() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    let (mut rig, fences) = Rig::new(&kms, &vgem, &render, 1);
    let mut event_loop = EventLoop::<Events>::try_new().unwrap();
    let base = registered(&event_loop);
    let before = stats();
    let source = FenceSource::new(fences, WaitMode::Each).expect("all pending");
    insert(&event_loop, source);
    assert_eq!(registered(&event_loop), base + 4, "one fd per fence");
    assert_eq!(
        stats().since(&before).eventfds_created,
        0,
        "kernel fences are registered with their own fds"
    );
    dispatch_nothing(&mut event_loop, Duration::from_millis(100));

    let mut events = Events::new();
    let order = [Kind::Syncobj, Kind::KmsOut, Kind::SyncFile, Kind::DmaBuf];
    for (i, kind) in order.into_iter().enumerate() {
        let signalled_at = Ktime::now();
        rig.signal(kind);
        dispatch_until(&mut event_loop, &mut events, i + 1);
        let (key, status, timestamp) = signaled(&events[i]);
        assert_eq!((key, status), (kind, FenceStatus::Signaled));
        assert!(
            timestamp >= signalled_at,
            "{kind:?}: {timestamp:?} < {signalled_at:?}"
        );
        assert!(timestamp <= Ktime::now());
        assert_eq!(
            registered(&event_loop),
            base + 3 - i,
            "{kind:?} unregistered"
        );
        if kind == Kind::KmsOut {
            // The out-fence carries the flip's own timestamp (the event has µs resolution).
            let flip = rig.flip_timestamp().as_nanos();
            let diff = timestamp.as_nanos() - flip;
            assert!(
                (0..1_000).contains(&diff),
                "out-fence {timestamp:?} vs flip {flip}"
            );
        }
    }
    assert_eq!(registered(&event_loop), base);
    dispatch_nothing(&mut event_loop, Duration::from_millis(50));
    assert_eq!(stats().since(&before).eventfds_created, 0);
    rig.finish();
}

#[test]
fn any_mode_fires_once_for_whichever_kind_signals_first() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    let mut event_loop = EventLoop::<Events>::try_new().unwrap();
    let base = registered(&event_loop);
    for (n, first) in KINDS.into_iter().enumerate() {
        let (mut rig, fences) = Rig::new(&kms, &vgem, &render, (n + 1) % 2);
        insert(
            &event_loop,
            FenceSource::new(fences, WaitMode::Any).expect("all pending"),
        );
        assert_eq!(registered(&event_loop), base + 4);
        rig.signal(first);
        let mut events = Events::new();
        dispatch_until(&mut event_loop, &mut events, 1);
        let (key, status, _) = signaled(&events[0]);
        assert_eq!((key, status), (first, FenceStatus::Signaled));
        assert_eq!(
            registered(&event_loop),
            base,
            "{first:?}: every fd unregistered"
        );
        // The others signal later: the source is gone, nothing more is delivered.
        rig.finish();
        dispatch_nothing(&mut event_loop, Duration::from_millis(50));
    }
}

#[test]
fn all_mode_fires_once_with_every_kind() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    let (mut rig, fences) = Rig::new(&kms, &vgem, &render, 1);
    let mut event_loop = EventLoop::<Events>::try_new().unwrap();
    let base = registered(&event_loop);
    insert(
        &event_loop,
        FenceSource::new(fences, WaitMode::All).expect("all pending"),
    );
    let order = [Kind::DmaBuf, Kind::KmsOut, Kind::Syncobj, Kind::SyncFile];
    let mut events = Events::new();
    for (i, kind) in order.into_iter().enumerate() {
        rig.signal(kind);
        // Each is taken off the epoll set as it signals; the event comes with the last.
        let deadline = Instant::now() + GENEROUS;
        while registered(&event_loop) > base + 3 - i {
            assert!(Instant::now() < deadline, "{kind:?} not seen");
            event_loop
                .dispatch(Duration::from_millis(50), &mut events)
                .unwrap();
        }
        let expected = usize::from(i == order.len() - 1);
        dispatch_until(&mut event_loop, &mut events, expected);
    }
    let FenceEvent::AllSignaled(all) = &events[0] else {
        panic!("expected AllSignaled, got {events:?}")
    };
    let keys: Vec<Kind> = all.iter().map(|s| s.key).collect();
    assert_eq!(keys, order, "by signal timestamp");
    assert!(all.iter().all(|s| s.status == FenceStatus::Signaled));
    assert!(all.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    assert_eq!(registered(&event_loop), base);
    rig.finish();
}

#[test]
fn a_timeout_reports_the_still_pending_kernel_fences() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    let (mut rig, fences) = Rig::new(&kms, &vgem, &render, 1);
    let mut event_loop = EventLoop::<Events>::try_new().unwrap();
    let base = registered(&event_loop);
    let source = FenceSource::new(fences, WaitMode::Each)
        .expect("all pending")
        .with_timeout(Duration::from_secs(3));
    insert(&event_loop, source);
    rig.signal(Kind::DmaBuf);
    rig.signal(Kind::Syncobj);
    let mut events = Events::new();
    dispatch_until(&mut event_loop, &mut events, 2);
    let mut first: Vec<Kind> = events.iter().map(|e| signaled(e).0).collect();
    first.sort();
    assert_eq!(first, [Kind::DmaBuf, Kind::Syncobj]);
    assert_eq!(registered(&event_loop), base + 2);
    dispatch_until(&mut event_loop, &mut events, 3);
    assert_eq!(
        events[2],
        FenceEvent::TimedOut {
            pending: vec![Kind::SyncFile, Kind::KmsOut]
        },
        "the pending ones, in the order given"
    );
    assert_eq!(registered(&event_loop), base);
    rig.finish();
    dispatch_nothing(&mut event_loop, Duration::from_millis(50));
}

#[test]
fn removing_the_source_unregisters_every_fd() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    let (mut rig, fences) = Rig::new(&kms, &vgem, &render, 1);
    let mut event_loop = EventLoop::<Events>::try_new().unwrap();
    let base = registered(&event_loop);
    let token = insert(
        &event_loop,
        FenceSource::new(fences.clone(), WaitMode::Each).unwrap(),
    );
    assert_eq!(registered(&event_loop), base + 4);
    event_loop.handle().remove(token); // drops the source
    assert_eq!(registered(&event_loop), base, "every fd left the epoll set");
    for kind in KINDS {
        rig.signal(kind);
    }
    dispatch_nothing(&mut event_loop, Duration::from_millis(200));
    // The fences themselves still signal.
    for (kind, fence) in &fences {
        fence
            .wait_timeout(Some(GENEROUS))
            .unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
    }
    rig.finish();
}

/// Already-signalled fences of each kind, fresh (nothing observed them yet).
fn signalled_fences(kms: &Kms, vgem: &Vgem, render: &DrmDevice) -> Vec<(Kind, Fence)> {
    let mut sync_file = PendingFence::new(vgem);
    sync_file.signal();
    let mut dma_buf = PendingFence::new(vgem);
    dma_buf.signal();
    assert!(readable(sync_file.sync_file.as_fd(), GENEROUS));
    assert!(readable(dma_buf.sync_file.as_fd(), GENEROUS));
    let timeline = Syncobj::create(render).unwrap();
    timeline.signal_point(1).unwrap();
    let mut out = OutFence::new();
    let mut commit = kms.flip_request(1);
    commit.set_out_fence(kms.crtc, &mut out).unwrap();
    commit.commit(FLIP, 1).expect("flip");
    assert_eq!(kms.wait_flip(GENEROUS).len(), 1);
    vec![
        (
            Kind::SyncFile,
            sync_file.sync_file.try_clone().unwrap().into_fence(),
        ),
        (
            Kind::DmaBuf,
            DmaBuf::new(dma_buf.dmabuf())
                .readiness(Access::Read)
                .unwrap(),
        ),
        (Kind::Syncobj, timeline.point(1).fence()),
        (Kind::KmsOut, out.take_fence().expect("out-fence")),
    ]
}

#[test]
fn already_signalled_kernel_fences_are_ready_without_an_fd() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    for mode in [WaitMode::Each, WaitMode::Any, WaitMode::All] {
        let fences = signalled_fences(&kms, &vgem, &render);
        let (fds, before) = (open_fd_count(), stats());
        let ready = FenceSource::new(fences, mode).expect_err("nothing to wait for");
        assert!(open_fd_count() <= fds, "{mode:?}: no fd created");
        let delta = stats().since(&before);
        assert_eq!(delta.eventfds_created, 0, "{mode:?}: no eventfd");
        assert_eq!(delta.signaling_enabled, 0, "{mode:?}: nothing armed");
        let keys: Vec<Kind> = ready.signaled.iter().map(|s| s.key).collect();
        let expected: &[Kind] = if mode == WaitMode::Any {
            &KINDS[..1]
        } else {
            &KINDS
        };
        assert_eq!(keys, expected, "{mode:?}");
        assert!(ready
            .signaled
            .iter()
            .all(|s| s.status == FenceStatus::Signaled));
    }
    // One kind at a time, each in a loop: no registration either.
    let mut event_loop = EventLoop::<Events>::try_new().unwrap();
    let base = registered(&event_loop);
    for (kind, fence) in signalled_fences(&kms, &vgem, &render) {
        let ready = FenceSource::new([(kind, fence)], WaitMode::Each).expect_err("ready");
        assert_eq!(ready.signaled.len(), 1, "{kind:?}");
        assert_eq!(registered(&event_loop), base);
    }
    dispatch_nothing(&mut event_loop, Duration::ZERO);
}

/// Syscalls of the calling process while `f` runs, from `strace -c -f` attached to it (only
/// `poll`, `ppoll`, `ioctl`, `eventfd2`, `epoll_ctl`); `None` if strace cannot run here.
fn count_syscalls(f: impl FnOnce()) -> Option<BTreeMap<String, u64>> {
    let mut strace = Command::new("strace")
        .args([
            "-c",
            "-f",
            "-e",
            "trace=poll,ppoll,ioctl,eventfd2,epoll_ctl",
            "-p",
        ])
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Attached once this thread has a tracer (strace seizes every thread with -f).
    let deadline = Instant::now() + GENEROUS;
    let traced = || {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
    };
    while !traced() {
        if Instant::now() > deadline || strace.try_wait().ok().flatten().is_some() {
            let _ = strace.kill();
            let _ = strace.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f();
    let pid = rustix::process::Pid::from_raw(strace.id() as i32).expect("strace pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT strace");
    let mut report = String::new();
    strace
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    strace.wait().expect("strace exit");
    // `% time  seconds  usecs/call  calls  [errors]  syscall` rows.
    let counts = report
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            let calls = cols.get(3)?.parse().ok()?;
            (cols.len() >= 5 && name != "total").then(|| (name.to_owned(), calls))
        })
        .collect();
    Some(counts)
}

/// The already-signalled path costs one `poll()` for a sync_file (plus, once, the kernel's
/// signal timestamp: `SYNC_IOC_FILE_INFO`) and one `DRM_IOCTL_SYNCOBJ_QUERY` for a syncobj
/// point; never an eventfd or an epoll registration.
#[test]
fn already_signalled_costs_one_ioctl() {
    let Some((kms, vgem, render)) = devices() else {
        return;
    };
    let fences = signalled_fences(&kms, &vgem, &render);
    for (kind, fence) in fences
        .into_iter()
        .filter(|(k, _)| matches!(k, Kind::SyncFile | Kind::Syncobj))
    {
        // The result is dropped after the measurement (the last syncobj reference destroys
        // the handle: an ioctl that is not part of the check).
        let mut ready = None;
        let Some(counts) = count_syscalls(|| {
            ready = Some(FenceSource::new([(kind, fence)], WaitMode::Each));
        }) else {
            // The VM tier installs strace: in the guest a missing measurement is a failure.
            assert_ne!(
                std::env::var("FENCEGATE_REQUIRE_KERNEL").as_deref(),
                Ok("1"),
                "strace cannot attach: the syscall counts were not measured"
            );
            eprintln!("strace cannot attach here: syscall counts not measured");
            return;
        };
        assert!(ready.expect("ran").is_err(), "{kind:?}: Ready");
        eprintln!("{kind:?}: FenceSource::new on a signalled fence: {counts:?}");
        let get = |name: &str| counts.get(name).copied().unwrap_or(0);
        let polls = get("poll") + get("ppoll");
        assert_eq!(
            get("eventfd2") + get("epoll_ctl"),
            0,
            "{kind:?}: {counts:?}"
        );
        // A syncobj point: one query ioctl. A sync_file: one SYNC_IOC_FILE_INFO, which gives
        // the status and the kernel's timestamp together.
        assert_eq!(
            (polls, get("ioctl")),
            (0, 1),
            "{kind:?}: one ioctl: {counts:?}"
        );
    }
}
