// SPDX-License-Identifier: GPL-2.0

//! Batched TLB invalidation: the test and demo device.
//!
//! The batching itself is `kernel::aikrs::tlb` (built in: it calls x86 code that is not
//! exported), planned by the `core`-only planner in `core/` (host crate
//! `aikrs-tlb-core`). This module adds:
//!
//! - `device`: `/dev/aikrs_tlb`, buffer objects mapped into processes and revoked one by
//!   one (`unmap_mapping_pages`) or batched, with the debugfs counters `aikrs_tlb/`;
//! - `tests`: the KUnit suite (`CONFIG_AIKRS_TLB_KUNIT_TEST`).

mod device;
#[cfg(CONFIG_AIKRS_TLB_KUNIT_TEST)]
mod tests;

use kernel::{aikrs::miscdev::Registration, prelude::*};

module! {
    type: AikrsTlb,
    name: "aikrs_tlb",
    description: "Batched TLB invalidation: buffer-object test device",
    license: "GPL",
}

struct AikrsTlb {
    _dev: Registration<device::TlbFile>,
}

impl kernel::Module for AikrsTlb {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let dev = device::Dev::new()?;
        let reg = Registration::register(c"aikrs_tlb", dev, module)?;
        Ok(Self { _dev: reg })
    }
}
