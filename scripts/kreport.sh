#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Find the reports of the kernel's bug detectors in kernel logs: the one rule every
# runner (kunit.sh, guest.sh) uses to decide whether "the kernel complained".
#
# Usage: scripts/kreport.sh [--flat] LOG...
#
# A report is any line matching a detector's report header below, anywhere in the
# log, whoever's stack it names: KASAN, lockdep, RCU checks, atomic-sleep checks,
# list corruption, bad page state, hung tasks, soft lockups, RCU stalls, kmemleak,
# UBSAN, WARN, BUG, oops and panic; and a detector that switched itself off (lockdep
# after a taint, kmemleak after an error), since it would hide the next report.
# Prints each report (its header and the lines after it, up to a blank line or 25
# lines) and, last, "N reports". Exit status 1 if there is any, 2 if a log cannot be
# read (callers treat that as a failure, never as a clean log).
#
# Tolerated: only the exact messages of ALLOW below, each with the reason (a
# tolerated report is skipped whole, with the call trace that follows its header).

set -euo pipefail

# Report headers (extended regular expressions, matched anywhere in a line).
HEADERS=(
	'BUG: '                                   # KASAN, sleeping in atomic, scheduling while atomic, bad page state/map, soft lockup, workqueue lockup, invalid wait context
	'(^|\] )BUG [^ :]+ \((Not t|T)ainted'     # SLUB object debugging ("BUG kmalloc-64 (Not tainted): ...")
	'WARNING: '                               # WARN_ON, lockdep (circular, recursive, inconsistent), suspicious RCU usage
	'Oops'
	'general protection fault'
	'Kernel panic'
	'UBSAN: '
	'Call Trace:'                             # a stack dumped without one of the headers above
	'INFO: task .* blocked for more than'     # hung task detector
	'INFO: .*detected (expedited )?stall'     # RCU, RCU-tasks stalls
	'list_(add|del) corruption'               # DEBUG_LIST
	'kmemleak: [0-9]+ new suspected memory leak'
	'unreferenced object 0x'                  # kmemleak's report (the guest copies it into the log)
	'Disabling lock debugging due to kernel taint' # lockdep switched off
	'INFO: lockdep is turned off'
	'Kernel memory leak detector disabled'    # kmemleak switched off
)

# The kernel's own messages that match a header but are not a bug report, by exact
# text (fixed strings; a line containing one is not a report). Keep it short, give
# the reason for each, and never add a report raised on a real bug.
ALLOW=(
	# Linux 7.3's drm_sched KUnit suite (drm_sched_scheduler_two_clients_test, sync
	# mode) warns when a mock job completed sooner than the time the test expected a
	# cycle to take ("GPU job took less than expected"): a timing assumption of the
	# test that QEMU TCG's clock breaks, not a bug of drm_sched.
	'WARNING: drivers/gpu/drm/scheduler/tests/tests_scheduler.c:501 at drm_sched_client_work'
)

flat=0
[ "${1:-}" = --flat ] && { flat=1; shift; }
[ $# -gt 0 ] || { echo "usage: scripts/kreport.sh [--flat] LOG..." >&2; exit 2; }
for log in "$@"; do
	[ -r "$log" ] || { echo "kreport: cannot read $log" >&2; exit 2; }
done
re=$(IFS='|'; echo "${HEADERS[*]}")
allowf=$(mktemp)
trap 'rm -f "$allowf"' EXIT
printf '%s\n' "${ALLOW[@]}" | sed '/^$/d' >"$allowf"

# One report is a header and what follows it, up to the end of the report: a line of
# '=' (KASAN, SLUB), "---[ end trace" or "[ cut here ]" (WARN), a blank line, the next
# header (except "Call Trace:", which belongs to the report it is in), or 60 lines.
# Timestamps ("[   1.234567] ") are ignored. With --flat each report is one line, its
# lines joined by " | " (for matching a header and what the report names together).
n=0
for log in "$@"; do
	out=$(tr -d '\r' <"$log" | awk -v re="$re" -v allowf="$allowf" -v name="$log" -v flat=$flat '
		BEGIN { while ((getline a < allowf) > 0) allow[++na] = a }
		function allowed(l,   i) { for (i = 1; i <= na; i++) if (index(l, allow[i])) return 1; return 0 }
		function finish() { if (inrep == 1 && flat) print buf; inrep = 0 }
		{
			line = $0
			sub(/^\[ *[0-9]+\.[0-9]+\] ?/, "", line)
			hdr = (line ~ re)
			if (inrep) {
				if (NR - start >= 60 || line ~ /^[[:space:]]*$/ || line ~ /^=+$/ ||
				    line ~ /---\[ end trace/ || line ~ /\[ cut here \]/ ||
				    (hdr && line !~ /Call Trace:/)) {
					finish()
				} else {
					# (inrep 2: a tolerated report, swallowed with its call trace)
					if (inrep == 1 && flat) buf = buf " | " line
					else if (inrep == 1 && NR - start < 25) print line
					next
				}
			}
			if (hdr && allowed(line)) {
				inrep = 2; start = NR
			} else if (hdr) {
				n++; inrep = 1; start = NR
				if (flat) buf = sprintf("--- report %d (%s:%d): %s", n, name, NR, line)
				else printf "--- report %d (%s:%d)\n%s\n", n, name, NR, line
			}
		}
		END { finish(); print "#count " n + 0 }')
	c=$(sed -n 's/^#count //p' <<<"$out")
	[ "${c:-0}" -gt 0 ] && grep -v '^#count ' <<<"$out"
	n=$((n + ${c:-0}))
done
echo "$n reports"
[ "$n" = 0 ]
