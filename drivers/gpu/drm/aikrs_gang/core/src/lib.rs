// SPDX-License-Identifier: GPL-2.0

//! The `core`-only gang scheduling policy of the ai-kernel-rs GPU scheduler, as a host
//! crate.
//!
//! The algorithm is in one file, `src/policy.rs`, which the kernel module compiles directly
//! (`#[path = "core/src/policy.rs"]`): a [`Policy`] keeps the jobs of submitted batches
//! ([`Spec`]) in caller-provided [`Slot`] storage and decides when each one is handed to
//! the hardware ([`Event::Release`]): gangs all-or-nothing on idle rings, solo jobs by
//! [`Class`] with Bulk work preemptible, dependencies within a batch, external fences, and
//! failure cascades ([`Event::Fail`], [`Event::Cancel`]).
//!
//! This crate only wraps the file so that it can be tested on the host.

#![no_std]
#![forbid(unsafe_code)]

#[path = "policy.rs"]
mod policy;

pub use policy::*;
