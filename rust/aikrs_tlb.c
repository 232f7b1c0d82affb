// SPDX-License-Identifier: GPL-2.0
/*
 * ai-kernel-rs batched TLB invalidation: the arch side.
 *
 * The smallest C layer under `kernel::aikrs::tlb` (rust/kernel/aikrs/tlb.rs). It is
 * always built in (CONFIG_AIKRS_TLB_BATCH is a bool) because it calls code that
 * x86 does not export to modules: flush_tlb_mm_range(), arch_tlbbatch_flush(),
 * flush_tlb_one_kernel() and apply_to_existing_page_range() (unexported on 7.x).
 * Nothing here is exported; the Rust abstraction over it is the interface.
 *
 * Correctness with PCID/ASIDs and lazy-TLB CPUs comes from using the kernel's own
 * entry points, never from re-implementing flush_tlb_func():
 *  - one user address space: flush_tlb_mm_range(), which bumps mm->context.tlb_gen
 *    (so a CPU that switches back to the mm, or had it in another ASID slot,
 *    flushes on switch) and IPIs only the non-lazy CPUs of mm_cpumask();
 *  - several user address spaces: the reclaim batch (arch_tlbbatch_add_pending()
 *    per mm bumps its tlb_gen and ORs its cpumask; arch_tlbbatch_flush() is one
 *    IPI round of full flushes on the union);
 *  - kernel ranges: one on_each_cpu() round that invlpg's every page of every
 *    range (kernel mappings are global, so INVLPG removes them whatever the PCID),
 *    or flush_tlb_all() above the ceiling, as flush_tlb_kernel_range() does for one
 *    range.
 */

#include <linux/atomic.h>
#include <linux/mm.h>
#include <linux/mm_inline.h>
#include <linux/mm_types.h>
#include <linux/mmu_notifier.h>
#include <linux/pagemap.h>
#include <linux/slab.h>
#include <linux/sched/mm.h>
#include <linux/smp.h>
#include <linux/version.h>
#include <linux/vmstat.h>
#include <asm/cpufeature.h>
#include <asm/hardirq.h>
#include <asm/tlbflush.h>

#include "bindings/aikrs_tlb.h"

void aikrs_tlb_flush_mm_range(struct mm_struct *mm, unsigned long start,
			      unsigned long end, unsigned int stride_shift)
{
	flush_tlb_mm_range(mm, start, end, stride_shift, false);
}

void aikrs_tlb_flush_mm(struct mm_struct *mm)
{
	flush_tlb_mm_range(mm, 0UL, TLB_FLUSH_ALL, 0, false);
}

struct aikrs_tlb_mmbatch *aikrs_tlb_mmbatch_alloc(void)
{
	return kzalloc(sizeof(struct arch_tlbflush_unmap_batch), GFP_KERNEL);
}

void aikrs_tlb_mmbatch_free(struct aikrs_tlb_mmbatch *b)
{
	kfree(b);
}

void aikrs_tlb_mmbatch_add(struct aikrs_tlb_mmbatch *b, struct mm_struct *mm)
{
	struct arch_tlbflush_unmap_batch *batch = (void *)b;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 16, 0)
	arch_tlbbatch_add_pending(batch, mm, 0, TLB_FLUSH_ALL);
#else
	arch_tlbbatch_add_pending(batch, mm, 0);
#endif
}

void aikrs_tlb_mmbatch_flush(struct aikrs_tlb_mmbatch *b)
{
	arch_tlbbatch_flush((struct arch_tlbflush_unmap_batch *)b);
}

/* Runs of the per-page kernel invalidation on each CPU, since boot (for tests). */
static DEFINE_PER_CPU(u64, aikrs_tlb_kernel_runs);

/* One per-page kernel round: its ranges and the CPUs that ran it. */
struct aikrs_tlb_kernel_round {
	const struct aikrs_tlb_krange *ranges;
	/* The CPU that started the round (it runs the function without an IPI). */
	int caller;
	/* Runs of the function on other CPUs, counted by those CPUs. */
	atomic_t remote;
};

static void aikrs_tlb_kernel_pages_func(void *info)
{
	struct aikrs_tlb_kernel_round *round = info;
	const struct aikrs_tlb_krange *r;
	unsigned long addr;

	for (r = round->ranges; r->end; r++)
		for (addr = r->start; addr < r->end; addr += 1UL << r->stride_shift)
			flush_tlb_one_kernel(addr);
	this_cpu_inc(aikrs_tlb_kernel_runs);
	if (smp_processor_id() != round->caller)
		atomic_inc(&round->remote);
}

/*
 * Invalidates every page of @ranges on every online CPU in one on_each_cpu()
 * round. Returns how many CPUs other than the calling one ran the invalidation
 * in that round: each of them counts itself, so the number is what the round
 * reached, not what it was asked to reach.
 */
unsigned int aikrs_tlb_flush_kernel_pages(const struct aikrs_tlb_krange *ranges)
{
	struct aikrs_tlb_kernel_round round = {
		.ranges = ranges,
		.remote = ATOMIC_INIT(0),
	};

	/* on_each_cpu() waits for every CPU, so @round outlives every run. */
	round.caller = get_cpu();
	on_each_cpu(aikrs_tlb_kernel_pages_func, &round, 1);
	put_cpu();
	return atomic_read(&round.remote);
}

/* How many times @cpu ran a per-page kernel invalidation, counted on that CPU. */
u64 aikrs_tlb_kernel_runs_on(unsigned int cpu)
{
	if (cpu >= nr_cpu_ids || !cpu_possible(cpu))
		return 0;
	return READ_ONCE(per_cpu(aikrs_tlb_kernel_runs, cpu));
}

void aikrs_tlb_flush_all(void)
{
	flush_tlb_all();
}

/*
 * The kernel's count of the TLB flushes @cpu ran for others (vm event
 * nr_tlb_remote_flush_received: each run of flush_tlb_all()'s callback, the
 * calling CPU's included, and each user-space flush IPI received), or -1 where
 * the kernel does not count them: without CONFIG_DEBUG_TLBFLUSH, or when
 * flush_tlb_all() invalidates by broadcast (INVLPGB) and runs no callback.
 */
s64 aikrs_tlb_flushes_received(unsigned int cpu)
{
#if defined(CONFIG_DEBUG_TLBFLUSH) && defined(CONFIG_VM_EVENT_COUNTERS)
#ifdef X86_FEATURE_INVLPGB
	if (cpu_feature_enabled(X86_FEATURE_INVLPGB))
		return -1;
#endif
	if (cpu >= nr_cpu_ids || !cpu_possible(cpu))
		return -1;
	return READ_ONCE(per_cpu(vm_event_states, cpu).event[NR_TLB_REMOTE_FLUSH_RECEIVED]);
#else
	return -1;
#endif
}

/*
 * flush_tlb_all() does not tell secondary TLBs (IOMMU SVA) what
 * flush_tlb_mm_range() and arch_tlbbatch_add_pending() tell them.
 */
void aikrs_tlb_notify_secondary(struct mm_struct *mm)
{
	mmu_notifier_arch_invalidate_secondary_tlbs(mm, 0, -1UL);
}

u64 aikrs_tlb_task_size_max(void)
{
	return TASK_SIZE_MAX;
}

u64 aikrs_tlb_shootdowns(void)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu) {
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
		sum += per_cpu(irq_stat, cpu).counts[IRQ_COUNT_TLB];
#else
		sum += per_cpu(irq_stat, cpu).irq_tlb_count;
#endif
	}
	return sum;
}

void aikrs_tlb_mm_pending_inc(struct mm_struct *mm)
{
	mmgrab(mm);
	inc_tlb_flush_pending(mm);
}

void aikrs_tlb_mm_pending_dec(struct mm_struct *mm)
{
	dec_tlb_flush_pending(mm);
	mmdrop(mm);
}

void aikrs_tlb_mm_cpumask(struct mm_struct *mm, unsigned long *words,
			  unsigned int nwords)
{
	unsigned int cpu;

	memset(words, 0, nwords * sizeof(*words));
	for_each_cpu(cpu, mm_cpumask(mm))
		if (cpu < nwords * BITS_PER_LONG)
			words[cpu / BITS_PER_LONG] |= 1UL << (cpu % BITS_PER_LONG);
}

/* The vmas mapping pages [first, last] of a file (the macro was renamed in 7.x). */
#ifdef mapping_rmap_tree_foreach
#define aikrs_for_each_mapping_vma(vma, mapping, first, last) \
	mapping_rmap_tree_foreach(vma, mapping, first, last)
#else
#define aikrs_for_each_mapping_vma(vma, mapping, first, last) \
	vma_interval_tree_foreach(vma, &(mapping)->i_mmap, first, last)
#endif

struct aikrs_tlb_zap {
	struct mm_struct *mm;
	u64 cleared;
};

static int aikrs_tlb_clear_pte(pte_t *pte, unsigned long addr, void *data)
{
	struct aikrs_tlb_zap *z = data;
	pte_t old = ptep_get(pte);

	if (pte_none(old))
		return 0;
	if (!pte_present(old))
		return -EINVAL;
	/*
	 * User mappings: only special (PFN-map) entries. They hold no page reference,
	 * map count or RSS, so clearing one needs nothing but the TLB flush that the
	 * caller batches. Anything else would need the rmap work of zap_pte_range().
	 */
	if (z->mm != &init_mm && !pte_special(old))
		return -EINVAL;
	ptep_get_and_clear(z->mm, addr, pte);
	z->cleared++;
	return 0;
}

int aikrs_tlb_zap_kernel_noflush(unsigned long start, unsigned long end, u64 *cleared)
{
	struct aikrs_tlb_zap z = { .mm = &init_mm };
	int ret;

	*cleared = 0;
	if (end <= start || !PAGE_ALIGNED(start) || !PAGE_ALIGNED(end) ||
	    start < TASK_SIZE_MAX)
		return -EINVAL;
	ret = apply_to_existing_page_range(&init_mm, start, end - start,
					   aikrs_tlb_clear_pte, &z);
	*cleared = z.cleared;
	return ret;
}

int aikrs_tlb_zap_mapping_noflush(struct address_space *mapping, pgoff_t first,
				  pgoff_t nr, aikrs_tlb_zap_cb cb, void *ctx,
				  u64 *cleared)
{
	pgoff_t last = first + nr - 1;
	struct vm_area_struct *vma;
	int ret = 0;

	*cleared = 0;
	if (!nr || last < first)
		return -EINVAL;
	i_mmap_lock_read(mapping);
	aikrs_for_each_mapping_vma(vma, mapping, first, last) {
		struct mmu_notifier_range range;
		struct aikrs_tlb_zap z = { .mm = vma->vm_mm };
		pgoff_t vfirst = max(first, vma->vm_pgoff);
		pgoff_t vlast = min(last, vma->vm_pgoff + vma_pages(vma) - 1);
		unsigned long start = vma->vm_start + ((vfirst - vma->vm_pgoff) << PAGE_SHIFT);
		unsigned long end = vma->vm_start + ((vlast - vma->vm_pgoff + 1) << PAGE_SHIFT);

		/*
		 * As many vmas as user space mapped the pages (up to max_map_count per
		 * process): yield between them, as unmap_mapping_range() does.
		 */
		cond_resched();
		/*
		 * 4 KiB PFN maps only: huge PFN entries (a vma with ->huge_fault)
		 * are not walked by apply_to_existing_page_range().
		 */
		if (!(vma->vm_flags & VM_PFNMAP) ||
		    (vma->vm_ops && vma->vm_ops->huge_fault)) {
			ret = -EINVAL;
			break;
		}
		/*
		 * As tlb_gather_mmu(): the mm has a flush pending from before the first
		 * PTE changes until the flush (mm_tlb_flush_pending() users rely on it).
		 * The mm reference and the pending count go to the callback, which
		 * drops them after its flush.
		 */
		aikrs_tlb_mm_pending_inc(vma->vm_mm);
		/* As zap_page_range_single(): notifiers around the PTE change. */
		mmu_notifier_range_init(&range, MMU_NOTIFY_CLEAR, 0, vma->vm_mm, start, end);
		mmu_notifier_invalidate_range_start(&range);
		ret = apply_to_existing_page_range(vma->vm_mm, start, end - start,
						   aikrs_tlb_clear_pte, &z);
		mmu_notifier_invalidate_range_end(&range);
		*cleared += z.cleared;
		if (!z.cleared) {
			/* Nothing cleared, nothing to flush. */
			aikrs_tlb_mm_pending_dec(vma->vm_mm);
		} else if (ret || cb(ctx, vma->vm_mm, start, end)) {
			/*
			 * Never leave a cleared entry unflushed: flush this mm now, then go
			 * on (a failed callback only costs this vma its batching).
			 */
			aikrs_tlb_flush_mm(vma->vm_mm);
			aikrs_tlb_mm_pending_dec(vma->vm_mm);
		} else {
			continue;
		}
		if (ret)
			break;
	}
	i_mmap_unlock_read(mapping);
	return ret;
}
