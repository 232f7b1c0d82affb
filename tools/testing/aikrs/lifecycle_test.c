// SPDX-License-Identifier: GPL-2.0
/*
 * Lifecycle of our modules (KTAP): each one is loaded and unloaded 50 times
 * (aikrs.lifecycle_rounds=N), with its devices open and in use between the loads.
 * Every round loads the module, opens its device, makes it do real work, asks for the
 * module's removal while the device is open or in use (delete_module with O_NONBLOCK,
 * as rmmod: it must be refused with EAGAIN/EBUSY; the file holds the module through
 * fops.owner, so a removal that succeeds is a bug and fails the round, after a call on
 * the old file has shown whether it at least fails cleanly), releases the device,
 * unloads the module (which must succeed) and checks it is gone, with its device node:
 *
 * - aikrs_hmm: a buffer migrated to device memory of /dev/aikrs_hmm0 and read back by
 *   the device; removal refused with both devices open, then with one; then both closed
 *   with the buffer still in device memory: the unload must move it back to system
 *   memory (its exit evicts every device page), and the CPU then reads every byte;
 * - aikrs_tlb: buffers created, mapped, read and revoked (batched, to new pages);
 *   removal refused with the file open, then with the file closed but its buffers
 *   still mapped (a mapping holds the file), which keep working; unload after munmap;
 * - aikrs_iova: a domain of /dev/aikrs_iova with live and cached ranges; removal refused
 *   while it is open; the file closed with ranges still allocated;
 * - aikrs_gang: the workload of /dev/aikrs_gang running; removal refused while the
 *   command is in flight; every job completed.
 *
 * The first round of aikrs_iova and aikrs_gang also checks their ioctls' errors (EINVAL
 * for bad input or no domain yet, EBUSY for a second domain, EFAULT for a bad pointer,
 * ENOTTY for an unknown command).
 *
 * A module without its device (an older build) is loaded and unloaded bare, and says so.
 * /init has loaded the modules when the tests run: each is unloaded first, and loaded
 * again at the end if it was loaded at the start. KUnit's filter is set so that these
 * loads do not run the modules' KUnit suites (/init runs them at its own loads), and put
 * back as found. Each module runs in a child process with a watchdog.
 */
#include "kmod.h"
#include "wait_child.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "../../../mm/aikrs_hmm/hmm_user.h"
#include "../../../mm/aikrs_tlb/aikrs_tlb_uapi.h"
#include "../../../drivers/iommu/aikrs_iova/aikrs_iova_uapi.h"
#include "../../../drivers/gpu/drm/aikrs_gang/aikrs_gang_uapi.h"

#define PAGE 4096UL
/* Seconds a module's rounds may take before the watchdog fails them. */
#define WATCHDOG_S 300

/* What the rounds saw (per module, in the child). */
static struct {
	int refused;	/* removals refused while in use */
	int unloaded;	/* removals that succeeded while in use (each fails its round) */
	int bare;	/* rounds without the device (not in this build) */
	unsigned long work; /* units of work done (pages migrated, revokes, ranges, jobs) */
} st;

static int opendev(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		printf("# open %s: %s\n", path, strerror(errno));
	return fd;
}

static int load_live(const char *name)
{
	int r = kmod_load(name);

	if (r) {
		printf("# load %s: %s\n", name, strerror(-r));
		return -1;
	}
	if (kmod_state(name, NULL) != KMOD_LIVE) {
		printf("# %s loaded but not live\n", name);
		return -1;
	}
	return 0;
}

/*
 * Asks for the removal of `name` while it is in use (`when`): 0 if refused (and still
 * live), 1 if it went, -1 else. Both 1 and -1 fail the round: a file or a mapping holds
 * the module (fops.owner), so it must not go. On 1 the caller still makes a call on the
 * old file, to report whether it fails cleanly or crashes, and waits for the module to
 * be gone.
 */
static int expect_refused(const char *name, const char *when)
{
	int r = kmod_unload(name);
	long refs;

	if (r == 0) {
		st.unloaded++;
		printf("# %s: removal while %s succeeded, but the file holds the module: "
		       "fops.owner is not set or not honoured\n", name, when);
		return 1;
	}
	if (r != -EAGAIN && r != -EBUSY) {
		printf("# %s: removal while %s: %s (want EAGAIN or EBUSY)\n", name, when,
		       strerror(-r));
		return -1;
	}
	if (kmod_state(name, &refs) != KMOD_LIVE || refs < 1) {
		printf("# %s: refused while %s, but not live with references (refcnt %ld)\n",
		       name, when, refs);
		return -1;
	}
	st.refused++;
	return 0;
}

/*
 * The module went while `fd` was open (already a failure): a call on the old file, to
 * report whether it at least fails rather than crashes. Always -1, the round's result.
 */
static int report_old_file(int fd, unsigned long req, void *arg)
{
	int r = ioctl(fd, req, arg);

	printf("# ioctl on the old file after the module went: %d (%s)\n", r,
	       r ? strerror(errno) : "succeeded");
	return -1;
}

/* A call that must fail with `want` (`what` says which): 0 if it does, -1 else. */
static int expect_errno(int fd, unsigned long req, void *arg, int want, const char *what)
{
	int r = ioctl(fd, req, arg);

	if (r == 0 || errno != want) {
		printf("# %s: %s, want %s\n", what, r ? strerror(errno) : "succeeded",
		       strerror(want));
		return -1;
	}
	return 0;
}

/* An address no test maps: an argument user space cannot read or write. */
#define BAD_PTR ((void *)8)

/* Unloads `name` (nothing holds it any more): it must go, with its device node. */
static int unload_gone(const char *name, const char *node)
{
	int r = kmod_unload_wait(name, 2000);

	if (r) {
		printf("# unload %s: %s\n", name, strerror(-r));
		return -1;
	}
	if (!kmod_wait_gone(name, 2000)) {
		printf("# %s still in /proc/modules after its unload\n", name);
		return -1;
	}
	for (int t = 0; node && access(node, F_OK) == 0; t += 10) {
		if (t >= 2000) {
			printf("# %s still exists after the unload\n", node);
			return -1;
		}
		usleep(10000);
	}
	return 0;
}

static void fill(unsigned char *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = (uint64_t)seed << 40 | i;

		memcpy(p + i, &v, 8);
	}
}

static int same(const unsigned char *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = (uint64_t)seed << 40 | i, w;

		memcpy(&w, p + i, 8);
		if (w != v) {
			printf("# byte %zu: %#llx, want %#llx\n", i, (unsigned long long)w,
			       (unsigned long long)v);
			return 0;
		}
	}
	return 1;
}

/* ---- aikrs_hmm ---- */

static int hmm_cmd(int fd, unsigned long req, void *addr, void *ptr, uint64_t n,
		   struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd c = { .addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr, .npages = n };
	int r = ioctl(fd, req, &c) ? -errno : 0;

	if (out)
		*out = c;
	return r;
}

static int round_hmm(int round)
{
	const char *name = "aikrs_hmm";
	const size_t n = 16, len = n * PAGE;
	unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *out = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct hmm_dmirror_cmd c;
	int fd0 = -1, fd1 = -1, ret = -1, r;

	if (buf == MAP_FAILED || out == MAP_FAILED) {
		printf("# mmap: %s\n", strerror(errno));
		return -1;
	}
	fill(buf, len, round + 1);
	if (load_live(name))
		goto out;
	fd0 = opendev("/dev/aikrs_hmm0");
	fd1 = opendev("/dev/aikrs_hmm1");
	if (fd0 < 0 || fd1 < 0)
		goto out;
	r = hmm_cmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, buf, out, n, &c);
	if (r || c.cpages != n) {
		printf("# migrate to device: %d, %llu of %zu pages\n", r,
		       (unsigned long long)c.cpages, n);
		goto out;
	}
	memset(out, 0, len);
	r = hmm_cmd(fd0, HMM_DMIRROR_READ, buf, out, n, &c);
	if (r || c.cpages != n || !same(out, len, round + 1)) {
		printf("# device read of device memory: %d, %llu pages\n", r,
		       (unsigned long long)c.cpages);
		goto out;
	}
	st.work += n;
	r = expect_refused(name, "both devices are open, memory migrated");
	if (r == 1) {
		ret = report_old_file(fd0, HMM_DMIRROR_READ, &c);
		goto out_gone;
	}
	if (r)
		goto out;
	close(fd0);
	fd0 = -1;
	r = expect_refused(name, "one device is open");
	if (r == 1) {
		ret = report_old_file(fd1, HMM_DMIRROR_READ, &c);
		goto out_gone;
	}
	if (r)
		goto out;
	close(fd1);
	fd1 = -1;
	/* The buffer is still in device memory: the module's exit must move it back. */
	if (unload_gone(name, "/dev/aikrs_hmm0"))
		goto out;
	if (!same(buf, len, round + 1)) {
		printf("# the buffer lost its data when the module went\n");
		goto out;
	}
	ret = 0;
	goto out;
out_gone:
	if (!kmod_wait_gone(name, 2000))
		ret = -1;
out:
	if (fd0 >= 0)
		close(fd0);
	if (fd1 >= 0)
		close(fd1);
	munmap(buf, len);
	munmap(out, len);
	return ret;
}

/* ---- aikrs_tlb ---- */

static int round_tlb(int round)
{
	const char *name = "aikrs_tlb";
	enum { N = 8 };
	struct aikrs_tlb_create cr = { .count = N, .pages = 1 };
	struct aikrs_tlb_revoke rv = { .first = 0, .count = N,
				       .flags = AIKRS_TLB_REVOKE_BATCHED | AIKRS_TLB_REVOKE_REMAP };
	volatile uint64_t *map[N] = { 0 };
	int fd = -1, ret = -1, r, i;

	(void)round;
	if (load_live(name))
		return -1;
	fd = opendev("/dev/aikrs_tlb");
	if (fd < 0)
		goto out;
	if (ioctl(fd, AIKRS_TLB_IOC_CREATE, &cr)) {
		printf("# create: %s\n", strerror(errno));
		goto out;
	}
	for (i = 0; i < N; i++) {
		void *p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, cr.offset + i * PAGE);

		if (p == MAP_FAILED) {
			printf("# mmap buffer %d: %s\n", i, strerror(errno));
			goto out;
		}
		map[i] = p;
		if (*map[i] != ((uint64_t)i << 32 | 1)) {
			printf("# buffer %d: stamp %#llx\n", i, (unsigned long long)*map[i]);
			goto out;
		}
	}
	if (ioctl(fd, AIKRS_TLB_IOC_REVOKE, &rv) || rv.ptes != N) {
		printf("# revoke: %s, %llu entries cleared\n", strerror(errno),
		       (unsigned long long)rv.ptes);
		goto out;
	}
	for (i = 0; i < N; i++) {
		if (*map[i] != ((uint64_t)i << 32 | 2)) {
			printf("# buffer %d after the revoke: stamp %#llx\n", i,
			       (unsigned long long)*map[i]);
			goto out;
		}
	}
	st.work += N;
	r = expect_refused(name, "the device is open, buffers mapped");
	if (r == 1) {
		struct aikrs_tlb_stats s;

		ret = report_old_file(fd, AIKRS_TLB_IOC_STATS, &s);
		goto out_gone;
	}
	if (r)
		goto out;
	close(fd);
	fd = -1;
	/* The mappings hold the file, and so the module; they keep working. */
	if (*map[3] != ((uint64_t)3 << 32 | 2)) {
		printf("# buffer 3 after close: stamp %#llx\n", (unsigned long long)*map[3]);
		goto out;
	}
	r = expect_refused(name, "the device is closed but its buffers are mapped");
	if (r == 1) {
		printf("# the module went while its buffers were mapped\n");
		goto out_gone;
	}
	if (r)
		goto out;
	for (i = 0; i < N; i++) {
		munmap((void *)map[i], PAGE);
		map[i] = NULL;
	}
	ret = unload_gone(name, "/dev/aikrs_tlb");
	goto out;
out_gone:
	if (!kmod_wait_gone(name, 2000))
		ret = -1;
out:
	for (i = 0; i < N; i++)
		if (map[i])
			munmap((void *)map[i], PAGE);
	if (fd >= 0)
		close(fd);
	return ret;
}

/* ---- aikrs_iova ---- */

static int round_iova(int round)
{
	const char *name = "aikrs_iova", *node = "/dev/aikrs_iova";
	struct aikrs_iova_create cr = { .start = 1, .limit = 4095, .max_live = 256,
					.flags = AIKRS_IOVA_CREATE_CACHE };
	struct aikrs_iova_range a[20];
	struct aikrs_iova_stats s;
	int fd = -1, ret = -1, r, i;

	if (load_live(name))
		return -1;
	if (access(node, F_OK)) {
		st.bare++;
		return unload_gone(name, NULL);
	}
	fd = opendev(node);
	if (fd < 0)
		goto out;
	/* The first round also checks the ABI's errors (aikrs_iova_uapi.h). */
	if (round == 0) {
		struct aikrs_iova_create bad = cr;
		struct aikrs_iova_range rg = { .size = 1, .limit = 4095 };

		bad.flags = 1U << 1;
		if (expect_errno(fd, AIKRS_IOVA_IOC_ALLOC, &rg, EINVAL, "alloc before create") ||
		    expect_errno(fd, AIKRS_IOVA_IOC_STATS, &s, EINVAL, "stats before create") ||
		    expect_errno(fd, AIKRS_IOVA_IOC_CREATE, &bad, EINVAL, "create, unknown flag") ||
		    expect_errno(fd, AIKRS_IOVA_IOC_CREATE, BAD_PTR, EFAULT, "create, bad pointer") ||
		    expect_errno(fd, _IO(AIKRS_IOVA_IOC_MAGIC, 0x7f), NULL, ENOTTY,
				 "unknown command"))
			goto out;
	}
	if (ioctl(fd, AIKRS_IOVA_IOC_CREATE, &cr)) {
		printf("# create: %s\n", strerror(errno));
		goto out;
	}
	if (round == 0 &&
	    (expect_errno(fd, AIKRS_IOVA_IOC_CREATE, &cr, EBUSY, "second create") ||
	     expect_errno(fd, AIKRS_IOVA_IOC_STATS, BAD_PTR, EFAULT, "stats, bad pointer") ||
	     expect_errno(fd, AIKRS_IOVA_IOC_ALLOC, BAD_PTR, EFAULT, "alloc, bad pointer")))
		goto out;
	for (i = 0; i < 20; i++) {
		a[i] = (struct aikrs_iova_range){ .size = i < 16 ? 1 : 16, .limit = 4095 };
		if (ioctl(fd, AIKRS_IOVA_IOC_ALLOC, &a[i])) {
			printf("# alloc %d: %s\n", i, strerror(errno));
			goto out;
		}
	}
	/* Half of the one-page ranges go to this CPU's magazine. */
	for (i = 0; i < 8; i++) {
		if (ioctl(fd, AIKRS_IOVA_IOC_FREE, &a[i])) {
			printf("# free %d: %s\n", i, strerror(errno));
			goto out;
		}
	}
	if (ioctl(fd, AIKRS_IOVA_IOC_STATS, &s) || s.allocations != 20 || s.bad_frees) {
		printf("# stats: %llu allocations, %llu bad frees\n",
		       (unsigned long long)s.allocations, (unsigned long long)s.bad_frees);
		goto out;
	}
	st.work += 20;
	r = expect_refused(name, "the device is open, ranges allocated");
	if (r == 1) {
		ret = report_old_file(fd, AIKRS_IOVA_IOC_STATS, &s);
		goto out_gone;
	}
	if (r)
		goto out;
	/* Closed with 12 ranges allocated and 8 cached: the domain goes with the file. */
	close(fd);
	fd = -1;
	ret = unload_gone(name, node);
	goto out;
out_gone:
	if (!kmod_wait_gone(name, 2000))
		ret = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

/* ---- aikrs_gang ---- */

struct gang_run {
	int fd;
	_Atomic int started;
	int err;
	struct aikrs_gang_run run;
};

static void *gang_thread(void *arg)
{
	struct gang_run *g = arg;

	atomic_store(&g->started, 1);
	g->err = ioctl(g->fd, AIKRS_GANG_IOC_RUN, &g->run) ? errno : 0;
	return NULL;
}

static void on_alarm(int sig)
{
	(void)sig;
}

/*
 * A RUN under a periodic signal whose handler has SA_RESTART must end with EINTR: a
 * restarted RUN starts its workload over, so a signal every 20 ms (SIGPROF, a timer)
 * would keep it from ever finishing. In a child, waited for with a bound: 0 if it
 * did, -1 otherwise.
 */
static int gang_no_restart(int fd)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
		struct itimerval it = { { 0, 20000 }, { 0, 20000 } };
		struct aikrs_gang_run r = { .steps = AIKRS_GANG_MAX_STEPS };

		sigaction(SIGALRM, &sa, NULL);
		setitimer(ITIMER_REAL, &it, NULL);
		if (ioctl(fd, AIKRS_GANG_IOC_RUN, &r) == 0)
			_exit(2);
		_exit(errno == EINTR ? 0 : 3);
	}
	if (!wait_ms(pid, 60000, &status)) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		printf("# run under a periodic SA_RESTART signal: still running after 60 s\n");
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("# run under a periodic SA_RESTART signal: %s\n",
		       !WIFEXITED(status) ? "child killed" :
		       WEXITSTATUS(status) == 2 ? "succeeded (not interrupted at all)" :
		       "failed with another error than EINTR");
		return -1;
	}
	return 0;
}

static int round_gang(int round)
{
	const char *name = "aikrs_gang", *node = "/dev/aikrs_gang";
	struct gang_run g = { .run = { .steps = 2, .decodes = 0 } };
	pthread_t th;
	int ret = -1, r, i;

	if (load_live(name))
		return -1;
	if (access(node, F_OK)) {
		st.bare++;
		return unload_gone(name, NULL);
	}
	g.fd = opendev(node);
	if (g.fd < 0)
		goto out;
	/* The first round also checks the ABI's errors (aikrs_gang_uapi.h). */
	if (round == 0) {
		struct aikrs_gang_run big = { .steps = AIKRS_GANG_MAX_STEPS + 1 };
		struct aikrs_gang_run many = { .steps = 1, .decodes = AIKRS_GANG_MAX_DECODES + 1 };
		struct aikrs_gang_run none = { .steps = 0 };

		if (expect_errno(g.fd, AIKRS_GANG_IOC_RUN, &big, EINVAL, "run, too many steps") ||
		    expect_errno(g.fd, AIKRS_GANG_IOC_RUN, &many, EINVAL, "run, too many decodes") ||
		    expect_errno(g.fd, AIKRS_GANG_IOC_RUN, &none, EINVAL, "run, no step") ||
		    expect_errno(g.fd, AIKRS_GANG_IOC_RUN, BAD_PTR, EFAULT, "run, bad pointer") ||
		    expect_errno(g.fd, _IO(AIKRS_GANG_IOC_MAGIC, 0x7f), NULL, ENOTTY,
				 "unknown command") ||
		    gang_no_restart(g.fd))
			goto out;
	}
	if (pthread_create(&th, NULL, gang_thread, &g)) {
		printf("# pthread_create failed\n");
		goto out;
	}
	while (!atomic_load(&g.started))
		usleep(1000);
	usleep(5000);
	/* The workload is (very likely) in flight now; the file is open in any case. */
	r = expect_refused(name, "the device is open, a workload running");
	pthread_join(th, NULL);
	if (r == 1) {
		struct aikrs_gang_run bad = { .steps = 0 };

		ret = report_old_file(g.fd, AIKRS_GANG_IOC_RUN, &bad);
		goto out_gone;
	}
	if (r)
		goto out;
	if (g.err) {
		printf("# run: %s\n", strerror(g.err));
		goto out;
	}
	for (i = 0; i < 2; i++) {
		if (g.run.jobs_run[i] != g.run.jobs_expected ||
		    g.run.gangs_started[i] != g.run.steps) {
			printf("# run %d: %llu of %llu jobs started, %llu of %u gangs\n", i,
			       (unsigned long long)g.run.jobs_run[i],
			       (unsigned long long)g.run.jobs_expected,
			       (unsigned long long)g.run.gangs_started[i], g.run.steps);
			goto out;
		}
	}
	st.work += 2 * g.run.jobs_expected;
	close(g.fd);
	g.fd = -1;
	ret = unload_gone(name, node);
	goto out;
out_gone:
	if (!kmod_wait_gone(name, 2000))
		ret = -1;
out:
	if (g.fd >= 0)
		close(g.fd);
	return ret;
}

/* ---- the driver ---- */

struct mod {
	const char *name;
	int (*round)(int round);
	const char *work; /* what st.work counts */
};

static const struct mod mods[] = {
	{ "aikrs_hmm", round_hmm, "pages migrated to device memory" },
	{ "aikrs_tlb", round_tlb, "buffers revoked" },
	{ "aikrs_iova", round_iova, "ranges allocated" },
	{ "aikrs_gang", round_gang, "jobs run" },
};

/* The child: `rounds` rounds of module `m`, which is not loaded when this starts. */
static int run_rounds(const struct mod *m, int rounds)
{
	double t0 = kmod_now();
	int r;

	for (r = 0; r < rounds; r++) {
		if (m->round(r)) {
			printf("# %s: round %d of %d failed\n", m->name, r + 1, rounds);
			break;
		}
	}
	printf("# %s: %d of %d rounds in %.1f s (%.2f s each); removal refused %d times while "
	       "in use, allowed %d times; %lu %s%s\n",
	       m->name, r, rounds, kmod_now() - t0, r ? (kmod_now() - t0) / r : 0.0, st.refused,
	       st.unloaded, st.work, m->work,
	       st.bare ? " (no device in this build: loaded and unloaded bare)" : "");
	return r == rounds ? 0 : 1;
}

int main(void)
{
	int rounds = kmod_param_long("aikrs.lifecycle_rounds", 50), failed = 0;
	struct kunit_filter kf;
	unsigned int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("KTAP version 1\n1..%zu\n", sizeof(mods) / sizeof(mods[0]));
	kunit_filter_off(&kf);
	for (i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
		const struct mod *m = &mods[i];
		enum kmod_state s0 = kmod_state(m->name, NULL);
		int loaded = s0 != KMOD_ABSENT, status = 0, ok, done;
		pid_t pid;

		if (!kmod_wanted(m->name)) {
			printf("ok %u lifecycle_%s # SKIP not in aikrs.modules\n", i + 1, m->name);
			continue;
		}
		if (!kmod_have(m->name)) {
			printf("ok %u lifecycle_%s # SKIP no /lib/modules/%s.ko (built in?)\n", i + 1,
			       m->name, m->name);
			continue;
		}
		if (loaded && kmod_unload_wait(m->name, 5000)) {
			printf("# %s: loaded, and could not be unloaded to begin (in use?)\n",
			       m->name);
			printf("not ok %u lifecycle_%s\n", i + 1, m->name);
			failed++;
			continue;
		}
		fflush(stdout);
		pid = fork();
		if (pid == 0)
			_exit(run_rounds(m, rounds));
		done = pid > 0 && wait_ms(pid, WATCHDOG_S * 1000, &status);
		if (pid > 0 && !done) {
			printf("# %s: still running after %d s: killed\n", m->name, WATCHDOG_S);
			kill(pid, SIGKILL);
			wait_ms(pid, 5000, &status);
		}
		ok = done && WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (done && WIFSIGNALED(status))
			printf("# %s: the rounds ended by signal %d\n", m->name, WTERMSIG(status));
		/* Back as found. */
		if (loaded && kmod_state(m->name, NULL) == KMOD_ABSENT && load_live(m->name)) {
			printf("# %s: could not be loaded again at the end\n", m->name);
			ok = 0;
		}
		if (!loaded && kmod_state(m->name, NULL) != KMOD_ABSENT &&
		    kmod_unload_wait(m->name, 5000))
			ok = 0;
		printf("%sok %u lifecycle_%s\n", ok ? "" : "not ", i + 1, m->name);
		failed += !ok;
	}
	kunit_filter_restore(&kf);
	return failed ? 1 : 0;
}
