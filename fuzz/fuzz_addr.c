/*
 * libFuzzer harness for parse_addr (src/cli/args.c): HOST:PORT and
 * [IPv6]:PORT. The input, cut at its first NUL, is one argument. Host
 * names are never looked up (fuzz/no_dns.c: numeric hosts only). By hand:
 *
 *   make fuzz-bin && build-fuzz/fuzz_addr -dict=fuzz/addr.dict \
 *       -max_total_time=60 fuzz/corpus/addr
 *
 * Checks, besides memory errors and undefined behaviour:
 *  - parse_addr and parse_addr_numeric agree; the answer is 0, -EINVAL,
 *    -ERANGE or -ENOENT;
 *  - an accepted address has no white space or control byte, its port is the
 *    digits after the last ':', its text is the input;
 *  - printed back (getnameinfo, numeric) it parses to the same address;
 *  - a sign or a space put before the port makes it -EINVAL.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static uint16_t port_of(const struct addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

static void round_trip(const struct addr *a)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV], text[NI_MAXHOST + NI_MAXSERV + 4];
	struct addr b;

	CHECK(!getnameinfo((const struct sockaddr *)&a->ss, a->len, host, sizeof(host), serv,
			   sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV));
	snprintf(text, sizeof(text), a->ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host,
		 serv);
	if (strlen(text) >= 128)
		return; /* a long scope name: over the limit of the text field */
	CHECK(parse_addr_numeric(text, &b) == 0);
	CHECK(b.len == a->len && !memcmp(&b.ss, &a->ss, a->len));
}

/* The accepted input with `ins` put in front of its port: never accepted. */
static void spoiled(const char *s, const char *ins)
{
	const char *colon = strrchr(s, ':');
	size_t head = (size_t)(colon - s) + 1;
	char *t = malloc(strlen(s) + strlen(ins) + 1);
	struct addr b;

	if (!t)
		return;
	memcpy(t, s, head);
	strcpy(t + head, ins);
	strcat(t, colon + 1);
	CHECK(parse_addr_numeric(t, &b) == -EINVAL);
	free(t);
}

static void accepted(const char *s, const struct addr *a)
{
	const char *colon = strrchr(s, ':');
	uint64_t port = 0;

	CHECK(a->ss.ss_family == AF_INET || a->ss.ss_family == AF_INET6);
	CHECK(a->len == (a->ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) :
			 sizeof(struct sockaddr_in6)));
	CHECK(!strcmp(a->text, s));
	for (const char *p = s; *p; p++)
		CHECK((unsigned char)*p > ' ' && (unsigned char)*p < 0x7f);
	CHECK(colon && colon[1]);
	for (const char *p = colon + 1; *p; p++) {
		CHECK(*p >= '0' && *p <= '9');
		port = port * 10 + (uint64_t)(*p - '0');
		CHECK(port <= 65535);
	}
	CHECK(port_of(a) == port);
	round_trip(a);
	spoiled(s, "+");
	spoiled(s, " ");
	spoiled(s, "-");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len = strnlen((const char *)data, size);
	char *s = malloc(len + 1); /* exactly: ASan sees any read past the NUL */
	struct addr a, b;
	int err, err2;

	if (!s)
		return 0;
	memcpy(s, data, len);
	s[len] = 0;
	err = parse_addr(s, &a); /* numeric only here: fuzz/no_dns.c */
	err2 = parse_addr_numeric(s, &b);
	CHECK(err == err2);
	CHECK(err == 0 || err == -EINVAL || err == -ERANGE || err == -ENOENT);
	if (!err) {
		CHECK(a.len == b.len && !memcmp(&a.ss, &b.ss, a.len));
		accepted(s, &a);
	}
	free(s);
	return 0;
}
