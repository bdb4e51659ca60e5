/* The PROXY protocol, v1 and v2: two builders and one parser (proxy_proto.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "proxy_proto.h"

static const uint8_t v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

#define V2_HDR     16   /* signature, version/command, protocol, length */
#define V2_LOCAL   0x20 /* version 2, command LOCAL */
#define V2_PROXY   0x21 /* version 2, command PROXY */
#define V2_TCP4    0x11 /* AF_INET, STREAM */
#define V2_TCP6    0x21 /* AF_INET6, STREAM */
#define TLV_CRC32C 0x03

/* ---- socket addresses ---------------------------------------------------- */

/* AF_INET or AF_INET6 when src and dst are both of it, else AF_UNSPEC. */
static int ip_family(const struct sockaddr *src, const struct sockaddr *dst)
{
	if (!src || !dst || src->sa_family != dst->sa_family)
		return AF_UNSPEC;
	if (src->sa_family != AF_INET && src->sa_family != AF_INET6)
		return AF_UNSPEC;
	return src->sa_family;
}

static const void *ip_bytes(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return &((const struct sockaddr_in *)sa)->sin_addr;
	return &((const struct sockaddr_in6 *)sa)->sin6_addr;
}

/* In network order. */
static uint16_t ip_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_port;
	return ((const struct sockaddr_in6 *)sa)->sin6_port;
}

/* Makes ss a `family` address; returns where its address bytes go. */
static void *ss_addr(struct sockaddr_storage *ss, int family)
{
	ss->ss_family = family;
	if (family == AF_INET)
		return &((struct sockaddr_in *)ss)->sin_addr;
	return &((struct sockaddr_in6 *)ss)->sin6_addr;
}

/* `port` in host order. */
static void ss_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* ---- builders ------------------------------------------------------------ */

int pp_build_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t cap)
{
	char line[128], s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int family = ip_family(src, dst);
	int n;

	if (family == AF_UNSPEC) {
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	} else {
		if (!inet_ntop(family, ip_bytes(src), s, sizeof(s)) ||
		    !inet_ntop(family, ip_bytes(dst), d, sizeof(d)))
			return -EINVAL; /* cannot happen: the buffers fit any address */
		n = snprintf(line, sizeof(line), "PROXY TCP%c %s %s %u %u\r\n",
			     family == AF_INET ? '4' : '6', s, d,
			     ntohs(ip_port(src)), ntohs(ip_port(dst)));
	}
	if (n < 0 || (size_t)n > cap)
		return -ENOSPC;
	memcpy(out, line, (size_t)n);
	return n;
}

int pp_build_v2(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out, size_t cap)
{
	int family = ip_family(src, dst);
	size_t ip = family == AF_INET ? 4 : 16;
	size_t alen = family == AF_UNSPEC ? 0 : 2 * ip + 4;
	uint16_t sport, dport;

	if (cap < V2_HDR + alen)
		return -ENOSPC;
	memcpy(out, v2_sig, sizeof(v2_sig));
	out[12] = family == AF_UNSPEC ? V2_LOCAL : V2_PROXY;
	out[13] = family == AF_INET ? V2_TCP4 : family == AF_INET6 ? V2_TCP6 : 0x00;
	out[14] = 0;
	out[15] = (uint8_t)alen;
	if (family == AF_UNSPEC)
		return V2_HDR;
	sport = ip_port(src);
	dport = ip_port(dst);
	memcpy(out + V2_HDR, ip_bytes(src), ip);
	memcpy(out + V2_HDR + ip, ip_bytes(dst), ip);
	memcpy(out + V2_HDR + 2 * ip, &sport, 2);
	memcpy(out + V2_HDR + 2 * ip + 2, &dport, 2);
	return (int)(V2_HDR + alen);
}

/* ---- v1 parser ----------------------------------------------------------- */

/* -EINVAL where buf and sig differ, 0 if buf is a shorter prefix of sig, 1
 * if buf starts with all of sig. */
static int sig_match(const uint8_t *buf, size_t len, const void *sig, size_t n)
{
	if (memcmp(buf, sig, len < n ? len : n))
		return -EINVAL;
	return len >= n;
}

/* The fields after "PROXY ", in order. */
enum { F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT };

/* The protocol name p[0, n), or with `partial` the start of one. */
static int v1_proto(const uint8_t *p, size_t n, bool partial, int *family)
{
	static const struct { const char *name; int family; } protos[] = {
		{ "TCP4", AF_INET }, { "TCP6", AF_INET6 }, { "UNKNOWN", AF_UNSPEC },
	};

	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		size_t len = strlen(protos[i].name);

		if ((partial ? n <= len : n == len) && !memcmp(p, protos[i].name, n)) {
			*family = protos[i].family;
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * The address p[0, n) of `family` into addr, or with `partial` only checks
 * that it can still become one. inet_pton() judges complete text; a prefix
 * is accepted when one of `ends` completes it. These suffice for every
 * prefix of a valid address: inside hex groups, "" (already whole), "::"
 * (too few groups), "0" or ":0" (after a single colon, the last group or a
 * "::" still missing), ":" (just ":"); inside a dotted quad, "0" after a
 * dot and ".0" for each octet still missing.
 */
static int v1_addr(int family, const uint8_t *p, size_t n, bool partial, void *addr)
{
	static const char *const ends[] = {
		"", "0", ":", ":0", "::", ".0", ".0.0", ".0.0.0", "0.0", "0.0.0",
	};
	size_t max = family == AF_INET ? INET_ADDRSTRLEN - 1 : INET6_ADDRSTRLEN - 1;
	char text[INET6_ADDRSTRLEN + 8];
	struct in6_addr scratch;

	if (n > max)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!p[i] || !strchr("0123456789abcdefABCDEF:.", p[i]))
			return -EINVAL; /* inet_pton would stop at a NUL */
	memcpy(text, p, n);
	text[n] = 0;
	if (!partial)
		return inet_pton(family, text, addr) == 1 ? 0 : -EINVAL;
	if (!n)
		return 0;
	for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
		strcpy(text + n, ends[i]);
		if (inet_pton(family, text, &scratch) == 1)
			return 0;
	}
	return -EINVAL;
}

/* A port p[0, n): decimal, no sign, no leading zero, at most 65535; every
 * prefix of one is one, so `partial` only allows the empty field. */
static int v1_port(const uint8_t *p, size_t n, bool partial, struct sockaddr_storage *ss)
{
	uint32_t v = 0;

	if (!n)
		return partial ? 0 : -EINVAL;
	if (n > 5 || (p[0] == '0' && n > 1))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint32_t)(p[i] - '0');
	}
	if (v > 65535)
		return -EINVAL;
	ss_port(ss, (uint16_t)v);
	return 0;
}

static int v1_field(int f, const uint8_t *p, size_t n, bool partial, struct pp_addrs *a)
{
	switch (f) {
	case F_PROTO:
		return v1_proto(p, n, partial, &a->family);
	case F_SRC:
		return v1_addr(a->family, p, n, partial, ss_addr(&a->src, a->family));
	case F_DST:
		return v1_addr(a->family, p, n, partial, ss_addr(&a->dst, a->family));
	case F_SPORT:
		return v1_port(p, n, partial, &a->src);
	default:
		return v1_port(p, n, partial, &a->dst);
	}
}

/*
 * The line s[0, n) without its CRLF (`partial`: the CR has not arrived, the
 * last field may go on). Fields end at a space; an empty one means two
 * spaces in a row.
 */
static int v1_line(const uint8_t *s, size_t n, bool partial, struct pp_addrs *a)
{
	size_t at = 6; /* after "PROXY " */

	for (int f = F_PROTO;; f++) {
		const uint8_t *sp = memchr(s + at, ' ', n - at);
		size_t end = sp ? (size_t)(sp - s) : n;
		bool open = !sp && partial; /* the field may still grow */
		int ret = v1_field(f, s + at, end - at, open, a);

		if (ret < 0)
			return ret;
		if (f == F_PROTO && a->family == AF_UNSPEC && !open)
			return 0; /* UNKNOWN: the rest of the line is ignored */
		if (!sp)
			return partial || f == F_DPORT ? 0 : -EINVAL;
		if (f == F_DPORT)
			return -EINVAL; /* a space after the last field */
		at = end + 1;
	}
}

static int parse_v1(const uint8_t *buf, size_t len, struct pp_addrs *out)
{
	/* The CR of a PP_V1_MAX-byte line is at PP_V1_MAX - 2: look no further. */
	size_t n = len < PP_V1_MAX - 1 ? len : PP_V1_MAX - 1;
	const uint8_t *cr = memchr(buf, '\r', n);
	size_t line = cr ? (size_t)(cr - buf) : n;
	struct pp_addrs a;
	int ret = sig_match(buf, len, "PROXY ", 6);

	if (ret <= 0)
		return ret;
	memset(&a, 0, sizeof(a));
	ret = v1_line(buf, line, !cr, &a);
	if (ret < 0)
		return ret;
	if (!cr)
		return len >= PP_V1_MAX - 1 ? -E2BIG : 0;
	if (line + 1 == len)
		return 0;
	if (cr[1] != '\n')
		return -EINVAL;
	*out = a;
	return (int)line + 2;
}

/* ---- v2 parser ----------------------------------------------------------- */

/* CRC32C (Castagnoli, reflected), as RFC 4960 appendix B computes it;
 * chainable: crc32c(crc32c(0, a), b) is the CRC of a then b. */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
	}
	return ~crc;
}

/* The CRC32C TLV whose value is hdr[at, at + vlen): the CRC of the whole
 * header with those 4 bytes zeroed, in network order. */
static int v2_crc(const uint8_t *hdr, size_t at, size_t vlen, size_t total)
{
	static const uint8_t zero[4];
	uint32_t want, crc;

	if (vlen != 4)
		return -EINVAL;
	want = (uint32_t)hdr[at] << 24 | (uint32_t)hdr[at + 1] << 16 |
	       (uint32_t)hdr[at + 2] << 8 | hdr[at + 3];
	crc = crc32c(0, hdr, at);
	crc = crc32c(crc, zero, sizeof(zero));
	crc = crc32c(crc, hdr + at + 4, total - at - 4);
	return crc == want ? 0 : -EINVAL;
}

/* The TLVs in hdr[at, total): each one whole, a CRC32C one matching. */
static int v2_tlvs(const uint8_t *hdr, size_t at, size_t total)
{
	while (at < total) {
		size_t vlen;

		if (total - at < 3)
			return -EINVAL;
		vlen = (size_t)hdr[at + 1] << 8 | hdr[at + 2];
		if (vlen > total - at - 3)
			return -EINVAL;
		if (hdr[at] == TLV_CRC32C && v2_crc(hdr, at + 3, vlen, total))
			return -EINVAL;
		at += 3 + vlen;
	}
	return 0;
}

/* The address block's size for a PROXY protocol byte the spec gives a
 * layout (TCP or UDP over IPv4 or IPv6, AF_UNIX); 0 for UNSPEC ones. */
static size_t v2_addr_len(uint8_t proto)
{
	switch (proto) {
	case 0x11: case 0x12: return 12;
	case 0x21: case 0x22: return 36;
	case 0x31: case 0x32: return 216;
	}
	return 0;
}

/* The addresses of a TCP4 or TCP6 header. */
static void v2_addrs(const uint8_t *hdr, struct pp_addrs *a)
{
	int family = hdr[13] == V2_TCP4 ? AF_INET : AF_INET6;
	size_t ip = family == AF_INET ? 4 : 16;
	const uint8_t *ports = hdr + V2_HDR + 2 * ip;

	memset(a, 0, sizeof(*a));
	a->family = family;
	memcpy(ss_addr(&a->src, family), hdr + V2_HDR, ip);
	memcpy(ss_addr(&a->dst, family), hdr + V2_HDR + ip, ip);
	ss_port(&a->src, (uint16_t)(ports[0] << 8 | ports[1]));
	ss_port(&a->dst, (uint16_t)(ports[2] << 8 | ports[3]));
}

/* Each byte is judged as soon as it is here, so a bad header fails early. */
static int parse_v2(const uint8_t *buf, size_t len, struct pp_addrs *out)
{
	int ret = sig_match(buf, len, v2_sig, sizeof(v2_sig));
	size_t total, alen;
	bool proxy;

	if (ret <= 0)
		return ret;
	if (len < 13)
		return 0;
	if (buf[12] != V2_LOCAL && buf[12] != V2_PROXY)
		return -EINVAL; /* another version, or an unassigned command */
	proxy = buf[12] == V2_PROXY;
	if (len < 14)
		return 0;
	if (proxy && ((buf[13] >> 4) > 3 || (buf[13] & 0xf) > 2))
		return -EINVAL; /* a family or transport the spec does not define */
	if (len < V2_HDR)
		return 0;
	total = V2_HDR + ((size_t)buf[14] << 8 | buf[15]);
	alen = proxy ? v2_addr_len(buf[13]) : 0;
	if (total > PP_MAX_LEN)
		return -E2BIG;
	if (total < V2_HDR + alen)
		return -EINVAL;
	if (len < total)
		return 0;
	if (alen && (ret = v2_tlvs(buf, V2_HDR + alen, total)) < 0)
		return ret;
	if (proxy && (buf[13] == V2_TCP4 || buf[13] == V2_TCP6)) {
		v2_addrs(buf, out);
	} else {
		memset(out, 0, sizeof(*out));
		out->family = AF_UNSPEC;
	}
	return (int)total;
}

int pp_parse(const uint8_t *buf, size_t len, struct pp_addrs *out)
{
	if (!len)
		return 0;
	if (buf[0] == v2_sig[0])
		return parse_v2(buf, len, out);
	return parse_v1(buf, len, out);
}
