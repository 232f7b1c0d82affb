#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build our leaf modules as loadable modules (=m): the test kernel's configuration
# plus CONFIG_MODULES=y, every ai-kernel-rs tristate option switched from y to m, in
# a second object directory (build/linux-VER/obj-m, incremental). The test kernel
# itself builds them in (=y); this proves the module build on each kernel. Then boot
# that kernel (QEMU, TCG, 2 vCPUs) with the modules in a busybox initramfs: insmod
# each (its KUnit suites run at load), rmmod each, and check the KTAP results and
# that the kernel reported no problem. The guest's status lines arrive on a second
# serial port (build/linux-VER/modload.out), the kernel console in modload.log.
#
# Usage: scripts/modbuild.sh VER

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/modbuild.sh VER}
src=$("$AIK_ROOT/scripts/ktree.sh" "$ver")
obj=$AIK_BUILD/linux-$ver/obj
objm=$AIK_BUILD/linux-$ver/obj-m
[ -f "$obj/.config" ] || "$AIK_ROOT/scripts/kbuild.sh" "$ver" >/dev/null
aik_kmake_env

# Our tristate options, from our Kconfig files.
mapfile -t tri < <(cd "$AIK_ROOT" && find . -name Kconfig -not -path './build/*' -print0 |
	xargs -0 awk '/^config /{c=$2} /^[ \t]*tristate/{print c}' | sort -u)
[ ${#tri[@]} -gt 0 ] || die "no tristate option found in our Kconfig files"

mkdir -p "$objm"
cfg=$objm/.config.want
{
	grep -v -E "^(# )?CONFIG_MODULE(S|_UNLOAD)[= ]" "$obj/.config"
	echo "CONFIG_MODULES=y"
	echo "CONFIG_MODULE_UNLOAD=y"
	for t in "${tri[@]}"; do echo "CONFIG_$t=m"; done
} >"$cfg"
# Only rewrite .config when it changes, so that an unchanged tree rebuilds nothing.
if ! cmp -s "$cfg" "$objm/.config.last"; then
	cp "$cfg" "$objm/.config"
	cp "$cfg" "$objm/.config.last"
fi
log=$AIK_BUILD/linux-$ver/modbuild.log
run_logged "$log" "building Linux $ver with our modules as =m (about 5 min from clean)" \
	make -C "$src" O="$objm" "${AIK_KMAKE_ARGS[@]}" -j"$(nproc)" olddefconfig all
rc=0
for t in "${tri[@]}"; do
	grep -q "^CONFIG_$t=m" "$objm/.config" || { note "CONFIG_$t is not =m after olddefconfig"; rc=1; }
done
mapfile -t kos < <(find "$objm/aikrs" -name '*.ko' 2>/dev/null | sort)
[ ${#kos[@]} -gt 0 ] || { note "no .ko built under $objm/aikrs"; rc=1; }
for k in "${kos[@]}"; do echo "module: ${k#"$objm"/} ($(stat -c %s "$k") bytes)"; done
[ $rc = 0 ] || die "module build on Linux $ver incomplete"

# Load and unload them.
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" | grep -q 'statically linked' || die "busybox-static needed (make setup)"
root=$AIK_BUILD/linux-$ver/initramfs-m
rm -rf "$root"
mkdir -p "$root"/{bin,proc,sys,dev,lib/modules}
cp "$busybox" "$root/bin/busybox"
for a in sh mount insmod rmmod lsmod dmesg grep sed cat echo reboot; do ln -s busybox "$root/bin/$a"; done
cp "${kos[@]}" "$root/lib/modules/"
cat >"$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
# Status lines go to the second serial port: the kernel console prints asynchronously
# (7.x printer threads) and would split lines written to the same port.
if (: >/dev/ttyS1) 2>/dev/null; then exec >/dev/ttyS1 2>&1; fi
for m in /lib/modules/*.ko; do
	if insmod "$m"; then echo "AIKRS-MOD: loaded ${m##*/}"; else echo "AIKRS-MOD: insmod ${m##*/} FAILED"; fi
done
lsmod
# KUnit's own record of every suite that ran (built-in and from the modules).
for d in /sys/kernel/debug/kunit/aikrs_*; do
	[ -f "$d/results" ] && echo "AIKRS-MOD: kunit ${d##*/}: $(grep -E '^(not )?ok [0-9]+ ' "$d/results" | tail -n1)"
done
for m in /lib/modules/*.ko; do
	n=${m##*/}; n=${n%.ko}
	if rmmod "$n"; then echo "AIKRS-MOD: unloaded $n"; else echo "AIKRS-MOD: rmmod $n FAILED"; fi
done
echo "AIKRS-MOD: done"
reboot -f
INIT
chmod +x "$root/init"
initrd=$AIK_BUILD/linux-$ver/initramfs-m.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd"
qlog=$AIK_BUILD/linux-$ver/modload.log
qout=$AIK_BUILD/linux-$ver/modload.out
rm -f "$qout"
step "loading the modules in QEMU (log: $qlog)"
set +e
timeout --foreground -k 10 600 qemu-system-x86_64 -nodefaults -nographic -no-reboot \
	-accel tcg -cpu max -smp 2 -m 2048 -bios qboot.rom -serial stdio -serial "file:$qout" \
	-kernel "$objm/arch/x86/boot/bzImage" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 oops=panic kunit.filter_glob=aikrs_*" </dev/null >"$qlog" 2>&1
set -e
tr -d '\r' <"$qlog" >"$qlog.txt" && mv "$qlog.txt" "$qlog"
touch "$qout"
tr -d '\r' <"$qout" >"$qout.txt" && mv "$qout.txt" "$qout"
grep -q '^AIKRS-MOD: done' "$qout" || { note "the module guest did not finish"; rc=1; }
grep -E 'AIKRS-MOD: .*FAILED' "$qout" && rc=1
grep -E '^AIKRS-MOD: kunit .*: not ok' "$qout" && { note "a KUnit suite failed (debugfs)"; rc=1; }
if grep -m1 -E 'Kernel panic|BUG:|Oops|WARNING:|Call Trace:|UBSAN:|KASAN:' "$qlog"; then rc=1; fi
grep -E '^(\[[^]]*\] )?(not )?ok [0-9]+ aikrs_' "$qlog" || true
grep -qE '^(\[[^]]*\] )?not ok [0-9]+ aikrs_' "$qlog" && { note "a KUnit suite failed in a module"; rc=1; }
loaded=$(grep -c '^AIKRS-MOD: loaded' "$qout" || true)
[ "$loaded" = ${#kos[@]} ] || { note "loaded $loaded of ${#kos[@]} modules"; rc=1; }
[ $rc = 0 ] || die "module load test on Linux $ver failed (logs: $qlog, $qout)"
echo "modules on Linux $ver: ${#kos[@]} built as =m, loaded, KUnit passed, unloaded"
