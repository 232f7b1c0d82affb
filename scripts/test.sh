#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The test command (make test): set-up if needed, host cargo tests, then per kernel
# (6.12 and 7.3): build the test kernel once, KUnit under QEMU, the guest userspace
# tests, negative controls proving that a failing Rust KUnit case, a guest panic
# and a guest hang each fail a run, and our modules built as =m, loaded and
# unloaded (scripts/modbuild.sh). Ends with "N passed, N failed, N skipped".

. "$(dirname "$0")/lib.sh"

start=$SECONDS
"$AIK_ROOT/scripts/setup.sh"

declare -A P F S
total_p=0 total_f=0 total_s=0
add() { # add GROUP PASS FAIL SKIP
	P[$1]=$((${P[$1]:-0} + $2)); F[$1]=$((${F[$1]:-0} + $3)); S[$1]=$((${S[$1]:-0} + $4))
	total_p=$((total_p + $2)); total_f=$((total_f + $3)); total_s=$((total_s + $4))
}
# Run a step whose last output line is "...: N passed, N failed, N skipped".
counted() { # counted GROUP CMD...
	local g=$1 out rc line
	shift
	# (Not "tee /dev/stderr": reopening a redirected stderr file truncates it.)
	local tmp
	tmp=$(mktemp)
	set +e
	"$@" >"$tmp"
	rc=$?
	set -e
	cat "$tmp" >&2
	out=$(tail -n1 "$tmp")
	rm -f "$tmp"
	line=$(echo "$out" | grep -oE '[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?' || true)
	if [ -z "$line" ]; then
		add "$g" 0 1 0
		return
	fi
	local p f s
	p=$(echo "$line" | awk '{print $1}') f=$(echo "$line" | awk '{print $3}')
	s=$(echo "$line" | awk '{print $5}')
	[ "$rc" != 0 ] && [ "$f" = 0 ] && f=1
	add "$g" "$p" "$f" "${s:-0}"
}
# A check that passes or fails as a whole (a negative control, a build).
single() { # single GROUP CMD...
	local g=$1
	shift
	if "$@" >&2; then add "$g" 1 0 0; else add "$g" 0 1 0; fi
}

step "host: cargo test (workspace)"
cargo_summary() {
	local out rc
	set +e
	out=$(cd "$AIK_ROOT" && cargo test --workspace --release 2>&1)
	rc=$?
	set -e
	echo "$out" >&2
	echo "$out" | awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "host: %d passed, %d failed, %d skipped\n", p, f, s }' |
		{ read -r l; [ $rc != 0 ] && case $l in *" 0 failed"*) l=${l/ 0 failed/ 1 failed} ;; esac; echo "$l"; }
	return $rc
}
counted host cargo_summary

vers=$AIK_KVERS
[ -n "${KDIR:-}" ] && vers=kdir
for v in $vers; do
	if ! "$AIK_ROOT/scripts/kbuild.sh" "$v" >/dev/null; then
		note "Linux $v: the test kernel did not build; its tests cannot run"
		add "$v" 0 1 0
		continue
	fi
	counted "$v" "$AIK_ROOT/scripts/kunit.sh" "$v"
	single "$v" "$AIK_ROOT/scripts/kunit.sh" "$v" --filter 'aikrs_support_negative' \
		--append aikrs.kunit_negative_control --timeout 300 --expect-fail deliberate_failure
	counted "$v" "$AIK_ROOT/scripts/guest.sh" "$v" --mode test --smp 4
	single "$v" "$AIK_ROOT/scripts/guest.sh" "$v" --mode test --smp 2 --timeout 300 \
		--append aikrs.guest_selftest=panic --expect-fail
	single "$v" "$AIK_ROOT/scripts/guest.sh" "$v" --mode test --smp 2 --timeout 60 \
		--append aikrs.guest_selftest=hang --expect-fail
	# The TLB guest test must catch a revoke that skips its flush.
	single "$v" "$AIK_ROOT/scripts/guest.sh" "$v" --mode test --smp 4 --timeout 300 \
		--append "aikrs.only=tlb_test aikrs.tlb_negative_control" --expect-fail
	# Our modules as =m: built, loaded (their KUnit suites run), unloaded.
	single "$v" "$AIK_ROOT/scripts/modbuild.sh" "$v"
done

echo
step "summary ($(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s)"
for g in host $vers; do
	[ -n "${P[$g]+x}" ] || continue
	label=$g
	[ "$g" != host ] && label="Linux $g"
	printf '  %-12s %d passed, %d failed, %d skipped\n' "$label:" "${P[$g]}" "${F[$g]}" "${S[$g]}"
done
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" = 0 ]
