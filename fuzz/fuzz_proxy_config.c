/*
 * libFuzzer harness for sheaf proxy's --config reader (proxy_config_read,
 * src/cli/proxy_config.c). Seeds: fuzz/corpus/proxy_config/.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/cli -Iinclude \
 *       -D_GNU_SOURCE -Wl,--wrap=getaddrinfo -o fuzz_proxy_config \
 *       fuzz/fuzz_proxy_config.c src/cli/proxy_config.c src/cli/args.c \
 *       src/cli/upstream.c build/libsheaf.a -luring -lpthread
 *   ./fuzz_proxy_config -max_total_time=60 fuzz/corpus/proxy_config
 *
 * Host names resolve as numeric addresses only (the wrap below): no DNS.
 * Besides memory errors, it checks that a file with no mistake gives at
 * least one frontend, each with a listen address and an upstream, and that
 * every count stays within its bounds.
 */
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "proxy.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

/* host names never reach DNS: fuzz/no_dns.c wraps getaddrinfo */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct proxy px;
	static FILE *devnull;
	FILE *in = size ? fmemopen((void *)data, size, "r") : NULL;
	unsigned n;

	if (!in)
		return 0;
	if (!devnull)
		devnull = fopen("/dev/null", "w");
	proxy_defaults(&px);
	n = proxy_config_read(in, "fuzz.conf", &px, devnull);
	fclose(in);
	CHECK(px.nfe <= MAX_FRONTENDS);
	for (unsigned i = 0; i < px.nfe; i++)
		CHECK(px.fe[i].up.n <= MAX_UPSTREAMS && px.fe[i].idx == i);
	if (!n) {
		CHECK(px.nfe >= 1 && px.nfe + px.have_metrics <= MAX_FRONTENDS);
		for (unsigned i = 0; i < px.nfe; i++)
			CHECK(px.fe[i].have_listen && px.fe[i].up.n >= 1);
		CHECK(px.threads >= 1 && px.threads <= MAX_THREADS);
	}
	return 0;
}
