/*
 * libFuzzer harness for the command line of each subcommand. The input is
 * split on NUL bytes into arguments, as `sheaf NAME ARGS...` after main():
 * the first names the subcommand (sink, source, bench, probe, proxy), the
 * rest are its arguments. By hand:
 *
 *   make fuzz-bin && build-fuzz/fuzz_cmdline -dict=fuzz/cmdline.dict \
 *       -close_fd_mask=3 -max_total_time=60 fuzz/corpus/cmdline
 *
 * sink, source, bench and probe run their own option parser (*_check_args:
 * getopt_long and every check, nothing started); the proxy's parser is not
 * callable on its own (it sits in cmd_proxy.c with exit(0) for --help), so
 * "proxy" runs each value through the shared parser the proxy uses for that
 * option. Host names are never looked up (fuzz/no_dns.c).
 *
 * Checks, besides memory errors, leaks and undefined behaviour: the answer
 * is 0, EXIT_USAGE or ARGS_HELP, and the same command line parsed again (a
 * fresh copy) gives the same answer: no state left behind by a parse.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "upstream.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_ARGS 64

/* The proxy's options that take a value, and the parser it uses for each
 * (src/cli/cmd_proxy.c: parse); 0 or EXIT_USAGE. */
static int proxy_value(const char *name, const char *val)
{
	static const char *const ms[] = { "connect-timeout", "idle-timeout", "stall-timeout",
					  "check-interval", "header-timeout" };
	struct io_opts io = { .buf_size = 4096 };
	struct addr a;
	uint32_t v;

	if (!strcmp(name, "listen") || !strcmp(name, "upstream"))
		return addr_opt("proxy", name, val, &a);
	if (!strcmp(name, "io") || !strcmp(name, "buf-size") || !strcmp(name, "bufs"))
		return io_opt("proxy", &io, name, val);
	if (!strcmp(name, "balance"))
		return balance_parse(val) < 0 ? EXIT_USAGE : 0;
	if (!strcmp(name, "max-conns"))
		return parse_u32(val, &v) || !v || v > 9990 ? EXIT_USAGE : 0;
	if (!strcmp(name, "threads"))
		return parse_u32(val, &v) || !v || v > 64 ? EXIT_USAGE : 0;
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		if (!strcmp(name, ms[i]))
			return parse_u32(val, &v) || v > 86400000 ? EXIT_USAGE : 0;
	return 0; /* a flag, or not the proxy's */
}

/* "--name value" and "--name=value", each through proxy_value. */
static int proxy_check_args(int argc, char **argv)
{
	int ret = 0;

	for (int i = 1; i < argc; i++) {
		char *eq, name[32];
		size_t n;

		if (strncmp(argv[i], "--", 2))
			continue;
		eq = strchr(argv[i], '=');
		n = eq ? (size_t)(eq - argv[i] - 2) : strlen(argv[i] + 2);
		if (n >= sizeof(name))
			continue;
		memcpy(name, argv[i] + 2, n);
		name[n] = 0;
		if (eq)
			ret |= proxy_value(name, eq + 1);
		else if (i + 1 < argc)
			ret |= proxy_value(name, argv[i + 1]);
	}
	return ret ? EXIT_USAGE : 0;
}

static const struct {
	const char *name;
	int (*check)(int argc, char **argv);
} commands[] = {
	{ "sink", sink_check_args },   { "source", source_check_args },
	{ "bench", bench_check_args }, { "probe", probe_check_args },
	{ "proxy", proxy_check_args },
};

/* Splits data on NUL into argv (each its own allocation, for ASan); argc. */
static int split(const uint8_t *data, size_t size, char **argv)
{
	int argc = 0;
	size_t at = 0;

	while (at <= size && argc < MAX_ARGS) {
		size_t len = strnlen((const char *)data + at, size - at);

		argv[argc] = malloc(len + 1);
		if (!argv[argc])
			break;
		memcpy(argv[argc], data + at, len);
		argv[argc++][len] = 0;
		at += len + 1;
	}
	argv[argc] = NULL;
	return argc;
}

/* Parses once on a fresh copy (getopt_long permutes argv): the answer. */
static int run_once(const uint8_t *data, size_t size, int (*check)(int, char **))
{
	char *argv[MAX_ARGS + 1];
	int argc = split(data, size, argv), ret;

	optind = 0; /* glibc: start afresh, also forgetting a half-read "-abc" */
	ret = check(argc, argv);
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len = strnlen((const char *)data, size);

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		int ret, again;

		if (strlen(commands[i].name) != len || memcmp(commands[i].name, data, len))
			continue;
		ret = run_once(data, size, commands[i].check);
		CHECK(ret == 0 || ret == EXIT_USAGE || ret == ARGS_HELP);
		again = run_once(data, size, commands[i].check);
		CHECK(again == ret);
	}
	return 0;
}
