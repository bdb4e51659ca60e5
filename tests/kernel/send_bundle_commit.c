/*
 * build: gcc -O2 -Wall -o send_bundle_commit send_bundle_commit.c -luring -lpthread
 *
 * Checks, on the running kernel, how a bundle send (IORING_OP_SEND with
 * IOSQE_BUFFER_SELECT | IORING_RECVSEND_BUNDLE, len 0) consumes a
 * provided-buffer ring, over an AF_UNIX stream socketpair and a TCP loopback
 * pair with tiny socket buffers:
 *   - every entry it selects is committed at selection time: the kernel head
 *     moves to H + min(T - H, 256) per pass, whatever was sent;
 *   - cqe->res is the bytes of that pass that went out, and they are exactly
 *     the first res bytes of the selected entries, in ring order;
 *   - F_BUFFER is set (first bid = entry at H) whenever something was
 *     selected, even when res < 0; -ENOBUFS without it consumed nothing;
 *   - a short pass ends the request (F_MORE clear).
 * The kernel head is read with IORING_REGISTER_PBUF_STATUS (Linux 6.8).
 * Blocking sends (no MSG_DONTWAIT) against a slow reader are reported: only
 * byte-exactness and the commit rule are asserted for them.
 *
 * Prints "ok NAME" / "FAIL NAME: ..." lines and a summary; exits 0 when all
 * passed, 1 on any failure, 77 when io_uring, buffer rings, PBUF_STATUS or
 * bundle sends are missing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif
#define T_REGISTER_PBUF_STATUS 26
struct t_buf_status {
	uint32_t buf_group;
	uint32_t head;
	uint32_t resv[8];
};

#define BGID 1
#define RING_ENTRIES 512u
#define MASK (RING_ENTRIES - 1)
#define PEEK_MAX 256u
#define UD_SEND 0x5e
#define UD_CANCEL 0xca

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static uint16_t H, T; /* head as the completions tell, our tail */
static int passes, failures;
static unsigned shorts_seen, shorts_blocking, eagain_seen, canceled_seen;
static const char *cur = "setup";
static int cur_failed;
static struct timespec t_start;

/* --- reporting ---------------------------------------------------------- */

static void fail(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s: ", cur);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	cur_failed = 1;
}

#define EXPECT_EQ(what, exp, act)                                              \
	do {                                                                   \
		long long e_ = (long long)(exp), a_ = (long long)(act);        \
		if (e_ != a_)                                                  \
			fail("%s: expected %lld, got %lld (line %d)", what, e_, \
			     a_, __LINE__);                                    \
	} while (0)

static void begin(const char *name)
{
	cur = name;
	cur_failed = 0;
}

static void end(const char *fmt, ...)
{
	va_list ap;

	if (cur_failed) {
		failures++;
		return;
	}
	passes++;
	printf("ok %s", cur);
	if (fmt) {
		printf(": ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	printf("\n");
	fflush(stdout);
}

static double elapsed(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t_start.tv_sec) + (t.tv_nsec - t_start.tv_nsec) / 1e9;
}

static void watchdog(int sig)
{
	(void)sig;
	static const char m[] = "FAIL watchdog: still running after 9.5 s\n";
	ssize_t r = write(1, m, sizeof(m) - 1);
	(void)r;
	_exit(1);
}

/* --- byte patterns: byte i of stream `seed` ------------------------------ */

static inline uint8_t pat(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xC2B2AE3D27D4EB4Full;

	x ^= x >> 31;
	x *= 0xD6E8FEB86659FD93ull;
	x ^= x >> 29;
	return (uint8_t)x;
}

/* --- the buffer ring ---------------------------------------------------- */

struct ent {
	const uint8_t *addr;
	uint32_t len;
};
static struct ent ents[RING_ENTRIES]; /* what we wrote at each position */

static void put(uint16_t pos, const uint8_t *addr, uint32_t len)
{
	struct io_uring_buf *b = &br->bufs[pos & MASK];

	b->addr = (uint64_t)(uintptr_t)addr;
	b->len = len;
	b->bid = (uint16_t)(pos & MASK);
	ents[pos & MASK].addr = addr;
	ents[pos & MASK].len = len;
}

/* Makes the tail visible (it may also move back: nothing is in flight). */
static void set_tail(uint16_t t)
{
	T = t;
	__atomic_store_n(&br->tail, t, __ATOMIC_RELEASE);
}

static int kernel_head(void)
{
	struct t_buf_status st;

	memset(&st, 0, sizeof(st));
	st.buf_group = BGID;
	if (syscall(__NR_io_uring_register, ring.ring_fd, T_REGISTER_PBUF_STATUS,
		    &st, 1) < 0)
		return -errno;
	return (int)(uint16_t)st.head;
}

static uint64_t bytes_at(uint16_t from, unsigned n)
{
	uint64_t s = 0;

	for (unsigned i = 0; i < n; i++)
		s += ents[(uint16_t)(from + i) & MASK].len;
	return s;
}

static void submit_send(int fd, int msg_flags)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	io_uring_prep_send(sqe, fd, NULL, 0, msg_flags);
	/* liburing 2.3's prep zeroes ioprio and buf_group: set them after. */
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = UD_SEND;
	io_uring_submit(&ring);
}

static int wait_cqe_ms(struct io_uring_cqe **cqe, int ms)
{
	struct __kernel_timespec ts = { .tv_sec = ms / 1000,
					.tv_nsec = (ms % 1000) * 1000000L };

	return io_uring_wait_cqe_timeout(&ring, cqe, &ts);
}

/*
 * What one send request did, pass by pass, checked against the rule as the
 * CQEs come: each pass selects nb = min(T - h, 256) entries from h, reports
 * the first as its bid with F_BUFFER, sends res <= their bytes and ends the
 * request if short.
 */
struct sendres {
	int ncqe;
	int first_res;       /* res of the first CQE */
	unsigned first_flags;
	uint64_t sent;       /* bytes all passes put on the wire */
	int short_passes;    /* res < bytes selected (including res < 0) */
	int neg;             /* last negative res, or 0 */
	int canceled_with_buf;
	int stop_left;       /* a full pass ended the request, entries left */
	int last_res;        /* the last pass: res, bytes selected, entries */
	uint64_t last_sel;
	unsigned last_nb;
	uint16_t head;       /* expected head after the request */
};

static int reap_send(struct sendres *r, int timeout_ms)
{
	uint16_t h = H;

	memset(r, 0, sizeof(*r));
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned nb = (uint16_t)(T - h) < PEEK_MAX ? (uint16_t)(T - h) : PEEK_MAX;
		uint64_t sel;
		int res, ret;
		unsigned fl;

		ret = wait_cqe_ms(&cqe, timeout_ms);
		if (ret) {
			fail("no send CQE within %d ms (%s)", timeout_ms, strerror(-ret));
			return -1;
		}
		if (cqe->user_data != UD_SEND) { /* a cancel's own CQE */
			io_uring_cqe_seen(&ring, cqe);
			continue;
		}
		res = cqe->res;
		fl = cqe->flags;
		io_uring_cqe_seen(&ring, cqe);
		if (!r->ncqe++) {
			r->first_res = res;
			r->first_flags = fl;
		}
		if (res == -ENOBUFS && !(fl & IORING_CQE_F_BUFFER))
			nb = 0; /* checked by the caller: only valid on an empty ring */
		else {
			if (!(fl & IORING_CQE_F_BUFFER))
				fail("pass %d res %d: F_BUFFER expected, flags 0x%x",
				     r->ncqe, res, fl);
			else
				EXPECT_EQ("first bid (entry at head)", h & MASK,
					  fl >> IORING_CQE_BUFFER_SHIFT);
		}
		sel = bytes_at(h, nb);
		if (res > 0 && (uint64_t)res > sel)
			fail("pass %d: res %d exceeds the %llu bytes of its %u entries",
			     r->ncqe, res, (unsigned long long)sel, nb);
		if (res > 0)
			r->sent += res;
		if (res < 0) {
			r->neg = res;
			if (res == -ECANCELED && (fl & IORING_CQE_F_BUFFER))
				r->canceled_with_buf++;
		}
		if (nb && (res < 0 || (uint64_t)res < sel)) {
			r->short_passes++;
			shorts_seen++;
			eagain_seen += res == -EAGAIN;
			canceled_seen += res == -ECANCELED;
			if (fl & IORING_CQE_F_MORE)
				fail("pass %d short (%d of %llu) but F_MORE set",
				     r->ncqe, res, (unsigned long long)sel);
		}
		h += nb;
		r->last_res = res;
		r->last_sel = sel;
		r->last_nb = nb;
		if (!(fl & IORING_CQE_F_MORE)) {
			if (res >= 0 && (uint64_t)res == sel && h != T)
				r->stop_left++;
			break;
		}
	}
	r->head = h;
	return 0;
}

/* --- sockets ------------------------------------------------------------ */

struct pair {
	int tx, rx;
	const char *name;
};

static void set_buf(int fd, int opt, int v)
{
	if (v)
		setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v));
}

static int make_unix(struct pair *p, int sndbuf)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	set_buf(sv[0], SO_SNDBUF, sndbuf);
	p->tx = sv[0];
	p->rx = sv[1];
	p->name = "unix";
	return 0;
}

static int make_tcp(struct pair *p, int sndbuf, int rcvbuf)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int l, c, s, one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || c < 0)
		return -errno;
	set_buf(l, SO_RCVBUF, rcvbuf); /* inherited by the accepted socket */
	set_buf(c, SO_SNDBUF, sndbuf);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al) ||
	    connect(c, (struct sockaddr *)&a, sizeof(a)))
		return -errno;
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	if (s < 0)
		return -errno;
	p->tx = c;
	p->rx = s;
	p->name = "tcp";
	return 0;
}

static int make_pair(struct pair *p, int tcp, int tiny)
{
	return tcp ? make_tcp(p, tiny ? 4096 : 0, tiny ? 4096 : 0)
		   : make_unix(p, tiny ? 4096 : 0);
}

/*
 * Closes both ends, then cancels and reaps whatever a failed case left in
 * flight, so the next case starts from a quiet ring.
 */
static void close_pair(struct pair *p)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;

	close(p->tx);
	close(p->rx);
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
	sqe->user_data = UD_CANCEL;
	io_uring_submit(&ring);
	while (!wait_cqe_ms(&cqe, 50)) {
		if (cqe->user_data != UD_CANCEL && !cur_failed) {
			/* after end(): counts on its own */
			fail("stray CQE: user_data 0x%llx res %d flags 0x%x",
			     (unsigned long long)cqe->user_data, cqe->res, cqe->flags);
			failures++;
		}
		io_uring_cqe_seen(&ring, cqe);
	}
	if (kernel_head() >= 0)
		H = (uint16_t)kernel_head();
	set_tail(H);
}

/*
 * Reads exactly n bytes of stream `seed` from fd (each wait at most 2 s) and
 * checks them; then, with quiet_ms, checks nothing more arrives.
 */
static uint64_t drain_check(int fd, uint64_t seed, uint64_t n, int quiet_ms)
{
	static uint8_t buf[65536];
	uint64_t got = 0;
	int bad = 0;

	while (got < n) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		size_t want = n - got < sizeof(buf) ? n - got : sizeof(buf);
		ssize_t r;

		if (poll(&pfd, 1, 2000) <= 0)
			break;
		r = recv(fd, buf, want, MSG_DONTWAIT);
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r && !bad; i++)
			if (buf[i] != pat(seed, got + i)) {
				fail("byte %llu of the stream: expected 0x%02x, got 0x%02x",
				     (unsigned long long)(got + i), pat(seed, got + i), buf[i]);
				bad = 1;
			}
		got += r;
	}
	if (got < n)
		fail("reader got %llu bytes, expected %llu",
		     (unsigned long long)got, (unsigned long long)n);
	if (quiet_ms) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, quiet_ms) > 0) {
			ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

			if (r > 0)
				fail("%zd bytes arrived beyond the %llu expected", r,
				     (unsigned long long)n);
		}
	}
	return got;
}

/* Fills the send side until it refuses a byte; returns the bytes written. */
static uint64_t fill_socket(int fd, uint64_t seed)
{
	uint8_t buf[4096];
	uint64_t n = 0;

	for (;;) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat(seed, n + i);
		ssize_t r = send(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r <= 0)
			break;
		n += r;
	}
	/* TCP may free a little space as loopback segments move: top up once. */
	usleep(2000);
	for (;;) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat(seed, n + i);
		ssize_t r = send(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r <= 0)
			break;
		n += r;
	}
	return n;
}

/* --- entries with distinct patterns at scattered addresses ------------- */

/*
 * Publishes k entries whose concatenation is stream `seed`, each in its own
 * place in `arena` with guard bytes between. Returns the total bytes.
 */
static uint64_t publish_pattern(uint8_t *arena, const uint32_t *lens, unsigned k,
				uint64_t seed)
{
	uint64_t off = 0;
	uint8_t *p = arena;

	for (unsigned i = 0; i < k; i++) {
		memset(p, 0xEE, 64);
		p += 64;
		for (uint32_t j = 0; j < lens[i]; j++)
			p[j] = pat(seed, off + j);
		put((uint16_t)(T + i), p, lens[i]);
		p += lens[i];
		off += lens[i];
	}
	set_tail((uint16_t)(T + k));
	return off;
}

/* How many of the entries the first `bytes` bytes touch. */
static unsigned entries_for(const uint32_t *lens, unsigned k, uint64_t bytes)
{
	unsigned n = 0;
	uint64_t s = 0;

	while (n < k && s < bytes)
		s += lens[n++];
	return n;
}

static uint8_t *arena;
#define ARENA_SIZE (8u << 20)

/*
 * One bundle send of k entries with MSG_DONTWAIT; checks the CQE(s), the
 * kernel head, and the bytes at the other end. Retracts the tail to the new
 * head afterwards (unpublishing what the kernel did not select).
 */
static void case_send(struct pair *p, const uint32_t *lens, unsigned k,
		      uint64_t filler, const char *note)
{
	static uint64_t seed = 100;
	struct sendres r;
	uint64_t total;
	uint16_t h0 = H;
	int kh;

	seed++;
	total = publish_pattern(arena, lens, k, seed);
	submit_send(p->tx, MSG_DONTWAIT);
	if (reap_send(&r, 2000))
		goto out;
	kh = kernel_head();
	EXPECT_EQ("kernel head after the send (H + sum of min(T-H,256) per pass)",
		  r.head, kh);
	if (filler)
		drain_check(p->rx, 7, filler, 0);
	drain_check(p->rx, seed, r.sent, 30);
	H = (uint16_t)kh;
	end("%s k=%u bytes=%llu: %d CQE(s), first res=%d flags=0x%x, sent=%llu, "
	    "head %u -> %u (+%u), entries holding sent bytes=%u",
	    note, k, (unsigned long long)total, r.ncqe, r.first_res, r.first_flags,
	    (unsigned long long)r.sent, h0, (uint16_t)kh, (uint16_t)(kh - h0),
	    entries_for(lens, k, r.sent));
out:
	H = (uint16_t)(kernel_head() >= 0 ? kernel_head() : H);
	set_tail(H);
}

static void case_basic(int tcp)
{
	static char name[64];
	uint32_t lens[40];
	struct pair p;

	snprintf(name, sizeof(name), "%s short bundle send", tcp ? "tcp" : "unix");
	begin(name);
	if (make_pair(&p, tcp, 1)) {
		fail("socket setup: %s", strerror(errno));
		failures++;
		return;
	}
	for (unsigned i = 0; i < 40; i++) /* 17 .. ~16 KiB, odd sizes */
		lens[i] = 17 + (i * 7919u) % 16000;
	case_send(&p, lens, 40, 0, "tiny SO_SNDBUF");
	close_pair(&p);
}

static void case_300(int tcp)
{
	static char name[64];
	static uint32_t lens[300];
	struct pair p;

	snprintf(name, sizeof(name), "%s 300 entries, short", tcp ? "tcp" : "unix");
	begin(name);
	if (make_pair(&p, tcp, 1)) {
		fail("socket setup");
		failures++;
		return;
	}
	for (unsigned i = 0; i < 300; i++)
		lens[i] = 1000 + i;
	case_send(&p, lens, 300, 0, "nb must be 256");
	close_pair(&p);

	/* Room for all of it: pass 1 takes 256 and continues (F_MORE). */
	snprintf(name, sizeof(name), "%s 300 entries, all fit", tcp ? "tcp" : "unix");
	begin(name);
	if (make_pair(&p, tcp, 0)) {
		fail("socket setup");
		failures++;
		return;
	}
	for (unsigned i = 0; i < 300; i++)
		lens[i] = 16 + i % 5;
	{
		uint64_t first256 = 0;
		struct sendres r;
		uint64_t total;
		uint16_t h0 = H;
		int kh;

		for (unsigned i = 0; i < 256; i++)
			first256 += lens[i];
		total = publish_pattern(arena, lens, 300, 4242);
		submit_send(p.tx, MSG_DONTWAIT);
		if (!reap_send(&r, 2000)) {
			kh = kernel_head();
			EXPECT_EQ("first CQE res (bytes of the first 256 entries)",
				  first256, r.first_res);
			if (!(r.first_flags & IORING_CQE_F_MORE))
				fail("first CQE: F_MORE expected (continuation), flags 0x%x",
				     r.first_flags);
			EXPECT_EQ("CQEs", 2, r.ncqe);
			EXPECT_EQ("bytes sent", total, r.sent);
			EXPECT_EQ("kernel head", (uint16_t)(h0 + 300), kh);
			drain_check(p.rx, 4242, total, 30);
			H = (uint16_t)kh;
			end("2 passes: %d bytes (256 entries, F_MORE) + %llu bytes, "
			    "head %u -> %u", r.first_res,
			    (unsigned long long)(r.sent - r.first_res), h0, (uint16_t)kh);
		}
		H = (uint16_t)(kernel_head() >= 0 ? kernel_head() : H);
		set_tail(H);
	}
	close_pair(&p);
}

/* -ENOBUFS: empty ring, then a first entry of length 0. */
static void case_enobufs(int tcp)
{
	static char name[64];
	static const uint8_t one[4] = "abc";
	struct pair p;
	struct io_uring_cqe *cqe;

	snprintf(name, sizeof(name), "%s -ENOBUFS on an empty ring", tcp ? "tcp" : "unix");
	begin(name);
	if (make_pair(&p, tcp, 1)) {
		fail("socket setup");
		failures++;
		return;
	}
	for (int variant = 0; variant < 2; variant++) {
		uint16_t h0 = H;

		if (variant == 1) {
			put(T, one, 0);
			put((uint16_t)(T + 1), one, 3);
			set_tail((uint16_t)(T + 2));
		}
		submit_send(p.tx, MSG_DONTWAIT);
		if (wait_cqe_ms(&cqe, 2000)) {
			fail("no CQE");
			break;
		}
		EXPECT_EQ(variant ? "res, first entry len 0" : "res, empty ring",
			  -ENOBUFS, cqe->res);
		if (cqe->flags & IORING_CQE_F_BUFFER)
			fail("F_BUFFER set on -ENOBUFS (flags 0x%x)", cqe->flags);
		io_uring_cqe_seen(&ring, cqe);
		EXPECT_EQ("kernel head unchanged", h0, kernel_head());
		drain_check(p.rx, 0, 0, 20);
		set_tail(H);
		if (variant == 0) {
			end("res -ENOBUFS, no F_BUFFER, head %u unchanged", h0);
			snprintf(name, sizeof(name), "%s -ENOBUFS on a first entry of len 0",
				 tcp ? "tcp" : "unix");
			begin(name);
		} else {
			end("res -ENOBUFS, no F_BUFFER, head %u unchanged, nothing sent", h0);
		}
	}
	close_pair(&p);
}

/* A full socket: the send selects (and commits) entries and sends nothing. */
static void case_full_socket(int tcp)
{
	static char name[64];
	uint32_t lens[12];
	struct pair p;
	uint64_t filler;

	snprintf(name, sizeof(name), "%s full socket, MSG_DONTWAIT", tcp ? "tcp" : "unix");
	begin(name);
	if (make_pair(&p, tcp, 1)) {
		fail("socket setup");
		failures++;
		return;
	}
	for (unsigned i = 0; i < 12; i++)
		lens[i] = 100 + 37 * i;
	filler = fill_socket(p.tx, 7);
	case_send(&p, lens, 12, filler, "socket full first");
	close_pair(&p);
}

/*
 * A blocking send parked on a full socket: the head has already moved
 * before a byte of it is sent. Then either the reader drains (the send
 * completes) or the request is cancelled (what does the CQE say?).
 */
static void case_parked(int tcp, int cancel)
{
	static char name[80];
	uint32_t lens[20];
	struct io_uring_cqe *cqe;
	struct sendres r;
	struct pair p;
	uint64_t filler, total;
	uint16_t h0 = H;
	unsigned nb = 20;
	int kh;

	snprintf(name, sizeof(name), "%s blocking send parked on a full socket%s",
		 tcp ? "tcp" : "unix", cancel ? ", cancelled" : "");
	begin(name);
	if (make_pair(&p, tcp, 1)) {
		fail("socket setup");
		failures++;
		return;
	}
	for (unsigned i = 0; i < 20; i++) /* ~2.3 KB: fits once the filler is read */
		lens[i] = 50 + 7 * i;
	filler = fill_socket(p.tx, 7);
	total = publish_pattern(arena, lens, 20, 555 + cancel);
	submit_send(p.tx, 0);
	if (!wait_cqe_ms(&cqe, 100)) {
		fail("send completed while the socket was full: res %d flags 0x%x",
		     cqe->res, cqe->flags);
		io_uring_cqe_seen(&ring, cqe);
		goto out;
	}
	kh = kernel_head();
	EXPECT_EQ("kernel head while the send is parked", (uint16_t)(h0 + nb), kh);
	if (cancel) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		io_uring_prep_cancel(sqe, (void *)(uintptr_t)UD_SEND, 0);
		sqe->user_data = UD_CANCEL;
		io_uring_submit(&ring);
	} else {
		drain_check(p.rx, 7, filler, 0);
	}
	if (reap_send(&r, 3000))
		goto out;
	EXPECT_EQ("kernel head after completion", (uint16_t)(h0 + nb), kernel_head());
	if (cancel) {
		drain_check(p.rx, 7, filler, 0);
		drain_check(p.rx, 555 + cancel, r.sent, 30);
	} else {
		drain_check(p.rx, 555, r.sent, 30);
	}
	H = (uint16_t)(h0 + nb);
	end("head %u -> %u while parked (nothing sent yet); completion res=%d "
	    "flags=0x%x (F_BUFFER %s), sent %llu of %llu",
	    h0, (uint16_t)kh, r.first_res, r.first_flags,
	    r.first_flags & IORING_CQE_F_BUFFER ? "set" : "clear",
	    (unsigned long long)r.sent, (unsigned long long)total);
out:
	H = (uint16_t)(kernel_head() >= 0 ? kernel_head() : H);
	set_tail(H);
	close_pair(&p);
}

/* --- the stream: resend what was committed but not sent ----------------- */

struct reader {
	int fd;
	uint64_t seed, n, got, bad_at;
	int bad, slow;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	static __thread uint8_t buf[32768];
	unsigned s = 12345;

	while (rd->got < rd->n) {
		size_t want = 1 + (s = s * 1103515245 + 12345) % sizeof(buf);
		ssize_t r;

		if (want > rd->n - rd->got)
			want = rd->n - rd->got;
		r = read(rd->fd, buf, want);
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r && !rd->bad; i++)
			if (buf[i] != pat(rd->seed, rd->got + i)) {
				rd->bad = 1;
				rd->bad_at = rd->got + i;
			}
		rd->got += r;
		if (rd->slow)
			usleep((s >> 8) % rd->slow);
	}
	return NULL;
}

struct piece {
	uint64_t off;
	uint32_t len;
};

static void case_stream(int tcp, int dontwait, uint64_t n, int slow)
{
	static char name[80];
	static struct piece q[RING_ENTRIES];
	struct reader rd = { .seed = 9000 + tcp * 2 + dontwait, .n = n, .slow = slow };
	uint64_t sent = 0, next = 0, s = 99 + tcp;
	unsigned qn = 0, requests = 0, shorts = 0, eagain = 0, canceled = 0;
	unsigned multi = 0, maxnb = 0, republished = 0, stop_left = 0, notes = 0;
	pthread_t th;
	struct pair p;
	double t0 = elapsed();

	snprintf(name, sizeof(name), "%s stream %llu bytes, %s", tcp ? "tcp" : "unix",
		 (unsigned long long)n, dontwait ? "MSG_DONTWAIT" : "blocking");
	begin(name);
	if (make_pair(&p, tcp, 1)) {
		fail("socket setup");
		failures++;
		return;
	}
	for (uint64_t i = 0; i < n; i++)
		arena[i] = pat(rd.seed, i);
	rd.fd = p.rx;
	pthread_create(&th, NULL, reader_main, &rd);
	while (sent < n && !cur_failed) {
		struct sendres r;
		unsigned target, k;
		uint64_t left;
		int kh;

		/* q[] is exactly the ring from H: rewrite it there, then top up. */
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		/* mostly a few entries, one time in four up to 400 (> 256) */
		target = (s >> 33) % 4 ? 1 + (s >> 35) % 24 : 1 + (s >> 35) % 400;
		while (qn < target && next < n) {
			uint32_t len = 1 + (s = s * 6364136223846793005ull + 1) % 8192;

			if (len > n - next)
				len = (uint32_t)(n - next);
			q[qn].off = next;
			q[qn++].len = len;
			next += len;
		}
		for (k = 0; k < qn; k++)
			put((uint16_t)(H + k), arena + q[k].off, q[k].len);
		set_tail((uint16_t)(H + qn));
		submit_send(p.tx, dontwait ? MSG_DONTWAIT : 0);
		requests++;
		if (reap_send(&r, 3000))
			break;
		kh = kernel_head();
		EXPECT_EQ("kernel head after the request", r.head, kh);
		if ((uint16_t)(kh - H) > maxnb)
			maxnb = (uint16_t)(kh - H);
		shorts += r.short_passes;
		if (!dontwait)
			shorts_blocking += r.short_passes;
		stop_left += r.stop_left;
		if (!dontwait && r.short_passes && notes++ < 4)
			printf("  note: %s: blocking pass short: res %d of %llu bytes "
			       "selected (%u entries), flags 0x%x\n", cur, r.last_res,
			       (unsigned long long)r.last_sel, r.last_nb, r.first_flags);
		multi += r.ncqe > 1;
		if (r.neg == -EAGAIN)
			eagain++;
		canceled += r.canceled_with_buf;
		if (r.neg && r.neg != -EAGAIN && r.neg != -ECANCELED)
			fail("send failed: %s", strerror(-r.neg));
		/* Drop what went out; the partial piece's remainder goes first. */
		left = r.sent;
		sent += r.sent;
		k = 0;
		while (left && left >= q[k].len)
			left -= q[k++].len;
		if (left) {
			q[k].off += left;
			q[k].len -= (uint32_t)left;
		}
		memmove(q, q + k, (qn - k) * sizeof(q[0]));
		qn -= k;
		if ((uint16_t)(kh - H) > 0 && qn > (uint16_t)(T - kh))
			republished += qn - (uint16_t)(T - kh);
		H = (uint16_t)kh;
		if (r.short_passes && dontwait) {
			struct pollfd pfd = { .fd = p.tx, .events = POLLOUT };

			poll(&pfd, 1, 1000);
		}
		if (elapsed() > 40.0) {
			fail("out of time after %llu of %llu bytes",
			     (unsigned long long)sent, (unsigned long long)n);
			break;
		}
	}
	if (cur_failed)
		shutdown(p.rx, SHUT_RDWR); /* unblocks the reader */
	pthread_join(th, NULL);
	if (!cur_failed) {
		EXPECT_EQ("bytes the reader got", n, rd.got);
		if (rd.bad)
			fail("stream byte %llu differs (expected 0x%02x)",
			     (unsigned long long)rd.bad_at, pat(rd.seed, rd.bad_at));
	}
	set_tail(H);
	end("%u requests, %u short passes (%u ending -EAGAIN), %u -ECANCELED with "
	    "F_BUFFER, %u requests with >1 CQE, %u ended after a full pass with "
	    "entries left, max head step %u, %u entries re-published, byte-exact, "
	    "%.2f s",
	    requests, shorts, eagain, canceled, multi, stop_left, maxnb,
	    republished, elapsed() - t0);
	close_pair(&p);
}

/* --- setup -------------------------------------------------------------- */

/* 0 when a one-entry bundle send works, 77 when the kernel refuses it. */
static int probe_bundle(void)
{
	static const uint8_t x[1] = { 'x' };
	struct io_uring_cqe *cqe;
	struct pair p;
	char c;
	int res;

	if (make_unix(&p, 0))
		return 77;
	put(T, x, 1);
	set_tail((uint16_t)(T + 1));
	submit_send(p.tx, MSG_DONTWAIT);
	if (wait_cqe_ms(&cqe, 2000)) {
		close_pair(&p);
		return 77;
	}
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	if (res != 1 || recv(p.rx, &c, 1, MSG_DONTWAIT) != 1 || c != 'x') {
		printf("bundle send not accepted: res %d (%s)\n", res,
		       res < 0 ? strerror(-res) : "short");
		close_pair(&p);
		return 77;
	}
	close_pair(&p);
	H = (uint16_t)kernel_head();
	return 0;
}

static int setup(void)
{
	struct io_uring_buf_reg reg;
	int ret;

	ret = io_uring_queue_init(64, &ring, 0);
	if (ret) {
		printf("SKIP: io_uring_queue_init: %s\n", strerror(-ret));
		return 77;
	}
	if (!(ring.features & IORING_FEAT_RECVSEND_BUNDLE)) {
		printf("SKIP: no IORING_FEAT_RECVSEND_BUNDLE (features 0x%x)\n",
		       ring.features);
		return 77;
	}
	br = mmap(NULL, RING_ENTRIES * sizeof(struct io_uring_buf),
		  PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	arena = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (br == MAP_FAILED || arena == MAP_FAILED)
		return 1;
	io_uring_buf_ring_init(br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = RING_ENTRIES;
	reg.bgid = BGID;
	ret = io_uring_register_buf_ring(&ring, &reg, 0);
	if (ret) {
		printf("SKIP: io_uring_register_buf_ring: %s\n", strerror(-ret));
		return 77;
	}
	ret = kernel_head();
	if (ret < 0) {
		printf("SKIP: IORING_REGISTER_PBUF_STATUS: %s\n", strerror(-ret));
		return 77;
	}
	return probe_bundle();
}

int main(void)
{
	int ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, watchdog);
	alarm(60); /* a hang guard: loaded cores under ASan took over 8 s */
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	ret = setup();
	if (ret)
		return ret;
	for (int tcp = 0; tcp < 2; tcp++) {
		case_basic(tcp);
		case_300(tcp);
		case_enobufs(tcp);
		case_full_socket(tcp);
		case_parked(tcp, 0);
		case_parked(tcp, 1);
	}
	for (int tcp = 0; tcp < 2; tcp++) {
		case_stream(tcp, 1, 4u << 20, 200);
		case_stream(tcp, 0, 2u << 20, 200);
	}
	printf("summary: %u short passes seen (%u ended -EAGAIN, %u -ECANCELED; "
	       "%u in the blocking streams), %.2f s\n", shorts_seen, eagain_seen,
	       canceled_seen, shorts_blocking, elapsed());
	printf("send_bundle_commit: %d passed, %d failed\n", passes, failures);
	io_uring_queue_exit(&ring);
	return failures ? 1 : 0;
}
