// SPDX-License-Identifier: GPL-2.0

//! Benchmark and demo (placeholder while being written).

use kernel::prelude::*;

pub(crate) fn run_all() {}

pub(crate) struct Demo;

impl Demo {
    pub(crate) fn run() -> Result<Self> {
        Ok(Self)
    }
}
