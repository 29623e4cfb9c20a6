//! One KMS output: a connector driven by a CRTC of its own through its primary plane, fed from a GBM
//! swapchain and flipped with atomic commits written here (fence-bridge's [`FencedCommit`])
//! rather than through Smithay's `DrmCompositor`: releasing a scanned-out client buffer needs
//! the CRTC's `OUT_FENCE_PTR` fence, which Smithay's atomic surface cannot request.
//!
//! # One frame
//! 1. [`KmsOutput::acquire`] takes a free swapchain buffer (its framebuffer is added once and
//!    kept with it) for the renderer to draw into.
//! 2. [`KmsOutput::queue`] commits it non-blocking with `PAGE_FLIP_EVENT`. The frame's render
//!    fence goes onto the plane as `IN_FENCE_FD`: the kernel waits for the GPU, the CPU never
//!    does.
//! 3. The flip event ([`KmsOutput::flip_done`]) moves the frame on screen; the frame it replaced
//!    is off screen from that instant, and its buffer goes back to the swapchain.
//!
//! While a commit is in flight the next frame waits (one flip per vblank): the renderer is
//! never more than one frame ahead of the display.

use std::io;

use std::rc::Rc;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use drm::control::{
    connector, crtc, framebuffer, plane, property, AtomicCommitFlags, Device as ControlDevice,
    Mode, ModeTypeFlags,
};
use drm::{ClientCapability, Device as _};
use fence_bridge::{FenceProps, FencedCommit, OutFence, SyncFile};
use fencegate_protocols::ScanoutFence;
use smithay::backend::allocator::dmabuf::{AsDmabuf, Dmabuf, DmabufFlags};
use smithay::backend::allocator::gbm::{GbmAllocator, GbmBuffer};
use smithay::backend::allocator::{Buffer as _, Fourcc, Modifier, Slot, Swapchain};
use smithay::backend::drm::gbm::{framebuffer_from_bo, GbmFramebuffer};
use smithay::backend::drm::DrmDeviceFd;
use smithay::backend::renderer::utils::{Buffer, CommitCounter};
use smithay::desktop::utils::OutputPresentationFeedback;
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use tracing::{debug, info};

/// What the primary plane scans out.
pub const SCANOUT_FORMAT: Fourcc = Fourcc::Xrgb8888;

/// A frame committed to the output: in flight until its flip event, then on screen until the
/// next one replaces it.
pub struct Flip {
    /// What the plane shows; kept (out of the swapchain, or the client's buffer unreleased)
    /// while the display may read it.
    frame: Scanned,
    /// Presentation feedback of the surfaces this frame shows, answered at the flip.
    pub feedback: Option<OutputPresentationFeedback>,
    /// The presentation sequence number the feedback reports.
    pub sequence: u64,
}

/// What a frame puts on the primary plane.
pub enum Scanned {
    /// A swapchain buffer fencegate rendered.
    Composited(Slot<GbmBuffer>),
    /// A client's buffer, scanned out directly (see `direct_scanout`).
    Client {
        framebuffer: Rc<GbmFramebuffer>,
        /// Holding it keeps `wl_buffer.release` from going out while the display reads it.
        _buffer: Buffer,
        surface: WlSurface,
        commit: CommitCounter,
    },
}

impl Scanned {
    fn framebuffer(&self) -> framebuffer::Handle {
        match self {
            Scanned::Composited(slot) => *slot
                .userdata()
                .get::<GbmFramebuffer>()
                .expect("acquire adds the framebuffer")
                .as_ref(),
            Scanned::Client { framebuffer, .. } => *framebuffer.as_ref().as_ref(),
        }
    }
}

/// Property ids of the objects one output commits to (ids are per device).
#[derive(Debug, Clone, Copy)]
struct Props {
    connector_crtc_id: property::Handle,
    crtc_mode_id: property::Handle,
    crtc_active: property::Handle,
    plane_fb_id: property::Handle,
    plane_crtc_id: property::Handle,
    plane_src: [property::Handle; 4],
    plane_crtc: [property::Handle; 4],
}

pub struct KmsOutput {
    pub connector: connector::Handle,
    /// The connector's name as the kernel's debugfs and other compositors spell it
    /// (`Virtual-1`, `HDMI-A-1`).
    pub name: String,
    pub crtc: crtc::Handle,
    pub plane: plane::Handle,
    pub mode: Mode,
    props: Props,
    swapchain: Swapchain<GbmAllocator<DrmDeviceFd>>,
    buffers: ScanoutBuffers,
    /// False while the connector is disconnected: nothing is committed.
    enabled: bool,
    /// The next commit must set the mode (first frame, after a session resume).
    needs_modeset: bool,
    in_flight: Option<Flip>,
    on_screen: Option<Flip>,
    /// The [`ScanoutFence`] of the last frame committed: the next commit's out-fence resolves it.
    off_screen: Option<Arc<ScanoutFence>>,
}

impl KmsOutput {
    /// Drives the connector `info` (named `name`) with a CRTC that can, other than those in
    /// `taken`, through that CRTC's primary plane; its frames are drawn into `buffers`.
    pub fn new(
        card: &DrmDeviceFd,
        info: &connector::Info,
        name: String,
        taken: &[crtc::Handle],
        buffers: ScanoutBuffers,
    ) -> anyhow::Result<KmsOutput> {
        let resources = card.resource_handles().context("DRM resources")?;
        let mode = preferred_mode(info.modes());
        let crtc = info
            .encoders()
            .iter()
            .filter_map(|&encoder| card.get_encoder(encoder).ok())
            .flat_map(|encoder| resources.filter_crtcs(encoder.possible_crtcs()))
            .find(|crtc| !taken.contains(crtc))
            .ok_or_else(|| anyhow!("no free CRTC can drive {name}"))?;
        let plane = primary_plane(card, &resources, crtc)?;
        let props = Props::find(card, info.handle(), crtc, plane)?;
        let (width, height) = mode.size();
        let swapchain = new_swapchain(&buffers, mode);
        info!(
            connector = %name,
            mode = %format!("{}x{}@{}", width, height, mode.vrefresh()),
            ?crtc,
            ?plane,
            "drm: output"
        );
        Ok(KmsOutput {
            connector: info.handle(),
            name,
            crtc,
            plane,
            mode,
            props,
            swapchain,
            buffers,
            enabled: true,
            needs_modeset: true,
            in_flight: None,
            on_screen: None,
            off_screen: None,
        })
    }

    /// True while a commit waits for its flip, or the output is disabled: no new frame may be
    /// queued.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some() || !self.enabled
    }

    /// True while a commit waits for its flip event.
    pub fn has_flip_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The connector's preferred mode now, probing it (after a hotplug event); None when it is
    /// disconnected.
    pub fn probe(&self, card: &DrmDeviceFd) -> anyhow::Result<Option<Mode>> {
        let info = card
            .get_connector(self.connector, true)
            .context("probing the connector")?;
        if info.state() != connector::State::Connected || info.modes().is_empty() {
            return Ok(None);
        }
        Ok(Some(preferred_mode(info.modes())))
    }

    /// Turns the output off (its connector went away): CRTC inactive, plane and connector
    /// detached, a blocking commit. Everything it showed is released.
    pub fn disable(&mut self, card: &DrmDeviceFd, fence_props: &FenceProps) -> io::Result<()> {
        self.enabled = false;
        self.in_flight = None;
        self.on_screen = None;
        self.needs_modeset = true;
        if let Some(off_screen) = self.off_screen.take() {
            off_screen.resolve(None);
        }
        let props = self.props;
        let mut commit = FencedCommit::new(card, fence_props);
        commit.add_property(
            self.connector,
            props.connector_crtc_id,
            property::Value::CRTC(None),
        )?;
        commit.add_property(
            self.crtc,
            props.crtc_active,
            property::Value::Boolean(false),
        )?;
        commit.add_property(self.crtc, props.crtc_mode_id, property::Value::Blob(0))?;
        commit.add_property(
            self.plane,
            props.plane_fb_id,
            property::Value::Framebuffer(None),
        )?;
        commit.add_property(self.plane, props.plane_crtc_id, property::Value::CRTC(None))?;
        commit.commit(AtomicCommitFlags::ALLOW_MODESET, 0)
    }

    /// Turns the output on again with `mode` (the connector is back); the next frame sets it.
    pub fn enable(&mut self, mode: Mode) {
        if mode.size() != self.mode.size() {
            self.swapchain = new_swapchain(&self.buffers, mode);
        } else {
            self.swapchain.reset_buffer_ages();
        }
        self.mode = mode;
        self.enabled = true;
        self.needs_modeset = true;
    }

    /// A free buffer to render the next frame into, its dma-buf for the renderer to bind, and
    /// its age (frames since its contents were drawn; 0: unknown, draw everything).
    pub fn acquire(
        &mut self,
        card: &DrmDeviceFd,
    ) -> anyhow::Result<(Slot<GbmBuffer>, Dmabuf, usize)> {
        let slot = self
            .swapchain
            .acquire()
            .map_err(|err| anyhow!("allocating a scanout buffer: {err}"))?
            .ok_or_else(|| anyhow!("every scanout buffer is in use"))?;
        if slot.userdata().get::<GbmFramebuffer>().is_none() {
            let framebuffer = framebuffer_from_bo(card, &slot, false)
                .map_err(|err| anyhow!("adding a framebuffer for a scanout buffer: {err}"))?;
            slot.userdata().insert_if_missing(|| framebuffer);
            let dmabuf = if self.buffers.linear {
                writable_linear_dmabuf(card, &slot)?
            } else {
                slot.export()
                    .map_err(|err| anyhow!("exporting a scanout buffer: {err}"))?
            };
            slot.userdata().insert_if_missing(|| dmabuf);
        }
        let dmabuf = slot
            .userdata()
            .get::<Dmabuf>()
            .cloned()
            .expect("stored with the framebuffer");
        let age = slot.age() as usize;
        Ok((slot, dmabuf, age))
    }

    /// Commits `frame` without blocking; `in_fence` goes on the plane's `IN_FENCE_FD` (the
    /// render fence of a composited frame, an already signalled fence for a client buffer). The
    /// flip is then in flight until [`KmsOutput::flip_done`]. `off_screen` is this frame's
    /// [`ScanoutFence`]: the next commit resolves it with its out-fence.
    pub fn queue(
        &mut self,
        card: &DrmDeviceFd,
        fence_props: &FenceProps,
        frame: Scanned,
        in_fence: Option<&SyncFile>,
        off_screen: Arc<ScanoutFence>,
    ) -> io::Result<()> {
        let framebuffer = frame.framebuffer();
        let mut out_fence = OutFence::new();
        let mut flags = AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT;
        if self.needs_modeset {
            flags |= AtomicCommitFlags::ALLOW_MODESET;
        }
        if let Err(err) = self.commit(
            card,
            fence_props,
            framebuffer,
            in_fence,
            Some(&mut out_fence),
            flags,
        ) {
            if is_not_master(&err) {
                // Master comes back with whatever another session left on the display.
                self.needs_modeset = true;
            }
            return Err(err);
        }
        self.needs_modeset = false;
        if let Scanned::Composited(slot) = &frame {
            self.swapchain.submitted(slot);
        } else {
            // Back to compositing later: the swapchain's contents are stale by then.
            self.swapchain.reset_buffer_ages();
        }
        // This commit's out-fence signals when the frame before it leaves the screen.
        let out_fence = out_fence.take_sync_file().map(Arc::new);
        if let Some(previous) = self.off_screen.replace(off_screen) {
            previous.resolve(out_fence);
        }
        self.in_flight = Some(Flip {
            frame,
            feedback: None,
            sequence: 0,
        });
        Ok(())
    }

    /// Asks the kernel whether `framebuffer` can go on the plane (`TEST_ONLY`: nothing changes).
    pub fn test(
        &self,
        card: &DrmDeviceFd,
        fence_props: &FenceProps,
        framebuffer: framebuffer::Handle,
        in_fence: Option<&SyncFile>,
    ) -> io::Result<()> {
        let mut flags = AtomicCommitFlags::TEST_ONLY;
        if self.needs_modeset {
            flags |= AtomicCommitFlags::ALLOW_MODESET;
        }
        self.commit(card, fence_props, framebuffer, in_fence, None, flags)
    }

    /// Whether the last frame committed shows `commit` of `surface` scanned out directly.
    pub fn shows(&self, surface: &WlSurface, commit: CommitCounter) -> bool {
        let last = self.in_flight.as_ref().or(self.on_screen.as_ref());
        matches!(last, Some(Flip { frame: Scanned::Client { surface: s, commit: c, .. }, .. })
            if s == surface && *c == commit)
    }

    fn commit(
        &self,
        card: &DrmDeviceFd,
        fence_props: &FenceProps,
        framebuffer: framebuffer::Handle,
        in_fence: Option<&SyncFile>,
        out_fence: Option<&mut OutFence>,
        flags: AtomicCommitFlags,
    ) -> io::Result<()> {
        let (width, height) = self.mode.size();
        let (width, height) = (u64::from(width), u64::from(height));
        let props = self.props;
        let blob = if flags.contains(AtomicCommitFlags::ALLOW_MODESET) {
            match card.create_property_blob(&self.mode)? {
                property::Value::Blob(id) => Some(id),
                _ => None,
            }
        } else {
            None
        };
        let result = (|| {
            let mut commit = FencedCommit::new(card, fence_props);
            if let Some(blob) = blob {
                commit.add_property(
                    self.connector,
                    props.connector_crtc_id,
                    property::Value::CRTC(Some(self.crtc)),
                )?;
                commit.add_property(self.crtc, props.crtc_mode_id, property::Value::Blob(blob))?;
                commit.add_property(
                    self.crtc,
                    props.crtc_active,
                    property::Value::Boolean(true),
                )?;
            }
            let plane = self.plane;
            commit.add_property(
                plane,
                props.plane_fb_id,
                property::Value::Framebuffer(Some(framebuffer)),
            )?;
            commit.add_property(
                plane,
                props.plane_crtc_id,
                property::Value::CRTC(Some(self.crtc)),
            )?;
            // Source rectangle in 16.16 fixed point, destination in pixels: the whole mode.
            let src = [0, 0, width << 16, height << 16];
            for (prop, value) in props.plane_src.iter().zip(src) {
                commit.add_property(plane, *prop, property::Value::UnsignedRange(value))?;
            }
            // CRTC_X/Y are signed (a plane may hang off the left or top edge), CRTC_W/H not.
            commit.add_property(plane, props.plane_crtc[0], property::Value::SignedRange(0))?;
            commit.add_property(plane, props.plane_crtc[1], property::Value::SignedRange(0))?;
            commit.add_property(
                plane,
                props.plane_crtc[2],
                property::Value::UnsignedRange(width),
            )?;
            commit.add_property(
                plane,
                props.plane_crtc[3],
                property::Value::UnsignedRange(height),
            )?;
            match in_fence {
                Some(fence) => commit.set_in_fence(plane, fence.as_fd())?,
                None => commit.clear_in_fence(plane)?,
            }
            if let Some(slot) = out_fence {
                commit.set_out_fence(self.crtc, slot)?;
            }
            commit.commit(flags, u64::from(u32::from(self.crtc)))
        })();
        if let Some(blob) = blob {
            // The committed state holds its own reference to the mode.
            let _ = card.destroy_property_blob(blob);
        }
        result
    }

    /// The in-flight frame, to attach its presentation feedback to.
    pub fn in_flight_mut(&mut self) -> Option<&mut Flip> {
        self.in_flight.as_mut()
    }

    /// The flip of the in-flight frame completed: it is on screen now. Returns it (for its
    /// feedback) and drops the frame it replaced, whose buffer is free again.
    pub fn flip_done(&mut self) -> Option<&mut Flip> {
        let shown = self.in_flight.take()?;
        self.on_screen = Some(shown);
        self.on_screen.as_mut()
    }

    /// The session was paused (another VT, DRM master gone): a flip in flight may never
    /// complete, and the next commit after resume must set the mode again.
    pub fn paused(&mut self) {
        self.in_flight = None;
        self.needs_modeset = true;
        // Another session owns the display now: nothing of ours is read any more.
        if let Some(off_screen) = self.off_screen.take() {
            off_screen.resolve(None);
        }
    }

    /// The session is back: the display may show anything (another session drew on it), so the
    /// next frame sets the mode and is drawn whole.
    pub fn resumed(&mut self) {
        self.needs_modeset = true;
        self.swapchain.reset_buffer_ages();
    }
}

impl Props {
    fn find(
        card: &DrmDeviceFd,
        connector: connector::Handle,
        crtc: crtc::Handle,
        plane: plane::Handle,
    ) -> anyhow::Result<Props> {
        let connector_props = property_ids(card, connector)?;
        let crtc_props = property_ids(card, crtc)?;
        let plane_props = property_ids(card, plane)?;
        let get = |props: &[(String, property::Handle)], name: &str| {
            props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, handle)| *handle)
                .ok_or_else(|| anyhow!("the KMS object has no {name} property"))
        };
        Ok(Props {
            connector_crtc_id: get(&connector_props, "CRTC_ID")?,
            crtc_mode_id: get(&crtc_props, "MODE_ID")?,
            crtc_active: get(&crtc_props, "ACTIVE")?,
            plane_fb_id: get(&plane_props, "FB_ID")?,
            plane_crtc_id: get(&plane_props, "CRTC_ID")?,
            plane_src: [
                get(&plane_props, "SRC_X")?,
                get(&plane_props, "SRC_Y")?,
                get(&plane_props, "SRC_W")?,
                get(&plane_props, "SRC_H")?,
            ],
            plane_crtc: [
                get(&plane_props, "CRTC_X")?,
                get(&plane_props, "CRTC_Y")?,
                get(&plane_props, "CRTC_W")?,
                get(&plane_props, "CRTC_H")?,
            ],
        })
    }
}

/// Asks for atomic modesetting and every plane (`DRM_CLIENT_CAP_ATOMIC`, `UNIVERSAL_PLANES`).
pub fn enable_atomic(card: &DrmDeviceFd) -> anyhow::Result<()> {
    card.set_client_capability(ClientCapability::UniversalPlanes, true)
        .context("DRM_CLIENT_CAP_UNIVERSAL_PLANES")?;
    card.set_client_capability(ClientCapability::Atomic, true)
        .context("DRM_CLIENT_CAP_ATOMIC: the device has no atomic modesetting")
}

/// The connectors that are connected and have a mode, with their names, probing each.
pub fn connected_connectors(card: &DrmDeviceFd) -> anyhow::Result<Vec<(connector::Info, String)>> {
    let resources = card.resource_handles().context("DRM resources")?;
    let mut connected = Vec::new();
    for &handle in resources.connectors() {
        let info = card
            .get_connector(handle, true)
            .context("probing a connector")?;
        let name = format!("{}-{}", info.interface().as_str(), info.interface_id());
        if info.state() == connector::State::Connected && !info.modes().is_empty() {
            connected.push((info, name));
        } else {
            debug!(connector = %name, state = ?info.state(), "connector not usable");
        }
    }
    Ok(connected)
}

/// The kernel refused a commit because this file is not DRM master (another session has the
/// display).
pub fn is_not_master(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// A connector's preferred mode, else its first.
fn preferred_mode(modes: &[Mode]) -> Mode {
    modes
        .iter()
        .find(|mode| mode.mode_type().contains(ModeTypeFlags::PREFERRED))
        .copied()
        .unwrap_or(modes[0])
}

/// Where an output's swapchain buffers come from, and in which layout.
#[derive(Clone)]
pub struct ScanoutBuffers {
    /// With GBM's `LINEAR` flag when `linear`.
    pub allocator: GbmAllocator<DrmDeviceFd>,
    /// Linear buffers, for pixman, which draws into nothing else. Otherwise GBM picks the
    /// layout the device scans out best (for GLES).
    pub linear: bool,
}

fn new_swapchain(buffers: &ScanoutBuffers, mode: Mode) -> Swapchain<GbmAllocator<DrmDeviceFd>> {
    let (width, height) = mode.size();
    let modifier = if buffers.linear {
        Modifier::Linear
    } else {
        Modifier::Invalid
    };
    Swapchain::new(
        buffers.allocator.clone(),
        u32::from(width),
        u32::from(height),
        SCANOUT_FORMAT,
        vec![modifier],
    )
}

/// A linear GBM buffer as a dma-buf pixman can draw into: exported read-write (GBM's own
/// export is read-only, and pixman maps it for writing), and described as linear (a driver
/// without modifier support, as kms_swrast, allocates a buffer asked for with GBM's `LINEAR`
/// flag under the implicit modifier; its layout is linear all the same).
fn writable_linear_dmabuf(card: &DrmDeviceFd, buffer: &GbmBuffer) -> anyhow::Result<Dmabuf> {
    let fd = card
        .buffer_to_prime_fd(
            drm::buffer::Buffer::handle(&**buffer),
            (libc::O_CLOEXEC | libc::O_RDWR) as u32,
        )
        .context("exporting a scanout buffer read-write")?;
    let mut builder = Dmabuf::builder(
        buffer.size(),
        buffer.format().code,
        Modifier::Linear,
        DmabufFlags::empty(),
    );
    builder.add_plane(fd, 0, buffer.offset(0), buffer.stride());
    builder
        .build()
        .ok_or_else(|| anyhow!("a scanout buffer with no planes"))
}

/// Names and ids of the properties attached to `object`.
fn property_ids<H: drm::control::ResourceHandle>(
    card: &DrmDeviceFd,
    object: H,
) -> anyhow::Result<Vec<(String, property::Handle)>> {
    let props = card.get_properties(object).context("GETPROPERTIES")?;
    let mut ids = Vec::new();
    for (&handle, _) in props.iter() {
        let info = card.get_property(handle).context("GETPROPERTY")?;
        ids.push((info.name().to_string_lossy().into_owned(), handle));
    }
    Ok(ids)
}

/// The primary plane of `crtc`: the plane whose `type` is Primary among those that can be
/// attached to it.
fn primary_plane(
    card: &DrmDeviceFd,
    resources: &drm::control::ResourceHandles,
    crtc: crtc::Handle,
) -> anyhow::Result<plane::Handle> {
    const DRM_PLANE_TYPE_PRIMARY: u64 = 1;
    for plane in card.plane_handles().context("DRM planes")? {
        let info = card.get_plane(plane).context("DRM plane")?;
        if !resources
            .filter_crtcs(info.possible_crtcs())
            .contains(&crtc)
        {
            continue;
        }
        let props = card.get_properties(plane).context("plane properties")?;
        for (&handle, &value) in props.iter() {
            let name = card.get_property(handle).context("plane property")?;
            if name.name().to_bytes() == b"type" && value == DRM_PLANE_TYPE_PRIMARY {
                return Ok(plane);
            }
        }
    }
    bail!("no primary plane for {crtc:?}")
}
