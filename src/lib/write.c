/*
 * What the program writes itself (sheaf_conn_write, sheaf_conn_buf_get,
 * sheaf_conn_write_buf, sheaf_buf_put): write-pool buffers queued behind
 * forwarded data, and on_writable for connections that were refused room,
 * served in the order they waited when the pool is what they lacked.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

/* ---- connections waiting for a write-pool buffer ---------------------- */

static void wwait_add(struct sheaf_conn *c)
{
	struct sheaf_conn **pp = &c->loop->wwait;

	for (; *pp; pp = &(*pp)->wwait_next)
		if (*pp == c)
			return;
	c->wwait_next = NULL;
	*pp = c; /* at the end: the first to wait is the first served */
}

void sheaf__wwait_remove(struct sheaf_conn *c)
{
	for (struct sheaf_conn **pp = &c->loop->wwait; *pp; pp = &(*pp)->wwait_next) {
		if (*pp == c) {
			*pp = c->wwait_next;
			break;
		}
	}
}

/* c took less than asked and has room again: tell the program, once; if
 * the write pool is what it lacks, when a buffer is free. */
void sheaf__write_room(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (!sheaf__pool_free(&l->pool[SHEAF__DIR_APP])) {
		wwait_add(c);
		return;
	}
	c->want_write = false;
	sheaf__wwait_remove(c);
	if (l->cb.on_writable)
		l->cb.on_writable(c);
}

/* At the start of a turn: connections that waited for the write pool, in
 * the order they waited, while it has free buffers. One still connecting is
 * told too: it may be written to, and no send of its own would tell it. */
void sheaf__conn_writable(struct sheaf_loop *l)
{
	while (l->wwait && sheaf__pool_free(&l->pool[SHEAF__DIR_APP])) {
		struct sheaf_conn *c = l->wwait;

		l->wwait = c->wwait_next;
		if (!c->want_write || c->q.count > l->hold_max / 2 ||
		    (c->state != SHEAF__OPEN && c->state != SHEAF__CONNECTING))
			continue; /* told already; its queue's drain calls it; or it went */
		c->want_write = false;
		if (l->cb.on_writable)
			l->cb.on_writable(c);
	}
}

/* ---- what the program writes itself ---------------------------------- */

static int write_check(const struct sheaf_conn *c)
{
	if ((c->state != SHEAF__OPEN && c->state != SHEAF__CONNECTING) ||
	    c->tx != SHEAF__TX_OPEN || c->err)
		return -EPIPE;
	if (!c->loop->pool[SHEAF__DIR_APP].nbufs)
		return -ENOBUFS;
	return 0;
}

/* A free write-pool buffer for c, or SHEAF__NIL: c's queue is at its limit
 * or the pool is empty, and on_writable is due. */
static uint16_t write_take(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	uint16_t bid = SHEAF__NIL;

	if (c->q.count < l->hold_max)
		bid = sheaf__pool_take(&l->pool[SHEAF__DIR_APP]);
	if (bid == SHEAF__NIL) {
		c->want_write = true;
		if (c->q.count < l->hold_max)
			wwait_add(c); /* the pool is what it lacks */
	}
	return bid;
}

/* Queues a filled write-pool buffer on c. */
static void write_queue(struct sheaf_conn *c, uint16_t bid, uint32_t len)
{
	struct sheaf_loop *l = c->loop;
	uint16_t g = SHEAF__GID(SHEAF__DIR_APP, bid);

	*sheaf__buf_len(l->pool, g) = len;
	if (!c->q.count)
		c->sent_at = l->now;
	sheaf__sendq_append(l->pool, &c->q, g);
	l->st.written += len;
}

ssize_t sheaf_conn_write(struct sheaf_conn *c, const void *data, size_t len)
{
	struct sheaf__pool *p = &c->loop->pool[SHEAF__DIR_APP];
	size_t done = 0;
	int ret = write_check(c);

	if (ret)
		return ret;
	while (done < len) {
		uint16_t bid = write_take(c);
		uint32_t n = len - done < p->buf_size ? (uint32_t)(len - done) : p->buf_size;

		if (bid == SHEAF__NIL)
			break;
		memcpy(sheaf__pool_buf(p, bid), (const uint8_t *)data + done, n);
		write_queue(c, bid, n);
		done += n;
	}
	if (!done)
		return len ? -EAGAIN : 0;
	sheaf__conn_send_more(c);
	return (ssize_t)done;
}

void *sheaf_conn_buf_get(struct sheaf_conn *c, size_t *cap, int *err)
{
	struct sheaf__pool *p = &c->loop->pool[SHEAF__DIR_APP];
	int ret = write_check(c);
	uint16_t bid = ret ? SHEAF__NIL : write_take(c);

	if (bid == SHEAF__NIL) {
		if (err)
			*err = ret ? ret : -EAGAIN;
		return NULL;
	}
	p->next[bid] = SHEAF__APP_HELD;
	*cap = p->buf_size;
	return sheaf__pool_buf(p, bid);
}

/* The write-pool id of a buffer the program holds, or -EINVAL. */
static int held_bid(struct sheaf_loop *l, const void *buf)
{
	struct sheaf__pool *p = &l->pool[SHEAF__DIR_APP];
	const uint8_t *b = buf;
	size_t off;

	if (!p->nbufs || b < p->mem || b >= p->mem + p->mem_len)
		return -EINVAL;
	off = (size_t)(b - p->mem);
	if (off % p->buf_size || p->next[off / p->buf_size] != SHEAF__APP_HELD)
		return -EINVAL;
	return (int)(off / p->buf_size);
}

int sheaf_conn_write_buf(struct sheaf_conn *c, void *buf, size_t len)
{
	int bid = held_bid(c->loop, buf), ret;

	if (bid < 0 || !len || len > c->loop->cfg.buf_size)
		return -EINVAL;
	if ((ret = write_check(c)))
		return ret;
	write_queue(c, (uint16_t)bid, (uint32_t)len);
	sheaf__conn_send_more(c);
	return 0;
}

void sheaf_buf_put(struct sheaf_loop *l, void *buf)
{
	int bid = held_bid(l, buf);

	if (bid < 0)
		return;
	l->pool[SHEAF__DIR_APP].next[bid] = SHEAF__NIL;
	sheaf__pool_put(&l->pool[SHEAF__DIR_APP], (uint16_t)bid);
}
