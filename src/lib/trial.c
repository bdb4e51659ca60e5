/*
 * The send-commit trial. A bundle send selects up to 256 ring entries and
 * commits them all at selection time, before a byte goes out; a short send
 * (MSG_DONTWAIT, or a full socket) completes with the bytes that went out
 * and no continuation. So after a short send the unsent rest, including
 * whole entries, belongs to us again and must be re-published. If a kernel
 * committed only what it sent, re-publishing would send bytes twice: the
 * library must know, and no feature bit says. This trial asks the kernel
 * on a socketpair, without PBUF_STATUS (6.8+), which bundle kernels may lack.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "trial.h"

#define TRIAL_BGID 3
#define TRIAL_ENTRIES 8
#define TRIAL_ENTRY 4096 /* 32 KiB in all: 4x what SO_SNDBUF 4096 lets in */
#define TRIAL_BYTES (TRIAL_ENTRIES * TRIAL_ENTRY)
#define TRIAL_UD 0x7472696131ull /* "tria1" */
#define TRIAL_UD_CANCEL 0x7472696132ull

struct trial {
	struct io_uring *ring;
	struct io_uring_buf_ring *br;
	size_t br_len;
	int sv[2];         /* sv[0] sends, sv[1] is the peer */
	uint8_t *data;     /* TRIAL_BYTES sent, then what the peer read (+1) */
	size_t sent, got;  /* bytes the CQEs reported, bytes the peer read */
	uint16_t tail;     /* published; the head is here after each send */
	unsigned inflight; /* our SQEs not yet completed */
	bool registered;
};

/* Publishes the stream from `sent` on, cut at the original entry edges:
 * the rest of a partly sent entry goes first, at the new head. */
static void trial_publish(struct trial *t)
{
	size_t off = t->sent;
	int n = 0;

	while (off < TRIAL_BYTES && n < TRIAL_ENTRIES) {
		size_t end = (off / TRIAL_ENTRY + 1) * TRIAL_ENTRY;

		io_uring_buf_ring_add(t->br, t->data + off, (unsigned)(end - off),
				      (uint16_t)((t->tail + n) & (TRIAL_ENTRIES - 1)),
				      TRIAL_ENTRIES - 1, n);
		off = end;
		n++;
	}
	io_uring_buf_ring_advance(t->br, n);
	t->tail = (uint16_t)(t->tail + n);
}

static int trial_submit_send(struct trial *t, int msg_flags)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(t->ring);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_send(sqe, t->sv[0], NULL, 0, msg_flags);
	sqe->flags |= IOSQE_BUFFER_SELECT; /* after prep: 2.3's prep zeroes these */
	sqe->buf_group = TRIAL_BGID;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = TRIAL_UD;
	t->inflight++;
	if (io_uring_submit(t->ring) == 1)
		return 0;
	t->inflight--;
	return -EIO;
}

/* Takes one CQE (waiting at most 100 ms): 0, or -ETIME if none came.
 * A request of ours is done at its CQE without F_MORE. */
static int trial_next(struct trial *t, uint64_t *ud, int *res, unsigned *flags)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 100000000 };
	struct io_uring_cqe *cqe;

	if (io_uring_wait_cqe_timeout(t->ring, &cqe, &ts))
		return -ETIME;
	*ud = cqe->user_data;
	*res = cqe->res;
	*flags = cqe->flags;
	io_uring_cqe_seen(t->ring, cqe);
	if ((*ud == TRIAL_UD || *ud == TRIAL_UD_CANCEL) &&
	    !(*flags & IORING_CQE_F_MORE))
		t->inflight--;
	return 0;
}

/* Waits (at most ~1 s) for the send's next CQE; other CQEs are dropped. */
static int trial_wait(struct trial *t, int *res, unsigned *flags)
{
	uint64_t ud = 0;

	for (int idle = 0; idle < 10;) {
		if (trial_next(t, &ud, res, flags))
			idle++;
		else if (ud == TRIAL_UD)
			return 0;
	}
	return -ETIMEDOUT;
}

/*
 * One send of what is published, MSG_DONTWAIT. *res: the bytes all its
 * passes sent, else the error it ended with; *flags: the first CQE's.
 */
static int trial_send_once(struct trial *t, int *res, unsigned *flags)
{
	unsigned f = IORING_CQE_F_MORE;
	int ret = trial_submit_send(t, MSG_DONTWAIT), r = 0, sum = 0;

	for (int n = 0; !ret && (f & IORING_CQE_F_MORE); n++) {
		ret = trial_wait(t, &r, &f);
		if (!n)
			*flags = f;
		if (!ret && r > 0)
			sum += r;
	}
	*res = sum ? sum : r;
	return ret;
}

/* Reads what the peer has, one byte more than expected at most. */
static int trial_read(struct trial *t, int ms)
{
	struct pollfd pfd = { .fd = t->sv[1], .events = POLLIN };
	uint8_t *dst = t->data + TRIAL_BYTES + t->got;
	ssize_t n;

	if (poll(&pfd, 1, ms) <= 0)
		return 0;
	n = recv(t->sv[1], dst, TRIAL_BYTES + 1 - t->got, MSG_DONTWAIT);
	if (n > 0)
		t->got += (size_t)n;
	return n > 0;
}

/* Sends the rest: re-publish what is unsent, send, read, until all is sent
 * and read; then the peer must hold exactly the original bytes. */
static int trial_finish(struct trial *t)
{
	int res;
	unsigned flags;

	for (int rounds = 0; t->sent < TRIAL_BYTES; rounds++) {
		if (rounds > 64)
			return -ETIMEDOUT;
		trial_publish(t);
		int ret = trial_send_once(t, &res, &flags);
		if (ret)
			return ret;
		if (res < 0 && res != -EAGAIN)
			return res;
		if (res > 0)
			t->sent += (size_t)res;
		while (trial_read(t, 0))
			;
	}
	while (t->got < TRIAL_BYTES && trial_read(t, 200))
		;
	trial_read(t, 0);
	if (t->got != TRIAL_BYTES)
		return 0; /* bytes missing or extra: lost or sent twice */
	return !memcmp(t->data, t->data + TRIAL_BYTES, TRIAL_BYTES);
}

/* The trial proper; see the comment at the top of the file. */
static int trial_run(struct trial *t)
{
	unsigned flags;
	int res, ret;

	trial_publish(t); /* all 8 entries, 32 KiB: the socket takes ~8 KiB */
	ret = trial_send_once(t, &res, &flags);
	if (ret)
		return ret;
	if (res <= 0 || res >= TRIAL_BYTES)
		return res < 0 ? res : -EAGAIN; /* no short send to judge */
	if (!(flags & IORING_CQE_F_BUFFER) || (flags >> IORING_CQE_BUFFER_SHIFT) != 0 ||
	    (flags & IORING_CQE_F_MORE))
		return 0;
	t->sent = (size_t)res;
	/* Nothing published since: every selected entry must be gone. */
	ret = trial_send_once(t, &res, &flags);
	if (ret)
		return ret;
	if (res != -ENOBUFS || (flags & IORING_CQE_F_BUFFER))
		return 0;
	return trial_finish(t);
}

static int trial_setup(struct trial *t, struct io_uring *ring)
{
	int sndbuf = 4096;

	memset(t, 0, sizeof(*t));
	t->ring = ring;
	t->sv[0] = t->sv[1] = -1;
	t->data = malloc(2 * TRIAL_BYTES + 1);
	if (!t->data)
		return -ENOMEM;
	for (size_t i = 0; i < TRIAL_BYTES; i++) /* no two neighbours alike */
		t->data[i] = (uint8_t)(((uint32_t)i * 2654435761u) >> 24);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, t->sv) ||
	    setsockopt(t->sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)))
		return -errno;
	t->br = sheaf__ring_alloc(TRIAL_ENTRIES, &t->br_len);
	if (!t->br)
		return -ENOMEM;
	int ret = sheaf__ring_register(ring, t->br, TRIAL_ENTRIES, TRIAL_BGID, 0);
	t->registered = ret == 0;
	return ret;
}

/* Closes the sockets (a send still in flight fails), cancels, reaps. */
static void trial_cleanup(struct trial *t)
{
	uint64_t ud;
	unsigned flags;
	int res;

	for (int i = 0; i < 2; i++)
		if (t->sv[i] >= 0)
			close(t->sv[i]);
	if (t->inflight) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(t->ring);

		if (sqe) {
			io_uring_prep_cancel64(sqe, TRIAL_UD, 0);
			sqe->user_data = TRIAL_UD_CANCEL;
			t->inflight++;
			io_uring_submit(t->ring);
		}
		for (int idle = 0; t->inflight && idle < 20;)
			idle += trial_next(t, &ud, &res, &flags) != 0;
	}
	if (t->registered)
		io_uring_unregister_buf_ring(t->ring, TRIAL_BGID);
	if (t->br)
		munmap(t->br, t->br_len);
	free(t->data);
}

int sheaf__trial_send_commit(struct io_uring *ring)
{
	struct trial t;
	int ret = trial_setup(&t, ring);

	if (!ret)
		ret = trial_run(&t);
	trial_cleanup(&t);
	return ret;
}
