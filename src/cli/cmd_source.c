/* sheaf source: opens connections and sends (verifiable) streams. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
	"usage: sheaf source --connect HOST:PORT [options]\n"
	"Opens connections and sends a stream on each, then half-closes; or, with --rr,\n"
	"runs request/response transactions on each and reports their latency.\n"
	"  --connect HOST:PORT  where to send\n"
	"  --conns N            connections (default 1)\n"
	"  --bytes N            bytes in all, split evenly over the connections (default 64M)\n"
	"  --write-size N       bytes per write (default 64K)\n"
	"  --verify             start each stream with a header naming it, for sink --verify\n"
	"  --echo               read the stream back (sink --echo) and check it byte for byte\n"
	"  --seed N             pattern seed (default 1)\n"
	"  --rr SIZE            request/response (1 to 1M bytes): each connection sends SIZE\n"
	"                       bytes, waits for exactly SIZE back (sink --echo), checks them\n"
	"                       and repeats; --bytes counts request bytes over all connections,\n"
	"                       rounded up to whole transactions; no stream header is sent,\n"
	"                       even with --verify: the echo check is the verification\n"
	"  --duration SECONDS   with --rr: stop after this long (may be fractional) if --bytes\n"
	"                       were not all echoed by then\n"
	"  --json               one JSON result line on stdout\n"
	"Signals: SIGUSR1 prints a counters line on stderr and goes on; SIGHUP is logged\n"
	"and ignored; SIGUSR2 and SIGPIPE are ignored.\n"
	"Exit status: 0 when everything was sent (and echoed intact), 1 otherwise, 2 on bad usage.\n";

struct source_opts {
	struct addr to;
	bool have_to, verify, echo, json;
	uint32_t conns, write_size;
	uint64_t bytes, seed;
	uint32_t rr;     /* request size; 0: stream mode */
	double duration; /* seconds; 0: no limit */
};

/* Latency samples kept for the percentiles (32 MiB); later ones are not. */
#define RR_MAX_SAMPLES (4u << 20)

struct src_conn {
	int fd;
	uint32_t id;
	uint64_t len, sent, total; /* total: header + payload */
	uint32_t start;
	uint8_t hdr[STREAM_HDR];
	bool connected, wr_done, done;
	struct stream_check echo;
	uint64_t echoed;
	uint32_t events;      /* epoll mask registered */
	uint64_t txn;         /* rr: transactions completed */
	uint32_t rr_off;      /* rr: pattern offset of the current request */
	uint32_t rr_sent, rr_got;
	uint64_t t_start, t_end; /* rr: ns, first byte sent, last byte received */
};

struct source {
	struct source_opts o;
	struct pattern pat;
	struct src_conn *c;
	int ep;
	uint32_t open;
	int failed;
	uint8_t *rbuf;
	double deadline;      /* now_sec() at which --duration ends; 0: none */
	uint64_t rr_left;     /* transactions not yet started */
	uint64_t txns;        /* transactions completed, all connections */
	uint64_t *lat;        /* latencies in ns */
	size_t nlat, cap_lat;
	sigset_t wait_mask;   /* during epoll_pwait: SIGHUP and SIGUSR1 come in */
};

/* A positive, finite number of seconds: "2", "0.25", "1e-3". */
static int parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	/* strtod alone would take " 1", "-1", "inf", "nan" and "0x1p3" */
	if (!((*s >= '0' && *s <= '9') || *s == '.') || s[strspn(s, "0123456789.eE+-")])
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v <= 0)
		return -EINVAL;
	*out = v;
	return 0;
}

/* --rr and --duration: 0 or EXIT_USAGE (printed). */
static int parse_rr(struct source_opts *o, int c, const char *val)
{
	uint64_t v;

	if (c == 'r') {
		if (size_opt("source", "rr", val, 1, 1u << 20, &v))
			return EXIT_USAGE;
		o->rr = (uint32_t)v;
	} else if (parse_seconds(val, &o->duration)) {
		say("source", "--duration %s: must be a positive number of seconds", val);
		return EXIT_USAGE;
	}
	return 0;
}

static int parse(int argc, char **argv, struct source_opts *o)
{
	static const struct option opts[] = {
		{ "connect", required_argument, 0, 'c' }, { "conns", required_argument, 0, 'n' },
		{ "bytes", required_argument, 0, 'b' },   { "write-size", required_argument, 0, 'w' },
		{ "verify", no_argument, 0, 'v' },        { "echo", no_argument, 0, 'e' },
		{ "seed", required_argument, 0, 's' },    { "json", no_argument, 0, 'j' },
		{ "rr", required_argument, 0, 'r' },      { "duration", required_argument, 0, 'd' },
		{ "help", no_argument, 0, 'h' },          { 0 }
	};
	uint64_t v;
	int c, idx;

	while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		switch (c) {
		case 'c':
			if (addr_opt("source", "connect", optarg, &o->to))
				return EXIT_USAGE;
			o->have_to = true;
			break;
		case 'n':
			if (u32_opt("source", "conns", optarg, 1, 9990, &o->conns))
				return EXIT_USAGE;
			break;
		case 'b':
			if (size_opt("source", "bytes", optarg, 0, UINT64_MAX, &o->bytes))
				return EXIT_USAGE;
			break;
		case 'w':
			if (size_opt("source", "write-size", optarg, 1, PATTERN_LEN, &v))
				return EXIT_USAGE;
			o->write_size = (uint32_t)v;
			break;
		case 's':
			if (num_opt("source", "seed", optarg, 0, UINT64_MAX, &o->seed))
				return EXIT_USAGE;
			break;
		case 'r':
		case 'd':
			if (parse_rr(o, c, optarg))
				return EXIT_USAGE;
			break;
		case 'v': o->verify = true; break;
		case 'e': o->echo = true; break;
		case 'j': o->json = true; break;
		case 'h': return ARGS_HELP;
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc || !o->have_to) {
		say("source", optind < argc ? "unexpected argument '%s'" : "--connect is required%s",
		    optind < argc ? argv[optind] : "");
		return EXIT_USAGE;
	}
	if (o->duration && !o->rr) {
		say("source", "--duration needs --rr (a cut-short stream would not verify)");
		return EXIT_USAGE;
	}
	return 0;
}

static int open_conn(struct source *s, struct src_conn *c)
{
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = c };
	int one = 1;

	c->fd = socket(s->o.to.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (const struct sockaddr *)&s->o.to.ss, s->o.to.len) &&
	    errno != EINPROGRESS)
		return -errno;
	if (!s->o.echo || s->o.rr)
		ev.events = EPOLLOUT; /* rr: adds EPOLLIN once connected */
	c->events = ev.events;
	if (epoll_ctl(s->ep, EPOLL_CTL_ADD, c->fd, &ev))
		return -errno;
	return 0;
}

static void conn_done(struct source *s, struct src_conn *c, int err)
{
	if (c->done)
		return;
	c->done = true;
	if (err && !s->failed++)
		say("source", "connection %u to %s: %s", c->id, s->o.to.text, strerror(-err));
	close(c->fd);
	s->open--;
}

/* Writes the next chunk: header first, then the pattern from its offset. */
static int write_some(struct source *s, struct src_conn *c)
{
	while (c->sent < c->total) {
		const uint8_t *p;
		size_t n;
		ssize_t w;

		if (c->sent < (s->o.verify ? STREAM_HDR : 0)) {
			p = c->hdr + c->sent;
			n = STREAM_HDR - c->sent;
		} else {
			uint64_t off = c->sent - (s->o.verify ? STREAM_HDR : 0);

			p = s->pat.bytes + (c->start + off) % PATTERN_LEN;
			n = s->o.write_size;
			if (n > c->total - c->sent)
				n = c->total - c->sent;
		}
		w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0)
			return errno == EAGAIN ? 0 : -errno;
		c->sent += (uint64_t)w;
	}
	if (!c->wr_done) {
		c->wr_done = true;
		shutdown(c->fd, SHUT_WR);
	}
	return 0;
}

static const struct pattern *own_pattern(uint64_t seed, void *arg)
{
	struct source *s = arg;

	return seed == s->pat.seed ? &s->pat : NULL;
}

/* Reads echoed bytes and checks them as a stream of their own. */
static int read_echo(struct source *s, struct src_conn *c)
{
	for (;;) {
		ssize_t r = recv(c->fd, s->rbuf, 1 << 20, 0);

		if (r < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (r == 0) {
			if (s->o.verify)
				stream_end(&c->echo);
			if (c->echoed != c->total || c->echo.failed) {
				if (!c->echo.failed)
					snprintf(c->echo.why, sizeof(c->echo.why), "echo truncated");
				say("source", "connection %u: echoed stream %s at offset %llu", c->id,
				    c->echo.why, (unsigned long long)(c->echo.failed ?
				    c->echo.fail_off : c->echoed));
				s->failed++;
			}
			conn_done(s, c, 0);
			return 0;
		}
		c->echoed += (uint64_t)r;
		if (s->o.verify)
			stream_feed(&c->echo, s->rbuf, (size_t)r, own_pattern, s);
	}
}

/* On the first event: did the nonblocking connect work? */
static bool check_connected(struct source *s, struct src_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (c->connected)
		return true;
	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err) {
		conn_done(s, c, -err);
		return false;
	}
	c->connected = true;
	return true;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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

/* Starts the next transaction, or closes the connection when none are left. */
static int rr_start(struct source *s, struct src_conn *c)
{
	if (!s->rr_left) {
		conn_done(s, c, 0);
		return 0;
	}
	s->rr_left--;
	/* a fresh window per (connection, transaction), so the bytes vary */
	c->rr_off = stream_start(s->o.seed + c->txn, c->id);
	c->rr_sent = c->rr_got = 0;
	c->t_start = mono_ns();
	return rr_send(s, c);
}

static void rr_record(struct source *s, struct src_conn *c)
{
	if (s->nlat < s->cap_lat)
		s->lat[s->nlat++] = c->t_end - c->t_start;
	s->txns++;
	c->txn++;
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
		if (c->rr_got + (uint64_t)r == s->o.rr)
			c->t_end = mono_ns(); /* before the check: latency is the network's */
		if (rr_check(s, c, (size_t)r))
			return 0;
		if (c->rr_got == s->o.rr) {
			int ret;

			rr_record(s, c);
			if ((ret = rr_start(s, c)))
				return ret;
		}
	}
	return 0;
}

/* Level-triggered: EPOLLOUT only while part of a request waits to be sent. */
static void rr_events(struct source *s, struct src_conn *c)
{
	uint32_t want = EPOLLIN | (c->rr_sent < s->o.rr ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.ptr = c };

	if (want != c->events && !epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev))
		c->events = want;
}

static void rr_event(struct source *s, struct epoll_event *ev)
{
	struct src_conn *c = ev->data.ptr;
	int ret = 0;

	if (c->done)
		return;
	if (!c->connected) {
		if (!check_connected(s, c))
			return;
		ret = rr_start(s, c);
	} else if (ev->events & EPOLLOUT) {
		ret = rr_send(s, c);
	}
	if (!ret && !c->done && (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		ret = rr_recv(s, c);
	if (ret)
		conn_done(s, c, ret);
	else if (!c->done)
		rr_events(s, c);
}

static int event(struct source *s, struct epoll_event *ev)
{
	struct src_conn *c = ev->data.ptr;
	int ret = 0;

	if (c->done || !check_connected(s, c))
		return 0;
	if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		ret = write_some(s, c);
	if (!ret && s->o.echo && (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		ret = read_echo(s, c);
	if (ret)
		conn_done(s, c, ret);
	else if (c->wr_done && !s->o.echo)
		conn_done(s, c, 0);
	else if (c->wr_done && !c->done) {
		struct epoll_event in = { .events = EPOLLIN, .data.ptr = c };

		epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &in);
	}
	return 0;
}

static int open_all(struct source *s)
{
	for (uint32_t i = 0; i < s->o.conns; i++) {
		struct src_conn *c = &s->c[i];
		int ret;

		c->id = i;
		c->len = s->o.bytes / s->o.conns + (i < s->o.bytes % s->o.conns);
		c->total = c->len + (s->o.verify ? STREAM_HDR : 0);
		c->start = s->o.verify ? stream_start(s->o.seed, i) : (uint32_t)(i * 7919u);
		stream_header(c->hdr, i, s->o.seed, c->len);
		if ((ret = open_conn(s, c))) {
			say("source", "--connect %s: %s", s->o.to.text, strerror(-ret));
			return 1;
		}
		s->open++;
	}
	return 0;
}

/* The epoll timeout: the stall limit, or less to wake up at the deadline. */
static int wait_ms(const struct source *s)
{
	double left;

	if (!s->deadline)
		return 30000;
	left = ceil((s->deadline - now_sec()) * 1000);
	return left < 0 ? 0 : left > 30000 ? 30000 : (int)left;
}

/* --duration is up: close every connection; unfinished transactions don't count. */
static void stop_all(struct source *s)
{
	for (uint32_t i = 0; i < s->o.conns; i++)
		conn_done(s, &s->c[i], 0);
}

/* SIGUSR1: where the run is, on stderr (stdout keeps the one result line). */
static void counters(const struct source *s)
{
	uint64_t sent = 0, total = 0, echoed = 0;

	for (uint32_t i = 0; i < s->o.conns; i++) {
		sent += s->c[i].sent;
		total += s->c[i].total;
		echoed += s->c[i].echoed;
	}
	fprintf(stderr, "sheaf source: counters {\"conns\":%u,\"open\":%u,\"sent\":%llu,"
		"\"total\":%llu,\"echoed\":%llu,\"transactions\":%llu,\"failed\":%d}\n",
		s->o.conns, s->open, (unsigned long long)sent, (unsigned long long)total,
		(unsigned long long)echoed, (unsigned long long)s->txns, s->failed);
}

static int run(struct source *s)
{
	struct epoll_event evs[256];

	if (open_all(s))
		return 1;
	while (s->open) {
		int ms = wait_ms(s);
		int n = epoll_pwait(s->ep, evs, 256, ms, &s->wait_mask);

		if (info_signals_take("source") & INFO_USR1)
			counters(s);

		if (s->deadline && now_sec() >= s->deadline) {
			stop_all(s);
			break;
		}
		if (n == 0 && ms == 30000) {
			say("source", "no progress for 30 s, giving up");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (s->o.rr)
				rr_event(s, &evs[i]);
			else
				event(s, &evs[i]);
		}
	}
	return s->failed ? 1 : 0;
}

static void stream_report(const struct source *s, double secs, int ret)
{
	uint64_t sent = 0;

	for (uint32_t i = 0; i < s->o.conns; i++)
		sent += s->c[i].sent;
	if (s->o.json)
		printf("{\"conns\":%u,\"bytes\":%llu,\"seconds\":%.6f,\"mbps\":%.1f,\"ok\":%s}\n",
		       s->o.conns, (unsigned long long)sent, secs,
		       secs > 0 ? (double)sent * 8 / secs / 1e6 : 0.0, ret ? "false" : "true");
	else
		printf("sheaf source: %u connections, %llu bytes in %.3f s%s\n", s->o.conns,
		       (unsigned long long)sent, secs, ret ? " (FAILED)" : "");
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

static void rr_report(const struct source *s, double secs, int ret)
{
	double us[3], tps = secs > 0 ? (double)s->txns / secs : 0;

	percentiles(s, us);
	if (s->o.json)
		printf("{\"workload\":\"rr\",\"size\":%u,\"conns\":%u,\"transactions\":%llu,"
		       "\"seconds\":%.6f,\"tps\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f,"
		       "\"p999_us\":%.3f,\"ok\":%s}\n", s->o.rr, s->o.conns,
		       (unsigned long long)s->txns, secs, tps, us[0], us[1], us[2],
		       ret ? "false" : "true");
	else
		printf("sheaf source: rr %u B, %u conns, %llu transactions in %.3f s (%.0f tps), "
		       "latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us%s\n", s->o.rr,
		       s->o.conns, (unsigned long long)s->txns, secs, tps, us[0], us[1], us[2],
		       ret ? " (FAILED)" : "");
}

/* rr: how many transactions --bytes makes, and room for their latencies. */
static int rr_init(struct source *s)
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

static const struct source_opts defaults = {
	.conns = 1, .write_size = 65536, .bytes = 64ull << 20, .seed = 1
};

int source_check_args(int argc, char **argv)
{
	struct source_opts o = defaults;

	return parse(argc, argv, &o);
}

int cmd_source(int argc, char **argv)
{
	struct source s = { .o = defaults };
	double t0, secs;
	int ret;

	if ((ret = parse(argc, argv, &s.o)) == ARGS_HELP) {
		fputs(help, stdout);
		return 0;
	}
	if (ret)
		return ret;
	if ((ret = info_signals(&s.wait_mask))) {
		say("source", "cannot set up signals: %s", strerror(-ret));
		return 1;
	}
	s.c = calloc(s.o.conns, sizeof(*s.c));
	s.rbuf = malloc(1 << 20);
	s.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!s.c || !s.rbuf || s.ep < 0 || pattern_init(&s.pat, s.o.seed) || rr_init(&s)) {
		say("source", "out of memory");
		return 1;
	}
	t0 = now_sec();
	s.deadline = s.o.duration ? t0 + s.o.duration : 0;
	ret = run(&s);
	secs = now_sec() - t0;
	if (s.o.rr)
		rr_report(&s, secs, ret);
	else
		stream_report(&s, secs, ret);
	pattern_free(&s.pat);
	free(s.c);
	free(s.rbuf);
	free(s.lat);
	close(s.ep);
	return ret;
}
