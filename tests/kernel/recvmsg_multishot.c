/*
 * build: gcc -O2 -Wall -o recvmsg_multishot recvmsg_multishot.c -luring
 *
 * What libsheaf's `recvmsg` mode relies on in a multishot recvmsg
 * (IORING_OP_RECVMSG, IORING_RECV_MULTISHOT, IOSQE_BUFFER_SELECT) on a TCP
 * loopback socket, with a ring set up as libsheaf sets its own up
 * (SINGLE_ISSUER | DEFER_TASKRUN), msg_namelen = msg_controllen = 0:
 *   - data: every completion takes exactly one buffer, the next in ring
 *     order; the buffer starts with a struct io_uring_recvmsg_out (namelen
 *     and controllen 0) followed by the payload at offset 16;
 *     res = 16 + payloadlen; F_MORE is set; the bytes arrive in order;
 *   - EOF: a completion without F_MORE and a payload of 0 (if it carries a
 *     buffer, that buffer was consumed and holds only the header);
 *   - an empty ring: -ENOBUFS without F_MORE and without F_BUFFER; the
 *     rest stays in the socket;
 *   - a cancel: with much more pending than the ring holds, one wait
 *     brings at most MAX_PER_WAIT data completions (16 on 6.18: one run of
 *     the request's task work), and after they are reaped a cancel ends the
 *     request with at most MAX_AFTER_CANCEL more buffers (6.18: exactly
 *     one, as the final completion: data, F_BUFFER, no F_MORE; else
 *     -ECANCELED). Together they bound what libsheaf's budget may be
 *     overshot by (SHEAF__MSHOT_AFTER in src/lib/internal.h).
 *
 * Prints "ok NAME" / "FAIL NAME: ..." and exits 0 when all passed, 1 on a
 * failure, 77 when io_uring, buffer rings or multishot recvmsg are missing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "compat.h" /* liburing, and the UAPI names newer than 2.3 */

#define BGID 3
#define NBUFS 256u
#define B 256u
#define HDR ((unsigned)sizeof(struct io_uring_recvmsg_out))
#define MAX_PER_WAIT 16   /* one run of the request's task work */
#define MAX_AFTER_CANCEL 1
#define UD_RECV 1
#define UD_CANCEL 2

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static uint8_t *bufs;
static struct msghdr mh; /* namelen 0, controllen 0: read at submission */
static uint16_t next_pos;   /* ring position the next buffer comes from */
static uint64_t roff, woff; /* stream offsets read and written */
static int failures;

static uint8_t pat(uint64_t i) { return (uint8_t)(i * 131 + (i >> 8) * 7 + 1); }

static int fail(const char *name, const char *what, long a, long b)
{
	printf("FAIL %s: %s (%ld, expected %ld)\n", name, what, a, b);
	failures++;
	return -1;
}

/* A fresh ring (the kernel's head back at 0) with n buffers, bid = pos. */
static void ring_fill(unsigned n)
{
	struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)br,
					.ring_entries = NBUFS, .bgid = BGID };

	io_uring_unregister_buf_ring(&ring, BGID);
	io_uring_buf_ring_init(br);
	if (io_uring_register_buf_ring(&ring, &reg, 0))
		fail("ring", "re-register", errno, 0);
	for (unsigned i = 0; i < n; i++)
		io_uring_buf_ring_add(br, bufs + i * B, B, (uint16_t)i, NBUFS - 1, (int)i);
	io_uring_buf_ring_advance(br, (int)n);
	next_pos = 0;
}

static int make_pair(int *tx, int *rx)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int l, c, one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM, 0);
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al) ||
	    connect(c, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	*rx = accept(l, NULL, NULL);
	close(l);
	*tx = c;
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return *rx < 0 ? -1 : 0;
}

static int push(int fd, unsigned n)
{
	uint8_t buf[4096];

	while (n) {
		unsigned k = n < sizeof(buf) ? n : sizeof(buf);

		for (unsigned i = 0; i < k; i++)
			buf[i] = pat(woff + i);
		if (write(fd, buf, k) != (ssize_t)k)
			return -1;
		woff += k;
		n -= k;
	}
	return 0;
}

static void arm(int fd)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	io_uring_prep_recvmsg_multishot(sqe, fd, &mh, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	sqe->user_data = UD_RECV;
}

/* One data completion: one buffer, the next in ring order, header first. */
static int check_data(const char *name, const struct io_uring_cqe *cqe)
{
	unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
	struct io_uring_recvmsg_out *o;
	uint8_t *buf = bufs + bid * B, *p;

	if (!(cqe->flags & IORING_CQE_F_BUFFER))
		return fail(name, "data without F_BUFFER", cqe->res, 0);
	if (bid != next_pos % NBUFS)
		return fail(name, "buffer not the next in ring order", bid, next_pos % NBUFS);
	next_pos++;
	o = io_uring_recvmsg_validate(buf, cqe->res, &mh);
	if (!o)
		return fail(name, "header does not validate", cqe->res, HDR);
	p = io_uring_recvmsg_payload(o, &mh);
	if (p != buf + HDR || o->namelen || o->controllen)
		return fail(name, "payload not right after the header", (long)(p - buf), HDR);
	if ((unsigned)cqe->res != HDR + o->payloadlen)
		return fail(name, "res is not header + payload", cqe->res, HDR + o->payloadlen);
	for (unsigned i = 0; i < o->payloadlen; i++)
		if (p[i] != pat(roff + i))
			return fail(name, "byte differs at stream offset", (long)(roff + i), 0);
	roff += o->payloadlen;
	return (int)o->payloadlen;
}

/* Submits, waits for one completion, reaps all there are. */
static int reap(struct io_uring_cqe **out, unsigned max)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	if (io_uring_submit_and_wait(&ring, 1) < 0)
		return -1;
	io_uring_for_each_cqe(&ring, head, cqe) {
		if (n < max) {
			out[n] = malloc(sizeof(*cqe));
			memcpy(out[n], cqe, sizeof(*cqe));
		}
		n++;
	}
	io_uring_cq_advance(&ring, n);
	return (int)(n < max ? n : max);
}

static int test_segments_eof(void)
{
	const char *name = "segments, then EOF";
	struct io_uring_cqe *cq[64];
	int tx, rx, more = 1, eof = 0, bytes = 0;

	if (make_pair(&tx, &rx))
		return fail(name, "socket set-up", errno, 0);
	ring_fill(NBUFS);
	roff = woff = 0;
	arm(rx);
	for (int i = 0; i < 8; i++)
		push(tx, 100 + i);
	shutdown(tx, SHUT_WR);
	while (more && !eof) {
		int n = reap(cq, 64);

		for (int i = 0; i < n; i++) {
			struct io_uring_cqe *c = cq[i];
			int r = 0;

			if (!(c->flags & IORING_CQE_F_MORE))
				more = 0;
			if (c->res < 0)
				r = fail(name, "error before EOF", c->res, 0);
			else if (c->flags & IORING_CQE_F_BUFFER)
				r = check_data(name, c);
			if (r == 0 && !(c->flags & IORING_CQE_F_MORE)) {
				printf("  EOF: res %d, F_BUFFER %d\n", c->res,
				       !!(c->flags & IORING_CQE_F_BUFFER));
				eof = 1;
			} else if (r == 0) {
				fail(name, "empty payload with F_MORE", c->res, 0);
			} else if (r > 0) {
				bytes += r;
				if (!(c->flags & IORING_CQE_F_MORE))
					fail(name, "data completion without F_MORE", c->res, 0);
			}
			free(c);
		}
	}
	if (bytes != (int)woff)
		fail(name, "bytes received", bytes, (long)woff);
	if (!eof)
		fail(name, "no EOF completion", 0, 1);
	close(tx);
	close(rx);
	return 0;
}

static int test_enobufs(void)
{
	const char *name = "empty ring";
	struct io_uring_cqe *cq[64];
	int tx, rx, more = 1, data = 0, inq = 0;

	if (make_pair(&tx, &rx))
		return fail(name, "socket set-up", errno, 0);
	ring_fill(4);
	roff = woff = 0;
	push(tx, 8 * B);
	usleep(20000);
	arm(rx);
	while (more) {
		int n = reap(cq, 64);

		for (int i = 0; i < n; i++) {
			struct io_uring_cqe *c = cq[i];

			if (!(c->flags & IORING_CQE_F_MORE)) {
				more = 0;
				if (c->res != -ENOBUFS || (c->flags & IORING_CQE_F_BUFFER))
					fail(name, "last completion is not a bare -ENOBUFS",
					     c->res, -ENOBUFS);
			} else if (check_data(name, c) > 0) {
				data++;
			}
			free(c);
		}
	}
	ioctl(rx, FIONREAD, &inq);
	if (data != 4)
		fail(name, "data completions on a ring of 4", data, 4);
	if ((uint64_t)inq != woff - roff)
		fail(name, "bytes left in the socket", inq, (long)(woff - roff));
	close(tx);
	close(rx);
	return 0;
}

static int test_cancel(void)
{
	const char *name = "cancel";
	struct io_uring_cqe *cq[NBUFS + 8];
	struct io_uring_sqe *sqe;
	int tx, rx, n, first = 0, after = 0, done = 0;

	if (make_pair(&tx, &rx))
		return fail(name, "socket set-up", errno, 0);
	ring_fill(NBUFS);
	roff = woff = 0;
	push(tx, 2 * NBUFS * (B - HDR)); /* more than the ring holds */
	usleep(20000);
	arm(rx);
	n = reap(cq, NBUFS + 8);
	for (int i = 0; i < n; i++) {
		if (!(cq[i]->flags & IORING_CQE_F_MORE))
			done = 1;
		if (check_data(name, cq[i]) > 0)
			first++;
		free(cq[i]);
	}
	printf("  one wait: %d data completions (%d buffers in the ring)\n", first, NBUFS);
	if (first > MAX_PER_WAIT || first < 1)
		fail(name, "data completions in one wait", first, MAX_PER_WAIT);
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_cancel64(sqe, UD_RECV, 0);
	sqe->user_data = UD_CANCEL;
	while (!done) {
		n = reap(cq, NBUFS + 8);
		for (int i = 0; i < n; i++) {
			struct io_uring_cqe *c = cq[i];

			if (c->user_data == UD_RECV && !(c->flags & IORING_CQE_F_MORE)) {
				done = 1;
				printf("  final: res %d, F_BUFFER %d\n", c->res,
				       !!(c->flags & IORING_CQE_F_BUFFER));
				if (c->flags & IORING_CQE_F_BUFFER)
					after += check_data(name, c) > 0;
				else if (c->res != -ECANCELED)
					fail(name, "last completion", c->res, -ECANCELED);
			} else if (c->user_data == UD_RECV && check_data(name, c) > 0) {
				after++;
			}
			free(c);
		}
	}
	printf("  data completions after the cancel: %d\n", after);
	if (after > MAX_AFTER_CANCEL)
		fail(name, "data completions after the cancel", after, MAX_AFTER_CANCEL);
	close(tx);
	close(rx);
	return 0;
}

int main(void)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	size_t len = NBUFS * sizeof(struct io_uring_buf);
	int ret;

	setvbuf(stdout, NULL, _IONBF, 0);
	alarm(10);
	ret = io_uring_queue_init_params(8, &ring, &p);
	if (ret) {
		printf("skip: io_uring_setup: %s\n", strerror(-ret));
		return 77;
	}
	br = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc(NBUFS * B);
	if (br == MAP_FAILED || !bufs) {
		printf("skip: out of memory\n");
		return 77;
	}
	ring_fill(NBUFS);
	if (failures) {
		printf("skip: no provided-buffer rings\n");
		return 77;
	}
	test_segments_eof();
	printf("%s segments, then EOF\n", failures ? "FAIL" : "ok");
	ret = failures;
	test_enobufs();
	printf("%s empty ring\n", failures > ret ? "FAIL" : "ok");
	ret = failures;
	test_cancel();
	printf("%s cancel\n", failures > ret ? "FAIL" : "ok");
	printf("%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
