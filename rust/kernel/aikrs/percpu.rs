// SPDX-License-Identifier: GPL-2.0

//! Per-CPU data (C `alloc_percpu`, `this_cpu_ptr`, `per_cpu_ptr`, `smp_call_on_cpu`).
//!
//! Linux 6.12's `kernel` crate has no per-CPU abstraction. [`PerCpu`] gives each CPU its
//! own `T` and hands out `&mut T` only where that is exclusive:
//!
//! - [`PerCpu::with_local`]: the current CPU's value with local interrupts disabled (so
//!   neither preemption, migration nor an interrupt handler on this CPU can get in), the
//!   pattern of C's `local_lock_irqsave` on a non-RT kernel;
//! - [`PerCpu::with_local_preempt`]: the current CPU's value with preemption disabled
//!   but interrupts on; an interrupt handler on this CPU that asks for the value while
//!   it is in use gets `None` (and must take another path), as with re-entry below. It
//!   avoids the cost of saving and restoring the interrupt state on a hot path;
//! - [`PerCpu::run_on_each_cpu`]: every online CPU's value, each on its own CPU in
//!   process context (`smp_call_on_cpu`), so never in the middle of one of the above;
//! - [`PerCpu::get_mut`]: any CPU's value, given `&mut PerCpu` (nobody else can access it);
//! - [`PerCpu::with_dead_cpu`]: the value of a CPU that has gone offline, from a CPU
//!   hotplug callback ([`crate::aikrs::cpuhp`]), to give back what it cached.
//!
//! A per-CPU "busy" flag refuses re-entry (a closure, or an interrupt handler, that asks
//! for the same CPU's value again gets `None`), so two `&mut T` to one CPU's value never
//! coexist. While a CPU runs code (from before it is marked online until it is dead),
//! its flag is only written on that CPU, with preemption disabled, so a plain load and
//! store suffice: an interrupt between them runs to completion and leaves the flag as it
//! found it. Once the CPU is dead, [`PerCpu::with_dead_cpu`] writes it from the control
//! CPU of the hotplug operation, while nothing can run on the dead CPU.
//!
//! # Who accesses a CPU's value
//!
//! - that CPU itself, while it runs code: [`PerCpu::with_local`],
//!   [`PerCpu::with_local_preempt`] (they take the *current* CPU's value, so only a CPU
//!   that is running can be reached this way), and the work items of
//!   [`PerCpu::run_on_each_cpu`], which holds `cpus_read_lock()` throughout;
//! - the holder of `&mut PerCpu` ([`PerCpu::get_mut`]), which excludes every other access;
//! - once the CPU is dead, [`PerCpu::with_dead_cpu`], only from a CPU hotplug teardown
//!   callback of the PREPARE section ([`crate::aikrs::cpuhp`]): it runs on another CPU
//!   after the CPU has died, with the CPU hotplug lock held for writing until it returns.
//!   The dead CPU runs nothing and cannot come back before then (bringing it up needs the
//!   same lock), and `run_on_each_cpu` cannot run meanwhile (it holds the lock for
//!   reading). A CPU only dies between sections (they run with preemption disabled, and a
//!   CPU is taken down by its stopper thread), so no `&mut T` handed out on it is left.

use crate::{
    alloc::Flags,
    bindings,
    error::code::{EINVAL, ENOMEM},
    error::Result,
};
use core::{
    ffi::{c_int, c_void},
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{compiler_fence, AtomicBool, Ordering},
};

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
    /// Only accessed through shared references (never covered by a `&mut Slot`), so an
    /// interrupt handler may read it while the interrupted code holds `&mut val`.
    busy: AtomicBool,
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
/// `&mut T` to its value handed out by `with_local`, `with_local_preempt`,
/// `run_on_each_cpu` or `with_dead_cpu` is live. The first three only hand it out on that
/// CPU, while it runs, with preemption (and possibly interrupts) disabled;
/// `with_dead_cpu` only on another CPU, after that CPU has died and while the CPU hotplug
/// lock is held for writing (so the CPU runs nothing and `run_on_each_cpu`, which holds
/// the lock for reading, cannot run). No `&mut Slot<T>` is ever formed.
pub struct PerCpu<T: ZeroInit + Copy> {
    ptr: NonNull<Slot<T>>,
    _p: PhantomData<T>,
}

// SAFETY: A value is only accessed through a `&mut T` that is exclusive (type invariants):
// on its own CPU with preemption disabled, through `&mut self`, or, once its CPU is dead,
// from the CPU hotplug callback on another CPU. Values thus move between threads and
// CPUs, which is fine since `T: Send`; the handle itself is a pointer to them.
unsafe impl<T: ZeroInit + Copy + Send> Send for PerCpu<T> {}
// SAFETY: Shared access only yields `&mut T` exclusively (see the type invariants), and
// `T: Send` covers a dead CPU's value being used from the hotplug callback's thread.
unsafe impl<T: ZeroInit + Copy + Send> Sync for PerCpu<T> {}

impl<T: ZeroInit + Copy> PerCpu<T> {
    /// Allocates a zeroed `T` for every possible CPU. `EINVAL` if `T` is larger than a
    /// per-CPU allocation may be (`PCPU_MIN_UNIT_SIZE`, 32 KiB: the allocator refuses
    /// larger ones with a warning).
    pub fn new(flags: Flags) -> Result<Self> {
        if core::mem::size_of::<Slot<T>>() > 32 << 10 {
            return Err(EINVAL);
        }
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
        // INVARIANT: zeroed memory is a valid `Slot<T>` (`AtomicBool` false, `T: ZeroInit`).
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
        // SAFETY: `slot` is this CPU's slot and we cannot migrate until the restore.
        let r = unsafe { Self::claim(slot, f) };
        // SAFETY: `flags` was saved by the helper above on this CPU (interrupts have been
        // off since, so we did not migrate) and is restored once.
        unsafe { bindings::aikrs_local_irq_restore(flags) };
        r
    }

    /// Runs `f` on the current CPU's value with preemption disabled and interrupts
    /// enabled. Returns `None` (without running `f`) if this CPU's value is already in
    /// use further up the stack, which includes an interrupt handler arriving while `f`
    /// runs in the code it interrupted.
    ///
    /// `f` must take any spinlock that interrupt handlers also take with interrupts
    /// disabled (`cpu::with_irqsave`).
    #[inline]
    pub fn with_local_preempt<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        // SAFETY: `ptr` is a per-CPU allocation; the helper disables preemption before
        // computing this CPU's address, so the CPU cannot change until the enable below.
        let slot = unsafe { bindings::aikrs_this_cpu_ptr_preempt(self.ptr.as_ptr().cast()) }
            .cast::<Slot<T>>();
        // SAFETY: `slot` is this CPU's slot and we cannot migrate until the enable.
        let r = unsafe { Self::claim(slot, f) };
        // SAFETY: Pairs with the disable in the helper above.
        unsafe { bindings::aikrs_preempt_enable() };
        r
    }

    /// Runs `f` on `slot`'s value unless it is busy.
    ///
    /// # Safety
    ///
    /// `slot` must be the current CPU's slot of `self`, and the caller must keep
    /// preemption (and so migration) disabled until this returns.
    #[inline]
    unsafe fn claim<R>(slot: *mut Slot<T>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        // SAFETY: `slot` is valid (per-CPU allocation, type invariant); `busy` is only
        // accessed through shared references.
        let busy = unsafe { &(*slot).busy };
        if busy.load(Ordering::Relaxed) {
            return None;
        }
        // While this CPU runs, only it writes its flag (`with_dead_cpu` only once it is
        // dead), with preemption disabled: an interrupt between the load and the store
        // runs to completion and leaves the flag false again.
        // INVARIANT: busy while the `&mut T` below is live.
        busy.store(true, Ordering::Relaxed);
        // Keep the compiler from moving accesses to the value across the flag.
        compiler_fence(Ordering::SeqCst);
        // SAFETY: The flag was clear and is now set on this CPU, which cannot change and
        // is running (so `with_dead_cpu` cannot reach this value): no other `&mut T` to
        // it exists (type invariant) until we clear it.
        let r = f(unsafe { &mut (*slot).val });
        compiler_fence(Ordering::SeqCst);
        busy.store(false, Ordering::Relaxed);
        Some(r)
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

    /// Runs `f` on the value of a CPU that has gone offline, from the CPU hotplug callback
    /// that says so ([`crate::aikrs::cpuhp::CpuDead::cpu_dead`]), so that what it cached
    /// can be given back. Returns `None` (without running `f`) if the CPU is online (it
    /// cannot be while `cpu` exists) or its value was left in use (impossible: a section
    /// runs with preemption disabled, and a CPU only dies between sections).
    ///
    /// Only the cpuhp module makes a [`DeadCpu`](super::cpuhp::DeadCpu), in the teardown
    /// of a PREPARE-section state, which runs on another CPU once the CPU is dead, with
    /// the CPU hotplug lock held for writing until it returns; a `DeadCpu` is neither
    /// `Send` nor `Sync`, so it stays in that callback. Meanwhile (see the module
    /// documentation): the dead CPU runs nothing, so no `with_local*` section reaches its
    /// value; [`PerCpu::run_on_each_cpu`] waits for `cpus_read_lock()`; and `&self`
    /// excludes [`PerCpu::get_mut`]. The hotplug core's handshake with the dying CPU
    /// (it waits for the CPU to report itself dead) orders the CPU's last accesses before
    /// this one.
    pub fn with_dead_cpu<R>(
        &self,
        cpu: &super::cpuhp::DeadCpu,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let cpu = cpu.cpu();
        if !super::cpu::cpu_possible(cpu) || super::cpu::cpu_online(cpu) {
            return None;
        }
        let slot = self.slot_of(cpu);
        // SAFETY: `cpu` is possible, so `slot` is valid (type invariant); `busy` is only
        // accessed through shared references.
        let busy = unsafe { &(*slot).busy };
        if busy.load(Ordering::Acquire) {
            return None;
        }
        // INVARIANT: busy while the `&mut T` below is live. Nothing runs on the dead CPU
        // and no other access can start before the callback returns (see above), so a
        // plain store suffices.
        busy.store(true, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        // SAFETY: `slot` is valid (above). The flag was clear: no `&mut T` to this value
        // exists, and none can be made elsewhere until we clear it (see above).
        let r = f(unsafe { &mut (*slot).val });
        compiler_fence(Ordering::SeqCst);
        busy.store(false, Ordering::Release);
        Some(r)
    }

    /// Runs `f` on every online CPU's value, one CPU after the other, each on its own CPU
    /// in process context (`smp_call_on_cpu`: a kworker bound to it, with CPU hotplug held
    /// off), so never in the middle of a [`with_local`](Self::with_local) or
    /// [`with_local_preempt`](Self::with_local_preempt) section on that CPU.
    ///
    /// Must be called from process context (it sleeps) without holding a lock that `f`
    /// takes. `f` runs with interrupts disabled and must not sleep.
    pub fn run_on_each_cpu(&self, f: &(dyn Fn(&mut T) + Sync)) {
        struct Ctx<'a, T: ZeroInit + Copy> {
            pc: &'a PerCpu<T>,
            f: &'a (dyn Fn(&mut T) + Sync),
        }
        /// The function run on each CPU.
        ///
        /// # Safety
        ///
        /// `info` must point to a `Ctx<'_, T>` that stays valid until the function returns.
        unsafe extern "C" fn tramp<T: ZeroInit + Copy>(info: *mut c_void) -> c_int {
            // SAFETY: `info` is the `Ctx` below, alive until `smp_call_on_cpu` returns.
            let ctx = unsafe { &*info.cast::<Ctx<'_, T>>() };
            // In a kworker bound to this CPU: no section of this CPU is in progress.
            let _ = ctx.pc.with_local(|v| (ctx.f)(v));
            0
        }
        let ctx = Ctx { pc: self, f };
        // Hold off CPU hotplug: each work item then runs on the CPU it was queued for,
        // and the set of online CPUs stays what we iterate over.
        // SAFETY: Process context (documented); released below.
        unsafe { bindings::aikrs_cpus_read_lock() };
        for cpu in super::cpu::online_cpus() {
            // SAFETY: `tramp::<T>` matches the callback type; `ctx` outlives the call,
            // which waits for the function to return.
            unsafe {
                bindings::smp_call_on_cpu(
                    cpu,
                    Some(tramp::<T>),
                    core::ptr::from_ref(&ctx).cast_mut().cast(),
                    false,
                )
            };
        }
        // SAFETY: Taken above.
        unsafe { bindings::aikrs_cpus_read_unlock() };
    }
}

impl<T: ZeroInit + Copy> Drop for PerCpu<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the per-CPU allocator (type invariant) and is freed once;
        // `T: Copy` has no destructor to run.
        unsafe { bindings::free_percpu(self.ptr.as_ptr().cast()) };
    }
}
