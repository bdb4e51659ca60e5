/* Provided-buffer pools: one mmap'd region, one buffer ring, recycling. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

struct io_uring_buf_ring *sheaf__ring_alloc(uint32_t entries, size_t *len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p;

	/* The kernel wants a page-aligned ring: mmap gives one. */
	*len = (entries * sizeof(struct io_uring_buf) + page - 1) & ~(page - 1);
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	io_uring_buf_ring_init(p);
	return p;
}

int sheaf__ring_register(struct io_uring *ring, struct io_uring_buf_ring *br,
			 uint32_t entries, uint16_t bgid, unsigned flags)
{
	struct io_uring_buf_reg reg;

	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = entries;
	reg.bgid = bgid;
	reg.pad = flags; /* liburing 2.3 calls the flags field `pad` */
	return io_uring_register_buf_ring(ring, &reg, 0);
}

static int pool_alloc_arrays(struct sheaf__pool *p)
{
	p->shadow = calloc(p->nbufs, sizeof(*p->shadow));
	p->next = calloc(p->nbufs, sizeof(*p->next));
	p->len = calloc(p->nbufs, sizeof(*p->len));
	p->off = calloc(p->nbufs, sizeof(*p->off));
	if (!p->shadow || !p->next || !p->len || !p->off)
		return -ENOMEM;
	return 0;
}

/*
 * Builds the pool with every buffer published in its ring; registering the
 * ring with io_uring is the backend's part (the epoll backend and the unit
 * tests play the kernel on the same memory).
 */
int sheaf__pool_init(struct sheaf__pool *p, uint32_t buf_size, uint32_t nbufs,
		     uint16_t bgid)
{
	int ret;

	memset(p, 0, sizeof(*p));
	if (!buf_size || buf_size > SHEAF_MAX_BUF_SIZE || !nbufs ||
	    nbufs > SHEAF_MAX_BUFS || (nbufs & (nbufs - 1)))
		return -EINVAL;
	p->buf_size = buf_size;
	p->nbufs = nbufs;
	p->mask = nbufs - 1;
	p->bgid = bgid;
	p->mem_len = (size_t)buf_size * nbufs;
	p->mem = mmap(NULL, p->mem_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->mem == MAP_FAILED) {
		p->mem = NULL;
		return -ENOMEM;
	}
	p->br = sheaf__ring_alloc(nbufs, &p->br_len);
	ret = p->br ? pool_alloc_arrays(p) : -ENOMEM;
	if (ret) {
		sheaf__pool_fini(p);
		return ret;
	}
	p->held = nbufs;
	for (uint32_t i = 0; i < nbufs; i++)
		sheaf__pool_put(p, (uint16_t)i);
	sheaf__pool_flush(p);
	return 0;
}

void sheaf__pool_fini(struct sheaf__pool *p)
{
	if (p->br)
		munmap(p->br, p->br_len);
	if (p->mem)
		munmap(p->mem, p->mem_len);
	free(p->shadow);
	free(p->next);
	free(p->len);
	free(p->off);
	memset(p, 0, sizeof(*p));
}

/* Gives a buffer back; the kernel sees it after the next flush. */
void sheaf__pool_put(struct sheaf__pool *p, uint16_t bid)
{
	io_uring_buf_ring_add(p->br, sheaf__pool_buf(p, bid), p->buf_size, bid,
			      (int)p->mask, (uint16_t)(p->tail - p->published));
	p->shadow[p->tail & p->mask] = bid;
	p->tail++;
	p->held--;
}

/* Publishes every buffer put since the last flush (one release store). */
void sheaf__pool_flush(struct sheaf__pool *p)
{
	uint16_t n = (uint16_t)(p->tail - p->published);

	if (!n)
		return;
	io_uring_buf_ring_advance(p->br, n);
	p->published = p->tail;
}

uint16_t sheaf__pool_take(struct sheaf__pool *p)
{
	uint16_t bid;

	if (p->held == p->nbufs)
		return SHEAF__NIL;
	bid = p->shadow[p->head & p->mask];
	p->head++;
	p->held++;
	return bid;
}
