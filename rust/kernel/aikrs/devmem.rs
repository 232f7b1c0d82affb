// SPDX-License-Identifier: GPL-2.0

//! Device-private memory and page migration (C `<linux/memremap.h>`,
//! `<linux/migrate.h>`; see `Documentation/mm/hmm.rst`, "Migration to and from device
//! memory").
//!
//! - [`DevicePrivate`]: a range of `MEMORY_DEVICE_PRIVATE` pages (`memremap_pages` over
//!   a free physical range): `struct page`s for memory the CPU cannot address. A page
//!   handed to a process through migration is mapped as a special swap entry; a CPU
//!   access calls [`DevmemOps::migrate_to_ram`], and the last reference gone calls
//!   [`DevmemOps::page_free`].
//! - [`migrate_vma`]: one `migrate_vma_setup` / `migrate_vma_pages` /
//!   `migrate_vma_finalize` round over part of a vma, with the driver's copy between
//!   setup and pages and its device-table update between pages and finalize, in that
//!   order only. [`migrate_device_range`] is the same for all pages of a
//!   [`DevicePrivate`] range, wherever they are mapped (eviction).
//!
//! Pages are named by page frame number; a migration entry (`MIGRATE_PFN_*`) by
//! [`MigratePfn`].

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{code::*, Error, Result},
};
use core::{cell::UnsafeCell, ffi::c_void, marker::PhantomPinned, pin::Pin};

/// A `migrate_vma` source or destination entry (`MIGRATE_PFN_*` flags and a pfn).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct MigratePfn(usize);

impl MigratePfn {
    const VALID: usize = 1 << 0;
    const MIGRATE: usize = 1 << 1;
    const WRITE: usize = 1 << 3;
    const COMPOUND: usize = 1 << 4;
    const SHIFT: u32 = 6;

    /// A destination entry for page `pfn` (C `migrate_pfn`), writable or not.
    pub fn new(pfn: u64, write: bool) -> Self {
        let w = if write { Self::WRITE } else { 0 };
        Self(((pfn as usize) << Self::SHIFT) | Self::VALID | w)
    }

    /// The page, if the entry has one (an unpopulated address has none).
    pub fn pfn(self) -> Option<u64> {
        (self.0 & Self::VALID != 0).then_some((self.0 >> Self::SHIFT) as u64)
    }

    /// Whether the page was collected for migration (it may be migrated).
    pub fn is_migrate(self) -> bool {
        self.0 & Self::MIGRATE != 0
    }

    /// Whether the page was mapped writable.
    pub fn is_write(self) -> bool {
        self.0 & Self::WRITE != 0
    }

    /// Whether the entry stands for a whole 2 MiB folio ([`HUGE_PAGES`] entries, this
    /// one and the next 511, which are then empty): only with [`Select::compound`].
    pub fn is_compound(self) -> bool {
        self.0 & Self::COMPOUND != 0
    }

    /// This destination entry as a whole 2 MiB folio (for a compound source entry; a
    /// compound source given base-page destinations is split by the migration).
    #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
    pub fn compound(self) -> Self {
        Self(self.0 | Self::COMPOUND)
    }

    /// The number of pages the entry stands for.
    pub fn nr_pages(self) -> usize {
        if self.is_compound() {
            HUGE_PAGES
        } else {
            1
        }
    }
}

/// Pages in a 2 MiB folio (order 9).
pub const HUGE_PAGES: usize = 512;
/// The order of a 2 MiB folio.
pub const HUGE_ORDER: u32 = 9;

/// Which pages a migration collects (C `MIGRATE_VMA_SELECT_*`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Select(usize);

impl Select {
    /// Pages of system memory (to device memory).
    pub const SYSTEM: Self =
        Self(bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_SYSTEM as usize);
    /// Device-private pages of the migration's owner (back to system memory).
    pub const DEVICE_PRIVATE: Self =
        Self(bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_PRIVATE as usize);

    /// Also collect whole 2 MiB folios (a THP, an empty 2 MiB range, a 2 MiB device
    /// folio) as one compound entry, where the round's range covers them aligned,
    /// instead of splitting them. Where the kernel has no large device folios
    /// (`CONFIG_AIKRS_DEVMEM_COMPOUND` unset) this is `self`: they are split.
    pub fn compound(self) -> Self {
        #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
        return Self(self.0 | bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_COMPOUND as usize);
        #[cfg(not(CONFIG_AIKRS_DEVMEM_COMPOUND))]
        self
    }
}

/// The callbacks of a [`DevicePrivate`] range.
pub trait DevmemOps: Send + Sync + Sized + 'static {
    /// The CPU accessed device-private page `fault.pfn()` of this range: migrate it to
    /// system memory (with [`migrate_vma`], passing the fault). `ENOMEM` is
    /// `VM_FAULT_OOM`; any other error a `SIGBUS`.
    fn migrate_to_ram(&self, fault: &DevFault<'_>) -> Result;

    /// The last reference to the folio of `1 << order` pages at `pfn` is gone; `data`
    /// is what [`page_init`] stored (or [`DevmemOps::split_data`] gave, for a folio
    /// split off a larger one). Called in process context; must not sleep.
    fn page_free(&self, pfn: u64, data: usize, order: u32);

    /// A large folio with data `data` is being split: the data of the new folio that
    /// starts at page `index` of it. (The folio keeps `data`.) Called with the folio
    /// locked and its mappings frozen; must not sleep.
    fn split_data(&self, data: usize, index: u64) -> usize;
}

/// A CPU fault on a device-private page, for [`DevmemOps::migrate_to_ram`].
pub struct DevFault<'a> {
    vmf: *mut bindings::vm_fault,
    _p: core::marker::PhantomData<&'a mut bindings::vm_fault>,
}

impl DevFault<'_> {
    /// The faulting device-private page.
    pub fn pfn(&self) -> u64 {
        // SAFETY: `vmf` is the fault being handled; its page is set for a device fault.
        unsafe { bindings::aikrs_vmf_page_pfn(self.vmf) as u64 }
    }

    /// The order of what the fault should migrate: that of the page's folio if the
    /// CPU maps it whole (a device-private PMD entry), else 0.
    pub fn order(&self) -> u32 {
        #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
        // SAFETY: As above; the faulting page is referenced by the fault.
        return unsafe { bindings::aikrs_vmf_fault_order(self.vmf) };
        #[cfg(not(CONFIG_AIKRS_DEVMEM_COMPOUND))]
        0
    }

    /// The faulting address, page aligned.
    pub fn address(&self) -> usize {
        // SAFETY: As above.
        unsafe { bindings::aikrs_vmf_address(self.vmf) }
    }
}

/// A range of device-private pages: a C `dev_pagemap` of type `MEMORY_DEVICE_PRIVATE`
/// over a free physical address range, and the driver's data `T`.
///
/// # Invariants
///
/// `pgmap` is the first field (`repr(C)`) and is mapped (`memremap_pages`) over the
/// region `res` from [`DevicePrivate::new`] until [`Drop`], which unmaps it (waiting
/// for every page to be freed) and releases the region. (While `Drop` waits, freed
/// pages still reach [`DevmemOps::page_free`] through a shared reference to `data`:
/// `Drop` itself touches only the C fields.)
#[repr(C)]
pub struct DevicePrivate<T: DevmemOps> {
    pgmap: UnsafeCell<bindings::dev_pagemap>,
    ops: bindings::dev_pagemap_ops,
    start: u64,
    len: u64,
    data: T,
    _pin: PhantomPinned,
}

// SAFETY: The C side uses `pgmap` from any thread (it is made for that); `T` is
// `Send + Sync`; the rest is read only.
unsafe impl<T: DevmemOps> Send for DevicePrivate<T> {}
// SAFETY: As above.
unsafe impl<T: DevmemOps> Sync for DevicePrivate<T> {}

impl<T: DevmemOps> DevicePrivate<T> {
    /// Creates `size` bytes of device-private pages (a multiple of the section size,
    /// 128 MiB on x86-64) whose owner is `owner` (what `hmm_range_fault()` and
    /// migrations compare `dev_private_owner`/`pgmap_owner` with).
    pub fn new(size: u64, owner: *mut c_void, data: T) -> Result<Pin<KBox<Self>>> {
        // SAFETY: Finds and reserves a free range of `iomem_resource` (a static); the
        // name is a static string.
        let res = unsafe {
            bindings::request_free_mem_region(
                core::ptr::addr_of_mut!(bindings::iomem_resource),
                size as usize,
                crate::aikrs::compat::c_str_ptr(c"aikrs_hmm").cast(),
            )
        };
        if res.is_null() || (res as isize) < 0 && (res as isize) >= -4095 {
            return Err(ENOMEM);
        }
        // SAFETY: A valid resource just reserved.
        let (start, end) = unsafe { ((*res).start as u64, (*res).end as u64) };
        let len = end - start + 1;
        let release = || {
            // SAFETY: Releases the region reserved above.
            unsafe { bindings::aikrs_release_mem_region(start, len) }
        };
        let b = KBox::new(
            Self {
                // SAFETY: All-zero is a valid, empty `dev_pagemap`; filled below.
                pgmap: UnsafeCell::new(unsafe { core::mem::zeroed() }),
                // SAFETY: All-zero is a valid `dev_pagemap_ops` (no callbacks).
                ops: unsafe { core::mem::zeroed() },
                start,
                len,
                data,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        );
        let mut b = match b {
            Ok(b) => b,
            Err(e) => {
                release();
                return Err(e.into());
            }
        };
        b.ops.migrate_to_ram = Some(Self::migrate_to_ram_cb);
        #[cfg(CONFIG_AIKRS_LINUX_GE_7)]
        {
            b.ops.folio_free = Some(Self::folio_free_cb);
        }
        #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
        {
            b.ops.folio_split = Some(Self::folio_split_cb);
        }
        #[cfg(not(CONFIG_AIKRS_LINUX_GE_7))]
        {
            b.ops.page_free = Some(Self::page_free_cb);
        }
        let ops: *const bindings::dev_pagemap_ops = &b.ops;
        {
            let pgmap = b.pgmap.get_mut();
            pgmap.type_ = bindings::memory_type_MEMORY_DEVICE_PRIVATE;
            // SAFETY: `pgmap` is ours, not yet mapped.
            unsafe { bindings::aikrs_pgmap_set_range(pgmap, start, end) };
            pgmap.ops = ops;
            pgmap.owner = owner;
        }
        // SAFETY: `pgmap` is filled in and at its final address (the box is pinned
        // below and never moved); its ops point into the same box.
        let p = unsafe { bindings::memremap_pages(b.pgmap.get(), bindings::aikrs_numa_node_id()) };
        if p.is_null() || (p as isize) < 0 && (p as isize) >= -4095 {
            release();
            let e = if p.is_null() {
                EFAULT
            } else {
                Error::from_errno(p as isize as i32)
            };
            // `Drop` would unmap: free without it (the data is dropped).
            let raw = KBox::into_raw(b);
            // SAFETY: `raw` is the box just leaked and nothing refers to it; drop the
            // data in place, then free the memory as `MaybeUninit` (no `Drop`).
            unsafe {
                core::ptr::drop_in_place(core::ptr::addr_of_mut!((*raw).data));
                drop(KBox::from_raw(raw.cast::<core::mem::MaybeUninit<Self>>()));
            }
            return Err(e);
        }
        // INVARIANT: Mapped over the reserved region.
        Ok(Pin::from(b))
    }

    /// The page frames of the range.
    pub fn pfns(&self) -> core::ops::Range<u64> {
        let first = self.start >> 12;
        first..first + (self.len >> 12)
    }

    /// The driver data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// For a device-private page of this owner: the data stored with its folio by
    /// [`page_init`] (or [`DevmemOps::split_data`]) and the page's index in the folio.
    /// `None` for any other page.
    ///
    /// # Safety
    ///
    /// `pfn` must have a `struct page` and be in use: a pfn reported by
    /// `hmm_range_fault()` under the mirror's sequence check, or held by a migration,
    /// say. (`owner` is only compared.)
    pub unsafe fn page_data(pfn: u64, owner: *mut c_void) -> Option<(usize, u64)> {
        let mut index = 0usize;
        // SAFETY: Reads the page's `pgmap` (the caller guarantees the page exists) and,
        // for a device page of `owner` (which only the owner's driver hands out), its
        // folio's `zone_device_data`.
        let data = unsafe {
            let pgmap = bindings::aikrs_pfn_pgmap(pfn as usize);
            if pgmap.is_null() || (*pgmap).owner != owner {
                return None;
            }
            bindings::aikrs_devmem_page_data(pfn as usize, &mut index) as usize
        };
        Some((data, index as u64))
    }

    /// For a device-private page of this owner: the driver data of the range it belongs
    /// to (the `T` given to [`DevicePrivate::new`]). `None` for any other page.
    ///
    /// # Safety
    ///
    /// `pfn` must have a `struct page`. If it is a device page of `owner`, its range must
    /// be a live `DevicePrivate<T>` (every range of `owner` has the same `T`), and it must
    /// stay live while the returned reference is used: the page is on the driver's own
    /// free list, say, which the driver empties of a range before dropping it.
    pub unsafe fn range_data<'a>(pfn: u64, owner: *mut c_void) -> Option<&'a T> {
        // SAFETY: Reads the page's `pgmap` (the caller guarantees the page exists); one
        // of `owner`'s is the first field of a live `Self`, as the caller guarantees.
        unsafe {
            let pgmap = bindings::aikrs_pfn_pgmap(pfn as usize);
            if pgmap.is_null() || (*pgmap).owner != owner {
                return None;
            }
            Some(&Self::from_pgmap(pgmap).data)
        }
    }

    /// # Safety
    ///
    /// `pgmap` is the `pgmap` of a live `DevicePrivate<T>`.
    unsafe fn from_pgmap<'a>(pgmap: *const bindings::dev_pagemap) -> &'a Self {
        // SAFETY: `pgmap` is the first field of a `repr(C)` `Self` (type invariant),
        // which lives until its pages are all freed (`Drop` waits for that).
        unsafe { &*pgmap.cast::<Self>() }
    }

    /// # Safety
    ///
    /// Called by the MM for a CPU fault on a device-private page of a `Self`.
    unsafe extern "C" fn migrate_to_ram_cb(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: `vmf` is valid during the call and its page is ours.
        let this = unsafe {
            let pfn = bindings::aikrs_vmf_page_pfn(vmf);
            Self::from_pgmap(bindings::aikrs_pfn_pgmap(pfn))
        };
        let fault = DevFault {
            vmf,
            _p: core::marker::PhantomData,
        };
        match this.data.migrate_to_ram(&fault) {
            Ok(()) => 0,
            Err(e) if e == ENOMEM => bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t,
            Err(_) => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
        }
    }

    #[cfg(not(CONFIG_AIKRS_LINUX_GE_7))]
    /// # Safety
    ///
    /// Called by the MM when the last reference to a page of a `Self` is gone.
    unsafe extern "C" fn page_free_cb(page: *mut bindings::page) {
        // SAFETY: `page` is a device-private page of ours, being freed.
        unsafe {
            let pfn = bindings::aikrs_page_to_pfn(page);
            Self::free(pfn, 0)
        }
    }

    #[cfg(CONFIG_AIKRS_LINUX_GE_7)]
    /// # Safety
    ///
    /// Called by the MM when the last reference to a folio of a `Self` is gone.
    unsafe extern "C" fn folio_free_cb(folio: *mut bindings::folio) {
        // SAFETY: `folio` is a device-private folio of ours, being freed; its order is
        // still set.
        unsafe {
            let pfn = bindings::aikrs_folio_pfn(folio);
            Self::free(pfn, bindings::aikrs_folio_order(folio))
        }
    }

    #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
    /// # Safety
    ///
    /// Called by the MM while it splits a large folio of a `Self` (`folio_split` op):
    /// once for each new folio `tail`, then with `tail` NULL when the split is done.
    unsafe extern "C" fn folio_split_cb(head: *mut bindings::folio, tail: *mut bindings::folio) {
        if tail.is_null() {
            // The head keeps its data; nothing else is per-folio here.
            return;
        }
        let mut offset = 0usize;
        // SAFETY: Both are folios of the range being split (locked by the splitter);
        // the helper copies what the core would without this op and reads the head's
        // data.
        unsafe {
            let data = bindings::aikrs_devmem_split_tail(head, tail, &mut offset) as usize;
            let this = Self::from_pgmap(bindings::aikrs_pfn_pgmap(bindings::aikrs_folio_pfn(head)));
            let new = this.data.split_data(data, offset as u64);
            bindings::aikrs_folio_set_zone_device_data(tail, new as *mut c_void);
        }
    }

    /// # Safety
    ///
    /// `pfn` is the first page of a folio of a `Self` of `1 << order` pages, being freed.
    unsafe fn free(pfn: usize, order: u32) {
        // SAFETY: As required; the head page holds the folio's data.
        unsafe {
            let this = Self::from_pgmap(bindings::aikrs_pfn_pgmap(pfn));
            let mut index = 0usize;
            let data = bindings::aikrs_devmem_page_data(pfn, &mut index) as usize;
            this.data.page_free(pfn as u64, data, order);
        }
    }
}

impl<T: DevmemOps> Drop for DevicePrivate<T> {
    fn drop(&mut self) {
        // SAFETY: Mapped (type invariant). `memunmap_pages` waits until every page is
        // free (the driver evicts them first, see [`migrate_device_range`]); then the
        // region is released.
        unsafe {
            bindings::memunmap_pages(self.pgmap.get());
            bindings::aikrs_release_mem_region(self.start, self.len);
        }
    }
}

/// The vma a migration works in (looked up with the `mmap_lock` held).
pub struct Vma<'a> {
    vma: *mut bindings::vm_area_struct,
    start: usize,
    end: usize,
    writable: bool,
    _guard: core::marker::PhantomData<&'a MmapReadGuard>,
}

impl Vma<'_> {
    /// The first address.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The end (exclusive).
    pub fn end(&self) -> usize {
        self.end
    }

    /// Whether the vma may be written (`VM_WRITE`).
    pub fn writable(&self) -> bool {
        self.writable
    }
}

/// A user of an address space (`mmget`) with its `mmap_lock` held for reading.
///
/// # Invariants
///
/// `mm` has a user reference and its `mmap_lock` held for reading, both dropped by
/// [`Drop`].
pub struct MmapReadGuard {
    mm: *mut bindings::mm_struct,
}

impl MmapReadGuard {
    /// Takes a user reference on `mm` if it still has users, and its `mmap_lock` for
    /// reading. `EINVAL` if the address space is gone; `EINTR` if a fatal signal
    /// arrived while waiting for the lock (a writer may hold it for long: the caller
    /// stays killable).
    ///
    /// # Safety
    ///
    /// `mm` must stay allocated (`mmgrab`) meanwhile, e.g. the `mm` of an interval
    /// notifier.
    pub unsafe fn new(mm: *mut bindings::mm_struct) -> Result<Self> {
        // SAFETY: `mm` is allocated, as the caller guarantees.
        if !unsafe { bindings::aikrs_mmget_not_zero(mm) } {
            return Err(EINVAL);
        }
        // SAFETY: We are a user now.
        if unsafe { bindings::aikrs_mmap_read_lock_killable(mm) } != 0 {
            // SAFETY: The user reference taken above, not used any more.
            unsafe { bindings::mmput(mm) };
            return Err(EINTR);
        }
        Ok(Self { mm })
    }

    /// The vma containing `addr`, if any and readable.
    pub fn vma_lookup(&self, addr: usize) -> Option<Vma<'_>> {
        let (mut start, mut end, mut readable, mut writable) = (0, 0, false, false);
        // SAFETY: The mmap_lock is held (type invariant).
        let vma = unsafe {
            bindings::aikrs_vma_lookup(
                self.mm,
                addr,
                &mut start,
                &mut end,
                &mut readable,
                &mut writable,
            )
        };
        (!vma.is_null() && readable).then_some(Vma {
            vma,
            start,
            end,
            writable,
            _guard: core::marker::PhantomData,
        })
    }
}

impl Drop for MmapReadGuard {
    fn drop(&mut self) {
        // SAFETY: Held and referenced (type invariant).
        unsafe {
            bindings::aikrs_mmap_read_unlock(self.mm);
            bindings::mmput(self.mm);
        }
    }
}

/// One migration round over `[start, end)` of `vma` (within it, page aligned, at most
/// `src.len()` pages; `dst` as long): collects the pages that `select` names into
/// `src`, then calls `copy(src, dst, vma)` to allocate and fill the new pages and set
/// their `dst` entries ([`MigratePfn::new`]; a zero entry: leave that page; for a
/// compound source, a compound destination or base pages, all of them for an empty
/// range: an entry the kernel could not take is withdrawn, see `check_dst`), migrates
/// them (`migrate_vma_pages`), calls `map(src, dst)` (entries whose `src` lost
/// [`MigratePfn::is_migrate`] were not migrated) and finalizes. `fault` is the CPU
/// fault a `migrate_to_ram` serves.
///
/// Returns the number of pages migrated.
#[allow(clippy::too_many_arguments)]
pub fn migrate_vma(
    vma: &Vma<'_>,
    start: usize,
    end: usize,
    src: &mut [MigratePfn],
    dst: &mut [MigratePfn],
    owner: *mut c_void,
    select: Select,
    fault: Option<&DevFault<'_>>,
    copy: impl FnOnce(&[MigratePfn], &mut [MigratePfn]),
    map: impl FnOnce(&[MigratePfn], &[MigratePfn]),
) -> Result<usize> {
    let n = (end.wrapping_sub(start)) / 4096;
    if start % 4096 != 0
        || end % 4096 != 0
        || end <= start
        || start < vma.start
        || end > vma.end
        || n > src.len()
        || n > dst.len()
    {
        return Err(EINVAL);
    }
    let (src, dst) = (&mut src[..n], &mut dst[..n]);
    src.fill(MigratePfn(0));
    dst.fill(MigratePfn(0));
    // SAFETY: All-zero is a valid `migrate_vma`; filled below.
    let mut args: bindings::migrate_vma = unsafe { core::mem::zeroed() };
    args.vma = vma.vma;
    args.src = src.as_mut_ptr().cast();
    args.dst = dst.as_mut_ptr().cast();
    args.start = start;
    args.end = end;
    args.pgmap_owner = owner;
    args.flags = select.0;
    if let Some(f) = fault {
        // SAFETY: The fault being handled; its page is the device page faulted on.
        args.fault_page = unsafe { bindings::aikrs_vmf_page(f.vmf) };
    }
    // SAFETY: `vma` is valid with the mmap_lock held (the `Vma` borrows the guard, or
    // a fault holds the lock); `src`/`dst` have one entry per page of the range and
    // outlive the round.
    let r = unsafe { bindings::migrate_vma_setup(&mut args) };
    if r != 0 {
        return Err(Error::from_errno(r));
    }
    copy(src, dst);
    check_dst(src, dst);
    // SAFETY: Set up above; `dst` holds locked new pages (or zero) as required, and
    // `check_dst` withdrew the entries the kernel could not take as they are.
    unsafe { bindings::migrate_vma_pages(&mut args) };
    let migrated = src
        .iter()
        .filter(|s| s.pfn().is_some() && s.is_migrate())
        .map(|s| s.nr_pages())
        .sum();
    map(src, dst);
    // SAFETY: After `migrate_vma_pages`, as required.
    unsafe { bindings::migrate_vma_finalize(&mut args) };
    Ok(migrated)
}

/// Withdraws (clears `MIGRATE` of the source entry: the page stays where it is, and
/// finalizing releases the destination) every entry whose destination the kernel
/// would mishandle:
///
/// - a compound destination that is not a whole 2 MiB folio, or for a source that is
///   not compound (the kernel would map it as one);
/// - a compound source with no page (an empty 2 MiB range) given base-page
///   destinations, not all 512 of them: the kernel inserts all 512 without looking.
fn check_dst(src: &mut [MigratePfn], dst: &[MigratePfn]) {
    let mut i = 0;
    while i < src.len() {
        let (s, d) = (src[i], dst[i]);
        let n = s.nr_pages().min(src.len() - i);
        if s.is_migrate() {
            let bad = match d.pfn() {
                None => false,
                Some(pfn) if d.is_compound() => {
                    !s.is_compound()
                        || pfn % HUGE_PAGES as u64 != 0
                        // SAFETY: `pfn` is a page the driver handed to the migration.
                        || unsafe { bindings::aikrs_pfn_folio_order(pfn as usize) } != HUGE_ORDER
                }
                Some(_) => {
                    s.is_compound()
                        && s.pfn().is_none()
                        && (n < HUGE_PAGES || dst[i..i + n].iter().any(|e| e.pfn().is_none()))
                }
            };
            if bad {
                src[i] = MigratePfn(s.0 & !MigratePfn::MIGRATE);
            }
        }
        i += n;
    }
}

/// Evicts pages `first..first + src.len()` of device-private memory of this driver
/// to system memory, wherever they are mapped (`migrate_device_range`): `copy(src,
/// dst)` allocates and fills the new pages as for [`migrate_vma`].
///
/// # Safety
///
/// The range must be device-private pages of the caller's own [`DevicePrivate`].
pub unsafe fn migrate_device_range(
    first: u64,
    src: &mut [MigratePfn],
    dst: &mut [MigratePfn],
    copy: impl FnOnce(&[MigratePfn], &mut [MigratePfn]),
) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&mut src[..n], &mut dst[..n]);
    src.fill(MigratePfn(0));
    dst.fill(MigratePfn(0));
    // SAFETY: As the caller guarantees; the arrays have `n` entries.
    unsafe { bindings::migrate_device_range(src.as_mut_ptr().cast(), first as usize, n) };
    copy(src, dst);
    check_dst(src, dst);
    // SAFETY: After `migrate_device_range`, with `dst` filled as required (see
    // `check_dst`).
    unsafe {
        bindings::migrate_device_pages(src.as_mut_ptr().cast(), dst.as_mut_ptr().cast(), n);
        bindings::migrate_device_finalize(src.as_mut_ptr().cast(), dst.as_mut_ptr().cast(), n);
    }
}

/// A page of system memory for a migration to `addr` of `vma`, allocated for that
/// address and returned locked, as a migration destination must be. `None`: no
/// memory. (Pages for device data: [`alloc_pages`].)
pub fn alloc_page(vma: &DevFaultVma, addr: usize) -> Option<u64> {
    // SAFETY: Allocates a page; `vma` is valid (see `DevFaultVma`).
    let pfn = unsafe { bindings::aikrs_alloc_migrate_page(vma.0, addr) };
    (pfn != 0).then_some(pfn as u64)
}

/// A locked page of system memory to evict a device page into; never fails.
pub fn alloc_evict_page() -> u64 {
    // SAFETY: Allocates a page (with `__GFP_NOFAIL`) and locks it.
    unsafe { bindings::aikrs_alloc_migrate_page(core::ptr::null_mut(), 0) as u64 }
}

/// The vma of a migration, for [`alloc_page`].
pub struct DevFaultVma(*mut bindings::vm_area_struct);

impl Vma<'_> {
    /// This vma, for [`alloc_page`].
    pub fn for_alloc(&self) -> DevFaultVma {
        DevFaultVma(self.vma)
    }
}

impl DevFault<'_> {
    /// The vma of the fault.
    pub fn vma(&self) -> Vma<'_> {
        // SAFETY: The fault holds the vma (and the mmap_lock or the vma lock).
        let vma = unsafe { bindings::aikrs_vmf_vma(self.vmf) };
        let (mut start, mut end, mut pgoff, mut shared) = (0, 0, 0, false);
        // SAFETY: As above; only reads.
        unsafe { bindings::aikrs_vma_info(vma, &mut start, &mut end, &mut pgoff, &mut shared) };
        Vma {
            vma,
            start,
            end,
            writable: true,
            _guard: core::marker::PhantomData,
        }
    }
}

/// Frees a page from [`alloc_pages`].
///
/// # Safety
///
/// `pfn` came from `alloc_pages` and nothing uses it any more.
pub unsafe fn free_page(pfn: u64) {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::aikrs_free_page_pfn(pfn as usize) }
}

/// Copies page `src` to page `dst`.
///
/// # Safety
///
/// Both must be pages of system memory that stay allocated meanwhile, `dst` one the
/// caller may write.
pub unsafe fn copy_page(dst: u64, src: u64) {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::aikrs_copy_page_pfn(dst as usize, src as usize) }
}

/// Zeroes page `pfn`.
///
/// # Safety
///
/// As for [`copy_page`]'s `dst`.
pub unsafe fn clear_page(pfn: u64) {
    // SAFETY: As the caller guarantees.
    unsafe { bindings::aikrs_clear_page_pfn(pfn as usize) }
}

/// Whether `pfn` is a ZONE_DEVICE page (device-private or other).
///
/// # Safety
///
/// `pfn` must have a `struct page` (a pfn reported by a migration, say).
pub unsafe fn is_zone_device(pfn: u64) -> bool {
    // SAFETY: Reads the page flags of a page that exists, as the caller guarantees.
    unsafe { bindings::aikrs_pfn_is_zone_device(pfn as usize) }
}

/// Prepares free device-private page `pfn` for a migration to it (refcount 1, locked)
/// and stores `data` with it (given back by [`DevmemOps::page_free`]). With `order`
/// [`HUGE_ORDER`] (only where large device folios exist, `CONFIG_AIKRS_DEVMEM_COMPOUND`),
/// the [`HUGE_PAGES`] pages from `pfn` become one folio; else `order` must be 0.
///
/// # Safety
///
/// `pfn` (and with `order`, the pages after it, `pfn` aligned to them) must be free
/// pages of a live [`DevicePrivate`] of the caller's (never handed out, or given back
/// by `page_free` since), handed out once, and their range not being dropped.
pub unsafe fn page_init(pfn: u64, data: usize, order: u32) {
    // SAFETY: As the caller guarantees; the page's `pgmap` is its range's, mapped.
    unsafe {
        let pgmap = bindings::aikrs_pfn_pgmap(pfn as usize);
        bindings::aikrs_devmem_page_init(pfn as usize, pgmap, data as *mut c_void, order)
    }
}

/// `1 << order` physically contiguous pages of system memory for device data, each
/// its own page (freed one by one with [`free_page`]): the first pfn. `None`: no
/// memory (a large request does not try hard).
pub fn alloc_pages(order: u32) -> Option<u64> {
    // SAFETY: Allocates pages; no other requirement.
    let pfn = unsafe { bindings::aikrs_alloc_pages_split(order) };
    (pfn != 0).then_some(pfn as u64)
}

/// A locked 2 MiB folio of system memory to migrate a 2 MiB device folio into (for
/// `vma` at 2 MiB-aligned `addr`, or `None` for an eviction). `None`: no memory. For
/// a vma it does not try hard (the migration can fall back to base pages); for an
/// eviction, which cannot, it tries harder (`__GFP_RETRY_MAYFAIL`).
#[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
pub fn alloc_migrate_huge(for_migration: Option<(&DevFaultVma, usize)>) -> Option<u64> {
    let (vma, addr) = match for_migration {
        Some((v, a)) => (v.0, a),
        None => (core::ptr::null_mut(), 0),
    };
    // SAFETY: Allocates a folio; `vma`, if given, is valid (see `DevFaultVma`).
    let pfn = unsafe { bindings::aikrs_alloc_migrate_folio(vma, addr, HUGE_ORDER) };
    (pfn != 0).then_some(pfn as u64)
}

/// A page made exclusive to the device ([`make_device_exclusive`]): the CPU page
/// table maps it through a device-exclusive entry, so a CPU access first calls the
/// notifiers (the device must drop its atomic mapping). Locked and referenced while
/// this exists: map it in the device table before dropping it.
pub struct ExclusivePage {
    page: *mut bindings::page,
}

impl ExclusivePage {
    /// The page frame.
    pub fn pfn(&self) -> u64 {
        // SAFETY: A valid page, referenced while `self` exists.
        unsafe { bindings::aikrs_page_to_pfn(self.page) as u64 }
    }
}

impl Drop for ExclusivePage {
    fn drop(&mut self) {
        // SAFETY: Locked and referenced by `make_device_exclusive`; released once.
        unsafe { bindings::aikrs_exclusive_done(self.page) }
    }
}

/// Makes the page at `addr` exclusive to the device (C `make_device_exclusive`, or
/// `make_device_exclusive_range` before Linux 6.15): faults it in writable and
/// replaces its CPU mapping with a device-exclusive entry. `owner` is passed to the
/// notifiers. Errors: `EBUSY` (or another error) when the page cannot be made
/// exclusive (not anonymous, say).
// `owner` is only passed on to the notifiers as an identifier, never dereferenced.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn make_device_exclusive(
    mm: &MmapReadGuard,
    addr: usize,
    owner: *mut c_void,
) -> Result<ExclusivePage> {
    // SAFETY: The guard holds a user reference and the mmap_lock for reading.
    let page = unsafe { bindings::aikrs_make_device_exclusive(mm.mm, addr, owner) };
    if page.is_null() {
        return Err(EBUSY);
    }
    let v = page as isize;
    if (-4095..0).contains(&v) {
        return Err(Error::from_errno(v as i32));
    }
    Ok(ExclusivePage { page })
}
