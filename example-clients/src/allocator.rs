//! Where the clients' dma-bufs come from, in order of preference ([`AllocatorChoice::Auto`]):
//!
//! 1. **GBM on the device's render node** (linux-dmabuf's main device, or `--device`): what a
//!    real GPU client does;
//! 2. **GBM on the card node of the same device**, when the render node cannot allocate. Mesa's
//!    software path (`kms_swrast`, e.g. virtio-gpu without virgl) needs dumb buffers, which only
//!    card nodes have: Weston's `simple-dmabuf-feedback` aborts there for lack of this step;
//! 3. **a vgem dumb buffer**, where no GBM works;
//! 4. **udmabuf** (a sealed memfd), where there is no DRM device at all.
//!
//! Every buffer is linear XRGB8888 and drawn by the CPU ([`PixelBuffer::write`]): through a GBM
//! mapping, a dumb-buffer mapping, or the memfd. Each step is tried by allocating a real
//! buffer; what failed is kept and reported ([`Allocator::describe`]), so "why not GBM?" has an
//! answer.

use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use fence_bridge::DrmDevice;
use gbm::{BufferObject, BufferObjectFlags};

use crate::drm_nodes::{self, DeviceNodes};
use crate::linux_dmabuf::{MOD_INVALID, MOD_LINEAR, XRGB8888};
use crate::options::AllocatorChoice;
use crate::udmabuf::Udmabuf;
use crate::vgem::VgemBo;

/// Allocates linear XRGB8888 dma-bufs the CPU can draw into.
pub struct Allocator {
    source: Source,
    description: String,
}

enum Source {
    Gbm {
        device: gbm::Device<DrmDevice>,
        node: PathBuf,
    },
    Vgem(DrmDevice),
    Udmabuf,
}

impl Allocator {
    /// The first source that can allocate a `width`×`height` buffer, among those `choice`
    /// allows, for the DRM device `nodes` (None: no known device; GBM is then tried on every
    /// render node and its card node). Errs listing why each one failed.
    pub fn open(
        choice: AllocatorChoice,
        nodes: Option<&DeviceNodes>,
        (width, height): (u32, u32),
    ) -> anyhow::Result<Allocator> {
        let mut failures: Vec<String> = Vec::new();
        let gbm_allowed = matches!(choice, AllocatorChoice::Auto | AllocatorChoice::Gbm);
        if gbm_allowed {
            let mut candidates: Vec<PathBuf> = Vec::new();
            match nodes {
                Some(nodes) => candidates.extend(nodes.render.iter().chain(&nodes.card).cloned()),
                None => {
                    for render in drm_nodes::nodes_with_prefix("renderD") {
                        candidates.push(render.clone());
                        if let Ok(n) = DeviceNodes::from_path(&render) {
                            candidates.extend(n.card);
                        }
                    }
                    if candidates.is_empty() {
                        failures.push("GBM: no DRM node under /dev/dri".to_owned());
                    }
                }
            }
            for node in candidates {
                match try_gbm(&node, width, height) {
                    Ok(device) => {
                        let mut description =
                            format!("GBM ({}) on {}", device.backend_name(), node.display());
                        note_failures(&mut description, &failures);
                        return Ok(Allocator {
                            source: Source::Gbm { device, node },
                            description,
                        });
                    }
                    Err(err) => failures.push(format!("GBM on {}: {err:#}", node.display())),
                }
            }
        }
        if matches!(choice, AllocatorChoice::Auto | AllocatorChoice::Vgem) {
            match drm_nodes::open_vgem().and_then(|vgem| {
                let bo = VgemBo::new(&vgem, width, height)
                    .context("DRM_IOCTL_MODE_CREATE_DUMB on vgem")?;
                bo.destroy(&vgem);
                Ok(vgem)
            }) {
                Ok(vgem) => {
                    let mut description = format!(
                        "vgem dumb buffers on {}",
                        vgem.path()
                            .map_or_else(|| "vgem".into(), |p| p.display().to_string())
                    );
                    note_failures(&mut description, &failures);
                    return Ok(Allocator {
                        source: Source::Vgem(vgem),
                        description,
                    });
                }
                Err(err) => failures.push(format!("vgem: {err:#}")),
            }
        }
        if matches!(choice, AllocatorChoice::Auto | AllocatorChoice::Udmabuf) {
            match Udmabuf::new(width, height) {
                Ok(_) => {
                    let mut description = format!("udmabuf ({})", crate::udmabuf::DEVICE);
                    note_failures(&mut description, &failures);
                    return Ok(Allocator {
                        source: Source::Udmabuf,
                        description,
                    });
                }
                Err(err) => failures.push(format!("udmabuf: {err}")),
            }
        }
        Err(anyhow!(
            "no way to allocate a {width}x{height} dma-buf (--allocator {}): {}",
            choice_name(choice),
            failures.join("; ")
        ))
    }

    /// What allocates, and what was tried before it (for logs and reports).
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// A new zero-filled `width`×`height` linear XRGB8888 buffer.
    pub fn allocate(&self, width: u32, height: u32) -> anyhow::Result<PixelBuffer> {
        let (storage, dmabuf, stride, modifier) = match &self.source {
            Source::Gbm { device, node } => {
                let bo = gbm_buffer(device, width, height)
                    .with_context(|| format!("gbm_bo_create on {}", node.display()))?;
                let dmabuf = bo.fd().context("gbm_bo_get_fd")?;
                let modifier = match u64::from(bo.modifier()) {
                    // Asked for LINEAR; a driver without modifiers reports "implicit".
                    MOD_INVALID => MOD_LINEAR,
                    m => m,
                };
                let stride = bo.stride();
                (Storage::Gbm(bo), dmabuf, stride, modifier)
            }
            Source::Vgem(vgem) => {
                let bo = VgemBo::new(vgem, width, height).context("a vgem dumb buffer")?;
                let dmabuf = bo.dmabuf.try_clone().context("dup of a dma-buf fd")?;
                let stride = bo.pitch();
                (
                    Storage::Vgem {
                        bo: Some(bo),
                        vgem: vgem.clone(),
                    },
                    dmabuf,
                    stride,
                    MOD_LINEAR,
                )
            }
            Source::Udmabuf => {
                let buf = Udmabuf::new(width, height).context("a udmabuf")?;
                let dmabuf = buf.dmabuf.try_clone().context("dup of a dma-buf fd")?;
                let stride = buf.stride();
                (Storage::Udmabuf(buf), dmabuf, stride, MOD_LINEAR)
            }
        };
        Ok(PixelBuffer {
            storage,
            dmabuf,
            width,
            height,
            stride,
            modifier,
        })
    }
}

fn note_failures(description: &mut String, failures: &[String]) {
    if !failures.is_empty() {
        let _ = write!(description, " (not: {})", failures.join("; "));
    }
}

fn choice_name(choice: AllocatorChoice) -> &'static str {
    match choice {
        AllocatorChoice::Auto => "auto",
        AllocatorChoice::Gbm => "gbm",
        AllocatorChoice::Vgem => "vgem",
        AllocatorChoice::Udmabuf => "udmabuf",
    }
}

/// A GBM device on `node` that can allocate a buffer of this size (one is made and dropped).
fn try_gbm(node: &Path, width: u32, height: u32) -> anyhow::Result<gbm::Device<DrmDevice>> {
    let drm = drm_nodes::open(node)?;
    let device = gbm::Device::new(drm).context("gbm_create_device")?;
    gbm_buffer(&device, width, height).context("gbm_bo_create (linear XRGB8888)")?;
    Ok(device)
}

fn gbm_buffer(
    device: &gbm::Device<DrmDevice>,
    width: u32,
    height: u32,
) -> io::Result<BufferObject<()>> {
    device.create_buffer_object::<()>(
        width,
        height,
        gbm::Format::Xrgb8888,
        BufferObjectFlags::LINEAR | BufferObjectFlags::RENDERING,
    )
}

enum Storage {
    Gbm(BufferObject<()>),
    Vgem {
        // Some until drop, which closes the GEM handle.
        bo: Option<VgemBo>,
        vgem: DrmDevice,
    },
    Udmabuf(Udmabuf),
}

/// One linear XRGB8888 dma-buf and the CPU's way into it.
pub struct PixelBuffer {
    storage: Storage,
    dmabuf: OwnedFd,
    width: u32,
    height: u32,
    stride: u32,
    modifier: u64,
}

impl PixelBuffer {
    /// The dma-buf.
    pub fn dmabuf(&self) -> &OwnedFd {
        &self.dmabuf
    }

    /// As a linux-dmabuf plane.
    pub fn plane(&self) -> crate::linux_dmabuf::Plane<'_> {
        crate::linux_dmabuf::Plane {
            fd: self.dmabuf.as_fd(),
            offset: 0,
            stride: self.stride,
            modifier: self.modifier,
        }
    }

    /// (width, height) in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// `DRM_FORMAT_XRGB8888`.
    pub fn format(&self) -> u32 {
        XRGB8888
    }

    /// Copies `pixels` (row-major XRGB8888, `width * height` entries) into the buffer with the
    /// CPU. The caller makes sure nobody reads it meanwhile (its release came, its fences
    /// signalled).
    pub fn write(&mut self, pixels: &[u32]) -> anyhow::Result<()> {
        let (width, height) = (self.width as usize, self.height as usize);
        if pixels.len() != width * height {
            anyhow::bail!("{} pixels for a {width}x{height} buffer", pixels.len());
        }
        match &mut self.storage {
            Storage::Gbm(bo) => bo
                .map_mut(0, 0, self.width, self.height, |map| {
                    let stride = map.stride() as usize;
                    let rows = map.buffer_mut().chunks_mut(stride);
                    for (row, src) in rows.zip(pixels.chunks_exact(width)) {
                        for (dst, px) in row[..width * 4].chunks_exact_mut(4).zip(src) {
                            dst.copy_from_slice(&px.to_le_bytes());
                        }
                    }
                })
                .context("gbm_bo_map for writing"),
            Storage::Vgem { bo: Some(bo), vgem } => bo
                .write(vgem, pixels)
                .context("writing a mapped vgem dumb buffer"),
            Storage::Vgem { bo: None, .. } => unreachable!("taken only on drop"),
            Storage::Udmabuf(buf) => buf.write(pixels).context("writing a udmabuf's memfd"),
        }
    }
}

impl Drop for PixelBuffer {
    fn drop(&mut self) {
        if let Storage::Vgem { bo, vgem } = &mut self.storage {
            if let Some(bo) = bo.take() {
                bo.destroy(vgem);
            }
        }
    }
}
