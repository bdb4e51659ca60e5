/*
 * sheaf bench: what is measured around the window of a request/response
 * run: the proxy's CPU time from /proc/PID/stat (any proxy, all threads),
 * and with --syscalls its system calls, counted by perf stat on the
 * kernel's syscall tracepoints (cheap per call, unlike ptrace, but it still
 * slows every call a little: so those runs are extra and their CPU is not
 * used).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "bench.h"

#define PERF "/usr/bin/perf"
/* every way a proxy here waits for events: io_uring_enter, the epoll waits */
#define PERF_EVENTS "raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter," \
		    "syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait," \
		    "syscalls:sys_enter_epoll_pwait2"

double bench_proc_cpu(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold spaces */
	/* after ")": state (field 3) ... utime (14), stime (15) */
	if (!p || sscanf(p + 2, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Byte by byte: the lines are few, and nothing after a line is consumed. */
int bench_wait_line(int fd, const char *what, double secs)
{
	char line[256];
	size_t n = 0;
	double end = mono() + secs;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int ms = (int)((end - mono()) * 1000);
		char ch;

		if (ms <= 0 || poll(&p, 1, ms) <= 0 || read(fd, &ch, 1) != 1)
			return -1;
		if (ch != '\n') {
			if (n + 1 < sizeof(line))
				line[n++] = ch;
			continue;
		}
		line[n] = 0;
		n = 0;
		if (strstr(line, what))
			return 0;
	}
}

bool bench_perf_available(void)
{
	return access(PERF, X_OK) == 0;
}

/* perf stat on pid for secs seconds (its `sleep` is only the timer). */
int bench_perf_start(struct bench_env *env, pid_t pid, double secs)
{
	char spid[16], ssecs[32];
	int fd;

	snprintf(env->perf_out, sizeof(env->perf_out), "/tmp/sheaf-bench-perf-XXXXXX");
	fd = mkstemp(env->perf_out);
	if (fd < 0)
		return -errno;
	close(fd);
	snprintf(spid, sizeof(spid), "%d", (int)pid);
	snprintf(ssecs, sizeof(ssecs), "%.3f", secs);
	env->perf = fork();
	if (env->perf == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execl(PERF, PERF, "stat", "-x", ",", "-o", env->perf_out, "-e", PERF_EVENTS,
		      "-p", spid, "--", "sleep", ssecs, (char *)NULL);
		_exit(127);
	}
	return env->perf > 0 ? 0 : -errno;
}

/* Waits for perf stat and reads its counts as rates per second. */
int bench_perf_stop(struct bench_env *env, struct bench_run *r, double secs)
{
	char line[512];
	int status = -1, seen = 0;
	FILE *f;

	if (env->perf <= 0)
		return -1;
	waitpid(env->perf, &status, 0);
	env->perf = 0;
	f = fopen(env->perf_out, "r");
	while (f && fgets(line, sizeof(line), f)) {
		double v = strtod(line, NULL); /* "count,,event,..." */

		if (strstr(line, ",raw_syscalls:sys_enter,"))
			r->sys = v / secs, seen++;
		else if (strstr(line, ",syscalls:sys_enter_"))
			r->sys_enters += v / secs;
	}
	if (f)
		fclose(f);
	unlink(env->perf_out);
	return WIFEXITED(status) && !WEXITSTATUS(status) && seen ? 0 : -1;
}
