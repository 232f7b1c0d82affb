// SPDX-License-Identifier: GPL-2.0

//! The mirror devices `/dev/aikrs_hmm0` and `/dev/aikrs_hmm1`: the ABI of the kernel's
//! HMM test driver (`lib/test_hmm_uapi.h`, "dmirror"), so that its self test
//! (`tools/testing/selftests/mm/hmm-tests.c`) runs against them unchanged.
//!
//! Each open file mirrors the whole address space of the process that opened it into a
//! [`DeviceTable`] (the model device's MMU) through a [`Mirror`]: the interval notifier
//! over the whole `mm`, its lock, and the table behind it. The model device then reads
//! and writes process memory through its own page table only:
//!
//! - `HMM_DMIRROR_READ` / `WRITE`: copy `npages` pages from / to the process through the
//!   device table. A page the table does not map (or maps read-only, for a write) is a
//!   device fault: the rest of the range is faulted in with `hmm_range_fault()` and
//!   committed to the table (2 MiB entries where the CPU maps a 2 MiB page), and the
//!   copy goes on. `faults` counts the device faults, `cpages` the pages copied.
//! - `HMM_DMIRROR_SNAPSHOT`: one byte per page saying how the CPU maps it (read, write,
//!   zero page, PMD-sized, device-private here or elsewhere, error), without faulting.
//!
//! The model device is software: "device memory access" is a copy from or to the page
//! frame the device table names, done under the mirror lock so that no invalidation
//! can complete (and the page be freed) meanwhile.
//!
//! `mmap` of the device node gives zeroed pages of system memory, as the C driver does.
//!
//! - `HMM_DMIRROR_MIGRATE_TO_DEV` / `TO_SYS`: migrate the range to the device's memory
//!   (`MEMORY_DEVICE_PRIVATE` pages, added 256 MiB at a time; each page's data lives
//!   in a backing page of system memory, as in the C driver) and back. A CPU access
//!   to a page in device memory migrates it back (`migrate_to_ram`).
//! - `HMM_DMIRROR_RELEASE`: all device memory back to system memory, and removed.
//!
//! - `HMM_DMIRROR_EXCLUSIVE` / `CHECK_EXCLUSIVE`: device-exclusive entries for device
//!   atomics (`make_device_exclusive`), mapped with atomic permission until a CPU
//!   access revokes them.
//!
//! # Locking
//!
//! Locks nest in this order (each is only taken while holding none after it):
//!
//! 1. the `mmap_lock` of a mirrored process (for reading: migrations, one 2 MiB block
//!    at a time, `range_fault`'s walks, `make_device_exclusive`), and the page locks of
//!    the pages a migration holds;
//! 2. `DevMem::chunks` (mutex): the ranges of device memory. Taken by an allocation that
//!    finds no free page (in a migration's copy step, so under 1) and by
//!    `Dev::release_chunks`, which holds it only to take the ranges out and to put back
//!    those it cannot remove yet;
//! 3. `DevMem::free` (spinlock): the free lists, every range's `Chunk::removing`, and
//!    the counting of a page taken off a free list in its range's `Chunk::inflight`.
//!    Taken by `page_free`, which runs wherever the last reference to a device page goes
//!    (it cannot sleep), so nothing sleeps or allocates under it.
//!
//! `DevMem::evict` (module exit only) is taken before `chunks`. A mirror's lock (one per
//! open file, in [`Mirror`]) is taken by the invalidate callback (under the `mmap_lock`
//! and page locks of whoever invalidates) and around every read or change of the device
//! table; neither `chunks` nor `free` is ever taken under it, nor it under them.
//!
//! No lock is held across work that grows with an ioctl's arguments: the mirror lock is
//! held for at most [`COPY_CHUNK`] pages, one 2 MiB block or [`CHECK_CHUNK`] table
//! entries, the `mmap_lock` for one 2 MiB block (a migration) or one page
//! (`make_device_exclusive`). Ranges are checked against the user address space before
//! any work (`EINVAL`), and every loop over a range stops when the task is killed
//! (`EINTR`).

use crate::pt::{self, Perm};
use crate::table::{DeviceTable, NodePool};
use core::ffi::c_void;
use core::ops::ControlFlow;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::{
    aikrs::{
        compat::user_slice,
        cpu,
        debugfs::Counters,
        devmem::{
            self, DevFault, DevicePrivate, DevmemOps, MigratePfn, Select, HUGE_ORDER, HUGE_PAGES,
        },
        hmm::{self, HmmPfn, Invalidation, Mirror, MirrorGuard, MirrorOps, PageKind, Want},
        kthread,
        miscdev::{FileOps, OpenFile, VmaNew},
    },
    alloc::{
        flags::{__GFP_ZERO, GFP_KERNEL},
        KBox, KVVec, KVec, VVec,
    },
    new_mutex, new_spinlock,
    page::Page,
    prelude::*,
    sync::{Mutex, SpinLock},
};

const PAGE_SIZE: usize = hmm::PAGE_SIZE;
const PAGE_SHIFT: u32 = 12;

/// `struct hmm_dmirror_cmd` (five `__u64`: addr, ptr, npages, cpages, faults).
const CMD_SIZE: usize = 40;
const IOC_MAGIC: u32 = b'H' as u32;
const READ: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x00);
const WRITE: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x01);
const MIGRATE_TO_DEV: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x02);
const MIGRATE_TO_SYS: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x03);
const SNAPSHOT: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x04);
const EXCLUSIVE: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x05);
const CHECK_EXCLUSIVE: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x06);
const RELEASE: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x07);
/// Sets the file's flags to `npages` (`HMM_DMIRROR_FLAGS`, Linux 7 ABI).
const FLAGS: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x08);
/// `HMM_DMIRROR_FLAG_FAIL_ALLOC`: the next allocation of a migration run by this file
/// fails (once), so that the fallback paths can be tested.
const FLAG_FAIL_ALLOC: u64 = 1 << 0;
/// `HMM_DMIRROR_READ`, faulting with the `mmap_lock` droppable (Linux 7 ABI; where the
/// kernel has `hmm_range_fault_unlocked_timeout()`).
#[cfg_attr(not(CONFIG_AIKRS_HMM_FAULT_UNLOCKED), allow(dead_code))]
const READ_UNLOCKED: u32 = kernel::ioctl::_IOWR::<[u8; CMD_SIZE]>(IOC_MAGIC, 0x09);

/// Snapshot bytes (`HMM_DMIRROR_PROT_*`).
const PROT_ERROR: u8 = 0xff;
const PROT_NONE: u8 = 0x00;
const PROT_READ: u8 = 0x01;
const PROT_WRITE: u8 = 0x02;
const PROT_PMD: u8 = 0x04;
const PROT_PUD: u8 = 0x08;
const PROT_ZERO: u8 = 0x10;
const PROT_DEV_PRIVATE_LOCAL: u8 = 0x20;
const PROT_DEV_PRIVATE_REMOTE: u8 = 0x30;

/// Pages copied under one hold of the mirror lock (the bounce buffer: 256 KiB).
///
/// The bounce buffer (and the snapshot's) is vmalloc'ed, as the C driver's: under
/// QEMU TCG, `copy_to_user` from kmalloc'ed memory (the direct map, mapped with huge
/// pages) measured about 5 times slower than from vmalloc'ed memory (4 KiB pages),
/// which made every copy-bound figure of the benchmark an emulator artifact.
const COPY_CHUNK: usize = 64;
/// Pages walked by one `hmm_range_fault()` call: one 2 MiB-aligned block, so that a
/// PMD mapping arrives whole and becomes one huge device entry.
const FAULT_CHUNK: usize = pt::HUGE_PAGES as usize;
/// Device-table entries `HMM_DMIRROR_CHECK_EXCLUSIVE` looks at under one hold of the
/// mirror lock.
const CHECK_CHUNK: usize = 512;

/// Counters in debugfs `aikrs_hmm/<device>/`.
pub(crate) mod ctr {
    pub(crate) const DEVICE_FAULTS: usize = 0;
    pub(crate) const PAGES_MAPPED: usize = 1;
    pub(crate) const HUGE_MAPPED: usize = 2;
    pub(crate) const PAGES_READ: usize = 3;
    pub(crate) const PAGES_WRITTEN: usize = 4;
    pub(crate) const INVALIDATIONS: usize = 5;
    pub(crate) const PAGES_INVALIDATED: usize = 6;
    pub(crate) const SNAPSHOT_PAGES: usize = 7;
    pub(crate) const MIGRATED_TO_DEVICE: usize = 8;
    pub(crate) const MIGRATED_TO_RAM: usize = 9;
    pub(crate) const MIGRATED_TO_RAM_FAULT: usize = 10;
    pub(crate) const CHUNKS_RELEASED: usize = 11;
    pub(crate) const EXCLUSIVE: usize = 12;
    pub(crate) const HUGE_DEVICE_FOLIOS: usize = 13;
    pub(crate) const N: usize = 14;
    pub(crate) const NAMES: [&core::ffi::CStr; N] = [
        c"device_faults",
        c"pages_mapped",
        c"huge_mapped",
        c"pages_read",
        c"pages_written",
        c"invalidations",
        c"pages_invalidated",
        c"snapshot_pages",
        c"migrated_to_device",
        c"migrated_to_ram",
        c"migrated_to_ram_on_cpu_fault",
        c"chunks_released",
        c"exclusive_pages",
        c"huge_device_folios",
    ];
}

/// One model device: its counters and its memory. Its address identifies its
/// device-private memory (the `owner` of its pages and mirrors).
pub(crate) struct Dev {
    pub(crate) counters: Counters<{ ctr::N }>,
    mem: Pin<KBox<DevMem>>,
}

/// The size of one range of device-private memory (added as needed).
const CHUNK_SIZE: u64 = 256 << 20;
const CHUNK_PAGES: usize = (CHUNK_SIZE >> 12) as usize;
/// At most this many ranges (4 GiB of device memory) per device, counting those that a
/// release could not remove yet.
const MAX_CHUNKS: usize = 16;
/// Eviction rounds of `HMM_DMIRROR_RELEASE` (10 ms apart) before it gives up on pages
/// still in use (`EBUSY`).
const RELEASE_ROUNDS: u32 = 100;
/// Pages per migration round: one 2 MiB-aligned block, so that a 2 MiB folio (a THP,
/// or one of device memory) is collected whole. (The C driver used 64 before Linux 7.)
const MIGRATE_CHUNK: usize = HUGE_PAGES;
const HUGE_SIZE: usize = HUGE_PAGES * PAGE_SIZE;

/// The device memory of a [`Dev`]: ranges of device-private pages (the model device's
/// memory; each page's data lives in a page of system memory, its "backing" page, as
/// in the C driver) and the free pages.
///
/// A range is added either for base pages or, where large device folios exist
/// (`CONFIG_AIKRS_DEVMEM_COMPOUND`), for 2 MiB folios, as the C driver does: its pages
/// go on the free list of that size. A 2 MiB folio split by the kernel comes back as
/// base pages (on the base-page list); free 2 MiB blocks are never broken up, so a
/// free block never has a live page inside it (`migrate_device_range` skips the
/// whole block of a free large folio).
///
/// Only pages of ranges in `chunks` that are not being removed are ever on a free list
/// (see `Dev::release_chunks`). Lock order: `chunks`, then `free` (see the module
/// documentation).
#[pin_data]
struct DevMem {
    #[pin]
    chunks: Mutex<Ranges>,
    #[pin]
    free: SpinLock<FreeLists>,
    /// The source and destination arrays of eviction rounds, made once (eviction
    /// runs on module exit, where failing to allocate is no option).
    #[pin]
    evict: Mutex<KVec<MigratePfn>>,
}

/// One range of device memory.
type DevRange = Pin<KBox<DevicePrivate<Chunk>>>;

/// The ranges of device memory of a [`Dev`].
struct Ranges {
    /// The ranges: in use, or (`Chunk::removing`) left by a release that could not remove
    /// them yet, for the next one. `None`: a free slot.
    slots: [Option<DevRange>; MAX_CHUNKS],
    /// Ranges that releases in progress have taken out of `slots`. They may put some
    /// back, so new ranges are only added while `slots` has room for all of them.
    releasing: usize,
}

impl Ranges {
    /// The ranges in `slots`.
    fn count(&self) -> usize {
        self.slots.iter().filter(|r| r.is_some()).count()
    }
}

/// A stack of free device pages that never allocates: `pfns.len()` is its capacity.
struct FreeList {
    pfns: KVVec<u64>,
    len: usize,
}

impl FreeList {
    fn push(&mut self, pfn: u64) {
        if let Some(slot) = self.pfns.get_mut(self.len) {
            *slot = pfn;
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        self.pfns.get(self.len).copied()
    }

    /// Grows the capacity to `cap` with `bigger` (made outside the lock).
    fn grow(&mut self, mut bigger: KVVec<u64>) -> KVVec<u64> {
        bigger[..self.len].copy_from_slice(&self.pfns[..self.len]);
        core::mem::replace(&mut self.pfns, bigger)
    }
}

/// The free device memory: base pages, and the first pages of free 2 MiB blocks.
/// Capacities: every page of every range, and every block.
struct FreeLists {
    small: FreeList,
    huge: FreeList,
}

impl FreeLists {
    fn list(&mut self, huge: bool) -> &mut FreeList {
        if huge {
            &mut self.huge
        } else {
            &mut self.small
        }
    }
}

/// The data of one range of device memory.
struct Chunk {
    dev: &'static Dev,
    /// Set while the range is being removed: its freed pages are not reused. Written and
    /// read under `DevMem::free` only (it needs no ordering of its own).
    removing: AtomicBool,
    /// Pages of the range taken off a free list (counted under `DevMem::free`, with the
    /// pop) or fresh from `Dev::add_chunk` (counted under `DevMem::chunks`) and not
    /// initialised yet: the range must stay mapped until they are.
    inflight: AtomicUsize,
    /// Pages of the range handed out and not freed yet (a 2 MiB folio counts 512).
    live: AtomicU64,
    /// Negative control (`aikrs.planted_bug=hmm_page_free_race`): `page_free` reads
    /// `removing` before taking `DevMem::free`, as before the fix, and pauses in
    /// between to widen the window. `hmm_abi_test`'s `release_vs_page_free` must then
    /// make the kernel report.
    planted_race: bool,
}

impl Chunk {
    fn new(dev: &'static Dev) -> Self {
        Self {
            dev,
            removing: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            live: AtomicU64::new(0),
            planted_race: kernel::aikrs::compat::cmdline_is(
                "aikrs.planted_bug",
                "hmm_page_free_race",
            ),
        }
    }

    /// Whether no page of the range is in use or on its way out of a free list: once
    /// the range is `removing` (nothing puts its pages on a free list any more), this
    /// stays true, and unmapping the range (`memunmap_pages`) waits only for the end of
    /// the `page_free` calls that are running.
    fn idle(&self) -> bool {
        self.inflight.load(Ordering::Acquire) == 0 && self.live.load(Ordering::Acquire) == 0
    }
}

impl DevmemOps for Chunk {
    fn migrate_to_ram(&self, fault: &DevFault<'_>) -> Result {
        let vma = fault.vma();
        let owner = self.dev.owner();
        let short = core::cell::Cell::new(false);
        // A device folio the CPU maps whole (PMD) goes back whole, as a THP if one
        // can be had; a page of one the CPU maps with PTEs goes back alone (the
        // migration splits the folio).
        let huge = fault.order() == HUGE_ORDER;
        let start = if huge {
            fault.address() & !(HUGE_SIZE - 1)
        } else {
            fault.address()
        };
        let run = |src: &mut [MigratePfn], dst: &mut [MigratePfn], select: Select| {
            let end = start + src.len() * PAGE_SIZE;
            devmem::migrate_vma(
                &vma,
                start,
                end,
                src,
                dst,
                owner,
                select,
                Some(fault),
                |src, dst| short.set(copy_to_ram(src, dst, owner, Some((&vma, start)), &|| false)),
                |_, _| {},
            )
        };
        let n = if huge && start >= vma.start() && start + HUGE_SIZE <= vma.end() {
            let mut buf = KVec::from_elem(MigratePfn::default(), 2 * HUGE_PAGES, GFP_KERNEL)?;
            let (src, dst) = buf.split_at_mut(HUGE_PAGES);
            run(src, dst, Select::DEVICE_PRIVATE.compound())?
        } else {
            let (mut src, mut dst) = ([MigratePfn::default(); 1], [MigratePfn::default(); 1]);
            run(&mut src, &mut dst, Select::DEVICE_PRIVATE)?
        };
        self.dev.counters.add(ctr::MIGRATED_TO_RAM_FAULT, n as u64);
        if short.get() {
            // No page to migrate into: `VM_FAULT_OOM`, as the C driver.
            return Err(ENOMEM);
        }
        Ok(())
    }

    fn page_free(&self, pfn: u64, backing: usize, order: u32) {
        let n = 1u64 << order;
        if backing != 0 {
            for i in 0..n {
                // SAFETY: The backing pages (each its own page, see `alloc_pages`) were
                // allocated for this device folio when it was handed out, and the
                // folio is gone now: nothing maps it (mirror entries are invalidated
                // before a page can be freed).
                unsafe { devmem::free_page(backing as u64 + i) };
            }
        }
        // Only whole 2 MiB folios and base pages are reused. (The kernel splits device
        // folios to base pages only. The pages of a folio of another order would keep
        // its compound metadata while free, and `migrate_device_range` would then
        // skip live pages handed out from among them: such pages are retired.)
        if order == 0 || order == HUGE_ORDER {
            let planted = self.planted_race.then(|| {
                let removing = self.removing.load(Ordering::Relaxed);
                for _ in 0..20_000 {
                    core::hint::spin_loop();
                }
                removing
            });
            let mut free = self.dev.mem.free.lock();
            // Read under `free`, which `Dev::release_chunks` holds while it sets
            // `removing` and empties the free lists: either the page goes on a list
            // before the release empties it, or the release came first and the page is
            // not put back. (Read before taking the lock, a page freed during a release
            // could return to the list after it was emptied, of a range the release then
            // unmaps: the next allocation would hand out a freed `struct page`.)
            if !planted.unwrap_or_else(|| self.removing.load(Ordering::Relaxed)) {
                if order == HUGE_ORDER {
                    free.huge.push(pfn);
                } else {
                    free.small.push(pfn);
                }
            }
        }
        // The range may be removed once this is 0, but not unmapped before this call has
        // returned (`memunmap_pages` waits for that).
        self.live.fetch_sub(n, Ordering::Release);
    }

    /// The backing pages of a 2 MiB device folio are 512 contiguous pages: a folio
    /// split off at page `index` has its data at backing page `index`.
    fn split_data(&self, backing: usize, index: u64) -> usize {
        if backing == 0 {
            0
        } else {
            backing + index as usize
        }
    }
}

/// The backing page (system memory holding the data) of device page `pfn` of the
/// device `owner`; `None` for any other page.
///
/// # Safety
///
/// `pfn` must have a `struct page` and be held: reported by a migration, or by
/// `hmm_range_fault` with the mirror's sequence check passed.
unsafe fn backing_of(pfn: u64, owner: *mut c_void) -> Option<u64> {
    // SAFETY: As the caller guarantees.
    let (data, index) = unsafe { DevicePrivate::<Chunk>::page_data(pfn, owner) }?;
    (data != 0).then_some(data as u64 + index)
}

/// The `copy` step of a migration to system memory: for every device page collected,
/// a new page (for `at`: the vma and first address of a `migrate_vma` round; `None`:
/// an eviction) filled from its backing page. A 2 MiB device folio goes to a 2 MiB
/// folio, or (if none can be had, or `fail`) to 512 base pages, which makes the
/// migration split the device folio; an eviction cannot split, so it leaves the folio
/// for a later round. `fail()` says whether an allocation is to fail (fault injection,
/// `FLAG_FAIL_ALLOC`): then a 2 MiB folio goes to base pages, a base page stays.
///
/// Returns whether a page was left behind for lack of memory (or by fault injection).
fn copy_to_ram(
    src: &[MigratePfn],
    dst: &mut [MigratePfn],
    owner: *mut c_void,
    at: Option<(&devmem::Vma<'_>, usize)>,
    fail: &dyn Fn() -> bool,
) -> bool {
    let mut short = false;
    let mut i = 0;
    while i < src.len() {
        let s = src[i];
        let Some(dpfn) = s.pfn().filter(|_| s.is_migrate()) else {
            i += 1;
            continue;
        };
        // SAFETY: `dpfn` was reported by the migration, which holds it.
        let Some(backing) = (unsafe { backing_of(dpfn, owner) }) else {
            i += 1;
            continue;
        };
        let alloc_for = at.map(|(vma, addr)| (vma.for_alloc(), addr + i * PAGE_SIZE));
        let n = s.nr_pages().min(src.len() - i);
        if s.is_compound() {
            #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
            if !fail() {
                if let Some(new) =
                    devmem::alloc_migrate_huge(alloc_for.as_ref().map(|(v, a)| (v, *a)))
                {
                    for j in 0..n as u64 {
                        // SAFETY: `new` is a fresh folio of 512 pages; the backing pages
                        // belong to a device folio that the migration holds.
                        unsafe { devmem::copy_page(new + j, backing + j) };
                    }
                    dst[i] = MigratePfn::new(new, s.is_write()).compound();
                    i += n;
                    continue;
                }
            }
            if at.is_none() {
                i += 1;
                continue;
            }
        } else if fail() {
            short = true;
            i += 1;
            continue;
        }
        for j in 0..n {
            let new = match &alloc_for {
                Some((vma, addr)) => match devmem::alloc_page(vma, addr + j * PAGE_SIZE) {
                    Some(p) => p,
                    None => {
                        short = true;
                        break;
                    }
                },
                None => devmem::alloc_evict_page(),
            };
            // SAFETY: `new` is a fresh page; the backing page belongs to a device page
            // that the migration holds (collected and locked).
            unsafe { devmem::copy_page(new, backing + j as u64) };
            dst[i + j] = MigratePfn::new(new, s.is_write());
        }
        i += n;
    }
    short
}

impl Dev {
    pub(crate) fn new(name: &core::ffi::CStr) -> Result<Self> {
        let evict = KVec::from_elem(MigratePfn::default(), 2 * MIGRATE_CHUNK, GFP_KERNEL)?;
        Ok(Self {
            counters: Counters::new(name, None, ctr::NAMES)?,
            mem: KBox::pin_init(
                pin_init!(DevMem {
                    chunks <- new_mutex!(Ranges {
                        slots: core::array::from_fn(|_| None),
                        releasing: 0,
                    }),
                    free <- new_spinlock!(FreeLists {
                        small: FreeList {
                            pfns: KVVec::new(),
                            len: 0,
                        },
                        huge: FreeList {
                            pfns: KVVec::new(),
                            len: 0,
                        },
                    }),
                    evict <- new_mutex!(evict),
                }),
                GFP_KERNEL,
            )?,
        })
    }

    fn owner(&self) -> *mut c_void {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// A free device page (`huge`: the first page of a free 2 MiB block, made one
    /// folio) whose data lives in system page(s) from `backing`; adds a range of
    /// device memory when none is free. `None`: no device memory left.
    ///
    /// `chunks` is only taken to add a range: a migration holds its destination pages
    /// locked while it allocates the next, and [`Dev::release_chunks`] waits for pages
    /// without holding `chunks`.
    fn alloc_dev_page(&'static self, backing: u64, huge: bool) -> Option<u64> {
        let (pfn, chunk) = self.pop_or_grow(huge)?;
        let order = if huge { HUGE_ORDER } else { 0 };
        // SAFETY: `pfn` (with `huge`, its 2 MiB block) was on a free list (or is fresh
        // from `add_chunk`): free device-private pages of ours, handed out once (they
        // have left the list). Their range stays mapped: its `inflight` counts them.
        unsafe { devmem::page_init(pfn, backing as usize, order) };
        // SAFETY: The range lives while its `inflight` counts this page:
        // `release_chunks` removes only ranges whose count is 0.
        let chunk = unsafe { chunk.as_ref() };
        chunk.live.fetch_add(1 << order, Ordering::Relaxed);
        // The last use of `chunk`: from here on, the range may be removed once the page
        // is freed (and evicted first if it is in use).
        chunk.inflight.fetch_sub(1, Ordering::Release);
        Some(pfn)
    }

    /// A free page (`huge`: block) taken off the free lists, or the first of a range
    /// added for it, and its range, whose `inflight` counts it: `alloc_dev_page` must
    /// uncount it.
    fn pop_or_grow(&'static self, huge: bool) -> Option<(u64, NonNull<Chunk>)> {
        // The free list's guard is dropped at the end of the statement.
        let popped = self.pop(&mut self.mem.free.lock(), huge);
        if popped.is_some() {
            return popped;
        }
        let mut ranges = self.mem.chunks.lock();
        // Another thread may have added a range meanwhile.
        let again = self.pop(&mut self.mem.free.lock(), huge);
        match again {
            Some(p) => Some(p),
            None => self.add_chunk(&mut ranges, huge).ok(),
        }
    }

    /// Takes a page (`huge`: block) off a free list and counts it in its range's
    /// `inflight`, under `free` (the caller's guard), so that a release that empties the
    /// lists after this waits for the page to be initialised.
    fn pop(&self, free: &mut FreeLists, huge: bool) -> Option<(u64, NonNull<Chunk>)> {
        let pfn = free.list(huge).pop()?;
        // SAFETY: `pfn` was on a free list, so it is a page of one of our ranges, mapped
        // and not being removed: `add_chunk` puts a new range's pages on the lists with
        // `chunks` held and the range then goes into `chunks`; a release empties the
        // lists, under this lock, before it takes a range out of `chunks`, and no page of
        // a range being removed goes back on them. The range stays mapped while its
        // `inflight` counts the page.
        let chunk = unsafe { DevicePrivate::<Chunk>::range_data(pfn, self.owner()) }?;
        chunk.inflight.fetch_add(1, Ordering::Relaxed);
        Some((pfn, NonNull::from(chunk)))
    }

    /// Adds a range of device memory, puts all its pages (`huge`: 2 MiB blocks) but
    /// the first on the free list and returns that one, counted in the new range's
    /// `inflight`.
    fn add_chunk(&'static self, ranges: &mut Ranges, huge: bool) -> Result<(u64, NonNull<Chunk>)> {
        let used = ranges.count();
        // Ranges being released count: the release may put them back.
        if used + ranges.releasing >= MAX_CHUNKS {
            return Err(ENOMEM);
        }
        let slot = ranges
            .slots
            .iter()
            .position(|r| r.is_none())
            .ok_or(ENOMEM)?;
        // Room on the free lists for every page and block of every range, made
        // outside the spinlock.
        let total = (used + 1) * CHUNK_PAGES;
        let small = KVVec::from_elem(0u64, total, GFP_KERNEL)?;
        let blocks = KVVec::from_elem(0u64, total / HUGE_PAGES, GFP_KERNEL)?;
        let chunk = DevicePrivate::new(CHUNK_SIZE, self.owner(), Chunk::new(self))?;
        let pfns = chunk.pfns();
        // Blocks must be 2 MiB aligned (ranges are section aligned, so they are; if
        // not, the range serves base pages only).
        let misaligned = huge && pfns.start % HUGE_PAGES as u64 != 0;
        let huge = huge && !misaligned;
        let old = {
            let mut free = self.mem.free.lock();
            let old = (free.small.grow(small), free.huge.grow(blocks));
            if huge {
                let nblocks = (pfns.end - pfns.start) / HUGE_PAGES as u64;
                for k in (1..nblocks).rev() {
                    free.huge.push(pfns.start + k * HUGE_PAGES as u64);
                }
            } else {
                let first = if misaligned {
                    pfns.start
                } else {
                    pfns.start + 1
                };
                for pfn in (first..pfns.end).rev() {
                    free.small.push(pfn);
                }
            }
            old
        };
        drop(old);
        let first = NonNull::from(chunk.data());
        if !misaligned {
            // Counted before the range is in `chunks`, where a release can find it.
            chunk.data().inflight.fetch_add(1, Ordering::Relaxed);
        }
        ranges.slots[slot] = Some(chunk);
        if misaligned {
            return Err(ENOMEM);
        }
        Ok((pfns.start, first))
    }

    /// Moves every page of device memory back to system memory and removes the device
    /// memory: `HMM_DMIRROR_RELEASE`, and module exit (`exiting`). `bufs`: the source and
    /// destination arrays of eviction rounds, `2 * MIGRATE_CHUNK` entries.
    ///
    /// Under `chunks` and `free`, every range is marked `removing` and the free lists
    /// are emptied; then the ranges are taken out of `chunks`, which is released before
    /// the eviction, so that a migration running meanwhile can finish (it may add a new
    /// range). A range is removed (unmapped) only once it is idle (`Chunk::idle`); the
    /// others are put back, still `removing`, for the next release: their pages keep
    /// working, and freed ones are not reused.
    ///
    /// Why each wait ends:
    ///
    /// 1. In-flight allocations (a range's `inflight`): after the lists were emptied no
    ///    page of these ranges can be taken off a list any more, so only allocations
    ///    that took one before are counted, and each uncounts it right after
    ///    `page_init` (which waits for nothing that user space controls).
    /// 2. Eviction rounds: pages in use are migrated to system memory, wherever they
    ///    are mapped. A page is skipped while someone else holds it locked (a migration
    ///    or CPU fault in progress, which ends) or, for a 2 MiB device folio, while no
    ///    2 MiB system folio can be had: the rounds repeat, 10 ms apart, until every
    ///    page is free, at most [`RELEASE_ROUNDS`] times (about a second) unless
    ///    `exiting`. A page still in use then fails the release with `EBUSY`.
    /// 3. Unmapping (`memunmap_pages`, when a range is dropped): it waits until every
    ///    page of the range is free. Only idle ranges are dropped, so it waits only for
    ///    `page_free` calls already running.
    ///
    /// Unless `exiting`, the waits of 1 and 2 end with `EINTR` when the task is killed,
    /// leaving the ranges not yet idle in `chunks`. Exiting (no file is open, so no
    /// allocation can start), the rounds go on until every page is free, as unmapping
    /// would wait for that anyway; every range is removed. (Allocating a system page for
    /// an eviction may wait for memory: `alloc_evict_page` cannot fail.)
    fn release_chunks(&self, bufs: &mut [MigratePfn], exiting: bool) -> Result {
        let mut old: [Option<DevRange>; MAX_CHUNKS] = core::array::from_fn(|_| None);
        let n = {
            let mut ranges = self.mem.chunks.lock();
            {
                let mut free = self.mem.free.lock();
                for r in ranges.slots.iter().flatten() {
                    r.data().removing.store(true, Ordering::Relaxed);
                }
                free.small.len = 0;
                free.huge.len = 0;
            }
            let mut n = 0;
            for (o, r) in old.iter_mut().zip(ranges.slots.iter_mut()) {
                *o = r.take();
                n += usize::from(o.is_some());
            }
            ranges.releasing += n;
            n
        };
        let res = self.evict(&old, bufs, exiting);
        let mut kept = 0;
        {
            let mut ranges = self.mem.chunks.lock();
            ranges.releasing -= n;
            for o in old.iter_mut() {
                let idle = match o {
                    Some(r) => r.data().idle(),
                    None => true,
                };
                if exiting || idle {
                    continue;
                }
                // There is a free slot for each range taken out: `add_chunk` leaves
                // room for them (`releasing`).
                if let Some(slot) = ranges.slots.iter_mut().find(|r| r.is_none()) {
                    *slot = o.take();
                    kept += 1;
                }
            }
        }
        // Unmapping waits for `page_free` calls still running (see 3 above).
        let removed = n - kept;
        drop(old);
        self.counters.add(ctr::CHUNKS_RELEASED, removed as u64);
        if kept == 0 {
            return Ok(());
        }
        // `EINTR` if the task was killed, else some page is still in use.
        res.and(Err(EBUSY))
    }

    /// The in-flight allocations and eviction rounds of [`Dev::release_chunks`] for the
    /// ranges `old`: `Ok` once every page of them is free.
    fn evict(&self, old: &[Option<DevRange>], bufs: &mut [MigratePfn], exiting: bool) -> Result {
        let step = || {
            if exiting {
                cpu::cond_resched();
                Ok(())
            } else {
                cpu::cond_resched_killable()
            }
        };
        // Pages taken off a free list before it was emptied are initialised (handed out)
        // first, so that the rounds see them.
        while old
            .iter()
            .flatten()
            .any(|r| r.data().inflight.load(Ordering::Acquire) != 0)
        {
            step()?;
            kthread::msleep(1);
        }
        let owner = self.owner();
        let (src, dst) = bufs.split_at_mut(MIGRATE_CHUNK);
        let mut round = 0;
        loop {
            for r in old.iter().flatten() {
                if r.data().live.load(Ordering::Acquire) == 0 {
                    continue;
                }
                let pfns = r.pfns();
                let mut first = pfns.start;
                while first < pfns.end {
                    step()?;
                    // Whole 2 MiB blocks: a large folio is collected only whole.
                    let n = ((pfns.end - first) as usize).min(MIGRATE_CHUNK);
                    // SAFETY: Pages of our own device-private range.
                    unsafe {
                        devmem::migrate_device_range(first, &mut src[..n], &mut dst[..n], |s, d| {
                            // Eviction pages never fail; a 2 MiB folio left behind is
                            // retried by the next round.
                            let _ = copy_to_ram(s, d, owner, None, &|| false);
                        })
                    };
                    first += n as u64;
                }
            }
            if old
                .iter()
                .flatten()
                .all(|r| r.data().live.load(Ordering::Acquire) == 0)
            {
                return Ok(());
            }
            round += 1;
            if !exiting && round >= RELEASE_ROUNDS {
                return Err(EBUSY);
            }
            step()?;
            kthread::msleep(10);
        }
    }

    /// A device page (`huge`: a 2 MiB device folio) holding a copy of system page(s)
    /// `spage` (`None`: zeroes), for a migration to device memory. `None`: no memory.
    fn copy_in(&'static self, spage: Option<u64>, huge: bool) -> Option<u64> {
        let (order, n) = if huge {
            (HUGE_ORDER, HUGE_PAGES as u64)
        } else {
            (0, 1)
        };
        let backing = devmem::alloc_pages(order)?;
        let Some(dpfn) = self.alloc_dev_page(backing, huge) else {
            for i in 0..n {
                // SAFETY: Just allocated, unused.
                unsafe { devmem::free_page(backing + i) };
            }
            return None;
        };
        for i in 0..n {
            // SAFETY: The backing pages are ours; the source pages are held by the
            // migration.
            unsafe {
                match spage {
                    Some(sp) => devmem::copy_page(backing + i, sp + i),
                    None => devmem::clear_page(backing + i),
                }
            };
        }
        if huge {
            self.counters.add(ctr::HUGE_DEVICE_FOLIOS, 1);
        }
        Some(dpfn)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // No file is open (module exit), but processes may still map device pages.
        let mut bufs = self.mem.evict.lock();
        // Cannot fail when exiting: it goes on until every page is free.
        let _ = self.release_chunks(bufs.as_mut_slice(), true);
    }
}

/// The state behind a mirror's lock: the device page table.
pub(crate) struct State {
    table: DeviceTable,
    dev: &'static Dev,
}

impl MirrorOps for State {
    fn invalidate(&mut self, inv: &Invalidation) {
        let start = (inv.start() as u64).min(pt::VA_END);
        let end = (inv.end() as u64).min(pt::VA_END);
        self.dev.counters.add(ctr::INVALIDATIONS, 1);
        if start < end {
            // Cannot fail: the range is page aligned (notifier ranges are), non-empty and
            // below `VA_END`; a huge entry whose split cannot allocate is dropped whole.
            if let Ok(n) = self.table.invalidate(start, end) {
                self.dev.counters.add(ctr::PAGES_INVALIDATED, n);
            }
        }
    }
}

/// An open device file: the mirror of the opener's address space.
pub(crate) struct MirrorFile {
    dev: &'static Dev,
    mirror: Pin<KBox<Mirror<State>>>,
    /// `HMM_DMIRROR_FLAGS`.
    flags: AtomicU64,
}

/// A decoded `struct hmm_dmirror_cmd`.
struct Cmd {
    addr: u64,
    ptr: u64,
    npages: u64,
    cpages: u64,
    faults: u64,
}

impl Cmd {
    fn read(arg: usize) -> Result<Self> {
        let mut raw = [0u8; CMD_SIZE];
        user_slice(arg, CMD_SIZE).reader().read_slice(&mut raw)?;
        let f = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        Ok(Self {
            addr: f(0),
            ptr: f(1),
            npages: f(2),
            cpages: 0,
            faults: 0,
        })
    }

    fn write(&self, arg: usize) -> Result {
        let mut raw = [0u8; CMD_SIZE];
        for (i, v) in [self.addr, self.ptr, self.npages, self.cpages, self.faults]
            .iter()
            .enumerate()
        {
            raw[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
        user_slice(arg, CMD_SIZE).writer().write_slice(&raw)
    }

    /// The range `[addr, end)`, checked as the C driver does (page aligned, non-empty,
    /// not wrapping) and against the user address space: it must end at or below
    /// `limit` (`EINVAL`).
    fn range(&self, limit: usize) -> Result<(usize, usize)> {
        let size = self.npages.checked_mul(PAGE_SIZE as u64).ok_or(EINVAL)?;
        let end = self.addr.checked_add(size).ok_or(EINVAL)?;
        if self.addr % PAGE_SIZE as u64 != 0 || end <= self.addr || end > limit as u64 {
            return Err(EINVAL);
        }
        Ok((
            usize::try_from(self.addr).map_err(|_| EINVAL)?,
            usize::try_from(end).map_err(|_| EINVAL)?,
        ))
    }
}

/// The 2 MiB-aligned blocks of `[start, end)` (the first and last may be partial), as
/// `(first address, pages)`: the unit of every `hmm_range_fault` walk here, so that a
/// PMD mapping arrives whole.
fn blocks(start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut addr = start;
    core::iter::from_fn(move || {
        if addr >= end {
            return None;
        }
        let next = ((addr | (pt::HUGE_SIZE as usize - 1)) + 1).min(end);
        let block = (addr, (next - addr) / PAGE_SIZE);
        addr = next;
        Some(block)
    })
}

/// Where a device fault of a read or write that missed in its copy window (ending at
/// `window_end`) stops. The first miss faults the rest of the range, `end` (one device
/// fault for the whole range, as the C driver counts it); a later miss (pages
/// invalidated since) only the window, so that invalidations running meanwhile cannot
/// make the work quadratic in the range (each miss faulting the whole rest again).
fn fault_end(faulted: &mut bool, window_end: usize, end: usize) -> usize {
    let to = if *faulted { window_end.min(end) } else { end };
    *faulted = true;
    to
}

/// Page `i` of a bounce buffer.
fn page_mut(buf: &mut [u8], i: usize) -> Option<&mut [u8; PAGE_SIZE]> {
    buf.get_mut(i * PAGE_SIZE..(i + 1) * PAGE_SIZE)?
        .try_into()
        .ok()
}

/// Page `i` of a bounce buffer, to read.
fn page_ref(buf: &[u8], i: usize) -> Option<&[u8; PAGE_SIZE]> {
    buf.get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE)?.try_into().ok()
}

/// The device permissions for a page the CPU maps as `e`.
fn perm_of(e: HmmPfn) -> Perm {
    if e.is_write() {
        Perm::READ.union(Perm::WRITE)
    } else {
        Perm::READ
    }
}

impl MirrorFile {
    /// The range of `cmd` (see [`Cmd::range`]), which must lie in the address space of
    /// the mirrored process: it is the address space of the process that opened the
    /// file, and every command works on it.
    fn range(&self, cmd: &Cmd) -> Result<(usize, usize)> {
        cmd.range(self.mirror.task_size())
    }

    /// Faults `[start, end)` into the device table, one 2 MiB-aligned block at a time
    /// (one device fault, as the C driver counts it). `unlocked`: with a walk that may
    /// drop the `mmap_lock` in a fault (`READ_UNLOCKED`).
    fn fault(&self, start: usize, end: usize, write: bool, unlocked: bool) -> Result {
        let mut pfns = KVec::<usize>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let want = if write { Want::Write } else { Want::Read };
        let owner = self.dev.owner();
        let dev = self.dev;
        for (addr, n) in blocks(start, end) {
            // A range may span the whole address space: stop when killed.
            cpu::cond_resched_killable()?;
            let install = |g: &mut MirrorGuard<'_, State>, entries: &[HmmPfn]| {
                commit(g, addr, entries, write, owner, dev)
            };
            let pfns = &mut pfns[..n];
            #[cfg(CONFIG_AIKRS_HMM_FAULT_UNLOCKED)]
            if unlocked {
                self.mirror
                    .range_fault_unlocked(addr, pfns, want, install)??;
                continue;
            }
            let _ = unlocked;
            self.mirror.range_fault(addr, pfns, want, install)??;
        }
        Ok(())
    }

    /// Copies the pages of `[pos, pos + n pages)` that the device table maps, from the
    /// first on, into `bounce` (the device's read) and returns how many; it stops at
    /// the first page the table does not map.
    fn copy_mapped(&self, pos: usize, n: usize, bounce: &mut [u8]) -> usize {
        let g = self.mirror.lock();
        let mut done = 0;
        while done < n {
            let va = (pos + done * PAGE_SIZE) as u64;
            let (Some(leaf), Some(dst)) = (g.table.lookup(va), page_mut(bounce, done)) else {
                break;
            };
            // SAFETY: The entry is in the device table, read under the mirror lock: the
            // page cannot be freed before an invalidation removes the entry, and
            // invalidations wait for this lock.
            unsafe { hmm::copy_from_pfn(dst, leaf.pfn) };
            done += 1;
        }
        done
    }

    /// `HMM_DMIRROR_READ`.
    fn read(&self, cmd: &mut Cmd) -> Result {
        self.read_with(cmd, false)
    }

    /// `HMM_DMIRROR_READ_UNLOCKED`: a read whose device faults may drop the
    /// `mmap_lock` (a page behind userfaultfd can be faulted in).
    #[cfg(CONFIG_AIKRS_HMM_FAULT_UNLOCKED)]
    fn read_unlocked(&self, cmd: &mut Cmd) -> Result {
        self.read_with(cmd, true)
    }

    fn read_with(&self, cmd: &mut Cmd, unlocked: bool) -> Result {
        let (start, end) = self.range(cmd)?;
        let mut bounce = VVec::<u8>::from_elem(0, COPY_CHUNK * PAGE_SIZE, GFP_KERNEL)?;
        let mut pos = start;
        let mut faulted = false;
        while pos < end {
            cpu::cond_resched_killable()?;
            let n = ((end - pos) / PAGE_SIZE).min(COPY_CHUNK);
            let done = self.copy_mapped(pos, n, &mut bounce);
            let off = (pos - start) as u64;
            let uptr = cmd.ptr.checked_add(off).ok_or(EFAULT)?;
            user_slice(uptr as usize, done * PAGE_SIZE)
                .writer()
                .write_slice(&bounce[..done * PAGE_SIZE])?;
            cmd.cpages += done as u64;
            self.dev.counters.add(ctr::PAGES_READ, done as u64);
            pos += done * PAGE_SIZE;
            if done < n {
                let to = fault_end(&mut faulted, pos + (n - done) * PAGE_SIZE, end);
                self.fault(pos, to, false, unlocked)?;
                cmd.faults += 1;
                self.dev.counters.add(ctr::DEVICE_FAULTS, 1);
            }
        }
        Ok(())
    }

    /// `HMM_DMIRROR_WRITE`.
    fn write(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = self.range(cmd)?;
        let mut bounce = VVec::<u8>::from_elem(0, COPY_CHUNK * PAGE_SIZE, GFP_KERNEL)?;
        let mut pos = start;
        let mut faulted = false;
        while pos < end {
            let n = ((end - pos) / PAGE_SIZE).min(COPY_CHUNK);
            let off = (pos - start) as u64;
            let uptr = cmd.ptr.checked_add(off).ok_or(EFAULT)?;
            user_slice(uptr as usize, n * PAGE_SIZE)
                .reader()
                .read_slice(&mut bounce[..n * PAGE_SIZE])?;
            let mut done = 0;
            while done < n {
                cpu::cond_resched_killable()?;
                {
                    let g = self.mirror.lock();
                    while done < n {
                        let va = (pos + done * PAGE_SIZE) as u64;
                        match (g.table.lookup(va), page_ref(&bounce, done)) {
                            (Some(leaf), Some(src)) if leaf.perm.contains(Perm::WRITE) => {
                                // SAFETY: A writable entry of the device table, used under
                                // the mirror lock (see `read`).
                                unsafe { hmm::copy_to_pfn(leaf.pfn, src) };
                                done += 1;
                            }
                            _ => break,
                        }
                    }
                }
                if done < n {
                    let to = fault_end(&mut faulted, pos + n * PAGE_SIZE, end);
                    self.fault(pos + done * PAGE_SIZE, to, true, false)?;
                    cmd.faults += 1;
                    self.dev.counters.add(ctr::DEVICE_FAULTS, 1);
                }
            }
            cmd.cpages += n as u64;
            self.dev.counters.add(ctr::PAGES_WRITTEN, n as u64);
            pos += n * PAGE_SIZE;
        }
        Ok(())
    }

    /// Whether the next allocation is to fail (`FLAG_FAIL_ALLOC`, then cleared).
    fn take_fail_alloc(&self) -> bool {
        self.flags.fetch_and(!FLAG_FAIL_ALLOC, Ordering::Relaxed) & FLAG_FAIL_ALLOC != 0
    }

    /// `HMM_DMIRROR_FLAGS`: `npages` is the new set of flags (`EINVAL` for unknown
    /// ones).
    fn set_flags(&self, cmd: &mut Cmd) -> Result {
        if cmd.npages & !FLAG_FAIL_ALLOC != 0 {
            return Err(EINVAL);
        }
        self.flags.store(cmd.npages, Ordering::Relaxed);
        Ok(())
    }

    /// Migrates the pages of `[start, end)` that `select` names, in rounds of one
    /// `migrate_vma` each within one vma and one 2 MiB-aligned block, with the
    /// `mmap_lock` held: `copy(vma, addr, src, dst)` is the copy step of the round at
    /// `addr`. Each round's pages are added to counter `counter`; returns them all.
    /// `EINVAL` if part of the range is not in a readable vma.
    ///
    /// The `mmap_lock` is held for one 2 MiB block at a time, not across the range:
    /// the process's own `mmap`/`munmap` wait for one block at most, and the loop stops
    /// between blocks when the task is killed (`EINTR`).
    ///
    /// Nothing is mapped in the device table here: pages in device memory are mapped
    /// afterwards by `map_local`, under the sequence check (mapping them from the
    /// migration, unchecked, could keep an entry for a page that a concurrent zap,
    /// `MADV_DONTNEED`, has already had freed).
    fn migrate_range(
        &self,
        start: usize,
        end: usize,
        select: Select,
        counter: usize,
        mut copy: impl FnMut(&devmem::Vma<'_>, usize, &[MigratePfn], &mut [MigratePfn]),
    ) -> Result<u64> {
        let owner = self.dev.owner();
        let mut buf = KVec::from_elem(MigratePfn::default(), 2 * MIGRATE_CHUNK, GFP_KERNEL)?;
        let (src, dst) = buf.split_at_mut(MIGRATE_CHUNK);
        let mut total = 0;
        for (addr, n) in blocks(start, end) {
            cpu::cond_resched_killable()?;
            let mm = self.mirror.mmap_read()?;
            let block_end = addr + n * PAGE_SIZE;
            let mut a = addr;
            while a < block_end {
                let vma = mm.vma_lookup(a).ok_or(EINVAL)?;
                let next = block_end.min(vma.end());
                let n = devmem::migrate_vma(
                    &vma,
                    a,
                    next,
                    src,
                    dst,
                    owner,
                    select,
                    None,
                    |src, dst| copy(&vma, a, src, dst),
                    |_, _| {},
                )?;
                self.dev.counters.add(counter, n as u64);
                total += n as u64;
                a = next;
            }
        }
        Ok(total)
    }

    /// `HMM_DMIRROR_MIGRATE_TO_DEV`: migrates the pages of system memory in the range
    /// to device memory, maps them in the device table, and returns their contents as
    /// the device reads them (`ENOENT` if a page is neither in device memory nor
    /// mirrored: it could not be migrated). A THP (or an empty 2 MiB block) becomes a
    /// 2 MiB device folio where the kernel supports those, else 512 device pages.
    fn migrate_to_dev(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = self.range(cmd)?;
        self.migrate_range(
            start,
            end,
            Select::SYSTEM.compound(),
            ctr::MIGRATED_TO_DEVICE,
            |vma, _, src, dst| self.copy_to_device(src, dst, vma.writable()),
        )?;
        // Map the range's pages that are in this device's memory now (those just
        // migrated, and those that were there already, whose entries the migration's
        // own invalidation dropped), through a non-faulting walk with the sequence
        // check.
        self.map_local(start, end)?;
        // The device reads the range back as the C driver does: from its table only,
        // `ENOENT` for a page it does not map (one not migrated and not mirrored).
        cmd.cpages = self.read_mapped(start, end, cmd.ptr)?;
        Ok(())
    }

    /// The `copy` step of a migration to device memory: a device page for every page
    /// collected, filled from it (or zeroed: an empty or zero-page address), and
    /// writable if the CPU mapped it so (an empty address: if the vma is). A compound
    /// entry gets a 2 MiB device folio, or (none free, or `FLAG_FAIL_ALLOC`) 512
    /// device pages, which makes the migration split the THP.
    fn copy_to_device(&self, src: &[MigratePfn], dst: &mut [MigratePfn], writable: bool) {
        let dev = self.dev;
        let mut i = 0;
        while i < src.len() {
            let s = src[i];
            if !s.is_migrate() {
                i += 1;
                continue;
            }
            let spage = s.pfn();
            // SAFETY: `spage` was reported by the migration.
            if spage.is_some_and(|p| unsafe { devmem::is_zone_device(p) }) {
                i += 1;
                continue;
            }
            let write = s.is_write() || (spage.is_none() && writable);
            let fail = self.take_fail_alloc();
            if !s.is_compound() {
                if let Some(d) = (!fail).then(|| dev.copy_in(spage, false)).flatten() {
                    dst[i] = MigratePfn::new(d, write);
                }
                i += 1;
                continue;
            }
            let n = s.nr_pages().min(src.len() - i);
            #[cfg(CONFIG_AIKRS_DEVMEM_COMPOUND)]
            if !fail && n == HUGE_PAGES {
                if let Some(d) = dev.copy_in(spage, true) {
                    dst[i] = MigratePfn::new(d, write).compound();
                    i += n;
                    continue;
                }
            }
            for j in 0..n {
                if let Some(d) = dev.copy_in(spage.map(|p| p + j as u64), false) {
                    dst[i + j] = MigratePfn::new(d, write);
                }
            }
            i += n;
        }
    }

    /// Maps the pages of `[start, end)` that are in this device's memory into the
    /// device table (a snapshot walk: nothing is faulted or migrated).
    fn map_local(&self, start: usize, end: usize) -> Result {
        let mut pfns = KVec::<usize>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let owner = self.dev.owner();
        for (addr, n) in blocks(start, end) {
            cpu::cond_resched_killable()?;
            self.mirror
                .range_fault(addr, &mut pfns[..n], Want::Snapshot, |g, entries| {
                    // A 2 MiB device folio mapped whole: one huge device entry.
                    if let Some((backing, perm)) = local_huge_backing(addr, entries, owner) {
                        if g.table.map_huge(addr as u64, backing, perm).is_ok() {
                            self.dev.counters.add(ctr::HUGE_MAPPED, 1);
                            return;
                        }
                    }
                    for (i, &e) in entries.iter().enumerate() {
                        let Some(pfn) = e.pfn() else {
                            continue;
                        };
                        if e.kind(owner) != PageKind::DevicePrivateLocal {
                            continue;
                        }
                        // SAFETY: `pfn` was reported by `hmm_range_fault`, and no
                        // invalidation has begun since (we are in the commit).
                        if let Some(backing) = unsafe { backing_of(pfn, owner) } {
                            let va = (addr + i * PAGE_SIZE) as u64;
                            let _ = g.table.map(va, backing, perm_of(e).union(Perm::DEVICE));
                        }
                    }
                })?;
        }
        Ok(())
    }

    /// Copies the pages of `[start, end)` that the device table maps to user memory at
    /// `ptr`, without faulting: `ENOENT` at the first page it does not map. Returns
    /// the pages copied.
    fn read_mapped(&self, start: usize, end: usize, ptr: u64) -> Result<u64> {
        let mut bounce = VVec::<u8>::from_elem(0, COPY_CHUNK * PAGE_SIZE, GFP_KERNEL)?;
        let mut pos = start;
        while pos < end {
            cpu::cond_resched_killable()?;
            let n = ((end - pos) / PAGE_SIZE).min(COPY_CHUNK);
            if self.copy_mapped(pos, n, &mut bounce) < n {
                return Err(ENOENT);
            }
            let uptr = ptr.checked_add((pos - start) as u64).ok_or(EFAULT)?;
            user_slice(uptr as usize, n * PAGE_SIZE)
                .writer()
                .write_slice(&bounce[..n * PAGE_SIZE])?;
            pos += n * PAGE_SIZE;
        }
        Ok(((end - start) / PAGE_SIZE) as u64)
    }

    /// `HMM_DMIRROR_MIGRATE_TO_SYS`: migrates this device's pages in the range back to
    /// system memory (a 2 MiB device folio to a THP, or split into base pages if none
    /// can be had); `cpages` counts the pages.
    fn migrate_to_sys(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = self.range(cmd)?;
        let owner = self.dev.owner();
        let mut short = false;
        cmd.cpages = self.migrate_range(
            start,
            end,
            Select::DEVICE_PRIVATE.compound(),
            ctr::MIGRATED_TO_RAM,
            |vma, addr, src, dst| {
                short |= copy_to_ram(src, dst, owner, Some((vma, addr)), &|| {
                    self.take_fail_alloc()
                });
            },
        )?;
        // A page left in device memory for lack of system memory: `ENOMEM`, as the C
        // driver (the pages migrated stay migrated).
        if short {
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// `HMM_DMIRROR_EXCLUSIVE`: makes the pages of the range exclusive to the device
    /// (for device atomics) and maps them in the device table with atomic permission;
    /// returns their contents as the device reads them. A CPU access to such a page
    /// revokes it (the notifiers remove the device's entry).
    fn exclusive(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = self.range(cmd)?;
        let owner = self.dev.owner();
        let perm = Perm::READ.union(Perm::WRITE).union(Perm::ATOMIC);
        for addr in (start..end).step_by(PAGE_SIZE) {
            cpu::cond_resched_killable()?;
            // As `hmm_range_fault` users do (and nouveau for atomics): sample the
            // sequence, make the page exclusive, and map it only if no invalidation
            // began since; our own `MMU_NOTIFY_EXCLUSIVE` is not one (see
            // `kernel::aikrs::hmm`). The page stays locked until it is mapped, so a CPU
            // access that revokes it comes after; a zap of the address (which needs no
            // page lock) moves the sequence, and then the page is not mapped.
            let mut tries = 0;
            loop {
                let seq = self.mirror.read_begin();
                let page = {
                    let mm = self.mirror.mmap_read()?;
                    devmem::make_device_exclusive(&mm, addr, owner)?
                };
                let mapped = self
                    .mirror
                    .commit(seq, |g| g.table.map(addr as u64, page.pfn(), perm));
                drop(page);
                match mapped {
                    Some(r) => {
                        r?;
                        break;
                    }
                    None if tries < 100 => tries += 1,
                    None => return Err(EBUSY),
                }
            }
            self.dev.counters.add(ctr::EXCLUSIVE, 1);
        }
        cmd.cpages = self.read_mapped(start, end, cmd.ptr)?;
        Ok(())
    }

    /// `HMM_DMIRROR_CHECK_EXCLUSIVE`: `EPERM` if the device still maps a page of the
    /// range for atomics (its exclusive access was not revoked).
    ///
    /// The table's entries are visited, not the range's pages, so the unmapped parts of
    /// a range as large as the address space cost nothing; and the mirror lock is
    /// dropped after every [`CHECK_CHUNK`] entries.
    fn check_exclusive(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = self.range(cmd)?;
        // The table maps nothing at or above `VA_END`.
        let end = (end as u64).min(pt::VA_END);
        let mut pos = start as u64;
        while pos < end {
            cpu::cond_resched_killable()?;
            let (mut seen, mut atomic, mut next) = (0, false, end);
            self.mirror.lock().table.for_each(pos, end, |va, leaf| {
                if leaf.perm.contains(Perm::ATOMIC) {
                    atomic = true;
                    return ControlFlow::Break(());
                }
                seen += 1;
                if seen == CHECK_CHUNK {
                    // Go on after this entry: it intersects `[pos, end)`, so it ends
                    // above `pos` (a huge one may begin below).
                    next = va + leaf.size();
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
            if atomic {
                return Err(EPERM);
            }
            pos = next;
        }
        Ok(())
    }

    /// `HMM_DMIRROR_RELEASE`: all device memory back to system memory, and removed.
    /// `EBUSY` if a page is still in use after about a second of eviction rounds,
    /// `EINTR` if the task is killed meanwhile (see [`Dev::release_chunks`]).
    fn release(&self, _cmd: &mut Cmd) -> Result {
        // Not the device's arrays for module exit: releases do not wait for each other.
        let mut bufs = KVec::from_elem(MigratePfn::default(), 2 * MIGRATE_CHUNK, GFP_KERNEL)?;
        self.dev.release_chunks(&mut bufs, false)
    }

    /// `HMM_DMIRROR_SNAPSHOT`.
    fn snapshot(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = self.range(cmd)?;
        let mut pfns = KVec::<usize>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let mut perm = VVec::<u8>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let owner = self.dev.owner();
        for (addr, n) in blocks(start, end) {
            cpu::cond_resched_killable()?;
            let perm = &mut perm[..n];
            self.mirror
                .range_fault(addr, &mut pfns[..n], Want::Snapshot, |_, entries| {
                    // A whole 2 MiB block mapped by one PMD: `hmm_range_fault` gave
                    // all its pages the same flags and order, so one byte for all.
                    if let Some(&first) = entries.first() {
                        if n == FAULT_CHUNK && first.order() == 9 && first.is_valid() {
                            perm.fill(prot_byte(first, owner));
                            return;
                        }
                    }
                    let mut prev: Option<(HmmPfn, u8)> = None;
                    for (p, &e) in perm.iter_mut().zip(entries) {
                        // The pages of one huge mapping are one folio: same byte, and
                        // no need to look at each page's `struct page`.
                        *p = match prev {
                            Some((q, b)) if same_huge_mapping(q, e) => b,
                            _ => prot_byte(e, owner),
                        };
                        prev = Some((e, *p));
                    }
                })?;
            // One byte per page: the block's bytes follow those of the pages before it.
            let uptr = cmd.ptr.checked_add(cmd.cpages).ok_or(EFAULT)?;
            user_slice(uptr as usize, n).writer().write_slice(perm)?;
            cmd.cpages += n as u64;
            self.dev.counters.add(ctr::SNAPSHOT_PAGES, n as u64);
        }
        Ok(())
    }
}

/// Whether `e` is the page after `prev` in the same huge (PMD or PUD) CPU mapping.
fn same_huge_mapping(prev: HmmPfn, e: HmmPfn) -> bool {
    let order = e.order();
    order > 0
        && prev.order() == order
        && prev.is_write() == e.is_write()
        && !e.is_error()
        && matches!((prev.pfn(), e.pfn()), (Some(a), Some(b)) if b == a + 1 && b % (1 << order) != 0)
}

/// The snapshot byte of a page (as the C driver's `dmirror_mkentry`).
fn prot_byte(e: HmmPfn, owner: *mut c_void) -> u8 {
    if e.is_error() {
        return PROT_ERROR;
    }
    if !e.is_valid() {
        return PROT_NONE;
    }
    let mut p = match e.kind(owner) {
        PageKind::DevicePrivateLocal => PROT_DEV_PRIVATE_LOCAL,
        PageKind::DevicePrivateRemote => PROT_DEV_PRIVATE_REMOTE,
        PageKind::Zero => PROT_ZERO,
        PageKind::Normal => PROT_NONE,
    };
    p |= if e.is_write() { PROT_WRITE } else { PROT_READ };
    match e.order() + PAGE_SHIFT {
        21 => p |= PROT_PMD,
        30 => p |= PROT_PUD,
        _ => {}
    }
    p
}

/// For a whole 2 MiB block that the CPU maps with one device-private PMD entry of
/// this device (a 2 MiB device folio): the first of its backing pages, if they are
/// 2 MiB aligned (they are: one order-9 allocation), and the device permissions, so
/// that one huge device entry maps the block.
fn local_huge_backing(addr: usize, entries: &[HmmPfn], owner: *mut c_void) -> Option<(u64, Perm)> {
    let first = *entries.first()?;
    let pfn = first.pfn()?;
    let whole = addr % HUGE_SIZE == 0
        && entries.len() == HUGE_PAGES
        && pfn % HUGE_PAGES as u64 == 0
        && entries.iter().enumerate().all(|(i, e)| {
            e.order() == HUGE_ORDER
                && e.is_write() == first.is_write()
                && e.pfn() == Some(pfn + i as u64)
        });
    if !whole || first.kind(owner) != PageKind::DevicePrivateLocal {
        return None;
    }
    // SAFETY: `pfn` was reported by `hmm_range_fault`, and the caller is in the
    // commit (no invalidation has begun since).
    let backing = unsafe { backing_of(pfn, owner) }?;
    (backing % HUGE_PAGES as u64 == 0).then_some((backing, perm_of(first).union(Perm::DEVICE)))
}

/// Installs the faulted entries of `[addr, addr + entries pages)` (asked for writing if
/// `write`) in the device table
/// (under the mirror lock, with no invalidation since the walk): a 2 MiB entry for a
/// whole 2 MiB block the CPU maps with one PMD, else 4 KiB entries.
fn commit(
    g: &mut MirrorGuard<'_, State>,
    addr: usize,
    entries: &[HmmPfn],
    write: bool,
    owner: *mut c_void,
    dev: &Dev,
) -> Result {
    // `hmm_range_fault` reports this device's own pages as they are, without breaking
    // copy-on-write: a read-only one (shared after a fork) cannot serve a write. Fail
    // as the C driver does, instead of faulting again forever.
    if write && entries.iter().any(|e| !e.is_write()) {
        return Err(EFAULT);
    }
    if let Some((backing, perm)) = local_huge_backing(addr, entries, owner) {
        g.table.map_huge(addr as u64, backing, perm)?;
        dev.counters.add(ctr::HUGE_MAPPED, 1);
        return Ok(());
    }
    let whole_block =
        addr % pt::HUGE_SIZE as usize == 0 && entries.len() == pt::HUGE_PAGES as usize;
    if let (true, Some(&first)) = (whole_block, entries.first()) {
        if let Some(pfn) = first.pfn() {
            let same = entries.iter().enumerate().all(|(i, e)| {
                e.order() == 9 && perm_of(*e) == perm_of(first) && e.pfn() == Some(pfn + i as u64)
            });
            let kind = first.kind(owner);
            if same
                && pfn % pt::HUGE_PAGES == 0
                && matches!(kind, PageKind::Normal | PageKind::Zero)
            {
                g.table.map_huge(addr as u64, pfn, perm_of(first))?;
                dev.counters.add(ctr::HUGE_MAPPED, 1);
                return Ok(());
            }
        }
    }
    for (i, &e) in entries.iter().enumerate() {
        // Having asked for every page to be faulted in, each is valid on success.
        let pfn = e.pfn().ok_or(EFAULT)?;
        let va = (addr + i * PAGE_SIZE) as u64;
        match e.kind(owner) {
            PageKind::Normal | PageKind::Zero => g.table.map(va, pfn, perm_of(e))?,
            // A page in this device's memory: the device accesses its backing page.
            PageKind::DevicePrivateLocal => {
                // SAFETY: `pfn` was reported by `hmm_range_fault`, and no invalidation
                // has begun since (we are in the commit).
                let backing = unsafe { backing_of(pfn, owner) }.ok_or(EFAULT)?;
                g.table.map(va, backing, perm_of(e).union(Perm::DEVICE))?
            }
            // `hmm_range_fault` migrates other devices' pages back first.
            PageKind::DevicePrivateRemote => return Err(EFAULT),
        }
    }
    dev.counters.add(ctr::PAGES_MAPPED, entries.len() as u64);
    Ok(())
}

impl FileOps for MirrorFile {
    type Device = Dev;

    fn open(dev: &'static Dev, _file: &OpenFile) -> Result<Pin<KBox<Self>>> {
        let state = State {
            table: DeviceTable::new(NodePool::new(GFP_KERNEL)),
            dev,
        };
        // The whole address space, as the C driver mirrors it (page-aligned length).
        let len = usize::MAX & !(PAGE_SIZE - 1);
        let mirror = Mirror::new(state, 0, len, dev.owner())?;
        Ok(KBox::pin(
            Self {
                dev,
                mirror,
                flags: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        let handler: fn(&Self, &mut Cmd) -> Result = match cmd {
            READ => Self::read,
            WRITE => Self::write,
            SNAPSHOT => Self::snapshot,
            MIGRATE_TO_DEV => Self::migrate_to_dev,
            MIGRATE_TO_SYS => Self::migrate_to_sys,
            RELEASE => Self::release,
            EXCLUSIVE => Self::exclusive,
            CHECK_EXCLUSIVE => Self::check_exclusive,
            FLAGS => Self::set_flags,
            #[cfg(CONFIG_AIKRS_HMM_FAULT_UNLOCKED)]
            READ_UNLOCKED => Self::read_unlocked,
            _ => return Err(EINVAL),
        };
        let mut c = Cmd::read(arg)?;
        if cmd != FLAGS {
            // Before any work: a range beyond the user address space is `EINVAL`.
            self.range(&c)?;
        }
        handler(self, &mut c)?;
        c.write(arg)?;
        Ok(0)
    }

    /// Fills the new mapping with zeroed pages of system memory (as the C driver does;
    /// the `mixedmap` case snapshots such a mapping).
    fn mmap(&self, vma: &VmaNew<'_, Self>) -> Result {
        let start = vma.start();
        for i in 0..vma.len() / PAGE_SIZE {
            // As large as the caller asks: stop when killed (the failed `mmap` unmaps
            // the pages inserted so far).
            cpu::cond_resched_killable()?;
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            vma.insert_page(start + i * PAGE_SIZE, &page)?;
            // The mapping holds the page now; ours is dropped.
        }
        Ok(())
    }
}
