/*
 * --log: one line per connection that ended, after HAProxy's tcplog:
 *
 *   sheaf proxy: conn CLIENT [DATE] FRONTEND UPSTREAM Tc/Tt BYTES_IN BYTES_OUT STATE
 *
 * (the fields are described in sheaf proxy --help). One fprintf per line:
 * the lines of several threads never mix.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "proxy.h"

/* "1.2.3.4:5", "[::1]:5", or "-" when unknown. */
static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(s4->sin_port));
	} else {
		snprintf(out, len, "-");
	}
}

/* Whole milliseconds from a to b (now_sec clock); -1 when b is 0: never. */
static long long ms_between(double a, double b)
{
	return b ? (long long)((b - a) * 1000.0) : -1;
}

double wall_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void log_conn(FILE *out, const struct conn_end *e, double now_mono, double now_wall)
{
	char client[INET6_ADDRSTRLEN + 10], date[40];
	double at = now_wall - (now_mono - e->accepted); /* when it was accepted */
	time_t sec = (time_t)at;
	struct tm tm;

	addr_text(e->client, client, sizeof(client));
	localtime_r(&sec, &tm);
	strftime(date, sizeof(date), "%d/%b/%Y:%H:%M:%S", &tm);
	fprintf(out, "sheaf proxy: conn %s [%s.%03d] %s %s %lld/%lld %llu %llu %s\n", client, date,
		(int)((at - (double)sec) * 1000.0), e->fe->name,
		e->upstream ? e->upstream : "<NOSRV>", ms_between(e->accepted, e->connected),
		ms_between(e->accepted, e->ended), (unsigned long long)e->bytes_in,
		(unsigned long long)e->bytes_out, e->state);
}
