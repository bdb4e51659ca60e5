/*
 * The epoll backend: the fallback when io_uring is missing (or for
 * comparison). It plays the kernel's part on the same pools and reports
 * the same events: a receive is one readv into the free buffers at the
 * head of the connection's pool ring (mapped like a recv bundle), a send
 * is one gathering sendmsg of the queue, and both complete with an event
 * carrying the bytes. Level-triggered; interest follows what is in flight.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend.h"

#define EP_IOV 256
#define EP_ROUNDS 8 /* rounds of queued events before waiting again (fairness) */

/* c->io_mask: what is in flight, and what epoll has registered */
enum { IOM_IN = 1, IOM_OUT = 2, IOM_CONN = 4, IOM_ADDED = 8, IOM_REG_IN = 16,
       IOM_REG_OUT = 32 };

struct ep {
	int epfd;
	struct sheaf__event *ev; /* completed, to be reported by the next wait */
	uint32_t nev, cap;
};

static struct ep *ep_of(const struct sheaf_loop *l) { return l->be_state; }

static uint64_t ud(const struct sheaf_conn *c, unsigned op)
{
	return sheaf__ud(op, c->slot, c->gen);
}

/* The live connection an epoll event names (closed ones left the set). */
static struct sheaf_conn *conn_of(struct sheaf_loop *l, uint64_t u)
{
	struct sheaf_conn *c = &l->conns[sheaf__ud_slot(u)];

	return c->gen == sheaf__ud_gen(u) && c->state != SHEAF__FREE &&
	       c->state != SHEAF__DEAD ? c : NULL;
}

static void post(struct sheaf_loop *l, uint64_t u, int res, uint32_t flags)
{
	struct ep *e = ep_of(l);

	if (e->nev == e->cap) {
		uint32_t cap = e->cap ? 2 * e->cap : 64;
		struct sheaf__event *ev = realloc(e->ev, cap * sizeof(*ev));

		if (!ev)
			abort(); /* an event lost would leak a connection forever */
		e->ev = ev;
		e->cap = cap;
	}
	e->ev[e->nev++] = (struct sheaf__event){ u, res, flags };
}

/* Makes epoll's interest match what c has in flight. */
static void interest(struct sheaf_conn *c)
{
	struct epoll_event ev = { 0 };
	uint32_t m = c->io_mask, reg = 0, want = 0;
	int epfd = ep_of(c->loop)->epfd;

	want = (m & IOM_IN ? EPOLLIN : 0) | (m & (IOM_OUT | IOM_CONN) ? EPOLLOUT : 0);
	reg = (m & IOM_REG_IN ? EPOLLIN : 0) | (m & IOM_REG_OUT ? EPOLLOUT : 0);
	if ((m & IOM_ADDED) && want == reg)
		return;
	c->io_mask &= ~(uint32_t)(IOM_ADDED | IOM_REG_IN | IOM_REG_OUT);
	if (!want) {
		/* out of the set: epoll reports HUP and ERR even with no
		 * interest, and level-triggered that would spin */
		if (m & IOM_ADDED)
			epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		return;
	}
	ev.events = want;
	ev.data.u64 = ud(c, SHEAF__OP_RECV);
	if (epoll_ctl(epfd, m & IOM_ADDED ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) == 0)
		c->io_mask |= IOM_ADDED | (want & EPOLLIN ? IOM_REG_IN : 0) |
			      (want & EPOLLOUT ? IOM_REG_OUT : 0);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) ? -errno : 0;
}

static int ep_init(struct sheaf_loop *l)
{
	struct ep *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		free(e);
		return -errno;
	}
	l->be_state = e;
	return 0;
}

static void ep_fini(struct sheaf_loop *l)
{
	struct ep *e = ep_of(l);

	close(e->epfd);
	free(e->ev);
	free(e);
	l->be_state = NULL;
}

static int ep_listen(struct sheaf_loop *l, unsigned i)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int fd = l->listen[i].fd;

	ev.data.u64 = sheaf__ud(SHEAF__OP_ACCEPT, i, 0);
	if (set_nonblock(fd) || epoll_ctl(ep_of(l)->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	return 0;
}

static void ep_pause(struct sheaf_loop *l, unsigned i)
{
	epoll_ctl(ep_of(l)->epfd, EPOLL_CTL_DEL, l->listen[i].fd, NULL);
}

/* For good: new clients are refused from now on, as with io_uring; but a
 * socket another process listens on too (sheaf_listen_fd) goes on listening. */
static void ep_unlisten(struct sheaf_loop *l, unsigned i)
{
	epoll_ctl(ep_of(l)->epfd, EPOLL_CTL_DEL, l->listen[i].fd, NULL);
	if (!l->listen[i].adopted)
		shutdown(l->listen[i].fd, SHUT_RDWR);
	l->listen[i].armed = false; /* nothing in flight to report it */
}

static int ep_connect(struct sheaf_conn *c)
{
	if (set_nonblock(c->fd))
		return -errno;
	if (connect(c->fd, (struct sockaddr *)&c->addr, c->addr_len) && errno != EINPROGRESS)
		return -errno;
	c->io_mask |= IOM_CONN; /* writable when connected (or failed) */
	c->inflight++;
	interest(c);
	return 0;
}

static void ep_recv(struct sheaf_conn *c, uint32_t bufs)
{
	c->io_arg = bufs;
	c->io_mask |= IOM_IN;
	c->inflight++;
	interest(c);
}

/* A receive in flight ends with -ECANCELED, like a cancelled SQE. */
static void ep_recv_cancel(struct sheaf_conn *c)
{
	if (!(c->io_mask & IOM_IN))
		return;
	c->io_mask &= ~(uint32_t)IOM_IN;
	post(c->loop, ud(c, SHEAF__OP_RECV), -ECANCELED, 0);
	interest(c);
}

/*
 * Writes what is queued; the bytes are reported as a send event. sendmsg,
 * not writev: a write to a peer that is gone must fail with EPIPE, not
 * raise SIGPIPE in a program that never asked for it (the io_uring
 * modes' sends do not raise it either).
 */
static void write_queue(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct iovec iov[EP_IOV];
	struct msghdr mh = { .msg_iov = iov };
	ssize_t w;

	mh.msg_iovlen = sheaf__sendq_take(l->pool, &c->q, iov, NULL, EP_IOV);
	w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);

	if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
		sheaf__sendq_unhand(&c->q);
		c->io_mask |= IOM_OUT; /* again when writable */
	} else {
		c->io_mask &= ~(uint32_t)IOM_OUT;
		post(l, ud(c, SHEAF__OP_SEND), w < 0 ? -errno : (int)w, 0);
	}
	interest(c);
}

static int ep_send(struct sheaf_conn *c)
{
	if (c->sends || c->q.out == c->q.count || c->state == SHEAF__DEAD)
		return 0;
	c->sends = 1;
	c->inflight++;
	c->loop->st.send_sqes++;
	write_queue(c);
	return 0;
}

static int ep_send_done(struct sheaf_conn *c, const struct sheaf__event *ev,
			uint16_t *done, int *n)
{
	int ret = sheaf__sendq_done(c->loop->pool, &c->q, ev->res, true, done, n);

	if (ret > 0)
		c->loop->st.send_short++;
	return ret < 0 ? ret : sheaf__send_retry(ev->res) ? 0 : ev->res;
}

/* Everything c has in flight ends with -ECANCELED. */
static void ep_abort(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (c->io_mask & IOM_CONN)
		post(l, ud(c, SHEAF__OP_CONNECT), -ECANCELED, 0);
	if (c->io_mask & IOM_OUT)
		post(l, ud(c, SHEAF__OP_SEND), -ECANCELED, 0);
	ep_recv_cancel(c);
	c->io_mask &= ~(uint32_t)(IOM_CONN | IOM_OUT);
	interest(c);
}

static void ep_release(struct sheaf_conn *c) { c->io_mask = 0; }

/* Reads into the free buffers at the head of c's pool, as the kernel would. */
static void read_ready(struct sheaf_conn *c, struct sheaf__event *ev)
{
	struct sheaf__pool *p = &c->loop->pool[c->dir];
	struct iovec iov[EP_IOV];
	uint32_t n = (uint16_t)(p->published - p->head);
	ssize_t r;

	if (n > c->io_arg)
		n = c->io_arg;
	if (n > EP_IOV)
		n = EP_IOV;
	ev->ud = ud(c, SHEAF__OP_RECV);
	if (!n) {
		ev->res = -ENOBUFS;
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		iov[i].iov_base = sheaf__pool_buf(p, p->shadow[(uint16_t)(p->head + i) & p->mask]);
		iov[i].iov_len = p->buf_size;
	}
	r = readv(c->fd, iov, (int)n);
	ev->res = r < 0 ? -errno : (int)r;
	if (r > 0)
		ev->flags = IORING_CQE_F_BUFFER |
			    (uint32_t)p->shadow[p->head & p->mask] << IORING_CQE_BUFFER_SHIFT;
}

static void conn_ready(struct sheaf_loop *l, struct sheaf_conn *c, uint32_t events,
		       void (*fire)(struct sheaf_loop *, const struct sheaf__event *))
{
	struct sheaf__event ev = { 0 };
	bool out = events & (EPOLLOUT | EPOLLHUP | EPOLLERR);

	if ((c->io_mask & IOM_CONN) && out) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		c->io_mask &= ~(uint32_t)IOM_CONN;
		interest(c);
		fire(l, &(struct sheaf__event){ ud(c, SHEAF__OP_CONNECT), -err, 0 });
		return;
	}
	if ((c->io_mask & IOM_OUT) && out)
		write_queue(c);
	if ((c->io_mask & IOM_IN) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		read_ready(c, &ev);
		if (ev.res == -EAGAIN || ev.res == -EINTR)
			return;
		c->io_mask &= ~(uint32_t)IOM_IN;
		fire(l, &ev); /* re-arms at once if it may go on: no epoll_ctl */
		if (c->state != SHEAF__DEAD)
			interest(c);
	}
}

/* Accepts until the backlog is empty; out of descriptors, stops listening
 * (the loop listens again a little later). */
static void accept_ready(struct sheaf_loop *l, unsigned i,
			 void (*fire)(struct sheaf_loop *, const struct sheaf__event *))
{
	for (;;) {
		int fd = accept4(l->listen[i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		uint64_t u = sheaf__ud(SHEAF__OP_ACCEPT, i, 0);

		if (fd < 0 && (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED))
			return;
		if (fd < 0) {
			int err = -errno;

			epoll_ctl(ep_of(l)->epfd, EPOLL_CTL_DEL, l->listen[i].fd, NULL);
			fire(l, &(struct sheaf__event){ u, err, 0 });
			return;
		}
		fire(l, &(struct sheaf__event){ u, fd, IORING_CQE_F_MORE });
		if (!l->listen[i].armed)
			return; /* paused or stopped meanwhile */
	}
}

/* Reports queued events, a few rounds (they may queue more); true when it
 * reported any. */
static bool fire_queued(struct sheaf_loop *l,
			void (*fire)(struct sheaf_loop *, const struct sheaf__event *))
{
	struct ep *e = ep_of(l);
	struct sheaf__event ev[64];
	bool fired = e->nev > 0;

	for (int round = 0; round < EP_ROUNDS && e->nev; round++) {
		uint32_t n = e->nev < 64 ? e->nev : 64;

		memcpy(ev, e->ev, n * sizeof(*ev));
		memmove(e->ev, e->ev + n, (e->nev - n) * sizeof(*ev));
		e->nev -= n;
		for (uint32_t i = 0; i < n; i++)
			fire(l, &ev[i]);
	}
	return fired;
}

static int ep_wait(struct sheaf_loop *l, int timeout_ms,
		   void (*fire)(struct sheaf_loop *, const struct sheaf__event *))
{
	struct epoll_event ev[256];
	int n;

	/* after reporting events, only look: the loop has work to do (free
	 * what closed, re-arm waiters) before it may sleep */
	bool fired = fire_queued(l, fire);

	l->st.enters++;
	n = epoll_wait(ep_of(l)->epfd, ev, 256, fired || ep_of(l)->nev ? 0 : timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		uint64_t u = ev[i].data.u64;
		struct sheaf_conn *c;

		if (sheaf__ud_op(u) == SHEAF__OP_ACCEPT)
			accept_ready(l, sheaf__ud_slot(u), fire);
		else if (sheaf__ud_op(u) == SHEAF__OP_WAKE)
			fire(l, &(struct sheaf__event){ u, 0, IORING_CQE_F_MORE });
		else if ((c = conn_of(l, u)))
			conn_ready(l, c, ev[i].events, fire);
	}
	return 0;
}

static int ep_watch(struct sheaf_loop *l, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN };

	ev.data.u64 = sheaf__ud(SHEAF__OP_WAKE, 0, 0);
	return epoll_ctl(ep_of(l)->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static uint32_t ep_sendrings(const struct sheaf_loop *l) { return 0; }

const struct sheaf__backend sheaf__epoll_backend = {
	.init = ep_init,
	.fini = ep_fini,
	.listen = ep_listen,
	.unlisten = ep_unlisten,
	.pause = ep_pause,
	.connect = ep_connect,
	.recv = ep_recv,
	.recv_cancel = ep_recv_cancel,
	.send = ep_send,
	.send_done = ep_send_done,
	.abort = ep_abort,
	.release = ep_release,
	.wait = ep_wait,
	.watch = ep_watch,
	.sendrings = ep_sendrings,
};
