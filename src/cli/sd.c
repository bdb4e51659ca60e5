/*
 * systemd's two protocols, written out (no libsystemd): socket activation
 * (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; the sockets are
 * descriptors 3, 4, ...) and readiness (sd_notify(3): one datagram to the
 * AF_UNIX socket named by NOTIFY_SOCKET, "@" for the abstract namespace).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy.h"

#define SD_LISTEN_FDS_START 3

/* The i-th of names "a:b:c" into out (empty when there is none). */
static void nth_name(const char *names, int i, char *out, size_t len)
{
	const char *p = names;

	out[0] = 0;
	for (; p && i > 0; i--) {
		p = strchr(p, ':');
		p = p ? p + 1 : NULL;
	}
	if (p)
		snprintf(out, len, "%.*s", (int)strcspn(p, ":"), p);
}

int sd_listen_fds(int *fds, char (*names)[64], int max)
{
	const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
	const char *fdnames = getenv("LISTEN_FDNAMES");
	char *end;
	long p, cnt;

	if (!pid || !n)
		return 0;
	p = strtol(pid, &end, 10);
	if (*end || p != (long)getpid())
		return 0; /* meant for another process (our parent's, say) */
	cnt = strtol(n, &end, 10);
	if (*end || cnt < 0 || cnt > 1024)
		return 0;
	for (long i = 0; i < cnt; i++) {
		int fd = SD_LISTEN_FDS_START + (int)i;

		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (i < max) {
			fds[i] = fd;
			nth_name(fdnames, (int)i, names[i], sizeof(names[i]));
		}
	}
	/* our children must not take them for theirs */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)cnt;
}

int sd_notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	int fd, ret = 0;

	if (!path || !*path)
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = 0; /* abstract: the name is the bytes, no NUL */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static bool any_addr(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	return !memcmp(&((const struct sockaddr_in6 *)ss)->sin6_addr, &in6addr_any,
		       sizeof(in6addr_any));
}

static in_port_t port_of(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port :
					  ((const struct sockaddr_in6 *)ss)->sin6_port;
}

/*
 * The same port, and the same address, or a wildcard on either side: a
 * socket unit's ListenStream=80 is [::]:80 for IPv4 and IPv6 at once, and
 * stands for --listen 0.0.0.0:80 too.
 */
bool sd_fd_matches(int fd, const struct addr *a)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const struct sockaddr_in *x4 = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *x6 = (const struct sockaddr_in6 *)&ss;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&a->ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    port_of(&ss) != port_of(&a->ss) || !port_of(&ss))
		return false;
	if (any_addr(&ss) || any_addr(&a->ss))
		return true;
	if (ss.ss_family != a->ss.ss_family)
		return false;
	return ss.ss_family == AF_INET ? x4->sin_addr.s_addr == a4->sin_addr.s_addr :
					 !memcmp(&x6->sin6_addr, &a6->sin6_addr, 16);
}
