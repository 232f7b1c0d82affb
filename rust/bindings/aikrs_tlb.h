/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The built-in arch side of ai-kernel-rs batched TLB invalidation
 * (rust/aikrs_tlb.c), for `kernel::aikrs::tlb`. Only with CONFIG_AIKRS_TLB_BATCH.
 */
#ifndef AIKRS_TLB_H
#define AIKRS_TLB_H

#include <linux/fs.h>
#include <linux/mm_types.h>
#include <linux/types.h>

/* An x86 `struct arch_tlbflush_unmap_batch` (the reclaim batch), opaque. */
struct aikrs_tlb_mmbatch;

/* One kernel range [start, end) invalidated page by page; a zero `end` ends a list. */
struct aikrs_tlb_krange {
	unsigned long start;
	unsigned long end;
	unsigned int stride_shift;
};

/*
 * Called for each vma range where PTEs were cleared, owning one mm reference and
 * one pending-flush count of `mm`. Non-zero return: the caller flushes that mm
 * at once, drops them, and goes on with the next vma.
 */
typedef int (*aikrs_tlb_zap_cb)(void *ctx, struct mm_struct *mm,
				unsigned long start, unsigned long end);

void aikrs_tlb_flush_mm_range(struct mm_struct *mm, unsigned long start,
			      unsigned long end, unsigned int stride_shift);
void aikrs_tlb_flush_mm(struct mm_struct *mm);
struct aikrs_tlb_mmbatch *aikrs_tlb_mmbatch_alloc(void);
void aikrs_tlb_mmbatch_free(struct aikrs_tlb_mmbatch *b);
void aikrs_tlb_mmbatch_add(struct aikrs_tlb_mmbatch *b, struct mm_struct *mm);
void aikrs_tlb_mmbatch_flush(struct aikrs_tlb_mmbatch *b);
unsigned int aikrs_tlb_flush_kernel_pages(const struct aikrs_tlb_krange *ranges);
u64 aikrs_tlb_kernel_runs_on(unsigned int cpu);
void aikrs_tlb_flush_all(void);
s64 aikrs_tlb_flushes_received(unsigned int cpu);
void aikrs_tlb_notify_secondary(struct mm_struct *mm);
u64 aikrs_tlb_shootdowns(void);
u64 aikrs_tlb_task_size_max(void);
void aikrs_tlb_mm_pending_inc(struct mm_struct *mm);
void aikrs_tlb_mm_pending_dec(struct mm_struct *mm);
void aikrs_tlb_mm_cpumask(struct mm_struct *mm, unsigned long *words, unsigned int nwords);
int aikrs_tlb_zap_kernel_noflush(unsigned long start, unsigned long end, u64 *cleared);
int aikrs_tlb_zap_mapping_noflush(struct address_space *mapping, pgoff_t first,
				  pgoff_t nr, aikrs_tlb_zap_cb cb, void *ctx,
				  u64 *cleared);

#endif /* AIKRS_TLB_H */
