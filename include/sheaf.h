/*
 * libsheaf — io_uring send and receive bundles over shared provided-buffer
 * pools. The only header users include.
 *
 * Conventions: functions return 0 (or a positive count) on success and a
 * negative errno on failure; constructors that return a pointer report the
 * error through an `int *err` out-parameter (which may be NULL). One loop is
 * owned by one thread: "Loop thread" below means the thread that runs the
 * loop (its callbacks included) or, before the first sheaf_loop_run, the one
 * thread that sets it up.
 */
#ifndef SHEAF_H
#define SHEAF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Structs the caller allocates (struct sheaf_probe, sheaf_loop_config,
 * sheaf_callbacks, sheaf_stats, sheaf_conn_info) begin with `size`: the
 * caller sets it to sizeof the struct as it was compiled, and the library reads or writes
 * only that many bytes. Fields are only ever added at the end, so a program
 * built against an older sheaf.h keeps working with a newer libsheaf.so.0.
 * A size smaller than the first version of the struct is -EINVAL.
 */

/* I/O modes (docs/INTERNALS.md). */
enum sheaf_io {
	SHEAF_IO_AUTO = 0,
	SHEAF_IO_BUNDLE,  /* recv bundles + send ring with send bundles */
	SHEAF_IO_RING,    /* send ring, one buffer per send, no bundles (baseline) */
	SHEAF_IO_PLAIN,   /* one send per received buffer, no send ring */
	SHEAF_IO_SENDMSG, /* recv bundles, queued buffers gathered into one sendmsg */
	SHEAF_IO_EPOLL,   /* no io_uring: epoll with readv/sendmsg on the same pool */
	SHEAF_IO_RECVMSG, /* multishot recvmsg (no bundles), sends as SHEAF_IO_SENDMSG;
			   * buffers carry 16 bytes less payload (its header) */
	SHEAF_IO__COUNT,
};

/*
 * The name of a mode ("auto", "bundle", ...), a static string; NULL for a
 * value that is not a mode. Any thread.
 */
const char *sheaf_io_name(enum sheaf_io io);
/* The mode called `name`, or -EINVAL. Any thread. */
int sheaf_io_parse(const char *name);

/* What the running kernel supports, filled by sheaf_probe(). */
struct sheaf_probe {
	uint32_t size;      /* sizeof(struct sheaf_probe), set by the caller */
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
 * Probes the kernel: the first call runs small trials on loopback sockets
 * (a few milliseconds); later calls return the cached result. Fills *p (p->size
 * bytes of it) even when io_uring is unusable. Returns 0, -EINVAL (p->size
 * too small) or a negative errno saying why io_uring cannot be used (then
 * p->best is SHEAF_IO_EPOLL and p->reason says why). Any thread; the first
 * call may run in several threads at once and they agree.
 */
int sheaf_probe(struct sheaf_probe *p);

/*
 * Resolves a requested mode to the one to use: an explicit mode wins, then
 * the SHEAF_IO environment variable, then the probe's best. Returns the mode,
 * -EINVAL (bad SHEAF_IO) or -EOPNOTSUPP (the kernel lacks the requested mode;
 * sheaf_probe's reason says why). Any thread.
 */
int sheaf_io_resolve(enum sheaf_io requested);

struct sheaf_loop;
struct sheaf_conn;
struct sheaf_timer;

/* A received bundle: pointers into pool memory, valid during on_data only. */
struct sheaf_bundle {
	const struct iovec *iov;
	unsigned nr;
	size_t bytes;
};

/*
 * What a loop calls, always on its own thread, from sheaf_loop_run. Every
 * callback may be NULL. A callback may call any function of the loop,
 * sheaf_loop_free excepted.
 */
struct sheaf_callbacks {
	uint32_t size; /* sizeof(struct sheaf_callbacks), set by the caller */
	/* A listener accepted c; start it (sheaf_conn_start), link it, write
	 * to it or close it. listen_data is what sheaf_listen was given. */
	void (*on_accept)(struct sheaf_conn *c, void *listen_data);
	/* An outgoing connection finished connecting; err is 0 or -errno
	 * (then c is closed after the callback returns, on_close follows, and
	 * c cannot be started, linked or written to meanwhile). */
	void (*on_connect)(struct sheaf_conn *c, int err);
	/* Data arrived on a started, unlinked connection. The buffers go back
	 * to the pool when this returns unless forwarded (sheaf_conn_forward);
	 * copy what you keep. */
	void (*on_data)(struct sheaf_conn *c, const struct sheaf_bundle *b);
	/* The peer finished sending (EOF) on a started, unlinked connection.
	 * c can still be written to until you close it. */
	void (*on_eof)(struct sheaf_conn *c);
	/* c is gone (its memory is reused after this returns): err is 0 after
	 * a clean close, else -errno (-ECONNRESET, -EPIPE, -ETIMEDOUT, ...). */
	void (*on_close)(struct sheaf_conn *c, int err);
	/* c can take more: called once after sheaf_conn_write or
	 * sheaf_conn_buf_get took less than asked, when c's queue has drained
	 * to half its limit and the write pool has a free buffer. */
	void (*on_writable)(struct sheaf_conn *c);
};

struct sheaf_loop_config {
	uint32_t size;        /* sizeof(struct sheaf_loop_config), set by
			       * sheaf_loop_config_init */
	enum sheaf_io io;     /* SHEAF_IO_AUTO resolves with sheaf_io_resolve() */
	uint32_t buf_size;    /* bytes per pool buffer, 1 .. 1 MiB (recvmsg: 17 ..) */
	uint32_t nbufs;       /* receive pool buffers, power of two, 2 .. 32768: half
			       * for what accepted connections receive, half for
			       * connections made with sheaf_connect (docs/POOL.md) */
	uint32_t max_conns;   /* connection slots, 1 .. 16777200 */
	uint32_t queue_high;  /* bytes one send queue may hold before its sender
			       * pauses or a write is refused (at most an eighth
			       * of a pool half); 0 = 256 KiB */
	int nodelay;          /* set TCP_NODELAY on every connection */
	uint32_t connect_timeout_ms; /* sheaf_connect gives up after this; 0 = never */
	int reuseport;        /* listen with SO_REUSEPORT: one listener per loop/thread */
	uint32_t idle_timeout_ms; /* close connections (linked pairs: both sides)
				   * that moved no byte for this long; 0 = never */
	uint32_t stall_timeout_ms; /* while receivers wait for buffers of a pool,
				    * close connections whose queue holds that
				    * pool's buffers and sent nothing for this
				    * long (docs/POOL.md); 0 = never */
	uint32_t write_bufs;  /* buffers (of buf_size) for what the program writes
			       * itself (sheaf_conn_write, sheaf_conn_buf_get):
			       * 0, or a power of two up to 16384; 0 = no writes */
	uint32_t accept_max;  /* accepted connections open at once: at this count
			       * (or with no free slot) listeners stop accepting,
			       * and new clients wait in the kernel's backlog until
			       * one closes; 0 = max_conns */
	uint32_t backlog;     /* listen(2) backlog; 0 = 4096 */
	uint32_t drain_timeout_ms; /* how long a stop (sheaf_loop_stop) may take:
				    * connections still open then are reset;
				    * 0 = 2000 */
	int soft_stop;        /* a stop closes only the listeners: connections go
			       * on (receiving, connecting) until they end or the
			       * program closes them, up to drain_timeout_ms.
			       * 0: it closes every connection at once, and each
			       * sends what it has queued first */
};

/* Limits for the configuration above. */
#define SHEAF_MAX_BUF_SIZE (1u << 20)
#define SHEAF_MAX_BUFS 32768u
#define SHEAF_MAX_WRITE_BUFS 16384u

/*
 * Fills *cfg with the defaults and sets cfg->size: io auto, 4 KiB buffers,
 * 2048 receive buffers, 256 write buffers, 1024 connections, TCP_NODELAY on,
 * a 5 s connect timeout, a 30 s stall timeout, no idle timeout, a stop that
 * closes connections at once and takes at most 2 s. Any thread.
 */
void sheaf_loop_config_init(struct sheaf_loop_config *cfg);

/* Checks a configuration without allocating: 0 or -EINVAL (a field out of
 * range, or a size too small). Any thread. */
int sheaf_config_check(const struct sheaf_loop_config *cfg);

/*
 * Creates a loop: its io_uring (or epoll set, for SHEAF_IO_EPOLL), its
 * pools and connection table, allocated here and never grown (send rings,
 * timers and posted functions are allocated as needed). cfg and
 * cb are copied; data is returned by sheaf_loop_data. Returns the loop, or
 * NULL with *err (if err is not NULL) set to -EINVAL (bad configuration or
 * callbacks size), -EOPNOTSUPP (io mode unsupported here), -ENOMEM, or
 * io_uring's error. Any thread; the loop then belongs to the thread that
 * runs it (the first sheaf_loop_run).
 */
struct sheaf_loop *sheaf_loop_new(const struct sheaf_loop_config *cfg,
				  const struct sheaf_callbacks *cb, void *data,
				  int *err);
/*
 * Frees a loop that is not running (never run, or sheaf_loop_run returned):
 * open connections are closed without callbacks, timers are freed, and
 * functions posted but not yet run are dropped. NULL is allowed. From the
 * loop's thread, or any thread once the loop's thread no longer uses it.
 */
void sheaf_loop_free(struct sheaf_loop *loop);
/* The data given to sheaf_loop_new. */
void *sheaf_loop_data(struct sheaf_loop *loop);

/*
 * Runs the loop in the calling thread until sheaf_loop_stop() was called
 * and every connection is closed, or until sheaf_loop_break(). Returns 0,
 * or a negative errno when the backend failed (the loop must then be freed).
 * It may be called again after sheaf_loop_break, from the same thread.
 */
int sheaf_loop_run(struct sheaf_loop *loop);
/*
 * Graceful stop: close listeners; then close every connection once its
 * queued data is sent, or (soft_stop) let connections run until they end;
 * those still open drain_timeout_ms (default 2 s) after the stop are reset.
 * sheaf_loop_run returns once every connection is closed. Any thread, and
 * async-signal-safe: it wakes the loop itself.
 */
void sheaf_loop_stop(struct sheaf_loop *loop);
/* Makes sheaf_loop_run return as soon as possible (connections stay open).
 * Any thread; async-signal-safe. */
void sheaf_loop_break(struct sheaf_loop *loop);

/*
 * Runs fn(loop, arg) on the loop's thread during a later turn of
 * sheaf_loop_run; functions posted from one thread run in the order they
 * were posted. Any thread (not async-signal-safe). Returns 0 or -ENOMEM.
 * What arg points to must stay valid until fn runs.
 */
int sheaf_loop_post(struct sheaf_loop *loop,
		    void (*fn)(struct sheaf_loop *loop, void *arg), void *arg);

/*
 * A timer: fn(t, arg) runs on the loop's thread after_ms milliseconds from
 * now, then every every_ms milliseconds if every_ms is not 0. A one-shot
 * timer is freed after fn returns (t is invalid then); a periodic one lives
 * until sheaf_timer_cancel. Timers do not keep a stopping loop running.
 * Returns the timer, or NULL with *err = -ENOMEM (or -EINVAL: fn is NULL).
 * Loop thread only.
 */
struct sheaf_timer *sheaf_timer_add(struct sheaf_loop *loop, uint32_t after_ms,
				    uint32_t every_ms,
				    void (*fn)(struct sheaf_timer *t, void *arg),
				    void *arg, int *err);
/* Cancels and frees a timer that has not fired, or a periodic one; from
 * inside its own fn too (a one-shot timer is then freed after fn returns,
 * as it would be anyway). NULL is allowed. Loop thread only. */
void sheaf_timer_cancel(struct sheaf_timer *t);

/*
 * Listens on addr (backlog from the configuration; one accept in flight at
 * a time, or epoll readiness);
 * on_accept gets listen_data. Returns the listening fd (owned by the loop:
 * do not close it) or -errno (-ENOSPC after 8 listeners). Loop thread, or
 * before the loop first runs.
 */
int sheaf_listen(struct sheaf_loop *loop, const struct sockaddr *addr,
		 socklen_t len, void *listen_data);

/*
 * Listens on fd, a stream socket bound and listening already (passed by
 * systemd's socket activation, or inherited): as sheaf_listen, without the
 * socket, bind and listen. On success the loop owns fd, sets FD_CLOEXEC on
 * it (and O_NONBLOCK in the epoll mode) and closes it when freed; stopping
 * never shuts the socket down, so a copy held elsewhere (systemd's) keeps
 * listening. Returns fd, or -errno: -ENOSPC after 8 listeners, -EINVAL
 * when fd is a socket but not a listening stream one, -ENOTSOCK, -EBADF;
 * then fd is still the caller's. Loop thread, or before the loop first runs.
 */
int sheaf_listen_fd(struct sheaf_loop *loop, int fd, void *listen_data);

/*
 * Starts connecting to addr (copied); on_connect reports the result
 * (-ETIMEDOUT after connect_timeout_ms). Returns the connection, or NULL
 * with *err: -EMFILE (no free slot, or stopping: with soft_stop, once the
 * drain ended), -EINVAL, or socket()'s
 * error; then neither on_connect nor on_close is called. Data may be written to a
 * connection that is still connecting: it is sent once connected. Loop
 * thread.
 */
struct sheaf_conn *sheaf_connect(struct sheaf_loop *loop,
				 const struct sockaddr *addr, socklen_t len,
				 void *data, int *err);

/* Starts receiving on c (on_data/on_eof). 0, or -EINVAL when c is not open
 * (connecting, closing). Loop thread. */
int sheaf_conn_start(struct sheaf_conn *c);
/*
 * Links a and b: data received on either is forwarded by reference to the
 * other, with backpressure (each receive takes at most what the other's
 * queue may still hold), half-close propagation, and both closed when both
 * directions are finished or either fails (the other then gets what it has
 * queued, and a reset instead of a FIN). Starts both; data a paused
 * connection (sheaf_conn_pause) holds goes to the other first, and pauses
 * end. 0, or -EINVAL (not both open, already linked, a == b, or of two
 * loops). Loop thread.
 */
int sheaf_conn_link(struct sheaf_conn *a, struct sheaf_conn *b);
/*
 * Queues the bundle's buffers on `to` (no copy). Only valid inside on_data
 * for the bundle it was given. Once `to` holds its limit (queue_high), the
 * receiving connection's next receives are bounded by what `to` may still
 * hold, and it pauses until `to` has sent half of it (one sender per queue
 * is paused so: with several feeding one queue, only the first is held).
 * `to` may still be connecting (the data is sent once it is connected) and
 * must belong to the same loop. Returns 0, -EINVAL (not inside on_data,
 * twice, or another loop's connection) or -EPIPE (to is closing or failed).
 */
int sheaf_conn_forward(struct sheaf_conn *to, const struct sheaf_bundle *b);

/*
 * Stops on_data and on_eof for a started, unlinked connection until
 * sheaf_conn_resume: data of a receive already in flight is held (not
 * lost) and delivered first after resuming (SHEAF_IO_RECVMSG cancels its
 * multishot receive instead: what it had taken is held, the rest waits in
 * the socket). 0, or -EINVAL (not started, linked, not open, or paused
 * already). Loop thread.
 */
int sheaf_conn_pause(struct sheaf_conn *c);
/* Ends a pause: held data is delivered during the loop's next turn, then
 * receiving goes on. 0, or -EINVAL (not paused). Loop thread. */
int sheaf_conn_resume(struct sheaf_conn *c);

/*
 * Copies up to len bytes of data into write-pool buffers and queues them on
 * c, behind what is already queued (forwarded data included), so that they
 * go out in the same sends (bundles where the mode has them). Returns the
 * bytes taken (0 < n <= len), or:
 *   -EAGAIN  nothing taken: c's queue is at its limit (queue_high) or the
 *            write pool is empty; on_writable follows
 *   -EPIPE   c is closing, half-closed by us, or gone through an error
 *   -ENOBUFS the loop has no write pool (write_bufs = 0)
 * A return below len also means on_writable follows. len = 0 returns 0
 * when c could be written (else the error above).
 * c may still be connecting. Loop thread.
 */
ssize_t sheaf_conn_write(struct sheaf_conn *c, const void *data, size_t len);
/*
 * Zero-copy writing: takes a free write-pool buffer for c and returns its
 * memory, *cap (buf_size) bytes. NULL with *err set as sheaf_conn_write
 * would return it: -EAGAIN (queue at its limit or pool empty; on_writable
 * follows), -EPIPE or -ENOBUFS. The buffer is the caller's until it is
 * passed to sheaf_conn_write_buf (of any connection of this loop) or
 * sheaf_buf_put. Loop thread.
 */
void *sheaf_conn_buf_get(struct sheaf_conn *c, size_t *cap, int *err);
/*
 * Queues len bytes (1 .. cap) at the start of buf, a buffer from
 * sheaf_conn_buf_get, on c; the buffer goes back to the pool once sent
 * (or when c closes). Returns 0, -EINVAL (not a buffer the caller holds,
 * or a bad len) or -EPIPE (c cannot be written); after an error buf is
 * still the caller's. Loop thread.
 */
int sheaf_conn_write_buf(struct sheaf_conn *c, void *buf, size_t len);
/* Gives back a buffer from sheaf_conn_buf_get unused. Loop thread. */
void sheaf_buf_put(struct sheaf_loop *loop, void *buf);

/*
 * Closes c once its queued data is sent: the peer sees a FIN, or a reset if
 * data it sent is still unread (or c failed); on_close follows. A connection still connecting is dropped at once.
 * Calling it again, or on a closing connection, does nothing. Loop thread.
 */
void sheaf_conn_close(struct sheaf_conn *c);

/* The pointer given to sheaf_connect or set with sheaf_conn_set_data
 * (NULL for an accepted connection until set). Loop thread. */
void *sheaf_conn_data(const struct sheaf_conn *c);
void sheaf_conn_set_data(struct sheaf_conn *c, void *data);
/* The loop c belongs to. Loop thread. */
struct sheaf_loop *sheaf_conn_loop(const struct sheaf_conn *c);
/* The connection's socket, for getpeername, getsockopt and the like; the
 * loop owns it (never read, write or close it, nor change its flags). Valid
 * until on_close: the socket is closed before that callback. Loop thread. */
int sheaf_conn_fd(const struct sheaf_conn *c);

/* What the library counted for one connection (sheaf_conn_info). */
struct sheaf_conn_info {
	uint32_t size;      /* sizeof(struct sheaf_conn_info), set by the caller */
	uint32_t flags;     /* SHEAF_CONN_* below */
	uint64_t bytes_in;  /* bytes received on it */
	uint64_t bytes_out; /* bytes sent on it (taken by the kernel) */
};
#define SHEAF_CONN_ACCEPTED    0x1u /* from a listener (else from sheaf_connect) */
#define SHEAF_CONN_PEER_FAILED 0x2u /* its error is not its own: it was reset
				      * because the connection linked to it
				      * failed (sheaf_conn_link) */

/*
 * Fills info->size bytes of *info with what the library counted for c. Valid
 * from on_accept (or sheaf_connect) until on_close returns, on_close
 * included. 0, or -EINVAL (info->size smaller than the first version).
 * Loop thread.
 */
int sheaf_conn_info(const struct sheaf_conn *c, struct sheaf_conn_info *info);

/*
 * Statistics of one loop (sheaf_loop_stats). Each field is named once, in
 * the lists below; X(name) is applied to each, so users can generate code
 * for every field (see struct sheaf_stats). Loops are independent: the
 * totals of several are the sums of their fields, gauges included.
 */
/*
 * Counters (uint64_t): events since the loop was created. SHEAF_STATS_COUNTERS
 * names them all; in the struct, those added after its first version
 * (SHEAF_STATS_COUNTERS_V1) follow the gauges, since fields are only ever
 * added at the end.
 */
#define SHEAF_STATS_COUNTERS(X) SHEAF_STATS_COUNTERS_V0(X) SHEAF_STATS_COUNTERS_V1(X)
#define SHEAF_STATS_COUNTERS_V0(X) \
	X(accepted)        /* connections accepted */ \
	X(rejected)        /* accepted, then closed at once (stopping) */ \
	X(accept_pauses)   /* listeners stopped at accept_max or out of slots or \
			      descriptors: clients waited in the backlog */ \
	X(connects)        /* outgoing connections started (sheaf_connect) */ \
	X(connect_failed)  /* of those, failed or timed out */ \
	X(closed)          /* connections closed, for any reason */ \
	X(errors)          /* of those, by an error other than a reset or EPIPE */ \
	X(bytes_in)        /* bytes received */ \
	X(bytes_out)       /* bytes sent */ \
	X(written)         /* bytes the program queued (sheaf_conn_write, _write_buf) */ \
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
#define SHEAF_STATS_COUNTERS_V1(X) \
	X(enters)          /* calls into the kernel to submit and wait: \
			      io_uring_enter (epoll: epoll_wait) */ \
	SHEAF_STATS_HIST(X, recv) /* receive completions with data, by \
				     the buffers each filled */ \
	SHEAF_STATS_HIST(X, send) /* send completions (send_cqes), by the \
				     buffers each sent in full */ \
	X(recv_mshot_stops) /* multishot receives (recvmsg mode) cancelled \
			       to keep a budget, for a pause or for waiters */
/*
 * A histogram in power-of-two buckets: OP_hist_N counts the completions
 * that moved more than N/2 and at most N buffers (OP_hist_1: one or none),
 * OP_hist_more those that moved more than 256. The sum of a
 * histogram's buckets is recv_cqes (send_cqes); their buffers, recv_bufs
 * (send_bufs).
 */
#define SHEAF_STATS_HIST(X, op) \
	X(op##_hist_1) X(op##_hist_2) X(op##_hist_4) X(op##_hist_8) X(op##_hist_16) \
	X(op##_hist_32) X(op##_hist_64) X(op##_hist_128) X(op##_hist_256) \
	X(op##_hist_more)
#define SHEAF_STATS_HIST_BUCKETS 10
/* Gauges (uint32_t): the state when sheaf_loop_stats is called. */
#define SHEAF_STATS_GAUGES(X) \
	X(pool_bufs)       /* buffers in the pools (receive and write) */ \
	X(pool_free)       /* of those, free (pool_bufs when idle) */ \
	X(conns)           /* open connections */ \
	X(sendrings)       /* send buffer rings registered with the kernel */

#define SHEAF__STATS_U64(name) uint64_t name;
#define SHEAF__STATS_U32(name) uint32_t name;
struct sheaf_stats {
	uint32_t size; /* sizeof(struct sheaf_stats), set by the caller */
	SHEAF_STATS_COUNTERS_V0(SHEAF__STATS_U64)
	SHEAF_STATS_GAUGES(SHEAF__STATS_U32)
	SHEAF_STATS_COUNTERS_V1(SHEAF__STATS_U64)
};
#undef SHEAF__STATS_U64
#undef SHEAF__STATS_U32
/* Fills st->size bytes of *st with the loop's statistics. Loop thread,
 * or any thread while the loop does not run. */
void sheaf_loop_stats(const struct sheaf_loop *loop, struct sheaf_stats *st);

#ifdef __cplusplus
}
#endif
#endif
