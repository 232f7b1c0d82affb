// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark of ai-kernel-rs batched TLB invalidation (make bench): a process whose
 * threads run on every vCPU has touched N = 1, 16, 256, 4096 one-page buffers (one
 * mmap each); revoke them all one by one the kernel's way (unmap_mapping_pages per
 * buffer, inside the driver) and batched our way, alternating, 5 repetitions each,
 * medians reported. Figures, from the kernel's own counters:
 *   ipis    TLB shootdown IPIs received (/proc/interrupts "TLB", all CPUs)
 *   rounds  remote flush rounds (/proc/vmstat nr_tlb_remote_flush, CONFIG_DEBUG_TLBFLUSH)
 *   time    wall time of the revoke ioctl, microseconds
 * Each line: "bench: tlb.<figure>_n<N> ours=.. base=.. unit=.. ratio=base/ours".
 * TCG timings are not hardware timings; the counts are exact.
 */
#include "tlb_user.h"

#define REPS 5

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

static void line(const char *fig, unsigned int n, uint64_t ours, uint64_t base,
		 const char *unit)
{
	if (ours)
		printf("bench: tlb.%s_n%u ours=%llu base=%llu unit=%s ratio=%.1f\n", fig, n,
		       (unsigned long long)ours, (unsigned long long)base, unit,
		       (double)base / (double)ours);
	else
		printf("bench: tlb.%s_n%u ours=0 base=%llu unit=%s ratio=n/a\n", fig, n,
		       (unsigned long long)base, unit);
}

static int run(unsigned int n, int ncpu)
{
	uint64_t ipis[2][REPS], rounds[2][REPS], us[2][REPS], kus[2][REPS], ptes = 0;
	struct tlbu_readers rd;
	struct tlbu_bufs b;
	int rep, m, err;

	err = tlbu_create(&b, n);
	if (err) {
		printf("# tlb bench: creating %u buffers failed: %s\n", n, strerror(-err));
		return err;
	}
	tlbu_pin(0);
	tlbu_readers_start(&rd, &b, 1, ncpu);
	for (rep = 0; rep < REPS; rep++) {
		for (m = 0; m < 2; m++) {
			/* Alternate which way goes first. */
			int ours = (rep + m) % 2;
			struct aikrs_tlb_revoke r;
			uint64_t i0, r0, t0;
			unsigned int i;

			/* Every buffer mapped and cached on every CPU again. */
			for (i = 0; i < n; i++)
				(void)*b.map[i];
			tlbu_readers_settle(&rd, 2);
			i0 = tlbu_shootdowns();
			r0 = tlbu_vmstat("nr_tlb_remote_flush");
			t0 = tlbu_now_ns();
			err = tlbu_revoke(b.fd, 0, n, ours ? AIKRS_TLB_REVOKE_BATCHED : 0, &r);
			us[ours][rep] = (tlbu_now_ns() - t0) / 1000;
			kus[ours][rep] = r.ns / 1000;
			ipis[ours][rep] = tlbu_shootdowns() - i0;
			rounds[ours][rep] = tlbu_vmstat("nr_tlb_remote_flush") - r0;
			if (ours)
				ptes += r.ptes;
			if (err) {
				printf("# tlb bench: revoke failed: %s\n", strerror(-err));
				goto out;
			}
		}
	}
	printf("# tlb bench: N=%u buffers, %d CPUs (readers on %d), batched revokes cleared %llu PTEs in %d revokes\n",
	       n, ncpu, ncpu - 1, (unsigned long long)ptes, REPS);
	printf("bench-info: tlb.time_n%u us per repetition (in the kernel): ours", n);
	for (rep = 0; rep < REPS; rep++)
		printf(" %llu (%llu)", (unsigned long long)us[1][rep], (unsigned long long)kus[1][rep]);
	printf(", base");
	for (rep = 0; rep < REPS; rep++)
		printf(" %llu (%llu)", (unsigned long long)us[0][rep], (unsigned long long)kus[0][rep]);
	printf("\n");
	line("ipis", n, median(ipis[1], REPS), median(ipis[0], REPS), "IPIs");
	line("rounds", n, median(rounds[1], REPS), median(rounds[0], REPS), "rounds");
	line("time", n, median(us[1], REPS), median(us[0], REPS), "us");
out:
	tlbu_readers_stop(&rd);
	tlbu_destroy(&b);
	return err;
}

int main(void)
{
	static const unsigned int sizes[] = { 1, 16, 256, 4096 };
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned int i;
	int rc = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (access("/dev/aikrs_tlb", F_OK)) {
		printf("# tlb bench: no /dev/aikrs_tlb (CONFIG_AIKRS_TLB off)\n");
		return 0;
	}
	if (ncpu < 4)
		printf("# tlb bench: only %d CPUs; the targets are stated for 4 or more\n", ncpu);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (run(sizes[i], ncpu))
			rc = 1;
	return rc;
}
