/*
 * A connection's send queue: buffers by reference, oldest first, linked
 * through the pools' next[] so that queueing costs no memory of its own.
 * Plain bookkeeping; the backends decide how the buffers go out, and this
 * is where every mode's accounting of sent bytes meets.
 */
#include <errno.h>

#include "internal.h"

void sheaf__sendq_init(struct sheaf__sendq *q)
{
	*q = (struct sheaf__sendq){ .head = SHEAF__NIL, .tail = SHEAF__NIL,
				    .push = SHEAF__NIL };
}

void sheaf__sendq_append(struct sheaf__pool *pools, struct sheaf__sendq *q, uint16_t g)
{
	*sheaf__buf_next(pools, g) = SHEAF__NIL;
	if (q->count == 0)
		q->head = g;
	else
		*sheaf__buf_next(pools, q->tail) = g;
	q->tail = g;
	if (q->out == q->count)
		q->push = g;
	q->count++;
	q->bytes += *sheaf__buf_len(pools, g);
}

uint16_t sheaf__sendq_pop(struct sheaf__pool *pools, struct sheaf__sendq *q)
{
	uint16_t g = q->head;

	q->bytes -= *sheaf__buf_len(pools, g) - q->off;
	q->head = *sheaf__buf_next(pools, g);
	q->count--;
	if (q->out)
		q->out--;
	else
		q->push = q->head;
	q->off = 0;
	if (!q->count)
		q->head = q->tail = q->push = SHEAF__NIL;
	return g;
}

unsigned sheaf__sendq_take(struct sheaf__pool *pools, struct sheaf__sendq *q,
			   struct iovec *iov, uint16_t *gids, unsigned max)
{
	unsigned n = 0;

	while (q->out < q->count && n < max) {
		uint16_t g = q->push;
		uint32_t off = g == q->head ? q->off : 0;

		if (iov) {
			iov[n].iov_base = sheaf__buf(pools, g) + off;
			iov[n].iov_len = *sheaf__buf_len(pools, g) - off;
		}
		if (gids)
			gids[n] = g;
		q->push = *sheaf__buf_next(pools, g);
		q->out++;
		n++;
	}
	return n;
}

uint64_t sheaf__sendq_out_bytes(struct sheaf__pool *pools, const struct sheaf__sendq *q)
{
	uint64_t bytes = 0;
	uint16_t g = q->head;

	for (uint32_t i = 0; i < q->out; i++, g = *sheaf__buf_next(pools, g))
		bytes += *sheaf__buf_len(pools, g);
	return bytes - q->off;
}

int sheaf__sendq_sent(struct sheaf__pool *pools, struct sheaf__sendq *q,
		      uint64_t bytes, uint16_t *done)
{
	int n = 0;

	while (bytes) {
		uint32_t left;

		if (!q->out)
			return -EPROTO;
		left = *sheaf__buf_len(pools, q->head) - q->off;
		if (left > bytes) {
			q->off += (uint32_t)bytes;
			q->bytes -= bytes;
			return n;
		}
		bytes -= left;
		done[n++] = sheaf__sendq_pop(pools, q);
	}
	return n;
}

void sheaf__sendq_unhand(struct sheaf__sendq *q)
{
	q->out = 0;
	q->push = q->head;
}

/*
 * A send whose result counts bytes in queue order (sendmsg, writev, plain
 * sends): retires them into done[] (*n of them). Once nothing else is in
 * flight (`last`), what is still handed out was not sent and goes out
 * again later. Returns 1 when that happened (a short send), 0, or -EPROTO.
 */
int sheaf__sendq_done(struct sheaf__pool *pools, struct sheaf__sendq *q, int res,
		      bool last, uint16_t *done, int *n)
{
	*n = sheaf__sendq_sent(pools, q, res > 0 ? (uint64_t)res : 0, done);
	if (*n < 0) {
		*n = 0;
		return -EPROTO;
	}
	if (!last || !q->out)
		return 0;
	sheaf__sendq_unhand(q);
	return 1;
}
