// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `aikrs_gang`: the gang layer on drm_sched and the model GPU, end to end.
//!
//! The policy alone is property-tested on the host (`core/tests/`); these cases check
//! what only a kernel can: real drm_sched schedulers and entities, fences, the engines'
//! hrtimers, preemption, drm_sched's timeout handler, and teardown. Times come from the
//! model engines (`start_ns`/`end_ns`), so the checks are about order, not speed, with
//! wide margins for TCG. The preemption checks wait for events (a job running on its
//! engine, a fence), never for a fixed time: under TCG, on a debug kernel and with
//! hrtimers that expire on the 4 ms tick, "3 ms later" may well be after a 20 ms job.

use crate::gang::{GangSched, JobSpec, PlainCtx, Submitted};
use crate::model::ModelGpu;
use crate::policy::Class;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::aikrs::{
    compat::{eopnotsupp, etimedout},
    cpu::{cond_resched, cpu_relax, ktime_ns, num_online_cpus},
    fence::Signaller,
    kthread,
    kunit::Test,
    sched::Priority,
    timer::msleep,
    trace::{Count, Recorder},
};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::{aikrs_expect, aikrs_expect_eq, aikrs_kunit_suite};

const MS: i64 = 1_000_000;

fn spec(ring: u32, class: Class, run_us: u32) -> JobSpec<'static> {
    JobSpec {
        ring,
        class,
        run_us,
        hang: false,
        gang: None,
        after: 0,
        deps: &[],
    }
}

fn gang(ring: u32, g: u8, run_us: u32) -> JobSpec<'static> {
    JobSpec {
        gang: Some(g),
        ..spec(ring, Class::Normal, run_us)
    }
}

fn setup(rings: u32, timeout_ms: u32) -> Result<(Arc<ModelGpu>, GangSched)> {
    let gpu = ModelGpu::new(rings, 2, 100, timeout_ms)?;
    let gs = GangSched::new(gpu.clone(), 256)?;
    Ok((gpu, gs))
}

fn start(s: &Submitted) -> i64 {
    s.info.start_ns.load(Ordering::Relaxed)
}

fn end(s: &Submitted) -> i64 {
    s.info.end_ns.load(Ordering::Relaxed)
}

/// Waits for every fence (5 s each at most); false if one did not signal.
fn wait_all(subs: &[Submitted]) -> bool {
    subs.iter().all(|s| s.done.wait_ms(5000))
}

/// How long a case waits for something that must happen, in milliseconds: a guard against
/// a hang, which fails the case; never a measure of speed.
const GUARD_MS: u32 = 30_000;

/// Waits until `s` has started on its engine; false if it did not (it failed without
/// running, or nothing happened for [`GUARD_MS`]).
fn wait_started(s: &Submitted) -> bool {
    let t0 = ktime_ns();
    while start(s) == 0 && !s.done.is_signaled() {
        if ktime_ns() - t0 > i64::from(GUARD_MS) * MS {
            break;
        }
        msleep(1);
    }
    start(s) != 0
}

fn ok(s: &Submitted) -> bool {
    s.done.status() == Some(Ok(()))
}

/// Gangs of one context are released in submission order, even on disjoint rings; other
/// contexts are not held back; solo jobs of one ring and class run in FIFO order.
fn ordering(t: &Test) -> Result {
    let (_gpu, gs) = setup(6, 0)?;
    let gate = Signaller::new()?;
    let gf = [gate.fence()];
    let a = gs.submit(
        1,
        &[
            JobSpec {
                deps: &gf,
                ..gang(0, 0, 1000)
            },
            JobSpec {
                deps: &gf,
                ..gang(1, 0, 1000)
            },
        ],
    )?;
    let b = gs.submit(1, &[gang(2, 0, 1000), gang(3, 0, 1000)])?;
    let c = gs.submit(2, &[gang(4, 0, 1000), gang(5, 0, 1000)])?;
    aikrs_expect!(t, wait_all(&c), "another context's gang did not run");
    msleep(20);
    aikrs_expect_eq!(
        t,
        b.iter().map(start).max(),
        Some(0),
        "a younger gang of the context overtook"
    );
    gate.signal(Ok(()));
    aikrs_expect!(t, wait_all(&a) && wait_all(&b));
    let a_rel = a
        .iter()
        .map(|s| s.info.release_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let b_rel = b
        .iter()
        .map(|s| s.info.release_ns.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    aikrs_expect!(
        t,
        b_rel >= a_rel,
        "gang order: B released {} ns before A",
        a_rel - b_rel
    );
    aikrs_expect!(t, a.iter().all(ok) && b.iter().all(ok) && c.iter().all(ok));

    let mut solo = KVec::new();
    for _ in 0..4 {
        for s in gs.submit(3, &[spec(0, Class::Normal, 300)])? {
            solo.push(s, GFP_KERNEL)?;
        }
    }
    aikrs_expect!(t, wait_all(&solo));
    for w in solo.windows(2) {
        aikrs_expect!(t, end(&w[0]) <= start(&w[1]), "FIFO broken on one ring");
    }
    Ok(())
}

/// Run times of the blocking job [`all_or_nothing`] tries in turn, in microseconds.
const BLOCKER_US: [u32; 3] = [30_000, 300_000, 3_000_000];

/// No gang member starts while one of its rings is busy; the rings are claimed meanwhile
/// (a later solo job does not slip in); the members then run together.
///
/// The claim can only be seen if the policy meets the solo job while the blocking job
/// still runs; on a slow kernel it may meet it later, and such an attempt is repeated with
/// a blocking job ten times longer ([`BLOCKER_US`]). No check depends on how long anything
/// took.
fn all_or_nothing(t: &Test) -> Result {
    for blocker_us in BLOCKER_US {
        let (_gpu, gs) = setup(4, 0)?;
        let blocker = gs.submit(2, &[spec(2, Class::Normal, blocker_us)])?;
        if !aikrs_expect!(
            t,
            wait_started(&blocker[0]),
            "the blocking job did not start"
        ) {
            return Ok(());
        }
        // Members run 20 ms: long enough that they overlap however slowly the kernel
        // hands them to the engines (the check below is about order, not a duration).
        let g = gs.submit(
            1,
            &[gang(0, 0, 20_000), gang(1, 0, 20_000), gang(2, 0, 20_000)],
        )?;
        let intruder = gs.submit(3, &[spec(0, Class::Normal, 1000)])?;
        let guard = GUARD_MS + blocker_us / 1000;
        if !aikrs_expect!(
            t,
            blocker[0].done.wait_ms(guard) && wait_all(&g) && wait_all(&intruder),
            "a job did not finish"
        ) {
            return Ok(());
        }
        let bend = end(&blocker[0]);
        let first = g.iter().map(start).min().unwrap_or(0);
        let last = g.iter().map(start).max().unwrap_or(0);
        aikrs_expect!(
            t,
            first >= bend,
            "a member started {} ns before its ring was free",
            bend - first
        );
        let first_end = g.iter().map(end).min().unwrap_or(0);
        aikrs_expect!(
            t,
            last < first_end,
            "members did not run together: one started {} ns after another ended",
            last - first_end
        );
        let istart = intruder.iter().map(start).min().unwrap_or(0);
        aikrs_expect!(
            t,
            istart >= first,
            "a solo job slipped onto a claimed ring before the gang"
        );
        aikrs_expect!(t, g.iter().all(ok));
        if gs.policy_stats().claim_holds == 0 {
            // The policy looked at the solo job only after the blocking job had ended
            // (nothing was claimed then): this attempt shows nothing about claims.
            continue;
        }
        return Ok(());
    }
    aikrs_expect!(
        t,
        false,
        "the solo job was never held on a claimed ring (blocking jobs of {:?} us)",
        BLOCKER_US
    );
    Ok(())
}

/// A job runs after all its dependencies (batch jobs and foreign fences); a failed
/// dependency fails its dependents without running them.
fn dag_dependencies(t: &Test) -> Result {
    let (_gpu, gs) = setup(3, 0)?;
    let e = Signaller::new()?;
    let ef = [e.fence()];
    let v = gs.submit(
        1,
        &[
            spec(0, Class::Normal, 1000),
            spec(1, Class::Normal, 2000),
            JobSpec {
                after: 0b11,
                deps: &ef,
                ..spec(2, Class::Normal, 500)
            },
        ],
    )?;
    msleep(15);
    aikrs_expect_eq!(t, start(&v[2]), 0, "ran before its fence dependency");
    let sig = ktime_ns();
    e.signal(Ok(()));
    aikrs_expect!(t, wait_all(&v));
    aikrs_expect!(
        t,
        start(&v[2]) >= sig && start(&v[2]) >= end(&v[0]) && start(&v[2]) >= end(&v[1])
    );
    aikrs_expect!(t, v.iter().all(ok));

    let f = Signaller::new()?;
    let ff = [f.fence()];
    let w = gs.submit(
        1,
        &[
            JobSpec {
                deps: &ff,
                ..spec(0, Class::Normal, 500)
            },
            JobSpec {
                after: 0b1,
                ..spec(1, Class::Normal, 500)
            },
        ],
    )?;
    f.signal(Err(EIO));
    aikrs_expect!(t, wait_all(&w));
    aikrs_expect!(
        t,
        w.iter()
            .all(|s| matches!(s.done.status(), Some(Err(_))) && start(s) == 0)
    );
    Ok(())
}

/// Run times of the bulk job [`preempt_bulk`] tries in turn, in microseconds.
const BULK_US: [u32; 3] = [50_000, 500_000, 5_000_000];

/// Runs a bulk job on ring 0 of `gpu` and, once the engine runs it, a latency-critical job
/// on the same ring, and checks the events of a preemption: the latency-critical job
/// started after the bulk job and finished before it, the bulk job was stopped once (and
/// the GPU counted it), resumed, still got its whole run time besides the time the other
/// job ran, and both succeeded. Returns whether a preemption was seen.
///
/// Whether the latency-critical job reaches the engine while the bulk job still runs is up
/// to the kernel's speed (the test thread's wake-up, drm_sched's submission work, the next
/// timer tick for the preemption point): if it arrives after the bulk job's end, or within
/// a tick of it, the bulk job simply completes first (correctly: the other job starts at
/// the same moment either way). Such an attempt shows nothing about preemption and is
/// repeated with a bulk job ten times longer ([`BULK_US`]). No check depends on how long
/// anything took.
fn preempt_bulk(t: &Test, gs: &GangSched, gpu: &ModelGpu) -> Result<bool> {
    for bulk_us in BULK_US {
        let before = gpu.stats.preemptions.load(Ordering::Relaxed);
        let bulk = gs.submit(1, &[spec(0, Class::Bulk, bulk_us)])?;
        // Submitted earlier, the latency-critical job could reach drm_sched or the engine
        // first and simply run first: both pick the higher priority.
        if !aikrs_expect!(t, wait_started(&bulk[0]), "the bulk job did not start") {
            return Ok(false);
        }
        let lc = gs.submit(2, &[spec(0, Class::Latency, 500)])?;
        let guard = GUARD_MS + bulk_us / 1000;
        if !aikrs_expect!(
            t,
            lc[0].done.wait_ms(guard) && bulk[0].done.wait_ms(guard),
            "a job did not finish"
        ) {
            return Ok(false);
        }
        let (b, l) = (&bulk[0], &lc[0]);
        aikrs_expect!(t, ok(b) && ok(l));
        let preemptions = b.info.preemptions.load(Ordering::Relaxed);
        if preemptions == 0 {
            // Too late to preempt: the engine ran the two jobs one after the other.
            aikrs_expect!(
                t,
                start(l) >= end(b),
                "a job ran alongside a bulk job that was not preempted"
            );
            continue;
        }
        aikrs_expect_eq!(
            t,
            preemptions,
            1,
            "one latency-critical job, one preemption"
        );
        aikrs_expect_eq!(
            t,
            gpu.stats.preemptions.load(Ordering::Relaxed) - before,
            u64::from(preemptions),
            "preemptions the GPU counted"
        );
        aikrs_expect!(
            t,
            start(b) < start(l) && end(l) < end(b),
            "not a preemption: bulk {}..{} ns, latency-critical {}..{} ns",
            start(b),
            end(b),
            start(l),
            end(l)
        );
        // The bulk job's run time on the engine: its span less the other job's.
        let ran = (end(b) - start(b)) - (end(l) - start(l));
        aikrs_expect!(
            t,
            ran >= i64::from(bulk_us) * 1000,
            "the preempted bulk job ran {} ns of {} us",
            ran,
            bulk_us
        );
        return Ok(true);
    }
    Ok(false)
}

/// A latency-critical job preempts a running bulk job at a preemption point and finishes
/// first; the bulk job resumes and still runs its whole time. It does not preempt normal
/// work.
fn priority_preemption(t: &Test) -> Result {
    let (gpu, gs) = setup(1, 0)?;
    let preempted = preempt_bulk(t, &gs, &gpu)?;
    aikrs_expect!(
        t,
        preempted,
        "no bulk job was preempted (run times {:?} us)",
        BULK_US
    );

    let normal = gs.submit(1, &[spec(0, Class::Normal, 20_000)])?;
    aikrs_expect!(t, wait_started(&normal[0]), "the normal job did not start");
    // The policy holds this job until the normal job has finished.
    let lc2 = gs.submit(2, &[spec(0, Class::Latency, 500)])?;
    aikrs_expect!(t, wait_all(&normal) && wait_all(&lc2));
    aikrs_expect!(
        t,
        start(&lc2[0]) >= end(&normal[0]),
        "normal work was preempted"
    );
    aikrs_expect_eq!(
        t,
        normal[0].info.preemptions.load(Ordering::Relaxed),
        0,
        "normal work was preempted"
    );
    aikrs_expect!(t, ok(&normal[0]) && ok(&lc2[0]));
    Ok(())
}

/// A gang member that hangs times out; the whole gang fails, every fence of it signals
/// with an error, its dependents fail without running, and the GPU keeps working.
fn timeout_recovery(t: &Test) -> Result {
    let (gpu, gs) = setup(3, 50)?;
    let v = gs.submit(
        1,
        &[
            JobSpec {
                hang: true,
                ..gang(0, 0, 0)
            },
            gang(1, 0, 2_000_000),
            gang(2, 0, 2_000_000),
            JobSpec {
                after: 0b111,
                ..spec(0, Class::Normal, 100)
            },
        ],
    )?;
    let t0 = ktime_ns();
    aikrs_expect!(
        t,
        wait_all(&v),
        "a fence of the failed gang never signalled"
    );
    aikrs_expect!(t, ktime_ns() - t0 < 1500 * MS, "recovery took too long");
    aikrs_expect!(t, v.iter().all(|s| matches!(s.done.status(), Some(Err(_)))));
    aikrs_expect_eq!(t, start(&v[3]), 0, "a dependent of the failed gang ran");
    aikrs_expect!(t, gpu.stats.timeouts.load(Ordering::Relaxed) >= 1);
    let t1 = ktime_ns();
    let after = gs.submit(
        1,
        &[spec(0, Class::Normal, 200), spec(1, Class::Normal, 200)],
    )?;
    let fine = wait_all(&after) && after.iter().all(ok);
    for s in after.iter() {
        let st = match s.done.status() {
            None => 1,
            Some(Ok(())) => 0,
            Some(Err(e)) => e.to_errno(),
        };
        aikrs_expect!(
            t,
            fine,
            "the GPU did not recover: ring {} status {} released {} started {} ended {} (recovery done at {}), timeouts {} cancelled {} preemptions {}; policy cancel events {} fail events {} stats {:?}",
            s.info.ring,
            st,
            s.info.release_ns.load(Ordering::Relaxed),
            start(s),
            end(s),
            t1,
            gpu.stats.timeouts.load(Ordering::Relaxed),
            gpu.stats.cancelled.load(Ordering::Relaxed),
            s.info.preemptions.load(Ordering::Relaxed),
            gs.counters().cancelled.load(Ordering::Relaxed),
            gs.counters().failed.load(Ordering::Relaxed),
            gs.policy_stats()
        );
    }
    Ok(())
}

/// Tearing the scheduler and the GPU down with jobs in flight, queued, hanging and
/// waiting for a fence that never signals: every fence signals, nothing is left behind.
fn teardown_in_flight(t: &Test) -> Result {
    let (gpu, gs) = setup(4, 0)?;
    let never = Signaller::new()?;
    let nf = [never.fence()];
    let mut all = KVec::new();
    for s in gs.submit(1, &[gang(0, 0, 50_000), gang(1, 0, 50_000)])? {
        all.push(s, GFP_KERNEL)?;
    }
    for s in gs.submit(
        2,
        &[JobSpec {
            hang: true,
            ..spec(2, Class::Normal, 0)
        }],
    )? {
        all.push(s, GFP_KERNEL)?;
    }
    for s in gs.submit(
        3,
        &[spec(3, Class::Bulk, 100_000), spec(3, Class::Bulk, 100_000)],
    )? {
        all.push(s, GFP_KERNEL)?;
    }
    for s in gs.submit(
        4,
        &[JobSpec {
            deps: &nf,
            ..spec(0, Class::Normal, 10)
        }],
    )? {
        all.push(s, GFP_KERNEL)?;
    }
    msleep(5);
    let t0 = ktime_ns();
    drop(gs);
    aikrs_expect!(t, ktime_ns() - t0 < 3000 * MS, "teardown took too long");
    aikrs_expect!(
        t,
        all.iter().all(|s| s.done.is_signaled()),
        "a fence was left unsignalled"
    );
    aikrs_expect!(
        t,
        all.iter().any(|s| matches!(s.done.status(), Some(Err(_))))
    );
    for _ in 0..1000 {
        if gpu.stats.live_jobs.load(Ordering::Acquire) == 0 {
            break;
        }
        msleep(1);
    }
    aikrs_expect_eq!(
        t,
        gpu.stats.live_jobs.load(Ordering::Acquire),
        0,
        "drm_sched still owns jobs"
    );
    drop(never);
    drop(gpu);
    Ok(())
}

/// A job whose every other reference is gone when the policy hears that it finished:
/// the record holds the last reference to its `JobInfo`, which owns its hardware fence,
/// and dropping that takes the fence's lock. The record used to be dropped under the
/// state lock, which the fence callbacks take under fence locks (hardware fence ->
/// drm_sched's finished fence -> `FinCb` -> state): a lock order cycle, which lockdep
/// reported on a debug kernel (the runners fail the run on it; KUnit cannot see it) once
/// a user's `RUN` was interrupted with jobs in flight. Made deterministic here: the
/// policy is held off until drm_sched has freed the job and the submitter has dropped
/// its handle.
fn last_reference_at_finish(t: &Test) -> Result {
    let (gpu, gs) = setup(1, 0)?;
    // One plain completion first: the callbacks' lock order is then on record.
    let warm = gs.submit(1, &[spec(0, Class::Normal, 100)])?;
    aikrs_expect!(t, wait_all(&warm), "a job did not finish");
    drop(warm);
    // Long enough on the engine (1 s) that the policy is held before the job ends.
    let subs = gs.submit(1, &[spec(0, Class::Normal, 1_000_000)])?;
    let Some(s) = subs.into_iter().next() else {
        return Err(EINVAL);
    };
    let done = s.done.clone();
    let mut early = false;
    let freed = gs.with_policy_held(|| {
        // Finished before we got here: the policy may have dropped the record already,
        // and the case would check nothing.
        early = end(&s) != 0;
        // Only the record's reference is left once drm_sched has freed the job and
        // the engine has dropped its own after signalling: one `JobInfo` left alive.
        drop(s);
        let t0 = ktime_ns();
        while gpu.stats.live_jobs.load(Ordering::Acquire) != 0
            || gpu.stats.live_infos.load(Ordering::Acquire) != 1
        {
            if ktime_ns() - t0 > i64::from(GUARD_MS) * MS {
                return false;
            }
            msleep(1);
        }
        true
    });
    aikrs_expect!(t, !early, "the job ended before the policy was held");
    aikrs_expect!(
        t,
        freed,
        "the record did not end up with the last reference (drm_sched or the engine kept one)"
    );
    aikrs_expect!(t, done.wait_ms(GUARD_MS), "the job's fence did not signal");
    aikrs_expect_eq!(t, done.status(), Some(Ok(())));
    // The policy drops the record's reference right after it signals the fence.
    let t0 = ktime_ns();
    while gpu.stats.live_infos.load(Ordering::Acquire) != 0
        && ktime_ns() - t0 < i64::from(GUARD_MS) * MS
    {
        msleep(1);
    }
    aikrs_expect_eq!(t, gpu.stats.live_infos.load(Ordering::Acquire), 0);
    Ok(())
}

/// Timeouts that land just as `run_job` returns (issue 14), many times over.
///
/// drm_sched arms the timeout before it calls `run_job`, and its submit worker uses the
/// job after `run_job` returns: it adds its callback to the hardware fence
/// (`dma_fence_add_callback(fence, &job->cb, ...)`), or completes the job
/// (`drm_sched_job_done`, which reads `job->s_fence` and `job->credits`) if the fence
/// has already signalled. A timeout handler that freed the job once `run_job` had
/// returned could free it under that worker: on a KASAN kernel, a use-after-free report
/// in `dma_fence_add_callback` or `drm_sched_job_done` (raised in a kworker, not the
/// test's thread, so the runners' scan of the kernel log fails the run, not KUnit),
/// elsewhere memory corruption. The handler now stops submission first
/// (`drm_sched_stop` waits for the submit worker) and only `free_job` frees jobs.
///
/// To hit that window often, short jobs (0..31 us on the engine, so the hardware fence
/// signals anywhere from inside `run_job` to well after it) run back to back on every
/// ring while a thread bound to each CPU forces the timeout handler (`drm_sched_fault`,
/// what a driver does on a hardware fault) at varying intervals, so handlers run on
/// other CPUs than the submit worker at every point of its path. With 1 credit the job
/// being submitted is the only one in flight, the one a handler takes; with 2 a second
/// job waits in the engine and must come out untouched (its fence is handed back to
/// drm_sched on resubmission, not run again).
///
/// Afterwards every job has finished, successfully or with `-ETIMEDOUT` (never
/// cancelled as a bystander), drm_sched has freed every job, and the GPU still works.
fn timeout_race(t: &Test) -> Result {
    const RINGS: u32 = 4;
    const JOBS: u32 = 250;
    for credits in [1u32, 2] {
        // No timer timeout: the handlers run when the threads below say so.
        let gpu = ModelGpu::new(RINGS, credits, 0, 0)?;
        let ctx = PlainCtx::new(gpu.clone(), Priority::Normal, 1)?;
        // Everything waits for the gate, so the jobs run while the handlers are forced.
        let gate = Signaller::new()?;
        let gf = [gate.fence()];
        let mut subs = KVec::with_capacity((RINGS * JOBS) as usize, GFP_KERNEL)?;
        for i in 0..JOBS {
            for ring in 0..RINGS {
                subs.push(
                    ctx.submit(ring, (i * 7 + ring) % 32, &gf, None)?,
                    GFP_KERNEL,
                )?;
            }
        }
        let faults = AtomicU64::new(0);
        let deadline = ktime_ns() + 20_000 * MS;
        let g = &gpu;
        gate.signal_ref(Ok(()));
        kthread::run_on_each_online_cpu(&|cpu| {
            let mut k = u64::from(cpu);
            while g.stats.live_jobs.load(Ordering::Acquire) != 0 && ktime_ns() < deadline {
                if let Some(s) = g.sched((k % u64::from(RINGS)) as u32) {
                    s.fault();
                    faults.fetch_add(1, Ordering::Relaxed);
                }
                // 0..50 us, varying, so that handlers fall at every point of the path.
                let until = ktime_ns() + ((k * 7919) % 50_000) as i64;
                while ktime_ns() < until {
                    cpu_relax();
                }
                cond_resched();
                k += 1;
            }
        })?;
        let st = &gpu.stats;
        let live = st.live_jobs.load(Ordering::Acquire);
        aikrs_expect!(
            t,
            live == 0,
            "credits {}: drm_sched still owns {} jobs after 20 s of forced timeouts",
            credits,
            live
        );
        aikrs_expect!(
            t,
            subs.iter().all(|s| s.done.is_signaled()),
            "credits {}: a finished fence never signalled",
            credits
        );
        let timeouts = st.timeouts.load(Ordering::Relaxed);
        aikrs_expect!(
            t,
            timeouts > 0,
            "credits {}: no handler took a job",
            credits
        );
        let bystanders = subs
            .iter()
            .filter(|s| !ok(s) && s.done.status() != Some(Err(etimedout())))
            .count();
        aikrs_expect!(
            t,
            bystanders == 0,
            "credits {}: {} jobs failed with another error than -ETIMEDOUT",
            credits,
            bystanders
        );
        let failed = subs.iter().filter(|s| !ok(s)).count();
        // The handlers must have stopped jobs in the hardware, not only found finished ones.
        aikrs_expect!(
            t,
            failed > 0,
            "credits {}: no job was stopped by a timeout ({} handler calls)",
            credits,
            timeouts
        );
        pr_info!(
            "timeout_race: credits {}, {} CPUs, {} faults, {} timeouts, {} of {} jobs timed out\n",
            credits,
            num_online_cpus(),
            faults.load(Ordering::Relaxed),
            timeouts,
            failed,
            subs.len()
        );
        // The GPU still works.
        let mut after = KVec::new();
        for ring in 0..RINGS {
            after.push(ctx.submit(ring, 50, &[], None)?, GFP_KERNEL)?;
        }
        aikrs_expect!(
            t,
            wait_all(&after) && after.iter().all(ok),
            "credits {}: the GPU did not recover",
            credits
        );
        drop(ctx);
        drop(gpu);
    }
    Ok(())
}

/// Bad batches get an error and change nothing.
fn bad_input(t: &Test) -> Result {
    let (_gpu, gs) = setup(2, 0)?;
    aikrs_expect_eq!(t, gs.submit(1, &[]).err(), Some(EINVAL), "empty");
    aikrs_expect_eq!(
        t,
        gs.submit(1, &[gang(0, 0, 10), gang(0, 0, 10)]).err(),
        Some(EINVAL),
        "two members on one ring"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(1, &[gang(0, 0, 10), gang(1, 0, 10), gang(1, 0, 10)])
            .err(),
        Some(EINVAL),
        "wider than the rings"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(1, &[spec(2, Class::Normal, 10)]).err(),
        Some(EINVAL),
        "no such ring"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(
            1,
            &[
                JobSpec {
                    after: 0b10,
                    ..spec(0, Class::Normal, 10)
                },
                JobSpec {
                    after: 0b01,
                    ..spec(1, Class::Normal, 10)
                }
            ]
        )
        .err(),
        Some(EINVAL),
        "a dependency cycle"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(
            1,
            &[JobSpec {
                after: 0b1,
                ..spec(0, Class::Normal, 10)
            }]
        )
        .err(),
        Some(EINVAL),
        "self dependency"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(
            1,
            &[
                gang(0, 0, 10),
                JobSpec {
                    after: 0b1,
                    ..gang(1, 0, 10)
                }
            ]
        )
        .err(),
        Some(EINVAL),
        "a member waiting for its own gang"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(
            1,
            &[JobSpec {
                after: 1 << 5,
                ..spec(0, Class::Normal, 10)
            }]
        )
        .err(),
        Some(EINVAL),
        "dependency on a job not in the batch"
    );
    aikrs_expect_eq!(
        t,
        gs.submit(
            1,
            &[
                gang(0, 0, 10),
                JobSpec {
                    class: Class::Bulk,
                    ..gang(1, 0, 10)
                }
            ]
        )
        .err(),
        Some(EINVAL),
        "mixed classes in a gang"
    );
    let st = gs.policy_stats();
    aikrs_expect_eq!(t, st.submitted, 0, "a refused batch left jobs behind");
    // Still fully usable.
    let v = gs.submit(1, &[gang(0, 0, 100), gang(1, 0, 100)])?;
    aikrs_expect!(t, wait_all(&v) && v.iter().all(ok));
    Ok(())
}

/// The `aikrs_gang` tracepoints fire where the counters count: a probe attached for the
/// test sees as many gang starts, barrier releases, preemptions and timeouts as the
/// model and the layer counted, with the same skew and barrier-wait sums.
fn tracepoints(t: &Test) -> Result {
    let rec = match Recorder::new() {
        Ok(r) => r,
        Err(e) if e == eopnotsupp() => {
            t.skip(c"kernel without CONFIG_TRACEPOINTS");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let (gpu, gs) = setup(3, 50)?;
    let mut all = KVec::new();
    // A gang that waits for ring 0 to drain (barrier wait), then two more.
    for s in gs.submit(1, &[spec(0, Class::Normal, 3_000)])? {
        all.push(s, GFP_KERNEL)?;
    }
    for g in 0..3u8 {
        for s in gs.submit(1, &[gang(0, g, 200), gang(1, g, 200), gang(2, g, 200)])? {
            all.push(s, GFP_KERNEL)?;
        }
    }
    aikrs_expect!(t, wait_all(&all) && all.iter().all(ok));
    // A bulk job preempted by a latency-critical one, on a GPU of its own without a job
    // timeout: the bulk job may have to be longer than 50 ms (see `preempt_bulk`).
    let (pgpu, pgs) = setup(1, 0)?;
    let preempted = preempt_bulk(t, &pgs, &pgpu)?;
    // A hanging gang member: a timeout.
    let hung = gs.submit(
        4,
        &[
            JobSpec {
                hang: true,
                ..gang(0, 0, 0)
            },
            gang(2, 0, 1_000),
        ],
    )?;
    aikrs_expect!(t, wait_all(&hung));

    let st = &gpu.stats;
    let c = gs.counters();
    let starts = st.gangs_started.load(Ordering::Relaxed);
    aikrs_expect!(t, starts >= 3, "only {} gangs started", starts);
    aikrs_expect_eq!(t, rec.get(Count::GangStarts), starts);
    aikrs_expect_eq!(
        t,
        rec.get(Count::GangSkewNs),
        st.gang_skew_ns_sum.load(Ordering::Relaxed)
    );
    let released = c.gang_members_released.load(Ordering::Relaxed);
    aikrs_expect!(t, released >= 9, "only {} members released", released);
    aikrs_expect_eq!(t, rec.get(Count::BarrierReleases), released);
    let wait = c.barrier_wait_ns.load(Ordering::Relaxed);
    aikrs_expect!(t, wait > 0, "no barrier wait behind a 3 ms job");
    aikrs_expect_eq!(t, rec.get(Count::BarrierWaitNs), wait);
    let pre =
        st.preemptions.load(Ordering::Relaxed) + pgpu.stats.preemptions.load(Ordering::Relaxed);
    aikrs_expect!(t, preempted && pre >= 1, "the bulk job was not preempted");
    aikrs_expect_eq!(t, rec.get(Count::Preemptions), pre);
    let tmo = st.timeouts.load(Ordering::Relaxed);
    aikrs_expect!(t, tmo >= 1, "the hanging member did not time out");
    aikrs_expect_eq!(t, rec.get(Count::Timeouts), tmo);
    Ok(())
}

aikrs_kunit_suite!(
    aikrs_gang,
    [
        ordering,
        all_or_nothing,
        dag_dependencies,
        priority_preemption,
        timeout_recovery,
        timeout_race,
        teardown_in_flight,
        last_reference_at_finish,
        bad_input,
        tracepoints
    ]
);
