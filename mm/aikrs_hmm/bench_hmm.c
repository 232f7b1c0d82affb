// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark of the ai-kernel-rs HMM mirror (/dev/aikrs_hmm0, Rust) against the
 * kernel's own C test driver lib/test_hmm.c (/dev/hmm_dmirror0, CONFIG_TEST_HMM=y),
 * in the same boot, through the same ABI (lib/test_hmm_uapi.h).
 *
 * Per repetition and driver, on a 256 MiB anonymous buffer the CPU has written (so
 * the CPU side is populated, with transparent huge pages where the kernel gives
 * them), a freshly opened mirror:
 *   read_cold  HMM_DMIRROR_READ of all of it: device faults (hmm_range_fault) and
 *              copies;
 *   read_warm  the same again: the device page table is populated, copies only;
 *   write      HMM_DMIRROR_WRITE of all of it;
 *   snapshot   HMM_DMIRROR_SNAPSHOT of all of it (no fault, one byte per page);
 *   migrate_to_dev  HMM_DMIRROR_MIGRATE_TO_DEV: all of it into device-private
 *              memory (copied into the model device's backing pages), and read
 *              back by the device as the ABI returns it;
 *   migrate_to_sys  HMM_DMIRROR_MIGRATE_TO_SYS: all of it back to system memory.
 * The buffer is mapped and written afresh before every run (a migration splits
 * huge pages). The drivers alternate (C first in even repetitions, Rust first in odd ones); the
 * figure is the median MiB/s of 5 repetitions. Printed as
 *   bench: hmm.<op> ours=<MiB/s> base=<MiB/s> unit=MiB/s ratio=<ours/base>
 * with the device faults each driver reported. TCG timings are not hardware
 * timings: compare the ratio.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <lib/test_hmm_uapi.h>

#define PAGE 4096UL
#define MAX_REPS 5
/* 256 MiB and 5 repetitions; aikrs.bench_quick on the kernel command line: 64 and 3. */
static unsigned long SIZE = 256UL << 20;
static int REPS = MAX_REPS;
#define NPAGES (SIZE / PAGE)

enum { READ_COLD, READ_WARM, WRITE, SNAPSHOT, TO_DEV, TO_SYS, NOPS };
static const char *const op_name[NOPS] = { "read_cold", "read_warm", "write", "snapshot",
					   "migrate_to_dev", "migrate_to_sys" };
static const char *const dev_path[2] = { "/dev/hmm_dmirror0", "/dev/aikrs_hmm0" };

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One repetition on driver `d`: MiB/s per op into mibs[op], device faults into faults. */
static long minflt(void)
{
	struct rusage r;

	getrusage(RUSAGE_SELF, &r);
	return r.ru_minflt;
}

static uint64_t cpu_faults[2][NOPS];

static int run(int d, char *buf, char *mirror, double mibs[NOPS], uint64_t faults[NOPS])
{
	/* A fresh, written buffer (huge pages where the kernel gives them). */
	if (mmap(buf, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) != buf) {
		printf("# hmm bench: mmap: %s\n", strerror(errno));
		return -1;
	}
	madvise(buf, SIZE, MADV_HUGEPAGE);
	memset(buf, 0x5a, SIZE);

	unsigned long reqs[NOPS] = { HMM_DMIRROR_READ, HMM_DMIRROR_READ, HMM_DMIRROR_WRITE,
				     HMM_DMIRROR_SNAPSHOT, HMM_DMIRROR_MIGRATE_TO_DEV,
				     HMM_DMIRROR_MIGRATE_TO_SYS };
	int fd = open(dev_path[d], O_RDWR);

	if (fd < 0) {
		printf("# hmm bench: open %s: %s\n", dev_path[d], strerror(errno));
		return -1;
	}
	for (int op = 0; op < NOPS; op++) {
		struct hmm_dmirror_cmd c = {
			.addr = (uintptr_t)buf, .ptr = (uintptr_t)mirror, .npages = NPAGES
		};
		double t0 = now(), t;
		long f0 = minflt();

		if (ioctl(fd, reqs[op], &c)) {
			printf("# hmm bench: %s %s: %s\n", dev_path[d], op_name[op], strerror(errno));
			close(fd);
			return -1;
		}
		t = now() - t0;
		cpu_faults[d][op] += minflt() - f0;
		/*
		 * MIGRATE_TO_SYS counts migrate entries: newer C drivers migrate a
		 * 2 MiB page as one entry. The data is checked at the end instead.
		 */
		if (c.cpages != NPAGES && op != TO_SYS) {
			printf("# hmm bench: %s %s copied %llu of %lu pages\n", dev_path[d],
			       op_name[op], (unsigned long long)c.cpages, NPAGES);
			close(fd);
			return -1;
		}
		/* The snapshot: one byte per page, all of them writable mappings. */
		for (unsigned long i = 0; op == SNAPSHOT && i < NPAGES; i++)
			if (!((unsigned char)mirror[i] & HMM_DMIRROR_PROT_WRITE)) {
				printf("# hmm bench: %s snapshot byte %lu is %#x\n", dev_path[d],
				       i, (unsigned char)mirror[i]);
				close(fd);
				return -1;
			}
		mibs[op] = (SIZE >> 20) / t;
		faults[op] = c.faults;
	}
	close(fd);
	/* Read, written back, migrated there and back: the data is intact. */
	for (unsigned long i = 0; i < SIZE; i += sizeof(uint64_t))
		if (*(uint64_t *)(buf + i) != 0x5a5a5a5a5a5a5a5aULL ||
		    *(uint64_t *)(mirror + i) != 0x5a5a5a5a5a5a5a5aULL) {
			printf("# hmm bench: %s: data mismatch at offset %lu\n", dev_path[d], i);
			return -1;
		}
	return 0;
}

int main(void)
{
	double mibs[2][NOPS][MAX_REPS];
	uint64_t faults[2][NOPS] = { 0 }, f[NOPS];
	char *buf, *mirror;

	FILE *cmdline = fopen("/proc/cmdline", "r");
	char line[4096] = "";

	if (cmdline) {
		if (!fgets(line, sizeof(line), cmdline))
			line[0] = 0;
		fclose(cmdline);
	}
	if (strstr(line, "aikrs.bench_quick")) {
		SIZE = 64UL << 20;
		REPS = 3;
	}
	if (access(dev_path[0], F_OK) || access(dev_path[1], F_OK)) {
		printf("# hmm bench: needs %s (CONFIG_TEST_HMM=y) and %s (CONFIG_AIKRS_HMM)\n",
		       dev_path[0], dev_path[1]);
		return 1;
	}
	buf = mmap(NULL, SIZE + (2UL << 20), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mirror = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || mirror == MAP_FAILED) {
		printf("# hmm bench: mmap: %s\n", strerror(errno));
		return 1;
	}
	/* 2 MiB aligned, so that transparent huge pages can back it. */
	buf = (char *)(((uintptr_t)buf + (2UL << 20) - 1) & ~((2UL << 20) - 1));
	memset(mirror, 0, SIZE);

	for (int rep = 0; rep < REPS; rep++) {
		for (int k = 0; k < 2; k++) {
			int d = (rep + k) % 2; /* C first in even repetitions */
			double m[NOPS];

			if (run(d, buf, mirror, m, f))
				return 1;
			for (int op = 0; op < NOPS; op++) {
				mibs[d][op][rep] = m[op];
				faults[d][op] += f[op];
			}
		}
	}
	printf("# hmm bench: %lu MiB, %d repetitions per driver (median), fresh mirror each\n",
	       SIZE >> 20, REPS);
	for (int op = 0; op < NOPS; op++) {
		double base, ours;

		qsort(mibs[0][op], REPS, sizeof(double), cmp_double);
		qsort(mibs[1][op], REPS, sizeof(double), cmp_double);
		base = mibs[0][op][REPS / 2];
		ours = mibs[1][op][REPS / 2];
		printf("bench: hmm.%s ours=%.0f base=%.0f unit=MiB/s ratio=%.2f\n", op_name[op],
		       ours, base, ours / base);
		printf("bench-info: hmm.%s in %d repetitions: device faults ours %llu, base %llu; "
		       "CPU page faults ours %llu, base %llu\n",
		       op_name[op], REPS, (unsigned long long)faults[1][op],
		       (unsigned long long)faults[0][op], (unsigned long long)cpu_faults[1][op],
		       (unsigned long long)cpu_faults[0][op]);
	}
	return 0;
}
