// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for ai-kernel-rs: wrappers of static inline functions and macros so
 * that Rust can call them. The overlay includes this file from the kernel's
 * rust/helpers/helpers.c; bindgen strips the `rust_helper_` prefix, so
 * `rust_helper_iova_size` is `bindings::iova_size` on the Rust side.
 */

#include <kunit/test.h>
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/highmem.h>
#include <linux/hmm.h>
#include <linux/irqflags.h>
#include <linux/iova.h>
#include <linux/kthread.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/migrate.h>
#include <linux/mmu_notifier.h>
#include <linux/pagemap.h>
#include <linux/rmap.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#include <linux/percpu.h>
#include <linux/sched/task.h>
#include <linux/smp.h>
#include <linux/spinlock.h>

#ifndef __rust_helper
/* Linux 6.12 has no __rust_helper annotation; 7.x marks helpers inline. */
#define __rust_helper
#endif

#if IS_ENABLED(CONFIG_IOMMU_IOVA)
__rust_helper unsigned long rust_helper_iova_size(struct iova *iova)
{
	return iova_size(iova);
}

/*
 * Free-space statistics of an iova.c domain, for comparing fragmentation: walks
 * the rbtree of allocated ranges (which also holds the ones parked in the
 * per-CPU range caches) under the domain lock and measures the gaps between
 * them inside [start_pfn, limit_pfn]. O(n); benchmarks and tests only.
 */
__rust_helper void
rust_helper_aikrs_iova_free_stats(struct iova_domain *iovad,
				  unsigned long limit_pfn, unsigned long *free_pfns,
				  unsigned long *largest, unsigned long *gaps)
{
	unsigned long flags, next = iovad->start_pfn, f = 0, l = 0, g = 0;
	struct rb_node *node;

	spin_lock_irqsave(&iovad->iova_rbtree_lock, flags);
	for (node = rb_first(&iovad->rbroot); node; node = rb_next(node)) {
		struct iova *iova = rb_entry(node, struct iova, node);
		unsigned long lo = iova->pfn_lo, hi = iova->pfn_hi;

		if (hi < next)
			continue;
		if (lo > limit_pfn)
			lo = limit_pfn + 1;
		if (lo > next) {
			f += lo - next;
			l = max(l, lo - next);
			g++;
		}
		if (hi >= limit_pfn)
			break;
		next = hi + 1;
	}
	if (!node && next <= limit_pfn) {
		f += limit_pfn + 1 - next;
		l = max(l, limit_pfn + 1 - next);
		g++;
	}
	spin_unlock_irqrestore(&iovad->iova_rbtree_lock, flags);
	*free_pfns = f;
	*largest = l;
	*gaps = g;
}
#endif

/* Local interrupt state, for per-CPU data and irq-safe locking. */
__rust_helper unsigned long rust_helper_aikrs_local_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

__rust_helper void rust_helper_aikrs_local_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

/* CPU numbers and masks (macros or inline functions in C). */
__rust_helper unsigned int rust_helper_aikrs_raw_smp_processor_id(void)
{
	return raw_smp_processor_id();
}

__rust_helper unsigned int rust_helper_aikrs_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

__rust_helper bool rust_helper_aikrs_cpu_online(unsigned int cpu)
{
	return cpu < nr_cpu_ids && cpu_online(cpu);
}

__rust_helper bool rust_helper_aikrs_cpu_possible(unsigned int cpu)
{
	return cpu < nr_cpu_ids && cpu_possible(cpu);
}

__rust_helper unsigned int rust_helper_aikrs_num_online_cpus(void)
{
	return num_online_cpus();
}

/* Per-CPU memory: the allocator, per_cpu_ptr() and this_cpu_ptr() are macros. */
__rust_helper void __percpu *rust_helper_aikrs_alloc_percpu(size_t size,
							   size_t align,
							   gfp_t gfp)
{
	return __alloc_percpu_gfp(size, align, gfp);
}

__rust_helper void *rust_helper_aikrs_per_cpu_ptr(void __percpu *p,
						  unsigned int cpu)
{
	return per_cpu_ptr(p, cpu);
}

/* Hot path of PerCpu::with_local: one call in, one call out (local_irq_restore). */
__rust_helper void *rust_helper_aikrs_this_cpu_ptr_irqsave(void __percpu *p,
							   unsigned long *flags)
{
	local_irq_save(*flags);
	return this_cpu_ptr(p);
}

/* cpus_read_lock() is a static inline without CONFIG_HOTPLUG_CPU. */
__rust_helper void rust_helper_aikrs_cpus_read_lock(void)
{
	cpus_read_lock();
}

__rust_helper void rust_helper_aikrs_cpus_read_unlock(void)
{
	cpus_read_unlock();
}

__rust_helper void *rust_helper_aikrs_this_cpu_ptr_preempt(void __percpu *p)
{
	preempt_disable();
	return this_cpu_ptr(p);
}

__rust_helper void rust_helper_aikrs_preempt_enable(void)
{
	preempt_enable();
}

/*
 * A kernel thread bound to @cpu, created stopped, with a reference held so that
 * kthread_stop() may be called after the thread function has returned.
 */
__rust_helper struct task_struct *
rust_helper_aikrs_kthread_create_on_cpu(int (*threadfn)(void *data), void *data,
					unsigned int cpu)
{
	struct task_struct *t;

	t = kthread_create_on_node(threadfn, data, cpu_to_node(cpu),
				   "aikrs/%u", cpu);
	if (IS_ERR(t))
		return t;
	kthread_bind(t, cpu);
	get_task_struct(t);
	return t;
}

__rust_helper void rust_helper_aikrs_cpu_relax(void)
{
	cpu_relax();
}

/* cond_resched() is a macro (a static call with PREEMPT_DYNAMIC). */
__rust_helper void rust_helper_aikrs_cond_resched(void)
{
	cond_resched();
}

/* fatal_signal_pending() is an inline function: whether `current` is being killed. */
__rust_helper bool rust_helper_aikrs_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

#if IS_ENABLED(CONFIG_KUNIT)
/* kunit_mark_skipped() is a macro. */
__rust_helper void rust_helper_aikrs_kunit_mark_skipped(struct kunit *test,
							const char *reason)
{
	kunit_mark_skipped(test, "%s", reason);
}
#endif

/* Fields of `struct vm_fault` (const members of an anonymous struct). */
__rust_helper struct vm_area_struct *rust_helper_aikrs_vmf_vma(struct vm_fault *vmf)
{
	return vmf->vma;
}

__rust_helper unsigned long rust_helper_aikrs_vmf_pgoff(struct vm_fault *vmf)
{
	return vmf->pgoff;
}

__rust_helper unsigned long rust_helper_aikrs_vmf_address(struct vm_fault *vmf)
{
	return vmf->address;
}

/* The mmap-time view of a vma: bounds, offset, whether it is a shared mapping. */
__rust_helper void rust_helper_aikrs_vma_info(struct vm_area_struct *vma,
					      unsigned long *start,
					      unsigned long *end,
					      unsigned long *pgoff, bool *shared)
{
	*start = vma->vm_start;
	*end = vma->vm_end;
	*pgoff = vma->vm_pgoff;
	*shared = !!(vma->vm_flags & VM_SHARED);
}

__rust_helper void *rust_helper_aikrs_vma_private(struct vm_area_struct *vma)
{
	return vma->vm_private_data;
}

/*
 * Turns a vma being mmap'ed into a PFN map of device memory, as buffer-object
 * mappings are: no struct page refcounting or rmap (VM_PFNMAP), no expansion, not
 * copied on fork, not dumped.
 */
__rust_helper void rust_helper_aikrs_vma_setup_pfnmap(struct vm_area_struct *vma,
						      const struct vm_operations_struct *ops,
						      void *private)
{
	vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY);
	vma->vm_ops = ops;
	vma->vm_private_data = private;
}

__rust_helper bool rust_helper_aikrs_vma_is_pfnmap(struct vm_area_struct *vma)
{
	return vma->vm_flags & VM_PFNMAP;
}

__rust_helper struct address_space *rust_helper_aikrs_file_mapping(struct file *file)
{
	return file->f_mapping;
}

__rust_helper unsigned long rust_helper_aikrs_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

/* vmap() with PAGE_KERNEL (a macro) for `kernel::aikrs::vmap`. */
__rust_helper void *rust_helper_aikrs_vmap(struct page **pages, unsigned int count)
{
	return vmap(pages, count, VM_MAP, PAGE_KERNEL);
}

#if IS_ENABLED(CONFIG_HMM_MIRROR)
/* kernel::aikrs::hmm: the address space of the calling process (NULL in a kthread). */
__rust_helper struct mm_struct *rust_helper_aikrs_current_mm(void)
{
	return current->mm;
}

__rust_helper bool rust_helper_aikrs_mmget_not_zero(struct mm_struct *mm)
{
	return mmget_not_zero(mm);
}

/* 0, or -EINTR if a fatal signal arrived while waiting for the lock. */
__rust_helper int rust_helper_aikrs_mmap_read_lock_killable(struct mm_struct *mm)
{
	return mmap_read_lock_killable(mm);
}

__rust_helper void rust_helper_aikrs_mmap_read_unlock(struct mm_struct *mm)
{
	mmap_read_unlock(mm);
}

__rust_helper struct mm_struct *
rust_helper_aikrs_mni_mm(struct mmu_interval_notifier *mni)
{
	return mni->mm;
}

/* The end of the user address space of `mm` (TASK_SIZE of its process). */
__rust_helper unsigned long rust_helper_aikrs_mm_task_size(struct mm_struct *mm)
{
	return mm->task_size;
}

__rust_helper bool
rust_helper_aikrs_mni_read_retry(struct mmu_interval_notifier *mni,
				 unsigned long seq)
{
	return mmu_interval_read_retry(mni, seq);
}

__rust_helper void rust_helper_aikrs_mni_set_seq(struct mmu_interval_notifier *mni,
						 unsigned long cur_seq)
{
	mmu_interval_set_seq(mni, cur_seq);
}

__rust_helper bool
rust_helper_aikrs_mn_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

/* One lock class for every mirror lock (mutex_init is a macro). */
__rust_helper void rust_helper_aikrs_mutex_init(struct mutex *lock)
{
	mutex_init(lock);
}

__rust_helper void rust_helper_aikrs_mutex_lock(struct mutex *lock)
{
	mutex_lock(lock);
}

__rust_helper bool rust_helper_aikrs_mutex_trylock(struct mutex *lock)
{
	return mutex_trylock(lock);
}

__rust_helper void rust_helper_aikrs_mutex_unlock(struct mutex *lock)
{
	mutex_unlock(lock);
}

__rust_helper unsigned int rust_helper_aikrs_memalloc_noreclaim_save(void)
{
	return memalloc_noreclaim_save();
}

__rust_helper void rust_helper_aikrs_memalloc_noreclaim_restore(unsigned int flags)
{
	memalloc_noreclaim_restore(flags);
}

/*
 * What page frame `pfn` (from hmm_range_fault()) is: 0 system memory, 1 the
 * zero page, 2 device-private memory of `owner`, 3 device-private memory of
 * another owner. One call per page (snapshots classify every page).
 */
__rust_helper int rust_helper_aikrs_pfn_kind(unsigned long pfn, void *owner)
{
	struct page *page;
	void *o;

	if (is_zero_pfn(pfn))
		return 1;
	page = pfn_to_page(pfn);
	if (!is_device_private_page(page))
		return 0;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	o = page_pgmap(page)->owner;
#else
	o = page->pgmap->owner;
#endif
	return o == owner ? 2 : 3;
}

/* Whole pages, with a constant size: the same copy code as the C test driver's. */
__rust_helper void rust_helper_aikrs_copy_from_pfn(void *dst, unsigned long pfn)
{
	memcpy_from_page(dst, pfn_to_page(pfn), 0, PAGE_SIZE);
}

__rust_helper void rust_helper_aikrs_copy_to_pfn(unsigned long pfn, const void *src)
{
	memcpy_to_page(pfn_to_page(pfn), 0, src, PAGE_SIZE);
}
#endif

#if IS_ENABLED(CONFIG_DEVICE_PRIVATE)
/*
 * kernel::aikrs::devmem: device-private memory (ZONE_DEVICE) and page migration
 * (migrate_vma_*). Pages are named by pfn on the Rust side.
 */
__rust_helper int rust_helper_aikrs_numa_node_id(void)
{
	return numa_node_id();
}

__rust_helper void rust_helper_aikrs_release_mem_region(resource_size_t start,
							resource_size_t len)
{
	release_mem_region(start, len);
}

/*
 * Hands out a free device-private page (refcount 1, locked, as migration wants
 * it) with driver data `data` in zone_device_data. Linux 7 takes the pgmap and
 * an order: `order` 9 makes the 512 pages from `pfn` (2 MiB aligned) one large
 * folio (only where AIKRS_DEVMEM_COMPOUND is set; 0 elsewhere). The page is
 * taken as the head as it is: a free page may still carry the compound head
 * of an earlier large folio, which zone_device_page_init() clears.
 */
__rust_helper void rust_helper_aikrs_devmem_page_init(unsigned long pfn,
						      struct dev_pagemap *pgmap,
						      void *data, unsigned int order)
{
	struct page *page = pfn_to_page(pfn);

#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
	zone_device_folio_init((struct folio *)page, pgmap, order);
#else
	WARN_ON_ONCE(order);
	zone_device_page_init(page);
#endif
	page->zone_device_data = data;
}

/* Sets the one physical range of `pgmap` (a union member bindgen cannot name). */
__rust_helper void rust_helper_aikrs_pgmap_set_range(struct dev_pagemap *pgmap, u64 start,
						     u64 end)
{
	pgmap->range.start = start;
	pgmap->range.end = end;
	pgmap->nr_range = 1;
}

/*
 * The driver data of the folio that device page `pfn` belongs to (kept in the
 * head page: a tail page's zone_device_data overlaps the folio's own fields)
 * and the page's index in the folio.
 */
__rust_helper void *rust_helper_aikrs_devmem_page_data(unsigned long pfn, unsigned long *index)
{
	struct folio *folio = page_folio(pfn_to_page(pfn));

	*index = pfn - folio_pfn(folio);
	return folio->page.zone_device_data;
}

#if IS_ENABLED(CONFIG_AIKRS_DEVMEM_COMPOUND)
/*
 * folio_split of a device-private folio, for new folio `tail` (not NULL): what
 * the core does when a pgmap has no folio_split op (the pgmap and the anon
 * mapping carry over). Returns the head's driver data and the offset of `tail`
 * in it; the caller stores the tail's own data.
 */
__rust_helper void *rust_helper_aikrs_devmem_split_tail(struct folio *head, struct folio *tail,
							unsigned long *offset)
{
	folio_page(tail, 0)->mapping = folio_page(head, 0)->mapping;
	tail->pgmap = head->pgmap;
	*offset = folio_pfn(tail) - folio_pfn(head);
	return head->page.zone_device_data;
}

__rust_helper void rust_helper_aikrs_folio_set_zone_device_data(struct folio *folio, void *data)
{
	folio->page.zone_device_data = data;
}

/* The order of the folio a CPU fault on a device page must migrate (0 if PTE-mapped). */
__rust_helper unsigned int rust_helper_aikrs_vmf_fault_order(struct vm_fault *vmf)
{
	return vmf->pte ? 0 : folio_order(page_folio(vmf->page));
}

/*
 * A locked large folio (2^order pages) to migrate `addr` of `vma` into (NULL
 * vma: an eviction, any node). 0: none; never warns.
 */
__rust_helper unsigned long rust_helper_aikrs_alloc_migrate_folio(struct vm_area_struct *vma,
								  unsigned long addr,
								  unsigned int order)
{
	/*
	 * An eviction cannot fall back to base pages (migrate_device_pages() does
	 * not split), so it tries harder.
	 */
	gfp_t gfp = GFP_HIGHUSER_MOVABLE | __GFP_NOWARN |
		    (vma ? __GFP_NORETRY : __GFP_RETRY_MAYFAIL);
	struct folio *folio;

	folio = vma ? vma_alloc_folio(gfp, order, vma, addr) : folio_alloc(gfp, order);
	if (!folio)
		return 0;
	folio_lock(folio);
	return folio_pfn(folio);
}
#endif

/*
 * 2^order physically contiguous pages of system memory, each its own order-0
 * page (split_page()), so they can be freed one by one. 0: none.
 */
__rust_helper unsigned long rust_helper_aikrs_alloc_pages_split(unsigned int order)
{
	struct page *page = alloc_pages(GFP_HIGHUSER | __GFP_NOWARN |
					(order ? __GFP_NORETRY : 0), order);

	if (!page)
		return 0;
	if (order)
		split_page(page, order);
	return page_to_pfn(page);
}

__rust_helper struct dev_pagemap *rust_helper_aikrs_pfn_pgmap(unsigned long pfn)
{
	struct page *page = pfn_to_page(pfn);

	if (!is_zone_device_page(page))
		return NULL;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	return page_pgmap(page);
#else
	return page->pgmap;
#endif
}

__rust_helper unsigned long rust_helper_aikrs_folio_pfn(struct folio *folio)
{
	return folio_pfn(folio);
}

__rust_helper unsigned int rust_helper_aikrs_folio_order(struct folio *folio)
{
	return folio_order(folio);
}

__rust_helper unsigned int rust_helper_aikrs_pfn_folio_order(unsigned long pfn)
{
	return folio_order(page_folio(pfn_to_page(pfn)));
}

__rust_helper unsigned long rust_helper_aikrs_vmf_page_pfn(struct vm_fault *vmf)
{
	return page_to_pfn(vmf->page);
}

__rust_helper struct page *rust_helper_aikrs_vmf_page(struct vm_fault *vmf)
{
	return vmf->page;
}

__rust_helper void rust_helper_aikrs_free_page_pfn(unsigned long pfn)
{
	__free_page(pfn_to_page(pfn));
}

/*
 * A locked page for `addr` of `vma` to migrate into (NULL vma: any node, may not
 * fail). 0: none.
 */
__rust_helper unsigned long
rust_helper_aikrs_alloc_migrate_page(struct vm_area_struct *vma, unsigned long addr)
{
	struct page *page;

	if (vma)
		page = alloc_page_vma(GFP_HIGHUSER_MOVABLE, vma, addr);
	else
		page = alloc_page(GFP_HIGHUSER_MOVABLE | __GFP_NOFAIL);
	if (!page)
		return 0;
	lock_page(page);
	return page_to_pfn(page);
}

__rust_helper void rust_helper_aikrs_copy_page_pfn(unsigned long dst, unsigned long src)
{
	copy_highpage(pfn_to_page(dst), pfn_to_page(src));
}

__rust_helper void rust_helper_aikrs_clear_page_pfn(unsigned long pfn)
{
	clear_highpage(pfn_to_page(pfn));
}

__rust_helper bool rust_helper_aikrs_pfn_is_zone_device(unsigned long pfn)
{
	return is_zone_device_page(pfn_to_page(pfn));
}

/*
 * The vma containing `addr` (mmap_lock held), its bounds, and whether it may be
 * read and written.
 */
__rust_helper struct vm_area_struct *
rust_helper_aikrs_vma_lookup(struct mm_struct *mm, unsigned long addr, unsigned long *start,
			     unsigned long *end, bool *readable, bool *writable)
{
	struct vm_area_struct *vma = vma_lookup(mm, addr);

	if (vma) {
		*start = vma->vm_start;
		*end = vma->vm_end;
		*readable = vma->vm_flags & VM_READ;
		*writable = vma->vm_flags & VM_WRITE;
	}
	return vma;
}
#endif

#if IS_ENABLED(CONFIG_DEVICE_PRIVATE)
/*
 * Makes the page at `addr` of `mm` (mmap_lock held) exclusive to the device
 * and returns it locked and referenced (release it with
 * aikrs_exclusive_done()), or an ERR_PTR. `owner` is passed to the
 * notifiers. Linux 6.15 replaced make_device_exclusive_range().
 */
__rust_helper struct page *rust_helper_aikrs_make_device_exclusive(struct mm_struct *mm,
								   unsigned long addr,
								   void *owner)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 15, 0)
	struct folio *folio;

	return make_device_exclusive(mm, addr, owner, &folio);
#else
	struct page *page = NULL;
	int n = make_device_exclusive_range(mm, addr, addr + PAGE_SIZE, &page, owner);

	if (n < 0)
		return ERR_PTR(n);
	return n == 1 && page ? page : ERR_PTR(-EBUSY);
#endif
}

__rust_helper void rust_helper_aikrs_exclusive_done(struct page *page)
{
	struct folio *folio = page_folio(page);

	folio_unlock(folio);
	folio_put(folio);
}
#endif
