/*
 * Listeners: sheaf_listen, sheaf_listen_fd, and accepting. One accept is
 * in flight per listener; at accept_max open accepted connections (or no
 * free slot) listeners pause and clients wait in the backlog, and they
 * accept again when a connection closes. Out of descriptors, a listener
 * tries again after RELISTEN_SECONDS.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"

#define RELISTEN_SECONDS 0.05 /* out of descriptors: try accepting again then */

/* ---- listeners -------------------------------------------------------- */

/* Listener i = nlisten on a listening socket; fd or -errno (fd not closed). */
static int listen_add(struct sheaf_loop *l, int fd, void *data, bool adopted)
{
	int ret;

	l->listen[l->nlisten] = (struct sheaf__listener){ .fd = fd, .data = data,
							  .adopted = adopted };
	ret = l->be->listen(l, l->nlisten);
	if (ret)
		return ret;
	l->listen[l->nlisten++].armed = true;
	return fd;
}

int sheaf_listen(struct sheaf_loop *l, const struct sockaddr *addr,
		 socklen_t len, void *listen_data)
{
	int fd, one = 1, ret;

	if (l->nlisten == SHEAF__MAX_LISTEN)
		return -ENOSPC;
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->cfg.reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, addr, len) || listen(fd, l->cfg.backlog ? (int)l->cfg.backlog : 4096)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	ret = listen_add(l, fd, listen_data, false);
	if (ret < 0)
		close(fd);
	return ret;
}

int sheaf_listen_fd(struct sheaf_loop *l, int fd, void *listen_data)
{
	int type = 0, listening = 0;
	socklen_t tlen = sizeof(type), llen = sizeof(listening);

	if (l->nlisten == SHEAF__MAX_LISTEN)
		return -ENOSPC;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &llen))
		return -errno;
	if (type != SOCK_STREAM || !listening)
		return -EINVAL;
	if (fcntl(fd, F_SETFD, FD_CLOEXEC))
		return -errno;
	return listen_add(l, fd, listen_data, true);
}

/* No more accepts now: accept_max accepted connections are open, or no
 * slot is free. */
static bool accept_full(const struct sheaf_loop *l)
{
	uint32_t max = l->cfg.accept_max ? l->cfg.accept_max : l->cfg.max_conns;

	return l->accepted_open >= max || !l->nfree;
}

void sheaf__listen_event(struct sheaf_loop *l, const struct sheaf__event *ev)
{
	unsigned i = sheaf__ud_slot(ev->ud);
	struct sheaf__listener *ls = &l->listen[i];
	struct sheaf_conn *c;

	if (!(ev->flags & IORING_CQE_F_MORE))
		ls->armed = false;
	if (ev->res >= 0) {
		c = l->stopping ? NULL : sheaf__conn_new(l, ev->res, SHEAF__DIR_IN);
		if (!c) {
			close(ev->res);
			l->st.rejected++;
		} else {
			l->st.accepted++;
			l->accepted_open++;
			if (l->cb.on_accept)
				l->cb.on_accept(c, ls->data);
		}
	}
	if (l->stopping)
		return;
	if (accept_full(l)) {
		/* the rest wait in the backlog until a connection closes */
		if (ls->armed)
			l->be->pause(l, i);
		ls->armed = false;
		ls->paused = l->accept_paused = true;
		l->st.accept_pauses++;
		return;
	}
	if (ls->armed)
		return;
	ls->armed = true; /* again now, or after a pause */
	if (ev->res == -EMFILE || ev->res == -ENFILE || ev->res == -ENOMEM ||
	    ev->res == -ENOBUFS)
		ls->retry_at = l->now + RELISTEN_SECONDS;
	else if (l->be->listen(l, i))
		ls->armed = false;
}

/* At the start of a turn: paused listeners accept again once there is room. */
void sheaf__accept_resume(struct sheaf_loop *l)
{
	if (accept_full(l))
		return;
	l->accept_paused = false;
	for (unsigned i = 0; i < l->nlisten; i++) {
		struct sheaf__listener *ls = &l->listen[i];

		if (!ls->paused)
			continue;
		ls->paused = false;
		ls->armed = !l->be->listen(l, i);
	}
}

bool sheaf__listeners_armed(const struct sheaf_loop *l)
{
	for (unsigned i = 0; i < l->nlisten; i++)
		if (l->listen[i].armed)
			return true;
	return false;
}
