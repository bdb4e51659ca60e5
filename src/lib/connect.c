/*
 * Outgoing connections: sheaf_connect, its completion, and the connect
 * deadline list (one timeout for all, so it stays in order; loop.c fires
 * it from the head).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"

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

void sheaf__deadline_remove(struct sheaf_conn *c)
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

struct sheaf_conn *sheaf_connect(struct sheaf_loop *l, const struct sockaddr *addr,
				 socklen_t len, void *data, int *err)
{
	struct sheaf_conn *c;
	int fd, ret, dummy;

	if (!err)
		err = &dummy;
	if (len > sizeof(c->addr)) {
		*err = -EINVAL;
		return NULL;
	}
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	/* a soft stop lets connections go on, and connect, until its end */
	c = l->stopping && (!l->cfg.soft_stop || l->drained) ? NULL :
	    sheaf__conn_new(l, fd, SHEAF__DIR_OUT);
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
		c->unseen = true;
		sheaf__conn_abort(c, ret);
		*err = ret;
		return NULL;
	}
	return c;
}

void sheaf__conn_connected(struct sheaf_conn *c, int res)
{
	struct sheaf_loop *l = c->loop;

	if (c->state != SHEAF__CONNECTING)
		return; /* gone already (timed out, closed) */
	sheaf__deadline_remove(c);
	if (res < 0) {
		/* still not open in its on_connect: no start, link or write */
		l->st.connect_failed++;
		c->err = res;
		if (l->cb.on_connect)
			l->cb.on_connect(c, res);
		sheaf__conn_abort(c, res);
		return;
	}
	c->state = SHEAF__OPEN;
	if (l->cb.on_connect)
		l->cb.on_connect(c, 0);
	if (c->q.count && c->state != SHEAF__DEAD)
		sheaf__conn_send_more(c); /* written while it was connecting (closing: still sent) */
	sheaf__conn_progress(c);
}
