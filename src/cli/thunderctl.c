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
 * register/list), in cluster.c, talk to thunder-api through apiclient.c:
 * global --api URL (else $THUNDER_API, else http://127.0.0.1:7080), and
 * --token-file FILE (else $THUNDER_API_TOKEN_FILE, else
 * /etc/thunder/api.token); they also take both after their name.
 * --token-file names the token of whichever service the command talks to.
 * They exit 2 on a usage error and 3 when --wait times out.
 *
 * The pki commands (pki init, pki issue; pkicmd.c) make the fleet's CA and
 * the hosts' certificates in local directories.
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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apiclient.h"
#include "cleanup.h"
#include "cliutil.h"
#include "cluster.h"
#include "digest.h"
#include "log.h"
#include "manclient.h"
#include "manifest.h"
#include "nodeclient.h"
#include "pkicmd.h"
#include "pool.h"
#include "thunder-build.h"

/* How long each step of reading a manifest may take. */
#define RESOLVE_TIMEOUT_MS 30000

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

  cli_getopt_start();
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
    default:
      return cli_option_error("image add", argv, c);
    }
  }
  if (!cli_args_left("image add", argc, argv, 2, "NAME and PATH"))
    return 1;
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

/* Handles --node and --token-file inside a command's getopt loop: true
 * if c was one of them. */
static bool
node_option(int c)
{
  if (c == OPT_NODE)
    cli_global.node = optarg;
  else if (c == OPT_TOKEN_FILE)
    cli_global.token_file = optarg;
  else
    return false;
  return true;
}

/* A client of the node named by --node, with the token.  NULL with a
 * message. */
static struct nodeclient *
node_client(const char *cmd)
{
  if (cli_global.node == NULL) {
    fprintf(stderr, PROG ": %s: which node? give --node URL (e.g. --node http://127.0.0.1:7000)\n",
            cmd);
    return NULL;
  }
  return nodeclient_new(cli_global.node, cli_global.token_file
                                             ? cli_global.token_file
                                             : NODECLIENT_TOKEN_FILE);
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
 * NAME@manifest, common/manclient.h) and writes its SHA-256, the image
 * version, into hex.  -1 with a message. */
static int
resolve_version(const char *name, const char *uri, char hex[DIGEST_HEX_LEN + 1])
{
  char err[1024];
  uint64_t size;
  if (manclient_version(uri, name, RESOLVE_TIMEOUT_MS, 0, hex, &size, err,
                        sizeof err) != MANCLIENT_OK) {
    fprintf(stderr, PROG ": manifest of '%s': %s\n", name, err);
    return -1;
  }
  return 0;
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

  cli_getopt_start();
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
      return cli_option_error("image attach", argv, c);
    }
  }
  const char *name;
  if (!cli_name_arg("image attach", argc, argv, &name))
    return 1;
  if (nups == 0) {
    fprintf(stderr, PROG ": image attach: give at least one --upstream URI (parent first, origin last)\n");
    return 1;
  }

  char hex[DIGEST_HEX_LEN + 1];
  if (version && cli_parse_version(version, hex) < 0)
    return 1;

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
      cli_print_json(reply);
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

  cli_getopt_start();
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
      return cli_option_error(cmd, argv, c);
    }
  }
  if (name)
    return cli_name_arg(cmd, argc, argv, name) ? -1 : 1;
  return cli_args_left(cmd, argc, argv, 0, "no arguments") ? -1 : 1;
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

  printf("image       %s\n", cli_get_str(o, "name", "?"));
  printf("version     %s\n", cli_get_str(o, "version", "?"));
  printf("state       %s\n", cli_get_str(o, "state", "?"));
  if (cli_get_u64(o, "size", &size) && cli_get_u64(o, "block_size", &bs) &&
      cli_get_u64(o, "blocks", &blocks))
    printf("size        %" PRIu64 " bytes (%s), %" PRIu64 " blocks of %" PRIu64 " bytes\n",
           size, cli_human_bytes(size, h1, sizeof h1), blocks, bs);

  struct json_object *ups;
  if (json_object_object_get_ex(o, "upstreams", &ups) &&
      json_object_is_type(ups, json_type_array) &&
      json_object_array_length(ups) > 0) {
    size_t n = json_object_array_length(ups);
    int w = (int)strlen("upstream");
    for (size_t i = 0; i < n; i++)
      cli_widen(&w, cli_get_str(json_object_array_get_idx(ups, i), "uri", "?"));
    printf("\n  %-*s  %10s  %12s  %15s  %7s  %s\n", w, "upstream", "blocks",
           "bytes", "verify_failures", "errors", "faulty");
    for (size_t i = 0; i < n; i++) {
      struct json_object *u = json_object_array_get_idx(ups, i), *f;
      uint64_t ub = 0, ubytes = 0, uv = 0, ue = 0;
      cli_get_u64(u, "blocks", &ub);
      cli_get_u64(u, "bytes", &ubytes);
      cli_get_u64(u, "verify_failures", &uv);
      cli_get_u64(u, "errors", &ue);
      bool faulty = json_object_object_get_ex(u, "faulty", &f) &&
                    json_object_get_boolean(f);
      printf("  %-*s  %10" PRIu64 "  %12" PRIu64 "  %15" PRIu64 "  %7" PRIu64 "  %s\n",
             w, cli_get_str(u, "uri", "?"), ub, ubytes, uv, ue,
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
               cli_human_bytes(v, h1, sizeof h1));
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
    cli_print_json(reply);
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
    cli_print_json(reply);
    return 0;
  }
  size_t n = json_object_array_length(images);
  int w = (int)strlen("NAME");
  for (size_t i = 0; i < n; i++)
    cli_widen(&w, cli_get_str(json_object_array_get_idx(images, i), "name", "?"));
  printf("%-*s  %-8s  %-12s  %10s  %s\n", w, "NAME", "STATE", "VERSION",
         "SIZE", "CACHED");
  for (size_t i = 0; i < n; i++) {
    struct json_object *o = json_object_array_get_idx(images, i), *c = NULL;
    char hs[32], hc[48], cached[64] = "-";
    uint64_t size = 0, valid;
    bool has_size = cli_get_u64(o, "size", &size);
    json_object_object_get_ex(o, "counters", &c);
    if (cli_get_u64(c, "valid_cache_bytes", &valid)) {
      if (has_size && size > 0)
        snprintf(cached, sizeof cached, "%s (%.0f%%)",
                 cli_human_bytes(valid, hc, sizeof hc),
                 100.0 * (double)valid / (double)size);
      else
        snprintf(cached, sizeof cached, "%s", cli_human_bytes(valid, hc, sizeof hc));
    }
    printf("%-*s  %-8s  %-12.12s  %10s  %s\n", w, cli_get_str(o, "name", "?"),
           cli_get_str(o, "state", "?"), cli_get_str(o, "version", "?"),
           has_size ? cli_human_bytes(size, hs, sizeof hs) : "-", cached);
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
    cli_print_json(reply);
    return 0;
  }
  char h[48];
  uint64_t v;
  printf("hostname    %s\n", cli_get_str(reply, "hostname", "?"));
  printf("mode        %s\n", cli_get_str(reply, "mode", "?"));
  if (cli_get_u64(reply, "vcpus", &v))
    printf("vcpus       %" PRIu64 "\n", v);
  if (cli_get_u64(reply, "memory_mib", &v))
    printf("memory      %" PRIu64 " MiB (%s)\n", v,
           cli_human_bytes(v * 1024 * 1024, h, sizeof h));
  const char *pool = cli_get_str(reply, "pool", NULL);
  if (pool)
    printf("pool        %s at %s\n", pool, cli_get_str(reply, "pool_path", "?"));
  else
    printf("pool        none\n");
  if (cli_get_u64(reply, "disk_free_bytes", &v))
    printf("disk free   %" PRIu64 " bytes (%s)\n", v, cli_human_bytes(v, h, sizeof h));
  printf("libvirt     %s\n", cli_get_str(reply, "libvirt", "?"));
  const char *lerr = cli_get_str(reply, "libvirt_error", NULL);
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
  if (cli_get_u64(reply, "vms", &v))
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

/* Connects to libvirt and ensures the pool (pool_cfg completed with the
 * environment).  NULL with a message. */
static struct pool *
open_pool(void)
{
  if (pool_cfg.uri == NULL)
    pool_cfg.uri = cli_env("THUNDER_LIBVIRT_URI");
  if (pool_cfg.name == NULL)
    pool_cfg.name = cli_env("THUNDER_POOL");
  if (pool_cfg.name == NULL)
    pool_cfg.name = POOL_DEFAULT_NAME;
  if (pool_cfg.path == NULL)
    pool_cfg.path = cli_env("THUNDER_POOL_PATH");
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

  cli_getopt_start();
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (pool_option(c))
      continue;
    if (c == 'h') {
      usage(stdout);
      return 0;
    }
    return cli_option_error(cmd, argv, c);
  }
  if (!cli_args_left(cmd, argc, argv, want, want ? "one NAME" : "no arguments"))
    return 1;
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

  cli_getopt_start();
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
      return cli_option_error("vol create", argv, c);
    }
  }
  if (!cli_args_left("vol create", argc, argv, 1, "one NAME"))
    return 1;
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

/* vol delete and vm delete: NAME, the pool options, one pool call. */
static int
run_pool_delete(const char *what, void (*usage)(FILE *), int argc,
                char **argv,
                int (*del)(struct pool *, const char *, struct pool_error *),
                const char *done)
{
  const char *name = NULL;
  int r = pool_command_args(what, usage, argc, argv, 1, &name);
  if (r >= 0)
    return r;
  struct pool *p = open_pool();
  if (p == NULL)
    return 1;
  struct pool_error e;
  r = del(p, name, &e);
  pool_close(p);
  if (r < 0) {
    fprintf(stderr, PROG ": %s\n", e.msg);
    return 1;
  }
  printf("%s %s%s\n", done, name,
         del == pool_vm_delete ? " and its volume" : "");
  return 0;
}

static int
cmd_vol_delete(int argc, char **argv)
{
  return run_pool_delete("vol delete", usage_vol_delete, argc, argv,
                         pool_vol_delete, "deleted volume");
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

  cli_getopt_start();
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (pool_option(c))
      continue;
    switch (c) {
    case OPT_IMAGE:
      spec.image = optarg;
      break;
    case OPT_VCPUS:
      if (cli_uint_option("--vcpus", optarg, "a number", 1, 1024,
                          &spec.vcpus) < 0)
        return 1;
      break;
    case OPT_MEMORY:
      if (cli_parse_memory(optarg, &spec.memory_mib) < 0) {
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
      return cli_option_error("vm create", argv, c);
    }
  }
  if (!cli_args_left("vm create", argc, argv, 1, "one NAME"))
    return 1;
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
  return run_pool_delete("vm delete", usage_vm_delete, argc, argv,
                         pool_vm_delete, "deleted domain");
}

/* ---- cache show, cache gc ------------------------------------------------------ */

static void
usage_cache(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " --node URL cache show [--json]\n"
          "       " PROG " --node URL cache gc [--json]\n"
          "\n"
          "show: the node's block cache (GET /v1/cache): its capacity (cache-max,\n"
          "cache-min-free), bytes held, evictions, and each image version on disk\n"
          "with its bytes and whether it is attached.\n"
          "gc: frees space now (POST /v1/cache/gc): removes every version no image\n"
          "is attached at, its blocks and directory.\n"
          "\n"
          "  --json            print the node's reply as JSON\n"
          "  --node URL        the node's control endpoint, e.g. http://127.0.0.1:7000\n"
          "  --token-file FILE its token (default " NODECLIENT_TOKEN_FILE ";\n"
          "                    $" NODECLIENT_TOKEN_ENV " overrides it)\n"
          "  -h, --help        show this help\n");
}

/* cache show / cache gc: one call, the reply as JSON or text. */
static int
cache_command(const char *cmd, const char *method, const char *path,
              int argc, char **argv)
{
  bool json = false;
  int r = name_command_args(cmd, usage_cache, argc, argv, &json, NULL);
  if (r >= 0)
    return r;
  struct nodeclient *nc = node_client(cmd);
  if (nc == NULL)
    return 1;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = nodeclient_call(nc, method, path, NULL, cmd, &reply);
  nodeclient_free(nc);
  if (status < 0)
    return 1;
  if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
    fprintf(stderr, PROG ": %s: the reply is not a JSON object\n", cmd);
    return 1;
  }
  if (json) {
    cli_print_json(reply);
    return 0;
  }
  char h[48];
  uint64_t v;
  if (cli_get_u64(reply, "freed_bytes", &v)) {
    printf("freed %s\n", cli_human_bytes(v, h, sizeof h));
    return 0;
  }
  static const char *const rows[][2] = {
    { "cap_bytes", "cap" },          { "min_free_bytes", "free floor" },
    { "limit_bytes", "may hold" },   { "used_bytes", "holds" },
    { "evicted_bytes", "evicted" },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (cli_get_u64(reply, rows[i][0], &v))
      printf("%-11s %s\n", rows[i][1], cli_human_bytes(v, h, sizeof h));
  struct json_object *vs;
  if (!json_object_object_get_ex(reply, "versions", &vs) ||
      !json_object_is_type(vs, json_type_array))
    return 0;
  printf("\n%-24s  %-12s  %-10s  %10s  %10s\n", "IMAGE", "VERSION", "STATE",
         "CACHED", "SIZE");
  for (size_t i = 0; i < json_object_array_length(vs); i++) {
    struct json_object *o = json_object_array_get_idx(vs, i), *a;
    char hb[48], hs[48];
    uint64_t bytes = 0, size = 0;
    cli_get_u64(o, "bytes", &bytes);
    cli_get_u64(o, "image_bytes", &size);
    bool attached = json_object_object_get_ex(o, "attached", &a) &&
                    json_object_get_boolean(a);
    printf("%-24s  %-12.12s  %-10s  %10s  %10s\n", cli_get_str(o, "name", "?"),
           cli_get_str(o, "version", "?"),
           attached ? "attached" : "unattached",
           cli_human_bytes(bytes, hb, sizeof hb),
           cli_human_bytes(size, hs, sizeof hs));
  }
  return 0;
}

static int
cmd_cache_show(int argc, char **argv)
{
  return cache_command("cache show", "GET", "/v1/cache", argc, argv);
}

static int
cmd_cache_gc(int argc, char **argv)
{
  return cache_command("cache gc", "POST", "/v1/cache/gc", argc, argv);
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

static const struct command cache_commands[] = {
  { "show", "[--json]", "show a node's (--node) cache: capacity, versions",
    cmd_cache_show, NULL },
  { "gc", "[--json]", "remove the versions no image is attached at",
    cmd_cache_gc, NULL },
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

static const struct command top_commands[] = {
  { "image", "COMMAND ...", "manage images and their manifests", NULL,
    image_commands },
  { "node", "COMMAND ...", "a node's own information", NULL,
    node_commands },
  { "cache", "COMMAND ...", "a node's block cache", NULL, cache_commands },
  { "pool", "COMMAND ...", "the libvirt storage pool on this host", NULL,
    pool_commands },
  { "vol", "COMMAND ...", "VM volumes in the pool", NULL, vol_commands },
  { "vm", "COMMAND ...", "VMs (libvirt domains) on VM volumes", NULL,
    vm_commands },
  { "cluster", "COMMAND ...", "clusters of VMs, through thunder-api (--api)",
    NULL, cluster_commands },
  { "api", "COMMAND ...", "nodes and images of thunder-api (--api)", NULL,
    api_commands },
  { "pki", "COMMAND ...", "the fleet's CA and the hosts' TLS certificates",
    NULL, pkicmd_commands },
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
      dst = &cli_global.node;
      opt = "--node";
    } else if (strncmp(a, "--api", 5) == 0 && (a[5] == '\0' || a[5] == '=')) {
      dst = &cli_global.api;
      opt = "--api";
    } else if (strncmp(a, "--token-file", 12) == 0 &&
               (a[12] == '\0' || a[12] == '=')) {
      dst = &cli_global.token_file;
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
