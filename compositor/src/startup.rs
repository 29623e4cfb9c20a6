//! Building the compositor: display, backend, output, protocol globals, then the sources that
//! feed the loop. `run` is the whole life of a `fencegate` process.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use fence_bridge::DrmDevice;
use fencegate_protocols::drm_syncobj::DrmSyncobjState;
use fencegate_protocols::explicit_sync::ExplicitSyncState;
use fencegate_protocols::implicit_sync::ImplicitSyncState;
use smithay::desktop::{PopupManager, Space, WindowSurfaceType};
use smithay::input::keyboard::XkbConfig;
use smithay::input::SeatState;
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::{EventLoop, Interest, LoopHandle, Mode as FdMode, PostAction};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Display, DisplayHandle};
use smithay::utils::{Clock, Logical, Monotonic, Point, Rectangle};
use smithay::wayland::compositor::CompositorState;
use smithay::wayland::dmabuf::{DmabufFeedbackBuilder, DmabufState};
use smithay::wayland::output::OutputManagerState;
use smithay::wayland::presentation::PresentationState;
use smithay::wayland::selection::data_device::DataDeviceState;
use smithay::wayland::shell::xdg::XdgShellState;
use smithay::wayland::shm::ShmState;
use smithay::wayland::viewporter::ViewporterState;
use tracing::{info, warn};

use crate::backend::{Backend, Drm, Headless, Winit};
use crate::config::{BackendChoice, Config};
use crate::output_hotplug::{refresh_period, OutputSpec};
use crate::placement::Cascade;
use crate::screenshot::ScreenshotPlan;
use crate::state::{Core, State};
use crate::{frame_clock, socket, spawn};

/// Extra wiring for a compositor embedded in another program (tests, `fencegate check`).
pub type Setup = Box<dyn FnOnce(&mut State) -> anyhow::Result<()>>;

/// Runs a compositor until it is asked to stop; returns the exit status it should end with.
/// `setup` runs once everything is built, before the first frame.
pub fn run(config: Config, setup: Option<Setup>) -> anyhow::Result<i32> {
    let mut event_loop: EventLoop<'static, State> =
        EventLoop::try_new().context("creating the event loop")?;
    let display: Display<State> = Display::new().context("creating the Wayland display")?;
    let mut state = build_state(
        &config,
        display.handle(),
        event_loop.handle(),
        event_loop.get_signal(),
    )?;

    event_loop
        .handle()
        .insert_source(
            Generic::new(display, Interest::READ, FdMode::Level),
            |_, display, state| {
                // SAFETY: the display is owned by this source and never dropped while dispatching.
                let display = unsafe { display.get_mut() };
                if let Err(err) = display.dispatch_clients(state) {
                    warn!("dispatching clients failed: {err}");
                }
                Ok(PostAction::Continue)
            },
        )
        .map_err(|err| anyhow!("inserting the display source: {err}"))?;

    let socket_name = socket::listen(config.socket.as_deref(), &event_loop.handle())?;
    if !config.quiet {
        println!(
            "fencegate: listening on WAYLAND_DISPLAY={socket_name} (backend {:?}, renderer {})",
            config.backend.resolve(),
            state.backend.renderer_name()
        );
    }
    state.core.socket_name = socket_name.clone();

    if !config.command.is_empty() {
        spawn::spawn_client(
            &config.command,
            &socket_name,
            config.quiet,
            &event_loop.handle(),
        )?;
    }
    if let Some(setup) = setup {
        setup(&mut state)?;
    }
    frame_clock::start(&mut state);

    event_loop
        .run(None, &mut state, |state| {
            if let Err(err) = state.core.display_handle.flush_clients() {
                warn!("flushing clients failed: {err}");
            }
        })
        .context("running the event loop")?;

    for at_exit in std::mem::take(&mut state.core.at_exit) {
        at_exit(&mut state);
    }
    let code = state.core.exit_code.unwrap_or(0);
    // Dropping the state and the loop removes the socket and its lock file.
    drop(state);
    drop(event_loop);
    Ok(code)
}

fn build_state(
    config: &Config,
    display_handle: DisplayHandle,
    loop_handle: LoopHandle<'static, State>,
    loop_signal: smithay::reexports::calloop::LoopSignal,
) -> anyhow::Result<State> {
    let mut drm_sources = None;
    let (mut backend, winit_events) = match config.backend.resolve() {
        BackendChoice::Headless => (
            Backend::Headless(Box::new(Headless::new(
                config.size.width,
                config.size.height,
                config.pixman,
            )?)),
            None,
        ),
        BackendChoice::Winit => {
            let (winit, events) = Winit::new()?;
            (Backend::Winit(Box::new(winit)), Some(events))
        }
        BackendChoice::Drm => {
            let (drm, sources) = Drm::new(config.drm_device.as_deref(), config.pixman)?;
            drm_sources = Some(sources);
            (Backend::Drm(Box::new(drm)), None)
        }
        BackendChoice::Auto => unreachable!("resolve() never returns Auto"),
    };

    let config_refresh_mhz = (config.refresh * 1000.0).round() as i32;
    let outputs = match &backend {
        Backend::Headless(headless) => vec![OutputSpec {
            name: "HEADLESS-1".to_string(),
            model: "headless",
            size: headless.size(),
            refresh_mhz: config_refresh_mhz,
        }],
        Backend::Winit(winit) => vec![OutputSpec {
            name: "WINIT-1".to_string(),
            model: "winit",
            size: winit.window_size(),
            refresh_mhz: config_refresh_mhz,
        }],
        Backend::Drm(drm) => drm.outputs(),
    };

    let clock = Clock::<Monotonic>::new();
    let mut seat_state = SeatState::new();
    let mut seat = seat_state.new_wl_seat(&display_handle, "seat0");
    if let Err(err) = seat.add_keyboard(XkbConfig::default(), 200, 25) {
        warn!("no keyboard: the XKB keymap failed to load ({err:?}); is xkb-data installed?");
    }
    seat.add_pointer();

    let space = Space::default();

    let (dmabuf, dmabuf_version) = match create_dmabuf_global(&mut backend, &display_handle) {
        Some((state, global, version)) => (Some((state, global)), version),
        None => (None, 0),
    };
    let mut drm_syncobj = create_drm_syncobj_global(&backend, &display_handle);
    let mut implicit_sync = ImplicitSyncState::new();
    implicit_sync.set_timeout(config.fence_timeout());
    implicit_sync.set_action(config.fence_timeout_action.into());
    if let Some(syncobj) = drm_syncobj.as_mut() {
        syncobj.set_acquire_timeout(config.fence_timeout());
        syncobj.set_timeout_action(config.fence_timeout_action.into());
    }
    // Explicit sync with sync_files needs no device, only buffers it applies to: dma-bufs.
    let explicit_sync = dmabuf.is_some().then(|| {
        info!("zwp_linux_explicit_synchronization_v1 v2");
        let mut state = ExplicitSyncState::new::<State>(&display_handle);
        state.set_acquire_timeout(config.fence_timeout());
        state.set_timeout_action(config.fence_timeout_action.into());
        state
    });
    let mut core = Core {
        compositor_state: CompositorState::new::<State>(&display_handle),
        xdg_shell_state: XdgShellState::new::<State>(&display_handle),
        shm_state: ShmState::new::<State>(&display_handle, vec![]),
        seat_state,
        output_manager_state: OutputManagerState::new_with_xdg_output::<State>(&display_handle),
        data_device_state: DataDeviceState::new::<State>(&display_handle),
        viewporter_state: ViewporterState::new::<State>(&display_handle),
        presentation_state: PresentationState::new::<State>(&display_handle, clock.id() as u32),
        dmabuf,
        dmabuf_version,
        drm_syncobj,
        explicit_sync,
        implicit_sync,
        space,
        popups: PopupManager::default(),
        seat,
        outputs: Vec::new(),
        output_globals: HashMap::new(),
        placement: Cascade::default(),
        suppressed_keys: Vec::new(),
        socket_name: String::new(),
        screenshot: config.screenshot.clone().map(|path| {
            ScreenshotPlan::new(
                path,
                config.screenshot_after_frames,
                config.screenshot_windows,
                config.exit_after_screenshot,
            )
        }),
        exit_code: None,
        frames_rendered: 0,
        frame_interval: refresh_period(config_refresh_mhz),
        frame_errors: HashMap::new(),
        surfaces_alive: 0,
        capture_requests: Vec::new(),
        client_log: Default::default(),
        at_exit: Vec::new(),
        display_handle,
        loop_handle: loop_handle.clone(),
        loop_signal,
        clock,
    };
    for spec in &outputs {
        core.output_connected(spec);
    }
    if let Some(events) = winit_events {
        Winit::insert_events(events, &loop_handle)?;
    }
    if let Some(sources) = drm_sources {
        Drm::insert_sources(sources, &loop_handle)?;
    }
    Ok(State { backend, core })
}

/// linux-dmabuf with what the renderer imports: version 4+ with default feedback where the
/// render node is known, version 3 where it is not, none where no format is importable.
fn create_dmabuf_global(
    backend: &mut Backend,
    display_handle: &DisplayHandle,
) -> Option<(DmabufState, smithay::wayland::dmabuf::DmabufGlobal, u32)> {
    let formats = backend.dmabuf_formats();
    if formats.iter().next().is_none() {
        info!("linux-dmabuf not advertised: the renderer imports no dma-buf format");
        return None;
    }
    let mut state = DmabufState::new();
    let feedback = backend.render_node().and_then(|node| {
        DmabufFeedbackBuilder::new(node.dev_id(), formats.clone())
            .build()
            .inspect_err(|err| warn!("cannot build dma-buf feedback for {node}: {err}"))
            .ok()
            .map(|feedback| (node, feedback))
    });
    let (global, version) = match feedback {
        Some((node, feedback)) => {
            info!(%node, formats = formats.iter().count(), "linux-dmabuf v5 with default feedback");
            let global =
                state.create_global_with_default_feedback::<State>(display_handle, &feedback);
            (global, 5)
        }
        None => {
            info!(
                formats = formats.iter().count(),
                "linux-dmabuf v3 (no render node for feedback)"
            );
            let formats = formats.into_iter().collect::<Vec<_>>();
            (state.create_global::<State>(display_handle, formats), 3)
        }
    };
    Some((state, global, version))
}

/// linux-drm-syncobj-v1 on the first DRM render node with timeline syncobjs (the renderer's
/// own node first): clients import their timelines there. None, with the reason logged, where
/// there is none (the build machines have no /dev/dri at all).
fn create_drm_syncobj_global(
    backend: &Backend,
    display_handle: &DisplayHandle,
) -> Option<DrmSyncobjState> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = backend.render_node().and_then(|node| node.dev_path()) {
        candidates.push(path);
    }
    match std::fs::read_dir("/dev/dri") {
        Ok(entries) => {
            let mut nodes: Vec<PathBuf> = entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.starts_with("renderD"))
                })
                .collect();
            nodes.sort();
            candidates.extend(nodes);
        }
        Err(err) => {
            info!("linux-drm-syncobj-v1 not advertised: no /dev/dri ({err})");
            return None;
        }
    }
    candidates.dedup();
    if candidates.is_empty() {
        info!("linux-drm-syncobj-v1 not advertised: no DRM render node under /dev/dri");
        return None;
    }
    let mut why_not = Vec::new();
    for path in candidates {
        let device = match DrmDevice::open(&path) {
            Ok(device) => device,
            Err(err) => {
                why_not.push(format!("{}: {err}", path.display()));
                continue;
            }
        };
        match DrmSyncobjState::new::<State>(display_handle, device) {
            Ok(state) => {
                info!(
                    "linux-drm-syncobj-v1 on {} ({})",
                    path.display(),
                    state.import_device().driver_name()
                );
                return Some(state);
            }
            Err(err) => why_not.push(err.to_string()),
        }
    }
    info!(
        "linux-drm-syncobj-v1 not advertised: no render node with timeline syncobjs ({})",
        why_not.join("; ")
    );
    None
}

impl Core {
    /// The primary output's area in the space.
    pub fn output_area(&self) -> Rectangle<i32, Logical> {
        self.space
            .output_geometry(self.primary_output())
            .unwrap_or_else(|| Rectangle::from_size((1, 1).into()))
    }

    /// The smallest rectangle holding every plugged-in output: where the pointer may go.
    pub fn outputs_area(&self) -> Rectangle<i32, Logical> {
        self.space
            .outputs()
            .filter_map(|output| self.space.output_geometry(output))
            .reduce(|a, b| a.merge(b))
            .unwrap_or_else(|| Rectangle::from_size((1, 1).into()))
    }

    /// The surface under `location` (space coordinates) and that surface's origin.
    pub fn surface_under(
        &self,
        location: Point<f64, Logical>,
    ) -> Option<(WlSurface, Point<f64, Logical>)> {
        let (window, window_loc) = self.space.element_under(location)?;
        window
            .surface_under(location - window_loc.to_f64(), WindowSurfaceType::ALL)
            .map(|(surface, surface_loc)| (surface, (surface_loc + window_loc).to_f64()))
    }
}
