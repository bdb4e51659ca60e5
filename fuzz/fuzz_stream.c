/*
 * libFuzzer harness for the stream checker (src/cli/stream.c: the header
 * and stream_feed), what sink --verify and source --echo run on every byte
 * received. By hand:
 *
 *   make fuzz-bin && build-fuzz/fuzz_stream -max_total_time=60 fuzz/corpus/stream
 *
 * Input: byte 0 picks the mode, byte 1 the read size (1 to 255 bytes, times
 * 1 + length / 4096; 0: all at once), the rest is:
 *  - mode even: the bytes received, as they are (headers of any kind);
 *  - mode odd: a recipe for a real stream of seed 1: id (u32 LE), length
 *    (u32 LE, modulo 128 KiB + 1, or a pattern period and 64 KiB when
 *    mode & 10 is 10), with mode & 4 the length actually sent (u32 LE,
 *    modulo length + 4097: cut short or extended), then edits of the
 *    payload: (offset u32 LE, xor byte) pairs.
 * Checks, besides memory errors and undefined behaviour:
 *  - the verdict (failed, offset, reason, header fields) does not depend on
 *    how the bytes were split into chunks;
 *  - an intact stream is one whose header is right and whose payload is
 *    exactly its length of the pattern;
 *  - for a recipe, the verdict is the one the edits call for: the first
 *    changed byte ("corrupt"), else bytes past the end ("extra"), else a
 *    cut ("truncated"), else intact.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define SEED 1

static struct pattern pat;

static const struct pattern *pat_for(uint64_t seed, void *arg)
{
	return seed == SEED ? &pat : NULL;
}

static void check(const uint8_t *d, size_t n, size_t chunk, struct stream_check *k)
{
	memset(k, 0, sizeof(*k));
	for (size_t off = 0; off < n; off += chunk)
		stream_feed(k, d + off, n - off < chunk ? n - off : chunk, pat_for, NULL);
	stream_end(k);
}

static void same_verdict(const struct stream_check *a, const struct stream_check *b)
{
	CHECK(a->failed == b->failed && a->bad_hdr == b->bad_hdr);
	if (a->failed)
		CHECK(a->fail_off == b->fail_off && !strcmp(a->why, b->why));
	else
		CHECK(a->id == b->id && a->seed == b->seed && a->len == b->len && a->off == b->off);
}

static uint64_t get(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

/* Builds the stream a recipe describes and the verdict it must get. */
static uint8_t *recipe(const uint8_t *r, size_t rlen, unsigned mode, size_t *n,
		       struct stream_check *want)
{
	uint32_t id = (uint32_t)get(r, 4);
	uint64_t cap = (mode & 10) == 10 ? PATTERN_LEN + (64u << 10) : 128u << 10;
	uint64_t len = get(r + 4, 4) % (cap + 1), total = len, first = UINT64_MAX;
	uint32_t start = stream_start(SEED, id);
	uint8_t *s;

	r += 8, rlen -= 8;
	if ((mode & 4) && rlen >= 4) {
		total = get(r, 4) % (len + 4096 + 1); /* cut or extended */
		r += 4, rlen -= 4;
	}
	s = malloc(STREAM_HDR + total + 1);
	if (!s)
		return NULL;
	stream_header(s, id, SEED, len);
	for (uint64_t i = 0; i < total; i += PATTERN_LEN) /* pat.bytes holds it twice */
		memcpy(s + STREAM_HDR + i, pat.bytes + (start + i) % PATTERN_LEN,
		       total - i < PATTERN_LEN ? total - i : PATTERN_LEN);
	for (const uint8_t *e = r; e + 5 <= r + rlen && total; e += 5)
		s[STREAM_HDR + get(e, 4) % total] ^= e[4];
	/* the first byte changed, looked at after all edits: two edits of one
	 * byte may undo each other */
	for (const uint8_t *e = r; e + 5 <= r + rlen && total; e += 5) {
		uint64_t at = get(e, 4) % total;

		if (at < len && at < first &&
		    s[STREAM_HDR + at] != pat.bytes[(start + at) % PATTERN_LEN])
			first = at;
	}
	memset(want, 0, sizeof(*want));
	want->failed = true;
	if (first != UINT64_MAX)
		want->fail_off = first, memcpy(want->why, "corrupt", 8);
	else if (total > len)
		want->fail_off = len, memcpy(want->why, "extra", 6);
	else if (total < len)
		want->fail_off = total, memcpy(want->why, "truncated", 10);
	else
		want->failed = false, want->id = id, want->len = want->off = len;
	*n = STREAM_HDR + total;
	return s;
}

static void check_recipe(const struct stream_check *k, const struct stream_check *want)
{
	CHECK(k->failed == want->failed && !k->bad_hdr);
	if (want->failed)
		CHECK(k->fail_off == want->fail_off &&
		      !strncmp(k->why, want->why, strlen(want->why)));
	else
		CHECK(k->id == want->id && k->seed == SEED && k->len == want->len &&
		      k->off == want->off);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stream_check whole, chunked, want;
	const uint8_t *d = data + 2;
	uint8_t *built = NULL;
	size_t n = size - 2, chunk;

	if (!pat.bytes && pattern_init(&pat, SEED))
		abort();
	if (size < 2)
		return 0;
	if ((data[0] & 1) && n >= 8) {
		built = recipe(d, n, data[0], &n, &want);
		if (!built)
			return 0;
		d = built;
	}
	/* small reads for small streams, not a million calls for a big one */
	chunk = data[1] ? data[1] * (1 + n / 4096) : n ? n : 1;
	check(d, n, n ? n : 1, &whole);
	check(d, n, chunk, &chunked);
	same_verdict(&whole, &chunked);
	if (!whole.failed)
		CHECK(whole.hdr_got == STREAM_HDR && STREAM_HDR + whole.len == n &&
		      whole.off == whole.len && whole.seed == SEED);
	if (built)
		check_recipe(&whole, &want);
	free(built);
	return 0;
}
