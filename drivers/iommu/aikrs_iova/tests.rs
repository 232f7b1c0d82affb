// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `aikrs_iova`: the kernel domain (locking, magazines, validation) on top of
//! the range tree, which the host crate's property tests check in depth.

use crate::domain::{Config, Domain};
use crate::rng::Rng;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::aikrs::{compat::swap_remove, cpu, iova::IovaDomain, kthread, kunit::Test};
use kernel::prelude::*;
use kernel::{aikrs_expect, aikrs_expect_eq, aikrs_kunit_suite, new_spinlock};

fn domain(start: u64, limit: u64, max_live: usize, cache: bool) -> Result<Domain> {
    Domain::new(
        Config {
            start,
            limit,
            max_live,
            cache,
        },
        GFP_KERNEL,
    )
}

/// Whether `[pfn, pfn + size)` is a valid answer: inside `[start, limit]`, aligned to
/// `size` rounded up to a power of two.
fn honours_contract(pfn: u64, size: u64, start: u64, limit: u64) -> bool {
    let align = size.next_power_of_two();
    pfn >= start && pfn % align == 0 && pfn.checked_add(size - 1).is_some_and(|l| l <= limit)
}

fn overlaps_any(live: &[(u64, u64)], pfn: u64, size: u64) -> bool {
    live.iter().any(|&(p, s)| p < pfn + size && pfn < p + s)
}

/// Alignment, top-down placement, the per-call limit, reservations, `find` and the
/// statistics, without caches (every call reaches the tree).
fn functional(t: &Test) -> Result {
    let (start, limit) = (1u64, (1u64 << 20) - 1);
    let d = domain(start, limit, 1024, false)?;
    let span = limit - start + 1;

    // Top-down: the highest fit under the limit.
    let a = d.alloc(1, limit)?;
    aikrs_expect_eq!(t, a, limit);
    let b = d.alloc(512, limit)?;
    aikrs_expect_eq!(t, b, (1 << 20) - 1024);
    // Not a power of two: aligned to 4, placed as high as it fits.
    let c = d.alloc(3, limit)?;
    aikrs_expect!(t, honours_contract(c, 3, start, limit), "c = {c:#x}");
    aikrs_expect_eq!(t, c % 4, 0);
    // A per-call limit below the top.
    let e = d.alloc(256, 0x7fff)?;
    aikrs_expect!(t, honours_contract(e, 256, start, 0x7fff), "e = {e:#x}");
    aikrs_expect_eq!(t, e, 0x7f00);
    aikrs_expect_eq!(t, d.find(e + 17), Some((e, 256)));
    aikrs_expect_eq!(t, d.find(e - 1), None);

    // A reservation is never allocated.
    d.reserve(0x1000, 0x1fff)?;
    let f = d.alloc(0x1000, 0x1fff);
    aikrs_expect!(t, f.is_err(), "allocated {f:?} inside a reservation");
    let g = d.alloc(0x800, 0x1fff)?;
    aikrs_expect!(t, g + 0x800 <= 0x1000, "g = {g:#x}");

    let st = d.stats();
    aikrs_expect_eq!(t, st.tree.allocated_pages, 1 + 512 + 3 + 256 + 0x800);
    aikrs_expect_eq!(t, st.tree.reserved_pages, 0x1000);
    aikrs_expect_eq!(
        t,
        st.tree.free_pages + st.tree.allocated_pages + st.tree.reserved_pages,
        span
    );
    aikrs_expect_eq!(t, st.tree.allocations, 5);

    for (p, s) in [(a, 1), (b, 512), (c, 3), (e, 256), (g, 0x800)] {
        d.free(p, s)?;
    }
    let st = d.stats();
    aikrs_expect_eq!(t, st.tree.free_pages, span - 0x1000);
    aikrs_expect_eq!(t, st.tree.allocations, 0);
    // Free space merged back: [start, 0x1000) and (0x1fff, limit].
    aikrs_expect_eq!(t, st.tree.free_blocks, 2);
    aikrs_expect_eq!(t, st.tree.largest_free, limit - 0x1fff);
    Ok(())
}

/// Slots of a same-size run: aligned blocks of the run's size, the whole domain.
const SLOTS: usize = 512;

/// A failed call in a [`SameSize`] record.
const FAILED: u64 = u64::MAX;

/// What one [`same_size_run`] saw. Every call is one request made to both allocators.
#[derive(Clone, Copy, Debug, Default)]
struct SameSize {
    /// Calls that succeeded in both, and that failed in both.
    both_ok: u64,
    both_failed: u64,
    /// Calls whose outcomes differed from each other or from what the free slots say.
    mismatches: u64,
    /// The first of them: (call, ours, iova.c, expected), [`FAILED`] for a failure.
    /// `expected` is the highest free slot on the tree path; on the cached path 0 (a
    /// success, anywhere) while a slot is free.
    first: (u64, u64, u64, u64),
    /// Answers that break the contract: not a slot of the domain, or a slot already live.
    contract: u64,
    /// Our errors other than `ENOSPC` (a failure with a free slot is a mismatch too), and
    /// frees we refused.
    errors: u64,
    /// Free pages after everything was freed: ours (caches drained), iova.c's (tree path;
    /// its caches are not reachable to drain).
    free_ours: u64,
    free_theirs: u64,
    span: u64,
}

/// Both allocators over the same domain, given the same requests of one size.
struct Pair {
    fast: bool,
    size: u64,
    align: u64,
    start: u64,
    limit: u64,
    ours: Domain,
    theirs: IovaDomain,
    /// Slots live in ours, and in iova.c.
    busy_o: [bool; SLOTS],
    busy_t: [bool; SLOTS],
    /// The live requests: (our pfn, iova.c's pfn) of each.
    live: KVec<(u64, u64)>,
    calls: u64,
    rec: SameSize,
}

impl Pair {
    /// Marks the slot at `pfn` live in `busy`; false if `pfn` is not a slot of the domain
    /// or the slot is live already.
    fn claim(busy: &mut [bool; SLOTS], start: u64, align: u64, pfn: u64) -> bool {
        let Some(off) = pfn.checked_sub(start) else {
            return false;
        };
        let slot = usize::try_from(off / align).ok();
        match slot.and_then(|i| busy.get_mut(i)) {
            Some(b) if off % align == 0 && !*b => {
                *b = true;
                true
            }
            _ => false,
        }
    }

    /// Marks the slot at `pfn` free in `busy` (nothing if `pfn` is not a slot).
    fn unclaim(busy: &mut [bool; SLOTS], start: u64, align: u64, pfn: u64) {
        let slot = pfn.checked_sub(start).map(|off| off / align);
        if let Some(b) = slot.and_then(|i| busy.get_mut(usize::try_from(i).ok()?)) {
            *b = false;
        }
    }

    fn mismatch(&mut self, ours: u64, theirs: u64, expected: u64) {
        if self.rec.mismatches == 0 {
            self.rec.first = (self.calls, ours, theirs, expected);
        }
        self.rec.mismatches += 1;
    }

    /// One request to both. Tree path: both must answer the highest free slot (or both
    /// fail when none is free). Cached path: both must succeed exactly while a slot is
    /// free, wherever they place it.
    fn alloc(&mut self) -> Result {
        self.calls += 1;
        let highest_free = self
            .busy_o
            .iter()
            .rposition(|&b| !b)
            .map_or(FAILED, |i| self.start + i as u64 * self.align);
        let o = match self.ours.alloc(self.size, self.limit) {
            Ok(p) => p,
            Err(e) => {
                if e != ENOSPC {
                    self.rec.errors += 1;
                }
                FAILED
            }
        };
        let th = if self.fast {
            self.theirs
                .alloc_fast(self.size as usize, self.limit as usize, true)
                .map_or(FAILED, |p| p as u64)
        } else {
            self.theirs
                .alloc(self.size as usize, self.limit as usize, true)
                .map_or(FAILED, |i| i.pfn_lo() as u64)
        };
        let space = self.live.len() < SLOTS;
        let agree = if self.fast {
            (o != FAILED) == space && (th != FAILED) == space
        } else {
            o == highest_free && th == highest_free
        };
        if !agree {
            let expected = match (self.fast, space) {
                (false, _) => highest_free,
                (true, true) => 0,
                (true, false) => FAILED,
            };
            self.mismatch(o, th, expected);
        }
        let (start, align) = (self.start, self.align);
        if o != FAILED && !Self::claim(&mut self.busy_o, start, align, o) {
            self.rec.contract += 1;
        }
        if th != FAILED && !Self::claim(&mut self.busy_t, start, align, th) {
            self.rec.contract += 1;
        }
        match (o != FAILED, th != FAILED) {
            (true, true) => {
                self.rec.both_ok += 1;
                self.live.push((o, th), GFP_KERNEL)?;
            }
            (false, false) => self.rec.both_failed += 1,
            // Only one succeeded (a mismatch, counted above): give it back, so that both
            // hold the same number of live ranges again.
            (true, false) => {
                if self.ours.free(o, self.size).is_err() {
                    self.rec.errors += 1;
                }
                Self::unclaim(&mut self.busy_o, start, align, o);
            }
            (false, true) => {
                self.free_theirs(th);
                Self::unclaim(&mut self.busy_t, start, align, th);
            }
        }
        Ok(())
    }

    fn free_theirs(&self, th: u64) {
        if self.fast {
            self.theirs.free_fast(th as usize, self.size as usize);
        } else {
            self.theirs.free_pfn(th as usize);
        }
    }

    /// Frees live request `i` in both.
    fn free(&mut self, i: usize) {
        if let Some((o, th)) = swap_remove(&mut self.live, i) {
            if self.ours.free(o, self.size).is_err() {
                self.rec.errors += 1;
            }
            self.free_theirs(th);
            Self::unclaim(&mut self.busy_o, self.start, self.align, o);
            Self::unclaim(&mut self.busy_t, self.start, self.align, th);
        }
    }

    /// Frees every live request in both, in a random order.
    fn free_all(&mut self, rng: &mut Rng) {
        while !self.live.is_empty() {
            let i = rng.below(self.live.len() as u64) as usize;
            self.free(i);
        }
    }
}

/// Gives `size`-page requests (limit: the domain's top) to this allocator and to iova.c
/// over the same domain of [`SLOTS`] aligned slots: fill it until a request fails, random
/// frees and requests around full, free everything, fill it again, free everything.
/// `fast` picks our cached path against `alloc_iova_fast`/`free_iova_fast`, else our tree
/// path against `alloc_iova`/`free_iova`. Returns what it saw, for the test to check.
///
/// On the tree path both must return the same pfn for every request: with one size and
/// one limit iova.c's search (first fit down from its cached node, the last allocation,
/// which moves above any freed range that is at or above it) never leaves a free slot
/// above that node, so its first fit is the highest free slot, and this allocator takes
/// the highest fit. With sizes or limits that vary, iova.c skips holes above its cached
/// node and the placements differ by design. On the cached path placements depend on
/// each cache's order, but both must succeed exactly while a slot is free: iova.c
/// flushes every CPU's cache before failing; this allocator flushes this CPU's and the
/// depot, which is all of them when the run stays on one CPU (see [`same_size`]).
fn same_size_run(fast: bool, size: u64, seed: u64) -> Result<SameSize> {
    let align = size.next_power_of_two();
    // Above 4 GiB (iova.c's 32-bit cached node and fast-fail are for limits below it),
    // aligned to every size used.
    let start = 1u64 << 21;
    if start & (align - 1) != 0 {
        return Err(EINVAL);
    }
    let limit = start + SLOTS as u64 * align - 1;
    let mut p = Pair {
        fast,
        size,
        align,
        start,
        limit,
        ours: domain(start, limit, 2 * SLOTS, fast)?,
        theirs: if fast {
            IovaDomain::new_with_rcaches(kernel::page::PAGE_SIZE, start as usize)?
        } else {
            IovaDomain::new(kernel::page::PAGE_SIZE, start as usize)?
        },
        busy_o: [false; SLOTS],
        busy_t: [false; SLOTS],
        live: KVec::with_capacity(SLOTS, GFP_KERNEL)?,
        calls: 0,
        rec: SameSize {
            span: limit - start + 1,
            ..SameSize::default()
        },
    };
    let mut rng = Rng::new(seed);
    // Fill: SLOTS successes, then a failure in both.
    for _ in 0..=SLOTS {
        p.alloc()?;
    }
    // Around full: each step frees a random live request or makes a new one.
    for _ in 0..4 * SLOTS {
        if !p.live.is_empty() && rng.below(2) == 0 {
            let i = rng.below(p.live.len() as u64) as usize;
            p.free(i);
        } else {
            p.alloc()?;
        }
    }
    // Everything freed must be allocatable again, from the caches or the tree.
    p.free_all(&mut rng);
    for _ in 0..=SLOTS {
        p.alloc()?;
    }
    p.free_all(&mut rng);
    p.ours.drain();
    p.rec.free_ours = p.ours.stats().tree.free_pages;
    p.rec.free_theirs = if fast {
        p.rec.span
    } else {
        p.theirs.free_stats(limit as usize).free as u64
    };
    Ok(p.rec)
}

/// Runs [`same_size_run`] in a kernel thread bound to the first online CPU, so that
/// every cache it uses is that CPU's and a failure of ours means no free slot anywhere.
fn same_size(fast: bool, size: u64, seed: u64) -> Result<SameSize> {
    let first = cpu::online_cpus().next().ok_or(ENODEV)?;
    let out = KBox::pin_init(
        new_spinlock!(None::<Result<SameSize>>, "aikrs_iova_test"),
        GFP_KERNEL,
    )?;
    kthread::run_on_each_online_cpu(&|c| {
        if c == first {
            let r = same_size_run(fast, size, seed);
            *out.lock() = Some(r);
        }
    })?;
    let r = out.lock().take();
    r.ok_or(EINVAL)?
}

/// Runs one random sequence (sizes from one page to 1 GiB, power-of-two or not, the
/// domain limit or a lower per-call one, frees of random live ranges) through this
/// allocator and through iova.c, and checks that both honour the contract on every call:
/// size-aligned, inside `[start, limit]`, no overlap with any live range of the same
/// allocator; and that free space is conserved. `fast` picks our cached path against
/// `alloc_iova_fast`/`free_iova_fast`, else our tree path against `alloc_iova`/`free_iova`.
/// Returns the calls that succeeded in both.
///
/// The two are not compared call by call here: with mixed sizes and limits their
/// placements differ by design (see [`same_size_run`]), so their free space diverges and
/// so may the success of a later call. [`same_size_run`] compares them.
fn run_contract(t: &Test, fast: bool, seed: u64) -> Result<u32> {
    let (start, limit) = (1u64, (1u64 << 24) - 1);
    let span = limit - start + 1;
    let ours = domain(start, limit, 4096, fast)?;
    let theirs = if fast {
        IovaDomain::new_with_rcaches(kernel::page::PAGE_SIZE, start as usize)?
    } else {
        IovaDomain::new(kernel::page::PAGE_SIZE, start as usize)?
    };
    let mut rng = Rng::new(seed);
    let mut live_o: KVec<(u64, u64)> = KVec::new();
    let mut live_t: KVec<(u64, u64)> = KVec::new();
    let mut both = 0u32;
    for _ in 0..800 {
        // Limits above 4 GiB: below it iova.c's 32-bit fast-fail heuristics come in.
        let lim = if rng.below(2) == 0 {
            limit
        } else {
            (1 << 21) + rng.below(limit - (1 << 21))
        };
        if live_o.is_empty() || rng.below(10) < 6 {
            let order = rng.below(19);
            let size = if rng.below(2) == 0 {
                1 << order
            } else {
                ((1u64 << order) + rng.below(1 << order)).min(1 << 18)
            };
            let o = ours.alloc(size, lim);
            let th = if fast {
                theirs.alloc_fast(size as usize, lim as usize, true)
            } else {
                theirs
                    .alloc(size as usize, lim as usize, true)
                    .ok()
                    .map(|i| i.pfn_lo())
            };
            if let Ok(p) = o {
                aikrs_expect!(
                    t,
                    honours_contract(p, size, start, lim),
                    "ours {p:#x}+{size}"
                );
                aikrs_expect!(
                    t,
                    !overlaps_any(&live_o, p, size),
                    "ours overlaps at {p:#x}"
                );
                live_o.push((p, size), GFP_KERNEL)?;
            }
            if let Some(q) = th {
                let q = q as u64;
                // alloc_iova_fast rounds small sizes up to a power of two.
                let s = if fast && size < 32 {
                    size.next_power_of_two()
                } else {
                    size
                };
                aikrs_expect!(
                    t,
                    honours_contract(q, s, start, lim),
                    "iova.c {q:#x}+{size}"
                );
                aikrs_expect!(t, !overlaps_any(&live_t, q, s), "iova.c overlaps at {q:#x}");
                live_t.push((q, size), GFP_KERNEL)?;
            }
            if o.is_ok() && th.is_some() {
                both += 1;
            }
        } else {
            let i = rng.below(live_o.len() as u64) as usize;
            if let Some((p, s)) = swap_remove(&mut live_o, i) {
                aikrs_expect_eq!(t, ours.free(p, s), Ok(()));
            }
            let j = rng.below(live_t.len() as u64) as usize;
            if let Some((q, s)) = swap_remove(&mut live_t, j) {
                if fast {
                    theirs.free_fast(q as usize, s as usize);
                } else {
                    theirs.free_pfn(q as usize);
                }
            }
        }
    }
    // Conservation: the tree's free pages plus the live and cached ranges are the span;
    // iova.c's free gaps plus its live ranges too (uncached case: nothing is parked).
    let used_o: u64 = live_o.iter().map(|&(_, s)| s).sum();
    if fast {
        ours.drain();
    }
    let st = ours.stats();
    aikrs_expect_eq!(t, st.tree.allocated_pages, used_o);
    aikrs_expect_eq!(t, st.tree.free_pages + used_o, span);
    if !fast {
        let used_t: u64 = live_t.iter().map(|&(_, s)| s).sum();
        aikrs_expect_eq!(
            t,
            theirs.free_stats(limit as usize).free as u64 + used_t,
            span
        );
    }
    for &(p, s) in live_o.iter() {
        aikrs_expect_eq!(t, ours.free(p, s), Ok(()));
    }
    for &(q, s) in live_t.iter() {
        if fast {
            theirs.free_fast(q as usize, s as usize);
        } else {
            theirs.free_pfn(q as usize);
        }
    }
    ours.drain();
    aikrs_expect_eq!(t, ours.stats().tree.free_pages, span);
    Ok(both)
}

/// This allocator against iova.c on the same requests: tree path against `alloc_iova`,
/// cached path against `alloc_iova_fast`. Same-size runs, call by call: the same pfn on
/// the tree path, the same success on both (see [`same_size_run`]); then random runs of
/// mixed sizes and limits, in which both must honour the contract.
fn equivalence(t: &Test) -> Result {
    for (fast, size) in [
        (false, 1),
        (false, 3),
        (false, 8),
        (false, 512),
        (false, 1 << 18),
        (true, 1),
        (true, 3),
        (true, 32),
        (true, 64),
        (true, 1 << 18),
    ] {
        let r = same_size(fast, size, 0x5eed_0000 ^ size)?;
        let (call, ours, theirs, expected) = r.first;
        aikrs_expect!(
            t,
            r.mismatches == 0,
            "fast={fast} size={size}: {} calls differ; first, call {call}: ours {ours:#x}, \
             iova.c {theirs:#x}, expected {expected:#x} (all ones: failed)",
            r.mismatches
        );
        aikrs_expect!(
            t,
            r.contract == 0 && r.errors == 0,
            "fast={fast} size={size}: {} answers off the slots or on a live one, {} errors",
            r.contract,
            r.errors
        );
        // Fill, around full, fill again: every run must have met both outcomes.
        aikrs_expect!(
            t,
            r.both_ok >= 2 * SLOTS as u64 && r.both_failed >= 2,
            "fast={fast} size={size}: {} calls succeeded and {} failed in both",
            r.both_ok,
            r.both_failed
        );
        aikrs_expect!(
            t,
            r.free_ours == r.span && r.free_theirs == r.span,
            "fast={fast} size={size}: free after the run: ours {}, iova.c {}, of {}",
            r.free_ours,
            r.free_theirs,
            r.span
        );
        kernel::pr_info!(
            "equivalence (fast={fast}, size {size}): {} calls succeeded in both, {} failed in both\n",
            r.both_ok,
            r.both_failed
        );
    }
    for (fast, seed) in [
        (false, 0x1234_5678_9abc_def1),
        (false, 77),
        (true, 0x0bad_cafe),
        (true, 99),
    ] {
        let both = run_contract(t, fast, seed)?;
        kernel::pr_info!("contract (fast={fast}): {both} calls succeeded in both\n");
    }
    Ok(())
}

/// Per-CPU magazines: a freed range is handed out again from this CPU's cache; overflow
/// goes to the depot; `drain` returns everything to the tree.
fn caches(t: &Test) -> Result {
    let (start, limit) = (1u64, (1u64 << 30) - 1);
    let d = domain(start, limit, 4096, true)?;
    let span = limit - start + 1;
    let before = d.stats();
    // Migration between the two calls would only make the second a miss, so pin via the
    // hit counter rather than the CPU: both run in this kthread, usually on one CPU.
    let p = d.alloc(512, limit)?;
    d.free(p, 512)?;
    let q = d.alloc(512, limit)?;
    let after = d.stats();
    aikrs_expect!(t, after.cpu.hits > before.cpu.hits, "no cache hit");
    aikrs_expect_eq!(t, q, p);
    d.free(q, 512)?;

    // 300 frees of one size overflow both magazines (2 x 64) into the depot.
    let mut v = KVec::new();
    for _ in 0..300 {
        v.push(d.alloc(4, limit)?, GFP_KERNEL)?;
    }
    for &p in v.iter() {
        d.free(p, 4)?;
    }
    let st = d.stats();
    // All 301 ranges sit in caches (this CPU's magazines and the depot) unless the test
    // thread migrated, in which case some are still parked on the other CPU: either way
    // nothing went back to the tree.
    aikrs_expect_eq!(t, st.cached, 301);
    aikrs_expect_eq!(t, st.tree.allocated_pages, 300 * 4 + 512);
    // Every cached range is parked in the live set, nothing else is in it.
    aikrs_expect_eq!(t, st.parked, 301);
    aikrs_expect_eq!(t, st.live, 0);
    // Served from the caches again, then all back to the tree.
    let mut v = KVec::new();
    for _ in 0..300 {
        v.push(d.alloc(4, limit)?, GFP_KERNEL)?;
    }
    let st2 = d.stats();
    aikrs_expect!(t, st2.cpu.hits + st2.cpu.depot_hits >= st.cpu.hits + 128);
    for &p in v.iter() {
        d.free(p, 4)?;
    }
    d.drain();
    let st = d.stats();
    aikrs_expect_eq!(t, st.cached, 0);
    aikrs_expect_eq!(t, st.tree.free_pages, span);
    aikrs_expect_eq!(t, st.tree.free_blocks, 1);
    aikrs_expect_eq!(t, (st.live, st.parked, st.lost), (0, 0, 0));

    // This CPU's cache in use (as an interrupt arriving mid-section finds it; no
    // migration inside): a free goes straight to the tree, an allocation comes from the
    // tree, and both still validate.
    let p = d.alloc(8, limit)?;
    let busy = d.with_cache_busy(|| {
        let freed = d.free(p, 8);
        let again = d.free(p, 8);
        let q = d.alloc(8, limit);
        (freed, again, q)
    });
    aikrs_expect!(t, busy.is_some());
    if let Some((freed, again, q)) = busy {
        aikrs_expect_eq!(t, freed, Ok(()));
        aikrs_expect_eq!(
            t,
            again,
            Err(EINVAL),
            "double free while the cache was busy"
        );
        aikrs_expect!(t, q.is_ok());
        if let Ok(q) = q {
            aikrs_expect_eq!(t, d.stats().live, 1);
            d.free(q, 8)?;
        }
    }
    d.drain();
    let st = d.stats();
    aikrs_expect_eq!(t, st.tree.free_pages, span);
    aikrs_expect_eq!(t, (st.live, st.parked, st.lost), (0, 0, 0));

    // Storage sized for 4 live allocations: the fifth and later fail cleanly.
    let small = domain(start, limit, 4, true)?;
    let mut got = KVec::new();
    let mut enomem = 0;
    for _ in 0..200 {
        match small.alloc(1 + (got.len() as u64 % 3), limit) {
            Ok(p) => got.push((p, 1 + (got.len() as u64 % 3)), GFP_KERNEL)?,
            Err(e) => {
                aikrs_expect_eq!(t, e, ENOMEM);
                enomem += 1;
            }
        }
    }
    aikrs_expect!(t, enomem > 0, "storage never ran out");
    for &(p, s) in got.iter() {
        small.free(p, s)?;
    }
    small.drain();
    let st = small.stats();
    aikrs_expect!(
        t,
        st.tree.free_pages == span,
        "free {} of {span}: {} allocations, {} cached, {} bad frees, {} live",
        st.tree.free_pages,
        got.len(),
        st.cached,
        st.bad_frees,
        st.tree.allocations
    );
    Ok(())
}

/// An allocation the tree cannot serve while the space sits in this CPU's magazines
/// flushes them and succeeds (as iova.c's `flush_rcache` retry), and counts no failure;
/// one that fails after the flush counts one. On every CPU, each in a thread bound to it
/// (a migration between the frees and the allocation would leave the ranges in another
/// CPU's magazines, which an allocation cannot reach).
fn flush_and_retry(t: &Test) -> Result {
    // 16384 pages: a magazine of this domain holds 16 ranges of 4 pages (span / 2^10),
    // none of 128 pages (see `DomainCore::new`). 127 ranges of 128 pages (from the
    // tree) and 32 of 4 pages fill it exactly; the 32 freed fill this CPU's two
    // magazines of that order, and whatever does not fit goes to the depot: cached
    // either way, and the tree is empty.
    let (start, limit) = (1u64 << 14, (1u64 << 15) - 1);
    let ran = AtomicU32::new(0);
    // A bitmask per step of the CPUs where it went wrong.
    let not_cached = AtomicU64::new(0);
    let retry_failed = AtomicU64::new(0);
    let miscounted = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    // What a CPU where the precondition failed saw.
    let (seen_cached, seen_free) = (AtomicU64::new(0), AtomicU64::new(0));
    let work = |cpu: u32| {
        let bit = 1u64 << (cpu % 64);
        let step = || -> Result {
            let d = domain(start, limit, 256, true)?;
            let mut big = KVec::with_capacity(127, GFP_KERNEL)?;
            for _ in 0..127 {
                big.push(d.alloc(128, limit)?, GFP_KERNEL)?;
            }
            let mut v = KVec::with_capacity(32, GFP_KERNEL)?;
            for _ in 0..32 {
                v.push(d.alloc(4, limit)?, GFP_KERNEL)?;
            }
            for &p in v.iter() {
                d.free(p, 4)?;
            }
            let st = d.stats();
            if st.cached != 32 || st.tree.free_pages != 0 {
                // The case would check nothing.
                not_cached.fetch_or(bit, Ordering::Relaxed);
                seen_cached.store(st.cached, Ordering::Relaxed);
                seen_free.store(st.tree.free_pages, Ordering::Relaxed);
                return Ok(());
            }
            // Another order: a cache miss, the tree is empty, the flush makes room.
            let before = st.failed;
            let Ok(p) = d.alloc(8, limit) else {
                retry_failed.fetch_or(bit, Ordering::Relaxed);
                return Ok(());
            };
            let no_count = d.stats().failed == before;
            // 120 pages free now: no 256-page range, flush or not. One failure, counted
            // once.
            let full = d.alloc(256, limit) == Err(ENOSPC);
            if !no_count || !full || d.stats().failed != before + 1 {
                miscounted.fetch_or(bit, Ordering::Relaxed);
            }
            d.free(p, 8)?;
            for &b in big.iter() {
                d.free(b, 128)?;
            }
            Ok(())
        };
        if step().is_err() {
            errors.fetch_or(bit, Ordering::Relaxed);
        }
        ran.fetch_add(1, Ordering::Relaxed);
    };
    kthread::run_on_each_online_cpu(&work)?;
    aikrs_expect_eq!(t, ran.load(Ordering::Relaxed), cpu::num_online_cpus());
    aikrs_expect_eq!(
        t,
        errors.load(Ordering::Relaxed),
        0,
        "an unexpected error (CPU mask)"
    );
    aikrs_expect!(
        t,
        not_cached.load(Ordering::Relaxed) == 0,
        "the freed ranges did not all stay in the magazines: CPU mask {:#x}, {} cached, {} pages free in the tree",
        not_cached.load(Ordering::Relaxed),
        seen_cached.load(Ordering::Relaxed),
        seen_free.load(Ordering::Relaxed)
    );
    aikrs_expect_eq!(
        t,
        retry_failed.load(Ordering::Relaxed),
        0,
        "ENOSPC while the space sat in this CPU's magazines (CPU mask)"
    );
    aikrs_expect_eq!(
        t,
        miscounted.load(Ordering::Relaxed),
        0,
        "failed allocations miscounted (CPU mask)"
    );
    Ok(())
}

/// Bad arguments get an errno and change nothing.
fn bad_arguments(t: &Test) -> Result {
    aikrs_expect!(t, domain(10, 9, 16, true).is_err());
    aikrs_expect!(t, domain(1, 100, 0, true).is_err());

    let (start, limit) = (16u64, (1u64 << 20) - 1);
    let span = limit - start + 1;
    let d = domain(start, limit, 256, true)?;
    let p = d.alloc(4, limit)?;
    let q = d.alloc(3, limit)?;
    d.reserve(0x100, 0x1ff)?;
    let before = d.stats();

    aikrs_expect_eq!(t, d.alloc(0, limit), Err(EINVAL));
    aikrs_expect_eq!(t, d.alloc(span + 1, limit), Err(EINVAL));
    aikrs_expect_eq!(t, d.alloc(1, start - 1), Err(EINVAL));
    aikrs_expect_eq!(t, d.alloc(1 << 19, 0x1ff), Err(ENOSPC));
    aikrs_expect_eq!(t, d.free(p, 0), Err(EINVAL));
    aikrs_expect_eq!(t, d.free(p + 1, 4), Err(EINVAL));
    aikrs_expect_eq!(t, d.free(p, 8), Err(EINVAL));
    aikrs_expect_eq!(t, d.free(q, 5), Err(EINVAL));
    aikrs_expect_eq!(t, d.free(0x100, 0x100), Err(EINVAL));
    aikrs_expect_eq!(t, d.free(0x12340, 4), Err(EINVAL));
    aikrs_expect_eq!(t, d.free(u64::MAX - 1, 3), Err(EINVAL));
    aikrs_expect_eq!(t, d.reserve(0x300, 0x2ff), Err(EINVAL));
    aikrs_expect_eq!(t, d.reserve(p, p), Err(EBUSY));

    let after = d.stats();
    aikrs_expect_eq!(t, after.tree, before.tree);
    // Every refused free but the zero-size one (refused before any lookup) is counted.
    aikrs_expect_eq!(t, after.bad_frees, 6);

    // Double frees, cached size and tree size.
    d.free(p, 4)?;
    aikrs_expect_eq!(t, d.free(p, 4), Err(EINVAL));
    d.free(q, 3)?;
    aikrs_expect_eq!(t, d.free(q, 3), Err(EINVAL));
    // The range reserved stays reserved; everything else is free again.
    d.drain();
    let st = d.stats();
    aikrs_expect_eq!(t, st.tree.free_pages, span - 0x100);
    aikrs_expect_eq!(t, st.tree.allocations, 0);
    Ok(())
}

/// One kernel thread per CPU allocating and freeing concurrently. Every page of every
/// range handed out is claimed in a shared ownership array with compare-and-swap, so two
/// live ranges that overlap are caught at once.
fn stress(t: &Test) -> Result {
    const OPS: u32 = 20000;
    let (start, limit) = (1u64, (1u64 << 16) - 1);
    let span = limit - start + 1;
    let d = domain(start, limit, 4096, true)?;
    let mut owner = KVVec::with_capacity(span as usize + 1, GFP_KERNEL)?;
    for _ in 0..=span {
        owner.push(AtomicU32::new(0), GFP_KERNEL)?;
    }
    let overlaps = AtomicU64::new(0);
    let contract = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let ops = AtomicU64::new(0);
    let line = kthread::StartBarrier::new(kernel::aikrs::cpu::num_online_cpus());

    let work = |cpu: u32| {
        // Start together, so that the threads really overlap.
        line.wait();
        let id = cpu + 1;
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ (u64::from(cpu) << 32 | 1));
        let mut live: KVec<(u64, u64)> = match KVec::with_capacity(64, GFP_KERNEL) {
            Ok(v) => v,
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let claim = |p: u64, s: u64, from: u32, to: u32| -> bool {
            let mut ok = true;
            for pg in p..p + s {
                if let Some(o) = owner.get(pg as usize) {
                    ok &= o
                        .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                }
            }
            ok
        };
        for i in 0..OPS {
            let want_alloc = live.is_empty() || (live.len() < 48 && rng.below(3) != 0);
            if want_alloc && i < OPS - 100 {
                let size = if rng.below(8) == 0 {
                    3 + rng.below(20)
                } else {
                    1 << rng.below(7)
                };
                match d.alloc(size, limit) {
                    Ok(p) => {
                        if !honours_contract(p, size, start, limit) {
                            contract.fetch_add(1, Ordering::Relaxed);
                        }
                        if !claim(p, size, 0, id) {
                            overlaps.fetch_add(1, Ordering::Relaxed);
                        }
                        if live.push((p, size), GFP_KERNEL).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Running out of space under contention is legal; other errors not.
                    Err(e) if e == ENOSPC => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else if !live.is_empty() {
                let j = rng.below(live.len() as u64) as usize;
                if let Some((p, s)) = swap_remove(&mut live, j) {
                    if !claim(p, s, id, 0) {
                        overlaps.fetch_add(1, Ordering::Relaxed);
                    }
                    if d.free(p, s).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            ops.fetch_add(1, Ordering::Relaxed);
        }
        for &(p, s) in live.iter() {
            claim(p, s, id, 0);
            if d.free(p, s).is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    kthread::run_on_each_online_cpu(&work)?;

    let n = line.arrived();
    aikrs_expect!(t, n >= 2, "stress ran on {n} CPU(s); it needs at least 2");
    aikrs_expect_eq!(t, overlaps.load(Ordering::Relaxed), 0);
    aikrs_expect_eq!(t, contract.load(Ordering::Relaxed), 0);
    aikrs_expect_eq!(t, errors.load(Ordering::Relaxed), 0);
    aikrs_expect_eq!(
        t,
        ops.load(Ordering::Relaxed),
        u64::from(OPS) * u64::from(n)
    );
    d.drain();
    let st = d.stats();
    aikrs_expect_eq!(t, st.tree.free_pages, span);
    aikrs_expect_eq!(t, st.tree.allocations, 0);
    aikrs_expect_eq!(t, st.bad_frees, 0);
    kernel::pr_info!(
        "stress: {n} CPUs, {} ops, cache hits {}, depot hits {}, tree allocs {}\n",
        ops.load(Ordering::Relaxed),
        st.cpu.hits,
        st.cpu.depot_hits,
        st.tree_allocs
    );
    Ok(())
}

aikrs_kunit_suite!(
    aikrs_iova,
    [
        functional,
        equivalence,
        caches,
        flush_and_retry,
        bad_arguments,
        stress
    ]
);
