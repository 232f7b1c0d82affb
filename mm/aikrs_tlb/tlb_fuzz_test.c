// SPDX-License-Identifier: GPL-2.0
/*
 * Guest fuzzer of /dev/aikrs_tlb (buffer objects whose CPU mappings are revoked one
 * by one or batched) and of its debugfs counters (KTAP).
 *
 * For aikrs.fuzz_secs seconds (default 60, all parts together) with seed
 * aikrs.fuzz_seed (default: from the clock; printed, so that a run can be replayed
 * as far as thread scheduling allows), from the kernel command line:
 *
 * - two threads issue CREATE, REVOKE (batched or not, remapping or not, with unknown
 *   flags, padding, empty and overflowing ranges), STATS, unknown ioctl numbers and
 *   sizes, and read()/write() of the node, on four shared files, with the command
 *   block at NULL, kernel and non-canonical addresses, read-only (the command runs,
 *   its result cannot be written back) or straddling an unmapped page;
 * - a thread maps the files' buffers into an arena of 32 places (whole buffers,
 *   read-only or writable), and maps them wrongly (private, wrong length, unaligned
 *   or another file's offset, offsets that overflow, before CREATE: all refused),
 *   unmaps, protects, moves (mremap), shrinks and advises them, and writes to the
 *   writable ones (never their stamps);
 * - a thread reads every mapped buffer in turn: each page must hold its buffer's
 *   stamp (index, generation 1 up to the revokes that remapped it), never the poison
 *   of a replaced page (a stale TLB entry) nor another buffer's stamp, and the read
 *   must not fault while the mapping is in place;
 * - another closes and reopens the shared files (a command on a closed one gets
 *   EBADF; mappings keep their file alive), forks children that map the inherited
 *   files' buffers again (mappings are not inherited), read and check them, revoke,
 *   and exit, and fuzzes the debugfs counters aikrs_tlb/ (reads into good and bad
 *   buffers, writes, which are refused; every value must be a number that never
 *   goes down);
 * - a canary file, its buffers mapped (one twice) and never revoked, is read
 *   continuously: every page must keep its stamp and zeroes, whatever the other
 *   files' revokes do.
 *
 * Every result is counted per command and errno (printed as diagnostics). An errno
 * outside the command's documented set (read from device.rs, see def_commands()), a
 * success that must have failed, a wrong stamp, a child that crashes or hangs, a
 * wrong canary word or a bad debugfs value is a finding and fails its part. A
 * watchdog fails the run if the threads do not stop in time. Any oops, WARN or KASAN
 * report in the kernel log fails the guest run (scripts/guest.sh).
 *
 * With aikrs.tlb_negative_control on the command line REVOKE accepts a flag that
 * skips the flush; it is then never passed (it would make stale reads legitimate).
 *
 * Skipped debugfs files: none. aikrs_tlb/ holds read-only u64 counters
 * (kernel::aikrs::debugfs::Counters); reading one starts no work. The only debugfs
 * files of the tree whose access starts work are KUnit's (kunit/<suite>/run re-runs
 * a suite when written), which are not ours and are left alone.
 *
 * A longer run (ten minutes, this program only):
 *   scripts/guest.sh 7.3 --append "aikrs.fuzz_secs=600 aikrs.only=tlb_fuzz" --timeout 1500
 */
#include "../../tools/testing/aikrs/fuzz.h"

#include "aikrs_tlb_uapi.h"

#define PAGE FZ_PAGE
/* REVOKE's no-flush flag, accepted only under aikrs.tlb_negative_control. */
#define NOFLUSH (1U << 31)

enum { C_CREATE, C_REVOKE, C_STATS, C_UNKNOWN, C_RW, C_MMAP, C_DFS_READ, C_DFS_WRITE, NCMD };
enum { P_FUZZ, P_CANARY, P_DFS, NPART };

#define NFUZZ 2
#define T_CHURN NFUZZ
#define T_READER (NFUZZ + 1)
#define T_PROC (NFUZZ + 2)
#define T_CANARY (NFUZZ + 3)
#define NTHREAD (NFUZZ + 4)
/* Contexts with a command page: the fuzzers and the children. */
#define X_CHILD NFUZZ
#define NCTX (NFUZZ + 1)

#define NFD 4
#define NSLOT 32
#define SLOT_LEN (AIKRS_TLB_MAX_PAGES * PAGE)
/* Buffers per file that the fuzzers create: at most this many pages per file. */
#define FILE_PAGES 64
#define CHILD_SECS 20
#define INST_MAX 8192

/*
 * What is known of each file opened (an instance): whether CREATE succeeded and its
 * layout. In shared memory: children create too.
 */
struct inst {
	_Atomic int state; /* 0 not created, 1 created (layout known), 2 created (unknown) */
	_Atomic uint32_t count, pages;
	_Atomic uint64_t offset;
};

struct tshared {
	struct inst inst[INST_MAX];
	/*
	 * Remapping revokes issued, each counted before the call: a buffer's generation
	 * is at most 1 + this. (Counted for all files: a descriptor closed and reused
	 * meanwhile makes a revoke hit another file than the one it was meant for.)
	 */
	_Atomic uint32_t remaps;
	/*
	 * Pages that remapping revokes were allowed to allocate (a budget: each file
	 * keeps the pages its revokes replaced until it is closed).
	 */
	_Atomic uint64_t remap_pages;
};
static struct tshared *ts;

/* Shared descriptors: (instance << 32) | fd, fd -1 while closed. */
static _Atomic uint64_t fdslot[NFD];
static uint32_t next_inst = 1;

/*
 * The arena's places, each with a sequence count (odd while the churn thread changes
 * it): the reader trusts a record only if the count did not move across its reads.
 */
struct slot {
	_Atomic unsigned int seq;
	_Atomic int inst; /* 0: nothing known mapped */
	_Atomic uint32_t idx, pages;
	_Atomic int readable, writable;
};
static struct slot slots[NSLOT];
static char *arena;

static char *rw_view, *ro_view, *none_page;
static _Atomic int stop, finished;
static uint64_t seed, t0;
static int negative_control;

/* The canary: its file, its buffers' mappings (buffer 0 twice). */
#define CAN_BUFS 8
#define CAN_PAGES 4
static int canary_fd;
static uint64_t canary_offset;
static volatile uint64_t *can_map[CAN_BUFS + 1];
static struct {
	unsigned long passes, bad;
} cs;

/* Mapping checks of the reader and the children. */
static _Atomic unsigned long pages_checked, stale_reads;

struct ctx {
	int idx;
	uint64_t rng;
	uint64_t last_stats[8];
};

static const unsigned long known_ioctls[] = { AIKRS_TLB_IOC_CREATE, AIKRS_TLB_IOC_REVOKE,
					       AIKRS_TLB_IOC_STATS };

static void def_commands(void)
{
	/*
	 * Documented results, from device.rs (TlbFile); EBADF is added for all. EINTR is
	 * not documented for us: the loops return it only for a task being killed.
	 *
	 * - CREATE: EFAULT (the block cannot be read or written back), EINVAL (count or
	 *   pages 0 or above the limits, more than AIKRS_TLB_MAX_FILE_PAGES in all), EBUSY
	 *   (the file has buffers already), ENOMEM.
	 * - REVOKE: EFAULT, EINVAL (padding, unknown flags, no-flush without the negative
	 *   control or without BATCHED, no buffers, an empty range or one past them; the
	 *   batched zap meeting a mapping it cannot handle), ENOMEM (new pages, the
	 *   batch, the quarantine).
	 * - STATS: EFAULT.
	 * - unknown numbers: ENOTTY.
	 * - read()/write() of the node: EINVAL (no read or write method).
	 * - mmap(): EINVAL (before CREATE, private, not exactly one buffer, not at a
	 *   buffer of this file), EOVERFLOW (an offset past what a page offset holds),
	 *   ENOMEM.
	 */
	fz_def(C_CREATE, P_FUZZ, "AIKRS_TLB_IOC_CREATE", EFAULT, EINVAL, EBUSY, ENOMEM, 0);
	fz_def(C_REVOKE, P_FUZZ, "AIKRS_TLB_IOC_REVOKE", EFAULT, EINVAL, ENOMEM, 0);
	fz_def(C_STATS, P_FUZZ, "AIKRS_TLB_IOC_STATS", EFAULT, 0);
	fz_def(C_UNKNOWN, P_FUZZ, "unknown ioctl", ENOTTY, 0);
	fz_def(C_RW, P_FUZZ, "read/write of the node", EINVAL, 0);
	fz_def(C_MMAP, P_FUZZ, "mmap of a buffer", EINVAL, EOVERFLOW, ENOMEM, 0);
}

/* ---- commands ---- */

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

/*
 * Where the command block goes: 0 the caller's, 1 a bad address, 2 read-only (the
 * command runs, the block is not written back), 3 straddling an unmapped page.
 * Returns the pointer to pass.
 */
static void *place_arg(struct ctx *c, void *blk, size_t len, int *kind)
{
	return fz_place_arg(&c->rng, rw_view, ro_view, c->idx * 2 * PAGE, blk, len, kind);
}

/* Whether the budget of remapped pages allows `n` more (about 8 MiB/s). */
static int remap_budget(uint64_t n)
{
	uint64_t allowed = ((fz_now_ns() - t0) / 1000000000ULL + 2) * 2048;

	if (atomic_fetch_add(&ts->remap_pages, n) + n <= allowed)
		return 1;
	atomic_fetch_sub(&ts->remap_pages, n);
	return 0;
}

static void do_create(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	struct aikrs_tlb_create cr = { 0 };
	struct inst *in;
	int si, fd = pick_fd(s, &si, &v), kind, ret, e, raced, valid = 0;
	void *arg;
	char what[160];

	in = inst_of(v);
	if (fz_chance(s, 75)) {
		/* Small: at most FILE_PAGES pages. */
		cr.pages = fz_chance(s, 20) ? AIKRS_TLB_MAX_PAGES : 1 + (uint32_t)fz_below(s, 4);
		cr.count = 1 + (uint32_t)fz_below(s, FILE_PAGES / cr.pages);
		valid = 1;
	} else {
		static const uint32_t counts[] = { 0, 1, AIKRS_TLB_MAX_BUFS, AIKRS_TLB_MAX_BUFS + 1,
						   4097, 0x80000000U, 0xffffffffU };
		static const uint32_t pages[] = { 0, 1, 16, 17, 0x80000000U, 0xffffffffU };

		do {
			cr.count = counts[fz_below(s, FZ_ARRAY_SIZE(counts))];
			cr.pages = pages[fz_below(s, FZ_ARRAY_SIZE(pages))];
			/* Only invalid ones: a valid large one would take up to 256 MiB. */
		} while (cr.count && cr.pages && cr.count <= AIKRS_TLB_MAX_BUFS &&
			 cr.pages <= AIKRS_TLB_MAX_PAGES &&
			 (uint64_t)cr.count * cr.pages <= AIKRS_TLB_MAX_FILE_PAGES);
	}
	cr.offset = fz_chance(s, 10) ? fz_next(s) : 0; /* an output */
	arg = place_arg(c, &cr, sizeof(cr), &kind);
	ret = ioctl(fd, AIKRS_TLB_IOC_CREATE, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d count %u pages %u arg %p (kind %d) = %d", fd,
		 cr.count, cr.pages, arg, kind, ret);
	if (!fz_result(C_CREATE, e, raced, what) || raced || !in)
		return;
	if (!ret && !valid) {
		fz_finding(P_FUZZ, "CREATE accepted bad arguments: %s", what);
		return;
	}
	if (!ret && kind == 0) {
		int zero = 0;

		/* Not set yet, or set by a CREATE that failed to write its result back. */
		if (!atomic_compare_exchange_strong(&in->state, &zero, 1)) {
			fz_finding(P_FUZZ, "a second CREATE on one file succeeded: %s", what);
			return;
		}
		if (!cr.offset || cr.offset % PAGE)
			fz_finding(P_FUZZ, "CREATE gave offset %#llx: %s",
				   (unsigned long long)cr.offset, what);
		atomic_store(&in->count, cr.count);
		atomic_store(&in->pages, cr.pages);
		atomic_store(&in->offset, cr.offset);
		atomic_store_explicit(&in->state, 1, memory_order_release);
	} else if (valid && kind == 2 && e == EFAULT) {
		/*
		 * Created (the block was read; writing the result back failed), the offset
		 * lost: only hostile mappings from now on.
		 */
		int zero = 0;

		atomic_compare_exchange_strong(&in->state, &zero, 2);
	}
}

static void do_revoke(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	struct aikrs_tlb_revoke rv = { 0 }, in_rv;
	struct inst *in;
	int si, fd = pick_fd(s, &si, &v), kind, ret, e, raced, valid = 1;
	uint32_t nbufs = 0, pp = 1;
	void *arg;
	char what[200];

	in = inst_of(v);
	if (in && atomic_load_explicit(&in->state, memory_order_acquire) == 1) {
		nbufs = atomic_load(&in->count);
		pp = atomic_load(&in->pages);
	} else {
		valid = 0;
	}
	if (nbufs && fz_chance(s, 85)) {
		rv.first = (uint32_t)fz_below(s, nbufs);
		rv.count = 1 + (uint32_t)fz_below(s, nbufs - rv.first);
	} else {
		static const uint32_t vals[] = { 0, 1, 2, 64, 65535, 65536, 0x7fffffffU,
						 0x80000000U, 0xffffffffU };

		rv.first = fz_chance(s, 50) ? 0 : vals[fz_below(s, 9)];
		rv.count = vals[fz_below(s, 9)];
		valid = valid && rv.count && rv.first < nbufs && rv.count <= nbufs - rv.first;
	}
	rv.flags = (uint32_t)fz_below(s, 4); /* BATCHED, REMAP, both, neither */
	if (fz_chance(s, 8)) {
		rv.flags |= 1U << (2 + fz_below(s, 30)); /* unknown, or no-flush */
		if (negative_control)
			rv.flags &= ~NOFLUSH;
		valid = valid && !(rv.flags & ~AIKRS_TLB_REVOKE_ALL_FLAGS);
	}
	if (fz_chance(s, 4)) {
		rv.pad = (uint32_t)fz_next(s) | 1;
		valid = 0;
	}
	if (fz_chance(s, 10)) {
		rv.ptes = fz_next(s); /* outputs */
		rv.ns = fz_next(s);
	}
	if (rv.flags & AIKRS_TLB_REVOKE_REMAP) {
		uint64_t n = valid ? (uint64_t)rv.count * pp : 0;

		if (n && !remap_budget(n))
			rv.flags &= ~AIKRS_TLB_REVOKE_REMAP;
		else
			atomic_fetch_add(&ts->remaps, 1); /* before the call: an upper bound */
	}
	in_rv = rv;
	arg = place_arg(c, &rv, sizeof(rv), &kind);
	ret = ioctl(fd, AIKRS_TLB_IOC_REVOKE, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what),
		 "fd %d first %u count %u flags %#x pad %#x arg %p (kind %d) = %d", fd,
		 in_rv.first, in_rv.count, in_rv.flags, in_rv.pad, arg, kind, ret);
	if (!fz_result(C_REVOKE, e, raced, what) || raced)
		return;
	if (!ret && (in_rv.pad || (in_rv.flags & ~AIKRS_TLB_REVOKE_ALL_FLAGS) || !in_rv.count)) {
		fz_finding(P_FUZZ, "REVOKE accepted bad arguments: %s", what);
		return;
	}
	if (ret && valid && kind == 0 && e != ENOMEM)
		fz_finding(P_FUZZ, "a valid REVOKE failed with %s: %s", strerrorname_np(e), what);
	if (ret || kind)
		return;
	if (rv.first != in_rv.first || rv.count != in_rv.count || rv.flags != in_rv.flags ||
	    rv.pad)
		fz_finding(P_FUZZ, "REVOKE changed its inputs: %s", what);
	if (!(rv.flags & AIKRS_TLB_REVOKE_BATCHED) && (rv.ptes || rv.rounds))
		fz_finding(P_FUZZ, "a revoke one by one reported %llu ptes, %llu rounds: %s",
			   (unsigned long long)rv.ptes, (unsigned long long)rv.rounds, what);
}

static void do_stats(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	struct aikrs_tlb_stats st;
	int si, fd = pick_fd(s, &si, &v), kind, ret, e, raced;
	void *arg;
	char what[120];

	memset(&st, 0xa5, sizeof(st));
	arg = place_arg(c, &st, sizeof(st), &kind);
	ret = ioctl(fd, AIKRS_TLB_IOC_STATS, arg);
	e = ret ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what), "fd %d arg %p (kind %d) = %d", fd, arg, kind, ret);
	if (!fz_result(C_STATS, e, raced, what) || ret || raced)
		return;
	if (kind == 2 || kind == 1 || kind == 3) {
		fz_finding(P_FUZZ, "STATS wrote to an unwritable block: %s", what);
		return;
	}
	/* The counters only grow. */
	{
		const uint64_t *now = (const uint64_t *)&st;

		for (int i = 0; i < 8; i++) {
			if (now[i] < c->last_stats[i])
				fz_finding(P_FUZZ, "STATS counter %d went down from %llu to %llu", i,
					   (unsigned long long)c->last_stats[i],
					   (unsigned long long)now[i]);
			c->last_stats[i] = now[i];
		}
	}
}

static void fuzz_one(struct ctx *c)
{
	uint64_t *s = &c->rng, v;
	unsigned int r = (unsigned int)fz_below(s, 100);
	int si, fd, ret, e;
	char what[120];

	if (r < 25) {
		do_create(c);
	} else if (r < 80) {
		do_revoke(c);
	} else if (r < 88) {
		do_stats(c);
	} else if (r < 96) {
		unsigned long req = fz_unknown_ioctl(s, AIKRS_TLB_IOC_MAGIC, 2,
						     sizeof(struct aikrs_tlb_revoke), known_ioctls, 3);
		char blk[64] = { 0 };

		fd = pick_fd(s, &si, &v);
		ret = ioctl(fd, req, fz_chance(s, 80) ? (void *)blk :
				     (void *)(uintptr_t)fz_bad_addr(s));
		e = ret ? errno : 0;
		snprintf(what, sizeof(what), "fd %d req %#lx = %d", fd, req, ret);
		if (fz_result(C_UNKNOWN, e, si >= 0 && atomic_load(&fdslot[si]) != v, what) &&
		    !ret && !(si >= 0 && atomic_load(&fdslot[si]) != v))
			fz_finding(P_FUZZ, "unknown ioctl accepted: %s", what);
	} else {
		char buf[256];
		size_t n = fz_below(s, sizeof(buf));
		ssize_t rr;

		fd = pick_fd(s, &si, &v);
		rr = fz_chance(s, 50) ? read(fd, buf, n) : write(fd, buf, n);
		e = rr < 0 ? errno : 0;
		snprintf(what, sizeof(what), "fd %d, %zu bytes = %zd", fd, n, rr);
		fz_result(C_RW, e, si >= 0 && atomic_load(&fdslot[si]) != v, what);
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

/* ---- stamps ---- */

/*
 * Checks word 0 of page `j` of buffer `idx` of instance `id`, read as `w`: the
 * buffer's stamp with a generation from 1 to 1 + the remapping revokes issued.
 * Returns 0 (and records a finding) if it cannot be.
 */
static int stamp_ok(uint64_t w, uint32_t id, uint32_t idx, uint32_t j, const char *where)
{
	uint32_t gen = (uint32_t)w, max;

	atomic_fetch_add_explicit(&pages_checked, 1, memory_order_relaxed);
	/* Read after the value: a revoke that made the value was counted before it. */
	atomic_thread_fence(memory_order_acquire);
	max = 1 + atomic_load(&ts->remaps);
	if (w == AIKRS_TLB_POISON) {
		atomic_fetch_add(&stale_reads, 1);
		fz_finding(P_FUZZ, "%s: poison in page %u of buffer %u (file %u): a stale TLB entry",
			   where, j, idx, id);
		return 0;
	}
	if (w >> 32 != idx || !gen || gen > max) {
		fz_finding(P_FUZZ,
			   "%s: page %u of buffer %u (file %u) reads %#llx (generations 1..%u)",
			   where, j, idx, id, (unsigned long long)w, max);
		return 0;
	}
	return 1;
}

/* ---- the arena's mappings ---- */

static void slot_begin(int sl)
{
	atomic_fetch_add_explicit(&slots[sl].seq, 1, memory_order_acq_rel);
}

static void slot_end(int sl)
{
	atomic_fetch_add_explicit(&slots[sl].seq, 1, memory_order_release);
}

static void slot_set(int sl, int inst, uint32_t idx, uint32_t pages, int rd, int wr)
{
	atomic_store_explicit(&slots[sl].inst, inst, memory_order_relaxed);
	atomic_store_explicit(&slots[sl].idx, idx, memory_order_relaxed);
	atomic_store_explicit(&slots[sl].pages, pages, memory_order_relaxed);
	atomic_store_explicit(&slots[sl].readable, rd, memory_order_relaxed);
	atomic_store_explicit(&slots[sl].writable, wr, memory_order_relaxed);
}

/*
 * Maps a buffer at place `sl`: one of a shared file's (whole, shared), or wrongly.
 * `fd` may be a closed or reused descriptor: then nothing is known of the result.
 */
static void map_buffer(uint64_t *s, int sl)
{
	char *p = arena + sl * SLOT_LEN;
	uint64_t v;
	int si, fd = pick_fd(s, &si, &v), e, raced, prot, flags = MAP_SHARED | MAP_FIXED;
	uint32_t id = (uint32_t)(v >> 32), idx = 0, pp = 1;
	struct inst *in = inst_of(v);
	int known = in && atomic_load_explicit(&in->state, memory_order_acquire) == 1;
	size_t len;
	off_t off;
	int valid;
	void *r;
	char what[200];

	if (known) {
		uint32_t n = atomic_load(&in->count);

		pp = atomic_load(&in->pages);
		idx = (uint32_t)fz_below(s, n);
		off = (off_t)(atomic_load(&in->offset) + (uint64_t)idx * pp * PAGE);
	} else {
		off = (off_t)(fz_below(s, 64) * PAGE);
	}
	len = pp * PAGE;
	prot = fz_chance(s, 70) ? PROT_READ : PROT_READ | PROT_WRITE;
	valid = known;
	if (fz_chance(s, 20)) {
		valid = 0;
		switch (fz_below(s, 9)) {
		case 0:
			flags = MAP_PRIVATE | MAP_FIXED;
			break;
		case 1:
			len = pp < AIKRS_TLB_MAX_PAGES ? len + PAGE : len - PAGE;
			break;
		case 2:
			if (pp > 1)
				len -= PAGE;
			else
				len += PAGE;
			break;
		case 3: /* the next buffer... */
			off += PAGE;
			if (pp == 1)
				valid = known;
			break;
		case 4: /* another file's buffer */
			off = (off_t)canary_offset;
			break;
		case 5:
			off = 0;
			break;
		case 6:
			off = (off_t)0x7ffffffffffff000LL;
			break;
		case 7:
			off = (off_t)(1ULL << 40);
			break;
		default:
			off += (off_t)(fz_below(s, 4) + 1) * AIKRS_TLB_MAX_BUFS * PAGE;
			break;
		}
		if (valid && (uint64_t)(off - (off_t)atomic_load(&in->offset)) / PAGE / pp >=
			     atomic_load(&in->count)) {
			valid = 0; /* ...which is past the last one */
		} else if (valid) {
			idx++;
		}
	}
	if (len > SLOT_LEN)
		len = SLOT_LEN; /* never beyond its place */
	slot_begin(sl);
	r = mmap(p, len, prot, flags, fd, off);
	e = r == MAP_FAILED ? errno : 0;
	raced = si >= 0 && atomic_load(&fdslot[si]) != v;
	snprintf(what, sizeof(what),
		 "fd %d (file %u) %zu bytes at offset %#llx, prot %d, flags %#x = %s", fd, id,
		 len, (unsigned long long)off, prot, flags, e ? strerrorname_np(e) : "ok");
	/* A failed MAP_FIXED mmap may leave the place unmapped. */
	if (r == MAP_FAILED || raced || !valid)
		slot_set(sl, 0, 0, 0, 0, 0);
	else
		slot_set(sl, (int)id, idx, pp, 1, prot & PROT_WRITE ? 1 : 0);
	slot_end(sl);
	if (!fz_result(C_MMAP, e, raced, what) || raced)
		return;
	/*
	 * Refused for sure: private, not one buffer long, another file's buffer. (Without
	 * a known layout a guessed offset may be right: the file may have been created.)
	 */
	if (r != MAP_FAILED && !valid &&
	    (flags & MAP_PRIVATE || (known && len != pp * PAGE) || off == (off_t)canary_offset))
		fz_finding(P_FUZZ, "a bad mmap was accepted: %s", what);
	if (r == MAP_FAILED && valid && e != ENOMEM)
		fz_finding(P_FUZZ, "a valid mmap was refused: %s", what); /* `what` has the errno */
}

static void churn_one(uint64_t *s)
{
	int sl = (int)fz_below(s, NSLOT);
	char *p = arena + sl * SLOT_LEN;
	uint32_t pages = atomic_load(&slots[sl].pages);

	switch (fz_below(s, 20)) {
	case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7:
		map_buffer(s, sl);
		break;
	case 8: case 9:
		slot_begin(sl);
		munmap(p, SLOT_LEN);
		slot_set(sl, 0, 0, 0, 0, 0);
		slot_end(sl);
		break;
	case 10: case 11: {
		static const int prots[] = { PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE };
		int prot = prots[fz_below(s, 3)];

		if (!pages)
			break;
		slot_begin(sl);
		if (!mprotect(p, pages * PAGE, prot)) {
			atomic_store(&slots[sl].readable, prot != PROT_NONE);
			atomic_store(&slots[sl].writable, !!(prot & PROT_WRITE));
		} else {
			slot_set(sl, 0, 0, 0, 0, 0);
		}
		slot_end(sl);
		break;
	}
	case 12: case 13: {
		/* Move it to another place (its page offset goes with it). */
		int to = (int)fz_below(s, NSLOT);
		void *r;

		if (!pages || to == sl)
			break;
		slot_begin(sl);
		slot_begin(to);
		r = mremap(p, pages * PAGE, pages * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
			   arena + to * SLOT_LEN);
		if (r != MAP_FAILED) {
			slot_set(to, atomic_load(&slots[sl].inst), atomic_load(&slots[sl].idx),
				 pages, atomic_load(&slots[sl].readable),
				 atomic_load(&slots[sl].writable));
			slot_set(sl, 0, 0, 0, 0, 0);
		} else {
			slot_set(to, 0, 0, 0, 0, 0);
		}
		slot_end(to);
		slot_end(sl);
		break;
	}
	case 14: {
		/* Shrink it, or unmap its tail. */
		uint32_t keep = pages / 2;

		if (!keep)
			break;
		slot_begin(sl);
		if (fz_chance(s, 50) ? mremap(p, pages * PAGE, keep * PAGE, 0) == MAP_FAILED :
				       munmap(p + keep * PAGE, (pages - keep) * PAGE) != 0)
			slot_set(sl, 0, 0, 0, 0, 0);
		else
			atomic_store(&slots[sl].pages, keep);
		slot_end(sl);
		break;
	}
	case 15: {
		/* Advice: refused on a PFN map (DONTNEED, FREE...) or harmless. */
		static const int advice[] = { MADV_DONTNEED, MADV_FREE, MADV_COLD, MADV_PAGEOUT,
					      MADV_WILLNEED, MADV_DONTFORK, MADV_POPULATE_WRITE,
					      MADV_HUGEPAGE, MADV_WIPEONFORK };

		if (pages)
			madvise(p, pages * PAGE, advice[fz_below(s, FZ_ARRAY_SIZE(advice))]);
		break;
	}
	default:
		/*
		 * Write to a writable mapping, never the stamps (the first 8 bytes). This
		 * thread alone changes the places, and it mapped this one writable and left
		 * it so (every failed call clears its place): a fault is the kernel's, a
		 * finding, with what /proc/self/maps says of the address.
		 */
		if (pages && atomic_load(&slots[sl].writable)) {
			uint32_t j = (uint32_t)fz_below(s, pages);
			size_t at = j * PAGE + 8 + fz_below(s, PAGE - 8);
			int sig = sigsetjmp(fz_jb, 1);

			if (sig) {
				char maps[96];

				fz_maps_of((uintptr_t)fz_fault_addr, maps, sizeof(maps));
				fz_finding(P_FUZZ, "signal %d at %p writing page %u of buffer %u (file %d) at place %d, mapped writable: maps %s",
					   sig, fz_fault_addr, j, atomic_load(&slots[sl].idx),
					   atomic_load(&slots[sl].inst), sl, maps);
				slot_begin(sl);
				slot_set(sl, 0, 0, 0, 0, 0);
				slot_end(sl);
				break;
			}
			fz_armed = 1;
			((volatile char *)p)[at] = (char)fz_next(s);
			fz_armed = 0;
		}
		break;
	}
}

static void *churn_thread(void *arg)
{
	uint64_t s = fz_stream(seed, T_CHURN);

	(void)arg;
	while (!atomic_load(&stop)) {
		churn_one(&s);
		if (fz_chance(&s, 20))
			usleep((useconds_t)fz_below(&s, 1000));
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* Reads the mapped buffers in turn; a fault is expected only if the place changed. */
static void *reader_thread(void *arg)
{
	/* In memory, not in a register that siglongjmp() would restore. */
	static uint64_t rng;
	uint64_t *s = &rng;

	(void)arg;
	rng = fz_stream(seed, T_READER);
	while (!atomic_load(&stop)) {
		int sl = (int)fz_below(s, NSLOT);
		unsigned int s1 = atomic_load_explicit(&slots[sl].seq, memory_order_acquire), s2;
		int id = atomic_load_explicit(&slots[sl].inst, memory_order_relaxed);
		uint32_t idx = atomic_load_explicit(&slots[sl].idx, memory_order_relaxed);
		uint32_t pages = atomic_load_explicit(&slots[sl].pages, memory_order_relaxed);
		int rd = atomic_load_explicit(&slots[sl].readable, memory_order_relaxed);
		volatile uint64_t *p = (volatile uint64_t *)(arena + sl * SLOT_LEN);
		uint64_t w[AIKRS_TLB_MAX_PAGES];
		int sig;

		if ((s1 & 1) || !id || !rd || !pages || pages > AIKRS_TLB_MAX_PAGES)
			continue;
		sig = sigsetjmp(fz_jb, 1);
		if (sig) {
			s2 = atomic_load_explicit(&slots[sl].seq, memory_order_acquire);
			if (s2 == s1)
				fz_finding(P_FUZZ, "signal %d reading buffer %u (file %d) at place %d, "
					   "mapped and readable", sig, idx, id, sl);
			continue;
		}
		fz_armed = 1;
		for (uint32_t j = 0; j < pages; j++)
			w[j] = p[j * PAGE / 8];
		fz_armed = 0;
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&slots[sl].seq, memory_order_relaxed);
		if (s1 != s2)
			continue;
		for (uint32_t j = 0; j < pages; j++)
			if (!stamp_ok(w[j], (uint32_t)id, idx, j, "reader"))
				break;
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- children, descriptors, debugfs ---- */

/*
 * A child: maps buffers of the inherited files again (mappings are not inherited),
 * checks their stamps, revokes and fuzzes commands, and exits.
 */
static void child_main(uint64_t rs, pid_t parent)
{
	struct ctx c = { .idx = X_CHILD, .rng = rs };
	uint64_t *s = &c.rng;
	int n = 4 + (int)fz_below(s, 24);

	fz_child_setup(parent, CHILD_SECS);
	for (int i = 0; i < n; i++) {
		uint64_t v;
		int si, fd = pick_fd(s, &si, &v);
		struct inst *in = inst_of(v);
		uint32_t id = (uint32_t)(v >> 32);

		if (fz_chance(s, 50) && in &&
		    atomic_load_explicit(&in->state, memory_order_acquire) == 1) {
			uint32_t pp = atomic_load(&in->pages);
			uint32_t idx = (uint32_t)fz_below(s, atomic_load(&in->count));
			char *at = arena + fz_below(s, NSLOT) * SLOT_LEN;
			volatile uint64_t *m = mmap(at, pp * PAGE, PROT_READ, MAP_SHARED | MAP_FIXED,
						    fd, (off_t)(atomic_load(&in->offset) +
								(uint64_t)idx * pp * PAGE));

			if (m == MAP_FAILED) {
				fz_result(C_MMAP, errno, 0, "a child's mapping of a buffer");
				continue;
			}
			fz_result(C_MMAP, 0, 0, "a child's mapping of a buffer");
			for (int k = 0; k < 3; k++) {
				for (uint32_t j = 0; j < pp; j++)
					stamp_ok(m[j * PAGE / 8], id, idx, j, "child");
				if (k == 1)
					do_revoke(&c);
			}
			munmap((void *)m, pp * PAGE);
		} else {
			fuzz_one(&c);
		}
	}
	_exit(0);
}

/* Closes descriptor slot `si` and, unless `keep_closed`, opens a new file there. */
static void reopen(int si, int keep_closed)
{
	uint64_t old = atomic_load(&fdslot[si]);
	uint32_t id = next_inst < INST_MAX ? next_inst++ : 0;
	int fd = keep_closed ? -1 : open("/dev/aikrs_tlb", O_RDWR);
	int ofd = (int)(uint32_t)old;

	if (fd < 0 && !keep_closed)
		fz_finding(P_FUZZ, "open /dev/aikrs_tlb: %s", strerror(errno));
	atomic_store(&fdslot[si], (uint64_t)id << 32 | (uint32_t)fd);
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

		if (r < 20) {
			uint64_t rs = fz_next(&s);
			pid_t pid = fork();

			if (pid == 0)
				child_main(rs, self);
			if (pid < 0) {
				fz_finding(P_FUZZ, "fork: %s", strerror(errno));
				continue;
			}
			atomic_fetch_add(&forks, 1);
			fz_reap(pid, (CHILD_SECS + 5) * 1000, P_FUZZ, "fuzzing child");
		} else if (r < 45) {
			/* New files until the table of instances is full. */
			if (next_inst < INST_MAX)
				reopen((int)fz_below(&s, NFD), 0);
		} else if (r < 47) {
			if (next_inst < INST_MAX)
				reopen((int)fz_below(&s, NFD), 1);
		} else {
			fz_dfs_step(&dfs, &s);
		}
		usleep((useconds_t)fz_below(&s, 20000));
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- the canary ---- */

static void *canary_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		for (int m = 0; m <= CAN_BUFS; m++) {
			unsigned int b = m == CAN_BUFS ? 0 : (unsigned int)m;

			for (int j = 0; j < CAN_PAGES; j++) {
				volatile uint64_t *pg = can_map[m] + j * PAGE / 8;

				for (size_t k = 0; k < PAGE / 8; k++) {
					uint64_t want = k ? 0 : (uint64_t)b << 32 | 1;
					uint64_t got = pg[k];

					if (got == want)
						continue;
					if (cs.bad++ < 4)
						fz_finding(P_CANARY,
							   "canary buffer %u page %d word %zu (mapping %d): "
							   "%#llx, want %#llx", b, j, k, m,
							   (unsigned long long)got,
							   (unsigned long long)want);
				}
			}
		}
		cs.passes++;
	}
	atomic_fetch_add(&finished, 1);
	return NULL;
}

/* ---- set-up ---- */

static void *must_map(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(addr, len, prot, flags, fd, off);

	if (p == MAP_FAILED) {
		printf("# mmap of %zu bytes: %s\nnot ok 1 fuzz_tlb # set-up failed\n", len,
		       strerror(errno));
		exit(1);
	}
	return p;
}

static void setup(void)
{
	struct aikrs_tlb_create cr = { .count = CAN_BUFS, .pages = CAN_PAGES };
	char *r;
	int cfd;

	ts = must_map(NULL, sizeof(*ts), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		      -1, 0);
	/* The arena, between unmapped guards. */
	r = must_map(NULL, NSLOT * SLOT_LEN + 2 * SLOT_LEN, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	arena = r + SLOT_LEN;
	/* The command pages: a shared memfd mapped read-write and read-only. */
	cfd = memfd_create("aikrs_tlb_fuzz_cmd", 0);
	if (cfd < 0 || ftruncate(cfd, NCTX * 2 * PAGE)) {
		printf("# memfd: %s\nnot ok 1 fuzz_tlb # set-up failed\n", strerror(errno));
		exit(1);
	}
	rw_view = must_map(NULL, NCTX * 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	ro_view = must_map(NULL, NCTX * 2 * PAGE, PROT_READ, MAP_SHARED, cfd, 0);
	for (int i = 0; i < NCTX; i++)
		mprotect(rw_view + (2 * i + 1) * PAGE, PAGE, PROT_NONE);
	close(cfd);
	none_page = must_map(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	/* The canary file: its buffers mapped (buffer 0 twice), between guards. */
	canary_fd = open("/dev/aikrs_tlb", O_RDWR);
	if (canary_fd < 0 || ioctl(canary_fd, AIKRS_TLB_IOC_CREATE, &cr)) {
		printf("# canary: %s\nnot ok 1 fuzz_tlb # set-up failed\n", strerror(errno));
		exit(1);
	}
	canary_offset = cr.offset;
	r = must_map(NULL, (CAN_BUFS + 1) * (CAN_PAGES + 1) * PAGE + PAGE, PROT_NONE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	for (int m = 0; m <= CAN_BUFS; m++) {
		int b = m == CAN_BUFS ? 0 : m;

		can_map[m] = must_map(r + PAGE + m * (CAN_PAGES + 1) * PAGE, CAN_PAGES * PAGE,
				      PROT_READ, MAP_SHARED | MAP_FIXED, canary_fd,
				      (off_t)(canary_offset + (uint64_t)b * CAN_PAGES * PAGE));
	}
	for (int i = 0; i < NFD; i++) {
		atomic_store(&fdslot[i], (uint32_t)-1);
		reopen(i, 0);
	}
}

int main(void)
{
	static const char *const dirs[] = { "/sys/kernel/debug/aikrs_tlb", NULL };
	static const char *const part_names[NPART] = { "fuzz_tlb", "canary_tlb", "debugfs_tlb" };
	static char wd_msg[512];
	static const char crash_msg[] =
		"not ok 1 fuzz_tlb # crashed\nnot ok 2 canary_tlb # crashed\n"
		"not ok 3 debugfs_tlb # crashed\n";
	struct ctx ctxs[NFUZZ];
	pthread_t th[NTHREAD];
	int nfiles, fail = 0;
	uint64_t secs = 60, fuzz_ns, grace_s, deadline;
	unsigned long total;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (access("/dev/aikrs_tlb", F_OK)) {
		printf("KTAP version 1\n1..1\nok 1 fuzz_tlb # SKIP /dev/aikrs_tlb absent\n");
		return 0;
	}
	fz_init_shared();
	def_commands();
	fz_cmdline_u64("aikrs.fuzz_secs", &secs);
	if (secs < 5)
		secs = 5;
	if (!fz_cmdline_u64("aikrs.fuzz_seed", &seed))
		seed = fz_now_ns() ^ (uint64_t)getpid() << 32 ^ (uintptr_t)&secs;
	negative_control = fz_cmdline_has("aikrs.tlb_negative_control");
	printf("KTAP version 1\n1..%d\n", NPART);
	printf("# fuzz: seed=%llu secs=%llu (replay: aikrs.fuzz_seed=%llu aikrs.fuzz_secs=%llu)\n",
	       (unsigned long long)seed, (unsigned long long)secs, (unsigned long long)seed,
	       (unsigned long long)secs);
	if (negative_control)
		printf("# aikrs.tlb_negative_control: REVOKE's no-flush flag is never passed\n");
	fz_catch_faults(crash_msg);
	setup();
	nfiles = fz_dfs_init(&dfs, dirs, P_DFS, C_DFS_READ, C_DFS_WRITE, none_page, ro_view);
	printf("# %d debugfs files, arena of %d places at %p, canary file at offset %#llx\n",
	       nfiles, NSLOT, arena, (unsigned long long)canary_offset);

	t0 = fz_now_ns();
	fuzz_ns = (secs - (secs / 10 < 5 ? secs / 10 : 5)) * 1000000000ULL;
	deadline = t0 + fuzz_ns;
	grace_s = 30 + CHILD_SECS + 5;
	snprintf(wd_msg, sizeof(wd_msg),
		 "# watchdog: still running %llu s after the end of the fuzzing\n"
		 "not ok 1 fuzz_tlb # watchdog\nnot ok 2 canary_tlb # watchdog\n"
		 "not ok 3 debugfs_tlb # watchdog\n",
		 (unsigned long long)grace_s + 30);
	fz_watchdog((unsigned int)(secs + grace_s + 30), wd_msg);

	for (int i = 0; i < NFUZZ; i++) {
		ctxs[i] = (struct ctx){ .idx = i, .rng = fz_stream(seed, i) };
		pthread_create(&th[i], NULL, fuzz_thread, &ctxs[i]);
	}
	pthread_create(&th[T_CHURN], NULL, churn_thread, NULL);
	pthread_create(&th[T_READER], NULL, reader_thread, NULL);
	pthread_create(&th[T_PROC], NULL, proc_thread, NULL);
	pthread_create(&th[T_CANARY], NULL, canary_thread, NULL);

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
	for (int i = 0; i < NFD; i++) {
		int fd = (int)(uint32_t)atomic_load(&fdslot[i]);

		if (fd >= 0)
			close(fd);
	}
	munmap(arena - SLOT_LEN, NSLOT * SLOT_LEN + 2 * SLOT_LEN);
	alarm(0);

	total = fz_total_calls();
	printf("# %lu commands in %.1f s, %u files, %lu children, %lu remapped pages\n", total,
	       (double)(fz_now_ns() - t0) / 1e9, next_inst - 1, atomic_load(&forks),
	       (unsigned long)atomic_load(&ts->remap_pages));
	fz_print_counts();
	printf("# mappings: %lu pages checked, %lu stale\n", atomic_load(&pages_checked),
	       atomic_load(&stale_reads));
	printf("# canary: %lu passes over %d mappings, %lu bad words\n", cs.passes,
	       CAN_BUFS + 1, cs.bad);
	printf("# debugfs: %lu reads, %lu writes, %lu values checked\n", dfs.reads, dfs.writes,
	       dfs.values);
	fz_print_findings();
	{
		unsigned int nf = atomic_load(&fz_sh->npart[P_FUZZ]);
		int ok = !nf && total > 0 && atomic_load(&pages_checked) > 0;

		fail |= !ok;
		printf("%s 1 fuzz_tlb: %lu commands, %lu mapped pages checked, %u findings\n",
		       ok ? "ok" : "not ok", total, atomic_load(&pages_checked), nf);
	}
	{
		unsigned int nf = atomic_load(&fz_sh->npart[P_CANARY]);
		int ok = !nf && !cs.bad && cs.passes > 0;

		fail |= !ok;
		printf("%s 2 canary_tlb: %lu passes, canary %s\n", ok ? "ok" : "not ok", cs.passes,
		       cs.bad ? "damaged" : "intact");
	}
	{
		unsigned int nf = atomic_load(&fz_sh->npart[P_DFS]);
		int ok = !nf && nfiles > 0 && dfs.values > 0;

		fail |= !ok;
		printf("%s 3 debugfs_tlb: %d files, %lu reads, %lu writes, %u findings\n",
		       ok ? "ok" : "not ok", nfiles, dfs.reads, dfs.writes, nf);
	}
	close(canary_fd);
	return fail;
}
