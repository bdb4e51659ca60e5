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
