#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Demo of the large-region IOVA allocator (make run): the kernel was booted with
# aikrs.mode=demo, so the module served a burst of 2 MiB..1 GiB mappings from all
# vCPUs at init; show its report and the counters it left in debugfs.
exec kmod_report demo aikrs_iova "large-region IOVA allocator" /sys/kernel/debug/aikrs_iova/demo
