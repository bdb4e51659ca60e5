/*
 * sheaf bench: peer proxies (Debian packages), each with the configuration
 * the benchmark writes beside its results: the peer's defaults, one thread,
 * TCP mode. Included by bench_env.c only.
 */
#ifndef SHEAF_BENCH_PEERS_H
#define SHEAF_BENCH_PEERS_H

static const struct {
	const char *name, *bin, *package;
} peers[] = {
	{ "haproxy", "/usr/sbin/haproxy", "haproxy" },
	{ "haproxy-splice", "/usr/sbin/haproxy", "haproxy" },
	{ "socat", "/usr/bin/socat", "socat" },
	{ "nginx", "/usr/sbin/nginx", "nginx-light" },
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

static int haproxy_conf(const char *path, const char *lis, const char *up, bool splice)
{
	char text[1024];

	snprintf(text, sizeof(text),
		 "# written by sheaf bench: HAProxy defaults, one thread, tcp mode\n"
		 "global\n    nbthread 1\n    maxconn 4096\n"
		 "defaults\n    mode tcp\n%s    timeout connect 5s\n"
		 "    timeout client 60s\n    timeout server 60s\n"
		 "frontend fe\n    bind %s\n    default_backend be\n"
		 "backend be\n    server up %s\n",
		 splice ? "    option splice-auto\n" : "", lis, up);
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
	if (i <= 1) {
		char *argv[] = { (char *)peers[i].bin, "-db", "-f", conf, NULL };

		if (haproxy_conf(conf, lis, up, i == 1))
			return -1;
		env->pids[1] = spawn(env, PX, argv, out, err);
	} else if (i == 2) {
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
