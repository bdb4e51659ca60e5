/* The sheaf command: a table of subcommands, one file each. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *what;
} commands[] = {
	{ "proxy", cmd_proxy, "L4 TCP proxy over io_uring send/recv bundles" },
	{ "source", cmd_source, "connect and send (verifiable) streams" },
	{ "sink", cmd_sink, "accept and receive streams, verify every byte" },
	{ "bench", cmd_bench, "source -> proxy -> sink, io modes and peers compared" },
	{ "probe", cmd_probe, "what this kernel supports, and the io mode auto picks" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: sheaf COMMAND [OPTIONS]   (sheaf COMMAND --help for its options)\n\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].what);
	fprintf(f, "\nSHEAF_IO=MODE chooses the io mode wherever --io is auto.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "sheaf: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
