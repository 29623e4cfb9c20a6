//! linux-drm-syncobj-v1 on the client side: the manager, timelines (a real DRM syncobj created
//! on the client's device, exported and imported into the compositor), setting points, and
//! waiting for a release point with the kernel's own wait (`DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT`
//! through fence-bridge), never by polling.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use fence_bridge::{DrmDevice, Syncobj, SyncobjWaitFlags};
use rustix::io::Errno;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1;

use crate::drm_nodes::{self, DeviceNodes};
use crate::{Client, IgnoreEvents};

/// The manager's interface name, as protocol errors name it.
pub const MANAGER_INTERFACE: &str = "wp_linux_drm_syncobj_manager_v1";
/// The per-surface object's interface name.
pub const SURFACE_INTERFACE: &str = "wp_linux_drm_syncobj_surface_v1";

/// Binds `wp_linux_drm_syncobj_manager_v1` (version 1).
pub fn bind_manager(client: &Client) -> anyhow::Result<WpLinuxDrmSyncobjManagerV1> {
    client.bind_global(1, IgnoreEvents)
}

/// A timeline: the client's syncobj and the compositor's handle of it.
pub struct Timeline {
    /// The syncobj on the client's DRM device.
    pub syncobj: Syncobj,
    /// Its import into the compositor.
    pub object: WpLinuxDrmSyncobjTimelineV1,
}

/// A new timeline syncobj on `device` (`DRM_IOCTL_SYNCOBJ_CREATE`), exported as an fd
/// (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`) and imported by `client` with `import_timeline`.
pub fn import_timeline(
    client: &Client,
    manager: &WpLinuxDrmSyncobjManagerV1,
    device: &DrmDevice,
) -> anyhow::Result<Timeline> {
    let syncobj = Syncobj::create(device).context("DRM_IOCTL_SYNCOBJ_CREATE")?;
    let fd = syncobj.export().context("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD")?;
    let object = manager.import_timeline(fd.as_fd(), client.qh(), IgnoreEvents);
    Ok(Timeline { syncobj, object })
}

/// Sets the acquire and/or release point of the next commit.
pub fn set_points(
    surface: &WpLinuxDrmSyncobjSurfaceV1,
    acquire: Option<(&WpLinuxDrmSyncobjTimelineV1, u64)>,
    release: Option<(&WpLinuxDrmSyncobjTimelineV1, u64)>,
) {
    if let Some((timeline, point)) = acquire {
        surface.set_acquire_point(timeline, (point >> 32) as u32, point as u32);
    }
    if let Some((timeline, point)) = release {
        surface.set_release_point(timeline, (point >> 32) as u32, point as u32);
    }
}

/// Blocks until `point` of `syncobj` has signalled, waiting in the kernel (with
/// `WAIT_FOR_SUBMIT`: a point nobody submitted yet is waited for too). Errs naming the point
/// when `timeout` passes first.
pub fn wait_signalled(syncobj: &Syncobj, point: u64, timeout: Duration) -> anyhow::Result<()> {
    match syncobj.wait(point, Some(timeout), SyncobjWaitFlags::WAIT_FOR_SUBMIT) {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(Errno::TIME.raw_os_error()) => {
            let at = syncobj
                .query()
                .map_or_else(|e| format!("? ({e})"), |v| v.to_string());
            Err(anyhow!(
                "point {point} did not signal within {timeout:?} (the timeline is at {at})"
            ))
        }
        Err(err) => Err(anyhow!(err).context(format!("waiting for point {point}"))),
    }
}

/// Whether `point` of `syncobj` has signalled (one `DRM_IOCTL_SYNCOBJ_QUERY`).
pub fn is_signalled(syncobj: &Syncobj, point: u64) -> anyhow::Result<bool> {
    Ok(syncobj.query().context("DRM_IOCTL_SYNCOBJ_QUERY")? >= point)
}

/// The DRM device the client makes its timelines on: `--device` if given (it must have
/// timeline syncobjs), else linux-dmabuf's main device — its render node, else its card node —
/// else the first render node that has them. Returns the device and, when it is not the main
/// device, why.
pub fn open_timeline_device(
    requested: Option<&Path>,
    main: Option<&DeviceNodes>,
) -> anyhow::Result<(DrmDevice, Option<String>)> {
    if let Some(path) = requested {
        let device = drm_nodes::open(path)?;
        if !device.supports_syncobj_timeline() {
            bail!(
                "{} ({}) has no timeline syncobjs (DRM_CAP_SYNCOBJ_TIMELINE)",
                path.display(),
                device.driver_name()
            );
        }
        return Ok((device, None));
    }
    let mut why_not = Vec::new();
    if let Some(main) = main {
        for path in main.render.iter().chain(&main.card) {
            match drm_nodes::open(path) {
                Ok(device) if device.supports_syncobj_timeline() => return Ok((device, None)),
                Ok(device) => why_not.push(format!(
                    "{} ({}) has no timeline syncobjs",
                    path.display(),
                    device.driver_name()
                )),
                Err(err) => why_not.push(format!("{err:#}")),
            }
        }
    } else {
        why_not.push("linux-dmabuf names no main device (version < 4)".to_owned());
    }
    for path in drm_nodes::nodes_with_prefix("renderD") {
        if let Ok(device) = drm_nodes::open(&path) {
            if device.supports_syncobj_timeline() {
                let note = format!("not linux-dmabuf's main device: {}", why_not.join("; "));
                return Ok((device, Some(note)));
            }
        }
    }
    why_not.push("no render node under /dev/dri has them".to_owned());
    bail!(
        "no DRM device with timeline syncobjs: {}",
        why_not.join("; ")
    )
}
