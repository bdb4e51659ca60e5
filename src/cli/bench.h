/* sheaf bench: shared between the runner (cmd_bench.c), the topology and
 * process handling (bench_env.c) and the reports (bench_report.c). */
#ifndef SHEAF_BENCH_H
#define SHEAF_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_MAX 16
#define BENCH_RUNS 64
#define PATH_MAX_BENCH 4096

struct bench_opts {
	uint32_t sizes[BENCH_MAX];
	int modes[BENCH_MAX];
	const char *peers[BENCH_MAX];
	unsigned nsizes, nmodes, npeers, runs, conns;
	uint64_t bytes;
	bool netns, rr;
	const char *link_rate;
	double link_mbps;
	const char *json, *plot, *markdown;
};

struct bench_run {
	int ok;
	double secs, mbps, cpu, bufs_recv, bufs_send;
	double tps, p50, p99, p999; /* rr */
	char why[160];
};

struct bench_cell {
	char name[24];       /* io mode or peer */
	const char *peer;    /* NULL for sheaf's own modes */
	int mode;
	uint32_t size;
	struct bench_run runs[BENCH_RUNS];
	unsigned n;
	/* medians */
	double secs, mbps, cpu_gib, brecv, bsend, tps, p50, p99, p999;
	double mbps_min, mbps_max;
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
};

int bench_setup(struct bench_env *env, const struct bench_opts *o);
void bench_cleanup(struct bench_env *env);
int bench_run_once(struct bench_env *env, const struct bench_opts *o,
		   const struct bench_cell *c, struct bench_run *r);
int bench_parse_rate(const char *s, double *mbps);
bool bench_peer_known(const char *name);
const char *bench_peer_name(const char *name); /* the static copy of a known name */
bool bench_peer_available(const char *name);
const char *bench_peer_package(const char *name);

void bench_summarize(struct bench_cell *c, const struct bench_opts *o);
void bench_report(const struct bench_opts *o, struct bench_cell *cells, unsigned n,
		  int argc, char **argv);

#endif
