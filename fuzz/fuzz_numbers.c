/*
 * libFuzzer harness for the number parsers of the command line (src/cli/
 * args.c: parse_num, parse_u32, parse_size, parse_list, size_opt/num_opt;
 * bench_env.c: bench_parse_rate). The input, cut at its first NUL, is one
 * argument. Built and run by `make fuzz` (see fuzz/run.sh); by hand:
 *
 *   make fuzz-bin && build-fuzz/fuzz_numbers -dict=fuzz/numbers.dict \
 *       -max_total_time=60 fuzz/corpus/numbers
 *
 * Besides memory errors and undefined behaviour, it checks each answer
 * against a model written here from the rules in cli.h (digits only, one
 * known suffix, the range), and that an error leaves *out alone.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "bench.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define UNTOUCHED 0x5A5A5A5A5A5A5A5Aull

/* The model of digits: -EINVAL (no digits), else 0 or -ERANGE; *end after them. */
static int model_digits(const char *s, unsigned __int128 *v, const char **end)
{
	bool over = false;

	*v = 0;
	for (*end = s; **end >= '0' && **end <= '9'; (*end)++) {
		*v = *v * 10 + (unsigned)(**end - '0');
		if (*v > UINT64_MAX) {
			over = true;
			*v = (unsigned __int128)UINT64_MAX + 1;
		}
	}
	if (*end == s)
		return -EINVAL;
	return over ? -ERANGE : 0;
}

static void check_num(const char *s, uint64_t min, uint64_t max)
{
	unsigned __int128 v;
	const char *end;
	int want = model_digits(s, &v, &end);
	uint64_t got = UNTOUCHED;
	int err = parse_num(s, min, max, &got);

	if (want == -EINVAL || *end)
		want = -EINVAL;
	else if (want || v < min || v > max)
		want = -ERANGE;
	CHECK(err == want);
	CHECK(err ? got == UNTOUCHED : got == (uint64_t)v);
}

static int model_shift(const char *p)
{
	static const char *ok[] = { "", "B" };
	static const char *unit[] = { "K", "k", "M", "m", "G", "g" };

	for (int i = 0; i < 2; i++)
		if (!strcmp(p, ok[i]))
			return 0;
	for (int i = 0; i < 6; i++)
		if (*p == unit[i][0] && (!strcmp(p + 1, "") || !strcmp(p + 1, "B") ||
					 !strcmp(p + 1, "iB")))
			return 10 * (1 + i / 2);
	return -1;
}

static void check_size(const char *s)
{
	unsigned __int128 v;
	const char *end;
	int want = model_digits(s, &v, &end), shift = model_shift(end);
	uint64_t got = UNTOUCHED;
	int err = parse_size(s, &got);

	if (want == -EINVAL || shift < 0)
		want = -EINVAL;
	else if (want || (v << shift) > UINT64_MAX)
		want = -ERANGE;
	CHECK(err == want);
	CHECK(err ? got == UNTOUCHED : got == (uint64_t)(v << shift));
	/* the printing wrappers: the same verdict, and a message that formats */
	CHECK(!size_opt("fuzz", "size", s, 1, 1u << 20, &got) ==
	      (!err && got >= 1 && got <= (1u << 20)));
}

/* parse_list: the non-empty comma-separated fields, in order. */
static void check_list(const char *s)
{
	char **items;
	unsigned n, k = 0;
	const char *p = s;
	int err = parse_list(s, &items, &n);

	while (*p) {
		size_t len = strcspn(p, ",");

		if (len) {
			CHECK(k < n && strlen(items[k]) == len && !memcmp(items[k], p, len));
			k++;
		}
		p += len + (p[len] == ',');
	}
	CHECK(k == n && err == (n ? 0 : -EINVAL));
	free_list(items, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t ranges[][2] = {
		{ 0, UINT64_MAX }, { 0, UINT32_MAX }, { 0, 65535 }, { 1, 9990 },
		{ 2, 32768 }, { 1, 64 }, { 0, 86400000 }, { 5, 5 },
	};
	size_t len = strnlen((const char *)data, size);
	char *s = malloc(len + 1); /* exactly: ASan sees any read past the NUL */
	uint64_t u = UNTOUCHED;
	uint32_t u32 = 7;
	double mbps = -1;

	if (!s)
		return 0;
	memcpy(s, data, len);
	s[len] = 0;
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
		check_num(s, ranges[i][0], ranges[i][1]);
	CHECK(parse_u32(s, &u32) == parse_num(s, 0, UINT32_MAX, &u));
	CHECK(num_opt("fuzz", "num", s, 1, 9990, &u) == (parse_num(s, 1, 9990, &u) ? EXIT_USAGE : 0));
	check_size(s);
	check_list(s);
	if (!bench_parse_rate(s, &mbps))
		CHECK(s[0] >= '0' && s[0] <= '9' && isfinite(mbps) && mbps > 0);
	free(s);
	return 0;
}
