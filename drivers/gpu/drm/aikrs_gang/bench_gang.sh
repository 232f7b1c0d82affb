#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark of the gang-aware drm_sched layer against plain drm_sched entities on the
# model GPU (make bench). The kernel was booted with aikrs.mode=bench, so the module
# ran the benchmark at init (CONFIG_AIKRS_GANG_BENCH); print its figures for
# scripts/bench.sh.
exec kmod_report bench aikrs_gang
