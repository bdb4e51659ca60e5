/*
 * echo: sends back every byte it receives, written with sheaf_conn_write.
 * When a client stops reading, writes fall short: the rest is kept, the
 * connection stops reading (sheaf_conn_pause) and goes on once on_writable
 * says its queue has room again, so memory stays bounded.
 *
 *   cc echo.c -o echo $(pkg-config --cflags --libs sheaf)
 *   ./echo 127.0.0.1:7000 [io-mode]
 */
#include "example.h"

struct client {
	char *rest; /* what short writes left over, not yet sent */
	size_t len, off;
};

/* Keeps bytes a write did not take, and stops reading until they went. */
static int keep(struct sheaf_conn *c, struct client *cl, const char *p, size_t n)
{
	char *r = realloc(cl->rest, cl->len + n);

	if (!r)
		return -1;
	memcpy(r + cl->len, p, n);
	cl->rest = r;
	cl->len += n;
	if (cl->len == n)
		sheaf_conn_pause(c);
	return 0;
}

static void on_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
{
	struct client *cl = sheaf_conn_data(c);

	for (unsigned i = 0; i < b->nr; i++) {
		const char *p = b->iov[i].iov_base;
		size_t len = b->iov[i].iov_len;
		ssize_t n = cl->len ? 0 : sheaf_conn_write(c, p, len); /* keep order */

		if (n == -EAGAIN)
			n = 0;
		if (n < 0 || ((size_t)n < len && keep(c, cl, p + n, len - (size_t)n))) {
			sheaf_conn_close(c);
			return;
		}
	}
}

static void on_writable(struct sheaf_conn *c)
{
	struct client *cl = sheaf_conn_data(c);

	while (cl->off < cl->len) {
		ssize_t n = sheaf_conn_write(c, cl->rest + cl->off, cl->len - cl->off);

		if (n == -EAGAIN)
			return; /* on_writable comes again */
		if (n < 0) {
			sheaf_conn_close(c);
			return;
		}
		cl->off += (size_t)n;
	}
	cl->len = cl->off = 0;
	sheaf_conn_resume(c);
}

static void on_close(struct sheaf_conn *c, int err)
{
	struct client *cl = sheaf_conn_data(c);

	if (cl)
		free(cl->rest);
	free(cl);
}

int main(int argc, char **argv)
{
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = example_accept,
		.on_data = on_data, .on_eof = example_eof, .on_close = on_close,
		.on_writable = on_writable };

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: echo HOST:PORT [io-mode]\n");
		return 2;
	}
	example_client_size = sizeof(struct client);
	return example_run(argv[1], argv[2], &cb, NULL);
}
