/*
 * libFuzzer harness for the command line of each subcommand. The input is
 * split on NUL bytes into arguments, as `sheaf NAME ARGS...` after main():
 * the first names the subcommand (sink, source, bench, probe, proxy), the
 * rest are its arguments. By hand:
 *
 *   make fuzz-bin && build-fuzz/fuzz_cmdline -dict=fuzz/cmdline.dict \
 *       -close_fd_mask=3 -max_total_time=60 fuzz/corpus/cmdline
 *
 * Each subcommand runs its own option parser (*_check_args: getopt_long and
 * every check, nothing started). Host names are never looked up
 * (fuzz/no_dns.c).
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

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_ARGS 64

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
