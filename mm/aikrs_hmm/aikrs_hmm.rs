// SPDX-License-Identifier: GPL-2.0

//! The HMM/SVM mirror: model devices that mirror process address spaces into their own
//! page tables, as a GPU does for shared virtual memory, with the ABI of the kernel's HMM
//! test driver (dmirror) so that its self test runs against them.
//!
//! - `pt` (`core/src/pt.rs`, host crate `aikrs-hmm-core`): the `core`-only 4-level
//!   device page table with 4 KiB and 2 MiB entries over a node pool, property-tested on
//!   the host;
//! - `table`: the table in the kernel, its pool of kmalloc'ed nodes (with spares
//!   reserved ahead for paths that must not sleep) and kernel errors;
//! - `mirror`: the devices `/dev/aikrs_hmm0` and `/dev/aikrs_hmm1` over
//!   `kernel::aikrs::hmm::Mirror` (interval notifier, `hmm_range_fault`, the lock);
//! - `tests`: the KUnit suite `aikrs_hmm_table` (`CONFIG_AIKRS_HMM_KUNIT_TEST`).

#[path = "core/src/pt.rs"]
#[allow(dead_code, unreachable_pub)]
mod pt;

mod mirror;
#[allow(dead_code)]
mod table;
#[cfg(CONFIG_AIKRS_HMM_KUNIT_TEST)]
mod tests;

use kernel::{aikrs::miscdev::Registration, prelude::*};

module! {
    type: AikrsHmm,
    name: "aikrs_hmm",
    description: "HMM/SVM mirror: dmirror-compatible model devices",
    license: "GPL",
}

/// The module: two model devices (hmm-tests uses two to mirror one process twice).
struct AikrsHmm {
    _devs: [Registration<mirror::MirrorFile>; 2],
}

impl kernel::Module for AikrsHmm {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let d0 = Registration::register(c"aikrs_hmm0", mirror::Dev::new(c"aikrs_hmm0")?, module)?;
        let d1 = Registration::register(c"aikrs_hmm1", mirror::Dev::new(c"aikrs_hmm1")?, module)?;
        Ok(Self { _devs: [d0, d1] })
    }
}
