#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run the KUnit suites of the built test kernel of VER under QEMU (TCG) with
# kunit.py, and print "kunit VER: N passed, N failed, N skipped".
#
# Usage: scripts/kunit.sh VER [--filter GLOB] [--attr FILTER] [--append ARGS] [--timeout S] [--expect-fail NAME]
#   --attr FILTER   a KUnit attribute filter (kunit.py --filter), e.g. module!=drm_sched_tests
#   --expect-fail NAME   negative control: succeed only if kunit.py fails and
#                        reports the failing case NAME.
# Exit status is non-zero on any failed or crashed case, a parse error, or a hang.

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/kunit.sh VER [--filter GLOB] [--append ARGS]}
shift
filter="" attr=() append=() timeout=1200 expect=""
while [ $# -gt 0 ]; do
	case $1 in
	--filter) filter=$2; shift ;;
	--attr) attr+=(--filter "$2"); shift ;;
	--append) append+=(--kernel_args "$2"); shift ;;
	--timeout) timeout=$2; shift ;;
	--expect-fail) expect=$2; shift ;;
	*) die "unknown option $1" ;;
	esac
	shift
done

work=$AIK_BUILD/linux-$ver
obj=$work/obj
[ -f "$obj/arch/x86/boot/bzImage" ] || die "no kernel in $obj (build it first: scripts/kbuild.sh $ver)"
log=$work/kunit${expect:+-negative}.log
step "KUnit on Linux $ver${filter:+ ($filter)} (log: $log)"
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
# A WARN, BUG or oops whose report names our code fails the run even if every case
# passed (the kernel's own suites may warn on purpose, so only reports that mention
# aikrs count). kunit.py leaves the raw kernel log in $obj/test.log.
# Prints the reports that mention aikrs; the last line is their count.
our_reports() {
	awk '/WARNING:|BUG:|Oops:|general protection fault/ { blk = 1; txt = "" }
	blk { txt = txt $0 "\n" }
	blk && /---\[ end trace|^$/ { if (txt ~ /aikrs/) { n++; printf "%s", txt } blk = 0 }
	END { if (blk && txt ~ /aikrs/) { n++; printf "%s", txt } print n + 0 }' "$1"
}
reports=$(our_reports "$obj/test.log" 2>/dev/null || echo 0)
ours_warn=$(echo "$reports" | tail -n1)
if [ "${ours_warn:-0}" != 0 ]; then
	echo "$reports" | head -n 40 >&2
	note "the kernel reported $ours_warn WARN/BUG/oops in our code (see $obj/test.log)"
	fail=$((fail + ours_warn))
fi
echo "kunit $ver: $pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
