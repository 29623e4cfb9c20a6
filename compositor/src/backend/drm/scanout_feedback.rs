//! Per-surface linux-dmabuf feedback: a surface that covers an output (a direct-scanout
//! candidate, see `direct_scanout`) is told which buffers the primary plane can scan out, in a
//! preferred tranche flagged `scanout`; every other surface gets the render feedback, which is
//! also the global default. A client that follows it allocates buffers the display can read
//! as they are, and its frames skip the compositor's render pass.

use anyhow::Context;
use drm::control::{plane, Device as ControlDevice};
use smithay::backend::allocator::format::FormatSet;
use smithay::backend::allocator::{Format, Fourcc, Modifier};
use smithay::backend::drm::{DrmDeviceFd, DrmNode};
use smithay::desktop::utils::surface_primary_scanout_output;
use smithay::reexports::wayland_protocols::wp::linux_dmabuf::zv1::server::zwp_linux_dmabuf_feedback_v1::TrancheFlags;
use smithay::wayland::dmabuf::{DmabufFeedback, DmabufFeedbackBuilder};
use tracing::{debug, info};

use super::direct_scanout;
use crate::state::Core;

pub struct ScanoutFeedback {
    render: DmabufFeedback,
    scanout: DmabufFeedback,
}

impl ScanoutFeedback {
    /// Feedback naming `render_node` as the main device with `render_formats`, and for
    /// candidates a preferred tranche on `card` with the formats both `plane` and the renderer
    /// take.
    pub fn new(
        card: &DrmDeviceFd,
        card_node: DrmNode,
        render_node: DrmNode,
        plane: plane::Handle,
        render_formats: &FormatSet,
    ) -> anyhow::Result<ScanoutFeedback> {
        let plane_formats = plane_formats(card, plane)?;
        let scanout_formats: Vec<Format> = plane_formats
            .iter()
            .filter(|format| render_formats.contains(format))
            .copied()
            .collect();
        info!(
            plane_formats = plane_formats.iter().count(),
            scanout_formats = scanout_formats.len(),
            "drm: dma-buf feedback with a scanout tranche for fullscreen surfaces"
        );
        let render = DmabufFeedbackBuilder::new(render_node.dev_id(), render_formats.clone())
            .build()
            .context("render feedback")?;
        let scanout = DmabufFeedbackBuilder::new(render_node.dev_id(), render_formats.clone())
            .add_preference_tranche(
                card_node.dev_id(),
                Some(TrancheFlags::Scanout),
                scanout_formats,
            )
            .build()
            .context("scanout feedback")?;
        Ok(ScanoutFeedback { render, scanout })
    }

    /// Sends each window on an output the feedback that fits it now; a surface that already
    /// has it hears nothing (Smithay sends only changes). The scanout tranche is the first
    /// output's primary plane's, offered for any output: the outputs of one device have the
    /// same plane formats in practice.
    pub fn send(&self, core: &Core) {
        for output in core.space.outputs() {
            let Some(area) = core.space.output_geometry(output) else {
                continue;
            };
            for window in core.space.elements() {
                let feedback = if direct_scanout::covers(core, window, area) {
                    &self.scanout
                } else {
                    &self.render
                };
                window
                    .send_dmabuf_feedback(output, surface_primary_scanout_output, |_, _| feedback);
            }
        }
    }
}

/// What `plane` scans out: its `IN_FORMATS` blob (formats with their modifiers), else its
/// format list with the implicit and linear modifiers.
fn plane_formats(card: &DrmDeviceFd, plane: plane::Handle) -> anyhow::Result<FormatSet> {
    let info = card.get_plane(plane).context("plane info")?;
    let props = card.get_properties(plane).context("plane properties")?;
    for (&handle, &value) in props.iter() {
        let prop = card.get_property(handle).context("plane property")?;
        if prop.name().to_bytes() == b"IN_FORMATS" && value != 0 {
            let blob = card.get_property_blob(value).context("IN_FORMATS blob")?;
            match parse_in_formats(&blob) {
                Some(formats) => return Ok(formats),
                None => debug!("drm: IN_FORMATS blob malformed; using the plane's format list"),
            }
        }
    }
    Ok(info
        .formats()
        .iter()
        .filter_map(|&code| Fourcc::try_from(code).ok())
        .flat_map(|code| {
            [Modifier::Invalid, Modifier::Linear].map(|modifier| Format { code, modifier })
        })
        .collect())
}

/// Parses `struct drm_format_modifier_blob` (include/uapi/drm/drm_mode.h): a header, the
/// formats, and modifiers each with a 64-bit mask of the formats (from `offset`) it applies to.
fn parse_in_formats(blob: &[u8]) -> Option<FormatSet> {
    let u32_at = |at: usize| Some(u32::from_ne_bytes(blob.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_ne_bytes(blob.get(at..at + 8)?.try_into().ok()?));
    let count_formats = u32_at(8)? as usize;
    let formats_offset = u32_at(12)? as usize;
    let count_modifiers = u32_at(16)? as usize;
    let modifiers_offset = u32_at(20)? as usize;
    let codes: Vec<u32> = (0..count_formats)
        .map(|i| u32_at(formats_offset + 4 * i))
        .collect::<Option<_>>()?;
    let mut formats = Vec::new();
    for i in 0..count_modifiers {
        // struct drm_format_modifier { __u64 formats; __u32 offset; __u32 pad; __u64 modifier; }
        let at = modifiers_offset + 24 * i;
        let (mask, offset, modifier) = (u64_at(at)?, u32_at(at + 8)? as usize, u64_at(at + 16)?);
        for bit in 0..64 {
            if mask & (1 << bit) != 0 {
                let Some(&code) = codes.get(offset + bit) else {
                    continue;
                };
                if let Ok(code) = Fourcc::try_from(code) {
                    formats.push(Format {
                        code,
                        modifier: Modifier::from(modifier),
                    });
                }
            }
        }
    }
    Some(formats.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob as the kernel writes it (drm_plane.c, create_in_format_blob): two formats, the
    /// linear modifier for both, a made-up tiled one for the second only.
    #[test]
    fn in_formats_blob_is_read_as_the_kernel_lays_it_out() {
        let xr24 = u32::from_le_bytes(*b"XR24");
        let ar24 = u32::from_le_bytes(*b"AR24");
        let mut blob = Vec::new();
        for word in [1u32, 0, 2, 24, 2, 32] {
            blob.extend_from_slice(&word.to_ne_bytes());
        }
        blob.extend_from_slice(&xr24.to_ne_bytes());
        blob.extend_from_slice(&ar24.to_ne_bytes());
        for (mask, modifier) in [(0b11u64, 0u64), (0b10, 0x0100_0000_0000_0001)] {
            blob.extend_from_slice(&mask.to_ne_bytes());
            blob.extend_from_slice(&0u32.to_ne_bytes());
            blob.extend_from_slice(&0u32.to_ne_bytes());
            blob.extend_from_slice(&modifier.to_ne_bytes());
        }
        let formats = parse_in_formats(&blob).expect("well-formed");
        let has = |code, modifier: u64| {
            formats.contains(&Format {
                code,
                modifier: Modifier::from(modifier),
            })
        };
        assert!(has(Fourcc::Xrgb8888, 0));
        assert!(has(Fourcc::Argb8888, 0));
        assert!(has(Fourcc::Argb8888, 0x0100_0000_0000_0001));
        assert!(!has(Fourcc::Xrgb8888, 0x0100_0000_0000_0001));
        assert_eq!(formats.iter().count(), 3);
        assert!(
            parse_in_formats(&blob[..30]).is_none(),
            "a truncated blob is refused"
        );
    }
}
