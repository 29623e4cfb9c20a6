//! Kernel tests: the guest of `cargo xtask vm-test` has the DRM devices the project relies on.

mod support;

use drm::control::Device as _;
use drm::{Device as _, DriverCapability};
use support::{find_node, require_device};

#[test]
fn virtio_gpu_card_has_timeline_syncobjs() {
    let Some(card) = require_device("virtio_gpu card node under /dev/dri", || {
        find_node("card", "virtio_gpu")
    }) else {
        return;
    };
    assert_eq!(card.driver_name(), "virtio_gpu");

    let cap = |c: DriverCapability| {
        card.get_driver_capability(c)
            .unwrap_or_else(|e| panic!("DRM_IOCTL_GET_CAP({c:?}) on {}: {e}", card.path.display()))
    };
    assert_eq!(cap(DriverCapability::SyncObj), 1, "DRM_CAP_SYNCOBJ");
    assert_eq!(
        cap(DriverCapability::TimelineSyncObj),
        1,
        "DRM_CAP_SYNCOBJ_TIMELINE"
    );

    // A syncobj used as a timeline: starts at point 0, signal point 3, query 3.
    let syncobj = card
        .create_syncobj(false)
        .expect("DRM_IOCTL_SYNCOBJ_CREATE");
    let mut points = [u64::MAX];
    card.syncobj_timeline_query(&[syncobj], &mut points, false)
        .expect("DRM_IOCTL_SYNCOBJ_QUERY on a new syncobj");
    assert_eq!(points, [0], "a new timeline syncobj is at point 0");
    card.syncobj_timeline_signal(&[syncobj], &[3])
        .expect("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL point 3");
    card.syncobj_timeline_query(&[syncobj], &mut points, false)
        .expect("DRM_IOCTL_SYNCOBJ_QUERY after signalling");
    assert_eq!(points, [3], "timeline point after signalling 3");

    card.destroy_syncobj(syncobj)
        .expect("DRM_IOCTL_SYNCOBJ_DESTROY");
    assert!(
        card.destroy_syncobj(syncobj).is_err(),
        "destroying a destroyed syncobj handle must fail"
    );
}

#[test]
fn virtio_gpu_has_a_render_node_with_syncobjs() {
    let Some(render) = require_device("virtio_gpu render node under /dev/dri", || {
        find_node("renderD", "virtio_gpu")
    }) else {
        return;
    };
    assert_eq!(render.driver_name(), "virtio_gpu");
    let syncobj = render
        .create_syncobj(true)
        .expect("DRM_IOCTL_SYNCOBJ_CREATE on the render node");
    render
        .syncobj_wait(&[syncobj], 0, true, false)
        .expect("a syncobj created signalled is signalled");
    render
        .destroy_syncobj(syncobj)
        .expect("DRM_IOCTL_SYNCOBJ_DESTROY");
}

#[test]
fn vgem_node_exists() {
    let Some(vgem) = require_device("vgem node under /dev/dri", || find_node("card", "vgem"))
    else {
        return;
    };
    assert_eq!(vgem.driver_name(), "vgem");
    assert!(
        find_node("renderD", "vgem").is_some(),
        "vgem has a card node but no render node"
    );
}
