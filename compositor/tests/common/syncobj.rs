//! linux-drm-syncobj-v1 timelines for the kernel tests: panicking wrappers over
//! `fencegate_clients::syncobj_timeline` (real syncobjs on a DRM device, imported by a client,
//! and kernel waits for their release points), which the example clients use too.

use std::time::Duration;

use fence_bridge::{DrmDevice, Syncobj};
use fencegate_clients::syncobj_timeline::{import_timeline, wait_signalled};
use fencegate_clients::Client;
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
    let timeline = import_timeline(client, manager, device)
        .unwrap_or_else(|err| panic!("a timeline syncobj, exported and imported: {err:#}"));
    (timeline.syncobj, timeline.object)
}

/// Waits (in the kernel) until `syncobj` reaches `point`; fails the test (naming `what`) if it
/// does not within the timeout.
#[track_caller]
pub fn assert_released(syncobj: &Syncobj, point: u64, what: &str) {
    if let Err(err) = wait_signalled(syncobj, point, RELEASE_TIMEOUT) {
        panic!("{what}: release point {point} never signalled: {err:#}");
    }
}

/// `syncobj` has not moved: nothing released yet.
#[track_caller]
pub fn assert_not_released(syncobj: &Syncobj, what: &str) {
    assert_eq!(syncobj.query().unwrap(), 0, "{what}: released too early");
}
