/* sheaf bench: shared between the runner (cmd_bench.c), the topology and
 * process handling (bench_env.c), what is measured around a run
 * (bench_measure.c) and the reports (bench_report.c). */
#ifndef SHEAF_BENCH_H
#define SHEAF_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_MAX 16
#define BENCH_RUNS 64
#define BENCH_MAX_CONNS 9000
#define PATH_MAX_BENCH 4096

enum bench_workload { BENCH_STREAM, BENCH_RR, BENCH_RATE };

struct bench_opts {
	uint32_t sizes[BENCH_MAX];
	uint32_t conns[BENCH_MAX];
	int modes[BENCH_MAX];
	const char *peers[BENCH_MAX];
	unsigned nsizes, nconns, nmodes, npeers, runs;
	uint64_t bytes;
	bool netns, syscalls, conns_set;
	enum bench_workload workload;
	uint32_t msg_size;       /* rr, rate: request size; 0 = the buffer size */
	double duration, warmup; /* rr, rate: the measurement window, s; 0 = by --bytes */
	double rate;             /* rate: requests/s, or a share of the reference's max */
	bool rate_share;         /* rate is a fraction (--rate 50%) */
	const char *link_rate;
	double link_mbps;
	const char *json, *plot, *markdown;
};

struct bench_run {
	int ok;
	double secs, mbps, cpu, bufs_recv, bufs_send;
	double tps, p50, p99, p999;  /* rr, rate */
	double txns_all, late;       /* rr, rate: every transaction; late answers */
	double enters;               /* the proxy's own count (sheaf) */
	double sys, sys_enters;      /* perf stat: syscalls, io_uring_enter + epoll_wait,
				      * per second of the window (--syscalls runs) */
	double cpu_per;              /* derived: CPU-s per 100k requests, or per GiB */
	char why[160];
};

struct bench_cell {
	char name[24];       /* io mode or peer */
	const char *peer;    /* NULL for sheaf's own modes */
	int mode;
	uint32_t size, conns;
	double rate;         /* rate: requests/s offered */
	bool reference;      /* rate: the closed-loop run that sets the rate */
	struct bench_run runs[BENCH_RUNS];
	unsigned n;
	struct bench_run sys; /* the --syscalls run */
	/* medians */
	double secs, mbps, cpu_gib, brecv, bsend, tps, p50, p99, p999;
	double mbps_min, mbps_max, tps_min, tps_max;
	double cpu_100k, cpu_100k_min, cpu_100k_max; /* rr, rate: CPU-s per 100k requests */
	double enters_per;   /* per request (rr, rate) or per MiB (stream) */
	double sys_per, sys_enters_per; /* per request or MiB, from the --syscalls run */
	double late;
};

/* Where the three roles run and how they reach each other. */
struct bench_env {
	bool netns;
	char ns[3][40];      /* source, proxy, sink */
	bool ns_made[3];
	char veth[4][16];
	char src_ip[16], px_in[16], px_out[16], snk_ip[16];
	char self[PATH_MAX_BENCH];
	char confdir[512];   /* where peer configurations are written */
	pid_t pids[3];
	pid_t perf;          /* perf stat during a --syscalls run */
	char perf_out[600];
};

int bench_setup(struct bench_env *env, const struct bench_opts *o);
void bench_cleanup(struct bench_env *env);
int bench_run_once(struct bench_env *env, const struct bench_opts *o,
		   const struct bench_cell *c, struct bench_run *r, bool count_syscalls);
int bench_parse_rate(const char *s, double *mbps);
bool bench_peer_known(const char *name);
const char *bench_peer_name(const char *name); /* the static copy of a known name */
bool bench_peer_available(const char *name);
const char *bench_peer_package(const char *name);
bool bench_rr_like(const struct bench_opts *o); /* rr or rate */
uint32_t bench_msg_size(const struct bench_opts *o, const struct bench_cell *c);

/* bench_measure.c: the proxy's CPU time and syscalls during the window */
double bench_proc_cpu(pid_t pid); /* user + system seconds, all threads; < 0: gone */
int bench_perf_start(struct bench_env *env, pid_t pid, double secs);
int bench_perf_stop(struct bench_env *env, struct bench_run *r, double secs);
bool bench_perf_available(void);
/* Reads stderr lines of fd until one contains `what`, at most `secs` s; 0 or -1. */
int bench_wait_line(int fd, const char *what, double secs);

void bench_summarize(struct bench_cell *c, const struct bench_opts *o);
void bench_report(const struct bench_opts *o, struct bench_cell *cells, unsigned n,
		  int argc, char **argv);

#endif
