#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run the KUnit suites of the built test kernel of VER under QEMU (TCG) with
# kunit.py, and print "kunit VER: N passed, N failed, N skipped".
#
# Usage: scripts/kunit.sh VER [--filter GLOB] [--attr FILTER] [--append ARGS] [--timeout S]
#                          [--expect-fail NAME] [--expect-report REGEX]
#   --attr FILTER   a KUnit attribute filter (kunit.py --filter), e.g. speed>slow; the
#                   cases it leaves out are reported as skipped, not dropped
#   --expect-fail NAME   negative control: succeed only if kunit.py fails and
#                        reports the failing case NAME.
#   --expect-report REGEX  negative control: succeed only if the kernel log holds a
#                        detector report (scripts/kreport.sh --flat: one line per
#                        report, its lines joined by " | ") matching REGEX.
# Exit status is non-zero on any failed or crashed case, a parse error, a hang, or
# any report of the kernel's bug detectors in the kernel log (scripts/kreport.sh).

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/kunit.sh VER [--filter GLOB] [--append ARGS]}
shift
filter="" attr=() append=() timeout=1200 expect="" expect_report=""
while [ $# -gt 0 ]; do
	case $1 in
	--filter) filter=$2; shift ;;
	--attr) attr+=(--filter "$2" --filter_action skip); shift ;;
	--append) append+=(--kernel_args "$2"); shift ;;
	--timeout) timeout=$2; shift ;;
	--expect-fail) expect=$2; shift ;;
	--expect-report) expect_report=$2; shift ;;
	*) die "unknown option $1" ;;
	esac
	shift
done

work=$AIK_BUILD/linux-$ver
obj=$work/obj
[ -f "$obj/arch/x86/boot/bzImage" ] || die "no kernel in $obj (build it first: scripts/kbuild.sh $ver)"
log=$work/kunit${expect:+-negative}${expect_report:+-planted}.log
step "KUnit on Linux $ver${filter:+ ($filter)} (log: $log)"
rm -f "$obj/test.log"
set +e
(cd "$work/src" && PATH="$AIK_ROOT/tools/testing/kunit/bin:$PATH" timeout -k 10 $((timeout + 60)) python3 tools/testing/kunit/kunit.py exec \
	--build_dir="$obj" --qemu_config="$AIK_ROOT/tools/testing/kunit/qemu_configs/x86_64_tcg.py" \
	--timeout="$timeout" "${attr[@]}" "${append[@]}" ${filter:+"$filter"}) >"$log" 2>&1
rc=$?
set -e

summary=$(grep -a 'Testing complete' "$log" | tail -n1)
count() { echo "$summary" | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+' || echo 0; }
pass=$(count passed) fail=$(count failed) crash=$(count crashed) skip=$(count skipped) err=$(count errors)
fail=$((fail + crash + err))

if [ -n "$expect" ]; then
	if [ $rc != 0 ] && grep -aqE "\[FAILED\] .*$expect" "$log"; then
		echo "kunit $ver negative control: the deliberately failing case $expect failed the run, as it must"
		exit 0
	fi
	tail -n 30 "$log" >&2
	echo "kunit $ver negative control: a failing case did NOT fail the run (kunit.py exit $rc)"
	exit 1
fi

# Reports of the kernel's bug detectors anywhere in the kernel log (kunit.py keeps
# the raw log in $obj/test.log): each fails the run, whoever's stack it names.
klog=$work/kunit${expect_report:+-planted}-kernel.log
if [ -f "$obj/test.log" ]; then cp "$obj/test.log" "$klog"; else : >"$klog"; fi
set +e
reports=$("$AIK_ROOT/scripts/kreport.sh" --flat "$klog")
krc=$?
set -e
nrep=$(tail -n1 <<<"$reports" | grep -oE '^[0-9]+ reports$' | cut -d' ' -f1 || true)
if [ $krc -gt 1 ] || [ -z "$nrep" ]; then
	note "could not scan the kernel log $klog for detector reports"
	nrep=1
fi
[ -s "$klog" ] || { note "kunit.py left no kernel log"; nrep=$((nrep + 1)); }

if [ -n "$expect_report" ]; then
	if grep -qE -- "$expect_report" <<<"$reports"; then
		grep -m1 -E -- "$expect_report" <<<"$reports" | cut -c1-240 | sed 's/^/    /' >&2
		echo "kunit $ver negative control (${append[*]}): the detector reported it ($expect_report), as it must"
		exit 0
	fi
	head -n 30 <<<"$reports" >&2
	tail -n 20 "$log" >&2
	echo "kunit $ver negative control (${append[*]}): NO report matching $expect_report"
	exit 1
fi

if [ -z "$summary" ]; then
	tail -n 40 "$log" >&2
	note "kunit.py printed no summary (exit $rc): crash, hang or parse error"
	fail=$((fail + 1))
elif [ $rc != 0 ] && [ $fail = 0 ]; then
	tail -n 20 "$log" >&2
	note "kunit.py exited with status $rc"
	fail=1
fi
grep -aE '\[(FAILED|CRASHED)\]' "$log" | sed 's/^/    /' >&2 || true
if [ "${nrep:-0}" != 0 ]; then
	head -n 60 <<<"$reports" | cut -c1-400 >&2
	note "the kernel's bug detectors reported $nrep problem(s) (kernel log: $klog)"
	fail=$((fail + nrep))
fi
echo "kunit $ver: $pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
