/* Parsers and small helpers shared by the subcommands. */
#include <errno.h>
#include <math.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/*
 * Numbers on the command line are ASCII digits and nothing else: strtoull
 * would skip leading white space, take a sign ("-1" wraps to 2^64-1) and a
 * "0x", so it only does the arithmetic here. *end: the first non-digit
 * (also after an overflow, so that junk is told apart from a big number).
 */
static int digits(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;
	bool over = false;

	if (!s)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		over |= v > (UINT64_MAX - d) / 10;
		v = v * 10 + d;
	}
	*end = p;
	if (p == s)
		return -EINVAL;
	*out = v;
	return over ? -ERANGE : 0;
}

int parse_num(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end = s;
	uint64_t v = 0;
	int err = digits(s, &v, &end);

	if (err == -EINVAL || *end)
		return -EINVAL;
	if (err || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int parse_real(const char *s, double *out, const char **rest)
{
	const char *p = s;
	size_t int_digits, frac_digits = 0;
	char *end;
	double v;

	/* scanned first: strtod alone would take " 1", "-1", "inf", "nan"
	 * and "0x1p3" */
	int_digits = strspn(p, "0123456789");
	p += int_digits;
	if (*p == '.') {
		frac_digits = strspn(p + 1, "0123456789");
		p += 1 + frac_digits;
	}
	if (!int_digits && !frac_digits)
		return -EINVAL;
	if (*p == 'e' || *p == 'E') {
		const char *x = p + 1 + (p[1] == '+' || p[1] == '-');
		size_t exp_digits = strspn(x, "0123456789");

		if (exp_digits)
			p = x + exp_digits;
	}
	errno = 0;
	v = strtod(s, &end);
	if (end != p || errno || !isfinite(v))
		return -EINVAL;
	*out = v;
	*rest = p;
	return 0;
}

int parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;
	int err = parse_num(s, 0, UINT32_MAX, &v);

	if (!err)
		*out = (uint32_t)v;
	return err;
}

/* "K", "M", "G" (any case), each optionally followed by "B" or "iB"; or "B"
 * alone: the shift it means, or -1. */
static int size_suffix(const char *p)
{
	unsigned shift = 0;

	switch (*p) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	}
	if (shift) {
		p++;
		if (*p == 'i' && p[1] == 'B')
			p++;
	}
	if (*p == 'B')
		p++;
	return *p ? -1 : (int)shift;
}

int parse_size(const char *s, uint64_t *out)
{
	const char *end = s;
	uint64_t v = 0;
	int shift, err = digits(s, &v, &end);

	if (err == -EINVAL || (shift = size_suffix(end)) < 0)
		return -EINVAL;
	if (err || v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

/* 1048576 as "1M", 65536 as "64K", 1048573 as itself: for the messages. */
static const char *size_text(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "GMK";

	for (int i = 0; i < 3; i++) {
		unsigned shift = 30 - 10 * (unsigned)i;

		if (v && !(v & ((1ull << shift) - 1))) {
			snprintf(buf, len, "%llu%c", (unsigned long long)(v >> shift), units[i]);
			return buf;
		}
	}
	snprintf(buf, len, "%llu", (unsigned long long)v);
	return buf;
}

int num_opt(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
	    uint64_t *out)
{
	if (!parse_num(val, min, max, out))
		return 0;
	say(cmd, "--%s %s: must be a whole number from %llu to %llu (digits only)", opt, val,
	    (unsigned long long)min, (unsigned long long)max);
	return EXIT_USAGE;
}

int u32_opt(const char *cmd, const char *opt, const char *val, uint32_t min, uint32_t max,
	    uint32_t *out)
{
	uint64_t v;

	if (num_opt(cmd, opt, val, min, max, &v))
		return EXIT_USAGE;
	*out = (uint32_t)v;
	return 0;
}

int size_opt(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
	     uint64_t *out)
{
	char lo[32], hi[32];
	uint64_t v;

	if (!parse_size(val, &v) && v >= min && v <= max) {
		*out = v;
		return 0;
	}
	say(cmd, "--%s %s: must be a size from %s to %s bytes (digits, then K, M or G if "
	    "wanted)", opt, val, size_text(min, lo, sizeof(lo)), size_text(max, hi, sizeof(hi)));
	return EXIT_USAGE;
}

/* HOST of HOST:PORT: something getaddrinfo may take, never blank or a control. */
static bool host_ok(const char *h, size_t len)
{
	if (!len)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)h[i] <= ' ' || (unsigned char)h[i] >= 0x7f)
			return false;
	return true;
}

/* "host:port" or "[v6]:port" into host (NUL-terminated) and its port text. */
static int split_addr(const char *s, char host[128], const char **port)
{
	const char *end;
	size_t hlen;

	if (!s || strlen(s) >= 128)
		return -EINVAL;
	if (*s == '[') {
		end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		s++;
	} else {
		end = strchr(s, ':');
		if (!end || strchr(end + 1, ':'))
			return -EINVAL;
	}
	hlen = (size_t)(end - s);
	if (!host_ok(s, hlen))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = 0;
	*port = end + (*end == ']' ? 2 : 1);
	return 0;
}

static int addr_parse(const char *s, struct addr *a, int ai_flags)
{
	struct addrinfo hints, *res;
	const char *port;
	char host[128];
	uint64_t p;
	int err;

	if ((err = split_addr(s, host, &port)) || (err = parse_num(port, 0, 65535, &p)))
		return err;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = ai_flags;
	if (getaddrinfo(host, NULL, &hints, &res))
		return -ENOENT;
	if (res->ai_addrlen > sizeof(a->ss) ||
	    (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
		freeaddrinfo(res);
		return -ENOENT;
	}
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)p);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)p);
	snprintf(a->text, sizeof(a->text), "%s", s);
	return 0;
}

int parse_addr(const char *s, struct addr *a)
{
	return addr_parse(s, a, 0);
}

int parse_addr_numeric(const char *s, struct addr *a)
{
	return addr_parse(s, a, AI_NUMERICHOST);
}

int addr_opt(const char *cmd, const char *opt, const char *val, struct addr *a)
{
	int err = parse_addr(val, a);

	if (err == -ENOENT)
		say(cmd, "--%s %s: the host name does not resolve", opt, val);
	else if (err == -ERANGE)
		say(cmd, "--%s %s: the port must be 0 to 65535", opt, val);
	else if (err)
		say(cmd, "--%s %s: not a HOST:PORT address (HOST: IPv4, [IPv6] or a name; "
		    "PORT: digits, 0 to 65535)", opt, val);
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
	int err = 0;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char **nv = realloc(v, (cnt + 1) * sizeof(*v));

		if (!nv || !(nv[cnt] = strdup(tok))) {
			v = nv ? nv : v;
			err = -ENOMEM;
			break;
		}
		v = nv;
		cnt++;
	}
	free(dup);
	*items = v;
	*n = cnt;
	return err ? err : cnt ? 0 : -EINVAL;
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
	uint64_t v;

	if (!strcmp(name, "io")) {
		o->io = sheaf_io_parse(val);
		if (o->io < 0) {
			say(cmd, "--io %s: unknown mode (auto, bundle, ring, plain, sendmsg, epoll, recvmsg)", val);
			return EXIT_USAGE;
		}
	} else if (!strcmp(name, "buf-size")) {
		if (size_opt(cmd, name, val, 1, SHEAF_MAX_BUF_SIZE, &v))
			return EXIT_USAGE;
		o->buf_size = (uint32_t)v;
	} else if (!strcmp(name, "bufs")) {
		if (parse_num(val, 2, SHEAF_MAX_BUFS, &v) || (v & (v - 1))) {
			say(cmd, "--bufs %s: must be a power of two from 2 to %u", val,
			    SHEAF_MAX_BUFS);
			return EXIT_USAGE;
		}
		o->nbufs = (uint32_t)v;
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
	if (io == SHEAF_IO_RECVMSG && o->buf_size <= 16) {
		/* each buffer begins with the kernel's 16-byte recvmsg header */
		say(cmd, "--buf-size %u: the recvmsg mode needs more than 16 bytes per buffer "
		    "(16 hold its header)", o->buf_size);
		return EXIT_USAGE;
	}
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

/* Bits 1 << SIGHUP and 1 << SIGUSR1, set by the handler, taken by the program. */
static atomic_uint info_pending;

static void on_info(int sig)
{
	atomic_fetch_or(&info_pending, 1u << sig); /* lock-free: async-signal-safe */
}

int info_signals(sigset_t *wait_mask)
{
	struct sigaction sa;
	sigset_t info;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_info;
	sa.sa_flags = SA_RESTART; /* any other call goes on; waits return EINTR anyway */
	sigemptyset(&info);
	sigaddset(&info, SIGHUP);
	sigaddset(&info, SIGUSR1);
	if (wait_mask && sigprocmask(SIG_BLOCK, &info, wait_mask))
		return -errno;
	if (wait_mask) {
		sigdelset(wait_mask, SIGHUP);
		sigdelset(wait_mask, SIGUSR1);
	}
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGUSR2, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

unsigned info_signals_take(const char *cmd)
{
	unsigned got = atomic_exchange(&info_pending, 0);

	if (got & INFO_HUP)
		say(cmd, "SIGHUP: ignored (nothing to reload; SIGINT or SIGTERM stops)");
	return got;
}

double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
