# SPDX-License-Identifier: GPL-2.0
# Shared shell helpers for ai-kernel-rs scripts. Source this file; do not run it.

set -euo pipefail

# rustup's cargo, where the machine has one, even when the caller's PATH lacks it.
[ -d "$HOME/.cargo/bin" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH="$HOME/.cargo/bin:$PATH" ;; esac

AIK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where downloaded kernel sources and host tools live: outside git, shared by clones.
AIK_CACHE=${AIK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ai-kernel-rs}
# Where kernel work trees and objects live: per checkout, ignored by git.
AIK_BUILD=${AIK_BUILD:-$AIK_ROOT/build}

# The kernels we build against. The 6.12 LTS comes from bookworm-security, 7.3 from
# trixie-backports (fetched, never installed).
AIK_KVERS=${AIK_KVERS:-"6.12 7.3"}

# Toolchain (see Documentation/aikrs/toolchain.rst).
AIK_LLVM=${AIK_LLVM:--22}
AIK_RUSTC=${AIK_RUSTC:-/usr/bin/rustc}
AIK_RUSTDOC=${AIK_RUSTDOC:-/usr/bin/rustdoc}
AIK_BINDGEN_VERSION=${AIK_BINDGEN_VERSION:-0.73.2}
AIK_TOOLS=$AIK_CACHE/tools

aik_rust_lib_src() {
	local d
	for d in /usr/src/rustc-*/library; do
		[ -d "$d/core" ] && { echo "$d"; return 0; }
	done
	return 1
}

# Progress and errors, prefixed so they stand out in long build logs.
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Run a long command, keeping its output in a log and showing a heartbeat so a
# user (or CI) sees progress. On failure the log's tail is printed.
run_logged() {
	local log=$1 what=$2; shift 2
	mkdir -p "$(dirname "$log")"
	step "$what (log: $log)"
	local start=$SECONDS
	"$@" >"$log" 2>&1 &
	local pid=$!
	local last=$SECONDS
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if [ $((SECONDS - last)) -ge 30 ] && kill -0 "$pid" 2>/dev/null; then
			last=$SECONDS
			note "... $what: $((SECONDS - start))s, $(wc -l <"$log") log lines"
		fi
	done
	if ! wait "$pid"; then
		tail -n 40 "$log" >&2
		die "$what failed after $((SECONDS - start))s; full log: $log"
	fi
	note "$what: done in $((SECONDS - start))s"
}

# The environment every kernel make needs.
aik_kmake_env() {
	local libsrc
	libsrc=$(aik_rust_lib_src) || die "Rust library source not found (install rust-web-src: make setup)"
	export PATH="$AIK_TOOLS/bin:$PATH"
	export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm${AIK_LLVM}/lib}
	AIK_KMAKE_ARGS=(LLVM="$AIK_LLVM" RUSTC="$AIK_RUSTC" RUSTDOC="$AIK_RUSTDOC"
		RUST_LIB_SRC="$libsrc" BINDGEN="$AIK_TOOLS/bin/bindgen")
}

# Pristine source tree of a kernel version (extracted by setup.sh, never modified).
aik_pristine() { echo "$AIK_CACHE/src/linux-$1"; }

# Object directory of a kernel: "test" (bug detectors, our modules =m; make test)
# or "prod" (production-like, modules built in; make bench, make run).
aik_obj() {
	case ${2:-test} in
	test) echo "$AIK_BUILD/linux-$1/obj" ;;
	prod) echo "$AIK_BUILD/linux-$1/obj-prod" ;;
	*) die "unknown kernel flavour $2" ;;
	esac
}

# Our tristate options (the leaf modules), from our Kconfig files; the module of
# CONFIG_AIKRS_FOO is aikrs_foo.ko.
aik_tristates() {
	(cd "$AIK_ROOT" && find . -name Kconfig -not -path './build/*' -print0 |
		xargs -0 awk '/^config /{c=$2} /^[ \t]*tristate/{print c}' | sort -u)
}
