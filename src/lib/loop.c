/* The event loop: ring setup, CQE dispatch, accept/connect, stop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SQ_ENTRIES 1024
#define CQ_ENTRIES 16384
#define DRAIN_SLOT 0xfffffe  /* timeout slot: end of the stop drain */
#define SWEEP_SLOT 0xfffffd  /* timeout slot: the idle sweep */

int sheaf_config_check(const struct sheaf_loop_config *cfg)
{
	if (cfg->io <= SHEAF_IO_AUTO || cfg->io >= SHEAF_IO__COUNT)
		return -EINVAL;
	if (!cfg->buf_size || cfg->buf_size > SHEAF_MAX_BUF_SIZE)
		return -EINVAL;
	if (!cfg->nbufs || cfg->nbufs > SHEAF_MAX_BUFS ||
	    (cfg->nbufs & (cfg->nbufs - 1)))
		return -EINVAL;
	if (!cfg->max_conns || cfg->max_conns > 0xfffff0)
		return -EINVAL;
	return 0;
}

struct io_uring_sqe *sheaf__sqe(struct sheaf_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (!sqe) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring); /* the SQ is empty now */
	}
	return sqe;
}

/*
 * One issuer and deferred task work: completions arrive in consumption
 * order and only while this thread waits, which the bundle mapping needs.
 * The ring starts disabled, so that the issuer is the thread that runs the
 * loop (sheaf_loop_run enables it), not the one that created it.
 */
static int ring_init(struct sheaf_loop *l)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
	p.cq_entries = CQ_ENTRIES;
	return io_uring_queue_init_params(SQ_ENTRIES, &l->ring, &p);
}

static int loop_alloc(struct sheaf_loop *l)
{
	uint32_t n = l->cfg.max_conns;

	l->conns = calloc(n, sizeof(*l->conns));
	l->free_slots = calloc(n, sizeof(*l->free_slots));
	l->bids = calloc(l->cfg.nbufs, sizeof(*l->bids));
	l->iov = calloc(l->cfg.nbufs, sizeof(*l->iov));
	if (!l->conns || !l->free_slots || !l->bids || !l->iov)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		l->free_slots[i] = n - 1 - i;
	l->nfree = n;
	return 0;
}

static void loop_limits(struct sheaf_loop *l)
{
	uint64_t pool_bytes = (uint64_t)l->cfg.buf_size * l->cfg.nbufs;

	/* One bundle pass takes at most 256 buffers; a window that size is sent
	 * in one pass, so the kernel never re-selects inside one send. */
	l->sring_entries = l->cfg.nbufs < 256 ? l->cfg.nbufs : 256;
	if (l->sring_entries < 8)
		l->sring_entries = 8;
	l->rearm_min = l->cfg.nbufs / 4 < 64 ? l->cfg.nbufs / 4 : 64;
	if (!l->rearm_min)
		l->rearm_min = 1;
	l->queue_high = l->cfg.queue_high ? l->cfg.queue_high : pool_bytes / 8;
	if (l->queue_high < 4ull * l->cfg.buf_size)
		l->queue_high = 4ull * l->cfg.buf_size;
	l->queue_low = l->queue_high / 2;
	l->next_bgid = 1; /* 0 is the receive pool */
	l->drain_ts.tv_sec = 2;
	/* idle connections are found within a quarter of the timeout */
	uint32_t sweep = l->cfg.idle_timeout_ms / 4 ? l->cfg.idle_timeout_ms / 4 : 1;
	l->sweep_ts.tv_sec = sweep / 1000;
	l->sweep_ts.tv_nsec = (long long)(sweep % 1000) * 1000000;
	l->connect_ts.tv_sec = l->cfg.connect_timeout_ms / 1000;
	l->connect_ts.tv_nsec = (long long)(l->cfg.connect_timeout_ms % 1000) * 1000000;
	l->retry_ts.tv_nsec = 50 * 1000 * 1000;
}

struct sheaf_loop *sheaf_loop_new(const struct sheaf_loop_config *cfg,
				  const struct sheaf_callbacks *cb, void *data,
				  int *err)
{
	struct sheaf_loop *l;
	int ret = sheaf_config_check(cfg);

	if (ret)
		goto fail;
	ret = -ENOMEM;
	l = calloc(1, sizeof(*l));
	if (!l)
		goto fail;
	l->cfg = *cfg;
	l->cb = *cb;
	l->data = data;
	l->recv_bundle = cfg->io == SHEAF_IO_BUNDLE || cfg->io == SHEAF_IO_SENDMSG;
	loop_limits(l);
	l->epfd = -1;
	ret = loop_alloc(l);
	if (!ret)
		ret = cfg->io == SHEAF_IO_EPOLL ? sheaf__ep_init(l) : ring_init(l);
	if (ret) {
		free(l->conns);
		free(l->free_slots);
		free(l->bids);
		free(l->iov);
		free(l);
		goto fail;
	}
	/* the epoll backend keeps the pool's ring to itself */
	ret = sheaf__pool_init(&l->pool, l->epfd >= 0 ? NULL : &l->ring, cfg->buf_size,
			       cfg->nbufs, 0);
	if (ret) {
		l->nlisten = 0;
		sheaf_loop_free(l);
		goto fail;
	}
	return l;
fail:
	if (err)
		*err = ret;
	return NULL;
}

void sheaf_loop_free(struct sheaf_loop *l)
{
	if (!l)
		return;
	for (uint32_t i = 0; i < l->cfg.max_conns; i++) {
		struct sheaf_conn *c = &l->conns[i];

		if (c->in_use) {
			if (c->sring)
				sheaf__sring_destroy(l, c->sring);
			free(c->gather);
			close(c->fd);
		}
	}
	for (unsigned i = 0; i < l->nlisten; i++)
		if (l->listen[i].fd >= 0)
			close(l->listen[i].fd);
	while (l->sring_free) {
		struct sheaf__sring *sr = l->sring_free;

		l->sring_free = sr->next;
		sheaf__sring_destroy(l, sr);
	}
	sheaf__pool_fini(&l->pool, &l->ring);
	if (l->epfd >= 0)
		close(l->epfd);
	else
		io_uring_queue_exit(&l->ring);
	free(l->conns);
	free(l->free_slots);
	free(l->bids);
	free(l->iov);
	free(l);
}

void *sheaf_loop_data(struct sheaf_loop *l) { return l->data; }

/* ---- listeners and connect --------------------------------------------- */

static void accept_arm(struct sheaf_loop *l, unsigned i)
{
	struct io_uring_sqe *sqe = sheaf__sqe(l);

	io_uring_prep_multishot_accept(sqe, l->listen[i].fd, NULL, NULL,
				       SOCK_CLOEXEC);
	sqe->user_data = sheaf__ud(SHEAF__OP_ACCEPT, i, 0);
	l->listen[i].armed = true;
}

/* Re-arms accept later (out of descriptors or memory: not in a loop). */
static void accept_retry_later(struct sheaf_loop *l, unsigned i)
{
	struct io_uring_sqe *sqe = sheaf__sqe(l);

	io_uring_prep_timeout(sqe, &l->retry_ts, 0, 0);
	sqe->user_data = sheaf__ud(SHEAF__OP_TIMEOUT, i, 0);
	l->listen[i].armed = true;
}

int sheaf_listen(struct sheaf_loop *l, const struct sockaddr *addr,
		 socklen_t len, void *listen_data)
{
	int fd, one = 1;

	if (l->nlisten == SHEAF__MAX_LISTEN)
		return -ENOSPC;
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->cfg.reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, addr, len) || listen(fd, 4096)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	l->listen[l->nlisten].fd = fd;
	l->listen[l->nlisten].data = listen_data;
	if (l->epfd >= 0) {
		int ret = sheaf__ep_listen(l, l->nlisten);

		if (ret) {
			close(fd);
			return ret;
		}
		l->nlisten++;
		return fd;
	}
	accept_arm(l, l->nlisten++);
	return fd;
}

static void handle_accept(struct sheaf_loop *l, struct io_uring_cqe *cqe)
{
	unsigned i = sheaf__ud_slot(cqe->user_data);
	struct sheaf__listener *ls = &l->listen[i];
	struct sheaf_conn *c;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		ls->armed = false;
	if (cqe->res >= 0) {
		c = l->stopping ? NULL : sheaf__conn_new(l, cqe->res);
		if (!c) {
			close(cqe->res);
			l->st.rejected++;
		} else {
			l->st.accepted++;
			if (l->cb.on_accept)
				l->cb.on_accept(c, ls->data);
		}
	}
	if (ls->armed || l->stopping || ls->fd < 0)
		return;
	if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOMEM ||
	    cqe->res == -ENOBUFS)
		accept_retry_later(l, i);
	else
		accept_arm(l, i);
}

struct sheaf_conn *sheaf_connect(struct sheaf_loop *l,
				 const struct sockaddr *addr, socklen_t len,
				 void *data, int *err)
{
	struct io_uring_sqe *sqe;
	struct sheaf_conn *c;
	int fd;

	if (len > sizeof(c->addr)) {
		*err = -EINVAL;
		return NULL;
	}
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	c = l->stopping ? NULL : sheaf__conn_new(l, fd);
	if (!c) {
		close(fd);
		*err = -EMFILE;
		return NULL;
	}
	c->data = data;
	memcpy(&c->addr, addr, len);
	c->addr_len = len;
	c->connecting = true;
	l->st.connects++;
	if (l->epfd >= 0) {
		int ret = sheaf__ep_connect(c);

		if (ret) { /* failed at once: no callback, like socket() failing */
			c->connecting = false;
			l->st.connect_failed++;
			sheaf__conn_abort(c, ret);
			*err = ret;
			return NULL;
		}
		return c;
	}
	if (io_uring_sq_space_left(&l->ring) < 2)
		io_uring_submit(&l->ring); /* the link must not span two submits */
	sqe = sheaf__sqe(l);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->addr, len);
	sqe->user_data = sheaf__ud(SHEAF__OP_CONNECT, c->slot, c->gen);
	c->inflight++;
	if (l->cfg.connect_timeout_ms) {
		sqe->flags |= IOSQE_IO_LINK;
		sqe = sheaf__sqe(l);
		io_uring_prep_link_timeout(sqe, &l->connect_ts, 0);
		sqe->user_data = sheaf__ud(SHEAF__OP_LINK_TIMEOUT, c->slot, c->gen);
		c->inflight++;
	}
	return c;
}

/* ---- stop -------------------------------------------------------------- */

void sheaf_loop_stop(struct sheaf_loop *l) { l->stop_req = 1; }
void sheaf_loop_break(struct sheaf_loop *l) { l->break_req = 1; }

static void begin_stop(struct sheaf_loop *l)
{
	struct io_uring_sqe *sqe;

	l->stopping = true;
	for (unsigned i = 0; i < l->nlisten; i++) {
		/* shutdown ends the multishot accept; the CQE says when */
		if (l->epfd >= 0) {
			sheaf__ep_unlisten(l, i);
			l->listen[i].retry_at = 0;
		}
		else
			shutdown(l->listen[i].fd, SHUT_RDWR);
	}
	for (uint32_t i = 0; i < l->cfg.max_conns; i++)
		if (l->conns[i].in_use)
			sheaf_conn_close(&l->conns[i]);
	if (l->epfd >= 0) {
		l->drain_deadline = sheaf__now() + (double)l->drain_ts.tv_sec;
		return;
	}
	sqe = sheaf__sqe(l);
	io_uring_prep_timeout(sqe, &l->drain_ts, 0, 0);
	sqe->user_data = sheaf__ud(SHEAF__OP_TIMEOUT, DRAIN_SLOT, 0);
}

static void drain_expired(struct sheaf_loop *l)
{
	for (uint32_t i = 0; i < l->cfg.max_conns; i++)
		if (l->conns[i].in_use)
			sheaf__conn_abort(&l->conns[i], -ETIMEDOUT);
}

static void sweep_arm(struct sheaf_loop *l)
{
	struct io_uring_sqe *sqe;

	if (!l->cfg.idle_timeout_ms || l->stopping)
		return;
	if (l->epfd >= 0) {
		l->next_sweep = l->now + l->sweep_ts.tv_sec + l->sweep_ts.tv_nsec / 1e9;
		return;
	}
	sqe = sheaf__sqe(l);
	io_uring_prep_timeout(sqe, &l->sweep_ts, 0, 0);
	sqe->user_data = sheaf__ud(SHEAF__OP_TIMEOUT, SWEEP_SLOT, 0);
}

static void sweep(struct sheaf_loop *l)
{
	sheaf__idle_sweep(l);
	sweep_arm(l);
}

static bool listeners_armed(const struct sheaf_loop *l)
{
	for (unsigned i = 0; i < l->nlisten; i++)
		if (l->listen[i].armed)
			return true;
	return false;
}

/* ---- dispatch ---------------------------------------------------------- */

static void dispatch(struct sheaf_loop *l, struct io_uring_cqe *cqe)
{
	struct sheaf_conn *c;
	unsigned slot = sheaf__ud_slot(cqe->user_data);

	switch (sheaf__ud_op(cqe->user_data)) {
	case SHEAF__OP_RECV:
		sheaf__handle_recv(l, cqe); /* maps buffers even for stale conns */
		break;
	case SHEAF__OP_SEND:
		if ((c = sheaf__conn_lookup(l, cqe->user_data)))
			sheaf__handle_send(c, cqe);
		break;
	case SHEAF__OP_CONNECT:
		if ((c = sheaf__conn_lookup(l, cqe->user_data)))
			sheaf__handle_connect(c, cqe->res);
		break;
	case SHEAF__OP_CANCEL:
	case SHEAF__OP_LINK_TIMEOUT:
		if ((c = sheaf__conn_lookup(l, cqe->user_data)))
			sheaf__handle_cancel(c); /* one SQE less in flight */
		break;
	case SHEAF__OP_ACCEPT:
		handle_accept(l, cqe);
		break;
	case SHEAF__OP_TIMEOUT:
		if (slot == DRAIN_SLOT)
			drain_expired(l);
		else if (slot == SWEEP_SLOT)
			sweep(l);
		else if (slot < l->nlisten && !l->stopping)
			accept_arm(l, slot);
		else if (slot < l->nlisten)
			l->listen[slot].armed = false;
		break;
	}
}

/*
 * Re-arms every waiting receiver once the pool has rearm_min buffers free.
 * All of them, not only as many as the free buffers could serve: under
 * pool pressure a receiver left waiting can be the one whose data would
 * free the rest (an echo through the proxy deadlocked that way), so
 * fairness beats the -ENOBUFS completions it costs.
 */
static void rearm_waiters(struct sheaf_loop *l)
{
	while (l->wait_head && sheaf__pool_free(&l->pool) >= l->rearm_min) {
		struct sheaf_conn *c = l->wait_head;

		l->wait_head = c->wait_next;
		if (!l->wait_head)
			l->wait_tail = NULL;
		c->waiting = false;
		sheaf__recv_arm(c);
	}
}

/*
 * The start of every turn, both backends: stop if asked, free what closed,
 * end once stopped and empty, make recycled buffers visible before
 * anything waits, and re-arm receivers that waited for them.
 */
static bool turn_begin(struct sheaf_loop *l)
{
	if (l->stop_req && !l->stopping)
		begin_stop(l);
	sheaf__reap(l);
	if (l->stopping && !l->nconns && !listeners_armed(l))
		return false;
	sheaf__pool_flush(&l->pool);
	rearm_waiters(l);
	return true;
}

static int uring_turn(struct sheaf_loop *l)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int ret = io_uring_submit_and_wait(&l->ring, 1);

	if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN)
		return ret;
	if (l->cfg.idle_timeout_ms)
		l->now = sheaf__now();
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		dispatch(l, cqe);
		n++;
	}
	io_uring_cq_advance(&l->ring, n);
	return 0;
}

/* The epoll backend's turn: readiness instead of CQEs, timers by hand. */
static int ep_turn(struct sheaf_loop *l)
{
	int ret = sheaf__ep_wait(l, sheaf__ep_timeout(l));

	if (ret < 0)
		return ret;
	l->now = sheaf__now();
	sheaf__ep_expire(l);
	if (l->next_sweep && l->now >= l->next_sweep)
		sweep(l);
	if (l->stopping && l->now >= l->drain_deadline)
		drain_expired(l);
	return 0;
}

/* The thread that runs the loop becomes the ring's single issuer. */
static int loop_enable(struct sheaf_loop *l)
{
	/* liburing 2.3 declares io_uring_enable_rings but does not export it */
	if (l->epfd < 0 && syscall(__NR_io_uring_register, l->ring.ring_fd,
				   IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
		return -errno;
	l->enabled = true;
	l->now = sheaf__now();
	sweep_arm(l);
	return 0;
}

int sheaf_loop_run(struct sheaf_loop *l)
{
	int ret;

	if (!l->enabled && (ret = loop_enable(l)))
		return ret;
	while (!l->break_req && turn_begin(l)) {
		ret = l->epfd >= 0 ? ep_turn(l) : uring_turn(l);
		if (ret < 0)
			return ret;
		sheaf__reap(l);
	}
	sheaf__pool_flush(&l->pool);
	return 0;
}

double sheaf__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sheaf_loop_stats(const struct sheaf_loop *l, struct sheaf_stats *st)
{
	*st = l->st;
	st->pool_bufs = l->pool.nbufs;
	st->pool_free = sheaf__pool_free(&l->pool);
	st->conns = l->nconns;
	st->sendrings = l->nsrings;
	st->bundle_mismatch += l->pool.mismatches;
}
