/*
 * Timers (sheaf_timer_add): a binary min-heap of deadlines on the loop's
 * clock. The loop sleeps until the earliest one and runs those due after
 * each wait.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

#define FIRING UINT32_MAX /* idx of a one-shot timer whose fn runs now */

static void place(struct sheaf__timers *ts, uint32_t i, struct sheaf_timer *t)
{
	ts->heap[i] = t;
	t->idx = i;
}

static void sift_up(struct sheaf__timers *ts, uint32_t i)
{
	struct sheaf_timer *t = ts->heap[i];

	while (i && ts->heap[(i - 1) / 2]->when > t->when) {
		place(ts, i, ts->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	place(ts, i, t);
}

static void sift_down(struct sheaf__timers *ts, uint32_t i)
{
	struct sheaf_timer *t = ts->heap[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= ts->n)
			break;
		if (c + 1 < ts->n && ts->heap[c + 1]->when < ts->heap[c]->when)
			c++;
		if (ts->heap[c]->when >= t->when)
			break;
		place(ts, i, ts->heap[c]);
		i = c;
	}
	place(ts, i, t);
}

static int heap_push(struct sheaf__timers *ts, struct sheaf_timer *t)
{
	if (ts->n == ts->cap) {
		uint32_t cap = ts->cap ? 2 * ts->cap : 16;
		struct sheaf_timer **h = realloc(ts->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		ts->heap = h;
		ts->cap = cap;
	}
	place(ts, ts->n, t);
	sift_up(ts, ts->n++);
	return 0;
}

static void heap_remove(struct sheaf__timers *ts, struct sheaf_timer *t)
{
	uint32_t i = t->idx;
	struct sheaf_timer *last = ts->heap[--ts->n];

	if (last == t)
		return;
	place(ts, i, last);
	sift_up(ts, i);
	sift_down(ts, last->idx);
}

struct sheaf_timer *sheaf_timer_add(struct sheaf_loop *l, uint32_t after_ms,
				    uint32_t every_ms,
				    void (*fn)(struct sheaf_timer *t, void *arg),
				    void *arg, int *err)
{
	struct sheaf_timer *t = calloc(1, sizeof(*t));
	int ret = -ENOMEM;

	if (t) {
		t->loop = l;
		t->when = sheaf__now() + after_ms / 1000.0;
		t->every = every_ms / 1000.0;
		t->fn = fn;
		t->arg = arg;
		ret = fn ? heap_push(&l->timers, t) : -EINVAL;
		if (!ret)
			return t;
	}
	free(t);
	if (err)
		*err = ret;
	return NULL;
}

void sheaf_timer_cancel(struct sheaf_timer *t)
{
	if (!t || t->idx == FIRING)
		return; /* a one-shot timer in its own fn: freed after it returns */
	heap_remove(&t->loop->timers, t);
	free(t);
}

double sheaf__timers_next(const struct sheaf__timers *ts)
{
	return ts->n ? ts->heap[0]->when : 0;
}

/*
 * Runs the timers due now. A periodic timer is put back before its fn runs
 * (so fn may cancel it) and its next deadline counts from the one it had,
 * not from now, so a late turn does not make it drift; one that fell more
 * than a period behind skips ahead instead of firing in a burst.
 */
void sheaf__timers_run(struct sheaf_loop *l)
{
	struct sheaf__timers *ts = &l->timers;
	uint32_t budget = ts->n; /* each due timer fires at most once a turn */

	while (budget-- && ts->n && ts->heap[0]->when <= l->now) {
		struct sheaf_timer *t = ts->heap[0];

		if (t->every) {
			t->when += t->every;
			if (t->when <= l->now)
				t->when = l->now + t->every;
			sift_down(ts, 0);
			t->fn(t, t->arg);
		} else {
			heap_remove(ts, t);
			t->idx = FIRING;
			t->fn(t, t->arg);
			free(t);
		}
	}
}

void sheaf__timers_fini(struct sheaf__timers *ts)
{
	for (uint32_t i = 0; i < ts->n; i++)
		free(ts->heap[i]);
	free(ts->heap);
	ts->heap = NULL;
	ts->n = ts->cap = 0;
}
