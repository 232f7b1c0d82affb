// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `aikrs_iova`: the kernel domain (locking, magazines, validation) on top of
//! the range tree, which the host crate's property tests check in depth.

use crate::domain::{Config, Domain};
use crate::rng::Rng;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::aikrs::{compat::swap_remove, iova::IovaDomain, kthread, kunit::Test};
use kernel::prelude::*;
use kernel::{aikrs_expect, aikrs_expect_eq, aikrs_kunit_suite};

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

/// Runs one random sequence (sizes from one page to 1 GiB, power-of-two or not, the
/// domain limit or a lower per-call one, frees of random live ranges) through this
/// allocator and through iova.c, and checks that both honour the contract on every call:
/// size-aligned, inside `[start, limit]`, no overlap with any live range of the same
/// allocator; and that free space is conserved. `fast` picks our cached path against
/// `alloc_iova_fast`/`free_iova_fast`, else our tree path against `alloc_iova`/`free_iova`.
///
/// The placements themselves differ by design: iova.c searches down from a cached node
/// (the last allocation), this allocator takes the highest fit under the limit.
fn run_equivalence(t: &Test, fast: bool, seed: u64) -> Result<(u32, u32)> {
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
    let (mut same, mut both) = (0u32, 0u32);
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
            if let (Ok(p), Some(q)) = (o, th) {
                both += 1;
                same += u32::from(p == q as u64);
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
    Ok((same, both))
}

/// The equivalence runs: tree path against `alloc_iova`, cached path against
/// `alloc_iova_fast`, two seeds each.
fn equivalence(t: &Test) -> Result {
    for (fast, seed) in [
        (false, 0x1234_5678_9abc_def1),
        (false, 77),
        (true, 0x0bad_cafe),
        (true, 99),
    ] {
        let (same, both) = run_equivalence(t, fast, seed)?;
        kernel::pr_info!(
            "equivalence (fast={fast}): {both} calls succeeded in both, {same} at the same pfn\n"
        );
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
    [functional, equivalence, caches, bad_arguments, stress]
);
