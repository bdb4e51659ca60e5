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
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "source.h"

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
	"                       were not all echoed by then; with --warmup, the measurement\n"
	"                       window lasts this long\n"
	"  --warmup SECONDS     with --rr: measure only from this long (0 allowed) after every\n"
	"                       connection is connected: transactions and latency count in\n"
	"                       the window, tps is per second of it\n"
	"  --rate N             with --rr and --duration: open loop, N requests/s over all\n"
	"                       connections (request i on connection i %% conns, due at i / N s\n"
	"                       after all are connected); latency runs from when a request\n"
	"                       was due, also if its connection was still waiting for the\n"
	"                       previous answer (no coordinated omission); requests due in\n"
	"                       the window and unanswered 2 s after it count as \"late\",\n"
	"                       with the time they waited\n"
	"  --marks              print \"measuring\" and \"measured\" on stderr at the edges\n"
	"                       of the window (for sheaf bench)\n"
	"  --json               one JSON result line on stdout\n"
	"Signals: SIGUSR1 prints a counters line on stderr and goes on; SIGHUP is logged\n"
	"and ignored; SIGUSR2 and SIGPIPE are ignored.\n"
	"Exit status: 0 when everything was sent (and echoed intact), 1 otherwise, 2 on bad usage.\n";

/* A positive, finite number of seconds: "2", "0.25", "1e-3". */
static int parse_seconds(const char *s, double *out)
{
	const char *rest;
	double v;

	if (parse_real(s, &v, &rest) || *rest || v <= 0)
		return -EINVAL;
	*out = v;
	return 0;
}

/* --rr, --duration, --warmup and --rate: 0 or EXIT_USAGE (printed). */
static int parse_rr(struct source_opts *o, int c, const char *val)
{
	uint64_t v;

	if (c == 'r') {
		if (size_opt("source", "rr", val, 1, 1u << 20, &v))
			return EXIT_USAGE;
		o->rr = (uint32_t)v;
	} else if (c == 'W') {
		if (strcmp(val, "0") && parse_seconds(val, &o->warmup)) {
			say("source", "--warmup %s: must be 0 or a positive number of seconds", val);
			return EXIT_USAGE;
		}
		if (!strcmp(val, "0"))
			o->warmup = 0;
	} else if (parse_seconds(val, c == 'd' ? &o->duration : &o->rate) ||
		   (c == 'R' && o->rate > 1e8)) {
		say("source", c == 'd' ? "--duration %s: must be a positive number of seconds" :
			      "--rate %s: must be a positive number of requests/s (at most 1e8)", val);
		return EXIT_USAGE;
	}
	return 0;
}

/* What the options need of each other; 0 or EXIT_USAGE (printed). */
static int check_opts(struct source_opts *o)
{
	if (o->duration && !o->rr) {
		say("source", "--duration needs --rr (a cut-short stream would not verify)");
		return EXIT_USAGE;
	}
	if ((o->warmup >= 0 || o->rate) && !o->rr) {
		say("source", "--%s needs --rr", o->rate ? "rate" : "warmup");
		return EXIT_USAGE;
	}
	if (o->rate && !o->duration) {
		say("source", "--rate needs --duration (an open loop runs for a set time)");
		return EXIT_USAGE;
	}
	if (o->rate && o->warmup < 0)
		o->warmup = 0; /* open loop: always a window */
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
		{ "warmup", required_argument, 0, 'W' },  { "rate", required_argument, 0, 'R' },
		{ "marks", no_argument, 0, 'M' },         { "help", no_argument, 0, 'h' },
		{ 0 }
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
		case 'r': case 'd': case 'W': case 'R':
			if (parse_rr(o, c, optarg))
				return EXIT_USAGE;
			break;
		case 'v': o->verify = true; break;
		case 'e': o->echo = true; break;
		case 'j': o->json = true; break;
		case 'M': o->marks = true; break;
		case 'h': return ARGS_HELP;
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc || !o->have_to) {
		say("source", optind < argc ? "unexpected argument '%s'" : "--connect is required%s",
		    optind < argc ? argv[optind] : "");
		return EXIT_USAGE;
	}
	return check_opts(o);
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

void conn_done(struct source *s, struct src_conn *c, int err)
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
bool check_connected(struct source *s, struct src_conn *c)
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
	s->connected++;
	return true;
}

uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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

#define STALL_NS (30 * 1000000000ull)

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
		(unsigned long long)echoed, (unsigned long long)s->txns_all, s->failed);
}

static void dispatch(struct source *s, struct epoll_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		if (s->o.rr)
			rr_event(s, &evs[i]);
		else
			event(s, &evs[i]);
	}
}

/*
 * epoll_pwait2 (Linux 5.11), or epoll_pwait with the timeout rounded up to
 * milliseconds where it is missing (ENOSYS: older kernels, and valgrind
 * 3.19, which does not know it).
 */
static int epoll_wait_ns(struct source *s, struct epoll_event *evs, int max,
			 const struct timespec *ts)
{
	static bool no_pwait2;
	int n;

	if (!no_pwait2) {
		n = epoll_pwait2(s->ep, evs, max, ts, &s->wait_mask);
		if (n >= 0 || errno != ENOSYS)
			return n;
		no_pwait2 = true;
	}
	return epoll_pwait(s->ep, evs, max,
			   ts->tv_sec > 86400 ? 86400000 :
			   (int)(ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000),
			   &s->wait_mask);
}

/* Waits with a nanosecond timeout (open loop: requests fall due between
 * milliseconds), at most until the stall limit. */
static int run(struct source *s)
{
	struct epoll_event evs[256];
	uint64_t progress = mono_ns();

	if (open_all(s))
		return 1;
	while (s->open) {
		bool stop = false;
		uint64_t wait = s->o.rr ? rr_tick(s, &stop) : UINT64_MAX;
		uint64_t now = mono_ns();
		struct timespec ts;
		int n;

		if (stop)
			break;
		if (now - progress >= STALL_NS) {
			say("source", "no progress for 30 s, giving up");
			return 1;
		}
		if (wait > progress + STALL_NS - now)
			wait = progress + STALL_NS - now;
		ts.tv_sec = (time_t)(wait / 1000000000u);
		ts.tv_nsec = (long)(wait % 1000000000u);
		n = epoll_wait_ns(s, evs, 256, &ts);
		if (info_signals_take("source") & INFO_USR1)
			counters(s);
		if (n > 0)
			progress = mono_ns();
		dispatch(s, evs, n);
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

static const struct source_opts defaults = {
	.conns = 1, .write_size = 65536, .bytes = 64ull << 20, .seed = 1, .warmup = -1
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
	if (s.o.rate)
		prctl(PR_SET_TIMERSLACK, 1000ul); /* wake within a microsecond */
	t0 = now_sec();
	/* without a window --duration is the whole run; with one, the window
	 * ends the run and this only stops one that never got there */
	if (s.o.duration)
		s.deadline = mono_ns() + (uint64_t)((s.o.warmup < 0 ? s.o.duration :
				s.o.duration + s.o.warmup + 120) * 1e9);
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
