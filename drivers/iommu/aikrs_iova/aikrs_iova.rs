// SPDX-License-Identifier: GPL-2.0

//! Large-region IOVA allocator.
//!
//! - [`core_alloc`]: the range tree, pure `core` Rust shared with the host crate
//!   `aikrs-iova-core` (`core/`), where property tests check it against a model;
//! - [`liveset`]: the set of live cached-size allocations that validates frees (same);
//! - `rng`: the deterministic generator of the tests and the benchmark (same);
//! - [`domain`]: the kernel domain: locking, per-CPU magazines, depot, errnos, and the
//!   CPU hotplug state that empties an offline CPU's magazines;
//! - [`device`]: `/dev/aikrs_iova`, the test device that lets user space allocate and
//!   free in a domain of its own (the guest's CPU hotplug and lifecycle tests);
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
mod device;
mod domain;
#[cfg(CONFIG_AIKRS_IOVA_KUNIT_TEST)]
mod tests;

use kernel::{aikrs::miscdev::Registration, prelude::*};

module! {
    type: AikrsIova,
    name: "aikrs_iova",
    description: "Large-region IOVA allocator with per-CPU magazines",
    license: "GPL",
}

// Fields drop in this order: the device (its files are closed by then) and the demo
// take their domains with them before the hotplug state goes.
struct AikrsIova {
    _dev: Registration<device::IovaFile>,
    #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
    _demo: Option<bench::Demo>,
    _planted: PlantedLeak,
    _hotplug: domain::Hotplug,
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
    fn init(module: &'static ThisModule) -> Result<Self> {
        // First: every domain registers with it, the benchmark's included.
        // SAFETY: It goes into the module struct below (`_hotplug`), which module exit
        // drops before the module's memory is freed; on an error return it is dropped here,
        // in init, before the module is freed as well.
        let hotplug = unsafe { domain::Hotplug::setup()? };
        let planted = PlantedLeak::new()?;
        #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
        let demo = kernel::aikrs::compat::run_boot_mode("iova", bench::run_all, bench::Demo::run);
        let dev = Registration::register(c"aikrs_iova", device::Dev, module)?;
        Ok(Self {
            _dev: dev,
            #[cfg(CONFIG_AIKRS_IOVA_BENCH)]
            _demo: demo,
            _planted: planted,
            _hotplug: hotplug,
        })
    }
}
