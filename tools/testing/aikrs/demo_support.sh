#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Demo of the shared Rust support (make run): the kernel was booted with
# kunit.filter_glob=aikrs_support, so the support suite ran at boot; show its
# KTAP results from the kernel log.
echo "ai-kernel-rs shared support on Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPUs"
echo "Rust KUnit suite aikrs_support, run at boot through kernel::aikrs::kunit:"
dmesg | sed 's/^\[[^]]*\] //' | sed -n '/# Subtest: aikrs_support$/,/^ok [0-9]* aikrs_support$/p'
if dmesg | grep -qE '^(\[[^]]*\] )?ok [0-9]+ aikrs_support$'; then
	echo "support suite: passed"
else
	echo "support suite: FAILED or did not run"
	exit 1
fi
