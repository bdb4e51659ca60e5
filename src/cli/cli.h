/* The sheaf command: shared helpers for the subcommands. */
#ifndef SHEAF_CLI_H
#define SHEAF_CLI_H

#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sheaf.h"

#define EXIT_USAGE 2

/* A parsed HOST:PORT. */
struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[128]; /* as given, for messages */
};

/*
 * Parsers; they never print. Numbers are ASCII digits only: no sign, no
 * white space, no "0x", nothing after them. 0, -EINVAL (not such a number),
 * -ERANGE (a number, out of range), and *out untouched on error.
 */
int parse_num(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int parse_u32(const char *s, uint32_t *out);       /* 0 .. 2^32-1 */
/* A finite decimal number, >= 0: digits with a fraction and an exponent if
 * wanted ("2", "0.25", ".5", "1e-3"); no sign, space, "inf", "nan" or hex.
 * *rest is what follows it (a unit, "%"): the caller decides. */
int parse_real(const char *s, double *out, const char **rest);
/* digits, then K, M or G (x 1024^n, any case) with an optional B or iB; or B */
int parse_size(const char *s, uint64_t *out);
/* 1.2.3.4:80, [::1]:80, name:80 (resolved now: the first address); PORT
 * 0 to 65535 as parse_num; -EINVAL, -ERANGE (the port), or -ENOENT when
 * the name does not resolve */
int parse_addr(const char *s, struct addr *a);
/* parse_addr that never asks DNS (or /etc/hosts): numeric hosts only */
int parse_addr_numeric(const char *s, struct addr *a);

/* The value of --opt: these print what is wrong, naming the range; 0 or EXIT_USAGE. */
int addr_opt(const char *cmd, const char *opt, const char *val, struct addr *a);
int num_opt(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
	    uint64_t *out);
int u32_opt(const char *cmd, const char *opt, const char *val, uint32_t min, uint32_t max,
	    uint32_t *out);
int size_opt(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
	     uint64_t *out);
/* The address fd is bound to (port 0 resolved), as text too. */
int addr_bound(int fd, struct addr *a);
/* a,b,c (malloc'd; free_list also after an error): 0, -EINVAL (empty), -ENOMEM */
int parse_list(const char *s, char ***items, unsigned *n);
void free_list(char **items, unsigned n);

/* Prints "sheaf CMD: message" to stderr. */
void say(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Loop options shared by proxy and sink. */
struct io_opts {
	int io;            /* enum sheaf_io */
	uint32_t buf_size;
	uint32_t nbufs;    /* 0: derive from buf_size */
};
/* Parses --io/--buf-size/--bufs values; prints the error; 0 or EXIT_USAGE. */
int io_opt(const char *cmd, struct io_opts *o, const char *name, const char *val);
/* Fills a loop config; prints why it fails (resolving the mode). */
int io_config(const char *cmd, const struct io_opts *o, uint32_t max_conns,
	      struct sheaf_loop_config *cfg);
/* Stops `loop` on SIGINT/SIGTERM. */
void stop_on_signals(struct sheaf_loop *loop);
/*
 * sink and source: SIGHUP and SIGUSR1 only set a flag (never fatal), SIGUSR2
 * and SIGPIPE are ignored. With wait_mask, SIGHUP and SIGUSR1 are blocked
 * but in the mask given back, for epoll_pwait: a signal then always ends the
 * wait, never lands just before it. 0 or -errno.
 */
int info_signals(sigset_t *wait_mask);
#define INFO_HUP (1u << SIGHUP)
#define INFO_USR1 (1u << SIGUSR1) /* print the counters line */
/* The signals that came since the last call (INFO_* bits); logs SIGHUP. */
unsigned info_signals_take(const char *cmd);
double now_sec(void);

/*
 * Verified streams. A stream is a 32-byte header (magic, id, seed, length)
 * and then `length` bytes of a pattern that depends on (seed, id): any
 * loss, duplication, reordering or mix-up of streams changes the bytes.
 */
#define STREAM_HDR 32
#define PATTERN_LEN 1048573u /* prime: no buffer-aligned period */

struct pattern {
	uint8_t *bytes; /* PATTERN_LEN bytes, twice, so any window is contiguous */
	uint64_t seed;
};
int pattern_init(struct pattern *p, uint64_t seed);
void pattern_free(struct pattern *p);
uint32_t stream_start(uint64_t seed, uint32_t id);
void stream_header(uint8_t out[STREAM_HDR], uint32_t id, uint64_t seed, uint64_t len);

struct stream_check {
	uint8_t hdr[STREAM_HDR];
	uint32_t hdr_got;
	uint32_t id;
	uint64_t seed, len, off; /* off: payload bytes checked */
	uint32_t start;
	const struct pattern *pat;
	bool failed;
	bool bad_hdr; /* the header was not a stream header: id and seed mean nothing */
	uint64_t fail_off;
	char why[96];
};
/* Checks the next bytes; `pat_for` supplies the pattern for a seed. */
void stream_feed(struct stream_check *s, const uint8_t *data, size_t len,
		 const struct pattern *(*pat_for)(uint64_t seed, void *arg), void *arg);
/* At EOF: marks a short stream as failed. */
void stream_end(struct stream_check *s);

/*
 * A subcommand's command line parsed and checked, nothing run and nothing
 * kept (for the fuzzers): 0, EXIT_USAGE (the reason printed) or ARGS_HELP
 * (--help: the command prints its help). getopt_long's state is the
 * caller's: set optind to 0 before each call to start afresh.
 */
#define ARGS_HELP (-1)
int sink_check_args(int argc, char **argv);
int source_check_args(int argc, char **argv);
int bench_check_args(int argc, char **argv);
int probe_check_args(int argc, char **argv);
int proxy_check_args(int argc, char **argv);

int cmd_proxy(int argc, char **argv);
int cmd_sink(int argc, char **argv);
int cmd_source(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_probe(int argc, char **argv);

#endif
