// SPDX-License-Identifier: GPL-2.0

//! Tests of the lock-free [`LiveSet`] of live and parked `(pfn, order)` pairs.
//!
//! - A property test against a `HashMap` model (each pfn `Live(order)` or
//!   `Parked(order, handle)`): random `insert`/`remove`/`park`/`unpark`/`drop_parked`/
//!   `get`/`get_parked` on tables of 4 to 1024 slots, with pfns from pools built to
//!   collide (consecutive small pfns, multiples of `2^k`, pfns around `MAX_PFN`, pfns
//!   homed at the end and the start of the table so that clusters wrap around) plus pfns
//!   above `MAX_PFN`. After every operation the result, `count()`, `parked()`, every model
//!   entry's `get` and `get_parked` and the raw slots (live key, or parked key at the
//!   model's handle) must agree with the model, and a failed operation must leave every
//!   slot as it was. Inserts, unparks and drops respect the caller contract (only a pfn
//!   that is neither live nor parked is inserted; a parked pair is unparked or dropped
//!   at most once), and the error paths are exercised too: wrong handles (in and out of
//!   range, another pair's), wrong orders, pairs live or absent.
//! - Long insert/remove/park churn that leaves no empty slot, only keys and tombstones.
//! - Threads: disjoint churn, racing removals of the same keys, wrong-order removals
//!   racing with right-order ones, parks racing with removals (exactly one wins per live
//!   key, none on a parked key), and owners parking and unparking their keys while others
//!   race wrong-order parks, removals, unparks and drops of them.
//! - Units: `slots_needed`, `new`'s checks, `Handle`, key edge values, foreign slot values.
//!
//! The tests use `LiveSet<&[AtomicU64]>` so that they can also look at the slots, whose
//! encoding (`EMPTY`, `TOMB`, live key `pfn << 6 | (order + 1)`, parked key `live | PARKED`)
//! is documented by the module.

use aikrs_iova_core::liveset::{
    Handle, LiveSet, SetError, EMPTY, MAX_ORDER, MAX_PFN, PARKED, TOMB,
};
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

/// The documented slot value of a parked `(pfn, order)`.
fn parked_key(pfn: u64, order: u32) -> u64 {
    key(pfn, order) | PARKED
}

fn valid(pfn: u64, order: u32) -> bool {
    pfn <= MAX_PFN && order <= MAX_ORDER
}

/// All slot values, to check that a failed operation changed nothing.
fn snapshot(mem: &[AtomicU64]) -> Vec<u64> {
    mem.iter().map(|s| s.load(Ordering::Relaxed)).collect()
}

/// The index of the slot holding `v`, if any.
fn slot_of(mem: &[AtomicU64], v: u64) -> Option<usize> {
    mem.iter().position(|s| s.load(Ordering::Relaxed) == v)
}

/// The handle of slot `at`.
fn handle(at: usize) -> Handle {
    Handle::from_raw(u32::try_from(at).expect("slot index fits u32"))
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
        // (a missing range check would make them collide, or a key's pfn bits spill into
        // `PARKED`), and the very top.
        let mut x = seed;
        for _ in 0..3 {
            let p = pool[(splitmix(&mut x) % pool.len() as u64) as usize] & MAX_PFN;
            pool.push(p | 1 << 57);
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

/// What an operation does, from [`Op::roll`] and [`Op::sub`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Insert,
    Remove,
    Park,
    Unpark,
    DropParked,
    Get,
}

/// One operation. Its pfn is `pool[at]`, except where `pick` says to take one the model
/// holds in the state the operation needs.
#[derive(Clone, Debug)]
struct Op {
    /// Insert if below [`Scenario::insert_pct`], else `sub` picks the operation.
    roll: u8,
    /// Remove 3/10, park 3/10, unpark 2/10, drop 1/10, get 1/10.
    sub: u8,
    at: Index,
    /// Use the model's order if the pfn is present (else `order`).
    model_order: bool,
    order: u32,
    /// Park, unpark, drop: 0-2 take a pfn the model holds live (park) or parked (unpark,
    /// drop) if there is one. Unpark, drop: the handle is the model's (0, 1), another
    /// in-range slot (2), the slot of the pfn's key if any (3), any in-range slot (4),
    /// one out of range (5), another parked pair's (6).
    pick: u8,
    handle_at: Index,
    handle_raw: u32,
}

fn op() -> impl Strategy<Value = Op> {
    (
        (0u8..100, 0u8..10, any::<Index>()),
        (any::<bool>(), order()),
        (0u8..7, any::<Index>(), any::<u32>()),
    )
        .prop_map(
            |((roll, sub, at), (model_order, order), (pick, handle_at, handle_raw))| Op {
                roll,
                sub,
                at,
                model_order,
                order,
                pick,
                handle_at,
                handle_raw,
            },
        )
}

impl Op {
    fn kind(&self, insert_pct: u8) -> Kind {
        if self.roll < insert_pct {
            return Kind::Insert;
        }
        match self.sub {
            0..=2 => Kind::Remove,
            3..=5 => Kind::Park,
            6..=7 => Kind::Unpark,
            8 => Kind::DropParked,
            _ => Kind::Get,
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    log2: u32,
    pool: Vec<u64>,
    /// Percentage of inserts.
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

/// The model's state of a pfn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live(u32),
    Parked(u32, Handle),
}

impl State {
    fn order(self) -> u32 {
        match self {
            State::Live(o) | State::Parked(o, _) => o,
        }
    }
}

type Model = HashMap<u64, State>;

/// The model's pfns in the given state (`parked` or live), sorted so that picks are
/// reproducible.
fn pfns_in(model: &Model, parked: bool) -> Vec<u64> {
    let mut v: Vec<u64> = model
        .iter()
        .filter(|(_, st)| matches!(st, State::Parked(..)) == parked)
        .map(|(&p, _)| p)
        .collect();
    v.sort_unstable();
    v
}

/// How often each outcome happened, to check that the generators reach them all.
#[derive(Default, Debug)]
struct Outcomes {
    inserted: usize,
    full: usize,
    full_1024: usize,
    full_with_parked: usize,
    invalid_pfn: usize,
    invalid_order: usize,
    removed: usize,
    missing_absent: usize,
    missing_wrong_order: usize,
    missing_parked: usize,
    missing_invalid: usize,
    parked: usize,
    park_absent: usize,
    park_parked: usize,
    park_wrong_order: usize,
    park_invalid: usize,
    unparked: usize,
    dropped: usize,
    /// Unpark or drop of a parked pair with another in-range handle, of a slot that does
    /// not hold a parked key.
    wrong_handle: usize,
    /// ... with the handle of another parked pair.
    other_pairs_handle: usize,
    /// ... with a handle out of range.
    handle_out_of_range: usize,
    /// ... with its own handle but another order.
    unpark_wrong_order: usize,
    /// Unpark or drop of a live pair at the slot of its live key.
    unpark_live_at_its_slot: usize,
    unpark_live: usize,
    unpark_absent: usize,
    get_hit: usize,
    get_parked_hit: usize,
    get_miss: usize,
    /// Keys stored below their home slot (their probe wrapped around).
    wrapped: usize,
    /// Operations on a table with no empty slot left.
    no_empty: usize,
}

/// The slots hold exactly the model's keys, once each (a parked key at its handle), and
/// otherwise `EMPTY` or `TOMB`. Returns the number of wrapped keys and whether an empty
/// slot is left.
fn check_slots(mem: &[AtomicU64], model: &Model) -> Result<(usize, bool), TestCaseError> {
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
        let pfn = (v & !PARKED) >> 6;
        let want = match model.get(&pfn) {
            Some(&State::Live(o)) => Some(key(pfn, o)),
            Some(&State::Parked(o, h)) => {
                prop_assert_eq!(h.raw() as usize, i, "pfn {:#x} parked elsewhere", pfn);
                Some(parked_key(pfn, o))
            }
            None => None,
        };
        prop_assert_eq!(
            want,
            Some(v),
            "slot {} holds {:#x}, not the model's key",
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
    model: &Model,
    out: &mut Outcomes,
) -> Result<(), TestCaseError> {
    let parked = model
        .values()
        .filter(|st| matches!(st, State::Parked(..)))
        .count();
    prop_assert_eq!(set.count(), model.len() - parked);
    prop_assert_eq!(set.parked(), parked);
    // Every entry is found in its state. (That the other lookup misses it is checked by
    // the `Get` operations and at the end of `run`.)
    for (&pfn, &st) in model {
        match st {
            State::Live(o) => prop_assert_eq!(set.get(pfn), Some(o), "live {:#x} lost", pfn),
            State::Parked(o, _) => {
                prop_assert_eq!(set.get_parked(pfn), Some(o), "parked {:#x} lost", pfn)
            }
        }
    }
    let (wrapped, empty) = check_slots(mem, model)?;
    out.wrapped += wrapped;
    out.no_empty += usize::from(!empty);
    Ok(())
}

/// The pfn and order of a remove, park, unpark or drop: `pool[at]`, or for a park
/// (unpark, drop) with `pick < 3` a pfn the model holds live (parked) if there is one.
/// The order is the model's if `model_order` and the pfn is present, else `order`.
fn target(op: &Op, pool: &[u64], model: &Model, kind: Kind) -> (u64, u32) {
    let mut pfn = pool[op.at.index(pool.len())];
    let want_parked = matches!(kind, Kind::Unpark | Kind::DropParked);
    if op.pick < 3 && matches!(kind, Kind::Park | Kind::Unpark | Kind::DropParked) {
        let candidates = pfns_in(model, want_parked);
        if !candidates.is_empty() {
            pfn = candidates[op.at.index(candidates.len())];
        }
    }
    let order = match model.get(&pfn) {
        Some(st) if op.model_order => st.order(),
        _ => op.order,
    };
    (pfn, order)
}

/// The handle of an unpark or drop of `pfn` (see [`Op::pick`]).
fn pick_handle(op: &Op, mem: &[AtomicU64], model: &Model, pfn: u64) -> Handle {
    let slots = mem.len();
    let own = match model.get(&pfn) {
        Some(&State::Parked(_, h)) => Some(h.raw() as usize),
        Some(&State::Live(o)) => slot_of(mem, key(pfn, o)),
        None => None,
    };
    let any = op.handle_at.index(slots);
    match op.pick {
        0 | 1 => own.map_or(handle(any), handle),
        // Another slot than its own.
        2 => handle(own.map_or(any, |h| (h + 1 + op.handle_at.index(slots - 1)) % slots)),
        3 => handle(own.unwrap_or(any)),
        4 => handle(any),
        5 => {
            let lo = slots as u64;
            let raw = lo + u64::from(op.handle_raw) % ((1u64 << 32) - lo);
            Handle::from_raw(u32::try_from(raw).expect("below 2^32"))
        }
        _ => {
            let others: Vec<u64> = pfns_in(model, true)
                .into_iter()
                .filter(|&p| p != pfn)
                .collect();
            if others.is_empty() {
                handle(any)
            } else {
                match model.get(&others[op.handle_at.index(others.len())]) {
                    Some(&State::Parked(_, h)) => h,
                    _ => unreachable!("pfns_in returned a live pfn"),
                }
            }
        }
    }
}

fn run(s: &Scenario, out: &mut Outcomes) -> Result<(), TestCaseError> {
    let slots = 1usize << s.log2;
    let mem = storage(slots);
    let set = new_set(&mem);
    prop_assert_eq!(set.slots(), slots);
    let pool = &s.pool;
    let mut model = Model::new();
    for op in &s.ops {
        let kind = op.kind(s.insert_pct);
        // A failed operation must not change any slot.
        let before = snapshot(&mem);
        let failed = match kind {
            Kind::Insert => {
                // The caller contract: insert only a pfn that is neither live nor parked.
                let i = op.at.index(pool.len());
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
                    out.full_with_parked += usize::from(set.parked() > 0);
                    Err(SetError::Full)
                } else {
                    out.inserted += 1;
                    model.insert(pfn, State::Live(order));
                    Ok(())
                };
                let got = set.insert(pfn, order);
                prop_assert_eq!(got, want, "insert({:#x}, {})", pfn, order);
                got.is_err()
            }
            Kind::Remove => {
                let (pfn, order) = target(op, pool, &model, kind);
                let st = model.get(&pfn).copied();
                let want = if st == Some(State::Live(order)) {
                    out.removed += 1;
                    model.remove(&pfn);
                    Ok(())
                } else {
                    if !valid(pfn, order) {
                        out.missing_invalid += 1;
                    } else if let Some(State::Parked(..)) = st {
                        out.missing_parked += 1;
                    } else if st.is_some() {
                        out.missing_wrong_order += 1;
                    } else {
                        out.missing_absent += 1;
                    }
                    Err(SetError::Missing)
                };
                let got = set.remove(pfn, order);
                prop_assert_eq!(got, want, "remove({:#x}, {}) of {:?}", pfn, order, st);
                got.is_err()
            }
            Kind::Park => {
                let (pfn, order) = target(op, pool, &model, kind);
                let st = model.get(&pfn).copied();
                let got = set.park(pfn, order);
                if st == Some(State::Live(order)) {
                    // It stays where its live key was.
                    let Some(at) = before.iter().position(|&v| v == key(pfn, order)) else {
                        return Err(TestCaseError::fail(format!("{pfn:#x} not stored")));
                    };
                    prop_assert_eq!(got, Ok(handle(at)), "park({:#x}, {})", pfn, order);
                    out.parked += 1;
                    model.insert(pfn, State::Parked(order, handle(at)));
                } else {
                    match st {
                        _ if !valid(pfn, order) => out.park_invalid += 1,
                        None => out.park_absent += 1,
                        Some(State::Parked(o, _)) if o == order => out.park_parked += 1,
                        Some(_) => out.park_wrong_order += 1,
                    }
                    prop_assert_eq!(
                        got,
                        Err(SetError::Missing),
                        "park({:#x}, {}) of {:?}",
                        pfn,
                        order,
                        st
                    );
                }
                got.is_err()
            }
            Kind::Unpark | Kind::DropParked => {
                let (pfn, order) = target(op, pool, &model, kind);
                let h = pick_handle(op, &mem, &model, pfn);
                let st = model.get(&pfn).copied();
                let want = match st {
                    Some(State::Parked(o, mh)) if o == order && mh == h => {
                        if kind == Kind::Unpark {
                            out.unparked += 1;
                            model.insert(pfn, State::Live(order));
                        } else {
                            out.dropped += 1;
                            model.remove(&pfn);
                        }
                        Ok(())
                    }
                    Some(State::Parked(_, mh)) => {
                        let at = h.raw() as usize;
                        if at >= slots {
                            out.handle_out_of_range += 1;
                        } else if mh == h {
                            out.unpark_wrong_order += 1;
                        } else if mem[at].load(Ordering::Relaxed) & PARKED != 0
                            && mem[at].load(Ordering::Relaxed) != TOMB
                        {
                            out.other_pairs_handle += 1;
                        } else {
                            out.wrong_handle += 1;
                        }
                        Err(SetError::Missing)
                    }
                    Some(State::Live(o)) => {
                        if slot_of(&mem, key(pfn, o)) == Some(h.raw() as usize) {
                            out.unpark_live_at_its_slot += 1;
                        } else {
                            out.unpark_live += 1;
                        }
                        Err(SetError::Missing)
                    }
                    None => {
                        out.unpark_absent += 1;
                        Err(SetError::Missing)
                    }
                };
                let got = if kind == Kind::Unpark {
                    set.unpark(h, pfn, order)
                } else {
                    set.drop_parked(h, pfn, order)
                };
                prop_assert_eq!(
                    got,
                    want,
                    "{:?}({:?}, {:#x}, {}) of {:?}",
                    kind,
                    h,
                    pfn,
                    order,
                    st
                );
                got.is_err()
            }
            Kind::Get => {
                let pfn = pool[op.at.index(pool.len())];
                let st = model.get(&pfn).copied();
                let (live, par) = match st {
                    Some(State::Live(o)) => {
                        out.get_hit += 1;
                        (Some(o), None)
                    }
                    Some(State::Parked(o, _)) => {
                        out.get_parked_hit += 1;
                        (None, Some(o))
                    }
                    None => {
                        out.get_miss += 1;
                        (None, None)
                    }
                };
                prop_assert_eq!(set.get(pfn), live, "get({:#x})", pfn);
                prop_assert_eq!(set.get_parked(pfn), par, "get_parked({:#x})", pfn);
                true
            }
        };
        if failed {
            prop_assert_eq!(snapshot(&mem), before, "failed {:?} changed slots", kind);
        }
        check_all(&set, &mem, &model, out)?;
    }
    // Nothing outside the model is found either, and absent pfns cannot be removed,
    // parked, unparked or dropped.
    for &pfn in pool {
        let st = model.get(&pfn).copied();
        let live = st.and_then(|st| matches!(st, State::Live(_)).then_some(st.order()));
        let par = st.and_then(|st| matches!(st, State::Parked(..)).then_some(st.order()));
        prop_assert_eq!(set.get(pfn), live, "get({:#x})", pfn);
        prop_assert_eq!(set.get_parked(pfn), par, "get_parked({:#x})", pfn);
        if st.is_none() {
            prop_assert_eq!(set.remove(pfn, 0), Err(SetError::Missing));
            prop_assert_eq!(set.park(pfn, 0), Err(SetError::Missing));
            for at in [0, slots / 2, slots - 1] {
                prop_assert_eq!(set.unpark(handle(at), pfn, 0), Err(SetError::Missing));
                prop_assert_eq!(set.drop_parked(handle(at), pfn, 0), Err(SetError::Missing));
            }
        }
    }
    check_all(&set, &mem, &model, out)?;
    // Drain: unpark and remove, or drop, every parked pair; park and drop, or remove,
    // every live one.
    let mut pfns: Vec<(u64, State)> = model.iter().map(|(&p, &st)| (p, st)).collect();
    pfns.sort_unstable_by_key(|&(p, _)| p);
    for (i, (pfn, st)) in pfns.into_iter().enumerate() {
        match st {
            State::Parked(o, h) if i % 2 == 0 => {
                prop_assert_eq!(set.unpark(h, pfn, o), Ok(()));
                prop_assert_eq!(set.remove(pfn, o), Ok(()));
            }
            State::Parked(o, h) => prop_assert_eq!(set.drop_parked(h, pfn, o), Ok(())),
            State::Live(o) if i % 2 == 0 => prop_assert_eq!(set.remove(pfn, o), Ok(())),
            State::Live(o) => {
                let Ok(h) = set.park(pfn, o) else {
                    return Err(TestCaseError::fail(format!("park({pfn:#x}, {o}) failed")));
                };
                prop_assert_eq!(set.drop_parked(h, pfn, o), Ok(()));
            }
        }
        model.remove(&pfn);
        if i % 16 == 0 {
            check_all(&set, &mem, &model, out)?;
        }
    }
    check_all(&set, &mem, &model, out)?;
    prop_assert!(mem
        .iter()
        .all(|s| matches!(s.load(Ordering::Relaxed), EMPTY | TOMB)));
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

    /// Small tables and long runs: many insert/remove/park cycles at and near full load,
    /// so that tombstones replace every empty slot.
    #[test]
    fn matches_hashmap_model_long_runs(s in scenario(2..=6, 48)) {
        let _cpus = cpus_shared();
        run(&s, &mut Outcomes::default())?;
    }
}

/// The generators reach every outcome (so the model tests do test them), including
/// `Full` on 1024 slots and with parked pairs, every error path of `unpark` and
/// `drop_parked`, wrapped clusters and tables without an empty slot.
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
        ("full_with_parked", o.full_with_parked),
        ("invalid_pfn", o.invalid_pfn),
        ("invalid_order", o.invalid_order),
        ("removed", o.removed),
        ("missing_absent", o.missing_absent),
        ("missing_wrong_order", o.missing_wrong_order),
        ("missing_parked", o.missing_parked),
        ("missing_invalid", o.missing_invalid),
        ("parked", o.parked),
        ("park_absent", o.park_absent),
        ("park_parked", o.park_parked),
        ("park_wrong_order", o.park_wrong_order),
        ("park_invalid", o.park_invalid),
        ("unparked", o.unparked),
        ("dropped", o.dropped),
        ("wrong_handle", o.wrong_handle),
        ("other_pairs_handle", o.other_pairs_handle),
        ("handle_out_of_range", o.handle_out_of_range),
        ("unpark_wrong_order", o.unpark_wrong_order),
        ("unpark_live_at_its_slot", o.unpark_live_at_its_slot),
        ("unpark_live", o.unpark_live),
        ("unpark_absent", o.unpark_absent),
        ("get_hit", o.get_hit),
        ("get_parked_hit", o.get_parked_hit),
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

/// Checks every live pair and a few absent pfns; nothing is parked.
fn check_live(set: &Set<'_>, live: &[(u64, u32)], free: &[u64]) {
    assert_eq!(set.count(), live.len());
    assert_eq!(set.parked(), 0);
    for &(pfn, order) in live {
        assert_eq!(set.get(pfn), Some(order), "entry {pfn:#x} lost");
        assert_eq!(set.get_parked(pfn), None, "entry {pfn:#x} parked");
    }
    for &pfn in free.iter().take(4) {
        assert_eq!(set.get(pfn), None, "absent {pfn:#x} found");
    }
    for &pfn in free.iter().skip(4).take(4) {
        assert_eq!(set.get_parked(pfn), None, "absent {pfn:#x} found parked");
    }
}

/// Many insert/remove cycles, first at half load, then at full load: afterwards no slot
/// is empty, yet inserts keep succeeding while fewer than `slots` keys are live and
/// lookups of absent pfns still end (each probes the whole table). A pair leaves by
/// `remove`, by `park` and `drop_parked`, or by `park`, `unpark` and `remove`; parked, it
/// still occupies its slot.
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
                        assert_eq!(set.park(p, wrong), Err(SetError::Missing));
                        match (roll >> 20) % 3 {
                            0 => assert_eq!(set.remove(p, o), Ok(())),
                            way => {
                                let Ok(h) = set.park(p, o) else {
                                    panic!("park({p:#x}, {o}) refused");
                                };
                                let at = h.raw() as usize;
                                assert_eq!(mem[at].load(Ordering::Relaxed), parked_key(p, o));
                                assert_eq!(set.get(p), None);
                                assert_eq!(set.get_parked(p), Some(o));
                                assert_eq!(set.park(p, o), Err(SetError::Missing));
                                assert_eq!(set.remove(p, o), Err(SetError::Missing));
                                if live.len() + 1 == slots {
                                    // Parked, it still fills the table.
                                    assert_eq!(set.insert(free[0], 0), Err(SetError::Full));
                                }
                                if way == 1 {
                                    assert_eq!(set.drop_parked(h, p, o), Ok(()));
                                } else {
                                    assert_eq!(set.unpark(h, p, o), Ok(()));
                                    assert_eq!(mem[at].load(Ordering::Relaxed), key(p, o));
                                    assert_eq!(set.remove(p, o), Ok(()));
                                }
                                assert_eq!(mem[at].load(Ordering::Relaxed), TOMB);
                                assert_eq!(set.unpark(h, p, o), Err(SetError::Missing));
                                assert_eq!(set.drop_parked(h, p, o), Err(SetError::Missing));
                            }
                        }
                        // Gone (two probes of the whole table once no slot is empty).
                        if roll & 1 == 0 {
                            assert_eq!(set.remove(p, o), Err(SetError::Missing));
                            assert_eq!(set.get(p), None);
                        } else {
                            assert_eq!(set.park(p, o), Err(SetError::Missing));
                            assert_eq!(set.get_parked(p), None);
                        }
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
                assert_eq!(set.get_parked(p), None);
                assert_eq!(set.remove(p, 0), Err(SetError::Missing));
                assert_eq!(set.park(p, 0), Err(SetError::Missing));
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

/// Runs `f(i, pfn, order)` over the `KEYS` pairs of `round` in thread `t`'s order: in
/// even rounds in lockstep (every thread waits at `barrier` before each key, then
/// jitters), in odd rounds freely, odd threads backwards.
fn race_keys(t: usize, round: u32, barrier: &SpinBarrier, mut f: impl FnMut(usize, u64, u32)) {
    let pairs = round_pairs(round);
    let lockstep = round.is_multiple_of(2);
    let backwards = !lockstep && t % 2 == 1;
    for i in 0..KEYS {
        let i = if backwards { KEYS - 1 - i } else { i };
        let (p, o) = pairs[i];
        if lockstep {
            barrier.wait();
            jitter(t as u64, round, i);
        }
        f(i, p, o);
    }
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
            race_keys(t, round, barrier, |i, p, o| match set.remove(p, o) {
                Ok(()) => {
                    wins[i].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => fail(e != SetError::Missing),
            });
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

/// No handle recorded (see `threads_racing_parks_and_removals`).
const NO_HANDLE: u64 = u64::MAX;

/// All threads park or remove every key of the round at once, as in
/// `threads_racing_removals` (each key gets both parks and removals: thread `t` parks
/// key `i` unless `(t + i + round) % 3 == 1`). Exactly one of them succeeds per live key,
/// and a park that wins returns the key's slot. Every fourth key is parked before the
/// race: none succeeds on it and it stays parked where it was. Afterwards the parked keys
/// are unparked and removed, or dropped.
#[test]
fn threads_racing_parks_and_removals() {
    let _cpus = cpus_exclusive();
    let mem = storage(1024);
    let set = new_set(&mem);
    let wins: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
    // The handle a winning park returned, or the handle of a key parked before the race.
    let handles: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(NO_HANDLE)).collect();
    let park_wins = AtomicUsize::new(0);
    let remove_wins = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let fail = |what: bool| {
        if what {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    };
    let pre_parked = |i: usize| i % 4 == 3;
    race_rounds(
        race_threads(),
        100,
        |round| {
            for (i, &(p, o)) in round_pairs(round).iter().enumerate() {
                wins[i].store(0, Ordering::Relaxed);
                handles[i].store(NO_HANDLE, Ordering::Relaxed);
                fail(set.insert(p, o) != Ok(()));
                if pre_parked(i) {
                    match set.park(p, o) {
                        Ok(h) => handles[i].store(u64::from(h.raw()), Ordering::Relaxed),
                        Err(_) => fail(true),
                    }
                }
            }
        },
        |t, round, barrier| {
            race_keys(t, round, barrier, |i, p, o| {
                let won = if (t + i + round as usize) % 3 == 1 {
                    let r = set.remove(p, o);
                    fail(r.is_err_and(|e| e != SetError::Missing));
                    if r.is_ok() {
                        remove_wins.fetch_add(1, Ordering::Relaxed);
                    }
                    r.is_ok()
                } else {
                    match set.park(p, o) {
                        Ok(h) => {
                            park_wins.fetch_add(1, Ordering::Relaxed);
                            handles[i].store(u64::from(h.raw()), Ordering::Relaxed);
                            true
                        }
                        Err(e) => {
                            fail(e != SetError::Missing);
                            false
                        }
                    }
                };
                if won {
                    wins[i].fetch_add(1, Ordering::Relaxed);
                }
            });
        },
        |round| {
            for (i, &(p, o)) in round_pairs(round).iter().enumerate() {
                let won = wins[i].load(Ordering::Relaxed);
                fail(won != usize::from(!pre_parked(i)));
                fail(set.get(p).is_some());
                let h = handles[i].load(Ordering::Relaxed);
                if h == NO_HANDLE {
                    // Removed.
                    fail(set.get_parked(p).is_some());
                    continue;
                }
                // Parked, before or in the race, at the slot its park returned.
                fail(set.get_parked(p) != Some(o));
                let Some(s) = usize::try_from(h).ok().and_then(|h| mem.get(h)) else {
                    fail(true);
                    continue;
                };
                fail(s.load(Ordering::Relaxed) != parked_key(p, o));
                let Ok(raw) = u32::try_from(h) else {
                    fail(true);
                    continue;
                };
                let h = Handle::from_raw(raw);
                if (i / 4 + round as usize).is_multiple_of(2) {
                    fail(set.unpark(h, p, o) != Ok(()));
                    fail(set.get(p) != Some(o));
                    fail(set.remove(p, o) != Ok(()));
                } else {
                    fail(set.drop_parked(h, p, o) != Ok(()));
                }
                fail(s.load(Ordering::Relaxed) != TOMB);
            }
            fail(set.count() != 0);
            fail(set.parked() != 0);
        },
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    // Both kinds won races: the test did race parks against removals.
    assert!(park_wins.load(Ordering::Relaxed) > 0);
    assert!(remove_wins.load(Ordering::Relaxed) > 0);
    assert_eq!(set.count(), 0);
    assert_eq!(set.parked(), 0);
}

/// Owners insert their pfns, park them, unpark them, park them again and drop them, or
/// unpark and remove them, checking each step (and that a parked pair cannot be parked,
/// removed, unparked with another order or at another slot, and stays at its slot), with
/// even orders. Meanwhile attackers keep trying odd orders on the same pfns: `park`,
/// `remove`, and `unpark`/`drop_parked` at the slot an owner published; all fail, and no
/// lookup ever sees an odd order. Every owner operation succeeds, no attacker's does.
#[test]
fn threads_park_churn() {
    let _cpus = cpus_exclusive();
    const OWNERS: u64 = 4;
    const PER_OWNER: u64 = 64;
    const PFNS: usize = (OWNERS * PER_OWNER) as usize;
    let mem = storage(1024);
    let set = new_set(&mem);
    // Where each pfn was last parked (a hint for the attackers).
    let published: Vec<AtomicU64> = (0..PFNS).map(|_| AtomicU64::new(0)).collect();
    let owner_failures = AtomicUsize::new(0);
    let attacker_wins = AtomicUsize::new(0);
    let attacks = AtomicUsize::new(0);
    let seen_parked = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    // Full attacker passes over all pfns, so owners can wait for one.
    let passes = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..OWNERS {
            let (set, owner_failures, done, published, passes) =
                (&set, &owner_failures, &done, &published, &passes);
            s.spawn(move || {
                let mut fail = 0;
                let mut ok = |r: bool| fail += usize::from(!r);
                let pfn = |j: u64| j * OWNERS + t;
                let mut hs = vec![Handle::from_raw(0); PER_OWNER as usize];
                for round in 0..200u32 {
                    let order = |j: u64| 2 * ((j as u32 + round) % 31);
                    for j in 0..PER_OWNER {
                        ok(set.insert(pfn(j), order(j)) == Ok(()));
                    }
                    for (j, h) in (0..PER_OWNER).zip(hs.iter_mut()) {
                        let (p, o) = (pfn(j), order(j));
                        match set.park(p, o) {
                            Ok(got) => *h = got,
                            Err(_) => ok(false),
                        }
                        published[p as usize].store(u64::from(h.raw()), Ordering::Relaxed);
                        ok(set.get(p).is_none());
                        ok(set.get_parked(p) == Some(o));
                        ok(set.park(p, o) == Err(SetError::Missing));
                        ok(set.remove(p, o) == Err(SetError::Missing));
                        ok(set.unpark(*h, p, o + 2) == Err(SetError::Missing));
                        let next = Handle::from_raw((h.raw() + 1) % 1024);
                        ok(set.unpark(next, p, o) == Err(SetError::Missing));
                        ok(set.drop_parked(next, p, o) == Err(SetError::Missing));
                    }
                    if round % 50 == 0 {
                        // Some rounds hold their pairs parked until a whole attacker pass
                        // has begun and ended, so the attackers surely meet parked pairs
                        // however the threads are scheduled (a loaded CI machine may
                        // otherwise run every owner to the end before an attacker starts).
                        let seen = passes.load(Ordering::Acquire);
                        while passes.load(Ordering::Acquire) < seen + 2 {
                            thread::yield_now();
                        }
                    }
                    for (j, &h) in (0..PER_OWNER).zip(&hs) {
                        let (p, o) = (pfn(j), order(j));
                        ok(set.unpark(h, p, o) == Ok(()));
                        ok(set.get(p) == Some(o));
                        ok(set.unpark(h, p, o) == Err(SetError::Missing));
                        ok(set.drop_parked(h, p, o) == Err(SetError::Missing));
                    }
                    for (j, &h) in (0..PER_OWNER).zip(&hs) {
                        // A key never moves: parked again, it is at the same slot.
                        ok(set.park(pfn(j), order(j)) == Ok(h));
                    }
                    for (j, &h) in (0..PER_OWNER).zip(&hs) {
                        let (p, o) = (pfn(j), order(j));
                        if (j + u64::from(round)) % 2 == 0 {
                            ok(set.drop_parked(h, p, o) == Ok(()));
                        } else {
                            ok(set.unpark(h, p, o) == Ok(()));
                            ok(set.remove(p, o) == Ok(()));
                        }
                        ok(set.drop_parked(h, p, o) == Err(SetError::Missing));
                        ok(set.get(p).is_none() && set.get_parked(p).is_none());
                    }
                }
                owner_failures.fetch_add(fail, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Release);
            });
        }
        for t in 0..(THREADS as u64 - OWNERS) {
            let (set, attacker_wins, attacks, seen_parked, done, published, passes) = (
                &set,
                &attacker_wins,
                &attacks,
                &seen_parked,
                &done,
                &published,
                &passes,
            );
            s.spawn(move || {
                let mut round = 0u32;
                let mut wins = 0;
                let mut n = 0;
                let mut parked = 0;
                while done.load(Ordering::Acquire) < OWNERS as usize {
                    for p in 0..OWNERS * PER_OWNER {
                        let o = 2 * ((p as u32 + round + t as u32) % 31) + 1;
                        let h =
                            Handle::from_raw(published[p as usize].load(Ordering::Relaxed) as u32);
                        let odd = |r: Option<u32>| r.is_some_and(|o| o % 2 == 1);
                        wins += usize::from(set.remove(p, o) != Err(SetError::Missing));
                        wins += usize::from(set.park(p, o) != Err(SetError::Missing));
                        wins += usize::from(set.unpark(h, p, o) != Err(SetError::Missing));
                        wins += usize::from(set.drop_parked(h, p, o) != Err(SetError::Missing));
                        wins += usize::from(odd(set.get(p)));
                        let got = set.get_parked(p);
                        wins += usize::from(odd(got));
                        parked += usize::from(got.is_some());
                        n += 1;
                    }
                    round += 1;
                    passes.fetch_add(1, Ordering::Release);
                    // Leave the owners CPU time on a small machine.
                    thread::yield_now();
                }
                attacker_wins.fetch_add(wins, Ordering::Relaxed);
                attacks.fetch_add(n, Ordering::Relaxed);
                seen_parked.fetch_add(parked, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(owner_failures.load(Ordering::Relaxed), 0);
    assert_eq!(attacker_wins.load(Ordering::Relaxed), 0);
    assert!(attacks.load(Ordering::Relaxed) > 0);
    // The attackers did meet parked pairs.
    assert!(seen_parked.load(Ordering::Relaxed) > 0);
    assert_eq!(set.count(), 0);
    assert_eq!(set.parked(), 0);
    assert!(mem
        .iter()
        .all(|s| matches!(s.load(Ordering::Relaxed), EMPTY | TOMB)));
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
        assert_eq!(set.parked(), 0);
        assert_eq!(set.get(0), None);
        assert_eq!(set.get_parked(0), None);
        // Any single non-empty slot is refused.
        for at in [0, 1, len / 2, len - 1] {
            for v in [1, 64, key(3, 2), parked_key(3, 2), TOMB, TOMB - 1, PARKED] {
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
    let Ok(h) = vec.park(1, 2) else {
        panic!("park refused");
    };
    assert_eq!(vec.get_parked(1), Some(2));
    assert_eq!(vec.unpark(h, 1, 2), Ok(()));
    let Ok(boxed) = LiveSet::new(storage(4).into_boxed_slice()) else {
        panic!("Box storage refused");
    };
    assert_eq!(boxed.slots(), 4);
    assert_eq!(boxed.remove(1, 2), Err(SetError::Missing));
    assert_eq!(boxed.park(1, 2), Err(SetError::Missing));
    // (More than 2^32 slots are refused too: see the unit test in `src/liveset.rs`, this
    // would need 64 GiB.)
}

#[test]
fn handles_are_slot_indices() {
    // Usable in constants, and any `u32` round-trips.
    const H: Handle = Handle::from_raw(7);
    const RAW: u32 = H.raw();
    assert_eq!(RAW, 7);
    for raw in [0, 1, 1023, 1024, 1 << 31, u32::MAX - 1, u32::MAX] {
        assert_eq!(Handle::from_raw(raw).raw(), raw);
        assert_eq!(Handle::from_raw(raw), Handle::from_raw(raw));
    }
    assert_ne!(Handle::from_raw(1), Handle::from_raw(2));
    // `park` returns the index of the slot that holds the parked key.
    let mem = storage(16);
    let set = new_set(&mem);
    for p in 0..12u64 {
        assert_eq!(set.insert(p << 12, 3), Ok(()));
    }
    for p in 0..12u64 {
        let at = slot_of(&mem, key(p << 12, 3)).expect("stored");
        assert_eq!(set.park(p << 12, 3), Ok(handle(at)));
        assert_eq!(mem[at].load(Ordering::Relaxed), parked_key(p << 12, 3));
    }
    assert_eq!(set.count(), 0);
    assert_eq!(set.parked(), 12);
    // Out-of-range handles are refused, and nothing changes.
    let before = snapshot(&mem);
    for raw in [16, 17, 1024, u32::MAX] {
        for p in 0..12u64 {
            let h = Handle::from_raw(raw);
            assert_eq!(set.unpark(h, p << 12, 3), Err(SetError::Missing));
            assert_eq!(set.drop_parked(h, p << 12, 3), Err(SetError::Missing));
        }
    }
    assert_eq!(snapshot(&mem), before);
}

#[test]
fn keys_at_the_edges() {
    // A live key never has `PARKED` set, the largest parked key stays clear of TOMB, and
    // the pfn survives the shift.
    assert_eq!(PARKED, 1 << 63);
    assert_eq!(MAX_PFN, (1 << 57) - 2);
    assert!(key(MAX_PFN, MAX_ORDER) < PARKED);
    assert!(parked_key(MAX_PFN, MAX_ORDER) < TOMB);
    assert_eq!(parked_key(MAX_PFN, MAX_ORDER), TOMB - 64);
    assert_eq!(key(MAX_PFN, MAX_ORDER) >> 6, MAX_PFN);
    assert_eq!((parked_key(MAX_PFN, MAX_ORDER) & !PARKED) >> 6, MAX_PFN);
    // One pfn more and the parked key of the largest order would be TOMB.
    assert_eq!(parked_key(MAX_PFN + 1, MAX_ORDER), TOMB);
    const { assert!(MAX_ORDER < 63) };
    let mem = storage(4);
    let set = new_set(&mem);
    for pfn in [0, 1, MAX_PFN - 1, MAX_PFN] {
        for order in 0..=MAX_ORDER {
            assert_eq!(set.insert(pfn, order), Ok(()), "insert({pfn:#x}, {order})");
            assert_eq!(set.count(), 1);
            assert_eq!(set.parked(), 0);
            assert_eq!(set.get(pfn), Some(order), "get({pfn:#x}) of order {order}");
            assert_eq!(set.get_parked(pfn), None);
            let at = slot_of(&mem, key(pfn, order)).expect("stored as its key");
            assert_eq!(set.remove(pfn, order ^ 1), Err(SetError::Missing));
            assert_eq!(set.park(pfn, order ^ 1), Err(SetError::Missing));
            // Live: neither unparked nor dropped, even at its own slot.
            let h = handle(at);
            assert_eq!(set.unpark(h, pfn, order), Err(SetError::Missing));
            assert_eq!(set.drop_parked(h, pfn, order), Err(SetError::Missing));
            assert_eq!(set.park(pfn, order), Ok(h), "park({pfn:#x}, {order})");
            assert_eq!(mem[at].load(Ordering::Relaxed), parked_key(pfn, order));
            assert!(parked_key(pfn, order) < TOMB);
            assert_eq!((set.count(), set.parked()), (0, 1));
            assert_eq!(set.get(pfn), None);
            assert_eq!(set.get_parked(pfn), Some(order));
            // Parked: not parked again, not removed, not touched with another order or
            // at another slot.
            assert_eq!(set.park(pfn, order), Err(SetError::Missing));
            assert_eq!(set.remove(pfn, order), Err(SetError::Missing));
            assert_eq!(set.remove(pfn, order ^ 1), Err(SetError::Missing));
            assert_eq!(set.unpark(h, pfn, order ^ 1), Err(SetError::Missing));
            assert_eq!(set.drop_parked(h, pfn, order ^ 1), Err(SetError::Missing));
            let other = handle((at + 1) % 4);
            assert_eq!(set.unpark(other, pfn, order), Err(SetError::Missing));
            assert_eq!(set.drop_parked(other, pfn, order), Err(SetError::Missing));
            assert_eq!(mem[at].load(Ordering::Relaxed), parked_key(pfn, order));
            assert_eq!(set.unpark(h, pfn, order), Ok(()));
            assert_eq!(mem[at].load(Ordering::Relaxed), key(pfn, order));
            assert_eq!(set.get(pfn), Some(order));
            assert_eq!(set.park(pfn, order), Ok(h));
            assert_eq!(set.drop_parked(h, pfn, order), Ok(()));
            assert_eq!(mem[at].load(Ordering::Relaxed), TOMB);
            assert_eq!(set.drop_parked(h, pfn, order), Err(SetError::Missing));
            assert_eq!(set.unpark(h, pfn, order), Err(SetError::Missing));
            assert_eq!((set.count(), set.parked()), (0, 0));
            assert_eq!(set.get(pfn), None);
            assert_eq!(set.get_parked(pfn), None);
            // And the plain live cycle.
            assert_eq!(set.insert(pfn, order), Ok(()));
            assert_eq!(set.remove(pfn, order), Ok(()), "remove({pfn:#x}, {order})");
            assert_eq!(set.remove(pfn, order), Err(SetError::Missing));
            assert_eq!(set.get(pfn), None);
            assert_eq!(set.count(), 0);
        }
    }
    // Every slot is a tombstone now: the pfn whose parked key of the largest order would
    // be TOMB must not unpark or drop one.
    assert!(mem.iter().all(|s| s.load(Ordering::Relaxed) == TOMB));
    for at in 0..4 {
        assert_eq!(
            set.unpark(handle(at), MAX_PFN + 1, MAX_ORDER),
            Err(SetError::Missing)
        );
        assert_eq!(
            set.drop_parked(handle(at), MAX_PFN + 1, MAX_ORDER),
            Err(SetError::Missing)
        );
    }
    assert!(mem.iter().all(|s| s.load(Ordering::Relaxed) == TOMB));
    // Both extremes live or parked at once, and their neighbours out of range.
    assert_eq!(set.insert(0, 0), Ok(()));
    assert_eq!(set.insert(MAX_PFN, MAX_ORDER), Ok(()));
    assert_eq!(set.get(0), Some(0));
    let Ok(top) = set.park(MAX_PFN, MAX_ORDER) else {
        panic!("park(MAX_PFN, MAX_ORDER) refused");
    };
    assert_eq!(
        mem[top.raw() as usize].load(Ordering::Relaxed),
        parked_key(MAX_PFN, MAX_ORDER)
    );
    assert_eq!(set.get_parked(MAX_PFN), Some(MAX_ORDER));
    assert_eq!(set.remove(0, 0), Ok(()));
    assert_eq!(set.get(0), None);
    assert_eq!(set.unpark(top, MAX_PFN, MAX_ORDER), Ok(()));
    assert_eq!(set.get(MAX_PFN), Some(MAX_ORDER));
    for bad in [
        MAX_PFN + 1,
        MAX_PFN + 2,
        1 << 57,
        1 << 58,
        1 << 63,
        u64::MAX,
    ] {
        assert_eq!(set.insert(bad, 0), Err(SetError::InvalidArgument));
        assert_eq!(set.remove(bad, 0), Err(SetError::Missing));
        assert_eq!(set.park(bad, 0), Err(SetError::Missing));
        assert_eq!(set.park(bad, MAX_ORDER), Err(SetError::Missing));
        assert_eq!(set.get(bad), None);
        assert_eq!(set.get_parked(bad), None);
        // Aliases of MAX_PFN's key.
        assert_eq!(set.remove(bad | MAX_PFN, MAX_ORDER), Err(SetError::Missing));
        assert_eq!(set.park(bad | MAX_PFN, MAX_ORDER), Err(SetError::Missing));
        assert_eq!(set.get(bad | MAX_PFN), None);
        for at in 0..4 {
            for order in [0, MAX_ORDER] {
                assert_eq!(set.unpark(handle(at), bad, order), Err(SetError::Missing));
                assert_eq!(
                    set.drop_parked(handle(at), bad, order),
                    Err(SetError::Missing)
                );
            }
        }
    }
    for bad in [MAX_ORDER + 1, MAX_ORDER + 2, 64, u32::MAX] {
        assert_eq!(set.insert(5, bad), Err(SetError::InvalidArgument));
        assert_eq!(set.insert(MAX_PFN + 1, bad), Err(SetError::InvalidArgument));
        assert_eq!(set.remove(MAX_PFN, bad), Err(SetError::Missing));
        assert_eq!(set.park(MAX_PFN, bad), Err(SetError::Missing));
    }
    assert_eq!(set.count(), 1);
    assert_eq!(set.parked(), 0);
    assert_eq!(set.remove(MAX_PFN, MAX_ORDER), Ok(()));
    assert_eq!(set.count(), 0);
}

/// A double free of a parked pair (`remove` or `park` of its pfn) stops at the pair's
/// slot: it is refused even in a table with no empty slot, whatever the order, and
/// `get`/`get_parked` of the pfn stop there too (checked directly with forged slots).
#[test]
fn parked_pfn_stops_the_probe() {
    let mem = storage(8);
    let set = new_set(&mem);
    // Fill the table, then turn every other key into a tombstone and park the rest.
    let pfns: Vec<u64> = (0..8u64).map(|i| i << 20).collect();
    for &p in &pfns {
        assert_eq!(set.insert(p, 4), Ok(()));
    }
    let mut hs = Vec::new();
    for (i, &p) in pfns.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(set.remove(p, 4), Ok(()));
        } else {
            let Ok(h) = set.park(p, 4) else {
                panic!("park({p:#x}) refused");
            };
            hs.push((p, h));
        }
    }
    assert!(mem.iter().all(|s| s.load(Ordering::Relaxed) != EMPTY));
    let before = snapshot(&mem);
    for &(p, h) in &hs {
        for o in [0, 3, 4, 5, MAX_ORDER] {
            assert_eq!(set.remove(p, o), Err(SetError::Missing));
            assert_eq!(set.park(p, o), Err(SetError::Missing));
        }
        assert_eq!(set.get(p), None);
        assert_eq!(set.get_parked(p), Some(4));
        assert_eq!(
            h.raw() as usize,
            slot_of(&mem, parked_key(p, 4)).expect("parked")
        );
    }
    assert_eq!(snapshot(&mem), before);
    assert_eq!((set.count(), set.parked()), (0, 4));
    for &(p, h) in &hs {
        assert_eq!(set.unpark(h, p, 4), Ok(()));
    }
    assert_eq!((set.count(), set.parked()), (4, 0));

    // White box: a second key of the same pfn forged right behind the first (which the
    // caller contract rules out) is never reached: lookups, removals and parks of the pfn
    // stop at the first key, live or parked, whatever its order.
    let p = 12345u64;
    for (first_parked, forged) in [
        (false, key(p, 4)),
        (false, parked_key(p, 3)),
        (false, parked_key(p, 4)),
        (true, key(p, 3)),
        (true, key(p, 4)),
        (true, parked_key(p, 4)),
    ] {
        let mem = storage(8);
        let set = new_set(&mem);
        assert_eq!(set.insert(p, 3), Ok(()));
        let at = slot_of(&mem, key(p, 3)).expect("stored");
        if first_parked {
            assert_eq!(set.park(p, 3), Ok(handle(at)));
        }
        mem[(at + 1) % 8].store(forged, Ordering::Relaxed);
        let before = snapshot(&mem);
        for o in [3, 4] {
            let what = format!("first parked {first_parked}, forged {forged:#x}, order {o}");
            if !first_parked && o == 3 {
                continue;
            }
            assert_eq!(set.remove(p, o), Err(SetError::Missing), "{what}");
            assert_eq!(set.park(p, o), Err(SetError::Missing), "{what}");
        }
        let (live, par) = if first_parked {
            (None, Some(3))
        } else {
            (Some(3), None)
        };
        assert_eq!(set.get(p), live);
        assert_eq!(set.get_parked(p), par);
        assert_eq!(snapshot(&mem), before);
    }
}

/// Storage shared with the set (`LiveSet<&[AtomicU64]>`) can be overwritten behind its
/// back with values that the set never writes (order bits 0, or a pfn above `MAX_PFN`,
/// live or parked): no operation may panic on them, they count as neither live nor
/// parked, and no operation matches or changes them.
#[test]
fn foreign_slots_do_not_panic() {
    let foreign = [
        64u64,
        5 << 6,
        PARKED,
        PARKED | 64,
        PARKED | 5 << 6,
        TOMB - 63,
        TOMB - 1,
        (MAX_PFN + 1) << 6 | 5,
        PARKED | (MAX_PFN + 1) << 6 | 5,
        PARKED - 1,
    ];
    for v in foreign {
        let mem = storage(8);
        let set = new_set(&mem);
        for s in &mem {
            s.store(v, Ordering::Relaxed);
        }
        let pfn = (v & !PARKED) >> 6;
        let order = ((v & 63) as u32).saturating_sub(1);
        for p in [pfn, pfn & MAX_PFN, 0, 1, 5] {
            assert_eq!(set.get(p), None, "{v:#x}: get({p:#x})");
            assert_eq!(set.get_parked(p), None, "{v:#x}: get_parked({p:#x})");
            for o in [0, order, MAX_ORDER] {
                assert_eq!(set.remove(p, o), Err(SetError::Missing));
                assert_eq!(set.park(p, o), Err(SetError::Missing));
                for at in 0..8 {
                    let h = handle(at);
                    assert_eq!(set.unpark(h, p, o), Err(SetError::Missing), "{v:#x}");
                    assert_eq!(set.drop_parked(h, p, o), Err(SetError::Missing));
                }
            }
        }
        assert!(set.insert(pfn, 0).is_err());
        assert_eq!(set.insert(0, 0), Err(SetError::Full));
        assert_eq!((set.count(), set.parked()), (0, 0), "{v:#x}");
        assert!(mem.iter().all(|s| s.load(Ordering::Relaxed) == v));
    }
    // Mixed with real keys: only those count.
    let mem = storage(8);
    let set = new_set(&mem);
    assert_eq!(set.insert(1, 1), Ok(()));
    assert_eq!(set.insert(2, 2), Ok(()));
    assert!(set.park(2, 2).is_ok());
    for (s, v) in mem
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) == EMPTY)
        .zip(foreign)
    {
        s.store(v, Ordering::Relaxed);
    }
    assert_eq!((set.count(), set.parked()), (1, 1));
}
