/*
 * The proxy's upstreams: which one a client goes to (the balance
 * algorithm), and their health, learnt from the connects made for clients
 * (and from active checks, when asked for). Shared by every thread.
 */
#ifndef SHEAF_UPSTREAM_H
#define SHEAF_UPSTREAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"

#define MAX_UPSTREAMS 16
/* A failed upstream gets no client for COOLDOWN_MIN_MS, then one client
 * tries it; each failure while down doubles the pause, up to COOLDOWN_MAX_MS. */
#define COOLDOWN_MIN_MS 1000u
#define COOLDOWN_MAX_MS 30000u

enum balance { BALANCE_ROUNDROBIN, BALANCE_LEASTCONN, BALANCE_SOURCE };

/* "roundrobin", "leastconn", "source" -> enum balance; -EINVAL otherwise. */
int balance_parse(const char *name);
const char *balance_name(enum balance b);

/*
 * One upstream. Its health:
 *   up    (fails == 0): takes clients by the balance algorithm
 *   down  (fails > 0):  skipped until retry_at; then one client at a time
 *         (`trial`) tries it first. A connect that succeeds marks it up;
 *         one that fails while down doubles the pause (capped).
 */
struct upstream {
	struct addr a;
	unsigned conns;     /* connections open or being opened to it */
	unsigned fails;     /* failures in a row; 0: up */
	bool trial;         /* a client is trying it after its pause */
	double failed_at;   /* last failure (seconds, now_sec clock) */
	double retry_at;    /* end of the pause */
	uint64_t attempts;  /* connects started for clients */
	uint64_t failures;  /* of those, failed or timed out (any cause) */
};

/* One upstream's state, read at once (for the metrics). */
struct ups_stat {
	unsigned conns;
	bool down;
	uint64_t attempts, failures;
};

struct upstreams {
	struct upstream u[MAX_UPSTREAMS];
	unsigned n;
	enum balance balance;
	FILE *log;                 /* "upstream X down/up" lines; NULL: none */
	atomic_ullong no_upstream; /* clients closed: no upstream connected */
	pthread_mutex_t lock;      /* guards every field above but a, n, balance */
	unsigned next;             /* round-robin position */
};

/* One connection attempt for a client, from ups_pick to ups_end. */
struct up_pick {
	int idx;         /* the upstream, or -1 */
	bool pending;    /* its connect has no verdict yet */
	bool trial;      /* it holds the upstream's trial */
	bool while_down; /* made while the upstream was down */
};

/* Prepares the lock and the state (every upstream up). 0 or -errno. */
int ups_init(struct upstreams *u);
void ups_free(struct upstreams *u);

/*
 * Chooses the upstream for a client's next attempt among those not in
 * *tried, and marks it in *tried: first a down one whose pause is over
 * (the client is its trial), then the up ones by the balance algorithm
 * (`hash`: of the client's address, for BALANCE_SOURCE), then, when every
 * untried one is down, the least recently failed. Counts the attempt as a
 * connection of that upstream. Returns its index, or -1 when all were tried.
 */
int ups_pick(struct upstreams *u, uint32_t *tried, uint32_t hash, double now,
	     struct up_pick *pk);
/*
 * The verdict of the attempt's connect: err 0 marks the upstream up, a
 * failure (but a local one: no ports, files or memory here) marks it down
 * or, when the attempt was made while down, doubles its pause. Prints the
 * transitions to u->log. Does nothing without a pending verdict.
 */
void ups_result(struct upstreams *u, struct up_pick *pk, int err, double now);
/* The attempt's connection is gone: no verdict (if none came), one
 * connection less. */
void ups_end(struct upstreams *u, struct up_pick *pk);

/* The active check's verdict on upstream i (made while it was in the state
 * `was_down`, as read by ups_is_down before the check). */
void ups_check_result(struct upstreams *u, unsigned i, bool was_down, int err, double now);
bool ups_is_down(struct upstreams *u, unsigned i);
void ups_stat(struct upstreams *u, unsigned i, struct ups_stat *out);
unsigned ups_down_count(struct upstreams *u);

/* Hash of a peer's IP address (not its port); IPv4-mapped IPv6 addresses
 * hash like the IPv4 address. */
uint32_t addr_hash(const struct sockaddr *sa);

#endif
