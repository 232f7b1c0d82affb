// SPDX-License-Identifier: GPL-2.0
/*
 * CPU hotplug under load (KTAP): a vCPU (1, or aikrs.hotplug_cpu=N) goes offline and
 * online again, several times (aikrs.hotplug_cycles=N, default 5), while our modules
 * work, and nothing may be lost.
 *
 * 1. iova_offline_cpu_magazines: a domain of /dev/aikrs_iova, filled and emptied from
 *    the CPU, leaves ranges in that CPU's magazines; the CPU goes offline, and the
 *    domain's count of cached ranges must drop (the statistics count the magazines of
 *    online CPUs only, and the depot does not change: so the CPU really had ranges
 *    parked, or the case would prove nothing); then the whole domain must be allocatable
 *    from CPU 0 (no ENOSPC while free space sits in an offline CPU's magazines: the
 *    allocator's hotplug callback gives them back), and after freeing and draining every
 *    page must be free again. The planted bug aikrs.planted_bug=iova_hotplug (no
 *    callback) must fail this case.
 * 2. iova_stress_during_hotplug: threads allocate and free mixed sizes through the
 *    per-CPU magazines of every CPU while the CPU goes offline and online; every page
 *    handed out is claimed in a shared array with compare-and-swap (an overlap is caught
 *    at once), every range honours the alignment and limit, no call fails but with
 *    ENOSPC, and at the end every allocation was freed and, drained, the domain is whole
 *    (all pages free, no live or lost range, no refused free).
 * 3. gang_workload_during_hotplug: the gang benchmark's workload (/dev/aikrs_gang: gangs
 *    of 8 on 8 model rings with dependencies and competing jobs, then decodes preempting
 *    prefills) runs again and again while the CPU goes offline and online: every run
 *    must complete every job (a job not done within 10 s fails it), every job and every
 *    gang must have started, and drm_sched must hold no job afterwards.
 * 4. cpus_online_at_end: every CPU online at the start is online again (and every
 *    module this test loaded is unloaded again).
 *
 * A module left out by aikrs.modules= skips its cases with the reason. A wanted module
 * whose device is missing (it cannot be loaded, or has no device node) fails them: the
 * test kernel builds both devices. A wanted module that is not loaded is loaded for the
 * test (without running its KUnit suites) and unloaded after it; if that unload fails,
 * so does case 4.
 */
#include "kmod.h"
#include "wait_child.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>

#include "../../../drivers/iommu/aikrs_iova/aikrs_iova_uapi.h"
#include "../../../drivers/gpu/drm/aikrs_gang/aikrs_gang_uapi.h"

#define MAX_THREADS 16

static int ntest, nfail;
static int hp_cpu, cycles;

static void result(int ok, const char *name, const char *why)
{
	ntest++;
	if (!ok)
		nfail++;
	printf("%s %d %s%s%s\n", ok ? "ok" : "not ok", ntest, name, !ok && why ? " # " : "",
	       !ok && why ? why : "");
}

static void skip(const char *name, const char *why)
{
	ntest++;
	printf("ok %d %s # SKIP %s\n", ntest, name, why);
}

/* ---- hotplug cycles ---- */

struct cycle_times {
	int done, failed;
	double off_max, on_max;
};

/* One cycle: CPU hp_cpu offline, `ms` of work, online, `ms` of work. */
static int one_cycle(struct cycle_times *t, int ms)
{
	double t0 = kmod_now(), d;
	int r = cpu_set_online(hp_cpu, 0);

	d = kmod_now() - t0;
	t->off_max = d > t->off_max ? d : t->off_max;
	if (r) {
		printf("# offline CPU %d: %s\n", hp_cpu, strerror(-r));
		t->failed++;
		return -1;
	}
	if (cpu_is_online(hp_cpu) != 0) {
		printf("# CPU %d still online after its offline write\n", hp_cpu);
		t->failed++;
	}
	usleep(ms * 1000);
	t0 = kmod_now();
	r = cpu_set_online(hp_cpu, 1);
	d = kmod_now() - t0;
	t->on_max = d > t->on_max ? d : t->on_max;
	if (r) {
		printf("# online CPU %d: %s\n", hp_cpu, strerror(-r));
		t->failed++;
		return -1;
	}
	usleep(ms * 1000);
	t->done++;
	return 0;
}

/* ---- /dev/aikrs_iova ---- */

static int iova_open(uint64_t start, uint64_t limit, uint32_t max_live)
{
	struct aikrs_iova_create c = { .start = start, .limit = limit, .max_live = max_live,
				       .flags = AIKRS_IOVA_CREATE_CACHE };
	int fd = open("/dev/aikrs_iova", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		printf("# open /dev/aikrs_iova: %s\n", strerror(errno));
		return -1;
	}
	if (ioctl(fd, AIKRS_IOVA_IOC_CREATE, &c)) {
		printf("# create: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* 0 and the first page, or -errno. */
static int iova_alloc(int fd, uint64_t size, uint64_t limit, uint64_t *pfn)
{
	struct aikrs_iova_range r = { .size = size, .limit = limit };

	if (ioctl(fd, AIKRS_IOVA_IOC_ALLOC, &r))
		return -errno;
	*pfn = r.pfn;
	return 0;
}

static int iova_free(int fd, uint64_t pfn, uint64_t size)
{
	struct aikrs_iova_range r = { .pfn = pfn, .size = size };

	return ioctl(fd, AIKRS_IOVA_IOC_FREE, &r) ? -errno : 0;
}

static void print_stats(const char *when, const struct aikrs_iova_stats *s)
{
	printf("# %s: %llu of %llu pages free, %llu allocations, %llu cached, %llu live, "
	       "%llu parked, %llu lost, %llu bad frees, %llu failed; cpu allocs %llu frees %llu "
	       "hits %llu depot hits %llu\n",
	       when, (unsigned long long)s->free_pages, (unsigned long long)s->span_pages,
	       (unsigned long long)s->allocations, (unsigned long long)s->cached,
	       (unsigned long long)s->live, (unsigned long long)s->parked,
	       (unsigned long long)s->lost, (unsigned long long)s->bad_frees,
	       (unsigned long long)s->failed, (unsigned long long)s->cpu_allocs,
	       (unsigned long long)s->cpu_frees, (unsigned long long)s->cpu_hits,
	       (unsigned long long)s->cpu_depot_hits);
}

/* Drains, reads the statistics, and checks the domain is whole again. */
static int iova_whole(int fd, const char *when, char *why, size_t wlen)
{
	struct aikrs_iova_stats s;

	if (ioctl(fd, AIKRS_IOVA_IOC_DRAIN) || ioctl(fd, AIKRS_IOVA_IOC_STATS, &s)) {
		snprintf(why, wlen, "drain/stats: %s", strerror(errno));
		return 0;
	}
	print_stats(when, &s);
	if (s.free_pages != s.span_pages || s.allocations || s.live || s.parked || s.lost ||
	    s.bad_frees) {
		snprintf(why, wlen, "%s: %llu of %llu pages free, %llu allocations, %llu live, "
			 "%llu lost, %llu bad frees", when, (unsigned long long)s.free_pages,
			 (unsigned long long)s.span_pages, (unsigned long long)s.allocations,
			 (unsigned long long)s.live, (unsigned long long)s.lost,
			 (unsigned long long)s.bad_frees);
		return 0;
	}
	return 1;
}

/* Case 1: ranges left in a CPU's magazines when it goes offline. */
static void iova_offline_cpu_magazines(void)
{
	const char *name = "iova_offline_cpu_magazines";
	enum { SPAN = 4096 };
	static uint64_t pfns[SPAN];
	static unsigned char seen[SPAN + 1];
	struct aikrs_iova_stats s, s_off;
	char why[512] = "";
	int fd, ok = 0, n = 0, e = 0, r, i, offline = 0;

	fd = iova_open(1, SPAN, SPAN);
	if (fd < 0) {
		result(0, name, "no domain");
		return;
	}
	/* Fill and empty the domain from the CPU: its magazines keep ranges. */
	if (pin_to_cpu(hp_cpu)) {
		snprintf(why, sizeof(why), "cannot run on CPU %d", hp_cpu);
		goto out;
	}
	for (i = 0; i < SPAN; i++) {
		r = iova_alloc(fd, 1, SPAN, &pfns[i]);
		if (r) {
			snprintf(why, sizeof(why), "fill on CPU %d: %s after %d pages", hp_cpu,
				 strerror(-r), i);
			goto out;
		}
	}
	for (i = 0; i < SPAN; i++) {
		r = iova_free(fd, pfns[i], 1);
		if (r) {
			snprintf(why, sizeof(why), "free on CPU %d: %s", hp_cpu, strerror(-r));
			goto out;
		}
	}
	if (ioctl(fd, AIKRS_IOVA_IOC_STATS, &s)) {
		snprintf(why, sizeof(why), "stats: %s", strerror(errno));
		goto out;
	}
	print_stats("emptied on the CPU", &s);
	if (!s.cached) {
		snprintf(why, sizeof(why), "no range in the magazines: the case would show nothing");
		goto out;
	}
	/* Away from the CPU, then take it offline. */
	if (pin_to_cpu(0)) {
		snprintf(why, sizeof(why), "cannot run on CPU 0");
		goto out;
	}
	r = cpu_set_online(hp_cpu, 0);
	if (r) {
		snprintf(why, sizeof(why), "offline CPU %d: %s", hp_cpu, strerror(-r));
		goto out;
	}
	offline = 1;
	if (ioctl(fd, AIKRS_IOVA_IOC_STATS, &s_off)) {
		snprintf(why, sizeof(why), "stats with CPU %d offline: %s", hp_cpu, strerror(errno));
		goto out;
	}
	print_stats("CPU offline (its magazines are not counted)", &s_off);
	/*
	 * `cached` counts the depot and the magazines of online CPUs. Nothing ran in the
	 * domain since the first snapshot, so only the offline CPU's magazines can have
	 * left the count: it must drop, or that CPU held no range and the rest of the case
	 * would pass without testing anything (with or without the hotplug callback).
	 */
	if (s_off.cached >= s.cached) {
		snprintf(why, sizeof(why), "precondition: %llu ranges cached before CPU %d went "
			 "offline, %llu after: that CPU had no range in its magazines, so the case "
			 "would show nothing", (unsigned long long)s.cached, hp_cpu,
			 (unsigned long long)s_off.cached);
		goto out;
	}
	printf("# CPU %d had %llu ranges in its magazines when it went offline\n", hp_cpu,
	       (unsigned long long)(s.cached - s_off.cached));
	/* The whole domain, one page at a time, from CPU 0. */
	memset(seen, 0, sizeof(seen));
	for (n = 0; n < SPAN; n++) {
		e = iova_alloc(fd, 1, SPAN, &pfns[n]);
		if (e)
			break;
		if (pfns[n] < 1 || pfns[n] > SPAN || seen[pfns[n]]++) {
			snprintf(why, sizeof(why), "page %llu handed out twice or out of the domain",
				 (unsigned long long)pfns[n]);
			n++;
			goto free;
		}
	}
	if (n < SPAN) {
		snprintf(why, sizeof(why), "ENOSPC after %d of %d pages: %d pages were left in the "
			 "magazines of offline CPU %d", n, SPAN, SPAN - n, hp_cpu);
		if (e != -ENOSPC)
			snprintf(why, sizeof(why), "allocation %d: %s", n + 1, strerror(-e));
		goto free;
	}
	{
		uint64_t extra = 0;

		e = iova_alloc(fd, 1, SPAN, &extra);
		if (e != -ENOSPC) {
			snprintf(why, sizeof(why), "a page beyond the domain: %s",
				 e ? strerror(-e) : "got one");
			if (!e)
				iova_free(fd, extra, 1);
			goto free;
		}
	}
	ok = 1;
free:
	for (i = 0; i < n; i++) {
		r = iova_free(fd, pfns[i], 1);
		if (r && ok) {
			snprintf(why, sizeof(why), "free of page %llu: %s",
				 (unsigned long long)pfns[i], strerror(-r));
			ok = 0;
		}
	}
	/* With the CPU still offline: drain (online CPUs) and check the domain is whole. */
	if (ok && !iova_whole(fd, "freed and drained, CPU offline", why, sizeof(why)))
		ok = 0;
out:
	if (offline && cpu_set_online(hp_cpu, 1)) {
		printf("# online CPU %d again failed\n", hp_cpu);
		ok = 0;
	}
	unpin();
	close(fd);
	if (!ok)
		printf("# %s\n", why);
	result(ok, name, ok ? NULL : why);
}

/* Case 2: allocation and free from every CPU while a CPU comes and goes. */
struct stress {
	int fd;
	uint64_t start, limit;
	_Atomic uint32_t *owner;
	_Atomic int stop;
	_Atomic unsigned long allocs, frees, enospc, overlaps, contract, errors;
	_Atomic unsigned long ops[MAX_THREADS];
};

struct stress_arg {
	struct stress *s;
	int id;
};

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 0x2545f4914f6cdd1dULL;
}

static int claim(struct stress *s, uint64_t pfn, uint64_t size, uint32_t from, uint32_t to)
{
	int ok = 1;

	for (uint64_t p = pfn; p < pfn + size && p <= s->limit; p++) {
		uint32_t want = from;

		ok &= atomic_compare_exchange_strong(&s->owner[p], &want, to);
	}
	return ok;
}

static void *stress_thread(void *arg)
{
	struct stress_arg *a = arg;
	struct stress *s = a->s;
	uint32_t id = a->id + 1;
	uint64_t rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)id << 32 | 1);
	uint64_t live_p[64], live_s[64];
	int n = 0, printed = 0;

	while (!atomic_load(&s->stop)) {
		int want_alloc = n == 0 || (n < 48 && xorshift(&rng) % 3 != 0);

		if (want_alloc) {
			uint64_t size = xorshift(&rng) % 8 == 0 ? 3 + xorshift(&rng) % 20 :
				1ULL << (xorshift(&rng) % 7);
			uint64_t pfn = 0, align = 1;
			int r = iova_alloc(s->fd, size, s->limit, &pfn);

			while (align < size)
				align <<= 1;
			if (r == -ENOSPC) {
				atomic_fetch_add(&s->enospc, 1);
			} else if (r) {
				atomic_fetch_add(&s->errors, 1);
				if (printed++ < 3)
					printf("# thread %u: alloc of %llu pages: %s\n", id,
					       (unsigned long long)size, strerror(-r));
			} else {
				atomic_fetch_add(&s->allocs, 1);
				if (pfn < s->start || pfn % align || pfn + size - 1 > s->limit)
					atomic_fetch_add(&s->contract, 1);
				if (!claim(s, pfn, size, 0, id))
					atomic_fetch_add(&s->overlaps, 1);
				live_p[n] = pfn;
				live_s[n++] = size;
			}
		} else {
			int j = xorshift(&rng) % n, r;

			if (!claim(s, live_p[j], live_s[j], id, 0))
				atomic_fetch_add(&s->overlaps, 1);
			r = iova_free(s->fd, live_p[j], live_s[j]);
			if (r) {
				atomic_fetch_add(&s->errors, 1);
				if (printed++ < 3)
					printf("# thread %u: free: %s\n", id, strerror(-r));
			} else {
				atomic_fetch_add(&s->frees, 1);
			}
			live_p[j] = live_p[n - 1];
			live_s[j] = live_s[n - 1];
			n--;
		}
		atomic_fetch_add(&s->ops[a->id], 1);
	}
	while (n > 0) {
		n--;
		claim(s, live_p[n], live_s[n], id, 0);
		if (iova_free(s->fd, live_p[n], live_s[n]))
			atomic_fetch_add(&s->errors, 1);
		else
			atomic_fetch_add(&s->frees, 1);
	}
	return NULL;
}

static void iova_stress_during_hotplug(int nthreads)
{
	const char *name = "iova_stress_during_hotplug";
	static struct stress s;
	struct stress_arg args[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	struct cycle_times ct = { 0 };
	char why[512] = "";
	unsigned long min_ops = ~0UL;
	int ok, i, started = 0;
	double t0;

	memset(&s, 0, sizeof(s));
	s.start = 1;
	s.limit = (1 << 16) - 1;
	s.owner = calloc(s.limit + 1, sizeof(*s.owner));
	s.fd = iova_open(s.start, s.limit, 16384);
	if (s.fd < 0 || !s.owner) {
		result(0, name, "no domain");
		free(s.owner);
		return;
	}
	t0 = kmod_now();
	for (i = 0; i < nthreads; i++) {
		args[i] = (struct stress_arg){ .s = &s, .id = i };
		if (pthread_create(&th[i], NULL, stress_thread, &args[i]))
			break;
		started++;
	}
	usleep(200000);
	for (i = 0; i < cycles; i++)
		if (one_cycle(&ct, 300))
			break;
	atomic_store(&s.stop, 1);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < started; i++) {
		unsigned long o = atomic_load(&s.ops[i]);

		min_ops = o < min_ops ? o : min_ops;
	}
	printf("# %d threads, %.1f s, %d of %d hotplug cycles (offline up to %.2f s, online up "
	       "to %.2f s): %lu allocations, %lu frees, %lu ENOSPC, fewest calls of a thread "
	       "%lu; %lu overlaps, %lu contract violations, %lu other errors\n",
	       started, kmod_now() - t0, ct.done, cycles, ct.off_max, ct.on_max,
	       atomic_load(&s.allocs), atomic_load(&s.frees), atomic_load(&s.enospc), min_ops,
	       atomic_load(&s.overlaps), atomic_load(&s.contract), atomic_load(&s.errors));
	ok = started == nthreads && ct.done == cycles && !ct.failed && min_ops > 0 &&
	     !atomic_load(&s.overlaps) && !atomic_load(&s.contract) && !atomic_load(&s.errors) &&
	     atomic_load(&s.allocs) == atomic_load(&s.frees);
	if (!ok)
		snprintf(why, sizeof(why), "threads %d of %d, cycles %d of %d, %lu overlaps, %lu "
			 "contract, %lu errors, %lu allocations but %lu frees", started, nthreads,
			 ct.done, cycles, atomic_load(&s.overlaps), atomic_load(&s.contract),
			 atomic_load(&s.errors), atomic_load(&s.allocs), atomic_load(&s.frees));
	/* All CPUs online again: drained, the domain must be whole. */
	if (ok && !iova_whole(s.fd, "after the stress, drained", why, sizeof(why)))
		ok = 0;
	close(s.fd);
	free(s.owner);
	result(ok, name, ok ? NULL : why);
}

/* ---- /dev/aikrs_gang ---- */

struct gang {
	int fd;
	_Atomic int stop, running;
	int runs, bad, err;
	unsigned long jobs;
	double longest;
};

static void *gang_thread(void *arg)
{
	struct gang *g = arg;

	while (!atomic_load(&g->stop)) {
		struct aikrs_gang_run r = { .steps = 20, .decodes = 5 };
		double t0 = kmod_now();

		atomic_store(&g->running, 1);
		if (ioctl(g->fd, AIKRS_GANG_IOC_RUN, &r)) {
			g->err = errno;
			printf("# run %d: %s\n", g->runs + 1, strerror(errno));
			break;
		}
		g->longest = kmod_now() - t0 > g->longest ? kmod_now() - t0 : g->longest;
		g->runs++;
		for (int i = 0; i < 2; i++) {
			if (r.jobs_run[i] != r.jobs_expected || r.gangs_started[i] != r.steps ||
			    r.jobs_left[i]) {
				g->bad++;
				printf("# run %d (%s): %llu of %llu jobs started, %llu of %u gangs, "
				       "%llu jobs left in drm_sched\n", g->runs,
				       i ? "plain" : "gang policy",
				       (unsigned long long)r.jobs_run[i],
				       (unsigned long long)r.jobs_expected,
				       (unsigned long long)r.gangs_started[i], r.steps,
				       (unsigned long long)r.jobs_left[i]);
			}
			g->jobs += r.jobs_run[i];
		}
	}
	return NULL;
}

static void gang_workload_during_hotplug(void)
{
	const char *name = "gang_workload_during_hotplug";
	struct gang g = { 0 };
	struct cycle_times ct = { 0 };
	char why[512] = "";
	pthread_t th;
	int ok, i;
	double t0 = kmod_now();

	g.fd = open("/dev/aikrs_gang", O_RDWR | O_CLOEXEC);
	if (g.fd < 0) {
		result(0, name, "cannot open /dev/aikrs_gang");
		return;
	}
	if (pthread_create(&th, NULL, gang_thread, &g)) {
		close(g.fd);
		result(0, name, "pthread_create failed");
		return;
	}
	while (!atomic_load(&g.running))
		usleep(1000);
	usleep(100000);
	for (i = 0; i < cycles; i++)
		if (one_cycle(&ct, 300))
			break;
	atomic_store(&g.stop, 1);
	pthread_join(th, NULL);
	close(g.fd);
	printf("# %.1f s, %d of %d hotplug cycles (offline up to %.2f s, online up to %.2f s): "
	       "%d workload runs (longest %.1f s), %lu jobs started, %d runs with lost work\n",
	       kmod_now() - t0, ct.done, cycles, ct.off_max, ct.on_max, g.runs, g.longest,
	       g.jobs, g.bad);
	ok = !g.err && !g.bad && g.runs > 0 && ct.done == cycles && !ct.failed;
	if (!ok)
		snprintf(why, sizeof(why), "%d runs, %d with lost work, error %s, cycles %d of %d",
			 g.runs, g.bad, g.err ? strerror(g.err) : "none", ct.done, cycles);
	result(ok, name, ok ? NULL : why);
}

/* ---- the driver ---- */

/*
 * Makes sure module `name` is loaded (without running its KUnit suites) and has `node`:
 * 1 if it does; 0 if the module is left out by aikrs.modules= (skip); -1 if it is
 * wanted but cannot be loaded or has no `node` (fail). `why` says; *loaded_here says
 * whether we loaded it.
 */
static int have_device(const char *name, const char *node, int *loaded_here, char *why,
		       size_t wlen)
{
	*loaded_here = 0;
	if (!kmod_wanted(name)) {
		snprintf(why, wlen, "%s not in aikrs.modules", name);
		return 0;
	}
	if (kmod_state(name, NULL) == KMOD_ABSENT && kmod_have(name)) {
		struct kunit_filter kf;
		int r;

		kunit_filter_off(&kf);
		r = kmod_load(name);
		kunit_filter_restore(&kf);
		if (r) {
			snprintf(why, wlen, "loading %s: %s", name, strerror(-r));
			return -1;
		}
		*loaded_here = 1;
	}
	if (access(node, F_OK)) {
		snprintf(why, wlen, "%s is wanted but %s is missing (%s)", name, node,
			 kmod_state(name, NULL) == KMOD_ABSENT ? "module not loaded, no .ko" :
			 "module loaded");
		return -1;
	}
	return 1;
}

/* Unloads `name` if this test loaded it: 1 if done (or nothing to do), 0 if it failed. */
static int unload_ours(const char *name, int loaded_here, char *why, size_t wlen)
{
	int r;

	if (!loaded_here)
		return 1;
	r = kmod_unload_wait(name, 5000);
	if (!r && kmod_wait_gone(name, 2000))
		return 1;
	snprintf(why, wlen, "%s loaded by this test could not be unloaded: %s", name,
		 r ? strerror(-r) : "still in /proc/modules");
	printf("# %s\n", why);
	return 0;
}

int main(void)
{
	long online0 = sysconf(_SC_NPROCESSORS_ONLN);
	int iova_here = 0, gang_here = 0, nthreads, have, unloaded = 1;
	char why[256], unload_why[256] = "";

	setvbuf(stdout, NULL, _IOLBF, 0);
	hp_cpu = kmod_param_long("aikrs.hotplug_cpu", 1);
	cycles = kmod_param_long("aikrs.hotplug_cycles", 5);
	printf("KTAP version 1\n1..4\n");
	if (online0 < 2 || hp_cpu < 1 || cpu_is_online(hp_cpu) != 1) {
		snprintf(why, sizeof(why), "CPU %d cannot go offline here (%ld CPUs online, its "
			 "online file: %d)", hp_cpu, online0, cpu_is_online(hp_cpu));
		skip("iova_offline_cpu_magazines", why);
		skip("iova_stress_during_hotplug", why);
		skip("gang_workload_during_hotplug", why);
		skip("cpus_online_at_end", why);
		return 0;
	}
	nthreads = online0 * 2 > MAX_THREADS ? MAX_THREADS : online0 * 2;
	printf("# %ld CPUs online; CPU %d goes offline and online %d times per case\n", online0,
	       hp_cpu, cycles);

	have = have_device("aikrs_iova", "/dev/aikrs_iova", &iova_here, why, sizeof(why));
	if (have > 0) {
		iova_offline_cpu_magazines();
		iova_stress_during_hotplug(nthreads);
	} else if (have == 0) {
		skip("iova_offline_cpu_magazines", why);
		skip("iova_stress_during_hotplug", why);
	} else {
		printf("# %s\n", why);
		result(0, "iova_offline_cpu_magazines", why);
		result(0, "iova_stress_during_hotplug", why);
	}
	if (!unload_ours("aikrs_iova", iova_here, unload_why, sizeof(unload_why)))
		unloaded = 0;

	have = have_device("aikrs_gang", "/dev/aikrs_gang", &gang_here, why, sizeof(why));
	if (have > 0) {
		gang_workload_during_hotplug();
	} else if (have == 0) {
		skip("gang_workload_during_hotplug", why);
	} else {
		printf("# %s\n", why);
		result(0, "gang_workload_during_hotplug", why);
	}
	if (!unload_ours("aikrs_gang", gang_here, unload_why, sizeof(unload_why)))
		unloaded = 0;

	/* Whatever happened above: the CPU online again, and our loads undone. */
	if (cpu_is_online(hp_cpu) == 0)
		cpu_set_online(hp_cpu, 1);
	snprintf(why, sizeof(why), "%ld CPUs online, %ld at the start%s%s",
		 sysconf(_SC_NPROCESSORS_ONLN), online0, unloaded ? "" : "; ", unload_why);
	result(sysconf(_SC_NPROCESSORS_ONLN) == online0 && cpu_is_online(hp_cpu) == 1 &&
	       unloaded, "cpus_online_at_end", why);
	return nfail ? 1 : 0;
}
