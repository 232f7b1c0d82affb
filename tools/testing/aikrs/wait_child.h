/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A bounded wait for a child process, for the guest tests (a test must not hang on
 * a child that a bug left running).
 */
#ifndef AIKRS_WAIT_CHILD_H
#define AIKRS_WAIT_CHILD_H

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Waits up to `ms` milliseconds for child `pid` to end: 1 (and its status), else 0. */
static inline int wait_ms(pid_t pid, int ms, int *status)
{
	for (int t = 0; t <= ms; t += 10) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 1;
		if (r < 0)
			return 0;
		usleep(10000);
	}
	return 0;
}

#endif
