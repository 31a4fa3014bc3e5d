/* thunder — thunderctl's commands on thunder-api (see cluster.h).
 *
 * cluster create|show|tree|list|delete, and api node list|enrol|revoke,
 * api image register|list.  They talk to thunder-api through apiclient.c with the
 * operator token.  Exit status: 0 done, 1 failed (the API refused, the
 * cluster failed, a reply made no sense), 2 usage error, 3 --wait timed out.
 *
 * Every reply is read through the checked readers (ck_*) below before
 * anything of it is printed.
 */
#include "cluster.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "apiclient.h"
#include "cleanup.h"
#include "digest.h"
#include "jsonutil.h"
#include "manifest.h"

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

/* The next option of an API command's argv (getopt_long with longopts,
 * which hold API_LONGOPTS): --api and --token-file are taken here, so it
 * returns the others, '?' or ':' for an error, -1 at the end.  Start the
 * scan with cli_getopt_start. */
static int
next_option(int argc, char **argv, const struct option *longopts)
{
  for (;;) {
    int c = getopt_long(argc, argv, ":h", longopts, NULL);
    if (c == OPT_API)
      cli_global.api = optarg;
    else if (c == OPT_TOKEN_FILE)
      cli_global.token_file = optarg;
    else
      return c;
  }
}

/* Reports getopt's errors of API command cmd; returns EXIT_USAGE. */
static int
api_option_error(const char *cmd, char **argv, int c)
{
  cli_option_error(cmd, argv, c);
  return EXIT_USAGE;
}

/* Fails unless no argument is left after the options (message printed). */
static bool
no_arguments(const char *cmd, int argc, char **argv)
{
  return cli_args_left(cmd, argc, argv, 0, NULL);
}

/* A client of the API named by --api / $THUNDER_API with the token of
 * --token-file / $THUNDER_API_TOKEN_FILE.  NULL with a message. */
static struct apiclient *
api_client(void)
{
  const char *url = cli_global.api;
  if (url == NULL)
    url = cli_env(APICLIENT_URL_ENV);
  if (url == NULL)
    url = APICLIENT_URL_DEFAULT;
  const char *file = cli_global.token_file;
  if (file == NULL)
    file = cli_env(APICLIENT_TOKEN_FILE_ENV);
  if (file == NULL)
    file = APICLIENT_TOKEN_FILE;
  return apiclient_new(url, file);
}

static void
api_print_error(const struct apiclient *ac)
{
  fprintf(stderr, PROG ": %s\n", apiclient_error(ac));
}

/* Sends method on path (body: NULL or JSON) through ac for what and
 * prints the error if it fails.  Returns the 2xx status with *reply set,
 * or -1. */
static int
api_call(struct apiclient *ac, const char *method, const char *path,
         struct json_object *body, const char *what,
         struct json_object **reply)
{
  int status = apiclient_call(ac, method, path, body, NULL, what, reply);
  if (status < 0)
    api_print_error(ac);
  return status < 0 ? -1 : status;
}

/* api_call through a client of its own.  -1 with a message. */
static int
api_request(const char *method, const char *path, struct json_object *body,
            const char *what, struct json_object **reply)
{
  *reply = NULL;
  struct apiclient *ac = api_client();
  if (ac == NULL)
    return -1;
  int status = api_call(ac, method, path, body, what, reply);
  apiclient_free(ac);
  return status;
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

/* Element i of array member key of an object at ctx, which must be an
 * object (NULL, ck failed, if not); sets sub to "CTXKEY[i]." (sublen
 * bytes) for its members. */
static struct json_object *
ck_element(struct jcheck *ck, struct json_object *arr, const char *ctx,
           const char *key, size_t i, char *sub, size_t sublen)
{
  struct json_object *e = json_object_array_get_idx(arr, i);
  snprintf(sub, sublen, "%s%s[%zu].", ctx, key, i);
  if (!json_object_is_type(e, json_type_object)) {
    ck_fail(ck, "%s%s[%zu]: expected an object", ctx, key, i);
    return NULL;
  }
  return e;
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
    struct json_object *e = ck_element(ck, vms, ctx, "vms", i, sub, sizeof sub);
    if (e == NULL)
      break;
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
             cli_human_bytes(v->origin_bytes, h, sizeof h), elapsed);
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
  if (cli_parse_uint(s, 0, 7 * 24 * 3600, out) < 0) {
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

  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
    switch (c) {
    case OPT_NAME:
      name = optarg;
      break;
    case OPT_IMAGE:
      image = optarg;
      break;
    case OPT_COUNT:
      if (cli_uint_option("--count", optarg, "a number", 1, 1000000, &count) < 0)
        return EXIT_USAGE;
      break;
    case OPT_VCPUS:
      if (cli_uint_option("--vcpus", optarg, "a number", 1, 256, &vcpus) < 0)
        return EXIT_USAGE;
      break;
    case OPT_MEMORY:
      if (cli_parse_memory(optarg, &memory) < 0 || memory < 16 ||
          memory > 4194304) {
        fprintf(stderr, PROG ": --memory '%s': expected MiB from 16 to 4194304, or a whole number of MiB with a suffix (512M, 2G)\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_DISK:
      if (cli_uint_option("--disk", optarg, "GiB", 1, 65536, &disk) < 0)
        return EXIT_USAGE;
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
      if (cli_uint_option("--max-per-node", optarg, "a number", 1, 1000000, &max_per_node) < 0)
        return EXIT_USAGE;
      break;
    case OPT_FANOUT:
      if (cli_uint_option("--fanout", optarg, "a number", 1, 64, &fanout) < 0)
        return EXIT_USAGE;
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
  if (!no_arguments("cluster create", argc, argv))
    return EXIT_USAGE;
  if (name == NULL || image == NULL || count == 0) {
    fprintf(stderr, PROG ": cluster create: give --name NAME, --image IMAGE and --count N\n");
    return EXIT_USAGE;
  }
  if (!manifest_name_valid(name) || strlen(name) > CLUSTER_NAME_MAX) {
    fprintf(stderr, PROG ": --name '%s': expected 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'\n",
            name, CLUSTER_NAME_MAX);
    return EXIT_USAGE;
  }
  if (!cli_check_name(image))
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
      !jsonutil_add(body, "name", json_object_new_string(name)) ||
      !jsonutil_add(body, "image", json_object_new_string(image)) ||
      !jsonutil_add(body, "count", json_object_new_int64(count)) ||
      !jsonutil_add(body, "vcpus", json_object_new_int64(vcpus)) ||
      !jsonutil_add(body, "memory_mib", json_object_new_int64(memory)) ||
      (disk && !jsonutil_add(body, "disk_gib", json_object_new_int64(disk))) ||
      (fanout && !jsonutil_add(body, "fanout", json_object_new_int64(fanout))) ||
      (placement && !jsonutil_add(pl, "strategy", json_object_new_string(placement))) ||
      (zone && !jsonutil_add(pl, "zone", json_object_new_string(zone))) ||
      (rack && !jsonutil_add(pl, "rack", json_object_new_string(rack))) ||
      (max_per_node &&
       !jsonutil_add(pl, "max_per_node", json_object_new_int64(max_per_node))))
    oom = true;
  if (!oom && nodes) {
    struct json_object *a = parse_node_list(nodes, &oom);
    if (a == NULL && !oom)
      return EXIT_USAGE;
    if (a && !jsonutil_add(pl, "nodes", a))
      oom = true;
  }
  if (!oom && json_object_object_length(pl) > 0) {
    if (!jsonutil_add(body, "placement", json_object_get(pl)))
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
      cli_print_json(reply);
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
    cli_print_json(last);
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
  if (api_call(ac, "GET", "/v1/clusters", NULL, cmd, &reply) < 0)
    return 1;
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
  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
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
  if (!cli_args_left(cmd, argc, argv, 1, "one cluster ID or NAME"))
    return EXIT_USAGE;
  if (a->has_timeout && !a->wait) {
    fprintf(stderr, PROG ": %s: --timeout goes with --wait\n", cmd);
    return EXIT_USAGE;
  }
  a->arg = argv[optind];
  return -1;
}

/* The start of cluster show, tree and delete: parses the options into *a,
 * connects (*ac, to free) and resolves the ID or NAME into id.  Returns -1
 * to go on, else an exit status (*ac then NULL). */
static int
cluster_command_start(const char *cmd, void (*usage)(FILE *), int argc,
                      char **argv, struct cluster_args *a,
                      struct apiclient **ac, char id[CLUSTER_ID_LEN + 1])
{
  *ac = NULL;
  int r = cluster_command_args(cmd, usage, argc, argv, a);
  if (r >= 0)
    return r;
  *ac = api_client();
  if (*ac == NULL)
    return 1;
  r = resolve_cluster(*ac, cmd, a->arg, id);
  if (r >= 0) {
    apiclient_free(*ac);
    *ac = NULL;
  }
  return r;
}

/* Sends METHOD /v1/clusters/ID for command cmd ("cluster show"), what set
 * to "CMD ID" (whatlen bytes), and reads the CLUSTER reply into *v, with
 * its VMs (v->vms to free) if with_vms.  Returns the reply (to put), or
 * NULL with a message. */
static struct json_object *
cluster_call(struct apiclient *ac, const char *method, const char *cmd,
             const char *id, bool sanitize, bool with_vms, char *what,
             size_t whatlen, struct cluster_view *v)
{
  char path[64];
  snprintf(path, sizeof path, "/v1/clusters/%s", id);
  snprintf(what, whatlen, "%s %s", cmd, id);
  struct json_object *reply = NULL;
  if (api_call(ac, method, path, NULL, what, &reply) < 0)
    return NULL;
  struct jcheck ck = { .what = what, .sanitize = sanitize };
  read_cluster(&ck, reply, "", with_vms, v);
  if (ck.failed) {
    free(v->vms);
    json_object_put(reply);
    ck_report(&ck);
    return NULL;
  }
  return reply;
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
         cli_human_bytes(v->origin_bytes, h, sizeof h));
  if (v->created_at)
    printf("created     %s\n", v->created_at);
  if (v->finished_at)
    printf("finished    %s\n", v->finished_at);
  if (v->nvms == 0)
    return;

  int wn = (int)strlen("VM"), wd = (int)strlen("NODE"), ws = (int)strlen("STATE");
  for (size_t i = 0; i < v->nvms; i++) {
    const struct vm_view *m = &v->vms[i];
    cli_widen(&wn, m->name);
    if (m->node)
      cli_widen(&wd, m->node);
    cli_widen(&ws, m->state);
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
  if (api_call(ac, "GET", path, NULL, what, &reply) < 0)
    return 1;
  if (json) {
    cli_print_json(reply);
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
    char ctx[48];
    struct json_object *e = ck_element(&ck, a, "", "nodes", i, ctx, sizeof ctx);
    if (e == NULL)
      break;
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
  struct apiclient *ac;
  char id[CLUSTER_ID_LEN + 1], what[64];
  int r = cluster_command_start("cluster show", usage_cluster_show, argc,
                                argv, &a, &ac, id);
  if (r >= 0)
    return r;
  struct cluster_view v;
  CLEANUP_JSON_PUT struct json_object *reply =
      cluster_call(ac, "GET", "cluster show", id, !a.json, true, what,
                   sizeof what, &v);
  if (reply == NULL) {
    apiclient_free(ac);
    return 1;
  }
  if (a.json)
    cli_print_json(reply);
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
  struct apiclient *ac;
  char id[CLUSTER_ID_LEN + 1];
  int r = cluster_command_start("cluster tree", usage_cluster_tree, argc,
                                argv, &a, &ac, id);
  if (r >= 0)
    return r;
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

  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
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
  if (!no_arguments("cluster list", argc, argv))
    return EXIT_USAGE;
  char path[64];
  snprintf(path, sizeof path, "/v1/clusters%s%s", state ? "?state=" : "",
           state ? state : "");
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (api_request("GET", path, NULL, "cluster list", &reply) < 0)
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
    cli_widen(&wn, v[i].name);
    cli_widen(&wi, v[i].image);
  }
  if (ck.failed)
    return ck_report(&ck);
  if (json) {
    cli_print_json(reply);
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
  struct apiclient *ac;
  char id[CLUSTER_ID_LEN + 1], what[64];
  int r = cluster_command_start("cluster delete", usage_cluster_delete, argc,
                                argv, &a, &ac, id);
  if (r >= 0)
    return r;
  double start = now_s();
  struct cluster_view v;
  CLEANUP_JSON_PUT struct json_object *reply =
      cluster_call(ac, "DELETE", "cluster delete", id, true, false, what,
                   sizeof what, &v);
  if (reply == NULL) {
    apiclient_free(ac);
    return 1;
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

/* The start of api node list and api image list: parses the options (only
 * --json), GETs path and checks that the reply has array key.  With --json
 * prints the reply and returns 0.  Returns -1 to go on, with *reply (to
 * put) and *arr set, else an exit status. */
static int
api_list_start(const char *cmd, void (*usage)(FILE *), const char *path,
               const char *key, int argc, char **argv,
               struct json_object **reply, struct json_object **arr)
{
  enum { OPT_JSON = 256 };
  static const struct option longopts[] = {
    { "json", no_argument, NULL, OPT_JSON },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  bool json = false;
  int c;

  *reply = NULL;
  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
    if (c == OPT_JSON) {
      json = true;
    } else if (c == 'h') {
      usage(stdout);
      return 0;
    } else {
      return api_option_error(cmd, argv, c);
    }
  }
  if (!no_arguments(cmd, argc, argv))
    return EXIT_USAGE;
  if (api_request("GET", path, NULL, cmd, reply) < 0)
    return 1;
  struct jcheck ck = { .what = cmd };
  *arr = ck_typed(&ck, *reply, "", key, json_type_array, false);
  if (ck.failed)
    return ck_report(&ck);
  if (json) {
    cli_print_json(*reply);
    return 0;
  }
  return -1;
}

static int
cmd_api_node_list(int argc, char **argv)
{
  struct json_object *arr;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int r = api_list_start("api node list", usage_api_node_list, "/v1/nodes",
                         "nodes", argc, argv, &reply, &arr);
  if (r >= 0)
    return r;
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
    char ctx[48], sub[64];
    struct json_object *o = ck_element(&ck, arr, "", "nodes", i, ctx,
                                       sizeof ctx);
    if (o == NULL)
      break;
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
    cli_widen(&wn, w->name);
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

/* ---- api node enrol / revoke ------------------------------------------------- */

/* The NAME argument of the node commands: a name as cli_name_arg takes
 * it, of at most NODE_NAME_MAX characters (never cut to fit: a longer
 * name would name another node). */
static bool
node_name_arg(const char *cmd, int argc, char **argv, const char **name)
{
  if (!cli_name_arg(cmd, argc, argv, name))
    return false;
  if (strlen(*name) > NODE_NAME_MAX) {
    fprintf(stderr, PROG ": %s: node name '%s': longer than %d characters\n",
            cmd, *name, NODE_NAME_MAX);
    return false;
  }
  return true;
}

static void
usage_api_node_enrol(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] api node enrol NAME [--rotate] [--out FILE]\n"
          "\n"
          "Enrols node NAME with thunder-api (POST /v1/nodes/NAME/enrolment) and\n"
          "prints its enrolment token, which thunder-api shows only this once and\n"
          "keeps only as a salted hash.  The node registers with it\n"
          "(thunderd --node-token-file); from then on thunder-api accepts node\n"
          "NAME with this token only (docs/security.md).\n"
          "\n"
          "  --rotate          NAME is enrolled already: replace its token (the old\n"
          "                    one stops working at once)\n"
          "  --out FILE        write the token to FILE (mode 0600, replaced\n"
          "                    atomically) instead of printing it\n"
          API_OPTIONS_HELP);
}

/* Writes token and a newline to path through a 0600 temporary file renamed
 * over it (a thunderd never reads half a token).  -1 with a message. */
static int
write_token_file(const char *path, const char *token)
{
  size_t n = strlen(path);
  CLEANUP_FREE char *tmp = malloc(n + 8);
  if (tmp == NULL) {
    fprintf(stderr, PROG ": api node enrol: out of memory\n");
    return -1;
  }
  snprintf(tmp, n + 8, "%s.XXXXXX", path);
  int fd = mkstemp(tmp); /* mode 0600 */
  if (fd < 0) {
    fprintf(stderr, PROG ": api node enrol: --out %s: cannot create %s: %s\n",
            path, tmp, strerror(errno));
    return -1;
  }
  FILE *f = fdopen(fd, "w");
  if (f == NULL) {
    fprintf(stderr, PROG ": api node enrol: --out %s: %s\n", path,
            strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  bool ok = fprintf(f, "%s\n", token) > 0 && fflush(f) == 0 &&
            fsync(fileno(f)) == 0;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) == -1) {
    fprintf(stderr, PROG ": api node enrol: --out %s: %s\n", path,
            strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int
cmd_api_node_enrol(int argc, char **argv)
{
  enum { OPT_ROTATE = 256, OPT_OUT };
  static const struct option longopts[] = {
    { "rotate", no_argument, NULL, OPT_ROTATE },
    { "out", required_argument, NULL, OPT_OUT },
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  const char *cmd = "api node enrol", *out = NULL, *name;
  bool rotate = false;
  int c;

  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
    if (c == OPT_ROTATE) {
      rotate = true;
    } else if (c == OPT_OUT) {
      out = optarg;
    } else if (c == 'h') {
      usage_api_node_enrol(stdout);
      return 0;
    } else {
      return api_option_error(cmd, argv, c);
    }
  }
  if (!node_name_arg(cmd, argc, argv, &name))
    return EXIT_USAGE;
  char path[160];
  snprintf(path, sizeof path, "/v1/nodes/%s/enrolment%s", name,
           rotate ? "?rotate=true" : "");
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (api_request("POST", path, NULL, cmd, &reply) < 0)
    return 1;
  struct jcheck ck = { .what = cmd };
  const char *token = ck_str(&ck, reply, "", "token", false);
  if (ck.failed)
    return ck_report(&ck);
  if (out == NULL) {
    printf("%s\n", token);
    return 0;
  }
  if (write_token_file(out, token) == -1)
    return 1;
  fprintf(stderr, "node %s: enrolment token written to %s\n", name, out);
  return 0;
}

static void
usage_api_node_revoke(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] api node revoke NAME\n"
          "\n"
          "Revokes node NAME's enrolment (DELETE /v1/nodes/NAME/enrolment): its\n"
          "token stops working at once.\n"
          "\n"
          API_OPTIONS_HELP);
}

static int
cmd_api_node_revoke(int argc, char **argv)
{
  static const struct option longopts[] = {
    API_LONGOPTS,
    { NULL, 0, NULL, 0 },
  };
  const char *cmd = "api node revoke", *name;
  int c;

  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
    if (c == 'h') {
      usage_api_node_revoke(stdout);
      return 0;
    }
    return api_option_error(cmd, argv, c);
  }
  if (!node_name_arg(cmd, argc, argv, &name))
    return EXIT_USAGE;
  char path[160];
  snprintf(path, sizeof path, "/v1/nodes/%s/enrolment", name);
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  if (api_request("DELETE", path, NULL, cmd, &reply) < 0)
    return 1;
  printf("node %s: enrolment revoked\n", name);
  return 0;
}

/* ---- api image register / list ------------------------------------------------- */

static void
usage_api_image_register(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " [--api URL] api image register NAME --origin nbd[s]://HOST:PORT\n"
          "                  [--version HEX] [--json]\n"
          "\n"
          "Registers image NAME with thunder-api (POST /v1/images): the API reads\n"
          "its manifest from the origin thunderd (export NAME" MANIFEST_EXPORT_SUFFIX ") to learn\n"
          "its version and size.  Registering again replaces the entry.\n"
          "\n"
          "  --origin URI      the origin thunderd, nbd://HOST:PORT (no export), or\n"
          "                    nbds://HOST:PORT for one with --tls on|require\n"
          "  --version HEX     the version expected (64 hex digits, as printed by\n"
          "                    'image add'); the API refuses another one\n"
          "  --json            print the API's reply as JSON\n"
          API_OPTIONS_HELP);
}

/* True if s is nbd://HOST:PORT or nbds://HOST:PORT (TLS) with no export:
 * HOST a name, an IPv4 address or [IPv6], PORT 1-65535. */
static bool
origin_uri_valid(const char *s)
{
  size_t skip = strncmp(s, "nbd://", 6) == 0    ? 6
                : strncmp(s, "nbds://", 7) == 0 ? 7
                                                : 0;
  if (skip == 0)
    return false;
  const char *h = s + skip, *colon;
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
  return cli_parse_uint(colon + 1, 1, 65535, &port) == 0;
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

  cli_getopt_start();
  while ((c = next_option(argc, argv, longopts)) != -1) {
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
  const char *name;
  if (!cli_name_arg("api image register", argc, argv, &name))
    return EXIT_USAGE;
  if (origin == NULL) {
    fprintf(stderr, PROG ": api image register: where is it served? give --origin nbd[s]://HOST:PORT\n");
    return EXIT_USAGE;
  }
  if (!origin_uri_valid(origin)) {
    fprintf(stderr, PROG ": --origin '%s': expected nbd://HOST:PORT or nbds://HOST:PORT, without an export name\n",
            origin);
    return EXIT_USAGE;
  }
  char hex[DIGEST_HEX_LEN + 1];
  if (version && cli_parse_version(version, hex) < 0)
    return EXIT_USAGE;
  CLEANUP_JSON_PUT struct json_object *body = json_object_new_object();
  if (body == NULL || !jsonutil_add(body, "name", json_object_new_string(name)) ||
      !jsonutil_add(body, "origin", json_object_new_string(origin)) ||
      (version && !jsonutil_add(body, "version", json_object_new_string(hex)))) {
    fprintf(stderr, PROG ": api image register: out of memory\n");
    return 1;
  }
  char what[64 + MANIFEST_NAME_MAX];
  snprintf(what, sizeof what, "api image register %s", name);
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int status = api_request("POST", "/v1/images", body, what, &reply);
  if (status < 0)
    return 1;
  struct jcheck ck = { .what = what, .sanitize = !json };
  const char *rversion = ck_str(&ck, reply, "", "version", false);
  uint64_t size = ck_u64(&ck, reply, "", "size", false, NULL);
  if (ck.failed)
    return ck_report(&ck);
  if (json) {
    cli_print_json(reply);
    return 0;
  }
  char h[32];
  printf("%s %s: version %s, size %" PRIu64 " bytes (%s)\n",
         status == 201 ? "registered" : "re-registered", name, rversion, size,
         cli_human_bytes(size, h, sizeof h));
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
  struct json_object *arr;
  CLEANUP_JSON_PUT struct json_object *reply = NULL;
  int r = api_list_start("api image list", usage_api_image_list,
                         "/v1/images", "images", argc, argv, &reply, &arr);
  if (r >= 0)
    return r;
  size_t n = json_object_array_length(arr);
  struct jcheck ck = { .what = "api image list", .sanitize = true };
  int wn = (int)strlen("NAME");
  for (size_t i = 0; i < n && !ck.failed; i++) {
    char ctx[48];
    struct json_object *o = ck_element(&ck, arr, "", "images", i, ctx,
                                       sizeof ctx);
    if (o == NULL)
      break;
    cli_widen(&wn, ck_str(&ck, o, ctx, "name", false));
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
    cli_get_u64(o, "size", &size);
    printf("%-*s  %-12.12s  %10s  %s\n", wn, cli_get_str(o, "name", "?"),
           cli_get_str(o, "version", "?"), cli_human_bytes(size, h, sizeof h),
           cli_get_str(o, "origin", "?"));
  }
  if (n == 0)
    printf("(no images)\n");
  return 0;
}


/* ---- command tables ------------------------------------------------------ */

const struct command cluster_commands[] = {
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
  { "enrol", "NAME [--rotate] [--out FILE]",
    "enrol a node: print its enrolment token (shown once)",
    cmd_api_node_enrol, NULL },
  { "revoke", "NAME", "revoke a node's enrolment token",
    cmd_api_node_revoke, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

static const struct command api_image_commands[] = {
  { "register", "NAME --origin nbd[s]://HOST:PORT [--version HEX] [--json]",
    "register an image served by an origin thunderd",
    cmd_api_image_register, NULL },
  { "list", "[--json]", "list the images registered with thunder-api",
    cmd_api_image_list, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};

const struct command api_commands[] = {
  { "node", "COMMAND ...", "nodes as thunder-api sees them", NULL,
    api_node_commands },
  { "image", "COMMAND ...", "images registered with thunder-api", NULL,
    api_image_commands },
  { NULL, NULL, NULL, NULL, NULL },
};

