/*
 * --metrics: GET /metrics in Prometheus' text format (0.0.4), served by the
 * proxy's first event loop like any connection of it: accepted by its own
 * listener, started (sheaf_conn_start), the request read in on_data, the
 * answer written with sheaf_conn_write. Anything else than GET /metrics is a
 * 404; a malformed request a 400, one over REQ_MAX bytes a 431, one not
 * complete in REQ_TIMEOUT_MS a 408; the connection closes after each answer.
 * At most CONNS_MAX are open at once (more are closed at once), so a flood
 * on the metrics port cannot take the loop's slots from the proxy.
 *
 * The other loops' counters are theirs alone (no locks on the data path):
 * loop 0 posts each a function (sheaf_loop_post) that copies them, on that
 * loop's own thread, into the loop's slot and then publishes the scrape's
 * number in the slot (release; loop 0 reads it with acquire). Loop 0 checks
 * the slots every millisecond until all answered, then answers every request
 * that waited. One scrape is in flight at a time: a slot is never written
 * while loop 0 reads it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define REQ_MAX 4096
#define REQ_TIMEOUT_MS 5000
#define CONNS_MAX 16

/* One metrics connection. */
struct scrape {
	uint8_t kind;               /* KIND_SCRAPE */
	struct metrics *m;
	struct sheaf_conn *c;
	struct sheaf_timer *timer;  /* REQ_TIMEOUT_MS from accept */
	struct scrape *next;        /* waiting for the loops' counters */
	bool asked;                 /* the request is complete: no more reading */
	bool waiting;
	char *out;                  /* the answer, while it is written */
	size_t out_len, out_off;
	size_t len;
	char req[REQ_MAX];
};

/* What one loop reports for the scrape in flight. */
struct slot {
	struct metrics *m;
	struct worker *w;
	unsigned want;              /* the scrape asked for (set before the post) */
	atomic_uint done;           /* the scrape answered */
	struct loop_snap snap;
};

struct metrics {
	uint8_t kind;               /* KIND_METRICS: a listener's listen_data */
	struct proxy *px;
	unsigned open;              /* connections open */
	unsigned gen;               /* the last scrape's number */
	bool busy;                  /* a scrape is in flight */
	struct sheaf_timer *poll;
	struct scrape *waiting;
	struct loop_snap *snaps;    /* the slots' snapshots, gathered */
	struct slot slot[];
};

int metrics_init(struct proxy *px)
{
	struct metrics *m = calloc(1, sizeof(*m) + px->nw * sizeof(m->slot[0]));

	if (!m || !(m->snaps = calloc(px->nw, sizeof(*m->snaps)))) {
		free(m);
		return -ENOMEM;
	}
	m->kind = KIND_METRICS;
	m->px = px;
	for (unsigned i = 0; i < px->nw; i++) {
		m->slot[i].m = m;
		m->slot[i].w = &px->w[i];
	}
	px->m = m;
	return 0;
}

void metrics_free(struct proxy *px)
{
	if (!px->m)
		return;
	free(px->m->snaps);
	free(px->m);
	px->m = NULL;
}

int metrics_listen(struct proxy *px, struct sheaf_loop *loop0)
{
	int fd = px->metrics_fd >= 0 ? sheaf_listen_fd(loop0, px->metrics_fd, px->m) :
		 sheaf_listen(loop0, (const struct sockaddr *)&px->metrics_addr.ss,
			      px->metrics_addr.len, px->m);

	if (fd >= 0) {
		px->metrics_adopted = px->metrics_fd >= 0; /* the loop owns it now */
		addr_bound(fd, &px->metrics_addr);
	}
	return fd;
}

/* ---- the exposition ------------------------------------------------------ */

static void head(FILE *o, const char *name, const char *type, const char *help)
{
	fprintf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format wants (\\, \", \n). */
static void label(FILE *o, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(o, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", o);
		else
			fputc(*s, o);
	}
}

/* The library's counters and gauges under Prometheus names; a field a newer
 * sheaf.h adds and this table lacks is still shown, as sheaf_loop_NAME. */
static const struct lib_metric {
	const char *field, *name, *help;
} lib_metrics[] = {
	{ "accepted", "sheaf_accepted_connections_total",
	  "Connections the event loops accepted (clients and metrics scrapes)." },
	{ "rejected", "sheaf_rejected_connections_total",
	  "Connections accepted and closed at once because the proxy was stopping." },
	{ "accept_pauses", "sheaf_accept_pauses_total",
	  "Times the listeners stopped accepting at --max-conns (clients waited in the backlog)." },
	{ "connects", "sheaf_connects_total",
	  "Connections to upstreams started (all frontends)." },
	{ "connect_failed", "sheaf_connect_failures_total",
	  "Of those, connects that failed or timed out." },
	{ "closed", "sheaf_closed_connections_total", "Connections closed, for any reason." },
	{ "errors", "sheaf_connection_errors_total",
	  "Connections closed by an error other than a reset or EPIPE." },
	{ "bytes_in", "sheaf_received_bytes_total",
	  "Bytes received, from clients and upstreams." },
	{ "bytes_out", "sheaf_sent_bytes_total", "Bytes sent, to clients and upstreams." },
	{ "written", "sheaf_written_bytes_total",
	  "Bytes the proxy wrote itself (PROXY headers, metrics answers)." },
	{ "recv_cqes", "sheaf_recv_completions_total", "Receive completions that carried data." },
	{ "recv_bufs", "sheaf_recv_buffers_total", "Pool buffers the receives filled." },
	{ "recv_rearms", "sheaf_recv_operations_total", "Receives submitted (armed)." },
	{ "recv_enobufs", "sheaf_recv_enobufs_total",
	  "Receives that found their pool empty (-ENOBUFS) and waited for buffers." },
	{ "send_sqes", "sheaf_send_operations_total", "Sends submitted." },
	{ "send_cqes", "sheaf_send_completions_total", "Send completions." },
	{ "send_bufs", "sheaf_send_buffers_total", "Pool buffers sent in full." },
	{ "send_short", "sheaf_send_short_total",
	  "Sends that sent less than they were handed (the rest went out later)." },
	{ "pauses", "sheaf_recv_pauses_total",
	  "Receivers paused because the queue they feed was full (backpressure)." },
	{ "bundle_mismatch", "sheaf_bundle_mismatches_total",
	  "Connections dropped because the kernel's buffer order did not match." },
	{ "idle_closed", "sheaf_idle_timeouts_total", "Connections closed by --idle-timeout." },
	{ "stall_closed", "sheaf_stall_timeouts_total", "Connections closed by --stall-timeout." },
	{ "enters", "sheaf_enter_calls_total",
	  "Calls into the kernel to submit and wait: io_uring_enter (epoll_wait in the epoll mode)." },
	{ "pool_bufs", "sheaf_pool_buffers", "Buffers in the pools (receive and write)." },
	{ "pool_free", "sheaf_pool_free_buffers", "Pool buffers free now." },
	{ "conns", "sheaf_open_connections", "Connections open now (clients, upstreams, scrapes)." },
	{ "sendrings", "sheaf_send_rings", "Send buffer rings registered with the kernel." },
};

struct field {
	const char *name;
	bool counter, hist;
	uint64_t value;
};

/* Every field of struct sheaf_stats, from the header's lists. */
static unsigned fields(const struct sheaf_stats *st, struct field *f)
{
	unsigned n = 0;

#define C(x) f[n++] = (struct field){ #x, true, false, st->x };
#define G(x) f[n++] = (struct field){ #x, false, false, st->x };
#define H(x) f[n++] = (struct field){ #x, true, true, st->x };
	SHEAF_STATS_COUNTERS_V0(C)
	C(enters)
	SHEAF_STATS_HIST(H, recv)
	SHEAF_STATS_HIST(H, send)
	SHEAF_STATS_GAUGES(G)
#undef C
#undef G
#undef H
	return n;
}

static void lib_fields(FILE *o, const struct sheaf_stats *st)
{
	struct field f[128];
	unsigned n = fields(st, f);

	for (unsigned i = 0; i < n; i++) {
		const struct lib_metric *lm = NULL;
		char name[96];

		if (f[i].hist)
			continue; /* below, as histograms */
		for (size_t k = 0; k < sizeof(lib_metrics) / sizeof(lib_metrics[0]); k++)
			if (!strcmp(lib_metrics[k].field, f[i].name))
				lm = &lib_metrics[k];
		snprintf(name, sizeof(name), "%s", lm ? lm->name : "");
		if (!lm)
			snprintf(name, sizeof(name), "sheaf_loop_%s%s", f[i].name,
				 f[i].counter ? "_total" : "");
		head(o, name, f[i].counter ? "counter" : "gauge",
		     lm ? lm->help : "A libsheaf statistic (see sheaf_loop_stats(3)).");
		fprintf(o, "%s %llu\n", name, (unsigned long long)f[i].value);
	}
}

static void histogram(FILE *o, const char *name, const char *help, const uint64_t *b,
		      uint64_t sum)
{
	uint64_t acc = 0;

	head(o, name, "histogram", help);
	for (unsigned k = 0; k < SHEAF_STATS_HIST_BUCKETS; k++) {
		acc += b[k];
		if (k + 1 < SHEAF_STATS_HIST_BUCKETS)
			fprintf(o, "%s_bucket{le=\"%u\"} %llu\n", name, 1u << k,
				(unsigned long long)acc);
		else
			fprintf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)acc);
	}
	fprintf(o, "%s_sum %llu\n%s_count %llu\n", name, (unsigned long long)sum, name,
		(unsigned long long)acc);
}

static void histograms(FILE *o, const struct sheaf_stats *st)
{
	const uint64_t recv[] = {
#define V(x) st->x,
		SHEAF_STATS_HIST(V, recv)
	}, send[] = {
		SHEAF_STATS_HIST(V, send)
#undef V
	};

	histogram(o, "sheaf_recv_buffers_per_completion",
		  "Pool buffers each receive completion with data filled (a recv bundle's size).",
		  recv, st->recv_bufs);
	histogram(o, "sheaf_send_buffers_per_completion",
		  "Pool buffers each send completion sent in full (a send bundle's size).",
		  send, st->send_bufs);
}

/* One line per frontend: NAME{frontend="..."} VALUE. */
static void per_frontend(FILE *o, struct proxy *px, const char *name, const char *type,
			 const char *help, const struct fe_counters *fc, size_t off)
{
	head(o, name, type, help);
	for (unsigned i = 0; i < px->nfe; i++) {
		const char *p = (const char *)&fc[i] + off;
		unsigned long long v = off == offsetof(struct fe_counters, conns) ?
				       *(const uint32_t *)p : *(const uint64_t *)p;

		fprintf(o, "%s{frontend=\"", name);
		label(o, px->fe[i].name);
		fprintf(o, "\"} %llu\n", v);
	}
}

static void refused(FILE *o, struct proxy *px)
{
	static const char *const why[] = { "no_upstream", "pp_malformed", "pp_oversized",
					   "pp_late" };

	head(o, "sheaf_frontend_refused_connections_total", "counter",
	     "Clients closed without being proxied, by reason: no upstream connected, or a "
	     "PROXY header malformed, oversized or late.");
	for (unsigned i = 0; i < px->nfe; i++) {
		struct frontend *fe = &px->fe[i];
		unsigned long long v[] = { atomic_load(&fe->up.no_upstream),
					   atomic_load(&fe->pp_malformed),
					   atomic_load(&fe->pp_oversized),
					   atomic_load(&fe->pp_late) };

		for (unsigned k = 0; k < 4; k++) {
			fputs("sheaf_frontend_refused_connections_total{frontend=\"", o);
			label(o, fe->name);
			fprintf(o, "\",reason=\"%s\"} %llu\n", why[k], v[k]);
		}
	}
}

static void upstreams(FILE *o, struct proxy *px)
{
	static const struct { const char *name, *type, *help; } m[] = {
		{ "sheaf_upstream_up", "gauge",
		  "1 while the upstream is up, 0 while it is down (its connects failed)." },
		{ "sheaf_upstream_current_connections", "gauge",
		  "Connections to the upstream open or opening." },
		{ "sheaf_upstream_connections_total", "counter",
		  "Connections to the upstream started for clients." },
		{ "sheaf_upstream_connect_failures_total", "counter",
		  "Of those, connects that failed or timed out." },
	};

	for (unsigned k = 0; k < 4; k++) {
		head(o, m[k].name, m[k].type, m[k].help);
		for (unsigned f = 0; f < px->nfe; f++) {
			for (unsigned i = 0; i < px->fe[f].up.n; i++) {
				struct ups_stat s;
				unsigned long long v;

				ups_stat(&px->fe[f].up, i, &s);
				v = k == 0 ? !s.down : k == 1 ? s.conns : k == 2 ? s.attempts :
				    s.failures;
				fprintf(o, "%s{frontend=\"", m[k].name);
				label(o, px->fe[f].name);
				fputs("\",upstream=\"", o);
				label(o, px->fe[f].up.u[i].a.text);
				fprintf(o, "\"} %llu\n", v);
			}
		}
	}
}

void metrics_render(FILE *o, struct proxy *px, const struct loop_snap *snaps, unsigned n)
{
	struct sheaf_stats st = { 0 };
	struct fe_counters fc[MAX_FRONTENDS] = { 0 };

	for (unsigned i = 0; i < n; i++) {
#define ADD(x) st.x += snaps[i].st.x;
		SHEAF_STATS_COUNTERS(ADD)
		SHEAF_STATS_GAUGES(ADD)
#undef ADD
		for (unsigned f = 0; f < px->nfe; f++) {
			fc[f].conns_total += snaps[i].fe[f].conns_total;
			fc[f].conns += snaps[i].fe[f].conns;
			fc[f].bytes_in += snaps[i].fe[f].bytes_in;
			fc[f].bytes_out += snaps[i].fe[f].bytes_out;
		}
	}
	head(o, "sheaf_start_time_seconds", "gauge", "When the proxy started, in Unix time.");
	fprintf(o, "sheaf_start_time_seconds %lld\n", (long long)px->start_wall);
	head(o, "sheaf_uptime_seconds", "gauge", "Seconds since the proxy started.");
	fprintf(o, "sheaf_uptime_seconds %.3f\n", now_sec() - px->start_mono);
	head(o, "sheaf_info", "gauge", "The io mode and the event loops (threads).");
	fprintf(o, "sheaf_info{io=\"%s\",threads=\"%u\"} 1\n", sheaf_io_name(px->io_mode), n);
	per_frontend(o, px, "sheaf_frontend_connections_total", "counter",
		     "Client connections accepted.", fc, offsetof(struct fe_counters, conns_total));
	per_frontend(o, px, "sheaf_frontend_current_connections", "gauge",
		     "Client connections open.", fc, offsetof(struct fe_counters, conns));
	refused(o, px);
	per_frontend(o, px, "sheaf_frontend_received_bytes_total", "counter",
		     "Bytes received from clients (towards upstreams).", fc,
		     offsetof(struct fe_counters, bytes_in));
	per_frontend(o, px, "sheaf_frontend_sent_bytes_total", "counter",
		     "Bytes sent to clients (from upstreams).", fc,
		     offsetof(struct fe_counters, bytes_out));
	upstreams(o, px);
	lib_fields(o, &st);
	histograms(o, &st);
}

/* ---- HTTP ---------------------------------------------------------------- */

static void write_out(struct scrape *s)
{
	while (s->out_off < s->out_len) {
		ssize_t n = sheaf_conn_write(s->c, s->out + s->out_off, s->out_len - s->out_off);

		if (n == -EAGAIN)
			return; /* on_writable calls again */
		if (n < 0) {
			sheaf_conn_close(s->c);
			return;
		}
		s->out_off += (size_t)n;
	}
	sheaf_conn_close(s->c); /* once what is queued is sent */
}

static void answer(struct scrape *s, const char *status, const char *body, size_t len)
{
	static const char fmt[] = "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
				  "Connection: close\r\n\r\n";
	const char *type = strncmp(status, "200", 3) ? "text/plain; charset=utf-8" :
			   "text/plain; version=0.0.4; charset=utf-8";
	int hl = snprintf(NULL, 0, fmt, status, type, len);

	s->asked = true;
	s->out = malloc((size_t)hl + 1 + len);
	if (!s->out) {
		sheaf_conn_close(s->c);
		return;
	}
	snprintf(s->out, (size_t)hl + 1, fmt, status, type, len);
	memcpy(s->out + hl, body, len);
	s->out_len = (size_t)hl + len;
	write_out(s);
}

static void answer_text(struct scrape *s, const char *status, const char *text)
{
	answer(s, status, text, strlen(text));
}

/* Every slot answered this scrape: the text for everyone who waits. */
static void scrape_done(struct metrics *m)
{
	char *body = NULL;
	size_t len = 0;
	FILE *o = open_memstream(&body, &len);

	if (o) {
		for (unsigned i = 0; i < m->px->nw; i++)
			m->snaps[i] = m->slot[i].snap;
		metrics_render(o, m->px, m->snaps, m->px->nw);
		fclose(o);
	}
	m->busy = false;
	while (m->waiting) {
		struct scrape *s = m->waiting;

		m->waiting = s->next;
		s->waiting = false;
		if (body)
			answer(s, "200 OK", body, len);
		else
			answer_text(s, "500 Internal Server Error", "out of memory\n");
	}
	free(body);
}

static bool all_done(struct metrics *m)
{
	for (unsigned i = 0; i < m->px->nw; i++)
		if (atomic_load_explicit(&m->slot[i].done, memory_order_acquire) != m->gen)
			return false;
	return true;
}

static void poll_slots(struct sheaf_timer *t, void *arg)
{
	struct metrics *m = arg;

	if (!all_done(m))
		return;
	sheaf_timer_cancel(t);
	m->poll = NULL;
	scrape_done(m);
}

/* On loop i's own thread: its snapshot into its slot. */
static void snap_here(struct sheaf_loop *loop, void *arg)
{
	struct slot *sl = arg;

	worker_snap(sl->w, &sl->snap);
	atomic_store_explicit(&sl->done, sl->want, memory_order_release);
}

/* Asks every loop for its snapshot; answers once all came. */
static void scrape_start(struct sheaf_timer *t, void *arg)
{
	struct metrics *m = arg;
	int err = 0;

	m->gen++;
	for (unsigned i = 0; i < m->px->nw; i++) {
		struct slot *sl = &m->slot[i];

		sl->want = m->gen;
		if (i == 0)
			snap_here(NULL, sl); /* ours, on our thread */
		else if (sheaf_loop_post(sl->w->loop, snap_here, sl))
			atomic_store(&sl->done, m->gen); /* out of memory: its last one */
	}
	if (all_done(m)) {
		scrape_done(m);
		return;
	}
	m->poll = sheaf_timer_add(m->px->w[0].loop, 1, 1, poll_slots, m, &err);
	if (!m->poll)
		scrape_done(m); /* with the counters at hand */
}

/*
 * A request for the metrics: it waits for the scrape in flight, or starts
 * one, from a timer: not inside on_data, whose buffers would still be out
 * of the pool in loop 0's counters.
 */
static void scrape(struct scrape *s)
{
	struct metrics *m = s->m;
	int err = 0;

	s->asked = s->waiting = true;
	s->next = m->waiting;
	m->waiting = s;
	if (m->busy)
		return;
	m->busy = true;
	if (!sheaf_timer_add(sheaf_conn_loop(s->c), 0, 0, scrape_start, m, &err))
		scrape_start(NULL, m);
}

/*
 * The request's head is complete (s->req[0 .. len), ending with an empty
 * line): its first line must be METHOD SP TARGET SP HTTP/1.x.
 */
static void request(struct scrape *s)
{
	char *sp1, *sp2, *eol = strpbrk(s->req, "\r\n");
	size_t plen;

	*eol = 0;
	sp1 = strchr(s->req, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || sp1 == s->req || sp2[1] == 0 || strchr(sp2 + 1, ' ') ||
	    sp1[1] != '/' || (strcmp(sp2 + 1, "HTTP/1.1") && strcmp(sp2 + 1, "HTTP/1.0")) ||
	    strspn(s->req, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != (size_t)(sp1 - s->req)) {
		answer_text(s, "400 Bad Request", "a request line: GET /metrics HTTP/1.1\n");
		return;
	}
	plen = strcspn(sp1 + 1, "? ");
	if ((size_t)(sp1 - s->req) == 3 && !strncmp(s->req, "GET", 3) && plen == 8 &&
	    !strncmp(sp1 + 1, "/metrics", 8))
		scrape(s);
	else
		answer_text(s, "404 Not Found", "not found: GET /metrics\n");
}

/* Where the request's head ends, or NULL while it does not. */
static const char *head_end(const struct scrape *s)
{
	const char *crlf = memmem(s->req, s->len, "\r\n\r\n", 4);
	const char *lf = memmem(s->req, s->len, "\n\n", 2);

	return crlf && (!lf || crlf < lf) ? crlf : lf;
}

void metrics_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
{
	struct scrape *s = sheaf_conn_data(c);

	if (s->asked)
		return; /* past the request: read and dropped */
	for (unsigned i = 0; i < b->nr; i++) {
		size_t k = b->iov[i].iov_len;

		if (k > REQ_MAX - 1 - s->len)
			k = REQ_MAX - 1 - s->len;
		memcpy(s->req + s->len, b->iov[i].iov_base, k);
		s->len += k;
	}
	s->req[s->len] = 0;
	if (memchr(s->req, 0, s->len))
		answer_text(s, "400 Bad Request", "a NUL byte in the request\n");
	else if (head_end(s))
		request(s);
	else if (s->len == REQ_MAX - 1)
		answer_text(s, "431 Request Header Fields Too Large", "request over 4 KiB\n");
}

/* The client stopped sending: without a whole request, there is no answer. */
void metrics_eof(struct sheaf_conn *c)
{
	struct scrape *s = sheaf_conn_data(c);

	if (!s->asked)
		sheaf_conn_close(c);
}

void metrics_writable(struct sheaf_conn *c)
{
	struct scrape *s = sheaf_conn_data(c);

	if (s->out)
		write_out(s);
}

static void timed_out(struct sheaf_timer *t, void *arg)
{
	struct scrape *s = arg;

	s->timer = NULL; /* freed after this returns */
	if (!s->asked)
		answer_text(s, "408 Request Timeout", "request not complete in 5 s\n");
	else
		sheaf_conn_close(s->c);
}

void metrics_accept(struct sheaf_conn *c, struct metrics *m)
{
	struct scrape *s = m->open < CONNS_MAX ? calloc(1, sizeof(*s)) : NULL;
	int err = 0;

	if (!s) {
		sheaf_conn_close(c);
		return;
	}
	s->kind = KIND_SCRAPE;
	s->m = m;
	s->c = c;
	m->open++;
	sheaf_conn_set_data(c, s);
	s->timer = sheaf_timer_add(sheaf_conn_loop(c), REQ_TIMEOUT_MS, 0, timed_out, s, &err);
	if (!s->timer || sheaf_conn_start(c))
		sheaf_conn_close(c);
}

void metrics_close(struct sheaf_conn *c, int err)
{
	struct scrape *s = sheaf_conn_data(c);
	struct metrics *m = s->m;

	if (s->waiting) {
		struct scrape **pp = &m->waiting;

		while (*pp != s)
			pp = &(*pp)->next;
		*pp = s->next;
	}
	sheaf_timer_cancel(s->timer);
	free(s->out);
	free(s);
	m->open--;
}
