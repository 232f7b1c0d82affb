/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Modules, CPUs and the command line, for the guest tests that load and unload our
 * modules or take CPUs offline themselves (lifecycle_test.c, cpu_hotplug_test.c):
 *
 * - load a module of /lib/modules (finit_module, as busybox insmod) and unload it
 *   (delete_module with O_NONBLOCK, as rmmod); its state in /proc/modules;
 * - KUnit's filter, so that a test's own loads do not run the module's KUnit suites
 *   each time (the guest runs them at its own loads; /init does the same on reload
 *   with aikrs.reload_kunit=0), and put it back as found;
 * - CPU hotplug through /sys/devices/system/cpu/cpuN/online;
 * - a switch of the kernel command line.
 */
#ifndef AIKRS_KMOD_H
#define AIKRS_KMOD_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Loads /lib/modules/NAME.ko with no parameters: 0 or -errno. */
static inline int kmod_load(const char *name)
{
	char path[256];
	int fd, r;

	snprintf(path, sizeof(path), "/lib/modules/%s.ko", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = syscall(SYS_finit_module, fd, "", 0) ? -errno : 0;
	close(fd);
	return r;
}

/* Unloads NAME without waiting (rmmod): 0 or -errno (EAGAIN/EWOULDBLOCK while in use). */
static inline int kmod_unload(const char *name)
{
	return syscall(SYS_delete_module, name, O_NONBLOCK) ? -errno : 0;
}

/* Whether /lib/modules/NAME.ko exists (the test kernel builds our modules =m). */
static inline int kmod_have(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "/lib/modules/%s.ko", name);
	return access(path, R_OK) == 0;
}

enum kmod_state { KMOD_ABSENT, KMOD_LIVE, KMOD_COMING, KMOD_GOING };

/* NAME's state in /proc/modules, and its reference count in *refs (-1 if unknown). */
static inline enum kmod_state kmod_state(const char *name, long *refs)
{
	char line[512], mname[128], state[32], deps[256];
	unsigned long size;
	long r;
	enum kmod_state st = KMOD_ABSENT;
	FILE *f = fopen("/proc/modules", "r");

	if (refs)
		*refs = -1;
	if (!f)
		return KMOD_ABSENT;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%127s %lu %ld %255s %31s", mname, &size, &r, deps, state) != 5 ||
		    strcmp(mname, name))
			continue;
		if (refs)
			*refs = r;
		st = !strcmp(state, "Live") ? KMOD_LIVE :
		     !strcmp(state, "Loading") ? KMOD_COMING : KMOD_GOING;
		break;
	}
	fclose(f);
	return st;
}

/* Waits up to `ms` for NAME to be gone from /proc/modules: 1 if it is. */
static inline int kmod_wait_gone(const char *name, int ms)
{
	for (int t = 0; t <= ms; t += 10) {
		if (kmod_state(name, NULL) == KMOD_ABSENT)
			return 1;
		usleep(10000);
	}
	return 0;
}

/* Unloads NAME, retrying for up to `ms` while it is busy: 0 or the last -errno. */
static inline int kmod_unload_wait(const char *name, int ms)
{
	int r = kmod_unload(name);

	for (int t = 0; r == -EAGAIN && t < ms; t += 50) {
		usleep(50000);
		r = kmod_unload(name);
	}
	return r;
}

#define KUNIT_FILTER_GLOB "/sys/module/kunit/parameters/filter_glob"

/* KUnit's filter as found, to put back. */
struct kunit_filter {
	int saved;
	char glob[512];
};

static inline int kmod_write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* From now on a module load runs none of its KUnit suites (a glob no suite matches). */
static inline void kunit_filter_off(struct kunit_filter *f)
{
	FILE *in = fopen(KUNIT_FILTER_GLOB, "r");

	f->saved = 0;
	if (!in)
		return;
	if (fgets(f->glob, sizeof(f->glob), in)) {
		f->glob[strcspn(f->glob, "\n")] = 0;
		/* Not set: "(null)", i.e. every suite, which "*" also means. */
		if (!strcmp(f->glob, "(null)"))
			strcpy(f->glob, "*");
		f->saved = kmod_write_file(KUNIT_FILTER_GLOB, "aikrs_no_suite_for_test_loads") == 0;
	}
	fclose(in);
}

static inline void kunit_filter_restore(struct kunit_filter *f)
{
	if (f->saved && kmod_write_file(KUNIT_FILTER_GLOB, f->glob))
		printf("# could not restore KUnit's filter_glob \"%s\"\n", f->glob);
	f->saved = 0;
}

/* The value of NAME=VALUE on the kernel command line (NULL if absent). */
static inline const char *kmod_param(const char *name)
{
	static char line[4096];
	static char val[512];
	FILE *f = fopen("/proc/cmdline", "r");
	char *tok, *save;
	size_t len = strlen(name);
	const char *r = NULL;

	if (!f)
		return NULL;
	if (fgets(line, sizeof(line), f)) {
		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			if (!strncmp(tok, name, len) && tok[len] == '=') {
				snprintf(val, sizeof(val), "%s", tok + len + 1);
				r = val;
			}
		}
	}
	fclose(f);
	return r;
}

/* Whether module NAME is among aikrs.modules=A,B,... (/init loads only these), or
 * there is no such switch. */
static inline int kmod_wanted(const char *name)
{
	const char *v = kmod_param("aikrs.modules");
	size_t n = strlen(name);

	if (!v)
		return 1;
	for (const char *p = v; (p = strstr(p, name)); p += n)
		if ((p == v || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
			return 1;
	return 0;
}

/* NAME=N on the command line, else `def`. */
static inline long kmod_param_long(const char *name, long def)
{
	const char *v = kmod_param(name);

	return v && *v ? strtol(v, NULL, 10) : def;
}

static inline double kmod_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU `cpu` online (1), offline (0), or -errno (no such file: not hotpluggable). */
static inline int cpu_is_online(int cpu)
{
	char path[96], c = 0;
	int fd, n;

	snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/online", cpu);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, &c, 1);
	close(fd);
	return n == 1 ? c == '1' : -EIO;
}

/* Takes CPU `cpu` offline (on = 0) or online (on = 1): 0 or -errno. Returns once the
 * kernel has finished (every hotplug callback ran). */
static inline int cpu_set_online(int cpu, int on)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/online", cpu);
	return kmod_write_file(path, on ? "1" : "0");
}

/* Runs the calling thread on `cpu` only: 0 or -errno. */
static inline int pin_to_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

/* Lets the calling thread run on every CPU again. */
static inline void unpin(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	for (int c = 0; c < CPU_SETSIZE; c++)
		CPU_SET(c, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

#endif /* AIKRS_KMOD_H */
