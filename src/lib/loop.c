/*
 * The event loop: set-up, timers (connect deadlines, the idle
 * sweep, the stop drain, listener retries), the run loop and the stats.
 * It knows the backend only through backend.h.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"

#define DRAIN_MS 2000u /* drain_timeout_ms 0 */
#define HOLD_BYTES (256u * 1024) /* what one queue may hold, at most */

/* The smallest size each struct is accepted with (its first version ends
 * before these fields); a smaller size is refused, and the fields a caller's
 * size leaves out read as zero. */
#define CONFIG_V0 offsetof(struct sheaf_loop_config, write_bufs)
#define CALLBACKS_V0 offsetof(struct sheaf_callbacks, on_writable)

void sheaf_loop_config_init(struct sheaf_loop_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->io = SHEAF_IO_AUTO;
	cfg->buf_size = 4096;
	cfg->nbufs = 2048;
	cfg->write_bufs = 256;
	cfg->max_conns = 1024;
	cfg->nodelay = 1;
	cfg->connect_timeout_ms = 5000;
	cfg->stall_timeout_ms = 30000;
	cfg->drain_timeout_ms = DRAIN_MS;
}

/* A copy of the caller's struct of `size` bytes (its first field), zero
 * beyond what the caller knows; -EINVAL when too small to be any version. */
static int copy_sized(void *dst, size_t dst_len, const void *src, size_t min_len)
{
	uint32_t size = *(const uint32_t *)src;

	if (size < min_len)
		return -EINVAL;
	memset(dst, 0, dst_len);
	memcpy(dst, src, size < dst_len ? size : dst_len);
	*(uint32_t *)dst = (uint32_t)dst_len;
	return 0;
}

static int check(const struct sheaf_loop_config *cfg)
{
	if (cfg->io < SHEAF_IO_AUTO || cfg->io >= SHEAF_IO__COUNT)
		return -EINVAL;
	if (!cfg->buf_size || cfg->buf_size > SHEAF_MAX_BUF_SIZE)
		return -EINVAL;
	if (cfg->nbufs < 2 || cfg->nbufs > SHEAF_MAX_BUFS ||
	    (cfg->nbufs & (cfg->nbufs - 1)))
		return -EINVAL;
	if (cfg->write_bufs > SHEAF_MAX_WRITE_BUFS || (cfg->write_bufs & (cfg->write_bufs - 1)))
		return -EINVAL;
	if (!cfg->max_conns || cfg->max_conns > 0xfffff0)
		return -EINVAL;
	return 0;
}

int sheaf_config_check(const struct sheaf_loop_config *cfg)
{
	struct sheaf_loop_config c;

	return copy_sized(&c, sizeof(c), cfg, CONFIG_V0) ?: check(&c);
}

/*
 * The numbers docs/POOL.md argues with: each direction's pool has n =
 * nbufs / 2 buffers; one queue holds at most hold_max of them (HOLD_BYTES,
 * and never more than n / 8, so that 7 stalled connections leave the
 * others at least an eighth of the pool).
 */
static void loop_limits(struct sheaf_loop *l)
{
	uint32_t n = l->cfg.nbufs / SHEAF__DIRS;
	uint32_t hold = (l->cfg.queue_high ? l->cfg.queue_high : HOLD_BYTES) / l->cfg.buf_size;

	if (hold > n / 8)
		hold = n / 8;
	l->hold_max = hold ? hold : 1;
	l->rearm_min = n / 4 < 64 ? n / 4 : 64;
	if (!l->rearm_min)
		l->rearm_min = 1;
}

static int loop_alloc(struct sheaf_loop *l)
{
	uint32_t n = l->cfg.max_conns;
	int ret = 0;

	l->conns = calloc(n, sizeof(*l->conns));
	l->free_slots = calloc(n, sizeof(*l->free_slots));
	l->bids = calloc(l->cfg.nbufs, sizeof(*l->bids));
	l->iov = calloc(l->cfg.nbufs, sizeof(*l->iov));
	if (!l->conns || !l->free_slots || !l->bids || !l->iov)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		l->free_slots[i] = n - 1 - i;
	l->nfree = n;
	for (unsigned d = 0; d < SHEAF__DIRS && !ret; d++)
		ret = sheaf__pool_init(&l->pool[d], l->cfg.buf_size,
				       l->cfg.nbufs / SHEAF__DIRS, (uint16_t)d);
	if (!ret && l->cfg.write_bufs)
		ret = sheaf__pool_init(&l->pool[SHEAF__DIR_APP], l->cfg.buf_size,
				       l->cfg.write_bufs, SHEAF__DIR_APP);
	return ret ?: sheaf__posts_init(l);
}

static void loop_dealloc(struct sheaf_loop *l)
{
	for (unsigned d = 0; d < SHEAF__POOLS; d++)
		sheaf__pool_fini(&l->pool[d]);
	sheaf__posts_fini(l);
	sheaf__timers_fini(&l->timers);
	free(l->conns);
	free(l->free_slots);
	free(l->bids);
	free(l->iov);
	free(l);
}

struct sheaf_loop *sheaf_loop_new(const struct sheaf_loop_config *cfg,
				  const struct sheaf_callbacks *cb, void *data,
				  int *err)
{
	struct sheaf_loop *l;
	int ret = -ENOMEM;

	l = calloc(1, sizeof(*l));
	if (!l)
		goto fail;
	ret = copy_sized(&l->cfg, sizeof(l->cfg), cfg, CONFIG_V0) ?:
	      copy_sized(&l->cb, sizeof(l->cb), cb, CALLBACKS_V0) ?: check(&l->cfg);
	if (!ret) { /* auto picks a mode; an explicit one must be supported */
		ret = sheaf_io_resolve(l->cfg.io);
		if (ret > 0)
			l->cfg.io = ret, ret = 0;
	}
	/* recvmsg: each buffer begins with the kernel's header */
	if (!ret && l->cfg.io == SHEAF_IO_RECVMSG &&
	    l->cfg.buf_size <= sizeof(struct io_uring_recvmsg_out))
		ret = -EINVAL;
	if (ret) {
		free(l);
		goto fail;
	}
	l->data = data;
	/* l->cfg.io, not cfg->io: SHEAF_IO_AUTO was resolved above */
	l->be = l->cfg.io == SHEAF_IO_EPOLL ? &sheaf__epoll_backend : &sheaf__uring_backend;
	l->recv_bundle = l->cfg.io == SHEAF_IO_BUNDLE || l->cfg.io == SHEAF_IO_SENDMSG ||
			 l->cfg.io == SHEAF_IO_EPOLL;
	l->now = sheaf__now();
	loop_limits(l);
	ret = loop_alloc(l);
	if (!ret)
		ret = l->be->init(l);
	if (!ret && (ret = l->be->watch(l, sheaf__posts_fd(l))))
		l->be->fini(l);
	if (ret) {
		loop_dealloc(l);
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

		if (c->state != SHEAF__FREE) {
			l->be->release(c);
			close(c->fd);
		}
	}
	for (unsigned i = 0; i < l->nlisten; i++)
		if (l->listen[i].fd >= 0)
			close(l->listen[i].fd);
	l->be->fini(l);
	loop_dealloc(l);
}

void *sheaf_loop_data(struct sheaf_loop *l) { return l->data; }

/* ---- stop and timers -------------------------------------------------- */

void sheaf_loop_stop(struct sheaf_loop *l)
{
	l->stop_req = 1;
	sheaf__posts_wake(l);
}

void sheaf_loop_break(struct sheaf_loop *l)
{
	l->break_req = 1;
	sheaf__posts_wake(l);
}

static void begin_stop(struct sheaf_loop *l)
{
	l->stopping = true;
	for (unsigned i = 0; i < l->nlisten; i++) {
		if (l->listen[i].retry_at || l->listen[i].paused)
			l->listen[i].armed = false;
		l->listen[i].retry_at = 0;
		l->listen[i].paused = false;
		l->be->unlisten(l, i);
	}
	l->drain_deadline = l->now + (l->cfg.drain_timeout_ms ? l->cfg.drain_timeout_ms :
				      DRAIN_MS) / 1000.0;
	if (l->cfg.soft_stop)
		return; /* connections go on, timeouts included */
	for (uint32_t i = 0; i < l->cfg.max_conns; i++)
		sheaf_conn_close(&l->conns[i]);
	l->next_sweep = l->next_stall = 0;
}

/* ---- sweeps: idle and stalled connections ---------------------------- */

/*
 * Closes connections that moved no byte for idle_timeout_ms; a linked pair
 * only when both sides are idle (a long download is not an idle client).
 */
static void idle_sweep(struct sheaf_loop *l)
{
	double limit = l->cfg.idle_timeout_ms / 1000.0;

	for (uint32_t i = 0; i < l->cfg.max_conns; i++) {
		struct sheaf_conn *c = &l->conns[i], *p = c->peer;
		double active = c->active;

		if (c->state != SHEAF__OPEN && c->state != SHEAF__CLOSING)
			continue;
		if (p && p->active > active)
			active = p->active;
		if (l->now - active < limit)
			continue;
		l->st.idle_closed++;
		sheaf__conn_abort(c, -ETIMEDOUT); /* its peer closes after it */
	}
}

/* Is a receiver waiting for buffers of pool d? */
static bool pool_wanted(const struct sheaf_loop *l, unsigned d)
{
	for (const struct sheaf_conn *c = l->wait_head; c; c = c->wait_next)
		if (c->dir == d)
			return true;
	return false;
}

/*
 * Does c's queue hold a buffer of a pool receivers wait for? Not only its
 * head: a queue mixes pools (what the program wrote sits in the write pool,
 * which no receiver waits for, and may be followed by forwarded buffers).
 */
static bool holds_wanted(struct sheaf_loop *l, const struct sheaf_conn *c,
			 const bool *wanted)
{
	uint16_t g = c->q.head;

	for (uint32_t i = 0; i < c->q.count; i++, g = *sheaf__buf_next(l->pool, g))
		if (SHEAF__GID_DIR(g) < SHEAF__DIRS && wanted[SHEAF__GID_DIR(g)])
			return true;
	return false;
}

/*
 * While receivers wait for buffers of a pool, closes the connections whose
 * queue holds that pool's buffers and has sent nothing for
 * stall_timeout_ms: peers that stopped reading, pinning buffers the others
 * need (docs/POOL.md). A peer that is merely slow sends something now and
 * then and is left alone.
 */
static void stall_sweep(struct sheaf_loop *l)
{
	double limit = l->cfg.stall_timeout_ms / 1000.0;
	bool wanted[SHEAF__DIRS];

	for (unsigned d = 0; d < SHEAF__DIRS; d++)
		wanted[d] = pool_wanted(l, d);
	if (!wanted[0] && !wanted[1])
		return;
	for (uint32_t i = 0; i < l->cfg.max_conns; i++) {
		struct sheaf_conn *c = &l->conns[i];

		if ((c->state != SHEAF__OPEN && c->state != SHEAF__CLOSING) ||
		    l->now - c->sent_at < limit || !holds_wanted(l, c, wanted))
			continue;
		l->st.stall_closed++;
		sheaf__conn_abort(c, -ETIMEDOUT);
	}
}

static void sweep_arm(struct sheaf_loop *l)
{
	double period = l->cfg.idle_timeout_ms / 4000.0;

	/* idle connections are found within a quarter of the timeout */
	if (l->cfg.idle_timeout_ms && (!l->stopping || l->cfg.soft_stop))
		l->next_sweep = l->now + (period < 0.001 ? 0.001 : period);
	else
		l->next_sweep = 0;
}

static void stall_arm(struct sheaf_loop *l)
{
	double period = l->cfg.stall_timeout_ms / 4000.0;

	if (l->cfg.stall_timeout_ms && (!l->stopping || l->cfg.soft_stop))
		l->next_stall = l->now + (period < 0.001 ? 0.001 : period);
	else
		l->next_stall = 0;
}

static double earlier(double a, double b)
{
	return !a || (b && b < a) ? b : a;
}

/* Milliseconds until the next timer, or -1 when none is set. */
static int next_timeout(const struct sheaf_loop *l)
{
	double next = earlier(earlier(l->drain_deadline, l->next_sweep), l->next_stall);

	next = earlier(next, sheaf__timers_next(&l->timers));

	if (l->dl_head)
		next = earlier(next, l->dl_head->deadline);
	for (unsigned i = 0; i < l->nlisten; i++)
		next = earlier(next, l->listen[i].retry_at);
	if (!next)
		return -1;
	return next <= l->now ? 0 : (int)((next - l->now) * 1000) + 1;
}

static void run_timers(struct sheaf_loop *l)
{
	while (l->dl_head && l->dl_head->deadline <= l->now)
		sheaf__conn_connected(l->dl_head, -ETIMEDOUT);
	for (unsigned i = 0; i < l->nlisten; i++) {
		struct sheaf__listener *ls = &l->listen[i];

		if (ls->retry_at && ls->retry_at <= l->now) {
			ls->retry_at = 0;
			if (l->stopping || l->be->listen(l, i))
				ls->armed = false;
		}
	}
	if (l->next_sweep && l->next_sweep <= l->now) {
		idle_sweep(l);
		sweep_arm(l);
	}
	if (l->next_stall && l->next_stall <= l->now) {
		stall_sweep(l);
		stall_arm(l);
	}
	sheaf__timers_run(l);
	if (l->drain_deadline && l->drain_deadline <= l->now) {
		l->drain_deadline = 0;
		l->drained = true;
		for (uint32_t i = 0; i < l->cfg.max_conns; i++)
			sheaf__conn_abort(&l->conns[i], -ETIMEDOUT);
	}
}

/* ---- the run loop ----------------------------------------------------- */

static void fire(struct sheaf_loop *l, const struct sheaf__event *ev)
{
	switch (sheaf__ud_op(ev->ud)) {
	case SHEAF__OP_NONE:
		break;
	case SHEAF__OP_ACCEPT:
		sheaf__listen_event(l, ev);
		break;
	case SHEAF__OP_WAKE:
		sheaf__posts_run(l);
		if (!(ev->flags & IORING_CQE_F_MORE) && l->be->watch(l, sheaf__posts_fd(l)))
			l->break_req = 1; /* cannot happen: the ring has room */
		break;
	default:
		sheaf__conn_event(l, ev);
	}
}

/*
 * The start of every turn: stop if asked, free what closed, end once
 * stopped and empty, make recycled buffers visible to the kernel before
 * anything waits, and re-arm receivers that waited for them.
 */
static bool turn_begin(struct sheaf_loop *l)
{
	if (l->stop_req && !l->stopping)
		begin_stop(l);
	sheaf__reap(l);
	if (l->stopping && !l->nconns && !sheaf__listeners_armed(l))
		return false;
	if (l->accept_paused && !l->stopping)
		sheaf__accept_resume(l);
	if (l->resume)
		sheaf__conn_resumed(l);
	if (l->wwait)
		sheaf__conn_writable(l);
	for (unsigned d = 0; d < SHEAF__DIRS; d++)
		sheaf__pool_flush(&l->pool[d]);
	if (l->wait_head)
		sheaf__recv_rearm_waiters(l);
	return true;
}

int sheaf_loop_run(struct sheaf_loop *l)
{
	int ret;

	if (!l->enabled) {
		l->enabled = true;
		l->now = sheaf__now();
		sweep_arm(l);
		stall_arm(l);
	}
	while (!l->break_req && turn_begin(l)) {
		ret = l->be->wait(l, next_timeout(l), fire);
		if (ret < 0)
			return ret;
		l->now = sheaf__now();
		run_timers(l);
		sheaf__reap(l);
	}
	l->break_req = 0; /* consumed: the next sheaf_loop_run runs again */
	for (unsigned d = 0; d < SHEAF__DIRS; d++)
		sheaf__pool_flush(&l->pool[d]);
	return 0;
}

void sheaf_loop_stats(const struct sheaf_loop *l, struct sheaf_stats *out)
{
	struct sheaf_stats s = l->st;
	uint32_t size = out->size;
	const uint64_t *h = &l->hist[0][0];

	s.pool_bufs = s.pool_free = 0;
	for (unsigned d = 0; d < SHEAF__POOLS; d++) {
		s.pool_bufs += l->pool[d].nbufs;
		s.pool_free += sheaf__pool_free(&l->pool[d]);
		s.bundle_mismatch += l->pool[d].mismatches;
	}
	s.conns = l->nconns;
	s.sendrings = l->be->sendrings(l);
#define HIST(name) s.name = *h++;
	SHEAF_STATS_HIST(HIST, recv)
	SHEAF_STATS_HIST(HIST, send)
#undef HIST
	s.size = size < sizeof(s) ? size : (uint32_t)sizeof(s);
	memcpy(out, &s, s.size);
}
