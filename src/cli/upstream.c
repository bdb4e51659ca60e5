/* The proxy's upstreams: balance algorithms and passive health (upstream.h). */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "upstream.h"

static const char *const balance_names[] = {
	[BALANCE_ROUNDROBIN] = "roundrobin",
	[BALANCE_LEASTCONN] = "leastconn",
	[BALANCE_SOURCE] = "source",
};

int balance_parse(const char *name)
{
	for (unsigned i = 0; i < sizeof(balance_names) / sizeof(balance_names[0]); i++)
		if (!strcmp(name, balance_names[i]))
			return (int)i;
	return -EINVAL;
}

const char *balance_name(enum balance b) { return balance_names[b]; }

int ups_init(struct upstreams *u)
{
	for (unsigned i = 0; i < u->n; i++) {
		u->u[i].conns = u->u[i].fails = 0;
		u->u[i].trial = false;
		u->u[i].attempts = u->u[i].failures = 0;
	}
	u->next = 0;
	atomic_init(&u->no_upstream, 0);
	return -pthread_mutex_init(&u->lock, NULL);
}

void ups_free(struct upstreams *u) { pthread_mutex_destroy(&u->lock); }

static bool tried_already(uint32_t tried, unsigned i) { return tried >> i & 1; }

/* A down upstream whose pause is over and that no client is trying yet: the
 * one that failed longest ago. */
static int pick_trial(const struct upstreams *u, uint32_t tried, double now)
{
	int best = -1;

	for (unsigned i = 0; i < u->n; i++) {
		const struct upstream *up = &u->u[i];

		if (tried_already(tried, i) || !up->fails || up->trial || up->retry_at > now)
			continue;
		if (best < 0 || up->failed_at < u->u[best].failed_at)
			best = (int)i;
	}
	return best;
}

/* roundrobin: the first up one from the round-robin position on;
 * leastconn: the up one with the fewest connections, ties in that order. */
static int pick_in_turn(struct upstreams *u, uint32_t tried, bool least)
{
	int best = -1;

	for (unsigned k = 0; k < u->n; k++) {
		unsigned i = (u->next + k) % u->n;

		if (tried_already(tried, i) || u->u[i].fails)
			continue;
		if (best < 0 || (least && u->u[i].conns < u->u[best].conns))
			best = (int)i;
		if (!least)
			break;
	}
	if (best >= 0)
		u->next = (unsigned)best + 1;
	return best;
}

/* source: hash modulo the number of up ones, over them in their order; the
 * same address gets the same upstream while that set does not change. */
static int pick_by_hash(const struct upstreams *u, uint32_t tried, uint32_t hash)
{
	unsigned up[MAX_UPSTREAMS], n = 0;

	for (unsigned i = 0; i < u->n; i++)
		if (!tried_already(tried, i) && !u->u[i].fails)
			up[n++] = i;
	return n ? (int)up[hash % n] : -1;
}

/* Every untried one is down (and paused): the least recently failed. */
static int pick_oldest_failure(const struct upstreams *u, uint32_t tried)
{
	int best = -1;

	for (unsigned i = 0; i < u->n; i++)
		if (!tried_already(tried, i) &&
		    (best < 0 || u->u[i].failed_at < u->u[best].failed_at))
			best = (int)i;
	return best;
}

int ups_pick(struct upstreams *u, uint32_t *tried, uint32_t hash, double now,
	     struct up_pick *pk)
{
	int i;

	pthread_mutex_lock(&u->lock);
	i = pick_trial(u, *tried, now);
	pk->trial = i >= 0;
	if (i < 0)
		i = u->balance == BALANCE_SOURCE ? pick_by_hash(u, *tried, hash) :
			pick_in_turn(u, *tried, u->balance == BALANCE_LEASTCONN);
	if (i < 0)
		i = pick_oldest_failure(u, *tried);
	if (i >= 0) {
		struct upstream *up = &u->u[i];

		*tried |= 1u << i;
		up->conns++;
		up->attempts++;
		up->trial |= pk->trial;
		pk->while_down = up->fails > 0;
		pk->pending = true;
	}
	pk->idx = i;
	pthread_mutex_unlock(&u->lock);
	return i;
}

/* Failures that say nothing about the upstream: this host ran out of
 * something, or the attempt was cancelled. */
static bool local_error(int err)
{
	switch (-err) {
	case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM: case EADDRNOTAVAIL:
	case EAGAIN: case ECANCELED: case EINTR:
		return true;
	}
	return false;
}

static void mark_up(struct upstreams *u, struct upstream *up)
{
	if (up->fails && u->log)
		fprintf(u->log, "sheaf proxy: upstream %s up\n", up->a.text);
	up->fails = 0;
}

static void mark_failed(struct upstreams *u, struct upstream *up, bool while_down, int err,
			double now)
{
	unsigned ms;

	if (up->fails && !while_down)
		return; /* started before it went down: no news */
	if (!up->fails && u->log)
		fprintf(u->log, "sheaf proxy: upstream %s down: %s\n", up->a.text, strerror(-err));
	if (up->fails < 64)
		up->fails++;
	ms = up->fails > 6 ? COOLDOWN_MAX_MS : COOLDOWN_MIN_MS << (up->fails - 1);
	if (ms > COOLDOWN_MAX_MS)
		ms = COOLDOWN_MAX_MS;
	up->failed_at = now;
	up->retry_at = now + ms / 1000.0;
}

static void verdict(struct upstreams *u, unsigned i, bool while_down, int err, double now)
{
	if (!err)
		mark_up(u, &u->u[i]);
	else if (!local_error(err))
		mark_failed(u, &u->u[i], while_down, err, now);
}

void ups_result(struct upstreams *u, struct up_pick *pk, int err, double now)
{
	if (pk->idx < 0 || !pk->pending)
		return;
	pthread_mutex_lock(&u->lock);
	if (pk->trial)
		u->u[pk->idx].trial = false;
	if (err)
		u->u[pk->idx].failures++;
	verdict(u, (unsigned)pk->idx, pk->while_down, err, now);
	pthread_mutex_unlock(&u->lock);
	pk->pending = pk->trial = false;
}

void ups_end(struct upstreams *u, struct up_pick *pk)
{
	if (pk->idx < 0)
		return;
	pthread_mutex_lock(&u->lock);
	if (pk->pending && pk->trial)
		u->u[pk->idx].trial = false;
	u->u[pk->idx].conns--;
	pthread_mutex_unlock(&u->lock);
	pk->idx = -1;
	pk->pending = pk->trial = false;
}

void ups_check_result(struct upstreams *u, unsigned i, bool was_down, int err, double now)
{
	pthread_mutex_lock(&u->lock);
	verdict(u, i, was_down, err, now);
	pthread_mutex_unlock(&u->lock);
}

bool ups_is_down(struct upstreams *u, unsigned i)
{
	bool down;

	pthread_mutex_lock(&u->lock);
	down = u->u[i].fails > 0;
	pthread_mutex_unlock(&u->lock);
	return down;
}

void ups_stat(struct upstreams *u, unsigned i, struct ups_stat *out)
{
	pthread_mutex_lock(&u->lock);
	out->conns = u->u[i].conns;
	out->down = u->u[i].fails > 0;
	out->attempts = u->u[i].attempts;
	out->failures = u->u[i].failures;
	pthread_mutex_unlock(&u->lock);
}

unsigned ups_down_count(struct upstreams *u)
{
	unsigned n = 0;

	for (unsigned i = 0; i < u->n; i++)
		n += ups_is_down(u, i);
	return n;
}

uint32_t addr_hash(const struct sockaddr *sa)
{
	static const uint8_t v4mapped[12] = { [10] = 0xff, [11] = 0xff };
	const uint8_t *b;
	size_t n;
	uint32_t h = 2166136261u; /* FNV-1a */

	if (sa->sa_family == AF_INET) {
		b = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		n = 4;
	} else if (sa->sa_family == AF_INET6) {
		b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		n = 16;
		if (!memcmp(b, v4mapped, sizeof(v4mapped)))
			b += 12, n = 4;
	} else {
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	/* FNV's low bits follow the last byte closely: mix before the modulo */
	h ^= h >> 16;
	h *= 0x45d9f3bu;
	return h ^ (h >> 16);
}
