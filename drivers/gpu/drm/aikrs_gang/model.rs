// SPDX-License-Identifier: GPL-2.0

//! The model GPU: a software stand-in for GPU hardware, not a driver for any device.
//!
//! A [`ModelGpu`] has N rings. Each ring is driven by a real `drm_gpu_scheduler`
//! (`kernel::aikrs::sched`), whose `run_job` hands the job to the ring's model *engine*.
//! An engine runs one job at a time, highest priority first (FIFO within a priority),
//! and completes it after its declared run time: an hrtimer fires and the engine signals
//! the job's hardware fence. A job marked *preemptible* (bulk work) is preempted at its
//! next preemption point (every `preempt_us` microseconds of its run time, as mid-wave
//! preemption on H100/MI300) when a job marked *preempting* (latency-critical work) is
//! queued behind it; it resumes later with the run time it has left. A job that *hangs*
//! never completes: drm_sched's timeout reaches [`RingBackend::timedout_job`], which
//! stops it with `-ETIMEDOUT`.
//!
//! Locking: each engine's state is under its own spinlock, taken with interrupts
//! disabled (the timer callback runs in hard interrupt context). Fences are signalled
//! after the lock is dropped.

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use kernel::aikrs::{
    compat::{ecanceled, etimedout},
    cpu::{ktime_ns, with_irqsave},
    fence::{Fence, Signaller},
    sched::{Backend, Job, Scheduler},
    timer::{msleep, Expired, Timer, TimerRef, Workqueue},
    trace,
};
use kernel::new_spinlock;
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

/// Jobs an engine can hold (running, queued, preempted). drm_sched's credit limit keeps
/// the number handed to an engine below this.
pub(crate) const ENGINE_SLOTS: usize = 16;

/// The largest number of rings.
pub(crate) const MAX_RINGS: u32 = 16;

/// A job that never completes by itself.
pub(crate) const HANG: u64 = u64::MAX;

/// Start times of a gang's members, for the skew figure.
pub(crate) struct GangTiming {
    members: u32,
    started: AtomicU32,
    first_ns: AtomicI64,
    last_ns: AtomicI64,
}

impl GangTiming {
    pub(crate) fn new(members: u32) -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                members,
                started: AtomicU32::new(0),
                first_ns: AtomicI64::new(i64::MAX),
                last_ns: AtomicI64::new(0),
            },
            GFP_KERNEL,
        )?)
    }
}

/// What the model knows of a job, shared with the scheduling layer and the benchmark.
pub(crate) struct JobInfo {
    pub(crate) id: u64,
    pub(crate) ring: u32,
    /// Engine priority: higher runs first.
    pub(crate) prio: u8,
    /// Declared run time in nanoseconds, or [`HANG`].
    pub(crate) run_ns: u64,
    pub(crate) preemptible: bool,
    pub(crate) preempting: bool,
    pub(crate) gang: Option<Arc<GangTiming>>,
    /// Set when the job must not run (any more): the engine drops it with an error.
    pub(crate) cancelled: AtomicBool,
    pub(crate) submit_ns: AtomicI64,
    /// When the job's last dependency was met (the scheduling layer sets it).
    pub(crate) ready_ns: AtomicI64,
    /// When the scheduling layer pushed it to drm_sched.
    pub(crate) release_ns: AtomicI64,
    /// First start on the engine (0: not yet).
    pub(crate) start_ns: AtomicI64,
    /// Completion on the engine (0: not yet).
    pub(crate) end_ns: AtomicI64,
    pub(crate) preemptions: AtomicU32,
    /// The hardware fence, made with the job (not in `run_job`, which must not
    /// allocate: it is on the fence-signalling path).
    hw: Signaller,
    /// For the `live_infos` count.
    stats: Arc<GpuStats>,
}

impl Drop for JobInfo {
    fn drop(&mut self) {
        self.stats.live_infos.fetch_sub(1, Ordering::Release);
    }
}

impl JobInfo {
    pub(crate) fn new(
        gpu: &ModelGpu,
        ring: u32,
        prio: u8,
        run_ns: u64,
        preemptible: bool,
        preempting: bool,
        gang: Option<Arc<GangTiming>>,
    ) -> Result<Arc<Self>> {
        let hw = Signaller::new()?;
        // Counted from here: a value that does not make it into its `Arc` is dropped,
        // which uncounts it.
        gpu.stats.live_infos.fetch_add(1, Ordering::Relaxed);
        let now = ktime_ns();
        Ok(Arc::new(
            Self {
                id: gpu.next_id.fetch_add(1, Ordering::Relaxed),
                ring,
                prio,
                run_ns,
                preemptible,
                preempting,
                gang,
                cancelled: AtomicBool::new(false),
                submit_ns: AtomicI64::new(now),
                ready_ns: AtomicI64::new(now),
                release_ns: AtomicI64::new(0),
                start_ns: AtomicI64::new(0),
                end_ns: AtomicI64::new(0),
                preemptions: AtomicU32::new(0),
                hw,
                stats: gpu.stats.clone(),
            },
            GFP_KERNEL,
        )?)
    }
}

/// Event counts of one model GPU.
#[derive(Default)]
pub(crate) struct GpuStats {
    pub(crate) jobs_run: AtomicU64,
    pub(crate) preemptions: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) gangs_started: AtomicU64,
    pub(crate) gang_skew_ns_sum: AtomicU64,
    pub(crate) gang_skew_ns_max: AtomicU64,
    /// Jobs drm_sched still owns (pushed, not yet freed).
    pub(crate) live_jobs: AtomicU64,
    /// `JobInfo`s not yet freed.
    pub(crate) live_infos: AtomicU64,
}

/// A job on an engine.
struct Slot {
    info: Arc<JobInfo>,
    /// Run time left, or [`HANG`].
    left: u64,
    seq: u64,
}

struct EngineState {
    running: Option<Slot>,
    /// When the running job (re)started.
    slice_start: i64,
    /// The preemption point the running job stops at (0: none requested).
    preempt_at: i64,
    queue: [Option<Slot>; ENGINE_SLOTS],
    seq: u64,
    dead: bool,
}

/// One ring's engine.
pub(crate) struct Engine {
    preempt_ns: u64,
    stats: Arc<GpuStats>,
    state: Pin<KBox<SpinLock<EngineState>>>,
}

/// A job whose hardware fence is signalled once the engine lock is dropped.
type ToSignal = Option<(Arc<JobInfo>, Result)>;

impl EngineState {
    /// Starts the best queued job if idle (highest priority, then oldest).
    fn start_next(&mut self, now: i64, e: &Engine, t: &TimerRef) {
        // Killed: queued jobs stay queued until `kill` takes them (and fails them).
        if self.running.is_some() || self.dead {
            return;
        }
        let mut best: Option<usize> = None;
        for (i, s) in self.queue.iter().enumerate() {
            if let Some(s) = s {
                let better = match best.and_then(|b| self.queue[b].as_ref()) {
                    None => true,
                    Some(b) => {
                        (s.info.prio, core::cmp::Reverse(s.seq))
                            > (b.info.prio, core::cmp::Reverse(b.seq))
                    }
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(slot) = best.and_then(|i| self.queue[i].take()) else {
            return;
        };
        if slot.info.start_ns.load(Ordering::Relaxed) == 0 {
            slot.info.start_ns.store(now, Ordering::Relaxed);
            e.stats.jobs_run.fetch_add(1, Ordering::Relaxed);
            if let Some(g) = &slot.info.gang {
                g.first_ns.fetch_min(now, Ordering::Relaxed);
                g.last_ns.fetch_max(now, Ordering::Relaxed);
                if g.started.fetch_add(1, Ordering::AcqRel) + 1 == g.members {
                    let skew = (g.last_ns.load(Ordering::Relaxed)
                        - g.first_ns.load(Ordering::Relaxed))
                    .max(0) as u64;
                    e.stats.gangs_started.fetch_add(1, Ordering::Relaxed);
                    e.stats.gang_skew_ns_sum.fetch_add(skew, Ordering::Relaxed);
                    e.stats.gang_skew_ns_max.fetch_max(skew, Ordering::Relaxed);
                    trace::gang_start(slot.info.ring, slot.info.id, g.members, skew);
                }
            }
        }
        self.slice_start = now;
        self.preempt_at = 0;
        let left = slot.left;
        self.running = Some(slot);
        if left != HANG {
            t.start_at(now.saturating_add(left as i64));
        }
        self.maybe_preempt(now, e, t);
    }

    /// If the running job is preemptible and a preempting job of higher priority waits,
    /// arranges for the running job to stop at its next preemption point.
    fn maybe_preempt(&mut self, now: i64, e: &Engine, t: &TimerRef) {
        let Some(run) = &self.running else { return };
        if !run.info.preemptible || self.preempt_at != 0 || e.preempt_ns == 0 {
            return;
        }
        let prio = run.info.prio;
        let waiting = self
            .queue
            .iter()
            .flatten()
            .any(|q| q.info.preempting && q.info.prio > prio);
        if !waiting {
            return;
        }
        let k = e.preempt_ns as i64;
        let elapsed = (now - self.slice_start).max(0);
        let at = self.slice_start + (elapsed / k + 1) * k;
        let end = if run.left == HANG {
            i64::MAX
        } else {
            self.slice_start.saturating_add(run.left as i64)
        };
        if at < end {
            self.preempt_at = at;
            t.start_at(at);
        }
    }
}

impl Engine {
    fn new(preempt_ns: u64, stats: Arc<GpuStats>) -> Result<Self> {
        let state = KBox::pin_init(
            new_spinlock!(
                EngineState {
                    running: None,
                    slice_start: 0,
                    preempt_at: 0,
                    queue: [const { None }; ENGINE_SLOTS],
                    seq: 0,
                    dead: false,
                },
                "aikrs_gang_engine"
            ),
            GFP_KERNEL,
        )?;
        Ok(Self {
            preempt_ns,
            stats,
            state,
        })
    }

    /// Takes a job into the engine (drm_sched's `run_job`); returns its hardware fence.
    fn submit(&self, info: Arc<JobInfo>, t: &TimerRef) -> Result<Fence> {
        let fence = info.hw.fence();
        let now = ktime_ns();
        let left = if info.run_ns == HANG {
            HANG
        } else {
            info.run_ns.max(1)
        };
        let mut slot = Some(Slot { info, left, seq: 0 });
        let rejected: ToSignal = with_irqsave(&self.state, |st| {
            let mut s = slot.take()?;
            if st.dead || s.info.cancelled.load(Ordering::Acquire) {
                return Some((s.info, Err(ecanceled())));
            }
            let Some(free) = st.queue.iter_mut().find(|q| q.is_none()) else {
                return Some((s.info, Err(ENOSPC)));
            };
            st.seq += 1;
            s.seq = st.seq;
            *free = Some(s);
            if st.running.is_none() {
                st.start_next(now, self, t);
            } else {
                st.maybe_preempt(now, self, t);
            }
            None
        });
        if let Some((i, r)) = rejected {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            i.hw.signal_ref(r);
        }
        Ok(fence)
    }

    /// Stops job `id` (running or queued) and fails its hardware fence with `err`.
    /// Returns whether the engine had it.
    fn cancel(&self, id: u64, err: Error, t: &TimerRef) -> bool {
        let now = ktime_ns();
        let taken = with_irqsave(&self.state, |st| {
            if st.running.as_ref().is_some_and(|r| r.info.id == id) {
                let r = st.running.take();
                st.preempt_at = 0;
                st.start_next(now, self, t);
                return r;
            }
            st.queue
                .iter_mut()
                .find(|q| q.as_ref().is_some_and(|q| q.info.id == id))
                .and_then(|q| q.take())
        });
        match taken {
            Some(s) => {
                s.info.end_ns.store(now, Ordering::Relaxed);
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                s.info.hw.signal_ref(Err(err));
                true
            }
            None => false,
        }
    }

    /// Stops everything for good; every job's hardware fence fails with `-ECANCELED`.
    fn kill(&self, t: &TimerRef) {
        // One job per lock hold: nothing allocates under the lock, so no job can be
        // lost to a failed allocation (its fence would never signal). `dead` keeps new
        // jobs out and stops `start_next`, so every job here fails with `-ECANCELED`.
        loop {
            let s = with_irqsave(&self.state, |st| {
                st.dead = true;
                let _ = t.try_cancel();
                st.running
                    .take()
                    .or_else(|| st.queue.iter_mut().find_map(|q| q.take()))
            });
            let Some(s) = s else { break };
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            s.info.hw.signal_ref(Err(ecanceled()));
        }
    }
}

impl Expired for Engine {
    fn expired(&self, t: &TimerRef) {
        let now = ktime_ns();
        let done: ToSignal = with_irqsave(&self.state, |st| {
            let Some(run) = &mut st.running else {
                return None;
            };
            let elapsed = (now - st.slice_start).max(0) as u64;
            if run.left != HANG && elapsed >= run.left {
                let r = st.running.take()?;
                r.info.end_ns.store(now, Ordering::Relaxed);
                st.preempt_at = 0;
                st.start_next(now, self, t);
                return Some((r.info, Ok(())));
            }
            // There is always a free queue slot (fewer credits than slots); without one
            // the job runs on rather than being dropped under the lock.
            let free = st.queue.iter().position(|q| q.is_none());
            if st.preempt_at != 0 && now >= st.preempt_at && free.is_none() {
                st.preempt_at = 0;
            }
            if let (true, Some(free)) = (st.preempt_at != 0 && now >= st.preempt_at, free) {
                if run.left != HANG {
                    run.left -= elapsed;
                }
                run.info.preemptions.fetch_add(1, Ordering::Relaxed);
                self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
                trace::preempt(run.info.ring, run.info.id, elapsed, run.left);
                let r = st.running.take();
                st.preempt_at = 0;
                if let Some(q) = st.queue.get_mut(free) {
                    *q = r;
                }
                st.start_next(now, self, t);
                return None;
            }
            // Early (a re-armed timer): wait for the nearer of the end and the
            // preemption point.
            let end = if run.left == HANG {
                i64::MAX
            } else {
                st.slice_start.saturating_add(run.left as i64)
            };
            let at = if st.preempt_at != 0 {
                st.preempt_at.min(end)
            } else {
                end
            };
            if at != i64::MAX {
                t.start_at(at);
            }
            None
        });
        if let Some((i, r)) = done {
            i.hw.signal_ref(r);
        }
    }
}

/// The drm_sched backend of one ring: its engine.
pub(crate) struct RingBackend {
    engine: Timer<Engine>,
    stats: Arc<GpuStats>,
}

/// What drm_sched carries per job: the model's view, and a live-job count.
pub(crate) struct SchedJob {
    pub(crate) info: Arc<JobInfo>,
    stats: Arc<GpuStats>,
}

impl SchedJob {
    pub(crate) fn new(gpu: &ModelGpu, info: Arc<JobInfo>) -> Self {
        gpu.stats.live_jobs.fetch_add(1, Ordering::Relaxed);
        Self {
            info,
            stats: gpu.stats.clone(),
        }
    }
}

impl Drop for SchedJob {
    fn drop(&mut self) {
        self.stats.live_jobs.fetch_sub(1, Ordering::Release);
    }
}

impl Backend for RingBackend {
    type JobData = SchedJob;

    fn run_job(&self, job: &Job<Self>) -> Result<Fence> {
        self.engine
            .data()
            .submit(job.data().info.clone(), self.engine.timer())
    }

    fn timedout_job(&self, job: &Job<Self>) {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        let info = &job.data().info;
        trace::timeout(info.ring, info.id, info.gang.is_some());
        info.cancelled.store(true, Ordering::Release);
        self.engine
            .data()
            .cancel(info.id, etimedout(), self.engine.timer());
    }
}

impl RingBackend {
    /// Aborts job `id` if the engine has it (see [`ModelGpu::cancel`]).
    pub(crate) fn cancel(&self, info: &JobInfo, err: Error) -> bool {
        info.cancelled.store(true, Ordering::Release);
        self.engine.data().cancel(info.id, err, self.engine.timer())
    }
}

/// The model GPU: rings, each a drm_sched scheduler over a model engine.
pub(crate) struct ModelGpu {
    rings: KVec<Scheduler<RingBackend>>,
    /// The rings' submission work runs here (declared after `rings`: dropped after
    /// the schedulers). Only held, never read.
    _wq: Workqueue,
    pub(crate) stats: Arc<GpuStats>,
    next_id: AtomicU64,
}

/// Names of the rings' schedulers (drm_sched keeps the pointer).
static RING_NAMES: [&core::ffi::CStr; MAX_RINGS as usize] = [
    c"aikrs-ring0",
    c"aikrs-ring1",
    c"aikrs-ring2",
    c"aikrs-ring3",
    c"aikrs-ring4",
    c"aikrs-ring5",
    c"aikrs-ring6",
    c"aikrs-ring7",
    c"aikrs-ring8",
    c"aikrs-ring9",
    c"aikrs-ring10",
    c"aikrs-ring11",
    c"aikrs-ring12",
    c"aikrs-ring13",
    c"aikrs-ring14",
    c"aikrs-ring15",
];

impl ModelGpu {
    /// A model GPU with `rings` rings (1..=16), each letting `credits` jobs (1..16) into
    /// its engine, preemption points every `preempt_us` (0: never preempt), and a job
    /// timeout of `timeout_ms` (0: none).
    pub(crate) fn new(
        rings: u32,
        credits: u32,
        preempt_us: u32,
        timeout_ms: u32,
    ) -> Result<Arc<Self>> {
        if rings == 0 || rings > MAX_RINGS || credits == 0 || credits as usize >= ENGINE_SLOTS {
            return Err(EINVAL);
        }
        let stats = Arc::new(GpuStats::default(), GFP_KERNEL)?;
        let wq = Workqueue::new(c"aikrs_gpu")?;
        let mut v = KVec::with_capacity(rings as usize, GFP_KERNEL)?;
        for name in RING_NAMES.iter().take(rings as usize) {
            let engine = Timer::new(Engine::new(u64::from(preempt_us) * 1000, stats.clone())?)?;
            let backend = RingBackend {
                engine,
                stats: stats.clone(),
            };
            // SAFETY: `wq` moves into the `ModelGpu` with the schedulers, declared after
            // them, so it outlives them.
            let sched = unsafe { Scheduler::new(backend, Some(&wq), credits, timeout_ms, name)? };
            v.push(sched, GFP_KERNEL)?;
        }
        Ok(Arc::new(
            Self {
                rings: v,
                _wq: wq,
                stats,
                next_id: AtomicU64::new(1),
            },
            GFP_KERNEL,
        )?)
    }

    pub(crate) fn rings(&self) -> u32 {
        self.rings.len() as u32
    }

    pub(crate) fn sched(&self, ring: u32) -> Option<&Scheduler<RingBackend>> {
        self.rings.get(ring as usize)
    }

    /// Aborts a job: if the engine has it, its hardware fence fails with `err` now;
    /// otherwise it is dropped with `-ECANCELED` when drm_sched hands it over.
    pub(crate) fn cancel(&self, info: &JobInfo, err: Error) -> bool {
        match self.rings.get(info.ring as usize) {
            Some(s) => s.backend().cancel(info, err),
            None => false,
        }
    }
}

impl Drop for ModelGpu {
    fn drop(&mut self) {
        // Every user has destroyed its entities (they hold a reference to us), so the
        // only jobs left are in the engines or on drm_sched's pending lists: fail them
        // all, then wait for drm_sched to free them before `drm_sched_fini`.
        for s in self.rings.iter() {
            let b = s.backend();
            b.engine.data().kill(b.engine.timer());
        }
        // Not killable, even when a user's command (`/dev/aikrs_gang`) ends early because
        // its task is being killed: giving up would leave jobs to `drm_sched_fini`. It is
        // short all the same: every hardware fence has just been signalled, so drm_sched
        // frees the jobs as soon as its work items run; the 5 s cap is for a broken
        // scheduler, not for the workload's length. (A deadline: `msleep(1)` sleeps two
        // ticks or more.)
        let t0 = ktime_ns();
        while self.stats.live_jobs.load(Ordering::Acquire) != 0 && ktime_ns() - t0 < 5_000_000_000 {
            msleep(1);
        }
        let left = self.stats.live_jobs.load(Ordering::Acquire);
        if left != 0 {
            pr_err!(
                "model GPU teardown: {} jobs still owned by drm_sched\n",
                left
            );
        }
    }
}
