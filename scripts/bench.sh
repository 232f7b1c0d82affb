#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: boot each production-like kernel (scripts/kbuild.sh VER --prod: no bug
# detectors, our modules built in; never the debug test kernel) once (QEMU, TCG,
# 4 vCPUs) in bench mode; every
# /bench program (tools/testing/**/bench_*.c, or module benchmarks they trigger)
# prints lines of the form
#   bench: <module>.<case> ours=<number> base=<number> unit=<unit> ratio=<number>
# (ratio > 1: ours is better). This script prints them as a table and repeats the
# machine-readable lines. TCG timings are not hardware timings: compare ratios
# measured in the same boot.
#
# Usage: scripts/bench.sh [VER...]

. "$(dirname "$0")/lib.sh"

vers=${*:-$AIK_KVERS}
rc=0
for v in $vers; do
	"$AIK_ROOT/scripts/kbuild.sh" "$v" --prod >/dev/null
	out=$("$AIK_ROOT/scripts/guest.sh" "$v" --prod --mode bench --smp 4 --timeout 3000) || rc=1
	lines=$(echo "$out" | grep -E '^bench: ' || true)
	echo
	step "benchmarks on Linux $v (QEMU TCG, 4 vCPUs, one boot)"
	if [ -z "$lines" ]; then
		note "no benchmark is registered yet (modules add bench_*.c programs)"
		continue
	fi
	printf '%-40s %14s %14s %-10s %8s\n' figure ours kernel unit ratio
	echo "$lines" | sed -E 's/^bench: ([^ ]+) ours=([^ ]+) base=([^ ]+) unit=([^ ]+) ratio=([^ ]+).*/\1 \2 \3 \4 \5/' |
		while read -r name ours base unit ratio; do
			printf '%-40s %14s %14s %-10s %8s\n' "$name" "$ours" "$base" "$unit" "$ratio"
		done
	echo
	echo "$lines"
done
exit $rc
