/* The contract between libsheaf's modules. Not installed. */
#ifndef SHEAF_INTERNAL_H
#define SHEAF_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sheaf.h"
#include "compat.h"

#define SHEAF__NIL 0xffffu /* end of a buffer queue (bids are < 32768) */

/*
 * user_data layout: | op:8 | slot:24 | gen:32 |. `slot` indexes the loop's
 * connection (or listener) table; `gen` is bumped each time a slot is
 * reused, so a completion for a closed connection can never reach a new one.
 */
enum sheaf__op {
	SHEAF__OP_ACCEPT = 1,
	SHEAF__OP_CONNECT,
	SHEAF__OP_RECV,
	SHEAF__OP_SEND,
	SHEAF__OP_CANCEL,
	SHEAF__OP_TIMEOUT,
	SHEAF__OP_LINK_TIMEOUT, /* bounds a connect */
};

static inline uint64_t sheaf__ud(unsigned op, uint32_t slot, uint32_t gen)
{
	return ((uint64_t)op << 56) | ((uint64_t)(slot & 0xffffff) << 32) | gen;
}
static inline unsigned sheaf__ud_op(uint64_t ud) { return ud >> 56; }
static inline uint32_t sheaf__ud_slot(uint64_t ud) { return (ud >> 32) & 0xffffff; }
static inline uint32_t sheaf__ud_gen(uint64_t ud) { return (uint32_t)ud; }

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
	bool registered;
	uint16_t head;
	uint16_t tail;
	uint16_t published;
	uint16_t *shadow; /* bid at each ring position */
	uint16_t *next;   /* queue link per bid (SHEAF__NIL ends a queue) */
	uint32_t *len;    /* bytes of data held in each buffer */
	uint32_t held;    /* buffers out of the ring (received, queued) */
	uint64_t mismatches;
};

int sheaf__pool_init(struct sheaf__pool *p, struct io_uring *ring,
		     uint32_t buf_size, uint32_t nbufs, uint16_t bgid);
void sheaf__pool_fini(struct sheaf__pool *p, struct io_uring *ring);
void sheaf__pool_put(struct sheaf__pool *p, uint16_t bid);
void sheaf__pool_flush(struct sheaf__pool *p);
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
int sheaf__ring_head(struct io_uring *ring, uint16_t bgid, uint16_t *head);

/*
 * Maps a receive completion (first buffer id, bytes) to the buffers it
 * covers, in data order, writing them to bids[]. `bundle` says whether the
 * receive could take several buffers. Returns the count, or -EPROTO when
 * the first id is not the one published at the expected head (the mapping
 * assumption broke: the caller must not deliver the data).
 */
int sheaf__bundle_map(struct sheaf__pool *p, uint16_t first_bid, uint32_t res,
		      bool bundle, uint16_t *bids);
/* After a mismatch: move head to the position holding first_bid, if any. */
int sheaf__bundle_resync(struct sheaf__pool *p, uint16_t first_bid);

/* A sendmsg of queued buffers: the kernel reads both at issue time. */
#define SHEAF__GATHER_MAX 256
struct sheaf__gather {
	struct msghdr mh;
	struct iovec iov[SHEAF__GATHER_MAX];
};

/* A send ring: a window of one connection's queue the kernel sends from. */
struct sheaf__sring {
	struct io_uring_buf_ring *br;
	size_t len;
	uint16_t bgid;
	uint16_t head; /* entries the completions so far consumed */
	uint16_t tail; /* entries published */
	struct sheaf__sring *next; /* free list */
};

struct sheaf_conn {
	struct sheaf_loop *loop;
	void *data;
	int fd;
	uint32_t slot, gen;
	bool in_use, started, connecting;
	struct sheaf_conn *peer;       /* linked: what we receive goes there */
	struct sheaf_conn *paused_src; /* the sender we paused (queue full) */
	struct sheaf_conn *paused_by;  /* whose full queue paused us */
	struct sheaf_conn *wait_next;  /* waiting for pool buffers */
	bool waiting;
	/* receive side */
	bool recv_armed, paused, rd_eof;
	/* send queue: bids linked through pool.next, oldest first */
	uint16_t q_head, q_tail, q_push; /* q_push: first bid not handed out */
	uint32_t q_count, q_out;         /* q_out: handed to the kernel */
	uint32_t q_off;                  /* bytes of q_head already sent */
	uint64_t q_bytes;
	unsigned sends;                  /* send SQEs in flight */
	bool gathering;                  /* bundle mode: the send in flight is a sendmsg */
	uint16_t bundle_n;               /* buffers published for the bundle in flight */
	/* epoll backend: what is registered, and whether a write must wait */
	bool ep_added, ep_want_out;
	uint32_t ep_mask;
	struct sheaf__sring *sring;
	struct sheaf__gather *gather;    /* sendmsg: header and iovecs, lazily */
	bool shut_pending, wr_shut, want_close, closing, reaping;
	struct sheaf_conn *reap_next;
	unsigned inflight;               /* SQEs still to complete */
	int err;
	struct sheaf_conn *cnext, *cprev; /* epoll: connecting, oldest first */
	double deadline;                 /* epoll: connect gives up then */
	double active;                   /* when a byte last moved (idle timeout) */
	struct sockaddr_storage addr;    /* connect target, until submitted */
	socklen_t addr_len;
};

#define SHEAF__MAX_LISTEN 8

struct sheaf__listener {
	int fd;
	bool armed;
	void *data;
	double retry_at; /* epoll backend: re-listen then (out of fds), or 0 */
};

struct sheaf_loop {
	struct io_uring ring;
	struct sheaf_loop_config cfg;
	struct sheaf_callbacks cb;
	void *data;
	struct sheaf__pool pool;
	bool recv_bundle;            /* cleared if the mapping guard trips */
	bool enabled;                /* the ring was enabled by the running thread */
	struct sheaf_conn *conns;
	uint32_t *free_slots, nfree, nconns;
	struct sheaf__listener listen[SHEAF__MAX_LISTEN];
	unsigned nlisten;
	struct sheaf__sring *sring_free;
	uint32_t sring_entries, nsrings;
	uint16_t next_bgid;
	struct sheaf_conn *wait_head, *wait_tail;
	struct sheaf_conn *reap;     /* closed, to be freed after this batch */
	uint32_t rearm_min;          /* free buffers needed to re-arm a recv */
	uint64_t queue_high, queue_low;
	uint16_t *bids;              /* scratch: buffers of one completion */
	struct iovec *iov;           /* scratch: the bundle view */
	struct sheaf_conn *cur_src;  /* on_data in progress: its connection */
	uint32_t cur_n;
	bool cur_forwarded;
	atomic_int stop_req, break_req; /* set by signal handlers, other threads */
	bool stopping;
	unsigned drain_timer;        /* timeouts in flight */
	struct __kernel_timespec drain_ts, retry_ts, connect_ts;
	struct sheaf_conn *connecting;  /* epoll: connects in flight, oldest first */
	struct sheaf_conn *connecting_tail;
	int epfd;                    /* epoll backend, else -1 */
	double drain_deadline;       /* epoll backend: end of the stop drain */
	double now;                  /* the clock at this loop iteration */
	double next_sweep;           /* epoll backend: next idle sweep */
	struct __kernel_timespec sweep_ts;
	struct sheaf_stats st;
};

struct io_uring_sqe *sheaf__sqe(struct sheaf_loop *l);
struct sheaf_conn *sheaf__conn_new(struct sheaf_loop *l, int fd);
/* The live connection a user_data names, or NULL (closed, reused slot). */
struct sheaf_conn *sheaf__conn_lookup(struct sheaf_loop *l, uint64_t u);
void sheaf__conn_abort(struct sheaf_conn *c, int err);
void sheaf__handle_recv(struct sheaf_loop *l, struct io_uring_cqe *cqe);
void sheaf__handle_send(struct sheaf_conn *c, struct io_uring_cqe *cqe);
void sheaf__handle_connect(struct sheaf_conn *c, int res);
void sheaf__handle_cancel(struct sheaf_conn *c);
void sheaf__recv_arm(struct sheaf_conn *c);
void sheaf__progress(struct sheaf_conn *c);
void sheaf__reap(struct sheaf_loop *l);
void sheaf__idle_sweep(struct sheaf_loop *l);
void sheaf__sring_destroy(struct sheaf_loop *l, struct sheaf__sring *sr);

/*
 * The epoll backend (SHEAF_IO_EPOLL, no io_uring): the loop plays the
 * kernel's part on the same pool, reading with readv into the buffers at
 * the ring's head and mapping the bytes with sheaf__bundle_map, and writes
 * queued buffers with writev. conn.c does the reading and writing; epoll.c
 * registers interest and dispatches readiness.
 */
int sheaf__ep_init(struct sheaf_loop *l);
double sheaf__now(void); /* CLOCK_MONOTONIC seconds */
void sheaf__ep_update(struct sheaf_conn *c);
int sheaf__ep_listen(struct sheaf_loop *l, unsigned idx);
void sheaf__ep_unlisten(struct sheaf_loop *l, unsigned idx);
int sheaf__ep_connect(struct sheaf_conn *c);
int sheaf__ep_wait(struct sheaf_loop *l, int timeout_ms);
int sheaf__ep_timeout(struct sheaf_loop *l);
void sheaf__ep_connect_done(struct sheaf_conn *c);
void sheaf__ep_expire(struct sheaf_loop *l);
void sheaf__recv_ready(struct sheaf_conn *c);
void sheaf__send_ready(struct sheaf_conn *c);

/* Kernel release triple parsing, shared by the probe and its tests. */
int sheaf__kernel_version(const char *release, int *maj, int *min, int *patch);
/* 1 if this kernel version is known to reorder bundle data. */
int sheaf__bundle_bad_kernel(int maj, int min, int patch);

#endif
