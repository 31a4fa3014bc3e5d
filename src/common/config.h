/* thunder — options from a config file and the command line.
 *
 * A program declares one table of options; each is both a command-line
 * flag (--name VALUE, --name=VALUE, or --name alone for booleans) and a
 * config-file key.  The config file holds "key = value" lines, '#'
 * comments and blank lines.  Command-line values override the file.
 * Every error names its origin: "FILE:LINE: key 'k': ..." or "--flag: ...".
 */
#ifndef THUNDER_CONFIG_H
#define THUNDER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum config_type {
  CONFIG_TYPE_BOOL,   /* value: bool * */
  CONFIG_TYPE_STRING, /* value: char ** (heap; replaced on each set) */
  CONFIG_TYPE_UINT,   /* value: uint64_t *, decimal, within [min, max] */
  CONFIG_TYPE_OCTAL,  /* value: uint64_t *, octal (file modes), <= max */
};

struct config_opt {
  const char *name;
  enum config_type type;
  void *value;
  uint64_t min, max;
  const char *metavar;
  const char *help;
};

/* Largest config file accepted, in bytes. */
#define CONFIG_FILE_MAX (1024 * 1024)
/* Longest line of a config file, in bytes with its newline. */
#define CONFIG_LINE_MAX 4096

/* Loads options: the file named by --config (an error if missing) or else
 * default_path (skipped if missing), then the command line.  opts ends
 * with an entry whose name is NULL.  Returns 0 on success, 1 when --help
 * or --version was handled (usage printed), -1 on error (message printed
 * to stderr).  Positional arguments are errors. */
int config_load(const struct config_opt *opts, const char *prog,
                const char *default_path, int argc, char **argv);

/* Parses one config file.  Returns 0, or -1 with a message on stderr. */
int config_parse_file(const struct config_opt *opts, const char *path);

/* Sets one option from text; origin prefixes any error message. */
int config_set(const struct config_opt *opts, const char *origin,
               const char *key, const char *value);

/* Prints the usage text. */
void config_usage(FILE *fp, const char *prog, const struct config_opt *opts);

/* Frees the strings the table's options hold. */
void config_free(const struct config_opt *opts);

#endif
