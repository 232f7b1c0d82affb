// SPDX-License-Identifier: GPL-2.0
/*
 * Guest test of ai-kernel-rs batched TLB invalidation through /dev/aikrs_tlb (KTAP).
 *
 * The core case: reader threads pinned on every vCPU read the stamps of many mapped
 * buffers in a loop while the main thread revokes them all (batched, remapped to new
 * pages) again and again. After a revoke returns, the main thread publishes the new
 * phase; a read that began after a reader saw that phase must return the new
 * generation. A CPU that kept a stale translation would read the old page, which the
 * driver has poisoned by then: caught as "stale". The same runs the kernel's way (one
 * unmap_mapping_pages per buffer) and with two processes sharing the buffers (several
 * address spaces in one batch). Bad input gets an error code. The largest buffers the
 * ABI allows are created and revoked within a time limit, and a process revoking them
 * in a loop ends when killed.
 *
 * With aikrs.tlb_negative_control on the kernel command line (scripts/test.sh boots
 * one guest so) the batched revoke skips its flush: the test must then FAIL, which
 * proves it can see a missed flush.
 */
#include "tlb_user.h"
#include "../../tools/testing/aikrs/wait_child.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define NOFLUSH (1U << 31)

static int ntest, nfail;

static void result(int ok, const char *name, const char *why)
{
	ntest++;
	if (!ok)
		nfail++;
	printf("%s %d %s%s%s\n", ok ? "ok" : "not ok", ntest, name, ok || !why ? "" : " # ", ok || !why ? "" : why);
	fflush(stdout);
}

static int dev_open(void)
{
	int fd = open("/dev/aikrs_tlb", O_RDWR);

	if (fd < 0) {
		printf("# open /dev/aikrs_tlb: %s\n", strerror(errno));
		exit(1);
	}
	return fd;
}

/* ---- the stale-read check ---- */

struct shared {
	_Atomic unsigned int phase;	/* revokes completed */
	_Atomic int stop;
	_Atomic int child_ready;
	_Atomic int child_failed;	/* a process could not map the buffers */
	int sleepy;	/* readers sleep between passes: their CPUs go idle (lazy TLB) */
	_Atomic unsigned long stale, poison, reads, late;
	/* The revoking thread's own reads right after each revoke returned. */
	unsigned long self_reads, self_stale, self_poison;
};

struct reader {
	struct shared *s;
	struct tlbu_bufs *b;
	int cpu;
};

enum read_kind { READ_OK, READ_POISON, READ_STALE, READ_LATE };

/*
 * What value `v` read from buffer `i` after seeing phase `k` is. The generation after
 * k completed revokes is k + 1; a read begun after seeing phase k must return at least
 * k + 1 (later than k + 2 is not an error: the reader was preempted after loading the
 * phase).
 */
static enum read_kind classify(uint64_t v, unsigned int i, unsigned int k)
{
	unsigned int gen = (uint32_t)v;

	if (v == AIKRS_TLB_POISON)
		return READ_POISON;
	if (v >> 32 != i || gen < k + 1)
		return READ_STALE;
	return gen > k + 2 ? READ_LATE : READ_OK;
}

/* Reads every buffer in turn, counting what each read is (see classify()). */
static void read_loop(struct shared *s, struct tlbu_bufs *b)
{
	unsigned int i;

	while (!atomic_load(&s->stop)) {
		for (i = 0; i < b->n; i++) {
			unsigned int k = atomic_load_explicit(&s->phase, memory_order_acquire);

			atomic_fetch_add_explicit(&s->reads, 1, memory_order_relaxed);
			switch (classify(*b->map[i], i, k)) {
			case READ_POISON:
				atomic_fetch_add(&s->poison, 1);
				break;
			case READ_STALE:
				atomic_fetch_add(&s->stale, 1);
				break;
			case READ_LATE:
				atomic_fetch_add(&s->late, 1);
				break;
			case READ_OK:
				break;
			}
		}
		if (s->sleepy)
			usleep(300);
	}
}

static void *reader_fn(void *arg)
{
	struct reader *r = arg;

	tlbu_pin(r->cpu);
	read_loop(r->s, r->b);
	return NULL;
}

/*
 * `rounds` revokes of all `n` buffers with `flags`, readers on every CPU. With
 * `children` > 0, that many more processes map the same buffers (same open file) and
 * read too: one revoke then covers `children` + 1 address spaces.
 */
static int stale_check(const char *name, unsigned int n, unsigned int rounds,
		       unsigned int flags, int children, int sleepy, int expect_stale)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct shared *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pthread_t th[64];
	struct reader rd[64];
	struct tlbu_bufs b;
	unsigned int k;
	pid_t pid[16];
	int c, forked = 0;
	char why[512];
	int i, err = 0, ok;
	uint64_t ptes = 0, rnds = 0, ipis = 0;

	memset(s, 0, sizeof(*s));
	s->sleepy = sleepy;
	if (tlbu_create(&b, n)) {
		result(0, name, "create/mmap failed");
		return -1;
	}
	for (c = 0; c < children && c < 16; c++) {
		pid[c] = fork();
		if (pid[c] == 0) {
			/*
			 * Mappings are not inherited (VM_DONTCOPY): map the same buffers of
			 * the same open file again, in this address space of its own.
			 */
			struct tlbu_bufs cb = { .fd = b.fd, .n = n, .offset = b.offset };

			tlbu_pin((ncpu - 1 + c) % ncpu);
			if (tlbu_map(&cb)) {
				atomic_store(&s->child_failed, 1);
				atomic_fetch_add(&s->child_ready, 1);
				_exit(1);
			}
			atomic_fetch_add(&s->child_ready, 1);
			read_loop(s, &cb);
			_exit(0);
		}
		if (pid[c] < 0)
			break;
		forked++;
	}
	while (atomic_load(&s->child_ready) < forked)
		usleep(1000);
	if (forked < children || atomic_load(&s->child_failed)) {
		err = -ECHILD;
		printf("# %s: %d of %d processes forked, failed: %d\n", name, forked, children,
		       atomic_load(&s->child_failed));
	}
	for (i = 0; i < ncpu && i < 64; i++) {
		rd[i] = (struct reader){ .s = s, .b = &b, .cpu = i };
		pthread_create(&th[i], NULL, reader_fn, &rd[i]);
	}
	tlbu_pin(0);
	usleep(20000);
	for (k = 0; k < rounds && !err; k++) {
		struct aikrs_tlb_revoke r;
		volatile uint64_t sink = 0;

		/* This CPU's TLB holds every buffer's translation before the revoke... */
		for (i = 0; i < (int)n; i++)
			sink += *b.map[i];
		(void)sink;
		err = tlbu_revoke(b.fd, 0, n, flags, &r);
		ptes += r.ptes;
		rnds += r.rounds;
		ipis += r.ipis;
		atomic_store_explicit(&s->phase, k + 1, memory_order_release);
		/* ... and must not use it after (phase k + 1: generation k + 2 or later). */
		for (i = 0; !err && i < (int)n; i++) {
			enum read_kind r = classify(*b.map[i], i, k + 1);

			s->self_reads++;
			s->self_poison += r == READ_POISON;
			s->self_stale += r == READ_STALE;
		}
		usleep(2000);
	}
	usleep(20000);
	atomic_store(&s->stop, 1);
	for (i = 0; i < ncpu && i < 64; i++)
		pthread_join(th[i], NULL);
	for (c = 0; c < forked; c++)
		waitpid(pid[c], NULL, 0);
	/* The revoker's own stale reads count as the readers' do. */
	atomic_fetch_add(&s->stale, s->self_stale);
	atomic_fetch_add(&s->poison, s->self_poison);
	snprintf(why, sizeof(why),
		 "%lu reads, %lu stale, %lu poisoned, %lu late (revoker: %lu reads, %lu stale, "
		 "%lu poisoned), %llu ptes cleared, %llu rounds, %llu shootdown IPIs, err %d",
		 atomic_load(&s->reads), atomic_load(&s->stale), atomic_load(&s->poison),
		 atomic_load(&s->late), s->self_reads, s->self_stale, s->self_poison,
		 (unsigned long long)ptes, (unsigned long long)rnds, (unsigned long long)ipis, err);
	printf("# %s: %ld CPUs, %u buffers, %u revokes: %s\n", name, ncpu, n, rounds, why);
	if (expect_stale)
		ok = !err && atomic_load(&s->stale) + atomic_load(&s->poison) > 0;
	else
		ok = !err && !atomic_load(&s->stale) && !atomic_load(&s->poison) &&
		     atomic_load(&s->reads) > 0 &&
		     /* Batched: every revoke cleared entries in exactly one round. */
		     (!(flags & AIKRS_TLB_REVOKE_BATCHED) || (ptes > 0 && rnds == rounds));
	result(ok, name, why);
	tlbu_destroy(&b);
	munmap(s, sizeof(*s));
	return ok ? 0 : -1;
}

/* ---- bad input ---- */

#define EXPECT_ERR(call, e, what)                                                    \
	do {                                                                         \
		int __r = (call);                                                    \
		if (!(__r == -1 && errno == (e))) {                                  \
			printf("# %s: got %d errno %d, want errno %d\n", what, __r,  \
			       __r ? errno : 0, e);                                  \
			bad++;                                                       \
		}                                                                    \
	} while (0)

static void bad_input(void)
{
	struct aikrs_tlb_create c = { .count = 4, .pages = 1 };
	struct aikrs_tlb_revoke r;
	struct aikrs_tlb_stats st;
	int fd = dev_open(), bad = 0;
	void *p;

	/* Before CREATE nothing can be mapped or revoked. */
	memset(&r, 0, sizeof(r));
	r.count = 1;
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_REVOKE, &r), EINVAL, "revoke before create");
	p = mmap(NULL, TLBU_PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (p != MAP_FAILED || errno != EINVAL) {
		printf("# mmap before create: %p errno %d\n", p, errno);
		bad++;
	}
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, (void *)8), EFAULT, "create, bad pointer");
	EXPECT_ERR(ioctl(fd, _IOWR(AIKRS_TLB_IOC_MAGIC, 0x7f, struct aikrs_tlb_create), &c), ENOTTY,
		   "unknown command");
	c.count = 0;
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, &c), EINVAL, "zero buffers");
	c.count = AIKRS_TLB_MAX_BUFS + 1;
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, &c), EINVAL, "too many buffers");
	c.count = 4;
	c.pages = 0;
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, &c), EINVAL, "zero pages");
	c.pages = AIKRS_TLB_MAX_PAGES + 1;
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, &c), EINVAL, "too many pages");
	c.count = AIKRS_TLB_MAX_BUFS;
	c.pages = 2;
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, &c), EINVAL, "above the per-file page limit");
	c.count = 4;
	c.pages = 2;
	if (ioctl(fd, AIKRS_TLB_IOC_CREATE, &c)) {
		printf("# create: %s\n", strerror(errno));
		bad++;
	}
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_CREATE, &c), EBUSY, "second create");

	/* mmap: whole buffers only, shared only, inside the file's buffers. */
	p = mmap(NULL, 2 * TLBU_PAGE, PROT_READ, MAP_PRIVATE, fd, c.offset);
	if (p != MAP_FAILED) { printf("# private mapping accepted\n"); bad++; }
	p = mmap(NULL, TLBU_PAGE, PROT_READ, MAP_SHARED, fd, c.offset);
	if (p != MAP_FAILED) { printf("# half a buffer accepted\n"); bad++; }
	p = mmap(NULL, 2 * TLBU_PAGE, PROT_READ, MAP_SHARED, fd, c.offset + TLBU_PAGE);
	if (p != MAP_FAILED) { printf("# unaligned buffer offset accepted\n"); bad++; }
	p = mmap(NULL, 2 * TLBU_PAGE, PROT_READ, MAP_SHARED, fd, c.offset + 8 * TLBU_PAGE);
	if (p != MAP_FAILED) { printf("# offset past the buffers accepted\n"); bad++; }
	p = mmap(NULL, 2 * TLBU_PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (p != MAP_FAILED) { printf("# offset of another file accepted\n"); bad++; }

	/* revoke: range, flags, padding, pointer. */
	struct { unsigned int first, count, flags, pad; int e; const char *what; } cases[] = {
		{ 0, 0, AIKRS_TLB_REVOKE_BATCHED, 0, EINVAL, "count 0" },
		{ 4, 1, AIKRS_TLB_REVOKE_BATCHED, 0, EINVAL, "first past the end" },
		{ 1, 4, AIKRS_TLB_REVOKE_BATCHED, 0, EINVAL, "range past the end" },
		{ 1, 0xffffffffU, AIKRS_TLB_REVOKE_BATCHED, 0, EINVAL, "count overflows" },
		{ 0, 1, 1U << 5, 0, EINVAL, "unknown flag" },
		{ 0, 1, AIKRS_TLB_REVOKE_BATCHED, 1, EINVAL, "padding not zero" },
		{ 0, 1, AIKRS_TLB_REVOKE_REMAP, 1, EINVAL, "padding not zero, one by one" },
		{ 0, 1, NOFLUSH, 0, EINVAL, "no-flush without batching" },
	};
	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&r, 0, sizeof(r));
		r.first = cases[i].first;
		r.count = cases[i].count;
		r.flags = cases[i].flags;
		r.pad = cases[i].pad;
		EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_REVOKE, &r), cases[i].e, cases[i].what);
	}
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_REVOKE, (void *)16), EFAULT, "revoke, bad pointer");
	EXPECT_ERR(ioctl(fd, AIKRS_TLB_IOC_STATS, (void *)16), EFAULT, "stats, bad pointer");

	/* Nothing mapped: a batched revoke clears nothing and flushes nothing (no-op). */
	if (tlbu_revoke(fd, 0, 4, AIKRS_TLB_REVOKE_BATCHED, &r) || r.ptes || r.rounds) {
		printf("# revoke of unmapped buffers: ptes %llu rounds %llu\n",
		       (unsigned long long)r.ptes, (unsigned long long)r.rounds);
		bad++;
	}
	if (ioctl(fd, AIKRS_TLB_IOC_STATS, &st)) {
		printf("# stats: %s\n", strerror(errno));
		bad++;
	}
	close(fd);
	result(!bad, "bad_input", bad ? "see the lines above" : NULL);
}

/* A file closed while its buffers are mapped: the mappings keep working until unmapped. */
static void close_while_mapped(void)
{
	struct tlbu_bufs b;
	uint64_t v0, v1;
	int ok;

	if (tlbu_create(&b, 8)) {
		result(0, "close_while_mapped", "create failed");
		return;
	}
	v0 = *b.map[3];
	close(b.fd);
	v1 = *b.map[3];
	ok = v0 == ((3ULL << 32) | 1) && v1 == v0;
	for (unsigned int i = 0; i < b.n; i++)
		munmap((void *)b.map[i], TLBU_PAGE);
	free(b.map);
	result(ok, "close_while_mapped", ok ? NULL : "wrong stamp");
}

/* The counters move as documented: one round per batched revoke, requests merged. */
static void counters(void)
{
	struct aikrs_tlb_stats s0, s1;
	struct aikrs_tlb_revoke r;
	struct tlbu_bufs b;
	char why[200];
	int ok;

	if (tlbu_create(&b, 64)) {
		result(0, "counters", "create failed");
		return;
	}
	for (unsigned int i = 0; i < b.n; i++)
		(void)*b.map[i];
	ioctl(b.fd, AIKRS_TLB_IOC_STATS, &s0);
	tlbu_revoke(b.fd, 0, b.n, AIKRS_TLB_REVOKE_BATCHED, &r);
	ioctl(b.fd, AIKRS_TLB_IOC_STATS, &s1);
	snprintf(why, sizeof(why), "requests +%llu, rounds +%llu, revokes +%llu, ptes %llu",
		 (unsigned long long)(s1.requests - s0.requests),
		 (unsigned long long)(s1.rounds - s0.rounds),
		 (unsigned long long)(s1.revokes - s0.revokes), (unsigned long long)r.ptes);
	printf("# counters: %s\n", why);
	ok = s1.requests - s0.requests == 64 && s1.rounds - s0.rounds == 1 &&
	     s1.revokes - s0.revokes == 1 && r.ptes == 64 && r.rounds == 1 &&
	     s1.full + s1.per_page > s0.full + s0.per_page;
	tlbu_destroy(&b);
	result(ok, "counters", why);
}

/* ---- the largest arguments: bounded and killable ---- */

/*
 * Seconds the largest create and revokes may take together (the child's alarm): a
 * bound for a debug kernel (KASAN) under QEMU's TCG, where allocating and clearing
 * 3 x 256 MiB is slow; what the case rules out is work without end.
 */
#define LARGEST_S 150

/*
 * The most pages a file may have (AIKRS_TLB_MAX_FILE_PAGES: 256 MiB, as buffers of
 * AIKRS_TLB_MAX_PAGES pages), every 16th buffer mapped and read, then all of them
 * revoked and moved to new pages, batched and one by one. Exits 0 if every call
 * succeeded. With `forever`, revokes one by one until killed.
 */
static int largest_child(int forever)
{
	struct aikrs_tlb_create c = {
		.count = AIKRS_TLB_MAX_FILE_PAGES / AIKRS_TLB_MAX_PAGES,
		.pages = AIKRS_TLB_MAX_PAGES,
	};
	const size_t len = AIKRS_TLB_MAX_PAGES * TLBU_PAGE;
	int fd = dev_open();

	if (ioctl(fd, AIKRS_TLB_IOC_CREATE, &c))
		return 1;
	for (unsigned int i = 0; i < c.count; i += 16) {
		volatile uint64_t *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd,
					    c.offset + i * len);

		if (p == MAP_FAILED)
			return 2;
		for (size_t j = 0; j < len / sizeof(*p); j += TLBU_PAGE / sizeof(*p))
			(void)p[j];
	}
	do {
		if (tlbu_revoke(fd, 0, c.count, AIKRS_TLB_REVOKE_BATCHED | AIKRS_TLB_REVOKE_REMAP,
				NULL))
			return 3;
		if (tlbu_revoke(fd, 0, c.count, AIKRS_TLB_REVOKE_REMAP, NULL))
			return 4;
	} while (forever);
	return 0;
}

static void largest_args(void)
{
	int status, ok;
	struct timespec t0, t1;
	pid_t pid;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();

	if (pid == 0) {
		alarm(LARGEST_S);
		_exit(largest_child(0));
	}
	ok = wait_ms(pid, (LARGEST_S + 5) * 1000, &status);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("# largest_args: %.1f s (alarm at %d s)\n",
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, LARGEST_S);
	if (!ok) {
		kill(pid, SIGKILL);
		wait_ms(pid, 5000, &status);
		result(0, "largest_args", "still running after its alarm (not killable)");
	} else if (WIFSIGNALED(status)) {
		result(0, "largest_args", WTERMSIG(status) == SIGALRM ?
		       "took longer than its alarm" : "ended by a signal");
	} else {
		ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (!ok)
			printf("# largest_args: exit status %d\n", WEXITSTATUS(status));
		result(ok, "largest_args", ok ? NULL : "a call failed");
	}
}

/* A child revoking the largest buffers in a loop is killed after 1 s: it must end. */
static void killable_revoke(void)
{
	int status, ok;
	pid_t pid = fork();

	if (pid == 0)
		_exit(largest_child(1));
	sleep(1);
	kill(pid, SIGKILL);
	ok = wait_ms(pid, 5000, &status);
	if (ok && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
		/* It ended (a call failed) before the kill: killability was not shown. */
		printf("# killable_revoke: ended by itself first (status %#x)\n", status);
		result(0, "killable_revoke", "ended before the SIGKILL: a revoke failed");
		return;
	}
	result(ok, "killable_revoke", ok ? NULL : "still running 5 s after SIGKILL");
}

int main(int argc, char **argv)
{
	unsigned int B = AIKRS_TLB_REVOKE_BATCHED, R = AIKRS_TLB_REVOKE_REMAP;

	char cmdline[4096] = "";
	FILE *f = fopen("/proc/cmdline", "r");

	if (f) {
		if (!fgets(cmdline, sizeof(cmdline), f))
			cmdline[0] = 0;
		fclose(f);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("KTAP version 1\n");
	if ((argc > 1 && !strcmp(argv[1], "negative")) ||
	    strstr(cmdline, "aikrs.tlb_negative_control")) {
		printf("1..1\n");
		stale_check("negative_control_noflush", 256, 20, B | R | NOFLUSH, 0, 0, 0);
		return nfail ? 1 : 0;
	}
	printf("1..11\n");
	stale_check("batched_revoke_no_stale_read", 256, 30, B | R, 0, 0, 0);
	stale_check("batched_revoke_small_per_page", 8, 30, B | R, 0, 0, 0);
	stale_check("batched_revoke_sleepy_readers", 64, 30, B | R, 0, 1, 0);
	stale_check("batched_revoke_two_processes", 64, 20, B | R, 1, 0, 0);
	/*
	 * Nine address spaces in each batch: the batch's list of them grows beyond its
	 * first four entries under the mapping's i_mmap_rwsem, where an allocation that
	 * may reclaim is a lock order inversion (lockdep on the debug kernels).
	 */
	stale_check("batched_revoke_nine_processes", 16, 10, B | R, 8, 0, 0);
	stale_check("one_by_one_revoke_no_stale_read", 64, 10, R, 0, 0, 0);
	bad_input();
	close_while_mapped();
	counters();
	largest_args();
	killable_revoke();
	return nfail ? 1 : 0;
}
