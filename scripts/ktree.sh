#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Prepare the overlaid work tree of one kernel version and print its path.
# The cached pristine source is copied once to $AIK_BUILD/linux-VER/src (again only
# when the pristine version changes), then overlaid, and the fixes we carry for the
# kernel's own code (scripts/patches/MAJOR.MINOR/) applied. Objects go to .../obj.
#
# Usage: scripts/ktree.sh VER     (VER: 6.12, 7.3, or "kdir" with KDIR=/path)

. "$(dirname "$0")/lib.sh"

ver=${1:?usage: scripts/ktree.sh VER}
if [ "$ver" = kdir ]; then
	[ -n "${KDIR:-}" ] || die "ktree.sh kdir needs KDIR=/path/to/linux"
	pristine=$(cd "$KDIR" && pwd)
else
	pristine=$(aik_pristine "$ver")
fi
[ -f "$pristine/Makefile" ] || die "no Linux $ver source at $pristine (run: make setup)"
pver=$(make -s -C "$pristine" kernelversion)

work=$AIK_BUILD/linux-$ver
src=$work/src
if [ "$(cat "$src/.aikrs-copied-from" 2>/dev/null)" != "$pristine $pver" ]; then
	rm -rf "$src" "$work/obj" "$work/obj-prod" "$work"/headers-*
	mkdir -p "$work"
	run_logged "$work/copy.log" "copying Linux $pver sources to $src" \
		rsync -a --exclude=/.git "$pristine/" "$src/"
	echo "$pristine $pver" >"$src/.aikrs-copied-from"
fi
"$AIK_ROOT/scripts/overlay.sh" "$src" >&2

# Fixes for bugs in the kernel's own code that our debug test kernels found, carried
# until upstream has them (scripts/patches/MAJOR.MINOR/*.patch, each with its reason).
# Applied once: a patch that is already in reverses cleanly and is left alone.
mm=$(echo "$pver" | cut -d. -f1-2)
for p in "$AIK_ROOT/scripts/patches/$mm"/*.patch; do
	[ -f "$p" ] || continue
	if patch -d "$src" -p1 -R -s -f --dry-run <"$p" >/dev/null 2>&1; then
		continue
	fi
	patch -d "$src" -p1 -s -f --dry-run <"$p" >/dev/null 2>&1 ||
		die "the carried patch ${p#"$AIK_ROOT"/} does not apply to Linux $pver"
	patch -d "$src" -p1 -s -f <"$p" >&2
	note "applied ${p#"$AIK_ROOT"/}"
done
echo "$src"
