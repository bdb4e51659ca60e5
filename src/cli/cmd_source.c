/* sheaf source: opens connections and sends (verifiable) streams. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
	"usage: sheaf source --connect HOST:PORT [options]\n"
	"Opens connections and sends a stream on each, then half-closes.\n"
	"  --connect HOST:PORT  where to send\n"
	"  --conns N            connections (default 1)\n"
	"  --bytes N            bytes in all, split evenly over the connections (default 64M)\n"
	"  --write-size N       bytes per write (default 64K)\n"
	"  --verify             start each stream with a header naming it, for sink --verify\n"
	"  --echo               read the stream back (sink --echo) and check it byte for byte\n"
	"  --seed N             pattern seed (default 1)\n"
	"  --json               one JSON result line on stdout\n"
	"Exit status: 0 when everything was sent (and echoed intact), 1 otherwise, 2 on bad usage.\n";

struct source_opts {
	struct addr to;
	bool have_to, verify, echo, json;
	uint32_t conns, write_size;
	uint64_t bytes, seed;
};

struct src_conn {
	int fd;
	uint32_t id;
	uint64_t len, sent, total; /* total: header + payload */
	uint32_t start;
	uint8_t hdr[STREAM_HDR];
	bool connected, wr_done, done;
	struct stream_check echo;
	uint64_t echoed;
};

struct source {
	struct source_opts o;
	struct pattern pat;
	struct src_conn *c;
	int ep;
	uint32_t open;
	int failed;
	uint8_t *rbuf;
};

static int parse(int argc, char **argv, struct source_opts *o)
{
	static const struct option opts[] = {
		{ "connect", required_argument, 0, 'c' }, { "conns", required_argument, 0, 'n' },
		{ "bytes", required_argument, 0, 'b' },   { "write-size", required_argument, 0, 'w' },
		{ "verify", no_argument, 0, 'v' },        { "echo", no_argument, 0, 'e' },
		{ "seed", required_argument, 0, 's' },    { "json", no_argument, 0, 'j' },
		{ "help", no_argument, 0, 'h' },          { 0 }
	};
	int c, idx;

	while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		switch (c) {
		case 'c':
			if (parse_addr(optarg, &o->to)) {
				say("source", "--connect %s: not a HOST:PORT address", optarg);
				return EXIT_USAGE;
			}
			o->have_to = true;
			break;
		case 'n':
			if (parse_u32(optarg, &o->conns) || !o->conns || o->conns > 9990) {
				say("source", "--conns %s: must be 1 to 9990", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			if (parse_size(optarg, &o->bytes)) {
				say("source", "--bytes %s: not a size (like 16M)", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'w':
			if (parse_u32(optarg, &o->write_size) || !o->write_size ||
			    o->write_size > PATTERN_LEN) {
				say("source", "--write-size %s: must be 1 to 1M", optarg);
				return EXIT_USAGE;
			}
			break;
		case 's':
			if (parse_size(optarg, &o->seed)) {
				say("source", "--seed %s: not a number", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'v': o->verify = true; break;
		case 'e': o->echo = true; break;
		case 'j': o->json = true; break;
		case 'h': fputs(help, stdout); exit(0);
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc || !o->have_to) {
		say("source", optind < argc ? "unexpected argument '%s'" : "--connect is required%s",
		    optind < argc ? argv[optind] : "");
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
	if (!s->o.echo)
		ev.events = EPOLLOUT;
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

static int event(struct source *s, struct epoll_event *ev)
{
	struct src_conn *c = ev->data.ptr;
	int ret = 0;

	if (c->done)
		return 0;
	if (!c->connected) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			conn_done(s, c, -err);
			return 0;
		}
		c->connected = true;
	}
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

static int run(struct source *s)
{
	struct epoll_event evs[256];

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
	while (s->open) {
		int n = epoll_wait(s->ep, evs, 256, 30000);

		if (n == 0) {
			say("source", "no progress for 30 s, giving up");
			return 1;
		}
		for (int i = 0; i < n; i++)
			event(s, &evs[i]);
	}
	return s->failed ? 1 : 0;
}

int cmd_source(int argc, char **argv)
{
	struct source s = { .o = { .conns = 1, .write_size = 65536, .bytes = 64ull << 20, .seed = 1 } };
	double t0, secs;
	uint64_t sent = 0;
	int ret;

	if ((ret = parse(argc, argv, &s.o)))
		return ret;
	s.c = calloc(s.o.conns, sizeof(*s.c));
	s.rbuf = malloc(1 << 20);
	s.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!s.c || !s.rbuf || s.ep < 0 || pattern_init(&s.pat, s.o.seed)) {
		say("source", "out of memory");
		return 1;
	}
	t0 = now_sec();
	ret = run(&s);
	secs = now_sec() - t0;
	for (uint32_t i = 0; i < s.o.conns; i++)
		sent += s.c[i].sent;
	if (s.o.json)
		printf("{\"conns\":%u,\"bytes\":%llu,\"seconds\":%.6f,\"mbps\":%.1f,\"ok\":%s}\n",
		       s.o.conns, (unsigned long long)sent, secs,
		       secs > 0 ? (double)sent * 8 / secs / 1e6 : 0.0, ret ? "false" : "true");
	else
		printf("sheaf source: %u connections, %llu bytes in %.3f s%s\n", s.o.conns,
		       (unsigned long long)sent, secs, ret ? " (FAILED)" : "");
	pattern_free(&s.pat);
	free(s.c);
	free(s.rbuf);
	close(s.ep);
	return ret;
}
