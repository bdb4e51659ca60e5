/* sheaf proxy: an L4 TCP proxy; each client is linked to one upstream. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
	"usage: sheaf proxy --listen HOST:PORT --upstream HOST:PORT [options]\n"
	"Accepts TCP connections and links each to a new connection to the upstream;\n"
	"bytes move both ways by reference through one provided-buffer pool.\n"
	"Runs until SIGINT/SIGTERM, then drains (at most 2 s) and prints its counters.\n"
	"  --listen HOST:PORT     address to accept on\n"
	"  --upstream HOST:PORT   where to connect for each client; repeat it for several: each\n"
	"                         client goes to the next in turn, and to the one after if\n"
	"                         connecting fails (at least one must listen at start)\n"
	"  --io MODE              auto|bundle|ring|plain|sendmsg|epoll (default auto,\n"
	"                         see sheaf probe)\n"
	"  --buf-size BYTES       pool buffer size, 1 .. 1M (default 4K; suffixes K M G)\n"
	"  --bufs N               pool buffers, power of two, 2 .. 32768 (default: ~8 MiB of\n"
	"                         pool); half receive from clients, half from upstreams, and\n"
	"                         one connection's queue holds at most 256 KiB or an eighth\n"
	"                         of its half (docs/POOL.md)\n"
	"  --max-conns N          client connections at once, per thread (default 4096; the\n"
	"                         rest are refused)\n"
	"  --threads N            event loops, one per thread, each with its own io_uring,\n"
	"                         pool (--bufs each) and SO_REUSEPORT listener (default 1)\n"
	"  --connect-timeout MS   give up connecting to the upstream after MS milliseconds and\n"
	"                         close the client (default 5000; 0 = wait for the kernel)\n"
	"  --idle-timeout MS      close a client and its upstream connection once neither\n"
	"                         moved a byte for MS milliseconds (default 0: never)\n"
	"  --stall-timeout MS     while connections wait for pool buffers, close the ones\n"
	"                         whose peer read nothing of their queue for MS milliseconds\n"
	"                         (they pin buffers the others need; default 30000, 0 = never;\n"
	"                         docs/POOL.md)\n"
	"  --nodelay              set TCP_NODELAY on both sides (lower latency for small\n"
	"                         writes; more, smaller packets)\n"
	"  --quiet                print only errors\n"
	"Exit status: 0 after a clean stop, 1 on a runtime error (or buffers not returned),\n"
	"2 on bad usage.\n";

#define MAX_UPSTREAMS 16

/* The upstreams, shared by all threads: a client goes to the next one in
 * turn, and to the one after that if connecting fails. */
struct upstreams {
	struct addr a[MAX_UPSTREAMS];
	unsigned n;
	atomic_uint next;
};

struct proxy_opts {
	struct addr listen;
	struct upstreams up;
	bool have_listen, quiet, nodelay;
	uint32_t connect_timeout_ms, idle_timeout_ms, stall_timeout_ms, threads;
	struct io_opts io;
	uint32_t max_conns;
};

static int parse(int argc, char **argv, struct proxy_opts *o)
{
	static const struct option opts[] = {
		{ "listen", required_argument, 0, 'l' }, { "upstream", required_argument, 0, 'u' },
		{ "io", required_argument, 0, 'i' },     { "buf-size", required_argument, 0, 'b' },
		{ "bufs", required_argument, 0, 'n' },   { "max-conns", required_argument, 0, 'm' },
		{ "quiet", no_argument, 0, 'q' },        { "help", no_argument, 0, 'h' },
		{ "nodelay", no_argument, 0, 'N' },      { "connect-timeout", required_argument, 0, 'T' },
		{ "threads", required_argument, 0, 't' }, { "idle-timeout", required_argument, 0, 'I' },
		{ "stall-timeout", required_argument, 0, 'S' },
		{ 0 }
	};
	int c, idx, ret;

	while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		switch (c) {
		case 'l': case 'u': {
			struct addr *a = c == 'l' ? &o->listen : &o->up.a[o->up.n];

			if (c == 'u' && o->up.n == MAX_UPSTREAMS) {
				say("proxy", "--upstream %s: at most %d upstreams", optarg, MAX_UPSTREAMS);
				return EXIT_USAGE;
			}
			if (parse_addr(optarg, a)) {
				say("proxy", "--%s %s: not a HOST:PORT address", opts[idx].name, optarg);
				return EXIT_USAGE;
			}
			if (c == 'l')
				o->have_listen = true;
			else
				o->up.n++;
			break;
		}
		case 'i': case 'b': case 'n':
			if ((ret = io_opt("proxy", &o->io, opts[idx].name, optarg)))
				return ret;
			break;
		case 'm':
			if (parse_u32(optarg, &o->max_conns) || !o->max_conns ||
			    o->max_conns > 9990) {
				say("proxy", "--max-conns %s: must be 1 to 9990", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'q': o->quiet = true; break;
		case 'N': o->nodelay = true; break;
		case 't':
			if (parse_u32(optarg, &o->threads) || !o->threads || o->threads > 64) {
				say("proxy", "--threads %s: must be 1 to 64", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'T': case 'I': case 'S': {
			uint32_t *ms = c == 'T' ? &o->connect_timeout_ms :
				       c == 'I' ? &o->idle_timeout_ms : &o->stall_timeout_ms;

			if (parse_u32(optarg, ms) || *ms > 86400000) {
				say("proxy", "--%s %s: milliseconds, 0 to 86400000", opts[idx].name, optarg);
				return EXIT_USAGE;
			}
			break;
		}
		case 'h': fputs(help, stdout); exit(0);
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc || !o->have_listen || !o->up.n) {
		say("proxy", optind < argc ? "unexpected argument '%s'" :
			     "--listen and --upstream are required%s", optind < argc ? argv[optind] : "");
		return EXIT_USAGE;
	}
	return 0;
}

/* Whether an upstream accepts connections at all. */
static int check_upstream(const struct addr *a)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t len = sizeof(err);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) && errno != EINPROGRESS)
		err = errno;
	else if (poll(&pfd, 1, 3000) != 1)
		err = ETIMEDOUT;
	else
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	close(fd);
	return -err;
}

/* Refuse to start when no upstream is there at all; name each missing one. */
static int check_upstreams(const struct upstreams *ups)
{
	unsigned ok = 0;

	for (unsigned i = 0; i < ups->n; i++) {
		int err = check_upstream(&ups->a[i]);

		if (!err)
			ok++;
		else
			say("proxy", "upstream %s: %s", ups->a[i].text, strerror(-err));
	}
	if (ok && ok < ups->n)
		say("proxy", "continuing with %u of %u upstreams", ok, ups->n);
	return ok ? 0 : 1;
}

/* A client and the upstream connection made for it. */
struct pair {
	struct sheaf_conn *client, *up;
	struct upstreams *ups;
	unsigned idx, tries;
};

/* Connects the pair's client to upstream idx, or the next ones if that
 * fails at once; closes the client when none is left. */
static void connect_next(struct pair *p)
{
	while (p->tries < p->ups->n) {
		const struct addr *a = &p->ups->a[p->idx];
		int err = 0;

		p->tries++;
		p->idx = (p->idx + 1) % p->ups->n;
		p->up = sheaf_connect(sheaf_conn_loop(p->client), (const struct sockaddr *)&a->ss,
				      a->len, p, &err);
		if (p->up)
			return;
	}
	sheaf_conn_close(p->client);
}

static void on_connect(struct sheaf_conn *up, int err)
{
	struct pair *p = sheaf_conn_data(up);

	if (!p->client) {            /* the client went away meanwhile */
		sheaf_conn_close(up);
		return;
	}
	if (err) {                   /* this upstream failed: the next one */
		sheaf_conn_set_data(up, NULL);
		p->up = NULL;
		connect_next(p);
		return;
	}
	if (sheaf_conn_link(p->client, up))
		sheaf_conn_close(up); /* the client is already closing */
}

static void on_accept(struct sheaf_conn *client, void *arg)
{
	struct upstreams *ups = arg;
	struct pair *p = calloc(1, sizeof(*p));

	if (!p) {
		sheaf_conn_close(client);
		return;
	}
	p->client = client;
	p->ups = ups;
	p->idx = atomic_fetch_add(&ups->next, 1) % ups->n;
	sheaf_conn_set_data(client, p);
	connect_next(p);
}

/* Each side forgets itself when it goes; the last one frees the pair. */
static void on_close(struct sheaf_conn *c, int err)
{
	struct pair *p = sheaf_conn_data(c);

	if (!p)
		return;
	if (p->client == c)
		p->client = NULL;
	if (p->up == c)
		p->up = NULL;
	if (!p->client && !p->up)
		free(p);
}

static double ratio(uint64_t num, uint64_t den)
{
	return den ? (double)num / (double)den : 0.0;
}

/* One JSON line: every field of struct sheaf_stats under its own name, then
 * the derived averages. */
static void print_stats(const struct sheaf_stats *s, enum sheaf_io io)
{
	flockfile(stdout);
	printf("sheaf proxy: stats {\"io\":\"%s\"", sheaf_io_name(io));
#define PRINT_U64(name) printf(",\"" #name "\":%llu", (unsigned long long)s->name);
#define PRINT_U32(name) printf(",\"" #name "\":%u", (unsigned)s->name);
	SHEAF_STATS_COUNTERS(PRINT_U64)
	SHEAF_STATS_GAUGES(PRINT_U32)
#undef PRINT_U64
#undef PRINT_U32
	printf(",\"bufs_per_recv\":%.2f,\"bufs_per_send\":%.2f}\n",
	       ratio(s->recv_bufs, s->recv_cqes), ratio(s->send_bufs, s->send_cqes));
	funlockfile(stdout);
}

/* One event loop per thread; connections never move between threads. */
struct worker {
	struct sheaf_loop *loop;
	pthread_t tid;
	int ret;
	bool started;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	w->ret = sheaf_loop_run(w->loop);
	if (w->ret < 0)
		kill(getpid(), SIGTERM); /* wakes the main thread's sigwait */
	return NULL;
}

static void on_wake(int sig) { (void)sig; }

/* Totals of several loops: every field summed, gauges included. */
static void stats_add(struct sheaf_stats *t, const struct sheaf_stats *s)
{
#define ADD(name) t->name += s->name;
	SHEAF_STATS_COUNTERS(ADD)
	SHEAF_STATS_GAUGES(ADD)
#undef ADD
}

/* Creates the loops and their listeners; the first one picks the port. */
static int setup_workers(struct proxy_opts *o, struct sheaf_loop_config *cfg,
			 struct worker *w)
{
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = on_accept, .on_connect = on_connect,
				      .on_close = on_close };
	int err = 0, fd;

	cfg->reuseport = o->threads > 1;
	for (uint32_t i = 0; i < o->threads; i++) {
		w[i].loop = sheaf_loop_new(cfg, &cb, NULL, &err);
		if (!w[i].loop) {
			say("proxy", "cannot set up %s (io=%s, buf-size=%u, bufs=%u): %s",
			    cfg->io == SHEAF_IO_EPOLL ? "epoll" : "io_uring", sheaf_io_name(cfg->io),
			    cfg->buf_size, cfg->nbufs, strerror(-err));
			return 1;
		}
		fd = sheaf_listen(w[i].loop, (const struct sockaddr *)&o->listen.ss,
				  o->listen.len, &o->up);
		if (fd < 0) {
			say("proxy", "--listen %s: %s", o->listen.text, strerror(-fd));
			return 1;
		}
		if (i == 0)
			addr_bound(fd, &o->listen); /* port 0: the others take the same */
	}
	return 0;
}

/* Runs the workers until SIGINT/SIGTERM (or one fails), then stops them. */
static void run_workers(struct worker *w, uint32_t n)
{
	struct sigaction sa = { .sa_handler = on_wake }; /* no SA_RESTART */
	sigset_t stop;
	int sig;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	for (uint32_t i = 0; i < n; i++)
		w[i].started = !pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
	sigwait(&stop, &sig);
	for (uint32_t i = 0; i < n; i++)
		sheaf_loop_stop(w[i].loop);
	for (uint32_t i = 0; i < n; i++) {
		struct timespec ts;

		/* a wake-up can land just before the thread blocks: repeat it */
		while (w[i].started) {
			pthread_kill(w[i].tid, SIGUSR1);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 50 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000)
				ts.tv_sec++, ts.tv_nsec -= 1000000000;
			if (!pthread_timedjoin_np(w[i].tid, NULL, &ts))
				break;
		}
	}
}

/* Sums the workers' counters, frees them; 0, or 1 if any failed or leaked. */
static int finish_workers(struct worker *w, uint32_t n, const struct proxy_opts *o,
			  enum sheaf_io io)
{
	struct sheaf_stats all = { 0 }, st = { .size = sizeof(st) };
	int ret = 0;

	if (!o->quiet && n > 1)
		printf("sheaf proxy: accepted per thread:");
	for (uint32_t i = 0; i < n && w[i].loop; i++) {
		sheaf_loop_stats(w[i].loop, &st);
		stats_add(&all, &st);
		if (!o->quiet && n > 1)
			printf(" %llu%s", (unsigned long long)st.accepted, i + 1 < n ? "" : "\n");
		sheaf_loop_free(w[i].loop);
		if (w[i].ret < 0) {
			say("proxy", "event loop %u failed: %s", i, strerror(-w[i].ret));
			ret = 1;
		}
	}
	if (!o->quiet)
		print_stats(&all, io);
	if (all.pool_free != all.pool_bufs) {
		say("proxy", "%u of %u pool buffers were not returned",
		    all.pool_bufs - all.pool_free, all.pool_bufs);
		ret = 1;
	}
	return ret;
}

int cmd_proxy(int argc, char **argv)
{
	static struct proxy_opts o = { .io = { .buf_size = 4096 }, .max_conns = 4096,
				.connect_timeout_ms = 5000, .stall_timeout_ms = 30000,
				.threads = 1 };
	struct sheaf_loop_config cfg;
	struct worker *w;
	int ret;

	if ((ret = parse(argc, argv, &o)) || (ret = io_config("proxy", &o.io, 2 * o.max_conns, &cfg)))
		return ret;
	cfg.accept_max = o.max_conns; /* each client needs a slot for its upstream too */
	cfg.nodelay = o.nodelay;
	cfg.connect_timeout_ms = o.connect_timeout_ms;
	cfg.idle_timeout_ms = o.idle_timeout_ms;
	cfg.stall_timeout_ms = o.stall_timeout_ms;
	if (check_upstreams(&o.up))
		return 1;
	w = calloc(o.threads, sizeof(*w));
	if (!w || setup_workers(&o, &cfg, w)) {
		for (uint32_t i = 0; w && i < o.threads; i++)
			sheaf_loop_free(w[i].loop);
		free(w);
		return 1;
	}
	if (!o.quiet)
		printf("sheaf proxy: listening on %s (io=%s, buf-size=%u, bufs=%u, threads=%u, "
		       "upstream=%s%s)\n", o.listen.text, sheaf_io_name(cfg.io), cfg.buf_size,
		       cfg.nbufs, o.threads, o.up.a[0].text, o.up.n > 1 ? ",..." : "");
	fflush(stdout);
	run_workers(w, o.threads);
	ret = finish_workers(w, o.threads, &o, cfg.io);
	free(w);
	return ret;
}
