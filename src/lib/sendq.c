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

int sheaf__sendq_sent(struct sheaf__pool *pools, struct sheaf__sendq *q,
		      uint64_t bytes, uint16_t *done, int *n)
{
	*n = 0;
	while (bytes) {
		uint32_t left;

		if (!q->out)
			return -EPROTO;
		left = *sheaf__buf_len(pools, q->head) - q->off;
		if (left > bytes) {
			q->off += (uint32_t)bytes;
			q->bytes -= bytes;
			return 0;
		}
		bytes -= left;
		done[(*n)++] = sheaf__sendq_pop(pools, q);
	}
	return 0;
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
	if (sheaf__sendq_sent(pools, q, res > 0 ? (uint64_t)res : 0, done, n))
		return -EPROTO;
	if (!last || !q->out)
		return 0;
	sheaf__sendq_unhand(q);
	return 1;
}

/*
 * Publishes up to max buffers not yet handed out in a send ring of
 * `entries` entries, from *tail on; returns how many. The entry's id is the
 * buffer's global id, so a completion names the buffer it started with.
 */
unsigned sheaf__sendq_publish(struct sheaf__pool *pools, struct sheaf__sendq *q,
			      struct io_uring_buf_ring *br, uint32_t entries,
			      uint16_t *tail, unsigned max)
{
	struct iovec iov[256];
	uint16_t gids[256];
	unsigned n = sheaf__sendq_take(pools, q, iov, gids, max < 256 ? max : 256);

	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(br, iov[i].iov_base, (unsigned)iov[i].iov_len, gids[i],
				      (int)entries - 1, (int)i);
	io_uring_buf_ring_advance(br, (int)n);
	*tail = (uint16_t)(*tail + n);
	return n;
}

/*
 * A bundle send's completion, by the kernel's rule (docs/KERNEL.md): with
 * F_BUFFER the pass selected, and committed, every entry published from
 * *head (at most 256: the ring is no larger, and nothing is published while
 * a send is in flight); the result is the bytes of the pass that went out.
 * Those are retired; the rest of the pass goes out again with the next
 * send, from the oldest unsent byte. Without F_BUFFER nothing was selected:
 * fine only when nothing was published (a pass after a full one that found
 * the ring empty). Returns 1 after a short pass, 0, or a negative errno to
 * abort with (-EPROTO: the kernel did not do what the rule says).
 */
int sheaf__sendq_bundle_done(struct sheaf__pool *pools, struct sheaf__sendq *q,
			     uint16_t *head, uint16_t tail, const struct sheaf__event *ev,
			     uint16_t *done, int *n)
{
	uint16_t pass = (uint16_t)(tail - *head);
	int ret;

	*n = 0;
	if (!(ev->flags & IORING_CQE_F_BUFFER)) {
		if (ev->res >= 0 || ev->res == -ENOBUFS)
			return pass ? -EPROTO : 0;
		return ev->res;
	}
	if (!pass || pass > 256 || (ev->flags >> IORING_CQE_BUFFER_SHIFT) != q->head)
		return -EPROTO;
	*head = tail;
	ret = sheaf__sendq_done(pools, q, ev->res, true, done, n);
	if (ret < 0 || !sheaf__send_retry(ev->res))
		return ret < 0 ? ret : ev->res;
	return ret;
}
