// SPDX-License-Identifier: GPL-2.0

//! High-resolution timers and work items that own their data
//! (C `<linux/hrtimer.h>`, `<linux/workqueue.h>`).
//!
//! Linux 6.12's `kernel` crate has neither hrtimers nor a work item that can be queued
//! from hard interrupt context without an `Arc`; 7.x changed both interfaces. These are
//! the two small shapes the model GPU needs, over `rust/aikrs_drm.c`:
//!
//! - [`Timer<T>`]: a `CLOCK_MONOTONIC` hrtimer with absolute expiry, run in hard interrupt
//!   context, whose callback is [`Expired::expired`] on the `T` it owns;
//! - [`Work<T>`]: a work item on `system_highpri_wq` whose function is [`Run::run`] on the
//!   `T` it owns; [`Work::queue`] may be called from any context.
//!
//! Both are heap nodes: `T` lives at a fixed address until the owner is dropped, and the
//! drop waits for a running callback (`hrtimer_cancel`, `cancel_work_sync`).

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::Result,
    types::Opaque,
};
use core::{marker::PhantomPinned, pin::Pin};

/// The callback of a [`Timer`].
pub trait Expired: Send + Sync + Sized {
    /// Runs when the timer expires, in hard interrupt context: must not sleep and may only
    /// take irq-safe locks. `timer` can re-arm the timer ([`TimerRef::start_at`]).
    fn expired(&self, timer: &TimerRef);
}

/// A node of a [`Timer`].
///
/// # Invariants
///
/// `timer` was set up by `aikrs_hrtimer_setup` with `Timer::<T>::callback`.
#[repr(C)]
struct TimerNode<T> {
    timer: Opaque<bindings::hrtimer>,
    data: T,
    _pin: PhantomPinned,
}

/// A way to (re-)arm a timer, given to callbacks and reachable from a [`Timer`].
#[repr(transparent)]
pub struct TimerRef(Opaque<bindings::hrtimer>);

impl TimerRef {
    /// Arms the timer to expire at `ns` (`ktime_get()` nanoseconds); re-arms it if armed.
    /// May be called from any context, including the timer's own callback.
    pub fn start_at(&self, ns: i64) {
        // SAFETY: The hrtimer was set up (`TimerNode` invariant) and is live: `TimerRef`s
        // only exist inside live nodes.
        unsafe { bindings::aikrs_hrtimer_start_abs(self.0.get(), ns) };
    }

    /// Disarms the timer without waiting for a running callback. Returns whether it was
    /// armed. Safe in any context (`hrtimer_try_to_cancel`; a running callback is left
    /// alone).
    pub fn try_cancel(&self) -> bool {
        // SAFETY: As in `start_at`.
        unsafe { bindings::hrtimer_try_to_cancel(self.0.get()) == 1 }
    }
}

/// An hrtimer owning `T`; dropping it cancels the timer and waits for its callback.
pub struct Timer<T: Expired> {
    node: Pin<KBox<TimerNode<T>>>,
}

impl<T: Expired> Timer<T> {
    /// A new, unarmed timer owning `data`.
    pub fn new(data: T) -> Result<Self> {
        let mut node = KBox::pin(
            TimerNode {
                timer: Opaque::uninit(),
                data,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: We only take the address of the pinned field.
        let t = unsafe { node.as_mut().get_unchecked_mut() }.timer.get();
        // SAFETY: `t` is valid and pinned for the node's life; the callback matches.
        // INVARIANT: Set up with `Self::callback`.
        unsafe { bindings::aikrs_hrtimer_setup(t, Some(Self::callback)) };
        Ok(Self { node })
    }

    /// The owned data.
    pub fn data(&self) -> &T {
        &self.node.data
    }

    /// The timer itself, to arm it.
    pub fn timer(&self) -> &TimerRef {
        // SAFETY: `TimerRef` is `repr(transparent)` over the same `Opaque`.
        unsafe { &*core::ptr::from_ref(&self.node.timer).cast::<TimerRef>() }
    }

    /// Cancels the timer, waiting for a running callback to finish. Process context.
    pub fn cancel(&self) {
        // SAFETY: The timer is live and set up; `hrtimer_cancel` may sleep-wait (spin) for
        // the callback, allowed in process context.
        unsafe { bindings::hrtimer_cancel(self.node.timer.get()) };
    }

    /// The `hrtimer` callback.
    ///
    /// # Safety
    ///
    /// Called by the hrtimer core for a timer set up in [`Timer::new`].
    unsafe extern "C" fn callback(t: *mut bindings::hrtimer) -> bindings::hrtimer_restart {
        // SAFETY: `t` is the `timer` field of a live `TimerNode<T>`: `Drop` cancels the
        // timer (waiting for this callback) before freeing the node.
        let node = unsafe {
            &*crate::container_of!(t.cast::<Opaque<bindings::hrtimer>>(), TimerNode<T>, timer)
        };
        // SAFETY: `TimerRef` is `repr(transparent)` over `Opaque<hrtimer>`.
        let tref = unsafe { &*core::ptr::from_ref(&node.timer).cast::<TimerRef>() };
        node.data.expired(tref);
        // 7.x binds `enum hrtimer_restart` as a newtype, 6.12 as an integer.
        #[cfg(CONFIG_AIKRS_LINUX_GE_7)]
        let r = bindings::hrtimer_restart::HRTIMER_NORESTART;
        #[cfg(not(CONFIG_AIKRS_LINUX_GE_7))]
        let r = bindings::hrtimer_restart_HRTIMER_NORESTART;
        r
    }
}

impl<T: Expired> Drop for Timer<T> {
    fn drop(&mut self) {
        self.cancel();
    }
}

// SAFETY: The node is only reached through `&self` (`T: Sync`) and the C timer is
// internally locked; `T: Send` lets the owner move between threads.
unsafe impl<T: Expired> Send for Timer<T> {}
// SAFETY: See `Send`.
unsafe impl<T: Expired> Sync for Timer<T> {}

/// The function of a [`Work`] item.
pub trait Run: Send + Sync + Sized {
    /// Runs in process context on `system_highpri_wq`; may sleep.
    fn run(&self);
}

/// A node of a [`Work`].
///
/// # Invariants
///
/// `work` was initialised by `aikrs_work_init` with `Work::<T>::func`.
#[repr(C)]
struct WorkNode<T> {
    work: Opaque<bindings::work_struct>,
    data: T,
    _pin: PhantomPinned,
}

/// A work item owning `T`; dropping it cancels it and waits for a running `T::run`.
pub struct Work<T: Run> {
    node: Pin<KBox<WorkNode<T>>>,
}

impl<T: Run> Work<T> {
    /// A new idle work item owning `data`.
    pub fn new(data: T) -> Result<Self> {
        let mut node = KBox::pin(
            WorkNode {
                work: Opaque::uninit(),
                data,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: We only take the address of the pinned field.
        let w = unsafe { node.as_mut().get_unchecked_mut() }.work.get();
        // SAFETY: `w` is valid and pinned for the node's life.
        // INVARIANT: Initialised with `Self::func`.
        unsafe { bindings::aikrs_work_init(w, Some(Self::func)) };
        Ok(Self { node })
    }

    /// The owned data.
    pub fn data(&self) -> &T {
        &self.node.data
    }

    /// Queues the item unless it is already queued (then `T::run` runs once for both).
    /// Any context.
    pub fn queue(&self) -> bool {
        // SAFETY: The work item is initialised and live while `self` is.
        unsafe { bindings::aikrs_work_queue(self.node.work.get()) }
    }

    /// Waits until the item is neither queued nor running. Process context.
    pub fn cancel_sync(&self) {
        // SAFETY: As in `queue`; waiting may sleep (process context, documented).
        unsafe { bindings::cancel_work_sync(self.node.work.get()) };
    }

    /// The `work_func_t`.
    ///
    /// # Safety
    ///
    /// Called by the workqueue core for an item initialised in [`Work::new`].
    unsafe extern "C" fn func(w: *mut bindings::work_struct) {
        // SAFETY: `w` is the `work` field of a live `WorkNode<T>`: `Drop` waits for this
        // function before freeing the node.
        let node = unsafe {
            &*crate::container_of!(w.cast::<Opaque<bindings::work_struct>>(), WorkNode<T>, work)
        };
        node.data.run();
    }
}

impl<T: Run> Drop for Work<T> {
    fn drop(&mut self) {
        self.cancel_sync();
    }
}

// SAFETY: As for `Timer`.
unsafe impl<T: Run> Send for Work<T> {}
// SAFETY: As for `Timer`.
unsafe impl<T: Run> Sync for Work<T> {}

pub use crate::aikrs::kthread::msleep;

/// A workqueue of our own: per-CPU, high priority, with a rescuer
/// (`WQ_HIGHPRI | WQ_MEM_RECLAIM`). Destroyed (after draining) on drop.
///
/// # Invariants
///
/// `wq` was returned by `aikrs_wq_create` and is destroyed only on drop.
pub struct Workqueue {
    wq: core::ptr::NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues are internally synchronised.
unsafe impl Send for Workqueue {}
// SAFETY: See `Send`.
unsafe impl Sync for Workqueue {}

impl Workqueue {
    /// A new workqueue named `name`.
    pub fn new(name: &'static core::ffi::CStr) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated; the helper copies it.
        let p = unsafe { bindings::aikrs_wq_create(crate::aikrs::compat::c_str_ptr(name)) };
        let wq = core::ptr::NonNull::new(p).ok_or(crate::error::code::ENOMEM)?;
        // INVARIANT: Created just now.
        Ok(Self { wq })
    }

    /// The C workqueue, for C interfaces that queue to it (it outlives `self`'s borrow).
    pub fn as_raw(&self) -> *mut bindings::workqueue_struct {
        self.wq.as_ptr()
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        // SAFETY: Created by `aikrs_wq_create` (invariant) and destroyed once; users of
        // the raw pointer are gone by contract (see `Scheduler::new`).
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}
