#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark of the gang-aware drm_sched layer against plain drm_sched entities on the
# model GPU (make bench). The kernel was booted with aikrs.mode=bench, so the module
# ran the benchmark at init (CONFIG_AIKRS_GANG_BENCH); print its figures from the
# kernel log, without the log prefix, for scripts/bench.sh.
out=$(dmesg | sed -n 's/^\[[^]]*\] //; s/^aikrs_gang: \(bench[-a-z]*: \)/\1/p')
if [ -z "$out" ]; then
	echo "aikrs_gang: no benchmark output in the kernel log (CONFIG_AIKRS_GANG_BENCH?)"
	exit 1
fi
echo "$out"
echo "$out" | grep -q '^bench: gang: failed' && exit 1
exit 0
