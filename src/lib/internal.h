/*
 * The contract between libsheaf's modules. Not installed.
 *
 * Layers, each calling only the ones below it:
 *   loop.c                 run, stop, timers, stats
 *   listen.c               listeners: accepting, pausing at accept_max
 *   conn.c                 connections: states, dispatch, forwarding,
 *                          backpressure, close; the public conn API,
 *                          with its parts (calling each other):
 *     connect.c            outgoing connections and their deadlines
 *     pause.c              sheaf_conn_pause/resume, held data
 *     write.c              what the program writes, write-pool waiters
 *   recv.c                 the receive side: budget, arming, wait list, mapping
 *   backend.h              the seam: uring.c + uring_send.c, or epoll.c
 *   sendq.c pool.c bundle.c  plain data structures, no I/O
 */
#ifndef SHEAF_INTERNAL_H
#define SHEAF_INTERNAL_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "sheaf.h"
#include "compat.h"

#define SHEAF__NIL 0xffffu /* end of a buffer queue */

/*
 * user_data layout: | op:8 | slot:24 | gen:32 |. `slot` indexes the loop's
 * connection (or listener) table; `gen` is bumped each time a slot is
 * reused, so a completion for a closed connection can never reach a new one.
 */
enum sheaf__op {
	SHEAF__OP_NONE = 0, /* a completion nothing waits for */
	SHEAF__OP_ACCEPT,
	SHEAF__OP_CONNECT,
	SHEAF__OP_RECV,
	SHEAF__OP_SEND,
	SHEAF__OP_CANCEL,
	SHEAF__OP_WAKE,   /* the loop's eventfd is readable (sheaf_loop_post) */
};

static inline uint64_t sheaf__ud(unsigned op, uint32_t slot, uint32_t gen)
{
	return ((uint64_t)op << 56) | ((uint64_t)(slot & 0xffffff) << 32) | gen;
}
static inline unsigned sheaf__ud_op(uint64_t ud) { return ud >> 56; }
static inline uint32_t sheaf__ud_slot(uint64_t ud) { return (ud >> 32) & 0xffffff; }
static inline uint32_t sheaf__ud_gen(uint64_t ud) { return (uint32_t)ud; }

/*
 * A completion as both backends report it: io_uring's CQE fields, and the
 * epoll backend plays the kernel's part with the same meaning.
 */
struct sheaf__event {
	uint64_t ud;
	int32_t res;
	uint32_t flags; /* IORING_CQE_F_BUFFER | F_MORE, buffer id << 16 */
};

/*
 * A provided-buffer pool: nbufs buffers of buf_size bytes in one mmap'd
 * region, published through one buffer ring of nbufs entries. The ring
 * holds every free buffer, so a ring position is never reused before the
 * completion that consumed it has been processed.
 *
 * shadow[pos & mask] remembers which buffer id was published at each ring
 * position; `head` is where the kernel will consume next (as far as the
 * completions processed so far tell), `tail` is our next free position and
 * `published` the tail the kernel can see.
 */
struct sheaf__pool {
	uint8_t *mem;
	size_t mem_len;
	uint32_t buf_size;
	uint32_t nbufs;
	uint32_t mask;
	struct io_uring_buf_ring *br;
	size_t br_len;
	uint16_t bgid;
	uint16_t head;
	uint16_t tail;
	uint16_t published;
	uint16_t *shadow; /* bid at each ring position */
	uint16_t *next;   /* queue link per bid (SHEAF__NIL ends a queue) */
	uint32_t *len;    /* bytes of data held in each buffer */
	uint16_t *off;    /* where that data starts in the buffer (after a
			   * multishot recvmsg's header; else 0) */
	uint32_t held;    /* buffers out of the ring (received, queued) */
	uint64_t mismatches;
};

int sheaf__pool_init(struct sheaf__pool *p, uint32_t buf_size, uint32_t nbufs,
		     uint16_t bgid);
void sheaf__pool_fini(struct sheaf__pool *p);
void sheaf__pool_put(struct sheaf__pool *p, uint16_t bid);
void sheaf__pool_flush(struct sheaf__pool *p);
/* Takes the oldest free buffer (the write pool, which no kernel consumes);
 * SHEAF__NIL when none is free. */
uint16_t sheaf__pool_take(struct sheaf__pool *p);
static inline uint32_t sheaf__pool_free(const struct sheaf__pool *p)
{
	return p->nbufs - p->held;
}
static inline uint8_t *sheaf__pool_buf(const struct sheaf__pool *p, uint16_t bid)
{
	return p->mem + (size_t)bid * p->buf_size;
}
/* Page-aligned anonymous memory for a buffer ring of `entries`. */
struct io_uring_buf_ring *sheaf__ring_alloc(uint32_t entries, size_t *len);
int sheaf__ring_register(struct io_uring *ring, struct io_uring_buf_ring *br,
			 uint32_t entries, uint16_t bgid, unsigned flags);

/*
 * Maps a receive completion (first buffer id, bytes) to the buffers it
 * covers, in data order, writing them to bids[]. `bundle` says whether the
 * receive could take several buffers. Returns the count, or -EPROTO when
 * the first id is not the one published at the expected head (the mapping
 * assumption broke: the caller must not deliver the data).
 */
int sheaf__bundle_map(struct sheaf__pool *p, uint16_t first_bid, uint32_t res,
		      bool bundle, uint16_t *bids);
/*
 * Maps a recvmsg completion of `res` bytes into buffer `bid` (by its id,
 * whatever the ring order), writing it to bids[0]. With `header` (a
 * multishot) the buffer begins with a struct io_uring_recvmsg_out (no name,
 * no control data): the buffer's data is set to the payload after it
 * (off[], len[]). Returns 1; 0 when the payload is empty (EOF: the buffer
 * goes back to the ring); -EPROTO when the id or the header does not fit
 * (nothing delivered, the buffer back in the ring if it was taken).
 */
int sheaf__recvmsg_map(struct sheaf__pool *p, uint16_t bid, uint32_t res, bool header,
		       uint16_t *bids);
/* After a mismatch: move head to the position holding first_bid, if any. */
int sheaf__bundle_resync(struct sheaf__pool *p, uint16_t first_bid);

/*
 * Buffers as the rest of the library names them. A loop has two receive
 * pools, one per direction (SHEAF__DIR_IN/OUT), and a write pool for what
 * the program writes itself (SHEAF__DIR_APP, not known to the kernel): a
 * global id carries the pool in bits 14-15 and the pool's own id below it
 * (a pool has at most 16384 buffers), so one queue may hold buffers of all
 * three. Pool 3 is never used, so SHEAF__NIL is no buffer.
 */
#define SHEAF__DIRS 2  /* receive pools */
#define SHEAF__POOLS 3 /* and the write pool */
#define SHEAF__DIR_APP 2
#define SHEAF__GID(dir, bid) ((uint16_t)((dir) << 14 | (bid)))
#define SHEAF__GID_DIR(g) ((g) >> 14)
#define SHEAF__GID_BID(g) ((uint16_t)((g) & 0x3fff))
/* next[] of a write-pool buffer the program holds (sheaf_conn_buf_get) */
#define SHEAF__APP_HELD 0xfffeu

/* The data a buffer holds starts here (sheaf__pool_buf is the buffer). */
static inline uint8_t *sheaf__buf(struct sheaf__pool *pools, uint16_t g)
{
	struct sheaf__pool *p = &pools[SHEAF__GID_DIR(g)];

	return sheaf__pool_buf(p, SHEAF__GID_BID(g)) + p->off[SHEAF__GID_BID(g)];
}
static inline uint32_t *sheaf__buf_len(struct sheaf__pool *pools, uint16_t g)
{
	return &pools[SHEAF__GID_DIR(g)].len[SHEAF__GID_BID(g)];
}
static inline uint16_t *sheaf__buf_next(struct sheaf__pool *pools, uint16_t g)
{
	return &pools[SHEAF__GID_DIR(g)].next[SHEAF__GID_BID(g)];
}
static inline void sheaf__buf_put(struct sheaf__pool *pools, uint16_t g)
{
	sheaf__pool_put(&pools[SHEAF__GID_DIR(g)], SHEAF__GID_BID(g));
}

/*
 * A send queue: buffers (global ids) linked through the pools' next[],
 * oldest first. The first `out` of them are with the kernel (in a send
 * ring, an SQE or a writev); `off` bytes of the oldest were sent already.
 * sendq.c is plain bookkeeping: the backends decide how buffers go out.
 */
struct sheaf__sendq {
	uint16_t head, tail, push; /* push: the first buffer not handed out */
	uint32_t count, out;
	uint32_t off;
	uint64_t bytes;            /* unsent bytes queued */
};

void sheaf__sendq_init(struct sheaf__sendq *q);
void sheaf__sendq_append(struct sheaf__pool *pools, struct sheaf__sendq *q, uint16_t g);
/* Takes the oldest buffer off (sent or dropped); returns it for the pool. */
uint16_t sheaf__sendq_pop(struct sheaf__pool *pools, struct sheaf__sendq *q);
/* Hands out up to max buffers not yet handed out: their data (the oldest
 * from `off`) in iov[] and ids in gids[] (either may be NULL). */
unsigned sheaf__sendq_take(struct sheaf__pool *pools, struct sheaf__sendq *q,
			   struct iovec *iov, uint16_t *gids, unsigned max);
/*
 * `bytes` of what was handed out went on the wire: retires the buffers they
 * cover (into done[], for the caller to give back) and keeps the offset
 * into a partly sent one; *n is the count retired. Returns 0, or -EPROTO
 * when more bytes were reported than were handed out (those retired are in
 * done[] all the same, for the pool).
 */
int sheaf__sendq_sent(struct sheaf__pool *pools, struct sheaf__sendq *q,
		      uint64_t bytes, uint16_t *done, int *n);
/* Whatever is still handed out was not sent: it goes out again later. */
void sheaf__sendq_unhand(struct sheaf__sendq *q);
int sheaf__sendq_done(struct sheaf__pool *pools, struct sheaf__sendq *q, int res,
		      bool last, uint16_t *done, int *n);
unsigned sheaf__sendq_publish(struct sheaf__pool *pools, struct sheaf__sendq *q,
			      struct io_uring_buf_ring *br, uint32_t entries,
			      uint16_t *tail, unsigned max);
int sheaf__sendq_bundle_done(struct sheaf__pool *pools, struct sheaf__sendq *q,
			     uint16_t *head, uint16_t tail, const struct sheaf__event *ev,
			     uint16_t *done, int *n);
/* Send errors after which the rest is simply sent again. */
static inline bool sheaf__send_retry(int res)
{
	return res >= 0 || res == -ECANCELED || res == -EINTR || res == -EAGAIN;
}

/* ---- connections -------------------------------------------------------- */

/*
 * A connection's life (c->state), every transition:
 *   FREE -> CONNECTING  sheaf_connect
 *   FREE -> OPEN        accepted
 *   CONNECTING -> OPEN  connected
 *   OPEN -> CLOSING     sheaf_conn_close, or the peer of a linked pair went:
 *                       no more receiving; the queue is still sent
 *   CONNECTING, OPEN, CLOSING -> DEAD
 *                       sheaf__conn_abort: an error, or done (CLOSING with an
 *                       empty queue, or both directions of a pair finished);
 *                       everything in flight is cancelled
 *   DEAD -> FREE        once nothing is in flight, at the end of the batch
 *
 * The receive side (c->rx), only while OPEN:
 *   IDLE     not started, or between a completion and the next decision
 *   ARMED    a receive is in flight (epoll: interest in EPOLLIN)
 *   PAUSED   its budget is used: what it received waits in a queue
 *            (c->peer's, or c->paused_by's) -> recv_arm when that drains
 *   WAITING  its pool had too few free buffers: on the loop's wait list
 *   DONE     EOF, or receiving stopped for good
 * The send side (c->tx): OPEN, then SHUT_PENDING (the sender feeding it
 * finished: half-close once the queue is empty), then SHUT.
 */
enum sheaf__state { SHEAF__FREE, SHEAF__CONNECTING, SHEAF__OPEN, SHEAF__CLOSING, SHEAF__DEAD };
enum sheaf__rx { SHEAF__RX_IDLE, SHEAF__RX_ARMED, SHEAF__RX_PAUSED, SHEAF__RX_WAITING,
		 SHEAF__RX_DONE };
enum sheaf__tx { SHEAF__TX_OPEN, SHEAF__TX_SHUT_PENDING, SHEAF__TX_SHUT };

struct sheaf_conn {
	struct sheaf_loop *loop;
	void *data;
	int fd;
	uint32_t slot, gen;
	uint8_t state, rx, tx;
	uint8_t dir;                   /* which pool it receives into */
	bool started;
	bool reaping;                  /* on the loop's reap list */
	bool user_paused;              /* sheaf_conn_pause: no on_data */
	bool held_eof;                 /* EOF came while paused */
	bool want_write;               /* a write fell short: on_writable due */
	bool resuming;                 /* on the loop's resume list */
	bool unseen;                   /* sheaf_connect failed at once: the program
					* never had it, so no on_close */
	bool peer_failed;              /* err was set because its linked peer failed */
	struct sheaf_conn *peer;       /* linked: what we receive goes there */
	struct sheaf_conn *paused_src; /* the sender we paused (queue full) */
	struct sheaf_conn *paused_by;  /* whose full queue paused us */
	struct sheaf_conn *wait_next;  /* on the wait list */
	struct sheaf_conn *reap_next;  /* on the reap list */
	struct sheaf_conn *dnext, *dprev; /* on the connect deadline list */
	struct sheaf_conn *resume_next;   /* on the resume list */
	struct sheaf_conn *wwait_next;    /* waiting for write-pool buffers */
	struct sheaf__sendq q;
	struct sheaf__sendq held;      /* received while paused (not sent) */
	unsigned sends;                /* send SQEs in flight */
	unsigned inflight;             /* SQEs of any kind in flight */
	void *io;                      /* the backend's per-connection state */
	uint32_t io_mask;              /* the backend's per-connection flags */
	uint32_t io_arg;               /* the backend's: buffers the receive may take */
	uint16_t rx_want;              /* buffers the next receive asks for (recv.c) */
	uint16_t rx_asked;             /* buffers the receive in flight asked for */
	bool rx_drained;               /* the last receive left the socket empty */
	bool rx_multi;                 /* the receive in flight is multishot */
	bool rx_stopping;              /* ... and is being cancelled */
	int err;
	double deadline;               /* connect gives up then */
	double active;                 /* when a byte last moved (idle timeout) */
	double sent_at;                /* when its queue last sent (stall timeout) */
	uint64_t bytes_in, bytes_out;  /* sheaf_conn_info */
	struct sockaddr_storage addr;  /* connect target */
	socklen_t addr_len;
};

/* The pool a connection receives into: accepted connections use one,
 * connections the loop made the other (why: docs/POOL.md). */
#define SHEAF__DIR_IN 0
#define SHEAF__DIR_OUT 1

#define SHEAF__MAX_LISTEN 8

struct sheaf__listener {
	int fd;
	bool adopted;    /* sheaf_listen_fd: another copy may listen on, so
			  * stopping must not shut the socket down */
	bool armed;
	bool paused;     /* stopped at accept_max: listen again when one closes */
	void *data;
	double retry_at; /* re-listen then (out of descriptors), or 0 */
};

struct sheaf__backend;

/* Timers: a binary min-heap by deadline (timer.c). */
struct sheaf_timer {
	struct sheaf_loop *loop;
	double when;
	double every;            /* seconds, 0 for one shot */
	uint32_t idx;            /* position in the heap */
	void (*fn)(struct sheaf_timer *t, void *arg);
	void *arg;
};
struct sheaf__timers {
	struct sheaf_timer **heap;
	uint32_t n, cap;
};
void sheaf__timers_fini(struct sheaf__timers *ts);
double sheaf__timers_next(const struct sheaf__timers *ts); /* 0: none */
void sheaf__timers_run(struct sheaf_loop *l);

/* sheaf_loop_post (post.c): a locked queue and an eventfd the backend
 * watches (event SHEAF__OP_WAKE). */
struct sheaf__posts;
int sheaf__posts_init(struct sheaf_loop *l);
void sheaf__posts_fini(struct sheaf_loop *l);
int sheaf__posts_fd(const struct sheaf_loop *l);
void sheaf__posts_wake(struct sheaf_loop *l); /* async-signal-safe */
void sheaf__posts_run(struct sheaf_loop *l);  /* reads the eventfd, runs them */

struct sheaf_loop {
	const struct sheaf__backend *be;
	void *be_state;              /* the backend's, behind one pointer */
	struct sheaf_loop_config cfg;
	struct sheaf_callbacks cb;
	void *data;
	struct sheaf__pool pool[SHEAF__POOLS];
	unsigned armed[SHEAF__DIRS]; /* receives in flight per pool */
	uint32_t waiting[SHEAF__DIRS]; /* connections on the wait list per pool */
	bool recv_bundle;            /* cleared if the mapping guard trips */
	bool enabled;                /* sheaf_loop_run started */
	struct sheaf_conn *conns;
	uint32_t *free_slots, nfree, nconns;
	uint32_t accepted_open;      /* accepted connections not yet freed */
	bool accept_paused;          /* a listener is paused (accept_max) */
	struct sheaf__listener listen[SHEAF__MAX_LISTEN];
	unsigned nlisten;
	struct sheaf_conn *wait_head, *wait_tail;
	struct sheaf_conn *reap;     /* closed, to be freed after this batch */
	struct sheaf_conn *resume;   /* resumed with held data, delivered next turn */
	struct sheaf_conn *wwait;    /* waiting for a free write-pool buffer */
	struct sheaf__timers timers;
	struct sheaf__posts *posts;  /* sheaf_loop_post's queue and wake-up */
	struct sheaf_conn *dl_head, *dl_tail; /* connects, by deadline */
	uint32_t rearm_min;          /* free buffers that re-arm every waiter */
	uint32_t hold_max;           /* buffers one queue may hold (docs/POOL.md) */
	uint16_t *bids;              /* scratch: buffers of one completion */
	struct iovec *iov;           /* scratch: the bundle view */
	struct sheaf_conn *cur_src;  /* on_data in progress: its connection */
	uint32_t cur_n;
	bool cur_forwarded;
	atomic_int stop_req, break_req; /* set by signal handlers, other threads */
	bool stopping;
	double now;                  /* the clock at this turn */
	double drain_deadline;       /* end of the stop drain, or 0 */
	bool drained;                /* the drain ended: connections were reset */
	double next_sweep;           /* next idle sweep, or 0 */
	double next_stall;           /* next stall check, or 0 */
	struct sheaf_stats st;
	/* buffers per completion (SHEAF_STATS_HIST): [SHEAF__HIST_RECV or
	 * SHEAF__HIST_SEND][sheaf__hist_bucket(n)], copied into st's fields
	 * by sheaf_loop_stats */
	uint64_t hist[2][SHEAF_STATS_HIST_BUCKETS];
};

#define SHEAF__HIST_RECV 0
#define SHEAF__HIST_SEND 1

/* The histogram bucket of a completion that moved n buffers: 0 for at most
 * one, k for 2^(k-1) < n <= 2^k, the last for more than 256. */
static inline unsigned sheaf__hist_bucket(uint32_t n)
{
	unsigned k = n <= 1 ? 0 : 32 - (unsigned)__builtin_clz(n - 1);

	return k < SHEAF_STATS_HIST_BUCKETS - 1 ? k : SHEAF_STATS_HIST_BUCKETS - 1;
}

/* The one clock: CLOCK_MONOTONIC seconds. */
static inline double sheaf__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* listen.c, for loop.c */
void sheaf__listen_event(struct sheaf_loop *l, const struct sheaf__event *ev);
void sheaf__accept_resume(struct sheaf_loop *l); /* paused listeners, if room */
bool sheaf__listeners_armed(const struct sheaf_loop *l);

/* conn.c: a connection's life, its events, forwarding */
struct sheaf_conn *sheaf__conn_new(struct sheaf_loop *l, int fd, unsigned dir);
struct sheaf_conn *sheaf__conn_lookup(struct sheaf_loop *l, uint64_t ud);
void sheaf__conn_event(struct sheaf_loop *l, const struct sheaf__event *ev);
void sheaf__conn_abort(struct sheaf_conn *c, int err);
void sheaf__reap(struct sheaf_loop *l);
/* Moves c towards its end once its queue is empty (half-close, close). */
void sheaf__conn_progress(struct sheaf_conn *c);
/* Lets c send what is queued (nothing while connecting or in flight). */
void sheaf__conn_send_more(struct sheaf_conn *c);
/* n received buffers (l->bids, `bytes` in all): to the peer, held, or on_data. */
void sheaf__conn_deliver(struct sheaf_conn *c, uint32_t n, uint32_t bytes);

/* connect.c */
void sheaf__conn_connected(struct sheaf_conn *c, int res);
void sheaf__deadline_remove(struct sheaf_conn *c);

/* pause.c */
void sheaf__conn_resumed(struct sheaf_loop *l);  /* held data of resumed conns */
void sheaf__resume_remove(struct sheaf_conn *c);
void sheaf__hand_over_held(struct sheaf_conn *c); /* to its new peer */

/* write.c */
void sheaf__conn_writable(struct sheaf_loop *l); /* write-pool waiters */
void sheaf__wwait_remove(struct sheaf_conn *c);
/* c's queue drained below half after it was refused room: on_writable. */
void sheaf__write_room(struct sheaf_conn *c);

/*
 * Buffers a multishot recvmsg may still take after the completion on which
 * sheaf decides to stop it: the rest of the kernel's pass (it posts up to
 * 16 completions per run of its task work, all seen in one batch) and one
 * more after the cancel (measured: docs/KERNEL.md). A multishot is armed
 * only with more budget than this, and cancelled when no more is left.
 */
#define SHEAF__MSHOT_AFTER 16

/* recv.c, for conn.c and loop.c */
void sheaf__recv_arm(struct sheaf_conn *c);
void sheaf__recv_wait(struct sheaf_conn *c);
void sheaf__recv_stop(struct sheaf_conn *c);
void sheaf__recv_forget(struct sheaf_conn *c);
int sheaf__recv_map(struct sheaf_conn *c, const struct sheaf__event *ev, uint32_t *bytes);
void sheaf__recv_check(struct sheaf_conn *c);
void sheaf__recv_rearm_waiters(struct sheaf_loop *l);

/* Kernel release triple parsing, shared by the probe and its tests. */
int sheaf__kernel_version(const char *release, int *maj, int *min, int *patch);
/* 1 if this kernel version is known to reorder bundle data. */
int sheaf__bundle_bad_kernel(int maj, int min, int patch);

#endif
