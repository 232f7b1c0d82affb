// SPDX-License-Identifier: GPL-2.0

//! Tests of the gang scheduling policy against a reference model.
//!
//! The model keeps every job ever submitted in a `Vec` (with its spec, batch, state, the
//! number of external fences still pending and the moment it became ready), the gangs in
//! another `Vec`, and follows the rules of the module documentation literally: a poll sorts
//! the ready gangs by (class descending, submission key), checks the context order by looking
//! at every other gang, computes claims in a `HashMap`, then walks the rings and classes over
//! the ready solo jobs sorted by readiness; failures are a transitive closure over "depends
//! on" and "same gang" computed with a work list. The harness runs the policy and the model
//! in lockstep and compares every return value, the `Release` sequence of every poll exactly,
//! the `Fail`/`Cancel` events of every other call as sets, the stats, `free_slots`,
//! `in_flight` and `gang_of` after every call.
//!
//! Independently of the model, a checker verifies the properties of the spec on the events
//! of the policy, from the facts of the trace only (what was released, finished, reported):
//!
//! - all-or-nothing, consecutive gang releases; every ring of a gang idle at its release;
//! - nothing released before its deps finished ok and its ext fences were reported ok;
//! - same-context gangs released in submission order;
//! - solo rule (b) at every release (which also keeps Normal/Latency/Kernel gang rings
//!   exclusive), and rule (a): no solo job of class `c` released on a ring of a ready gang of
//!   class `>= c` that was at the head of its context at the start of the poll;
//! - `Fail` only for unreleased jobs, `Cancel` only for running, uncancelled ones.
//!
//! Properties (each its own test): `prop_lockstep` (random batches, valid and invalid, and
//! random interleavings of poll / finished / ext_done / abort_all / wild ids),
//! `prop_liveness`, `prop_errors_change_nothing`, `prop_abort_and_reuse`,
//! `prop_never_panics`; then a scale test and unit tests.

use aikrs_gang_core::{
    Class, Error, Event, JobId, Policy, Slot, Spec, Stats, MAX_BATCH, MAX_RINGS,
};
use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

type P = Policy<Vec<Slot>>;

const CLASSES: [Class; 4] = [Class::Bulk, Class::Normal, Class::Latency, Class::Kernel];

fn spec(ring: u32, class: Class, gang: Option<u8>, deps: u64, ext: u32) -> Spec {
    Spec {
        ring,
        class,
        gang,
        deps,
        ext,
    }
}

fn policy(cap: usize, rings: u32) -> P {
    Policy::new(vec![Slot::default(); cap], rings).unwrap()
}

fn poll(p: &mut P) -> Vec<Event> {
    let mut ev = Vec::new();
    let n = p.poll(&mut |e| ev.push(e));
    assert_eq!(n, ev.len());
    ev
}

fn finished(p: &mut P, id: JobId, ok: bool) -> (bool, Vec<Event>) {
    let mut ev = Vec::new();
    let r = p.finished(id, ok, &mut |e| ev.push(e));
    (r, ev)
}

fn ext_done(p: &mut P, id: JobId, ok: bool) -> (bool, Vec<Event>) {
    let mut ev = Vec::new();
    let r = p.ext_done(id, ok, &mut |e| ev.push(e));
    (r, ev)
}

fn abort(p: &mut P) -> Vec<Event> {
    let mut ev = Vec::new();
    p.abort_all(&mut |e| ev.push(e));
    ev
}

fn submit(p: &mut P, ctx: u32, specs: &[Spec]) -> Result<Vec<JobId>, Error> {
    let mut ids = vec![u32::MAX; specs.len()];
    p.submit(ctx, specs, &mut ids).map(|()| ids)
}

fn released(ev: &[Event]) -> Vec<JobId> {
    ev.iter()
        .map(|e| match e {
            Event::Release(j) => *j,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn sorted(mut ev: Vec<Event>) -> Vec<Event> {
    ev.sort_by_key(|e| match e {
        Event::Release(j) => (0, *j),
        Event::Cancel(j) => (1, *j),
        Event::Fail(j) => (2, *j),
    });
    ev
}

// ---------------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Waiting,
    Running,
    Cancelled,
    /// Finished ok.
    Finished,
    /// Failed, or finished with an error, or finished after a cancel.
    Failed,
}

#[derive(Clone, Debug)]
struct MJob {
    id: JobId,
    batch: usize,
    idx: usize,
    spec: Spec,
    gang: Option<usize>,
    ext_left: u32,
    st: St,
    ready_at: Option<u64>,
    ever_released: bool,
}

#[derive(Clone, Debug)]
struct MGang {
    ctx: u32,
    /// (batch number, depth in the contracted graph, first member's index).
    key: (usize, u32, usize),
    members: Vec<usize>,
    class: Class,
    released: bool,
    failed: bool,
}

#[derive(Clone, Debug)]
struct Model {
    rings: u32,
    cap: usize,
    jobs: Vec<MJob>,
    gangs: Vec<MGang>,
    batches: Vec<Vec<usize>>,
    live: HashMap<JobId, usize>,
    clock: u64,
    stats: Stats,
}

/// The validation of a batch: the representative node of every index and the depth of every
/// node in the contracted graph.
fn validate(
    specs: &[Spec],
    ids_len: usize,
    rings: u32,
    free: usize,
) -> Result<(Vec<usize>, Vec<u32>), Error> {
    let n = specs.len();
    if n == 0 {
        return Err(Error::Empty);
    }
    if n > MAX_BATCH || ids_len < n {
        return Err(Error::TooBig);
    }
    if specs.iter().any(|s| s.ring >= rings) {
        return Err(Error::BadRing);
    }
    if specs.iter().any(|s| n < 64 && s.deps >> n != 0) {
        return Err(Error::BadDep);
    }
    let mut groups: HashMap<u8, Vec<usize>> = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if let Some(g) = s.gang {
            groups.entry(g).or_default().push(i);
        }
    }
    if groups.values().any(|m| m.len() > rings as usize) {
        return Err(Error::TooWide);
    }
    for m in groups.values() {
        let rs: HashSet<u32> = m.iter().map(|&i| specs[i].ring).collect();
        if rs.len() != m.len() {
            return Err(Error::DuplicateRing);
        }
    }
    for m in groups.values() {
        if m.iter().any(|&i| specs[i].class != specs[m[0]].class) {
            return Err(Error::MixedClass);
        }
    }
    let rep: Vec<usize> = (0..n)
        .map(|i| match specs[i].gang {
            Some(g) => groups[&g][0],
            None => i,
        })
        .collect();
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (j, s) in specs.iter().enumerate() {
        for i in 0..n {
            if s.deps & (1u64 << i) != 0 {
                if rep[i] == rep[j] {
                    return Err(Error::Cycle);
                }
                edges.insert((rep[i], rep[j]));
            }
        }
    }
    // Longest path by relaxation; more than n rounds of change: a cycle.
    let mut depth = vec![0u32; n];
    let mut rounds = 0;
    loop {
        let mut changed = false;
        for &(u, v) in &edges {
            if depth[v] < depth[u] + 1 {
                depth[v] = depth[u] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        rounds += 1;
        if rounds > n {
            return Err(Error::Cycle);
        }
    }
    if free < n {
        return Err(Error::NoSpace);
    }
    Ok((rep, depth))
}

impl Model {
    fn new(cap: usize, rings: u32) -> Self {
        Model {
            rings,
            cap,
            jobs: Vec::new(),
            gangs: Vec::new(),
            batches: Vec::new(),
            live: HashMap::new(),
            clock: 0,
            stats: Stats::default(),
        }
    }

    fn is_live(&self, j: usize) -> bool {
        matches!(self.jobs[j].st, St::Waiting | St::Running | St::Cancelled)
    }

    fn free_slots(&self) -> usize {
        let live = self.live.len();
        let zombies = self
            .gangs
            .iter()
            .filter(|g| !self.is_live(g.members[0]) && g.members.iter().any(|&m| self.is_live(m)))
            .count();
        self.cap - live - zombies
    }

    fn in_flight(&self, ring: u32) -> Vec<usize> {
        self.live
            .values()
            .copied()
            .filter(|&j| {
                matches!(self.jobs[j].st, St::Running | St::Cancelled)
                    && self.jobs[j].spec.ring == ring
            })
            .collect()
    }

    fn ready(&self, j: usize) -> bool {
        let job = &self.jobs[j];
        job.st == St::Waiting
            && job.ext_left == 0
            && self.batches[job.batch].iter().all(|&d| {
                job.spec.deps & (1u64 << self.jobs[d].idx) == 0 || self.jobs[d].st == St::Finished
            })
    }

    fn gang_ready(&self, g: usize) -> bool {
        let gang = &self.gangs[g];
        !gang.released && !gang.failed && gang.members.iter().all(|&m| self.ready(m))
    }

    fn ctx_head(&self, g: usize) -> bool {
        let gang = &self.gangs[g];
        !self
            .gangs
            .iter()
            .any(|h| h.ctx == gang.ctx && !h.released && !h.failed && h.key < gang.key)
    }

    /// Stamps the jobs that became ready, in job order (batch order, then index).
    fn stamp(&mut self) {
        for j in 0..self.jobs.len() {
            if self.jobs[j].ready_at.is_none() && self.ready(j) {
                self.jobs[j].ready_at = Some(self.clock);
                self.clock += 1;
            }
        }
    }

    fn submit(
        &mut self,
        ctx: u32,
        specs: &[Spec],
        ids_len: usize,
        ids: Option<&[JobId]>,
    ) -> Result<(), Error> {
        let (rep, depth) = validate(specs, ids_len, self.rings, self.free_slots())?;
        let ids = ids.expect("ids of an accepted batch");
        let b = self.batches.len();
        let first = self.jobs.len();
        let mut gang_of_rep: HashMap<usize, usize> = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            let gang = s.gang.map(|_| {
                *gang_of_rep.entry(rep[i]).or_insert_with(|| {
                    self.gangs.push(MGang {
                        ctx,
                        key: (b, depth[rep[i]], rep[i]),
                        members: Vec::new(),
                        class: s.class,
                        released: false,
                        failed: false,
                    });
                    self.gangs.len() - 1
                })
            });
            if let Some(g) = gang {
                self.gangs[g].members.push(first + i);
            }
            assert!(
                self.live.insert(ids[i], first + i).is_none(),
                "id reused while live"
            );
            self.jobs.push(MJob {
                id: ids[i],
                batch: b,
                idx: i,
                spec: *s,
                gang,
                ext_left: s.ext,
                st: St::Waiting,
                ready_at: None,
                ever_released: false,
            });
        }
        self.batches.push((first..first + specs.len()).collect());
        self.stats.submitted += specs.len() as u64;
        self.stamp();
        Ok(())
    }

    fn poll(&mut self) -> Vec<Event> {
        let mut ev = Vec::new();
        let mut claim: HashMap<u32, Class> = HashMap::new();
        let mut cands: Vec<usize> = (0..self.gangs.len())
            .filter(|&g| self.gang_ready(g))
            .collect();
        cands.sort_by_key(|&g| (Reverse(self.gangs[g].class), self.gangs[g].key));
        for g in cands {
            if !self.ctx_head(g) {
                continue;
            }
            let mut all = true;
            let mut idle = true;
            for &m in &self.gangs[g].members {
                let r = self.jobs[m].spec.ring;
                match claim.entry(r) {
                    Entry::Occupied(_) => all = false,
                    Entry::Vacant(v) => {
                        v.insert(self.gangs[g].class);
                    }
                }
                if !self.in_flight(r).is_empty() {
                    idle = false;
                }
            }
            if all && idle {
                for m in self.gangs[g].members.clone() {
                    self.jobs[m].st = St::Running;
                    self.jobs[m].ever_released = true;
                    self.stats.released += 1;
                    ev.push(Event::Release(self.jobs[m].id));
                }
                self.gangs[g].released = true;
                self.stats.gangs_released += 1;
            }
        }
        for r in 0..self.rings {
            'ring: for &c in CLASSES.iter().rev() {
                let mut q: Vec<usize> = (0..self.jobs.len())
                    .filter(|&j| {
                        let job = &self.jobs[j];
                        job.gang.is_none()
                            && job.spec.ring == r
                            && job.spec.class == c
                            && self.ready(j)
                    })
                    .collect();
                q.sort_by_key(|&j| self.jobs[j].ready_at);
                for j in q {
                    if claim.get(&r).is_some_and(|&k| k >= c) {
                        self.stats.claim_holds += 1;
                        break 'ring;
                    }
                    let fl = self.in_flight(r);
                    if fl.iter().any(|&k| !c.preempts(self.jobs[k].spec.class)) {
                        break 'ring;
                    }
                    if !fl.is_empty() {
                        self.stats.preempting_releases += 1;
                    }
                    self.jobs[j].st = St::Running;
                    self.jobs[j].ever_released = true;
                    self.stats.released += 1;
                    ev.push(Event::Release(self.jobs[j].id));
                }
            }
        }
        ev
    }

    /// Fails `start` and, transitively, its dependents and gang mates. `finishing`: `start`
    /// is a running job that finished with an error (no event for it).
    fn fail_closure(&mut self, start: usize, finishing: bool) -> Vec<Event> {
        let mut set = BTreeSet::from([start]);
        let mut work = vec![start];
        while let Some(j) = work.pop() {
            let b = self.jobs[j].batch;
            for &d in &self.batches[b] {
                if self.jobs[d].spec.deps & (1u64 << self.jobs[j].idx) != 0
                    && self.is_live(d)
                    && set.insert(d)
                {
                    work.push(d);
                }
            }
            if let Some(g) = self.jobs[j].gang {
                self.gangs[g].failed = true;
                for m in self.gangs[g].members.clone() {
                    if self.is_live(m) && set.insert(m) {
                        work.push(m);
                    }
                }
            }
        }
        let mut ev = Vec::new();
        for j in set {
            if j == start && finishing {
                continue;
            }
            match self.jobs[j].st {
                St::Waiting => {
                    self.jobs[j].st = St::Failed;
                    self.live.remove(&self.jobs[j].id);
                    self.stats.failed += 1;
                    ev.push(Event::Fail(self.jobs[j].id));
                }
                St::Running => {
                    self.jobs[j].st = St::Cancelled;
                    self.stats.cancelled += 1;
                    ev.push(Event::Cancel(self.jobs[j].id));
                }
                _ => {}
            }
        }
        ev
    }

    fn finished(&mut self, id: JobId, ok: bool) -> (bool, Vec<Event>) {
        let Some(&j) = self.live.get(&id) else {
            return (false, Vec::new());
        };
        let st = self.jobs[j].st;
        if !matches!(st, St::Running | St::Cancelled) {
            return (false, Vec::new());
        }
        self.stats.finished += 1;
        let mut ev = Vec::new();
        if st == St::Running && !ok {
            ev = self.fail_closure(j, true);
        }
        self.jobs[j].st = if st == St::Running && ok {
            St::Finished
        } else {
            St::Failed
        };
        self.live.remove(&id);
        self.stamp();
        (true, ev)
    }

    fn ext_done(&mut self, id: JobId, ok: bool) -> (bool, Vec<Event>) {
        let Some(&j) = self.live.get(&id) else {
            return (false, Vec::new());
        };
        if self.jobs[j].st != St::Waiting || self.jobs[j].ext_left == 0 {
            return (false, Vec::new());
        }
        let ev = if ok {
            self.jobs[j].ext_left -= 1;
            Vec::new()
        } else {
            self.fail_closure(j, false)
        };
        self.stamp();
        (true, ev)
    }

    fn abort(&mut self) -> Vec<Event> {
        let mut ev = Vec::new();
        for j in 0..self.jobs.len() {
            match self.jobs[j].st {
                St::Waiting => {
                    self.jobs[j].st = St::Failed;
                    self.live.remove(&self.jobs[j].id);
                    self.stats.failed += 1;
                    ev.push(Event::Fail(self.jobs[j].id));
                }
                St::Running => {
                    self.jobs[j].st = St::Cancelled;
                    self.stats.cancelled += 1;
                    ev.push(Event::Cancel(self.jobs[j].id));
                }
                _ => continue,
            }
            if let Some(g) = self.jobs[j].gang {
                self.gangs[g].failed = true;
            }
        }
        ev
    }
}

// ---------------------------------------------------------------------------------------
// The lockstep harness and the property checker.

struct Harness {
    p: P,
    m: Model,
}

impl Harness {
    fn new(cap: usize, rings: u32) -> Self {
        Harness {
            p: policy(cap, rings),
            m: Model::new(cap, rings),
        }
    }

    fn compare(&self) {
        assert_eq!(self.p.stats(), self.m.stats);
        assert_eq!(self.p.free_slots(), self.m.free_slots());
        assert_eq!(self.p.capacity(), self.m.cap);
        for r in 0..self.m.rings {
            assert_eq!(
                self.p.in_flight(r) as usize,
                self.m.in_flight(r).len(),
                "ring {r}"
            );
        }
        assert_eq!(self.p.in_flight(self.m.rings), 0);
        for (&id, &j) in &self.m.live {
            let want = self.m.jobs[j]
                .gang
                .map(|g| self.m.jobs[self.m.gangs[g].members[0]].id);
            assert_eq!(self.p.gang_of(id), want, "gang_of({id})");
        }
    }

    fn submit(&mut self, ctx: u32, specs: &[Spec], short_ids: bool) -> Result<Vec<JobId>, Error> {
        let before = (self.p.stats(), self.p.free_slots());
        let len = if short_ids {
            specs.len().saturating_sub(1)
        } else {
            specs.len()
        };
        let mut ids = vec![u32::MAX; len];
        let got = self.p.submit(ctx, specs, &mut ids);
        let want = self
            .m
            .submit(ctx, specs, len, got.is_ok().then_some(&ids[..]));
        assert_eq!(got, want, "submit {specs:?}");
        if got.is_err() {
            assert_eq!((self.p.stats(), self.p.free_slots()), before);
            assert!(ids.iter().all(|&i| i == u32::MAX), "ids written on error");
        }
        self.compare();
        got.map(|()| ids)
    }

    fn poll(&mut self) -> Vec<Event> {
        let got = poll(&mut self.p);
        self.check_poll(&got);
        let want = self.m.poll();
        assert_eq!(got, want, "poll");
        self.compare();
        got
    }

    fn finished(&mut self, id: JobId, ok: bool) -> bool {
        let (r, got) = finished(&mut self.p, id, ok);
        self.check_failures(&got);
        let (r2, want) = self.m.finished(id, ok);
        assert_eq!(r, r2, "finished({id}, {ok})");
        assert_eq!(sorted(got), sorted(want), "finished({id}, {ok})");
        self.compare();
        r
    }

    fn ext_done(&mut self, id: JobId, ok: bool) -> bool {
        let (r, got) = ext_done(&mut self.p, id, ok);
        self.check_failures(&got);
        let (r2, want) = self.m.ext_done(id, ok);
        assert_eq!(r, r2, "ext_done({id}, {ok})");
        assert_eq!(sorted(got), sorted(want), "ext_done({id}, {ok})");
        self.compare();
        r
    }

    fn abort(&mut self) {
        let got = abort(&mut self.p);
        self.check_failures(&got);
        let want = self.m.abort();
        assert_eq!(sorted(got), sorted(want), "abort_all");
        self.compare();
    }

    /// The ids of the jobs in flight, by id.
    fn running(&self) -> Vec<JobId> {
        let mut v: Vec<JobId> = self
            .m
            .live
            .iter()
            .filter(|(_, &j)| matches!(self.m.jobs[j].st, St::Running | St::Cancelled))
            .map(|(&id, _)| id)
            .collect();
        v.sort_unstable();
        v
    }

    /// The ids of the jobs with external fences pending, by id.
    fn ext_pending(&self) -> Vec<JobId> {
        let mut v: Vec<JobId> = self
            .m
            .live
            .iter()
            .filter(|(_, &j)| self.m.jobs[j].st == St::Waiting && self.m.jobs[j].ext_left > 0)
            .map(|(&id, _)| id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Fail events only for unreleased jobs, Cancel only for running, uncancelled ones (on
    /// the state before the call).
    fn check_failures(&self, ev: &[Event]) {
        let mut seen = HashSet::new();
        for e in ev {
            let (id, want) = match *e {
                Event::Fail(id) => (id, St::Waiting),
                Event::Cancel(id) => (id, St::Running),
                Event::Release(id) => panic!("Release({id}) outside poll"),
            };
            assert!(seen.insert(id), "two events for {id}");
            let j = self.m.live[&id];
            assert_eq!(self.m.jobs[j].st, want, "{e:?}");
        }
    }

    /// The properties of the spec on the events of one poll, from the state before it.
    fn check_poll(&self, ev: &[Event]) {
        let m = &self.m;
        let ids = released(ev);
        // Simulated in flight: job numbers per ring.
        let mut flight: HashMap<u32, Vec<usize>> = HashMap::new();
        for r in 0..m.rings {
            flight.insert(r, m.in_flight(r));
        }
        let mut gang_done: HashSet<usize> = HashSet::new();
        // Gangs eligible at the start of the poll: ready, at the head of their context.
        let eligible: Vec<usize> = (0..m.gangs.len())
            .filter(|&g| m.gang_ready(g) && m.ctx_head(g))
            .collect();
        let mut out: HashSet<usize> = HashSet::new();
        let mut i = 0;
        while i < ids.len() {
            let j = *m.live.get(&ids[i]).expect("release of a live job");
            let job = &m.jobs[j];
            assert!(out.insert(j), "released twice");
            assert_eq!(job.st, St::Waiting, "release of a job not waiting");
            assert_eq!(job.ext_left, 0, "released with ext pending");
            for &d in &m.batches[job.batch] {
                if job.spec.deps & (1u64 << m.jobs[d].idx) != 0 {
                    assert_eq!(
                        m.jobs[d].st,
                        St::Finished,
                        "released before a dep finished ok"
                    );
                }
            }
            match job.gang {
                Some(g) => {
                    let gang = &m.gangs[g];
                    let w = gang.members.len();
                    assert!(i + w <= ids.len(), "partial gang");
                    let got: BTreeSet<JobId> = ids[i..i + w].iter().copied().collect();
                    let want: BTreeSet<JobId> =
                        gang.members.iter().map(|&k| m.jobs[k].id).collect();
                    assert_eq!(got, want, "gang not consecutive / complete");
                    for &k in &gang.members {
                        let r = m.jobs[k].spec.ring;
                        assert!(flight[&r].is_empty(), "gang released on a busy ring");
                    }
                    for (h, other) in m.gangs.iter().enumerate() {
                        if other.ctx == gang.ctx && other.key < gang.key {
                            assert!(
                                other.released || other.failed || gang_done.contains(&h),
                                "context order"
                            );
                        }
                    }
                    gang_done.insert(g);
                    for &k in &gang.members {
                        if k != j {
                            assert!(out.insert(k));
                            assert_eq!(m.jobs[k].st, St::Waiting);
                        }
                        let r = m.jobs[k].spec.ring;
                        flight.get_mut(&r).unwrap().push(k);
                    }
                    i += w;
                }
                None => {
                    let (r, c) = (job.spec.ring, job.spec.class);
                    for &k in &flight[&r] {
                        assert!(c.preempts(m.jobs[k].spec.class), "rule (b)");
                    }
                    for &g in &eligible {
                        let gang = &m.gangs[g];
                        assert!(
                            !(gang.class >= c
                                && gang.members.iter().any(|&k| m.jobs[k].spec.ring == r)),
                            "rule (a)"
                        );
                    }
                    flight.get_mut(&r).unwrap().push(j);
                    i += 1;
                }
            }
        }
    }

    /// Polls and finishes everything in flight (ok), reporting every ext fence ok, until
    /// nothing is left; returns the number of rounds.
    fn drain(&mut self) {
        for _ in 0..100_000 {
            self.poll();
            let run = self.running();
            if let Some(&id) = run.first() {
                self.finished(id, true);
                continue;
            }
            let ext = self.ext_pending();
            if let Some(&id) = ext.first() {
                self.ext_done(id, true);
                continue;
            }
            break;
        }
        assert!(self.m.live.is_empty(), "jobs left after drain");
        assert_eq!(self.p.free_slots(), self.p.capacity());
    }
}

// ---------------------------------------------------------------------------------------
// Generators.

/// Makes a batch valid (for `rings` rings): gang members on distinct rings with one class
/// (members beyond `rings` become solo), deps within the batch, and only the dep edges
/// that keep the contracted graph acyclic (in generation order).
fn repair(specs: &mut [Spec], rings: u32) {
    let n = specs.len();
    let mut groups: HashMap<u8, Vec<usize>> = HashMap::new();
    for (i, s) in specs.iter_mut().enumerate() {
        s.ring %= rings;
        if let Some(g) = s.gang {
            groups.entry(g).or_default().push(i);
        }
    }
    for m in groups.values() {
        let (r0, c0) = (specs[m[0]].ring, specs[m[0]].class);
        for (k, &i) in m.iter().enumerate() {
            if k < rings as usize {
                specs[i].ring = (r0 + k as u32) % rings;
                specs[i].class = c0;
            } else {
                specs[i].gang = None;
            }
        }
    }
    let rep: Vec<usize> = (0..n)
        .map(|i| match specs[i].gang {
            Some(g) => groups[&g][0],
            None => i,
        })
        .collect();
    let mut edges: HashSet<(usize, usize)> = HashSet::new();
    let reach = |edges: &HashSet<(usize, usize)>, from: usize, to: usize| {
        let mut seen = HashSet::from([from]);
        let mut work = vec![from];
        while let Some(u) = work.pop() {
            if u == to {
                return true;
            }
            for &(a, b) in edges {
                if a == u && seen.insert(b) {
                    work.push(b);
                }
            }
        }
        false
    };
    for j in 0..n {
        let deps = if n < 64 {
            specs[j].deps & ((1u64 << n) - 1)
        } else {
            specs[j].deps
        };
        let mut kept = 0u64;
        for i in 0..n {
            if deps & (1u64 << i) == 0 {
                continue;
            }
            let (u, v) = (rep[i], rep[j]);
            if u == v || reach(&edges, v, u) {
                continue;
            }
            edges.insert((u, v));
            kept |= 1u64 << i;
        }
        specs[j].deps = kept;
    }
}

fn class_strategy() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Bulk),
        Just(Class::Normal),
        Just(Class::Latency),
        Just(Class::Kernel)
    ]
}

/// A raw spec: ring `0..5`, sparse deps, few ext fences, gangs labels `0..3`.
fn raw_spec() -> impl Strategy<Value = Spec> {
    (
        0u32..5,
        class_strategy(),
        prop_oneof![2 => Just(None), 3 => (0u8..3).prop_map(Some)],
        prop_oneof![
            2 => Just(0u64),
            3 => (0u32..8).prop_map(|i| 1u64 << i),
            2 => any::<u64>().prop_map(|d| d & d.rotate_left(17) & 0xff),
        ],
        prop_oneof![6 => Just(0u32), 1 => 1u32..3],
    )
        .prop_map(|(ring, class, gang, deps, ext)| spec(ring, class, gang, deps, ext))
}

#[derive(Clone, Debug)]
enum Op {
    Submit {
        ctx: u32,
        specs: Vec<Spec>,
        repair: bool,
        short_ids: bool,
    },
    Poll,
    Finish {
        pick: usize,
        ok: bool,
    },
    Ext {
        pick: usize,
        ok: bool,
    },
    Abort,
    Wild {
        id: u32,
        ok: bool,
        finish: bool,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0u32..3,
            prop::collection::vec(raw_spec(), 0..9),
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.03),
        )
            .prop_map(|(ctx, specs, repair, short_ids)| Op::Submit {
                ctx,
                specs,
                repair,
                short_ids
            }),
        6 => Just(Op::Poll),
        6 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(pick, ok)| Op::Finish { pick, ok }),
        2 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(pick, ok)| Op::Ext { pick, ok }),
        1 => prop_oneof![9 => Just(Op::Poll), 1 => Just(Op::Abort)],
        1 => (any::<u32>(), any::<bool>(), any::<bool>()).prop_map(|(id, ok, finish)| Op::Wild { id, ok, finish }),
    ]
}

fn run_ops(h: &mut Harness, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Submit {
                ctx,
                specs,
                repair: fix,
                short_ids,
            } => {
                let mut specs = specs.clone();
                if *fix {
                    repair(&mut specs, h.m.rings);
                }
                let _ = h.submit(*ctx, &specs, *short_ids);
            }
            Op::Poll => {
                h.poll();
            }
            Op::Finish { pick, ok } => {
                let run = h.running();
                if !run.is_empty() {
                    assert!(h.finished(run[pick % run.len()], *ok));
                }
            }
            Op::Ext { pick, ok } => {
                let ext = h.ext_pending();
                if !ext.is_empty() {
                    assert!(h.ext_done(ext[pick % ext.len()], *ok));
                }
            }
            Op::Abort => h.abort(),
            Op::Wild { id, ok, finish } => {
                let id = if h.m.cap > 0 && id % 2 == 0 {
                    id % (h.m.cap as u32 + 2)
                } else {
                    *id
                };
                if *finish {
                    h.finished(id, *ok);
                } else {
                    h.ext_done(id, *ok);
                }
            }
        }
    }
}

fn valid_batch(rings: u32, max: usize, ext: bool) -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(raw_spec(), 1..=max).prop_map(move |mut specs| {
        repair(&mut specs, rings);
        if !ext {
            for s in &mut specs {
                s.ext = 0;
            }
        }
        specs
    })
}

proptest! {
    #![proptest_config(PropConfig::with_cases(512))]

    /// Random batches (mostly valid) and random interleavings, in lockstep with the model
    /// and under the property checker; then a drain: everything terminates, no slot leaks.
    #[test]
    fn prop_lockstep(
        rings in 1u32..=4,
        cap in 1usize..40,
        ops in prop::collection::vec(op_strategy(), 1..160),
    ) {
        let mut h = Harness::new(cap, rings);
        run_ops(&mut h, &ops);
        h.drain();
        // Every job has exactly one outcome.
        for job in &h.m.jobs {
            prop_assert!(matches!(job.st, St::Finished | St::Failed));
            if job.st == St::Finished {
                prop_assert!(job.ever_released);
            }
        }
    }

    /// With no ext fences, polling and finishing in-flight jobs in any order until nothing is
    /// in flight releases every job (no deadlock), for any valid batches of any contexts.
    #[test]
    fn prop_liveness(
        rings in 1u32..=MAX_RINGS as u32,
        cap in 16usize..80,
        batches in prop::collection::vec((0u32..3, valid_batch(4, 12, false)), 1..8),
        picks in prop::collection::vec(any::<usize>(), 200),
    ) {
        let rings = rings.min(8);
        let mut h = Harness::new(cap, rings);
        let mut total = 0;
        for (ctx, mut specs) in batches {
            repair(&mut specs, rings);
            if h.submit(ctx, &specs, false).is_ok() {
                total += specs.len();
            }
        }
        let mut k = 0;
        loop {
            h.poll();
            let run = h.running();
            if run.is_empty() {
                break;
            }
            let id = run[picks[k % picks.len()] % run.len()];
            k += 1;
            h.finished(id, true);
        }
        prop_assert_eq!(h.p.stats().released as usize, total);
        prop_assert!(h.m.live.is_empty());
        prop_assert_eq!(h.p.free_slots(), cap);
    }

    /// Invalid batches (each kind) get their error and change nothing: the following
    /// behaviour is the model's, which never saw them.
    #[test]
    fn prop_errors_change_nothing(
        rings in 1u32..=4,
        prefix in prop::collection::vec(op_strategy(), 0..40),
        good in valid_batch(4, 8, true),
        kind in 0usize..8,
        suffix in prop::collection::vec(op_strategy(), 0..40),
    ) {
        let mut h = Harness::new(24, rings);
        run_ops(&mut h, &prefix);
        let mut bad = good.clone();
        repair(&mut bad, rings);
        let n = bad.len();
        let want = match kind {
            0 => { bad.clear(); Error::Empty }
            1 => { bad = vec![bad[0]; MAX_BATCH + 1]; for s in &mut bad { s.deps = 0; s.gang = None; } Error::TooBig }
            2 => { bad[n - 1].ring = rings; Error::BadRing }
            3 => { bad[0].deps |= 1u64 << n; Error::BadDep }
            4 => {
                bad = (0..=rings).map(|r| spec(r % rings, Class::Normal, Some(9), 0, 0)).collect();
                Error::TooWide
            }
            5 => {
                bad.push(spec(0, Class::Bulk, Some(9), 0, 0));
                bad.push(spec(0, Class::Bulk, Some(9), 0, 0));
                // TooWide is checked first: two members on one ring need two rings.
                if rings < 2 { Error::TooWide } else { Error::DuplicateRing }
            }
            6 => {
                if rings < 2 { bad.push(spec(0, Class::Bulk, Some(9), 0, 0)); bad.push(spec(0, Class::Bulk, Some(9), 0, 0)); Error::TooWide }
                else { bad.push(spec(0, Class::Bulk, Some(9), 0, 0)); bad.push(spec(1, Class::Kernel, Some(9), 0, 0)); Error::MixedClass }
            }
            _ => { bad[n - 1].deps |= 1u64 << (n - 1); Error::Cycle }
        };
        let before = (h.p.stats(), h.p.free_slots());
        prop_assert_eq!(h.submit(5, &bad, false), Err(want));
        prop_assert_eq!((h.p.stats(), h.p.free_slots()), before);
        run_ops(&mut h, &suffix);
        h.drain();
    }

    /// abort_all, then finishing the cancelled jobs, frees every slot; the policy is
    /// reusable afterwards.
    #[test]
    fn prop_abort_and_reuse(
        rings in 1u32..=4,
        ops in prop::collection::vec(op_strategy(), 0..80),
        picks in prop::collection::vec(any::<bool>(), 64),
        again in prop::collection::vec(op_strategy(), 0..60),
    ) {
        let mut h = Harness::new(32, rings);
        run_ops(&mut h, &ops);
        h.abort();
        prop_assert!(h.ext_pending().is_empty());
        for (k, id) in h.running().into_iter().enumerate() {
            prop_assert!(h.finished(id, picks[k % picks.len()]));
        }
        prop_assert_eq!(h.p.free_slots(), h.p.capacity());
        prop_assert!(h.poll().is_empty());
        run_ops(&mut h, &again);
        h.drain();
    }
}

proptest! {
    #![proptest_config(PropConfig { cases: 1024, ..PropConfig::default() })]

    /// Arbitrary numbers everywhere: never panics.
    #[test]
    fn prop_never_panics(
        rings in 0u32..20,
        cap in 0usize..12,
        ops in prop::collection::vec(
            (0u8..6, any::<u32>(), any::<bool>(),
             prop::collection::vec((any::<u32>(), 0u32..4, any::<Option<u8>>(), any::<u64>(), any::<u32>()), 0..70)),
            0..60),
    ) {
        let Ok(mut p) = Policy::new(vec![Slot::default(); cap], rings) else {
            prop_assert!(rings == 0 || rings as usize > MAX_RINGS);
            return Ok(());
        };
        let mut ids_seen: Vec<u32> = Vec::new();
        for (kind, x, ok, raw) in ops {
            let id = if x % 3 == 0 && !ids_seen.is_empty() { ids_seen[x as usize % ids_seen.len()] } else { x };
            match kind {
                0 => {
                    let specs: Vec<Spec> = raw.iter().map(|&(ring, c, gang, deps, ext)| {
                        let ring = if ring % 2 == 0 { ring % 17 } else { ring };
                        let deps = if deps % 3 == 0 { deps & 0xf } else { deps };
                        spec(ring, Class::from_u32(c).unwrap(), gang.map(|g| g % 4), deps, ext % 3)
                    }).collect();
                    let mut ids = vec![0; specs.len()];
                    if p.submit(x, &specs, &mut ids).is_ok() {
                        ids_seen.extend(&ids);
                    }
                }
                1 => { poll(&mut p); }
                2 => { finished(&mut p, id, ok); }
                3 => { ext_done(&mut p, id, ok); }
                4 => { abort(&mut p); }
                _ => { let _ = (p.gang_of(id), p.in_flight(x)); }
            }
            prop_assert!(p.free_slots() <= p.capacity());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scale.

#[test]
fn scale_10k_jobs_in_waves() {
    let t = Instant::now();
    let mut p = policy(64, 4);
    let mut done = 0usize;
    let mut wave = 0u32;
    let mut running: Vec<JobId> = Vec::new();
    while done < 10_000 {
        // A batch of 16: two gangs of 4 and 3, a dependency chain, Bulk/Latency mix.
        let specs: Vec<Spec> = (0..16u32)
            .map(|i| match i {
                0..=3 => spec(i, Class::Normal, Some(0), 0, 0),
                4..=6 => spec(i - 4, Class::Kernel, Some(1), 1 << 8, 0),
                8 => spec(1, Class::Bulk, None, 0, 0),
                _ => spec(i % 4, CLASSES[(i % 4) as usize], None, 1 << (i - 1), 0),
            })
            .collect();
        while p.free_slots() >= specs.len() {
            submit(&mut p, wave % 5, &specs).unwrap();
            wave += 1;
        }
        loop {
            running.extend(released(&poll(&mut p)));
            let Some(id) = running.pop() else { break };
            assert!(finished(&mut p, id, true).0);
            done += 1;
        }
    }
    assert_eq!(p.free_slots(), 64);
    assert_eq!(p.stats().finished as usize, done);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[test]
fn scale_many_contexts_and_slots() {
    // 4096 slots, 1024 single-gang batches of distinct contexts: hash chains stay short.
    let t = Instant::now();
    let mut p = policy(4096, 16);
    for ctx in 0..1024u32 {
        let specs: Vec<Spec> = (0..4)
            .map(|r| spec((ctx + r) % 16, Class::Normal, Some(0), 0, 0))
            .collect();
        submit(&mut p, ctx.wrapping_mul(7919), &specs).unwrap();
    }
    let mut n = 0;
    loop {
        let ids = released(&poll(&mut p));
        if ids.is_empty() {
            break;
        }
        for id in ids {
            finished(&mut p, id, true);
            n += 1;
        }
    }
    assert_eq!(n, 4096);
    assert_eq!(p.free_slots(), 4096);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Unit tests.

#[test]
fn class_rules() {
    for (v, &c) in CLASSES.iter().enumerate() {
        assert_eq!(Class::from_u32(v as u32), Some(c));
        assert_eq!(c as usize, v);
    }
    assert_eq!(Class::from_u32(4), None);
    assert_eq!(Class::from_u32(u32::MAX), None);
    assert_eq!(Class::COUNT, 4);
    for &a in &CLASSES {
        for &b in &CLASSES {
            assert_eq!(a.preempts(b), a >= Class::Latency && b == Class::Bulk);
        }
    }
}

#[test]
fn new_checks_rings() {
    assert_eq!(
        Policy::new(vec![Slot::default(); 4], 0).err(),
        Some(Error::BadRing)
    );
    assert_eq!(
        Policy::new(vec![Slot::default(); 4], 17).err(),
        Some(Error::BadRing)
    );
    let p = policy(4, 16);
    assert_eq!((p.rings(), p.capacity(), p.free_slots()), (16, 4, 4));
    assert_eq!(p.in_flight(16), 0);
    assert_eq!(p.stats(), Stats::default());
    // Array storage works too.
    let mut q = Policy::new([Slot::default(); 3], 1).unwrap();
    submit_arr(&mut q);
}

fn submit_arr(q: &mut Policy<[Slot; 3]>) {
    let mut ids = [0; 1];
    q.submit(0, &[spec(0, Class::Bulk, None, 0, 0)], &mut ids)
        .unwrap();
    let mut ev = Vec::new();
    assert_eq!(q.poll(&mut |e| ev.push(e)), 1);
    assert!(q.finished(ids[0], true, &mut |_| {}));
    assert_eq!(q.free_slots(), 3);
}

#[test]
fn each_error_and_nothing_changes() {
    let n = spec(0, Class::Normal, None, 0, 0);
    let g = |ring, label| spec(ring, Class::Normal, Some(label), 0, 0);
    let cases: Vec<(Vec<Spec>, usize, Error)> = vec![
        (vec![], 0, Error::Empty),
        (vec![n; MAX_BATCH + 1], MAX_BATCH + 1, Error::TooBig),
        (vec![n, n], 1, Error::TooBig),
        (
            vec![n, spec(2, Class::Normal, None, 0, 0)],
            2,
            Error::BadRing,
        ),
        (
            vec![n, spec(0, Class::Normal, None, 1 << 2, 0)],
            2,
            Error::BadDep,
        ),
        (vec![g(0, 1), g(1, 1), g(1, 1)], 3, Error::TooWide),
        (vec![g(0, 1), g(0, 1)], 2, Error::DuplicateRing),
        (
            vec![g(0, 1), spec(1, Class::Kernel, Some(1), 0, 0)],
            2,
            Error::MixedClass,
        ),
        // Self dependency.
        (vec![spec(0, Class::Normal, None, 1, 0)], 1, Error::Cycle),
        // a -> b -> a.
        (
            vec![
                spec(0, Class::Normal, None, 2, 0),
                spec(1, Class::Normal, None, 1, 0),
            ],
            2,
            Error::Cycle,
        ),
        // A member depending on a member of its own gang.
        (
            vec![g(0, 1), spec(1, Class::Normal, Some(1), 1, 0)],
            2,
            Error::Cycle,
        ),
        // g1 member 0 -> solo 2 -> g2 member 3 ... g2 member 4 -> g1 member 1: contracted cycle.
        (
            vec![
                g(0, 1),
                spec(1, Class::Normal, Some(1), 1 << 4, 0),
                spec(0, Class::Normal, None, 1 << 0, 0),
                spec(0, Class::Normal, Some(2), 1 << 2, 0),
                g(1, 2),
            ],
            5,
            Error::Cycle,
        ),
        (vec![n; 9], 9, Error::NoSpace),
    ];
    for (specs, ids_len, want) in cases {
        let mut p = policy(8, 2);
        let mut ids = vec![7u32; ids_len];
        submit(&mut p, 0, &[spec(1, Class::Normal, None, 0, 1)]).unwrap();
        let before = (p.stats(), p.free_slots());
        assert_eq!(p.submit(3, &specs, &mut ids), Err(want), "{specs:?}");
        assert_eq!((p.stats(), p.free_slots()), before);
        assert!(ids.iter().all(|&i| i == 7));
        assert!(poll(&mut p).is_empty());
        // Still fully usable: 7 slots left.
        let ids = submit(&mut p, 3, &[n; 7]).unwrap();
        assert_eq!(released(&poll(&mut p)), vec![ids[0]]);
    }
    // The acyclic variant of the two-gang case is accepted (g2 -> solo -> g1).
    let mut p = policy(8, 2);
    let ok = vec![
        g(0, 1),
        spec(1, Class::Normal, Some(1), 1 << 2, 0),
        spec(0, Class::Normal, None, 1 << 3, 0),
        g(0, 2),
        g(1, 2),
    ];
    submit(&mut p, 0, &ok).unwrap();
    let mut h = Harness::new(8, 2);
    h.submit(0, &ok, false).unwrap();
    h.drain();
    // Exactly MAX_BATCH fits.
    let mut p = policy(64, 1);
    assert!(submit(&mut p, 0, &[n; MAX_BATCH]).is_ok());
    assert_eq!(p.free_slots(), 0);
}

#[test]
fn bad_ids_are_ignored() {
    let mut p = policy(4, 2);
    let ids = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Normal, None, 0, 1),
            spec(1, Class::Normal, None, 0, 0),
        ],
    )
    .unwrap();
    for id in [4, 5, u32::MAX, u32::MAX - 1, 2, 3] {
        assert!(!finished(&mut p, id, true).0);
        assert!(!ext_done(&mut p, id, false).0);
        assert_eq!(p.gang_of(id), None);
    }
    // Not released: finished ignored; no ext pending: ext_done ignored.
    assert!(!finished(&mut p, ids[0], true).0);
    assert!(!ext_done(&mut p, ids[1], true).0);
    assert_eq!(released(&poll(&mut p)), vec![ids[1]]);
    // Released: ext_done ignored.
    assert!(!ext_done(&mut p, ids[1], true).0);
    assert!(ext_done(&mut p, ids[0], true).0);
    assert!(!ext_done(&mut p, ids[0], true).0);
    assert!(finished(&mut p, ids[1], true).0);
    assert!(!finished(&mut p, ids[1], true).0);
    assert_eq!(released(&poll(&mut p)), vec![ids[0]]);
}

#[test]
fn gang_waits_for_all_rings_and_claims_them() {
    let mut p = policy(16, 3);
    // A Normal solo job runs on ring 1.
    let solo = submit(&mut p, 0, &[spec(1, Class::Normal, None, 0, 0)]).unwrap();
    assert_eq!(released(&poll(&mut p)), solo);
    // A 3-wide Normal gang: ring 1 is busy, so it waits, claiming rings 0..3.
    let gang = submit(
        &mut p,
        1,
        &[0, 1, 2].map(|r| spec(r, Class::Normal, Some(0), 0, 0)),
    )
    .unwrap();
    assert_eq!(p.gang_of(gang[2]), Some(gang[0]));
    assert_eq!(p.gang_of(solo[0]), None);
    // Solo jobs of class <= Normal on the claimed idle ring 0 are held; a Kernel job goes.
    let more = submit(
        &mut p,
        2,
        &[
            spec(0, Class::Bulk, None, 0, 0),
            spec(2, Class::Kernel, None, 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), vec![more[1]]);
    assert_eq!(p.stats().claim_holds, 1);
    assert!(finished(&mut p, solo[0], true).0);
    // Ring 2 is still busy (Kernel).
    assert!(poll(&mut p).is_empty());
    assert!(finished(&mut p, more[1], true).0);
    assert_eq!(released(&poll(&mut p)), gang);
    assert_eq!(p.stats().gangs_released, 1);
    // Now the gang (Normal) is in flight: nothing else on its rings, not even Kernel.
    let k = submit(&mut p, 2, &[spec(0, Class::Kernel, None, 0, 0)]).unwrap();
    assert!(poll(&mut p).is_empty());
    for id in &gang {
        finished(&mut p, *id, true);
    }
    // Ring 0: Kernel first; then Bulk may not go while Kernel runs.
    assert_eq!(released(&poll(&mut p)), k);
    finished(&mut p, k[0], true);
    assert_eq!(released(&poll(&mut p)), vec![more[0]]);
}

#[test]
fn latency_preempts_bulk_only() {
    let mut p = policy(8, 1);
    let b = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Bulk, None, 0, 0),
            spec(0, Class::Bulk, None, 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), vec![b[0]]);
    let l = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Latency, None, 0, 0),
            spec(0, Class::Kernel, None, 0, 0),
        ],
    )
    .unwrap();
    // Kernel first (class order), preempting the Bulk job; then Latency may not (Kernel runs).
    assert_eq!(released(&poll(&mut p)), vec![l[1]]);
    assert_eq!(p.stats().preempting_releases, 1);
    assert_eq!(p.in_flight(0), 2);
    finished(&mut p, l[1], true);
    assert_eq!(released(&poll(&mut p)), vec![l[0]]);
    assert_eq!(p.stats().preempting_releases, 2);
    finished(&mut p, l[0], true);
    assert!(poll(&mut p).is_empty());
    finished(&mut p, b[0], true);
    assert_eq!(released(&poll(&mut p)), vec![b[1]]);
}

#[test]
fn context_order_and_topological_gang_order() {
    let mut p = policy(16, 2);
    // ctx 7: gang A waits for an ext fence; gang B (younger, same ctx) is ready but waits.
    let a = submit(
        &mut p,
        7,
        &[
            spec(0, Class::Normal, Some(0), 0, 1),
            spec(1, Class::Normal, Some(0), 0, 0),
        ],
    )
    .unwrap();
    let b = submit(
        &mut p,
        7,
        &[
            spec(0, Class::Kernel, Some(0), 0, 0),
            spec(1, Class::Kernel, Some(0), 0, 0),
        ],
    )
    .unwrap();
    // Another context's gang is not held.
    let c = submit(&mut p, 8, &[spec(0, Class::Bulk, Some(3), 0, 0)]).unwrap();
    assert_eq!(released(&poll(&mut p)), c);
    finished(&mut p, c[0], true);
    assert!(poll(&mut p).is_empty());
    assert!(ext_done(&mut p, a[0], true).0);
    assert_eq!(released(&poll(&mut p)), a);
    for id in &a {
        finished(&mut p, *id, true);
    }
    assert_eq!(released(&poll(&mut p)), b);
    for id in &b {
        finished(&mut p, *id, true);
    }
    // One batch, one ctx: gang at index 0 depends on the gang at index 2: index 2 goes first.
    let d = submit(
        &mut p,
        7,
        &[
            spec(0, Class::Normal, Some(1), 1 << 2, 0),
            spec(1, Class::Normal, Some(1), 0, 0),
            spec(0, Class::Normal, Some(2), 0, 0),
            spec(1, Class::Normal, Some(2), 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), vec![d[2], d[3]]);
    finished(&mut p, d[2], true);
    finished(&mut p, d[3], true);
    assert_eq!(released(&poll(&mut p)), vec![d[0], d[1]]);
    finished(&mut p, d[0], true);
    finished(&mut p, d[1], true);
    assert_eq!(p.free_slots(), 16);
}

#[test]
fn failure_cascades() {
    let mut p = policy(16, 3);
    // Gang {0, 1}; solo 2 depends on member 1; solo 3 depends on 2; member 0 has an ext fence.
    let ids = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Normal, Some(0), 0, 1),
            spec(1, Class::Normal, Some(0), 0, 0),
            spec(2, Class::Normal, None, 1 << 1, 0),
            spec(2, Class::Normal, None, 1 << 2, 0),
            spec(2, Class::Normal, None, 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), vec![ids[4]]);
    let (ok, ev) = ext_done(&mut p, ids[0], false);
    assert!(ok);
    assert_eq!(
        sorted(ev),
        sorted(ids[..4].iter().map(|&i| Event::Fail(i)).collect())
    );
    assert_eq!(p.stats().failed, 4);
    assert_eq!(p.free_slots(), 15);
    // A released gang whose member fails: the other member is cancelled, dependents fail.
    let g = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Normal, Some(0), 0, 0),
            spec(1, Class::Normal, Some(0), 0, 0),
            spec(0, Class::Normal, None, 1, 0),
        ],
    )
    .unwrap();
    finished(&mut p, ids[4], true);
    assert_eq!(released(&poll(&mut p)), vec![g[0], g[1]]);
    let (_, ev) = finished(&mut p, g[1], false);
    assert_eq!(
        sorted(ev),
        sorted(vec![Event::Cancel(g[0]), Event::Fail(g[2])])
    );
    // The leader's slot holds the gang until its last member is over.
    assert_eq!(p.gang_of(g[0]), Some(g[0]));
    let (ok, ev) = finished(&mut p, g[0], true);
    assert!(ok && ev.is_empty());
    assert_eq!(p.free_slots(), 16);
    // Leader finishes first: its slot is only freed with the last member.
    let g = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Bulk, Some(0), 0, 0),
            spec(1, Class::Bulk, Some(0), 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), g);
    finished(&mut p, g[0], true);
    assert_eq!(p.free_slots(), 14);
    assert_eq!(p.gang_of(g[0]), None);
    assert_eq!(p.gang_of(g[1]), Some(g[0]));
    let (_, ev) = finished(&mut p, g[1], false);
    assert!(ev.is_empty());
    assert_eq!(p.free_slots(), 16);
}

#[test]
fn abort_all_fails_and_cancels_then_reuse() {
    let mut p = policy(8, 2);
    let ids = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Normal, None, 0, 0),
            spec(1, Class::Normal, Some(0), 0, 1),
            spec(0, Class::Normal, Some(0), 1, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), vec![ids[0]]);
    let ev = abort(&mut p);
    assert_eq!(
        sorted(ev),
        sorted(vec![
            Event::Cancel(ids[0]),
            Event::Fail(ids[1]),
            Event::Fail(ids[2])
        ])
    );
    assert!(abort(&mut p).is_empty());
    assert_eq!(p.free_slots(), 7);
    assert!(finished(&mut p, ids[0], true).0);
    assert_eq!(p.free_slots(), 8);
    let again = submit(
        &mut p,
        0,
        &[
            spec(0, Class::Normal, Some(1), 0, 0),
            spec(1, Class::Normal, Some(1), 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(released(&poll(&mut p)), again);
}

#[test]
fn lockstep_smoke() {
    let mut h = Harness::new(16, 2);
    h.submit(
        0,
        &[
            spec(0, Class::Normal, Some(0), 0, 0),
            spec(1, Class::Normal, Some(0), 0, 0),
        ],
        false,
    )
    .unwrap();
    h.submit(
        1,
        &[
            spec(0, Class::Bulk, None, 0, 0),
            spec(0, Class::Latency, None, 1, 0),
        ],
        false,
    )
    .unwrap();
    h.drain();
}
