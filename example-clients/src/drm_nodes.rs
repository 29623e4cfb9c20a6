//! DRM nodes: from the `dev_t` a linux-dmabuf feedback names to `/dev/dri` paths, a render
//! node's card node (the same device), and nodes by driver name.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use drm::node::{DrmNode, NodeType};
use fence_bridge::DrmDevice;
use rustix::fs::{major, minor};

/// Where the DRM nodes live.
const DRI_DIR: &str = "/dev/dri";

/// The nodes of one DRM device: its render node and its card (primary) node, where they exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNodes {
    /// The device number the nodes were found from (a render or a card node's).
    pub dev_id: u64,
    /// `/dev/dri/renderD*`.
    pub render: Option<PathBuf>,
    /// `/dev/dri/card*`.
    pub card: Option<PathBuf>,
}

impl DeviceNodes {
    /// The nodes of the device `dev_id` (e.g. linux-dmabuf's `main_device`), found through
    /// `/sys/dev/char/MAJ:MIN/device/drm`.
    pub fn from_dev_id(dev_id: u64) -> anyhow::Result<DeviceNodes> {
        let node = DrmNode::from_dev_id(dev_id).map_err(|err| {
            anyhow!(
                "device {}:{} is not a DRM node: {err}",
                major(dev_id),
                minor(dev_id)
            )
        })?;
        let nodes = DeviceNodes {
            dev_id,
            render: node.dev_path_with_type(NodeType::Render),
            card: node.dev_path_with_type(NodeType::Primary),
        };
        if nodes.render.is_none() && nodes.card.is_none() {
            bail!(
                "DRM device {}:{} has no render or card node under {DRI_DIR}",
                major(dev_id),
                minor(dev_id)
            );
        }
        Ok(nodes)
    }

    /// The nodes of the device `path` (a render or card node) belongs to.
    pub fn from_path(path: &Path) -> anyhow::Result<DeviceNodes> {
        let node = DrmNode::from_path(path)
            .map_err(|err| anyhow!("{} is not a DRM node: {err}", path.display()))?;
        let mut nodes = DeviceNodes::from_dev_id(node.dev_id())?;
        // /sys names the node by kind; keep the caller's spelling of the one it gave.
        match node.ty() {
            NodeType::Render => nodes.render = Some(path.to_path_buf()),
            NodeType::Primary => nodes.card = Some(path.to_path_buf()),
            NodeType::Control => {}
        }
        Ok(nodes)
    }
}

impl fmt::Display for DeviceNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
        };
        write!(
            f,
            "{}:{} (render {}, card {})",
            major(self.dev_id),
            minor(self.dev_id),
            show(&self.render),
            show(&self.card)
        )
    }
}

/// Every node under `/dev/dri` whose name starts with `prefix` (`"card"`, `"renderD"`), sorted.
/// Empty where there is no `/dev/dri`.
pub fn nodes_with_prefix(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DRI_DIR) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    paths
}

/// Opens a DRM node read-write, saying which one failed.
pub fn open(path: &Path) -> anyhow::Result<DrmDevice> {
    DrmDevice::open(path).with_context(|| format!("opening the DRM node {}", path.display()))
}

/// The first node under `/dev/dri` whose name starts with `prefix` and whose driver
/// (`DRM_IOCTL_VERSION`) is `driver`, opened read-write.
pub fn open_by_driver(prefix: &str, driver: &str) -> Option<DrmDevice> {
    nodes_with_prefix(prefix).into_iter().find_map(|path| {
        let device = DrmDevice::open(&path).ok()?;
        (device.driver_name() == driver).then_some(device)
    })
}

/// vgem's card node: dumb buffers, dma-bufs and fences userspace controls.
pub fn open_vgem() -> anyhow::Result<DrmDevice> {
    open_by_driver("card", "vgem").ok_or_else(|| {
        anyhow!("no vgem card node under {DRI_DIR} (load the vgem module: `modprobe vgem`)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_drm_device_is_a_clear_error() {
        // /dev/null is 1:3, a memory device.
        let err = DeviceNodes::from_path(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("not a DRM node"), "{err:#}");
        let err = DeviceNodes::from_dev_id(0x0103).unwrap_err();
        assert!(err.to_string().contains("1:3"), "{err:#}");
    }
}
