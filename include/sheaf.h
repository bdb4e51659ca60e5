/*
 * libsheaf — io_uring send and receive bundles over shared provided-buffer
 * pools. The only header users include.
 *
 * Conventions: functions return 0 (or a positive count) on success and a
 * negative errno on failure; constructors that return a pointer report the
 * error through an `int *err` out-parameter. One loop is owned by one thread.
 */
#ifndef SHEAF_H
#define SHEAF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* I/O modes (DESIGN §2). */
enum sheaf_io {
	SHEAF_IO_AUTO = 0,
	SHEAF_IO_BUNDLE,  /* recv bundles + send ring with send bundles */
	SHEAF_IO_RING,    /* send ring, one buffer per send, no bundles (baseline) */
	SHEAF_IO_PLAIN,   /* one send per received buffer, no send ring */
	SHEAF_IO_SENDMSG, /* recv bundles, queued buffers gathered into one sendmsg */
	SHEAF_IO_EPOLL,   /* no io_uring: epoll with readv/writev on the same pool */
	SHEAF_IO__COUNT,
};

/* "bundle", "ring", ...; NULL for an unknown mode. */
const char *sheaf_io_name(enum sheaf_io io);
/* Mode for a name, or -EINVAL. */
int sheaf_io_parse(const char *name);

/* What the running kernel supports, filled by sheaf_probe(). */
struct sheaf_probe {
	int io_uring;       /* io_uring_setup works at all */
	int pbuf_ring;      /* provided-buffer rings */
	int recv_multishot; /* multishot recv */
	int recv_bundle;    /* IORING_RECVSEND_BUNDLE on recv (trial) */
	int send_bundle;    /* IORING_RECVSEND_BUNDLE on send (trial) */
	int send_commit;    /* a bundle send commits every entry it selects, sent
			     * or not: what bundle mode's accounting relies on
			     * (trial with a forced short send) */
	int inc_ring;       /* incremental buffer rings (IOU_PBUF_RING_INC) */
	int bundle_refused; /* kernel has bundles but is known to be broken */
	char release[65];   /* uname -r */
	char reason[160];   /* why io_uring or bundles are not used, or "" */
	enum sheaf_io best; /* what `auto` picks */
};

/*
 * Probes the kernel once per process (later calls return the cached result).
 * Always fills *p; returns 0, or a negative errno when io_uring is unusable.
 */
int sheaf_probe(struct sheaf_probe *p);

/*
 * Resolves a requested mode to the one to use: an explicit mode wins, then
 * the SHEAF_IO environment variable, then the probe's best. Returns the mode,
 * or -EINVAL (bad SHEAF_IO) / -EOPNOTSUPP (kernel lacks it; see probe reason).
 */
int sheaf_io_resolve(enum sheaf_io requested);

struct sheaf_loop;
struct sheaf_conn;

/* A received bundle: pointers into pool memory, valid during on_data only. */
struct sheaf_bundle {
	const struct iovec *iov;
	unsigned nr;
	size_t bytes;
};

struct sheaf_callbacks {
	/* A listener accepted c; start it with sheaf_conn_start or link it. */
	void (*on_accept)(struct sheaf_conn *c, void *listen_data);
	/* An outgoing connection finished connecting; err is 0 or -errno
	 * (then c is closed after the callback returns). */
	void (*on_connect)(struct sheaf_conn *c, int err);
	/* Data arrived on a started, unlinked connection. The buffers go back
	 * to the pool when this returns unless forwarded (sheaf_conn_forward). */
	void (*on_data)(struct sheaf_conn *c, const struct sheaf_bundle *b);
	/* The peer finished sending (EOF) on a started, unlinked connection. */
	void (*on_eof)(struct sheaf_conn *c);
	/* c is gone: err is 0 after a clean close, else -errno. */
	void (*on_close)(struct sheaf_conn *c, int err);
};

struct sheaf_loop_config {
	enum sheaf_io io;     /* resolved with sheaf_io_resolve() */
	uint32_t buf_size;    /* bytes per pool buffer, 1 .. 1 MiB */
	uint32_t nbufs;       /* pool buffers, power of two, 2 .. 32768: half for what
			       * accepted connections receive, half for connections
			       * made with sheaf_connect (docs/POOL.md) */
	uint32_t max_conns;   /* connection slots */
	uint32_t queue_high;  /* bytes one send queue may hold before its sender
			       * pauses (at most an eighth of a pool half);
			       * 0 = 256 KiB */
	int nodelay;          /* set TCP_NODELAY on every connection */
	uint32_t connect_timeout_ms; /* sheaf_connect gives up after this; 0 = never */
	int reuseport;        /* listen with SO_REUSEPORT: one listener per loop/thread */
	uint32_t idle_timeout_ms; /* close connections (linked pairs: both sides)
				   * that moved no byte for this long; 0 = never */
	uint32_t stall_timeout_ms; /* while receivers wait for buffers of a pool,
				    * close connections whose queue holds that
				    * pool's buffers and sent nothing for this
				    * long (docs/POOL.md); 0 = never */
};

/* Limits for the configuration above. */
#define SHEAF_MAX_BUF_SIZE (1u << 20)
#define SHEAF_MAX_BUFS 32768u

/* Checks a configuration without allocating: 0 or -EINVAL. */
int sheaf_config_check(const struct sheaf_loop_config *cfg);

/* Creates a loop: its io_uring (or epoll set, for SHEAF_IO_EPOLL) and its
 * receive pool. Run it from the thread that will own it (sheaf_loop_run). */
struct sheaf_loop *sheaf_loop_new(const struct sheaf_loop_config *cfg,
				  const struct sheaf_callbacks *cb, void *data,
				  int *err);
/* Frees a loop whose run returned. */
void sheaf_loop_free(struct sheaf_loop *loop);
void *sheaf_loop_data(struct sheaf_loop *loop);

/*
 * Runs until sheaf_loop_stop() was called and every connection is closed,
 * or until sheaf_loop_break(). Returns 0 or a negative errno.
 */
int sheaf_loop_run(struct sheaf_loop *loop);
/* Graceful stop: close listeners, let queued data drain (at most
 * 2 s), then close all connections. Async-signal-safe; from another
 * thread, also interrupt the loop's thread (a signal without SA_RESTART)
 * so that it notices. */
void sheaf_loop_stop(struct sheaf_loop *loop);
/* Returns from sheaf_loop_run as soon as possible (connections stay). */
void sheaf_loop_break(struct sheaf_loop *loop);

/* Listens on addr (a multishot accept, or epoll readiness); on_accept gets
 * listen_data. Returns the listening fd or -errno. */
int sheaf_listen(struct sheaf_loop *loop, const struct sockaddr *addr,
		 socklen_t len, void *listen_data);

/* Starts connecting; on_connect reports the result (-ETIMEDOUT after
 * connect_timeout_ms). */
struct sheaf_conn *sheaf_connect(struct sheaf_loop *loop,
				 const struct sockaddr *addr, socklen_t len,
				 void *data, int *err);

/* Starts receiving on c (on_data/on_eof). */
int sheaf_conn_start(struct sheaf_conn *c);
/*
 * Links a and b: data received on either is forwarded by reference to the
 * other, with backpressure (each receive takes at most what the other's
 * queue may still hold), half-close propagation, and both closed when both
 * directions are finished or either fails (the other then gets what it has
 * queued, and a reset instead of a FIN). Starts both.
 */
int sheaf_conn_link(struct sheaf_conn *a, struct sheaf_conn *b);
/*
 * Queues the bundle's buffers on `to` (no copy). Only valid inside on_data
 * for the bundle it was given. Once `to` holds its limit (queue_high), the
 * receiving connection's next receives are bounded by what `to` may still
 * hold, and it pauses until `to` has sent half of it (one sender per queue
 * is paused so: with several feeding one queue, only the first is held).
 * Returns 0, -EINVAL (not inside on_data, or twice) or -EPIPE (to is closing).
 */
int sheaf_conn_forward(struct sheaf_conn *to, const struct sheaf_bundle *b);
/* Closes after queued data is sent (half-closing our side first). */
void sheaf_conn_close(struct sheaf_conn *c);

void *sheaf_conn_data(const struct sheaf_conn *c);
void sheaf_conn_set_data(struct sheaf_conn *c, void *data);
struct sheaf_loop *sheaf_conn_loop(const struct sheaf_conn *c);
/* The connection's socket, for getpeername, getsockopt and the like; the
 * loop owns it (never read, write or close it, nor change its flags). Valid
 * until on_close: the socket is closed before that callback. */
int sheaf_conn_fd(const struct sheaf_conn *c);

/*
 * Statistics of one loop (sheaf_loop_stats). Each field is named once, in
 * the lists below; X(name) is applied to each, so users can generate code
 * for every field (see struct sheaf_stats). Loops are independent: the
 * totals of several are the sums of their fields, gauges included.
 */
/* Counters (uint64_t): events since the loop was created. */
#define SHEAF_STATS_COUNTERS(X) \
	X(accepted)        /* connections accepted */ \
	X(rejected)        /* accepted, then closed at once (max_conns, stopping) */ \
	X(connects)        /* outgoing connections started (sheaf_connect) */ \
	X(connect_failed)  /* of those, failed or timed out */ \
	X(closed)          /* connections closed, for any reason */ \
	X(errors)          /* of those, by an error other than a reset or EPIPE */ \
	X(bytes_in)        /* bytes received */ \
	X(bytes_out)       /* bytes sent */ \
	X(recv_cqes)       /* receive completions that carried data */ \
	X(recv_bufs)       /* pool buffers they filled */ \
	X(recv_rearms)     /* receives (re)armed */ \
	X(recv_enobufs)    /* receives that found the pool empty (-ENOBUFS) */ \
	X(send_sqes)       /* sends submitted */ \
	X(send_cqes)       /* send completions */ \
	X(send_bufs)       /* buffers fully sent (and freed) */ \
	X(send_short)      /* sends that sent less than was handed to the kernel: \
			      the rest was queued again */ \
	X(pauses)          /* receivers paused: their peer's send queue was full */ \
	X(bundle_mismatch) /* connections dropped: the kernel's buffer order \
			      did not match ours */ \
	X(idle_closed)     /* connections closed by idle_timeout_ms */ \
	X(stall_closed)    /* connections closed by stall_timeout_ms */
/* Gauges (uint32_t): the state when sheaf_loop_stats is called. */
#define SHEAF_STATS_GAUGES(X) \
	X(pool_bufs)       /* buffers in the pool */ \
	X(pool_free)       /* of those, free (pool_bufs when idle) */ \
	X(conns)           /* open connections */ \
	X(sendrings)       /* send buffer rings registered with the kernel */

#define SHEAF__STATS_U64(name) uint64_t name;
#define SHEAF__STATS_U32(name) uint32_t name;
struct sheaf_stats {
	SHEAF_STATS_COUNTERS(SHEAF__STATS_U64)
	SHEAF_STATS_GAUGES(SHEAF__STATS_U32)
};
#undef SHEAF__STATS_U64
#undef SHEAF__STATS_U32
void sheaf_loop_stats(const struct sheaf_loop *loop, struct sheaf_stats *st);

#ifdef __cplusplus
}
#endif
#endif
