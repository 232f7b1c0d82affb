// SPDX-License-Identifier: GPL-2.0

//! The IOVA range allocator: an augmented AVL tree of page ranges in caller-provided storage.
//!
//! This file is shared verbatim by the host crate `aikrs-iova-core` (tests, benchmarks)
//! and by the kernel module, which includes it with `#[path]`. It therefore uses nothing
//! but `core`, refers to no other file, has no crate-level attributes, no `unsafe`, no
//! floating point, and no operation that can panic on any argument of the public API:
//! caller-supplied numbers only go through checked, saturating or guarded arithmetic, and
//! the storage is only accessed through bounds-checked `get`/`get_mut`.

use core::ops::DerefMut;

/// A page frame number: the index of one page (granule) of the IOVA space.
pub type Pfn = u64;

/// The errors of the [`IovaAllocator`] operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Zero size, size larger than the domain, limit below the domain start, `hi < lo`,
    /// bad domain bounds, storage too small (or too large to index with `u32`).
    InvalidArgument,
    /// No free, suitably aligned range under the limit.
    NoSpace,
    /// The node storage is exhausted (state unchanged); the caller may retry with more
    /// storage.
    NoNodes,
    /// `free` of a range that is not exactly one live allocation (double free, never
    /// allocated, wrong size, reserved range).
    NotAllocated,
    /// `reserve` overlapping a live allocation (nothing changed).
    Busy,
}

/// The "no index" sentinel of the tree links and of the slot free list.
const NIL: u32 = u32::MAX;

/// Bound on every descent and recursion, and the capacity of a [`Path`]. An AVL tree of
/// fewer than `2^32` nodes is at most 46 levels high, so this is never reached; it only
/// guarantees termination.
const MAX_DEPTH: u32 = 48;

/// Index of the left child in `Node::link` and `Node::child_order`.
const LEFT: usize = 0;

/// Index of the right child.
const RIGHT: usize = 1;

/// `max_order` of a subtree without a usable free range.
const NO_ORDER: i8 = -1;

/// The number of [`Kind`]s.
const KINDS: usize = 4;

/// What a node's range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Not in the tree (a slot on the free list, or never used).
    Unused,
    /// Free pages.
    Free,
    /// Exactly one live allocation.
    Allocated,
    /// Reserved pages (never handed out, never freed).
    Reserved,
}

/// One tree node; the caller provides the storage as a slice of these.
///
/// Initialise the storage with [`Node::EMPTY`] (or `Node::default()`); the contents are
/// private to the allocator.
///
/// The fields that the descents read (key, links, kind and orders) come first, in the
/// first 22 of the 40 bytes, so that a step down mostly touches one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Node {
    /// First page of the range (the search key).
    start: Pfn,
    /// The children, `[LEFT]` and `[RIGHT]`; `[LEFT]` is also the next slot on the free
    /// list of unused slots. An array, so that a step down indexes it rather than branches.
    link: [u32; 2],
    /// Height of this subtree (a leaf is 1; `EMPTY`, the sentinel, is 0).
    height: u8,
    /// What the range is.
    kind: Kind,
    /// For a free node, [`block_order`] of its range; otherwise [`NO_ORDER`].
    own_order: i8,
    /// Maximum of `own_order` over this subtree.
    sub_max_order: i8,
    /// `sub_max_order` of the children, kept here so that a descent deciding where to go
    /// reads only the node it is at.
    child_order: [i8; 2],
    /// Last page of the range (inclusive).
    last: Pfn,
    /// Length of the longest free node in this subtree.
    sub_free_max: u64,
}

impl Node {
    /// An unused node: the initial value of the caller's storage.
    pub const EMPTY: Node = Node {
        start: 0,
        last: 0,
        sub_free_max: 0,
        link: [NIL; 2],
        height: 0,
        kind: Kind::Unused,
        own_order: NO_ORDER,
        sub_max_order: NO_ORDER,
        child_order: [NO_ORDER; 2],
    };

    /// A detached leaf for the range `[start, last]`, with its augmented data.
    fn leaf(start: Pfn, last: Pfn, kind: Kind) -> Node {
        let mut node = Node {
            height: 1,
            ..Node::EMPTY
        };
        node.set_range(start, last, kind);
        node.sub_free_max = node.free_len();
        node.sub_max_order = node.own_order;
        node
    }

    /// Sets the range and kind (and with them `own_order`), leaving links and subtree data.
    fn set_range(&mut self, start: Pfn, last: Pfn, kind: Kind) {
        self.start = start;
        self.last = last;
        self.kind = kind;
        self.own_order = if kind == Kind::Free {
            block_order(start, last)
        } else {
            NO_ORDER
        };
    }

    /// The number of free pages of the node itself: its length if it is free, else 0.
    fn free_len(&self) -> u64 {
        // Exact for a tree node (`start <= last < Pfn::MAX`). Without a branch: the kinds
        // of neighbouring nodes follow no pattern.
        let len = self.last.wrapping_sub(self.start).wrapping_add(1);
        len & u64::from(self.kind == Kind::Free).wrapping_neg()
    }

    /// The child on the right (`right`) or left side.
    fn child(&self, right: bool) -> u32 {
        self.link[usize::from(right)]
    }

    /// The augmented data of the subtree rooted here.
    fn agg(&self) -> Agg {
        Agg {
            height: self.height,
            free_max: self.sub_free_max,
            max_order: self.sub_max_order,
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::EMPTY
    }
}

/// A snapshot of the allocator's accounting; [`IovaAllocator::stats`] computes it in O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pages in the domain: `limit - start + 1`.
    pub span_pages: u64,
    /// Free pages.
    pub free_pages: u64,
    /// The longest run of contiguous free pages.
    pub largest_free: u64,
    /// The number of maximal runs of free pages.
    pub free_blocks: u64,
    /// Pages in live allocations.
    pub allocated_pages: u64,
    /// Live allocations.
    pub allocations: u64,
    /// Reserved pages.
    pub reserved_pages: u64,
    /// Storage slots holding tree nodes.
    pub nodes_used: u64,
    /// Storage slots in total.
    pub nodes_total: u64,
}

/// Node storage for `max_live` live allocations and `max_reserved` separate reserved
/// ranges: the same as [`IovaAllocator::nodes_needed`], callable without naming `S`.
pub const fn nodes_needed(max_live: usize, max_reserved: usize) -> usize {
    max_live
        .saturating_add(max_reserved)
        .saturating_mul(2)
        .saturating_add(1)
}

/// An IOVA range allocator over the pages `[start, limit]` of a domain.
///
/// The domain is tiled by ranges, each a [`Node`] of kind free, allocated or reserved,
/// kept in one AVL tree keyed by the range start. The nodes live in the caller's storage
/// `S` (a `Vec`, a boxed slice, a `&mut [Node]`, ...) and link to each other by `u32`
/// indices. Every node carries, for its subtree, its height, the longest free node and the
/// largest order `k` such that some free node contains a `2^k`-aligned block of `2^k`
/// pages, plus a copy of that order for each of its two subtrees, so that a descent
/// decides where to go from the node it is at; the page and node counts are kept in the
/// allocator itself. Allocation searches top-down and prunes subtrees without a large
/// enough block, so [`alloc`](Self::alloc), [`free`](Self::free) and [`find`](Self::find)
/// take worst-case O(log n) time in the number n of live allocations and reserved ranges;
/// [`stats`](Self::stats) is O(1).
///
/// An operation descends from the root once and records the path; it then changes nodes
/// in place and retraces the recorded path bottom-up, rebalancing where the shape changed
/// and stopping at the first node whose augmented data comes out unchanged. An allocation
/// turns the free node it found into the allocated one and hangs the split-off free head
/// and tail, if any, below it (as the rightmost node of its left subtree and the leftmost
/// of its right one). A free turns the allocated node into a free one and merges it with
/// its free neighbours: of two neighbours in key order one descends from the other, and
/// the descendant is unlinked while the other takes the merged range. A free that leaves
/// the shape unchanged keeps its path as a hint; if that node is the highest fit of the
/// next allocation of a power-of-two size, it is taken without a search.
///
/// `S` must dereference to the same slice every time (as all standard containers do).
///
/// # Invariants
///
/// - The ranges of the tree nodes tile `[start, limit]` exactly: in key order, the first
///   starts at `start`, each next one starts right after the previous one's last page, and
///   the last one ends at `limit`. `limit < Pfn::MAX`.
/// - No two free nodes are adjacent, and no two reserved nodes are adjacent: free and
///   reserved ranges are always merged with equal neighbours, so each free node is a
///   maximal run of free pages. Allocated nodes are never merged: each is exactly one live
///   allocation.
/// - The tree is a binary search tree by range start, and an AVL tree: the heights of the
///   two subtrees of every node differ by at most one, so its height is below
///   `1.45 log2(n + 2)`.
/// - Every node's augmented data (height, longest free node, `own_order`, maximum order,
///   maximum orders of the two subtrees) equals its recomputation from the node and its
///   subtrees.
/// - `pages` and `count` hold, for each kind, the number of pages and of nodes of that
///   kind in the tree.
/// - Storage slots `[0, fresh)` are either in the tree (`used` of them) or on the free
///   list threaded through the left links; slots `[fresh, len)` were never used.
/// - `hint` is empty or a path of child links from the root down.
pub struct IovaAllocator<S: DerefMut<Target = [Node]>> {
    /// The caller's node storage.
    nodes: S,
    /// Write target for an out-of-range slot index (never happens while the invariants
    /// hold); keeps every access free of panics.
    scratch: Node,
    /// The root of the tree (never `NIL`: the domain always has at least one range).
    root: u32,
    /// The path down to the node that the last [`free`](Self::free) turned free without
    /// changing the shape of the tree, or empty: the likely next fit, which
    /// [`alloc`](Self::alloc) checks before searching (as iova.c starts from a cached
    /// node). Every change of a link empties it, so it stays a valid path.
    hint: Path,
    /// Head of the free list of recycled slots.
    free_head: u32,
    /// Slots `[fresh, cap)` have never been used.
    fresh: u32,
    /// Slots in the tree.
    used: u32,
    /// Number of storage slots, `< u32::MAX`.
    cap: u32,
    /// First page of the domain.
    start: Pfn,
    /// Last page of the domain (inclusive).
    limit: Pfn,
    /// Pages in the nodes of each kind, indexed by `Kind as usize`.
    pages: [u64; KINDS],
    /// Nodes of each kind, indexed by `Kind as usize`.
    count: [u64; KINDS],
}

/// The number of pages of `[start, last]`.
fn range_len(start: Pfn, last: Pfn) -> u64 {
    last.saturating_sub(start).saturating_add(1)
}

/// The largest `k` such that `[start, last]` contains a `2^k`-aligned block of `2^k` pages.
fn block_order(start: Pfn, last: Pfn) -> i8 {
    let len = range_len(start, last);
    let mut k = 63u32.saturating_sub(len.leading_zeros());
    // A range of at least `2^k` pages holds an aligned block of `2^(k-1)`, so this loop
    // runs at most twice.
    while k > 0 {
        // `1 <= k <= 63`: exact.
        let mask = 1u64.wrapping_shl(k).wrapping_sub(1);
        if let Some(up) = start.checked_add(mask) {
            if let Some(end) = (up & !mask).checked_add(mask) {
                if end <= last {
                    break;
                }
            }
        }
        k -= 1;
    }
    // `k <= 63`.
    k as i8
}

/// Slot `i` of `nodes`; [`Node::EMPTY`] (the sentinel) for `NIL` or any index out of
/// range.
#[inline]
fn slot(nodes: &[Node], i: u32) -> &Node {
    nodes.get(i as usize).unwrap_or(&Node::EMPTY)
}

/// Recomputes the augmented data of node `x` from its own range and its children; returns
/// the heights of the children and whether the data came out unchanged.
#[inline]
fn pull_at(nodes: &mut [Node], x: u32) -> (u8, u8, bool) {
    let n = slot(nodes, x);
    let (l, r) = (slot(nodes, n.link[LEFT]), slot(nodes, n.link[RIGHT]));
    let agg = Agg {
        // At most `MAX_DEPTH`: no overflow.
        height: l.height.max(r.height).wrapping_add(1),
        free_max: n.free_len().max(l.sub_free_max).max(r.sub_free_max),
        max_order: n.own_order.max(l.sub_max_order).max(r.sub_max_order),
    };
    let (lh, rh) = (l.height, r.height);
    let child_order = [l.sub_max_order, r.sub_max_order];
    let unchanged = agg.same(n.agg());
    if let Some(n) = nodes.get_mut(x as usize) {
        n.height = agg.height;
        n.sub_free_max = agg.free_max;
        n.sub_max_order = agg.max_order;
        n.child_order = child_order;
    }
    (lh, rh, unchanged)
}

/// Stores the recomputed maxima of node `x`; returns whether they changed.
#[inline]
fn set_maxima(nodes: &mut [Node], x: u32, free_max: u64, max_order: i8) -> bool {
    match nodes.get_mut(x as usize) {
        Some(n) if (n.sub_free_max, n.sub_max_order) != (free_max, max_order) => {
            n.sub_free_max = free_max;
            n.sub_max_order = max_order;
            true
        }
        _ => false,
    }
}

/// Whether an order (possibly [`NO_ORDER`]) is at least `k`.
fn order_ge(order: i8, k: u32) -> bool {
    i64::from(order) >= i64::from(k)
}

/// Whether `below < k <= order` (`k <= 63`): a node of order `order` holds a block of
/// order `k` that its right subtree, of order `below`, does not.
///
/// Written as one unsigned comparison, `k - below - 1 < order - below`, so that it
/// compiles to one branch, rarely taken, instead of a branch on the unpredictable
/// `below < k`.
fn order_gap(below: i8, k: u32, order: i8) -> bool {
    let below = i64::from(below);
    let offset = i64::from(k) - below - 1;
    let width = (i64::from(order) - below).max(0);
    // `offset` is in `[-64, 63]`, `width` in `[0, 64]`; a negative `offset` becomes huge.
    (offset as u64) < (width as u64)
}

/// The highest `p` with `p & mask == 0` such that `[p, p + size)` lies in
/// `[start, min(last, bound)]`, if any. `size >= 1`.
fn fit_in(start: Pfn, last: Pfn, size: u64, mask: u64, bound: Pfn) -> Option<Pfn> {
    let hi = if last < bound { last } else { bound };
    let extra = size.saturating_sub(1);
    if hi < start || hi - start < extra {
        return None;
    }
    let p = hi.saturating_sub(extra) & !mask;
    if p >= start {
        Some(p)
    } else {
        None
    }
}

/// Where [`IovaAllocator::find_fit`] found the highest fit so far.
#[derive(Clone, Copy)]
enum Candidate {
    /// Nothing yet.
    None,
    /// In this node, at this pfn.
    At(u32, Pfn),
    /// Somewhere in this subtree, which lies below the bound and has a large enough block.
    In(u32),
}

/// The augmented data of a subtree.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Agg {
    height: u8,
    free_max: u64,
    max_order: i8,
}

impl Agg {
    /// `==` with one branch rather than three (the fields change independently).
    fn same(self, other: Agg) -> bool {
        let height = u64::from(self.height.abs_diff(other.height));
        let order = u64::from(self.max_order.abs_diff(other.max_order));
        (height | (self.free_max ^ other.free_max) | order) == 0
    }
}

/// In-order walk state of [`IovaAllocator::check_invariants`].
struct Walk {
    next: Pfn,
    prev: Kind,
    nodes: u64,
    pages: [u64; KINDS],
    count: [u64; KINDS],
}

/// The nodes from the root down to some node, recorded by a descent so that the changes
/// can be retraced bottom-up without descending again. `nodes[i]` is at depth `i`.
struct Path {
    nodes: [u32; MAX_DEPTH as usize],
    len: usize,
}

impl Path {
    fn new() -> Self {
        Path {
            nodes: [NIL; MAX_DEPTH as usize],
            len: 0,
        }
    }

    /// Appends `x` (ignored beyond `MAX_DEPTH`, which a valid tree never reaches).
    #[inline]
    fn push(&mut self, x: u32) {
        if let Some(slot) = self.nodes.get_mut(self.len) {
            *slot = x;
            self.len += 1;
        }
    }

    /// The node at depth `i`, or `NIL`.
    #[inline]
    fn at(&self, i: usize) -> u32 {
        self.nodes.get(i).copied().unwrap_or(NIL)
    }

    /// Makes this a copy of `other` (copying only the recorded nodes).
    fn copy_from(&mut self, other: &Path) {
        for (to, &from) in self.nodes.iter_mut().zip(other.as_slice()) {
            *to = from;
        }
        self.len = other.as_slice().len();
    }

    /// The recorded nodes, root first.
    fn as_slice(&self) -> &[u32] {
        self.nodes.get(..self.len).unwrap_or(&[])
    }

    /// The last node, or `NIL` for an empty path.
    fn last(&self) -> u32 {
        self.len.checked_sub(1).map_or(NIL, |i| self.at(i))
    }
}

/// `fixup` argument for a change of the tree's shape only: the retrace may stop anywhere.
const ANY_DEPTH: usize = usize::MAX;

impl<S: DerefMut<Target = [Node]>> IovaAllocator<S> {
    /// Node storage needed so that `max_live` allocations and `max_reserved` separate
    /// reserved ranges always fit: `2 * (max_live + max_reserved) + 1`, saturating.
    pub const fn nodes_needed(max_live: usize, max_reserved: usize) -> usize {
        nodes_needed(max_live, max_reserved)
    }

    /// Creates an allocator for the domain of pages `[start, limit]` (inclusive), all free.
    ///
    /// Takes O(1) time: the storage is not scanned, slots are initialised when first used.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `start > limit`, `limit == Pfn::MAX`, or the storage is
    /// empty or has `u32::MAX` or more slots.
    pub fn new(mut storage: S, start: Pfn, limit: Pfn) -> Result<Self, Error> {
        if start > limit || limit == Pfn::MAX {
            return Err(Error::InvalidArgument);
        }
        let cap = match u32::try_from(storage.len()) {
            Ok(cap) if (1..NIL).contains(&cap) => cap,
            _ => return Err(Error::InvalidArgument),
        };
        match storage.get_mut(0) {
            Some(slot) => *slot = Node::leaf(start, limit, Kind::Free),
            None => return Err(Error::InvalidArgument),
        }
        let mut allocator = Self {
            nodes: storage,
            scratch: Node::EMPTY,
            root: 0,
            hint: Path::new(),
            free_head: NIL,
            fresh: 1,
            used: 1,
            cap,
            start,
            limit,
            pages: [0; KINDS],
            count: [0; KINDS],
        };
        allocator.tally(Kind::Free, start, limit, true);
        Ok(allocator)
    }

    /// The first page of the domain.
    pub fn start(&self) -> Pfn {
        self.start
    }

    /// The last page of the domain (inclusive).
    pub fn limit(&self) -> Pfn {
        self.limit
    }

    /// Allocates `size` pages, size-aligned, as high as possible under `limit`.
    ///
    /// The returned start is a multiple of `A = size.next_power_of_two()`, the last page
    /// `start + size - 1` is at most `min(limit, self.limit())`, and the range is free.
    ///
    /// For a power-of-two `size` the placement is exact: the highest `A`-aligned free range
    /// under the limit (the placement of Linux's `alloc_iova(..., size_aligned = true)`),
    /// and [`Error::NoSpace`] means there is none. For other sizes the search only trusts
    /// free ranges holding a whole aligned block of `A` pages (except where a free range is
    /// cut by the limit), so it may return [`Error::NoSpace`] although an aligned window of
    /// `size` but fewer than `A` free pages remains, and may place the range below such a
    /// window; whenever an aligned block of `A` free pages lies under the limit it
    /// succeeds.
    ///
    /// Worst-case O(log n).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `size == 0`, `size` larger than the domain, or
    ///   `limit < self.start()`.
    /// - [`Error::NoSpace`]: no fit (see above).
    /// - [`Error::NoNodes`]: a fit exists but the storage has no slot for the split-off
    ///   free ranges; nothing changed.
    pub fn alloc(&mut self, size: u64, limit: Pfn) -> Result<Pfn, Error> {
        if size == 0 || size > self.span() || limit < self.start {
            return Err(Error::InvalidArgument);
        }
        let bound = if limit < self.limit {
            limit
        } else {
            self.limit
        };
        let pow2 = size.is_power_of_two();
        let k = if pow2 {
            size.trailing_zeros()
        } else {
            64 - size.leading_zeros()
        };
        if k >= 64 {
            // `A = 2^64` pages never fit.
            return Err(Error::NoSpace);
        }
        let mask = (1u64 << k) - 1;
        let mut path = Path::new();
        let found = if pow2 && bound == self.limit {
            // Every range lies under the bound, and a free range holds a fit for a
            // power-of-two size exactly when it holds an aligned block of that size: the
            // highest fit is in the rightmost free node with a large enough block.
            if self.hint_is_rightmost(k) {
                path.copy_from(&self.hint);
                self.hint.len = 0;
                let x = path.last();
                let n = self.n(x);
                fit_in(n.start, n.last, size, mask, n.last).map(|p| (x, p))
            } else {
                self.descend(self.root, size, k, mask, &mut path)
            }
        } else {
            self.find_fit(size, k, mask, bound, &mut path)
        };
        let (x, p) = found.ok_or(Error::NoSpace)?;
        let xi = path.len.checked_sub(1).ok_or(Error::NoSpace)?;
        let (start, last) = {
            let n = self.n(x);
            (n.start, n.last)
        };
        let end = p.saturating_add(size - 1);
        let head = p > start;
        let tail = end < last;
        if self.available() < u32::from(head) + u32::from(tail) {
            return Err(Error::NoNodes);
        }
        // `x` becomes the allocation. The free head (tail) becomes the rightmost (leftmost)
        // node of its left (right) subtree, rebalanced up to but excluding `x`: each side
        // grows by at most one level, so one rebalancing of `x` and its ancestors suffices.
        // (`new_leaf` cannot fail: the slots were counted above. `x` is changed first so
        // that the counters never hold its pages twice.)
        self.set_range(x, p, end, Kind::Allocated);
        if head {
            let h = self
                .new_leaf(start, p - 1, Kind::Free)
                .ok_or(Error::NoNodes)?;
            self.attach_beside(&mut path, h, false);
            self.fixup(&path, xi + 1, ANY_DEPTH);
            path.len = xi + 1;
        }
        if tail {
            let t = self
                .new_leaf(end + 1, last, Kind::Free)
                .ok_or(Error::NoNodes)?;
            self.attach_beside(&mut path, t, true);
            self.fixup(&path, xi + 1, ANY_DEPTH);
            path.len = xi + 1;
        }
        if head || tail {
            self.fixup(&path, 0, xi);
        } else {
            self.settle(&path);
        }
        Ok(p)
    }

    /// Frees the live allocation `[pfn, pfn + size)`, merging it with free neighbours.
    ///
    /// Worst-case O(log n).
    ///
    /// # Errors
    ///
    /// [`Error::NotAllocated`] if `[pfn, pfn + size)` is not exactly one live allocation
    /// (including `size == 0` and ranges that would overflow); nothing changed.
    pub fn free(&mut self, pfn: Pfn, size: u64) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::NotAllocated);
        }
        let mut path = Path::new();
        let (x, turns) = self.locate_turns(pfn, &mut path);
        let (start, last) = {
            let n = self.n(x);
            if x == NIL || n.kind != Kind::Allocated || range_len(n.start, n.last) != size {
                return Err(Error::NotAllocated);
            }
            (n.start, n.last)
        };
        let merge_prev = self.n(self.neighbour(x, turns, false)).kind == Kind::Free;
        let merge_next = self.n(self.neighbour(x, turns, true)).kind == Kind::Free;
        if !merge_prev && !merge_next {
            // Same shape, and the free pages only add to the maxima along the path.
            self.set_range(x, start, last, Kind::Free);
            let order = self.n(x).own_order;
            self.raise(&path, size, order);
            self.hint.copy_from(&path);
            return Ok(());
        }
        let (left, right) = {
            let n = self.n(x);
            (n.link[LEFT], n.link[RIGHT])
        };
        if (!merge_prev || left != NIL) && (!merge_next || right != NIL) {
            // The free neighbours lie in the subtrees of `x`: unlink them, let `x` take
            // their ranges, and retrace the path once (each side lost at most one level).
            let xi = path.len.saturating_sub(1);
            let (mut lo, mut hi) = (start, last);
            if merge_prev {
                lo = self.unlink_beside(&mut path, false).0;
            }
            if merge_next {
                hi = self.unlink_beside(&mut path, true).1;
            }
            self.set_range(x, lo, hi, Kind::Free);
            self.fixup(&path, 0, xi);
            return Ok(());
        }
        // Else merge with one neighbour at a time (a subtree of two levels may go).
        if merge_next {
            self.join(&mut path, true, Kind::Free);
            if merge_prev {
                // The merged node has key `start`; the retrace may have rotated its path.
                path = Path::new();
                self.locate(start, &mut path);
            }
        }
        if merge_prev {
            self.join(&mut path, false, Kind::Free);
        }
        Ok(())
    }

    /// Reserves the pages `[lo, hi]` (inclusive), clipped to the domain.
    ///
    /// Free and already reserved pages become reserved; the reserved range is merged with
    /// adjacent or overlapping reserved ranges into one node. A range entirely outside the
    /// domain is a no-op. Takes O(k log n) time for a range overlapping k nodes; meant for
    /// initialisation.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `hi < lo`.
    /// - [`Error::Busy`]: the range overlaps a live allocation; nothing changed.
    /// - [`Error::NoNodes`]: the storage has no slot for the split-off free ranges; nothing
    ///   changed.
    pub fn reserve(&mut self, lo: Pfn, hi: Pfn) -> Result<(), Error> {
        if hi < lo {
            return Err(Error::InvalidArgument);
        }
        if hi < self.start || lo > self.limit {
            return Ok(());
        }
        let lo = if lo > self.start { lo } else { self.start };
        let hi = if hi < self.limit { hi } else { self.limit };

        // First pass: the overlapped nodes `f ..= l` must all be free or reserved.
        let f = *self.n(self.floor(lo));
        let mut l = f;
        let mut deletes: u64 = 0;
        loop {
            if l.kind != Kind::Free && l.kind != Kind::Reserved {
                return Err(Error::Busy);
            }
            deletes = deletes.saturating_add(1);
            if l.last >= hi {
                break;
            }
            let after = l.last.saturating_add(1);
            let next = *self.n(self.floor(after));
            if next.start != after || deletes > u64::from(self.cap) {
                // Not tiled: cannot happen while the invariants hold.
                return Err(Error::InvalidArgument);
            }
            l = next;
        }
        if f.kind == Kind::Reserved && f.last >= hi {
            return Ok(());
        }

        // The merged reserved range `[rlo, rhi]` replaces the nodes `[dlo, dhi]`.
        let (mut rlo, mut dlo) = (lo, f.start);
        if f.kind == Kind::Reserved {
            rlo = f.start;
        } else if lo == f.start && f.start > self.start {
            let p = *self.n(self.floor(f.start - 1));
            if p.kind == Kind::Reserved {
                rlo = p.start;
                dlo = p.start;
                deletes = deletes.saturating_add(1);
            }
        }
        let (mut rhi, mut dhi) = (hi, l.last);
        if l.kind == Kind::Reserved {
            rhi = l.last;
        } else if hi == l.last && l.last < self.limit {
            let s = *self.n(self.floor(l.last + 1));
            if s.kind == Kind::Reserved {
                rhi = s.last;
                dhi = s.last;
                deletes = deletes.saturating_add(1);
            }
        }
        let head = f.kind == Kind::Free && lo > f.start;
        let tail = l.kind == Kind::Free && hi < l.last;
        let inserts = 1 + u64::from(head) + u64::from(tail);
        if u64::from(self.available()) < inserts.saturating_sub(deletes) {
            return Err(Error::NoNodes);
        }

        // Second pass: delete, then insert (so the slots of the deleted nodes are reused).
        // The counters follow the nodes.
        let mut cur = dlo;
        while let Some(gone_last) = self.delete(cur) {
            if gone_last >= dhi {
                break;
            }
            cur = gone_last + 1;
        }
        if head {
            self.insert(f.start, lo - 1, Kind::Free)?;
        }
        self.insert(rlo, rhi, Kind::Reserved)?;
        if tail {
            self.insert(hi + 1, l.last, Kind::Free)?;
        }
        Ok(())
    }

    /// The live allocation containing `pfn`, as `(start, size)`. Worst-case O(log n).
    pub fn find(&self, pfn: Pfn) -> Option<(Pfn, u64)> {
        if pfn < self.start || pfn > self.limit {
            return None;
        }
        let n = self.n(self.floor(pfn));
        if n.kind == Kind::Allocated && n.start <= pfn && pfn <= n.last {
            Some((n.start, range_len(n.start, n.last)))
        } else {
            None
        }
    }

    /// The current accounting, in O(1) from the root's augmented data and the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            span_pages: self.span(),
            free_pages: self.pages[Kind::Free as usize],
            largest_free: self.n(self.root).sub_free_max,
            free_blocks: self.count[Kind::Free as usize],
            allocated_pages: self.pages[Kind::Allocated as usize],
            allocations: self.count[Kind::Allocated as usize],
            reserved_pages: self.pages[Kind::Reserved as usize],
            nodes_used: u64::from(self.used),
            nodes_total: u64::from(self.cap),
        }
    }

    /// Gives the storage back.
    pub fn into_storage(self) -> S {
        self.nodes
    }

    /// The height of the tree (0 for no node, 1 for a single node). For tests.
    #[doc(hidden)]
    pub fn height(&self) -> u32 {
        u32::from(self.n(self.root).height)
    }

    /// Verifies every invariant listed on [`IovaAllocator`] in O(n) time; for tests only,
    /// never called by the allocator itself. Returns the first violation found.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.root == NIL {
            return Err("no root");
        }
        let mut walk = Walk {
            next: self.start,
            prev: Kind::Unused,
            nodes: 0,
            pages: [0; KINDS],
            count: [0; KINDS],
        };
        self.check_at(self.root, 0, &mut walk)?;
        if walk.next != self.limit.saturating_add(1) {
            return Err("the ranges do not end at the domain limit");
        }
        if walk.nodes != u64::from(self.used) {
            return Err("used slot count differs from the tree size");
        }
        if walk.pages != self.pages || walk.count != self.count {
            return Err("counters differ from the tree");
        }
        if self.fresh > self.cap || self.used > self.fresh || self.cap == NIL {
            return Err("slot counters out of range");
        }
        if usize::try_from(self.cap).ok() != Some(self.nodes.len()) {
            return Err("storage length changed");
        }
        let mut unused: u32 = 0;
        let mut x = self.free_head;
        while x != NIL {
            if x >= self.fresh || self.n(x).kind != Kind::Unused {
                return Err("bad slot on the free list");
            }
            unused = unused.saturating_add(1);
            if unused > self.fresh {
                return Err("free list has a cycle");
            }
            x = self.n(x).link[LEFT];
        }
        if u64::from(unused) + u64::from(self.used) != u64::from(self.fresh) {
            return Err("slots lost");
        }
        let hint = self.hint.as_slice();
        if hint.first().is_some_and(|&x| x != self.root)
            || hint
                .windows(2)
                .any(|w| matches!(w, [up, down] if !self.n(*up).link.contains(down)))
        {
            return Err("hint is not a path from the root");
        }
        Ok(())
    }

    // ----- internals -----

    /// Pages in the domain (`limit < Pfn::MAX`, so this does not overflow).
    fn span(&self) -> u64 {
        range_len(self.start, self.limit)
    }

    /// Unused slots.
    fn available(&self) -> u32 {
        self.cap.saturating_sub(self.used)
    }

    /// Slot `i`; [`Node::EMPTY`] (the sentinel) for `NIL` or any index out of range.
    #[inline]
    fn n(&self, i: u32) -> &Node {
        slot(&self.nodes, i)
    }

    /// Slot `i` for writing; a scratch node for `NIL` or any index out of range.
    #[inline]
    fn nm(&mut self, i: u32) -> &mut Node {
        match self.nodes.get_mut(i as usize) {
            Some(node) => node,
            None => {
                self.scratch = Node::EMPTY;
                &mut self.scratch
            }
        }
    }

    /// Adds (`add`) a node of `kind` over `[start, last]` to the counters, or removes it.
    ///
    /// The counters saturate, so they stay exact only while they stay within the span:
    /// a node leaving the tree or changing its range is removed before the pages it hands
    /// on are added again.
    fn tally(&mut self, kind: Kind, start: Pfn, last: Pfn, add: bool) {
        let len = range_len(start, last);
        let (Some(pages), Some(count)) = (
            self.pages.get_mut(kind as usize),
            self.count.get_mut(kind as usize),
        ) else {
            return;
        };
        if add {
            *pages = pages.saturating_add(len);
            *count = count.saturating_add(1);
        } else {
            *pages = pages.saturating_sub(len);
            *count = count.saturating_sub(1);
        }
    }

    /// Takes an unused slot and makes it a detached leaf for `[start, last]`.
    fn new_leaf(&mut self, start: Pfn, last: Pfn, kind: Kind) -> Option<u32> {
        let i = if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.n(i).link[LEFT];
            i
        } else if self.fresh < self.cap {
            self.fresh += 1;
            self.fresh - 1
        } else {
            return None;
        };
        self.used = self.used.saturating_add(1);
        *self.nm(i) = Node::leaf(start, last, kind);
        self.tally(kind, start, last, true);
        Some(i)
    }

    /// Returns the (unlinked) slot `i` to the free list.
    fn put_slot(&mut self, i: u32) {
        let (kind, start, last) = {
            let n = self.n(i);
            (n.kind, n.start, n.last)
        };
        self.tally(kind, start, last, false);
        let head = self.free_head;
        *self.nm(i) = Node {
            link: [head, NIL],
            ..Node::EMPTY
        };
        self.free_head = i;
        self.used = self.used.saturating_sub(1);
    }

    /// Changes the range and kind of node `x` in place, leaving its links and subtree data;
    /// the caller then retraces the path to `x`. The key order must not change.
    #[inline]
    fn set_range(&mut self, x: u32, start: Pfn, last: Pfn, kind: Kind) {
        let (old_kind, old_start, old_last) = {
            let n = self.n(x);
            (n.kind, n.start, n.last)
        };
        self.tally(old_kind, old_start, old_last, false);
        self.nm(x).set_range(start, last, kind);
        self.tally(kind, start, last, true);
    }

    /// Recomputes the augmented data of `x` from its own range and its children.
    #[inline]
    fn pull(&mut self, x: u32) {
        pull_at(&mut self.nodes, x);
    }

    /// Rotates the subtree `y` right; returns its new root.
    fn rotate_right(&mut self, y: u32) -> u32 {
        self.hint.len = 0;
        let x = self.n(y).link[LEFT];
        let t = self.n(x).link[RIGHT];
        self.nm(y).link[LEFT] = t;
        self.nm(x).link[RIGHT] = y;
        self.pull(y);
        self.pull(x);
        x
    }

    /// Rotates the subtree `y` left; returns its new root.
    fn rotate_left(&mut self, y: u32) -> u32 {
        self.hint.len = 0;
        let x = self.n(y).link[RIGHT];
        let t = self.n(x).link[LEFT];
        self.nm(y).link[RIGHT] = t;
        self.nm(x).link[LEFT] = y;
        self.pull(y);
        self.pull(x);
        x
    }

    /// Restores the AVL balance at the just recomputed `x`, whose subtrees are balanced and
    /// have heights `lh` and `rh` differing by at most two; returns the new subtree root.
    fn balance(&mut self, x: u32, lh: u8, rh: u8) -> u32 {
        if lh > rh.saturating_add(1) {
            let l = self.n(x).link[LEFT];
            let (ll, lr) = {
                let n = self.n(l);
                (n.link[LEFT], n.link[RIGHT])
            };
            if self.n(lr).height > self.n(ll).height {
                let nl = self.rotate_left(l);
                self.nm(x).link[LEFT] = nl;
            }
            return self.rotate_right(x);
        }
        if rh > lh.saturating_add(1) {
            let r = self.n(x).link[RIGHT];
            let (rl, rr) = {
                let n = self.n(r);
                (n.link[LEFT], n.link[RIGHT])
            };
            if self.n(rl).height > self.n(rr).height {
                let nr = self.rotate_right(r);
                self.nm(x).link[RIGHT] = nr;
            }
            return self.rotate_left(x);
        }
        x
    }

    /// Replaces the link to `old`, at depth `i` of `path`, by `new`.
    fn relink(&mut self, path: &Path, i: usize, old: u32, new: u32) {
        self.hint.len = 0;
        match i.checked_sub(1) {
            None => self.root = new,
            Some(up) => {
                let parent = self.nm(path.at(up));
                parent.link[usize::from(parent.link[RIGHT] == old)] = new;
            }
        }
    }

    /// Retraces `path[floor..]` bottom-up after a change at or below its end: recomputes
    /// each node and restores its balance (the heights of its subtrees now differ by at
    /// most two). `changed` is the depth of the highest path node whose own range changed
    /// ([`ANY_DEPTH`] for none): at or above it, the retrace stops at the first node whose
    /// augmented data came out unchanged, as nothing above depends on more (after a
    /// rotation it goes on).
    fn fixup(&mut self, path: &Path, floor: usize, changed: usize) {
        let mut i = path.len;
        while i > floor {
            i -= 1;
            let x = path.at(i);
            let (lh, rh, unchanged) = pull_at(&mut self.nodes, x);
            if lh.abs_diff(rh) > 1 {
                let top = self.balance(x, lh, rh);
                self.relink(path, i, x, top);
            } else if unchanged && i <= changed {
                break;
            }
        }
    }

    /// Recomputes the maxima along `path` bottom-up after the node at its end changed its
    /// own range in place, without a change of shape (so no height changes); stops at the
    /// first node whose maxima come out unchanged.
    ///
    /// The new maxima of the subtree below are carried up: a step reads the node, whose
    /// `child_order` has the order of the other child, and only the free maximum of the
    /// other child.
    fn settle(&mut self, path: &Path) {
        let nodes = &mut *self.nodes;
        let Some((&x, above)) = path.as_slice().split_last() else {
            return;
        };
        // The node that changed: its children did not.
        let n = slot(nodes, x);
        let (l, r) = (slot(nodes, n.link[LEFT]), slot(nodes, n.link[RIGHT]));
        let free_max = n.free_len().max(l.sub_free_max).max(r.sub_free_max);
        let max_order = n
            .own_order
            .max(n.child_order[LEFT])
            .max(n.child_order[RIGHT]);
        if !set_maxima(nodes, x, free_max, max_order) {
            return;
        }
        let mut below = (x, free_max, max_order);
        for &a in above.iter().rev() {
            let Some(n) = nodes.get(a as usize) else {
                return;
            };
            let side = usize::from(n.link[RIGHT] == below.0);
            let other = side ^ 1;
            let (sibling, own_len, own_order) = (n.link[other], n.free_len(), n.own_order);
            let other_order = n.child_order[other];
            let free_max = below.1.max(slot(nodes, sibling).sub_free_max).max(own_len);
            let max_order = below.2.max(other_order).max(own_order);
            let Some(n) = nodes.get_mut(a as usize) else {
                return;
            };
            n.child_order[side] = below.2;
            if (n.sub_free_max, n.sub_max_order) == (free_max, max_order) {
                return;
            }
            n.sub_free_max = free_max;
            n.sub_max_order = max_order;
            below = (a, free_max, max_order);
        }
    }

    /// Raises the maxima along `path` bottom-up to cover `pages` free pages of order
    /// `order`, stopping where they already do: the retrace for a node at the end of
    /// `path` that only gained free pages, without any change of shape.
    fn raise(&mut self, path: &Path, pages: u64, order: i8) {
        let nodes = &mut *self.nodes;
        let mut below = NIL;
        for &x in path.as_slice().iter().rev() {
            let Some(n) = nodes.get_mut(x as usize) else {
                break;
            };
            if below != NIL {
                // (The node that changed is skipped: its children did not.)
                let side = &mut n.child_order[usize::from(n.link[RIGHT] == below)];
                *side = (*side).max(order);
            }
            if n.sub_free_max >= pages && n.sub_max_order >= order {
                break;
            }
            n.sub_free_max = n.sub_free_max.max(pages);
            n.sub_max_order = n.sub_max_order.max(order);
            below = x;
        }
    }

    /// Pushes `x` and then its descendants on the `right` (else left) side onto `path`,
    /// down to the last one; returns that.
    fn push_spine(&self, path: &mut Path, mut x: u32, right: bool) -> u32 {
        path.push(x);
        for _ in 0..MAX_DEPTH {
            let next = self.n(x).child(right);
            if next == NIL {
                break;
            }
            x = next;
            path.push(x);
        }
        x
    }

    /// Hangs the detached leaf `new` into the subtree of the node at the end of `path` as
    /// its in-order successor (`next`) or predecessor, extending `path` to the new leaf's
    /// parent. The caller retraces the path.
    fn attach_beside(&mut self, path: &mut Path, new: u32, next: bool) {
        self.hint.len = 0;
        let x = path.last();
        let inner = self.n(x).child(next);
        let parent = if inner == NIL {
            x
        } else {
            self.push_spine(path, inner, !next)
        };
        // Beside `x` itself on the `next` side, else at the far end of the spine.
        let right = if parent == x { next } else { !next };
        self.nm(parent).link[usize::from(right)] = new;
    }

    /// The depth in `path` of the in-order successor (`next`) or predecessor of the node
    /// at the end of `path` when it is an ancestor: the nearest one from which the path
    /// descends on the other side.
    fn turn(&self, path: &Path, next: bool) -> Option<usize> {
        let mut i = path.len.checked_sub(1)?;
        while i > 0 {
            let below = path.at(i);
            i -= 1;
            if self.n(path.at(i)).child(!next) == below {
                return Some(i);
            }
        }
        None
    }

    /// The in-order successor (`next`) or predecessor of `x`, or `NIL`; `turns` as
    /// returned by [`Self::locate_turns`] for `x`.
    fn neighbour(&self, x: u32, turns: [u32; 2], next: bool) -> u32 {
        let inner = self.n(x).child(next);
        if inner != NIL {
            return self.extreme(inner, next);
        }
        turns[usize::from(!next)]
    }

    /// Unlinks the node at the end of `path`, which has at most one child, and frees its
    /// slot; `path` then ends at the parent, and the caller retraces it.
    fn unlink_last(&mut self, path: &mut Path) {
        let Some(i) = path.len.checked_sub(1) else {
            return;
        };
        let z = path.at(i);
        let child = {
            let n = self.n(z);
            if n.link[LEFT] != NIL {
                n.link[LEFT]
            } else {
                n.link[RIGHT]
            }
        };
        self.relink(path, i, z, child);
        self.put_slot(z);
        path.len = i;
    }

    /// Unlinks the in-order successor (`next`) or predecessor of the node at the end of
    /// `path`, which must lie in the node's subtree (at the end of its spine on that side,
    /// so without a child facing back), and retraces up to but excluding the node, whose
    /// subtree on that side loses at most one level. Returns the neighbour's range;
    /// `path` ends at the node again.
    fn unlink_beside(&mut self, path: &mut Path, next: bool) -> (Pfn, Pfn) {
        let len = path.len;
        let inner = self.n(path.last()).child(next);
        let gone = self.push_spine(path, inner, !next);
        let range = {
            let n = self.n(gone);
            (n.start, n.last)
        };
        self.unlink_last(path);
        self.fixup(path, len, ANY_DEPTH);
        path.len = len;
        range
    }

    /// Merges the node at the end of `path` and its in-order successor (`next`) or
    /// predecessor, which must exist, into one node of kind `kind`, and retraces.
    ///
    /// Of two in-order neighbours one descends from the other, on the side facing it, and
    /// has no child on the side facing back: that one is unlinked, and the other keeps its
    /// slot and takes the merged range, which keeps the key order (no key lies between).
    fn join(&mut self, path: &mut Path, next: bool, kind: Kind) {
        let Some(xi) = path.len.checked_sub(1) else {
            return;
        };
        let x = path.at(xi);
        let (start, last) = {
            let n = self.n(x);
            (n.start, n.last)
        };
        if self.n(x).child(next) != NIL {
            let (s, l) = self.unlink_beside(path, next);
            let (start, last) = if next { (start, l) } else { (s, last) };
            self.set_range(x, start, last, kind);
            self.fixup(path, 0, xi);
        } else if let Some(keep_i) = self.turn(path, next) {
            // `x` has no child on the side of its neighbour, an ancestor.
            let keep = path.at(keep_i);
            let (s, l) = {
                let n = self.n(keep);
                (n.start, n.last)
            };
            let (start, last) = if next { (start, l) } else { (s, last) };
            self.unlink_last(path);
            self.set_range(keep, start, last, kind);
            self.fixup(path, 0, keep_i);
        }
    }

    /// Inserts a node for `[start, last]`.
    fn insert(&mut self, start: Pfn, last: Pfn, kind: Kind) -> Result<(), Error> {
        let mut path = Path::new();
        let mut x = self.root;
        let mut left = false;
        for _ in 0..MAX_DEPTH {
            if x == NIL {
                break;
            }
            path.push(x);
            let n = self.n(x);
            left = start < n.start;
            x = n.child(!left);
        }
        if x != NIL {
            // Too deep: cannot happen while the invariants hold.
            return Err(Error::InvalidArgument);
        }
        let new = self.new_leaf(start, last, kind).ok_or(Error::NoNodes)?;
        self.hint.len = 0;
        let parent = path.last();
        if parent == NIL {
            self.root = new;
        } else if left {
            self.nm(parent).link[LEFT] = new;
        } else {
            self.nm(parent).link[RIGHT] = new;
        }
        self.fixup(&path, 0, ANY_DEPTH);
        Ok(())
    }

    /// Deletes the node with key `key`; returns its last page.
    fn delete(&mut self, key: Pfn) -> Option<Pfn> {
        let mut path = Path::new();
        let x = self.locate(key, &mut path);
        if x == NIL {
            return None;
        }
        let n = *self.n(x);
        if n.link[LEFT] != NIL && n.link[RIGHT] != NIL {
            // `x` takes over the range of its successor, which is unlinked instead.
            let xi = path.len.saturating_sub(1);
            let s = self.push_spine(&mut path, n.link[RIGHT], false);
            let s = *self.n(s);
            self.unlink_last(&mut path);
            self.set_range(x, s.start, s.last, s.kind);
            self.fixup(&path, 0, xi);
        } else {
            self.unlink_last(&mut path);
            self.fixup(&path, 0, ANY_DEPTH);
        }
        Some(n.last)
    }

    /// The node containing `pfn` (the one with the largest start `<= pfn`), or `NIL`.
    fn floor(&self, pfn: Pfn) -> u32 {
        let mut best = NIL;
        let mut x = self.root;
        for _ in 0..MAX_DEPTH {
            if x == NIL {
                break;
            }
            let n = self.n(x);
            if n.start <= pfn {
                best = x;
                x = n.link[RIGHT];
            } else {
                x = n.link[LEFT];
            }
        }
        best
    }

    /// The node with key `pfn`, or `NIL`; `path` receives the nodes from the root down to
    /// it (or to where it would be).
    fn locate(&self, pfn: Pfn, path: &mut Path) -> u32 {
        self.locate_turns(pfn, path).0
    }

    /// [`Self::locate`], also returning the last nodes on the path from which it turned
    /// left (`[LEFT]`) and right (`[RIGHT]`), or `NIL`: the in-order successor and
    /// predecessor of the node found if it has no right or left subtree.
    fn locate_turns(&self, pfn: Pfn, path: &mut Path) -> (u32, [u32; 2]) {
        let nodes = &*self.nodes;
        let mut turns = [NIL; 2];
        let mut x = self.root;
        let mut len = path.len;
        // `NIL` is out of range: `get` ends the loop. (A branch off the chain of loads,
        // unlike the sentinel of `slot`.)
        while let Some(n) = nodes.get(x as usize) {
            let Some(entry) = path.nodes.get_mut(len) else {
                break;
            };
            *entry = x;
            len += 1;
            if pfn == n.start {
                path.len = len;
                return (x, turns);
            }
            let right = pfn > n.start;
            turns[usize::from(right)] = x;
            x = n.child(right);
        }
        path.len = len;
        (NIL, turns)
    }

    /// The leftmost (`leftmost`) or rightmost node of the non-empty subtree `x`.
    fn extreme(&self, mut x: u32, leftmost: bool) -> u32 {
        for _ in 0..MAX_DEPTH {
            let next = self.n(x).child(!leftmost);
            if next == NIL {
                break;
            }
            x = next;
        }
        x
    }

    /// Whether the node at the end of `hint` is the rightmost free node holding an
    /// aligned block of order `k`: the one [`Self::descend`] would find from the root.
    ///
    /// Right of it lie its right subtree and, for every ancestor whose left subtree the
    /// path enters, the ancestor and its right subtree; their orders are all on the path.
    /// O(height), but without a chain of dependent loads.
    fn hint_is_rightmost(&self, k: u32) -> bool {
        let nodes = &*self.nodes;
        let Some((&h, above)) = self.hint.as_slice().split_last() else {
            return false;
        };
        let n = slot(nodes, h);
        if n.kind != Kind::Free || !order_gap(n.child_order[RIGHT], k, n.own_order) {
            return false;
        }
        let mut below = h;
        let mut higher = 0u8;
        for &a in above.iter().rev() {
            let n = slot(nodes, a);
            // Without branches, in integers: where the path turns follows no pattern.
            let block = u8::from(order_ge(n.own_order.max(n.child_order[RIGHT]), k));
            higher |= block & u8::from(n.link[LEFT] == below);
            below = a;
        }
        higher == 0 && below == self.root
    }

    /// The highest fit for `size` pages aligned to `mask + 1 = 2^k` ending at or below
    /// `bound`, as (free node, pfn).
    ///
    /// Walks the single path towards `bound`. Off that path, a subtree lying entirely at
    /// or below `bound` with a large enough block is guaranteed to hold a fit, so it is
    /// only remembered; any fit found deeper on the path is higher. At the end the best
    /// remembered candidate is resolved by one greedy descent. O(height) in all.
    ///
    /// `path` receives the nodes from the root down to the returned node.
    fn find_fit(
        &self,
        size: u64,
        k: u32,
        mask: u64,
        bound: Pfn,
        path: &mut Path,
    ) -> Option<(u32, Pfn)> {
        // The candidate and the path length down to (and including) its parent or node.
        let mut best = (Candidate::None, 0);
        let mut x = self.root;
        for _ in 0..MAX_DEPTH {
            if x == NIL {
                break;
            }
            let n = self.n(x);
            if !order_ge(n.sub_max_order, k) {
                break;
            }
            path.push(x);
            if n.start > bound {
                x = n.link[LEFT];
                continue;
            }
            // Everything left of `x` lies below `n.start <= bound`.
            if order_ge(n.child_order[LEFT], k) {
                best = (Candidate::In(n.link[LEFT]), path.len);
            }
            if n.kind == Kind::Free {
                if let Some(p) = fit_in(n.start, n.last, size, mask, bound) {
                    best = (Candidate::At(x, p), path.len);
                }
            }
            if n.last >= bound {
                break;
            }
            x = n.link[RIGHT];
        }
        path.len = best.1;
        match best.0 {
            Candidate::None => None,
            Candidate::At(x, p) => Some((x, p)),
            Candidate::In(x) => self.descend(x, size, k, mask, path),
        }
    }

    /// The highest fit in the subtree `x`, which lies below the bound and has
    /// `sub_max_order >= k`: always prefer the right subtree, then the node itself, then
    /// the left subtree.
    fn descend(
        &self,
        mut x: u32,
        size: u64,
        k: u32,
        mask: u64,
        path: &mut Path,
    ) -> Option<(u32, Pfn)> {
        let nodes = &*self.nodes;
        let mut len = path.len;
        while let Some(n) = nodes.get(x as usize) {
            let Some(entry) = path.nodes.get_mut(len) else {
                break;
            };
            *entry = x;
            len += 1;
            let right_order = n.child_order[RIGHT];
            if order_gap(right_order, k, n.own_order) && n.kind == Kind::Free {
                path.len = len;
                return fit_in(n.start, n.last, size, mask, n.last).map(|p| (x, p));
            }
            // Else the left subtree has the block (a subtree without one ends at `NIL`).
            x = n.child(order_ge(right_order, k));
        }
        path.len = len;
        None
    }

    /// Checks the subtree `x` in order; returns its recomputed augmented data.
    fn check_at(&self, x: u32, depth: u32, walk: &mut Walk) -> Result<Agg, &'static str> {
        if x == NIL {
            return Ok(Node::EMPTY.agg());
        }
        if depth >= MAX_DEPTH || x >= self.fresh {
            return Err("tree too deep or link out of range");
        }
        let n = *self.n(x);
        let la = self.check_at(n.link[LEFT], depth + 1, walk)?;

        if n.start != walk.next || n.last < n.start || n.last > self.limit {
            return Err("ranges out of order or not tiling the domain");
        }
        match n.kind {
            Kind::Unused => return Err("unused node in the tree"),
            Kind::Free | Kind::Reserved if n.kind == walk.prev => {
                return Err("adjacent free or reserved nodes not merged")
            }
            _ => {}
        }
        if let (Some(pages), Some(count)) = (
            walk.pages.get_mut(n.kind as usize),
            walk.count.get_mut(n.kind as usize),
        ) {
            *pages = pages.saturating_add(range_len(n.start, n.last));
            *count = count.saturating_add(1);
        }
        let own_order = if n.kind == Kind::Free {
            block_order(n.start, n.last)
        } else {
            NO_ORDER
        };
        if n.own_order != own_order {
            return Err("own_order wrong");
        }
        walk.next = n.last.saturating_add(1);
        walk.prev = n.kind;
        walk.nodes = walk.nodes.saturating_add(1);

        let ra = self.check_at(n.link[RIGHT], depth + 1, walk)?;
        if la.height.abs_diff(ra.height) > 1 {
            return Err("AVL balance violated");
        }
        let agg = Agg {
            height: la.height.max(ra.height).saturating_add(1),
            free_max: n.free_len().max(la.free_max).max(ra.free_max),
            max_order: own_order.max(la.max_order).max(ra.max_order),
        };
        if n.agg() != agg || n.child_order != [la.max_order, ra.max_order] {
            return Err("augmented data differs from its recomputation");
        }
        Ok(agg)
    }
}
