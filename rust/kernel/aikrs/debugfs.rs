// SPDX-License-Identifier: GPL-2.0

//! debugfs directories of `u64` counters, for the modules' statistics.
//!
//! Linux 6.12's `kernel` crate has no debugfs abstraction, so this is a small one over
//! `debugfs_create_dir`/`debugfs_create_u64`/`debugfs_remove`. As in C, debugfs errors
//! are not fatal: a directory that could not be created makes its files no-ops, and the
//! counters still count.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::Result,
};
use core::{ffi::CStr, sync::atomic::AtomicU64, sync::atomic::Ordering};

/// A debugfs directory, removed (with everything in it) when dropped.
///
/// # Invariants
///
/// `dentry` is what `debugfs_create_dir` returned: a valid dentry, or an error pointer
/// (which every debugfs function accepts and ignores).
pub struct Dir {
    dentry: *mut bindings::dentry,
}

// SAFETY: A debugfs dentry may be used and removed from any thread.
unsafe impl Send for Dir {}
// SAFETY: `Dir` has no interior state; debugfs calls on a dentry are thread-safe.
unsafe impl Sync for Dir {}

impl Dir {
    /// Creates directory `name` under `parent` (or at the debugfs root).
    pub fn new(name: &CStr, parent: Option<&Dir>) -> Self {
        let parent = parent.map_or(core::ptr::null_mut(), |p| p.dentry);
        // SAFETY: `name` is NUL-terminated; `parent` is NULL or a dentry from
        // `debugfs_create_dir` that `Dir` keeps alive.
        let dentry =
            unsafe { bindings::debugfs_create_dir(crate::aikrs::compat::c_str_ptr(name), parent) };
        // INVARIANT: `dentry` is the return value of `debugfs_create_dir`.
        Self { dentry }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `dentry` came from `debugfs_create_dir` (error
        // pointers are ignored). `debugfs_remove` waits for open files to be released.
        unsafe { bindings::debugfs_remove(self.dentry) };
    }
}

/// `N` named counters, each shown as a read-only file in a debugfs directory.
///
/// # Invariants
///
/// Every file in `dir` points into `values`, which is heap-allocated and freed only after
/// `dir` (declared first) has been removed.
pub struct Counters<const N: usize> {
    dir: Dir,
    values: KBox<[AtomicU64; N]>,
}

impl<const N: usize> Counters<N> {
    /// Creates directory `name` under `parent` with one file per entry of `names`.
    pub fn new(name: &CStr, parent: Option<&Dir>, names: [&'static CStr; N]) -> Result<Self> {
        let values = KBox::new([const { AtomicU64::new(0) }; N], GFP_KERNEL)?;
        let dir = Dir::new(name, parent);
        for (i, n) in names.iter().enumerate() {
            // SAFETY: `n` is NUL-terminated; `dir.dentry` is valid or an error pointer;
            // the value outlives the file (type invariant: `values` is freed after `dir`
            // is removed). `AtomicU64` has the layout of `u64`, and debugfs reads it with a
            // plain 64-bit load, which cannot tear on 64-bit architectures.
            unsafe {
                bindings::debugfs_create_u64(
                    crate::aikrs::compat::c_str_ptr(n),
                    0o444,
                    dir.dentry,
                    values[i].as_ptr(),
                )
            };
        }
        // INVARIANT: the files point into `values`; field order drops `dir` first.
        Ok(Self { dir, values })
    }

    /// The directory, for adding subdirectories.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Adds `v` to counter `i`.
    ///
    /// # Panics
    ///
    /// Panics if `i >= N` (a programming error: indices are constants).
    #[inline]
    pub fn add(&self, i: usize, v: u64) {
        self.values[i].fetch_add(v, Ordering::Relaxed);
    }

    /// Reads counter `i`.
    ///
    /// # Panics
    ///
    /// Panics if `i >= N`.
    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }
}
