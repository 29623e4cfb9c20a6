//! linux-drm-syncobj-v1 under churn, against a real kernel (virtio-gpu timelines, vgem
//! dma-bufs) and an in-process headless fencegate:
//!
//! * every release point a client sets is signalled exactly once, across a randomized sequence
//!   of commits (acquire points signalled at once, later or never), points replaced before their
//!   commit, commits without attach, surface destroys and client disconnects;
//! * 1,000 clients come and go, half of them with an acquire point still pending: the compositor
//!   is left with no extra fd and no syncobj handle;
//! * a surface stuck on a never-signalled acquire point freezes only itself: another client's
//!   frames keep arriving at the rate they did before (measured), and the timeout is reported.
//!
//! Runs in the guest of `cargo xtask vm-test`; on a machine without /dev/dri each test prints
//! SKIP and passes.

mod common;

use std::time::{Duration, Instant};

use common::dmabuf::{bind_linux_dmabuf, commit_buffer, dmabuf_buffer, DmabufBuffer};
use common::syncobj::timeline;
use common::test_server::{
    client_with_global, configured_window, headless_server, headless_server_with_args,
};
use common::{vgem_card, virtio_gpu_render};
use fence_bridge::{DrmDevice, Syncobj};
use fencegate::testing::TestServer;
use fencegate_clients::{Client, IgnoreEvents, WindowId};
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;

const T: Duration = Duration::from_secs(30);

/// One test at a time: the leak test counts the whole process's fds, and the frame-rate test
/// measures a rate other servers in the process would disturb.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// xorshift64*: a small, seedable generator, so a failing sequence can be replayed exactly.
struct Rng(u64);

impl Rng {
    /// From `FENCEGATE_SEED` when set (to replay a failure), else from the clock; printed.
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("FENCEGATE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0x5eed, |d| d.as_nanos() as u64)
            });
        eprintln!("random release sequence: FENCEGATE_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// virtio-gpu's render node (timelines) and vgem's card node (dma-bufs).
fn devices() -> Option<(DrmDevice, DrmDevice)> {
    Some((virtio_gpu_render()?, vgem_card()?))
}

fn syncobj_client(server: &TestServer) -> (Client, WpLinuxDrmSyncobjManagerV1) {
    client_with_global(server, 1)
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1) // read_dir's own fd
}

/// A window with its syncobj surface and two vgem dma-buf buffers.
struct Window {
    id: WindowId,
    surface: WlSurface,
    sync: WpLinuxDrmSyncobjSurfaceV1,
    buffers: [DmabufBuffer; 2],
    next_buffer: usize,
}

/// One client of the random sequence.
struct Actor {
    client: Client,
    manager: WpLinuxDrmSyncobjManagerV1,
    linux_dmabuf: ZwpLinuxDmabufV1,
    windows: Vec<Window>,
}

/// What the random sequence handed to the compositor, to check against what it did.
#[derive(Default)]
struct Ledger {
    /// One syncobj per release point (point 1 of a fresh timeline), so each one's value says
    /// whether that release happened.
    releases: Vec<Syncobj>,
    /// Acquire timelines not signalled yet.
    pending_acquires: Vec<Syncobj>,
    commits: usize,
    destroys: usize,
    disconnects: usize,
}

impl Actor {
    fn connect(server: &TestServer) -> Actor {
        let (client, manager) = syncobj_client(server);
        let linux_dmabuf = bind_linux_dmabuf(&client);
        Actor {
            client,
            manager,
            linux_dmabuf,
            windows: Vec::new(),
        }
    }

    fn open_window(&mut self, vgem: &DrmDevice, n: usize) {
        let (id, surface) = configured_window(&mut self.client, "churn", "test.churn", T);
        let sync = self
            .manager
            .get_surface(&surface, self.client.qh(), IgnoreEvents);
        let colour = 0x0000_1000 * (n as u32 % 200 + 1);
        let buffers = [
            dmabuf_buffer(&mut self.client, &self.linux_dmabuf, vgem, colour),
            dmabuf_buffer(
                &mut self.client,
                &self.linux_dmabuf,
                vgem,
                colour | 0x00ff_0000,
            ),
        ];
        self.windows.push(Window {
            id,
            surface,
            sync,
            buffers,
            next_buffer: 0,
        });
    }

    /// A commit with a buffer, an acquire point (signalled already, or left pending) and a
    /// release point, sometimes set twice so the first is replaced before the commit.
    fn commit(&mut self, rng: &mut Rng, device: &DrmDevice, ledger: &mut Ledger) {
        let w = rng.below(self.windows.len());
        let (acquire, acquire_tl) = timeline(&self.client, &self.manager, device);
        if rng.below(10) < 6 {
            acquire.signal_point(1).unwrap();
        } else {
            ledger.pending_acquires.push(acquire);
        }
        let window = &mut self.windows[w];
        window.sync.set_acquire_point(&acquire_tl, 0, 1);
        if rng.below(7) == 0 {
            let (replaced, replaced_tl) = timeline(&self.client, &self.manager, device);
            window.sync.set_release_point(&replaced_tl, 0, 1);
            ledger.releases.push(replaced);
        }
        let (release, release_tl) = timeline(&self.client, &self.manager, device);
        window.sync.set_release_point(&release_tl, 0, 1);
        ledger.releases.push(release);
        let buffer = &window.buffers[window.next_buffer];
        window.next_buffer ^= 1;
        commit_buffer(&window.surface, &buffer.buffer);
        ledger.commits += 1;
    }
}

#[test]
fn every_release_point_is_signalled_exactly_once_across_random_sequences() {
    let _serial = serial();
    let Some((device, vgem)) = devices() else {
        return;
    };
    let server = headless_server();
    let mut rng = Rng::from_env_or_clock();
    let mut ledger = Ledger::default();
    let mut windows_opened = 0;
    let mut actors: Vec<Actor> = (0..3).map(|_| Actor::connect(&server)).collect();
    for actor in &mut actors {
        actor.open_window(&vgem, windows_opened);
        windows_opened += 1;
    }

    const STEPS: usize = 240;
    for _ in 0..STEPS {
        let a = rng.below(actors.len());
        match rng.below(100) {
            // Commit a buffer with both points.
            0..=44 => actors[a].commit(&mut rng, &device, &mut ledger),
            // The client's GPU finishes some pending acquire point.
            45..=64 => {
                if !ledger.pending_acquires.is_empty() {
                    let i = rng.below(ledger.pending_acquires.len());
                    ledger
                        .pending_acquires
                        .swap_remove(i)
                        .signal_point(1)
                        .unwrap();
                }
            }
            // A commit without attach: keeps the buffer, and its release stays owed.
            65..=69 => {
                let actor = &mut actors[a];
                let w = rng.below(actor.windows.len());
                actor.windows[w].surface.commit();
            }
            // Let frames draw (and sample) what is on screen.
            70..=79 => {
                actors[a].client.roundtrip().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            // Destroy a window (its points, pending or current, are due) and open another.
            80..=91 => {
                let actor = &mut actors[a];
                let w = rng.below(actor.windows.len());
                let window = actor.windows.swap_remove(w);
                window.sync.destroy();
                actor.client.destroy_window(window.id);
                ledger.destroys += 1;
                actor.open_window(&vgem, windows_opened);
                windows_opened += 1;
            }
            // The client goes away without cleaning up; a new one takes its place.
            _ => {
                let mut replacement = Actor::connect(&server);
                replacement.open_window(&vgem, windows_opened);
                windows_opened += 1;
                drop(std::mem::replace(&mut actors[a], replacement));
                ledger.disconnects += 1;
            }
        }
        // Catch protocol errors where they happen: the sequence is all legal.
        for actor in &actors {
            if let Some(err) = actor.client.protocol_error() {
                panic!("a legal sequence got a protocol error: {err:?}");
            }
        }
    }

    // Half of what is still pending signals; the rest never will. Then everyone leaves.
    let pending = std::mem::take(&mut ledger.pending_acquires);
    for (i, acquire) in pending.iter().enumerate() {
        if i % 2 == 0 {
            acquire.signal_point(1).unwrap();
        }
    }
    for actor in &mut actors {
        actor.client.roundtrip().unwrap();
    }
    drop(actors);

    let s = server
        .wait_for("every release point accounted for", T, |s| {
            s.surfaces_alive == 0 && s.release.owed() == 0
        })
        .unwrap();
    eprintln!(
        "{} commits, {} window destroys, {} disconnects, {} release points: {:?}",
        ledger.commits,
        ledger.destroys,
        ledger.disconnects,
        ledger.releases.len(),
        s.release
    );
    // Each release point is point 1 of its own timeline: all of them reached 1 ...
    let deadline = Instant::now() + T;
    for (i, release) in ledger.releases.iter().enumerate() {
        while release.query().unwrap() < 1 {
            assert!(
                Instant::now() < deadline,
                "release point #{i} of {} never signalled: {:?}",
                ledger.releases.len(),
                s.release
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // ... and the compositor signalled exactly as many as were set: so each exactly once.
    assert_eq!(s.release.taken, ledger.releases.len() as u64, "{s:?}");
    assert_eq!(s.release.signalled(), s.release.taken, "{s:?}");
    assert_eq!(s.release.import_failed, 0, "{s:?}");
    assert!(
        ledger.destroys > 0 && ledger.disconnects > 0,
        "the sequence exercised both"
    );
}

/// One client's whole life: a window, a timeline pair, a dma-buf committed with both points
/// (the acquire point left pending when `leave_pending`), then gone without cleaning up.
fn client_lifetime(server: &TestServer, device: &DrmDevice, vgem: &DrmDevice, leave_pending: bool) {
    let (mut client, manager) = syncobj_client(server);
    let linux_dmabuf = bind_linux_dmabuf(&client);
    let (_w, surface) = configured_window(&mut client, "brief", "test.brief", T);
    let sync = manager.get_surface(&surface, client.qh(), IgnoreEvents);
    let (acquire, acquire_tl) = timeline(&client, &manager, device);
    let (_release, release_tl) = timeline(&client, &manager, device);
    if !leave_pending {
        acquire.signal_point(1).unwrap();
    }
    let buffer = dmabuf_buffer(&mut client, &linux_dmabuf, vgem, 0x00ff_00ff);
    sync.set_acquire_point(&acquire_tl, 0, 1);
    sync.set_release_point(&release_tl, 0, 1);
    commit_buffer(&surface, &buffer.buffer);
    client.roundtrip().unwrap();
}

#[test]
fn a_thousand_clients_leave_no_fd_or_syncobj_handle_behind() {
    let _serial = serial();
    let Some((device, vgem)) = devices() else {
        return;
    };
    let server = headless_server();
    const PROBE: usize = 64;
    let settle = |what: &str| {
        server
            .wait_for(what, T, |s| s.surfaces_alive == 0 && s.release.owed() == 0)
            .unwrap();
        // Frames in flight and the fence reactor let go of their last fds.
        std::thread::sleep(Duration::from_millis(300));
    };
    // Warm up what is created once (renderer caches, reactor thread, EGL imports).
    for i in 0..10 {
        client_lifetime(&server, &device, &vgem, i % 2 == 1);
    }
    settle("the warm-up clients gone");
    let handles_before = server
        .probe_syncobj_handles(PROBE)
        .unwrap()
        .expect("syncobj global");
    let fds_before = open_fd_count();

    // The measure sees a live client's imported timeline: its handle sits among the probed ones.
    {
        let (client, manager) = syncobj_client(&server);
        let (_t, _tl) = timeline(&client, &manager, &device);
        let mut client = client;
        client.roundtrip().unwrap();
        assert_ne!(
            server.probe_syncobj_handles(PROBE).unwrap().unwrap(),
            handles_before,
            "an imported timeline holds a handle, and the probe sees it"
        );
    }

    let started = Instant::now();
    for i in 0..1000 {
        client_lifetime(&server, &device, &vgem, i % 2 == 1);
    }
    settle("1,000 clients gone");
    let s = server.snapshot().unwrap();
    eprintln!(
        "1,000 clients in {:.1?}; release points {:?}; acquire {:?}",
        started.elapsed(),
        s.release,
        s.acquire
    );
    assert_eq!(open_fd_count(), fds_before, "fds leaked by 1,000 clients");
    assert_eq!(
        server.probe_syncobj_handles(PROBE).unwrap().unwrap(),
        handles_before,
        "syncobj handles leaked by 1,000 clients"
    );
    // Every client set one release point, signalled once, pending acquire or not.
    assert_eq!(s.release.taken, 1010, "{s:?}");
    assert_eq!(s.release.signalled(), s.release.taken, "{s:?}");
}

/// Draws in `w` at the pace of its frame callbacks for `span`: the frames completed.
fn frames_in(client: &mut Client, w: WindowId, span: Duration) -> u32 {
    let start = Instant::now();
    let first = client.state.windows[w.0].frames_done;
    let mut colour = 0xff00_8000u32;
    while start.elapsed() < span {
        let done = client.state.windows[w.0].frames_done;
        colour ^= 0x0000_00ff;
        client.draw_solid(w, 16, 16, colour).unwrap();
        client
            .dispatch_until(T, "the bystander's frame callback", |s| {
                s.windows[w.0].frames_done > done
            })
            .unwrap();
    }
    client.state.windows[w.0].frames_done - first
}

#[test]
fn a_stuck_surface_leaves_other_clients_at_full_frame_rate() {
    let _serial = serial();
    let Some((device, vgem)) = devices() else {
        return;
    };
    let server = headless_server_with_args(&["--refresh", "30", "--fence-timeout", "300"]);
    let mut bystander = Client::connect_to(server.socket_str()).unwrap();
    let (b, _) = configured_window(&mut bystander, "bystander", "test.bystander", T);
    const SPAN: Duration = Duration::from_secs(2);
    frames_in(&mut bystander, b, Duration::from_millis(300)); // warm up
    let alone = frames_in(&mut bystander, b, SPAN);

    // A client whose GPU never finishes: one commit held on its acquire point, five queued.
    let (mut stuck, manager) = syncobj_client(&server);
    let linux_dmabuf = bind_linux_dmabuf(&stuck);
    let (_w, surface) = configured_window(&mut stuck, "stuck", "test.stuck", T);
    let sync = manager.get_surface(&surface, stuck.qh(), IgnoreEvents);
    let (_never, never_tl) = timeline(&stuck, &manager, &device);
    let buffer = dmabuf_buffer(&mut stuck, &linux_dmabuf, &vgem, 0x00ff_0000);
    let mut releases = Vec::new();
    for i in 0..6 {
        let (release, release_tl) = timeline(&stuck, &manager, &device);
        sync.set_acquire_point(&never_tl, 0, i + 1);
        sync.set_release_point(&release_tl, 0, 1);
        commit_buffer(&surface, &buffer.buffer);
        releases.push(release);
    }
    stuck.roundtrip().unwrap();

    let beside_stuck = frames_in(&mut bystander, b, SPAN);
    let s = server
        .wait_for("the timeout report", T, |s| s.acquire.timed_out >= 1)
        .unwrap();
    eprintln!(
        "bystander frames in {SPAN:?}: {alone} alone, {beside_stuck} beside a stuck surface \
         (output at 30 Hz); {:?}",
        s.acquire
    );
    assert_eq!(s.acquire.blocked, 6, "{s:?}");
    assert_eq!(
        s.windows_with_content, 1,
        "only the bystander has content: {s:?}"
    );
    assert!(alone > 0, "the bystander drew frames");
    assert!(
        f64::from(beside_stuck) >= 0.85 * f64::from(alone),
        "the bystander's frame rate dropped beside a stuck surface: {alone} -> {beside_stuck}"
    );
    for release in &releases {
        assert_eq!(
            release.query().unwrap(),
            0,
            "a held commit's buffer is not released"
        );
    }

    // The stuck client goes away: its held commits' release points are all signalled.
    drop(stuck);
    server
        .wait_for("the stuck client's releases", T, |s| s.release.owed() == 0)
        .unwrap();
    for release in &releases {
        assert_eq!(
            release.query().unwrap(),
            1,
            "released once the surface is gone"
        );
    }
}
