/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Extra C headers for bindgen. The overlay includes this file from the
 * kernel's rust/bindings/bindings_helper.h, so the declarations below become
 * part of `kernel::bindings` (and thus reachable from `kernel::aikrs`).
 *
 * Keep sorted; add a header only together with the safe wrapper that uses it.
 */

#include <kunit/test.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/hmm.h>
#include <linux/iova.h>
#include <linux/kthread.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/smp.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vmalloc.h>


#ifdef CONFIG_AIKRS_DRM_SCHED
#include "aikrs_drm.h"
#endif

#ifdef CONFIG_AIKRS_TLB_BATCH
#include "aikrs_tlb.h"
#endif
