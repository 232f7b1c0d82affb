// SPDX-License-Identifier: GPL-2.0

//! A lock-free, fixed-capacity set of live allocations, `(pfn, order)`, for validating
//! frees.
//!
//! The per-CPU caches of the kernel domain hand out ranges without touching the range
//! tree, so the tree cannot tell a double free of a cached range from a good one. The
//! domain records each live cached-size allocation here, and a free that does not find
//! exactly its `(pfn, order)` is refused. One compare-and-swap per allocation and per
//! free, no lock: this sits on the fast path of every CPU.
//!
//! Open addressing with linear probing over caller-provided `AtomicU64` slots (a power of
//! two of them). A slot is [`EMPTY`] (never used), [`TOMB`] (used, then removed) or a key
//! `pfn << 6 | (order + 1)`. Insertion claims the first empty or tombstone slot from the
//! key's home slot; removal turns the key's slot into a tombstone; lookups probe from the
//! home slot and stop at an empty slot. Tombstones are never turned back into empty slots
//! (that is not safe against a concurrent insertion without a lock), so a lookup for a key
//! that is absent, which only a bad free does, may probe the whole table: O(slots) on that
//! error path, O(1) expected otherwise (keys are found no further from home than the first
//! free slot was when they were inserted). Pure `core` Rust: the same file is compiled into
//! the kernel module and tested on the host.

use core::ops::Deref;
use core::sync::atomic::{AtomicU64, Ordering};

/// A slot that was never used: ends every probe sequence.
pub const EMPTY: u64 = 0;
/// A slot whose key was removed: probes go on past it; insertions may reuse it.
pub const TOMB: u64 = u64::MAX;
/// Largest pfn a key can hold (the largest key, `MAX_PFN << 6 | (MAX_ORDER + 1)`, must
/// stay below [`TOMB`]).
pub const MAX_PFN: u64 = (1 << 58) - 2;
/// Largest order a key can hold.
pub const MAX_ORDER: u32 = 62;

/// Why a [`LiveSet`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// Storage length not a power of two of at least 4 slots, storage not all empty,
    /// `pfn > MAX_PFN` or `order > MAX_ORDER`.
    InvalidArgument,
    /// Every slot holds a live key.
    Full,
    /// `remove` of a `(pfn, order)` pair that is not present (never inserted, already
    /// removed, or present with another order).
    Missing,
}

/// The key of `(pfn, order)`, or `None` if it cannot be represented.
fn key(pfn: u64, order: u32) -> Option<u64> {
    if pfn > MAX_PFN || order > MAX_ORDER {
        return None;
    }
    Some(pfn << 6 | u64::from(order + 1))
}

/// A set of `(pfn, order)` pairs keyed by `pfn`, safe to use from many threads at once.
///
/// # Invariants
///
/// `slots.len()` is a power of two `>= 4` and `shift == 64 - log2(slots.len())`. Every
/// slot holds [`EMPTY`], [`TOMB`] or a key; the keys present have distinct pfns (the
/// callers insert a pfn only while it is not live) and each is reachable from its home
/// slot by linear probing without crossing an [`EMPTY`] slot (slots only ever change
/// `EMPTY -> key`, `TOMB -> key` and `key -> TOMB`, none of which breaks reachability).
pub struct LiveSet<S: Deref<Target = [AtomicU64]>> {
    slots: S,
    shift: u32,
}

impl<S: Deref<Target = [AtomicU64]>> LiveSet<S> {
    /// Slots to provide so that `entries` live allocations fit with short probes (twice
    /// as many, rounded up to a power of two, at least 4).
    pub const fn slots_needed(entries: usize) -> usize {
        match entries.saturating_mul(2).checked_next_power_of_two() {
            Some(p) if p >= 4 => p,
            Some(_) => 4,
            None => usize::MAX,
        }
    }

    /// Creates an empty set over `slots`, which must all be [`EMPTY`] (as zeroed
    /// `AtomicU64`s are).
    pub fn new(slots: S) -> Result<Self, SetError> {
        let n = slots.len();
        if n < 4 || !n.is_power_of_two() || slots.iter().any(|s| s.load(Ordering::Relaxed) != 0) {
            return Err(SetError::InvalidArgument);
        }
        // INVARIANT: all slots empty; power-of-two length >= 4.
        Ok(Self {
            slots,
            shift: 64 - n.trailing_zeros(),
        })
    }

    /// The number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn home(&self, pfn: u64) -> usize {
        // Fibonacci hashing: the top bits of pfn * 2^64/phi, so that aligned pfns
        // (whose low bits are all zero) still spread over the table.
        (pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The slots in probe order for `pfn`: from its home slot, once around the table.
    fn probe(&self, pfn: u64) -> impl Iterator<Item = &AtomicU64> {
        let n = self.slots.len();
        let mask = n - 1;
        let h = self.home(pfn);
        // `slots.len()` is a power of two (type invariant), so masking stays in bounds.
        (0..n).filter_map(move |i| self.slots.get((h + i) & mask))
    }

    /// Records `(pfn, order)`. The caller guarantees that `pfn` is not live already.
    pub fn insert(&self, pfn: u64, order: u32) -> Result<(), SetError> {
        let k = key(pfn, order).ok_or(SetError::InvalidArgument)?;
        for s in self.probe(pfn) {
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

    /// Removes `(pfn, order)`: exactly one of any number of concurrent removals of a
    /// present pair succeeds; every other gets [`SetError::Missing`], as does the removal
    /// of a pair that is absent or present with another order.
    pub fn remove(&self, pfn: u64, order: u32) -> Result<(), SetError> {
        let k = key(pfn, order).ok_or(SetError::Missing)?;
        for s in self.probe(pfn) {
            let cur = s.load(Ordering::Acquire);
            if cur == EMPTY {
                return Err(SetError::Missing);
            }
            if cur == k {
                return s
                    .compare_exchange(k, TOMB, Ordering::AcqRel, Ordering::Relaxed)
                    .map(|_| ())
                    .map_err(|_| SetError::Missing);
            }
            if cur != TOMB && cur >> 6 == pfn {
                // Live with another order: a free of the wrong size.
                return Err(SetError::Missing);
            }
        }
        Err(SetError::Missing)
    }

    /// The order recorded for `pfn`, if it is live.
    pub fn get(&self, pfn: u64) -> Option<u32> {
        if pfn > MAX_PFN {
            return None;
        }
        for s in self.probe(pfn) {
            let cur = s.load(Ordering::Acquire);
            if cur == EMPTY {
                return None;
            }
            if cur != TOMB && cur >> 6 == pfn {
                // `checked_sub`: the order bits of a key are never 0, but a caller that
                // shares the storage may have overwritten it.
                return ((cur & 63) as u32).checked_sub(1);
            }
        }
        None
    }

    /// The number of live keys. O(slots); for tests and statistics.
    pub fn count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                let v = s.load(Ordering::Relaxed);
                v != EMPTY && v != TOMB
            })
            .count()
    }
}
