/*
 * lines: a request/response server that answers with its own bytes. Each
 * request is a line of at most 1024 bytes; the answer is its length, a
 * space, the line in upper case and a newline. Answers are built in place
 * in write-pool buffers (sheaf_conn_buf_get, sheaf_conn_write_buf): no
 * copy after the one that builds them. When no buffer can be had, the
 * input not yet answered is kept and reading pauses until on_writable.
 *
 *   cc lines.c -o lines $(pkg-config --cflags --libs sheaf)
 *   ./lines 127.0.0.1:7001 [io-mode]
 */
#include <ctype.h>
#include "example.h"

#define MAX_LINE 1024

struct client {
	char line[MAX_LINE];
	size_t n;              /* bytes of the line so far */
	char *in;              /* input waiting for room to answer it */
	size_t in_len, in_off;
	char *out;             /* the write-pool buffer being filled */
	size_t out_len, out_cap;
};

/* Sends the answers built so far. */
static int send_out(struct sheaf_conn *c, struct client *cl)
{
	int err = cl->out_len ? sheaf_conn_write_buf(c, cl->out, cl->out_len) : 0;

	if (cl->out && (err || cl->out_len)) {
		if (err)
			sheaf_buf_put(sheaf_conn_loop(c), cl->out);
		cl->out = NULL;
		cl->out_len = 0;
	}
	return err;
}

/* Answers the line: 0, -EAGAIN (no room: try again later) or another error. */
static int answer(struct sheaf_conn *c, struct client *cl)
{
	int err = 0;

	if (cl->out && cl->out_cap - cl->out_len < cl->n + 24 && (err = send_out(c, cl)))
		return err;
	if (!cl->out && !(cl->out = sheaf_conn_buf_get(c, &cl->out_cap, &err)))
		return err;
	cl->out_len += (size_t)sprintf(cl->out + cl->out_len, "%zu ", cl->n);
	for (size_t i = 0; i < cl->n; i++)
		cl->out[cl->out_len++] = (char)toupper((unsigned char)cl->line[i]);
	cl->out[cl->out_len++] = '\n';
	cl->n = 0;
	return 0;
}

/* Takes input up to where no answer can be built now; the bytes taken, or
 * -1 to close (a line too long, or the connection failed). */
static ssize_t consume(struct sheaf_conn *c, struct client *cl, const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int err = p[i] == '\n' ? answer(c, cl) : 0;

		if (err == -EAGAIN)
			return (ssize_t)i;
		if (err || (p[i] != '\n' && cl->n == MAX_LINE))
			return -1;
		if (p[i] != '\n')
			cl->line[cl->n++] = p[i];
	}
	return (ssize_t)len;
}

static void on_data(struct sheaf_conn *c, const struct sheaf_bundle *b)
{
	struct client *cl = sheaf_conn_data(c);

	for (unsigned i = 0; i < b->nr; i++) {
		const char *p = b->iov[i].iov_base;
		size_t len = b->iov[i].iov_len;
		ssize_t n = cl->in ? 0 : consume(c, cl, p, len);
		char *in;

		if (n < 0) {
			sheaf_conn_close(c);
			return;
		}
		if ((size_t)n < len) { /* keep the rest until there is room */
			if (!(in = realloc(cl->in, cl->in_len + len - (size_t)n))) {
				sheaf_conn_close(c);
				return;
			}
			memcpy(in + cl->in_len, p + n, len - (size_t)n);
			cl->in = in;
			cl->in_len += len - (size_t)n;
			sheaf_conn_pause(c); /* -EINVAL when paused already */
		}
	}
	if (send_out(c, cl))
		sheaf_conn_close(c);
}

static void on_writable(struct sheaf_conn *c)
{
	struct client *cl = sheaf_conn_data(c);
	ssize_t n = consume(c, cl, cl->in + cl->in_off, cl->in_len - cl->in_off);

	if (n < 0 || send_out(c, cl)) {
		sheaf_conn_close(c);
		return;
	}
	cl->in_off += (size_t)n;
	if (cl->in_off < cl->in_len)
		return; /* on_writable comes again */
	free(cl->in);
	cl->in = NULL;
	cl->in_len = cl->in_off = 0;
	sheaf_conn_resume(c);
}

static void on_close(struct sheaf_conn *c, int err)
{
	struct client *cl = sheaf_conn_data(c);

	if (cl && cl->out)
		sheaf_buf_put(sheaf_conn_loop(c), cl->out);
	if (cl)
		free(cl->in);
	free(cl);
}

int main(int argc, char **argv)
{
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = example_accept,
		.on_data = on_data, .on_eof = example_eof, .on_close = on_close,
		.on_writable = on_writable };

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: lines HOST:PORT [io-mode]\n");
		return 2;
	}
	example_client_size = sizeof(struct client);
	return example_run(argv[1], argv[2], &cb, NULL);
}
