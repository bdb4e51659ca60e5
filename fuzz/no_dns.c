/*
 * Linked into every harness with -Wl,--wrap=getaddrinfo: the CLI's calls to
 * getaddrinfo come here and go on with AI_NUMERICHOST, so that a fuzzed
 * host name is "not found" at once instead of a DNS query (seconds each,
 * and the answer would depend on the network). Numeric hosts still go
 * through the real getaddrinfo (and ASan's interceptor).
 */
#include <netdb.h>
#include <string.h>

int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);

int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res)
{
	struct addrinfo h;

	memset(&h, 0, sizeof(h));
	if (hints)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	return __real_getaddrinfo(node, service, &h, res);
}
