// SPDX-License-Identifier: GPL-2.0

//! `/dev/aikrs_iova`: the test device of the allocator. ABI: `aikrs_iova_uapi.h`.
//!
//! Each open file may create one [`Domain`] and then allocate and free ranges in it, and
//! drain it and read its statistics. An allocation or free runs on the CPU of the calling
//! thread, through that CPU's magazines, exactly as a kernel caller's would; the guest's
//! CPU hotplug test drives the domain from threads on every CPU while a CPU goes offline
//! and online, and its lifecycle test holds the module through an open file.
//!
//! Bounded work: a call does one allocation, one free, one drain (every CPU's magazines
//! and the depot) or one snapshot; the storage of a domain is bounded by
//! [`MAX_LIVE`] and allocated once, at `CREATE`.
//!
//! Bounded memory: one domain per open file (a second `CREATE` gets `EBUSY`), which goes
//! with the file (a call holds a reference only while it runs), so the domains a process
//! can have are bounded by its open files. A domain's storage (up to about 7 MiB for
//! [`MAX_LIVE`] ranges, 1 MiB of it in one `kmalloc`, and a 29 KiB per-CPU cache for each
//! possible CPU) is charged to the caller's memory cgroup (`__GFP_ACCOUNT`), and a
//! failure to find it is an `ENOMEM` for the caller, not a warning in the log
//! (`__GFP_NOWARN`).
//!
//! Errors common to every command: `ENOTTY` for an unknown command (as `/dev/aikrs_tlb`),
//! `EFAULT` for an argument user space cannot read or write, `EINVAL` before `CREATE`.

use crate::domain::{Config, Domain};
use core::pin::Pin;
use kernel::{
    aikrs::{
        compat::user_slice,
        miscdev::{FileOps, OpenFile},
    },
    alloc::{
        flags::{__GFP_NOWARN, GFP_KERNEL, GFP_KERNEL_ACCOUNT},
        KBox,
    },
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

/// Limits of the ABI (`aikrs_iova_uapi.h`).
const MAX_LIVE: u32 = 65536;
const MAX_LIMIT: u64 = (1 << 36) - 1;
const CREATE_CACHE: u32 = 1 << 0;

const IOC_MAGIC: u32 = 0xA8;
const CREATE_SIZE: usize = 24;
const RANGE_SIZE: usize = 24;
/// 19 counters of `struct aikrs_iova_stats`.
const STATS_N: usize = 19;
const STATS_SIZE: usize = STATS_N * 8;
const IOC_CREATE: u32 = kernel::ioctl::_IOW::<[u8; CREATE_SIZE]>(IOC_MAGIC, 0);
const IOC_ALLOC: u32 = kernel::ioctl::_IOWR::<[u8; RANGE_SIZE]>(IOC_MAGIC, 1);
const IOC_FREE: u32 = kernel::ioctl::_IOW::<[u8; RANGE_SIZE]>(IOC_MAGIC, 2);
const IOC_DRAIN: u32 = kernel::ioctl::_IO(IOC_MAGIC, 3);
const IOC_STATS: u32 = kernel::ioctl::_IOR::<[u8; STATS_SIZE]>(IOC_MAGIC, 4);

/// The device (no state of its own).
pub(crate) struct Dev;

/// An open file of `/dev/aikrs_iova`: its domain, once created.
#[pin_data]
pub(crate) struct IovaFile {
    /// Held only to clone or set the `Arc`: calls on the domain run without it, so threads
    /// on different CPUs allocate concurrently.
    #[pin]
    domain: SpinLock<Option<Arc<Domain>>>,
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(v)
}

impl IovaFile {
    fn domain(&self) -> Result<Arc<Domain>> {
        self.domain.lock().clone().ok_or(EINVAL)
    }

    fn create(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; CREATE_SIZE];
        user_slice(arg, CREATE_SIZE).reader().read_slice(&mut raw)?;
        let (start, limit) = (get_u64(&raw, 0), get_u64(&raw, 8));
        let (max_live, flags) = (get_u32(&raw, 16), get_u32(&raw, 20));
        if flags & !CREATE_CACHE != 0
            || max_live == 0
            || max_live > MAX_LIVE
            || limit > MAX_LIMIT
            || start > limit
        {
            return Err(EINVAL);
        }
        if self.domain.lock().is_some() {
            return Err(EBUSY);
        }
        // Created without the lock (it allocates and registers for CPU hotplug). Sized by
        // user space: charged to its memory cgroup, and no warning if that fails.
        let gfp = GFP_KERNEL_ACCOUNT | __GFP_NOWARN;
        let d = Arc::new(
            Domain::new(
                Config {
                    start,
                    limit,
                    max_live: max_live as usize,
                    cache: flags & CREATE_CACHE != 0,
                },
                gfp,
            )?,
            gfp,
        )?;
        let mut slot = self.domain.lock();
        if slot.is_some() {
            // A concurrent CREATE won; `d` is dropped after the lock.
            return Err(EBUSY);
        }
        *slot = Some(d);
        Ok(0)
    }

    fn alloc(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; RANGE_SIZE];
        let (mut reader, mut writer) = user_slice(arg, RANGE_SIZE).reader_writer();
        reader.read_slice(&mut raw)?;
        let d = self.domain()?;
        let size = get_u64(&raw, 8);
        let pfn = d.alloc(size, get_u64(&raw, 16))?;
        raw[0..8].copy_from_slice(&pfn.to_ne_bytes());
        if let Err(e) = writer.write_slice(&raw) {
            // The caller cannot learn the range: give it back.
            let _ = d.free(pfn, size);
            return Err(e);
        }
        Ok(0)
    }

    fn free(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; RANGE_SIZE];
        user_slice(arg, RANGE_SIZE).reader().read_slice(&mut raw)?;
        self.domain()?.free(get_u64(&raw, 0), get_u64(&raw, 8))?;
        Ok(0)
    }

    fn drain(&self) -> Result<isize> {
        self.domain()?.drain();
        Ok(0)
    }

    fn stats(&self, arg: usize) -> Result<isize> {
        let st = self.domain()?.stats();
        let t = &st.tree;
        let vals: [u64; STATS_N] = [
            t.span_pages,
            t.free_pages,
            t.largest_free,
            t.free_blocks,
            t.allocated_pages,
            t.allocations,
            t.reserved_pages,
            st.tree_allocs,
            st.tree_frees,
            st.failed,
            st.bad_frees,
            st.cached,
            st.live,
            st.parked,
            st.lost,
            st.cpu.allocs,
            st.cpu.frees,
            st.cpu.hits,
            st.cpu.depot_hits,
        ];
        let mut raw = [0u8; STATS_SIZE];
        for (i, v) in vals.iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
        user_slice(arg, STATS_SIZE).writer().write_slice(&raw)?;
        Ok(0)
    }
}

impl FileOps for IovaFile {
    type Device = Dev;

    fn open(_dev: &'static Dev, _file: &OpenFile) -> Result<Pin<KBox<Self>>> {
        KBox::pin_init(
            pin_init!(Self {
                domain <- new_spinlock!(None, "aikrs_iova_file"),
            }),
            GFP_KERNEL,
        )
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            IOC_CREATE => self.create(arg),
            IOC_ALLOC => self.alloc(arg),
            IOC_FREE => self.free(arg),
            IOC_DRAIN => self.drain(),
            IOC_STATS => self.stats(arg),
            _ => Err(ENOTTY),
        }
    }
}
