// SPDX-License-Identifier: GPL-2.0

//! KUnit test suites written in Rust, the same way on Linux 6.12 and 7.x.
//!
//! Linux 6.12 has no `#[kunit_tests]`; 7.x has it, but with a different test-case
//! signature. [`aikrs_kunit_suite!`](crate::aikrs_kunit_suite) builds the C
//! `struct kunit_case` array and `struct kunit_suite` itself and places the suite in the
//! `.kunit_test_suites` section, which is what C's `kunit_test_suites()` does, so built-in
//! objects and modules (`=m`) alike have their suites run by KUnit.
//!
//! Test cases are `fn(&Test) -> Result`. Failed expectations go through KUnit's own
//! `__kunit_do_failed_assertion`, so they print the usual `EXPECTATION FAILED at file:line`
//! and mark the case failed in the TAP output. A case that returns `Err` fails too.
//!
//! # Examples
//!
//! ```ignore
//! use kernel::aikrs::kunit::Test;
//! use kernel::prelude::*;
//!
//! fn adds(t: &Test) -> Result {
//!     kernel::aikrs_expect_eq!(t, 1 + 1, 2);
//!     Ok(())
//! }
//!
//! kernel::aikrs_kunit_suite!(my_module_basic, [adds]);
//! ```

use crate::{bindings, error::Result, types::Opaque};
use core::{ffi::c_void, fmt};

/// A running KUnit test case (C `struct kunit`).
///
/// # Invariants
///
/// The wrapped `struct kunit` is initialised and stays valid for as long as a `&Test`
/// exists: either KUnit is running the case that received it, or it is a [`ScratchTest`].
#[repr(transparent)]
pub struct Test(Opaque<bindings::kunit>);

impl Test {
    /// Creates a reference to a test from the pointer KUnit passes to a case.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an initialised `struct kunit` that stays valid for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::kunit) -> &'a Self {
        // SAFETY: `Test` is `repr(transparent)` over `Opaque<kunit>`, which has the layout
        // of `kunit`; the caller guarantees validity for `'a`.
        // INVARIANT: the caller guarantees the test is initialised and valid for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut bindings::kunit {
        self.0.get()
    }

    /// Returns whether this test has been marked failed so far.
    pub fn failed(&self) -> bool {
        // SAFETY: By the type invariant the test is valid; `status` is a plain enum that
        // only this test's own thread writes (through `kunit_set_failure`).
        let status = unsafe { core::ptr::addr_of!((*self.as_raw()).status).read_volatile() };
        status == bindings::kunit_status_KUNIT_FAILURE
    }

    /// Marks the test skipped with `reason` (KUnit's `kunit_mark_skipped`); the case should
    /// return right after.
    pub fn skip(&self, reason: &core::ffi::CStr) {
        // SAFETY: By the type invariant the test is valid; the helper copies `reason`
        // (NUL-terminated) into the test's status comment.
        unsafe {
            bindings::aikrs_kunit_mark_skipped(
                self.as_raw(),
                crate::aikrs::compat::c_str_ptr(reason),
            )
        };
    }

    /// Records a failed expectation at `file:line` (both from the caller's macro).
    ///
    /// `file` and `condition` must end in a NUL byte (the macros use `concat!(.., "\0")`).
    #[doc(hidden)]
    pub fn fail(
        &self,
        file: &'static str,
        line: u32,
        condition: &'static str,
        args: fmt::Arguments<'_>,
    ) {
        debug_assert!(file.ends_with('\0') && condition.ends_with('\0'));
        let loc = bindings::kunit_loc {
            file: file.as_ptr().cast(),
            line: line as i32,
        };
        let assert = bindings::kunit_unary_assert {
            assert: bindings::kunit_assert {},
            condition: condition.as_ptr().cast(),
            expected_true: true,
        };
        // SAFETY: By the type invariant the test is valid. `loc` and `assert` live across
        // the call, and KUnit formats the failure before returning (it keeps no pointer).
        // The format string is NUL-terminated and its single `%pA` consumes one
        // `fmt::Arguments` pointer, which is what is passed.
        unsafe {
            bindings::__kunit_do_failed_assertion(
                self.as_raw(),
                &loc,
                bindings::kunit_assert_type_KUNIT_EXPECTATION,
                &assert.assert,
                Some(bindings::kunit_unary_assert_format),
                crate::aikrs::compat::c_str_ptr(c"%pA"),
                core::ptr::from_ref(&args).cast::<c_void>(),
            );
        }
    }
}

/// A detached `struct kunit`, not registered with KUnit: failures recorded on it mark only
/// it. Used to test assertion machinery itself (does a failed expectation fail a test?).
pub struct ScratchTest {
    inner: crate::alloc::KBox<Test>,
}

impl ScratchTest {
    /// Creates a scratch test named `name`.
    pub fn new(name: &'static core::ffi::CStr) -> Result<Self> {
        let inner =
            crate::alloc::KBox::new(Test(Opaque::uninit()), crate::alloc::flags::GFP_KERNEL)?;
        // SAFETY: `inner` is a valid, writable allocation for a `struct kunit` that does
        // not move (it is boxed) until `kunit_cleanup` in `drop`. `name` is static. A NULL
        // log is allowed.
        unsafe {
            bindings::kunit_init_test(
                inner.as_raw(),
                crate::aikrs::compat::c_str_ptr(name),
                core::ptr::null_mut(),
            )
        };
        // INVARIANT: `kunit_init_test` initialised the test; it lives until `drop`.
        Ok(Self { inner })
    }

    /// The scratch test as a [`Test`], for the expectation macros.
    pub fn test(&self) -> &Test {
        &self.inner
    }
}

impl Drop for ScratchTest {
    fn drop(&mut self) {
        // SAFETY: The test was initialised in `new` and is not used after this.
        unsafe { bindings::kunit_cleanup(self.inner.as_raw()) };
    }
}

/// Runs one case and reports an `Err` it returns as a failure. Used by the suite macro.
#[doc(hidden)]
pub fn run_case(test: &Test, case: fn(&Test) -> Result, name: &'static str) {
    if let Err(e) = case(test) {
        test.fail(
            concat!(file!(), "\0"),
            line!(),
            "test case returned Ok(())\0",
            format_args!("{} returned {:?}", name.trim_end_matches('\0'), e),
        );
    }
}

/// Builds a `struct kunit_case` for `run_case` named `name` (NUL-terminated).
#[doc(hidden)]
pub const fn case(
    name: &'static str,
    run_case: unsafe extern "C" fn(*mut bindings::kunit),
) -> bindings::kunit_case {
    // SAFETY: `kunit_case` is a C struct for which all-zeroes is valid (NULL pointers,
    // `None` callbacks, zero enums); the fields KUnit needs are set explicitly below.
    let zero: bindings::kunit_case = unsafe { core::mem::zeroed() };
    bindings::kunit_case {
        run_case: Some(run_case),
        name: name.as_ptr().cast(),
        ..zero
    }
}

/// The all-zeroes `struct kunit_case` that terminates a case array.
#[doc(hidden)]
pub const fn case_end() -> bindings::kunit_case {
    // SAFETY: All-zeroes is valid for `kunit_case` and is the terminator KUnit expects.
    unsafe { core::mem::zeroed() }
}

/// An all-zeroes `struct kunit_suite` to fill in with struct-update syntax.
#[doc(hidden)]
pub const fn suite_zeroed() -> bindings::kunit_suite {
    // SAFETY: All-zeroes is valid for `kunit_suite` (arrays, NULL pointers, `None`).
    unsafe { core::mem::zeroed() }
}

/// Declares a KUnit suite named `$suite` with the given cases, each a
/// `fn(&kernel::aikrs::kunit::Test) -> Result` in the calling module.
#[macro_export]
macro_rules! aikrs_kunit_suite {
    ($suite:ident, [$($case:ident),+ $(,)?]) => {
        const _: () = {
            mod __aikrs_kunit_wrappers {
                $(
                    pub(super) unsafe extern "C" fn $case(test: *mut $crate::bindings::kunit) {
                        // SAFETY: KUnit passes a test that is valid while the case runs.
                        let t = unsafe { $crate::aikrs::kunit::Test::from_raw(test) };
                        $crate::aikrs::kunit::run_case(t, super::$case, stringify!($case));
                    }
                )+
            }

            const NCASES: usize = [$(stringify!($case)),+].len();

            static mut CASES: [$crate::bindings::kunit_case; NCASES + 1] = [
                $($crate::aikrs::kunit::case(
                    concat!(stringify!($case), "\0"),
                    __aikrs_kunit_wrappers::$case,
                ),)+
                $crate::aikrs::kunit::case_end(),
            ];

            static mut SUITE: $crate::bindings::kunit_suite = $crate::bindings::kunit_suite {
                name: {
                    let n = stringify!($suite).as_bytes();
                    assert!(n.len() < 256, "KUnit suite names are at most 255 bytes");
                    let mut a = [0; 256];
                    let mut i = 0;
                    while i < n.len() {
                        a[i] = n[i] as _;
                        i += 1;
                    }
                    a
                },
                test_cases: ::core::ptr::addr_of_mut!(CASES).cast(),
                ..$crate::aikrs::kunit::suite_zeroed()
            };

            // KUnit walks this section at boot (built-in) or module load (`=m`).
            #[used]
            #[link_section = ".kunit_test_suites"]
            static mut ENTRY: *const $crate::bindings::kunit_suite = ::core::ptr::addr_of_mut!(SUITE);
        };
    };
}

/// Expects `$cond` to be true; on failure records a KUnit expectation failure (with an
/// optional formatted message) and the case goes on. Evaluates to the condition.
#[macro_export]
macro_rules! aikrs_expect {
    ($t:expr, $cond:expr $(,)?) => {
        $crate::aikrs_expect!($t, $cond, "")
    };
    ($t:expr, $cond:expr, $($fmt:tt)+) => {{
        let ok: bool = $cond;
        if !ok {
            $t.fail(concat!(file!(), "\0"), line!(), concat!(stringify!($cond), "\0"), format_args!($($fmt)+));
        }
        ok
    }};
}

/// Expects `$left == $right`; on failure prints both values (and an optional message
/// naming the check). Evaluates to the comparison.
#[macro_export]
macro_rules! aikrs_expect_eq {
    ($t:expr, $left:expr, $right:expr, $msg:literal $(,)?) => {{
        match (&$left, &$right) {
            (l, r) => {
                let ok = *l == *r;
                if !ok {
                    $t.fail(
                        concat!(file!(), "\0"),
                        line!(),
                        concat!(stringify!($left), " == ", stringify!($right), "\0"),
                        format_args!("{}: left: {:?}, right: {:?}", $msg, l, r),
                    );
                }
                ok
            }
        }
    }};
    ($t:expr, $left:expr, $right:expr $(,)?) => {
        $crate::aikrs_expect_eq!($t, $left, $right, "not equal")
    };
}
