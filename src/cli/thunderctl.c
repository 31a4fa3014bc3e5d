/* thunderctl — the thunder command-line tool.
 *
 * Commands form a tree of tables: "thunderctl image add ..." looks up
 * "image" in top_commands, then "add" in image_commands, and calls its
 * handler with argv starting at "add".  A new command is one entry in a
 * table (and a handler); a new group is one table and one entry.
 * Every failure prints one message and exits 1.
 *
 * Global options come before the command: --node URL and --token-file FILE
 * name the thunderd control endpoint for the node commands (image attach,
 * detach, stats, list), which talk to it through nodeclient.c; those
 * commands also take them after their name.
 *
 * The cluster commands and the "api" group (api node list, api image
 * register/list) talk to thunder-api through apiclient.c: global --api URL
 * (else $THUNDER_API, else http://127.0.0.1:7080), and --token-file FILE
 * (else $THUNDER_API_TOKEN_FILE, else /etc/thunder/api.token); they also
 * take both after their name.  --token-file names the token of whichever
 * service the command talks to.  They exit 2 on a usage error and 3 when
 * --wait times out.
 *
 * The pool commands (pool ensure, vol create/delete, vm create/delete)
 * work on this host's libvirt storage pool through src/pool; they take
 * --pool, --pool-path and --libvirt-uri after their name, with defaults
 * from $THUNDER_POOL, $THUNDER_POOL_PATH and $THUNDER_LIBVIRT_URI.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <libnbd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apiclient.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "nodeclient.h"
#include "pool.h"
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

/* ---- commands on a node's control endpoint (--node URL) ------------------- */

/* The global options: where the node or the API is, and the token file
 * (NULL: the default of the service the command talks to). */
static struct {
  const char *node;
  const char *api;
  const char *token_file;
} global = { NULL, NULL, NULL };

/* Long options every node (API) command also takes after its name. */
enum { OPT_NODE = 512, OPT_TOKEN_FILE, OPT_API };

/* Handles --node and --token-file inside a command's getopt loop: true
 * if c was one of them. */
static bool
node_option(int c)
{
  if (c == OPT_NODE)
    global.node = optarg;
  else if (c == OPT_TOKEN_FILE)
    global.token_file = optarg;
  else
    return false;
  return true;
}

/* Reports getopt's errors of command cmd ("image attach"). */
static int
option_error(const char *cmd, char **argv, int c)
{
  if (c == ':')
    fprintf(stderr, PROG ": %s: option '%s' needs a value\n", cmd,
            argv[optind - 1]);
  else if (optopt != 0)
    fprintf(stderr, PROG ": %s: unknown option '-%c'; see '" PROG " %s --help'\n",
            cmd, optopt, cmd);
  else
    fprintf(stderr, PROG ": %s: unknown option '%s'; see '" PROG " %s --help'\n",
            cmd, argv[optind - 1], cmd);
  return 1;
}

/* A client of the node named by --node, with the token.  NULL with a
 * message. */
static struct nodeclient *
node_client(const char *cmd)
{
  if (global.node == NULL) {
    fprintf(stderr, PROG ": %s: which node? give --node URL (e.g. --node http://127.0.0.1:7000)\n",
            cmd);
    return NULL;
  }
  CLEANUP_FREE char *token = nodeclient_token(
      global.token_file ? global.token_file : NODECLIENT_TOKEN_FILE);
  if (token == NULL)
    return NULL;
  struct nodeclient *nc = nodeclient_new(global.node, token);
  explicit_bzero(token, strlen(token));
  return nc;
}

/* Sends METHOD /v1/images/NAME (with body, if any) through nc for the
 * command cmd ("image stats") and frees nc.  Returns the HTTP status with
 * the reply in *reply, or -1 with a message printed. */
static int
image_call(struct nodeclient *nc, const char *cmd, const char *method,
           const char *name, struct json_object *body,
           struct json_object **reply)
{
  char path[sizeof "/v1/images/" + MANIFEST_NAME_MAX];
  char what[64 + MANIFEST_NAME_MAX];
  snprintf(path, sizeof path, "/v1/images/%s", name);
  snprintf(what, sizeof what, "%s %s", cmd, name);
  int status = nodeclient_call(nc, method, path, body, what, reply);
  nodeclient_free(nc);
  return status;
}

/* Checks an image name given on the command line. */
static bool
check_name(const char *name)
{
  if (manifest_name_valid(name))
    return true;
  fprintf(stderr, PROG ": image name '%s' is not valid: use 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n",
          name, MANIFEST_NAME_MAX);
  return false;
}

static void
print_json(struct json_object *o)
{
  printf("%s\n", json_object_to_json_string_ext(
                     o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                            JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* Member key of o if it is a string, else fallback. */
static const char *
get_str(struct json_object *o, const char *key, const char *fallback)
{
  struct json_object *v;
  if (o && json_object_object_get_ex(o, key, &v) &&
      json_object_is_type(v, json_type_string))
    return json_object_get_string(v);
  return fallback;
}

/* Member key of o if it is a non-negative integer. */
static bool
get_u64(struct json_object *o, const char *key, uint64_t *out)
{
  struct json_object *v;
  if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
      !json_object_is_type(v, json_type_int))
    return false;
  *out = json_object_get_uint64(v);
  return true;
}

/* Writes n bytes in binary units ("1.5 GiB", "512 B") into buf. */
static const char *
human_bytes(uint64_t n, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = (double)n;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", n);
  else
    snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

/* ---- image attach ------------------------------------------------------ */

static void
usage_image_attach(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " --node URL image attach NAME --upstream URI [--upstream URI ...]\n"
          "                  [--version HEX] [--json]\n"
          "\n"
          "Attaches image NAME to the node: the node serves it at once and fetches\n"
          "its blocks on demand from the upstreams, in order: parent first, origin\n"
          "last (PUT /v1/images/NAME).\n"
          "\n"
          "  --upstream URI    an NBD URI: nbd://HOST:PORT/NAME or\n"
          "                    nbd+unix:///NAME?socket=PATH; 1 to %d of them\n"
          "  --version HEX     the image version (64 hex digits, as printed by\n"
          "                    'image add'); without it the manifest is read from\n"
          "                    the last upstream (export NAME" MANIFEST_EXPORT_SUFFIX ") and hashed\n"
          "  --json            print the node's reply as JSON\n"
          "  --node URL        the node's control endpoint, e.g. http://127.0.0.1:7000\n"
          "  --token-file FILE its token (default " NODECLIENT_TOKEN_FILE ";\n"
          "                    $" NODECLIENT_TOKEN_ENV " overrides it)\n"
          "  -h, --help        show this help\n",
          NODECLIENT_UPSTREAMS_MAX);
}

/* Reads the manifest of image name from the NBD server at uri (export
 * NAME@manifest) and writes its SHA-256, the image version, into hex.
 * -1 with a message. */
static int
resolve_version(const char *name, const char *uri, char hex[DIGEST_HEX_LEN + 1])
{
  char export[MANIFEST_NAME_MAX + sizeof MANIFEST_EXPORT_SUFFIX];
  snprintf(export, sizeof export, "%s%s", name, MANIFEST_EXPORT_SUFFIX);

  struct nbd_handle *h = nbd_create();
  if (h == NULL) {
    fprintf(stderr, PROG ": nbd_create: %s\n", nbd_get_error());
    return -1;
  }
  CLEANUP_FREE char *buf = NULL;
  int r = -1;
  int64_t size;

  if (nbd_set_opt_mode(h, true) == -1 || nbd_connect_uri(h, uri) == -1) {
    fprintf(stderr, PROG ": manifest of '%s': cannot connect to %s: %s\n",
            name, uri, nbd_get_error());
    goto out;
  }
  if (nbd_set_export_name(h, export) == -1 || nbd_opt_go(h) == -1) {
    fprintf(stderr, PROG ": manifest of '%s': %s has no export %s: %s\n",
            name, uri, export, nbd_get_error());
    goto out;
  }
  size = nbd_get_size(h);
  if (size <= 0 || (uint64_t)size > MANIFEST_FILE_MAX) {
    fprintf(stderr, PROG ": manifest of '%s': export %s at %s has size %" PRId64 "; expected 1 to %zu bytes\n",
            name, export, uri, size, MANIFEST_FILE_MAX);
    goto out;
  }
  buf = malloc((size_t)size);
  if (buf == NULL) {
    fprintf(stderr, PROG ": manifest of '%s': malloc: %s\n", name,
            strerror(errno));
    goto out;
  }
  for (int64_t off = 0; off < size;) {
    size_t n = (size_t)(size - off) < 4u * 1024 * 1024
                   ? (size_t)(size - off) : 4u * 1024 * 1024;
    if (nbd_pread(h, buf + off, n, (uint64_t)off, 0) == -1) {
      fprintf(stderr, PROG ": manifest of '%s': reading %s from %s: %s\n",
              name, export, uri, nbd_get_error());
      goto out;
    }
    off += (int64_t)n;
  }
  nbd_shutdown(h, 0);

  /* It must be a manifest, and of this image. */
  char origin[512];
  snprintf(origin, sizeof origin, "%.200s export %s", uri, export);
  struct manifest *m = manifest_parse(buf, (size_t)size, origin);
  if (m == NULL)
    goto out;
  if (strcmp(m->name, name) != 0) {
    fprintf(stderr, PROG ": manifest of '%s': %s is the manifest of image '%s'\n",
            name, origin, m->name);
    manifest_free(m);
    goto out;
  }
  manifest_free(m);
  uint8_t d[DIGEST_LEN];
  digest_sha256(buf, (size_t)size, d);
  digest_to_hex(d, hex);
  r = 0;
out:
  nbd_close(h);
  return r;
}

static int
cmd_image_attach(int argc, char **argv)
{
  enum { OPT_UPSTREAM = 256, OPT_VERSION, OPT_JSON };
  static const struct option longopts[] = {
    { "upstream", required_argument, NULL, OPT_UPSTREAM },
    { "version", required_argument, NULL, OPT_VERSION },
    { "json", no_argument, NULL, OPT_JSON },
    { "node", required_argument, NULL, OPT_NODE },
    { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *ups[NODECLIENT_UPSTREAMS_MAX];
  size_t nups = 0;
  const char *version = NULL;
  bool json = false;
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (node_option(c))
      continue;
    switch (c) {
    case OPT_UPSTREAM:
      if (nups == NODECLIENT_UPSTREAMS_MAX) {
        fprintf(stderr, PROG ": image attach: at most %d --upstream\n",
                NODECLIENT_UPSTREAMS_MAX);
        return 1;
      }
      ups[nups++] = optarg;
      break;
    case OPT_VERSION:
      version = optarg;
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'h':
      usage_image_attach(stdout);
      return 0;
    default:
      return option_error("image attach", argv, c);
    }
  }
  if (argc - optind != 1) {
    fprintf(stderr, PROG ": image attach: expected one NAME; see '" PROG " image attach --help'\n");
    return 1;
  }
  const char *name = argv[optind];
  if (!check_name(name))
    return 1;
  if (nups == 0) {
    fprintf(stderr, PROG ": image attach: give at least one --upstream URI (parent first, origin last)\n");
    return 1;
  }

  char hex[DIGEST_HEX_LEN + 1];
  if (version) {
    uint8_t d[DIGEST_LEN];
    if (digest_from_hex(version, d) == -1) {
      fprintf(stderr, PROG ": --version '%s': expected 64 hex digits (the version printed by 'image add')\n",
              version);
      return 1;
    }
    digest_to_hex(d, hex);
  }

  struct nodeclient *nc = node_client("image attach");
  if (nc == NULL)
    return 1;
  if (version == NULL) {
    if (resolve_version(name, ups[nups - 1], hex) == -1) {
      nodeclient_free(nc);
      return 1;
    }
    fprintf(json ? stderr : stdout, "resolved version %s from %s\n", hex,
            ups[nups - 1]);
  }

  CLEANUP_JSON_PUT struct json_object *body = json_object_new_object();
  struct json_object *arr = json_object_new_array();
  bool built = body && arr &&
               !json_object_object_add(body, "version",
                                       json_object_new_string(hex));
  if (built && json_object_object_add(body, "upstreams", arr) == 0)
    arr = NULL; /* body owns it */
  else
    built = false;
  json_object_put(arr);
  struct json_object *ua;
  if (built && json_object_object_get_ex(body, "upstreams", &ua)) {
    for (size_t i = 0; built && i < nups; i++)
      built = json_object_array_add(ua, json_object_new_string(ups[i])) == 0;
  }
  if (!built) {
    fprintf(stderr, PROG ": image attach: out of memory\n");
    nodeclient_free(nc);
    return 1;
  }

  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = image_call(nc, "image attach", "PUT", name, body, &reply);
  if (status < 0)
    return 1;
  if (json) {
    if (reply)
      print_json(reply);
  } else if (status == 201) {
    printf("attached %s version %s with %zu upstream%s\n", name, hex, nups,
           nups == 1 ? "" : "s");
  } else {
    printf("%s was already attached with version %s; upstreams set (%zu)\n",
           name, hex, nups);
  }
  return 0;
}

/* ---- image detach ------------------------------------------------------- */

static void
usage_image_detach(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " --node URL image detach NAME\n"
          "\n"
          "Detaches image NAME from the node (DELETE /v1/images/NAME): it is no\n"
          "longer served; its cache stays on disk for a later attach.\n"
          "\n"
          "  --node URL        the node's control endpoint, e.g. http://127.0.0.1:7000\n"
          "  --token-file FILE its token (default " NODECLIENT_TOKEN_FILE ";\n"
          "                    $" NODECLIENT_TOKEN_ENV " overrides it)\n"
          "  -h, --help        show this help\n");
}

/* Parses the options of a command taking NAME and an optional --json
 * (json NULL: no --json).  Returns -1 to go on, else an exit status. */
static int
name_command_args(const char *cmd, void (*usage)(FILE *), int argc,
                  char **argv, bool *json, const char **name)
{
  enum { OPT_JSON = 256 };
  static const struct option with_json[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "node", required_argument, NULL, OPT_NODE },
    { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", json ? with_json : with_json + 1,
                          NULL)) != -1) {
    if (node_option(c))
      continue;
    if (c == OPT_JSON && json) {
      *json = true;
    } else if (c == 'h') {
      usage(stdout);
      return 0;
    } else {
      return option_error(cmd, argv, c);
    }
  }
  int want = name ? 1 : 0;
  if (argc - optind != want) {
    fprintf(stderr, PROG ": %s: expected %s; see '" PROG " %s --help'\n", cmd,
            name ? "one NAME" : "no arguments", cmd);
    return 1;
  }
  if (name) {
    *name = argv[optind];
    if (!check_name(*name))
      return 1;
  }
  return -1;
}

static int
cmd_image_detach(int argc, char **argv)
{
  const char *name;
  int r = name_command_args("image detach", usage_image_detach, argc, argv,
                            NULL, &name);
  if (r >= 0)
    return r;
  struct nodeclient *nc = node_client("image detach");
  if (nc == NULL)
    return 1;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (image_call(nc, "image detach", "DELETE", name, NULL, &reply) < 0)
    return 1;
  printf("detached %s\n", name);
  return 0;
}

/* ---- image stats ---------------------------------------------------------- */

static void
usage_image_stats(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " --node URL image stats NAME [--json]\n"
          "\n"
          "Shows the state and counters of image NAME on the node\n"
          "(GET /v1/images/NAME; schemas/node-image.schema.json).\n"
          "\n"
          "  --json            print the node's reply as JSON\n"
          "  --node URL        the node's control endpoint, e.g. http://127.0.0.1:7000\n"
          "  --token-file FILE its token (default " NODECLIENT_TOKEN_FILE ";\n"
          "                    $" NODECLIENT_TOKEN_ENV " overrides it)\n"
          "  -h, --help        show this help\n");
}

/* Prints one image's state as a readable table. */
static void
print_stats(struct json_object *o)
{
  char h1[32];
  uint64_t size = 0, bs = 0, blocks = 0;

  printf("image       %s\n", get_str(o, "name", "?"));
  printf("version     %s\n", get_str(o, "version", "?"));
  printf("state       %s\n", get_str(o, "state", "?"));
  if (get_u64(o, "size", &size) && get_u64(o, "block_size", &bs) &&
      get_u64(o, "blocks", &blocks))
    printf("size        %" PRIu64 " bytes (%s), %" PRIu64 " blocks of %" PRIu64 " bytes\n",
           size, human_bytes(size, h1, sizeof h1), blocks, bs);

  struct json_object *ups;
  if (json_object_object_get_ex(o, "upstreams", &ups) &&
      json_object_is_type(ups, json_type_array) &&
      json_object_array_length(ups) > 0) {
    size_t n = json_object_array_length(ups);
    int w = (int)strlen("upstream");
    for (size_t i = 0; i < n; i++) {
      int l = (int)strlen(get_str(json_object_array_get_idx(ups, i), "uri", "?"));
      if (l > w)
        w = l;
    }
    printf("\n  %-*s  %10s  %12s  %15s  %7s  %s\n", w, "upstream", "blocks",
           "bytes", "verify_failures", "errors", "faulty");
    for (size_t i = 0; i < n; i++) {
      struct json_object *u = json_object_array_get_idx(ups, i), *f;
      uint64_t ub = 0, ubytes = 0, uv = 0, ue = 0;
      get_u64(u, "blocks", &ub);
      get_u64(u, "bytes", &ubytes);
      get_u64(u, "verify_failures", &uv);
      get_u64(u, "errors", &ue);
      bool faulty = json_object_object_get_ex(u, "faulty", &f) &&
                    json_object_get_boolean(f);
      printf("  %-*s  %10" PRIu64 "  %12" PRIu64 "  %15" PRIu64 "  %7" PRIu64 "  %s\n",
             w, get_str(u, "uri", "?"), ub, ubytes, uv, ue,
             faulty ? "FAULTY" : "no");
    }
  }

  struct json_object *c;
  if (json_object_object_get_ex(o, "counters", &c) &&
      json_object_is_type(c, json_type_object)) {
    printf("\ncounters\n");
    json_object_object_foreach(c, key, val) {
      if (!json_object_is_type(val, json_type_int)) {
        printf("  %-24s %s\n", key, json_object_get_string(val));
        continue;
      }
      uint64_t v = json_object_get_uint64(val);
      size_t kl = strlen(key);
      if (kl > 6 && strcmp(key + kl - 6, "_bytes") == 0 && v >= 1024)
        printf("  %-24s %15" PRIu64 "  (%s)\n", key, v,
               human_bytes(v, h1, sizeof h1));
      else
        printf("  %-24s %15" PRIu64 "\n", key, v);
    }
  }
}

static int
cmd_image_stats(int argc, char **argv)
{
  const char *name;
  bool json = false;
  int r = name_command_args("image stats", usage_image_stats, argc, argv,
                            &json, &name);
  if (r >= 0)
    return r;
  struct nodeclient *nc = node_client("image stats");
  if (nc == NULL)
    return 1;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (image_call(nc, "image stats", "GET", name, NULL, &reply) < 0)
    return 1;
  if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
    fprintf(stderr, PROG ": image stats %s: the reply is not a JSON object\n",
            name);
    return 1;
  }
  if (json)
    print_json(reply);
  else
    print_stats(reply);
  return 0;
}

/* ---- image list ------------------------------------------------------------ */

static void
usage_image_list(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " --node URL image list [--json]\n"
          "\n"
          "Lists the images the node serves (GET /v1/images).\n"
          "\n"
          "  --json            print the node's reply as JSON\n"
          "  --node URL        the node's control endpoint, e.g. http://127.0.0.1:7000\n"
          "  --token-file FILE its token (default " NODECLIENT_TOKEN_FILE ";\n"
          "                    $" NODECLIENT_TOKEN_ENV " overrides it)\n"
          "  -h, --help        show this help\n");
}

static int
cmd_image_list(int argc, char **argv)
{
  bool json = false;
  int r = name_command_args("image list", usage_image_list, argc, argv,
                            &json, NULL);
  if (r >= 0)
    return r;
  struct nodeclient *nc = node_client("image list");
  if (nc == NULL)
    return 1;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = nodeclient_call(nc, "GET", "/v1/images", NULL, "image list",
                               &reply);
  nodeclient_free(nc);
  if (status < 0)
    return 1;
  struct json_object *images;
  if (reply == NULL || !json_object_object_get_ex(reply, "images", &images) ||
      !json_object_is_type(images, json_type_array)) {
    fprintf(stderr, PROG ": image list: the reply has no \"images\" array\n");
    return 1;
  }
  if (json) {
    print_json(reply);
    return 0;
  }
  size_t n = json_object_array_length(images);
  int w = (int)strlen("NAME");
  for (size_t i = 0; i < n; i++) {
    int l = (int)strlen(get_str(json_object_array_get_idx(images, i), "name", "?"));
    if (l > w)
      w = l;
  }
  printf("%-*s  %-8s  %-12s  %10s  %s\n", w, "NAME", "STATE", "VERSION",
         "SIZE", "CACHED");
  for (size_t i = 0; i < n; i++) {
    struct json_object *o = json_object_array_get_idx(images, i), *c = NULL;
    char hs[32], hc[48], cached[64] = "-";
    uint64_t size = 0, valid;
    bool has_size = get_u64(o, "size", &size);
    json_object_object_get_ex(o, "counters", &c);
    if (get_u64(c, "valid_cache_bytes", &valid)) {
      if (has_size && size > 0)
        snprintf(cached, sizeof cached, "%s (%.0f%%)",
                 human_bytes(valid, hc, sizeof hc),
                 100.0 * (double)valid / (double)size);
      else
        snprintf(cached, sizeof cached, "%s", human_bytes(valid, hc, sizeof hc));
    }
    printf("%-*s  %-8s  %-12.12s  %10s  %s\n", w, get_str(o, "name", "?"),
           get_str(o, "state", "?"), get_str(o, "version", "?"),
           has_size ? human_bytes(size, hs, sizeof hs) : "-", cached);
  }
  if (n == 0)
    printf("(no images)\n");
  return 0;
}

/* ---- node show ---------------------------------------------------------------- */

static void
usage_node_show(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " --node URL node show [--json]\n"
          "\n"
          "Shows what the node reports about itself (GET /v1/node): host, CPUs,\n"
          "memory, libvirt pool and free disk, images attached, VMs.\n"
          "\n"
          "  --json            print the node's reply as JSON\n"
          "  --node URL        the node's control endpoint, e.g. http://127.0.0.1:7000\n"
          "  --token-file FILE its token (default " NODECLIENT_TOKEN_FILE ";\n"
          "                    $" NODECLIENT_TOKEN_ENV " overrides it)\n"
          "  -h, --help        show this help\n");
}

static int
cmd_node_show(int argc, char **argv)
{
  bool json = false;
  int r = name_command_args("node show", usage_node_show, argc, argv, &json,
                            NULL);
  if (r >= 0)
    return r;
  struct nodeclient *nc = node_client("node show");
  if (nc == NULL)
    return 1;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = nodeclient_call(nc, "GET", "/v1/node", NULL, "node show",
                               &reply);
  nodeclient_free(nc);
  if (status < 0)
    return 1;
  if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
    fprintf(stderr, PROG ": node show: the reply is not a JSON object\n");
    return 1;
  }
  if (json) {
    print_json(reply);
    return 0;
  }
  char h[48];
  uint64_t v;
  printf("hostname    %s\n", get_str(reply, "hostname", "?"));
  printf("mode        %s\n", get_str(reply, "mode", "?"));
  if (get_u64(reply, "vcpus", &v))
    printf("vcpus       %" PRIu64 "\n", v);
  if (get_u64(reply, "memory_mib", &v))
    printf("memory      %" PRIu64 " MiB (%s)\n", v,
           human_bytes(v * 1024 * 1024, h, sizeof h));
  const char *pool = get_str(reply, "pool", NULL);
  if (pool)
    printf("pool        %s at %s\n", pool, get_str(reply, "pool_path", "?"));
  else
    printf("pool        none\n");
  if (get_u64(reply, "disk_free_bytes", &v))
    printf("disk free   %" PRIu64 " bytes (%s)\n", v, human_bytes(v, h, sizeof h));
  printf("libvirt     %s\n", get_str(reply, "libvirt", "?"));
  const char *lerr = get_str(reply, "libvirt_error", NULL);
  if (lerr)
    printf("            %s\n", lerr);
  struct json_object *images;
  printf("images      ");
  size_t n = 0;
  if (json_object_object_get_ex(reply, "images", &images) &&
      json_object_is_type(images, json_type_array))
    n = json_object_array_length(images);
  for (size_t i = 0; i < n; i++) {
    struct json_object *o = json_object_array_get_idx(images, i);
    printf("%s%s", i ? ", " : "",
           json_object_is_type(o, json_type_string) ? json_object_get_string(o)
                                                    : "?");
  }
  printf("%s\n", n ? "" : "(none)");
  if (get_u64(reply, "vms", &v))
    printf("vms         %" PRIu64 "\n", v);
  else
    printf("vms         unknown\n");
  return 0;
}

/* ---- pool, vol, vm: the libvirt pool on this host (src/pool) ---------------- */

/* Where the pool is: --libvirt-uri, --pool, --pool-path after the command's
 * name, else $THUNDER_LIBVIRT_URI, $THUNDER_POOL, $THUNDER_POOL_PATH, else
 * pool.h's defaults (NULL). */
static struct pool_config pool_cfg;

/* Long options every pool command takes (after OPT_NODE's range). */
enum { OPT_LIBVIRT_URI = 768, OPT_POOL, OPT_POOL_PATH };

#define POOL_LONGOPTS                                                          \
  { "libvirt-uri", required_argument, NULL, OPT_LIBVIRT_URI },                 \
  { "pool", required_argument, NULL, OPT_POOL },                               \
  { "pool-path", required_argument, NULL, OPT_POOL_PATH }

#define POOL_OPTIONS_HELP                                                      \
  "  --pool NAME       the libvirt storage pool (default $THUNDER_POOL,\n"    \
  "                    else " POOL_DEFAULT_NAME ")\n"                          \
  "  --pool-path DIR   its directory (default $THUNDER_POOL_PATH, else\n"     \
  "                    " POOL_DEFAULT_PATH ")\n"                               \
  "  --libvirt-uri URI libvirt connection (default $THUNDER_LIBVIRT_URI,\n"   \
  "                    else " POOL_DEFAULT_URI ")\n"                           \
  "  -h, --help        show this help\n"

/* Handles the pool options inside a command's getopt loop: true if c was
 * one of them. */
static bool
pool_option(int c)
{
  if (c == OPT_LIBVIRT_URI)
    pool_cfg.uri = optarg;
  else if (c == OPT_POOL)
    pool_cfg.name = optarg;
  else if (c == OPT_POOL_PATH)
    pool_cfg.path = optarg;
  else
    return false;
  return true;
}

/* A non-empty environment variable, or NULL. */
static const char *
env_or_null(const char *name)
{
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* Connects to libvirt and ensures the pool (pool_cfg completed with the
 * environment).  NULL with a message. */
static struct pool *
open_pool(void)
{
  if (pool_cfg.uri == NULL)
    pool_cfg.uri = env_or_null("THUNDER_LIBVIRT_URI");
  if (pool_cfg.name == NULL)
    pool_cfg.name = env_or_null("THUNDER_POOL");
  if (pool_cfg.name == NULL)
    pool_cfg.name = POOL_DEFAULT_NAME;
  if (pool_cfg.path == NULL)
    pool_cfg.path = env_or_null("THUNDER_POOL_PATH");
  struct pool_error e;
  struct pool *p = pool_open(&pool_cfg, &e);
  if (p == NULL)
    fprintf(stderr, PROG ": %s\n", e.msg);
  return p;
}

/* Parses a size option (K, M, G, T suffixes); 0 is refused. */
static int
parse_size_option(const char *opt, const char *s, uint64_t *out)
{
  if (pool_parse_size(s, out) < 0 || *out == 0) {
    fprintf(stderr, PROG ": %s '%s': expected a size in bytes, with an optional K, M, G or T suffix (binary), e.g. 10G\n",
            opt, s);
    return -1;
  }
  return 0;
}

/* Parses a decimal number in [min, max]. */
static int
parse_uint_range(const char *s, unsigned min, unsigned max, unsigned *out)
{
  uint64_t v = 0;
  if (*s == '\0')
    return -1;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    v = v * 10 + (uint64_t)(*p - '0');
    if (v > max)
      return -1;
  }
  if (v < min)
    return -1;
  *out = (unsigned)v;
  return 0;
}

/* Parses the options of a pool command whose only argument is NAME (want
 * 1) or nothing (want 0).  Returns -1 to go on, else an exit status. */
static int
pool_command_args(const char *cmd, void (*usage)(FILE *), int argc,
                  char **argv, int want, const char **name)
{
  static const struct option longopts[] = {
    POOL_LONGOPTS,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (pool_option(c))
      continue;
    if (c == 'h') {
      usage(stdout);
      return 0;
    }
    return option_error(cmd, argv, c);
  }
  if (argc - optind != want) {
    fprintf(stderr, PROG ": %s: expected %s; see '" PROG " %s --help'\n", cmd,
            want ? "one NAME" : "no arguments", cmd);
    return 1;
  }
  if (want)
    *name = argv[optind];
  return -1;
}

/* ---- pool ensure ------------------------------------------------------------ */

static void
usage_pool_ensure(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " pool ensure [--pool NAME] [--pool-path DIR] [--libvirt-uri URI]\n"
          "\n"
          "Makes sure the libvirt storage pool exists: a 'dir' pool at DIR, built,\n"
          "started and autostarted.  A pool of that name with another type or\n"
          "another path is refused.  Prints the pool's name and directory.\n"
          "\n" POOL_OPTIONS_HELP);
}

static int
cmd_pool_ensure(int argc, char **argv)
{
  int r = pool_command_args("pool ensure", usage_pool_ensure, argc, argv, 0,
                            NULL);
  if (r >= 0)
    return r;
  struct pool *p = open_pool();
  if (p == NULL)
    return 1;
  printf("pool %s at %s: active, autostart\n", pool_cfg.name, pool_path(p));
  pool_close(p);
  return 0;
}

/* ---- vol create / delete ------------------------------------------------------ */

static void
usage_vol_create(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " vol create NAME --image IMAGE [--size SIZE]\n"
          "\n"
          "Creates VM volume NAME in the pool: a qcow2 overlay whose backing\n"
          "store is the anchor of IMAGE (IMAGE" POOL_ANCHOR_SUFFIX ", made when the image\n"
          "was attached to this node's thunderd, which must be serving it).\n"
          "Prints the volume's path.\n"
          "\n"
          "  --image IMAGE     the image the volume starts from\n"
          "  --size SIZE       its capacity: at least the image's size (the\n"
          "                    default); K, M, G, T suffixes (binary)\n"
          POOL_OPTIONS_HELP);
}

static int
cmd_vol_create(int argc, char **argv)
{
  enum { OPT_IMAGE = 256, OPT_SIZE };
  static const struct option longopts[] = {
    { "image", required_argument, NULL, OPT_IMAGE },
    { "size", required_argument, NULL, OPT_SIZE },
    POOL_LONGOPTS,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *image = NULL;
  uint64_t size = 0;
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (pool_option(c))
      continue;
    switch (c) {
    case OPT_IMAGE:
      image = optarg;
      break;
    case OPT_SIZE:
      if (parse_size_option("--size", optarg, &size) < 0)
        return 1;
      break;
    case 'h':
      usage_vol_create(stdout);
      return 0;
    default:
      return option_error("vol create", argv, c);
    }
  }
  if (argc - optind != 1) {
    fprintf(stderr, PROG ": vol create: expected one NAME; see '" PROG " vol create --help'\n");
    return 1;
  }
  if (image == NULL) {
    fprintf(stderr, PROG ": vol create: which image? give --image IMAGE\n");
    return 1;
  }
  struct pool *p = open_pool();
  if (p == NULL)
    return 1;
  char path[4096];
  struct pool_error e;
  int r = pool_vol_create(p, argv[optind], image, size, path, sizeof path, &e);
  pool_close(p);
  if (r < 0) {
    fprintf(stderr, PROG ": %s\n", e.msg);
    return 1;
  }
  printf("%s\n", path);
  return 0;
}

static void
usage_vol_delete(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " vol delete NAME\n"
          "\n"
          "Deletes VM volume NAME from the pool (not an image's anchor: those go\n"
          "when the image is detached).\n"
          "\n" POOL_OPTIONS_HELP);
}

static int
cmd_vol_delete(int argc, char **argv)
{
  const char *name;
  int r = pool_command_args("vol delete", usage_vol_delete, argc, argv, 1,
                            &name);
  if (r >= 0)
    return r;
  struct pool *p = open_pool();
  if (p == NULL)
    return 1;
  struct pool_error e;
  r = pool_vol_delete(p, name, &e);
  pool_close(p);
  if (r < 0) {
    fprintf(stderr, PROG ": %s\n", e.msg);
    return 1;
  }
  printf("deleted volume %s\n", name);
  return 0;
}

/* ---- vm create / delete ------------------------------------------------------- */

static void
usage_vm_create(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " vm create NAME --image IMAGE --vcpus N --memory MiB\n"
          "                  [--size SIZE] [--accel auto|kvm|tcg] [--console-log FILE]\n"
          "\n"
          "Creates volume NAME.qcow2 over IMAGE's anchor (as 'vol create'), then\n"
          "defines and starts libvirt domain NAME booting from it, its serial\n"
          "console logged to a file.  On failure nothing is left behind.\n"
          "Prints the domain's name, its accelerator and the console log's path.\n"
          "\n"
          "  --image IMAGE     the image the VM boots from\n"
          "  --vcpus N         virtual CPUs, 1-1024\n"
          "  --memory MiB      memory in MiB (or with a suffix: 512M, 2G)\n"
          "  --size SIZE       disk capacity, at least the image's size (default)\n"
          "  --accel A         kvm, tcg, or auto (default): KVM if a test vCPU\n"
          "                    really runs on this host's /dev/kvm, else TCG\n"
          "  --console-log FILE  the serial console's log (default\n"
          "                    /var/log/thunder/vm/NAME.log)\n"
          POOL_OPTIONS_HELP);
}

/* Parses --memory: MiB, or a size with a suffix that is whole MiB. */
static int
parse_memory(const char *s, unsigned *mib)
{
  size_t l = strlen(s);
  if (l > 0 && (s[l - 1] < '0' || s[l - 1] > '9')) {
    uint64_t bytes;
    if (pool_parse_size(s, &bytes) < 0 || bytes == 0 ||
        bytes % (1024 * 1024) != 0 || bytes / (1024 * 1024) > 16u * 1024 * 1024)
      return -1;
    *mib = (unsigned)(bytes / (1024 * 1024));
    return 0;
  }
  return parse_uint_range(s, 1, 16u * 1024 * 1024, mib);
}

static int
cmd_vm_create(int argc, char **argv)
{
  enum { OPT_IMAGE = 256, OPT_VCPUS, OPT_MEMORY, OPT_SIZE, OPT_ACCEL,
         OPT_CONSOLE_LOG };
  static const struct option longopts[] = {
    { "image", required_argument, NULL, OPT_IMAGE },
    { "vcpus", required_argument, NULL, OPT_VCPUS },
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "size", required_argument, NULL, OPT_SIZE },
    { "accel", required_argument, NULL, OPT_ACCEL },
    { "console-log", required_argument, NULL, OPT_CONSOLE_LOG },
    POOL_LONGOPTS,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct pool_vm_spec spec = { .accel = POOL_ACCEL_AUTO };
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (pool_option(c))
      continue;
    switch (c) {
    case OPT_IMAGE:
      spec.image = optarg;
      break;
    case OPT_VCPUS:
      if (parse_uint_range(optarg, 1, 1024, &spec.vcpus) < 0) {
        fprintf(stderr, PROG ": --vcpus '%s': expected a number from 1 to 1024\n",
                optarg);
        return 1;
      }
      break;
    case OPT_MEMORY:
      if (parse_memory(optarg, &spec.memory_mib) < 0) {
        fprintf(stderr, PROG ": --memory '%s': expected MiB from 1 to 16777216, or a whole number of MiB with a suffix (512M, 2G)\n",
                optarg);
        return 1;
      }
      break;
    case OPT_SIZE:
      if (parse_size_option("--size", optarg, &spec.capacity) < 0)
        return 1;
      break;
    case OPT_ACCEL:
      if (strcmp(optarg, "auto") == 0)
        spec.accel = POOL_ACCEL_AUTO;
      else if (strcmp(optarg, "kvm") == 0)
        spec.accel = POOL_ACCEL_KVM;
      else if (strcmp(optarg, "tcg") == 0)
        spec.accel = POOL_ACCEL_TCG;
      else {
        fprintf(stderr, PROG ": --accel '%s': expected auto, kvm or tcg\n",
                optarg);
        return 1;
      }
      break;
    case OPT_CONSOLE_LOG:
      spec.console_log = optarg;
      break;
    case 'h':
      usage_vm_create(stdout);
      return 0;
    default:
      return option_error("vm create", argv, c);
    }
  }
  if (argc - optind != 1) {
    fprintf(stderr, PROG ": vm create: expected one NAME; see '" PROG " vm create --help'\n");
    return 1;
  }
  spec.name = argv[optind];
  if (spec.image == NULL || spec.vcpus == 0 || spec.memory_mib == 0) {
    fprintf(stderr, PROG ": vm create: give --image IMAGE, --vcpus N and --memory MiB\n");
    return 1;
  }

  /* A relative console log is taken from the current directory: libvirt
   * (virtlogd) needs an absolute path. */
  CLEANUP_FREE char *log_abs = NULL;
  if (spec.console_log && spec.console_log[0] != '/') {
    CLEANUP_FREE char *cwd = getcwd(NULL, 0);
    if (cwd == NULL || asprintf(&log_abs, "%s/%s", cwd, spec.console_log) < 0) {
      fprintf(stderr, PROG ": --console-log %s: %s\n", spec.console_log,
              strerror(errno));
      return 1;
    }
    spec.console_log = log_abs;
  }
  char log[4096];
  if (spec.console_log)
    snprintf(log, sizeof log, "%s", spec.console_log);
  else
    pool_console_log_path(spec.name, log, sizeof log);

  /* Resolved here so that the choice can be printed. */
  if (spec.accel == POOL_ACCEL_AUTO)
    spec.accel = pool_kvm_usable() ? POOL_ACCEL_KVM : POOL_ACCEL_TCG;

  struct pool *p = open_pool();
  if (p == NULL)
    return 1;
  struct pool_error e;
  int r = pool_vm_create(p, &spec, &e);
  pool_close(p);
  if (r < 0) {
    fprintf(stderr, PROG ": %s\n", e.msg);
    return 1;
  }
  printf("domain %s started (%s)\nconsole log %s\n", spec.name,
         spec.accel == POOL_ACCEL_KVM ? "kvm" : "tcg", log);
  return 0;
}

static void
usage_vm_delete(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " vm delete NAME\n"
          "\n"
          "Stops (if running) and undefines libvirt domain NAME and deletes its\n"
          "volume NAME.qcow2; an error if neither exists.  The console log stays.\n"
          "\n" POOL_OPTIONS_HELP);
}

static int
cmd_vm_delete(int argc, char **argv)
{
  const char *name;
  int r = pool_command_args("vm delete", usage_vm_delete, argc, argv, 1,
                            &name);
  if (r >= 0)
    return r;
  struct pool *p = open_pool();
  if (p == NULL)
    return 1;
  struct pool_error e;
  r = pool_vm_delete(p, name, &e);
  pool_close(p);
  if (r < 0) {
    fprintf(stderr, PROG ": %s\n", e.msg);
    return 1;
  }
  printf("deleted domain %s and its volume\n", name);
  return 0;
}

/* ---- commands on thunder-api (--api URL) --------------------------------------
 *
 * cluster create|show|tree|list|delete, and api node list, api image
 * register|list.  They talk to thunder-api through apiclient.c with the
 * operator token.  Exit status: 0 done, 1 failed (the API refused, the
 * cluster failed, a reply made no sense), 2 usage error, 3 --wait timed out.
 */

#define EXIT_USAGE 2
#define EXIT_TIMEOUT 3

/* Longest cluster name (VM names are NAME-0000...), node name. */
#define CLUSTER_NAME_MAX 48
#define NODE_NAME_MAX 64
/* Cluster ids are 32 hex digits. */
#define CLUSTER_ID_LEN 32
/* Time between two polls of --wait, in ms. */
#define WAIT_POLL_MS 500
/* Default --timeout of --wait, in seconds (0: none). */
#define WAIT_TIMEOUT_DEFAULT 600

#define API_OPTIONS_HELP                                                       \
  "  --api URL         thunder-api (default $" APICLIENT_URL_ENV ", else\n"     \
  "                    " APICLIENT_URL_DEFAULT ")\n"                            \
  "  --token-file FILE the operator token (default $" APICLIENT_TOKEN_FILE_ENV ",\n" \
  "                    else " APICLIENT_TOKEN_FILE ")\n"                        \
  "  -h, --help        show this help\n"

#define API_LONGOPTS                                                           \
  { "api", required_argument, NULL, OPT_API },                                 \
  { "token-file", required_argument, NULL, OPT_TOKEN_FILE },                   \
  { "help", no_argument, NULL, 'h' }

/* Handles --api and --token-file inside a command's getopt loop: true if c
 * was one of them. */
static bool
api_option(int c)
{
  if (c == OPT_API)
    global.api = optarg;
  else if (c == OPT_TOKEN_FILE)
    global.token_file = optarg;
  else
    return false;
  return true;
}

/* Reports getopt's errors of API command cmd; returns EXIT_USAGE. */
static int
api_option_error(const char *cmd, char **argv, int c)
{
  option_error(cmd, argv, c);
  return EXIT_USAGE;
}

/* A client of the API named by --api / $THUNDER_API with the token of
 * --token-file / $THUNDER_API_TOKEN_FILE.  NULL with a message. */
static struct apiclient *
api_client(void)
{
  const char *url = global.api;
  if (url == NULL)
    url = env_or_null(APICLIENT_URL_ENV);
  if (url == NULL)
    url = APICLIENT_URL_DEFAULT;
  const char *file = global.token_file;
  if (file == NULL)
    file = env_or_null(APICLIENT_TOKEN_FILE_ENV);
  if (file == NULL)
    file = APICLIENT_TOKEN_FILE;
  CLEANUP_FREE char *token = apiclient_token(file);
  if (token == NULL)
    return NULL;
  struct apiclient *ac = apiclient_new(url, token);
  explicit_bzero(token, strlen(token));
  return ac;
}

static void
api_print_error(const struct apiclient *ac)
{
  fprintf(stderr, PROG ": %s\n", apiclient_error(ac));
}

/* ---- checked reading of replies ------------------------------------------
 *
 * A reply is hostile until checked: every field used is read through these,
 * which check its type; the first wrong field is kept as the message
 * ("cluster show ID: reply field vms[3].node: expected a string or null")
 * and the others return empty values, so a caller reads everything, then
 * looks at ck.failed once.  With ck.sanitize, strings with control
 * characters are replaced in the reply by printable copies. */
struct jcheck {
  const char *what;
  bool sanitize;
  bool failed;
  char msg[512];
};

static void __attribute__((format(printf, 2, 3)))
ck_fail(struct jcheck *ck, const char *fmt, ...)
{
  if (ck->failed)
    return;
  ck->failed = true;
  int n = snprintf(ck->msg, sizeof ck->msg, "%s: reply field ", ck->what);
  if (n < 0 || (size_t)n >= sizeof ck->msg)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ck->msg + n, sizeof ck->msg - (size_t)n, fmt, ap);
  va_end(ap);
}

/* Prints the failure of ck; returns 1. */
static int
ck_report(const struct jcheck *ck)
{
  fprintf(stderr, PROG ": %s\n", ck->msg);
  return 1;
}

/* ctx "" or "vms[3]." names where o is. */
static struct json_object *
ck_member(struct jcheck *ck, struct json_object *o, const char *ctx,
          const char *key, bool optional)
{
  struct json_object *v = NULL;
  /* json-c gives NULL for a JSON null. */
  if (o == NULL || !json_object_object_get_ex(o, key, &v) || v == NULL) {
    if (!optional)
      ck_fail(ck, "%s%s: missing or null", ctx, key);
    return NULL;
  }
  return v;
}

/* A string member; NULL when nullable and null or absent (optional).  A
 * missing or wrong one fails ck and gives "". */
static const char *
ck_str(struct jcheck *ck, struct json_object *o, const char *ctx,
       const char *key, bool nullable)
{
  struct json_object *v = ck_member(ck, o, ctx, key, nullable);
  if (v == NULL)
    return nullable && !ck->failed ? NULL : "";
  if (!json_object_is_type(v, json_type_string)) {
    ck_fail(ck, "%s%s: expected a string%s", ctx, key,
            nullable ? " or null" : "");
    return "";
  }
  const char *s = json_object_get_string(v);
  if (ck->sanitize) {
    size_t n = strlen(s) + 1;
    for (const char *p = s; *p; p++) {
      unsigned char c = (unsigned char)*p;
      if (c < 0x20 || c == 0x7f || (c == 0xc2 && (unsigned char)p[1] >= 0x80 &&
                                    (unsigned char)p[1] <= 0x9f)) {
        CLEANUP_FREE char *clean = malloc(n);
        if (clean)
          json_object_set_string(v, apiclient_sanitize(s, clean, n));
        break;
      }
    }
    s = json_object_get_string(v);
  }
  return s;
}

/* A non-negative integer member; *present false (and 0) when optional and
 * absent or null. */
static uint64_t
ck_u64(struct jcheck *ck, struct json_object *o, const char *ctx,
       const char *key, bool optional, bool *present)
{
  struct json_object *v = ck_member(ck, o, ctx, key, optional);
  if (present)
    *present = false;
  if (v == NULL)
    return 0;
  if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
    ck_fail(ck, "%s%s: expected an integer >= 0%s", ctx, key,
            optional ? " or null" : "");
    return 0;
  }
  if (present)
    *present = true;
  return json_object_get_uint64(v);
}

/* An object or array member (type), NULL if missing and optional. */
static struct json_object *
ck_typed(struct jcheck *ck, struct json_object *o, const char *ctx,
         const char *key, enum json_type type, bool optional)
{
  struct json_object *v = ck_member(ck, o, ctx, key, optional);
  if (v == NULL)
    return NULL;
  if (!json_object_is_type(v, type)) {
    ck_fail(ck, "%s%s: expected %s", ctx, key,
            type == json_type_array ? "an array" : "an object");
    return NULL;
  }
  return v;
}

/* ---- clusters as replied -------------------------------------------------- */

static const char *const vm_states[] = {
  "pending", "volume_ready", "running", "failed", "deleting", "deleted",
};
enum { VM_PENDING, VM_VOLUME_READY, VM_RUNNING, VM_FAILED, VM_DELETING,
       VM_DELETED, VM_NSTATES };

static const char *const cluster_states[] = {
  "pending", "provisioning", "running", "failed", "deleting", "deleted", NULL,
};

struct vm_view {
  const char *name, *node, *state, *reason;
};

/* A CLUSTER reply, checked; strings point into the reply. */
struct cluster_view {
  const char *id, *name, *image, *version, *state, *error, *placement;
  const char *created_at, *finished_at;
  uint64_t count, vcpus, memory_mib, disk_gib, fanout, origin_bytes;
  bool has_disk, has_fanout;
  uint64_t counts[VM_NSTATES];
  size_t nvms;
  struct vm_view *vms; /* heap, NULL without "vms" */
};

static bool
is_cluster_id(const char *s)
{
  size_t n = 0;
  for (; s[n]; n++)
    if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') ||
          (s[n] >= 'A' && s[n] <= 'F')))
      return false;
  return n == CLUSTER_ID_LEN;
}

/* Reads cluster object o (ctx names it, "" or "clusters[2].") into v;
 * with_vms reads its "vms" too.  Failures go to ck; v->vms is to free. */
static void
read_cluster(struct jcheck *ck, struct json_object *o, const char *ctx,
             bool with_vms, struct cluster_view *v)
{
  memset(v, 0, sizeof *v);
  if (!json_object_is_type(o, json_type_object)) {
    ck_fail(ck, "%s: expected an object", *ctx ? ctx : "(body)");
    return;
  }
  v->id = ck_str(ck, o, ctx, "id", false);
  if (!ck->failed && !is_cluster_id(v->id))
    ck_fail(ck, "%sid: expected %d hex digits", ctx, CLUSTER_ID_LEN);
  v->name = ck_str(ck, o, ctx, "name", false);
  v->image = ck_str(ck, o, ctx, "image", false);
  v->version = ck_str(ck, o, ctx, "image_version", true);
  v->state = ck_str(ck, o, ctx, "state", false);
  v->error = ck_str(ck, o, ctx, "error", true);
  v->placement = ck_str(ck, o, ctx, "placement", true);
  v->created_at = ck_str(ck, o, ctx, "created_at", true);
  v->finished_at = ck_str(ck, o, ctx, "finished_at", true);
  v->count = ck_u64(ck, o, ctx, "count", false, NULL);
  v->vcpus = ck_u64(ck, o, ctx, "vcpus", true, NULL);
  v->memory_mib = ck_u64(ck, o, ctx, "memory_mib", true, NULL);
  v->disk_gib = ck_u64(ck, o, ctx, "disk_gib", true, &v->has_disk);
  v->fanout = ck_u64(ck, o, ctx, "fanout", true, &v->has_fanout);
  v->origin_bytes = ck_u64(ck, o, ctx, "origin_bytes", true, NULL);
  struct json_object *counts =
      ck_typed(ck, o, ctx, "counts", json_type_object, false);
  char sub[96];
  snprintf(sub, sizeof sub, "%scounts.", ctx);
  for (int i = 0; counts && i < VM_NSTATES; i++)
    v->counts[i] = ck_u64(ck, counts, sub, vm_states[i], true, NULL);
  if (!with_vms || ck->failed)
    return;

  struct json_object *vms = ck_typed(ck, o, ctx, "vms", json_type_array, false);
  size_t n = vms ? json_object_array_length(vms) : 0;
  if (n == 0)
    return;
  v->vms = calloc(n, sizeof *v->vms);
  if (v->vms == NULL) {
    ck_fail(ck, "%svms: out of memory for %zu VMs", ctx, n);
    return;
  }
  v->nvms = n;
  for (size_t i = 0; i < n && !ck->failed; i++) {
    struct json_object *e = json_object_array_get_idx(vms, i);
    snprintf(sub, sizeof sub, "%svms[%zu].", ctx, i);
    if (!json_object_is_type(e, json_type_object)) {
      ck_fail(ck, "%svms[%zu]: expected an object", ctx, i);
      break;
    }
    v->vms[i].name = ck_str(ck, e, sub, "name", false);
    v->vms[i].node = ck_str(ck, e, sub, "node", true);
    v->vms[i].state = ck_str(ck, e, sub, "state", false);
    v->vms[i].reason = ck_str(ck, e, sub, "reason", true);
  }
}

/* "web: 4/6 running, 0 failed, origin 64.0 MiB, 12.3 s" into buf. */
static void
progress_text(const struct cluster_view *v, double elapsed, bool deleting,
              char *buf, size_t len)
{
  char h[32];
  if (deleting)
    snprintf(buf, len, "%s: %s, %" PRIu64 "/%" PRIu64 " deleted, %.1f s",
             v->name, v->state, v->counts[VM_DELETED], v->count, elapsed);
  else
    snprintf(buf, len, "%s: %" PRIu64 "/%" PRIu64 " running, %" PRIu64 " failed, origin %s, %.1f s",
             v->name, v->counts[VM_RUNNING], v->count, v->counts[VM_FAILED],
             human_bytes(v->origin_bytes, h, sizeof h), elapsed);
}

/* Prints each failed VM of v with its node and reason. */
static void
print_failed_vms(const struct cluster_view *v)
{
  for (size_t i = 0; i < v->nvms; i++) {
    const struct vm_view *m = &v->vms[i];
    if (strcmp(m->state, "failed") == 0)
      fprintf(stderr, PROG ": cluster %s: VM %s on %s failed: %s\n", v->name,
              m->name, m->node ? m->node : "(no node)",
              m->reason ? m->reason : "(no reason given)");
  }
}

/* Seconds on the monotonic clock. */
static double
now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_s(double s)
{
  if (s <= 0)
    return;
  struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* The progress of --wait on stderr: on a terminal one line rewritten in
 * place, else one line each time it changes. */
struct progress {
  bool tty;
  bool open;      /* a rewritten line is on the terminal */
  char last[512]; /* the last line, without its time */
};

static void
progress_show(struct progress *p, const char *line, const char *key)
{
  if (p->tty) {
    fprintf(stderr, "\r%s\033[K", line);
    p->open = true;
  } else if (strcmp(key, p->last) != 0) {
    fprintf(stderr, "%s\n", line);
  }
  snprintf(p->last, sizeof p->last, "%s", key);
  fflush(stderr);
}

/* Ends the rewritten line so that a message can follow. */
static void
progress_end(struct progress *p)
{
  if (p->open)
    fputc('\n', stderr);
  p->open = false;
}

/* Result of wait_cluster. */
enum wait_end { WAIT_DONE, WAIT_FAILED, WAIT_TIMEOUT, WAIT_ERROR };

/* Polls GET /v1/clusters/{id} every WAIT_POLL_MS until the cluster is
 * running or failed (deleting false) or deleted (deleting true), for at
 * most timeout seconds (0: no limit) from start.  Sets *last to the last
 * reply (the caller puts it).  A poll that gets no reply is tried again
 * until the timeout; an error reply ends the wait (WAIT_ERROR, printed). */
static enum wait_end
wait_cluster(struct apiclient *ac, const char *id, const char *what,
             bool deleting, double start, unsigned timeout,
             struct json_object **last)
{
  char path[64];
  snprintf(path, sizeof path, "/v1/clusters/%s", id);
  struct progress p = { .tty = isatty(STDERR_FILENO) == 1 };
  bool unreachable = false;

  apiclient_set_retries(ac, 0);
  *last = NULL;
  for (;;) {
    double elapsed = now_s() - start;
    if (timeout) {
      double left = (double)timeout - elapsed;
      apiclient_set_timeout(ac, left < APICLIENT_TIMEOUT ? (long)left + 1
                                                          : APICLIENT_TIMEOUT);
    }
    struct json_object *reply = NULL;
    int r = apiclient_call(ac, "GET", path, NULL, NULL, what, &reply);
    elapsed = now_s() - start;
    if (r == APICLIENT_FAILED && deleting && apiclient_status(ac) == 404) {
      progress_end(&p);
      return WAIT_DONE; /* gone altogether */
    }
    if (r == APICLIENT_FAILED) {
      progress_end(&p);
      api_print_error(ac);
      return WAIT_ERROR;
    }
    if (r == APICLIENT_TRANSPORT) {
      /* Said once per outage; the API may be restarting. */
      if (!unreachable) {
        progress_end(&p);
        fprintf(stderr, PROG ": %s (still waiting)\n", apiclient_error(ac));
      }
      unreachable = true;
    } else {
      unreachable = false;
      json_object_put(*last);
      *last = reply;
      struct jcheck ck = { .what = what, .sanitize = true };
      struct cluster_view v;
      read_cluster(&ck, reply, "", true, &v);
      if (ck.failed) {
        free(v.vms);
        progress_end(&p);
        ck_report(&ck);
        return WAIT_ERROR;
      }
      /* Off a terminal, a new line when the state or a count changes (not
       * for each byte fetched). */
      char line[512], key[128];
      progress_text(&v, elapsed, deleting, line, sizeof line);
      snprintf(key, sizeof key, "%s %" PRIu64 " %" PRIu64 " %" PRIu64, v.state,
               v.counts[VM_RUNNING], v.counts[VM_FAILED], v.counts[VM_DELETED]);
      progress_show(&p, line, key);

      enum wait_end end = WAIT_TIMEOUT; /* here: not yet */
      if (deleting) {
        if (strcmp(v.state, "deleted") == 0)
          end = WAIT_DONE;
      } else if (strcmp(v.state, "running") == 0) {
        end = v.counts[VM_FAILED] == 0 ? WAIT_DONE : WAIT_FAILED;
      } else if (strcmp(v.state, "failed") == 0) {
        end = WAIT_FAILED;
      } else if (strcmp(v.state, "deleting") == 0 ||
                 strcmp(v.state, "deleted") == 0) {
        progress_end(&p);
        fprintf(stderr, PROG ": %s: the cluster is %s: someone deleted it while it was being made\n",
                what, v.state);
        free(v.vms);
        return WAIT_ERROR;
      }
      if (end != WAIT_TIMEOUT) {
        progress_end(&p);
        if (end == WAIT_FAILED) {
          if (strcmp(v.state, "failed") == 0)
            fprintf(stderr, PROG ": %s: cluster %s failed: %s\n", what,
                    v.name, v.error ? v.error : "(no error given)");
          else
            fprintf(stderr, PROG ": %s: cluster %s is running with %" PRIu64 " failed VM%s of %" PRIu64 "\n",
                    what, v.name, v.counts[VM_FAILED],
                    v.counts[VM_FAILED] == 1 ? "" : "s", v.count);
          print_failed_vms(&v);
        }
        free(v.vms);
        return end;
      }
      free(v.vms);
    }
    if (timeout && elapsed >= (double)timeout) {
      progress_end(&p);
      fprintf(stderr, PROG ": %s: timed out after %u s; the cluster goes on (see '" PROG " cluster show %s')\n",
              what, timeout, id);
      return WAIT_TIMEOUT;
    }
    double pause = WAIT_POLL_MS / 1000.0;
    if (timeout && elapsed + pause > (double)timeout)
      pause = (double)timeout - elapsed;
    sleep_s(pause);
  }
}

/* Exit status of a wait. */
static int
wait_status(enum wait_end e)
{
  switch (e) {
  case WAIT_DONE:
    return 0;
  case WAIT_TIMEOUT:
    return EXIT_TIMEOUT;
  default:
    return 1;
  }
}

/* Parses --timeout: 0 (no limit) to a week, in seconds. */
static int
parse_timeout(const char *s, unsigned *out)
{
  if (parse_uint_range(s, 0, 7 * 24 * 3600, out) < 0) {
    fprintf(stderr, PROG ": --timeout '%s': expected seconds from 0 (no limit) to 604800\n",
            s);
    return -1;
  }
  return 0;
}

/* ---- cluster create ----------------------------------------------------------- */

static void
usage_cluster_create(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] cluster create --name NAME --image IMAGE --count N\n"
          "                  [--vcpus N] [--memory MiB] [--disk GiB]\n"
          "                  [--placement spread|pack] [--nodes A,B,...] [--zone Z] [--rack R]\n"
          "                  [--max-per-node N] [--fanout K] [--idempotency-key KEY]\n"
          "                  [--wait [--timeout S]] [--json]\n"
          "\n"
          "Asks thunder-api for a cluster of N VMs of IMAGE (POST /v1/clusters) and\n"
          "prints its id.  With --wait, follows it until every VM runs or fails,\n"
          "with a progress line on stderr.\n"
          "\n"
          "  --name NAME       cluster name, 1-%d of A-Z a-z 0-9 . _ - (VMs are\n"
          "                    NAME-0000, NAME-0001, ...)\n"
          "  --image IMAGE     an image registered with the API ('api image list')\n"
          "  --count N         number of VMs, 1-1000000 (the API has its own limit)\n"
          "  --vcpus N         vCPUs per VM, 1-256 (default 1)\n"
          "  --memory MiB      memory per VM, 16-4194304 MiB or 512M, 2G (default 512)\n"
          "  --disk GiB        disk per VM, 1-65536 GiB (default: the image's size)\n"
          "  --placement P     spread (default: most free node first) or pack\n"
          "  --nodes A,B       only these nodes\n"
          "  --zone Z, --rack R  only nodes with that label\n"
          "  --max-per-node N  at most N VMs per node\n"
          "  --fanout K        relay tree fan-out 1-64 (default: the planner's)\n"
          "  --idempotency-key KEY  1-255 printable characters; the same KEY and\n"
          "                    request never make a second cluster (default: a\n"
          "                    random key, so the client's own retries are safe)\n"
          "  --wait            wait until the cluster is running or failed\n"
          "  --timeout S       with --wait: give up after S seconds (default %d,\n"
          "                    0: no limit)\n"
          "  --json            print the cluster as JSON instead of its id (with\n"
          "                    --wait: as it was at the end)\n"
          API_OPTIONS_HELP
          "\n"
          "Exit status: 0 created (with --wait: running, no VM failed); 1 refused,\n"
          "or failed or with failed VMs; 2 usage error; 3 --wait timed out.\n",
          CLUSTER_NAME_MAX, WAIT_TIMEOUT_DEFAULT);
}

/* A label value or an idempotency key: 1-255 printable ASCII characters,
 * not starting or ending with a space. */
static bool
printable_value(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > 255 || s[0] == ' ' || s[n - 1] == ' ')
    return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
      return false;
  return true;
}

static bool
node_name_valid(const char *s)
{
  return manifest_name_valid(s) && strlen(s) <= NODE_NAME_MAX;
}

/* Adds key: value to o; false if out of memory (value is consumed). */
static bool
add(struct json_object *o, const char *key, struct json_object *value)
{
  if (value == NULL)
    return false;
  if (json_object_object_add(o, key, value) != 0) {
    json_object_put(value);
    return false;
  }
  return true;
}

/* The "nodes" array from "a,b,c"; NULL with a message (usage error). */
static struct json_object *
parse_node_list(const char *s, bool *oom)
{
  struct json_object *a = json_object_new_array();
  *oom = a == NULL;
  if (a == NULL)
    return NULL;
  const char *p = s;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    char name[NODE_NAME_MAX + 2];
    if (n == 0 || n > NODE_NAME_MAX) {
      fprintf(stderr, PROG ": --nodes '%s': expected node names (1-%d characters) separated by commas\n",
              s, NODE_NAME_MAX);
      json_object_put(a);
      return NULL;
    }
    memcpy(name, p, n);
    name[n] = '\0';
    if (!node_name_valid(name)) {
      fprintf(stderr, PROG ": --nodes: node name '%s' is not valid: use 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n",
              name, NODE_NAME_MAX);
      json_object_put(a);
      return NULL;
    }
    struct json_object *e = json_object_new_string(name);
    if (e == NULL || json_object_array_add(a, e) != 0) {
      json_object_put(e);
      json_object_put(a);
      *oom = true;
      return NULL;
    }
    if (comma == NULL)
      return a;
    p = comma + 1;
  }
}

/* A random key of 32 hex digits into key (33 bytes).  -1 with a message. */
static int
random_key(char key[33])
{
  uint8_t r[16];
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = getrandom(r + got, sizeof r - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      fprintf(stderr, PROG ": getrandom: %s\n", strerror(errno));
      return -1;
    }
    got += (size_t)n;
  }
  for (size_t i = 0; i < sizeof r; i++)
    snprintf(key + 2 * i, 3, "%02x", r[i]);
  return 0;
}

static int
cmd_cluster_create(int argc, char **argv)
{
  enum { OPT_NAME = 256, OPT_IMAGE, OPT_COUNT, OPT_VCPUS, OPT_MEMORY,
         OPT_DISK, OPT_PLACEMENT, OPT_NODES, OPT_ZONE, OPT_RACK,
         OPT_MAX_PER_NODE, OPT_FANOUT, OPT_KEY, OPT_WAIT, OPT_TIMEOUT,
         OPT_JSON };
  static const struct option longopts[] = {
    { "name", required_argument, NULL, OPT_NAME },
    { "image", required_argument, NULL, OPT_IMAGE },
    { "count", required_argument, NULL, OPT_COUNT },
    { "vcpus", required_argument, NULL, OPT_VCPUS },
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "disk", required_argument, NULL, OPT_DISK },
    { "placement", required_argument, NULL, OPT_PLACEMENT },
    { "nodes", required_argument, NULL, OPT_NODES },
    { "zone", required_argument, NULL, OPT_ZONE },
    { "rack", required_argument, NULL, OPT_RACK },
    { "max-per-node", required_argument, NULL, OPT_MAX_PER_NODE },
    { "fanout", required_argument, NULL, OPT_FANOUT },
    { "idempotency-key", required_argument, NULL, OPT_KEY },
    { "wait", no_argument, NULL, OPT_WAIT },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "json", no_argument, NULL, OPT_JSON },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  const char *name = NULL, *image = NULL, *placement = NULL, *nodes = NULL;
  const char *zone = NULL, *rack = NULL, *key = NULL;
  unsigned count = 0, vcpus = 1, memory = 512, disk = 0, max_per_node = 0;
  unsigned fanout = 0, timeout = WAIT_TIMEOUT_DEFAULT;
  bool wait = false, json = false, has_timeout = false;
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (api_option(c))
      continue;
    switch (c) {
    case OPT_NAME:
      name = optarg;
      break;
    case OPT_IMAGE:
      image = optarg;
      break;
    case OPT_COUNT:
      if (parse_uint_range(optarg, 1, 1000000, &count) < 0) {
        fprintf(stderr, PROG ": --count '%s': expected a number from 1 to 1000000\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_VCPUS:
      if (parse_uint_range(optarg, 1, 256, &vcpus) < 0) {
        fprintf(stderr, PROG ": --vcpus '%s': expected a number from 1 to 256\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_MEMORY:
      if (parse_memory(optarg, &memory) < 0 || memory < 16 ||
          memory > 4194304) {
        fprintf(stderr, PROG ": --memory '%s': expected MiB from 16 to 4194304, or a whole number of MiB with a suffix (512M, 2G)\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_DISK:
      if (parse_uint_range(optarg, 1, 65536, &disk) < 0) {
        fprintf(stderr, PROG ": --disk '%s': expected GiB from 1 to 65536\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_PLACEMENT:
      if (strcmp(optarg, "spread") != 0 && strcmp(optarg, "pack") != 0) {
        fprintf(stderr, PROG ": --placement '%s': expected spread or pack\n",
                optarg);
        return EXIT_USAGE;
      }
      placement = optarg;
      break;
    case OPT_NODES:
      nodes = optarg;
      break;
    case OPT_ZONE:
    case OPT_RACK:
      if (!printable_value(optarg)) {
        fprintf(stderr, PROG ": --%s '%s': expected 1-255 printable characters\n",
                c == OPT_ZONE ? "zone" : "rack", optarg);
        return EXIT_USAGE;
      }
      *(c == OPT_ZONE ? &zone : &rack) = optarg;
      break;
    case OPT_MAX_PER_NODE:
      if (parse_uint_range(optarg, 1, 1000000, &max_per_node) < 0) {
        fprintf(stderr, PROG ": --max-per-node '%s': expected a number from 1 to 1000000\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_FANOUT:
      if (parse_uint_range(optarg, 1, 64, &fanout) < 0) {
        fprintf(stderr, PROG ": --fanout '%s': expected a number from 1 to 64\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_KEY:
      if (!printable_value(optarg)) {
        fprintf(stderr, PROG ": --idempotency-key: expected 1-255 printable ASCII characters, not starting or ending with a space\n");
        return EXIT_USAGE;
      }
      key = optarg;
      break;
    case OPT_WAIT:
      wait = true;
      break;
    case OPT_TIMEOUT:
      if (parse_timeout(optarg, &timeout) < 0)
        return EXIT_USAGE;
      has_timeout = true;
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'h':
      usage_cluster_create(stdout);
      return 0;
    default:
      return api_option_error("cluster create", argv, c);
    }
  }
  if (argc - optind != 0) {
    fprintf(stderr, PROG ": cluster create: unexpected argument '%s'; see '" PROG " cluster create --help'\n",
            argv[optind]);
    return EXIT_USAGE;
  }
  if (name == NULL || image == NULL || count == 0) {
    fprintf(stderr, PROG ": cluster create: give --name NAME, --image IMAGE and --count N\n");
    return EXIT_USAGE;
  }
  if (!manifest_name_valid(name) || strlen(name) > CLUSTER_NAME_MAX) {
    fprintf(stderr, PROG ": --name '%s': expected 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n",
            name, CLUSTER_NAME_MAX);
    return EXIT_USAGE;
  }
  if (!check_name(image))
    return EXIT_USAGE;
  if (has_timeout && !wait) {
    fprintf(stderr, PROG ": cluster create: --timeout goes with --wait\n");
    return EXIT_USAGE;
  }

  /* The body, as docs/api.md "POST /v1/clusters". */
  bool oom = false;
  CLEANUP_JSON_PUT struct json_object *body = json_object_new_object();
  CLEANUP_JSON_PUT struct json_object *pl = json_object_new_object();
  if (body == NULL || pl == NULL ||
      !add(body, "name", json_object_new_string(name)) ||
      !add(body, "image", json_object_new_string(image)) ||
      !add(body, "count", json_object_new_int64(count)) ||
      !add(body, "vcpus", json_object_new_int64(vcpus)) ||
      !add(body, "memory_mib", json_object_new_int64(memory)) ||
      (disk && !add(body, "disk_gib", json_object_new_int64(disk))) ||
      (fanout && !add(body, "fanout", json_object_new_int64(fanout))) ||
      (placement && !add(pl, "strategy", json_object_new_string(placement))) ||
      (zone && !add(pl, "zone", json_object_new_string(zone))) ||
      (rack && !add(pl, "rack", json_object_new_string(rack))) ||
      (max_per_node &&
       !add(pl, "max_per_node", json_object_new_int64(max_per_node))))
    oom = true;
  if (!oom && nodes) {
    struct json_object *a = parse_node_list(nodes, &oom);
    if (a == NULL && !oom)
      return EXIT_USAGE;
    if (a && !add(pl, "nodes", a))
      oom = true;
  }
  if (!oom && json_object_object_length(pl) > 0) {
    if (!add(body, "placement", json_object_get(pl)))
      oom = true;
  }
  if (oom) {
    fprintf(stderr, PROG ": cluster create: out of memory\n");
    return 1;
  }
  char random[33];
  if (key == NULL) {
    if (random_key(random) < 0)
      return 1;
    key = random;
  }

  struct apiclient *ac = api_client();
  if (ac == NULL)
    return 1;
  double start = now_s();
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = apiclient_call(ac, "POST", "/v1/clusters", body, key,
                              "cluster create", &reply);
  if (status < 0) {
    api_print_error(ac);
    apiclient_free(ac);
    return 1;
  }
  struct jcheck ck = { .what = "cluster create", .sanitize = !json };
  struct cluster_view v;
  read_cluster(&ck, reply, "", false, &v);
  if (ck.failed) {
    apiclient_free(ac);
    return ck_report(&ck);
  }
  char id[CLUSTER_ID_LEN + 1];
  snprintf(id, sizeof id, "%s", v.id);
  if (status == 200)
    fprintf(stderr, PROG ": cluster create: this idempotency key already made cluster %s (%s); nothing new\n",
            id, v.state);
  if (!wait) {
    apiclient_free(ac);
    if (json)
      print_json(reply);
    else
      printf("%s\n", id);
    return 0;
  }
  if (!json) {
    printf("%s\n", id);
    fflush(stdout);
  }
  CLEANUP_JSON_PUT struct json_object *last = NULL;
  enum wait_end e = wait_cluster(ac, id, "cluster create", false, start,
                                 timeout, &last);
  apiclient_free(ac);
  if (json && last)
    print_json(last);
  return wait_status(e);
}

/* ---- cluster show / tree / list / delete -------------------------------------- */

/* Resolves arg, a cluster id or the name of a live cluster, into id
 * (CLUSTER_ID_LEN + 1 bytes).  Returns -1 to go on, else an exit status
 * (message printed). */
static int
resolve_cluster(struct apiclient *ac, const char *cmd, const char *arg,
                char *id)
{
  if (is_cluster_id(arg)) {
    for (size_t i = 0; i <= CLUSTER_ID_LEN; i++)
      id[i] = (char)(arg[i] >= 'A' && arg[i] <= 'F' ? arg[i] + 32 : arg[i]);
    return -1;
  }
  if (!manifest_name_valid(arg) || strlen(arg) > CLUSTER_NAME_MAX) {
    fprintf(stderr, PROG ": %s: '%s' is neither a cluster id (%d hex digits) nor a cluster name\n",
            cmd, arg, CLUSTER_ID_LEN);
    return EXIT_USAGE;
  }
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (apiclient_call(ac, "GET", "/v1/clusters", NULL, NULL, cmd, &reply) < 0) {
    api_print_error(ac);
    return 1;
  }
  struct jcheck ck = { .what = cmd };
  struct json_object *a = ck_typed(&ck, reply, "", "clusters", json_type_array,
                                   false);
  size_t n = a ? json_object_array_length(a) : 0, found = 0;
  for (size_t i = 0; i < n && !ck.failed; i++) {
    char ctx[48];
    snprintf(ctx, sizeof ctx, "clusters[%zu].", i);
    struct cluster_view v;
    read_cluster(&ck, json_object_array_get_idx(a, i), ctx, false, &v);
    if (ck.failed || strcmp(v.name, arg) != 0 ||
        strcmp(v.state, "deleted") == 0)
      continue;
    if (found++ == 0)
      snprintf(id, CLUSTER_ID_LEN + 1, "%s", v.id);
  }
  if (ck.failed)
    return ck_report(&ck);
  if (found == 0) {
    fprintf(stderr, PROG ": %s: no live cluster named '%s' (see '" PROG " cluster list')\n",
            cmd, arg);
    return 1;
  }
  if (found > 1) {
    fprintf(stderr, PROG ": %s: %zu live clusters are named '%s'; give the id (see '" PROG " cluster list')\n",
            cmd, found, arg);
    return 1;
  }
  return -1;
}

/* Parses the options of cluster show, tree and delete: one ID or NAME,
 * --json, --tree (show), --wait and --timeout (delete).  Returns -1 to go
 * on, else an exit status. */
struct cluster_args {
  const char *arg;
  bool json, tree, wait, has_timeout;
  unsigned timeout;
};

static int
cluster_command_args(const char *cmd, void (*usage)(FILE *), int argc,
                     char **argv, struct cluster_args *a)
{
  enum { OPT_JSON = 256, OPT_TREE, OPT_WAIT, OPT_TIMEOUT };
  static const struct option longopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "tree", no_argument, NULL, OPT_TREE },
    { "wait", no_argument, NULL, OPT_WAIT },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  bool is_show = strcmp(cmd, "cluster show") == 0;
  bool is_delete = strcmp(cmd, "cluster delete") == 0;
  int c;

  memset(a, 0, sizeof *a);
  a->timeout = WAIT_TIMEOUT_DEFAULT;
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (api_option(c))
      continue;
    if (c == 'h') {
      usage(stdout);
      return 0;
    }
    if (c == OPT_JSON && !is_delete) {
      a->json = true;
    } else if (c == OPT_TREE && is_show) {
      a->tree = true;
    } else if (c == OPT_WAIT && is_delete) {
      a->wait = true;
    } else if (c == OPT_TIMEOUT && is_delete) {
      if (parse_timeout(optarg, &a->timeout) < 0)
        return EXIT_USAGE;
      a->has_timeout = true;
    } else if (c == OPT_JSON || c == OPT_TREE || c == OPT_WAIT ||
               c == OPT_TIMEOUT) {
      fprintf(stderr, PROG ": %s: unknown option '%s'; see '" PROG " %s --help'\n",
              cmd, argv[optind - 1], cmd);
      return EXIT_USAGE;
    } else {
      return api_option_error(cmd, argv, c);
    }
  }
  if (argc - optind != 1) {
    fprintf(stderr, PROG ": %s: expected one cluster ID or NAME; see '" PROG " %s --help'\n",
            cmd, cmd);
    return EXIT_USAGE;
  }
  if (a->has_timeout && !a->wait) {
    fprintf(stderr, PROG ": %s: --timeout goes with --wait\n", cmd);
    return EXIT_USAGE;
  }
  a->arg = argv[optind];
  return -1;
}

/* Prints a cluster as readable text. */
static void
print_cluster(const struct cluster_view *v)
{
  char h[32];
  printf("cluster     %s\n", v->id);
  printf("name        %s\n", v->name);
  printf("image       %s", v->image);
  if (v->version)
    printf(" (version %.12s...)", v->version);
  printf("\nstate       %s\n", v->state);
  if (v->error)
    printf("error       %s\n", v->error);
  printf("spec        %" PRIu64 " VM%s x %" PRIu64 " vCPU, %" PRIu64 " MiB",
         v->count, v->count == 1 ? "" : "s", v->vcpus, v->memory_mib);
  if (v->has_disk)
    printf(", %" PRIu64 " GiB disk", v->disk_gib);
  else
    printf(", disk as the image");
  printf("; placement %s; fan-out ", v->placement ? v->placement : "spread");
  if (v->has_fanout)
    printf("%" PRIu64 "\n", v->fanout);
  else
    printf("planner's\n");
  printf("vms        ");
  bool any = false;
  for (int i = 0; i < VM_NSTATES; i++) {
    if (v->counts[i] == 0 && i != VM_RUNNING && i != VM_FAILED)
      continue;
    printf("%s %" PRIu64 " %s", any ? "," : "", v->counts[i], vm_states[i]);
    any = true;
  }
  printf("\norigin      %s fetched\n",
         human_bytes(v->origin_bytes, h, sizeof h));
  if (v->created_at)
    printf("created     %s\n", v->created_at);
  if (v->finished_at)
    printf("finished    %s\n", v->finished_at);
  if (v->nvms == 0)
    return;

  int wn = (int)strlen("VM"), wd = (int)strlen("NODE"), ws = (int)strlen("STATE");
  for (size_t i = 0; i < v->nvms; i++) {
    const struct vm_view *m = &v->vms[i];
    int l;
    if ((l = (int)strlen(m->name)) > wn)
      wn = l;
    if (m->node && (l = (int)strlen(m->node)) > wd)
      wd = l;
    if ((l = (int)strlen(m->state)) > ws)
      ws = l;
  }
  printf("\n%-*s  %-*s  %-*s  %s\n", wn, "VM", wd, "NODE", ws, "STATE",
         "REASON");
  for (size_t i = 0; i < v->nvms; i++) {
    const struct vm_view *m = &v->vms[i];
    printf("%-*s  %-*s  %-*s  %s\n", wn, m->name, wd, m->node ? m->node : "-",
           ws, m->state, m->reason ? m->reason : "-");
  }
}

/* A name and where it is, to sort and search. */
struct named {
  const char *name;
  size_t index;
};

static int
cmp_named(const void *a, const void *b)
{
  return strcmp(((const struct named *)a)->name,
                ((const struct named *)b)->name);
}

/* Gets the tree of cluster id and prints it as indented
 * lines "node ← parent" (or as JSON).  Returns the exit status. */
static int
show_tree(struct apiclient *ac, const char *id, bool json)
{
  char path[80], what[80];
  snprintf(path, sizeof path, "/v1/clusters/%s/tree", id);
  snprintf(what, sizeof what, "cluster tree %s", id);
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (apiclient_call(ac, "GET", path, NULL, NULL, what, &reply) < 0) {
    api_print_error(ac);
    return 1;
  }
  if (json) {
    print_json(reply);
    return 0;
  }
  struct jcheck ck = { .what = what, .sanitize = true };
  const char *origin = ck_str(&ck, reply, "", "origin", false);
  const char *image = ck_str(&ck, reply, "", "image", true);
  bool has_fanout, has_depth;
  uint64_t fanout = ck_u64(&ck, reply, "", "fanout", true, &has_fanout);
  uint64_t depth = ck_u64(&ck, reply, "", "depth", true, &has_depth);
  struct json_object *a = ck_typed(&ck, reply, "", "nodes", json_type_array,
                                   false);
  size_t n = a ? json_object_array_length(a) : 0;

  /* Children lists by index, in the reply's order; parent -1 = origin,
   * -2 = a parent not in the tree. */
  struct tnode { const char *name; long parent, child, next; bool seen; };
  CLEANUP_FREE struct tnode *t = n ? calloc(n, sizeof *t) : NULL;
  CLEANUP_FREE struct named *byname = n ? calloc(n, sizeof *byname) : NULL;
  CLEANUP_FREE long *stack = n ? calloc(n, sizeof *stack) : NULL;
  CLEANUP_FREE unsigned *level = n ? calloc(n, sizeof *level) : NULL;
  if (n && (t == NULL || byname == NULL || stack == NULL || level == NULL)) {
    fprintf(stderr, PROG ": %s: out of memory for %zu nodes\n", what, n);
    return 1;
  }
  CLEANUP_FREE const char **parents = n ? calloc(n, sizeof *parents) : NULL;
  if (n && parents == NULL) {
    fprintf(stderr, PROG ": %s: out of memory for %zu nodes\n", what, n);
    return 1;
  }
  for (size_t i = 0; i < n && !ck.failed; i++) {
    struct json_object *e = json_object_array_get_idx(a, i);
    char ctx[48];
    snprintf(ctx, sizeof ctx, "nodes[%zu].", i);
    if (!json_object_is_type(e, json_type_object)) {
      ck_fail(&ck, "nodes[%zu]: expected an object", i);
      break;
    }
    t[i].name = ck_str(&ck, e, ctx, "node", false);
    parents[i] = ck_str(&ck, e, ctx, "parent", true);
    t[i].child = t[i].next = -1;
  }
  if (ck.failed)
    return ck_report(&ck);

  /* Sorted by name to find parents in n log n. */
  for (size_t i = 0; i < n; i++) {
    byname[i].name = t[i].name;
    byname[i].index = i;
  }
  if (n)
    qsort(byname, n, sizeof *byname, cmp_named);
  for (size_t i = 1; i < n; i++) {
    if (strcmp(byname[i - 1].name, byname[i].name) == 0) {
      fprintf(stderr, PROG ": %s: reply field nodes: node '%s' appears twice\n",
              what, byname[i].name);
      return 1;
    }
  }
  for (size_t i = 0; i < n; i++) {
    t[i].parent = -1;
    if (parents[i] == NULL)
      continue;
    struct named key = { parents[i], 0 };
    struct named *p = bsearch(&key, byname, n, sizeof *byname, cmp_named);
    t[i].parent = p ? (long)p->index : -2;
  }
  /* Children in the reply's order: walk backwards, prepend. */
  long roots = -1;
  for (size_t k = n; k-- > 0;) {
    if (t[k].parent == -1) {
      t[k].next = roots;
      roots = (long)k;
    } else if (t[k].parent >= 0) {
      t[k].next = t[t[k].parent].child;
      t[t[k].parent].child = (long)k;
    }
  }

  printf("origin %s", origin);
  if (image)
    printf(" (image %s", image);
  if (has_fanout)
    printf("%sfan-out %" PRIu64, image ? ", " : " (", fanout);
  if (has_depth)
    printf("%sdepth %" PRIu64, image || has_fanout ? ", " : " (", depth);
  printf("%s\n", image || has_fanout || has_depth ? ")" : "");

  /* Depth first, iteratively: a chain may be thousands deep. */
  size_t sp = 0, printed = 0;
  for (long r = roots; r >= 0; r = t[r].next) {
    stack[sp] = r;
    level[sp++] = 1;
    while (sp > 0) {
      long k = stack[--sp];
      unsigned d = level[sp];
      if (t[k].seen)
        continue;
      t[k].seen = true;
      printed++;
      unsigned indent = d < 32 ? d : 32;
      printf("%*s%s ← %s", (int)(2 * indent), "", t[k].name,
             t[k].parent >= 0 ? t[t[k].parent].name : "origin");
      if (d > 32)
        printf("  (depth %u)", d);
      printf("\n");
      /* Push children in reverse so the first prints first. */
      size_t base = sp;
      for (long ch = t[k].child; ch >= 0 && sp < n; ch = t[ch].next) {
        if (t[ch].seen)
          continue;
        stack[sp] = ch;
        level[sp++] = d + 1;
      }
      for (size_t x = base, y = sp; y > x + 1; x++, y--) {
        long s = stack[x];
        stack[x] = stack[y - 1];
        stack[y - 1] = s;
      }
    }
  }
  if (printed < n) {
    fprintf(stderr, PROG ": %s: %zu node%s not reachable from the origin (a parent missing from the tree, or a cycle):\n",
            what, n - printed, n - printed == 1 ? " is" : "s are");
    for (size_t i = 0; i < n; i++)
      if (!t[i].seen)
        fprintf(stderr, "  %s ← %s\n", t[i].name,
                parents[i] ? parents[i] : "origin");
    return 1;
  }
  return 0;
}

static void
usage_cluster_show(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] cluster show ID|NAME [--tree] [--json]\n"
          "\n"
          "Shows a cluster (GET /v1/clusters/ID): its spec, state, VM counts and\n"
          "each VM with its node, state and failure reason.  NAME is the name of\n"
          "a live (not deleted) cluster.\n"
          "\n"
          "  --tree            also print its relay tree (as 'cluster tree')\n"
          "  --json            print the API's reply as JSON (with --tree: the\n"
          "                    cluster, then the tree)\n"
          API_OPTIONS_HELP);
}

static int
cmd_cluster_show(int argc, char **argv)
{
  struct cluster_args a;
  int r = cluster_command_args("cluster show", usage_cluster_show, argc, argv,
                               &a);
  if (r >= 0)
    return r;
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return 1;
  char id[CLUSTER_ID_LEN + 1];
  r = resolve_cluster(ac, "cluster show", a.arg, id);
  if (r >= 0) {
    apiclient_free(ac);
    return r;
  }
  char path[64], what[64];
  snprintf(path, sizeof path, "/v1/clusters/%s", id);
  snprintf(what, sizeof what, "cluster show %s", id);
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (apiclient_call(ac, "GET", path, NULL, NULL, what, &reply) < 0) {
    api_print_error(ac);
    apiclient_free(ac);
    return 1;
  }
  struct jcheck ck = { .what = what, .sanitize = !a.json };
  struct cluster_view v;
  read_cluster(&ck, reply, "", true, &v);
  if (ck.failed) {
    free(v.vms);
    apiclient_free(ac);
    return ck_report(&ck);
  }
  if (a.json)
    print_json(reply);
  else
    print_cluster(&v);
  free(v.vms);
  if (a.tree) {
    if (!a.json)
      printf("\n");
    r = show_tree(ac, id, a.json);
  }
  apiclient_free(ac);
  return r < 0 ? 0 : r;
}

static void
usage_cluster_tree(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] cluster tree ID|NAME [--json]\n"
          "\n"
          "Prints the relay tree of a cluster (GET /v1/clusters/ID/tree): the\n"
          "origin, then one line per node, 'node ← parent', indented by depth.\n"
          "\n"
          "  --json            print the API's reply as JSON\n"
          API_OPTIONS_HELP);
}

static int
cmd_cluster_tree(int argc, char **argv)
{
  struct cluster_args a;
  int r = cluster_command_args("cluster tree", usage_cluster_tree, argc, argv,
                               &a);
  if (r >= 0)
    return r;
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return 1;
  char id[CLUSTER_ID_LEN + 1];
  r = resolve_cluster(ac, "cluster tree", a.arg, id);
  if (r < 0)
    r = show_tree(ac, id, a.json);
  apiclient_free(ac);
  return r;
}

static void
usage_cluster_list(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] cluster list [--state STATE] [--json]\n"
          "\n"
          "Lists the clusters, oldest first (GET /v1/clusters).\n"
          "\n"
          "  --state STATE     only those in STATE: pending, provisioning, running,\n"
          "                    failed, deleting or deleted\n"
          "  --json            print the API's reply as JSON\n"
          API_OPTIONS_HELP);
}

static int
cmd_cluster_list(int argc, char **argv)
{
  enum { OPT_STATE = 256, OPT_JSON };
  static const struct option longopts[] = {
    { "state", required_argument, NULL, OPT_STATE },
    { "json", no_argument, NULL, OPT_JSON },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  const char *state = NULL;
  bool json = false;
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (api_option(c))
      continue;
    switch (c) {
    case OPT_STATE:
      state = NULL;
      for (const char *const *s = cluster_states; *s; s++)
        if (strcmp(*s, optarg) == 0)
          state = *s;
      if (state == NULL) {
        fprintf(stderr, PROG ": --state '%s': expected pending, provisioning, running, failed, deleting or deleted\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'h':
      usage_cluster_list(stdout);
      return 0;
    default:
      return api_option_error("cluster list", argv, c);
    }
  }
  if (argc - optind != 0) {
    fprintf(stderr, PROG ": cluster list: unexpected argument '%s'; see '" PROG " cluster list --help'\n",
            argv[optind]);
    return EXIT_USAGE;
  }
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return 1;
  char path[64];
  snprintf(path, sizeof path, "/v1/clusters%s%s", state ? "?state=" : "",
           state ? state : "");
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = apiclient_call(ac, "GET", path, NULL, NULL, "cluster list",
                              &reply);
  if (status < 0)
    api_print_error(ac);
  apiclient_free(ac);
  if (status < 0)
    return 1;

  struct jcheck ck = { .what = "cluster list", .sanitize = !json };
  struct json_object *arr = ck_typed(&ck, reply, "", "clusters",
                                     json_type_array, false);
  size_t n = arr ? json_object_array_length(arr) : 0;
  CLEANUP_FREE struct cluster_view *v = n ? calloc(n, sizeof *v) : NULL;
  if (n && v == NULL) {
    fprintf(stderr, PROG ": cluster list: out of memory for %zu clusters\n", n);
    return 1;
  }
  int wn = (int)strlen("NAME"), wi = (int)strlen("IMAGE");
  for (size_t i = 0; i < n && !ck.failed; i++) {
    char ctx[48];
    snprintf(ctx, sizeof ctx, "clusters[%zu].", i);
    read_cluster(&ck, json_object_array_get_idx(arr, i), ctx, false, &v[i]);
    int l;
    if ((l = (int)strlen(v[i].name)) > wn)
      wn = l;
    if ((l = (int)strlen(v[i].image)) > wi)
      wi = l;
  }
  if (ck.failed)
    return ck_report(&ck);
  if (json) {
    print_json(reply);
    return 0;
  }
  printf("%-*s  %-*s  %-*s  %-12s  %9s  %6s  %s\n", CLUSTER_ID_LEN, "ID", wn,
         "NAME", wi, "IMAGE", "STATE", "RUNNING", "FAILED", "CREATED");
  for (size_t i = 0; i < n; i++) {
    char run[48];
    snprintf(run, sizeof run, "%" PRIu64 "/%" PRIu64, v[i].counts[VM_RUNNING],
             v[i].count);
    printf("%-*s  %-*s  %-*s  %-12s  %9s  %6" PRIu64 "  %s\n", CLUSTER_ID_LEN,
           v[i].id, wn, v[i].name, wi, v[i].image, v[i].state, run,
           v[i].counts[VM_FAILED], v[i].created_at ? v[i].created_at : "-");
  }
  if (n == 0)
    printf("(no clusters)\n");
  return 0;
}

static void
usage_cluster_delete(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] cluster delete ID|NAME [--wait [--timeout S]]\n"
          "\n"
          "Deletes a cluster (DELETE /v1/clusters/ID): thunder-api deletes every VM\n"
          "on its node, then detaches the image where no other cluster needs it.\n"
          "\n"
          "  --wait            wait until the cluster is deleted, with a progress\n"
          "                    line on stderr\n"
          "  --timeout S       with --wait: give up after S seconds (default %d,\n"
          "                    0: no limit)\n"
          API_OPTIONS_HELP
          "\n"
          "Exit status: 0 deleting (with --wait: deleted); 1 failed; 2 usage\n"
          "error; 3 --wait timed out.\n",
          WAIT_TIMEOUT_DEFAULT);
}

static int
cmd_cluster_delete(int argc, char **argv)
{
  struct cluster_args a;
  int r = cluster_command_args("cluster delete", usage_cluster_delete, argc,
                               argv, &a);
  if (r >= 0)
    return r;
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return 1;
  char id[CLUSTER_ID_LEN + 1];
  r = resolve_cluster(ac, "cluster delete", a.arg, id);
  if (r >= 0) {
    apiclient_free(ac);
    return r;
  }
  char path[64], what[64];
  snprintf(path, sizeof path, "/v1/clusters/%s", id);
  snprintf(what, sizeof what, "cluster delete %s", id);
  double start = now_s();
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (apiclient_call(ac, "DELETE", path, NULL, NULL, what, &reply) < 0) {
    api_print_error(ac);
    apiclient_free(ac);
    return 1;
  }
  struct jcheck ck = { .what = what, .sanitize = true };
  struct cluster_view v;
  read_cluster(&ck, reply, "", false, &v);
  if (ck.failed) {
    apiclient_free(ac);
    return ck_report(&ck);
  }
  if (!a.wait) {
    printf("cluster %s (%s): %s\n", v.name, id, v.state);
    apiclient_free(ac);
    return 0;
  }
  CLEANUP_JSON_PUT struct json_object *last = NULL;
  enum wait_end e = wait_cluster(ac, id, what, true, start, a.timeout, &last);
  apiclient_free(ac);
  if (e == WAIT_DONE)
    printf("cluster %s (%s): deleted\n", v.name, id);
  return wait_status(e);
}

/* ---- api node list ---------------------------------------------------------- */

static void
usage_api_node_list(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] api node list [--json]\n"
          "\n"
          "Lists the nodes registered with thunder-api (GET /v1/nodes): state,\n"
          "used and total capacity, labels, last heartbeat.\n"
          "\n"
          "  --json            print the API's reply as JSON\n"
          API_OPTIONS_HELP);
}

/* Parses the options of an API command with no argument but --json.
 * Returns -1 to go on, else an exit status. */
static int
api_list_args(const char *cmd, void (*usage)(FILE *), int argc, char **argv,
              bool *json)
{
  enum { OPT_JSON = 256 };
  static const struct option longopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (api_option(c))
      continue;
    if (c == OPT_JSON) {
      *json = true;
    } else if (c == 'h') {
      usage(stdout);
      return 0;
    } else {
      return api_option_error(cmd, argv, c);
    }
  }
  if (argc - optind != 0) {
    fprintf(stderr, PROG ": %s: unexpected argument '%s'; see '" PROG " %s --help'\n",
            cmd, argv[optind], cmd);
    return EXIT_USAGE;
  }
  return -1;
}

/* GETs path for cmd and checks that the reply has array key.  Returns the
 * reply with *arr set, or NULL with a message. */
static struct json_object *
api_get_list(const char *cmd, const char *path, const char *key,
             struct json_object **arr)
{
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return NULL;
  struct json_object *reply = NULL;
  int status = apiclient_call(ac, "GET", path, NULL, NULL, cmd, &reply);
  if (status < 0)
    api_print_error(ac);
  apiclient_free(ac);
  if (status < 0)
    return NULL;
  struct jcheck ck = { .what = cmd };
  *arr = ck_typed(&ck, reply, "", key, json_type_array, false);
  if (ck.failed) {
    ck_report(&ck);
    json_object_put(reply);
    return NULL;
  }
  return reply;
}

static int
cmd_api_node_list(int argc, char **argv)
{
  bool json = false;
  int r = api_list_args("api node list", usage_api_node_list, argc, argv,
                        &json);
  if (r >= 0)
    return r;
  struct json_object *arr;
  CLEANUP_JSON_PUT struct json_object *reply =
      api_get_list("api node list", "/v1/nodes", "nodes", &arr);
  if (reply == NULL)
    return 1;
  if (json) {
    print_json(reply);
    return 0;
  }
  struct row {
    const char *name, *state, *zone, *rack, *beat;
    char vcpus[48], mem[48], disk[48], vms[24];
  };
  size_t n = json_object_array_length(arr);
  CLEANUP_FREE struct row *rows = n ? calloc(n, sizeof *rows) : NULL;
  if (n && rows == NULL) {
    fprintf(stderr, PROG ": api node list: out of memory for %zu nodes\n", n);
    return 1;
  }
  struct jcheck ck = { .what = "api node list", .sanitize = true };
  int wn = (int)strlen("NAME");
  for (size_t i = 0; i < n && !ck.failed; i++) {
    struct json_object *o = json_object_array_get_idx(arr, i);
    char ctx[48], sub[64];
    snprintf(ctx, sizeof ctx, "nodes[%zu].", i);
    if (!json_object_is_type(o, json_type_object)) {
      ck_fail(&ck, "nodes[%zu]: expected an object", i);
      break;
    }
    struct row *w = &rows[i];
    w->name = ck_str(&ck, o, ctx, "name", false);
    w->state = ck_str(&ck, o, ctx, "state", false);
    w->beat = ck_str(&ck, o, ctx, "last_heartbeat_at", true);
    struct json_object *cap = ck_typed(&ck, o, ctx, "capacity",
                                       json_type_object, false);
    struct json_object *used = ck_typed(&ck, o, ctx, "used", json_type_object,
                                        true);
    struct json_object *labels = ck_typed(&ck, o, ctx, "labels",
                                          json_type_object, true);
    snprintf(sub, sizeof sub, "%scapacity.", ctx);
    uint64_t cv = ck_u64(&ck, cap, sub, "vcpus", false, NULL);
    uint64_t cm = ck_u64(&ck, cap, sub, "memory_mib", false, NULL);
    uint64_t cd = ck_u64(&ck, cap, sub, "disk_gib", false, NULL);
    snprintf(sub, sizeof sub, "%sused.", ctx);
    uint64_t uv = ck_u64(&ck, used, sub, "vcpus", true, NULL);
    uint64_t um = ck_u64(&ck, used, sub, "memory_mib", true, NULL);
    uint64_t ud = ck_u64(&ck, used, sub, "disk_gib", true, NULL);
    uint64_t un = ck_u64(&ck, used, sub, "vms", true, NULL);
    snprintf(sub, sizeof sub, "%slabels.", ctx);
    w->zone = labels ? ck_str(&ck, labels, sub, "zone", true) : NULL;
    w->rack = labels ? ck_str(&ck, labels, sub, "rack", true) : NULL;
    snprintf(w->vcpus, sizeof w->vcpus, "%" PRIu64 "/%" PRIu64, uv, cv);
    snprintf(w->mem, sizeof w->mem, "%" PRIu64 "/%" PRIu64, um, cm);
    snprintf(w->disk, sizeof w->disk, "%" PRIu64 "/%" PRIu64, ud, cd);
    snprintf(w->vms, sizeof w->vms, "%" PRIu64, un);
    int l = (int)strlen(w->name);
    if (l > wn)
      wn = l;
  }
  if (ck.failed)
    return ck_report(&ck);
  printf("%-*s  %-6s  %9s  %17s  %13s  %5s  %-8s  %-8s  %s\n", wn, "NAME",
         "STATE", "VCPUS", "MEMORY_MIB", "DISK_GIB", "VMS", "ZONE", "RACK",
         "LAST_HEARTBEAT");
  for (size_t i = 0; i < n; i++) {
    const struct row *w = &rows[i];
    printf("%-*s  %-6s  %9s  %17s  %13s  %5s  %-8s  %-8s  %s\n", wn, w->name,
           w->state, w->vcpus, w->mem, w->disk, w->vms,
           w->zone ? w->zone : "-", w->rack ? w->rack : "-",
           w->beat ? w->beat : "-");
  }
  if (n == 0)
    printf("(no nodes)\n");
  return 0;
}

/* ---- api image register / list ------------------------------------------------- */

static void
usage_api_image_register(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] api image register NAME --origin nbd://HOST:PORT\n"
          "                  [--version HEX] [--json]\n"
          "\n"
          "Registers image NAME with thunder-api (POST /v1/images): the API reads\n"
          "its manifest from the origin thunderd (export NAME" MANIFEST_EXPORT_SUFFIX ") to learn\n"
          "its version and size.  Registering again replaces the entry.\n"
          "\n"
          "  --origin URI      the origin thunderd, nbd://HOST:PORT (no export)\n"
          "  --version HEX     the version expected (64 hex digits, as printed by\n"
          "                    'image add'); the API refuses another one\n"
          "  --json            print the API's reply as JSON\n"
          API_OPTIONS_HELP);
}

/* True if s is nbd://HOST:PORT with no export: HOST a name, an IPv4 address
 * or [IPv6], PORT 1-65535. */
static bool
origin_uri_valid(const char *s)
{
  if (strncmp(s, "nbd://", 6) != 0)
    return false;
  const char *h = s + 6, *colon;
  if (*h == '[') {
    const char *close = strchr(h, ']');
    if (close == NULL || close == h + 1 || close[1] != ':')
      return false;
    for (const char *p = h + 1; p < close; p++)
      if (!strchr("0123456789abcdefABCDEF:.", *p))
        return false;
    colon = close + 1;
  } else {
    colon = strchr(h, ':');
    if (colon == NULL || colon == h)
      return false;
    for (const char *p = h; p < colon; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
        return false;
  }
  unsigned port;
  return parse_uint_range(colon + 1, 1, 65535, &port) == 0;
}

static int
cmd_api_image_register(int argc, char **argv)
{
  enum { OPT_ORIGIN = 256, OPT_VERSION, OPT_JSON };
  static const struct option longopts[] = {
    { "origin", required_argument, NULL, OPT_ORIGIN },
    { "version", required_argument, NULL, OPT_VERSION },
    { "json", no_argument, NULL, OPT_JSON },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  const char *origin = NULL, *version = NULL;
  bool json = false;
  int c;

  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (api_option(c))
      continue;
    switch (c) {
    case OPT_ORIGIN:
      origin = optarg;
      break;
    case OPT_VERSION:
      version = optarg;
      break;
    case OPT_JSON:
      json = true;
      break;
    case 'h':
      usage_api_image_register(stdout);
      return 0;
    default:
      return api_option_error("api image register", argv, c);
    }
  }
  if (argc - optind != 1) {
    fprintf(stderr, PROG ": api image register: expected one NAME; see '" PROG " api image register --help'\n");
    return EXIT_USAGE;
  }
  const char *name = argv[optind];
  if (!check_name(name))
    return EXIT_USAGE;
  if (origin == NULL) {
    fprintf(stderr, PROG ": api image register: where is it served? give --origin nbd://HOST:PORT\n");
    return EXIT_USAGE;
  }
  if (!origin_uri_valid(origin)) {
    fprintf(stderr, PROG ": --origin '%s': expected nbd://HOST:PORT, without an export name\n",
            origin);
    return EXIT_USAGE;
  }
  char hex[DIGEST_HEX_LEN + 1];
  if (version) {
    uint8_t d[DIGEST_LEN];
    if (strlen(version) != DIGEST_HEX_LEN || digest_from_hex(version, d) == -1) {
      fprintf(stderr, PROG ": --version '%s': expected 64 hex digits (the version printed by 'image add')\n",
              version);
      return EXIT_USAGE;
    }
    digest_to_hex(d, hex);
  }
  CLEANUP_JSON_PUT struct json_object *body = json_object_new_object();
  if (body == NULL || !add(body, "name", json_object_new_string(name)) ||
      !add(body, "origin", json_object_new_string(origin)) ||
      (version && !add(body, "version", json_object_new_string(hex)))) {
    fprintf(stderr, PROG ": api image register: out of memory\n");
    return 1;
  }
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return 1;
  char what[64 + MANIFEST_NAME_MAX];
  snprintf(what, sizeof what, "api image register %s", name);
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = apiclient_call(ac, "POST", "/v1/images", body, NULL, what,
                              &reply);
  if (status < 0)
    api_print_error(ac);
  apiclient_free(ac);
  if (status < 0)
    return 1;
  struct jcheck ck = { .what = what, .sanitize = !json };
  const char *rversion = ck_str(&ck, reply, "", "version", false);
  uint64_t size = ck_u64(&ck, reply, "", "size", false, NULL);
  if (ck.failed)
    return ck_report(&ck);
  if (json) {
    print_json(reply);
    return 0;
  }
  char h[32];
  printf("%s %s: version %s, size %" PRIu64 " bytes (%s)\n",
         status == 201 ? "registered" : "re-registered", name, rversion, size,
         human_bytes(size, h, sizeof h));
  return 0;
}

static void
usage_api_image_list(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] api image list [--json]\n"
          "\n"
          "Lists the images registered with thunder-api (GET /v1/images).  (The\n"
          "'image list' command lists what one node serves.)\n"
          "\n"
          "  --json            print the API's reply as JSON\n"
          API_OPTIONS_HELP);
}

static int
cmd_api_image_list(int argc, char **argv)
{
  bool json = false;
  int r = api_list_args("api image list", usage_api_image_list, argc, argv,
                        &json);
  if (r >= 0)
    return r;
  struct json_object *arr;
  CLEANUP_JSON_PUT struct json_object *reply =
      api_get_list("api image list", "/v1/images", "images", &arr);
  if (reply == NULL)
    return 1;
  if (json) {
    print_json(reply);
    return 0;
  }
  size_t n = json_object_array_length(arr);
  struct jcheck ck = { .what = "api image list", .sanitize = true };
  int wn = (int)strlen("NAME");
  for (size_t i = 0; i < n && !ck.failed; i++) {
    struct json_object *o = json_object_array_get_idx(arr, i);
    char ctx[48];
    snprintf(ctx, sizeof ctx, "images[%zu].", i);
    if (!json_object_is_type(o, json_type_object)) {
      ck_fail(&ck, "images[%zu]: expected an object", i);
      break;
    }
    int l = (int)strlen(ck_str(&ck, o, ctx, "name", false));
    if (l > wn)
      wn = l;
    ck_str(&ck, o, ctx, "version", false);
    ck_str(&ck, o, ctx, "origin", false);
    ck_str(&ck, o, ctx, "registered_at", true);
    ck_u64(&ck, o, ctx, "size", false, NULL);
  }
  if (ck.failed)
    return ck_report(&ck);
  printf("%-*s  %-12s  %10s  %s\n", wn, "NAME", "VERSION", "SIZE", "ORIGIN");
  for (size_t i = 0; i < n; i++) {
    struct json_object *o = json_object_array_get_idx(arr, i);
    char h[32];
    uint64_t size = 0;
    get_u64(o, "size", &size);
    printf("%-*s  %-12.12s  %10s  %s\n", wn, get_str(o, "name", "?"),
           get_str(o, "version", "?"), human_bytes(size, h, sizeof h),
           get_str(o, "origin", "?"));
  }
  if (n == 0)
    printf("(no images)\n");
  return 0;
}

/* ---- Command tables ---------------------------------------------------- */

static const struct command image_commands[] = {
  { "add", "NAME PATH [--block-size N] [--threads N] [--json]",
    "hash an image and write its manifest", cmd_image_add, NULL },
  { "attach", "NAME --upstream URI [--upstream URI ...] [--version HEX] [--json]",
    "attach an image to a node (--node), fetched from the upstreams",
    cmd_image_attach, NULL },
  { "detach", "NAME", "detach an image from a node (--node)",
    cmd_image_detach, NULL },
  { "stats", "NAME [--json]", "show an image's state and counters on a node (--node)",
    cmd_image_stats, NULL },
  { "list", "[--json]", "list the images a node (--node) serves",
    cmd_image_list, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command node_commands[] = {
  { "show", "[--json]", "show what a node (--node) reports about itself",
    cmd_node_show, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command pool_commands[] = {
  { "ensure", "[--pool NAME] [--pool-path DIR] [--libvirt-uri URI]",
    "make sure the libvirt storage pool exists, started and autostarted",
    cmd_pool_ensure, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command vol_commands[] = {
  { "create", "NAME --image IMAGE [--size SIZE]",
    "create a VM volume over an attached image's anchor", cmd_vol_create,
    NULL },
  { "delete", "NAME", "delete a VM volume", cmd_vol_delete, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command vm_commands[] = {
  { "create",
    "NAME --image IMAGE --vcpus N --memory MiB [--size SIZE] [--accel auto|kvm|tcg] [--console-log FILE]",
    "create a volume over an image and start a libvirt domain on it",
    cmd_vm_create, NULL },
  { "delete", "NAME", "stop and remove a domain and its volume",
    cmd_vm_delete, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command cluster_commands[] = {
  { "create",
    "--name NAME --image IMAGE --count N [--vcpus N] [--memory MiB] [--disk GiB] [--placement spread|pack] [--nodes A,B] [--zone Z] [--rack R] [--max-per-node N] [--fanout K] [--idempotency-key KEY] [--wait [--timeout S]] [--json]",
    "ask thunder-api (--api) for a cluster of VMs; --wait follows it",
    cmd_cluster_create, NULL },
  { "show", "ID|NAME [--tree] [--json]",
    "show a cluster, its VMs with node, state and reason", cmd_cluster_show,
    NULL },
  { "tree", "ID|NAME [--json]", "show a cluster's relay tree",
    cmd_cluster_tree, NULL },
  { "list", "[--state STATE] [--json]", "list the clusters",
    cmd_cluster_list, NULL },
  { "delete", "ID|NAME [--wait [--timeout S]]",
    "delete a cluster and its VMs", cmd_cluster_delete, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command api_node_commands[] = {
  { "list", "[--json]", "list the nodes registered with thunder-api",
    cmd_api_node_list, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command api_image_commands[] = {
  { "register", "NAME --origin nbd://HOST:PORT [--version HEX] [--json]",
    "register an image served by an origin thunderd",
    cmd_api_image_register, NULL },
  { "list", "[--json]", "list the images registered with thunder-api",
    cmd_api_image_list, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command api_commands[] = {
  { "node", "COMMAND ...", "nodes as thunder-api sees them", NULL,
    api_node_commands },
  { "image", "COMMAND ...", "images registered with thunder-api", NULL,
    api_image_commands },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command top_commands[] = {
  { "image", "COMMAND ...", "manage images and their manifests", NULL,
    image_commands },
  { "node", "COMMAND ...", "a node's own information", NULL,
    node_commands },
  { "pool", "COMMAND ...", "the libvirt storage pool on this host", NULL,
    pool_commands },
  { "vol", "COMMAND ...", "VM volumes in the pool", NULL, vol_commands },
  { "vm", "COMMAND ...", "VMs (libvirt domains) on VM volumes", NULL,
    vm_commands },
  { "cluster", "COMMAND ...", "clusters of VMs, through thunder-api (--api)",
    NULL, cluster_commands },
  { "api", "COMMAND ...", "nodes and images of thunder-api (--api)", NULL,
    api_commands },
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

/* Prints the top-level usage. */
static void
usage_top(FILE *fp)
{
  fprintf(fp, PROG " %s — control thunder, the VM image server\n\n"
          "Usage: " PROG " [--node URL | --api URL] [--token-file FILE] COMMAND [ARGS...]\n\n"
          "Commands:\n", THUNDER_VERSION);
  for (const struct command *c = top_commands; c->name; c++)
    fprintf(fp, "  %s %s\n      %s\n", c->name, c->synopsis, c->summary);
  fprintf(fp, "\nRun '" PROG " COMMAND --help' for a command's options.\n"
          "\nOptions:\n"
          "  --node URL         a node's control endpoint (thunderd --control),\n"
          "                     e.g. http://127.0.0.1:7000\n"
          "  --api URL          thunder-api, for the cluster and api commands\n"
          "                     (default $" APICLIENT_URL_ENV ", else " APICLIENT_URL_DEFAULT ")\n"
          "  --token-file FILE  the token of the node or of the API: for a node\n"
          "                     default " NODECLIENT_TOKEN_FILE ", and $" NODECLIENT_TOKEN_ENV ",\n"
          "                     when set, is used instead; for the API default\n"
          "                     $" APICLIENT_TOKEN_FILE_ENV ", else " APICLIENT_TOKEN_FILE "\n"
          "  -h, --help         show this help\n"
          "  -V, --version      show the version\n");
}

int
main(int argc, char **argv)
{
  log_init(PROG, "stderr");

  /* Global options, before the command. */
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
      printf(PROG " %s\n", THUNDER_VERSION);
      return 0;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage_top(stdout);
      return 0;
    }
    const char **dst = NULL;
    const char *opt = NULL;
    if (strncmp(a, "--node", 6) == 0 && (a[6] == '\0' || a[6] == '=')) {
      dst = &global.node;
      opt = "--node";
    } else if (strncmp(a, "--api", 5) == 0 && (a[5] == '\0' || a[5] == '=')) {
      dst = &global.api;
      opt = "--api";
    } else if (strncmp(a, "--token-file", 12) == 0 &&
               (a[12] == '\0' || a[12] == '=')) {
      dst = &global.token_file;
      opt = "--token-file";
    }
    if (dst == NULL) {
      fprintf(stderr, PROG ": unknown option '%s'; see '" PROG " --help'\n", a);
      return 1;
    }
    const char *eq = strchr(a, '=');
    if (eq) {
      *dst = eq + 1;
    } else if (i + 1 < argc) {
      *dst = argv[++i];
    } else {
      fprintf(stderr, PROG ": option '%s' needs a value\n", opt);
      return 1;
    }
  }
  return dispatch(PROG, top_commands, argc - i, argv + i);
}
