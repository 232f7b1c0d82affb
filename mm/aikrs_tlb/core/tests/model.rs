// SPDX-License-Identifier: GPL-2.0

//! Tests of the TLB flush planner against a reference model.
//!
//! The model is the set of `(space, stride_shift, page address)` of every requested page
//! (plus the set of requested CPUs and the request count). Requests come from small
//! windows, so that the sets stay small: 256 pages of 4 KiB, 4 of 2 MiB or 1 of 1 GiB,
//! near the bottom and the top of the user space and of the kernel space, for the
//! x86-64 4-level and 5-level layouts. The model computes the expected merged ranges (the
//! maximal runs of its pages) and the expected action from the rules of the module
//! documentation, independently of the planner.
//!
//! Properties (each its own test):
//!
//! 1. `prop_coverage`: the action flushes every requested page;
//! 2. `prop_exact_ranges`: the plan's ranges hold exactly the requested pages, sorted,
//!    disjoint and not adjacent within one `(space, stride)`;
//! 3. `prop_action_rule`: the action is the one the ceiling rule gives, for ceilings
//!    `0..=64`, the default 33, and ceilings within 2 of the number the rule compares;
//! 4. `prop_cpus_and_counts`: CPUs, `requests`, `merged`, `pages`, `rounds()`;
//! 5. `prop_bad_input_changes_nothing`: each kind of invalid request gets its error and
//!    leaves the batch as if it had never been made; full storage gets `Full`;
//! 6. `prop_never_panics`: arbitrary numbers, configurations and operation sequences,
//!    checked against an interval model;
//! 7. `prop_plan_clear_reuse`: plan, add more, plan again, clear, reuse; planning twice
//!    gives the same plan;
//! 8. `scale_*`: 4096 (and 65536) single-page requests in random order with duplicates.
//!
//! Then unit tests with explicit expected plans.

use aikrs_tlb_core::{
    Action, AddError, Batch, Config, CpuSet, Plan, Range, Space, CPU_WORDS, DEFAULT_CEILING,
    MAX_CPUS,
};
use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const K4: u64 = 1 << 12;
const M2: u64 = 1 << 21;
const G1: u64 = 1 << 30;

/// x86-64 with 5-level paging.
const LA57: Config = Config {
    ceiling: DEFAULT_CEILING,
    user_end: 0x00ff_ffff_ffff_f000,
    kernel_start: 0xff00_0000_0000_0000,
};

/// The user spaces the tests use (ids: small numbers and a pointer-like value).
const SPACES: [Space; 4] = [
    Space::Kernel,
    Space::User(1),
    Space::User(0xffff_8881_0234_5600),
    Space::User(0),
];

// ---------------------------------------------------------------------------------------
// Requests and the page model.

/// One `add` call.
#[derive(Clone, Debug)]
struct Req {
    space: Space,
    start: u64,
    end: u64,
    stride: u8,
    /// The words of the CPU mask, possibly more than `CPU_WORDS` (the rest is ignored).
    cpus: Vec<u64>,
}

impl Req {
    fn add(&self, batch: &mut Batch<'_>) -> Result<(), AddError> {
        batch.add(
            self.space,
            self.start,
            self.end,
            self.stride,
            &CpuSet::from_words(&self.cpus),
        )
    }
}

/// The CPUs of a mask given as words: bit `b` of word `w < CPU_WORDS` is CPU `64 w + b`.
fn mask_cpus(words: &[u64]) -> BTreeSet<u32> {
    let mut cpus = BTreeSet::new();
    for (w, &word) in words.iter().enumerate().take(CPU_WORDS) {
        let mut bits = word;
        while bits != 0 {
            cpus.insert(w as u32 * 64 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    cpus
}

/// Every requested page, the requested CPUs, the number of requests.
#[derive(Clone, Debug, Default)]
struct Model {
    pages: BTreeSet<(Space, u8, u64)>,
    cpus: BTreeSet<u32>,
    requests: u64,
}

impl Model {
    fn add(&mut self, r: &Req) {
        let size = 1u64 << r.stride;
        let mut a = r.start;
        while a < r.end {
            self.pages.insert((r.space, r.stride, a));
            a += size;
        }
        self.cpus.extend(mask_cpus(&r.cpus));
        self.requests += 1;
    }

    /// The maximal runs of consecutive pages of one `(space, stride)`, in set order.
    fn runs(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for &(space, stride, addr) in &self.pages {
            let end = addr + (1u64 << stride);
            match out.last_mut() {
                Some(last)
                    if last.space == space && last.stride_shift == stride && last.end == addr =>
                {
                    last.end = end;
                }
                _ => out.push(Range {
                    space,
                    start: addr,
                    end,
                    stride_shift: stride,
                }),
            }
        }
        out
    }

    fn cpu_set(&self) -> CpuSet {
        let mut set = CpuSet::new();
        for &c in &self.cpus {
            assert!(set.set(c));
        }
        set
    }

    /// The number that the ceiling rule compares: the page count of a kernel-only
    /// batch, the span pages of a single user space; `None` otherwise.
    fn ceiling_count(&self) -> Option<u64> {
        let first = self.pages.first()?.0;
        if self.pages.iter().any(|p| p.0 != first) {
            return None;
        }
        if first == Space::Kernel {
            return Some(self.pages.len() as u64);
        }
        let start = self.pages.iter().map(|p| p.2).min()?;
        let end = self.pages.iter().map(|p| p.2 + (1u64 << p.1)).max()?;
        let stride_shift = self.pages.iter().map(|p| p.1).min()?;
        Some((end - start) >> stride_shift)
    }

    /// The action of the rules, from the pages alone.
    fn action(&self, ceiling: u64) -> Action {
        if self.pages.is_empty() {
            return Action::None;
        }
        let kernel = self.pages.iter().any(|p| p.0 == Space::Kernel);
        let users: BTreeSet<u64> = self
            .pages
            .iter()
            .filter_map(|p| match p.0 {
                Space::User(id) => Some(id),
                Space::Kernel => None,
            })
            .collect();
        if kernel && !users.is_empty() {
            return Action::FullAll;
        }
        if kernel {
            return if self.pages.len() as u64 <= ceiling {
                Action::KernelPages
            } else {
                Action::FullAll
            };
        }
        if users.len() >= 2 {
            return Action::UsersFull;
        }
        let space = *users.first().unwrap();
        let start = self.pages.iter().map(|p| p.2).min().unwrap();
        let end = self
            .pages
            .iter()
            .map(|p| p.2 + (1u64 << p.1))
            .max()
            .unwrap();
        let stride_shift = self.pages.iter().map(|p| p.1).min().unwrap();
        user_action(space, start, end, stride_shift, ceiling)
    }
}

/// The expected action for one user space whose requests span `[start, end)` at the
/// smallest stride `stride_shift`.
fn user_action(space: u64, start: u64, end: u64, stride_shift: u8, ceiling: u64) -> Action {
    if (end - start) >> stride_shift <= ceiling {
        Action::UserSpan {
            space,
            start,
            end,
            stride_shift,
        }
    } else {
        Action::UserFull { space }
    }
}

/// An owned copy of a plan, to compare plans.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snap {
    action: Action,
    ranges: Vec<Range>,
    cpus: CpuSet,
    requests: u64,
    merged: u64,
    pages: u64,
    rounds: u32,
    is_full: bool,
}

fn snap(p: &Plan<'_>) -> Snap {
    Snap {
        action: p.action,
        ranges: p.ranges.to_vec(),
        cpus: p.cpus,
        requests: p.requests,
        merged: p.merged,
        pages: p.pages,
        rounds: p.rounds(),
        is_full: p.is_full(),
    }
}

/// The pages of `ranges`; fails on a range too large to expand.
fn expand(ranges: &[Range]) -> Result<BTreeSet<(Space, u8, u64)>, TestCaseError> {
    let mut pages = BTreeSet::new();
    for r in ranges {
        prop_assert!(
            (12..=30).contains(&r.stride_shift) && r.start < r.end,
            "invalid range {:?}",
            r
        );
        prop_assert!(r.pages() <= 1 << 16, "range far too large: {:?}", r);
        let mut a = r.start;
        while a < r.end {
            pages.insert((r.space, r.stride_shift, a));
            a += 1u64 << r.stride_shift;
        }
    }
    Ok(pages)
}

/// Sorted by `(space, stride, start)`; disjoint and not adjacent within `(space, stride)`.
fn check_sorted_disjoint(ranges: &[Range]) -> Result<(), TestCaseError> {
    for w in ranges.windows(2) {
        let (a, b) = (w[0], w[1]);
        prop_assert!(
            (a.space, a.stride_shift, a.start) < (b.space, b.stride_shift, b.start),
            "not sorted: {:?} then {:?}",
            a,
            b
        );
        if a.space == b.space && a.stride_shift == b.stride_shift {
            prop_assert!(
                b.start > a.end,
                "overlapping or adjacent: {:?} and {:?}",
                a,
                b
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Strategies.

fn cfg_strategy() -> impl Strategy<Value = Config> {
    (
        prop_oneof![1 => Just(DEFAULT_CEILING), 3 => 0u64..=64],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(ceiling, la57)| Config {
            ceiling,
            ..if la57 { LA57 } else { Config::X86_64 }
        })
}

/// Where a request lies.
#[derive(Clone, Copy, Debug)]
enum Window {
    Low,
    High,
}

/// The first page and the number of pages of a window of `stride` in `space`.
fn window(cfg: &Config, space: Space, w: Window, stride: u8) -> (u64, u64) {
    let size = 1u64 << stride;
    let n = match stride {
        12 => 256,
        21 => 4,
        _ => 1,
    };
    let base = match (space, w) {
        (Space::User(_), Window::Low) => {
            if stride == 30 {
                0x4000_0000
            } else {
                0x1000_0000
            }
        }
        (Space::User(_), Window::High) => (cfg.user_end & !(size - 1)) - n * size,
        (Space::Kernel, Window::Low) => cfg.kernel_start,
        // The last nameable pages of the 64-bit space (`end` is exclusive).
        (Space::Kernel, Window::High) => (!(size - 1)) - n * size,
    };
    (base, n)
}

/// A valid request in `space` at `cfg`, from raw numbers.
fn make_req(
    cfg: &Config,
    space: Space,
    w: Window,
    stride: u8,
    off: u64,
    count: u64,
    cpus: Vec<u64>,
) -> Req {
    let (base, n) = window(cfg, space, w, stride);
    let off = off % n;
    let count = 1 + count % (n - off);
    let size = 1u64 << stride;
    Req {
        space,
        start: base + off * size,
        end: base + (off + count) * size,
        stride,
        cpus,
    }
}

/// A CPU mask of up to `max_words` words (`max_words > CPU_WORDS` tests truncation).
fn mask_strategy(max_words: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![
            2 => Just(0u64),
            2 => (0u32..64).prop_map(|b| 1u64 << b),
            1 => any::<u64>(),
        ],
        0..=max_words,
    )
}

/// Valid requests in the spaces of `pool`: mostly 4 KiB pages, few huge pages, mostly
/// short ranges (so that the page counts fall on both sides of the ceilings).
fn req_strategy(cfg: Config, pool: Vec<Space>, max_words: usize) -> impl Strategy<Value = Req> {
    (
        prop::sample::select(pool),
        prop::bool::weighted(0.7),
        prop_oneof![12 => Just(12u8), 3 => Just(21u8), 1 => Just(30u8)],
        any::<u64>(),
        prop_oneof![4 => 0u64..4, 1 => 0u64..40],
        mask_strategy(max_words),
    )
        .prop_map(move |(space, low, stride, off, count, cpus)| {
            let w = if low { Window::Low } else { Window::High };
            make_req(&cfg, space, w, stride, off, count, cpus)
        })
}

/// A configuration and a sequence of valid requests over 1 to 3 spaces.
fn batch_strategy(max_reqs: usize) -> impl Strategy<Value = (Config, Vec<Req>)> {
    (
        cfg_strategy(),
        prop::sample::subsequence(SPACES.to_vec(), 1..=3),
    )
        .prop_flat_map(move |(cfg, pool)| {
            (
                Just(cfg),
                prop::collection::vec(req_strategy(cfg, pool, CPU_WORDS + 2), 0..=max_reqs),
            )
        })
}

/// Adds `reqs` to a batch of ample storage, returns the model and the plan's snapshot.
fn run(cfg: Config, reqs: &[Req]) -> Result<(Model, Snap), TestCaseError> {
    let mut storage = vec![Range::EMPTY; reqs.len() + 3];
    let mut batch = Batch::new(&mut storage, cfg);
    let mut model = Model::default();
    for r in reqs {
        prop_assert_eq!(r.add(&mut batch), Ok(()), "valid request refused: {:?}", r);
        model.add(r);
    }
    let plan = batch.plan();
    Ok((model, snap(&plan)))
}

// ---------------------------------------------------------------------------------------
// The reference validator (the documented order of the checks) and bad requests.

fn reference_check(
    cfg: &Config,
    space: Space,
    start: u64,
    end: u64,
    stride: u8,
) -> Result<(), AddError> {
    if !(12..=30).contains(&stride) {
        return Err(AddError::BadStride);
    }
    if end <= start {
        return Err(AddError::EndBeforeStart);
    }
    if start % (1u64 << stride) != 0 || end % (1u64 << stride) != 0 {
        return Err(AddError::Unaligned);
    }
    let bad = match space {
        Space::User(_) => end > cfg.user_end,
        Space::Kernel => start < cfg.kernel_start,
    };
    if bad {
        return Err(AddError::CrossesBoundary);
    }
    Ok(())
}

/// A bad request (with a CPU mask the good requests never use: CPU 511) and its error.
fn bad_strategy(cfg: Config) -> impl Strategy<Value = (Req, AddError)> {
    let valid = req_strategy(cfg, SPACES.to_vec(), 0);
    let kind = 0u8..11;
    let spare = 1u64..8;
    let stride = prop_oneof![Just(12u8), Just(21u8)];
    (
        valid,
        kind,
        spare,
        stride,
        any::<u8>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(move |(mut r, kind, k, stride, raw_stride, raw, user)| {
            let space = if user { Space::User(1) } else { Space::Kernel };
            let size = 1u64 << stride;
            let err = match kind {
                // end == start.
                0 => {
                    r.end = r.start;
                    AddError::EndBeforeStart
                }
                // Reversed.
                1 => {
                    std::mem::swap(&mut r.start, &mut r.end);
                    AddError::EndBeforeStart
                }
                // Unaligned start (still below end).
                2 => {
                    r.start += (raw % ((1u64 << r.stride) - 1)) + 1;
                    AddError::Unaligned
                }
                // Unaligned end (still above start).
                3 => {
                    r.end -= (raw % ((1u64 << r.stride) - 1)) + 1;
                    AddError::Unaligned
                }
                // Stride out of range, whatever the rest.
                4 => {
                    r.stride = if raw_stride % 2 == 0 {
                        raw_stride % 12
                    } else {
                        31 + raw_stride % 225
                    };
                    if raw % 3 == 0 {
                        r.start = raw;
                        r.end = raw / 2;
                    }
                    AddError::BadStride
                }
                // A user range ending above user_end.
                5 => {
                    let top = cfg.user_end & !(size - 1);
                    r.space = Space::User(1 + raw % 3);
                    r.stride = stride;
                    r.start = top - k * size;
                    r.end = top + k * size;
                    AddError::CrossesBoundary
                }
                // A kernel range starting below kernel_start.
                6 => {
                    r.space = Space::Kernel;
                    r.stride = stride;
                    r.start = cfg.kernel_start - k * size;
                    r.end = cfg.kernel_start + k * size;
                    AddError::CrossesBoundary
                }
                // From user into kernel addresses, either space.
                7 => {
                    r.space = space;
                    r.stride = stride;
                    r.start = 0x1000_0000;
                    r.end = cfg.kernel_start + k * size;
                    AddError::CrossesBoundary
                }
                // Inside the non-canonical hole, either space.
                8 => {
                    r.space = space;
                    r.stride = stride;
                    r.start = (cfg.user_end & !(size - 1)) + size;
                    r.end = r.start + k * size;
                    AddError::CrossesBoundary
                }
                // Huge values near u64::MAX.
                9 => {
                    r.space = space;
                    r.stride = 12;
                    match raw % 4 {
                        0 => {
                            r.start = !(K4 - 1);
                            r.end = u64::MAX;
                            AddError::Unaligned
                        }
                        1 => {
                            r.start = u64::MAX;
                            r.end = 0;
                            AddError::EndBeforeStart
                        }
                        2 => {
                            r.start = u64::MAX - raw % 4096;
                            r.end = u64::MAX;
                            if r.start == r.end {
                                AddError::EndBeforeStart
                            } else {
                                AddError::Unaligned
                            }
                        }
                        _ => {
                            // Aligned and in kernel space: only a user range is bad.
                            r.space = Space::User(raw);
                            r.start = (!(K4 - 1)) - k * K4;
                            r.end = !(K4 - 1);
                            AddError::CrossesBoundary
                        }
                    }
                }
                // A 2 MiB stride on 4 KiB-aligned addresses.
                _ => {
                    r.space = space;
                    r.stride = 21;
                    let (base, _) = window(&cfg, space, Window::Low, 21);
                    r.start = base + K4 * (1 + raw % 511);
                    r.end = base + 4 * M2;
                    AddError::Unaligned
                }
            };
            let mut cpus = vec![0u64; CPU_WORDS];
            cpus[CPU_WORDS - 1] = 1 << 63;
            cpus[0] = raw;
            r.cpus = cpus;
            (r, err)
        })
}

/// An arbitrary number, biased to the interesting ones; resolved against the
/// configuration by [`Wild::get`] (so that the strategy does not depend on the
/// configuration, which keeps shrinking fast).
#[derive(Clone, Copy, Debug)]
enum Wild {
    Raw(u64),
    /// `v` aligned down to `1 << s`.
    Aligned(u64, u32),
    /// One of [`specials`].
    Special(usize),
    /// A 4 KiB page above 0x1000_0000.
    UserPage(u64),
    /// A 4 KiB page above `kernel_start`.
    KernelPage(u64),
}

fn specials(cfg: &Config) -> [u64; 17] {
    [
        0,
        1,
        K4,
        M2,
        G1,
        cfg.user_end,
        cfg.user_end.wrapping_sub(K4),
        cfg.user_end.wrapping_add(K4),
        cfg.kernel_start,
        cfg.kernel_start.wrapping_sub(K4),
        cfg.kernel_start.wrapping_add(M2),
        1 << 63,
        u64::MAX,
        u64::MAX - 1,
        !(K4 - 1),
        !(M2 - 1),
        !(G1 - 1),
    ]
}

impl Wild {
    fn get(self, cfg: &Config) -> u64 {
        match self {
            Wild::Raw(v) => v,
            Wild::Aligned(v, s) => v & !((1u64 << s) - 1),
            Wild::Special(i) => specials(cfg)[i % 17],
            Wild::UserPage(p) => 0x1000_0000 + p * K4,
            Wild::KernelPage(p) => cfg.kernel_start.wrapping_add(p * K4),
        }
    }
}

fn wild_u64() -> impl Strategy<Value = Wild> {
    prop_oneof![
        any::<u64>().prop_map(Wild::Raw),
        (any::<u64>(), 12u32..=30).prop_map(|(v, s)| Wild::Aligned(v, s)),
        (0usize..17).prop_map(Wild::Special),
        (0u64..64).prop_map(Wild::UserPage),
        (0u64..64).prop_map(Wild::KernelPage),
    ]
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(PropConfig::with_cases(512))]

    /// 1. Every requested page is flushed by the action.
    #[test]
    fn prop_coverage((cfg, reqs) in batch_strategy(16)) {
        let mut storage = vec![Range::EMPTY; reqs.len()];
        let mut batch = Batch::new(&mut storage, cfg);
        let mut model = Model::default();
        for r in &reqs {
            prop_assert_eq!(r.add(&mut batch), Ok(()));
            model.add(r);
        }
        let plan = batch.plan();
        if model.pages.is_empty() {
            prop_assert_eq!(plan.action, Action::None);
        }
        for &(space, stride, addr) in &model.pages {
            let size = 1u64 << stride;
            let covered = match plan.action {
                Action::None => false,
                Action::FullAll => true,
                Action::UsersFull => space != Space::Kernel,
                Action::UserFull { space: id } => space == Space::User(id),
                Action::UserSpan { space: id, start, end, stride_shift } => {
                    space == Space::User(id)
                        && stride_shift <= stride
                        && start <= addr
                        && addr + size <= end
                        && (addr - start) % (1u64 << stride_shift) == 0
                }
                Action::KernelPages => {
                    space == Space::Kernel
                        && plan.ranges.iter().any(|r| {
                            r.space == space
                                && r.stride_shift <= stride
                                && r.start <= addr
                                && addr + size <= r.end
                                && (addr - r.start) % (1u64 << r.stride_shift) == 0
                        })
                }
            };
            prop_assert!(covered, "page {:?} not flushed by {:?}", (space, stride, addr), plan.action);
        }
    }

    /// 2. The ranges hold exactly the requested pages, sorted, disjoint, not adjacent.
    #[test]
    fn prop_exact_ranges((cfg, reqs) in batch_strategy(16)) {
        let (model, plan) = run(cfg, &reqs)?;
        check_sorted_disjoint(&plan.ranges)?;
        prop_assert_eq!(expand(&plan.ranges)?, model.pages.clone());
        prop_assert_eq!(&plan.ranges, &model.runs());
    }

    /// 3. The action is the one of the ceiling rule. Half of the cases move the ceiling
    /// to within 2 of the count that the rule compares (kernel pages, user span pages), so
    /// that both sides of every boundary are tried.
    #[test]
    fn prop_action_rule(
        (cfg, reqs) in batch_strategy(12),
        near in prop::option::weighted(0.5, -2i64..=2),
    ) {
        let mut model = Model::default();
        for r in &reqs {
            model.add(r);
        }
        let mut cfg = cfg;
        if let (Some(d), Some(count)) = (near, model.ceiling_count()) {
            cfg.ceiling = (count as i64 + d).max(0) as u64;
        }
        let (model, plan) = run(cfg, &reqs)?;
        prop_assert_eq!(plan.action, model.action(cfg.ceiling), "model pages {}", model.pages.len());
        if let Some(count) = model.ceiling_count() {
            prop_assert_eq!(plan.is_full, count > cfg.ceiling);
        }
        prop_assert_eq!(
            plan.is_full,
            matches!(plan.action, Action::FullAll | Action::UserFull { .. } | Action::UsersFull)
        );
    }

    /// 4. CPUs, counters, rounds.
    #[test]
    fn prop_cpus_and_counts((cfg, reqs) in batch_strategy(16)) {
        let (model, plan) = run(cfg, &reqs)?;
        prop_assert_eq!(plan.cpus, model.cpu_set());
        prop_assert_eq!(plan.cpus.iter().collect::<BTreeSet<u32>>(), model.cpus.clone());
        prop_assert_eq!(plan.cpus.count() as usize, model.cpus.len());
        prop_assert_eq!(plan.cpus.is_empty(), model.cpus.is_empty());
        prop_assert_eq!(plan.requests, reqs.len() as u64);
        let runs = model.runs().len() as u64;
        prop_assert_eq!(plan.merged, reqs.len() as u64 - runs);
        prop_assert_eq!(plan.ranges.len() as u64, runs);
        prop_assert_eq!(plan.pages, model.pages.len() as u64);
        prop_assert_eq!(plan.rounds, if reqs.is_empty() { 0 } else { 1 });
        prop_assert_eq!(reqs.is_empty(), plan.action == Action::None);
    }

    /// 5. Bad requests get their error and change nothing: a twin batch that never saw
    /// them stays identical, and so does the model. Small storage, so `Full` happens too.
    #[test]
    fn prop_bad_input_changes_nothing(
        ((cfg, good), bad, cap, bad_at) in batch_strategy(10).prop_flat_map(|(cfg, good)| (
            Just((cfg, good)),
            prop::collection::vec(bad_strategy(cfg), 1..8),
            0usize..8,
            prop::collection::vec(any::<prop::sample::Index>(), 8),
        ))
    ) {
        let mut storage = vec![Range::EMPTY; cap];
        let mut twin_storage = vec![Range::EMPTY; cap];
        let mut batch = Batch::new(&mut storage, cfg);
        let mut twin = Batch::new(&mut twin_storage, cfg);
        prop_assert_eq!(batch.capacity(), cap);
        let mut model = Model::default();
        // The positions (in the good sequence) before which each bad request comes.
        let mut at: Vec<(usize, usize)> = bad_at
            .iter()
            .take(bad.len())
            .enumerate()
            .map(|(i, ix)| (ix.index(good.len() + 1), i))
            .collect();
        at.sort();
        let mut next_bad = at.into_iter().peekable();
        for pos in 0..=good.len() {
            while let Some(&(p, i)) = next_bad.peek() {
                if p != pos {
                    break;
                }
                next_bad.next();
                let (r, err) = &bad[i];
                prop_assert_eq!(
                    reference_check(&cfg, r.space, r.start, r.end, r.stride),
                    Err(*err),
                    "test bug: {:?}", r
                );
                let (len, requests) = (batch.len(), batch.requests());
                prop_assert_eq!(r.add(&mut batch), Err(*err), "{:?}", r);
                prop_assert_eq!(batch.len(), len);
                prop_assert_eq!(batch.requests(), requests);
                prop_assert_eq!(batch.len(), twin.len());
                prop_assert_eq!(batch.requests(), twin.requests());
            }
            if let Some(r) = good.get(pos) {
                let full = model.requests as usize >= cap;
                let expect = if full { Err(AddError::Full) } else { Ok(()) };
                let len = batch.len();
                prop_assert_eq!(r.add(&mut batch), expect, "{:?}", r);
                prop_assert_eq!(r.add(&mut twin), expect);
                if full {
                    prop_assert_eq!(batch.len(), len);
                } else {
                    model.add(r);
                }
                prop_assert_eq!(batch.len() as u64, model.requests);
                prop_assert_eq!(batch.requests(), model.requests);
                prop_assert_eq!(batch.is_empty(), model.requests == 0);
            }
        }
        let plan = snap(&batch.plan());
        prop_assert_eq!(&plan, &snap(&twin.plan()));
        prop_assert_eq!(&plan.ranges, &model.runs());
        prop_assert_eq!(plan.cpus, model.cpu_set());
        prop_assert_eq!(plan.action, model.action(cfg.ceiling));
    }

    /// 7. Plan, add more, plan again (twice), clear, reuse, against the model.
    #[test]
    fn prop_plan_clear_reuse(
        (cfg, ops, cap) in (cfg_strategy(), prop::sample::subsequence(SPACES.to_vec(), 1..=3))
            .prop_flat_map(|(cfg, pool)| (
                Just(cfg),
                prop::collection::vec(
                    prop_oneof![
                        6 => req_strategy(cfg, pool, 3).prop_map(Op::Add),
                        1 => Just(Op::Plan),
                        1 => Just(Op::Clear),
                    ],
                    0..40,
                ),
                1usize..12,
            ))
    ) {
        let mut storage = vec![Range::EMPTY; cap];
        let mut batch = Batch::new(&mut storage, cfg);
        let mut model = Model::default();
        // The ranges the storage holds (requests since the last plan + kept ranges).
        let mut stored = 0usize;
        for op in &ops {
            match op {
                Op::Add(r) => {
                    let expect = if stored < cap { Ok(()) } else { Err(AddError::Full) };
                    prop_assert_eq!(r.add(&mut batch), expect);
                    if expect.is_ok() {
                        model.add(r);
                        stored += 1;
                    }
                    prop_assert_eq!(batch.len(), stored);
                }
                Op::Clear => {
                    batch.clear();
                    model = Model::default();
                    stored = 0;
                    prop_assert_eq!(batch.len(), 0);
                    prop_assert_eq!(batch.requests(), 0);
                    prop_assert!(batch.is_empty());
                }
                Op::Plan => {
                    let first = snap(&batch.plan());
                    let runs = model.runs();
                    prop_assert_eq!(&first.ranges, &runs);
                    prop_assert_eq!(first.action, model.action(cfg.ceiling));
                    prop_assert_eq!(first.cpus, model.cpu_set());
                    prop_assert_eq!(first.requests, model.requests);
                    prop_assert_eq!(first.merged, model.requests - runs.len() as u64);
                    prop_assert_eq!(first.pages, model.pages.len() as u64);
                    stored = runs.len();
                    prop_assert_eq!(batch.len(), stored);
                    prop_assert_eq!(batch.requests(), model.requests);
                    // Idempotent.
                    prop_assert_eq!(&snap(&batch.plan()), &first);
                    prop_assert_eq!(batch.len(), stored);
                }
            }
        }
        let last = snap(&batch.plan());
        prop_assert_eq!(&last.ranges, &model.runs());
        prop_assert_eq!(last.action, model.action(cfg.ceiling));
        batch.clear();
        let empty = snap(&batch.plan());
        prop_assert_eq!(empty.action, Action::None);
        prop_assert!(empty.ranges.is_empty());
        prop_assert!(empty.cpus.is_empty());
        prop_assert_eq!((empty.requests, empty.merged, empty.pages, empty.rounds), (0, 0, 0, 0));
        prop_assert!(!empty.is_full);
    }
}

/// One operation of `prop_plan_clear_reuse`.
#[derive(Clone, Debug)]
enum Op {
    Add(Req),
    Plan,
    Clear,
}

/// One operation of `prop_never_panics`.
#[derive(Clone, Debug)]
enum WildOp {
    Add(Space, Wild, Wild, u8, Vec<u64>),
    Plan,
    Clear,
}

fn wild_strategy() -> impl Strategy<Value = (Config, usize, Vec<WildOp>)> {
    let cfg = prop_oneof![
        cfg_strategy(),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(ceiling, user_end, kernel_start)| {
            Config {
                ceiling,
                user_end,
                kernel_start,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(ceiling, split)| Config {
            ceiling,
            user_end: split & !(K4 - 1),
            kernel_start: split & !(K4 - 1),
        }),
    ];
    let space = prop_oneof![
        Just(Space::Kernel),
        any::<u64>().prop_map(Space::User),
        (0u64..3).prop_map(Space::User),
    ];
    let stride = prop_oneof![
        any::<u8>(),
        11u8..=31,
        prop::sample::select(vec![12u8, 21, 30])
    ];
    let op = prop_oneof![
        8 => (space, wild_u64(), wild_u64(), stride, mask_strategy(CPU_WORDS + 2))
            .prop_map(|(s, a, b, st, m)| WildOp::Add(s, a, b, st, m)),
        1 => Just(WildOp::Plan),
        1 => Just(WildOp::Clear),
    ];
    (cfg, 0usize..10, prop::collection::vec(op, 0..30))
}

/// Checks a plan against the ranges `reqs` that were added (any sizes): the interval
/// model of `prop_never_panics`.
fn check_wild_plan(
    cfg: &Config,
    reqs: &[Range],
    cpus: &CpuSet,
    p: &Plan<'_>,
) -> Result<(), TestCaseError> {
    check_sorted_disjoint(p.ranges)?;
    for r in p.ranges {
        prop_assert_eq!(cfg.check(r.space, r.start, r.end, r.stride_shift), Ok(*r));
    }
    // Every request lies in one range of its space and stride.
    for q in reqs {
        prop_assert!(
            p.ranges.iter().any(|r| r.space == q.space
                && r.stride_shift == q.stride_shift
                && r.start <= q.start
                && q.end <= r.end),
            "request {:?} not in {:?}",
            q,
            p.ranges
        );
    }
    // Every range is covered by the requests of its space and stride.
    for r in p.ranges {
        let mut mine: Vec<&Range> = reqs
            .iter()
            .filter(|q| {
                q.space == r.space
                    && q.stride_shift == r.stride_shift
                    && q.end > r.start
                    && q.start < r.end
            })
            .collect();
        mine.sort_by_key(|q| q.start);
        let mut cursor = r.start;
        for q in mine {
            prop_assert!(
                q.start <= cursor,
                "gap [{:#x}, {:#x}) in {:?}",
                cursor,
                q.start,
                r
            );
            cursor = cursor.max(q.end);
        }
        prop_assert!(cursor >= r.end, "range {:?} beyond the requests", r);
    }
    prop_assert_eq!(p.requests, reqs.len() as u64);
    prop_assert_eq!(p.merged, reqs.len() as u64 - p.ranges.len() as u64);
    let pages = p.ranges.iter().fold(0u64, |s, r| {
        s.saturating_add((r.end - r.start) >> r.stride_shift)
    });
    prop_assert_eq!(p.pages, pages);
    prop_assert_eq!(p.cpus, *cpus);
    // The action, from the requests.
    let kernel = reqs.iter().any(|q| q.space == Space::Kernel);
    let users: BTreeSet<u64> = reqs
        .iter()
        .filter_map(|q| match q.space {
            Space::User(id) => Some(id),
            Space::Kernel => None,
        })
        .collect();
    let expect = if reqs.is_empty() {
        Action::None
    } else if kernel && !users.is_empty() {
        Action::FullAll
    } else if kernel {
        if pages <= cfg.ceiling {
            Action::KernelPages
        } else {
            Action::FullAll
        }
    } else if users.len() > 1 {
        Action::UsersFull
    } else {
        let space = *users.first().unwrap();
        let start = reqs.iter().map(|q| q.start).min().unwrap();
        let end = reqs.iter().map(|q| q.end).max().unwrap();
        let stride_shift = reqs.iter().map(|q| q.stride_shift).min().unwrap();
        user_action(space, start, end, stride_shift, cfg.ceiling)
    };
    prop_assert_eq!(p.action, expect);
    prop_assert_eq!(p.rounds(), u32::from(!reqs.is_empty()));
    Ok(())
}

proptest! {
    // Shrinking 30 operations on arbitrary `u64`s can take a minute: bounded.
    #![proptest_config(PropConfig {
        cases: 1024,
        max_shrink_iters: 4096,
        ..PropConfig::default()
    })]

    /// 6. Arbitrary numbers, strides 0..=255, configurations and sequences: no panic, the
    /// documented error, and a plan that the interval model accepts.
    #[test]
    fn prop_never_panics((cfg, cap, ops) in wild_strategy()) {
        let mut storage = vec![Range::EMPTY; cap];
        let mut batch = Batch::new(&mut storage, cfg);
        let mut reqs: Vec<Range> = Vec::new();
        let mut cpus = CpuSet::new();
        let mut stored = 0usize;
        for op in ops {
            match op {
                WildOp::Add(space, start, end, stride, mask) => {
                    let (start, end) = (start.get(&cfg), end.get(&cfg));
                    let full = if stored < cap { Ok(()) } else { Err(AddError::Full) };
                    let expect = reference_check(&cfg, space, start, end, stride).and(full);
                    let set = CpuSet::from_words(&mask);
                    prop_assert_eq!(batch.add(space, start, end, stride, &set), expect);
                    prop_assert_eq!(
                        cfg.check(space, start, end, stride).map(|_| ()),
                        reference_check(&cfg, space, start, end, stride)
                    );
                    if expect.is_ok() {
                        reqs.push(Range { space, start, end, stride_shift: stride });
                        cpus.union_with(&set);
                        stored += 1;
                    }
                    prop_assert_eq!(batch.len(), stored);
                }
                WildOp::Plan => {
                    let plan = batch.plan();
                    check_wild_plan(&cfg, &reqs, &cpus, &plan)?;
                    stored = plan.ranges.len();
                    prop_assert_eq!(batch.len(), stored);
                }
                WildOp::Clear => {
                    batch.clear();
                    reqs.clear();
                    cpus = CpuSet::new();
                    stored = 0;
                }
            }
            prop_assert_eq!(batch.requests(), reqs.len() as u64);
        }
        let plan = batch.plan();
        check_wild_plan(&cfg, &reqs, &cpus, &plan)?;
    }
}

// ---------------------------------------------------------------------------------------
// 8. Scale.

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` single-page requests for one user space in random order, drawn from a window of
/// `window` pages (so with duplicates and gaps), plus explicit duplicates; returns the
/// time `plan` took.
fn scale(n: usize, window: u64, seed: u64) -> Duration {
    let cfg = Config::X86_64;
    let space = Space::User(0xffff_8881_0000_0000);
    let base = 0x5555_0000_0000u64;
    let mut rng = seed;
    let mut pages: Vec<u64> = (0..n - n / 8)
        .map(|_| splitmix(&mut rng) % window)
        .collect();
    // Explicit duplicates.
    for i in 0..n / 8 {
        pages.push(pages[i * 5 % pages.len()]);
    }
    // Shuffle (Fisher-Yates).
    for i in (1..pages.len()).rev() {
        let j = (splitmix(&mut rng) % (i as u64 + 1)) as usize;
        pages.swap(i, j);
    }
    assert_eq!(pages.len(), n);

    let mut storage = vec![Range::EMPTY; n];
    let mut batch = Batch::new(&mut storage, cfg);
    let mut model = Model::default();
    let mut mask = CpuSet::new();
    for (i, &p) in pages.iter().enumerate() {
        let cpu = (i % 4) as u32 * 100;
        let mut m = CpuSet::new();
        assert!(m.set(cpu));
        mask.union_with(&m);
        let r = Req {
            space,
            start: base + p * K4,
            end: base + (p + 1) * K4,
            stride: 12,
            cpus: m.words().to_vec(),
        };
        r.add(&mut batch).unwrap();
        model.add(&r);
    }
    assert!(model.pages.len() < n, "no duplicates");
    let runs = model.runs();
    assert!(runs.len() > 1, "no gaps");

    let t = Instant::now();
    let plan = batch.plan();
    let took = t.elapsed();
    assert_eq!(plan.ranges, &runs[..]);
    assert_eq!(plan.requests, n as u64);
    assert_eq!(plan.merged, (n - runs.len()) as u64);
    assert_eq!(plan.pages, model.pages.len() as u64);
    assert_eq!(plan.cpus, mask);
    assert_eq!(plan.cpus.iter().collect::<Vec<_>>(), vec![0, 100, 200, 300]);
    let Space::User(id) = space else {
        unreachable!()
    };
    assert_eq!(plan.action, Action::UserFull { space: id });
    assert!(plan.is_full());
    took
}

#[test]
fn scale_4096_requests() {
    let t = Instant::now();
    let plan_time = scale(4096, 6000, 42);
    let total = t.elapsed();
    assert!(
        plan_time < Duration::from_millis(200),
        "plan took {plan_time:?}"
    );
    assert!(total < Duration::from_secs(1), "test took {total:?}");
}

/// With 65536 requests an `O(n^2)` plan would take many seconds even in release mode.
#[test]
fn scale_65536_requests_is_not_quadratic() {
    let plan_time = scale(1 << 16, 100_000, 7);
    assert!(
        plan_time < Duration::from_secs(1),
        "plan took {plan_time:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Unit tests with explicit plans.

const U: u64 = 0x1000_0000;
const KS: u64 = 0xffff_8000_0000_0000;

fn all_cpus() -> CpuSet {
    CpuSet::from_words(&[u64::MAX; CPU_WORDS])
}

fn one_cpu(c: u32) -> CpuSet {
    let mut s = CpuSet::new();
    assert!(s.set(c));
    s
}

fn r(space: Space, start: u64, end: u64, stride_shift: u8) -> Range {
    Range {
        space,
        start,
        end,
        stride_shift,
    }
}

#[test]
fn three_adjacent_pages_merge() {
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    // Out of order on purpose.
    b.add(Space::User(9), U + K4, U + 2 * K4, 12, &one_cpu(1))
        .unwrap();
    b.add(Space::User(9), U + 2 * K4, U + 3 * K4, 12, &one_cpu(2))
        .unwrap();
    b.add(Space::User(9), U, U + K4, 12, &one_cpu(1)).unwrap();
    assert_eq!((b.len(), b.requests(), b.capacity()), (3, 3, 4));
    let p = b.plan();
    assert_eq!(p.ranges, &[r(Space::User(9), U, U + 3 * K4, 12)]);
    assert_eq!((p.requests, p.merged, p.pages), (3, 2, 3));
    assert_eq!(
        p.action,
        Action::UserSpan {
            space: 9,
            start: U,
            end: U + 3 * K4,
            stride_shift: 12
        }
    );
    assert_eq!(p.cpus.iter().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(p.rounds(), 1);
    assert!(!p.is_full());
    assert_eq!(b.len(), 1);
}

#[test]
fn covered_request_merges() {
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::Kernel, KS, KS + 8 * K4, 12, &all_cpus())
        .unwrap();
    b.add(Space::Kernel, KS + 2 * K4, KS + 3 * K4, 12, &all_cpus())
        .unwrap();
    b.add(Space::Kernel, KS, KS + 8 * K4, 12, &all_cpus())
        .unwrap();
    let p = b.plan();
    assert_eq!(p.ranges, &[r(Space::Kernel, KS, KS + 8 * K4, 12)]);
    assert_eq!((p.requests, p.merged, p.pages), (3, 2, 8));
    assert_eq!(p.action, Action::KernelPages);
    assert_eq!(p.cpus.count(), MAX_CPUS);
}

#[test]
fn gap_of_one_page_does_not_merge() {
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(1), U, U + K4, 12, &one_cpu(0)).unwrap();
    b.add(Space::User(1), U + 2 * K4, U + 3 * K4, 12, &one_cpu(0))
        .unwrap();
    let p = b.plan();
    assert_eq!(
        p.ranges,
        &[
            r(Space::User(1), U, U + K4, 12),
            r(Space::User(1), U + 2 * K4, U + 3 * K4, 12)
        ]
    );
    assert_eq!((p.merged, p.pages), (0, 2));
    // The span includes the gap: 3 pages.
    assert_eq!(
        p.action,
        Action::UserSpan {
            space: 1,
            start: U,
            end: U + 3 * K4,
            stride_shift: 12
        }
    );
}

/// The action for `ranges` (4 KiB stride) all in `space`, with `ceiling`.
fn plan_in(space: Space, cpus: &CpuSet, ranges: &[(u64, u64)], ceiling: u64) -> Action {
    let mut st = [Range::EMPTY; 8];
    let mut b = Batch::new(
        &mut st,
        Config {
            ceiling,
            ..Config::X86_64
        },
    );
    for &(s, e) in ranges {
        b.add(space, s, e, 12, cpus).unwrap();
    }
    b.plan().action
}

fn user_plan(ranges: &[(u64, u64)], ceiling: u64) -> Action {
    plan_in(Space::User(5), &one_cpu(3), ranges, ceiling)
}

fn kernel_plan(ranges: &[(u64, u64)], ceiling: u64) -> Action {
    plan_in(Space::Kernel, &all_cpus(), ranges, ceiling)
}

#[test]
fn user_33_pages_span_34_full() {
    let span = |n: u64| Action::UserSpan {
        space: 5,
        start: U,
        end: U + n * K4,
        stride_shift: 12,
    };
    assert_eq!(user_plan(&[(U, U + 33 * K4)], 33), span(33));
    assert_eq!(
        user_plan(&[(U, U + 34 * K4)], 33),
        Action::UserFull { space: 5 }
    );
    // Two pages whose span is 33, then 34 pages.
    assert_eq!(
        user_plan(&[(U, U + K4), (U + 32 * K4, U + 33 * K4)], 33),
        span(33)
    );
    assert_eq!(
        user_plan(&[(U, U + K4), (U + 33 * K4, U + 34 * K4)], 33),
        Action::UserFull { space: 5 }
    );
    // Ceiling 0: every request is a full flush.
    assert_eq!(user_plan(&[(U, U + K4)], 0), Action::UserFull { space: 5 });
    assert_eq!(user_plan(&[(U, U + K4)], 1), span(1));
}

#[test]
fn kernel_33_pages_pages_34_full() {
    assert_eq!(kernel_plan(&[(KS, KS + 33 * K4)], 33), Action::KernelPages);
    assert_eq!(kernel_plan(&[(KS, KS + 34 * K4)], 33), Action::FullAll);
    // The kernel count is of pages, not of the span: 2 distant pages.
    assert_eq!(
        kernel_plan(&[(KS, KS + K4), (KS + 1000 * K4, KS + 1001 * K4)], 2),
        Action::KernelPages
    );
    assert_eq!(
        kernel_plan(&[(KS, KS + K4), (KS + 1000 * K4, KS + 1001 * K4)], 1),
        Action::FullAll
    );
    assert_eq!(kernel_plan(&[(KS, KS + K4)], 0), Action::FullAll);
}

#[test]
fn kernel_and_user_is_full_all() {
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(3), U, U + K4, 12, &one_cpu(7)).unwrap();
    b.add(Space::Kernel, KS, KS + K4, 12, &one_cpu(8)).unwrap();
    let p = b.plan();
    assert_eq!(p.action, Action::FullAll);
    // Kernel first.
    assert_eq!(
        p.ranges,
        &[
            r(Space::Kernel, KS, KS + K4, 12),
            r(Space::User(3), U, U + K4, 12)
        ]
    );
    assert_eq!(p.cpus.iter().collect::<Vec<_>>(), vec![7, 8]);
    assert!(p.is_full());
}

#[test]
fn two_users_is_users_full() {
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(4), U, U + K4, 12, &one_cpu(1)).unwrap();
    b.add(Space::User(2), U, U + K4, 12, &one_cpu(500)).unwrap();
    let p = b.plan();
    assert_eq!(p.action, Action::UsersFull);
    assert_eq!(
        p.ranges,
        &[
            r(Space::User(2), U, U + K4, 12),
            r(Space::User(4), U, U + K4, 12)
        ]
    );
    assert_eq!(p.cpus.iter().collect::<Vec<_>>(), vec![1, 500]);
    assert_eq!(p.merged, 0);
}

#[test]
fn strides_are_not_merged_and_span_uses_the_smallest() {
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(
        &mut st,
        Config {
            ceiling: 1024,
            ..Config::X86_64
        },
    );
    // A 2 MiB page over the same addresses as a 4 KiB range, and an adjacent one.
    b.add(Space::User(1), U, U + M2, 21, &one_cpu(0)).unwrap();
    b.add(Space::User(1), U, U + 2 * K4, 12, &one_cpu(0))
        .unwrap();
    b.add(Space::User(1), U + M2, U + 2 * M2, 21, &one_cpu(0))
        .unwrap();
    let p = b.plan();
    assert_eq!(
        p.ranges,
        &[
            r(Space::User(1), U, U + 2 * K4, 12),
            r(Space::User(1), U, U + 2 * M2, 21)
        ]
    );
    assert_eq!((p.merged, p.pages), (1, 4));
    assert_eq!(
        p.action,
        Action::UserSpan {
            space: 1,
            start: U,
            end: U + 2 * M2,
            stride_shift: 12
        }
    );
    // At the default ceiling the 1024-page span is a full flush.
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(1), U, U + M2, 21, &one_cpu(0)).unwrap();
    b.add(Space::User(1), U, U + K4, 12, &one_cpu(0)).unwrap();
    assert_eq!(b.plan().action, Action::UserFull { space: 1 });
    // 2 MiB pages alone: 16 pages of 2 MiB is a span.
    let mut st = [Range::EMPTY; 4];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(1), U, U + 16 * M2, 21, &one_cpu(0))
        .unwrap();
    assert_eq!(
        b.plan().action,
        Action::UserSpan {
            space: 1,
            start: U,
            end: U + 16 * M2,
            stride_shift: 21
        }
    );
}

#[test]
fn nothing_added_is_none() {
    let mut st = [Range::EMPTY; 2];
    let mut b = Batch::new(&mut st, Config::X86_64);
    assert!(b.is_empty());
    let p = b.plan();
    assert_eq!(p.action, Action::None);
    assert_eq!(
        (p.rounds(), p.is_full(), p.requests, p.merged, p.pages),
        (0, false, 0, 0, 0)
    );
    assert!(p.ranges.is_empty() && p.cpus.is_empty());
}

#[test]
fn add_errors() {
    let c = Config::X86_64;
    let mut st = [Range::EMPTY; 1];
    let mut b = Batch::new(&mut st, c);
    let cpus = one_cpu(0);
    let mut add = |s, a, e, sh| b.add(s, a, e, sh, &cpus);
    let ue = c.user_end;
    assert_eq!(add(Space::User(1), U, U, 12), Err(AddError::EndBeforeStart));
    assert_eq!(
        add(Space::User(1), U + K4, U, 12),
        Err(AddError::EndBeforeStart)
    );
    assert_eq!(
        add(Space::User(1), U + 1, U + K4, 12),
        Err(AddError::Unaligned)
    );
    assert_eq!(
        add(Space::User(1), U, U + K4 + 8, 12),
        Err(AddError::Unaligned)
    );
    assert_eq!(add(Space::User(1), U, U + K4, 21), Err(AddError::Unaligned));
    assert_eq!(add(Space::User(1), U, U + K4, 11), Err(AddError::BadStride));
    assert_eq!(add(Space::User(1), U, U + K4, 31), Err(AddError::BadStride));
    assert_eq!(
        add(Space::User(1), U, U + K4, 255),
        Err(AddError::BadStride)
    );
    // BadStride is checked first, EndBeforeStart before Unaligned.
    assert_eq!(add(Space::User(1), 5, 3, 0), Err(AddError::BadStride));
    assert_eq!(add(Space::User(1), 5, 3, 12), Err(AddError::EndBeforeStart));
    assert_eq!(
        add(Space::User(1), ue, ue + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::User(1), ue - K4, ue + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::User(1), U, KS + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::Kernel, U, KS + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::Kernel, KS - K4, KS + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::Kernel, 1 << 63, (1 << 63) + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::User(1), 1 << 63, (1 << 63) + K4, 12),
        Err(AddError::CrossesBoundary)
    );
    assert_eq!(
        add(Space::Kernel, u64::MAX - K4 + 1, u64::MAX, 12),
        Err(AddError::Unaligned)
    );
    assert_eq!(
        add(Space::Kernel, u64::MAX, 0, 12),
        Err(AddError::EndBeforeStart)
    );
    // The edges are accepted: the last user page, then the storage is full.
    assert_eq!(add(Space::User(1), ue - K4, ue, 12), Ok(()));
    assert_eq!(add(Space::Kernel, KS, KS + K4, 12), Err(AddError::Full));
    // An invalid request is reported as such even when full.
    assert_eq!(
        add(Space::Kernel, KS, KS + K4, 31),
        Err(AddError::BadStride)
    );
    assert_eq!((b.len(), b.requests()), (1, 1));
    let p = b.plan();
    assert_eq!(p.ranges, &[r(Space::User(1), ue - K4, ue, 12)]);
    assert_eq!(p.cpus, one_cpu(0));

    // The first kernel page and the last nameable page.
    let mut st = [Range::EMPTY; 2];
    let mut b = Batch::new(&mut st, c);
    let top = !(K4 - 1);
    assert_eq!(b.add(Space::Kernel, KS, KS + K4, 12, &cpus), Ok(()));
    assert_eq!(b.add(Space::Kernel, top - K4, top, 12, &cpus), Ok(()));
    assert_eq!(b.plan().pages, 2);

    // No storage at all.
    let mut b = Batch::new(&mut [], c);
    assert_eq!(b.capacity(), 0);
    assert_eq!(
        b.add(Space::Kernel, KS, KS + K4, 12, &cpus),
        Err(AddError::Full)
    );
    assert_eq!(b.plan().action, Action::None);
}

#[test]
fn config_check_returns_the_range() {
    let c = Config::X86_64;
    assert_eq!(
        c.check(Space::User(2), U, U + M2, 21),
        Ok(r(Space::User(2), U, U + M2, 21))
    );
    assert_eq!(
        c.check(Space::User(2), U, U + M2, 22),
        Err(AddError::Unaligned)
    );
    assert_eq!(Range::EMPTY.pages(), 0);
    assert_eq!(r(Space::Kernel, 0, M2, 12).pages(), 512);
    assert_eq!(r(Space::Kernel, 0, M2, 200).pages(), 0);
}

#[test]
fn cpuset() {
    let mut s = CpuSet::new();
    assert!(s.is_empty() && s.count() == 0 && s.iter().next().is_none());
    assert!(s.set(0));
    assert!(s.set(63));
    assert!(s.set(64));
    assert!(s.set(511));
    assert!(!s.set(512));
    assert!(!s.set(u32::MAX));
    assert!(s.contains(0) && s.contains(63) && s.contains(64) && s.contains(511));
    assert!(!s.contains(1) && !s.contains(512) && !s.contains(u32::MAX));
    assert_eq!(s.count(), 4);
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 511]);
    assert_eq!(s.words()[0], 1 | 1 << 63);
    assert_eq!(s.words()[7], 1 << 63);

    // Truncation and zero fill.
    let w = CpuSet::from_words(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(w.words(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(CpuSet::from_words(&[5]).words(), &[5, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(CpuSet::from_words(&[]), CpuSet::new());
    assert_eq!(CpuSet::default(), CpuSet::new());

    let mut u = CpuSet::from_words(&[1]);
    u.union_with(&CpuSet::from_words(&[2, 0, 0, 0, 0, 0, 0, 1 << 5]));
    assert_eq!(u.iter().collect::<Vec<_>>(), vec![0, 1, 448 + 5]);
    assert_eq!(all_cpus().count(), MAX_CPUS);
    assert_eq!(all_cpus().iter().count(), MAX_CPUS as usize);
}

#[test]
fn clear_then_reuse() {
    let mut st = [Range::EMPTY; 2];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(1), U, U + K4, 12, &one_cpu(1)).unwrap();
    b.add(Space::User(2), U, U + K4, 12, &one_cpu(2)).unwrap();
    assert_eq!(b.plan().action, Action::UsersFull);
    b.clear();
    assert!(b.is_empty());
    assert_eq!(b.requests(), 0);
    b.add(Space::Kernel, KS, KS + K4, 12, &one_cpu(3)).unwrap();
    let p = b.plan();
    assert_eq!(p.action, Action::KernelPages);
    assert_eq!(p.cpus, one_cpu(3));
    assert_eq!((p.requests, p.merged), (1, 0));
}

#[test]
fn plan_frees_slots_for_more_requests() {
    let mut st = [Range::EMPTY; 2];
    let mut b = Batch::new(&mut st, Config::X86_64);
    b.add(Space::User(1), U, U + K4, 12, &one_cpu(1)).unwrap();
    b.add(Space::User(1), U + K4, U + 2 * K4, 12, &one_cpu(1))
        .unwrap();
    assert_eq!(
        b.add(Space::User(1), U + 2 * K4, U + 3 * K4, 12, &one_cpu(1)),
        Err(AddError::Full)
    );
    assert_eq!(b.plan().ranges.len(), 1);
    assert_eq!(b.len(), 1);
    b.add(Space::User(1), U + 2 * K4, U + 3 * K4, 12, &one_cpu(2))
        .unwrap();
    let p = b.plan();
    assert_eq!(p.ranges, &[r(Space::User(1), U, U + 3 * K4, 12)]);
    assert_eq!((p.requests, p.merged, p.pages), (3, 2, 3));
    assert_eq!(p.cpus.iter().collect::<Vec<_>>(), vec![1, 2]);
}
