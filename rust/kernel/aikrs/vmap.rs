// SPDX-License-Identifier: GPL-2.0

//! Kernel virtual mappings of pages (`vmap`/`vunmap`, C `<linux/vmalloc.h>`), and reads
//! that survive a missing translation (`copy_from_kernel_nofault`).

use crate::{
    alloc::{flags::GFP_KERNEL, KVec},
    bindings,
    error::{code::*, Result},
    page::Page,
};
use core::ptr::NonNull;

/// A contiguous kernel mapping of some pages, unmapped when dropped.
///
/// # Invariants
///
/// `addr` is the return value of a successful `vmap` of `pages`, not yet `vunmap`ed; the
/// pages stay allocated (owned here) at least until then.
pub struct Vmap {
    addr: NonNull<core::ffi::c_void>,
    pages: KVec<Page>,
}

impl Vmap {
    /// Maps `pages` contiguously (`PAGE_KERNEL`), taking ownership of them.
    pub fn new(pages: KVec<Page>) -> Result<Self> {
        if pages.is_empty() {
            return Err(EINVAL);
        }
        let mut ptrs = KVec::with_capacity(pages.len(), GFP_KERNEL)?;
        for p in pages.iter() {
            ptrs.push(p.as_ptr(), GFP_KERNEL)?;
        }
        // SAFETY: `ptrs` holds `pages.len()` valid page pointers.
        let addr = unsafe { bindings::aikrs_vmap(ptrs.as_mut_ptr(), ptrs.len() as u32) };
        let addr = NonNull::new(addr).ok_or(ENOMEM)?;
        // INVARIANT: mapped by `vmap`; the pages move in with the mapping.
        Ok(Self { addr, pages })
    }

    /// The first address.
    pub fn addr(&self) -> usize {
        self.addr.as_ptr() as usize
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.pages.len() * crate::page::PAGE_SIZE
    }

    /// Whether it maps nothing (never).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The pages.
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }
}

impl Drop for Vmap {
    fn drop(&mut self) {
        // SAFETY: `addr` came from `vmap` and is unmapped once, here; `vunmap` copes with
        // entries that were cleared already. The pages are freed after this.
        unsafe { bindings::vunmap(self.addr.as_ptr()) };
    }
}

/// Reads the `u64` at kernel address `addr` without oopsing if nothing is mapped there
/// (`copy_from_kernel_nofault`): `EFAULT` then.
pub fn read_u64_nofault(addr: usize) -> Result<u64> {
    let mut v = 0u64;
    // SAFETY: `copy_from_kernel_nofault` validates `addr` and handles faults; `v` is 8
    // writable bytes.
    let ret = unsafe {
        bindings::copy_from_kernel_nofault(
            core::ptr::from_mut::<u64>(&mut v).cast(),
            addr as *const core::ffi::c_void,
            8,
        )
    };
    if ret == 0 {
        Ok(v)
    } else {
        Err(EFAULT)
    }
}
