/* Parsers and small helpers shared by the subcommands. */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (*end == 'i' || *end == 'B' || *end == 'b')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end || (shift && v > (~0ull >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;

	if (parse_size(s, &v) || v > 0xffffffffu)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int parse_addr(const char *s, struct addr *a)
{
	struct addrinfo hints, *res;
	char host[128];
	const char *colon, *port;
	size_t hlen;
	char *end;
	long p;

	if (!s || strlen(s) >= sizeof(host))
		return -EINVAL;
	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':')
			return -EINVAL;
		hlen = (size_t)(rb - s - 1);
		memcpy(host, s + 1, hlen);
		port = rb + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		hlen = (size_t)(colon - s);
		memcpy(host, s, hlen);
		port = colon + 1;
	}
	host[hlen] = 0;
	p = strtol(port, &end, 10);
	if (!*port || *end || p < 0 || p > 65535 || !hlen)
		return -EINVAL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res))
		return -ENOENT;
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(a->text, sizeof(a->text), "%s", s);
	return 0;
}

int addr_opt(const char *cmd, const char *opt, const char *val, struct addr *a)
{
	int err = parse_addr(val, a);

	if (err == -ENOENT)
		say(cmd, "--%s %s: the host name does not resolve", opt, val);
	else if (err)
		say(cmd, "--%s %s: not a HOST:PORT address", opt, val);
	return err ? EXIT_USAGE : 0;
}

void free_list(char **items, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(items[i]);
	free(items);
}

int parse_list(const char *s, char ***items, unsigned *n)
{
	char *dup = strdup(s), *tok, *save = NULL;
	char **v = NULL;
	unsigned cnt = 0;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char **nv = realloc(v, (cnt + 1) * sizeof(*v));

		if (!nv)
			break;
		v = nv;
		v[cnt++] = strdup(tok);
	}
	free(dup);
	*items = v;
	*n = cnt;
	return cnt ? 0 : -EINVAL;
}

int addr_bound(int fd, struct addr *a)
{
	char host[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int port;

	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return -errno;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		port = ntohs(s6->sin6_port);
		snprintf(a->text, sizeof(a->text), "[%s]:%d", host, port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		port = ntohs(s4->sin_port);
		snprintf(a->text, sizeof(a->text), "%s:%d", host, port);
	}
	memcpy(&a->ss, &ss, len);
	a->len = len;
	return 0;
}

void say(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sheaf %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int io_opt(const char *cmd, struct io_opts *o, const char *name, const char *val)
{
	uint32_t v;

	if (!strcmp(name, "io")) {
		o->io = sheaf_io_parse(val);
		if (o->io < 0) {
			say(cmd, "--io %s: unknown mode (auto, bundle, ring, plain, sendmsg, epoll)", val);
			return EXIT_USAGE;
		}
	} else if (!strcmp(name, "buf-size")) {
		if (parse_u32(val, &v) || !v || v > SHEAF_MAX_BUF_SIZE) {
			say(cmd, "--buf-size %s: must be 1 to 1M bytes", val);
			return EXIT_USAGE;
		}
		o->buf_size = v;
	} else if (!strcmp(name, "bufs")) {
		if (parse_u32(val, &v) || v < 2 || v > SHEAF_MAX_BUFS || (v & (v - 1))) {
			say(cmd, "--bufs %s: must be a power of two from 2 to %u", val,
			    SHEAF_MAX_BUFS);
			return EXIT_USAGE;
		}
		o->nbufs = v;
	}
	return 0;
}

/* About 8 MiB of pool by default: 32768 x 32 B .. 128 x 64 KiB. */
static uint32_t default_bufs(uint32_t buf_size)
{
	uint32_t n = 1;

	while (n < SHEAF_MAX_BUFS && (uint64_t)n * 2 * buf_size <= (8u << 20))
		n *= 2;
	return n < 64 ? 64 : n;
}

int io_config(const char *cmd, const struct io_opts *o, uint32_t max_conns,
	      struct sheaf_loop_config *cfg)
{
	struct sheaf_probe p = { .size = sizeof(p) };
	int io = sheaf_io_resolve(o->io);

	sheaf_loop_config_init(cfg);
	cfg->nodelay = 0;
	cfg->write_bufs = 0;
	cfg->connect_timeout_ms = cfg->stall_timeout_ms = 0;
	if (io < 0) {
		sheaf_probe(&p);
		if (io == -EINVAL)
			say(cmd, "SHEAF_IO=%s: unknown mode", getenv("SHEAF_IO"));
		else
			say(cmd, "io mode %s not available on this kernel: %s",
			    o->io ? sheaf_io_name(o->io) : "auto", p.reason);
		return 1;
	}
	cfg->io = io;
	cfg->buf_size = o->buf_size;
	cfg->nbufs = o->nbufs ? o->nbufs : default_bufs(o->buf_size);
	if ((uint64_t)cfg->buf_size * cfg->nbufs > (1ull << 30)) {
		say(cmd, "--buf-size %u x --bufs %u: pool over 1 GiB", cfg->buf_size,
		    cfg->nbufs);
		return EXIT_USAGE;
	}
	cfg->max_conns = max_conns;
	return 0;
}

static struct sheaf_loop *signal_loop;

static void on_signal(int sig)
{
	(void)sig;
	if (signal_loop)
		sheaf_loop_stop(signal_loop);
}

void stop_on_signals(struct sheaf_loop *loop)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: the wait returns EINTR */
	signal_loop = loop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
