// SPDX-License-Identifier: GPL-2.0
/*
 * Demo of the ai-kernel-rs HMM mirror (make run): a process mirrors its own
 * address space into the model device /dev/aikrs_hmm0, the device reads and
 * writes the process's buffer through its own page table, the CPU changes part of
 * the buffer (the device's entries for it are invalidated and re-faulted), and a
 * snapshot shows how the CPU maps the pages. Then 2 MiB migrate into the
 * device's memory (device-private pages: one 2 MiB device folio on Linux 7, 512
 * pages before), the CPU touches one page (which migrates back on the fault: the
 * whole folio, or that page) and the rest is migrated back. The device's
 * counters come from debugfs (aikrs_hmm0/). Exits 1 if anything is wrong.
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
#include <unistd.h>

#include <lib/test_hmm_uapi.h>

#define PAGE 4096UL
#define SIZE (8UL << 20)
#define NPAGES (SIZE / PAGE)

static const char *const counters[] = {
	"device_faults", "pages_mapped", "huge_mapped", "pages_read", "pages_written",
	"invalidations", "pages_invalidated", "snapshot_pages", "migrated_to_device",
	"migrated_to_ram", "migrated_to_ram_on_cpu_fault", "huge_device_folios",
};

static unsigned long long read_counter(const char *name)
{
	char path[128], v[32] = "0";
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/debug/aikrs_hmm0/%s", name);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(v, sizeof(v), f))
			strcpy(v, "0");
		fclose(f);
	}
	return strtoull(v, NULL, 10);
}

static void show_counters(const char *when)
{
	printf("  counters %s:", when);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		char path[128], v[32] = "?";
		FILE *f;

		snprintf(path, sizeof(path), "/sys/kernel/debug/aikrs_hmm0/%s", counters[i]);
		f = fopen(path, "r");
		if (f) {
			if (!fgets(v, sizeof(v), f))
				strcpy(v, "?");
			fclose(f);
		}
		v[strcspn(v, "\n")] = 0;
		printf(" %s=%s", counters[i], v);
	}
	printf("\n");
}

static int dev_cmd(int fd, unsigned long req, void *addr, void *ptr, unsigned long npages,
		   struct hmm_dmirror_cmd *c)
{
	memset(c, 0, sizeof(*c));
	c->addr = (uintptr_t)addr;
	c->ptr = (uintptr_t)ptr;
	c->npages = npages;
	if (ioctl(fd, req, c)) {
		printf("  ioctl failed: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

int main(void)
{
	struct hmm_dmirror_cmd c;
	unsigned char *snap;
	unsigned long kinds[256] = { 0 };
	unsigned long long before;
	char touched;
	char *raw, *buf, *out;
	int fd;

	fd = open("/dev/aikrs_hmm0", O_RDWR);
	if (fd < 0) {
		printf("demo hmm: /dev/aikrs_hmm0: %s (CONFIG_AIKRS_HMM off?)\n", strerror(errno));
		return 1;
	}
	raw = mmap(NULL, SIZE + (2UL << 20), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	out = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	snap = malloc(NPAGES);
	if (raw == MAP_FAILED || out == MAP_FAILED || !snap)
		return 1;
	buf = (char *)(((uintptr_t)raw + (2UL << 20) - 1) & ~((2UL << 20) - 1));
	madvise(buf, SIZE, MADV_HUGEPAGE);
	memset(buf, 'A', SIZE);

	printf("demo hmm: an 8 MiB buffer at %p, mirrored by /dev/aikrs_hmm0 (the model device)\n",
	       buf);
	show_counters("at start");

	if (dev_cmd(fd, HMM_DMIRROR_READ, buf, out, NPAGES, &c))
		return 1;
	printf("  device read:  %llu pages, %llu device fault(s), first byte '%c'\n",
	       (unsigned long long)c.cpages, (unsigned long long)c.faults, out[0]);
	if (dev_cmd(fd, HMM_DMIRROR_READ, buf, out, NPAGES, &c))
		return 1;
	printf("  read again:   %llu pages, %llu device fault(s) (the device table is warm)\n",
	       (unsigned long long)c.cpages, (unsigned long long)c.faults);

	memset(buf + SIZE / 2, 'B', PAGE); /* the CPU writes one page */
	madvise(buf + SIZE - (2UL << 20), 2UL << 20, MADV_DONTNEED); /* and drops 2 MiB */
	if (dev_cmd(fd, HMM_DMIRROR_READ, buf, out, NPAGES, &c))
		return 1;
	printf("  after the CPU changed the buffer: %llu pages, %llu device fault(s); "
	       "byte at 4 MiB '%c', last byte %d (dropped: zero)\n",
	       (unsigned long long)c.cpages, (unsigned long long)c.faults, out[SIZE / 2],
	       out[SIZE - 1]);

	memset(out, 'D', SIZE);
	if (dev_cmd(fd, HMM_DMIRROR_WRITE, buf, out, NPAGES, &c))
		return 1;
	printf("  device write: %llu pages, %llu device fault(s); the CPU now reads '%c'\n",
	       (unsigned long long)c.cpages, (unsigned long long)c.faults, buf[12345]);

	if (dev_cmd(fd, HMM_DMIRROR_SNAPSHOT, buf, snap, NPAGES, &c))
		return 1;
	for (unsigned long i = 0; i < NPAGES; i++)
		kinds[snap[i]]++;
	printf("  snapshot of the CPU mappings: %lu pages in 2 MiB mappings (read-write), "
	       "%lu 4 KiB read-write, %lu read-only\n",
	       kinds[HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD],
	       kinds[HMM_DMIRROR_PROT_WRITE], kinds[HMM_DMIRROR_PROT_READ]);

	/* Migrate the first 2 MiB into the device's memory. */
	if (dev_cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, out, 512, &c))
		return 1;
	printf("  migrated to device memory: %llu pages (the device read back '%c')\n",
	       (unsigned long long)c.cpages, out[0]);
	if (dev_cmd(fd, HMM_DMIRROR_SNAPSHOT, buf, snap, 512, &c))
		return 1;
	memset(kinds, 0, sizeof(kinds));
	for (unsigned long i = 0; i < 512; i++)
		kinds[snap[i] & 0xf0]++;
	printf("  snapshot: %lu of 512 pages are in this device's memory, %s\n",
	       kinds[HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL],
	       snap[0] & HMM_DMIRROR_PROT_PMD ? "as one 2 MiB device folio (PMD entry)" :
						"as 4 KiB device pages");
	if (kinds[HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL] != 512 || out[0] != 'D')
		return 1;
	/* The CPU touches one of them: it is faulted back (migrate_to_ram). */
	before = read_counter("migrated_to_ram_on_cpu_fault");
	touched = *(volatile char *)&buf[7 * PAGE + 5];
	printf("  the CPU reads page 7: '%c'; the fault brought back %llu page(s)\n", touched,
	       read_counter("migrated_to_ram_on_cpu_fault") - before);
	if (dev_cmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, out, 512, &c))
		return 1;
	printf("  migrated back to system memory: the other %llu pages\n",
	       (unsigned long long)c.cpages);
	for (unsigned long i = 0; i < 512 * PAGE; i += PAGE)
		if (buf[i] != 'D')
			return 1;
	show_counters("at end");
	close(fd);
	return 0;
}
