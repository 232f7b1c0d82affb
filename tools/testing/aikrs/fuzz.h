/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the guest fuzzers (mm/aikrs_hmm/hmm_fuzz_test.c, mm/aikrs_tlb/tlb_fuzz_test.c)
 * share: their run time and seed from the kernel command line (aikrs.fuzz_secs=N,
 * aikrs.fuzz_seed=N), a xorshift PRNG, the count of every command's results by errno
 * in memory shared with forked children, the findings (a result outside the
 * command's documented set, a crash, a hang), hostile pointers, the watchdog, and
 * the fuzzing of debugfs counter files.
 *
 * Nothing here allocates once the fuzz threads run (no malloc, no stdio, no mmap at
 * an address the kernel picks): the fuzzers rely on every mapping of the process
 * being one they placed.
 */
#ifndef AIKRS_FUZZ_H
#define AIKRS_FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "wait_child.h"

#define FZ_PAGE 4096UL
#define FZ_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

/* ---- run time and seed ---- */

/* The kernel command line into `buf` (NUL-terminated): 1, or 0 if unreadable. */
static inline int fz_cmdline_read(char *buf, size_t size)
{
	int fd = open("/proc/cmdline", O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return 1;
}

/* The value of `name=N` on the kernel command line (decimal or 0x hex): 1 if found. */
static inline int fz_cmdline_u64(const char *name, uint64_t *v)
{
	char buf[4096];
	size_t len = strlen(name);

	if (!fz_cmdline_read(buf, sizeof(buf)))
		return 0;
	for (char *p = buf; (p = strstr(p, name)); p += len) {
		if ((p != buf && p[-1] != ' ') || p[len] != '=')
			continue;
		*v = strtoull(p + len + 1, NULL, 0);
		return 1;
	}
	return 0;
}

/* Whether `word` is a parameter of the kernel command line (alone or with a value). */
static inline int fz_cmdline_has(const char *word)
{
	char buf[4096];
	size_t len = strlen(word);

	if (!fz_cmdline_read(buf, sizeof(buf)))
		return 0;
	for (char *p = buf; (p = strstr(p, word)); p += len)
		if ((p == buf || p[-1] == ' ') && (p[len] == '=' || p[len] == ' ' ||
						   p[len] == '\n' || !p[len]))
			return 1;
	return 0;
}

static inline uint64_t fz_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- PRNG: xorshift64* ---- */

static inline uint64_t fz_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* A state for stream `i` of seed `seed` (never 0, which xorshift cannot leave). */
static inline uint64_t fz_stream(uint64_t seed, uint64_t i)
{
	uint64_t s = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));

	s ^= s >> 31;
	s *= 0xbf58476d1ce4e5b9ULL;
	s ^= s >> 29;
	return s ? s : 0x1234567;
}

/* A number in [0, n) (n > 0). */
static inline uint64_t fz_below(uint64_t *s, uint64_t n)
{
	return fz_next(s) % n;
}

/* True with probability pct %. */
static inline int fz_chance(uint64_t *s, unsigned int pct)
{
	return fz_below(s, 100) < pct;
}

/* ---- results ---- */

/* Result slots per command: 0 is success, e an errno e, FZ_NERR - 1 any larger errno. */
#define FZ_NERR 160
#define FZ_MAXCMD 24
#define FZ_MAXFIND 16
/* Parts of a fuzzer (one KTAP result each) that findings are charged to. */
#define FZ_MAXPART 4

struct fz_counts {
	_Atomic unsigned long calls;
	/* Calls whose file descriptor was closed (and maybe reused) meanwhile. */
	_Atomic unsigned long raced;
	_Atomic unsigned long n[FZ_NERR];
};

/* In memory shared with the children (MAP_SHARED). */
struct fz_shared {
	struct fz_counts c[FZ_MAXCMD];
	_Atomic unsigned int nfind;
	_Atomic unsigned int npart[FZ_MAXPART];
	char find[FZ_MAXFIND][200];
	/* The child being waited for (the watchdog kills it), 0 if none. */
	_Atomic int child;
};

/* The names and documented results of the commands (set before any fork). */
struct fz_cmd {
	const char *name;
	int part;
	uint32_t allowed[FZ_NERR / 32];
};

static struct fz_shared *fz_sh;
static struct fz_cmd fz_cmds[FZ_MAXCMD];
static int fz_ncmds;

/* Maps the shared results; call first. */
static inline void fz_init_shared(void)
{
	fz_sh = mmap(NULL, sizeof(*fz_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		     -1, 0);
	if (fz_sh == MAP_FAILED) {
		printf("# mmap of the shared results: %s\n", strerror(errno));
		exit(1);
	}
}

/*
 * Declares command `id` named `name`, of fuzzer part `part`, whose documented errnos
 * are the list that follows (ended by 0). EBADF is documented for every command: the
 * fuzzers close the file descriptors under the callers' feet.
 */
static inline void fz_def(int id, int part, const char *name, ...)
{
	va_list ap;
	int e;

	fz_cmds[id].name = name;
	fz_cmds[id].part = part;
	fz_cmds[id].allowed[0] |= 1; /* success */
	fz_cmds[id].allowed[EBADF / 32] |= 1u << (EBADF % 32);
	va_start(ap, name);
	while ((e = va_arg(ap, int)))
		fz_cmds[id].allowed[e / 32] |= 1u << (e % 32);
	va_end(ap);
	if (id >= fz_ncmds)
		fz_ncmds = id + 1;
}

static inline int fz_allowed(int id, int err)
{
	return err >= 0 && err < FZ_NERR - 1 &&
	       (fz_cmds[id].allowed[err / 32] >> (err % 32) & 1);
}

/* Records a finding of part `part` (printed at the end; any finding fails the part). */
__attribute__((format(printf, 2, 3))) static inline void fz_finding(int part, const char *fmt,
								     ...)
{
	unsigned int i = atomic_fetch_add(&fz_sh->nfind, 1);
	va_list ap;

	atomic_fetch_add(&fz_sh->npart[part], 1);
	if (i >= FZ_MAXFIND)
		return;
	va_start(ap, fmt);
	vsnprintf(fz_sh->find[i], sizeof(fz_sh->find[i]), fmt, ap);
	va_end(ap);
	/* One diagnostic line, whatever the kernel gave us. */
	for (char *p = fz_sh->find[i]; *p; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p > '~')
			*p = '?';
}

/*
 * Counts result `err` (0 or an errno) of command `id`. An errno outside the
 * command's documented set is a finding, unless the descriptor was closed meanwhile
 * (`raced`: the number may then name another file, whose errors are its own).
 * Returns whether it was expected.
 */
static inline int fz_result(int id, int err, int raced, const char *what)
{
	struct fz_counts *c = &fz_sh->c[id];
	int slot = err < 0 || err >= FZ_NERR - 1 ? FZ_NERR - 1 : err;

	atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->n[slot], 1, memory_order_relaxed);
	if (raced)
		atomic_fetch_add_explicit(&c->raced, 1, memory_order_relaxed);
	if (fz_allowed(id, err))
		return 1;
	if (raced && (err == EBADF || err == ENOTTY || err == ENODEV || err == EINVAL ||
		      err == EACCES || err == ESPIPE || err == EFAULT))
		return 1;
	fz_finding(fz_cmds[id].part, "%s: unexpected %s (%d)%s: %s", fz_cmds[id].name,
		   err ? strerrorname_np(err) ? strerrorname_np(err) : "errno" : "success", err,
		   raced ? " after a racing close" : "", what);
	return 0;
}

static inline unsigned long fz_total_calls(void)
{
	unsigned long t = 0;

	for (int i = 0; i < fz_ncmds; i++)
		t += atomic_load(&fz_sh->c[i].calls);
	return t;
}

/* One KTAP diagnostic line per command: its calls and results by errno. */
static inline void fz_print_counts(void)
{
	for (int i = 0; i < fz_ncmds; i++) {
		struct fz_counts *c = &fz_sh->c[i];
		char line[1024];
		int n;

		if (!fz_cmds[i].name)
			continue;
		n = snprintf(line, sizeof(line), "# %s: %lu calls, ok %lu", fz_cmds[i].name,
			     atomic_load(&c->calls), atomic_load(&c->n[0]));
		for (int e = 1; e < FZ_NERR && n < (int)sizeof(line) - 40; e++) {
			unsigned long v = atomic_load(&c->n[e]);
			const char *nm = e < FZ_NERR - 1 ? strerrorname_np(e) : NULL;

			if (!v)
				continue;
			if (nm)
				n += snprintf(line + n, sizeof(line) - n, ", %s %lu", nm, v);
			else
				n += snprintf(line + n, sizeof(line) - n, ", errno%s%d %lu",
					      e < FZ_NERR - 1 ? " " : " >=", e, v);
		}
		if (atomic_load(&c->raced) && n < (int)sizeof(line) - 40)
			snprintf(line + n, sizeof(line) - n, " (%lu raced with a close)",
				 atomic_load(&c->raced));
		printf("%s\n", line);
	}
}

static inline unsigned int fz_print_findings(void)
{
	unsigned int n = atomic_load(&fz_sh->nfind);

	for (unsigned int i = 0; i < n && i < FZ_MAXFIND; i++)
		printf("# finding: %s\n", fz_sh->find[i]);
	if (n > FZ_MAXFIND)
		printf("# ... and %u more findings\n", n - FZ_MAXFIND);
	return n;
}

/* ---- hostile pointers ---- */

/*
 * Addresses no user copy may reach: NULL and the first page, the top of the user
 * address space and beyond it, non-canonical addresses, the kernel's direct map,
 * vmalloc space, vmemmap, text, the vsyscall page and the last page.
 */
static const uint64_t fz_bad_addrs[] = {
	0x0ULL,
	0x8ULL,
	0xfffULL,
	0x7ffffffff000ULL,
	0x800000000000ULL,
	0x8000000000000000ULL,
	0x00ff000000000000ULL,
	0xffff800000000000ULL,
	0xffff888000000000ULL,
	0xffffc90000000000ULL,
	0xffffea0000000000ULL,
	0xffffffff81000000ULL,
	0xffffffffff600000ULL,
	0xfffffffffffff000ULL,
	0xffffffffffffffc0ULL,
};

static inline uint64_t fz_bad_addr(uint64_t *s)
{
	return fz_bad_addrs[fz_below(s, FZ_ARRAY_SIZE(fz_bad_addrs))];
}

/*
 * Where a command's argument block goes, for a fuzz thread whose two pages at `off`
 * of the views `rw` (writable) and `ro` (the same pages read-only; the second page is
 * PROT_NONE): 0 the caller's `blk`, 1 a bad address, 2 read-only (a command that
 * reads it runs, its result cannot be written back), 3 straddling the unmapped page.
 * Sets `*kind` and returns the pointer to pass.
 */
static inline void *fz_place_arg(uint64_t *s, char *rw, char *ro, size_t off, void *blk,
				 size_t len, int *kind)
{
	switch (fz_below(s, 100)) {
	case 0: case 1: case 2:
		*kind = 1;
		return (void *)(uintptr_t)fz_bad_addr(s);
	case 3: case 4: case 5: case 6:
		*kind = 2;
		memcpy(rw + off, blk, len);
		return ro + off;
	case 7: case 8:
		*kind = 3;
		memcpy(rw + off + FZ_PAGE - len / 2, blk, len / 2);
		return rw + off + FZ_PAGE - len / 2;
	default:
		*kind = 0;
		return blk;
	}
}

/* Page counts, lengths and the like that are too large, wrap, or sit on limits. */
static inline uint64_t fz_huge_count(uint64_t *s, uint64_t user_end)
{
	switch (fz_below(s, 10)) {
	case 0: return 1ULL << 40;
	case 1: return 1ULL << 52;
	case 2: return UINT64_MAX;
	case 3: return UINT64_MAX / FZ_PAGE;
	case 4: return UINT64_MAX / FZ_PAGE + 1;
	case 5: return (1ULL << 63) / FZ_PAGE;
	case 6: return user_end / FZ_PAGE;
	case 7: return user_end / FZ_PAGE + 1;
	case 8: return 1ULL << 32;
	default: return fz_next(s);
	}
}

/*
 * The end of the user address space (x86-64 TASK_SIZE): 2^56 - 4 KiB with 5-level
 * paging, else 2^47 - 4 KiB. Call before the fuzzing starts (it maps a page).
 */
static inline uint64_t fz_user_end(void)
{
	void *hint = (void *)(1UL << 47);
	void *p = mmap(hint, FZ_PAGE, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED)
		return (1ULL << 47) - FZ_PAGE;
	munmap(p, FZ_PAGE);
	return p == hint ? (1ULL << 56) - FZ_PAGE : (1ULL << 47) - FZ_PAGE;
}

/*
 * An ioctl number that is not among `known` (the driver's), near them (same magic,
 * wrong size or direction) or not, and that the VFS does not handle itself.
 */
static inline unsigned long fz_unknown_ioctl(uint64_t *s, unsigned int magic,
					     unsigned int our_max_nr, unsigned int our_size,
					     const unsigned long *known, int nknown)
{
	/* Types of the ioctls do_vfs_ioctl() handles for every file (FIOCLEX, FIFREEZE...). */
	static const unsigned char vfs_types[] = { 0x00, 0x15, 'T', 'X', 'f', 0x94 };
	unsigned long nr;

	for (;;) {
		switch (fz_below(s, 5)) {
		case 0: /* our magic, a number past ours */
			nr = _IOC(_IOC_READ | _IOC_WRITE, magic,
				  our_max_nr + 1 + fz_below(s, 0xff - our_max_nr), our_size);
			break;
		case 1: /* one of our numbers with the wrong size */
			nr = _IOC(_IOC_READ | _IOC_WRITE, magic, fz_below(s, our_max_nr + 1),
				  fz_below(s, 1 << 14));
			break;
		case 2: /* one of our numbers with the wrong direction */
			nr = _IOC(fz_below(s, 3), magic, fz_below(s, our_max_nr + 1), our_size);
			break;
		case 3: /* another magic */
			nr = _IOC(fz_below(s, 4), fz_below(s, 256), fz_below(s, 256),
				  fz_below(s, 1 << 14));
			break;
		default:
			nr = (uint32_t)fz_next(s);
			break;
		}
		for (int i = 0; i < nknown; i++)
			if (nr == known[i])
				nr = 0;
		if (!nr)
			continue; /* one of the driver's after all */
		if (memchr(vfs_types, _IOC_TYPE(nr), sizeof(vfs_types)))
			continue;
		return nr;
	}
}

/* ---- children and the watchdog ---- */

static const char *fz_wd_msg = "# watchdog\n";

static void fz_on_alarm(int sig)
{
	int pid = fz_sh ? atomic_load(&fz_sh->child) : 0;
	ssize_t r;

	(void)sig;
	if (pid > 0)
		kill(pid, SIGKILL);
	r = write(1, fz_wd_msg, strlen(fz_wd_msg));
	(void)r;
	_exit(1);
}

/*
 * Arms the last-resort watchdog: after `secs` seconds, print `msg` (KTAP lines that
 * fail the run), kill the child being waited for, and exit 1. (The main thread has
 * its own, earlier deadline for the threads; this one catches the main thread
 * itself being stuck.)
 */
static inline void fz_watchdog(unsigned int secs, const char *msg)
{
	struct sigaction sa = { .sa_handler = fz_on_alarm };

	fz_wd_msg = msg;
	sigaction(SIGALRM, &sa, NULL);
	alarm(secs);
}

/*
 * Faults. A thread that may take one arms fz_jb with sigsetjmp() and sets fz_armed;
 * the handler records the address in fz_fault_addr and jumps back there. A thread
 * arms either because it reads memory another thread may unmap (then a fault is
 * expected only if that memory changed meanwhile, which the thread checks), or to
 * turn a fault on memory that must be accessible into a finding that says where,
 * with fz_maps_of(). Any other SIGSEGV, SIGBUS, SIGILL or SIGFPE is a crash: the
 * process prints fz_crash_msg (KTAP lines that fail the run) and exits 1; a child
 * exits 100 + the signal, which its parent reports.
 */
static __thread sigjmp_buf fz_jb;
static __thread volatile sig_atomic_t fz_armed;
static __thread void *volatile fz_fault_addr;
static pid_t fz_main_pid;
static const char *fz_crash_msg = "# crash\n";

static void fz_on_fault(int sig, siginfo_t *si, void *uc)
{
	char buf[96];
	int n;
	ssize_t r;

	(void)uc;
	if (fz_armed) {
		fz_armed = 0;
		fz_fault_addr = si->si_addr;
		siglongjmp(fz_jb, sig);
	}
	if (getpid() != fz_main_pid)
		_exit(100 + sig);
	n = snprintf(buf, sizeof(buf), "# fatal signal %d at address %p\n", sig, si->si_addr);
	r = write(1, buf, n);
	r = write(1, fz_crash_msg, strlen(fz_crash_msg));
	(void)r;
	_exit(1);
}

static inline void fz_catch_faults(const char *crash_msg)
{
	struct sigaction sa = { .sa_sigaction = fz_on_fault, .sa_flags = SA_SIGINFO | SA_NODEFER };
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE };

	fz_main_pid = getpid();
	fz_crash_msg = crash_msg;
	for (unsigned int i = 0; i < FZ_ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
}

/*
 * The line of /proc/self/maps whose range holds `addr` ("start-end perms offset"), or
 * "no mapping", into out[len]. For the diagnostics of a fault: whether the kernel
 * still has a mapping there, and with which permissions. No allocation.
 */
static inline void fz_maps_of(uint64_t addr, char *out, size_t len)
{
	char buf[4096], line[256];
	size_t ll = 0;
	ssize_t n;
	int fd = open("/proc/self/maps", O_RDONLY);

	snprintf(out, len, "no mapping");
	if (fd < 0) {
		snprintf(out, len, "/proc/self/maps: %s", strerror(errno));
		return;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			unsigned long long lo, hi;
			char *end, *sp;

			if (buf[i] != '\n') {
				if (ll < sizeof(line) - 1)
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = 0;
			ll = 0;
			/* "start-end perms offset dev inode path": keep up to the offset. */
			lo = strtoull(line, &end, 16);
			if (*end != '-')
				continue;
			hi = strtoull(end + 1, &end, 16);
			if (addr < lo || addr >= hi)
				continue;
			sp = strchr(end + 1, ' ');
			if (sp && (sp = strchr(sp + 1, ' ')))
				*sp = 0;
			for (size_t k = 0; k < len; k++)
				if (!(out[k] = k < len - 1 ? line[k] : 0))
					break;
			close(fd);
			return;
		}
	}
	close(fd);
}

/* In a new child: no watchdog of the parent's, killed with the thread that forked it. */
static inline void fz_child_setup(pid_t parent, unsigned int alarm_secs)
{
	signal(SIGALRM, SIG_DFL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	alarm(alarm_secs);
}

/*
 * Waits up to `ms` milliseconds for child `pid`, then kills it; a child that was
 * killed by a signal, exited non-zero or had to be killed is a finding. Returns 1
 * if it ended by itself with status 0.
 */
static inline int fz_reap(pid_t pid, int ms, int part, const char *what)
{
	int status = 0;

	atomic_store(&fz_sh->child, pid);
	for (int t = 0; t <= ms; t += 5) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			atomic_store(&fz_sh->child, 0);
			if (WIFSIGNALED(status)) {
				fz_finding(part, "%s: child ended by signal %d (%s)", what,
					   WTERMSIG(status),
					   WTERMSIG(status) == SIGALRM ? "its alarm: it hung" :
					   strsignal(WTERMSIG(status)));
				return 0;
			}
			if (WEXITSTATUS(status) > 100) {
				fz_finding(part, "%s: child crashed with signal %d (%s)", what,
					   WEXITSTATUS(status) - 100,
					   strsignal(WEXITSTATUS(status) - 100));
				return 0;
			}
			if (WEXITSTATUS(status)) {
				fz_finding(part, "%s: child exited with status %d", what,
					   WEXITSTATUS(status));
				return 0;
			}
			return 1;
		}
		if (r < 0) {
			atomic_store(&fz_sh->child, 0);
			fz_finding(part, "%s: waitpid: %s", what, strerror(errno));
			return 0;
		}
		usleep(5000);
	}
	kill(pid, SIGKILL);
	fz_finding(part, "%s: child still running after %d ms, killed", what, ms);
	wait_ms(pid, 10000, &status);
	atomic_store(&fz_sh->child, 0);
	return 0;
}

/* ---- debugfs counters ---- */

/*
 * The fuzz of debugfs counter files (kernel::aikrs::debugfs::Counters: one
 * read-only debugfs_create_u64 file per counter). Reads of any size into good and
 * bad buffers, continued reads, pread (the files are not seekable), and writes,
 * which a read-only counter refuses (EACCES) even to root. Each value read whole
 * must be a decimal number no smaller than the last one read from that file:
 * the counters only grow.
 */
#define FZ_DFS_MAX 64

struct fz_dfs {
	int n;
	char path[FZ_DFS_MAX][96];
	unsigned long long last[FZ_DFS_MAX];
	unsigned long reads, writes, values;
	int id_read, id_write, part;
	/* An unreadable page and a read-only one, for bad buffers. */
	char *none, *ro;
};

/*
 * Lists the regular files of the debugfs directories `dirs` (NULL-terminated) and
 * declares the commands `id_read` and `id_write`. Before the threads start (it
 * allocates). Returns the number of files.
 */
static inline int fz_dfs_init(struct fz_dfs *d, const char *const *dirs, int part,
			      int id_read, int id_write, char *none, char *ro)
{
	d->part = part;
	d->id_read = id_read;
	d->id_write = id_write;
	d->none = none;
	d->ro = ro;
	/*
	 * Reads: EFAULT (bad buffer), ESPIPE (pread: simple_attr_open() makes the file
	 * nonseekable). Writes: EACCES (simple_attr_write() without a setter), EPERM
	 * (lockdown), EFAULT (a bad buffer: vfs_write()'s access_ok() comes before the
	 * file's write).
	 */
	fz_def(id_read, part, "debugfs read", EFAULT, ESPIPE, 0);
	fz_def(id_write, part, "debugfs write", EACCES, EPERM, EFAULT, 0);
	for (int i = 0; dirs[i]; i++) {
		DIR *dir = opendir(dirs[i]);
		struct dirent *e;

		if (!dir)
			continue;
		while ((e = readdir(dir)) && d->n < FZ_DFS_MAX) {
			struct stat st;

			if (e->d_name[0] == '.' ||
			    snprintf(d->path[d->n], sizeof(d->path[0]), "%s/%s", dirs[i],
				     e->d_name) >= (int)sizeof(d->path[0]) ||
			    stat(d->path[d->n], &st) || !S_ISREG(st.st_mode))
				continue;
			d->n++;
		}
		closedir(dir);
	}
	return d->n;
}

/* One fuzz operation on a random file of `d` (from one thread only). */
static inline void fz_dfs_step(struct fz_dfs *d, uint64_t *s)
{
	int i, fd, e;
	char buf[64], what[160];
	ssize_t r;

	if (!d->n)
		return;
	i = (int)fz_below(s, d->n);
	if (fz_chance(s, 20)) {
		/* A write: root may open the file for writing, but the counter is read-only. */
		static const char *const vals[] = { "0\n", "18446744073709551615\n", "-1", "x", "" };
		const char *v = vals[fz_below(s, 5)];

		fd = open(d->path[i], fz_chance(s, 50) ? O_WRONLY : O_RDWR);
		if (fd < 0) {
			snprintf(what, sizeof(what), "open(%s) for writing", d->path[i]);
			fz_result(d->id_write, errno, 0, what);
			return;
		}
		switch (fz_below(s, 3)) {
		case 0:
			r = write(fd, v, strlen(v));
			break;
		case 1:
			r = write(fd, (void *)(uintptr_t)fz_bad_addr(s), 8);
			break;
		default:
			r = write(fd, d->none, 8);
			break;
		}
		e = r < 0 ? errno : 0;
		snprintf(what, sizeof(what), "write(%s) = %zd", d->path[i], r);
		fz_result(d->id_write, e, 0, what);
		d->writes++;
		close(fd);
		return;
	}
	fd = open(d->path[i], O_RDONLY);
	if (fd < 0) {
		snprintf(what, sizeof(what), "open(%s)", d->path[i]);
		fz_result(d->id_read, errno, 0, what);
		return;
	}
	for (int k = 0; k < 3; k++) {
		int whole = 0;

		switch (fz_below(s, 8)) {
		case 0:
			r = read(fd, (void *)(uintptr_t)fz_bad_addr(s), 1 + fz_below(s, 64));
			break;
		case 1:
			r = read(fd, d->none, 1 + fz_below(s, 64));
			break;
		case 2:
			r = read(fd, d->ro, 1 + fz_below(s, 64));
			break;
		case 3:
			r = read(fd, buf, fz_below(s, 4));
			break;
		case 4:
			r = pread(fd, buf, sizeof(buf) - 1, (off_t)fz_below(s, 32));
			break;
		default:
			whole = k == 0;
			r = read(fd, buf, sizeof(buf) - 1);
			break;
		}
		e = r < 0 ? errno : 0;
		snprintf(what, sizeof(what), "read of %s = %zd", d->path[i], r);
		fz_result(d->id_read, e, 0, what);
		d->reads++;
		if (whole && r >= 0) {
			/* A fresh open: the whole value, "%llu\n". */
			char *end;
			unsigned long long v;

			buf[r] = 0;
			errno = 0;
			v = strtoull(buf, &end, 10);
			if (r < 2 || end == buf || *end != '\n' || end[1] || errno) {
				fz_finding(d->part, "debugfs %s reads \"%.40s\" (%zd bytes): not a counter",
					   d->path[i], buf, r);
			} else {
				if (v < d->last[i])
					fz_finding(d->part, "debugfs %s went down from %llu to %llu",
						   d->path[i], d->last[i], v);
				d->last[i] = v;
				d->values++;
			}
		}
	}
	close(fd);
}

#endif /* AIKRS_FUZZ_H */
