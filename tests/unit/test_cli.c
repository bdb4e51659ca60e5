/* Parsers and the stream checker of the sheaf command. */
#include <errno.h>
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

static void sizes(void **state)
{
	uint64_t v;

	assert_int_equal(parse_size("123", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(parse_size("4K", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("16M", &v), 0);
	assert_int_equal(v, 16u << 20);
	assert_int_equal(parse_size("1G", &v), 0);
	assert_int_equal(v, 1u << 30);
	assert_int_equal(parse_size("64KiB", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(parse_size("64kB", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(parse_size("100B", &v), 0);
	assert_int_equal(v, 100);
	assert_int_equal(parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_size("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(parse_size("", &v), -EINVAL);
	assert_int_equal(parse_size("-1", &v), -EINVAL);
	assert_int_equal(parse_size("12Q", &v), -EINVAL);
	assert_int_equal(parse_size("18446744073709551616", &v), -ERANGE);
	assert_int_equal(parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(parse_size("17179869184G", &v), -ERANGE);
	assert_int_equal(parse_size("16777216T", &v), -EINVAL);
}

/* Only digits and one known suffix: no sign, space, base prefix or junk. */
static void sizes_strict(void **state)
{
	static const char *bad[] = {
		"+4K", " 4K", "4K ", "\t4", "4\n", "4 K", "0x10", "4Ki", "4Kb", "4KK",
		"4KiBB", "K", "B", "iB", "1.5M", "1e3", "-0", "4B4", "４",
	};
	uint64_t v = 7;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int err = parse_size(bad[i], &v);

		if (err != -EINVAL)
			fail_msg("parse_size(\"%s\") = %d, want -EINVAL", bad[i], err);
	}
	assert_int_equal(v, 7); /* untouched on error */
}

/* Counts and milliseconds: digits only (no suffix), within the range. */
static void numbers(void **state)
{
	static const char *bad[] = {
		"", "+80", " 80", "80 ", "\t80", "-0", "0x10", "1K", "1e3", "8O", "80\n",
	};
	uint64_t v;
	uint32_t u;

	assert_int_equal(parse_u32("0", &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(parse_u32("4294967295", &u), 0);
	assert_true(u == UINT32_MAX);
	assert_int_equal(parse_u32("007", &u), 0);
	assert_int_equal(u, 7);
	assert_int_equal(parse_u32("4294967296", &u), -ERANGE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int err = parse_u32(bad[i], &u);

		if (err != -EINVAL)
			fail_msg("parse_u32(\"%s\") = %d, want -EINVAL", bad[i], err);
	}
	assert_int_equal(parse_num("5", 1, 9, &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(parse_num("0", 1, 9, &v), -ERANGE);
	assert_int_equal(parse_num("10", 1, 9, &v), -ERANGE);
	assert_int_equal(parse_num("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(parse_num("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(parse_num("99999999999999999999x", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(parse_size("99999999999999999999Q", &v), -EINVAL);
}

static void addresses(void **state)
{
	struct addr a;

	assert_int_equal(parse_addr("127.0.0.1:9000", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 9000);
	assert_int_equal(parse_addr("[::1]:80", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&a.ss)->sin6_port), 80);
	assert_int_equal(parse_addr("localhost:0", &a), 0);
	assert_int_equal(parse_addr("127.0.0.1:65535", &a), 0);
	assert_int_equal(parse_addr("127.0.0.1", &a), -EINVAL);
	assert_int_equal(parse_addr("127.0.0.1:70000", &a), -ERANGE);
	assert_int_equal(parse_addr("127.0.0.1:65536", &a), -ERANGE);
	assert_int_equal(parse_addr("127.0.0.1:", &a), -EINVAL);
	assert_int_equal(parse_addr(":80", &a), -EINVAL);
	assert_int_equal(parse_addr("nonsense", &a), -EINVAL);
	assert_int_equal(parse_addr("::1:80", &a), -EINVAL);
	assert_int_equal(parse_addr("[]:80", &a), -EINVAL);
	assert_int_equal(parse_addr("[::1]80", &a), -EINVAL);
	assert_int_equal(parse_addr("nosuch.invalid:80", &a), -ENOENT);
}

/* A sign, a space, a base prefix or trailing junk never passes for a port. */
static void addresses_strict(void **state)
{
	static const char *bad[] = {
		"127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:80 ", "127.0.0.1:-0",
		"127.0.0.1:0x50", "127.0.0.1:\t80", "127.0.0.1:80\n", "127.0.0.1:8O",
		" 127.0.0.1:80", "127.0.0.1 :80", "127.0.0.1\t:80", "[::1]:+80",
		"[::1]: 80", "[ ::1]:80", "127.0.0.1:1e2", "127.0.0.1:80:80",
	};
	struct addr a;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int err = parse_addr(bad[i], &a);

		if (err != -EINVAL)
			fail_msg("parse_addr(\"%s\") = %d, want -EINVAL", bad[i], err);
	}
}

static struct pattern pat;

static const struct pattern *pat_for(uint64_t seed, void *arg)
{
	return seed == pat.seed ? &pat : NULL;
}

/* Builds stream `id` of `len` bytes: header + pattern. */
static uint8_t *make_stream(uint32_t id, uint64_t len)
{
	uint8_t *s = malloc(STREAM_HDR + len);
	uint32_t start = stream_start(pat.seed, id);

	stream_header(s, id, pat.seed, len);
	for (uint64_t i = 0; i < len; i++)
		s[STREAM_HDR + i] = pat.bytes[(start + i) % PATTERN_LEN];
	return s;
}

static void check_chunks(const uint8_t *s, size_t n, size_t chunk, struct stream_check *k)
{
	memset(k, 0, sizeof(*k));
	for (size_t off = 0; off < n; off += chunk)
		stream_feed(k, s + off, n - off < chunk ? n - off : chunk, pat_for, NULL);
	stream_end(k);
}

static void stream_intact_any_chunking(void **state)
{
	uint8_t *s = make_stream(7, 100000);
	struct stream_check k;
	size_t chunks[] = { 1, 7, 32, 4096, 100032 };

	for (size_t i = 0; i < 5; i++) {
		check_chunks(s, STREAM_HDR + 100000, chunks[i], &k);
		assert_false(k.failed);
		assert_int_equal(k.id, 7);
		assert_int_equal(k.off, 100000);
	}
	free(s);
}

static void stream_detects_damage(void **state)
{
	uint64_t len = 10000;
	uint8_t *s = make_stream(3, len), *t;
	struct stream_check k;
	size_t n = STREAM_HDR + len;

	/* corruption */
	s[STREAM_HDR + 5000] ^= 1;
	check_chunks(s, n, 333, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, 5000);
	s[STREAM_HDR + 5000] ^= 1;
	/* loss: truncated */
	check_chunks(s, n - 10, 333, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, len - 10);
	/* reordering: swap two 32-byte chunks */
	t = malloc(n);
	memcpy(t, s, n);
	memcpy(t + STREAM_HDR + 64, s + STREAM_HDR + 96, 32);
	memcpy(t + STREAM_HDR + 96, s + STREAM_HDR + 64, 32);
	check_chunks(t, n, 4096, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, 64);
	/* duplication: a chunk sent twice shifts everything after it */
	memcpy(t, s, STREAM_HDR + 128);
	memcpy(t + STREAM_HDR + 128, s + STREAM_HDR + 96, n - STREAM_HDR - 128);
	check_chunks(t, n, 4096, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, 128);
	/* another stream's bytes */
	free(t);
	t = make_stream(4, len);
	memcpy(t, s, STREAM_HDR);
	check_chunks(t, n, 4096, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, 0);
	/* extra bytes */
	free(t);
	t = malloc(n + 1);
	memcpy(t, s, n);
	t[n] = 0;
	check_chunks(t, n + 1, 4096, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, len);
	/* corrupt, and extra bytes in the same read: the corruption is named,
	 * as it is when the reads end at the stream's end (found by fuzz_stream) */
	t[STREAM_HDR + 77] ^= 1;
	check_chunks(t, n + 1, n + 1, &k);
	assert_true(k.failed);
	assert_int_equal(k.fail_off, 77);
	check_chunks(t, n + 1, 100, &k);
	assert_int_equal(k.fail_off, 77);
	t[STREAM_HDR + 77] ^= 1;
	assert_false(k.bad_hdr);
	/* bad header */
	t[0] = 'X';
	check_chunks(t, n, 4096, &k);
	assert_true(k.failed);
	assert_true(k.bad_hdr);
	free(t);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sizes),
		cmocka_unit_test(sizes_strict),
		cmocka_unit_test(numbers),
		cmocka_unit_test(addresses),
		cmocka_unit_test(addresses_strict),
		cmocka_unit_test(stream_intact_any_chunking),
		cmocka_unit_test(stream_detects_damage),
	};
	int ret;

	if (pattern_init(&pat, 42))
		return 1;
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	pattern_free(&pat);
	return ret;
}
