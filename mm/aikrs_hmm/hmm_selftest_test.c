// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel's own HMM self test, tools/testing/selftests/mm/hmm-tests.c of the
 * kernel under test, compiled unchanged but for one string: the device node
 * /dev/hmm_dmirrorN of the C test driver (lib/test_hmm.c) becomes our
 * /dev/aikrs_hmmN (mm/aikrs_hmm). Set AIKRS_HMM_DEV=/dev/hmm_dmirror%d (or boot
 * with aikrs.hmm_ref) to run it against the C driver instead (the reference,
 * when CONFIG_TEST_HMM=y).
 *
 * Output: one KTAP list. The harness runs every case except those that need
 * what the Rust driver does not have yet; its results are passed on
 * (renumbered), then each case not run is reported as SKIP with the reason. The DEVICE_COHERENT variants are skipped by hmm-tests itself (no
 * /dev/aikrs_hmm2 and 3: the model device has only device-private memory, as
 * test_hmm without its spm_addr_dev* parameters).
 *
 * Two cases of our own follow, so that the run cannot pass against another
 * device than ours: aikrs_hmm.device_nodes (hmm-tests asked for its device
 * nodes and got ours, and /dev/aikrs_hmm0 and 1 are the character devices our
 * module registered) and aikrs_hmm.counters_moved (our module's debugfs
 * counters grew during the run, for the commands hmm-tests issues on each
 * device). A reference run against the C driver skips both.
 *
 * A child that hmm-tests forks reports its failures to the test that forked it
 * through the harness: a failed ASSERT or EXPECT in the child marks the test's
 * metadata, which the harness keeps in shared memory, as failed (and on Linux
 * 7.x the child then aborts, which the parent's WIFEXITED check catches too).
 *
 * Newer mm selftests link helpers of their directory (see its Makefile);
 * scripts/guest.sh links those of the kernel under test that exist:
 * AIKRS_GUEST_LINK: tools/testing/selftests/mm/vm_util.c tools/testing/selftests/mm/hugepage_settings.c
 */
/* As the selftests Makefile builds it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/version.h>

/*
 * Device paths hmm-tests formed (hmm_open()), in memory shared with the
 * harness's test processes: [0] all of them, [1] those that became ours.
 */
static unsigned long *aikrs_dev_paths;

static int aikrs_snprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (!strcmp(fmt, "/dev/hmm_dmirror%d")) {
		const char *dev = getenv("AIKRS_HMM_DEV");
		int ours = !(dev && *dev);

		fmt = ours ? "/dev/aikrs_hmm%d" : dev;
		if (aikrs_dev_paths) {
			__atomic_fetch_add(&aikrs_dev_paths[0], 1, __ATOMIC_RELAXED);
			__atomic_fetch_add(&aikrs_dev_paths[1], ours, __ATOMIC_RELAXED);
		}
	}

	va_start(ap, fmt);
	r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	return r;
}

#define snprintf aikrs_snprintf
#define main hmm_tests_main
#include "tools/testing/selftests/mm/hmm-tests.c"
#undef main
#undef snprintf

#define NO_COHERENT "DEVICE_COHERENT not available (the model device has device-private memory only)"

/*
 * The cases not run, and why; a name ending in '*' is a prefix. Empty: every
 * device-private case of hmm-tests runs (on Linux 7.3, userfaultfd_read needs
 * CONFIG_USERFAULTFD, which mm/aikrs_hmm/linux7.kunitconfig turns on, else it
 * skips itself).
 */
static const struct {
	const char *name;
	const char *why;
} not_run[] = {
	{ NULL, NULL },
};

/*
 * Benchmarks do not run on the debug test kernel (KASAN, lockdep, kmemleak: the
 * scripts/kbuild.sh default): their timings mean nothing there, and Linux 7.3's
 * benchmark_thp_migration overruns its 120 s harness timeout. They run on the
 * production-like kernel. The debug kernel is recognised by its lockdep or
 * kmemleak files.
 */
#define DEBUG_KERNEL_BENCH "a benchmark: not run on the debug test kernel (KASAN, lockdep; timings mean nothing there)"
static int debug_kernel;

static const char *why_not_run(const char *test)
{
	if (debug_kernel && !strncmp(test, "benchmark_", 10))
		return DEBUG_KERNEL_BENCH;
	for (size_t i = 0; not_run[i].name; i++) {
		const char *n = not_run[i].name;
		size_t len = strlen(n);

		if (n[len - 1] == '*' ? !strncmp(test, n, len - 1) : !strcmp(test, n))
			return not_run[i].why;
	}
	return NULL;
}

/* Our devices: /dev/aikrs_hmm0 and 1, counters in /sys/kernel/debug/aikrs_hmmN/. */
#define AIKRS_NDEV 2
#define AIKRS_MAX_CTRS 32

struct aikrs_ctrs {
	int n;
	char name[AIKRS_MAX_CTRS][64];
	unsigned long long val[AIKRS_MAX_CTRS];
};

/*
 * The counters each hmm-tests run must grow, per device: device 0 serves the
 * hmm fixture (device reads and writes that fault, snapshots, migration to the
 * device and back on a CPU fault); device 1 the second device of the hmm2
 * fixture (migrate_mixed, snapshot and double_map migrate to it, double_map
 * reads through it).
 */
static const char *const aikrs_must_grow[AIKRS_NDEV][8] = {
	{ "device_faults", "pages_read", "pages_written", "snapshot_pages",
	  "migrated_to_device", "migrated_to_ram_on_cpu_fault", NULL },
	{ "pages_read", "migrated_to_device", NULL },
};

/* Reads every counter file of our device `unit`: 0, or -errno. */
static int aikrs_read_ctrs(int unit, struct aikrs_ctrs *c)
{
	char dir[64], path[128], buf[64];
	struct dirent *e;
	DIR *d;

	c->n = 0;
	snprintf(dir, sizeof(dir), "/sys/kernel/debug/aikrs_hmm%d", unit);
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((e = readdir(d)) && c->n < AIKRS_MAX_CTRS) {
		char *end;
		ssize_t len;
		int fd;

		if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(c->name[0]))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len <= 0)
			continue;
		buf[len] = 0;
		c->val[c->n] = strtoull(buf, &end, 10);
		if (end == buf)
			continue;
		snprintf(c->name[c->n], sizeof(c->name[c->n]), "%s", e->d_name);
		c->n++;
	}
	closedir(d);
	return c->n ? 0 : -ENOENT;
}

/* Counter `name` of `c`, or -1 if it has none of that name. */
static long long aikrs_ctr(const struct aikrs_ctrs *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->name[i], name))
			return (long long)c->val[i];
	return -1;
}

/*
 * Whether /dev/aikrs_hmmN is the character device that our module registered
 * (the misc device of that name in sysfs), not a link or another device's node.
 * Prints why not.
 */
static int aikrs_node_is_ours(int unit)
{
	unsigned int maj, min;
	char path[64], sys[80];
	struct stat st;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "/dev/aikrs_hmm%d", unit);
	snprintf(sys, sizeof(sys), "/sys/class/misc/aikrs_hmm%d/dev", unit);
	if (lstat(path, &st)) {
		printf("# %s: %s\n", path, strerror(errno));
		return 0;
	}
	if (!S_ISCHR(st.st_mode)) {
		printf("# %s is not a character device\n", path);
		return 0;
	}
	f = fopen(sys, "r");
	ok = f && fscanf(f, "%u:%u", &maj, &min) == 2;
	if (f)
		fclose(f);
	if (!ok) {
		printf("# %s: no device number (%s)\n", sys, strerror(errno));
		return 0;
	}
	if (major(st.st_rdev) != maj || minor(st.st_rdev) != min) {
		printf("# %s is %u:%u, our misc device aikrs_hmm%d is %u:%u\n", path,
		       major(st.st_rdev), minor(st.st_rdev), unit, maj, min);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	struct aikrs_ctrs before[AIKRS_NDEV], after[AIKRS_NDEV];
	int ctr_err[AIKRS_NDEV] = { 0 };
	struct __fixture_metadata *f;
	struct __test_metadata *t;
	char *args[256] = { argv[0] };
	int nargs = 1, n = 0, fds[2], status, rc, ours, ok;
	char line[4096];
	FILE *in;
	pid_t pid;

	(void)argc;
	debug_kernel = !access("/proc/lockdep_stats", F_OK) ||
		       !access("/sys/kernel/debug/kmemleak", F_OK);
	/*
	 * Transparent huge pages on request only (MADV_HUGEPAGE, what the THP cases
	 * ask for), as many distributions configure them: with "always", plain
	 * buffers get huge pages too, and Linux 6.12's make_device_exclusive_range()
	 * refuses their tail pages, so the exclusive cases fail with EBUSY against
	 * the C driver as well (boot with aikrs.hmm_ref to see it).
	 */
	in = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "w");
	if (in) {
		fputs("madvise\n", in);
		fclose(in);
	}
	/* aikrs.hmm_ref on the kernel command line: the C driver, as a reference. */
	in = fopen("/proc/cmdline", "r");
	if (in) {
		if (fgets(line, sizeof(line), in) && strstr(line, "aikrs.hmm_ref"))
			setenv("AIKRS_HMM_DEV", "/dev/hmm_dmirror%d", 1);
		fclose(in);
	}
	/*
	 * hugetlbfs cases need free huge pages (run_vmtests.sh reserves them the
	 * same way); without, hmm-tests skips them.
	 */
	in = fopen("/proc/sys/vm/nr_hugepages", "r+");
	if (in) {
		int have = 0;

		if (fscanf(in, "%d", &have) == 1 && have < 4) {
			rewind(in);
			fprintf(in, "4\n");
		}
		fclose(in);
	}
	/* Exclude the cases not run (-T NAME); each name once. */
	for (f = __fixture_list; f; f = f->next)
		for (t = f->tests; t; t = t->next) {
			int seen = 0;

			if (!why_not_run(t->name))
				continue;
			for (int i = 2; i < nargs; i += 2)
				seen |= !strcmp(args[i], t->name);
			if (!seen && nargs + 2 < 255) {
				args[nargs++] = "-T";
				args[nargs++] = (char *)t->name;
			}
		}
	args[nargs] = NULL;

	/* Shared with the harness's forks, which form the device paths. */
	aikrs_dev_paths = mmap(NULL, 2 * sizeof(*aikrs_dev_paths), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (aikrs_dev_paths == MAP_FAILED)
		return 1;
	ours = !(getenv("AIKRS_HMM_DEV") && *getenv("AIKRS_HMM_DEV"));
	for (int u = 0; ours && u < AIKRS_NDEV; u++)
		ctr_err[u] = aikrs_read_ctrs(u, &before[u]);

	printf("KTAP version 1\n");
	fflush(stdout);
	if (pipe(fds))
		return 1;
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[1]);
		exit(hmm_tests_main(nargs, args));
	}
	close(fds[1]);
	/*
	 * One flat list: the harness's results renumbered, its other lines as
	 * diagnostics, then the cases not run; the plan comes last.
	 */
	in = fdopen(fds[0], "r");
	while (in && fgets(line, sizeof(line), in)) {
		char *rest = NULL;

		if (!strncmp(line, "TAP version", 11) || !strncmp(line, "1..", 3))
			continue;
		if (!strncmp(line, "ok ", 3))
			rest = line + 3;
		else if (!strncmp(line, "not ok ", 7))
			rest = line + 7;
		if (rest && rest[0] >= '0' && rest[0] <= '9') {
			while (*rest >= '0' && *rest <= '9')
				rest++;
			printf("%s %d%s", line[0] == 'o' ? "ok" : "not ok", ++n, rest);
		} else {
			printf("%s%s", line[0] == '#' ? "" : "# ", line);
		}
	}
	if (in)
		fclose(in);
	if (waitpid(pid, &status, 0) < 0)
		return 1;
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
	if (rc != 0 && rc != 4 /* KSFT_SKIP */)
		printf("# hmm-tests exited with status %d\n", rc);

	/*
	 * The run reached our device: hmm-tests formed its device paths through
	 * us and got ours, which are our module's nodes, and our counters grew.
	 */
	if (!ours) {
		printf("ok %d aikrs_hmm.device_nodes # SKIP reference run against AIKRS_HMM_DEV=%s\n",
		       ++n, getenv("AIKRS_HMM_DEV"));
		printf("ok %d aikrs_hmm.counters_moved # SKIP reference run, not our device\n", ++n);
	} else {
		unsigned long formed = __atomic_load_n(&aikrs_dev_paths[0], __ATOMIC_RELAXED);
		unsigned long got = __atomic_load_n(&aikrs_dev_paths[1], __ATOMIC_RELAXED);

		/*
		 * None formed: hmm-tests no longer asks for "/dev/hmm_dmirror%d",
		 * so our rewrite did not apply and it opened whatever that names.
		 */
		ok = formed > 0 && got == formed;
		printf("# hmm-tests formed %lu device paths, %lu of them /dev/aikrs_hmmN\n",
		       formed, got);
		for (int u = 0; u < AIKRS_NDEV; u++)
			ok &= aikrs_node_is_ours(u);
		printf("%s %d aikrs_hmm.device_nodes\n", ok ? "ok" : "not ok", ++n);
		if (!ok)
			rc = 1;

		ok = 1;
		for (int u = 0; u < AIKRS_NDEV; u++) {
			if (!ctr_err[u])
				ctr_err[u] = aikrs_read_ctrs(u, &after[u]);
			if (ctr_err[u]) {
				printf("# /sys/kernel/debug/aikrs_hmm%d: no counters (%s)\n", u,
				       strerror(-ctr_err[u]));
				ok = 0;
				continue;
			}
			/* What the run did on this device, counter by counter. */
			printf("# aikrs_hmm%d:", u);
			for (int i = 0; i < after[u].n; i++) {
				long long b = aikrs_ctr(&before[u], after[u].name[i]);

				if (b < 0)
					printf(" %s (new)", after[u].name[i]);
				else
					printf(" %s +%lld", after[u].name[i],
					       (long long)after[u].val[i] - b);
			}
			printf("\n");
			for (int i = 0; aikrs_must_grow[u][i]; i++) {
				const char *name = aikrs_must_grow[u][i];
				long long b = aikrs_ctr(&before[u], name);
				long long a = aikrs_ctr(&after[u], name);

				if (b < 0 || a <= b) {
					printf("# aikrs_hmm%d: counter %s %s\n", u, name,
					       b < 0 ? "not found" : "did not grow");
					ok = 0;
				}
			}
		}
		printf("%s %d aikrs_hmm.counters_moved\n", ok ? "ok" : "not ok", ++n);
		if (!ok)
			rc = 1;
	}

	/* One SKIP per case and variant not run, as the harness would name it. */
	for (f = __fixture_list; f; f = f->next)
		for (t = f->tests; t; t = t->next) {
			const char *why = why_not_run(t->name);
			struct __fixture_variant_metadata *v;

			if (!why)
				continue;
			for (v = f->variant; v; v = v->next)
				printf("ok %d %s.%s.%s # SKIP %s\n", ++n, f->name, v->name,
				       t->name, strstr(v->name, "coherent") ? NO_COHERENT : why);
		}
	printf("1..%d\n", n);
	return rc == 0 || rc == 4 ? 0 : 1;
}
