/*
 * sheaf proxy, shared by its files: the options (the same names on the
 * command line and in a --config file), the frontends, the event loops'
 * per-thread state, the metrics endpoint and systemd's parts.
 *
 *   cmd_proxy.c     the pairs (client + upstream), the loops, signals, checks
 *   proxy_config.c  options: command line, --config file, validation
 *   proxy_metrics.c GET /metrics on loop 0, Prometheus text format
 *   proxy_log.c     one line per finished connection (--log)
 *   sd.c            systemd: socket activation, sd_notify
 */
#ifndef SHEAF_PROXY_H
#define SHEAF_PROXY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "cli.h"
#include "upstream.h"

#define MAX_FRONTENDS 8      /* a loop has at most 8 listeners (sheaf_listen) */
#define MAX_THREADS 64
#define FRONTEND_NAME_MAX 31

/* What a listener's listen_data and a connection's data point to: each
 * struct starts with one of these, so the callbacks can tell them apart. */
enum proxy_kind { KIND_FRONTEND = 1, KIND_METRICS, KIND_PAIR, KIND_SCRAPE };

enum log_mode { LOG_NONE, LOG_ERRORS, LOG_CONN };

struct proxy;

/* One listener with its upstreams and options ([frontend NAME]). */
struct frontend {
	uint8_t kind;                /* KIND_FRONTEND */
	unsigned idx;                /* in proxy.fe[] */
	char name[FRONTEND_NAME_MAX + 1];
	int line;                    /* of its [frontend] line (0: command line) */
	struct addr listen;
	bool have_listen;
	struct upstreams up;
	bool accept_proxy;
	int send_proxy;              /* PROXY protocol version to send, or 0 */
	uint32_t header_timeout_ms;
	atomic_ullong pp_malformed, pp_oversized, pp_late; /* --accept-proxy refusals */
	int fd;                      /* socket activation: the passed socket, or -1 */
	bool adopted;                /* loop 0 listens on fd (and owns it) */
	struct proxy *px;
};

/* The metrics endpoint (--metrics), served by loop 0: proxy_metrics.c. */
struct metrics;

/* One frontend's counters on one loop, kept by that loop's thread only. */
struct fe_counters {
	uint64_t conns_total;        /* clients accepted */
	uint64_t bytes_in, bytes_out; /* from and to clients that are gone */
	uint32_t conns;              /* clients open now */
};

/* What a loop reports for the metrics: taken on its own thread. */
struct loop_snap {
	struct sheaf_stats st;
	struct fe_counters fe[MAX_FRONTENDS]; /* bytes: the open clients' too */
};

struct pair;

/* One event loop per thread; connections never move between threads. */
struct worker {
	struct sheaf_loop *loop;
	struct proxy *px;
	unsigned idx;
	struct fe_counters fe[MAX_FRONTENDS];
	struct pair *clients;        /* pairs whose client is open */
	struct sheaf_stats snap;     /* SIGUSR1: taken on the loop's thread */
	atomic_int snapped;
	pthread_t tid;
	int ret;
	bool started;
};

/* Everything `sheaf proxy` was told, and the state all threads share. */
struct proxy {
	struct frontend fe[MAX_FRONTENDS];
	unsigned nfe;
	struct io_opts io;
	uint32_t max_conns, backlog, threads;
	uint32_t connect_timeout_ms, idle_timeout_ms, stall_timeout_ms;
	uint32_t check_interval_ms, drain_timeout_ms;
	bool nodelay, strict, quiet;
	enum log_mode log;
	struct addr metrics_addr;
	bool have_metrics;
	int metrics_fd;              /* socket activation, or -1 */
	bool metrics_adopted;        /* loop 0 listens on metrics_fd */
	const char *config;          /* --config FILE, or NULL */
	bool check_only;             /* --check */
	/* at run time */
	enum sheaf_io io_mode;
	double start_mono;           /* now_sec() at start */
	time_t start_wall;
	atomic_bool stopping;        /* SIGINT/SIGTERM came: the drain runs */
	struct worker *w;
	uint32_t nw;
	struct metrics *m;
};

/* proxy_config.c */
/* The defaults of every option; no frontend yet. */
void proxy_defaults(struct proxy *px);
/*
 * The command line: options into px (one frontend, "main", from --listen
 * and the others), or --config FILE read and checked. Prints every mistake
 * ("sheaf proxy: --opt VALUE: why", "FILE:LINE: why"); 0, or EXIT_USAGE.
 * ARGS_HELP for --help (the caller prints it).
 */
int proxy_args(int argc, char **argv, struct proxy *px, const char *help);
/*
 * Reads a configuration from `in` (named `name` in messages) into px,
 * which holds the defaults: every mistake is printed to `errs` as
 * "sheaf proxy: NAME:LINE: why", and the checks that span the whole file
 * follow. Returns the count of mistakes.
 */
unsigned proxy_config_read(FILE *in, const char *name, struct proxy *px, FILE *errs);
/* The help text's part on the --config file format. */
extern const char proxy_config_help[];

/* proxy_log.c */
/* --log: the line for a pair that ended (see proxy_log.c), to `out`. */
struct conn_end {
	const struct frontend *fe;
	const struct sockaddr *client;  /* NULL: unknown */
	const char *upstream;           /* NULL: none tried */
	double accepted;                /* now_sec() clocks */
	double connected;               /* 0: never */
	double ended;
	uint64_t bytes_in, bytes_out;   /* from and to the client */
	char state[3];                  /* termination state, HAProxy's two letters */
};
void log_conn(FILE *out, const struct conn_end *e, double now_mono, double now_wall);
/* CLOCK_REALTIME seconds. */
double wall_sec(void);

/* proxy_metrics.c */
/* Sets up px->m for loop 0 (listen there: metrics_listen). 0 or -errno. */
int metrics_init(struct proxy *px);
void metrics_free(struct proxy *px);
/* Listens on loop 0: the fd, or -errno. */
int metrics_listen(struct proxy *px, struct sheaf_loop *loop0);
/* The callbacks for its connections (dispatched by kind from cmd_proxy.c). */
void metrics_accept(struct sheaf_conn *c, struct metrics *m);
void metrics_data(struct sheaf_conn *c, const struct sheaf_bundle *b);
void metrics_eof(struct sheaf_conn *c);
void metrics_writable(struct sheaf_conn *c);
void metrics_close(struct sheaf_conn *c, int err);
/* The text: every loop's snapshot summed (snaps[0..n)), to `out`. */
void metrics_render(FILE *out, struct proxy *px, const struct loop_snap *snaps, unsigned n);

/* cmd_proxy.c, for the metrics: a loop's snapshot on its own thread */
void worker_snap(struct worker *w, struct loop_snap *out);

/* sd.c: systemd */
/*
 * The sockets systemd passed (LISTEN_PID is ours, LISTEN_FDS of them from
 * fd 3 on, named by LISTEN_FDNAMES): up to `max` into fds[] (names[] gets
 * each one's name, or ""); the variables are unset, and every passed
 * descriptor gets FD_CLOEXEC. Returns the count (0: none passed).
 */
int sd_listen_fds(int *fds, char (*names)[64], int max);
/* Sends `msg` ("READY=1", ...) to $NOTIFY_SOCKET; 0 when it is unset,
 * else 0 or -errno. */
int sd_notify(const char *msg);
/* Does fd listen on exactly a (family, address, port)? */
bool sd_fd_matches(int fd, const struct addr *a);

#endif
