// SPDX-License-Identifier: GPL-2.0

//! The IOVA domain: the range tree of [`crate::core_alloc`] behind a lock, fronted by
//! per-CPU magazines for every power-of-two size from one page to 1 GiB.
//!
//! The shape follows iova.c (`init_iova_domain`, `alloc_iova_fast`, `free_iova_fast`,
//! `reserve_iova`, `put_iova_domain`) and its caching follows Bonwick's vmem magazines,
//! which iova.c's "rcache" also implements, but only for sizes up to 32 pages:
//!
//! - each CPU holds a `loaded` and a `prev` magazine per order (size class);
//! - a global depot holds full magazines per order;
//! - a miss in both goes to the range tree.
//!
//! # Locking
//!
//! Lock order (outermost first):
//!
//! 1. the current CPU's [`CpuCache`] ([`PerCpu::with_local_preempt`]: preemption off,
//!    interrupts on; an interrupt handler on this CPU that calls in meanwhile finds the
//!    cache busy and uses the tree, so no other code touches this CPU's cache);
//! 2. at most one of: the depot lock, the tree lock.
//!
//! No two spinlocks are ever held together; the live set takes no lock at all. When a CPU
//! goes offline, the CPU hotplug callback ([`Hotplug`], [`DomainCore::cpu_dead`]) empties
//! that CPU's magazines into the tree from another CPU: the dead CPU runs nothing, and
//! CPU hotplug excludes [`DomainCore::drain`] and [`DomainCore::stats`], so nothing else
//! touches its cache meanwhile.
//!
//! Every spinlock is taken with local interrupts disabled (`cpu::with_irqsave`, as
//! `spin_lock_irqsave` does), so [`DomainCore::alloc`] and [`DomainCore::free`] may be
//! called from any context, hardirq included. They never allocate memory and never sleep:
//! all storage (tree nodes, live-set slots, magazines, depot) is allocated up front by
//! [`Domain::new`], which sleeps (process context only: it allocates with the caller's
//! flags, which must allow sleeping, and takes the CPU hotplug lock to register the
//! domain). [`DomainCore::drain`] and [`DomainCore::stats`] visit every CPU in process
//! context ([`PerCpu::run_on_each_cpu`]) and must be called from process context.
//! `spinlock_t` with interrupts disabled is wrong on `PREEMPT_RT`, hence
//! `depends on !PREEMPT_RT`.
//!
//! # Validation
//!
//! A range parked in a magazine is still allocated in the tree, so the tree cannot tell
//! whether a free of a cacheable size is legitimate. Every allocation of a cacheable size
//! is therefore recorded in a lock-free [`LiveSet`], live while the caller holds it and
//! *parked* while it sits in a magazine. [`DomainCore::free`] parks it (one compare-and-swap)
//! and refuses with `EINVAL` a `(pfn, size)` it does not find live; the magazine keeps
//! the slot's handle beside the pfn, so an allocation from a magazine makes it live again
//! with a plain store at that slot (no search, no atomic read-modify-write: only the CPU
//! holding the magazine may). Other sizes are validated by the tree itself. A double free
//! or a free of a range never allocated is an error, never corruption; of two concurrent
//! frees of one range exactly one succeeds.

use crate::core_alloc::{self, IovaAllocator, Node};
use crate::liveset::{self, Handle, LiveSet};
use core::ops::Deref;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use kernel::aikrs::{
    cpu,
    cpuhp::{CpuDead, DeadCpu, DeadState, Instance, StateId},
    percpu::{PerCpu, ZeroInit},
};
use kernel::alloc::Flags;
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::SpinLock;

/// Largest cached order: 2^18 pages, 1 GiB with 4 KiB pages.
pub(crate) const MAX_CACHED_ORDER: u32 = 18;
const ORDERS: usize = MAX_CACHED_ORDER as usize + 1;
/// Ranges per magazine (iova.c: 127, for sizes up to 32 pages only).
const MAG_SIZE: usize = 64;
/// Full magazines the depot keeps per order (iova.c: 32).
const DEPOT_MAGS: usize = 16;
/// Separate reserved ranges the tree storage is sized for, beyond `max_live`.
const MAX_RESERVED: usize = 64;

/// Parameters of a [`Domain`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Lowest allocatable pfn (iova.c's `start_pfn`).
    pub(crate) start: u64,
    /// Highest allocatable pfn; allocations also take a per-call limit.
    pub(crate) limit: u64,
    /// Live allocations the preallocated storage is sized for.
    pub(crate) max_live: usize,
    /// Whether to use the per-CPU magazines (off: every call goes to the tree).
    pub(crate) cache: bool,
}

/// Converts a core error into an errno: `ENOSPC` when nothing fits, `ENOMEM` when the
/// preallocated storage is exhausted, `EBUSY` for a reservation over a live range,
/// `EINVAL` for bad arguments and bad frees.
fn errno(e: core_alloc::Error) -> Error {
    match e {
        core_alloc::Error::InvalidArgument | core_alloc::Error::NotAllocated => EINVAL,
        core_alloc::Error::NoSpace => ENOSPC,
        core_alloc::Error::NoNodes => ENOMEM,
        core_alloc::Error::Busy => EBUSY,
    }
}

/// A stack of cached pfns of one order, each with the live-set handle of its parked
/// entry (`hs[i]` belongs to `pfns[i]`).
#[derive(Clone, Copy)]
struct Magazine {
    n: usize,
    pfns: [u64; MAG_SIZE],
    hs: [u32; MAG_SIZE],
}

impl Magazine {
    const EMPTY: Magazine = Magazine {
        n: 0,
        pfns: [0; MAG_SIZE],
        hs: [0; MAG_SIZE],
    };

    /// Pops a pfn whose range `[pfn, pfn + size)` ends at or below `limit`: the top one if
    /// it qualifies, else the first that does (a bounded scan of one magazine, as iova.c's
    /// `iova_magazine_pop`).
    fn pop(&mut self, size: u64, limit: u64) -> Option<(u64, Handle)> {
        let n = self.n.min(MAG_SIZE);
        let fits = |p: &u64| p.checked_add(size - 1).is_some_and(|last| last <= limit);
        let i = (0..n).rev().find(|&i| self.pfns.get(i).is_some_and(fits))?;
        let pfn = *self.pfns.get(i)?;
        let h = *self.hs.get(i)?;
        // Fill the hole with the top entry.
        let (top, top_h) = (*self.pfns.get(n - 1)?, *self.hs.get(n - 1)?);
        if let (Some(p), Some(hh)) = (self.pfns.get_mut(i), self.hs.get_mut(i)) {
            *p = top;
            *hh = top_h;
        }
        self.n = n - 1;
        Some((pfn, Handle::from_raw(h)))
    }

    fn push(&mut self, pfn: u64, h: Handle, cap: usize) -> bool {
        if self.n >= cap.min(MAG_SIZE) {
            return false;
        }
        match (self.pfns.get_mut(self.n), self.hs.get_mut(self.n)) {
            (Some(p), Some(hh)) => {
                *p = pfn;
                *hh = h.raw();
                self.n += 1;
                true
            }
            _ => false,
        }
    }

    fn entries(&self) -> &[u64] {
        self.pfns.get(..self.n.min(MAG_SIZE)).unwrap_or(&[])
    }

    fn handles(&self) -> &[u32] {
        self.hs.get(..self.n.min(MAG_SIZE)).unwrap_or(&[])
    }
}

/// Per-CPU statistics of the cached path.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct CpuStats {
    /// Allocations of a cacheable size.
    pub(crate) allocs: u64,
    /// Frees of a cacheable size accepted.
    pub(crate) frees: u64,
    /// Allocations served by this CPU's magazines.
    pub(crate) hits: u64,
    /// Allocations served by a full magazine from the depot.
    pub(crate) depot_hits: u64,
}

/// The per-CPU state: two magazines per order and counters.
#[derive(Clone, Copy)]
struct CpuCache {
    loaded: [Magazine; ORDERS],
    prev: [Magazine; ORDERS],
    stats: CpuStats,
}

// SAFETY: `CpuCache` is plain integers and arrays of them; all-zeroes is empty magazines
// and zero counters.
unsafe impl ZeroInit for CpuCache {}

// The per-CPU allocator refuses units above 32 KiB (`PCPU_MIN_UNIT_SIZE`); `PerCpu` adds a
// flag word.
const _: () = assert!(core::mem::size_of::<CpuCache>() + 8 <= 32 << 10);

/// Full magazines shared by all CPUs, per order.
struct Depot {
    /// `ORDERS * DEPOT_MAGS` magazines; order `k` owns `k * DEPOT_MAGS ..`.
    mags: KVVec<Magazine>,
    full: [usize; ORDERS],
}

impl Depot {
    fn put(&mut self, k: usize, m: &Magazine) -> bool {
        let Some(&n) = self.full.get(k) else {
            return false;
        };
        if n >= DEPOT_MAGS {
            return false;
        }
        match self.mags.get_mut(k * DEPOT_MAGS + n) {
            Some(slot) => {
                *slot = *m;
                self.full[k] = n + 1;
                true
            }
            None => false,
        }
    }

    fn take(&mut self, k: usize, into: &mut Magazine) -> bool {
        let Some(&n) = self.full.get(k) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        match self.mags.get(k * DEPOT_MAGS + n - 1) {
            Some(m) => {
                *into = *m;
                self.full[k] = n - 1;
                true
            }
            None => false,
        }
    }
}

/// The range tree and the counters of calls that reach it.
struct Tree {
    alloc: IovaAllocator<KVVec<Node>>,
    allocs: u64,
    frees: u64,
    failed: u64,
    bad_frees: u64,
}

/// A snapshot of a domain's state and counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DomainStats {
    /// The range tree's view (magazine contents count as allocated).
    pub(crate) tree: core_alloc::Stats,
    /// Per-CPU counters summed over the online CPUs.
    pub(crate) cpu: CpuStats,
    /// Allocations that reached the tree and succeeded.
    pub(crate) tree_allocs: u64,
    /// Frees that reached the tree and succeeded.
    pub(crate) tree_frees: u64,
    /// Allocations that failed (no space or no storage).
    pub(crate) failed: u64,
    /// Frees refused (double free, never allocated, wrong size).
    pub(crate) bad_frees: u64,
    /// Ranges parked in magazines (per-CPU and depot).
    pub(crate) cached: u64,
    /// Live-set entries held by callers (allocations of a cacheable size handed out
    /// and not freed).
    pub(crate) live: u64,
    /// Live-set entries parked in magazines (equal to `cached` when nothing runs
    /// concurrently).
    pub(crate) parked: u64,
    /// Cached ranges taken out of circulation (0 unless an invariant broke).
    pub(crate) lost: u64,
}

/// A large-region IOVA domain: `[start, limit]` in pages of the caller's granule. Its
/// state and methods are those of [`DomainCore`] (`Deref`), kept at a fixed address on the
/// heap so that CPU hotplug can reach it: when a CPU goes offline, the ranges in its
/// magazines go back to the tree ([`Hotplug`]).
pub(crate) struct Domain {
    /// Registered with the module's hotplug state (`None` only under the planted bug of
    /// [`Hotplug::setup`]). Declared first: unregistered before `inner` is freed.
    _hotplug: Option<Instance<DomainCore>>,
    inner: KBox<DomainCore>,
}

impl Deref for Domain {
    type Target = DomainCore;

    fn deref(&self) -> &DomainCore {
        &self.inner
    }
}

impl Domain {
    /// Creates a domain, allocating all its storage with `flags`, and registers it for
    /// CPU hotplug.
    ///
    /// Process context only: it sleeps whatever `flags` says (the registration takes the
    /// CPU hotplug lock and a mutex, and allocates its small node with `GFP_KERNEL`).
    /// `flags` must therefore allow sleeping: `GFP_KERNEL`, or `GFP_KERNEL_ACCOUNT` and/or
    /// `__GFP_NOWARN` for a domain sized by user space (`/dev/aikrs_iova`). Atomic flags
    /// would not make it callable from atomic context.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad [`Config`] or if the module's [`Hotplug`] state is not set up;
    /// `ENOMEM`.
    pub(crate) fn new(cfg: Config, flags: Flags) -> Result<Self> {
        let inner = KBox::new(DomainCore::new(cfg, flags)?, flags)?;
        let hotplug = match HOTPLUG_STATE.load(Ordering::Acquire) {
            NO_STATE => return Err(EINVAL),
            PLANTED => None,
            id => {
                let target: *const DomainCore = &*inner;
                // SAFETY: `Hotplug::setup` stored `id` from its `DeadState<DomainCore>`,
                // which the module keeps until exit, after every domain is gone (see
                // `Hotplug`). The core is boxed (it never moves) and freed only after
                // the instance, which is declared before it; until then it is only
                // reached through `Deref` (`&DomainCore`), never mutably borrowed.
                Some(unsafe { Instance::new(StateId::from_raw(id), target)? })
            }
        };
        Ok(Self {
            _hotplug: hotplug,
            inner,
        })
    }
}

/// [`HOTPLUG_STATE`] before [`Hotplug::setup`] and after its drop.
const NO_STATE: i32 = 0;
/// [`HOTPLUG_STATE`] under the planted bug: domains do not register.
const PLANTED: i32 = -1;

/// The number of the module's CPU hotplug state (`StateId::raw`, always positive), or
/// [`NO_STATE`], or [`PLANTED`].
static HOTPLUG_STATE: AtomicI32 = AtomicI32::new(NO_STATE);

/// The CPU hotplug state every [`Domain`] registers with: when a CPU goes offline, the
/// ranges in its magazines go back to the tree (iova.c: `CPUHP_IOMMU_IOVA_DEAD`,
/// `iova_cpuhp_dead`). Without it they would be out of reach until the CPU comes back:
/// neither [`DomainCore::drain`] nor an allocation's flush (`flush_local_and_depot`)
/// visits an offline CPU, so an allocation could fail with `ENOSPC` while free space sits
/// in a dead CPU's magazines.
///
/// Module init sets it up before it creates any domain, and the module drops it at exit,
/// after the last domain (the benchmark's demo domain and the test device's domains are
/// gone by then; KUnit suites run between init and exit).
pub(crate) struct Hotplug {
    /// `None` under the planted bug.
    _state: Option<DeadState<DomainCore>>,
}

impl Hotplug {
    /// Sets up the state. With `aikrs.planted_bug=iova_hotplug` on the command line it
    /// does not, on purpose, and domains do not register: a negative control for the
    /// guest's CPU hotplug test, which must then see `ENOSPC` with ranges left in an
    /// offline CPU's magazines.
    ///
    /// # Safety
    ///
    /// The result must be dropped before the module's code and data go away: module init
    /// keeps it in the module struct, which module exit drops (see [`DeadState::new`]).
    pub(crate) unsafe fn setup() -> Result<Self> {
        if kernel::aikrs::compat::cmdline_is("aikrs.planted_bug", "iova_hotplug") {
            pr_info!("not emptying offline CPUs' magazines, on purpose (aikrs.planted_bug)\n");
            HOTPLUG_STATE.store(PLANTED, Ordering::Release);
            return Ok(Self { _state: None });
        }
        // SAFETY: The state goes into the returned value, which our caller drops before
        // the module goes (our contract).
        let state = unsafe { DeadState::new(c"aikrs/iova:dead")? };
        HOTPLUG_STATE.store(state.id().raw(), Ordering::Release);
        Ok(Self {
            _state: Some(state),
        })
    }
}

impl Drop for Hotplug {
    fn drop(&mut self) {
        HOTPLUG_STATE.store(NO_STATE, Ordering::Release);
        // Then the field removes the state (no instance is left: see above).
    }
}

/// The state and operations of a [`Domain`].
///
/// # Invariants
///
/// Every range in a magazine or in the depot is allocated in `tree`, has a cacheable size
/// `2^k` (`caps[k] > 0`) and is parked in the live set at the handle stored beside it;
/// every allocation handed to a caller and not yet freed whose size is cacheable is live
/// in the live set.
/// `caps[k] <= MAG_SIZE`, and all `caps` are 0 if `limit > liveset::MAX_PFN`.
pub(crate) struct DomainCore {
    start: u64,
    span: u64,
    /// Magazine capacity per order; 0 leaves the order uncached.
    caps: [usize; ORDERS],
    tree: Pin<KBox<SpinLock<Tree>>>,
    depot: Pin<KBox<SpinLock<Depot>>>,
    live: LiveSet<KVec<AtomicU64>>,
    /// Frees refused by the live set, and allocations it had no room for.
    live_bad_frees: AtomicU64,
    live_full: AtomicU64,
    /// Cached ranges taken out of circulation because their live-set entry was not where
    /// the magazine said (see `lose`; 0 unless the invariant is broken).
    lost: AtomicU64,
    cpus: PerCpu<CpuCache>,
}

impl DomainCore {
    /// Creates the state of a domain, allocating all its storage with `flags` (see
    /// [`Domain::new`]).
    fn new(cfg: Config, flags: Flags) -> Result<Self> {
        if cfg.start > cfg.limit || cfg.max_live == 0 {
            return Err(EINVAL);
        }
        // `limit == u64::MAX` is refused by the tree as well.
        let span = (cfg.limit - cfg.start).checked_add(1).ok_or(EINVAL)?;
        let nodes = KVVec::from_elem(
            Node::EMPTY,
            IovaAllocator::<KVVec<Node>>::nodes_needed(cfg.max_live, MAX_RESERVED),
            flags,
        )?;
        let alloc = IovaAllocator::new(nodes, cfg.start, cfg.limit).map_err(errno)?;
        let tree = KBox::pin_init(
            new_spinlock!(
                Tree {
                    alloc,
                    allocs: 0,
                    frees: 0,
                    failed: 0,
                    bad_frees: 0,
                },
                "aikrs_iova_tree"
            ),
            flags,
        )?;
        let depot = KBox::pin_init(
            new_spinlock!(
                Depot {
                    mags: KVVec::from_elem(Magazine::EMPTY, ORDERS * DEPOT_MAGS, flags)?,
                    full: [0; ORDERS],
                },
                "aikrs_iova_depot"
            ),
            flags,
        )?;
        // Physically contiguous (kmalloc, not kvmalloc): with a vmalloc fallback the live
        // set cost four times as much per insert + remove on 7.3 under TCG (soft-TLB misses
        // over 4 KiB mappings). A domain for 64 Ki live ranges needs 1 MiB here; if that
        // fails, `new` fails with `ENOMEM`.
        let mut slots = KVec::with_capacity(
            LiveSet::<KVec<AtomicU64>>::slots_needed(cfg.max_live),
            flags,
        )?;
        while slots.len() < slots.capacity() {
            slots.push(AtomicU64::new(liveset::EMPTY), flags)?;
        }
        let live = LiveSet::new(slots).map_err(|_| EINVAL)?;
        let mut caps = [0; ORDERS];
        if cfg.cache && cfg.limit <= liveset::MAX_PFN {
            for (k, c) in caps.iter_mut().enumerate() {
                // Keep what magazines may hold per CPU and order to span/256, so small
                // domains are not hoarded by caches of huge ranges.
                let fit = span >> (k as u32 + 8);
                *c = usize::try_from(fit).unwrap_or(MAG_SIZE).min(MAG_SIZE);
            }
        }
        let cpus = PerCpu::new(flags)?;
        // INVARIANT: caches and live set empty; caps <= MAG_SIZE.
        Ok(Self {
            start: cfg.start,
            span,
            caps,
            tree,
            depot,
            live,
            live_bad_frees: AtomicU64::new(0),
            live_full: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            cpus,
        })
    }

    /// The cached order of `size` and its magazine capacity, if it has one.
    fn cache_order(&self, size: u64) -> Option<(usize, usize)> {
        if !size.is_power_of_two() {
            return None;
        }
        let k = size.trailing_zeros() as usize;
        let cap = self.caps.get(k).copied().unwrap_or(0);
        (cap > 0).then_some((k, cap))
    }

    /// Records a live allocation of order `k`; false (counted) if the set is full.
    fn record(&self, pfn: u64, k: usize) -> bool {
        let ok = self.live.insert(pfn, k as u32).is_ok();
        if !ok {
            self.live_full.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// One try at the tree. A failure is not counted here: the caller may retry
    /// (`alloc` flushes the caches first) and counts the call's failure with
    /// [`Self::count_failed`] only if that fails too.
    fn tree_alloc(&self, size: u64, limit: u64) -> Result<u64, core_alloc::Error> {
        cpu::with_irqsave(&self.tree, |t| {
            let r = t.alloc.alloc(size, limit);
            if r.is_ok() {
                t.allocs += 1;
            }
            r
        })
    }

    /// Counts an allocation that failed (once per `alloc` call).
    fn count_failed(&self) {
        cpu::with_irqsave(&self.tree, |t| t.failed += 1);
    }

    /// Returns the ranges of a magazine of order `k` to the tree, dropping their parked
    /// live-set entries.
    fn release(&self, m: &Magazine, k: usize) {
        for (&p, &h) in m.entries().iter().zip(m.handles()) {
            self.release_one(p, Handle::from_raw(h), k);
        }
    }

    /// Returns one parked range of order `k` to the tree, dropping its live-set entry.
    fn release_one(&self, pfn: u64, h: Handle, k: usize) {
        if self.live.drop_parked(h, pfn, k as u32).is_ok() {
            self.tree_free_all(&[pfn], 1u64 << k);
        } else {
            self.lose(pfn);
        }
    }

    /// A cached range whose live-set entry is not where its magazine says (impossible by
    /// the type invariant): its state is unknown, so it is never handed out or freed to
    /// the tree again (a caller may hold it). Counted and warned about once.
    #[cold]
    fn lose(&self, pfn: u64) {
        if self.lost.fetch_add(1, Ordering::Relaxed) == 0 {
            pr_warn!(
                "aikrs_iova: cached range {:#x} not parked in the live set; leaked\n",
                pfn
            );
        }
    }

    /// Frees ranges allocated in the tree (none of them in the live set).
    fn tree_free_all(&self, pfns: &[u64], size: u64) {
        if pfns.is_empty() {
            return;
        }
        cpu::with_irqsave(&self.tree, |t| {
            for &p in pfns {
                match t.alloc.free(p, size) {
                    Ok(()) => t.frees += 1,
                    // Unreachable by the type invariant; counted, never fatal.
                    Err(_) => t.bad_frees += 1,
                }
            }
        });
    }

    /// Allocates `size` pages, aligned to `size` rounded up to a power of two, ending at or
    /// below `limit` (clipped to the domain), top-down. Returns the first pfn.
    ///
    /// Never sleeps or allocates; callable from any context.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a zero size, a size above the domain or a limit below its start;
    /// `ENOSPC` if no suitable range is free; `ENOMEM` if the preallocated storage is
    /// exhausted (more live allocations than [`Config::max_live`]).
    pub(crate) fn alloc(&self, size: u64, limit: u64) -> Result<u64> {
        if size == 0 || size > self.span || limit < self.start {
            return Err(EINVAL);
        }
        let Some((k, _)) = self.cache_order(size) else {
            return self.tree_alloc(size, limit).map_err(|e| {
                self.count_failed();
                errno(e)
            });
        };
        // Fast path: this CPU's magazines (or a full one from the depot) and the live set,
        // in one preemption-off section (interrupts stay on: saving and restoring them
        // was the largest cost of this path); the depot lock is taken irqsave in it.
        let cached = self
            .cpus
            .with_local_preempt(|c| -> Option<Result<u64>> {
                c.stats.allocs += 1;
                let (loaded, prev) = (c.loaded.get_mut(k)?, c.prev.get_mut(k)?);
                let mut from_depot = false;
                let mut pfn = loaded.pop(size, limit);
                if pfn.is_none() && prev.n > 0 {
                    core::mem::swap(loaded, prev);
                    pfn = loaded.pop(size, limit);
                }
                if pfn.is_none()
                    && loaded.n == 0
                    && cpu::with_irqsave(&self.depot, |d| d.take(k, loaded))
                {
                    from_depot = true;
                    pfn = loaded.pop(size, limit);
                }
                let (pfn, h) = pfn?;
                if self.live.unpark(h, pfn, k as u32).is_err() {
                    // Not parked where the magazine says: leave it out of circulation;
                    // the tree serves this call.
                    self.lose(pfn);
                    return None;
                }
                if from_depot {
                    c.stats.depot_hits += 1;
                } else {
                    c.stats.hits += 1;
                }
                Some(Ok(pfn))
            })
            .flatten();
        if let Some(r) = cached {
            return r;
        }
        // Slow path: the tree.
        let pfn = match self.tree_alloc(size, limit) {
            Ok(p) => p,
            Err(core_alloc::Error::NoSpace) => {
                // Ranges parked in this CPU's magazines and in the depot may be what is
                // missing (iova.c's `flush_rcache`); other CPUs' caches are only reachable
                // from process context, see `drain`.
                self.flush_local_and_depot();
                self.tree_alloc(size, limit).map_err(|e| {
                    self.count_failed();
                    errno(e)
                })?
            }
            Err(e) => {
                self.count_failed();
                return Err(errno(e));
            }
        };
        if self.record(pfn, k) {
            Ok(pfn)
        } else {
            // No room to track it: give it back to the tree and fail cleanly.
            self.tree_free_all(&[pfn], size);
            Err(ENOMEM)
        }
    }

    /// Frees `[pfn, pfn + size)`, which must be exactly one live allocation of this
    /// domain. Never sleeps or allocates; callable from any context.
    ///
    /// # Errors
    ///
    /// `EINVAL` (and nothing changes) for a zero size, a double free, a range never
    /// allocated, a wrong size, or a reserved range.
    pub(crate) fn free(&self, pfn: u64, size: u64) -> Result {
        if size == 0 {
            return Err(EINVAL);
        }
        let Some((k, cap)) = self.cache_order(size) else {
            return cpu::with_irqsave(&self.tree, |t| match t.alloc.free(pfn, size) {
                Ok(()) => {
                    t.frees += 1;
                    Ok(())
                }
                Err(e) => {
                    t.bad_frees += 1;
                    Err(errno(e))
                }
            });
        };
        // Validate first: exactly one of concurrent frees of a live range parks it.
        let Ok(h) = self.live.park(pfn, k as u32) else {
            self.live_bad_frees.fetch_add(1, Ordering::Relaxed);
            return Err(EINVAL);
        };
        // Fast path: put the range in this CPU's magazines, preemption off (see `alloc`).
        let parked = self.cpus.with_local_preempt(|c| {
            let (Some(loaded), Some(prev)) = (c.loaded.get_mut(k), c.prev.get_mut(k)) else {
                return false;
            };
            c.stats.frees += 1;
            if loaded.push(pfn, h, cap) {
                return true;
            }
            if prev.n < cap {
                core::mem::swap(loaded, prev);
                return loaded.push(pfn, h, cap);
            }
            // Both full: the older one goes to the depot, or back to the tree.
            if !cpu::with_irqsave(&self.depot, |d| d.put(k, prev)) {
                self.release(prev, k);
            }
            prev.n = 0;
            core::mem::swap(loaded, prev);
            loaded.push(pfn, h, cap)
        });
        if parked != Some(true) {
            // This CPU's cache is busy further up the stack (an interrupt, or re-entry):
            // straight back to the tree.
            self.release_one(pfn, h, k);
        }
        Ok(())
    }

    /// Reserves `[lo, hi]` (clipped to the domain) so that it is never allocated.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `hi < lo`; `EBUSY` if the range overlaps a live allocation (or one
    /// parked in a cache: call [`DomainCore::drain`] first); `ENOMEM` if storage is exhausted.
    pub(crate) fn reserve(&self, lo: u64, hi: u64) -> Result {
        cpu::with_irqsave(&self.tree, |t| t.alloc.reserve(lo, hi)).map_err(errno)
    }

    /// The live allocation containing `pfn`, as `(start, size)`; ranges parked in caches
    /// count as allocated.
    pub(crate) fn find(&self, pfn: u64) -> Option<(u64, u64)> {
        cpu::with_irqsave(&self.tree, |t| t.alloc.find(pfn))
    }

    fn flush_cache(&self, c: &mut CpuCache) {
        for (k, (l, p)) in c.loaded.iter_mut().zip(c.prev.iter_mut()).enumerate() {
            self.release(l, k);
            self.release(p, k);
            l.n = 0;
            p.n = 0;
        }
    }

    fn flush_depot(&self) {
        let mut m = Magazine::EMPTY;
        for k in 0..ORDERS {
            while cpu::with_irqsave(&self.depot, |d| d.take(k, &mut m)) {
                self.release(&m, k);
            }
        }
    }

    fn flush_local_and_depot(&self) {
        let _ = self.cpus.with_local(|c| self.flush_cache(c));
        self.flush_depot();
    }

    /// Runs `f` while this CPU's cache is in use, as an interrupt arriving mid-section
    /// would find it (`None` if it already was). For tests of the busy fallbacks.
    #[cfg(CONFIG_AIKRS_IOVA_KUNIT_TEST)]
    pub(crate) fn with_cache_busy<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        self.cpus.with_local_preempt(|_| f())
    }

    /// Returns every cached range (all CPUs, each on its own CPU, and the depot) to the
    /// tree.
    /// Process context only.
    pub(crate) fn drain(&self) {
        self.cpus.run_on_each_cpu(&|c| self.flush_cache(c));
        self.flush_depot();
    }

    /// Times the pieces of the cached fast path, `n` times each, in nanoseconds per
    /// iteration: (per-CPU section with preemption off, irq-safe spinlock round-trip,
    /// live-set park + unpark, magazine push + pop). For the benchmark's breakdown.
    #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
    pub(crate) fn fast_path_costs(&self, n: u32) -> [i64; 4] {
        let per = |t0: i64| (cpu::ktime_ns() - t0) / i64::from(n.max(1));
        let t0 = cpu::ktime_ns();
        for _ in 0..n {
            let _ = self.cpus.with_local_preempt(|c| c.stats.allocs);
        }
        let a = per(t0);
        let t0 = cpu::ktime_ns();
        for _ in 0..n {
            cpu::with_irqsave(&self.depot, |d| d.full[0]);
        }
        let b = per(t0);
        // A free parks, an allocation from a magazine unparks: one of each per pair.
        let p = 1u64 << 40;
        let _ = self.live.insert(p, 0);
        let t0 = cpu::ktime_ns();
        for _ in 0..n {
            if let Ok(h) = self.live.park(p, 0) {
                let _ = self.live.unpark(h, p, 0);
            }
        }
        let c = per(t0);
        let _ = self.live.remove(p, 0);
        let mut m = Magazine::EMPTY;
        let t0 = cpu::ktime_ns();
        for i in 0..n {
            m.push(u64::from(i), Handle::from_raw(i), MAG_SIZE);
            let _ = core::hint::black_box(m.pop(1, u64::MAX));
        }
        let d = per(t0);
        [a, b, c, d]
    }

    /// A snapshot of the counters (per-CPU ones collected on each CPU). Process context
    /// only.
    pub(crate) fn stats(&self) -> DomainStats {
        let c = [const { AtomicU64::new(0) }; 5];
        self.cpus.run_on_each_cpu(&|cc| {
            let cached: usize = cc
                .loaded
                .iter()
                .zip(cc.prev.iter())
                .map(|(l, p)| l.n + p.n)
                .sum();
            for (a, v) in c.iter().zip([
                cc.stats.allocs,
                cc.stats.frees,
                cc.stats.hits,
                cc.stats.depot_hits,
                cached as u64,
            ]) {
                a.fetch_add(v, Ordering::Relaxed);
            }
        });
        let [allocs, frees, hits, depot_hits, cached] = c.map(|a| a.into_inner());
        let mut st = DomainStats {
            cpu: CpuStats {
                allocs,
                frees,
                hits,
                depot_hits,
            },
            cached,
            ..DomainStats::default()
        };
        cpu::with_irqsave(&self.depot, |d| {
            for (k, &n) in d.full.iter().enumerate() {
                for i in 0..n {
                    st.cached += d
                        .mags
                        .get(k * DEPOT_MAGS + i)
                        .map_or(0, |m| m.entries().len() as u64);
                }
            }
        });
        cpu::with_irqsave(&self.tree, |t| {
            st.tree = t.alloc.stats();
            st.tree_allocs = t.allocs;
            st.tree_frees = t.frees;
            st.failed = t.failed;
            st.bad_frees = t.bad_frees;
        });
        st.bad_frees += self.live_bad_frees.load(Ordering::Relaxed);
        st.failed += self.live_full.load(Ordering::Relaxed);
        st.lost = self.lost.load(Ordering::Relaxed);
        st.live = self.live.count() as u64;
        st.parked = self.live.parked() as u64;
        st
    }
}

impl CpuDead for DomainCore {
    /// The dead CPU's magazines go back to the tree (iova.c's `free_cpu_cached_iovas`
    /// from `iova_cpuhp_dead`): nothing else could reach them until the CPU comes back.
    /// Runs in process context with CPU hotplug held off; takes the tree lock, nothing
    /// else (no `cpus_read_lock`: not [`DomainCore::drain`]).
    fn cpu_dead(&self, cpu: &DeadCpu) {
        let _ = self.cpus.with_dead_cpu(cpu, |c| self.flush_cache(c));
        // The core calls this once per domain (one per open file) with the hotplug lock
        // held for writing: let others run between domains (sleeping is allowed here).
        cpu::cond_resched();
    }
}
