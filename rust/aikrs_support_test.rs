// SPDX-License-Identifier: GPL-2.0

//! KUnit suites for the shared ai-kernel-rs Rust support (`kernel::aikrs`).
//!
//! `aikrs_support` checks that the support works: a failed expectation marks a test failed
//! (and a passing one does not), counters count, and an IOVA domain can be driven through
//! the bindings and C helper that only the overlay adds. `aikrs_support_negative` fails
//! on purpose when the kernel command line holds `aikrs.kunit_negative_control`, so the
//! test command can prove that a failing Rust case fails the run; with
//! `aikrs.planted_bug=CLASS` it commits one bug of a class the debug test kernel's
//! detectors must report (`use_after_free`: KASAN, `lock_inversion`: lockdep,
//! `sleep_in_atomic`: the atomic-sleep check), so the test command can prove that each
//! report fails the run. Without those switches its cases are skipped.

use kernel::aikrs::{compat, kunit::ScratchTest, kunit::Test};
use kernel::prelude::*;
use kernel::{aikrs_expect, aikrs_expect_eq, aikrs_kunit_suite, new_mutex, new_spinlock};

module! {
    type: AikrsSupportTest,
    name: "aikrs_support_test",
    description: "KUnit tests for the ai-kernel-rs Rust support",
    license: "GPL",
}

struct AikrsSupportTest;

impl kernel::Module for AikrsSupportTest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

/// A failed expectation must mark its test failed; a passing one must not.
fn expectation_marks_failure(t: &Test) -> Result {
    let good = ScratchTest::new(c"aikrs_scratch_pass")?;
    let two = core::hint::black_box(2);
    aikrs_expect!(good.test(), two + 2 == 4);
    aikrs_expect_eq!(good.test(), 3u32, 3u32);
    aikrs_expect!(
        t,
        !good.test().failed(),
        "passing expectations marked the test failed"
    );

    pr_info!("    # the next EXPECTATION FAILED line is deliberate (aikrs_scratch_fail)\n");
    let bad = ScratchTest::new(c"aikrs_scratch_fail")?;
    let r = aikrs_expect_eq!(bad.test(), 1u32, 2u32);
    aikrs_expect!(t, !r, "aikrs_expect_eq! evaluated to true for 1 == 2");
    aikrs_expect!(
        t,
        bad.test().failed(),
        "a failed expectation did not mark the test failed"
    );
    aikrs_expect!(t, !t.failed());
    Ok(())
}

/// `aikrs_expect_eq!` evaluates each operand exactly once.
fn expect_eq_evaluates_once(t: &Test) -> Result {
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    aikrs_expect_eq!(t, next(), 1);
    aikrs_expect_eq!(t, n, 1);
    Ok(())
}

/// A case that returns `Err` is reported failed.
fn error_return_fails(t: &Test) -> Result {
    let s = ScratchTest::new(c"aikrs_scratch_err")?;
    fn failing(_t: &Test) -> Result {
        Err(EINVAL)
    }
    pr_info!("    # the next EXPECTATION FAILED line is deliberate (aikrs_scratch_err)\n");
    kernel::aikrs::kunit::run_case(s.test(), failing, "failing");
    aikrs_expect!(
        t,
        s.test().failed(),
        "an Err from a case did not mark the test failed"
    );
    Ok(())
}

/// An IOVA domain through the overlay's bindings (`<linux/iova.h>`) and C helper
/// (`rust_helper_iova_size`): allocations are size-aligned, top-down, disjoint, freed.
fn iova_via_overlay_bindings(t: &Test) -> Result {
    use kernel::aikrs::iova::IovaDomain;
    let d = IovaDomain::new(4096, 1)?;
    let limit = (1usize << 20) - 1;
    let a = d.alloc(16, limit, true)?;
    let b = d.alloc(512, limit, true)?;
    aikrs_expect_eq!(t, a.size(), 16);
    aikrs_expect_eq!(t, b.size(), 512);
    aikrs_expect_eq!(t, a.pfn_lo() % 16, 0);
    aikrs_expect_eq!(t, b.pfn_lo() % 512, 0);
    aikrs_expect!(t, a.pfn_lo() + a.size() - 1 <= limit);
    // Top-down: the first allocation sits right under the limit.
    aikrs_expect_eq!(t, a.pfn_lo(), limit + 1 - 16);
    aikrs_expect!(
        t,
        a.pfn_lo() + 16 <= b.pfn_lo() || b.pfn_lo() + 512 <= a.pfn_lo()
    );
    aikrs_expect!(t, d.contains(a.pfn_lo() + 3));
    let lo = a.pfn_lo();
    d.free(a);
    aikrs_expect!(t, !d.contains(lo), "freed range still found");
    aikrs_expect!(t, d.contains(b.pfn_lo()));
    // Too large for the space under the limit.
    aikrs_expect!(t, d.alloc(1 << 21, limit, true).is_err());
    aikrs_expect!(
        t,
        IovaDomain::new(3000, 1).is_err(),
        "granule must be a power of two"
    );
    aikrs_expect!(
        t,
        IovaDomain::new(2 * kernel::page::PAGE_SIZE, 1).is_err(),
        "granule above PAGE_SIZE"
    );
    d.free(b);
    Ok(())
}

/// Counters count, and their debugfs directory comes and goes.
fn debugfs_counters(t: &Test) -> Result {
    let c = kernel::aikrs::debugfs::Counters::new(c"aikrs_support_test", None, [c"a", c"b"])?;
    c.add(0, 5);
    c.add(1, 1);
    c.add(0, 2);
    aikrs_expect_eq!(t, c.get(0), 7);
    aikrs_expect_eq!(t, c.get(1), 1);
    Ok(())
}

/// The compat layer knows which kernel it was built for, and parses the command line.
fn compat_layer(t: &Test) -> Result {
    let v7 = kernel::bindings::LINUX_VERSION_CODE >= (7 << 16);
    aikrs_expect_eq!(t, compat::LINUX_GE_7, v7);
    aikrs_expect!(
        t,
        compat::cmdline_has("console"),
        "console= not found on the command line"
    );
    aikrs_expect!(t, !compat::cmdline_has("consol"));
    aikrs_expect!(t, !compat::cmdline_has("aikrs.no_such_parameter"));
    Ok(())
}

/// `PerCpu`: a value in use is refused to a nested request of either kind (as an
/// interrupt handler arriving in a `with_local_preempt` section is), and
/// `run_on_each_cpu` visits every online CPU once, on that CPU.
fn percpu_exclusive(t: &Test) -> Result {
    use kernel::aikrs::{cpu, percpu::PerCpu};
    let pc = PerCpu::<[u64; 2]>::new(GFP_KERNEL)?;
    let nested = pc.with_local_preempt(|v| {
        v[0] += 1;
        (
            pc.with_local(|_| ()).is_none(),
            pc.with_local_preempt(|_| ()).is_none(),
        )
    });
    aikrs_expect_eq!(t, nested, Some((true, true)));
    let nested = pc.with_local(|_| pc.with_local_preempt(|_| ()).is_none());
    aikrs_expect_eq!(t, nested, Some(true));
    // Free again after the sections.
    aikrs_expect!(t, pc.with_local_preempt(|_| ()).is_some());
    pc.run_on_each_cpu(&|v| {
        v[1] += 1;
        v[0] = u64::from(cpu::current_cpu_hint());
    });
    let mut pc = pc;
    let mut visited = 0;
    for c in cpu::online_cpus() {
        let v = pc.get_mut(c).map_or([0, 0], |v| *v);
        aikrs_expect!(t, v[1] == 1, "CPU {} visited {} times", c, v[1]);
        aikrs_expect!(
            t,
            v[0] == u64::from(c),
            "CPU {}'s value set on CPU {}",
            c,
            v[0]
        );
        visited += v[1];
    }
    aikrs_expect_eq!(t, visited, u64::from(cpu::num_online_cpus()));
    Ok(())
}

aikrs_kunit_suite!(
    aikrs_support,
    [
        expectation_marks_failure,
        expect_eq_evaluates_once,
        error_return_fails,
        iova_via_overlay_bindings,
        debugfs_counters,
        compat_layer,
        percpu_exclusive
    ]
);

/// Fails on purpose with `aikrs.kunit_negative_control` on the command line.
fn deliberate_failure(t: &Test) -> Result {
    if !compat::cmdline_has("aikrs.kunit_negative_control") {
        t.skip(c"negative control: needs aikrs.kunit_negative_control on the command line");
        return Ok(());
    }
    aikrs_expect_eq!(t, 1 + 1, 3);
    Ok(())
}

/// Whether the command line plants the bug `class` (`aikrs.planted_bug=CLASS`); skips the
/// case otherwise.
fn planted(t: &Test, class: &str) -> bool {
    if compat::cmdline_is("aikrs.planted_bug", class) {
        pr_info!("    # planting a bug on purpose: aikrs.planted_bug={class}\n");
        return true;
    }
    t.skip(c"negative control: needs aikrs.planted_bug=CLASS on the command line");
    false
}

/// Planted bug for KASAN: reads a byte of a freed allocation.
fn planted_use_after_free(t: &Test) -> Result {
    if !planted(t, "use_after_free") {
        return Ok(());
    }
    let p = KBox::into_raw(KBox::new([0x5au8; 64], GFP_KERNEL)?);
    // SAFETY: `p` came from `KBox::into_raw` and is not used through the box again.
    drop(unsafe { KBox::from_raw(p) });
    // SAFETY: none: this read of freed memory is the planted bug. KASAN checks the
    // access before it is made and reports it; the memory is still mapped (the slab
    // keeps it in quarantine), so the read itself returns garbage and nothing more.
    let v = unsafe { core::ptr::read_volatile(p.cast::<u8>().add(8)) };
    core::hint::black_box(v);
    Ok(())
}

/// Planted bug for lockdep: takes two mutexes in one order, then in the other (one task,
/// one after the other, so nothing deadlocks: lockdep reports the inversion from the
/// order alone).
fn planted_lock_inversion(t: &Test) -> Result {
    if !planted(t, "lock_inversion") {
        return Ok(());
    }
    let a = KBox::pin_init(new_mutex!(0u32, "aikrs_planted_a"), GFP_KERNEL)?;
    let b = KBox::pin_init(new_mutex!(0u32, "aikrs_planted_b"), GFP_KERNEL)?;
    {
        let _ga = a.lock();
        let _gb = b.lock();
    }
    {
        let _gb = b.lock();
        let _ga = a.lock();
    }
    Ok(())
}

/// Planted bug for the atomic-sleep check: takes a mutex (which may sleep) while holding
/// a spinlock.
fn planted_sleep_in_atomic(t: &Test) -> Result {
    if !planted(t, "sleep_in_atomic") {
        return Ok(());
    }
    let s = KBox::pin_init(new_spinlock!(0u32, "aikrs_planted_spin"), GFP_KERNEL)?;
    let m = KBox::pin_init(new_mutex!(0u32, "aikrs_planted_mutex"), GFP_KERNEL)?;
    let _gs = s.lock();
    let _gm = m.lock();
    Ok(())
}

aikrs_kunit_suite!(
    aikrs_support_negative,
    [
        deliberate_failure,
        planted_use_after_free,
        planted_lock_inversion,
        planted_sleep_in_atomic
    ]
);
