#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Demo of the gang-aware drm_sched layer (make run): the kernel was booted with
# aikrs.mode=demo, so the module ran a few training steps of 8-member gangs and a
# prefill/decode mix on the model GPU at init; show its report and the counters it
# left in debugfs.
d=/sys/kernel/debug/aikrs_gang
echo "aikrs_gang: gang-aware drm_sched on a model GPU, Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPUs"
dmesg | sed -n 's/^\[[^]]*\] //; /^aikrs_gang: demo: /p'
if [ ! -d "$d" ]; then
	echo "aikrs_gang: no $d (is CONFIG_AIKRS_GANG_BENCH set?)"
	exit 1
fi
for f in "$d"/*; do
	printf '  %-20s %s\n' "${f##*/}" "$(cat "$f")"
done
