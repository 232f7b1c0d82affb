#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything ai-kernel-rs needs on Debian 12 and bring the kernel sources
# into the cache. Idempotent: a second run checks, finds everything present, and
# returns in seconds without changing anything.
#
# Usage: scripts/setup.sh [--check]
#   --check   only report what is missing; install nothing.
#   KDIR=/path/to/linux  also accepted: that tree is used instead of the cached 6.12.

. "$(dirname "$0")/lib.sh"

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

DEB_PKGS=(rustc-web rust-web-src rust-web-clippy rustfmt-web clang-22 lld-22 llvm-22 libclang-22-dev
	flex bison bc libelf-dev libssl-dev cpio make gcc libc6-dev python3 rsync xz-utils
	busybox-static dpkg-dev)
BPO_PKGS=(qemu-system-x86)

missing_debs() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
			echo "$p"
	done
}

is_debian12() {
	[ -r /etc/os-release ] && . /etc/os-release && [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ]
}

not_debian_help() {
	cat >&2 <<'TXT'
This machine is not Debian 12, so setup will not install packages. Provide these yourself:
  - rustc 1.78+ with the matching core/alloc source (Debian: rustc-web, rust-web-src;
    rustup: `rustup component add rust-src`), and set AIK_RUSTC, AIK_RUSTDOC.
  - clang, lld and libclang of the same LLVM major as rustc (AIK_LLVM=-NN or AIK_LLVM=1)
  - bindgen-cli >= 0.71.1 (`cargo install --locked bindgen-cli`) at $AIK_CACHE/tools/bin
  - flex bison bc libelf-dev libssl-dev cpio make gcc python3 rsync busybox (static)
  - qemu-system-x86_64
  - kernel sources: Linux 6.12 and 7.3 unpacked at $AIK_CACHE/src/linux-6.12 and
    $AIK_CACHE/src/linux-7.3, or a tree of your own with KDIR=/path/to/linux
TXT
}

APT_UPDATED=0
apt_update_once() {
	[ $APT_UPDATED = 1 ] && return
	run_logged "$AIK_CACHE/log/apt-update.log" "apt-get update" apt-get update
	APT_UPDATED=1
}

ensure_backports_source() {
	local f=/etc/apt/sources.list.d/ai-kernel-rs-bookworm-backports.sources
	if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		step "adding the bookworm-backports apt source ($f)"
		cat >"$f" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
		APT_UPDATED=0
	fi
	if ! grep -rqs 'bookworm-security' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		step "adding the bookworm-security apt source"
		cat >/etc/apt/sources.list.d/ai-kernel-rs-bookworm-security.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
		APT_UPDATED=0
	fi
}

install_packages() {
	local miss bmiss
	# The host workspace and bindgen-cli need cargo: rustup's if present, else Debian's
	# cargo-web (same 1.96 as rustc-web).
	command -v cargo >/dev/null || DEB_PKGS+=(cargo-web)
	miss=$(missing_debs "${DEB_PKGS[@]}" | tr '\n' ' ')
	bmiss=$(missing_debs "${BPO_PKGS[@]}" | tr '\n' ' ')
	[ -z "$miss$bmiss" ] && { note "Debian packages: all present"; return; }
	[ $check_only = 1 ] && { note "missing Debian packages: $miss $bmiss"; return 1; }
	[ "$(id -u)" = 0 ] || die "missing Debian packages ($miss $bmiss); run setup as root or: sudo apt-get install $miss; sudo apt-get install -t bookworm-backports $bmiss"
	ensure_backports_source
	apt_update_once
	export DEBIAN_FRONTEND=noninteractive
	if [ -n "$miss" ]; then
		# shellcheck disable=SC2086
		run_logged "$AIK_CACHE/log/apt-install.log" "apt-get install $miss" \
			apt-get install -y --no-install-recommends $miss
	fi
	if [ -n "$bmiss" ]; then
		# shellcheck disable=SC2086
		run_logged "$AIK_CACHE/log/apt-install-bpo.log" "apt-get install -t bookworm-backports $bmiss" \
			apt-get install -y --no-install-recommends -t bookworm-backports $bmiss
	fi
	miss=$(missing_debs "${DEB_PKGS[@]}" "${BPO_PKGS[@]}" | tr '\n' ' ')
	[ -z "$miss" ] || die "still missing after apt-get install: $miss"
}

install_bindgen() {
	local have=""
	[ -x "$AIK_TOOLS/bin/bindgen" ] && have=$("$AIK_TOOLS/bin/bindgen" --version 2>/dev/null | awk '{print $2}')
	if [ "$have" = "$AIK_BINDGEN_VERSION" ]; then
		note "bindgen $have: present"
		return
	fi
	[ $check_only = 1 ] && { note "missing: bindgen-cli $AIK_BINDGEN_VERSION"; return 1; }
	command -v cargo >/dev/null || die "cargo not found: install Rust (rustup or Debian's cargo) to build bindgen-cli"
	run_logged "$AIK_CACHE/log/bindgen-install.log" "cargo install bindgen-cli $AIK_BINDGEN_VERSION (about 3 minutes)" \
		cargo install --locked --root "$AIK_TOOLS" bindgen-cli --version "$AIK_BINDGEN_VERSION"
}

# Unpack a kernel source tarball into the cache, once. The tree is never modified
# afterwards: builds work on a copy (scripts/ktree.sh).
unpack_tarball() {
	local tarball=$1 ver=$2 dst
	dst=$(aik_pristine "$ver")
	[ -f "$dst/.aikrs-pristine" ] && return
	local tmp=$AIK_CACHE/src/.unpack-$ver
	rm -rf "$tmp" && mkdir -p "$tmp"
	run_logged "$AIK_CACHE/log/unpack-$ver.log" "unpacking Linux $ver sources" tar -C "$tmp" -xf "$tarball"
	local top
	top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n1)
	[ -f "$top/Makefile" ] || die "no kernel tree in $tarball"
	rm -rf "$dst"
	mv "$top" "$dst"
	rm -rf "$tmp"
	make -s -C "$dst" kernelversion >"$dst/.aikrs-pristine"
	note "Linux $(cat "$dst/.aikrs-pristine") at $dst"
}

fetch_612() {
	local dst
	dst=$(aik_pristine 6.12)
	[ -f "$dst/.aikrs-pristine" ] && { note "Linux 6.12 source: $(cat "$dst/.aikrs-pristine") present"; return; }
	[ $check_only = 1 ] && { note "missing: Linux 6.12 source"; return 1; }
	if [ -z "$(missing_debs linux-source-6.12)" ] || { apt_update_once &&
		run_logged "$AIK_CACHE/log/apt-linux-source-6.12.log" "apt-get install linux-source-6.12" \
			apt-get install -y --no-install-recommends linux-source-6.12; }; then
		unpack_tarball /usr/src/linux-source-6.12.tar.xz 6.12
	fi
}

# Linux 7.3 is only in trixie-backports. Fetch the (architecture-independent)
# linux-source-7.3 package with a private apt state, so the system's sources
# never see trixie, and unpack it without installing it.
fetch_73() {
	local dst
	dst=$(aik_pristine 7.3)
	[ -f "$dst/.aikrs-pristine" ] && { note "Linux 7.3 source: $(cat "$dst/.aikrs-pristine") present"; return; }
	[ $check_only = 1 ] && { note "missing: Linux 7.3 source"; return 1; }
	local st=$AIK_CACHE/apt-trixie
	mkdir -p "$st/lists/partial" "$st/archives/partial" "$st/etc/sources.list.d" "$st/etc/preferences.d" "$st/deb"
	cat >"$st/etc/sources.list.d/trixie.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	: >"$st/etc/sources.list"
	local opts=(-o Dir::State="$st" -o Dir::State::Lists="$st/lists" -o Dir::State::status=/dev/null
		-o Dir::Cache="$st" -o Dir::Cache::Archives="$st/archives"
		-o Dir::Etc::SourceList="$st/etc/sources.list" -o Dir::Etc::SourceParts="$st/etc/sources.list.d"
		-o Dir::Etc::Preferences="$st/etc/preferences" -o Dir::Etc::PreferencesParts="$st/etc/preferences.d"
		-o APT::Architecture=amd64)
	run_logged "$AIK_CACHE/log/apt-trixie-update.log" "apt-get update (private trixie-backports state)" \
		apt-get "${opts[@]}" update
	rm -f "$st"/deb/linux-source-7.3_*.deb
	(cd "$st/deb" && run_logged "$AIK_CACHE/log/apt-trixie-download.log" "apt-get download linux-source-7.3" \
		apt-get "${opts[@]}" download linux-source-7.3)
	local deb
	deb=$(ls "$st"/deb/linux-source-7.3_*.deb 2>/dev/null | head -n1)
	[ -n "$deb" ] || die "linux-source-7.3 could not be downloaded from trixie-backports"
	rm -rf "$st/x" && dpkg -x "$deb" "$st/x"
	local tarball
	tarball=$(ls "$st"/x/usr/src/linux-source-7.3.tar.* | head -n1)
	[ -f "$tarball" ] || die "no source tarball in $deb"
	unpack_tarball "$tarball" 7.3
	rm -rf "$st/x"
}

main() {
	mkdir -p "$AIK_CACHE/log" "$AIK_CACHE/src"
	step "ai-kernel-rs setup (cache: $AIK_CACHE)"
	local rc=0
	if is_debian12; then
		install_packages || rc=1
	else
		not_debian_help
		local t
		for t in clang ld.lld flex bison bc cpio make gcc python3 rsync qemu-system-x86_64; do
			command -v "$t" >/dev/null || command -v "$t$AIK_LLVM" >/dev/null || { note "missing: $t"; rc=1; }
		done
		aik_rust_lib_src >/dev/null || { note "missing: Rust core library source"; rc=1; }
		[ $rc = 0 ] || die "install the tools listed above, then run setup again"
	fi
	install_bindgen || rc=1
	if [ -n "${KDIR:-}" ]; then
		[ -f "$KDIR/Makefile" ] || die "KDIR=$KDIR is not a kernel tree"
		note "using KDIR=$KDIR ($(make -s -C "$KDIR" kernelversion))"
	else
		local v
		for v in $AIK_KVERS; do
			case $v in
			6.12) fetch_612 || rc=1 ;;
			7.3) fetch_73 || rc=1 ;;
			*) die "unknown kernel version $v (known: 6.12 7.3; use KDIR= for others)" ;;
			esac
		done
	fi
	[ $rc = 0 ] || die "setup is incomplete (see 'missing' lines above); run: make setup"
	touch "$AIK_CACHE/.setup-done"
	step "setup complete"
}

main "$@"
