// SPDX-License-Identifier: GPL-2.0

//! `/dev/aikrs_tlb`: buffer objects whose CPU mappings are revoked one by one (the
//! kernel's way, `unmap_mapping_pages` per buffer) or in one batch (ours), as a GPU
//! driver evicting buffers does. ABI: `aikrs_tlb_uapi.h`.
//!
//! Buffers are driver-owned pages mapped into user space as a PFN map (`vmf_insert_pfn`
//! on fault), one `mmap` per buffer at the buffer's offset. Every open file gets its own
//! range of offsets of the shared device node, so revoking one file's buffers never
//! touches another's mappings.
//!
//! # Locking
//!
//! One mutex per open file (`Bufs`) protects its buffers. The fault path takes it with
//! the `mmap_lock` (or the vma lock) held and maps the page under it; a revoke takes it
//! first, then (inside `unmap_mapping_pages` or [`Batch::zap_mapping`]) `i_mmap_rwsem`
//! and the page-table locks. Order: `mmap_lock` -> `Bufs` -> `i_mmap_rwsem` -> PTL, as in
//! TTM (fault -> BO reservation; eviction under the reservation -> `unmap_mapping_range`).
//! Because a revoke changes the backing pages, clears the entries and flushes all under
//! `Bufs`, no fault can map an old page after a revoke has begun.
//!
//! # Bounded work
//!
//! An ioctl's work is bounded by the ABI's limits, whatever it asks: at most
//! [`MAX_FILE_PAGES`] pages (256 MiB) per file. The loops that allocate them (`CREATE`,
//! `REVOKE` with `REMAP`) run without the lock and stop when the task is killed
//! (`EINTR`), as does a revoke one buffer at a time, between buffers. A batched revoke
//! holds `Bufs` for all its buffers on purpose (one flush round for all of them, the
//! point of the batch): at most `MAX_FILE_PAGES` stamps and poisonings, and the
//! page-table entries of every mapping of the buffers (one buffer per vma, at most
//! `vm.max_map_count` vmas per process), between which the C side yields.

use core::{
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
};
use kernel::{
    aikrs::{
        compat::user_slice,
        cpu::{cond_resched_killable, ktime_ns},
        debugfs::Counters,
        miscdev::{page_pfn, Fault, FileOps, OpenFile, VmaNew},
        tlb::{self, AddressSpace, Batch},
    },
    alloc::{flags::GFP_KERNEL, KBox, KVVec},
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::Mutex,
};

/// Limits and layout of the ABI (`aikrs_tlb_uapi.h`).
pub(crate) const MAX_BUFS: u32 = 65536;
pub(crate) const MAX_PAGES: u32 = 16;
/// At most this many pages (256 MiB) per open file, whatever `count * pages` asks.
pub(crate) const MAX_FILE_PAGES: usize = 65536;
/// Ranges a batch holds before it compacts (merges) or flushes early.
const BATCH_CAPACITY: usize = 1024;
pub(crate) const POISON: u64 = 0x5ea1_ed0f_f1ce_5ea1;
pub(crate) const REVOKE_BATCHED: u32 = 1 << 0;
pub(crate) const REVOKE_REMAP: u32 = 1 << 1;
/// Negative control, accepted only with `aikrs.tlb_negative_control` on the command line:
/// clear the entries but skip the flush (the guest test must then catch stale reads).
pub(crate) const REVOKE_NOFLUSH: u32 = 1 << 31;

const IOC_MAGIC: u32 = 0xA7;
const CREATE_SIZE: usize = 16;
const REVOKE_SIZE: usize = 48;
const STATS_SIZE: usize = 64;
const IOC_CREATE: u32 = kernel::ioctl::_IOWR::<[u8; CREATE_SIZE]>(IOC_MAGIC, 0);
const IOC_REVOKE: u32 = kernel::ioctl::_IOWR::<[u8; REVOKE_SIZE]>(IOC_MAGIC, 1);
const IOC_STATS: u32 = kernel::ioctl::_IOR::<[u8; STATS_SIZE]>(IOC_MAGIC, 2);

/// Offsets of each file's buffers: 2^24 pages (64 GiB of offset space) per file, enough
/// for `MAX_BUFS * MAX_PAGES` pages.
const FILE_SPAN_PAGES: u64 = 1 << 24;
/// Files opened over the device's lifetime: their offsets must fit `loff_t` (2^63 bytes).
const MAX_FILES: u64 = 1 << 26;

/// Quarantined pages above this are freed (they are flushed and poisoned already).
const QUARANTINE_MAX: usize = 16384;

/// Counter indices, in the order of the debugfs files and `struct aikrs_tlb_stats`.
pub(crate) mod ctr {
    pub(crate) const REQUESTS: usize = 0;
    pub(crate) const MERGED: usize = 1;
    pub(crate) const ROUNDS: usize = 2;
    pub(crate) const IPIS: usize = 3;
    pub(crate) const FULL: usize = 4;
    pub(crate) const PER_PAGE: usize = 5;
    pub(crate) const REVOKES: usize = 6;
    pub(crate) const FAULTS: usize = 7;
    pub(crate) const N: usize = 8;
}

/// The device: its counters (debugfs `aikrs_tlb/`), the next file's offset range and the
/// per-page ceiling (`aikrs.tlb_ceiling=N` on the command line, default 33).
pub(crate) struct Dev {
    pub(crate) counters: Counters<{ ctr::N }>,
    next_file: AtomicU64,
    ceiling: u64,
    negative_control: bool,
}

impl Dev {
    pub(crate) fn new() -> Result<Self> {
        let counters = Counters::new(
            c"aikrs_tlb",
            None,
            [
                c"requests",
                c"merged",
                c"rounds",
                c"ipis",
                c"full_flushes",
                c"per_page_flushes",
                c"revokes",
                c"faults",
            ],
        )?;
        Ok(Self {
            counters,
            next_file: AtomicU64::new(1),
            ceiling: kernel::aikrs::compat::cmdline_u64("aikrs.tlb_ceiling")
                .unwrap_or(tlb::DEFAULT_CEILING),
            negative_control: kernel::aikrs::compat::cmdline_has("aikrs.tlb_negative_control"),
        })
    }

    /// Adds what a batch flush did to the counters.
    pub(crate) fn account(&self, r: &tlb::Report) {
        let c = &self.counters;
        c.add(ctr::REQUESTS, r.requests);
        c.add(ctr::MERGED, r.merged);
        c.add(ctr::ROUNDS, r.rounds);
        c.add(ctr::IPIS, r.ipis);
        c.add(ctr::FULL, r.full);
        c.add(ctr::PER_PAGE, r.per_page);
    }
}

/// The buffers of one open file.
struct Bufs {
    /// Pages per buffer; 0 until `CREATE`.
    pages: u32,
    /// `count * pages` pages, buffer by buffer.
    backing: KVVec<Page>,
    /// Generation of each buffer's current backing.
    gens: KVVec<u32>,
    /// Replaced pages: flushed and poisoned, kept so a stale translation reads poison.
    quarantine: KVVec<Page>,
}

/// An open file of `/dev/aikrs_tlb`.
#[pin_data]
pub(crate) struct TlbFile {
    dev: &'static Dev,
    mapping: AddressSpace,
    /// First page offset of this file's buffers.
    base: u64,
    #[pin]
    bufs: Mutex<Bufs>,
}

fn stamp(page: &Page, idx: u32, gen: u32) -> Result {
    let v = (u64::from(idx) << 32) | u64::from(gen);
    write_u64(page, v)
}

fn write_u64(page: &Page, v: u64) -> Result {
    let b = v.to_ne_bytes();
    // SAFETY: `b` is 8 readable bytes; the page is ours; `write_raw` checks the bounds.
    unsafe { page.write_raw(b.as_ptr(), 0, b.len()) }
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl TlbFile {
    fn create(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; CREATE_SIZE];
        let (mut reader, mut writer) = user_slice(arg, CREATE_SIZE).reader_writer();
        reader.read_slice(&mut raw)?;
        let (count, pages) = (get_u32(&raw, 0), get_u32(&raw, 4));
        if count == 0 || count > MAX_BUFS || pages == 0 || pages > MAX_PAGES {
            return Err(EINVAL);
        }
        let total = count as usize * pages as usize;
        if total > MAX_FILE_PAGES {
            return Err(EINVAL);
        }
        if self.bufs.lock().pages != 0 {
            return Err(EBUSY);
        }
        // Allocate without the lock (`mmap` and faults take it under `mmap_lock`), and
        // never touch user memory under it either.
        let mut backing = KVVec::with_capacity(total, GFP_KERNEL)?;
        let mut gens = KVVec::with_capacity(count as usize, GFP_KERNEL)?;
        for i in 0..total {
            cond_resched_killable()?;
            let p = Page::alloc_page(GFP_KERNEL | kernel::alloc::flags::__GFP_ZERO)?;
            stamp(&p, (i / pages as usize) as u32, 1)?;
            backing.push(p, GFP_KERNEL)?;
        }
        for _ in 0..count {
            gens.push(1, GFP_KERNEL)?;
        }
        {
            let mut b = self.bufs.lock();
            if b.pages != 0 {
                return Err(EBUSY);
            }
            b.backing = backing;
            b.gens = gens;
            b.pages = pages;
        }
        let offset = self.base * PAGE_SIZE as u64;
        raw[8..16].copy_from_slice(&offset.to_ne_bytes());
        writer.write_slice(&raw)?;
        Ok(0)
    }

    fn revoke(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; REVOKE_SIZE];
        let (mut reader, mut writer) = user_slice(arg, REVOKE_SIZE).reader_writer();
        reader.read_slice(&mut raw)?;
        let (first, count, flags, pad) = (
            get_u32(&raw, 0),
            get_u32(&raw, 4),
            get_u32(&raw, 8),
            get_u32(&raw, 12),
        );
        let known = REVOKE_BATCHED | REVOKE_REMAP | REVOKE_NOFLUSH;
        if pad != 0 || flags & !known != 0 {
            return Err(EINVAL);
        }
        let noflush = flags & REVOKE_NOFLUSH != 0;
        if noflush && (!self.dev.negative_control || flags & REVOKE_BATCHED == 0) {
            return Err(EINVAL);
        }
        let pp = {
            let b = self.bufs.lock();
            let nbufs = b.gens.len() as u32;
            if b.pages == 0 || count == 0 || first >= nbufs || count > nbufs - first {
                return Err(EINVAL);
            }
            b.pages as usize
        };
        // Allocate every new page before changing anything: a failure changes nothing.
        // (Stamped when swapped in, under the lock, with the generation then current.)
        let mut fresh = KVVec::new();
        if flags & REVOKE_REMAP != 0 {
            fresh = KVVec::with_capacity(count as usize * pp, GFP_KERNEL)?;
            for _ in 0..count as usize * pp {
                cond_resched_killable()?;
                let p = Page::alloc_page(GFP_KERNEL | kernel::alloc::flags::__GFP_ZERO)?;
                fresh.push(p, GFP_KERNEL)?;
            }
        }
        let remap = !fresh.is_empty();
        let t0 = ktime_ns();
        let ipis0 = tlb::shootdowns();
        let pg_first = self.base + u64::from(first) * pp as u64;
        let (mut ptes, mut rounds) = (0u64, 0u64);

        // Stamps and swaps in buffer `first + i`'s new pages (`fresh` then holds the old).
        let swap = |b: &mut Bufs, fresh: &mut KVVec<Page>, i: usize| -> Result {
            let idx = first as usize + i;
            let gen = b.gens[idx].wrapping_add(1);
            for j in 0..pp {
                stamp(&fresh[i * pp + j], idx as u32, gen)?;
            }
            for j in 0..pp {
                core::mem::swap(&mut b.backing[idx * pp + j], &mut fresh[i * pp + j]);
            }
            b.gens[idx] = gen;
            Ok(())
        };

        let mut res = Ok(());
        if flags & REVOKE_BATCHED != 0 {
            // Ours: all buffers under one lock hold, one batch, one flush round.
            let mut batch = Batch::new((count as usize).min(BATCH_CAPACITY), self.dev.ceiling)?;
            let mut b = self.bufs.lock();
            if remap {
                for i in 0..count as usize {
                    swap(&mut b, &mut fresh, i)?;
                }
            }
            let npages = u64::from(count) * pp as u64;
            // SAFETY: The old pages stay allocated (`fresh`, then the quarantine) until
            // after `batch` was flushed below; `batch` is not leaked.
            match unsafe { batch.zap_mapping(&self.mapping, pg_first, npages) } {
                Ok(n) => ptes = n,
                Err(e) => {
                    // Some mappings were not reached: unmap them the kernel's way, so
                    // that no page table still maps an old page.
                    self.mapping.unmap_pages(pg_first, npages);
                    res = Err(e);
                }
            }
            if noflush {
                // SAFETY: Negative control only (checked above). The replaced pages stay
                // allocated in the quarantine until the file is closed.
                unsafe { batch.forget_unflushed() };
            }
            batch.flush();
            let total = batch.total();
            self.dev.account(&total);
            rounds = total.rounds;
            drop(batch);
            self.quarantine(&mut b, fresh)?;
        } else {
            // The kernel's way, as TTM evicts: buffer by buffer, each under the lock, each
            // `unmap_mapping_pages` with its own TLB flush round.
            for i in 0..count as usize {
                // Killed: the buffers done so far stay revoked, the others untouched;
                // `fresh` (their old pages, and new ones never mapped) is quarantined.
                if let Err(e) = cond_resched_killable() {
                    res = Err(e);
                    break;
                }
                let mut b = self.bufs.lock();
                if remap {
                    swap(&mut b, &mut fresh, i)?;
                }
                self.mapping
                    .unmap_pages(pg_first + (i * pp) as u64, pp as u64);
            }
            let mut b = self.bufs.lock();
            self.quarantine(&mut b, fresh)?;
        }
        let ns = (ktime_ns() - t0).max(0) as u64;
        let ipis = tlb::shootdowns().wrapping_sub(ipis0);
        self.dev.counters.add(ctr::REVOKES, 1);
        res?;

        raw[16..24].copy_from_slice(&ptes.to_ne_bytes());
        raw[24..32].copy_from_slice(&rounds.to_ne_bytes());
        raw[32..40].copy_from_slice(&ipis.to_ne_bytes());
        raw[40..48].copy_from_slice(&ns.to_ne_bytes());
        writer.write_slice(&raw)?;
        Ok(0)
    }

    /// Poisons the replaced (already unmapped and flushed) pages and keeps them, so that a
    /// stale translation would read the poison.
    fn quarantine(&self, b: &mut Bufs, old: KVVec<Page>) -> Result {
        if old.is_empty() {
            return Ok(());
        }
        // Under the negative control pages may never have been flushed: keep them all.
        if b.quarantine.len() + old.len() > QUARANTINE_MAX && !self.dev.negative_control {
            // Every page in it was flushed and poisoned by an earlier revoke.
            b.quarantine = KVVec::new();
        }
        b.quarantine.reserve(old.len(), GFP_KERNEL)?;
        for p in old {
            write_u64(&p, POISON)?;
            // Cannot fail: reserved above.
            b.quarantine.push(p, GFP_KERNEL)?;
        }
        Ok(())
    }

    fn stats(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; STATS_SIZE];
        for i in 0..ctr::N {
            raw[i * 8..i * 8 + 8].copy_from_slice(&self.dev.counters.get(i).to_ne_bytes());
        }
        user_slice(arg, STATS_SIZE).writer().write_slice(&raw)?;
        Ok(0)
    }
}

impl FileOps for TlbFile {
    type Device = Dev;

    fn open(dev: &'static Dev, file: &OpenFile) -> Result<Pin<KBox<Self>>> {
        let n = dev.next_file.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_FILES {
            return Err(ENOSPC);
        }
        let base = n * FILE_SPAN_PAGES;
        // SAFETY: Kept in the state only, which `release` drops while the file is open.
        let mapping = unsafe { file.mapping()? };
        KBox::pin_init(
            pin_init!(Self {
                dev,
                mapping,
                base,
                bufs <- new_mutex!(Bufs {
                    pages: 0,
                    backing: KVVec::new(),
                    gens: KVVec::new(),
                    quarantine: KVVec::new(),
                }),
            }),
            GFP_KERNEL,
        )
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            IOC_CREATE => self.create(arg),
            IOC_REVOKE => self.revoke(arg),
            IOC_STATS => self.stats(arg),
            _ => Err(ENOTTY),
        }
    }

    fn mmap(&self, vma: &VmaNew<'_, Self>) -> Result {
        let b = self.bufs.lock();
        let pp = u64::from(b.pages);
        let nbufs = b.gens.len() as u64;
        let pgoff = vma.pgoff() as u64;
        let len_pages = (vma.len() / PAGE_SIZE) as u64;
        // One whole buffer per mapping, shared (a private mapping would copy on write).
        if pp == 0 || !vma.is_shared() || len_pages != pp || pgoff < self.base {
            return Err(EINVAL);
        }
        let rel = pgoff - self.base;
        if rel % pp != 0 || rel / pp >= nbufs {
            return Err(EINVAL);
        }
        vma.setup_pfnmap();
        Ok(())
    }

    fn fault(&self, fault: &mut Fault<'_>) -> Result {
        let b = self.bufs.lock();
        let rel = fault.pgoff().checked_sub(self.base).ok_or(EFAULT)?;
        let page = b.backing.get(rel as usize).ok_or(EFAULT)?;
        // SAFETY: The page is this file's; it leaves `backing` only under this lock, and a
        // revoke unmaps and flushes it before the quarantine can free it.
        unsafe { fault.insert_pfn(page_pfn(page))? };
        self.dev.counters.add(ctr::FAULTS, 1);
        Ok(())
    }
}
