// SPDX-License-Identifier: GPL-2.0
/*
 * Demo of ai-kernel-rs batched TLB invalidation (make run): a process with a thread on
 * every vCPU touches 1024 buffer objects of /dev/aikrs_tlb; the driver evicts them all
 * (revoke + remap to new pages) once the kernel's way and once batched; then the
 * debugfs counters of the batch layer.
 */
#include "tlb_user.h"

#define NBUF 1024

static void counters(void)
{
	static const char *const names[] = { "requests", "merged", "rounds", "ipis",
					     "full_flushes", "per_page_flushes", "revokes",
					     "faults" };
	char path[128], buf[64];
	unsigned int i;

	printf("debugfs /sys/kernel/debug/aikrs_tlb/:");
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		FILE *f;

		snprintf(path, sizeof(path), "/sys/kernel/debug/aikrs_tlb/%s", names[i]);
		f = fopen(path, "r");
		if (f && fgets(buf, sizeof(buf), f))
			printf(" %s=%llu", names[i], strtoull(buf, NULL, 10));
		if (f)
			fclose(f);
	}
	printf("\n");
}

static void evict(struct tlbu_bufs *b, struct tlbu_readers *rd, unsigned int flags,
		  const char *how)
{
	struct aikrs_tlb_revoke r;
	uint64_t i0, f0, t0, us;
	unsigned int i;

	for (i = 0; i < b->n; i++)
		(void)*b->map[i];
	tlbu_readers_settle(rd, 2);
	i0 = tlbu_shootdowns();
	f0 = tlbu_vmstat("nr_tlb_remote_flush");
	t0 = tlbu_now_ns();
	if (tlbu_revoke(b->fd, 0, b->n, flags | AIKRS_TLB_REVOKE_REMAP, &r)) {
		printf("revoke failed: %s\n", strerror(errno));
		return;
	}
	us = (tlbu_now_ns() - t0) / 1000;
	printf("%-26s %6u buffers: %6llu TLB shootdown IPIs, %5llu flush rounds, %8llu us\n", how,
	       b->n, (unsigned long long)(tlbu_shootdowns() - i0),
	       (unsigned long long)(tlbu_vmstat("nr_tlb_remote_flush") - f0),
	       (unsigned long long)us);
}

int main(void)
{
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct tlbu_readers rd;
	struct tlbu_bufs b;
	uint64_t v;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (tlbu_create(&b, NBUF)) {
		printf("/dev/aikrs_tlb: %s (CONFIG_AIKRS_TLB off?)\n", strerror(errno));
		return 1;
	}
	printf("Batched TLB invalidation: %d vCPUs read %u buffer objects (one mmap each)\n", ncpu,
	       NBUF);
	tlbu_pin(0);
	tlbu_readers_start(&rd, &b, 1, ncpu);
	evict(&b, &rd, 0, "evict, one by one (kernel)");
	evict(&b, &rd, AIKRS_TLB_REVOKE_BATCHED, "evict, batched (ours)");
	tlbu_readers_stop(&rd);
	v = *b.map[NBUF - 1];
	printf("buffer %u now reads generation %llu (two evictions, each to new pages)\n", NBUF - 1,
	       (unsigned long long)(uint32_t)v);
	counters();
	tlbu_destroy(&b);
	return (uint32_t)v == 3 ? 0 : 1;
}
