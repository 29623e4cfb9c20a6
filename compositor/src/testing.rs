//! An embedded compositor for tests and tools: [`TestServer`] runs a real headless `fencegate`
//! on its own thread and its own socket, and answers questions about its state.
//!
//! Clients connect over the real socket, exactly as they would to the binary; only the questions
//! (what is mapped, how many surfaces exist, what is on screen) take a side channel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context};
use smithay::reexports::calloop::channel::{self, Event, Sender};
use smithay::utils::{Logical, Rectangle};

pub use fencegate_protocols::drm_syncobj::AcquireStats;
pub use fencegate_protocols::drm_syncobj::ReleaseStats;
pub use fencegate_protocols::explicit_sync::BufferReleaseStats;
pub use fencegate_protocols::implicit_sync::ImplicitSyncStats;

use crate::config::Config;
use crate::screenshot::Capture;
use crate::state::State;

/// What a test can ask the server.
enum Request {
    Snapshot(mpsc::Sender<Snapshot>),
    Capture(mpsc::Sender<Capture>),
    ProbeSyncobjHandles(usize, mpsc::Sender<Option<Vec<u32>>>),
    Stop,
}

/// The compositor's state as the test sees it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Mapped toplevels, bottom to top, with their geometry in output coordinates.
    pub windows: Vec<WindowInfo>,
    pub windows_with_content: usize,
    /// wl_surfaces alive across all clients.
    pub surfaces_alive: usize,
    pub frames_rendered: u64,
    pub renderer: &'static str,
    pub dmabuf_global: bool,
    /// Whether wp_linux_drm_syncobj_manager_v1 is advertised.
    pub drm_syncobj_global: bool,
    /// How acquire points were waited for (all zero without the global).
    pub acquire: AcquireStats,
    /// Whether zwp_linux_explicit_synchronization_v1 is advertised.
    pub explicit_sync_global: bool,
    /// How its acquire fences were waited for (all zero without the global).
    pub explicit_acquire: AcquireStats,
    /// Its release objects whose one event is still owed.
    pub explicit_releases_owed: usize,
    /// Its releases asked for, and which event each got (all zero without the global).
    pub explicit_release: BufferReleaseStats,
    /// Release points set by clients, and how each was signalled: by importing the frame's
    /// fence, or from the CPU (all zero without the global).
    pub release: ReleaseStats,
    /// How dma-bufs committed without explicit sync were waited for.
    pub implicit: ImplicitSyncStats,
}

#[derive(Clone, Debug)]
pub struct WindowInfo {
    pub title: Option<String>,
    pub app_id: Option<String>,
    pub geometry: Rectangle<i32, Logical>,
}

/// A headless fencegate on a private socket, stopped and cleaned up on drop.
pub struct TestServer {
    socket: PathBuf,
    requests: Sender<Request>,
    thread: Option<JoinHandle<anyhow::Result<i32>>>,
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

impl TestServer {
    /// Starts a headless server with `config` (its backend and socket are overridden).
    pub fn start(mut config: Config) -> anyhow::Result<TestServer> {
        static SERVERS: AtomicU32 = AtomicU32::new(0);
        let socket = std::env::temp_dir().join(format!(
            "fencegate-test-{}-{}.sock",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        config.backend = crate::BackendChoice::Headless;
        config.socket = Some(
            socket
                .to_str()
                .context("temp dir is not UTF-8")?
                .to_string(),
        );

        let (requests, receiver) = channel::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fencegate-test-server".into())
            .spawn(move || {
                let setup: crate::Setup = Box::new(move |state: &mut State| {
                    state
                        .core
                        .loop_handle
                        .insert_source(receiver, |event, _, state| {
                            if let Event::Msg(request) = event {
                                answer(state, request);
                            }
                        })
                        .map_err(|err| anyhow!("inserting the test channel: {err}"))?;
                    let _ = ready_tx.send(());
                    Ok(())
                });
                crate::run(config, Some(setup))
            })
            .context("starting the server thread")?;
        let mut server = TestServer {
            socket,
            requests,
            thread: Some(thread),
        };
        if ready_rx.recv_timeout(ANSWER_TIMEOUT).is_err() {
            let err = server
                .join()
                .err()
                .unwrap_or_else(|| anyhow!("server did not start"));
            return Err(err.context("the test server failed to start"));
        }
        Ok(server)
    }

    /// What WAYLAND_DISPLAY should be for clients of this server (an absolute path).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn socket_str(&self) -> &str {
        self.socket.to_str().expect("created from a str")
    }

    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        self.ask(Request::Snapshot)
    }

    /// The output as drawn by the next frame.
    pub fn capture(&self) -> anyhow::Result<Capture> {
        self.ask(Request::Capture)
    }

    /// The syncobj handles the kernel hands out next on the compositor's import device: `n`
    /// syncobjs created there and destroyed again, in the compositor's own DRM file. `None`
    /// without linux-drm-syncobj-v1.
    ///
    /// The kernel allocates handles from an idr, lowest free id first, so a handle the
    /// compositor leaked sits among the lowest ids and shifts this set: equal probes before and
    /// after a workload mean no handle was left behind.
    pub fn probe_syncobj_handles(&self, n: usize) -> anyhow::Result<Option<Vec<u32>>> {
        self.ask(|reply| Request::ProbeSyncobjHandles(n, reply))
    }

    /// Polls `snapshot` until `cond` holds.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Snapshot) -> bool,
    ) -> anyhow::Result<Snapshot> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot()?;
            if cond(&snapshot) {
                return Ok(snapshot);
            }
            if std::time::Instant::now() > deadline {
                return Err(anyhow!(
                    "timed out waiting for {what}; last snapshot: {snapshot:#?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server and returns its exit status.
    pub fn stop(mut self) -> anyhow::Result<i32> {
        let _ = self.requests.send(Request::Stop);
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<i32> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        thread
            .join()
            .map_err(|_| anyhow!("the server thread panicked"))?
    }

    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Request) -> anyhow::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .send(make(tx))
            .map_err(|_| anyhow!("the server is gone"))?;
        rx.recv_timeout(ANSWER_TIMEOUT)
            .map_err(|_| anyhow!("the server did not answer"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.requests.send(Request::Stop);
            let _ = self.join();
        }
    }
}

fn answer(state: &mut State, request: Request) {
    match request {
        Request::Snapshot(reply) => {
            let _ = reply.send(snapshot(state));
        }
        Request::Capture(reply) => {
            state
                .core
                .capture_requests
                .push(Box::new(move |capture: &Capture| {
                    let _ = reply.send(Capture {
                        width: capture.width,
                        height: capture.height,
                        rgba: capture.rgba.clone(),
                    });
                }));
        }
        Request::ProbeSyncobjHandles(n, reply) => {
            let handles = state.core.drm_syncobj.as_ref().map(|syncobj| {
                let device = syncobj.import_device();
                let objects: Vec<_> = (0..n)
                    .map(|_| {
                        fence_bridge::Syncobj::create(device).expect("DRM_IOCTL_SYNCOBJ_CREATE")
                    })
                    .collect();
                objects.iter().map(|o| u32::from(o.handle())).collect()
            });
            let _ = reply.send(handles);
        }
        Request::Stop => state.core.request_exit(0, "test server stopped"),
    }
}

fn snapshot(state: &State) -> Snapshot {
    use smithay::wayland::compositor::with_states;
    use smithay::wayland::shell::xdg::XdgToplevelSurfaceData;

    let core = &state.core;
    let windows = core
        .space
        .elements()
        .filter_map(|window| {
            let toplevel = window.toplevel()?;
            let (title, app_id) = with_states(toplevel.wl_surface(), |states| {
                let data = states
                    .data_map
                    .get::<XdgToplevelSurfaceData>()?
                    .lock()
                    .ok()?;
                Some((data.title.clone(), data.app_id.clone()))
            })
            .unwrap_or_default();
            let geometry = core.space.element_geometry(window)?;
            Some(WindowInfo {
                title,
                app_id,
                geometry,
            })
        })
        .collect();
    Snapshot {
        windows,
        windows_with_content: core.windows_with_content(),
        surfaces_alive: core.surfaces_alive,
        frames_rendered: core.frames_rendered,
        renderer: state.backend.renderer_name(),
        dmabuf_global: core.dmabuf.is_some(),
        drm_syncobj_global: core.drm_syncobj.is_some(),
        acquire: core
            .drm_syncobj
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default(),
        release: core
            .drm_syncobj
            .as_ref()
            .map(|s| s.release_stats())
            .unwrap_or_default(),
        implicit: core.implicit_sync.stats(),
        explicit_sync_global: core.explicit_sync.is_some(),
        explicit_acquire: core
            .explicit_sync
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default(),
        explicit_releases_owed: core.explicit_sync.as_ref().map_or(0, |s| s.releases_owed()),
        explicit_release: core
            .explicit_sync
            .as_ref()
            .map(|s| s.release_stats())
            .unwrap_or_default(),
    }
}
