// SPDX-License-Identifier: GPL-2.0

//! Batched TLB invalidation: many unmaps, one shootdown round.
//!
//! A [`Batch`] collects invalidation requests (user ranges of any number of address
//! spaces, kernel ranges), and [`Batch::flush`] invalidates all of them in one IPI round.
//! The plan (merging, per-page or full, which CPUs) comes from the `core`-only planner
//! [`crate::aikrs::tlb_plan`], host-tested in `mm/aikrs_tlb/core`; the execution goes
//! through the kernel's own x86 TLB code (`rust/aikrs_tlb.c`, always built in), which
//! keeps it correct with PCID/ASIDs and lazy-TLB CPUs:
//!
//! | plan | executed as | round reaches |
//! |---|---|---|
//! | one user space, span <= ceiling | `flush_tlb_mm_range(mm, span)` | non-lazy CPUs of `mm_cpumask` |
//! | one user space, span > ceiling | `flush_tlb_mm_range(mm, ALL)` | non-lazy CPUs of `mm_cpumask` |
//! | several user spaces | `arch_tlbbatch_add_pending` each, `arch_tlbbatch_flush` | union of their masks |
//! | kernel ranges, pages <= ceiling | one `on_each_cpu` round of `flush_tlb_one_kernel` | online CPUs |
//! | kernel ranges above the ceiling, or kernel and user | `flush_tlb_all` | online CPUs |
//!
//! x86's `flush_tlb_mm_range` takes one range per round, so a user space is invalidated
//! page by page over the span of its ranges (the planner's `UserSpan`), never range by
//! range: re-implementing `flush_tlb_func`'s ASID generation protocol for a list of ranges
//! outside `arch/x86` would not stay correct across kernels. Above the kernel's own
//! `tlb_single_page_flush_ceiling`, `flush_tlb_mm_range` turns a span into a full flush
//! whatever our ceiling says.
//!
//! Until its flush, every address space in a batch is pinned (`mmgrab`) and has a TLB
//! flush pending (`inc_tlb_flush_pending`, as `tlb_gather_mmu` does), so
//! `mm_tlb_flush_pending()` users see the unflushed state. Dropping a batch flushes it:
//! a cleared entry is never left without its flush.

use crate::{
    alloc::{
        flags::{GFP_KERNEL, GFP_NOWAIT},
        KBox, KVec,
    },
    bindings,
    error::{code::*, Result},
};
use core::{ffi::c_void, ptr::NonNull};

pub use crate::aikrs::mapping::AddressSpace;
use crate::aikrs::tlb_plan::{self, CPU_WORDS};
pub use crate::aikrs::tlb_plan::{Action, AddError, Config, CpuSet, Range, Space};

/// The kernel's default `tlb_single_page_flush_ceiling` (x86), our default ceiling.
pub const DEFAULT_CEILING: u64 = 33;

/// The end of user space, `TASK_SIZE_MAX`: `0x0000_7fff_ffff_f000` with 4-level paging,
/// `0x00ff_ffff_ffff_f000` with 5-level paging (decided at boot).
fn user_end() -> u64 {
    // SAFETY: Reads a boot-time constant.
    unsafe { bindings::aikrs_tlb_task_size_max() }
}

/// The lowest kernel address: the canonical upper half, mirror of user space plus its
/// guard page (`0xffff_8000_0000_0000` with 4-level paging, `0xff00_0000_0000_0000` with
/// 5-level paging).
fn kernel_start() -> u64 {
    0u64.wrapping_sub(user_end() + 4096)
}

/// The sum over all CPUs of x86's "TLB shootdowns" interrupt counter (`/proc/interrupts`,
/// line `TLB`): IPIs received for user-space flushes, by anyone.
pub fn shootdowns() -> u64 {
    // SAFETY: Reads per-CPU counters; always safe.
    unsafe { bindings::aikrs_tlb_shootdowns() }
}

/// How many times `cpu` ran the invalidation of a per-page kernel round since boot, as
/// counted on that CPU by the invalidation itself (0 for a CPU that is not possible).
pub fn kernel_runs_on(cpu: u32) -> u64 {
    // SAFETY: Reads a per-CPU counter; the C side checks `cpu`.
    unsafe { bindings::aikrs_tlb_kernel_runs_on(cpu) }
}

/// The kernel's count of the TLB flushes `cpu` ran on behalf of a flushing CPU (vm event
/// `nr_tlb_remote_flush_received`): one per run of `flush_tlb_all()`'s callback, the
/// calling CPU's run included, and one per user-space flush IPI received.
///
/// `None` where the kernel does not count them: without `CONFIG_DEBUG_TLBFLUSH`, for a
/// CPU that is not possible, or when `flush_tlb_all()` invalidates by broadcast
/// (`INVLPGB` on AMD, which Linux 7.3 uses and 6.12 does not) and runs no callback.
pub fn flushes_received(cpu: u32) -> Option<u64> {
    // SAFETY: Reads a per-CPU counter; the C side checks `cpu`.
    let n = unsafe { bindings::aikrs_tlb_flushes_received(cpu) };
    u64::try_from(n).ok()
}

/// What one [`Batch::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests (ranges added) in the batch.
    pub requests: u64,
    /// Requests that disappeared by merging into another.
    pub merged: u64,
    /// IPI rounds: 0 for an empty batch, else 1.
    pub rounds: u64,
    /// IPIs the round sent, as counted where they arrive. For user spaces: the change of
    /// [`shootdowns`] across the round (which counts any concurrent shootdown too). For a
    /// per-page kernel round: the CPUs other than the flushing one that ran our
    /// invalidation in it, each counting itself (function-call IPIs, not on the TLB
    /// vector). For a `flush_tlb_all()` round: 0, its IPIs are the kernel's and not
    /// counted here (function-call IPIs, or none where it flushes by broadcast); see
    /// [`flushes_received`].
    pub ipis: u64,
    /// 1 if the round was a full flush.
    pub full: u64,
    /// 1 if the round invalidated page by page.
    pub per_page: u64,
    /// Pages the per-page round invalidated.
    pub pages: u64,
}

impl Report {
    /// Adds `o` to `self`, field by field.
    pub fn accumulate(&mut self, o: &Report) {
        self.requests += o.requests;
        self.merged += o.merged;
        self.rounds += o.rounds;
        self.ipis += o.ipis;
        self.full += o.full;
        self.per_page += o.per_page;
        self.pages += o.pages;
    }
}

/// A batch of TLB invalidations, flushed in one round.
///
/// # Invariants
///
/// - `storage` came from `KBox::into_raw` and is freed only in `drop`, after `plan` (which
///   borrows it as `'static`) is gone: `plan` is a `ManuallyDrop` dropped first there.
/// - Every pointer in `mms` is an `mm_struct` this batch holds one `mmgrab` reference and
///   one pending-flush count of, both dropped only after a flush that covered it.
/// - Every [`Space::User`] id in `plan` is one of `mms`.
/// - `mmbatch` is a zeroed x86 `arch_tlbflush_unmap_batch`, freed in `drop`.
pub struct Batch {
    plan: core::mem::ManuallyDrop<tlb_plan::Batch<'static>>,
    storage: NonNull<[Range]>,
    mms: KVec<*mut bindings::mm_struct>,
    mmbatch: NonNull<bindings::aikrs_tlb_mmbatch>,
    /// Flushes forced by a full batch before the caller's flush.
    early: u64,
    /// Everything flushed so far, including the early flushes.
    total: Report,
}

// SAFETY: The mm pointers are pinned references usable from any thread; the rest is owned.
unsafe impl Send for Batch {}

/// Converts a planner error into an errno: every refused request is `EINVAL`.
fn add_error(e: AddError) -> crate::error::Error {
    match e {
        AddError::Full => ENOSPC,
        _ => EINVAL,
    }
}

fn online_mask() -> CpuSet {
    let mut s = CpuSet::new();
    for c in crate::aikrs::cpu::online_cpus() {
        s.set(c);
    }
    s
}

impl Batch {
    /// A batch of at most `capacity` ranges (it flushes early when it fills up), with
    /// per-page invalidation up to `ceiling` pages.
    pub fn new(capacity: usize, ceiling: u64) -> Result<Self> {
        if capacity == 0 {
            return Err(EINVAL);
        }
        let mut v = KVec::with_capacity(capacity, GFP_KERNEL)?;
        for _ in 0..capacity {
            v.push(
                Range {
                    space: Space::Kernel,
                    start: 0,
                    end: 0,
                    stride_shift: 12,
                },
                GFP_KERNEL,
            )?;
        }
        // As many address spaces as ranges: each one `add_user` pins comes with a range
        // (room is made first), so `mms` need not grow under `i_mmap_rwsem` unless
        // merging packed several address spaces' ranges into fewer.
        let mms = KVec::with_capacity(capacity, GFP_KERNEL)?;
        // SAFETY: Allocation; NULL on failure.
        let mmbatch = NonNull::new(unsafe { bindings::aikrs_tlb_mmbatch_alloc() }).ok_or(ENOMEM)?;
        let (ptr, len, _cap) = v.into_raw_parts();
        // SAFETY: `ptr` and `len` come from a `KVec` whose length equals its capacity.
        let storage: KBox<[Range]> =
            unsafe { KBox::from_raw(core::ptr::slice_from_raw_parts_mut(ptr, len)) };
        let storage = NonNull::from(KBox::leak(storage));
        // SAFETY: `storage` is leaked above and freed only in `drop` after `plan`, so the
        // `'static` borrow never outlives it (type invariant); nothing else accesses it.
        let slots: &'static mut [Range] = unsafe { &mut *storage.as_ptr() };
        let cfg = Config {
            ceiling,
            user_end: user_end(),
            kernel_start: kernel_start(),
        };
        // INVARIANT: see above; `mms` is empty; `mmbatch` is zeroed.
        Ok(Self {
            plan: core::mem::ManuallyDrop::new(tlb_plan::Batch::new(slots, cfg)),
            storage,
            mms,
            mmbatch,
            early: 0,
            total: Report::default(),
        })
    }

    /// Requests added since the last flush.
    pub fn len(&self) -> usize {
        self.plan.len()
    }

    /// Whether nothing was added since the last flush.
    pub fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    /// Flushes forced so far because the batch was full.
    pub fn early_flushes(&self) -> u64 {
        self.early
    }

    /// Everything flushed so far (early flushes included).
    pub fn total(&self) -> Report {
        self.total
    }

    /// Adds a kernel range `[start, end)` mapped with `1 << stride_shift` pages.
    ///
    /// Errors (nothing added): `EINVAL` if `end <= start`, an end is not aligned to the
    /// stride, the stride is not 4 KiB..1 GiB, or the range is not in kernel space.
    pub fn add_kernel(&mut self, start: u64, end: u64, stride_shift: u8) -> Result {
        let cpus = online_mask();
        match self
            .plan
            .add(Space::Kernel, start, end, stride_shift, &cpus)
        {
            Err(AddError::Full) => {
                self.make_room();
                self.plan
                    .add(Space::Kernel, start, end, stride_shift, &cpus)
                    .map_err(add_error)
            }
            r => r.map_err(add_error),
        }
    }

    /// Clears the kernel page-table entries of `[start, end)` without any TLB flush and
    /// adds the range to the batch (vunmap-style teardown); returns the entries cleared.
    ///
    /// # Safety
    ///
    /// The caller owns the mapping (e.g. its own `vmap`) and nobody uses it again; the
    /// pages it maps must stay allocated until [`Batch::flush`] returned (stale TLB entries
    /// may reach them until then).
    pub unsafe fn zap_kernel(&mut self, start: u64, end: u64) -> Result<u64> {
        // The planner validates the range (`EINVAL` before anything is touched), and the
        // range is in the batch before any entry is cleared, so whatever the C side clears,
        // even on error, gets its flush.
        self.add_kernel(start, end, 12)?;
        let mut cleared = 0u64;
        // SAFETY: The caller owns the range (see above); the C side walks existing page
        // tables of `init_mm` only.
        let ret = unsafe {
            bindings::aikrs_tlb_zap_kernel_noflush(start as usize, end as usize, &mut cleared)
        };
        crate::error::to_result(ret).map(|()| cleared)
    }

    /// Clears every user page-table entry that maps pages `[first, first + nr)` of
    /// `mapping` (in every process), without a TLB flush, and adds the ranges to the
    /// batch (as `unmap_mapping_pages()` does, minus its flush per mapping); returns the
    /// entries cleared.
    ///
    /// Only 4 KiB PFN-map mappings (`VM_PFNMAP`, as device buffer objects use) may be
    /// cleared this way: `EINVAL` for any other mapping, which stops the walk; the caller
    /// then falls back to [`AddressSpace::unmap_pages`] for the rest. Whatever was
    /// cleared is flushed (at once if it could not be batched, else by the next flush).
    ///
    /// # Safety
    ///
    /// The pages that were mapped must stay allocated until this batch was flushed
    /// ([`Batch::flush`] or its drop): the batch must not be leaked (`mem::forget`).
    pub unsafe fn zap_mapping(
        &mut self,
        mapping: &AddressSpace,
        first: u64,
        nr: u64,
    ) -> Result<u64> {
        let mut cleared = 0u64;
        if nr == 0 || first.checked_add(nr).is_none() {
            return Err(EINVAL);
        }
        // SAFETY: `mapping` is live (type invariant); the callback gets `self` as context,
        // which the call does not outlive, and is only called during it.
        let ret = unsafe {
            bindings::aikrs_tlb_zap_mapping_noflush(
                mapping.as_ptr(),
                first as usize,
                nr as usize,
                Some(zap_cb),
                core::ptr::from_mut::<Self>(self).cast(),
                &mut cleared,
            )
        };
        crate::error::to_result(ret).map(|()| cleared)
    }

    /// Takes over one reference and pending flush of `mm` (handed over by the C side) and
    /// adds `[start, end)` of it. On error the reference stays with the caller, which then
    /// flushes `mm` itself.
    fn add_user(&mut self, mm: *mut bindings::mm_struct, start: u64, end: u64) -> Result {
        let mut words = [0u64; CPU_WORDS];
        // SAFETY: `mm` is pinned by the reference we are handed; `words` has `CPU_WORDS`
        // u64 (= unsigned long on 64-bit) entries.
        unsafe { bindings::aikrs_tlb_mm_cpumask(mm, words.as_mut_ptr().cast(), CPU_WORDS as u32) };
        let cpus = CpuSet::from_words(&words);
        // Make room first: an early flush unpins every address space in `mms`.
        if self.plan.len() >= self.plan.capacity() {
            self.make_room();
        }
        if self.mms.contains(&mm) {
            // Already pinned with a pending flush: drop the extra ones.
            // SAFETY: We own this reference (handed over by the C side).
            unsafe { bindings::aikrs_tlb_mm_pending_dec(mm) };
        } else {
            // INVARIANT: `mm` enters `mms` with the reference we were handed.
            // We run under the mapping's `i_mmap_rwsem`, which reclaim takes (its rmap
            // walks of file pages): nothing here may enter reclaim. The capacity made
            // at creation suffices; should it not, a failed push hands the mm back to
            // the C side, which flushes it at once.
            self.mms.push(mm, GFP_NOWAIT)?;
        }
        if self
            .plan
            .add(Space::User(mm as u64), start, end, 12, &cpus)
            .is_err()
        {
            // The C side only hands page-aligned user ranges of a vma, so this does not
            // happen; if it did, the cleared entries still get their flush.
            // SAFETY: `mm` is pinned (it is in `mms`).
            unsafe { bindings::aikrs_tlb_flush_mm(mm) };
        }
        Ok(())
    }

    /// Frees storage for one more request: first by merging what is there (planning
    /// compacts the ranges in place), and only if nothing merged by flushing early.
    fn make_room(&mut self) {
        let _ = self.plan.plan();
        if self.plan.len() >= self.plan.capacity() {
            self.flush_early();
        }
    }

    fn flush_early(&mut self) {
        self.early += 1;
        self.flush();
    }

    /// Invalidates everything added since the last flush in one IPI round (none if the
    /// batch is empty), then unpins the address spaces. Returns what it did.
    pub fn flush(&mut self) -> Report {
        let before = shootdowns();
        let mut r = Report::default();
        // A kernel round: its IPIs are function calls, not counted by `shootdowns`.
        let mut kernel_round = false;
        {
            let plan = self.plan.plan();
            r.requests = plan.requests;
            r.merged = plan.merged;
            r.rounds = u64::from(plan.rounds());
            r.full = u64::from(plan.is_full());
            match plan.action {
                Action::None => {}
                Action::KernelPages => {
                    kernel_round = true;
                    r.per_page = 1;
                    r.pages = plan.pages;
                    r.ipis = flush_kernel_pages(plan.ranges);
                }
                Action::FullAll => {
                    // SAFETY: Always safe to call from process context.
                    unsafe { bindings::aikrs_tlb_flush_all() };
                    for &mm in self.mms.iter() {
                        // SAFETY: `mm` is pinned (type invariant). `flush_tlb_all` does not
                        // reach secondary TLBs (IOMMU SVA); this does, as the per-mm paths do.
                        unsafe { bindings::aikrs_tlb_notify_secondary(mm) };
                    }
                    kernel_round = true;
                }
                Action::UserSpan {
                    space,
                    start,
                    end,
                    stride_shift,
                } => {
                    r.per_page = 1;
                    r.pages = (end - start) >> stride_shift;
                    // SAFETY: `space` is one of `mms` (type invariant), pinned.
                    unsafe {
                        bindings::aikrs_tlb_flush_mm_range(
                            space as *mut bindings::mm_struct,
                            start as usize,
                            end as usize,
                            u32::from(stride_shift),
                        )
                    };
                }
                Action::UserFull { space } => {
                    // SAFETY: As above.
                    unsafe { bindings::aikrs_tlb_flush_mm(space as *mut bindings::mm_struct) };
                }
                Action::UsersFull => {
                    for &mm in self.mms.iter() {
                        // SAFETY: `mm` is pinned (type invariant); `mmbatch` is valid.
                        unsafe { bindings::aikrs_tlb_mmbatch_add(self.mmbatch.as_ptr(), mm) };
                    }
                    // SAFETY: `mmbatch` is valid; the call clears its mask afterwards.
                    unsafe { bindings::aikrs_tlb_mmbatch_flush(self.mmbatch.as_ptr()) };
                }
            }
        }
        if !kernel_round {
            r.ipis = shootdowns().wrapping_sub(before);
        }
        self.plan.clear();
        for &mm in self.mms.iter() {
            // SAFETY: The flush above covered `mm`; we drop our reference and pending count.
            unsafe { bindings::aikrs_tlb_mm_pending_dec(mm) };
        }
        // INVARIANT: the references are dropped together with the pointers.
        crate::aikrs::compat::clear_copy(&mut self.mms);
        self.total.accumulate(&r);
        r
    }
}

impl Batch {
    /// Forgets everything added since the last flush WITHOUT flushing, unpinning the
    /// address spaces: a negative control for tests that must detect stale translations.
    ///
    /// # Safety
    ///
    /// Cleared entries stay in TLBs: the caller must keep every page they may still reach
    /// allocated (and must not use this outside tests that look for exactly that).
    pub unsafe fn forget_unflushed(&mut self) {
        self.plan.clear();
        for &mm in self.mms.iter() {
            // SAFETY: We hold one reference and pending count of `mm` (type invariant).
            unsafe { bindings::aikrs_tlb_mm_pending_dec(mm) };
        }
        crate::aikrs::compat::clear_copy(&mut self.mms);
    }
}

/// Executes a `KernelPages` plan: one `on_each_cpu` round over a zero-terminated list.
/// Returns how many CPUs other than this one ran the invalidation (each counts itself on
/// the C side); 0 if there was no memory for the list and it fell back to
/// `flush_tlb_all()`.
fn flush_kernel_pages(ranges: &[Range]) -> u64 {
    // `GFP_NOWAIT`: an early flush may run under a mapping's `i_mmap_rwsem` (see
    // `add_user`), where reclaim must not be entered.
    let mut list = KVec::with_capacity(ranges.len() + 1, GFP_NOWAIT);
    let Ok(ref mut list) = list else {
        // No memory for the list: a full flush is always correct.
        // SAFETY: Always safe to call from process context.
        unsafe { bindings::aikrs_tlb_flush_all() };
        return 0;
    };
    for r in ranges {
        let k = bindings::aikrs_tlb_krange {
            start: r.start as usize,
            end: r.end as usize,
            stride_shift: u32::from(r.stride_shift),
        };
        // Cannot fail: the capacity was reserved.
        let _ = list.push(k, GFP_KERNEL);
    }
    let _ = list.push(
        bindings::aikrs_tlb_krange {
            start: 0,
            end: 0,
            stride_shift: 12,
        },
        GFP_KERNEL,
    );
    // SAFETY: `list` is a zero-terminated array of kernel ranges that outlives the call
    // (`on_each_cpu` waits for every CPU).
    u64::from(unsafe { bindings::aikrs_tlb_flush_kernel_pages(list.as_ptr()) })
}

/// The C callback of `aikrs_tlb_zap_mapping_noflush`.
///
/// # Safety
///
/// `ctx` is the `&mut Batch` of the running [`Batch::zap_mapping`]; `mm` comes with one
/// `mmgrab` reference and one pending flush that this function takes over on success.
unsafe extern "C" fn zap_cb(
    ctx: *mut c_void,
    mm: *mut bindings::mm_struct,
    start: usize,
    end: usize,
) -> core::ffi::c_int {
    // SAFETY: See the function's safety section.
    let batch = unsafe { &mut *ctx.cast::<Batch>() };
    match batch.add_user(mm, start as u64, end as u64) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.plan.is_empty() || !self.mms.is_empty() {
            self.flush();
        }
        // SAFETY: `plan` is not used again; it goes before the storage it borrows.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.plan) };
        // SAFETY: `storage` came from `KBox::leak` (type invariant) and nothing borrows it
        // any more.
        drop(unsafe { KBox::from_raw(self.storage.as_ptr()) });
        // SAFETY: `mmbatch` came from `aikrs_tlb_mmbatch_alloc` and has no pending mm.
        unsafe { bindings::aikrs_tlb_mmbatch_free(self.mmbatch.as_ptr()) };
    }
}
