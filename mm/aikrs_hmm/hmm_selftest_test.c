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
 * Newer mm selftests link helpers of their directory (see its Makefile);
 * scripts/guest.sh links those of the kernel under test that exist:
 * AIKRS_GUEST_LINK: tools/testing/selftests/mm/vm_util.c tools/testing/selftests/mm/hugepage_settings.c
 */
/* As the selftests Makefile builds it. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/version.h>

static int aikrs_snprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (!strcmp(fmt, "/dev/hmm_dmirror%d")) {
		const char *dev = getenv("AIKRS_HMM_DEV");

		fmt = dev && *dev ? dev : "/dev/aikrs_hmm%d";
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

int main(int argc, char **argv)
{
	struct __fixture_metadata *f;
	struct __test_metadata *t;
	char *args[256] = { argv[0] };
	int nargs = 1, n = 0, fds[2], status, rc;
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
