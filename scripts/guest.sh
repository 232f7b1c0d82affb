#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest runner: boot the built test kernel of VER in QEMU (TCG) with an initramfs
# holding busybox, our modules (the test kernel builds them =m) and the static
# programs of tools/testing/aikrs/, collect their KTAP output from the second serial
# port (a file; the first is the kernel console, checked for every report of the
# kernel's bug detectors by scripts/kreport.sh), and power off.
#
# Usage: scripts/guest.sh VER [options]
#   --mode test|demo|bench   run /tests (default), the demos or the benchmarks
#   --smp N              vCPUs (default 4)
#   --timeout S          kill QEMU after S seconds: a hang is a failure (default 900)
#   --append "ARGS"      extra kernel command line
#   --prod               boot the production-like kernel (build/linux-VER/obj-prod,
#                        scripts/kbuild.sh VER --prod): make bench and make run
#   --expect-fail RE     negative control: succeed only if the run fails and one of its
#                        problems, or a line of the guest's output, matches RE (may
#                        be given more than once: each must match)
#   --expect-report RE   negative control: succeed only if the kernel log holds a
#                        detector report matching RE (scripts/kreport.sh --flat: one
#                        line per report, its lines joined by " | "); with
#                        --expect-fail, both must hold
#
# Exit status: 0 only if the guest reached its end, the kernel log holds no report of
# a bug detector, the debug kernel's detectors were still on at the end, and every
# test passed. Prints "guest VER: N passed, N failed,
# N skipped".

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/guest.sh VER [--mode test|demo] [--smp N] [--timeout S] [--append ARGS]}
shift
mode=test smp=4 timeout=900 append="" expect_fail=0 expect_why=() expect_report="" flavour=test
while [ $# -gt 0 ]; do
	case $1 in
	--mode) mode=$2; shift ;;
	--smp) smp=$2; shift ;;
	--timeout) timeout=$2; shift ;;
	--append) append=$2; shift ;;
	--expect-fail) expect_fail=1; expect_why+=("$2"); shift ;;
	--expect-report) expect_report=$2; expect_fail=1; shift ;;
	--prod) flavour=prod ;;
	*) die "unknown option $1" ;;
	esac
	shift
done

work=$AIK_BUILD/linux-$ver
obj=$(aik_obj "$ver" "$flavour")
kimg=$obj/arch/x86/boot/bzImage
hint=""
[ $flavour = prod ] && hint=" --prod"
[ -f "$kimg" ] || die "no kernel at $kimg (build it first: scripts/kbuild.sh $ver$hint)"
kver=$(cat "$obj/include/config/kernel.release")
# The guest checks it booted the kernel we built: for a named version that is VER,
# for a user's tree (KDIR) the major.minor of its release.
expect_ver=$ver
[ "$ver" = kdir ] && expect_ver=$(echo "$kver" | cut -d. -f1-2)

# Userspace programs are built against the kernel's own UAPI headers.
hdr=$work/headers-$flavour
if [ ! -f "$hdr/.stamp" ] || [ "$obj/.config" -nt "$hdr/.stamp" ]; then
	aik_kmake_env
	make -s -C "$work/src" O="$obj" "${AIK_KMAKE_ARGS[@]}" INSTALL_HDR_PATH="$hdr" headers_install >&2
	touch "$hdr/.stamp"
fi

root=$work/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,tests,demo,bench,lib/modules}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" | grep -q 'statically linked' ||
	busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox (static) not found: install busybox-static (make setup)"
cp "$busybox" "$root/bin/busybox"
for a in sh mount umount cat echo sed grep sleep ls reboot uname head tail wc tr cut dmesg find \
	insmod rmmod lsmod date; do
	ln -s busybox "$root/bin/$a"
done
cp "$AIK_ROOT/tools/testing/aikrs/initramfs/init" "$root/init"
install -m 0755 "$AIK_ROOT/tools/testing/aikrs/initramfs/kmod_report" "$root/bin/kmod_report"

# Test programs: every tools/testing/**/ *_test.c becomes /tests/NAME (static).
# Demos: every demo_*.sh or demo_*.c becomes /demo/NAME; benchmarks: every
# bench_*.sh or bench_*.c becomes /bench/NAME.
# Build flags: the kernel's UAPI headers first, and the source tree for the
# headers selftests include (e.g. lib/test_hmm_uapi.h; newer selftests include
# "kselftest_harness.h" and <mm/vm_util.h> from tools/testing/selftests).
cflags=(-static -O2 -Wall -isystem "$hdr/include" -I"$work/src" -I"$work/src/tools/testing/selftests" -pthread)
while IFS= read -r c; do
	name=$(basename "$c" .c)
	dst=$root/tests/$name
	case $name in demo_*) dst=$root/demo/$name ;; bench_*) dst=$root/bench/$name ;; esac
	# "AIKRS_GUEST_LINK: a.c b.c" in a program: sources of the kernel tree under
	# test to link with it, where they exist (selftest helpers).
	extra=()
	for x in $(sed -n 's/.*AIKRS_GUEST_LINK://p' "$c"); do
		[ -f "$work/src/$x" ] && extra+=("$work/src/$x")
	done
	gcc "${cflags[@]}" -I"$(dirname "$c")" -o "$dst" "$c" "${extra[@]}" || die "building $c failed"
done < <(find "$AIK_ROOT/tools/testing" "$AIK_ROOT/drivers" "$AIK_ROOT/mm" -name '*_test.c' -o -name 'demo_*.c' -o -name 'bench_*.c' |
	grep -v '/build/' | sort)
while IFS= read -r s; do
	name=$(basename "$s" .sh)
	case $name in demo_*) install -m 0755 "$s" "$root/demo/$name" ;; *) install -m 0755 "$s" "$root/bench/$name" ;; esac
done < <(find "$AIK_ROOT/tools/testing" "$AIK_ROOT/drivers" "$AIK_ROOT/mm" -name 'demo_*.sh' -o -name 'bench_*.sh' |
	grep -v '/build/' | sort)

# Our loadable modules: the test kernel has every one of them (=m), the
# production-like kernel none (built in).
kos=()
if [ $flavour = test ]; then
	while read -r t; do
		k=$(find "$obj/aikrs" -name "$(echo "$t" | tr A-Z a-z).ko" | head -n1)
		[ -n "$k" ] || die "the test kernel has no module for CONFIG_$t (rebuild: scripts/kbuild.sh $ver)"
		kos+=("$k")
	done < <(aik_tristates)
	cp "${kos[@]}" "$root/lib/modules/"
fi

initrd=$work/initramfs.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"

# One log per kind of run, so that a negative control does not overwrite the main
# run's evidence.
label=$(echo "$append" | tr -cs 'A-Za-z0-9=_.' '_' | sed 's/^_//; s/_$//' | cut -c1-80)
sfx=""
[ $flavour = prod ] && sfx=-prod
log=$work/guest-$mode${label:+-$label}$sfx.log
out=${log%.log}.out
rm -f "$out"
# With modules, their KUnit suites run at load (the built-in ones ran under kunit.py).
kunit="kunit.enable=0"
[ "$mode" = test ] && [ ${#kos[@]} -gt 0 ] && kunit="kunit.enable=1 kunit.filter_glob=aikrs_*"
# kasan_multi_shot: one KASAN report must not hide the next. printk.devkmsg=on: the
# init copies kmemleak's reports into the kernel log line by line.
cmdline="console=ttyS0 printk.time=1 panic=-1 oops=panic $kunit kasan_multi_shot printk.devkmsg=on aikrs.mode=$mode"
cmdline+=" aikrs.expect_version=$expect_ver aikrs.expect_cpus=$smp $append"
# -cpu max without LA57: see tools/testing/kunit/qemu_configs/x86_64_tcg.py (a KASAN
# kernel with 5-level paging reports a false wild-memory-access in early boot).
step "booting Linux $kver ($flavour kernel) in QEMU (TCG, $smp vCPUs, mode=$mode, timeout ${timeout}s; log: $log)"
set +e
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 -nodefaults -nographic -no-reboot \
	-accel tcg -cpu max,la57=off -smp "$smp" -m 2048 -bios qboot.rom \
	-serial stdio -serial "file:$out" -kernel "$kimg" -initrd "$initrd" -append "$cmdline" </dev/null >"$log" 2>&1
qrc=$?
set -e
tr -d '\r' <"$log" >"$log.txt" && mv "$log.txt" "$log"
touch "$out"
tr -d '\r' <"$out" >"$out.txt" && mv "$out.txt" "$out"

problems=()
[ $qrc = 124 ] || [ $qrc = 137 ] && problems+=("guest hung: killed after ${timeout}s")
[ $qrc != 0 ] && [ $qrc != 124 ] && [ $qrc != 137 ] && problems+=("QEMU exited with status $qrc")
grep -q '^AIKRS-GUEST: done' "$out" || problems+=("guest did not reach its end")
# Every report of the kernel's bug detectors, whoever's stack (scripts/kreport.sh), on
# the console and in the kernel log the init copies to its output before it powers
# off (the console may not have printed the last messages).
sed -n 's/^dmesg: //p' "$out" >"$log.dmesg"
set +e
reports=$("$AIK_ROOT/scripts/kreport.sh" --flat "$log")
krc=$?
set -e
if [ $krc = 0 ] && [ -s "$log.dmesg" ]; then
	set +e
	reports=$("$AIK_ROOT/scripts/kreport.sh" --flat "$log.dmesg")
	krc=$?
	set -e
fi
nrep=$(tail -n1 <<<"$reports" | grep -oE '^[0-9]+ reports$' | cut -d' ' -f1 || true)
if [ $krc -gt 1 ] || [ -z "$nrep" ]; then
	problems+=("the kernel log could not be scanned for detector reports")
elif [ "$nrep" != 0 ]; then
	head -n 40 <<<"$reports" | cut -c1-400 >&2
	# Each report's header and its first lines (a lockdep report names the lock it
	# was trying to take there): the runner's summary shows these lines, and a CI log
	# shows only its tail.
	while read -r h; do problems+=("kernel reported: $h"); done < <(grep '^--- report' <<<"$reports" |
		sed -E 's/^--- report [0-9]+ \([^)]*\): //; s/ \| -+( \||$)/\1/g' |
		sed -E 's/ \| [0-9][^ ]* #[0-9]+ (Not t|T)ainted[^|]*(\||$)/ \2/; s/ \| Call Trace:.*//' |
		cut -c1-300 | head -n 5)
fi
# The debug kernel's detectors must still be on at the end (lockdep turns itself off
# after its first report or a taint; kmemleak after an internal error).
if grep -q '^AIKRS-GUEST: done' "$out"; then
	det=$(grep -m1 '^AIKRS-DETECTORS:' "$out" || true)
	grep -q '^CONFIG_PROVE_LOCKING=y' "$obj/.config" && ! grep -q 'lockdep=on' <<<"$det" &&
		problems+=("lockdep is not on at the end of the run ($det)")
	grep -q '^CONFIG_DEBUG_KMEMLEAK=y' "$obj/.config" && ! grep -q 'kmemleak=on' <<<"$det" &&
		problems+=("kmemleak is not on at the end of the run ($det)")
fi

if [ "$mode" != test ]; then
	sed -n '/^AIKRS-GUEST: begin/,/^AIKRS-GUEST: done/p' "$out"
	# A demo or benchmark program that exits non-zero failed (the init prints
	# "===== MODE NAME: exit STATUS =====" after each).
	while read -r failed; do
		problems+=("$failed")
	done < <(grep -E "^===== $mode [^ ]+: exit [1-9][0-9]* =====" "$out" | sed 's/^===== //; s/ =====$//')
	pass=0 fail=0 skip=0
	[ ${#problems[@]} = 0 ] && pass=1 || fail=1
else
	# Count the leaf results of the KTAP tree with the host tool
	# tools/testing/aikrs/ktap (rules in its src/lib.rs).
	(cd "$AIK_ROOT" && cargo build -q --release -p aikrs-ktap) || die "building ktap-summary failed"
	read -r pass _ fail _ skip _ < <("$AIK_ROOT/target/release/ktap-summary" "$out" || true)
	grep -E '^\s*not ok ' "$out" | sed 's/^/    /' >&2 || true
fi

for p in "${problems[@]}"; do note "guest $ver: $p"; done
if [ $expect_fail = 1 ]; then
	# A negative control: every expectation given must hold (a detector report and
	# the failures it names may come from one run of several planted bugs).
	found=""
	if [ -n "$expect_report" ]; then
		if ! grep -qE -- "$expect_report" <<<"$reports"; then
			echo "guest $ver negative control ($append): NO report matching $expect_report"
			exit 1
		fi
		found="the detector reported it: $(grep -m1 -E -- "$expect_report" <<<"$reports" | cut -c1-200); "
	fi
	if [ ${#expect_why[@]} -gt 0 ]; then
		if [ ${#problems[@]} = 0 ] && [ "$fail" = 0 ]; then
			echo "guest $ver negative control ($append): NOT detected (the run passed)"
			exit 1
		fi
		evidence=$(printf '%s\n' "${problems[@]}"; cat "$out")
		for why in "${expect_why[@]}"; do
			if ! grep -qE -- "$why" <<<"$evidence"; then
				echo "guest $ver negative control ($append): the run failed, but not as expected: nothing matches $why"
				exit 1
			fi
		done
		found+="failure detected as expected ($(printf '%s; ' "${expect_why[@]}"))"
	fi
	echo "guest $ver negative control ($append): $found"
	exit 0
fi
[ ${#problems[@]} = 0 ] || fail=$((fail + 1))
echo "guest $ver: $pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
