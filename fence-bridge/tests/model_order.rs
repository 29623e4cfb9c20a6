//! Contexts and ordering: context_alloc, is_later (64-bit and 32-bit wrap), later,
//! latest_per_context; property tests.

use std::collections::HashMap;

use fence_bridge::{
    context_alloc, latest_per_context, seqno_is_later, ContextId, Fence, FenceContext, FenceOps,
};
use proptest::prelude::*;

struct Ops32;

impl FenceOps for Ops32 {
    fn driver_name(&self) -> &str {
        "ops32"
    }
    fn timeline_name(&self) -> &str {
        "wrapping"
    }
    fn use_64bit_seqno(&self) -> bool {
        false
    }
}

#[test]
fn context_blocks_are_consecutive_and_disjoint() {
    let a = context_alloc(4);
    let b = context_alloc(2);
    assert_eq!(a.len(), 4);
    assert!(!a.is_empty());
    let ids: Vec<ContextId> = a.iter().collect();
    for w in ids.windows(2) {
        assert_eq!(w[1].as_u64(), w[0].as_u64() + 1);
    }
    assert_eq!(a.get(3), Some(ids[3]));
    assert_eq!(a.get(4), None);
    assert!(b.iter().all(|id| !a.contains(id)));
    assert!(
        ids.iter().all(|id| id.as_u64() != 0),
        "0 is the stub's context"
    );
    assert_eq!(a.into_iter().collect::<Vec<_>>(), ids);
    assert_eq!(ContextId::from_raw(ids[0].as_u64()), ids[0]);
}

#[test]
#[should_panic(expected = "context_alloc(0)")]
fn context_alloc_zero_panics() {
    context_alloc(0);
}

#[test]
fn is_later_within_a_context() {
    let ctx = FenceContext::new("order");
    let (a, b) = (ctx.create_fence(), ctx.create_fence());
    assert!(b.is_later(&a));
    assert!(!a.is_later(&b));
    assert!(!a.is_later(&a));
    assert!(b.later(&a).unwrap().ptr_eq(&b));
    assert!(a.later(&b).unwrap().ptr_eq(&b));
    assert!(a.later(&a).unwrap().ptr_eq(&a));
}

#[test]
fn is_later_across_contexts_is_false() {
    let (x, y) = (FenceContext::new("x"), FenceContext::new("y"));
    let (a, b) = (x.create_fence(), y.create_fence());
    let b2 = y.create_fence();
    assert!(!a.is_later(&b2) && !b2.is_later(&a));
    assert!(a.later(&b).is_none());
}

#[test]
fn is_later_32bit_wraps() {
    let ctx = context_alloc(1).first();
    let old = Fence::new(ctx, 0xffff_fff0, Ops32);
    let new = Fence::new(ctx, 0x10, Ops32);
    assert!(new.is_later(&old));
    assert!(!old.is_later(&new));
    // Only the low 32 bits count.
    let high = Fence::new(ctx, 0x1_0000_0005, Ops32);
    let low = Fence::new(ctx, 0x4, Ops32);
    assert!(high.is_later(&low));
    assert!(
        !seqno_is_later(5, 5 + (1 << 31), false),
        "2^31 apart: not later"
    );
}

#[test]
fn latest_per_context_keeps_one_per_context_in_first_seen_order() {
    let (x, y, z) = (
        FenceContext::new("x"),
        FenceContext::new("y"),
        FenceContext::new("z"),
    );
    let x1 = x.create_fence();
    let y1 = y.create_fence();
    let x2 = x.create_fence();
    let z1 = z.create_fence();
    let y2 = y.create_fence();
    let kept = latest_per_context(vec![y1, x2.clone(), z1.clone(), x1, y2.clone()]);
    let expect = [&y2, &x2, &z1];
    assert_eq!(kept.len(), 3);
    for (k, e) in kept.iter().zip(expect) {
        assert!(k.ptr_eq(e));
    }
    assert!(latest_per_context(Vec::new()).is_empty());
}

#[test]
fn latest_per_context_keeps_first_of_equal_seqnos() {
    let ctx = context_alloc(1).first();
    let a = Fence::new(ctx, 3, Ops32);
    let b = Fence::new(ctx, 3, Ops32);
    let kept = latest_per_context([a.clone(), b]);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].ptr_eq(&a));
}

proptest! {
    #[test]
    fn seqno_64bit_is_plain_order(a: u64, b: u64) {
        prop_assert_eq!(seqno_is_later(a, b, true), a > b);
    }

    #[test]
    fn seqno_32bit_is_antisymmetric(a: u64, b: u64) {
        // Never both later; exactly one unless equal (mod 2^32) or exactly 2^31 apart.
        let (ab, ba) = (seqno_is_later(a, b, false), seqno_is_later(b, a, false));
        prop_assert!(!(ab && ba));
        let d = (a as u32).wrapping_sub(b as u32);
        prop_assert_eq!(ab || ba, d != 0 && d != 1 << 31);
    }

    #[test]
    fn seqno_32bit_wrap_matches_small_steps(base: u32, step in 1u32..(1 << 31)) {
        let later = base.wrapping_add(step);
        prop_assert!(seqno_is_later(u64::from(later), u64::from(base), false));
        prop_assert!(!seqno_is_later(u64::from(base), u64::from(later), false));
    }

    #[test]
    fn latest_per_context_is_max_per_context(
        points in proptest::collection::vec((0usize..4, 0u64..20), 0..40)
    ) {
        let contexts: Vec<ContextId> = context_alloc(4).iter().collect();
        struct Ops;
        impl FenceOps for Ops {
            fn driver_name(&self) -> &str { "prop" }
            fn timeline_name(&self) -> &str { "prop" }
        }
        let fences: Vec<Fence> =
            points.iter().map(|&(c, s)| Fence::new(contexts[c], s, Ops)).collect();
        let kept = latest_per_context(fences.clone());

        // One fence per context present, in order of first appearance.
        let mut first_seen = Vec::new();
        for f in &fences {
            if !first_seen.contains(&f.context()) {
                first_seen.push(f.context());
            }
        }
        prop_assert_eq!(kept.iter().map(Fence::context).collect::<Vec<_>>(), first_seen);

        // Each kept fence has the context's maximum seqno, and is the first fence with it.
        let mut max: HashMap<ContextId, u64> = HashMap::new();
        for f in &fences {
            let m = max.entry(f.context()).or_insert(f.seqno());
            *m = (*m).max(f.seqno());
        }
        for k in &kept {
            prop_assert_eq!(k.seqno(), max[&k.context()]);
            let first = fences
                .iter()
                .find(|f| f.context() == k.context() && f.seqno() == k.seqno())
                .unwrap();
            prop_assert!(first.ptr_eq(k));
            // No input fence of its context is later.
            prop_assert!(fences.iter().all(|f| !f.is_later(k)));
        }
        // Every kept fence comes from the input.
        prop_assert!(kept.iter().all(|k| fences.iter().any(|f| f.ptr_eq(k))));
    }

    #[test]
    fn fence_context_seqnos_are_ordered(n in 1usize..30) {
        let ctx = FenceContext::new("prop");
        let fences: Vec<Fence> = (0..n).map(|_| ctx.create_fence()).collect();
        for (i, a) in fences.iter().enumerate() {
            for (j, b) in fences.iter().enumerate() {
                prop_assert_eq!(a.is_later(b), i > j);
            }
        }
        let kept = latest_per_context(fences.iter().rev().cloned());
        prop_assert_eq!(kept.len(), 1);
        prop_assert!(kept[0].ptr_eq(fences.last().unwrap()));
    }
}
