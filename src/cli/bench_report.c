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

/* Per run: CPU-s per 100k requests (rr, rate) or per GiB (stream). */
static void derive(struct bench_cell *c, const struct bench_opts *o)
{
	for (unsigned i = 0; i < c->n; i++) {
		struct bench_run *r = &c->runs[i];
		double reqs = r->tps * r->secs;

		if (bench_rr_like(o))
			r->cpu_per = reqs > 0 ? r->cpu / reqs * 1e5 : 0;
		else
			r->cpu_per = r->cpu / ((double)o->bytes / (1 << 30));
	}
}

#define MED(c, field, lo, hi) median(c, offsetof(struct bench_run, field), lo, hi)

void bench_summarize(struct bench_cell *c, const struct bench_opts *o)
{
	double enters;

	derive(c, o);
	c->mbps = MED(c, mbps, &c->mbps_min, &c->mbps_max);
	c->secs = MED(c, secs, NULL, NULL);
	c->cpu_gib = MED(c, cpu_per, NULL, NULL);
	c->cpu_100k = MED(c, cpu_per, &c->cpu_100k_min, &c->cpu_100k_max);
	c->brecv = MED(c, bufs_recv, NULL, NULL);
	c->bsend = MED(c, bufs_send, NULL, NULL);
	c->tps = MED(c, tps, &c->tps_min, &c->tps_max);
	c->p50 = MED(c, p50, NULL, NULL);
	c->p99 = MED(c, p99, NULL, NULL);
	c->p999 = MED(c, p999, NULL, NULL);
	c->late = MED(c, late, NULL, NULL);
	enters = MED(c, enters, NULL, NULL);
	if (bench_rr_like(o)) {
		double all = MED(c, txns_all, NULL, NULL);

		c->enters_per = all > 0 ? enters / all : 0;
	} else {
		c->enters_per = enters / ((double)o->bytes / (1 << 20));
	}
	if (c->sys.ok && c->sys.tps > 0) {
		c->sys_per = c->sys.sys / c->sys.tps;
		c->sys_enters_per = c->sys.sys_enters / c->sys.tps;
	}
}

static const struct bench_cell *ring_of(const struct bench_cell *cells, unsigned n,
					const struct bench_cell *c)
{
	for (unsigned j = 0; j < n; j++)
		if (cells[j].size == c->size && cells[j].conns == c->conns && !cells[j].peer &&
		    cells[j].mode == SHEAF_IO_RING)
			return &cells[j];
	return NULL;
}

/* The plain HAProxy cell beside c (same size and connection count). */
static const struct bench_cell *haproxy_of(const struct bench_cell *cells, unsigned n,
					   const struct bench_cell *c)
{
	for (unsigned j = 0; j < n; j++)
		if (cells[j].size == c->size && cells[j].conns == c->conns && cells[j].peer &&
		    !cells[j].reference && !strcmp(cells[j].peer, "haproxy"))
			return &cells[j];
	return NULL;
}

/*
 * c against HAProxy run by run (the runs of a group were interleaved, so
 * run k of both saw the same moment of the machine): the median of the
 * ratios of a field; 0 when there is nothing to compare.
 */
static double paired(const struct bench_cell *c, const struct bench_cell *h, size_t off)
{
	struct bench_cell tmp = { .n = 0 };

	if (!h || h == c)
		return 0;
	for (unsigned k = 0; k < c->n && k < h->n; k++) {
		double a = *(const double *)((const char *)&c->runs[k] + off);
		double b = *(const double *)((const char *)&h->runs[k] + off);

		if (c->runs[k].ok && h->runs[k].ok && b > 0) {
			tmp.runs[tmp.n].ok = 1;
			tmp.runs[tmp.n++].cpu_per = a / b;
		}
	}
	return median(&tmp, offsetof(struct bench_run, cpu_per), NULL, NULL);
}

static void fmt_ratio(char *out, size_t len, double v)
{
	if (v > 0)
		snprintf(out, len, "%.2f", v);
	else
		snprintf(out, len, "-");
}

static void spread(char *out, size_t len, double med, double lo, double hi)
{
	if (med > 0) /* half the range of the runs, relative to the median */
		snprintf(out, len, "%.0f%%", (hi - lo) / 2 / med * 100);
	else
		snprintf(out, len, "-");
}

static void rr_table(FILE *f, const struct bench_opts *o, const struct bench_cell *cells,
		     unsigned n, bool md)
{
	fprintf(f, md ? "| proxy | size | msg | conns | offered/s | req/s | spread | "
			"CPU-s/100k req | spread | req/s x haproxy | CPU x haproxy | "
			"enters/req | syscalls/req | p50 us | p99 us | p99.9 us |\n"
			"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" :
			"%-18s %6s %5s %5s %9s %9s %6s %8s %6s %8s %8s %7s %7s %9s %9s %9s\n",
		"proxy", "size", "msg", "conns", "offered", "req/s", "spread", "CPU/100k", "spread",
		"tps_xhap", "cpu_xhap", "ent/req", "sys/req", "p50_us", "p99_us", "p99.9_us");
	for (unsigned i = 0; i < n; i++) {
		const struct bench_cell *c = &cells[i];
		const struct bench_cell *h = c->reference ? NULL : haproxy_of(cells, n, c);
		char sp1[16], sp2[16], rt[16], rc[16], en[16], sy[16], off[16];

		spread(sp1, sizeof(sp1), c->tps, c->tps_min, c->tps_max);
		spread(sp2, sizeof(sp2), c->cpu_100k, c->cpu_100k_min, c->cpu_100k_max);
		fmt_ratio(rt, sizeof(rt), paired(c, h, offsetof(struct bench_run, tps)));
		fmt_ratio(rc, sizeof(rc), paired(c, h, offsetof(struct bench_run, cpu_per)));
		fmt_ratio(en, sizeof(en), c->peer ? c->sys_enters_per : c->enters_per);
		fmt_ratio(sy, sizeof(sy), c->sys_per);
		snprintf(off, sizeof(off), c->rate > 0 && !c->reference ? "%.0f" : "-", c->rate);
		fprintf(f, md ? "| %s | %u | %u | %u | %s | %.0f | ±%s | %.3f | ±%s | %s | %s | %s | %s "
				"| %.1f | %.1f | %.1f |\n" :
				"%-18s %6u %5u %5u %9s %9.0f %6s %8.3f %6s %8s %8s %7s %7s %9.1f %9.1f "
				"%9.1f\n",
			c->name, c->size, bench_msg_size(o, c), c->conns, off, c->tps, sp1,
			c->cpu_100k, sp2, rt, rc, en, sy, c->p50, c->p99, c->p999);
	}
}

/* One table, as text (md = false) or Markdown. */
static void table(FILE *f, const struct bench_opts *o, const struct bench_cell *cells,
		  unsigned n, bool md)
{
	const char *sep = md ? " | " : "  ";

	if (bench_rr_like(o)) {
		rr_table(f, o, cells, n, md);
		return;
	}
	if (md)
		fprintf(f, "| mode | size | conns | runtime ms | Mbit/s | spread | %% link | CPU-s/GiB | "
			   "Mbit/s x haproxy | CPU x haproxy | enters/MiB | bufs/recv | bufs/send | "
			   "speed-up |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	else
		fprintf(f, "%-15s%s%7s%s%5s%s%10s%s%9s%s%6s%s%6s%s%9s%s%8s%s%8s%s%8s%s%9s%s%9s%s%8s\n",
			"mode", sep, "size", sep, "conns", sep, "runtime_ms", sep, "Mbit/s", sep,
			"spread", sep, "%link", sep, "CPU-s/GiB", sep, "mb_xhap", sep, "cpu_xhap", sep,
			"ent/MiB", sep, "bufs/recv", sep, "bufs/send", sep, "speed-up");
	for (unsigned i = 0; i < n; i++) {
		const struct bench_cell *c = &cells[i], *base = ring_of(cells, n, c);
		const struct bench_cell *h = haproxy_of(cells, n, c);
		char link[16] = "-", speed[16] = "-", brecv[16] = "-", bsend[16] = "-";
		char sp[16], ent[16] = "-", rm[16], rc[16];

		if (o->link_mbps > 0)
			snprintf(link, sizeof(link), "%.0f", c->mbps / o->link_mbps * 100);
		if (base && base->mbps > 0)
			snprintf(speed, sizeof(speed), "%.1fx", c->mbps / base->mbps);
		spread(sp, sizeof(sp), c->mbps, c->mbps_min, c->mbps_max);
		if (!c->peer) { /* peers have no such counters */
			snprintf(brecv, sizeof(brecv), "%.1f", c->brecv);
			snprintf(bsend, sizeof(bsend), "%.1f", c->bsend);
			snprintf(ent, sizeof(ent), "%.1f", c->enters_per);
		}
		fmt_ratio(rm, sizeof(rm), paired(c, h, offsetof(struct bench_run, mbps)));
		fmt_ratio(rc, sizeof(rc), paired(c, h, offsetof(struct bench_run, cpu_per)));
		fprintf(f, md ? "| %s | %u | %u | %.0f | %.1f | ±%s | %s | %.2f | %s | %s | %s | %s | %s "
				"| %s |\n" :
				"%-15s  %7u  %5u  %10.0f  %9.1f  %6s  %6s  %9.2f  %8s  %8s  %8s  %9s  %9s  "
				"%8s\n",
			c->name, c->size, c->conns, c->secs * 1000, c->mbps, sp, link, c->cpu_gib, rm,
			rc, ent, brecv, bsend, speed);
	}
}

/* The seed's second claim: the smallest size at which a mode fills the link. */
static void fill_sizes(FILE *f, const struct bench_opts *o, const struct bench_cell *cells,
		       unsigned n, bool md)
{
	if (o->link_mbps <= 0 || bench_rr_like(o))
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

static const char *workload_name(const struct bench_opts *o)
{
	return o->workload == BENCH_RR ? "rr" : o->workload == BENCH_RATE ? "rate" : "stream";
}

static void footer(FILE *f, const struct bench_opts *o)
{
	fprintf(f, "(%u run(s) per cell, median, spread = half the range of the runs; %s; %llu "
		   "bytes per run; %s%s%s; %ld cores)\n",
		o->runs, workload_name(o), (unsigned long long)o->bytes,
		o->netns ? "netns" : "loopback", o->link_rate ? ", link " : "",
		o->link_rate ? o->link_rate : "", sysconf(_SC_NPROCESSORS_ONLN));
}

static void json_runs(FILE *f, const struct bench_cell *c)
{
	for (unsigned k = 0; k < c->n; k++) {
		const struct bench_run *r = &c->runs[k];

		fprintf(f, "%s{\"seconds\":%.6f,\"mbps\":%.1f,\"proxy_cpu_s\":%.3f,\"tps\":%.0f,"
			"\"p99_us\":%.1f,\"enters\":%.0f,\"transactions_all\":%.0f,\"late\":%.0f,"
			"\"ok\":%s}", k ? "," : "", r->secs, r->mbps, r->cpu, r->tps, r->p99,
			r->enters, r->txns_all, r->late, r->ok ? "true" : "false");
	}
}

static int write_json(const struct bench_opts *o, const struct bench_cell *cells, unsigned n)
{
	FILE *f = fopen(o->json, "w");

	if (!f)
		return -errno;
	fprintf(f, "{\"workload\":\"%s\",\"bytes\":%llu,\"topology\":\"%s\",\"link_rate\":\"%s\","
		"\"duration\":%g,\"warmup\":%g,\"cells\":[\n", workload_name(o),
		(unsigned long long)o->bytes, o->netns ? "netns" : "loopback",
		o->link_rate ? o->link_rate : "", o->duration, o->warmup);
	for (unsigned i = 0; i < n; i++) {
		const struct bench_cell *c = &cells[i];

		fprintf(f, " {\"name\":\"%s\",\"peer\":%s,\"size\":%u,\"msg_size\":%u,\"conns\":%u,"
			"\"offered_rate\":%.1f,\"reference\":%s,\"mbps\":%.1f,\"mbps_min\":%.1f,"
			"\"mbps_max\":%.1f,\"cpu_s_per_gib\":%.3f,\"cpu_s_per_100k\":%.4f,"
			"\"enters_per\":%.3f,\"syscalls_per\":%.3f,\"sys_enters_per\":%.3f,"
			"\"bufs_per_recv\":%.1f,\"bufs_per_send\":%.1f,\"tps\":%.0f,\"p50_us\":%.1f,"
			"\"p99_us\":%.1f,\"p999_us\":%.1f,\"runs\":[", c->name,
			c->peer ? "true" : "false", c->size, bench_msg_size(o, c), c->conns, c->rate,
			c->reference ? "true" : "false", c->mbps, c->mbps_min, c->mbps_max,
			bench_rr_like(o) ? 0 : c->cpu_gib, bench_rr_like(o) ? c->cpu_100k : 0,
			c->enters_per, c->sys_per, c->sys_enters_per, c->brecv, c->bsend, c->tps,
			c->p50, c->p99, c->p999);
		json_runs(f, c);
		fprintf(f, "]}%s\n", i + 1 < n ? "," : "");
	}
	fprintf(f, "]}\n");
	return fclose(f) ? -errno : 0;
}

/* A plot's series: one per name, and per size when there are several. */
static void series_label(const struct bench_opts *o, const struct bench_cell *c, char *out,
			 size_t len)
{
	if (o->nconns > 1 && o->nsizes > 1)
		snprintf(out, len, "%s %u B", c->name, c->size);
	else
		snprintf(out, len, "%s", c->name);
}

/* Data blocks for gnuplot: x = connections (several) or size, y = CPU per
 * request or GiB (several connection counts), else throughput. */
static int plot_data(FILE *f, const struct bench_opts *o, const struct bench_cell *cells,
		     unsigned n)
{
	char names[BENCH_MAX * BENCH_MAX][48], label[48], other[48];
	int nn = 0;
	bool by_conns = o->nconns > 1;

	for (unsigned i = 0; i < n && nn < BENCH_MAX * BENCH_MAX; i++) {
		bool seen = false;

		if (cells[i].reference)
			continue;
		series_label(o, &cells[i], label, sizeof(label));
		for (int k = 0; k < nn; k++)
			seen |= !strcmp(names[k], label);
		if (seen)
			continue;
		snprintf(names[nn++], sizeof(names[0]), "%s", label);
		fprintf(f, "\"%s\"\n", label);
		for (unsigned j = 0; j < n; j++) {
			const struct bench_cell *c = &cells[j];

			series_label(o, c, other, sizeof(other));
			if (c->reference || strcmp(other, label))
				continue;
			fprintf(f, "%u %.4f\n", by_conns ? c->conns : c->size, by_conns ?
				(bench_rr_like(o) ? c->cpu_100k : c->cpu_gib) :
				(bench_rr_like(o) ? c->tps : c->mbps));
		}
		fprintf(f, "\n\n");
	}
	return nn;
}

static int write_plot(const struct bench_opts *o, const struct bench_cell *cells, unsigned n)
{
	char data[] = "/tmp/sheaf-bench-XXXXXX";
	int fd = mkstemp(data), nn;
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL, *g;
	const char *ext = strrchr(o->plot, '.'), *ylabel;
	bool by_conns = o->nconns > 1;

	if (!f)
		return -errno;
	nn = plot_data(f, o, cells, n);
	fclose(f);
	g = popen("gnuplot", "w");
	if (!g)
		return -errno;
	ylabel = by_conns ? (bench_rr_like(o) ? "proxy CPU-seconds per 100k requests" :
				"proxy CPU-seconds per GiB") :
		 bench_rr_like(o) ? "requests/s" : "Mbit/s";
	fprintf(g, "set terminal %s size 800,500\nset output '%s'\n",
		ext && !strcmp(ext, ".svg") ? "svg" : "pngcairo", o->plot);
	fprintf(g, "set logscale x %d\n%sset xlabel '%s'\nset ylabel '%s'\n"
		   "set title 'sheaf bench, %s, %s%s%s'\nset key left top\nset grid\n"
		   "plot for [i=0:%d] '%s' index i using 1:2 with linespoints title columnheader(1)\n",
		by_conns ? 10 : 2, by_conns ? "set yrange [0:*]\n" : "set logscale y 10\n",
		by_conns ? "connections" : "buffer (packet) size, bytes", ylabel, workload_name(o),
		o->netns ? "netns" : "loopback", o->link_rate ? ", link " : "",
		o->link_rate ? o->link_rate : "", nn - 1, data);
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
	fprintf(f, "## %s, %s%s%s, ",
		o->workload == BENCH_RR ? "Request/response, closed loop" :
		o->workload == BENCH_RATE ? "Request/response, open loop" : "Streaming",
		o->netns ? "three network namespaces" : "loopback", o->link_rate ? ", link " : "",
		o->link_rate ? o->link_rate : "");
	for (unsigned i = 0; i < o->nconns; i++)
		fprintf(f, "%s%u", i ? (i + 1 < o->nconns ? ", " : " and ") : "", o->conns[i]);
	fprintf(f, " connection%s\n\nCommand: `sheaf bench", o->nconns > 1 || o->conns[0] > 1 ? "s" : "");
	for (int i = 1; i < argc; i++)
		fprintf(f, " %s", argv[i]);
	fprintf(f, "`  \nKernel %s, %s, %ld cores, %s.  \n%u run(s) per cell (median), ",
		u.release, cpu, sysconf(_SC_NPROCESSORS_ONLN), date, o->runs);
	if (bench_rr_like(o) && o->duration)
		fprintf(f, "each measured for %g s after %g s of warm-up.\n\n", o->duration,
			o->warmup);
	else
		fprintf(f, "%llu bytes per run%s.\n\n", (unsigned long long)o->bytes,
			bench_rr_like(o) ? " (requests)" : "");
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
