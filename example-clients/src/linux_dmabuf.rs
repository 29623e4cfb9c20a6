//! linux-dmabuf (`zwp_linux_dmabuf_v1`) on the client side: binding it, reading the default
//! feedback (version 4+: the main device and the format table) or the version-3 format events,
//! and turning dma-buf planes into `wl_buffer`s.
//!
//! Buffers are made with `create` and the client waits for `created` or `failed`, so an import
//! the compositor refuses is a clear error, not a protocol error (`create_immed`'s way).

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use wayland_client::protocol::wl_buffer::{self, WlBuffer};
use wayland_client::{Connection, Dispatch, Proxy, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_buffer_params_v1::{
    self, ZwpLinuxBufferParamsV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_feedback_v1::{
    self, ZwpLinuxDmabufFeedbackV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::{
    self, ZwpLinuxDmabufV1,
};

use crate::{Client, ClientState};

/// `DRM_FORMAT_XRGB8888` ('XR24'): what every client here draws.
pub const XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
/// `DRM_FORMAT_MOD_LINEAR`.
pub const MOD_LINEAR: u64 = 0;
/// `DRM_FORMAT_MOD_INVALID`: "the implicit modifier" in linux-dmabuf.
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// Highest version bound: 5. Version 6 deprecates `main_device`, which the clients need.
const MAX_VERSION: u32 = 5;
/// How long the compositor gets to finish the default feedback or answer a buffer import.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the compositor said about dma-bufs.
#[derive(Clone, Debug, Default)]
pub struct DmabufInfo {
    /// The bound version.
    pub version: u32,
    /// The default feedback's main device (`dev_t`), version 4+.
    pub main_device: Option<u64>,
    /// Every (format, modifier) pair offered: the default feedback's tranches (version 4+) or
    /// the `modifier` events (version 3).
    pub formats: Vec<(u32, u64)>,
    /// Set when the default feedback's `done` arrived.
    pub feedback_done: bool,
    /// What went wrong reading the feedback (a format table that cannot be read), if anything.
    pub feedback_error: Option<String>,
    /// The tranches of the last complete feedback (its `done`), most preferred first.
    pub tranches: Vec<Tranche>,
    /// How many complete feedbacks arrived (a surface feedback is resent when it changes).
    pub generations: u32,
    // The feedback being assembled: the format table, the tranches done, the one not yet done.
    table: Vec<(u32, u64)>,
    tranche: Vec<(u32, u64)>,
    tranches_done: Vec<Tranche>,
    building: Tranche,
}

/// One tranche of a dma-buf feedback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tranche {
    /// The device the buffers would be used on (`dev_t`).
    pub target_device: Option<u64>,
    /// The `scanout` flag: buffers in these formats can go straight to the display.
    pub scanout: bool,
    /// Its (format, modifier) pairs.
    pub formats: Vec<(u32, u64)>,
}

impl DmabufInfo {
    /// Whether `format` is offered with `modifier`. A version-1/2 global announces no
    /// modifiers, so there only the format is checked.
    pub fn supports(&self, format: u32, modifier: u64) -> bool {
        self.formats
            .iter()
            .any(|&(f, m)| f == format && (m == modifier || self.version < 3))
    }
}

/// The user data of the global and its feedback object: what they reported, shared.
#[derive(Clone, Debug, Default)]
pub struct DmabufData(Arc<Mutex<DmabufInfo>>);

impl DmabufData {
    fn lock(&self) -> std::sync::MutexGuard<'_, DmabufInfo> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bound `zwp_linux_dmabuf_v1` and what it told us.
#[derive(Debug)]
pub struct LinuxDmabuf {
    /// The global.
    pub global: ZwpLinuxDmabufV1,
    /// Its formats and (version 4+) main device.
    pub info: DmabufInfo,
}

impl LinuxDmabuf {
    /// Binds linux-dmabuf (up to version 5) and waits for what it announces: the default
    /// feedback's `done` (version 4+) or a round trip's worth of format events.
    pub fn bind(client: &mut Client) -> anyhow::Result<LinuxDmabuf> {
        let data = DmabufData::default();
        let global: ZwpLinuxDmabufV1 = client
            .bind_global(MAX_VERSION, data.clone())
            .context("binding linux-dmabuf")?;
        data.lock().version = global.version();
        if global.version() >= 4 {
            let feedback = global.get_default_feedback(client.qh(), data.clone());
            let done = data.clone();
            client
                .dispatch_until(ANSWER_TIMEOUT, "linux-dmabuf's default feedback", |_| {
                    done.lock().feedback_done
                })
                .context("reading linux-dmabuf's default feedback")?;
            feedback.destroy();
        } else {
            client
                .roundtrip()
                .context("reading linux-dmabuf's formats")?;
        }
        let info = data.lock().clone();
        if let Some(err) = &info.feedback_error {
            bail!("linux-dmabuf's default feedback: {err}");
        }
        Ok(LinuxDmabuf { global, info })
    }
}

/// A surface's own dma-buf feedback (`get_surface_feedback`), kept up to date as the
/// compositor resends it.
#[derive(Debug)]
pub struct SurfaceFeedback {
    proxy: ZwpLinuxDmabufFeedbackV1,
    data: DmabufData,
}

impl SurfaceFeedback {
    /// Starts listening to `surface`'s feedback (version 4+; None before).
    pub fn watch(
        client: &Client,
        linux_dmabuf: &LinuxDmabuf,
        surface: &wayland_client::protocol::wl_surface::WlSurface,
    ) -> Option<SurfaceFeedback> {
        if linux_dmabuf.global.version() < 4 {
            return None;
        }
        let data = DmabufData::default();
        let proxy = linux_dmabuf
            .global
            .get_surface_feedback(surface, client.qh(), data.clone());
        Some(SurfaceFeedback { proxy, data })
    }

    /// The last complete feedback's tranche flagged `scanout`, if it had one.
    pub fn scanout_tranche(&self) -> Option<Tranche> {
        self.data
            .lock()
            .tranches
            .iter()
            .find(|t| t.scanout)
            .cloned()
    }
}

impl Drop for SurfaceFeedback {
    fn drop(&mut self) {
        self.proxy.destroy();
    }
}

/// One plane of a dma-buf, as `zwp_linux_buffer_params_v1.add` takes it.
#[derive(Clone, Copy, Debug)]
pub struct Plane<'a> {
    /// The dma-buf.
    pub fd: BorrowedFd<'a>,
    /// Byte offset of the plane in it.
    pub offset: u32,
    /// Bytes per row.
    pub stride: u32,
    /// The layout (`DRM_FORMAT_MOD_*`).
    pub modifier: u64,
}

/// Counts `wl_buffer.release` events: the user data of every dma-buf `wl_buffer` made here.
#[derive(Clone, Debug, Default)]
pub struct BufferReleases(Arc<AtomicU32>);

impl BufferReleases {
    /// How many `wl_buffer.release` events arrived.
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

impl Dispatch<WlBuffer, BufferReleases> for ClientState {
    fn event(
        _: &mut Self,
        _: &WlBuffer,
        event: wl_buffer::Event,
        releases: &BufferReleases,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            releases.0.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A single-plane dma-buf as a `wl_buffer` (`create`, then waiting for `created` or `failed`).
/// Its release events are counted in [`BufferReleases`] ([`buffer_releases`]).
pub fn create_buffer(
    client: &mut Client,
    linux_dmabuf: &ZwpLinuxDmabufV1,
    plane: Plane<'_>,
    (width, height): (u32, u32),
    format: u32,
) -> anyhow::Result<WlBuffer> {
    let (w, h) = (
        i32::try_from(width).context("buffer width")?,
        i32::try_from(height).context("buffer height")?,
    );
    let outcome = ParamsOutcome::default();
    let params: ZwpLinuxBufferParamsV1 = linux_dmabuf.create_params(client.qh(), outcome.clone());
    params.add(
        plane.fd,
        0,
        plane.offset,
        plane.stride,
        (plane.modifier >> 32) as u32,
        plane.modifier as u32,
    );
    params.create(w, h, format, zwp_linux_buffer_params_v1::Flags::empty());
    let answered = outcome.clone();
    let waited = client.dispatch_until(
        ANSWER_TIMEOUT,
        "linux-dmabuf's answer to a buffer import",
        |_| answered.get().is_some(),
    );
    params.destroy();
    waited?;
    match outcome.get() {
        Some(Ok(buffer)) => Ok(buffer),
        _ => Err(anyhow!(
            "the compositor refused the dma-buf ({width}x{height}, format {}, modifier {:#x}, \
             stride {}): zwp_linux_buffer_params_v1.failed",
            fourcc(format),
            plane.modifier,
            plane.stride
        )),
    }
}

/// The release counter of a `wl_buffer` made by [`create_buffer`].
pub fn buffer_releases(buffer: &WlBuffer) -> BufferReleases {
    buffer.data::<BufferReleases>().cloned().unwrap_or_default()
}

/// A fourcc code as its four characters, e.g. "XR24".
pub fn fourcc(format: u32) -> String {
    format
        .to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// Where `created` / `failed` of one `zwp_linux_buffer_params_v1` lands.
#[derive(Clone, Debug, Default)]
pub struct ParamsOutcome(Arc<Mutex<Option<Result<WlBuffer, ()>>>>);

impl ParamsOutcome {
    fn get(&self) -> Option<Result<WlBuffer, ()>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, outcome: Result<WlBuffer, ()>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

impl Dispatch<ZwpLinuxBufferParamsV1, ParamsOutcome> for ClientState {
    fn event(
        _: &mut Self,
        _: &ZwpLinuxBufferParamsV1,
        event: zwp_linux_buffer_params_v1::Event,
        outcome: &ParamsOutcome,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            zwp_linux_buffer_params_v1::Event::Created { buffer } => outcome.set(Ok(buffer)),
            zwp_linux_buffer_params_v1::Event::Failed => outcome.set(Err(())),
            _ => {}
        }
    }

    wayland_client::event_created_child!(ClientState, ZwpLinuxBufferParamsV1, [
        zwp_linux_buffer_params_v1::EVT_CREATED_OPCODE => (WlBuffer, BufferReleases::default())
    ]);
}

impl Dispatch<ZwpLinuxDmabufV1, DmabufData> for ClientState {
    fn event(
        _: &mut Self,
        _: &ZwpLinuxDmabufV1,
        event: zwp_linux_dmabuf_v1::Event,
        data: &DmabufData,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let mut info = data.lock();
        match event {
            // Version 1-2: formats without modifiers (the implicit one).
            zwp_linux_dmabuf_v1::Event::Format { format } => {
                info.formats.push((format, MOD_INVALID));
            }
            zwp_linux_dmabuf_v1::Event::Modifier {
                format,
                modifier_hi,
                modifier_lo,
            } => {
                let modifier = (u64::from(modifier_hi) << 32) | u64::from(modifier_lo);
                info.formats.push((format, modifier));
            }
            _ => {}
        }
    }
}

impl Dispatch<ZwpLinuxDmabufFeedbackV1, DmabufData> for ClientState {
    fn event(
        _: &mut Self,
        _: &ZwpLinuxDmabufFeedbackV1,
        event: zwp_linux_dmabuf_feedback_v1::Event,
        data: &DmabufData,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let mut info = data.lock();
        match event {
            zwp_linux_dmabuf_feedback_v1::Event::FormatTable { fd, size } => {
                match read_format_table(fd, size) {
                    Ok(table) => info.table = table,
                    Err(err) => info.feedback_error = Some(format!("{err:#}")),
                }
            }
            zwp_linux_dmabuf_feedback_v1::Event::MainDevice { device } => {
                match dev_t_from_bytes(&device) {
                    Some(dev) => info.main_device = Some(dev),
                    None => {
                        info.feedback_error = Some(format!(
                            "main_device is {} bytes, not a dev_t",
                            device.len()
                        ))
                    }
                }
            }
            zwp_linux_dmabuf_feedback_v1::Event::TrancheTargetDevice { device } => {
                info.building.target_device = dev_t_from_bytes(&device);
            }
            zwp_linux_dmabuf_feedback_v1::Event::TrancheFlags { flags } => {
                info.building.scanout = flags.into_result().is_ok_and(|flags| {
                    flags.contains(zwp_linux_dmabuf_feedback_v1::TrancheFlags::Scanout)
                });
            }
            zwp_linux_dmabuf_feedback_v1::Event::TrancheFormats { indices } => {
                let table = info.table.clone();
                for index in indices.chunks_exact(2) {
                    let index = u16::from_ne_bytes([index[0], index[1]]) as usize;
                    match table.get(index) {
                        Some(&entry) => {
                            info.tranche.push(entry);
                            info.building.formats.push(entry);
                        }
                        None => {
                            info.feedback_error = Some(format!(
                                "tranche_formats index {index} is past the {}-entry format table",
                                table.len()
                            ))
                        }
                    }
                }
            }
            zwp_linux_dmabuf_feedback_v1::Event::TrancheDone => {
                let tranche = std::mem::take(&mut info.tranche);
                info.formats.extend(tranche);
                let done = std::mem::take(&mut info.building);
                info.tranches_done.push(done);
            }
            zwp_linux_dmabuf_feedback_v1::Event::Done => {
                info.feedback_done = true;
                info.tranches = std::mem::take(&mut info.tranches_done);
                info.generations += 1;
            }
            _ => {}
        }
    }
}

/// A `dev_t` sent as a native-endian array (8 bytes on Linux).
pub fn dev_t_from_bytes(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// The feedback's format table: 16-byte entries of (u32 format, u32 padding, u64 modifier).
/// Read with `pread` (the fd is a read-only memfd or shm file; no mapping needed).
fn read_format_table(fd: OwnedFd, size: u32) -> anyhow::Result<Vec<(u32, u64)>> {
    if size % 16 != 0 {
        bail!("the format table is {size} bytes, not a multiple of 16");
    }
    let mut bytes = vec![0u8; size as usize];
    File::from(fd)
        .read_exact_at(&mut bytes, 0)
        .context("reading the format table")?;
    Ok(parse_format_table(&bytes))
}

/// Parses format-table bytes (see [`read_format_table`]).
pub fn parse_format_table(bytes: &[u8]) -> Vec<(u32, u64)> {
    bytes
        .chunks_exact(16)
        .map(|e| {
            let format = u32::from_ne_bytes(e[0..4].try_into().expect("4 bytes"));
            let modifier = u64::from_ne_bytes(e[8..16].try_into().expect("8 bytes"));
            (format, modifier)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_table_entries() {
        let mut bytes = Vec::new();
        for (format, modifier) in [(XRGB8888, MOD_LINEAR), (0x3432_5241, 0x0100_0000_0000_0001)] {
            bytes.extend_from_slice(&u32::to_ne_bytes(format));
            bytes.extend_from_slice(&[0; 4]);
            bytes.extend_from_slice(&u64::to_ne_bytes(modifier));
        }
        assert_eq!(
            parse_format_table(&bytes),
            vec![(XRGB8888, 0), (0x3432_5241, 0x0100_0000_0000_0001)]
        );
        assert_eq!(fourcc(XRGB8888), "XR24");
        assert_eq!(dev_t_from_bytes(&0xe280u64.to_ne_bytes()), Some(0xe280));
        assert_eq!(dev_t_from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn supported_formats() {
        let mut info = DmabufInfo {
            version: 4,
            formats: vec![(XRGB8888, MOD_LINEAR)],
            ..DmabufInfo::default()
        };
        assert!(info.supports(XRGB8888, MOD_LINEAR));
        assert!(!info.supports(XRGB8888, MOD_INVALID));
        info.version = 2;
        assert!(info.supports(XRGB8888, MOD_INVALID));
    }
}
