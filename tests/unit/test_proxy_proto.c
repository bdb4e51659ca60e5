/*
 * The PROXY protocol module: exact bytes of what the builders write (spelled
 * out from the specification, not from the code), round trips, headers that
 * arrive a byte at a time, malformed headers, and random damage.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cmocka.h>

#include "proxy_proto.h"

/* The v2 signature, section 2.2 of the spec. */
#define SIG "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"

/* A string literal with its length (it may hold NULs). */
#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static struct sockaddr_storage ip(const char *text, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
	}
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* pp_parse, saying which input failed. */
static int parse(const char *what, const uint8_t *buf, size_t len, int want,
		 struct pp_addrs *a)
{
	struct pp_addrs scratch;
	int got = pp_parse(buf, len, a ? a : &scratch);

	if (got != want)
		print_error("%s (%zu bytes): got %d, want %d\n", what, len, got, want);
	assert_int_equal(got, want);
	return got;
}

static void same_addrs(const struct pp_addrs *a, const struct pp_addrs *b)
{
	assert_int_equal(a->family, b->family);
	assert_memory_equal(&a->src, &b->src, sizeof(a->src));
	assert_memory_equal(&a->dst, &b->dst, sizeof(a->dst));
}

static struct pp_addrs want_addrs(const struct sockaddr_storage *src,
				  const struct sockaddr_storage *dst)
{
	struct pp_addrs a = { .family = src->ss_family, .src = *src, .dst = *dst };

	return a;
}

/* Every shorter piece of a whole header asks for more. */
static void all_prefixes_need_more(const char *what, const uint8_t *hdr, size_t len)
{
	for (size_t k = 0; k < len; k++)
		parse(what, hdr, k, 0, NULL);
}

/* ---- builders: exact bytes ---------------------------------------------- */

static void v1_bytes(void **state)
{
	struct sockaddr_storage s4 = ip("192.168.0.1", 56324), d4 = ip("192.168.0.11", 443);
	struct sockaddr_storage s6 = ip("2001:db8::1", 1234), d6 = ip("2001:db8:0:0:0:0:0:2", 443);
	struct sockaddr_storage z4 = ip("0.0.0.0", 0), m4 = ip("255.255.255.255", 65535);
	const char *want;
	char out[PP_V1_MAX];

	want = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	assert_int_equal(pp_build_v1(SA(s4), SA(d4), out, sizeof(out)), strlen(want));
	assert_memory_equal(out, want, strlen(want));
	want = "PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n";
	assert_int_equal(pp_build_v1(SA(s6), SA(d6), out, sizeof(out)), strlen(want));
	assert_memory_equal(out, want, strlen(want));
	want = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
	assert_int_equal(pp_build_v1(SA(z4), SA(m4), out, sizeof(out)), strlen(want));
	assert_memory_equal(out, want, strlen(want));
}

static void v1_unknown_bytes(void **state)
{
	struct sockaddr_storage s4 = ip("10.0.0.1", 1), d6 = ip("::1", 2);
	struct sockaddr_un un = { .sun_family = AF_UNIX, .sun_path = "/tmp/x" };
	char out[PP_V1_MAX];

	assert_int_equal(pp_build_v1(SA(s4), SA(d6), out, sizeof(out)), 15);
	assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
	assert_int_equal(pp_build_v1((struct sockaddr *)&un, (struct sockaddr *)&un, out,
				     sizeof(out)), 15);
	assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
	assert_int_equal(pp_build_v1(NULL, SA(s4), out, sizeof(out)), 15);
	assert_int_equal(pp_build_v1(SA(s4), NULL, out, sizeof(out)), 15);
}

static void v2_bytes(void **state)
{
	struct sockaddr_storage s4 = ip("192.168.0.1", 56324), d4 = ip("192.168.0.11", 443);
	struct sockaddr_storage s6 = ip("2001:db8::1", 1234), d6 = ip("fe80::a:b", 65535);
	static const uint8_t want4[] = SIG
		"\x21"             /* version 2, PROXY */
		"\x11"             /* AF_INET, STREAM */
		"\x00\x0C"         /* 12 bytes follow */
		"\xC0\xA8\x00\x01" /* 192.168.0.1 */
		"\xC0\xA8\x00\x0B" /* 192.168.0.11 */
		"\xDC\x04"         /* 56324 */
		"\x01\xBB";        /* 443 */
	static const uint8_t want6[] = SIG
		"\x21"             /* version 2, PROXY */
		"\x21"             /* AF_INET6, STREAM */
		"\x00\x24"         /* 36 bytes follow */
		"\x20\x01\x0D\xB8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
		"\xFE\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0A\x00\x0B"
		"\x04\xD2"         /* 1234 */
		"\xFF\xFF";        /* 65535 */
	uint8_t out[PP_V1_MAX];

	assert_int_equal(sizeof(want4) - 1, 28);
	assert_int_equal(pp_build_v2(SA(s4), SA(d4), out, sizeof(out)), 28);
	assert_memory_equal(out, want4, 28);
	assert_int_equal(sizeof(want6) - 1, 52);
	assert_int_equal(pp_build_v2(SA(s6), SA(d6), out, sizeof(out)), 52);
	assert_memory_equal(out, want6, 52);
}

static void v2_local_bytes(void **state)
{
	struct sockaddr_storage s4 = ip("10.0.0.1", 1), d6 = ip("::1", 2);
	/* version 2 LOCAL, AF_UNSPEC/UNSPEC, no address bytes */
	static const uint8_t want[] = SIG "\x20\x00\x00\x00";
	uint8_t out[PP_V1_MAX];

	assert_int_equal(pp_build_v2(SA(s4), SA(d6), out, sizeof(out)), 16);
	assert_memory_equal(out, want, 16);
	assert_int_equal(pp_build_v2(NULL, NULL, out, sizeof(out)), 16);
	assert_memory_equal(out, want, 16);
}

static void build_short_buffer(void **state)
{
	struct sockaddr_storage s4 = ip("192.168.0.1", 56324), d4 = ip("192.168.0.11", 443);
	char text[PP_V1_MAX];
	uint8_t bin[PP_V1_MAX];
	int n;

	n = pp_build_v1(SA(s4), SA(d4), text, sizeof(text));
	assert_int_equal(pp_build_v1(SA(s4), SA(d4), text, (size_t)n), n);
	assert_int_equal(pp_build_v1(SA(s4), SA(d4), text, (size_t)n - 1), -ENOSPC);
	assert_int_equal(pp_build_v1(NULL, NULL, text, 14), -ENOSPC);
	assert_int_equal(pp_build_v2(SA(s4), SA(d4), bin, 28), 28);
	assert_int_equal(pp_build_v2(SA(s4), SA(d4), bin, 27), -ENOSPC);
	assert_int_equal(pp_build_v2(NULL, NULL, bin, 15), -ENOSPC);
}

/* ---- round trips --------------------------------------------------------- */

static void round_trip_pair(const char *s, uint16_t sport, const char *d, uint16_t dport)
{
	struct sockaddr_storage src = ip(s, sport), dst = ip(d, dport);
	struct pp_addrs want = want_addrs(&src, &dst), got;
	uint8_t buf[PP_V1_MAX];
	int n;

	n = pp_build_v1(SA(src), SA(dst), (char *)buf, sizeof(buf));
	assert_true(n > 0);
	parse("v1 round trip", buf, (size_t)n, n, &got);
	same_addrs(&got, &want);
	all_prefixes_need_more("v1 round trip", buf, (size_t)n);
	n = pp_build_v2(SA(src), SA(dst), buf, sizeof(buf));
	assert_true(n > 0);
	parse("v2 round trip", buf, (size_t)n, n, &got);
	same_addrs(&got, &want);
	all_prefixes_need_more("v2 round trip", buf, (size_t)n);
}

static void round_trips(void **state)
{
	round_trip_pair("192.168.0.1", 56324, "192.168.0.11", 443);
	round_trip_pair("0.0.0.0", 0, "255.255.255.255", 65535);
	round_trip_pair("::", 0, "::1", 1);
	round_trip_pair("::ffff:1.2.3.4", 80, "::ffff:5.6.7.8", 8080);
	round_trip_pair("1111:2222:3333:4444:5555:6666:7777:8888", 65535,
			"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	round_trip_pair("fe80::1", 9, "2001:db8:1::", 10);
}

/* Headers in spellings our builder does not use: the parser takes them. */
static void v1_other_spellings(void **state)
{
	struct pp_addrs a;
	struct sockaddr_storage s = ip("1:2:3:4:5:6:7:8", 0), d = ip("::ffff:1.2.3.4", 1);
	struct pp_addrs want = want_addrs(&s, &d);

	parse("full hex and dotted tail", S("PROXY TCP6 1:2:3:4:5:6:7:8 0:0:0:0:0:FFFF:1.2.3.4 0 1\r\n"),
	      55, &a);
	same_addrs(&a, &want);
	all_prefixes_need_more("full hex and dotted tail",
			       S("PROXY TCP6 1:2:3:4:5:6:7:8 0:0:0:0:0:FFFF:1.2.3.4 0 1\r\n"));
	all_prefixes_need_more("mixed", S("PROXY TCP6 ::1.2.3.4 1::2:3:4:5:6:7 10 200\r\n"));
}

/* ---- payload, UNKNOWN, lengths --------------------------------------------- */

static void payload_not_consumed(void **state)
{
	static const uint8_t v2[] = SIG "\x21\x11\x00\x0C" "\x7F\x00\x00\x01\x7F\x00\x00\x02"
				    "\x00\x50\x1F\x90" "\r\n\r\nGET";
	struct sockaddr_storage s = ip("127.0.0.1", 80), d = ip("127.0.0.2", 8080);
	struct pp_addrs a, want = want_addrs(&s, &d);

	parse("v1 with payload", S("PROXY TCP4 127.0.0.1 127.0.0.2 80 8080\r\nGET / HTTP/1.0\r\n\r\n"),
	      40, &a);
	same_addrs(&a, &want);
	/* a payload that itself starts like a header */
	parse("v1 then v1", S("PROXY UNKNOWN\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 15, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	parse("v2 with payload", v2, sizeof(v2) - 1, 28, &a);
	same_addrs(&a, &want);
}

static void v1_unknown(void **state)
{
	static const uint8_t zero[sizeof(struct sockaddr_storage)];
	struct pp_addrs a;
	char line[PP_V1_MAX + 8];

	parse("short UNKNOWN", S("PROXY UNKNOWN\r\n"), 15, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	assert_memory_equal(&a.src, zero, sizeof(zero));
	assert_memory_equal(&a.dst, zero, sizeof(zero));
	parse("UNKNOWN with addresses", S("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"), 35, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	/* anything but CR up to the CRLF is ignored */
	parse("UNKNOWN with junk", S("PROXY UNKNOWN  \t\x01\x00\xFF\n junk\r\nX"), 27, &a);
	all_prefixes_need_more("UNKNOWN with junk", S("PROXY UNKNOWN  \t\x01\x00\xFF\n junk\r\n"));
	parse("UNKNOWN glued to more", S("PROXY UNKNOWNX\r\n"), -EINVAL, NULL);
	parse("UNKNOWN lower case", S("PROXY unknown\r\n"), -EINVAL, NULL);
	parse("UNKNOWN with a lone CR", S("PROXY UNKNOWN a\rb\r\n"), -EINVAL, NULL);
	/* the longest line: 107 bytes with the CRLF; one more is too long */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PP_V1_MAX - 2, "\r\n", 2);
	parse("107-byte UNKNOWN", (uint8_t *)line, PP_V1_MAX, PP_V1_MAX, &a);
	all_prefixes_need_more("107-byte UNKNOWN", (uint8_t *)line, PP_V1_MAX);
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PP_V1_MAX - 1, "\r\n", 2);
	parse("108-byte UNKNOWN", (uint8_t *)line, PP_V1_MAX + 1, -E2BIG, NULL);
	parse("108-byte UNKNOWN, 106 bytes in", (uint8_t *)line, PP_V1_MAX - 1, -E2BIG, NULL);
	parse("108-byte UNKNOWN, 105 bytes in", (uint8_t *)line, PP_V1_MAX - 2, 0, NULL);
}

static void v1_too_long(void **state)
{
	char line[PP_MAX_LEN];

	/* a valid start that never ends */
	memset(line, '1', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	parse("UNKNOWN without CRLF", (uint8_t *)line, sizeof(line), -E2BIG, NULL);
	/* a TCP4 line cannot get that long: it is malformed first */
	memcpy(line, "PROXY TCP4 ", 11);
	parse("TCP4 without CRLF", (uint8_t *)line, sizeof(line), -EINVAL, NULL);
}

/* ---- v1 malformed -------------------------------------------------------- */

static void v1_malformed(void **state)
{
	static const struct { const char *what; const char *text; size_t len; int want; } cases[] = {
#define C(what, lit, want) { what, lit, sizeof(lit) - 1, want }
		C("not a header", "GET / HTTP/1.1\r\n", -EINVAL),
		C("bad first byte", "X", -EINVAL),
		C("bad third byte", "PRX", -EINVAL),
		C("no space after PROXY", "PROXY\r\n", -EINVAL),
		C("lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("two spaces after PROXY", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("two spaces between addresses", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", -EINVAL),
		C("tab", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", -EINVAL),
		C("missing CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", -EINVAL),
		C("CR without LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", -EINVAL),
		C("CR CR LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", -EINVAL),
		C("no ports", "PROXY TCP4 1.2.3.4 5.6.7.8\r\n", -EINVAL),
		C("one port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", -EINVAL),
		C("a sixth field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", -EINVAL),
		C("protocol only", "PROXY TCP4\r\n", -EINVAL),
		C("empty protocol", "PROXY \r\n", -EINVAL),
		C("unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", -EINVAL),
		C("port 99999", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", -EINVAL),
		C("port 100000", "PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n", -EINVAL),
		C("port +80", "PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", -EINVAL),
		C("port -1", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", -EINVAL),
		C("port 080", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", -EINVAL),
		C("port 00", "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", -EINVAL),
		C("port 0x50", "PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n", -EINVAL),
		C("octet 256", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", -EINVAL),
		C("three octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", -EINVAL),
		C("five octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", -EINVAL),
		C("octet with a leading zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("host name", "PROXY TCP4 localhost 5.6.7.8 1 2\r\n", -EINVAL),
		C("NUL in an address", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", -EINVAL),
		C("TCP4 with an IPv6 address", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", -EINVAL),
		C("TCP4 with IPv4-mapped", "PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n", -EINVAL),
		C("TCP6 with an IPv4 address", "PROXY TCP6 ::1 5.6.7.8 1 2\r\n", -EINVAL),
		C("IPv6 with two ::", "PROXY TCP6 1::2::3 ::1 1 2\r\n", -EINVAL),
		C("IPv6 group of 5", "PROXY TCP6 12345:: ::1 1 2\r\n", -EINVAL),
		C("IPv6 with a zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", -EINVAL),
		C("IPv6 in brackets", "PROXY TCP6 [::1] ::1 1 2\r\n", -EINVAL),
		/* rejected before the line ends: nothing can make these valid */
		C("early: bad protocol", "PROXY TCPX", -EINVAL),
		C("early: bad octet", "PROXY TCP4 256", -EINVAL),
		C("early: letter in IPv4", "PROXY TCP4 1.2.3.4x", -EINVAL),
		C("early: fifth octet", "PROXY TCP4 1.2.3.4.", -EINVAL),
		C("early: second ::", "PROXY TCP6 1::2::", -EINVAL),
		C("early: ninth group", "PROXY TCP6 1:2:3:4:5:6:7:8:", -EINVAL),
		C("early: IPv4 tail too soon", "PROXY TCP6 1:2:3:4:5:6:7:1.", -EINVAL),
		C("early: port", "PROXY TCP4 1.2.3.4 5.6.7.8 65536", -EINVAL),
		C("early: port zero", "PROXY TCP4 1.2.3.4 5.6.7.8 0", 0),
		C("early: port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 00", -EINVAL),
		C("early: still fine", "PROXY TCP6 1:2:3:4:5:6:1.2.", 0),
#undef C
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		parse(cases[i].what, (const uint8_t *)cases[i].text, cases[i].len, cases[i].want,
		      NULL);
}

/* ---- v2 ------------------------------------------------------------------ */

/* A TCP4 header for 10.0.0.1:1000 -> 10.0.0.2:2000 with `tlv_len` bytes of
 * TLVs (copied from tlvs) after the addresses; returns its length. */
static size_t v2_tcp4(uint8_t *out, const uint8_t *tlvs, size_t tlv_len)
{
	static const uint8_t hdr[] = SIG "\x21\x11\x00\x00"
				     "\x0A\x00\x00\x01\x0A\x00\x00\x02\x03\xE8\x07\xD0";
	size_t len = 12 + tlv_len;

	memcpy(out, hdr, 28);
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	memcpy(out + 28, tlvs, tlv_len);
	return 28 + tlv_len;
}

/* CRC32C bit by bit, checked against the standard check value. */
static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xFFFFFFFFu;

	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

static void v2_tlvs_skipped(void **state)
{
	/* NOOP of 2 bytes, AUTHORITY "example.com", a custom type with 0 bytes */
	static const uint8_t tlvs[] = "\x04\x00\x02\xAA\xBB" "\x02\x00\x0B" "example.com"
				      "\xE0\x00\x00";
	struct sockaddr_storage s = ip("10.0.0.1", 1000), d = ip("10.0.0.2", 2000);
	struct pp_addrs a, want = want_addrs(&s, &d);
	uint8_t hdr[PP_MAX_LEN + 8];
	size_t n = v2_tcp4(hdr, tlvs, sizeof(tlvs) - 1);

	parse("TLVs", hdr, n, (int)n, &a);
	same_addrs(&a, &want);
	all_prefixes_need_more("TLVs", hdr, n);
	/* a TLV running past the announced length, and a cut TLV header */
	n = v2_tcp4(hdr, S("\x04\x00\x03\xAA\xBB"));
	parse("TLV too long", hdr, n, -EINVAL, NULL);
	n = v2_tcp4(hdr, S("\x04\x00"));
	parse("cut TLV header", hdr, n, -EINVAL, NULL);
}

static void v2_crc32c(void **state)
{
	uint8_t hdr[64];
	uint32_t crc;
	size_t n;

	assert_int_equal(ref_crc32c((const uint8_t *)"123456789", 9), 0xE3069283u);
	/* CRC32C TLV with the value zero, then a NOOP after it */
	n = v2_tcp4(hdr, S("\x03\x00\x04\x00\x00\x00\x00" "\x04\x00\x01\x55"));
	crc = ref_crc32c(hdr, n);
	hdr[31] = (uint8_t)(crc >> 24);
	hdr[32] = (uint8_t)(crc >> 16);
	hdr[33] = (uint8_t)(crc >> 8);
	hdr[34] = (uint8_t)crc;
	parse("good CRC", hdr, n, (int)n, NULL);
	hdr[n - 1] ^= 1; /* in the NOOP, covered by the CRC */
	parse("payload changed under the CRC", hdr, n, -EINVAL, NULL);
	hdr[n - 1] ^= 1;
	hdr[34] ^= 0x80;
	parse("bad CRC", hdr, n, -EINVAL, NULL);
	n = v2_tcp4(hdr, S("\x03\x00\x02\x00\x00"));
	parse("CRC TLV of 2 bytes", hdr, n, -EINVAL, NULL);
}

static void v2_lengths(void **state)
{
	uint8_t hdr[PP_MAX_LEN + 8], noop[PP_MAX_LEN];
	/* the longest: 16 + 12 addresses + one NOOP filling the rest */
	size_t fill = PP_MAX_LEN - 28 - 3;
	size_t n;

	memset(noop, 0, sizeof(noop));
	noop[0] = 0x04;
	noop[1] = (uint8_t)(fill >> 8);
	noop[2] = (uint8_t)fill;
	n = v2_tcp4(hdr, noop, fill + 3);
	assert_int_equal(n, PP_MAX_LEN);
	parse("longest v2", hdr, n, PP_MAX_LEN, NULL);
	all_prefixes_need_more("longest v2", hdr, n);
	/* one byte more is refused as soon as the length is here */
	fill++;
	noop[1] = (uint8_t)(fill >> 8);
	noop[2] = (uint8_t)fill;
	n = v2_tcp4(hdr, noop, fill + 3);
	parse("v2 one byte too long", hdr, n, -E2BIG, NULL);
	parse("v2 one byte too long, 16 bytes in", hdr, 16, -E2BIG, NULL);
	parse("v2 length 0xFFFF", S(SIG "\x21\x11\xFF\xFF"), -E2BIG, NULL);
	/* the address block must hold the addresses */
	parse("TCP4 with 11 bytes", S(SIG "\x21\x11\x00\x0B" "12345678901"), -EINVAL, NULL);
	parse("TCP6 with 12 bytes", S(SIG "\x21\x21\x00\x0C" "123456789012"), -EINVAL, NULL);
	parse("TCP4 with 0 bytes", S(SIG "\x21\x11\x00\x00"), -EINVAL, NULL);
}

static void v2_malformed(void **state)
{
	static const struct { const char *what; const char *bytes; size_t len; int want; } cases[] = {
#define C(what, lit, want) { what, lit, sizeof(lit) - 1, want }
		C("bad signature byte 5", "\x0D\x0A\x0D\x0A\x01", -EINVAL),
		C("bad signature byte 12", "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0B", -EINVAL),
		C("v1 signature after CR", "\x0D" "PROXY", -EINVAL),
		C("version 1", SIG "\x11", -EINVAL),
		C("version 3", SIG "\x31", -EINVAL),
		C("version 0", SIG "\x01", -EINVAL),
		C("command 2", SIG "\x22", -EINVAL),
		C("command 15", SIG "\x2F", -EINVAL),
		C("family 4", SIG "\x21\x41", -EINVAL),
		C("family 15", SIG "\x21\xF1", -EINVAL),
		C("transport 3", SIG "\x21\x13", -EINVAL),
		C("signature so far", SIG, 0),
		C("version so far", SIG "\x21", 0),
		C("family so far", SIG "\x21\x11", 0),
		C("length so far", SIG "\x21\x11\x00", 0),
		C("addresses so far", SIG "\x21\x11\x00\x0C" "\x0A\x00", 0),
#undef C
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		parse(cases[i].what, (const uint8_t *)cases[i].bytes, cases[i].len, cases[i].want,
		      NULL);
}

/* Headers whose addresses we do not use: AF_UNSPEC, the whole length skipped. */
static void v2_unspec(void **state)
{
	static const uint8_t zero[sizeof(struct sockaddr_storage)];
	uint8_t unix_hdr[16 + 216 + 4];
	struct pp_addrs a;

	/* LOCAL with addresses: skipped, the family ignored (even an undefined one) */
	parse("LOCAL with TCP4", S(SIG "\x20\x11\x00\x0C" "\x0A\x00\x00\x01\x0A\x00\x00\x02\x03\xE8\x07\xD0"),
	      28, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	assert_memory_equal(&a.src, zero, sizeof(zero));
	parse("LOCAL with family 0xFF", S(SIG "\x20\xFF\x00\x02" "ab"), 18, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	parse("LOCAL with a short block", S(SIG "\x20\x11\x00\x01" "a"), 17, &a);
	/* PROXY over UNSPEC: block skipped unread */
	parse("PROXY UNSPEC", S(SIG "\x21\x00\x00\x03" "xyz"), 19, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	parse("PROXY INET/UNSPEC", S(SIG "\x21\x10\x00\x00"), 16, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	/* UDP and AF_UNIX fall back to AF_UNSPEC but must hold their addresses */
	parse("UDP4", S(SIG "\x21\x12\x00\x0C" "\x0A\x00\x00\x01\x0A\x00\x00\x02\x03\xE8\x07\xD0"),
	      28, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	parse("UDP6 too short", S(SIG "\x21\x22\x00\x0C" "123456789012"), -EINVAL, NULL);
	memset(unix_hdr, 'u', sizeof(unix_hdr));
	memcpy(unix_hdr, SIG "\x21\x31\x00\xDC", 16); /* 216 + a 1-byte NOOP */
	memcpy(unix_hdr + 16 + 216, "\x04\x00\x01", 3);
	parse("UNIX stream", unix_hdr, 16 + 216 + 4, 16 + 216 + 4, &a);
	assert_int_equal(a.family, AF_UNSPEC);
	unix_hdr[15] = 0xD7; /* 215 */
	parse("UNIX stream too short", unix_hdr, sizeof(unix_hdr), -EINVAL, NULL);
}

/* ---- random damage --------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 2685821657736338717ull) >> 32) % n;
}

/* Bytes that move a parser between states. */
static uint8_t interesting(void)
{
	static const char bytes[] = " \r\n:.0123456789afAF\x00\xFF\x11\x21\x20";

	return rnd(2) ? (uint8_t)bytes[rnd(sizeof(bytes) - 1)] : (uint8_t)rnd(256);
}

static size_t mutate(uint8_t *buf, size_t len, size_t cap)
{
	for (uint32_t m = 1 + rnd(3); m--;) {
		size_t at = rnd((uint32_t)len + 1);

		switch (rnd(4)) {
		case 0: /* replace */
			if (at < len)
				buf[at] = interesting();
			break;
		case 1: /* insert */
			if (len < cap) {
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = interesting();
				len++;
			}
			break;
		case 2: /* delete */
			if (at < len) {
				memmove(buf + at, buf + at + 1, len - at - 1);
				len--;
			}
			break;
		default: /* cut */
			len = at;
		}
	}
	return len;
}

/* One group of 1..4 hex digits (leading zeros allowed), either case. */
static size_t spell_group(char *out, uint16_t v)
{
	int digits = v > 0xFFF ? 4 : v > 0xFF ? 3 : v > 0xF ? 2 : 1;

	digits += (int)rnd((uint32_t)(5 - digits));
	for (int i = digits - 1; i >= 0; i--) {
		unsigned d = (v >> (4 * i)) & 0xF;

		*out++ = "0123456789abcdef"[d] - (d > 9 && rnd(2) ? 32 : 0);
	}
	return (size_t)digits;
}

/*
 * A random IPv6 address in a random valid spelling: runs of zero groups,
 * "::" over any of them (at least one group, as inet_pton wants), and the
 * last 32 bits as a dotted quad. Returns its length; addr gets the bytes.
 */
static size_t spell_ipv6(char *out, uint8_t addr[16])
{
	uint16_t g[8];
	bool tail = !rnd(3);
	int ng = tail ? 6 : 8, cs = -1, cl = 0, zs = (int)rnd(8), zl = (int)rnd(9);
	size_t n = 0;

	for (int i = 0; i < 8; i++)
		g[i] = rnd(4) ? (uint16_t)(rnd(3) ? rnd(65536) : rnd(16)) : 0;
	for (int i = zs; i < zs + zl && i < 8; i++)
		g[i] = 0;
	for (int i = 0; i < 8; i++) {
		addr[2 * i] = (uint8_t)(g[i] >> 8);
		addr[2 * i + 1] = (uint8_t)g[i];
	}
	if (rnd(4)) { /* compress some run of zero groups among the hex ones */
		cs = (int)rnd((uint32_t)ng);
		while (cs + cl < ng && !g[cs + cl] && (!cl || rnd(4)))
			cl++;
		if (!cl)
			cs = -1;
	}
	for (int i = 0; i < ng; i++) {
		if (i == cs) {
			n += (size_t)sprintf(out + n, "::");
			i += cl - 1;
			continue;
		}
		if (i && i != cs + cl)
			out[n++] = ':';
		n += spell_group(out + n, g[i]);
	}
	if (tail)
		n += (size_t)sprintf(out + n, "%s%u.%u.%u.%u", cs >= 0 && cs + cl == ng ? "" : ":",
				     addr[12], addr[13], addr[14], addr[15]);
	out[n] = 0;
	return n;
}

/* Every prefix of a line with any valid IPv6 spelling asks for more: the
 * early rejection of a line still arriving never refuses a good one. */
static void v1_ipv6_spellings(void **state)
{
	char text[64], line[128];
	uint8_t addr[16], check[16];
	struct pp_addrs a;

	for (int i = 0; i < 5000; i++) {
		size_t n = spell_ipv6(text, addr);
		int len;

		if (inet_pton(AF_INET6, text, check) != 1)
			print_error("spelling %s\n", text);
		assert_int_equal(inet_pton(AF_INET6, text, check), 1);
		assert_memory_equal(check, addr, 16);
		assert_true(n <= 45);
		len = sprintf(line, "PROXY TCP6 %s ::1 1 2\r\n", text);
		parse(text, (uint8_t *)line, (size_t)len, len, &a);
		assert_memory_equal(&((struct sockaddr_in6 *)&a.src)->sin6_addr, addr, 16);
		all_prefixes_need_more(text, (uint8_t *)line, (size_t)len);
	}
}

static void random_damage(void **state)
{
	struct sockaddr_storage s4 = ip("192.168.10.200", 65535), d4 = ip("1.2.3.4", 0);
	struct sockaddr_storage s6 = ip("2001:db8:aaaa::ffff:1", 443), d6 = ip("::ffff:1.2.3.4", 1);
	uint8_t seeds[8][PP_MAX_LEN], buf[PP_MAX_LEN + 64];
	size_t seed_len[8], accepted = 0;
	struct pp_addrs a, b;

	seed_len[0] = (size_t)pp_build_v1(SA(s4), SA(d4), (char *)seeds[0], PP_MAX_LEN);
	seed_len[1] = (size_t)pp_build_v1(SA(s6), SA(d6), (char *)seeds[1], PP_MAX_LEN);
	seed_len[2] = (size_t)pp_build_v1(NULL, NULL, (char *)seeds[2], PP_MAX_LEN);
	seed_len[3] = (size_t)pp_build_v2(SA(s4), SA(d4), seeds[3], PP_MAX_LEN);
	seed_len[4] = (size_t)pp_build_v2(SA(s6), SA(d6), seeds[4], PP_MAX_LEN);
	seed_len[5] = (size_t)pp_build_v2(NULL, NULL, seeds[5], PP_MAX_LEN);
	seed_len[6] = v2_tcp4(seeds[6], S("\x04\x00\x02\xAA\xBB" "\x02\x00\x01" "x"));
	memcpy(seeds[7], "PROXY TCP6 1:2:3:4:5:6:7:8 ::ffff:10.0.0.1 1 65535\r\n", 52);
	seed_len[7] = 52;
	for (uint32_t i = 0; i < 200000; i++) {
		uint32_t k = rnd(8);
		size_t len;
		int ret;

		memcpy(buf, seeds[k], seed_len[k]);
		len = mutate(buf, seed_len[k], sizeof(buf));
		ret = pp_parse(buf, len, &a);
		if (ret != 0 && ret != -EINVAL && ret != -E2BIG && (ret < 0 || (size_t)ret > len))
			print_error("iteration %u: ret %d for %zu bytes\n", i, ret, len);
		assert_true(ret == 0 || ret == -EINVAL || ret == -E2BIG ||
			    (ret > 0 && (size_t)ret <= len && ret <= PP_MAX_LEN));
		if (ret <= 0)
			continue;
		/* the header alone parses the same, and every piece of it asks for more */
		accepted++;
		parse("accepted mutant, exactly", buf, (size_t)ret, ret, &b);
		same_addrs(&a, &b);
		all_prefixes_need_more("accepted mutant", buf, (size_t)ret);
	}
	print_message("random_damage: %zu of 200000 mutants accepted\n", accepted);
	assert_true(accepted > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(v1_bytes),
		cmocka_unit_test(v1_unknown_bytes),
		cmocka_unit_test(v2_bytes),
		cmocka_unit_test(v2_local_bytes),
		cmocka_unit_test(build_short_buffer),
		cmocka_unit_test(round_trips),
		cmocka_unit_test(v1_other_spellings),
		cmocka_unit_test(payload_not_consumed),
		cmocka_unit_test(v1_unknown),
		cmocka_unit_test(v1_too_long),
		cmocka_unit_test(v1_malformed),
		cmocka_unit_test(v2_tlvs_skipped),
		cmocka_unit_test(v2_crc32c),
		cmocka_unit_test(v2_lengths),
		cmocka_unit_test(v2_malformed),
		cmocka_unit_test(v2_unspec),
		cmocka_unit_test(v1_ipv6_spellings),
		cmocka_unit_test(random_damage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
