// SPDX-License-Identifier: GPL-2.0

//! CPU hotplug: a callback for every registered instance once a CPU is dead (C
//! `<linux/cpuhotplug.h>`: `cpuhp_setup_state_multi`, `cpuhp_state_add_instance_nocalls`).
//!
//! Linux 6.12's `kernel` crate has no CPU hotplug abstraction. This one covers what a
//! per-CPU cache needs, the pattern of iova.c's `CPUHP_IOMMU_IOVA_DEAD` state: when a CPU
//! goes offline, every registered instance (one per cache) gets [`CpuDead::cpu_dead`] and
//! gives back what the dead CPU held.
//!
//! The state is a dynamic one of the PREPARE section (`CPUHP_BP_PREPARE_DYN`; iova.c's
//! fixed state is iova.c's own): its teardown runs on a control CPU after the CPU has
//! died, in process context, with the CPU hotplug lock held for writing. A module sets up
//! one [`DeadState`] at init, keeps it in its module struct and drops it at exit, after
//! every [`Instance`] is gone. The hotplug core keeps pointers into the module (the
//! state's name, the teardown's code) until the state is removed, so a state must never
//! outlive the module: hence [`DeadState::new`] is `unsafe`.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{Error, Result},
    types::Opaque,
};
use core::{
    ffi::{c_int, c_uint, CStr},
    marker::PhantomData,
    mem::ManuallyDrop,
    pin::Pin,
};

/// A CPU that has died, during the hotplug callback that says so: what
/// [`CpuDead::cpu_dead`] receives. Only this module makes one, and only for the length of
/// that callback, which runs on another CPU with the CPU hotplug lock held for writing: so
/// while it exists the CPU runs nothing and cannot come back, which
/// [`crate::aikrs::percpu::PerCpu::with_dead_cpu`] relies on.
pub struct DeadCpu {
    cpu: u32,
    /// Neither `Send` nor `Sync`: it stays with the callback's thread.
    _p: PhantomData<*mut ()>,
}

impl DeadCpu {
    /// The CPU's number.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }
}

/// What an instance does when a CPU is dead.
pub trait CpuDead: Send + Sync + 'static {
    /// `cpu` has gone offline and runs nothing any more.
    ///
    /// Called in process context on another CPU, with the CPU hotplug lock held for
    /// writing: it may sleep, but must not take `cpus_read_lock()` (nor call anything
    /// that does, such as [`crate::aikrs::percpu::PerCpu::run_on_each_cpu`]) and must not
    /// wait for work that does. It cannot fail.
    fn cpu_dead(&self, cpu: &DeadCpu);
}

/// The number of a [`DeadState`], to register instances with (`T`: the instances' type).
pub struct StateId<T: CpuDead> {
    id: c_int,
    _p: PhantomData<fn(&T)>,
}

impl<T: CpuDead> Clone for StateId<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: CpuDead> Copy for StateId<T> {}

impl<T: CpuDead> StateId<T> {
    /// The raw state number, e.g. to keep it in a static.
    pub fn raw(self) -> i32 {
        self.id
    }

    /// The id of raw state number `id`.
    ///
    /// # Safety
    ///
    /// `id` must be [`StateId::raw`] of the id of a [`DeadState<T>`] (the same `T`) that is
    /// still set up.
    pub unsafe fn from_raw(id: i32) -> Self {
        Self {
            id,
            _p: PhantomData,
        }
    }
}

/// A multi-instance CPU hotplug state whose teardown calls [`CpuDead::cpu_dead`] on every
/// registered instance when a CPU is dead. Removed when dropped (`cpuhp_remove_multi_state`),
/// which must not happen while instances are registered (the kernel warns).
///
/// # Invariants
///
/// `id` is a state set up by [`DeadState::new`], with this type's teardown, and not yet
/// removed; it is removed exactly once, in `drop`, before the code and data of the module
/// that made it go away (the contract of `new`).
pub struct DeadState<T: CpuDead> {
    id: StateId<T>,
}

/// A registered instance: `hnode` is what the hotplug core links; `target` what it is for.
#[repr(C)]
struct Node<T> {
    /// First field: the teardown receives a pointer to it and casts it to the node.
    hnode: Opaque<bindings::hlist_node>,
    target: *const T,
}

impl<T: CpuDead> DeadState<T> {
    /// Sets up a state named `name` (shown in `/sys/devices/system/cpu/hotplug/states`).
    /// Process context; instances are added with [`Instance::new`].
    ///
    /// # Safety
    ///
    /// The returned state must be dropped before the code and data of the calling module
    /// go away, e.g. by holding it in the module struct (dropped at module exit). The
    /// hotplug core keeps `name` (a `'static` of a module lives only as long as the
    /// module) and a pointer to the teardown, which is the module's code, until the drop:
    /// leaking the state (`mem::forget`, a reference cycle) and unloading the module would
    /// leave the core calling freed code and printing freed memory.
    pub unsafe fn new(name: &'static CStr) -> Result<Self> {
        type Multi = unsafe extern "C" fn(c_uint, *mut bindings::hlist_node) -> c_int;
        type Single = unsafe extern "C" fn(c_uint) -> c_int;
        let teardown: Multi = Self::teardown;
        // SAFETY: The C side stores single- and multi-instance callbacks in one union and,
        // for a multi-instance state (the last argument), calls the teardown as
        // `int (*)(unsigned int, struct hlist_node *)`, the type of `Self::teardown`
        // (`cpuhp_setup_state_multi` casts it so, too). Function pointers have one size.
        let teardown = unsafe { core::mem::transmute::<Multi, Single>(teardown) };
        // SAFETY: `name` is NUL-terminated and stays valid until the state is removed,
        // as does the teardown's code (the caller drops the state before its module goes);
        // no startup callback; `invoke` false: nothing runs now (there are no instances
        // yet).
        let ret = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_BP_PREPARE_DYN,
                crate::aikrs::compat::c_str_ptr(name),
                false,
                None,
                Some(teardown),
                true,
            )
        };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        // A dynamic state: the number returned is the state.
        // INVARIANT: set up above; removed in `drop`, which the caller runs before its
        // module goes.
        Ok(Self {
            id: StateId {
                id: ret,
                _p: PhantomData,
            },
        })
    }

    /// The state's id, for [`Instance::new`].
    pub fn id(&self) -> StateId<T> {
        self.id
    }

    /// The teardown of every registered instance.
    ///
    /// # Safety
    ///
    /// Called by the hotplug core with `node` the `hnode` of a registered [`Node<T>`].
    unsafe extern "C" fn teardown(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: `hnode` is the first field of the `repr(C)` node (an `Opaque` has its
        // value's layout), which stays registered, so allocated, until `Instance::drop`
        // has removed it, which waits for this callback. Only its `target` is read here.
        let target = unsafe { (*node.cast::<Node<T>>()).target };
        // The teardown of a PREPARE-section state: `cpu` is dead and the hotplug lock is
        // held for writing until this returns (see `DeadCpu`).
        let dead = DeadCpu {
            cpu,
            _p: PhantomData,
        };
        // SAFETY: `Instance::new` requires `target` to stay valid while registered.
        unsafe { (*target).cpu_dead(&dead) };
        0
    }
}

impl<T: CpuDead> Drop for DeadState<T> {
    fn drop(&mut self) {
        // SAFETY: Set up by `new` and not yet removed (type invariant); removed once.
        // `invoke` false: no callback runs.
        unsafe { bindings::__cpuhp_remove_state(self.id.id, false) };
    }
}

/// `target` registered with a [`DeadState`]: it gets [`CpuDead::cpu_dead`] for every CPU
/// that dies while this exists. Dropping it unregisters it (and waits for a callback in
/// progress).
pub struct Instance<T: CpuDead> {
    /// Freed by `drop` only once it is off the state's list.
    node: ManuallyDrop<Pin<KBox<Node<T>>>>,
    state: c_int,
}

// SAFETY: The node is only read by the hotplug core and the teardown, which calls
// `T::cpu_dead` on a `&T`; `T: Send + Sync`.
unsafe impl<T: CpuDead> Send for Instance<T> {}
// SAFETY: `&Instance` gives access to nothing.
unsafe impl<T: CpuDead> Sync for Instance<T> {}

impl<T: CpuDead> Instance<T> {
    /// Registers `target` with the state `id`. Process context (it takes the CPU hotplug
    /// lock for reading); no callback runs now.
    ///
    /// # Safety
    ///
    /// `target` must stay valid (neither moved nor freed) and must not be mutably
    /// borrowed until the instance is dropped (the teardown makes a `&T` of it at any
    /// time), and the [`DeadState`] of `id` must not be dropped before the instance.
    pub unsafe fn new(id: StateId<T>, target: *const T) -> Result<Self> {
        let node = KBox::pin(
            Node {
                hnode: Opaque::new(bindings::hlist_node {
                    next: core::ptr::null_mut(),
                    pprev: core::ptr::null_mut(),
                }),
                target,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: The state is set up (caller); the node is pinned on the heap until
        // `drop` removes it; `invoke` false: no teardown runs now.
        let ret = unsafe { bindings::__cpuhp_state_add_instance(id.id, node.hnode.get(), false) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(Self {
            node: ManuallyDrop::new(node),
            state: id.id,
        })
    }
}

impl<T: CpuDead> Drop for Instance<T> {
    fn drop(&mut self) {
        // SAFETY: Added in `new` (the state still exists: caller's contract). Removal
        // holds off CPU hotplug, so no teardown uses the node once this returns.
        let ret = unsafe {
            bindings::__cpuhp_state_remove_instance(self.state, self.node.hnode.get(), false)
        };
        if ret != 0 {
            // Not removed (only if the contract was broken: no such state): the node may
            // still be on a list, so it is leaked rather than freed.
            crate::pr_err!(
                "cpuhp: could not remove an instance ({}); leaking it\n",
                ret
            );
            return;
        }
        // SAFETY: Off the list (removal succeeded) and never used again.
        unsafe { ManuallyDrop::drop(&mut self.node) };
    }
}
