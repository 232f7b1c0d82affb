// SPDX-License-Identifier: GPL-2.0
/*
 * Guest test of the ai-kernel-rs HMM mirror devices /dev/aikrs_hmm0 and 1 (KTAP):
 * bad input, the device node closed while a mirror is in use, the mirrored process
 * exiting first, invalidation (what the device reads after the CPU side
 * changed), a device write to device memory shared after a fork, and a 2 MiB
 * device folio read by another device, split and evicted, and migrations in flight
 * while the CPU faults pages back, the memory is released and the file is closed;
 * then every command with the largest arguments the ABI takes (it must fail or
 * finish within seconds) and long commands killed with SIGKILL (they must end).
 * hmm_selftest_test.c runs
 * the kernel's own hmm-tests; this covers what they do not. Any oops, WARN or leak report in the kernel log fails the guest run
 * (scripts/guest.sh).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../tools/testing/aikrs/wait_child.h"
#include "hmm_user.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PAGE 4096UL

static int ntest, nfail;

static void result(int ok, const char *name)
{
	ntest++;
	if (!ok)
		nfail++;
	printf("%s %d %s\n", ok ? "ok" : "not ok", ntest, name);
	fflush(stdout);
}

static int dev_open(int unit)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/dev/aikrs_hmm%d", unit);
	fd = open(path, O_RDWR);
	if (fd < 0) {
		printf("# open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

/* The ioctl's result: 0 or -errno. */
static int cmd(int fd, unsigned long req, uint64_t addr, void *ptr, uint64_t npages,
	       struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd c = { .addr = addr, .ptr = (uintptr_t)ptr, .npages = npages };

	if (ioctl(fd, req, &c))
		return -errno;
	if (out)
		*out = c;
	return 0;
}

static void *map_anon(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		printf("# mmap: %s\n", strerror(errno));
		exit(1);
	}
	return p;
}

static void test_bad_input(void)
{
	int fd = dev_open(0);
	size_t n = 4;
	char *buf = map_anon(n * PAGE), *out = map_anon(n * PAGE);
	unsigned long reqs[] = { HMM_DMIRROR_READ, HMM_DMIRROR_WRITE, HMM_DMIRROR_SNAPSHOT };
	int ok = 1;

	memset(buf, 1, n * PAGE);
	for (unsigned int i = 0; i < 3; i++) {
		unsigned long r = reqs[i];
		int e;

		/* Unaligned address. */
		e = cmd(fd, r, (uintptr_t)buf + 1, out, 1, NULL);
		ok &= e == -EINVAL;
		/* No pages. */
		e = cmd(fd, r, (uintptr_t)buf, out, 0, NULL);
		ok &= e == -EINVAL;
		/* A range that wraps around the address space. */
		e = cmd(fd, r, (uintptr_t)buf, out, UINT64_MAX / PAGE, NULL);
		ok &= e == -EINVAL;
		e = cmd(fd, r, UINT64_MAX & ~(PAGE - 1), out, 2, NULL);
		ok &= e == -EINVAL;
		/* The command itself at a bad address. */
		ok &= ioctl(fd, r, (void *)8) == -1 && errno == EFAULT;
		if (!ok)
			printf("# bad input refused wrongly by request %#lx (last: %d)\n", r, e);
	}
	/* Unmapped source address: the device fault fails. */
	{
		char *hole = map_anon(n * PAGE);
		int e;

		munmap(hole, n * PAGE);
		e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)hole, out, n, NULL);
		ok &= e == -EFAULT;
		e = cmd(fd, HMM_DMIRROR_WRITE, (uintptr_t)hole, out, n, NULL);
		ok &= e == -EFAULT;
		/* A snapshot does not fault: it reports the hole. */
		e = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)hole, out, n, NULL);
		ok &= e == 0 && (unsigned char)out[0] == HMM_DMIRROR_PROT_ERROR;
		if (!ok)
			printf("# unmapped address: %d\n", e);
	}
	/* Bad user buffer (the data side). */
	{
		int e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, (void *)8, n, NULL);
		int e2 = cmd(fd, HMM_DMIRROR_WRITE, (uintptr_t)buf, (void *)8, n, NULL);
		int e3 = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, (void *)8, n, NULL);

		ok &= e == -EFAULT && e2 == -EFAULT && e3 == -EFAULT;
		if (!ok)
			printf("# bad data pointer: %d %d %d\n", e, e2, e3);
	}
	/* Unknown command numbers. */
	{
		struct hmm_dmirror_cmd c = { 0 };

		ok &= ioctl(fd, _IOWR('H', 0x3f, struct hmm_dmirror_cmd), &c) == -1 &&
		      errno == EINVAL;
		ok &= ioctl(fd, _IO('Z', 1), 0) == -1 && errno == EINVAL;
	}
	/* Still works afterwards. */
	ok &= cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, n, NULL) == 0 &&
	      !memcmp(buf, out, n * PAGE);
	close(fd);
	munmap(buf, n * PAGE);
	munmap(out, n * PAGE);
	result(ok, "bad_input");
}

static int all(const char *p, int v, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (char)v)
			return 0;
	return 1;
}

static int check(int ok, const char *what, int e, const struct hmm_dmirror_cmd *c)
{
	if (!ok)
		printf("# %s: error %d, cpages %llu, faults %llu\n", what, e,
		       (unsigned long long)c->cpages, (unsigned long long)c->faults);
	return ok;
}

/*
 * The device reads what the CPU side maps now: after the CPU writes (copy-on-write of
 * the zero page, say) or the memory is unmapped and mapped again, the device's old
 * entries are gone (invalidated) and it faults and reads the new pages.
 */
static void test_invalidation(void)
{
	int fd = dev_open(0);
	size_t n = 64;
	char *buf = map_anon(n * PAGE), *out = map_anon(n * PAGE);
	struct hmm_dmirror_cmd c = { 0 };
	int ok = 1;

	int e;

	/* Never written: the device sees the zero page. */
	e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, n, &c);
	ok &= check(e == 0 && c.faults == 1 && all(out, 0, n * PAGE), "zero page", e, &c);
	/* Written by the CPU: new pages replace the zero page; the device re-faults. */
	memset(buf, 0x5a, n * PAGE);
	e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, n, &c);
	ok &= check(e == 0 && c.faults == 1 && all(out, 0x5a, n * PAGE), "after CPU write", e, &c);
	/* Read again: nothing changed, no fault. */
	e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, n, &c);
	ok &= check(e == 0 && c.faults == 0 && c.cpages == n, "read again", e, &c);
	/* Device writes land in the CPU's pages. */
	memset(out, 0xa5, n * PAGE);
	e = cmd(fd, HMM_DMIRROR_WRITE, (uintptr_t)buf, out, n, &c);
	ok &= check(e == 0 && c.cpages == n && all(buf, 0xa5, n * PAGE), "device write", e, &c);
	/* Unmapped and mapped again at the same address: fresh zero memory. */
	ok &= mmap(buf, n * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == buf;
	e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, n, &c);
	ok &= check(e == 0 && c.faults == 1 && all(out, 0, n * PAGE), "remapped", e, &c);
	close(fd);
	munmap(buf, n * PAGE);
	munmap(out, n * PAGE);
	result(ok, "invalidation");
}

struct closer {
	int fd;
	char *buf, *out;
	size_t n;
	atomic_int stop;
	atomic_long calls, errors;
};

static void *read_loop(void *arg)
{
	struct closer *c = arg;

	while (!atomic_load(&c->stop)) {
		int e = cmd(c->fd, HMM_DMIRROR_READ, (uintptr_t)c->buf, c->out, c->n, NULL);

		atomic_fetch_add(&c->calls, 1);
		if (e)
			atomic_fetch_add(&c->errors, 1);
	}
	return NULL;
}

/*
 * One thread keeps the device reading while another closes the file and the memory
 * changes underneath: the file lives on until the last ioctl returns, and closing
 * tears the mirror down (notifier removed, table freed) without a leak or a WARN.
 * Afterwards, the process exits while it still mirrors itself (the mm goes first,
 * then the file).
 */
static void test_close_while_active(void)
{
	struct closer c = { .n = 256 };
	pthread_t th;
	int ok = 1, status;
	pid_t pid;

	c.buf = map_anon(c.n * PAGE);
	c.out = map_anon(c.n * PAGE);
	memset(c.buf, 7, c.n * PAGE);
	c.fd = dev_open(0);
	pthread_create(&th, NULL, read_loop, &c);
	while (atomic_load(&c.calls) < 20) {
		madvise(c.buf, c.n * PAGE, MADV_DONTNEED);
		memset(c.buf, 7, c.n * PAGE);
	}
	close(c.fd); /* the reader's ioctls now fail with EBADF */
	usleep(10000);
	atomic_store(&c.stop, 1);
	pthread_join(th, NULL);
	ok &= atomic_load(&c.calls) >= 20;

	pid = fork();
	if (pid == 0) {
		int fd0 = dev_open(0), fd1 = dev_open(1);
		int e0, e1;

		/* Device 0 reads the buffer; device 1 writes it back: both must work. */
		memset(c.out, 0, c.n * PAGE);
		e0 = cmd(fd0, HMM_DMIRROR_READ, (uintptr_t)c.buf, c.out, c.n, NULL);
		e1 = cmd(fd1, HMM_DMIRROR_WRITE, (uintptr_t)c.buf, c.out, c.n, NULL);
		if (e0 || e1 || !all(c.out, 7, c.n * PAGE) || !all(c.buf, 7, c.n * PAGE)) {
			printf("# child: read %d, write %d, data %s\n", e0, e1,
			       all(c.out, 7, c.n * PAGE) ? "intact" : "wrong");
			_exit(1);
		}
		_exit(0); /* without closing */
	}
	ok &= waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status);
	printf("# %ld reads while closing (%ld failed after the close)\n",
	       atomic_load(&c.calls), atomic_load(&c.errors));
	result(ok, "close_while_active");
}

/*
 * A page in device memory shared copy-on-write after a fork is read-only for the
 * device too: a device write to it must fail (EFAULT, as test_hmm), not fault again
 * forever. Reads still work, and the child sees its own copy unchanged.
 */
static void test_write_shared_device_page(void)
{
	int fd = dev_open(0), ok = 1, status, e, sync_fds[2];
	size_t n = 4;
	char *buf = map_anon(n * PAGE), *out = map_anon(n * PAGE), c = 0;
	struct hmm_dmirror_cmd cm = { 0 };
	pid_t pid;

	memset(buf, 3, n * PAGE);
	e = cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)buf, out, n, &cm);
	ok &= check(e == 0 && cm.cpages == n, "migrate", e, &cm);
	if (pipe(sync_fds))
		exit(1);
	pid = fork();
	if (pid == 0) {
		/* Keep the pages shared until the parent is done. */
		if (read(sync_fds[0], &c, 1) != 1)
			_exit(2);
		_exit(buf[0] == 3 && buf[n * PAGE - 1] == 3 ? 0 : 1);
	}
	memset(out, 9, n * PAGE);
	e = cmd(fd, HMM_DMIRROR_WRITE, (uintptr_t)buf, out, n, &cm);
	ok &= check(e == -EFAULT, "device write to a shared device page", e, &cm);
	e = cmd(fd, HMM_DMIRROR_READ, (uintptr_t)buf, out, n, &cm);
	ok &= check(e == 0 && all(out, 3, n * PAGE), "device read of it", e, &cm);
	if (write(sync_fds[1], &c, 1) != 1)
		ok = 0;
	ok &= waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status);
	close(fd);
	munmap(buf, n * PAGE);
	munmap(out, n * PAGE);
	result(ok, "write_shared_device_page");
}

/*
 * A snapshot of more than one 2 MiB block: one byte per page, back to back, and
 * nothing written past them.
 */
static void test_snapshot_layout(void)
{
	int fd = dev_open(0), ok = 1, e;
	size_t n = 1536; /* 6 MiB: the walk goes in 2 MiB blocks */
	char *buf = map_anon(n * PAGE);
	unsigned char *out = map_anon(2 * PAGE);
	struct hmm_dmirror_cmd cm = { 0 };

	memset(buf, 1, n * PAGE);
	memset(out, 0x77, 2 * PAGE);
	e = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)buf, out, n, &cm);
	ok &= check(e == 0 && cm.cpages == n, "snapshot", e, &cm);
	for (size_t i = 0; i < n; i++)
		ok &= (out[i] & HMM_DMIRROR_PROT_WRITE) && out[i] != HMM_DMIRROR_PROT_ERROR;
	for (size_t i = n; i < 2 * PAGE; i++)
		ok &= out[i] == 0x77;
	if (!ok)
		printf("# snapshot bytes: %#x %#x %#x, after them %#x\n", out[0], out[600],
		       out[n - 1], out[n]);
	close(fd);
	munmap(buf, n * PAGE);
	munmap(out, 2 * PAGE);
	result(ok, "snapshot_layout");
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define HUGE (2UL << 20)

/* Whether the kernel has 2 MiB device-private folios (Linux 7 here). */
static int kernel_has_huge_devmem(void)
{
	char rel[64] = "";
	FILE *f = fopen("/proc/sys/kernel/osrelease", "r");

	if (f) {
		if (!fgets(rel, sizeof(rel), f))
			rel[0] = 0;
		fclose(f);
	}
	return atoi(rel) >= 7;
}

/* A 2 MiB-aligned THP filled with `v` + page index, or NULL if none can be had. */
static char *map_thp(char **base, int fd, int v)
{
	char *raw = map_anon(2 * HUGE), *p;
	unsigned char snap[512];
	struct hmm_dmirror_cmd c = { 0 };

	*base = raw;
	p = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	madvise(p, HUGE, MADV_HUGEPAGE);
	for (size_t i = 0; i < HUGE / PAGE; i++)
		memset(p + i * PAGE, v + (int)i, PAGE);
	if (cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, snap, 512, &c) || !(snap[0] & HMM_DMIRROR_PROT_PMD))
		madvise(p, HUGE, MADV_COLLAPSE);
	if (cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, snap, 512, &c) || !(snap[0] & HMM_DMIRROR_PROT_PMD))
		return NULL;
	return p;
}

static int thp_intact(const char *p, int v, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (!all(p + i * PAGE, v + (int)i, PAGE))
			return 0;
	return 1;
}

/*
 * A THP migrated to device memory: on Linux 7 it becomes one 2 MiB device folio
 * (the snapshot says PMD). Then the paths hmm-tests does not take with one:
 * HMM_DMIRROR_FLAGS input checks; a second device reading it (the first device's
 * folio goes back to RAM whole, as a THP, through migrate_to_ram); a partial
 * munmap (the device PMD entry is split into PTEs) and a CPU read of the rest (each
 * fault splits the device folio, folio_split op: the data of every piece must still
 * be right); and RELEASE (eviction) of a whole 2 MiB device folio still mapped,
 * which comes back as a THP.
 */
static void test_huge_device_folio(void)
{
	int fd = dev_open(0), fd1 = dev_open(1), ok = 1, e;
	int huge = kernel_has_huge_devmem();
	const unsigned char where = 0xf0; /* the DEV_PRIVATE_* and ZERO bits */
	unsigned char snap[512];
	char *base, *p, *out = map_anon(HUGE);
	struct hmm_dmirror_cmd c = { 0 };

	/* Flags: unknown bits are refused, no range is needed. */
	ok &= check(cmd(fd, HMM_DMIRROR_FLAGS, 0, NULL, 2, &c) == -EINVAL, "unknown flag", 0, &c);
	ok &= check(cmd(fd, HMM_DMIRROR_FLAGS, 0, NULL, 0, &c) == 0, "no flags", 0, &c);

	for (int step = 0; step < 3; step++) {
		p = map_thp(&base, fd, step * 16);
		if (!p) {
			printf("# no THP could be had (step %d)\n", step);
			ok = 0;
			break;
		}
		e = cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)p, out, 512, &c);
		ok &= check(e == 0 && c.cpages == 512 && thp_intact(out, step * 16, 0, 512),
			    "migrate THP", e, &c);
		e = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, snap, 512, &c);
		ok &= check(e == 0 && (snap[0] & where) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL &&
				      (snap[511] & where) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL &&
				      !!(snap[0] & HMM_DMIRROR_PROT_PMD) == huge &&
				      !!(snap[511] & HMM_DMIRROR_PROT_PMD) == huge,
			    "snapshot in device memory", e, &c);
		if (step == 0) {
			/* The other device faults it back (whole) and reads it. */
			e = cmd(fd1, HMM_DMIRROR_READ, (uintptr_t)p, out, 512, &c);
			ok &= check(e == 0 && thp_intact(out, 0, 0, 512), "read by device 1", e, &c);
			e = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, snap, 512, &c);
			ok &= check(e == 0 && (snap[0] & where) == 0 && (snap[511] & where) == 0 &&
				      !!(snap[0] & HMM_DMIRROR_PROT_PMD) == huge,
				    "back in RAM (as a THP)", e, &c);
			ok &= check(thp_intact(p, 0, 0, 512), "CPU read after device 1", 0, &c);
		} else if (step == 1) {
			/*
			 * Unmap the middle: the device PMD entry becomes PTEs (still
			 * device memory, no longer PMD-sized); each CPU fault then
			 * splits the device folio and brings back its page.
			 */
			munmap(p + HUGE / 4, HUGE / 2);
			e = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, snap, 128, &c);
			ok &= check(e == 0 && (snap[0] & where) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL &&
				      !(snap[0] & HMM_DMIRROR_PROT_PMD),
				    "snapshot after a partial unmap", e, &c);
			ok &= check(thp_intact(p, 16, 0, 128) && thp_intact(p, 16, 384, 512),
				    "CPU read after a partial unmap", 0, &c);
		} else {
			/* Evict it while mapped: RELEASE moves the whole folio back. */
			e = cmd(fd, HMM_DMIRROR_RELEASE, (uintptr_t)p, NULL, 1, &c);
			ok &= check(e == 0, "release", e, &c);
			e = cmd(fd, HMM_DMIRROR_SNAPSHOT, (uintptr_t)p, snap, 512, &c);
			ok &= check(e == 0 && (snap[0] & where) == 0 && (snap[511] & where) == 0 &&
				      !!(snap[0] & HMM_DMIRROR_PROT_PMD) == huge,
				    "snapshot after release (a THP again)", e, &c);
			ok &= check(thp_intact(p, 32, 0, 512), "CPU read after release", 0, &c);
		}
		munmap(base, 2 * HUGE);
	}
	close(fd);
	close(fd1);
	munmap(out, HUGE);
	result(ok, "huge_device_folio");
}

struct migrator {
	int fd;
	char *buf, *out;
	size_t n;
	atomic_int stop;
	atomic_long calls, errors;
};

static void *migrate_loop(void *arg)
{
	struct migrator *m = arg;

	while (!atomic_load(&m->stop)) {
		int e = cmd(m->fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)m->buf, m->out, m->n, NULL);
		int e2 = cmd(m->fd, HMM_DMIRROR_MIGRATE_TO_SYS, (uintptr_t)m->buf, m->out, m->n, NULL);

		atomic_fetch_add(&m->calls, 1);
		if (e || e2)
			atomic_fetch_add(&m->errors, 1);
	}
	return NULL;
}

/*
 * Migrations in flight while everything else happens at once: one thread migrates
 * a 4 MiB buffer (2 MiB device folios on Linux 7) to device memory and back in a
 * loop; meanwhile the CPU reads every page (faulting device pages back), another
 * file RELEASEs the device's memory, and the migrating file is closed. Every page
 * must read its own value throughout. Then a process exits with its buffer still
 * in device memory (its device pages are freed with its mm), and a last RELEASE
 * must find nothing it waits for forever.
 */
static void test_close_while_migrating(void)
{
	struct migrator m = { .n = 1024 };
	char *raw = map_anon(2 * m.n * PAGE);
	pthread_t th;
	int ok = 1, status, fdr;
	long rounds = 0, calls, errors;
	pid_t pid;

	m.buf = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	madvise(m.buf, m.n * PAGE, MADV_HUGEPAGE);
	m.out = map_anon(m.n * PAGE);
	for (size_t i = 0; i < m.n; i++)
		memset(m.buf + i * PAGE, (int)(i % 251) + 1, PAGE);
	m.fd = dev_open(0);
	fdr = dev_open(0);
	pthread_create(&th, NULL, migrate_loop, &m);
	while (atomic_load(&m.calls) < 30 && rounds < 100000) {
		for (size_t i = 0; i < m.n; i += 37)
			ok &= *(volatile char *)(m.buf + i * PAGE + (i % PAGE)) == (char)(i % 251 + 1);
		if (++rounds % 8 == 0)
			ok &= cmd(fdr, HMM_DMIRROR_RELEASE, (uintptr_t)m.buf, NULL, 1, NULL) == 0;
	}
	calls = atomic_load(&m.calls);
	errors = atomic_load(&m.errors);
	close(m.fd); /* the migrator's ioctls now fail with EBADF */
	usleep(10000);
	atomic_store(&m.stop, 1);
	pthread_join(th, NULL);
	ok &= check(atomic_load(&m.calls) >= 30, "migration rounds", 0,
		    &(struct hmm_dmirror_cmd){ .cpages = (uint64_t)atomic_load(&m.calls) });
	for (size_t i = 0; i < m.n; i++)
		ok &= all(m.buf + i * PAGE, (int)(i % 251) + 1, PAGE);
	if (!ok)
		printf("# data or release check failed after %ld rounds\n", rounds);

	pid = fork();
	if (pid == 0) {
		int fd = dev_open(0);
		char *b = map_anon(m.n * PAGE);

		memset(b, 5, m.n * PAGE);
		_exit(cmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)b, m.out, m.n, NULL) ? 1 : 0);
	}
	ok &= waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status);
	ok &= check(cmd(fdr, HMM_DMIRROR_RELEASE, (uintptr_t)m.buf, NULL, 1, NULL) == 0,
		    "release after the exit", 0, &(struct hmm_dmirror_cmd){ 0 });
	printf("# before the close: %ld migration rounds (%ld with an error: pages taken back by "
	       "the CPU or a release meanwhile), %ld CPU passes\n", calls, errors, rounds);
	close(fdr);
	munmap(raw, 2 * m.n * PAGE);
	munmap(m.out, m.n * PAGE);
	result(ok, "close_while_migrating");
}

struct freer {
	int fd;
	char *buf, *out;
	size_t n;
	int val;
	atomic_int *stop;
	long rounds, bad, to_dev, to_sys, errors;
};

/*
 * Moves its buffer to device memory and back: each return frees n device pages. While
 * a RELEASE takes the device memory away, a migration to the device may find none
 * (ENOMEM) or leave pages neither migrated nor mirrored (ENOENT, EBUSY); any other
 * error counts.
 */
static void *free_loop(void *arg)
{
	struct freer *f = arg;

	while (!atomic_load(f->stop)) {
		struct hmm_dmirror_cmd c = { 0 };
		int e;

		e = cmd(f->fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)f->buf, f->out, f->n, &c);
		if (!e)
			f->to_dev += (long)c.cpages;
		else if (e != -ENOMEM && e != -ENOENT && e != -EBUSY && !f->errors++)
			printf("# release_vs_page_free: MIGRATE_TO_DEV: %s\n", strerror(-e));
		c.cpages = 0;
		e = cmd(f->fd, HMM_DMIRROR_MIGRATE_TO_SYS, (uintptr_t)f->buf, f->out, f->n, &c);
		if (!e)
			f->to_sys += (long)c.cpages;
		else if (e != -ENOMEM && !f->errors++)
			printf("# release_vs_page_free: MIGRATE_TO_SYS: %s\n", strerror(-e));
		if (!all(f->buf, f->val, f->n * PAGE))
			f->bad++;
		f->rounds++;
	}
	return NULL;
}

struct releaser {
	int fd;
	uintptr_t addr;
	atomic_int *stop;
	atomic_long calls;	/* RELEASE calls returned, read by the remappers meanwhile */
	long ok, busy, other;
};

/* RELEASEs the device's memory in a loop; counts the answers. */
static void *release_loop(void *arg)
{
	struct releaser *r = arg;

	while (!atomic_load(r->stop)) {
		int e = cmd(r->fd, HMM_DMIRROR_RELEASE, r->addr, NULL, 1, NULL);

		r->calls++;
		if (e == 0)
			r->ok++;
		else if (e == -EBUSY)
			r->busy++;
		else
			r->other++;
	}
	return NULL;
}

#define RELEASE_RACE_S 8

/*
 * Device pages freed while the device memory is released (a race of issue 14: a
 * page freed during a RELEASE went back to the free list of a range the RELEASE then
 * unmapped, so a later allocation used a freed struct page). Two threads move 2 MiB
 * buffers to device memory and back (every return frees 512 device pages) while a
 * third RELEASEs the device's memory in a loop, for RELEASE_RACE_S seconds; then the
 * device memory is allocated and freed again and every byte checked. RELEASE may
 * answer -EBUSY (pages in use); any other error, or a byte lost, fails the case, and
 * a freed struct page handed out again is a kernel report.
 */
static void test_release_vs_page_free(void)
{
	const size_t n = 512;
	atomic_int stop = 0;
	struct freer f[2];
	struct releaser r = { .stop = &stop };
	pthread_t th[3];
	char *buf = map_anon(n * PAGE), *out = map_anon(n * PAGE);
	long after = 0, bad = 0;
	int ok = 1;

	for (int i = 0; i < 2; i++) {
		f[i] = (struct freer){ .fd = dev_open(0), .buf = map_anon(n * PAGE),
				       .out = map_anon(n * PAGE), .n = n, .val = 0x31 + i,
				       .stop = &stop };
		memset(f[i].buf, f[i].val, n * PAGE);
		pthread_create(&th[i], NULL, free_loop, &f[i]);
	}
	r.fd = dev_open(0);
	r.addr = (uintptr_t)f[0].buf;
	pthread_create(&th[2], NULL, release_loop, &r);
	sleep(RELEASE_RACE_S);
	atomic_store(&stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	/* Allocate and free the device memory again: every page must be sound. */
	memset(buf, 0x5a, n * PAGE);
	for (int i = 0; i < 20; i++) {
		if (cmd(r.fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)buf, out, n, NULL) ||
		    cmd(r.fd, HMM_DMIRROR_MIGRATE_TO_SYS, (uintptr_t)buf, out, n, NULL))
			bad++;
		after++;
	}
	ok &= all(buf, 0x5a, n * PAGE);
	ok &= !f[0].bad && !f[1].bad && !f[0].errors && !f[1].errors && !r.other && bad == 0;
	/* Pages went to the device and came back (freed), and RELEASEs completed. */
	ok &= f[0].to_sys + f[1].to_sys > 0 && f[0].to_dev + f[1].to_dev > 0 && r.ok > 0;
	printf("# release_vs_page_free: %ld + %ld migration rounds (%ld + %ld pages to the "
	       "device, %ld + %ld back, %ld + %ld errors, %ld + %ld with lost data), %ld "
	       "RELEASEs (%ld ok, %ld -EBUSY, %ld other), %ld rounds after (%ld failed)\n",
	       f[0].rounds, f[1].rounds, f[0].to_dev, f[1].to_dev, f[0].to_sys, f[1].to_sys,
	       f[0].errors, f[1].errors, f[0].bad, f[1].bad, (long)r.calls, r.ok, r.busy, r.other,
	       after, bad);
	for (int i = 0; i < 2; i++) {
		close(f[i].fd);
		munmap(f[i].buf, n * PAGE);
		munmap(f[i].out, n * PAGE);
	}
	close(r.fd);
	munmap(buf, n * PAGE);
	munmap(out, n * PAGE);
	result(ok, "release_vs_page_free");
}

struct remapper {
	int fd, pagemap;
	char *at, *out;
	size_t n;
	int val;
	atomic_int *stop;
	long rounds, on_dev, bad, mmap_err;
	atomic_long caught;	/* read by the main thread meanwhile */
	atomic_long *release_done;	/* the releaser's count of RELEASEs returned */
};

/* The /proc/self/pagemap entry of `addr` (bit 62: a swap-type entry, bits 0-4 its type). */
static uint64_t pagemap_entry(int fd, const void *addr)
{
	uint64_t e = 0;

	if (pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / PAGE * sizeof(e))) != sizeof(e))
		return 0;
	return e;
}

#define PM_SWAP (1ULL << 62)
#define PM_SWAP_TYPE(e) ((e) & 0x1f)

/*
 * Maps fresh memory over its range with MAP_FIXED (freeing the old mapping's
 * anon_vma), fills it and moves it to device memory; then watches the first page's
 * pagemap entry: when a RELEASE's eviction replaces the device-private entry with a
 * migration entry (another swap type), the next MAP_FIXED runs at once, inside the
 * eviction's window between its unmap and its migrate_device_finalize(). A page that
 * came back to system memory (the eviction finished) must hold its data.
 */
static void *remap_loop(void *arg)
{
	struct remapper *m = arg;
	long hit = -1;	/* RELEASEs returned before the pagemap read that saw the hit */

	while (!atomic_load(m->stop)) {
		struct hmm_dmirror_cmd c = { 0 };
		uint64_t e, type;

		if (mmap(m->at, m->n * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != m->at) {
			m->mmap_err++;
			break;
		}
		/*
		 * A remap inside an eviction: the RELEASE that was evicting the page
		 * (no RELEASE returned since before the hit) still ran when it returned.
		 */
		if (hit >= 0 && atomic_load(m->release_done) == hit)
			m->caught++;
		hit = -1;
		memset(m->at, m->val, m->n * PAGE);
		m->rounds++;
		if (cmd(m->fd, HMM_DMIRROR_MIGRATE_TO_DEV, (uintptr_t)m->at, m->out, m->n, &c) ||
		    !c.cpages)
			continue;
		m->on_dev += (long)c.cpages;
		e = pagemap_entry(m->pagemap, m->at);
		if (!(e & PM_SWAP))
			continue;
		type = PM_SWAP_TYPE(e);
		/* Up to about 2 s: a RELEASE comes every few hundred ms. */
		for (long i = 0; i < 200000 && !atomic_load(m->stop); i++) {
			long d = atomic_load(m->release_done);

			e = pagemap_entry(m->pagemap, m->at);
			if (!(e & PM_SWAP)) {
				/* Evicted and mapped again: the data must be there. */
				if (!all(m->at, m->val, m->n * PAGE))
					m->bad++;
				break;
			}
			if (PM_SWAP_TYPE(e) != type) {
				hit = d;
				break;
			}
		}
	}
	return NULL;
}

/*
 * RELEASE against munmap (issue 14, found by the fuzzer): a RELEASE evicts device
 * pages by pfn (migrate_device_range(), no mmap_lock). Linux's migrate_device_unmap()
 * did not pin the folios' anon_vma, so a munmap() between the eviction's unmap and
 * its migrate_device_finalize() freed the anon_vma that remove_migration_ptes() then
 * walked (KASAN: slab-use-after-free in rmap_walk_anon). Fixed by the carried kernel
 * patch "mm/migrate_device: pin the anon_vma" in scripts/patches/. Two threads map
 * fresh memory over their ranges with MAP_FIXED, fill them and move them to device
 * memory, while a third RELEASEs, for RELEASE_RACE_S seconds and until remaps ran
 * inside evictions. A kernel report fails the run; here: data read back must be
 * intact, RELEASE answers 0 or -EBUSY, and remaps must have run inside an eviction
 * (else the race was never set up).
 */
static void test_release_vs_munmap(void)
{
	const size_t n = 256;
	atomic_int stop = 0;
	struct remapper m[2];
	struct releaser r = { .stop = &stop };
	pthread_t th[3];
	int ok = 1;

	for (int i = 0; i < 2; i++) {
		/*
		 * Between PROT_NONE guards: a neighbouring anon mapping would share
		 * (and keep alive) the range's anon_vma.
		 */
		char *g = mmap(NULL, (n + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);

		if (g == MAP_FAILED) {
			printf("# mmap: %s\n", strerror(errno));
			exit(1);
		}
		m[i] = (struct remapper){ .fd = dev_open(0), .at = g + PAGE,
					  .pagemap = open("/proc/self/pagemap", O_RDONLY),
					  .out = map_anon(n * PAGE), .n = n, .val = 0x41 + i,
					  .stop = &stop, .release_done = &r.calls };
		pthread_create(&th[i], NULL, remap_loop, &m[i]);
	}
	r.fd = dev_open(0);
	r.addr = (uintptr_t)m[0].at;
	pthread_create(&th[2], NULL, release_loop, &r);
	/* At least RELEASE_RACE_S, and until 4 remaps ran inside an eviction (30 s at most). */
	for (int s = 1; s <= 30; s++) {
		sleep(1);
		if (s >= RELEASE_RACE_S && m[0].caught + m[1].caught >= 4)
			break;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 2; i++)
		ok &= !m[i].bad && !m[i].mmap_err && m[i].on_dev > 0;
	/* No remap inside an eviction: the race was never set up, the case proves nothing. */
	ok &= !r.other && r.ok > 0 && m[0].caught + m[1].caught > 0;
	printf("# release_vs_munmap: %ld + %ld remap rounds (%ld + %ld pages to the device, "
	       "%ld + %ld remaps inside an eviction, %ld + %ld with lost data, %ld + %ld mmap "
	       "errors), %ld RELEASEs (%ld ok, %ld -EBUSY, %ld other)\n", m[0].rounds,
	       m[1].rounds, m[0].on_dev, m[1].on_dev, (long)m[0].caught, (long)m[1].caught,
	       m[0].bad, m[1].bad, m[0].mmap_err, m[1].mmap_err, (long)r.calls, r.ok, r.busy, r.other);
	for (int i = 0; i < 2; i++) {
		close(m[i].fd);
		close(m[i].pagemap);
		munmap(m[i].at - PAGE, (n + 2) * PAGE);
		munmap(m[i].out, n * PAGE);
	}
	close(r.fd);
	result(ok, "release_vs_munmap");
}

/*
 * The end of the user address space (x86-64 TASK_SIZE): 2^56 - 4 KiB with 5-level
 * paging (an address above 2^47 can be mapped), else 2^47 - 4 KiB.
 */
static uint64_t user_end(void)
{
	void *hint = (void *)(1UL << 47);
	void *p = mmap(hint, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0);

	if (p == MAP_FAILED)
		return (1UL << 47) - PAGE;
	munmap(p, PAGE);
	return p == hint ? (1UL << 56) - PAGE : (1UL << 47) - PAGE;
}

/* Seconds a command with the largest arguments may take (its child's alarm). */
#define HUGE_ARGS_S 5

/*
 * One command with the largest arguments the ABI takes, in a child that SIGALRM ends
 * after HUGE_ARGS_S seconds: beyond the user address space (EINVAL before any work;
 * the old driver ran CHECK_EXCLUSIVE page by page over 2^52 pages, under its lock),
 * then the largest valid ranges (2^40 pages from a small mapping, valid with 5-level
 * paging; the whole address space), which must fail or finish in time. Returns
 * whether every result was as expected.
 */
static int huge_args_child(unsigned long req, uint64_t end)
{
	int fd = dev_open(0), ok = 1, e[5];
	/* Four mapped pages and a hole after them; the output buffer holds 2 MiB. */
	char *p = map_anon(8 * PAGE), *out = map_anon(HUGE);

	munmap(p + 4 * PAGE, 4 * PAGE);
	memset(p, 1, 4 * PAGE);
	/* A few entries in the device table (CHECK_EXCLUSIVE walks them). */
	cmd(fd, HMM_DMIRROR_READ, (uintptr_t)p, out, 4, NULL);
	/*
	 * A command this kernel's driver does not have (READ_UNLOCKED needs
	 * CONFIG_AIKRS_HMM_FAULT_UNLOCKED, on Linux 7) fails with EINVAL whatever its
	 * range: nothing to test. (Any other command must take this valid range.)
	 */
	if (req == HMM_DMIRROR_READ_UNLOCKED &&
	    cmd(fd, req, (uintptr_t)p, out, 1, NULL) == -EINVAL)
		return 2;
	alarm(HUGE_ARGS_S);
	/* Ending one page beyond the user address space, starting at its end. */
	e[0] = cmd(fd, req, end - PAGE, out, 2, NULL);
	e[1] = cmd(fd, req, end, out, 1, NULL);
	/* The most pages that do not wrap, from 0. */
	e[2] = cmd(fd, req, 0, out, UINT64_MAX / PAGE, NULL);
	e[3] = cmd(fd, req, (uintptr_t)p, out, 1ULL << 40, NULL);
	e[4] = cmd(fd, req, 0, out, end / PAGE, NULL);
	alarm(0);
	ok &= e[0] == -EINVAL && e[2] == -EINVAL;
	/* HMM_DMIRROR_FLAGS takes no range: npages 1 is a valid flag. */
	ok &= e[1] == -EINVAL || (req == HMM_DMIRROR_FLAGS && e[1] == 0);
	if (!ok)
		printf("# request %#lx: %d %d %d (want %d), then %d %d\n", req, e[0], e[1], e[2],
		       -EINVAL, e[3], e[4]);
	else
		printf("# request %#lx: largest valid ranges gave %d and %d\n", req, e[3], e[4]);
	fflush(stdout);
	close(fd);
	return ok;
}

static void test_huge_args(const char *name, unsigned long req, uint64_t end)
{
	char title[64];
	int status, ok;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int r = huge_args_child(req, end);

		_exit(r == 2 ? 2 : r ? 0 : 1);
	}
	ok = wait_ms(pid, (HUGE_ARGS_S + 5) * 1000, &status);
	if (!ok) {
		printf("# %s: still running 5 s after its alarm (not killable)\n", name);
		kill(pid, SIGKILL);
		wait_ms(pid, 5000, &status);
	} else if (WIFSIGNALED(status)) {
		printf("# %s: ended by signal %d (SIGALRM: it took more than %d s)\n", name,
		       WTERMSIG(status), HUGE_ARGS_S);
		ok = 0;
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
		ntest++;
		printf("ok %d huge_args_%s # SKIP the driver of this kernel does not have the "
		       "command (EINVAL for a valid range)\n", ntest, name);
		fflush(stdout);
		return;
	} else {
		ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	}
	snprintf(title, sizeof(title), "huge_args_%s", name);
	result(ok, title);
}

/*
 * A child issues `req` over `len` bytes of anonymous memory that is mapped but never
 * populated (read, and written as the output, where the command has one), a call
 * that runs for many seconds; it is killed with SIGKILL after 1 s and must end within
 * 5 s. The range is 16 TiB where the command reads zero pages and writes few
 * (READ, MIGRATE_TO_SYS, SNAPSHOT), so that it runs for minutes without using memory;
 * EXCLUSIVE allocates a page for every page it gets through, so it gets 512 MiB
 * (seconds of work under TCG, and no more memory than that if the kill failed).
 * WRITE and MIGRATE_TO_DEV, which allocate memory as fast as they go, are left out.
 */
static void test_killable(const char *name, unsigned long req, size_t len)
{
	int sync_fds[2], status, ok, ready;
	char title[64], c = 0;
	pid_t pid;

	if (pipe(sync_fds))
		exit(1);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int fd = dev_open(0), e;
		char *r = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (r == MAP_FAILED)
			_exit(2);
		madvise(r, len, MADV_NOHUGEPAGE);
		if (write(sync_fds[1], &c, 1) != 1)
			_exit(3);
		e = cmd(fd, req, (uintptr_t)r, r, len / PAGE, NULL);
		printf("# %s: the call ended by itself first: %d\n", name, e);
		fflush(stdout);
		_exit(0);
	}
	close(sync_fds[1]);
	/* The child is about to issue the command (or failed to map its range). */
	ready = read(sync_fds[0], &c, 1) == 1;
	close(sync_fds[0]);
	sleep(1);
	kill(pid, SIGKILL);
	ok = wait_ms(pid, 5000, &status);
	snprintf(title, sizeof(title), "killable_%s", name);
	if (!ok) {
		printf("# %s: still running 5 s after SIGKILL\n", name);
	} else if (!ready) {
		printf("# %s: the child could not map %zu MiB (status %#x)\n", name, len >> 20,
		       status);
		ok = 0;
	} else if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
		/* The call ended within 1 s: there was nothing to kill, so nothing is shown. */
		ntest++;
		printf("ok %d %s # SKIP the call ended by itself before the SIGKILL (status %#x)\n",
		       ntest, title, status);
		fflush(stdout);
		return;
	}
	result(ok, title);
}

int main(void)
{
	/* `kill_len`: the range of the killable case (test_killable()), 0 for none. */
	static const struct {
		const char *name;
		unsigned long req;
		size_t kill_len;
	} reqs[] = {
		{ "read", HMM_DMIRROR_READ, 1UL << 44 },
		{ "write", HMM_DMIRROR_WRITE, 0 },
		{ "migrate_to_dev", HMM_DMIRROR_MIGRATE_TO_DEV, 0 },
		{ "migrate_to_sys", HMM_DMIRROR_MIGRATE_TO_SYS, 1UL << 44 },
		{ "snapshot", HMM_DMIRROR_SNAPSHOT, 1UL << 44 },
		{ "exclusive", HMM_DMIRROR_EXCLUSIVE, 512UL << 20 },
		{ "check_exclusive", HMM_DMIRROR_CHECK_EXCLUSIVE, 0 },
		{ "release", HMM_DMIRROR_RELEASE, 0 },
		{ "flags", HMM_DMIRROR_FLAGS, 0 },
		{ "read_unlocked", HMM_DMIRROR_READ_UNLOCKED, 0 },
	};
	const unsigned int nreq = sizeof(reqs) / sizeof(reqs[0]);
	unsigned int nkill = 0;
	uint64_t end = user_end();

	for (unsigned int i = 0; i < nreq; i++)
		nkill += reqs[i].kill_len != 0;
	printf("KTAP version 1\n1..%u\n", 9 + nreq + nkill);
	test_snapshot_layout();
	test_bad_input();
	test_invalidation();
	test_close_while_active();
	test_write_shared_device_page();
	test_huge_device_folio();
	test_close_while_migrating();
	test_release_vs_page_free();
	test_release_vs_munmap();
	printf("# user address space ends at %#llx\n", (unsigned long long)end);
	for (unsigned int i = 0; i < nreq; i++)
		test_huge_args(reqs[i].name, reqs[i].req, end);
	for (unsigned int i = 0; i < nreq; i++)
		if (reqs[i].kill_len)
			test_killable(reqs[i].name, reqs[i].req, reqs[i].kill_len);
	return nfail ? 1 : 0;
}
