//! `cargo xtask bench fences`: what waiting on fences through fence-bridge costs, next to the
//! raw kernel floor, measured in the same run.
//!
//! A plain binary (no bench framework) that prints one table per tier:
//!
//! * `--host` (default): rows that need no device —
//!   - **raw floor**: a bare eventfd write on one thread waking an `epoll_wait` on another (the
//!     shape of the library path, minus the library);
//!   - **calloop floor**: the same write waking a calloop `Generic` (calloop and its `polling`
//!     backend, no fence-bridge);
//!   - **FenceSource, SwTimeline**: signal-to-callback latency of a software fence advanced from
//!     another thread, through a calloop loop blocked in `dispatch`;
//!   - **already signalled**: `FenceSource::new` on a signalled fence (→ `Ready`): ns per call,
//!     eventfds and fds created (must be 0);
//!   - **wait-any over N pending** (N = 1, 100, 10,000): time from signalling one random fence to
//!     the callback, next to the raw floor with N eventfds in one epoll set (the library watches
//!     two or more software fences through one shared eventfd and a callback on each).
//! * `--kernel`: the same latency for a **sync_file** (a vgem fence exported from a dma-buf) and
//!   a **DRM syncobj** timeline point (virtio_gpu), each next to its own raw floor (epoll on the
//!   sync_file / on a `DRM_IOCTL_SYNCOBJ_EVENTFD` eventfd), and the already-signalled cost of
//!   both. Below each, a reference row with no `Fence` and no `FenceSource`: the raw wakeup
//!   followed by the one ioctl any waiter needs to learn what the library's event carries
//!   (`SYNC_IOC_FILE_INFO`: status and timestamp; `DRM_IOCTL_SYNCOBJ_QUERY`: the point is
//!   reached), timed in the raw samples themselves, so the table says how much of the gap is
//!   that ioctl and how much the library. Needs the devices: run in the guest (`cargo xtask
//!   bench fences` does).
//! * `--probe KIND N`: only N already-signalled checks of KIND (`sw`, `sync_file`, `syncobj`),
//!   for counting syscalls with `perf stat -e raw_syscalls:sys_enter` from outside.
//!
//! Every latency sample has the same protocol: the waiting thread arms its wait and hands a job
//! to the signaller thread; the signaller sleeps 200 µs (so the waiter is asleep in
//! `epoll_wait`), reads the clock, signals; the waiter reads the clock when woken (for the
//! library: inside the `FenceSource` callback). Raw and library samples alternate, so both see
//! the same machine. `--iters N` scales the sample counts.
//!
//! In the first host table every waiter, raw or library, also works for the same span between
//! the wakeup that ended its previous sample and its next wait (its own setup, then a spin to the
//! end of the span), as an event loop does between two waits. Under EEVDF a woken thread
//! preempts the running one only if it is owed CPU time, and a thread that ran longer before it
//! slept is owed less: when only the raw waiter skipped its setup, its wakeups preempted the signaller far more often (3 µs of
//! extra work before the raw wait took that from 59% of samples to 15% on the build machine), so
//! the rows compared the scheduler's verdicts rather than the wake paths.
//!
//! Where the woken thread runs decides much of a sample, so the notes say how often the waiter
//! ran before the signaller's job returned (it preempted the signaller) and how often it woke on
//! the signaller's CPU (waking another CPU means an IPI; in a VM, to a halted vCPU). The host
//! latency rows are then repeated with the loop thread `SCHED_FIFO`, pinned with the signaller to
//! one CPU, where every wakeup preempts the signaller at once: what the code costs, without the
//! scheduler's choices (needs CAP_SYS_NICE; skipped with a line saying so otherwise).

use std::cell::Cell;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use calloop::EventLoop;
use fence_bridge::{stats, Fence, FenceContext, FenceSource, SwTimeline, WaitMode};
use rustix::event::epoll;
use rustix::event::{eventfd, EventfdFlags};
use rustix::thread::CpuSet;

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

const PRE_SLEEP: Duration = Duration::from_micros(200);

// --- measurement plumbing -----------------------------------------------------------------------

type Job = Box<dyn FnOnce() + Send>;

/// Wakeups seen by the waiting thread, counted by [`woke`].
static WAKEUPS: AtomicU64 = AtomicU64::new(0);
/// The CPU the waiting thread last woke on.
static WAITER_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

thread_local! {
    /// When this (waiting) thread last woke, for [`work_span`].
    static LAST_WAKE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Samples whose setup alone took longer than their row's span.
    static OVER_SPAN: Cell<usize> = const { Cell::new(0) };
}

/// The waiter's clock read on waking; also counts the wakeup and notes the CPU, so that the
/// signaller can tell whether the waiter ran before its job returned, and where.
fn woke() -> Instant {
    let t = Instant::now();
    WAKEUPS.fetch_add(1, Ordering::Relaxed);
    WAITER_CPU.store(rustix::thread::sched_getcpu(), Ordering::Relaxed);
    LAST_WAKE.set(Some(t));
    t
}

/// The waiter's work between two waits, the same for every sample of a row: spins until `span`
/// has passed since its last wakeup (see the module docs for why). Call right before handing
/// the signaller its job; a sample whose setup already took longer is counted in [`OVER_SPAN`].
fn work_span(span: Duration) {
    let Some(end) = LAST_WAKE
        .get()
        .filter(|_| !span.is_zero())
        .map(|t| t + span)
    else {
        return;
    };
    if Instant::now() > end {
        OVER_SPAN.set(OVER_SPAN.get() + 1);
    }
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Starts a row's first span now (the waiter may have done anything since its last wakeup).
fn start_spans() {
    LAST_WAKE.set(Some(Instant::now()));
    OVER_SPAN.set(0);
}

/// The waiter's work span of the single-fence rows: far above their setup (a few µs).
const SPAN: Duration = Duration::from_micros(50);

/// The other thread: sleeps, reads the clock, runs the signalling job, reports when it started
/// and whether the waiter had already run by the time the job returned.
struct Signaller {
    jobs: Sender<Job>,
    started: Receiver<(Instant, bool, usize)>,
    /// Whether the waiter of the last sample ran before the signalling job returned.
    waiter_first: Cell<bool>,
    /// Whether the waiter of the last sample woke on the signaller's CPU.
    same_cpu: Cell<bool>,
}

impl Signaller {
    fn spawn() -> Signaller {
        let (jobs, job_rx) = channel::<Job>();
        let (started_tx, started) = channel();
        thread::Builder::new()
            .name("signaller".into())
            .spawn(move || {
                for job in job_rx {
                    thread::sleep(PRE_SLEEP);
                    let wakeups = WAKEUPS.load(Ordering::Relaxed);
                    let cpu = rustix::thread::sched_getcpu();
                    let t0 = Instant::now();
                    job();
                    let waiter_first = WAKEUPS.load(Ordering::Relaxed) != wakeups;
                    if started_tx.send((t0, waiter_first, cpu)).is_err() {
                        break;
                    }
                }
            })
            .unwrap();
        Signaller {
            jobs,
            started,
            waiter_first: Cell::new(false),
            same_cpu: Cell::new(false),
        }
    }

    fn fire(&self, job: impl FnOnce() + Send + 'static) {
        self.jobs.send(Box::new(job)).unwrap();
    }

    /// When the last job started signalling; call after waking.
    fn t0(&self) -> Instant {
        let (t0, waiter_first, cpu) = self.started.recv().unwrap();
        self.waiter_first.set(waiter_first);
        self.same_cpu.set(WAITER_CPU.load(Ordering::Relaxed) == cpu);
        t0
    }

    /// Whether the last sample's waiter ran before the signalling job returned: on one CPU, that
    /// the wakeup preempted the signaller at once instead of waiting for it to block.
    fn waiter_ran_first(&self) -> bool {
        self.waiter_first.get()
    }

    /// Whether the last sample's waiter woke on the CPU the signaller ran on. Waking another,
    /// idle CPU is the slow case in a VM (an IPI to a halted vCPU).
    fn woke_on_same_cpu(&self) -> bool {
        self.same_cpu.get()
    }
}

/// How the wakeups of a set of samples went, for the note column.
#[derive(Default)]
struct Handoffs {
    samples: usize,
    waiter_first: usize,
    same_cpu: usize,
    over_span: usize,
}

impl Handoffs {
    /// Counts the sample `sig` just finished (on the waiting thread).
    fn count(&mut self, sig: &Signaller) {
        self.samples += 1;
        self.waiter_first += usize::from(sig.waiter_ran_first());
        self.same_cpu += usize::from(sig.woke_on_same_cpu());
        self.over_span += OVER_SPAN.replace(0);
    }
}

impl fmt::Display for Handoffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: usize| n * 100 / self.samples.max(1);
        write!(
            f,
            "waiter ran first {}%, same CPU {}%",
            pct(self.waiter_first),
            pct(self.same_cpu)
        )?;
        if self.over_span > 0 {
            write!(f, ", {} setups longer than the span", self.over_span)?;
        }
        Ok(())
    }
}

/// An epoll set with `n` eventfds: the raw floor.
struct RawEpoll {
    epoll: OwnedFd,
    fds: Vec<Arc<OwnedFd>>,
}

impl RawEpoll {
    fn new(n: usize) -> RawEpoll {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let fds: Vec<Arc<OwnedFd>> = (0..n)
            .map(|i| {
                let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
                epoll::add(
                    &epoll,
                    &fd,
                    epoll::EventData::new_u64(i as u64),
                    epoll::EventFlags::IN,
                )
                .unwrap();
                Arc::new(fd)
            })
            .collect();
        RawEpoll { epoll, fds }
    }

    /// One sample: the signaller writes eventfd `i`, we wake in epoll_wait.
    fn sample(&self, sig: &Signaller, i: usize, span: Duration) -> Duration {
        let fd = self.fds[i].clone();
        work_span(span);
        sig.fire(move || {
            rustix::io::write(&*fd, &1u64.to_ne_bytes()).unwrap();
        });
        let t1 = wait_epoll(&self.epoll);
        let mut buf = [0u8; 8];
        rustix::io::read(&*self.fds[i], &mut buf).unwrap(); // back to not readable
        t1 - sig.t0()
    }
}

/// Blocks in epoll_wait until something is readable; returns when it woke.
fn wait_epoll(epoll: impl AsFd) -> Instant {
    let mut events = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }; 4];
    loop {
        match epoll::wait(epoll.as_fd(), &mut events[..], None) {
            Ok(n) if n > 0 => return woke(),
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}

/// One library sample: `fences` in a one-shot `FenceSource` (Any) on `event_loop`; the
/// signaller runs `signal`; returns signal-to-callback time.
fn library_sample(
    event_loop: &mut EventLoop<'static, Option<Instant>>,
    sig: &Signaller,
    fences: Vec<Fence>,
    span: Duration,
    signal: impl FnOnce() + Send + 'static,
) -> Duration {
    let source =
        FenceSource::new(fences.into_iter().enumerate(), WaitMode::Any).expect("pending fences");
    event_loop
        .handle()
        .insert_source(source, |_event, _, woken: &mut Option<Instant>| {
            *woken = Some(woke());
        })
        .map_err(|e| e.error)
        .unwrap();
    let mut woke = None;
    work_span(span);
    sig.fire(signal);
    while woke.is_none() {
        event_loop.dispatch(None, &mut woke).unwrap();
    }
    woke.unwrap() - sig.t0()
}

/// One sample of calloop alone: a one-shot `Generic` on a fresh eventfd, written by the
/// signaller (what any calloop source pays before fence-bridge runs).
fn calloop_sample(
    event_loop: &mut EventLoop<'static, Option<Instant>>,
    sig: &Signaller,
    span: Duration,
) -> Duration {
    use calloop::generic::Generic;
    use calloop::{Interest, Mode, PostAction};
    let fd = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap());
    event_loop
        .handle()
        .insert_source(
            Generic::new(fd.clone(), Interest::READ, Mode::Level),
            |_, _, woken: &mut Option<Instant>| {
                *woken = Some(woke());
                Ok(PostAction::Remove)
            },
        )
        .map_err(|e| e.error)
        .unwrap();
    let mut woke = None;
    work_span(span);
    sig.fire(move || {
        rustix::io::write(&*fd, &1u64.to_ne_bytes()).unwrap();
    });
    while woke.is_none() {
        event_loop.dispatch(None, &mut woke).unwrap();
    }
    woke.unwrap() - sig.t0()
}

/// calloop's loop side alone: a one-shot `Generic` on an eventfd that is already readable;
/// `dispatch(0)` to its callback, on one thread.
fn calloop_loop_side(event_loop: &mut EventLoop<'static, Option<Instant>>) -> Duration {
    use calloop::generic::Generic;
    use calloop::{Interest, Mode, PostAction};
    let fd = eventfd(1, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
    event_loop
        .handle()
        .insert_source(
            Generic::new(fd, Interest::READ, Mode::Level),
            |_, _, woke: &mut Option<Instant>| {
                *woke = Some(Instant::now());
                Ok(PostAction::Remove)
            },
        )
        .map_err(|e| e.error)
        .unwrap();
    let mut woke = None;
    let t = Instant::now();
    event_loop.dispatch(Duration::ZERO, &mut woke).unwrap();
    woke.expect("ready") - t
}

/// A tiny deterministic PRNG (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

// --- the table ----------------------------------------------------------------------------------

#[derive(Clone)]
struct Stat {
    median: f64,
    p99: f64,
    n: usize,
}

fn stat(samples: &mut [f64]) -> Stat {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stat {
        median: at(0.5),
        p99: at(0.99),
        n: samples.len(),
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn fmt_ns(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

struct Row {
    name: String,
    lib: Stat,
    raw: Option<Stat>,
    note: String,
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<52} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7}  note",
        "row", "n", "median", "p99", "raw med", "raw p99", "ratio"
    );
    println!("{}", "-".repeat(118));
    for r in rows {
        let (raw_med, raw_p99, ratio) = match &r.raw {
            Some(raw) => (
                fmt_ns(raw.median),
                fmt_ns(raw.p99),
                format!("{:.2}x", r.lib.median / raw.median),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<52} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7}  {}",
            r.name,
            r.lib.n,
            fmt_ns(r.lib.median),
            fmt_ns(r.lib.p99),
            raw_med,
            raw_p99,
            ratio,
            r.note
        );
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// ns per call of `FenceSource::new` on an already-signalled fence, over batches; plus how many
/// eventfds and fds that created in total.
fn already_signaled_row(name: &str, fence: &Fence, batches: usize, syscalls: &str) -> Row {
    const BATCH: usize = 200;
    let before = stats();
    let fds_before = open_fds();
    let mut samples = Vec::with_capacity(batches);
    for _ in 0..batches {
        let t = Instant::now();
        for i in 0..BATCH {
            let ready = FenceSource::new([(i, fence.clone())], WaitMode::Each).unwrap_err();
            std::hint::black_box(ready);
        }
        samples.push(ns(t.elapsed()) / BATCH as f64);
    }
    let eventfds = stats().since(&before).eventfds_created;
    let fds = open_fds() as i64 - fds_before as i64;
    Row {
        name: name.into(),
        lib: stat(&mut samples),
        raw: None,
        note: format!("eventfds +{eventfds}, fds +{fds}; syscalls: {syscalls}"),
    }
}

/// How the two threads of a table are scheduled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheduling {
    /// As the scheduler places them; every waiter works the same span between its waits.
    AsScheduled,
    /// The loop thread `SCHED_FIFO` on the signaller's CPU ([`LoopThreadFifo`]): every wakeup
    /// preempts, so there is no verdict to even out and no span.
    LoopFifo,
}

impl Scheduling {
    /// The waiter's work span of a row whose span as scheduled is `as_scheduled`.
    fn span(self, as_scheduled: Duration) -> Duration {
        match self {
            Scheduling::AsScheduled => as_scheduled,
            Scheduling::LoopFifo => Duration::ZERO,
        }
    }
}

/// Signal-to-callback rows for one scheduling set-up: the raw floor, calloop's floor and a
/// SwTimeline fence through `FenceSource`, sampled in turn, each waiter working for the
/// set-up's span between its waits ([`work_span`]). Each note says how often the waiter ran
/// before the signaller's job returned (on one CPU: the wakeup preempted the signaller) and how
/// often it woke on the signaller's CPU.
fn handoff_rows(
    sig: &Signaller,
    event_loop: &mut EventLoop<'static, Option<Instant>>,
    raw: &RawEpoll,
    timeline: &Arc<SwTimeline>,
    iters: usize,
    scheduling: Scheduling,
) -> Vec<Row> {
    let span = scheduling.span(SPAN);
    let names = [
        match scheduling {
            Scheduling::AsScheduled => "raw floor: eventfd write -> epoll_wait (other thread)",
            Scheduling::LoopFifo => "raw floor: eventfd write -> epoll_wait",
        },
        "calloop floor: Generic<eventfd>, write -> callback",
        "FenceSource: SwTimeline fence, signal -> callback",
    ];
    let (mut raw_s, mut calloop_s, mut lib_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut handoffs: [Handoffs; 3] = Default::default();
    start_spans();
    for _ in 0..iters {
        raw_s.push(ns(raw.sample(sig, 0, span)));
        handoffs[0].count(sig);
        calloop_s.push(ns(calloop_sample(event_loop, sig, span)));
        handoffs[1].count(sig);
        let fence = timeline.create_fence(timeline.value() + 1);
        let t = timeline.clone();
        lib_s.push(ns(library_sample(
            event_loop,
            sig,
            vec![fence],
            span,
            move || {
                t.advance(1);
            },
        )));
        handoffs[2].count(sig);
    }
    let first = |kind: usize| handoffs[kind].to_string();
    let raw_stat = stat(&mut raw_s);
    let calloop_stat = stat(&mut calloop_s);
    let lib_stat = stat(&mut lib_s);
    let vs_calloop = lib_stat.median / calloop_stat.median;
    vec![
        Row {
            name: names[0].into(),
            lib: stat(&mut raw_s),
            raw: None,
            note: format!("the same wake shape, no library; {}", first(0)),
        },
        Row {
            name: names[1].into(),
            lib: calloop_stat,
            raw: Some(stat(&mut raw_s)),
            note: format!("calloop + polling, no library; {}", first(1)),
        },
        Row {
            name: names[2].into(),
            lib: lib_stat,
            raw: Some(raw_stat),
            note: format!(
                "target <= 1.25x raw; {vs_calloop:.2}x the calloop floor; {}",
                first(2)
            ),
        },
    ]
}

/// The calling (loop) thread at SCHED_FIFO, pinned with the signaller to the CPU it runs on;
/// dropping it restores both threads' policy and CPUs. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO.
struct LoopThreadFifo<'a> {
    sig: &'a Signaller,
    cpus: CpuSet,
}

impl<'a> LoopThreadFifo<'a> {
    fn enter(sig: &'a Signaller) -> Result<LoopThreadFifo<'a>, String> {
        let cpus =
            rustix::thread::sched_getaffinity(None).map_err(|e| format!("getaffinity: {e}"))?;
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
            return Err(format!(
                "sched_setscheduler(SCHED_FIFO): {}",
                std::io::Error::last_os_error()
            ));
        }
        // From here on, dropping the guard (also on the error path) restores both threads.
        let guard = LoopThreadFifo { sig, cpus };
        let mut one = CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        rustix::thread::sched_setaffinity(None, &one).map_err(|e| format!("setaffinity: {e}"))?;
        sig.fire(move || rustix::thread::sched_setaffinity(None, &one).unwrap());
        sig.t0();
        Ok(guard)
    }
}

impl Drop for LoopThreadFifo<'_> {
    fn drop(&mut self) {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in `enter`.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        let _ = rustix::thread::sched_setaffinity(None, &self.cpus);
        let cpus = self.cpus;
        self.sig
            .fire(move || rustix::thread::sched_setaffinity(None, &cpus).unwrap());
        self.sig.t0();
    }
}

/// Wait-any over 1, 100 and 10,000 pending software fences: signal one at random, time to the
/// callback; next to the raw floor with as many eventfds in one epoll set.
fn wait_any_rows(
    sig: &Signaller,
    event_loop: &mut EventLoop<'static, Option<Instant>>,
    iters: usize,
    scheduling: Scheduling,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // Each span covers the row's setup: making n fences, the source, dropping the last sample's.
    for (n, samples, span) in [
        (1usize, iters / 2, SPAN),
        (100, iters / 4, Duration::from_micros(200)),
        (10_000, (iters / 10).max(10), Duration::from_millis(10)),
    ] {
        let span = scheduling.span(span);
        // Raw and library samples alternate (the library's software fences share one eventfd,
        // so both fit under the fd limit together).
        let raw = RawEpoll::new(n);
        let mut raw_s = Vec::new();
        let ctx = FenceContext::new("any");
        let mut lib_s = Vec::new();
        let mut setup = Vec::new();
        let (mut handoffs, mut raw_handoffs) = (Handoffs::default(), Handoffs::default());
        start_spans();
        for _ in 0..samples.max(5) {
            raw_s.push(ns(raw.sample(sig, rng.below(n), span)));
            raw_handoffs.count(sig);
            let fences: Vec<Fence> = (0..n).map(|_| ctx.create_fence()).collect();
            let target = fences[rng.below(n)].clone();
            // The waiter keeps its fences (as a compositor does); released after the sample.
            let keep = fences.clone();
            let t = Instant::now();
            // Setup (poll fds or callbacks, and registration) is timed apart from the wake.
            let source = FenceSource::new(fences.into_iter().enumerate(), WaitMode::Any).unwrap();
            let token = event_loop
                .handle()
                .insert_source(source, |_, _, woken: &mut Option<Instant>| {
                    *woken = Some(woke())
                })
                .map_err(|e| e.error)
                .unwrap();
            setup.push(ns(t.elapsed()));
            let mut woke = None;
            work_span(span);
            sig.fire(move || {
                target.signal();
            });
            while woke.is_none() {
                event_loop.dispatch(None, &mut woke).unwrap();
            }
            lib_s.push(ns(woke.unwrap() - sig.t0()));
            handoffs.count(sig);
            // Already removed itself; harmless.
            event_loop.handle().remove(token);
            // Released unsignalled: the source let go of their poll fds, so nobody waits on them
            // and they go quietly (no EDEADLK, no warning).
            drop(keep);
        }
        // The loop side alone, on one thread: the fence is already signalled when `dispatch(0)`
        // runs, so this is calloop's dispatch plus FenceSource's lookup among n.
        let mut loop_s = Vec::new();
        for _ in 0..samples.max(5) {
            let fences: Vec<Fence> = (0..n).map(|_| ctx.create_fence()).collect();
            let target = fences[rng.below(n)].clone();
            let source = FenceSource::new(fences.into_iter().enumerate(), WaitMode::Any).unwrap();
            event_loop
                .handle()
                .insert_source(source, |_, _, woke: &mut Option<Instant>| {
                    *woke = Some(Instant::now())
                })
                .map_err(|e| e.error)
                .unwrap();
            target.signal();
            let mut woke = None;
            let t = Instant::now();
            event_loop.dispatch(Duration::ZERO, &mut woke).unwrap();
            loop_s.push(ns(woke.expect("ready") - t));
        }
        let setup = stat(&mut setup);
        let lib = stat(&mut lib_s);
        let loop_side = stat(&mut loop_s);
        rows.push(Row {
            name: format!("wait-any, {n} pending: signal one -> callback"),
            lib,
            raw: Some(stat(&mut raw_s)),
            note: format!(
                "{handoffs} (raw: {raw_handoffs}); setup (fds or callbacks + registration) median {}; loop side alone median {} p99 {}",
                fmt_ns(setup.median),
                fmt_ns(loop_side.median),
                fmt_ns(loop_side.p99)
            ),
        });
    }
    rows
}

// --- host rows ----------------------------------------------------------------------------------

fn host(iters: usize) {
    let sig = Signaller::spawn();
    let mut event_loop = EventLoop::<Option<Instant>>::try_new().unwrap();
    let mut rows = Vec::new();

    // Raw floor, calloop floor and SwTimeline through FenceSource, interleaved, as the scheduler
    // places the two threads, each waiter working for the same span between its waits (a second
    // table below takes the scheduler's choice away).
    let raw = RawEpoll::new(1);
    let timeline = Arc::new(SwTimeline::new("bench"));
    rows.extend(handoff_rows(
        &sig,
        &mut event_loop,
        &raw,
        &timeline,
        iters,
        Scheduling::AsScheduled,
    ));

    // Where the difference goes, on one thread (no wakeup): the signalling side (advance, which
    // writes the core's eventfd from a fence callback) against a bare eventfd write, and the loop
    // side (dispatch of a readable fd to the callback) against a zero-timeout epoll_wait.
    let (mut sig_raw, mut sig_lib, mut loop_raw, mut loop_lib) = (vec![], vec![], vec![], vec![]);
    let mut loop_calloop = vec![];
    for _ in 0..iters {
        let t = Instant::now();
        rustix::io::write(&*raw.fds[0], &1u64.to_ne_bytes()).unwrap();
        sig_raw.push(ns(t.elapsed()));
        let t = Instant::now();
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 4];
        epoll::wait(
            &raw.epoll,
            &mut events[..],
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )
        .unwrap();
        loop_raw.push(ns(t.elapsed()));
        rustix::io::read(&*raw.fds[0], &mut [0u8; 8]).unwrap();

        let fence = timeline.create_fence(timeline.value() + 1);
        let source = FenceSource::new([(0, fence)], WaitMode::Any).unwrap();
        event_loop
            .handle()
            .insert_source(source, |_, _, woke: &mut Option<Instant>| {
                *woke = Some(Instant::now())
            })
            .map_err(|e| e.error)
            .unwrap();
        let t = Instant::now();
        timeline.advance(1);
        sig_lib.push(ns(t.elapsed()));
        let mut woke = None;
        let t = Instant::now();
        event_loop.dispatch(Duration::ZERO, &mut woke).unwrap();
        loop_lib.push(ns(woke.expect("ready") - t));

        // calloop's own loop side: a Generic on an already readable eventfd.
        loop_calloop.push(ns(calloop_loop_side(&mut event_loop)));
    }
    rows.push(Row {
        name: "  breakdown: signal side (advance -> eventfd write)".into(),
        lib: stat(&mut sig_lib),
        raw: Some(stat(&mut sig_raw)),
        note: "same thread, no wakeup; raw: write(eventfd)".into(),
    });
    rows.push(Row {
        name: "  breakdown: loop side (dispatch -> callback)".into(),
        lib: stat(&mut loop_lib),
        raw: Some(stat(&mut loop_raw)),
        note: "same thread, fd already readable; raw: epoll_wait(0)".into(),
    });
    let loop_lib_median = rows.last().unwrap().lib.median;
    let calloop_loop = stat(&mut loop_calloop);
    let note = format!(
        "calloop alone; FenceSource adds {} over it",
        fmt_ns(loop_lib_median - calloop_loop.median)
    );
    rows.push(Row {
        name: "  breakdown: loop side, calloop Generic (no library)".into(),
        lib: calloop_loop,
        raw: Some(stat(&mut loop_raw)),
        note,
    });

    // Already signalled: no fd, no registration.
    let done = timeline.create_fence(1);
    rows.push(already_signaled_row(
        "already signalled (sw): FenceSource::new -> Ready",
        &done,
        iters.max(100),
        "0 by construction (atomic load + 2 uncontended locks)",
    ));

    rows.extend(wait_any_rows(
        &sig,
        &mut event_loop,
        iters,
        Scheduling::AsScheduled,
    ));
    print_table("fence-bridge: host rows (software fences)", &rows);

    // The latency rows again with the loop thread SCHED_FIFO, pinned with the signaller to one
    // CPU: every wakeup preempts the signaller at once, on its CPU, so there is no verdict to
    // even out and the waiters skip the work span.
    match LoopThreadFifo::enter(&sig) {
        Ok(fifo) => {
            let mut rows = handoff_rows(
                &sig,
                &mut event_loop,
                &raw,
                &timeline,
                iters,
                Scheduling::LoopFifo,
            );
            rows.extend(wait_any_rows(
                &sig,
                &mut event_loop,
                iters,
                Scheduling::LoopFifo,
            ));
            drop(fifo);
            print_table(
                "fence-bridge: host rows, loop thread SCHED_FIFO on the signaller's CPU",
                &rows,
            );
        }
        Err(err) => println!("\nhost rows: no SCHED_FIFO table: {err}"),
    };
}

// --- kernel rows --------------------------------------------------------------------------------

/// The kernel rows' waiters skip the work span: in the guest (TCG) every wakeup lands on the
/// other vCPU (the notes say "same CPU 0%"), so there is no preemption verdict to even out, and
/// a spinning waiter only made that wakeup slower (2 ms spans took every row from about 100 µs to
/// 170–370 µs).
const KERNEL_SPAN: Duration = Duration::ZERO;

/// A fresh epoll set watching `fd` for reading: a raw kernel-fence waiter.
fn epoll_on(fd: BorrowedFd<'_>) -> OwnedFd {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    epoll::add(
        &epoll,
        fd,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN,
    )
    .unwrap();
    epoll
}

/// One raw kernel-fence sample: epoll on `fd` until the signaller's `signal` wakes it, then
/// `read_status`, the one ioctl any waiter needs next. Returns the time to the wakeup and the
/// time once the status is read too.
fn raw_kernel_sample(
    sig: &Signaller,
    fd: BorrowedFd<'_>,
    signal: impl FnOnce() + Send + 'static,
    read_status: impl FnOnce(),
) -> (f64, f64) {
    let epoll = epoll_on(fd);
    sig.fire(signal);
    let woke = wait_epoll(&epoll);
    read_status();
    let read = Instant::now();
    let t0 = sig.t0();
    (ns(woke - t0), ns(read - t0))
}

/// A kernel fence kind's two rows: the library against the raw wakeup, then the reference
/// (the raw wakeup plus the status ioctl, no `Fence`, no `FenceSource`).
fn kernel_rows(
    name: &str,
    raw_what: &str,
    ioctl: &str,
    samples: [&mut Vec<f64>; 3],
    handoffs: [&Handoffs; 2],
) -> [Row; 2] {
    let [lib, raw, reference] = samples.map(|s| stat(s));
    let [lib_h, raw_h] = handoffs;
    [
        Row {
            name: format!("{name}: signal ioctl -> callback"),
            note: format!(
                "raw: {raw_what}; {:.2}x raw + {ioctl}; {lib_h} (raw: {raw_h})",
                lib.median / reference.median
            ),
            lib,
            raw: Some(raw.clone()),
        },
        Row {
            name: format!("  reference: raw, then one {ioctl}"),
            lib: reference,
            raw: Some(raw),
            note: "no Fence, no FenceSource: the status read by hand after the raw wakeup".into(),
        },
    ]
}

fn kernel(iters: usize) {
    let iters = iters.clamp(20, 300); // TCG is slow
    let sig = Signaller::spawn();
    let mut event_loop = EventLoop::<Option<Instant>>::try_new().unwrap();
    let mut rows = Vec::new();

    match support::vgem::Vgem::open() {
        None => println!("kernel rows: no vgem node: sync_file rows skipped"),
        Some(vgem) => {
            let vgem = Arc::new(vgem);
            let bo = vgem.create_bo();
            let dmabuf = fence_bridge::DmaBuf::new(bo.dmabuf.try_clone().unwrap());
            let (mut raw_s, mut lib_s, mut info_s) = (Vec::new(), Vec::new(), Vec::new());
            let (mut raw_h, mut lib_h) = (Handoffs::default(), Handoffs::default());
            for _ in 0..iters {
                // Raw: epoll on the sync_file fd itself, then its status and timestamp.
                let f = vgem.attach(&bo, true);
                let sync_file = dmabuf.export_sync_file(fence_bridge::Access::Read).unwrap();
                let v = vgem.clone();
                let (raw, info) = raw_kernel_sample(
                    &sig,
                    sync_file.as_fd(),
                    move || v.signal(f),
                    || {
                        let (status, _) = sync_file.status_and_timestamp().unwrap();
                        assert!(status.is_signaled());
                    },
                );
                raw_s.push(raw);
                info_s.push(info);
                raw_h.count(&sig);

                // Library: the sync_file as a Fence in a FenceSource.
                let f = vgem.attach(&bo, true);
                let fence = dmabuf
                    .export_sync_file(fence_bridge::Access::Read)
                    .unwrap()
                    .into_fence();
                let v = vgem.clone();
                lib_s.push(ns(library_sample(
                    &mut event_loop,
                    &sig,
                    vec![fence],
                    KERNEL_SPAN,
                    move || v.signal(f),
                )));
                lib_h.count(&sig);
            }
            rows.extend(kernel_rows(
                "sync_file (vgem)",
                "epoll on the sync_file fd",
                "SYNC_IOC_FILE_INFO",
                [&mut lib_s, &mut raw_s, &mut info_s],
                [&lib_h, &raw_h],
            ));
            let done = dmabuf
                .export_sync_file(fence_bridge::Access::Read)
                .unwrap()
                .into_fence();
            rows.push(already_signaled_row(
                "already signalled (sync_file): new -> Ready",
                &done,
                iters,
                "1 by construction (one SYNC_IOC_FILE_INFO in signaled(); strace-checked in kernel_source)",
            ));
        }
    }

    let virtio = support::require_device("virtio_gpu render node", || {
        support::find_node("renderD", "virtio_gpu")
    })
    .and_then(|node| fence_bridge::DrmDevice::from_fd(node.file.into()).ok());
    match virtio {
        Some(dev) if dev.supports_syncobj_timeline() => {
            let syncobj = fence_bridge::Syncobj::create(&dev).unwrap();
            let (mut raw_s, mut lib_s, mut query_s) = (Vec::new(), Vec::new(), Vec::new());
            let mut point = 0u64;
            let (mut raw_h, mut lib_h) = (Handoffs::default(), Handoffs::default());
            for _ in 0..iters {
                // Raw: epoll on a SYNCOBJ_EVENTFD, then the query that says the point is reached.
                point += 1;
                let fd = syncobj
                    .eventfd(point, fence_bridge::SyncobjWaitFlags::empty())
                    .unwrap();
                let s = syncobj.clone();
                let (raw, query) = raw_kernel_sample(
                    &sig,
                    fd.as_fd(),
                    move || s.signal_point(point).unwrap(),
                    || assert!(syncobj.query().unwrap() >= point, "reached"),
                );
                raw_s.push(raw);
                query_s.push(query);
                raw_h.count(&sig);

                point += 1;
                let fence = syncobj.point(point).fence();
                let s = syncobj.clone();
                lib_s.push(ns(library_sample(
                    &mut event_loop,
                    &sig,
                    vec![fence],
                    KERNEL_SPAN,
                    move || s.signal_point(point).unwrap(),
                )));
                lib_h.count(&sig);
            }
            rows.extend(kernel_rows(
                "syncobj timeline point",
                "epoll on a SYNCOBJ_EVENTFD",
                "DRM_IOCTL_SYNCOBJ_QUERY",
                [&mut lib_s, &mut raw_s, &mut query_s],
                [&lib_h, &raw_h],
            ));
            let done = syncobj.point(point).fence();
            rows.push(already_signaled_row(
                "already signalled (syncobj): new -> Ready",
                &done,
                iters,
                "1 by construction (SYNCOBJ_QUERY ioctl)",
            ));
        }
        Some(_) => {
            println!("kernel rows: virtio_gpu has no timeline syncobjs: syncobj rows skipped")
        }
        None => println!("kernel rows: no virtio_gpu render node: syncobj rows skipped"),
    }
    if !rows.is_empty() {
        // calloop's own floor in this guest, for the same comparison as the host rows.
        let (mut raw_s, mut cal_s) = (Vec::new(), Vec::new());
        let raw = RawEpoll::new(1);
        let (mut raw_h, mut cal_h) = (Handoffs::default(), Handoffs::default());
        for _ in 0..iters {
            raw_s.push(ns(raw.sample(&sig, 0, KERNEL_SPAN)));
            raw_h.count(&sig);
            cal_s.push(ns(calloop_sample(&mut event_loop, &sig, KERNEL_SPAN)));
            cal_h.count(&sig);
        }
        rows.push(Row {
            name: "calloop floor (guest): Generic<eventfd> -> callback".into(),
            lib: stat(&mut cal_s),
            raw: Some(stat(&mut raw_s)),
            note: format!("raw: eventfd write -> epoll_wait, in the guest; {cal_h} (raw: {raw_h})"),
        });
        print_table("fence-bridge: kernel rows", &rows);
    }
}

// --- syscall probe ------------------------------------------------------------------------------

/// `n` already-signalled checks of `kind`, nothing else worth counting (setup happens first and
/// is the same for n = 0).
fn probe(kind: &str, n: usize) {
    let fence = match kind {
        "sw" => {
            let t = SwTimeline::new("probe");
            let f = t.create_fence(1);
            t.advance(1);
            f
        }
        other => panic!("probe kind {other:?}: only `sw` runs without a device"),
    };
    for i in 0..n {
        std::hint::black_box(FenceSource::new([(i, fence.clone())], WaitMode::Each).unwrap_err());
    }
}

/// The soft fd limit raised to the hard one: the 10,000-fence rows hold over 10,000 fds, more
/// than the usual soft limit of 1024.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Err(err) = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    ) {
        println!("bench: cannot raise the fd limit ({err}); the 10,000-fence rows may fail");
    }
}

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut iters = 1000;
    let mut tiers = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--host" => tiers.push("host"),
            "--kernel" => tiers.push("kernel"),
            "--iters" => {
                i += 1;
                iters = args[i].parse().expect("--iters N");
            }
            "--probe" => {
                probe(&args[i + 1], args[i + 2].parse().expect("--probe KIND N"));
                return;
            }
            other => {
                panic!("unknown argument {other:?} (--host, --kernel, --iters N, --probe KIND N)")
            }
        }
        i += 1;
    }
    if tiers.is_empty() {
        tiers.push("host");
    }
    for tier in tiers {
        match tier {
            "host" => host(iters),
            _ => kernel(iters),
        }
    }
}
