// SPDX-License-Identifier: GPL-2.0

//! The kernel's IOVA allocator (`drivers/iommu/iova.c`, C header `<linux/iova.h>`).
//!
//! The header is not in the kernel's own `bindings_helper.h`; the overlay adds it. This
//! wrapper serves as the baseline the Rust IOVA allocator is measured against.

use crate::{
    alloc::{
        flags::{__GFP_ZERO, GFP_KERNEL},
        KBox,
    },
    bindings,
    error::{code::ENOMEM, to_result, Result},
    types::Opaque,
};
use core::ptr::NonNull;

/// An IOVA domain (C `struct iova_domain`), without per-CPU range caches.
///
/// # Invariants
///
/// `inner` was initialised by `init_iova_domain` after a successful `iova_cache_get`, and
/// is torn down (`put_iova_domain`, `iova_cache_put`) only in `drop`. It is boxed, so the
/// rbtree anchor inside it never moves.
pub struct IovaDomain {
    inner: KBox<Opaque<bindings::iova_domain>>,
}

// SAFETY: `iova.c` protects a domain with its own spinlock (`iova_rbtree_lock`); every
// function used here may be called from any thread.
unsafe impl Send for IovaDomain {}
// SAFETY: As above: concurrent `alloc_iova`/`__free_iova`/`find_iova` calls are locked in C.
unsafe impl Sync for IovaDomain {}

/// A range allocated from an [`IovaDomain`], in units of the domain's granule ("pfn").
///
/// Returned to the domain with [`IovaDomain::free`]; dropping it leaks nothing but
/// leaves the range allocated until the domain is destroyed.
pub struct Iova<'a> {
    ptr: NonNull<bindings::iova>,
    _domain: core::marker::PhantomData<&'a IovaDomain>,
}

impl Iova<'_> {
    /// The first pfn of the range.
    pub fn pfn_lo(&self) -> usize {
        // SAFETY: `ptr` is a live `struct iova` of the domain that `'a` keeps alive;
        // `pfn_lo` is never written after allocation.
        unsafe { (*self.ptr.as_ptr()).pfn_lo }
    }

    /// The number of pfns in the range, through the C helper for the inline `iova_size()`.
    pub fn size(&self) -> usize {
        // SAFETY: As in `pfn_lo`; `iova_size` only reads the range bounds.
        unsafe { bindings::iova_size(self.ptr.as_ptr()) }
    }
}

impl IovaDomain {
    /// Creates a domain with the given granule (bytes, a power of two no larger than
    /// `PAGE_SIZE`) whose lowest allocatable pfn is `start_pfn`.
    pub fn new(granule: usize, start_pfn: usize) -> Result<Self> {
        // `init_iova_domain` BUG()s on anything else.
        if !granule.is_power_of_two() || granule > crate::page::PAGE_SIZE {
            return Err(crate::error::code::EINVAL);
        }
        // Zeroed: `init_iova_domain` leaves `rcaches` alone, and `put_iova_domain` frees
        // range caches when that pointer is not NULL.
        let inner = KBox::new(
            Opaque::<bindings::iova_domain>::uninit(),
            GFP_KERNEL | __GFP_ZERO,
        )?;
        // SAFETY: Always safe to call; balanced by `iova_cache_put` in `drop` (or below).
        to_result(unsafe { bindings::iova_cache_get() })?;
        // SAFETY: `inner` is writable memory for a domain that will not move (boxed).
        unsafe { bindings::init_iova_domain(inner.get(), granule, start_pfn) };
        // INVARIANT: initialised after a successful `iova_cache_get`.
        Ok(Self { inner })
    }

    /// Allocates `size` pfns at or below `limit_pfn`, top-down, aligned to the size's
    /// power of two when `size_aligned`.
    pub fn alloc(&self, size: usize, limit_pfn: usize, size_aligned: bool) -> Result<Iova<'_>> {
        // SAFETY: By the type invariant the domain is initialised; `alloc_iova` validates
        // its arguments and returns NULL on failure.
        let p = unsafe { bindings::alloc_iova(self.inner.get(), size, limit_pfn, size_aligned) };
        let ptr = NonNull::new(p).ok_or(ENOMEM)?;
        Ok(Iova {
            ptr,
            _domain: core::marker::PhantomData,
        })
    }

    /// Returns `iova` to the domain.
    pub fn free(&self, iova: Iova<'_>) {
        // SAFETY: `iova` was allocated from a domain borrowed for its lifetime; since
        // `Iova` is not `Clone`, it is freed at most once. Freeing it into another live
        // domain would corrupt both, hence the check against `find_iova` below.
        let found = unsafe { bindings::find_iova(self.inner.get(), iova.pfn_lo()) };
        if found == iova.ptr.as_ptr() {
            // SAFETY: `iova` belongs to this domain (found above) and is freed once.
            unsafe { bindings::__free_iova(self.inner.get(), iova.ptr.as_ptr()) };
        }
    }

    /// Returns whether `pfn` lies in an allocated range.
    pub fn contains(&self, pfn: usize) -> bool {
        // SAFETY: By the type invariant the domain is initialised.
        !unsafe { bindings::find_iova(self.inner.get(), pfn) }.is_null()
    }
}

impl Drop for IovaDomain {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the domain is initialised and not used after this;
        // `put_iova_domain` frees every range still allocated.
        unsafe { bindings::put_iova_domain(self.inner.get()) };
        // SAFETY: Balances the `iova_cache_get` in `new`.
        unsafe { bindings::iova_cache_put() };
    }
}
