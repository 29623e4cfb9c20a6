//! DRM session backend: fencegate as the display server of a seat. libseat opens the session
//! (logind or seatd) and the devices, udev names the GPU, libinput reads input, GBM allocates
//! the scanout buffers, EGL (or pixman) renders into them, and atomic KMS shows them on every
//! connected output, each with a CRTC of its own ([`KmsOutput`]). Each output commits and
//! flips on its own: one output's flip in flight never holds another's frame.
//!
//! # Software rendering on a KMS device
//! A KMS device whose Mesa driver renders in software (kms_swrast + llvmpipe, as virtio-gpu
//! without virgl and vkms) is a supported configuration: the log says so and fencegate runs.
//! Client dma-bufs go through [`GuardedGles`] there, as on the headless backend.
//!
//! # Fences
//! Client fences never reach the display: a surface state is latched only once its acquire
//! fences have signalled (`fencegate_protocols::commit_blocker`), so a frame never waits for a
//! client and no client can delay a commit. The in-fence a commit puts on the primary plane's
//! `IN_FENCE_FD` is fencegate's own: the render fence of a composited frame, or an already
//! signalled fence for a client buffer scanned out directly (see `direct_scanout`). Each commit
//! also asks for the CRTC's `OUT_FENCE_PTR` fence.
//!
//! # Session
//! When the session is paused (VT switch, Ctrl+Alt+F<n>), DRM master and input are gone: no
//! frame is committed and input is suspended. Clients, surfaces and fences are untouched. On
//! resume the next frame sets the mode again and is drawn whole.

mod direct_scanout;
mod kms_output;
mod scanout_feedback;

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use drm::control::connector;
use fence_bridge::{
    read_flip_events, Access, DmaBuf, DrmDevice, FenceProps, FlipEvent, SyncFile, Syncobj,
};
use fencegate_protocols::ScanoutFence;
use smithay::backend::allocator::dmabuf::Dmabuf;
use smithay::backend::allocator::format::FormatSet;
use smithay::backend::allocator::gbm::{GbmAllocator, GbmBufferFlags, GbmDevice};
use smithay::backend::drm::{DrmDeviceFd, DrmNode, NodeType};
use smithay::backend::egl::{EGLContext, EGLDisplay};
use smithay::backend::input::InputEvent;
use smithay::backend::libinput::{LibinputInputBackend, LibinputSessionInterface};
use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::gles::{ffi, GlesRenderer};
use smithay::backend::renderer::pixman::PixmanRenderer;
use smithay::backend::renderer::{Bind, ImportDma};
use smithay::backend::session::libseat::{LibSeatSession, LibSeatSessionNotifier};
use smithay::backend::session::{Event as SessionEvent, Session};
use smithay::backend::udev::{self, UdevBackend, UdevEvent};
use smithay::desktop::utils::OutputPresentationFeedback;
use smithay::output::Output;
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::{Interest, LoopHandle, Mode as FdMode, PostAction};
use smithay::reexports::input::Libinput;
use smithay::reexports::rustix::fs::OFlags;
use smithay::reexports::wayland_protocols::wp::presentation_time::server::wp_presentation_feedback;
use smithay::utils::{DeviceFd, Physical, Size, Transform};
use smithay::wayland::presentation::Refresh;
use tracing::{debug, error, info, warn};

use self::direct_scanout::ClientFramebuffers;
use self::kms_output::{is_not_master, KmsOutput, Scanned, ScanoutBuffers};
use self::scanout_feedback::ScanoutFeedback;
use super::guarded_gles::GuardedGles;
use crate::output_hotplug::{refresh_period, OutputSpec};
use crate::render::{render_space, RenderedFrame};
use crate::state::{Core, State};

pub struct Drm {
    session: LibSeatSession,
    card: DrmDeviceFd,
    render_node: Option<DrmNode>,
    gbm: GbmDevice<DrmDeviceFd>,
    renderer: ScanoutRenderer,
    /// Every output driven, in the order found; an unplugged one stays, disabled.
    outputs: Vec<DrmOutput>,
    /// Where the outputs' swapchains come from (one more for an output plugged in later).
    buffers: ScanoutBuffers,
    client_framebuffers: ClientFramebuffers,
    /// An already signalled sync_file: the in-fence of a client buffer scanned out directly,
    /// which switches off the kernel's implicit-fence wait (see `direct_scanout`). None where
    /// the device can make none (see `signalled_sync_file`).
    signalled: Option<SyncFile>,
    /// Per-surface dma-buf feedback with the scanout tranche; None without a render node.
    feedback: Option<ScanoutFeedback>,
    fence_props: FenceProps,
    libinput: Libinput,
    /// False while the session is paused: no DRM master, no input.
    active: bool,
    /// Set while commits fail for want of DRM master (logged once).
    not_master: bool,
    /// The card's `dev_t`, to pick its udev events out.
    device_id: Option<libc::dev_t>,
}

/// One output the backend drives: its KMS pipeline and what the renderer knows of its screen.
struct DrmOutput {
    kms: KmsOutput,
    damage_tracker: OutputDamageTracker,
    /// Whether its last frame was a client buffer scanned out directly (logged on change).
    direct: bool,
}

impl DrmOutput {
    /// Drives the connector `info` (named `name`) on a CRTC none of `outputs` has; None, with
    /// the reason logged, when it cannot be driven.
    fn drive(
        card: &DrmDeviceFd,
        info: &connector::Info,
        name: String,
        outputs: &[DrmOutput],
        buffers: &ScanoutBuffers,
    ) -> Option<DrmOutput> {
        let taken: Vec<_> = outputs.iter().map(|o| o.kms.crtc).collect();
        match KmsOutput::new(card, info, name.clone(), &taken, buffers.clone()) {
            Ok(kms) => Some(DrmOutput::new(kms)),
            Err(err) => {
                warn!(connector = %name, "drm: not driven: {err:#}");
                None
            }
        }
    }

    fn new(kms: KmsOutput) -> DrmOutput {
        let mut output = DrmOutput {
            kms,
            damage_tracker: OutputDamageTracker::new((1, 1), 1.0, Transform::Normal),
            direct: false,
        };
        output.draw_whole_next();
        output
    }

    fn mode_size(&self) -> Size<i32, Physical> {
        let (width, height) = self.kms.mode.size();
        Size::from((i32::from(width), i32::from(height)))
    }

    /// The mode's refresh rate in mHz, from its pixel clock (vrefresh is rounded to whole Hz).
    fn refresh_mhz(&self) -> i32 {
        let mode = &self.kms.mode;
        let total = u64::from(mode.hsync().2) * u64::from(mode.vsync().2);
        if total == 0 {
            return mode.vrefresh() as i32 * 1000;
        }
        (u64::from(mode.clock()) * 1_000_000 / total) as i32
    }

    fn spec(&self) -> OutputSpec {
        OutputSpec {
            name: self.kms.name.clone(),
            model: "drm",
            size: self.mode_size(),
            refresh_mhz: self.refresh_mhz(),
        }
    }

    /// Forgets what the screen shows: the next composited frame is drawn whole at the mode's
    /// size.
    fn draw_whole_next(&mut self) {
        self.damage_tracker = OutputDamageTracker::new(self.mode_size(), 1.0, Transform::Normal);
    }
}

enum ScanoutRenderer {
    Gles(Box<GuardedGles>),
    Pixman(PixmanRenderer),
}

/// The event sources [`Drm::new`] creates; [`Drm::insert_sources`] hands them to the loop.
pub struct DrmSources {
    session: LibSeatSessionNotifier,
    input: LibinputInputBackend,
    /// The card's fd, duplicated: the loop must hold no `DrmDeviceFd`, whose last drop gives
    /// DRM master back, which has to happen before the session (in the loop too) closes.
    card: std::os::fd::OwnedFd,
    udev: Option<UdevBackend>,
}

impl Drm {
    /// Opens the session, the GPU (`device`, else udev's primary GPU of the seat), its
    /// connected outputs and the seat's input devices.
    pub fn new(device: Option<&Path>, force_pixman: bool) -> anyhow::Result<(Drm, DrmSources)> {
        let (mut session, notifier) = LibSeatSession::new().map_err(|err| {
            anyhow!(
                "no libseat session ({err}): run fencegate from a text console (logind), or \
                 under `seatd-launch`"
            )
        })?;
        let seat = session.seat();
        let card_path = match device {
            Some(path) => path.to_owned(),
            None => pick_gpu(&seat)?,
        };
        let fd = session
            .open(
                &card_path,
                OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            )
            .with_context(|| format!("opening {} through the session", card_path.display()))?;
        let card = DrmDeviceFd::new(DeviceFd::from(fd));
        let render_node = DrmNode::from_file(card.as_fd())
            .ok()
            .and_then(|node| node.node_with_type(NodeType::Render))
            .and_then(Result::ok);
        let gbm = GbmDevice::new(card.clone()).context("GBM device")?;
        let signalled = signalled_sync_file(&card);

        let renderer = if force_pixman {
            info!("drm: pixman renderer (asked for with --pixman)");
            ScanoutRenderer::Pixman(PixmanRenderer::new().context("pixman renderer")?)
        } else {
            match init_gles(&gbm) {
                Ok((renderer, gl_renderer)) => {
                    if is_software(&gl_renderer) {
                        info!(
                            "drm: GLES on {gl_renderer}: Mesa renders this KMS device in \
                             software; a supported configuration, only slower"
                        );
                    } else {
                        info!("drm: GLES on {gl_renderer}");
                    }
                    ScanoutRenderer::Gles(Box::new(GuardedGles::new(renderer, render_node)))
                }
                Err(err) => {
                    warn!(
                        "drm: no usable EGL on {} ({err:#}); using pixman",
                        card_path.display()
                    );
                    ScanoutRenderer::Pixman(PixmanRenderer::new().context("pixman renderer")?)
                }
            }
        };

        let linear = matches!(renderer, ScanoutRenderer::Pixman(_));
        let mut flags = GbmBufferFlags::RENDERING | GbmBufferFlags::SCANOUT;
        if linear {
            flags |= GbmBufferFlags::LINEAR;
        }
        let buffers = ScanoutBuffers {
            allocator: GbmAllocator::new(gbm.clone(), flags),
            linear,
        };
        kms_output::enable_atomic(&card)?;
        let mut outputs: Vec<DrmOutput> = Vec::new();
        for (info, name) in kms_output::connected_connectors(&card)? {
            outputs.extend(DrmOutput::drive(&card, &info, name, &outputs, &buffers));
        }
        if outputs.is_empty() {
            bail!(
                "no connected connector with a mode on {}",
                card_path.display()
            );
        }
        let render_formats = match &renderer {
            ScanoutRenderer::Gles(renderer) => renderer.inner.dmabuf_formats(),
            ScanoutRenderer::Pixman(renderer) => renderer.dmabuf_formats(),
        };
        let card_node = DrmNode::from_file(card.as_fd()).ok();
        let feedback = match (card_node, render_node) {
            (Some(card_node), Some(render_node)) => {
                let plane = outputs[0].kms.plane;
                ScanoutFeedback::new(&card, card_node, render_node, plane, &render_formats)
                    .inspect_err(|err| warn!("drm: no scanout feedback: {err:#}"))
                    .ok()
            }
            _ => None,
        };
        let mut libinput = Libinput::new_with_udev(LibinputSessionInterface::from(session.clone()));
        if libinput.udev_assign_seat(&seat).is_err() {
            warn!("libinput: cannot assign seat {seat}: no input");
        }
        let input = LibinputInputBackend::new(libinput.clone());
        info!(
            "drm: session on seat {seat}, device {}, render node {}",
            card_path.display(),
            render_node
                .map(|n| n.to_string())
                .unwrap_or_else(|| "none".into())
        );
        let udev = UdevBackend::new(&seat)
            .inspect_err(|err| warn!("udev: no hotplug events ({err}): outputs stay as found"))
            .ok();
        let sources = DrmSources {
            session: notifier,
            input,
            card: card
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating the card's fd")?,
            udev,
        };
        let active = session.is_active();
        Ok((
            Drm {
                session,
                card,
                render_node,
                gbm,
                renderer,
                outputs,
                buffers,
                client_framebuffers: ClientFramebuffers::default(),
                signalled,
                feedback,
                fence_props: FenceProps::new(),
                libinput,
                active,
                not_master: false,
                device_id: card_node.map(|node| node.dev_id()),
            },
            sources,
        ))
    }

    /// Session changes, input and flip completions go to the loop.
    pub fn insert_sources(
        sources: DrmSources,
        loop_handle: &LoopHandle<'static, State>,
    ) -> anyhow::Result<()> {
        loop_handle
            .insert_source(sources.session, |event, _, state| {
                if let crate::backend::Backend::Drm(drm) = &mut state.backend {
                    drm.on_session_event(event);
                }
            })
            .map_err(|err| anyhow!("inserting the session source: {err}"))?;
        loop_handle
            .insert_source(sources.input, |event, _, state| {
                if !matches!(
                    event,
                    InputEvent::DeviceAdded { .. } | InputEvent::DeviceRemoved { .. }
                ) {
                    state.handle_input(event);
                }
            })
            .map_err(|err| anyhow!("inserting the libinput source: {err}"))?;
        if let Some(udev) = sources.udev {
            loop_handle
                .insert_source(udev, |event, _, state| {
                    debug!(?event, "udev event");
                    if let UdevEvent::Changed { device_id } = event {
                        state.on_device_changed(device_id);
                    }
                })
                .map_err(|err| anyhow!("inserting the udev source: {err}"))?;
        }
        loop_handle
            .insert_source(
                Generic::new(sources.card, Interest::READ, FdMode::Level),
                |_, card, state| {
                    match read_flip_events(card.as_fd()) {
                        Ok(events) => {
                            for event in events {
                                state.on_flip(event);
                            }
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => error!("reading DRM events: {err}"),
                    }
                    Ok(PostAction::Continue)
                },
            )
            .map_err(|err| anyhow!("inserting the DRM event source: {err}"))?;
        Ok(())
    }

    /// The outputs plugged in now, as the compositor announces them.
    pub fn outputs(&self) -> Vec<OutputSpec> {
        self.outputs
            .iter()
            .filter(|o| o.kms.is_enabled())
            .map(DrmOutput::spec)
            .collect()
    }

    fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.kms.name == name)
    }

    pub fn renderer_name(&self) -> &'static str {
        match self.renderer {
            ScanoutRenderer::Gles(_) => "gles",
            ScanoutRenderer::Pixman(_) => "pixman",
        }
    }

    pub fn render_node(&self) -> Option<DrmNode> {
        self.render_node
    }

    pub fn dmabuf_formats(&self) -> FormatSet {
        match &self.renderer {
            ScanoutRenderer::Gles(renderer) => renderer.inner.dmabuf_formats(),
            ScanoutRenderer::Pixman(renderer) => renderer.dmabuf_formats(),
        }
    }

    pub fn import_dmabuf(&mut self, dmabuf: &Dmabuf) -> anyhow::Result<()> {
        match &mut self.renderer {
            ScanoutRenderer::Gles(renderer) => renderer.import_client_dmabuf(dmabuf),
            ScanoutRenderer::Pixman(renderer) => renderer
                .import_dmabuf(dmabuf, None)
                .map(drop)
                .map_err(|e| anyhow!("{e:?}")),
        }
    }

    /// Flip timestamps come from the kernel at the start of scan-out.
    pub fn presentation_flags(&self) -> wp_presentation_feedback::Kind {
        wp_presentation_feedback::Kind::Vsync
            | wp_presentation_feedback::Kind::HwClock
            | wp_presentation_feedback::Kind::HwCompletion
    }

    /// Shows `output`'s next frame, unless the session is paused or its last commit has not
    /// flipped yet (then the frame is skipped, and the damage stays for the next one): a client
    /// buffer scanned out directly where one covers the output, else a composited frame.
    pub fn render(
        &mut self,
        core: &Core,
        output: &Output,
        capture: bool,
    ) -> anyhow::Result<RenderedFrame> {
        let Some(index) = self.output_index(&output.name()) else {
            return Ok(RenderedFrame::skipped());
        };
        if !self.active || self.outputs[index].kms.is_busy() {
            return Ok(RenderedFrame::skipped());
        }
        // A capture reads the renderer's target: composite that frame.
        if !capture {
            if let Some(frame) = self.scan_out(core, output, index)? {
                return Ok(frame);
            }
        }
        self.composite(core, output, index, capture)
    }

    /// Puts the topmost window's buffer straight on the output's primary plane if it covers
    /// the output and can go there. `None`: it cannot (no candidate, or the kernel refused it),
    /// composite instead.
    fn scan_out(
        &mut self,
        core: &Core,
        output: &Output,
        index: usize,
    ) -> anyhow::Result<Option<RenderedFrame>> {
        let Some(area) = core.space.output_geometry(output) else {
            return Ok(None);
        };
        let Some(candidate) = direct_scanout::candidate(core, area) else {
            return Ok(None);
        };
        let kms = &mut self.outputs[index].kms;
        if kms.shows(&candidate.surface, candidate.commit) {
            // Already on screen: nothing new to show.
            return Ok(Some(RenderedFrame::skipped()));
        }
        let Some(framebuffer) =
            self.client_framebuffers
                .get(&self.card, &self.gbm, &candidate.dmabuf)
        else {
            return Ok(None);
        };
        let in_fence = self.signalled.as_ref();
        if let Err(err) = kms.test(
            &self.card,
            &self.fence_props,
            *(*framebuffer).as_ref(),
            in_fence,
        ) {
            info!(output = %kms.name, %err, "drm: the kernel refused a client buffer on the \
                primary plane");
            self.client_framebuffers.refuse(&candidate.dmabuf);
            return Ok(None);
        }
        let states = candidate.states(area);
        let off_screen = ScanoutFence::new();
        let scanned = Scanned::Client {
            framebuffer,
            _buffer: candidate.buffer,
            surface: candidate.surface,
            commit: candidate.commit,
        };
        let queued = kms.queue(
            &self.card,
            &self.fence_props,
            scanned,
            in_fence,
            off_screen.clone(),
        );
        if !self.committed(index, queued)? {
            return Ok(Some(RenderedFrame::skipped()));
        }
        let drm_output = &mut self.outputs[index];
        if !drm_output.direct {
            info!(output = %drm_output.kms.name, "drm: direct scanout of a client buffer");
            drm_output.direct = true;
        }
        // The damage tracker did not see this frame: the next composited one is drawn whole.
        drm_output.draw_whole_next();
        Ok(Some(RenderedFrame::scanned_out(states, off_screen)))
    }

    /// Renders the space's part on `output` into a swapchain buffer and commits it with its
    /// render fence.
    fn composite(
        &mut self,
        core: &Core,
        output: &Output,
        index: usize,
        capture: bool,
    ) -> anyhow::Result<RenderedFrame> {
        let drm_output = &mut self.outputs[index];
        let (slot, mut dmabuf, age) = drm_output.kms.acquire(&self.card)?;
        let tracker = &mut drm_output.damage_tracker;
        let frame = match &mut self.renderer {
            ScanoutRenderer::Gles(renderer) => {
                let mut target = renderer
                    .inner
                    .bind(&mut dmabuf)
                    .map_err(|err| anyhow!("binding a scanout buffer: {err:?}"))?;
                render_space(
                    &mut **renderer,
                    &mut target,
                    tracker,
                    age,
                    core,
                    output,
                    capture,
                )?
            }
            ScanoutRenderer::Pixman(renderer) => {
                let mut target = renderer
                    .bind(&mut dmabuf)
                    .map_err(|err| anyhow!("binding a scanout buffer: {err:?}"))?;
                render_space(renderer, &mut target, tracker, age, core, output, capture)?
            }
        };
        if !frame.rendered {
            // Nothing changed: the buffer goes back unused and the screen keeps its frame.
            return Ok(frame);
        }
        if drm_output.direct {
            info!(output = %drm_output.kms.name, "drm: compositing again");
            drm_output.direct = false;
        }
        let render_fence = frame.render_fence();
        if render_fence.is_none() && !frame.sync.is_reached() {
            // Not exportable (drivers without EGL_ANDROID_native_fence_sync): our own GPU work,
            // never a client's, waited for here.
            if let Err(err) = frame.sync.wait() {
                warn!("waiting for the frame's rendering: {err:?}");
            }
        }
        let queued = drm_output.kms.queue(
            &self.card,
            &self.fence_props,
            Scanned::Composited(slot),
            render_fence.as_deref(),
            ScanoutFence::new(),
        );
        if !self.committed(index, queued)? {
            // Not shown: the next frame is drawn whole once the display is ours again.
            self.outputs[index].draw_whole_next();
        }
        Ok(frame)
    }

    /// Whether a frame was committed: a refusal for want of DRM master (the session manager
    /// gave the display to another session without pausing ours first) is said once and
    /// retried with each frame; any other failure is an error.
    fn committed(&mut self, index: usize, queued: std::io::Result<()>) -> anyhow::Result<bool> {
        let name = &self.outputs[index].kms.name;
        match queued {
            Ok(()) => {
                if std::mem::take(&mut self.not_master) {
                    info!(output = %name, "drm: DRM master is back: showing frames again");
                }
                Ok(true)
            }
            Err(err) if is_not_master(&err) => {
                if !std::mem::replace(&mut self.not_master, true) {
                    warn!(output = %name, %err, "drm: the display refuses our \
                        commits (another session holds DRM master); retrying with each frame");
                }
                Ok(false)
            }
            Err(err) => Err(anyhow!(err).context(format!("atomic commit on {name}"))),
        }
    }

    /// Presentation feedback of the frame just committed on `output`, answered when it flips.
    pub fn defer_presentation(
        &mut self,
        output: &Output,
        feedback: OutputPresentationFeedback,
        sequence: u64,
    ) {
        let Some(index) = self.output_index(&output.name()) else {
            return;
        };
        if let Some(flip) = self.outputs[index].kms.in_flight_mut() {
            flip.feedback = Some(feedback);
            flip.sequence = sequence;
        }
    }

    /// Tells each surface which dma-bufs suit it now (see `scanout_feedback`).
    pub fn send_dmabuf_feedback(&self, core: &Core) {
        if let Some(feedback) = &self.feedback {
            feedback.send(core);
        }
    }

    pub fn change_vt(&mut self, vt: i32) {
        if let Err(err) = self.session.change_vt(vt) {
            warn!("switching to VT {vt}: {err}");
        }
    }

    fn on_session_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::PauseSession => {
                info!("drm: session paused");
                self.active = false;
                self.libinput.suspend();
                for output in &mut self.outputs {
                    output.kms.paused();
                }
            }
            SessionEvent::ActivateSession => {
                info!("drm: session resumed");
                if self.libinput.resume().is_err() {
                    warn!("libinput: cannot resume input");
                }
                for output in &mut self.outputs {
                    output.kms.resumed();
                }
                self.active = true;
            }
        }
    }
}

/// What a hotplug event did to an output.
enum OutputChange {
    Disconnected(String),
    /// Connected (again, for the first time, or with another mode).
    Connected(OutputSpec),
}

impl Drm {
    /// The GPU reported a change (udev): probes every connector and follows them. An output
    /// unplugged is turned off and keeps its CRTC for its return; a connector connected for
    /// the first time gets a free CRTC, if there is one.
    fn rescan(&mut self) -> Vec<OutputChange> {
        let mut changes = Vec::new();
        for output in &mut self.outputs {
            let kms = &mut output.kms;
            let mode = match kms.probe(&self.card) {
                Ok(mode) => mode,
                Err(err) => {
                    warn!(output = %kms.name, "drm: {err:#}");
                    continue;
                }
            };
            match (kms.is_enabled(), mode) {
                (true, None) => {
                    info!(output = %kms.name, "drm: output disconnected");
                    if let Err(err) = kms.disable(&self.card, &self.fence_props) {
                        warn!(output = %kms.name, "drm: turning the output off: {err}");
                    }
                    changes.push(OutputChange::Disconnected(kms.name.clone()));
                }
                (enabled, Some(mode)) if !enabled || mode != kms.mode => {
                    kms.enable(mode);
                    output.draw_whole_next();
                    let spec = output.spec();
                    info!(output = %spec.name, mode = ?(spec.size.w, spec.size.h, mode.vrefresh()),
                        "drm: output connected");
                    changes.push(OutputChange::Connected(spec));
                }
                _ => {}
            }
        }
        let connected = match kms_output::connected_connectors(&self.card) {
            Ok(connected) => connected,
            Err(err) => {
                warn!("drm: {err:#}");
                return changes;
            }
        };
        for (info, name) in connected {
            if self.output_index(&name).is_some() {
                continue;
            }
            if let Some(output) =
                DrmOutput::drive(&self.card, &info, name, &self.outputs, &self.buffers)
            {
                info!(output = %output.kms.name, "drm: new output connected");
                changes.push(OutputChange::Connected(output.spec()));
                self.outputs.push(output);
            }
        }
        changes
    }
}

impl State {
    /// udev says a DRM device changed (a connector came or went): ours is rescanned.
    fn on_device_changed(&mut self, device_id: libc::dev_t) {
        let crate::backend::Backend::Drm(drm) = &mut self.backend else {
            return;
        };
        if drm.device_id != Some(device_id) {
            return;
        }
        for change in drm.rescan() {
            match change {
                OutputChange::Disconnected(name) => self.core.output_disconnected(&name),
                OutputChange::Connected(spec) => self.core.output_connected(&spec),
            }
        }
    }

    /// A commit of ours reached the screen.
    fn on_flip(&mut self, event: FlipEvent) {
        let crate::backend::Backend::Drm(drm) = &mut self.backend else {
            return;
        };
        let flags = drm.presentation_flags();
        // Without a CRTC in the event (kernels before 4.12), the one output in flight.
        let Some(output) = drm.outputs.iter_mut().find(|o| match event.crtc {
            Some(crtc) => o.kms.crtc == crtc,
            None => o.kms.has_flip_in_flight(),
        }) else {
            return;
        };
        let refresh = Refresh::fixed(refresh_period(output.refresh_mhz()));
        let Some(flip) = output.kms.flip_done() else {
            return;
        };
        if let Some(mut feedback) = flip.feedback.take() {
            let time = Duration::from_nanos(event.timestamp.as_nanos().max(0) as u64);
            feedback.presented::<_, smithay::utils::Monotonic>(time, refresh, flip.sequence, flags);
        }
    }
}

/// An already signalled sync_file made on `card`: a signalled syncobj exported, or, on a device
/// without syncobjs (vkms), what an idle buffer's implicit fences export to (the kernel's
/// signalled stub fence). None, with the reason logged, when neither works.
fn signalled_sync_file(card: &DrmDeviceFd) -> Option<SyncFile> {
    let from_syncobj = card
        .as_fd()
        .try_clone_to_owned()
        .and_then(DrmDevice::from_fd)
        .and_then(|device| Syncobj::create_signaled(&device))
        .and_then(|syncobj| syncobj.export_sync_file(0));
    let syncobj_err = match from_syncobj {
        Ok(fence) => return Some(fence),
        Err(err) => err,
    };
    match idle_buffer_fence(card) {
        Ok(fence) => {
            debug!(%syncobj_err, "drm: no syncobjs; the signalled in-fence for direct scanout \
                comes from an idle buffer");
            Some(fence)
        }
        Err(err) => {
            info!(%syncobj_err, %err, "drm: no signalled fence for direct scanout (no syncobjs, \
                no dma-buf fence export): the kernel may wait for a scanned-out buffer's \
                implicit fences");
            None
        }
    }
}

/// The fences a reader of a fresh dumb buffer would wait for: none, so the kernel exports its
/// signalled stub fence (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`). The buffer is freed at once.
fn idle_buffer_fence(card: &DrmDeviceFd) -> std::io::Result<SyncFile> {
    use drm::buffer::DrmFourcc;
    use drm::control::Device as _;
    let dumb = card.create_dumb_buffer((1, 1), DrmFourcc::Xrgb8888, 32)?;
    let exported = card
        .buffer_to_prime_fd(drm::buffer::Buffer::handle(&dumb), libc::O_CLOEXEC as u32)
        .and_then(|fd| DmaBuf::new(fd).export_sync_file(Access::Read));
    let _ = card.destroy_dumb_buffer(dumb);
    exported
}

/// The seat's primary GPU (the boot VGA device) or else its first GPU.
fn pick_gpu(seat: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = udev::primary_gpu(seat).context("udev: primary GPU")? {
        return Ok(path);
    }
    udev::all_gpus(seat)
        .context("udev: GPUs")?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("udev lists no GPU on seat {seat} (is udevd running?)"))
}

/// GLES on the GBM device's EGL display, and the GL renderer's name.
fn init_gles(gbm: &GbmDevice<DrmDeviceFd>) -> anyhow::Result<(GlesRenderer, String)> {
    // SAFETY: the GBM device is kept alive by the display (it holds a clone).
    let display = unsafe { EGLDisplay::new(gbm.clone()) }.context("EGL display on GBM")?;
    let context = EGLContext::new(&display).context("EGL context")?;
    // SAFETY: the context is fresh and only this renderer uses it.
    let mut renderer = unsafe { GlesRenderer::new(context) }.context("GLES renderer")?;
    let name = renderer
        .with_context(|gl| {
            // SAFETY: GL_RENDERER is a static NUL-terminated string of the current context.
            let ptr = unsafe { gl.GetString(ffi::RENDERER) };
            if ptr.is_null() {
                String::from("an unnamed GL renderer")
            } else {
                unsafe { CStr::from_ptr(ptr.cast()) }
                    .to_string_lossy()
                    .into_owned()
            }
        })
        .context("querying GL_RENDERER")?;
    Ok((renderer, name))
}

fn is_software(gl_renderer: &str) -> bool {
    ["llvmpipe", "softpipe", "swrast"]
        .iter()
        .any(|name| gl_renderer.contains(name))
}
