// SPDX-License-Identifier: GPL-2.0

//! The `core`-only device page table of the ai-kernel-rs HMM mirror driver, as a host
//! crate.
//!
//! The algorithm is in one file, `src/pt.rs`, which the kernel module compiles directly
//! (`#[path = "core/src/pt.rs"]`): a [`PageTable`] is a 4-level, GPU-MMU-like table
//! mirroring a 48-bit CPU virtual address space with 4 KiB and 2 MiB ([`HUGE_SIZE`])
//! entries, each holding a pfn and [`Perm`]issions. Its nodes come from a caller-provided
//! [`Pool`] (no allocation in the core); [`PageTable::map`], [`PageTable::map_huge`],
//! [`PageTable::invalidate`], [`PageTable::protect`], [`PageTable::lookup`] and
//! [`PageTable::for_each`] only touch the part of the table in their range, and tables
//! left empty are freed at once.
//!
//! This crate only wraps the file so that it can be tested on the host.

#![no_std]
#![forbid(unsafe_code)]

#[path = "pt.rs"]
mod pt;

pub use pt::*;
