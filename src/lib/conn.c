/*
 * Connections: their life (the states in internal.h), the events the
 * backend reports for them, forwarding, backpressure and close; and the
 * public connection API.
 */
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/types.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

/* ---- life ------------------------------------------------------------- */

struct sheaf_conn *sheaf__conn_new(struct sheaf_loop *l, int fd, unsigned dir)
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
	c->dir = (uint8_t)dir;
	c->state = SHEAF__OPEN;
	sheaf__sendq_init(&c->q);
	sheaf__sendq_init(&c->held);
	c->active = l->now;
	l->nconns++;
	if (l->cfg.nodelay) {
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return c;
}

struct sheaf_conn *sheaf__conn_lookup(struct sheaf_loop *l, uint64_t ud)
{
	uint32_t slot = sheaf__ud_slot(ud);

	if (slot >= l->cfg.max_conns || l->conns[slot].state == SHEAF__FREE ||
	    l->conns[slot].gen != sheaf__ud_gen(ud))
		return NULL;
	return &l->conns[slot];
}

static void conn_free(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	int err = c->err;

	while (c->q.count)
		sheaf__buf_put(l->pool, sheaf__sendq_pop(l->pool, &c->q));
	while (c->held.count)
		sheaf__buf_put(l->pool, sheaf__sendq_pop(l->pool, &c->held));
	if (c->want_write)
		sheaf__wwait_remove(c);
	if (c->resuming)
		sheaf__resume_remove(c);
	l->be->release(c);
	if (err) {
		/* a reset, not a FIN: the other end must not take a cut-off
		 * stream for a complete one */
		struct linger lg = { 1, 0 };

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(c->fd);
	if (err && err != -ECONNRESET && err != -EPIPE)
		l->st.errors++;
	l->st.closed++;
	if (l->cb.on_close && !c->unseen)
		l->cb.on_close(c, err);
	if (c->dir == SHEAF__DIR_IN)
		l->accepted_open--;
	c->state = SHEAF__FREE;
	c->gen++;
	l->free_slots[l->nfree++] = c->slot;
	l->nconns--;
}

/* Frees connections whose last SQE completed. Deferred to here so that a
 * connection stays valid for the whole batch of events that closed it. */
void sheaf__reap(struct sheaf_loop *l)
{
	while (l->reap) {
		struct sheaf_conn *c = l->reap;

		l->reap = c->reap_next;
		conn_free(c);
	}
}

/* The sender c paused may go on. */
static void release_src(struct sheaf_conn *c)
{
	struct sheaf_conn *src = c->paused_src;

	if (!src)
		return;
	c->paused_src = NULL;
	src->paused_by = NULL;
	sheaf__recv_arm(src);
}

/* c leaves its pair and its pause relations; a linked peer is closed after
 * it has sent what it holds (reset when c failed). */
static void unlink_peer(struct sheaf_conn *c)
{
	struct sheaf_conn *p = c->peer;

	release_src(c);
	if (c->paused_by) {
		c->paused_by->paused_src = NULL;
		c->paused_by = NULL;
	}
	if (!p)
		return;
	c->peer = NULL;
	if (p->peer == c) {
		p->peer = NULL;
		if (c->err && !p->err) {
			p->err = -ECONNRESET;
			p->peer_failed = true;
		}
		sheaf_conn_close(p);
	}
}

void sheaf__conn_abort(struct sheaf_conn *c, int err)
{
	if (c->state == SHEAF__DEAD || c->state == SHEAF__FREE)
		return;
	c->state = SHEAF__DEAD;
	if (err)
		c->err = err;
	sheaf__deadline_remove(c);
	sheaf__recv_forget(c);
	unlink_peer(c);
	if (c->inflight)
		c->loop->be->abort(c);
	sheaf__conn_progress(c);
}

static void half_close(struct sheaf_conn *c)
{
	c->tx = SHEAF__TX_SHUT;
	if (shutdown(c->fd, SHUT_WR) && errno != ENOTCONN)
		sheaf__conn_abort(c, -errno);
}

/*
 * Moves c towards its end once its queue is empty: half-close when the
 * sender feeding it finished, close when asked, and close a linked pair
 * when both directions are done.
 */
void sheaf__conn_progress(struct sheaf_conn *c)
{
	struct sheaf_conn *p = c->peer;

	if (c->state == SHEAF__DEAD) {
		if (!c->inflight && !c->reaping) {
			c->reaping = true;
			c->reap_next = c->loop->reap;
			c->loop->reap = c;
		}
		return;
	}
	if (c->sends || c->q.count || c->state == SHEAF__CONNECTING)
		return;
	if (c->state == SHEAF__CLOSING) {
		sheaf__conn_abort(c, 0);
		return;
	}
	if (c->tx == SHEAF__TX_SHUT_PENDING)
		half_close(c);
	if (p && c->rx == SHEAF__RX_DONE && c->tx == SHEAF__TX_SHUT &&
	    p->rx == SHEAF__RX_DONE && p->tx == SHEAF__TX_SHUT) {
		sheaf__conn_abort(p, 0);
		sheaf__conn_abort(c, 0);
	}
}

/* ---- data ------------------------------------------------------------- */

/* Lets c send what it has queued (if nothing is in flight; a connection
 * still connecting sends once connected). */
void sheaf__conn_send_more(struct sheaf_conn *c)
{
	int ret;

	if (c->state == SHEAF__CONNECTING)
		return;
	ret = c->loop->be->send(c);
	if (ret)
		sheaf__conn_abort(c, ret);
}

/* Queues n buffers on `to` and lets it send. */
static void queue_on(struct sheaf_conn *to, const uint16_t *gids, uint32_t n)
{
	struct sheaf_loop *l = to->loop;

	if (!to->q.count)
		to->sent_at = l->now; /* a stall is counted from here */
	for (uint32_t i = 0; i < n; i++)
		sheaf__sendq_append(l->pool, &to->q, gids[i]);
	sheaf__conn_send_more(to);
}

void sheaf__conn_deliver(struct sheaf_conn *c, uint32_t n, uint32_t bytes)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf_bundle b = { l->iov, n, bytes };

	c->active = l->now;
	if (c->peer) {
		queue_on(c->peer, l->bids, n);
		return;
	}
	if (c->user_paused) {
		for (uint32_t i = 0; i < n; i++)
			sheaf__sendq_append(l->pool, &c->held, l->bids[i]);
		return;
	}
	if (c->state == SHEAF__OPEN && l->cb.on_data) {
		for (uint32_t i = 0; i < n; i++) {
			l->iov[i].iov_base = sheaf__buf(l->pool, l->bids[i]);
			l->iov[i].iov_len = *sheaf__buf_len(l->pool, l->bids[i]);
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
		sheaf__buf_put(l->pool, l->bids[i]);
}

static void recv_eof(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	c->rx = SHEAF__RX_DONE;
	if (c->peer) {
		if (c->peer->tx == SHEAF__TX_OPEN)
			c->peer->tx = SHEAF__TX_SHUT_PENDING;
		sheaf__conn_progress(c->peer);
	} else if (c->user_paused) {
		c->held_eof = true;
	} else if (l->cb.on_eof) {
		l->cb.on_eof(c);
	}
}

static void on_recv(struct sheaf_conn *c, const struct sheaf__event *ev)
{
	struct sheaf_loop *l = c->loop;
	int n;

	if (!(ev->flags & IORING_CQE_F_MORE)) {
		c->inflight--;
		l->armed[c->dir]--;
		if (c->rx == SHEAF__RX_ARMED)
			c->rx = c->state == SHEAF__OPEN ? SHEAF__RX_IDLE : SHEAF__RX_DONE;
	}
	if (ev->res > 0 && (ev->flags & IORING_CQE_F_BUFFER)) {
		uint32_t bytes = 0;

		n = sheaf__recv_map(c, ev, &bytes);
		c->bytes_in += n > 0 ? bytes : 0;
		if (n < 0)
			sheaf__conn_abort(c, n);
		else if (!n && c->state == SHEAF__OPEN)
			recv_eof(c); /* a multishot recvmsg's header without payload */
		else if (c->state == SHEAF__OPEN)
			sheaf__conn_deliver(c, (uint32_t)n, bytes);
		else
			while (n)
				sheaf__buf_put(l->pool, l->bids[--n]);
		if (ev->flags & IORING_CQE_F_MORE)
			sheaf__recv_check(c);
	} else if (ev->res == 0 && c->state == SHEAF__OPEN) {
		recv_eof(c);
	} else if (ev->res == -ENOBUFS) {
		l->st.recv_enobufs++;
		sheaf__recv_wait(c);
	} else if (ev->res < 0 && ev->res != -ECANCELED) {
		sheaf__conn_abort(c, ev->res);
	}
	if (c->rx == SHEAF__RX_IDLE)
		sheaf__recv_arm(c);
	sheaf__conn_progress(c);
}

static void on_send(struct sheaf_conn *c, const struct sheaf__event *ev)
{
	struct sheaf_loop *l = c->loop;
	uint64_t before = c->q.bytes;
	int n = 0, ret;

	l->st.send_cqes++;
	if (!(ev->flags & IORING_CQE_F_MORE)) {
		c->sends--;
		c->inflight--;
	}
	ret = l->be->send_done(c, ev, l->bids, &n);
	l->st.bytes_out += before - c->q.bytes;
	c->bytes_out += before - c->q.bytes;
	l->st.send_bufs += (uint32_t)n;
	l->hist[SHEAF__HIST_SEND][sheaf__hist_bucket((uint32_t)n)]++;
	if (before != c->q.bytes)
		c->active = c->sent_at = l->now;
	while (n)
		sheaf__buf_put(l->pool, l->bids[--n]);
	if (ret < 0 && c->state != SHEAF__DEAD) {
		if (ret == -EPROTO)
			l->st.bundle_mismatch++;
		sheaf__conn_abort(c, ret);
	}
	if (c->state != SHEAF__DEAD) {
		if (c->paused_src && c->q.count <= l->hold_max / 2)
			release_src(c);
		sheaf__conn_send_more(c);
	}
	if (c->want_write && c->q.count <= l->hold_max / 2 && c->state == SHEAF__OPEN)
		sheaf__write_room(c);
	sheaf__conn_progress(c);
}

/* Every event of a connection; the backend counted it in c->inflight. */
void sheaf__conn_event(struct sheaf_loop *l, const struct sheaf__event *ev)
{
	struct sheaf_conn *c = sheaf__conn_lookup(l, ev->ud);

	if (!c)
		return;
	switch (sheaf__ud_op(ev->ud)) {
	case SHEAF__OP_RECV:
		on_recv(c, ev);
		break;
	case SHEAF__OP_SEND:
		on_send(c, ev);
		break;
	case SHEAF__OP_CONNECT:
		c->inflight--;
		sheaf__conn_connected(c, ev->res == -ECANCELED ? -ETIMEDOUT : ev->res);
		sheaf__conn_progress(c);
		break;
	case SHEAF__OP_CANCEL:
		c->inflight--;
		sheaf__conn_progress(c);
		break;
	}
}

/* ---- public ----------------------------------------------------------- */

int sheaf_conn_start(struct sheaf_conn *c)
{
	if (c->state != SHEAF__OPEN)
		return -EINVAL;
	c->started = true;
	sheaf__recv_arm(c);
	return 0;
}

int sheaf_conn_link(struct sheaf_conn *a, struct sheaf_conn *b)
{
	if (a == b || a->loop != b->loop || a->peer || b->peer || a->state != SHEAF__OPEN ||
	    b->state != SHEAF__OPEN)
		return -EINVAL;
	a->peer = b;
	b->peer = a;
	sheaf__hand_over_held(a);
	sheaf__hand_over_held(b);
	if (a->state == SHEAF__OPEN)
		sheaf_conn_start(a);
	return b->state == SHEAF__OPEN ? sheaf_conn_start(b) : 0;
}

int sheaf_conn_forward(struct sheaf_conn *to, const struct sheaf_bundle *b)
{
	struct sheaf_loop *l = to->loop;
	struct sheaf_conn *src = l->cur_src;

	if (!src || l->cur_forwarded || b->iov != l->iov || to->loop != l)
		return -EINVAL;
	if ((to->state != SHEAF__OPEN && to->state != SHEAF__CONNECTING) || to->err)
		return -EPIPE;
	l->cur_forwarded = true;
	queue_on(to, l->bids, l->cur_n);
	/* the next receive of src is budgeted against to's queue */
	if (to->q.count >= l->hold_max && !src->paused_by && !to->paused_src) {
		src->paused_by = to;
		to->paused_src = src;
	}
	return 0;
}

void sheaf_conn_close(struct sheaf_conn *c)
{
	if (c->state != SHEAF__OPEN && c->state != SHEAF__CONNECTING)
		return;
	if (c->state == SHEAF__CONNECTING) {
		sheaf__conn_abort(c, 0);
		return;
	}
	c->state = SHEAF__CLOSING;
	sheaf__recv_stop(c);
	unlink_peer(c);
	sheaf__conn_progress(c);
}

int sheaf_conn_fd(const struct sheaf_conn *c) { return c->fd; }

int sheaf_conn_info(const struct sheaf_conn *c, struct sheaf_conn_info *out)
{
	struct sheaf_conn_info i = { .size = sizeof(i) };

	if (out->size < offsetof(struct sheaf_conn_info, bytes_out) + sizeof(i.bytes_out))
		return -EINVAL;
	i.flags = (c->dir == SHEAF__DIR_IN ? SHEAF_CONN_ACCEPTED : 0) |
		  (c->peer_failed ? SHEAF_CONN_PEER_FAILED : 0);
	i.bytes_in = c->bytes_in;
	i.bytes_out = c->bytes_out;
	if (out->size < i.size)
		i.size = out->size;
	memcpy(out, &i, i.size);
	return 0;
}
void *sheaf_conn_data(const struct sheaf_conn *c) { return c->data; }
void sheaf_conn_set_data(struct sheaf_conn *c, void *data) { c->data = data; }
struct sheaf_loop *sheaf_conn_loop(const struct sheaf_conn *c) { return c->loop; }
