/*
 * The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's
 * doc/proxy-protocol.txt specifies them: the header a proxy sends before the
 * client's first byte to tell the server who the client was. Pure functions:
 * no I/O, no allocation, no state.
 */
#ifndef SHEAF_PROXY_PROTO_H
#define SHEAF_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6
 * addresses and ports): also enough room for what either builder writes. */
#define PP_V1_MAX 107

/*
 * The longest header pp_parse accepts, either version. v2 lets a sender
 * announce up to 16 + 65535 bytes; we stop at 536, the smallest IPv4 MSS,
 * because the spec has the sender emit the whole header in one segment, and
 * a receiver holding PP_MAX_LEN bytes should get an answer, never "more".
 * 536 holds the largest address block (AF_UNIX, 216 bytes) and 304 bytes
 * of TLVs: ALPN, authority, unique id and a short SSL block fit.
 */
#define PP_MAX_LEN 536

/* What a header said. */
struct pp_addrs {
	/*
	 * AF_INET or AF_INET6: src and dst are a sockaddr_in or sockaddr_in6,
	 * ports included, every other byte zero.
	 * AF_UNSPEC: the header carries no addresses we use (v1 UNKNOWN, v2
	 * LOCAL, v2 UNSPEC, v2 UDP or AF_UNIX): use the connection's own
	 * endpoints; src and dst are all zero.
	 */
	int family;
	struct sockaddr_storage src, dst;
};

/*
 * Writes the v1 line for a connection from src to dst (the client and the
 * address it connected to): "PROXY TCP4 a b p q\r\n", or TCP6. When either
 * is NULL, not AF_INET/AF_INET6, or their families differ, writes
 * "PROXY UNKNOWN\r\n". No terminating NUL.
 * Returns the length written (at most 104), or -ENOSPC when cap is shorter
 * (cap >= PP_V1_MAX is always enough); nothing is written then.
 */
int pp_build_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t cap);

/*
 * Writes the v2 header for a connection from src to dst: the signature,
 * 0x21 (version 2, PROXY), 0x11 (TCP over IPv4) or 0x21 (TCP over IPv6),
 * the address length (12 or 36), then the addresses and ports. When either
 * is NULL, not AF_INET/AF_INET6, or their families differ, writes the
 * 16-byte LOCAL header (0x20, family 0x00, length 0): like v1's UNKNOWN it
 * tells the server to use the real endpoints, and unlike PROXY over UNSPEC,
 * which a server may reject, the spec has every server accept it.
 * Returns the length written (16, 28 or 52), or -ENOSPC when cap is
 * shorter; nothing is written then.
 */
int pp_build_v2(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out, size_t cap);

/*
 * Parses the header at the start of buf[0, len), version 1 or 2 (told apart
 * by the first byte). Returns:
 *   > 0      the header's length: the payload starts at buf + ret (bytes
 *            after the header are never looked at); *out is filled.
 *   0        buf is a valid start of a header but not all of it (len 0
 *            included): read more and call again with all the bytes.
 *   -EINVAL  not a PROXY header, or a malformed one: drop the connection.
 *   -E2BIG   a header longer than PP_MAX_LEN (v2) or a v1 line without
 *            its CRLF in the first PP_V1_MAX bytes.
 * *out is written only when ret > 0. With len >= PP_MAX_LEN the answer is
 * never 0, and an error stays the same error however many bytes follow.
 *
 * Strictness (the spec: "any sequence which does not exactly match the
 * protocol must be discarded"):
 * v1  "PROXY", then fields separated by exactly one space, then CRLF; no
 *     other byte anywhere (no tab, no NUL, no trailing space). The protocol
 *     is TCP4, TCP6 or UNKNOWN, case as written. Addresses are what
 *     inet_pton() takes for the family (IPv4: four decimal numbers without
 *     leading zeros; IPv6 in any RFC 4291 text form). Ports are decimal,
 *     0..65535, no sign, no leading zero ("0" itself is fine). After
 *     UNKNOWN, anything but CR may follow up to the CRLF and is ignored.
 *     The first CR ends the line and must be followed by LF. A line still
 *     arriving is checked as far as it goes, so garbage is rejected early:
 *     0 means some continuation would make a valid header.
 * v2  Version 2 with command LOCAL or PROXY; any other is -EINVAL.
 *     LOCAL: the protocol byte and the address block are skipped unread.
 *     PROXY: a family nibble above 3 (AF_UNIX) or a transport nibble above
 *     2 (DGRAM) is -EINVAL. TCP over IPv4 or IPv6 is decoded; UDP and
 *     AF_UNIX fall back to AF_UNSPEC, as the spec asks of receivers that do
 *     not implement them. For those six, the announced length must cover
 *     the addresses (12, 36 or 216 bytes) and the bytes after them must be
 *     whole TLVs (type, 16-bit length, value); TLVs are skipped, except
 *     that a CRC32C TLV (type 0x03) must be 4 bytes and match the header.
 *     With an UNSPEC family or transport, the address block is skipped
 *     unread.
 */
int pp_parse(const uint8_t *buf, size_t len, struct pp_addrs *out);

#endif
