// SPDX-License-Identifier: GPL-2.0

//! The gang-aware scheduling layer over drm_sched ([`GangSched`]), and plain drm_sched
//! entities on the same model GPU for comparison ([`PlainCtx`]).
//!
//! [`GangSched`] owns one drm_sched entity per ring and priority class and decides with
//! the `core`-only policy (`core/src/policy.rs`) when each job is pushed to its entity:
//! a job is initialised at submission (`drm_sched_job_init`) but armed and pushed only
//! when the policy releases it, so a gang's members reach drm_sched together, once every
//! member's dependencies are met and every member's ring is idle, and nothing else is
//! pushed onto those rings until they started. Each job gets a fence of its own at
//! submission (the user's handle for dependencies), signalled when drm_sched's finished
//! fence signals or with an error when the job fails or is cancelled.
//!
//! Locking and contexts:
//! - `state` (spinlock, irq-safe) holds the policy and the per-job records. Fence
//!   callbacks only record what happened under it and queue the work item: they run
//!   under fence locks, where nothing may be signalled, pushed or unregistered.
//! - `process` (the work item, or the submitting thread) runs under the `push` mutex:
//!   it feeds the recorded events to the policy, takes the resulting actions out of the
//!   records under `state`, and performs them after dropping it (push to drm_sched,
//!   signal fences, drop fence callbacks, cancel engine jobs), in process context.
//!   Nothing that owns a fence or a fence callback (a record's `Signaller`, `Waiter`s,
//!   unpushed job, `JobInfo`) is dropped under `state`: dropping one takes a fence
//!   lock, which the callbacks hold when they take `state`.

use crate::model::{GangTiming, JobInfo, ModelGpu, RingBackend, SchedJob, HANG};
use crate::policy::{self, Class, Event, JobId, Policy, Slot, Spec, MAX_BATCH};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::aikrs::{
    compat::{clear_copy, ecanceled},
    cpu::{cond_resched, ktime_ns, with_irqsave},
    fence::{Fence, OnSignal, Signaller, Waiter},
    sched::{Entity, NewJob, Priority},
    timer::{msleep, Run, Work},
    trace,
};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock};

/// How long [`GangSched::shutdown`] waits for the jobs in flight to end.
const SHUTDOWN_WAIT_NS: i64 = 5_000_000_000;

/// The engine priority and drm_sched priority of a class.
fn class_prio(c: Class) -> (u8, Priority) {
    match c {
        Class::Kernel => (3, Priority::Kernel),
        Class::Latency => (2, Priority::High),
        Class::Normal => (1, Priority::Normal),
        Class::Bulk => (0, Priority::Low),
    }
}

/// The index in `Inner::entities` of the entity for `class` on `ring`.
fn entity_index(ring: u32, class: Class) -> usize {
    ring as usize * Class::COUNT + class as usize
}

/// One job of a submission.
pub(crate) struct JobSpec<'a> {
    pub(crate) ring: u32,
    pub(crate) class: Class,
    /// Run time on the model engine in microseconds.
    pub(crate) run_us: u32,
    /// Never completes (for timeout tests).
    pub(crate) hang: bool,
    /// Gang label within the submission.
    pub(crate) gang: Option<u8>,
    /// Bit `i`: runs after job `i` of the same submission finished successfully.
    pub(crate) after: u64,
    /// Fences to wait for (any `dma_fence`, e.g. an earlier job's [`Submitted::done`]).
    pub(crate) deps: &'a [Fence],
}

/// A submitted job, as the submitter sees it.
pub(crate) struct Submitted {
    /// Signals when the job finished, with an error if it failed or was cancelled.
    pub(crate) done: Fence,
    pub(crate) info: Arc<JobInfo>,
}

/// What happened to a job's fences since `process` last looked.
#[derive(Default)]
struct Pending {
    ext_ok: u32,
    ext_failed: u32,
    /// The job's finished fence signalled: `Some(ok)`.
    finished: Option<bool>,
}

/// The per-slot record of a job.
#[derive(Default)]
struct Rec {
    gen: u32,
    job: Option<NewJob<RingBackend>>,
    done: Option<Signaller>,
    info: Option<Arc<JobInfo>>,
    deps: KVec<Waiter<DepCb>>,
    fin: Option<Waiter<FinCb>>,
    pending: Pending,
    /// On the dirty list.
    dirty: bool,
    /// Its gang failed after it was released: its fence fails whatever the engine says.
    cancelled: bool,
    /// Index of the job's entity in `Inner::entities`.
    entity: usize,
}

/// The policy's storage.
struct Slots(KVec<Slot>);

impl AsRef<[Slot]> for Slots {
    fn as_ref(&self) -> &[Slot] {
        &self.0
    }
}

impl AsMut<[Slot]> for Slots {
    fn as_mut(&mut self) -> &mut [Slot] {
        &mut self.0
    }
}

struct State {
    policy: Policy<Slots>,
    recs: KVec<Rec>,
    /// Slots whose `pending` changed (capacity: one per slot, never grows).
    dirty: KVec<u32>,
    /// The policy's events of one step (capacity reserved, never grows).
    events: KVec<Event>,
    /// No new submissions; everything left is being failed.
    dead: bool,
    /// Teardown is done: fence callbacks no longer note anything.
    closed: bool,
}

/// Counters of a [`GangSched`].
#[derive(Default)]
pub(crate) struct GangCounters {
    pub(crate) submitted: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) gang_members_released: AtomicU64,
    /// Sum over released gang members of (release - ready): the time members waited at
    /// the gang barrier for the rest of the gang and for their rings.
    pub(crate) barrier_wait_ns: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

/// An action decided under the state lock, performed after it.
enum Act {
    Push(u32, u32, usize, NewJob<RingBackend>, Arc<JobInfo>),
    /// Signal a job's fence, drop what its record held.
    Finish(Finish),
    Cancel(Arc<JobInfo>),
}

/// What a finished job's record held, taken out under the state lock (see
/// [`Inner::finish_rec`]) and dropped after it.
struct Finish {
    done: Option<Signaller>,
    result: Result,
    deps: KVec<Waiter<DepCb>>,
    fin: Option<Waiter<FinCb>>,
    job: Option<NewJob<RingBackend>>,
    info: Option<Arc<JobInfo>>,
}

/// The actions of one pass of [`Inner::process`], decided under the state lock and
/// performed after it. Made once with room for the worst case (a slot yields at most two
/// actions in one pass: a cancel, then its finish), so a pass never allocates and never
/// fails; it lives in the `push` mutex, which serialises the passes.
struct ActBuf {
    slots: KVVec<Option<Act>>,
    len: usize,
}

impl ActBuf {
    fn new(slots: usize) -> Result<Self> {
        let cap = 2 * slots + 2;
        let mut v = KVVec::with_capacity(cap, GFP_KERNEL)?;
        for _ in 0..cap {
            v.push(None, GFP_KERNEL)?;
        }
        Ok(Self { slots: v, len: 0 })
    }

    /// Under the state lock: never allocates. Past the capacity (which the bound above
    /// rules out) the action would be dropped here, under the lock.
    fn push(&mut self, a: Act) {
        if let Some(s) = self.slots.get_mut(self.len) {
            *s = Some(a);
            self.len += 1;
        }
    }

    /// Takes the actions out in order, emptying the buffer.
    fn take(&mut self, i: usize) -> Option<Act> {
        self.slots.get_mut(i).and_then(Option::take)
    }
}

/// The work item's data: the `Inner` it belongs to.
struct Kick(AtomicPtr<Inner>);

impl Run for Kick {
    fn run(&self) {
        let p = self.0.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: `p` points to the `Inner` that owns this work item (set once it is
            // in its `Arc`); `Inner`'s first field is the work item, whose drop waits
            // for this function, so `Inner` is alive while we run.
            unsafe { &*p }.process();
        }
    }
}

struct Inner {
    // Declared first: dropped (cancelled, waited for) before anything it uses.
    work: Work<Kick>,
    /// `entities[ring * 4 + class]`.
    entities: KVec<Entity<RingBackend>>,
    state: Pin<KBox<SpinLock<State>>>,
    /// Serialises [`Inner::process`] passes; holds their action buffer.
    push: Pin<KBox<Mutex<ActBuf>>>,
    counters: GangCounters,
    // Declared last: the entities are destroyed before the GPU may go.
    gpu: Arc<ModelGpu>,
}

/// Records a dependency of a job that signalled.
struct DepCb {
    inner: Arc<Inner>,
    slot: u32,
    gen: u32,
}

/// Records that a released job's drm_sched finished fence signalled.
struct FinCb {
    inner: Arc<Inner>,
    slot: u32,
    gen: u32,
}

impl OnSignal for DepCb {
    fn signalled(&self, result: Result) {
        self.inner.note(self.slot, self.gen, |p| {
            if result.is_ok() {
                p.ext_ok += 1;
            } else {
                p.ext_failed += 1;
            }
        });
    }
}

impl OnSignal for FinCb {
    fn signalled(&self, result: Result) {
        self.inner
            .note(self.slot, self.gen, |p| p.finished = Some(result.is_ok()));
    }
}

fn policy_err(e: policy::Error) -> Error {
    match e {
        policy::Error::NoSpace => ENOSPC,
        _ => EINVAL,
    }
}

impl Inner {
    /// Records an event of job `slot` (if it is still generation `gen`) and queues the
    /// work item. Any context; called under fence locks.
    fn note(&self, slot: u32, gen: u32, f: impl FnOnce(&mut Pending)) {
        let now = ktime_ns();
        let queue = with_irqsave(&self.state, |st| {
            if st.closed {
                return false;
            }
            let Some(r) = st.recs.get_mut(slot as usize) else {
                return false;
            };
            if r.gen != gen {
                return false;
            }
            f(&mut r.pending);
            if let Some(i) = &r.info {
                i.ready_ns.fetch_max(now, Ordering::Relaxed);
            }
            if !r.dirty {
                r.dirty = true;
                // Capacity is one entry per slot and a slot is on the list at most once.
                let _ = st.dirty.push(slot, GFP_ATOMIC);
            }
            true
        });
        if queue {
            self.work.queue();
        }
    }

    /// Moves what the policy decided into actions; under the state lock.
    fn collect(
        recs: &mut KVec<Rec>,
        events: &mut KVec<Event>,
        acts: &mut ActBuf,
        counters: &GangCounters,
    ) {
        let n = events.len();
        for i in 0..n {
            let Some(&ev) = events.get(i) else { break };
            let res = match ev {
                Event::Release(id) => {
                    let Some(r) = recs.get_mut(id as usize) else {
                        continue;
                    };
                    // (Both are set together; no job is dropped under the lock.)
                    let Some(info) = r.info.clone() else { continue };
                    let Some(job) = r.job.take() else { continue };
                    Act::Push(id, r.gen, r.entity, job, info)
                }
                Event::Fail(id) => {
                    let Some(r) = recs.get_mut(id as usize) else {
                        continue;
                    };
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    Self::finish_rec(r, Err(ecanceled()))
                }
                Event::Cancel(id) => {
                    let Some(r) = recs.get_mut(id as usize) else {
                        continue;
                    };
                    r.cancelled = true;
                    counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    let Some(info) = r.info.clone() else { continue };
                    Act::Cancel(info)
                }
            };
            // `acts` has room for every slot's actions (see `ActBuf`).
            acts.push(res);
        }
        clear_copy(events);
    }

    /// Forgets a record's job (its slot is free in the policy) and returns the action
    /// that finishes it with `result`. Under the state lock, so nothing is dropped here:
    /// everything the record owned that refers to a fence (its fence, callbacks,
    /// unpushed drm_sched job and `JobInfo`, whose last reference owns the hardware
    /// fence) moves into the action and goes after the lock. Dropping the last
    /// `JobInfo` here took a fence lock under `state`, the reverse of the order the
    /// fence callbacks take them in (fence lock, then `state`): lockdep reported the
    /// cycle.
    fn finish_rec(r: &mut Rec, result: Result) -> Act {
        r.gen = r.gen.wrapping_add(1);
        r.pending = Pending::default();
        r.cancelled = false;
        Act::Finish(Finish {
            done: r.done.take(),
            result,
            deps: core::mem::take(&mut r.deps),
            fin: r.fin.take(),
            job: r.job.take(),
            info: r.info.take(),
        })
    }

    /// Feeds recorded fence events to the policy, releases what may go, and performs the
    /// actions. Process context; serialised by `push`.
    fn process(&self) {
        let mut acts = self.push.lock();
        loop {
            if with_irqsave(&self.state, |st| st.closed) {
                return;
            }
            let counters = &self.counters;
            with_irqsave(&self.state, |st| {
                let State {
                    policy,
                    recs,
                    dirty,
                    events,
                    dead,
                    ..
                } = st;
                // Capacity for every event of a call is reserved (one per slot).
                fn emit(events: &mut KVec<Event>) -> impl FnMut(Event) + '_ {
                    |e| {
                        let _ = events.push(e, GFP_ATOMIC);
                    }
                }
                // Events are turned into actions right after the call that emitted them,
                // in order: a later call may free and reuse a slot an event names.
                for &slot in dirty.iter() {
                    let Some(r) = recs.get_mut(slot as usize) else {
                        continue;
                    };
                    r.dirty = false;
                    let p = core::mem::take(&mut r.pending);
                    for _ in 0..p.ext_ok {
                        policy.ext_done(slot, true, &mut emit(events));
                        Self::collect(recs, events, &mut acts, counters);
                    }
                    for _ in 0..p.ext_failed {
                        policy.ext_done(slot, false, &mut emit(events));
                        Self::collect(recs, events, &mut acts, counters);
                    }
                    let Some(ok) = p.finished else { continue };
                    let Some(r) = recs.get_mut(slot as usize) else {
                        continue;
                    };
                    let ok = ok && !r.cancelled;
                    if policy.finished(slot, ok, &mut emit(events)) {
                        if let Some(r) = recs.get_mut(slot as usize) {
                            let act =
                                Self::finish_rec(r, if ok { Ok(()) } else { Err(ecanceled()) });
                            acts.push(act);
                        }
                    }
                    Self::collect(recs, events, &mut acts, counters);
                }
                clear_copy(dirty);
                if !*dead {
                    policy.poll(&mut emit(events));
                }
                Self::collect(recs, events, &mut acts, counters);
            });
            if acts.len == 0 {
                return;
            }
            for i in 0..acts.len {
                if let Some(a) = acts.take(i) {
                    self.act(a);
                }
            }
            acts.len = 0;
        }
    }

    fn act(&self, act: Act) {
        match act {
            Act::Push(slot, gen, entity, job, info) => {
                let now = ktime_ns();
                info.release_ns.store(now, Ordering::Relaxed);
                self.counters.released.fetch_add(1, Ordering::Relaxed);
                if info.gang.is_some() {
                    self.counters
                        .gang_members_released
                        .fetch_add(1, Ordering::Relaxed);
                    let wait = (now - info.ready_ns.load(Ordering::Relaxed)).max(0) as u64;
                    self.counters
                        .barrier_wait_ns
                        .fetch_add(wait, Ordering::Relaxed);
                    trace::gang_barrier(info.ring, info.id, wait);
                }
                match self.entities.get(entity).map(|e| job.push(e)) {
                    Some(Ok(finished)) => self.watch_finished(slot, gen, &finished),
                    // Not its entity (cannot happen: the job was made on it): fail it.
                    _ => self.note(slot, gen, |p| p.finished = Some(false)),
                }
            }
            Act::Finish(f) => {
                let Finish {
                    done,
                    result,
                    deps,
                    fin,
                    job,
                    info,
                } = f;
                if let Some(d) = done {
                    d.signal(result);
                }
                drop(deps);
                drop(fin);
                drop(job);
                drop(info);
            }
            Act::Cancel(info) => {
                self.gpu.cancel(&info, ecanceled());
            }
        }
    }

    /// Registers the callback on a pushed job's finished fence.
    fn watch_finished(&self, slot: u32, gen: u32, finished: &Fence) {
        let Some(me) = self.arc() else { return };
        let cb = FinCb {
            inner: me,
            slot,
            gen,
        };
        match Waiter::new(finished, cb) {
            Ok(Ok(w)) => {
                let spare = with_irqsave(&self.state, |st| match st.recs.get_mut(slot as usize) {
                    Some(r) if r.gen == gen && r.fin.is_none() => {
                        r.fin = Some(w);
                        None
                    }
                    _ => Some(w),
                });
                drop(spare);
            }
            Ok(Err((cb, res))) => cb.signalled(res),
            Err(_) => {
                // No memory for the callback: poll the fence instead.
                while !finished.wait_ms(10) {}
                self.note(slot, gen, |p| {
                    p.finished = Some(finished.status() == Some(Ok(())))
                });
            }
        }
    }

    /// A new reference to ourselves.
    fn arc(&self) -> Option<Arc<Inner>> {
        let p = self.work.data().0.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is the data pointer of the `Arc` that owns `self` (what
        // `Arc::into_raw` returns), and that `Arc` is alive while we run on `self`.
        let b = unsafe { ArcBorrow::from_raw(p) };
        Some(Arc::from(b))
    }
}

/// The gang-aware scheduler of one model GPU.
pub(crate) struct GangSched {
    inner: Arc<Inner>,
}

impl GangSched {
    /// A scheduler for `gpu` that can hold `slots` unfinished jobs.
    pub(crate) fn new(gpu: Arc<ModelGpu>, slots: u32) -> Result<Self> {
        if slots == 0 || slots > 1 << 20 {
            return Err(EINVAL);
        }
        let n = slots as usize;
        let mut store = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut recs = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            store.push(Slot::default(), GFP_KERNEL)?;
            recs.push(Rec::default(), GFP_KERNEL)?;
        }
        let policy = Policy::new(Slots(store), gpu.rings()).map_err(policy_err)?;
        let mut entities = KVec::with_capacity(gpu.rings() as usize * Class::COUNT, GFP_KERNEL)?;
        for ring in 0..gpu.rings() {
            let Some(sched) = gpu.sched(ring) else {
                return Err(EINVAL);
            };
            for c in [Class::Bulk, Class::Normal, Class::Latency, Class::Kernel] {
                // SAFETY: The entity lives in `Inner`, which also holds `gpu` (declared
                // after the entities, so dropped after them): the scheduler outlives it.
                entities.push(unsafe { Entity::new(sched, class_prio(c).1)? }, GFP_KERNEL)?;
            }
        }
        let state = KBox::pin_init(
            new_spinlock!(
                State {
                    policy,
                    recs,
                    dirty: KVec::with_capacity(n, GFP_KERNEL)?,
                    events: KVec::with_capacity(n + MAX_BATCH, GFP_KERNEL)?,
                    dead: false,
                    closed: false,
                },
                "aikrs_gang_state"
            ),
            GFP_KERNEL,
        )?;
        let inner = Arc::new(
            Inner {
                work: Work::new(Kick(AtomicPtr::new(core::ptr::null_mut())))?,
                entities,
                state,
                push: KBox::pin_init(new_mutex!(ActBuf::new(n)?, "aikrs_gang_push"), GFP_KERNEL)?,
                counters: GangCounters::default(),
                gpu,
            },
            GFP_KERNEL,
        )?;
        let p: *const Inner = &*inner;
        inner.work.data().0.store(p.cast_mut(), Ordering::Release);
        Ok(Self { inner })
    }

    pub(crate) fn counters(&self) -> &GangCounters {
        &self.inner.counters
    }

    /// Runs `f` with the policy held off: fence events are recorded meanwhile but not
    /// acted on (the work item waits for `f`). For tests that need drm_sched or the
    /// engines to be done with a job before the policy hears of it. `f` must not submit,
    /// shut down or drop this scheduler, or wait for a job's `done` fence (the policy
    /// signals it): each would wait for the policy, which waits for `f`.
    pub(crate) fn with_policy_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _serial = self.inner.push.lock();
        f()
    }

    pub(crate) fn policy_stats(&self) -> policy::Stats {
        with_irqsave(&self.inner.state, |st| st.policy.stats())
    }

    /// Submits a batch of jobs from context `ctx`; returns their handles in order.
    /// Process context. Errors: `EINVAL` for a bad batch (empty, too big, bad ring, a
    /// gang wider than the rings or with two members on one ring or mixed classes, a bad
    /// or cyclic dependency), `ENOSPC` when the scheduler is full, `ENODEV` after
    /// shutdown; nothing is submitted then.
    pub(crate) fn submit(&self, ctx: u32, specs: &[JobSpec<'_>]) -> Result<KVec<Submitted>> {
        let inner = &self.inner;
        let gpu = &inner.gpu;
        if specs.is_empty() || specs.len() > MAX_BATCH {
            return Err(EINVAL);
        }
        // Everything that allocates, before the lock.
        let mut pspecs = KVec::with_capacity(specs.len(), GFP_KERNEL)?;
        let mut parts = KVec::with_capacity(specs.len(), GFP_KERNEL)?;
        let mut gangs: [Option<Arc<GangTiming>>; MAX_BATCH] = [const { None }; MAX_BATCH];
        for s in specs {
            if s.ring >= gpu.rings() {
                return Err(EINVAL);
            }
            let members = specs
                .iter()
                .filter(|o| o.gang.is_some() && o.gang == s.gang)
                .count();
            let timing = match s.gang {
                Some(g) => {
                    let e = gangs.get_mut(g as usize).ok_or(EINVAL)?;
                    if e.is_none() {
                        *e = Some(GangTiming::new(members as u32)?);
                    }
                    e.clone()
                }
                None => None,
            };
            let (prio, _) = class_prio(s.class);
            let run_ns = if s.hang {
                HANG
            } else {
                u64::from(s.run_us) * 1000
            };
            let info = JobInfo::new(
                gpu,
                s.ring,
                prio,
                run_ns,
                s.class == Class::Bulk,
                s.class >= Class::Latency,
                timing,
            )?;
            let eidx = entity_index(s.ring, s.class);
            let entity = inner.entities.get(eidx).ok_or(EINVAL)?;
            let job = NewJob::new(entity, SchedJob::new(gpu, info.clone()), u64::from(ctx))?;
            let done = Signaller::new()?;
            pspecs.push(
                Spec {
                    ring: s.ring,
                    class: s.class,
                    gang: s.gang,
                    deps: s.after,
                    ext: s.deps.len() as u32,
                },
                GFP_KERNEL,
            )?;
            parts.push((job, done, info, eidx), GFP_KERNEL)?;
        }
        let mut ids = [0 as JobId; MAX_BATCH];
        let mut out = KVec::with_capacity(specs.len(), GFP_KERNEL)?;
        let mut gens = [0u32; MAX_BATCH];
        let mut parts_iter = parts.into_iter();
        let r = with_irqsave(&inner.state, |st| -> Result {
            if st.dead {
                return Err(ENODEV);
            }
            st.policy
                .submit(ctx, &pspecs, &mut ids)
                .map_err(policy_err)?;
            for (i, &id) in ids.iter().take(specs.len()).enumerate() {
                // The record first (ids are slots, so it exists): a part taken out of
                // `parts_iter` must not be dropped under the lock.
                let Some(r) = st.recs.get_mut(id as usize) else {
                    break;
                };
                let Some((job, done, info, eidx)) = parts_iter.next() else {
                    break;
                };
                let fence = done.fence();
                r.cancelled = false;
                r.pending = Pending::default();
                r.job = Some(job);
                r.done = Some(done);
                r.info = Some(info.clone());
                r.entity = eidx;
                gens[i] = r.gen;
                // Within the capacity reserved above.
                let _ = out.push(Submitted { done: fence, info }, GFP_ATOMIC);
            }
            Ok(())
        });
        // On error the unused jobs, fences and infos are dropped here, outside the lock.
        drop(parts_iter);
        r?;
        inner
            .counters
            .submitted
            .fetch_add(specs.len() as u64, Ordering::Relaxed);
        // Dependencies on fences: a callback each, or counted at once if signalled. The
        // callbacks are collected outside the lock and moved into the record in one swap
        // (no allocation, no drop under the lock).
        for (i, s) in specs.iter().enumerate() {
            let (slot, gen) = (ids[i], gens[i]);
            let mut ws = KVec::new();
            let mut failed = 0u32;
            if ws.reserve(s.deps.len(), GFP_KERNEL).is_err() {
                failed = s.deps.len() as u32;
            } else {
                for f in s.deps {
                    let Some(me) = inner.arc() else { break };
                    match Waiter::new(
                        f,
                        DepCb {
                            inner: me,
                            slot,
                            gen,
                        },
                    ) {
                        Ok(Ok(w)) => {
                            // Within the reserved capacity.
                            let _ = ws.push(w, GFP_KERNEL);
                        }
                        Ok(Err((cb, res))) => cb.signalled(res),
                        // No memory for the callback: the job cannot wait for this
                        // fence, so it fails as if the fence had.
                        Err(_) => failed += 1,
                    }
                }
            }
            if failed != 0 {
                inner.note(slot, gen, |p| p.ext_failed += failed);
            }
            let spare = with_irqsave(&inner.state, |st| match st.recs.get_mut(slot as usize) {
                Some(r) if r.gen == gen && r.deps.is_empty() => {
                    core::mem::swap(&mut r.deps, &mut ws);
                    None
                }
                _ => Some(ws),
            });
            // The job already ended: its callbacks go here, outside the lock.
            drop(spare);
        }
        // Jobs without dependencies may go now.
        inner.process();
        Ok(out)
    }

    /// Fails everything not yet finished and waits (up to 5 s) until nothing is in
    /// flight. Further submissions get `ENODEV`. Process context; allocates nothing, so
    /// it cannot fail.
    pub(crate) fn shutdown(&self) {
        let inner = &self.inner;
        {
            let mut acts = inner.push.lock();
            let counters = &inner.counters;
            with_irqsave(&inner.state, |st| {
                st.dead = true;
                let events = &mut st.events;
                st.policy.abort_all(&mut |e| {
                    let _ = events.push(e, GFP_ATOMIC);
                });
                Inner::collect(&mut st.recs, &mut st.events, &mut acts, counters);
            });
            for i in 0..acts.len {
                if let Some(a) = acts.take(i) {
                    inner.act(a);
                }
            }
            acts.len = 0;
        }
        // A deadline, not a count of sleeps: `msleep(1)` sleeps two ticks or more.
        let t0 = ktime_ns();
        loop {
            inner.process();
            let busy = with_irqsave(&inner.state, |st| {
                (0..st.policy.rings()).any(|r| st.policy.in_flight(r) != 0)
            });
            if !busy || ktime_ns() - t0 > SHUTDOWN_WAIT_NS {
                break;
            }
            msleep(1);
        }
        // From here on callbacks note nothing and the work item does nothing.
        with_irqsave(&inner.state, |st| st.closed = true);
        inner.work.cancel_sync();
        // Drop every remaining callback (they hold references to `inner`), fence and
        // job, one record per lock hold (nothing to allocate), outside the lock.
        let n = with_irqsave(&inner.state, |st| st.recs.len());
        for i in 0..n {
            let left = with_irqsave(&inner.state, |st| {
                st.recs.get_mut(i).map(|r| {
                    (
                        core::mem::take(&mut r.deps),
                        r.fin.take(),
                        r.done.take(),
                        r.job.take(),
                    )
                })
            });
            drop(left);
            if i % 1024 == 1023 {
                cond_resched();
            }
        }
    }
}

impl Drop for GangSched {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Plain drm_sched entities of one context on the model GPU: every job is pushed at
/// once with its dependencies (`drm_sched_job_add_dependency`), as a driver without the
/// gang layer does. The baseline of the benchmark.
pub(crate) struct PlainCtx {
    /// One entity per ring.
    entities: KVec<Entity<RingBackend>>,
    gpu: Arc<ModelGpu>,
    ctx: u32,
}

impl PlainCtx {
    /// A context with one entity per ring at drm_sched priority `prio`.
    pub(crate) fn new(gpu: Arc<ModelGpu>, prio: Priority, ctx: u32) -> Result<Self> {
        let mut entities = KVec::with_capacity(gpu.rings() as usize, GFP_KERNEL)?;
        for ring in 0..gpu.rings() {
            let Some(sched) = gpu.sched(ring) else {
                return Err(EINVAL);
            };
            // SAFETY: `self.gpu` (declared after the entities) keeps the scheduler alive
            // until the entities are dropped.
            entities.push(unsafe { Entity::new(sched, prio)? }, GFP_KERNEL)?;
        }
        Ok(Self { entities, gpu, ctx })
    }

    /// Pushes one job to `ring` that runs `run_us` after `deps`.
    pub(crate) fn submit(
        &self,
        ring: u32,
        run_us: u32,
        deps: &[Fence],
        gang: Option<Arc<GangTiming>>,
    ) -> Result<Submitted> {
        let entity = self.entities.get(ring as usize).ok_or(EINVAL)?;
        let info = JobInfo::new(
            &self.gpu,
            ring,
            1,
            u64::from(run_us) * 1000,
            false,
            false,
            gang,
        )?;
        let mut job = NewJob::new(
            entity,
            SchedJob::new(&self.gpu, info.clone()),
            u64::from(self.ctx),
        )?;
        for d in deps {
            job.add_dependency(d)?;
        }
        info.release_ns.store(ktime_ns(), Ordering::Relaxed);
        let done = job.push(entity)?;
        Ok(Submitted { done, info })
    }
}
