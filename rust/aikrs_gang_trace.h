/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Tracepoints of the gang-aware drm_sched layer (drivers/gpu/drm/aikrs_gang),
 * defined in the built-in rust/aikrs_drm.c and raised through
 * `kernel::aikrs::trace`. Event system "aikrs_gang":
 *
 *   aikrs_gang_start    the last member of a gang started on its ring; skew is
 *                       the time from the first member's start to this one
 *   aikrs_gang_barrier  a gang member was released to drm_sched; wait is the
 *                       time from its last dependency being met to its release
 *                       (time spent at the gang barrier)
 *   aikrs_gang_preempt  a job stopped at a preemption point for a
 *                       higher-priority job; ran is the slice it just ran,
 *                       left the run time it still needs
 *   aikrs_gang_timeout  drm_sched's timeout handler fired for a job
 *
 * Times are nanoseconds of CLOCK_MONOTONIC; job ids are the model GPU's.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM aikrs_gang

#if !defined(AIKRS_GANG_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define AIKRS_GANG_TRACE_H

#include <linux/tracepoint.h>
#include <linux/types.h>

TRACE_EVENT(aikrs_gang_start,
	TP_PROTO(u32 ring, u64 job, u32 members, u64 skew_ns),
	TP_ARGS(ring, job, members, skew_ns),
	TP_STRUCT__entry(
		__field(u32, ring)
		__field(u32, members)
		__field(u64, job)
		__field(u64, skew_ns)
	),
	TP_fast_assign(
		__entry->ring = ring;
		__entry->members = members;
		__entry->job = job;
		__entry->skew_ns = skew_ns;
	),
	TP_printk("ring=%u job=%llu members=%u skew_ns=%llu",
		  __entry->ring, __entry->job, __entry->members,
		  __entry->skew_ns)
);

TRACE_EVENT(aikrs_gang_barrier,
	TP_PROTO(u32 ring, u64 job, u64 wait_ns),
	TP_ARGS(ring, job, wait_ns),
	TP_STRUCT__entry(
		__field(u32, ring)
		__field(u64, job)
		__field(u64, wait_ns)
	),
	TP_fast_assign(
		__entry->ring = ring;
		__entry->job = job;
		__entry->wait_ns = wait_ns;
	),
	TP_printk("ring=%u job=%llu wait_ns=%llu",
		  __entry->ring, __entry->job, __entry->wait_ns)
);

TRACE_EVENT(aikrs_gang_preempt,
	TP_PROTO(u32 ring, u64 job, u64 ran_ns, u64 left_ns),
	TP_ARGS(ring, job, ran_ns, left_ns),
	TP_STRUCT__entry(
		__field(u32, ring)
		__field(u64, job)
		__field(u64, ran_ns)
		__field(u64, left_ns)
	),
	TP_fast_assign(
		__entry->ring = ring;
		__entry->job = job;
		__entry->ran_ns = ran_ns;
		__entry->left_ns = left_ns;
	),
	TP_printk("ring=%u job=%llu ran_ns=%llu left_ns=%llu",
		  __entry->ring, __entry->job, __entry->ran_ns,
		  __entry->left_ns)
);

TRACE_EVENT(aikrs_gang_timeout,
	TP_PROTO(u32 ring, u64 job, bool gang),
	TP_ARGS(ring, job, gang),
	TP_STRUCT__entry(
		__field(u32, ring)
		__field(bool, gang)
		__field(u64, job)
	),
	TP_fast_assign(
		__entry->ring = ring;
		__entry->gang = gang;
		__entry->job = job;
	),
	TP_printk("ring=%u job=%llu gang=%d",
		  __entry->ring, __entry->job, __entry->gang)
);

#endif /* AIKRS_GANG_TRACE_H */

/* This part must be outside the include guard. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE aikrs_gang_trace
#include <trace/define_trace.h>
