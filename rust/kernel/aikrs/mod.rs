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
#[cfg(CONFIG_DEBUG_FS)]
pub mod debugfs;
#[cfg(CONFIG_IOMMU_IOVA)]
pub mod iova;
pub mod kthread;
#[cfg(CONFIG_KUNIT)]
pub mod kunit;
pub mod percpu;
