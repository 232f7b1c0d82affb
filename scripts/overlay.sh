#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Put ai-kernel-rs into a kernel source tree. Idempotent: running it again on an
# overlaid tree changes nothing (no file is rewritten, so nothing rebuilds).
#
# Usage: scripts/overlay.sh [--copy] KSRC
#   KSRC    a kernel source tree (6.12 or newer) that you are allowed to modify.
#   --copy  copy this tree into KSRC/aikrs instead of symlinking it (for packaging:
#           the result is self-contained, e.g. for a source package or dkms).
#
# What it does (see Documentation/aikrs/overlay.rst):
#   KSRC/aikrs                          -> this tree (symlink, or a copy)
#   KSRC/Kconfig                        += source "aikrs/Kconfig"
#   KSRC/Kbuild                         += obj-y += aikrs/
#   KSRC/rust/bindings/bindings_helper.h += #include of aikrs/rust/bindings/bindings_helper.h
#   KSRC/rust/helpers/helpers.c         += #include of aikrs/rust/helpers/helpers.c
#   KSRC/rust/kernel/lib.rs             += pub mod aikrs (aikrs/rust/kernel/aikrs/mod.rs)

. "$(dirname "$0")/lib.sh"

copy=0
[ "${1:-}" = "--copy" ] && { copy=1; shift; }
KSRC=${1:?usage: scripts/overlay.sh [--copy] KSRC}
KSRC=$(cd "$KSRC" && pwd)
[ -f "$KSRC/Makefile" ] && [ -f "$KSRC/Kbuild" ] || die "$KSRC is not a kernel source tree"
[ -f "$KSRC/rust/kernel/lib.rs" ] || die "$KSRC has no Rust support (rust/kernel/lib.rs); Linux 6.12 or newer is needed"
[ "$KSRC" != "$(aik_pristine 6.12)" ] && [ "$KSRC" != "$(aik_pristine 7.3)" ] ||
	die "refusing to modify the cached pristine tree $KSRC; work on a copy (scripts/ktree.sh)"
kver=$(make -s -C "$KSRC" kernelversion)
case $kver in
[0-5].* | 6.[0-9].* | 6.1[01].*) die "Linux $kver is too old: 6.12 or newer is needed" ;;
esac

MARK="ai-kernel-rs overlay"

# Append a block to a file unless the marker line is already there.
append_once() {
	local file=$1 block=$2
	grep -qF "$MARK" "$file" && return 0
	printf '\n%s\n' "$block" >>"$file"
	note "patched ${file#"$KSRC"/}"
}

if [ $copy = 1 ]; then
	[ -L "$KSRC/aikrs" ] && rm "$KSRC/aikrs"
	mkdir -p "$KSRC/aikrs"
	rsync -a --delete --exclude=/.git --exclude=/build --exclude=target --exclude='/.cache' \
		"$AIK_ROOT/" "$KSRC/aikrs/"
	note "copied $AIK_ROOT to aikrs/"
else
	if [ "$(readlink "$KSRC/aikrs" 2>/dev/null)" != "$AIK_ROOT" ]; then
		[ -e "$KSRC/aikrs" ] && [ ! -L "$KSRC/aikrs" ] && die "$KSRC/aikrs exists and is not our symlink"
		ln -sfn "$AIK_ROOT" "$KSRC/aikrs"
		note "aikrs -> $AIK_ROOT"
	fi
fi

append_once "$KSRC/Kconfig" "# $MARK
source \"aikrs/Kconfig\""

append_once "$KSRC/Kbuild" "# $MARK
obj-y			+= aikrs/"

append_once "$KSRC/rust/bindings/bindings_helper.h" "/* $MARK */
#include \"../../aikrs/rust/bindings/bindings_helper.h\""

append_once "$KSRC/rust/helpers/helpers.c" "/* $MARK */
#include \"../../aikrs/rust/helpers/helpers.c\""

append_once "$KSRC/rust/kernel/lib.rs" "// $MARK: the shared support of ai-kernel-rs.
#[path = \"../../aikrs/rust/kernel/aikrs/mod.rs\"]
pub mod aikrs;"

step "overlay applied to $KSRC (Linux $kver)"
