/* sheaf proxy: an L4 TCP proxy; each client is linked to one upstream. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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

#include "proxy.h"
#include "proxy_proto.h"

static const char help[] =
	"usage: sheaf proxy --listen HOST:PORT --upstream HOST:PORT [options]\n"
	"       sheaf proxy --config FILE [--check]\n"
	"Accepts TCP connections and links each to a new connection to an upstream;\n"
	"bytes move both ways by reference through one provided-buffer pool.\n"
	"It connects to an upstream only for a client (no probe at start: it starts\n"
	"and listens with every upstream down). HOST is an IPv4 address, [IPv6] or a\n"
	"name, resolved once at start to its first address (exit 2 if it does not\n"
	"resolve); each upstream keeps its address family.\n"
	"Runs until SIGINT/SIGTERM, then stops accepting, lets the connections finish\n"
	"for up to --drain-timeout, cuts the rest and prints its counters; SIGUSR1\n"
	"prints them and goes on; SIGHUP is logged and ignored (nothing is reloaded:\n"
	"restart to read a changed --config); SIGUSR2 and SIGPIPE are ignored.\n"
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
	"  --io MODE              auto|bundle|ring|plain|sendmsg|epoll|recvmsg\n"
	"                         (default auto, see sheaf probe)\n"
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
	"  --drain-timeout MS     on SIGINT/SIGTERM: stop accepting, let the connections\n"
	"                         finish for up to MS milliseconds (1 .. 86400000, default\n"
	"                         2000), then cut (reset) the rest (HAProxy's soft stop and\n"
	"                         hard-stop-after)\n"
	"  --log WHAT             a line on stdout per connection that ended: conn (each),\n"
	"                         errors (those that did not end normally), none (default).\n"
	"                         The line, after HAProxy's tcplog:\n"
	"                           sheaf proxy: conn CLIENT [DATE] FRONTEND UPSTREAM\n"
	"                             Tc/Tt BYTES_IN BYTES_OUT STATE\n"
	"                         CLIENT the client's address (--accept-proxy: the one its\n"
	"                         header named), DATE when it was accepted (local time),\n"
	"                         UPSTREAM the last one tried (<NOSRV>: none), Tc the ms\n"
	"                         to connect to it (-1: never connected), Tt the ms from\n"
	"                         accept to the end, BYTES_IN/OUT from and to the client,\n"
	"                         STATE two letters, who ended it and in which phase:\n"
	"                           --  both sides closed normally\n"
	"                           CD  the client reset (or failed) during the transfer\n"
	"                           SD  the upstream did\n"
	"                           cD, sD  a timeout on the client's, the upstream's side\n"
	"                               (--idle-timeout, --stall-timeout)\n"
	"                           KD, KC, KR  cut at the end of --drain-timeout\n"
	"                           SC  no upstream connected (the last one refused or\n"
	"                               failed); sC the last timed out; RC no resource\n"
	"                               (connection slots, descriptors) to connect\n"
	"                           CC  the client went away while connecting\n"
	"                           PR  its PROXY header was malformed or oversized;\n"
	"                               cR it came too late; CR the client ended first\n"
	"                           IC  an internal error (out of memory)\n"
	"                         Errors (an event loop failing, buffers not returned,\n"
	"                         upstreams going down and up) are always on stderr\n"
	"  --metrics HOST:PORT    serve Prometheus metrics at GET /metrics on HOST:PORT\n"
	"                         (anything else: 404); see README.md for the names\n"
	"  --quiet                print only errors and the upstream down/up lines (and\n"
	"                         what --log asks for)\n"
	"  --config FILE          read the options from FILE, with several frontends\n"
	"                         (listeners with their own upstreams); no other option\n"
	"                         goes with it but --check\n"
	"  --check                check the options (or FILE) and exit: 0 valid, 2 not\n"
	"The counters (one JSON line) end with the proxy's own: no_upstream (clients\n"
	"closed because no upstream connected), upstreams_down (at the stop), and the\n"
	"PROXY headers refused: pp_malformed, pp_oversized, pp_late (summed over the\n"
	"frontends).\n"
	"Under systemd: the sockets a socket unit passes (LISTEN_FDS) are used instead\n"
	"of binding, each for the frontend (or --metrics) named like it\n"
	"(FileDescriptorName=) or listening on the same address; with NOTIFY_SOCKET set\n"
	"(Type=notify) it sends READY=1 once listening and STOPPING=1 at the stop\n"
	"(contrib/ has the units).\n"
	"Exit status: 0 after a clean stop, 1 on a runtime error (or buffers not returned),\n"
	"2 on bad usage.\n";

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

/* Why the proxy itself ended a pair before linking it (for --log). */
enum pair_end { END_NONE, END_NO_UPSTREAM, END_PP_BAD, END_PP_LATE, END_PP_EOF,
		END_INTERNAL };

/* A client and the upstream connection made for it. */
struct pair {
	uint8_t kind;              /* KIND_PAIR */
	uint8_t end;               /* enum pair_end */
	uint8_t client_flags, up_flags; /* sheaf_conn_info's, at on_close */
	int8_t last_up;            /* the last upstream tried, or -1 */
	bool linked;
	int16_t connect_err;       /* the last failed connect's error */
	int16_t client_err, up_err; /* as on_close told them */
	struct sheaf_conn *client, *up;
	struct frontend *fe;
	struct pp_in *pp;          /* --accept-proxy, until linked */
	struct up_pick pick;       /* the upstream being tried or used */
	uint32_t tried;            /* upstreams this client tried (bit i: upstream i) */
	uint32_t hash;             /* of the client's address, for --balance source */
	uint32_t sent;             /* bytes of our PROXY header and early bytes written */
	struct pair *prev, *next;  /* the loop's open clients (worker.clients) */
	double accepted, connected; /* now_sec(); connected 0: not yet */
	uint64_t bytes_in, bytes_out; /* the client's, once it closed */
	union {                    /* the client's address, for --log */
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
};

static void pair_end(struct pair *p);

static struct worker *worker_of(struct sheaf_conn *c)
{
	return sheaf_loop_data(sheaf_conn_loop(c));
}

static void pp_in_free(struct pair *p)
{
	if (!p->pp)
		return;
	sheaf_timer_cancel(p->pp->timer);
	free(p->pp->early);
	free(p->pp);
	p->pp = NULL;
}

/* The proxy ends a pair itself (before linking it): why, for --log. */
static void pair_refuse(struct pair *p, enum pair_end why)
{
	if (!p->end)
		p->end = (uint8_t)why;
	sheaf_conn_close(p->client);
}

/* Connects the pair's client to the next upstream (ups_pick), or the ones
 * after it if connecting fails at once; closes the client when none is left.
 * The connection gets its data only once made. */
static void connect_next(struct pair *p)
{
	struct upstreams *u = &p->fe->up;

	while (ups_pick(u, &p->tried, p->hash, now_sec(), &p->pick) >= 0) {
		const struct addr *a = &u->u[p->pick.idx].a;
		int err = 0;

		p->last_up = (int8_t)p->pick.idx;
		p->up = sheaf_connect(sheaf_conn_loop(p->client), (const struct sockaddr *)&a->ss,
				      a->len, NULL, &err);
		if (p->up) {
			sheaf_conn_set_data(p->up, p);
			return;
		}
		p->connect_err = (int16_t)err;
		ups_result(u, &p->pick, err, now_sec());
		ups_end(u, &p->pick);
		if (err == -EMFILE) /* no connection slot here (or stopping) */
			break;
	}
	atomic_fetch_add(&u->no_upstream, 1);
	pair_refuse(p, END_NO_UPSTREAM);
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
	return p->fe->send_proxy == 2 ? pp_build_v2(s, d, out, cap) :
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

	if (p->fe->send_proxy && (hlen = pp_out(p, hdr, sizeof(hdr))) < 0)
		r = -1;
	if (r > 0 && hlen)
		r = write_part(p, hdr, (size_t)hlen, 0);
	if (r > 0 && p->pp && p->pp->early)
		r = write_part(p, p->pp->early, p->pp->early_len, (size_t)hlen);
	if (r == 0)
		return; /* on_writable calls again */
	pp_in_free(p);
	if (r >= 0 && !sheaf_conn_link(p->client, p->up)) {
		p->linked = true;
		return;
	}
	sheaf_conn_close(p->up);
	pair_refuse(p, END_INTERNAL);
}

static void on_connect(struct sheaf_conn *up, int err)
{
	struct pair *p = sheaf_conn_data(up);

	ups_result(&p->fe->up, &p->pick, err, now_sec());
	if (err) {                   /* closed after we return: try the next */
		sheaf_conn_set_data(up, NULL);
		p->up = NULL;
		p->connect_err = (int16_t)err;
		ups_end(&p->fe->up, &p->pick);
		if (p->client)
			connect_next(p);
		else
			pair_end(p); /* the client went first */
		return;
	}
	p->connected = now_sec();
	if (!p->client)              /* the client went away meanwhile */
		sheaf_conn_close(up);
	else
		start_pair(p);
}

/* An address hashed, for --balance source (else 0). */
static uint32_t source_hash(const struct pair *p, const struct sockaddr *addr)
{
	if (p->fe->up.balance != BALANCE_SOURCE)
		return 0;
	return addr ? addr_hash(addr) : addr_hash(&p->peer.sa);
}

/* --accept-proxy: a client refused for its header (never forwarded). */
static void pp_refuse(struct pair *p, atomic_ullong *counter, enum pair_end why)
{
	atomic_fetch_add(counter, 1);
	pp_in_free(p);
	pair_refuse(p, why);
}

static void on_header_timeout(struct sheaf_timer *t, void *arg)
{
	struct pair *p = arg;

	p->pp->timer = NULL; /* freed after this returns */
	pp_refuse(p, &p->fe->pp_late, END_PP_LATE);
}

/* --accept-proxy: the header's addresses become the client's (for --log). */
static void pp_peer(struct pair *p)
{
	const struct pp_addrs *a = &p->pp->addrs;

	if (a->family == AF_INET)
		memcpy(&p->peer.in, &a->src, sizeof(p->peer.in));
	else if (a->family == AF_INET6)
		memcpy(&p->peer.in6, &a->src, sizeof(p->peer.in6));
}

/*
 * --accept-proxy: the client's first bytes, until its header is complete;
 * then it stops reading (sheaf_conn_pause) while its upstream is chosen and
 * connected, and the bytes behind the header wait in p->pp->early.
 */
static void pair_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
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
		pp_refuse(p, n == -E2BIG ? &p->fe->pp_oversized : &p->fe->pp_malformed,
			  END_PP_BAD);
		return;
	}
	sheaf_timer_cancel(in->timer);
	in->timer = NULL;
	sheaf_conn_pause(c);
	pp_peer(p);
	/* what the bundle holds behind the header: copied once, kept until an
	 * upstream takes it (a failed connect leaves it for the next one) */
	in->early_len = b->bytes - ((size_t)n - before);
	if (in->early_len && !(in->early = malloc(in->early_len))) {
		pp_refuse(p, &p->fe->pp_malformed, END_INTERNAL);
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
static void pair_eof(struct sheaf_conn *c)
{
	struct pair *p = sheaf_conn_data(c);

	if (p && p->pp && c == p->client)
		pp_refuse(p, &p->fe->pp_malformed, END_PP_EOF);
}

/* The loop's open clients: for their byte counts in the metrics. */
static void clients_add(struct worker *w, struct pair *p)
{
	p->prev = NULL;
	p->next = w->clients;
	if (w->clients)
		w->clients->prev = p;
	w->clients = p;
}

static void clients_remove(struct worker *w, struct pair *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		w->clients = p->next;
	if (p->next)
		p->next->prev = p->prev;
}

static void pair_accept(struct sheaf_conn *client, struct frontend *fe)
{
	struct worker *w = worker_of(client);
	struct pair *p = calloc(1, sizeof(*p));
	socklen_t len = sizeof(p->peer);
	int err = 0;

	if (!p) {
		sheaf_conn_close(client);
		return;
	}
	p->kind = KIND_PAIR;
	p->client = client;
	p->fe = fe;
	p->pick.idx = p->last_up = -1;
	p->accepted = now_sec();
	/* the client's address: for --log and --balance source only */
	p->peer.sa.sa_family = AF_UNSPEC;
	if ((fe->px->log != LOG_NONE || fe->up.balance == BALANCE_SOURCE) &&
	    getpeername(sheaf_conn_fd(client), &p->peer.sa, &len))
		p->peer.sa.sa_family = AF_UNSPEC;
	w->fe[fe->idx].conns_total++;
	w->fe[fe->idx].conns++;
	clients_add(w, p);
	sheaf_conn_set_data(client, p);
	if (!fe->accept_proxy) {
		p->hash = source_hash(p, NULL);
		connect_next(p);
		return;
	}
	p->pp = calloc(1, sizeof(*p->pp));
	if (p->pp)
		p->pp->timer = sheaf_timer_add(sheaf_conn_loop(client), fe->header_timeout_ms,
					       0, on_header_timeout, p, &err);
	if (!p->pp || !p->pp->timer || sheaf_conn_start(client)) {
		pp_in_free(p);
		pair_refuse(p, END_INTERNAL);
	}
}

/* ---- the end of a pair: --log ------------------------------------------ */

static bool local_failure(int err)
{
	return err == -EMFILE || err == -ENFILE || err == -ENOMEM || err == -ENOBUFS ||
	       err == -EADDRNOTAVAIL;
}

/* Who ended the pair, and in which phase: HAProxy's termination state
 * (the first two letters of its tcplog's); see the help text. */
static void term_state(const struct pair *p, bool stopping, char st[3])
{
	static const char *const by_end[] = { [END_PP_BAD] = "PR", [END_PP_LATE] = "cR",
					      [END_PP_EOF] = "CR", [END_INTERNAL] = "IC" };
	bool cerr = p->client_err && !(p->client_flags & SHEAF_CONN_PEER_FAILED);
	bool uerr = p->up_err && !(p->up_flags & SHEAF_CONN_PEER_FAILED);
	int err = cerr ? p->client_err : uerr ? p->up_err : p->client_err ?: p->up_err;
	char who = cerr || (!uerr && p->client_err) ? 'C' : 'S';

	if (p->end == END_NO_UPSTREAM)
		memcpy(st, p->connect_err == -ETIMEDOUT ? "sC" :
			   local_failure(p->connect_err) ? "RC" : "SC", 3);
	else if (p->end)
		memcpy(st, by_end[p->end], 3);
	else if (!err)
		memcpy(st, p->linked ? "--" : "CC", 3);
	else {
		st[0] = err != -ETIMEDOUT ? who : stopping ? 'K' : who == 'C' ? 'c' : 's';
		st[1] = p->linked ? 'D' : p->pp ? 'R' : 'C';
		st[2] = 0;
	}
}

/* Both sides are gone: the --log line, and the pair goes. */
static void pair_end(struct pair *p)
{
	struct proxy *px = p->fe->px;
	struct conn_end e = {
		.fe = p->fe,
		.client = p->peer.sa.sa_family == AF_UNSPEC ? NULL : &p->peer.sa,
		.upstream = p->last_up >= 0 ? p->fe->up.u[p->last_up].a.text : NULL,
		.accepted = p->accepted, .connected = p->connected, .ended = now_sec(),
		.bytes_in = p->bytes_in, .bytes_out = p->bytes_out,
	};

	if (px->log != LOG_NONE) {
		term_state(p, atomic_load(&px->stopping), e.state);
		if (px->log == LOG_CONN || strcmp(e.state, "--"))
			log_conn(stdout, &e, e.ended, wall_sec());
	}
	free(p);
}

/* Each side forgets itself when it goes; the last one ends the pair. */
static void pair_close(struct sheaf_conn *c, int err)
{
	struct pair *p = sheaf_conn_data(c);
	struct sheaf_conn_info info = { .size = sizeof(info) };

	if (!p)
		return;
	sheaf_conn_info(c, &info);
	if (p->client == c) {
		struct worker *w = worker_of(c);
		struct fe_counters *fc = &w->fe[p->fe->idx];

		p->client = NULL;
		p->client_err = (int16_t)err;
		p->client_flags = (uint8_t)info.flags;
		p->bytes_in = info.bytes_in;
		p->bytes_out = info.bytes_out;
		fc->conns--;
		fc->bytes_in += info.bytes_in;
		fc->bytes_out += info.bytes_out;
		clients_remove(w, p);
		pp_in_free(p); /* its timer must not fire for a gone client */
	}
	if (p->up == c) {
		p->up = NULL;
		p->up_err = (int16_t)err;
		p->up_flags = (uint8_t)info.flags;
		ups_end(&p->fe->up, &p->pick);
	}
	if (!p->client && !p->up)
		pair_end(p);
}

/* ---- the callbacks: pairs, and the metrics endpoint's connections ------ */

static bool is_metrics(struct sheaf_conn *c)
{
	const uint8_t *kind = sheaf_conn_data(c);

	return kind && *kind == KIND_SCRAPE;
}

static void on_accept(struct sheaf_conn *c, void *listen_data)
{
	if (*(uint8_t *)listen_data == KIND_METRICS)
		metrics_accept(c, listen_data);
	else
		pair_accept(c, listen_data);
}

static void on_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
{
	if (is_metrics(c))
		metrics_data(c, b);
	else
		pair_data(c, b);
}

static void on_eof(struct sheaf_conn *c)
{
	if (is_metrics(c))
		metrics_eof(c);
	else
		pair_eof(c);
}

static void on_writable(struct sheaf_conn *c)
{
	struct pair *p;

	if (is_metrics(c)) {
		metrics_writable(c);
		return;
	}
	p = sheaf_conn_data(c);
	if (p && p->client && p->up == c)
		start_pair(p);
}

static void on_close(struct sheaf_conn *c, int err)
{
	if (is_metrics(c))
		metrics_close(c, err);
	else
		pair_close(c, err);
}

/* ---- counters ----------------------------------------------------------- */

static double ratio(uint64_t num, uint64_t den)
{
	return den ? (double)num / (double)den : 0.0;
}

/* One JSON line: every field of struct sheaf_stats under its own name, the
 * derived averages, then the proxy's own counters (over all frontends). */
static void print_stats(const struct sheaf_stats *s, struct proxy *px)
{
	unsigned long long no_up = 0, mal = 0, over = 0, late = 0;
	unsigned down = 0;

	for (unsigned i = 0; i < px->nfe; i++) {
		no_up += atomic_load(&px->fe[i].up.no_upstream);
		down += ups_down_count(&px->fe[i].up);
		mal += atomic_load(&px->fe[i].pp_malformed);
		over += atomic_load(&px->fe[i].pp_oversized);
		late += atomic_load(&px->fe[i].pp_late);
	}
	flockfile(stdout);
	printf("sheaf proxy: stats {\"io\":\"%s\"", sheaf_io_name(px->io_mode));
#define PRINT_U64(name) printf(",\"" #name "\":%llu", (unsigned long long)s->name);
#define PRINT_U32(name) printf(",\"" #name "\":%u", (unsigned)s->name);
	SHEAF_STATS_COUNTERS(PRINT_U64)
	SHEAF_STATS_GAUGES(PRINT_U32)
#undef PRINT_U64
#undef PRINT_U32
	printf(",\"bufs_per_recv\":%.2f,\"bufs_per_send\":%.2f",
	       ratio(s->recv_bufs, s->recv_cqes), ratio(s->send_bufs, s->send_cqes));
	printf(",\"no_upstream\":%llu,\"upstreams_down\":%u,\"pp_malformed\":%llu,"
	       "\"pp_oversized\":%llu,\"pp_late\":%llu}\n", no_up, down, mal, over, late);
	funlockfile(stdout);
}

/* Totals of several loops: every field summed, gauges included. */
static void stats_add(struct sheaf_stats *t, const struct sheaf_stats *s)
{
#define ADD(name) t->name += s->name;
	SHEAF_STATS_COUNTERS(ADD)
	SHEAF_STATS_GAUGES(ADD)
#undef ADD
}

/* On a loop's thread: its counters, the open clients' bytes included. */
void worker_snap(struct worker *w, struct loop_snap *out)
{
	struct sheaf_conn_info info = { .size = sizeof(info) };

	out->st.size = sizeof(out->st);
	sheaf_loop_stats(w->loop, &out->st);
	memcpy(out->fe, w->fe, sizeof(out->fe));
	for (struct pair *p = w->clients; p; p = p->next) {
		if (sheaf_conn_info(p->client, &info))
			continue;
		out->fe[p->fe->idx].bytes_in += info.bytes_in;
		out->fe[p->fe->idx].bytes_out += info.bytes_out;
	}
}

/*
 * The open-file limit against what --max-conns needs: two sockets per
 * client per thread, and some spare (standard streams, the signalfd, the
 * active checks, each loop's ring, eventfd and listeners, the metrics
 * connections). Raises the soft limit up to the hard one if that helps, as
 * HAProxy does; else lowers --max-conns with a warning naming both numbers,
 * or refuses under --strict. 0 or EXIT_USAGE.
 */
static int fit_fd_limit(struct proxy *px)
{
	uint64_t spare = 3 + 1 + MAX_UPSTREAMS * px->nfe + (4ull + px->nfe) * px->threads + 24;
	uint64_t need = 2ull * px->max_conns * px->threads + spare, fit;
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
	fit = rl.rlim_cur > spare ? (rl.rlim_cur - spare) / (2ull * px->threads) : 0;
	if (px->strict || !fit) {
		say("proxy", "--max-conns %u needs %llu open files, the limit is %llu (ulimit -n)%s",
		    px->max_conns, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
		    fit ? "" : ": too low to proxy at all");
		return EXIT_USAGE;
	}
	say("proxy", "--max-conns %u needs %llu open files, the limit is %llu (ulimit -n): "
	    "using --max-conns %llu", px->max_conns, (unsigned long long)need,
	    (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
	px->max_conns = (uint32_t)fit;
	return 0;
}

/* ---- the event loops ---------------------------------------------------- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	w->ret = sheaf_loop_run(w->loop);
	if (w->ret < 0)
		kill(getpid(), SIGTERM); /* the main thread stops the others */
	return NULL;
}

/* A frontend's listener on loop i: the socket systemd passed (a copy of
 * it past the first loop), else a new one; the first loop's picks the port
 * for port 0. 0, or 1 after saying why not. */
static int listen_frontend(struct frontend *fe, struct worker *w)
{
	int fd, own = -1;

	if (fe->fd >= 0) {
		own = w->idx ? fcntl(fe->fd, F_DUPFD_CLOEXEC, 3) : fe->fd;
		fd = own < 0 ? -errno : sheaf_listen_fd(w->loop, own, fe);
		if (fd < 0 && own >= 0 && own != fe->fd)
			close(own);
		if (fd >= 0 && !w->idx)
			fe->adopted = true; /* the first loop owns it now */
	} else {
		fd = sheaf_listen(w->loop, (const struct sockaddr *)&fe->listen.ss,
				  fe->listen.len, fe);
	}
	if (fd < 0) {
		say("proxy", "%s%s%s: listen %s: %s", fe->line ? "frontend " : "",
		    fe->line ? fe->name : "", fe->line ? "" : "--listen", fe->listen.text,
		    strerror(-fd));
		return 1;
	}
	if (!w->idx)
		addr_bound(fd, &fe->listen); /* port 0: the others take the same */
	return 0;
}

/*
 * systemd socket activation: each passed socket goes to the frontend named
 * like it (FileDescriptorName=), or to --metrics for "metrics", else to the
 * one listening on its address (sd_fd_matches); one for none is closed
 * with a warning. Frontends without one bind their own.
 */
static void adopt_sockets(struct proxy *px)
{
	int fds[MAX_FRONTENDS + 1];
	char names[MAX_FRONTENDS + 1][64];
	int n = sd_listen_fds(fds, names, MAX_FRONTENDS + 1);

	for (int i = 0; i < n && i <= MAX_FRONTENDS; i++) {
		struct frontend *fe = NULL;
		struct addr a;
		bool metrics = px->have_metrics && px->metrics_fd < 0 &&
			       !strcmp(names[i], "metrics");

		for (unsigned f = 0; f < px->nfe && !fe && !metrics; f++)
			if (px->fe[f].fd < 0 && !strcmp(names[i], px->fe[f].name))
				fe = &px->fe[f];
		for (unsigned f = 0; f < px->nfe && !fe && !metrics; f++)
			if (px->fe[f].fd < 0 && sd_fd_matches(fds[i], &px->fe[f].listen))
				fe = &px->fe[f];
		if (!fe && !metrics && px->have_metrics && px->metrics_fd < 0)
			metrics = sd_fd_matches(fds[i], &px->metrics_addr);
		if (fe) {
			fe->fd = fds[i];
		} else if (metrics) {
			px->metrics_fd = fds[i];
		} else {
			snprintf(a.text, sizeof(a.text), "?");
			addr_bound(fds[i], &a);
			say("proxy", "LISTEN_FDS: fd %d (%s%s%s) is for no frontend: closed", fds[i],
			    a.text, names[i][0] ? ", " : "", names[i]);
			close(fds[i]);
		}
	}
	for (int i = MAX_FRONTENDS + 1; i < n; i++) {
		say("proxy", "LISTEN_FDS: fd %d: more sockets than frontends: closed", 3 + i);
		close(3 + i);
	}
}

/* Creates the loops and their listeners. */
static int setup_workers(struct proxy *px, struct sheaf_loop_config *cfg)
{
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = on_accept,
				      .on_connect = on_connect, .on_close = on_close,
				      .on_data = on_data, .on_eof = on_eof,
				      .on_writable = on_writable };
	int err = 0;

	cfg->reuseport = px->threads > 1;
	for (uint32_t i = 0; i < px->threads; i++) {
		struct worker *w = &px->w[i];

		w->px = px;
		w->idx = i;
		w->loop = sheaf_loop_new(cfg, &cb, w, &err);
		if (!w->loop) {
			say("proxy", "cannot set up %s (io=%s, buf-size=%u, bufs=%u): %s",
			    cfg->io == SHEAF_IO_EPOLL ? "epoll" : "io_uring", sheaf_io_name(cfg->io),
			    cfg->buf_size, cfg->nbufs, strerror(-err));
			return 1;
		}
		for (unsigned f = 0; f < px->nfe; f++)
			if (listen_frontend(&px->fe[f], w))
				return 1;
	}
	if (px->have_metrics) {
		int fd = metrics_init(px);

		if (!fd)
			fd = metrics_listen(px, px->w[0].loop);
		if (fd < 0) {
			say("proxy", "metrics %s: %s", px->metrics_addr.text, strerror(-fd));
			return 1;
		}
	}
	return 0;
}

/*
 * The main thread's signals. Every thread blocks them; the main thread reads
 * them from a signalfd: SIGINT and SIGTERM stop the proxy, SIGUSR1 prints the
 * counters line and goes on, SIGHUP is logged and ignored (nothing is
 * reloaded), SIGUSR2 is ignored. SIGPIPE is ignored.
 */
struct main_ctx {
	int sfd;
	struct proxy *px;
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
	struct proxy *px = m->px;
	struct sheaf_stats all = { 0 };
	uint32_t asked = 0, got = 0;

	for (uint32_t i = 0; i < px->nw; i++) {
		atomic_store(&px->w[i].snapped, 0);
		asked += !sheaf_loop_post(px->w[i].loop, snapshot, &px->w[i]);
	}
	for (int tries = 0; tries < 1000 && got < asked; tries++) {
		got = 0;
		for (uint32_t i = 0; i < px->nw; i++)
			got += (uint32_t)atomic_load(&px->w[i].snapped);
		if (got < asked)
			usleep(1000);
	}
	if (got < asked) {
		say("proxy", "SIGUSR1: %u of %u event loops did not answer", asked - got, px->nw);
		return;
	}
	for (uint32_t i = 0; i < px->nw; i++)
		stats_add(&all, &px->w[i].snap);
	print_stats(&all, px);
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
			say("proxy", "SIGHUP ignored: nothing is reloaded (restart to read a "
			    "changed configuration)");
			break;
		default: /* SIGUSR2 */
			break;
		}
	}
	return go_on;
}

/*
 * Active checks (--check-interval), in the main thread: every interval, a
 * non-blocking TCP connect to each upstream of every frontend at once,
 * polled beside a signalfd for SIGINT/SIGTERM so that a check never holds up
 * a stop.
 */
#define MAX_CHECKS (MAX_FRONTENDS * MAX_UPSTREAMS)

struct checks {
	struct main_ctx *m;       /* signals: see on_signals */
	uint32_t interval_ms, timeout_ms;
	unsigned n;
	struct upstreams *ups[MAX_CHECKS]; /* check i: upstream idx[i] of ups[i] */
	unsigned idx[MAX_CHECKS];
	struct pollfd pfd[1 + MAX_CHECKS]; /* [0]: the signalfd; [1 + i]: check i */
	bool was_down[MAX_CHECKS];
};

/* Check i ended with err (0: it connected). */
static void check_end(struct checks *k, unsigned i, int err)
{
	close(k->pfd[1 + i].fd);
	k->pfd[1 + i].fd = -1;
	ups_check_result(k->ups[i], k->idx[i], k->was_down[i], err, now_sec());
}

static void checks_start(struct checks *k)
{
	for (unsigned i = 0; i < k->n; i++) {
		const struct addr *a = &k->ups[i]->u[k->idx[i]].a;
		int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		k->was_down[i] = ups_is_down(k->ups[i], k->idx[i]);
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

		n = poll(k->pfd, 1 + k->n, ms > 0 ? ms : 0);
		if (n < 0 && errno != EINTR)
			return false;
		if (k->pfd[0].revents && !on_signals(k->m))
			return false;
		pending = 0;
		for (unsigned i = 0; i < k->n; i++) {
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
	for (unsigned i = 0; i < k->n; i++)
		if (k->pfd[1 + i].fd >= 0)
			close(k->pfd[1 + i].fd);
}

static void checks_for(struct main_ctx *m)
{
	struct proxy *px = m->px;
	struct checks *k = calloc(1, sizeof(*k));

	if (!k) {
		say("proxy", "--check-interval: out of memory: no active checks");
		return;
	}
	k->m = m;
	k->interval_ms = k->timeout_ms = px->check_interval_ms;
	if (px->connect_timeout_ms && px->connect_timeout_ms < k->timeout_ms)
		k->timeout_ms = px->connect_timeout_ms;
	for (unsigned f = 0; f < px->nfe; f++) {
		for (unsigned i = 0; i < px->fe[f].up.n; i++) {
			k->ups[k->n] = &px->fe[f].up;
			k->idx[k->n++] = i;
		}
	}
	checks_run(k);
	free(k);
}

/* systemd (Type=notify): a failure to tell it is said once, never fatal. */
static void notify(const char *msg)
{
	static bool said;
	int ret = sd_notify(msg);

	if (ret && !said) {
		said = true;
		say("proxy", "NOTIFY_SOCKET=%s: %s", getenv("NOTIFY_SOCKET"), strerror(-ret));
	}
}

/* Runs the workers until SIGINT/SIGTERM (or one fails), then stops them;
 * checks the upstreams meanwhile when asked to. */
static void run_workers(struct proxy *px)
{
	struct main_ctx m = { .px = px };
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
	for (uint32_t i = 0; i < px->nw; i++)
		px->w[i].started = !pthread_create(&px->w[i].tid, NULL, worker_main, &px->w[i]);
	notify("READY=1\nSTATUS=listening");
	if (px->check_interval_ms) {
		checks_for(&m);
	} else {
		struct pollfd pfd = { .fd = m.sfd, .events = POLLIN };

		while ((poll(&pfd, 1, -1) >= 0 || errno == EINTR) && on_signals(&m))
			;
	}
	close(m.sfd);
	atomic_store(&px->stopping, true);
	notify("STOPPING=1\nSTATUS=draining");
	/* sheaf_loop_stop wakes each loop itself */
	for (uint32_t i = 0; i < px->nw; i++)
		sheaf_loop_stop(px->w[i].loop);
	for (uint32_t i = 0; i < px->nw; i++)
		if (px->w[i].started)
			pthread_join(px->w[i].tid, NULL);
}

/* Sums the workers' counters, frees them; 0, or 1 if any failed or leaked. */
static int finish_workers(struct proxy *px)
{
	struct sheaf_stats all = { 0 }, st = { .size = sizeof(st) };
	int ret = 0;

	if (!px->quiet && px->nw > 1)
		printf("sheaf proxy: accepted per thread:");
	for (uint32_t i = 0; i < px->nw && px->w[i].loop; i++) {
		sheaf_loop_stats(px->w[i].loop, &st);
		stats_add(&all, &st);
		if (!px->quiet && px->nw > 1)
			printf(" %llu%s", (unsigned long long)st.accepted, i + 1 < px->nw ? "" : "\n");
		sheaf_loop_free(px->w[i].loop);
		px->w[i].loop = NULL;
		if (px->w[i].ret < 0) {
			say("proxy", "event loop %u failed: %s", i, strerror(-px->w[i].ret));
			ret = 1;
		}
	}
	if (!px->quiet)
		print_stats(&all, px);
	if (all.pool_free != all.pool_bufs) {
		say("proxy", "%u of %u pool buffers were not returned",
		    all.pool_bufs - all.pool_free, all.pool_bufs);
		ret = 1;
	}
	return ret;
}

/* ---- start and stop ------------------------------------------------------ */

/* The loops' configuration from the options. 0 or an exit status. */
static int loop_config(struct proxy *px, struct sheaf_loop_config *cfg)
{
	bool pp = false;
	int ret = io_config("proxy", &px->io, 2 * px->max_conns, cfg);

	if (ret)
		return ret;
	for (unsigned i = 0; i < px->nfe; i++)
		pp |= px->fe[i].send_proxy || px->fe[i].accept_proxy;
	cfg->accept_max = px->max_conns; /* each client needs a slot for its upstream too */
	cfg->backlog = px->backlog;
	cfg->nodelay = px->nodelay;
	cfg->connect_timeout_ms = px->connect_timeout_ms;
	cfg->idle_timeout_ms = px->idle_timeout_ms;
	cfg->stall_timeout_ms = px->stall_timeout_ms;
	cfg->drain_timeout_ms = px->drain_timeout_ms;
	cfg->soft_stop = 1; /* SIGTERM lets connections finish, up to the drain timeout */
	if (pp || px->have_metrics) /* ~1 MiB for headers, early bytes, metrics */
		for (cfg->write_bufs = 64; cfg->write_bufs < 16384 &&
		     (uint64_t)cfg->write_bufs * cfg->buf_size < (1u << 20);)
			cfg->write_bufs *= 2;
	px->io_mode = cfg->io;
	return 0;
}

static void print_listening(struct proxy *px, const struct sheaf_loop_config *cfg)
{
	for (unsigned i = 0; i < px->nfe; i++) {
		struct frontend *fe = &px->fe[i];

		printf("sheaf proxy: listening on %s (%s%s%sio=%s, buf-size=%u, bufs=%u, "
		       "threads=%u, balance=%s, upstream=%s%s%s)\n", fe->listen.text,
		       fe->line ? "frontend " : "", fe->line ? fe->name : "",
		       fe->line ? ", " : "", sheaf_io_name(cfg->io), cfg->buf_size, cfg->nbufs,
		       px->threads, balance_name(fe->up.balance), fe->up.u[0].a.text,
		       fe->up.n > 1 ? ",..." : "", fe->adopted ? ", socket from systemd" : "");
	}
	if (px->have_metrics)
		printf("sheaf proxy: metrics at http://%s/metrics%s\n", px->metrics_addr.text,
		       px->metrics_adopted ? " (socket from systemd)" : "");
}

static int check_only(struct proxy *px)
{
	unsigned ups = 0;

	for (unsigned i = 0; i < px->nfe; i++)
		ups += px->fe[i].up.n;
	printf("sheaf proxy: %s: valid: %u frontend%s, %u upstream%s\n",
	       px->config ? px->config : "options", px->nfe, px->nfe > 1 ? "s" : "", ups,
	       ups > 1 ? "s" : "");
	return 0;
}

static void free_all(struct proxy *px, unsigned ups)
{
	for (uint32_t i = 0; px->w && i < px->nw; i++)
		sheaf_loop_free(px->w[i].loop);
	free(px->w);
	metrics_free(px);
	for (unsigned i = 0; i < ups; i++)
		ups_free(&px->fe[i].up);
}

int proxy_check_args(int argc, char **argv)
{
	struct proxy *px = calloc(1, sizeof(*px));
	int ret;

	if (!px)
		return EXIT_USAGE;
	proxy_defaults(px);
	ret = proxy_args(argc, argv, px, "");
	free(px);
	return ret;
}

int cmd_proxy(int argc, char **argv)
{
	static struct proxy px;
	struct sheaf_loop_config cfg;
	unsigned ups = 0;
	int ret;

	proxy_defaults(&px);
	if ((ret = proxy_args(argc, argv, &px, help)) == ARGS_HELP) {
		fputs(help, stdout);
		fputs(proxy_config_help, stdout);
		return 0;
	}
	if (ret)
		return ret;
	if (px.check_only)
		return check_only(&px);
	if ((ret = fit_fd_limit(&px)) || (ret = loop_config(&px, &cfg)))
		return ret;
	for (; ups < px.nfe; ups++) {
		if ((ret = ups_init(&px.fe[ups].up))) {
			say("proxy", "cannot set up the upstreams' lock: %s", strerror(-ret));
			free_all(&px, ups);
			return 1;
		}
		px.fe[ups].up.log = stderr;
	}
	px.start_mono = now_sec();
	px.start_wall = time(NULL);
	px.nw = px.threads;
	px.w = calloc(px.nw, sizeof(*px.w));
	adopt_sockets(&px);
	if (!px.w || setup_workers(&px, &cfg)) {
		free_all(&px, ups);
		return 1;
	}
	if (px.log != LOG_NONE)
		setvbuf(stdout, NULL, _IOLBF, 0); /* a line per connection, as it ends */
	if (!px.quiet)
		print_listening(&px, &cfg);
	fflush(stdout);
	run_workers(&px);
	ret = finish_workers(&px);
	free_all(&px, ups);
	return ret;
}
