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
//!   destruction — not before; for a buffer a GLES frame sampled, `fenced_release` with that
//!   frame's fence (a real sync_file), counted by the compositor.

mod common;

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dmabuf::{bind_linux_dmabuf, commit_buffer, dmabuf_buffer, SIZE};
use common::protocol_errors::{expect_error, others_carry_on};
use common::test_server::{client_with_global, bare_surface, configured_window, headless_server};
use common::vgem_fence::{signalled_sync_file, PendingFence};
use common::{find_color, rgb, vgem_card};
use fencegate::testing::TestServer;
use fence_bridge::SyncFile;
use fencegate_clients::{Client, ClientState, EventLog, IgnoreEvents};
use wayland_client::{Connection, Dispatch, QueueHandle};
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_buffer_release_v1::{self, ZwpLinuxBufferReleaseV1};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1;

const T: Duration = Duration::from_secs(30);
const MANAGER: &str = "zwp_linux_explicit_synchronization_v1";
const SURFACE: &str = "zwp_linux_surface_synchronization_v1";

/// A client with the manager bound.
fn sync_client(server: &TestServer) -> (Client, ZwpLinuxExplicitSynchronizationV1) {
    client_with_global(server, 2)
}

fn sync_for(
    client: &Client,
    manager: &ZwpLinuxExplicitSynchronizationV1,
    surface: &WlSurface,
) -> ZwpLinuxSurfaceSynchronizationV1 {
    manager.get_synchronization(surface, client.qh(), IgnoreEvents)
}

#[test]
fn every_protocol_error_reaches_its_client_and_the_others_carry_on() {
    let Some(vgem) = vgem_card() else {
        return;
    };
    let server = headless_server();
    let snapshot = server.snapshot().unwrap();
    assert!(snapshot.explicit_sync_global, "{snapshot:?}");

    let (mut bystander, bystander_manager) = sync_client(&server);
    let (w, bystander_surface) =
        configured_window(&mut bystander, "bystander", "test.bystander", T);
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
        let (w, window_surface) = configured_window(&mut client, "shm", "test.shm", T);
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
        let (w, surface) = configured_window(&mut client, "bad", "test.bad", T);
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

/// One event of a `zwp_linux_buffer_release_v1`, with a `fenced_release`'s fence kept.
#[derive(Debug)]
enum Released {
    Fenced(SyncFile),
    Immediate,
}

/// The events one release object received.
#[derive(Clone, Default)]
struct Releases(Arc<Mutex<Vec<Released>>>);

impl Releases {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl Dispatch<ZwpLinuxBufferReleaseV1, Releases> for ClientState {
    fn event(
        _: &mut Self,
        _: &ZwpLinuxBufferReleaseV1,
        event: zwp_linux_buffer_release_v1::Event,
        releases: &Releases,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let released = match event {
            zwp_linux_buffer_release_v1::Event::FencedRelease { fence } => {
                Released::Fenced(SyncFile::from(fence))
            }
            zwp_linux_buffer_release_v1::Event::ImmediateRelease => Released::Immediate,
            _ => unreachable!("zwp_linux_buffer_release_v1 has two events"),
        };
        releases.0.lock().unwrap().push(released);
    }
}

/// Dispatches until `releases` has an event (or `T`), checks it is the only one and, in the
/// guest where frames are drawn with GLES, that it is a `fenced_release` whose fence is a real
/// sync_file that signals.
#[track_caller]
fn expect_one_fenced_release(client: &mut Client, releases: &Releases, what: &str) {
    client
        .dispatch_until(T, what, |_| releases.len() > 0)
        .unwrap_or_else(|err| panic!("{what}: no release event: {err}"));
    client.roundtrip().unwrap();
    let events = releases.0.lock().unwrap();
    assert_eq!(events.len(), 1, "{what}: exactly one event: {events:?}");
    let Released::Fenced(fence) = &events[0] else {
        panic!("{what}: a buffer a GLES frame sampled gets fenced_release, not {events:?}");
    };
    let info = fence
        .info()
        .unwrap_or_else(|err| panic!("{what}: not a sync_file: {err}"));
    assert!(
        fence
            .wait_timeout(Some(T))
            .expect("waiting on the release fence"),
        "{what}: the frame's fence never signalled: {info:?}"
    );
}

#[test]
fn dmabuf_commits_wait_for_acquire_fences_and_each_release_gets_one_event() {
    let Some(vgem) = vgem_card() else {
        return;
    };
    let server = headless_server();
    let (mut client, manager) = sync_client(&server);
    let linux_dmabuf = bind_linux_dmabuf(&client);
    let (w, surface) = configured_window(&mut client, "explicit", "test.explicit", T);
    let sync = sync_for(&client, &manager, &surface);
    let red = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x00ff0000);
    let blue = dmabuf_buffer(&mut client, &linux_dmabuf, &vgem, 0x000000ff);

    // 1. An unsignalled acquire fence: the commit is held, nothing shows.
    let mut pending = PendingFence::new(&vgem);
    sync.set_acquire_fence(pending.sync_file.as_fd());
    let red_release = Releases::default();
    let _r1: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), red_release.clone());
    commit_buffer(&surface, &red.buffer);
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
    assert_eq!(red_release.len(), 0, "red is on screen: not released yet");

    // 2. An already-signalled fence: no blocker; red is replaced, so its release comes, once.
    let done = signalled_sync_file(&vgem);
    sync.set_acquire_fence(done.as_fd());
    let blue_release = Releases::default();
    let _r2: ZwpLinuxBufferReleaseV1 = sync.get_release(client.qh(), blue_release.clone());
    commit_buffer(&surface, &blue.buffer);
    expect_one_fenced_release(&mut client, &red_release, "red, replaced by blue");
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
    assert_eq!(blue_release.len(), 0, "blue is on screen");
    let capture = server.capture().unwrap();
    assert!(
        find_color(&capture, rgb(0x0000ff)).is_some(),
        "blue on screen"
    );

    // 3. A commit without attach keeps blue and its release owed.
    surface.commit();
    client.roundtrip().unwrap();
    assert_eq!(
        blue_release.len(),
        0,
        "a commit without attach keeps the buffer"
    );
    assert_eq!(server.snapshot().unwrap().explicit_releases_owed, 1);

    // 4. The surface goes away: blue's release comes, once; red's stays at one.
    client.destroy_window(w);
    expect_one_fenced_release(&mut client, &blue_release, "the surface was destroyed");
    assert_eq!(red_release.len(), 1, "red's release stays at one event");
    let s = server.snapshot().unwrap();
    assert_eq!(s.explicit_releases_owed, 0, "{s:?}");
    // Both buffers were drawn by GLES frames, so both releases carried a frame's fence.
    assert_eq!(
        (s.explicit_release.taken, s.explicit_release.fenced),
        (2, 2),
        "{s:?}"
    );
    assert_eq!(s.explicit_release.owed(), 0, "{s:?}");
}
