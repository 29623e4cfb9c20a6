//! zwp_linux_explicit_synchronization_v1 against a real kernel: the compositor (an in-process
//! headless fencegate) advertises the global wherever it imports dma-bufs, and real clients give
//! it real sync_files (exported from vgem buffers, with real vgem fences).
//!
//! Runs in the guest of `cargo xtask vm-test` (vgem for dma-bufs and controllable fences); on a
//! machine without /dev/dri each test prints SKIP and passes.
//!
//! * every protocol error of the extension reaches the offending client, on the right object,
//!   while the compositor and a bystander client carry on;
//! * a dma-buf committed with an unsignalled acquire fence is not shown until the fence
//!   signals; an already-signalled fence costs no blocker;
//! * each release object gets exactly one event: when its buffer is replaced, and on surface
//!   destruction — not before.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use common::{find_color, find_drm_node, require_device, rgb};
use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::Device as _;
use fence_bridge::{Access, DmaBuf, DrmDevice, SyncFile};
use fencegate::testing::{Snapshot, TestServer};
use fencegate::Config;
use fencegate_clients::{Client, EventLog, IgnoreEvents};
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_buffer_params_v1::{
    self, ZwpLinuxBufferParamsV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1;

const T: Duration = Duration::from_secs(30);
const MANAGER: &str = "zwp_linux_explicit_synchronization_v1";
const SURFACE: &str = "zwp_linux_surface_synchronization_v1";

// --- vgem: dumb buffers and controllable fences ------------------------------------------------

fn vgem() -> Option<DrmDevice> {
    require_device("vgem card node under /dev/dri", || {
        find_drm_node("card", "vgem")
    })
}

/// `struct drm_vgem_fence_attach` (include/uapi/drm/vgem_drm.h).
#[repr(C)]
struct VgemFenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}

/// `struct drm_vgem_fence_signal`.
#[repr(C)]
struct VgemFenceSignal {
    fence: u32,
    flags: u32,
}

/// `DRM_IOWR(DRM_COMMAND_BASE + 0x01, struct drm_vgem_fence_attach)`.
const VGEM_FENCE_ATTACH: libc::c_ulong =
    (3 << 30) | (16 << 16) | ((b'd' as libc::c_ulong) << 8) | 0x41;
/// `DRM_IOW(DRM_COMMAND_BASE + 0x02, struct drm_vgem_fence_signal)`.
const VGEM_FENCE_SIGNAL: libc::c_ulong =
    (1 << 30) | (8 << 16) | ((b'd' as libc::c_ulong) << 8) | 0x42;
const VGEM_FENCE_WRITE: u32 = 1;

fn ioctl<T>(device: &DrmDevice, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    loop {
        // SAFETY: `request` is a vgem ioctl whose argument is the #[repr(C)] struct `T`.
        let ret = unsafe {
            libc::ioctl(
                device.as_fd().as_raw_fd(),
                request as _,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// A linear XRGB8888 dumb buffer on vgem filled with `xrgb`: its GEM handle and dma-buf.
fn dumb(vgem: &DrmDevice, xrgb: u32) -> (u32, OwnedFd, u32) {
    let mut dumb = vgem
        .create_dumb_buffer((SIZE, SIZE), DrmFourcc::Xrgb8888, 32)
        .expect("DRM_IOCTL_MODE_CREATE_DUMB on vgem");
    let pitch = dumb.pitch();
    {
        let mut map = vgem
            .map_dumb_buffer(&mut dumb)
            .expect("mapping the dumb buffer");
        for row in map.as_mut().chunks_mut(pitch as usize) {
            for px in row[..(SIZE * 4) as usize].chunks_mut(4) {
                px.copy_from_slice(&xrgb.to_le_bytes());
            }
        }
    }
    let dmabuf = vgem
        .buffer_to_prime_fd(dumb.handle(), drm::CLOEXEC | drm::RDWR)
        .expect("DRM_IOCTL_PRIME_HANDLE_TO_FD");
    (u32::from(dumb.handle()), dmabuf, pitch)
}

/// A pending vgem write fence on a BO of its own, and a sync_file of it. Signalled on drop if
/// still pending (vgem would signal it itself after ~10 s).
struct PendingFence<'v> {
    vgem: &'v DrmDevice,
    fence: Option<u32>,
    _bo: OwnedFd,
    sync_file: SyncFile,
}

impl<'v> PendingFence<'v> {
    fn new(vgem: &'v DrmDevice) -> Self {
        let (handle, bo, _) = dumb(vgem, 0);
        let mut attach = VgemFenceAttach {
            handle,
            flags: VGEM_FENCE_WRITE,
            out_fence: 0,
            pad: 0,
        };
        ioctl(vgem, VGEM_FENCE_ATTACH, &mut attach).expect("VGEM_FENCE_ATTACH");
        let sync_file = DmaBuf::new(bo.as_fd())
            .export_sync_file(Access::Write)
            .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
        PendingFence {
            vgem,
            fence: Some(attach.out_fence),
            _bo: bo,
            sync_file,
        }
    }

    fn signal(&mut self) {
        let fence = self.fence.take().expect("signalled once");
        let mut arg = VgemFenceSignal { fence, flags: 0 };
        ioctl(self.vgem, VGEM_FENCE_SIGNAL, &mut arg).expect("VGEM_FENCE_SIGNAL");
    }
}

impl Drop for PendingFence<'_> {
    fn drop(&mut self) {
        if let Some(fence) = self.fence.take() {
            let mut arg = VgemFenceSignal { fence, flags: 0 };
            let _ = ioctl(self.vgem, VGEM_FENCE_SIGNAL, &mut arg);
        }
    }
}

/// A sync_file that has signalled: the implicit fences of an idle vgem buffer (a stub fence).
fn signalled_sync_file(vgem: &DrmDevice) -> SyncFile {
    let (_, bo, _) = dumb(vgem, 0);
    let sync_file = DmaBuf::new(bo.as_fd())
        .export_sync_file(Access::Write)
        .expect("DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
    assert!(sync_file.is_signaled().unwrap(), "an idle buffer's fences");
    sync_file
}

// --- the client side ---------------------------------------------------------------------------

fn server() -> TestServer {
    // Server logs with FENCEGATE_TEST_LOG=debug (an EnvFilter directive).
    if let Ok(filter) = std::env::var("FENCEGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let mut config = Config::headless();
    config.size = "96x64".parse().unwrap();
    TestServer::start(config).expect("the test server starts")
}

/// A client with the manager bound.
fn sync_client(server: &TestServer) -> (Client, ZwpLinuxExplicitSynchronizationV1) {
    let client = Client::connect_to(server.socket_str()).unwrap();
    assert!(
        client.state.has_global(MANAGER),
        "the compositor advertises {MANAGER}"
    );
    let manager = client
        .bind_global::<ZwpLinuxExplicitSynchronizationV1, _>(2, IgnoreEvents)
        .unwrap();
    (client, manager)
}

fn bare_surface(client: &Client) -> WlSurface {
    client
        .state
        .compositor
        .as_ref()
        .expect("wl_compositor")
        .create_surface(client.qh(), IgnoreEvents)
}

fn sync_for(
    client: &Client,
    manager: &ZwpLinuxExplicitSynchronizationV1,
    surface: &WlSurface,
) -> ZwpLinuxSurfaceSynchronizationV1 {
    manager.get_synchronization(surface, client.qh(), IgnoreEvents)
}

/// The protocol error `client` got: (code, interface). Sends what is queued, then only reads
/// (no `wl_display.sync`: a write racing the server's close can fail with ECONNRESET before the
/// error, which is already in the socket, is read).
#[track_caller]
fn expect_error(client: &mut Client, code: u32, interface: &str) {
    let _ = client.flush();
    let result = client.dispatch_until(T, "a protocol error", |_| false);
    let error = client
        .protocol_error()
        .unwrap_or_else(|| panic!("expected protocol error {code} on {interface}, got {result:?}"));
    assert_eq!(
        (error.code, error.object_interface.as_str()),
        (code, interface),
        "{}",
        error.message
    );
}

/// The bystander still gets answers, and so do the test's questions to the server.
#[track_caller]
fn others_carry_on(server: &TestServer, bystander: &mut Client) -> Snapshot {
    bystander
        .roundtrip()
        .expect("a bystander client is unaffected");
    server.snapshot().expect("the compositor still answers")
}

#[test]
fn every_protocol_error_reaches_its_client_and_the_others_carry_on() {
    let Some(vgem) = vgem() else {
        return;
    };
    let server = server();
    let snapshot = server.snapshot().unwrap();
    assert!(snapshot.explicit_sync_global, "{snapshot:?}");

    let (mut bystander, bystander_manager) = sync_client(&server);
    let w = bystander.create_window("bystander", "test.bystander");
    bystander.wait_configured(w, T).unwrap();
    let bystander_surface = bystander.state.windows[w.0].surface.clone();
    let _bystander_sync = sync_for(&bystander, &bystander_manager, &bystander_surface);

    // Success: fence-less, release-less commits pass; a release on an shm buffer is fine;
    // destroy discards pending state and a new object may be made for the same surface.
    {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let sync = sync_for(&client, &manager, &surface);
        surface.commit();
        surface.attach(None, 0, 0);
        surface.commit();
        let w = client.create_window("shm", "test.shm");
        client.wait_configured(w, T).unwrap();
        let window_surface = client.state.windows[w.0].surface.clone();
        let window_sync = sync_for(&client, &manager, &window_surface);
        let log = EventLog::new();
        let _release: ZwpLinuxBufferReleaseV1 = window_sync.get_release(client.qh(), log.clone());
        client.draw_solid(w, 8, 8, 0xff00ff00).unwrap(); // attach + commit
        client
            .roundtrip()
            .expect("a release on an shm buffer is accepted");
        assert!(
            log.is_empty(),
            "the shm buffer is still shown: {:?}",
            log.events()
        );
        // Pending fence discarded and pending release released by destroy.
        let pending_log = EventLog::new();
        let fence = signalled_sync_file(&vgem);
        sync.set_acquire_fence(fence.as_fd());
        let _pending: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), pending_log.clone());
        sync.destroy();
        surface.commit();
        let _again = sync_for(&client, &manager, &surface);
        client
            .roundtrip()
            .expect("get_synchronization after destroy is accepted");
        assert_eq!(
            pending_log.events().len(),
            1,
            "a discarded release gets its one event: {:?}",
            pending_log.events()
        );
        assert!(
            pending_log.contains("ImmediateRelease"),
            "{:?}",
            pending_log.events()
        );
    }

    // synchronization_exists: get_synchronization twice for one wl_surface.
    {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let _a = sync_for(&client, &manager, &surface);
        let _b = sync_for(&client, &manager, &surface);
        expect_error(&mut client, 0, MANAGER);
        others_carry_on(&server, &mut bystander);
    }

    // invalid_fence: an fd that is not a sync_file.
    {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let sync = sync_for(&client, &manager, &surface);
        let not_a_fence = std::fs::File::open("/dev/null").unwrap();
        sync.set_acquire_fence(not_a_fence.as_fd());
        expect_error(&mut client, 0, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // duplicate_fence: two acquire fences for one commit.
    {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let sync = sync_for(&client, &manager, &surface);
        let fence = signalled_sync_file(&vgem);
        sync.set_acquire_fence(fence.as_fd());
        sync.set_acquire_fence(fence.as_fd());
        expect_error(&mut client, 1, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // duplicate_release: two releases for one commit.
    {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let sync = sync_for(&client, &manager, &surface);
        let _a: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), IgnoreEvents);
        let _b: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), IgnoreEvents);
        expect_error(&mut client, 2, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // no_surface: the wl_surface is gone, then set_acquire_fence or get_release.
    for release in [false, true] {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let sync = sync_for(&client, &manager, &surface);
        surface.destroy();
        let fence = signalled_sync_file(&vgem);
        if release {
            let _r: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), IgnoreEvents);
        } else {
            sync.set_acquire_fence(fence.as_fd());
        }
        expect_error(&mut client, 3, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // unsupported_buffer: an acquire fence for an shm buffer.
    {
        let (mut client, manager) = sync_client(&server);
        let w = client.create_window("bad", "test.bad");
        client.wait_configured(w, T).unwrap();
        let surface = client.state.windows[w.0].surface.clone();
        let sync = sync_for(&client, &manager, &surface);
        let fence = signalled_sync_file(&vgem);
        sync.set_acquire_fence(fence.as_fd());
        let _ = client.draw_solid(w, 8, 8, 0xff00ff00); // attach + commit
        expect_error(&mut client, 4, SURFACE);
        let snapshot = others_carry_on(&server, &mut bystander);
        assert_eq!(
            snapshot.explicit_acquire.blocked, 0,
            "no rejected commit is waited for"
        );
    }

    // no_buffer: fence or release with no attach, or with attach(NULL).
    for (fence_set, release_set, null_attach) in [
        (true, false, false),
        (false, true, false),
        (true, false, true),
        (false, true, true),
    ] {
        let (mut client, manager) = sync_client(&server);
        let surface = bare_surface(&client);
        let sync = sync_for(&client, &manager, &surface);
        let fence = signalled_sync_file(&vgem);
        if fence_set {
            sync.set_acquire_fence(fence.as_fd());
        }
        if release_set {
            let _r: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), IgnoreEvents);
        }
        if null_attach {
            surface.attach(None, 0, 0);
        }
        surface.commit();
        expect_error(&mut client, 5, SURFACE);
        others_carry_on(&server, &mut bystander);
    }

    // The bystander, with its synchronization object, still draws.
    bystander.draw_solid(w, 10, 10, 0xffff0000).unwrap();
    server
        .wait_for("the bystander's window", T, |s| s.windows_with_content == 1)
        .unwrap();
}

// --- dma-buf buffers from vgem -------------------------------------------------------------

const SIZE: u32 = 16;

/// A vgem dumb buffer filled with one colour, as a linux-dmabuf `wl_buffer`.
struct DmabufBuffer {
    buffer: WlBuffer,
    _dmabuf: OwnedFd,
}

fn dmabuf_buffer(
    client: &mut Client,
    linux_dmabuf: &ZwpLinuxDmabufV1,
    vgem: &DrmDevice,
    xrgb: u32,
) -> DmabufBuffer {
    let (_, dmabuf, pitch) = dumb(vgem, xrgb);
    let params: ZwpLinuxBufferParamsV1 = linux_dmabuf.create_params(client.qh(), IgnoreEvents);
    params.add(dmabuf.as_fd(), 0, 0, pitch, 0, 0); // DRM_FORMAT_MOD_LINEAR
    let buffer = params.create_immed(
        SIZE as i32,
        SIZE as i32,
        DrmFourcc::Xrgb8888 as u32,
        zwp_linux_buffer_params_v1::Flags::empty(),
        client.qh(),
        IgnoreEvents,
    );
    params.destroy();
    client
        .roundtrip()
        .expect("the compositor imports a linear XRGB8888 dma-buf");
    DmabufBuffer {
        buffer,
        _dmabuf: dmabuf,
    }
}

fn commit_buffer(surface: &WlSurface, buffer: &DmabufBuffer) {
    surface.attach(Some(&buffer.buffer), 0, 0);
    surface.damage_buffer(0, 0, SIZE as i32, SIZE as i32);
    surface.commit();
}

/// Dispatches until `log` has an event (or `T`), then checks it has exactly one, a release.
#[track_caller]
fn expect_one_release(client: &mut Client, log: &EventLog, what: &str) {
    client
        .dispatch_until(T, what, |_| !log.is_empty())
        .unwrap_or_else(|err| panic!("{what}: no release event: {err}"));
    client.roundtrip().unwrap();
    let events = log.events();
    assert_eq!(events.len(), 1, "{what}: exactly one event: {events:?}");
    assert!(
        events[0].contains("ImmediateRelease") || events[0].contains("FencedRelease"),
        "{what}: {events:?}"
    );
}

#[test]
fn dmabuf_commits_wait_for_acquire_fences_and_each_release_gets_one_event() {
    let Some(vgem) = vgem() else {
        return;
    };
    let server = server();
    let (mut client, manager) = sync_client(&server);
    let linux_dmabuf = client
        .bind_global::<ZwpLinuxDmabufV1, _>(3, IgnoreEvents)
        .expect("linux-dmabuf is advertised");
    let w = client.create_window("explicit", "test.explicit");
    client.wait_configured(w, T).unwrap();
    let surface = client.state.windows[w.0].surface.clone();
    let sync = sync_for(&client, &manager, &surface);
    let red = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x00ff0000);
    let blue = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x000000ff);

    // 1. An unsignalled acquire fence: the commit is held, nothing shows.
    let mut pending = PendingFence::new(&vgem);
    sync.set_acquire_fence(pending.sync_file.as_fd());
    let red_release = EventLog::new();
    let _r1: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), red_release.clone());
    commit_buffer(&surface, &red);
    client.roundtrip().unwrap();
    let s = server.snapshot().unwrap();
    assert_eq!(
        (s.explicit_acquire.blocked, s.windows_with_content),
        (1, 0),
        "{s:?}"
    );
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0xff0000)).is_none(),
        "the red buffer must not be shown before its acquire fence signals"
    );
    assert_eq!(server.snapshot().unwrap().windows_with_content, 0);

    // The "GPU" finishes: the commit applies and its pixels are on screen.
    pending.signal();
    let s = server
        .wait_for("the red buffer after its acquire fence", T, |s| {
            s.windows_with_content == 1
        })
        .unwrap();
    assert_eq!(s.explicit_acquire.released, 1, "{s:?}");
    let capture = server.capture().unwrap();
    let (_, count) = find_color(&capture, rgb(0xff0000)).expect("red dma-buf pixels on screen");
    assert_eq!(count, (SIZE * SIZE) as usize);
    client.roundtrip().unwrap();
    assert!(
        red_release.is_empty(),
        "red is on screen: not released yet: {:?}",
        red_release.events()
    );

    // 2. An already-signalled fence: no blocker; red is replaced, so its release comes, once.
    let done = signalled_sync_file(&vgem);
    sync.set_acquire_fence(done.as_fd());
    let blue_release = EventLog::new();
    let _r2: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), blue_release.clone());
    commit_buffer(&surface, &blue);
    expect_one_release(&mut client, &red_release, "red, replaced by blue");
    let s = server.snapshot().unwrap();
    assert_eq!(
        (
            s.explicit_acquire.already_signaled,
            s.explicit_acquire.blocked
        ),
        (1, 1),
        "{s:?}"
    );
    // Both commits were explicitly synced: the implicit-sync wait never looked at them.
    assert_eq!((s.implicit.idle, s.implicit.blocked), (0, 0), "{s:?}");
    assert!(blue_release.is_empty(), "blue is on screen");
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0x0000ff)).is_some(),
        "blue on screen"
    );

    // 3. A commit without attach keeps blue and its release owed.
    surface.commit();
    client.roundtrip().unwrap();
    assert!(
        blue_release.is_empty(),
        "a commit without attach keeps the buffer"
    );
    assert_eq!(server.snapshot().unwrap().explicit_releases_owed, 1);

    // 4. The surface goes away: blue's release comes, once; red's stays at one.
    client.destroy_window(w);
    expect_one_release(&mut client, &blue_release, "the surface was destroyed");
    assert_eq!(red_release.len(), 1, "{:?}", red_release.events());
    assert_eq!(server.snapshot().unwrap().explicit_releases_owed, 0);
}
