//! linux-drm-syncobj-v1 timelines for the kernel tests: real syncobjs on a DRM device, imported
//! by a client, and waiting for their release points.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fence_bridge::{DrmDevice, Syncobj};
use fencegate_clients::{Client, IgnoreEvents};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::client::wp_linux_drm_syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1;

/// How long a release point may take to be signalled.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A new timeline syncobj on `device`, imported into the compositor by `client`.
pub fn timeline(
    client: &Client,
    manager: &WpLinuxDrmSyncobjManagerV1,
    device: &DrmDevice,
) -> (Syncobj, WpLinuxDrmSyncobjTimelineV1) {
    let syncobj = Syncobj::create(device).expect("DRM_IOCTL_SYNCOBJ_CREATE");
    let fd = syncobj.export().expect("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD");
    let object = manager.import_timeline(fd.as_fd(), client.qh(), IgnoreEvents);
    (syncobj, object)
}

/// Waits until `syncobj` reaches `point`; fails the test (naming `what`) if it does not within
/// the timeout.
#[track_caller]
pub fn assert_released(syncobj: &Syncobj, point: u64, what: &str) {
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    while syncobj.query().unwrap() < point {
        assert!(
            Instant::now() < deadline,
            "{what}: release point {point} never signalled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `syncobj` has not moved: nothing released yet.
#[track_caller]
pub fn assert_not_released(syncobj: &Syncobj, what: &str) {
    assert_eq!(syncobj.query().unwrap(), 0, "{what}: released too early");
}
