//! Fence contexts: [`context_alloc`] hands out blocks of ids; a [`FenceContext`] is one
//! timeline that hands out increasing seqnos.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::fence::Fence;
use crate::ops::FenceOps;

/// Context 0 belongs to [`Fence::stub`]; allocation starts at 1, as in the kernel.
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(1);

/// A fence context id: fences of one context are on one timeline and are ordered by seqno.
///
/// Ids come from [`context_alloc`] (`dma_fence_context_alloc()`); id 0 is reserved for the stub
/// fence, as in the kernel.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextId(u64);

impl ContextId {
    /// The context of [`Fence::stub`].
    pub const STUB: ContextId = ContextId(0);

    /// The raw id.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`ContextId::as_u64`]. Only meaningful for values that came from
    /// [`context_alloc`] in this process: a made-up id may collide with another timeline's, and
    /// ordering fences of two timelines by seqno is meaningless.
    pub const fn from_raw(raw: u64) -> Self {
        ContextId(raw)
    }
}

impl fmt::Debug for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextId({})", self.0)
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A block of consecutive context ids returned by [`context_alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextRange {
    first: u64,
    len: u64,
}

impl ContextRange {
    /// The first id of the block.
    pub fn first(&self) -> ContextId {
        ContextId(self.first)
    }

    /// How many ids the block holds (never 0).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always `false`: [`context_alloc`] refuses to allocate an empty block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th id of the block, or `None` if `i >= len()`.
    pub fn get(&self, i: u64) -> Option<ContextId> {
        (i < self.len).then(|| ContextId(self.first + i))
    }

    /// Whether `id` belongs to this block.
    pub fn contains(&self, id: ContextId) -> bool {
        id.0 >= self.first && id.0 - self.first < self.len
    }

    /// The ids of the block, in order.
    pub fn iter(&self) -> impl Iterator<Item = ContextId> + '_ {
        (self.first..self.first + self.len).map(ContextId)
    }
}

impl IntoIterator for ContextRange {
    type Item = ContextId;
    type IntoIter = std::iter::Map<std::ops::Range<u64>, fn(u64) -> ContextId>;

    fn into_iter(self) -> Self::IntoIter {
        (self.first..self.first + self.len).map(ContextId as fn(u64) -> ContextId)
    }
}

/// Allocates `num` consecutive, process-unique context ids (`dma_fence_context_alloc()`).
///
/// A driver with several rings (or a compositor with several outputs) allocates one block and
/// uses one id per ring.
///
/// # Panics
///
/// If `num` is 0 (the kernel `WARN`s) or the id space is exhausted.
///
/// ```
/// let block = fence_bridge::context_alloc(3);
/// let ids: Vec<_> = block.iter().collect();
/// assert_eq!(ids.len(), 3);
/// assert_eq!(ids[1].as_u64(), ids[0].as_u64() + 1);
/// assert!(!fence_bridge::context_alloc(1).contains(ids[2]));
/// ```
pub fn context_alloc(num: u64) -> ContextRange {
    assert!(num > 0, "context_alloc(0): allocate at least one context");
    let first = NEXT_CONTEXT.fetch_add(num, Ordering::Relaxed);
    assert!(
        first.checked_add(num).is_some(),
        "fence context ids exhausted"
    );
    ContextRange { first, len: num }
}

/// One timeline: a [`ContextId`] plus a seqno counter, and a name for diagnostics.
///
/// Seqnos start at 1 and increase by one per [`FenceContext::next_seqno`], so fences made from one
/// `FenceContext` are ordered by creation (see [`Fence::is_later`]). `FenceContext` is `Sync`:
/// several threads may emit on one timeline, but then creation order is the order of the atomic
/// increments, which is the caller's business.
///
/// ```
/// use fence_bridge::FenceContext;
///
/// let ctx = FenceContext::new("render");
/// let a = ctx.create_fence();
/// let b = ctx.create_fence();
/// assert_eq!(a.context(), b.context());
/// assert_eq!((a.seqno(), b.seqno()), (1, 2));
/// assert!(b.is_later(&a));
/// b.signal();
/// assert!(b.is_signaled() && !a.is_signaled());
/// ```
pub struct FenceContext {
    id: ContextId,
    last_seqno: AtomicU64,
    name: Arc<str>,
}

impl FenceContext {
    /// Allocates a new context named `timeline_name`.
    pub fn new(timeline_name: &str) -> Self {
        Self::with_id(context_alloc(1).first(), timeline_name)
    }

    /// A timeline on an already-allocated id (e.g. one of a [`context_alloc`] block).
    pub fn with_id(id: ContextId, timeline_name: &str) -> Self {
        FenceContext {
            id,
            last_seqno: AtomicU64::new(0),
            name: Arc::from(timeline_name),
        }
    }

    /// The context id.
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// The timeline name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reserves and returns the next seqno (1 for the first call).
    pub fn next_seqno(&self) -> u64 {
        self.last_seqno.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The last seqno handed out, 0 if none.
    pub fn last_seqno(&self) -> u64 {
        self.last_seqno.load(Ordering::Relaxed)
    }

    /// A new pending fence with the next seqno and no backend: it signals only when someone
    /// calls [`Fence::signal`] (or a variant) on it. Driver name `"fence_bridge"`.
    pub fn create_fence(&self) -> Fence {
        self.create_fence_with(PlainOps {
            timeline: self.name.clone(),
        })
    }

    /// A new pending fence with the next seqno, backed by `ops`.
    pub fn create_fence_with(&self, ops: impl FenceOps) -> Fence {
        Fence::new(self.id, self.next_seqno(), ops)
    }
}

impl fmt::Debug for FenceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceContext")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("last_seqno", &self.last_seqno())
            .finish()
    }
}

/// Backend of fences signalled by hand only.
struct PlainOps {
    timeline: Arc<str>,
}

impl FenceOps for PlainOps {
    fn driver_name(&self) -> &str {
        "fence_bridge"
    }

    fn timeline_name(&self) -> &str {
        &self.timeline
    }
}
