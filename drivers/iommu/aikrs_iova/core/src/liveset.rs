// SPDX-License-Identifier: GPL-2.0

//! A lock-free, fixed-capacity set of live and parked allocations, `(pfn, order)`, for
//! validating frees.
//!
//! The per-CPU caches (magazines) of the kernel domain hand out ranges without touching
//! the range tree, so the tree cannot tell a double free of a cached range from a good
//! one. The domain records each cached-size allocation here: *live* while its caller holds
//! it, *parked* while it sits in a magazine. A free parks the pair (one compare-and-swap)
//! and is refused if it does not find exactly its `(pfn, order)` live; the magazine keeps
//! the [`Handle`] that [`LiveSet::park`] returns, and an allocation from the magazine makes
//! the pair live again with [`LiveSet::unpark`]: one load and one store at that slot, no
//! probe and no read-modify-write. No lock: this sits on the fast path of every CPU.
//!
//! # Slots
//!
//! Open addressing with linear probing over caller-provided `AtomicU64` slots (a power of
//! two of them, at most `2^32` so that a slot index fits a [`Handle`]). A slot holds one
//! of:
//!
//! - [`EMPTY`] (0): never used; ends every probe sequence.
//! - [`TOMB`] (`u64::MAX`): used, then freed; probes go on past it, insertions reuse it.
//! - a *live key* `pfn << 6 | (order + 1)`, with `pfn <= MAX_PFN < 2^57` and
//!   `order <= MAX_ORDER`: bit 63 ([`PARKED`]) is clear, the order bits are never 0.
//! - a *parked key*, the live key with [`PARKED`] set. `MAX_PFN` is `2^57 - 2` so that
//!   even the largest parked key stays below [`TOMB`].
//!
//! A pfn is in at most one slot, live or parked (the caller inserts a pfn only while it
//! is neither), so a pair is found by probing from the pfn's home slot to the first slot
//! whose key, live or parked, has that pfn, or to an empty slot.
//!
//! # Transitions
//!
//! | from         | to           | by                       | how                     |
//! |--------------|--------------|--------------------------|-------------------------|
//! | EMPTY / TOMB | live key     | [`LiveSet::insert`]      | compare-and-swap        |
//! | live key     | TOMB         | [`LiveSet::remove`]      | compare-and-swap        |
//! | live key     | parked key   | [`LiveSet::park`]        | compare-and-swap        |
//! | parked key   | live key     | [`LiveSet::unpark`]      | load, then atomic store |
//! | parked key   | TOMB         | [`LiveSet::drop_parked`] | load, then atomic store |
//!
//! Nothing ever goes back to [`EMPTY`] (not safe against a concurrent insertion without
//! a lock) and a key never moves to another slot, so a handle stays valid for as long
//! as its pair stays parked, and every key stays reachable from its home slot.
//!
//! Compare-and-swap where several threads may race for one slot: insertions for a free
//! slot, and removals and parks (concurrent frees of one range) for a live key, of which
//! exactly one succeeds. Plain stores for a parked key: no compare-and-swap ever expects
//! a parked key (insertions expect [`EMPTY`] or [`TOMB`], removals and parks a live key),
//! so only `unpark` and `drop_parked` write a parked slot, and the caller contract gives
//! each parked pair a single owner (the magazine holding it) that alone may call them.
//! Between the owner's check and its store nobody else can change the slot, and a
//! concurrent `park` or `remove` of the pair fails on the parked key and sees the live key
//! only after the store, as if it had come after the allocation.
//!
//! Orderings: the compare-and-swaps are acquire-release and the stores release, so that
//! whoever takes a pair over (removes or parks a live key, reuses a tombstone) sees what
//! the previous owner did before giving it up; lookups acquire. The check before a store
//! is relaxed: the owner learnt the handle from the `park` that parked the pair, so it is
//! already ordered after it, and nobody else writes that slot.
//!
//! # Cost
//!
//! Insertions, removals and parks probe: O(1) expected (a key is found no further from
//! home than the first free slot was when it was inserted). A removal or park of a pfn
//! stops at the pfn's own key even if its order or state is wrong (a free of the wrong
//! size or a double free of a parked range), so only the free of a pfn that is not in the
//! set at all, which only a bad free does, may probe the whole table: O(slots). `unpark`
//! and `drop_parked` are O(1).
//!
//! # Foreign values
//!
//! The slots of a `LiveSet<&[AtomicU64]>` may be overwritten behind the set's back with
//! values that it never writes (order bits 0, or pfn bits above [`MAX_PFN`], with or
//! without [`PARKED`]). No operation panics on them, and none changes them: such a slot
//! counts as neither live nor parked ([`LiveSet::count`], [`LiveSet::parked`]), is never
//! claimed by an insertion (a table of them is full), never equals a key, and ends, as
//! not found, the probe of any lookup, removal or park of the pfn its pfn bits name.
//! (Overwriting slots with well-formed keys, or with [`EMPTY`], breaks the set's
//! guarantees, not its memory safety or freedom from panics.)
//!
//! Pure `core` Rust, no `unsafe`: the same file is compiled into the kernel module and
//! tested on the host.

use core::ops::Deref;
use core::sync::atomic::{AtomicU64, Ordering};

/// A slot that was never used: ends every probe sequence.
pub const EMPTY: u64 = 0;
/// A slot whose key was removed or dropped: probes go on past it; insertions may reuse
/// it.
pub const TOMB: u64 = u64::MAX;
/// The bit that marks a parked key: the parked key of `(pfn, order)` is its live key
/// `pfn << 6 | (order + 1)` with this bit set. Never set in a live key.
pub const PARKED: u64 = 1 << 63;
/// Largest pfn a key can hold: a live key stays below [`PARKED`], and the largest
/// parked key, `PARKED | MAX_PFN << 6 | (MAX_ORDER + 1)`, below [`TOMB`].
pub const MAX_PFN: u64 = (1 << 57) - 2;
/// Largest order a key can hold.
pub const MAX_ORDER: u32 = 62;

/// Why a [`LiveSet`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// Storage length not a power of two between 4 and `2^32` slots, storage not all
    /// empty, or an insertion with `pfn > MAX_PFN` or `order > MAX_ORDER`.
    InvalidArgument,
    /// Every slot holds a key (live or parked).
    Full,
    /// The pair is not in the state the operation needs: `remove` or `park` of a pair
    /// that is not live (absent, parked, live with another order, or not representable);
    /// `unpark` or `drop_parked` with a handle that does not name the slot of exactly that
    /// parked pair.
    Missing,
}

/// Where a parked pair sits in a [`LiveSet`]: the index of its slot.
///
/// [`LiveSet::park`] returns it; [`LiveSet::unpark`] and [`LiveSet::drop_parked`] take it
/// back and check it, so any value is safe to pass (one that does not name the pair's
/// slot is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(u32);

impl Handle {
    /// The handle whose slot index is `raw` (as stored by [`Handle::raw`]).
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The slot index, to store the handle compactly.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// The live key of `(pfn, order)`, or `None` if it cannot be represented.
fn key(pfn: u64, order: u32) -> Option<u64> {
    if pfn > MAX_PFN || order > MAX_ORDER {
        return None;
    }
    Some(pfn << 6 | u64::from(order + 1))
}

/// The pair in a slot value, `(pfn, order, parked)`, if the value is a live or parked
/// key (`None` for [`EMPTY`], [`TOMB`] and foreign values).
fn decode(v: u64) -> Option<(u64, u32, bool)> {
    let live = v & !PARKED;
    // Order bits 0: `EMPTY` or foreign. The mask keeps the cast lossless.
    let order = ((live & 63) as u32).checked_sub(1)?;
    let pfn = live >> 6;
    // `TOMB`'s pfn bits are `MAX_PFN + 1`.
    if pfn > MAX_PFN {
        return None;
    }
    Some((pfn, order, v & PARKED != 0))
}

/// The slots of a probe sequence with their indices: `left` more, from `at` on, wrapping
/// around at the end of `slots` (`mask == slots.len() - 1`). A hand-written iterator
/// rather than an adapter chain: the host tests run unoptimized, and a lookup of an
/// absent pfn goes through every slot.
struct Probe<'a> {
    /// The table.
    slots: &'a [AtomicU64],
    /// `slots.len() - 1`, a mask of the low bits as `slots.len()` is a power of two.
    mask: usize,
    /// The next slot to visit, `<= mask`.
    at: usize,
    /// Slots still to visit.
    left: usize,
}

impl<'a> Iterator for Probe<'a> {
    type Item = (usize, &'a AtomicU64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.at;
        // `at <= mask < usize::MAX`: no overflow.
        self.at = (at + 1) & self.mask;
        self.slots.get(at).map(|s| (at, s))
    }
}

/// Whether a set can use `n` slots: a power of two in `4..=2^32`, so that every slot
/// index fits a [`Handle`].
const fn usable_len(n: usize) -> bool {
    // `n >= 4` before `n - 1`.
    n >= 4 && n.is_power_of_two() && (n - 1) as u64 <= u32::MAX as u64
}

/// A set of `(pfn, order)` pairs keyed by `pfn`, each live or parked, safe to use from
/// many threads at once (see the module documentation for the slot encoding and the
/// caller contract of the parked state).
///
/// # Invariants
///
/// `slots.len()` is a power of two in `4..=2^32` (so every slot index fits a [`Handle`])
/// and `shift == 64 - log2(slots.len())`. Every slot holds [`EMPTY`], [`TOMB`], a live
/// key or a parked key (unless a caller that shares the storage overwrote it: see
/// "Foreign values"); the keys present, live and parked, have distinct pfns (the callers
/// insert a pfn only while it is neither live nor parked) and each is reachable from its
/// home slot by linear probing without crossing an [`EMPTY`] slot (slots only ever change
/// `EMPTY -> live`, `TOMB -> live`, `live -> TOMB`, `live <-> parked` and
/// `parked -> TOMB`, none of which breaks reachability or moves a key).
pub struct LiveSet<S: Deref<Target = [AtomicU64]>> {
    slots: S,
    shift: u32,
}

impl<S: Deref<Target = [AtomicU64]>> LiveSet<S> {
    /// Slots to provide so that `entries` live or parked allocations fit with short
    /// probes (twice as many, rounded up to a power of two, at least 4). [`LiveSet::new`]
    /// refuses more than `2^32`.
    pub const fn slots_needed(entries: usize) -> usize {
        match entries.saturating_mul(2).checked_next_power_of_two() {
            Some(p) if p >= 4 => p,
            Some(_) => 4,
            None => usize::MAX,
        }
    }

    /// Creates an empty set over `slots`, which must be a power of two of them between 4
    /// and `2^32`, all [`EMPTY`] (as zeroed `AtomicU64`s are).
    pub fn new(slots: S) -> Result<Self, SetError> {
        let n = slots.len();
        if !usable_len(n) || slots.iter().any(|s| s.load(Ordering::Relaxed) != EMPTY) {
            return Err(SetError::InvalidArgument);
        }
        // INVARIANT: all slots empty; power-of-two length in `4..=2^32`.
        Ok(Self {
            slots,
            shift: 64 - n.trailing_zeros(),
        })
    }

    /// The number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The slot where the probe sequence of `pfn` starts, `< slots.len()`.
    fn home(&self, pfn: u64) -> usize {
        // Fibonacci hashing: the top bits of pfn * 2^64/phi, so that aligned pfns
        // (whose low bits are all zero) still spread over the table.
        (pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The slots in probe order for `pfn`, with their indices: from its home slot, once
    /// around the table.
    fn probe(&self, pfn: u64) -> Probe<'_> {
        let slots: &[AtomicU64] = &self.slots;
        Probe {
            slots,
            // `slots.len()` is a power of two (type invariant), so masking wraps around
            // within bounds.
            mask: slots.len().wrapping_sub(1),
            at: self.home(pfn),
            left: slots.len(),
        }
    }

    /// The slot holding `pfn`'s key, live or parked, with its index and the value read
    /// (acquire); `None` if `pfn` is not in the set.
    fn find(&self, pfn: u64) -> Option<(usize, &AtomicU64, u64)> {
        if pfn > MAX_PFN {
            return None;
        }
        for (at, s) in self.probe(pfn) {
            let cur = s.load(Ordering::Acquire);
            if cur == EMPTY {
                return None;
            }
            // `TOMB`'s pfn bits are above `MAX_PFN`: it never matches.
            if (cur & !PARKED) >> 6 == pfn {
                return Some((at, s, cur));
            }
        }
        None
    }

    /// The slot `h` names, if it holds exactly the parked key of `(pfn, order)`, with the
    /// live key to store there.
    fn parked_slot(&self, h: Handle, pfn: u64, order: u32) -> Result<(&AtomicU64, u64), SetError> {
        let k = key(pfn, order).ok_or(SetError::Missing)?;
        let s = usize::try_from(h.0)
            .ok()
            .and_then(|i| self.slots.get(i))
            .ok_or(SetError::Missing)?;
        // Relaxed: this only checks the caller's claim. If it holds, the caller is ordered
        // after the `park` that gave it `h` (it had to learn `h`), and only the caller may
        // write a parked slot, so the load sees the parked key; if it does not, nothing is
        // written.
        if s.load(Ordering::Relaxed) != k | PARKED {
            return Err(SetError::Missing);
        }
        Ok((s, k))
    }

    /// Records the live pair `(pfn, order)`. The caller guarantees that `pfn` is neither
    /// live nor parked already.
    pub fn insert(&self, pfn: u64, order: u32) -> Result<(), SetError> {
        let k = key(pfn, order).ok_or(SetError::InvalidArgument)?;
        for (_, s) in self.probe(pfn) {
            let mut cur = s.load(Ordering::Relaxed);
            while cur == EMPTY || cur == TOMB {
                match s.compare_exchange_weak(cur, k, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return Ok(()),
                    Err(now) => cur = now,
                }
            }
        }
        Err(SetError::Full)
    }

    /// Removes the live pair `(pfn, order)`: exactly one of any number of concurrent
    /// removals and parks of a live pair succeeds; every other gets
    /// [`SetError::Missing`], as does the removal of a pair that is absent, parked or live
    /// with another order.
    pub fn remove(&self, pfn: u64, order: u32) -> Result<(), SetError> {
        let k = key(pfn, order).ok_or(SetError::Missing)?;
        match self.find(pfn) {
            Some((_, s, cur)) if cur == k => s
                .compare_exchange(k, TOMB, Ordering::AcqRel, Ordering::Relaxed)
                .map(|_| ())
                .map_err(|_| SetError::Missing),
            // Absent, parked (a double free) or live with another order (a free of the
            // wrong size).
            _ => Err(SetError::Missing),
        }
    }

    /// Parks the live pair `(pfn, order)` and returns where it sits, for
    /// [`LiveSet::unpark`] or [`LiveSet::drop_parked`]. Exactly one of any number of
    /// concurrent parks and removals of a live pair succeeds; every other gets
    /// [`SetError::Missing`], as does the park of a pair that is absent, already parked or
    /// live with another order.
    ///
    /// The caller that gets the handle owns the parked pair: it alone may unpark or drop
    /// it, once.
    pub fn park(&self, pfn: u64, order: u32) -> Result<Handle, SetError> {
        let k = key(pfn, order).ok_or(SetError::Missing)?;
        match self.find(pfn) {
            Some((at, s, cur)) if cur == k => s
                .compare_exchange(k, k | PARKED, Ordering::AcqRel, Ordering::Relaxed)
                // `at < slots.len() <= 2^32` (type invariant): the cast is lossless.
                .map(|_| Handle(at as u32))
                .map_err(|_| SetError::Missing),
            _ => Err(SetError::Missing),
        }
    }

    /// Makes the parked pair `(pfn, order)` at `h` live again, with one load and one
    /// store. The caller must own the parked pair (it got `h` from the [`LiveSet::park`]
    /// that parked it and has neither unparked nor dropped it since): no other thread may
    /// unpark or drop it concurrently. If `h` does not name a slot holding exactly the
    /// parked key of `(pfn, order)`, returns [`SetError::Missing`] and changes nothing.
    pub fn unpark(&self, h: Handle, pfn: u64, order: u32) -> Result<(), SetError> {
        let (s, k) = self.parked_slot(h, pfn, order)?;
        // A plain store is enough: nobody but the owner writes a parked slot (see the
        // module documentation). Release: a later `remove` or `park` of the live key
        // (acquire) sees what the caller did before.
        s.store(k, Ordering::Release);
        Ok(())
    }

    /// Removes the parked pair `(pfn, order)` at `h` (its slot becomes [`TOMB`]), with
    /// one load and one store. Same contract and checks as [`LiveSet::unpark`].
    pub fn drop_parked(&self, h: Handle, pfn: u64, order: u32) -> Result<(), SetError> {
        let (s, _) = self.parked_slot(h, pfn, order)?;
        // As in `unpark`; an insertion that reuses the slot does so by compare-and-swap.
        s.store(TOMB, Ordering::Release);
        Ok(())
    }

    /// The order of `pfn` if it is live (`None` if it is absent or parked).
    pub fn get(&self, pfn: u64) -> Option<u32> {
        match decode(self.find(pfn)?.2)? {
            (_, order, false) => Some(order),
            (_, _, true) => None,
        }
    }

    /// The order of `pfn` if it is parked (`None` if it is absent or live).
    pub fn get_parked(&self, pfn: u64) -> Option<u32> {
        match decode(self.find(pfn)?.2)? {
            (_, order, true) => Some(order),
            (_, _, false) => None,
        }
    }

    /// The number of slots that satisfy `keep(parked)` among those holding a key
    /// (foreign values are neither live nor parked).
    fn count_keys(&self, keep: impl Fn(bool) -> bool) -> usize {
        self.slots
            .iter()
            .filter(|s| decode(s.load(Ordering::Relaxed)).is_some_and(|(_, _, p)| keep(p)))
            .count()
    }

    /// The number of live pairs. O(slots); for tests and statistics.
    pub fn count(&self) -> usize {
        self.count_keys(|parked| !parked)
    }

    /// The number of parked pairs. O(slots); for tests and statistics.
    pub fn parked(&self) -> usize {
        self.count_keys(|parked| parked)
    }
}

#[cfg(test)]
mod tests {
    //! What the host tests in `tests/liveset.rs` cannot reach: refusing more than `2^32`
    //! slots needs `2^33` of them (64 GiB) there.

    use super::*;

    #[test]
    fn storage_length_limits() {
        for ok in [4usize, 8, 1 << 20, 1 << 31] {
            assert!(usable_len(ok), "{ok}");
        }
        for bad in [0usize, 1, 2, 3, 5, 6, 7, 12, 1023, 1025, usize::MAX] {
            assert!(!usable_len(bad), "{bad}");
        }
        #[cfg(target_pointer_width = "64")]
        {
            assert!(usable_len(1 << 32));
            assert!(!usable_len((1 << 32) + 1));
            assert!(!usable_len(1 << 33));
            assert!(!usable_len(1 << 63));
        }
    }
}
