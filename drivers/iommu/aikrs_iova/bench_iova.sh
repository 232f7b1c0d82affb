#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark of the large-region IOVA allocator against iova.c (make bench). The
# kernel was booted with aikrs.mode=bench, so the module ran the benchmark at init
# (CONFIG_AIKRS_IOVA_BENCH); print its figures for scripts/bench.sh.
exec kmod_report bench aikrs_iova
