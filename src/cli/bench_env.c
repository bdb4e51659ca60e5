/*
 * sheaf bench: the topology (loopback or three network namespaces), the
 * processes of one run (sink, proxy or peer, source) and their results.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "bench.h"

enum { SRC, PX, SNK };

/* ---- running commands -------------------------------------------------- */

/* Runs a command to completion, stderr captured into err; returns status. */
static int run_cmd(char *const argv[], char *err, size_t errlen)
{
	int p[2], status = -1;
	pid_t pid;
	ssize_t n;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(p[1], 2);
		close(p[0]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	n = read(p[0], err, errlen ? errlen - 1 : 0);
	if (err && errlen)
		err[n > 0 ? n : 0] = 0;
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int ip(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int ip(char *err, size_t errlen, const char *fmt, ...)
{
	char line[512], *argv[24], *save = NULL;
	va_list ap;
	int n = 0;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (char *t = strtok_r(line, " ", &save); t && n < 23; t = strtok_r(NULL, " ", &save))
		argv[n++] = t;
	argv[n] = NULL;
	return run_cmd(argv, err, errlen);
}

/*
 * Starts a process in namespace `role` (or here, on loopback) with stdout
 * and stderr on pipes. argv[0] NULL means this sheaf binary.
 */
static pid_t spawn(struct bench_env *env, int role, char **argv, int *out, int *errfd)
{
	char *full[40];
	int o[2], e[2], n = 0;
	pid_t pid;

	if (env->netns) {
		full[n++] = "ip";
		full[n++] = "netns";
		full[n++] = "exec";
		full[n++] = env->ns[role];
	}
	full[n++] = argv[0] ? argv[0] : env->self;
	for (int i = 1; argv[i] && n < 39; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC))
		return -1;
	pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		execvp(full[0], full);
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	*out = o[0];
	*errfd = e[0];
	return pid;
}

static void kill_all(struct bench_env *env)
{
	for (int i = 0; i < 3; i++) {
		if (env->pids[i] > 0) {
			kill(-env->pids[i], SIGKILL);
			kill(env->pids[i], SIGKILL);
			waitpid(env->pids[i], NULL, 0);
			env->pids[i] = 0;
		}
	}
}

/* ---- topology ---------------------------------------------------------- */

int bench_parse_rate(const char *s, double *mbps)
{
	static const struct { const char *unit; double mult; } units[] = {
		{ "tbit", 1e6 }, { "gbit", 1e3 }, { "mbit", 1 }, { "kbit", 1e-3 }, { "bit", 1e-6 },
	};
	size_t n = strspn(s, "0123456789.");
	char *end;
	double v;

	/* digits and a point only: strtod alone would take " 1", "+1", "inf",
	 * "nan", "1e999" and "0x1p3" */
	if (!n || s[0] == '.')
		return -EINVAL;
	v = strtod(s, &end);
	if (end != s + n || !(v > 0) || v > 1e9)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (!strcasecmp(end, units[i].unit)) {
			*mbps = v * units[i].mult;
			return 0;
		}
	}
	return -EINVAL;
}

static int netns_links(struct bench_env *env, char *err, size_t elen)
{
	struct { int a, b; const char *ipa, *ipb; } l[2] = {
		{ SRC, PX, env->src_ip, env->px_in }, { PX, SNK, env->px_out, env->snk_ip },
	};

	for (int i = 0; i < 2; i++) {
		const char *va = env->veth[2 * i], *vb = env->veth[2 * i + 1];

		if (ip(err, elen, "ip link add %s netns %s type veth peer name %s netns %s", va,
		       env->ns[l[i].a], vb, env->ns[l[i].b]) ||
		    ip(err, elen, "ip -n %s addr add %s/24 dev %s", env->ns[l[i].a], l[i].ipa, va) ||
		    ip(err, elen, "ip -n %s addr add %s/24 dev %s", env->ns[l[i].b], l[i].ipb, vb) ||
		    ip(err, elen, "ip -n %s link set %s up", env->ns[l[i].a], va) ||
		    ip(err, elen, "ip -n %s link set %s up", env->ns[l[i].b], vb))
			return -1;
	}
	return 0;
}

/* tbf on the proxy's side of the proxy -> sink link: the seed's 10G wire. */
static int netns_shape(struct bench_env *env, const struct bench_opts *o, char *err, size_t elen)
{
	uint64_t burst = (uint64_t)(o->link_mbps * 1e6 / 8 / 100); /* 10 ms */

	if (burst < 65536)
		burst = 65536;
	return ip(err, elen, "ip netns exec %s tc qdisc add dev %s root tbf rate %s burst %llu latency 50ms",
		  env->ns[PX], env->veth[2], o->link_rate, (unsigned long long)burst);
}

static int netns_setup(struct bench_env *env, const struct bench_opts *o)
{
	static const char *const role[3] = { "src", "px", "snk" };
	char err[512] = "";
	int pid = (int)getpid();

	if (geteuid() != 0) {
		say("bench", "--topology netns needs root (it creates network namespaces)");
		return 1;
	}
	for (int i = 0; i < 3; i++) {
		snprintf(env->ns[i], sizeof(env->ns[i]), "sheaf-%d-%s", pid, role[i]);
		if (ip(err, sizeof(err), "ip netns add %s", env->ns[i])) {
			say("bench", "ip netns add %s: %s", env->ns[i], err);
			return 1;
		}
		env->ns_made[i] = true;
		ip(err, sizeof(err), "ip -n %s link set lo up", env->ns[i]);
	}
	for (int i = 0; i < 4; i++)
		snprintf(env->veth[i], sizeof(env->veth[i]), "sh%d%c", pid % 1000000, 'a' + i);
	strcpy(env->src_ip, "198.18.1.1");
	strcpy(env->px_in, "198.18.1.2");
	strcpy(env->px_out, "198.18.2.1");
	strcpy(env->snk_ip, "198.18.2.2");
	if (netns_links(env, err, sizeof(err))) {
		say("bench", "setting up veth pairs: %s", err);
		return 1;
	}
	if (o->link_rate && netns_shape(env, o, err, sizeof(err))) {
		err[strcspn(err, "\n")] = 0;
		say("bench", "--link-rate %s: tc rejected it: %.200s", o->link_rate, err);
		return EXIT_USAGE;
	}
	return 0;
}

int bench_setup(struct bench_env *env, const struct bench_opts *o)
{
	ssize_t n = readlink("/proc/self/exe", env->self, sizeof(env->self) - 1);

	if (n <= 0)
		return 1;
	env->self[n] = 0;
	if (o->json) {
		const char *slash = strrchr(o->json, '/');

		snprintf(env->confdir, sizeof(env->confdir), "%.*s",
			 slash ? (int)(slash - o->json) : 1, slash ? o->json : ".");
	} else {
		snprintf(env->confdir, sizeof(env->confdir), "/tmp");
	}
	env->netns = o->netns;
	if (!o->netns) {
		strcpy(env->src_ip, "127.0.0.1");
		strcpy(env->px_in, "127.0.0.1");
		strcpy(env->px_out, "127.0.0.1");
		strcpy(env->snk_ip, "127.0.0.1");
		return 0;
	}
	return netns_setup(env, o);
}

/* Removing a namespace removes its veth ends and their qdiscs. */
void bench_cleanup(struct bench_env *env)
{
	kill_all(env);
	for (int i = 0; i < 3; i++) {
		if (env->ns_made[i]) {
			ip(NULL, 0, "ip netns del %s", env->ns[i]);
			env->ns_made[i] = false;
		}
	}
}

/* ---- one run ----------------------------------------------------------- */

/* Reads lines until "listening on HOST:PORT" (bounded by the child's exit). */
static int read_port(int fd)
{
	FILE *f = fdopen(dup(fd), "r");
	char line[512], *p;
	int port = -1;

	while (f && fgets(line, sizeof(line), f)) {
		if ((p = strstr(line, "listening on "))) {
			p[13 + strcspn(p + 13, " (\n")] = 0; /* HOST:PORT only */
			if ((p = strrchr(p + 13, ':')))
				port = atoi(p + 1);
			break;
		}
	}
	if (f)
		fclose(f);
	return port;
}

static void read_all(int fd, char *buf, size_t len)
{
	size_t n = 0;
	ssize_t r;

	while (n + 1 < len && (r = read(fd, buf + n, len - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = 0;
}

static double json_num(const char *s, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(s, k);
	return p ? strtod(p + strlen(k), NULL) : 0;
}

static double cpu_of(const struct rusage *ru)
{
	return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 +
	       (double)ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
}

/* A free port on this host (loopback runs of peers that need one). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Waits (at most 5 s) until something listens on port in the proxy's place. */
static int wait_listen(struct bench_env *env, int port)
{
	char filter[32], out[256];

	snprintf(filter, sizeof(filter), "sport = :%d", port);
	for (int i = 0; i < 100; i++) {
		char *argv[] = { "ss", "-Hltn", filter, NULL };
		int o, e;
		pid_t pid = spawn(env, PX, argv, &o, &e);

		read_all(o, out, sizeof(out));
		close(o);
		close(e);
		waitpid(pid, NULL, 0);
		if (strstr(out, "LISTEN"))
			return 0;
		usleep(50000);
	}
	return -1;
}

#include "bench_peers.h"

static int start_proxy(struct bench_env *env, const struct bench_opts *o,
		       const struct bench_cell *c, int sink_port, int *out, int *err)
{
	char up[64], lis[64], size_s[16];

	snprintf(up, sizeof(up), "%s:%d", env->snk_ip, sink_port);
	if (c->peer)
		return start_peer(env, c, up, out, err);
	snprintf(lis, sizeof(lis), "%s:0", env->px_in);
	snprintf(size_s, sizeof(size_s), "%u", c->size);
	char *argv[] = { NULL, "proxy", "--listen", lis, "--upstream", up, "--io",
			 (char *)sheaf_io_name(c->mode), "--buf-size", size_s, NULL };
	env->pids[1] = spawn(env, PX, argv, out, err);
	return env->pids[1] > 0 ? read_port(*out) : -1;
}

static void source_args(const struct bench_opts *o, const struct bench_cell *c, char *to,
			char *bytes, char *size, char *conns, char **argv)
{
	int n = 0;

	argv[n++] = NULL;
	argv[n++] = "source";
	argv[n++] = "--connect";
	argv[n++] = to;
	argv[n++] = "--bytes";
	argv[n++] = bytes;
	argv[n++] = "--json";
	if (o->rr) {
		argv[n++] = "--rr";
		argv[n++] = size;
		argv[n++] = "--conns";
		argv[n++] = conns;
	}
	argv[n] = NULL;
	snprintf(bytes, 32, "%llu", (unsigned long long)o->bytes);
	snprintf(size, 16, "%u", c->size);
	snprintf(conns, 16, "%u", o->conns);
}

static void collect(struct bench_env *env, const struct bench_opts *o, int so, int xo,
		    int po, struct bench_run *r)
{
	char out[8192];
	int status, sstatus;
	struct rusage ru;

	read_all(xo, out, sizeof(out));
	waitpid(env->pids[2], &sstatus, 0);
	env->pids[2] = 0;
	r->tps = json_num(out, "tps");
	r->p50 = json_num(out, "p50_us");
	r->p99 = json_num(out, "p99_us");
	r->p999 = json_num(out, "p999_us");
	r->ok = WIFEXITED(sstatus) && !WEXITSTATUS(sstatus);
	if (!o->rr) {
		read_all(so, out, sizeof(out));
		waitpid(env->pids[0], &status, 0);
		env->pids[0] = 0;
		r->secs = json_num(out, "seconds");
		r->mbps = json_num(out, "mbps");
		r->ok = r->ok && strstr(out, "\"ok\":true");
	}
	kill(env->pids[1], SIGTERM);
	read_all(po, out, sizeof(out));
	wait4(env->pids[1], &status, 0, &ru);
	env->pids[1] = 0;
	r->cpu = cpu_of(&ru);
	r->bufs_recv = json_num(out, "bufs_per_recv");
	r->bufs_send = json_num(out, "bufs_per_send");
	if (!r->ok)
		snprintf(r->why, sizeof(r->why), "source or sink failed");
}

int bench_run_once(struct bench_env *env, const struct bench_opts *o,
		   const struct bench_cell *c, struct bench_run *r)
{
	char lis[64], to[64], bytes[32], size[16], conns[16], *src[16];
	int so = -1, se = -1, po = -1, pe = -1, xo = -1, xe = -1, port;

	memset(r, 0, sizeof(*r));
	snprintf(lis, sizeof(lis), "%s:0", env->snk_ip);
	char *sink[] = { NULL, "sink", "--listen", lis, "--json",
			 o->rr ? "--echo" : "--conns", o->rr ? NULL : "1", NULL };
	env->pids[0] = spawn(env, SNK, sink, &so, &se);
	port = env->pids[0] > 0 ? read_port(se) : -1;
	if (port > 0)
		port = start_proxy(env, o, c, port, &po, &pe);
	if (port <= 0) {
		snprintf(r->why, sizeof(r->why), "sink or proxy did not start");
	} else {
		snprintf(to, sizeof(to), "%s:%d", env->px_in, port);
		source_args(o, c, to, bytes, size, conns, src);
		env->pids[2] = spawn(env, SRC, src, &xo, &xe);
		collect(env, o, so, xo, po, r);
	}
	kill_all(env);
	for (int *fd = (int[]){ so, se, po, pe, xo, xe, -2 }; *fd != -2; fd++)
		if (*fd >= 0)
			close(*fd);
	return r->ok ? 0 : -1;
}
