//! KMS explicit fencing: a plane's `IN_FENCE_FD` and a CRTC's `OUT_FENCE_PTR` in an atomic commit
//! (`drivers/gpu/drm/drm_atomic_uapi.c`, "explicit fencing properties").
//!
//! * [`FenceProps`] resolves the two property ids per KMS object and caches them;
//! * [`FenceProps::set_in_fence`] puts an in-fence on a plane in a plain `drm` crate
//!   [`AtomicModeReq`];
//! * [`FencedCommit`] is an atomic request that can also carry out-fences: an [`OutFence`] slot
//!   is *borrowed* by the request until the commit ioctl has returned, so the memory the kernel
//!   writes the sync_file fd into cannot be freed or moved before that (the borrow checker
//!   enforces it); the commit also carries the event `user_data`, which `drm`'s
//!   `atomic_commit` cannot;
//! * [`read_flip_events`] reads `DRM_EVENT_FLIP_COMPLETE` events with their `user_data`.
//!
//! # Semantics (kernel 6.12)
//!
//! **`IN_FENCE_FD`** (plane, signed range `-1..=i32::MAX`): a sync_file fd the commit waits for
//! before the plane's new framebuffer is shown. `-1` means "no fence" (and is what reading the
//! property returns). While parsing the request the kernel takes its *own* reference to the fence
//! (`sync_file_get_fence()`); the fd is only looked up during the ioctl, so the caller keeps
//! ownership and may close it as soon as the commit call returns — even for a non-blocking commit
//! that is still waiting. An fd that is not a sync_file fails the commit with `EINVAL`, as does
//! setting the property twice for one plane in one request. With `TEST_ONLY` the kernel only checks
//! that the fd is a sync_file; it never waits.
//!
//! An explicit in-fence also **switches off the implicit-fence wait** on the framebuffer's
//! buffers: `drm_gem_plane_helper_prepare_fb()` then only waits for the dma-buf reservation's
//! `DMA_RESV_USAGE_KERNEL` fences (memory moves), not for the `WRITE` fences rendering left there.
//! That is why compositors pass an *already-signalled* sync_file when they have done the waiting
//! themselves (a Wayland compositor with `linux-drm-syncobj-v1` waits for the client's acquire
//! point before it even builds the commit): the implicit fences on a client buffer may belong to
//! work that has nothing to do with this frame (a producer that has already started the next frame
//! in a buffer it re-uses after the release point, another output reading the same buffer at a
//! different refresh rate, drivers that put one write fence over a whole BO), and waiting for them
//! would stall the flip — and, the commit being per CRTC, every other surface on that output.
//! A signalled fence costs nothing to wait for and keeps the kernel out of the way.
//! Whether implicit fences are waited for *at all* without an in-fence is up to the driver
//! (`prepare_fb`): virtio-gpu in Linux 6.12 ignores them (measured, see `tests/kernel_kms.rs`),
//! drivers built on the GEM atomic helpers honour them.
//!
//! **`OUT_FENCE_PTR`** (CRTC, unsigned range): the address of an `s32` in the caller's memory.
//! While parsing the request the kernel writes `-1` there (an unwritable address fails the commit
//! with `EFAULT`); on success it writes the number of a new sync_file fd (close-on-exec) that now
//! belongs to the caller; on any failure the slot is `-1` again and no fd exists. With
//! `TEST_ONLY` the property is **accepted** — the commit is only checked and the slot stays `-1`
//! (`prepare_signaling()` returns early); `TEST_ONLY | PAGE_FLIP_EVENT` is `EINVAL` whether or
//! not an out-fence is asked for.
//!
//! The out-fence is the CRTC's fence for *this* commit: it signals when the commit's new frame
//! **starts scanning out** — at the same instant, with the same timestamp, as that commit's page
//! flip event (both are completed by one `drm_send_event_timestamp_locked()`, fence first, then the
//! event is queued). So it does not say when this commit's buffers can be reused — they are on
//! screen from then on — but when the buffers of the **previous** frame are no longer scanned out:
//! it is the release fence of the previous frame's buffers.
//!
//! # Example
//!
//! ```no_run
//! use fence_bridge::{FenceProps, FencedCommit, OutFence};
//! use drm::control::{crtc, framebuffer, plane, property, AtomicCommitFlags};
//! # fn flip<D: drm::control::Device>(card: &D, plane: plane::Handle, crtc: crtc::Handle,
//! #     fb_id: property::Handle, fb: framebuffer::Handle,
//! #     acquire: std::os::fd::OwnedFd) -> std::io::Result<()> {
//! use std::os::fd::AsFd;
//!
//! let props = FenceProps::new(); // keep one per device, for the device's lifetime
//! let mut release_previous = OutFence::new();
//!
//! let mut commit = FencedCommit::new(card, &props);
//! commit.add_property(plane, fb_id, property::Value::Framebuffer(Some(fb)))?;
//! commit.set_in_fence(plane, acquire.as_fd())?; // the kernel takes its own reference...
//! commit.set_out_fence(crtc, &mut release_previous)?; // ...the slot stays borrowed
//! commit.commit(AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT, 42)?;
//! drop(acquire); // ...so the in-fence fd may be closed right away
//!
//! let release = release_previous.take_fence().expect("a committed out-fence");
//! // `release` signals when the new frame starts scanning out: the previous buffers are free.
//! release.add_callback(|info| println!("previous frame released at {:?}", info.timestamp)).ok();
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::fmt;
use std::hash::Hash;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use drm::control::atomic::AtomicModeReq;
use drm::control::{
    crtc, plane, property, AtomicCommitFlags, Device as ControlDevice, RawResourceHandle,
    ResourceHandle,
};
use rustix::io::Errno;

use crate::fence::Fence;
use crate::ioctl::{drm_ioctl_ptr, iowr, Opcode, DRM_IOCTL_BASE};
use crate::sync_file::SyncFile;
use crate::time::Ktime;

/// Name of the plane property carrying the in-fence.
pub const IN_FENCE_FD: &CStr = c"IN_FENCE_FD";
/// Name of the CRTC property carrying the out-fence slot's address.
pub const OUT_FENCE_PTR: &CStr = c"OUT_FENCE_PTR";

/// Finds the property called `name` among those attached to `object`.
///
/// `Ok(None)` if the object has no such property. Atomic-only properties (`IN_FENCE_FD`,
/// `OUT_FENCE_PTR`, `FB_ID`, …) are only listed for clients that enabled
/// `DRM_CLIENT_CAP_ATOMIC`. Costs one `GETPROPERTIES` plus one `GETPROPERTY` per property.
pub fn find_property<D, H>(dev: &D, object: H, name: &CStr) -> io::Result<Option<property::Info>>
where
    D: ControlDevice,
    H: ResourceHandle,
{
    let props = dev.get_properties(object)?;
    for (&handle, _) in props.iter() {
        let info = dev.get_property(handle)?;
        if info.name() == name {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// What a property id is, as far as fencing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropKind {
    InFence,
    OutFence,
    Other,
}

/// The ids of the explicit-fencing properties of one DRM device, resolved lazily per KMS object
/// and cached.
///
/// Property ids are per device: use one `FenceProps` per DRM device (file), for as long as the
/// device is open; a cache filled on one device means nothing on another. Every atomic driver
/// attaches `IN_FENCE_FD` to all its planes and `OUT_FENCE_PTR` to all its CRTCs, but they are
/// only visible to a client that enabled `DRM_CLIENT_CAP_ATOMIC`: resolving fails with
/// [`io::ErrorKind::Unsupported`] otherwise.
///
/// `Sync`: the cache is behind a mutex that is never held across an ioctl.
#[derive(Default)]
pub struct FenceProps {
    in_fence_fd: Mutex<HashMap<plane::Handle, property::Handle>>,
    out_fence_ptr: Mutex<HashMap<crtc::Handle, property::Handle>>,
    kinds: Mutex<HashMap<property::Handle, PropKind>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FenceProps {
    /// An empty cache; nothing is resolved until first used.
    pub fn new() -> FenceProps {
        FenceProps::default()
    }

    fn resolve<D, H>(
        &self,
        cache: &Mutex<HashMap<H, property::Handle>>,
        dev: &D,
        object: H,
        name: &CStr,
        kind: PropKind,
    ) -> io::Result<property::Handle>
    where
        D: ControlDevice,
        H: ResourceHandle + Eq + Hash + fmt::Debug,
    {
        if let Some(&prop) = lock(cache).get(&object) {
            return Ok(prop);
        }
        let info = find_property(dev, object, name)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{object:?} has no {} property (DRM_CLIENT_CAP_ATOMIC not enabled, or a \
                     driver without atomic modesetting)",
                    name.to_string_lossy()
                ),
            )
        })?;
        let prop = info.handle();
        lock(cache).insert(object, prop);
        lock(&self.kinds).insert(prop, kind);
        Ok(prop)
    }

    /// The id of `plane`'s `IN_FENCE_FD` property (cached after the first call).
    pub fn in_fence_fd<D: ControlDevice>(
        &self,
        dev: &D,
        plane: plane::Handle,
    ) -> io::Result<property::Handle> {
        self.resolve(
            &self.in_fence_fd,
            dev,
            plane,
            IN_FENCE_FD,
            PropKind::InFence,
        )
    }

    /// The id of `crtc`'s `OUT_FENCE_PTR` property (cached after the first call).
    pub fn out_fence_ptr<D: ControlDevice>(
        &self,
        dev: &D,
        crtc: crtc::Handle,
    ) -> io::Result<property::Handle> {
        self.resolve(
            &self.out_fence_ptr,
            dev,
            crtc,
            OUT_FENCE_PTR,
            PropKind::OutFence,
        )
    }

    /// Classifies a property id by its name; cached.
    fn kind<D: ControlDevice>(&self, dev: &D, prop: property::Handle) -> io::Result<PropKind> {
        if let Some(&kind) = lock(&self.kinds).get(&prop) {
            return Ok(kind);
        }
        let info = dev.get_property(prop)?;
        let kind = match info.name() {
            n if n == IN_FENCE_FD => PropKind::InFence,
            n if n == OUT_FENCE_PTR => PropKind::OutFence,
            _ => PropKind::Other,
        };
        lock(&self.kinds).insert(prop, kind);
        Ok(kind)
    }

    /// Sets `plane`'s `IN_FENCE_FD` to `fd` in a plain `drm` crate request.
    ///
    /// The value is the fd **number** (a signed range); nothing is duplicated or consumed. The
    /// kernel looks the fd up and takes its own reference to the fence during the commit ioctl,
    /// so `fd` must still be open (and still be the same file) when `req` is committed — which
    /// this function cannot enforce for an `AtomicModeReq`; [`FencedCommit::set_in_fence`] can.
    /// After the commit call has returned the caller may close it.
    pub fn set_in_fence<D: ControlDevice>(
        &self,
        dev: &D,
        req: &mut AtomicModeReq,
        plane: plane::Handle,
        fd: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let prop = self.in_fence_fd(dev, plane)?;
        req.add_property(plane, prop, in_fence_value(Some(fd)));
        Ok(())
    }

    /// Sets `plane`'s `IN_FENCE_FD` to `-1`, "no fence", in a plain `drm` crate request. The same
    /// as not mentioning it, except that it overrides an earlier `set_in_fence` on `req`.
    pub fn clear_in_fence<D: ControlDevice>(
        &self,
        dev: &D,
        req: &mut AtomicModeReq,
        plane: plane::Handle,
    ) -> io::Result<()> {
        let prop = self.in_fence_fd(dev, plane)?;
        req.add_property(plane, prop, in_fence_value(None));
        Ok(())
    }
}

impl fmt::Debug for FenceProps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceProps")
            .field("in_fence_fd", &*lock(&self.in_fence_fd))
            .field("out_fence_ptr", &*lock(&self.out_fence_ptr))
            .finish()
    }
}

fn in_fence_value(fd: Option<BorrowedFd<'_>>) -> property::Value<'static> {
    property::Value::SignedRange(fd.map_or(-1, |fd| i64::from(fd.as_raw_fd())))
}

/// A CRTC out-fence slot: the `s32` the kernel writes the out-fence's sync_file fd into.
///
/// # Lifecycle
///
/// 1. **empty** — [`OutFence::new`]: a heap `i32` holding `-1`.
/// 2. **armed** — [`FencedCommit::set_out_fence`] puts the slot's address into the request and
///    *borrows the slot mutably* until the request has been committed (or dropped). While armed
///    it cannot be read, taken, moved or dropped, so the address the kernel writes to is valid
///    for the whole ioctl.
/// 3. **filled** — after a successful commit the slot holds a sync_file fd that this `OutFence`
///    now owns (it signals when the committed frame starts scanning out, see the
///    [module docs](self)); after a `TEST_ONLY` commit or a failed one it is empty again.
/// 4. **taken** — [`take`](OutFence::take) (or [`take_sync_file`](OutFence::take_sync_file),
///    [`take_fence`](OutFence::take_fence)) hands the fd over and empties the slot for re-use.
///    An fd never taken is closed when the slot is dropped or re-armed.
///
/// `Send`, not `Sync` (the kernel writes it; it is meant to be owned by the thread that commits).
pub struct OutFence {
    /// Invariant outside an ioctl: `-1`, or an fd this slot owns.
    slot: Box<Cell<i32>>,
}

impl OutFence {
    /// An empty slot.
    pub fn new() -> OutFence {
        OutFence {
            slot: Box::new(Cell::new(-1)),
        }
    }

    /// Whether the slot holds a sync_file fd (a commit with this slot succeeded and the fd was not
    /// taken yet).
    pub fn is_filled(&self) -> bool {
        self.slot.get() >= 0
    }

    /// Takes the out-fence sync_file the last successful commit produced, leaving the slot empty.
    /// `None` if there is none (never committed, `TEST_ONLY`, failed commit, already taken).
    ///
    /// See [`take_sync_file`](OutFence::take_sync_file) and [`take_fence`](OutFence::take_fence)
    /// for the typed forms.
    pub fn take(&mut self) -> Option<OwnedFd> {
        let fd = self.slot.replace(-1);
        // SAFETY: by the invariant a non-negative value is an fd the kernel installed for us
        // (a successful commit) and nobody else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// [`take`](OutFence::take) as a [`SyncFile`] (to poll, wait for, inspect with
    /// [`SyncFile::info`] — its one fence is the CRTC's, driver = the DRM driver, timeline
    /// `CRTC:<id>-<name>` — or to send to a client as a release fence).
    pub fn take_sync_file(&mut self) -> Option<SyncFile> {
        self.take().map(SyncFile::from_fd)
    }

    /// [`take`](OutFence::take) as a [`Fence`] ([`SyncFile::into_fence`]): signals with the
    /// kernel's timestamp, i.e. when the committed frame started scanning out.
    pub fn take_fence(&mut self) -> Option<Fence> {
        self.take_sync_file().map(SyncFile::into_fence)
    }

    /// The `OUT_FENCE_PTR` value: the slot's address. Exposes the pointer's provenance, so the
    /// compiler assumes the ioctl may write through it.
    fn user_ptr(&self) -> u64 {
        self.slot.as_ptr() as u64
    }
}

impl Default for OutFence {
    fn default() -> OutFence {
        OutFence::new()
    }
}

impl Drop for OutFence {
    fn drop(&mut self) {
        drop(self.take());
    }
}

impl fmt::Debug for OutFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OutFence").field(&self.slot.get()).finish()
    }
}

/// `struct drm_mode_atomic` (`include/uapi/drm/drm_mode.h`).
#[repr(C)]
struct DrmModeAtomic {
    flags: u32,
    count_objs: u32,
    objs_ptr: u64,
    count_props_ptr: u64,
    props_ptr: u64,
    prop_values_ptr: u64,
    reserved: u64,
    user_data: u64,
}

// Naturally aligned, no implicit padding: the same layout on every Linux ABI.
const _: () = assert!(std::mem::size_of::<DrmModeAtomic>() == 56);

/// `DRM_IOCTL_MODE_ATOMIC`: `DRM_IOWR(0xBC, struct drm_mode_atomic)`.
const DRM_IOCTL_MODE_ATOMIC: Opcode = iowr::<DrmModeAtomic>(DRM_IOCTL_BASE, 0xBC);

/// An atomic request that carries explicit fences: in-fences on planes, out-fence slots on CRTCs,
/// and the flip event's `user_data`.
///
/// `'a` is how long the request may be built and committed: every in-fence fd and every
/// [`OutFence`] slot given to it is borrowed for `'a`, so none of them can be closed, freed or
/// moved before [`commit`](FencedCommit::commit) has returned (or the request is dropped without
/// committing, in which case the kernel never saw them).
///
/// Other properties go in with [`add_property`](FencedCommit::add_property), which refuses the
/// two fence properties: the borrowed setters are the only way to set them, so the kernel never
/// gets an address or fd number this request does not keep alive. The request itself is never
/// handed out (no accessor, no `Clone`) for the same reason.
///
/// The commit is `DRM_IOCTL_MODE_ATOMIC` issued here (retried on `EINTR`/`EAGAIN` like libdrm),
/// because `drm`'s `atomic_commit` cannot pass `user_data`.
pub struct FencedCommit<'a, D: ControlDevice> {
    dev: &'a D,
    props: &'a FenceProps,
    /// object id → (property id → value); ordered and de-duplicated (the last value wins).
    objects: BTreeMap<u32, BTreeMap<u32, u64>>,
    /// Slots whose address is in `objects`; kept borrowed until the commit has returned.
    out_fences: Vec<(crtc::Handle, &'a mut OutFence)>,
    /// In-fence fds whose number is in `objects`.
    in_fences: Vec<(plane::Handle, BorrowedFd<'a>)>,
}

impl<'a, D: ControlDevice> FencedCommit<'a, D> {
    /// An empty request on `dev`, resolving fence properties through `props` (which must belong
    /// to the same device).
    pub fn new(dev: &'a D, props: &'a FenceProps) -> Self {
        FencedCommit {
            dev,
            props,
            objects: BTreeMap::new(),
            out_fences: Vec::new(),
            in_fences: Vec::new(),
        }
    }

    fn put(&mut self, object: RawResourceHandle, prop: property::Handle, value: u64) {
        self.objects
            .entry(object.into())
            .or_default()
            .insert(prop.into(), value);
    }

    /// Adds `object.prop = value`; a later value for the same pair replaces an earlier one.
    ///
    /// # Errors
    ///
    /// `EINVAL` (`InvalidInput`) if `prop` is `IN_FENCE_FD` or `OUT_FENCE_PTR`: use
    /// [`set_in_fence`](Self::set_in_fence) / [`set_out_fence`](Self::set_out_fence). Any error of
    /// `DRM_IOCTL_MODE_GETPROPERTY` (run once per property id, to learn its name).
    pub fn add_property<H: ResourceHandle>(
        &mut self,
        object: H,
        prop: property::Handle,
        value: property::Value<'_>,
    ) -> io::Result<()> {
        match self.props.kind(self.dev, prop)? {
            PropKind::Other => {
                self.put(object.into(), prop, value.into());
                Ok(())
            }
            kind => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{kind:?} property set through add_property: use set_in_fence/set_out_fence"
                ),
            )),
        }
    }

    /// Makes `plane` wait for the sync_file `fd` before showing its new framebuffer (and stop
    /// waiting for the framebuffer's implicit fences, see the [module docs](self)).
    ///
    /// `fd` is borrowed until the commit: the kernel takes its own reference to the fence during
    /// the ioctl, after which the caller may close `fd` even if the commit is still waiting.
    /// Setting it again for the same plane replaces the earlier fd.
    pub fn set_in_fence(&mut self, plane: plane::Handle, fd: BorrowedFd<'a>) -> io::Result<()> {
        let prop = self.props.in_fence_fd(self.dev, plane)?;
        self.put(plane.into(), prop, in_fence_value(Some(fd)).into());
        self.in_fences.retain(|(p, _)| *p != plane);
        self.in_fences.push((plane, fd));
        Ok(())
    }

    /// Sets `plane`'s `IN_FENCE_FD` to `-1`: no explicit fence (the kernel then waits for the
    /// framebuffer's implicit fences, if the driver honours them).
    pub fn clear_in_fence(&mut self, plane: plane::Handle) -> io::Result<()> {
        let prop = self.props.in_fence_fd(self.dev, plane)?;
        self.put(plane.into(), prop, in_fence_value(None).into());
        self.in_fences.retain(|(p, _)| *p != plane);
        Ok(())
    }

    /// Asks for `crtc`'s out-fence, to be written into `slot`.
    ///
    /// An fd still in the slot from an earlier commit is closed first (take it before if you need
    /// it). The slot stays borrowed until [`commit`](Self::commit) returns; then
    /// [`OutFence::take`] yields the sync_file (none for `TEST_ONLY` or a failed commit).
    /// Setting it again for the same CRTC replaces the earlier slot, which stays empty.
    pub fn set_out_fence(&mut self, crtc: crtc::Handle, slot: &'a mut OutFence) -> io::Result<()> {
        let prop = self.props.out_fence_ptr(self.dev, crtc)?;
        drop(slot.take());
        self.put(crtc.into(), prop, slot.user_ptr());
        self.out_fences.retain(|(c, _)| *c != crtc);
        self.out_fences.push((crtc, slot));
        Ok(())
    }

    /// Commits the request (`DRM_IOCTL_MODE_ATOMIC`) with `flags` and, for the page-flip events
    /// of `PAGE_FLIP_EVENT`, `user_data` (returned unchanged in every CRTC's event).
    ///
    /// On success each armed [`OutFence`] holds its sync_file (except with `TEST_ONLY`, which
    /// checks the request and leaves them empty); on failure they are all empty. Errors are the
    /// kernel's: `EINVAL` for an in-fence fd that is not a sync_file, `EFAULT` for an unwritable
    /// slot (cannot happen through this type), `EBUSY` for a non-blocking commit while the
    /// previous one on the CRTC is still pending (e.g. held by its in-fence), `EINVAL` for
    /// `TEST_ONLY | PAGE_FLIP_EVENT`, `EACCES` without DRM master, …
    pub fn commit(self, flags: AtomicCommitFlags, user_data: u64) -> io::Result<()> {
        let mut objs = Vec::with_capacity(self.objects.len());
        let mut counts = Vec::with_capacity(self.objects.len());
        let mut props = Vec::new();
        let mut values = Vec::new();
        for (&obj, pv) in &self.objects {
            objs.push(obj);
            counts.push(pv.len() as u32);
            for (&p, &v) in pv {
                props.push(p);
                values.push(v);
            }
        }
        let mut arg = DrmModeAtomic {
            flags: flags.bits(),
            count_objs: objs.len() as u32,
            objs_ptr: objs.as_ptr() as u64,
            count_props_ptr: counts.as_ptr() as u64,
            props_ptr: props.as_ptr() as u64,
            prop_values_ptr: values.as_ptr() as u64,
            reserved: 0,
            user_data,
        };
        // SAFETY: `arg` matches `struct drm_mode_atomic` (size asserted above); the arrays it
        // points to live until the end of this function and are only read by the kernel; every
        // OUT_FENCE_PTR value is the address of an `OutFence` slot borrowed by `self`
        // (add_property refuses raw ones), so the kernel's writes land in live memory of the
        // right type.
        let result =
            unsafe { drm_ioctl_ptr::<DRM_IOCTL_MODE_ATOMIC, _>(self.dev.as_fd(), &mut arg) };
        match result {
            Ok(()) => {
                tracing::trace!(
                    target: crate::fence::TARGET,
                    flags = flags.bits(),
                    user_data,
                    in_fences = self.in_fences.len(),
                    out_fences = self.out_fences.len(),
                    "kms atomic commit"
                );
                Ok(())
            }
            Err(err) => {
                // The kernel has already cleared the slots (put_user(-1)) and released any fd it
                // had reserved; make sure no stale number is ever taken for an fd of ours.
                for (_, slot) in &self.out_fences {
                    slot.slot.set(-1);
                }
                Err(err)
            }
        }
    }
}

impl<D: ControlDevice> fmt::Debug for FencedCommit<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedCommit")
            .field("objects", &self.objects)
            .field("in_fences", &self.in_fences)
            .field(
                "out_fences",
                &self.out_fences.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A `DRM_EVENT_FLIP_COMPLETE` event (`struct drm_event_vblank`): an atomic commit with
/// `PAGE_FLIP_EVENT` (or a legacy page flip) reached the screen on `crtc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlipEvent {
    /// The CRTC whose commit completed (`None` only on kernels older than 4.12, which reported 0).
    pub crtc: Option<crtc::Handle>,
    /// The commit's `user_data`, unchanged.
    pub user_data: u64,
    /// The vblank counter at the flip (0 on drivers without vblank support, such as virtio-gpu).
    pub sequence: u32,
    /// When the new frame started scanning out, `CLOCK_MONOTONIC` (microsecond resolution): the
    /// same instant the commit's out-fence carries as its signal timestamp.
    pub timestamp: Ktime,
}

const DRM_EVENT_FLIP_COMPLETE: u32 = 0x02;
/// `sizeof(struct drm_event_vblank)`.
const DRM_EVENT_VBLANK_SIZE: usize = 32;

/// Reads the pending DRM events of `fd` (one `read()`) and returns the flip-complete ones, in
/// order; other event types (vblank, CRTC sequence) are skipped.
///
/// Blocks if `fd` is blocking and no event is pending: poll it for `POLLIN` first. The `drm`
/// crate's `receive_events` drops `user_data`; this does not.
pub fn read_flip_events(fd: BorrowedFd<'_>) -> io::Result<Vec<FlipEvent>> {
    let mut buf = [0u8; 4096];
    let n = loop {
        match rustix::io::read(fd, &mut buf) {
            Err(Errno::INTR) => continue,
            r => break r?,
        }
    };
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
    let mut events = Vec::new();
    let mut off = 0;
    while off + 8 <= n {
        let (ty, len) = (u32_at(&buf, off), u32_at(&buf, off + 4) as usize);
        if len < 8 || off + len > n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed DRM event (type {ty}, length {len})"),
            ));
        }
        let ev = &buf[off..off + len];
        if ty == DRM_EVENT_FLIP_COMPLETE && len >= DRM_EVENT_VBLANK_SIZE {
            let user_data = u64::from_ne_bytes(ev[8..16].try_into().unwrap());
            let (sec, usec) = (u32_at(ev, 16), u32_at(ev, 20));
            events.push(FlipEvent {
                crtc: drm::control::from_u32(u32_at(ev, 28)),
                user_data,
                sequence: u32_at(ev, 24),
                timestamp: Ktime::from_nanos(
                    i64::from(sec) * 1_000_000_000 + i64::from(usec) * 1_000,
                ),
            });
        }
        off += len;
    }
    Ok(events)
}
