//! vgem dumb buffers as dma-buf `wl_buffer`s (zwp_linux_dmabuf_v1 `create_immed`), for the
//! kernel tests.

use std::os::fd::{AsFd, OwnedFd};

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::Device as _;
use fence_bridge::DrmDevice;
use fencegate_clients::{Client, IgnoreEvents};
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_buffer_params_v1::{
    self, ZwpLinuxBufferParamsV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;

/// Width and height of every test buffer, in pixels.
pub const SIZE: u32 = 16;

/// Binds linux-dmabuf (up to version 3: `create_immed`).
pub fn bind_linux_dmabuf(client: &Client) -> ZwpLinuxDmabufV1 {
    client
        .bind_global::<ZwpLinuxDmabufV1, _>(3, IgnoreEvents)
        .expect("linux-dmabuf is advertised")
}

/// A linear XRGB8888 `SIZE`×`SIZE` dumb buffer on vgem filled with one colour, and its
/// dma-buf. Its GEM handle stays open, so that fences can be attached to it.
pub struct Bo {
    pub dumb: DumbBuffer,
    pub dmabuf: OwnedFd,
}

impl Bo {
    pub fn new(vgem: &DrmDevice, xrgb: u32) -> Bo {
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
        Bo { dumb, dmabuf }
    }

    /// The GEM handle, for vgem's fence ioctls.
    pub fn handle(&self) -> u32 {
        u32::from(self.dumb.handle())
    }

    /// Bytes per row.
    pub fn pitch(&self) -> u32 {
        self.dumb.pitch()
    }

    /// The BO as a dma-buf `wl_buffer` of `client` (`create_immed`, linear modifier), checked
    /// with a round trip.
    pub fn wl_buffer(&self, client: &mut Client, linux_dmabuf: &ZwpLinuxDmabufV1) -> WlBuffer {
        let params: ZwpLinuxBufferParamsV1 = linux_dmabuf.create_params(client.qh(), IgnoreEvents);
        params.add(self.dmabuf.as_fd(), 0, 0, self.pitch(), 0, 0); // DRM_FORMAT_MOD_LINEAR
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
        buffer
    }
}

/// A vgem dumb buffer filled with one colour, as a linux-dmabuf `wl_buffer`.
pub struct DmabufBuffer {
    pub buffer: WlBuffer,
    _dmabuf: OwnedFd,
}

/// A [`Bo`] filled with `xrgb`, imported as a `wl_buffer`; its GEM handle is then closed (the
/// dma-buf keeps the memory).
pub fn dmabuf_buffer(
    client: &mut Client,
    linux_dmabuf: &ZwpLinuxDmabufV1,
    vgem: &DrmDevice,
    xrgb: u32,
) -> DmabufBuffer {
    let bo = Bo::new(vgem, xrgb);
    let buffer = bo.wl_buffer(client, linux_dmabuf);
    let _ = vgem.destroy_dumb_buffer(bo.dumb);
    DmabufBuffer {
        buffer,
        _dmabuf: bo.dmabuf,
    }
}

/// Attaches `buffer`, damages all of it and commits.
pub fn commit_buffer(surface: &WlSurface, buffer: &WlBuffer) {
    surface.attach(Some(buffer), 0, 0);
    surface.damage_buffer(0, 0, SIZE as i32, SIZE as i32);
    surface.commit();
}
