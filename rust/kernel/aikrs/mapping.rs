// SPDX-License-Identifier: GPL-2.0

//! The page cache of a file (C `struct address_space`, `<linux/fs.h>`), as far as the
//! modules need it: the handle that names every mapping of a file.

use crate::bindings;
use core::ptr::NonNull;

/// The page cache of a file (C `struct address_space`), whose mappings a batch can clear.
///
/// # Invariants
///
/// `ptr` points to a live `address_space` for as long as the value exists: it is only
/// made by [`AddressSpace::from_raw`], whose caller promises that.
#[derive(Clone, Copy)]
pub struct AddressSpace {
    ptr: NonNull<bindings::address_space>,
}

// SAFETY: An `address_space` is shared by every user of the file; the operations used here
// (`i_mmap` walk under `i_mmap_rwsem`) are thread-safe.
unsafe impl Send for AddressSpace {}
// SAFETY: As above.
unsafe impl Sync for AddressSpace {}

impl AddressSpace {
    /// Wraps `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid `address_space` that outlives the returned value and its
    /// copies (e.g. a file's `f_mapping`, used only while the file is open).
    pub unsafe fn from_raw(ptr: NonNull<bindings::address_space>) -> Self {
        // INVARIANT: the caller guarantees validity.
        Self { ptr }
    }

    /// The C pointer.
    pub fn as_ptr(&self) -> *mut bindings::address_space {
        self.ptr.as_ptr()
    }

    /// Unmaps pages `[first, first + nr)` of the file from every process, the kernel's
    /// way (`unmap_mapping_pages`, which flushes the TLB once per mapping it touches).
    pub fn unmap_pages(&self, first: u64, nr: u64) {
        // SAFETY: `ptr` is live (type invariant); `unmap_mapping_pages` takes its own locks.
        unsafe { bindings::unmap_mapping_pages(self.as_ptr(), first as usize, nr as usize, true) };
    }
}
