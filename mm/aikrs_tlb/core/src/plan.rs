// SPDX-License-Identifier: GPL-2.0

//! The TLB flush planner: collects invalidation requests in a [`Batch`], then sorts and
//! merges them and chooses how to flush ([`Batch::plan`]).
//!
//! This file is shared verbatim by the host crate `aikrs-tlb-core` (tests) and by the
//! kernel module, which includes it with `#[path]`. It therefore uses nothing but `core`,
//! refers to no other file, has no crate-level attributes, no `unsafe`, no floating point,
//! no 128-bit division, and no operation that can panic on any argument of the public API:
//! caller-supplied numbers only go through checked, saturating or guarded arithmetic, and
//! the storage is only accessed through bounds-checked `get`/`get_mut`.
//!
//! # Model
//!
//! A request asks to invalidate the TLB entries of the pages `[start, end)` of one address
//! space ([`Space`]), walking them in steps of `1 << stride_shift` bytes (4 KiB, 2 MiB or
//! 1 GiB pages on x86-64). The planner keeps every request as a [`Range`] in the caller's
//! storage (no allocation); [`Batch::plan`] sorts them by `(space, stride_shift, start)`
//! (`O(n log n)`), merges overlapping and adjacent ranges of the same space and stride in
//! one linear pass, and picks an [`Action`] with the kernel's rule: per-page invalidation
//! while the page count is at most [`Config::ceiling`] (`tlb_single_page_flush_ceiling`),
//! a full flush above it.
//!
//! Ranges of different strides in one space are never merged: walking a 4 KiB mapping at
//! 2 MiB steps would miss most of its entries.

/// The number of 64-bit words of a [`CpuSet`].
pub const CPU_WORDS: usize = 8;

/// The number of CPUs a [`CpuSet`] can hold (CPUs `0..MAX_CPUS`).
pub const MAX_CPUS: u32 = 64 * CPU_WORDS as u32;

/// The smallest accepted `stride_shift` (4 KiB pages).
pub const MIN_STRIDE_SHIFT: u8 = 12;

/// The largest accepted `stride_shift` (1 GiB pages).
pub const MAX_STRIDE_SHIFT: u8 = 30;

/// The kernel's default `tlb_single_page_flush_ceiling` (x86).
pub const DEFAULT_CEILING: u64 = 33;

/// Which address space a request is for.
///
/// Ordered `Kernel` first, then the user spaces by id: the order of [`Plan::ranges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// The kernel's address space (addresses `>= Config::kernel_start`), mapped on every
    /// CPU.
    Kernel,
    /// The user address space of one mm (addresses `< Config::user_end`); the id is any
    /// value that identifies the mm (the kernel passes the `mm_struct` pointer).
    User(u64),
}

/// The parameters of a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Like the kernel's `tlb_single_page_flush_ceiling`: pages are invalidated one by one
    /// while their count is `<= ceiling`, a full flush is chosen when it is `> ceiling`.
    pub ceiling: u64,
    /// User addresses are `< user_end` (x86-64: `TASK_SIZE_MAX`, `0x0000_7fff_ffff_f000`).
    pub user_end: u64,
    /// Kernel addresses are `>= kernel_start` (x86-64: `0xffff_8000_0000_0000`).
    pub kernel_start: u64,
}

impl Config {
    /// x86-64 with 4-level paging and the default ceiling of 33 pages.
    pub const X86_64: Config = Config {
        ceiling: DEFAULT_CEILING,
        user_end: 0x0000_7fff_ffff_f000,
        kernel_start: 0xffff_8000_0000_0000,
    };

    /// Validates one request, as [`Batch::add`] does, and returns it as a [`Range`].
    ///
    /// The checks, in this order (the first one that fails is reported):
    ///
    /// 1. [`AddError::BadStride`]: `stride_shift` outside
    ///    `MIN_STRIDE_SHIFT..=MAX_STRIDE_SHIFT` (12..=30);
    /// 2. [`AddError::EndBeforeStart`]: `end <= start` (empty or reversed);
    /// 3. [`AddError::Unaligned`]: `start` or `end` not a multiple of `1 << stride_shift`;
    /// 4. [`AddError::CrossesBoundary`]: a user range with `end > user_end`, or a kernel
    ///    range with `start < kernel_start`. Together these reject every range that
    ///    touches the non-canonical hole `[user_end, kernel_start)` or crosses from user
    ///    into kernel addresses.
    ///
    /// `end` is exclusive, so the last page of the 64-bit space cannot be named.
    pub fn check(
        &self,
        space: Space,
        start: u64,
        end: u64,
        stride_shift: u8,
    ) -> Result<Range, AddError> {
        if !(MIN_STRIDE_SHIFT..=MAX_STRIDE_SHIFT).contains(&stride_shift) {
            return Err(AddError::BadStride);
        }
        if end <= start {
            return Err(AddError::EndBeforeStart);
        }
        // `stride_shift <= 30`: the shift cannot overflow, and `1 << s >= 1`.
        let mask = (1u64 << stride_shift) - 1;
        if start & mask != 0 || end & mask != 0 {
            return Err(AddError::Unaligned);
        }
        let outside = match space {
            Space::User(_) => end > self.user_end,
            Space::Kernel => start < self.kernel_start,
        };
        if outside {
            return Err(AddError::CrossesBoundary);
        }
        Ok(Range {
            space,
            start,
            end,
            stride_shift,
        })
    }
}

/// The pages `[start, end)` of `space`, walked in steps of `1 << stride_shift` bytes.
///
/// The ranges that [`Batch::add`] stores and [`Batch::plan`] returns are valid: see
/// [`Config::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    /// The address space.
    pub space: Space,
    /// The first byte (a multiple of `1 << stride_shift`).
    pub start: u64,
    /// One past the last byte (exclusive; a multiple of `1 << stride_shift`).
    pub end: u64,
    /// log2 of the page size (12: 4 KiB, 21: 2 MiB, 30: 1 GiB).
    pub stride_shift: u8,
}

impl Range {
    /// A placeholder for initialising the storage of a [`Batch`] (its slots are
    /// overwritten, any value does).
    pub const EMPTY: Range = Range {
        space: Space::Kernel,
        start: 0,
        end: 0,
        stride_shift: MIN_STRIDE_SHIFT,
    };

    /// The number of pages, `(end - start) >> stride_shift` (0 for an empty or invalid
    /// range).
    pub fn pages(&self) -> u64 {
        self.end
            .saturating_sub(self.start)
            .checked_shr(u32::from(self.stride_shift))
            .unwrap_or(0)
    }

    /// The sort key of [`Batch::plan`].
    fn key(&self) -> (Space, u8, u64) {
        (self.space, self.stride_shift, self.start)
    }
}

/// Why [`Batch::add`] refused a request (the batch is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// `end <= start`.
    EndBeforeStart,
    /// `start` or `end` is not a multiple of `1 << stride_shift`.
    Unaligned,
    /// `stride_shift < 12` or `stride_shift > 30`.
    BadStride,
    /// A user range ending above `user_end`, a kernel range starting below
    /// `kernel_start`: a range in the non-canonical hole or across the user/kernel
    /// boundary.
    CrossesBoundary,
    /// The storage is full (a valid request; the caller may plan and execute the batch,
    /// clear it and retry).
    Full,
}

/// A set of CPUs `0..MAX_CPUS` (512), as a bitmap of [`CPU_WORDS`] 64-bit words: CPU `c`
/// is bit `c % 64` of word `c / 64` (the layout of the kernel's `cpumask` on 64-bit
/// machines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    words: [u64; CPU_WORDS],
}

impl CpuSet {
    /// The empty set.
    pub const fn new() -> Self {
        CpuSet {
            words: [0; CPU_WORDS],
        }
    }

    /// The set whose bitmap starts with `words`: words past the first [`CPU_WORDS`] are
    /// ignored (CPUs `>= MAX_CPUS`), missing words are zero.
    pub fn from_words(words: &[u64]) -> Self {
        let mut set = CpuSet::new();
        for (dst, src) in set.words.iter_mut().zip(words) {
            *dst = *src;
        }
        set
    }

    /// The bitmap.
    pub fn words(&self) -> &[u64; CPU_WORDS] {
        &self.words
    }

    /// Adds `cpu`; returns `false` (and changes nothing) when `cpu >= MAX_CPUS`.
    pub fn set(&mut self, cpu: u32) -> bool {
        match self.words.get_mut((cpu / 64) as usize) {
            Some(word) => {
                *word |= 1u64 << (cpu % 64);
                true
            }
            None => false,
        }
    }

    /// Whether `cpu` is in the set (`false` for `cpu >= MAX_CPUS`).
    pub fn contains(&self, cpu: u32) -> bool {
        match self.words.get((cpu / 64) as usize) {
            Some(word) => word & (1u64 << (cpu % 64)) != 0,
            None => false,
        }
    }

    /// Adds every CPU of `other`.
    pub fn union_with(&mut self, other: &CpuSet) {
        for (dst, src) in self.words.iter_mut().zip(&other.words) {
            *dst |= *src;
        }
    }

    /// The number of CPUs in the set.
    pub fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The CPUs of the set, in increasing order.
    pub fn iter(&self) -> CpuIter {
        CpuIter {
            words: self.words,
            word: 0,
        }
    }
}

/// The iterator of [`CpuSet::iter`]: the CPUs of a copy of the set, in increasing order.
#[derive(Clone, Debug)]
pub struct CpuIter {
    /// The CPUs not yet returned.
    words: [u64; CPU_WORDS],
    /// The first word that may still have a bit set.
    word: usize,
}

impl Iterator for CpuIter {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while let Some(bits) = self.words.get_mut(self.word) {
            if *bits != 0 {
                let bit = bits.trailing_zeros();
                // Clear the lowest set bit (`bits != 0`: no underflow).
                *bits &= *bits - 1;
                // `word < CPU_WORDS` and `bit < 64`: at most 511.
                return Some(self.word as u32 * 64 + bit);
            }
            self.word += 1;
        }
        None
    }
}

/// How to execute a [`Plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing was added: a no-op, 0 rounds.
    None,
    /// Only kernel ranges, [`Plan::pages`] `<= ceiling`: invalidate every page of every
    /// range (each at its own stride), one round on [`Plan::cpus`].
    KernelPages,
    /// A full flush of every CPU (`flush_tlb_all`), one round. Chosen for kernel ranges
    /// only with [`Plan::pages`] `> ceiling`, and whenever the batch holds both kernel and
    /// user ranges.
    FullAll,
    /// Exactly one user space and no kernel range, and the span below is at most
    /// `ceiling` pages: invalidate the pages of `[start, end)` at steps of
    /// `1 << stride_shift`, one round on [`Plan::cpus`].
    ///
    /// The executor invalidates one contiguous span per round (x86
    /// `flush_tlb_mm_range` takes one range), so the span is `[min start, max end)` of the
    /// space's ranges and may include pages that were not requested (harmless). Its
    /// `stride_shift` is the *smallest* stride of the ranges: an `invlpg` of any address
    /// inside a 2 MiB or 1 GiB TLB entry invalidates that entry, and every range start is
    /// a multiple of the smallest stride, so a walk at the smallest stride touches every
    /// page of every range, huge pages included. A walk at the largest stride would skip
    /// the 4 KiB entries between its steps.
    UserSpan {
        /// The id of the user space.
        space: u64,
        /// The first byte of the span.
        start: u64,
        /// One past the last byte of the span.
        end: u64,
        /// The smallest stride of the space's ranges.
        stride_shift: u8,
    },
    /// Exactly one user space and no kernel range, and the span of
    /// [`Action::UserSpan`] is more than `ceiling` pages: a full flush of that address
    /// space, one round on [`Plan::cpus`].
    UserFull {
        /// The id of the user space.
        space: u64,
    },
    /// Two or more user spaces and no kernel range: a full flush of each of them, one
    /// round on [`Plan::cpus`] (the union of their CPU masks).
    UsersFull,
}

/// What [`Batch::plan`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan<'b> {
    /// How to flush.
    pub action: Action,
    /// The merged ranges, sorted by `(space, stride_shift, start)`. Within one
    /// `(space, stride_shift)` they are disjoint and not adjacent (overlapping and
    /// adjacent requests are merged), and together they hold exactly the requested pages.
    pub ranges: &'b [Range],
    /// The CPUs to reach: the union of the masks given to [`Batch::add`].
    pub cpus: CpuSet,
    /// The number of successful [`Batch::add`] calls since [`Batch::new`] or
    /// [`Batch::clear`].
    pub requests: u64,
    /// `requests - ranges.len()`: how many requests disappeared by merging.
    pub merged: u64,
    /// The sum over `ranges` of their page counts (saturating).
    pub pages: u64,
}

impl Plan<'_> {
    /// The number of flush rounds (IPI broadcasts) the action takes: 0 for
    /// [`Action::None`], otherwise 1.
    pub fn rounds(&self) -> u32 {
        match self.action {
            Action::None => 0,
            _ => 1,
        }
    }

    /// Whether the action is a full flush ([`Action::FullAll`], [`Action::UserFull`] or
    /// [`Action::UsersFull`]).
    pub fn is_full(&self) -> bool {
        matches!(
            self.action,
            Action::FullAll | Action::UserFull { .. } | Action::UsersFull
        )
    }
}

/// A batch of TLB invalidation requests in caller-provided storage.
///
/// # Invariants
///
/// `len <= storage.len()`, and `storage[..len]` holds valid ranges (see
/// [`Config::check`]).
#[derive(Debug)]
pub struct Batch<'a> {
    /// The ranges, `storage[..len]` in use.
    storage: &'a mut [Range],
    /// The number of ranges in use.
    len: usize,
    /// The parameters.
    cfg: Config,
    /// The union of the CPU masks of the requests.
    cpus: CpuSet,
    /// The number of successful `add` calls since `new` or `clear`.
    requests: u64,
}

impl<'a> Batch<'a> {
    /// An empty batch that keeps its ranges in `storage`; the capacity is
    /// `storage.len()` and the slots are overwritten.
    pub fn new(storage: &'a mut [Range], cfg: Config) -> Self {
        Batch {
            storage,
            len: 0,
            cfg,
            cpus: CpuSet::new(),
            requests: 0,
        }
    }

    /// Validates and appends one request; `cpus` is the CPU mask of the request's address
    /// space (for [`Space::Kernel`] the caller passes the online CPUs).
    ///
    /// The request is validated first ([`Config::check`]), so an invalid request is
    /// reported as such even when the storage is full; then [`AddError::Full`] if every
    /// slot is in use. On error nothing changes.
    pub fn add(
        &mut self,
        space: Space,
        start: u64,
        end: u64,
        stride_shift: u8,
        cpus: &CpuSet,
    ) -> Result<(), AddError> {
        let range = self.cfg.check(space, start, end, stride_shift)?;
        let slot = self.storage.get_mut(self.len).ok_or(AddError::Full)?;
        *slot = range;
        // INVARIANT: the slot exists, so `len + 1 <= storage.len()`; the range is valid.
        self.len += 1;
        self.requests = self.requests.saturating_add(1);
        self.cpus.union_with(cpus);
        Ok(())
    }

    /// The number of ranges in the storage (requests since the last [`Batch::plan`] plus
    /// the merged ranges it kept).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the storage holds no range (nothing was added since [`Batch::new`] or
    /// [`Batch::clear`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of ranges the storage can hold.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// The number of successful [`Batch::add`] calls since [`Batch::new`] or
    /// [`Batch::clear`].
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Sorts and merges the requests and chooses the action.
    ///
    /// `O(n log n)`: an unstable sort by `(space, stride_shift, start)`, then one linear
    /// pass that merges each range into the previous one when they have the same space
    /// and stride and it starts at or before the previous end (overlapping or adjacent).
    /// The merged ranges stay in the front of the storage (so [`Batch::len`] becomes
    /// their number, and more requests can be added and planned again), and the plan
    /// borrows them. Planning again without adding gives the same plan.
    pub fn plan(&mut self) -> Plan<'_> {
        let len = self.len.min(self.storage.len());
        let ranges = self.storage.get_mut(..len).unwrap_or_default();
        ranges.sort_unstable_by_key(Range::key);

        // `ranges[..kept]` are the merged ranges seen so far; `kept <= i`.
        let mut kept = 0usize;
        for i in 0..len {
            let Some(&next) = ranges.get(i) else {
                break;
            };
            let merged = match kept.checked_sub(1).and_then(|j| ranges.get_mut(j)) {
                Some(last)
                    if last.space == next.space
                        && last.stride_shift == next.stride_shift
                        && next.start <= last.end =>
                {
                    last.end = last.end.max(next.end);
                    true
                }
                _ => false,
            };
            if !merged {
                if let Some(slot) = ranges.get_mut(kept) {
                    *slot = next;
                }
                kept += 1;
            }
        }
        // INVARIANT: `kept <= len <= storage.len()`; merging valid ranges of one space
        // and stride gives valid ranges.
        self.len = kept;

        let ranges: &[Range] = ranges;
        let ranges = ranges.get(..kept).unwrap_or_default();
        let pages = ranges
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.pages()));
        let count = u64::try_from(ranges.len()).unwrap_or(u64::MAX);
        Plan {
            action: choose(ranges, pages, self.cfg.ceiling),
            ranges,
            cpus: self.cpus,
            requests: self.requests,
            merged: self.requests.saturating_sub(count),
            pages,
        }
    }

    /// Forgets every request and CPU (after the caller executed the plan).
    pub fn clear(&mut self) {
        self.len = 0;
        self.requests = 0;
        self.cpus = CpuSet::new();
    }
}

/// The action for the merged `ranges` holding `pages` pages.
fn choose(ranges: &[Range], pages: u64, ceiling: u64) -> Action {
    let mut kernel = false;
    // The first user space seen, and whether another one was seen.
    let mut user = None;
    let mut users = false;
    // The span of the first user space: min start, max end, min stride.
    let mut span = (u64::MAX, 0u64, u8::MAX);
    for r in ranges {
        match r.space {
            Space::Kernel => kernel = true,
            Space::User(id) => {
                let first = *user.get_or_insert(id);
                if first == id {
                    span = (
                        span.0.min(r.start),
                        span.1.max(r.end),
                        span.2.min(r.stride_shift),
                    );
                } else {
                    users = true;
                }
            }
        }
    }
    match (kernel, user) {
        (false, None) => Action::None,
        (true, None) => {
            if pages <= ceiling {
                Action::KernelPages
            } else {
                Action::FullAll
            }
        }
        (true, Some(_)) => Action::FullAll,
        (false, Some(_)) if users => Action::UsersFull,
        (false, Some(space)) => {
            let (start, end, stride_shift) = span;
            let span_pages = end
                .saturating_sub(start)
                .checked_shr(u32::from(stride_shift))
                .unwrap_or(0);
            if span_pages <= ceiling {
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
    }
}
