// SPDX-License-Identifier: GPL-2.0

//! The gang scheduling policy: decides when the jobs of submitted batches are handed to the
//! hardware ([`Policy`]).
//!
//! This file is shared verbatim by the host crate `aikrs-gang-core` (tests) and by the
//! kernel module, which includes it with `#[path]`. It therefore uses nothing but `core`,
//! refers to no other file, has no crate-level attributes, no `unsafe`, no floating point,
//! no allocation, no recursion, and no operation that can panic on any argument of the
//! public API: the storage and the fixed tables are only accessed through bounds-checked
//! `get`/`get_mut`, counters use saturating arithmetic, and bit positions are checked.
//!
//! # Model
//!
//! A GPU has `rings` rings (`1..=MAX_RINGS`). Jobs come in batches of up to [`MAX_BATCH`]
//! [`Spec`]s. A job runs on one ring, has a priority [`Class`], may belong to a *gang* (jobs
//! on distinct rings of one class that start all-or-nothing), may depend on other jobs of
//! its batch (a bitmask of batch indices) and on external fences. [`Policy::poll`] decides
//! which jobs to release (emitting [`Event::Release`]); the glue reports completions with
//! [`Policy::ext_done`] and [`Policy::finished`], which also cascade failures
//! ([`Event::Fail`], [`Event::Cancel`]).
//!
//! A job is *ready* when its external fences were all reported ok and its dependencies all
//! finished ok. A gang is ready when all its members are. [`Policy::poll`]:
//!
//! 1. visits the ready gangs by class (highest first), then in submission order. A gang whose
//!    context has an older unreleased gang is skipped. Otherwise it *claims* each of its rings
//!    that no gang claimed earlier in this poll, and if it claimed all of them and none of them
//!    has a job in flight, all its members are released (consecutive events);
//! 2. then, per ring, per class from [`Class::Kernel`] down to [`Class::Bulk`], releases ready
//!    solo jobs in the order they became ready, and stops at the ring's first job that may not
//!    go: a job of class `c` goes if no gang of class `>= c` claimed the ring in this poll and
//!    every job in flight on the ring is of a class that `c` [preempts](Class::preempts). As a
//!    job that may not go also stops every lower class (a lower class preempts no more and is
//!    blocked by the same claims), at most one [`Stats::claim_holds`] is counted per ring and
//!    poll.
//!
//! # Submission order of gangs
//!
//! Gangs of one batch are ordered by their depth in the batch's dependency graph (with every
//! gang contracted to one node; the depth is the longest dependency path to the node), then by
//! the index of their first member: a topological order, so that the per-context order never
//! makes a gang wait for a gang that depends on it. Batches are ordered by submission.
//!
//! # Failures
//!
//! A job that fails (an external fence with an error, a release that finished with an error,
//! a failed dependency, a failed gang member) fails, transitively, every job of its batch that
//! depends on it and every other member of its gang: unreleased jobs get [`Event::Fail`] (their
//! slots are freed), jobs in flight get [`Event::Cancel`] and come back through
//! [`Policy::finished`] later. Members of a gang that already finished ok stay finished and
//! their dependents are not failed by the gang.
//!
//! # Storage and complexity
//!
//! Every job lives in one [`Slot`] of the caller's storage; the slots also hold the intrusive
//! lists (`u32` indexes): the free list, one ready FIFO per ring and class, one list of ready
//! gangs per class sorted by submission order, the live jobs of each batch (in batch-index
//! order), the members of each gang, the unreleased gangs of each context (oldest first) and a
//! hash table of those gangs by context (the slots double as its buckets). A gang's record
//! lives in the slot of its first member (its *leader*), which is therefore only freed when the
//! last member finished or failed.
//!
//! - [`Policy::poll`]: `O(ready gangs x gang width + rings x classes + released)`;
//! - [`Policy::submit`]: `O(batch^2)` word operations for validation (at most `64 x 64`), then
//!   `O(batch)` plus one hash lookup per gang (expected `O(1)`: the table has one bucket per
//!   slot);
//! - [`Policy::ext_done`] and [`Policy::finished`]: `O(batch)` (a walk of the batch's live jobs
//!   to satisfy or fail dependents), plus, when a gang becomes ready, the insertion in its
//!   class's ready list (walks back past the younger ready gangs, usually none);
//! - [`Policy::new`] and [`Policy::abort_all`]: `O(capacity)`; everything else `O(1)`.

/// The maximum number of rings of a GPU.
pub const MAX_RINGS: usize = 16;

/// The maximum number of jobs of one batch.
pub const MAX_BATCH: usize = 64;

/// The "no slot" index of the intrusive lists.
const NIL: u32 = u32::MAX;

/// Gang flag: in its class's ready list.
const QUEUED: u8 = 1;
/// Gang flag: released.
const RELEASED: u8 = 2;
/// Gang flag: failed.
const FAILED: u8 = 4;

/// "No claim" in the per-poll claim table.
const NO_CLAIM: u8 = u8::MAX;

/// Priority classes, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Class {
    /// Background work; preemptible by [`Class::Latency`] and [`Class::Kernel`].
    Bulk = 0,
    /// Ordinary work.
    Normal = 1,
    /// Latency-sensitive work; may preempt [`Class::Bulk`].
    Latency = 2,
    /// Work of the kernel itself; may preempt [`Class::Bulk`].
    Kernel = 3,
}

impl Class {
    /// The number of classes.
    pub const COUNT: usize = 4;

    /// The class of value `v` (`0..=3`), `None` for any other value.
    pub fn from_u32(v: u32) -> Option<Class> {
        match v {
            0 => Some(Class::Bulk),
            1 => Some(Class::Normal),
            2 => Some(Class::Latency),
            3 => Some(Class::Kernel),
            _ => None,
        }
    }

    /// Whether a job of class `self` may be released onto a ring on which a job of class
    /// `running` is in flight (the hardware then preempts `running` at its next preemption
    /// point): only Latency and Kernel preempt, and only Bulk is preemptible.
    pub fn preempts(self, running: Class) -> bool {
        self >= Class::Latency && running == Class::Bulk
    }

    /// The class of index `i` (any value above 3 is Kernel).
    fn of_index(i: usize) -> Class {
        match i {
            0 => Class::Bulk,
            1 => Class::Normal,
            2 => Class::Latency,
            _ => Class::Kernel,
        }
    }
}

/// One job of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The ring the job runs on (`< rings`).
    pub ring: u32,
    /// The priority class.
    pub class: Class,
    /// Gang label within the batch (`Some(g)`: all specs with the same label form one gang).
    pub gang: Option<u8>,
    /// Bit i set: this job runs only after batch job i finished successfully.
    pub deps: u64,
    /// Number of external fences this job waits for (reported with `ext_done`).
    pub ext: u32,
}

/// A job: the index of its slot in the caller's storage.
pub type JobId = u32;

/// Why [`Policy::new`] or [`Policy::submit`] refused (nothing changed).
///
/// [`Policy::submit`] checks in this order and reports the first failure: `Empty`, `TooBig`,
/// `BadRing`, `BadDep`, `TooWide`, `DuplicateRing`, `MixedClass`, `Cycle`, `NoSpace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A batch with no spec.
    Empty,
    /// More than [`MAX_BATCH`] specs, or fewer ids than specs.
    TooBig,
    /// A ring `>= rings` (or, for [`Policy::new`], `rings` outside `1..=MAX_RINGS`).
    BadRing,
    /// A gang with more members than rings.
    TooWide,
    /// Two members of one gang on the same ring.
    DuplicateRing,
    /// Members of one gang with different classes.
    MixedClass,
    /// A dependency bit `>=` the batch length.
    BadDep,
    /// A self-dependency or any cycle in the batch graph where each gang is contracted to one
    /// node (so a member depending on another member of its own gang is a cycle: an
    /// all-or-nothing start cannot wait for a member's end).
    Cycle,
    /// Not enough free slots for the batch.
    NoSpace,
}

/// What the glue must do (emitted through a caller closure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Hand the job to the hardware now (push it to its ring's drm_sched entity).
    /// Members of one gang are emitted consecutively in one `poll` call, never partially.
    Release(JobId),
    /// The job was released and is in flight but must be aborted (its gang or a dependency
    /// failed, or `abort_all`): the glue stops it in the GPU; it later comes back through
    /// `finished(job, false)`.
    Cancel(JobId),
    /// The job never reached the hardware and never will (a dependency failed, its gang
    /// failed, an external fence failed, or `abort_all`): the glue signals its fence with an
    /// error. Its slot is free again.
    Fail(JobId),
}

/// The life of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not in use.
    Free,
    /// Waiting for external fences or dependencies.
    Waiting,
    /// Ready (solo: in its ring/class FIFO; gang member: counted by its gang).
    Ready,
    /// Released, in flight.
    Running,
    /// Released, in flight, cancelled (its failure was already cascaded).
    Cancelled,
    /// Finished with an error, during the cascade of [`Policy::finished`].
    Finishing,
    /// A gang leader whose job is over but whose gang still has live members.
    Zombie,
}

/// Per-slot storage element (opaque).
///
/// The caller provides the storage as `S: AsRef<[Slot]> + AsMut<[Slot]>` (host: a `Vec` or
/// an array; kernel: a `KVec` wrapper), initialised with [`Slot::default`].
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The state of the job in the slot.
    state: State,
    /// The job's ring.
    ring: u8,
    /// The job's class.
    class: Class,
    /// The job's index in its batch.
    index: u8,
    /// External fences not yet reported.
    ext: u32,
    /// Batch indices of the dependencies that did not finish yet.
    deps: u64,
    /// Batch indices of the jobs that depend on this one.
    dependents: u64,
    /// The gang's leader slot, `NIL` for a solo job.
    gang: u32,
    /// Free list / ready FIFO links.
    next: u32,
    /// Ready FIFO link.
    prev: u32,
    /// Next live job of the batch (batch-index order).
    bnext: u32,
    /// Previous live job of the batch.
    bprev: u32,
    /// Next member of the gang (valid until the gang is released).
    mnext: u32,
    /// Head of the context hash bucket whose number is this slot's index.
    bucket: u32,
    /// The gang record (valid in a leader's slot).
    g: Gang,
}

/// The record of a gang, in its leader's slot.
#[derive(Clone, Copy, Debug)]
struct Gang {
    /// Submission order.
    seq: u64,
    /// Batch indices of the members.
    members: u64,
    /// The submitting context.
    ctx: u32,
    /// Ready-list links.
    next: u32,
    /// Ready-list link.
    prev: u32,
    /// Next younger unreleased gang of the context.
    cnext: u32,
    /// Next older unreleased gang of the context (`NIL`: the oldest).
    cprev: u32,
    /// Hash chain links.
    hnext: u32,
    /// Hash chain link.
    hprev: u32,
    /// The rings of the members.
    rings: u16,
    /// The number of members.
    width: u8,
    /// The number of ready members.
    ready: u8,
    /// The number of members not yet finished or failed.
    live: u8,
    /// `QUEUED`, `RELEASED`, `FAILED`.
    flags: u8,
}

impl Gang {
    /// An empty record.
    const EMPTY: Gang = Gang {
        seq: 0,
        members: 0,
        ctx: 0,
        next: NIL,
        prev: NIL,
        cnext: NIL,
        cprev: NIL,
        hnext: NIL,
        hprev: NIL,
        rings: 0,
        width: 0,
        ready: 0,
        live: 0,
        flags: 0,
    };
}

impl Slot {
    /// A free slot (keeping the hash bucket `bucket`).
    const fn free(bucket: u32) -> Slot {
        Slot {
            state: State::Free,
            ring: 0,
            class: Class::Bulk,
            index: 0,
            ext: 0,
            deps: 0,
            dependents: 0,
            gang: NIL,
            next: NIL,
            prev: NIL,
            bnext: NIL,
            bprev: NIL,
            mnext: NIL,
            bucket,
            g: Gang::EMPTY,
        }
    }

    /// Whether the slot holds a job that is not over.
    fn live(&self) -> bool {
        matches!(
            self.state,
            State::Waiting | State::Ready | State::Running | State::Cancelled | State::Finishing
        )
    }
}

impl Default for Slot {
    fn default() -> Self {
        Slot::free(NIL)
    }
}

/// Counters of a [`Policy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Jobs accepted by [`Policy::submit`].
    pub submitted: u64,
    /// [`Event::Release`] events.
    pub released: u64,
    /// Gangs released.
    pub gangs_released: u64,
    /// Accepted [`Policy::finished`] calls.
    pub finished: u64,
    /// [`Event::Fail`] events.
    pub failed: u64,
    /// [`Event::Cancel`] events.
    pub cancelled: u64,
    /// Times a solo job was held back because its ring was claimed by a gang (at most one
    /// per ring and poll).
    pub claim_holds: u64,
    /// Releases that will preempt a running Bulk job.
    pub preempting_releases: u64,
}

/// The bit of batch index `i` (0 for `i >= 64`).
fn bit(i: u32) -> u64 {
    1u64.checked_shl(i).unwrap_or(0)
}

/// The gang scheduling policy over the caller's slot storage `S`.
#[derive(Debug)]
pub struct Policy<S> {
    /// The slots.
    slots: S,
    /// The number of usable slots (`<= slots.len()`, `< NIL`).
    cap: u32,
    /// The number of rings.
    rings: u32,
    /// Head of the free list.
    free_head: u32,
    /// The number of free slots.
    free: u32,
    /// Submission order of the next batch's gangs.
    seq: u64,
    /// Jobs in flight per ring and class.
    flight: [[u32; Class::COUNT]; MAX_RINGS],
    /// Ready FIFO heads per ring and class.
    fifo_head: [[u32; Class::COUNT]; MAX_RINGS],
    /// Ready FIFO tails per ring and class.
    fifo_tail: [[u32; Class::COUNT]; MAX_RINGS],
    /// Ready gang list heads per class.
    gang_head: [u32; Class::COUNT],
    /// Ready gang list tails per class.
    gang_tail: [u32; Class::COUNT],
    /// The counters.
    stats: Stats,
}

impl<S: AsRef<[Slot]> + AsMut<[Slot]>> Policy<S> {
    /// A policy for `rings` rings (`1..=MAX_RINGS`, else `Err(BadRing)`) keeping its jobs in
    /// `slots`; all slots start free (their contents are overwritten). The capacity is
    /// `slots.len()` (at most `u32::MAX - 1`).
    pub fn new(slots: S, rings: u32) -> Result<Self, Error> {
        if rings == 0 || rings as usize > MAX_RINGS {
            return Err(Error::BadRing);
        }
        let mut p = Policy {
            slots,
            cap: 0,
            rings,
            free_head: NIL,
            free: 0,
            seq: 0,
            flight: [[0; Class::COUNT]; MAX_RINGS],
            fifo_head: [[NIL; Class::COUNT]; MAX_RINGS],
            fifo_tail: [[NIL; Class::COUNT]; MAX_RINGS],
            gang_head: [NIL; Class::COUNT],
            gang_tail: [NIL; Class::COUNT],
            stats: Stats::default(),
        };
        let len = p.slots.as_ref().len();
        p.cap = u32::try_from(len).unwrap_or(NIL - 1).min(NIL - 1);
        for j in (0..p.cap).rev() {
            let head = p.free_head;
            if let Some(s) = p.get_mut(j) {
                *s = Slot::free(NIL);
                s.next = head;
            }
            p.free_head = j;
        }
        p.free = p.cap;
        Ok(p)
    }

    /// The number of rings.
    pub fn rings(&self) -> u32 {
        self.rings
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The number of free slots (a finished gang leader's slot is only free once its whole
    /// gang finished or failed).
    pub fn free_slots(&self) -> usize {
        self.free as usize
    }

    /// The number of jobs released and not finished on `ring` (0 for a bad ring).
    pub fn in_flight(&self, ring: u32) -> u32 {
        match self.flight.get(ring as usize) {
            Some(f) if ring < self.rings => f.iter().fold(0u32, |a, &b| a.saturating_add(b)),
            _ => 0,
        }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The gang of a job: `Some(leader)` shared by all members, `None` for a solo job or a
    /// slot without a job.
    pub fn gang_of(&self, job: JobId) -> Option<JobId> {
        match self.get(job) {
            Some(s) if s.live() && s.gang != NIL => Some(s.gang),
            _ => None,
        }
    }

    /// Validates the whole batch first (any error: nothing changes), then allocates one slot
    /// per spec, writing the job ids into `ids[..specs.len()]` (`ids.len() < specs.len()`:
    /// `Err(TooBig)`). See [`Error`] for the order of the checks.
    ///
    /// `ctx` names the submitting context: gangs of one context are released in submission
    /// order (a gang is never released while an older gang of the same context is
    /// unreleased). Jobs whose deps and ext are all zero are immediately ready.
    pub fn submit(&mut self, ctx: u32, specs: &[Spec], ids: &mut [JobId]) -> Result<(), Error> {
        let n = specs.len();
        if n == 0 {
            return Err(Error::Empty);
        }
        if n > MAX_BATCH || ids.len() < n {
            return Err(Error::TooBig);
        }
        // `n <= 64`: the batch indices fit in `u32`, `u8` and the bits of a `u64`.
        let all: u64 = if n == MAX_BATCH {
            u64::MAX
        } else {
            bit(n as u32).wrapping_sub(1)
        };
        if specs.iter().any(|s| s.ring >= self.rings) {
            return Err(Error::BadRing);
        }
        if specs.iter().any(|s| s.deps & !all != 0) {
            return Err(Error::BadDep);
        }

        // `rep[i]`: the first index of `i`'s gang (`i` for a solo job).
        let mut rep = [0u8; MAX_BATCH];
        for (i, s) in specs.iter().enumerate() {
            let first = match s.gang {
                Some(label) => specs
                    .iter()
                    .position(|t| t.gang == Some(label))
                    .unwrap_or(i),
                None => i,
            };
            if let Some(r) = rep.get_mut(i) {
                *r = first as u8;
            }
        }
        let rep_of = |i: usize| rep.get(i).map_or(i, |&r| r as usize);
        let is_gang = |i: usize| specs.get(i).is_some_and(|s| s.gang.is_some());

        // Gang widths, then rings, then classes.
        let mut width = [0u8; MAX_BATCH];
        for i in 0..n {
            if let Some(w) = width.get_mut(rep_of(i)) {
                *w = w.saturating_add(1);
            }
        }
        if (0..n).any(|i| is_gang(i) && u32::from(width.get(i).copied().unwrap_or(0)) > self.rings)
        {
            return Err(Error::TooWide);
        }
        let mut rings = [0u16; MAX_BATCH];
        for (i, s) in specs.iter().enumerate() {
            if let Some(m) = rings.get_mut(rep_of(i)) {
                let b = 1u16.checked_shl(s.ring).unwrap_or(0);
                if s.gang.is_some() && *m & b != 0 {
                    return Err(Error::DuplicateRing);
                }
                *m |= b;
            }
        }
        for (i, s) in specs.iter().enumerate() {
            if specs.get(rep_of(i)).is_some_and(|r| r.class != s.class) {
                return Err(Error::MixedClass);
            }
        }

        // The contracted graph: node = representative; `cdeps[r]`: the nodes `r` waits for.
        let mut cdeps = [0u64; MAX_BATCH];
        let mut nodes = 0u64;
        for (i, s) in specs.iter().enumerate() {
            let r = rep_of(i);
            nodes |= bit(r as u32);
            let mut d = s.deps;
            while d != 0 {
                let j = d.trailing_zeros();
                d &= d - 1;
                if let Some(c) = cdeps.get_mut(r) {
                    *c |= bit(rep_of(j as usize) as u32);
                }
            }
        }
        // Kahn's algorithm by rounds: round `d` removes the nodes whose dependencies all were
        // removed before, so `depth[r] = d` is the longest path to `r` (a self-loop never
        // goes). At most 64 rounds of at most 64 nodes.
        let mut depth = [0u8; MAX_BATCH];
        let mut left = nodes;
        let mut round = 0u8;
        while left != 0 {
            let mut go = 0u64;
            let mut m = left;
            while m != 0 {
                let r = m.trailing_zeros();
                m &= m - 1;
                if cdeps.get(r as usize).map_or(0, |&c| c & left) == 0 {
                    go |= bit(r);
                    if let Some(d) = depth.get_mut(r as usize) {
                        *d = round;
                    }
                }
            }
            if go == 0 {
                return Err(Error::Cycle);
            }
            left &= !go;
            round = round.saturating_add(1);
        }
        if (self.free as usize) < n {
            return Err(Error::NoSpace);
        }

        // Allocate (cannot fail: `free >= n`, the free list holds `free` slots).
        for id in ids.iter_mut().take(n) {
            let j = self.free_head;
            let next = self.get(j).map_or(NIL, |s| s.next);
            *id = j;
            self.free_head = next;
            self.free = self.free.saturating_sub(1);
        }
        let ids: &[JobId] = ids;
        let id = |i: usize| ids.get(i).copied().unwrap_or(NIL);

        let base = self.seq;
        self.seq = self.seq.saturating_add((MAX_BATCH * MAX_BATCH) as u64);
        for (i, s) in specs.iter().enumerate() {
            let j = id(i);
            let r = rep_of(i);
            let mut dependents = 0u64;
            for (k, t) in specs.iter().enumerate() {
                if t.deps & bit(i as u32) != 0 {
                    dependents |= bit(k as u32);
                }
            }
            let mnext = if s.gang.is_some() {
                (i + 1..n).find(|&k| rep_of(k) == r).map_or(NIL, id)
            } else {
                NIL
            };
            let gang = if s.gang.is_some() { id(r) } else { NIL };
            let mut g = Gang::EMPTY;
            if s.gang.is_some() && r == i {
                let w = width.get(r).copied().unwrap_or(0);
                let d = depth.get(r).copied().unwrap_or(0);
                g.seq = base
                    .saturating_add(u64::from(d) * MAX_BATCH as u64)
                    .saturating_add(r as u64);
                g.members = (0..n)
                    .filter(|&k| rep_of(k) == r)
                    .fold(0u64, |m, k| m | bit(k as u32));
                g.ctx = ctx;
                g.rings = rings.get(r).copied().unwrap_or(0);
                g.width = w;
                g.live = w;
            }
            if let Some(slot) = self.get_mut(j) {
                let bucket = slot.bucket;
                *slot = Slot {
                    state: State::Waiting,
                    ring: s.ring as u8,
                    class: s.class,
                    index: i as u8,
                    ext: s.ext,
                    deps: s.deps,
                    dependents,
                    gang,
                    next: NIL,
                    prev: NIL,
                    bnext: if i + 1 < n { id(i + 1) } else { NIL },
                    bprev: if i > 0 { id(i - 1) } else { NIL },
                    mnext,
                    bucket,
                    g,
                };
            }
        }
        // Link the gangs into their context's order, oldest first.
        for d in 0..round {
            for r in 0..n {
                if is_gang(r) && rep_of(r) == r && depth.get(r) == Some(&d) {
                    self.ctx_link(id(r), ctx);
                }
            }
        }
        for (i, s) in specs.iter().enumerate() {
            if s.deps == 0 && s.ext == 0 {
                self.make_ready(id(i));
            }
        }
        self.stats.submitted = self.stats.submitted.saturating_add(n as u64);
        Ok(())
    }

    /// One external fence of `job` signalled; `ok == false`: it signalled an error, so the
    /// job fails ([`Event::Fail`]), and with it its whole gang and, transitively, every job
    /// depending on a failed job. Unknown, free or released job, or no external fence
    /// pending: ignored (returns `false`), else `true`.
    pub fn ext_done(&mut self, job: JobId, ok: bool, emit: &mut impl FnMut(Event)) -> bool {
        let s = match self.get(job) {
            Some(s) if s.state == State::Waiting && s.ext > 0 => *s,
            _ => return false,
        };
        if ok {
            let ext = s.ext.saturating_sub(1);
            if let Some(m) = self.get_mut(job) {
                m.ext = ext;
            }
            if ext == 0 && s.deps == 0 {
                self.make_ready(job);
            }
        } else {
            self.cascade(job, bit(u32::from(s.index)), emit);
        }
        true
    }

    /// A released job finished (`ok`: its fence signalled without error). Frees its slot (a
    /// gang's record lives in its leader's slot until its last member finished or failed),
    /// decrements the ring's in-flight count and satisfies the job's dependents. `ok ==
    /// false` fails its gang ([`Event::Cancel`] for members still in flight, which come back
    /// through `finished(_, false)` themselves, [`Event::Fail`] for the others) and its
    /// dependents ([`Event::Fail`]). A cancelled job only frees its slot, whatever `ok`.
    /// Unknown or not released job: ignored, returns `false`.
    pub fn finished(&mut self, job: JobId, ok: bool, emit: &mut impl FnMut(Event)) -> bool {
        let s = match self.get(job) {
            Some(s) if matches!(s.state, State::Running | State::Cancelled) => *s,
            _ => return false,
        };
        if let Some(f) = self
            .flight
            .get_mut(s.ring as usize)
            .and_then(|f| f.get_mut(s.class as usize))
        {
            *f = f.saturating_sub(1);
        }
        self.stats.finished = self.stats.finished.saturating_add(1);
        if s.state == State::Running {
            if ok {
                self.satisfy(job, &s);
            } else {
                if let Some(m) = self.get_mut(job) {
                    m.state = State::Finishing;
                }
                self.cascade(job, bit(u32::from(s.index)), emit);
            }
        }
        self.retire(job);
        true
    }

    /// Decides releases now and emits [`Event::Release`] for each (see the module
    /// documentation for the rules); returns their number. Call after every submit, ext_done
    /// and finished.
    pub fn poll(&mut self, emit: &mut impl FnMut(Event)) -> usize {
        let mut claim = [NO_CLAIM; MAX_RINGS];
        let mut released = 0usize;

        // 1. Gangs.
        for c in (0..Class::COUNT).rev() {
            let mut g = self.gang_head.get(c).copied().unwrap_or(NIL);
            while let Some(s) = self.get(g) {
                let next = s.g.next;
                if s.g.cprev == NIL {
                    let mut all = true;
                    let mut idle = true;
                    let mut m = s.g.rings;
                    while m != 0 {
                        let r = m.trailing_zeros() as usize;
                        m &= m - 1;
                        match claim.get_mut(r) {
                            Some(k) if *k == NO_CLAIM => *k = c as u8,
                            _ => all = false,
                        }
                        if self.in_flight(r as u32) != 0 {
                            idle = false;
                        }
                    }
                    if all && idle {
                        released = released.saturating_add(self.release_gang(g, emit));
                    }
                }
                g = next;
            }
        }

        // 2. Solo jobs.
        for r in 0..(self.rings as usize).min(MAX_RINGS) {
            let claimed = claim.get(r).copied().unwrap_or(NO_CLAIM);
            'ring: for c in (0..Class::COUNT).rev() {
                let class = Class::of_index(c);
                loop {
                    let j = self
                        .fifo_head
                        .get(r)
                        .and_then(|h| h.get(c))
                        .copied()
                        .unwrap_or(NIL);
                    if j == NIL {
                        break;
                    }
                    if claimed != NO_CLAIM && claimed as usize >= c {
                        self.stats.claim_holds = self.stats.claim_holds.saturating_add(1);
                        break 'ring;
                    }
                    let flight = self.flight.get(r).copied().unwrap_or_default();
                    let mut preempting = false;
                    for (k, &f) in flight.iter().enumerate() {
                        if f != 0 {
                            if !class.preempts(Class::of_index(k)) {
                                break 'ring;
                            }
                            preempting = true;
                        }
                    }
                    self.fifo_unlink(j);
                    self.start(j);
                    if preempting {
                        self.stats.preempting_releases =
                            self.stats.preempting_releases.saturating_add(1);
                    }
                    emit(Event::Release(j));
                    released = released.saturating_add(1);
                }
            }
        }
        released
    }

    /// Teardown: fails every unreleased job ([`Event::Fail`], slot freed) and cancels every
    /// job in flight that is not cancelled yet ([`Event::Cancel`]; each comes back through
    /// `finished`). `O(capacity)`.
    pub fn abort_all(&mut self, emit: &mut impl FnMut(Event)) {
        for j in 0..self.cap {
            let s = match self.get_mut(j) {
                Some(s) => {
                    s.bucket = NIL;
                    *s
                }
                None => continue,
            };
            match s.state {
                State::Waiting | State::Ready => {
                    self.gang_flag(s.gang, FAILED);
                    emit(Event::Fail(j));
                    self.stats.failed = self.stats.failed.saturating_add(1);
                    self.retire(j);
                }
                State::Running => {
                    self.gang_flag(s.gang, FAILED);
                    if let Some(m) = self.get_mut(j) {
                        m.state = State::Cancelled;
                    }
                    emit(Event::Cancel(j));
                    self.stats.cancelled = self.stats.cancelled.saturating_add(1);
                }
                _ => {}
            }
        }
        self.fifo_head = [[NIL; Class::COUNT]; MAX_RINGS];
        self.fifo_tail = [[NIL; Class::COUNT]; MAX_RINGS];
        self.gang_head = [NIL; Class::COUNT];
        self.gang_tail = [NIL; Class::COUNT];
    }

    // -----------------------------------------------------------------------------------
    // Internals.

    /// The slot `j` (`None` for `NIL` or out of range).
    fn get(&self, j: u32) -> Option<&Slot> {
        if j >= self.cap {
            return None;
        }
        self.slots.as_ref().get(j as usize)
    }

    /// The slot `j`, mutably.
    fn get_mut(&mut self, j: u32) -> Option<&mut Slot> {
        if j >= self.cap {
            return None;
        }
        self.slots.as_mut().get_mut(j as usize)
    }

    /// Sets `flag` in the record of the gang led by `leader` (nothing for `NIL`).
    fn gang_flag(&mut self, leader: u32, flag: u8) {
        if let Some(l) = self.get_mut(leader) {
            l.g.flags |= flag;
        }
    }

    /// Marks job `j` in flight (state and counters).
    fn start(&mut self, j: u32) {
        let Some(s) = self.get_mut(j) else {
            return;
        };
        s.state = State::Running;
        let (r, c) = (s.ring as usize, s.class as usize);
        if let Some(f) = self.flight.get_mut(r).and_then(|f| f.get_mut(c)) {
            *f = f.saturating_add(1);
        }
        self.stats.released = self.stats.released.saturating_add(1);
    }

    /// Releases the gang led by `leader` (all members, consecutively); returns the number of
    /// members.
    fn release_gang(&mut self, leader: u32, emit: &mut impl FnMut(Event)) -> usize {
        self.gang_unlink(leader);
        self.ctx_unlink(leader);
        let mut count = 0usize;
        let mut m = leader;
        while let Some(s) = self.get(m) {
            let next = s.mnext;
            self.start(m);
            emit(Event::Release(m));
            count = count.saturating_add(1);
            m = next;
        }
        self.gang_flag(leader, RELEASED);
        self.stats.gangs_released = self.stats.gangs_released.saturating_add(1);
        count
    }

    /// Job `j` became ready: queue it (solo) or count it in its gang, queueing the gang when
    /// it is complete.
    fn make_ready(&mut self, j: u32) {
        let Some(s) = self.get_mut(j) else {
            return;
        };
        s.state = State::Ready;
        let s = *s;
        if s.gang == NIL {
            self.fifo_push(j, s.ring as usize, s.class as usize);
            return;
        }
        let leader = s.gang;
        let Some(l) = self.get_mut(leader) else {
            return;
        };
        l.g.ready = l.g.ready.saturating_add(1);
        if l.g.ready == l.g.width && l.g.flags & (QUEUED | RELEASED | FAILED) == 0 {
            l.g.flags |= QUEUED;
            let (seq, c) = (l.g.seq, l.class as usize);
            self.gang_insert(leader, seq, c);
        }
    }

    /// Appends solo job `j` to the ready FIFO of ring `r`, class `c`.
    fn fifo_push(&mut self, j: u32, r: usize, c: usize) {
        let Some(tail) = self.fifo_tail.get(r).and_then(|t| t.get(c)).copied() else {
            return;
        };
        if let Some(s) = self.get_mut(j) {
            s.next = NIL;
            s.prev = tail;
        }
        match self.get_mut(tail) {
            Some(t) => t.next = j,
            None => {
                if let Some(h) = self.fifo_head.get_mut(r).and_then(|h| h.get_mut(c)) {
                    *h = j;
                }
            }
        }
        if let Some(t) = self.fifo_tail.get_mut(r).and_then(|t| t.get_mut(c)) {
            *t = j;
        }
    }

    /// Removes solo job `j` from its ready FIFO.
    fn fifo_unlink(&mut self, j: u32) {
        let Some(s) = self.get(j).copied() else {
            return;
        };
        let (r, c) = (s.ring as usize, s.class as usize);
        match self.get_mut(s.prev) {
            Some(p) => p.next = s.next,
            None => {
                if let Some(h) = self.fifo_head.get_mut(r).and_then(|h| h.get_mut(c)) {
                    *h = s.next;
                }
            }
        }
        match self.get_mut(s.next) {
            Some(n) => n.prev = s.prev,
            None => {
                if let Some(t) = self.fifo_tail.get_mut(r).and_then(|t| t.get_mut(c)) {
                    *t = s.prev;
                }
            }
        }
        if let Some(s) = self.get_mut(j) {
            s.next = NIL;
            s.prev = NIL;
        }
    }

    /// Inserts the gang led by `leader` into the ready list of class `c`, sorted by `seq`.
    fn gang_insert(&mut self, leader: u32, seq: u64, c: usize) {
        let Some(&tail) = self.gang_tail.get(c) else {
            return;
        };
        // The last gang older than this one.
        let mut after = tail;
        while let Some(s) = self.get(after) {
            if s.g.seq < seq {
                break;
            }
            after = s.g.prev;
        }
        let before = match self.get(after) {
            Some(s) => s.g.next,
            None => self.gang_head.get(c).copied().unwrap_or(NIL),
        };
        if let Some(l) = self.get_mut(leader) {
            l.g.prev = after;
            l.g.next = before;
        }
        match self.get_mut(after) {
            Some(a) => a.g.next = leader,
            None => {
                if let Some(h) = self.gang_head.get_mut(c) {
                    *h = leader;
                }
            }
        }
        match self.get_mut(before) {
            Some(b) => b.g.prev = leader,
            None => {
                if let Some(t) = self.gang_tail.get_mut(c) {
                    *t = leader;
                }
            }
        }
    }

    /// Removes the gang led by `leader` from its class's ready list (if queued).
    fn gang_unlink(&mut self, leader: u32) {
        let Some(l) = self.get_mut(leader) else {
            return;
        };
        if l.g.flags & QUEUED == 0 {
            return;
        }
        l.g.flags &= !QUEUED;
        let (next, prev, c) = (l.g.next, l.g.prev, l.class as usize);
        l.g.next = NIL;
        l.g.prev = NIL;
        match self.get_mut(prev) {
            Some(p) => p.g.next = next,
            None => {
                if let Some(h) = self.gang_head.get_mut(c) {
                    *h = next;
                }
            }
        }
        match self.get_mut(next) {
            Some(n) => n.g.prev = prev,
            None => {
                if let Some(t) = self.gang_tail.get_mut(c) {
                    *t = prev;
                }
            }
        }
    }

    /// The hash bucket (a slot index) of context `ctx`.
    fn bucket_of(&self, ctx: u32) -> u32 {
        let h = (ctx ^ (ctx >> 16)).wrapping_mul(0x9e37_79b1);
        h.checked_rem(self.cap).unwrap_or(NIL)
    }

    /// Appends the new gang led by `leader` to the unreleased gangs of context `ctx`.
    fn ctx_link(&mut self, leader: u32, ctx: u32) {
        let b = self.bucket_of(ctx);
        let head = self.get(b).map_or(NIL, |s| s.bucket);
        // The newest unreleased gang of `ctx` (chains are newest first).
        let mut older = head;
        while let Some(s) = self.get(older) {
            if s.g.ctx == ctx {
                break;
            }
            older = s.g.hnext;
        }
        if let Some(o) = self.get_mut(older) {
            o.g.cnext = leader;
        }
        if let Some(l) = self.get_mut(leader) {
            l.g.cprev = older;
            l.g.cnext = NIL;
            l.g.hprev = NIL;
            l.g.hnext = head;
        }
        if let Some(h) = self.get_mut(head) {
            h.g.hprev = leader;
        }
        if let Some(s) = self.get_mut(b) {
            s.bucket = leader;
        }
    }

    /// Removes the gang led by `leader` from its context's order and from the hash table
    /// (released or failed).
    fn ctx_unlink(&mut self, leader: u32) {
        let Some(l) = self.get(leader).copied() else {
            return;
        };
        if let Some(p) = self.get_mut(l.g.cprev) {
            p.g.cnext = l.g.cnext;
        }
        if let Some(n) = self.get_mut(l.g.cnext) {
            n.g.cprev = l.g.cprev;
        }
        match self.get_mut(l.g.hprev) {
            Some(p) => p.g.hnext = l.g.hnext,
            None => {
                let b = self.bucket_of(l.g.ctx);
                if let Some(s) = self.get_mut(b) {
                    s.bucket = l.g.hnext;
                }
            }
        }
        if let Some(n) = self.get_mut(l.g.hnext) {
            n.g.hprev = l.g.hprev;
        }
        if let Some(m) = self.get_mut(leader) {
            m.g.cprev = NIL;
            m.g.cnext = NIL;
            m.g.hprev = NIL;
            m.g.hnext = NIL;
        }
    }

    /// The first live job of `j`'s batch.
    fn batch_head(&self, j: u32) -> u32 {
        let mut h = j;
        while let Some(s) = self.get(h) {
            if s.bprev == NIL {
                break;
            }
            h = s.bprev;
        }
        h
    }

    /// Job `s` (slot `j`) finished ok: its batch's jobs no longer wait for it.
    fn satisfy(&mut self, j: u32, s: &Slot) {
        if s.dependents == 0 {
            return;
        }
        let b = bit(u32::from(s.index));
        let mut k = self.batch_head(j);
        while let Some(t) = self.get_mut(k) {
            let next = t.bnext;
            if t.deps & b != 0 {
                t.deps &= !b;
                if t.deps == 0 && t.ext == 0 && t.state == State::Waiting {
                    self.make_ready(k);
                }
            }
            k = next;
        }
    }

    /// Fails the jobs of `j`'s batch whose indices are in `todo`, with their gangs and their
    /// dependents, transitively (`O(batch)`). `j` must be a live job of the batch.
    fn cascade(&mut self, j: u32, todo: u64, emit: &mut impl FnMut(Event)) {
        // The batch's live jobs by index.
        let mut map = [NIL; MAX_BATCH];
        let mut k = self.batch_head(j);
        while let Some(s) = self.get(k) {
            if let Some(e) = map.get_mut(s.index as usize) {
                *e = k;
            }
            k = s.bnext;
        }
        let mut todo = todo;
        let mut done = 0u64;
        loop {
            let pending = todo & !done;
            if pending == 0 {
                break;
            }
            let i = pending.trailing_zeros();
            done |= bit(i);
            let k = map.get(i as usize).copied().unwrap_or(NIL);
            let Some(s) = self.get(k).copied() else {
                continue;
            };
            match s.state {
                State::Waiting | State::Ready => {
                    if s.state == State::Ready && s.gang == NIL {
                        self.fifo_unlink(k);
                    }
                    todo |= s.dependents | self.fail_gang(s.gang);
                    emit(Event::Fail(k));
                    self.stats.failed = self.stats.failed.saturating_add(1);
                    self.retire(k);
                }
                State::Running => {
                    if let Some(m) = self.get_mut(k) {
                        m.state = State::Cancelled;
                    }
                    todo |= s.dependents | self.fail_gang(s.gang);
                    emit(Event::Cancel(k));
                    self.stats.cancelled = self.stats.cancelled.saturating_add(1);
                }
                State::Finishing => {
                    todo |= s.dependents | self.fail_gang(s.gang);
                }
                _ => {}
            }
        }
    }

    /// Marks the gang led by `leader` failed (an unreleased gang leaves its lists); returns
    /// its members (0 for `NIL`).
    fn fail_gang(&mut self, leader: u32) -> u64 {
        let Some(l) = self.get(leader).copied() else {
            return 0;
        };
        if l.g.flags & FAILED != 0 {
            return l.g.members;
        }
        self.gang_flag(leader, FAILED);
        if l.g.flags & RELEASED == 0 {
            self.gang_unlink(leader);
            self.ctx_unlink(leader);
        }
        l.g.members
    }

    /// Job `j` is over (finished or failed): leaves its batch and frees its slot, or keeps a
    /// leader's slot for its gang's record until the gang's last member is over.
    fn retire(&mut self, j: u32) {
        let Some(s) = self.get(j).copied() else {
            return;
        };
        if let Some(p) = self.get_mut(s.bprev) {
            p.bnext = s.bnext;
        }
        if let Some(n) = self.get_mut(s.bnext) {
            n.bprev = s.bprev;
        }
        let leader = s.gang;
        let Some(l) = self.get_mut(leader) else {
            self.free_slot(j);
            return;
        };
        l.g.live = l.g.live.saturating_sub(1);
        let (live, zombie) = (l.g.live, l.state == State::Zombie);
        if j == leader {
            if live == 0 {
                self.free_slot(j);
            } else if let Some(m) = self.get_mut(j) {
                m.state = State::Zombie;
                m.bnext = NIL;
                m.bprev = NIL;
            }
        } else {
            self.free_slot(j);
            if live == 0 && zombie {
                self.free_slot(leader);
            }
        }
    }

    /// Puts slot `j` on the free list (keeping its hash bucket).
    fn free_slot(&mut self, j: u32) {
        let head = self.free_head;
        let Some(s) = self.get_mut(j) else {
            return;
        };
        *s = Slot::free(s.bucket);
        s.next = head;
        self.free_head = j;
        self.free = self.free.saturating_add(1);
    }
}
