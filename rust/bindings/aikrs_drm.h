/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The built-in C side of `kernel::aikrs::{fence, sched, timer}` (rust/aikrs_drm.c):
 * software dma_fences, drm_sched set-up, hrtimers and work items, with the
 * differences between Linux 6.12 and 7.x hidden here. Only with
 * CONFIG_AIKRS_DRM_SCHED.
 */
#ifndef AIKRS_DRM_H
#define AIKRS_DRM_H

#include <drm/gpu_scheduler.h>
#include <linux/dma-fence.h>
#include <linux/hrtimer.h>
#include <linux/types.h>
#include <linux/workqueue.h>

/*
 * A software fence signalled by its creator: refcount 1, a context and a lock
 * of its own (so no ordering is implied against any other fence), freed by the
 * default release once the last reference is gone. NULL on allocation failure.
 */
struct dma_fence *aikrs_fence_create(void);
/*
 * Sets `error` (if negative) and signals; a no-op if already signalled. Only for
 * fences from aikrs_fence_create().
 */
void aikrs_fence_signal(struct dma_fence *fence, int error);
struct dma_fence *aikrs_fence_get(struct dma_fence *fence);
void aikrs_fence_put(struct dma_fence *fence);
bool aikrs_fence_is_signaled(struct dma_fence *fence);
/* 0 while unsignalled, 1 signalled without error, else the negative error. */
int aikrs_fence_status(struct dma_fence *fence);
/*
 * For a signalled fence: returns once every callback run by the signal has
 * returned (takes and drops the fence lock).
 */
void aikrs_fence_sync_callbacks(struct dma_fence *fence);

/*
 * drm_sched_init() with one run queue per drm_sched priority, no device, the
 * default timeout workqueue, and `submit_wq` (NULL: drm_sched allocates an
 * ordered one). `timeout_ms` 0: no timeout.
 */
int aikrs_sched_init(struct drm_gpu_scheduler *sched,
		     const struct drm_sched_backend_ops *ops,
		     struct workqueue_struct *submit_wq, u32 credit_limit,
		     unsigned int timeout_ms, const char *name);
/* What timedout_job returns after it reset the job (6.12 NOMINAL, 7.x RESET). */
extern const enum drm_gpu_sched_stat aikrs_sched_stat_reset;
/*
 * drm_sched_start() after drm_sched_stop() (the timeout recovery), without an
 * error of its own for the pending jobs (the errno argument 6.13 added is 0).
 */
void aikrs_sched_start(struct drm_gpu_scheduler *sched);
/*
 * timedout_job of a scheduler being torn down: puts the job back at the head of
 * the pending list (where drm_sched_stop() puts the bad job back; unlike it,
 * nothing else: no callbacks detached, no finished jobs freed) and returns
 * DRM_GPU_SCHED_STAT_ENODEV, so the timeout is not re-armed.
 */
enum drm_gpu_sched_stat aikrs_sched_timedout_dying(struct drm_sched_job *job);
/* Cancels the timeout work and waits for a running handler (teardown). */
void aikrs_sched_cancel_timeout(struct drm_gpu_scheduler *sched);
/* The entity a job was initialised on. */
struct drm_sched_entity *aikrs_sched_job_entity(struct drm_sched_job *job);
/* A job's finished fence (a new reference), valid once the job is armed. */
struct dma_fence *aikrs_sched_job_finished(struct drm_sched_job *job);

/*
 * A CLOCK_MONOTONIC hrtimer with absolute expiry (hard interrupt context, or
 * softirq on PREEMPT_RT).
 */
void aikrs_hrtimer_setup(struct hrtimer *timer,
			 enum hrtimer_restart (*fn)(struct hrtimer *));
void aikrs_hrtimer_start_abs(struct hrtimer *timer, s64 expires_ns);

/*
 * A per-CPU, high-priority workqueue with a rescuer (WQ_HIGHPRI |
 * WQ_MEM_RECLAIM), named `name`; destroy_workqueue() frees it. NULL on failure.
 */
struct workqueue_struct *aikrs_wq_create(const char *name);

/* INIT_WORK(); queueing goes to system_highpri_wq. */
void aikrs_work_init(struct work_struct *work, void (*fn)(struct work_struct *));
bool aikrs_work_queue(struct work_struct *work);

/*
 * The gang layer's tracepoints (rust/aikrs_gang_trace.h), callable from Rust.
 */
void aikrs_trace_gang_start(u32 ring, u64 job, u32 members, u64 skew_ns);
void aikrs_trace_gang_barrier(u32 ring, u64 job, u64 wait_ns);
void aikrs_trace_gang_preempt(u32 ring, u64 job, u64 ran_ns, u64 left_ns);
void aikrs_trace_gang_timeout(u32 ring, u64 job, bool gang);

/*
 * An in-kernel probe on those tracepoints that counts events (for tests): what
 * each event carries is summed into `v`.
 */
#define AIKRS_TRACE_GANG_START		0	/* aikrs_gang_start events */
#define AIKRS_TRACE_GANG_SKEW_NS	1	/* sum of their skew_ns */
#define AIKRS_TRACE_GANG_BARRIER	2	/* aikrs_gang_barrier events */
#define AIKRS_TRACE_GANG_BARRIER_NS	3	/* sum of their wait_ns */
#define AIKRS_TRACE_GANG_PREEMPT	4	/* aikrs_gang_preempt events */
#define AIKRS_TRACE_GANG_TIMEOUT	5	/* aikrs_gang_timeout events */
#define AIKRS_TRACE_NR			6

struct aikrs_trace_recorder {
	atomic64_t v[AIKRS_TRACE_NR];
};

/*
 * Zeroes `r` and registers its probes; -EOPNOTSUPP without CONFIG_TRACEPOINTS.
 * `r` must stay put until aikrs_trace_recorder_detach(), which returns once no
 * probe can run on it any more (it may sleep).
 */
int aikrs_trace_recorder_attach(struct aikrs_trace_recorder *r);
void aikrs_trace_recorder_detach(struct aikrs_trace_recorder *r);
u64 aikrs_trace_recorder_read(const struct aikrs_trace_recorder *r,
			      unsigned int which);

#endif /* AIKRS_DRM_H */
