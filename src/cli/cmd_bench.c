/*
 * sheaf bench: the seed experiment on this machine. For each buffer size and
 * io mode it starts a sink, a proxy and a source as separate processes (this
 * same binary), measures throughput from the sink's first to last byte and
 * the proxy's CPU, and prints a table; --json and --plot write the runs.
 */
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
	"usage: sheaf bench [options]\n"
	"Runs source -> proxy -> sink on loopback for each buffer size and io mode,\n"
	"and prints runtime, throughput, proxy CPU per GiB, buffers per bundle and\n"
	"the speed-up against ring mode (median of the runs; spread in --json).\n"
	"  --quick            32 B and 4 KiB, ring vs bundle, 32 MiB, 3 runs (make run)\n"
	"  --sizes LIST       buffer sizes, e.g. 32,80,320,1K (default 32,80,320,1K,4K,64K)\n"
	"  --modes LIST       io modes (default ring,bundle,sendmsg,plain)\n"
	"  --bytes N          bytes per run (default 256M)\n"
	"  --runs N           runs per cell (default 3)\n"
	"  --json FILE        write every run as JSON\n"
	"  --plot FILE        throughput against size per mode (gnuplot; .png or .svg)\n"
	"  --topology T       loopback (the only one built so far)\n";

#define MAX_CELLS 16

struct bench_opts {
	uint32_t sizes[MAX_CELLS];
	int modes[MAX_CELLS];
	unsigned nsizes, nmodes, runs;
	uint64_t bytes;
	const char *json, *plot;
};

struct run {
	int ok;
	double secs, mbps, cpu, bufs_recv, bufs_send;
};

static pid_t children[3];

static void kill_children(void)
{
	for (int i = 0; i < 3; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
}

static void on_interrupt(int sig)
{
	kill_children();
	_exit(130);
}

/* Starts `sheaf ARGS...` with stdout (and stderr, if err_fd) on pipes. */
static pid_t spawn(char *const argv[], int *out_fd, int *err_fd)
{
	int out[2], err[2];
	pid_t pid;

	if (pipe(out) || pipe(err))
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(err[0]);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	*out_fd = out[0];
	*err_fd = err[0];
	return pid;
}

/* Reads lines from fd until one contains "listening on HOST:PORT". */
static int read_port(int fd, char *line, size_t len)
{
	FILE *f = fdopen(dup(fd), "r");
	char *p;
	int port = -1;

	while (f && fgets(line, (int)len, f)) {
		if ((p = strstr(line, "listening on ")) && (p = strchr(p + 13, ':'))) {
			port = atoi(p + 1);
			break;
		}
	}
	if (f)
		fclose(f);
	return port;
}

static double json_num(const char *s, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(s, k);
	return p ? strtod(p + strlen(k), NULL) : 0;
}

static void read_all(int fd, char *buf, size_t len)
{
	size_t n = 0;
	ssize_t r;

	while (n + 1 < len && (r = read(fd, buf + n, len - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = 0;
}

static int run_cell(uint32_t size, int mode, uint64_t bytes, struct run *r)
{
	char line[512], out[8192], port_s[16], up[64], lis[] = "127.0.0.1:0";
	char size_s[16], bytes_s[32], to[64];
	int so, se, po, pe, xo, xe, status, port;
	struct rusage ru;

	memset(r, 0, sizeof(*r));
	char *sink[] = { "sheaf", "sink", "--listen", lis, "--conns", "1", "--json", NULL };
	children[0] = spawn(sink, &so, &se);
	if (children[0] < 0 || (port = read_port(se, line, sizeof(line))) <= 0)
		return -1;
	snprintf(up, sizeof(up), "127.0.0.1:%d", port);
	snprintf(size_s, sizeof(size_s), "%u", size);
	char *proxy[] = { "sheaf", "proxy", "--listen", lis, "--upstream", up, "--io",
			  (char *)sheaf_io_name(mode), "--buf-size", size_s, NULL };
	children[1] = spawn(proxy, &po, &pe);
	if (children[1] < 0 || (port = read_port(po, line, sizeof(line))) <= 0)
		return -1;
	snprintf(port_s, sizeof(port_s), "%d", port);
	snprintf(to, sizeof(to), "127.0.0.1:%s", port_s);
	snprintf(bytes_s, sizeof(bytes_s), "%llu", (unsigned long long)bytes);
	char *source[] = { "sheaf", "source", "--connect", to, "--bytes", bytes_s, NULL };
	children[2] = spawn(source, &xo, &xe);
	waitpid(children[2], &status, 0);
	children[2] = 0;
	read_all(so, out, sizeof(out));
	waitpid(children[0], NULL, 0);
	children[0] = 0;
	r->secs = json_num(out, "seconds");
	r->mbps = json_num(out, "mbps");
	r->ok = strstr(out, "\"ok\":true") && WIFEXITED(status) && !WEXITSTATUS(status);
	kill(children[1], SIGTERM);
	read_all(po, out, sizeof(out));
	wait4(children[1], &status, 0, &ru);
	children[1] = 0;
	r->cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	r->bufs_recv = json_num(out, "bufs_per_recv");
	r->bufs_send = json_num(out, "bufs_per_send");
	r->ok = r->ok && WIFEXITED(status) && !WEXITSTATUS(status);
	close(so);
	close(se);
	close(po);
	close(pe);
	close(xo);
	close(xe);
	return r->ok ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(const struct run *runs, unsigned n, size_t off)
{
	double v[64];

	for (unsigned i = 0; i < n; i++)
		v[i] = *(const double *)((const char *)&runs[i] + off);
	qsort(v, n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int parse(int argc, char **argv, struct bench_opts *o)
{
	static const struct option opts[] = {
		{ "quick", no_argument, 0, 'q' },       { "sizes", required_argument, 0, 's' },
		{ "modes", required_argument, 0, 'm' }, { "bytes", required_argument, 0, 'b' },
		{ "runs", required_argument, 0, 'r' },  { "json", required_argument, 0, 'j' },
		{ "plot", required_argument, 0, 'p' },  { "topology", required_argument, 0, 't' },
		{ "help", no_argument, 0, 'h' },        { 0 }
	};
	char **items;
	unsigned n;
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			o->sizes[0] = 32, o->sizes[1] = 4096, o->nsizes = 2;
			o->modes[0] = SHEAF_IO_RING, o->modes[1] = SHEAF_IO_BUNDLE, o->nmodes = 2;
			o->bytes = 32u << 20;
			break;
		case 's': case 'm':
			if (parse_list(optarg, &items, &n) || n > MAX_CELLS) {
				say("bench", "--%s %s: a comma-separated list of at most %d",
				    c == 's' ? "sizes" : "modes", optarg, MAX_CELLS);
				return EXIT_USAGE;
			}
			for (unsigned i = 0; i < n; i++) {
				int mode = sheaf_io_parse(items[i]);

				if (c == 's' && (parse_size(items[i], &v) || !v || v > SHEAF_MAX_BUF_SIZE)) {
					say("bench", "--sizes: bad size '%s' (1 to 1M)", items[i]);
					return EXIT_USAGE;
				}
				if (c == 'm' && mode <= 0) {
					say("bench", "--modes: unknown mode '%s' (bundle, ring, plain, sendmsg)", items[i]);
					return EXIT_USAGE;
				}
				if (c == 's')
					o->sizes[i] = (uint32_t)v;
				else
					o->modes[i] = mode;
			}
			*(c == 's' ? &o->nsizes : &o->nmodes) = n;
			break;
		case 'b':
			if (parse_size(optarg, &o->bytes) || !o->bytes) {
				say("bench", "--bytes %s: not a size", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'r':
			if (parse_u32(optarg, &o->runs) || !o->runs || o->runs > 64) {
				say("bench", "--runs %s: must be 1 to 64", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'j': o->json = optarg; break;
		case 'p': o->plot = optarg; break;
		case 't':
			if (strcmp(optarg, "loopback")) {
				say("bench", "--topology %s: only loopback is built so far", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h': fputs(help, stdout); exit(0);
		default: fputs(help, stderr); return EXIT_USAGE;
		}
	}
	return 0;
}

struct cell {
	uint32_t size;
	int mode;
	struct run runs[64];
	unsigned n;
	double mbps, secs, cpu_gib, brecv, bsend;
};

static void summarize(struct cell *c, uint64_t bytes)
{
	c->mbps = median(c->runs, c->n, offsetof(struct run, mbps));
	c->secs = median(c->runs, c->n, offsetof(struct run, secs));
	c->cpu_gib = median(c->runs, c->n, offsetof(struct run, cpu)) / ((double)bytes / (1 << 30));
	c->brecv = median(c->runs, c->n, offsetof(struct run, bufs_recv));
	c->bsend = median(c->runs, c->n, offsetof(struct run, bufs_send));
}

static void print_table(struct cell *cells, unsigned n, const struct bench_opts *o)
{
	printf("%-8s %7s %11s %9s %10s %9s %9s %8s\n", "mode", "size", "runtime_ms",
	       "Mbit/s", "CPU-s/GiB", "bufs/recv", "bufs/send", "speed-up");
	for (unsigned i = 0; i < n; i++) {
		struct cell *c = &cells[i], *base = NULL;

		for (unsigned j = 0; j < n; j++)
			if (cells[j].size == c->size && cells[j].mode == SHEAF_IO_RING)
				base = &cells[j];
		printf("%-8s %7u %11.0f %9.1f %10.2f %9.1f %9.1f", sheaf_io_name(c->mode), c->size,
		       c->secs * 1000, c->mbps, c->cpu_gib, c->brecv, c->bsend);
		if (base && base->mbps > 0)
			printf(" %7.1fx", c->mbps / base->mbps);
		printf("\n");
	}
	printf("(%u run(s) per cell, median; %llu bytes per run; loopback; %ld cores)\n", o->runs,
	       (unsigned long long)o->bytes, sysconf(_SC_NPROCESSORS_ONLN));
}

static int write_json(struct cell *cells, unsigned n, const struct bench_opts *o)
{
	FILE *f = fopen(o->json, "w");

	if (!f)
		return -errno;
	fprintf(f, "{\"bytes\":%llu,\"topology\":\"loopback\",\"cells\":[\n",
		(unsigned long long)o->bytes);
	for (unsigned i = 0; i < n; i++) {
		struct cell *c = &cells[i];

		fprintf(f, " {\"mode\":\"%s\",\"size\":%u,\"mbps\":%.1f,\"cpu_s_per_gib\":%.3f,"
			"\"bufs_per_recv\":%.1f,\"bufs_per_send\":%.1f,\"runs\":[",
			sheaf_io_name(c->mode), c->size, c->mbps, c->cpu_gib, c->brecv, c->bsend);
		for (unsigned k = 0; k < c->n; k++)
			fprintf(f, "%s{\"seconds\":%.6f,\"mbps\":%.1f,\"proxy_cpu_s\":%.3f,\"ok\":%s}",
				k ? "," : "", c->runs[k].secs, c->runs[k].mbps, c->runs[k].cpu,
				c->runs[k].ok ? "true" : "false");
		fprintf(f, "]}%s\n", i + 1 < n ? "," : "");
	}
	fprintf(f, "]}\n");
	return fclose(f) ? -errno : 0;
}

static int write_plot(struct cell *cells, unsigned n, const struct bench_opts *o)
{
	char data[] = "/tmp/sheaf-bench-XXXXXX";
	int fd = mkstemp(data);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL, *g;
	const char *ext = strrchr(o->plot, '.');
	int ret;

	if (!f)
		return -errno;
	for (unsigned m = 0; m < o->nmodes; m++) {
		fprintf(f, "\"%s\"\n", sheaf_io_name(o->modes[m]));
		for (unsigned i = 0; i < n; i++)
			if (cells[i].mode == o->modes[m])
				fprintf(f, "%u %.1f\n", cells[i].size, cells[i].mbps);
		fprintf(f, "\n\n");
	}
	fclose(f);
	g = popen("gnuplot", "w");
	if (!g) {
		unlink(data);
		return -errno;
	}
	fprintf(g, "set terminal %s size 800,500\nset output '%s'\n",
		ext && !strcmp(ext, ".svg") ? "svg" : "png", o->plot);
	fprintf(g, "set logscale x 2\nset logscale y 10\nset xlabel 'buffer (packet) size, bytes'\n"
		   "set ylabel 'Mbit/s'\nset title 'sheaf proxy on loopback'\nset key left top\n"
		   "plot for [i=0:%u] '%s' index i using 1:2 with linespoints title columnheader(1)\n",
		o->nmodes - 1, data);
	ret = pclose(g);
	unlink(data);
	return ret ? -EIO : 0;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_opts o = { .sizes = { 32, 80, 320, 1024, 4096, 65536 }, .nsizes = 6,
				.modes = { SHEAF_IO_RING, SHEAF_IO_BUNDLE, SHEAF_IO_SENDMSG,
					   SHEAF_IO_PLAIN }, .nmodes = 4, .runs = 3,
				.bytes = 256u << 20 };
	static struct cell cells[MAX_CELLS * 4];
	unsigned n = 0;
	int ret, failed = 0;

	if ((ret = parse(argc, argv, &o)))
		return ret;
	if (o.nsizes * o.nmodes > MAX_CELLS * 4) {
		say("bench", "too many cells (sizes x modes at most %d)", MAX_CELLS * 4);
		return EXIT_USAGE;
	}
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);
	signal(SIGPIPE, SIG_IGN);
	for (unsigned s = 0; s < o.nsizes; s++) {
		for (unsigned m = 0; m < o.nmodes; m++) {
			struct cell *c = &cells[n++];

			c->size = o.sizes[s];
			c->mode = o.modes[m];
			for (unsigned r = 0; r < o.runs; r++) {
				if (isatty(2))
					fprintf(stderr, "\r%s %u B run %u/%u ", sheaf_io_name(c->mode),
						c->size, r + 1, o.runs);
				if (run_cell(c->size, c->mode, o.bytes, &c->runs[c->n++])) {
					kill_children();
					say("bench", "%s at %u B: run %u failed", sheaf_io_name(c->mode),
					    c->size, r + 1);
					failed = 1;
				}
			}
			summarize(c, o.bytes);
		}
	}
	if (isatty(2))
		fprintf(stderr, "\r%40s\r", "");
	print_table(cells, n, &o);
	if (o.json && (ret = write_json(cells, n, &o)))
		say("bench", "--json %s: %s", o.json, strerror(-ret));
	if (o.plot && (ret = write_plot(cells, n, &o)))
		say("bench", "--plot %s: gnuplot failed", o.plot);
	return failed || ret ? 1 : 0;
}
