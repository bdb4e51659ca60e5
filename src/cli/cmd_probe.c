/* sheaf probe: kernel features and the io mode auto picks. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help[] =
	"usage: sheaf probe [--json]\n"
	"Tests which io_uring features this kernel supports (with a real trial on a\n"
	"socketpair where no feature bit exists) and prints the io mode --io auto picks.\n"
	"SHEAF_IO=MODE overrides that choice for every subcommand.\n"
	"  --json   one JSON object instead of text\n";

static const char *yes_no(int v) { return v ? "yes" : "no"; }

static int parse(int argc, char **argv, bool *json)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' }, { "help", no_argument, 0, 'h' }, { 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'j') {
			*json = true;
		} else if (c == 'h') {
			return ARGS_HELP;
		} else {
			fputs(help, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		say("probe", "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	return 0;
}

int probe_check_args(int argc, char **argv)
{
	bool json = false;

	return parse(argc, argv, &json);
}

int cmd_probe(int argc, char **argv)
{
	struct sheaf_probe p = { .size = sizeof(p) };
	const char *env = getenv("SHEAF_IO");
	bool json = false;
	int ret, io;

	if ((ret = parse(argc, argv, &json)) == ARGS_HELP) {
		fputs(help, stdout);
		return 0;
	}
	if (ret)
		return ret;
	sheaf_probe(&p);
	io = sheaf_io_resolve(SHEAF_IO_AUTO);
	if (json) {
		printf("{\"kernel\":\"%s\",\"io_uring\":%s,\"pbuf_ring\":%s,"
		       "\"recv_multishot\":%s,\"recv_bundle\":%s,\"send_bundle\":%s,\"send_commit\":%s,"
		       "\"incremental_ring\":%s,\"bundle_refused\":%s,\"reason\":\"%s\","
		       "\"best\":\"%s\",\"auto\":\"%s\"}\n",
		       p.release, p.io_uring ? "true" : "false", p.pbuf_ring ? "true" : "false",
		       p.recv_multishot ? "true" : "false", p.recv_bundle ? "true" : "false",
		       p.send_bundle ? "true" : "false", p.send_commit ? "true" : "false",
		       p.inc_ring ? "true" : "false",
		       p.bundle_refused ? "true" : "false", p.reason,
		       p.best ? sheaf_io_name(p.best) : "none",
		       io > 0 ? sheaf_io_name(io) : "none");
		return io > 0 ? 0 : 1;
	}
	printf("kernel              %s\n", p.release);
	printf("io_uring            %s\n", yes_no(p.io_uring));
	printf("provided-buf rings  %s\n", yes_no(p.pbuf_ring));
	printf("multishot recv      %s\n", yes_no(p.recv_multishot));
	printf("recv bundles        %s\n", yes_no(p.recv_bundle));
	printf("send bundles        %s\n", yes_no(p.send_bundle));
	printf("send commit rule    %s\n", yes_no(p.send_commit));
	printf("incremental rings   %s\n", yes_no(p.inc_ring));
	if (p.reason[0])
		printf("note                %s\n", p.reason);
	printf("auto picks          %s", p.best ? sheaf_io_name(p.best) : "none");
	if (env && *env)
		printf(" (SHEAF_IO=%s -> %s)", env, io > 0 ? sheaf_io_name(io) : "unusable");
	printf("\n");
	return io > 0 ? 0 : 1;
}
