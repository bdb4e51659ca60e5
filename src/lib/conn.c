/*
 * Connections: their life (the states in internal.h), the events the
 * backend reports for them, forwarding, backpressure and close; and the
 * public connection API.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

static void progress(struct sheaf_conn *c);

/* ---- the connect deadline list (one timeout for all: stays in order) ---- */

static void deadline_add(struct sheaf_conn *c, double when)
{
	struct sheaf_loop *l = c->loop;

	c->deadline = when;
	c->dnext = NULL;
	c->dprev = l->dl_tail;
	if (l->dl_tail)
		l->dl_tail->dnext = c;
	else
		l->dl_head = c;
	l->dl_tail = c;
}

static void deadline_remove(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (!c->deadline)
		return;
	if (c->dprev)
		c->dprev->dnext = c->dnext;
	else
		l->dl_head = c->dnext;
	if (c->dnext)
		c->dnext->dprev = c->dprev;
	else
		l->dl_tail = c->dprev;
	c->dnext = c->dprev = NULL;
	c->deadline = 0;
}

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
	if (l->cb.on_close)
		l->cb.on_close(c, err);
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
		if (c->err && !p->err)
			p->err = -ECONNRESET;
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
	deadline_remove(c);
	sheaf__recv_forget(c);
	unlink_peer(c);
	if (c->inflight)
		c->loop->be->abort(c);
	progress(c);
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
static void progress(struct sheaf_conn *c)
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

void sheaf__conn_connected(struct sheaf_conn *c, int res)
{
	struct sheaf_loop *l = c->loop;

	if (c->state != SHEAF__CONNECTING)
		return; /* gone already (timed out, closed) */
	deadline_remove(c);
	c->state = SHEAF__OPEN;
	if (res < 0)
		l->st.connect_failed++;
	if (l->cb.on_connect)
		l->cb.on_connect(c, res);
	if (res < 0)
		sheaf__conn_abort(c, res);
	else
		progress(c);
}

/* ---- data ------------------------------------------------------------- */

/* Lets c send what it has queued (if nothing is in flight). */
static void send_more(struct sheaf_conn *c)
{
	int ret = c->loop->be->send(c);

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
	send_more(to);
}

static void deliver(struct sheaf_conn *c, uint32_t n, uint32_t bytes)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf_bundle b = { l->iov, n, bytes };

	c->active = l->now;
	if (c->peer) {
		queue_on(c->peer, l->bids, n);
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
		progress(c->peer);
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
		n = sheaf__recv_map(l, c->dir, ev);
		if (n < 0)
			sheaf__conn_abort(c, n);
		else if (c->state == SHEAF__OPEN)
			deliver(c, (uint32_t)n, (uint32_t)ev->res);
		else
			while (n)
				sheaf__buf_put(l->pool, l->bids[--n]);
	} else if (ev->res == 0 && c->state == SHEAF__OPEN) {
		recv_eof(c);
	} else if (ev->res == -ENOBUFS) {
		l->st.recv_enobufs++; /* waits below */
	} else if (ev->res < 0 && ev->res != -ECANCELED) {
		sheaf__conn_abort(c, ev->res);
	}
	if (c->rx == SHEAF__RX_IDLE)
		sheaf__recv_arm(c);
	progress(c);
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
	l->st.send_bufs += (uint32_t)n;
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
		send_more(c);
	}
	progress(c);
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
		progress(c);
		break;
	case SHEAF__OP_CANCEL:
		c->inflight--;
		progress(c);
		break;
	}
}

/* ---- public ----------------------------------------------------------- */

struct sheaf_conn *sheaf_connect(struct sheaf_loop *l, const struct sockaddr *addr,
				 socklen_t len, void *data, int *err)
{
	struct sheaf_conn *c;
	int fd, ret;

	if (len > sizeof(c->addr)) {
		*err = -EINVAL;
		return NULL;
	}
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	c = l->stopping ? NULL : sheaf__conn_new(l, fd, SHEAF__DIR_OUT);
	if (!c) {
		close(fd);
		*err = -EMFILE;
		return NULL;
	}
	c->data = data;
	memcpy(&c->addr, addr, len);
	c->addr_len = len;
	c->state = SHEAF__CONNECTING;
	l->st.connects++;
	if (l->cfg.connect_timeout_ms)
		deadline_add(c, sheaf__now() + l->cfg.connect_timeout_ms / 1000.0);
	ret = l->be->connect(c);
	if (ret) { /* failed at once: no callback, like socket() failing */
		l->st.connect_failed++;
		sheaf__conn_abort(c, ret);
		*err = ret;
		return NULL;
	}
	return c;
}

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
	if (a == b || a->peer || b->peer || a->state != SHEAF__OPEN ||
	    b->state != SHEAF__OPEN)
		return -EINVAL;
	a->peer = b;
	b->peer = a;
	sheaf_conn_start(a);
	return sheaf_conn_start(b);
}

int sheaf_conn_forward(struct sheaf_conn *to, const struct sheaf_bundle *b)
{
	struct sheaf_loop *l = to->loop;
	struct sheaf_conn *src = l->cur_src;

	if (!src || l->cur_forwarded || b->iov != l->iov)
		return -EINVAL;
	if (to->state != SHEAF__OPEN)
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
	progress(c);
}

void *sheaf_conn_data(const struct sheaf_conn *c) { return c->data; }
void sheaf_conn_set_data(struct sheaf_conn *c, void *data) { c->data = data; }
struct sheaf_loop *sheaf_conn_loop(const struct sheaf_conn *c) { return c->loop; }
int sheaf_conn_fd(const struct sheaf_conn *c) { return c->fd; }
