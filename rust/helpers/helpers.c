// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for ai-kernel-rs: wrappers of static inline functions and macros so
 * that Rust can call them. The overlay includes this file from the kernel's
 * rust/helpers/helpers.c; bindgen strips the `rust_helper_` prefix, so
 * `rust_helper_iova_size` is `bindings::iova_size` on the Rust side.
 */

#include <kunit/test.h>
#include <linux/iova.h>

#ifndef __rust_helper
/* Linux 6.12 has no __rust_helper annotation; 7.x marks helpers inline. */
#define __rust_helper
#endif

#if IS_ENABLED(CONFIG_IOMMU_IOVA)
__rust_helper unsigned long rust_helper_iova_size(struct iova *iova)
{
	return iova_size(iova);
}
#endif

#if IS_ENABLED(CONFIG_KUNIT)
/* kunit_mark_skipped() is a macro. */
__rust_helper void rust_helper_aikrs_kunit_mark_skipped(struct kunit *test,
							const char *reason)
{
	kunit_mark_skipped(test, "%s", reason);
}
#endif
