// SPDX-License-Identifier: GPL-2.0

//! CPU numbers and local interrupt state (C `<linux/cpumask.h>`, `<linux/irqflags.h>`),
//! and yielding the CPU in long loops (`cond_resched`, `fatal_signal_pending`).
//!
//! Linux 6.12's `kernel` crate has neither; these are thin wrappers over C helpers for
//! the macros and inline functions involved.

use crate::{
    bindings,
    error::{code::EINTR, Result},
};
use core::marker::PhantomData;

/// `nr_cpu_ids`: one more than the highest possible CPU number.
#[inline]
pub fn nr_cpu_ids() -> u32 {
    // SAFETY: Reads a variable fixed during early boot.
    unsafe { bindings::aikrs_nr_cpu_ids() }
}

/// `num_online_cpus()`.
#[inline]
pub fn num_online_cpus() -> u32 {
    // SAFETY: Reads the online mask's weight; always safe.
    unsafe { bindings::aikrs_num_online_cpus() }
}

/// Whether `cpu` is online (false for numbers at or above [`nr_cpu_ids`]).
#[inline]
pub fn cpu_online(cpu: u32) -> bool {
    // SAFETY: The helper bounds-checks `cpu` before testing the mask.
    unsafe { bindings::aikrs_cpu_online(cpu) }
}

/// Whether `cpu` is possible (false for numbers at or above [`nr_cpu_ids`]).
#[inline]
pub fn cpu_possible(cpu: u32) -> bool {
    // SAFETY: The helper bounds-checks `cpu` before testing the mask.
    unsafe { bindings::aikrs_cpu_possible(cpu) }
}

/// The online CPUs, in increasing order (a snapshot: CPUs may come and go).
pub fn online_cpus() -> impl Iterator<Item = u32> {
    (0..nr_cpu_ids()).filter(|&c| cpu_online(c))
}

/// The CPU the caller runs on (`raw_smp_processor_id()`): only a hint unless preemption
/// is disabled, e.g. while an [`IrqDisabled`] guard is held.
#[inline]
pub fn current_cpu_hint() -> u32 {
    // SAFETY: Reading the current CPU number is always safe.
    unsafe { bindings::aikrs_raw_smp_processor_id() }
}

/// `cpu_relax()`, for spin-wait loops.
#[inline]
pub fn cpu_relax() {
    // SAFETY: A pause instruction; always safe.
    unsafe { bindings::aikrs_cpu_relax() }
}

/// `cond_resched()`: lets another task that waits for this CPU run first.
///
/// Spin-wait and long loops in kernel threads call it: without full preemption
/// (`PREEMPT_NONE`/`PREEMPT_VOLUNTARY`) nothing else runs on this CPU until they
/// yield, which may be the very task they wait for. Only in process context where
/// sleeping is allowed (`might_sleep` warns otherwise).
#[inline]
pub fn cond_resched() {
    // SAFETY: No memory is touched; the context rule above is checked by the kernel.
    unsafe { bindings::aikrs_cond_resched() }
}

/// Whether the current task is being killed (`fatal_signal_pending(current)`): a
/// `SIGKILL` is pending, or another signal whose default action ends the process (the
/// kernel turns those into a `SIGKILL`). Always false in a kernel thread.
#[inline]
pub fn fatal_signal_pending() -> bool {
    // SAFETY: Reads the pending signals of the current task, which is alive while it
    // runs this; allowed in any context.
    unsafe { bindings::aikrs_fatal_signal_pending() }
}

/// One step of a long loop run on behalf of a user task (an ioctl over a range that user
/// space chose, say): `EINTR` if the task is being killed ([`fatal_signal_pending`]), so
/// that the loop stops and the kill takes effect; otherwise [`cond_resched`]. Only in
/// process context, holding no spinlock (it may sleep).
#[inline]
pub fn cond_resched_killable() -> Result {
    if fatal_signal_pending() {
        return Err(EINTR);
    }
    cond_resched();
    Ok(())
}

/// Interrupts of the local CPU are disabled while this guard lives
/// (`local_irq_save`/`local_irq_restore`). This also disables preemption and migration,
/// so the current CPU is fixed.
///
/// Guards nest: each restores the state it saved. It is not `Send`: it must be dropped on
/// the CPU that created it.
///
/// # Invariants
///
/// `flags` is what `local_irq_save` returned on this CPU; it is restored exactly once.
pub struct IrqDisabled {
    flags: usize,
    _not_send: PhantomData<*mut ()>,
}

impl IrqDisabled {
    /// Disables local interrupts, remembering the previous state.
    #[inline]
    pub fn new() -> Self {
        // SAFETY: Saving and disabling local interrupts is always allowed; `drop`
        // restores them.
        let flags = unsafe { bindings::aikrs_local_irq_save() };
        // INVARIANT: `flags` was just saved on this CPU.
        Self {
            flags,
            _not_send: PhantomData,
        }
    }

    /// The CPU this guard pins the caller to.
    #[inline]
    pub fn cpu(&self) -> u32 {
        current_cpu_hint()
    }
}

impl Default for IrqDisabled {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IrqDisabled {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariant `flags` came from `local_irq_save` on this CPU
        // (the guard is not `Send`) and is restored once.
        unsafe { bindings::aikrs_local_irq_restore(self.flags) };
    }
}

/// Runs `f` with local interrupts disabled and `lock` held: C's `spin_lock_irqsave`, so
/// the lock may also be taken from interrupt context.
///
/// On `PREEMPT_RT` a `spinlock_t` sleeps and must not be taken with interrupts disabled;
/// users of this function depend on `!PREEMPT_RT` in Kconfig.
#[inline]
pub fn with_irqsave<T: ?Sized + Unpin, R>(
    lock: &crate::sync::SpinLock<T>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let _irq = IrqDisabled::new();
    let mut guard = lock.lock();
    f(&mut *guard)
    // `guard` is dropped before `_irq`: unlock, then restore interrupts.
}

/// Monotonic time in nanoseconds (`ktime_get()`).
#[inline]
pub fn ktime_ns() -> i64 {
    // SAFETY: `ktime_get` may be called from any context once timekeeping is up, which
    // is before any initcall or KUnit test.
    unsafe { bindings::ktime_get() }
}
