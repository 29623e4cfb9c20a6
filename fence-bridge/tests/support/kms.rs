//! KMS on virtio-gpu's card node for the kernel tests: the modeset display ([`Kms`]) that
//! `kernel_kms` and `kernel_source` flip on; [`Kms::setup_on`] does the same on another KMS
//! driver's card node (`kernel_vkms`: vkms).
//!
//! Tests share one display, so [`Kms::setup`] holds the binary's [`serial`] lock for as long as
//! the `Kms` lives; the card node (DRM master: root, only client) closes with it. Under TCG
//! everything is slow: few flips, generous timeouts.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::MutexGuard;
use std::time::Duration;

use drm::buffer::DrmFourcc;
use drm::control::atomic::AtomicModeReq;
use drm::control::{
    connector, crtc, framebuffer, plane, property, AtomicCommitFlags, Device as _, Mode,
};
use drm::ClientCapability;
use drm::Device as _;
use fence_bridge::{find_property, read_flip_events, FenceProps, FencedCommit, FlipEvent};

use super::vgem::serial;
use super::{find_node, readable, require_device, Node};

/// The display under test: virtio-gpu's connected connector, its CRTC and primary plane, two
/// framebuffers, modeset done.
pub struct Kms {
    pub card: Node,
    pub props: FenceProps,
    pub crtc: crtc::Handle,
    pub plane: plane::Handle,
    pub fb_id: property::Handle,
    pub fbs: [framebuffer::Handle; 2],
    /// The framebuffers' GEM handles, for PRIME export.
    pub bos: [drm::buffer::Handle; 2],
    pub mode: Mode,
    _guard: MutexGuard<'static, ()>,
}

pub fn prop<H: drm::control::ResourceHandle + std::fmt::Debug>(
    card: &Node,
    obj: H,
    name: &std::ffi::CStr,
) -> property::Handle {
    find_property(card, obj, name)
        .unwrap_or_else(|e| panic!("properties of {obj:?}: {e}"))
        .unwrap_or_else(|| panic!("{obj:?} has no {name:?}"))
        .handle()
}

impl Kms {
    /// Opens virtio-gpu's card node (DRM master, atomic), modesets its connected connector and
    /// holds [`serial`] until dropped. `None` (after a SKIP line) without the device, a failure
    /// in the guest (see [`require_device`]).
    pub fn setup() -> Option<Kms> {
        Kms::setup_on("virtio_gpu")
    }

    /// [`setup`](Kms::setup) on the card node of the DRM driver named `driver`
    /// (`DRM_IOCTL_VERSION`): "virtio_gpu", "vkms". Modeset with the connector's first (the
    /// preferred) mode, two dumb-buffer framebuffers on the primary plane.
    pub fn setup_on(driver: &str) -> Option<Kms> {
        // One display: the tests take turns (and keep fd counts their own).
        let guard = serial();
        let card = require_device(&format!("{driver} card node under /dev/dri"), || {
            find_node("card", driver)
        })?;
        card.acquire_master_lock()
            .expect("DRM_IOCTL_SET_MASTER (root, only client)");
        card.set_client_capability(ClientCapability::UniversalPlanes, true)
            .expect("DRM_CLIENT_CAP_UNIVERSAL_PLANES");
        card.set_client_capability(ClientCapability::Atomic, true)
            .expect("DRM_CLIENT_CAP_ATOMIC");

        let res = card
            .resource_handles()
            .expect("DRM_IOCTL_MODE_GETRESOURCES");
        let (conn, info) = res
            .connectors()
            .iter()
            .map(|&c| (c, card.get_connector(c, true).expect("GETCONNECTOR")))
            .find(|(_, i)| i.state() == connector::State::Connected)
            .unwrap_or_else(|| panic!("a connected {driver} connector"));
        let mode = info.modes()[0];
        let crtc = info
            .encoders()
            .iter()
            .flat_map(|&e| {
                res.filter_crtcs(card.get_encoder(e).expect("GETENCODER").possible_crtcs())
            })
            .next()
            .expect("a CRTC for the connector");
        let plane = card
            .plane_handles()
            .expect("GETPLANERESOURCES")
            .into_iter()
            .find(|&p| {
                let info = card.get_plane(p).expect("GETPLANE");
                let type_prop = prop(&card, p, c"type");
                let props = card.get_properties(p).expect("GETPROPERTIES");
                let is_primary = props.iter().any(|(h, v)| *h == type_prop && *v == 1);
                is_primary && res.filter_crtcs(info.possible_crtcs()).contains(&crtc)
            })
            .expect("a primary plane for the CRTC");

        let (w, h) = mode.size();
        let mut bos = Vec::new();
        let fbs = [0x00ff_0000u32, 0x0000_00ff].map(|color| {
            let mut db = card
                .create_dumb_buffer((w.into(), h.into()), DrmFourcc::Xrgb8888, 32)
                .unwrap_or_else(|e| panic!("{driver} CREATE_DUMB: {e}"));
            {
                let mut map = card.map_dumb_buffer(&mut db).expect("MAP_DUMB");
                for px in map.as_mut().chunks_exact_mut(4) {
                    px.copy_from_slice(&color.to_le_bytes());
                }
            }
            bos.push(drm::buffer::Buffer::handle(&db));
            // The GEM handle stays open until the card fd closes.
            card.add_framebuffer(&db, 24, 32).expect("ADDFB")
        });

        let fb_id = prop(&card, plane, c"FB_ID");
        let mut req = AtomicModeReq::new();
        req.add_property(
            conn,
            prop(&card, conn, c"CRTC_ID"),
            property::Value::CRTC(Some(crtc)),
        );
        let blob = card.create_property_blob(&mode).expect("CREATEPROPBLOB");
        req.add_property(crtc, prop(&card, crtc, c"MODE_ID"), blob);
        req.add_property(
            crtc,
            prop(&card, crtc, c"ACTIVE"),
            property::Value::Boolean(true),
        );
        req.add_property(plane, fb_id, property::Value::Framebuffer(Some(fbs[0])));
        req.add_property(
            plane,
            prop(&card, plane, c"CRTC_ID"),
            property::Value::CRTC(Some(crtc)),
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
            req.add_raw_property(plane.into(), prop(&card, plane, name), v);
        }
        card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
            .expect("modeset commit (ALLOW_MODESET)");

        Some(Kms {
            card,
            props: FenceProps::new(),
            crtc,
            plane,
            fb_id,
            fbs,
            bos: [bos[0], bos[1]],
            mode,
            _guard: guard,
        })
    }

    /// A commit on the primary plane showing `fbs[fb]`.
    pub fn flip_request(&self, fb: usize) -> FencedCommit<'_, Node> {
        let mut c = FencedCommit::new(&self.card, &self.props);
        c.add_property(
            self.plane,
            self.fb_id,
            property::Value::Framebuffer(Some(self.fbs[fb])),
        )
        .expect("FB_ID");
        c
    }

    /// A commit on the primary plane showing `fb` (any framebuffer of this card, e.g. one from
    /// [`import_framebuffer`](Kms::import_framebuffer)).
    pub fn flip_to(&self, fb: framebuffer::Handle) -> FencedCommit<'_, Node> {
        let mut c = FencedCommit::new(&self.card, &self.props);
        c.add_property(
            self.plane,
            self.fb_id,
            property::Value::Framebuffer(Some(fb)),
        )
        .expect("FB_ID");
        c
    }

    /// Imports `dmabuf` (another device's buffer) through PRIME (`DRM_IOCTL_PRIME_FD_TO_HANDLE`)
    /// and makes an XRGB8888 framebuffer of it (`DRM_IOCTL_MODE_ADDFB`). The buffer's
    /// reservation object, and so its implicit fences, is the dma-buf's: shared with the
    /// exporter. The GEM handle stays open until the card fd closes.
    pub fn import_framebuffer(
        &self,
        dmabuf: BorrowedFd<'_>,
        size: (u32, u32),
        pitch: u32,
    ) -> framebuffer::Handle {
        let handle = self
            .card
            .prime_fd_to_buffer(dmabuf)
            .expect("DRM_IOCTL_PRIME_FD_TO_HANDLE");
        let buffer = ImportedBuffer {
            handle,
            size,
            pitch,
        };
        self.card
            .add_framebuffer(&buffer, 24, 32)
            .expect("ADDFB of the imported buffer")
    }

    /// Every plane that can show on this display's CRTC, with its `type` property
    /// ([`PLANE_TYPE_OVERLAY`], [`PLANE_TYPE_PRIMARY`], [`PLANE_TYPE_CURSOR`]).
    pub fn planes_with_type(&self) -> Vec<(plane::Handle, u64)> {
        let res = self
            .card
            .resource_handles()
            .expect("DRM_IOCTL_MODE_GETRESOURCES");
        self.card
            .plane_handles()
            .expect("GETPLANERESOURCES")
            .into_iter()
            .filter(|&p| {
                let info = self.card.get_plane(p).expect("GETPLANE");
                res.filter_crtcs(info.possible_crtcs()).contains(&self.crtc)
            })
            .map(|p| {
                let type_prop = prop(&self.card, p, c"type");
                let props = self.card.get_properties(p).expect("GETPROPERTIES");
                let ty = props
                    .iter()
                    .find_map(|(h, v)| (*h == type_prop).then_some(*v))
                    .expect("a plane type value");
                (p, ty)
            })
            .collect()
    }

    /// Waits up to `timeout` for flip events, returns those read.
    pub fn wait_flip(&self, timeout: Duration) -> Vec<FlipEvent> {
        if !readable(self.card.as_fd(), timeout) {
            return Vec::new();
        }
        read_flip_events(self.card.as_fd()).expect("read DRM events")
    }
}

/// Values of a plane's `type` property (`enum drm_plane_type`).
pub const PLANE_TYPE_OVERLAY: u64 = 0;
pub const PLANE_TYPE_PRIMARY: u64 = 1;
pub const PLANE_TYPE_CURSOR: u64 = 2;

/// A single-plane XRGB8888 buffer known by its GEM handle on a card (e.g. PRIME-imported), for
/// `add_framebuffer`.
pub struct ImportedBuffer {
    pub handle: drm::buffer::Handle,
    pub size: (u32, u32),
    pub pitch: u32,
}

impl drm::buffer::Buffer for ImportedBuffer {
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn format(&self) -> DrmFourcc {
        DrmFourcc::Xrgb8888
    }
    fn pitch(&self) -> u32 {
        self.pitch
    }
    fn handle(&self) -> drm::buffer::Handle {
        self.handle
    }
}

/// A non-blocking flip with a page-flip event.
pub const FLIP: AtomicCommitFlags =
    AtomicCommitFlags::NONBLOCK.union(AtomicCommitFlags::PAGE_FLIP_EVENT);
