// SPDX-License-Identifier: GPL-2.0

//! DMA fences (C `<linux/dma-fence.h>`): references to any fence, software fences that
//! their creator signals, and callbacks run when a fence signals.
//!
//! Neither Linux 6.12's nor 7.x's `kernel` crate wraps `struct dma_fence`. The C side is
//! `rust/aikrs_drm.c` (built in with `CONFIG_AIKRS_DRM_SCHED`): each software fence has
//! a lock and a fence context of its own, so no ordering against any other fence is
//! implied (drm_sched de-duplicates dependencies per context and assumes the fences of
//! one context signal in order, which a preemptible queue does not do).
//!
//! Callbacks ([`OnSignal`]) run under the signalled fence's lock: a callback must not
//! signal fences, create or drop [`Waiter`]s, or take a lock that is held elsewhere while
//! doing so; it should record what happened and defer the work (e.g. to a work item).

use crate::{
    aikrs::compat::ecanceled,
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{code::*, to_result, Error, Result},
    types::Opaque,
};
use core::{marker::PhantomPinned, pin::Pin, ptr::NonNull};

/// One reference to a `struct dma_fence` of any kind.
///
/// # Invariants
///
/// `self.0` points to a live fence on which this value owns one reference.
pub struct Fence(NonNull<bindings::dma_fence>);

// SAFETY: A fence reference may be used and dropped on any thread: the C side is
// internally locked and reference counted.
unsafe impl Send for Fence {}
// SAFETY: All methods taking `&self` are safe to call concurrently (see `Send`).
unsafe impl Sync for Fence {}

impl Fence {
    /// Takes over one reference to `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a live fence and the caller must own one reference to it, which
    /// passes to the returned value.
    pub unsafe fn from_raw(ptr: *mut bindings::dma_fence) -> Option<Self> {
        // INVARIANT: The caller gives us a reference to a live fence (if non-null).
        NonNull::new(ptr).map(Self)
    }

    /// Takes over one reference to `ptr`, which must not be null.
    ///
    /// # Safety
    ///
    /// As [`Fence::from_raw`], and `ptr` is not null.
    pub unsafe fn from_raw_nonnull(ptr: *mut bindings::dma_fence) -> Self {
        // SAFETY: Not null (caller's guarantee).
        // INVARIANT: The caller gives us a reference to a live fence.
        Self(unsafe { NonNull::new_unchecked(ptr) })
    }

    /// Gives up the reference without dropping it (for C functions that take it over).
    pub fn into_raw(self) -> *mut bindings::dma_fence {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }

    /// Takes a new reference to the fence at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a live fence (the caller holds a reference for the duration of
    /// the call).
    pub unsafe fn get_raw(ptr: *mut bindings::dma_fence) -> Option<Self> {
        let p = NonNull::new(ptr)?;
        // SAFETY: `p` is live (caller's guarantee); `dma_fence_get` takes a reference.
        unsafe { bindings::aikrs_fence_get(p.as_ptr()) };
        // INVARIANT: We just took the reference we own.
        Some(Self(p))
    }

    /// The C fence, for calls that take a `struct dma_fence *` without keeping it.
    pub fn as_raw(&self) -> *mut bindings::dma_fence {
        self.0.as_ptr()
    }

    /// Whether the fence has signalled (with or without an error).
    pub fn is_signaled(&self) -> bool {
        // SAFETY: The fence is live by the type invariant.
        unsafe { bindings::aikrs_fence_is_signaled(self.as_raw()) }
    }

    /// `None` while unsignalled; `Some(Ok(()))` once signalled without error, else
    /// `Some(Err(e))` with the fence's error.
    pub fn status(&self) -> Option<Result> {
        // SAFETY: The fence is live by the type invariant.
        let s = unsafe { bindings::aikrs_fence_status(self.as_raw()) };
        match s {
            0 => None,
            s if s > 0 => Some(Ok(())),
            s => Some(Err(Error::from_errno(s))),
        }
    }

    /// Waits (uninterruptibly) up to `timeout_ms` milliseconds for the fence to signal;
    /// returns whether it did. Sleeps: process context only.
    pub fn wait_ms(&self, timeout_ms: u32) -> bool {
        // SAFETY: Converting a duration is always safe.
        let jiffies = unsafe { bindings::__msecs_to_jiffies(timeout_ms) };
        // (A `u32` of milliseconds always fits in a `long` of jiffies.)
        let jiffies = jiffies.try_into().unwrap_or(i16::MAX.into());
        // SAFETY: The fence is live by the type invariant; waiting may sleep, which the
        // caller allows (documented).
        let r = unsafe { bindings::dma_fence_wait_timeout(self.as_raw(), false, jiffies) };
        r > 0
    }

    /// Waits up to `timeout_ms` milliseconds for the fence to signal, as
    /// [`Fence::wait_ms`], but a signal to the task ends the wait: for waits on behalf of
    /// user space (an ioctl), so that the task can be killed. Returns whether the fence
    /// signalled; `ERESTARTSYS` if a signal is pending (return it from the system call:
    /// user space sees `EINTR`, or the call is restarted). Sleeps: process context only.
    pub fn wait_ms_interruptible(&self, timeout_ms: u32) -> Result<bool> {
        // SAFETY: Converting a duration is always safe.
        let jiffies = unsafe { bindings::__msecs_to_jiffies(timeout_ms) };
        let jiffies = jiffies.try_into().unwrap_or(i16::MAX.into());
        // SAFETY: As in `wait_ms`; `intr` true: the wait ends early with `-ERESTARTSYS`
        // when a signal is pending.
        let r = unsafe { bindings::dma_fence_wait_timeout(self.as_raw(), true, jiffies) };
        match r {
            r if r > 0 => Ok(true),
            0 => Ok(false),
            // `-ERESTARTSYS`, or another error of a fence's own `wait` operation.
            r => Err(i32::try_from(r).map_or(EINVAL, Error::from_errno)),
        }
    }

    /// Returns once every callback run by the signal of this (signalled) fence has
    /// returned. Sleeps not, but spins on the fence lock: any context but the fence's own
    /// callbacks.
    pub fn sync_callbacks(&self) {
        // SAFETY: The fence is live by the type invariant.
        unsafe { bindings::aikrs_fence_sync_callbacks(self.as_raw()) };
    }

    /// Whether `self` and `other` are the same fence.
    pub fn same(&self, other: &Fence) -> bool {
        self.0 == other.0
    }
}

impl Clone for Fence {
    fn clone(&self) -> Self {
        // SAFETY: Our reference keeps the fence live; `dma_fence_get` takes another.
        unsafe { bindings::aikrs_fence_get(self.as_raw()) };
        // INVARIANT: The new value owns the reference just taken.
        Self(self.0)
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: We own one reference (type invariant) and give it back.
        unsafe { bindings::aikrs_fence_put(self.as_raw()) };
    }
}

/// A software fence and the sole right to signal it.
///
/// Dropping it unsignalled signals it with `-ECANCELED`, so no waiter waits forever.
pub struct Signaller {
    fence: Fence,
}

impl Signaller {
    /// A new unsignalled fence with a context of its own.
    pub fn new() -> Result<Self> {
        // SAFETY: Allocates and initialises a fence; no preconditions.
        let p = unsafe { bindings::aikrs_fence_create() };
        // SAFETY: A non-null result is a live fence with one reference, ours.
        let fence = unsafe { Fence::from_raw(p) }.ok_or(ENOMEM)?;
        Ok(Self { fence })
    }

    /// A reference to the fence, for waiters and dependencies.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Signals the fence: `Ok(())` completes it, `Err(e)` marks it failed with `e`.
    pub fn signal(self, result: Result) {
        self.signal_ref(result);
    }

    /// As [`Signaller::signal`] without consuming `self`: signalling is idempotent, only
    /// the first call counts.
    pub fn signal_ref(&self, result: Result) {
        let err = match result {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        };
        // SAFETY: The fence is ours and live; the helper checks the signalled bit under
        // the fence lock, so signalling twice is harmless.
        unsafe { bindings::aikrs_fence_signal(self.fence.as_raw(), err) };
    }

    /// Whether the fence was signalled.
    pub fn is_signaled(&self) -> bool {
        self.fence.is_signaled()
    }
}

impl Drop for Signaller {
    fn drop(&mut self) {
        self.signal_ref(Err(ecanceled()));
    }
}

/// What a [`Waiter`] runs when its fence signals.
pub trait OnSignal: Send + Sync {
    /// Called once, when the fence signals, with the fence's result. It runs under the
    /// fence's lock with interrupts disabled, possibly in hard interrupt context: it must
    /// not sleep, must not wait for fences, and may only take irq-safe locks.
    fn signalled(&self, result: Result);
}

/// The callback node of a [`Waiter`].
///
/// # Invariants
///
/// While registered, `cb` is on `fence`'s callback list with `Waiter::<T>::callback` as
/// its function.
#[repr(C)]
struct Node<T: OnSignal> {
    cb: Opaque<bindings::dma_fence_cb>,
    fence: Fence,
    data: T,
    _pin: PhantomPinned,
}

/// Runs `T::signalled` when a fence signals, until dropped.
///
/// Dropping the waiter removes the callback; if the callback is running at that moment on
/// another CPU, the drop waits for it (both take the fence lock), so `data` is never used
/// after the waiter is gone.
pub struct Waiter<T: OnSignal> {
    node: Pin<KBox<Node<T>>>,
}

// SAFETY: The node is only reached through `&self` (`T: Sync`) and by the fence core
// under the fence lock; the C callback structure may be unregistered from any thread.
unsafe impl<T: OnSignal> Send for Waiter<T> {}
// SAFETY: See `Send`.
unsafe impl<T: OnSignal> Sync for Waiter<T> {}

impl<T: OnSignal> Waiter<T> {
    /// Registers `data` to run when `fence` signals.
    ///
    /// Returns `Ok(Err((data, result)))` without registering if the fence has already
    /// signalled (the callback will not run: act on `result` yourself).
    pub fn new(fence: &Fence, data: T) -> Result<core::result::Result<Self, (T, Result)>> {
        let mut node = KBox::pin(
            Node {
                cb: Opaque::uninit(),
                fence: fence.clone(),
                data,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: We do not move out of the node; we only take the address of its `cb`.
        let cbp = unsafe { node.as_mut().get_unchecked_mut() }.cb.get();
        // SAFETY: `cbp` is valid, pinned and outlives the registration: `Drop` removes it
        // before the node is freed. The function matches `dma_fence_func_t`.
        let r =
            unsafe { bindings::dma_fence_add_callback(fence.as_raw(), cbp, Some(Self::callback)) };
        if r == 0 {
            // INVARIANT: Registered just now.
            return Ok(Ok(Self { node }));
        }
        // -ENOENT: already signalled. Anything else is not documented; report it as is.
        let result = match fence.status() {
            Some(res) => res,
            None => to_result(r),
        };
        // SAFETY: Not registered, so nothing refers to the node; moving `data` out of the
        // pinned box is fine because `Node` is only pinned for the sake of `cb`.
        let node = unsafe { Pin::into_inner_unchecked(node) };
        let Node { data, .. } = KBox::into_inner(node);
        Ok(Err((data, result)))
    }

    /// The data given to [`Waiter::new`].
    pub fn data(&self) -> &T {
        &self.node.data
    }

    /// The fence waited for.
    pub fn fence(&self) -> &Fence {
        &self.node.fence
    }

    /// The `dma_fence_func_t`.
    ///
    /// # Safety
    ///
    /// Called by the fence core with `cb` registered by [`Waiter::new`].
    unsafe extern "C" fn callback(
        fence: *mut bindings::dma_fence,
        cb: *mut bindings::dma_fence_cb,
    ) {
        // SAFETY: `cb` is the `cb` field of a live `Node<T>` (the registration's
        // invariant; `Drop` unregisters before freeing). `Opaque<T>` has `T`'s layout.
        let node = unsafe {
            &*crate::container_of!(cb.cast::<Opaque<bindings::dma_fence_cb>>(), Node<T>, cb)
        };
        // SAFETY: The fence is signalled and live while its callbacks run.
        let err = unsafe { (*fence).error };
        let result = if err < 0 {
            Err(Error::from_errno(err))
        } else {
            Ok(())
        };
        node.data.signalled(result);
    }
}

impl<T: OnSignal> Drop for Waiter<T> {
    fn drop(&mut self) {
        let fence = self.node.fence.as_raw();
        // SAFETY: We only take the address of the pinned `cb`.
        let cbp = unsafe { self.node.as_mut().get_unchecked_mut() }.cb.get();
        // SAFETY: `cbp` was registered on `fence` by `new`. Removal takes the fence lock,
        // which the signalling path holds while it runs callbacks, so after this call the
        // callback is neither registered nor running, and the node may be freed.
        unsafe { bindings::dma_fence_remove_callback(fence, cbp) };
    }
}
