/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User ABI of /dev/aikrs_iova, the test device of the ai-kernel-rs large-region IOVA
 * allocator (drivers/iommu/aikrs_iova). Each open file may create one domain and then
 * allocate and free ranges in it from user space: every call runs on the CPU of the
 * calling thread, through that CPU's magazines, as a DMA layer's calls would. No DMA
 * happens; the ranges are numbers. The guest tests use it to drive the allocator while
 * a CPU goes offline and online, and to hold the module while it is in use.
 */
#ifndef _AIKRS_IOVA_UAPI_H
#define _AIKRS_IOVA_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Limits of CREATE: live allocations the domain is sized for, and its highest page. */
#define AIKRS_IOVA_MAX_LIVE	65536
#define AIKRS_IOVA_MAX_LIMIT	((1ULL << 36) - 1)

/* Use the per-CPU magazines (else every call goes to the range tree). */
#define AIKRS_IOVA_CREATE_CACHE	(1U << 0)

/* The domain [start, limit] (pages), sized for max_live (1..AIKRS_IOVA_MAX_LIVE) live
 * allocations. Once per file (EBUSY after). */
struct aikrs_iova_create {
	__u64 start;
	__u64 limit;		/* start..AIKRS_IOVA_MAX_LIMIT */
	__u32 max_live;
	__u32 flags;		/* AIKRS_IOVA_CREATE_* */
};

/*
 * ALLOC: `size` pages aligned to size rounded up to a power of two, ending at or below
 * `limit`, highest first; returns the first page in `pfn`. Errors as the domain's:
 * EINVAL (bad size or limit), ENOSPC (no fit), ENOMEM (max_live reached).
 * FREE: [pfn, pfn + size), exactly one live allocation (`limit` ignored); EINVAL else.
 * Both: EINVAL before CREATE.
 */
struct aikrs_iova_range {
	__u64 pfn;
	__u64 size;
	__u64 limit;
};

/*
 * The domain's state. The per-CPU counters (cpu_*) and the per-CPU part of `cached` are
 * summed over the CPUs online at the call.
 */
struct aikrs_iova_stats {
	__u64 span_pages;	/* limit - start + 1 */
	__u64 free_pages;	/* free in the tree (ranges in magazines count as allocated) */
	__u64 largest_free;	/* longest run of free pages */
	__u64 free_blocks;	/* maximal runs of free pages */
	__u64 allocated_pages;	/* in allocations, cached ones included */
	__u64 allocations;	/* live allocations in the tree, cached ones included */
	__u64 reserved_pages;
	__u64 tree_allocs;	/* allocations that reached the tree and succeeded */
	__u64 tree_frees;	/* frees that reached the tree and succeeded */
	__u64 failed;		/* allocations that failed */
	__u64 bad_frees;	/* frees refused */
	__u64 cached;		/* ranges in magazines: per-CPU and depot */
	__u64 live;		/* live-set entries held by callers (cacheable sizes) */
	__u64 parked;		/* live-set entries parked in magazines */
	__u64 lost;		/* cached ranges taken out of circulation (0 unless a bug) */
	__u64 cpu_allocs;	/* allocations of a cacheable size */
	__u64 cpu_frees;	/* frees of a cacheable size */
	__u64 cpu_hits;		/* allocations served by a CPU's magazines */
	__u64 cpu_depot_hits;	/* allocations served by a magazine from the depot */
};

#define AIKRS_IOVA_IOC_MAGIC	0xA8
#define AIKRS_IOVA_IOC_CREATE	_IOW(AIKRS_IOVA_IOC_MAGIC, 0x00, struct aikrs_iova_create)
#define AIKRS_IOVA_IOC_ALLOC	_IOWR(AIKRS_IOVA_IOC_MAGIC, 0x01, struct aikrs_iova_range)
#define AIKRS_IOVA_IOC_FREE	_IOW(AIKRS_IOVA_IOC_MAGIC, 0x02, struct aikrs_iova_range)
/* Every CPU's magazines and the depot back to the tree (online CPUs: an offline CPU's
 * magazines were emptied when it went offline). */
#define AIKRS_IOVA_IOC_DRAIN	_IO(AIKRS_IOVA_IOC_MAGIC, 0x03)
#define AIKRS_IOVA_IOC_STATS	_IOR(AIKRS_IOVA_IOC_MAGIC, 0x04, struct aikrs_iova_stats)

#endif /* _AIKRS_IOVA_UAPI_H */
