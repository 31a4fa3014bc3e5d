/* thunderctl — the thunder command-line tool.
 *
 * Commands form a tree of tables: "thunderctl image add ..." looks up
 * "image" in top_commands, then "add" in image_commands, and calls its
 * handler with argv starting at "add".  A new command is one entry in a
 * table (and a handler); a new group is one table and one entry.
 * Every failure prints one message and exits 1.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "log.h"
#include "manifest.h"
#include "thunder-build.h"

#define PROG "thunderctl"

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

/* Prints the usage of a command group: path is "thunderctl image". */
static void
usage_group(FILE *fp, const char *path, const struct command *table)
{
  fprintf(fp, "Usage: %s COMMAND [ARGS...]\n\nCommands:\n", path);
  for (const struct command *c = table; c->name; c++)
    fprintf(fp, "  %s %s\n      %s\n", c->name, c->synopsis, c->summary);
  fprintf(fp, "\nRun '%s COMMAND --help' for a command's options.\n", path);
}

/* ---- image add --------------------------------------------------------- */

static void
usage_image_add(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " image add NAME PATH [--block-size N] [--threads N] [--json]\n"
          "\n"
          "Hashes the image file PATH and writes its manifest beside it as\n"
          "DIR/NAME" MANIFEST_SUFFIX ", where DIR is the directory of PATH.\n"
          "\n"
          "  NAME              image (export) name: 1-%d characters of\n"
          "                    A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n"
          "  --block-size N    block size, a power of two from 4K to 4M;\n"
          "                    K and M suffixes allowed (default 64K)\n"
          "  --threads N       hashing threads (default 0: one per CPU)\n"
          "  --json            print the summary as a JSON object\n"
          "  -h, --help        show this help\n",
          MANIFEST_NAME_MAX);
}

/* Parses a block size: decimal digits with an optional K or M suffix
 * (binary units).  -1 if malformed or not a power of two in range. */
static int
parse_block_size(const char *s, uint32_t *out)
{
  uint64_t v = 0;
  const char *p = s;

  if (*p < '0' || *p > '9')
    return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    v = v * 10 + (uint64_t)(*p - '0');
    if (v > MANIFEST_BLOCK_SIZE_MAX)
      return -1;
  }
  if (*p == 'K' || *p == 'k') {
    v *= 1024;
    p++;
  } else if (*p == 'M' || *p == 'm') {
    v *= 1024 * 1024;
    p++;
  }
  if (*p != '\0' || v < MANIFEST_BLOCK_SIZE_MIN ||
      v > MANIFEST_BLOCK_SIZE_MAX || (v & (v - 1)) != 0)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

/* Parses a thread count, 0..1024. */
static int
parse_threads(const char *s, unsigned *out)
{
  unsigned v = 0;

  if (*s == '\0')
    return -1;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    v = v * 10 + (unsigned)(*p - '0');
    if (v > 1024)
      return -1;
  }
  *out = v;
  return 0;
}

/* The manifest path for image path and name: dirname(path)/NAME.manifest.json. */
static char *
manifest_path_for(const char *path, const char *name)
{
  const char *slash = strrchr(path, '/');
  char *out;
  int r;

  if (slash == NULL)
    r = asprintf(&out, "%s%s", name, MANIFEST_SUFFIX);
  else
    r = asprintf(&out, "%.*s/%s%s", (int)(slash - path), path, name,
                 MANIFEST_SUFFIX);
  if (r < 0) {
    fprintf(stderr, PROG ": asprintf: manifest path: %s\n", strerror(errno));
    return NULL;
  }
  return out;
}

/* Prints the summary of a written manifest, as text or JSON. */
static int
print_summary(const struct manifest *m, const char *mpath, bool json)
{
  if (!json) {
    printf("image %s: format %s, size %" PRIu64 " bytes, block size %" PRIu32 ", %" PRIu64 " blocks, version %s\n",
           m->name, image_format_name(m->format), m->size, m->block_size,
           m->nblocks, m->version_hex);
    return 0;
  }

  CLEANUP_JSON_PUT struct json_object *o = json_object_new_object();
  if (o == NULL ||
      json_object_object_add(o, "name", json_object_new_string(m->name)) ||
      json_object_object_add(o, "file", json_object_new_string(m->file)) ||
      json_object_object_add(o, "manifest", json_object_new_string(mpath)) ||
      json_object_object_add(o, "format",
                             json_object_new_string(image_format_name(m->format))) ||
      json_object_object_add(o, "size", json_object_new_uint64(m->size)) ||
      json_object_object_add(o, "block_size",
                             json_object_new_uint64(m->block_size)) ||
      json_object_object_add(o, "blocks", json_object_new_uint64(m->nblocks)) ||
      json_object_object_add(o, "version",
                             json_object_new_string(m->version_hex))) {
    fprintf(stderr, PROG ": out of memory building the JSON summary\n");
    return -1;
  }
  printf("%s\n", json_object_to_json_string_ext(
                     o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
  return 0;
}

static int
cmd_image_add(int argc, char **argv)
{
  enum { OPT_BLOCK_SIZE = 256, OPT_THREADS, OPT_JSON };
  static const struct option longopts[] = {
    { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "json", no_argument, NULL, OPT_JSON },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  uint32_t block_size = MANIFEST_BLOCK_SIZE_DEFAULT;
  unsigned threads = 0;
  bool json = false;
  int c;

  optind = 0; /* glibc: restart scanning, argv[0] is "add" */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_BLOCK_SIZE:
      if (parse_block_size(optarg, &block_size) < 0) {
        fprintf(stderr, PROG ": --block-size '%s': must be a power of two from 4K to 4M (4096 to 4194304 bytes), e.g. 64K or 1M\n",
                optarg);
        return 1;
      }
      break;
    case OPT_THREADS:
      if (parse_threads(optarg, &threads) < 0) {
        fprintf(stderr, PROG ": --threads '%s': must be a number from 0 (one per CPU) to 1024\n",
                optarg);
        return 1;
      }
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'h':
      usage_image_add(stdout);
      return 0;
    case ':':
      fprintf(stderr, PROG ": image add: option '%s' needs a value\n",
              argv[optind - 1]);
      return 1;
    default:
      /* optopt is the letter of an unknown short option, 0 for a long
       * one (then argv[optind - 1] is the whole argument). */
      if (optopt != 0)
        fprintf(stderr, PROG ": image add: unknown option '-%c'; see '" PROG " image add --help'\n",
                optopt);
      else
        fprintf(stderr, PROG ": image add: unknown option '%s'; see '" PROG " image add --help'\n",
                argv[optind - 1]);
      return 1;
    }
  }
  if (argc - optind != 2) {
    fprintf(stderr, PROG ": image add: expected NAME and PATH; see '" PROG " image add --help'\n");
    return 1;
  }
  const char *name = argv[optind];
  const char *path = argv[optind + 1];

  if (!manifest_name_valid(name)) {
    fprintf(stderr, PROG ": image name '%s' is not valid: use 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n",
            name, MANIFEST_NAME_MAX);
    return 1;
  }
  CLEANUP_FREE char *mpath = manifest_path_for(path, name);
  if (mpath == NULL)
    return 1;

  /* Writing the manifest over the image itself would destroy it. */
  struct stat ist, mst;
  if (stat(path, &ist) == 0 && stat(mpath, &mst) == 0 &&
      ist.st_dev == mst.st_dev && ist.st_ino == mst.st_ino) {
    fprintf(stderr, PROG ": image %s: its manifest path %s is the image file itself; choose another NAME\n",
            path, mpath);
    return 1;
  }

  struct manifest *m = manifest_build(name, path, block_size, threads);
  if (m == NULL)
    return 1;
  int r = manifest_write(m, mpath);
  if (r == 0)
    r = print_summary(m, mpath, json);
  manifest_free(m);
  return r == 0 ? 0 : 1;
}

/* ---- Command tables ---------------------------------------------------- */

static const struct command image_commands[] = {
  { "add", "NAME PATH [--block-size N] [--threads N] [--json]",
    "hash an image and write its manifest", cmd_image_add, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command top_commands[] = {
  { "image", "COMMAND ...", "manage images and their manifests", NULL,
    image_commands },
  { NULL, NULL, NULL, NULL, NULL },
};

/* Finds argv[0] in table and runs it; path names the group so far
 * ("thunderctl", "thunderctl image") for messages. */
static int
dispatch(const char *path, const struct command *table, int argc,
         char **argv)
{
  if (argc < 1) {
    usage_group(stderr, path, table);
    return 1;
  }
  if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0 ||
      strcmp(argv[0], "help") == 0) {
    usage_group(stdout, path, table);
    return 0;
  }
  for (const struct command *c = table; c->name; c++) {
    if (strcmp(c->name, argv[0]) != 0)
      continue;
    if (c->run)
      return c->run(argc, argv);
    char sub[128];
    snprintf(sub, sizeof sub, "%s %s", path, c->name);
    return dispatch(sub, c->subcommands, argc - 1, argv + 1);
  }
  fprintf(stderr, "%s: unknown command '%s'; see '%s --help'\n", path,
          argv[0], path);
  return 1;
}

int
main(int argc, char **argv)
{
  log_init(PROG, "stderr");

  if (argc >= 2 && (strcmp(argv[1], "--version") == 0 ||
                    strcmp(argv[1], "-V") == 0)) {
    printf(PROG " %s\n", THUNDER_VERSION);
    return 0;
  }
  if (argc >= 2 && (strcmp(argv[1], "-h") == 0 ||
                    strcmp(argv[1], "--help") == 0)) {
    printf(PROG " %s — control thunder, the VM image server\n\n",
           THUNDER_VERSION);
    usage_group(stdout, PROG, top_commands);
    printf("\nOptions:\n"
           "  -h, --help     show this help\n"
           "  -V, --version  show the version\n");
    return 0;
  }
  return dispatch(PROG, top_commands, argc - 1, argv + 1);
}
