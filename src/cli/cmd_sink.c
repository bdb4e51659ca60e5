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
	"                      duplication or reordering\n"
	"  --conns N           exit after N streams ended (default: run until SIGINT);\n"
	"                      connections that close without sending a byte do not count\n"
	"  --echo              send everything received back (by reference, no copy)\n"
	"  --io MODE           auto|bundle|ring|plain|sendmsg|epoll (default auto)\n"
	"  --buf-size BYTES    pool buffer size (default 64K)\n"
	"  --bufs N            pool buffers, power of two (default: ~8 MiB of pool)\n"
	"  --json              one JSON result line on stdout instead of text\n"
	"Exit status: 0 when every stream is intact (with --verify), 1 otherwise, 2 on bad usage.\n";

struct sink_opts {
	struct addr listen;
	bool have_listen, verify, echo, json;
	uint32_t conns;
	struct io_opts io;
};

struct sink_stream {
	struct stream_check chk;
	uint64_t bytes;
};

struct sink {
	struct sink_opts o;
	struct sheaf_loop *loop;
	struct pattern pat[4];
	unsigned npat;
	uint32_t ended, intact, failed, reported;
	uint32_t *ids;
	uint32_t nids, cap_ids;
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
		case 'h': fputs(help, stdout); exit(0);
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

/* Streams name their seed; a run normally uses one, a few are cached. */
static const struct pattern *pattern_for(uint64_t seed, void *arg)
{
	struct sink *s = arg;

	for (unsigned i = 0; i < s->npat; i++)
		if (s->pat[i].seed == seed)
			return &s->pat[i];
	if (s->npat == 4 || pattern_init(&s->pat[s->npat], seed))
		return NULL;
	return &s->pat[s->npat++];
}

static void on_accept(struct sheaf_conn *c, void *arg)
{
	struct sink_stream *st = calloc(1, sizeof(*st));

	if (!st) {
		((struct sink *)sheaf_loop_data(sheaf_conn_loop(c)))->oom = 1;
		sheaf_conn_close(c);
		return;
	}
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

static void record_id(struct sink *s, uint32_t id)
{
	if (s->nids == s->cap_ids) {
		uint32_t cap = s->cap_ids ? 2 * s->cap_ids : 64;
		uint32_t *v = realloc(s->ids, cap * sizeof(*v));

		if (!v) {
			s->oom = 1;
			return;
		}
		s->ids = v;
		s->cap_ids = cap;
	}
	s->ids[s->nids++] = id;
}

static void report(struct sink *s, const struct stream_check *k)
{
	if (s->reported++ < 20)
		say("sink", "stream %u: %s at offset %llu", k->id, k->why,
		    (unsigned long long)k->fail_off);
}

static void on_close(struct sheaf_conn *c, int err)
{
	struct sink *s = sheaf_loop_data(sheaf_conn_loop(c));
	struct sink_stream *st = sheaf_conn_data(c);

	if (!st)
		return;
	if (!st->bytes && !err) {
		/* a connection that sent nothing (a port probe) is no stream */
		free(st);
		return;
	}
	if (s->o.verify) {
		if (err && !st->chk.failed) {
			st->chk.failed = true;
			st->chk.fail_off = st->chk.off;
			snprintf(st->chk.why, sizeof(st->chk.why), "connection failed (%s)",
				 strerror(-err));
		}
		stream_end(&st->chk);
		if (st->chk.hdr_got == STREAM_HDR)
			record_id(s, st->chk.id);
		if (st->chk.failed) {
			s->failed++;
			report(s, &st->chk);
		} else {
			s->intact++;
		}
	}
	free(st);
	if (++s->ended == s->o.conns)
		sheaf_loop_stop(s->loop);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t duplicate_ids(struct sink *s)
{
	uint32_t dups = 0;

	qsort(s->ids, s->nids, sizeof(*s->ids), cmp_u32);
	for (uint32_t i = 1; i < s->nids; i++)
		if (s->ids[i] == s->ids[i - 1] && dups++ < 20)
			say("sink", "stream %u: received twice", s->ids[i]);
	return dups;
}

static int summary(struct sink *s)
{
	double secs = s->last > s->first ? s->last - s->first : 0;
	double mbps = secs > 0 ? (double)s->bytes * 8 / secs / 1e6 : 0;
	uint32_t dups = s->o.verify ? duplicate_ids(s) : 0;
	bool ok = !s->o.verify || (!s->failed && !dups && !s->oom &&
				   (!s->o.conns || s->intact == s->o.conns));

	if (s->o.json)
		printf("{\"streams\":%u,\"intact\":%u,\"failed\":%u,\"duplicates\":%u,"
		       "\"verified\":%s,\"bytes\":%llu,\"seconds\":%.6f,\"mbps\":%.1f,\"ok\":%s}\n",
		       s->ended, s->intact, s->failed, dups, s->o.verify ? "true" : "false",
		       (unsigned long long)s->bytes, secs, mbps, ok ? "true" : "false");
	else if (s->o.verify)
		printf("sheaf sink: %u streams, %u intact, %u failed, %llu bytes in %.3f s "
		       "(%.1f Mbit/s)\n", s->ended, s->intact, s->failed + dups,
		       (unsigned long long)s->bytes, secs, mbps);
	else
		printf("sheaf sink: %u connections, %llu bytes in %.3f s (%.1f Mbit/s)\n",
		       s->ended, (unsigned long long)s->bytes, secs, mbps);
	return ok ? 0 : 1;
}

int cmd_sink(int argc, char **argv)
{
	static struct sink s;
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = on_accept, .on_data = on_data,
				      .on_eof = on_eof, .on_close = on_close };
	struct sheaf_loop_config cfg;
	int ret, err = 0;

	s.o.io.buf_size = 65536;
	if ((ret = parse(argc, argv, &s.o)) ||
	    (ret = io_config("sink", &s.o.io, s.o.conns ? s.o.conns + 16 : 10000, &cfg)))
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
	stop_on_signals(s.loop);
	fprintf(stderr, "sheaf sink: listening on %s (io=%s, buf-size=%u, bufs=%u)\n",
		s.o.listen.text, sheaf_io_name(cfg.io), cfg.buf_size, cfg.nbufs);
	ret = sheaf_loop_run(s.loop);
	sheaf_loop_free(s.loop);
	if (ret < 0) {
		say("sink", "event loop failed: %s", strerror(-ret));
		return 1;
	}
	ret = summary(&s);
	for (unsigned i = 0; i < s.npat; i++)
		pattern_free(&s.pat[i]);
	free(s.ids);
	return ret;
}
