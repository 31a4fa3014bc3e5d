/* thunder — what thunderctl's command files share (thunderctl.c: image,
 * node, pool, vol, vm; cluster.c: cluster and api): the command tables'
 * entry, the global options, option parsing, and printing.
 *
 * Messages go to stderr as "thunderctl: ...", once, where the failure is
 * seen.  Single-threaded (getopt's state is global).
 */
#ifndef THUNDER_CLIUTIL_H
#define THUNDER_CLIUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "digest.h"

struct json_object;

#define PROG "thunderctl"

/* Exit status of a usage error and of a --wait that timed out (the cluster
 * and api commands; the others exit 1 on any failure). */
#define EXIT_USAGE 2
#define EXIT_TIMEOUT 3

struct command {
  const char *name;
  const char *synopsis;  /* arguments, for the usage text */
  const char *summary;   /* one line */
  /* Runs the command; argv[0] is its name.  Returns the exit status. */
  int (*run)(int argc, char **argv);
  /* A group has subcommands instead of run: a table ending with a NULL
   * name. */
  const struct command *subcommands;
};

/* The global options: where the node or the API is, and the token file
 * (NULL: the default of the service the command talks to).  Set by main
 * and by the commands that take them after their name. */
struct cli_global {
  const char *node;
  const char *api;
  const char *token_file;
  /* HTTPS: the CA that signed the server's certificate, this client's
   * certificate and key (NULL: $THUNDER_CACERT, $THUNDER_CERT,
   * $THUNDER_KEY, else libcurl's defaults and no client certificate). */
  const char *cacert, *cert, *key;
};
extern struct cli_global cli_global;

/* getopt values of the long options some commands also take after their
 * name (a command's own options count from 256). */
enum { OPT_NODE = 512, OPT_TOKEN_FILE, OPT_API };

/* Restarts getopt for a command's argv (argv[0] is its name), reporting
 * errors through cli_option_error rather than printing them. */
void cli_getopt_start(void);

/* Reports getopt's error c (':' a missing value, else an unknown option)
 * of command cmd ("image attach"); returns 1. */
int cli_option_error(const char *cmd, char **argv, int c);

/* Fails unless exactly want arguments are left after the options: prints
 * "CMD: expected WHAT; see ..." (WHAT: "one NAME", "no arguments") or, when
 * want is 0 and what NULL, "CMD: unexpected argument 'X'; see ...".
 * Returns true if the count is right. */
bool cli_args_left(const char *cmd, int argc, char **argv, int want,
                   const char *what);

/* The one argument left after the options, an image name, into *name:
 * false with a message when there is not exactly one or it is not a valid
 * image name. */
bool cli_name_arg(const char *cmd, int argc, char **argv, const char **name);

/* A non-empty environment variable, or NULL. */
const char *cli_env(const char *name);

/* Parses a decimal number in [min, max]; -1 if it is not one. */
int cli_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);

/* Parses the value of option opt ("--vcpus") as cli_parse_uint; -1 with
 * "OPT 'S': expected UNIT from MIN to MAX" (unit: "a number", "GiB"). */
int cli_uint_option(const char *opt, const char *s, const char *unit,
                    unsigned min, unsigned max, unsigned *out);

/* Parses --memory: MiB, or a size with a suffix that is whole MiB (at most
 * 16 TiB); -1 if malformed. */
int cli_parse_memory(const char *s, unsigned *mib);

/* Checks an image name given on the command line; false with a message. */
bool cli_check_name(const char *name);

/* Parses --version: 64 hex digits into hex (lower case); -1 with a
 * message. */
int cli_parse_version(const char *version, char hex[DIGEST_HEX_LEN + 1]);

/* Prints o as pretty JSON on stdout. */
void cli_print_json(struct json_object *o);

/* Member key of o if it is a string, else fallback. */
const char *cli_get_str(struct json_object *o, const char *key,
                        const char *fallback);

/* Member key of o if it is a non-negative integer. */
bool cli_get_u64(struct json_object *o, const char *key, uint64_t *out);

/* Writes n bytes in binary units ("1.5 GiB", "512 B") into buf. */
const char *cli_human_bytes(uint64_t n, char *buf, size_t len);

/* Widens a table column *w to fit s. */
void cli_widen(int *w, const char *s);

#endif
