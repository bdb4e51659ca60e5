/* Deterministic, verifiable streams for source and sink. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char magic[8] = { 'S', 'H', 'E', 'A', 'F', 'S', 'T', '1' };

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int pattern_init(struct pattern *p, uint64_t seed)
{
	uint64_t x = seed;

	p->seed = seed;
	p->bytes = malloc(2 * (size_t)PATTERN_LEN);
	if (!p->bytes)
		return -ENOMEM;
	for (uint32_t i = 0; i < PATTERN_LEN; i += 8) {
		uint64_t r = splitmix(&x);

		for (uint32_t k = 0; k < 8 && i + k < PATTERN_LEN; k++)
			p->bytes[i + k] = (uint8_t)(r >> (8 * k));
	}
	memcpy(p->bytes + PATTERN_LEN, p->bytes, PATTERN_LEN);
	return 0;
}

void pattern_free(struct pattern *p)
{
	free(p->bytes);
	p->bytes = NULL;
}

uint32_t stream_start(uint64_t seed, uint32_t id)
{
	uint64_t x = seed ^ ((uint64_t)id << 32 | id);

	return (uint32_t)(splitmix(&x) % PATTERN_LEN);
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void stream_header(uint8_t out[STREAM_HDR], uint32_t id, uint64_t seed, uint64_t len)
{
	memcpy(out, magic, 8);
	put64(out + 8, id);
	put64(out + 16, seed);
	put64(out + 24, len);
}

static void fail(struct stream_check *s, uint64_t off, const char *why)
{
	s->failed = true;
	s->fail_off = off;
	snprintf(s->why, sizeof(s->why), "%s", why);
}

static size_t feed_header(struct stream_check *s, const uint8_t *d, size_t len,
			  const struct pattern *(*pat_for)(uint64_t, void *), void *arg)
{
	size_t n = STREAM_HDR - s->hdr_got;

	if (n > len)
		n = len;
	memcpy(s->hdr + s->hdr_got, d, n);
	s->hdr_got += (uint32_t)n;
	if (s->hdr_got < STREAM_HDR)
		return n;
	if (memcmp(s->hdr, magic, 8) || get64(s->hdr + 8) > 0xffffffffu) {
		s->bad_hdr = true;
		fail(s, 0, "bad stream header");
		return n;
	}
	s->id = (uint32_t)get64(s->hdr + 8);
	s->seed = get64(s->hdr + 16);
	s->len = get64(s->hdr + 24);
	s->start = stream_start(s->seed, s->id);
	s->pat = pat_for(s->seed, arg);
	if (!s->pat)
		fail(s, 0, "no pattern for this seed");
	return n;
}

static void report_mismatch(struct stream_check *s, const uint8_t *d,
			    const uint8_t *want, size_t n)
{
	char why[96];

	for (size_t i = 0; i < n; i++) {
		if (d[i] != want[i]) {
			snprintf(why, sizeof(why), "corrupt (expected 0x%02x, got 0x%02x)",
				 want[i], d[i]);
			fail(s, s->off + i, why);
			return;
		}
	}
}

void stream_feed(struct stream_check *s, const uint8_t *d, size_t len,
		 const struct pattern *(*pat_for)(uint64_t, void *), void *arg)
{
	if (s->hdr_got < STREAM_HDR) {
		size_t n = feed_header(s, d, len, pat_for, arg);

		d += n;
		len -= n;
	}
	while (len && !s->failed) {
		size_t pos = (size_t)((s->start + s->off) % PATTERN_LEN);
		size_t n = len < PATTERN_LEN ? len : PATTERN_LEN;

		/* the bytes up to the end first: how the bytes were split into
		 * reads must not change which fault is named */
		if (s->off == s->len) {
			fail(s, s->len, "extra bytes after the stream's end");
			return;
		}
		if (n > s->len - s->off)
			n = (size_t)(s->len - s->off);
		if (memcmp(d, s->pat->bytes + pos, n)) {
			report_mismatch(s, d, s->pat->bytes + pos, n);
			return;
		}
		s->off += n;
		d += n;
		len -= n;
	}
}

void stream_end(struct stream_check *s)
{
	if (s->failed)
		return;
	if (s->hdr_got < STREAM_HDR)
		fail(s, 0, "ended inside the header");
	else if (s->off < s->len)
		fail(s, s->off, "truncated (bytes lost)");
}
