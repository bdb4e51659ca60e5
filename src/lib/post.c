/*
 * sheaf_loop_post: other threads hand functions to the loop's thread. A
 * mutex guards the queue; an eventfd, which the backend watches, wakes the
 * loop. sheaf_loop_stop writes the same eventfd (write(2) is
 * async-signal-safe), so stopping needs no signal.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

struct post {
	struct post *next;
	void (*fn)(struct sheaf_loop *l, void *arg);
	void *arg;
};

struct sheaf__posts {
	pthread_mutex_t lock;
	struct post *head, *tail;
	int fd;
};

int sheaf__posts_init(struct sheaf_loop *l)
{
	struct sheaf__posts *ps = calloc(1, sizeof(*ps));

	if (!ps)
		return -ENOMEM;
	ps->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ps->fd < 0) {
		free(ps);
		return -errno;
	}
	pthread_mutex_init(&ps->lock, NULL);
	l->posts = ps;
	return 0;
}

void sheaf__posts_fini(struct sheaf_loop *l)
{
	struct sheaf__posts *ps = l->posts;

	if (!ps)
		return;
	while (ps->head) {
		struct post *p = ps->head;

		ps->head = p->next;
		free(p);
	}
	close(ps->fd);
	pthread_mutex_destroy(&ps->lock);
	free(ps);
	l->posts = NULL;
}

int sheaf__posts_fd(const struct sheaf_loop *l) { return l->posts->fd; }

void sheaf__posts_wake(struct sheaf_loop *l)
{
	uint64_t one = 1;
	int saved = errno;

	/* EAGAIN: the counter is full, and the loop is woken anyway */
	if (write(l->posts->fd, &one, sizeof(one)) < 0)
		errno = saved; /* a signal handler must leave errno alone */
}

int sheaf_loop_post(struct sheaf_loop *l, void (*fn)(struct sheaf_loop *l, void *arg),
		    void *arg)
{
	struct sheaf__posts *ps = l->posts;
	struct post *p = malloc(sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->next = NULL;
	p->fn = fn;
	p->arg = arg;
	pthread_mutex_lock(&ps->lock);
	if (ps->tail)
		ps->tail->next = p;
	else
		ps->head = p;
	ps->tail = p;
	pthread_mutex_unlock(&ps->lock);
	sheaf__posts_wake(l);
	return 0;
}

/* On the loop's thread: clears the wake-up, then runs what was posted
 * before it (functions posted meanwhile wake the loop again). */
void sheaf__posts_run(struct sheaf_loop *l)
{
	struct sheaf__posts *ps = l->posts;
	struct post *p;
	uint64_t v;

	if (read(ps->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&ps->lock);
	p = ps->head;
	ps->head = ps->tail = NULL;
	pthread_mutex_unlock(&ps->lock);
	while (p) {
		struct post *next = p->next;

		p->fn(l, p->arg);
		free(p);
		p = next;
	}
}
