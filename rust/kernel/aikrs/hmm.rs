// SPDX-License-Identifier: GPL-2.0

//! Mirroring a process address space into a device (C `<linux/mmu_notifier.h>`,
//! `<linux/hmm.h>`; see `Documentation/mm/hmm.rst`).
//!
//! A device that mirrors CPU page tables must never keep, or install, a translation that
//! the CPU side has already dropped. The kernel's protocol for this is the sequence count
//! of an `mmu_interval_notifier`:
//!
//! 1. `mmu_interval_read_begin()` samples the sequence;
//! 2. `hmm_range_fault()` under the `mmap_lock` (read) reads (and faults in) the CPU
//!    page tables of the range;
//! 3. under the driver's lock, `mmu_interval_read_retry()` tells whether an invalidation
//!    began since step 1; if so, start over, else install the entries;
//! 4. the invalidate callback takes the same lock, moves the sequence
//!    (`mmu_interval_set_seq()`) and removes the device's entries of the range.
//!
//! [`Mirror`] makes that protocol the only way in: it owns the notifier, the lock (a C
//! `struct mutex`) and the driver's state `T` behind it. The callback takes the lock and
//! moves the sequence itself before it calls [`MirrorOps::invalidate`]; and
//! [`Mirror::range_fault`] hands the entries to its `commit` closure only under the lock
//! and only when no invalidation raced with the walk. A driver cannot skip a step.
//!
//! While the lock is held, allocations do not enter direct reclaim
//! (`memalloc_noreclaim_save()`, as amdgpu does around its page-table updates): reclaim
//! unmaps pages, which invalidates, which waits for this lock.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{code::*, Error, Result},
};
use core::{cell::UnsafeCell, ffi::c_void, marker::PhantomPinned, pin::Pin};

/// The page size of the mirror (the CPU's base page).
pub const PAGE_SIZE: usize = 4096;

/// How long [`Mirror::range_fault`] keeps retrying a range that invalidations keep
/// hitting before it gives up with `EBUSY` (C `HMM_RANGE_DEFAULT_TIMEOUT`, ms).
pub const RANGE_TIMEOUT_MS: i64 = 1000;

// The `hmm_pfn_flags` bits (`HMM_PFN_*`). Bindgen gives these enum constants the
// type of the enum, which is `usize` on the supported kernels; the casts keep that an
// assumption checked at compile time rather than a silent truncation.
#[allow(clippy::unnecessary_cast)]
const PFN_VALID: usize = bindings::hmm_pfn_flags_HMM_PFN_VALID as usize;
#[allow(clippy::unnecessary_cast)]
const PFN_WRITE: usize = bindings::hmm_pfn_flags_HMM_PFN_WRITE as usize;
#[allow(clippy::unnecessary_cast)]
const PFN_ERROR: usize = bindings::hmm_pfn_flags_HMM_PFN_ERROR as usize;
#[allow(clippy::unnecessary_cast)]
const PFN_FLAGS: usize = bindings::hmm_pfn_flags_HMM_PFN_FLAGS as usize;
#[allow(clippy::unnecessary_cast)]
const PFN_REQ_FAULT: usize = bindings::hmm_pfn_flags_HMM_PFN_REQ_FAULT as usize;
#[allow(clippy::unnecessary_cast)]
const PFN_REQ_WRITE: usize = bindings::hmm_pfn_flags_HMM_PFN_REQ_WRITE as usize;

/// An invalidation of part of a mirrored address space, as
/// [`MirrorOps::invalidate`] sees it.
pub struct Invalidation {
    start: usize,
    end: usize,
    event: u32,
}

impl Invalidation {
    /// The first address of the range.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The end of the range (exclusive).
    pub fn end(&self) -> usize {
        self.end
    }

    /// Whether the whole address space is going away (`MMU_NOTIFY_RELEASE`: the process
    /// exits or the last user of the `mm` left).
    pub fn is_release(&self) -> bool {
        self.event == bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE
    }
}

/// The state of a device mirror, kept behind the lock of its [`Mirror`].
pub trait MirrorOps: Send + Sized {
    /// Removes the device's translations of `[inv.start(), inv.end())` (the CPU page
    /// tables of the range are about to change). Called with the lock held, after the
    /// sequence moved: a fault in flight over the range will not commit. Must not sleep
    /// for long: it may run from reclaim; and it must not allocate memory that could
    /// need reclaim (the lock holder already runs without it).
    fn invalidate(&mut self, inv: &Invalidation);
}

/// A C `struct mutex` that lives in a pinned [`Mirror`].
struct RawMutex(UnsafeCell<bindings::mutex>);

/// A mirror of (a range of) the address space of the process that created it: the
/// interval notifier, the lock, and the driver's state `T` behind that lock.
///
/// # Invariants
///
/// - `mni` is inserted into the `mm` (and holds a reference on it, `mmgrab`) from
///   [`Mirror::new`] until [`Drop`], which removes it; `mni` is the first field
///   (`repr(C)`), so the callback's pointer to it is a pointer to the whole.
/// - `lock` is initialised; `state` is only accessed with `lock` held.
/// - `owner` is the `dev_private_owner` the mirror passes to `hmm_range_fault()`.
///
/// Every invalidation reaches [`MirrorOps::invalidate`], including those a migration of
/// the mirror's own device raises (`MMU_NOTIFY_MIGRATE`; the C test driver skips those
/// and patches its table by hand). The one exception is `MMU_NOTIFY_EXCLUSIVE` raised
/// for the mirror's own owner (see `invalidate_cb`). Entries are installed only under
/// a sequence check ([`Mirror::range_fault`], [`Mirror::commit`]).
#[repr(C)]
pub struct Mirror<T: MirrorOps> {
    mni: UnsafeCell<bindings::mmu_interval_notifier>,
    lock: RawMutex,
    state: UnsafeCell<T>,
    owner: *mut c_void,
    _pin: PhantomPinned,
}

// SAFETY: The state is only reached under the lock (type invariant), and `T: Send`; the
// notifier and the lock are C objects made for use from any thread; `owner` is only an
// identifier compared by address.
unsafe impl<T: MirrorOps> Send for Mirror<T> {}
// SAFETY: As above: shared access goes through the lock.
unsafe impl<T: MirrorOps> Sync for Mirror<T> {}

/// The state of a [`Mirror`] while its lock is held.
///
/// While it exists, allocations of this task do not enter direct reclaim (see the
/// module documentation).
pub struct MirrorGuard<'a, T: MirrorOps> {
    mirror: &'a Mirror<T>,
    noreclaim: u32,
}

impl<T: MirrorOps> core::ops::Deref for MirrorGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The guard holds the lock.
        unsafe { &*self.mirror.state.get() }
    }
}

impl<T: MirrorOps> core::ops::DerefMut for MirrorGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The guard holds the lock, and `&mut self` makes this the only reference
        // through it.
        unsafe { &mut *self.mirror.state.get() }
    }
}

/// The state of a [`Mirror`] while its lock is held, for reading only: what
/// [`Mirror::lock`] gives. Entries are installed only through [`Mirror::range_fault`] and
/// [`Mirror::commit`], which check the sequence first.
pub struct MirrorReadGuard<'a, T: MirrorOps>(MirrorGuard<'a, T>);

impl<T: MirrorOps> core::ops::Deref for MirrorReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A sample of a [`Mirror`]'s invalidation sequence ([`Mirror::read_begin`]).
pub struct Seq(usize);

impl<T: MirrorOps> Drop for MirrorGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: Restores what `lock_mutex` saved, in this task; then releases the lock
        // this guard holds.
        unsafe {
            bindings::aikrs_memalloc_noreclaim_restore(self.noreclaim);
            bindings::aikrs_mutex_unlock(self.mirror.lock.0.get());
        }
    }
}

/// What [`Mirror::range_fault`] asks of every page of its range.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Read the CPU page tables as they are, faulting nothing in (a snapshot).
    Snapshot,
    /// Fault in every page for reading.
    Read,
    /// Fault in every page for writing (breaking copy-on-write).
    Write,
}

/// One page of a range as `hmm_range_fault()` returned it.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct HmmPfn(usize);

impl HmmPfn {
    /// Whether the CPU maps the page (`HMM_PFN_VALID`).
    pub fn is_valid(self) -> bool {
        self.0 & PFN_VALID != 0
    }

    /// Whether the CPU maps it writable (`HMM_PFN_WRITE`).
    pub fn is_write(self) -> bool {
        self.0 & PFN_WRITE != 0
    }

    /// Whether the address cannot be mapped at all (`HMM_PFN_ERROR`, a snapshot only).
    pub fn is_error(self) -> bool {
        self.0 & PFN_ERROR != 0
    }

    /// The page frame, for a valid entry.
    pub fn pfn(self) -> Option<u64> {
        // The bits below the flags (whose position differs between kernel versions).
        self.is_valid().then_some((self.0 & !PFN_FLAGS) as u64)
    }

    /// The order of the CPU mapping the page is part of: 0 for a base page, 9 for a
    /// 2 MiB PMD mapping (x86-64), 18 for a PUD mapping.
    pub fn order(self) -> u32 {
        let shift = bindings::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT as u32;
        ((self.0 >> shift) & 0x1f) as u32
    }

    /// What kind of page it is (for a valid entry). `owner` is only compared.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    pub fn kind(self, owner: *mut c_void) -> PageKind {
        let Some(pfn) = self.pfn() else {
            return PageKind::Normal;
        };
        // SAFETY: `pfn` came from `hmm_range_fault()`, so it has a `struct page`; the
        // helper only reads it. (The page may be freed meanwhile unless the caller holds
        // the mirror lock with a valid sequence; its `struct page` stays.)
        match unsafe { bindings::aikrs_pfn_kind(pfn as usize, owner) } {
            1 => PageKind::Zero,
            2 => PageKind::DevicePrivateLocal,
            3 => PageKind::DevicePrivateRemote,
            _ => PageKind::Normal,
        }
    }
}

/// The kind of a page found by `hmm_range_fault()`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageKind {
    /// System memory.
    Normal,
    /// The shared zero page (a read-only mapping of never-written anonymous memory).
    Zero,
    /// Device-private memory of the owner the mirror was created with.
    DevicePrivateLocal,
    /// Device-private memory of another owner.
    DevicePrivateRemote,
}

impl<T: MirrorOps> Mirror<T> {
    /// Mirrors `[start, start + len)` of the calling process's address space for a device
    /// whose private memory (if any) is owned by `owner` (the `dev_pagemap.owner` of its
    /// pages, used by `hmm_range_fault()` to report them instead of faulting them back).
    ///
    /// Fails with `EINVAL` in a kernel thread (no address space), or with the error of
    /// `mmu_interval_notifier_insert()`.
    pub fn new(state: T, start: usize, len: usize, owner: *mut c_void) -> Result<Pin<KBox<Self>>> {
        // SAFETY: Reads `current->mm`; NULL for a kernel thread.
        let mm = unsafe { bindings::aikrs_current_mm() };
        if mm.is_null() {
            return Err(EINVAL);
        }
        let m = KBox::new(
            Self {
                // SAFETY: All-zero is the state `mmu_interval_notifier_insert()` expects.
                mni: UnsafeCell::new(unsafe { core::mem::zeroed() }),
                // SAFETY: All-zero bytes, initialised below before any use.
                lock: RawMutex(UnsafeCell::new(unsafe { core::mem::zeroed() })),
                state: UnsafeCell::new(state),
                owner,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: The mutex is at its final address (the box does not move, and is never
        // moved out of: it is pinned below).
        unsafe { bindings::aikrs_mutex_init(m.lock.0.get()) };
        // SAFETY: `mni` is zeroed, at its final address; `mm` is the current process's,
        // which has users while it runs this; the ops table is static.
        let ret = unsafe {
            bindings::mmu_interval_notifier_insert(m.mni.get(), mm, start, len, &Self::OPS)
        };
        if ret != 0 {
            // Not inserted: free the box without running `Drop` (which would remove it),
            // dropping the state.
            let raw = KBox::into_raw(m);
            // SAFETY: `raw` is the box just leaked; nothing else refers to it (the
            // notifier is not inserted). Drop the state in place, then free the memory
            // (as `MaybeUninit`, so no destructor runs again).
            unsafe {
                core::ptr::drop_in_place((*raw).state.get());
                drop(KBox::from_raw(raw.cast::<core::mem::MaybeUninit<Self>>()));
            }
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: Inserted; the box is pinned from here on.
        Ok(Pin::from(m))
    }

    /// The `dev_private_owner` the mirror was created with.
    pub fn owner(&self) -> *mut c_void {
        self.owner
    }

    /// Takes a user reference on the mirrored address space and its `mmap_lock` for
    /// reading (for migrations); `EINVAL` if the process is gone, `EINTR` if a fatal
    /// signal arrived while waiting for the lock.
    #[cfg(CONFIG_DEVICE_PRIVATE)]
    pub fn mmap_read(&self) -> Result<crate::aikrs::devmem::MmapReadGuard> {
        // SAFETY: The notifier keeps the `mm` allocated while inserted (type invariant).
        unsafe { crate::aikrs::devmem::MmapReadGuard::new(self.mm()) }
    }

    /// The end of the mirrored address space as its process sees it (`mm->task_size`,
    /// the process's `TASK_SIZE`): every user address is below it.
    pub fn task_size(&self) -> usize {
        // SAFETY: The notifier keeps the `mm` allocated while inserted (type invariant);
        // `task_size` was set when the process started and is only read here.
        unsafe { bindings::aikrs_mm_task_size(self.mm()) }
    }

    fn mm(&self) -> *mut bindings::mm_struct {
        // SAFETY: `mni` is inserted (type invariant); its `mm` is set and grabbed.
        unsafe { bindings::aikrs_mni_mm(self.mni.get()) }
    }

    /// Takes the lock to read the state; allocations do not reclaim until the guard is
    /// dropped.
    pub fn lock(&self) -> MirrorReadGuard<'_, T> {
        MirrorReadGuard(self.lock_mut())
    }

    /// Takes the lock, for the callback and for commits whose sequence was checked.
    fn lock_mut(&self) -> MirrorGuard<'_, T> {
        // SAFETY: The lock is initialised (type invariant).
        unsafe { bindings::aikrs_mutex_lock(self.lock.0.get()) };
        self.guard()
    }

    /// Samples the invalidation sequence before the caller reads CPU state by other
    /// means than [`Mirror::range_fault`] (`make_device_exclusive`, say). Call it before
    /// taking the `mmap_lock`: it waits for invalidations in progress.
    pub fn read_begin(&self) -> Seq {
        // SAFETY: `mni` is inserted (type invariant).
        Seq(unsafe { bindings::mmu_interval_read_begin(self.mni.get()) })
    }

    /// Calls `f` with the lock held if no invalidation began since `seq` was sampled,
    /// and returns its result; `None` (nothing called) if one did: read the CPU state
    /// again.
    pub fn commit<R>(&self, seq: Seq, f: impl FnOnce(&mut MirrorGuard<'_, T>) -> R) -> Option<R> {
        let mut g = self.lock_mut();
        // SAFETY: `mni` is inserted; `seq` came from it; checked under the lock, as the
        // protocol requires.
        if unsafe { bindings::aikrs_mni_read_retry(self.mni.get(), seq.0) } {
            return None;
        }
        Some(f(&mut g))
    }

    /// Takes the lock if it is free.
    fn try_lock(&self) -> Option<MirrorGuard<'_, T>> {
        // SAFETY: The lock is initialised (type invariant).
        unsafe { bindings::aikrs_mutex_trylock(self.lock.0.get()) }.then(|| self.guard())
    }

    /// The guard of the lock the caller just took.
    fn guard(&self) -> MirrorGuard<'_, T> {
        // SAFETY: Sets `PF_MEMALLOC` on the current task; the guard restores it.
        let noreclaim = unsafe { bindings::aikrs_memalloc_noreclaim_save() };
        MirrorGuard {
            mirror: self,
            noreclaim,
        }
    }

    /// Reads the CPU page tables of `[start, start + pfns.len() pages)` into `pfns`,
    /// faulting pages in as `want` says, and calls `commit` with the lock held and the
    /// entries, once none of them can be stale: no invalidation of the mirror began
    /// since the walk started. Retries while invalidations race (up to
    /// [`RANGE_TIMEOUT_MS`], then `EBUSY`).
    ///
    /// Errors: `EINVAL` for an unaligned or empty range, `EFAULT` when the process has
    /// no users left (it exited) or a page cannot be faulted in (no vma, no permission),
    /// `EBUSY`, `EINTR` (the task is being killed while it retries), or another error of
    /// `hmm_range_fault()`. `commit` is then not called.
    pub fn range_fault<R>(
        &self,
        start: usize,
        pfns: &mut [usize],
        want: Want,
        commit: impl FnOnce(&mut MirrorGuard<'_, T>, &[HmmPfn]) -> R,
    ) -> Result<R> {
        self.range_fault_inner(start, pfns, want, false, commit)
    }

    /// As [`Mirror::range_fault`], but the walk takes the `mmap_lock` itself and lets a
    /// fault drop it (`hmm_range_fault_unlocked_timeout()`), so that a page whose fault
    /// handler must drop the lock (userfaultfd, say) can be faulted in. Where the kernel
    /// has it (`CONFIG_AIKRS_HMM_FAULT_UNLOCKED`). Also `EINTR` (a fatal signal).
    #[cfg(CONFIG_AIKRS_HMM_FAULT_UNLOCKED)]
    pub fn range_fault_unlocked<R>(
        &self,
        start: usize,
        pfns: &mut [usize],
        want: Want,
        commit: impl FnOnce(&mut MirrorGuard<'_, T>, &[HmmPfn]) -> R,
    ) -> Result<R> {
        self.range_fault_inner(start, pfns, want, true, commit)
    }

    fn range_fault_inner<R>(
        &self,
        start: usize,
        pfns: &mut [usize],
        want: Want,
        unlocked: bool,
        commit: impl FnOnce(&mut MirrorGuard<'_, T>, &[HmmPfn]) -> R,
    ) -> Result<R> {
        let len = pfns.len().checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        let end = start.checked_add(len).ok_or(EINVAL)?;
        if start % PAGE_SIZE != 0 || len == 0 {
            return Err(EINVAL);
        }
        let default_flags = match want {
            Want::Snapshot => 0,
            Want::Read => PFN_REQ_FAULT,
            Want::Write => PFN_REQ_FAULT | PFN_REQ_WRITE,
        };
        let mm = self.mm();
        // SAFETY: `mm` is grabbed by the notifier (type invariant), so the struct is
        // valid; this takes a user reference if the address space still exists.
        if !unsafe { bindings::aikrs_mmget_not_zero(mm) } {
            return Err(EFAULT);
        }
        // Set at the first retry: the common case (no invalidation raced) reads no clock.
        let mut deadline = None;
        let ret = loop {
            if let Some(d) = deadline {
                if crate::aikrs::cpu::fatal_signal_pending() {
                    break Err(EINTR);
                }
                if crate::aikrs::cpu::ktime_ns() > d {
                    break Err(EBUSY);
                }
            }
            // SAFETY: `mni` is inserted.
            let seq = unsafe { bindings::mmu_interval_read_begin(self.mni.get()) };
            // SAFETY: All-zero is a valid `hmm_range`; the fields are set below.
            let mut range: bindings::hmm_range = unsafe { core::mem::zeroed() };
            range.notifier = self.mni.get();
            range.notifier_seq = seq;
            range.start = start;
            range.end = end;
            range.hmm_pfns = pfns.as_mut_ptr();
            range.default_flags = default_flags;
            range.pfn_flags_mask = 0;
            range.dev_private_owner = self.owner;
            let r = if unlocked {
                Self::fault_unlocked(&mut range)
            } else {
                // SAFETY: We hold a user reference on `mm`; `range` describes `pfns`,
                // which has one entry per page of the range and outlives the call; the
                // mmap_lock is held for reading around it, as `hmm_range_fault()`
                // requires. Waiting for it stays killable (`-EINTR`, returned as is).
                unsafe {
                    match bindings::aikrs_mmap_read_lock_killable(mm) {
                        0 => {
                            let r = bindings::hmm_range_fault(&mut range);
                            bindings::aikrs_mmap_read_unlock(mm);
                            r
                        }
                        e => e,
                    }
                }
            };
            // The unlocked walk samples the sequence again when it restarts.
            let seq = range.notifier_seq;
            if r == EBUSY.to_errno() {
                deadline.get_or_insert_with(|| {
                    crate::aikrs::cpu::ktime_ns() + RANGE_TIMEOUT_MS * 1_000_000
                });
                continue;
            }
            if r != 0 {
                break Err(Error::from_errno(r));
            }
            let mut g = self.lock_mut();
            // SAFETY: `mni` is inserted; `seq` came from it.
            if unsafe { bindings::aikrs_mni_read_retry(self.mni.get(), seq) } {
                drop(g);
                deadline.get_or_insert_with(|| {
                    crate::aikrs::cpu::ktime_ns() + RANGE_TIMEOUT_MS * 1_000_000
                });
                continue;
            }
            // SAFETY: `HmmPfn` is a `repr(transparent)` newtype of `usize`, so the
            // slice can be viewed as one of `HmmPfn`; `pfns` stays borrowed meanwhile.
            let entries =
                unsafe { core::slice::from_raw_parts(pfns.as_ptr().cast::<HmmPfn>(), pfns.len()) };
            break Ok(commit(&mut g, entries));
        };
        // SAFETY: Drops the user reference taken above (may sleep: we are in process
        // context, holding no lock).
        unsafe { bindings::mmput(mm) };
        ret
    }

    /// One `hmm_range_fault_unlocked_timeout()` call (it takes the `mmap_lock` itself).
    #[cfg(CONFIG_AIKRS_HMM_FAULT_UNLOCKED)]
    fn fault_unlocked(range: &mut bindings::hmm_range) -> i32 {
        // SAFETY: The caller holds a user reference on the notifier's `mm` and `range`
        // describes its pfn array, as for `hmm_range_fault()`; the `mmap_lock` is not
        // held. Internal retries are bounded by the same timeout as ours.
        unsafe {
            bindings::hmm_range_fault_unlocked_timeout(
                range,
                bindings::__msecs_to_jiffies(RANGE_TIMEOUT_MS as u32),
            )
        }
    }

    #[cfg(not(CONFIG_AIKRS_HMM_FAULT_UNLOCKED))]
    fn fault_unlocked(_range: &mut bindings::hmm_range) -> i32 {
        EINVAL.to_errno()
    }

    // 6.12 has no other field, so the update is needless there.
    #[allow(clippy::needless_update)]
    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate_cb),
        // SAFETY: All-zero is valid for the other fields (no callbacks; Linux 7.x adds
        // `invalidate_start`/`invalidate_finish`, which are optional).
        ..unsafe { core::mem::zeroed() }
    };

    /// # Safety
    ///
    /// Called by the MM for the inserted notifier `mni` of a `Mirror<T>`, with a valid
    /// `range`.
    unsafe extern "C" fn invalidate_cb(
        mni: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: usize,
    ) -> bool {
        // SAFETY: `mni` is the first field of a `repr(C)` `Mirror<T>` (type invariant),
        // alive while inserted, and the notifier is only removed in `Drop`, which waits
        // for running callbacks.
        let this = unsafe { &*mni.cast::<Self>() };
        // SAFETY: `range` is valid during the call.
        let (r, blockable) = unsafe { (&*range, bindings::aikrs_mn_range_blockable(range)) };
        // Making a page exclusive to this very device only swaps the CPU's entry for a
        // device-exclusive one; the page stays, and the caller maps it (under
        // `commit`). Counting it as an invalidation would make that commit retry forever
        // (`make_device_exclusive` documents that callers must filter it).
        if r.event == bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE
            && !this.owner.is_null()
            && r.owner == this.owner
        {
            return true;
        }
        let mut g = if blockable {
            this.lock_mut()
        } else {
            match this.try_lock() {
                Some(g) => g,
                // The caller retries later (or, for an OOM reaper, skips the mm).
                None => return false,
            }
        };
        // SAFETY: `mni` is inserted; under the lock, as the protocol requires.
        unsafe { bindings::aikrs_mni_set_seq(mni, cur_seq) };
        let inv = Invalidation {
            start: r.start,
            end: r.end,
            event: r.event,
        };
        g.invalidate(&inv);
        true
    }
}

impl<T: MirrorOps> Drop for Mirror<T> {
    fn drop(&mut self) {
        // SAFETY: Inserted (type invariant). Removal waits for running callbacks and
        // drops the notifier's reference on the `mm`; it may sleep (release runs in
        // process context). Not called from a callback of this notifier.
        unsafe { bindings::mmu_interval_notifier_remove(self.mni.get()) };
    }
}

/// Copies page frame `pfn` into `dst`.
///
/// # Safety
///
/// `pfn` must be a page of system memory (or the backing page of device memory) that
/// stays allocated during the call, e.g. a page of a [`Mirror`] entry read under its
/// lock with no invalidation since.
pub unsafe fn copy_from_pfn(dst: &mut [u8; PAGE_SIZE], pfn: u64) {
    // SAFETY: As the caller guarantees; `dst` is valid for writing one page.
    unsafe { bindings::aikrs_copy_from_pfn(dst.as_mut_ptr().cast(), pfn as usize) }
}

/// Copies `src` into page frame `pfn`.
///
/// # Safety
///
/// As for [`copy_from_pfn`]; and the page must be one the device may write (a writable
/// entry of a [`Mirror`], say).
pub unsafe fn copy_to_pfn(pfn: u64, src: &[u8; PAGE_SIZE]) {
    // SAFETY: As the caller guarantees; `src` is valid for reading one page.
    unsafe { bindings::aikrs_copy_to_pfn(pfn as usize, src.as_ptr().cast()) }
}
