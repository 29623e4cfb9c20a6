//! Reading back what a DRM device shows, from a process that is not DRM master (the compositor
//! under test is), and the kernel's own account of it in debugfs.
//!
//! * [`read_scanouts`]: for each active CRTC its primary plane's `FB_ID` / `CRTC_ID`, the
//!   framebuffer's `GETFB2` info and its pixels ([`read_framebuffer`]).
//! * [`read_framebuffer`]: `GETFB2` returns GEM handles to a non-master only with
//!   `CAP_SYS_ADMIN` (root in the guest); the handle is exported as a PRIME dma-buf, mapped
//!   read-only and read between `DMA_BUF_IOCTL_SYNC` start/end; `MODE_MAP_DUMB` + mmap of the
//!   card fd is the fallback. The handles GETFB2 created in the reader's file are closed again
//!   (`GEM_CLOSE`), on every path.
//! * [`read_atomic_state`] / [`read_framebuffers`]: debugfs `state` and `framebuffer`.
//!
//! Pitfalls:
//! * Opening a card node while nobody is master makes the opener master, which would make a
//!   compositor's (seatd's) SET_MASTER fail: [`open_reader`] drops it at once.
//! * The first PRIME export of a BO creates a dma-buf that the kernel caches on the GEM object
//!   (`obj->dma_buf`, one more object reference) until the object's *last* handle closes, which
//!   is the compositor's: after the first dma-buf readback of a buffer the system has one
//!   dma-buf more and the object's debugfs refcount is one higher, for as long as the
//!   compositor keeps the buffer. Later readbacks reuse it. Leak checks: take the baseline
//!   after a first readback, or compare after the compositor freed the buffer.
//!   [`MapPath::MapDumb`] leaves no such trace.
//! * The `obj[N]: refcount=` of debugfs `state` is briefly one higher on virtio-gpu after a
//!   commit (the host command in flight holds a reference, dropped later from a workqueue):
//!   compare refcounts only once they are stable.
//! * What is read is the framebuffer's memory: on vkms the composed output (planes blended) is
//!   not this; on virtio-gpu without virgl the guest memory is what the host shows.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use drm::control::{crtc, plane, Device as ControlDevice, ResourceHandle};
use drm::{ClientCapability, Device};

pub const XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
pub const ARGB8888: u32 = u32::from_le_bytes(*b"AR24");
pub const XBGR8888: u32 = u32::from_le_bytes(*b"XB24");
pub const ABGR8888: u32 = u32::from_le_bytes(*b"AB24");
/// `DRM_FORMAT_MOD_LINEAR`.
pub const MOD_LINEAR: u64 = 0;
/// A plane's `type` property value for primary planes (`enum drm_plane_type`).
pub const PLANE_TYPE_PRIMARY: u64 = 1;

/// A card node opened for reading back (see [`open_reader`]).
pub struct ReaderCard(OwnedFd);

impl AsFd for ReaderCard {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl Device for ReaderCard {}
impl ControlDevice for ReaderCard {}

/// Opens `card` read-write, gives up DRM master if opening made it master (nobody else was),
/// and enables universal planes and atomic (the plane `type`, `FB_ID`, `CRTC_ID` properties).
pub fn open_reader(card: &Path) -> io::Result<ReaderCard> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(card)?;
    let reader = ReaderCard(file.into());
    // EINVAL when not master: nothing to give up.
    let _ = reader.release_master_lock();
    reader.set_client_capability(ClientCapability::UniversalPlanes, true)?;
    reader.set_client_capability(ClientCapability::Atomic, true)?;
    Ok(reader)
}

/// How the pixels were reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapPath {
    /// PRIME export of the GEM handle, mmap of the dma-buf.
    DmaBuf,
    /// `DRM_IOCTL_MODE_MAP_DUMB` and mmap of the card fd.
    MapDumb,
}

/// A framebuffer's description and pixels (copied out, pitch removed).
#[derive(Debug, Clone)]
pub struct FramebufferImage {
    pub fb_id: u32,
    pub width: u32,
    pub height: u32,
    /// DRM fourcc ([`XRGB8888`], ...).
    pub format: u32,
    /// [`MOD_LINEAR`] also when the framebuffer was made without modifiers.
    pub modifier: u64,
    pub pitch: u32,
    pub offset: u32,
    /// Row-major, `width * height`, each the little-endian 32-bit pixel as stored.
    pub pixels: Vec<u32>,
    pub mapped_via: MapPath,
    /// Why the dma-buf path was not used, when [`MapPath::MapDumb`] was the fallback.
    pub dma_buf_error: Option<String>,
    /// The GEM handles GETFB2 created in the reader's file; all closed again.
    pub gem_handles: Vec<u32>,
}

impl FramebufferImage {
    /// The stored 32-bit pixel at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        assert!(x < self.width && y < self.height, "({x}, {y}) outside");
        self.pixels[(y * self.width + x) as usize]
    }

    /// The pixel at (x, y) as 0xRRGGBB, whatever the (supported) channel order.
    pub fn rgb(&self, x: u32, y: u32) -> u32 {
        let p = self.pixel(x, y);
        match self.format {
            XBGR8888 | ABGR8888 => ((p & 0xff) << 16) | (p & 0xff00) | ((p >> 16) & 0xff),
            _ => p & 0x00ff_ffff,
        }
    }

    pub fn format_name(&self) -> String {
        fourcc_name(self.format)
    }
}

pub fn fourcc_name(fourcc: u32) -> String {
    String::from_utf8_lossy(&fourcc.to_le_bytes()).into_owned()
}

/// One active CRTC and what its primary plane shows.
#[derive(Debug, Clone)]
pub struct Scanout {
    pub crtc: u32,
    /// `None` when no primary plane is on the CRTC.
    pub plane: Option<u32>,
    /// `None` when the primary plane has no framebuffer (or there is none).
    pub image: Option<FramebufferImage>,
}

/// All property values of `object`, by name.
pub fn property_values<D: ControlDevice, H: ResourceHandle>(
    dev: &D,
    object: H,
) -> io::Result<HashMap<String, u64>> {
    let props = dev.get_properties(object)?;
    let mut values = HashMap::new();
    for (&handle, &value) in props.iter() {
        let info = dev.get_property(handle)?;
        values.insert(info.name().to_string_lossy().into_owned(), value);
    }
    Ok(values)
}

fn raw_id<H: ResourceHandle>(h: H) -> u32 {
    let raw: drm::control::RawResourceHandle = h.into();
    raw.get()
}

/// For each active CRTC (`ACTIVE` = 1) of `card`, its primary plane (`type` = primary,
/// `CRTC_ID` = the CRTC) and the pixels of the plane's `FB_ID`.
pub fn read_scanouts(card: &ReaderCard) -> io::Result<Vec<Scanout>> {
    let res = card.resource_handles()?;
    let planes: Vec<(plane::Handle, HashMap<String, u64>)> = card
        .plane_handles()?
        .into_iter()
        .map(|p| Ok((p, property_values(card, p)?)))
        .collect::<io::Result<_>>()?;
    let mut scanouts = Vec::new();
    for &crtc in res.crtcs() {
        let crtc_props = property_values(card, crtc)?;
        if crtc_props.get("ACTIVE") != Some(&1) {
            continue;
        }
        let crtc_id = raw_id::<crtc::Handle>(crtc);
        let primary = planes.iter().find(|(_, props)| {
            props.get("type") == Some(&PLANE_TYPE_PRIMARY)
                && props.get("CRTC_ID") == Some(&u64::from(crtc_id))
        });
        let fb_id = primary
            .and_then(|(_, props)| props.get("FB_ID").copied())
            .unwrap_or(0) as u32;
        let image = if fb_id == 0 {
            None
        } else {
            Some(read_framebuffer(card, fb_id, MapPath::DmaBuf)?)
        };
        scanouts.push(Scanout {
            crtc: crtc_id,
            plane: primary.map(|(p, _)| raw_id(*p)),
            image,
        });
    }
    Ok(scanouts)
}

/// [`read_scanouts`] through a reader opened on `card` for this call only.
pub fn read_scanouts_at(card: &Path) -> io::Result<Vec<Scanout>> {
    read_scanouts(&open_reader(card)?)
}

// --- ioctls (the drm crate's GETFB2 can fail after the kernel made handles, leaking them) ---

#[repr(C)]
#[derive(Default)]
struct DrmModeFbCmd2 {
    fb_id: u32,
    width: u32,
    height: u32,
    pixel_format: u32,
    flags: u32,
    handles: [u32; 4],
    pitches: [u32; 4],
    offsets: [u32; 4],
    modifier: [u64; 4],
}
const _: () = assert!(std::mem::size_of::<DrmModeFbCmd2>() == 104);

/// `struct drm_mode_map_dumb` (also the GEM handle probe of `leak_probe`).
#[repr(C)]
#[derive(Default)]
pub struct DrmModeMapDumb {
    pub handle: u32,
    pub pad: u32,
    pub offset: u64,
}

#[repr(C)]
struct DrmPrimeHandle {
    handle: u32,
    flags: u32,
    fd: i32,
}

#[repr(C)]
struct DrmGemClose {
    handle: u32,
    pad: u32,
}

const DRM_IOCTL_MODE_GETFB2: u64 = 0xc068_64ce;
/// `DRM_IOWR(0xB3, struct drm_mode_map_dumb)`
pub const DRM_IOCTL_MODE_MAP_DUMB: u64 = 0xc010_64b3;
const DRM_IOCTL_PRIME_HANDLE_TO_FD: u64 = 0xc00c_642d;
const DRM_IOCTL_GEM_CLOSE: u64 = 0x4008_6409;
const DMA_BUF_IOCTL_SYNC: u64 = 0x4008_6200;
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;
const DRM_MODE_FB_MODIFIERS: u32 = 2;

fn ioctl<T>(fd: BorrowedFd<'_>, request: u64, arg: &mut T) -> io::Result<()> {
    loop {
        if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// `DRM_IOCTL_GEM_CLOSE`: `Err(EINVAL)` when `handle` is not open in `card`'s file.
pub fn gem_close(card: BorrowedFd<'_>, handle: u32) -> io::Result<()> {
    ioctl(
        card,
        DRM_IOCTL_GEM_CLOSE,
        &mut DrmGemClose { handle, pad: 0 },
    )
}

/// The GEM handles GETFB2 made; closed on drop (error paths), or by [`GemHandles::close`].
struct GemHandles<'a> {
    card: BorrowedFd<'a>,
    handles: Vec<u32>,
}

impl GemHandles<'_> {
    fn close(mut self) -> io::Result<Vec<u32>> {
        let handles = std::mem::take(&mut self.handles);
        for &h in &handles {
            gem_close(self.card, h)?;
        }
        Ok(handles)
    }
}

impl Drop for GemHandles<'_> {
    fn drop(&mut self) {
        for &h in &self.handles {
            let _ = gem_close(self.card, h);
        }
    }
}

/// A read-only shared mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Mapping> {
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }

    /// Copies `height` rows of `width` 32-bit pixels, `pitch` bytes apart from `offset`.
    fn copy_pixels(&self, offset: usize, pitch: usize, width: usize, height: usize) -> Vec<u32> {
        assert!(offset + pitch * (height - 1) + width * 4 <= self.len);
        let mut pixels = Vec::with_capacity(width * height);
        let mut row = vec![0u8; width * 4];
        for y in 0..height {
            unsafe {
                let src = (self.ptr as *const u8).add(offset + y * pitch);
                std::ptr::copy_nonoverlapping(src, row.as_mut_ptr(), row.len());
            }
            pixels.extend(
                row.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        pixels
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn page_round(n: usize) -> usize {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    n.div_ceil(page) * page
}

/// Reads framebuffer `fb_id` of `card` (see the module docs). `prefer`: [`MapPath::DmaBuf`]
/// tries the dma-buf first and falls back to MAP_DUMB (saying why in `dma_buf_error`);
/// [`MapPath::MapDumb`] uses only MAP_DUMB. Single-plane linear XRGB/ARGB/XBGR/ABGR8888 only.
pub fn read_framebuffer<C: AsFd>(
    card: &C,
    fb_id: u32,
    prefer: MapPath,
) -> io::Result<FramebufferImage> {
    let fd = card.as_fd();
    let mut cmd = DrmModeFbCmd2 {
        fb_id,
        ..Default::default()
    };
    ioctl(fd, DRM_IOCTL_MODE_GETFB2, &mut cmd)?;
    let mut unique: Vec<u32> = cmd.handles.iter().copied().filter(|&h| h != 0).collect();
    unique.dedup();
    let handles = GemHandles {
        card: fd,
        handles: unique,
    };
    if cmd.handles[0] == 0 {
        return Err(io::Error::other(format!(
            "GETFB2 of fb {fb_id} returned no GEM handle (not master and not CAP_SYS_ADMIN)"
        )));
    }
    let modifier = if cmd.flags & DRM_MODE_FB_MODIFIERS != 0 {
        cmd.modifier[0]
    } else {
        MOD_LINEAR
    };
    if !matches!(cmd.pixel_format, XRGB8888 | ARGB8888 | XBGR8888 | ABGR8888)
        || modifier != MOD_LINEAR
        || cmd.handles[1] != 0
    {
        return Err(io::Error::other(format!(
            "fb {fb_id}: {} modifier {modifier:#x} handles {:?}: only single-plane linear \
             32-bit RGB can be read back",
            fourcc_name(cmd.pixel_format),
            cmd.handles
        )));
    }
    let (width, height) = (cmd.width as usize, cmd.height as usize);
    let (pitch, offset) = (cmd.pitches[0] as usize, cmd.offsets[0] as usize);
    let needed = offset + pitch * (height - 1) + width * 4;

    let mut dma_buf_error = None;
    let mut pixels = None;
    if prefer == MapPath::DmaBuf {
        match read_via_dma_buf(fd, cmd.handles[0], needed, |m| {
            m.copy_pixels(offset, pitch, width, height)
        }) {
            Ok(p) => pixels = Some(p),
            Err(e) => dma_buf_error = Some(e.to_string()),
        }
    }
    let mapped_via = if pixels.is_some() {
        MapPath::DmaBuf
    } else {
        let mut map = DrmModeMapDumb {
            handle: cmd.handles[0],
            ..Default::default()
        };
        ioctl(fd, DRM_IOCTL_MODE_MAP_DUMB, &mut map).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("MODE_MAP_DUMB (after dma-buf: {dma_buf_error:?}): {e}"),
            )
        })?;
        let mapping = Mapping::new(fd, page_round(needed), map.offset)?;
        pixels = Some(mapping.copy_pixels(offset, pitch, width, height));
        MapPath::MapDumb
    };
    let gem_handles = handles.close()?;
    Ok(FramebufferImage {
        fb_id,
        width: cmd.width,
        height: cmd.height,
        format: cmd.pixel_format,
        modifier,
        pitch: cmd.pitches[0],
        offset: cmd.offsets[0],
        pixels: pixels.expect("read on one path"),
        mapped_via,
        dma_buf_error,
        gem_handles,
    })
}

fn read_via_dma_buf<T>(
    card: BorrowedFd<'_>,
    handle: u32,
    needed: usize,
    read: impl FnOnce(&Mapping) -> T,
) -> io::Result<T> {
    let mut prime = DrmPrimeHandle {
        handle,
        flags: libc::O_CLOEXEC as u32,
        fd: -1,
    };
    ioctl(card, DRM_IOCTL_PRIME_HANDLE_TO_FD, &mut prime)
        .map_err(|e| io::Error::new(e.kind(), format!("PRIME_HANDLE_TO_FD: {e}")))?;
    let dmabuf = unsafe { OwnedFd::from_raw_fd(prime.fd) };
    let size = unsafe { libc::lseek(dmabuf.as_raw_fd(), 0, libc::SEEK_END) };
    if size < 0 || (size as usize) < needed {
        return Err(io::Error::other(format!(
            "dma-buf of {size} bytes, the framebuffer needs {needed}"
        )));
    }
    let mapping = Mapping::new(dmabuf.as_fd(), size as usize, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("mmap of the dma-buf: {e}")))?;
    let mut sync = DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ;
    ioctl(dmabuf.as_fd(), DMA_BUF_IOCTL_SYNC, &mut sync)
        .map_err(|e| io::Error::new(e.kind(), format!("DMA_BUF_IOCTL_SYNC start: {e}")))?;
    let out = read(&mapping);
    let mut sync = DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ;
    ioctl(dmabuf.as_fd(), DMA_BUF_IOCTL_SYNC, &mut sync)
        .map_err(|e| io::Error::new(e.kind(), format!("DMA_BUF_IOCTL_SYNC end: {e}")))?;
    Ok(out)
}

// --- debugfs -----------------------------------------------------------------------------------

/// `/sys/kernel/debug/dri/<minor>` of a DRM node (a symlink to the device's directory, named
/// after its bus id in 6.12: `0000:00:04.0`, `vgem`, `vkms`).
pub fn debugfs_dir(node: &Path) -> io::Result<PathBuf> {
    Ok(PathBuf::from(format!(
        "/sys/kernel/debug/dri/{}",
        node_minor(node)?
    )))
}

/// The minor number of a DRM node (card0: 0, renderD128: 128), as debugfs `clients` lists it.
pub fn node_minor(node: &Path) -> io::Result<u32> {
    let meta = fs::metadata(node)?;
    if !meta.file_type().is_char_device() {
        return Err(io::Error::other(format!(
            "{} is not a device node",
            node.display()
        )));
    }
    Ok(libc::minor(meta.rdev()))
}

/// A framebuffer as debugfs describes it (in `framebuffer` and under a plane's `fb=` in
/// `state`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramebufferEntry {
    pub id: u32,
    /// The comm of the thread that created it (`[fbcon]` for the fbdev emulation's).
    pub allocated_by: String,
    pub refcount: u32,
    /// e.g. `XR24 little-endian (0x34325258)`
    pub format: String,
    pub modifier: u64,
    pub size: (u32, u32),
    /// The `refcount=` of each `obj[N]:` (the GEM objects).
    pub object_refcounts: Vec<u32>,
}

/// A plane in debugfs `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneState {
    pub id: u32,
    pub name: String,
    /// The CRTC's name (`crtc-0`); `None` for `(null)`.
    pub crtc: Option<String>,
    /// The CRTC's id, resolved through the CRTC list.
    pub crtc_id: Option<u32>,
    /// `None` for `fb=0`.
    pub fb: Option<FramebufferEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrtcState {
    pub id: u32,
    pub name: String,
    pub enable: bool,
    pub active: bool,
    /// The `mode:` line after the colon, e.g. `"640x480": 75 32140 640 ...`.
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorState {
    pub id: u32,
    pub name: String,
    pub crtc: Option<String>,
}

/// Debugfs `state`: the atomic state the kernel holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtomicState {
    pub planes: Vec<PlaneState>,
    pub crtcs: Vec<CrtcState>,
    pub connectors: Vec<ConnectorState>,
}

impl AtomicState {
    pub fn plane(&self, id: u32) -> Option<&PlaneState> {
        self.planes.iter().find(|p| p.id == id)
    }

    /// The planes showing framebuffer `fb_id`.
    pub fn planes_showing(&self, fb_id: u32) -> Vec<&PlaneState> {
        self.planes
            .iter()
            .filter(|p| p.fb.as_ref().is_some_and(|fb| fb.id == fb_id))
            .collect()
    }
}

/// Reads and parses `/sys/kernel/debug/dri/<minor>/state` of `card`.
pub fn read_atomic_state(card: &Path) -> io::Result<AtomicState> {
    Ok(parse_atomic_state(&fs::read_to_string(
        debugfs_dir(card)?.join("state"),
    )?))
}

/// Reads and parses `/sys/kernel/debug/dri/<minor>/framebuffer` of `card`: every framebuffer
/// of the device, the fbdev emulation's included.
pub fn read_framebuffers(card: &Path) -> io::Result<Vec<FramebufferEntry>> {
    Ok(parse_framebuffers(&fs::read_to_string(
        debugfs_dir(card)?.join("framebuffer"),
    )?))
}

/// How many framebuffers `card`'s device has (for leak checks).
pub fn framebuffer_count(card: &Path) -> io::Result<usize> {
    Ok(read_framebuffers(card)?.len())
}

/// A line split into (tab depth, text).
fn depth(line: &str) -> (usize, &str) {
    let text = line.trim_start_matches('\t');
    (line.len() - text.len(), text)
}

/// `name[ID]: rest` -> (name, ID, rest).
fn header(text: &str) -> Option<(&str, u32, &str)> {
    let (name, rest) = text.split_once('[')?;
    let (id, rest) = rest.split_once(']')?;
    let rest = rest.strip_prefix(':')?.trim();
    Some((name, id.parse().ok()?, rest))
}

fn key_value(text: &str) -> Option<(&str, &str)> {
    let (k, v) = text.split_once('=')?;
    Some((k.trim(), v.trim()))
}

fn parse_size(v: &str) -> (u32, u32) {
    let (w, h) = v.split_once('x').unwrap_or(("0", "0"));
    (w.parse().unwrap_or(0), h.parse().unwrap_or(0))
}

/// Fills `fb` from the lines of its block, `base` tabs deep (6.12 `drm_framebuffer_print_info`):
/// ```text
/// <base>allocated by = [fbcon]
/// <base>refcount=2
/// <base>format=XR24 little-endian (0x34325258)
/// <base>modifier=0x0
/// <base>size=640x480
/// <base>layers:
/// <base+1>size[0]=640x480
/// <base+1>pitch[0]=2560
/// <base+1>offset[0]=0
/// <base+1>obj[0]:
/// <base+2>name=0
/// <base+2>refcount=3
/// ...
/// ```
fn fb_line(fb: &mut FramebufferEntry, base: usize, d: usize, text: &str) {
    let Some((k, v)) = key_value(text) else {
        return;
    };
    if d == base {
        match k {
            "allocated by" => fb.allocated_by = v.to_string(),
            "refcount" => fb.refcount = v.parse().unwrap_or(0),
            "format" => fb.format = v.to_string(),
            "modifier" => {
                fb.modifier = u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0)
            }
            "size" => fb.size = parse_size(v),
            _ => {}
        }
    } else if d == base + 2 && k == "refcount" {
        fb.object_refcounts.push(v.parse().unwrap_or(0));
    }
}

/// Parses debugfs `framebuffer` (6.12): `framebuffer[ID]:` lines, each followed by its block one
/// tab deep (see [`fb_line`]).
pub fn parse_framebuffers(text: &str) -> Vec<FramebufferEntry> {
    let mut fbs: Vec<FramebufferEntry> = Vec::new();
    for line in text.lines() {
        let (d, text) = depth(line);
        if d == 0 {
            if let Some(("framebuffer", id, _)) = header(text) {
                fbs.push(FramebufferEntry {
                    id,
                    ..Default::default()
                });
            }
        } else if let Some(fb) = fbs.last_mut() {
            fb_line(fb, 1, d, text);
        }
    }
    fbs
}

/// Parses debugfs `state` (6.12 `drm_atomic_print_new_state`; indented with tabs):
/// ```text
/// plane[32]: plane-0
///     crtc=crtc-0
///     fb=40
///         allocated by = [fbcon]
///         ...
///     crtc-pos=640x480+0+0
/// plane[33]: plane-1
///     crtc=(null)
///     fb=0
/// crtc[36]: crtc-0
///     enable=1
///     active=1
///     mode: "640x480": 75 32140 640 800 819 864 480 482 484 496 0x48 0xa
/// connector[37]: Virtual-1
///     crtc=crtc-0
/// ```
pub fn parse_atomic_state(text: &str) -> AtomicState {
    enum Cur {
        None,
        Plane,
        Crtc,
        Connector,
    }
    let mut state = AtomicState::default();
    let mut cur = Cur::None;
    let crtc_name = |v: &str| (v != "(null)").then(|| v.to_string());
    for line in text.lines() {
        let (d, text) = depth(line);
        if d == 0 {
            cur = Cur::None;
            let Some((kind, id, name)) = header(text) else {
                continue;
            };
            let name = name.to_string();
            match kind {
                "plane" => {
                    cur = Cur::Plane;
                    state.planes.push(PlaneState {
                        id,
                        name,
                        crtc: None,
                        crtc_id: None,
                        fb: None,
                    });
                }
                "crtc" => {
                    cur = Cur::Crtc;
                    state.crtcs.push(CrtcState {
                        id,
                        name,
                        enable: false,
                        active: false,
                        mode: String::new(),
                    });
                }
                "connector" => {
                    cur = Cur::Connector;
                    state.connectors.push(ConnectorState {
                        id,
                        name,
                        crtc: None,
                    });
                }
                _ => {}
            }
            continue;
        }
        match cur {
            Cur::Plane => {
                let plane = state.planes.last_mut().expect("a plane");
                if d == 1 {
                    match key_value(text) {
                        Some(("crtc", v)) => plane.crtc = crtc_name(v),
                        Some(("fb", v)) => {
                            plane.fb =
                                v.parse()
                                    .ok()
                                    .filter(|&id| id != 0)
                                    .map(|id| FramebufferEntry {
                                        id,
                                        ..Default::default()
                                    })
                        }
                        _ => {}
                    }
                } else if let Some(fb) = plane.fb.as_mut() {
                    fb_line(fb, 2, d, text);
                }
            }
            Cur::Crtc if d == 1 => {
                let crtc = state.crtcs.last_mut().expect("a crtc");
                if let Some(mode) = text.strip_prefix("mode:") {
                    crtc.mode = mode.trim().to_string();
                }
                match key_value(text) {
                    Some(("enable", v)) => crtc.enable = v == "1",
                    Some(("active", v)) => crtc.active = v == "1",
                    _ => {}
                }
            }
            Cur::Connector if d == 1 => {
                if let Some(("crtc", v)) = key_value(text) {
                    state.connectors.last_mut().expect("a connector").crtc = crtc_name(v);
                }
            }
            _ => {}
        }
    }
    let ids: HashMap<String, u32> = state.crtcs.iter().map(|c| (c.name.clone(), c.id)).collect();
    for plane in &mut state.planes {
        plane.crtc_id = plane.crtc.as_ref().and_then(|n| ids.get(n).copied());
    }
    state
}
