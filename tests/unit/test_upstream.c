/* The proxy's upstream choice and passive health (src/cli/upstream.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "upstream.h"

static struct upstreams ups;

static void setup_n(unsigned n, enum balance b)
{
	memset(&ups, 0, sizeof(ups));
	ups.n = n;
	ups.balance = b;
	assert_int_equal(ups_init(&ups), 0);
}

/* One client's first pick: returns the index (the attempt stays counted in
 * conns until end_attempt). */
static int pick_one(uint32_t hash, double now, struct up_pick *pk)
{
	uint32_t tried = 0;

	return ups_pick(&ups, &tried, hash, now, pk);
}

/* A client whose connect to its pick fails with err at `now`. */
static int fail_one(double now, int err)
{
	struct up_pick pk;
	int i = pick_one(0, now, &pk);

	ups_result(&ups, &pk, err, now);
	ups_end(&ups, &pk);
	return i;
}

static void balance_names(void **state)
{
	assert_int_equal(balance_parse("roundrobin"), BALANCE_ROUNDROBIN);
	assert_int_equal(balance_parse("leastconn"), BALANCE_LEASTCONN);
	assert_int_equal(balance_parse("source"), BALANCE_SOURCE);
	assert_int_equal(balance_parse("random"), -EINVAL);
	assert_string_equal(balance_name(BALANCE_LEASTCONN), "leastconn");
}

static void roundrobin_spreads_evenly(void **state)
{
	unsigned got[3] = { 0 };
	struct up_pick pk;

	setup_n(3, BALANCE_ROUNDROBIN);
	for (int k = 0; k < 30; k++) {
		int i = pick_one(0, 0, &pk);

		assert_int_equal(i, k % 3);
		got[i]++;
		ups_result(&ups, &pk, 0, 0);
		ups_end(&ups, &pk);
	}
	assert_int_equal(got[0], 10);
	assert_int_equal(got[2], 10);
	ups_free(&ups);
}

static void leastconn_prefers_fewest(void **state)
{
	struct up_pick held[4], pk;

	setup_n(2, BALANCE_LEASTCONN);
	for (int k = 0; k < 4; k++)
		pick_one(0, 0, &held[k]);         /* 0 1 0 1: ties in turn */
	assert_int_equal(held[0].idx, 0);
	assert_int_equal(held[1].idx, 1);
	ups_end(&ups, &held[1]);
	ups_end(&ups, &held[3]);                  /* upstream 0: 2, upstream 1: 0 */
	assert_int_equal(pick_one(0, 0, &pk), 1);
	assert_int_equal(pick_one(0, 0, &pk), 1);
	assert_int_equal(ups.u[1].conns, 2);
	assert_int_equal(ups.u[0].conns, 2);
	ups_free(&ups);
}

static void source_is_stable_over_the_up_set(void **state)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(1) };
	struct sockaddr_in6 m = { .sin6_family = AF_INET6, .sin6_port = htons(2) };
	struct up_pick pk;
	unsigned used = 0;
	uint32_t h;

	inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
	inet_pton(AF_INET6, "::ffff:127.0.0.2", &m.sin6_addr);
	h = addr_hash((struct sockaddr *)&a);
	assert_int_equal(h, addr_hash((struct sockaddr *)&m)); /* v4-mapped: same */
	a.sin_port = htons(9);
	assert_int_equal(h, addr_hash((struct sockaddr *)&a));  /* port ignored */
	setup_n(3, BALANCE_SOURCE);
	for (int k = 0; k < 5; k++)
		assert_int_equal(pick_one(h, 0, &pk), (int)(h % 3));
	for (unsigned last = 2; last < 10; last++) {            /* several addresses */
		inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
		((uint8_t *)&a.sin_addr)[3] = (uint8_t)last;
		used |= 1u << pick_one(addr_hash((struct sockaddr *)&a), 0, &pk);
	}
	assert_true(used != 1 && used != 2 && used != 4);
	ups_free(&ups);
}

static void failed_upstream_paused_then_tried_by_one(void **state)
{
	struct up_pick trial, other;

	setup_n(2, BALANCE_ROUNDROBIN);
	assert_int_equal(fail_one(10.0, -ECONNREFUSED), 0);      /* 0 goes down */
	assert_true(ups_is_down(&ups, 0));
	for (int k = 0; k < 5; k++)                              /* paused for 1 s */
		assert_int_equal(fail_one(10.5, 0), 1);
	assert_int_equal(pick_one(0, 11.1, &trial), 0);          /* the trial */
	assert_true(trial.trial);
	assert_int_equal(pick_one(0, 11.1, &other), 1);          /* one trial at once */
	ups_result(&ups, &trial, -ETIMEDOUT, 11.2);              /* fails again: 2 s */
	ups_end(&ups, &trial);
	assert_int_equal(pick_one(0, 13.1, &other), 1);
	assert_int_equal(pick_one(0, 13.3, &trial), 0);
	ups_result(&ups, &trial, 0, 13.3);                       /* up again */
	assert_false(ups_is_down(&ups, 0));
	assert_int_equal(ups.u[0].fails, 0);
	ups_free(&ups);
}

static void pause_doubles_up_to_the_cap(void **state)
{
	double now = 0, want[] = { 1, 2, 4, 8, 16, 30, 30 };

	setup_n(1, BALANCE_ROUNDROBIN);
	for (unsigned k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
		assert_int_equal(fail_one(now, -ECONNREFUSED), 0);
		assert_true(ups.u[0].retry_at - now > want[k] - 0.001);
		assert_true(ups.u[0].retry_at - now < want[k] + 0.001);
		now = ups.u[0].retry_at;
	}
	ups_free(&ups);
}

static void in_flight_failures_do_not_double(void **state)
{
	struct up_pick a, b;

	setup_n(2, BALANCE_LEASTCONN);
	pick_one(0, 0, &a);
	pick_one(0, 0, &b);
	assert_int_equal(a.idx, 0);
	assert_int_equal(b.idx, 1);
	pick_one(0, 0, &b);                      /* 0 again: two attempts pending */
	assert_int_equal(b.idx, 0);
	ups_result(&ups, &a, -ECONNREFUSED, 5);
	ups_result(&ups, &b, -ECONNREFUSED, 5.1); /* started while up: no news */
	assert_int_equal(ups.u[0].fails, 1);
	ups_result(&ups, &b, -ECONNREFUSED, 5.1); /* no pending verdict: ignored */
	assert_int_equal(ups.u[0].fails, 1);
	ups_free(&ups);
}

static void local_errors_are_no_verdict(void **state)
{
	setup_n(1, BALANCE_ROUNDROBIN);
	fail_one(0, -EMFILE);
	fail_one(0, -EADDRNOTAVAIL);
	assert_false(ups_is_down(&ups, 0));
	ups_free(&ups);
}

static void all_down_least_recently_failed_first(void **state)
{
	double t[] = { 10.0, 10.2, 10.4 };
	struct up_pick pk;
	uint32_t tried = 0;

	setup_n(3, BALANCE_ROUNDROBIN);
	ups.next = 1;                                   /* one client fails 1, 2, 0 */
	for (int k = 0; k < 3; k++) {
		assert_int_equal(ups_pick(&ups, &tried, 0, t[k], &pk), (k + 1) % 3);
		ups_result(&ups, &pk, -ECONNREFUSED, t[k]);
		ups_end(&ups, &pk);
	}
	assert_int_equal(ups_pick(&ups, &tried, 0, 10.5, &pk), -1);
	assert_int_equal(ups_down_count(&ups), 3);
	tried = 0;                                      /* the next client, all paused */
	assert_int_equal(ups_pick(&ups, &tried, 0, 10.5, &pk), 1);
	assert_false(pk.trial);
	assert_true(pk.while_down);
	assert_int_equal(ups_pick(&ups, &tried, 0, 10.5, &pk), 2);
	assert_int_equal(ups_pick(&ups, &tried, 0, 10.5, &pk), 0);
	assert_int_equal(ups_pick(&ups, &tried, 0, 10.5, &pk), -1);
	assert_int_equal(tried, 7);
	ups_free(&ups);
}

static void check_results(void **state)
{
	setup_n(1, BALANCE_ROUNDROBIN);
	ups_check_result(&ups, 0, false, -ECONNREFUSED, 1);
	assert_true(ups_is_down(&ups, 0));
	ups_check_result(&ups, 0, true, -ECONNREFUSED, 1.2);
	assert_int_equal(ups.u[0].fails, 2);
	ups_check_result(&ups, 0, true, 0, 1.4);
	assert_false(ups_is_down(&ups, 0));
	ups_free(&ups);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(balance_names),
		cmocka_unit_test(roundrobin_spreads_evenly),
		cmocka_unit_test(leastconn_prefers_fewest),
		cmocka_unit_test(source_is_stable_over_the_up_set),
		cmocka_unit_test(failed_upstream_paused_then_tried_by_one),
		cmocka_unit_test(pause_doubles_up_to_the_cap),
		cmocka_unit_test(in_flight_failures_do_not_double),
		cmocka_unit_test(local_errors_are_no_verdict),
		cmocka_unit_test(all_down_least_recently_failed_first),
		cmocka_unit_test(check_results),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
