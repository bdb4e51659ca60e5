/*
 * sheaf bench: peer proxies (Debian packages), each with the configuration
 * the benchmark writes beside its results: the peer's defaults, one thread,
 * TCP mode. Included by bench_env.c only.
 */
#ifndef SHEAF_BENCH_PEERS_H
#define SHEAF_BENCH_PEERS_H

enum peer_kind { PEER_HAPROXY, PEER_SOCAT, PEER_NGINX };

static const struct {
	const char *name, *bin, *package;
	enum peer_kind kind;
	bool splice, bufsize; /* haproxy: option splice-auto; tune.bufsize = the cell's size */
} peers[] = {
	{ "haproxy", "/usr/sbin/haproxy", "haproxy", PEER_HAPROXY, false, false },
	{ "haproxy-splice", "/usr/sbin/haproxy", "haproxy", PEER_HAPROXY, true, false },
	{ "haproxy-bufsize", "/usr/sbin/haproxy", "haproxy", PEER_HAPROXY, false, true },
	{ "socat", "/usr/bin/socat", "socat", PEER_SOCAT, false, false },
	{ "nginx", "/usr/sbin/nginx", "nginx-light", PEER_NGINX, false, false },
};

static int peer_index(const char *name)
{
	for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++)
		if (!strcmp(name, peers[i].name))
			return (int)i;
	return -1;
}

bool bench_peer_known(const char *name) { return peer_index(name) >= 0; }

const char *bench_peer_name(const char *name)
{
	int i = peer_index(name);

	return i >= 0 ? peers[i].name : NULL;
}

bool bench_peer_available(const char *name)
{
	int i = peer_index(name);

	return i >= 0 && access(peers[i].bin, X_OK) == 0;
}

const char *bench_peer_package(const char *name)
{
	int i = peer_index(name);

	return i >= 0 ? peers[i].package : "?";
}

static int write_conf(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) ? -errno : 0;
}

/*
 * maxconn: the clients of the run and some (its default, 4096 here, refuses
 * the rest); tune.bufsize for haproxy-bufsize: the buffer size sheaf runs
 * with in the same cell (HAProxy keeps maxrewrite below half of it).
 */
static int haproxy_conf(const char *path, const char *lis, const char *up, int i,
			const struct bench_cell *c)
{
	char text[1200], tune[64] = "";
	uint32_t maxconn = c->conns + 16 > 4096 ? c->conns + 16 : 4096;

	if (peers[i].bufsize)
		snprintf(tune, sizeof(tune), "    tune.bufsize %u\n    tune.maxrewrite %u\n",
			 c->size, c->size / 4);
	snprintf(text, sizeof(text),
		 "# written by sheaf bench: HAProxy defaults, one thread, tcp mode\n"
		 "global\n    nbthread 1\n    maxconn %u\n%s"
		 "defaults\n    mode tcp\n    maxconn %u\n%s    timeout connect 5s\n"
		 "    timeout client 60s\n    timeout server 60s\n"
		 "frontend fe\n    bind %s\n    default_backend be\n"
		 "backend be\n    server up %s\n",
		 maxconn, tune, maxconn, peers[i].splice ? "    option splice-auto\n" : "", lis, up);
	return write_conf(path, text);
}

static int nginx_conf(const char *path, const char *lis, const char *up, const char *dir)
{
	char text[1024];

	snprintf(text, sizeof(text),
		 "# written by sheaf bench: nginx stream defaults, one worker\n"
		 "daemon off;\nmaster_process off;\nworker_processes 1;\npid %s/nginx.pid;\n"
		 "error_log stderr;\nevents { worker_connections 10000; }\n"
		 "stream { server { listen %s; proxy_pass %s; } }\n", dir, lis, up);
	return write_conf(path, text);
}

/* Starts a peer listening on the proxy's address; returns its port. */
static int start_peer(struct bench_env *env, const struct bench_cell *c, const char *up,
		      int *out, int *err)
{
	int i = peer_index(c->peer), port = env->netns ? 9000 : free_port();
	char lis[64], conf[600], socat_lis[96], socat_up[96];

	snprintf(lis, sizeof(lis), "%s:%d", env->px_in, port);
	snprintf(conf, sizeof(conf), "%s/%s.conf", env->confdir, c->peer);
	if (peers[i].kind == PEER_HAPROXY) {
		char *argv[] = { (char *)peers[i].bin, "-db", "-f", conf, NULL };

		if (haproxy_conf(conf, lis, up, i, c))
			return -1;
		env->pids[1] = spawn(env, PX, argv, out, err);
	} else if (peers[i].kind == PEER_SOCAT) {
		snprintf(socat_lis, sizeof(socat_lis), "TCP-LISTEN:%d,bind=%s,reuseaddr,fork,backlog=4096", port,
			 env->px_in);
		snprintf(socat_up, sizeof(socat_up), "TCP:%s", up);
		char *argv[] = { (char *)peers[i].bin, socat_lis, socat_up, NULL };

		write_conf(conf, "# written by sheaf bench: socat defaults (8 KiB buffer),\n"
				 "# a process per connection, listen backlog 4096 (its default of 5 drops\n"
				 "# the SYNs of 64 clients): socat TCP-LISTEN:PORT,bind=ADDR,reuseaddr,fork,backlog=4096 TCP:UPSTREAM\n");
		env->pids[1] = spawn(env, PX, argv, out, err);
	} else {
		char *argv[] = { (char *)peers[i].bin, "-c", conf, NULL };

		if (nginx_conf(conf, lis, up, env->confdir))
			return -1;
		env->pids[1] = spawn(env, PX, argv, out, err);
	}
	if (env->pids[1] <= 0 || wait_listen(env, port))
		return -1;
	return port;
}

#endif
