/*
 * The receive side: how much a connection may receive (its budget), when a
 * receive is armed, the wait list of connections whose pool ran low, and
 * mapping a receive completion back to pool buffers.
 *
 * Why budgets (docs/POOL.md): buffers a connection received stay out of the
 * pool until the connection they were forwarded to has sent them. A
 * connection may hold at most hold_max of them, and every receive is armed
 * for at most what is left of that, so a peer that stops reading ties up
 * hold_max buffers and no more; the rest of its stream waits in the
 * kernel's socket buffers.
 */
#include <errno.h>
#include <stdint.h>

#include "backend.h"

/* Where what c receives is queued: the buffers there count against c. */
static struct sheaf_conn *sink_of(const struct sheaf_conn *c)
{
	return c->peer ? c->peer : c->paused_by;
}

static uint32_t budget(const struct sheaf_conn *c)
{
	const struct sheaf_conn *to = sink_of(c);
	uint32_t held = to ? to->q.count : 0, max = c->loop->hold_max;

	return held >= max ? 0 : max - held;
}

static void wait_add(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	c->rx = SHEAF__RX_WAITING;
	l->waiting[c->dir]++;
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

	while (*pp && *pp != c) {
		prev = *pp;
		pp = &(*pp)->wait_next;
	}
	if (*pp) {
		*pp = c->wait_next;
		l->waiting[c->dir]--;
	}
	if (l->wait_tail == c)
		l->wait_tail = prev;
}

/*
 * Pauses c while its budget is too small to be worth a receive: until the
 * queue holding its data drains to half (conn.c releases it when a send
 * completes).
 */
static bool pause_if_full(struct sheaf_conn *c, bool was_paused)
{
	struct sheaf_conn *to = sink_of(c);
	uint32_t max = c->loop->hold_max, min = max / 4 ? max / 4 : 1;

	/* recvmsg: pause rather than receive one buffer at a time, where the
	 * half the queue drains to is budget enough for a multishot */
	if (c->loop->cfg.io == SHEAF_IO_RECVMSG && max / 2 > SHEAF__MSHOT_AFTER &&
	    min <= SHEAF__MSHOT_AFTER)
		min = SHEAF__MSHOT_AFTER + 1;

	if (budget(c) >= min)
		return false;
	if (!c->paused_by) {
		if (to->paused_src)
			return false; /* a queue releases one sender: fan-in is not capped */
		c->paused_by = to;
		to->paused_src = c;
	}
	if (!was_paused)
		c->loop->st.pauses++;
	c->rx = SHEAF__RX_PAUSED;
	return true;
}

/*
 * How many buffers to ask for: what the budget allows, but no more than the
 * receives so far suggest. The kernel maps a bundle's buffers for the whole
 * length asked (peeking, and allocating an iovec for each) before it knows
 * how much is pending, so a 64-byte
 * request asked with a 64-buffer budget cost 65 mapped buffers. The size
 * adapts much as Netty's receive allocator does: doubled after a receive
 * that left data in the socket (a stream reaches its budget in a few
 * receives), halved after one that used less than a quarter of what it
 * asked for (small requests end at one buffer, which uring.c asks for
 * without a bundle); a stream whose receives take most of what they ask
 * keeps its size, as every receive more costs more than the buffers mapped
 * in vain.
 */
static uint32_t want(const struct sheaf_conn *c, uint32_t budget)
{
	uint32_t w = c->rx_want ? c->rx_want : 1;

	return w < budget ? w : budget;
}

/* `more`: the receive left data in the socket (IORING_CQE_F_SOCK_NONEMPTY). */
static void resize(struct sheaf_conn *c, uint32_t got, bool more)
{
	uint32_t w = c->rx_asked;

	if (more)
		w *= 2;
	else if (got * 4 <= w)
		w /= 2;

	c->rx_want = (uint16_t)(w > 512 ? 512 : w ? w : 1);
	c->rx_drained = !more;
}

/* Arms one receive of at most `cap` buffers (and c's budget). */
static void arm(struct sheaf_conn *c, uint32_t cap)
{
	struct sheaf_loop *l = c->loop;
	uint32_t bufs = budget(c) ? budget(c) : 1; /* an unpaused fan-in sender may be over */

	c->rx = SHEAF__RX_ARMED;
	l->armed[c->dir]++;
	l->st.recv_rearms++;
	c->rx_stopping = false;
	if (l->cfg.io == SHEAF_IO_RECVMSG) {
		/* multishot where the budget covers what it may take after we
		 * decide to stop it (sheaf__recv_check), else one buffer */
		bufs = bufs < cap ? bufs : cap;
		c->rx_multi = bufs > SHEAF__MSHOT_AFTER;
		c->rx_asked = (uint16_t)(c->rx_multi ? (bufs < 0xffff ? bufs : 0xffff) : 1);
		l->be->recv(c, c->rx_asked);
		return;
	}
	c->rx_asked = (uint16_t)want(c, bufs < cap ? bufs : cap);
	l->be->recv(c, c->rx_asked);
}

/*
 * Arms one receive on c unless it is armed, paused, done or must wait for
 * its pool: when the pool is empty, when others already wait for it (they
 * were first: c queues behind them), or when fewer than rearm_min buffers
 * are free and another receive is armed on it (many connections racing for
 * a few buffers would each cost an -ENOBUFS completion). Waiters are armed
 * at the start of the next turn (sheaf__recv_rearm_waiters).
 */
void sheaf__recv_arm(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	uint32_t free = sheaf__pool_free(&l->pool[c->dir]);
	bool was_paused = c->rx == SHEAF__RX_PAUSED;

	if (c->state != SHEAF__OPEN || !c->started || c->user_paused ||
	    (c->rx != SHEAF__RX_IDLE && !was_paused))
		return;
	c->rx = SHEAF__RX_IDLE;
	if (pause_if_full(c, was_paused))
		return;
	if (!free || l->waiting[c->dir] || (free < l->rearm_min && l->armed[c->dir])) {
		wait_add(c);
		return;
	}
	arm(c, UINT32_MAX);
}

/* c's receive found its pool empty: c waits for the next turn, whatever
 * the pool seems to hold now (buffers the kernel took for receives whose
 * completions are not processed yet still count as free here). */
void sheaf__recv_wait(struct sheaf_conn *c)
{
	if (c->state == SHEAF__OPEN && c->started && !c->user_paused && c->rx == SHEAF__RX_IDLE)
		wait_add(c);
}

static void cancel(struct sheaf_conn *c)
{
	if (c->rx_stopping)
		return;
	c->rx_stopping = true;
	c->loop->be->recv_cancel(c);
}

/* c stops receiving (closing): cancel what is in flight. */
void sheaf__recv_stop(struct sheaf_conn *c)
{
	if (c->rx == SHEAF__RX_ARMED)
		cancel(c);
	sheaf__recv_forget(c);
}

/*
 * After a completion of a multishot receive that goes on: it is stopped
 * (cancelled; its last completion re-arms or pauses c as any receive's
 * does) once c may no longer take what it could take after this decision
 * (SHEAF__MSHOT_AFTER), when the program paused c, and when others wait for
 * its pool (rule 3 of docs/POOL.md: c queues behind them). So a queue holds
 * at most hold_max buffers in recvmsg mode too, as long as the kernel keeps
 * to the measured bound.
 */
void sheaf__recv_check(struct sheaf_conn *c)
{
	if (c->rx != SHEAF__RX_ARMED || !c->rx_multi || c->rx_stopping)
		return;
	if (c->state == SHEAF__OPEN && !c->user_paused && !c->loop->waiting[c->dir] &&
	    budget(c) > SHEAF__MSHOT_AFTER)
		return;
	c->loop->st.recv_mshot_stops++;
	cancel(c);
}

/* c will not receive again; the event of a receive in flight still comes. */
void sheaf__recv_forget(struct sheaf_conn *c)
{
	if (c->rx == SHEAF__RX_WAITING)
		wait_remove(c);
	if (c->rx != SHEAF__RX_ARMED)
		c->rx = SHEAF__RX_DONE;
}

/*
 * Re-arms waiting receivers, in the order they began to wait, as far as
 * their pool's free buffers go: each pool's free buffers are shared out
 * among its waiters (at least one each), and a waiter is armed only while
 * some are left; the others keep their place for the next turn.
 *
 * Why no -ENOBUFS storm: a turn arms at most as many receives on a pool as
 * it has free buffers, so of those only the ones another receive (armed
 * earlier, on a connection that was not waiting) beats to the buffers can
 * fail. Why no endless wait: a waiter got -ENOBUFS, so its socket had data;
 * a receive armed for it completes (data, EOF, an error or -ENOBUFS again)
 * and that event starts another turn; the head of the list is armed in any
 * turn in which its pool has a free buffer, and buffers come back as the
 * queues holding them are sent (a queue that stops sending is what
 * stall_timeout_ms is for, docs/POOL.md).
 */
void sheaf__recv_rearm_waiters(struct sheaf_loop *l)
{
	struct sheaf_conn *c = l->wait_head, *next;
	uint32_t left[SHEAF__DIRS], share[SHEAF__DIRS];

	for (unsigned d = 0; d < SHEAF__DIRS; d++) {
		left[d] = sheaf__pool_free(&l->pool[d]);
		share[d] = l->waiting[d] ? left[d] / l->waiting[d] : 0;
		if (!share[d])
			share[d] = 1;
		l->waiting[d] = 0;
	}
	l->wait_head = l->wait_tail = NULL;
	for (; c; c = next) {
		unsigned d = c->dir;

		next = c->wait_next;
		c->rx = SHEAF__RX_IDLE;
		if (!left[d] || pause_if_full(c, false)) {
			if (c->rx == SHEAF__RX_IDLE)
				wait_add(c); /* in order, behind the ones re-added before */
			continue;
		}
		left[d] -= share[d] < left[d] ? share[d] : left[d];
		arm(c, share[d]);
	}
}

/*
 * Maps a receive event to the buffers it filled (global ids in l->bids).
 * Returns the count, or -EPROTO when the mapping guard tripped: the bytes
 * are not delivered and receive bundles are switched off.
 */
int sheaf__recv_map(struct sheaf_conn *c, const struct sheaf__event *ev, uint32_t *bytes)
{
	struct sheaf_loop *l = c->loop;
	unsigned dir = c->dir;
	struct sheaf__pool *p = &l->pool[dir];
	uint16_t bid = (uint16_t)(ev->flags >> IORING_CQE_BUFFER_SHIFT);
	int n;

	bool by_id = l->cfg.io == SHEAF_IO_RECVMSG;

	if (by_id) /* a multishot's header, then payload; 0 is EOF */
		n = sheaf__recvmsg_map(p, bid, (uint32_t)ev->res, c->rx_multi, l->bids);
	else
		n = sheaf__bundle_map(p, bid, (uint32_t)ev->res, l->recv_bundle, l->bids);
	if (n < 0 && !by_id) {
		l->recv_bundle = false; /* counted in pool.mismatches */
		sheaf__bundle_resync(p, bid);
	}
	if (n < 0)
		return n;
	*bytes = by_id ? (n ? p->len[l->bids[0]] : 0) : (uint32_t)ev->res;
	if (!n)
		return 0;
	if (!c->rx_multi)
		resize(c, (uint32_t)n, ev->flags & IORING_CQE_F_SOCK_NONEMPTY);
	for (int i = 0; i < n; i++)
		l->bids[i] = SHEAF__GID(dir, l->bids[i]);
	l->st.recv_cqes++;
	l->st.recv_bufs += (uint32_t)n;
	l->hist[SHEAF__HIST_RECV][sheaf__hist_bucket((uint32_t)n)]++;
	l->st.bytes_in += *bytes;
	return n;
}
