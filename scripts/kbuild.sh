#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Configure and build one kernel of one version. Incremental: reuses its object
# directory, and only rewrites .config when the wanted configuration changes.
#
# Usage: scripts/kbuild.sh VER [--prod]
#
# Two kernels per version, from the same fragments:
#   test (default)  build/linux-VER/obj: the kernel "make test" uses. Every
#                   .kunitconfig of this tree (on Linux 7 also linux7.kunitconfig),
#                   plus the kernel's bug detectors
#                   (tools/testing/kunit/configs/debug.config: KASAN, lockdep,
#                   DEBUG_VM, kmemleak, hung-task and soft-lockup detectors), with
#                   our leaf modules as loadable modules (=m): KUnit (kunit.py)
#                   runs the built-in suites at boot, the guest runner loads,
#                   exercises, unloads and reloads the modules.
#   --prod          build/linux-VER/obj-prod: the production-like kernel for
#                   "make bench" and "make run": the same fragments without the
#                   detectors and with our modules built in. Timings are only
#                   taken on this one.
# Prints the object directory.

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/kbuild.sh VER [--prod]}
flavour=test
[ "${2:-}" = --prod ] && flavour=prod
src=$("$AIK_ROOT/scripts/ktree.sh" "$ver")
obj=$(aik_obj "$ver" "$flavour")
aik_kmake_env

# Every .kunitconfig in our tree contributes; on Linux 7 and newer also every
# linux7.kunitconfig (options 6.12 does not have, e.g. drm_sched's own KUnit suite).
kmajor=$(make -s -C "$src" kernelversion | cut -d. -f1)
names=(-name .kunitconfig)
[ "$kmajor" -ge 7 ] && names=(\( -name .kunitconfig -o -name linux7.kunitconfig \))
mapfile -t frags < <(cd "$AIK_ROOT" && find . "${names[@]}" -not -path './build/*' -not -path '*/target/*' |
	sort | sed "s|^\.|$AIK_ROOT|")
[ $flavour = test ] && frags+=("$AIK_ROOT/tools/testing/kunit/configs/debug.config")

# Our tristate options (the leaf modules), from our Kconfig files.
mapfile -t tri < <(aik_tristates)
[ ${#tri[@]} -gt 0 ] || die "no tristate option found in our Kconfig files"

mkdir -p "$obj"
want=$obj/.config.want
{
	# What kunit.py's x86_64 QEMU configuration adds (tools/testing/kunit/qemu_configs).
	echo "CONFIG_SERIAL_8250=y"
	echo "CONFIG_SERIAL_8250_CONSOLE=y"
	cat "${frags[@]}" | grep -E '^(# )?CONFIG_'
	if [ $flavour = test ]; then
		for t in "${tri[@]}"; do echo "CONFIG_$t=m"; done
	fi
} >"$want"

cd "$src"
if ! cmp -s "$want" "$obj/.config.last" || [ ! -f "$obj/.config" ]; then
	# Later lines win (Kconfig reassigns), as with merge_config.sh.
	cp "$want" "$obj/.config"
	make -s O="$obj" "${AIK_KMAKE_ARGS[@]}" olddefconfig >"$obj/olddefconfig.log" 2>&1 ||
		{ cat "$obj/olddefconfig.log" >&2; die "olddefconfig failed for Linux $ver ($flavour)"; }
	cp "$want" "$obj/.config.last"
fi
# Every option asked for must have its value (as kunit.py checks): a detector that
# Kconfig dropped for a missing dependency would otherwise go unnoticed. The last
# assignment of an option is the one asked for.
missing=$(awk '/^CONFIG_[A-Za-z0-9_]+=/ { split($0, a, "="); w[a[1]] = $0 }
	/^# CONFIG_[A-Za-z0-9_]+ is not set/ { w[$2] = $2 "=n" }
	END { for (k in w) print w[k] }' "$want" | sort | while IFS= read -r line; do
	opt=${line%%=*} val=${line#*=}
	if [ "$val" = n ]; then
		if grep -qE "^$opt=" "$obj/.config"; then echo "$line"; fi
	else
		if ! grep -qxF "$line" "$obj/.config"; then echo "$line"; fi
	fi
done)
[ -z "$missing" ] || die "Linux $ver ($flavour): Kconfig did not take: $(echo $missing) (see $obj/.config)"

what="the Linux $ver test kernel (bug detectors on, our modules =m)"
[ $flavour = prod ] && what="the Linux $ver production-like kernel (no detectors, modules built in)"
run_logged "$obj/../build-$flavour.log" "building $what" \
	make O="$obj" "${AIK_KMAKE_ARGS[@]}" -j"$(nproc)" all
[ -f "$obj/arch/x86/boot/bzImage" ] || die "no bzImage in $obj"
grep -q '^CONFIG_RUST=y' "$obj/.config" || die "CONFIG_RUST is off in $obj/.config (is Rust available? see the log)"
echo "$obj"
