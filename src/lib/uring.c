/*
 * The io_uring backend: ring set-up, accept, connect, receive, cancel and
 * the completion loop. Sending is in uring_send.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uring.h"

#define SQ_ENTRIES 1024
#define CQ_ENTRIES 16384

static uint64_t ud(const struct sheaf_conn *c, unsigned op)
{
	return sheaf__ud(op, c->slot, c->gen);
}

/*
 * One issuer and deferred task work: completions arrive in consumption
 * order and only while this thread waits, which the bundle mapping needs.
 * The ring starts disabled, so that the issuer is the thread that runs the
 * loop (the first wait enables it), not the one that created it.
 */
static int uring_init(struct sheaf_loop *l)
{
	struct sheaf__uring *u = calloc(1, sizeof(*u));
	struct io_uring_params p;
	int ret;

	if (!u)
		return -ENOMEM;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
	p.cq_entries = CQ_ENTRIES;
	ret = io_uring_queue_init_params(SQ_ENTRIES, &u->ring, &p);
	if (ret) {
		free(u);
		return ret;
	}
	l->be_state = u;
	for (unsigned d = 0; d < SHEAF__DIRS && !ret; d++)
		ret = sheaf__ring_register(&u->ring, l->pool[d].br, l->pool[d].nbufs,
					   l->pool[d].bgid, 0);
	u->next_bgid = SHEAF__DIRS; /* the pools have 0 and 1 */
	u->sring_entries = l->cfg.nbufs < SHEAF__SRING_MAX ? l->cfg.nbufs : SHEAF__SRING_MAX;
	if (u->sring_entries < 8)
		u->sring_entries = 8;
	if (ret) {
		io_uring_queue_exit(&u->ring);
		free(u);
		l->be_state = NULL;
	}
	return ret;
}

static void uring_fini(struct sheaf_loop *l)
{
	struct sheaf__uring *u = sheaf__uring_of(l);

	sheaf__uring_srings_fini(l);
	io_uring_queue_exit(&u->ring); /* unregisters the pools' rings too */
	free(u);
	l->be_state = NULL;
}

/*
 * One accept at a time, not multishot: the loop decides after each whether
 * to accept another (accept_max), so no connection is ever taken from the
 * backlog only to be closed for want of a slot.
 */
static int uring_listen(struct sheaf_loop *l, unsigned i)
{
	struct io_uring_sqe *sqe = sheaf__uring_sqe(l);

	io_uring_prep_accept(sqe, l->listen[i].fd, NULL, NULL, SOCK_CLOEXEC);
	sqe->user_data = sheaf__ud(SHEAF__OP_ACCEPT, i, 0);
	return 0;
}

/* shutdown ends the accept in flight; its completion says when. A socket
 * another process listens on too (sheaf_listen_fd: systemd's) must go on
 * listening after us: cancel our accept instead. */
static void uring_unlisten(struct sheaf_loop *l, unsigned i)
{
	struct io_uring_sqe *sqe;

	if (!l->listen[i].adopted) {
		shutdown(l->listen[i].fd, SHUT_RDWR);
		return;
	}
	sqe = sheaf__uring_sqe(l);
	io_uring_prep_cancel64(sqe, sheaf__ud(SHEAF__OP_ACCEPT, i, 0), 0);
	sqe->user_data = sheaf__ud(SHEAF__OP_NONE, 0, 0);
}

/* nothing is in flight after a completion: not arming again is the pause */
static void uring_pause(struct sheaf_loop *l, unsigned i) { }

static int uring_watch(struct sheaf_loop *l, int fd)
{
	struct io_uring_sqe *sqe = sheaf__uring_sqe(l);

	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	sqe->user_data = sheaf__ud(SHEAF__OP_WAKE, 0, 0);
	return 0;
}

static int uring_connect(struct sheaf_conn *c)
{
	struct io_uring_sqe *sqe = sheaf__uring_sqe(c->loop);

	io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&c->addr, c->addr_len);
	sqe->user_data = ud(c, SHEAF__OP_CONNECT);
	c->inflight++;
	return 0;
}

/*
 * recvmsg mode: a multishot recvmsg where the budget allows (recv.c decides,
 * and stops it), else one single-shot recvmsg of one buffer. The multishot
 * puts a struct io_uring_recvmsg_out before the payload of every buffer;
 * the single shot does not. With no name and no control data the header is
 * all there is before the payload (16 bytes).
 */
static void uring_recvmsg(struct sheaf_conn *c, uint32_t bufs)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf__uring *u = sheaf__uring_of(l);
	struct io_uring_sqe *sqe = sheaf__uring_sqe(l);

	if (bufs > 1)
		io_uring_prep_recvmsg_multishot(sqe, c->fd, &u->recvmsg_hdr, 0);
	else
		io_uring_prep_recvmsg(sqe, c->fd, &u->recvmsg_hdr, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = l->pool[c->dir].bgid;
	sqe->user_data = ud(c, SHEAF__OP_RECV);
	c->inflight++;
}

/*
 * One receive, not multishot, of at most `bufs` buffers: that keeps a
 * connection within its budget (a multishot receive could not be bounded
 * on every kernel with bundles). The bound is `len`, and it must not be a
 * multiple of the buffer size: when the buffers mapped for a bundle fill
 * exactly, the kernel receives again into more and reports both as one
 * completion. With len = bufs * size + 1 it maps `bufs` whole buffers and
 * leaves the partial one out (docs/KERNEL.md; tests/kernel/recv_bundle_len.c
 * fails if a kernel does otherwise). A pass maps at most 256 buffers, and a
 * pass cut there rather than by len (len = 256 * size + 1 needs 257) is
 * retried once, into at most 256 more: so 256 are asked for only where the
 * budget covers 512, else at most 255.
 * With 1-byte buffers every len is a multiple, and the budget is only
 * approximate.
 * One buffer is asked for without a bundle (len = size): a bundle maps
 * ceil(len / size) = 2 buffers for it and allocates an iovec array for them
 * on every receive; a plain receive takes one buffer and maps the same way.
 */
static void uring_recv(struct sheaf_conn *c, uint32_t bufs)
{
	struct sheaf_loop *l = c->loop;
	struct io_uring_sqe *sqe;
	bool bundle = l->recv_bundle && bufs > 1;
	uint64_t len;

	if (l->cfg.io == SHEAF_IO_RECVMSG) {
		uring_recvmsg(c, bufs);
		return;
	}
	sqe = sheaf__uring_sqe(l);
	if (bufs >= 2 * SHEAF__SRING_MAX)
		bufs = SHEAF__SRING_MAX;
	else if (bufs >= SHEAF__SRING_MAX)
		bufs = SHEAF__SRING_MAX - 1;
	len = (uint64_t)(bundle ? bufs : 1) * l->cfg.buf_size;
	if (bundle)
		len++;
	io_uring_prep_recv(sqe, c->fd, NULL, (uint32_t)len, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = l->pool[c->dir].bgid;
	if (bundle)
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	/* the last receive emptied the socket: wait for data before trying */
	if (c->rx_drained)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	sqe->user_data = ud(c, SHEAF__OP_RECV);
	c->inflight++;
}

static void cancel(struct sheaf_conn *c, bool all)
{
	struct io_uring_sqe *sqe = sheaf__uring_sqe(c->loop);

	if (all)
		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
	else
		io_uring_prep_cancel64(sqe, ud(c, SHEAF__OP_RECV), 0);
	sqe->user_data = ud(c, SHEAF__OP_CANCEL);
	c->inflight++;
}

static void uring_recv_cancel(struct sheaf_conn *c) { cancel(c, false); }
static void uring_abort(struct sheaf_conn *c) { cancel(c, true); }

/* The thread that runs the loop becomes the ring's single issuer. */
static int enable(struct sheaf__uring *u)
{
	/* liburing 2.3 declares io_uring_enable_rings but does not export it */
	if (syscall(__NR_io_uring_register, u->ring.ring_fd,
		    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
		return -errno;
	u->enabled = true;
	return 0;
}

static int uring_wait(struct sheaf_loop *l, int timeout_ms,
		      void (*fire)(struct sheaf_loop *l, const struct sheaf__event *ev))
{
	struct sheaf__uring *u = sheaf__uring_of(l);
	struct __kernel_timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000LL };
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int ret;

	if (!u->enabled && (ret = enable(u)))
		return ret;
	/* liburing enters unless completions wait and nothing is to be submitted */
	if (io_uring_sq_ready(&u->ring) || !io_uring_cq_ready(&u->ring))
		l->st.enters++;
	ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, timeout_ms < 0 ? NULL : &ts,
					       NULL);
	if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN)
		return ret;
	io_uring_for_each_cqe(&u->ring, head, cqe) {
		struct sheaf__event ev = { cqe->user_data, cqe->res, cqe->flags };

		fire(l, &ev);
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	return 0;
}

static uint32_t uring_sendrings(const struct sheaf_loop *l)
{
	return sheaf__uring_of(l)->nsrings;
}

const struct sheaf__backend sheaf__uring_backend = {
	.init = uring_init,
	.fini = uring_fini,
	.listen = uring_listen,
	.unlisten = uring_unlisten,
	.pause = uring_pause,
	.connect = uring_connect,
	.recv = uring_recv,
	.recv_cancel = uring_recv_cancel,
	.send = sheaf__uring_send,
	.send_done = sheaf__uring_send_done,
	.abort = uring_abort,
	.release = sheaf__uring_send_release,
	.wait = uring_wait,
	.watch = uring_watch,
	.sendrings = uring_sendrings,
};
