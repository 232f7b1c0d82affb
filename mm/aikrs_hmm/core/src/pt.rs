// SPDX-License-Identifier: GPL-2.0

//! A GPU-MMU-like device page table mirroring a 48-bit CPU virtual address space, for an
//! HMM mirror driver.
//!
//! This file is shared verbatim by the host crate `aikrs-hmm-core` (tests) and by the
//! kernel module, which includes it with `#[path]`. It therefore uses nothing but `core`,
//! refers to no other file, has no crate-level attributes, no `unsafe`, no allocation, no
//! floating point, and no operation that can panic on any argument of the public API:
//! caller-supplied numbers are validated first, node slots are only accessed through
//! bounds-checked `get`/`get_mut`, counters only go down through saturating arithmetic,
//! and every loop and the recursion are bounded by the fixed level count and
//! [`ENTRIES`]. The remaining arithmetic cannot overflow whatever the nodes contain: it
//! is on levels `<= 4`, slot indices `< 512`, used counts `<= 1023`, addresses
//! `<= VA_END` of validated ranges that every step clips to `base <= start < end`, and
//! counters bounded by the number of pages and calls.
//!
//! # Layout
//!
//! Four levels of [`ENTRIES`] (512) slots, like x86-64 4-level paging: an entry at level
//! 3 covers 512 GiB, level 2 1 GiB, level 1 2 MiB, level 0 4 KiB. The table itself holds
//! one more entry, the *root entry* (level 4, covering the whole `[0, VA_END)`).
//!
//! * A level-0 entry is empty or a 4 KiB leaf.
//! * A level-1 entry is empty, a 2 MiB ("huge") leaf, or a table of level-0 entries.
//! * A level-2, 3 or 4 entry is empty or a table of entries one level down.
//!
//! A leaf holds a page frame number ([`Leaf::pfn`], opaque to the table, at most
//! [`MAX_PFN`]) and a [`Perm`].
//!
//! # Memory
//!
//! The table never allocates: table nodes ([`Node`], exactly 4096 bytes) come from a
//! caller-provided [`Pool`] and are named by `u32` indices. An entry that points to a
//! table also records how many of that table's slots are used, so a table whose last
//! entry is removed is freed at once (O(1)), and the memory in use never grows with
//! map/invalidate churn: it is bounded by what is currently mapped.
//!
//! # Invariants
//!
//! Between calls (whatever they returned), for a table used with one pool that keeps its
//! contract:
//!
//! 1. The root entry is empty or a table (of level-3 entries).
//! 2. A table entry at level `E >= 1` names a node of the pool whose 512 slots are
//!    entries of level `E - 1`, and its `used` field is the number of non-empty slots of
//!    that node, in `1..=512`: a table never stays empty (it is freed and its entry
//!    cleared in the same call that removes its last entry).
//! 3. Leaves are only at levels 0 (4 KiB) and 1 (2 MiB). The pfn of a leaf is
//!    `<= MAX_PFN`, the pfn of a huge leaf is a multiple of 512, and the permissions of
//!    every leaf contain [`Perm::READ`] (an entry that would lose `READ` is removed).
//! 4. Every node the table allocated and did not free is named by exactly one table
//!    entry; [`Stats::tables`] is their number, [`Stats::pages`] the number of 4 KiB
//!    leaves and [`Stats::huge`] the number of 2 MiB leaves.
//! 5. An operation that returns an error has changed nothing (neither the entries, nor
//!    the statistics, nor the set of nodes allocated from the pool).
//!
//! # Cost
//!
//! Every operation walks down from the root and only descends into the tables that
//! intersect its range: absent subtrees are skipped. Within a table it reads the slots
//! that intersect the range, and stops as soon as it has seen all the table's used
//! slots. Invalidating a whole level-0 table is O(1). Splitting a huge entry writes one
//! node (512 slots). Nothing is ever proportional to the size of the address space or
//! to the number of tables outside the range.
//!
//! [`PageTable::map`] allocates at most [`MAX_ALLOCS_MAP`] (4) nodes;
//! [`PageTable::invalidate`] and [`PageTable::protect`] allocate at most
//! [`MAX_ALLOCS_EDIT`] (2) nodes, only to split the huge entries at the two ends of the
//! range, and never fail for lack of memory (they drop the huge entry instead).
//!
//! # Pool contract
//!
//! The pool must return from [`Pool::alloc`] the index of a node that is not in use
//! (any content: the table clears it), must let [`Pool::node`]/[`Pool::node_mut`] reach
//! every allocated node, and must not touch a node between its allocation and its
//! [`Pool::free`]. If a pool breaks this contract, or a table is used with another
//! table's pool, the table stays panic-free and memory safe, but its contents and
//! statistics are unspecified.

use core::ops::ControlFlow;

/// The number of slots of a table node.
pub const ENTRIES: usize = 512;

/// The number of table levels (3 down to 0).
pub const LEVELS: usize = 4;

/// log2 of the size of a level-0 page (4 KiB).
pub const PAGE_SHIFT: u32 = 12;

/// The size of a level-0 page, 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// log2 of the size of a huge (level-1) page (2 MiB).
pub const HUGE_SHIFT: u32 = 21;

/// The size of a huge (level-1) page, 2 MiB.
pub const HUGE_SIZE: u64 = 1 << HUGE_SHIFT;

/// The number of 4 KiB pages in a huge page (512).
pub const HUGE_PAGES: u64 = HUGE_SIZE / PAGE_SIZE;

/// The number of virtual address bits mirrored (48).
pub const VA_BITS: u32 = 48;

/// One past the last mirrored virtual address, `1 << 48`: addresses must be below it
/// (range ends may equal it).
pub const VA_END: u64 = 1 << VA_BITS;

/// The largest page frame number a leaf can hold, `2^56 - 1`.
pub const MAX_PFN: u64 = (1 << 56) - 1;

/// The most nodes one [`PageTable::map`] or [`PageTable::map_huge`] call allocates: a
/// table at each of levels 3, 2, 1 and 0 (a split of a huge entry takes one).
pub const MAX_ALLOCS_MAP: usize = 4;

/// The most nodes one [`PageTable::invalidate`] or [`PageTable::protect`] call
/// allocates: one per split huge entry, and only the huge entries at the two ends of the
/// range can be partially covered.
pub const MAX_ALLOCS_EDIT: usize = 2;

// -----------------------------------------------------------------------------------
// Permissions.

/// The permissions and attributes of a leaf: a set of the bits [`Perm::READ`],
/// [`Perm::WRITE`], [`Perm::ATOMIC`] and [`Perm::DEVICE`].
///
/// Only `READ` has a meaning to the table: every mapped entry has it, mapping without it
/// is refused ([`Error::BadPerm`]) and an entry that loses it in [`PageTable::protect`]
/// is removed. The other bits are stored and reported as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perm(u8);

impl Perm {
    /// No bits.
    pub const NONE: Perm = Perm(0);
    /// The device may read the page (required for every mapped entry).
    pub const READ: Perm = Perm(1 << 0);
    /// The device may write the page.
    pub const WRITE: Perm = Perm(1 << 1);
    /// The device may perform atomics on the page (device-exclusive access).
    pub const ATOMIC: Perm = Perm(1 << 2);
    /// The page is in device memory (a device-private page).
    pub const DEVICE: Perm = Perm(1 << 3);
    /// Every bit.
    pub const ALL: Perm = Perm(0xf);

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set with these bits, or `None` if a bit outside [`Perm::ALL`] is set.
    pub const fn from_bits(bits: u8) -> Option<Perm> {
        if bits & !Perm::ALL.0 != 0 {
            None
        } else {
            Some(Perm(bits))
        }
    }

    /// The set with these bits, ignoring the bits outside [`Perm::ALL`].
    pub const fn from_bits_truncate(bits: u8) -> Perm {
        Perm(bits & Perm::ALL.0)
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Perm) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits set in `self` or `other`.
    pub const fn union(self, other: Perm) -> Perm {
        Perm(self.0 | other.0)
    }

    /// The bits set in both `self` and `other`.
    pub const fn intersection(self, other: Perm) -> Perm {
        Perm(self.0 & other.0)
    }

    /// The bits of `self` that are not in `other`.
    pub const fn difference(self, other: Perm) -> Perm {
        Perm(self.0 & !other.0)
    }
}

impl core::ops::BitOr for Perm {
    type Output = Perm;

    /// [`Perm::union`].
    fn bitor(self, other: Perm) -> Perm {
        self.union(other)
    }
}

impl core::ops::BitAnd for Perm {
    type Output = Perm;

    /// [`Perm::intersection`].
    fn bitand(self, other: Perm) -> Perm {
        self.intersection(other)
    }
}

// -----------------------------------------------------------------------------------
// Errors, results, statistics.

/// Why an operation was refused (the table is unchanged).
///
/// The arguments are checked in the order of the variants: the first failing check is
/// reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// An address `>= VA_END` (`1 << 48`), or a range end `> VA_END`.
    OutOfRange,
    /// An address or range end that is not a multiple of [`PAGE_SIZE`]; for
    /// [`PageTable::map_huge`], a `va` that is not a multiple of [`HUGE_SIZE`] or a `pfn`
    /// that is not a multiple of [`HUGE_PAGES`].
    Unaligned,
    /// A range with `end <= start` (empty or reversed).
    EmptyRange,
    /// A pfn `> MAX_PFN` (or a huge pfn whose last page would be).
    BadPfn,
    /// Permissions without [`Perm::READ`].
    BadPerm,
    /// The pool had no free node (only [`PageTable::map`] and [`PageTable::map_huge`]).
    NoMemory,
}

/// One mapped entry, as seen by [`PageTable::lookup`] and [`PageTable::for_each`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Leaf {
    /// The page frame number: in [`PageTable::lookup`], of the looked-up 4 KiB page
    /// (for a huge entry, its base pfn plus the page's index in it); in
    /// [`PageTable::for_each`], of the first page of the entry.
    pub pfn: u64,
    /// The permissions (always containing [`Perm::READ`]).
    pub perm: Perm,
    /// Whether the entry is a 2 MiB huge entry (else a 4 KiB one).
    pub huge: bool,
}

impl Leaf {
    /// The size of the entry in bytes: [`HUGE_SIZE`] or [`PAGE_SIZE`].
    pub const fn size(&self) -> u64 {
        if self.huge {
            HUGE_SIZE
        } else {
            PAGE_SIZE
        }
    }

    /// The number of 4 KiB pages of the entry: [`HUGE_PAGES`] or 1.
    pub const fn pages(&self) -> u64 {
        if self.huge {
            HUGE_PAGES
        } else {
            1
        }
    }
}

/// What [`PageTable::protect`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Protected {
    /// The number of 4 KiB pages that stay mapped with fewer permissions.
    pub downgraded: u64,
    /// The number of 4 KiB pages that were unmapped: those that lost [`Perm::READ`],
    /// and all 512 pages of a partially covered huge entry that was dropped because its
    /// split could not allocate.
    pub removed: u64,
}

/// Counters of a [`PageTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// The number of 4 KiB (level-0) entries.
    pub pages: u64,
    /// The number of 2 MiB (huge, level-1) entries.
    pub huge: u64,
    /// The number of table nodes in use (allocated from the pool and not freed), the
    /// root table included.
    pub tables: u64,
    /// The number of huge entries split into 512 4 KiB entries (cumulative).
    pub splits: u64,
    /// The number of huge entries dropped entirely by [`PageTable::invalidate`] or
    /// [`PageTable::protect`] because their split could not allocate (cumulative).
    pub split_failures: u64,
}

impl Stats {
    /// The number of 4 KiB pages mapped: `pages + 512 * huge`.
    pub const fn mapped_pages(&self) -> u64 {
        self.pages
            .saturating_add(self.huge.saturating_mul(HUGE_PAGES))
    }
}

// -----------------------------------------------------------------------------------
// Nodes and the pool.

/// A table node: 512 slots of one packed `u64` each, exactly 4096 bytes.
///
/// All-zero bytes are a valid, empty node (a zero slot is an empty entry), so the
/// kernel may allocate nodes as zeroed memory. The table clears every node it
/// allocates, so a pool may also hand out a node with stale content.
#[repr(C)]
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    slots: [u64; ENTRIES],
}

impl Node {
    /// An empty node.
    pub const EMPTY: Node = Node {
        slots: [0; ENTRIES],
    };

    /// An empty node.
    pub const fn new() -> Node {
        Node::EMPTY
    }

    /// Whether every slot is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|&s| s == 0)
    }
}

impl Default for Node {
    fn default() -> Node {
        Node::EMPTY
    }
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let used = self.slots.iter().filter(|&&s| s != 0).count();
        f.debug_struct("Node").field("used", &used).finish()
    }
}

/// The source of table nodes of a [`PageTable`], named by `u32` indices.
///
/// See the module documentation for the contract.
pub trait Pool {
    /// Allocates a node and returns its index, or `None` when out of memory. Its content
    /// does not matter (the table clears it).
    fn alloc(&mut self) -> Option<u32>;

    /// Frees the node `idx`, which the table allocated and no longer uses.
    fn free(&mut self, idx: u32);

    /// The node `idx`, or `None` if it is not allocated.
    fn node(&self, idx: u32) -> Option<&Node>;

    /// The node `idx`, or `None` if it is not allocated.
    fn node_mut(&mut self, idx: u32) -> Option<&mut Node>;
}

// -----------------------------------------------------------------------------------
// Slot encoding.
//
// A slot is a `u64`:
//
// * `0`: empty;
// * tag `0b01` (bits 0-1): a table; bits 2-11: the number of used slots of the table
//   (1..=512); bits 32-63: the node index;
// * tag `0b10`: a leaf; bits 2-5: the permissions; bits 8-63: the pfn (56 bits).
//
// Any other value, a table tag in a level-0 entry or a leaf tag above level 1 cannot be
// written by this file and is read as empty.

const TAG_MASK: u64 = 0b11;
const TAG_TABLE: u64 = 0b01;
const TAG_LEAF: u64 = 0b10;
const USED_SHIFT: u32 = 2;
const USED_MASK: u64 = 0x3ff;
const IDX_SHIFT: u32 = 32;
const PERM_SHIFT: u32 = 2;
const PERM_MASK: u64 = 0xf;
const PFN_SHIFT: u32 = 8;

/// The level of the root entry.
const TOP: usize = LEVELS;

/// A decoded slot.
#[derive(Clone, Copy)]
enum Slot {
    Empty,
    Table { idx: u32, used: u16 },
    Leaf { pfn: u64, perm: Perm },
}

impl Slot {
    /// Decodes the entry `raw` of level `elvl`.
    fn decode(raw: u64, elvl: usize) -> Slot {
        match raw & TAG_MASK {
            TAG_TABLE if elvl >= 1 => Slot::Table {
                idx: (raw >> IDX_SHIFT) as u32,
                used: ((raw >> USED_SHIFT) & USED_MASK) as u16,
            },
            TAG_LEAF if elvl <= 1 => Slot::Leaf {
                pfn: raw >> PFN_SHIFT,
                perm: Perm::from_bits_truncate(((raw >> PERM_SHIFT) & PERM_MASK) as u8),
            },
            _ => Slot::Empty,
        }
    }

    /// Whether the entry `raw` of level `elvl` is empty.
    fn is_empty(raw: u64, elvl: usize) -> bool {
        matches!(Slot::decode(raw, elvl), Slot::Empty)
    }

    /// A table entry for node `idx` with `used` used slots (`used` is clamped to 512).
    fn table(idx: u32, used: u16) -> u64 {
        let used = if used as usize > ENTRIES {
            ENTRIES as u64
        } else {
            u64::from(used)
        };
        (u64::from(idx) << IDX_SHIFT) | (used << USED_SHIFT) | TAG_TABLE
    }

    /// A leaf entry (`pfn` is masked to 56 bits, the callers have checked it).
    fn leaf(pfn: u64, perm: Perm) -> u64 {
        ((pfn & MAX_PFN) << PFN_SHIFT) | ((u64::from(perm.0) & PERM_MASK) << PERM_SHIFT) | TAG_LEAF
    }
}

/// log2 of the size covered by an entry of level `elvl` (`elvl <= 4`: at most 48).
const fn entry_shift(elvl: usize) -> u32 {
    PAGE_SHIFT + 9 * elvl as u32
}

/// The index of `va` in a node whose slots are entries of level `clvl`.
const fn index(va: u64, clvl: usize) -> usize {
    ((va >> entry_shift(clvl)) & (ENTRIES as u64 - 1)) as usize
}

/// Reads slot `i` of node `idx` (empty if the pool does not know the node).
fn read<P: Pool + ?Sized>(pool: &P, idx: u32, i: usize) -> u64 {
    match pool.node(idx) {
        Some(node) => node.slots.get(i).copied().unwrap_or(0),
        None => 0,
    }
}

/// Writes slot `i` of node `idx` (nothing if the pool does not know the node).
fn write<P: Pool + ?Sized>(pool: &mut P, idx: u32, i: usize, raw: u64) {
    if let Some(slot) = pool.node_mut(idx).and_then(|n| n.slots.get_mut(i)) {
        *slot = raw;
    }
}

// -----------------------------------------------------------------------------------
// Argument checks.

fn check_va(va: u64, align: u64) -> Result<(), Error> {
    if va >= VA_END {
        return Err(Error::OutOfRange);
    }
    if va & (align - 1) != 0 {
        return Err(Error::Unaligned);
    }
    Ok(())
}

fn check_leaf(pfn: u64, perm: Perm) -> Result<(), Error> {
    if pfn > MAX_PFN {
        return Err(Error::BadPfn);
    }
    if !perm.contains(Perm::READ) {
        return Err(Error::BadPerm);
    }
    Ok(())
}

fn check_range(start: u64, end: u64) -> Result<(), Error> {
    if start > VA_END || end > VA_END {
        return Err(Error::OutOfRange);
    }
    if start & (PAGE_SIZE - 1) != 0 || end & (PAGE_SIZE - 1) != 0 {
        return Err(Error::Unaligned);
    }
    if end <= start {
        return Err(Error::EmptyRange);
    }
    Ok(())
}

// -----------------------------------------------------------------------------------
// The table.

/// What a range edit does to each leaf it covers.
#[derive(Clone, Copy)]
enum Op {
    /// Remove it.
    Invalidate,
    /// Clear these permissions (remove it if it loses `READ`).
    Protect(Perm),
}

impl Op {
    /// The new permissions of a covered leaf, `None` to remove it.
    fn apply(self, perm: Perm) -> Option<Perm> {
        match self {
            Op::Invalidate => None,
            Op::Protect(clear) => {
                let p = perm.difference(clear);
                if p.contains(Perm::READ) {
                    Some(p)
                } else {
                    None
                }
            }
        }
    }
}

/// The device page table: the root entry and the statistics. The nodes are in the
/// [`Pool`] passed to every operation, which must always be the same one.
///
/// Dropping a table does not free its nodes: call [`PageTable::clear`] first, or drop
/// the pool with it.
#[derive(Debug, Default)]
pub struct PageTable {
    /// The level-4 entry: empty or a table of level-3 entries.
    root: u64,
    stats: Stats,
}

impl PageTable {
    /// An empty table (no node allocated).
    pub const fn new() -> PageTable {
        PageTable {
            root: 0,
            stats: Stats {
                pages: 0,
                huge: 0,
                tables: 0,
                splits: 0,
                split_failures: 0,
            },
        }
    }

    /// The counters.
    pub const fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether nothing is mapped (then no node is in use either).
    pub const fn is_empty(&self) -> bool {
        self.root == 0
    }

    /// Maps the 4 KiB page at `va` to `pfn` with `perm`, replacing the entry there.
    ///
    /// If the page is covered by a huge entry, the huge entry is first split into 512
    /// 4 KiB entries (pfns `base + i`, same permissions), then the one at `va` is
    /// replaced.
    ///
    /// Errors, in this order: [`Error::OutOfRange`] (`va >= VA_END`),
    /// [`Error::Unaligned`] (`va` not 4 KiB aligned), [`Error::BadPfn`] (`pfn >
    /// MAX_PFN`), [`Error::BadPerm`] (no `READ`), [`Error::NoMemory`] (the pool could not
    /// provide a needed node: the table is unchanged and every node allocated during
    /// the call is freed).
    pub fn map<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        va: u64,
        pfn: u64,
        perm: Perm,
    ) -> Result<(), Error> {
        check_va(va, PAGE_SIZE)?;
        check_leaf(pfn, perm)?;
        self.root = self.map_entry(pool, self.root, TOP, va, Slot::leaf(pfn, perm), 0)?;
        Ok(())
    }

    /// Maps the 2 MiB huge page at `va` to the pfns `pfn..pfn + 512` with `perm`,
    /// replacing the entries there (a level-0 table there is freed).
    ///
    /// Errors, in this order: [`Error::OutOfRange`] (`va >= VA_END`),
    /// [`Error::Unaligned`] (`va` not 2 MiB aligned, or `pfn` not a multiple of 512),
    /// [`Error::BadPfn`] (`pfn + 511 > MAX_PFN`), [`Error::BadPerm`] (no `READ`),
    /// [`Error::NoMemory`] (table unchanged).
    pub fn map_huge<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        va: u64,
        pfn: u64,
        perm: Perm,
    ) -> Result<(), Error> {
        check_va(va, HUGE_SIZE)?;
        if pfn & (HUGE_PAGES - 1) != 0 {
            return Err(Error::Unaligned);
        }
        // `MAX_PFN + 1` is a multiple of 512: an aligned `pfn <= MAX_PFN` has its last
        // page `<= MAX_PFN` too.
        check_leaf(pfn, perm)?;
        self.root = self.map_entry(pool, self.root, TOP, va, Slot::leaf(pfn, perm), 1)?;
        Ok(())
    }

    /// The entry mapping the 4 KiB page that contains `va` (any `va`, aligned or not),
    /// or `None` if the page is not mapped or `va >= VA_END`.
    ///
    /// For a huge entry, [`Leaf::pfn`] is the pfn of that very page (base + index).
    pub fn lookup<P: Pool + ?Sized>(&self, pool: &P, va: u64) -> Option<Leaf> {
        if va >= VA_END {
            return None;
        }
        let mut raw = self.root;
        let mut elvl = TOP;
        loop {
            match Slot::decode(raw, elvl) {
                Slot::Empty => return None,
                Slot::Leaf { pfn, perm } => {
                    let huge = elvl != 0;
                    let pfn = if huge {
                        // Huge pfns are multiples of 512: `|` is the addition.
                        pfn | ((va >> PAGE_SHIFT) & (HUGE_PAGES - 1))
                    } else {
                        pfn
                    };
                    return Some(Leaf { pfn, perm, huge });
                }
                Slot::Table { idx, .. } => {
                    // `decode` only returns tables for `elvl >= 1`.
                    elvl = elvl.checked_sub(1)?;
                    raw = read(pool, idx, index(va, elvl));
                }
            }
        }
    }

    /// Removes the entries of `[start, end)` and returns the number of 4 KiB pages
    /// unmapped.
    ///
    /// A huge entry partially covered is split into 4 KiB entries and only the covered
    /// ones are removed; if the split cannot allocate a node, the whole huge entry is
    /// removed (all its 512 pages count as unmapped) and [`Stats::split_failures`] is
    /// incremented. Tables left empty are freed.
    ///
    /// Errors (the table is unchanged), in this order: [`Error::OutOfRange`]
    /// (`start` or `end > VA_END`), [`Error::Unaligned`] (`start` or `end` not 4 KiB
    /// aligned), [`Error::EmptyRange`] (`end <= start`). Never [`Error::NoMemory`].
    pub fn invalidate<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        start: u64,
        end: u64,
    ) -> Result<u64, Error> {
        check_range(start, end)?;
        let mut out = Protected::default();
        self.root = self.edit_entry(
            pool,
            self.root,
            TOP,
            0,
            start,
            end,
            Op::Invalidate,
            &mut out,
        );
        Ok(out.removed)
    }

    /// Clears the permissions `clear` from the entries of `[start, end)` without
    /// unmapping them, except that an entry losing [`Perm::READ`] is removed.
    ///
    /// Entries whose permissions do not change are left alone: a partially covered
    /// huge entry is split only if its permissions change. If such a split cannot
    /// allocate a node, the whole huge entry is removed (counted in
    /// [`Protected::removed`] and [`Stats::split_failures`]). Tables left empty are
    /// freed.
    ///
    /// Errors: as [`PageTable::invalidate`].
    pub fn protect<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        start: u64,
        end: u64,
        clear: Perm,
    ) -> Result<Protected, Error> {
        check_range(start, end)?;
        let mut out = Protected::default();
        if !clear.is_empty() {
            let op = Op::Protect(clear);
            self.root = self.edit_entry(pool, self.root, TOP, 0, start, end, op, &mut out);
        }
        Ok(out)
    }

    /// Calls `f(va, leaf)` for every entry intersecting `[start, end)`, in ascending
    /// address order, until `f` returns `ControlFlow::Break`.
    ///
    /// `va` and `leaf` describe the whole entry: a huge entry is visited once, with its
    /// 2 MiB aligned address (which may be below `start`), its base pfn, and
    /// [`Leaf::huge`] set.
    ///
    /// Errors: as [`PageTable::invalidate`].
    pub fn for_each<P, F>(&self, pool: &P, start: u64, end: u64, mut f: F) -> Result<(), Error>
    where
        P: Pool + ?Sized,
        F: FnMut(u64, Leaf) -> ControlFlow<()>,
    {
        check_range(start, end)?;
        let _ = walk(pool, self.root, TOP, 0, start, end, &mut f);
        Ok(())
    }

    /// Removes every entry and frees every node (teardown). [`Stats::splits`] and
    /// [`Stats::split_failures`] are kept.
    pub fn clear<P: Pool + ?Sized>(&mut self, pool: &mut P) {
        free_tree(pool, self.root, TOP);
        self.root = 0;
        self.stats.pages = 0;
        self.stats.huge = 0;
        self.stats.tables = 0;
    }

    // -------------------------------------------------------------------------------
    // Internals.

    /// Allocates and clears a node.
    fn alloc_node<P: Pool + ?Sized>(&mut self, pool: &mut P) -> Result<u32, Error> {
        let idx = pool.alloc().ok_or(Error::NoMemory)?;
        match pool.node_mut(idx) {
            Some(node) => node.slots.fill(0),
            None => {
                // A broken pool: give the index back and report no memory.
                pool.free(idx);
                return Err(Error::NoMemory);
            }
        }
        self.stats.tables += 1;
        Ok(idx)
    }

    /// Frees a node.
    fn free_node<P: Pool + ?Sized>(&mut self, pool: &mut P, idx: u32) {
        pool.free(idx);
        self.stats.tables = self.stats.tables.saturating_sub(1);
    }

    /// Installs `leaf` at level `target` (0 or 1) for `va` below the entry `raw` of
    /// level `elvl > target` (or replaces it if `elvl == target`) and returns the new
    /// value of the entry.
    ///
    /// On error nothing has changed: the only fallible step is an allocation, nodes
    /// allocated below are freed on the way back, and existing nodes are only written
    /// after everything below succeeded.
    fn map_entry<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        raw: u64,
        elvl: usize,
        va: u64,
        leaf: u64,
        target: usize,
    ) -> Result<u64, Error> {
        let slot = Slot::decode(raw, elvl);
        if elvl <= target {
            match slot {
                Slot::Empty => {
                    if target == 0 {
                        self.stats.pages += 1;
                    } else {
                        self.stats.huge += 1;
                    }
                }
                // Replaced in place: same kind of leaf (leaves are only at level 0 or 1).
                Slot::Leaf { .. } => {}
                // Only at level 1 (`target == 1`): a table of 4 KiB leaves, `used` of
                // them.
                Slot::Table { idx, used } => {
                    self.stats.pages = self.stats.pages.saturating_sub(u64::from(used));
                    self.free_node(pool, idx);
                    self.stats.huge += 1;
                }
            }
            return Ok(leaf);
        }
        // `elvl > target >= 0`.
        let Some(clvl) = elvl.checked_sub(1) else {
            return Ok(raw);
        };
        let i = index(va, clvl);
        match slot {
            Slot::Table { idx, used } => {
                let old = read(pool, idx, i);
                let new = self.map_entry(pool, old, clvl, va, leaf, target)?;
                write(pool, idx, i, new);
                let used = if Slot::is_empty(old, clvl) {
                    used.saturating_add(1)
                } else {
                    used
                };
                Ok(Slot::table(idx, used))
            }
            Slot::Empty => {
                let idx = self.alloc_node(pool)?;
                match self.map_entry(pool, 0, clvl, va, leaf, target) {
                    Ok(new) => {
                        write(pool, idx, i, new);
                        Ok(Slot::table(idx, 1))
                    }
                    Err(e) => {
                        self.free_node(pool, idx);
                        Err(e)
                    }
                }
            }
            // A huge leaf (`elvl == 1`, `target == 0`): split it, then replace the 4 KiB
            // entry at `va` (no allocation after the split: it cannot fail).
            Slot::Leaf { pfn, perm } => {
                let idx = self.alloc_node(pool)?;
                if let Some(node) = pool.node_mut(idx) {
                    for (j, s) in node.slots.iter_mut().enumerate() {
                        *s = Slot::leaf(pfn | j as u64, perm);
                    }
                }
                write(pool, idx, i, leaf);
                self.stats.huge = self.stats.huge.saturating_sub(1);
                self.stats.pages += HUGE_PAGES;
                self.stats.splits += 1;
                Ok(Slot::table(idx, ENTRIES as u16))
            }
        }
    }

    /// Applies `op` to the part `[start, end)` of the entry `raw` of level `elvl`, which
    /// covers `[base, base + (1 << entry_shift(elvl)))`, and returns the new value of
    /// the entry (`0` if it became empty). Requires `base <= start < end <=` the end of
    /// the entry.
    ///
    /// Never fails: a split that cannot allocate drops the huge entry.
    #[allow(clippy::too_many_arguments)]
    fn edit_entry<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        raw: u64,
        elvl: usize,
        base: u64,
        start: u64,
        end: u64,
        op: Op,
        out: &mut Protected,
    ) -> u64 {
        let whole = start == base && end - base == 1 << entry_shift(elvl);
        match Slot::decode(raw, elvl) {
            Slot::Empty => raw,
            Slot::Leaf { pfn, perm } => {
                let newp = op.apply(perm);
                if newp == Some(perm) {
                    return raw;
                }
                let (pages, counter) = if elvl == 0 {
                    (1, &mut self.stats.pages)
                } else {
                    (HUGE_PAGES, &mut self.stats.huge)
                };
                if whole {
                    match newp {
                        None => {
                            *counter = counter.saturating_sub(1);
                            out.removed += pages;
                            0
                        }
                        Some(p) => {
                            out.downgraded += pages;
                            Slot::leaf(pfn, p)
                        }
                    }
                } else {
                    // A huge leaf (a 4 KiB one is always whole).
                    self.split_edit(pool, base, start, end, pfn, perm, newp, out)
                }
            }
            Slot::Table { idx, used } => {
                let Some(clvl) = elvl.checked_sub(1) else {
                    return raw;
                };
                if whole && clvl == 0 && matches!(op, Op::Invalidate) {
                    // A whole table of 4 KiB leaves goes: O(1).
                    self.stats.pages = self.stats.pages.saturating_sub(u64::from(used));
                    out.removed += u64::from(used);
                    self.free_node(pool, idx);
                    return 0;
                }
                let cshift = entry_shift(clvl);
                let first = ((start - base) >> cshift) as usize;
                let last = ((end - 1 - base) >> cshift) as usize;
                let mut left = used;
                let mut seen = 0;
                for i in first..=last {
                    if seen >= used {
                        // All the used slots have been seen: the rest are empty.
                        break;
                    }
                    let old = read(pool, idx, i);
                    if Slot::is_empty(old, clvl) {
                        continue;
                    }
                    seen += 1;
                    let cbase = base + ((i as u64) << cshift);
                    let cend = cbase + (1 << cshift);
                    let new = self.edit_entry(
                        pool,
                        old,
                        clvl,
                        cbase,
                        start.max(cbase),
                        end.min(cend),
                        op,
                        out,
                    );
                    if new != old {
                        write(pool, idx, i, new);
                        if Slot::is_empty(new, clvl) {
                            left = left.saturating_sub(1);
                        }
                    }
                }
                if left == 0 {
                    self.free_node(pool, idx);
                    0
                } else {
                    Slot::table(idx, left)
                }
            }
        }
    }

    /// Splits the huge leaf `(pfn, perm)` at `base`, partially covered by
    /// `[start, end)`, giving the covered pages the permissions `newp` (`None`: remove
    /// them), and returns the new level-1 entry. Without memory, drops the whole huge
    /// leaf.
    #[allow(clippy::too_many_arguments)]
    fn split_edit<P: Pool + ?Sized>(
        &mut self,
        pool: &mut P,
        base: u64,
        start: u64,
        end: u64,
        pfn: u64,
        perm: Perm,
        newp: Option<Perm>,
        out: &mut Protected,
    ) -> u64 {
        self.stats.huge = self.stats.huge.saturating_sub(1);
        let Ok(idx) = self.alloc_node(pool) else {
            self.stats.split_failures += 1;
            out.removed += HUGE_PAGES;
            return 0;
        };
        self.stats.splits += 1;
        let mut used: u16 = 0;
        if let Some(node) = pool.node_mut(idx) {
            for (j, s) in node.slots.iter_mut().enumerate() {
                let va = base + ((j as u64) << PAGE_SHIFT);
                let p = if start <= va && va < end {
                    match newp {
                        None => {
                            out.removed += 1;
                            continue;
                        }
                        Some(p) => {
                            out.downgraded += 1;
                            p
                        }
                    }
                } else {
                    perm
                };
                *s = Slot::leaf(pfn | j as u64, p);
                used += 1;
            }
        }
        self.stats.pages += u64::from(used);
        if used == 0 {
            // Only with a broken pool: the range is a strict part of the entry.
            self.free_node(pool, idx);
            0
        } else {
            Slot::table(idx, used)
        }
    }
}

/// Visits the leaves of the part `[start, end)` of the entry `raw` of level `elvl` at
/// `base` (same requirements as `edit_entry`).
fn walk<P, F>(
    pool: &P,
    raw: u64,
    elvl: usize,
    base: u64,
    start: u64,
    end: u64,
    f: &mut F,
) -> ControlFlow<()>
where
    P: Pool + ?Sized,
    F: FnMut(u64, Leaf) -> ControlFlow<()>,
{
    match Slot::decode(raw, elvl) {
        Slot::Empty => ControlFlow::Continue(()),
        Slot::Leaf { pfn, perm } => f(
            base,
            Leaf {
                pfn,
                perm,
                huge: elvl != 0,
            },
        ),
        Slot::Table { idx, used } => {
            let Some(clvl) = elvl.checked_sub(1) else {
                return ControlFlow::Continue(());
            };
            let cshift = entry_shift(clvl);
            let first = ((start - base) >> cshift) as usize;
            let last = ((end - 1 - base) >> cshift) as usize;
            let mut seen = 0;
            for i in first..=last {
                if seen >= used {
                    break;
                }
                let child = read(pool, idx, i);
                if Slot::is_empty(child, clvl) {
                    continue;
                }
                seen += 1;
                let cbase = base + ((i as u64) << cshift);
                let cend = cbase + (1 << cshift);
                walk(pool, child, clvl, cbase, start.max(cbase), end.min(cend), f)?;
            }
            ControlFlow::Continue(())
        }
    }
}

/// Frees every node below and including the entry `raw` of level `elvl`.
fn free_tree<P: Pool + ?Sized>(pool: &mut P, raw: u64, elvl: usize) {
    let Slot::Table { idx, used } = Slot::decode(raw, elvl) else {
        return;
    };
    if let Some(clvl) = elvl.checked_sub(1) {
        if clvl >= 1 {
            let mut seen = 0;
            for i in 0..ENTRIES {
                if seen >= used {
                    break;
                }
                let child = read(pool, idx, i);
                if Slot::is_empty(child, clvl) {
                    continue;
                }
                seen += 1;
                free_tree(pool, child, clvl);
            }
        }
    }
    pool.free(idx);
}
