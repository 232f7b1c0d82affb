// SPDX-License-Identifier: GPL-2.0
/*
 * ai-kernel-rs: the C side of `kernel::aikrs::{fence, sched, timer}`.
 *
 * Built in (CONFIG_AIKRS_DRM_SCHED is a bool), because the `kernel` crate that
 * calls it is built in. The functions are exported (GPL) only because the
 * abstractions are generic: a module such as aikrs_gang instantiates them and
 * so calls these functions itself; the Rust abstractions remain the interface.
 * Everything here is either an inline function or macro of C that
 * Rust cannot call, or a place where Linux 6.12 and 7.x differ:
 *  - dma_fence_signal() returns int on 6.12 and void on 7.x;
 *  - hrtimer_init() became hrtimer_setup() in 6.13;
 *  - timedout_job's "handled" status is DRM_GPU_SCHED_STAT_NOMINAL on 6.12 and
 *    DRM_GPU_SCHED_STAT_RESET on 7.x;
 *  - drm_sched_start() takes an error code since 6.13.
 */

#include <linux/dma-fence.h>
#include <linux/export.h>
#include <linux/jiffies.h>
#include <linux/slab.h>
#include <linux/version.h>

#include "bindings/aikrs_drm.h"

/*
 * A software fence and its lock, in one allocation: the lock lives exactly as
 * long as the fence. `base` is first, so the default release (kfree_rcu() of
 * the dma_fence) frees the whole structure.
 */
struct aikrs_fence {
	struct dma_fence base;
	spinlock_t lock;
};

static const char *aikrs_fence_name(struct dma_fence *fence)
{
	return "aikrs";
}

static const struct dma_fence_ops aikrs_fence_ops = {
	.get_driver_name = aikrs_fence_name,
	.get_timeline_name = aikrs_fence_name,
};

struct dma_fence *aikrs_fence_create(void)
{
	struct aikrs_fence *f = kzalloc(sizeof(*f), GFP_KERNEL);

	BUILD_BUG_ON(offsetof(struct aikrs_fence, base) != 0);
	if (!f)
		return NULL;
	spin_lock_init(&f->lock);
	/* ops->release is NULL: the last put frees `f` with kfree_rcu(). */
	dma_fence_init(&f->base, &aikrs_fence_ops, &f->lock,
		       dma_fence_context_alloc(1), 1);
	return &f->base;
}
EXPORT_SYMBOL_GPL(aikrs_fence_create);

void aikrs_fence_signal(struct dma_fence *fence, int error)
{
	struct aikrs_fence *f = container_of(fence, struct aikrs_fence, base);
	unsigned long flags;

	spin_lock_irqsave(&f->lock, flags);
	if (!test_bit(DMA_FENCE_FLAG_SIGNALED_BIT, &fence->flags)) {
		if (error < 0)
			dma_fence_set_error(fence, error);
		dma_fence_signal_locked(fence);
	}
	spin_unlock_irqrestore(&f->lock, flags);
}
EXPORT_SYMBOL_GPL(aikrs_fence_signal);

struct dma_fence *aikrs_fence_get(struct dma_fence *fence)
{
	return dma_fence_get(fence);
}
EXPORT_SYMBOL_GPL(aikrs_fence_get);

void aikrs_fence_put(struct dma_fence *fence)
{
	dma_fence_put(fence);
}
EXPORT_SYMBOL_GPL(aikrs_fence_put);

bool aikrs_fence_is_signaled(struct dma_fence *fence)
{
	return dma_fence_is_signaled(fence);
}
EXPORT_SYMBOL_GPL(aikrs_fence_is_signaled);

int aikrs_fence_status(struct dma_fence *fence)
{
	return dma_fence_get_status(fence);
}
EXPORT_SYMBOL_GPL(aikrs_fence_status);

void aikrs_fence_sync_callbacks(struct dma_fence *fence)
{
	unsigned long flags;

	/*
	 * dma_fence_signal() sets the signalled bit and then runs the callbacks
	 * with the fence lock held: once we hold the lock after seeing the bit,
	 * every callback has returned.
	 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
	spin_lock_irqsave(dma_fence_spinlock(fence), flags);
	spin_unlock_irqrestore(dma_fence_spinlock(fence), flags);
#else
	spin_lock_irqsave(fence->lock, flags);
	spin_unlock_irqrestore(fence->lock, flags);
#endif
}
EXPORT_SYMBOL_GPL(aikrs_fence_sync_callbacks);

int aikrs_sched_init(struct drm_gpu_scheduler *sched,
		     const struct drm_sched_backend_ops *ops,
		     struct workqueue_struct *submit_wq, u32 credit_limit,
		     unsigned int timeout_ms, const char *name)
{
	const struct drm_sched_init_args args = {
		.ops = ops,
		.submit_wq = submit_wq,
		.num_rqs = DRM_SCHED_PRIORITY_COUNT,
		.credit_limit = credit_limit,
		.hang_limit = 0,
		.timeout = timeout_ms ? msecs_to_jiffies(timeout_ms) :
					MAX_SCHEDULE_TIMEOUT,
		.name = name,
	};

	return drm_sched_init(sched, &args);
}
EXPORT_SYMBOL_GPL(aikrs_sched_init);

#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
const enum drm_gpu_sched_stat aikrs_sched_stat_reset = DRM_GPU_SCHED_STAT_RESET;
#else
const enum drm_gpu_sched_stat aikrs_sched_stat_reset = DRM_GPU_SCHED_STAT_NOMINAL;
#endif
EXPORT_SYMBOL_GPL(aikrs_sched_stat_reset);

void aikrs_sched_start(struct drm_gpu_scheduler *sched)
{
	/*
	 * 0: a job without a hardware fence finishes with -ECANCELED, one whose
	 * fence has signalled with that fence's error, as on 6.12. (A non-zero
	 * errno would also replace the 0 of a job that completed successfully.)
	 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	drm_sched_start(sched, 0);
#else
	drm_sched_start(sched);
#endif
}
EXPORT_SYMBOL_GPL(aikrs_sched_start);

enum drm_gpu_sched_stat aikrs_sched_timedout_dying(struct drm_sched_job *job)
{
	struct drm_gpu_scheduler *sched = job->sched;

	/*
	 * drm_sched_job_timedout() took it off the pending list, so the free work
	 * cannot free it meanwhile; the list is only changed under this lock. (Should
	 * its fence signal meanwhile, the free work may miss it: a job pending at
	 * teardown is not freed anyway, see Scheduler's drop.)
	 */
	spin_lock(&sched->job_list_lock);
	list_add(&job->list, &sched->pending_list);
	spin_unlock(&sched->job_list_lock);
	return DRM_GPU_SCHED_STAT_ENODEV;
}
EXPORT_SYMBOL_GPL(aikrs_sched_timedout_dying);

void aikrs_sched_cancel_timeout(struct drm_gpu_scheduler *sched)
{
	cancel_delayed_work_sync(&sched->work_tdr);
}
EXPORT_SYMBOL_GPL(aikrs_sched_cancel_timeout);

struct drm_sched_entity *aikrs_sched_job_entity(struct drm_sched_job *job)
{
	return job->entity;
}
EXPORT_SYMBOL_GPL(aikrs_sched_job_entity);

struct dma_fence *aikrs_sched_job_finished(struct drm_sched_job *job)
{
	return dma_fence_get(&job->s_fence->finished);
}
EXPORT_SYMBOL_GPL(aikrs_sched_job_finished);

void aikrs_hrtimer_setup(struct hrtimer *timer,
			 enum hrtimer_restart (*fn)(struct hrtimer *))
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	hrtimer_setup(timer, fn, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS);
	timer->function = fn;
#endif
}
EXPORT_SYMBOL_GPL(aikrs_hrtimer_setup);

void aikrs_hrtimer_start_abs(struct hrtimer *timer, s64 expires_ns)
{
	hrtimer_start(timer, ns_to_ktime(expires_ns), HRTIMER_MODE_ABS);
}
EXPORT_SYMBOL_GPL(aikrs_hrtimer_start_abs);

struct workqueue_struct *aikrs_wq_create(const char *name)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
	/* 7.x warns unless a workqueue says whether it is per-CPU or unbound. */
	return alloc_workqueue("%s", WQ_HIGHPRI | WQ_MEM_RECLAIM | WQ_PERCPU, 0,
			       name);
#else
	return alloc_workqueue("%s", WQ_HIGHPRI | WQ_MEM_RECLAIM, 0, name);
#endif
}
EXPORT_SYMBOL_GPL(aikrs_wq_create);

void aikrs_work_init(struct work_struct *work, void (*fn)(struct work_struct *))
{
	INIT_WORK(work, fn);
}
EXPORT_SYMBOL_GPL(aikrs_work_init);

bool aikrs_work_queue(struct work_struct *work)
{
	return queue_work(system_highpri_wq, work);
}
EXPORT_SYMBOL_GPL(aikrs_work_queue);

/*
 * Tracepoints of the gang layer (rust/aikrs_gang_trace.h). The wrappers exist
 * because trace_*() are static inlines; each is a static-key test when the
 * event is off.
 */
#define CREATE_TRACE_POINTS
#include "aikrs_gang_trace.h"

void aikrs_trace_gang_start(u32 ring, u64 job, u32 members, u64 skew_ns)
{
	trace_aikrs_gang_start(ring, job, members, skew_ns);
}
EXPORT_SYMBOL_GPL(aikrs_trace_gang_start);

void aikrs_trace_gang_barrier(u32 ring, u64 job, u64 wait_ns)
{
	trace_aikrs_gang_barrier(ring, job, wait_ns);
}
EXPORT_SYMBOL_GPL(aikrs_trace_gang_barrier);

void aikrs_trace_gang_preempt(u32 ring, u64 job, u64 ran_ns, u64 left_ns)
{
	trace_aikrs_gang_preempt(ring, job, ran_ns, left_ns);
}
EXPORT_SYMBOL_GPL(aikrs_trace_gang_preempt);

void aikrs_trace_gang_timeout(u32 ring, u64 job, bool gang)
{
	trace_aikrs_gang_timeout(ring, job, gang);
}
EXPORT_SYMBOL_GPL(aikrs_trace_gang_timeout);

#ifdef CONFIG_TRACEPOINTS
static void aikrs_rec_start(void *data, u32 ring, u64 job, u32 members,
			    u64 skew_ns)
{
	struct aikrs_trace_recorder *r = data;

	atomic64_inc(&r->v[AIKRS_TRACE_GANG_START]);
	atomic64_add(skew_ns, &r->v[AIKRS_TRACE_GANG_SKEW_NS]);
}

static void aikrs_rec_barrier(void *data, u32 ring, u64 job, u64 wait_ns)
{
	struct aikrs_trace_recorder *r = data;

	atomic64_inc(&r->v[AIKRS_TRACE_GANG_BARRIER]);
	atomic64_add(wait_ns, &r->v[AIKRS_TRACE_GANG_BARRIER_NS]);
}

static void aikrs_rec_preempt(void *data, u32 ring, u64 job, u64 ran_ns,
			      u64 left_ns)
{
	struct aikrs_trace_recorder *r = data;

	atomic64_inc(&r->v[AIKRS_TRACE_GANG_PREEMPT]);
}

static void aikrs_rec_timeout(void *data, u32 ring, u64 job, bool gang)
{
	struct aikrs_trace_recorder *r = data;

	atomic64_inc(&r->v[AIKRS_TRACE_GANG_TIMEOUT]);
}

static void aikrs_trace_unregister(struct aikrs_trace_recorder *r, int n)
{
	if (n > 3)
		unregister_trace_aikrs_gang_timeout(aikrs_rec_timeout, r);
	if (n > 2)
		unregister_trace_aikrs_gang_preempt(aikrs_rec_preempt, r);
	if (n > 1)
		unregister_trace_aikrs_gang_barrier(aikrs_rec_barrier, r);
	if (n > 0)
		unregister_trace_aikrs_gang_start(aikrs_rec_start, r);
	/* No probe runs on `r` once this returns. */
	tracepoint_synchronize_unregister();
}

int aikrs_trace_recorder_attach(struct aikrs_trace_recorder *r)
{
	int i, n = 0, err;

	for (i = 0; i < AIKRS_TRACE_NR; i++)
		atomic64_set(&r->v[i], 0);
	err = register_trace_aikrs_gang_start(aikrs_rec_start, r);
	if (err)
		goto fail;
	n++;
	err = register_trace_aikrs_gang_barrier(aikrs_rec_barrier, r);
	if (err)
		goto fail;
	n++;
	err = register_trace_aikrs_gang_preempt(aikrs_rec_preempt, r);
	if (err)
		goto fail;
	n++;
	err = register_trace_aikrs_gang_timeout(aikrs_rec_timeout, r);
	if (err)
		goto fail;
	return 0;
fail:
	aikrs_trace_unregister(r, n);
	return err;
}

void aikrs_trace_recorder_detach(struct aikrs_trace_recorder *r)
{
	aikrs_trace_unregister(r, 4);
}
#else
int aikrs_trace_recorder_attach(struct aikrs_trace_recorder *r)
{
	return -EOPNOTSUPP;
}

void aikrs_trace_recorder_detach(struct aikrs_trace_recorder *r)
{
}
#endif
EXPORT_SYMBOL_GPL(aikrs_trace_recorder_attach);
EXPORT_SYMBOL_GPL(aikrs_trace_recorder_detach);

u64 aikrs_trace_recorder_read(const struct aikrs_trace_recorder *r,
			      unsigned int which)
{
	if (which >= AIKRS_TRACE_NR)
		return 0;
	return atomic64_read(&r->v[which]);
}
EXPORT_SYMBOL_GPL(aikrs_trace_recorder_read);
