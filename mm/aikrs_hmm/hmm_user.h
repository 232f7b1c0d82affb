/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The test_hmm ABI as the guest programs of aikrs_hmm use it: the kernel's
 * lib/test_hmm_uapi.h, plus the commands and flags only newer kernels define.
 */
#ifndef AIKRS_HMM_USER_H
#define AIKRS_HMM_USER_H

#include <lib/test_hmm_uapi.h>

/* Linux 7 ABI; the Rust driver has it on every kernel. */
#ifndef HMM_DMIRROR_FLAGS
#define HMM_DMIRROR_FLAGS _IOWR('H', 0x08, struct hmm_dmirror_cmd)
#endif
/* Linux 7 ABI, where the kernel has hmm_range_fault_unlocked_timeout() (else EINVAL). */
#ifndef HMM_DMIRROR_READ_UNLOCKED
#define HMM_DMIRROR_READ_UNLOCKED _IOWR('H', 0x09, struct hmm_dmirror_cmd)
#endif
#ifndef HMM_DMIRROR_FLAG_FAIL_ALLOC
#define HMM_DMIRROR_FLAG_FAIL_ALLOC (1ULL << 0)
#endif

#endif
