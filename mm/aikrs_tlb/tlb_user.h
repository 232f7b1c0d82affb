/* SPDX-License-Identifier: GPL-2.0 */
/*
 * User-space helpers shared by the test, the benchmark and the demo of /dev/aikrs_tlb: buffers
 * mapped one mmap() each (as buffer objects are), reader threads pinned on every CPU,
 * and the kernel's own TLB counters (/proc/interrupts "TLB", /proc/vmstat
 * nr_tlb_remote_flush with CONFIG_DEBUG_TLBFLUSH).
 */
#ifndef AIKRS_TLB_USER_H
#define AIKRS_TLB_USER_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "aikrs_tlb_uapi.h"

#define TLBU_PAGE 4096UL

struct tlbu_bufs {
	int fd;
	unsigned int n;
	uint64_t offset;
	volatile uint64_t **map;
};

/* Maps each of the `b->n` buffers of `b->fd` at `b->offset` with its own mmap(). */
static inline int tlbu_map(struct tlbu_bufs *b)
{
	unsigned int i;

	b->map = calloc(b->n, sizeof(*b->map));
	if (!b->map)
		return -ENOMEM;
	for (i = 0; i < b->n; i++) {
		void *p = mmap(NULL, TLBU_PAGE, PROT_READ, MAP_SHARED, b->fd,
			       b->offset + i * TLBU_PAGE);

		if (p == MAP_FAILED)
			return -errno;
		b->map[i] = p;
	}
	return 0;
}

/* Opens the device, creates `n` one-page buffers and maps each (tlbu_map()). */
static inline int tlbu_create(struct tlbu_bufs *b, unsigned int n)
{
	struct aikrs_tlb_create c = { .count = n, .pages = 1 };

	b->fd = open("/dev/aikrs_tlb", O_RDWR);
	if (b->fd < 0 || ioctl(b->fd, AIKRS_TLB_IOC_CREATE, &c))
		return -errno;
	b->n = n;
	b->offset = c.offset;
	return tlbu_map(b);
}

static inline void tlbu_destroy(struct tlbu_bufs *b)
{
	unsigned int i;

	for (i = 0; i < b->n; i++)
		munmap((void *)b->map[i], TLBU_PAGE);
	free(b->map);
	close(b->fd);
}

static inline int tlbu_revoke(int fd, unsigned int first, unsigned int count,
			      unsigned int flags, struct aikrs_tlb_revoke *out)
{
	struct aikrs_tlb_revoke r = { .first = first, .count = count, .flags = flags };
	int ret = ioctl(fd, AIKRS_TLB_IOC_REVOKE, &r);

	if (out)
		*out = r;
	return ret ? -errno : 0;
}

static inline void tlbu_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static inline uint64_t tlbu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Sum of the "TLB: TLB shootdowns" line of /proc/interrupts over all CPUs. */
static inline uint64_t tlbu_shootdowns(void)
{
	char line[4096];
	uint64_t sum = 0;
	FILE *f = fopen("/proc/interrupts", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *end;

		while (*p == ' ')
			p++;
		if (strncmp(p, "TLB:", 4))
			continue;
		p += 4;
		for (;;) {
			unsigned long long v = strtoull(p, &end, 10);

			if (end == p)
				break;
			sum += v;
			p = end;
		}
	}
	fclose(f);
	return sum;
}

/* A counter of /proc/vmstat (0 if absent). */
static inline uint64_t tlbu_vmstat(const char *name)
{
	char key[128];
	unsigned long long v;
	uint64_t r = 0;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return 0;
	while (fscanf(f, "%127s %llu", key, &v) == 2)
		if (!strcmp(key, name))
			r = v;
	fclose(f);
	return r;
}

/* Reader threads: pinned, reading every buffer in turn until told to stop. */
struct tlbu_readers {
	struct tlbu_bufs *b;
	_Atomic int stop;
	_Atomic unsigned long passes[64];
	pthread_t th[64];
	int first_cpu, ncpu;
};

struct tlbu_reader_arg {
	struct tlbu_readers *r;
	int cpu;
};

static void *tlbu_reader(void *arg)
{
	struct tlbu_reader_arg *a = arg;
	struct tlbu_readers *r = a->r;
	volatile uint64_t sink = 0;
	unsigned int i;

	tlbu_pin(a->cpu);
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		for (i = 0; i < r->b->n; i++)
			sink += *r->b->map[i];
		atomic_fetch_add(&r->passes[a->cpu], 1);
	}
	free(a);
	return NULL;
}

/* Starts readers on CPUs first_cpu..ncpu-1. */
static inline void tlbu_readers_start(struct tlbu_readers *r, struct tlbu_bufs *b,
				      int first_cpu, int ncpu)
{
	int c;

	memset(r, 0, sizeof(*r));
	r->b = b;
	r->first_cpu = first_cpu;
	r->ncpu = ncpu > 64 ? 64 : ncpu;
	for (c = first_cpu; c < r->ncpu; c++) {
		struct tlbu_reader_arg *a = malloc(sizeof(*a));

		a->r = r;
		a->cpu = c;
		pthread_create(&r->th[c], NULL, tlbu_reader, a);
	}
}

/* Waits until every reader finished `n` more full passes (all buffers mapped again). */
static inline void tlbu_readers_settle(struct tlbu_readers *r, unsigned long n)
{
	unsigned long want[64];
	int c, done;

	for (c = r->first_cpu; c < r->ncpu; c++)
		want[c] = atomic_load(&r->passes[c]) + n;
	do {
		done = 1;
		for (c = r->first_cpu; c < r->ncpu; c++)
			if (atomic_load(&r->passes[c]) < want[c])
				done = 0;
		if (!done)
			usleep(500);
	} while (!done);
}

static inline void tlbu_readers_stop(struct tlbu_readers *r)
{
	int c;

	atomic_store(&r->stop, 1);
	for (c = r->first_cpu; c < r->ncpu; c++)
		pthread_join(r->th[c], NULL);
}

#endif /* AIKRS_TLB_USER_H */
