/*
 * Sending with io_uring, one send (or one linked chain) in flight per
 * connection so that bytes never reorder:
 *   bundle   the queue published in a send ring, one bundle send (a queue
 *            of one buffer: a plain send of it)
 *   ring     the same ring, one linked send per buffer (the baseline)
 *   plain    one linked send per buffer, no ring
 *   sendmsg  the queue gathered into one sendmsg (recvmsg mode sends so
 *            too: it differs only in how it receives)
 *
 * The send-bundle protocol (docs/KERNEL.md): a bundle send commits every
 * entry it selects when it selects them, min(T - H, 256) from the head H,
 * before a byte goes out; its result is exactly the bytes of that pass that
 * went out, and F_BUFFER says whether it selected anything (even with an
 * error). The ring holds at most 256 entries and nothing is published
 * while a send is in flight, so a pass is everything published: walk the
 * result through the queue, and what did not go out is published again,
 * from the oldest unsent byte, by the next send. No other syscall.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "uring.h"

#define CHAIN_MAX 256 /* linked per-buffer sends in flight (ring, plain) */
#define IOM_SEND_ONE 1u /* c->io_mask: the send in flight is a plain send of one buffer */

struct gather { /* a sendmsg of queued buffers: the kernel reads both at issue */
	struct msghdr mh;
	struct iovec iov[SHEAF__SRING_MAX];
};

/* How the loop's mode sends. */
static enum sheaf_io send_mode(const struct sheaf_loop *l)
{
	return l->cfg.io == SHEAF_IO_RECVMSG ? SHEAF_IO_SENDMSG : l->cfg.io;
}

/* ---- send rings: attached while a connection has data queued ---------- */

static struct sheaf__sring *sring_get(struct sheaf_loop *l)
{
	struct sheaf__uring *u = sheaf__uring_of(l);
	struct sheaf__sring *sr = u->sring_free;

	if (sr) {
		u->sring_free = sr->next;
		return sr;
	}
	if (u->next_bgid == 0xffff || !(sr = calloc(1, sizeof(*sr))))
		return NULL;
	sr->br = sheaf__ring_alloc(u->sring_entries, &sr->len);
	sr->bgid = u->next_bgid;
	if (!sr->br || sheaf__ring_register(&u->ring, sr->br, u->sring_entries, sr->bgid, 0)) {
		if (sr->br)
			munmap(sr->br, sr->len);
		free(sr);
		return NULL;
	}
	u->next_bgid++;
	u->nsrings++;
	return sr;
}

static void sring_destroy(struct sheaf__uring *u, struct sheaf__sring *sr)
{
	io_uring_unregister_buf_ring(&u->ring, sr->bgid);
	munmap(sr->br, sr->len);
	free(sr);
	u->nsrings--;
}

static void sring_put(struct sheaf__uring *u, struct sheaf__sring *sr)
{
	if (sr->head != sr->tail) { /* entries the kernel may still see */
		sring_destroy(u, sr);
		return;
	}
	sr->next = u->sring_free;
	u->sring_free = sr;
}

void sheaf__uring_srings_fini(struct sheaf_loop *l)
{
	struct sheaf__uring *u = sheaf__uring_of(l);

	while (u->sring_free) {
		struct sheaf__sring *sr = u->sring_free;

		u->sring_free = sr->next;
		sring_destroy(u, sr);
	}
}

/* The connection's send state goes back when its queue is empty. */
void sheaf__uring_send_release(struct sheaf_conn *c)
{
	if (!c->io)
		return;
	if (send_mode(c->loop) == SHEAF_IO_SENDMSG)
		free(c->io);
	else
		sring_put(sheaf__uring_of(c->loop), c->io);
	c->io = NULL;
}

/* ---- issuing ---------------------------------------------------------- */

static void prep_send(struct sheaf_conn *c, struct io_uring_sqe *sqe)
{
	sqe->user_data = sheaf__ud(SHEAF__OP_SEND, c->slot, c->gen);
	c->sends++;
	c->inflight++;
	c->loop->st.send_sqes++;
}

static unsigned publish(struct sheaf_conn *c)
{
	struct sheaf__sring *sr = c->io;
	uint32_t entries = sheaf__uring_of(c->loop)->sring_entries;

	return sheaf__sendq_publish(c->loop->pool, &c->q, sr->br, entries, &sr->tail, entries);
}

static void send_bundle(struct sheaf_conn *c)
{
	struct io_uring_sqe *sqe;

	publish(c);
	sqe = sheaf__uring_sqe(c->loop);
	/* len 0: a shorter len would drop the rest of the first buffer; no
	 * MSG_WAITALL: a bundle send sets it itself. MSG_NOSIGNAL everywhere:
	 * a peer that is gone is -EPIPE, never SIGPIPE for the program */
	io_uring_prep_send(sqe, c->fd, NULL, 0, MSG_NOSIGNAL);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = ((struct sheaf__sring *)c->io)->bgid;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	prep_send(c, sqe);
}

/* ring and plain: one send per buffer, linked so that they stay in order. */
static void send_chain(struct sheaf_conn *c, bool ring)
{
	struct sheaf_loop *l = c->loop;
	struct io_uring *r = &sheaf__uring_of(l)->ring;
	struct iovec iov[CHAIN_MAX];
	unsigned n = ring ? publish(c) :
			    sheaf__sendq_take(l->pool, &c->q, iov, NULL, CHAIN_MAX);

	if (io_uring_sq_space_left(r) < n) {
		l->st.enters++;
		io_uring_submit(r); /* a chain must not span two submits */
	}
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = sheaf__uring_sqe(l);

		if (ring) {
			io_uring_prep_send(sqe, c->fd, NULL, 0, MSG_WAITALL | MSG_NOSIGNAL);
			sqe->flags |= IOSQE_BUFFER_SELECT;
			sqe->buf_group = ((struct sheaf__sring *)c->io)->bgid;
		} else {
			io_uring_prep_send(sqe, c->fd, iov[i].iov_base, iov[i].iov_len,
					   MSG_WAITALL | MSG_NOSIGNAL);
		}
		if (i + 1 < n)
			sqe->flags |= IOSQE_IO_LINK;
		prep_send(c, sqe);
	}
}

static void send_gather(struct sheaf_conn *c)
{
	struct gather *g = c->io;
	struct io_uring_sqe *sqe;

	memset(&g->mh, 0, sizeof(g->mh));
	g->mh.msg_iov = g->iov;
	g->mh.msg_iovlen = sheaf__sendq_take(c->loop->pool, &c->q, g->iov, NULL,
					     SHEAF__SRING_MAX);
	sqe = sheaf__uring_sqe(c->loop);
	io_uring_prep_sendmsg(sqe, c->fd, &g->mh, MSG_WAITALL | MSG_NOSIGNAL);
	prep_send(c, sqe);
}

/*
 * bundle: a queue of one buffer goes out as a plain send of it. A bundle
 * send of one buffer costs the ring entry, the kernel's buffer selection
 * (a peek, and a commit) and a send ring attached to the connection; with
 * small requests every send is of one buffer. The result counts bytes in
 * queue order like any plain send, and nothing is published in the send
 * ring meanwhile (nothing ever is while a send is in flight).
 */
static void send_one(struct sheaf_conn *c)
{
	struct io_uring_sqe *sqe;
	struct iovec iov;

	sheaf__sendq_take(c->loop->pool, &c->q, &iov, NULL, 1);
	sqe = sheaf__uring_sqe(c->loop);
	io_uring_prep_send(sqe, c->fd, iov.iov_base, iov.iov_len, MSG_WAITALL | MSG_NOSIGNAL);
	c->io_mask |= IOM_SEND_ONE;
	prep_send(c, sqe);
}

/* Starts sending what is queued and not yet with the kernel, if nothing
 * is in flight (order). */
int sheaf__uring_send(struct sheaf_conn *c)
{
	enum sheaf_io io = send_mode(c->loop);

	if (c->sends || c->q.out == c->q.count || c->state == SHEAF__DEAD)
		return 0;
	if (io == SHEAF_IO_BUNDLE && c->q.count - c->q.out == 1) {
		send_one(c);
		return 0;
	}
	if (!c->io && io != SHEAF_IO_PLAIN) {
		c->io = io == SHEAF_IO_SENDMSG ? malloc(sizeof(struct gather)) :
						 (void *)sring_get(c->loop);
		if (!c->io)
			return -ENOMEM;
	}
	if (io == SHEAF_IO_BUNDLE)
		send_bundle(c);
	else if (io == SHEAF_IO_SENDMSG)
		send_gather(c);
	else
		send_chain(c, io == SHEAF_IO_RING);
	return 0;
}

/* ---- completions ------------------------------------------------------ */

static int bundle_done(struct sheaf_conn *c, const struct sheaf__event *ev,
		       uint16_t *done, int *n)
{
	struct sheaf__sring *sr = c->io;
	int ret = sheaf__sendq_bundle_done(c->loop->pool, &c->q, &sr->head, sr->tail, ev,
					   done, n);

	if (ret > 0)
		c->loop->st.send_short++;
	return ret > 0 ? 0 : ret;
}

/*
 * One buffer of a ring-mode chain. A send of one whole buffer on a live
 * connection does not come back short (MSG_WAITALL, not multishot); if it
 * did, the entries after it are still in the ring and the rest of this
 * buffer could only go out after them, so the connection is reset instead.
 */
static int ring_done(struct sheaf_conn *c, const struct sheaf__event *ev,
		     uint16_t *done, int *n)
{
	struct sheaf__sring *sr = c->io;
	uint32_t want;

	if (!(ev->flags & IORING_CQE_F_BUFFER))
		return ev->res < 0 ? ev->res : -EPROTO; /* a broken link: failed before */
	sr->head++;
	if ((ev->flags >> IORING_CQE_BUFFER_SHIFT) != c->q.head)
		return -EPROTO;
	want = *sheaf__buf_len(c->loop->pool, c->q.head) - c->q.off;
	if (sheaf__sendq_sent(c->loop->pool, &c->q, ev->res > 0 ? (uint32_t)ev->res : 0, done, n))
		return -EPROTO;
	return ev->res == (int)want ? 0 : ev->res < 0 ? ev->res : -EIO;
}

/* plain and sendmsg: the bytes count in queue order; the rest goes again. */
static int exact_done(struct sheaf_conn *c, const struct sheaf__event *ev,
		      uint16_t *done, int *n)
{
	int ret = sheaf__sendq_done(c->loop->pool, &c->q, ev->res, !c->sends, done, n);

	if (ret > 0)
		c->loop->st.send_short++;
	return ret < 0 ? ret : sheaf__send_retry(ev->res) ? 0 : ev->res;
}

int sheaf__uring_send_done(struct sheaf_conn *c, const struct sheaf__event *ev,
			   uint16_t *done, int *n)
{
	enum sheaf_io io = send_mode(c->loop);
	int ret;

	*n = 0;
	if (c->io_mask & IOM_SEND_ONE) {
		c->io_mask &= ~IOM_SEND_ONE;
		ret = exact_done(c, ev, done, n);
	} else if (io == SHEAF_IO_BUNDLE) {
		ret = bundle_done(c, ev, done, n);
	} else if (io == SHEAF_IO_RING) {
		ret = ring_done(c, ev, done, n);
	} else {
		ret = exact_done(c, ev, done, n);
	}
	if (!c->sends && !c->q.count)
		sheaf__uring_send_release(c);
	return ret;
}
