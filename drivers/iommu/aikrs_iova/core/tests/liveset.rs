// SPDX-License-Identifier: GPL-2.0

//! Tests of the lock-free [`LiveSet`] of live `(pfn, order)` pairs.
//!
//! - A property test against a `HashMap<u64, u32>` model: random `insert`/`remove`/`get`
//!   on tables of 4 to 1024 slots, with pfns from pools built to collide (consecutive
//!   small pfns, multiples of `2^k`, pfns around `MAX_PFN`, pfns homed at the end and the
//!   start of the table so that clusters wrap around) plus pfns above `MAX_PFN`. After
//!   every operation the result, `count()`, every model entry's `get` and the raw slots
//!   must agree with the model. Inserts respect the caller contract: only a pfn that is
//!   not live is inserted.
//! - Long insert/remove churn that leaves no empty slot, only live keys and tombstones.
//! - Threads: disjoint churn, racing removals of the same keys, and wrong-order removals
//!   racing with right-order ones.
//! - Units: `slots_needed`, `new`'s checks, key edge values.
//!
//! The tests use `LiveSet<&[AtomicU64]>` so that they can also look at the slots, whose
//! encoding (`EMPTY`, `TOMB`, `pfn << 6 | (order + 1)`) is documented by the module.

use aikrs_iova_core::liveset::{LiveSet, SetError, EMPTY, MAX_ORDER, MAX_PFN, TOMB};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

type Set<'a> = LiveSet<&'a [AtomicU64]>;

/// The threaded tests only race for real with CPUs to themselves: they hold this lock
/// exclusively, the other long tests share it.
static CPUS: RwLock<()> = RwLock::new(());

fn cpus_shared() -> RwLockReadGuard<'static, ()> {
    CPUS.read().unwrap_or_else(PoisonError::into_inner)
}

fn cpus_exclusive() -> RwLockWriteGuard<'static, ()> {
    CPUS.write().unwrap_or_else(PoisonError::into_inner)
}

/// `slots` empty slots.
fn storage(slots: usize) -> Vec<AtomicU64> {
    (0..slots).map(|_| AtomicU64::new(EMPTY)).collect()
}

fn new_set(mem: &[AtomicU64]) -> Set<'_> {
    let Ok(set) = LiveSet::new(mem) else {
        panic!("storage of {} slots refused", mem.len());
    };
    set
}

/// The documented slot value of a live `(pfn, order)`.
fn key(pfn: u64, order: u32) -> u64 {
    pfn << 6 | u64::from(order + 1)
}

fn valid(pfn: u64, order: u32) -> bool {
    pfn <= MAX_PFN && order <= MAX_ORDER
}

/// The home slot of `pfn` in a table of `slots` slots, as `LiveSet` computes it (Fibonacci
/// hashing). Only used to build pools that wrap around the end of the table;
/// `wrap_pools_do_wrap` checks it against the real set.
fn home(pfn: u64, slots: usize) -> usize {
    (pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - slots.trailing_zeros())) as usize
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------
// Model test.

/// Up to `min(slots / 2, 48)` pfns whose home is one of the two last or two first slots
/// (scanned upwards from `base` in steps of 1 or 2^12), then consecutive others below
/// `base`.
fn wrapping_pool(slots: usize, n: usize, base: u64, aligned: bool) -> Vec<u64> {
    let step = if aligned { 1u64 << 12 } else { 1 };
    let base = base & !(step - 1);
    let want = (slots / 2).min(48);
    let mut pool = Vec::with_capacity(n);
    let mut p = base;
    // 4 of `slots` homes match: this finds `want` pfns long before the bound.
    for _ in 0..slots * 64 {
        if pool.len() == want {
            break;
        }
        let h = home(p, slots);
        if h < 2 || h >= slots - 2 {
            pool.push(p);
        }
        p += step;
    }
    let mut q = base;
    while pool.len() < n {
        q -= step;
        pool.push(q);
    }
    pool
}

/// About `2 * slots` distinct pfns, built to collide, plus a few above `MAX_PFN`.
fn pool(slots: usize) -> impl Strategy<Value = Vec<u64>> {
    let n = 2 * slots as u64;
    let base = prop_oneof![
        // Consecutive small pfns.
        Just((0..n).collect::<Vec<_>>()),
        // Consecutive pfns from anywhere.
        (0..=MAX_PFN - n).prop_map(move |b| (b..b + n).collect()),
        // Consecutive pfns up to MAX_PFN, or across it (the top `over` are invalid).
        (0u64..8).prop_map(move |over| (0..n).map(|i| MAX_PFN + over - i).collect()),
        // Multiples of 2^k (aligned allocations), dense; the top ones overflow MAX_PFN
        // for k near 50.
        (0u32..=50).prop_map(move |k| (0..n).map(|i| i << k).collect()),
        // Random multiples of 2^k, below MAX_PFN.
        (12u32..=56, any::<u64>()).prop_map(move |(k, seed)| {
            let mut x = seed;
            (0..n)
                .map(|_| splitmix(&mut x) & MAX_PFN & !((1u64 << k) - 1))
                .collect()
        }),
        // Clusters that wrap around the end of the table.
        ((1u64 << 40)..(1u64 << 50), any::<bool>())
            .prop_map(move |(base, aligned)| wrapping_pool(slots, n as usize, base, aligned)),
    ];
    (base, any::<u64>()).prop_map(|(mut pool, seed)| {
        // Invalid pfns: aliases of pool pfns that only differ above the key's pfn bits
        // (a missing range check would make them collide), and the very top.
        let mut x = seed;
        for _ in 0..3 {
            let p = pool[(splitmix(&mut x) % pool.len() as u64) as usize] & MAX_PFN;
            pool.push(p | 1 << 58);
            pool.push(p | 1 << 63);
        }
        pool.push(MAX_PFN + 1);
        pool.push(u64::MAX);
        let mut seen = HashSet::new();
        pool.retain(|p| seen.insert(*p));
        pool
    })
}

fn order() -> impl Strategy<Value = u32> {
    prop_oneof![
        16 => 0..=MAX_ORDER,
        2 => Just(0),
        2 => Just(MAX_ORDER),
        1 => Just(MAX_ORDER + 1),
        1 => (MAX_ORDER + 2)..=u32::MAX,
    ]
}

/// One operation: `roll` picks insert, remove or get (see [`Scenario::insert_pct`]).
#[derive(Clone, Debug)]
struct Op {
    roll: u8,
    at: Index,
    /// For a remove: use the model's order if the pfn is live (else `order`).
    model_order: bool,
    order: u32,
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..100, any::<Index>(), any::<bool>(), order()).prop_map(|(roll, at, model_order, order)| {
        Op {
            roll,
            at,
            model_order,
            order,
        }
    })
}

#[derive(Clone, Debug)]
struct Scenario {
    log2: u32,
    pool: Vec<u64>,
    /// Percentage of inserts; the rest is 2/3 removes and 1/3 gets.
    insert_pct: u8,
    ops: Vec<Op>,
}

/// Tables of `2^log2` slots with `ops_per_slot` operations per slot.
fn scenario(
    log2: std::ops::RangeInclusive<u32>,
    ops_per_slot: usize,
) -> impl Strategy<Value = Scenario> {
    log2.prop_flat_map(move |log2| {
        let slots = 1usize << log2;
        (
            pool(slots),
            35u8..=95,
            prop::collection::vec(op(), ops_per_slot * slots),
        )
            .prop_map(move |(pool, insert_pct, ops)| Scenario {
                log2,
                pool,
                insert_pct,
                ops,
            })
    })
}

/// How often each outcome happened, to check that the generators reach them all.
#[derive(Default, Debug)]
struct Outcomes {
    inserted: usize,
    full: usize,
    full_1024: usize,
    invalid_pfn: usize,
    invalid_order: usize,
    removed: usize,
    missing_absent: usize,
    missing_wrong_order: usize,
    missing_invalid: usize,
    get_hit: usize,
    get_miss: usize,
    /// Live keys stored below their home slot (their probe wrapped around).
    wrapped: usize,
    /// Operations on a table with no empty slot left.
    no_empty: usize,
}

/// The slots hold exactly the model's keys, once each, and otherwise `EMPTY` or `TOMB`.
/// Returns the number of wrapped keys and whether an empty slot is left.
fn check_slots(
    mem: &[AtomicU64],
    model: &HashMap<u64, u32>,
) -> Result<(usize, bool), TestCaseError> {
    let mut seen = HashSet::new();
    let mut wrapped = 0;
    let mut empty = false;
    for (i, s) in mem.iter().enumerate() {
        let v = s.load(Ordering::Relaxed);
        if v == EMPTY {
            empty = true;
            continue;
        }
        if v == TOMB {
            continue;
        }
        let pfn = v >> 6;
        prop_assert_eq!(
            model.get(&pfn).map(|&o| key(pfn, o)),
            Some(v),
            "slot {} holds {:#x}, not a live key",
            i,
            v
        );
        prop_assert!(seen.insert(pfn), "pfn {:#x} stored twice", pfn);
        if home(pfn, mem.len()) > i {
            wrapped += 1;
        }
    }
    prop_assert_eq!(seen.len(), model.len());
    Ok((wrapped, empty))
}

fn check_all(
    set: &Set<'_>,
    mem: &[AtomicU64],
    model: &HashMap<u64, u32>,
    out: &mut Outcomes,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(set.count(), model.len());
    for (&pfn, &order) in model {
        prop_assert_eq!(set.get(pfn), Some(order), "entry {:#x} lost", pfn);
    }
    let (wrapped, empty) = check_slots(mem, model)?;
    out.wrapped += wrapped;
    out.no_empty += usize::from(!empty);
    Ok(())
}

fn run(s: &Scenario, out: &mut Outcomes) -> Result<(), TestCaseError> {
    let slots = 1usize << s.log2;
    let mem = storage(slots);
    let set = new_set(&mem);
    prop_assert_eq!(set.slots(), slots);
    let pool = &s.pool;
    let mut model: HashMap<u64, u32> = HashMap::new();
    let remove_below = s.insert_pct + (100 - s.insert_pct) / 3 * 2;
    for op in &s.ops {
        let i = op.at.index(pool.len());
        if op.roll < s.insert_pct {
            // The caller contract: insert only a pfn that is not live.
            let Some(pfn) = (0..pool.len())
                .map(|d| pool[(i + d) % pool.len()])
                .find(|p| !model.contains_key(p))
            else {
                continue;
            };
            let order = op.order;
            let want = if pfn > MAX_PFN {
                out.invalid_pfn += 1;
                Err(SetError::InvalidArgument)
            } else if order > MAX_ORDER {
                out.invalid_order += 1;
                Err(SetError::InvalidArgument)
            } else if model.len() == slots {
                out.full += 1;
                out.full_1024 += usize::from(slots == 1024);
                Err(SetError::Full)
            } else {
                out.inserted += 1;
                model.insert(pfn, order);
                Ok(())
            };
            prop_assert_eq!(
                set.insert(pfn, order),
                want,
                "insert({:#x}, {})",
                pfn,
                order
            );
        } else if op.roll < remove_below {
            let pfn = pool[i];
            let live = model.get(&pfn).copied();
            let order = match live {
                Some(o) if op.model_order => o,
                _ => op.order,
            };
            let want = if live == Some(order) {
                out.removed += 1;
                model.remove(&pfn);
                Ok(())
            } else {
                if !valid(pfn, order) {
                    out.missing_invalid += 1;
                } else if live.is_some() {
                    out.missing_wrong_order += 1;
                } else {
                    out.missing_absent += 1;
                }
                Err(SetError::Missing)
            };
            prop_assert_eq!(
                set.remove(pfn, order),
                want,
                "remove({:#x}, {})",
                pfn,
                order
            );
        } else {
            let pfn = pool[i];
            let want = model.get(&pfn).copied();
            if want.is_some() {
                out.get_hit += 1;
            } else {
                out.get_miss += 1;
            }
            prop_assert_eq!(set.get(pfn), want, "get({:#x})", pfn);
        }
        check_all(&set, &mem, &model, out)?;
    }
    // Nothing outside the model is found either, and absent pfns cannot be removed.
    for &pfn in pool {
        prop_assert_eq!(set.get(pfn), model.get(&pfn).copied(), "get({:#x})", pfn);
        if !model.contains_key(&pfn) {
            prop_assert_eq!(set.remove(pfn, 0), Err(SetError::Missing));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]

    /// All table sizes, 3 operations per slot: enough to fill even 1024 slots.
    #[test]
    fn matches_hashmap_model(s in scenario(2..=10, 3)) {
        let _cpus = cpus_shared();
        run(&s, &mut Outcomes::default())?;
    }

    /// Small tables and long runs: many insert/remove cycles at and near full load,
    /// so that tombstones replace every empty slot.
    #[test]
    fn matches_hashmap_model_long_runs(s in scenario(2..=6, 48)) {
        let _cpus = cpus_shared();
        run(&s, &mut Outcomes::default())?;
    }
}

/// The generators reach every outcome (so the model tests do test them), including
/// `Full` on 1024 slots, wrapped clusters and tables without an empty slot.
#[test]
fn model_test_reaches_every_outcome() {
    let _cpus = cpus_shared();
    let mut runner = TestRunner::deterministic();
    let mut out = Outcomes::default();
    for (log2, ops, cases) in [(2..=10, 3, 24), (10..=10, 3, 4), (2..=6, 48, 8)] {
        let strategy = scenario(log2, ops);
        for _ in 0..cases {
            let s = strategy.new_tree(&mut runner).expect("generate").current();
            run(&s, &mut out).expect("model test");
        }
    }
    let o = &out;
    for (what, n) in [
        ("inserted", o.inserted),
        ("full", o.full),
        ("full_1024", o.full_1024),
        ("invalid_pfn", o.invalid_pfn),
        ("invalid_order", o.invalid_order),
        ("removed", o.removed),
        ("missing_absent", o.missing_absent),
        ("missing_wrong_order", o.missing_wrong_order),
        ("missing_invalid", o.missing_invalid),
        ("get_hit", o.get_hit),
        ("get_miss", o.get_miss),
        ("wrapped", o.wrapped),
        ("no_empty", o.no_empty),
    ] {
        assert!(n > 0, "no {what} outcome in {o:?}");
    }
}

/// `home` above is the set's real hash: the wrap-around pools do home at the table's
/// ends (if this fails, update `home` so that those pools keep their bias).
#[test]
fn wrap_pools_do_wrap() {
    for log2 in [2u32, 5, 10] {
        let slots = 1usize << log2;
        for aligned in [false, true] {
            let pool = wrapping_pool(slots, 2 * slots, 1 << 45, aligned);
            for &pfn in pool.iter().take((slots / 2).min(48)) {
                let mem = storage(slots);
                let set = new_set(&mem);
                assert_eq!(set.insert(pfn, 0), Ok(()));
                let at = mem
                    .iter()
                    .position(|s| s.load(Ordering::Relaxed) == key(pfn, 0))
                    .expect("stored");
                assert!(at < 2 || at >= slots - 2, "pfn {pfn:#x} homed at {at}");
                assert_eq!(at, home(pfn, slots));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Long churn: tombstones everywhere.

/// Checks every live pair and a few absent pfns.
fn check_live(set: &Set<'_>, live: &[(u64, u32)], free: &[u64]) {
    assert_eq!(set.count(), live.len());
    for &(pfn, order) in live {
        assert_eq!(set.get(pfn), Some(order), "entry {pfn:#x} lost");
    }
    for &pfn in free.iter().take(8) {
        assert_eq!(set.get(pfn), None, "absent {pfn:#x} found");
    }
}

/// Many insert/remove cycles, first at half load, then at full load: afterwards no slot
/// is empty, yet inserts keep succeeding while fewer than `slots` keys are live and
/// lookups of absent pfns still end (each probes the whole table).
#[test]
fn churn_fills_table_with_tombstones() {
    let _cpus = cpus_shared();
    for log2 in [2u32, 3, 4, 6, 8, 10] {
        let slots = 1usize << log2;
        let n = 2 * slots as u64;
        let pools: [Vec<u64>; 3] = [
            (0..n).collect(),
            (0..n).map(|i| i << 12).collect(),
            (0..n).map(|i| MAX_PFN - i).collect(),
        ];
        for (kind, pool) in pools.into_iter().enumerate() {
            let mem = storage(slots);
            let set = new_set(&mem);
            let mut rng = (u64::from(log2) << 8) | kind as u64;
            let mut free = pool;
            let mut live: Vec<(u64, u32)> = Vec::new();
            let every = (slots / 16).max(1);
            for (step, target) in [(0, slots / 2), (1, slots)] {
                for r in 0..24 * slots {
                    let roll = splitmix(&mut rng);
                    // Insert while below the target, sometimes remove anyway.
                    if live.len() < target && (!roll.is_multiple_of(4) || live.is_empty()) {
                        let p = free.swap_remove((roll >> 8) as usize % free.len());
                        let o = (roll >> 40) as u32 % (MAX_ORDER + 1);
                        assert_eq!(set.insert(p, o), Ok(()), "step {step} op {r}");
                        live.push((p, o));
                    } else {
                        if live.len() == slots {
                            assert_eq!(set.insert(free[0], 0), Err(SetError::Full));
                        }
                        let (p, o) = live.swap_remove((roll >> 8) as usize % live.len());
                        let wrong = (o + 1 + (roll >> 40) as u32 % MAX_ORDER) % (MAX_ORDER + 1);
                        assert_eq!(set.remove(p, wrong), Err(SetError::Missing));
                        assert_eq!(set.remove(p, o), Ok(()));
                        assert_eq!(set.remove(p, o), Err(SetError::Missing));
                        assert_eq!(set.get(p), None);
                        free.push(p);
                    }
                    if r % every == 0 {
                        check_live(&set, &live, &free);
                    }
                }
                check_live(&set, &live, &free);
            }
            // The full-load step filled every slot at least once.
            assert!(mem.iter().all(|s| s.load(Ordering::Relaxed) != EMPTY));
            for &p in &free {
                assert_eq!(set.get(p), None);
                assert_eq!(set.remove(p, 0), Err(SetError::Missing));
            }
            // Drain: only tombstones left; then fill again, up to `Full`.
            for (p, o) in live.drain(..) {
                assert_eq!(set.remove(p, o), Ok(()));
                free.push(p);
            }
            assert_eq!(set.count(), 0);
            assert!(mem.iter().all(|s| s.load(Ordering::Relaxed) == TOMB));
            for &p in &free {
                assert_eq!(set.get(p), None);
            }
            for (i, &p) in free.iter().enumerate().take(slots) {
                assert_eq!(set.insert(p, i as u32 % (MAX_ORDER + 1)), Ok(()));
            }
            assert_eq!(set.count(), slots);
            assert_eq!(set.insert(free[slots], 1), Err(SetError::Full));
            for (i, &p) in free.iter().enumerate().take(slots) {
                assert_eq!(set.get(p), Some(i as u32 % (MAX_ORDER + 1)));
            }
            assert_eq!(set.get(free[slots]), None);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Threads.

const THREADS: usize = 8;

/// Each thread owns the pfns `j * THREADS + t` (interleaved with the others', so their
/// probe sequences collide), or those shifted to 4 KiB pages, and inserts, checks,
/// removes and re-inserts them with changing orders. At most 512 keys are live in 1024
/// slots, so every operation must succeed.
#[test]
fn threads_disjoint_churn() {
    let _cpus = cpus_exclusive();
    const PER_THREAD: u64 = 64;
    const ROUNDS: u32 = 800;
    for shift in [0u32, 12] {
        let mem = storage(1024);
        let set = new_set(&mem);
        let failures = AtomicUsize::new(0);
        let ops = AtomicUsize::new(0);
        let barrier = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS as u64 {
                let (set, failures, ops, barrier) = (&set, &failures, &ops, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let pfn = |j: u64| (j * THREADS as u64 + t) << shift;
                    let mut fail = 0;
                    let mut n = 0;
                    let mut ok = |r: bool| {
                        n += 1;
                        fail += usize::from(!r);
                    };
                    for round in 0..ROUNDS {
                        let order = |j: u64| (j as u32 + round) % (MAX_ORDER + 1);
                        for j in 0..PER_THREAD {
                            ok(set.insert(pfn(j), order(j)) == Ok(()));
                        }
                        for j in 0..PER_THREAD {
                            ok(set.get(pfn(j)) == Some(order(j)));
                        }
                        // Remove and re-insert every other one with another order.
                        for j in (0..PER_THREAD).step_by(2) {
                            ok(set.remove(pfn(j), order(j)) == Ok(()));
                            ok(set.get(pfn(j)).is_none());
                            ok(set.insert(pfn(j), order(j + 1)) == Ok(()));
                            ok(set.remove(pfn(j), order(j)) == Err(SetError::Missing));
                        }
                        for j in 0..PER_THREAD {
                            let o = order(j + (j + 1) % 2);
                            ok(set.get(pfn(j)) == Some(o));
                            ok(set.remove(pfn(j), o) == Ok(()));
                            ok(set.remove(pfn(j), o) == Err(SetError::Missing));
                        }
                    }
                    failures.fetch_add(fail, Ordering::Relaxed);
                    ops.fetch_add(n, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(failures.load(Ordering::Relaxed), 0);
        assert!(ops.load(Ordering::Relaxed) > 0);
        assert_eq!(set.count(), 0);
        assert!(mem
            .iter()
            .all(|s| matches!(s.load(Ordering::Relaxed), EMPTY | TOMB)));
    }
}

/// A barrier that threads leave within a few instructions of each other, so that what
/// follows really races (`std::sync::Barrier` wakes its sleepers one by one).
struct SpinBarrier {
    n: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
    /// Waits that ended while spinning, before any yield: the threads ran in parallel.
    parallel: AtomicUsize,
}

impl SpinBarrier {
    fn new(n: usize) -> Self {
        Self {
            n,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            parallel: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        let g = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == g {
            spins += 1;
            if spins.is_multiple_of(64) {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if spins < 64 {
            self.parallel.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs rounds on `threads` threads. In each, thread 0 runs `setup(round)` alone, then
/// all threads start `race(thread, round, barrier)` at once (all must wait at the barrier
/// equally often), then thread 0 runs `check(round)` alone. None of them may panic (the
/// others would wait forever): they count failures in atomics instead.
///
/// Races need threads that really run in parallel, which a loaded machine may not give
/// for a while: after `min_rounds`, rounds go on until the barrier has seen enough
/// parallel waits, or for at most a few seconds.
fn race_rounds(
    threads: usize,
    min_rounds: u32,
    setup: impl Fn(u32) + Sync,
    race: impl Fn(usize, u32, &SpinBarrier) + Sync,
    check: impl Fn(u32) + Sync,
) {
    const PARALLEL_WAITS: usize = 40_000;
    const TIME_LIMIT: Duration = Duration::from_millis(1500);
    let barrier = SpinBarrier::new(threads);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (setup, race, check, barrier, stop) = (&setup, &race, &check, &barrier, &stop);
    thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for round in 0.. {
                    if t == 0 {
                        setup(round);
                    }
                    barrier.wait();
                    race(t, round, barrier);
                    barrier.wait();
                    if t == 0 {
                        check(round);
                        let parallel = barrier.parallel.load(Ordering::Relaxed);
                        let late = started.elapsed() > TIME_LIMIT;
                        if late && parallel < PARALLEL_WAITS {
                            eprintln!(
                                "only {parallel} parallel waits in {round} rounds: weak race test"
                            );
                        }
                        let enough = parallel >= PARALLEL_WAITS || late;
                        stop.store(round + 1 >= min_rounds && enough, Ordering::Relaxed);
                    }
                    barrier.wait();
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            });
        }
    });
}

/// Threads for the racing tests: as many as there are CPUs, at least 4 and at most
/// `THREADS` (the barrier yields, so more threads than CPUs only slow it down).
fn race_threads() -> usize {
    thread::available_parallelism().map_or(4, |n| n.get().clamp(4, THREADS))
}

const KEYS: usize = 512;

/// Spins for a pseudo-random short while: threads leave a barrier in a fixed order with
/// fixed delays; jitter makes them also meet within the few instructions between the
/// load and the compare-and-swap of a removal.
fn jitter(t: u64, round: u32, i: usize) {
    let mut x = t << 40 | u64::from(round) << 20 | i as u64;
    for _ in 0..splitmix(&mut x) % 32 {
        std::hint::spin_loop();
    }
}

/// The `KEYS` colliding pairs (consecutive pfns) of a round.
fn round_pairs(round: u32) -> Vec<(u64, u32)> {
    let base = u64::from(round) * 7919;
    (0..KEYS as u64)
        .map(|i| (base + i, (i as u32 + round) % MAX_ORDER))
        .collect()
}

/// All threads remove every key of the round at once: in even rounds in lockstep (all
/// start each removal together), in odd rounds freely, odd threads backwards. Exactly
/// one removal of each key succeeds.
#[test]
fn threads_racing_removals() {
    let _cpus = cpus_exclusive();
    let mem = storage(1024);
    let set = new_set(&mem);
    let wins: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
    let failures = AtomicUsize::new(0);
    let fail = |what: bool| {
        if what {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    };
    race_rounds(
        race_threads(),
        100,
        |round| {
            for (w, &(p, o)) in wins.iter().zip(&round_pairs(round)) {
                w.store(0, Ordering::Relaxed);
                fail(set.insert(p, o) != Ok(()));
            }
        },
        |t, round, barrier| {
            let pairs = round_pairs(round);
            let lockstep = round % 2 == 0;
            let backwards = !lockstep && t % 2 == 1;
            for i in 0..KEYS {
                let i = if backwards { KEYS - 1 - i } else { i };
                let (p, o) = pairs[i];
                if lockstep {
                    barrier.wait();
                    jitter(t as u64, round, i);
                }
                match set.remove(p, o) {
                    Ok(()) => {
                        wins[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => fail(e != SetError::Missing),
                }
            }
        },
        |round| {
            for (w, &(p, _)) in wins.iter().zip(&round_pairs(round)) {
                fail(w.load(Ordering::Relaxed) != 1);
                fail(set.get(p).is_some());
            }
            fail(set.count() != 0);
        },
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(set.count(), 0);
}

/// Wrong-order removals race with right-order ones: every key is removed exactly once,
/// and only with its own order.
#[test]
fn threads_wrong_order_removals() {
    let _cpus = cpus_exclusive();
    let mem = storage(1024);
    let set = new_set(&mem);
    let right: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
    let wrong = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    race_rounds(
        race_threads(),
        100,
        |round| {
            for (r, &(p, o)) in right.iter().zip(&round_pairs(round)) {
                r.store(0, Ordering::Relaxed);
                if set.insert(p, o) != Ok(()) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        },
        |t, round, barrier| {
            let pairs = round_pairs(round);
            // Even threads use the right order, odd ones a wrong one (order + 1, or the
            // next key's order); in even rounds they start each removal together.
            for (i, &(p, o)) in pairs.iter().enumerate() {
                if round % 2 == 0 {
                    barrier.wait();
                    jitter(t as u64, round, i);
                }
                if t % 2 == 0 {
                    if set.remove(p, o) == Ok(()) {
                        right[i].fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let w = if (t + round as usize) % 4 < 2 {
                        o + 1
                    } else {
                        pairs[(i + 1) % KEYS].1
                    };
                    if w != o && set.remove(p, w) != Err(SetError::Missing) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        },
        |_| {
            for r in &right {
                if r.load(Ordering::Relaxed) != 1 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            if set.count() != 0 {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(set.count(), 0);

    // And against live, changing keys: owners cycle their pfns through even orders,
    // attackers keep removing them with odd orders. Every owner operation succeeds,
    // no attacker's does.
    const OWNERS: u64 = 4;
    const PER_OWNER: u64 = 64;
    let owner_failures = AtomicUsize::new(0);
    let attacker_wins = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..OWNERS {
            let (set, owner_failures, done) = (&set, &owner_failures, &done);
            s.spawn(move || {
                let mut fail = 0;
                for round in 0..200u32 {
                    for j in 0..PER_OWNER {
                        let p = j * OWNERS + t;
                        let o = 2 * ((j as u32 + round) % 31);
                        fail += usize::from(set.insert(p, o) != Ok(()));
                        fail += usize::from(set.remove(p, o) != Ok(()));
                        fail += usize::from(set.insert(p, o + 2) != Ok(()));
                        fail += usize::from(set.remove(p, o + 2) != Ok(()));
                    }
                }
                owner_failures.fetch_add(fail, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Release);
            });
        }
        for t in 0..(THREADS as u64 - OWNERS) {
            let (set, attacker_wins, done) = (&set, &attacker_wins, &done);
            s.spawn(move || {
                let mut round = 0u32;
                while done.load(Ordering::Acquire) < OWNERS as usize {
                    for p in 0..OWNERS * PER_OWNER {
                        let o = 2 * ((p as u32 + round + t as u32) % 31) + 1;
                        if set.remove(p, o) != Err(SetError::Missing) {
                            attacker_wins.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    round += 1;
                    // Leave the owners CPU time on a small machine.
                    thread::yield_now();
                }
            });
        }
    });
    assert_eq!(owner_failures.load(Ordering::Relaxed), 0);
    assert_eq!(attacker_wins.load(Ordering::Relaxed), 0);
    assert_eq!(set.count(), 0);
}

// ---------------------------------------------------------------------------------------
// Units.

fn slots_needed(n: usize) -> usize {
    Set::slots_needed(n)
}

#[test]
fn slots_needed_is_a_big_enough_power_of_two() {
    // Usable in constants.
    const FOUR: usize = LiveSet::<Vec<AtomicU64>>::slots_needed(0);
    assert_eq!(FOUR, 4);
    let top = 1usize << (usize::BITS - 1);
    let small = 0..100_000usize;
    let big = [top / 4 - 1, top / 4, top / 4 + 1, top / 2 - 1, top / 2];
    for n in small.chain(big) {
        let p = slots_needed(n);
        assert!(p.is_power_of_two() && p >= 4, "slots_needed({n}) = {p}");
        assert!(p / 2 >= n, "slots_needed({n}) = {p} < 2 * {n}");
        // Twice as many, rounded up: not more.
        assert!(p == 4 || p / 2 < 2 * n, "slots_needed({n}) = {p} too big");
    }
    for n in [0, 1, 2] {
        assert_eq!(slots_needed(n), 4);
    }
    assert_eq!(slots_needed(3), 8);
    assert_eq!(slots_needed(512), 1024);
    assert_eq!(slots_needed(513), 2048);
    assert_eq!(slots_needed(top / 4), top / 2);
    assert_eq!(slots_needed(top / 4 + 1), top);
    assert_eq!(slots_needed(top / 2), top);
    // Beyond that twice `n` has no power of two in `usize`: saturate.
    for n in [top / 2 + 1, top - 1, top, usize::MAX - 1, usize::MAX] {
        assert_eq!(slots_needed(n), usize::MAX, "slots_needed({n:#x})");
    }
}

#[test]
fn new_checks_its_storage() {
    for len in [0usize, 1, 2, 3, 5, 6, 7, 12, 1000, 1023, 1025] {
        let mem = storage(len);
        assert_eq!(
            LiveSet::new(&mem[..]).err(),
            Some(SetError::InvalidArgument),
            "length {len}"
        );
        assert!(LiveSet::new(mem).is_err(), "length {len}");
    }
    for len in [4usize, 8, 16, 1024] {
        let mem = storage(len);
        let set = new_set(&mem);
        assert_eq!(set.slots(), len);
        assert_eq!(set.count(), 0);
        assert_eq!(set.get(0), None);
        // Any single non-empty slot is refused.
        for at in [0, 1, len / 2, len - 1] {
            for v in [1, 64, key(3, 2), TOMB, TOMB - 1, 1 << 63] {
                let mem = storage(len);
                mem[at].store(v, Ordering::Relaxed);
                assert_eq!(
                    LiveSet::new(&mem[..]).err(),
                    Some(SetError::InvalidArgument),
                    "length {len}, slot {at} = {v:#x}"
                );
            }
        }
    }
    // Owned storage works as well as borrowed.
    let Ok(vec) = LiveSet::new(storage(8)) else {
        panic!("Vec storage refused");
    };
    assert_eq!(vec.insert(1, 2), Ok(()));
    assert_eq!(vec.get(1), Some(2));
    let Ok(boxed) = LiveSet::new(storage(4).into_boxed_slice()) else {
        panic!("Box storage refused");
    };
    assert_eq!(boxed.slots(), 4);
    assert_eq!(boxed.remove(1, 2), Err(SetError::Missing));
}

#[test]
fn keys_at_the_edges() {
    // The largest key stays clear of TOMB and the pfn survives the shift.
    assert!(key(MAX_PFN, MAX_ORDER) < TOMB);
    assert_eq!(key(MAX_PFN, MAX_ORDER) >> 6, MAX_PFN);
    const { assert!(MAX_ORDER < 63) };
    let mem = storage(4);
    let set = new_set(&mem);
    for pfn in [0, 1, MAX_PFN - 1, MAX_PFN] {
        for order in 0..=MAX_ORDER {
            assert_eq!(set.insert(pfn, order), Ok(()), "insert({pfn:#x}, {order})");
            assert_eq!(set.count(), 1);
            assert_eq!(set.get(pfn), Some(order), "get({pfn:#x}) of order {order}");
            let at = mem
                .iter()
                .filter(|s| s.load(Ordering::Relaxed) == key(pfn, order))
                .count();
            assert_eq!(at, 1, "({pfn:#x}, {order}) stored as its key");
            assert_eq!(set.remove(pfn, order ^ 1), Err(SetError::Missing));
            assert_eq!(set.remove(pfn, order), Ok(()), "remove({pfn:#x}, {order})");
            assert_eq!(set.remove(pfn, order), Err(SetError::Missing));
            assert_eq!(set.get(pfn), None);
            assert_eq!(set.count(), 0);
        }
    }
    // Both extremes live at once, and their neighbours out of range.
    assert_eq!(set.insert(0, 0), Ok(()));
    assert_eq!(set.insert(MAX_PFN, MAX_ORDER), Ok(()));
    assert_eq!(set.get(0), Some(0));
    assert_eq!(set.remove(0, 0), Ok(()));
    assert_eq!(set.get(0), None);
    assert_eq!(set.get(MAX_PFN), Some(MAX_ORDER));
    for bad in [MAX_PFN + 1, MAX_PFN + 2, 1 << 58, 1 << 63, u64::MAX] {
        assert_eq!(set.insert(bad, 0), Err(SetError::InvalidArgument));
        assert_eq!(set.remove(bad, 0), Err(SetError::Missing));
        assert_eq!(set.get(bad), None);
    }
    for bad in [MAX_ORDER + 1, MAX_ORDER + 2, 64, u32::MAX] {
        assert_eq!(set.insert(5, bad), Err(SetError::InvalidArgument));
        assert_eq!(set.insert(MAX_PFN + 1, bad), Err(SetError::InvalidArgument));
        assert_eq!(set.remove(MAX_PFN, bad), Err(SetError::Missing));
    }
    assert_eq!(set.count(), 1);
    assert_eq!(set.remove(MAX_PFN, MAX_ORDER), Ok(()));
    assert_eq!(set.count(), 0);
}

/// Storage shared with the set (`LiveSet<&[AtomicU64]>`) can be overwritten behind its
/// back with values that are not keys: no operation may panic on them.
#[test]
fn garbage_slots_do_not_panic() {
    for v in [64u64, 5 << 6, 1 << 63, TOMB - 63] {
        let mem = storage(8);
        let set = new_set(&mem);
        for s in &mem {
            s.store(v, Ordering::Relaxed);
        }
        let pfn = v >> 6;
        assert!(set.get(pfn).is_none_or(|o| o <= MAX_ORDER));
        assert!(set.get(0).is_none_or(|o| o <= MAX_ORDER));
        assert_eq!(set.remove(pfn, 0), Err(SetError::Missing));
        assert!(set.insert(pfn, 0).is_err());
        assert_eq!(set.insert(0, 0), Err(SetError::Full));
        assert_eq!(set.count(), 8);
    }
}
