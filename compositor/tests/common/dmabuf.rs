//! vgem dumb buffers as dma-buf `wl_buffer`s, for the kernel tests: panicking wrappers over
//! `fencegate_clients::vgem` (the BO) and `fencegate_clients::linux_dmabuf` (the import), which
//! the example clients use too.

use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};

use fence_bridge::DrmDevice;
use fencegate_clients::linux_dmabuf::{create_buffer, Plane, MOD_LINEAR, XRGB8888};
use fencegate_clients::vgem::VgemBo;
use fencegate_clients::{Client, IgnoreEvents};
use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;

/// Width and height of every test buffer, in pixels.
pub const SIZE: u32 = 16;

/// Binds linux-dmabuf (up to version 3: no feedback object).
pub fn bind_linux_dmabuf(client: &Client) -> ZwpLinuxDmabufV1 {
    client
        .bind_global::<ZwpLinuxDmabufV1, _>(3, IgnoreEvents)
        .expect("linux-dmabuf is advertised")
}

/// A linear XRGB8888 `SIZE`×`SIZE` dumb buffer on vgem filled with one colour, and its
/// dma-buf (`dmabuf`, `handle()`, `pitch()` through [`VgemBo`]). Its GEM handle stays open, so
/// that fences can be attached to it.
pub struct Bo(VgemBo);

impl Deref for Bo {
    type Target = VgemBo;

    fn deref(&self) -> &VgemBo {
        &self.0
    }
}

impl Bo {
    pub fn new(vgem: &DrmDevice, xrgb: u32) -> Bo {
        Bo(VgemBo::filled(vgem, SIZE, SIZE, xrgb).expect("a filled vgem dumb buffer"))
    }

    /// The BO as a dma-buf `wl_buffer` of `client` (linear modifier), checked: the compositor
    /// answered `created`.
    pub fn wl_buffer(&self, client: &mut Client, linux_dmabuf: &ZwpLinuxDmabufV1) -> WlBuffer {
        let plane = Plane {
            fd: self.dmabuf.as_fd(),
            offset: 0,
            stride: self.pitch(),
            modifier: MOD_LINEAR,
        };
        create_buffer(client, linux_dmabuf, plane, (SIZE, SIZE), XRGB8888)
            .expect("the compositor imports a linear XRGB8888 dma-buf")
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
    DmabufBuffer {
        buffer,
        _dmabuf: bo.0.destroy(vgem),
    }
}

/// Attaches `buffer`, damages all of it and commits.
pub fn commit_buffer(surface: &WlSurface, buffer: &WlBuffer) {
    surface.attach(Some(buffer), 0, 0);
    surface.damage_buffer(0, 0, SIZE as i32, SIZE as i32);
    surface.commit();
}
