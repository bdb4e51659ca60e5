/*
 * sheaf proxy's options: one table for the command line and the --config
 * file, so an option has one name, one parser and one message for both.
 *
 * The file (proxy_config_help says it for users): `key value` lines, `#`
 * comments, a [global] part (the lines before the first section, or under
 * [global]) for what applies to the whole process, and one
 * [frontend NAME] section per listener with its upstreams and options.
 * Every mistake is reported with the file's name and the line, and reading
 * goes on, so that one run names them all.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define MS_MAX 86400000u     /* a day, for every millisecond option */
#define LINE_MAX_LEN 1024
#define ERRORS_MAX 100       /* a binary file would give one per line */

enum opt_id {
	O_LISTEN, O_UPSTREAM, O_BALANCE, O_SEND_PROXY, O_SEND_PROXY_V2, O_ACCEPT_PROXY,
	O_HEADER_TIMEOUT,
	O_IO, O_BUF_SIZE, O_BUFS, O_MAX_CONNS, O_BACKLOG, O_STRICT, O_THREADS,
	O_CONNECT_TIMEOUT, O_IDLE_TIMEOUT, O_STALL_TIMEOUT, O_CHECK_INTERVAL, O_NODELAY,
	O_NO_NODELAY, O_QUIET, O_LOG, O_METRICS, O_DRAIN_TIMEOUT,
	O_CONFIG, O_CHECK, O_HELP,
	O__COUNT
};

/* FRONTEND: per listener; GLOBAL: the process (the event loops are
 * shared by every frontend); CMDLINE: not in a file. */
enum scope { FRONTEND, GLOBAL, CMDLINE };

static const struct opt {
	const char *name;
	enum scope scope;
	const char *value; /* what its value is; NULL: a flag */
	bool repeat;       /* may be given more than once in a section */
} opts[O__COUNT] = {
	[O_LISTEN] = { "listen", FRONTEND, "HOST:PORT" },
	[O_UPSTREAM] = { "upstream", FRONTEND, "HOST:PORT", true },
	[O_BALANCE] = { "balance", FRONTEND, "roundrobin|leastconn|source" },
	[O_SEND_PROXY] = { "send-proxy", FRONTEND },
	[O_SEND_PROXY_V2] = { "send-proxy-v2", FRONTEND },
	[O_ACCEPT_PROXY] = { "accept-proxy", FRONTEND },
	[O_HEADER_TIMEOUT] = { "header-timeout", FRONTEND, "MS" },
	[O_IO] = { "io", GLOBAL, "MODE" },
	[O_BUF_SIZE] = { "buf-size", GLOBAL, "BYTES" },
	[O_BUFS] = { "bufs", GLOBAL, "N" },
	[O_MAX_CONNS] = { "max-conns", GLOBAL, "N" },
	[O_BACKLOG] = { "backlog", GLOBAL, "N" },
	[O_STRICT] = { "strict", GLOBAL },
	[O_THREADS] = { "threads", GLOBAL, "N" },
	[O_CONNECT_TIMEOUT] = { "connect-timeout", GLOBAL, "MS" },
	[O_IDLE_TIMEOUT] = { "idle-timeout", GLOBAL, "MS" },
	[O_STALL_TIMEOUT] = { "stall-timeout", GLOBAL, "MS" },
	[O_CHECK_INTERVAL] = { "check-interval", GLOBAL, "MS" },
	[O_NODELAY] = { "nodelay", GLOBAL },
	[O_NO_NODELAY] = { "no-nodelay", GLOBAL },
	[O_QUIET] = { "quiet", GLOBAL },
	[O_LOG] = { "log", GLOBAL, "none|errors|conn" },
	[O_METRICS] = { "metrics", GLOBAL, "HOST:PORT" },
	[O_DRAIN_TIMEOUT] = { "drain-timeout", GLOBAL, "MS" },
	[O_CONFIG] = { "config", CMDLINE, "FILE" },
	[O_CHECK] = { "check", CMDLINE },
	[O_HELP] = { "help", CMDLINE },
};

const char proxy_config_help[] =
	"Configuration file (--config FILE): one option a line, `NAME VALUE` or `NAME`\n"
	"for a flag, with the command-line flags' names (without --); `#` starts a\n"
	"comment (at the start of a line or after a space). Options for the whole\n"
	"process come first (or under a [global] line): io, buf-size, bufs, max-conns,\n"
	"backlog, strict, threads, connect-timeout, idle-timeout, stall-timeout,\n"
	"check-interval, nodelay, no-nodelay, quiet, log, metrics, drain-timeout. Then one\n"
	"section per listener, [frontend NAME] (NAME: letters, digits, _ - ., at most\n"
	"31), with listen, upstream (repeated), balance, send-proxy, send-proxy-v2,\n"
	"accept-proxy, header-timeout. At most 8 frontends (7 with metrics). Every\n"
	"mistake is named as FILE:LINE: what is wrong; --check reads the file, says\n"
	"whether it is valid and exits (0 valid, 2 not), starting nothing:\n"
	"    # /etc/sheaf/proxy.conf\n"
	"    threads 2\n"
	"    metrics 127.0.0.1:9100\n"
	"    [frontend web]\n"
	"    listen 0.0.0.0:80\n"
	"    upstream 10.0.0.1:8080\n"
	"    upstream 10.0.0.2:8080\n"
	"    balance leastconn\n";

void proxy_defaults(struct proxy *px)
{
	memset(px, 0, sizeof(*px));
	px->io.buf_size = 4096;
	px->max_conns = 4096;
	px->connect_timeout_ms = 5000;
	px->stall_timeout_ms = 30000;
	px->drain_timeout_ms = 2000;
	px->threads = 1;
	px->nodelay = true;
	px->metrics_fd = -1;
	px->log = LOG_NONE;
}

static void frontend_init(struct frontend *fe, struct proxy *px, unsigned idx,
			  const char *name, int line)
{
	memset(fe, 0, sizeof(*fe));
	fe->kind = KIND_FRONTEND;
	fe->idx = idx;
	fe->px = px;
	fe->line = line;
	fe->fd = -1;
	fe->header_timeout_ms = 5000;
	snprintf(fe->name, sizeof(fe->name), "%s", name);
}

/* ---- one option's value ------------------------------------------------ */

static int why_of(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int why_of(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -1;
}

static int set_addr(const char *val, struct addr *a, char *why, size_t len)
{
	int err = parse_addr(val, a);

	/* the words of addr_opt (args.c) */
	if (err == -ENOENT)
		return why_of(why, len, "the host name does not resolve");
	if (err == -ERANGE)
		return why_of(why, len, "the port must be 0 to 65535");
	if (err)
		return why_of(why, len, "not a HOST:PORT address (HOST: IPv4, [IPv6] or a name; "
			      "PORT: digits, 0 to 65535)");
	return 0;
}

static int set_range(const char *val, uint32_t *out, uint32_t min, uint32_t max,
		     const char *what, char *why, size_t len)
{
	uint32_t v;

	if (parse_u32(val, &v) || v < min || v > max)
		return why_of(why, len, "%s %u to %u", what, min, max);
	*out = v;
	return 0;
}

static int set_ms(const char *val, uint32_t *out, uint32_t min, char *why, size_t len)
{
	return set_range(val, out, min, MS_MAX, "milliseconds,", why, len);
}

/* io, buf-size, bufs: the rules of io_opt (args.c), with its words */
static int set_io(enum opt_id id, const char *val, struct io_opts *io, char *why, size_t len)
{
	uint32_t v;
	uint64_t size;

	if (id == O_IO) {
		io->io = sheaf_io_parse(val);
		return io->io < 0 ? why_of(why, len, "unknown mode (auto, bundle, ring, plain, "
					   "sendmsg, epoll, recvmsg)") : 0;
	}
	if (id == O_BUF_SIZE) {
		if (parse_size(val, &size) || !size || size > SHEAF_MAX_BUF_SIZE)
			return why_of(why, len, "must be 1 to 1M bytes");
		io->buf_size = (uint32_t)size;
		return 0;
	}
	if (parse_u32(val, &v) || v < 2 || v > SHEAF_MAX_BUFS || (v & (v - 1)))
		return why_of(why, len, "must be a power of two from 2 to %u", SHEAF_MAX_BUFS);
	io->nbufs = v;
	return 0;
}

static int set_frontend(enum opt_id id, const char *val, struct frontend *fe, char *why,
			size_t len)
{
	int ret;

	switch (id) {
	case O_LISTEN:
		fe->have_listen = true;
		return set_addr(val, &fe->listen, why, len);
	case O_UPSTREAM:
		if (fe->up.n == MAX_UPSTREAMS)
			return why_of(why, len, "at most %d upstreams", MAX_UPSTREAMS);
		if (set_addr(val, &fe->up.u[fe->up.n].a, why, len))
			return -1;
		fe->up.n++;
		return 0;
	case O_BALANCE:
		if ((ret = balance_parse(val)) < 0)
			return why_of(why, len, "roundrobin, leastconn or source");
		fe->up.balance = ret;
		return 0;
	case O_SEND_PROXY: fe->send_proxy = 1; return 0;
	case O_SEND_PROXY_V2: fe->send_proxy = 2; return 0;
	case O_ACCEPT_PROXY: fe->accept_proxy = true; return 0;
	case O_HEADER_TIMEOUT: return set_ms(val, &fe->header_timeout_ms, 0, why, len);
	default: return why_of(why, len, "not a frontend option");
	}
}

static int set_log(const char *val, struct proxy *px, char *why, size_t len)
{
	static const char *const names[] = { [LOG_NONE] = "none", [LOG_ERRORS] = "errors",
					      [LOG_CONN] = "conn" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(val, names[i])) {
			px->log = (enum log_mode)i;
			return 0;
		}
	}
	return why_of(why, len, "none, errors or conn");
}

/* Sets option id from val (NULL for a flag); 0, or -1 with why set. */
static int opt_set(enum opt_id id, const char *val, struct proxy *px, struct frontend *fe,
		   char *why, size_t len)
{
	if (opts[id].scope == FRONTEND)
		return set_frontend(id, val, fe, why, len);
	switch (id) {
	case O_IO: case O_BUF_SIZE: case O_BUFS: return set_io(id, val, &px->io, why, len);
	case O_MAX_CONNS: return set_range(val, &px->max_conns, 1, 9990, "must be", why, len);
	case O_BACKLOG: return set_range(val, &px->backlog, 1, 1048576, "must be", why, len);
	case O_THREADS: return set_range(val, &px->threads, 1, MAX_THREADS, "must be", why, len);
	case O_STRICT: px->strict = true; return 0;
	case O_CONNECT_TIMEOUT: return set_ms(val, &px->connect_timeout_ms, 0, why, len);
	case O_IDLE_TIMEOUT: return set_ms(val, &px->idle_timeout_ms, 0, why, len);
	case O_STALL_TIMEOUT: return set_ms(val, &px->stall_timeout_ms, 0, why, len);
	case O_CHECK_INTERVAL: return set_ms(val, &px->check_interval_ms, 0, why, len);
	case O_DRAIN_TIMEOUT: return set_ms(val, &px->drain_timeout_ms, 1, why, len);
	case O_NODELAY: px->nodelay = true; return 0;
	case O_NO_NODELAY: px->nodelay = false; return 0;
	case O_QUIET: px->quiet = true; return 0;
	case O_LOG: return set_log(val, px, why, len);
	case O_METRICS:
		px->have_metrics = true;
		return set_addr(val, &px->metrics_addr, why, len);
	default: return why_of(why, len, "not an option here");
	}
}

/* ---- checks that span several options ----------------------------------- */

/* The same address twice is a mistake, but for port 0 (any free port). */
static bool same_addr(const struct addr *a, const struct addr *b)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
	in_port_t port = a->ss.ss_family == AF_INET6 ? s6->sin6_port : s4->sin_port;

	return port && a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

/*
 * Reports through `bad` (with the line to name, 0: none) what no single
 * option shows: the pool's size, PROXY header timeouts, listeners per loop,
 * the same address twice. The count of mistakes.
 */
static unsigned check_whole(struct proxy *px, const int *lines, const int *listen_lines,
			    void (*bad)(void *ctx, int line, const char *fmt, ...), void *ctx)
{
	unsigned n = 0;
	uint32_t nbufs = px->io.nbufs;

	if (nbufs && (uint64_t)px->io.buf_size * nbufs > (1ull << 30)) {
		bad(ctx, lines[O_BUFS], "buf-size %u x bufs %u: pool over 1 GiB", px->io.buf_size,
		    nbufs);
		n++;
	}
	if (px->nfe + px->have_metrics > MAX_FRONTENDS) {
		bad(ctx, lines[O_METRICS], "metrics takes a listener of its own: at most %d "
		    "frontends with it", MAX_FRONTENDS - 1);
		n++;
	}
	for (unsigned i = 0; i < px->nfe; i++) {
		struct frontend *fe = &px->fe[i];

		if (fe->accept_proxy && !fe->header_timeout_ms) {
			bad(ctx, fe->line, "frontend %s: accept-proxy with header-timeout 0: a "
			    "client could hold a slot forever", fe->name);
			n++;
		}
		for (unsigned j = 0; j < i; j++) {
			if (fe->have_listen && px->fe[j].have_listen &&
			    same_addr(&fe->listen, &px->fe[j].listen)) {
				bad(ctx, listen_lines[i], "listen %s: frontend %s listens there "
				    "already", fe->listen.text, px->fe[j].name);
				n++;
			}
		}
		if (px->have_metrics && fe->have_listen &&
		    same_addr(&fe->listen, &px->metrics_addr)) {
			bad(ctx, lines[O_METRICS], "metrics %s: frontend %s listens there",
			    px->metrics_addr.text, fe->name);
			n++;
		}
	}
	return n;
}

/* ---- the --config file -------------------------------------------------- */

struct reader {
	const char *name;
	FILE *errs;
	unsigned errors;
	int line;
	struct proxy *px;
	struct frontend *fe;     /* the section's; NULL: global */
	struct frontend junk;    /* a section that cannot be kept: read, not used */
	int seen[O__COUNT];      /* the line an option was set on, in this section */
	int global_seen[O__COUNT];
	int listen_line[MAX_FRONTENDS];
};

static void bad_at(void *ctx, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void bad_at(void *ctx, int line, const char *fmt, ...)
{
	struct reader *r = ctx;
	va_list ap;

	if (++r->errors > ERRORS_MAX)
		return;
	if (line)
		fprintf(r->errs, "sheaf proxy: %s:%d: ", r->name, line);
	else
		fprintf(r->errs, "sheaf proxy: %s: ", r->name);
	va_start(ap, fmt);
	vfprintf(r->errs, fmt, ap);
	va_end(ap);
	fputc('\n', r->errs);
	if (r->errors == ERRORS_MAX)
		fprintf(r->errs, "sheaf proxy: %s: more than %d mistakes, the rest not named\n",
			r->name, ERRORS_MAX);
}

#define bad(r, ...) bad_at((r), (r)->line, __VA_ARGS__)

/* Splits s into whitespace-separated words (at most max); the count. */
static unsigned split(char *s, char **w, unsigned max)
{
	unsigned n = 0;

	char *save = NULL;

	for (char *tok = strtok_r(s, " \t\r\n", &save); tok;
	     tok = strtok_r(NULL, " \t\r\n", &save))
		if (n < max + 1)
			w[n++] = tok;
	return n; /* max + 1: more than max */
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > FRONTEND_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') ||
		      ('0' <= *s && *s <= '9') || strchr("_-.", *s)))
			return false;
	return true;
}

/* A [section] line (s without its brackets). */
static void section(struct reader *r, char *s)
{
	char *w[3], raw[LINE_MAX_LEN + 2];
	unsigned n;
	struct proxy *px = r->px;

	snprintf(raw, sizeof(raw), "%s", s);
	n = split(s, w, 2);
	memset(r->seen, 0, sizeof(r->seen));
	r->fe = &r->junk;
	frontend_init(&r->junk, px, 0, "?", r->line);
	if (n == 1 && !strcmp(w[0], "global")) {
		r->fe = NULL;
		return;
	}
	if (!n || strcmp(w[0], "frontend")) {
		bad(r, "unknown section [%s]: [global] or [frontend NAME]", raw);
		return;
	}
	if (n != 2 || !name_ok(w[1])) {
		bad(r, "[%s]: the name must be one word of letters, digits, _ - . "
		    "(at most %d)", raw, FRONTEND_NAME_MAX);
		return;
	}
	for (unsigned i = 0; i < px->nfe; i++) {
		if (!strcmp(px->fe[i].name, w[1])) {
			bad(r, "frontend %s is defined on line %d already", w[1], px->fe[i].line);
			return;
		}
	}
	if (px->nfe == MAX_FRONTENDS) {
		bad(r, "frontend %s: at most %d frontends", w[1], MAX_FRONTENDS);
		return;
	}
	r->fe = &px->fe[px->nfe];
	frontend_init(r->fe, px, px->nfe, w[1], r->line);
	px->nfe++;
}

static int opt_find(const char *name)
{
	for (int i = 0; i < O__COUNT; i++)
		if (!strcmp(opts[i].name, name))
			return i;
	return -1;
}

/* A `name value` line. */
static void option(struct reader *r, char **w, unsigned n)
{
	char why[160];
	int id = opt_find(w[0]);
	const struct opt *o = id < 0 ? NULL : &opts[id];
	int *seen = r->fe ? r->seen : r->global_seen;

	if (!o) {
		bad(r, "unknown option '%s'", w[0]);
		return;
	}
	if (o->scope == CMDLINE) {
		bad(r, "'%s' is for the command line, not the file", w[0]);
		return;
	}
	if (o->scope == GLOBAL && r->fe) {
		bad(r, "'%s' applies to the whole process: put it before the first [frontend] "
		    "(or under [global])", w[0]);
		return;
	}
	if (o->scope == FRONTEND && !r->fe) {
		bad(r, "'%s' belongs in a [frontend NAME] section", w[0]);
		return;
	}
	if (o->value && n < 2) {
		bad(r, "'%s' needs a value: %s", w[0], o->value);
		return;
	}
	if (!o->value && n > 1) {
		bad(r, "'%s' takes no value", w[0]);
		return;
	}
	if (n > 2) {
		bad(r, "'%s' takes one value (%s), not several", w[0], o->value);
		return;
	}
	if (!o->repeat && seen[id]) {
		bad(r, "'%s' is set on line %d already", w[0], seen[id]);
		return;
	}
	seen[id] = r->line;
	if (opt_set(id, n > 1 ? w[1] : NULL, r->px, r->fe, why, sizeof(why))) {
		bad(r, "%s%s%s: %s", w[0], n > 1 ? " " : "", n > 1 ? w[1] : "", why);
		return;
	}
	if (id == O_LISTEN && r->fe != &r->junk)
		r->listen_line[r->fe->idx] = r->line;
}

/* Cuts a comment: `#` at the start or after a space. */
static void uncomment(char *s)
{
	for (char *p = s; *p; p++) {
		if (*p == '#' && (p == s || *(p - 1) == ' ' || *(p - 1) == '\t')) {
			*p = 0;
			return;
		}
	}
}

static void one_line(struct reader *r, char *s)
{
	char *w[3], *end;
	unsigned n;

	uncomment(s);
	s += strspn(s, " \t\r\n");
	if (*s == '[') {
		end = s + strlen(s);
		while (end > s && strchr(" \t\r\n", end[-1]))
			end--;
		if (end[-1] != ']') {
			bad(r, "a section line ends with ']'");
			return;
		}
		end[-1] = 0;
		section(r, s + 1);
		return;
	}
	n = split(s, w, 2);
	if (n)
		option(r, w, n);
}

/* After the last line: frontends without listen or upstream, and the rest. */
static void finish(struct reader *r)
{
	struct proxy *px = r->px;

	if (!px->nfe)
		bad_at(r, 0, "no [frontend NAME] section: nothing to listen on");
	for (unsigned i = 0; i < px->nfe; i++) {
		if (!px->fe[i].have_listen)
			bad_at(r, px->fe[i].line, "frontend %s has no 'listen'", px->fe[i].name);
		if (!px->fe[i].up.n)
			bad_at(r, px->fe[i].line, "frontend %s has no 'upstream'", px->fe[i].name);
	}
	check_whole(px, r->global_seen, r->listen_line, bad_at, r);
}

unsigned proxy_config_read(FILE *in, const char *name, struct proxy *px, FILE *errs)
{
	struct reader r = { .name = name, .errs = errs, .px = px };
	char buf[LINE_MAX_LEN + 2];

	while (fgets(buf, sizeof(buf), in)) {
		size_t len = strlen(buf);

		r.line++;
		if (len == sizeof(buf) - 1 && buf[len - 1] != '\n') {
			int ch;

			bad(&r, "line longer than %d bytes", LINE_MAX_LEN);
			while ((ch = fgetc(in)) != EOF && ch != '\n')
				;
			continue;
		}
		if (memchr(buf, 0, len + 1) != buf + len) {
			bad(&r, "a NUL byte: not a text file");
			continue;
		}
		one_line(&r, buf);
	}
	if (ferror(in))
		bad_at(&r, 0, "read error");
	finish(&r);
	return r.errors;
}

/* ---- the command line --------------------------------------------------- */

static void say_at(void *ctx, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say_at(void *ctx, int line, const char *fmt, ...)
{
	va_list ap;

	fputs("sheaf proxy: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int read_file(struct proxy *px)
{
	FILE *f = fopen(px->config, "r");
	unsigned n;

	if (!f) {
		say("proxy", "--config %s: %s", px->config, strerror(errno));
		return EXIT_USAGE;
	}
	n = proxy_config_read(f, px->config, px, stderr);
	fclose(f);
	if (n && px->check_only)
		say("proxy", "%s: %u mistake%s", px->config, n, n > 1 ? "s" : "");
	return n ? EXIT_USAGE : 0;
}

/* Applies one option from the command line; 0 or EXIT_USAGE. */
static int cmdline_opt(struct proxy *px, enum opt_id id, const char *val, bool *set)
{
	char why[160];

	set[id] = true;
	if (opts[id].scope == FRONTEND && !px->nfe) {
		frontend_init(&px->fe[0], px, 0, "main", 0);
		px->nfe = 1;
	}
	if (!opt_set(id, val, px, &px->fe[0], why, sizeof(why)))
		return 0;
	if (val)
		say("proxy", "--%s %s: %s", opts[id].name, val, why);
	else
		say("proxy", "--%s: %s", opts[id].name, why);
	return EXIT_USAGE;
}

/* Without --config: one frontend, and the checks the file would make. */
static int cmdline_check(struct proxy *px)
{
	int none[O__COUNT] = { 0 }, listen_lines[MAX_FRONTENDS] = { 0 };

	if (!px->nfe || !px->fe[0].have_listen || !px->fe[0].up.n) {
		say("proxy", "--listen and --upstream are required (or --config FILE)");
		return EXIT_USAGE;
	}
	if (px->fe[0].accept_proxy && !px->fe[0].header_timeout_ms) {
		say("proxy", "--header-timeout 0: a client could hold a slot forever");
		return EXIT_USAGE;
	}
	return check_whole(px, none, listen_lines, say_at, NULL) ? EXIT_USAGE : 0;
}

int proxy_args(int argc, char **argv, struct proxy *px, const char *help)
{
	static struct option lo[O__COUNT + 1];
	bool set[O__COUNT] = { false };
	int c, ret;

	for (int i = 0; i < O__COUNT; i++)
		lo[i] = (struct option){ opts[i].name, opts[i].value ? required_argument :
					 no_argument, 0, 256 + i };
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		int id = c - 256;

		if (c == 'h' || id == O_HELP)
			return ARGS_HELP;
		if (id < 0 || id >= O__COUNT) {
			fputs(help, stderr);
			return EXIT_USAGE;
		}
		if (id == O_CONFIG)
			px->config = optarg, set[id] = true;
		else if (id == O_CHECK)
			px->check_only = set[id] = true;
		else if ((ret = cmdline_opt(px, id, opts[id].value ? optarg : NULL, set)))
			return ret;
	}
	if (optind < argc) {
		say("proxy", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	if (!px->config)
		return cmdline_check(px);
	for (int i = 0; i < O__COUNT; i++) {
		if (set[i] && i != O_CONFIG && i != O_CHECK) {
			say("proxy", "--%s: not with --config (put it in %s)", opts[i].name,
			    px->config);
			return EXIT_USAGE;
		}
	}
	return read_file(px);
}
