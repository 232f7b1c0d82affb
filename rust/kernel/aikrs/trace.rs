// SPDX-License-Identifier: GPL-2.0

//! The tracepoints of the gang-aware drm_sched layer (event system `aikrs_gang`).
//!
//! The events are defined in C (`rust/aikrs_gang_trace.h`, instantiated by the built-in
//! `rust/aikrs_drm.c`) and appear in tracefs as `events/aikrs_gang/*`:
//!
//! | event                | raised when                                                |
//! |----------------------|------------------------------------------------------------|
//! | `aikrs_gang_start`   | the last member of a gang starts; `skew_ns` since the first |
//! | `aikrs_gang_barrier` | a gang member is released; `wait_ns` at the gang barrier    |
//! | `aikrs_gang_preempt` | a job stops at a preemption point                           |
//! | `aikrs_gang_timeout` | drm_sched's timeout handler fires for a job                 |
//!
//! Each function below is one call and, while its event is off, one static-key test.
//! [`Recorder`] attaches an in-kernel probe that counts the events, for tests.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{to_result, Result},
    types::Opaque,
};

/// Raises `aikrs_gang_start`: the last of `members` members of a gang started, job `job`
/// on ring `ring`, `skew_ns` after the first member.
#[inline]
pub fn gang_start(ring: u32, job: u64, members: u32, skew_ns: u64) {
    // SAFETY: The function takes plain values only.
    unsafe { bindings::aikrs_trace_gang_start(ring, job, members, skew_ns) }
}

/// Raises `aikrs_gang_barrier`: gang member `job` of ring `ring` was released `wait_ns`
/// after its last dependency was met.
#[inline]
pub fn gang_barrier(ring: u32, job: u64, wait_ns: u64) {
    // SAFETY: The function takes plain values only.
    unsafe { bindings::aikrs_trace_gang_barrier(ring, job, wait_ns) }
}

/// Raises `aikrs_gang_preempt`: job `job` on ring `ring` stopped at a preemption point
/// after running `ran_ns` in this slice, with `left_ns` of its run time left.
#[inline]
pub fn preempt(ring: u32, job: u64, ran_ns: u64, left_ns: u64) {
    // SAFETY: The function takes plain values only.
    unsafe { bindings::aikrs_trace_gang_preempt(ring, job, ran_ns, left_ns) }
}

/// Raises `aikrs_gang_timeout`: drm_sched's timeout handler fired for job `job` on ring
/// `ring` (`gang`: the job is a gang member).
#[inline]
pub fn timeout(ring: u32, job: u64, gang: bool) {
    // SAFETY: The function takes plain values only.
    unsafe { bindings::aikrs_trace_gang_timeout(ring, job, gang) }
}

/// What a [`Recorder`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// `aikrs_gang_start` events.
    GangStarts,
    /// The sum of their `skew_ns`.
    GangSkewNs,
    /// `aikrs_gang_barrier` events.
    BarrierReleases,
    /// The sum of their `wait_ns`.
    BarrierWaitNs,
    /// `aikrs_gang_preempt` events.
    Preemptions,
    /// `aikrs_gang_timeout` events.
    Timeouts,
}

impl Count {
    fn index(self) -> u32 {
        match self {
            Count::GangStarts => bindings::AIKRS_TRACE_GANG_START,
            Count::GangSkewNs => bindings::AIKRS_TRACE_GANG_SKEW_NS,
            Count::BarrierReleases => bindings::AIKRS_TRACE_GANG_BARRIER,
            Count::BarrierWaitNs => bindings::AIKRS_TRACE_GANG_BARRIER_NS,
            Count::Preemptions => bindings::AIKRS_TRACE_GANG_PREEMPT,
            Count::Timeouts => bindings::AIKRS_TRACE_GANG_TIMEOUT,
        }
    }
}

/// An in-kernel probe on the `aikrs_gang` tracepoints that counts their events (from
/// every raiser in the system, while it is attached).
///
/// # Invariants
///
/// `self.rec` is registered as the probes' data from `new` until `drop`, which
/// unregisters it and waits until no probe can run on it before it is freed.
pub struct Recorder {
    rec: KBox<Opaque<bindings::aikrs_trace_recorder>>,
}

impl Recorder {
    /// Attaches the probes. Fails with `EOPNOTSUPP` ([`eopnotsupp`](super::compat::eopnotsupp)) in a kernel without tracepoints
    /// (`CONFIG_TRACEPOINTS`), or with the error of the probe registration.
    pub fn new() -> Result<Self> {
        let rec = KBox::new(Opaque::uninit(), GFP_KERNEL)?;
        // SAFETY: `rec.get()` is valid for writes (attach zeroes it before use) and
        // stays at this address until `drop` detaches it (the box is never moved out).
        to_result(unsafe { bindings::aikrs_trace_recorder_attach(rec.get()) })?;
        Ok(Self { rec })
    }

    /// The count of `what` so far.
    pub fn get(&self, what: Count) -> u64 {
        // SAFETY: `self.rec` was initialised by attach (type invariant).
        unsafe { bindings::aikrs_trace_recorder_read(self.rec.get(), what.index()) }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // SAFETY: `self.rec` is attached (type invariant); detach returns once no probe
        // can use it, so the box may be freed afterwards.
        unsafe { bindings::aikrs_trace_recorder_detach(self.rec.get()) }
    }
}
