#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make check: rustfmt with the kernel's .rustfmt.toml on our kernel Rust, clippy on
# it through the kernel build (CLIPPY=1, Debian's clippy-driver matching rustc),
# and cargo fmt / cargo clippy -D warnings on the host workspace.
#
# Usage: scripts/check.sh [VER...]   (clippy runs against each kernel; default: all)

. "$(dirname "$0")/lib.sh"

vers=${*:-$AIK_KVERS}
rc=0

# Our Rust that the kernel build compiles (the kernel crate part and leaf objects).
touch_kernel_rust() {
	find "$AIK_ROOT/rust" "$AIK_ROOT/drivers" "$AIK_ROOT/mm" -name '*.rs' -not -path '*/host/*' -exec touch {} +
}
cd "$AIK_ROOT"
mapfile -t krs < <(git ls-files '*.rs' | grep -v '^tools/testing/aikrs/ktap/' | grep -vE '(^|/)(host|core)/' || true)
first=$(set -- $vers; echo "$1")
src=$("$AIK_ROOT/scripts/ktree.sh" "$first")

step "rustfmt (kernel settings: $src/.rustfmt.toml) on ${#krs[@]} kernel Rust files"
if [ ${#krs[@]} -gt 0 ]; then
	rustfmt --check --edition 2021 --config-path "$src/.rustfmt.toml" "${krs[@]}" || { rc=1; note "run: rustfmt --edition 2021 --config-path $src/.rustfmt.toml <files>"; }
fi

for v in $vers; do
	src=$("$AIK_ROOT/scripts/ktree.sh" "$v")
	obj=$AIK_BUILD/linux-$v/obj
	[ -f "$obj/.config" ] || "$AIK_ROOT/scripts/kbuild.sh" "$v" >/dev/null
	aik_kmake_env
	log=$AIK_BUILD/linux-$v/clippy.log
	step "clippy (CLIPPY=1) on kernel::aikrs and our objects, Linux $v (log: $log)"
	# Recompile our Rust under clippy-driver even if it is up to date.
	touch_kernel_rust
	if ! make -C "$src" O="$obj" "${AIK_KMAKE_ARGS[@]}" CLIPPY=1 CLIPPY_DRIVER=/usr/bin/clippy-driver \
		-j"$(nproc)" rust/ aikrs/ >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		rc=1
		continue
	fi
	if grep -B2 -A12 -E '^(warning|error)' "$log" | grep -q 'aikrs/'; then
		grep -A12 -E '^(warning|error)' "$log" >&2
		note "clippy found problems in our code on Linux $v"
		rc=1
	else
		note "clippy: clean on Linux $v"
	fi
	# Rebuild normally so the next test run does not link clippy-built objects.
	touch_kernel_rust
done

step "host workspace: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all --check || rc=1
cargo clippy --workspace --all-targets -- -D warnings || rc=1

[ $rc = 0 ] && step "check: clean" || die "check found problems (see above)"
