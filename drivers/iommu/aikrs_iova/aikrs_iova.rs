// SPDX-License-Identifier: GPL-2.0

//! Large-region IOVA allocator.
//!
//! - [`core_alloc`]: the range tree, pure `core` Rust shared with the host crate
//!   `aikrs-iova-core` (`core/`), where property tests check it against a model;
//! - [`liveset`]: the set of live cached-size allocations that validates frees (same);
//! - `rng`: the deterministic generator of the tests and the benchmark (same);
//! - [`domain`]: the kernel domain: locking, per-CPU magazines, depot, errnos;
//! - `bench`: the benchmark against iova.c and the demo (`CONFIG_AIKRS_IOVA_BENCH`);
//! - `tests`: the KUnit suite (`CONFIG_AIKRS_IOVA_KUNIT_TEST`).

// The core files are also a host crate, whose API is `pub`; not all of it is used here.
#[allow(dead_code, unreachable_pub)]
#[path = "core/src/alloc.rs"]
mod core_alloc;
#[allow(dead_code, unreachable_pub)]
#[path = "core/src/liveset.rs"]
mod liveset;
#[cfg(any(CONFIG_AIKRS_IOVA_BENCH, CONFIG_AIKRS_IOVA_KUNIT_TEST))]
#[allow(dead_code, unreachable_pub)]
#[path = "core/src/rng.rs"]
mod rng;

#[cfg(CONFIG_AIKRS_IOVA_BENCH)]
mod bench;
mod domain;
#[cfg(CONFIG_AIKRS_IOVA_KUNIT_TEST)]
mod tests;

use kernel::prelude::*;

module! {
    type: AikrsIova,
    name: "aikrs_iova",
    description: "Large-region IOVA allocator with per-CPU magazines",
    license: "GPL",
}

struct AikrsIova {
    #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
    _demo: Option<bench::Demo>,
}

impl kernel::Module for AikrsIova {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
            _demo: kernel::aikrs::compat::run_boot_mode("iova", bench::run_all, bench::Demo::run),
        })
    }
}
