# SPDX-License-Identifier: GPL-2.0
#
# kunit.py QEMU configuration for ai-kernel-rs: x86_64 under TCG only, 2 vCPUs.
# Linux 7.x's own x86_64 config asks for "-accel kvm" first; on machines whose nested
# KVM is broken the guest then hangs after the BIOS, so we never offer KVM.
from ..qemu_config import QemuArchParams

QEMU_ARCH = QemuArchParams(linux_arch='x86_64',
			   kconfig='''
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y''',
			   qemu_arch='x86_64',
			   kernel_path='arch/x86/boot/bzImage',
			   kernel_command_line='console=ttyS0',
			   extra_qemu_params=['-bios', 'qboot.rom', '-accel', 'tcg',
					      '-cpu', 'max', '-smp', '2'])
