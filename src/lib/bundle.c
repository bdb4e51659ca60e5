/* Mapping a receive completion (first buffer id + bytes) back to buffers. */
#include <errno.h>

#include "internal.h"

/*
 * The kernel consumes ring entries in order from its head, and completions
 * of all connections sharing the ring arrive in consumption order (one
 * issuer, DEFER_TASKRUN). A bundle fills whole buffers and then a partial
 * last one, and the partial one counts as consumed, so `res` bytes took
 * ceil(res / buf_size) entries starting at our expected head. The ids in
 * those entries are whatever was recycled there: read them from the shadow,
 * never assume id == slot. The first id is in the CQE; checking it against
 * the shadow costs nothing and catches a broken assumption before any byte
 * is delivered from the wrong buffer.
 */
int sheaf__bundle_map(struct sheaf__pool *p, uint16_t first_bid, uint32_t res,
		      bool bundle, uint16_t *bids)
{
	uint32_t n = bundle ? (res + p->buf_size - 1) / p->buf_size : 1;
	uint32_t left = res;

	if (p->shadow[p->head & p->mask] != first_bid) {
		p->mismatches++;
		return -EPROTO;
	}
	if (n == 0 || n > (uint16_t)(p->published - p->head) ||
	    (!bundle && res > p->buf_size)) {
		p->mismatches++;
		return -EPROTO;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint16_t bid = p->shadow[(uint16_t)(p->head + i) & p->mask];
		uint32_t len = left < p->buf_size ? left : p->buf_size;

		p->len[bid] = len;
		p->off[bid] = 0;
		left -= len;
		bids[i] = bid;
	}
	p->head += n;
	p->held += n;
	return (int)n;
}

int sheaf__bundle_resync(struct sheaf__pool *p, uint16_t first_bid)
{
	uint16_t avail = (uint16_t)(p->published - p->head);

	for (uint16_t i = 0; i < avail; i++) {
		if (p->shadow[(uint16_t)(p->head + i) & p->mask] == first_bid) {
			/* entries before it were consumed by completions we
			 * misread; they are lost to the pool's accounting */
			p->head += i;
			p->held += i;
			return i;
		}
	}
	return -ENOENT;
}

/*
 * recvmsg mode maps by the id in the completion, not by ring order: a
 * multishot posts its completions as it consumes buffers, while a
 * request's last completion (and a single shot's) is posted with the batch
 * at the end of the kernel's task-work run, so completions of different
 * requests need not come in consumption order. Every recvmsg completion
 * names its one buffer, and the ring holds every free buffer, so no ring
 * position is reused early whatever the order.
 * A multishot writes its header at the start of the buffer and the payload
 * after it (docs/KERNEL.md, tests/kernel/recvmsg_multishot.c): the payload
 * is forwarded where it lies, so the buffer's data starts at the payload.
 * EOF is a completion of the header alone, its buffer consumed all the
 * same.
 */
int sheaf__recvmsg_map(struct sheaf__pool *p, uint16_t bid, uint32_t res, bool header,
		       uint16_t *bids)
{
	struct msghdr mh = { 0 }; /* as submitted: no name, no control data */
	struct io_uring_recvmsg_out *o;
	uint8_t *buf = sheaf__pool_buf(p, bid), *payload;

	if (bid >= p->nbufs || res > p->buf_size || p->held >= p->nbufs) {
		p->mismatches++;
		return -EPROTO;
	}
	p->held++;
	bids[0] = bid;
	p->off[bid] = 0;
	p->len[bid] = res;
	if (!header)
		return 1;
	o = io_uring_recvmsg_validate(buf, (int)res, &mh);
	payload = o ? io_uring_recvmsg_payload(o, &mh) : NULL;
	if (!o || payload != buf + sizeof(*o) || sizeof(*o) + o->payloadlen != res) {
		p->mismatches++;
		sheaf__pool_put(p, bid);
		return -EPROTO;
	}
	p->off[bid] = (uint16_t)sizeof(*o);
	p->len[bid] = o->payloadlen;
	if (!o->payloadlen) {
		sheaf__pool_put(p, bid);
		return 0;
	}
	return 1;
}
