/*
 * build: gcc -O2 -Wall -o recv_bundle_len recv_bundle_len.c -luring -lpthread
 *
 * Can a single-shot (not multishot) bundle recv be bounded by its len? A
 * recv with IOSQE_BUFFER_SELECT | IORING_RECVSEND_BUNDLE and len = L on a
 * ring of B-byte buffers should, on this kernel:
 *   - with much more than L pending and L not a multiple of B: take at
 *     most ceil(L/B) buffers and return at most L bytes, and with
 *     L = k * B + 1 (libsheaf's bound) at most k buffers (with L a multiple
 *     of B the kernel retries the full transfer into more buffers: shown,
 *     not asserted);
 *   - with less than L pending: take only what it filled;
 *   - in both cases move the ring head by exactly ceil(res/B) (a partly
 *     filled last buffer counts as consumed), and fill the buffers in ring
 *     order with the stream's bytes.
 * Both on a fresh socket (the kernel may not know msg_inq yet) and on later
 * receives, over an AF_UNIX stream socketpair and TCP loopback. len 0 is
 * shown for reference (no bound asserted), and one case has more pending
 * than the ring holds (how far can one recv go?). Also reported: ring
 * entries whose len the kernel changed (some kernels write back the len of
 * the last mapped entry, truncated to fit L).
 *
 * Prints "ok NAME" / "FAIL NAME: ..." lines and a summary; exits 0 when all
 * passed, 1 on any failure, 77 when io_uring, buffer rings, PBUF_STATUS or
 * bundles are missing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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
#define NBUFS 64u
#define B 1024u
#define PENDING (32u * 1024)

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static uint8_t *bufs;
static uint16_t T;
static int passes, failures, cur_failed, cur_hard, bound_violations, shrunk_seen;
static char cur[128];

static void fail(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s: ", cur);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	cur_failed = 1;
	cur_hard = 1; /* a bound violation clears it: later receives still run */
}

static inline uint8_t pat(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xC2B2AE3D27D4EB4Full;

	x ^= x >> 31;
	x *= 0xD6E8FEB86659FD93ull;
	x ^= x >> 29;
	return (uint8_t)x;
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

/* A fresh ring: head 0, all NBUFS buffers of B bytes published, bid = pos. */
static int ring_reset(void)
{
	struct io_uring_buf_reg reg;

	io_uring_unregister_buf_ring(&ring, BGID);
	io_uring_buf_ring_init(br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = NBUFS;
	reg.bgid = BGID;
	if (io_uring_register_buf_ring(&ring, &reg, 0))
		return -1;
	for (unsigned i = 0; i < NBUFS; i++)
		io_uring_buf_ring_add(br, bufs + i * B, B, (uint16_t)i, NBUFS - 1, (int)i);
	io_uring_buf_ring_advance(br, NBUFS);
	T = NBUFS;
	memset(bufs, 0xEE, NBUFS * B);
	return 0;
}

/* Gives back the n buffers consumed from position h (full length again). */
static void ring_refill(uint16_t h, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint16_t pos = (uint16_t)(h + i);
		uint16_t bid = pos % NBUFS;

		memset(bufs + bid * B, 0xEE, B);
		io_uring_buf_ring_add(br, bufs + bid * B, B, bid, NBUFS - 1, (int)i);
	}
	io_uring_buf_ring_advance(br, n);
	T = (uint16_t)(T + n);
}

struct pair {
	int tx, rx;
};

static int make_pair(struct pair *p, int tcp)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int sv[2], l, c, s;

	if (!tcp) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
			return -1;
		p->tx = sv[0];
		p->rx = sv[1];
		return 0;
	}
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &al) ||
	    connect(c, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	if (s < 0)
		return -1;
	p->tx = c;
	p->rx = s;
	return 0;
}

/* Writes n bytes of the stream from *woff (wait_inq waits for them). */
static int push(struct pair *p, uint64_t seed, uint64_t *woff, unsigned n)
{
	uint8_t buf[4096];

	while (n) {
		unsigned k = n < sizeof(buf) ? n : sizeof(buf);

		for (unsigned i = 0; i < k; i++)
			buf[i] = pat(seed, *woff + i);
		if (write(p->tx, buf, k) != (ssize_t)k)
			return -1;
		*woff += k;
		n -= k;
	}
	return 0;
}

static int inq_of(int fd)
{
	int inq = 0;

	ioctl(fd, FIONREAD, &inq);
	return inq;
}

static int wait_inq(int fd, int want)
{
	for (int i = 0; i < 2000 && inq_of(fd) < want; i++)
		usleep(1000);
	return inq_of(fd);
}

/* Cancels whatever is in flight and reaps every CQE. */
static void cancel_all(void)
{
	struct __kernel_timespec ts = { .tv_nsec = 100000000 };
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	struct io_uring_cqe *cqe;

	io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
	sqe->user_data = 2;
	io_uring_submit(&ring);
	while (!io_uring_wait_cqe_timeout(&ring, &cqe, &ts))
		io_uring_cqe_seen(&ring, cqe);
}

/*
 * One single-shot bundle recv of len L. Checks the CQE, the head step, the
 * bytes in the buffers, and the lens of the entries left in the ring;
 * refills what it consumed. *roff is the stream offset read so far.
 */
static void one_recv(int fd, unsigned L, int bounded, uint64_t seed, uint64_t *roff,
		     unsigned pending, const char *when)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	struct __kernel_timespec ts = { .tv_sec = 2 };
	struct io_uring_cqe *cqe;
	/* L = k * B + 1 (what libsheaf arms with): the partial last buffer is
	 * not mapped, so at most k buffers */
	unsigned maxb = !L ? 0 : L > B && L % B == 1 ? L / B : (L + B - 1) / B;
	unsigned nb, want_nb, shrunk = 0;
	int res, h0 = kernel_head(), h1;
	unsigned flags, bid;

	io_uring_prep_recv(sqe, fd, NULL, L, 0);
	/* liburing 2.3's prep zeroes ioprio and buf_group: set them after. */
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = 1;
	io_uring_submit(&ring);
	if (io_uring_wait_cqe_timeout(&ring, &cqe, &ts)) {
		fail("%s: no CQE within 2 s", when);
		cancel_all();
		return;
	}
	res = cqe->res;
	flags = cqe->flags;
	io_uring_cqe_seen(&ring, cqe);
	h1 = kernel_head();
	nb = (uint16_t)(h1 - h0);
	if (res <= 0) {
		fail("%s: res %d (%s)", when, res, res < 0 ? strerror(-res) : "EOF");
		return;
	}
	if (!(flags & IORING_CQE_F_BUFFER)) {
		fail("%s: F_BUFFER clear (flags 0x%x)", when, flags);
		return;
	}
	if (flags & IORING_CQE_F_MORE)
		fail("%s: F_MORE on a single-shot recv (flags 0x%x)", when, flags);
	bid = flags >> IORING_CQE_BUFFER_SHIFT;
	if (bid != (unsigned)h0 % NBUFS)
		fail("%s: first bid: expected %u (entry at head), got %u", when,
		     h0 % NBUFS, bid);
	want_nb = ((unsigned)res + B - 1) / B;
	if (nb != want_nb)
		fail("%s: head moved by %u, expected ceil(res %d / %u) = %u", when,
		     nb, res, B, want_nb);
	if (bounded && L && ((unsigned)res > L || nb > maxb)) {
		bound_violations++;
		fail("%s: BOUND EXCEEDED: len %u allows %u bytes in <= %u buffers, got "
		     "res %d in %u buffers (%u bytes were pending)", when, L, L, maxb,
		     res, nb, pending);
		cur_hard = 0;
	}
	if (bounded && L && pending <= L && (unsigned)res != pending)
		fail("%s: %u bytes pending, len %u: expected res %u, got %d", when,
		     pending, L, pending, res);
	for (unsigned i = 0; i < nb && !cur_hard; i++) {
		const uint8_t *b = bufs + ((h0 + i) % NBUFS) * B;
		unsigned n = (unsigned)res - i * B < B ? (unsigned)res - i * B : B;

		for (unsigned j = 0; j < n; j++)
			if (b[j] != pat(seed, *roff + i * B + j)) {
				fail("%s: buffer %u byte %u: expected 0x%02x, got 0x%02x",
				     when, i, j, pat(seed, *roff + i * B + j), b[j]);
				break;
			}
	}
	for (uint16_t pos = (uint16_t)h1; pos != T; pos++)
		if (br->bufs[pos % NBUFS].len != B) {
			if (!shrunk)
				printf("  note: %s: %s: entry at ring position %u (not "
				       "consumed) now has len %u, published as %u\n",
				       cur, when, pos, br->bufs[pos % NBUFS].len, B);
			shrunk++;
		}
	shrunk_seen += shrunk;
	for (unsigned i = 0; i < nb; i++) {
		unsigned len = br->bufs[(h0 + i) % NBUFS].len;

		if (len != B) {
			printf("  note: %s: %s: consumed entry %u of %u: the kernel "
			       "rewrote its len to %u\n", cur, when, i, nb, len);
			break;
		}
	}
	*roff += (unsigned)res;
	printf("  %s: %s: len %u, %u pending: res %d, %u buffers (head %d -> %d)%s\n",
	       cur, when, L, pending, res, nb, h0, h1,
	       shrunk ? ", unconsumed entry shrunk" : "");
	ring_refill((uint16_t)h0, nb);
}

static void begin(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cur, sizeof(cur), fmt, ap);
	va_end(ap);
	cur_failed = cur_hard = 0;
}

static void end(void)
{
	if (cur_failed) {
		failures++;
	} else {
		passes++;
		printf("ok %s\n", cur);
	}
}

/* Plenty pending: a fresh socket's first recv, then two more. */
static void case_plenty(int tcp, unsigned L, unsigned want)
{
	static uint64_t seed = 1;
	uint64_t woff = 0, roff = 0;
	struct pair p;

	begin("%s len %u, %u pending", tcp ? "tcp" : "unix", L, want);
	if (make_pair(&p, tcp) || ring_reset()) {
		fail("setup");
		end();
		return;
	}
	seed++;
	for (int i = 0; i < 3 && !cur_hard; i++) {
		unsigned pending = (unsigned)(woff - roff);

		push(&p, seed, &woff, want - pending); /* top up to `want` */
		pending = (unsigned)wait_inq(p.rx, (int)want);
		/* only a len that is not a multiple of B bounds the receive:
		 * buffers that fill exactly make the kernel receive again
		 * into more (a full transfer is retried); libsheaf arms with
		 * k * B + 1 and relies on the bound only there */
		one_recv(p.rx, L, L % B != 0, seed, &roff, pending,
			 i ? "later recv" : "first recv");
	}
	close(p.tx);
	close(p.rx);
	end();
}

/* Less pending than len: first recv, then a later one after more arrives. */
static void case_less(int tcp, unsigned L, unsigned P)
{
	static uint64_t seed = 100;
	uint64_t woff = 0, roff = 0;
	struct pair p;

	begin("%s len %u, %u pending", tcp ? "tcp" : "unix", L, P);
	if (make_pair(&p, tcp) || ring_reset()) {
		fail("setup");
		end();
		return;
	}
	seed++;
	for (int i = 0; i < 3 && !cur_hard; i++) {
		push(&p, seed, &woff, P);
		wait_inq(p.rx, (int)P);
		one_recv(p.rx, L, 1, seed, &roff, (unsigned)inq_of(p.rx),
			 i ? "later recv" : "first recv");
	}
	close(p.tx);
	close(p.rx);
	end();
}

/*
 * A recv with len < B that gets no data: does the entry at the head keep
 * the len the kernel truncated it to? Once with MSG_DONTWAIT (-EAGAIN), once
 * parked and cancelled. Reported, not asserted.
 */
static void case_shrink(int tcp)
{
	struct __kernel_timespec ts = { .tv_nsec = 100000000 };
	struct io_uring_cqe *cqe;
	struct pair p;

	begin("%s len 512 on an empty socket (entry len afterwards)",
	      tcp ? "tcp" : "unix");
	if (make_pair(&p, tcp) || ring_reset()) {
		fail("setup");
		end();
		return;
	}
	for (int cancel = 0; cancel < 2 && !cur_hard; cancel++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		int h = kernel_head(), res = 0;
		unsigned flags = 0;

		io_uring_prep_recv(sqe, p.rx, NULL, 512, cancel ? 0 : MSG_DONTWAIT);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = BGID;
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
		sqe->user_data = 1;
		io_uring_submit(&ring);
		if (cancel) {
			if (!io_uring_wait_cqe_timeout(&ring, &cqe, &ts)) {
				fail("parked recv completed: res %d", cqe->res);
				io_uring_cqe_seen(&ring, cqe);
				break;
			}
			sqe = io_uring_get_sqe(&ring);
			io_uring_prep_cancel(sqe, (void *)(uintptr_t)1, 0);
			sqe->user_data = 2;
			io_uring_submit(&ring);
		}
		for (int n = 0; n < 1 + cancel; n++) {
			if (io_uring_wait_cqe_timeout(&ring, &cqe, &ts)) {
				fail("no CQE");
				break;
			}
			if (cqe->user_data == 1) {
				res = cqe->res;
				flags = cqe->flags;
			}
			io_uring_cqe_seen(&ring, cqe);
		}
		if (kernel_head() != h)
			fail("head moved %d -> %d with no data", h, kernel_head());
		printf("  %s: %s: res %d flags 0x%x, head %d unchanged, entry at head "
		       "len %u (published %u)\n", cur,
		       cancel ? "parked, cancelled" : "MSG_DONTWAIT", res, flags, h,
		       br->bufs[h % NBUFS].len, B);
		if (br->bufs[h % NBUFS].len != B) {
			shrunk_seen++;
			printf("  note: %s: the kernel left the unconsumed entry at the "
			       "head shrunk to %u bytes\n", cur, br->bufs[h % NBUFS].len);
		}
	}
	close(p.tx);
	close(p.rx);
	end();
}

static int setup(void)
{
	int ret = io_uring_queue_init(8, &ring, 0);

	if (ret) {
		printf("SKIP: io_uring_queue_init: %s\n", strerror(-ret));
		return 77;
	}
	if (!(ring.features & IORING_FEAT_RECVSEND_BUNDLE)) {
		printf("SKIP: no IORING_FEAT_RECVSEND_BUNDLE\n");
		return 77;
	}
	br = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		  -1, 0);
	bufs = mmap(NULL, NBUFS * B, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (br == MAP_FAILED || bufs == MAP_FAILED)
		return 1;
	if (ring_reset()) {
		printf("SKIP: io_uring_register_buf_ring failed\n");
		return 77;
	}
	if (kernel_head() < 0) {
		printf("SKIP: IORING_REGISTER_PBUF_STATUS: %s\n", strerror(-kernel_head()));
		return 77;
	}
	return 0;
}

int main(void)
{
	static const unsigned lens[] = { 100, 512, 1024, 1025, 2048, 2049, 2500,
					 3500, 4096, 4097, 8192 };
	int ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	alarm(10);
	ret = setup();
	if (ret)
		return ret;
	for (int tcp = 0; tcp < 2; tcp++) {
		for (unsigned i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
			case_plenty(tcp, lens[i], PENDING);
		case_less(tcp, 4096, 1500);
		case_less(tcp, 3500, 1500);
		case_less(tcp, 8192, 5000);
		case_shrink(tcp);
	}
	/* More pending than the ring holds: how far does one recv go? */
	case_plenty(0, 2048, 3 * NBUFS * B / 2);
	/* For reference: len 0 (the buffer decides), no bound to check. */
	for (int tcp = 0; tcp < 2; tcp++) {
		uint64_t woff = 0, roff = 0;
		struct pair p;

		begin("%s len 0, %u pending (reference)", tcp ? "tcp" : "unix", PENDING);
		if (make_pair(&p, tcp) || ring_reset()) {
			fail("setup");
			end();
			continue;
		}
		for (int i = 0; i < 3 && !cur_hard; i++) {
			push(&p, 7, &woff, PENDING - (unsigned)(woff - roff));
			wait_inq(p.rx, PENDING);
			one_recv(p.rx, 0, 0, 7, &roff, (unsigned)inq_of(p.rx),
				 i ? "later recv" : "first recv");
		}
		close(p.tx);
		close(p.rx);
		end();
	}
	printf("summary: %d receives took more than len allows, %d unconsumed "
	       "entries left with a changed len\n", bound_violations, shrunk_seen);
	printf("recv_bundle_len: %d passed, %d failed\n", passes, failures);
	io_uring_queue_exit(&ring);
	return failures ? 1 : 0;
}
