# SPDX-License-Identifier: GPL-2.0
#
# kunit.py QEMU configuration for ai-kernel-rs: x86_64 under TCG only, 2 vCPUs.
# Linux 7.x's own x86_64 config asks for "-accel kvm" first; on machines whose nested
# KVM is broken the guest then hangs after the BIOS, so we never offer KVM.
#
# The CPU model is QEMU's "max" without LA57 (5-level paging). With LA57 a KASAN
# kernel reports a false wild-memory-access when an interrupt arrives while
# identify_cpu() has cleared boot_cpu_data's capabilities: pgtable_l5_enabled()
# reads X86_FEATURE_LA57 at run time, so KASAN's lower bound briefly becomes the
# 4-level one and a per-CPU access at a 5-level direct-map address (ff11...) looks
# wild. Upstream: "kasan: Fix false-positive wild-memory-access on x86 under 5-level
# paging" (LKML, June 2026); 6.12 and 7.3 have the window. kasan_multi_shot keeps
# KASAN reporting after its first report (a no-op on kernels without KASAN).
from ..qemu_config import QemuArchParams

QEMU_ARCH = QemuArchParams(linux_arch='x86_64',
			   kconfig='''
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y''',
			   qemu_arch='x86_64',
			   kernel_path='arch/x86/boot/bzImage',
			   kernel_command_line='console=ttyS0 kasan_multi_shot',
			   extra_qemu_params=['-bios', 'qboot.rom', '-accel', 'tcg',
					      '-cpu', 'max,la57=off', '-smp', '2'])
