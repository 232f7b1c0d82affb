#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Demo of the large-region IOVA allocator (make run): the kernel was booted with
# aikrs.mode=demo, so the module served a burst of 2 MiB..1 GiB mappings from all
# vCPUs at init; show its report and the counters it left in debugfs.
d=/sys/kernel/debug/aikrs_iova/demo
echo "aikrs_iova: large-region IOVA allocator on Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPUs"
dmesg | sed -n 's/^\[[^]]*\] //; /^aikrs_iova: demo: /p'
if [ ! -d "$d" ]; then
	echo "aikrs_iova: no $d (is CONFIG_AIKRS_IOVA_BENCH set?)"
	exit 1
fi
for f in "$d"/*; do
	printf '  %-20s %s\n' "${f##*/}" "$(cat "$f")"
done
