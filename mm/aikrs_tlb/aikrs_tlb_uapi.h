/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User ABI of /dev/aikrs_tlb, the test and demo device of ai-kernel-rs batched TLB
 * invalidation (mm/aikrs_tlb). Shaped like a GPU driver's buffer objects: a buffer
 * is driver-owned memory that user space maps with mmap() at the buffer's offset;
 * eviction revokes the CPU mappings of many buffers at once.
 */
#ifndef _AIKRS_TLB_UAPI_H
#define _AIKRS_TLB_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/*
 * At most AIKRS_TLB_MAX_BUFS buffers per open file, of 1..AIKRS_TLB_MAX_PAGES pages
 * each, and at most AIKRS_TLB_MAX_FILE_PAGES pages (256 MiB) in all.
 */
#define AIKRS_TLB_MAX_BUFS	65536
#define AIKRS_TLB_MAX_PAGES	16
#define AIKRS_TLB_MAX_FILE_PAGES	65536

/*
 * The first 8 bytes of every page of a buffer hold its stamp:
 * (buffer index << 32) | generation. Generation 1 is the first backing; each revoke
 * with AIKRS_TLB_REVOKE_REMAP moves the buffer to new pages with the next
 * generation. Pages a revoke replaced are kept (quarantined) until the file is closed,
 * filled with AIKRS_TLB_POISON after the TLB flush, so that a CPU still translating
 * to one reads the poison instead of the old stamp.
 */
#define AIKRS_TLB_POISON	0x5ea1ed0ff1ce5ea1ULL

/* Create `count` buffers of `pages` pages; returns the mmap offset of buffer 0 in
 * `offset` (buffer i is at offset + i * pages * page size). Once per file. */
struct aikrs_tlb_create {
	__u32 count;
	__u32 pages;
	__u64 offset;	/* out */
};

/* Revoke the CPU mappings of buffers [first, first + count). */
#define AIKRS_TLB_REVOKE_BATCHED	(1U << 0)	/* ours: one flush round */
#define AIKRS_TLB_REVOKE_REMAP		(1U << 1)	/* move to new pages */
#define AIKRS_TLB_REVOKE_ALL_FLAGS	(AIKRS_TLB_REVOKE_BATCHED | AIKRS_TLB_REVOKE_REMAP)
struct aikrs_tlb_revoke {
	__u32 first;
	__u32 count;
	__u32 flags;
	__u32 pad;		/* must be zero */
	__u64 ptes;		/* out: page-table entries cleared */
	__u64 rounds;		/* out: flush rounds (batched: 0 or 1; one by one: not known, 0) */
	__u64 ipis;		/* out: TLB shootdown IPIs counted across the revoke */
	__u64 ns;		/* out: time of the revoke in the kernel */
};

/* Counters since boot (the same as in debugfs aikrs_tlb/). */
struct aikrs_tlb_stats {
	__u64 requests;		/* ranges added to batches */
	__u64 merged;		/* of which merged into another */
	__u64 rounds;		/* flush rounds of batches */
	__u64 ipis;		/* TLB shootdown IPIs counted across batch flushes */
	__u64 full;		/* rounds that flushed everything */
	__u64 per_page;		/* rounds that invalidated page by page */
	__u64 revokes;		/* revoke calls, both ways */
	__u64 faults;		/* buffer pages mapped on fault */
};

#define AIKRS_TLB_IOC_MAGIC	0xA7
#define AIKRS_TLB_IOC_CREATE	_IOWR(AIKRS_TLB_IOC_MAGIC, 0x00, struct aikrs_tlb_create)
#define AIKRS_TLB_IOC_REVOKE	_IOWR(AIKRS_TLB_IOC_MAGIC, 0x01, struct aikrs_tlb_revoke)
#define AIKRS_TLB_IOC_STATS	_IOR(AIKRS_TLB_IOC_MAGIC, 0x02, struct aikrs_tlb_stats)

#endif /* _AIKRS_TLB_UAPI_H */
