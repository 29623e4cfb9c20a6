//! Ordering fences of one context: [`Fence::is_later`], [`seqno_is_later`] and
//! [`latest_per_context`].

use std::collections::HashMap;

use crate::fence::Fence;

/// Whether seqno `a` is later than `b` on one timeline (`__dma_fence_is_later()`).
///
/// With `use_64bit_seqno` this is `a > b`. Without it, only the low 32 bits count and they may
/// wrap: `a` is later when `(a - b) as i32 > 0` (wrapping), i.e. when `a` is less than 2³¹ ahead
/// of `b`. A 32-bit timeline must therefore never have two live points 2³¹ or more apart.
///
/// ```
/// use fence_bridge::seqno_is_later;
/// assert!(seqno_is_later(2, 1, true));
/// assert!(!seqno_is_later(1, 1, true));
/// // 32-bit: 3 comes after 0xffff_fffe once the counter wrapped.
/// assert!(seqno_is_later(3, 0xffff_fffe, false));
/// assert!(!seqno_is_later(3, 0xffff_fffe, true));
/// ```
pub fn seqno_is_later(a: u64, b: u64, use_64bit_seqno: bool) -> bool {
    if use_64bit_seqno {
        a > b
    } else {
        (a as u32).wrapping_sub(b as u32) as i32 > 0
    }
}

impl Fence {
    /// Whether `self` comes after `other` on their common timeline (`dma_fence_is_later()`).
    ///
    /// Seqnos compare as plain `u64`, or with the 32-bit wrap rule if the backend says
    /// [`crate::FenceOps::use_64bit_seqno`] is `false` (see [`seqno_is_later`]). A fence is not
    /// later than itself or than a fence with the same seqno.
    ///
    /// Fences of different contexts are unordered: this returns `false` for them (the kernel
    /// `WARN`s and returns `false`). Check [`Fence::context`] first if that can happen.
    pub fn is_later(&self, other: &Fence) -> bool {
        self.context() == other.context()
            && seqno_is_later(self.seqno(), other.seqno(), self.ops().use_64bit_seqno())
    }

    /// The later of two fences of one context (`dma_fence_later()`, without its
    /// "NULL if both signalled" shortcut): `self` on a tie. `None` if the contexts differ.
    pub fn later<'a>(&'a self, other: &'a Fence) -> Option<&'a Fence> {
        if self.context() != other.context() {
            return None;
        }
        Some(if other.is_later(self) { other } else { self })
    }
}

/// Keeps only the latest fence of each context (like `dma_fence_dedup_array()` when merging
/// fences, as `dma_fence_unwrap_merge()` does): on one timeline, a later fence signalling implies
/// the earlier ones did, so waiting for the latest is waiting for all.
///
/// The result has one fence per context, in the order each context first appears in the input.
/// On equal seqnos the first fence seen is kept. Signalled fences are kept like any other (filter
/// with [`Fence::is_signaled`] if you want them gone); note that a fence signalled with an error
/// is dropped if a later fence of its context is present, as in the kernel.
///
/// ```
/// use fence_bridge::{latest_per_context, FenceContext};
///
/// let (a, b) = (FenceContext::new("a"), FenceContext::new("b"));
/// let (a1, a2, b1) = (a.create_fence(), a.create_fence(), b.create_fence());
/// let kept = latest_per_context([a1, b1.clone(), a2.clone()]);
/// assert_eq!(kept.len(), 2);
/// assert!(kept[0].ptr_eq(&a2) && kept[1].ptr_eq(&b1));
/// ```
pub fn latest_per_context<I>(fences: I) -> Vec<Fence>
where
    I: IntoIterator<Item = Fence>,
{
    let mut kept: Vec<Fence> = Vec::new();
    let mut slot = HashMap::new();
    for fence in fences {
        match slot.get(&fence.context()) {
            Some(&i) => {
                if fence.is_later(&kept[i]) {
                    kept[i] = fence;
                }
            }
            None => {
                slot.insert(fence.context(), kept.len());
                kept.push(fence);
            }
        }
    }
    kept
}
