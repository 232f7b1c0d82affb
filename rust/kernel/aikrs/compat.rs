// SPDX-License-Identifier: GPL-2.0

//! Small differences between the 6.12 and 7.x `kernel` crates, in one place.
//!
//! Leaf modules use these names instead of testing kernel versions themselves.

use crate::bindings;

/// The major.minor version of the kernel this crate was built for, from Kconfig.
pub const LINUX_GE_7: bool = cfg!(CONFIG_AIKRS_LINUX_GE_7);

/// The C `char` type as `bindings` spells it (the kernel builds with `-funsigned-char`).
pub type CChar = u8;

/// Converts a `core::ffi::CStr` (e.g. a `c"..."` literal) into the pointer type the
/// bindings take.
///
/// Both kernels accept `c"..."` literals, but 6.12's `kernel::str::CStr` is a distinct
/// type while 7.x re-exports `core::ffi::CStr`; taking the core type works on both.
///
/// This is the one place that calls `core::ffi::CStr::as_ptr` (which 7.x's clippy
/// configuration disallows because of `char` signedness): the cast to `CChar` is the point.
#[inline]
#[allow(clippy::disallowed_methods)]
pub fn c_str_ptr(s: &core::ffi::CStr) -> *const CChar {
    s.as_ptr().cast()
}

/// The parameters of the kernel command line (split at spaces; quoting is not handled).
fn cmdline_params() -> impl Iterator<Item = &'static [u8]> {
    // SAFETY: `saved_command_line` is set up early in boot, before any initcall or
    // KUnit test runs, and is never freed or written afterwards.
    let p = unsafe { bindings::saved_command_line };
    let line: &'static [u8] = if p.is_null() {
        &[]
    } else {
        // As in `c_str_ptr`, the signedness cast is the point.
        #[allow(clippy::disallowed_methods)]
        // SAFETY: `p` is a valid NUL-terminated string that lives forever (see above).
        let s = unsafe { core::ffi::CStr::from_ptr(p.cast()) };
        s.to_bytes()
    };
    line.split(|&b| b == b' ')
}

/// Returns whether the kernel command line contains `word` as a whole parameter name
/// (`word` or `word=...`).
///
/// Built-in test code uses this for switches that must not need a rebuild.
pub fn cmdline_has(word: &str) -> bool {
    cmdline_params().any(|param| {
        param == word.as_bytes()
            || param
                .strip_prefix(word.as_bytes())
                .is_some_and(|r| r.first() == Some(&b'='))
    })
}

/// The value of `name=value` on the kernel command line, parsed as a decimal `u64`.
pub fn cmdline_u64(name: &str) -> Option<u64> {
    cmdline_params().find_map(|param| {
        let v = param.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        let mut n = 0u64;
        if v.is_empty() {
            return None;
        }
        for &b in v {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        Some(n)
    })
}

/// Returns whether the kernel command line holds `name=value` exactly.
pub fn cmdline_is(name: &str, value: &str) -> bool {
    cmdline_params().any(|param| {
        param
            .strip_prefix(name.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
            == Some(value.as_bytes())
    })
}

/// The user memory `[addr, addr + len)` (an ioctl argument, say) for copying in and out:
/// Linux 6.12's `UserPtr` is a `usize`, 7.x's a type of its own.
pub fn user_slice(addr: usize, len: usize) -> crate::uaccess::UserSlice {
    #[cfg(CONFIG_AIKRS_LINUX_GE_7)]
    let ptr = crate::uaccess::UserPtr::from_addr(addr);
    #[cfg(not(CONFIG_AIKRS_LINUX_GE_7))]
    let ptr = addr;
    crate::uaccess::UserSlice::new(ptr, len)
}

/// Empties `v`, keeping its allocation (Linux 6.12's `Vec` has no `clear`, 7.x's no
/// public `set_len`).
pub fn clear_copy<T: Copy, A: crate::alloc::Allocator>(v: &mut crate::alloc::Vec<T, A>) {
    #[cfg(CONFIG_AIKRS_LINUX_GE_7)]
    v.clear();
    // SAFETY: 0 <= len; the elements are `Copy`, so nothing needs dropping.
    #[cfg(not(CONFIG_AIKRS_LINUX_GE_7))]
    unsafe {
        v.set_len(0)
    };
}

/// Removes element `i` of `v` by moving the last element into its place (Linux 6.12's
/// `Vec` has neither `swap_remove` nor `pop`). `None` if `i` is out of bounds.
pub fn swap_remove<T: Copy, A: crate::alloc::Allocator>(
    v: &mut crate::alloc::Vec<T, A>,
    i: usize,
) -> Option<T> {
    let len = v.len();
    if i >= len {
        return None;
    }
    let s = v.as_mut_slice();
    s.swap(i, len - 1);
    let x = s[len - 1];
    #[cfg(CONFIG_AIKRS_LINUX_GE_7)]
    v.truncate(len - 1);
    #[cfg(not(CONFIG_AIKRS_LINUX_GE_7))]
    // SAFETY: `len - 1 < len`, so the first `len - 1` elements stay initialised; the
    // removed one is `Copy` (it has no destructor that would be skipped).
    unsafe {
        v.set_len(len - 1)
    };
    Some(x)
}

/// `-ECANCELED` (not among Linux 6.12's `kernel::error::code`s).
pub fn ecanceled() -> crate::error::Error {
    crate::error::Error::from_errno(-(bindings::ECANCELED as core::ffi::c_int))
}

/// `-ETIMEDOUT` (not among Linux 6.12's `kernel::error::code`s).
pub fn etimedout() -> crate::error::Error {
    crate::error::Error::from_errno(-(bindings::ETIMEDOUT as core::ffi::c_int))
}

/// `-EOPNOTSUPP` (not among Linux 6.12's `kernel::error::code`s).
pub fn eopnotsupp() -> crate::error::Error {
    crate::error::Error::from_errno(-(bindings::EOPNOTSUPP as core::ffi::c_int))
}

/// Whether the in-kernel benchmark `name` should run: always, unless the command line
/// names others with `aikrs.bench=NAME[,NAME...]`.
pub fn bench_selected(name: &str) -> bool {
    let mut given = false;
    for param in cmdline_params() {
        let Some(v) = param.strip_prefix(b"aikrs.bench=") else {
            continue;
        };
        given = true;
        if v.split(|&b| b == b',').any(|n| n == name.as_bytes()) {
            return true;
        }
    }
    !given
}

/// What a module with an in-kernel benchmark and demo does at init, from the command
/// line: with `aikrs.mode=bench` it runs `bench` (if [`bench_selected`]`(name)`), with
/// `aikrs.mode=demo` it runs `demo` and returns what the demo keeps alive (e.g. its
/// debugfs counters) for the module to hold; otherwise nothing. A failed demo has
/// reported itself and yields `None`: a module still loads without its demo.
pub fn run_boot_mode<D>(
    name: &str,
    bench: impl FnOnce(),
    demo: impl FnOnce() -> crate::error::Result<D>,
) -> Option<D> {
    if cmdline_is("aikrs.mode", "bench") && bench_selected(name) {
        bench();
        None
    } else if cmdline_is("aikrs.mode", "demo") {
        demo().ok()
    } else {
        None
    }
}
