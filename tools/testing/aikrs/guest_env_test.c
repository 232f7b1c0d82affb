// SPDX-License-Identifier: GPL-2.0
/*
 * Checks the guest environment the other guest tests rely on: the kernel version
 * the host built, the vCPUs it asked for, and the mounted debugfs, procfs and
 * devtmpfs.
 * Prints KTAP; exits non-zero if any case fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

static int n, failed;

static void check(int ok, const char *what)
{
	n++;
	if (!ok)
		failed++;
	printf("%sok %d %s\n", ok ? "" : "not ", n, what);
}

static const char *param(const char *name)
{
	static char line[4096];
	FILE *f = fopen("/proc/cmdline", "r");
	char *tok, *save;
	size_t len = strlen(name);

	if (!f || !fgets(line, sizeof(line), f))
		return NULL;
	fclose(f);
	for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
		if (!strncmp(tok, name, len) && tok[len] == '=')
			return tok + len + 1;
	return NULL;
}

int main(void)
{
	struct utsname u;
	struct stat st;
	struct statfs sf;
	const char *want_ver = param("aikrs.expect_version");
	const char *want_cpus = param("aikrs.expect_cpus");

	printf("KTAP version 1\n1..5\n");
	check(uname(&u) == 0 && want_ver &&
	      !strncmp(u.release, want_ver, strlen(want_ver)) &&
	      (u.release[strlen(want_ver)] == '.' || u.release[strlen(want_ver)] == '-' ||
	       u.release[strlen(want_ver)] == '\0'),
	      "kernel_version_matches_build");
	check(want_cpus && sysconf(_SC_NPROCESSORS_ONLN) == atol(want_cpus),
	      "all_vcpus_online");
	check(statfs("/sys/kernel/debug", &sf) == 0 && sf.f_type == DEBUGFS_MAGIC,
	      "debugfs_mounted");
	check(statfs("/proc", &sf) == 0 && sf.f_type == PROC_SUPER_MAGIC,
	      "procfs_mounted");
	check(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "devtmpfs_populated");
	printf("# %d of %d failed\n", failed, n);
	return failed ? 1 : 0;
}
