/*
 * libFuzzer harness for pp_parse (src/cli/proxy_proto.c). Seeds live in
 * fuzz/corpus/proxy_proto/, a dictionary in fuzz/proxy_proto.dict:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/cli -Iinclude \
 *       -D_GNU_SOURCE -o fuzz_proxy_proto fuzz/fuzz_proxy_proto.c src/cli/proxy_proto.c
 *   ./fuzz_proxy_proto -dict=fuzz/proxy_proto.dict -max_total_time=60 \
 *       fuzz/corpus/proxy_proto
 *
 * Besides memory errors, it checks the contract in proxy_proto.h:
 *  - the answer is 0, -EINVAL, -E2BIG, or a length within the input and
 *    PP_MAX_LEN; never 0 once PP_MAX_LEN bytes are here;
 *  - one byte less never changes a final answer (an error stays that error,
 *    a header keeps its length and addresses): what is read later cannot
 *    change what was decided;
 *  - an accepted header parses the same on its own, every piece of it asks
 *    for more, and rebuilt with pp_build_v1 and pp_build_v2 it gives back
 *    the same addresses.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static int parse(const uint8_t *buf, size_t len, struct pp_addrs *a)
{
	memset(a, 0xA5, sizeof(*a)); /* written only on success: make stale bytes show */
	return pp_parse(buf, len, a);
}

static int same(const struct pp_addrs *a, const struct pp_addrs *b)
{
	return a->family == b->family && !memcmp(&a->src, &b->src, sizeof(a->src)) &&
	       !memcmp(&a->dst, &b->dst, sizeof(a->dst));
}

/* Rebuilds a with both builders; each must parse back to a. */
static void rebuild(const struct pp_addrs *a)
{
	const struct sockaddr *src = (const struct sockaddr *)&a->src;
	const struct sockaddr *dst = (const struct sockaddr *)&a->dst;
	uint8_t out[PP_V1_MAX];
	struct pp_addrs b;
	int n;

	if (a->family == AF_UNSPEC)
		src = dst = NULL;
	n = pp_build_v1(src, dst, (char *)out, sizeof(out));
	CHECK(n > 0 && parse(out, (size_t)n, &b) == n && same(a, &b));
	n = pp_build_v2(src, dst, out, sizeof(out));
	CHECK(n > 0 && parse(out, (size_t)n, &b) == n && same(a, &b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pp_addrs a, b;
	int ret = parse(data, size, &a), prev;

	CHECK(ret == 0 || ret == -EINVAL || ret == -E2BIG ||
	      (ret > 0 && (size_t)ret <= size && ret <= PP_MAX_LEN));
	CHECK(ret != 0 || size < PP_MAX_LEN);
	if (size) {
		prev = parse(data, size - 1, &b);
		CHECK(prev == 0 || prev == ret);
		CHECK(prev <= 0 || same(&a, &b));
	}
	if (ret <= 0)
		return 0;
	CHECK(parse(data, (size_t)ret, &b) == ret && same(&a, &b));
	for (size_t k = 0; k < (size_t)ret; k++)
		CHECK(parse(data, k, &b) == 0);
	rebuild(&a);
	return 0;
}
