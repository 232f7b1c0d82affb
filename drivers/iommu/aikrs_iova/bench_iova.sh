#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Benchmark of the large-region IOVA allocator against iova.c (make bench). The
# kernel was booted with aikrs.mode=bench, so the module ran the benchmark at init
# (CONFIG_AIKRS_IOVA_BENCH); print its figures from the kernel log, without the
# log prefix, for scripts/bench.sh.
out=$(dmesg | sed -n 's/^\[[^]]*\] //; s/^aikrs_iova: \(bench[-a-z]*: \)/\1/p')
if [ -z "$out" ]; then
	echo "aikrs_iova: no benchmark output in the kernel log (CONFIG_AIKRS_IOVA_BENCH?)"
	exit 1
fi
echo "$out"
echo "$out" | grep -q '^bench: iova: failed' && exit 1
exit 0
