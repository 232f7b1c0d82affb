#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest runner: boot the built test kernel of VER in QEMU (TCG) with an initramfs
# holding busybox and the static programs of tools/testing/aikrs/, collect their
# KTAP output from the second serial port (a file; the first is the kernel console,
# checked for oops, BUG, WARNING and panic), and power off.
#
# Usage: scripts/guest.sh VER [options]
#   --mode test|demo|bench   run /tests (default), the demos or the benchmarks
#   --smp N              vCPUs (default 4)
#   --timeout S          kill QEMU after S seconds: a hang is a failure (default 900)
#   --append "ARGS"      extra kernel command line
#   --expect-fail        negative control: succeed only if the run fails
#
# Exit status: 0 only if the guest reached its end, printed no kernel oops, BUG,
# WARNING or panic, and every test passed. Prints "guest VER: N passed, N failed,
# N skipped".

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/guest.sh VER [--mode test|demo] [--smp N] [--timeout S] [--append ARGS]}
shift
mode=test smp=4 timeout=900 append="" expect_fail=0
while [ $# -gt 0 ]; do
	case $1 in
	--mode) mode=$2; shift ;;
	--smp) smp=$2; shift ;;
	--timeout) timeout=$2; shift ;;
	--append) append=$2; shift ;;
	--expect-fail) expect_fail=1 ;;
	*) die "unknown option $1" ;;
	esac
	shift
done

work=$AIK_BUILD/linux-$ver
obj=$work/obj
kimg=$obj/arch/x86/boot/bzImage
[ -f "$kimg" ] || die "no kernel at $kimg (build it first: scripts/kbuild.sh $ver)"
kver=$(cat "$obj/include/config/kernel.release")
# The guest checks it booted the kernel we built: for a named version that is VER,
# for a user's tree (KDIR) the major.minor of its release.
expect_ver=$ver
[ "$ver" = kdir ] && expect_ver=$(echo "$kver" | cut -d. -f1-2)

# Userspace programs are built against the kernel's own UAPI headers.
hdr=$work/headers
if [ ! -f "$hdr/.stamp" ] || [ "$obj/.config" -nt "$hdr/.stamp" ]; then
	aik_kmake_env
	make -s -C "$work/src" O="$obj" "${AIK_KMAKE_ARGS[@]}" INSTALL_HDR_PATH="$hdr" headers_install >&2
	touch "$hdr/.stamp"
fi

root=$work/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,tests,demo,bench}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" | grep -q 'statically linked' ||
	busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox (static) not found: install busybox-static (make setup)"
cp "$busybox" "$root/bin/busybox"
for a in sh mount umount cat echo sed grep sleep ls reboot uname head tail wc tr cut dmesg find; do
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

initrd=$work/initramfs.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"

log=$work/guest-$mode.log
out=$work/guest-$mode.out
rm -f "$out"
cmdline="console=ttyS0 panic=-1 oops=panic kunit.enable=0 aikrs.mode=$mode"
cmdline+=" aikrs.expect_version=$expect_ver aikrs.expect_cpus=$smp $append"
step "booting Linux $kver in QEMU (TCG, $smp vCPUs, mode=$mode, timeout ${timeout}s; log: $log)"
set +e
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 -nodefaults -nographic -no-reboot \
	-accel tcg -cpu max -smp "$smp" -m 2048 -bios qboot.rom \
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
kernel_problem=$(grep -m1 -E 'Kernel panic|BUG:|Oops|WARNING:|Call Trace:|UBSAN:|KASAN:|kmemleak' "$log" || true)
[ -n "$kernel_problem" ] && problems+=("kernel reported: $kernel_problem")

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
	if [ ${#problems[@]} -gt 0 ] || [ "$fail" -gt 0 ]; then
		echo "guest $ver negative control ($append): failure detected as expected"
		exit 0
	fi
	echo "guest $ver negative control ($append): NOT detected"
	exit 1
fi
[ ${#problems[@]} = 0 ] || fail=$((fail + 1))
echo "guest $ver: $pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
