// SPDX-License-Identifier: GPL-2.0
/*
 * Guest fuzzer of the HMM mirror devices /dev/aikrs_hmm0 and /dev/aikrs_hmm1 and of
 * their debugfs counters (KTAP).
 *
 * For aikrs.fuzz_secs seconds (default 60, all parts together) with seed
 * aikrs.fuzz_seed (default: from the clock; printed, so that a run can be replayed
 * as far as thread scheduling allows), from the kernel command line:
 *
 * - three threads issue every command of lib/test_hmm_uapi.h with random and hostile
 *   arguments: most on a shared arena of eight ranges (2 MiB and 256 KiB) so that
 *   they do real work (faults, copies, migrations both ways, 2 MiB device folios,
 *   device-exclusive pages, releases of the device memory), the rest unaligned,
 *   empty, wrapping, beyond the user address space, at kernel and non-canonical
 *   addresses, with 2^40 pages and more, with the process's own stacks and data as
 *   the range, with NULL, kernel, read-only and unmapped buffers, and with the
 *   command block itself unreadable, read-only or straddling an unmapped page;
 *   plus unknown ioctl numbers and sizes, and read()/write() of the node;
 * - meanwhile a thread maps, unmaps, moves (mremap), protects and advises
 *   (MADV_DONTNEED, MADV_FREE, THP on and off, collapse, pageout, fork-related) the
 *   arena's ranges, maps the device node itself (a mixed map) and memfd pages over
 *   them, and writes to them;
 * - another closes and reopens the shared file descriptors (a command on a closed
 *   one gets EBADF), forks children that write to the arena, issue commands on the
 *   inherited descriptors (mirroring the parent) and on their own, and exit with
 *   their memory on the device, and fuzzes the debugfs counters aikrs_hmm0/ and
 *   aikrs_hmm1/ (reads into good and bad buffers, writes, which are refused; every
 *   value must be a number that never goes down);
 * - a canary range that no fuzz thread targets (4 MiB, half THP, half base pages,
 *   between unmapped guard pages) is filled with a known pattern and migrated to
 *   either device and back, read through either device, made device-exclusive,
 *   snapshotted and checked by the CPU over and over: every byte the device or the
 *   CPU reads must be the pattern.
 *
 * Every result is counted per command and errno (printed as diagnostics). An errno
 * outside the command's documented set (read from mirror.rs and the kernel functions
 * it calls, see def_commands()), a success whose output is inconsistent, a child that
 * crashes or hangs, a wrong canary byte or a bad debugfs value is a finding and fails
 * its part. A watchdog fails the run if the threads do not stop in time. Any oops,
 * WARN or KASAN report in the kernel log fails the guest run (scripts/guest.sh).
 *
 * Skipped debugfs files: none. The modules' debugfs files are read-only u64
 * counters (kernel::aikrs::debugfs::Counters); reading one starts no work. The only
 * debugfs files of the tree whose access starts work are KUnit's
 * (kunit/<suite>/run re-runs a suite when written), which are not ours and are left
 * alone; aikrs_iova/ and aikrs_gang/ exist only in demo mode and belong to other
 * modules.
 *
 * A longer run (ten minutes, this program only):
 *   scripts/guest.sh 7.3 --append "aikrs.fuzz_secs=600 aikrs.only=hmm_fuzz" --timeout 1500
 */
#include "../../tools/testing/aikrs/fuzz.h"

#include "hmm_user.h"

#define PAGE FZ_PAGE
#define HUGE (2UL << 20)

/* The commands, in the order of reqs[] first. */
enum {
	C_READ,
	C_WRITE,
	C_TO_DEV,
	C_TO_SYS,
	C_SNAPSHOT,
	C_EXCL,
	C_CHECK_EXCL,
	C_RELEASE,
	C_FLAGS,
	C_READ_UNLOCKED,
	C_UNKNOWN,
	C_RW,
	C_MMAP,
	C_DFS_READ,
	C_DFS_WRITE,
	NCMD
};

static const unsigned long reqs[] = {
	HMM_DMIRROR_READ,	     HMM_DMIRROR_WRITE,		HMM_DMIRROR_MIGRATE_TO_DEV,
	HMM_DMIRROR_MIGRATE_TO_SYS, HMM_DMIRROR_SNAPSHOT,	HMM_DMIRROR_EXCLUSIVE,
	HMM_DMIRROR_CHECK_EXCLUSIVE, HMM_DMIRROR_RELEASE,	HMM_DMIRROR_FLAGS,
	HMM_DMIRROR_READ_UNLOCKED,
};
#define NREQ ((int)FZ_ARRAY_SIZE(reqs))

/* Fuzzer parts (KTAP results). */
enum { P_FUZZ, P_CANARY, P_DFS, NPART };

/* Threads: fuzzers, then the mapping churn, the process thread and the canary. */
#define NFUZZ 3
#define T_CHURN NFUZZ
#define T_PROC (NFUZZ + 1)
#define T_CANARY (NFUZZ + 2)
#define NTHREAD (NFUZZ + 3)
/* Contexts (command pages, output buffers): the fuzzers, the children, the canary. */
#define X_CHILD NFUZZ
#define X_CANARY (NFUZZ + 1)
#define NCTX (NFUZZ + 2)

/* The arena: four 2 MiB ranges, then four of 256 KiB, then a guard. */
#define NSLOT 8
#define NFD 4
#define OUT_SIZE HUGE
#define CANARY_SIZE (4UL << 20)
/*
 * Seconds a child may take (its alarm), and the wait for it. A child issues up to 27
 * commands while four threads and other children fuzz the same devices; under TCG
 * with KASAN a child took more than 20 s in about one run in six (alarm fired with
 * the child killable, no hung-task report). The alarm is for hangs, which have no end:
 * 45 s, below the hung-task detector's 120 s; a child that hits it prints its last
 * command (child_alarm).
 */
#define CHILD_SECS 45

static size_t slot_off[NSLOT], slot_len[NSLOT];
static char *arena;
static size_t arena_len;
/* The canary and its guard pages: no range a fuzz command names starts in here. */
static char *canary;
static uint64_t canary_zone_lo, canary_zone_hi;
static uint64_t user_end;
static int ndev;
static const char *const devs[2] = { "/dev/aikrs_hmm0", "/dev/aikrs_hmm1" };
/* Shared descriptors: (generation << 32) | fd, fd -1 while closed. */
static _Atomic uint64_t fdslot[NFD];
static int memfd;
/*
 * Per context: a command page (RW view) followed by an unmapped page; the same page
 * read-only (RO view); an output buffer followed by an unmapped page.
 */
static char *rw_view, *ro_view, *none_page;
static char *outs[NCTX];
static _Atomic int stop, finished;
static _Atomic uint64_t last_release;
static uint64_t seed;
static int some_data = 1; /* an address in the binary's data */

/*
 * The churn thread's knowledge of each range (it alone changes the arena). Every call
 * that changes a range updates it, whether it succeeded or not: a call that failed
 * may have done part of its work (a failed mremap(MREMAP_FIXED) may have unmapped
 * its destination already, a failed mprotect() may have changed some of the range),
 * so that the range is then no longer known readable and writable.
 */
enum { K_HOLE, K_ANON, K_SHARED, K_MEMFD_PRIV, K_MEMFD_SHARED, K_DEV, K_UNKNOWN };
static const char *const kind_names[] = { "hole", "anon", "shared", "memfd private",
					  "memfd shared", "device node", "unknown" };
struct slot_state {
	int kind;
	int rw; /* the whole range is mapped readable and writable */
};
static struct slot_state sstate[NSLOT];
/*
 * Held by the churn thread around each change and by the process thread around fork():
 * a child's copy of sstate[] then describes its memory.
 */
static pthread_mutex_t churn_lock = PTHREAD_MUTEX_INITIALIZER;

struct ctx {
	int idx;
	uint64_t rng;
	char *out;
	int own_fd; /* a child's own descriptor, else -1 */
};

static void def_commands(void)
{
	/*
	 * Documented results, from mirror.rs (MirrorFile::ioctl and the handlers) and
	 * what they call; EBADF is added for all. Common to every command: EFAULT (the
	 * command block cannot be read or written back) and EINVAL (unknown command, a
	 * range unaligned, empty, wrapping or beyond mm->task_size; mmap_read() of a
	 * process that is gone). EINTR is not documented for us: every loop returns it
	 * only for a task being killed, and no task of ours is.
	 *
	 * - READ, READ_UNLOCKED: ENOMEM (buffers, device-table nodes, a fault's
	 *   VM_FAULT_OOM), EBUSY (hmm_range_fault() kept racing invalidations for 1 s),
	 *   EFAULT (a page cannot be faulted in: no vma, PROT_NONE, VM_IO/PFNMAP,
	 *   SIGBUS; the output buffer). READ_UNLOCKED is EINVAL where the kernel lacks
	 *   hmm_range_fault_unlocked_timeout() (Linux 6.12).
	 * - WRITE: as READ, and EPERM (hmm_range_fault() asked to fault a page of a vma
	 *   without VM_WRITE), EFAULT also for a device page shared copy-on-write.
	 * - MIGRATE_TO_DEV: EINVAL (a page of the range not in a readable vma;
	 *   migrate_vma_setup() refuses VM_SPECIAL, e.g. the node's own mixed map),
	 *   ENOMEM, EBUSY and EFAULT (map_local's walk), ENOENT (a page neither migrated
	 *   nor mirrored, read_mapped()), EFAULT (the output).
	 * - MIGRATE_TO_SYS: EINVAL (as above), ENOMEM (a page left behind for lack of
	 *   memory or by HMM_DMIRROR_FLAG_FAIL_ALLOC).
	 * - SNAPSHOT: ENOMEM, EBUSY, EFAULT (the output; a process without users).
	 * - EXCLUSIVE: make_device_exclusive() gives EFAULT (GUP: no vma, not writable,
	 *   PFN map), EOPNOTSUPP (not an anonymous page), ENOMEM, EBUSY, EINVAL; EBUSY
	 *   after 100 commits lost to invalidations; ENOENT (read_mapped()).
	 * - CHECK_EXCLUSIVE: EPERM (a page still mapped for atomics), EFAULT (table).
	 * - RELEASE: ENOMEM (its arrays), EBUSY (a page still in use after 100 eviction
	 *   rounds). Its range is checked too, though unused.
	 * - FLAGS: EINVAL (an unknown flag); no range check.
	 * - unknown numbers: EINVAL (the driver's default).
	 * - read()/write() of the node: EINVAL (no read or write method).
	 * - mmap() of the node: EINVAL, ENOMEM (page allocation, vm_insert_page()),
	 *   EOVERFLOW (an offset past what a page offset can hold).
	 */
	fz_def(C_READ, P_FUZZ, "HMM_DMIRROR_READ", EINVAL, EFAULT, ENOMEM, EBUSY, 0);
	fz_def(C_WRITE, P_FUZZ, "HMM_DMIRROR_WRITE", EINVAL, EFAULT, ENOMEM, EBUSY, EPERM, 0);
	fz_def(C_TO_DEV, P_FUZZ, "HMM_DMIRROR_MIGRATE_TO_DEV", EINVAL, EFAULT, ENOMEM, EBUSY,
	       ENOENT, 0);
	fz_def(C_TO_SYS, P_FUZZ, "HMM_DMIRROR_MIGRATE_TO_SYS", EINVAL, EFAULT, ENOMEM, 0);
	fz_def(C_SNAPSHOT, P_FUZZ, "HMM_DMIRROR_SNAPSHOT", EINVAL, EFAULT, ENOMEM, EBUSY, 0);
	fz_def(C_EXCL, P_FUZZ, "HMM_DMIRROR_EXCLUSIVE", EINVAL, EFAULT, ENOMEM, EBUSY, ENOENT,
	       EOPNOTSUPP, 0);
	fz_def(C_CHECK_EXCL, P_FUZZ, "HMM_DMIRROR_CHECK_EXCLUSIVE", EINVAL, EFAULT, EPERM, 0);
	fz_def(C_RELEASE, P_FUZZ, "HMM_DMIRROR_RELEASE", EINVAL, EFAULT, ENOMEM, EBUSY, 0);
	fz_def(C_FLAGS, P_FUZZ, "HMM_DMIRROR_FLAGS", EINVAL, EFAULT, 0);
	fz_def(C_READ_UNLOCKED, P_FUZZ, "HMM_DMIRROR_READ_UNLOCKED", EINVAL, EFAULT, ENOMEM,
	       EBUSY, 0);
	fz_def(C_UNKNOWN, P_FUZZ, "unknown ioctl", EINVAL, 0);
	fz_def(C_RW, P_FUZZ, "read/write of the node", EINVAL, 0);
	fz_def(C_MMAP, P_FUZZ, "mmap of the node", EINVAL, ENOMEM, EOVERFLOW, 0);
}

/* ---- arguments ---- */

/* A page of the arena (the range may go on past it). */
static uint64_t arena_page(uint64_t *s)
{
	return (uintptr_t)arena + fz_below(s, arena_len / PAGE) * PAGE;
}

/* A range in the arena: within one of its ranges, across several, or into the guard. */
static void arena_range(uint64_t *s, uint64_t *addr, uint64_t *np)
{
	int sl = (int)fz_below(s, NSLOT);
	uint64_t pages = slot_len[sl] / PAGE;
	uint64_t off = fz_chance(s, 50) ? 0 : fz_below(s, pages);
	uint64_t rest = pages - off;
	uint64_t to_end = (arena_len - slot_off[sl]) / PAGE - off;

	*addr = (uintptr_t)arena + slot_off[sl] + off * PAGE;
	switch (fz_below(s, 20)) {
	case 0: case 1:
		*np = 1;
		break;
	case 2: case 3: case 4:
		*np = 1 + fz_below(s, 16);
		break;
	case 5: case 6:
		*np = rest < 64 ? rest : 64;
		break;
	case 7: case 8: case 9: case 10:
		*np = rest;
		break;
	case 11:
		*np = 512;
		break;
	case 12:
		*np = to_end;
		break;
	case 13: /* into the guard */
		*np = to_end + 1 + fz_below(s, 600);
		break;
	default:
		*np = 1 + fz_below(s, rest);
		break;
	}
}

/* Whether `addr` lies in the canary or its guards (no fuzz range starts there). */
static int in_canary(uint64_t addr)
{
	return addr >= canary_zone_lo && addr < canary_zone_hi;
}

/*
 * The range of a command. Mostly in the arena; else hostile, or (for commands that
 * do not change the data of the range) the process's own stack or data. A range that
 * starts outside the canary's zone cannot reach the canary: every walk that faults,
 * migrates or copies stops at its unmapped guard page.
 */
static void gen_range(struct ctx *c, int cmd, uint64_t *addr, uint64_t *np)
{
	uint64_t *s = &c->rng;
	int stack;

	for (int tries = 0; tries < 8; tries++) {
		if (fz_chance(s, 70))
			break;
		switch (fz_below(s, 11)) {
		case 0: /* unaligned */
			*addr = arena_page(s) + 1 + fz_below(s, PAGE - 1);
			*np = 1 + fz_below(s, 4);
			return;
		case 1: /* empty */
			*addr = arena_page(s);
			*np = 0;
			return;
		case 2: /* huge counts, from the arena or from 0 */
			*addr = fz_chance(s, 50) ? arena_page(s) : 0;
			*np = fz_huge_count(s, user_end);
			return;
		case 3: /* kernel and non-canonical addresses */
			*addr = fz_bad_addr(s) & ~(PAGE - 1);
			*np = fz_chance(s, 50) ? 1 : fz_huge_count(s, user_end);
			if (*addr && !in_canary(*addr))
				return;
			continue;
		case 4: /* at the end of the user address space */
			switch (fz_below(s, 4)) {
			case 0:
				*addr = user_end - PAGE;
				*np = 2;
				break;
			case 1:
				*addr = user_end;
				*np = 1;
				break;
			case 2:
				*addr = user_end - PAGE;
				*np = 1;
				break;
			default:
				*addr = user_end - 512 * PAGE;
				*np = 513;
				break;
			}
			return;
		case 5: /* never mapped: the first pages, 32 TiB */
			*addr = fz_chance(s, 50) ? PAGE * fz_below(s, 16) : 0x200000000000ULL;
			*np = fz_chance(s, 70) ? 1 + fz_below(s, 512) : user_end / PAGE / 2;
			return;
		case 6: /* anywhere */
			*addr = (0x10000 + fz_below(s, user_end - 0x10000)) & ~(PAGE - 1);
			*np = 1 + fz_below(s, 1024);
			if (!in_canary(*addr) && cmd != C_WRITE)
				return;
			continue;
		default: /* our own stack or data: real memory the fuzzer uses */
			if (cmd == C_WRITE)
				continue;
			*addr = fz_chance(s, 50) ? (uintptr_t)&stack : (uintptr_t)&some_data;
			*addr = (*addr & ~(PAGE - 1)) + (fz_below(s, 17) - 8) * PAGE;
			*np = 1 + fz_below(s, 32);
			if (!in_canary(*addr))
				return;
			continue;
		}
	}
	arena_range(s, addr, np);
}

/*
 * The buffer of a command: the context's output buffer (sometimes placed so that
 * the copy runs into the unmapped page after it), a page of the arena, or a hostile
 * one. Never memory the fuzzer uses: a copy into it would corrupt the fuzzer.
 */
static uint64_t gen_ptr(struct ctx *c)
{
	uint64_t *s = &c->rng;
	unsigned int r = (unsigned int)fz_below(s, 100);

	if (r < 70)
		return (uintptr_t)c->out;
	if (r < 74)
		return (uintptr_t)c->out + OUT_SIZE - PAGE * (1 + fz_below(s, 8));
	if (r < 84)
		return arena_page(s);
	switch (fz_below(s, 6)) {
	case 0: return (uintptr_t)none_page;
	case 1: return (uintptr_t)ro_view + c->idx * 2 * PAGE;
	case 2: return (uintptr_t)c->out + OUT_SIZE; /* the unmapped page */
	case 3: return UINT64_MAX - PAGE + 1;	      /* ptr + offset wraps */
	default: return fz_bad_addr(s);
	}
}

/* Whether `b` is a byte HMM_DMIRROR_SNAPSHOT may give. */
static int snapshot_byte_ok(unsigned char b)
{
	unsigned char rw = b & (HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_WRITE);

	if (b == HMM_DMIRROR_PROT_ERROR || b == HMM_DMIRROR_PROT_NONE)
		return 1;
	if (b & 0xc0)
		return 0;
	return rw == HMM_DMIRROR_PROT_READ || rw == HMM_DMIRROR_PROT_WRITE;
}

/*
 * The descriptor of a command: a shared one (its slot in *si), the context's own, or
 * a bad one.
 */
static int pick_fd(struct ctx *c, int *si, uint64_t *v)
{
	uint64_t *s = &c->rng;

	*si = -1;
	if (fz_chance(s, 1))
		return fz_chance(s, 50) ? -1 : 0x7fffff;
	if (c->own_fd >= 0 && fz_chance(s, 50))
		return c->own_fd;
	*si = (int)fz_below(s, NFD);
	*v = atomic_load(&fdslot[*si]);
	return (int)(uint32_t)*v;
}

/* One random command. */
/*
 * A child's last command, for its alarm: a child that takes longer than CHILD_SECS
 * says what it was doing before it dies of the alarm (a finding either way).
 */
static char child_last[160];
static uint64_t child_last_ns;
static int child_cmds;

static void child_note(int which, unsigned long req, const struct hmm_dmirror_cmd *in)
{
	child_cmds++;
	child_last_ns = fz_now_ns();
	snprintf(child_last, sizeof(child_last), "%s (req %#lx addr %#llx npages %#llx)",
		 which < NCMD ? fz_cmds[which].name : "?", req,
		 (unsigned long long)in->addr, (unsigned long long)in->npages);
}

static void child_alarm(int sig)
{
	char msg[320];
	int n = snprintf(msg, sizeof(msg),
			 "# fuzzing child %d: alarm after %d commands; the last, %s, started %llu ms ago\n",
			 (int)getpid(), child_cmds, child_last[0] ? child_last : "none",
			 child_last_ns ? (unsigned long long)((fz_now_ns() - child_last_ns) / 1000000) : 0ULL);

	if (n > 0)
		(void)!write(1, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void fuzz_one(struct ctx *c)
{
	static const unsigned char weights[] = {
		[C_READ] = 16, [C_WRITE] = 12, [C_TO_DEV] = 14, [C_TO_SYS] = 12,
		[C_SNAPSHOT] = 9, [C_EXCL] = 8, [C_CHECK_EXCL] = 6, [C_RELEASE] = 2,
		[C_FLAGS] = 3, [C_READ_UNLOCKED] = 6, [C_UNKNOWN] = 4, [C_RW] = 2,
	};
	uint64_t *s = &c->rng;
	struct hmm_dmirror_cmd cmd = { 0 }, in, *arg = &cmd;
	unsigned long req;
	unsigned int w = 0, pick;
	int which = 0, si, fd, ret, e, raced, argkind = 0;
	uint64_t v = 0;
	char what[200];

	for (int i = 0; i < (int)sizeof(weights); i++)
		w += weights[i];
	pick = (unsigned int)fz_below(s, w);
	while (pick >= weights[which])
		pick -= weights[which++];
	if (which == C_RELEASE) {
		/* RELEASE removes and later re-adds 256 MiB of device memory: not too often. */
		uint64_t now = fz_now_ns(), last = atomic_load(&last_release);

		if (now - last < 300000000ULL ||
		    !atomic_compare_exchange_strong(&last_release, &last, now))
			which = C_SNAPSHOT;
	}
	fd = pick_fd(c, &si, &v);

	if (which == C_RW) {
		char *buf = fz_chance(s, 70) ? c->out : (char *)(uintptr_t)fz_bad_addr(s);
		size_t n = fz_chance(s, 50) ? 40 : fz_below(s, 1 << 20);
		ssize_t r = fz_chance(s, 50) ? read(fd, buf, n) : write(fd, buf, n);

		e = r < 0 ? errno : 0;
		raced = si >= 0 && atomic_load(&fdslot[si]) != v;
		snprintf(what, sizeof(what), "fd %d, %zu bytes at %p = %zd", fd, n, buf, r);
		fz_result(C_RW, e, raced, what);
		return;
	}

	if (which == C_UNKNOWN) {
		req = fz_unknown_ioctl(s, 'H', NREQ - 1, sizeof(cmd), reqs, NREQ);
	} else {
		uint64_t addr, np;

		req = reqs[which];
		gen_range(c, which, &addr, &np);
		cmd.addr = addr;
		cmd.npages = np;
		cmd.ptr = gen_ptr(c);
		if (which == C_FLAGS) {
			static const uint64_t flags[] = { 0, HMM_DMIRROR_FLAG_FAIL_ALLOC, 2, 3,
							  1ULL << 63, UINT64_MAX };

			cmd.npages = fz_chance(s, 90) ? flags[fz_below(s, 6)] : fz_next(s);
		}
		/* Garbage in the output fields: they are outputs only. */
		if (fz_chance(s, 10)) {
			cmd.cpages = fz_next(s);
			cmd.faults = fz_next(s);
		}
	}
	/* The command block itself. */
	switch (fz_below(s, 100)) {
	case 0: case 1: case 2:
		arg = (void *)(uintptr_t)fz_bad_addr(s);
		argkind = 1;
		break;
	case 3: case 4: case 5: case 6: {
		/* Readable, not writable: the command runs, the result cannot be written. */
		size_t off = c->idx * 2 * PAGE;

		memcpy(rw_view + off, &cmd, sizeof(cmd));
		arg = (void *)(ro_view + off);
		argkind = 2;
		break;
	}
	case 7: case 8:
		/* Straddling the unmapped page after the command page. */
		arg = (void *)(rw_view + c->idx * 2 * PAGE + PAGE - sizeof(cmd) / 2);
		memcpy(arg, &cmd, sizeof(cmd) / 2);
		argkind = 3;
		break;
	default:
		break;
	}

	in = cmd;
	if (c->idx == X_CHILD)
		child_note(which, req, &in);
	ret = ioctl(fd, req, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what),
		 "fd %d req %#lx addr %#llx npages %#llx ptr %#llx arg %p (kind %d) = %d", fd,
		 req, (unsigned long long)in.addr, (unsigned long long)in.npages,
		 (unsigned long long)in.ptr, (void *)arg, argkind, ret);
	if (!fz_result(which, e, raced, what) || ret || argkind || raced)
		return;
	if (which == C_UNKNOWN) {
		fz_finding(P_FUZZ, "unknown ioctl accepted: %s", what);
		return;
	}
	/* A success: the block comes back with the input and consistent counts. */
	if (cmd.addr != in.addr || cmd.ptr != in.ptr || cmd.npages != in.npages)
		fz_finding(P_FUZZ, "%s: the block came back as addr %#llx ptr %#llx npages %#llx: %s",
			   fz_cmds[which].name, (unsigned long long)cmd.addr,
			   (unsigned long long)cmd.ptr, (unsigned long long)cmd.npages, what);
	if (which == C_TO_SYS && cmd.cpages > cmd.npages)
		fz_finding(P_FUZZ, "%s: cpages %llu > npages: %s", fz_cmds[which].name,
			   (unsigned long long)cmd.cpages, what);
	if ((which == C_READ || which == C_READ_UNLOCKED || which == C_WRITE ||
	     which == C_SNAPSHOT || which == C_EXCL || which == C_TO_DEV) &&
	    cmd.cpages != cmd.npages)
		fz_finding(P_FUZZ, "%s: success with cpages %llu != npages: %s",
			   fz_cmds[which].name, (unsigned long long)cmd.cpages, what);
	if (which == C_SNAPSHOT && cmd.ptr == (uintptr_t)c->out && cmd.npages <= OUT_SIZE) {
		const unsigned char *b = (const unsigned char *)c->out;

		for (uint64_t i = 0; i < cmd.npages; i++)
			if (!snapshot_byte_ok(b[i])) {
				fz_finding(P_FUZZ, "snapshot byte %llu is %#x: %s",
					   (unsigned long long)i, b[i], what);
				break;
			}
	}
}

static void *fuzz_thread(void *arg)
{
	struct ctx *c = arg;

	while (!atomic_load(&stop))
		fuzz_one(c);
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- the arena's mappings ---- */

static int slot_pair(uint64_t *s, int a)
{
	int first = a < 4 ? 0 : 4;

	return first + (int)fz_below(s, 4);
}

/*
 * Writes and reads some pages of range `sl` (the CPU side: faults pages back from the
 * device, breaks copy-on-write, revokes exclusive access).
 *
 * Only on a range that sstate[] says mapped readable and writable over its whole
 * length: the churn thread mapped or protected it so and nothing changed it since
 * (the churn thread alone changes the arena, and calls this with churn_lock held; a
 * child, with one thread, calls it right after its own mprotect() of the range). A
 * fault here is thus never the fuzzer's doing but the kernel's (say, a page left
 * unreachable by a migration): a finding, with the address and what
 * /proc/self/maps says of it (no mapping, or its permissions). The range is then
 * left alone.
 */
static void touch(uint64_t *s, int sl)
{
	volatile char *p = (volatile char *)(arena + slot_off[sl]);
	size_t pages = slot_len[sl] / PAGE;
	int n = 1 + (int)fz_below(s, 16), kind = sstate[sl].kind, sig;
	volatile int op = 0; /* 1 a write, 2 a read, 3 a memset */

	sig = sigsetjmp(fz_jb, 1);
	if (sig) {
		char maps[96];

		fz_maps_of((uintptr_t)fz_fault_addr, maps, sizeof(maps));
		fz_finding(P_FUZZ, "signal %d at %p on a CPU %s of arena range %d (%s), mapped read-write: maps %s",
			   sig, fz_fault_addr, op == 1 ? "write" : op == 2 ? "read" : "memset", sl,
			   kind_names[kind], maps);
		sstate[sl] = (struct slot_state){ K_UNKNOWN, 0 };
		return;
	}
	fz_armed = 1;
	for (int i = 0; i < n; i++) {
		size_t at = fz_below(s, pages) * PAGE + fz_below(s, PAGE);

		if (fz_chance(s, 50)) {
			op = 1;
			p[at] = (char)fz_next(s);
		} else {
			op = 2;
			(void)p[at];
		}
	}
	if (fz_chance(s, 10)) {
		op = 3;
		memset((char *)p, (int)fz_below(s, 256), slot_len[sl]);
	}
	fz_armed = 0;
}

/* Maps range `sl` anew with `kind` (the caller holds churn_lock). */
static void map_slot(uint64_t *s, int sl, int kind)
{
	char *p = arena + slot_off[sl];
	size_t len = slot_len[sl];
	void *r = MAP_FAILED;

	switch (kind) {
	case K_ANON:
		r = mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0);
		if (r != MAP_FAILED && len == HUGE)
			madvise(p, len, fz_chance(s, 60) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		break;
	case K_SHARED:
		r = mmap(p, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0);
		break;
	case K_MEMFD_PRIV:
	case K_MEMFD_SHARED:
		r = mmap(p, len, PROT_READ | PROT_WRITE,
			 (kind == K_MEMFD_PRIV ? MAP_PRIVATE : MAP_SHARED) | MAP_FIXED, memfd, 0);
		break;
	case K_DEV: {
		/* The node's own mapping: zeroed pages inserted at mmap() (a mixed map). */
		int si = (int)fz_below(s, NFD), e;
		uint64_t v = atomic_load(&fdslot[si]);
		int fd = (int)(uint32_t)v, prot = PROT_READ;
		off_t off = 0;
		char what[160];

		if (fz_chance(s, 60))
			prot |= PROT_WRITE;
		else if (fz_chance(s, 20))
			prot = PROT_NONE;
		if (fz_chance(s, 10)) {
			static const off_t offs[] = { 1, PAGE, 1L << 40, 0x7ffffffffffff000L };

			off = offs[fz_below(s, 4)];
		}
		r = mmap(p, len, prot, (fz_chance(s, 50) ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED,
			 fd, off);
		e = r == MAP_FAILED ? errno : 0;
		snprintf(what, sizeof(what), "fd %d, %zu bytes at %p, prot %d, offset %#llx", fd,
			 len, p, prot, (unsigned long long)off);
		fz_result(C_MMAP, e, atomic_load(&fdslot[si]) != v, what);
		/* Never touched by the CPU: after MADV_DONTNEED its pages are gone (SIGBUS). */
		sstate[sl] = (struct slot_state){ r == MAP_FAILED ? K_UNKNOWN : K_DEV, 0 };
		return;
	}
	default:
		break;
	}
	if (r == MAP_FAILED) {
		sstate[sl] = (struct slot_state){ K_UNKNOWN, 0 };
		return;
	}
	sstate[sl] = (struct slot_state){ kind, 1 };
	if (fz_chance(s, 50))
		touch(s, sl);
}

/* One change of the arena (the caller holds churn_lock). */
static void churn_one(uint64_t *s)
{
	static const int advice[] = {
		MADV_DONTNEED, MADV_DONTNEED, MADV_FREE, MADV_FREE, MADV_HUGEPAGE,
		MADV_NOHUGEPAGE, MADV_COLLAPSE, MADV_PAGEOUT, MADV_COLD, MADV_WIPEONFORK,
		MADV_KEEPONFORK, MADV_DONTFORK, MADV_DOFORK, MADV_POPULATE_WRITE, MADV_WILLNEED,
	};
	int sl = (int)fz_below(s, NSLOT);
	char *p = arena + slot_off[sl];
	size_t len = slot_len[sl];

	switch (fz_below(s, 20)) {
	case 0: case 1: case 2:
		map_slot(s, sl, K_ANON);
		break;
	case 3:
		map_slot(s, sl, K_SHARED);
		break;
	case 4:
		map_slot(s, sl, fz_chance(s, 50) ? K_MEMFD_PRIV : K_MEMFD_SHARED);
		break;
	case 5:
		map_slot(s, sl, K_DEV);
		break;
	case 6:
		munmap(p, len);
		sstate[sl] = (struct slot_state){ K_HOLE, 0 };
		break;
	case 7: case 8: {
		static const int prots[] = { PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE };
		int prot = prots[fz_below(s, 3)], half = fz_chance(s, 30);

		if (!mprotect(p + (half ? len / 2 : 0), half ? len / 2 : len, prot))
			sstate[sl].rw = !half && prot == (PROT_READ | PROT_WRITE) &&
					sstate[sl].kind != K_DEV && sstate[sl].kind != K_UNKNOWN &&
					sstate[sl].kind != K_HOLE;
		else
			sstate[sl].rw = 0; /* it may have changed the vmas before the failure */
		break;
	}
	case 9: case 10: case 11: {
		int adv = advice[fz_below(s, FZ_ARRAY_SIZE(advice))];
		size_t off = fz_chance(s, 70) ? 0 : fz_below(s, len / PAGE) * PAGE;

		if (adv == MADV_COLLAPSE && fz_chance(s, 80))
			adv = MADV_HUGEPAGE; /* slow under TCG: now and then */
		madvise(p + off, len - off, adv);
		break;
	}
	case 12: case 13: case 14: case 15:
		if (sstate[sl].rw)
			touch(s, sl);
		break;
	case 16: case 17: {
		/* Move the range onto another of its size (device entries move with it). */
		int to = slot_pair(s, sl);
		int dontunmap = sstate[sl].kind == K_ANON && fz_chance(s, 30);
		void *r;

		if (to == sl)
			break;
		r = mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED |
			   (dontunmap ? MREMAP_DONTUNMAP : 0), arena + slot_off[to]);
		if (r == MAP_FAILED) {
			/*
			 * The destination may be unmapped all the same: Linux 6.12's
			 * mremap_to() unmaps it before it checks the source (EFAULT for a
			 * source shrunk or split by mprotect(), EINVAL or ENOMEM for
			 * MREMAP_DONTUNMAP), and later kernels after (ENOMEM when moving).
			 * A failed move leaves the source as it was.
			 */
			sstate[to] = (struct slot_state){ K_UNKNOWN, 0 };
			break;
		}
		sstate[to] = sstate[sl];
		if (!dontunmap)
			sstate[sl] = (struct slot_state){ K_HOLE, 0 };
		break;
	}
	case 18: {
		/* Shrink in place: the tail becomes a hole (maybe even if it fails). */
		mremap(p, len, len / 2, 0);
		sstate[sl].rw = 0;
		break;
	}
	default:
		/* Through the fork state too: wipe-on-fork, don't-fork. */
		madvise(p, len, fz_chance(s, 50) ? MADV_WIPEONFORK : MADV_DONTFORK);
		break;
	}
}

static void *churn_thread(void *arg)
{
	uint64_t s = fz_stream(seed, T_CHURN);

	(void)arg;
	while (!atomic_load(&stop)) {
		pthread_mutex_lock(&churn_lock);
		churn_one(&s);
		pthread_mutex_unlock(&churn_lock);
		if (fz_chance(&s, 30))
			usleep((useconds_t)fz_below(&s, 2000));
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- children, descriptors, debugfs ---- */

/*
 * A child: writes to the arena's ranges it has (its own copy-on-write copy), issues
 * commands on the inherited descriptors (they mirror the parent: ranges are the
 * parent's, buffers the child's) and on its own, and exits without closing, with its
 * memory maybe on the device.
 */
static void child_main(uint64_t rs, pid_t parent)
{
	struct ctx c = { .idx = X_CHILD, .rng = rs, .out = outs[X_CHILD], .own_fd = -1 };
	int n = 4 + (int)fz_below(&c.rng, 24);

	fz_child_setup(parent, CHILD_SECS);
	signal(SIGALRM, child_alarm);
	if (fz_chance(&c.rng, 50))
		c.own_fd = open(devs[fz_below(&c.rng, ndev)], O_RDWR);
	for (int i = 0; i < n; i++) {
		int sl = (int)fz_below(&c.rng, NSLOT);

		if (fz_chance(&c.rng, 40) && sstate[sl].kind != K_DEV &&
		    sstate[sl].kind != K_UNKNOWN &&
		    !mprotect(arena + slot_off[sl], slot_len[sl], PROT_READ | PROT_WRITE))
			touch(&c.rng, sl);
		else
			fuzz_one(&c);
	}
	_exit(0);
}

/* Closes descriptor slot `si` and, unless `keep_closed`, opens it again. */
static void reopen(uint64_t *s, int si, int keep_closed)
{
	uint64_t old = atomic_load(&fdslot[si]);
	int fd = keep_closed ? -1 : open(devs[(si + (int)fz_below(s, 2)) % ndev], O_RDWR);
	int ofd = (int)(uint32_t)old;

	atomic_store(&fdslot[si], ((old >> 32) + 1) << 32 | (uint32_t)fd);
	if (ofd >= 0)
		close(ofd);
}

static struct fz_dfs dfs;
static _Atomic unsigned long forks;

static void *proc_thread(void *arg)
{
	uint64_t s = fz_stream(seed, T_PROC);
	pid_t self = getpid();

	(void)arg;
	while (!atomic_load(&stop)) {
		unsigned int r = (unsigned int)fz_below(&s, 100);

		if (r < 25) {
			uint64_t rs = fz_next(&s);
			pid_t pid;

			pthread_mutex_lock(&churn_lock);
			pid = fork();
			if (pid == 0)
				child_main(rs, self);
			pthread_mutex_unlock(&churn_lock);
			if (pid < 0) {
				fz_finding(P_FUZZ, "fork: %s", strerror(errno));
				continue;
			}
			atomic_fetch_add(&forks, 1);
			fz_reap(pid, (CHILD_SECS + 5) * 1000, P_FUZZ, "fuzzing child");
		} else if (r < 50) {
			reopen(&s, (int)fz_below(&s, NFD), 0);
		} else if (r < 52) {
			reopen(&s, (int)fz_below(&s, NFD), 1);
		} else {
			fz_dfs_step(&dfs, &s);
		}
		usleep((useconds_t)fz_below(&s, 10000));
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- the canary ---- */

static struct {
	unsigned long dev_checks, cpu_checks, snapshots, bad;
} cs;

static uint64_t canary_word(unsigned int gen, size_t i)
{
	uint64_t x = (uint64_t)gen * 0x100000001b3ULL ^ (uint64_t)i * 0x9e3779b97f4a7c15ULL;

	x ^= x >> 29;
	return x | 1;
}

static void canary_fill(unsigned int gen)
{
	uint64_t *w = (uint64_t *)canary;

	for (size_t i = 0; i < CANARY_SIZE / 8; i++)
		w[i] = canary_word(gen, i);
}

/* Compares pages [p0, p0 + n) of the canary as read into `buf` (page p0 first). */
static int canary_check(const char *buf, size_t p0, size_t n, unsigned int gen,
			const char *how)
{
	const uint64_t *w = (const uint64_t *)buf;
	size_t first = p0 * PAGE / 8;

	for (size_t i = 0; i < n * PAGE / 8; i++) {
		if (w[i] == canary_word(gen, first + i))
			continue;
		cs.bad++;
		fz_finding(P_CANARY,
			   "canary byte %zu (page %zu) read by %s: %#llx, want %#llx (generation %u)",
			   (first + i) * 8, (first + i) * 8 / PAGE, how,
			   (unsigned long long)w[i],
			   (unsigned long long)canary_word(gen, first + i), gen);
		return 0;
	}
	return 1;
}

static void *canary_thread(void *arg)
{
	static const int ops[] = { C_TO_DEV, C_TO_DEV, C_READ, C_READ, C_READ, C_TO_SYS,
				   C_EXCL, C_SNAPSHOT, C_READ_UNLOCKED, C_CHECK_EXCL };
	uint64_t s = fz_stream(seed, T_CANARY);
	const size_t np = CANARY_SIZE / PAGE;
	int *cfd = arg;
	char *buf = outs[X_CANARY];
	unsigned int gen = 1;

	canary_fill(gen);
	while (!atomic_load(&stop)) {
		int which = ops[fz_below(&s, FZ_ARRAY_SIZE(ops))];
		int d = (int)fz_below(&s, ndev), ret, e;
		size_t p0 = fz_chance(&s, 40) ? 0 : fz_below(&s, np);
		size_t n = fz_chance(&s, 40) ? np - p0 : 1 + fz_below(&s, np - p0);
		struct hmm_dmirror_cmd cmd = { 0 };
		char what[160];

		if (which == C_EXCL && n > 64)
			n = 64; /* page by page, slow under TCG */
		cmd.addr = (uintptr_t)canary + p0 * PAGE;
		cmd.npages = n;
		cmd.ptr = (uintptr_t)buf;
		ret = ioctl(cfd[d], reqs[which], &cmd);
		e = ret ? errno : 0;
		snprintf(what, sizeof(what), "canary: device %d, pages %zu + %zu = %d", d, p0, n,
			 ret);
		fz_result(which, e, 0, what);
		if (!ret && (which == C_TO_DEV || which == C_READ || which == C_EXCL ||
			     which == C_READ_UNLOCKED)) {
			snprintf(what, sizeof(what), "%s of device %d", fz_cmds[which].name, d);
			canary_check(buf, p0, n, gen, what);
			cs.dev_checks++;
		}
		if (!ret && which == C_SNAPSHOT) {
			/* Always mapped readable: never an error byte. */
			for (size_t i = 0; i < n; i++) {
				unsigned char b = (unsigned char)buf[i];

				if (b == HMM_DMIRROR_PROT_ERROR || !snapshot_byte_ok(b)) {
					fz_finding(P_CANARY, "canary snapshot byte of page %zu: %#x",
						   p0 + i, b);
					cs.bad++;
					break;
				}
			}
			cs.snapshots++;
		}
		if (!ret && which == C_CHECK_EXCL && fz_chance(&s, 50)) {
			/* A CPU read revokes every exclusive entry of the range. */
			(void)*(volatile char *)(canary + p0 * PAGE);
		}
		/* The CPU's view: one page always, all of it now and then. */
		if (fz_chance(&s, 20)) {
			canary_check(canary, 0, np, gen, "the CPU");
		} else {
			size_t p = fz_below(&s, np);

			canary_check(canary + p * PAGE, p, 1, gen, "the CPU");
		}
		cs.cpu_checks++;
		if (fz_chance(&s, 5))
			canary_fill(++gen); /* a new pattern, written by the CPU */
	}
	canary_check(canary, 0, np, gen, "the CPU at the end");
	cs.cpu_checks++;
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- set-up ---- */

static void *must_map(void *addr, size_t len, int prot, int flags, int fd)
{
	void *p = mmap(addr, len, prot, flags, fd, 0);

	if (p == MAP_FAILED) {
		printf("# mmap of %zu bytes: %s\nnot ok 1 fuzz_hmm # set-up failed\n", len,
		       strerror(errno));
		exit(1);
	}
	return p;
}

/*
 * A 2 MiB-aligned region of `len` bytes inside a PROT_NONE reservation with at least
 * `guard` bytes unmapped (PROT_NONE) on each side.
 */
static char *reserve(size_t len, size_t guard)
{
	char *raw = must_map(NULL, len + 2 * guard + HUGE, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);

	return (char *)(((uintptr_t)raw + guard + HUGE - 1) & ~(HUGE - 1));
}

static void setup(void)
{
	size_t off = 0;
	char *p;

	for (int i = 0; i < NSLOT; i++) {
		slot_len[i] = i < 4 ? HUGE : 256 << 10;
		slot_off[i] = off;
		off += slot_len[i];
	}
	arena_len = off;
	arena = reserve(arena_len, HUGE);
	memfd = memfd_create("aikrs_hmm_fuzz", 0);
	if (memfd < 0 || ftruncate(memfd, HUGE)) {
		printf("# memfd: %s\nnot ok 1 fuzz_hmm # set-up failed\n", strerror(errno));
		exit(1);
	}
	for (int i = 0; i < NSLOT; i++) {
		must_map(arena + slot_off[i], slot_len[i], PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1);
		sstate[i] = (struct slot_state){ K_ANON, 1 };
		memset(arena + slot_off[i], i + 1, slot_len[i]);
	}
	canary = reserve(CANARY_SIZE, PAGE);
	must_map(canary, CANARY_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1);
	madvise(canary, HUGE, MADV_HUGEPAGE);
	madvise(canary + HUGE, CANARY_SIZE - HUGE, MADV_NOHUGEPAGE);
	canary_zone_lo = (uintptr_t)canary - PAGE;
	canary_zone_hi = (uintptr_t)canary + CANARY_SIZE + PAGE;

	/* The command pages: a shared memfd mapped read-write and read-only. */
	{
		int cfd = memfd_create("aikrs_hmm_fuzz_cmd", 0);

		if (cfd < 0 || ftruncate(cfd, NCTX * 2 * PAGE)) {
			printf("# memfd: %s\nnot ok 1 fuzz_hmm # set-up failed\n", strerror(errno));
			exit(1);
		}
		rw_view = must_map(NULL, NCTX * 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, cfd);
		ro_view = must_map(NULL, NCTX * 2 * PAGE, PROT_READ, MAP_SHARED, cfd);
		for (int i = 0; i < NCTX; i++)
			mprotect(rw_view + (2 * i + 1) * PAGE, PAGE, PROT_NONE);
		close(cfd);
	}
	none_page = must_map(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	for (int i = 0; i < NCTX; i++) {
		size_t len = i == X_CANARY ? CANARY_SIZE : OUT_SIZE;

		p = must_map(NULL, len + PAGE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1);
		mprotect(p + len, PAGE, PROT_NONE);
		outs[i] = p;
	}
	for (int i = 0; i < NFD; i++) {
		int fd = open(devs[i % ndev], O_RDWR);

		atomic_store(&fdslot[i], (uint32_t)fd);
	}
}

int main(void)
{
	static const char *const dirs[] = { "/sys/kernel/debug/aikrs_hmm0",
					    "/sys/kernel/debug/aikrs_hmm1", NULL };
	static const char *const part_names[NPART] = { "fuzz_hmm", "canary_hmm", "debugfs_hmm" };
	static char wd_msg[512];
	static const char crash_msg[] =
		"not ok 1 fuzz_hmm # crashed\nnot ok 2 canary_hmm # crashed\n"
		"not ok 3 debugfs_hmm # crashed\n";
	struct ctx ctxs[NFUZZ];
	pthread_t th[NTHREAD];
	int cfd[2], nfiles, fail = 0;
	uint64_t secs = 60, t0, fuzz_ns, grace_s, deadline;
	unsigned long total;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (access(devs[0], F_OK)) {
		printf("KTAP version 1\n1..1\nok 1 fuzz_hmm # SKIP %s absent\n", devs[0]);
		return 0;
	}
	ndev = access(devs[1], F_OK) ? 1 : 2;
	fz_init_shared();
	def_commands();
	fz_cmdline_u64("aikrs.fuzz_secs", &secs);
	if (secs < 5)
		secs = 5;
	if (!fz_cmdline_u64("aikrs.fuzz_seed", &seed))
		seed = fz_now_ns() ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&secs;
	printf("KTAP version 1\n1..%d\n", NPART);
	printf("# fuzz: seed=%llu secs=%llu (replay: aikrs.fuzz_seed=%llu aikrs.fuzz_secs=%llu)\n",
	       (unsigned long long)seed, (unsigned long long)secs, (unsigned long long)seed,
	       (unsigned long long)secs);
	fz_catch_faults(crash_msg);
	user_end = fz_user_end();
	setup();
	for (int d = 0; d < 2; d++) {
		cfd[d] = open(devs[d % ndev], O_RDWR);
		if (cfd[d] < 0) {
			printf("# open %s: %s\nnot ok 1 fuzz_hmm # set-up failed\n", devs[d % ndev],
			       strerror(errno));
			return 1;
		}
	}
	nfiles = fz_dfs_init(&dfs, dirs, P_DFS, C_DFS_READ, C_DFS_WRITE, none_page, ro_view);
	printf("# %d devices, %d debugfs files, arena %zu KiB at %p, canary %lu KiB at %p, "
	       "user space ends at %#llx\n", ndev, nfiles, arena_len >> 10, arena,
	       CANARY_SIZE >> 10, canary, (unsigned long long)user_end);

	/* All of the run's time, with a reserve for the threads' last commands. */
	t0 = fz_now_ns();
	fuzz_ns = (secs - (secs / 10 < 5 ? secs / 10 : 5)) * 1000000000ULL;
	deadline = t0 + fuzz_ns;
	grace_s = 30 + CHILD_SECS + 5;
	snprintf(wd_msg, sizeof(wd_msg),
		 "# watchdog: still running %llu s after the end of the fuzzing\n"
		 "not ok 1 fuzz_hmm # watchdog\nnot ok 2 canary_hmm # watchdog\n"
		 "not ok 3 debugfs_hmm # watchdog\n",
		 (unsigned long long)grace_s + 30);
	fz_watchdog((unsigned int)(secs + grace_s + 30), wd_msg);

	for (int i = 0; i < NFUZZ; i++) {
		ctxs[i] = (struct ctx){ .idx = i, .rng = fz_stream(seed, i), .out = outs[i],
					.own_fd = -1 };
		pthread_create(&th[i], NULL, fuzz_thread, &ctxs[i]);
	}
	pthread_create(&th[T_CHURN], NULL, churn_thread, NULL);
	pthread_create(&th[T_PROC], NULL, proc_thread, NULL);
	pthread_create(&th[T_CANARY], NULL, canary_thread, cfd);

	while (fz_now_ns() < deadline)
		usleep(100000);
	atomic_store(&stop, 1);
	for (uint64_t t = 0; atomic_load(&finished) < NTHREAD && t < grace_s * 100; t++)
		usleep(10000);
	if (atomic_load(&finished) < NTHREAD) {
		int pid = atomic_load(&fz_sh->child);

		printf("# watchdog: %d of %d threads still running %llu s after the end of the "
		       "fuzzing (a command that does not end?)\n", NTHREAD - atomic_load(&finished),
		       NTHREAD, (unsigned long long)grace_s);
		fz_print_counts();
		fz_print_findings();
		for (int i = 0; i < NPART; i++)
			printf("not ok %d %s # watchdog\n", i + 1, part_names[i]);
		if (pid > 0)
			kill(pid, SIGKILL);
		fflush(stdout);
		_exit(1);
	}
	for (int i = 0; i < NTHREAD; i++)
		pthread_join(th[i], NULL);
	/* The files go (mirrors torn down, device memory of the arena freed on exit). */
	for (int i = 0; i < NFD; i++) {
		int fd = (int)(uint32_t)atomic_load(&fdslot[i]);

		if (fd >= 0)
			close(fd);
	}
	close(cfd[0]);
	close(cfd[1]);
	alarm(0);

	total = fz_total_calls();
	printf("# %lu commands in %.1f s, %lu children\n", total,
	       (double)(fz_now_ns() - t0) / 1e9, atomic_load(&forks));
	fz_print_counts();
	printf("# canary: %lu device reads checked, %lu CPU checks, %lu snapshots, %lu bad\n",
	       cs.dev_checks, cs.cpu_checks, cs.snapshots, cs.bad);
	printf("# debugfs: %lu reads, %lu writes, %lu values checked\n", dfs.reads, dfs.writes,
	       dfs.values);
	fz_print_findings();

	{
		unsigned int nf = atomic_load(&fz_sh->npart[P_FUZZ]);
		int ok = !nf && total > 0;

		fail |= !ok;
		printf("%s 1 fuzz_hmm: %lu commands, %u findings\n", ok ? "ok" : "not ok", total,
		       nf);
	}
	{
		unsigned int nf = atomic_load(&fz_sh->npart[P_CANARY]);
		int ok = !nf && !cs.bad && cs.dev_checks > 0 && cs.cpu_checks > 0;

		fail |= !ok;
		printf("%s 2 canary_hmm: %lu device reads and %lu CPU checks, canary %s\n",
		       ok ? "ok" : "not ok", cs.dev_checks, cs.cpu_checks,
		       cs.bad ? "damaged" : nf ? "intact, with findings" : "intact");
	}
	{
		unsigned int nf = atomic_load(&fz_sh->npart[P_DFS]);
		int ok = !nf && nfiles > 0 && dfs.values > 0;

		fail |= !ok;
		printf("%s 3 debugfs_hmm: %d files, %lu reads, %lu writes, %u findings\n",
		       ok ? "ok" : "not ok", nfiles, dfs.reads, dfs.writes, nf);
	}
	return fail;
}
