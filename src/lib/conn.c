/*
 * A connection: the receive side (one multishot recv on the loop's shared
 * pool), the send queue (buffers by reference, in each io mode),
 * forwarding, backpressure, half-close and close.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define CHAIN_MAX 256   /* linked per-buffer sends in flight (ring, plain) */

static uint64_t ud(struct sheaf_conn *c, unsigned op)
{
	return sheaf__ud(op, c->slot, c->gen);
}

/* ---- send rings -------------------------------------------------------- */

/*
 * Send rings are attached only while a connection has data queued and go
 * back to a per-loop free list when it drains, so an idle connection owns
 * none; registering happens once per ring, not per attach.
 */
static struct sheaf__sring *sring_get(struct sheaf_loop *l)
{
	struct sheaf__sring *sr = l->sring_free;

	if (sr) {
		l->sring_free = sr->next;
		return sr;
	}
	if (l->next_bgid == 0xffff)
		return NULL;
	sr = calloc(1, sizeof(*sr));
	if (!sr)
		return NULL;
	sr->br = sheaf__ring_alloc(l->sring_entries, &sr->len);
	sr->bgid = l->next_bgid;
	if (!sr->br || sheaf__ring_register(&l->ring, sr->br, l->sring_entries,
					    sr->bgid, 0)) {
		if (sr->br)
			munmap(sr->br, sr->len);
		free(sr);
		return NULL;
	}
	l->next_bgid++;
	l->nsrings++;
	return sr;
}

void sheaf__sring_destroy(struct sheaf_loop *l, struct sheaf__sring *sr)
{
	io_uring_unregister_buf_ring(&l->ring, sr->bgid);
	munmap(sr->br, sr->len);
	free(sr);
	l->nsrings--;
}

static void sring_put(struct sheaf_loop *l, struct sheaf__sring *sr)
{
	if (sr->head != sr->tail) {
		/* entries the kernel may still see: never reuse this ring */
		sheaf__sring_destroy(l, sr);
		return;
	}
	sr->next = l->sring_free;
	l->sring_free = sr;
}

/* ---- the send queue ---------------------------------------------------- */

static void q_append(struct sheaf_conn *c, const uint16_t *bids, uint32_t n)
{
	struct sheaf__pool *p = &c->loop->pool;

	for (uint32_t i = 0; i < n; i++) {
		uint16_t bid = bids[i];

		p->next[bid] = SHEAF__NIL;
		if (c->q_count == 0)
			c->q_head = bid;
		else
			p->next[c->q_tail] = bid;
		c->q_tail = bid;
		if (c->q_out == c->q_count)
			c->q_push = bid;
		c->q_count++;
		c->q_bytes += p->len[bid];
	}
}

/* Takes the oldest queued buffer off the queue and gives it back to the
 * pool; returns the bytes of it that were still unsent. */
static uint32_t q_pop(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	uint16_t bid = c->q_head;
	uint32_t left = l->pool.len[bid] - c->q_off;

	c->q_head = l->pool.next[bid];
	c->q_count--;
	if (c->q_out)
		c->q_out--;
	c->q_off = 0;
	c->q_bytes -= left;
	sheaf__pool_put(&l->pool, bid);
	return left;
}

/* The oldest buffer was sent. */
static void q_retire(struct sheaf_conn *c)
{
	c->active = c->loop->now;
	c->loop->st.bytes_out += q_pop(c);
	c->loop->st.send_bufs++;
}

/* A closed connection's queue: dropped, not counted as sent. */
static void q_drop_all(struct sheaf_conn *c)
{
	while (c->q_count)
		q_pop(c);
	c->q_out = 0;
}

/* Hands the next queued buffer to the kernel: returns its bid. */
static uint16_t q_hand_out(struct sheaf_conn *c)
{
	uint16_t bid = c->q_push;

	c->q_push = c->loop->pool.next[bid];
	c->q_out++;
	return bid;
}

/*
 * Bytes the socket takes now without waiting, with a wide margin for the
 * kernel's per-skb overhead. See send_kick for why bundles must fit.
 */
static uint64_t send_room(struct sheaf_conn *c)
{
	int sndbuf = 0, outq = 0;
	socklen_t len = sizeof(sndbuf);

	if (getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) ||
	    ioctl(c->fd, SIOCOUTQ, &outq))
		return 0;
	return sndbuf / 2 > outq ? (uint64_t)(sndbuf / 2 - outq) : 0;
}

/* Publishes queued buffers into the send ring while it has entries free
 * and they fit in `room` bytes. */
static void sring_fill(struct sheaf_conn *c, uint64_t room)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf__sring *sr = c->sring;
	uint16_t added = 0;
	uint64_t bytes = 0;

	while (c->q_out < c->q_count &&
	       (uint16_t)(sr->tail + added - sr->head) < l->sring_entries) {
		uint16_t bid = c->q_push;
		uint32_t off = bid == c->q_head ? c->q_off : 0;
		uint32_t len = l->pool.len[bid] - off;

		if (bytes + len > room)
			break;
		q_hand_out(c);
		io_uring_buf_ring_add(sr->br, sheaf__pool_buf(&l->pool, bid) + off,
				      len, bid, (int)l->sring_entries - 1, added);
		bytes += len;
		added++;
	}
	if (added) {
		io_uring_buf_ring_advance(sr->br, added);
		sr->tail += added;
	}
}

static void send_bundle(struct sheaf_conn *c)
{
	struct io_uring_sqe *sqe = sheaf__sqe(c->loop);

	/* len 0: on a normal ring a shorter len would drop the rest of the
	 * first buffer */
	io_uring_prep_send(sqe, c->fd, NULL, 0, MSG_WAITALL);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = c->sring->bgid;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = ud(c, SHEAF__OP_SEND);
	c->sends = 1;
}

/*
 * ring and plain modes send one buffer per SQE; linking the SQEs keeps
 * them in order, like the single in-flight send of the other modes.
 */
static void send_chain(struct sheaf_conn *c, unsigned n, bool ring)
{
	struct sheaf_loop *l = c->loop;

	if (io_uring_sq_space_left(&l->ring) < n)
		io_uring_submit(&l->ring);
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = sheaf__sqe(l);

		if (ring) {
			io_uring_prep_send(sqe, c->fd, NULL, 0, MSG_WAITALL);
			sqe->flags |= IOSQE_BUFFER_SELECT;
			sqe->buf_group = c->sring->bgid;
		} else {
			uint16_t bid = q_hand_out(c);

			io_uring_prep_send(sqe, c->fd, sheaf__pool_buf(&l->pool, bid),
					   l->pool.len[bid], MSG_WAITALL);
		}
		if (i + 1 < n)
			sqe->flags |= IOSQE_IO_LINK;
		sqe->user_data = ud(c, SHEAF__OP_SEND);
	}
	c->sends = n;
}

static void send_gather(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct io_uring_sqe *sqe;
	struct sheaf__gather *g;
	unsigned n = 0;

	if (!c->gather && !(c->gather = malloc(sizeof(*c->gather)))) {
		sheaf__conn_abort(c, -ENOMEM);
		return;
	}
	g = c->gather;
	while (c->q_out < c->q_count && n < SHEAF__GATHER_MAX) {
		uint16_t bid = q_hand_out(c);
		uint32_t off = bid == c->q_head ? c->q_off : 0;

		g->iov[n].iov_base = sheaf__pool_buf(&l->pool, bid) + off;
		g->iov[n].iov_len = l->pool.len[bid] - off;
		n++;
	}
	memset(&g->mh, 0, sizeof(g->mh));
	g->mh.msg_iov = g->iov;
	g->mh.msg_iovlen = n;
	sqe = sheaf__sqe(l);
	io_uring_prep_sendmsg(sqe, c->fd, &g->mh, MSG_WAITALL);
	sqe->user_data = ud(c, SHEAF__OP_SEND);
	c->sends = 1;
}

/* Starts sending queued data if nothing is in flight (order). */
static void send_kick(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	uint64_t room;
	unsigned n;

	/* q_count, not q_out: a bundle send may stop (socket full) with
	 * entries still in the send ring, and then it must be resubmitted */
	if (c->sends || !c->q_count || c->closing)
		return;
	if ((l->cfg.io == SHEAF_IO_BUNDLE || l->cfg.io == SHEAF_IO_RING) &&
	    !c->sring) {
		c->sring = sring_get(l);
		if (!c->sring) {
			sheaf__conn_abort(c, -ENOMEM);
			return;
		}
	}
	switch (l->cfg.io) {
	case SHEAF_IO_BUNDLE:
		/*
		 * A bundle send that has to wait for socket space goes through
		 * the kernel's short-send retry, and there (Linux 6.18) the
		 * CQE's byte count, the ring head and the bytes on the wire
		 * can disagree: data lost or sent twice. So a bundle only
		 * carries what fits in the socket now; when not even the
		 * oldest buffer fits, the queue is gathered into one sendmsg,
		 * whose short-send retry is exact, and which waits for room.
		 * A single buffer may wait: one buffer is accounted exactly.
		 */
		room = c->q_count == 1 ? UINT64_MAX : send_room(c);
		/* buffers still published in the ring are the oldest: they go
		 * first, by bundle; a gather starts only from an empty ring */
		c->gathering = !c->q_out && l->pool.len[c->q_head] - c->q_off > room;
		if (c->gathering) {
			l->st.send_gathers++;
			send_gather(c);
			break;
		}
		c->bundle_n = (uint16_t)(c->sring->tail - c->sring->head);
		sring_fill(c, room);
		c->bundle_n = (uint16_t)(c->sring->tail - c->sring->head) - c->bundle_n;
		send_bundle(c);
		break;
	case SHEAF_IO_RING:
		sring_fill(c, UINT64_MAX);
		n = (uint16_t)(c->sring->tail - c->sring->head);
		send_chain(c, n < CHAIN_MAX ? n : CHAIN_MAX, true);
		break;
	case SHEAF_IO_PLAIN:
		n = c->q_count - c->q_out;
		send_chain(c, n < CHAIN_MAX ? n : CHAIN_MAX, false);
		break;
	case SHEAF_IO_EPOLL:
		if (!c->ep_want_out)
			sheaf__send_ready(c);
		return;
	default:
		send_gather(c);
		break;
	}
	c->inflight += c->sends;
	l->st.send_sqes += c->sends;
}

/* ---- backpressure ------------------------------------------------------ */

static void recv_stop(struct sheaf_conn *c)
{
	struct io_uring_sqe *sqe;

	if (!c->recv_armed)
		return;
	if (c->loop->cfg.io == SHEAF_IO_EPOLL) {
		c->recv_armed = false;
		sheaf__ep_update(c);
		return;
	}
	sqe = sheaf__sqe(c->loop);
	io_uring_prep_cancel64(sqe, ud(c, SHEAF__OP_RECV), 0);
	sqe->user_data = ud(c, SHEAF__OP_CANCEL);
	c->inflight++;
}

static void bp_check(struct sheaf_conn *to, struct sheaf_conn *src)
{
	struct sheaf_loop *l = to->loop;

	if (to->q_bytes <= l->queue_high || src->paused || to->paused_src)
		return;
	src->paused = true;
	src->paused_by = to;
	to->paused_src = src;
	l->st.pauses++;
	recv_stop(src);
}

static void bp_release(struct sheaf_conn *to)
{
	struct sheaf_conn *src = to->paused_src;

	if (!src)
		return;
	to->paused_src = NULL;
	src->paused_by = NULL;
	src->paused = false;
	sheaf__recv_arm(src);
}

/* ---- receive ----------------------------------------------------------- */

static void wait_add(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (c->waiting || c->closing || c->want_close)
		return;
	c->waiting = true;
	c->wait_next = NULL;
	if (l->wait_tail)
		l->wait_tail->wait_next = c;
	else
		l->wait_head = c;
	l->wait_tail = c;
}

static void wait_remove(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf_conn **pp = &l->wait_head, *prev = NULL;

	if (!c->waiting)
		return;
	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->wait_next;
	}
	if (*pp)
		*pp = c->wait_next;
	if (l->wait_tail == c)
		l->wait_tail = prev;
	c->waiting = false;
}

/*
 * Arms the multishot recv unless it is armed, paused, finished, or the pool
 * is too low (then the loop re-arms it when buffers come back: -ENOBUFS and
 * a multishot that ended without F_MORE are never errors).
 */
void sheaf__recv_arm(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct io_uring_sqe *sqe;

	if (c->recv_armed || c->paused || c->rd_eof || c->closing ||
	    c->want_close || !c->started || c->waiting)
		return;
	if (sheaf__pool_free(&l->pool) < l->rearm_min) {
		wait_add(c);
		return;
	}
	if (l->cfg.io == SHEAF_IO_EPOLL) {
		c->recv_armed = true; /* interest in EPOLLIN */
		sheaf__ep_update(c);
		return;
	}
	sqe = sheaf__sqe(l);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = l->pool.bgid;
	if (l->recv_bundle)
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = ud(c, SHEAF__OP_RECV);
	c->recv_armed = true;
	c->inflight++;
	l->st.recv_rearms++;
}

static void deliver(struct sheaf_conn *c, uint32_t n, uint32_t bytes)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf_bundle b = { l->iov, n, bytes };

	c->active = l->now;

	if (c->peer) {
		q_append(c->peer, l->bids, n);
		bp_check(c->peer, c);
		send_kick(c->peer);
		return;
	}
	if (!c->closing && !c->want_close && l->cb.on_data) {
		for (uint32_t i = 0; i < n; i++) {
			l->iov[i].iov_base = sheaf__pool_buf(&l->pool, l->bids[i]);
			l->iov[i].iov_len = l->pool.len[l->bids[i]];
		}
		l->cur_src = c;
		l->cur_n = n;
		l->cur_forwarded = false;
		l->cb.on_data(c, &b);
		l->cur_src = NULL;
		if (l->cur_forwarded)
			return;
	}
	for (uint32_t i = 0; i < n; i++)
		sheaf__pool_put(&l->pool, l->bids[i]);
}

static void recv_eof(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	c->rd_eof = true;
	wait_remove(c);
	if (c->peer) {
		c->peer->shut_pending = true;
		sheaf__progress(c->peer);
	} else if (l->cb.on_eof && !c->closing) {
		l->cb.on_eof(c);
	}
	sheaf__progress(c);
}

/* The mapping guard tripped: never deliver these bytes, stop bundling. */
static void recv_mismatch(struct sheaf_loop *l, struct sheaf_conn *c,
			  uint16_t bid)
{
	l->recv_bundle = false; /* counted in pool.mismatches */
	sheaf__bundle_resync(&l->pool, bid);
	if (c)
		sheaf__conn_abort(c, -EPROTO);
}

struct sheaf_conn *sheaf__conn_lookup(struct sheaf_loop *l, uint64_t u)
{
	uint32_t slot = sheaf__ud_slot(u);

	if (slot >= l->cfg.max_conns || !l->conns[slot].in_use ||
	    l->conns[slot].gen != sheaf__ud_gen(u))
		return NULL;
	return &l->conns[slot];
}

/*
 * res bytes arrived in the buffers from the ring's head, the first being
 * bid: map them and hand them on (c NULL: a closed connection's last
 * completion; the buffers go straight back). -EPROTO when the mapping
 * guard tripped.
 */
static int recv_data(struct sheaf_loop *l, struct sheaf_conn *c, uint16_t bid,
		     uint32_t res, bool bundle)
{
	int n = sheaf__bundle_map(&l->pool, bid, res, bundle, l->bids);

	if (n < 0) {
		recv_mismatch(l, c, bid);
		return n;
	}
	l->st.recv_cqes++;
	l->st.recv_bufs += (uint32_t)n;
	l->st.bytes_in += res;
	if (c) {
		deliver(c, (uint32_t)n, res);
		return 0;
	}
	for (int i = 0; i < n; i++)
		sheaf__pool_put(&l->pool, l->bids[i]);
	return 0;
}

void sheaf__handle_recv(struct sheaf_loop *l, struct io_uring_cqe *cqe)
{
	struct sheaf_conn *c = sheaf__conn_lookup(l, cqe->user_data);
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (c && !more) {
		c->recv_armed = false;
		c->inflight--;
	}
	if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		if (recv_data(l, c, cqe->flags >> IORING_CQE_BUFFER_SHIFT, (uint32_t)res,
			      l->recv_bundle))
			return;
	} else if (!c) {
		return;
	} else if (res == 0) {
		recv_eof(c);
	} else if (res == -ENOBUFS) {
		l->st.recv_enobufs++;
		if (!more)
			wait_add(c);
	} else if (res != -ECANCELED) {
		sheaf__conn_abort(c, res);
	}
	if (c && !more)
		sheaf__recv_arm(c);
	if (c)
		sheaf__progress(c);
}

/* ---- send completions -------------------------------------------------- */

/*
 * Retires `res` sent bytes, oldest first. A send that ends inside a buffer
 * returns 1 (bundle mode keeps the offset and sends the rest later) or
 * -EPROTO where MSG_WAITALL allows that only on error.
 */
static int retire_bytes(struct sheaf_conn *c, uint32_t res, bool ring,
			bool partial_ok)
{
	struct sheaf_loop *l = c->loop;

	while (res) {
		uint32_t left;

		if (!c->q_out)
			return -EPROTO;
		left = l->pool.len[c->q_head] - c->q_off;
		if (left > res) {
			if (!partial_ok)
				return -EPROTO;
			c->q_off += res;
			c->q_bytes -= res;
			l->st.bytes_out += res;
			return 1;
		}
		res -= left;
		q_retire(c);
		if (ring)
			c->sring->head++;
	}
	return 0;
}

static int send_result(struct sheaf_conn *c, struct io_uring_cqe *cqe)
{
	enum sheaf_io io = c->loop->cfg.io;
	bool ring = (io == SHEAF_IO_BUNDLE && !c->gathering) || io == SHEAF_IO_RING;

	if (cqe->res < 0)
		return cqe->res;
	if (ring && cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER) &&
	    (cqe->flags >> IORING_CQE_BUFFER_SHIFT) != c->q_head)
		return -EPROTO; /* the kernel sent another buffer than ours */
	return retire_bytes(c, (uint32_t)cqe->res, ring, ring && io == SHEAF_IO_BUNDLE);
}

/*
 * After a bundle send completes, make the send ring agree with what was
 * sent. The CQE's byte count is the truth; the ring head need not match
 * it: a bundle send that had to wait for socket space can complete short
 * with every selected buffer consumed, or with the head behind buffers
 * it did send. So read the kernel's head (one syscall per bundle):
 *  - equal to ours: nothing to do;
 *  - everything published consumed: the unsent rest (from the oldest
 *    unsent byte) is simply published again after it;
 *  - anything else: re-register the ring empty and publish the rest.
 * A bundle of one buffer that completed in full needs no check: the kernel
 * commits that one entry whichever way the send went.
 */
static int sring_sync(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf__sring *sr = c->sring;
	uint16_t khead;
	int ret = sheaf__ring_head(&l->ring, sr->bgid, &khead);

	if (!ret && khead == sr->head && !c->q_off)
		return 0;
	l->st.send_resyncs++;
	c->q_out = 0;
	c->q_push = c->q_count ? c->q_head : SHEAF__NIL;
	if (!ret && khead == sr->tail) {
		sr->head = sr->tail;
		return 0;
	}
	io_uring_unregister_buf_ring(&l->ring, sr->bgid);
	io_uring_buf_ring_init(sr->br);
	sr->head = sr->tail = 0;
	return sheaf__ring_register(&l->ring, sr->br, l->sring_entries, sr->bgid, 0);
}

void sheaf__handle_send(struct sheaf_conn *c, struct io_uring_cqe *cqe)
{
	struct sheaf_loop *l = c->loop;
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int ret;

	l->st.send_cqes++;
	if (!more) {
		c->sends--;
		c->inflight--;
	}
	ret = send_result(c, cqe);
	if (ret == -ENOBUFS && c->sring && c->sring->tail == c->sring->head)
		ret = 0; /* the ring was empty when the kernel looked */
	if (ret >= 0 && !more && l->cfg.io == SHEAF_IO_BUNDLE && !c->closing &&
	    !c->gathering && (c->bundle_n > 1 || ret == 1))
		ret = sring_sync(c);
	if (!more)
		c->gathering = false;
	if (ret < 0 && ret != -ECANCELED) {
		if (ret == -EPROTO)
			l->st.bundle_mismatch++;
		sheaf__conn_abort(c, ret);
	}
	if (c->closing) {
		sheaf__progress(c);
		return;
	}
	if (c->paused_src && c->q_bytes <= l->queue_low)
		bp_release(c);
	if (!c->sends)
		send_kick(c);
	sheaf__progress(c);
}

/* ---- the epoll backend's reads and writes ------------------------------ */

#define EP_IOV 256
#define EP_READS 8 /* reads per readiness event: fairness between sockets */

/* Reads into the free buffers at the ring's head, as the kernel would. */
void sheaf__recv_ready(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf__pool *p = &l->pool;
	struct iovec iov[EP_IOV];

	for (int round = 0; round < EP_READS && c->recv_armed && !c->closing; round++) {
		uint16_t avail, n;
		ssize_t r;

		sheaf__pool_flush(p);
		avail = (uint16_t)(p->published - p->head);
		if (avail < l->rearm_min) { /* pool low: wait like -ENOBUFS */
			l->st.recv_enobufs++;
			c->recv_armed = false;
			sheaf__recv_arm(c);
			sheaf__ep_update(c);
			return;
		}
		n = avail < EP_IOV ? avail : EP_IOV;
		for (uint16_t i = 0; i < n; i++) {
			iov[i].iov_base = sheaf__pool_buf(p, p->shadow[(uint16_t)(p->head + i) & p->mask]);
			iov[i].iov_len = p->buf_size;
		}
		r = readv(c->fd, iov, n);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r <= 0) {
			c->recv_armed = false;
			sheaf__ep_update(c);
			if (r < 0)
				sheaf__conn_abort(c, -errno);
			else
				recv_eof(c);
			return;
		}
		if (recv_data(l, c, p->shadow[p->head & p->mask], (uint32_t)r, true) ||
		    (size_t)r < (size_t)n * p->buf_size)
			return; /* drained (or the guard tripped) */
	}
}

/* Writes queued buffers until done or the socket is full (then waits). */
void sheaf__send_ready(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct iovec iov[EP_IOV];

	while (c->q_count && !c->closing) {
		uint16_t bid = c->q_head;
		unsigned n = 0;
		ssize_t w;

		for (; bid != SHEAF__NIL && n < EP_IOV; bid = l->pool.next[bid], n++) {
			uint32_t off = n ? 0 : c->q_off;

			iov[n].iov_base = sheaf__pool_buf(&l->pool, bid) + off;
			iov[n].iov_len = l->pool.len[bid] - off;
		}
		w = writev(c->fd, iov, (int)n);
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (w < 0) {
			sheaf__conn_abort(c, -errno);
			return;
		}
		l->st.send_sqes++;
		l->st.send_cqes++;
		c->q_out = c->q_count; /* everything was offered */
		retire_bytes(c, (uint32_t)w, false, true);
		c->q_out = 0;
	}
	c->ep_want_out = c->q_count > 0;
	sheaf__ep_update(c);
	if (c->paused_src && c->q_bytes <= l->queue_low)
		bp_release(c);
}

/* ---- lifecycle --------------------------------------------------------- */

static void conn_free(struct sheaf_conn *c);

struct sheaf_conn *sheaf__conn_new(struct sheaf_loop *l, int fd)
{
	struct sheaf_conn *c;
	uint32_t slot, gen;

	if (!l->nfree)
		return NULL;
	slot = l->free_slots[--l->nfree];
	c = &l->conns[slot];
	gen = c->gen;
	memset(c, 0, sizeof(*c));
	c->loop = l;
	c->fd = fd;
	c->slot = slot;
	c->gen = gen;
	c->in_use = true;
	c->q_head = c->q_tail = c->q_push = SHEAF__NIL;
	c->active = l->now;
	l->nconns++;
	if (l->cfg.nodelay) {
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return c;
}

/* Frees connections whose last SQE completed. Deferred to here so that a
 * connection stays valid for the whole completion that closed it. */
void sheaf__reap(struct sheaf_loop *l)
{
	while (l->reap) {
		struct sheaf_conn *c = l->reap;

		l->reap = c->reap_next;
		conn_free(c);
	}
}

static void conn_free(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	int err = c->err;

	q_drop_all(c);
	wait_remove(c);
	if (l->cfg.io == SHEAF_IO_EPOLL)
		sheaf__ep_connect_done(c);
	if (c->sring)
		sring_put(l, c->sring);
	free(c->gather);
	if (c->fd >= 0)
		close(c->fd);
	if (err && err != -ECONNRESET && err != -EPIPE)
		l->st.errors++;
	l->st.closed++;
	if (l->cb.on_close)
		l->cb.on_close(c, err);
	c->in_use = false;
	c->gen++;
	l->free_slots[l->nfree++] = c->slot;
	l->nconns--;
}

static void unlink_peer(struct sheaf_conn *c)
{
	struct sheaf_conn *p = c->peer;

	if (c->paused_src)
		bp_release(c);
	if (c->paused_by) {
		c->paused_by->paused_src = NULL;
		c->paused_by = NULL;
		c->paused = false;
	}
	if (!p)
		return;
	c->peer = NULL;
	if (p->peer == c) {
		p->peer = NULL;
		sheaf_conn_close(p); /* deliver what it has queued, then go */
	}
}

/* Stops everything on c now; it is freed once its last SQE completed. */
void sheaf__conn_abort(struct sheaf_conn *c, int err)
{
	struct io_uring_sqe *sqe;

	if (c->closing)
		return;
	c->closing = true;
	c->err = err;
	wait_remove(c);
	unlink_peer(c);
	if (c->inflight) {
		sqe = sheaf__sqe(c->loop);
		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
		sqe->user_data = ud(c, SHEAF__OP_CANCEL);
		c->inflight++;
	}
	sheaf__progress(c);
}

void sheaf__handle_cancel(struct sheaf_conn *c)
{
	c->inflight--;
	sheaf__progress(c);
}

static void half_close(struct sheaf_conn *c)
{
	c->shut_pending = false;
	if (shutdown(c->fd, SHUT_WR) && errno != ENOTCONN) {
		sheaf__conn_abort(c, -errno);
		return;
	}
	c->wr_shut = true;
}

/*
 * Moves c towards its end once its queue is empty: half-close when the
 * sender feeding it finished, close when asked, and close a linked pair
 * when both directions are done.
 */
void sheaf__progress(struct sheaf_conn *c)
{
	struct sheaf_conn *p;

	if (c->closing) {
		if (!c->inflight && !c->reaping) {
			c->reaping = true;
			c->reap_next = c->loop->reap;
			c->loop->reap = c;
		}
		return;
	}
	if (c->sends || c->q_count)
		return;
	if (c->sring) {
		sring_put(c->loop, c->sring);
		c->sring = NULL;
	}
	if (c->want_close) {
		sheaf__conn_abort(c, 0);
		return;
	}
	if (c->shut_pending)
		half_close(c);
	p = c->peer;
	if (p && c->rd_eof && c->wr_shut && p->rd_eof && p->wr_shut) {
		sheaf__conn_abort(p, 0);
		sheaf__conn_abort(c, 0);
	}
}

void sheaf__handle_connect(struct sheaf_conn *c, int res)
{
	struct sheaf_loop *l = c->loop;

	if (!c->connecting)
		return; /* already reported (an epoll connect that timed out) */
	c->connecting = false;
	if (l->cfg.io != SHEAF_IO_EPOLL)
		c->inflight--;
	else
		sheaf__ep_connect_done(c);
	if (res == -ECANCELED && !c->closing)
		res = -ETIMEDOUT; /* the linked timeout fired */
	if (res < 0)
		l->st.connect_failed++;
	if (l->cb.on_connect && !c->closing)
		l->cb.on_connect(c, res);
	if (res < 0)
		sheaf__conn_abort(c, res);
	else
		sheaf__progress(c);
}

/*
 * Closes connections that moved no byte for idle_timeout_ms; a linked pair
 * only when both sides are idle (a long download is not an idle client).
 */
void sheaf__idle_sweep(struct sheaf_loop *l)
{
	double limit = l->cfg.idle_timeout_ms / 1000.0;

	for (uint32_t i = 0; i < l->cfg.max_conns; i++) {
		struct sheaf_conn *c = &l->conns[i], *p = c->peer;
		double active = c->active;

		if (!c->in_use || c->closing || c->connecting)
			continue;
		if (p && p->active > active)
			active = p->active;
		if (l->now - active < limit)
			continue;
		l->st.idle_closed++;
		sheaf__conn_abort(c, -ETIMEDOUT); /* its peer closes after it */
	}
}

/* ---- public ------------------------------------------------------------ */

int sheaf_conn_start(struct sheaf_conn *c)
{
	if (c->closing || c->connecting)
		return -EINVAL;
	c->started = true;
	sheaf__recv_arm(c);
	return 0;
}

int sheaf_conn_link(struct sheaf_conn *a, struct sheaf_conn *b)
{
	if (a == b || a->peer || b->peer || a->closing || b->closing)
		return -EINVAL;
	a->peer = b;
	b->peer = a;
	sheaf_conn_start(a);
	return sheaf_conn_start(b);
}

int sheaf_conn_forward(struct sheaf_conn *to, const struct sheaf_bundle *b)
{
	struct sheaf_loop *l = to->loop;

	if (!l->cur_src || l->cur_forwarded || b->iov != l->iov)
		return -EINVAL;
	if (to->closing || to->want_close)
		return -EPIPE;
	l->cur_forwarded = true;
	q_append(to, l->bids, l->cur_n);
	bp_check(to, l->cur_src);
	send_kick(to);
	return 0;
}

void sheaf_conn_close(struct sheaf_conn *c)
{
	if (c->closing || c->want_close)
		return;
	c->want_close = true;
	c->paused = true;
	wait_remove(c);
	recv_stop(c);
	unlink_peer(c);
	sheaf__progress(c);
}

void *sheaf_conn_data(const struct sheaf_conn *c) { return c->data; }
void sheaf_conn_set_data(struct sheaf_conn *c, void *data) { c->data = data; }
struct sheaf_loop *sheaf_conn_loop(const struct sheaf_conn *c) { return c->loop; }
