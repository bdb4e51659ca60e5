/* What the examples share: addresses, the loop, signals. Not part of libsheaf. */
#ifndef SHEAF_EXAMPLE_H
#define SHEAF_EXAMPLE_H

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sheaf.h>

static struct sheaf_loop *example_loop;

/* Resolves "HOST:PORT" (a name, an IPv4 address or [IPv6]); 0 or -1. */
static inline int example_addr(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
	char host[256];
	const char *port = strrchr(hostport, ':');
	size_t n = port ? (size_t)(port - hostport) : 0;

	if (!port || n >= sizeof(host))
		return -1;
	memcpy(host, hostport, n);
	host[n] = '\0';
	if (n > 1 && host[0] == '[' && host[n - 1] == ']')
		memmove(host, host + 1, n), host[n - 2] = '\0';
	if (getaddrinfo(host, port + 1, &hints, &ai))
		return -1;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static inline void example_stop(int sig) { sheaf_loop_stop(example_loop); }

/* on_accept for servers: each connection gets zeroed data of this size
 * (freed in the server's on_close) and starts receiving. */
static size_t example_client_size;

static inline void example_accept(struct sheaf_conn *c, void *arg)
{
	void *data = calloc(1, example_client_size);

	if (!data) {
		sheaf_conn_close(c);
		return;
	}
	sheaf_conn_set_data(c, data);
	sheaf_conn_start(c);
}

/* on_eof for servers: the client finished; close once the answers went. */
static inline void example_eof(struct sheaf_conn *c) { sheaf_conn_close(c); }

/*
 * Creates the loop (io mode from `mode`, or auto when NULL), listens on
 * `hostport`, prints the port it got (for port 0) and runs until SIGINT or
 * SIGTERM. Returns the exit status.
 */
static inline int example_run(const char *hostport, const char *mode, const struct sheaf_callbacks *cb,
		       void *data)
{
	struct sheaf_loop_config cfg;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd, err = 0;

	sheaf_loop_config_init(&cfg);
	if (mode && (int)(cfg.io = sheaf_io_parse(mode)) < 0) {
		fprintf(stderr, "unknown io mode %s\n", mode);
		return 2;
	}
	if (example_addr(hostport, &ss, &len)) {
		fprintf(stderr, "not a HOST:PORT address: %s\n", hostport);
		return 2;
	}
	example_loop = sheaf_loop_new(&cfg, cb, data, &err);
	fd = example_loop ? sheaf_listen(example_loop, (struct sockaddr *)&ss, len, data) : err;
	if (fd < 0) {
		fprintf(stderr, "cannot listen on %s: %s\n", hostport, strerror(-fd));
		sheaf_loop_free(example_loop);
		return 1;
	}
	len = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &len);
	/* sin_port and sin6_port are at the same place */
	printf("listening on port %u\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
	fflush(stdout);
	signal(SIGINT, example_stop);
	signal(SIGTERM, example_stop);
	err = sheaf_loop_run(example_loop);
	sheaf_loop_free(example_loop);
	return err ? 1 : 0;
}

#endif
