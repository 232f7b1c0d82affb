// SPDX-License-Identifier: GPL-2.0

//! The `core`-only TLB flush planner of the ai-kernel-rs batched TLB invalidation layer,
//! as a host crate.
//!
//! The algorithm is in one file, `src/plan.rs`, which the kernel module compiles directly
//! (`#[path = "core/src/plan.rs"]`): a [`Batch`] collects validated invalidation requests
//! (address space, page range, stride) and the CPU masks to reach in caller-provided
//! storage; [`Batch::plan`] sorts and merges them and chooses the cheapest correct
//! [`Action`] (per-page invalidation, one span of one address space, or a full flush).
//!
//! This crate only wraps the file so that it can be tested on the host.

#![no_std]
#![forbid(unsafe_code)]

#[path = "plan.rs"]
mod plan;

pub use plan::*;
