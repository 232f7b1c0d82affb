#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Demo of the gang-aware drm_sched layer (make run): the kernel was booted with
# aikrs.mode=demo, so the module ran a few training steps of 8-member gangs and a
# prefill/decode mix on the model GPU at init; show its report, the counters it left
# in debugfs, and its tracepoints (enabled from boot with trace_event=aikrs_gang).
exec kmod_report demo aikrs_gang "gang-aware drm_sched on a model GPU" \
	/sys/kernel/debug/aikrs_gang aikrs_gang
