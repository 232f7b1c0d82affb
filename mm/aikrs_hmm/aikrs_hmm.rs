// SPDX-License-Identifier: GPL-2.0

//! The HMM/SVM mirror: a device that mirrors process address spaces into its own page
//! table, as a GPU does for shared virtual memory (later a dmirror-compatible device).
//!
//! For now it holds the device page table and its tests:
//!
//! - `pt` (`core/src/pt.rs`, host crate `aikrs-hmm-core`): the `core`-only 4-level
//!   device page table with 4 KiB and 2 MiB entries over a node pool, property-tested on
//!   the host;
//! - `table`: the table in the kernel, its pool of kmalloc'ed nodes (with spares
//!   reserved ahead for paths that must not sleep) and kernel errors;
//! - `tests`: the KUnit suite `aikrs_hmm_table` (`CONFIG_AIKRS_HMM_KUNIT_TEST`).

#[path = "core/src/pt.rs"]
#[allow(dead_code, unreachable_pub)]
mod pt;

// Only the tests use the table until the mirror device does.
#[cfg_attr(not(CONFIG_AIKRS_HMM_KUNIT_TEST), allow(dead_code))]
mod table;
#[cfg(CONFIG_AIKRS_HMM_KUNIT_TEST)]
mod tests;

use kernel::prelude::*;

module! {
    type: AikrsHmm,
    name: "aikrs_hmm",
    description: "HMM/SVM mirror: device page table",
    license: "GPL",
}

/// The module: nothing to set up yet (the mirror device comes later).
struct AikrsHmm {}

impl kernel::Module for AikrsHmm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self {})
    }
}
