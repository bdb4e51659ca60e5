/*
 * sheaf_conn_pause and sheaf_conn_resume: a paused connection holds what a
 * receive in flight brought (and its EOF) and delivers it first on resume,
 * or hands it to the peer it is linked to.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

void sheaf__resume_remove(struct sheaf_conn *c)
{
	for (struct sheaf_conn **pp = &c->loop->resume; *pp; pp = &(*pp)->resume_next) {
		if (*pp == c) {
			*pp = c->resume_next;
			break;
		}
	}
	c->resuming = false;
}

/* What c held while paused goes to its new peer, EOF included. */
void sheaf__hand_over_held(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;
	struct sheaf_conn *to = c->peer;

	c->user_paused = false;
	if (c->held.count) {
		if (!to->q.count)
			to->sent_at = l->now;
		while (c->held.count)
			sheaf__sendq_append(l->pool, &to->q, sheaf__sendq_pop(l->pool, &c->held));
		sheaf__conn_send_more(to);
	}
	if (c->held_eof) {
		c->held_eof = false;
		if (to->tx == SHEAF__TX_OPEN)
			to->tx = SHEAF__TX_SHUT_PENDING;
		sheaf__conn_progress(to);
	}
}

int sheaf_conn_pause(struct sheaf_conn *c)
{
	if (c->state != SHEAF__OPEN || !c->started || c->peer || c->user_paused)
		return -EINVAL;
	c->user_paused = true; /* sheaf__recv_arm arms nothing now */
	sheaf__recv_check(c);  /* and a multishot receive stops */
	return 0;
}

int sheaf_conn_resume(struct sheaf_conn *c)
{
	struct sheaf_loop *l = c->loop;

	if (!c->user_paused)
		return -EINVAL;
	c->user_paused = false;
	if (c->state == SHEAF__OPEN && !c->resuming) {
		c->resuming = true;
		c->resume_next = l->resume;
		l->resume = c;
	}
	return 0;
}

/*
 * At the start of a turn (nothing else uses the loop's scratch arrays):
 * resumed connections get what they held, then their EOF or receiving
 * again.
 */
void sheaf__conn_resumed(struct sheaf_loop *l)
{
	while (l->resume) {
		struct sheaf_conn *c = l->resume;
		uint32_t n = 0;
		uint64_t bytes = c->held.bytes;

		l->resume = c->resume_next;
		c->resuming = false;
		if (c->state != SHEAF__OPEN || c->user_paused || c->peer)
			continue; /* closed, paused again, or linked (held data moved) */
		while (c->held.count)
			l->bids[n++] = sheaf__sendq_pop(l->pool, &c->held);
		if (n)
			sheaf__conn_deliver(c, n, (uint32_t)bytes);
		if (c->state != SHEAF__OPEN || c->user_paused)
			continue;
		if (c->held_eof) {
			c->held_eof = false;
			if (l->cb.on_eof)
				l->cb.on_eof(c);
		} else {
			sheaf__recv_arm(c);
		}
	}
}
