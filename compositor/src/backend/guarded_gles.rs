//! [`GuardedGles`]: the headless GLES renderer, with client dma-bufs routed to where they can
//! be read safely.
//!
//! kms_swrast (llvmpipe on a KMS device, as in the VM guest) reads a dma-buf through the device
//! it runs on: PRIME import, `DRM_IOCTL_MODE_MAP_DUMB`, `mmap` of the device. The kernel refuses
//! `MAP_DUMB` for a GEM object imported from another exporter (`drm_gem_dumb_map_offset`:
//! "Don't allow imported objects to be mapped"), so for any dma-buf the device did not export
//! itself (udmabuf, another GPU's buffers) the map fails. Mesa does not check: EGL import
//! succeeds (mapping is lazy), and llvmpipe's rasterizer threads then sample the texture at
//! address 0 and take the whole process down with SIGSEGV. Nothing in EGL or GL reports it.
//!
//! So on kms_swrast every client dma-buf is checked when linux-dmabuf creates its `wl_buffer`
//! ([`KmsSwrastProbe`], the same three steps on the device's primary node): one Mesa can map is
//! imported through EGL as usual; one it cannot is copied through the CPU into a GL texture at
//! each commit ([`GuardedGles`]), as pixman would read it; one neither can read is refused with
//! `zwp_linux_buffer_params_v1.failed` (or `invalid_wl_buffer` for `create_immed`) and a log
//! line. A client buffer never reaches llvmpipe unmappable.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use smithay::backend::allocator::dmabuf::{Dmabuf, DmabufMappingMode, WeakDmabuf};
use smithay::backend::allocator::format::FormatSet;
use smithay::backend::allocator::{Buffer, Fourcc, Modifier};
use smithay::backend::drm::{DrmNode, NodeType};
use smithay::backend::renderer::gles::{
    ffi, GlesError, GlesFrame, GlesMapping, GlesRenderbuffer, GlesRenderer, GlesTarget, GlesTexture,
};
use smithay::backend::renderer::sync::SyncPoint;
use smithay::backend::renderer::{
    Bind, ContextId, DebugFlags, ExportMem, ImportAll, ImportDma, ImportMem, Renderer,
    RendererSuper, Texture, TextureFilter,
};
use smithay::reexports::wayland_server::protocol::wl_buffer::WlBuffer;
use smithay::utils::{Buffer as BufferCoord, Physical, Rectangle, Size, Transform};
use smithay::wayland::compositor::SurfaceData;
use tracing::{debug, info, warn};

/// Pixel format of the offscreen output.
/// The GLES renderer with client dma-bufs routed to where they can be read safely (see the
/// module docs). Rendering, binding and read-back are the inner renderer's; only how a client
/// dma-buf becomes a texture differs, and only on kms_swrast.
#[derive(Debug)]
pub struct GuardedGles {
    pub(super) inner: GlesRenderer,
    guard: DmabufGuard,
    /// How each live client dma-buf is sampled, decided once per buffer.
    routes: HashMap<WeakDmabuf, Route>,
    /// The texture each dma-buf copied through the CPU was last copied into.
    cpu_textures: HashMap<WeakDmabuf, GlesTexture>,
    /// Exporters already named in the log: one info line each, not one per buffer.
    logged_exporters: HashSet<String>,
}

#[derive(Debug)]
enum DmabufGuard {
    /// A hardware driver: EGL imports and samples whatever it accepts.
    Off,
    /// kms_swrast: each dma-buf is checked through the device's primary node.
    Probe(KmsSwrastProbe),
    /// kms_swrast, but its primary node could not be opened: every dma-buf goes through the CPU.
    CpuOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Imported by EGL (Mesa maps it itself).
    Egl,
    /// Copied through the CPU at each commit.
    Cpu,
}

impl GuardedGles {
    pub(super) fn new(mut inner: GlesRenderer, node: Option<DrmNode>) -> GuardedGles {
        let gl_renderer = gl_renderer_name(&mut inner);
        // kms_swrast is llvmpipe (or softpipe) on an EGL device that has a DRM node; on the
        // surfaceless platform Mesa's swrast maps a dma-buf through the dma-buf itself.
        let software = ["llvmpipe", "softpipe", "swrast"]
            .iter()
            .any(|name| gl_renderer.contains(name));
        let guard = match node {
            Some(node) if software => match KmsSwrastProbe::open(node) {
                Ok(probe) => {
                    info!(
                        "headless: {gl_renderer} on a KMS device (kms_swrast): client dma-bufs \
                         are checked through {} and copied through the CPU where it cannot map them",
                        probe.path.display()
                    );
                    DmabufGuard::Probe(probe)
                }
                Err(err) => {
                    warn!(
                        "headless: {gl_renderer} on a KMS device (kms_swrast), and {err:#}: every \
                         client dma-buf is copied through the CPU"
                    );
                    DmabufGuard::CpuOnly
                }
            },
            _ => DmabufGuard::Off,
        };
        GuardedGles {
            inner,
            guard,
            routes: HashMap::new(),
            cpu_textures: HashMap::new(),
            logged_exporters: HashSet::new(),
        }
    }

    /// linux-dmabuf's import of a new client buffer: Ok means the buffer can be drawn; an error
    /// (the client gets `failed`) says why not.
    pub(super) fn import_client_dmabuf(&mut self, dmabuf: &Dmabuf) -> anyhow::Result<()> {
        match self.route(dmabuf)? {
            Route::Egl => self
                .inner
                .import_dmabuf(dmabuf, None)
                .map(drop)
                .map_err(|e| anyhow!("{e:?}")),
            Route::Cpu => Ok(()),
        }
    }

    /// Decides (once per buffer) how `dmabuf` is read; an error when it cannot be read at all.
    fn route(&mut self, dmabuf: &Dmabuf) -> anyhow::Result<Route> {
        let why = match &self.guard {
            DmabufGuard::Off => return Ok(Route::Egl),
            _ if self.routes.contains_key(&dmabuf.weak()) => {
                return Ok(self.routes[&dmabuf.weak()]);
            }
            DmabufGuard::Probe(probe) => match probe.check(dmabuf) {
                Ok(()) => {
                    self.forget_gone();
                    self.routes.insert(dmabuf.weak(), Route::Egl);
                    return Ok(Route::Egl);
                }
                Err(why) => why,
            },
            DmabufGuard::CpuOnly => "its device node could not be opened to check".to_string(),
        };
        let exporter = exporter_name(dmabuf);
        CpuLayout::of(dmabuf)
            .and_then(|layout| layout.check_mappable(dmabuf))
            .with_context(|| {
                format!(
                    "a dma-buf exported by {exporter} cannot be drawn: kms_swrast cannot map it \
                     ({why}), and it cannot be copied through the CPU either"
                )
            })?;
        if self.logged_exporters.insert(exporter.clone()) {
            info!(
                "dma-bufs exported by {exporter}: kms_swrast cannot map them ({why}); they are \
                 copied through the CPU"
            );
        } else {
            debug!("dma-buf exported by {exporter}: copied through the CPU ({why})");
        }
        self.forget_gone();
        self.routes.insert(dmabuf.weak(), Route::Cpu);
        Ok(Route::Cpu)
    }

    fn forget_gone(&mut self) {
        self.routes.retain(|weak, _| !weak.is_gone());
        self.cpu_textures.retain(|weak, _| !weak.is_gone());
    }

    /// A committed client dma-buf as a texture, by the route decided for it.
    fn import_guarded(
        &mut self,
        dmabuf: &Dmabuf,
        damage: &[Rectangle<i32, BufferCoord>],
    ) -> Result<GlesTexture, GlesError> {
        match self.route(dmabuf) {
            Ok(Route::Egl) => self.inner.import_dmabuf(dmabuf, Some(damage)),
            Ok(Route::Cpu) => self.copy_through_cpu(dmabuf, damage),
            Err(err) => {
                warn!("not drawing a surface: {err:#}");
                Err(GlesError::MappingError)
            }
        }
    }

    /// Copies the dma-buf's pixels into a texture (the one it was copied into last time, when
    /// it still fits). Never waits for a client fence: a buffer whose writers have not finished
    /// keeps its previous contents.
    fn copy_through_cpu(
        &mut self,
        dmabuf: &Dmabuf,
        damage: &[Rectangle<i32, BufferCoord>],
    ) -> Result<GlesTexture, GlesError> {
        let weak = dmabuf.weak();
        let previous = self.cpu_textures.get(&weak).cloned();
        if let (Some(texture), true) = (&previous, damage.is_empty()) {
            return Ok(texture.clone());
        }
        let read = CpuLayout::of(dmabuf).and_then(|layout| Ok((layout, layout.read(dmabuf)?)));
        let (layout, pixels) = match read {
            Ok((layout, Some(pixels))) => (layout, pixels),
            Ok((_, None)) => {
                debug!("a dma-buf copied through the CPU still has unsignalled write fences");
                return previous.ok_or(GlesError::MappingError);
            }
            Err(err) => {
                warn!("copying a dma-buf through the CPU failed: {err:#}");
                return Err(GlesError::MappingError);
            }
        };
        let size = layout.size();
        let texture = match previous.filter(|texture| texture.size() == size) {
            Some(texture) => {
                self.inner
                    .update_memory(&texture, &pixels, Rectangle::from_size(size))?;
                texture
            }
            None => self
                .inner
                .import_memory(&pixels, layout.format, size, dmabuf.y_inverted())?,
        };
        self.cpu_textures.insert(weak, texture.clone());
        Ok(texture)
    }
}

impl RendererSuper for GuardedGles {
    type Error = GlesError;
    type TextureId = GlesTexture;
    type Framebuffer<'buffer> = GlesTarget<'buffer>;
    type Frame<'frame, 'buffer>
        = GlesFrame<'frame, 'buffer>
    where
        'buffer: 'frame;
}

impl Renderer for GuardedGles {
    fn context_id(&self) -> ContextId<GlesTexture> {
        self.inner.context_id()
    }

    fn downscale_filter(&mut self, filter: TextureFilter) -> Result<(), GlesError> {
        self.inner.downscale_filter(filter)
    }

    fn upscale_filter(&mut self, filter: TextureFilter) -> Result<(), GlesError> {
        self.inner.upscale_filter(filter)
    }

    fn set_debug_flags(&mut self, flags: DebugFlags) {
        self.inner.set_debug_flags(flags)
    }

    fn debug_flags(&self) -> DebugFlags {
        self.inner.debug_flags()
    }

    fn render<'frame, 'buffer>(
        &'frame mut self,
        framebuffer: &'frame mut GlesTarget<'buffer>,
        output_size: Size<i32, Physical>,
        dst_transform: Transform,
    ) -> Result<GlesFrame<'frame, 'buffer>, GlesError>
    where
        'buffer: 'frame,
    {
        self.inner.render(framebuffer, output_size, dst_transform)
    }

    fn wait(&mut self, sync: &SyncPoint) -> Result<(), GlesError> {
        self.inner.wait(sync)
    }

    fn cleanup_texture_cache(&mut self) -> Result<(), GlesError> {
        self.forget_gone();
        self.inner.cleanup_texture_cache()
    }
}

impl ImportAll for GuardedGles {
    fn import_buffer(
        &mut self,
        buffer: &WlBuffer,
        surface: Option<&SurfaceData>,
        damage: &[Rectangle<i32, BufferCoord>],
    ) -> Option<Result<GlesTexture, GlesError>> {
        if !matches!(self.guard, DmabufGuard::Off) {
            if let Ok(dmabuf) = smithay::wayland::dmabuf::get_dmabuf(buffer) {
                let dmabuf = dmabuf.clone();
                return Some(self.import_guarded(&dmabuf, damage));
            }
        }
        self.inner.import_buffer(buffer, surface, damage)
    }
}

impl Bind<GlesRenderbuffer> for GuardedGles {
    fn bind<'a>(&mut self, target: &'a mut GlesRenderbuffer) -> Result<GlesTarget<'a>, GlesError> {
        self.inner.bind(target)
    }

    fn supported_formats(&self) -> Option<FormatSet> {
        Bind::<GlesRenderbuffer>::supported_formats(&self.inner)
    }
}

impl ExportMem for GuardedGles {
    type TextureMapping = GlesMapping;

    fn copy_framebuffer(
        &mut self,
        target: &GlesTarget<'_>,
        region: Rectangle<i32, BufferCoord>,
        format: Fourcc,
    ) -> Result<GlesMapping, GlesError> {
        self.inner.copy_framebuffer(target, region, format)
    }

    fn copy_texture(
        &mut self,
        texture: &GlesTexture,
        region: Rectangle<i32, BufferCoord>,
        format: Fourcc,
    ) -> Result<GlesMapping, GlesError> {
        self.inner.copy_texture(texture, region, format)
    }

    fn can_read_texture(&mut self, texture: &GlesTexture) -> Result<bool, GlesError> {
        self.inner.can_read_texture(texture)
    }

    fn map_texture<'a>(&mut self, mapping: &'a GlesMapping) -> Result<&'a [u8], GlesError> {
        self.inner.map_texture(mapping)
    }
}

/// `GL_RENDERER` ("llvmpipe (LLVM 15.0.6, 256 bits)" in the guest), or "" if unknown.
fn gl_renderer_name(renderer: &mut GlesRenderer) -> String {
    renderer
        .with_context(|gl| {
            // SAFETY: GetString returns null or a static NUL-terminated string.
            unsafe {
                let name = gl.GetString(ffi::RENDERER);
                if name.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(name.cast())
                        .to_string_lossy()
                        .into_owned()
                }
            }
        })
        .unwrap_or_default()
}

/// Who exported a dma-buf, from `exp_name:` in `/proc/self/fdinfo/<fd>` ("udmabuf", "drm"
/// for GEM drivers, "virtio_gpu", a dma-heap's name...); for the log only.
fn exporter_name(dmabuf: &Dmabuf) -> String {
    dmabuf
        .handles()
        .next()
        .and_then(|fd| {
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()
        })
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("exp_name:"))
                .map(|name| format!("\"{}\"", name.trim()))
        })
        .unwrap_or_else(|| "an unknown exporter".to_string())
}

/// `struct drm_prime_handle` (include/uapi/drm/drm.h).
#[repr(C)]
struct DrmPrimeHandle {
    handle: u32,
    flags: u32,
    fd: i32,
}

/// `struct drm_mode_map_dumb` (include/uapi/drm/drm_mode.h).
#[repr(C)]
struct DrmModeMapDumb {
    handle: u32,
    pad: u32,
    offset: u64,
}

/// `struct drm_gem_close` (include/uapi/drm/drm.h).
#[repr(C)]
struct DrmGemClose {
    handle: u32,
    pad: u32,
}

/// `DRM_IOWR(0x2e, struct drm_prime_handle)`.
const DRM_IOCTL_PRIME_FD_TO_HANDLE: u64 = 0xc00c_642e;
/// `DRM_IOWR(0xb3, struct drm_mode_map_dumb)`.
const DRM_IOCTL_MODE_MAP_DUMB: u64 = 0xc010_64b3;
/// `DRM_IOW(0x09, struct drm_gem_close)`.
const DRM_IOCTL_GEM_CLOSE: u64 = 0x4008_6409;

/// Does what Mesa's kms_swrast does before it first reads an imported dma-buf
/// (`kms_sw_displaytarget_add_from_prime` + `kms_sw_displaytarget_map` in
/// src/gallium/winsys/sw/kms-dri): PRIME import into the device, `DRM_IOCTL_MODE_MAP_DUMB`, and an
/// `mmap` of the device at that offset, on its own file of the same primary node. Where a step
/// fails, Mesa's map returns NULL and llvmpipe would read from address 0.
#[derive(Debug)]
struct KmsSwrastProbe {
    card: File,
    path: PathBuf,
}

impl KmsSwrastProbe {
    fn open(render_node: DrmNode) -> anyhow::Result<KmsSwrastProbe> {
        let path = render_node
            .dev_path_with_type(NodeType::Primary)
            .ok_or_else(|| anyhow!("{render_node} has no primary node"))?;
        // std opens with O_CLOEXEC.
        let card = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(KmsSwrastProbe { card, path })
    }

    /// Ok when kms_swrast can map every plane; else which step fails.
    fn check(&self, dmabuf: &Dmabuf) -> Result<(), String> {
        for (i, fd) in dmabuf.handles().enumerate() {
            self.check_plane(fd)
                .map_err(|err| format!("plane {i}: {err}"))?;
        }
        Ok(())
    }

    fn check_plane(&self, dmabuf: BorrowedFd<'_>) -> Result<(), String> {
        let card = self.card.as_raw_fd();
        let mut prime = DrmPrimeHandle {
            handle: 0,
            flags: 0,
            fd: dmabuf.as_raw_fd(),
        };
        // SAFETY: the argument is the struct this ioctl takes, alive for the call.
        if unsafe { libc::ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE as _, &mut prime) } != 0 {
            return Err(format!(
                "DRM_IOCTL_PRIME_FD_TO_HANDLE: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mapped = (|| {
            let mut map = DrmModeMapDumb {
                handle: prime.handle,
                pad: 0,
                offset: 0,
            };
            // SAFETY: as above.
            if unsafe { libc::ioctl(card, DRM_IOCTL_MODE_MAP_DUMB as _, &mut map) } != 0 {
                return Err(format!(
                    "DRM_IOCTL_MODE_MAP_DUMB: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let size = dmabuf_size(dmabuf).map_err(|err| format!("its size: {err}"))?;
            // SAFETY: a fresh read-only shared mapping of the device, unmapped right away;
            // nothing reads through it.
            unsafe {
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    card,
                    map.offset as libc::off_t,
                );
                if ptr == libc::MAP_FAILED {
                    return Err(format!(
                        "mmap of {}: {}",
                        self.path.display(),
                        std::io::Error::last_os_error()
                    ));
                }
                libc::munmap(ptr, size);
            }
            Ok(())
        })();
        let mut close = DrmGemClose {
            handle: prime.handle,
            pad: 0,
        };
        // SAFETY: closes the handle this probe's own file got above, nothing else.
        unsafe { libc::ioctl(card, DRM_IOCTL_GEM_CLOSE as _, &mut close) };
        mapped
    }
}

/// The dma-buf's size in bytes (`lseek` to its end, as Mesa and Smithay find it).
fn dmabuf_size(fd: BorrowedFd<'_>) -> std::io::Result<usize> {
    let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))?;
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0))?;
    Ok(size as usize)
}

/// A single-plane linear 32-bit RGB dma-buf, as the CPU copy reads it.
#[derive(Clone, Copy, Debug)]
struct CpuLayout {
    format: Fourcc,
    width: usize,
    height: usize,
    stride: usize,
    offset: usize,
}

impl CpuLayout {
    fn of(dmabuf: &Dmabuf) -> anyhow::Result<CpuLayout> {
        let format = dmabuf.format();
        if dmabuf.num_planes() != 1 {
            bail!(
                "{} planes (only single-plane buffers are copied)",
                dmabuf.num_planes()
            );
        }
        if !matches!(format.modifier, Modifier::Linear | Modifier::Invalid) {
            bail!(
                "modifier {:?} (only linear buffers are copied)",
                format.modifier
            );
        }
        if !matches!(
            format.code,
            Fourcc::Argb8888 | Fourcc::Xrgb8888 | Fourcc::Abgr8888 | Fourcc::Xbgr8888
        ) {
            bail!("format {:?} (only 32-bit RGB is copied)", format.code);
        }
        let layout = CpuLayout {
            format: format.code,
            width: dmabuf.width() as usize,
            height: dmabuf.height() as usize,
            stride: dmabuf.strides().next().unwrap_or(0) as usize,
            offset: dmabuf.offsets().next().unwrap_or(0) as usize,
        };
        if layout.width == 0 || layout.height == 0 || layout.stride < layout.width * 4 {
            bail!(
                "{}x{} with stride {}",
                layout.width,
                layout.height,
                layout.stride
            );
        }
        Ok(layout)
    }

    fn size(&self) -> Size<i32, BufferCoord> {
        Size::from((self.width as i32, self.height as i32))
    }

    /// Bytes the copy reads, from the plane's offset.
    fn extent(&self) -> usize {
        self.stride * (self.height - 1) + self.width * 4
    }

    /// Fails unless the plane maps and holds every row.
    fn check_mappable(self, dmabuf: &Dmabuf) -> anyhow::Result<()> {
        self.map(dmabuf).map(drop)
    }

    fn map(
        &self,
        dmabuf: &Dmabuf,
    ) -> anyhow::Result<smithay::backend::allocator::dmabuf::DmabufMapping> {
        let fd = dmabuf.handles().next().context("no plane")?;
        let size = dmabuf_size(fd).context("its size")?;
        anyhow::ensure!(
            self.offset + self.extent() <= size,
            "{} bytes from offset {} do not fit in its {size} bytes",
            self.extent(),
            self.offset
        );
        let mapping = dmabuf
            .map_plane(0, DmabufMappingMode::READ)
            .context("mmap of the dma-buf")?;
        anyhow::ensure!(
            mapping.length() >= self.extent(),
            "its mapping is {} bytes, {} needed",
            mapping.length(),
            self.extent()
        );
        Ok(mapping)
    }

    /// The pixels, rows packed; None while a write fence in the buffer is unsignalled.
    ///
    /// No `DMA_BUF_IOCTL_SYNC`: its START waits, unbounded and in the compositor's loop, for
    /// the buffer's fences, which a client controls. `poll` tells whether they signalled
    /// without waiting; the cache maintenance SYNC would add is a no-op for the CPU-coherent
    /// exporters this path exists for (udmabuf's memfd pages, shmem GEM buffers).
    fn read(&self, dmabuf: &Dmabuf) -> anyhow::Result<Option<Vec<u8>>> {
        let fd = dmabuf.handles().next().context("no plane")?;
        let mut pollfd = libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        if unsafe { libc::poll(&mut pollfd, 1, 0) } < 0 {
            bail!("poll: {}", std::io::Error::last_os_error());
        }
        if pollfd.revents & libc::POLLIN == 0 {
            return Ok(None);
        }
        let mapping = self.map(dmabuf)?;
        // SAFETY: `map` checked that the mapping holds `extent` bytes; it lives until the end
        // of this function.
        let bytes =
            unsafe { std::slice::from_raw_parts(mapping.ptr() as *const u8, self.extent()) };
        let row = self.width * 4;
        let mut pixels = Vec::with_capacity(row * self.height);
        for y in 0..self.height {
            pixels.extend_from_slice(&bytes[y * self.stride..y * self.stride + row]);
        }
        Ok(Some(pixels))
    }
}
