/* sheaf proxy --config: the file format, and a message with the line for
 * every kind of mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy.h"

static struct proxy px;
static char errs[16384];

/* Reads `text` as the file "t.conf": the count of mistakes; their
 * messages in errs. */
static unsigned read_conf(const char *text)
{
	FILE *in = fmemopen((void *)text, strlen(text), "r");
	FILE *out = fmemopen(errs, sizeof(errs) - 1, "w");
	unsigned n;

	assert_non_null(in);
	assert_non_null(out);
	memset(errs, 0, sizeof(errs));
	proxy_defaults(&px);
	n = proxy_config_read(in, "t.conf", &px, out);
	fclose(in);
	fclose(out);
	return n;
}

/* errs has a line with both `where` ("t.conf:3:") and `what`. */
static void assert_said(const char *where, const char *what)
{
	char *line = errs;

	while (line && *line) {
		char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[1024];

		snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
		if (strstr(buf, where) && strstr(buf, what))
			return;
		line = end ? end + 1 : NULL;
	}
	fail_msg("no message with '%s' and '%s' in:\n%s", where, what, errs);
}

static void valid(void **state)
{
	static const char text[] =
		"# two frontends\n"
		"threads 2   # two loops\n"
		"metrics 127.0.0.1:9100\n"
		"log conn\n"
		"drain-timeout 5000\n"
		"no-nodelay\n"
		"\n"
		"[frontend web]\n"
		"listen 127.0.0.1:8080\n"
		"upstream 127.0.0.1:9001\n"
		"upstream 127.0.0.1:9002\n"
		"balance leastconn\n"
		"send-proxy-v2\n"
		"  [frontend api-2.x]  \r\n"
		"\tlisten [::1]:0\r\n"
		"upstream [::1]:9003\n"
		"accept-proxy\n"
		"header-timeout 100\n"
		"[global]\n"
		"max-conns 100\n";

	assert_int_equal(read_conf(text), 0);
	assert_string_equal(errs, "");
	assert_int_equal(px.threads, 2);
	assert_true(px.have_metrics);
	assert_int_equal(px.log, LOG_CONN);
	assert_int_equal(px.drain_timeout_ms, 5000);
	assert_false(px.nodelay);
	assert_int_equal(px.max_conns, 100);
	assert_int_equal(px.nfe, 2);
	assert_string_equal(px.fe[0].name, "web");
	assert_int_equal(px.fe[0].line, 8);
	assert_int_equal(px.fe[0].up.n, 2);
	assert_int_equal(px.fe[0].up.balance, BALANCE_LEASTCONN);
	assert_int_equal(px.fe[0].send_proxy, 2);
	assert_false(px.fe[0].accept_proxy);
	assert_string_equal(px.fe[1].name, "api-2.x");
	assert_string_equal(px.fe[1].listen.text, "[::1]:0");
	assert_int_equal(px.fe[1].up.n, 1);
	assert_true(px.fe[1].accept_proxy);
	assert_int_equal(px.fe[1].header_timeout_ms, 100);
	assert_int_equal(px.fe[1].idx, 1);
}

/* One mistake of each kind a line can have: each named with its line. */
static void line_mistakes(void **state)
{
	static const char text[] =
		"threads 0\n"                          /* 1 bad value */
		"bogus 1\n"                            /* 2 unknown option */
		"listen 127.0.0.1:1\n"                 /* 3 frontend option, global part */
		"config x.conf\n"                      /* 4 command line only */
		"quiet yes\n"                          /* 5 flag with a value */
		"metrics\n"                            /* 6 no value */
		"log conn errors\n"                    /* 7 two values */
		"[frontend a]\n"                       /* 8 */
		"listen 127.0.0.1:0\n"
		"listen 127.0.0.1:0\n"                 /* 10 twice */
		"upstream nonsense\n"                  /* 11 not an address */
		"upstream 127.0.0.1:9\n"
		"threads 2\n"                          /* 13 global option in a frontend */
		"balance random\n"                     /* 14 bad value */
		"header-timeout soon\n"                /* 15 bad value */
		"[backend b]\n"                        /* 16 unknown section */
		"[frontend bad name]\n"                /* 17 name of two words */
		"[frontend a]\n"                       /* 18 defined twice */
		"[frontend c\n";                       /* 19 no ']' */

	assert_int_equal(read_conf(text), 19 - 3 /* 8, 9, 12 are right */);
	assert_said("t.conf:1:", "threads 0: must be 1 to 64");
	assert_said("t.conf:2:", "unknown option 'bogus'");
	assert_said("t.conf:3:", "'listen' belongs in a [frontend NAME] section");
	assert_said("t.conf:4:", "'config' is for the command line");
	assert_said("t.conf:5:", "'quiet' takes no value");
	assert_said("t.conf:6:", "'metrics' needs a value: HOST:PORT");
	assert_said("t.conf:7:", "'log' takes one value");
	assert_said("t.conf:10:", "'listen' is set on line 9 already");
	assert_said("t.conf:11:", "upstream nonsense: not a HOST:PORT address");
	assert_said("t.conf:13:", "'threads' applies to the whole process");
	assert_said("t.conf:14:", "balance random: roundrobin, leastconn or source");
	assert_said("t.conf:15:", "header-timeout soon: milliseconds, 0 to 86400000");
	assert_said("t.conf:16:", "unknown section [backend b]");
	assert_said("t.conf:17:", "[frontend bad name]: the name must be one word");
	assert_said("t.conf:18:", "frontend a is defined on line 8 already");
	assert_said("t.conf:19:", "a section line ends with ']'");
	assert_int_equal(px.nfe, 1);
}

/* Mistakes that only the whole file shows. */
static void file_mistakes(void **state)
{
	char text[4096];
	size_t off = 0;

	assert_int_equal(read_conf("# nothing\nthreads 2\n"), 1);
	assert_said("t.conf:", "no [frontend NAME] section");

	assert_int_equal(read_conf("[frontend a]\nupstream 127.0.0.1:9\n"
				   "[frontend b]\nlisten 127.0.0.1:80\n"), 2);
	assert_said("t.conf:1:", "frontend a has no 'listen'");
	assert_said("t.conf:3:", "frontend b has no 'upstream'");

	assert_int_equal(read_conf("[frontend a]\nlisten 127.0.0.1:80\nupstream 127.0.0.1:9\n"
				   "[frontend b]\nlisten 127.0.0.1:80\nupstream 127.0.0.1:9\n"), 1);
	assert_said("t.conf:5:", "listen 127.0.0.1:80: frontend a listens there already");

	/* port 0 twice is fine: each gets a port of its own */
	assert_int_equal(read_conf("[frontend a]\nlisten 127.0.0.1:0\nupstream 127.0.0.1:9\n"
				   "[frontend b]\nlisten 127.0.0.1:0\nupstream 127.0.0.1:9\n"), 0);

	assert_int_equal(read_conf("[frontend a]\nlisten 127.0.0.1:0\nupstream 127.0.0.1:9\n"
				   "accept-proxy\nheader-timeout 0\n"), 1);
	assert_said("t.conf:1:", "accept-proxy with header-timeout 0");

	assert_int_equal(read_conf("buf-size 1M\nbufs 2048\n[frontend a]\n"
				   "listen 127.0.0.1:0\nupstream 127.0.0.1:9\n"), 1);
	assert_said("t.conf:2:", "pool over 1 GiB");

	assert_int_equal(read_conf("metrics 127.0.0.1:9100\n[frontend a]\n"
				   "listen 127.0.0.1:9100\nupstream 127.0.0.1:9\n"), 1);
	assert_said("t.conf:1:", "metrics 127.0.0.1:9100: frontend a listens there");

	/* nine frontends; eight with metrics */
	off += (size_t)snprintf(text + off, sizeof(text) - off, "metrics 127.0.0.1:0\n");
	for (int i = 0; i < 9; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off,
					"[frontend f%d]\nlisten 127.0.0.1:0\nupstream 127.0.0.1:9\n", i);
	assert_int_equal(read_conf(text), 2);
	assert_said("t.conf:26:", "frontend f8: at most 8 frontends");
	assert_said("t.conf:1:", "at most 7 frontends with it");

	/* seventeen upstreams */
	off = (size_t)snprintf(text, sizeof(text), "[frontend a]\nlisten 127.0.0.1:0\n");
	for (int i = 0; i < 17; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "upstream 127.0.0.1:%d\n",
					100 + i);
	assert_int_equal(read_conf(text), 1);
	assert_said("t.conf:19:", "upstream 127.0.0.1:116: at most 16 upstreams");
}

/* Lines that are not text, or too long. */
static void odd_lines(void **state)
{
	char text[3000];

	memset(text, 'x', sizeof(text));
	memcpy(text, "# ", 2);
	text[2000] = '\n';
	snprintf(text + 2001, sizeof(text) - 2001, "[frontend a]\nlisten 127.0.0.1:0\n"
		 "upstream 127.0.0.1:9\n");
	assert_int_equal(read_conf(text), 1);
	assert_said("t.conf:1:", "line longer than 1024 bytes");
	assert_int_equal(px.nfe, 1);
	assert_int_equal(px.fe[0].line, 2);
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid),
		cmocka_unit_test(line_mistakes),
		cmocka_unit_test(file_mistakes),
		cmocka_unit_test(odd_lines),
	};

	return cmocka_run_group_tests_name("proxy_config", tests, NULL, NULL);
}
