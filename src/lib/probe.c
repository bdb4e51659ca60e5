/*
 * Kernel feature probe and io-mode choice. Feature decisions are made here
 * and nowhere else: from the setup feature bits, and from a real trial on a
 * socketpair where no bit exists.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "internal.h"
#include "trial.h"

static const char *const io_names[SHEAF_IO__COUNT] = {
	[SHEAF_IO_AUTO] = "auto",     [SHEAF_IO_BUNDLE] = "bundle",
	[SHEAF_IO_RING] = "ring",     [SHEAF_IO_PLAIN] = "plain",
	[SHEAF_IO_SENDMSG] = "sendmsg", [SHEAF_IO_EPOLL] = "epoll",
	[SHEAF_IO_RECVMSG] = "recvmsg",
};

const char *sheaf_io_name(enum sheaf_io io)
{
	return (unsigned)io < SHEAF_IO__COUNT ? io_names[io] : NULL;
}

int sheaf_io_parse(const char *name)
{
	for (int i = 0; i < SHEAF_IO__COUNT; i++)
		if (name && !strcmp(name, io_names[i]))
			return i;
	return -EINVAL;
}

int sheaf__kernel_version(const char *release, int *maj, int *min, int *patch)
{
	*patch = 0;
	if (sscanf(release, "%d.%d.%d", maj, min, patch) < 2)
		return -EINVAL;
	return 0;
}

/* 6.13.11 up to 6.14.8 could reorder bundle data (fixed in 6.14.9). */
int sheaf__bundle_bad_kernel(int maj, int min, int patch)
{
	long v = maj * 1000000L + min * 1000L + patch;

	return v >= 6013011L && v <= 6014008L;
}

/* A bundle send of group 2 on fd a, a multishot bundle recv of group 1 on b. */
static void trial_submit(struct io_uring *ring, int a, int b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	io_uring_prep_send(sqe, a, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 2;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = 1;
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_recv_multishot(sqe, b, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 1;
	sqe->ioprio |= IORING_RECVSEND_BUNDLE;
	sqe->user_data = 2;
	io_uring_submit(ring);
}

/* Reaps trial CQEs (at most 8, 200 ms each) until both sides moved 8
 * bytes, or with until_recv_end until the recv ended; sums bytes per op. */
static void trial_reap(struct io_uring *ring, int *sent, int *got, bool until_recv_end)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 200000000 };
	struct io_uring_cqe *cqe;

	for (int i = 0; i < 8; i++) {
		bool recv_end;

		if (!until_recv_end && *sent >= 8 && *got >= 8)
			return;
		if (io_uring_wait_cqe_timeout(ring, &cqe, &ts))
			return;
		if (cqe->res > 0)
			*(cqe->user_data == 1 ? sent : got) += cqe->res;
		recv_end = cqe->user_data == 2 && !(cqe->flags & IORING_CQE_F_MORE);
		io_uring_cqe_seen(ring, cqe);
		if (until_recv_end && recv_end)
			return;
	}
}

/* A real trial: 8 bytes in 4 buffers sent as one bundle, received into a
 * pool by a recv bundle, over a socketpair. */
static int trial_bundles(struct io_uring *ring, struct sheaf_probe *p)
{
	static char out[4][2] = { "ab", "cd", "ef", "gh" };
	struct io_uring_buf_ring *tx;
	struct sheaf__pool rx;
	int sv[2], ret, sent = 0, got = 0;
	size_t txlen;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	tx = sheaf__ring_alloc(4, &txlen);
	ret = tx ? sheaf__ring_register(ring, tx, 4, 2, 0) : -ENOMEM;
	if (!ret) {
		for (int i = 0; i < 4; i++)
			io_uring_buf_ring_add(tx, out[i], 2, (uint16_t)i, 3, i);
		io_uring_buf_ring_advance(tx, 4);
		ret = sheaf__pool_init(&rx, 2, 8, 1);
		if (!ret && (ret = sheaf__ring_register(ring, rx.br, 8, 1, 0)))
			sheaf__pool_fini(&rx);
	}
	if (!ret) {
		trial_submit(ring, sv[0], sv[1]);
		trial_reap(ring, &sent, &got, false);
		p->send_bundle = sent == 8;
		p->recv_bundle = got == 8;
		shutdown(sv[0], SHUT_WR); /* EOF ends the multishot recv */
		trial_reap(ring, &sent, &got, true);
		io_uring_unregister_buf_ring(ring, 1);
		sheaf__pool_fini(&rx);
	}
	if (tx) {
		io_uring_unregister_buf_ring(ring, 2);
		munmap(tx, txlen);
	}
	close(sv[0]);
	close(sv[1]);
	return ret;
}

static void trial_features(struct io_uring *ring, struct sheaf_probe *p)
{
	struct io_uring_buf_ring *br;
	size_t len;

	br = sheaf__ring_alloc(8, &len);
	if (!br)
		return;
	p->pbuf_ring = sheaf__ring_register(ring, br, 8, 7, 0) == 0;
	if (p->pbuf_ring)
		io_uring_unregister_buf_ring(ring, 7);
	p->inc_ring = sheaf__ring_register(ring, br, 8, 7, IOU_PBUF_RING_INC) == 0;
	if (p->inc_ring)
		io_uring_unregister_buf_ring(ring, 7);
	munmap(br, len);
	if (p->pbuf_ring && (ring->features & IORING_FEAT_RECVSEND_BUNDLE))
		trial_bundles(ring, p);
	if (p->send_bundle)
		p->send_commit = sheaf__trial_send_commit(ring) == 1;
}

/*
 * Multishot recv has no feature bit and the opcode probe cannot see flags:
 * a working recv bundle (itself multishot here) proves it, otherwise the
 * release it arrived in (6.0) decides.
 */
static int has_recv_multishot(const struct sheaf_probe *p)
{
	int maj = 0, min = 0, patch = 0;

	if (p->recv_bundle)
		return 1;
	if (sheaf__kernel_version(p->release, &maj, &min, &patch))
		return 0;
	return maj >= 6;
}

static void choose(struct sheaf_probe *p)
{
	int maj = 0, min = 0, patch = 0;

	sheaf__kernel_version(p->release, &maj, &min, &patch);
	if ((p->recv_bundle || p->send_bundle) &&
	    sheaf__bundle_bad_kernel(maj, min, patch)) {
		p->bundle_refused = 1;
		p->recv_bundle = p->send_bundle = 0;
		snprintf(p->reason, sizeof(p->reason),
			 "kernel %s may reorder bundle data (6.13.11 to 6.14.8, "
			 "fixed in 6.14.9): bundles refused", p->release);
	}
	if (p->recv_bundle && p->send_bundle && !p->send_commit)
		snprintf(p->reason, sizeof(p->reason), "a short bundle send does not "
			 "commit what it selected (docs/KERNEL.md): send bundles refused");
	if (p->recv_bundle && p->send_bundle && p->send_commit)
		p->best = SHEAF_IO_BUNDLE;
	else if (p->recv_bundle)
		p->best = SHEAF_IO_SENDMSG;
	else if (p->pbuf_ring && p->recv_multishot)
		p->best = SHEAF_IO_RING;
	else
		p->best = SHEAF_IO_EPOLL; /* io_uring missing or too old */
	if (!p->reason[0] && p->best != SHEAF_IO_BUNDLE && p->best != SHEAF_IO_SENDMSG)
		snprintf(p->reason, sizeof(p->reason), "%s",
			 !p->pbuf_ring ? "no provided-buffer rings (Linux 5.19+)" :
			 !p->recv_multishot ? "no multishot recv (Linux 6.0+)" :
					      "no send/recv bundles (Linux 6.10+)");
}

static struct sheaf_probe cached;
static int cached_ret;
static pthread_once_t probed = PTHREAD_ONCE_INIT;

static void probe_once(void)
{
	struct io_uring ring;
	struct utsname u;
	int ret;

	cached.size = sizeof(cached);
	if (!uname(&u))
		snprintf(cached.release, sizeof(cached.release), "%s", u.release);
	ret = io_uring_queue_init(8, &ring, 0);
	if (ret) {
		snprintf(cached.reason, sizeof(cached.reason),
			 "io_uring_setup failed: %s", strerror(-ret));
	} else {
		cached.io_uring = 1;
		trial_features(&ring, &cached);
		cached.recv_multishot = has_recv_multishot(&cached);
		io_uring_queue_exit(&ring);
	}
	choose(&cached);
	cached_ret = cached.io_uring ? 0 : ret;
}

int sheaf_probe(struct sheaf_probe *p)
{
	uint32_t size = p->size;

	if (size < sizeof(cached))
		return -EINVAL; /* the first version is this one */
	pthread_once(&probed, probe_once);
	memcpy(p, &cached, sizeof(cached));
	p->size = size;
	return cached_ret;
}

static int supported(const struct sheaf_probe *p, enum sheaf_io io)
{
	switch (io) {
	case SHEAF_IO_BUNDLE:
		return p->recv_bundle && p->send_bundle && p->send_commit;
	case SHEAF_IO_SENDMSG:
		return p->recv_bundle;
	case SHEAF_IO_RING:
	case SHEAF_IO_PLAIN:
	case SHEAF_IO_RECVMSG: /* multishot recvmsg came with multishot recv (6.0) */
		return p->pbuf_ring && p->recv_multishot;
	case SHEAF_IO_EPOLL:
		return 1;
	default:
		return 0;
	}
}

int sheaf_io_resolve(enum sheaf_io requested)
{
	struct sheaf_probe p = { .size = sizeof(p) };
	const char *env = getenv("SHEAF_IO");
	int io = requested;

	if (io == SHEAF_IO_AUTO && env && *env) {
		io = sheaf_io_parse(env);
		if (io < 0)
			return -EINVAL;
	}
	sheaf_probe(&p);
	if (io == SHEAF_IO_AUTO)
		io = p.best;
	if (io == SHEAF_IO_AUTO || !supported(&p, io))
		return -EOPNOTSUPP;
	return io;
}
