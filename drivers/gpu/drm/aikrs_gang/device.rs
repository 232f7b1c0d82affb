// SPDX-License-Identifier: GPL-2.0

//! `/dev/aikrs_gang`: the test device of the gang layer (`CONFIG_AIKRS_GANG_BENCH`). ABI:
//! `aikrs_gang_uapi.h`.
//!
//! One command runs the benchmark's workload ([`bench::workload`]) on fresh model GPUs
//! and returns when every job has completed, with counts that show none was lost: the
//! guest's CPU hotplug test runs it while a CPU goes offline and online, and its
//! lifecycle test holds the module with it.
//!
//! Bounded and killable work: at most [`MAX_STEPS`] training steps and [`MAX_DECODES`]
//! decodes (`EINVAL` above; a few seconds of engine time at the limits), each job waited
//! for at most 10 s, at most [`MAX_RUNS`] commands at once in the whole system. A signal
//! ends a wait for a job and a task being killed stops between steps, decodes and
//! sleeps: `EINTR` either way, never a restart (a restarted command would start its
//! workload over, and a periodic signal would keep it from ever finishing); the jobs
//! left are failed and freed on the way out, as when a job times out. The benchmark
//! (`aikrs.mode=bench`) runs the same code with its own, larger counts and its waits
//! unchanged.
//!
//! Errors: `EINVAL` for counts out of range, `EFAULT` for an argument user space cannot
//! read or write, `ENOTTY` for an unknown command (as `/dev/aikrs_tlb`), `EBUSY` when
//! [`MAX_RUNS`] commands are running, `EINTR` (above), `ETIMEDOUT` when a job has not
//! completed within 10 s, `ENOMEM`.

use crate::bench;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{
    aikrs::{
        compat::user_slice,
        cpu::ktime_ns,
        miscdev::{FileOps, OpenFile},
    },
    alloc::{flags::GFP_KERNEL, KBox},
    prelude::*,
};

/// Limits of the ABI (`aikrs_gang_uapi.h`): the guest tests use up to 20 steps and 5
/// decodes. A decode may wait behind a 100 ms prefill, so these keep a command to a few
/// seconds.
const MAX_STEPS: u32 = 64;
const MAX_DECODES: u32 = 16;
/// Commands running at once, system-wide (`EBUSY` beyond).
const MAX_RUNS: u32 = 4;

const IOC_MAGIC: u32 = 0xA9;
const RUN_SIZE: usize = 80;
const IOC_RUN: u32 = kernel::ioctl::_IOWR::<[u8; RUN_SIZE]>(IOC_MAGIC, 0);

/// The device (no state of its own).
pub(crate) struct Dev;

/// An open file of `/dev/aikrs_gang` (no state: each command is self-contained).
pub(crate) struct GangFile;

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Commands running now, in all files (see [`MAX_RUNS`]).
static RUNS: AtomicU32 = AtomicU32::new(0);

/// A slot of [`RUNS`], given back when dropped.
struct RunSlot;

impl RunSlot {
    fn take() -> Result<Self> {
        RUNS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_RUNS).then_some(n + 1)
        })
        .map(|_| RunSlot)
        .map_err(|_| EBUSY)
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        RUNS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A signal ends a command with `EINTR`, never `ERESTARTSYS`: a restarted command would
/// start its workload over, and a periodic signal would keep it from ever finishing.
fn no_restart(e: Error) -> Error {
    if e == ERESTARTSYS {
        EINTR
    } else {
        e
    }
}

impl GangFile {
    fn run(&self, arg: usize) -> Result<isize> {
        let mut raw = [0u8; RUN_SIZE];
        let (mut reader, mut writer) = user_slice(arg, RUN_SIZE).reader_writer();
        reader.read_slice(&mut raw)?;
        let (steps, decodes) = (get_u32(&raw, 0), get_u32(&raw, 4));
        if steps == 0 || steps > MAX_STEPS || decodes > MAX_DECODES {
            return Err(EINVAL);
        }
        // Each command builds its own model GPUs (drm_sched instances, a workqueue with a
        // rescuer thread): a few at once, not as many as callers.
        let _slot = RunSlot::take()?;
        let t0 = ktime_ns();
        let r = bench::workload(steps, decodes).map_err(no_restart)?;
        let ns = (ktime_ns() - t0).max(0) as u64;
        put_u64(&mut raw, 8, r.jobs_expected);
        for i in 0..2 {
            put_u64(&mut raw, 16 + 8 * i, r.jobs_run[i]);
            put_u64(&mut raw, 32 + 8 * i, r.gangs_started[i]);
            put_u64(&mut raw, 48 + 8 * i, r.jobs_left[i]);
        }
        put_u64(&mut raw, 64, r.preemptions);
        put_u64(&mut raw, 72, ns);
        writer.write_slice(&raw)?;
        Ok(0)
    }
}

impl FileOps for GangFile {
    type Device = Dev;

    fn open(_dev: &'static Dev, _file: &OpenFile) -> Result<Pin<KBox<Self>>> {
        Ok(KBox::pin(GangFile, GFP_KERNEL)?)
    }

    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            IOC_RUN => self.run(arg),
            _ => Err(ENOTTY),
        }
    }
}
