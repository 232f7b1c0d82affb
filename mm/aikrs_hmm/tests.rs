// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `aikrs_hmm_table`: the device page table over kmalloc'ed nodes.
//!
//! The table itself is property-tested on the host against a model (`core/tests/`);
//! these cases check it again in the kernel, with the kernel pool: exact lookups,
//! splits, statistics and node counts after each kind of operation, the kernel errors,
//! allocation failures (a pool with a node limit), reservation, teardown without leaks
//! (a shared node account), and a few thousand random operations against a reference.

use crate::pt::{Leaf, Perm, Protected, HUGE_PAGES, HUGE_SIZE, MAX_ALLOCS_MAP, MAX_PFN, VA_END};
use crate::table::{DeviceTable, NodeAccount, NodePool};
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::aikrs::kunit::Test;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::{aikrs_expect, aikrs_expect_eq, aikrs_kunit_suite};

const K4: u64 = crate::pt::PAGE_SIZE;
const M2: u64 = HUGE_SIZE;
const G1: u64 = 1 << 30;
const G512: u64 = 1 << 39;

const R: Perm = Perm::READ;
const RW: Perm = Perm::READ.union(Perm::WRITE);
const RA: Perm = Perm::READ.union(Perm::ATOMIC);
const RWA: Perm = RW.union(Perm::ATOMIC);

/// A table with a plain pool.
fn new_table() -> DeviceTable {
    DeviceTable::new(NodePool::new(GFP_KERNEL))
}

/// A new node account and a table whose pool counts its nodes there.
fn accounted_table() -> Result<(NodeAccount, DeviceTable)> {
    let account = Arc::new(AtomicUsize::new(0), GFP_KERNEL)?;
    let dt = DeviceTable::new(NodePool::new(GFP_KERNEL).with_account(account.clone()));
    Ok((account, dt))
}

/// What `lookup` returns for a mapped page.
fn leaf(pfn: u64, perm: Perm, huge: bool) -> Option<Leaf> {
    Some(Leaf { pfn, perm, huge })
}

/// The entries `for_each` visits in `[start, end)`.
fn entries(dt: &DeviceTable, start: u64, end: u64) -> Result<KVec<(u64, Leaf)>> {
    let mut v = KVec::new();
    let mut res = Ok(());
    dt.for_each(start, end, |va, l| match v.push((va, l), GFP_KERNEL) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            res = Err(Error::from(e));
            ControlFlow::Break(())
        }
    })?;
    res?;
    Ok(v)
}

/// Expects the table to use `tables` nodes, and the pool to agree.
fn expect_tables(t: &Test, dt: &DeviceTable, tables: u64) {
    aikrs_expect_eq!(t, dt.stats().tables, tables, "tables in use");
    aikrs_expect_eq!(
        t,
        dt.pool().live() as u64,
        tables,
        "pool nodes in use vs expected tables"
    );
}

/// Expects the counters of 4 KiB and huge entries.
fn expect_counts(t: &Test, dt: &DeviceTable, pages: u64, huge: u64) {
    let s = dt.stats();
    aikrs_expect_eq!(t, (s.pages, s.huge), (pages, huge), "(pages, huge)");
}

/// 4 KiB entries at addresses needing tables at every level, up to the top of the
/// 48-bit space: exact lookups (aligned or not), unmapped neighbours, replacement in
/// place, `for_each` order and bounds, and the exact number of tables.
fn map_lookup_4k(t: &Test) -> Result {
    let mut dt = new_table();
    let vas = [
        0,
        K4,
        M2 + 2 * K4,
        G1,
        G512 + 5 * G1 + 7 * M2 + 9 * K4,
        VA_END - K4,
    ];
    let perm = |i: usize| if i & 1 == 0 { R } else { RW };
    for (i, &va) in vas.iter().enumerate() {
        dt.map(va, 100 + i as u64, perm(i))?;
    }
    for (i, &va) in vas.iter().enumerate() {
        let want = leaf(100 + i as u64, perm(i), false);
        aikrs_expect_eq!(t, dt.lookup(va), want, "lookup of a mapped page");
        aikrs_expect_eq!(t, dt.lookup(va + K4 - 1), want, "lookup inside the page");
    }
    for va in [
        2 * K4,
        M2,
        M2 + K4,
        M2 + 3 * K4,
        G1 - K4,
        G1 + K4,
        VA_END - 2 * K4,
    ] {
        aikrs_expect_eq!(t, dt.lookup(va), None, "an unmapped neighbour");
    }
    aikrs_expect_eq!(t, dt.lookup(VA_END), None);
    aikrs_expect_eq!(t, dt.lookup(u64::MAX), None);
    expect_counts(t, &dt, 6, 0);
    // Root; 512 GiB region 0: its table, 1 GiB region 0 (two 4 KiB tables), 1 GiB region
    // 1 (one); regions 512 GiB 1 and 511: three tables each.
    expect_tables(t, &dt, 13);

    // Replacing an entry allocates nothing and keeps the counts.
    dt.map(K4, 999, Perm::ALL)?;
    aikrs_expect_eq!(t, dt.lookup(K4), leaf(999, Perm::ALL, false));
    expect_counts(t, &dt, 6, 0);
    expect_tables(t, &dt, 13);

    let l = |pfn, perm| Leaf {
        pfn,
        perm,
        huge: false,
    };
    let all = entries(&dt, 0, VA_END)?;
    let want = [
        (0, l(100, R)),
        (K4, l(999, Perm::ALL)),
        (M2 + 2 * K4, l(102, R)),
        (G1, l(103, RW)),
        (G512 + 5 * G1 + 7 * M2 + 9 * K4, l(104, R)),
        (VA_END - K4, l(105, RW)),
    ];
    aikrs_expect_eq!(t, all.as_slice(), &want[..], "for_each over everything");
    let some = entries(&dt, K4, G1)?;
    aikrs_expect_eq!(
        t,
        some.as_slice(),
        &want[1..3],
        "for_each over [4 KiB, 1 GiB)"
    );
    Ok(())
}

/// Huge entries: lookups at several page indices give base + index; `for_each` visits
/// a huge entry once at its base; a huge map replaces 4 KiB entries and frees their
/// table; a huge entry is replaced in place.
fn huge_map_lookup(t: &Test) -> Result {
    let mut dt = new_table();
    dt.map_huge(M2, 3 * HUGE_PAGES, RW)?;
    for i in [0, 1, 255, 510, 511] {
        let want = leaf(3 * HUGE_PAGES + i, RW, true);
        aikrs_expect_eq!(t, dt.lookup(M2 + i * K4), want, "page index in the entry");
        aikrs_expect_eq!(t, dt.lookup(M2 + i * K4 + 123), want, "unaligned address");
    }
    aikrs_expect_eq!(t, dt.lookup(M2 - K4), None);
    aikrs_expect_eq!(t, dt.lookup(2 * M2), None);
    expect_counts(t, &dt, 0, 1);
    aikrs_expect_eq!(t, dt.stats().mapped_pages(), 512);
    expect_tables(t, &dt, 3);

    // The last huge page of the address space, with the largest pfns.
    dt.map_huge(VA_END - M2, MAX_PFN + 1 - HUGE_PAGES, Perm::ALL)?;
    aikrs_expect_eq!(t, dt.lookup(VA_END - K4), leaf(MAX_PFN, Perm::ALL, true));
    expect_tables(t, &dt, 5);

    let e = entries(&dt, M2 + 7 * K4, M2 + 8 * K4)?;
    let want = [(
        M2,
        Leaf {
            pfn: 3 * HUGE_PAGES,
            perm: RW,
            huge: true,
        },
    )];
    aikrs_expect_eq!(t, e.as_slice(), &want[..], "a huge entry seen from inside");

    // A huge map over 4 KiB entries replaces them and frees their table.
    dt.map(4 * M2, 1, R)?;
    dt.map(4 * M2 + K4, 2, R)?;
    expect_counts(t, &dt, 2, 2);
    expect_tables(t, &dt, 6);
    dt.map_huge(4 * M2, 0, R)?;
    expect_counts(t, &dt, 0, 3);
    expect_tables(t, &dt, 5);
    aikrs_expect_eq!(t, dt.lookup(4 * M2 + K4), leaf(1, R, true));

    // Replacing a huge entry in place.
    dt.map_huge(M2, 7 * HUGE_PAGES, R)?;
    aikrs_expect_eq!(t, dt.lookup(M2 + 3 * K4), leaf(7 * HUGE_PAGES + 3, R, true));
    expect_counts(t, &dt, 0, 3);
    expect_tables(t, &dt, 5);
    aikrs_expect_eq!(t, dt.stats().splits, 0);
    Ok(())
}

/// A 4 KiB map inside a huge entry splits it into 512 entries of the same pfns and
/// permissions (one more table, `splits` counted once), then replaces the one page.
fn split_on_4k_map(t: &Test) -> Result {
    let mut dt = new_table();
    dt.map_huge(M2, 1024, RW)?;
    expect_tables(t, &dt, 3);
    dt.map(M2 + 5 * K4, 7, R)?;
    let s = dt.stats();
    aikrs_expect_eq!(t, (s.splits, s.huge, s.pages), (1, 0, 512));
    expect_tables(t, &dt, 4);
    aikrs_expect_eq!(t, dt.lookup(M2 + 5 * K4), leaf(7, R, false), "the new page");
    aikrs_expect_eq!(t, dt.lookup(M2), leaf(1024, RW, false));
    aikrs_expect_eq!(t, dt.lookup(M2 + 4 * K4), leaf(1028, RW, false));
    aikrs_expect_eq!(t, dt.lookup(M2 + 511 * K4), leaf(1535, RW, false));
    let e = entries(&dt, M2, 2 * M2)?;
    aikrs_expect_eq!(t, e.len(), 512, "4 KiB entries after the split");
    aikrs_expect!(t, e.iter().all(|(_, l)| !l.huge), "a huge entry survived");

    // The entry is split already: no second split.
    dt.map(M2 + 6 * K4, 8, R)?;
    aikrs_expect_eq!(t, dt.stats().splits, 1);
    // A huge map over it restores one huge entry and frees the 4 KiB table.
    dt.map_huge(M2, 1024, RW)?;
    expect_counts(t, &dt, 0, 1);
    expect_tables(t, &dt, 3);
    aikrs_expect_eq!(t, dt.lookup(M2 + 5 * K4), leaf(1029, RW, true));
    Ok(())
}

/// Invalidating part of a huge entry splits it and removes only the covered pages;
/// a whole one goes without a split; emptied tables are freed.
fn partial_invalidate_huge(t: &Test) -> Result {
    let mut dt = new_table();
    dt.map_huge(2 * M2, 2048, RW)?;
    dt.map_huge(3 * M2, 2560, R)?;
    let n = dt.invalidate(2 * M2 + 10 * K4, 2 * M2 + 20 * K4)?;
    aikrs_expect_eq!(t, n, 10, "pages unmapped");
    aikrs_expect_eq!(t, dt.stats().splits, 1);
    expect_counts(t, &dt, 502, 1);
    expect_tables(t, &dt, 4);
    aikrs_expect_eq!(t, dt.lookup(2 * M2 + 9 * K4), leaf(2057, RW, false));
    aikrs_expect_eq!(t, dt.lookup(2 * M2 + 10 * K4), None);
    aikrs_expect_eq!(t, dt.lookup(2 * M2 + 19 * K4), None);
    aikrs_expect_eq!(t, dt.lookup(2 * M2 + 20 * K4), leaf(2068, RW, false));
    aikrs_expect_eq!(t, dt.lookup(3 * M2), leaf(2560, R, true), "the neighbour");

    // Across a boundary: the tail of the split entry and the head of the next one.
    let n = dt.invalidate(3 * M2 - 2 * K4, 3 * M2 + 3 * K4)?;
    aikrs_expect_eq!(t, n, 5);
    aikrs_expect_eq!(t, dt.stats().splits, 2);
    expect_counts(t, &dt, 500 + 509, 0);
    expect_tables(t, &dt, 5);
    aikrs_expect_eq!(t, dt.lookup(3 * M2 + 3 * K4), leaf(2563, R, false));

    // A whole huge entry goes without a split; an unmapped range unmaps nothing.
    dt.map_huge(5 * M2, 0, R)?;
    aikrs_expect_eq!(t, dt.invalidate(5 * M2, 6 * M2), Ok(512));
    aikrs_expect_eq!(t, dt.stats().splits, 2);
    aikrs_expect_eq!(t, dt.invalidate(8 * M2, 9 * M2), Ok(0));
    expect_tables(t, &dt, 5);

    aikrs_expect_eq!(t, dt.invalidate(2 * M2, 4 * M2), Ok(1009));
    expect_counts(t, &dt, 0, 0);
    expect_tables(t, &dt, 0);
    aikrs_expect!(t, dt.is_empty());
    Ok(())
}

/// Protect clears WRITE and keeps the rest (4 KiB and whole huge entries, without a
/// split); unchanged entries are not counted or split; clearing READ unmaps.
fn protect_removes_write(t: &Test) -> Result {
    let mut dt = new_table();
    for i in 0..16 {
        dt.map(i * K4, 100 + i, RWA)?;
    }
    dt.map_huge(M2, 512, RW)?;
    let p = dt.protect(4 * K4, 2 * M2, Perm::WRITE)?;
    let want = Protected {
        downgraded: 12 + 512,
        removed: 0,
    };
    aikrs_expect_eq!(t, p, want, "WRITE cleared from 12 pages and a huge entry");
    for i in 0..16 {
        let perm = if i < 4 { RWA } else { RA };
        aikrs_expect_eq!(t, dt.lookup(i * K4), leaf(100 + i, perm, false));
    }
    aikrs_expect_eq!(t, dt.lookup(M2 + 9 * K4), leaf(521, R, true), "still huge");
    aikrs_expect_eq!(t, dt.stats().splits, 0);
    expect_counts(t, &dt, 16, 1);

    // Again: nothing changes, nothing is counted.
    let p = dt.protect(4 * K4, 2 * M2, Perm::WRITE)?;
    aikrs_expect_eq!(t, p, Protected::default(), "protecting twice");
    // A permission a partially covered huge entry lacks: no split.
    let p = dt.protect(M2 + K4, M2 + 2 * K4, Perm::WRITE)?;
    aikrs_expect_eq!(t, p, Protected::default());
    aikrs_expect_eq!(t, dt.stats().splits, 0, "split for nothing");
    // Clearing nothing does nothing.
    aikrs_expect_eq!(
        t,
        dt.protect(0, VA_END, Perm::NONE),
        Ok(Protected::default())
    );

    // Clearing READ unmaps, splitting the partially covered huge entry.
    let p = dt.protect(M2, M2 + 4 * K4, Perm::READ)?;
    let want = Protected {
        downgraded: 0,
        removed: 4,
    };
    aikrs_expect_eq!(t, p, want);
    aikrs_expect_eq!(t, dt.stats().splits, 1);
    aikrs_expect_eq!(t, dt.lookup(M2 + 3 * K4), None);
    aikrs_expect_eq!(t, dt.lookup(M2 + 4 * K4), leaf(516, R, false));
    expect_counts(t, &dt, 16 + 508, 0);
    expect_tables(t, &dt, 5);
    Ok(())
}

/// Invalidating everything unmaps every page and frees every table; the nodes stay as
/// spares, are reused by later maps, and `shrink` releases them.
fn invalidate_all_frees(t: &Test) -> Result {
    let (account, mut dt) = accounted_table()?;
    let vas = [0, K4, 3 * M2 + K4, G1 + 5 * K4, 7 * G512, VA_END - K4];
    for (i, &va) in vas.iter().enumerate() {
        dt.map(va, i as u64, RW)?;
    }
    dt.map_huge(8 * M2, 0, R)?;
    dt.map_huge(3 * G512 + 9 * M2, 1024, RW)?;
    dt.map(3 * G512 + 9 * M2 + 100 * K4, 5, R)?; // a split
    let mapped = dt.stats().mapped_pages();
    aikrs_expect_eq!(t, mapped, 6 + 512 + 512);
    aikrs_expect!(t, dt.pool().live() > 0);

    aikrs_expect_eq!(t, dt.invalidate(0, VA_END), Ok(mapped), "pages unmapped");
    let s = dt.stats();
    aikrs_expect_eq!(t, (s.pages, s.huge, s.tables), (0, 0, 0));
    aikrs_expect_eq!(t, dt.pool().live(), 0, "pool nodes still in use");
    aikrs_expect!(t, dt.is_empty());
    for va in vas {
        aikrs_expect_eq!(t, dt.lookup(va), None);
    }
    aikrs_expect_eq!(t, entries(&dt, 0, VA_END)?.len(), 0);

    // The nodes are spares now, and mapping again reuses them.
    let nodes = dt.pool().nodes();
    aikrs_expect_eq!(t, dt.pool().spare(), nodes);
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), nodes);
    for (i, &va) in vas.iter().enumerate() {
        dt.map(va, i as u64, RW)?;
    }
    aikrs_expect_eq!(t, dt.pool().nodes(), nodes, "spares not reused");
    aikrs_expect_eq!(t, dt.invalidate(0, VA_END), Ok(vas.len() as u64));
    dt.shrink(0);
    aikrs_expect_eq!(t, (dt.pool().nodes(), dt.pool().spare()), (0, 0));
    aikrs_expect_eq!(
        t,
        account.load(Ordering::Relaxed),
        0,
        "shrink released nothing"
    );
    Ok(())
}

/// Bad arguments get `EINVAL` (unaligned, empty or reversed range, pfn too large, no
/// READ) or `EFAULT` (beyond the 48-bit space) and change nothing.
fn bad_input(t: &Test) -> Result {
    let mut dt = new_table();
    dt.map_huge(M2, 512, RW)?;
    let before = (dt.stats(), dt.pool().live());
    let nop = |_: u64, _: Leaf| ControlFlow::<()>::Continue(());

    aikrs_expect_eq!(t, dt.map(K4 + 1, 1, R), Err(EINVAL), "unaligned va");
    aikrs_expect_eq!(t, dt.map(VA_END, 1, R), Err(EFAULT), "va at VA_END");
    aikrs_expect_eq!(t, dt.map(!0xfff, 1, R), Err(EFAULT), "kernel-half va");
    aikrs_expect_eq!(t, dt.map(0, MAX_PFN + 1, R), Err(EINVAL), "pfn too large");
    aikrs_expect_eq!(t, dt.map(0, 1, Perm::WRITE), Err(EINVAL), "no READ");
    aikrs_expect_eq!(
        t,
        dt.map_huge(M2 + K4, 0, R),
        Err(EINVAL),
        "unaligned huge va"
    );
    aikrs_expect_eq!(t, dt.map_huge(0, 1, R), Err(EINVAL), "unaligned huge pfn");
    aikrs_expect_eq!(
        t,
        dt.map_huge(VA_END, 0, R),
        Err(EFAULT),
        "huge va at VA_END"
    );
    aikrs_expect_eq!(
        t,
        dt.map_huge(0, 0, Perm::NONE),
        Err(EINVAL),
        "huge, no READ"
    );
    aikrs_expect_eq!(t, dt.invalidate(K4, K4), Err(EINVAL), "empty range");
    aikrs_expect_eq!(t, dt.invalidate(2 * K4, K4), Err(EINVAL), "reversed range");
    aikrs_expect_eq!(t, dt.invalidate(1, M2), Err(EINVAL), "unaligned start");
    aikrs_expect_eq!(
        t,
        dt.invalidate(M2, 2 * M2 - 1),
        Err(EINVAL),
        "unaligned end"
    );
    aikrs_expect_eq!(
        t,
        dt.invalidate(0, VA_END + K4),
        Err(EFAULT),
        "end past VA_END"
    );
    aikrs_expect_eq!(
        t,
        dt.invalidate(VA_END, VA_END + K4),
        Err(EFAULT),
        "range past VA_END"
    );
    aikrs_expect_eq!(t, dt.protect(M2, M2, Perm::WRITE), Err(EINVAL), "empty");
    aikrs_expect_eq!(t, dt.protect(M2, M2 + 7, Perm::WRITE), Err(EINVAL));
    aikrs_expect_eq!(t, dt.protect(0, u64::MAX, Perm::READ), Err(EFAULT));
    aikrs_expect_eq!(t, dt.for_each(M2, 0, nop), Err(EINVAL), "for_each reversed");
    aikrs_expect_eq!(t, dt.for_each(0, VA_END + K4, nop), Err(EFAULT));

    aikrs_expect_eq!(
        t,
        (dt.stats(), dt.pool().live()),
        before,
        "a refusal changed"
    );
    aikrs_expect_eq!(t, dt.lookup(M2 + K4), leaf(513, RW, true));
    // The extremes are accepted.
    aikrs_expect_eq!(t, dt.invalidate(VA_END - K4, VA_END), Ok(0));
    aikrs_expect_eq!(t, dt.map(VA_END - K4, MAX_PFN, R), Ok(()));
    aikrs_expect_eq!(t, dt.lookup(VA_END - 1), leaf(MAX_PFN, R, false));
    Ok(())
}

/// A pool with a node limit: a map needing more nodes than allowed fails with `ENOMEM`
/// and leaves the table (and the nodes in use) unchanged, a split that cannot allocate
/// refuses the map, an invalidate drops the whole huge entry instead; reservation
/// allocates ahead.
fn pool_exhaustion(t: &Test) -> Result {
    let mut dt = new_table();
    dt.map(0, 1, R)?;
    expect_tables(t, &dt, 4);
    dt.set_limit(Some(6));
    let before = dt.stats();
    // Three tables needed (512 GiB region 1), two allowed.
    aikrs_expect_eq!(t, dt.map(G512, 2, R), Err(ENOMEM));
    aikrs_expect_eq!(t, dt.stats(), before, "a failed map changed the counters");
    expect_tables(t, &dt, 4);
    aikrs_expect_eq!(t, dt.lookup(G512), None);
    let e = entries(&dt, 0, VA_END)?;
    let want = [(
        0,
        Leaf {
            pfn: 1,
            perm: R,
            huge: false,
        },
    )];
    aikrs_expect_eq!(t, e.as_slice(), &want[..], "the table after a failed map");

    // A huge entry there needs two.
    dt.map_huge(G512, 0, R)?;
    expect_tables(t, &dt, 6);
    // Splitting it would need a seventh.
    aikrs_expect_eq!(t, dt.map(G512 + K4, 9, RW), Err(ENOMEM));
    aikrs_expect_eq!(
        t,
        dt.lookup(G512 + K4),
        leaf(1, R, true),
        "huge entry damaged"
    );
    aikrs_expect_eq!(t, dt.stats().splits, 0);
    // Invalidate never fails: without a node for the split it unmaps the whole entry,
    // and frees the tables left empty.
    aikrs_expect_eq!(t, dt.invalidate(G512 + K4, G512 + 2 * K4), Ok(512));
    aikrs_expect_eq!(t, dt.stats().split_failures, 1);
    aikrs_expect_eq!(t, dt.lookup(G512), None);
    expect_tables(t, &dt, 4);

    // Without the limit the map works.
    dt.set_limit(None);
    dt.map(G512, 2, R)?;
    expect_tables(t, &dt, 7);
    aikrs_expect_eq!(t, dt.lookup(G512), leaf(2, R, false));
    Ok(())
}

/// `reserve` allocates spare nodes ahead: a map needing that many takes them without
/// allocating (with `GFP_NOWAIT` set, as in a path that must not sleep).
fn reserve_preallocates(t: &Test) -> Result {
    let (account, mut dt) = accounted_table()?;
    dt.reserve(MAX_ALLOCS_MAP)?;
    let pool = dt.pool();
    aikrs_expect_eq!(t, (pool.live(), pool.spare(), pool.nodes()), (0, 4, 4));
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), 4);
    dt.set_flags(GFP_NOWAIT);
    dt.map(G1 + 3 * K4, 3, R)?;
    let pool = dt.pool();
    aikrs_expect_eq!(t, (pool.live(), pool.spare(), pool.nodes()), (4, 0, 4));
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), 4, "allocated beyond");
    dt.set_flags(GFP_KERNEL);
    dt.reserve(2)?;
    dt.reserve(2)?;
    aikrs_expect_eq!(t, dt.pool().nodes(), 6, "reserve allocated twice");
    Ok(())
}

/// Maps, huge maps, a split, an invalidate (spares) and a reservation, for teardown.
fn populate(dt: &mut DeviceTable) -> Result {
    for i in 0..64 {
        dt.map(i * 37 * M2 + i * K4, i, RW)?;
    }
    dt.map_huge(G512 + M2, 0, R)?;
    dt.map_huge(G512 + 2 * M2, 512, R)?;
    dt.map(G512 + M2 + K4, 1, RW)?;
    dt.invalidate(30 * 37 * M2, 40 * 37 * M2)?;
    dt.reserve(8)
}

/// Dropping a populated table frees every node (shared account back to 0); `clear`
/// unmaps everything and keeps the nodes as spares.
fn teardown_frees_all(t: &Test) -> Result {
    let (account, mut dt) = accounted_table()?;
    populate(&mut dt)?;
    let pool = dt.pool();
    aikrs_expect!(t, pool.live() > 0 && pool.spare() > 0);
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), pool.nodes());
    drop(dt);
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), 0, "nodes leaked");

    let (account, mut dt) = accounted_table()?;
    populate(&mut dt)?;
    let nodes = dt.pool().nodes();
    dt.clear();
    aikrs_expect_eq!(t, dt.stats().tables, 0);
    aikrs_expect_eq!(t, dt.pool().live(), 0);
    aikrs_expect_eq!(t, dt.pool().spare(), nodes);
    aikrs_expect!(t, dt.is_empty());
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), nodes);
    drop(dt);
    aikrs_expect_eq!(t, account.load(Ordering::Relaxed), 0, "nodes leaked");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Random operations against a reference.

/// Pages of the window of the random test: 16 MiB.
const WIN_PAGES: usize = 4096;
/// The window straddles the 1 GiB boundary (and of course 2 MiB ones).
const WIN_START: u64 = G1 - 8 * (1 << 20);
const WIN_END: u64 = WIN_START + WIN_PAGES as u64 * K4;
/// Huge pages (2 MiB chunks) of the window.
const CHUNKS: usize = WIN_PAGES / HUGE_PAGES as usize;
/// The model's flag of pages mapped by a huge entry.
const HUGE: u64 = 0x80;

/// xorshift64: deterministic.
struct Rng(u64);

impl Rng {
    /// The next number (never 0 from a non-zero seed).
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (`n > 0`; the bias does not matter here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The reference: one word per page of the window, 0 if unmapped, else
/// `pfn << 8 | HUGE (if mapped by a huge entry) | perm bits`.
struct Model {
    pages: KVec<u64>,
    splits: u64,
}

/// The model word of a mapped page.
fn enc(pfn: u64, perm: Perm, huge: bool) -> u64 {
    (pfn << 8) | if huge { HUGE } else { 0 } | u64::from(perm.bits())
}

/// The `lookup` result a model word stands for.
fn dec(w: u64) -> Option<Leaf> {
    if w == 0 {
        return None;
    }
    Some(Leaf {
        pfn: w >> 8,
        perm: Perm::from_bits_truncate((w & 0xf) as u8),
        huge: w & HUGE != 0,
    })
}

/// The address of page `page` of the window.
fn page_va(page: usize) -> u64 {
    WIN_START + page as u64 * K4
}

impl Model {
    /// Nothing mapped.
    fn new() -> Result<Self> {
        Ok(Self {
            pages: KVec::from_elem(0, WIN_PAGES, GFP_KERNEL)?,
            splits: 0,
        })
    }

    /// The pages of chunk `c`.
    fn chunk(&mut self, c: usize) -> &mut [u64] {
        let start = c * HUGE_PAGES as usize;
        &mut self.pages[start..start + HUGE_PAGES as usize]
    }

    /// Turns the huge entry of chunk `c`, if any, into 4 KiB entries.
    fn split(&mut self, c: usize) {
        let ch = self.chunk(c);
        if ch[0] & HUGE != 0 {
            ch.iter_mut().for_each(|w| *w &= !HUGE);
            self.splits += 1;
        }
    }

    /// As `DeviceTable::map`.
    fn map(&mut self, page: usize, pfn: u64, perm: Perm) {
        self.split(page / HUGE_PAGES as usize);
        self.pages[page] = enc(pfn, perm, false);
    }

    /// As `DeviceTable::map_huge` of chunk `c`.
    fn map_huge(&mut self, c: usize, pfn: u64, perm: Perm) {
        for (i, w) in self.chunk(c).iter_mut().enumerate() {
            *w = enc(pfn + i as u64, perm, true);
        }
    }

    /// Invalidates (`clear == None`) or protects pages `[first, last)`.
    fn edit(&mut self, first: usize, last: usize, clear: Option<Perm>) -> Protected {
        let newp = |p: Perm| match clear {
            None => None,
            Some(c) => Some(p.difference(c)).filter(|q| q.contains(Perm::READ)),
        };
        let mut out = Protected::default();
        let hp = HUGE_PAGES as usize;
        for c in first / hp..=(last - 1) / hp {
            let (lo, hi) = (first.max(c * hp), last.min((c + 1) * hp));
            let head = self.pages[c * hp];
            if head & HUGE != 0 {
                let Some(old) = dec(head) else { continue };
                if newp(old.perm) == Some(old.perm) {
                    continue;
                }
                if hi - lo < hp {
                    self.split(c);
                }
            }
            for w in &mut self.pages[lo..hi] {
                let Some(old) = dec(*w) else { continue };
                match newp(old.perm) {
                    Some(p) if p == old.perm => {}
                    Some(p) => {
                        *w = enc(old.pfn, p, old.huge);
                        out.downgraded += 1;
                    }
                    None => {
                        *w = 0;
                        out.removed += 1;
                    }
                }
            }
        }
        out
    }

    /// The number of mapped pages.
    fn mapped(&self) -> u64 {
        self.pages.iter().filter(|&&w| w != 0).count() as u64
    }

    /// `(pages, huge, tables)` the table must report: tables are the root, the one of
    /// 512 GiB region 0, one per 1 GiB region and one per 2 MiB chunk with 4 KiB entries.
    fn expected(&self) -> (u64, u64, u64) {
        let hp = HUGE_PAGES as usize;
        let small = self.pages.iter().filter(|&&w| w != 0 && w & HUGE == 0);
        let huge = self.pages.iter().filter(|&&w| w & HUGE != 0).count() / hp;
        let mut regions = [false; 2];
        let mut tables = 0;
        for c in 0..CHUNKS {
            let ch = &self.pages[c * hp..(c + 1) * hp];
            if ch.iter().any(|&w| w != 0) {
                regions[((WIN_START + c as u64 * M2) / G1) as usize] = true;
            }
            if ch.iter().any(|&w| w != 0 && w & HUGE == 0) {
                tables += 1;
            }
        }
        let nregions = regions.iter().filter(|&&r| r).count() as u64;
        if nregions > 0 {
            tables += 2 + nregions;
        }
        (small.count() as u64, huge as u64, tables)
    }
}

/// Compares the pages `[first, last)` and the counters with the model; false (after
/// reporting) on the first difference.
fn check_range(t: &Test, dt: &DeviceTable, m: &Model, first: usize, last: usize, op: u32) -> bool {
    for page in first..last {
        let va = page_va(page) + (page as u64 * 37) % K4;
        let (got, want) = (dt.lookup(va), dec(m.pages[page]));
        if !aikrs_expect_eq!(t, got, want, "lookup") {
            pr_err!("aikrs_hmm: op {} page {}\n", op, page);
            return false;
        }
    }
    let s = dt.stats();
    let (pages, huge, tables) = m.expected();
    aikrs_expect_eq!(
        t,
        (s.pages, s.huge, s.tables),
        (pages, huge, tables),
        "counters"
    ) && aikrs_expect_eq!(t, (s.splits, s.split_failures), (m.splits, 0), "splits")
        && aikrs_expect_eq!(t, dt.pool().live() as u64, tables, "pool nodes")
}

/// Compares the whole window, lookups and `for_each`, with the model.
fn check_all(t: &Test, dt: &DeviceTable, m: &Model, op: u32) -> Result<bool> {
    if !check_range(t, dt, m, 0, WIN_PAGES, op) {
        return Ok(false);
    }
    // Entries come in ascending order, without overlap: each starts at or after
    // `next`, the end of the previous one.
    let (mut seen, mut next, mut bad) = (0u64, WIN_START - M2, None);
    dt.for_each(WIN_START, WIN_END, |va, l| {
        let page = (va.wrapping_sub(WIN_START) / K4) as usize;
        let ok = va >= next
            && if l.huge {
                va % M2 == 0
                    && (0..HUGE_PAGES as usize).all(|i| {
                        m.pages.get(page + i) == Some(&enc(l.pfn + i as u64, l.perm, true))
                    })
            } else {
                m.pages.get(page) == Some(&enc(l.pfn, l.perm, false))
            };
        if !ok {
            bad = Some((va, l));
            return ControlFlow::Break(());
        }
        next = va + l.size();
        seen += l.pages();
        ControlFlow::Continue(())
    })?;
    Ok(
        aikrs_expect_eq!(t, bad, None, "for_each entry against the model")
            && aikrs_expect_eq!(t, seen, m.mapped(), "pages seen by for_each"),
    )
}

/// A random page range of the window: mostly small, some up to two huge pages, a few
/// to the end of the window.
fn random_range(rng: &mut Rng) -> (usize, usize) {
    let first = rng.below(WIN_PAGES as u64) as usize;
    let len: u64 = match rng.below(10) {
        0..=4 => 1 + rng.below(16),
        5..=8 => 1 + rng.below(2 * HUGE_PAGES),
        _ => WIN_PAGES as u64,
    };
    (first, (first + len as usize).min(WIN_PAGES))
}

/// 3000 random maps, huge maps, invalidates, protects and refused calls in a 16 MiB
/// window across the 1 GiB boundary, each compared with the model (results, the pages
/// touched, every counter, the nodes in use); the whole window every 128 operations.
fn random_ops(t: &Test) -> Result {
    const OPS: u32 = 3000;
    let mut dt = new_table();
    let mut m = Model::new()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pfn_mask = (1u64 << 40) - 1;
    for op in 0..OPS {
        let (first, last, ok) = match rng.below(20) {
            0..=6 => {
                let page = rng.below(WIN_PAGES as u64) as usize;
                let pfn = rng.next() & pfn_mask;
                let perm = Perm::from_bits_truncate(rng.next() as u8) | R;
                dt.map(page_va(page), pfn, perm)?;
                m.map(page, pfn, perm);
                (page, page + 1, true)
            }
            7..=9 => {
                let c = rng.below(CHUNKS as u64) as usize;
                let pfn = rng.next() & pfn_mask & !(HUGE_PAGES - 1);
                let perm = Perm::from_bits_truncate(rng.next() as u8) | R;
                dt.map_huge(page_va(c * HUGE_PAGES as usize), pfn, perm)?;
                m.map_huge(c, pfn, perm);
                let first = c * HUGE_PAGES as usize;
                (first, first + HUGE_PAGES as usize, true)
            }
            10..=13 => {
                let (first, last) = random_range(&mut rng);
                let n = dt.invalidate(page_va(first), page_va(last))?;
                let want = m.edit(first, last, None).removed;
                (
                    first,
                    last,
                    aikrs_expect_eq!(t, n, want, "invalidated pages"),
                )
            }
            14..=18 => {
                let (first, last) = random_range(&mut rng);
                let mut clear = Perm::from_bits_truncate(rng.next() as u8);
                if rng.below(4) != 0 {
                    clear = clear.difference(R);
                }
                let p = dt.protect(page_va(first), page_va(last), clear)?;
                let want = m.edit(first, last, Some(clear));
                (first, last, aikrs_expect_eq!(t, p, want, "protect result"))
            }
            _ => {
                // Refused: an unaligned address.
                let page = rng.below(WIN_PAGES as u64) as usize;
                let va = page_va(page) + 1 + rng.below(K4 - 1);
                let ok = aikrs_expect_eq!(t, dt.map(va, 1, R), Err(EINVAL))
                    && aikrs_expect_eq!(t, dt.invalidate(va, va + K4), Err(EINVAL))
                    && aikrs_expect_eq!(t, dt.protect(page_va(page), va, R), Err(EINVAL));
                (page, page + 1, ok)
            }
        };
        if !ok || !check_range(t, &dt, &m, first, last, op) {
            pr_err!("aikrs_hmm: random_ops: mismatch at op {}\n", op);
            return Ok(());
        }
        if op % 128 == 127 && !check_all(t, &dt, &m, op)? {
            return Ok(());
        }
    }
    if !check_all(t, &dt, &m, OPS)? {
        return Ok(());
    }
    let mapped = m.mapped();
    aikrs_expect_eq!(t, dt.invalidate(WIN_START, WIN_END), Ok(mapped));
    expect_tables(t, &dt, 0);
    Ok(())
}

aikrs_kunit_suite!(
    aikrs_hmm_table,
    [
        map_lookup_4k,
        huge_map_lookup,
        split_on_4k_map,
        partial_invalidate_huge,
        protect_removes_write,
        invalidate_all_frees,
        bad_input,
        pool_exhaustion,
        reserve_preallocates,
        teardown_frees_all,
        random_ops
    ]
);
