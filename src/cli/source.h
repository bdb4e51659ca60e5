/* sheaf source: shared between the command and its streams (cmd_source.c)
 * and request/response, closed and open loop (source_rr.c). */
#ifndef SHEAF_SOURCE_H
#define SHEAF_SOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/epoll.h>

#include "cli.h"

struct source_opts {
	struct addr to;
	bool have_to, verify, echo, json, marks;
	uint32_t conns, write_size;
	uint64_t bytes, seed;
	uint32_t rr;     /* request size; 0: stream mode */
	double duration; /* seconds; 0: no limit */
	double warmup;   /* seconds; < 0: no measurement window */
	double rate;     /* requests/s over all connections; 0: closed loop */
};

/* Latency samples kept for the percentiles (32 MiB); later ones are not. */
#define RR_MAX_SAMPLES (4u << 20)

struct src_conn {
	int fd;
	uint32_t id;
	uint64_t len, sent, total; /* total: header + payload */
	uint32_t start;
	uint8_t hdr[STREAM_HDR];
	bool connected, wr_done, done;
	bool busy;            /* rr: a transaction is in flight */
	struct stream_check echo;
	uint64_t echoed;
	uint32_t events;      /* epoll mask registered */
	uint64_t txn;         /* rr: transactions completed */
	uint64_t k_next;      /* rate: this connection's next request */
	uint32_t rr_off;      /* rr: pattern offset of the current request */
	uint32_t rr_sent, rr_got;
	uint64_t t_start, t_end; /* rr: ns, sent (rate: scheduled), last byte back */
};

/*
 * The measurement window (--warmup): it opens `warmup` seconds after every
 * connection is connected and lasts --duration (or until --bytes are done).
 * Closed loop counts the transactions that end inside it; open loop the
 * requests scheduled inside it, however late they end.
 */
struct rr_window {
	uint64_t connected_at; /* ns; 0 until every connection is connected */
	uint64_t start, end;   /* ns; 0: not yet known (end 0: until done) */
	bool opened, closed;
	uint64_t drain_end;    /* rate: stop waiting for late answers then */
};

struct source {
	struct source_opts o;
	struct pattern pat;
	struct src_conn *c;
	int ep;
	uint32_t open, connected;
	int failed;
	uint8_t *rbuf;
	uint64_t deadline;    /* ns at which --duration ends; 0: none */
	uint64_t rr_left;     /* transactions not yet started */
	uint64_t txns;        /* transactions counted (in the window, if any) */
	uint64_t txns_all;    /* every transaction completed */
	uint64_t *lat;        /* latencies in ns */
	size_t nlat, cap_lat;
	struct rr_window win;
	uint64_t next_due;    /* rate: the next request (global index) to schedule */
	uint64_t late;        /* rate: scheduled in the window, unanswered at the end */
	sigset_t wait_mask;   /* during the epoll wait: SIGHUP and SIGUSR1 come in */
};

uint64_t mono_ns(void);
void conn_done(struct source *s, struct src_conn *c, int err);
bool check_connected(struct source *s, struct src_conn *c);

/* source_rr.c */
int rr_init(struct source *s);
void rr_event(struct source *s, struct epoll_event *ev);
/* Time-driven work of a turn (window edges, due requests); returns the ns to
 * wait at most before the next, or UINT64_MAX; sets *stop when the run ends. */
uint64_t rr_tick(struct source *s, bool *stop);
/* Requests of the window still unanswered at the end count as late. */
void rr_finish(struct source *s);
void rr_report(const struct source *s, double secs, int ret);

#endif
