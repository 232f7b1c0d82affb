// SPDX-License-Identifier: GPL-2.0

//! Per-CPU data (C `alloc_percpu`, `this_cpu_ptr`, `per_cpu_ptr`, `on_each_cpu`).
//!
//! Linux 6.12's `kernel` crate has no per-CPU abstraction. [`PerCpu`] gives each CPU its
//! own `T` and hands out `&mut T` only where that is exclusive:
//!
//! - [`PerCpu::with_local`]: the current CPU's value with local interrupts disabled (so
//!   neither preemption, migration nor an interrupt handler on this CPU can get in), the
//!   pattern of C's `local_lock_irqsave` on a non-RT kernel;
//! - [`PerCpu::on_each_cpu`]: every online CPU's value, each on its own CPU in an IPI
//!   handler (interrupts are disabled there too);
//! - [`PerCpu::get_mut`]: any CPU's value, given `&mut PerCpu` (nobody else can access it).
//!
//! A per-CPU "busy" flag refuses re-entry (a closure that calls `with_local` on the same
//! `PerCpu` again gets `None`), so two `&mut T` to one CPU's value never coexist.

use crate::{alloc::Flags, bindings, error::code::ENOMEM, error::Result};
use core::{ffi::c_void, marker::PhantomData, ptr::NonNull};

/// Types for which the all-zeroes bit pattern is a valid value.
///
/// # Safety
///
/// All-zero bytes must be a valid, initialised `Self`.
pub unsafe trait ZeroInit {}

// SAFETY: Zero is a valid integer.
unsafe impl ZeroInit for u64 {}
// SAFETY: Zero is a valid integer.
unsafe impl ZeroInit for u32 {}
// SAFETY: Zero is a valid integer.
unsafe impl ZeroInit for usize {}
// SAFETY: An array of zero-valid elements is zero-valid.
unsafe impl<T: ZeroInit, const N: usize> ZeroInit for [T; N] {}

#[repr(C)]
struct Slot<T> {
    busy: bool,
    val: T,
}

/// One `T` per possible CPU, zero-initialised.
///
/// `T: Copy` guarantees that no destructor has to run when the values are freed.
///
/// # Invariants
///
/// `ptr` is a per-CPU allocation (from `__alloc_percpu_gfp`, zeroed) of one `Slot<T>` per
/// possible CPU, freed only in `drop`. A CPU's `Slot::busy` is true exactly while a
/// `&mut T` to its value handed out by `with_local` or `on_each_cpu` is live, and that only
/// happens on that CPU with its interrupts disabled.
pub struct PerCpu<T: ZeroInit + Copy> {
    ptr: NonNull<Slot<T>>,
    _p: PhantomData<T>,
}

// SAFETY: The values are only accessed through `&mut T` on their own CPU with interrupts
// disabled, or through `&mut self`; moving the handle to another thread is fine if `T` is.
unsafe impl<T: ZeroInit + Copy + Send> Send for PerCpu<T> {}
// SAFETY: Shared access only yields `&mut T` exclusively (see the type invariants).
unsafe impl<T: ZeroInit + Copy + Send> Sync for PerCpu<T> {}

impl<T: ZeroInit + Copy> PerCpu<T> {
    /// Allocates a zeroed `T` for every possible CPU.
    pub fn new(flags: Flags) -> Result<Self> {
        // SAFETY: Any size and power-of-two alignment may be requested; the result is
        // zeroed per-CPU memory or NULL.
        let p = unsafe {
            bindings::aikrs_alloc_percpu(
                core::mem::size_of::<Slot<T>>(),
                core::mem::align_of::<Slot<T>>(),
                flags.as_raw(),
            )
        };
        let ptr = NonNull::new(p.cast::<Slot<T>>()).ok_or(ENOMEM)?;
        // INVARIANT: zeroed memory is a valid `Slot<T>` (`bool` false, `T: ZeroInit`).
        Ok(Self {
            ptr,
            _p: PhantomData,
        })
    }

    fn slot_of(&self, cpu: u32) -> *mut Slot<T> {
        // SAFETY: `ptr` is a per-CPU allocation (type invariant) and the callers pass a
        // possible CPU.
        unsafe { bindings::aikrs_per_cpu_ptr(self.ptr.as_ptr().cast(), cpu) }.cast()
    }

    /// Runs `f` on the current CPU's value with local interrupts disabled. Returns `None`
    /// (without running `f`) if this CPU's value is already in use further up the stack.
    ///
    /// `f` runs with local interrupts disabled, so it may take spinlocks that are also
    /// taken from interrupt context without saving the interrupt state again.
    #[inline]
    pub fn with_local<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut flags = 0;
        // SAFETY: `ptr` is a per-CPU allocation; the helper disables local interrupts
        // (saving the previous state in `flags`) before computing this CPU's address, so
        // the CPU cannot change until the restore below.
        let slot =
            unsafe { bindings::aikrs_this_cpu_ptr_irqsave(self.ptr.as_ptr().cast(), &mut flags) }
                .cast::<Slot<T>>();
        // SAFETY: `slot` is this CPU's valid `Slot<T>`. Only code on this CPU with
        // interrupts disabled touches it (type invariant), and we are that code now.
        let slot = unsafe { &mut *slot };
        let r = if slot.busy {
            None
        } else {
            // INVARIANT: busy while the `&mut T` below is live.
            slot.busy = true;
            let r = f(&mut slot.val);
            slot.busy = false;
            Some(r)
        };
        // SAFETY: `flags` was saved by the helper above on this CPU (interrupts have been
        // off since, so we did not migrate) and is restored once.
        unsafe { bindings::aikrs_local_irq_restore(flags) };
        r
    }

    /// The value of `cpu`, given exclusive access to the whole `PerCpu`; `None` if `cpu`
    /// is not a possible CPU.
    pub fn get_mut(&mut self, cpu: u32) -> Option<&mut T> {
        if !super::cpu::cpu_possible(cpu) {
            return None;
        }
        // SAFETY: `cpu` is possible, so its slot is valid; `&mut self` excludes every
        // other access for the lifetime of the result.
        Some(unsafe { &mut (*self.slot_of(cpu)).val })
    }

    /// Runs `f` on every online CPU, on that CPU, with its value, in an IPI handler, and
    /// waits for all of them (`on_each_cpu(.., wait = 1)`).
    ///
    /// Must be called from process context with interrupts enabled and without holding a
    /// lock that `f` takes (as for C's `on_each_cpu`). `f` must not sleep.
    pub fn on_each_cpu(&self, f: &(dyn Fn(&mut T) + Sync)) {
        struct Ctx<'a, T: ZeroInit + Copy> {
            pc: &'a PerCpu<T>,
            f: &'a (dyn Fn(&mut T) + Sync),
        }
        /// The IPI handler.
        ///
        /// # Safety
        ///
        /// `info` must point to a `Ctx<'_, T>` that stays valid until the handler returns.
        unsafe extern "C" fn tramp<T: ZeroInit + Copy>(info: *mut c_void) {
            // SAFETY: `info` is the `Ctx` below, alive until `on_each_cpu` returns (wait).
            let ctx = unsafe { &*info.cast::<Ctx<'_, T>>() };
            // The handler runs with interrupts disabled; `with_local` nests fine.
            let _ = ctx.pc.with_local(|v| (ctx.f)(v));
        }
        let ctx = Ctx { pc: self, f };
        // SAFETY: `tramp::<T>` matches `smp_call_func_t`; `ctx` outlives the call because
        // the helper waits for every CPU.
        unsafe {
            bindings::aikrs_on_each_cpu(
                Some(tramp::<T>),
                core::ptr::from_ref(&ctx).cast_mut().cast(),
            )
        };
    }
}

impl<T: ZeroInit + Copy> Drop for PerCpu<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the per-CPU allocator (type invariant) and is freed once;
        // `T: Copy` has no destructor to run.
        unsafe { bindings::free_percpu(self.ptr.as_ptr().cast()) };
    }
}
