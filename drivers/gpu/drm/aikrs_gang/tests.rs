// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `aikrs_gang`: the gang layer on drm_sched and the model GPU, end to end.
//!
//! The policy alone is property-tested on the host (`core/tests/`); these cases check
//! what only a kernel can: real drm_sched schedulers and entities, fences, the engines'
//! hrtimers, preemption, drm_sched's timeout handler, and teardown. Times come from the
//! model engines (`start_ns`/`end_ns`), so the checks are about order, not speed, with
//! wide margins for TCG.

use crate::gang::{GangSched, JobSpec, Submitted};
use crate::model::ModelGpu;
use crate::policy::Class;
use core::sync::atomic::Ordering;
use kernel::aikrs::{
    compat::eopnotsupp,
    cpu::ktime_ns,
    fence::Signaller,
    kunit::Test,
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

/// No gang member starts while one of its rings is busy; the rings are claimed meanwhile
/// (a later solo job does not slip in); the members then start together.
fn all_or_nothing(t: &Test) -> Result {
    let (_gpu, gs) = setup(4, 0)?;
    let blocker = gs.submit(2, &[spec(2, Class::Normal, 30_000)])?;
    msleep(2);
    let g = gs.submit(1, &[gang(0, 0, 1000), gang(1, 0, 1000), gang(2, 0, 1000)])?;
    msleep(2);
    let intruder = gs.submit(3, &[spec(0, Class::Normal, 1000)])?;
    aikrs_expect!(t, wait_all(&blocker) && wait_all(&g) && wait_all(&intruder));
    let bend = blocker.iter().map(end).max().unwrap_or(i64::MAX);
    let first = g.iter().map(start).min().unwrap_or(0);
    let last = g.iter().map(start).max().unwrap_or(0);
    aikrs_expect!(
        t,
        first >= bend,
        "a member started {} ns before its ring was free",
        bend - first
    );
    aikrs_expect!(
        t,
        last - first < 10 * MS,
        "members started {} ns apart",
        last - first
    );
    let istart = intruder.iter().map(start).min().unwrap_or(0);
    aikrs_expect!(
        t,
        istart >= first,
        "a solo job slipped onto a claimed ring before the gang"
    );
    aikrs_expect!(
        t,
        gs.policy_stats().claim_holds > 0,
        "the solo job was never held"
    );
    aikrs_expect!(t, g.iter().all(ok));
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

/// A latency-critical job preempts a running bulk job at a preemption point; it does not
/// preempt normal work.
fn priority_preemption(t: &Test) -> Result {
    let (gpu, gs) = setup(1, 0)?;
    let bulk = gs.submit(1, &[spec(0, Class::Bulk, 40_000)])?;
    msleep(3);
    let lc = gs.submit(2, &[spec(0, Class::Latency, 500)])?;
    aikrs_expect!(t, wait_all(&lc));
    let lat = end(&lc[0]) - lc[0].info.submit_ns.load(Ordering::Relaxed);
    aikrs_expect!(
        t,
        !bulk[0].done.is_signaled(),
        "bulk finished first: nothing was preempted"
    );
    aikrs_expect!(
        t,
        lat < 15 * MS,
        "decode latency {} ns behind a 40 ms bulk job",
        lat
    );
    aikrs_expect!(t, wait_all(&bulk));
    aikrs_expect!(t, bulk[0].info.preemptions.load(Ordering::Relaxed) >= 1);
    aikrs_expect!(t, gpu.stats.preemptions.load(Ordering::Relaxed) >= 1);
    // The bulk job still ran its whole time.
    aikrs_expect!(t, end(&bulk[0]) - start(&bulk[0]) >= 40 * MS);
    aikrs_expect!(t, ok(&bulk[0]) && ok(&lc[0]));

    let normal = gs.submit(1, &[spec(0, Class::Normal, 20_000)])?;
    msleep(3);
    let lc2 = gs.submit(2, &[spec(0, Class::Latency, 500)])?;
    aikrs_expect!(t, wait_all(&normal) && wait_all(&lc2));
    aikrs_expect!(
        t,
        start(&lc2[0]) >= end(&normal[0]),
        "normal work was preempted"
    );
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
    // A bulk job preempted by a latency-critical one.
    let bulk = gs.submit(2, &[spec(1, Class::Bulk, 20_000)])?;
    msleep(3);
    let lc = gs.submit(3, &[spec(1, Class::Latency, 200)])?;
    aikrs_expect!(t, wait_all(&bulk) && wait_all(&lc));
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
    let pre = st.preemptions.load(Ordering::Relaxed);
    aikrs_expect!(t, pre >= 1, "the bulk job was not preempted");
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
        teardown_in_flight,
        bad_input,
        tracepoints
    ]
);
