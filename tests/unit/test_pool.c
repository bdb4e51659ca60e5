/* Pool accounting and the bundle mapping, against a model of the kernel. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/*
 * The kernel's side of a provided-buffer ring, as the unit tests play it:
 * it consumes entries in order from its own head, up to the published tail,
 * and reports (first buffer id, bytes) like a recv bundle CQE. Buffers are
 * filled completely except the last one.
 */
struct kmodel {
	uint16_t head;
};

static int kernel_recv(struct kmodel *k, struct sheaf__pool *p, uint32_t want,
		       bool bundle, uint16_t *bid, uint32_t *res, uint16_t *used)
{
	uint16_t tail = p->br->tail;
	uint16_t avail = (uint16_t)(tail - k->head);
	uint32_t n, bytes = 0;

	if (!avail)
		return -1; /* -ENOBUFS */
	n = bundle ? (want + p->buf_size - 1) / p->buf_size : 1;
	if (n > avail)
		n = avail;
	if (n > 256)
		n = 256; /* one pass */
	for (uint32_t i = 0; i < n; i++) {
		struct io_uring_buf *b = &p->br->bufs[(uint16_t)(k->head + i) & p->mask];
		uint32_t len = want - bytes < b->len ? want - bytes : b->len;

		used[i] = b->bid;
		bytes += len;
	}
	*bid = p->br->bufs[k->head & p->mask].bid;
	*res = bytes;
	k->head += n;
	return (int)n;
}

static void pool_starts_full(void **state)
{
	struct sheaf__pool p;

	assert_int_equal(sheaf__pool_init(&p, 32, 64, 0), 0);
	assert_int_equal(sheaf__pool_free(&p), 64);
	assert_int_equal(p.br->tail, 64);
	for (uint32_t i = 0; i < 64; i++)
		assert_int_equal(p.br->bufs[i].bid, i);
	sheaf__pool_fini(&p);
}

static void pool_rejects_bad_sizes(void **state)
{
	struct sheaf__pool p;

	assert_int_equal(sheaf__pool_init(&p, 0, 64, 0), -EINVAL);
	assert_int_equal(sheaf__pool_init(&p, 32, 48, 0), -EINVAL);
	assert_int_equal(sheaf__pool_init(&p, 32, 65536, 0), -EINVAL);
	assert_int_equal(sheaf__pool_init(&p, SHEAF_MAX_BUF_SIZE + 1, 4, 0), -EINVAL);
}

/* put() is invisible to the kernel until flush(), which publishes at once. */
static void put_then_flush_publishes(void **state)
{
	struct sheaf__pool p;
	struct kmodel k = { 0 };
	uint16_t bid, used[256];
	uint32_t res;

	assert_int_equal(sheaf__pool_init(&p, 16, 8, 0), 0);
	assert_int_equal(kernel_recv(&k, &p, 16 * 8, true, &bid, &res, used), 8);
	assert_int_equal(sheaf__bundle_map(&p, bid, res, true, used), 8);
	assert_int_equal(sheaf__pool_free(&p), 0);
	sheaf__pool_put(&p, 5);
	sheaf__pool_put(&p, 2);
	assert_int_equal(kernel_recv(&k, &p, 1, true, &bid, &res, used), -1);
	sheaf__pool_flush(&p);
	assert_int_equal(sheaf__pool_free(&p), 2);
	assert_int_equal(kernel_recv(&k, &p, 20, true, &bid, &res, used), 2);
	assert_int_equal(bid, 5);
	assert_int_equal(used[1], 2);
	sheaf__pool_fini(&p);
}

/* A bundle of res bytes maps to ceil(res/size) buffers: full, then partial. */
static void bundle_lengths(void **state)
{
	struct sheaf__pool p;
	struct kmodel k = { 0 };
	uint16_t bid, used[256], bids[256];
	uint32_t res;

	assert_int_equal(sheaf__pool_init(&p, 32, 16, 0), 0);
	assert_int_equal(kernel_recv(&k, &p, 80, true, &bid, &res, used), 3);
	assert_int_equal(res, 80);
	assert_int_equal(sheaf__bundle_map(&p, bid, res, true, bids), 3);
	assert_int_equal(p.len[bids[0]], 32);
	assert_int_equal(p.len[bids[1]], 32);
	assert_int_equal(p.len[bids[2]], 16);
	assert_int_equal(sheaf__pool_free(&p), 13);
	sheaf__pool_fini(&p);
}

/* A completion whose first id is not at the expected head is refused. */
static void mismatch_is_caught(void **state)
{
	struct sheaf__pool p;
	struct kmodel k = { 0 };
	uint16_t bid, used[256], bids[256];
	uint32_t res;

	assert_int_equal(sheaf__pool_init(&p, 32, 16, 0), 0);
	k.head = 1; /* the kernel skipped an entry we did not see consumed */
	assert_int_equal(kernel_recv(&k, &p, 32, true, &bid, &res, used), 1);
	assert_int_equal(sheaf__bundle_map(&p, bid, res, true, bids), -EPROTO);
	assert_int_equal(p.mismatches, 1);
	assert_int_equal(sheaf__pool_free(&p), 16); /* nothing taken */
	assert_int_equal(sheaf__bundle_resync(&p, bid), 1);
	assert_int_equal(sheaf__bundle_map(&p, bid, res, true, bids), 1);
	sheaf__pool_fini(&p);
}

/*
 * The randomized model: several "connections" receive bundles of random
 * sizes from one shared ring; the application holds buffers for a random
 * while and recycles them in random order. Every mapped buffer must be the
 * one the kernel filled, bytes must match, and at the end every buffer is
 * back in the pool.
 */
static void randomized_model(void **state)
{
	for (unsigned seed = 1; seed <= 40; seed++) {
		struct sheaf__pool p;
		struct kmodel k = { 0 };
		uint32_t size = 1u << (seed % 7), nbufs = 1u << (4 + seed % 8);
		uint16_t *held = calloc(nbufs, sizeof(*held));
		uint32_t nheld = 0;
		uint64_t in = 0, out = 0;
		bool bundle = seed % 3 != 0;

		srand(seed);
		assert_int_equal(sheaf__pool_init(&p, size, nbufs, 0), 0);
		for (unsigned step = 0; step < 20000; step++) {
			uint16_t bid, used[256], bids[256];
			uint32_t res, want = 1 + (uint32_t)rand() % (size * 40);
			int n = kernel_recv(&k, &p, want, bundle, &bid, &res, used);

			if (n > 0) {
				int m = sheaf__bundle_map(&p, bid, res, bundle, bids);
				uint32_t sum = 0;

				assert_int_equal(m, n);
				for (int i = 0; i < n; i++) {
					assert_int_equal(bids[i], used[i]);
					sum += p.len[bids[i]];
					held[nheld++] = bids[i];
				}
				assert_int_equal(sum, res);
				in += res;
			}
			/* recycle a random number, in random order */
			for (uint32_t r = (uint32_t)rand() % (nheld + 1); r; r--) {
				uint32_t i = (uint32_t)rand() % nheld;

				out += p.len[held[i]];
				sheaf__pool_put(&p, held[i]);
				held[i] = held[--nheld];
			}
			if (rand() % 4 == 0)
				sheaf__pool_flush(&p);
			assert_int_equal(sheaf__pool_free(&p) + nheld, nbufs);
		}
		while (nheld) {
			out += p.len[held[nheld - 1]];
			sheaf__pool_put(&p, held[--nheld]);
		}
		sheaf__pool_flush(&p);
		assert_int_equal(in, out);
		assert_int_equal(sheaf__pool_free(&p), nbufs);
		assert_int_equal(p.mismatches, 0);
		assert_int_equal(k.head, p.head);
		sheaf__pool_fini(&p);
		free(held);
	}
}

/* What a multishot recvmsg leaves in a buffer: its header, then payload. */
static uint32_t kernel_recvmsg(struct sheaf__pool *p, uint16_t bid, const char *data)
{
	struct io_uring_recvmsg_out o = { .payloadlen = (uint32_t)strlen(data) };
	uint8_t *buf = sheaf__pool_buf(p, bid);

	memcpy(buf, &o, sizeof(o));
	memcpy(buf + sizeof(o), data, o.payloadlen);
	return (uint32_t)sizeof(o) + o.payloadlen;
}

/*
 * recvmsg mapping: by the id whatever the ring order; the buffer's data is
 * the payload where it lies (what a send then points at); an empty payload
 * (EOF) and a header that does not describe res give the buffer back.
 */
static void recvmsg_mapping(void **state)
{
	struct sheaf__pool pools[1];
	struct sheaf__pool *p = &pools[0];
	uint16_t bids[1];
	uint32_t res;

	assert_int_equal(sheaf__pool_init(p, 64, 8, 0), 0);
	res = kernel_recvmsg(p, 5, "hello, world");
	assert_int_equal(sheaf__recvmsg_map(p, 5, res, true, bids), 1); /* not the head's id */
	assert_int_equal(bids[0], 5);
	assert_int_equal(sheaf__pool_free(p), 7);
	assert_int_equal(*sheaf__buf_len(pools, SHEAF__GID(0, 5)), 12);
	assert_ptr_equal(sheaf__buf(pools, SHEAF__GID(0, 5)),
			 sheaf__pool_buf(p, 5) + sizeof(struct io_uring_recvmsg_out));
	assert_memory_equal(sheaf__buf(pools, SHEAF__GID(0, 5)), "hello, world", 12);

	res = kernel_recvmsg(p, 2, ""); /* EOF */
	assert_int_equal(sheaf__recvmsg_map(p, 2, res, true, bids), 0);
	assert_int_equal(sheaf__pool_free(p), 7);

	res = kernel_recvmsg(p, 3, "abc");
	assert_int_equal(sheaf__recvmsg_map(p, 3, res + 1, true, bids), -EPROTO);
	assert_int_equal(sheaf__recvmsg_map(p, 3, 8, true, bids), -EPROTO); /* < header */
	assert_int_equal(sheaf__recvmsg_map(p, 9, 20, true, bids), -EPROTO); /* no such id */
	assert_int_equal(sheaf__pool_free(p), 7);

	/* a single shot: no header, the data from the start of the buffer */
	memcpy(sheaf__pool_buf(p, 4), "xyz", 3);
	assert_int_equal(sheaf__recvmsg_map(p, 4, 3, false, bids), 1);
	assert_ptr_equal(sheaf__buf(pools, SHEAF__GID(0, 4)), sheaf__pool_buf(p, 4));
	assert_int_equal(*sheaf__buf_len(pools, SHEAF__GID(0, 4)), 3);
	assert_int_equal(sheaf__pool_free(p), 6);

	/* a buffer used with a header and then by a single shot starts at 0 */
	sheaf__pool_put(p, 5);
	assert_int_equal(sheaf__recvmsg_map(p, 5, 3, false, bids), 1);
	assert_ptr_equal(sheaf__buf(pools, SHEAF__GID(0, 5)), sheaf__pool_buf(p, 5));
	sheaf__pool_fini(p);
}

static void user_data_codec(void **state)
{
	uint64_t u = sheaf__ud(SHEAF__OP_SEND, 0xabcdef, 0xdeadbeef);

	assert_int_equal(sheaf__ud_op(u), SHEAF__OP_SEND);
	assert_int_equal(sheaf__ud_slot(u), 0xabcdef);
	assert_int_equal(sheaf__ud_gen(u), 0xdeadbeef);
}

static void bad_kernels(void **state)
{
	int a, b, c;

	assert_int_equal(sheaf__kernel_version("6.14.8-foo", &a, &b, &c), 0);
	assert_int_equal(a * 10000 + b * 100 + c, 61408);
	assert_true(sheaf__bundle_bad_kernel(6, 13, 11));
	assert_true(sheaf__bundle_bad_kernel(6, 14, 8));
	assert_false(sheaf__bundle_bad_kernel(6, 14, 9));
	assert_false(sheaf__bundle_bad_kernel(6, 13, 10));
	assert_false(sheaf__bundle_bad_kernel(6, 18, 0));
	assert_int_equal(sheaf__kernel_version("garbage", &a, &b, &c), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pool_starts_full),
		cmocka_unit_test(pool_rejects_bad_sizes),
		cmocka_unit_test(put_then_flush_publishes),
		cmocka_unit_test(bundle_lengths),
		cmocka_unit_test(mismatch_is_caught),
		cmocka_unit_test(randomized_model),
		cmocka_unit_test(recvmsg_mapping),
		cmocka_unit_test(user_data_codec),
		cmocka_unit_test(bad_kernels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
