/*
 * forward: a two-connection forwarder (the core of sheaf proxy). Each
 * client gets a connection to TARGET; once it is up, the two are linked
 * and bytes move both ways by reference, with backpressure and half-close,
 * without passing through this program.
 *
 *   cc forward.c -o forward $(pkg-config --cflags --libs sheaf)
 *   ./forward 127.0.0.1:7002 127.0.0.1:8080 [io-mode]
 */
#include "example.h"

static struct sockaddr_storage target;
static socklen_t target_len;

/* The client and its upstream know each other through their data. */
static void on_accept(struct sheaf_conn *client, void *arg)
{
	int err = 0;
	struct sheaf_conn *up = sheaf_connect(sheaf_conn_loop(client),
					      (struct sockaddr *)&target, target_len, client, &err);

	if (!up) {
		fprintf(stderr, "forward: connect: %s\n", strerror(-err));
		sheaf_conn_close(client);
		return;
	}
	sheaf_conn_set_data(client, up);
}

static void on_connect(struct sheaf_conn *up, int err)
{
	struct sheaf_conn *client = sheaf_conn_data(up);

	if (client && !err && !sheaf_conn_link(client, up))
		return; /* linked: the library runs the pair from now on */
	sheaf_conn_close(up); /* failed, or the client went away meanwhile */
	if (client)
		sheaf_conn_close(client);
}

/* Whichever side goes first unhooks the other. */
static void on_close(struct sheaf_conn *c, int err)
{
	struct sheaf_conn *other = sheaf_conn_data(c);

	if (other)
		sheaf_conn_set_data(other, NULL);
}

int main(int argc, char **argv)
{
	struct sheaf_callbacks cb = { .size = sizeof(cb), .on_accept = on_accept,
		.on_connect = on_connect, .on_close = on_close };

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: forward LISTEN-HOST:PORT TARGET-HOST:PORT [io-mode]\n");
		return 2;
	}
	if (example_addr(argv[2], &target, &target_len)) {
		fprintf(stderr, "forward: not a HOST:PORT address: %s\n", argv[2]);
		return 2;
	}
	return example_run(argv[1], argv[3], &cb, NULL);
}
