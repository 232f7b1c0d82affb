// SPDX-License-Identifier: GPL-2.0
/*
 * Guest fuzzer of the two root-only test devices /dev/aikrs_iova (a domain of the
 * large-region IOVA allocator per open file) and /dev/aikrs_gang (the gang layer's
 * workload on fresh model GPUs) (KTAP).
 *
 * For aikrs.testdev_fuzz_secs seconds (default 20, both devices together; the
 * aikrs.fuzz_secs of the other fuzzers does not apply) with seed aikrs.fuzz_seed
 * (default: from the clock; printed, so that a run can be replayed as far as thread
 * scheduling allows), from the kernel command line:
 *
 * - two threads issue CREATE (random bounds, sizes and flags, out-of-range ones,
 *   unknown flags, a second CREATE on a file), ALLOC (sizes 0, 1..2^20 pages, powers
 *   of two and not, the whole domain and more, huge; limits below the domain, inside
 *   it, above it), FREE (of ranges they hold, double frees, wrong sizes, ranges no
 *   allocation can have, junk), DRAIN, STATS and unknown ioctl numbers and sizes, on
 *   four shared /dev/aikrs_iova files, with the argument block at NULL, kernel and
 *   non-canonical addresses, read-only (the command runs, its result cannot be
 *   written back) or straddling an unmapped page;
 * - another closes and reopens those files (a command on a closed one gets EBADF)
 *   and forks children that issue commands on the inherited files and close some of
 *   them, and must exit within a timeout;
 * - a canary thread owns a file of its own: a domain, 40 ranges of fixed sizes and
 *   limits that it frees and allocates again over and over (moving between CPUs, so
 *   that ranges pass through other CPUs' magazines and the depot), with deliberate
 *   double frees and frees of the wrong size, all of which must fail; every range
 *   must be aligned, inside its limit and the domain, and overlap no other it holds;
 *   STATS must match exactly what it holds (and nothing once it has freed all and
 *   drained);
 * - a thread issues RUN on /dev/aikrs_gang with small workloads (1..4 steps, up to
 *   AIKRS_GANG_MAX_STEPS now and then; 0..4 decodes mostly) and with bad counts,
 *   hostile argument blocks and unknown ioctl numbers, while another thread sends it
 *   SIGUSR1 (a handler without SA_RESTART) at random moments: an interrupted RUN must
 *   return (EINTR or done) within INTR_BOUND_S seconds, never hang.
 *
 * Every result is counted per command and errno (printed as diagnostics). An errno
 * outside the command's documented set (read from device.rs, domain.rs and the UAPI
 * headers, see def_commands()), a success that must have failed (a range that is not
 * aligned to its size rounded up to a power of two, beyond the limit or the domain; a
 * FREE of a range no ALLOC can return; a command whose block could not be read or
 * written back), a STATS snapshot that breaks an invariant that holds whatever runs
 * concurrently (lost == 0, free + allocated pages == span, allocations == tree
 * allocations - tree frees, ...), a RUN whose counts show a lost job or gang, an EINTR
 * without a signal, a child that crashes or hangs, or a canary check that fails is a
 * finding and fails its part. A device that is absent (module not loaded, see
 * aikrs.modules) makes its parts SKIP. A watchdog fails the run if the threads do not
 * stop in time. Any oops, WARN or KASAN report in the kernel log fails the guest run
 * (scripts/guest.sh).
 *
 * A longer run (ten minutes, this program only):
 *   scripts/guest.sh 7.3 --append "aikrs.testdev_fuzz_secs=600 aikrs.only=testdev_fuzz" --timeout 1500
 */
#include "fuzz.h"

#include <sched.h>

#include "../../../drivers/iommu/aikrs_iova/aikrs_iova_uapi.h"
#include "../../../drivers/gpu/drm/aikrs_gang/aikrs_gang_uapi.h"

#define PAGE FZ_PAGE
#define IOVA_DEV "/dev/aikrs_iova"
#define GANG_DEV "/dev/aikrs_gang"
#define MAXL AIKRS_IOVA_MAX_LIMIT
#define U(x) ((unsigned long long)(x))
/* A STATS check: a finding of `part` (counted in `bad`) if `cond`; `what` says which. */
#define SBAD(cond, fmt, ...)                                                       \
	do {                                                                       \
		if (cond) {                                                        \
			bad++;                                                     \
			fz_finding(part, "STATS: " fmt ": %s", __VA_ARGS__, what); \
		}                                                                  \
	} while (0)

_Static_assert(sizeof(struct aikrs_iova_create) == 24, "CREATE_SIZE of device.rs");
_Static_assert(sizeof(struct aikrs_iova_range) == 24, "RANGE_SIZE of device.rs");
_Static_assert(sizeof(struct aikrs_iova_stats) == 19 * 8, "STATS_SIZE of device.rs");
_Static_assert(sizeof(struct aikrs_gang_run) == 80, "RUN_SIZE of device.rs");

enum {
	C_CREATE,
	C_ALLOC,
	C_FREE,
	C_DRAIN,
	C_STATS,
	C_UNKNOWN,
	C_CAN_ALLOC,
	C_CAN_FREE,
	C_CAN_BADFREE,
	C_CAN_DRAIN,
	C_CAN_STATS,
	C_RUN,
	C_GUNKNOWN,
	NCMD
};
enum { P_IOVA, P_CANARY, P_GANG, NPART };

#define NFUZZ 2
#define T_PROC NFUZZ
#define T_CANARY (NFUZZ + 1)
#define T_GANG (NFUZZ + 2)
#define T_SIG (NFUZZ + 3)
#define NTHREAD (NFUZZ + 4)
/* Contexts with a command page: the IOVA fuzzers, the children, the gang thread. */
#define X_CHILD NFUZZ
#define X_GANG (NFUZZ + 1)
#define NCTX (NFUZZ + 2)

#define NFD 4
#define INST_MAX 8192
#define CHILD_SECS 10
#define NHELD 32
#define NFREED 8
/* A RUN sent a signal must return within this; one running this long is sent one. */
#define INTR_BOUND_S 20
#define LONG_RUN_S 30

/*
 * What is known of each /dev/aikrs_iova file opened (an instance): whether a CREATE
 * succeeded on it, and its domain. In shared memory: children create too.
 */
struct inst {
	_Atomic int state; /* 0 no domain known, 2 being recorded, 1 domain [start, limit] */
	_Atomic uint64_t start, limit;
};

struct tshared {
	struct inst inst[INST_MAX];
	_Atomic unsigned long creates, allocs, frees, stats_checked, children;
};
static struct tshared *ts;

/* Shared descriptors: (instance << 32) | fd, fd -1 while closed. */
static _Atomic uint64_t fdslot[NFD];
static uint32_t next_inst = 1;

static char *rw_view, *ro_view;
static _Atomic int stop, finished;
static uint64_t seed, t0, user_end;
static int have_iova, have_gang;

/* A range a context allocated, on instance `id`. */
struct range {
	uint32_t id;
	uint64_t pfn, size;
};

struct ctx {
	int idx;
	uint64_t rng;
	struct range held[NHELD];
	int nheld;
	struct range freed[NFREED];
	unsigned int nfreed;
};

/* What a thread knows of a domain. */
struct dom {
	int known;
	uint64_t start, limit;
};

static const unsigned long iova_ioctls[] = { AIKRS_IOVA_IOC_CREATE, AIKRS_IOVA_IOC_ALLOC,
					      AIKRS_IOVA_IOC_FREE, AIKRS_IOVA_IOC_DRAIN,
					      AIKRS_IOVA_IOC_STATS };
static const unsigned long gang_ioctls[] = { AIKRS_GANG_IOC_RUN };

static void def_commands(void)
{
	/*
	 * Documented results; EBADF is added for all (the files are closed under the
	 * callers' feet). drivers/iommu/aikrs_iova/device.rs: ENOTTY for an unknown
	 * command (line 206), EFAULT for a block that cannot be read or written (lines 88,
	 * 129, 134-138, 144, 182), EINVAL before CREATE (domain(), line 83: ALLOC, FREE,
	 * DRAIN, STATS).
	 *
	 * - CREATE: EFAULT (88), EINVAL (bad flags, max_live 0 or above MAX_LIVE, limit
	 *   above MAX_LIMIT, start above limit: 91-98; Domain::new, domain.rs 298-303,
	 *   410-413), EBUSY (a second CREATE: 99-101, 117-121), ENOMEM (the domain's
	 *   storage, __GFP_NOWARN: 104-116, domain.rs 446).
	 * - ALLOC: EFAULT (129, 134-138: the range is given back), EINVAL (before CREATE;
	 *   zero size, a size above the domain, a limit below its start: domain.rs
	 *   563-569), ENOSPC (no fit), ENOMEM (max_live reached: storage or live set,
	 *   domain.rs 564-565, 623-630).
	 * - FREE: EFAULT (144), EINVAL (before CREATE; a zero size, not exactly one live
	 *   allocation: domain.rs 640-660).
	 * - DRAIN: EINVAL (before CREATE, 149-152).
	 * - STATS: EINVAL (before CREATE, checked before the block: 154-155), EFAULT (182).
	 * - unknown numbers: ENOTTY (206).
	 *
	 * The canary's calls, on a domain it alone uses, sized so that nothing it does can
	 * run out of space or storage: only success, and EINVAL for its deliberate bad
	 * frees.
	 *
	 * drivers/gpu/drm/aikrs_gang/device.rs and aikrs_gang_uapi.h:
	 * - RUN (the "Errors:" paragraph of device.rs): EFAULT, EINVAL (steps 0 or above
	 *   MAX_STEPS, decodes above MAX_DECODES), EINTR (a signal ends a wait for a job, a
	 *   task being killed stops; never a restart), ETIMEDOUT (a job not done within
	 *   10 s), ENOMEM (the workload's allocations). Not EBUSY (more than MAX_RUNS at
	 *   once: this thread is the guest's only caller), nor ENOSPC or ENODEV, which
	 *   gang.rs submit() can return but which the workload's bounded counts never
	 *   reach: findings.
	 * - unknown numbers: ENOTTY (93).
	 */
	fz_def(C_CREATE, P_IOVA, "AIKRS_IOVA_IOC_CREATE", EFAULT, EINVAL, EBUSY, ENOMEM, 0);
	fz_def(C_ALLOC, P_IOVA, "AIKRS_IOVA_IOC_ALLOC", EFAULT, EINVAL, ENOSPC, ENOMEM, 0);
	fz_def(C_FREE, P_IOVA, "AIKRS_IOVA_IOC_FREE", EFAULT, EINVAL, 0);
	fz_def(C_DRAIN, P_IOVA, "AIKRS_IOVA_IOC_DRAIN", EINVAL, 0);
	fz_def(C_STATS, P_IOVA, "AIKRS_IOVA_IOC_STATS", EINVAL, EFAULT, 0);
	fz_def(C_UNKNOWN, P_IOVA, "unknown ioctl (iova)", ENOTTY, 0);
	fz_def(C_CAN_ALLOC, P_CANARY, "canary ALLOC", 0);
	fz_def(C_CAN_FREE, P_CANARY, "canary FREE", 0);
	fz_def(C_CAN_BADFREE, P_CANARY, "canary bad FREE", EINVAL, 0);
	fz_def(C_CAN_DRAIN, P_CANARY, "canary DRAIN", 0);
	fz_def(C_CAN_STATS, P_CANARY, "canary STATS", 0);
	fz_def(C_RUN, P_GANG, "AIKRS_GANG_IOC_RUN", EFAULT, EINVAL, EINTR, ETIMEDOUT, ENOMEM, 0);
	fz_def(C_GUNKNOWN, P_GANG, "unknown ioctl (gang)", ENOTTY, 0);
}

/* ---- helpers ---- */

/* `size` rounded up to a power of two (the alignment of its ranges); 0 if none. */
static uint64_t align_of(uint64_t size)
{
	if (!size || size > 1ULL << 63)
		return 0;
	if (!(size & (size - 1)))
		return size;
	return 1ULL << (64 - __builtin_clzll(size));
}

/* A shared descriptor and its instance (*si: its slot), or now and then a bad one. */
static int pick_fd(uint64_t *s, int *si, uint64_t *v)
{
	*si = -1;
	*v = 0;
	if (fz_chance(s, 1))
		return fz_chance(s, 50) ? -1 : 0x7fffff;
	*si = (int)fz_below(s, NFD);
	*v = atomic_load(&fdslot[*si]);
	return (int)(uint32_t)*v;
}

static struct inst *inst_of(uint64_t v)
{
	uint32_t id = (uint32_t)(v >> 32);

	return id && id < INST_MAX ? &ts->inst[id] : NULL;
}

static struct dom dom_of(struct inst *in)
{
	struct dom d = { 0 };

	if (in && atomic_load_explicit(&in->state, memory_order_acquire) == 1) {
		d.known = 1;
		d.start = atomic_load(&in->start);
		d.limit = atomic_load(&in->limit);
	}
	return d;
}

/*
 * Where the argument block goes: 0 the caller's, 1 a bad address, 2 read-only (a
 * command that reads it runs, its result cannot be written back), 3 straddling an
 * unmapped page. Returns the pointer to pass.
 */
static void *place_arg(struct ctx *c, void *blk, size_t len, int *kind)
{
	return fz_place_arg(&c->rng, rw_view, ro_view, c->idx * 2 * PAGE, blk, len, kind);
}

/* The slot whose file is instance `id` now, or -1. */
static int slot_of(uint32_t id, uint64_t *v)
{
	for (int i = 0; i < NFD; i++) {
		*v = atomic_load(&fdslot[i]);
		if ((uint32_t)(*v >> 32) == id)
			return i;
	}
	return -1;
}

/*
 * The invariants of a STATS snapshot that hold whatever runs concurrently: the tree's
 * part is taken under the tree lock (domain.rs stats()), the rest is not compared
 * with it. Not checked: `parked <= live` (LiveSet::count() counts live keys only,
 * parked ones are not among them) and anything involving `cached` or the per-CPU
 * counters of CPUs that may go offline. Returns the number of violations.
 */
static int check_stats(int part, const struct aikrs_iova_stats *st, const struct dom *d,
		       const char *what)
{
	int bad = 0;

	SBAD(st->lost, "lost %llu", U(st->lost));
	SBAD(st->reserved_pages, "reserved_pages %llu (the device reserves nothing)",
	     U(st->reserved_pages));
	SBAD(!st->span_pages || st->span_pages > MAXL + 1, "span_pages %llu", U(st->span_pages));
	SBAD(d->known && st->span_pages != d->limit - d->start + 1,
	     "span_pages %llu, domain [%#llx, %#llx]", U(st->span_pages), U(d->start),
	     U(d->limit));
	SBAD(st->free_pages > st->span_pages || st->allocated_pages > st->span_pages,
	     "free_pages %llu, allocated_pages %llu, span %llu", U(st->free_pages),
	     U(st->allocated_pages), U(st->span_pages));
	SBAD(st->free_pages <= st->span_pages && st->allocated_pages <= st->span_pages &&
	     st->free_pages + st->allocated_pages + st->reserved_pages != st->span_pages,
	     "free %llu + allocated %llu + reserved %llu pages != span %llu",
	     U(st->free_pages), U(st->allocated_pages), U(st->reserved_pages),
	     U(st->span_pages));
	SBAD(st->largest_free > st->free_pages || st->free_blocks > st->free_pages,
	     "largest_free %llu, free_blocks %llu, free_pages %llu", U(st->largest_free),
	     U(st->free_blocks), U(st->free_pages));
	SBAD(!st->free_pages != !st->free_blocks || !st->free_pages != !st->largest_free,
	     "free_pages %llu, free_blocks %llu, largest_free %llu", U(st->free_pages),
	     U(st->free_blocks), U(st->largest_free));
	SBAD(st->free_blocks && st->largest_free <= st->free_pages &&
	     (unsigned __int128)st->largest_free * st->free_blocks < st->free_pages,
	     "largest of %llu free runs %llu, below their mean (%llu free pages)",
	     U(st->free_blocks), U(st->largest_free), U(st->free_pages));
	SBAD(st->allocations > st->allocated_pages, "allocations %llu > allocated_pages %llu",
	     U(st->allocations), U(st->allocated_pages));
	SBAD(st->tree_allocs < st->tree_frees ||
	     st->tree_allocs - st->tree_frees != st->allocations,
	     "tree_allocs %llu - tree_frees %llu != allocations %llu", U(st->tree_allocs),
	     U(st->tree_frees), U(st->allocations));
	SBAD(st->cpu_hits + st->cpu_depot_hits > st->cpu_allocs,
	     "cpu_hits %llu + cpu_depot_hits %llu > cpu_allocs %llu", U(st->cpu_hits),
	     U(st->cpu_depot_hits), U(st->cpu_allocs));
	return bad;
}

/*
 * Checks a range ALLOC returned for `size` pages under `limit`: aligned to size
 * rounded up to a power of two, at or below the limit and in the domain. Returns 1 if
 * it could have been returned.
 */
static int range_ok(int part, uint64_t pfn, uint64_t size, uint64_t limit, const struct dom *d,
		    const char *what)
{
	uint64_t a = align_of(size), last;

	if (!size || !a) {
		fz_finding(part, "ALLOC of %#llx pages succeeded: %s", U(size), what);
		return 0;
	}
	if (pfn % a) {
		fz_finding(part, "ALLOC gave %#llx, not aligned to %#llx: %s", U(pfn), U(a), what);
		return 0;
	}
	if (pfn > UINT64_MAX - (size - 1)) {
		fz_finding(part, "ALLOC gave %#llx, whose last page overflows: %s", U(pfn), what);
		return 0;
	}
	last = pfn + size - 1;
	if (last > limit || last > MAXL) {
		fz_finding(part, "ALLOC gave [%#llx, %#llx], beyond the limit %#llx: %s", U(pfn),
			   U(last), U(limit), what);
		return 0;
	}
	if (d->known && (pfn < d->start || last > d->limit || limit < d->start)) {
		fz_finding(part, "ALLOC gave [%#llx, %#llx], domain [%#llx, %#llx]: %s", U(pfn),
			   U(last), U(d->start), U(d->limit), what);
		return 0;
	}
	return 1;
}

/* ---- /dev/aikrs_iova commands ---- */

static void gen_create(uint64_t *s, struct aikrs_iova_create *cr)
{
	static const uint64_t starts[] = { 0, 1, 0x100, 0x12345, 1ULL << 20, 1ULL << 32,
					   MAXL - 0xffff, MAXL };
	uint64_t span, room;
	unsigned int r;

	cr->start = fz_chance(s, 70) ? starts[fz_below(s, FZ_ARRAY_SIZE(starts))] :
				       fz_below(s, MAXL + 1);
	switch (fz_below(s, 6)) {
	case 0: span = 1 + fz_below(s, 4); break;
	case 1: span = 1 + fz_below(s, 1 << 10); break;
	case 2: span = 1ULL << (10 + fz_below(s, 16)); break;
	case 3: span = 1 + fz_below(s, 1 << 24); break;
	case 4: span = 1ULL << (20 + fz_below(s, 17)); break;
	default: span = MAXL + 1; break;
	}
	room = MAXL + 1 - cr->start;
	if (span > room)
		span = room;
	cr->limit = cr->start + span - 1;
	r = (unsigned int)fz_below(s, 100);
	cr->max_live = r < 60 ? 1 + (uint32_t)fz_below(s, 64) :
		       r < 85 ? 1 + (uint32_t)fz_below(s, 1024) :
		       r < 98 ? 1 + (uint32_t)fz_below(s, 8192) : AIKRS_IOVA_MAX_LIVE;
	cr->flags = fz_chance(s, 60) ? AIKRS_IOVA_CREATE_CACHE : 0;
	if (!fz_chance(s, 30))
		return;
	switch (fz_below(s, 7)) {
	case 0: cr->flags |= 1U << (1 + fz_below(s, 31)); break;
	case 1: cr->max_live = 0; break;
	case 2: cr->max_live = fz_chance(s, 50) ? AIKRS_IOVA_MAX_LIVE + 1 : 0xffffffffU; break;
	case 3: cr->limit = MAXL + 1 + fz_below(s, 1 << 20); break;
	case 4: cr->limit = fz_chance(s, 50) ? UINT64_MAX : 1ULL << 63; break;
	case 5: cr->start = cr->limit + 1 + fz_below(s, 16); break;
	default: cr->start = fz_next(s); cr->limit = fz_next(s); break;
	}
}

/*
 * The checks that every IOVA command with an argument block shares, after its result
 * was counted: on a bad or closed descriptor (si < 0) it must fail with EBADF, and an
 * unreadable block (kind 1 or 3) must make it fail with EFAULT. Returns 1 if the
 * command's own checks go on: a good descriptor, no EBADF, and no unreadable block
 * that failed otherwise.
 */
static int iova_block_checks(const char *name, int si, int e, int kind, const char *what)
{
	if (si < 0) {
		if (e != EBADF)
			fz_finding(P_IOVA, "%s on a bad descriptor: %s", name, what);
		return 0;
	}
	if (e == EBADF)
		return 0;
	if ((kind == 1 || kind == 3) && e != EFAULT) {
		fz_finding(P_IOVA, "%s with an unreadable block did not fail with EFAULT: %s", name,
			   what);
		return 0;
	}
	return 1;
}

static void do_create(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	struct aikrs_iova_create cr = { 0 };
	struct inst *in;
	int si, fd = pick_fd(s, &si, &v), kind, ret, e, raced, valid, st0;
	void *arg;
	char what[200];

	in = inst_of(v);
	gen_create(s, &cr);
	valid = !(cr.flags & ~AIKRS_IOVA_CREATE_CACHE) && cr.max_live &&
		cr.max_live <= AIKRS_IOVA_MAX_LIVE && cr.limit <= MAXL && cr.start <= cr.limit;
	st0 = in ? atomic_load_explicit(&in->state, memory_order_acquire) : 0;
	arg = place_arg(c, &cr, sizeof(cr), &kind);
	ret = ioctl(fd, AIKRS_IOVA_IOC_CREATE, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what),
		 "fd %d start %#llx limit %#llx max_live %u flags %#x arg %p (kind %d) = %d", fd,
		 U(cr.start), U(cr.limit), cr.max_live, cr.flags, arg, kind, ret);
	if (!fz_result(C_CREATE, e, raced, what) || raced)
		return;
	if (!iova_block_checks("CREATE", si, e, kind, what))
		return;
	if (kind == 1 || kind == 3)
		return;
	if (!ret && !valid)
		fz_finding(P_IOVA, "CREATE accepted bad arguments: %s", what);
	if (e == EBUSY && !valid)
		fz_finding(P_IOVA, "CREATE answered EBUSY to bad arguments (checked first): %s",
			   what);
	if (e == EINVAL && valid)
		fz_finding(P_IOVA, "a valid CREATE failed with EINVAL: %s", what);
	if (valid && st0 == 1 && e != EBUSY)
		fz_finding(P_IOVA, "a CREATE on a file with a domain did not fail with EBUSY: %s",
			   what);
	if (!ret && in) {
		int zero = 0;

		atomic_fetch_add(&ts->creates, 1);
		if (!atomic_compare_exchange_strong(&in->state, &zero, 2)) {
			fz_finding(P_IOVA, "a second CREATE on one file succeeded: %s", what);
			return;
		}
		atomic_store(&in->start, cr.start);
		atomic_store(&in->limit, cr.limit);
		atomic_store_explicit(&in->state, 1, memory_order_release);
	}
}

static uint64_t gen_size(uint64_t *s, const struct dom *d)
{
	uint64_t span = d->known ? d->limit - d->start + 1 : MAXL + 1;

	switch (fz_below(s, 20)) {
	case 0: return 0;
	case 1: case 2: case 3: case 4: case 5: case 6: case 7: return 1 + fz_below(s, 16);
	case 8: case 9: case 10: case 11: return 1ULL << fz_below(s, 21);
	case 12: case 13: case 14: return 1 + fz_below(s, 1 << 20);
	case 15: return fz_huge_count(s, user_end);
	case 16: return span;
	case 17: return span + 1 + fz_below(s, 4);
	case 18: return span / 2 + 1;
	default: return (1ULL << fz_below(s, 21)) + 1 + fz_below(s, 3);
	}
}

static uint64_t gen_limit(uint64_t *s, const struct dom *d, uint64_t size)
{
	uint64_t start = d->known ? d->start : 0, limit = d->known ? d->limit : MAXL;
	uint64_t span = limit - start + 1;

	switch (fz_below(s, 10)) {
	case 0: case 1: case 2: case 3: return UINT64_MAX;
	case 4: return limit;
	case 5: return start + fz_below(s, span);
	case 6: return size && start <= UINT64_MAX - (size - 1) ? start + size - 1 : start;
	case 7: return start ? start - 1 - fz_below(s, start < 16 ? start : 16) : 0;
	case 8: return fz_next(s);
	default: return limit - fz_below(s, span < (1 << 20) ? span : 1 << 20);
	}
}

static void hold(struct ctx *c, uint32_t id, uint64_t pfn, uint64_t size)
{
	int i = c->nheld < NHELD ? c->nheld++ : (int)fz_below(&c->rng, NHELD);

	/* Full: one is forgotten (leaked to its file, which goes with it). */
	c->held[i] = (struct range){ id, pfn, size };
}

static void do_alloc(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	struct aikrs_iova_range r, in_r;
	struct inst *in;
	struct dom d, d2;
	int si, fd = pick_fd(s, &si, &v), kind, ret, e, raced, valid;
	void *arg;
	char what[200];

	in = inst_of(v);
	d = dom_of(in); /* known before the call: the domain existed during it */
	r.size = gen_size(s, &d);
	r.limit = gen_limit(s, &d, r.size);
	r.pfn = fz_chance(s, 20) ? fz_next(s) : 0; /* an output */
	valid = d.known && r.size && r.size <= d.limit - d.start + 1 && r.limit >= d.start;
	in_r = r;
	arg = place_arg(c, &r, sizeof(r), &kind);
	ret = ioctl(fd, AIKRS_IOVA_IOC_ALLOC, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d size %#llx limit %#llx arg %p (kind %d) = %d, pfn %#llx",
		 fd, U(in_r.size), U(in_r.limit), arg, kind, ret, U(r.pfn));
	if (!fz_result(C_ALLOC, e, raced, what) || raced)
		return;
	if (!iova_block_checks("ALLOC", si, e, kind, what))
		return;
	if (!ret && kind == 2) {
		fz_finding(P_IOVA, "ALLOC with a read-only block succeeded: %s", what);
		return;
	}
	if (kind == 1 || kind == 3)
		return;
	if (d.known && e == EINVAL && valid)
		fz_finding(P_IOVA, "a valid ALLOC on a domain failed with EINVAL: %s", what);
	if (d.known && !valid && e != EINVAL)
		fz_finding(P_IOVA, "an ALLOC with a bad size or limit did not fail with EINVAL: %s",
			   what);
	if (ret)
		return;
	atomic_fetch_add(&ts->allocs, 1);
	if (r.size != in_r.size || r.limit != in_r.limit)
		fz_finding(P_IOVA, "ALLOC changed its inputs to size %#llx limit %#llx: %s",
			   U(r.size), U(r.limit), what);
	d2 = dom_of(in);
	if (range_ok(P_IOVA, r.pfn, in_r.size, in_r.limit, &d2, what))
		hold(c, (uint32_t)(v >> 32), r.pfn, in_r.size);
}

static void do_free(struct ctx *c)
{
	uint64_t *s = &c->rng, v = 0;
	struct aikrs_iova_range r = { 0 }, in_r;
	struct inst *in;
	struct dom d;
	int si = -1, fd = -1, kind, ret, e, raced, mode = (int)fz_below(s, 100);
	void *arg;
	char what[200];

	if (mode < 50 && c->nheld) {
		/* One it holds (if no other thread or child freed it), or a wrong size. */
		int i = (int)fz_below(s, c->nheld);
		struct range h = c->held[i];

		c->held[i] = c->held[--c->nheld];
		si = slot_of(h.id, &v);
		r.pfn = h.pfn;
		r.size = h.size;
		if (fz_chance(s, 15)) {
			static const int ops[] = { 1, -1, 2, 3 };

			switch (ops[fz_below(s, 4)]) {
			case 1: r.size = h.size + 1; break;
			case -1: r.size = h.size - 1; break;
			case 2: r.size = h.size * 2; break;
			default: r.size = h.size / 2; break;
			}
			if (c->nheld < NHELD)
				c->held[c->nheld++] = h; /* still held */
		} else {
			c->freed[c->nfreed++ % NFREED] = h;
		}
		if (si < 0)
			return; /* its file is gone */
		fd = (int)(uint32_t)v;
	} else if (mode < 65 && c->nfreed) {
		/* A double free (unless it was allocated again meanwhile). */
		struct range h = c->freed[fz_below(s, c->nfreed < NFREED ? c->nfreed : NFREED)];

		si = slot_of(h.id, &v);
		if (si < 0)
			return;
		fd = (int)(uint32_t)v;
		r.pfn = h.pfn;
		r.size = h.size;
	} else {
		fd = pick_fd(s, &si, &v);
		d = dom_of(inst_of(v));
		if (mode < 85 && d.known) {
			/* No allocation can be there: misaligned, or outside the domain. */
			uint64_t a = 2ULL << fz_below(s, 12);

			r.size = fz_chance(s, 50) ? a : a - 1;
			switch (fz_below(s, 3)) {
			case 0:
				r.pfn = (d.start + fz_below(s, d.limit - d.start + 1)) | 1;
				break;
			case 1:
				r.pfn = d.limit + 1 + fz_below(s, 1 << 20);
				break;
			default:
				r.pfn = d.start ? d.start - 1 - fz_below(s, d.start) : UINT64_MAX - 7;
				break;
			}
		} else if (mode < 95) {
			r.pfn = fz_chance(s, 50) ? fz_next(s) : fz_below(s, 1 << 24);
			r.size = fz_chance(s, 50) ? gen_size(s, &d) : fz_next(s);
		} else {
			r.pfn = fz_below(s, 1 << 24);
			r.size = 0;
		}
	}
	r.limit = fz_next(s); /* ignored */
	in_r = r;
	in = inst_of(v);
	arg = place_arg(c, &r, sizeof(r), &kind);
	ret = ioctl(fd, AIKRS_IOVA_IOC_FREE, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d pfn %#llx size %#llx arg %p (kind %d) = %d", fd,
		 U(in_r.pfn), U(in_r.size), arg, kind, ret);
	if (!fz_result(C_FREE, e, raced, what) || raced)
		return;
	if (!iova_block_checks("FREE", si, e, kind, what))
		return;
	if (ret)
		return;
	atomic_fetch_add(&ts->frees, 1);
	/* Freed: the domain exists, and its bounds are known unless CREATE is recording. */
	d = dom_of(in);
	if (!in_r.size || !align_of(in_r.size) || in_r.pfn % align_of(in_r.size) ||
	    in_r.pfn > UINT64_MAX - (in_r.size - 1) || in_r.pfn + in_r.size - 1 > MAXL ||
	    (d.known && (in_r.pfn < d.start || in_r.pfn + in_r.size - 1 > d.limit)))
		fz_finding(P_IOVA, "FREE accepted a range no ALLOC can return (domain %s[%#llx, %#llx]): %s",
			   d.known ? "" : "unknown ", U(d.start), U(d.limit), what);
}

static void do_drain(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	int si, fd = pick_fd(s, &si, &v), ret, e, raced;
	struct dom d = dom_of(inst_of(v));
	char what[120];

	ret = ioctl(fd, AIKRS_IOVA_IOC_DRAIN, (unsigned long)fz_next(s));
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d = %d", fd, ret);
	if (!fz_result(C_DRAIN, e, raced, what) || raced)
		return;
	if (si < 0 && e != EBADF)
		fz_finding(P_IOVA, "DRAIN on a bad descriptor: %s", what);
	else if (si >= 0 && d.known && e == EINVAL)
		fz_finding(P_IOVA, "DRAIN of a domain failed with EINVAL: %s", what);
}

static void do_stats(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	struct aikrs_iova_stats st;
	int si, fd = pick_fd(s, &si, &v), kind, ret, e, raced;
	struct inst *in = inst_of(v);
	struct dom d = dom_of(in), d2;
	void *arg;
	char what[120];

	memset(&st, 0xa5, sizeof(st));
	arg = place_arg(c, &st, sizeof(st), &kind);
	ret = ioctl(fd, AIKRS_IOVA_IOC_STATS, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d arg %p (kind %d) = %d", fd, arg, kind, ret);
	if (!fz_result(C_STATS, e, raced, what) || raced)
		return;
	if (si < 0) {
		if (e != EBADF)
			fz_finding(P_IOVA, "STATS on a bad descriptor: %s", what);
		return;
	}
	if (e == EBADF)
		return;
	if (d.known && e == EINVAL)
		fz_finding(P_IOVA, "STATS of a domain failed with EINVAL: %s", what);
	if (d.known && kind && e != EFAULT)
		fz_finding(P_IOVA, "STATS into an unwritable block did not fail with EFAULT: %s",
			   what);
	else if (!ret && kind)
		fz_finding(P_IOVA, "STATS wrote to an unwritable block: %s", what);
	if (ret || kind)
		return;
	atomic_fetch_add(&ts->stats_checked, 1);
	d2 = dom_of(in);
	check_stats(P_IOVA, &st, &d2, what);
}

static void do_unknown(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	unsigned long req = fz_unknown_ioctl(s, AIKRS_IOVA_IOC_MAGIC, 4,
					     sizeof(struct aikrs_iova_range), iova_ioctls,
					     FZ_ARRAY_SIZE(iova_ioctls));
	char blk[256] = { 0 };
	int si, fd = pick_fd(s, &si, &v), ret, e, raced;
	char what[120];

	ret = ioctl(fd, req, fz_chance(s, 80) ? (void *)blk : (void *)(uintptr_t)fz_bad_addr(s));
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d req %#lx = %d", fd, req, ret);
	if (fz_result(C_UNKNOWN, e, raced, what) && !ret && !raced)
		fz_finding(P_IOVA, "unknown ioctl accepted: %s", what);
}

static void fuzz_one(struct ctx *c)
{
	unsigned int r = (unsigned int)fz_below(&c->rng, 100);

	if (r < 10)
		do_create(c);
	else if (r < 45)
		do_alloc(c);
	else if (r < 75)
		do_free(c);
	else if (r < 80)
		do_drain(c);
	else if (r < 92)
		do_stats(c);
	else
		do_unknown(c);
}

static void *fuzz_thread(void *arg)
{
	struct ctx *c = arg;

	while (!atomic_load(&stop))
		fuzz_one(c);
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- children and descriptors ---- */

/* A child: commands on the inherited files (some of which it closes), then exits. */
static void child_main(uint64_t rs, pid_t parent)
{
	static struct ctx c;
	int n;

	c = (struct ctx){ .idx = X_CHILD, .rng = rs };
	fz_child_setup(parent, CHILD_SECS);
	n = 4 + (int)fz_below(&c.rng, 28);
	for (int i = 0; i < n; i++) {
		if (fz_chance(&c.rng, 8)) {
			/* Its copy only: the parent's file stays open. */
			int fd = (int)(uint32_t)atomic_load(&fdslot[fz_below(&c.rng, NFD)]);

			if (fd >= 0)
				close(fd);
			continue;
		}
		fuzz_one(&c);
	}
	_exit(0);
}

/* Closes descriptor slot `si` and, unless `keep_closed`, opens a new file there. */
static void reopen(int si, int keep_closed)
{
	uint64_t old = atomic_load(&fdslot[si]);
	uint32_t id = next_inst < INST_MAX ? next_inst++ : 0;
	int fd = keep_closed ? -1 : open(IOVA_DEV, O_RDWR);
	int ofd = (int)(uint32_t)old;

	if (fd < 0 && !keep_closed)
		fz_finding(P_IOVA, "open %s: %s", IOVA_DEV, strerror(errno));
	atomic_store(&fdslot[si], (uint64_t)id << 32 | (uint32_t)fd);
	if (ofd >= 0)
		close(ofd);
}

static void *proc_thread(void *arg)
{
	uint64_t s = fz_stream(seed, T_PROC);
	pid_t self = getpid();

	(void)arg;
	while (!atomic_load(&stop)) {
		unsigned int r = (unsigned int)fz_below(&s, 100);

		if (r < 15) {
			uint64_t rs = fz_next(&s);
			pid_t pid = fork();

			if (pid == 0)
				child_main(rs, self);
			if (pid < 0) {
				fz_finding(P_IOVA, "fork: %s", strerror(errno));
				continue;
			}
			atomic_fetch_add(&ts->children, 1);
			fz_reap(pid, (CHILD_SECS + 5) * 1000, P_IOVA, "iova child");
		} else if (r < 45) {
			if (next_inst < INST_MAX)
				reopen((int)fz_below(&s, NFD), 0);
		} else if (r < 48) {
			if (next_inst < INST_MAX)
				reopen((int)fz_below(&s, NFD), 1);
		}
		usleep((useconds_t)fz_below(&s, 20000));
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- the canary ---- */

#define CAN_START 0x10000ULL
#define CAN_SPAN (1ULL << 30)
#define CAN_LIMIT (CAN_START + CAN_SPAN - 1)
#define CAN_LIVE 8192
#define NCAN 40

static const uint64_t can_sizes[NCAN] = {
	1,    2,    3,    4,    5,    7,     8,     9,     15,    16,
	17,   31,   32,   33,   63,   64,    65,    100,   127,   128,
	129,  255,  256,  511,  512,  1000,  1024,  2047,  2048,  4095,
	4096, 8192, 10000, 16384, 32768, 65536, 1, 8, 64, 4096,
};

static struct {
	uint64_t pfn, size, limit;
	int held;
} can[NCAN];
static int canary_fd = -1;
static struct {
	unsigned long passes, allocs, frees, bad_frees, drains, stats, cycles, moves;
	uint64_t bad_expected; /* deliberate bad frees refused: st.bad_frees must match */
	int final_ok;
} cs;

/* Whether the domain caches `size` (domain.rs DomainCore::new, cache_order()). */
static int can_cacheable(uint64_t size)
{
	int k;
	uint64_t cap;

	if (!size || (size & (size - 1)))
		return 0;
	k = __builtin_ctzll(size);
	if (k > 18)
		return 0;
	cap = CAN_SPAN >> (k + 8);
	return cap > 0;
}

static int can_alloc(int j)
{
	struct aikrs_iova_range r = { .pfn = 0xdeadbeef, .size = can[j].size, .limit = can[j].limit };
	struct dom d = { 1, CAN_START, CAN_LIMIT };
	int ret, e;
	char what[160];

	ret = ioctl(canary_fd, AIKRS_IOVA_IOC_ALLOC, &r);
	e = ret ? errno : 0;
	snprintf(what, sizeof(what), "canary range %d: size %#llx limit %#llx = %d, pfn %#llx", j,
		 U(can[j].size), U(can[j].limit), ret, U(r.pfn));
	if (!fz_result(C_CAN_ALLOC, e, 0, what) || ret)
		return 0;
	cs.allocs++;
	if (r.size != can[j].size || r.limit != can[j].limit)
		fz_finding(P_CANARY, "ALLOC changed its inputs: %s", what);
	if (!range_ok(P_CANARY, r.pfn, can[j].size, can[j].limit, &d, what))
		return 0;
	for (int k = 0; k < NCAN; k++) {
		if (k == j || !can[k].held)
			continue;
		if (r.pfn < can[k].pfn + can[k].size && can[k].pfn < r.pfn + can[j].size) {
			fz_finding(P_CANARY, "canary range %d overlaps range %d [%#llx, +%#llx): %s", j,
				   k, U(can[k].pfn), U(can[k].size), what);
			return 0;
		}
	}
	can[j].pfn = r.pfn;
	can[j].held = 1;
	return 1;
}

static void can_free(int j)
{
	struct aikrs_iova_range r = { .pfn = can[j].pfn, .size = can[j].size, .limit = 7 };
	int ret, e;
	char what[160];

	ret = ioctl(canary_fd, AIKRS_IOVA_IOC_FREE, &r);
	e = ret ? errno : 0;
	snprintf(what, sizeof(what), "canary range %d [%#llx, +%#llx) = %d", j, U(r.pfn),
		 U(r.size), ret);
	fz_result(C_CAN_FREE, e, 0, what);
	cs.frees++;
	can[j].held = 0;
}

/* A free that must be refused: a double free or a wrong size. */
static void can_bad_free(uint64_t pfn, uint64_t size, const char *why)
{
	struct aikrs_iova_range r = { .pfn = pfn, .size = size };
	int ret, e;
	char what[160];

	ret = ioctl(canary_fd, AIKRS_IOVA_IOC_FREE, &r);
	e = ret ? errno : 0;
	snprintf(what, sizeof(what), "%s [%#llx, +%#llx) = %d", why, U(pfn), U(size), ret);
	fz_result(C_CAN_BADFREE, e, 0, what);
	cs.bad_frees++;
	if (!ret)
		fz_finding(P_CANARY, "canary: a bad FREE succeeded: %s", what);
	else if (e == EINVAL)
		cs.bad_expected++;
}

static void can_drain(void)
{
	int ret = ioctl(canary_fd, AIKRS_IOVA_IOC_DRAIN, 0);

	fz_result(C_CAN_DRAIN, ret ? errno : 0, 0, "canary DRAIN");
	cs.drains++;
}

/*
 * STATS of the canary's domain, which it alone uses: exact. `drained`: right after a
 * DRAIN, nothing is cached. Returns 1 if every check held.
 */
static int can_stats(int drained, const char *when)
{
	struct aikrs_iova_stats st;
	struct dom d = { 1, CAN_START, CAN_LIMIT };
	uint64_t held = 0, pages = 0, live = 0;
	int ret, e, bad;
	char what[120];

	for (int j = 0; j < NCAN; j++) {
		if (!can[j].held)
			continue;
		held++;
		pages += can[j].size;
		live += can_cacheable(can[j].size);
	}
	memset(&st, 0xa5, sizeof(st));
	ret = ioctl(canary_fd, AIKRS_IOVA_IOC_STATS, &st);
	e = ret ? errno : 0;
	snprintf(what, sizeof(what), "canary STATS %s, %llu ranges (%llu pages) held, pass %lu",
		 when, U(held), U(pages), cs.passes);
	if (!fz_result(C_CAN_STATS, e, 0, what) || ret)
		return 0;
	cs.stats++;
	bad = check_stats(P_CANARY, &st, &d, what);
	{
		int part = P_CANARY;

		SBAD(st.allocations != held + st.cached,
		     "allocations %llu != %llu held + %llu cached", U(st.allocations), U(held),
		     U(st.cached));
		SBAD(st.parked != st.cached, "parked %llu != cached %llu", U(st.parked),
		     U(st.cached));
		SBAD(st.live != live, "live %llu, %llu held of a cached size", U(st.live), U(live));
		SBAD(st.allocated_pages < pages, "allocated_pages %llu < %llu held",
		     U(st.allocated_pages), U(pages));
		SBAD(st.failed, "failed %llu", U(st.failed));
		SBAD(st.bad_frees != cs.bad_expected, "bad_frees %llu, %llu refused",
		     U(st.bad_frees), U(cs.bad_expected));
		if (drained) {
			SBAD(st.cached || st.parked, "cached %llu, parked %llu after DRAIN",
			     U(st.cached), U(st.parked));
			SBAD(st.allocated_pages != pages || st.free_pages != CAN_SPAN - pages,
			     "allocated_pages %llu, free_pages %llu after DRAIN",
			     U(st.allocated_pages), U(st.free_pages));
		}
		if (drained && !held)
			SBAD(st.free_blocks != 1 || st.largest_free != CAN_SPAN ||
			     st.allocations || st.live,
			     "empty: free_blocks %llu, largest_free %llu, allocations %llu, live %llu",
			     U(st.free_blocks), U(st.largest_free), U(st.allocations), U(st.live));
	}
	return !bad;
}

/* Frees every range, drains, and checks that the domain is empty: 1 if it is. */
static int can_empty(const char *when)
{
	for (int j = 0; j < NCAN; j++)
		if (can[j].held)
			can_free(j);
	can_drain();
	return can_stats(1, when);
}

static void *canary_thread(void *arg)
{
	struct aikrs_iova_create cr = { .start = CAN_START, .limit = CAN_LIMIT,
					.max_live = CAN_LIVE, .flags = AIKRS_IOVA_CREATE_CACHE };
	uint64_t s = fz_stream(seed, T_CANARY);
	cpu_set_t orig, one;
	int cpus[64], ncpu = 0, have_aff;

	(void)arg;
	have_aff = !sched_getaffinity(0, sizeof(orig), &orig);
	for (int i = 0; have_aff && i < CPU_SETSIZE && ncpu < 64; i++)
		if (CPU_ISSET(i, &orig))
			cpus[ncpu++] = i;
	for (int j = 0; j < NCAN; j++) {
		can[j].size = can_sizes[j];
		can[j].limit = j % 3 == 0 ? CAN_START + (1ULL << 28) - 1 - (uint64_t)j * 4096 :
			       j % 3 == 1 ? CAN_LIMIT : UINT64_MAX;
	}
	if (ioctl(canary_fd, AIKRS_IOVA_IOC_CREATE, &cr)) {
		fz_finding(P_CANARY, "canary CREATE: %s", strerror(errno));
		goto out;
	}
	for (int j = 0; j < NCAN; j++)
		can_alloc(j);
	while (!atomic_load(&stop)) {
		int j = (int)fz_below(&s, NCAN);

		if (can[j].held) {
			uint64_t pfn = can[j].pfn, size = can[j].size;

			can_free(j);
			/* No range it holds overlaps this one: nobody may have it again yet. */
			if (fz_chance(&s, 20))
				can_bad_free(pfn, size, "double free");
		}
		if (fz_chance(&s, 10)) {
			int k = (int)fz_below(&s, NCAN);
			uint64_t sz = can[k].size, wrong;

			switch (fz_below(&s, 3)) {
			case 0: wrong = sz + 1; break;
			case 1: wrong = sz > 1 ? sz - 1 : 2; break;
			default: wrong = sz * 2; break;
			}
			if (can[k].held)
				can_bad_free(can[k].pfn, wrong, "free of the wrong size");
		}
		can_alloc(j);
		cs.passes++;
		if (cs.passes % 64 == 0)
			can_stats(0, "while fuzzing");
		if (cs.passes % 256 == 0) {
			can_drain();
			can_stats(1, "after DRAIN");
		}
		if (cs.passes % 1024 == 0) {
			/* Empty, then the set again. */
			can_empty("emptied while fuzzing");
			cs.cycles++;
			for (int k = 0; k < NCAN; k++)
				can_alloc(k);
		}
		if (have_aff && ncpu > 1 && fz_chance(&s, 2)) {
			/* Elsewhere: its ranges go through another CPU's magazines. */
			CPU_ZERO(&one);
			CPU_SET(cpus[fz_below(&s, ncpu)], &one);
			if (!sched_setaffinity(0, sizeof(one), &one))
				cs.moves++;
		}
	}
	cs.final_ok = can_empty("at the end");
	if (have_aff)
		sched_setaffinity(0, sizeof(orig), &orig);
out:
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- /dev/aikrs_gang ---- */

static int gang_fd = -1;
static pthread_t gang_th;
/* The RUN in progress: its start (0 if none), its number, whether to interrupt it. */
static _Atomic uint64_t g_call_start;
static _Atomic unsigned long g_call_seq;
static _Atomic int g_call_target, gang_done;
static _Atomic unsigned long g_delivered, g_sent, g_sent_in_call;
static struct {
	unsigned long runs, valid, ok, eintr, etimedout, checked;
	uint64_t max_ns, max_left;
} gs;

static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add_explicit(&g_delivered, 1, memory_order_relaxed);
}

static void do_run(struct ctx *c, int first)
{
	uint64_t *s = &c->rng;
	struct aikrs_gang_run run, in_run;
	int fd = gang_fd, kind = 0, ret, e, valid, bad_fd = 0;
	unsigned long d0, d1;
	uint64_t start, dt;
	void *arg = &run;
	uint64_t junk[sizeof(run) / 8];
	char what[200];

	for (size_t i = 0; i < FZ_ARRAY_SIZE(junk); i++)
		junk[i] = fz_next(s);
	memcpy(&run, junk, sizeof(run)); /* the outputs are ignored on input */
	if (first) {
		run.steps = 2;
		run.decodes = 1;
	} else {
		unsigned int r = (unsigned int)fz_below(s, 100);

		run.steps = r < 85 ? 1 + (uint32_t)fz_below(s, 4) :
			    r < 95 ? 5 + (uint32_t)fz_below(s, 12) :
				     17 + (uint32_t)fz_below(s, AIKRS_GANG_MAX_STEPS - 16);
		r = (unsigned int)fz_below(s, 100);
		run.decodes = r < 55 ? 0 : r < 92 ? 1 + (uint32_t)fz_below(s, 4) :
			      5 + (uint32_t)fz_below(s, AIKRS_GANG_MAX_DECODES - 4);
		if (fz_chance(s, 20)) {
			static const uint32_t bad[] = { 0, AIKRS_GANG_MAX_STEPS + 1, 1000,
							0x80000000U, 0xffffffffU };

			if (fz_chance(s, 50))
				run.steps = bad[fz_below(s, FZ_ARRAY_SIZE(bad))];
			else
				run.decodes = fz_chance(s, 50) ? AIKRS_GANG_MAX_DECODES + 1 :
					      (uint32_t)fz_next(s) | 0x100;
		}
		if (fz_chance(s, 1)) {
			fd = fz_chance(s, 50) ? -1 : 0x7fffff;
			bad_fd = 1;
		}
	}
	valid = run.steps && run.steps <= AIKRS_GANG_MAX_STEPS &&
		run.decodes <= AIKRS_GANG_MAX_DECODES;
	in_run = run;
	if (!first)
		arg = place_arg(c, &run, sizeof(run), &kind);
	d0 = atomic_load(&g_delivered);
	atomic_store(&g_call_target, !first && fz_chance(s, 35));
	atomic_fetch_add(&g_call_seq, 1);
	start = fz_now_ns();
	atomic_store(&g_call_start, start);
	ret = ioctl(fd, AIKRS_GANG_IOC_RUN, arg);
	e = ret ? errno : 0;
	atomic_store(&g_call_start, 0);
	dt = fz_now_ns() - start;
	/* An EINTR'd call runs the handler on its way back, before this load. */
	d1 = atomic_load(&g_delivered);
	gs.runs++;
	gs.valid += valid;
	if (dt > gs.max_ns)
		gs.max_ns = dt;
	snprintf(what, sizeof(what),
		 "fd %d steps %u decodes %u arg %p (kind %d) = %d after %.3f s, %lu signals",
		 fd, in_run.steps, in_run.decodes, arg, kind, ret, (double)dt / 1e9, d1 - d0);
	if (!fz_result(C_RUN, e, 0, what))
		return;
	if (e == EINTR) {
		gs.eintr++;
		if (d1 == d0)
			fz_finding(P_GANG, "RUN failed with EINTR without a signal: %s", what);
	}
	if (e == ETIMEDOUT)
		gs.etimedout++;
	if (bad_fd) {
		if (e != EBADF)
			fz_finding(P_GANG, "RUN on a bad descriptor: %s", what);
		return;
	}
	if (kind == 1 || kind == 3) {
		if (e != EFAULT)
			fz_finding(P_GANG, "RUN with an unreadable block did not fail with EFAULT: %s",
				   what);
		return;
	}
	if (!valid) {
		if (e != EINVAL)
			fz_finding(P_GANG, "RUN with bad counts did not fail with EINVAL: %s", what);
		return;
	}
	if (e == EINVAL)
		fz_finding(P_GANG, "a valid RUN failed with EINVAL: %s", what);
	if (kind == 2 && !ret)
		fz_finding(P_GANG, "RUN with a read-only block succeeded: %s", what);
	if (ret || kind)
		return;
	gs.ok++;
	if (run.jobs_left[0] > gs.max_left)
		gs.max_left = run.jobs_left[0];
	if (run.jobs_left[1] > gs.max_left)
		gs.max_left = run.jobs_left[1];
	/* The postconditions of aikrs_gang_uapi.h. */
	if (run.steps != in_run.steps || run.decodes != in_run.decodes ||
	    run.jobs_expected < 8ULL * in_run.steps || run.jobs_run[0] != run.jobs_expected ||
	    run.jobs_run[1] != run.jobs_expected || run.gangs_started[0] != in_run.steps ||
	    run.gangs_started[1] != in_run.steps || (!in_run.decodes && run.preemptions) ||
	    !run.ns || run.ns > dt + 1000000000ULL)
		fz_finding(P_GANG,
			   "RUN steps %u decodes %u: steps %u decodes %u, jobs_expected %llu, jobs_run %llu/%llu, gangs_started %llu/%llu, preemptions %llu, ns %llu",
			   in_run.steps, in_run.decodes, run.steps, run.decodes,
			   U(run.jobs_expected), U(run.jobs_run[0]), U(run.jobs_run[1]),
			   U(run.gangs_started[0]), U(run.gangs_started[1]), U(run.preemptions),
			   U(run.ns));
	else
		gs.checked++;
}

static void do_gang_unknown(struct ctx *c)
{
	uint64_t *s = &c->rng;
	unsigned long req = fz_unknown_ioctl(s, AIKRS_GANG_IOC_MAGIC, 0,
					     sizeof(struct aikrs_gang_run), gang_ioctls,
					     FZ_ARRAY_SIZE(gang_ioctls));
	char blk[256] = { 0 };
	int ret, e;
	char what[120];

	ret = ioctl(gang_fd, req, fz_chance(s, 80) ? (void *)blk :
				  (void *)(uintptr_t)fz_bad_addr(s));
	e = ret ? errno : 0;
	snprintf(what, sizeof(what), "fd %d req %#lx = %d", gang_fd, req, ret);
	if (fz_result(C_GUNKNOWN, e, 0, what) && !ret)
		fz_finding(P_GANG, "unknown ioctl accepted: %s", what);
}

static void *gang_thread(void *arg)
{
	struct ctx *c = arg;
	int first = 1;

	while (!atomic_load(&stop)) {
		if (!first && fz_chance(&c->rng, 12)) {
			do_gang_unknown(c);
		} else {
			do_run(c, first);
			first = 0;
		}
		if (fz_chance(&c->rng, 3)) {
			/* A new file (this thread alone uses it). */
			int fd = open(GANG_DEV, O_RDWR);

			if (fd < 0) {
				fz_finding(P_GANG, "open %s: %s", GANG_DEV, strerror(errno));
			} else {
				close(gang_fd);
				gang_fd = fd;
			}
		}
	}
	atomic_store(&gang_done, 1);
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/*
 * Sends the gang thread SIGUSR1: at a random moment of the RUNs chosen for it, now and
 * then between RUNs, to any RUN running longer than LONG_RUN_S, and every 50 ms once
 * the fuzzing is over. A RUN still running INTR_BOUND_S after its first signal is a
 * finding.
 */
static void *signal_thread(void *arg)
{
	uint64_t s = fz_stream(seed, T_SIG), first_sig = 0, planned = 0;
	unsigned long seen = 0;
	int reported = 0;

	(void)arg;
	while (!atomic_load(&gang_done)) {
		uint64_t start = atomic_load(&g_call_start), now = fz_now_ns();
		unsigned long seq = atomic_load(&g_call_seq);
		int st = atomic_load(&stop), send = 0;

		if (start && seq != seen) {
			seen = seq;
			first_sig = 0;
			reported = 0;
			/* Early in it, or late in a long one (under TCG, seconds). */
			planned = !atomic_load(&g_call_target) ? 0 :
				  start + fz_below(&s, fz_chance(&s, 50) ? 20 :
						       fz_chance(&s, 60) ? 200 : 2000) * 1000000ULL;
		}
		if (start) {
			if (planned && now >= planned) {
				send = 1;
				planned = 0;
			}
			if (st || now - start > LONG_RUN_S * 1000000000ULL)
				send = 1;
			if (first_sig && !reported && now - first_sig > INTR_BOUND_S * 1000000000ULL) {
				reported = 1;
				fz_finding(P_GANG, "RUN #%lu still running %d s after a SIGUSR1 (%.1f s in all)",
					   seq, INTR_BOUND_S, (double)(now - start) / 1e9);
			}
		} else if (!st && fz_chance(&s, 2)) {
			send = 1;
		}
		if (send) {
			if (start && !first_sig) {
				first_sig = now;
				atomic_fetch_add(&g_sent_in_call, 1);
			}
			atomic_fetch_add(&g_sent, 1);
			pthread_kill(gang_th, SIGUSR1);
		}
		usleep(st ? 50000 : 2000 + (useconds_t)fz_below(&s, 10000));
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- set-up and report ---- */

static void *must_map(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(addr, len, prot, flags, fd, off);

	if (p == MAP_FAILED) {
		printf("# mmap of %zu bytes: %s\n", len, strerror(errno));
		printf("not ok 1 iova_fuzz # set-up failed\nnot ok 2 iova_canary # set-up failed\n"
		       "not ok 3 gang_fuzz # set-up failed\n");
		exit(1);
	}
	return p;
}

static void setup(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 }; /* no SA_RESTART */
	int cfd;

	ts = must_map(NULL, sizeof(*ts), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		      -1, 0);
	/* The command pages: a shared memfd mapped read-write and read-only. */
	cfd = memfd_create("aikrs_testdev_fuzz_cmd", 0);
	if (cfd < 0 || ftruncate(cfd, NCTX * 2 * PAGE)) {
		printf("# memfd: %s\n", strerror(errno));
		printf("not ok 1 iova_fuzz # set-up failed\nnot ok 2 iova_canary # set-up failed\n"
		       "not ok 3 gang_fuzz # set-up failed\n");
		exit(1);
	}
	rw_view = must_map(NULL, NCTX * 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	ro_view = must_map(NULL, NCTX * 2 * PAGE, PROT_READ, MAP_SHARED, cfd, 0);
	for (int i = 0; i < NCTX; i++)
		mprotect(rw_view + (2 * i + 1) * PAGE, PAGE, PROT_NONE);
	close(cfd);
	user_end = fz_user_end();
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	if (have_iova) {
		for (int i = 0; i < NFD; i++) {
			atomic_store(&fdslot[i], (uint32_t)-1);
			reopen(i, 0);
		}
		canary_fd = open(IOVA_DEV, O_RDWR);
		if (canary_fd < 0)
			fz_finding(P_CANARY, "open %s: %s", IOVA_DEV, strerror(errno));
	}
	if (have_gang) {
		gang_fd = open(GANG_DEV, O_RDWR);
		if (gang_fd < 0)
			fz_finding(P_GANG, "open %s: %s", GANG_DEV, strerror(errno));
	}
}

static const char *const part_names[NPART] = { "iova_fuzz", "iova_canary", "gang_fuzz" };

static int part_present(int p)
{
	return p == P_GANG ? have_gang : have_iova;
}

static void skip_line(int p)
{
	printf("ok %d %s # SKIP %s not present\n", p + 1, part_names[p],
	       p == P_GANG ? GANG_DEV : IOVA_DEV);
}

/* KTAP lines for every part: `why` for the present ones, SKIP for the others. */
static void all_parts(char *buf, size_t len, const char *why)
{
	size_t n = 0;

	for (int p = 0; p < NPART && n < len; p++) {
		if (part_present(p))
			n += snprintf(buf + n, len - n, "not ok %d %s # %s\n", p + 1,
				      part_names[p], why);
		else
			n += snprintf(buf + n, len - n, "ok %d %s # SKIP %s not present\n",
				      p + 1, part_names[p], p == P_GANG ? GANG_DEV : IOVA_DEV);
	}
}

int main(void)
{
	static char wd_msg[512], crash_msg[512];
	static struct ctx ctxs[NFUZZ], gctx;
	pthread_t th[NTHREAD];
	int started[NTHREAD] = { 0 }, nthreads = 0, fail = 0;
	uint64_t secs = 20, fuzz_ns, grace_s, deadline;

	setvbuf(stdout, NULL, _IOLBF, 0);
	have_iova = !access(IOVA_DEV, F_OK);
	have_gang = !access(GANG_DEV, F_OK);
	printf("KTAP version 1\n1..%d\n", NPART);
	if (!have_iova && !have_gang) {
		for (int p = 0; p < NPART; p++)
			skip_line(p);
		return 0;
	}
	fz_init_shared();
	def_commands();
	fz_cmdline_u64("aikrs.testdev_fuzz_secs", &secs);
	if (secs < 5)
		secs = 5;
	if (!fz_cmdline_u64("aikrs.fuzz_seed", &seed))
		seed = fz_now_ns() ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&secs;
	printf("# fuzz: seed=%llu secs=%llu (replay: aikrs.fuzz_seed=%llu aikrs.testdev_fuzz_secs=%llu)\n",
	       U(seed), U(secs), U(seed), U(secs));
	printf("# %s %s, %s %s\n", IOVA_DEV, have_iova ? "present" : "absent", GANG_DEV,
	       have_gang ? "present" : "absent");
	all_parts(crash_msg, sizeof(crash_msg), "crashed");
	fz_catch_faults(crash_msg);
	setup();

	t0 = fz_now_ns();
	fuzz_ns = (secs - (secs / 10 < 5 ? secs / 10 : 5)) * 1000000000ULL;
	deadline = t0 + fuzz_ns;
	grace_s = CHILD_SECS + 5 + INTR_BOUND_S + 15;
	{
		size_t n = (size_t)snprintf(wd_msg, sizeof(wd_msg),
					    "# watchdog: still running %llu s after the end of the fuzzing\n",
					    U(grace_s + 30));

		all_parts(wd_msg + n, sizeof(wd_msg) - n, "watchdog");
	}
	fz_watchdog((unsigned int)(secs + grace_s + 30), wd_msg);

	if (have_iova) {
		for (int i = 0; i < NFUZZ; i++) {
			ctxs[i] = (struct ctx){ .idx = i, .rng = fz_stream(seed, i) };
			started[i] = !pthread_create(&th[i], NULL, fuzz_thread, &ctxs[i]);
		}
		started[T_PROC] = !pthread_create(&th[T_PROC], NULL, proc_thread, NULL);
		if (canary_fd >= 0)
			started[T_CANARY] = !pthread_create(&th[T_CANARY], NULL, canary_thread, NULL);
	}
	if (have_gang && gang_fd >= 0) {
		gctx = (struct ctx){ .idx = X_GANG, .rng = fz_stream(seed, T_GANG) };
		started[T_GANG] = !pthread_create(&gang_th, NULL, gang_thread, &gctx);
		th[T_GANG] = gang_th;
		if (started[T_GANG])
			started[T_SIG] = !pthread_create(&th[T_SIG], NULL, signal_thread, NULL);
	}
	for (int i = 0; i < NTHREAD; i++)
		nthreads += started[i];

	while (fz_now_ns() < deadline)
		usleep(100000);
	atomic_store(&stop, 1);
	for (uint64_t t = 0; atomic_load(&finished) < nthreads && t < grace_s * 100; t++)
		usleep(10000);
	if (atomic_load(&finished) < nthreads) {
		int pid = atomic_load(&fz_sh->child);
		char lines[512];

		printf("# watchdog: %d of %d threads still running %llu s after the end of the "
		       "fuzzing (a command that does not end?)%s\n", nthreads - atomic_load(&finished),
		       nthreads, U(grace_s),
		       atomic_load(&g_call_start) ? "; a RUN is in progress" : "");
		fz_print_counts();
		fz_print_findings();
		all_parts(lines, sizeof(lines), "watchdog");
		printf("%s", lines);
		if (pid > 0)
			kill(pid, SIGKILL);
		fflush(stdout);
		_exit(1);
	}
	for (int i = 0; i < NTHREAD; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	for (int i = 0; have_iova && i < NFD; i++) {
		int fd = (int)(uint32_t)atomic_load(&fdslot[i]);

		if (fd >= 0)
			close(fd);
	}
	if (canary_fd >= 0)
		close(canary_fd);
	if (gang_fd >= 0)
		close(gang_fd);
	alarm(0);

	printf("# %lu commands in %.1f s\n", fz_total_calls(), (double)(fz_now_ns() - t0) / 1e9);
	fz_print_counts();
	if (have_iova) {
		printf("# iova: %u files, %lu children, %lu domains created, %lu ranges allocated, %lu freed, %lu STATS checked\n",
		       next_inst - 1, atomic_load(&ts->children), atomic_load(&ts->creates),
		       atomic_load(&ts->allocs), atomic_load(&ts->frees),
		       atomic_load(&ts->stats_checked));
		printf("# canary: %lu passes, %lu allocations, %lu frees, %lu bad frees refused, %lu drains, %lu STATS, %lu emptied, %lu CPU moves\n",
		       cs.passes, cs.allocs, cs.frees, (unsigned long)cs.bad_expected, cs.drains,
		       cs.stats, cs.cycles, cs.moves);
	}
	if (have_gang)
		printf("# gang: %lu RUNs (%lu valid), %lu done (%lu checked), %lu EINTR, %lu ETIMEDOUT; %lu signals sent (%lu into a RUN), %lu delivered; longest RUN %.2f s, most jobs left %llu\n",
		       gs.runs, gs.valid, gs.ok, gs.checked, gs.eintr, gs.etimedout,
		       atomic_load(&g_sent), atomic_load(&g_sent_in_call),
		       atomic_load(&g_delivered), (double)gs.max_ns / 1e9, U(gs.max_left));
	fz_print_findings();

	if (!have_iova) {
		skip_line(P_IOVA);
		skip_line(P_CANARY);
	} else {
		unsigned int nf = atomic_load(&fz_sh->npart[P_IOVA]);
		unsigned long calls = 0;
		int ok;

		for (int i = C_CREATE; i <= C_UNKNOWN; i++)
			calls += atomic_load(&fz_sh->c[i].calls);
		ok = !nf && calls > 0 && atomic_load(&ts->allocs) > 0;
		fail |= !ok;
		printf("%s 1 iova_fuzz: %lu commands, %lu ranges allocated, %u findings\n",
		       ok ? "ok" : "not ok", calls, atomic_load(&ts->allocs), nf);
		nf = atomic_load(&fz_sh->npart[P_CANARY]);
		ok = !nf && cs.passes > 0 && cs.final_ok;
		fail |= !ok;
		printf("%s 2 iova_canary: %lu passes, %lu STATS, %s, %u findings\n",
		       ok ? "ok" : "not ok", cs.passes, cs.stats,
		       cs.final_ok ? "empty at the end" : "not empty at the end", nf);
	}
	if (!have_gang) {
		skip_line(P_GANG);
	} else {
		unsigned int nf = atomic_load(&fz_sh->npart[P_GANG]);
		int ok = !nf && gs.ok > 0;

		fail |= !ok;
		printf("%s 3 gang_fuzz: %lu RUNs, %lu done, %lu interrupted, %u findings\n",
		       ok ? "ok" : "not ok", gs.runs, gs.ok, gs.eintr, nf);
	}
	return fail;
}
