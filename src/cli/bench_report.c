/* sheaf bench: medians, the table, JSON, the plot and the Markdown page. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "bench.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median over the successful runs of one field of struct bench_run. */
static double median(const struct bench_cell *c, size_t off, double *lo, double *hi)
{
	double v[BENCH_RUNS];
	unsigned n = 0;

	for (unsigned i = 0; i < c->n; i++)
		if (c->runs[i].ok)
			v[n++] = *(const double *)((const char *)&c->runs[i] + off);
	if (!n)
		return 0;
	qsort(v, n, sizeof(double), cmp_double);
	if (lo)
		*lo = v[0], *hi = v[n - 1];
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_summarize(struct bench_cell *c, const struct bench_opts *o)
{
	c->mbps = median(c, offsetof(struct bench_run, mbps), &c->mbps_min, &c->mbps_max);
	c->secs = median(c, offsetof(struct bench_run, secs), NULL, NULL);
	c->cpu_gib = median(c, offsetof(struct bench_run, cpu), NULL, NULL) /
		     ((double)o->bytes / (1 << 30));
	c->brecv = median(c, offsetof(struct bench_run, bufs_recv), NULL, NULL);
	c->bsend = median(c, offsetof(struct bench_run, bufs_send), NULL, NULL);
	c->tps = median(c, offsetof(struct bench_run, tps), NULL, NULL);
	c->p50 = median(c, offsetof(struct bench_run, p50), NULL, NULL);
	c->p99 = median(c, offsetof(struct bench_run, p99), NULL, NULL);
	c->p999 = median(c, offsetof(struct bench_run, p999), NULL, NULL);
}

static const struct bench_cell *ring_of(const struct bench_cell *cells, unsigned n,
					uint32_t size)
{
	for (unsigned j = 0; j < n; j++)
		if (cells[j].size == size && !cells[j].peer && cells[j].mode == SHEAF_IO_RING)
			return &cells[j];
	return NULL;
}

/* One table, as text (md = false) or Markdown. */
static void table(FILE *f, const struct bench_opts *o, const struct bench_cell *cells,
		  unsigned n, bool md)
{
	const char *sep = md ? " | " : "  ";

	if (o->rr) {
		fprintf(f, md ? "| mode | size | conns | tps | p50 us | p99 us | p99.9 us |\n"
				"|---|---|---|---|---|---|---|\n" :
				"%-15s %7s %6s %10s %9s %9s %9s\n",
			"mode", "size", "conns", "tps", "p50_us", "p99_us", "p99.9_us");
		for (unsigned i = 0; i < n; i++)
			fprintf(f, md ? "| %s | %u | %u | %.0f | %.1f | %.1f | %.1f |\n" :
					"%-15s %7u %6u %10.0f %9.1f %9.1f %9.1f\n",
				cells[i].name, cells[i].size, o->conns, cells[i].tps, cells[i].p50,
				cells[i].p99, cells[i].p999);
		return;
	}
	if (md)
		fprintf(f, "| mode | size | runtime ms | Mbit/s | spread | %% link | CPU-s/GiB | "
			   "bufs/recv | bufs/send | speed-up |\n"
			   "|---|---|---|---|---|---|---|---|---|---|\n");
	else
		fprintf(f, "%-15s%s%7s%s%10s%s%9s%s%6s%s%6s%s%9s%s%9s%s%9s%s%8s\n", "mode", sep,
			"size", sep, "runtime_ms", sep, "Mbit/s", sep, "spread", sep, "%link", sep,
			"CPU-s/GiB", sep, "bufs/recv", sep, "bufs/send", sep, "speed-up");
	for (unsigned i = 0; i < n; i++) {
		const struct bench_cell *c = &cells[i], *base = ring_of(cells, n, c->size);
		char link[16] = "-", speed[16] = "-", brecv[16] = "-", bsend[16] = "-";
		char spread[16] = "-";

		if (o->link_mbps > 0)
			snprintf(link, sizeof(link), "%.0f", c->mbps / o->link_mbps * 100);
		if (base && base->mbps > 0)
			snprintf(speed, sizeof(speed), "%.1fx", c->mbps / base->mbps);
		if (c->mbps > 0) /* half the range of the runs, relative to the median */
			snprintf(spread, sizeof(spread), "%.0f%%",
				 (c->mbps_max - c->mbps_min) / 2 / c->mbps * 100);
		if (!c->peer) { /* peers have no such counters */
			snprintf(brecv, sizeof(brecv), "%.1f", c->brecv);
			snprintf(bsend, sizeof(bsend), "%.1f", c->bsend);
		}
		fprintf(f, md ? "| %s | %u | %.0f | %.1f | ±%s | %s | %.2f | %s | %s | %s |\n" :
				"%-15s  %7u  %10.0f  %9.1f  %6s  %6s  %9.2f  %9s  %9s  %8s\n",
			c->name, c->size, c->secs * 1000, c->mbps, spread, link, c->cpu_gib, brecv,
			bsend, speed);
	}
}

/* The seed's second claim: the smallest size at which a mode fills the link. */
static void fill_sizes(FILE *f, const struct bench_opts *o, const struct bench_cell *cells,
		       unsigned n, bool md)
{
	if (o->link_mbps <= 0 || o->rr)
		return;
	fprintf(f, "%s95%% of %s reached at:", md ? "\n" : "", o->link_rate);
	for (unsigned m = 0; m < o->nmodes; m++) {
		uint32_t best = 0;

		for (unsigned i = 0; i < n; i++)
			if (!cells[i].peer && cells[i].mode == o->modes[m] &&
			    cells[i].mbps >= 0.95 * o->link_mbps && (!best || cells[i].size < best))
				best = cells[i].size;
		if (best)
			fprintf(f, " %s %u B;", sheaf_io_name(o->modes[m]), best);
		else
			fprintf(f, " %s never;", sheaf_io_name(o->modes[m]));
	}
	fprintf(f, "\n");
}

static void footer(FILE *f, const struct bench_opts *o)
{
	fprintf(f, "(%u run(s) per cell, median, spread = half the range of the runs; %llu bytes "
		   "per run; %s%s%s; %ld cores)\n",
		o->runs, (unsigned long long)o->bytes, o->netns ? "netns" : "loopback",
		o->link_rate ? ", link " : "", o->link_rate ? o->link_rate : "",
		sysconf(_SC_NPROCESSORS_ONLN));
}

static int write_json(const struct bench_opts *o, const struct bench_cell *cells, unsigned n)
{
	FILE *f = fopen(o->json, "w");

	if (!f)
		return -errno;
	fprintf(f, "{\"workload\":\"%s\",\"bytes\":%llu,\"topology\":\"%s\",\"link_rate\":\"%s\","
		"\"cells\":[\n", o->rr ? "rr" : "stream", (unsigned long long)o->bytes,
		o->netns ? "netns" : "loopback", o->link_rate ? o->link_rate : "");
	for (unsigned i = 0; i < n; i++) {
		const struct bench_cell *c = &cells[i];

		fprintf(f, " {\"name\":\"%s\",\"peer\":%s,\"size\":%u,\"mbps\":%.1f,"
			"\"mbps_min\":%.1f,\"mbps_max\":%.1f,\"cpu_s_per_gib\":%.3f,"
			"\"bufs_per_recv\":%.1f,\"bufs_per_send\":%.1f,\"tps\":%.0f,\"p50_us\":%.1f,"
			"\"p99_us\":%.1f,\"p999_us\":%.1f,\"runs\":[", c->name, c->peer ? "true" : "false",
			c->size, c->mbps, c->mbps_min, c->mbps_max, c->cpu_gib, c->brecv, c->bsend,
			c->tps, c->p50, c->p99, c->p999);
		for (unsigned k = 0; k < c->n; k++)
			fprintf(f, "%s{\"seconds\":%.6f,\"mbps\":%.1f,\"proxy_cpu_s\":%.3f,\"tps\":%.0f,"
				"\"ok\":%s}", k ? "," : "", c->runs[k].secs, c->runs[k].mbps,
				c->runs[k].cpu, c->runs[k].tps, c->runs[k].ok ? "true" : "false");
		fprintf(f, "]}%s\n", i + 1 < n ? "," : "");
	}
	fprintf(f, "]}\n");
	return fclose(f) ? -errno : 0;
}

static int write_plot(const struct bench_opts *o, const struct bench_cell *cells, unsigned n)
{
	char data[] = "/tmp/sheaf-bench-XXXXXX", names[BENCH_MAX * 2][24];
	int fd = mkstemp(data), nn = 0;
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL, *g;
	const char *ext = strrchr(o->plot, '.');

	if (!f)
		return -errno;
	for (unsigned i = 0; i < n; i++) { /* one data block per mode or peer */
		bool seen = false;

		for (int k = 0; k < nn; k++)
			seen |= !strcmp(names[k], cells[i].name);
		if (seen || nn == BENCH_MAX * 2)
			continue;
		snprintf(names[nn++], sizeof(names[0]), "%s", cells[i].name);
		fprintf(f, "\"%s\"\n", cells[i].name);
		for (unsigned j = 0; j < n; j++)
			if (!strcmp(cells[j].name, cells[i].name))
				fprintf(f, "%u %.1f\n", cells[j].size, o->rr ? cells[j].tps : cells[j].mbps);
		fprintf(f, "\n\n");
	}
	fclose(f);
	g = popen("gnuplot", "w");
	if (!g)
		return -errno;
	fprintf(g, "set terminal %s size 800,500\nset output '%s'\n",
		ext && !strcmp(ext, ".svg") ? "svg" : "pngcairo", o->plot);
	fprintf(g, "set logscale x 2\nset logscale y 10\nset xlabel 'buffer (packet) size, bytes'\n"
		   "set ylabel '%s'\nset title 'sheaf bench, %s%s%s'\nset key left top\n"
		   "plot for [i=0:%d] '%s' index i using 1:2 with linespoints title columnheader(1)\n",
		o->rr ? "transactions/s" : "Mbit/s", o->netns ? "netns" : "loopback",
		o->link_rate ? ", link " : "", o->link_rate ? o->link_rate : "", nn - 1, data);
	int ret = pclose(g);

	unlink(data);
	return ret ? -EIO : 0;
}

static void cpu_model(char *out, size_t len)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];

	snprintf(out, len, "unknown CPU");
	while (f && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && p) {
			snprintf(out, len, "%s", p + 2);
			out[strcspn(out, "\n")] = 0;
			break;
		}
	}
	if (f)
		fclose(f);
}

static int write_markdown(const struct bench_opts *o, const struct bench_cell *cells,
			  unsigned n, int argc, char **argv)
{
	FILE *f = fopen(o->markdown, "w");
	struct utsname u;
	char cpu[128], date[32];
	time_t t = time(NULL);

	if (!f)
		return -errno;
	uname(&u);
	cpu_model(cpu, sizeof(cpu));
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
	fprintf(f, "## %s, %s%s%s\n\nCommand: `sheaf bench", o->rr ? "Request/response" : "Streaming",
		o->netns ? "three network namespaces" : "loopback", o->link_rate ? ", link " : "",
		o->link_rate ? o->link_rate : "");
	for (int i = 1; i < argc; i++)
		fprintf(f, " %s", argv[i]);
	fprintf(f, "`  \nKernel %s, %s, %ld cores, %s.  \n%u run(s) per cell (median), "
		"%llu bytes per run%s.\n\n", u.release, cpu, sysconf(_SC_NPROCESSORS_ONLN), date,
		o->runs, (unsigned long long)o->bytes, o->rr ? " (requests)" : ", one connection");
	table(f, o, cells, n, true);
	fill_sizes(f, o, cells, n, true);
	fprintf(f, "\n");
	return fclose(f) ? -errno : 0;
}

void bench_report(const struct bench_opts *o, struct bench_cell *cells, unsigned n,
		  int argc, char **argv)
{
	int ret;

	table(stdout, o, cells, n, false);
	fill_sizes(stdout, o, cells, n, false);
	footer(stdout, o);
	if (o->json && (ret = write_json(o, cells, n)))
		say("bench", "--json %s: %s", o->json, strerror(-ret));
	if (o->plot && (ret = write_plot(o, cells, n)))
		say("bench", "--plot %s: gnuplot failed", o->plot);
	if (o->markdown && (ret = write_markdown(o, cells, n, argc, argv)))
		say("bench", "--markdown %s: %s", o->markdown, strerror(-ret));
}
