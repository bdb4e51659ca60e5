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
	"Runs source -> proxy -> sink for each buffer size and io mode (and each peer\n"
	"proxy), each as its own process, and prints runtime, throughput, %% of the\n"
	"link, proxy CPU per GiB, buffers per bundle and the speed-up against ring\n"
	"mode (median of the runs; every run is in --json).\n"
	"  --quick            32 B and 4 KiB, ring vs bundle, 32 MiB, 3 runs (make run)\n"
	"  --sizes LIST       buffer sizes, e.g. 32,80,320,1K (default 32,80,320,1K,4K,64K)\n"
	"  --modes LIST       io modes (default ring,bundle,sendmsg,plain,epoll)\n"
	"  --bytes N          bytes per run (default 256M; 64M with --topology netns)\n"
	"  --runs N           runs per cell (default 3)\n"
	"  --topology T       loopback (default) or netns: three namespaces (source,\n"
	"                     proxy, sink) on veth pairs, 198.18.0.0/15; needs root\n"
	"  --link-rate RATE   netns: shape proxy->sink with tc tbf (e.g. 1gbit, 10gbit)\n"
	"  --peers LIST       also run these proxies: haproxy, haproxy-splice, socat, nginx\n"
	"                     (Debian packages; one missing is skipped with a note)\n"
	"  --workload W       stream (default) or rr: request/response through the\n"
	"                     proxy, SIZE = request size, latency percentiles\n"
	"  --conns N          rr: connections (default 64)\n"
	"  --json FILE        write every run as JSON (peer configs go beside it)\n"
	"  --plot FILE        throughput against size per mode and peer (.png or .svg)\n"
	"  --markdown FILE    write the table, command, kernel, CPU and date\n";

static struct bench_env *cleanup_env;

static void on_interrupt(int sig)
{
	if (cleanup_env)
		bench_cleanup(cleanup_env);
	_exit(128 + sig);
}

/* One item of --sizes, --modes or --peers into o; 0 or EXIT_USAGE. */
static int list_item(int c, const char *item, unsigned i, struct bench_opts *o)
{
	int mode = sheaf_io_parse(item);
	uint64_t v;

	if (c == 's' && size_opt("bench", "sizes", item, 1, SHEAF_MAX_BUF_SIZE, &v))
		return EXIT_USAGE;
	if (c == 'm' && mode <= 0) {
		say("bench", "--modes: unknown mode '%s' (bundle, ring, plain, sendmsg, epoll)", item);
		return EXIT_USAGE;
	}
	if (c == 'p' && !bench_peer_known(item)) {
		say("bench", "--peers: unknown peer '%s' (haproxy, haproxy-splice, socat, nginx)",
		    item);
		return EXIT_USAGE;
	}
	if (c == 's')
		o->sizes[i] = (uint32_t)v;
	else if (c == 'm')
		o->modes[i] = mode;
	else
		o->peers[i] = bench_peer_name(item);
	return 0;
}

static int parse_list_opt(int c, const char *arg, struct bench_opts *o)
{
	char **items;
	unsigned n;
	int ret = 0;

	if (parse_list(arg, &items, &n) || n > BENCH_MAX) {
		say("bench", "--%s %s: a comma-separated list of at most %d",
		    c == 's' ? "sizes" : c == 'm' ? "modes" : "peers", arg, BENCH_MAX);
		ret = EXIT_USAGE;
	}
	for (unsigned i = 0; i < n && !ret; i++)
		ret = list_item(c, items[i], i, o);
	free_list(items, n);
	if (!ret)
		*(c == 's' ? &o->nsizes : c == 'm' ? &o->nmodes : &o->npeers) = n;
	return ret;
}

static int parse_opt(int c, struct bench_opts *o)
{
	switch (c) {
	case 'q':
		o->sizes[0] = 32, o->sizes[1] = 4096, o->nsizes = 2;
		o->modes[0] = SHEAF_IO_RING, o->modes[1] = SHEAF_IO_BUNDLE, o->nmodes = 2;
		o->bytes = 32u << 20;
		return 0;
	case 's': case 'm': case 'p':
		return parse_list_opt(c, optarg, o);
	case 'b':
		return size_opt("bench", "bytes", optarg, 1, UINT64_MAX, &o->bytes);
	case 'r':
		return u32_opt("bench", "runs", optarg, 1, BENCH_RUNS, &o->runs);
	case 'c':
		return u32_opt("bench", "conns", optarg, 1, 4000, &o->conns);
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
	case 'w':
		if (!strcmp(optarg, "stream") || !strcmp(optarg, "rr")) {
			o->rr = !strcmp(optarg, "rr");
			return 0;
		}
		say("bench", "--workload %s: stream or rr", optarg);
		return EXIT_USAGE;
	case 'j': o->json = optarg; return 0;
	case 'P': o->plot = optarg; return 0;
	case 'M': o->markdown = optarg; return 0;
	case 'h': return ARGS_HELP;
	}
	fputs(help, stderr);
	return EXIT_USAGE;
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
		{ "markdown", required_argument, 0, 'M' }, { "help", no_argument, 0, 'h' },
		{ 0 }
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
	if (o->link_rate && !o->netns) {
		say("bench", "--link-rate %s: needs --topology netns", o->link_rate);
		return EXIT_USAGE;
	}
	if (o->netns && !have_bytes)
		o->bytes = 64u << 20;
	if (o->rr && !have_bytes)
		o->bytes = 4u << 20;
	return 0;
}

static void progress(const char *what, uint32_t size, unsigned run, unsigned runs)
{
	if (isatty(2))
		fprintf(stderr, "\r%-16s %7u B  run %u/%u   ", what, size, run, runs);
}

/* Runs every run of one cell; the cell's name is a mode or a peer. */
static int run_cell(struct bench_env *env, const struct bench_opts *o, struct bench_cell *c)
{
	int failed = 0;

	for (unsigned r = 0; r < o->runs; r++) {
		struct bench_run *run = &c->runs[c->n++];

		progress(c->name, c->size, r + 1, o->runs);
		if (bench_run_once(env, o, c, run)) {
			say("bench", "%s at %u B: run %u failed%s%s", c->name, c->size, r + 1,
			    run->why[0] ? ": " : "", run->why);
			failed = 1;
		}
	}
	bench_summarize(c, o);
	return failed;
}

static int sweep(struct bench_env *env, const struct bench_opts *o, struct bench_cell *cells,
		 unsigned *n)
{
	int failed = 0;

	for (unsigned s = 0; s < o->nsizes; s++) {
		for (unsigned m = 0; m < o->nmodes; m++) {
			struct bench_cell *c = &cells[(*n)++];

			c->size = o->sizes[s];
			c->mode = o->modes[m];
			snprintf(c->name, sizeof(c->name), "%s", sheaf_io_name(c->mode));
			failed |= run_cell(env, o, c);
		}
		for (unsigned p = 0; p < o->npeers; p++) {
			struct bench_cell *c = &cells[*n];

			if (!bench_peer_available(o->peers[p])) {
				if (s == 0)
					printf("note: peer %s is not installed (apt-get install %s); skipped\n",
					       o->peers[p], bench_peer_package(o->peers[p]));
				continue;
			}
			(*n)++;
			c->size = o->sizes[s];
			c->peer = o->peers[p];
			snprintf(c->name, sizeof(c->name), "%s", o->peers[p]);
			failed |= run_cell(env, o, c);
		}
	}
	if (isatty(2))
		fprintf(stderr, "\r%50s\r", "");
	return failed;
}

static const struct bench_opts defaults = {
	.sizes = { 32, 80, 320, 1024, 4096, 65536 }, .nsizes = 6,
	.modes = { SHEAF_IO_RING, SHEAF_IO_BUNDLE, SHEAF_IO_SENDMSG, SHEAF_IO_PLAIN,
		   SHEAF_IO_EPOLL }, .nmodes = 5,
	.runs = 3, .bytes = 256u << 20, .conns = 64
};

int bench_check_args(int argc, char **argv)
{
	struct bench_opts o = defaults;

	return parse(argc, argv, &o);
}

int cmd_bench(int argc, char **argv)
{
	static struct bench_opts o;
	static struct bench_cell cells[BENCH_MAX * BENCH_MAX * 2];
	static struct bench_env env;
	unsigned n = 0;
	int ret, failed;

	o = defaults;
	if ((ret = parse(argc, argv, &o)) == ARGS_HELP) {
		fputs(help, stdout);
		return 0;
	}
	if (ret)
		return ret;
	signal(SIGPIPE, SIG_IGN);
	cleanup_env = &env;
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);
	if ((ret = bench_setup(&env, &o))) {
		bench_cleanup(&env);
		return ret;
	}
	failed = sweep(&env, &o, cells, &n);
	bench_cleanup(&env);
	bench_report(&o, cells, n, argc, argv);
	return failed ? 1 : 0;
}
