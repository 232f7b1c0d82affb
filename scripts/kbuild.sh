#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Configure and build the test kernel of one version with kunit.py: one kernel
# serves KUnit and the guest runner. Incremental: reuses $AIK_BUILD/linux-VER/obj.
#
# Usage: scripts/kbuild.sh VER

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/kbuild.sh VER}
src=$("$AIK_ROOT/scripts/ktree.sh" "$ver")
obj=$AIK_BUILD/linux-$ver/obj
aik_kmake_env

# Every .kunitconfig in our tree contributes; on Linux 7 and newer also every
# linux7.kunitconfig (options 6.12 does not have, e.g. drm_sched's own KUnit suite).
kmajor=$(make -s -C "$src" kernelversion | cut -d. -f1)
names=(-name .kunitconfig)
[ "$kmajor" -ge 7 ] && names=(\( -name .kunitconfig -o -name linux7.kunitconfig \))
kcfg=()
while IFS= read -r f; do kcfg+=(--kunitconfig="$f"); done < <(
	cd "$AIK_ROOT" && find . "${names[@]}" -not -path './build/*' -not -path '*/target/*' | sort | sed "s|^\.|$AIK_ROOT|")

mkopts=()
for a in "${AIK_KMAKE_ARGS[@]}"; do mkopts+=(--make_options "$a"); done

cd "$src"
run_logged "$AIK_BUILD/linux-$ver/build.log" "building the Linux $ver test kernel (about 8-12 min from clean)" \
	python3 tools/testing/kunit/kunit.py build --arch=x86_64 --build_dir="$obj" \
	--qemu_config="$AIK_ROOT/tools/testing/kunit/qemu_configs/x86_64_tcg.py" \
	--jobs="$(nproc)" "${kcfg[@]}" "${mkopts[@]}"
[ -f "$obj/arch/x86/boot/bzImage" ] || die "no bzImage in $obj"
grep -q '^CONFIG_RUST=y' "$obj/.config" || die "CONFIG_RUST is off in $obj/.config (is Rust available? see the log)"
echo "$obj"
