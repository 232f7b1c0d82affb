// SPDX-License-Identifier: GPL-2.0

//! Property tests of the IOVA allocator against simple reference models: a page bitmap for
//! small domains and a map of occupied intervals for a 2^40-page domain. Both search by
//! brute force, independently of the allocator's tree. `check_invariants` (AVL balance,
//! BST order, tiling, merging, augmented data, counters, slot accounting) runs after every
//! operation.

use aikrs_iova_core::rng::Rng;
use aikrs_iova_core::{nodes_needed, Error, IovaAllocator, Node, Pfn, Stats};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Alloc = IovaAllocator<Vec<Node>>;

fn new_alloc(slots: usize, start: Pfn, limit: Pfn) -> Alloc {
    IovaAllocator::new(vec![Node::EMPTY; slots], start, limit).expect("valid domain")
}

fn invariants(a: &Alloc) -> Result<(), TestCaseError> {
    a.check_invariants()
        .map_err(|e| TestCaseError::fail(format!("invariant violated: {e}")))
}

/// The part of the stats that the models know (not the node counts).
fn model_view(s: &Stats) -> [u64; 7] {
    [
        s.span_pages,
        s.free_pages,
        s.largest_free,
        s.free_blocks,
        s.allocated_pages,
        s.allocations,
        s.reserved_pages,
    ]
}

/// A model's statistics in the order of [`model_view`]; `live` maps each live
/// allocation's first pfn to its size.
fn model_row(
    live: &BTreeMap<u64, u64>,
    span: u64,
    free: u64,
    largest: u64,
    blocks: u64,
    reserved: u64,
) -> [u64; 7] {
    let allocated: u64 = live.values().sum();
    [
        span,
        free,
        largest,
        blocks,
        allocated,
        live.len() as u64,
        reserved,
    ]
}

fn conservation(s: &Stats) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        s.free_pages + s.allocated_pages + s.reserved_pages,
        s.span_pages,
        "pages not conserved: {:?}",
        s
    );
    prop_assert!(s.largest_free <= s.free_pages);
    prop_assert!(s.nodes_used <= s.nodes_total);
    Ok(())
}

/// `size.next_power_of_two() - 1`, or `None` when that power is 2^64.
fn align_mask(size: u64) -> Option<u64> {
    size.checked_next_power_of_two().map(|a| a - 1)
}

// ---------------------------------------------------------------------------------------
// Page bitmap model (small domains).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Page {
    Free,
    Alloc,
    Reserved,
}

#[derive(Clone, Debug)]
struct Bitmap {
    start: u64,
    limit: u64,
    pages: Vec<Page>,
    live: BTreeMap<u64, u64>,
}

impl Bitmap {
    fn new(start: u64, limit: u64) -> Self {
        Bitmap {
            start,
            limit,
            pages: vec![Page::Free; (limit - start + 1) as usize],
            live: BTreeMap::new(),
        }
    }

    fn span(&self) -> u64 {
        self.limit - self.start + 1
    }

    fn all_free(&self, p: u64, size: u64) -> bool {
        if p < self.start || size == 0 {
            return false;
        }
        let Some(last) = p.checked_add(size - 1) else {
            return false;
        };
        if last > self.limit {
            return false;
        }
        let i = (p - self.start) as usize;
        self.pages[i..i + size as usize]
            .iter()
            .all(|&q| q == Page::Free)
    }

    /// Aligned candidate starts `p` (multiples of `2^k`, highest first) with
    /// `[p, p + width)` inside `[start, min(limit, self.limit)]`.
    fn aligned_starts(&self, width: u64, mask: u64, limit: u64) -> Vec<u64> {
        let bound = limit.min(self.limit);
        let mut out = Vec::new();
        if bound < self.start || bound - self.start + 1 < width {
            return out;
        }
        let mut p = (bound - (width - 1)) & !mask;
        while p >= self.start {
            out.push(p);
            match p.checked_sub(mask + 1) {
                Some(q) => p = q,
                None => break,
            }
        }
        out
    }

    /// The highest fit of `size` pages aligned to `size.next_power_of_two()` under `limit`.
    fn highest_fit(&self, size: u64, limit: u64) -> Option<u64> {
        let mask = align_mask(size)?;
        self.aligned_starts(size, mask, limit)
            .into_iter()
            .find(|&p| self.all_free(p, size))
    }

    /// Whether a whole aligned block of `size.next_power_of_two()` free pages lies under
    /// `limit`.
    fn has_full_block(&self, size: u64, limit: u64) -> bool {
        let Some(mask) = align_mask(size) else {
            return false;
        };
        self.aligned_starts(mask + 1, mask, limit)
            .into_iter()
            .any(|p| self.all_free(p, mask + 1))
    }

    fn set(&mut self, p: u64, size: u64, to: Page) {
        let i = (p - self.start) as usize;
        for q in &mut self.pages[i..i + size as usize] {
            *q = to;
        }
    }

    fn alloc(&mut self, p: u64, size: u64) {
        self.set(p, size, Page::Alloc);
        self.live.insert(p, size);
    }

    fn free(&mut self, p: u64, size: u64) -> Result<(), Error> {
        if self.live.get(&p) != Some(&size) {
            return Err(Error::NotAllocated);
        }
        self.live.remove(&p);
        self.set(p, size, Page::Free);
        Ok(())
    }

    /// What `reserve` must return; applies it when `apply`.
    fn reserve(&mut self, lo: u64, hi: u64, apply: bool) -> Result<(), Error> {
        if hi < lo {
            return Err(Error::InvalidArgument);
        }
        if hi < self.start || lo > self.limit {
            return Ok(());
        }
        let lo = lo.max(self.start);
        let hi = hi.min(self.limit);
        let (i, j) = ((lo - self.start) as usize, (hi - self.start) as usize);
        if self.pages[i..=j].contains(&Page::Alloc) {
            return Err(Error::Busy);
        }
        if apply {
            self.set(lo, hi - lo + 1, Page::Reserved);
        }
        Ok(())
    }

    fn find(&self, pfn: u64) -> Option<(u64, u64)> {
        let (&p, &size) = self.live.range(..=pfn).next_back()?;
        (pfn - p < size).then_some((p, size))
    }

    fn stats(&self) -> [u64; 7] {
        let (mut free, mut blocks, mut largest, mut run, mut reserved) = (0, 0, 0, 0u64, 0);
        for &q in &self.pages {
            if q == Page::Free {
                free += 1;
                if run == 0 {
                    blocks += 1;
                }
                run += 1;
                largest = largest.max(run);
            } else {
                run = 0;
                if q == Page::Reserved {
                    reserved += 1;
                }
            }
        }
        model_row(&self.live, self.span(), free, largest, blocks, reserved)
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// `pow`: exactly `2^bits` pages, else `1 + raw % 2^bits`; `lim` selects the limit.
    Alloc {
        bits: u32,
        pow: bool,
        raw: u64,
        lim: u8,
        lraw: u64,
    },
    FreeLive(usize),
    FreeBogus {
        how: u8,
        sel: usize,
        raw: u64,
    },
    Reserve {
        lo: u64,
        len: u64,
        wide: bool,
    },
    Find(u64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..=12, any::<bool>(), any::<u64>(), 0u8..5, any::<u64>())
            .prop_map(|(bits, pow, raw, lim, lraw)| Op::Alloc { bits, pow, raw, lim, lraw }),
        3 => any::<usize>().prop_map(Op::FreeLive),
        2 => (0u8..7, any::<usize>(), any::<u64>())
            .prop_map(|(how, sel, raw)| Op::FreeBogus { how, sel, raw }),
        1 => (any::<u64>(), 0u64..64, any::<bool>())
            .prop_map(|(lo, len, wide)| Op::Reserve { lo, len, wide }),
        1 => any::<u64>().prop_map(Op::Find),
    ]
}

/// A domain of up to 4096 pages: at a small start, at a high aligned start, or ending at
/// the highest allowed limit `Pfn::MAX - 1`.
fn domain_strategy() -> impl Strategy<Value = (u64, u64)> {
    (0u8..4, 1u64..=4096, any::<u64>()).prop_map(|(kind, span, raw)| {
        let start = match kind {
            0 => raw % 5000,
            1 => (1u64 << 40) + raw % 3,
            2 => 0,
            _ => u64::MAX - span,
        };
        (start, start + span - 1)
    })
}

fn pick_live(live: &BTreeMap<u64, u64>, sel: usize) -> Option<(u64, u64)> {
    if live.is_empty() {
        return None;
    }
    live.iter().nth(sel % live.len()).map(|(&p, &s)| (p, s))
}

/// Runs `ops` on a fresh allocator and a bitmap model in lockstep.
fn run_bitmap(start: u64, limit: u64, slots: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut a = new_alloc(slots, start, limit);
    let mut m = Bitmap::new(start, limit);
    let span = m.span();
    // A tree never has more nodes than pages, so `span` slots are always enough.
    let ample = slots as u64 >= span;
    invariants(&a)?;
    for op in ops {
        let before = a.stats();
        let model_before = m.stats();
        match *op {
            Op::Alloc {
                bits,
                pow,
                raw,
                lim,
                lraw,
            } => {
                let size = if pow {
                    1u64 << bits
                } else {
                    1 + raw % (1u64 << bits)
                };
                let limit_arg = match lim {
                    0 => u64::MAX,
                    1 => limit,
                    2 => start + lraw % span,
                    3 => start.saturating_add(lraw % (2 * span)),
                    _ if start > 0 => start - 1 - lraw % start.min(8),
                    _ => lraw % span,
                };
                let got = a.alloc(size, limit_arg);
                if size > span || limit_arg < start {
                    prop_assert_eq!(got, Err(Error::InvalidArgument));
                } else if size.is_power_of_two() {
                    match (m.highest_fit(size, limit_arg), got) {
                        (Some(p), Ok(q)) => prop_assert_eq!(p, q, "size {}", size),
                        (None, Err(Error::NoSpace)) => {}
                        (Some(_), Err(Error::NoNodes)) if !ample => {}
                        (want, got) => prop_assert!(
                            false,
                            "alloc({}, {:#x}): model {:?}, allocator {:?}",
                            size,
                            limit_arg,
                            want,
                            got
                        ),
                    }
                } else {
                    match got {
                        Ok(_) => {}
                        Err(Error::NoSpace) => prop_assert!(
                            !m.has_full_block(size, limit_arg),
                            "NoSpace for size {} although an aligned block is free",
                            size
                        ),
                        Err(Error::NoNodes) if !ample => {}
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                match got {
                    Ok(p) => {
                        let a_mask = size.next_power_of_two() - 1;
                        prop_assert_eq!(p & a_mask, 0, "misaligned");
                        prop_assert!(p >= start && p + size - 1 <= limit_arg.min(limit));
                        prop_assert!(m.all_free(p, size), "overlaps allocation or reserve");
                        m.alloc(p, size);
                    }
                    Err(Error::NoNodes) => {
                        prop_assert_eq!(a.stats(), before);
                        prop_assert!(before.nodes_total - before.nodes_used < 2);
                    }
                    Err(_) => prop_assert_eq!(a.stats(), before),
                }
            }
            Op::FreeLive(sel) => {
                if let Some((p, s)) = pick_live(&m.live, sel) {
                    prop_assert_eq!(a.free(p, s), Ok(()));
                    m.free(p, s).unwrap();
                    prop_assert_eq!(a.find(p), None);
                }
            }
            Op::FreeBogus { how, sel, raw } => {
                let live = pick_live(&m.live, sel);
                let (p, s) = match (how, live) {
                    (0, Some((p, s))) => (p, s + 1 + raw % 3),
                    (1, Some((p, s))) if s > 1 => (p, s - 1),
                    (2, Some((p, s))) if s > 1 => (p + 1, s - 1),
                    (3, _) => (start + raw % span, 1 + (raw >> 32) % 8),
                    (4, _) => (u64::MAX - raw % 4, 2 + raw % 16),
                    (5, Some((p, _))) => (p, 0),
                    _ => (start + raw % span, 1 << (raw % 13)),
                };
                let want = m.free(p, s);
                let got = a.free(p, s);
                prop_assert_eq!(got, want, "free({:#x}, {})", p, s);
                if got.is_err() {
                    prop_assert_eq!(a.stats(), before);
                }
            }
            Op::Reserve { lo, len, wide } => {
                // Mostly inside the domain; `wide` spreads it around and beyond it.
                let lo = if wide {
                    start.saturating_sub(64).saturating_add(lo % (span + 128))
                } else {
                    start + lo % span
                };
                let hi = lo.saturating_add(len);
                let (lo, hi) = if len == 63 { (hi, lo) } else { (lo, hi) };
                let want = m.reserve(lo, hi, false);
                let got = a.reserve(lo, hi);
                match (want, got) {
                    (Ok(()), Ok(())) => {
                        m.reserve(lo, hi, true).unwrap();
                    }
                    (Ok(()), Err(Error::NoNodes)) if !ample => {
                        prop_assert_eq!(a.stats(), before);
                    }
                    (w, g) => {
                        prop_assert_eq!(g, w, "reserve({:#x}, {:#x})", lo, hi);
                        prop_assert_eq!(a.stats(), before);
                    }
                }
            }
            Op::Find(raw) => {
                let pfn = if raw % 8 == 0 {
                    raw
                } else {
                    start + raw % span
                };
                prop_assert_eq!(a.find(pfn), m.find(pfn), "find({:#x})", pfn);
            }
        }
        invariants(&a)?;
        let s = a.stats();
        conservation(&s)?;
        prop_assert_eq!(model_view(&s), m.stats(), "stats after {:?}", op);
        if model_view(&s) == model_before {
            // An op that changed nothing (visible) must not have leaked nodes either,
            // except a successful reserve of already reserved pages.
            let is_reserve = matches!(op, Op::Reserve { .. });
            prop_assert!(s.nodes_used <= before.nodes_used || is_reserve);
        }
    }
    // Freeing everything leaves one free node per maximal run between reserved ranges.
    let live: Vec<_> = m.live.iter().map(|(&p, &s)| (p, s)).collect();
    for (p, s) in live {
        prop_assert_eq!(a.free(p, s), Ok(()));
        m.free(p, s).unwrap();
        invariants(&a)?;
    }
    let s = a.stats();
    prop_assert_eq!(model_view(&s), m.stats());
    prop_assert_eq!(s.allocations, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Properties 1, 2, 3 and 7: random alloc/free/bogus free/reserve/find sequences agree
    /// with the bitmap model (exact placement for power-of-two sizes, NoSpace iff no fit,
    /// alignment and bounds, exact stats, conservation) with ample storage, and with tiny
    /// storage NoNodes leaves everything unchanged.
    #[test]
    fn prop_random_ops_match_bitmap_model(
        (start, limit) in domain_strategy(),
        tiny in prop::option::weighted(0.25, 1usize..24),
        ops in prop::collection::vec(op_strategy(), 1..160),
    ) {
        let slots = tiny.unwrap_or((limit - start + 1) as usize);
        run_bitmap(start, limit, slots, &ops)?;
    }

    /// Property 2: after random allocations and reservations, every kind of bogus free
    /// returns NotAllocated and changes nothing.
    #[test]
    fn prop_bogus_free_changes_nothing(
        (start, limit) in domain_strategy(),
        sizes in prop::collection::vec(1u64..40, 1..40),
        reserve in (any::<u64>(), 0u64..32),
        probes in prop::collection::vec((0u8..8, any::<usize>(), any::<u64>()), 1..60),
    ) {
        let span = limit - start + 1;
        let mut a = new_alloc(span as usize, start, limit);
        let mut m = Bitmap::new(start, limit);
        let (rlo, rlen) = (start + reserve.0 % span, reserve.1);
        a.reserve(rlo, rlo.saturating_add(rlen)).unwrap();
        m.reserve(rlo, rlo.saturating_add(rlen), true).unwrap();
        for s in sizes {
            if let Ok(p) = a.alloc(s, u64::MAX) {
                m.alloc(p, s);
            }
        }
        let mut freed = Vec::new();
        // Free a third of them so that double frees can be tried.
        let live: Vec<_> = m.live.iter().map(|(&p, &s)| (p, s)).collect();
        for &(p, s) in live.iter().step_by(3) {
            prop_assert_eq!(a.free(p, s), Ok(()));
            m.free(p, s).unwrap();
            freed.push((p, s));
        }
        invariants(&a)?;
        for (how, sel, raw) in probes {
            let live = pick_live(&m.live, sel);
            let (p, s) = match how {
                0 if !freed.is_empty() => freed[sel % freed.len()],
                1 if live.is_some() => { let (p, s) = live.unwrap(); (p, s + 1) }
                2 if live.is_some() && live.unwrap().1 > 1 => { let (p, s) = live.unwrap(); (p, s - 1) }
                3 if live.is_some() && live.unwrap().1 > 1 => { let (p, s) = live.unwrap(); (p + 1, s - 1) }
                4 => (rlo, rlen + 1),
                5 => (u64::MAX - raw % 8, 1 + raw % 64),
                6 if live.is_some() => (live.unwrap().0, 0),
                _ => (start.wrapping_add(raw % (2 * span)), 1 + raw % 40),
            };
            if m.live.get(&p) == Some(&s) {
                continue;
            }
            let before = a.stats();
            prop_assert_eq!(a.free(p, s), Err(Error::NotAllocated), "free({:#x}, {})", p, s);
            prop_assert_eq!(a.stats(), before);
            invariants(&a)?;
        }
        prop_assert_eq!(model_view(&a.stats()), m.stats());
    }

    /// Property 4: bad arguments give InvalidArgument and change nothing.
    #[test]
    fn prop_bad_arguments(
        (start, limit) in domain_strategy(),
        raw in any::<u64>(),
        slots in 1usize..8,
    ) {
        let span = limit - start + 1;
        let mut a = new_alloc(slots, start, limit);
        let before = a.stats();
        prop_assert_eq!(a.alloc(0, u64::MAX), Err(Error::InvalidArgument));
        prop_assert_eq!(a.alloc(0, limit), Err(Error::InvalidArgument));
        let too_big = span.saturating_add(1 + raw % 1000);
        prop_assert_eq!(a.alloc(too_big, u64::MAX), Err(Error::InvalidArgument));
        prop_assert_eq!(a.alloc(u64::MAX, u64::MAX), Err(Error::InvalidArgument));
        if start > 0 {
            let below = start - 1 - raw % start;
            prop_assert_eq!(a.alloc(1, below), Err(Error::InvalidArgument));
        }
        let lo = start.saturating_add(raw % span).saturating_add(1);
        prop_assert_eq!(a.reserve(lo, lo - 1), Err(Error::InvalidArgument));
        prop_assert_eq!(a.free(start, 0), Err(Error::NotAllocated));
        prop_assert_eq!(a.stats(), before);
        invariants(&a)?;

        let nodes = vec![Node::EMPTY; slots];
        if start < u64::MAX {
            let bad = IovaAllocator::new(nodes.clone(), start + 1 + raw % (u64::MAX - start), start);
            prop_assert_eq!(bad.err(), Some(Error::InvalidArgument));
        }
        let empty: Vec<Node> = Vec::new();
        prop_assert_eq!(IovaAllocator::new(empty, start, limit).err(), Some(Error::InvalidArgument));
        let mut none: [Node; 0] = [];
        prop_assert_eq!(
            IovaAllocator::new(&mut none[..], start, limit).err(),
            Some(Error::InvalidArgument)
        );
        prop_assert_eq!(
            IovaAllocator::new(nodes.clone(), start, u64::MAX).err(),
            Some(Error::InvalidArgument)
        );
        // Storage given back unchanged in length.
        let a = new_alloc(slots, start, limit);
        prop_assert_eq!(a.into_storage().len(), slots);
    }

    /// Property 5: with tiny storage, alloc eventually fails with NoNodes and changes
    /// nothing; freeing a live allocation makes room for one of the same size under the
    /// freed range's end again, at the same place.
    #[test]
    fn prop_no_nodes_then_free_recovers(
        span in 64u64..2048,
        start in 0u64..1000,
        slots in 1usize..10,
        sizes in prop::collection::vec(0u32..3, 40),
        victim in any::<usize>(),
    ) {
        let limit = start + span - 1;
        let mut a = new_alloc(slots, start, limit);
        let mut live = Vec::new();
        let mut hit = false;
        for &b in &sizes {
            let size = 1u64 << b;
            let before = a.stats();
            match a.alloc(size, u64::MAX) {
                Ok(p) => live.push((p, size)),
                Err(Error::NoNodes) => {
                    prop_assert_eq!(a.stats(), before);
                    invariants(&a)?;
                    hit = true;
                    break;
                }
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
            invariants(&a)?;
        }
        prop_assert!(hit, "storage of {} slots never ran out", slots);
        if let Some(&(p, s)) = live.get(victim % live.len().max(1)) {
            prop_assert_eq!(a.free(p, s), Ok(()));
            invariants(&a)?;
            prop_assert_eq!(a.alloc(s, p + s - 1), Ok(p));
            invariants(&a)?;
        }
    }

    /// `nodes_needed(max_live, max_reserved)` slots never run out while at most
    /// `max_live` allocations are live and at most `max_reserved` reserve calls were made.
    #[test]
    fn prop_nodes_needed_suffices(
        max_live in 0usize..24,
        max_reserved in 0usize..4,
        ops in prop::collection::vec((0u8..4, any::<u64>(), 1u64..20), 1..200),
    ) {
        let (start, limit) = (3u64, 1000u64);
        let mut a = new_alloc(nodes_needed(max_live, max_reserved), start, limit);
        prop_assert_eq!(
            IovaAllocator::<Vec<Node>>::nodes_needed(max_live, max_reserved),
            2 * (max_live + max_reserved) + 1
        );
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut reserves = 0;
        for (kind, raw, size) in ops {
            match kind {
                0 | 1 if live.len() < max_live => {
                    let lim = start + raw % (limit - start + 1);
                    match a.alloc(size, lim) {
                        Ok(p) => live.push((p, size)),
                        Err(e) => prop_assert_ne!(e, Error::NoNodes),
                    }
                }
                2 if !live.is_empty() => {
                    let (p, s) = live.swap_remove(raw as usize % live.len());
                    prop_assert_eq!(a.free(p, s), Ok(()));
                }
                3 if reserves < max_reserved => {
                    let lo = raw % 1100;
                    match a.reserve(lo, lo + size) {
                        Ok(()) => reserves += 1,
                        Err(e) => prop_assert_eq!(e, Error::Busy),
                    }
                }
                _ => {}
            }
            invariants(&a)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Interval model (large domains).

/// Occupied ranges `start -> (last, allocated)`; everything else is free.
struct Intervals {
    start: u64,
    limit: u64,
    occ: BTreeMap<u64, (u64, bool)>,
    live: BTreeMap<u64, u64>,
}

impl Intervals {
    /// Free gaps `[a, b]`, highest first.
    fn gaps_desc(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut top = Some(self.limit);
        let mut it = self.occ.iter().rev();
        std::iter::from_fn(move || loop {
            let hi = top?;
            match it.next() {
                Some((&s, &(l, _))) => {
                    top = s.checked_sub(1).filter(|&t| t >= self.start);
                    if l < hi {
                        return Some((l + 1, hi));
                    }
                }
                None => {
                    top = None;
                    return Some((self.start, hi));
                }
            }
        })
    }

    fn highest_fit(&self, size: u64, limit: u64) -> Option<u64> {
        let mask = align_mask(size)?;
        let bound = limit.min(self.limit);
        for (a, b) in self.gaps_desc() {
            let hi = b.min(bound);
            if hi < a || hi - a + 1 < size {
                continue;
            }
            let p = (hi + 1 - size) / (mask + 1) * (mask + 1);
            if p >= a {
                return Some(p);
            }
        }
        None
    }

    fn has_full_block(&self, size: u64, limit: u64) -> bool {
        let Some(mask) = align_mask(size) else {
            return false;
        };
        let bound = limit.min(self.limit);
        self.gaps_desc().any(|(a, b)| {
            let hi = b.min(bound);
            match a.checked_add(mask).map(|v| v & !mask) {
                Some(q) => hi >= a && q <= hi && hi - q >= mask,
                None => false,
            }
        })
    }

    fn is_free(&self, p: u64, size: u64) -> bool {
        let last = p + size - 1;
        p >= self.start
            && last <= self.limit
            && self
                .occ
                .range(..=last)
                .next_back()
                .is_none_or(|(_, &(l, _))| l < p)
    }

    fn overlaps_alloc(&self, lo: u64, hi: u64) -> bool {
        self.occ
            .range(..=hi)
            .rev()
            .take_while(|(_, &(l, _))| l >= lo)
            .any(|(_, &(_, allocated))| allocated)
    }

    fn reserve(&mut self, lo: u64, hi: u64) -> Result<(), Error> {
        if hi < self.start || lo > self.limit {
            return Ok(());
        }
        let (lo, hi) = (lo.max(self.start), hi.min(self.limit));
        if self.overlaps_alloc(lo, hi) {
            return Err(Error::Busy);
        }
        let gaps: Vec<_> = self
            .gaps_desc()
            .filter(|&(a, b)| b >= lo && a <= hi)
            .collect();
        for (a, b) in gaps {
            self.occ.insert(a.max(lo), (b.min(hi), false));
        }
        Ok(())
    }

    fn stats(&self) -> [u64; 7] {
        let span = self.limit - self.start + 1;
        let (mut free, mut blocks, mut largest) = (0, 0, 0);
        for (a, b) in self.gaps_desc() {
            free += b - a + 1;
            blocks += 1;
            largest = largest.max(b - a + 1);
        }
        let allocated: u64 = self.live.values().sum();
        model_row(
            &self.live,
            span,
            free,
            largest,
            blocks,
            span - free - allocated,
        )
    }
}

#[derive(Clone, Debug)]
enum BigOp {
    /// Size `1 + raw % 2^bits` (or exactly `2^bits` if `pow`), `bits <= 18`.
    Alloc {
        bits: u32,
        pow: bool,
        raw: u64,
        lim: u8,
        lraw: u64,
    },
    Free(usize),
    Bogus(usize, u64),
    Reserve(u64, u32),
    Find(usize, u64),
}

fn big_op_strategy() -> impl Strategy<Value = BigOp> {
    prop_oneof![
        10 => (0u32..=18, any::<bool>(), any::<u64>(), 0u8..4, any::<u64>())
            .prop_map(|(bits, pow, raw, lim, lraw)| BigOp::Alloc { bits, pow, raw, lim, lraw }),
        7 => any::<usize>().prop_map(BigOp::Free),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(s, r)| BigOp::Bogus(s, r)),
        1 => (any::<u64>(), 0u32..24).prop_map(|(r, b)| BigOp::Reserve(r, b)),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(s, r)| BigOp::Find(s, r)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Property 6: a 2^40-page domain (start 1), log-uniform sizes up to 2^18, thousands
    /// of operations, against the interval model; limits are often low (a 2^22-page
    /// window) so that the space under them fills up and fragments.
    #[test]
    fn prop_large_domain_interval_model(
        ops in prop::collection::vec(big_op_strategy(), 2500..3500),
    ) {
        let (start, limit) = (1u64, 1u64 << 40);
        let mut a = new_alloc(nodes_needed(ops.len(), ops.len()), start, limit);
        let mut m = Intervals { start, limit, occ: BTreeMap::new(), live: BTreeMap::new() };
        for op in &ops {
            let before = a.stats();
            match *op {
                BigOp::Alloc { bits, pow, raw, lim, lraw } => {
                    let size = if pow { 1u64 << bits } else { 1 + raw % (1u64 << bits) };
                    let lim = match lim {
                        0 => u64::MAX,
                        1 => start + lraw % (1 << 22),
                        2 => start + lraw % (1 << 26),
                        _ => start + lraw % limit,
                    };
                    let got = a.alloc(size, lim);
                    if size.is_power_of_two() {
                        prop_assert_eq!(got.ok(), m.highest_fit(size, lim), "alloc({}, {:#x})", size, lim);
                    }
                    match got {
                        Ok(p) => {
                            prop_assert_eq!(p & (size.next_power_of_two() - 1), 0);
                            prop_assert!(p + size - 1 <= lim.min(limit));
                            prop_assert!(m.is_free(p, size), "overlap at {:#x}+{}", p, size);
                            m.occ.insert(p, (p + size - 1, true));
                            m.live.insert(p, size);
                        }
                        Err(Error::NoSpace) => {
                            prop_assert!(!m.has_full_block(size, lim));
                            prop_assert_eq!(a.stats(), before);
                        }
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                BigOp::Free(sel) => {
                    if let Some((p, s)) = pick_live(&m.live, sel) {
                        prop_assert_eq!(a.free(p, s), Ok(()));
                        m.live.remove(&p);
                        m.occ.remove(&p);
                    }
                }
                BigOp::Bogus(sel, raw) => {
                    let (p, s) = match pick_live(&m.live, sel) {
                        Some((p, s)) if raw % 2 == 0 => (p, s + 1 + raw % 7),
                        Some((p, s)) if s > 1 => (p + 1, s - 1),
                        _ => (start + raw % limit, 1 + raw % 1000),
                    };
                    if m.live.get(&p) != Some(&s) {
                        prop_assert_eq!(a.free(p, s), Err(Error::NotAllocated));
                        prop_assert_eq!(a.stats(), before);
                    }
                }
                BigOp::Reserve(raw, bits) => {
                    let lo = raw % (limit + 1000);
                    let hi = lo + raw % (1u64 << bits);
                    let want = m.reserve(lo, hi);
                    prop_assert_eq!(a.reserve(lo, hi), want, "reserve({:#x}, {:#x})", lo, hi);
                }
                BigOp::Find(sel, raw) => {
                    let pfn = match pick_live(&m.live, sel) {
                        Some((p, s)) if raw % 4 != 0 => p + raw % (s + 1),
                        _ => raw % (limit + 2),
                    };
                    let want = m.live.range(..=pfn).next_back()
                        .filter(|(&p, &s)| pfn - p < s)
                        .map(|(&p, &s)| (p, s));
                    prop_assert_eq!(a.find(pfn), want, "find({:#x})", pfn);
                }
            }
            invariants(&a)?;
            let s = a.stats();
            conservation(&s)?;
            prop_assert_eq!(model_view(&s), m.stats(), "stats after {:?}", op);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic unit tests.

fn assert_height_log(a: &Alloc) {
    let n = a.stats().nodes_used;
    let bound = 1.45 * ((n + 2) as f64).log2();
    assert!(
        f64::from(a.height()) <= bound,
        "height {} > 1.45 log2({} + 2) = {bound}",
        a.height(),
        n
    );
}

/// The O(log n) claim: 100,000 live allocations (about 200,000 nodes after freeing every
/// other of 200,000 allocations), tree height within the AVL bound.
#[test]
fn height_is_logarithmic_with_100k_live_allocations() {
    let mut a = new_alloc(nodes_needed(200_000, 0), 0, (1 << 40) - 1);
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut live = Vec::new();
    for _ in 0..200_000 {
        let size = 1 + rng.next_u64() % 64;
        let lim = rng.next_u64() % (1 << 40);
        if let Ok(p) = a.alloc(size, lim) {
            live.push((p, size));
        }
    }
    assert_eq!(live.len(), 200_000);
    assert_height_log(&a);
    a.check_invariants().unwrap();
    for (i, &(p, s)) in live.iter().enumerate() {
        if i % 2 == 0 {
            a.free(p, s).unwrap();
        }
    }
    let st = a.stats();
    assert_eq!(st.allocations, 100_000);
    assert!(st.nodes_used >= 100_000);
    assert_height_log(&a);
    a.check_invariants().unwrap();

    // Sequential top-down allocations (the worst case for an unbalanced tree).
    let mut b = new_alloc(100_001, 0, (1 << 20) - 1);
    for i in 0..100_000u64 {
        assert_eq!(b.alloc(1, u64::MAX), Ok((1 << 20) - 1 - i));
    }
    assert_eq!(b.stats().nodes_used, 100_001);
    assert_height_log(&b);
    b.check_invariants().unwrap();
}

/// Linux `alloc_iova(size_aligned = true)` placement: top-down, size-aligned.
#[test]
fn placement_is_top_down_and_size_aligned() {
    let mut a = new_alloc(64, 0x10, 0xfff);
    assert_eq!(a.alloc(1, u64::MAX), Ok(0xfff));
    assert_eq!(a.alloc(2, u64::MAX), Ok(0xffc));
    assert_eq!(a.alloc(4, u64::MAX), Ok(0xff8));
    assert_eq!(a.alloc(3, u64::MAX), Ok(0xff4)); // aligned to 4, ends at 0xff6
    assert_eq!(a.alloc(1, u64::MAX), Ok(0xffe));
    assert_eq!(a.alloc(0x100, 0x7ff), Ok(0x700));
    assert_eq!(a.alloc(0x100, 0x7fe), Ok(0x600));
    assert_eq!(a.find(0x650), Some((0x600, 0x100)));
    assert_eq!(a.find(0x6ff), Some((0x600, 0x100)));
    assert_eq!(a.find(0x800), None);
    assert_eq!(a.alloc(0x1000, u64::MAX), Err(Error::InvalidArgument));
    assert_eq!(a.alloc(0x800, u64::MAX), Err(Error::NoSpace));
    assert_eq!(a.alloc(0x10, 0x1f), Ok(0x10));
    assert_eq!(a.alloc(1, 0x1f), Err(Error::NoSpace));
    assert_eq!(a.alloc(1, 0xf), Err(Error::InvalidArgument));
    a.check_invariants().unwrap();
    assert_eq!(a.free(0x700, 0x100), Ok(()));
    assert_eq!(a.free(0x700, 0x100), Err(Error::NotAllocated));
    a.check_invariants().unwrap();
}

/// Reserved ranges merge with adjacent and overlapping reserved ranges; reserving over
/// an allocation is Busy; outside the domain is a no-op.
#[test]
fn reserve_merges_and_checks() {
    let mut a = new_alloc(32, 100, 1099);
    a.reserve(200, 209).unwrap();
    a.reserve(210, 219).unwrap();
    a.reserve(190, 199).unwrap();
    a.reserve(195, 230).unwrap();
    let s = a.stats();
    assert_eq!((s.reserved_pages, s.nodes_used, s.free_blocks), (41, 3, 2));
    a.reserve(231, 240).unwrap();
    a.reserve(180, 189).unwrap();
    let s = a.stats();
    assert_eq!((s.reserved_pages, s.nodes_used), (61, 3));
    // Whole free run between two reserved ranges: everything merges into one node.
    a.reserve(300, 310).unwrap();
    a.reserve(241, 299).unwrap();
    let s = a.stats();
    assert_eq!((s.reserved_pages, s.nodes_used, s.free_blocks), (131, 3, 2));
    a.check_invariants().unwrap();

    let p = a.alloc(16, 500).unwrap();
    assert_eq!(p, 480);
    let before = a.stats();
    assert_eq!(a.reserve(400, 480), Err(Error::Busy));
    assert_eq!(a.reserve(495, 600), Err(Error::Busy));
    assert_eq!(a.stats(), before);
    assert_eq!(a.reserve(0, 99), Ok(()));
    assert_eq!(a.reserve(1100, u64::MAX), Ok(()));
    assert_eq!(a.reserve(5, 4), Err(Error::InvalidArgument));
    assert_eq!(a.stats(), before);
    // Clipped at both ends.
    a.reserve(0, 150).unwrap();
    a.reserve(1000, u64::MAX).unwrap();
    assert_eq!(a.stats().reserved_pages, 131 + 51 + 100);
    assert_eq!(a.free(180, 131), Err(Error::NotAllocated));
    assert_eq!(a.free(100, 51), Err(Error::NotAllocated));
    a.check_invariants().unwrap();
}

/// The documented limit for non-power-of-two sizes: a window of `size` but fewer than
/// `size.next_power_of_two()` free pages is not found unless the limit cuts it.
#[test]
fn non_power_of_two_needs_a_whole_aligned_block_below_the_limit_cut() {
    let mut a = new_alloc(16, 0, 15);
    a.reserve(0, 3).unwrap();
    a.reserve(7, 15).unwrap();
    // Free [4, 6]: 3 pages at 4 are 4-aligned, but no aligned 4-block is free.
    assert_eq!(a.alloc(3, u64::MAX), Err(Error::NoSpace));
    let mut b = new_alloc(16, 0, 15);
    b.reserve(0, 3).unwrap();
    b.reserve(8, 15).unwrap();
    assert_eq!(b.alloc(3, 6), Ok(4));
    assert_eq!(b.alloc(1, u64::MAX), Ok(7));
    b.check_invariants().unwrap();
}

/// Domains at the top of the pfn space and page counts near 2^64.
#[test]
fn extreme_domains() {
    let top = u64::MAX - 1;
    let mut a = new_alloc(8, 1, top);
    assert_eq!(a.stats().span_pages, u64::MAX - 1);
    // No 2^63-aligned block of 2^63 pages lies in [1, 2^64 - 2].
    assert_eq!(a.alloc(1 << 63, u64::MAX), Err(Error::NoSpace));
    assert_eq!(a.alloc(1 << 62, u64::MAX), Ok(1 << 63));
    assert_eq!(a.alloc(1 << 62, u64::MAX), Ok(1 << 62));
    assert_eq!(a.alloc(1 << 62, u64::MAX), Err(Error::NoSpace));
    assert_eq!(a.alloc(3 << 60, u64::MAX), Err(Error::NoSpace));
    assert_eq!(a.alloc(u64::MAX - 1, u64::MAX), Err(Error::NoSpace));
    assert_eq!(a.alloc(u64::MAX, u64::MAX), Err(Error::InvalidArgument));
    assert_eq!(a.find((1 << 63) + 5), Some((1 << 63, 1 << 62)));
    assert_eq!(a.free(1 << 63, 1 << 62), Ok(()));
    assert_eq!(a.alloc(1, u64::MAX), Ok(top));
    assert_eq!(a.free(top, u64::MAX), Err(Error::NotAllocated));
    assert_eq!(a.free(top, 2), Err(Error::NotAllocated));
    assert_eq!(a.reserve(0, u64::MAX), Err(Error::Busy));
    a.check_invariants().unwrap();
    let s = a.stats();
    assert_eq!(
        s.free_pages + s.allocated_pages + s.reserved_pages,
        s.span_pages
    );

    let mut b = new_alloc(4, 0, 0);
    assert_eq!(b.alloc(1, 0), Ok(0));
    assert_eq!(b.alloc(1, 0), Err(Error::NoSpace));
    assert_eq!(b.free(0, 1), Ok(()));
    b.reserve(0, 0).unwrap();
    assert_eq!(b.alloc(1, 0), Err(Error::NoSpace));
    b.check_invariants().unwrap();
}

#[test]
fn nodes_needed_saturates() {
    assert_eq!(nodes_needed(0, 0), 1);
    assert_eq!(nodes_needed(10, 3), 27);
    assert_eq!(nodes_needed(usize::MAX, 1), usize::MAX);
    assert_eq!(
        IovaAllocator::<&mut [Node]>::nodes_needed(usize::MAX / 2, 0),
        usize::MAX
    );
}

/// Works on borrowed storage and hands it back.
#[test]
fn borrowed_storage() {
    let mut nodes = [Node::EMPTY; 5];
    let mut a = IovaAllocator::new(&mut nodes[..], 0, 99).unwrap();
    assert_eq!(a.alloc(10, u64::MAX), Ok(80));
    assert_eq!(a.stats().nodes_used, 3);
    let storage = a.into_storage();
    assert_eq!(storage.len(), 5);
    assert_eq!(
        format!("{:?}", Node::default()),
        format!("{:?}", Node::EMPTY)
    );
}
