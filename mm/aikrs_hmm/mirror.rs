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
//! Not yet: migration to device-private memory and back, device-exclusive entries,
//! `mmap` of the device node (the `mixedmap` case). Those commands fail with
//! `EOPNOTSUPP`.

use crate::pt::{self, Perm};
use crate::table::{DeviceTable, NodePool};
use core::ffi::c_void;
use kernel::{
    aikrs::{
        compat::{eopnotsupp, user_slice},
        debugfs::Counters,
        hmm::{self, HmmPfn, Invalidation, Mirror, MirrorGuard, MirrorOps, PageKind, Want},
        miscdev::{FileOps, OpenFile},
    },
    alloc::{flags::GFP_KERNEL, KBox, KVVec, KVec},
    prelude::*,
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
const COPY_CHUNK: usize = 64;
/// Pages walked by one `hmm_range_fault()` call: one 2 MiB-aligned block, so that a
/// PMD mapping arrives whole and becomes one huge device entry.
const FAULT_CHUNK: usize = pt::HUGE_PAGES as usize;

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
    pub(crate) const N: usize = 8;
    pub(crate) const NAMES: [&core::ffi::CStr; N] = [
        c"device_faults",
        c"pages_mapped",
        c"huge_mapped",
        c"pages_read",
        c"pages_written",
        c"invalidations",
        c"pages_invalidated",
        c"snapshot_pages",
    ];
}

/// One model device: its number and counters. Its address identifies its device-private
/// memory (the `owner` of the mirrors).
pub(crate) struct Dev {
    pub(crate) counters: Counters<{ ctr::N }>,
}

impl Dev {
    pub(crate) fn new(name: &core::ffi::CStr) -> Result<Self> {
        Ok(Self {
            counters: Counters::new(name, None, ctr::NAMES)?,
        })
    }

    fn owner(&'static self) -> *mut c_void {
        core::ptr::from_ref(self).cast_mut().cast()
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

    /// The range `[addr, end)`, checked as the C driver does: page aligned, non-empty,
    /// not wrapping (`EINVAL`).
    fn range(&self) -> Result<(usize, usize)> {
        let size = self
            .npages
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(EINVAL)?;
        let end = self.addr.checked_add(size).ok_or(EINVAL)?;
        if self.addr % PAGE_SIZE as u64 != 0 || end <= self.addr {
            return Err(EINVAL);
        }
        Ok((
            usize::try_from(self.addr).map_err(|_| EINVAL)?,
            usize::try_from(end).map_err(|_| EINVAL)?,
        ))
    }
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
    /// Faults `[start, end)` into the device table, one 2 MiB-aligned block at a time
    /// (one device fault, as the C driver counts it).
    fn fault(&self, start: usize, end: usize, write: bool) -> Result {
        let mut pfns = KVec::<usize>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let want = if write { Want::Write } else { Want::Read };
        let mut addr = start;
        while addr < end {
            let block_end = (addr | (pt::HUGE_SIZE as usize - 1)) + 1;
            let next = block_end.min(end);
            let n = (next - addr) / PAGE_SIZE;
            let owner = self.dev.owner();
            let dev = self.dev;
            self.mirror
                .range_fault(addr, &mut pfns[..n], want, |g, entries| {
                    commit(g, addr, entries, owner, dev)
                })??;
            addr = next;
        }
        Ok(())
    }

    /// `HMM_DMIRROR_READ`.
    fn read(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = cmd.range()?;
        let mut bounce = KVVec::<u8>::from_elem(0, COPY_CHUNK * PAGE_SIZE, GFP_KERNEL)?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) / PAGE_SIZE).min(COPY_CHUNK);
            let mut done = 0;
            {
                let g = self.mirror.lock();
                while done < n {
                    let va = (pos + done * PAGE_SIZE) as u64;
                    let Some(leaf) = g.table.lookup(va) else {
                        break;
                    };
                    let dst = &mut bounce[done * PAGE_SIZE..(done + 1) * PAGE_SIZE];
                    // SAFETY: The entry is in the device table, read under the mirror
                    // lock: the page cannot be freed before an invalidation removes the
                    // entry, and invalidations wait for this lock.
                    unsafe { hmm::copy_from_pfn(dst, leaf.pfn) };
                    done += 1;
                }
            }
            let off = (pos - start) as u64;
            let uptr = cmd.ptr.checked_add(off).ok_or(EFAULT)?;
            user_slice(uptr as usize, done * PAGE_SIZE)
                .writer()
                .write_slice(&bounce[..done * PAGE_SIZE])?;
            cmd.cpages += done as u64;
            self.dev.counters.add(ctr::PAGES_READ, done as u64);
            pos += done * PAGE_SIZE;
            if done < n {
                self.fault(pos, end, false)?;
                cmd.faults += 1;
                self.dev.counters.add(ctr::DEVICE_FAULTS, 1);
            }
        }
        Ok(())
    }

    /// `HMM_DMIRROR_WRITE`.
    fn write(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = cmd.range()?;
        let mut bounce = KVVec::<u8>::from_elem(0, COPY_CHUNK * PAGE_SIZE, GFP_KERNEL)?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) / PAGE_SIZE).min(COPY_CHUNK);
            let off = (pos - start) as u64;
            let uptr = cmd.ptr.checked_add(off).ok_or(EFAULT)?;
            user_slice(uptr as usize, n * PAGE_SIZE)
                .reader()
                .read_slice(&mut bounce[..n * PAGE_SIZE])?;
            let mut done = 0;
            while done < n {
                {
                    let g = self.mirror.lock();
                    while done < n {
                        let va = (pos + done * PAGE_SIZE) as u64;
                        match g.table.lookup(va) {
                            Some(leaf) if leaf.perm.contains(Perm::WRITE) => {
                                let src = &bounce[done * PAGE_SIZE..(done + 1) * PAGE_SIZE];
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
                    self.fault(pos + done * PAGE_SIZE, end, true)?;
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

    /// `HMM_DMIRROR_SNAPSHOT`.
    fn snapshot(&self, cmd: &mut Cmd) -> Result {
        let (start, end) = cmd.range()?;
        let mut pfns = KVec::<usize>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let mut perm = KVec::<u8>::from_elem(0, FAULT_CHUNK, GFP_KERNEL)?;
        let owner = self.dev.owner();
        let mut addr = start;
        while addr < end {
            let block_end = (addr | (pt::HUGE_SIZE as usize - 1)) + 1;
            let next = block_end.min(end);
            let n = (next - addr) / PAGE_SIZE;
            let perm = &mut perm[..n];
            self.mirror
                .range_fault(addr, &mut pfns[..n], Want::Snapshot, |_, entries| {
                    for (p, &e) in perm.iter_mut().zip(entries) {
                        *p = prot_byte(e, owner);
                    }
                })?;
            let uptr = cmd.ptr.checked_add((addr - start) as u64).ok_or(EFAULT)?;
            user_slice(uptr as usize, n).writer().write_slice(perm)?;
            cmd.cpages += n as u64;
            self.dev.counters.add(ctr::SNAPSHOT_PAGES, n as u64);
            addr = next;
        }
        Ok(())
    }
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

/// Installs the faulted entries of `[addr, addr + entries pages)` in the device table
/// (under the mirror lock, with no invalidation since the walk): a 2 MiB entry for a
/// whole 2 MiB block the CPU maps with one PMD, else 4 KiB entries.
fn commit(
    g: &mut MirrorGuard<'_, State>,
    addr: usize,
    entries: &[HmmPfn],
    owner: *mut c_void,
    dev: &Dev,
) -> Result {
    let whole_block =
        addr % pt::HUGE_SIZE as usize == 0 && entries.len() == pt::HUGE_PAGES as usize;
    if let (true, Some(&first)) = (whole_block, entries.first()) {
        if let Some(pfn) = first.pfn() {
            let same = entries.iter().enumerate().all(|(i, e)| {
                e.order() == 9 && perm_of(*e) == perm_of(first) && e.pfn() == Some(pfn + i as u64)
            });
            let kind = first.kind(owner);
            if same && pfn % pt::HUGE_PAGES == 0 && matches!(kind, PageKind::Normal | PageKind::Zero)
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
        if !matches!(e.kind(owner), PageKind::Normal | PageKind::Zero) {
            // Device-private pages are not mirrored yet (no migration yet).
            return Err(EFAULT);
        }
        g.table.map((addr + i * PAGE_SIZE) as u64, pfn, perm_of(e))?;
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
        Ok(KBox::pin(Self { dev, mirror }, GFP_KERNEL)?)
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        let handler: fn(&Self, &mut Cmd) -> Result = match cmd {
            READ => Self::read,
            WRITE => Self::write,
            SNAPSHOT => Self::snapshot,
            MIGRATE_TO_DEV | MIGRATE_TO_SYS | EXCLUSIVE | CHECK_EXCLUSIVE | RELEASE => {
                return Err(eopnotsupp())
            }
            _ => return Err(EINVAL),
        };
        let mut c = Cmd::read(arg)?;
        c.range()?;
        handler(self, &mut c)?;
        c.write(arg)?;
        Ok(0)
    }
}
