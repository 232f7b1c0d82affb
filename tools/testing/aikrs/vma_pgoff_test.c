// SPDX-License-Identifier: GPL-2.0
/*
 * Regression test (KTAP) for "WARNING: mm/vma.h:277 at vma_set_range" on Linux 7.3
 * (CONFIG_DEBUG_VM), which hmm_fuzz_test hit once in ~10 runs with the stack
 * mprotect -> mprotect_fixup -> vma_modify_flags -> vma_merge_existing_range ->
 * commit_merge -> vma_set_range, and which scripts/patches/7.3/0005 fixes. No device
 * is needed: it is a bug of fork().
 *
 * The check (assert_sane_pgoff(), mm/vma.h) says: an anonymous vma with no vm_file
 * and no anon_vma must have vm_pgoff == vm_start >> PAGE_SHIFT. commit_merge() gives
 * the merged vma the pgoff of the vma it extends, so the check fires only if such an
 * "unfaulted but stale-pgoff" vma already exists. fork() made one:
 *
 *  1. parent: mmap anon A, write it (vma gets an anon_vma, pgoff = A >> PAGE_SHIFT);
 *  2. parent: mremap(A -> B, MAYMOVE|FIXED [|DONTUNMAP]): a faulted vma keeps its
 *     pgoff (copy_vma() moves the pgoff only of a vma with no anon_vma), so B has
 *     pgoff A >> PAGE_SHIFT, which is legal because B has an anon_vma;
 *  3. parent: mprotect(first half of B, PROT_READ): B1 | B2, adjacent pgoffs;
 *  4. parent: madvise(B, MADV_WIPEONFORK) (or the mapping is MAP_DROPPABLE);
 *  5. fork(): dup_mmap() gives the child's copies of B1, B2 anon_vma = NULL
 *     (wipe-on-fork: "clean slate") but kept the parent's vm_pgoff, now stale;
 *  6. child: mprotect(B, whole, RW) (what hmm_fuzz_test's child_main() does): B1
 *     becomes mergeable with B2, vma_merge_existing_range() -> commit_merge() ->
 *     vma_set_range(B2, B, B + len, A >> PAGE_SHIFT) with B2->anon_vma == NULL: WARN.
 *
 * Splitting such a child vma (partial mprotect, munmap) warned in __split_vma()
 * instead, expanding it in place with mremap() in vma_set_range() via vma_expand().
 * Before the patch, sequences 8 and 12 failed on 7.3 (the warning is once per boot,
 * so 9-11 could not show it after 8); with it, none does. Linux 6.12 has no such
 * check (its children kept a stale pgoff too, which only costs merges). The other
 * sequences are controls of the paths that were right: moving unfaulted vmas,
 * MREMAP_DONTUNMAP, faulted/unfaulted neighbours, fork without wipe-on-fork; two
 * short random phases come last (their seed is printed).
 *
 * Each sequence prints "# seq N: ..." and writes the same marker into the kernel log
 * (/dev/kmsg) before running, sleeps 100 ms after, and then reads the new kernel log
 * records: a WARNING or BUG during a sequence makes it "not ok" and is quoted (the
 * host's scan of the whole log, scripts/kreport.sh, fails the run as well).
 *
 * "vma_pgoff.only=N[,M...]" on the kernel command line (or argv[1] "N[,M...]") runs
 * only those sequences, e.g. to see a later one warn in a fresh boot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif
#ifndef MADV_KEEPONFORK
#define MADV_KEEPONFORK 19
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { SEQ_OK = 0, SEQ_FAIL = 1, SEQ_SKIP = 2 };

static size_t pg;
static int cur_seq;
static char skipmsg[200];
static int kmsg_rd = -1;

#define P(n) ((size_t)(n) * pg)
#define RW (PROT_READ | PROT_WRITE)

/* ---- kernel log ---- */

static void kmsg_mark(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC), n;

	if (fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		(void)!write(fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	close(fd);
}

static int seq_reports, seq_quoted;

/*
 * Reads the kernel log records added since the last call; quotes WARNING/BUG reports
 * (the report line, "Comm:" line and stack frames) and adds them to seq_reports.
 * Returns how many new reports, or -1 if the log cannot be read.
 */
static int kmsg_scan(void)
{
	static int inrep;
	char rec[8192];
	int reports = 0;

	if (kmsg_rd < 0)
		return -1;
	for (;;) {
		ssize_t n = read(kmsg_rd, rec, sizeof(rec) - 1);
		char *t, *nl;

		if (n < 0) {
			if (errno == EPIPE || errno == EINTR)
				continue; /* overrun: the next read resyncs */
			break; /* EAGAIN: nothing new */
		}
		rec[n] = 0;
		t = strchr(rec, ';');
		if (!t)
			continue;
		t++;
		nl = strchr(t, '\n');
		if (nl)
			*nl = 0;
		if (!strncmp(t, "vma_pgoff:", 10))
			continue;
		if (strstr(t, "WARNING:") || strstr(t, "BUG:") || strstr(t, "kernel BUG")) {
			reports++;
			inrep = 1;
		}
		if (inrep && seq_quoted < 48 &&
		    (strstr(t, "WARNING:") || strstr(t, "BUG:") || strstr(t, "Comm:") ||
		     strstr(t, "+0x") || strstr(t, "Call Trace"))) {
			printf("# seq %d: kernel: %s\n", cur_seq, t);
			seq_quoted++;
		}
		if (strstr(t, "---[ end trace"))
			inrep = 0;
	}
	seq_reports += reports;
	return reports;
}

/* ---- helpers ---- */

static char *reserve(size_t npages)
{
	char *p = mmap(NULL, P(npages), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	munmap(p, P(npages)); /* a free range: holes keep the sequence's vmas apart */
	return p;
}

static int map_anon(char *at, size_t n, int prot)
{
	return mmap(at, P(n), prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == at ? 0 : -1;
}

static int move_to(char *from, size_t n, char *to, int extra)
{
	return mremap(from, P(n), P(n), MREMAP_MAYMOVE | MREMAP_FIXED | extra, to) == to ? 0 : -1;
}

static void touch(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)p)[P(i)] = 1;
}

/* Number of vmas intersecting [lo, hi), from /proc/self/maps; prints them. */
static int count_vmas(char *lo, char *hi, const char *tag)
{
	static char buf[1 << 16];
	size_t len = 0;
	ssize_t n;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC), cnt = 0;
	char *line, *save;

	if (fd < 0)
		return -1;
	while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *e;
		unsigned long s = strtoul(line, &e, 16), en = strtoul(e + 1, NULL, 16);

		if (s < (unsigned long)hi && en > (unsigned long)lo) {
			cnt++;
			printf("# seq %d:   %s: %.40s\n", cur_seq, tag, line);
		}
	}
	return cnt;
}

/* Runs fn(arg) in a child; returns its exit status, or -1. */
static int in_child(int (*fn)(char *), char *arg)
{
	int st;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		alarm(20);
		st = fn(arg);
		fflush(stdout);
		_exit(st);
	}
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A child that failed or was killed (a crash, or its 20 s alarm) fails the sequence. */
#define CHILD(call, what)                                                        \
	do {                                                                     \
		int st_ = (call);                                                \
		if (st_ != 0) {                                                  \
			snprintf(skipmsg, sizeof(skipmsg), "%s: status %d", what, \
				 st_);                                           \
			return SEQ_FAIL;                                         \
		}                                                                \
	} while (0)

#define TRY(cond, what)                                                          \
	do {                                                                     \
		if (cond) {                                                      \
			snprintf(skipmsg, sizeof(skipmsg), "%s: %s", what,       \
				 strerror(errno));                               \
			return SEQ_SKIP;                                           \
		}                                                                \
	} while (0)

/*
 * Steps 1-4 of the hypothesis in base[0, 48 pages): a faulted 4-page anon vma at A =
 * base moved to B = base + 16 pages, so its pgoff is A's. split: first half made
 * read-only. wipe: MADV_WIPEONFORK (implied by MAP_DROPPABLE).
 */
static int make_stale(char *base, int dontunmap, int droppable, int split, int wipe)
{
	char *a = base, *b = base + P(16);
	int fl = (droppable ? MAP_DROPPABLE : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED;

	TRY(mmap(a, P(4), RW, fl, -1, 0) != a, droppable ? "mmap(MAP_DROPPABLE)" : "mmap");
	touch(a, 4);
	TRY(move_to(a, 4, b, dontunmap ? MREMAP_DONTUNMAP : 0), "mremap A->B");
	if (split)
		TRY(mprotect(b, P(2), PROT_READ), "mprotect(first half of B, R)");
	if (wipe && !droppable)
		TRY(madvise(b, P(4), MADV_WIPEONFORK), "madvise(B, WIPEONFORK)");
	return SEQ_OK;
}

/* ---- the deterministic sequences ---- */

static char *base;

static int seq_unfaulted_move(void)
{
	char *a = base, *b = base + P(16);
	int n;

	TRY(map_anon(a, 4, RW), "mmap A");
	TRY(move_to(a, 4, b, 0), "mremap A->B");
	TRY(map_anon(b + P(4), 4, RW), "mmap N after B");
	n = count_vmas(b, b + P(8), "B+N");
	printf("# seq %d: %d vma(s): 1 = the move gave unfaulted B pgoff B>>PAGE_SHIFT (copy_vma)\n",
	       cur_seq, n);
	TRY(mprotect(b + P(2), P(4), PROT_READ), "mprotect split");
	TRY(mprotect(b + P(2), P(4), RW), "mprotect merge");
	TRY(mprotect(b, P(8), PROT_READ), "mprotect all R");
	TRY(mprotect(b, P(8), RW), "mprotect all RW");
	return SEQ_OK;
}

static int seq_unfaulted_dontunmap(void)
{
	char *a = base, *b = base + P(16);

	TRY(map_anon(a, 4, RW), "mmap A");
	TRY(move_to(a, 4, b, MREMAP_DONTUNMAP), "mremap A->B DONTUNMAP");
	TRY(map_anon(a + P(4), 4, RW), "mmap N after A");
	count_vmas(a, a + P(8), "A+N");
	TRY(mprotect(a + P(2), P(4), PROT_READ), "mprotect A split");
	TRY(mprotect(a, P(8), RW), "mprotect A merge");
	TRY(mprotect(b + P(1), P(2), PROT_NONE), "mprotect B split");
	TRY(mprotect(b, P(4), RW), "mprotect B merge");
	return SEQ_OK;
}

static int seq_faulted_move_dontunmap_whole(void)
{
	char *a = base, *b = base + P(16), *c = base + P(32);
	int n;

	TRY(map_anon(a, 4, RW), "mmap A");
	touch(a, 4);
	TRY(move_to(a, 4, b, 0), "mremap A->B");
	TRY(move_to(b, 4, c, MREMAP_DONTUNMAP), "mremap B->C DONTUNMAP");
	TRY(map_anon(b + P(4), 4, RW), "mmap N after B");
	n = count_vmas(b, b + P(8), "B+N");
	printf("# seq %d: %d vma(s): 1 = DONTUNMAP reset the emptied B to pgoff B>>PAGE_SHIFT (recent stable and 7.3)\n",
	       cur_seq, n);
	TRY(mprotect(b + P(2), P(4), PROT_READ), "mprotect B split");
	TRY(mprotect(b, P(8), RW), "mprotect B merge");
	TRY(mprotect(c, P(2), PROT_READ), "mprotect C split");
	TRY(mprotect(c, P(4), RW), "mprotect C merge");
	return SEQ_OK;
}

static int seq_faulted_dontunmap_partial(void)
{
	char *a = base, *b = base + P(16), *c = base + P(32);

	TRY(map_anon(a, 4, RW), "mmap A");
	touch(a, 4);
	TRY(move_to(a, 4, b, 0), "mremap A->B");
	TRY(move_to(b, 2, c, MREMAP_DONTUNMAP), "mremap half of B->C DONTUNMAP");
	TRY(madvise(b, P(4), MADV_DONTNEED), "madvise(B, DONTNEED)");
	TRY(mprotect(b, P(2), PROT_READ), "mprotect B split");
	TRY(mprotect(b, P(4), RW), "mprotect B merge");
	TRY(mprotect(b + P(1), P(2), PROT_NONE), "mprotect B split middle");
	TRY(mprotect(b, P(4), RW), "mprotect B merge");
	TRY(map_anon(c + P(2), 2, RW), "mmap N after C");
	TRY(mprotect(c, P(4), PROT_READ), "mprotect C+N R");
	TRY(mprotect(c, P(4), RW), "mprotect C+N RW");
	return SEQ_OK;
}

static int seq_faulted_unfaulted_neighbours(void)
{
	char *u = base + P(16), *f = base + P(20), *s = base + P(32);

	/* Unfaulted U merging into faulted, unmoved F and back. */
	TRY(map_anon(u, 4, PROT_READ), "mmap U (R)");
	TRY(map_anon(f, 4, RW), "mmap F");
	touch(f, 4);
	TRY(mprotect(u, P(4), RW), "mprotect U RW (merge with F)");
	count_vmas(u, f + P(4), "U+F");
	TRY(mprotect(u + P(2), P(4), PROT_READ), "mprotect split");
	TRY(mprotect(u, P(8), RW), "mprotect merge");
	/* Faulted, moved (stale pgoff) S between unfaulted neighbours. */
	TRY(map_anon(base, 4, RW), "mmap S0");
	touch(base, 4);
	TRY(move_to(base, 4, s, 0), "mremap S0->S");
	TRY(map_anon(s + P(4), 4, RW), "mmap after S");
	TRY(map_anon(s - P(4), 4, RW), "mmap before S");
	count_vmas(s - P(4), s + P(8), "around S");
	TRY(mprotect(s - P(4), P(12), PROT_READ), "mprotect all R");
	TRY(mprotect(s - P(4), P(12), RW), "mprotect all RW");
	TRY(mprotect(s - P(2), P(8), PROT_NONE), "mprotect straddling");
	TRY(mprotect(s - P(4), P(12), RW), "mprotect all RW");
	return SEQ_OK;
}

static int child_merge_split_expand(char *b)
{
	mprotect(b, P(4), RW);
	mprotect(b + P(1), P(2), PROT_READ);
	mprotect(b, P(4), RW);
	mremap(b, P(4), P(8), 0);
	return 0;
}

static int seq_fork_no_wipe(void)
{
	char *b = base + P(16);
	int r = make_stale(base, 0, 0, 1, 0);

	if (r)
		return r;
	CHILD(in_child(child_merge_split_expand, b), "child");
	return SEQ_OK;
}

/* Linux 7.3 or newer: assert_sane_pgoff() exists. */
static int kernel_checks_pgoff(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return 0;
	return major > 7 || (major == 7 && minor >= 3);
}

static int child_probe(char *b)
{
	char *c = b + P(4);
	int n;

	if (map_anon(c, 4, RW) || madvise(c, P(4), MADV_WIPEONFORK))
		return 1;
	n = count_vmas(b + P(2), c + P(4), "child B2+C");
	return n < 0 ? 2 : 10 + n;
}

static int seq_probe(void)
{
	char *b = base + P(16);
	int r = make_stale(base, 0, 0, 1, 1), st;

	if (r)
		return r;
	st = in_child(child_probe, b);
	if (st < 10) {
		snprintf(skipmsg, sizeof(skipmsg), "child probe: status %d", st);
		return SEQ_FAIL;
	}
	printf("# seq %d: child: fresh C after its B2 %s -> B2 (no anon_vma) has %s pgoff\n",
	       cur_seq, st == 11 ? "merged" : "did not merge", st == 11 ? "a sane" : "a stale");
	/*
	 * Where the kernel checks the invariant (Linux 7.3 and newer), a stale pgoff is
	 * the bug, whether or not its one-shot warning was used up earlier in the boot;
	 * Linux 6.12's children keep it (only merges are lost there).
	 */
	if (st != 11 && kernel_checks_pgoff()) {
		snprintf(skipmsg, sizeof(skipmsg),
			 "the child's wipe-on-fork vma kept the parent's pgoff (needs scripts/patches/7.3/0005)");
		return SEQ_FAIL;
	}
	return SEQ_OK;
}

static int child_mprotect_whole(char *b)
{
	mprotect(b, P(4), RW);
	count_vmas(b, b + P(4), "child B");
	return 0;
}

static int child_mremap_expand(char *b)
{
	void *r = mremap(b, P(4), P(8), 0);

	printf("# seq %d:   child mremap expand: %s\n", cur_seq, r == b ? "ok" : strerror(errno));
	return 0;
}

static int child_mprotect_half(char *b)
{
	mprotect(b + P(2), P(2), PROT_READ);
	return 0;
}

static int run_stale(int dontunmap, int droppable, int split, int (*child)(char *))
{
	int r = make_stale(base, dontunmap, droppable, split, 1);

	if (r)
		return r;
	CHILD(in_child(child, base + P(16)), "child");
	return SEQ_OK;
}

static int seq_wipe_merge(void)
{
	return run_stale(0, 0, 1, child_mprotect_whole);
}

static int seq_wipe_dontunmap_merge(void)
{
	return run_stale(MREMAP_DONTUNMAP, 0, 1, child_mprotect_whole);
}

static int seq_droppable_merge(void)
{
	return run_stale(0, 1, 1, child_mprotect_whole);
}

static int seq_wipe_expand(void)
{
	return run_stale(0, 0, 0, child_mremap_expand);
}

static int seq_wipe_split(void)
{
	return run_stale(0, 0, 0, child_mprotect_half);
}

/* ---- the random phases ---- */

#define RS 6  /* slots */
#define RSP 4 /* pages per slot; the slots are adjacent */
#define LOGN 32

struct oplog {
	unsigned int n;
	char l[LOGN][112];
};

struct rctx {
	uint64_t s;
	struct oplog *log;
	int can_fork;
};

static char *rreg;
static struct oplog *chlog; /* MAP_SHARED: the last random child's operations */
static atomic_int rstop;
static uint64_t rseed;

static uint64_t rnext(struct rctx *c)
{
	c->s ^= c->s << 13;
	c->s ^= c->s >> 7;
	c->s ^= c->s << 17;
	return c->s;
}

static unsigned int below(struct rctx *c, unsigned int n)
{
	return (unsigned int)(rnext(c) % n);
}

static void logop(struct oplog *lg, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(lg->l[lg->n++ % LOGN], sizeof(lg->l[0]), fmt, ap);
	va_end(ap);
}

static void print_log(const char *who, struct oplog *lg, unsigned int last)
{
	unsigned int from = lg->n > last ? lg->n - last : 0;

	printf("# seq %d: last operations of %s:\n", cur_seq, who);
	for (unsigned int i = from; i < lg->n; i++)
		printf("# seq %d:   %s\n", cur_seq, lg->l[i % LOGN]);
}

static long rv(long r)
{
	return r < 0 ? -errno : r;
}

static void rand_op(struct rctx *c)
{
	static const int prots[] = { PROT_NONE, PROT_READ, RW };
	static const char *const pn[] = { "NONE", "R", "RW" };
	static const int advs[] = { MADV_DONTNEED, MADV_DONTNEED, MADV_FREE, MADV_WIPEONFORK,
				    MADV_KEEPONFORK, MADV_DONTFORK, MADV_DOFORK, MADV_POPULATE_WRITE };
	size_t len = P(RSP);
	int sl = (int)below(c, RS), to;
	char *p = rreg + (size_t)sl * len;
	long r;

	switch (below(c, c->can_fork ? 17 : 16)) {
	case 0: case 1:
		r = mmap(p, len, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED ?
			-errno : 0;
		logop(c->log, "mmap(s%d, RW anon) = %ld", sl, r);
		break;
	case 2:
		logop(c->log, "munmap(s%d) = %ld", sl, rv(munmap(p, len)));
		break;
	case 3: case 4: {
		int h = (int)below(c, 3), pi = (int)below(c, 3);
		char *q = p + (h == 2 ? len / 2 : 0);
		size_t l = h ? len / 2 : len;

		logop(c->log, "mprotect(s%d%s, %s) = %ld", sl, h == 0 ? "" : h == 1 ? " 1st half" :
		      " 2nd half", pn[pi], rv(mprotect(q, l, prots[pi])));
		break;
	}
	case 5: case 6: {
		size_t off = below(c, 10) < 7 ? 0 : P(below(c, RSP));
		int adv = advs[below(c, sizeof(advs) / sizeof(advs[0]))];

		logop(c->log, "madvise(s%d +%zuP, %d) = %ld", sl, off / pg, adv,
		      rv(madvise(p + off, len - off, adv)));
		break;
	}
	case 7: case 8: {
		int one = below(c, 2);
		size_t off = one ? P(below(c, RSP)) : 0;

		logop(c->log, "populate_write(s%d +%zuP, %zuP) = %ld", sl, off / pg,
		      one ? (size_t)1 : (size_t)RSP,
		      rv(madvise(p + off, one ? pg : len, MADV_POPULATE_WRITE)));
		break;
	}
	case 9: case 10: case 11: {
		int half = below(c, 4) == 0, du = below(c, 10) < 3;
		size_t l = half ? len / 2 : len;
		void *q;

		to = (int)below(c, RS);
		if (to == sl)
			break;
		q = mremap(p, l, l, MREMAP_MAYMOVE | MREMAP_FIXED | (du ? MREMAP_DONTUNMAP : 0),
			   rreg + (size_t)to * len);
		logop(c->log, "mremap(s%d, %zuP -> s%d%s) = %ld", sl, l / pg, to,
		      du ? ", DONTUNMAP" : "", q == MAP_FAILED ? (long)-errno : 0L);
		break;
	}
	case 12:
		logop(c->log, "mremap(s%d shrink to half) = %ld", sl,
		      mremap(p, len, len / 2, 0) == MAP_FAILED ? (long)-errno : 0L);
		break;
	case 13:
		logop(c->log, "mremap(s%d expand half to whole) = %ld", sl,
		      mremap(p, len / 2, len, 0) == MAP_FAILED ? (long)-errno : 0L);
		break;
	case 14:
		logop(c->log, "mprotect(s%d, RW) = %ld", sl, rv(mprotect(p, len, RW)));
		break;
	case 15: {
		int w = below(c, 2);

		logop(c->log, "madvise(s%d, %s) = %ld", sl, w ? "WIPEONFORK" : "KEEPONFORK",
		      rv(madvise(p, len, w ? MADV_WIPEONFORK : MADV_KEEPONFORK)));
		break;
	}
	default: {
		uint64_t cs = rnext(c) | 1;
		pid_t pid;
		int st;

		chlog->n = 0;
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			struct rctx cc = { .s = cs, .log = chlog, .can_fork = 0 };
			int n = 4 + (int)below(&cc, 20);

			alarm(20);
			for (int i = 0; i < n; i++)
				rand_op(&cc);
			_exit(0);
		}
		if (pid > 0)
			waitpid(pid, &st, 0);
		logop(c->log, "fork() = %d (child ops logged separately)", (int)pid);
		break;
	}
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int rand_setup(void)
{
	char *res = mmap(NULL, P(RS * RSP + 2), PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	TRY(res == MAP_FAILED, "mmap reservation");
	rreg = res + pg; /* a PROT_NONE guard page stays on each side */
	for (int i = 0; i < RS; i++)
		TRY(map_anon(rreg + P(i * RSP), RSP, RW), "mmap slot");
	return SEQ_OK;
}

static void rand_teardown(void)
{
	munmap(rreg - pg, P(RS * RSP + 2));
}

static int seq_random_single(void)
{
	static struct oplog plog;
	struct rctx c = { .s = rseed, .log = &plog, .can_fork = 1 };
	long long end = now_ms() + 3000;
	unsigned long ops = 0;
	int r = rand_setup();

	if (r)
		return r;
	printf("# seq %d: seed %#llx\n", cur_seq, (unsigned long long)rseed);
	while (now_ms() < end) {
		rand_op(&c);
		ops++;
		if (kmsg_scan() > 0) {
			printf("# seq %d: kernel report after operation %lu\n", cur_seq, ops);
			print_log("the process", &plog, LOGN);
			if (strncmp(plog.l[(plog.n - 1) % LOGN], "fork", 4) == 0)
				print_log("its last child", chlog, LOGN);
			break;
		}
	}
	printf("# seq %d: %lu operations\n", cur_seq, ops);
	rand_teardown();
	return SEQ_OK;
}

#define RTHREADS 3
static struct oplog tlog[RTHREADS];
static atomic_ulong tops;

static void *rand_thread(void *arg)
{
	int i = (int)(intptr_t)arg;
	struct rctx c = { .s = rseed * (2 * i + 3) | 1, .log = &tlog[i], .can_fork = i == 0 };

	while (!atomic_load(&rstop)) {
		rand_op(&c);
		atomic_fetch_add(&tops, 1);
	}
	return NULL;
}

static int seq_random_threads(void)
{
	pthread_t th[RTHREADS];
	long long end = now_ms() + 4000;
	int r = rand_setup(), n = 0, rep = 0;

	if (r)
		return r;
	printf("# seq %d: seed %#llx, %d threads (thread 0 forks)\n", cur_seq,
	       (unsigned long long)rseed, RTHREADS);
	fflush(stdout);
	atomic_store(&rstop, 0);
	for (; n < RTHREADS; n++)
		if (pthread_create(&th[n], NULL, rand_thread, (void *)(intptr_t)n))
			break;
	while (now_ms() < end) {
		usleep(50000);
		if (kmsg_scan() > 0) {
			rep = 1;
			break;
		}
	}
	atomic_store(&rstop, 1);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	if (rep) {
		printf("# seq %d: kernel report seen (within 50 ms of these operations)\n", cur_seq);
		for (int i = 0; i < n; i++) {
			char who[32];

			snprintf(who, sizeof(who), "thread %d", i);
			print_log(who, &tlog[i], 8);
		}
		print_log("thread 0's last child", chlog, LOGN);
	}
	printf("# seq %d: %lu operations\n", cur_seq, (unsigned long)atomic_load(&tops));
	rand_teardown();
	return SEQ_OK;
}

/* ---- driver ---- */

static const struct seq {
	const char *name;
	const char *what;
	int (*fn)(void);
} seqs[] = {
	{ "unfaulted_mremap_relocates", "control: mmap A; mremap A->B (unfaulted); mmap N after B; mprotect split/merge over B+N",
	  seq_unfaulted_move },
	{ "unfaulted_mremap_dontunmap", "control: mmap A; mremap A->B DONTUNMAP (unfaulted); mmap N after A; mprotect split/merge over A+N and B",
	  seq_unfaulted_dontunmap },
	{ "faulted_move_then_dontunmap_whole", "control: mmap+touch A; mremap A->B; mremap B->C DONTUNMAP (B emptied); mmap N after B; mprotect split/merge over B+N and C",
	  seq_faulted_move_dontunmap_whole },
	{ "faulted_dontunmap_partial", "control: mmap+touch A; mremap A->B; mremap half of B->C DONTUNMAP; MADV_DONTNEED B; mprotect split/merge over B, C+N",
	  seq_faulted_dontunmap_partial },
	{ "faulted_unfaulted_neighbours", "control: unfaulted U merging into faulted F; faulted moved S between unfaulted neighbours; mprotect over all",
	  seq_faulted_unfaulted_neighbours },
	{ "fork_without_wipeonfork", "control: mmap+touch A; mremap A->B; mprotect(1st half B, R); fork; child: mprotect(B, RW), split, mremap expand",
	  seq_fork_no_wipe },
	{ "wipeonfork_child_stale_pgoff_probe", "probe: as next, but the child maps fresh C after B2 + WIPEONFORK and checks whether C merges with B2 (no WARN expected)",
	  seq_probe },
	{ "wipeonfork_child_mprotect_merge", "regression (commit_merge->vma_set_range warned): mmap+touch A; mremap A->B; mprotect(1st half B, R); MADV_WIPEONFORK B; fork; child: mprotect(B, RW)",
	  seq_wipe_merge },
	{ "wipeonfork_dontunmap_child_mprotect_merge", "regression: as previous with mremap A->B MREMAP_DONTUNMAP",
	  seq_wipe_dontunmap_merge },
	{ "droppable_child_mprotect_merge", "regression: as previous with MAP_DROPPABLE (implies wipe-on-fork) instead of MADV_WIPEONFORK",
	  seq_droppable_merge },
	{ "wipeonfork_child_mremap_expand", "regression (vma_expand->commit_merge->vma_set_range warned): mmap+touch A; mremap A->B; WIPEONFORK; fork; child: mremap(B, 4P -> 8P in place)",
	  seq_wipe_expand },
	{ "wipeonfork_child_mprotect_split", "regression (__split_vma warned): mmap+touch A; mremap A->B; WIPEONFORK; fork; child: mprotect(2nd half B, R)",
	  seq_wipe_split },
	{ "random_single_thread", "random mmap/munmap/mprotect/madvise/populate/mremap(FIXED|DONTUNMAP)/fork on 6 adjacent 4-page slots, 3 s",
	  seq_random_single },
	{ "random_threads_fork", "random, 3 threads (one forking, children run random operations), 4 s",
	  seq_random_threads },
};

#define NSEQ ((int)(sizeof(seqs) / sizeof(seqs[0])))

static int want[NSEQ + 1], any_wanted;

static void parse_list(const char *s)
{
	while (s && *s) {
		char *e;
		long n = strtol(s, &e, 10);

		if (e == s)
			break;
		if (n >= 1 && n <= NSEQ) {
			want[n] = 1;
			any_wanted = 1;
		}
		s = *e == ',' ? e + 1 : e;
		if (*e != ',')
			break;
	}
}

static void parse_selection(int argc, char **argv)
{
	char line[4096], *tok, *save;
	FILE *f;

	if (argc > 1) {
		parse_list(argv[1]);
		return;
	}
	f = fopen("/proc/cmdline", "r");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f))
		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
			if (!strncmp(tok, "vma_pgoff.only=", 15))
				parse_list(tok + 15);
	fclose(f);
}

int main(int argc, char **argv)
{
	int total = 0, num = 0, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	pg = (size_t)sysconf(_SC_PAGESIZE);
	rseed = ((uint64_t)time(NULL) << 20 ^ (uint64_t)getpid()) | 1;
	parse_selection(argc, argv);
	chlog = mmap(NULL, sizeof(*chlog), RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (chlog == MAP_FAILED) {
		printf("KTAP version 1\n1..1\nnot ok 1 setup # mmap: %s\n", strerror(errno));
		return 1;
	}
	kmsg_rd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (kmsg_rd >= 0)
		lseek(kmsg_rd, 0, SEEK_END);

	for (int i = 1; i <= NSEQ; i++)
		total += !any_wanted || want[i];
	printf("KTAP version 1\n1..%d\n", total);
	if (kmsg_rd < 0)
		printf("# /dev/kmsg not readable (%s): kernel reports are not attributed here\n",
		       strerror(errno));
	printf("# WARN_ON_ONCE: only the first hit in mm/vma.c per boot is reported\n");

	for (int i = 1; i <= NSEQ; i++) {
		const struct seq *s = &seqs[i - 1];
		int r;

		if (any_wanted && !want[i])
			continue;
		num++;
		kmsg_scan(); /* anything before this sequence is not its doing */
		cur_seq = i;
		seq_reports = seq_quoted = 0;
		skipmsg[0] = 0;
		printf("# seq %d: %s: %s\n", i, s->name, s->what);
		fflush(stdout);
		kmsg_mark("vma_pgoff: seq %d (%s) starts\n", i, s->name);
		base = NULL;
		if (s->fn != seq_random_single && s->fn != seq_random_threads) {
			base = reserve(48);
			if (!base) {
				printf("not ok %d %s # reserve: %s\n", num, s->name, strerror(errno));
				continue;
			}
		}
		r = s->fn();
		if (base)
			munmap(base, P(48));
		usleep(100000);
		kmsg_scan();
		kmsg_mark("vma_pgoff: seq %d (%s) ends\n", i, s->name);
		failed += seq_reports > 0;
		failed += r == SEQ_FAIL && seq_reports == 0;
		if (seq_reports > 0)
			printf("not ok %d %s # %d kernel WARNING/BUG report(s) during this sequence\n",
			       num, s->name, seq_reports);
		else if (r == SEQ_FAIL)
			printf("not ok %d %s # %s\n", num, s->name, skipmsg);
		else if (r == SEQ_SKIP)
			printf("ok %d %s # SKIP %s\n", num, s->name, skipmsg);
		else if (kmsg_rd < 0)
			printf("ok %d %s # SKIP kernel log not readable here (the host scans it)\n",
			       num, s->name);
		else
			printf("ok %d %s\n", num, s->name);
	}
	return failed ? 1 : 0;
}
