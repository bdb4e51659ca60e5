/* sheaf sink: accepts streams, receives them with recv bundles, verifies. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help[] =
	"usage: sheaf sink --listen HOST:PORT [options]\n"
	"Receives TCP streams through libsheaf (recv bundles by default) and reports\n"
	"bytes and throughput from the first byte to the last.\n"
	"  --listen HOST:PORT  address to accept on\n"
	"  --verify            check every byte of each stream (sheaf source --verify);\n"
	"                      names the stream and offset of any loss, corruption,\n"
	"                      duplication or reordering (the first 20 failures, then\n"
	"                      how many more); a stream is named by its seed and id,\n"
	"                      and each seed seen costs 2 MiB of pattern\n"
	"  --conns N           exit after N streams ended (default: run until SIGINT);\n"
	"                      connections that close without sending a byte do not count\n"
	"  --echo              send everything received back (by reference, no copy)\n"
	"  --io MODE           auto|bundle|ring|plain|sendmsg|epoll|recvmsg (default auto)\n"
	"  --buf-size BYTES    pool buffer size (default 64K)\n"
	"  --bufs N            pool buffers, power of two (default: ~8 MiB of pool)\n"
	"  --json              one JSON result line on stdout instead of text\n"
	"Signals: SIGINT or SIGTERM stop it (the result line follows); SIGUSR1 prints a\n"
	"counters line on stderr and goes on; SIGHUP is logged and ignored; SIGUSR2 and\n"
	"SIGPIPE are ignored.\n"
	"Exit status: 2 on bad usage; 1 on a runtime error; with --verify, 1 also when a\n"
	"stream was not intact or, with --conns N, when fewer than N intact streams ended\n"
	"(stopped by SIGINT/SIGTERM before); else 0 (also when stopped before any stream).\n";

struct sink_opts {
	struct addr listen;
	bool have_listen, verify, echo, json;
	uint32_t conns;
	struct io_opts io;
};

struct sink_stream {
	struct stream_check chk;
	uint64_t bytes;
	uint32_t nr; /* accept order, from 1: names a stream without a usable header */
};

/* A stream that arrived intact, by what names it: (seed, id). */
struct seen {
	uint64_t seed;
	uint32_t id;
};

struct sink {
	struct sink_opts o;
	struct sheaf_loop *loop;
	struct pattern **pat; /* one per seed seen (2 MiB each), in arrival order */
	unsigned npat, cap_pat;
	uint32_t accepted, open, ended, intact, failed, bad_hdr, reported;
	struct seen *seen;
	uint32_t nseen, cap_seen;
	uint64_t bytes;
	double first, last;
	int oom;
};

static int parse(int argc, char **argv, struct sink_opts *o)
{
	static const struct option opts[] = {
		{ "listen", required_argument, 0, 'l' }, { "verify", no_argument, 0, 'v' },
		{ "conns", required_argument, 0, 'c' },  { "echo", no_argument, 0, 'e' },
		{ "io", required_argument, 0, 'i' },     { "buf-size", required_argument, 0, 'b' },
		{ "bufs", required_argument, 0, 'n' },   { "json", no_argument, 0, 'j' },
		{ "help", no_argument, 0, 'h' },         { 0 }
	};
	int c, idx, ret;

	while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		switch (c) {
		case 'l':
			if (addr_opt("sink", "listen", optarg, &o->listen))
				return EXIT_USAGE;
			o->have_listen = true;
			break;
		case 'v': o->verify = true; break;
		case 'e': o->echo = true; break;
		case 'j': o->json = true; break;
		case 'c':
			if (u32_opt("sink", "conns", optarg, 1, 9990, &o->conns))
				return EXIT_USAGE;
			break;
		case 'i': case 'b': case 'n':
			if ((ret = io_opt("sink", &o->io, opts[idx].name, optarg)))
				return ret;
			break;
		case 'h': return ARGS_HELP;
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc || !o->have_listen) {
		say("sink", optind < argc ? "unexpected argument '%s'" : "--listen is required%s",
		    optind < argc ? argv[optind] : "");
		return EXIT_USAGE;
	}
	return 0;
}

/* Streams name their seed; a run normally uses one, but any number may come.
 * Each pattern has its own allocation: stream checks point into them. */
static const struct pattern *pattern_for(uint64_t seed, void *arg)
{
	struct sink *s = arg;
	struct pattern *p;

	for (unsigned i = 0; i < s->npat; i++)
		if (s->pat[i]->seed == seed)
			return s->pat[i];
	if (s->npat == s->cap_pat) {
		unsigned cap = s->cap_pat ? 2 * s->cap_pat : 4;
		struct pattern **v = realloc(s->pat, cap * sizeof(*v));

		if (!v)
			goto oom;
		s->pat = v;
		s->cap_pat = cap;
	}
	p = malloc(sizeof(*p));
	if (!p || pattern_init(p, seed)) {
		free(p);
		goto oom;
	}
	s->pat[s->npat++] = p;
	return p;
oom:
	s->oom = 1;
	return NULL;
}

static void patterns_free(struct sink *s)
{
	for (unsigned i = 0; i < s->npat; i++) {
		pattern_free(s->pat[i]);
		free(s->pat[i]);
	}
	free(s->pat);
}

static void on_accept(struct sheaf_conn *c, void *arg)
{
	struct sink *s = sheaf_loop_data(sheaf_conn_loop(c));
	struct sink_stream *st = calloc(1, sizeof(*st));

	if (!st) {
		s->oom = 1;
		sheaf_conn_close(c);
		return;
	}
	st->nr = ++s->accepted;
	s->open++;
	sheaf_conn_set_data(c, st);
	sheaf_conn_start(c);
}

static void on_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
{
	struct sink *s = sheaf_loop_data(sheaf_conn_loop(c));
	struct sink_stream *st = sheaf_conn_data(c);
	double t = now_sec();

	if (!s->bytes)
		s->first = t;
	s->last = t;
	s->bytes += b->bytes;
	st->bytes += b->bytes;
	if (s->o.verify)
		for (unsigned i = 0; i < b->nr && !st->chk.failed; i++)
			stream_feed(&st->chk, b->iov[i].iov_base, b->iov[i].iov_len,
				    pattern_for, s);
	if (s->o.echo)
		sheaf_conn_forward(c, b);
}

static void on_eof(struct sheaf_conn *c)
{
	sheaf_conn_close(c);
}

static void record_intact(struct sink *s, const struct stream_check *k)
{
	if (s->nseen == s->cap_seen) {
		uint32_t cap = s->cap_seen ? 2 * s->cap_seen : 64;
		struct seen *v = realloc(s->seen, cap * sizeof(*v));

		if (!v) {
			s->oom = 1;
			return;
		}
		s->seen = v;
		s->cap_seen = cap;
	}
	s->seen[s->nseen++] = (struct seen){ .seed = k->seed, .id = k->id };
}

#define LIST_MAX 20 /* failures named one by one; the rest are counted */

static void report(struct sink *s, const struct sink_stream *st)
{
	const struct stream_check *k = &st->chk;

	if (s->reported++ >= LIST_MAX)
		return;
	if (k->bad_hdr)
		say("sink", "connection %u: bad stream header (not from sheaf source --verify?)",
		    st->nr);
	else if (k->hdr_got < STREAM_HDR)
		say("sink", "connection %u: %s after %u bytes", st->nr, k->why, k->hdr_got);
	else
		say("sink", "stream %u (seed %llu): %s at offset %llu", k->id,
		    (unsigned long long)k->seed, k->why, (unsigned long long)k->fail_off);
}

static void verify_end(struct sink *s, struct sink_stream *st, int err)
{
	struct stream_check *k = &st->chk;

	if (err && !k->failed) {
		k->failed = true;
		k->fail_off = k->off;
		snprintf(k->why, sizeof(k->why), "connection failed (%s)", strerror(-err));
	}
	stream_end(k);
	if (k->failed) {
		s->failed++;
		s->bad_hdr += k->bad_hdr;
		report(s, st);
	} else {
		s->intact++;
		record_intact(s, k);
	}
}

static void on_close(struct sheaf_conn *c, int err)
{
	struct sink *s = sheaf_loop_data(sheaf_conn_loop(c));
	struct sink_stream *st = sheaf_conn_data(c);

	if (!st)
		return;
	s->open--;
	if (!st->bytes && !err) {
		/* a connection that sent nothing (a port probe) is no stream */
		free(st);
		return;
	}
	if (s->o.verify)
		verify_end(s, st, err);
	free(st);
	if (++s->ended == s->o.conns)
		sheaf_loop_stop(s->loop);
}

static int cmp_seen(const void *a, const void *b)
{
	const struct seen *x = a, *y = b;

	if (x->seed != y->seed)
		return x->seed < y->seed ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Intact streams that came more than once: each extra copy is a failure. */
static uint32_t duplicates(struct sink *s)
{
	uint32_t dups = 0;

	if (s->nseen > 1)
		qsort(s->seen, s->nseen, sizeof(*s->seen), cmp_seen);
	for (uint32_t i = 1; i < s->nseen; i++)
		if (!cmp_seen(&s->seen[i], &s->seen[i - 1]) && dups++ < LIST_MAX)
			say("sink", "stream %u (seed %llu): received twice", s->seen[i].id,
			    (unsigned long long)s->seen[i].seed);
	if (dups > LIST_MAX)
		say("sink", "... and %u more streams received twice", dups - LIST_MAX);
	return dups;
}

/* " (1 bad header, 3 received twice)" or "" */
static const char *failure_kinds(uint32_t bad_hdr, uint32_t dups, char *buf, size_t len)
{
	int n = 0;

	buf[0] = 0;
	if (bad_hdr)
		n = snprintf(buf, len, " (%u bad header%s", bad_hdr, bad_hdr == 1 ? "" : "s");
	if (dups)
		n += snprintf(buf + n, len - (size_t)n, "%s%u received twice", n ? ", " : " (",
			      dups);
	if (n)
		snprintf(buf + n, len - (size_t)n, ")");
	return buf;
}

static int summary(struct sink *s)
{
	double secs = s->last > s->first ? s->last - s->first : 0;
	double mbps = secs > 0 ? (double)s->bytes * 8 / secs / 1e6 : 0;
	uint32_t dups = 0, intact, failed;
	char kinds[64];
	bool ok;

	if (s->o.verify && s->reported > LIST_MAX)
		say("sink", "... and %u more failed streams", s->reported - LIST_MAX);
	if (s->o.verify)
		dups = duplicates(s);
	intact = s->intact - dups;
	failed = s->failed + dups;
	ok = !s->o.verify || (!failed && !s->oom && (!s->o.conns || intact == s->o.conns));
	if (s->o.json)
		printf("{\"streams\":%u,\"intact\":%u,\"failed\":%u,\"duplicates\":%u,"
		       "\"bad_headers\":%u,\"verified\":%s,\"bytes\":%llu,\"seconds\":%.6f,"
		       "\"mbps\":%.1f,\"ok\":%s}\n", s->ended, intact, failed, dups, s->bad_hdr,
		       s->o.verify ? "true" : "false", (unsigned long long)s->bytes, secs, mbps,
		       ok ? "true" : "false");
	else if (s->o.verify)
		printf("sheaf sink: %u streams, %u intact, %u failed%s, %llu bytes in %.3f s "
		       "(%.1f Mbit/s)\n", s->ended, intact, failed,
		       failure_kinds(s->bad_hdr, dups, kinds, sizeof(kinds)),
		       (unsigned long long)s->bytes, secs, mbps);
	else
		printf("sheaf sink: %u connections, %llu bytes in %.3f s (%.1f Mbit/s)\n",
		       s->ended, (unsigned long long)s->bytes, secs, mbps);
	return ok ? 0 : 1;
}

/* SIGUSR1: where the run is, on stderr (stdout keeps the one result line). */
static void counters(const struct sink *s)
{
	fprintf(stderr, "sheaf sink: counters {\"open\":%u,\"streams\":%u,\"intact\":%u,"
		"\"failed\":%u,\"bad_headers\":%u,\"bytes\":%llu}\n", s->open, s->ended,
		s->intact, s->failed, s->bad_hdr, (unsigned long long)s->bytes);
}

/* The signal handler only sets a flag; this looks at it on the loop's thread. */
static void on_tick(struct sheaf_timer *t, void *arg)
{
	if (info_signals_take("sink") & INFO_USR1)
		counters(arg);
}

#define TICK_MS 100 /* how late a SIGHUP or SIGUSR1 may be noticed */

/* Signals, then run until stopped: 0 or -errno. */
static int run(struct sink *s)
{
	int err = 0;

	stop_on_signals(s->loop);
	if (!sheaf_timer_add(s->loop, TICK_MS, TICK_MS, on_tick, s, &err))
		return err;
	return sheaf_loop_run(s->loop);
}

int sink_check_args(int argc, char **argv)
{
	struct sink_opts o = { .io.buf_size = 65536 };

	return parse(argc, argv, &o);
}

int cmd_sink(int argc, char **argv)
{
	static struct sink s;
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = on_accept, .on_data = on_data,
				      .on_eof = on_eof, .on_close = on_close };
	struct sheaf_loop_config cfg;
	int ret, err = 0;

	s.o.io.buf_size = 65536;
	if ((ret = parse(argc, argv, &s.o)) == ARGS_HELP) {
		fputs(help, stdout);
		return 0;
	}
	info_signals(NULL); /* from here on a SIGHUP or SIGUSR1 is never fatal */
	if (ret || (ret = io_config("sink", &s.o.io, s.o.conns ? s.o.conns + 16 : 10000, &cfg)))
		return ret;
	s.loop = sheaf_loop_new(&cfg, &cb, &s, &err);
	if (!s.loop) {
		say("sink", "cannot set up io_uring: %s", strerror(-err));
		return 1;
	}
	ret = sheaf_listen(s.loop, (const struct sockaddr *)&s.o.listen.ss, s.o.listen.len, NULL);
	if (ret < 0) {
		say("sink", "--listen %s: %s", s.o.listen.text, strerror(-ret));
		sheaf_loop_free(s.loop);
		return 1;
	}
	addr_bound(ret, &s.o.listen);
	fprintf(stderr, "sheaf sink: listening on %s (io=%s, buf-size=%u, bufs=%u)\n",
		s.o.listen.text, sheaf_io_name(cfg.io), cfg.buf_size, cfg.nbufs);
	ret = run(&s);
	sheaf_loop_free(s.loop);
	if (ret < 0) {
		say("sink", "event loop failed: %s", strerror(-ret));
		return 1;
	}
	ret = summary(&s);
	patterns_free(&s);
	free(s.seen);
	return ret;
}
