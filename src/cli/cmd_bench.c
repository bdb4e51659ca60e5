/* sheaf bench: placeholder until the benchmark runner lands (issue 3). */
#include <stdio.h>

#include "cli.h"

int cmd_bench(int argc, char **argv)
{
	say("bench", "not built yet");
	return 1;
}
