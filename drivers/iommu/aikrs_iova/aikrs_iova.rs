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

use core::mem::ManuallyDrop;
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
    _planted: PlantedLeak,
}

/// Negative control of the test command (`scripts/test.sh`): with
/// `aikrs.planted_bug=module_leak` on the command line the module allocates buffers at
/// load and its teardown forgets to free them, a leak that kmemleak must report after
/// `rmmod`. Without the switch it holds nothing.
///
/// Sixteen buffers whose pointers live only in a holder that the teardown frees (without
/// reading them: `ManuallyDrop`), so nothing kmemleak scans still points to them, but for
/// stale copies a kernel stack may keep of the last one or two: on Linux 7.3 a single
/// buffer whose pointer stayed in the module's data went unreported.
type Planted = [ManuallyDrop<Option<KBox<[u8; 128]>>>; PlantedLeak::N];
struct PlantedLeak {
    _holder: Option<KBox<Planted>>,
}

impl PlantedLeak {
    const N: usize = 16;

    fn new() -> Result<Self> {
        if !kernel::aikrs::compat::cmdline_is("aikrs.planted_bug", "module_leak") {
            return Ok(Self { _holder: None });
        }
        pr_info!("planting a leak in the module's teardown on purpose (aikrs.planted_bug)\n");
        let mut bufs = KBox::new([const { ManuallyDrop::new(None) }; Self::N], GFP_KERNEL)?;
        for b in bufs.iter_mut() {
            // (Should one allocation fail, the earlier ones leak: this is the planted
            // bug's own code, run only with its switch.)
            **b = Some(KBox::new([0x6b; 128], GFP_KERNEL)?);
        }
        Ok(Self {
            _holder: Some(bufs),
        })
    }
}

// The planted bug: dropping a `PlantedLeak` frees the holder, never the buffers.

impl kernel::Module for AikrsIova {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
            _demo: kernel::aikrs::compat::run_boot_mode("iova", bench::run_all, bench::Demo::run),
            _planted: PlantedLeak::new()?,
        })
    }
}
