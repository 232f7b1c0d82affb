// SPDX-License-Identifier: GPL-2.0

//! The `core`-only parts of the ai-kernel-rs IOVA allocator, as a host crate.
//!
//! Two files hold the algorithms, and the kernel module compiles both directly
//! (`#[path = "core/src/alloc.rs"]` and `#[path = "core/src/liveset.rs"]`):
//!
//! - `src/alloc.rs`: the IOVA range allocator, see [`IovaAllocator`];
//! - `src/liveset.rs`: the lock-free, fixed-capacity set of live allocations
//!   (`(pfn, order)`) that validates frees of cached ranges, see [`liveset::LiveSet`];
//! - `src/rng.rs`: the deterministic generator of the tests and benchmarks.
//!
//! This crate only wraps them so that they can be tested and benchmarked on the host.

#![no_std]
#![forbid(unsafe_code)]

#[path = "alloc.rs"]
mod alloc_impl;
#[path = "liveset.rs"]
pub mod liveset;
#[path = "rng.rs"]
pub mod rng;

pub use alloc_impl::*;
