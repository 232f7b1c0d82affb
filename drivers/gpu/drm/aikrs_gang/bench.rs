// SPDX-License-Identifier: GPL-2.0

//! Benchmark (`make bench`, `aikrs.mode=bench`) and demo (`make run`, `aikrs.mode=demo`):
//! the gang layer against plain drm_sched entities, on two model GPUs of the same shape
//! in the same boot.
//!
//! 1. Training: 8-member gangs on 8 rings (one step each, every member waiting for all
//!    members of the step before, as after an AllReduce), with unrelated jobs of another
//!    context competing for the rings. Per step: gang skew (first to last member start)
//!    and barrier wait (the sum over members of the time from their start to the last
//!    member's start: the time ranks that started early wait for the late ones at the
//!    step's collective).
//! 2. Serving: latency-critical decode jobs arriving while bulk prefill jobs 100x longer
//!    run on the same ring; decode latency (submission to completion) against decode
//!    run alone.
//!
//! Times are engine times under QEMU TCG: compare the ratios, not the absolute values.

use crate::gang::{GangSched, JobSpec, PlainCtx, Submitted};
use crate::model::{GangTiming, ModelGpu};
use crate::policy::Class;
use core::sync::atomic::Ordering;
use kernel::aikrs::{
    compat::etimedout, cpu::cond_resched_killable, debugfs::Counters, fence::Fence,
    sched::Priority, timer::msleep,
};
use kernel::prelude::*;
use kernel::sync::Arc;

const RINGS: u32 = 8;
/// Jobs drm_sched lets into each model engine at once (a 2-deep hardware queue).
const CREDITS: u32 = 2;
const PREEMPT_US: u32 = 100;
const MEMBER_US: u32 = 500;
/// Competing jobs per step, 500 us..3 ms each on random rings.
const COMPETITORS: u32 = 4;
/// Steps submitted ahead of the oldest unfinished one.
const AHEAD: usize = 2;
const DECODE_US: u32 = 1000;
const PREFILL_US: u32 = 100 * DECODE_US;

/// A small deterministic generator (xorshift64*), so both runs see the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Who runs a workload, and so how it waits.
#[derive(Clone, Copy)]
enum Caller {
    /// The benchmark and the demo (module init): every wait as it always was.
    Bench,
    /// A command of user space ([`workload`], `/dev/aikrs_gang`): the task can be killed.
    /// Waits for jobs end on a signal (`ERESTARTSYS`), and each training step, each
    /// decode and each round of a sleep loop stops with `EINTR` if the task is being
    /// killed. An early return takes the same way out as a job that timed out: the
    /// scheduling layer, then the model GPU, are dropped, which fails and frees every
    /// job left (see `ModelGpu::drop`).
    User,
}

impl Caller {
    /// A point between two pieces of work: for [`Caller::User`], `EINTR` if the task is
    /// being killed (and a chance to reschedule).
    fn checkpoint(self) -> Result {
        match self {
            Caller::Bench => Ok(()),
            Caller::User => cond_resched_killable(),
        }
    }
}

/// Which scheduling the run uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Gang,
    Plain,
}

/// Per-step figures of a training run, in nanoseconds.
struct Train {
    skew: KVec<i64>,
    wait: KVec<i64>,
    elapsed_ns: i64,
}

fn starts(step: &[Submitted]) -> (i64, i64, i64) {
    let s = step.iter().map(|m| m.info.start_ns.load(Ordering::Relaxed));
    let first = s.clone().min().unwrap_or(0);
    let last = s.clone().max().unwrap_or(0);
    let wait = s.map(|x| last - x).sum();
    (first, last, wait)
}

/// Waits for every job of `v`, each for up to 10 s (`ETIMEDOUT` if one is not done by
/// then); for [`Caller::User`], interruptibly.
fn wait_done(v: &[Submitted], caller: Caller) -> Result {
    for s in v {
        let done = match caller {
            Caller::Bench => s.done.wait_ms(10_000),
            Caller::User => s.done.wait_ms_interruptible(10_000)?,
        };
        if !done {
            return Err(etimedout());
        }
    }
    Ok(())
}

fn record(t: &mut Train, step: &[Submitted], caller: Caller) -> Result {
    wait_done(step, caller)?;
    let (first, last, wait) = starts(step);
    t.skew.push(last - first, GFP_KERNEL)?;
    t.wait.push(wait, GFP_KERNEL)?;
    Ok(())
}

fn train(
    mode: Mode,
    steps: u32,
    seed: u64,
    caller: Caller,
) -> Result<(Train, Arc<ModelGpu>, Option<crate::policy::Stats>)> {
    let gpu = ModelGpu::new(RINGS, CREDITS, PREEMPT_US, 0)?;
    let mut rng = Rng(seed);
    let mut t = Train {
        skew: KVec::with_capacity(steps as usize, GFP_KERNEL)?,
        wait: KVec::with_capacity(steps as usize, GFP_KERNEL)?,
        elapsed_ns: 0,
    };
    let gs = match mode {
        Mode::Gang => Some(GangSched::new(gpu.clone(), 4096)?),
        Mode::Plain => None,
    };
    let plain = match mode {
        Mode::Plain => Some((
            PlainCtx::new(gpu.clone(), Priority::Normal, 1)?,
            PlainCtx::new(gpu.clone(), Priority::Normal, 2)?,
        )),
        Mode::Gang => None,
    };
    let t0 = kernel::aikrs::cpu::ktime_ns();
    let mut window: [Option<KVec<Submitted>>; AHEAD + 1] = [const { None }; AHEAD + 1];
    let mut competitors: KVec<Submitted> = KVec::new();
    let mut prev: KVec<Fence> = KVec::new();
    for k in 0..steps as usize {
        caller.checkpoint()?;
        for _ in 0..COMPETITORS {
            let ring = rng.below(u64::from(RINGS)) as u32;
            let run = 500 + rng.below(2500) as u32;
            let s = match (&gs, &plain) {
                (Some(gs), _) => gs
                    .submit(2, &[spec(ring, run, None, &[])])?
                    .into_iter()
                    .next(),
                (_, Some((_, comp))) => Some(comp.submit(ring, run, &[], None)?),
                _ => None,
            };
            if let Some(s) = s {
                competitors.push(s, GFP_KERNEL)?;
            }
        }
        let step = match (&gs, &plain) {
            (Some(gs), _) => {
                let specs: [JobSpec<'_>; RINGS as usize] =
                    core::array::from_fn(|i| spec(i as u32, MEMBER_US, Some(0), &prev));
                gs.submit(1, &specs)?
            }
            (_, Some((ctx, _))) => {
                let timing = GangTiming::new(RINGS)?;
                let mut v = KVec::with_capacity(RINGS as usize, GFP_KERNEL)?;
                for i in 0..RINGS {
                    v.push(
                        ctx.submit(i, MEMBER_US, &prev, Some(timing.clone()))?,
                        GFP_KERNEL,
                    )?;
                }
                v
            }
            _ => return Err(EINVAL),
        };
        prev = KVec::with_capacity(step.len(), GFP_KERNEL)?;
        for m in step.iter() {
            prev.push(m.done.clone(), GFP_KERNEL)?;
        }
        // The step submitted AHEAD + 1 steps ago must be done before we go on.
        let slot = &mut window[k % (AHEAD + 1)];
        if let Some(oldest) = slot.take() {
            record(&mut t, &oldest, caller)?;
        }
        *slot = Some(step);
    }
    for step in window.iter().flatten() {
        record(&mut t, step, caller)?;
    }
    t.elapsed_ns = kernel::aikrs::cpu::ktime_ns() - t0;
    wait_done(&competitors, caller)?;
    let stats = gs.as_ref().map(|g| g.policy_stats());
    Ok((t, gpu, stats))
}

fn spec<'a>(ring: u32, run_us: u32, gang: Option<u8>, deps: &'a [Fence]) -> JobSpec<'a> {
    JobSpec {
        ring,
        class: Class::Normal,
        run_us,
        hang: false,
        gang,
        after: 0,
        deps,
    }
}

/// Decode latencies (ns) of one serving run.
fn serve(
    mode: Mode,
    decodes: u32,
    prefill: bool,
    seed: u64,
    caller: Caller,
) -> Result<(KVec<i64>, u64)> {
    let gpu = ModelGpu::new(1, CREDITS, PREEMPT_US, 0)?;
    let mut rng = Rng(seed);
    let mut lat = KVec::with_capacity(decodes as usize, GFP_KERNEL)?;
    let gs = match mode {
        Mode::Gang => Some(GangSched::new(gpu.clone(), 256)?),
        Mode::Plain => None,
    };
    let plain = match mode {
        Mode::Plain => Some((
            PlainCtx::new(gpu.clone(), Priority::Low, 1)?,
            PlainCtx::new(gpu.clone(), Priority::High, 2)?,
        )),
        Mode::Gang => None,
    };
    let mut prefills: KVec<Submitted> = KVec::new();
    for _ in 0..decodes {
        caller.checkpoint()?;
        if prefill {
            let open = prefills.iter().filter(|p| !p.done.is_signaled()).count();
            for _ in open..2 {
                let p = match (&gs, &plain) {
                    (Some(gs), _) => {
                        let s = JobSpec {
                            class: Class::Bulk,
                            ..spec(0, PREFILL_US, None, &[])
                        };
                        gs.submit(1, &[s])?.into_iter().next()
                    }
                    (_, Some((pre, _))) => Some(pre.submit(0, PREFILL_US, &[], None)?),
                    _ => None,
                };
                if let Some(p) = p {
                    prefills.push(p, GFP_KERNEL)?;
                }
            }
        }
        // The decode arrives while the prefills run.
        msleep(1 + rng.below(4) as u32);
        let d = match (&gs, &plain) {
            (Some(gs), _) => {
                let s = JobSpec {
                    class: Class::Latency,
                    ..spec(0, DECODE_US, None, &[])
                };
                gs.submit(2, &[s])?.into_iter().next().ok_or(EINVAL)?
            }
            (_, Some((_, dec))) => dec.submit(0, DECODE_US, &[], None)?,
            _ => return Err(EINVAL),
        };
        wait_done(core::slice::from_ref(&d), caller)?;
        let l = d.info.end_ns.load(Ordering::Relaxed) - d.info.submit_ns.load(Ordering::Relaxed);
        lat.push(l, GFP_KERNEL)?;
    }
    wait_done(&prefills, caller)?;
    Ok((lat, gpu.stats.preemptions.load(Ordering::Relaxed)))
}

/// The `p`-th percentile (0..=100) of `v` (sorted in place), nearest rank.
fn pct(v: &mut [i64], p: usize) -> i64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() * p).div_ceil(100)).clamp(1, v.len()) - 1;
    v[i]
}

fn mean(v: &[i64]) -> i64 {
    if v.is_empty() {
        0
    } else {
        v.iter().sum::<i64>() / v.len() as i64
    }
}

/// `a / b` with two decimals, as text parts.
fn ratio(a: i64, b: i64) -> (i64, i64) {
    let b = b.max(1);
    let r = a.max(0) * 100 / b;
    (r / 100, r % 100)
}

/// Microseconds with one decimal, from nanoseconds, as text (both kernels' `pr_*!` take
/// `&str`; their `Display` traits differ).
struct Us {
    buf: [u8; 24],
    len: usize,
}

impl Us {
    fn new(ns: i64) -> Self {
        let mut t = (ns.max(0) / 100) as u64;
        let mut tmp = [0u8; 24];
        let mut n = 0;
        // Tenths first, then the integer part, in reverse.
        tmp[n] = b'0' + (t % 10) as u8;
        n += 1;
        tmp[n] = b'.';
        n += 1;
        t /= 10;
        loop {
            tmp[n] = b'0' + (t % 10) as u8;
            n += 1;
            t /= 10;
            if t == 0 || n == tmp.len() {
                break;
            }
        }
        let mut buf = [0u8; 24];
        for i in 0..n {
            buf[i] = tmp[n - 1 - i];
        }
        Self { buf, len: n }
    }

    fn s(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

fn line(name: &str, ours: i64, base: i64) {
    // ratio > 1: ours is better (lower).
    let (ri, rf) = ratio(base, ours);
    pr_info!(
        "bench: gang.{} ours={} base={} unit=us ratio={}.{:02}\n",
        name,
        Us::new(ours).s(),
        Us::new(base).s(),
        ri,
        rf
    );
}

fn bench(steps: u32, decodes: u32) -> Result {
    let (mut ours, gpu_o, st) = train(Mode::Gang, steps, 0x5eed_1234, Caller::Bench)?;
    let (mut base, gpu_b, _) = train(Mode::Plain, steps, 0x5eed_1234, Caller::Bench)?;
    line(
        "train_skew_p50",
        pct(&mut ours.skew, 50),
        pct(&mut base.skew, 50),
    );
    line(
        "train_skew_p99",
        pct(&mut ours.skew, 99),
        pct(&mut base.skew, 99),
    );
    line(
        "train_barrier_wait_per_step",
        mean(&ours.wait),
        mean(&base.wait),
    );
    pr_info!(
        "bench-info: gang.train steps={} step_time ours={} us plain={} us; barrier wait p99 ours={} us plain={} us; gangs started ours={} plain={}; claim holds={} preempting releases={}\n",
        steps,
        Us::new(ours.elapsed_ns / i64::from(steps.max(1))).s(),
        Us::new(base.elapsed_ns / i64::from(steps.max(1))).s(),
        Us::new(pct(&mut ours.wait, 99)).s(),
        Us::new(pct(&mut base.wait, 99)).s(),
        gpu_o.stats.gangs_started.load(Ordering::Relaxed),
        gpu_b.stats.gangs_started.load(Ordering::Relaxed),
        st.map_or(0, |s| s.claim_holds),
        st.map_or(0, |s| s.preempting_releases),
    );
    let (mut alone, _) = serve(Mode::Plain, decodes, false, 7, Caller::Bench)?;
    let (mut with_gang, pre_o) = serve(Mode::Gang, decodes, true, 7, Caller::Bench)?;
    let (mut with_plain, pre_b) = serve(Mode::Plain, decodes, true, 7, Caller::Bench)?;
    let (a50, a99) = (pct(&mut alone, 50), pct(&mut alone, 99));
    let (o50, o99) = (pct(&mut with_gang, 50), pct(&mut with_gang, 99));
    let (b50, b99) = (pct(&mut with_plain, 50), pct(&mut with_plain, 99));
    line("serve_decode_p50", o50, b50);
    line("serve_decode_p99", o99, b99);
    let (oi, of) = ratio(o99, a99);
    let (bi, bf) = ratio(b99, a99);
    pr_info!(
        "bench-info: gang.serve decodes={} decode={} us prefill={} us; decode alone p50={} p99={} us; p99 vs alone: ours {}.{:02}x, plain FIFO {}.{:02}x; preemptions ours={} plain={}\n",
        decodes,
        DECODE_US,
        PREFILL_US,
        Us::new(a50).s(),
        Us::new(a99).s(),
        oi,
        of,
        bi,
        bf,
        pre_o,
        pre_b
    );
    Ok(())
}

/// Runs the benchmark (`aikrs.mode=bench`).
pub(crate) fn run_all() {
    if let Err(e) = bench(1000, 100) {
        pr_err!("bench: gang: failed: {:?}\n", e);
    }
}

/// What [`workload`] did: `[0]` under the gang policy, `[1]` on plain drm_sched entities.
pub(crate) struct WorkloadReport {
    /// Training jobs submitted per run.
    pub(crate) jobs_expected: u64,
    /// Training jobs that started on an engine.
    pub(crate) jobs_run: [u64; 2],
    /// Gangs whose members all started.
    pub(crate) gangs_started: [u64; 2],
    /// Jobs drm_sched still held after the training run (waited for up to 5 s).
    pub(crate) jobs_left: [u64; 2],
    /// Preemptions while serving under the gang policy.
    pub(crate) preemptions: u64,
}

/// The benchmark's workload without its figures (`/dev/aikrs_gang`): `steps` training
/// steps under the gang policy and on plain entities, then (if `decodes > 0`) `decodes`
/// serving decodes among prefills both ways. Every job must complete: one that has not
/// within 10 s fails it with `ETIMEDOUT`. The guest's CPU hotplug test runs it while a
/// CPU goes offline and online.
///
/// Run for user space, so killable ([`Caller::User`]): `ERESTARTSYS` if a signal ends a
/// wait for a job, `EINTR` if the task is being killed between steps, decodes or sleeps.
/// The caller bounds `steps` and `decodes`.
pub(crate) fn workload(steps: u32, decodes: u32) -> Result<WorkloadReport> {
    let caller = Caller::User;
    let mut r = WorkloadReport {
        jobs_expected: u64::from(steps) * u64::from(RINGS + COMPETITORS),
        jobs_run: [0; 2],
        gangs_started: [0; 2],
        jobs_left: [0; 2],
        preemptions: 0,
    };
    for (i, mode) in [Mode::Gang, Mode::Plain].into_iter().enumerate() {
        // The scheduling layer (its entities) is gone when `train` returns; drm_sched
        // frees the finished jobs on its own time.
        let (_, gpu, _) = train(mode, steps, 0x5eed_1234, caller)?;
        let s = &gpu.stats;
        // Up to 5 s (a deadline: `msleep(1)` sleeps two ticks or more).
        let t0 = kernel::aikrs::cpu::ktime_ns();
        let mut left = s.live_jobs.load(Ordering::Acquire);
        while left != 0 && kernel::aikrs::cpu::ktime_ns() - t0 < 5_000_000_000 {
            // Killed: `gpu` goes, and its drop frees what is left.
            caller.checkpoint()?;
            msleep(1);
            left = s.live_jobs.load(Ordering::Acquire);
        }
        r.jobs_run[i] = s.jobs_run.load(Ordering::Relaxed);
        r.gangs_started[i] = s.gangs_started.load(Ordering::Relaxed);
        r.jobs_left[i] = left;
    }
    if decodes > 0 {
        r.preemptions = serve(Mode::Gang, decodes, true, 7, caller)?.1;
        serve(Mode::Plain, decodes, true, 7, caller)?;
    }
    Ok(r)
}

/// The demo's counters, left in debugfs (`aikrs_gang/demo/`).
pub(crate) struct Demo {
    _counters: Counters<10>,
}

impl Demo {
    /// A few training steps and a prefill/decode mix (`aikrs.mode=demo`).
    pub(crate) fn run() -> Result<Self> {
        let steps = 20;
        let (mut ours, gpu_o, st) = train(Mode::Gang, steps, 1, Caller::Bench)?;
        let (mut base, _, _) = train(Mode::Plain, steps, 1, Caller::Bench)?;
        pr_info!(
            "demo: training, {} steps of 8-member gangs on 8 model rings with competing jobs\n",
            steps
        );
        pr_info!(
            "demo:   gang skew p50/p99: gang policy {}/{} us, plain drm_sched {}/{} us\n",
            Us::new(pct(&mut ours.skew, 50)).s(),
            Us::new(pct(&mut ours.skew, 99)).s(),
            Us::new(pct(&mut base.skew, 50)).s(),
            Us::new(pct(&mut base.skew, 99)).s()
        );
        pr_info!(
            "demo:   barrier wait per step: gang policy {} us, plain drm_sched {} us\n",
            Us::new(mean(&ours.wait)).s(),
            Us::new(mean(&base.wait)).s()
        );
        let (mut alone, _) = serve(Mode::Plain, 20, false, 2, Caller::Bench)?;
        let (mut with_gang, pre) = serve(Mode::Gang, 20, true, 2, Caller::Bench)?;
        let (mut with_plain, _) = serve(Mode::Plain, 20, true, 2, Caller::Bench)?;
        pr_info!(
            "demo: serving, 20 decodes of {} us among prefills of {} us\n",
            DECODE_US,
            PREFILL_US
        );
        pr_info!(
            "demo:   decode latency p99: alone {} us, gang policy {} us ({} preemptions), plain FIFO {} us\n",
            Us::new(pct(&mut alone, 99)).s(),
            Us::new(pct(&mut with_gang, 99)).s(),
            pre,
            Us::new(pct(&mut with_plain, 99)).s()
        );
        let c = Counters::new(
            c"aikrs_gang",
            None,
            [
                c"demo_steps",
                c"gangs_started",
                c"gang_skew_ns_sum",
                c"gang_skew_ns_max",
                c"jobs_run",
                c"preemptions",
                c"timeouts",
                c"claim_holds",
                c"released",
                c"serve_preemptions",
            ],
        )?;
        let s = &gpu_o.stats;
        let vals = [
            u64::from(steps),
            s.gangs_started.load(Ordering::Relaxed),
            s.gang_skew_ns_sum.load(Ordering::Relaxed),
            s.gang_skew_ns_max.load(Ordering::Relaxed),
            s.jobs_run.load(Ordering::Relaxed),
            s.preemptions.load(Ordering::Relaxed),
            s.timeouts.load(Ordering::Relaxed),
            st.map_or(0, |s| s.claim_holds),
            st.map_or(0, |s| s.released),
            pre,
        ];
        for (i, v) in vals.iter().enumerate() {
            c.add(i, *v);
        }
        Ok(Self { _counters: c })
    }
}
