/*
 * The send queue, and the send-bundle protocol against a randomized model
 * of the kernel (docs/KERNEL.md): a bundle send selects min(T - H, 256)
 * entries from the ring's head H, commits all of them at selection, then
 * sends a prefix of their bytes (or nothing, with an error).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <cmocka.h>

#include "internal.h"

/* Bytes of the buffers handed out (the model's view of a pass). */
static uint64_t out_bytes(struct sheaf__pool *pools, const struct sheaf__sendq *q)
{
	uint64_t bytes = 0;
	uint16_t g = q->head;

	if (!q->out)
		return 0;
	for (uint32_t i = 0; i < q->out; i++, g = *sheaf__buf_next(pools, g))
		bytes += *sheaf__buf_len(pools, g);
	return bytes - q->off;
}

/* ---- randomness and the byte stream ------------------------------------ */

static uint64_t rng;

static void rng_seed(unsigned seed)
{
	rng = (seed + 1) * 0x9e3779b97f4a7c15ull;
}

static uint64_t rnd64(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

/* A number in [0, n). */
static uint32_t rnd(uint32_t n)
{
	return n ? (uint32_t)((rnd64() >> 32) % n) : 0;
}

/*
 * Stream byte `pos` is pat[pos % PAT_LEN]: random bytes with a prime
 * period, so that no buffer size lines up with it and a lost, repeated or
 * reordered piece shows.
 */
#define PAT_LEN 1048573u
static uint8_t pat[PAT_LEN];

static void pat_init(void)
{
	uint64_t x = 0x5eed;

	for (uint32_t i = 0; i < PAT_LEN; i++) {
		x += 0x9e3779b97f4a7c15ull;
		pat[i] = (uint8_t)(((x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull) >> 56);
	}
}

static void stream_fill(uint8_t *dst, uint64_t pos, uint32_t len)
{
	while (len) {
		uint32_t at = (uint32_t)(pos % PAT_LEN), m = PAT_LEN - at;

		m = m < len ? m : len;
		memcpy(dst, pat + at, m);
		dst += m, pos += m, len -= m;
	}
}

/* The bytes at src must be stream bytes [pos, pos + len). */
static void stream_check(const uint8_t *src, uint64_t pos, uint32_t len)
{
	while (len) {
		uint32_t at = (uint32_t)(pos % PAT_LEN), m = PAT_LEN - at;

		m = m < len ? m : len;
		if (memcmp(src, pat + at, m)) {
			uint32_t i = 0;

			while (src[i] == pat[at + i])
				i++;
			print_error("stream byte %llu differs\n", (unsigned long long)(pos + i));
			assert_int_equal(src[i], pat[at + i]);
		}
		src += m, pos += m, len -= m;
	}
}

/* ---- the buffers: two pools, taken directly by the test ---------------- */

struct supply {
	struct sheaf__pool pools[SHEAF__DIRS];
	uint16_t *free[SHEAF__DIRS]; /* bids the test may take */
	uint32_t nfree[SHEAF__DIRS];
	uint32_t nbufs, buf_size;
	uint16_t *fifo;              /* appended, not given back: oldest first */
	uint32_t fhead, ftail, fmask;
	uint64_t in;                 /* stream bytes appended */
};

static void supply_init(struct supply *s, uint32_t buf_size, uint32_t nbufs)
{
	memset(s, 0, sizeof(*s));
	s->nbufs = nbufs;
	s->buf_size = buf_size;
	s->fmask = 2 * nbufs - 1;
	s->fifo = calloc(2 * nbufs, sizeof(*s->fifo));
	assert_non_null(s->fifo);
	for (unsigned d = 0; d < SHEAF__DIRS; d++) {
		assert_int_equal(sheaf__pool_init(&s->pools[d], buf_size, nbufs, (uint16_t)d), 0);
		s->free[d] = calloc(nbufs, sizeof(*s->free[d]));
		assert_non_null(s->free[d]);
		for (uint32_t i = 0; i < nbufs; i++)
			s->free[d][i] = (uint16_t)i;
		s->nfree[d] = nbufs;
	}
}

/* Every buffer must be back: nothing queued, every pool full. */
static void supply_fini(struct supply *s)
{
	assert_int_equal(s->ftail - s->fhead, 0);
	for (unsigned d = 0; d < SHEAF__DIRS; d++) {
		assert_int_equal(sheaf__pool_free(&s->pools[d]), s->nbufs);
		assert_int_equal(s->nfree[d], s->nbufs);
		sheaf__pool_fini(&s->pools[d]);
		free(s->free[d]);
	}
	free(s->fifo);
}

/* 1..size: the edges often, large buffers mostly short (runtime). */
static uint32_t random_len(uint32_t size)
{
	uint32_t r = rnd(8);

	if (r >= 4 && size > 512)
		size = 512;
	return r == 0 ? 1 : r == 1 ? size : 1 + rnd(size);
}

/* A buffer of a random pool, marked held, filled with the next stream
 * bytes; SHEAF__NIL when both pools are out. */
static uint16_t supply_get(struct supply *s)
{
	unsigned d = rnd(2);
	uint32_t i, len;
	uint16_t bid, g;

	if (!s->nfree[d])
		d ^= 1;
	if (!s->nfree[d])
		return SHEAF__NIL;
	i = rnd(s->nfree[d]);
	bid = s->free[d][i];
	s->free[d][i] = s->free[d][--s->nfree[d]];
	s->pools[d].held++;
	g = SHEAF__GID(d, bid);
	len = random_len(s->buf_size);
	*sheaf__buf_len(s->pools, g) = len;
	stream_fill(sheaf__buf(s->pools, g), s->in, len);
	s->in += len;
	return g;
}

static bool supply_append(struct supply *s, struct sheaf__sendq *q)
{
	uint16_t g = supply_get(s);

	if (g == SHEAF__NIL)
		return false;
	sheaf__sendq_append(s->pools, q, g);
	s->fifo[s->ftail++ & s->fmask] = g;
	return true;
}

static void supply_append_n(struct supply *s, struct sheaf__sendq *q, uint32_t n)
{
	while (n-- && supply_append(s, q))
		;
}

static void supply_release(struct supply *s, uint16_t g)
{
	unsigned d = SHEAF__GID_DIR(g);

	sheaf__buf_put(s->pools, g);
	s->free[d][s->nfree[d]++] = SHEAF__GID_BID(g);
}

/* Retired buffers come back oldest first, each exactly once. */
static void supply_giveback(struct supply *s, const uint16_t *done, int n)
{
	for (int i = 0; i < n; i++) {
		assert_true(s->fhead != s->ftail);
		assert_int_equal(done[i], s->fifo[s->fhead++ & s->fmask]);
		supply_release(s, done[i]);
	}
}

/* Gives back everything appended and not given back, queued or not. */
static void supply_abandon(struct supply *s)
{
	while (s->fhead != s->ftail)
		supply_release(s, s->fifo[s->fhead++ & s->fmask]);
}

/* Appends while idle: a few, now and then a burst. */
static void step_appends(struct supply *s, struct sheaf__sendq *q)
{
	supply_append_n(s, q, rnd(128) == 0 ? rnd(300) : rnd(4));
}

/* ---- a connection's send ring, and the kernel's side of it ------------- */

struct bundle {
	struct io_uring_buf_ring *br;
	size_t br_len;
	uint32_t entries;
	uint16_t head, tail; /* the app's: what it knows consumed, published */
	struct sheaf__sendq q;
};

/* A ring already used up to `start` (so that the 16-bit indexes wrap). */
static void bundle_init(struct bundle *b, uint32_t entries, uint16_t start)
{
	memset(b, 0, sizeof(*b));
	b->br = sheaf__ring_alloc(entries, &b->br_len);
	assert_non_null(b->br);
	b->br->tail = start;
	b->entries = entries;
	b->head = b->tail = start;
	sheaf__sendq_init(&b->q);
}

static void bundle_fini(struct bundle *b)
{
	munmap(b->br, b->br_len);
}

/* Set to 1 to check that the test catches a kernel that commits only the
 * entries it sent whole. */
#define BROKEN_COMMIT 0

struct kernel {
	struct io_uring_buf_ring *br;
	uint32_t mask;
	uint16_t head; /* H */
	uint64_t out;  /* bytes on the wire: the output stream */
};

struct counts {
	uint64_t passes, full, shorts, mid_entry, errors, eintr, enobufs;
	uint64_t zero, partial_first, single, max_pass, wraps, chains, inflight_appends;
};

static struct io_uring_buf *kernel_entry(struct kernel *k, uint32_t i)
{
	return &k->br->bufs[(uint16_t)(k->head + i) & k->mask];
}

/* How much of the pass goes out: all, a prefix, or nothing with an error. */
static uint64_t kernel_pick(struct kernel *k, uint32_t nb, uint64_t total, int *err)
{
	static const int errs[] = { -ECANCELED, -EAGAIN, -ECANCELED, -EAGAIN, -EINTR };
	uint32_t r = rnd(16), j;
	uint64_t bytes = 0;

	*err = 0;
	if (r < 8)
		return total;
	if (r < 11)
		return rnd64() % (total + 1);
	if (r == 11) { /* whole entries only */
		for (j = rnd(nb); j; j--)
			bytes += kernel_entry(k, j - 1)->len;
		return bytes;
	}
	if (r == 12) /* within the first entry */
		return rnd(kernel_entry(k, 0)->len);
	*err = errs[rnd(5)];
	return 0;
}

/* Puts `bytes` of the nb entries from H on the wire, checking them against
 * the stream; returns the entries that went out whole. */
static uint32_t kernel_emit(struct kernel *k, uint32_t nb, uint64_t bytes, bool *mid)
{
	uint32_t whole = 0;

	*mid = false;
	for (uint32_t i = 0; i < nb && bytes; i++) {
		struct io_uring_buf *b = kernel_entry(k, i);
		uint32_t m = b->len < bytes ? b->len : (uint32_t)bytes;

		stream_check((const uint8_t *)(uintptr_t)b->addr, k->out, m);
		k->out += m;
		bytes -= m;
		whole += m == b->len;
		*mid = m < b->len;
	}
	return whole;
}

/* One bundle send, start to completion. *total: the bytes it selected. */
static struct sheaf__event kernel_send(struct kernel *k, struct counts *c, uint64_t *total)
{
	uint16_t tail = io_uring_smp_load_acquire(&k->br->tail);
	uint32_t nb = (uint16_t)(tail - k->head), whole;
	struct sheaf__event ev = { .ud = 1 };
	uint64_t bytes;
	bool mid;
	int err;

	*total = 0;
	nb = nb < 256 ? nb : 256;
	if (!nb || !kernel_entry(k, 0)->len) {
		ev.res = -ENOBUFS;
		c->enobufs++;
		return ev;
	}
	for (uint32_t i = 0; i < nb; i++)
		*total += kernel_entry(k, i)->len;
	bytes = kernel_pick(k, nb, *total, &err);
	ev.flags = IORING_CQE_F_BUFFER |
		   (uint32_t)kernel_entry(k, 0)->bid << IORING_CQE_BUFFER_SHIFT;
	whole = kernel_emit(k, nb, bytes, &mid);
	k->head = (uint16_t)(k->head + (BROKEN_COMMIT ? whole : nb));
	ev.res = err ? err : (int32_t)bytes;
	c->mid_entry += mid;
	c->eintr += err == -EINTR;
	return ev;
}

/* ---- test 1: the bundle protocol, randomized --------------------------- */

/* What a pass republishes first is the rest of a partly sent buffer. */
static void check_remainder(struct supply *s, struct bundle *b, uint16_t pos)
{
	struct io_uring_buf *e = &b->br->bufs[pos & (b->entries - 1)];
	uint16_t g = b->q.head;

	assert_int_equal(e->bid, g);
	assert_int_equal(e->addr, (uint64_t)(uintptr_t)(sheaf__buf(s->pools, g) + b->q.off));
	assert_int_equal(e->len, *sheaf__buf_len(s->pools, g) - b->q.off);
}

static void count_pass(struct counts *c, unsigned np, const struct sheaf__event *ev,
		       uint64_t sent, uint64_t pub)
{
	c->passes++;
	c->single += np == 1;
	c->max_pass = np > c->max_pass ? np : c->max_pass;
	if (ev->res < 0)
		c->errors++;
	else if (sent < pub)
		c->shorts++, c->zero += sent == 0;
	else
		c->full++;
}

/* Publish, send, complete; the app must end where the kernel did. */
static void bundle_pass(struct supply *s, struct bundle *b, struct kernel *k,
			struct counts *c)
{
	uint16_t done[256], tail0 = b->tail;
	uint32_t want = b->q.count < b->entries ? b->q.count : b->entries;
	uint64_t total, pub, out0 = k->out;
	struct sheaf__event ev;
	unsigned np;
	int n, ret;

	np = sheaf__sendq_publish(s->pools, &b->q, b->br, b->entries, &b->tail, b->entries);
	assert_int_equal(np, want);
	assert_int_equal(b->q.out, np);
	if (b->q.off) {
		check_remainder(s, b, tail0);
		c->partial_first++;
	}
	c->wraps += b->tail < tail0;
	pub = out_bytes(s->pools, &b->q);
	if (rnd(4) == 0) { /* data arrives while the send is in flight */
		supply_append_n(s, &b->q, 1 + rnd(3));
		c->inflight_appends++;
	}
	ev = kernel_send(k, c, &total);
	assert_int_equal(total, pub);
	ret = sheaf__sendq_bundle_done(s->pools, &b->q, &b->head, b->tail, &ev, done, &n);
	assert_int_equal(ret, k->out - out0 < pub);
	assert_int_equal(b->head, k->head);
	assert_int_equal(b->q.out, 0);
	supply_giveback(s, done, n);
	assert_int_equal(b->q.bytes, s->in - k->out);
	count_pass(c, np, &ev, k->out - out0, pub);
}

/* A send with nothing published finds the ring empty. */
static void bundle_empty_send(struct supply *s, struct bundle *b, struct kernel *k,
			      struct counts *c)
{
	uint16_t done[256];
	uint64_t total;
	struct sheaf__event ev = kernel_send(k, c, &total);
	int n;

	assert_int_equal(ev.res, -ENOBUFS);
	assert_int_equal(ev.flags, 0);
	assert_int_equal(sheaf__sendq_bundle_done(s->pools, &b->q, &b->head, b->tail, &ev,
						  done, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(b->head, k->head);
}

static void bundle_seed(unsigned seed, struct counts *c)
{
	static const uint32_t sizes[] = { 1, 2, 3, 7, 16, 100, 511, 1500, 4096, 9000,
					  65535, 65536 };
	uint32_t entries = 8u << (seed / 12 % 6), size = sizes[seed % 12];
	unsigned steps = size > 4096 ? 300 : 4000; /* big ones: page faults */
	struct supply s;
	struct bundle b;
	struct kernel k;

	rng_seed(seed);
	supply_init(&s, size, 256);
	bundle_init(&b, entries, seed % 2 ? (uint16_t)(0 - rnd(700)) : 0);
	k = (struct kernel){ .br = b.br, .mask = entries - 1, .head = b.head };
	for (unsigned step = 0; step < steps; step++) {
		step_appends(&s, &b.q);
		if (b.q.out < b.q.count)
			bundle_pass(&s, &b, &k, c);
		else
			bundle_empty_send(&s, &b, &k, c);
	}
	while (b.q.count)
		bundle_pass(&s, &b, &k, c);
	assert_int_equal(k.out, s.in);
	assert_int_equal(b.q.bytes, 0);
	assert_int_equal(b.q.out, 0);
	assert_int_equal(b.q.head, SHEAF__NIL);
	assert_int_equal(b.tail, k.head);
	supply_fini(&s);
	bundle_fini(&b);
}

static void print_bundle_counts(const struct counts *c)
{
	print_message("bundle: %llu passes: %llu full, %llu short (%llu of 0 bytes, %llu "
		      "ending mid-entry), %llu 0-byte errors (%llu EINTR); %llu ENOBUFS, "
		      "%llu republished remainders, %llu single-entry, largest %llu, "
		      "%llu wraps, %llu in-flight appends\n",
		      (unsigned long long)c->passes, (unsigned long long)c->full,
		      (unsigned long long)c->shorts, (unsigned long long)c->zero,
		      (unsigned long long)c->mid_entry, (unsigned long long)c->errors,
		      (unsigned long long)c->eintr, (unsigned long long)c->enobufs,
		      (unsigned long long)c->partial_first, (unsigned long long)c->single,
		      (unsigned long long)c->max_pass, (unsigned long long)c->wraps,
		      (unsigned long long)c->inflight_appends);
}

static void bundle_randomized(void **state)
{
	struct counts c = { 0 };

	for (unsigned seed = 0; seed < 72; seed++)
		bundle_seed(seed, &c);
	print_bundle_counts(&c);
	assert_true(c.shorts > 0);
	assert_true(c.zero > 0);
	assert_true(c.mid_entry > 0);
	assert_true(c.errors > 0);
	assert_true(c.eintr > 0);
	assert_true(c.enobufs > 0);
	assert_true(c.partial_first > 0);
	assert_true(c.single > 0);
	assert_int_equal(c.max_pass, 256);
	assert_true(c.wraps > 0);
	assert_true(c.inflight_appends > 0);
}

/* ---- test 2: protocol violations --------------------------------------- */

struct proto {
	struct supply s;
	struct bundle b;
	uint64_t pub;
	uint16_t done[256];
};

/* Three buffers published in a ring of 8. */
static void proto_setup(struct proto *p)
{
	rng_seed(99);
	supply_init(&p->s, 64, 16);
	bundle_init(&p->b, 8, 0);
	supply_append_n(&p->s, &p->b.q, 3);
	assert_int_equal(sheaf__sendq_publish(p->s.pools, &p->b.q, p->b.br, 8, &p->b.tail, 8),
			 3);
	p->pub = out_bytes(p->s.pools, &p->b.q);
	assert_int_equal(p->pub, p->s.in);
}

static void proto_teardown(struct proto *p)
{
	supply_abandon(&p->s);
	supply_fini(&p->s);
	bundle_fini(&p->b);
}

static uint32_t fbuf(uint16_t g)
{
	return IORING_CQE_F_BUFFER | (uint32_t)g << IORING_CQE_BUFFER_SHIFT;
}

static int proto_complete(struct proto *p, int32_t res, uint32_t flags, int *n)
{
	struct sheaf__event ev = { .ud = 1, .res = res, .flags = flags };

	*n = -1;
	return sheaf__sendq_bundle_done(p->s.pools, &p->b.q, &p->b.head, p->b.tail, &ev,
					p->done, n);
}

/* Refused with nothing retired and nothing moved. */
static void proto_refused(struct proto *p, int32_t res, uint32_t flags)
{
	int n;

	assert_int_equal(proto_complete(p, res, flags, &n), -EPROTO);
	assert_int_equal(n, 0);
	assert_int_equal(p->b.head, 0);
	assert_int_equal(p->b.q.count, 3);
	assert_int_equal(p->b.q.bytes, p->pub);
}

static void proto_wrong_bid(void **state)
{
	struct proto p;
	uint16_t second;

	proto_setup(&p);
	second = *sheaf__buf_next(p.s.pools, p.b.q.head);
	proto_refused(&p, 1, fbuf(second));
	proto_refused(&p, -EAGAIN, fbuf(second));
	proto_refused(&p, 0, fbuf(p.b.q.head ^ SHEAF__GID(1, 0))); /* the other pool */
	proto_teardown(&p);
}

static void proto_no_buffer_while_published(void **state)
{
	struct proto p;

	proto_setup(&p);
	proto_refused(&p, -ENOBUFS, 0);
	proto_refused(&p, 0, 0);
	proto_refused(&p, 5, 0);
	proto_teardown(&p);
}

/* After a full pass nothing is published: an empty-ring send is fine, a
 * completion claiming a buffer is not. */
static void proto_nothing_published(void **state)
{
	struct proto p;
	int n;

	proto_setup(&p);
	assert_int_equal(proto_complete(&p, (int32_t)p.pub, fbuf(p.b.q.head), &n), 0);
	assert_int_equal(n, 3);
	supply_giveback(&p.s, p.done, n);
	assert_int_equal(p.b.head, p.b.tail);
	assert_int_equal(proto_complete(&p, -ENOBUFS, 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(proto_complete(&p, 0, 0, &n), 0);
	assert_int_equal(n, 0);
	supply_append_n(&p.s, &p.b.q, 1);
	assert_int_equal(proto_complete(&p, 1, fbuf(p.b.q.head), &n), -EPROTO);
	assert_int_equal(n, 0);
	assert_int_equal(p.b.q.count, 1);
	assert_int_equal(p.b.head, p.b.tail);
	proto_teardown(&p);
}

static void proto_overreport(void **state)
{
	struct proto p;
	int n;

	proto_setup(&p);
	assert_int_equal(proto_complete(&p, (int32_t)p.pub + 1, fbuf(p.b.q.head), &n),
			 -EPROTO);
	/* every published buffer was retired on the way: none may be lost */
	assert_true(n > 0);
	assert_int_equal(p.b.q.count, 0);
	supply_giveback(&p.s, p.done, n);
	proto_teardown(&p);
}

/* A hard error after selection: the pass is committed, nothing retired. */
static void proto_hard_error(void **state)
{
	static const int errs[] = { -ECONNRESET, -EPIPE };
	struct proto p;
	int n;

	for (unsigned i = 0; i < 2; i++) {
		proto_setup(&p);
		assert_int_equal(proto_complete(&p, errs[i], fbuf(p.b.q.head), &n), errs[i]);
		assert_int_equal(n, 0);
		assert_int_equal(p.b.head, p.b.tail);
		assert_int_equal(p.b.q.count, 3);
		assert_int_equal(p.b.q.bytes, p.pub);
		assert_int_equal(p.b.q.off, 0);
		proto_teardown(&p);
	}
	/* without F_BUFFER: it failed before selecting */
	proto_setup(&p);
	assert_int_equal(proto_complete(&p, -ECONNRESET, 0, &n), -ECONNRESET);
	assert_int_equal(n, 0);
	assert_int_equal(p.b.q.count, 3);
	proto_teardown(&p);
}

/* ---- test 3: exact sends (sendmsg, writev, plain chains) --------------- */

/* Where the kernel is in a handed-out gather. */
struct cursor {
	const struct iovec *iov;
	unsigned n, i;
	size_t off;
	uint64_t left;
};

static void cursor_emit(struct cursor *cu, uint64_t bytes, uint64_t *wire)
{
	while (bytes) {
		const struct iovec *v = &cu->iov[cu->i];
		size_t m = v->iov_len - cu->off < bytes ? v->iov_len - cu->off : bytes;

		stream_check((const uint8_t *)v->iov_base + cu->off, *wire, (uint32_t)m);
		*wire += m;
		bytes -= m;
		cu->left -= m;
		cu->off += m;
		if (cu->off == v->iov_len)
			cu->i++, cu->off = 0;
	}
}

static int32_t exact_res(const struct cursor *cu, bool last, struct counts *c)
{
	static const int errs[] = { -EAGAIN, -EINTR, -ECANCELED };

	if (rnd(6) == 0) {
		c->errors++;
		return errs[rnd(3)];
	}
	if (last && rnd(2))
		return (int32_t)cu->left;
	return (int32_t)(rnd64() % (cu->left + 1));
}

/* One completion of the chain; nothing goes back until the last one. */
static void exact_complete(struct supply *s, struct sheaf__sendq *q, struct cursor *cu,
			   bool last, uint64_t *wire, struct counts *c)
{
	uint16_t done[256];
	int32_t res = exact_res(cu, last, c);
	uint32_t out0 = q->out;
	int n, ret;

	cursor_emit(cu, res > 0 ? (uint64_t)res : 0, wire);
	if (rnd(4) == 0)
		supply_append_n(s, q, 1 + rnd(2));
	ret = sheaf__sendq_done(s->pools, q, res, last, done, &n);
	supply_giveback(s, done, n);
	if (last) {
		assert_int_equal(ret, cu->left > 0);
		assert_int_equal(q->out, 0);
		c->shorts += ret;
	} else {
		assert_int_equal(ret, 0);
		assert_int_equal(q->out, out0 - (uint32_t)n);
	}
	assert_int_equal(q->bytes, s->in - *wire);
}

static void exact_gather(struct supply *s, struct sheaf__sendq *q, uint64_t *wire,
			 struct counts *c)
{
	struct iovec iov[256];
	struct cursor cu = { .iov = iov };
	unsigned calls = rnd(3) == 0 ? 2 + rnd(3) : 1;
	uint32_t off = q->off;
	uint16_t head = q->head;

	cu.n = sheaf__sendq_take(s->pools, q, iov, NULL, rnd(4) ? 1 + rnd(64) : 256);
	assert_true(cu.n > 0);
	assert_ptr_equal(iov[0].iov_base, sheaf__buf(s->pools, head) + off);
	for (unsigned i = 0; i < cu.n; i++)
		cu.left += iov[i].iov_len;
	assert_int_equal(cu.left, out_bytes(s->pools, q));
	c->partial_first += off > 0;
	c->chains += calls > 1;
	c->passes++;
	for (unsigned i = 0; i < calls; i++)
		exact_complete(s, q, &cu, i + 1 == calls, wire, c);
}

static void exact_randomized(void **state)
{
	static const uint32_t sizes[] = { 1, 3, 64, 1500, 65536 };
	struct counts c = { 0 };

	for (unsigned seed = 0; seed < 20; seed++) {
		struct supply s;
		struct sheaf__sendq q;
		uint64_t wire = 0;
		unsigned steps = sizes[seed % 5] > 4096 ? 300 : 3000;

		rng_seed(1000 + seed);
		supply_init(&s, sizes[seed % 5], 256);
		sheaf__sendq_init(&q);
		for (unsigned step = 0; step < steps || q.count; step++) {
			if (step < steps)
				step_appends(&s, &q);
			if (q.out < q.count)
				exact_gather(&s, &q, &wire, &c);
		}
		assert_int_equal(wire, s.in);
		assert_int_equal(q.bytes, 0);
		assert_int_equal(q.head, SHEAF__NIL);
		supply_fini(&s);
	}
	print_message("exact: %llu gathers, %llu chains, %llu short, %llu errors, "
		      "%llu starting mid-buffer\n", (unsigned long long)c.passes,
		      (unsigned long long)c.chains, (unsigned long long)c.shorts,
		      (unsigned long long)c.errors, (unsigned long long)c.partial_first);
	assert_true(c.shorts > 0);
	assert_true(c.errors > 0);
	assert_true(c.chains > 0);
	assert_true(c.partial_first > 0);
}

/* ---- test 4: queue basics ---------------------------------------------- */

/* What the queue should hold. */
struct qmodel {
	uint16_t g[256];
	uint32_t n, out, off;
};

static void qmodel_check(struct supply *s, const struct sheaf__sendq *q,
			 const struct qmodel *m)
{
	uint64_t bytes = 0, handed = 0;
	uint16_t g = q->head;

	assert_int_equal(q->count, m->n);
	assert_int_equal(q->out, m->out);
	assert_int_equal(q->off, m->off);
	assert_int_equal(q->head, m->n ? m->g[0] : SHEAF__NIL);
	assert_int_equal(q->tail, m->n ? m->g[m->n - 1] : SHEAF__NIL);
	assert_int_equal(q->push, m->out < m->n ? m->g[m->out] : SHEAF__NIL);
	for (uint32_t i = 0; i < m->n; i++, g = *sheaf__buf_next(s->pools, g)) {
		assert_int_equal(g, m->g[i]);
		bytes += *sheaf__buf_len(s->pools, g);
		if (i < m->out)
			handed += *sheaf__buf_len(s->pools, g);
	}
	assert_int_equal(g, SHEAF__NIL);
	assert_int_equal(q->bytes, bytes - m->off);
	assert_int_equal(out_bytes(s->pools, q), m->out ? handed - m->off : 0);
}

static void qmodel_pop(struct qmodel *m)
{
	memmove(m->g, m->g + 1, (m->n - 1) * sizeof(m->g[0]));
	m->n--;
	m->out -= m->out > 0;
	m->off = 0;
}

static void basics_take(struct supply *s, struct sheaf__sendq *q, struct qmodel *m)
{
	struct iovec iov[256];
	uint16_t gids[256];
	unsigned max = rnd(6), n = sheaf__sendq_take(s->pools, q, iov, gids, max);
	unsigned want = m->n - m->out < max ? m->n - m->out : max;

	assert_int_equal(n, want);
	for (unsigned i = 0; i < n; i++) {
		uint16_t g = m->g[m->out + i];
		uint32_t off = m->out + i == 0 ? m->off : 0;

		assert_int_equal(gids[i], g);
		assert_ptr_equal(iov[i].iov_base, sheaf__buf(s->pools, g) + off);
		assert_int_equal(iov[i].iov_len, *sheaf__buf_len(s->pools, g) - off);
	}
	m->out += n;
}

static void basics_sent(struct supply *s, struct sheaf__sendq *q, struct qmodel *m)
{
	uint64_t avail = 0, bytes;
	uint16_t done[256];
	int n, want = 0;

	for (uint32_t i = 0; i < m->out; i++)
		avail += *sheaf__buf_len(s->pools, m->g[i]) - (i ? 0 : m->off);
	bytes = rnd64() % (avail + 1);
	assert_int_equal(sheaf__sendq_sent(s->pools, q, bytes, done, &n), 0);
	while (bytes && bytes >= *sheaf__buf_len(s->pools, m->g[0]) - m->off) {
		bytes -= *sheaf__buf_len(s->pools, m->g[0]) - m->off;
		assert_int_equal(done[want++], m->g[0]);
		qmodel_pop(m);
	}
	m->off += (uint32_t)bytes;
	assert_int_equal(n, want);
	supply_giveback(s, done, n);
}

static void basics_step(struct supply *s, struct sheaf__sendq *q, struct qmodel *m)
{
	uint16_t g;

	switch (rnd(6)) {
	case 0:
	case 1:
		if (m->n < 256 && supply_append(s, q))
			m->g[m->n++] = s->fifo[(s->ftail - 1) & s->fmask];
		break;
	case 2:
		if (!m->n)
			break;
		g = sheaf__sendq_pop(s->pools, q);
		assert_int_equal(g, m->g[0]);
		qmodel_pop(m);
		supply_giveback(s, &g, 1);
		break;
	case 3:
		basics_take(s, q, m);
		break;
	case 4:
		sheaf__sendq_unhand(q);
		m->out = 0;
		break;
	default:
		basics_sent(s, q, m);
	}
}

static void queue_basics(void **state)
{
	unsigned mixed = 0;

	for (unsigned seed = 0; seed < 20; seed++) {
		struct supply s;
		struct sheaf__sendq q;
		struct qmodel m = { .n = 0 };

		rng_seed(2000 + seed);
		supply_init(&s, 1 + seed * 7, 128);
		sheaf__sendq_init(&q);
		qmodel_check(&s, &q, &m);
		for (unsigned step = 0; step < 5000; step++) {
			basics_step(&s, &q, &m);
			qmodel_check(&s, &q, &m);
			mixed += m.n >= 2 && SHEAF__GID_DIR(m.g[0]) != SHEAF__GID_DIR(m.g[1]);
		}
		while (q.count) {
			uint16_t g = sheaf__sendq_pop(s.pools, &q);

			supply_giveback(&s, &g, 1);
		}
		assert_int_equal(q.bytes, 0);
		supply_fini(&s);
	}
	assert_true(mixed > 0);
}

/* A short sent() keeps the offset; more than was handed out is refused. */
static void sent_edges(void **state)
{
	struct supply s;
	struct sheaf__sendq q;
	uint16_t done[4];
	uint32_t len0;
	int n;

	rng_seed(3);
	supply_init(&s, 16, 8);
	sheaf__sendq_init(&q);
	supply_append_n(&s, &q, 2);
	len0 = *sheaf__buf_len(s.pools, q.head);
	assert_int_equal(sheaf__sendq_sent(s.pools, &q, 1, done, &n), -EPROTO); /* none out */
	assert_int_equal(n, 0);
	assert_int_equal(sheaf__sendq_take(s.pools, &q, NULL, NULL, 1), 1);
	assert_int_equal(sheaf__sendq_sent(s.pools, &q, 0, done, &n), 0);
	if (len0 > 1) {
		assert_int_equal(sheaf__sendq_sent(s.pools, &q, len0 - 1, done, &n), 0);
		assert_int_equal(q.off, len0 - 1);
		assert_int_equal(q.bytes, s.in - (len0 - 1));
	}
	assert_int_equal(sheaf__sendq_take(s.pools, &q, NULL, NULL, 4), 1);
	assert_int_equal(sheaf__sendq_done(s.pools, &q, (int)(s.in + 1), true, done, &n),
			 -EPROTO);
	/* what was retired before the excess is handed back all the same */
	assert_int_equal(n, 2);
	assert_int_equal(q.count, 0);
	supply_giveback(&s, done, n);
	supply_abandon(&s);
	supply_fini(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bundle_randomized),
		cmocka_unit_test(proto_wrong_bid),
		cmocka_unit_test(proto_no_buffer_while_published),
		cmocka_unit_test(proto_nothing_published),
		cmocka_unit_test(proto_overreport),
		cmocka_unit_test(proto_hard_error),
		cmocka_unit_test(exact_randomized),
		cmocka_unit_test(queue_basics),
		cmocka_unit_test(sent_edges),
	};

	pat_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
