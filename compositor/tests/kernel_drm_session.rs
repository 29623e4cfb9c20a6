//! The DRM-session test harness proves itself, without fencegate: run in the guest of
//! `cargo xtask vm-test` (on a machine without it each test prints SKIP and passes).
//!
//! * `common::drm_session`: udev is up and has tagged the DRM nodes, `XDG_RUNTIME_DIR` and
//!   `/tmp/.X11-unix` exist; under `seatd-launch` a libseat client (smithay's `LibSeatSession`,
//!   what `--backend drm` uses: this test binary re-run as the seated command) gets an active
//!   seat and a DRM-master card fd; dropping a seated child leaves no process, zombie or seatd.
//! * `common::kms_readback`: the test modesets a known pattern as DRM master (a dumb buffer
//!   with a pitch wider than the mode, on virtio-gpu and on vkms; a GBM scanout BO on
//!   virtio-gpu), then reads it back from a second, non-master fd, pixel for pixel, on both
//!   mapping paths; debugfs shows the framebuffer on the primary plane, the readback leaks no
//!   GEM handle or dma-buf, and the framebuffer and dma-buf counts drop back afterwards.
//! * The debugfs parsers against text captured from Linux 6.12 (runs on the host too).

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::drm_session::{
    all_processes, fs_type, group_members, processes_named, DrmSession, SeatedCommand, SEATD_SOCK,
    TMPFS_MAGIC,
};
use common::kms_readback::{
    gem_close, node_minor, open_reader, parse_atomic_state, parse_framebuffers, read_atomic_state,
    read_framebuffer, read_framebuffers, read_scanouts, MapPath, XRGB8888,
};
use common::leak_probe::{dma_bufs, drm_clients, parse_clients, parse_dma_bufs, DmaBufInfo};
use common::{find_drm_node, require_device};
use drm::buffer::{Buffer, DrmFourcc};
use drm::control::atomic::AtomicModeReq;
use drm::control::{
    connector, crtc, framebuffer, plane, property, AtomicCommitFlags, Device as _, Mode,
};
use drm::{ClientCapability, Device as _};
use fence_bridge::{find_property, DrmDevice};

/// One display, one seatd: the tests take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// TCG is slow: how long anything that should happen "now" may take.
const GENEROUS: Duration = Duration::from_secs(10);

#[test]
fn session_setup_prepares_udev_runtime_dir_and_x11_dir() {
    let _serial = serial();
    let Some(session) = DrmSession::setup() else {
        return;
    };
    assert!(
        std::ptr::eq(session, DrmSession::setup().unwrap()),
        "set up once per process"
    );
    let udevd = processes_named("systemd-udevd");
    assert_eq!(udevd.len(), 1, "one udevd: {udevd:?}");
    assert!(Path::new("/run/udev/control").exists());
    // The database entry of virtio-gpu's card (226:0) carries the seat tags logind/libinput
    // look for; without trigger + settle it would not exist.
    let db = std::fs::read_to_string("/run/udev/data/c226:0").expect("udev db entry of card0");
    assert!(db.lines().any(|l| l == "G:seat"), "{db}");
    assert!(db.lines().any(|l| l == "G:master-of-seat"), "{db}");
    // What smithay's udev backend will enumerate: initialised card nodes of seat0.
    let mut e = smithay::reexports::udev::Enumerator::new().unwrap();
    e.match_subsystem("drm").unwrap();
    e.match_sysname("card[0-9]*").unwrap();
    e.match_is_initialized().unwrap();
    let initialised: Vec<PathBuf> = e
        .scan_devices()
        .unwrap()
        .filter_map(|d| d.devnode().map(Path::to_path_buf))
        .collect();
    let gpus = smithay::backend::udev::all_gpus("seat0").unwrap();
    let primary = smithay::backend::udev::primary_gpu("seat0").unwrap();
    eprintln!(
        "drm session: udevd started here: {}; initialised card nodes {initialised:?}; all_gpus(seat0) \
         {gpus:?}; primary_gpu(seat0) {primary:?}",
        session.started_udevd
    );
    assert!(
        initialised.contains(&PathBuf::from("/dev/dri/card0")),
        "{initialised:?}"
    );
    assert!(gpus.contains(&PathBuf::from("/dev/dri/card0")), "{gpus:?}");

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rt = std::fs::metadata(&session.runtime_dir).unwrap();
    assert_eq!(rt.permissions().mode() & 0o7777, 0o700);
    assert_eq!(rt.uid(), unsafe { libc::geteuid() });
    assert_eq!(
        fs_type(session.runtime_dir.to_str().unwrap()).unwrap(),
        TMPFS_MAGIC
    );
    let x11 = std::fs::metadata("/tmp/.X11-unix").unwrap();
    assert!(x11.is_dir());
    assert_eq!(x11.permissions().mode() & 0o7777, 0o1777);
}

/// What seatd-launch gives the command, from a shell: `SEATD_SOCK` (a live socket) and the
/// harness' variables.
#[test]
fn seatd_launch_exports_seatd_sock() {
    let _serial = serial();
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let script = r#"echo "SEATD_SOCK=$SEATD_SOCK"; echo "XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR"
        echo "LIBSEAT_BACKEND=$LIBSEAT_BACKEND"; test -S "$SEATD_SOCK" && ls -l "$SEATD_SOCK""#;
    let mut child = SeatedCommand::new("sh", "sh")
        .args(["-c", script])
        .spawn(session);
    let pgid = child.pgid();
    let status = child.wait_timeout(GENEROUS).expect("seatd-launch exits");
    let out = child.output();
    assert!(status.success(), "{status}: {out}");
    let stdout = child.stdout();
    assert!(
        stdout.contains(&format!("SEATD_SOCK={SEATD_SOCK}\n")),
        "{out}"
    );
    assert!(
        stdout.contains(&format!(
            "XDG_RUNTIME_DIR={}\n",
            session.runtime_dir.display()
        )),
        "{out}"
    );
    assert!(stdout.contains("LIBSEAT_BACKEND=seatd\n"), "{out}");
    assert!(stdout.contains("srwx------ 1 root root"), "{out}");
    eprintln!("seatd-launch: {out}");
    drop(child);
    assert_nothing_left(pgid);
}

/// Set in the seated re-run of this test binary: act as the libseat client.
const PROBE_ENV: &str = "FENCEGATE_LIBSEAT_PROBE";

/// A libseat client under seatd-launch: this test binary, re-run with `--exact` on this test
/// and [`PROBE_ENV`], opens the seat and virtio-gpu's card through smithay's `LibSeatSession`.
#[test]
fn libseat_client_gets_the_seat_and_a_master_card_fd() {
    if std::env::var_os(PROBE_ENV).is_some() {
        libseat_probe();
        return;
    }
    let _serial = serial();
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let mut child = SeatedCommand::new("libseat-probe", &exe)
        .args([
            "libseat_client_gets_the_seat_and_a_master_card_fd",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, "1")
        .spawn(session);
    let pgid = child.pgid();
    let status = child.wait_timeout(GENEROUS * 3).expect("the probe exits");
    let out = child.output();
    eprintln!("libseat probe: {out}");
    assert!(status.success(), "{status}: {out}");
    let stdout = child.stdout();
    for line in [
        "probe: seat=seat0",
        "probe: active=true",
        "probe: driver=virtio_gpu",
        "probe: libseat_fd_master=true",
        "probe: own_fd_master=false",
        "probe: seatd holds master on card0",
    ] {
        assert!(stdout.lines().any(|l| l == line), "no {line:?}: {out}");
    }
    drop(child);
    assert_nothing_left(pgid);
}

/// Runs inside seatd-launch (see above); prints `probe: ...` lines, panics on failure.
fn libseat_probe() {
    use smithay::backend::session::libseat::LibSeatSession;
    use smithay::backend::session::{Event as SessionEvent, Session};
    use smithay::reexports::calloop::EventLoop;
    use smithay::reexports::rustix::fs::OFlags;

    let (mut seat, notifier) = LibSeatSession::new().expect("libseat opens a seat via seatd");
    // libtest has printed "test NAME ... " without a newline.
    println!();
    println!("probe: seat={}", seat.seat());
    let mut event_loop: EventLoop<bool> = EventLoop::try_new().unwrap();
    event_loop
        .handle()
        .insert_source(notifier, |event, _, active| {
            if let SessionEvent::ActivateSession = event {
                *active = true;
            }
        })
        .unwrap();
    let mut active = seat.is_active();
    let deadline = Instant::now() + GENEROUS;
    while !active && Instant::now() < deadline {
        event_loop
            .dispatch(Duration::from_millis(100), &mut active)
            .unwrap();
    }
    println!("probe: active={}", seat.is_active() || active);

    let card0 = Path::new("/dev/dri/card0");
    let fd = seat
        .open(
            card0,
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        )
        .expect("libseat open_device(/dev/dri/card0)");
    let card = DrmDevice::from_fd(fd).unwrap();
    println!("probe: driver={}", card.driver_name());
    // An (empty) atomic commit needs DRM master, root or not.
    let is_master = |dev: &DrmDevice| {
        dev.set_client_capability(ClientCapability::Atomic, true)
            .unwrap();
        dev.atomic_commit(AtomicCommitFlags::TEST_ONLY, AtomicModeReq::new())
            .map_err(|e| e.raw_os_error())
    };
    println!("probe: libseat_fd_master={}", is_master(&card) == Ok(()));
    let own = DrmDevice::open(card0).unwrap();
    let own_master = is_master(&own);
    assert!(own_master.is_ok() || own_master == Err(Some(libc::EACCES)));
    println!("probe: own_fd_master={}", own_master.is_ok());
    let clients = drm_clients(card0).unwrap();
    for c in &clients {
        println!("probe: client {c:?}");
    }
    // The file was opened by seatd and keeps its opener (6.12 `drm_file_update_pid` leaves files
    // that were master alone): the compositor's master fd is listed as seatd's.
    if clients
        .iter()
        .any(|c| c.command == "seatd" && c.minor == 0 && c.master)
    {
        println!("probe: seatd holds master on card0");
    }
}

/// After a seated child was dropped: nothing of its group, no zombie of ours, no seatd, no
/// socket.
fn assert_nothing_left(pgid: i32) {
    assert_eq!(group_members(pgid), vec![], "process group {pgid} left");
    let me = std::process::id() as i32;
    let zombies: Vec<_> = all_processes()
        .into_iter()
        .filter(|p| p.ppid == me && p.state == 'Z')
        .collect();
    assert_eq!(zombies, vec![], "zombies of the test process");
    assert_eq!(processes_named("seatd"), vec![], "a seatd is left");
    assert!(!Path::new(SEATD_SOCK).exists(), "{SEATD_SOCK} is left");
}

/// Dropping a running seated child kills seatd-launch, seatd, the command and the command's own
/// children (a backgrounded `sleep`), and reaps them all.
#[test]
fn dropping_a_seated_child_kills_and_reaps_its_group() {
    let _serial = serial();
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let child = SeatedCommand::new("sleeper", "sh")
        .args(["-c", "sleep 1000 & echo started; wait"])
        .spawn(session);
    let pgid = child.pgid();
    let deadline = Instant::now() + GENEROUS;
    // seatd-launch, seatd, sh, sleep.
    while group_members(pgid).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "group never grew: {:?}",
            group_members(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let members = group_members(pgid);
    eprintln!("seated group before drop: {members:?}");
    assert!(child.seatd_pid().is_some() && child.command_pid().is_some());
    drop(child);
    assert_nothing_left(pgid);
}

/// `terminate` stops the command with SIGTERM; seatd-launch then stops seatd and exits with
/// the command's status.
#[test]
fn terminate_passes_the_command_status_through_seatd_launch() {
    let _serial = serial();
    let Some(session) = DrmSession::setup() else {
        return;
    };
    let mut child = SeatedCommand::new("trap", "sh")
        .args([
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .spawn(session);
    let pgid = child.pgid();
    let deadline = Instant::now() + GENEROUS;
    while !child.stdout().contains("ready") {
        assert!(Instant::now() < deadline, "{}", child.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.terminate(GENEROUS).expect("an exit status");
    assert_eq!(status.code(), Some(7), "{}", child.output());
    assert!(child.stdout().contains("got TERM"), "{}", child.output());
    drop(child);
    assert_nothing_left(pgid);
}

// --- KMS readback -----------------------------------------------------------------------------

/// Extra pixels per row of the test buffer: its pitch is wider than the mode, so a reader that
/// ignored the pitch would see the padding colour.
const PAD: u32 = 16;
const PAD_COLOR: u32 = 0xff00ff;
/// Written into the X byte of every pixel: XRGB8888 readers must ignore it.
const X_BYTE: u32 = 0xab00_0000;

/// The known image: left half red, right half green, a 16x16 blue block at the top left and a
/// white one at the bottom right (orientation and edges).
fn pattern(x: u32, y: u32, w: u32, h: u32) -> u32 {
    if x < 16 && y < 16 {
        0x0000ff
    } else if x >= w - 16 && y >= h - 16 {
        0xffffff
    } else if x < w / 2 {
        0xff0000
    } else {
        0x00ff00
    }
}

/// A connected connector with its first (preferred) mode on a CRTC's primary plane, modeset by
/// `card` as DRM master.
struct Display {
    card: DrmDevice,
    path: PathBuf,
    crtc: crtc::Handle,
    plane: plane::Handle,
    conn: connector::Handle,
    mode: Mode,
}

fn prop<H: drm::control::ResourceHandle + std::fmt::Debug>(
    card: &DrmDevice,
    obj: H,
    name: &std::ffi::CStr,
) -> property::Handle {
    find_property(card, obj, name)
        .unwrap_or_else(|e| panic!("properties of {obj:?}: {e}"))
        .unwrap_or_else(|| panic!("{obj:?} has no {name:?}"))
        .handle()
}

fn raw<H: drm::control::ResourceHandle>(h: H) -> u32 {
    let raw: drm::control::RawResourceHandle = h.into();
    raw.get()
}

impl Display {
    /// Opens `driver`'s card node as DRM master (root, nobody else holds it) and finds the
    /// pipeline; `None` (SKIP) without the device.
    fn open(driver: &str) -> Option<Display> {
        let card = require_device(&format!("{driver} card node under /dev/dri"), || {
            find_drm_node("card", driver)
        })?;
        let path = card.path().expect("opened by path").to_path_buf();
        card.acquire_master_lock()
            .expect("DRM_IOCTL_SET_MASTER (root, only client)");
        card.set_client_capability(ClientCapability::UniversalPlanes, true)
            .unwrap();
        card.set_client_capability(ClientCapability::Atomic, true)
            .unwrap();
        let res = card.resource_handles().unwrap();
        let (conn, info) = res
            .connectors()
            .iter()
            .map(|&c| (c, card.get_connector(c, true).unwrap()))
            .find(|(_, i)| i.state() == connector::State::Connected)
            .unwrap_or_else(|| panic!("a connected {driver} connector"));
        let mode = info.modes()[0];
        let crtc = info
            .encoders()
            .iter()
            .flat_map(|&e| res.filter_crtcs(card.get_encoder(e).unwrap().possible_crtcs()))
            .next()
            .expect("a CRTC for the connector");
        let plane = card
            .plane_handles()
            .unwrap()
            .into_iter()
            .find(|&p| {
                let info = card.get_plane(p).unwrap();
                let type_prop = prop(&card, p, c"type");
                let is_primary = card
                    .get_properties(p)
                    .unwrap()
                    .iter()
                    .any(|(h, v)| *h == type_prop && *v == 1);
                is_primary && res.filter_crtcs(info.possible_crtcs()).contains(&crtc)
            })
            .expect("a primary plane for the CRTC");
        Some(Display {
            card,
            path,
            crtc,
            plane,
            conn,
            mode,
        })
    }

    /// Blocking modeset showing `fb` full-screen on the primary plane.
    fn show(&self, fb: framebuffer::Handle) {
        let card = &self.card;
        let (w, h) = self.mode.size();
        let mut req = AtomicModeReq::new();
        req.add_property(
            self.conn,
            prop(card, self.conn, c"CRTC_ID"),
            property::Value::CRTC(Some(self.crtc)),
        );
        let blob = card.create_property_blob(&self.mode).unwrap();
        req.add_property(self.crtc, prop(card, self.crtc, c"MODE_ID"), blob);
        req.add_property(
            self.crtc,
            prop(card, self.crtc, c"ACTIVE"),
            property::Value::Boolean(true),
        );
        req.add_property(
            self.plane,
            prop(card, self.plane, c"FB_ID"),
            property::Value::Framebuffer(Some(fb)),
        );
        req.add_property(
            self.plane,
            prop(card, self.plane, c"CRTC_ID"),
            property::Value::CRTC(Some(self.crtc)),
        );
        for (name, v) in [
            (c"SRC_X", 0u64),
            (c"SRC_Y", 0),
            (c"SRC_W", u64::from(w) << 16),
            (c"SRC_H", u64::from(h) << 16),
            (c"CRTC_X", 0),
            (c"CRTC_Y", 0),
            (c"CRTC_W", u64::from(w)),
            (c"CRTC_H", u64::from(h)),
        ] {
            req.add_raw_property(self.plane.into(), prop(card, self.plane, name), v);
        }
        card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
            .expect("modeset commit (ALLOW_MODESET)");
    }
}

/// A dumb buffer seen as a `width`x`height` XRGB8888 framebuffer with the dumb buffer's (wider)
/// pitch.
struct NarrowView<'a> {
    db: &'a drm::control::dumbbuffer::DumbBuffer,
    size: (u32, u32),
}

impl Buffer for NarrowView<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn format(&self) -> DrmFourcc {
        DrmFourcc::Xrgb8888
    }
    fn pitch(&self) -> u32 {
        self.db.pitch()
    }
    fn handle(&self) -> drm::buffer::Handle {
        self.db.handle()
    }
}

fn current_thread_comm() -> String {
    let tid = unsafe { libc::gettid() };
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

/// `read()` once it has given the same value for 200 ms: virtio-gpu holds a GEM reference
/// for each host command in flight (e.g. the flush after a commit) and drops it later from a
/// workqueue, so a refcount read right after a commit may be one too high.
fn settled<T: PartialEq + std::fmt::Debug>(mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + GENEROUS;
    let mut last = read();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(200) {
        assert!(Instant::now() < deadline, "never settled: {last:?}");
        std::thread::sleep(Duration::from_millis(20));
        let now = read();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Polls `f` until true or [`GENEROUS`] has passed.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GENEROUS;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the framebuffer under test comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A dumb buffer `PAD` pixels wider than the mode (pitch > width * 4), legacy ADDFB.
    Dumb,
    /// A linear scanout BO from GBM (Mesa, kms_swrast here) on the master fd, ADDFB2 with its
    /// modifier when the driver takes modifiers: what a compositor scans out.
    Gbm,
}

/// Keeps the buffer behind the framebuffer alive; released with [`TestBuffer::release`].
enum TestBuffer {
    Dumb(drm::control::dumbbuffer::DumbBuffer),
    Gbm(gbm::BufferObject<()>, gbm::Device<DrmDevice>),
}

impl TestBuffer {
    fn release(self, card: &DrmDevice) {
        match self {
            TestBuffer::Dumb(db) => card.destroy_dumb_buffer(db).unwrap(),
            TestBuffer::Gbm(bo, device) => {
                drop(bo);
                drop(device);
            }
        }
    }
}

/// Fills rows of `pitch` bytes: the pattern, [`PAD_COLOR`] past `w`, [`X_BYTE`] everywhere.
fn fill(bytes: &mut [u8], pitch: u32, w: u32, h: u32) {
    for (y, row) in bytes
        .chunks_exact_mut(pitch as usize)
        .take(h as usize)
        .enumerate()
    {
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            let (x, y) = (x as u32, y as u32);
            let rgb = if x < w {
                pattern(x, y, w, h)
            } else {
                PAD_COLOR
            };
            px.copy_from_slice(&(X_BYTE | rgb).to_le_bytes());
        }
    }
}

/// A `w`x`h` XRGB8888 framebuffer showing [`pattern`]: (buffer, fb, pitch).
fn pattern_framebuffer(
    display: &Display,
    source: Source,
    (w, h): (u32, u32),
) -> (TestBuffer, framebuffer::Handle, u32) {
    let card = &display.card;
    match source {
        Source::Dumb => {
            let mut db = card
                .create_dumb_buffer((w + PAD, h), DrmFourcc::Xrgb8888, 32)
                .expect("CREATE_DUMB");
            let pitch = db.pitch();
            assert!(pitch >= (w + PAD) * 4, "pitch {pitch}");
            fill(
                card.map_dumb_buffer(&mut db).expect("MAP_DUMB").as_mut(),
                pitch,
                w,
                h,
            );
            let fb = card
                .add_framebuffer(
                    &NarrowView {
                        db: &db,
                        size: (w, h),
                    },
                    24,
                    32,
                )
                .expect("ADDFB");
            (TestBuffer::Dumb(db), fb, pitch)
        }
        Source::Gbm => {
            use gbm::{BufferObjectFlags, Format};
            let device = gbm::Device::new(card.clone()).expect("a GBM device on the card node");
            let mut bo = device
                .create_buffer_object::<()>(
                    w,
                    h,
                    Format::Xrgb8888,
                    BufferObjectFlags::SCANOUT | BufferObjectFlags::LINEAR,
                )
                .expect("a linear GBM scanout BO");
            let pitch = bo
                .map_mut(0, 0, w, h, |map| {
                    let stride = map.stride();
                    fill(map.buffer_mut(), stride, w, h);
                    stride
                })
                .expect("gbm_bo_map");
            assert_eq!(pitch, bo.stride());
            let modifiers = card
                .get_driver_capability(drm::DriverCapability::AddFB2Modifiers)
                .unwrap_or(0)
                == 1;
            let flags = if modifiers {
                drm::control::FbCmd2Flags::MODIFIERS
            } else {
                drm::control::FbCmd2Flags::empty()
            };
            let fb = card
                .add_planar_framebuffer(&bo, flags)
                .expect("ADDFB2 of the GBM BO");
            eprintln!(
                "gbm: {} BO {w}x{h} stride {pitch} modifier {:?}; ADDFB2 modifiers: {modifiers}",
                device.backend_name(),
                bo.modifier()
            );
            (TestBuffer::Gbm(bo, device), fb, pitch)
        }
    }
}

/// The whole readback check on `driver`'s card (see the module docs).
fn readback_shows_the_modeset_pattern(driver: &str, source: Source) {
    let _serial = serial();
    let Some(display) = Display::open(driver) else {
        return;
    };
    let card = &display.card;
    let path = display.path.as_path();
    let (w, h) = display.mode.size();
    let (w, h) = (u32::from(w), u32::from(h));
    let fbs_before = read_framebuffers(path).unwrap();

    let (buffer, fb, pitch) = pattern_framebuffer(&display, source, (w, h));
    let fb_id = raw(fb);
    display.show(fb);

    // The reader: a second file, not master (the test's first file is).
    let reader = open_reader(path).unwrap();
    let me = std::process::id() as i32;
    let minor = node_minor(path).unwrap();
    let mine: Vec<_> = drm_clients(path)
        .unwrap()
        .into_iter()
        .filter(|c| c.tgid == me && c.minor == minor)
        .collect();
    let mut masters: Vec<bool> = mine.iter().map(|c| c.master).collect();
    masters.sort();
    assert_eq!(
        masters,
        [false, true],
        "the test's files on {}: master, then the reader: {mine:?}",
        path.display()
    );
    let refs = || {
        read_atomic_state(path)
            .unwrap()
            .plane(raw(display.plane))
            .and_then(|p| p.fb.clone())
            .map(|fb| fb.object_refcounts)
            .expect("the framebuffer's objects in debugfs state")
    };
    let refs_before = settled(refs);
    // Global: Mesa (GBM) has made its own by now.
    let dma_bufs_before = dma_bufs().unwrap();

    let scanouts = read_scanouts(&reader).expect("read_scanouts");
    let ours: Vec<_> = scanouts
        .iter()
        .filter(|s| s.crtc == raw(display.crtc))
        .collect();
    assert_eq!(ours.len(), 1, "{scanouts:#?}");
    assert_eq!(ours[0].plane, Some(raw(display.plane)));
    let image = ours[0]
        .image
        .as_ref()
        .expect("the primary plane has a framebuffer");
    eprintln!(
        "{driver}: read fb {} {}x{} {} modifier {:#x} pitch {} via {:?} (dma-buf error: {:?}), \
         GETFB2 handles {:?}",
        image.fb_id,
        image.width,
        image.height,
        image.format_name(),
        image.modifier,
        image.pitch,
        image.mapped_via,
        image.dma_buf_error,
        image.gem_handles
    );
    assert_eq!(
        (
            image.fb_id,
            image.width,
            image.height,
            image.format,
            image.modifier,
            image.pitch,
            image.offset
        ),
        (fb_id, w, h, XRGB8888, 0, pitch, 0)
    );
    // Named points first (readable failures), then every pixel.
    for (x, y, want) in [
        (0, 0, 0x0000ff),
        (15, 15, 0x0000ff),
        (16, 0, 0xff0000),
        (0, 16, 0xff0000),
        (w / 2 - 1, h / 2, 0xff0000),
        (w / 2, h / 2, 0x00ff00),
        (w - 1, 0, 0x00ff00),
        (0, h - 1, 0xff0000),
        (w - 17, h - 1, 0x00ff00),
        (w - 1, h - 1, 0xffffff),
        (w - 16, h - 16, 0xffffff),
    ] {
        assert_eq!(
            image.rgb(x, y),
            want,
            "{driver}: pixel ({x}, {y}): {:#010x}",
            image.pixel(x, y)
        );
    }
    assert_eq!(
        image.pixel(0, 0),
        X_BYTE | 0x0000ff,
        "the stored pixel, X byte and all"
    );
    let wrong: Vec<_> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| image.rgb(x, y) != pattern(x, y, w, h))
        .collect();
    assert!(
        wrong.is_empty(),
        "{driver}: {} pixels differ, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );
    // The fallback path reads the same image.
    let dumb = read_framebuffer(&reader, fb_id, MapPath::MapDumb).expect("MAP_DUMB readback");
    assert_eq!(dumb.mapped_via, MapPath::MapDumb);
    assert!(
        dumb.pixels == image.pixels,
        "MAP_DUMB and dma-buf paths differ"
    );
    // Every handle GETFB2 made in the reader's file is closed again.
    for h in image.gem_handles.iter().chain(&dumb.gem_handles) {
        let err = gem_close(reader.as_fd(), *h).expect_err("the handle was already closed");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EINVAL),
            "GEM_CLOSE {h}: {err}"
        );
    }

    // The kernel's view: our framebuffer on the primary plane, on our CRTC, made by this thread.
    let state = read_atomic_state(path).unwrap();
    let plane = state
        .plane(raw(display.plane))
        .expect("the primary plane in debugfs state");
    let shown = plane
        .fb
        .as_ref()
        .expect("a framebuffer on the primary plane");
    assert_eq!(shown.id, fb_id, "{plane:#?}");
    assert_eq!(plane.crtc_id, Some(raw(display.crtc)), "{plane:#?}");
    assert_eq!(shown.size, (w, h));
    assert_eq!(shown.allocated_by, current_thread_comm());
    assert_eq!(
        state.planes_showing(fb_id).len(),
        1,
        "{:#?}",
        state.planes_showing(fb_id)
    );
    let crtc_state = state
        .crtcs
        .iter()
        .find(|c| c.id == raw(display.crtc))
        .unwrap();
    assert!(crtc_state.active && crtc_state.enable, "{crtc_state:?}");
    // The first PRIME export of a BO makes a dma-buf the kernel caches on the GEM object (one
    // more object reference) until the object's last handle closes, here the master's: one
    // dma-buf more after the first readback, then no growth per readback.
    let exported_refs = settled(refs);
    assert_eq!(
        exported_refs,
        refs_before.iter().map(|r| r + 1).collect::<Vec<_>>(),
        "GEM object refcounts: before the readback, after it"
    );
    let new_since = |before: &[DmaBufInfo]| -> Vec<DmaBufInfo> {
        dma_bufs()
            .unwrap()
            .into_iter()
            .filter(|b| !before.iter().any(|o| o.ino == b.ino))
            .collect()
    };
    let exported = new_since(&dma_bufs_before);
    assert_eq!(exported.len(), 1, "the cached export: {exported:?}");
    let export = exported[0].clone();
    assert!(export.size >= u64::from(pitch * h), "{export:?}");
    assert_eq!(
        export.file_count, 1,
        "only the exporter's cache holds it: {export:?}"
    );
    let dma_bufs_exported = dma_bufs().unwrap();
    for _ in 0..3 {
        let again = read_scanouts(&reader).unwrap();
        assert!(again.iter().any(|s| s
            .image
            .as_ref()
            .is_some_and(|i| i.fb_id == fb_id && i.pixels == image.pixels)));
    }
    assert_eq!(settled(refs), exported_refs);
    assert_eq!(
        new_since(&dma_bufs_exported),
        vec![],
        "dma-bufs per readback"
    );
    assert!(
        dma_bufs().unwrap().contains(&export),
        "the same export, reused"
    );
    let fbs = read_framebuffers(path).unwrap();
    assert_eq!(fbs.len(), fbs_before.len() + 1, "{fbs:#?}");
    assert!(fbs.iter().any(|f| f.id == fb_id && f.size == (w, h)));
    eprintln!(
        "{driver}: debugfs: plane {} ({}) shows fb {fb_id} on {:?}; {} framebuffers ({:?})",
        plane.id,
        plane.name,
        plane.crtc,
        fbs.len(),
        fbs.iter()
            .map(|f| (f.id, f.allocated_by.as_str()))
            .collect::<Vec<_>>()
    );

    // RMFB: the framebuffer disappears from the device's list (the kernel also takes it off
    // the plane).
    card.destroy_framebuffer(fb).expect("RMFB");
    assert!(
        eventually(|| read_framebuffers(path).unwrap().len() == fbs_before.len()),
        "framebuffer count after RMFB: {:#?}",
        read_framebuffers(path).unwrap()
    );
    assert!(!read_framebuffers(path)
        .unwrap()
        .iter()
        .any(|f| f.id == fb_id));
    assert!(read_atomic_state(path)
        .unwrap()
        .planes_showing(fb_id)
        .is_empty());
    // The last handle closes: the object and its cached dma-buf go.
    buffer.release(card);
    assert!(
        eventually(|| !dma_bufs().unwrap().iter().any(|b| b.ino == export.ino)),
        "the export outlived the BO: {:?}",
        dma_bufs().unwrap()
    );
    eprintln!(
        "{driver} {source:?}: readback exported {export:?}, gone with the BO; framebuffer and \
         dma-buf checks passed"
    );
}

#[test]
fn readback_of_a_dumb_buffer_on_virtio_gpu() {
    readback_shows_the_modeset_pattern("virtio_gpu", Source::Dumb);
}

#[test]
fn readback_of_a_gbm_scanout_buffer_on_virtio_gpu() {
    readback_shows_the_modeset_pattern("virtio_gpu", Source::Gbm);
}

#[test]
fn readback_of_a_dumb_buffer_on_vkms() {
    readback_shows_the_modeset_pattern("vkms", Source::Dumb);
}

// --- parsers, on text captured from Linux 6.12.95 in the guest --------------------------------

const STATE_6_12: &str = "plane[32]: plane-0
\tcrtc=crtc-0
\tfb=40
\t\tallocated by = [fbcon]
\t\trefcount=2
\t\tformat=XR24 little-endian (0x34325258)
\t\tmodifier=0x0
\t\tsize=640x480
\t\tlayers:
\t\t\tsize[0]=640x480
\t\t\tpitch[0]=2560
\t\t\toffset[0]=0
\t\t\tobj[0]:
\t\t\t\tname=0
\t\t\t\trefcount=3
\t\t\t\tstart=00100000
\t\t\t\tsize=1228800
\t\t\t\timported=no
\t\t\t\tpages_use_count=3
\t\t\t\tvmap_use_count=1
\t\t\t\tvaddr=0000000008f79c2c
\tcrtc-pos=640x480+0+0
\tsrc-pos=640.000000x480.000000+0.000000+0.000000
\trotation=1
\tnormalized-zpos=0
\tcolor-encoding=ITU-R BT.601 YCbCr
\tcolor-range=YCbCr limited range
\tcolor_mgmt_changed=0
plane[33]: plane-1
\tcrtc=(null)
\tfb=0
\tcrtc-pos=0x0+0+0
\tsrc-pos=0.000000x0.000000+0.000000+0.000000
\trotation=1
\tnormalized-zpos=0
\tcolor-encoding=ITU-R BT.601 YCbCr
\tcolor-range=YCbCr limited range
\tcolor_mgmt_changed=0
crtc[36]: crtc-0
\tenable=1
\tactive=1
\tself_refresh_active=0
\tplanes_changed=1
\tmode_changed=0
\tactive_changed=0
\tconnectors_changed=0
\tcolor_mgmt_changed=0
\tplane_mask=1
\tconnector_mask=1
\tencoder_mask=1
\tmode: \"640x480\": 75 32140 640 800 819 864 480 482 484 496 0x48 0xa
connector[37]: Virtual-1
\tcrtc=crtc-0
\tself_refresh_aware=0
\tmax_requested_bpc=0
\tcolorspace=Default
";

const FRAMEBUFFER_6_12: &str = "framebuffer[71]:
\tallocated by = [fbcon]
\trefcount=1
\tformat=XR24 little-endian (0x34325258)
\tmodifier=0x0
\tsize=1024x768
\tlayers:
\t\tsize[0]=1024x768
\t\tpitch[0]=4096
\t\toffset[0]=0
\t\tobj[0]:
\t\t\tname=0
\t\t\trefcount=3
\t\t\tstart=00100000
\t\t\tsize=3145728
\t\t\timported=no
\t\t\tpages_use_count=2
\t\t\tvmap_use_count=1
\t\t\tvaddr=000000000e0ddc2b
";

#[test]
fn parses_debugfs_text_of_linux_6_12() {
    let state = parse_atomic_state(STATE_6_12);
    assert_eq!(state.planes.len(), 2);
    let p0 = state.plane(32).unwrap();
    assert_eq!(
        (p0.name.as_str(), p0.crtc.as_deref(), p0.crtc_id),
        ("plane-0", Some("crtc-0"), Some(36))
    );
    let fb = p0.fb.as_ref().unwrap();
    assert_eq!(
        (
            fb.id,
            fb.allocated_by.as_str(),
            fb.refcount,
            fb.size,
            fb.modifier
        ),
        (40, "[fbcon]", 2, (640, 480), 0)
    );
    assert_eq!(fb.format, "XR24 little-endian (0x34325258)");
    assert_eq!(fb.object_refcounts, [3]);
    let p1 = state.plane(33).unwrap();
    assert_eq!(
        (p1.crtc.as_deref(), p1.crtc_id, p1.fb.as_ref()),
        (None, None, None)
    );
    assert_eq!(state.planes_showing(40).len(), 1);
    assert_eq!(state.crtcs.len(), 1);
    let c = &state.crtcs[0];
    assert_eq!(
        (c.id, c.name.as_str(), c.enable, c.active),
        (36, "crtc-0", true, true)
    );
    assert!(c.mode.starts_with("\"640x480\": 75 32140"), "{}", c.mode);
    assert_eq!(
        state.connectors,
        [common::kms_readback::ConnectorState {
            id: 37,
            name: "Virtual-1".into(),
            crtc: Some("crtc-0".into())
        }]
    );

    let fbs = parse_framebuffers(FRAMEBUFFER_6_12);
    assert_eq!(fbs.len(), 1);
    assert_eq!(
        (
            fbs[0].id,
            fbs[0].allocated_by.as_str(),
            fbs[0].size,
            fbs[0].refcount
        ),
        (71, "[fbcon]", (1024, 768), 1)
    );
    assert_eq!(fbs[0].object_refcounts, [3]);
    assert!(parse_framebuffers("").is_empty());

    let clients = parse_clients(
        "             command  tgid dev master a   uid      magic
          explore.sh   180   0   y    y     0          0
          explore.sh   180 128   n    y     0          0
",
    );
    assert_eq!(clients.len(), 2);
    assert_eq!(
        (
            clients[0].command.as_str(),
            clients[0].tgid,
            clients[0].minor,
            clients[0].master,
            clients[0].authenticated,
            clients[0].uid
        ),
        ("explore.sh", 180, 0, true, true, 0)
    );
    assert_eq!((clients[1].minor, clients[1].master), (128, false));

    let bufinfo =
        "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname
01310720\t00000000\t00080005\t00000001\tvirtio_gpu\t00000004\t<none>
\tAttached Devices:\nTotal 0 devices attached\n
00004096\t00000002\t00080007\t00000001\tudmabuf\t00000003\t<none>
\tAttached Devices:\nTotal 0 devices attached\n\n\nTotal 2 objects, 1314816 bytes\n";
    assert_eq!(
        parse_dma_bufs(bufinfo),
        [
            DmaBufInfo {
                size: 1310720,
                exporter: "virtio_gpu".into(),
                ino: 4,
                file_count: 1
            },
            DmaBufInfo {
                size: 4096,
                exporter: "udmabuf".into(),
                ino: 3,
                file_count: 1
            }
        ]
    );
    assert_eq!(
        parse_dma_bufs("\nDma-buf Objects:\nsize\n\nTotal 0 objects, 0 bytes\n"),
        []
    );
}
