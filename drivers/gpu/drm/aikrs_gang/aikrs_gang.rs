// SPDX-License-Identifier: GPL-2.0

//! Gang-aware GPU job scheduling on drm_sched, on a model GPU.
//!
//! - `policy` (`core/src/policy.rs`, host crate `aikrs-gang-core`): the `core`-only
//!   policy deciding when each job may reach the hardware (gangs all-or-nothing, DAG
//!   dependencies, priority classes), property-tested on the host;
//! - `model`: the model GPU, N rings each driven by a real `drm_gpu_scheduler`, with an
//!   hrtimer "engine" per ring that runs, preempts and completes jobs;
//! - `gang`: the layer over drm_sched that applies the policy, and plain drm_sched
//!   contexts for comparison;
//! - `tests`: the KUnit suite (`CONFIG_AIKRS_GANG_KUNIT_TEST`);
//! - `bench`: the benchmark and demo (`CONFIG_AIKRS_GANG_BENCH`, `aikrs.mode=`);
//! - `device`: `/dev/aikrs_gang`, the test device that runs the benchmark's workload on
//!   demand (`CONFIG_AIKRS_GANG_BENCH`; the guest's CPU hotplug and lifecycle tests).

#[path = "core/src/policy.rs"]
#[allow(dead_code, unreachable_pub)]
mod policy;

#[cfg(CONFIG_AIKRS_GANG_BENCH)]
mod bench;
#[cfg(CONFIG_AIKRS_GANG_BENCH)]
mod device;
mod gang;
mod model;
#[cfg(CONFIG_AIKRS_GANG_KUNIT_TEST)]
mod tests;

use kernel::prelude::*;

module! {
    type: AikrsGang,
    name: "aikrs_gang",
    description: "Gang-aware drm_sched policy on a model GPU",
    license: "GPL",
}

struct AikrsGang {
    #[cfg(CONFIG_AIKRS_GANG_BENCH)]
    _dev: kernel::aikrs::miscdev::Registration<device::GangFile>,
    #[cfg(CONFIG_AIKRS_GANG_BENCH)]
    _demo: Option<bench::Demo>,
}

impl kernel::Module for AikrsGang {
    #[cfg_attr(not(CONFIG_AIKRS_GANG_BENCH), allow(unused_variables))]
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            #[cfg(CONFIG_AIKRS_GANG_BENCH)]
            _dev: kernel::aikrs::miscdev::Registration::register(
                c"aikrs_gang",
                device::Dev,
                module,
            )?,
            #[cfg(CONFIG_AIKRS_GANG_BENCH)]
            _demo: kernel::aikrs::compat::run_boot_mode("gang", bench::run_all, bench::Demo::run),
        })
    }
}
