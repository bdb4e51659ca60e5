/* The io_uring backend's state, shared by uring.c and uring_send.c only
 * (uring.c calls into uring_send.c, never the other way). */
#ifndef SHEAF_URING_H
#define SHEAF_URING_H

#include "backend.h"

#define SHEAF__SRING_MAX 256 /* one bundle pass (send or receive) maps at most 256 buffers */

/* A send ring: a window of one connection's queue the kernel sends from. */
struct sheaf__sring {
	struct io_uring_buf_ring *br;
	size_t len;
	uint16_t bgid;
	uint16_t head; /* entries the completions so far consumed */
	uint16_t tail; /* entries published */
	struct sheaf__sring *next; /* free list */
};

struct sheaf__uring {
	struct io_uring ring;
	bool enabled;                   /* by the thread that runs the loop */
	struct sheaf__sring *sring_free;
	uint32_t sring_entries, nsrings;
	uint16_t next_bgid;
	struct msghdr recvmsg_hdr;      /* recvmsg mode: no name, no control data */
};

static inline struct sheaf__uring *sheaf__uring_of(const struct sheaf_loop *l)
{
	return l->be_state;
}

/* The next SQE, submitting what is queued when the SQ is full. */
static inline struct io_uring_sqe *sheaf__uring_sqe(struct sheaf_loop *l)
{
	struct io_uring *ring = &sheaf__uring_of(l)->ring;
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe) {
		l->st.enters++;
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring); /* the SQ is empty now */
	}
	return sqe;
}

/* uring_send.c */
int sheaf__uring_send(struct sheaf_conn *c);
int sheaf__uring_send_done(struct sheaf_conn *c, const struct sheaf__event *ev,
			   uint16_t *done, int *n);
void sheaf__uring_send_release(struct sheaf_conn *c);
void sheaf__uring_srings_fini(struct sheaf_loop *l);

#endif
