# SPDX-License-Identifier: GPL-2.0
#
# ai-kernel-rs: user-facing entry points. (Kbuild reads ./Kbuild, not this file.)
#
#   make run     set-up if needed, build the 6.12 production-like kernel with all
#                modules, boot it in QEMU, show each module's demo and statistics,
#                power off
#   make test    set-up if needed, host cargo tests, then on 6.12 and 7.3 the debug
#                test kernel (KASAN, lockdep, kmemleak, ...; modules =m): KUnit under
#                QEMU, guest userspace tests, module unload/reload, negative controls;
#                last line "N passed, N failed, N skipped"
#   make setup   install the toolchain and fetch the kernel sources (idempotent)
#   make kunit   build the kernels and run the KUnit suites only
#   make guest   build the kernels and run the guest userspace tests only
#   make bench   boot the production-like kernels once each, print the benchmark table
#   make check   rustfmt (kernel settings), clippy (CLIPPY=1) and host clippy
#   make overlay KSRC=/path/to/linux   apply the overlay to your own tree
#
# Variables: KVERS="6.12 7.3" (kernels to use), KDIR=/path/to/linux (your own tree,
# 6.12 or newer, used instead of the cached ones; it is copied, never modified).

KVERS ?= 6.12 7.3
export AIK_KVERS := $(KVERS)
ifneq ($(KDIR),)
export KDIR
VERS := kdir
else
VERS := $(KVERS)
endif
RUN_VER := $(if $(KDIR),kdir,$(firstword $(KVERS)))

.PHONY: all run test setup kunit guest bench check overlay clean help

all: help

help:
	@sed -n '3,21p' Makefile | sed 's/^# \{0,1\}//'

setup:
	scripts/setup.sh

run: setup
	scripts/kbuild.sh $(RUN_VER) --prod >/dev/null
	scripts/guest.sh $(RUN_VER) --prod --mode demo --smp 4 \
		--append "kunit.enable=1 kunit.filter_glob=aikrs_support trace_event=aikrs_gang"

test:
	scripts/test.sh

kunit: setup
	@set -e; for v in $(VERS); do scripts/kbuild.sh $$v >/dev/null; scripts/kunit.sh $$v; done

guest: setup
	@set -e; for v in $(VERS); do scripts/kbuild.sh $$v >/dev/null; scripts/guest.sh $$v --mode test; done

bench: setup
	scripts/bench.sh $(VERS)

check: setup
	scripts/check.sh $(VERS)

overlay:
	@test -n "$(KSRC)" || { echo "usage: make overlay KSRC=/path/to/linux"; exit 2; }
	scripts/overlay.sh $(KSRC)

clean:
	rm -rf build target
