// SPDX-License-Identifier: GPL-2.0

//! Kernel threads bound to CPUs (C `kthread_create_on_node`, `kthread_bind`,
//! `kthread_stop_put`), for stress tests and benchmarks that must run on every CPU at once.

use crate::{
    bindings,
    error::{from_err_ptr, Result},
};
use core::{
    ffi::{c_int, c_void},
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs `f(cpu)` once on every online CPU, each in its own kernel thread bound to that
/// CPU, all concurrently, and returns when all have returned.
///
/// If a thread cannot be created, the threads already started are still waited for and the
/// error is returned; `f` then ran on fewer CPUs. Must be called from process context (it
/// sleeps).
pub fn run_on_each_online_cpu(f: &(dyn Fn(u32) + Sync)) -> Result {
    struct Ctx<'a> {
        f: &'a (dyn Fn(u32) + Sync),
        cpu: u32,
        done: &'a AtomicU32,
    }
    /// The kernel thread's function.
    ///
    /// # Safety
    ///
    /// `data` must point to a `Ctx` that stays valid until the function returns.
    unsafe extern "C" fn thread_fn(data: *mut c_void) -> c_int {
        // SAFETY: `data` is a `Ctx` in `ctxs` below, which lives until every thread has
        // been stopped (`kthread_stop_put` waits for the thread function to return).
        let ctx = unsafe { &*data.cast::<Ctx<'_>>() };
        (ctx.f)(ctx.cpu);
        ctx.done.fetch_add(1, Ordering::Release);
        0
    }

    let done = AtomicU32::new(0);
    let mut ctxs = crate::alloc::KVec::new();
    for cpu in super::cpu::online_cpus() {
        ctxs.push(
            Ctx {
                f,
                cpu,
                done: &done,
            },
            crate::alloc::flags::GFP_KERNEL,
        )?;
    }
    let mut tasks = crate::alloc::KVec::with_capacity(ctxs.len(), crate::alloc::flags::GFP_KERNEL)?;
    let mut result = Ok(());
    for ctx in ctxs.iter() {
        // SAFETY: `thread_fn` matches the thread-function type; `ctx` stays valid until the
        // thread is stopped below. The helper binds the thread to `ctx.cpu` and takes a
        // task reference that `kthread_stop_put` drops.
        let t = unsafe {
            bindings::aikrs_kthread_create_on_cpu(
                Some(thread_fn),
                core::ptr::from_ref(ctx).cast_mut().cast(),
                ctx.cpu,
            )
        };
        match from_err_ptr(t) {
            Ok(t) => {
                // Capacity was reserved above, so this push cannot fail; if it somehow
                // did, stop the thread before it can run (it has not been woken).
                if let Err(e) = tasks.push(t, crate::alloc::flags::GFP_KERNEL) {
                    // SAFETY: `t` is a created, never-woken thread with a reference held.
                    unsafe { bindings::kthread_stop_put(t) };
                    result = Err(e.into());
                    break;
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // Start them all, then wait for all. `kthread_stop` on a thread that has not begun
    // would make it exit without running `f`, so wait for `done` first.
    for &t in tasks.iter() {
        // SAFETY: `t` is a live thread (reference held) created above.
        unsafe { bindings::wake_up_process(t) };
    }
    while (done.load(Ordering::Acquire) as usize) < tasks.len() {
        // The caller is in process context (documented).
        msleep(1);
    }
    for &t in tasks.iter() {
        // SAFETY: Each thread is stopped and its reference dropped exactly once.
        // `kthread_stop_put` waits for the thread function to return, which keeps `ctxs`
        // alive long enough.
        unsafe { bindings::kthread_stop_put(t) };
    }
    result
}

/// A start line for the threads of [`run_on_each_online_cpu`], so that they really run at
/// the same time: each calls [`StartBarrier::wait`], which returns once `n` have arrived.
///
/// Waiters spin, yielding with `cond_resched()`: on a kernel without full preemption the
/// task still waking the other threads may be waiting for the spinning thread's CPU (a
/// 4-vCPU benchmark boot stalled that way once).
pub struct StartBarrier {
    arrived: AtomicU32,
    n: u32,
}

impl StartBarrier {
    /// A barrier for `n` threads (usually `cpu::num_online_cpus()`).
    pub const fn new(n: u32) -> Self {
        Self {
            arrived: AtomicU32::new(0),
            n,
        }
    }

    /// How many threads have arrived so far.
    pub fn arrived(&self) -> u32 {
        self.arrived.load(Ordering::Acquire)
    }

    /// Arrives and waits for the others. Process context only (it may schedule).
    pub fn wait(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        while self.arrived.load(Ordering::Acquire) < self.n {
            super::cpu::cond_resched();
            super::cpu::cpu_relax();
        }
    }
}

/// Sleeps for at least `ms` milliseconds (`msleep`). Process context only.
pub fn msleep(ms: u32) {
    // SAFETY: Sleeping is allowed in process context (documented).
    unsafe { bindings::msleep(ms) };
}
