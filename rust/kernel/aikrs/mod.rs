// SPDX-License-Identifier: GPL-2.0

//! Shared Rust support of ai-kernel-rs, compiled into the `kernel` crate.
//!
//! The overlay (`scripts/overlay.sh`) adds this directory to `rust/kernel/lib.rs` as
//! `kernel::aikrs`, exactly as upstream abstractions live in `rust/kernel/`. The leaf
//! modules under `drivers/` and `mm/` use these safe wrappers instead of `bindings`.
//!
//! Everything here builds on Linux 6.12 and 7.x; where the two `kernel` crates differ,
//! [`compat`] hides the difference behind `CONFIG_AIKRS_LINUX_GE_7`.

pub mod compat;
pub mod cpu;
pub mod cpuhp;
#[cfg(CONFIG_DEBUG_FS)]
pub mod debugfs;
#[cfg(CONFIG_DEVICE_PRIVATE)]
pub mod devmem;
#[cfg(CONFIG_AIKRS_DRM_SCHED)]
pub mod fence;
#[cfg(CONFIG_HMM_MIRROR)]
pub mod hmm;
#[cfg(CONFIG_IOMMU_IOVA)]
pub mod iova;
pub mod kthread;
#[cfg(CONFIG_KUNIT)]
pub mod kunit;
pub mod mapping;
pub mod miscdev;
pub mod percpu;
#[cfg(CONFIG_AIKRS_DRM_SCHED)]
pub mod sched;
#[cfg(CONFIG_AIKRS_DRM_SCHED)]
pub mod timer;
#[cfg(CONFIG_AIKRS_TLB_BATCH)]
pub mod tlb;
/// The `core`-only TLB flush planner (host crate `mm/aikrs_tlb/core`, tested there).
#[cfg(CONFIG_AIKRS_TLB_BATCH)]
#[path = "../../../mm/aikrs_tlb/core/src/plan.rs"]
#[allow(dead_code, unreachable_pub)]
pub mod tlb_plan;
#[cfg(CONFIG_AIKRS_DRM_SCHED)]
pub mod trace;
pub mod vmap;
