// SPDX-License-Identifier: GPL-2.0

//! The device page table in the kernel: [`crate::pt`] over kmalloc'ed nodes.
//!
//! - [`NodePool`]: the [`Pool`] of the table. Nodes are 4096-byte kmalloc allocations
//!   (one `kmalloc-4k` object each), named by their index in a [`KVec`]. Freed nodes
//!   are kept as spares and reused; [`NodePool::reserve`] allocates them ahead of time,
//!   so that a fault path can allocate everything it needs before it takes a spinlock,
//!   and the flags of the allocations the pool makes on its own can be switched (to
//!   `GFP_NOWAIT` on an mmu-notifier path, say). An optional limit on the nodes in use
//!   makes allocation failures reproducible in tests.
//! - [`DeviceTable`]: a [`PageTable`] and its pool, with kernel errors, that frees every
//!   node when dropped.
//!
//! Neither type locks: the mirror that owns a [`DeviceTable`] serialises its use.

use crate::pt::{self, Leaf, Node, PageTable, Perm, Pool, Protected, Stats};
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::alloc::Flags;
use kernel::prelude::*;
use kernel::sync::Arc;

// A node is exactly one kmalloc-4k object.
static_assert!(core::mem::size_of::<Node>() == 4096);

/// The kernel error for a [`pt::Error`]: `ENOMEM` when a node could not be allocated,
/// `EFAULT` for an address beyond the mirrored 48 bits, `EINVAL` for any other bad
/// argument (unaligned address or pfn, empty range, pfn too large, no read permission).
fn errno(e: pt::Error) -> Error {
    match e {
        pt::Error::NoMemory => ENOMEM,
        pt::Error::OutOfRange => EFAULT,
        pt::Error::Unaligned | pt::Error::EmptyRange | pt::Error::BadPfn | pt::Error::BadPerm => {
            EINVAL
        }
    }
}

/// Allocates a node with `flags` and fills it with zeroes (a valid, empty node).
///
/// The node is written in place: it is never built on the stack. (Linux 6.12 and 7.x
/// spell zeroed boxes differently, `init::zeroed()` and `KBox::zeroed`; this works on
/// both.)
fn alloc_node(flags: Flags) -> Result<KBox<Node>> {
    let mut node = KBox::<Node>::new_uninit(flags)?;
    // SAFETY: `node.as_mut_ptr()` points to a fresh allocation of the size and alignment
    // of one `Node`, which nothing else references: it is valid for writing one `Node`.
    unsafe { core::ptr::write_bytes(node.as_mut_ptr(), 0, 1) };
    // SAFETY: The node was just filled with zero bytes, and all-zero bytes are a valid
    // `Node` (512 `u64`s; `pt::Node` documents all-zero as the empty node).
    Ok(unsafe { node.assume_init() })
}

/// A LIFO stack on a [`KVec`] that can pop on Linux 6.12 too (whose `Vec` has no `pop`)
/// and whose pushes never allocate: room is made beforehand with [`Stack::reserve`].
///
/// # Invariants
///
/// `len <= items.len()`; `items[..len]` are `Some` (the stack, bottom first) and
/// `items[len..]` are `None` (the room left).
struct Stack<T> {
    items: KVec<Option<T>>,
    len: usize,
}

impl<T> Stack<T> {
    /// An empty stack without room.
    const fn new() -> Self {
        // INVARIANT: `0 <= 0`, and there are no items.
        Self {
            items: KVec::new(),
            len: 0,
        }
    }

    /// The number of elements on the stack.
    fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `total` elements in all (on the stack or pushed later), so that
    /// pushing until there are `total` never fails.
    fn reserve(&mut self, total: usize, flags: Flags) -> Result {
        let more = total.saturating_sub(self.items.len());
        if more == 0 {
            return Ok(());
        }
        self.items.reserve(more, flags)?;
        for _ in 0..more {
            // INVARIANT: Room is `None`, at the end. Within the capacity just reserved,
            // so this does not allocate.
            self.items.push(None, flags)?;
        }
        Ok(())
    }

    /// Pushes `x` into the room made by [`Stack::reserve`]; gives it back if there is
    /// none. Never allocates.
    fn push(&mut self, x: T) -> core::result::Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                // INVARIANT: `items[len]` was room (`None`); it becomes the new top.
                *slot = Some(x);
                self.len += 1;
                Ok(())
            }
            None => Err(x),
        }
    }

    /// Pops the top element, if any. Its place becomes room.
    fn pop(&mut self) -> Option<T> {
        let top = self.len.checked_sub(1)?;
        let x = self.items.get_mut(top)?.take();
        // INVARIANT: `items[top]` is now `None`, the lowest room.
        self.len = top;
        x
    }
}

/// The live-node account shared by pools and whoever watches them: the number of node
/// allocations the pools currently own (in use or spare).
pub(crate) type NodeAccount = Arc<AtomicUsize>;

/// The [`Pool`] of a [`PageTable`] in the kernel: kmalloc'ed nodes named by index, with
/// spares.
///
/// Node `i` is `slots[i]`: `Some` while the table uses it, `None` while the index is
/// free. A node the table frees goes to `spare` (its memory is kept and reused) and its
/// index to `free`; [`NodePool::shrink`] releases spares.
///
/// # Invariants
///
/// - `slots[i]` is `Some` exactly for the nodes allocated to the table and not freed;
///   `live` is their number (so [`Pool::node`] answers `None` for a freed index, and a
///   double free is ignored instead of putting an index twice on `free`).
/// - `free` holds distinct indices `< slots.len()` of `None` slots, and has room for
///   `slots.len()` of them: recording a freed index never allocates.
/// - `nodes == live + spare.len()` is the number of node allocations the pool owns; it
///   is what the pool has added to `account`; `spare` has room for `nodes` of them:
///   keeping a freed node never allocates.
/// - Every index fits in a `u32` (the table names nodes by `u32`).
pub(crate) struct NodePool {
    slots: KVec<Option<KBox<Node>>>,
    free: Stack<u32>,
    spare: Stack<KBox<Node>>,
    live: usize,
    nodes: usize,
    /// The most nodes the table may use at once ([`Pool::alloc`] fails beyond).
    limit: usize,
    /// The flags of every allocation the pool makes (nodes and bookkeeping).
    flags: Flags,
    account: Option<NodeAccount>,
}

impl NodePool {
    /// An empty pool (nothing allocated yet) that allocates with `flags` and has no
    /// limit.
    pub(crate) const fn new(flags: Flags) -> Self {
        // INVARIANT: Nothing allocated, nothing live, no index.
        Self {
            slots: KVec::new(),
            free: Stack::new(),
            spare: Stack::new(),
            live: 0,
            nodes: 0,
            limit: usize::MAX,
            flags,
            account: None,
        }
    }

    /// The same pool, also counting the node allocations it owns in `account` (added
    /// when allocated, subtracted when released, by [`NodePool::shrink`] or when the
    /// pool is dropped).
    pub(crate) fn with_account(mut self, account: NodeAccount) -> Self {
        // INVARIANT: Keeps `account` in step from now on (it adds what it already owns).
        account.fetch_add(self.nodes, Ordering::Relaxed);
        if let Some(old) = self.account.replace(account) {
            old.fetch_sub(self.nodes, Ordering::Relaxed);
        }
        self
    }

    /// Sets the flags of the pool's later allocations, e.g. `GFP_NOWAIT` on a path that
    /// must not sleep (better: [`NodePool::reserve`] before it).
    pub(crate) fn set_flags(&mut self, flags: Flags) {
        self.flags = flags;
    }

    /// Limits the nodes in use at once to `limit` (`None`: no limit). Nodes already in
    /// use are not affected; [`Pool::alloc`] fails while the limit is reached.
    pub(crate) fn set_limit(&mut self, limit: Option<usize>) {
        self.limit = limit.unwrap_or(usize::MAX);
    }

    /// The number of nodes the table uses.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The number of spare nodes (allocated, not in use).
    pub(crate) fn spare(&self) -> usize {
        self.spare.len()
    }

    /// The number of node allocations the pool owns: [`NodePool::live`] plus
    /// [`NodePool::spare`].
    pub(crate) fn nodes(&self) -> usize {
        self.nodes
    }

    /// Allocates ahead so that the next `n` [`Pool::alloc`] calls allocate nothing: at
    /// least `n` spare nodes and `n` free indices. The limit does not apply (it bounds
    /// the nodes in use, not the spares).
    ///
    /// On error, what was allocated so far stays as spares.
    pub(crate) fn reserve(&mut self, n: usize) -> Result {
        while self.free.len() < n {
            let idx = self.new_index()?;
            // `new_index` made room for it.
            let _ = self.free.push(idx);
        }
        while self.spare.len() < n {
            let node = self.new_node()?;
            self.keep_spare(node);
        }
        Ok(())
    }

    /// Releases spare nodes until at most `keep` are left.
    pub(crate) fn shrink(&mut self, keep: usize) {
        while self.spare.len() > keep {
            match self.spare.pop() {
                Some(node) => self.release(node),
                None => break,
            }
        }
    }

    /// Adds a slot and returns its index (a free one, not yet on `free`), after making
    /// room on `free` for it.
    fn new_index(&mut self) -> Result<u32> {
        let idx = u32::try_from(self.slots.len()).map_err(|_| ENOMEM)?;
        self.free.reserve(self.slots.len() + 1, self.flags)?;
        // INVARIANT: A `None` slot whose index the caller puts on `free` or uses; `free`
        // has room for every slot.
        self.slots.push(None, self.flags)?;
        Ok(idx)
    }

    /// Allocates a node, owned by the caller, after making room on `spare` for it.
    fn new_node(&mut self) -> Result<KBox<Node>> {
        self.spare.reserve(self.nodes + 1, self.flags)?;
        let node = alloc_node(self.flags)?;
        // INVARIANT: One more node owned (the caller makes it live or spare), counted
        // in `account` too; `spare` has room for all of them.
        self.nodes += 1;
        if let Some(account) = &self.account {
            account.fetch_add(1, Ordering::Relaxed);
        }
        Ok(node)
    }

    /// Keeps `node`, which the pool owns and nothing uses, as a spare.
    fn keep_spare(&mut self, node: KBox<Node>) {
        if let Err(node) = self.spare.push(node) {
            // Cannot happen (`spare` has room for every node); do not leak it.
            self.release(node);
        }
    }

    /// Frees `node`, which the pool owns and nothing uses.
    fn release(&mut self, node: KBox<Node>) {
        drop(node);
        // INVARIANT: One node fewer owned, in `account` too.
        self.nodes = self.nodes.saturating_sub(1);
        if let Some(account) = &self.account {
            account.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Pool for NodePool {
    fn alloc(&mut self) -> Option<u32> {
        if self.live >= self.limit {
            return None;
        }
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => self.new_index().ok()?,
        };
        let node = match self.spare.pop() {
            Some(node) => node,
            None => match self.new_node() {
                Ok(node) => node,
                Err(_) => {
                    // `free` has room for every index.
                    let _ = self.free.push(idx);
                    return None;
                }
            },
        };
        match self.slots.get_mut(idx as usize) {
            Some(slot) if slot.is_none() => {
                // INVARIANT: The index was free (its slot `None`, now off `free`): the
                // node becomes live.
                *slot = Some(node);
                self.live += 1;
                Some(idx)
            }
            // Cannot happen (free indices name `None` slots): forget the index.
            _ => {
                self.keep_spare(node);
                None
            }
        }
    }

    fn free(&mut self, idx: u32) {
        // A node not in use (a double free, say) is ignored.
        let Some(node) = self.slots.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        // INVARIANT: The node goes from live to spare, its index to `free` (both have
        // room: neither push allocates or fails).
        self.live = self.live.saturating_sub(1);
        self.keep_spare(node);
        let _ = self.free.push(idx);
    }

    fn node(&self, idx: u32) -> Option<&Node> {
        self.slots.get(idx as usize)?.as_deref()
    }

    fn node_mut(&mut self, idx: u32) -> Option<&mut Node> {
        self.slots.get_mut(idx as usize)?.as_deref_mut()
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        // The nodes themselves are freed with `slots` and `spare`.
        if let Some(account) = &self.account {
            account.fetch_sub(self.nodes, Ordering::Relaxed);
        }
    }
}

/// A device page table: the [`PageTable`] of `crate::pt` with its own [`NodePool`],
/// kernel errors, and no leak.
///
/// Every operation is the one of [`PageTable`] of the same name (see there for the
/// semantics); errors become `ENOMEM` (no node), `EFAULT` (an address at or beyond
/// [`pt::VA_END`]) or `EINVAL` (any other bad argument), and leave the table unchanged.
///
/// # Invariants
///
/// `table` is only ever used with `pool`: every node it names is live in `pool`, so
/// [`PageTable::clear`] with `pool` frees them all. [`Drop`] does that, then the pool
/// releases the memory.
pub(crate) struct DeviceTable {
    table: PageTable,
    pool: NodePool,
}

impl DeviceTable {
    /// An empty table whose nodes come from `pool` (normally a new, empty pool).
    pub(crate) fn new(pool: NodePool) -> Self {
        // INVARIANT: An empty table names no node.
        Self {
            table: PageTable::new(),
            pool,
        }
    }

    /// Maps the 4 KiB page at `va` to `pfn` with `perm` (splitting a huge entry that
    /// covers it). See [`PageTable::map`].
    pub(crate) fn map(&mut self, va: u64, pfn: u64, perm: Perm) -> Result {
        self.table.map(&mut self.pool, va, pfn, perm).map_err(errno)
    }

    /// Maps the 2 MiB page at `va` (2 MiB aligned) to `pfn..pfn + 512` (`pfn` a
    /// multiple of 512) with `perm`. See [`PageTable::map_huge`].
    pub(crate) fn map_huge(&mut self, va: u64, pfn: u64, perm: Perm) -> Result {
        self.table
            .map_huge(&mut self.pool, va, pfn, perm)
            .map_err(errno)
    }

    /// The entry mapping the 4 KiB page that contains `va`, if any. See
    /// [`PageTable::lookup`].
    pub(crate) fn lookup(&self, va: u64) -> Option<Leaf> {
        self.table.lookup(&self.pool, va)
    }

    /// Unmaps `[start, end)` and returns the number of 4 KiB pages unmapped. Never fails
    /// for lack of memory. See [`PageTable::invalidate`].
    pub(crate) fn invalidate(&mut self, start: u64, end: u64) -> Result<u64> {
        self.table
            .invalidate(&mut self.pool, start, end)
            .map_err(errno)
    }

    /// Clears the permissions `clear` in `[start, end)` (an entry that loses read
    /// permission is unmapped). Never fails for lack of memory. See
    /// [`PageTable::protect`].
    pub(crate) fn protect(&mut self, start: u64, end: u64, clear: Perm) -> Result<Protected> {
        self.table
            .protect(&mut self.pool, start, end, clear)
            .map_err(errno)
    }

    /// Calls `f(va, leaf)` for every entry intersecting `[start, end)` in ascending
    /// order, until `f` breaks. See [`PageTable::for_each`].
    pub(crate) fn for_each<F>(&self, start: u64, end: u64, f: F) -> Result
    where
        F: FnMut(u64, Leaf) -> ControlFlow<()>,
    {
        self.table
            .for_each(&self.pool, start, end, f)
            .map_err(errno)
    }

    /// The counters of the table.
    pub(crate) fn stats(&self) -> Stats {
        self.table.stats()
    }

    /// Whether nothing is mapped (then no node is in use).
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Unmaps everything; the nodes stay in the pool as spares.
    pub(crate) fn clear(&mut self) {
        self.table.clear(&mut self.pool);
    }

    /// The pool (its counters).
    pub(crate) fn pool(&self) -> &NodePool {
        &self.pool
    }

    /// Allocates ahead so that the next `n` node allocations of the table allocate no
    /// memory: reserve [`pt::MAX_ALLOCS_MAP`] before taking a spinlock to map one entry.
    /// See [`NodePool::reserve`].
    pub(crate) fn reserve(&mut self, n: usize) -> Result {
        self.pool.reserve(n)
    }

    /// Releases spare nodes until at most `keep` are left.
    pub(crate) fn shrink(&mut self, keep: usize) {
        self.pool.shrink(keep);
    }

    /// Sets the flags of the pool's later allocations. See [`NodePool::set_flags`].
    pub(crate) fn set_flags(&mut self, flags: Flags) {
        self.pool.set_flags(flags);
    }

    /// Limits the nodes in use at once. See [`NodePool::set_limit`].
    pub(crate) fn set_limit(&mut self, limit: Option<usize>) {
        self.pool.set_limit(limit);
    }
}

impl Drop for DeviceTable {
    fn drop(&mut self) {
        // By the type invariant, this frees every node the table uses; the pool then
        // releases them all when it is dropped.
        self.table.clear(&mut self.pool);
    }
}
