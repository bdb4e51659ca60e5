/*
 * The epoll backend: the fallback when io_uring is missing (or for
 * comparison). Same pool, same connections, same callbacks; readiness
 * instead of completions. Level-triggered: interest follows the
 * connection's state (receiving, waiting to write, connecting).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

int sheaf__ep_init(struct sheaf_loop *l)
{
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	return l->epfd < 0 ? -errno : 0;
}

void sheaf__ep_update(struct sheaf_conn *c)
{
	struct epoll_event ev = { 0 };
	uint32_t want = 0;

	if (c->closing)
		return; /* close() takes it out of the set */
	if (c->connecting)
		want = EPOLLOUT;
	else
		want = (c->recv_armed ? EPOLLIN : 0) | (c->ep_want_out ? EPOLLOUT : 0);
	if (c->ep_added && want == c->ep_mask)
		return;
	if (!want) {
		/* out of the set: epoll reports HUP and ERR even with no
		 * interest, and level-triggered that would spin while the
		 * connection is paused or done */
		if (c->ep_added)
			epoll_ctl(c->loop->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		c->ep_added = false;
		c->ep_mask = 0;
		return;
	}
	ev.events = want;
	ev.data.u64 = sheaf__ud(SHEAF__OP_RECV, c->slot, c->gen);
	if (!epoll_ctl(c->loop->epfd, c->ep_added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev)) {
		c->ep_added = true;
		c->ep_mask = want;
	} else {
		sheaf__conn_abort(c, -errno);
	}
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) ? -errno : 0;
}

int sheaf__ep_listen(struct sheaf_loop *l, unsigned idx)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int fd = l->listen[idx].fd;

	ev.data.u64 = sheaf__ud(SHEAF__OP_ACCEPT, idx, 0);
	if (set_nonblock(fd) || epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	l->listen[idx].armed = true;
	return 0;
}

void sheaf__ep_unlisten(struct sheaf_loop *l, unsigned idx)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->listen[idx].fd, NULL);
	l->listen[idx].armed = false;
}

int sheaf__ep_connect(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (set_nonblock(c->fd))
		return -errno;
	if (connect(c->fd, (struct sockaddr *)&c->addr, c->addr_len) && errno != EINPROGRESS)
		return -errno;
	sheaf__ep_update(c); /* writable when connected (or failed) */
	if (l->cfg.connect_timeout_ms) {
		/* one timeout for all: the list stays in deadline order */
		c->deadline = sheaf__now() + l->cfg.connect_timeout_ms / 1000.0;
		c->cprev = l->connecting_tail;
		if (c->cprev)
			c->cprev->cnext = c;
		else
			l->connecting = c;
		l->connecting_tail = c;
	}
	return 0;
}

/* c stopped connecting (done, failed or closed): off the deadline list. */
void sheaf__ep_connect_done(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (!c->deadline)
		return;
	if (c->cprev)
		c->cprev->cnext = c->cnext;
	else
		l->connecting = c->cnext;
	if (c->cnext)
		c->cnext->cprev = c->cprev;
	else
		l->connecting_tail = c->cprev;
	c->cnext = c->cprev = NULL;
	c->deadline = 0;
}

/* Connects past their deadline fail with -ETIMEDOUT. */
void sheaf__ep_expire(struct sheaf_loop *l)
{
	double now = sheaf__now();

	while (l->connecting && l->connecting->deadline <= now) {
		struct sheaf_conn *c = l->connecting;

		sheaf__ep_connect_done(c);
		sheaf__handle_connect(c, -ETIMEDOUT);
	}
}

/* Accepts until the backlog is empty (or the table is full). */
static void ep_accept(struct sheaf_loop *l, unsigned idx)
{
	for (;;) {
		int fd = accept4(l->listen[idx].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct sheaf_conn *c;

		if (fd < 0 && (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED))
			return;
		if (fd < 0) {
			/* out of descriptors or memory: the connection stays in
			 * the backlog and level-triggered epoll would report it
			 * again at once, so stop listening for a moment */
			sheaf__ep_unlisten(l, idx);
			l->listen[idx].armed = true;
			l->listen[idx].retry_at = sheaf__now() + 0.05;
			return;
		}
		c = l->stopping ? NULL : sheaf__conn_new(l, fd);
		if (!c) {
			close(fd);
			l->st.rejected++;
			continue;
		}
		l->st.accepted++;
		if (l->cb.on_accept)
			l->cb.on_accept(c, l->listen[idx].data);
	}
}

static void ep_conn_event(struct sheaf_loop *l, struct sheaf_conn *c, uint32_t events)
{
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		sheaf__handle_connect(c, -err);
		sheaf__ep_update(c);
		return;
	}
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->recv_armed)
		sheaf__recv_ready(c);
	if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && c->ep_want_out)
		sheaf__send_ready(c);
	sheaf__progress(c);
}

/* Milliseconds until the next listener retry or the drain's end; -1: none. */
int sheaf__ep_timeout(struct sheaf_loop *l)
{
	double next = l->stopping ? l->drain_deadline : 0, now = sheaf__now();

	if (l->connecting && (!next || l->connecting->deadline < next))
		next = l->connecting->deadline;
	if (l->next_sweep && (!next || l->next_sweep < next))
		next = l->next_sweep;

	for (unsigned i = 0; i < l->nlisten; i++)
		if (l->listen[i].retry_at && (!next || l->listen[i].retry_at < next))
			next = l->listen[i].retry_at;
	if (!next)
		return -1;
	return next <= now ? 0 : (int)((next - now) * 1000) + 1;
}

static void ep_relisten(struct sheaf_loop *l)
{
	double now = sheaf__now();

	for (unsigned i = 0; i < l->nlisten; i++) {
		if (!l->listen[i].retry_at || now < l->listen[i].retry_at)
			continue;
		l->listen[i].retry_at = 0;
		if (l->stopping || sheaf__ep_listen(l, i))
			l->listen[i].armed = false;
	}
}

/* Waits for readiness (at most timeout_ms, -1 forever) and handles it. */
int sheaf__ep_wait(struct sheaf_loop *l, int timeout_ms)
{
	struct epoll_event ev[256];
	int n = epoll_wait(l->epfd, ev, 256, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	ep_relisten(l);
	for (int i = 0; i < n; i++) {
		uint64_t u = ev[i].data.u64;
		struct sheaf_conn *c;

		if (sheaf__ud_op(u) == SHEAF__OP_ACCEPT)
			ep_accept(l, sheaf__ud_slot(u));
		else if ((c = sheaf__conn_lookup(l, u)))
			ep_conn_event(l, c, ev[i].events);
	}
	return n;
}
