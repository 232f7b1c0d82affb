/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User ABI of /dev/aikrs_gang, the test device of the ai-kernel-rs gang-aware drm_sched
 * layer (drivers/gpu/drm/aikrs_gang, with CONFIG_AIKRS_GANG_BENCH). One command runs the
 * benchmark's workload on fresh model GPUs and returns when every job has completed: the
 * guest's CPU hotplug test runs it while a CPU goes offline and online, and its lifecycle
 * test holds the module with it. No figures are printed.
 */
#ifndef _AIKRS_GANG_UAPI_H
#define _AIKRS_GANG_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Small on purpose: a decode may wait behind a 100 ms prefill. */
#define AIKRS_GANG_MAX_STEPS	64
#define AIKRS_GANG_MAX_DECODES	16

/*
 * RUN: `steps` training steps (8-member gangs on 8 rings, each step after the one
 * before, with competing solo jobs), first under the gang policy, then on plain
 * drm_sched entities; then `decodes` serving decodes among long prefills on one ring,
 * under the gang policy and on plain entities (0: no serving). Every job must complete:
 * one that has not within 10 s fails the command with ETIMEDOUT. EINVAL for steps 0 or
 * above AIKRS_GANG_MAX_STEPS, or decodes above AIKRS_GANG_MAX_DECODES. A signal ends
 * the command early with EINTR (never restarted, SA_RESTART or not: it would start over);
 * a task being killed is not held up by it. EBUSY while 4 commands run (system-wide),
 * EFAULT for a block that cannot be read or written, ENOMEM. The out fields are ignored
 * on input.
 *
 * [0] is the gang-policy run, [1] the plain one. After a successful run,
 * jobs_run[i] == jobs_expected and gangs_started[i] == steps: a job or a gang that never
 * started would have been lost.
 */
struct aikrs_gang_run {
	__u32 steps;
	__u32 decodes;
	__u64 jobs_expected;	/* out: training jobs submitted per run */
	__u64 jobs_run[2];	/* out: training jobs that started on an engine */
	__u64 gangs_started[2];	/* out: gangs whose members all started */
	__u64 jobs_left[2];	/* out: jobs drm_sched still held after the training run */
	__u64 preemptions;	/* out: preemptions while serving, gang policy */
	__u64 ns;		/* out: time of the command */
};

#define AIKRS_GANG_IOC_MAGIC	0xA9
#define AIKRS_GANG_IOC_RUN	_IOWR(AIKRS_GANG_IOC_MAGIC, 0x00, struct aikrs_gang_run)

#endif /* _AIKRS_GANG_UAPI_H */
