// SPDX-License-Identifier: GPL-2.0

//! Tests of the device page table against a reference model.
//!
//! The model is a `BTreeMap` from 4 KiB page number to `(pfn, perm, huge)`: one record
//! per mapped 4 KiB page, the pages of a huge entry flagged (they always come as a whole
//! aligned group of 512). From it the tests compute, independently of the table, what
//! every operation must return, which errors it must report, how many nodes it must
//! allocate, which huge entries it must split or drop, the exact `for_each` output, the
//! statistics, and the exact number of tables in use (one per non-empty 512 GiB, 1 GiB
//! and 4 KiB-populated 2 MiB region, plus the root): so a table that stays allocated
//! when empty, or a leak, is caught.
//!
//! The host pool ([`HostPool`]) checks the table's use of it: it counts accesses to nodes
//! that are not allocated (use after free, double free), fills every freed node with
//! junk (so a table that does not clear the nodes it allocates is caught), can refuse
//! allocations after a budget, and counts node reads (to bound the cost of operations).
//!
//! Properties:
//!
//! 1. `prop_model`: random sequences of `map` / `map_huge` / `invalidate` / `protect` /
//!    `clear` and arbitrary (mostly invalid) arguments over small windows (straddling
//!    2 MiB, 1 GiB, 512 GiB and 128 TiB boundaries, and at the top of the 48-bit space),
//!    with allocation failures injected; after each step the table is compared with the
//!    model;
//! 2. `prop_invalidate_all`: invalidating everything returns the model's page count and
//!    leaves no table, no node in the pool, and zero counters;
//! 3. `prop_for_each_break`: `for_each` stops at `ControlFlow::Break`.
//!
//! Then unit tests with explicit expectations.

use aikrs_hmm_core::{
    Error, Leaf, Node, PageTable, Perm, Pool, Protected, Stats, ENTRIES, HUGE_PAGES, HUGE_SIZE,
    MAX_ALLOCS_EDIT, MAX_ALLOCS_MAP, MAX_PFN, PAGE_SIZE, VA_END,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

const K4: u64 = PAGE_SIZE;
const M2: u64 = HUGE_SIZE;
const G1: u64 = 1 << 30;
const G512: u64 = 1 << 39;

const R: Perm = Perm::READ;
const RW: Perm = Perm::READ.union(Perm::WRITE);
const RWA: Perm = RW.union(Perm::ATOMIC);

// ---------------------------------------------------------------------------------------
// The host pool.

/// A pool of boxed nodes with a free list, failure injection and misuse detection.
struct HostPool {
    nodes: Vec<Box<Node>>,
    live: Vec<bool>,
    free_list: Vec<u32>,
    /// The number of allocated nodes.
    live_count: u64,
    /// `Some(n)`: the next `n` allocations succeed, then they fail.
    allow: Option<usize>,
    /// The number of refused allocations.
    failed: u64,
    /// Accesses to unallocated nodes, double frees.
    bad: Cell<u64>,
    /// Calls of `node`/`node_mut`.
    reads: Cell<u64>,
    /// What freed nodes are filled with.
    junk: Vec<Node>,
}

impl HostPool {
    fn plain() -> Self {
        HostPool {
            nodes: Vec::new(),
            live: Vec::new(),
            free_list: Vec::new(),
            live_count: 0,
            allow: None,
            failed: 0,
            bad: Cell::new(0),
            reads: Cell::new(0),
            junk: Vec::new(),
        }
    }

    /// A pool whose freed nodes are overwritten with nodes of a populated table (leaves
    /// and table entries naming other nodes).
    fn new() -> Self {
        let mut scratch = HostPool::plain();
        let mut t = PageTable::new();
        t.map_huge(&mut scratch, 0, 512, Perm::ALL).unwrap();
        t.map(&mut scratch, K4, 7, R).unwrap();
        t.map(&mut scratch, 3 * G512 + 5 * G1 + 7 * M2, 9, RW)
            .unwrap();
        t.map_huge(&mut scratch, 3 * G512 + 5 * G1 + 9 * M2, 1024, RW)
            .unwrap();
        let mut pool = HostPool::plain();
        pool.junk = scratch.nodes.iter().map(|n| (**n).clone()).collect();
        assert!(pool.junk.iter().all(|n| !n.is_empty()));
        pool
    }

    fn is_live(&self, idx: u32) -> bool {
        self.live.get(idx as usize).copied().unwrap_or(false)
    }
}

impl Pool for HostPool {
    fn alloc(&mut self) -> Option<u32> {
        if let Some(n) = self.allow {
            if n == 0 {
                self.failed += 1;
                return None;
            }
            self.allow = Some(n - 1);
        }
        self.live_count += 1;
        if let Some(idx) = self.free_list.pop() {
            self.live[idx as usize] = true;
            return Some(idx);
        }
        let idx = self.nodes.len() as u32;
        self.nodes.push(Box::new(Node::EMPTY));
        self.live.push(true);
        Some(idx)
    }

    fn free(&mut self, idx: u32) {
        if !self.is_live(idx) {
            self.bad.set(self.bad.get() + 1);
            return;
        }
        self.live[idx as usize] = false;
        if !self.junk.is_empty() {
            *self.nodes[idx as usize] = self.junk[idx as usize % self.junk.len()].clone();
        }
        self.free_list.push(idx);
        self.live_count -= 1;
    }

    fn node(&self, idx: u32) -> Option<&Node> {
        self.reads.set(self.reads.get() + 1);
        if !self.is_live(idx) {
            self.bad.set(self.bad.get() + 1);
            return None;
        }
        self.nodes.get(idx as usize).map(|n| &**n)
    }

    fn node_mut(&mut self, idx: u32) -> Option<&mut Node> {
        self.reads.set(self.reads.get() + 1);
        if !self.is_live(idx) {
            self.bad.set(self.bad.get() + 1);
            return None;
        }
        self.nodes.get_mut(idx as usize).map(|n| &mut **n)
    }
}

// ---------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MPage {
    pfn: u64,
    perm: Perm,
    huge: bool,
}

/// What an edit (`invalidate`/`protect`) must do.
#[derive(Debug, Default, PartialEq, Eq)]
struct EditOutcome {
    removed: u64,
    downgraded: u64,
    splits: u64,
    drops: u64,
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// 4 KiB page number (`va >> 12`) to its mapping.
    pages: BTreeMap<u64, MPage>,
}

impl Model {
    fn pages_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = (&u64, &MPage)> {
        self.pages.range(lo >> 12..hi >> 12)
    }

    fn any_in(&self, lo: u64, hi: u64) -> bool {
        self.pages_in(lo, hi).next().is_some()
    }

    /// The huge entry of the 2 MiB region at `va` (its first page), if any.
    fn huge_at(&self, va: u64) -> Option<MPage> {
        let base = va & !(M2 - 1);
        let (_, p) = self.pages_in(base, base + M2).next()?;
        p.huge.then_some(*p)
    }

    /// Whether the 2 MiB region at `va` has 4 KiB entries (then it has a level-0 table).
    fn has_small(&self, va: u64) -> bool {
        let base = va & !(M2 - 1);
        self.pages_in(base, base + M2).any(|(_, p)| !p.huge)
    }

    /// The number of nodes `map` (`huge == false`) or `map_huge` needs at `va`.
    fn allocs_needed(&self, va: u64, huge: bool) -> usize {
        if !huge && self.huge_at(va).is_some() {
            return 1;
        }
        let g512 = va & !(G512 - 1);
        let g1 = va & !(G1 - 1);
        usize::from(self.pages.is_empty())
            + usize::from(!self.any_in(g512, g512 + G512))
            + usize::from(!self.any_in(g1, g1 + G1))
            + usize::from(!huge && !self.has_small(va))
    }

    fn remove_range(&mut self, lo: u64, hi: u64) -> u64 {
        let keys: Vec<u64> = self.pages_in(lo, hi).map(|(&k, _)| k).collect();
        for k in &keys {
            self.pages.remove(k);
        }
        keys.len() as u64
    }

    fn unflag_huge(&mut self, va: u64) {
        let base = va & !(M2 - 1);
        for (_, p) in self.pages.range_mut(base >> 12..(base + M2) >> 12) {
            p.huge = false;
        }
    }

    fn map(&mut self, va: u64, pfn: u64, perm: Perm) {
        self.unflag_huge(va);
        let page = MPage {
            pfn,
            perm,
            huge: false,
        };
        self.pages.insert(va >> 12, page);
    }

    fn map_huge(&mut self, va: u64, pfn: u64, perm: Perm) {
        self.remove_range(va, va + M2);
        for i in 0..HUGE_PAGES {
            let page = MPage {
                pfn: pfn + i,
                perm,
                huge: true,
            };
            self.pages.insert((va >> 12) + i, page);
        }
    }

    /// Applies `invalidate` (`clear == None`) or `protect(clear)` to `[start, end)`,
    /// with `allow` allocations available, and returns what the table must report.
    fn edit(
        &mut self,
        start: u64,
        end: u64,
        clear: Option<Perm>,
        allow: Option<usize>,
    ) -> EditOutcome {
        let apply = |perm: Perm| match clear {
            None => None,
            Some(c) => {
                let p = perm.difference(c);
                p.contains(Perm::READ).then_some(p)
            }
        };
        let mut out = EditOutcome::default();
        // The huge entries that must be split: partially covered (only at the two ends),
        // and changed. The table splits them in ascending order.
        let mut partial = vec![start & !(M2 - 1), (end - 1) & !(M2 - 1)];
        partial.dedup();
        partial.retain(|&base| {
            let whole = start <= base && base + M2 <= end;
            match self.huge_at(base) {
                Some(p) => !whole && apply(p.perm) != Some(p.perm),
                None => false,
            }
        });
        let mut budget = allow.unwrap_or(usize::MAX);
        for base in partial {
            if budget > 0 {
                budget -= 1;
                out.splits += 1;
                self.unflag_huge(base);
            } else {
                out.drops += 1;
                out.removed += self.remove_range(base, base + M2);
            }
        }
        let keys: Vec<u64> = self.pages_in(start, end).map(|(&k, _)| k).collect();
        for k in keys {
            let p = self.pages[&k];
            match apply(p.perm) {
                None => {
                    self.pages.remove(&k);
                    out.removed += 1;
                }
                Some(np) if np != p.perm => {
                    self.pages.insert(k, MPage { perm: np, ..p });
                    out.downgraded += 1;
                }
                Some(_) => {}
            }
        }
        out
    }

    fn lookup(&self, va: u64) -> Option<Leaf> {
        self.pages.get(&(va >> 12)).map(|p| Leaf {
            pfn: p.pfn,
            perm: p.perm,
            huge: p.huge,
        })
    }

    /// The entries `for_each(start, end)` must visit.
    fn entries(&self, start: u64, end: u64) -> Vec<(u64, Leaf)> {
        let mut v = Vec::new();
        for (&pg, p) in self.pages.range((start & !(M2 - 1)) >> 12..end >> 12) {
            let va = pg << 12;
            if p.huge {
                if pg % HUGE_PAGES == 0 {
                    v.push((
                        va,
                        Leaf {
                            pfn: p.pfn,
                            perm: p.perm,
                            huge: true,
                        },
                    ));
                }
            } else if va >= start {
                v.push((
                    va,
                    Leaf {
                        pfn: p.pfn,
                        perm: p.perm,
                        huge: false,
                    },
                ));
            }
        }
        v
    }

    /// The statistics (without the cumulative split counters).
    fn stats(&self) -> (u64, u64, u64) {
        let small = self.pages.values().filter(|p| !p.huge).count() as u64;
        let huge = (self.pages.len() as u64 - small) / HUGE_PAGES;
        (small, huge, self.tables())
    }

    /// The number of nodes a minimal table holds.
    fn tables(&self) -> u64 {
        if self.pages.is_empty() {
            return 0;
        }
        let mut n = 1;
        let (mut l39, mut l30, mut l21) = (None, None, None);
        for (&pg, p) in &self.pages {
            let va = pg << 12;
            if l39 != Some(va >> 39) {
                l39 = Some(va >> 39);
                n += 1;
            }
            if l30 != Some(va >> 30) {
                l30 = Some(va >> 30);
                n += 1;
            }
            if !p.huge && l21 != Some(va >> 21) {
                l21 = Some(va >> 21);
                n += 1;
            }
        }
        n
    }
}

// ---------------------------------------------------------------------------------------
// The expected errors, written independently of the table.

fn map_error(va: u64, pfn: u64, perm: Perm, huge: bool) -> Option<Error> {
    let align = if huge { M2 } else { K4 };
    if va >= VA_END {
        Some(Error::OutOfRange)
    } else if va % align != 0 || (huge && pfn % HUGE_PAGES != 0) {
        Some(Error::Unaligned)
    } else if pfn > MAX_PFN || (huge && pfn + (HUGE_PAGES - 1) > MAX_PFN) {
        Some(Error::BadPfn)
    } else if !perm.contains(Perm::READ) {
        Some(Error::BadPerm)
    } else {
        None
    }
}

fn range_error(start: u64, end: u64) -> Option<Error> {
    if start > VA_END || end > VA_END {
        Some(Error::OutOfRange)
    } else if start % K4 != 0 || end % K4 != 0 {
        Some(Error::Unaligned)
    } else if end <= start {
        Some(Error::EmptyRange)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Checking a table against the model.

fn collect(t: &PageTable, pool: &HostPool, start: u64, end: u64) -> Vec<(u64, Leaf)> {
    let mut v = Vec::new();
    t.for_each(pool, start, end, |va, leaf| {
        v.push((va, leaf));
        ControlFlow::Continue(())
    })
    .unwrap();
    v
}

/// Compares everything observable with the model; `probes` are addresses to look up
/// (any value), `range` a range to compare `for_each` on.
fn check(t: &PageTable, pool: &HostPool, m: &Model, probes: &[u64], range: Option<(u64, u64)>) {
    assert_eq!(pool.bad.get(), 0, "pool misuse");
    let s = t.stats();
    let (small, huge, tables) = m.stats();
    assert_eq!(
        (s.pages, s.huge, s.tables),
        (small, huge, tables),
        "stats {s:?}"
    );
    assert_eq!(pool.live_count, s.tables, "live nodes");
    assert_eq!(t.is_empty(), m.pages.is_empty());
    assert_eq!(s.mapped_pages(), m.pages.len() as u64);

    let all = collect(t, pool, 0, VA_END);
    for w in all.windows(2) {
        assert!(w[0].0 + w[0].1.size() <= w[1].0, "order {w:?}");
    }
    for (va, leaf) in &all {
        if leaf.huge {
            assert_eq!(va % M2, 0);
            assert_eq!(leaf.pfn % HUGE_PAGES, 0);
        }
    }
    assert_eq!(all, m.entries(0, VA_END), "for_each");
    if let Some((start, end)) = range {
        if range_error(start, end).is_none() {
            assert_eq!(
                collect(t, pool, start, end),
                m.entries(start, end),
                "for_each range"
            );
        }
    }

    for &va in probes {
        assert_eq!(t.lookup(pool, va), m.lookup(va), "lookup {va:#x}");
    }
    // A sample of the mapped pages, at varying offsets in the page.
    let step = (m.pages.len() / 48).max(1);
    for (n, (&pg, _)) in m.pages.iter().enumerate().step_by(step) {
        let va = (pg << 12) + (n as u64 * 97) % K4;
        assert_eq!(t.lookup(pool, va), m.lookup(va), "lookup {va:#x}");
    }
}

/// Addresses around the ends of `[start, end)` and their 2 MiB regions.
fn probes(start: u64, end: u64) -> Vec<u64> {
    let mut v = Vec::new();
    for a in [
        start,
        end,
        start & !(M2 - 1),
        (end | (M2 - 1)).wrapping_add(1),
    ] {
        for d in [0, K4, 2 * K4] {
            v.push(a.wrapping_add(d));
            v.push(a.wrapping_sub(d));
        }
        v.push(a.wrapping_add(K4 - 1));
    }
    v
}

// ---------------------------------------------------------------------------------------
// Operations.

#[derive(Clone, Debug)]
enum Op {
    Map { va: u64, pfn: u64, perm: u8 },
    MapHuge { va: u64, pfn: u64, perm: u8 },
    Invalidate { start: u64, end: u64 },
    Protect { start: u64, end: u64, clear: u8 },
    Clear,
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    /// The pool's allocation budget for this step (`None`: unlimited).
    allow: Option<usize>,
}

/// Applies one step to the table and the model and checks the result.
fn apply(t: &mut PageTable, pool: &mut HostPool, m: &mut Model, step: &Step) {
    let before = t.stats();
    let failed = pool.failed;
    pool.allow = step.allow;
    let budget = step.allow.unwrap_or(usize::MAX);
    let (probe, range) = match step.op {
        Op::Map { va, pfn, perm } | Op::MapHuge { va, pfn, perm } => {
            let huge = matches!(step.op, Op::MapHuge { .. });
            let perm = Perm::from_bits_truncate(perm);
            let r = if huge {
                t.map_huge(pool, va, pfn, perm)
            } else {
                t.map(pool, va, pfn, perm)
            };
            if let Some(e) = map_error(va, pfn, perm, huge) {
                assert_eq!(r, Err(e));
                assert_eq!(t.stats(), before);
            } else {
                let need = m.allocs_needed(va, huge);
                assert!(need <= MAX_ALLOCS_MAP);
                if need > budget {
                    assert_eq!(r, Err(Error::NoMemory));
                    assert_eq!(t.stats(), before);
                    assert_eq!(pool.failed, failed + 1);
                } else {
                    assert_eq!(r, Ok(()));
                    let split = !huge && m.huge_at(va).is_some();
                    assert_eq!(t.stats().splits, before.splits + u64::from(split));
                    if huge {
                        m.map_huge(va, pfn, perm);
                    } else {
                        m.map(va, pfn, perm);
                    }
                }
            }
            let end = va.saturating_add(if huge { M2 } else { K4 });
            (probes(va, end), Some((va & !(K4 - 1), end & !(K4 - 1))))
        }
        Op::Invalidate { start, end } | Op::Protect { start, end, .. } => {
            let clear = match step.op {
                Op::Protect { clear, .. } => Some(Perm::from_bits_truncate(clear)),
                _ => None,
            };
            let r = match clear {
                None => t.invalidate(pool, start, end).map(|removed| Protected {
                    removed,
                    downgraded: 0,
                }),
                Some(c) => t.protect(pool, start, end, c),
            };
            if let Some(e) = range_error(start, end) {
                assert_eq!(r, Err(e));
                assert_eq!(t.stats(), before);
            } else {
                let exp = m.edit(start, end, clear, step.allow);
                assert!(exp.splits + exp.drops <= MAX_ALLOCS_EDIT as u64);
                let got = r.unwrap();
                assert_eq!((got.removed, got.downgraded), (exp.removed, exp.downgraded));
                let s = t.stats();
                assert_eq!(s.splits, before.splits + exp.splits, "splits");
                assert_eq!(s.split_failures, before.split_failures + exp.drops, "drops");
                assert_eq!(pool.failed, failed + exp.drops);
            }
            (probes(start, end), Some((start, end)))
        }
        Op::Clear => {
            t.clear(pool);
            m.pages.clear();
            assert_eq!(pool.live_count, 0);
            let s = t.stats();
            assert_eq!((s.pages, s.huge, s.tables), (0, 0, 0));
            (Vec::new(), None)
        }
    };
    pool.allow = None;
    check(t, pool, m, &probe, range);
}

// ---------------------------------------------------------------------------------------
// Strategies.

/// Windows of 8 MiB (2048 pages, 4 huge regions): at 0; at an address that is not
/// 2 MiB aligned; across 1 GiB, 512 GiB and 128 TiB (root index 255/256) boundaries; at
/// the top of the 48-bit space.
const WINDOWS: [u64; 6] = [
    0,
    0x5555_5550_0000 + 0x10_0000,
    G1 - 4 * M2 / 2,
    G512 - 4 * M2 / 2,
    (1 << 47) - 4 * M2 / 2,
    VA_END - 8 * M2 / 2,
];
const WIN_PAGES: u64 = 2048;

/// The windows a test case uses (one or two, so that operations meet).
type Wins = Vec<u64>;

fn wins() -> impl Strategy<Value = Wins> {
    prop::sample::subsequence(WINDOWS.to_vec(), 1..=2)
}

fn page(ws: &Wins) -> impl Strategy<Value = u64> {
    (prop::sample::select(ws.clone()), 0..WIN_PAGES).prop_map(|(w, p)| w + p * K4)
}

fn huge_va(ws: &Wins) -> impl Strategy<Value = u64> {
    (prop::sample::select(ws.clone()), 0..4u64).prop_map(|(w, r)| {
        let base = (w + M2 - 1) & !(M2 - 1);
        (base + r * M2).min(VA_END - M2)
    })
}

fn range(ws: &Wins) -> impl Strategy<Value = (u64, u64)> {
    let len = prop_oneof![1..4u64, 1..600u64, 1..=WIN_PAGES];
    // Ends at or near 2 MiB boundaries, so that huge entries are partially covered.
    let near = (0..5u64, -3..=3i64).prop_map(|(r, d)| (r * HUGE_PAGES).saturating_add_signed(d));
    prop_oneof![
        10 => (prop::sample::select(ws.clone()), 0..WIN_PAGES, len).prop_map(|(w, a, n)| {
            let b = (a + n).min(WIN_PAGES);
            (w + a * K4, w + b * K4)
        }),
        10 => (prop::sample::select(ws.clone()), near.clone(), near).prop_map(|(w, a, b)| {
            // Page numbers relative to the first 2 MiB boundary of the window.
            let base = (w + M2 - 1) & !(M2 - 1);
            let (a, b) = (a.min(b), a.max(b) + 1);
            ((base + a * K4).min(VA_END - K4), (base + b * K4).min(VA_END))
        }),
        1 => Just((0, VA_END)),
    ]
}

fn pfn() -> impl Strategy<Value = u64> {
    prop_oneof![0..1u64 << 20, MAX_PFN - (1 << 20)..=MAX_PFN]
}

fn perm() -> impl Strategy<Value = u8> {
    prop_oneof![9 => (0..16u8).prop_map(|b| b | 1), 1 => any::<u8>()]
}

fn clear() -> impl Strategy<Value = u8> {
    let wa = Perm::WRITE.union(Perm::ATOMIC).bits();
    prop_oneof![
        Just(wa),
        Just(Perm::ATOMIC.bits()),
        Just(Perm::READ.bits()),
        Just(0),
        any::<u8>()
    ]
}

/// Numbers for invalid (and occasionally valid) arguments.
fn raw() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0),
        Just(VA_END),
        Just(VA_END - K4),
        Just(VA_END - M2),
        Just(VA_END + K4),
        Just(MAX_PFN),
        Just(MAX_PFN + 1),
        Just(MAX_PFN + 1 - HUGE_PAGES),
        Just(u64::MAX),
        (0..1u64 << 24),
        (0..WIN_PAGES).prop_map(|p| p * K4),
    ]
}

fn op(ws: &Wins) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (page(ws), pfn(), perm()).prop_map(|(va, pfn, perm)| Op::Map { va, pfn, perm }),
        3 => (huge_va(ws), pfn(), perm()).prop_map(|(va, pfn, perm)| Op::MapHuge {
            va,
            pfn: pfn & !(HUGE_PAGES - 1),
            perm
        }),
        3 => range(ws).prop_map(|(start, end)| Op::Invalidate { start, end }),
        3 => (range(ws), clear()).prop_map(|((start, end), clear)| Op::Protect {
            start,
            end,
            clear
        }),
        1 => Just(Op::Clear),
        2 => (0..4u8, raw(), raw(), raw(), any::<u8>()).prop_map(|(k, a, b, c, p)| match k {
            0 => Op::Map { va: a, pfn: b, perm: p },
            1 => Op::MapHuge { va: a, pfn: b, perm: p },
            2 => Op::Invalidate { start: a, end: b },
            _ => Op::Protect { start: a, end: c, clear: p },
        }),
    ]
}

fn step(ws: &Wins) -> impl Strategy<Value = Step> {
    let allow = prop_oneof![2 => Just(None), 1 => (0..5usize).prop_map(Some)];
    (op(ws), allow).prop_map(|(op, allow)| Step { op, allow })
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    wins().prop_flat_map(move |ws| vec(step(&ws), 1..max))
}

proptest! {
    #![proptest_config(PropConfig::with_cases(512))]

    /// 1. The table behaves like the model after every step.
    #[test]
    fn prop_model(steps in steps(48)) {
        let mut pool = HostPool::new();
        let mut t = PageTable::new();
        let mut m = Model::default();
        for s in &steps {
            apply(&mut t, &mut pool, &mut m, s);
        }
    }

    /// 2. Invalidating everything returns the model's page count and frees everything.
    #[test]
    fn prop_invalidate_all(steps in steps(32), by_window in any::<bool>()) {
        let mut pool = HostPool::new();
        let mut t = PageTable::new();
        let mut m = Model::default();
        for s in &steps {
            apply(&mut t, &mut pool, &mut m, s);
        }
        let before = t.stats();
        let removed = if by_window {
            // Everything outside the windows (raw operations), then each window.
            let mut bounds = vec![0];
            for w in WINDOWS {
                bounds.push(w);
                bounds.push(w + WIN_PAGES * K4);
            }
            bounds.push(VA_END);
            bounds.sort();
            bounds.dedup();
            bounds.windows(2).map(|b| t.invalidate(&mut pool, b[0], b[1]).unwrap()).sum()
        } else {
            t.invalidate(&mut pool, 0, VA_END).unwrap()
        };
        prop_assert_eq!(removed, m.pages.len() as u64);
        let s = t.stats();
        prop_assert_eq!((s.pages, s.huge, s.tables), (0, 0, 0));
        prop_assert_eq!((s.splits, s.split_failures), (before.splits, before.split_failures));
        prop_assert_eq!(pool.live_count, 0);
        prop_assert_eq!(pool.bad.get(), 0);
        prop_assert!(t.is_empty());
        prop_assert_eq!(collect(&t, &pool, 0, VA_END), vec![]);
    }

    /// 3. `for_each` visits a prefix of the entries and stops at `Break`.
    #[test]
    fn prop_for_each_break(steps in steps(24), stop in 0..64usize) {
        let mut pool = HostPool::new();
        let mut t = PageTable::new();
        let mut m = Model::default();
        for s in &steps {
            apply(&mut t, &mut pool, &mut m, s);
        }
        let all = m.entries(0, VA_END);
        let mut got = Vec::new();
        t.for_each(&pool, 0, VA_END, |va, leaf| {
            got.push((va, leaf));
            if got.len() > stop {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        prop_assert_eq!(&got[..], &all[..all.len().min(stop + 1)]);
    }
}

// ---------------------------------------------------------------------------------------
// Unit tests.

fn setup() -> (HostPool, PageTable) {
    (HostPool::new(), PageTable::new())
}

fn leaf(pfn: u64, perm: Perm, huge: bool) -> Option<Leaf> {
    Some(Leaf { pfn, perm, huge })
}

#[test]
fn node_is_one_page() {
    assert_eq!(core::mem::size_of::<Node>(), 4096);
    assert_eq!(ENTRIES, 512);
    assert!(Node::EMPTY.is_empty());
    assert!(Node::default().is_empty());
}

#[test]
fn perm_bits() {
    assert_eq!(Perm::from_bits(0x10), None);
    assert_eq!(Perm::from_bits(0x5), Some(Perm::READ | Perm::ATOMIC));
    assert_eq!(Perm::from_bits_truncate(0xff), Perm::ALL);
    assert_eq!(RWA.difference(Perm::WRITE), Perm::READ | Perm::ATOMIC);
    assert_eq!(RWA & Perm::WRITE, Perm::WRITE);
    assert!(RWA.contains(RW));
    assert!(!RW.contains(RWA));
    assert!(Perm::NONE.is_empty());
}

#[test]
fn map_lookup() {
    let (mut pool, mut t) = setup();
    assert!(t.is_empty());
    assert_eq!(t.lookup(&pool, 0x1234_5000), None);
    t.map(&mut pool, 0x1234_5000, 42, RW).unwrap();
    assert_eq!(t.lookup(&pool, 0x1234_5000), leaf(42, RW, false));
    assert_eq!(t.lookup(&pool, 0x1234_5fff), leaf(42, RW, false));
    assert_eq!(t.lookup(&pool, 0x1234_4fff), None);
    assert_eq!(t.lookup(&pool, 0x1234_6000), None);
    assert_eq!(t.stats().tables, 4);
    assert_eq!(pool.live_count, 4);
    // Replacement.
    t.map(&mut pool, 0x1234_5000, 43, R | Perm::DEVICE).unwrap();
    assert_eq!(
        t.lookup(&pool, 0x1234_5000),
        leaf(43, R | Perm::DEVICE, false)
    );
    // A neighbour shares all the tables.
    t.map(&mut pool, 0x1234_6000, 44, R).unwrap();
    let s = t.stats();
    assert_eq!((s.pages, s.huge, s.tables), (2, 0, 4));
    // The last page of the space, the largest pfn.
    t.map(&mut pool, VA_END - K4, MAX_PFN, RWA).unwrap();
    assert_eq!(t.lookup(&pool, VA_END - 1), leaf(MAX_PFN, RWA, false));
    assert_eq!(t.lookup(&pool, VA_END), None);
    assert_eq!(t.lookup(&pool, u64::MAX), None);
    assert_eq!(t.stats().tables, 7);
    assert_eq!(pool.bad.get(), 0);
}

#[test]
fn huge_lookup_every_index() {
    let (mut pool, mut t) = setup();
    let va = 5 * G1 + 3 * M2;
    t.map_huge(&mut pool, va, 1 << 20, RW).unwrap();
    for i in 0..HUGE_PAGES {
        assert_eq!(t.lookup(&pool, va + i * K4), leaf((1 << 20) + i, RW, true));
        assert_eq!(
            t.lookup(&pool, va + i * K4 + 123),
            leaf((1 << 20) + i, RW, true)
        );
    }
    assert_eq!(t.lookup(&pool, va - 1), None);
    assert_eq!(t.lookup(&pool, va + M2), None);
    let s = t.stats();
    assert_eq!((s.pages, s.huge, s.tables), (0, 1, 3));
    assert_eq!(
        collect(&t, &pool, va + 7 * K4, va + 8 * K4),
        vec![(
            va,
            Leaf {
                pfn: 1 << 20,
                perm: RW,
                huge: true
            }
        )]
    );
    // The last huge page of the space, the largest aligned pfn.
    let top = MAX_PFN + 1 - HUGE_PAGES;
    t.map_huge(&mut pool, VA_END - M2, top, R).unwrap();
    assert_eq!(t.lookup(&pool, VA_END - 1), leaf(MAX_PFN, R, true));
}

#[test]
fn split_on_4k_map_inside_huge() {
    let (mut pool, mut t) = setup();
    let va = 7 * M2;
    t.map_huge(&mut pool, va, 512 * 3, RWA).unwrap();
    t.map(&mut pool, va + 100 * K4, 9, R).unwrap();
    let s = t.stats();
    assert_eq!((s.pages, s.huge, s.tables, s.splits), (512, 0, 4, 1));
    for i in 0..HUGE_PAGES {
        let want = if i == 100 {
            leaf(9, R, false)
        } else {
            leaf(512 * 3 + i, RWA, false)
        };
        assert_eq!(t.lookup(&pool, va + i * K4), want, "page {i}");
    }
    assert_eq!(collect(&t, &pool, 0, VA_END).len(), 512);
    // Mapping huge again frees the level-0 table.
    t.map_huge(&mut pool, va, 0, R).unwrap();
    let s = t.stats();
    assert_eq!((s.pages, s.huge, s.tables), (0, 1, 3));
    assert_eq!(pool.live_count, 3);
    assert_eq!(pool.bad.get(), 0);
}

#[test]
fn invalidate_partial_huge() {
    let (mut pool, mut t) = setup();
    let va = G1 + 2 * M2;
    t.map_huge(&mut pool, va, 1024, RW).unwrap();
    // The middle: split, 10 pages removed.
    assert_eq!(t.invalidate(&mut pool, va + 20 * K4, va + 30 * K4), Ok(10));
    let s = t.stats();
    assert_eq!(
        (s.pages, s.huge, s.tables, s.splits, s.split_failures),
        (502, 0, 4, 1, 0)
    );
    for i in 0..HUGE_PAGES {
        let want = if (20..30).contains(&i) {
            None
        } else {
            leaf(1024 + i, RW, false)
        };
        assert_eq!(t.lookup(&pool, va + i * K4), want, "page {i}");
    }
    // Across the end of the huge page into an empty neighbour.
    assert_eq!(
        t.invalidate(&mut pool, va + 500 * K4, va + M2 + 50 * K4),
        Ok(12)
    );
    assert_eq!(t.stats().pages, 490);
    // The rest: the level-0 table and every table above are freed.
    assert_eq!(t.invalidate(&mut pool, va, va + M2), Ok(490));
    assert_eq!(t.stats().tables, 0);
    assert_eq!(pool.live_count, 0);
    assert!(t.is_empty());
}

#[test]
fn invalidate_partial_huge_without_memory_drops_it() {
    let (mut pool, mut t) = setup();
    let va = 4 * M2;
    t.map_huge(&mut pool, va, 0, RW).unwrap();
    t.map_huge(&mut pool, va + M2, 512, RW).unwrap();
    pool.allow = Some(1);
    // Both ends partially cover a huge page: the first split succeeds, the second fails.
    let r = t.invalidate(&mut pool, va + 511 * K4, va + M2 + K4);
    assert_eq!(r, Ok(1 + 512));
    assert_eq!(pool.failed, 1);
    let s = t.stats();
    assert_eq!(
        (s.pages, s.huge, s.splits, s.split_failures),
        (511, 0, 1, 1)
    );
    assert_eq!(t.lookup(&pool, va + 510 * K4), leaf(510, RW, false));
    assert_eq!(t.lookup(&pool, va + 511 * K4), None);
    assert_eq!(t.lookup(&pool, va + M2 + K4), None);
    assert_eq!(pool.live_count, s.tables);
}

#[test]
fn protect() {
    let (mut pool, mut t) = setup();
    let va = 3 * M2;
    t.map_huge(&mut pool, va, 512, RWA).unwrap();
    t.map(&mut pool, va + M2, 5, RWA | Perm::DEVICE).unwrap();
    t.map(&mut pool, va + M2 + K4, 6, R).unwrap();
    let wa = Perm::WRITE | Perm::ATOMIC;
    // Whole huge page and both small pages: write-protected, nothing split.
    let r = t.protect(&mut pool, va, va + M2 + 2 * K4, wa).unwrap();
    assert_eq!(
        r,
        Protected {
            downgraded: 513,
            removed: 0
        }
    );
    assert_eq!(t.stats().splits, 0);
    assert_eq!(t.lookup(&pool, va + 3 * K4), leaf(515, R, true));
    assert_eq!(t.lookup(&pool, va + M2), leaf(5, R | Perm::DEVICE, false));
    // Again: nothing changes, and no split of the partially covered huge page.
    let r = t.protect(&mut pool, va + K4, va + M2 + 2 * K4, wa).unwrap();
    assert_eq!(r, Protected::default());
    assert_eq!(t.stats().splits, 0);
    // Losing READ removes; partially covering the huge page splits it.
    let r = t
        .protect(&mut pool, va + 510 * K4, va + M2 + K4, R)
        .unwrap();
    assert_eq!(
        r,
        Protected {
            downgraded: 0,
            removed: 3
        }
    );
    let s = t.stats();
    assert_eq!((s.pages, s.huge, s.splits), (511, 0, 1));
    assert_eq!(t.lookup(&pool, va + 509 * K4), leaf(512 + 509, R, false));
    assert_eq!(t.lookup(&pool, va + 510 * K4), None);
    assert_eq!(t.lookup(&pool, va + M2), None);
    assert_eq!(t.lookup(&pool, va + M2 + K4), leaf(6, R, false));
    // An empty set to clear changes nothing.
    assert_eq!(
        t.protect(&mut pool, 0, VA_END, Perm::NONE),
        Ok(Protected::default())
    );
    // Everything loses READ: everything goes, tables too.
    let r = t.protect(&mut pool, 0, VA_END, Perm::ALL).unwrap();
    assert_eq!(
        r,
        Protected {
            downgraded: 0,
            removed: 511
        }
    );
    assert_eq!(t.stats().tables, 0);
    assert_eq!(pool.live_count, 0);
}

#[test]
fn protect_partial_huge_without_memory_drops_it() {
    let (mut pool, mut t) = setup();
    t.map_huge(&mut pool, 0, 0, RWA).unwrap();
    pool.allow = Some(0);
    let r = t.protect(&mut pool, K4, 2 * K4, Perm::ATOMIC).unwrap();
    assert_eq!(
        r,
        Protected {
            downgraded: 0,
            removed: 512
        }
    );
    let s = t.stats();
    assert_eq!((s.huge, s.tables, s.split_failures), (0, 0, 1));
    assert_eq!(pool.live_count, 0);
}

#[test]
fn bad_arguments() {
    let (mut pool, mut t) = setup();
    t.map(&mut pool, 0, 1, R).unwrap();
    let before = t.stats();
    let e = |r: Result<(), Error>| r.unwrap_err();
    // map
    assert_eq!(e(t.map(&mut pool, VA_END, 0, R)), Error::OutOfRange);
    assert_eq!(e(t.map(&mut pool, u64::MAX, 0, R)), Error::OutOfRange);
    assert_eq!(e(t.map(&mut pool, 0x1001, 0, R)), Error::Unaligned);
    assert_eq!(e(t.map(&mut pool, K4, MAX_PFN + 1, R)), Error::BadPfn);
    assert_eq!(e(t.map(&mut pool, K4, 0, RW.difference(R))), Error::BadPerm);
    assert_eq!(e(t.map(&mut pool, K4, 0, Perm::NONE)), Error::BadPerm);
    // map_huge
    assert_eq!(e(t.map_huge(&mut pool, VA_END, 0, R)), Error::OutOfRange);
    assert_eq!(e(t.map_huge(&mut pool, K4, 0, R)), Error::Unaligned);
    assert_eq!(e(t.map_huge(&mut pool, M2, 1, R)), Error::Unaligned);
    assert_eq!(e(t.map_huge(&mut pool, M2, MAX_PFN + 1, R)), Error::BadPfn);
    assert_eq!(
        e(t.map_huge(&mut pool, M2, 512, Perm::WRITE)),
        Error::BadPerm
    );
    // ranges
    for (start, end, want) in [
        (0, VA_END + K4, Error::OutOfRange),
        (VA_END + K4, VA_END + 2 * K4, Error::OutOfRange),
        (u64::MAX - 4095, u64::MAX, Error::OutOfRange),
        (0, 1, Error::Unaligned),
        (1, K4, Error::Unaligned),
        (K4, K4, Error::EmptyRange),
        (2 * K4, K4, Error::EmptyRange),
        (VA_END, VA_END, Error::EmptyRange),
    ] {
        assert_eq!(t.invalidate(&mut pool, start, end), Err(want));
        assert_eq!(t.protect(&mut pool, start, end, Perm::ALL), Err(want));
        assert_eq!(
            t.for_each(&pool, start, end, |_, _| ControlFlow::Continue(())),
            Err(want)
        );
    }
    assert_eq!(t.stats(), before);
    assert_eq!(t.lookup(&pool, 0), leaf(1, R, false));
    // NoMemory
    pool.allow = Some(0);
    assert_eq!(e(t.map(&mut pool, G1, 0, R)), Error::NoMemory);
    assert_eq!(e(t.map_huge(&mut pool, G1, 0, R)), Error::NoMemory);
    assert_eq!(t.stats(), before);
}

#[test]
fn pool_exhaustion_leaves_table_unchanged() {
    // An empty table needs 4 nodes for a 4 KiB page: fail at each of them.
    for allow in 0..4 {
        let (mut pool, mut t) = setup();
        pool.allow = Some(allow);
        assert_eq!(
            t.map(&mut pool, 3 * G512 + 5 * K4, 1, R),
            Err(Error::NoMemory)
        );
        assert_eq!(t.stats(), Stats::default());
        assert!(t.is_empty());
        assert_eq!(pool.live_count, 0);
        assert_eq!(pool.bad.get(), 0);
    }
    // With existing tables: fail at level 1 and level 0 below an existing root.
    for allow in 0..2 {
        let (mut pool, mut t) = setup();
        t.map(&mut pool, 0, 1, R).unwrap();
        let before = t.stats();
        pool.allow = Some(allow);
        assert_eq!(t.map(&mut pool, 7 * G1, 2, R), Err(Error::NoMemory));
        assert_eq!(t.stats(), before);
        assert_eq!(pool.live_count, before.tables);
        assert_eq!(
            collect(&t, &pool, 0, VA_END),
            vec![(
                0,
                Leaf {
                    pfn: 1,
                    perm: R,
                    huge: false
                }
            )]
        );
    }
    // A split of a huge page that cannot allocate: the huge page stays.
    let (mut pool, mut t) = setup();
    t.map_huge(&mut pool, M2, 512, RW).unwrap();
    let before = t.stats();
    pool.allow = Some(0);
    assert_eq!(t.map(&mut pool, M2 + K4, 7, R), Err(Error::NoMemory));
    assert_eq!(t.stats(), before);
    assert_eq!(t.lookup(&pool, M2 + K4), leaf(513, RW, true));
    pool.allow = None;
    t.map(&mut pool, M2 + K4, 7, R).unwrap();
    assert_eq!(t.lookup(&pool, M2 + K4), leaf(7, R, false));
}

#[test]
fn tables_freed_after_invalidating_everything() {
    let (mut pool, mut t) = setup();
    let mut m = Model::default();
    for (w, base) in WINDOWS.iter().enumerate() {
        for i in 0..300u64 {
            t.map(&mut pool, base + i * 6 * K4, i, RW).unwrap();
            m.map(base + i * 6 * K4, i, RW);
        }
        let huge = (base + 3 * M2) & !(M2 - 1);
        t.map_huge(&mut pool, huge, w as u64 * 512, R).unwrap();
        m.map_huge(huge, w as u64 * 512, R);
    }
    let n = m.pages.len() as u64;
    assert_eq!(t.stats().tables, m.tables());
    assert!(t.stats().tables > 20);
    assert_eq!(pool.live_count, t.stats().tables);
    assert_eq!(t.invalidate(&mut pool, 0, VA_END), Ok(n));
    assert_eq!(t.stats().tables, 0);
    assert_eq!(pool.live_count, 0);
    // Churn: repeating the same maps and unmaps reuses the same nodes, never more.
    let mut high = None;
    for _ in 0..3 {
        for base in WINDOWS {
            for i in 0..300u64 {
                t.map(&mut pool, base + i * 6 * K4, i, RW).unwrap();
            }
        }
        for base in WINDOWS {
            for i in 0..300u64 {
                let va = base + i * 6 * K4;
                assert_eq!(t.invalidate(&mut pool, va, va + K4), Ok(1));
            }
        }
        assert_eq!(t.stats().tables, 0);
        assert_eq!(pool.live_count, 0);
        assert_eq!(*high.get_or_insert(pool.nodes.len()), pool.nodes.len());
    }
    assert_eq!(pool.bad.get(), 0);
}

#[test]
fn clear_and_reuse_dirty_nodes() {
    let (mut pool, mut t) = setup();
    t.map_huge(&mut pool, 0, 0, R).unwrap();
    t.map(&mut pool, M2 + K4, 1, R).unwrap();
    t.map(&mut pool, VA_END - K4, 2, R).unwrap();
    t.map(&mut pool, 0, 3, R).unwrap();
    t.clear(&mut pool);
    assert_eq!(pool.live_count, 0);
    assert!(t.is_empty());
    assert_eq!(t.stats().splits, 1);
    // The freed nodes hold junk: a reused node must come back empty.
    t.map(&mut pool, 5 * K4, 4, R).unwrap();
    assert_eq!(
        collect(&t, &pool, 0, VA_END),
        vec![(
            5 * K4,
            Leaf {
                pfn: 4,
                perm: R,
                huge: false
            }
        )]
    );
    assert_eq!(t.lookup(&pool, 0), None);
    assert_eq!(t.lookup(&pool, K4), None);
    assert_eq!(pool.bad.get(), 0);
}

#[test]
fn for_each_order_and_huge_once() {
    let (mut pool, mut t) = setup();
    t.map(&mut pool, VA_END - K4, 1, R).unwrap();
    t.map_huge(&mut pool, G512, 512, RW).unwrap();
    t.map(&mut pool, K4, 2, R).unwrap();
    t.map(&mut pool, 0, 3, R).unwrap();
    let all = collect(&t, &pool, 0, VA_END);
    let vas: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(vas, vec![0, K4, G512, VA_END - K4]);
    assert_eq!(
        all[2].1,
        Leaf {
            pfn: 512,
            perm: RW,
            huge: true
        }
    );
    assert_eq!(all[2].1.pages(), 512);
    assert_eq!(all[2].1.size(), M2);
    // A range inside the huge page still reports it once, at its own address.
    assert_eq!(collect(&t, &pool, G512 + M2 - K4, VA_END).len(), 2);
    assert_eq!(
        collect(&t, &pool, K4, G512),
        vec![(
            K4,
            Leaf {
                pfn: 2,
                perm: R,
                huge: false
            }
        )]
    );
}

/// Operations only read the nodes on their path and in their range.
#[test]
fn cost_is_local() {
    let (mut pool, mut t) = setup();
    // 64 level-0 tables of 512 pages each, in one 1 GiB region, and a huge page.
    for r in 0..64u64 {
        for i in 0..512u64 {
            t.map(&mut pool, r * M2 + i * K4, i, R).unwrap();
        }
    }
    t.map_huge(&mut pool, 100 * M2, 0, R).unwrap();
    t.map(&mut pool, VA_END - K4, 0, R).unwrap();
    let reads = |pool: &HostPool| pool.reads.get();

    let r0 = reads(&pool);
    assert_eq!(t.lookup(&pool, 17 * M2 + 5 * K4), leaf(5, R, false));
    assert!(reads(&pool) - r0 <= 4);

    let r0 = reads(&pool);
    assert_eq!(
        t.invalidate(&mut pool, 17 * M2 + 5 * K4, 17 * M2 + 7 * K4),
        Ok(2)
    );
    assert!(reads(&pool) - r0 <= 16, "{}", reads(&pool) - r0);

    let r0 = reads(&pool);
    t.protect(&mut pool, 30 * M2, 30 * M2 + 3 * K4, Perm::ALL)
        .unwrap();
    assert!(reads(&pool) - r0 <= 16, "{}", reads(&pool) - r0);

    // An empty part of the space: only the root's slots in the range.
    let r0 = reads(&pool);
    assert_eq!(t.invalidate(&mut pool, 2 * G512, 3 * G512), Ok(0));
    assert!(reads(&pool) - r0 <= 4, "{}", reads(&pool) - r0);

    // Whole level-0 tables are dropped without reading them.
    let r0 = reads(&pool);
    assert_eq!(t.invalidate(&mut pool, 40 * M2, 50 * M2), Ok(10 * 512));
    assert!(reads(&pool) - r0 <= 32, "{}", reads(&pool) - r0);

    // Everything: bounded by the slots of the few upper tables and the used level-0
    // slots, not by the 2^36 pages of the space.
    let r0 = reads(&pool);
    let n = t.stats().mapped_pages();
    assert_eq!(t.invalidate(&mut pool, 0, VA_END), Ok(n));
    assert!(reads(&pool) - r0 <= 4 * 512 + 64, "{}", reads(&pool) - r0);
    assert_eq!(pool.live_count, 0);
}
