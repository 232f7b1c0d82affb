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
    _planted: PlantedLeak,
}

/// Negative control of the test command (`scripts/test.sh`): with
/// `aikrs.planted_bug=module_leak` on the command line the module allocates buffers at
/// load and its teardown forgets them, a leak that kmemleak must report after `rmmod`.
/// Without the switch it holds nothing.
///
/// Sixteen buffers, each starting with the text [`PlantedLeak::MARK`] (the report's hex
/// dump shows it, so the host can tell this leak from any other); their pointers live
/// only in a holder. The teardown clears the holder's pointers without freeing the
/// buffers, then frees the holder: no memory kmemleak scans keeps a copy, but for the
/// one or two a dead kernel stack may hold. (An earlier version freed the holder with
/// the pointers still in it: on Linux 7.3 that freed memory went back into use with the
/// stale pointers and kmemleak saw most buffers as referenced.)
type PlantedBufs = [Option<KBox<[u8; 128]>>; PlantedLeak::N];
struct PlantedLeak {
    holder: Option<KBox<PlantedBufs>>,
}

impl PlantedLeak {
    const N: usize = 16;
    const MARK: &'static [u8; 16] = b"aikrs_iova-leak!";

    fn new() -> Result<Self> {
        if !kernel::aikrs::compat::cmdline_is("aikrs.planted_bug", "module_leak") {
            return Ok(Self { holder: None });
        }
        pr_info!("planting a leak in the module's teardown on purpose (aikrs.planted_bug)\n");
        let mut buf = [0u8; 128];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = Self::MARK[i % Self::MARK.len()];
        }
        let mut holder = KBox::new([const { None }; Self::N], GFP_KERNEL)?;
        for b in holder.iter_mut() {
            // (Should one allocation fail, the earlier ones are freed with the holder:
            // `Drop` below only runs for a constructed `PlantedLeak`.)
            *b = Some(KBox::new(buf, GFP_KERNEL)?);
        }
        Ok(Self {
            holder: Some(holder),
        })
    }
}

// The planted bug: the teardown forgets the buffers (drops the last pointer to each
// without freeing it), then frees the holder.
impl Drop for PlantedLeak {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.as_mut() {
            for b in holder.iter_mut() {
                core::mem::forget(b.take());
            }
        }
    }
}

impl kernel::Module for AikrsIova {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
            _demo: kernel::aikrs::compat::run_boot_mode("iova", bench::run_all, bench::Demo::run),
            _planted: PlantedLeak::new()?,
        })
    }
}
