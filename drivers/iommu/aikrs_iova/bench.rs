// SPDX-License-Identifier: GPL-2.0

//! Benchmark against iova.c in the same boot (`aikrs.mode=bench`) and the demo
//! (`aikrs.mode=demo`), both run from module init.
//!
//! Every figure is printed as
//! `bench: iova.<case> ours=<x> base=<y> unit=<unit> ratio=<x/y>` (for throughput, a ratio
//! above 1 means ours is faster), plus `bench-info:` lines with event counts. Under QEMU
//! TCG the absolute numbers are not hardware numbers; the ratios, measured in one boot on
//! the same vCPUs, are the figures to read.

use crate::domain::{Config, Domain};
use crate::rng::Rng;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use kernel::aikrs::{
    cpu,
    debugfs::{Counters, Dir},
    iova::IovaDomain,
    kthread,
};
use kernel::prelude::*;

/// 48-bit IOVA space in 4 KiB pages, as dma-iommu uses on x86-64.
const LIMIT: u64 = (1 << 36) - 1;
/// Live ranges in the single-CPU fixed-size runs.
const W: usize = 1024;
/// Live ranges per CPU in the all-CPU runs.
const W_CPU: usize = 256;

/// The three allocators under test.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Ours(&'a Domain),
    /// iova.c `alloc_iova_fast`/`free_iova_fast` (what dma-iommu calls).
    Fast(&'a IovaDomain),
    /// iova.c `alloc_iova(size_aligned)`/`free_iova`.
    Plain(&'a IovaDomain),
}

impl Backend<'_> {
    fn alloc(self, size: u64, limit: u64) -> Option<u64> {
        match self {
            Backend::Ours(d) => d.alloc(size, limit).ok(),
            Backend::Fast(d) => d
                .alloc_fast(size as usize, limit as usize, true)
                .map(|p| p as u64),
            Backend::Plain(d) => d
                .alloc(size as usize, limit as usize, true)
                .ok()
                .map(|i| i.pfn_lo() as u64),
        }
    }

    fn free(self, pfn: u64, size: u64) {
        match self {
            Backend::Ours(d) => {
                let _ = d.free(pfn, size);
            }
            Backend::Fast(d) => d.free_fast(pfn as usize, size as usize),
            Backend::Plain(d) => d.free_pfn(pfn as usize),
        }
    }
}

/// `a / b` in thousandths (no floating point in the kernel); print with [`milli`].
fn ratio_milli(a: u64, b: u64) -> u64 {
    // No 128-bit division in the kernel; the figures here stay far below 2^54.
    a.saturating_mul(1000).checked_div(b).unwrap_or(0)
}

/// A value in thousandths as (integer part, three decimals), for `"{}.{:03}"`.
fn milli(v: u64) -> (u64, u64) {
    (v / 1000, v % 1000)
}

fn per_sec(ops: u64, ns: i64) -> u64 {
    if ns <= 0 {
        return 0;
    }
    ops.saturating_mul(1_000_000_000) / ns as u64
}

/// Allocates a range of `size` into every slot of `live` (0 where that fails); returns
/// the failures.
fn fill(b: Backend<'_>, size: u64, live: &mut [u64]) -> u64 {
    let mut failed = 0;
    for slot in live.iter_mut() {
        *slot = b.alloc(size, LIMIT).unwrap_or_else(|| {
            failed += 1;
            0
        });
    }
    failed
}

/// Frees every range in `live` and clears the slots.
fn empty(b: Backend<'_>, size: u64, live: &mut [u64]) {
    for slot in live.iter_mut() {
        if *slot != 0 {
            b.free(*slot, size);
            *slot = 0;
        }
    }
}

/// `steps` steps of the steady state of a DMA layer: free a random live range of
/// `live`, allocate a new one in its slot. Returns (operations, failed allocations).
fn churn_fixed(
    b: Backend<'_>,
    size: u64,
    live: &mut [u64],
    rng: &mut Rng,
    steps: u32,
) -> (u64, u64) {
    let (mut ops, mut failed) = (0, 0);
    for _ in 0..steps {
        let i = rng.below(live.len() as u64) as usize;
        if let Some(slot) = live.get_mut(i) {
            if *slot != 0 {
                b.free(*slot, size);
                ops += 1;
            }
            *slot = b.alloc(size, LIMIT).unwrap_or_else(|| {
                failed += 1;
                0
            });
            ops += 1;
        }
    }
    (ops, failed)
}

/// Steady-state map/unmap of one size on this CPU: `live` ranges are allocated first (not
/// timed), then `steps` steps of [`churn_fixed`]. Returns (ops/s of the timed part,
/// failed allocations).
fn fixed_steady(b: Backend<'_>, size: u64, live: &mut [u64], steps: u32, seed: u64) -> (u64, u64) {
    let mut rng = Rng::new(seed | 1);
    let filled = fill(b, size, live);
    let t0 = cpu::ktime_ns();
    let (ops, failed) = churn_fixed(b, size, live, &mut rng, steps);
    let ns = cpu::ktime_ns() - t0;
    empty(b, size, live);
    (per_sec(ops, ns), filled + failed)
}

/// All online CPUs at once, each running the steady state of `fixed_steady` with its own
/// `W_CPU` live ranges, starting together and stopping at a common deadline (so a
/// contended baseline cannot stretch the run); returns (total ops/s, CPUs).
fn time_all_cpus(b: Backend<'_>, size: u64, millis: i64) -> Result<(u64, u32)> {
    let n = cpu::num_online_cpus();
    let start = kthread::StartBarrier::new(n);
    let t_start = AtomicI64::new(i64::MAX);
    let t_end = AtomicI64::new(0);
    let ops = AtomicU64::new(0);
    kthread::run_on_each_online_cpu(&|cpu_id| {
        let mut live = [0u64; W_CPU];
        let mut rng = Rng::new(u64::from(cpu_id) << 32 | 0x1357);
        fill(b, size, &mut live);
        start.wait();
        let t0 = cpu::ktime_ns();
        let deadline = t0 + millis * 1_000_000;
        let mut o = 0;
        let mut t1 = t0;
        while t1 < deadline {
            o += churn_fixed(b, size, &mut live, &mut rng, 32).0;
            t1 = cpu::ktime_ns();
        }
        t_start.fetch_min(t0, Ordering::AcqRel);
        t_end.fetch_max(t1, Ordering::AcqRel);
        ops.fetch_add(o, Ordering::AcqRel);
        empty(b, size, &mut live);
    })?;
    let ns = t_end.load(Ordering::Acquire) - t_start.load(Ordering::Acquire);
    Ok((per_sec(ops.load(Ordering::Acquire), ns), n))
}

fn print_pair(case: &str, vs: &str, ours: u64, base: u64) {
    let (ri, rf) = milli(ratio_milli(ours, base));
    pr_info!(
        "bench: iova.{}.vs_{} ours={} base={} unit=ops/s ratio={}.{:03}\n",
        case,
        vs,
        ours,
        base,
        ri,
        rf
    );
}

const SIZES: [(&str, u64); 5] = [
    ("fixed_4k", 1),
    ("fixed_64k", 16),
    ("fixed_2m", 512),
    ("fixed_64m", 16384),
    ("fixed_1g", 262144),
];

/// Repetitions of each measurement, alternating ours and the baselines so that a slow
/// patch of the host (QEMU TCG shares 2 cores) does not land on one side only; the median
/// is reported.
const REPS: usize = 5;

fn median(mut v: [u64; REPS]) -> u64 {
    v.sort_unstable();
    v[REPS / 2]
}

/// Prints the medians of ours against both iova.c paths (`alloc_iova_fast` and
/// `alloc_iova`), measured over the same repetitions.
fn print_medians(case: &str, ours: [u64; REPS], fast: [u64; REPS], plain: [u64; REPS]) {
    let o = median(ours);
    print_pair(case, "fast", o, median(fast));
    print_pair(case, "alloc_iova", o, median(plain));
}

fn run_fixed(ours: &Domain, base: &IovaDomain) -> Result {
    const STEPS: u32 = 20000;
    let mut live = KVVec::from_elem(0u64, W, GFP_KERNEL)?;
    for (name, size) in SIZES {
        let before = ours.stats();
        let (mut o, mut f, mut p) = ([0; REPS], [0; REPS], [0; REPS]);
        let (mut of, mut ff, mut pf) = (0, 0, 0);
        for r in 0..REPS {
            let seed = r as u64 + 1;
            let (x, e) = fixed_steady(Backend::Ours(ours), size, &mut live, STEPS, seed);
            (o[r], of) = (x, of + e);
            let (x, e) = fixed_steady(Backend::Fast(base), size, &mut live, STEPS, seed);
            (f[r], ff) = (x, ff + e);
            let (x, e) = fixed_steady(Backend::Plain(base), size, &mut live, STEPS, seed);
            (p[r], pf) = (x, pf + e);
        }
        let after = ours.stats();
        print_medians(name, o, f, p);
        pr_info!(
            "bench-info: iova.{} live={} steps={} reps={} (median) failed: ours={} fast={} alloc_iova={}; ours (all reps, incl. untimed fill/empty): cache hits={} depot hits={} tree lock round-trips={}\n",
            name,
            W,
            STEPS,
            REPS,
            of,
            ff,
            pf,
            after.cpu.hits - before.cpu.hits,
            after.cpu.depot_hits - before.cpu.depot_hits,
            (after.tree_allocs + after.tree_frees) - (before.tree_allocs + before.tree_frees)
        );
    }
    Ok(())
}

fn run_all_cpus(ours: &Domain, base: &IovaDomain) -> Result {
    const MILLIS: i64 = 200;
    for (name, size) in [
        ("allcpu_4k", 1u64),
        ("allcpu_2m", 512),
        ("allcpu_1g", 262144),
    ] {
        let (mut o, mut f, mut p) = ([0; REPS], [0; REPS], [0; REPS]);
        let mut n = 0;
        for r in 0..REPS {
            (o[r], n) = time_all_cpus(Backend::Ours(ours), size, MILLIS)?;
            (f[r], _) = time_all_cpus(Backend::Fast(base), size, MILLIS)?;
            (p[r], _) = time_all_cpus(Backend::Plain(base), size, MILLIS)?;
        }
        print_medians(name, o, f, p);
        pr_info!(
            "bench-info: iova.{} cpus={} live={} per CPU, {} ms per run, reps={} (median)\n",
            name,
            n,
            W_CPU,
            MILLIS,
            REPS
        );
    }
    Ok(())
}

/// Mixed-size churn: a working set of `live` ranges, sizes log-uniform from 4 KiB to
/// 1 GiB (a power-of-two order drawn uniformly, then a size uniformly within it); each
/// step frees a random live range and allocates a new one. Same random sequence for both.
/// Returns (ops/s, failed allocations, largest free / free space x1000).
fn churn(b: Backend<'_>, limit: u64, steps: u32) -> Result<(u64, u64, u64)> {
    const LIVE: usize = 256;
    let mut rng = Rng::new(0x5eed_1234_abcd_ef01);
    let mut live: KVec<(u64, u64)> = KVec::with_capacity(LIVE, GFP_KERNEL)?;
    let size_of = |rng: &mut Rng| {
        let k = rng.below(19);
        ((1u64 << k) + rng.below(1 << k)).min(1 << 18)
    };
    let (mut ops, mut failed) = (0u64, 0u64);
    let t0 = cpu::ktime_ns();
    for _ in 0..LIVE {
        let s = size_of(&mut rng);
        match b.alloc(s, limit) {
            Some(p) => live.push((p, s), GFP_KERNEL)?,
            None => failed += 1,
        }
        ops += 1;
    }
    for _ in 0..steps {
        if !live.is_empty() {
            let i = rng.below(live.len() as u64) as usize;
            if let Some((p, s)) = kernel::aikrs::compat::swap_remove(&mut live, i) {
                b.free(p, s);
                ops += 1;
            }
        }
        let s = size_of(&mut rng);
        match b.alloc(s, limit) {
            Some(p) => live.push((p, s), GFP_KERNEL)?,
            None => failed += 1,
        }
        ops += 1;
    }
    let ns = cpu::ktime_ns() - t0;
    let frag = match b {
        Backend::Ours(d) => {
            let st = d.stats();
            (st.tree.largest_free * 1000)
                .checked_div(st.tree.free_pages)
                .unwrap_or(0)
        }
        Backend::Fast(d) | Backend::Plain(d) => {
            let st = d.free_stats(limit as usize);
            (st.largest as u64 * 1000)
                .checked_div(st.free as u64)
                .unwrap_or(0)
        }
    };
    for &(p, s) in live.iter() {
        b.free(p, s);
    }
    Ok((per_sec(ops, ns), failed, frag))
}

fn run_churn() -> Result {
    // 64 GiB of IOVA space, so that 256 live ranges of up to 1 GiB fragment it.
    let limit = (1u64 << 24) - 1;
    let steps = 4000;
    let (mut o, mut f) = ([0; REPS], [0; REPS]);
    let (mut of, mut ff, mut ofrag, mut ffrag) = (0, 0, 0, 0);
    for r in 0..REPS {
        // Fresh domains each time: the same sequence from the same empty state.
        let ours = Domain::new(
            Config {
                start: 1,
                limit,
                max_live: 4096,
                cache: true,
            },
            GFP_KERNEL,
        )?;
        let base = IovaDomain::new_with_rcaches(kernel::page::PAGE_SIZE, 1)?;
        (o[r], of, ofrag) = churn(Backend::Ours(&ours), limit, steps)?;
        (f[r], ff, ffrag) = churn(Backend::Fast(&base), limit, steps)?;
    }
    let (o, f) = (median(o), median(f));
    print_pair("churn", "fast", o, f);
    let ((oi, of3), (fi, ff3)) = (milli(ofrag), milli(ffrag));
    let (ri, rf) = milli(ratio_milli(ofrag, ffrag));
    pr_info!(
        "bench: iova.churn_frag.vs_fast ours={}.{:03} base={}.{:03} unit=largest_free/free ratio={}.{:03}\n",
        oi,
        of3,
        fi,
        ff3,
        ri,
        rf
    );
    pr_info!(
        "bench-info: iova.churn steps={} live=256 reps={} (median; fresh domains each) failed allocations per rep: ours={} fast={}\n",
        steps,
        REPS,
        of,
        ff
    );
    Ok(())
}

/// Runs every benchmark once and prints the figures.
pub(crate) fn run_all() {
    let r = (|| -> Result {
        let ours = Domain::new(
            Config {
                start: 1,
                limit: LIMIT,
                max_live: 1 << 16,
                cache: true,
            },
            GFP_KERNEL,
        )?;
        let base = IovaDomain::new_with_rcaches(kernel::page::PAGE_SIZE, 1)?;
        pr_info!(
            "bench-info: iova: {} online CPUs, pages of 4 KiB, IOVA limit 2^48\n",
            cpu::num_online_cpus()
        );
        let [sec, lock, set, mag] = ours.fast_path_costs(20000);
        pr_info!(
            "bench-info: iova.fast_path ns per call: per-CPU section={sec} irq-safe spinlock round-trip={lock} live-set park+unpark={set} magazine push+pop={mag}\n"
        );
        run_fixed(&ours, &base)?;
        run_all_cpus(&ours, &base)?;
        run_churn()
    })();
    if let Err(e) = r {
        pr_err!("bench: iova: failed: {e:?}\n");
    }
}

/// The demo of `make run`: a burst of 2 MiB..1 GiB mappings from all vCPUs, then the
/// domain's statistics, printed and kept in debugfs (`aikrs_iova/demo/`).
pub(crate) struct Demo {
    _domain: Domain,
    _counters: Counters<9>,
    _dir: Dir,
}

impl Demo {
    pub(crate) fn run() -> Result<Self> {
        let d = Domain::new(
            Config {
                start: 1,
                limit: LIMIT,
                max_live: 1 << 14,
                cache: true,
            },
            GFP_KERNEL,
        )?;
        let errors = AtomicU64::new(0);
        kthread::run_on_each_online_cpu(&|cpu| {
            let mut rng = Rng::new(0xdead_beef ^ u64::from(cpu + 1) << 20);
            let mut live = [(0u64, 0u64); 16];
            for round in 0..32 {
                for slot in live.iter_mut() {
                    let size = 1u64 << (9 + rng.below(10)); // 2 MiB .. 1 GiB
                    match d.alloc(size, LIMIT) {
                        Ok(p) => *slot = (p, size),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            *slot = (0, 0);
                        }
                    }
                }
                // Keep the last round's ranges mapped.
                if round < 31 {
                    for &(p, s) in live.iter().filter(|(_, s)| *s != 0) {
                        if d.free(p, s).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })?;
        let st = d.stats();
        let frag = (st.tree.largest_free * 1000)
            .checked_div(st.tree.free_pages)
            .unwrap_or(0);
        pr_info!(
            "demo: {} vCPUs, {} allocations of 2 MiB..1 GiB ({} from per-CPU magazines, {} from the depot, {} from the tree), {} errors\n",
            cpu::num_online_cpus(),
            st.cpu.allocs,
            st.cpu.hits,
            st.cpu.depot_hits,
            st.tree_allocs,
            errors.load(Ordering::Relaxed)
        );
        pr_info!(
            "demo: tree: {} ranges ({} GiB) allocated, of which {} mapped and {} parked in per-CPU caches; free {} GiB in {} blocks; largest free block / free space = {}.{:03}\n",
            st.tree.allocations,
            st.tree.allocated_pages >> 18,
            st.tree.allocations.saturating_sub(st.cached),
            st.cached,
            st.tree.free_pages >> 18,
            st.tree.free_blocks,
            milli(frag).0,
            milli(frag).1
        );
        let dir = Dir::new(c"aikrs_iova", None);
        let c = Counters::new(
            c"demo",
            Some(&dir),
            [
                c"allocations",
                c"cache_hits",
                c"depot_hits",
                c"tree_allocs",
                c"tree_ranges",
                c"cached_ranges",
                c"free_pages",
                c"free_blocks",
                c"largest_free_pages",
            ],
        )?;
        for (i, v) in [
            st.cpu.allocs,
            st.cpu.hits,
            st.cpu.depot_hits,
            st.tree_allocs,
            st.tree.allocations,
            st.cached,
            st.tree.free_pages,
            st.tree.free_blocks,
            st.tree.largest_free,
        ]
        .into_iter()
        .enumerate()
        {
            c.add(i, v);
        }
        Ok(Self {
            _domain: d,
            _counters: c,
            _dir: dir,
        })
    }
}
