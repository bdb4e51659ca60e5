/*
 * The seam between the loop and the way bytes move: io_uring (uring.c,
 * uring_send.c) or epoll (epoll.c). The loop and the connections know only
 * these operations; a backend keeps its state behind loop->be_state and
 * conn->io, and reports what happened as events (struct sheaf__event) with
 * the meaning of io_uring's completions, which the loop hands to
 * sheaf__conn_event. A backend never calls up into the loop or the
 * connection code.
 */
#ifndef SHEAF_BACKEND_H
#define SHEAF_BACKEND_H

#include "internal.h"

struct sheaf__backend {
	/* Sets up l->be_state and makes the pools' rings known. 0 or -errno. */
	int (*init)(struct sheaf_loop *l);
	void (*fini)(struct sheaf_loop *l);
	/* Starts or stops accepting on l->listen[i]; events: SHEAF__OP_ACCEPT
	 * (res = fd or -errno; without F_MORE the listener is no longer armed).
	 * unlisten is for good (stopping); pause only stops reporting accepts
	 * (with F_MORE still armed), and listen arms it again. */
	int (*listen)(struct sheaf_loop *l, unsigned i);
	void (*unlisten)(struct sheaf_loop *l, unsigned i);
	void (*pause)(struct sheaf_loop *l, unsigned i);
	/* Starts connecting c to c->addr; event SHEAF__OP_CONNECT. 0 or -errno. */
	int (*connect)(struct sheaf_conn *c);
	/* One receive of at most `bufs` buffers from c's pool; event
	 * SHEAF__OP_RECV (bytes, 0 at EOF, -errno; F_BUFFER and the first id). */
	void (*recv)(struct sheaf_conn *c, uint32_t bufs);
	/* Stops a receive in flight (its event still comes, maybe with data). */
	void (*recv_cancel)(struct sheaf_conn *c);
	/* Sends from c->q if no send is in flight; events SHEAF__OP_SEND.
	 * 0, or -errno when the connection must be aborted. */
	int (*send)(struct sheaf_conn *c);
	/*
	 * A send event: retires what went out from c->q into done[] (for the
	 * caller to give back) and sets *n. Returns 0, or -errno when the
	 * connection must be aborted (-EPROTO: the kernel broke the protocol).
	 */
	int (*send_done)(struct sheaf_conn *c, const struct sheaf__event *ev,
			 uint16_t *done, int *n);
	/* c is going: cancel what it has in flight (events still come). */
	void (*abort)(struct sheaf_conn *c);
	/* c is free: release what the backend kept for it. */
	void (*release)(struct sheaf_conn *c);
	/* Submits, waits at most timeout_ms (-1: no limit) and calls fire for
	 * every event. Returns 0 or -errno. */
	int (*wait)(struct sheaf_loop *l, int timeout_ms,
		    void (*fire)(struct sheaf_loop *l, const struct sheaf__event *ev));
	/* Reports fd readable as SHEAF__OP_WAKE events (with F_MORE while it
	 * stays watched; without, watch again). 0 or -errno. */
	int (*watch)(struct sheaf_loop *l, int fd);
	/* Send rings registered (a gauge for the stats). */
	uint32_t (*sendrings)(const struct sheaf_loop *l);
};

extern const struct sheaf__backend sheaf__uring_backend;
extern const struct sheaf__backend sheaf__epoll_backend;

#endif
