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

/// An IOVA domain (C `struct iova_domain`), optionally with iova.c's per-CPU range caches
/// ("rcaches", used by [`IovaDomain::alloc_fast`]).
///
/// # Invariants
///
/// `inner` was initialised by `init_iova_domain` after a successful `iova_cache_get`, and
/// is torn down (`put_iova_domain`, `iova_cache_put`) only in `drop`. It is boxed, so the
/// rbtree anchor inside it never moves. `rcaches` is true exactly when
/// `iova_domain_init_rcaches` succeeded on it.
pub struct IovaDomain {
    inner: KBox<Opaque<bindings::iova_domain>>,
    rcaches: bool,
}

/// Free space of an [`IovaDomain`] below a limit, as measured by [`IovaDomain::free_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeStats {
    /// Free pfns in `[start_pfn, limit]`.
    pub free: usize,
    /// The longest run of free pfns.
    pub largest: usize,
    /// The number of maximal free runs.
    pub gaps: usize,
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
        // INVARIANT: initialised after a successful `iova_cache_get`; no rcaches yet.
        Ok(Self {
            inner,
            rcaches: false,
        })
    }

    /// Like [`IovaDomain::new`], plus iova.c's per-CPU range caches, as the DMA layer
    /// (`dma-iommu.c`) sets domains up; required by [`IovaDomain::alloc_fast`].
    pub fn new_with_rcaches(granule: usize, start_pfn: usize) -> Result<Self> {
        let mut d = Self::new(granule, start_pfn)?;
        // SAFETY: The domain is initialised (type invariant) and has no rcaches yet; on
        // failure iova.c frees what it allocated, and `drop` copes with either state.
        to_result(unsafe { bindings::iova_domain_init_rcaches(d.inner.get()) })?;
        // INVARIANT: `iova_domain_init_rcaches` succeeded.
        d.rcaches = true;
        Ok(d)
    }

    /// `alloc_iova_fast`: `size` pfns at or below `limit_pfn`, from this CPU's range cache
    /// when `size` rounds up to at most 32 pfns and one is cached, else from the rbtree.
    /// Returns the first pfn, or `None` when nothing fits (or the domain has no rcaches).
    /// `flush_rcache` lets iova.c empty every CPU's cache and retry once before failing.
    pub fn alloc_fast(&self, size: usize, limit_pfn: usize, flush_rcache: bool) -> Option<usize> {
        if !self.rcaches || size == 0 {
            return None;
        }
        // SAFETY: The domain is initialised with rcaches (type invariant); iova.c checks
        // its arguments and returns 0 on failure. It may be called from atomic context.
        let pfn =
            unsafe { bindings::alloc_iova_fast(self.inner.get(), size, limit_pfn, flush_rcache) };
        (pfn != 0).then_some(pfn)
    }

    /// `free_iova_fast`: returns `size` pfns at `pfn`, allocated by [`IovaDomain::alloc_fast`]
    /// with the same size. As in C, iova.c does not check the pair: a wrong one parks a
    /// bogus range in the cache (which iova.c warns about at teardown). Ignored if the
    /// domain has no rcaches.
    pub fn free_fast(&self, pfn: usize, size: usize) {
        if !self.rcaches {
            return;
        }
        // SAFETY: The domain is initialised with rcaches (type invariant). iova.c's own
        // contract on `pfn`/`size` is documented above; violating it corrupts only the
        // domain's bookkeeping, not memory.
        unsafe { bindings::free_iova_fast(self.inner.get(), pfn, size) };
    }

    /// `reserve_iova`: marks `[pfn_lo, pfn_hi]` as not allocatable.
    pub fn reserve(&self, pfn_lo: usize, pfn_hi: usize) -> Result {
        if pfn_lo > pfn_hi {
            return Err(crate::error::code::EINVAL);
        }
        // SAFETY: The domain is initialised (type invariant); the range is ordered.
        let p = unsafe { bindings::reserve_iova(self.inner.get(), pfn_lo, pfn_hi) };
        if p.is_null() {
            Err(ENOMEM)
        } else {
            Ok(())
        }
    }

    /// Measures the free space in `[start_pfn, limit_pfn]` by walking the rbtree under the
    /// domain lock (ranges in iova.c's per-CPU caches count as allocated). O(n).
    pub fn free_stats(&self, limit_pfn: usize) -> FreeStats {
        let mut st = FreeStats::default();
        // SAFETY: The domain is initialised (type invariant); the helper locks it and
        // writes the three outputs.
        unsafe {
            bindings::aikrs_iova_free_stats(
                self.inner.get(),
                limit_pfn,
                &mut st.free,
                &mut st.largest,
                &mut st.gaps,
            )
        };
        st
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

    /// `free_iova`: frees the range that starts at or contains `pfn`; nothing happens if
    /// there is none.
    pub fn free_pfn(&self, pfn: usize) {
        // SAFETY: By the type invariant the domain is initialised; `free_iova` looks the
        // range up under the domain lock and ignores a pfn that is not allocated.
        unsafe { bindings::free_iova(self.inner.get(), pfn) };
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
