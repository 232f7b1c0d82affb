// SPDX-License-Identifier: GPL-2.0

//! Criterion benchmark of the IOVA allocator: one `free` + `alloc` pair per iteration in a
//! domain of 2^36 pages with a working set of 1000 live allocations, for fixed sizes and
//! for a log-uniform mix of sizes. Each iteration frees a pseudo-randomly chosen live
//! allocation and allocates a new one in its place, so the tree stays fragmented.

use aikrs_iova_core::rng::Rng;
use aikrs_iova_core::{nodes_needed, IovaAllocator, Node};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;

const DOMAIN_START: u64 = 1;
const DOMAIN_LIMIT: u64 = 1 << 36;
const WORKING_SET: usize = 1000;
const MAX_SIZE: u64 = 1 << 18;

/// Log-uniform in `1..=MAX_SIZE`: a uniform octave, then uniform within it.
fn log_uniform_size(rng: &mut Rng) -> u64 {
    let octave = rng.below(19);
    let base = 1u64 << octave;
    (base + rng.below(base)).min(MAX_SIZE)
}

struct Churn {
    iova: IovaAllocator<Vec<Node>>,
    live: Vec<(u64, u64)>,
    rng: Rng,
}

impl Churn {
    fn new(mut size: impl FnMut(&mut Rng) -> u64) -> Self {
        let storage = vec![Node::EMPTY; nodes_needed(WORKING_SET, 0)];
        let iova = IovaAllocator::new(storage, DOMAIN_START, DOMAIN_LIMIT).unwrap();
        let mut churn = Churn {
            iova,
            live: Vec::with_capacity(WORKING_SET),
            rng: Rng::new(0x9e37_79b9_7f4a_7c15),
        };
        // Fill the working set, then churn once through it so that it is fragmented.
        for _ in 0..WORKING_SET {
            let s = size(&mut churn.rng);
            let p = churn.iova.alloc(s, u64::MAX).unwrap();
            churn.live.push((p, s));
        }
        for _ in 0..4 * WORKING_SET {
            churn.step(&mut size);
        }
        churn
    }

    /// Frees a random live allocation and allocates a new one in its slot.
    fn step(&mut self, size: &mut impl FnMut(&mut Rng) -> u64) {
        let i = self.rng.below(WORKING_SET as u64) as usize;
        let (p, s) = self.live[i];
        self.iova.free(black_box(p), black_box(s)).unwrap();
        let s = size(&mut self.rng);
        let p = self.iova.alloc(black_box(s), black_box(u64::MAX)).unwrap();
        self.live[i] = (p, s);
    }
}

fn fixed_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("free+alloc, 1000 live, 2^36 pages");
    for size in [1u64, 16, 512, 16384, 262144] {
        group.bench_with_input(BenchmarkId::new("fixed", size), &size, |b, &size| {
            let mut fixed = |_: &mut Rng| size;
            let mut churn = Churn::new(fixed);
            b.iter(|| churn.step(&mut fixed));
        });
    }
    group.bench_function("log-uniform 1..=262144", |b| {
        let mut mixed = log_uniform_size;
        let mut churn = Churn::new(mixed);
        b.iter(|| churn.step(&mut mixed));
        churn.iova.check_invariants().unwrap();
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = fixed_sizes
}
criterion_main!(benches);
