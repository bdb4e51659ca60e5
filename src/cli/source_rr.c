/*
 * sheaf source --rr: request/response transactions, each request checked
 * byte for byte in its echo. Closed loop: every connection starts its next
 * request when the answer is in. Open loop (--rate): requests are due at
 * fixed times whatever the answers do, and latency runs from the time a
 * request was due, not from when it could be sent (as wrk2 measures: a
 * stalled server cannot hide the requests it held up).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "source.h"

#define DRAIN_NS 2000000000ull /* rate: wait this long for the window's answers */

static bool windowed(const struct source *s) { return s->o.warmup >= 0; }

/* Any window of the pattern, also one longer than PATTERN_LEN (--rr 1M). */
static size_t pattern_diff(const struct pattern *p, uint64_t off, const uint8_t *d, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t n = len - done < PATTERN_LEN ? len - done : PATTERN_LEN;
		const uint8_t *want = p->bytes + (off + done) % PATTERN_LEN;

		if (memcmp(want, d + done, n)) {
			while (want[0] == d[done])
				want++, done++;
			return done;
		}
		done += n;
	}
	return len; /* equal */
}

/* An rr connection failed its check: name it and the transaction, stop it. */
static void rr_fail(struct source *s, struct src_conn *c, const char *why, uint64_t at)
{
	if (!s->failed++)
		say("source", "connection %u, transaction %llu: %s (byte %llu of %u)", c->id,
		    (unsigned long long)c->txn, why, (unsigned long long)at, s->o.rr);
	conn_done(s, c, 0);
}

/* Sends what is left of the current request, as far as the socket takes it. */
static int rr_send(struct source *s, struct src_conn *c)
{
	while (c->rr_sent < s->o.rr) {
		uint32_t n = s->o.rr - c->rr_sent;
		ssize_t w;

		if (n > s->o.write_size)
			n = s->o.write_size; /* <= PATTERN_LEN: one contiguous window */
		w = send(c->fd, s->pat.bytes + (c->rr_off + c->rr_sent) % PATTERN_LEN, n,
			 MSG_NOSIGNAL);
		if (w < 0)
			return errno == EAGAIN ? 0 : -errno;
		c->rr_sent += (uint32_t)w;
	}
	return 0;
}

/* Open loop: when request i (of all, connection i % conns) is due. */
static uint64_t due_ns(const struct source *s, uint64_t i)
{
	return s->win.connected_at + (uint64_t)((double)i * 1e9 / s->o.rate);
}

/*
 * Starts the next transaction, `t` being its start (open loop: when it was
 * due), or closes the connection when none are left.
 */
static int rr_start(struct source *s, struct src_conn *c, uint64_t t)
{
	if (!s->rr_left) {
		conn_done(s, c, 0);
		return 0;
	}
	s->rr_left--;
	/* a fresh window per (connection, transaction), so the bytes vary */
	c->rr_off = stream_start(s->o.seed + c->txn, c->id);
	c->rr_sent = c->rr_got = 0;
	c->t_start = t;
	c->busy = true;
	c->k_next++;
	return rr_send(s, c);
}

/* Level-triggered: EPOLLOUT only while part of a request waits to be sent. */
static void rr_events(struct source *s, struct src_conn *c)
{
	uint32_t want = EPOLLIN | (c->busy && c->rr_sent < s->o.rr ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.ptr = c };

	if (want != c->events && !epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev))
		c->events = want;
}

/* Starts c's next transaction if it may (closed loop: now; open loop: if
 * its next request is due), and keeps epoll's interest in step. */
static void rr_next(struct source *s, struct src_conn *c)
{
	uint64_t i = c->k_next * s->o.conns + c->id;
	int ret = 0;

	if (c->done || c->busy)
		return;
	if (!s->o.rate)
		ret = rr_start(s, c, mono_ns());
	else if (s->win.connected_at && i < s->next_due)
		ret = rr_start(s, c, due_ns(s, i));
	if (ret)
		conn_done(s, c, ret);
	else if (!c->done)
		rr_events(s, c);
}

static bool in_window(const struct source *s, uint64_t t)
{
	return t >= s->win.start && (!s->win.end || t < s->win.end);
}

static void rr_record(struct source *s, struct src_conn *c)
{
	/* closed loop: the transactions that end in the window; open loop:
	 * the requests due in it (throughput still counts answers in it) */
	bool counted = !windowed(s) || (s->win.opened && !s->win.closed);
	bool sample = s->o.rate ? s->win.start && in_window(s, c->t_start) : counted;

	if (sample && s->nlat < s->cap_lat)
		s->lat[s->nlat++] = c->t_end - c->t_start;
	s->txns += counted;
	s->txns_all++;
	c->txn++;
	c->busy = false;
}

/* Checks one chunk of echo against the request; 0, or rr_fail()ed. */
static int rr_check(struct source *s, struct src_conn *c, size_t r)
{
	size_t at;

	if (c->rr_got + r > c->rr_sent) {
		rr_fail(s, c, "echo longer than the request sent so far", c->rr_sent);
		return -1;
	}
	at = pattern_diff(&s->pat, (uint64_t)c->rr_off + c->rr_got, s->rbuf, r);
	if (at < r) {
		rr_fail(s, c, "echo differs from the request", c->rr_got + at);
		return -1;
	}
	c->rr_got += (uint32_t)r;
	return 0;
}

static int rr_recv(struct source *s, struct src_conn *c)
{
	while (!c->done) {
		ssize_t r = recv(c->fd, s->rbuf, 1 << 20, 0);

		if (r < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (r == 0) {
			rr_fail(s, c, "peer closed the connection", c->rr_got);
			return 0;
		}
		if (!c->busy) {
			rr_fail(s, c, "bytes while no request was out", 0);
			return 0;
		}
		if (c->rr_got + (uint64_t)r == s->o.rr)
			c->t_end = mono_ns(); /* before the check: latency is the network's */
		if (rr_check(s, c, (size_t)r))
			return 0;
		if (c->rr_got == s->o.rr) {
			rr_record(s, c);
			rr_next(s, c);
		}
	}
	return 0;
}

void rr_event(struct source *s, struct epoll_event *ev)
{
	struct src_conn *c = ev->data.ptr;
	int ret = 0;

	if (c->done)
		return;
	if (!c->connected) {
		if (!check_connected(s, c))
			return;
		rr_next(s, c); /* closed loop: starts at once */
		if (c->done)
			return;
	} else if ((ev->events & EPOLLOUT) && c->busy) {
		ret = rr_send(s, c);
	}
	if (!ret && !c->done && (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		ret = rr_recv(s, c);
	if (ret)
		conn_done(s, c, ret);
	else if (!c->done)
		rr_events(s, c);
}

/* --duration is up: close every connection; unfinished transactions don't count. */
static void stop_all(struct source *s)
{
	for (uint32_t i = 0; i < s->o.conns; i++)
		conn_done(s, &s->c[i], 0);
}

/* Open loop: starts every request that fell due, on its connection if that
 * is free (a busy one starts it when its answer is in: rr_next). */
static uint64_t schedule_due(struct source *s, uint64_t now)
{
	uint64_t t;

	while ((t = due_ns(s, s->next_due)) <= now) {
		struct src_conn *c = &s->c[s->next_due % s->o.conns];
		uint64_t k = s->next_due / s->o.conns;

		s->next_due++;
		if (!c->busy && c->k_next == k)
			rr_next(s, c);
	}
	return t - now;
}

static void mark(const struct source *s, const char *what)
{
	if (s->o.marks) {
		say("source", "%s", what);
		fflush(stderr);
	}
}

/* Has every request due in the window been answered? */
static bool window_answered(const struct source *s)
{
	for (uint32_t i = 0; i < s->o.conns; i++) {
		const struct src_conn *c = &s->c[i];
		uint64_t k = c->k_next - c->busy; /* the oldest not answered */

		if (!c->done && due_ns(s, k * s->o.conns + c->id) < s->win.end)
			return false;
	}
	return true;
}

/* Opens and closes the window; true when the run is over. */
static bool window_edges(struct source *s, uint64_t now)
{
	struct rr_window *w = &s->win;

	if (!w->connected_at && s->connected == s->o.conns) {
		w->connected_at = now;
		w->start = now + (uint64_t)(s->o.warmup * 1e9);
		w->end = s->o.duration ? w->start + (uint64_t)(s->o.duration * 1e9) : 0;
	}
	if (!windowed(s) || !w->start)
		return false;
	if (!w->opened && now >= w->start) {
		w->opened = true;
		mark(s, "measuring");
	}
	if (w->opened && !w->closed && w->end && now >= w->end) {
		w->closed = true;
		w->drain_end = now + DRAIN_NS;
		mark(s, "measured");
	}
	if (!w->closed)
		return false;
	return !s->o.rate || now >= w->drain_end || window_answered(s);
}

static uint64_t earliest(uint64_t a, uint64_t b) { return a < b ? a : b; }

uint64_t rr_tick(struct source *s, bool *stop)
{
	uint64_t now = mono_ns(), wait = UINT64_MAX;
	const struct rr_window *w = &s->win;

	*stop = (s->deadline && now >= s->deadline) || window_edges(s, now) ||
		(windowed(s) && s->failed);
	if (*stop && windowed(s) && !w->closed && !s->failed++)
		say("source", "the measurement window did not end (connections missing?)");
	if (*stop) {
		if (s->o.rate)
			rr_finish(s);
		stop_all(s);
		return 0;
	}
	if (s->o.rate && w->connected_at)
		wait = schedule_due(s, now);
	if (s->deadline)
		wait = earliest(wait, s->deadline - now);
	if (w->start && !w->opened)
		wait = earliest(wait, w->start - now);
	if (w->end && !w->closed)
		wait = earliest(wait, w->end > now ? w->end - now : 0);
	if (w->closed)
		wait = earliest(wait, w->drain_end - now);
	return wait;
}

/*
 * The end of an open-loop run: requests due in the window and not answered
 * (in flight, or waiting behind an unanswered one) count with the time they
 * have waited so far: a lower bound, and `late` says how many.
 */
void rr_finish(struct source *s)
{
	uint64_t now = mono_ns();

	if (!s->win.start)
		return;
	for (uint32_t i = 0; i < s->o.conns; i++) {
		struct src_conn *c = &s->c[i];

		if (c->done)
			continue;
		for (uint64_t k = c->k_next - c->busy;; k++) {
			uint64_t t = due_ns(s, k * s->o.conns + c->id);

			if (t >= s->win.end || t > now)
				break;
			if (t < s->win.start)
				continue;
			if (s->nlat < s->cap_lat)
				s->lat[s->nlat++] = now - t;
			s->late++;
		}
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* p50, p99, p99.9 in us, nearest rank, from a sorted copy of the samples. */
static void percentiles(const struct source *s, double us[3])
{
	static const uint64_t permille[3] = { 500, 990, 999 };
	uint64_t *v = s->nlat ? malloc(s->nlat * sizeof(*v)) : NULL;

	us[0] = us[1] = us[2] = 0;
	if (!v)
		return;
	memcpy(v, s->lat, s->nlat * sizeof(*v));
	qsort(v, s->nlat, sizeof(*v), cmp_u64);
	for (int k = 0; k < 3; k++) {
		uint64_t rank = (s->nlat * permille[k] + 999) / 1000;

		us[k] = (double)v[rank ? rank - 1 : 0] / 1e3;
	}
	free(v);
}

void rr_report(const struct source *s, double secs, int ret)
{
	double us[3], tps;

	if (windowed(s) && s->win.opened)
		secs = ((s->win.closed ? s->win.end : mono_ns()) - s->win.start) / 1e9;
	tps = secs > 0 ? (double)s->txns / secs : 0;
	percentiles(s, us);
	if (s->o.json)
		printf("{\"workload\":\"%s\",\"size\":%u,\"conns\":%u,\"transactions\":%llu,"
		       "\"transactions_all\":%llu,\"seconds\":%.6f,\"tps\":%.1f,\"rate\":%.1f,"
		       "\"samples\":%zu,\"late\":%llu,\"p50_us\":%.3f,\"p99_us\":%.3f,"
		       "\"p999_us\":%.3f,\"ok\":%s}\n", s->o.rate ? "rate" : "rr", s->o.rr,
		       s->o.conns, (unsigned long long)s->txns, (unsigned long long)s->txns_all,
		       secs, tps, s->o.rate, s->nlat, (unsigned long long)s->late, us[0], us[1],
		       us[2], ret ? "false" : "true");
	else
		printf("sheaf source: %s %u B, %u conns, %llu transactions in %.3f s (%.0f tps), "
		       "latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us%s\n",
		       s->o.rate ? "rate" : "rr", s->o.rr, s->o.conns, (unsigned long long)s->txns,
		       secs, tps, us[0], us[1], us[2], ret ? " (FAILED)" : "");
}

/* rr: how many transactions --bytes makes, and room for their latencies. */
int rr_init(struct source *s)
{
	if (!s->o.rr)
		return 0;
	s->rr_left = s->o.bytes / s->o.rr + (s->o.bytes % s->o.rr != 0);
	s->cap_lat = s->rr_left < RR_MAX_SAMPLES ? s->rr_left : RR_MAX_SAMPLES;
	if (!s->cap_lat)
		return 0;
	s->lat = malloc(s->cap_lat * sizeof(*s->lat));
	return s->lat ? 0 : -ENOMEM;
}
