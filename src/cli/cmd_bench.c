/*
 * sheaf bench: the seed experiment on this machine. For each buffer size and
 * io mode (and each peer proxy) it starts a sink, a proxy and a source as
 * separate processes, measures throughput from the sink's first to last byte
 * and the proxy's CPU, and prints a table; --json, --plot and --markdown
 * write the runs. Topologies: loopback, or three network namespaces joined
 * by veth pairs (the seed's three machines), optionally shaped with tc.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "bench.h"

static const char help[] =
	"usage: sheaf bench [options]\n"
	"Runs source -> proxy -> sink for each buffer size, connection count and io mode\n"
	"(and each peer proxy), each as its own process, the cells of one size and\n"
	"connection count interleaved run by run, and prints the median of the runs\n"
	"(every run is in --json). Stream: runtime, throughput, %% of the link, proxy CPU\n"
	"per GiB, buffers per bundle, speed-up against ring mode. rr and rate: requests/s,\n"
	"proxy CPU per 100k requests over the source's measurement window (from\n"
	"/proc/PID/stat), the proxy's io_uring_enter (or epoll_wait) calls per request\n"
	"and latency percentiles.\n"
	"  --quick            32 B and 4 KiB, ring vs bundle, 32 MiB, 3 runs (make run)\n"
	"  --sizes LIST       buffer sizes, e.g. 32,80,320,1K (default 32,80,320,1K,4K,64K)\n"
	"  --modes LIST       io modes: bundle, ring, plain, sendmsg, epoll, recvmsg\n"
	"                     (default ring,bundle,sendmsg,recvmsg,plain,epoll)\n"
	"  --bytes N          bytes per run (default 256M; 64M with --topology netns;\n"
	"                     rr: request bytes, 4M)\n"
	"  --runs N           runs per cell (default 3)\n"
	"  --topology T       loopback (default) or netns: three namespaces (source,\n"
	"                     proxy, sink) on veth pairs, 198.18.0.0/15; needs root\n"
	"  --link-rate RATE   netns: shape proxy->sink with tc tbf (e.g. 1gbit, 10gbit)\n"
	"  --peers LIST       also run these proxies: haproxy, haproxy-splice, haproxy-bufsize\n"
	"                     (tune.bufsize = the buffer size), socat, nginx (Debian\n"
	"                     packages; one missing is skipped with a note)\n"
	"  --workload W       stream (default; every stream verified), rr (closed loop:\n"
	"                     each connection sends its next request when the answer is in)\n"
	"                     or rate (open loop at --rate; latency from when a request\n"
	"                     was due); rr and rate echo every byte back and check it\n"
	"  --conns LIST       connections, 1 to %d, e.g. 1,64,1000 (default 1; rr, rate: 64)\n"
	"  --msg-size N       rr, rate: request size (default: the buffer size)\n"
	"  --duration S       rr, rate: measure for S seconds (rate: default 3; rr: default\n"
	"                     until --bytes are echoed)\n"
	"  --warmup S         rr, rate: start measuring S seconds after every connection is\n"
	"                     connected (default 1 with --duration, else 0)\n"
	"  --rate N|P%%        rate: requests/s over all connections, or P%% of the closed-loop\n"
	"                     maximum of the first peer (else the first mode), measured at\n"
	"                     the same size and connection count first (default 50%%)\n"
	"  --syscalls         rr, rate: one more run per cell counting the proxy's system\n"
	"                     calls with perf stat (tracepoints); its CPU is not used\n"
	"  --json FILE        write every run as JSON (peer configs go beside it)\n"
	"  --plot FILE        throughput against size per mode and peer; with several\n"
	"                     --conns, proxy CPU per request (or GiB) against connections\n"
	"  --markdown FILE    write the table, command, kernel, CPU and date\n";

static struct bench_env *cleanup_env;

static void on_interrupt(int sig)
{
	if (cleanup_env)
		bench_cleanup(cleanup_env);
	_exit(128 + sig);
}

/* One item of --sizes, --conns, --modes or --peers into o; 0 or EXIT_USAGE. */
static int list_item(int c, const char *item, unsigned i, struct bench_opts *o)
{
	int mode = sheaf_io_parse(item);
	uint64_t v;

	if (c == 's' && size_opt("bench", "sizes", item, 1, SHEAF_MAX_BUF_SIZE, &v))
		return EXIT_USAGE;
	if (c == 'c' && num_opt("bench", "conns", item, 1, BENCH_MAX_CONNS, &v))
		return EXIT_USAGE;
	if (c == 'm' && mode <= 0) {
		say("bench", "--modes: unknown mode '%s' (bundle, ring, plain, sendmsg, epoll, recvmsg)", item);
		return EXIT_USAGE;
	}
	if (c == 'p' && !bench_peer_known(item)) {
		say("bench", "--peers: unknown peer '%s' (haproxy, haproxy-splice, haproxy-bufsize, "
		    "socat, nginx)", item);
		return EXIT_USAGE;
	}
	if (c == 's' || c == 'c')
		(c == 's' ? o->sizes : o->conns)[i] = (uint32_t)v;
	else if (c == 'm')
		o->modes[i] = mode;
	else
		o->peers[i] = bench_peer_name(item);
	return 0;
}

static const char *list_name(int c)
{
	return c == 's' ? "sizes" : c == 'c' ? "conns" : c == 'm' ? "modes" : "peers";
}

static int parse_list_opt(int c, const char *arg, struct bench_opts *o)
{
	char **items;
	unsigned n;
	int ret = 0;

	if (parse_list(arg, &items, &n) || n > BENCH_MAX) {
		say("bench", "--%s %s: a comma-separated list of at most %d", list_name(c), arg,
		    BENCH_MAX);
		ret = EXIT_USAGE;
	}
	for (unsigned i = 0; i < n && !ret; i++)
		ret = list_item(c, items[i], i, o);
	free_list(items, n);
	if (!ret)
		*(c == 's' ? &o->nsizes : c == 'c' ? &o->nconns : c == 'm' ? &o->nmodes :
		  &o->npeers) = n;
	o->conns_set |= c == 'c';
	return ret;
}

/* --duration, --warmup (0 allowed) and --rate N or P%. */
static int parse_number(int c, const char *arg, struct bench_opts *o)
{
	const char *rest = "";
	double v = 0;
	bool pct;

	if (parse_real(arg, &v, &rest))
		rest = "?";
	pct = c == 'R' && !strcmp(rest, "%");
	if ((*rest && !pct) || v > 1e8 || (v == 0 && c != 'W') || (pct && v > 1000)) {
		say("bench", "--%s %s: %s", c == 'd' ? "duration" : c == 'W' ? "warmup" : "rate",
		    arg, c == 'R' ? "requests/s, or a share of the maximum like 50%" :
				    "a number of seconds");
		return EXIT_USAGE;
	}
	if (c == 'd')
		o->duration = v;
	else if (c == 'W')
		o->warmup = v;
	else
		o->rate = pct ? v / 100 : v, o->rate_share = pct;
	return 0;
}

static int parse_workload(const char *arg, struct bench_opts *o)
{
	static const char *const names[] = { "stream", "rr", "rate" };

	for (int i = 0; i < 3; i++) {
		if (!strcmp(arg, names[i])) {
			o->workload = (enum bench_workload)i;
			return 0;
		}
	}
	say("bench", "--workload %s: stream, rr or rate", arg);
	return EXIT_USAGE;
}

static int parse_opt(int c, struct bench_opts *o)
{
	switch (c) {
	case 'q':
		o->sizes[0] = 32, o->sizes[1] = 4096, o->nsizes = 2;
		o->modes[0] = SHEAF_IO_RING, o->modes[1] = SHEAF_IO_BUNDLE, o->nmodes = 2;
		o->bytes = 32u << 20;
		return 0;
	case 's': case 'm': case 'p': case 'c':
		return parse_list_opt(c, optarg, o);
	case 'b':
		return size_opt("bench", "bytes", optarg, 1, UINT64_MAX, &o->bytes);
	case 'z': {
		uint64_t v;

		if (size_opt("bench", "msg-size", optarg, 1, 1u << 20, &v))
			return EXIT_USAGE;
		o->msg_size = (uint32_t)v;
		return 0;
	}
	case 'r':
		return u32_opt("bench", "runs", optarg, 1, BENCH_RUNS, &o->runs);
	case 'd': case 'W': case 'R':
		return parse_number(c, optarg, o);
	case 'l':
		if (bench_parse_rate(optarg, &o->link_mbps)) {
			say("bench", "--link-rate %s: not a rate (digits, a fraction if wanted, then "
			    "kbit, mbit, gbit or tbit: 100mbit, 2.5gbit)", optarg);
			return EXIT_USAGE;
		}
		o->link_rate = optarg;
		return 0;
	case 't':
		if (!strcmp(optarg, "loopback") || !strcmp(optarg, "netns")) {
			o->netns = !strcmp(optarg, "netns");
			return 0;
		}
		say("bench", "--topology %s: loopback or netns", optarg);
		return EXIT_USAGE;
	case 'w': return parse_workload(optarg, o);
	case 'S': o->syscalls = true; return 0;
	case 'j': o->json = optarg; return 0;
	case 'P': o->plot = optarg; return 0;
	case 'M': o->markdown = optarg; return 0;
	case 'h': return ARGS_HELP;
	}
	fprintf(stderr, help, BENCH_MAX_CONNS);
	return EXIT_USAGE;
}

/* What the options need of each other, and the defaults that depend on
 * the workload; 0 or EXIT_USAGE. */
static int check(struct bench_opts *o, bool have_bytes)
{
	const char *bad = NULL;

	if (o->link_rate && !o->netns)
		bad = "--link-rate needs --topology netns";
	else if ((o->duration || o->msg_size || o->warmup >= 0 || o->syscalls) && !bench_rr_like(o))
		bad = "--duration, --warmup, --msg-size and --syscalls need --workload rr or rate";
	else if (o->rate && o->workload != BENCH_RATE)
		bad = "--rate needs --workload rate";
	else if (o->syscalls && !o->duration && o->workload == BENCH_RR)
		bad = "--syscalls needs --duration";
	else if (o->syscalls && !bench_perf_available())
		bad = "--syscalls needs perf (apt-get install linux-perf)";
	if (bad) {
		say("bench", "%s", bad);
		return EXIT_USAGE;
	}
	if (o->netns && !have_bytes)
		o->bytes = 64u << 20;
	if (bench_rr_like(o) && !have_bytes)
		o->bytes = o->duration || o->workload == BENCH_RATE ? 1ull << 40 : 4u << 20;
	if (o->workload == BENCH_RATE && !o->duration)
		o->duration = 3;
	if (o->workload == BENCH_RATE && !o->rate)
		o->rate = 0.5, o->rate_share = true;
	if (o->warmup < 0)
		o->warmup = o->duration ? 1 : 0;
	if (!o->conns_set)
		o->conns[0] = bench_rr_like(o) ? 64 : 1;
	return 0;
}

static int parse(int argc, char **argv, struct bench_opts *o)
{
	static const struct option opts[] = {
		{ "quick", no_argument, 0, 'q' },         { "sizes", required_argument, 0, 's' },
		{ "modes", required_argument, 0, 'm' },   { "bytes", required_argument, 0, 'b' },
		{ "runs", required_argument, 0, 'r' },    { "json", required_argument, 0, 'j' },
		{ "plot", required_argument, 0, 'P' },    { "topology", required_argument, 0, 't' },
		{ "link-rate", required_argument, 0, 'l' }, { "peers", required_argument, 0, 'p' },
		{ "workload", required_argument, 0, 'w' }, { "conns", required_argument, 0, 'c' },
		{ "markdown", required_argument, 0, 'M' }, { "msg-size", required_argument, 0, 'z' },
		{ "duration", required_argument, 0, 'd' }, { "warmup", required_argument, 0, 'W' },
		{ "rate", required_argument, 0, 'R' },    { "syscalls", no_argument, 0, 'S' },
		{ "help", no_argument, 0, 'h' },          { 0 }
	};
	int c, ret;
	bool have_bytes = false;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((ret = parse_opt(c, o)))
			return ret;
		have_bytes |= c == 'b' || c == 'q';
	}
	if (optind < argc) {
		say("bench", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	return check(o, have_bytes);
}

static void progress(const struct bench_cell *c, unsigned run, unsigned runs)
{
	if (isatty(2))
		fprintf(stderr, "\r%-16s %7u B %5u conns  run %u/%u   ", c->name, c->size,
			c->conns, run, runs);
}

/* One run of c, kept (and reported if it failed); 1 if it failed. */
static int run_one(struct bench_env *env, const struct bench_opts *o, struct bench_cell *c,
		   struct bench_run *r, bool count_syscalls)
{
	if (!bench_run_once(env, o, c, r, count_syscalls))
		return 0;
	say("bench", "%s at %u B, %u conns%s: run failed%s%s", c->name, c->size, c->conns,
	    count_syscalls ? " (syscall count)" : "", r->why[0] ? ": " : "", r->why);
	return 1;
}

/*
 * The cells of one size and connection count, run by run in turn (so that
 * what the machine's other load does falls on all of them alike).
 */
static int run_group(struct bench_env *env, const struct bench_opts *o,
		     struct bench_cell *cells, unsigned n)
{
	int failed = 0;

	for (unsigned r = 0; r < o->runs; r++) {
		for (unsigned i = 0; i < n; i++) {
			progress(&cells[i], r + 1, o->runs);
			failed |= run_one(env, o, &cells[i], &cells[i].runs[cells[i].n++], false);
		}
	}
	for (unsigned i = 0; i < n && o->syscalls; i++) {
		progress(&cells[i], o->runs + 1, o->runs + 1);
		failed |= run_one(env, o, &cells[i], &cells[i].sys, true);
	}
	for (unsigned i = 0; i < n; i++)
		bench_summarize(&cells[i], o);
	return failed;
}

static void cell_init(struct bench_cell *c, const struct bench_opts *o, uint32_t size,
		      uint32_t conns, int mode, const char *peer)
{
	c->size = size;
	c->conns = conns;
	c->mode = mode;
	c->peer = peer;
	c->rate = o->rate_share ? 0 : o->rate;
	snprintf(c->name, sizeof(c->name), "%s", peer ? peer : sheaf_io_name(mode));
}

/* rate P%: the closed-loop maximum of the reference at this size and
 * connection count sets the rate of the group. */
static int reference_rate(struct bench_env *env, const struct bench_opts *o,
			  struct bench_cell *ref, struct bench_cell *group, unsigned n)
{
	int failed;

	ref->reference = true;
	snprintf(ref->name, sizeof(ref->name), "%.17s max", ref->peer ? ref->peer :
		 sheaf_io_name(ref->mode));
	failed = run_group(env, o, ref, 1);
	for (unsigned i = 0; i < n; i++)
		group[i].rate = ref->tps * o->rate;
	return failed;
}

/* The cells of one size and connection count: modes, then the peers that
 * are installed. *ref: the first peer's, else 0. */
static unsigned group_cells(const struct bench_opts *o, struct bench_cell *g, uint32_t size,
			    uint32_t conns, bool note, unsigned *ref)
{
	unsigned n = 0;

	for (unsigned m = 0; m < o->nmodes; m++)
		cell_init(&g[n++], o, size, conns, o->modes[m], NULL);
	*ref = 0;
	for (unsigned p = 0; p < o->npeers; p++) {
		if (bench_peer_available(o->peers[p])) {
			if (!*ref && n >= o->nmodes && o->nmodes)
				*ref = n;
			cell_init(&g[n++], o, size, conns, 0, o->peers[p]);
		} else if (note) {
			printf("note: peer %s is not installed (apt-get install %s); skipped\n",
			       o->peers[p], bench_peer_package(o->peers[p]));
		}
	}
	return n;
}

/*
 * Size by size, connection count by count; rate P% first runs the
 * reference closed loop (its cell goes first in the table, named "... max").
 */
static int sweep(struct bench_env *env, const struct bench_opts *o, struct bench_cell *cells,
		 unsigned *n)
{
	unsigned has_ref = o->workload == BENCH_RATE && o->rate_share;
	int failed = 0;

	for (unsigned s = 0; s < o->nsizes; s++) {
		for (unsigned k = 0; k < o->nconns; k++) {
			struct bench_cell *g = &cells[*n];
			unsigned ref, gn = group_cells(o, g + has_ref, o->sizes[s], o->conns[k],
						       !s && !k, &ref);

			if (has_ref) {
				g[0] = g[1 + ref];
				failed |= reference_rate(env, o, g, g + 1, gn);
			}
			failed |= run_group(env, o, g + has_ref, gn);
			*n += gn + has_ref;
		}
	}
	if (isatty(2))
		fprintf(stderr, "\r%60s\r", "");
	return failed;
}

static const struct bench_opts defaults = {
	.sizes = { 32, 80, 320, 1024, 4096, 65536 }, .nsizes = 6,
	.modes = { SHEAF_IO_RING, SHEAF_IO_BUNDLE, SHEAF_IO_SENDMSG, SHEAF_IO_RECVMSG,
		   SHEAF_IO_PLAIN, SHEAF_IO_EPOLL }, .nmodes = 6,
	.runs = 3, .bytes = 256u << 20, .nconns = 1, .warmup = -1
};

int bench_check_args(int argc, char **argv)
{
	static struct bench_opts o;

	o = defaults;
	return parse(argc, argv, &o);
}

int cmd_bench(int argc, char **argv)
{
	static struct bench_opts o;
	static struct bench_env env;
	struct bench_cell *cells;
	unsigned n = 0;
	int ret, failed;

	o = defaults;
	if ((ret = parse(argc, argv, &o)) == ARGS_HELP) {
		printf(help, BENCH_MAX_CONNS);
		return 0;
	}
	if (ret)
		return ret;
	cells = calloc((size_t)o.nsizes * o.nconns * (o.nmodes + o.npeers + 1), sizeof(*cells));
	if (!cells) {
		say("bench", "out of memory");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	cleanup_env = &env;
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);
	if ((ret = bench_setup(&env, &o))) {
		bench_cleanup(&env);
		free(cells);
		return ret;
	}
	failed = sweep(&env, &o, cells, &n);
	bench_cleanup(&env);
	bench_report(&o, cells, n, argc, argv);
	free(cells);
	return failed ? 1 : 0;
}
