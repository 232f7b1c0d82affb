// SPDX-License-Identifier: GPL-2.0

//! A small deterministic pseudo-random generator (xorshift64*, Vigna 2016) for tests and
//! benchmarks, so that a failing run reproduces from its seed. Not for anything that
//! needs unpredictability. Pure `core` Rust, compiled into the kernel module's tests and
//! benchmark and used by the host tests.

/// xorshift64*: 64 bits of state, period 2^64 - 1.
///
/// # Invariants
///
/// The state is never zero (zero is a fixed point); [`Rng::new`] maps a zero seed to a
/// non-zero one.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed` (any value, zero included).
    pub const fn new(seed: u64) -> Self {
        // INVARIANT: a zero seed becomes a fixed non-zero state.
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`0` when `n == 0`); slightly biased for huge `n`, which does not
    /// matter for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        match n {
            0 => 0,
            n => self.next_u64() % n,
        }
    }
}
