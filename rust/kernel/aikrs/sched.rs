// SPDX-License-Identifier: GPL-2.0

//! The DRM GPU scheduler (C `<drm/gpu_scheduler.h>`, `drivers/gpu/drm/scheduler/`).
//!
//! Neither Linux 6.12's nor 7.x's `kernel` crate wraps drm_sched. This is the part a
//! driver needs: a [`Scheduler`] per hardware ring whose callbacks are a [`Backend`],
//! [`Entity`]s (the queues jobs are pushed to, one priority each), and jobs
//! ([`NewJob`]) that are initialised, given dependencies, then armed and pushed in one
//! step ([`NewJob::push`]), so a job is never armed without being pushed.
//!
//! Ownership: a pushed job belongs to drm_sched, which hands it back through `free_job`
//! only (dropped there: `drm_sched_job_cleanup`, then the job's data). A job dropped
//! before it was pushed is cleaned up too.
//!
//! Timeouts are recovered as C drivers do (etnaviv, lima, v3d): `drm_sched_stop`, the
//! backend's reset of the job ([`Backend::timedout_job`]), `drm_sched_resubmit_jobs`,
//! `drm_sched_start`. The timeout handler never frees the job: drm_sched arms the
//! timeout before it calls `run_job`, and its submit worker still uses the job after
//! `run_job` returns (it adds its callback to the hardware fence, or completes the job);
//! `drm_sched_stop` waits for that worker. Resubmission calls `run_job` again for each
//! job still pending, which here hands drm_sched the same hardware fence again instead of
//! running the job twice: the hardware keeps the jobs the backend did not reset.
//!
//! The C side (`rust/aikrs_drm.c`) hides the 6.12/7.x differences in `drm_sched_init`'s
//! use, in `drm_sched_start`'s arguments and in the status `timedout_job` returns.

use crate::{
    aikrs::{
        compat::{c_str_ptr, ecanceled},
        fence::Fence,
        timer::Workqueue,
    },
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{code::*, to_result, Result},
    prelude::InPlaceInit,
    sync::SpinLock,
    types::Opaque,
};
use core::{
    ffi::CStr,
    marker::PhantomPinned,
    mem::ManuallyDrop,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicU8, Ordering},
};

/// drm_sched priorities (`enum drm_sched_priority`), highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Priority {
    /// `DRM_SCHED_PRIORITY_KERNEL`.
    Kernel = 0,
    /// `DRM_SCHED_PRIORITY_HIGH`.
    High = 1,
    /// `DRM_SCHED_PRIORITY_NORMAL`.
    Normal = 2,
    /// `DRM_SCHED_PRIORITY_LOW`.
    Low = 3,
}

/// The hardware side of a [`Scheduler`]: what drm_sched calls.
pub trait Backend: Send + Sync + Sized {
    /// The driver's part of each job (`Sync`: drm_sched calls `run_job`, `timedout_job`
    /// and `free_job` of one job on different workers).
    type JobData: Send + Sync;

    /// Hands `job` to the hardware; returns the fence the hardware signals when the job is
    /// done (or failed). Called from the scheduler's submit work item (process context).
    fn run_job(&self, job: &Job<Self>) -> Result<Fence>;

    /// `job` ran longer than the scheduler's timeout (or the driver reported a fault,
    /// [`Scheduler::fault`]). The backend must stop the job and signal its hardware fence
    /// with an error (e.g. `-ETIMEDOUT`) before it returns: the job's finished fence
    /// carries that error and drm_sched frees the job afterwards (`free_job`). A job whose
    /// fence has not signalled stays pending (and times out again).
    ///
    /// Called from drm_sched's timeout work (process context) while the scheduler's
    /// submission is stopped (`drm_sched_stop`): `run_job` of this job has returned and
    /// no `run_job` or `free_job` of this scheduler runs meanwhile, so this must not wait
    /// for either. Other jobs the hardware holds must be left running (their hardware
    /// fences are watched again afterwards). Also called for a job that completed just
    /// as it timed out: its fence has signalled already and its result stands.
    fn timedout_job(&self, job: &Job<Self>);
}

/// A job: drm_sched's `struct drm_sched_job` and the driver's data.
///
/// # Invariants
///
/// `base` was initialised by `drm_sched_job_init` on an entity of a `Scheduler<B>`.
/// `hw` is written once, by the first `run_job_cb` call before it sets `ran` (release),
/// and read only after `ran` was seen set (acquire).
#[repr(C)]
pub struct Job<B: Backend> {
    base: Opaque<bindings::drm_sched_job>,
    hw: core::cell::UnsafeCell<Option<Fence>>,
    /// [`RAN_NOT`], [`RAN_OK`] or [`RAN_ERR`].
    ran: AtomicU8,
    data: B::JobData,
    _pin: PhantomPinned,
}

/// `run_job` has not returned yet.
const RAN_NOT: u8 = 0;
/// `run_job` returned a hardware fence (in `hw`).
const RAN_OK: u8 = 1;
/// `run_job` returned an error.
const RAN_ERR: u8 = 2;

impl<B: Backend> Job<B> {
    /// The driver's data.
    pub fn data(&self) -> &B::JobData {
        &self.data
    }

    /// Frees a job drm_sched no longer refers to.
    ///
    /// # Safety
    ///
    /// `job` must come from `KBox::into_raw` in [`NewJob::push`] and drm_sched must be
    /// done with it (`free_job`).
    unsafe fn free(job: *mut Self) {
        // SAFETY: Initialised job that drm_sched has released (caller's guarantee).
        unsafe { bindings::drm_sched_job_cleanup((*job).base.get()) };
        // SAFETY: From `KBox::into_raw` (caller's guarantee).
        drop(unsafe { KBox::from_raw(job) });
    }

    /// The `Job` around a `drm_sched_job` of ours.
    ///
    /// # Safety
    ///
    /// `sj` must be the `base` of a live `Job<B>`.
    unsafe fn from_base<'a>(sj: *mut bindings::drm_sched_job) -> &'a Self {
        // SAFETY: Caller's guarantee; `base` is the first field of a `repr(C)` struct.
        unsafe { &*crate::container_of!(sj.cast::<Opaque<bindings::drm_sched_job>>(), Self, base) }
    }

    /// The `Job` pointer around a `drm_sched_job` of ours (for freeing it).
    fn ptr_of(sj: *mut bindings::drm_sched_job) -> *mut Self {
        sj.cast::<Self>()
    }

    /// The hardware fence, once `run_job` has returned one.
    fn hw_fence(&self) -> Option<&Fence> {
        if self.ran.load(Ordering::Acquire) != RAN_OK {
            return None;
        }
        // SAFETY: `hw` was written before `ran` was set (release, seen by our acquire)
        // and is never written again.
        unsafe { (*self.hw.get()).as_ref() }
    }
}

/// The node of a [`Scheduler`]: the C scheduler followed by the backend.
#[repr(C)]
struct SchedNode<B: Backend> {
    sched: Opaque<bindings::drm_gpu_scheduler>,
    backend: B,
    /// Set by [`Scheduler`]'s drop before it tears the scheduler down: from then on the
    /// timeout handler does not stop and restart submission (see `timedout_job_cb`).
    dying: AtomicBool,
    _pin: PhantomPinned,
}

/// A drm_sched scheduler (one hardware ring) with its [`Backend`].
///
/// # Invariants
///
/// `node.sched` was initialised by `drm_sched_init` with `Self::OPS`; it is torn down
/// (`drm_sched_fini`) on drop.
pub struct Scheduler<B: Backend> {
    node: Pin<KBox<SchedNode<B>>>,
}

// SAFETY: drm_sched is internally locked; the backend is `Send + Sync`.
unsafe impl<B: Backend> Send for Scheduler<B> {}
// SAFETY: See `Send`.
unsafe impl<B: Backend> Sync for Scheduler<B> {}

impl<B: Backend> Scheduler<B> {
    const OPS: bindings::drm_sched_backend_ops = bindings::drm_sched_backend_ops {
        prepare_job: None,
        run_job: Some(Self::run_job_cb),
        timedout_job: Some(Self::timedout_job_cb),
        free_job: Some(Self::free_job_cb),
        // SAFETY: All-zero is a valid `drm_sched_backend_ops` (every member is an optional
        // function pointer); it leaves the 7.x-only members unset.
        ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
    };

    /// A scheduler named `name` that lets `credit_limit` jobs (one credit each) into the
    /// hardware at once; a job running longer than `timeout_ms` (0: no limit) is reported
    /// to [`Backend::timedout_job`]. Its submission work runs on `wq` (`None`: an
    /// ordered workqueue of its own).
    ///
    /// # Safety
    ///
    /// `wq`, if given, must outlive the scheduler.
    pub unsafe fn new(
        backend: B,
        wq: Option<&Workqueue>,
        credit_limit: u32,
        timeout_ms: u32,
        name: &'static CStr,
    ) -> Result<Self> {
        if credit_limit == 0 {
            return Err(EINVAL);
        }
        let mut node = KBox::pin(
            SchedNode {
                sched: Opaque::uninit(),
                backend,
                dying: AtomicBool::new(false),
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: We only take the address of the pinned field.
        let s = unsafe { node.as_mut().get_unchecked_mut() }.sched.get();
        // SAFETY: `s` is valid for writes; drm_sched expects a zeroed structure.
        unsafe { core::ptr::write_bytes(s, 0, 1) };
        let wq = wq.map_or(core::ptr::null_mut(), |w| w.as_raw());
        // SAFETY: `s` is zeroed, pinned and lives until `drop` calls `drm_sched_fini`;
        // `OPS` and `name` are static; `wq` outlives the scheduler (caller's guarantee).
        to_result(unsafe {
            bindings::aikrs_sched_init(s, &Self::OPS, wq, credit_limit, timeout_ms, c_str_ptr(name))
        })?;
        // INVARIANT: Initialised with `Self::OPS` just now.
        Ok(Self { node })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.node.backend
    }

    fn raw(&self) -> *mut bindings::drm_gpu_scheduler {
        self.node.sched.get()
    }

    /// Runs the timeout handling now (`drm_sched_fault`), as a driver does when its
    /// hardware reports a fault: the oldest job in the hardware, if any, goes to
    /// [`Backend::timedout_job`] whatever its run time. Any context.
    pub fn fault(&self) {
        // SAFETY: Initialised (invariant); only queues the scheduler's timeout work,
        // which `drm_sched_fini` cancels and waits for.
        unsafe { bindings::drm_sched_fault(self.raw()) };
    }

    /// The backend of a scheduler of ours.
    ///
    /// # Safety
    ///
    /// `s` must be the `sched` of a live `SchedNode<B>`.
    unsafe fn backend_of<'a>(s: *mut bindings::drm_gpu_scheduler) -> &'a B {
        // SAFETY: Caller's guarantee.
        &unsafe { Self::node_of(s) }.backend
    }

    /// The node of a scheduler of ours.
    ///
    /// # Safety
    ///
    /// `s` must be the `sched` of a live `SchedNode<B>`.
    unsafe fn node_of<'a>(s: *mut bindings::drm_gpu_scheduler) -> &'a SchedNode<B> {
        // SAFETY: Caller's guarantee: `s` points to the `sched` field of a live node.
        unsafe {
            &*crate::container_of!(
                s.cast::<Opaque<bindings::drm_gpu_scheduler>>(),
                SchedNode<B>,
                sched
            )
        }
    }

    /// drm_sched's `run_job`.
    ///
    /// # Safety
    ///
    /// Called by drm_sched with a job of ours, pushed to an entity of a `Scheduler<B>`.
    unsafe extern "C" fn run_job_cb(sj: *mut bindings::drm_sched_job) -> *mut bindings::dma_fence {
        // SAFETY: drm_sched only calls us with jobs pushed to entities of a
        // `Scheduler<B>`, i.e. `base`s of live `Job<B>`s.
        let job = unsafe { Job::<B>::from_base(sj) };
        match job.ran.load(Ordering::Acquire) {
            RAN_NOT => {}
            // Called again: `drm_sched_resubmit_jobs` in `timedout_job_cb` (nothing else
            // calls it), with submission stopped, so after the first call returned, for a
            // job that is still pending. The hardware still has the job or has signalled
            // its fence: hand drm_sched a new reference to that fence rather than run the
            // job twice.
            RAN_OK => {
                return match job.hw_fence() {
                    Some(hw) => hw.clone().into_raw(),
                    None => ecanceled().to_ptr(),
                };
            }
            _ => return ecanceled().to_ptr(),
        }
        // SAFETY: `sched` is set by `drm_sched_job_arm` to a scheduler of ours.
        let backend = unsafe { Self::backend_of((*sj).sched) };
        match backend.run_job(job) {
            Ok(hw) => {
                let raw = hw.clone();
                // SAFETY: Only this first call writes `hw`, once, before publishing `ran`
                // (a later call comes after this one returned and returns above); nobody
                // reads it before seeing `ran` set (type invariant).
                unsafe { *job.hw.get() = Some(hw) };
                job.ran.store(RAN_OK, Ordering::Release);
                // drm_sched takes over the returned reference.
                raw.into_raw()
            }
            Err(e) => {
                job.ran.store(RAN_ERR, Ordering::Release);
                e.to_ptr()
            }
        }
    }

    /// drm_sched's `timedout_job`: stop, reset the job, resubmit, restart.
    ///
    /// drm_sched has taken the job off its pending list, but its submit worker may still
    /// be in `run_job_cb` for it, or past it and about to add its callback to the hardware
    /// fence (`dma_fence_add_callback(fence, &job->cb, ...)`) or to complete the job: it
    /// arms the timeout before it calls `run_job`. So the job is not freed here:
    /// `drm_sched_stop` waits for the submit and free work items, puts the job back on
    /// the pending list (head) and takes drm_sched's callbacks off the unsignalled
    /// hardware fences; resubmission and `drm_sched_start` attach them again (a job whose
    /// fence signalled meanwhile completes with the fence's error), and `free_job` frees
    /// the job once its finished fence has signalled. A job that had already finished is
    /// freed by drm_sched right after we return (its `free_guilty`), through `free_job`
    /// too.
    ///
    /// # Safety
    ///
    /// As for `run_job_cb`; called by drm_sched's timeout work (never twice at once for
    /// one scheduler) with a job it has taken off its pending list.
    unsafe extern "C" fn timedout_job_cb(
        sj: *mut bindings::drm_sched_job,
    ) -> bindings::drm_gpu_sched_stat {
        // SAFETY: `sj` is live: drm_sched took it off its pending list for us, and only
        // `free_job` frees it, after `drm_sched_stop` put it back and submission restarted
        // (or after we return). `sched` is set by `drm_sched_job_arm` to a scheduler of
        // ours.
        let sched = unsafe { (*sj).sched };
        // SAFETY: As in `run_job_cb`.
        let node = unsafe { Self::node_of(sched) };
        if node.dying.load(Ordering::Acquire) {
            // The scheduler is being torn down: restarting submission now would queue
            // the submit work again behind `drm_sched_fini`'s stop, onto run queues it
            // frees. Put the job back where `drm_sched_stop` would and do not re-arm.
            // SAFETY: `sj` is the job drm_sched just took off its pending list for us.
            return unsafe { bindings::aikrs_sched_timedout_dying(sj) };
        }
        let backend = &node.backend;
        // SAFETY: `sched` is initialised and this is its timeout handler. `sj` is the job
        // drm_sched just handed us (`bad`): `drm_sched_stop` re-inserts it or, if it has
        // finished, leaves it to drm_sched to free after we return; it frees only other
        // finished jobs, through `free_job`.
        unsafe { bindings::drm_sched_stop(sched, sj) };
        {
            // SAFETY: As in `run_job_cb`; the job is live (see above) and, with the
            // submit and free work stopped, nobody can free it until `aikrs_sched_start`.
            let job = unsafe { Job::<B>::from_base(sj) };
            // `run_job` has returned (`drm_sched_stop` waited for the submit work).
            // Without a hardware fence (`run_job` failed) the job already finished with
            // that error and never reached the hardware: nothing to reset.
            if let Some(hw) = job.hw_fence() {
                backend.timedout_job(job);
                if !hw.is_signaled() {
                    crate::pr_warn!("aikrs sched: timed-out job left unsignalled by its backend\n");
                }
            }
        }
        // SAFETY: Submission is stopped (`drm_sched_stop` above), as resubmission needs.
        // It calls `run_job_cb` for every pending job (all have run), which returns each
        // job's hardware fence again.
        unsafe { bindings::drm_sched_resubmit_jobs(sched) };
        // SAFETY: Stopped by us above; restarts submission. From here on drm_sched may
        // free the job at any time: neither `sj` nor `job` is used again.
        unsafe { bindings::aikrs_sched_start(sched) };
        // SAFETY: Reads a constant.
        unsafe { bindings::aikrs_sched_stat_reset }
    }

    /// drm_sched's `free_job`.
    ///
    /// # Safety
    ///
    /// As for `run_job_cb`; drm_sched is done with the job.
    unsafe extern "C" fn free_job_cb(sj: *mut bindings::drm_sched_job) {
        // SAFETY: drm_sched hands the job back for good (`free_job`).
        unsafe { Job::free(Job::<B>::ptr_of(sj)) };
    }
}

impl<B: Backend> Drop for Scheduler<B> {
    fn drop(&mut self) {
        // A timeout handler that saw `dying` clear may restart submission
        // (`aikrs_sched_start`); the cancel waits for it (and drops the re-arms it makes
        // meanwhile) before `drm_sched_fini` stops submission for good. A handler that
        // runs after the cancel returned (a timeout armed again by the submit or free
        // work) sees `dying` set and leaves submission alone.
        //
        // Jobs still pending here are not freed (no `cancel_job`): their owner must have
        // finished them first, as the gang driver's model GPU does by signalling every
        // hardware fence before it drops its schedulers.
        self.node.dying.store(true, Ordering::Release);
        // SAFETY: Initialised (invariant).
        unsafe { bindings::aikrs_sched_cancel_timeout(self.raw()) };
        // SAFETY: Initialised (invariant); the owner has destroyed the entities first
        // (`Entity::new`'s contract).
        unsafe { bindings::drm_sched_fini(self.raw()) };
    }
}

/// A drm_sched entity: a queue of jobs of one priority feeding one [`Scheduler<B>`].
///
/// Jobs are armed and pushed under `lock`, as drm_sched requires (their finished fences
/// must be armed in push order).
///
/// # Invariants
///
/// `entity` was initialised by `drm_sched_entity_init` on `Scheduler<B>`'s scheduler and
/// is destroyed on drop.
pub struct Entity<B: Backend> {
    entity: Pin<KBox<Opaque<bindings::drm_sched_entity>>>,
    lock: Pin<KBox<SpinLock<()>>>,
    _b: core::marker::PhantomData<B>,
}

// SAFETY: drm_sched entities are internally locked.
unsafe impl<B: Backend> Send for Entity<B> {}
// SAFETY: See `Send`.
unsafe impl<B: Backend> Sync for Entity<B> {}

impl<B: Backend> Entity<B> {
    /// A new entity of priority `prio` on `sched`.
    ///
    /// # Safety
    ///
    /// The entity must be dropped before `sched`.
    pub unsafe fn new(sched: &Scheduler<B>, prio: Priority) -> Result<Self> {
        let entity = KBox::pin(Opaque::uninit(), GFP_KERNEL)?;
        let e = entity.get();
        // SAFETY: `e` is valid for writes; drm_sched expects a zeroed entity.
        unsafe { core::ptr::write_bytes(e, 0, 1) };
        let mut list = [sched.raw()];
        // SAFETY: `e` is zeroed and pinned; with one scheduler drm_sched does not keep
        // `list`; the scheduler outlives the entity (caller's guarantee).
        to_result(unsafe {
            bindings::drm_sched_entity_init(
                e,
                prio as bindings::drm_sched_priority,
                list.as_mut_ptr(),
                1,
                core::ptr::null_mut(),
            )
        })?;
        let lock = KBox::pin_init(crate::new_spinlock!((), "aikrs_sched_entity"), GFP_KERNEL)?;
        // INVARIANT: Initialised just now.
        Ok(Self {
            entity,
            lock,
            _b: core::marker::PhantomData,
        })
    }

    /// `drm_sched_entity_error`: the error of the entity's last job, if it failed.
    pub fn error(&self) -> Result {
        // SAFETY: The entity is initialised (invariant).
        to_result(unsafe { bindings::drm_sched_entity_error(self.entity.get()) })
    }
}

impl<B: Backend> Drop for Entity<B> {
    fn drop(&mut self) {
        // SAFETY: Initialised (invariant), scheduler still alive (`new`'s contract).
        // Flushes the queue (waiting for queued jobs to be run, up to a timeout) and kills
        // what is left.
        unsafe { bindings::drm_sched_entity_destroy(self.entity.get()) };
    }
}

/// A job initialised on an entity but not yet pushed.
///
/// # Invariants
///
/// `job` holds a `drm_sched_job` initialised by `drm_sched_job_init` and not armed.
pub struct NewJob<B: Backend> {
    job: Pin<KBox<Job<B>>>,
}

// SAFETY: Until it is pushed the job is only reached through this owner; the C structure
// may be handed to and cleaned up on any thread, and `B::JobData: Send`.
unsafe impl<B: Backend> Send for NewJob<B> {}

impl<B: Backend> NewJob<B> {
    /// A job for `entity` carrying `data`, one credit. Process context (allocates).
    pub fn new(entity: &Entity<B>, data: B::JobData, client: u64) -> Result<Self> {
        let mut job = KBox::pin(
            Job {
                base: Opaque::uninit(),
                hw: core::cell::UnsafeCell::new(None),
                ran: AtomicU8::new(RAN_NOT),
                data,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: We only take the address of the pinned field.
        let b = unsafe { job.as_mut().get_unchecked_mut() }.base.get();
        // SAFETY: `b` is valid for writes; drm_sched expects a zeroed job.
        unsafe { core::ptr::write_bytes(b, 0, 1) };
        // SAFETY: `b` is zeroed and pinned; the entity is initialised.
        to_result(unsafe {
            bindings::drm_sched_job_init(b, entity.entity.get(), 1, core::ptr::null_mut(), client)
        })?;
        // INVARIANT: Initialised, not armed.
        Ok(Self { job })
    }

    fn base(&self) -> *mut bindings::drm_sched_job {
        self.job.base.get()
    }

    /// The driver's data.
    pub fn data(&self) -> &B::JobData {
        &self.job.data
    }

    /// Makes the job wait for `fence` before it runs (`drm_sched_job_add_dependency`).
    pub fn add_dependency(&mut self, fence: &Fence) -> Result {
        let f = fence.clone();
        // SAFETY: The job is initialised and not armed (invariant); the function takes
        // over the reference we pass, on success and on failure.
        to_result(unsafe { bindings::drm_sched_job_add_dependency(self.base(), f.into_raw()) })
    }

    /// Arms the job and pushes it to `entity`, the one it was created on (else
    /// `EINVAL`); returns its finished fence. From here on the job belongs to drm_sched.
    pub fn push(self, entity: &Entity<B>) -> Result<Fence> {
        // SAFETY: The job is initialised (invariant); reads the entity it was set up on.
        if unsafe { bindings::aikrs_sched_job_entity(self.base()) } != entity.entity.get() {
            return Err(EINVAL);
        }
        let _guard = entity.lock.lock();
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the box is moved out once.
        let job = unsafe { core::ptr::read(&this.job) };
        // SAFETY: drm_sched keeps a pointer to the job until `free_job`, which rebuilds
        // the box (`Job::free`); the job is pinned and never moved.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(job) });
        // SAFETY: `raw` is our initialised, unarmed job.
        let b = unsafe { (*raw).base.get() };
        // SAFETY: Initialised and not armed: arm it.
        unsafe { bindings::drm_sched_job_arm(b) };
        // SAFETY: Armed: the finished fence is initialised and the helper returns a new,
        // non-null reference.
        let finished = unsafe { Fence::from_raw_nonnull(bindings::aikrs_sched_job_finished(b)) };
        // SAFETY: Armed and not yet pushed: push (no failure point in between), under the
        // entity's lock like the arm.
        unsafe { bindings::drm_sched_entity_push_job(b) };
        Ok(finished)
    }
}

impl<B: Backend> Drop for NewJob<B> {
    fn drop(&mut self) {
        // SAFETY: Initialised and never armed (`push` does not drop `self`):
        // `drm_sched_job_cleanup` frees its scheduler fence and dependencies. Nothing else
        // refers to the job; the box itself is freed after this.
        unsafe { bindings::drm_sched_job_cleanup(self.base()) };
    }
}
