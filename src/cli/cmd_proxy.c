/* sheaf proxy: an L4 TCP proxy; each client is linked to one upstream. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "proxy_proto.h"
#include "upstream.h"

static const char help[] =
	"usage: sheaf proxy --listen HOST:PORT --upstream HOST:PORT [options]\n"
	"Accepts TCP connections and links each to a new connection to an upstream;\n"
	"bytes move both ways by reference through one provided-buffer pool.\n"
	"It connects to an upstream only for a client (no probe at start: it starts\n"
	"and listens with every upstream down). HOST is an IPv4 address, [IPv6] or a\n"
	"name, resolved once at start to its first address (exit 2 if it does not\n"
	"resolve); each upstream keeps its address family.\n"
	"Runs until SIGINT/SIGTERM, then drains (at most 2 s) and prints its counters;\n"
	"SIGUSR1 prints them and goes on; SIGHUP is logged and ignored (nothing to\n"
	"reload); SIGUSR2 and SIGPIPE are ignored.\n"
	"  --listen HOST:PORT     address to accept on\n"
	"  --upstream HOST:PORT   where to connect for a client; repeat it (at most 16)\n"
	"  --balance ALGO         which upstream a client goes to (as HAProxy's balance):\n"
	"                         roundrobin  the next up one in turn (default)\n"
	"                         leastconn   the up one with the fewest connections open\n"
	"                                     or opening, over all threads (ties in turn)\n"
	"                         source      a hash of the client's IP address (not its\n"
	"                                     port) modulo the number of up upstreams, in\n"
	"                                     their order: an address keeps its upstream\n"
	"                                     while that set does not change\n"
	"Health, learnt from the connects made for clients: a connect that fails or\n"
	"times out marks that upstream down (\"sheaf proxy: upstream X down: REASON\" on\n"
	"stderr, once; \"upstream X up\" when a connect to it succeeds again) and the\n"
	"client tries the next one. A down upstream gets no client for 1 s; then the\n"
	"next client tries it first; each failure while down doubles that pause, up to\n"
	"30 s. When every upstream is down, a client still tries each, the least\n"
	"recently failed first, and is closed only if all fail (counted as no_upstream);\n"
	"HAProxy would close it at once.\n"
	"  --check-interval MS    also check actively: a TCP connect to each upstream every\n"
	"                         MS milliseconds, closed at once; one result marks it up or\n"
	"                         down (HAProxy's defaults: 2 to go up, 3 to go down); a\n"
	"                         check fails after --connect-timeout or MS, the shorter\n"
	"                         (default 0: no checks, no connection but for clients)\n"
	"PROXY protocol (HAProxy's specification), to tell upstreams who the client is:\n"
	"  --send-proxy           send a v1 header (text) on each upstream connection\n"
	"                         before any client byte: the client's address and the\n"
	"                         address it connected to (or what --accept-proxy read)\n"
	"  --send-proxy-v2        the same as a v2 header (binary)\n"
	"  --accept-proxy         each client must start with a v1 or v2 header (told apart\n"
	"                         by its first bytes, parsed strictly); the upstream is\n"
	"                         chosen and connected only once it is complete. A\n"
	"                         malformed or oversized (over 536 bytes) header, or one\n"
	"                         not complete within --header-timeout, closes that client\n"
	"                         and is counted (pp_malformed, pp_oversized, pp_late);\n"
	"                         nothing of it is forwarded\n"
	"  --header-timeout MS    for --accept-proxy (default 5000)\n"
	"  --io MODE              auto|bundle|ring|plain|sendmsg|epoll (default auto,\n"
	"                         see sheaf probe)\n"
	"  --buf-size BYTES       pool buffer size, 1 .. 1M (default 4K; suffixes K M G)\n"
	"  --bufs N               pool buffers, power of two, 2 .. 32768 (default: ~8 MiB of\n"
	"                         pool); half receive from clients, half from upstreams, and\n"
	"                         one connection's queue holds at most 256 KiB or an eighth\n"
	"                         of its half (docs/POOL.md)\n"
	"  --max-conns N          client connections at once, per thread (default 4096): at\n"
	"                         this count the proxy stops accepting, and new clients\n"
	"                         wait in the listen backlog until one closes (as\n"
	"                         HAProxy's maxconn)\n"
	"  --backlog N            listen backlog: clients waiting to be accepted (default\n"
	"                         4096; the kernel caps it at net.core.somaxconn)\n"
	"  --strict               refuse to start (exit 2) when the open-file limit cannot\n"
	"                         hold --max-conns, instead of lowering --max-conns to fit\n"
	"  --threads N            event loops, one per thread, each with its own io_uring,\n"
	"                         pool (--bufs each) and SO_REUSEPORT listener (default 1);\n"
	"                         they share the upstreams' state\n"
	"  --connect-timeout MS   give up connecting to an upstream after MS milliseconds\n"
	"                         (default 5000; 0 = wait for the kernel)\n"
	"  --idle-timeout MS      close a client and its upstream connection once neither\n"
	"                         moved a byte for MS milliseconds (default 0: never)\n"
	"  --stall-timeout MS     while connections wait for pool buffers, close the ones\n"
	"                         whose peer read nothing of their queue for MS milliseconds\n"
	"                         (they pin buffers the others need; default 30000, 0 = never;\n"
	"                         docs/POOL.md)\n"
	"  --nodelay              TCP_NODELAY on both sides: lower latency for small writes\n"
	"                         (the default, as in HAProxy's tcp mode)\n"
	"  --no-nodelay           leave Nagle's algorithm on (fewer, larger packets)\n"
	"  --quiet                print only errors and the upstream down/up lines\n"
	"The counters (one JSON line) end with the proxy's own: no_upstream (clients\n"
	"closed because no upstream connected), upstreams_down (at the stop), and the\n"
	"PROXY headers refused: pp_malformed, pp_oversized, pp_late.\n"
	"Exit status: 0 after a clean stop, 1 on a runtime error (or buffers not returned),\n"
	"2 on bad usage.\n";

struct proxy_opts {
	struct addr listen;
	struct upstreams up;
	bool have_listen, quiet, nodelay, accept_proxy, strict;
	uint32_t backlog;
	int send_proxy;                 /* PROXY protocol version to send, or 0 */
	uint32_t header_timeout_ms;
	atomic_ullong pp_malformed, pp_oversized, pp_late; /* --accept-proxy refusals */
	uint32_t connect_timeout_ms, idle_timeout_ms, stall_timeout_ms, threads;
	uint32_t check_interval_ms;
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
		{ "no-nodelay", no_argument, 0, 'D' },   { "balance", required_argument, 0, 'B' },
		{ "check-interval", required_argument, 0, 'C' },
		{ "send-proxy", no_argument, 0, '1' },   { "send-proxy-v2", no_argument, 0, '2' },
		{ "accept-proxy", no_argument, 0, 'A' },
		{ "header-timeout", required_argument, 0, 'H' },
		{ "backlog", required_argument, 0, 'K' }, { "strict", no_argument, 0, 'X' },
		{ 0 }
	};
	int c, idx, ret;

	while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
		switch (c) {
		case 'l': case 'u': {
			struct addr *a = c == 'l' ? &o->listen : &o->up.u[o->up.n].a;

			if (c == 'u' && o->up.n == MAX_UPSTREAMS) {
				say("proxy", "--upstream %s: at most %d upstreams", optarg, MAX_UPSTREAMS);
				return EXIT_USAGE;
			}
			if (addr_opt("proxy", opts[idx].name, optarg, a))
				return EXIT_USAGE;
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
		case '1': o->send_proxy = 1; break;
		case '2': o->send_proxy = 2; break;
		case 'A': o->accept_proxy = true; break;
		case 'X': o->strict = true; break;
		case 'K':
			if (parse_u32(optarg, &o->backlog) || !o->backlog || o->backlog > 1048576) {
				say("proxy", "--backlog %s: must be 1 to 1048576", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'N': o->nodelay = true; break;
		case 'D': o->nodelay = false; break;
		case 'B':
			if ((ret = balance_parse(optarg)) < 0) {
				say("proxy", "--balance %s: roundrobin, leastconn or source", optarg);
				return EXIT_USAGE;
			}
			o->up.balance = ret;
			break;
		case 't':
			if (parse_u32(optarg, &o->threads) || !o->threads || o->threads > 64) {
				say("proxy", "--threads %s: must be 1 to 64", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'T': case 'I': case 'S': case 'C': case 'H': {
			uint32_t *ms = c == 'T' ? &o->connect_timeout_ms :
				       c == 'I' ? &o->idle_timeout_ms :
				       c == 'S' ? &o->stall_timeout_ms :
				       c == 'H' ? &o->header_timeout_ms : &o->check_interval_ms;

			if (parse_u32(optarg, ms) || *ms > 86400000) {
				say("proxy", "--%s %s: milliseconds, 0 to 86400000", opts[idx].name, optarg);
				return EXIT_USAGE;
			}
			break;
		}
		case 'h': return ARGS_HELP;
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	if (o->accept_proxy && !o->header_timeout_ms) {
		say("proxy", "--header-timeout 0: a client could hold a slot forever");
		return EXIT_USAGE;
	}
	if (optind < argc || !o->have_listen || !o->up.n) {
		say("proxy", optind < argc ? "unexpected argument '%s'" :
			     "--listen and --upstream are required%s", optind < argc ? argv[optind] : "");
		return EXIT_USAGE;
	}
	return 0;
}

/* --accept-proxy: a client's header while it arrives, and what came after
 * it until an upstream takes it. Only while the pair needs it. */
struct pp_in {
	uint8_t hdr[PP_MAX_LEN];
	size_t len;
	struct pp_addrs addrs;     /* what the header said (family AF_UNSPEC: nothing) */
	struct sheaf_timer *timer; /* --header-timeout */
	char *early;               /* client bytes behind the header */
	size_t early_len;
};

/* A client and the upstream connection made for it. */
struct pair {
	struct sheaf_conn *client, *up;
	struct proxy_opts *o;
	struct pp_in *pp;    /* --accept-proxy, until linked */
	struct up_pick pick; /* the upstream being tried or used */
	uint32_t tried;      /* upstreams this client tried (bit i: upstream i) */
	uint32_t hash;       /* of the client's address, for --balance source */
	uint32_t sent;       /* bytes of our PROXY header and early bytes written */
};

static void pp_in_free(struct pair *p)
{
	if (!p->pp)
		return;
	sheaf_timer_cancel(p->pp->timer);
	free(p->pp->early);
	free(p->pp);
	p->pp = NULL;
}

/* Connects the pair's client to the next upstream (ups_pick), or the ones
 * after it if connecting fails at once; closes the client when none is left.
 * The connection gets its data only once made. */
static void connect_next(struct pair *p)
{
	struct upstreams *u = &p->o->up;

	while (ups_pick(u, &p->tried, p->hash, now_sec(), &p->pick) >= 0) {
		const struct addr *a = &u->u[p->pick.idx].a;
		int err = 0;

		p->up = sheaf_connect(sheaf_conn_loop(p->client), (const struct sockaddr *)&a->ss,
				      a->len, NULL, &err);
		if (p->up) {
			sheaf_conn_set_data(p->up, p);
			return;
		}
		ups_result(u, &p->pick, err, now_sec());
		ups_end(u, &p->pick);
		if (err == -EMFILE) /* no connection slot here (or stopping) */
			break;
	}
	atomic_fetch_add(&u->no_upstream, 1);
	sheaf_conn_close(p->client);
}

/* Our PROXY header for the pair: the client's addresses as --accept-proxy
 * read them, else its socket's. Its length, or -errno. */
static int pp_out(struct pair *p, uint8_t *out, size_t cap)
{
	struct sockaddr_storage src, dst;
	socklen_t sl = sizeof(src), dl = sizeof(dst);
	const struct sockaddr *s = (struct sockaddr *)&src, *d = (struct sockaddr *)&dst;

	if (p->pp && p->pp->addrs.family != AF_UNSPEC) {
		s = (struct sockaddr *)&p->pp->addrs.src;
		d = (struct sockaddr *)&p->pp->addrs.dst;
	} else if (getpeername(sheaf_conn_fd(p->client), (struct sockaddr *)&src, &sl) ||
		   getsockname(sheaf_conn_fd(p->client), (struct sockaddr *)&dst, &dl)) {
		return -errno;
	}
	return p->o->send_proxy == 2 ? pp_build_v2(s, d, out, cap) :
				       pp_build_v1(s, d, (char *)out, cap);
}

/* Writes from `data` what p->sent says is left of a part that starts at
 * `start`; 1 when all of it went, 0 to wait for on_writable, -1 on error. */
static int write_part(struct pair *p, const void *data, size_t len, size_t start)
{
	while (p->sent < start + len) {
		ssize_t n = sheaf_conn_write(p->up, (const char *)data + (p->sent - start),
					     start + len - p->sent);

		if (n == -EAGAIN)
			return 0;
		if (n < 0)
			return -1;
		p->sent += (uint32_t)n;
	}
	return 1;
}

/* The upstream is connected: our PROXY header, then what the client sent
 * behind its own header, then link the two (the client's held bytes follow). */
static void start_pair(struct pair *p)
{
	uint8_t hdr[PP_MAX_LEN];
	int hlen = 0, r = 1;

	if (p->o->send_proxy && (hlen = pp_out(p, hdr, sizeof(hdr))) < 0)
		r = -1;
	if (r > 0 && hlen)
		r = write_part(p, hdr, (size_t)hlen, 0);
	if (r > 0 && p->pp && p->pp->early)
		r = write_part(p, p->pp->early, p->pp->early_len, (size_t)hlen);
	if (r == 0)
		return; /* on_writable calls again */
	pp_in_free(p);
	if (r < 0 || sheaf_conn_link(p->client, p->up)) {
		sheaf_conn_close(p->up);
		sheaf_conn_close(p->client);
	}
}

static void on_connect(struct sheaf_conn *up, int err)
{
	struct pair *p = sheaf_conn_data(up);

	ups_result(&p->o->up, &p->pick, err, now_sec());
	if (err) {                   /* closed after we return: try the next */
		sheaf_conn_set_data(up, NULL);
		p->up = NULL;
		ups_end(&p->o->up, &p->pick);
		if (p->client)
			connect_next(p);
		else
			free(p);
		return;
	}
	if (!p->client)              /* the client went away meanwhile */
		sheaf_conn_close(up);
	else
		start_pair(p);
}

static void on_writable(struct sheaf_conn *up)
{
	struct pair *p = sheaf_conn_data(up);

	if (p && p->client && p->up == up)
		start_pair(p);
}

/* An address hashed, for --balance source (else 0). */
static uint32_t source_hash(const struct pair *p, const struct sockaddr *addr)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (p->o->up.balance != BALANCE_SOURCE)
		return 0;
	if (!addr) {
		if (getpeername(sheaf_conn_fd(p->client), (struct sockaddr *)&ss, &len))
			return 0;
		addr = (struct sockaddr *)&ss;
	}
	return addr_hash(addr);
}

/* --accept-proxy: a client refused for its header (never forwarded). */
static void pp_refuse(struct pair *p, atomic_ullong *counter)
{
	atomic_fetch_add(counter, 1);
	pp_in_free(p);
	sheaf_conn_close(p->client);
}

static void on_header_timeout(struct sheaf_timer *t, void *arg)
{
	struct pair *p = arg;

	p->pp->timer = NULL; /* freed after this returns */
	pp_refuse(p, &p->o->pp_late);
}

/*
 * --accept-proxy: the client's first bytes, until its header is complete;
 * then it stops reading (sheaf_conn_pause) while its upstream is chosen and
 * connected, and the bytes behind the header wait in p->pp->early.
 */
static void on_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
{
	struct pair *p = sheaf_conn_data(c);
	struct pp_in *in = p ? p->pp : NULL;
	size_t before, off = 0;
	int n;

	if (!in || c != p->client || in->early || p->up)
		return; /* cannot happen: only a client reading its header is started unlinked */
	before = in->len;
	for (unsigned i = 0; i < b->nr && in->len < sizeof(in->hdr); i++) {
		size_t k = b->iov[i].iov_len;

		if (k > sizeof(in->hdr) - in->len)
			k = sizeof(in->hdr) - in->len;
		memcpy(in->hdr + in->len, b->iov[i].iov_base, k);
		in->len += k;
	}
	n = pp_parse(in->hdr, in->len, &in->addrs);
	if (n == 0)
		return;
	if (n < 0) {
		pp_refuse(p, n == -E2BIG ? &p->o->pp_oversized : &p->o->pp_malformed);
		return;
	}
	sheaf_timer_cancel(in->timer);
	in->timer = NULL;
	sheaf_conn_pause(c);
	/* what the bundle holds behind the header: copied once, kept until an
	 * upstream takes it (a failed connect leaves it for the next one) */
	in->early_len = b->bytes - ((size_t)n - before);
	if (in->early_len && !(in->early = malloc(in->early_len))) {
		pp_refuse(p, &p->o->pp_malformed);
		return;
	}
	for (unsigned i = 0, skip = (unsigned)((size_t)n - before); i < b->nr; i++) {
		size_t k = b->iov[i].iov_len;

		if (skip >= k) {
			skip -= (unsigned)k;
			continue;
		}
		memcpy(in->early + off, (const char *)b->iov[i].iov_base + skip, k - skip);
		off += k - skip;
		skip = 0;
	}
	p->hash = source_hash(p, in->addrs.family == AF_UNSPEC ? NULL :
				 (struct sockaddr *)&in->addrs.src);
	connect_next(p);
}

/* --accept-proxy: the client ended before its header did. */
static void on_eof(struct sheaf_conn *c)
{
	struct pair *p = sheaf_conn_data(c);

	if (p && p->pp && c == p->client)
		pp_refuse(p, &p->o->pp_malformed);
}

static void on_accept(struct sheaf_conn *client, void *arg)
{
	struct pair *p = calloc(1, sizeof(*p));
	int err = 0;

	if (!p) {
		sheaf_conn_close(client);
		return;
	}
	p->client = client;
	p->o = arg;
	p->pick.idx = -1;
	sheaf_conn_set_data(client, p);
	if (!p->o->accept_proxy) {
		p->hash = source_hash(p, NULL);
		connect_next(p);
		return;
	}
	p->pp = calloc(1, sizeof(*p->pp));
	if (p->pp)
		p->pp->timer = sheaf_timer_add(sheaf_conn_loop(client), p->o->header_timeout_ms,
					       0, on_header_timeout, p, &err);
	if (!p->pp || !p->pp->timer || sheaf_conn_start(client)) {
		pp_in_free(p);
		sheaf_conn_close(client);
	}
}

/* Each side forgets itself when it goes; the last one frees the pair. */
static void on_close(struct sheaf_conn *c, int err)
{
	struct pair *p = sheaf_conn_data(c);

	if (!p)
		return;
	if (p->client == c)
		p->client = NULL;
	if (p->up == c) {
		p->up = NULL;
		ups_end(&p->o->up, &p->pick);
	}
	if (!p->client)
		pp_in_free(p); /* its timer must not fire for a gone client */
	if (!p->client && !p->up)
		free(p);
}

static double ratio(uint64_t num, uint64_t den)
{
	return den ? (double)num / (double)den : 0.0;
}

/* One JSON line: every field of struct sheaf_stats under its own name, the
 * derived averages, then the proxy's own counters. */
static void print_stats(const struct sheaf_stats *s, enum sheaf_io io, struct proxy_opts *o)
{
	flockfile(stdout);
	printf("sheaf proxy: stats {\"io\":\"%s\"", sheaf_io_name(io));
#define PRINT_U64(name) printf(",\"" #name "\":%llu", (unsigned long long)s->name);
#define PRINT_U32(name) printf(",\"" #name "\":%u", (unsigned)s->name);
	SHEAF_STATS_COUNTERS(PRINT_U64)
	SHEAF_STATS_GAUGES(PRINT_U32)
#undef PRINT_U64
#undef PRINT_U32
	printf(",\"bufs_per_recv\":%.2f,\"bufs_per_send\":%.2f",
	       ratio(s->recv_bufs, s->recv_cqes), ratio(s->send_bufs, s->send_cqes));
	printf(",\"no_upstream\":%llu,\"upstreams_down\":%u,\"pp_malformed\":%llu,"
	       "\"pp_oversized\":%llu,\"pp_late\":%llu}\n",
	       (unsigned long long)atomic_load(&o->up.no_upstream), ups_down_count(&o->up),
	       (unsigned long long)atomic_load(&o->pp_malformed),
	       (unsigned long long)atomic_load(&o->pp_oversized),
	       (unsigned long long)atomic_load(&o->pp_late));
	funlockfile(stdout);
}

/*
 * The open-file limit against what --max-conns needs: two sockets per
 * client per thread, and some spare (standard streams, the signalfd, the
 * active checks, each loop's ring, eventfd and listener). Raises the soft
 * limit up to the hard one if that helps, as HAProxy does; else lowers
 * --max-conns with a warning naming both numbers, or refuses under
 * --strict. 0 or EXIT_USAGE.
 */
static int fit_fd_limit(struct proxy_opts *o)
{
	uint64_t spare = 3 + 1 + MAX_UPSTREAMS + 4ull * o->threads + 8;
	uint64_t need = 2ull * o->max_conns * o->threads + spare, fit;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY || need <= rl.rlim_cur)
		return 0;
	if (rl.rlim_max > rl.rlim_cur) {
		struct rlimit up = { need < rl.rlim_max ? need : rl.rlim_max, rl.rlim_max };

		if (!setrlimit(RLIMIT_NOFILE, &up))
			rl = up;
		if (need <= rl.rlim_cur)
			return 0;
	}
	fit = rl.rlim_cur > spare ? (rl.rlim_cur - spare) / (2ull * o->threads) : 0;
	if (o->strict || !fit) {
		say("proxy", "--max-conns %u needs %llu open files, the limit is %llu (ulimit -n)%s",
		    o->max_conns, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
		    fit ? "" : ": too low to proxy at all");
		return EXIT_USAGE;
	}
	say("proxy", "--max-conns %u needs %llu open files, the limit is %llu (ulimit -n): "
	    "using --max-conns %llu", o->max_conns, (unsigned long long)need,
	    (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
	o->max_conns = (uint32_t)fit;
	return 0;
}

/* One event loop per thread; connections never move between threads. */
struct worker {
	struct sheaf_loop *loop;
	struct sheaf_stats snap;  /* SIGUSR1: taken on the loop's thread */
	atomic_int snapped;
	pthread_t tid;
	int ret;
	bool started;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	w->ret = sheaf_loop_run(w->loop);
	if (w->ret < 0)
		kill(getpid(), SIGTERM); /* the main thread stops the others */
	return NULL;
}


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
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = on_accept,
				      .on_connect = on_connect, .on_close = on_close,
				      .on_data = on_data, .on_eof = on_eof,
				      .on_writable = on_writable };
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
				  o->listen.len, o);
		if (fd < 0) {
			say("proxy", "--listen %s: %s", o->listen.text, strerror(-fd));
			return 1;
		}
		if (i == 0)
			addr_bound(fd, &o->listen); /* port 0: the others take the same */
	}
	return 0;
}

/*
 * The main thread's signals. Every thread blocks them; the main thread reads
 * them from a signalfd: SIGINT and SIGTERM stop the proxy, SIGUSR1 prints the
 * counters line and goes on, SIGHUP is logged and ignored (there is no
 * configuration file to reload), SIGUSR2 is ignored. SIGPIPE is ignored.
 */
struct main_ctx {
	int sfd;
	struct worker *w;
	uint32_t n;
	struct proxy_opts *o;
	enum sheaf_io io;
};

/* On a worker's loop thread: its counters, for the main thread. */
static void snapshot(struct sheaf_loop *loop, void *arg)
{
	struct worker *w = arg;

	w->snap.size = sizeof(w->snap);
	sheaf_loop_stats(loop, &w->snap);
	atomic_store(&w->snapped, 1);
}

/* SIGUSR1: every loop's counters (each taken on its own thread), summed. */
static void print_now(struct main_ctx *m)
{
	struct sheaf_stats all = { 0 };
	uint32_t asked = 0, got = 0;

	for (uint32_t i = 0; i < m->n; i++) {
		atomic_store(&m->w[i].snapped, 0);
		asked += !sheaf_loop_post(m->w[i].loop, snapshot, &m->w[i]);
	}
	for (int tries = 0; tries < 1000 && got < asked; tries++) {
		got = 0;
		for (uint32_t i = 0; i < m->n; i++)
			got += (uint32_t)atomic_load(&m->w[i].snapped);
		if (got < asked)
			usleep(1000);
	}
	if (got < asked) {
		say("proxy", "SIGUSR1: %u of %u event loops did not answer", asked - got, m->n);
		return;
	}
	for (uint32_t i = 0; i < m->n; i++)
		stats_add(&all, &m->w[i].snap);
	print_stats(&all, m->io, m->o);
	fflush(stdout);
}

/* Reads the pending signals; false once a stop signal came. */
static bool on_signals(struct main_ctx *m)
{
	struct signalfd_siginfo si;
	bool go_on = true;

	while (read(m->sfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGINT: case SIGTERM:
			go_on = false;
			break;
		case SIGUSR1:
			print_now(m);
			break;
		case SIGHUP:
			say("proxy", "SIGHUP ignored: there is no configuration to reload");
			break;
		default: /* SIGUSR2 */
			break;
		}
	}
	return go_on;
}

/*
 * Active checks (--check-interval), in the main thread: every interval, a
 * non-blocking TCP connect to each upstream at once, polled beside a
 * signalfd for SIGINT/SIGTERM so that a check never holds up a stop.
 */
struct checks {
	struct main_ctx *m;       /* signals: see on_signals */
	struct upstreams *ups;
	uint32_t interval_ms, timeout_ms;
	struct pollfd pfd[1 + MAX_UPSTREAMS]; /* [0]: the signalfd; [1 + i]: upstream i */
	bool was_down[MAX_UPSTREAMS];
};

/* Upstream i's check ended with err (0: it connected). */
static void check_end(struct checks *k, unsigned i, int err)
{
	close(k->pfd[1 + i].fd);
	k->pfd[1 + i].fd = -1;
	ups_check_result(k->ups, i, k->was_down[i], err, now_sec());
}

static void checks_start(struct checks *k)
{
	for (unsigned i = 0; i < k->ups->n; i++) {
		const struct addr *a = &k->ups->u[i].a;
		int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		k->was_down[i] = ups_is_down(k->ups, i);
		k->pfd[1 + i] = (struct pollfd){ .fd = fd, .events = POLLOUT };
		if (fd < 0)
			continue; /* out of files here: no verdict on the upstream */
		if (connect(fd, (const struct sockaddr *)&a->ss, a->len) && errno != EINPROGRESS)
			check_end(k, i, -errno);
	}
}

/* Polls the checks until each ended or the timeout failed it, and the
 * signalfd; false when a stop signal came. */
static bool checks_wait(struct checks *k)
{
	double end = now_sec() + k->timeout_ms / 1000.0;
	unsigned pending;

	do {
		int ms = (int)((end - now_sec()) * 1000.0), n;

		n = poll(k->pfd, 1 + k->ups->n, ms > 0 ? ms : 0);
		if (n < 0 && errno != EINTR)
			return false;
		if (k->pfd[0].revents && !on_signals(k->m))
			return false;
		pending = 0;
		for (unsigned i = 0; i < k->ups->n; i++) {
			struct pollfd *pf = &k->pfd[1 + i];
			int err = 0;
			socklen_t len = sizeof(err);

			if (pf->fd < 0)
				continue;
			if (n > 0 && pf->revents) {
				getsockopt(pf->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				check_end(k, i, -err);
			} else if (n == 0 && ms <= 0) {
				check_end(k, i, -ETIMEDOUT);
			} else {
				pending++;
			}
		}
	} while (pending);
	return true;
}

/* Sleeps until `when` (now_sec clock); false when a stop signal came. */
static bool checks_sleep(struct checks *k, double when)
{
	for (;;) {
		int ms = (int)((when - now_sec()) * 1000.0), n;

		if (ms <= 0)
			return true;
		n = poll(k->pfd, 1, ms);
		if ((n > 0 && !on_signals(k->m)) || (n < 0 && errno != EINTR))
			return false;
	}
}

/* Checks every interval until SIGINT/SIGTERM (see run_workers). */
static void checks_run(struct checks *k)
{
	double next = now_sec();

	k->pfd[0] = (struct pollfd){ .fd = k->m->sfd, .events = POLLIN };
	for (;;) {
		checks_start(k);
		if (!checks_wait(k))
			break;
		next += k->interval_ms / 1000.0;
		if (next < now_sec())
			next = now_sec(); /* late (a long check): no burst to catch up */
		if (!checks_sleep(k, next))
			break;
	}
	for (unsigned i = 0; i < k->ups->n; i++)
		if (k->pfd[1 + i].fd >= 0)
			close(k->pfd[1 + i].fd);
}

/* Runs the workers until SIGINT/SIGTERM (or one fails), then stops them;
 * checks the upstreams meanwhile when asked to. */
static void run_workers(struct worker *w, uint32_t n, struct proxy_opts *o, enum sheaf_io io)
{
	struct main_ctx m = { .w = w, .n = n, .o = o, .io = io };
	sigset_t sigs;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* the workers inherit it */
	signal(SIGPIPE, SIG_IGN);
	m.sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (m.sfd < 0) {
		say("proxy", "signalfd: %s", strerror(errno));
		return;
	}
	for (uint32_t i = 0; i < n; i++)
		w[i].started = !pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
	if (o->check_interval_ms) {
		struct checks k = { .m = &m, .ups = &o->up, .interval_ms = o->check_interval_ms,
				    .timeout_ms = o->check_interval_ms };

		if (o->connect_timeout_ms && o->connect_timeout_ms < k.timeout_ms)
			k.timeout_ms = o->connect_timeout_ms;
		checks_run(&k);
	} else {
		struct pollfd pfd = { .fd = m.sfd, .events = POLLIN };

		while ((poll(&pfd, 1, -1) >= 0 || errno == EINTR) && on_signals(&m))
			;
	}
	close(m.sfd);
	/* sheaf_loop_stop wakes each loop itself */
	for (uint32_t i = 0; i < n; i++)
		sheaf_loop_stop(w[i].loop);
	for (uint32_t i = 0; i < n; i++)
		if (w[i].started)
			pthread_join(w[i].tid, NULL);
}

/* Sums the workers' counters, frees them; 0, or 1 if any failed or leaked. */
static int finish_workers(struct worker *w, uint32_t n, struct proxy_opts *o,
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
		print_stats(&all, io, o);
	if (all.pool_free != all.pool_bufs) {
		say("proxy", "%u of %u pool buffers were not returned",
		    all.pool_bufs - all.pool_free, all.pool_bufs);
		ret = 1;
	}
	return ret;
}

int proxy_check_args(int argc, char **argv)
{
	struct proxy_opts o = { .io = { .buf_size = 4096 }, .max_conns = 4096, .threads = 1,
				.header_timeout_ms = 5000 };

	return parse(argc, argv, &o);
}

int cmd_proxy(int argc, char **argv)
{
	static struct proxy_opts o = { .io = { .buf_size = 4096 }, .max_conns = 4096,
				.connect_timeout_ms = 5000, .stall_timeout_ms = 30000,
				.threads = 1, .nodelay = true, .header_timeout_ms = 5000 };
	struct sheaf_loop_config cfg;
	struct worker *w;
	int ret;

	if ((ret = parse(argc, argv, &o)) == ARGS_HELP) {
		fputs(help, stdout);
		return 0;
	}
	if (ret || (ret = fit_fd_limit(&o)) ||
	    (ret = io_config("proxy", &o.io, 2 * o.max_conns, &cfg)))
		return ret;
	cfg.accept_max = o.max_conns; /* each client needs a slot for its upstream too */
	cfg.backlog = o.backlog;
	cfg.nodelay = o.nodelay;
	cfg.connect_timeout_ms = o.connect_timeout_ms;
	cfg.idle_timeout_ms = o.idle_timeout_ms;
	cfg.stall_timeout_ms = o.stall_timeout_ms;
	if (o.send_proxy || o.accept_proxy) /* ~1 MiB for headers and early bytes */
		for (cfg.write_bufs = 64; cfg.write_bufs < 16384 &&
		     (uint64_t)cfg.write_bufs * cfg.buf_size < (1u << 20);)
			cfg.write_bufs *= 2;
	if ((ret = ups_init(&o.up))) {
		say("proxy", "cannot set up the upstreams' lock: %s", strerror(-ret));
		return 1;
	}
	o.up.log = stderr;
	w = calloc(o.threads, sizeof(*w));
	if (!w || setup_workers(&o, &cfg, w)) {
		for (uint32_t i = 0; w && i < o.threads; i++)
			sheaf_loop_free(w[i].loop);
		free(w);
		ups_free(&o.up);
		return 1;
	}
	if (!o.quiet)
		printf("sheaf proxy: listening on %s (io=%s, buf-size=%u, bufs=%u, threads=%u, "
		       "balance=%s, upstream=%s%s)\n", o.listen.text, sheaf_io_name(cfg.io),
		       cfg.buf_size, cfg.nbufs, o.threads, balance_name(o.up.balance),
		       o.up.u[0].a.text, o.up.n > 1 ? ",..." : "");
	fflush(stdout);
	run_workers(w, o.threads, &o, cfg.io);
	ret = finish_workers(w, o.threads, &o, cfg.io);
	free(w);
	ups_free(&o.up);
	return ret;
}
