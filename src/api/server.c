/* thunder — thunder-api's HTTP side (docs/api.md): libmicrohttpd with a
 * pool of worker threads, bearer tokens, body/nesting/count limits, strict
 * field-by-field validation, and the routes.
 *
 * Every request that touches the store takes s->lock: the routes are
 * short (a few SQLite statements), and one lock keeps placement honest —
 * two POST /v1/clusters cannot both take the last free capacity.  The
 * one slow route, POST /v1/images (it reads the manifest from the
 * origin), talks to the origin before it takes the lock.  The converger
 * has its own store connection (WAL: readers and one writer at a time).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "api.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"
#include "netaddr.h"
#include "originman.h"
#include "place.h"
#include "token.h"
#include "tree.h"

#define COMPONENT "api"
#define DRAIN_MAX (1024 * 1024)
#define NODE_ID_MAX 64
#define CLUSTER_NAME_MAX 48
#define KEY_MAX 255
#define URL_MAX 1024
#define ERR_MAX 1024

struct api_server {
  const struct api_config *cfg;
  struct converger *cv;
  struct MHD_Daemon *mhd;
  unsigned port;
  pthread_mutex_t lock;      /* st */
  struct store *st;
  uint8_t token_digest[DIGEST_LEN];
  uint8_t node_token_digest[DIGEST_LEN];
};

/* One request: its body as it arrives. */
struct request {
  char *body;
  size_t len;
  bool too_large;
  size_t drained;
};

/* What a route answers. */
struct reply {
  unsigned status;
  struct json_object *json;  /* body; NULL with text */
  char *text;                /* a non-JSON body (metrics) */
  size_t text_len;
  const char *content_type;
  char location[128];
  const char *allow;
};

/* ---- small helpers ------------------------------------------------------ */

int64_t
api_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
api_time(int64_t ms, char buf[32])
{
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

char *
api_export_uri(const char *base, const char *image)
{
  char *s;
  if (asprintf(&s, "%s/%s", base, image) == -1)
    return NULL;
  return s;
}

static struct json_object *
json_time(int64_t ms)
{
  if (ms <= 0)
    return NULL;
  char b[32];
  api_time(ms, b);
  return json_object_new_string(b);
}

static struct json_object *
json_str_or_null(const char *s)
{
  return s ? json_object_new_string(s) : NULL;
}

static const char *
default_code(unsigned status)
{
  switch (status) {
  case 400: return "bad_request";
  case 401: return "unauthorized";
  case 404: return "not_found";
  case 405: return "method_not_allowed";
  case 409: return "conflict";
  case 413: return "too_large";
  case 415: return "unsupported_media_type";
  case 422: return "unsatisfiable";
  case 502: return "bad_gateway";
  case 503: return "unavailable";
  default: return "internal";
  }
}

static void __attribute__((format(printf, 4, 5)))
fail(struct reply *rep, unsigned status, const char *code, const char *fmt,
     ...)
{
  char msg[ERR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_object_put(rep->json);
  struct json_object *e = json_object_new_object();
  json_object_object_add(e, "code",
                         json_object_new_string(code ? code : default_code(status)));
  json_object_object_add(e, "message", json_object_new_string(msg));
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "error", e);
  rep->status = status;
}

/* A store error as its HTTP status. */
static void
fail_store(struct reply *rep, const struct store_err *err)
{
  unsigned st = err->code == STORE_NOT_FOUND ? 404
              : err->code == STORE_CONFLICT ? 409
              : err->code == STORE_INVALID ? 400 : 500;
  if (st == 500)
    log_error(COMPONENT, "%s", err->msg);
  fail(rep, st, NULL, "%s", err->msg);
}

/* ---- validation --------------------------------------------------------- */

/* Every key of o is one of allowed (NULL-terminated); else 400 naming it. */
static bool
known_keys(struct json_object *o, const char *where,
           const char *const *allowed, struct reply *rep)
{
  json_object_object_foreach(o, key, val) {
    (void)val;
    bool ok = false;
    for (const char *const *a = allowed; *a; a++)
      if (strcmp(key, *a) == 0)
        ok = true;
    if (!ok) {
      fail(rep, 400, NULL, "%s%s'%.64s': unknown field", where,
           where[0] ? "." : "field ", key);
      return false;
    }
  }
  return true;
}

/* Name rule of images, nodes and clusters (manifest_name_valid) with a
 * length limit. */
static bool
name_ok(const char *s, size_t max)
{
  return manifest_name_valid(s) && strlen(s) <= max;
}

/* The string field key of o: *out, or NULL when absent and optional.
 * false (400 naming the field) if missing, not a string, or longer than
 * max bytes. */
static bool
get_string_in(struct json_object *o, const char *at, const char *key,
              bool required, size_t max, const char **out, struct reply *rep)
{
  struct json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || v == NULL) {
    if (required)
      fail(rep, 400, NULL, "field '%s%s': required", at, key);
    return !required;
  }
  if (!json_object_is_type(v, json_type_string)) {
    fail(rep, 400, NULL, "field '%s%s': must be a string", at, key);
    return false;
  }
  size_t len = (size_t)json_object_get_string_len(v);
  const char *s = json_object_get_string(v);
  if (len == 0 || len > max || strlen(s) != len) {
    fail(rep, 400, NULL, "field '%s%s': must be 1 to %zu bytes without NUL", at,
         key, max);
    return false;
  }
  *out = s;
  return true;
}

/* The integer field key of o within [min, max]: *out (untouched when
 * absent and optional; *given says which). */
static bool
get_uint_in(struct json_object *o, const char *at, const char *key,
            bool required, uint64_t min, uint64_t max, uint64_t *out,
            bool *given, struct reply *rep)
{
  struct json_object *v;
  if (given)
    *given = false;
  if (!json_object_object_get_ex(o, key, &v) || v == NULL) {
    if (required)
      fail(rep, 400, NULL, "field '%s%s': required", at, key);
    return !required;
  }
  if (!json_object_is_type(v, json_type_int)) {
    fail(rep, 400, NULL, "field '%s%s': must be an integer", at, key);
    return false;
  }
  errno = 0;
  int64_t x = json_object_get_int64(v);
  if (x < 0 || (uint64_t)x < min || (uint64_t)x > max || errno == ERANGE) {
    fail(rep, 400, NULL, "field '%s%s': must be %" PRIu64 " to %" PRIu64, at,
         key, min, max);
    return false;
  }
  *out = (uint64_t)x;
  if (given)
    *given = true;
  return true;
}

#define get_string(o, key, req, max, out, rep) \
  get_string_in(o, "", key, req, max, out, rep)
#define get_uint(o, key, req, min, max, out, given, rep) \
  get_uint_in(o, "", key, req, min, max, out, given, rep)

/* "nbd://HOST:PORT" with nothing after the port. */
static bool
nbd_base_ok(const char *s)
{
  if (strncmp(s, "nbd://", 6) != 0)
    return false;
  const char *h = s + 6;
  const char *colon = strrchr(h, ':');
  if (colon == NULL || colon == h)
    return false;
  for (const char *p = h; p < colon; p++)
    if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
          ('0' <= *p && *p <= '9') || strchr(".-[]:", *p)))
      return false;
  char *end;
  errno = 0;
  unsigned long port = strtoul(colon + 1, &end, 10);
  return colon[1] >= '0' && colon[1] <= '9' && *end == '\0' && errno == 0 &&
         port >= 1 && port <= 65535;
}

/* "http://HOST:PORT". */
static bool
http_base_ok(const char *s)
{
  char tmp[URL_MAX];
  if (strncmp(s, "http://", 7) != 0 || strlen(s) >= sizeof tmp - 4)
    return false;
  snprintf(tmp, sizeof tmp, "nbd://%s", s + 7);
  return nbd_base_ok(tmp);
}

/* ---- JSON of the rows --------------------------------------------------- */

static struct json_object *
node_json(const struct store_node *n)
{
  struct json_object *o = json_object_new_object(), *lab, *cap, *used;
  json_object_object_add(o, "name", json_object_new_string(n->id));
  json_object_object_add(o, "nbd_uri", json_object_new_string(n->nbd_uri));
  json_object_object_add(o, "control_url",
                         json_object_new_string(n->control_url));
  lab = json_object_new_object();
  if (n->rack && n->rack[0])
    json_object_object_add(lab, "rack", json_object_new_string(n->rack));
  if (n->zone && n->zone[0])
    json_object_object_add(lab, "zone", json_object_new_string(n->zone));
  json_object_object_add(o, "labels", lab);
  cap = json_object_new_object();
  json_object_object_add(cap, "vcpus", json_object_new_int64(n->vcpus));
  json_object_object_add(cap, "memory_mib",
                         json_object_new_int64((int64_t)n->memory_mib));
  json_object_object_add(cap, "disk_gib",
                         json_object_new_int64((int64_t)(n->disk_bytes >> 30)));
  json_object_object_add(o, "capacity", cap);
  used = json_object_new_object();
  json_object_object_add(used, "vcpus",
                         json_object_new_int64((int64_t)n->used_vcpus));
  json_object_object_add(used, "memory_mib",
                         json_object_new_int64((int64_t)n->used_memory_mib));
  json_object_object_add(used, "disk_gib",
      json_object_new_int64((int64_t)((n->used_disk_bytes + (1ULL << 30) - 1) >> 30)));
  json_object_object_add(used, "vms", json_object_new_int64(n->live_vms));
  json_object_object_add(o, "used", used);
  json_object_object_add(o, "state",
                         json_object_new_string(store_node_state_name(n->state)));
  json_object_object_add(o, "registered_at", json_time(n->registered_at));
  json_object_object_add(o, "last_heartbeat_at",
                         json_time(n->last_heartbeat_at));
  return o;
}

static struct json_object *
image_json(const struct store_image *im)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(im->name));
  json_object_object_add(o, "origin", json_object_new_string(im->origin_nbd));
  json_object_object_add(o, "version", json_object_new_string(im->version));
  json_object_object_add(o, "size", json_object_new_int64((int64_t)im->size));
  json_object_object_add(o, "registered_at", json_time(im->registered_at));
  return o;
}

static struct json_object *
vm_json(const struct store_vm *vm)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "id", json_object_new_string(vm->id));
  json_object_object_add(o, "name", json_object_new_string(vm->name));
  json_object_object_add(o, "index", json_object_new_int64(vm->index));
  json_object_object_add(o, "node", json_object_new_string(vm->node_id));
  json_object_object_add(o, "state",
                         json_object_new_string(store_vm_state_name(vm->state)));
  json_object_object_add(o, "reason", json_str_or_null(vm->reason));
  json_object_object_add(o, "created_at", json_time(vm->created_at));
  json_object_object_add(o, "updated_at", json_time(vm->updated_at));
  json_object_object_add(o, "running_at", json_time(vm->running_at));
  return o;
}

static struct json_object *
cluster_json(const struct store_cluster *c, uint64_t origin_bytes)
{
  struct json_object *o = json_object_new_object(), *counts;
  json_object_object_add(o, "id", json_object_new_string(c->id));
  json_object_object_add(o, "name", json_object_new_string(c->name));
  json_object_object_add(o, "image", json_object_new_string(c->image));
  json_object_object_add(o, "image_version",
                         json_object_new_string(c->image_version));
  json_object_object_add(o, "count", json_object_new_int64(c->count));
  json_object_object_add(o, "vcpus", json_object_new_int64(c->vcpus));
  json_object_object_add(o, "memory_mib",
                         json_object_new_int64((int64_t)c->memory_mib));
  json_object_object_add(o, "disk_gib",
                         c->disk_gib ? json_object_new_int64((int64_t)c->disk_gib)
                                     : NULL);
  json_object_object_add(o, "placement",
                         json_object_new_string(store_placement_name(c->placement)));
  json_object_object_add(o, "fanout",
                         c->fanout ? json_object_new_int64(c->fanout) : NULL);
  json_object_object_add(o, "state",
                         json_object_new_string(store_cluster_state_name(c->state)));
  json_object_object_add(o, "error", json_str_or_null(c->error));
  json_object_object_add(o, "created_at", json_time(c->created_at));
  json_object_object_add(o, "updated_at", json_time(c->updated_at));
  json_object_object_add(o, "finished_at", json_time(c->finished_at));
  counts = json_object_new_object();
  for (int s = 0; s < STORE_VM_STATES; s++)
    json_object_object_add(counts, store_vm_state_name(s),
                           json_object_new_int64(c->vms[s]));
  json_object_object_add(o, "counts", counts);
  json_object_object_add(o, "origin_bytes",
                         json_object_new_int64((int64_t)origin_bytes));
  return o;
}

static int
add_vm(const struct store_vm *vm, void *opaque)
{
  json_object_array_add(opaque, vm_json(vm));
  return 0;
}

/* Cluster id with its VMs into rep (200), or an error. */
static void
reply_cluster(struct api_server *s, const char *id, unsigned status,
              struct reply *rep)
{
  struct store_err err;
  CLEANUP_FREE struct store_cluster *c = store_cluster_get(s->st, id, &err);
  if (c == NULL) {
    fail_store(rep, &err);
    return;
  }
  struct json_object *o =
      cluster_json(c, converger_origin_bytes(s->cv, c->id));
  struct json_object *vms = json_object_new_array();
  json_object_object_add(o, "vms", vms);
  if (store_vm_list_cluster(s->st, id, add_vm, vms, &err) != STORE_OK) {
    json_object_put(o);
    fail_store(rep, &err);
    return;
  }
  rep->status = status;
  rep->json = o;
}

/* Ends a list route: {"KEY": arr} (200), or the store's error. */
static void
finish_list(struct reply *rep, const char *key, struct json_object *arr,
            int rc, const struct store_err *err)
{
  if (rc != STORE_OK) {
    json_object_put(arr);
    fail_store(rep, err);
    return;
  }
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, key, arr);
}

/* ---- nodes ---------------------------------------------------------------- */

static void
node_register(struct api_server *s, struct json_object *body,
              struct reply *rep)
{
  static const char *const top[] = { "name", "nbd_uri", "control_url",
                                     "capacity", "labels", NULL };
  static const char *const capk[] = { "vcpus", "memory_mib", "disk_gib", NULL };
  static const char *const labk[] = { "rack", "zone", NULL };
  if (!known_keys(body, "", top, rep))
    return;
  struct store_node n = { 0 };
  if (!get_string(body, "name", true, NODE_ID_MAX, &n.id, rep))
    return;
  if (!name_ok(n.id, NODE_ID_MAX)) {
    fail(rep, 400, NULL, "field 'name': '%s' must be 1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'", n.id);
    return;
  }
  if (!get_string(body, "nbd_uri", true, URL_MAX, &n.nbd_uri, rep))
    return;
  if (!nbd_base_ok(n.nbd_uri)) {
    fail(rep, 400, NULL, "field 'nbd_uri': '%s' is not nbd://HOST:PORT", n.nbd_uri);
    return;
  }
  if (!get_string(body, "control_url", true, URL_MAX, &n.control_url, rep))
    return;
  if (!http_base_ok(n.control_url)) {
    fail(rep, 400, NULL, "field 'control_url': '%s' is not http://HOST:PORT",
         n.control_url);
    return;
  }
  struct json_object *cap, *lab;
  if (!json_object_object_get_ex(body, "capacity", &cap) ||
      !json_object_is_type(cap, json_type_object)) {
    fail(rep, 400, NULL, "field 'capacity': required, an object");
    return;
  }
  if (!known_keys(cap, "capacity", capk, rep))
    return;
  uint64_t vcpus, mem, disk;
  if (!get_uint_in(cap, "capacity.", "vcpus", true, 1, 1u << 20, &vcpus,
                   NULL, rep) ||
      !get_uint_in(cap, "capacity.", "memory_mib", true, 16, 1ULL << 40, &mem,
                   NULL, rep) ||
      !get_uint_in(cap, "capacity.", "disk_gib", true, 0, 1ULL << 30, &disk,
                   NULL, rep))
    return;
  n.vcpus = (uint32_t)vcpus;
  n.memory_mib = mem;
  n.disk_bytes = disk << 30;
  if (json_object_object_get_ex(body, "labels", &lab) && lab) {
    if (!json_object_is_type(lab, json_type_object)) {
      fail(rep, 400, NULL, "field 'labels': must be an object");
      return;
    }
    if (!known_keys(lab, "labels", labk, rep))
      return;
    if (!get_string_in(lab, "labels.", "rack", false, NODE_ID_MAX, &n.rack,
                       rep) ||
        !get_string_in(lab, "labels.", "zone", false, NODE_ID_MAX, &n.zone,
                       rep))
      return;
  }
  struct store_err err;
  bool created;
  pthread_mutex_lock(&s->lock);
  int rc = store_node_register(s->st, &n, &created, &err);
  CLEANUP_FREE struct store_node *got =
      rc == STORE_OK ? store_node_get(s->st, n.id, &err) : NULL;
  pthread_mutex_unlock(&s->lock);
  if (got == NULL) {
    fail_store(rep, &err);
    return;
  }
  log_info(COMPONENT, "node %s %s: %s, %s", n.id,
           created ? "registered" : "registered again", n.nbd_uri,
           n.control_url);
  metrics_heartbeat();
  converger_kick(s->cv);
  rep->status = created ? 201 : 200;
  rep->json = node_json(got);
}

static void
node_heartbeat(struct api_server *s, const char *name, struct reply *rep)
{
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  int rc = store_node_heartbeat(s->st, name, &err);
  pthread_mutex_unlock(&s->lock);
  if (rc != STORE_OK) {
    fail_store(rep, &err);
    return;
  }
  metrics_heartbeat();
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "name", json_object_new_string(name));
  json_object_object_add(rep->json, "state", json_object_new_string("ready"));
}

static int
add_node(const struct store_node *n, void *opaque)
{
  json_object_array_add(opaque, node_json(n));
  return 0;
}

static void
node_list(struct api_server *s, struct reply *rep)
{
  struct store_err err;
  struct json_object *arr = json_object_new_array();
  pthread_mutex_lock(&s->lock);
  int rc = store_node_list(s->st, 0, add_node, arr, &err);
  pthread_mutex_unlock(&s->lock);
  finish_list(rep, "nodes", arr, rc, &err);
}

static void
node_get(struct api_server *s, const char *name, struct reply *rep)
{
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_node *n = store_node_get(s->st, name, &err);
  pthread_mutex_unlock(&s->lock);
  if (n == NULL) {
    fail_store(rep, &err);
    return;
  }
  rep->status = 200;
  rep->json = node_json(n);
}

/* ---- images --------------------------------------------------------------- */

static void
image_register(struct api_server *s, struct json_object *body,
               struct reply *rep)
{
  static const char *const keys[] = { "name", "origin", "version", NULL };
  if (!known_keys(body, "", keys, rep))
    return;
  const char *name, *origin, *version;
  if (!get_string(body, "name", true, MANIFEST_NAME_MAX, &name, rep) ||
      !get_string(body, "origin", true, URL_MAX, &origin, rep) ||
      !get_string(body, "version", false, DIGEST_HEX_LEN, &version, rep))
    return;
  if (!manifest_name_valid(name)) {
    fail(rep, 400, NULL, "field 'name': '%s' must be 1-255 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'", name);
    return;
  }
  if (!nbd_base_ok(origin)) {
    fail(rep, 400, NULL, "field 'origin': '%s' is not nbd://HOST:PORT", origin);
    return;
  }
  if (version) {
    bool hex = strlen(version) == DIGEST_HEX_LEN;
    for (const char *p = version; hex && *p; p++)
      hex = ('0' <= *p && *p <= '9') || ('a' <= *p && *p <= 'f');
    if (!hex) {
      fail(rep, 400, NULL, "field 'version': must be 64 lowercase hex digits");
      return;
    }
  }
  /* The origin first, without the lock: it may take a while. */
  char got[DIGEST_HEX_LEN + 1], err[ERR_MAX];
  uint64_t size;
  if (origin_manifest(origin, name, got, &size, err, sizeof err) == -1) {
    if (errno == ENOENT)
      fail(rep, 422, NULL, "%s", err);
    else
      fail(rep, 502, NULL, "%s", err);
    return;
  }
  if (version && strcmp(version, got) != 0) {
    fail(rep, 409, NULL, "the origin %s serves image '%s' in version %s, not %s",
         origin, name, got, version);
    return;
  }
  struct store_image im = { .name = name, .origin_nbd = origin,
                            .version = got, .size = size };
  struct store_err serr;
  bool created;
  pthread_mutex_lock(&s->lock);
  int rc = store_image_put(s->st, &im, &created, &serr);
  CLEANUP_FREE struct store_image *row =
      rc == STORE_OK ? store_image_get(s->st, name, &serr) : NULL;
  pthread_mutex_unlock(&s->lock);
  if (row == NULL) {
    fail_store(rep, &serr);
    return;
  }
  log_info(COMPONENT, "image %s %s: %s, version %.12s…, %" PRIu64 " bytes",
           name, created ? "registered" : "updated", origin, got, size);
  rep->status = created ? 201 : 200;
  rep->json = image_json(row);
}

static int
add_image(const struct store_image *im, void *opaque)
{
  json_object_array_add(opaque, image_json(im));
  return 0;
}

static void
image_list(struct api_server *s, struct reply *rep)
{
  struct store_err err;
  struct json_object *arr = json_object_new_array();
  pthread_mutex_lock(&s->lock);
  int rc = store_image_list(s->st, add_image, arr, &err);
  pthread_mutex_unlock(&s->lock);
  finish_list(rep, "images", arr, rc, &err);
}

static void
image_get(struct api_server *s, const char *name, struct reply *rep)
{
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_image *im = store_image_get(s->st, name, &err);
  pthread_mutex_unlock(&s->lock);
  if (im == NULL) {
    fail_store(rep, &err);
    return;
  }
  rep->status = 200;
  rep->json = image_json(im);
}

/* ---- clusters --------------------------------------------------------------- */

/* A validated POST /v1/clusters. */
struct cluster_req {
  const char *name, *image;
  uint64_t count, vcpus, memory_mib, disk_gib, fanout, max_per_node;
  enum store_placement placement;
  const char *zone, *rack;
  const char *nodes[1024];
  size_t n_nodes;
};

static bool
check_cluster(struct api_server *s, struct json_object *body,
              struct cluster_req *q, struct reply *rep)
{
  static const char *const keys[] = { "name", "image", "count", "vcpus",
                                      "memory_mib", "disk_gib", "placement",
                                      "fanout", NULL };
  static const char *const pkeys[] = { "strategy", "nodes", "zone", "rack",
                                       "max_per_node", NULL };
  memset(q, 0, sizeof *q);
  if (!known_keys(body, "", keys, rep))
    return false;
  if (!get_string(body, "name", true, CLUSTER_NAME_MAX, &q->name, rep))
    return false;
  if (!name_ok(q->name, CLUSTER_NAME_MAX)) {
    fail(rep, 400, NULL, "field 'name': '%s' must be 1-%d characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
         q->name, CLUSTER_NAME_MAX);
    return false;
  }
  if (!get_string(body, "image", true, MANIFEST_NAME_MAX, &q->image, rep))
    return false;
  if (!manifest_name_valid(q->image)) {
    fail(rep, 400, NULL, "field 'image': '%s' is not a valid image name", q->image);
    return false;
  }
  if (!get_uint(body, "count", true, 1, s->cfg->max_count, &q->count, NULL, rep) ||
      !get_uint(body, "vcpus", true, 1, 256, &q->vcpus, NULL, rep) ||
      !get_uint(body, "memory_mib", true, 16, 4194304, &q->memory_mib, NULL, rep) ||
      !get_uint(body, "disk_gib", false, 1, 65536, &q->disk_gib, NULL, rep) ||
      !get_uint(body, "fanout", false, 1, TREE_FANOUT_MAX, &q->fanout, NULL, rep))
    return false;
  q->placement = STORE_PLACEMENT_SPREAD;
  struct json_object *p;
  if (json_object_object_get_ex(body, "placement", &p) && p) {
    if (!json_object_is_type(p, json_type_object)) {
      fail(rep, 400, NULL, "field 'placement': must be an object");
      return false;
    }
    if (!known_keys(p, "placement", pkeys, rep))
      return false;
    const char *strategy;
    if (!get_string_in(p, "placement.", "strategy", false, 16, &strategy, rep))
      return false;
    if (strategy && store_placement_from_name(strategy, &q->placement) == -1) {
      fail(rep, 400, NULL, "field 'placement.strategy': '%s' is not spread or pack",
           strategy);
      return false;
    }
    if (!get_string_in(p, "placement.", "zone", false, NODE_ID_MAX, &q->zone,
                       rep) ||
        !get_string_in(p, "placement.", "rack", false, NODE_ID_MAX, &q->rack,
                       rep) ||
        !get_uint_in(p, "placement.", "max_per_node", false, 1,
                     s->cfg->max_count, &q->max_per_node, NULL, rep))
      return false;
    struct json_object *arr;
    if (json_object_object_get_ex(p, "nodes", &arr) && arr) {
      if (!json_object_is_type(arr, json_type_array)) {
        fail(rep, 400, NULL, "field 'placement.nodes': must be an array");
        return false;
      }
      size_t n = json_object_array_length(arr);
      if (n == 0 || n > sizeof q->nodes / sizeof q->nodes[0] ||
          n > s->cfg->max_count) {
        fail(rep, 400, NULL, "field 'placement.nodes': 1 to %zu node names",
             sizeof q->nodes / sizeof q->nodes[0]);
        return false;
      }
      for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(arr, i);
        const char *id = json_object_get_string(e);
        if (!json_object_is_type(e, json_type_string) || !name_ok(id, NODE_ID_MAX)) {
          fail(rep, 400, NULL, "field 'placement.nodes[%zu]': not a node name", i);
          return false;
        }
        q->nodes[q->n_nodes++] = id;
      }
    }
  }
  return true;
}

struct node_vec {
  struct store_node **v;
  size_t n, cap;
};

static int
take_node(const struct store_node *n, void *opaque)
{
  struct node_vec *nv = opaque;
  if (nv->n == nv->cap) {
    size_t cap = nv->cap ? nv->cap * 2 : 64;
    struct store_node **v = realloc(nv->v, cap * sizeof *v);
    if (v == NULL)
      return -1;
    nv->v = v;
    nv->cap = cap;
  }
  /* The row's strings live until the callback returns: copy them. */
  struct store_node *c = malloc(sizeof *c);
  if (c == NULL)
    return -1;
  *c = *n;
  c->id = strdup(n->id);
  c->nbd_uri = strdup(n->nbd_uri);
  c->control_url = strdup(n->control_url);
  c->rack = n->rack ? strdup(n->rack) : NULL;
  c->zone = n->zone ? strdup(n->zone) : NULL;
  nv->v[nv->n++] = c;
  return 0;
}

static void
node_vec_free(struct node_vec *nv)
{
  for (size_t i = 0; i < nv->n; i++) {
    free((char *)nv->v[i]->id);
    free((char *)nv->v[i]->nbd_uri);
    free((char *)nv->v[i]->control_url);
    free((char *)nv->v[i]->rack);
    free((char *)nv->v[i]->zone);
    free(nv->v[i]);
  }
  free(nv->v);
}

/* Nodes that already hold version in their cache: members of the trees of
 * other live clusters of that version. */
struct cached_scan {
  struct api_server *s;
  const char *version;
  char **ids;
  size_t n, cap;
};

static int
note_cached_row(const struct store_tree_row *row, void *opaque)
{
  struct cached_scan *cs = opaque;
  if (cs->n == cs->cap) {
    size_t cap = cs->cap ? cs->cap * 2 : 32;
    char **v = realloc(cs->ids, cap * sizeof *v);
    if (v == NULL)
      return -1;
    cs->ids = v;
    cs->cap = cap;
  }
  cs->ids[cs->n] = strdup(row->node_id);
  if (cs->ids[cs->n] == NULL)
    return -1;
  cs->n++;
  return 0;
}

struct id_list {
  char **ids;
  size_t n, cap;
};

static int
note_cluster(const struct store_cluster *c, void *opaque)
{
  struct cached_scan *cs = opaque;
  if (strcmp(c->image_version, cs->version) != 0 ||
      c->vms[STORE_VM_RUNNING] == 0)
    return 0;
  struct store_err err;
  return store_tree_list(cs->s->st, c->id, note_cached_row, cs, &err) ==
                 STORE_OK ? 0 : -1;
}

static bool
is_cached(const struct cached_scan *cs, const char *id)
{
  for (size_t i = 0; i < cs->n; i++)
    if (strcmp(cs->ids[i], id) == 0)
      return true;
  return false;
}

/* The tree over the distinct nodes of the placement: rows[0..*n_rows). */
static int
plan_tree(struct api_server *s, const struct store_image *im,
          const struct cluster_req *q, struct store_node **used, size_t n_used,
          const struct cached_scan *cs, struct store_tree_row **rows_out,
          char *err, size_t errlen)
{
  struct tree_node *tn = calloc(n_used, sizeof *tn);
  struct store_tree_row *rows = calloc(n_used, sizeof *rows);
  if (tn == NULL || rows == NULL) {
    free(tn);
    free(rows);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n_used; i++) {
    tn[i].id = used[i]->id;
    tn[i].rack = used[i]->rack;
    tn[i].zone = used[i]->zone;
    tn[i].cached = is_cached(cs, used[i]->id) ? 1.0 : 0.0;
  }
  struct tree_params p;
  tree_params_init(&p);
  p.node_bw = s->cfg->link_bps;
  p.origin_bw = s->cfg->origin_bps;
  p.origin_cap = s->cfg->origin_cap;
  p.origin_copies = s->cfg->origin_copies;
  p.working_set = s->cfg->working_set < im->size ? s->cfg->working_set
                                                 : (im->size ? im->size : 1);
  p.fanout = (unsigned)q->fanout;
  struct tree_plan *plan = tree_plan_build(tn, n_used, &p, err, errlen);
  free(tn);
  if (plan == NULL) {
    free(rows);
    return -1;
  }
  char *origin_uri = api_export_uri(im->origin_nbd, im->name);
  for (size_t i = 0; i < n_used; i++) {
    int ups[TREE_MAX_UPSTREAMS];
    size_t k = tree_plan_upstreams(plan, i, ups);
    const char **list = calloc(k, sizeof *list);
    for (size_t j = 0; list && j < k; j++)
      list[j] = ups[j] == TREE_ORIGIN ? strdup(origin_uri)
                                      : api_export_uri(used[ups[j]]->nbd_uri,
                                                       im->name);
    int parent = tree_plan_parent(plan, i);
    rows[i].node_id = used[i]->id;
    rows[i].parent = parent >= 0 ? used[parent]->id : NULL;
    rows[i].depth = tree_plan_depth(plan, i);
    rows[i].upstreams = list;
    rows[i].n_upstreams = k;
  }
  free(origin_uri);
  tree_plan_free(plan);
  *rows_out = rows;
  return 0;
}

static void
rows_free(struct store_tree_row *rows, size_t n)
{
  for (size_t i = 0; rows && i < n; i++) {
    for (size_t j = 0; j < rows[i].n_upstreams; j++)
      free((char *)rows[i].upstreams[j]);
    free((void *)rows[i].upstreams);
  }
  free(rows);
}

static void
cluster_create(struct api_server *s, struct json_object *body,
               const char *key, struct reply *rep)
{
  struct cluster_req q;
  if (!check_cluster(s, body, &q, rep))
    return;
  if (key) {
    size_t kl = strlen(key);
    bool ok = kl >= 1 && kl <= KEY_MAX;
    for (const char *p = key; ok && *p; p++)
      ok = *p > ' ' && *p < 127;
    if (!ok) {
      fail(rep, 400, NULL, "header 'Idempotency-Key': 1 to %d printable ASCII characters", KEY_MAX);
      return;
    }
  }
  /* The request's digest: the body as parsed, serialised. */
  const char *canon = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
  uint8_t d[DIGEST_LEN];
  char hash[DIGEST_HEX_LEN + 1];
  digest_sha256(canon, strlen(canon), d);
  digest_to_hex(d, hash);

  struct store_err err;
  char id[STORE_ID_LEN + 1];
  struct node_vec nv = { 0 };
  struct store_node **used = NULL;
  size_t *place = NULL, n_used = 0;
  struct store_tree_row *rows = NULL;
  const char **vm_nodes = NULL;
  struct cached_scan cs = { .s = s };
  struct store_image *im = NULL;
  char msg[ERR_MAX];

  pthread_mutex_lock(&s->lock);
  if (key) {
    bool same;
    int rc = store_cluster_find_key(s->st, key, hash, id, &same, &err);
    if (rc == STORE_OK) {
      if (!same)
        fail(rep, 409, NULL, "Idempotency-Key '%s' was used for another request (cluster %s)", key, id);
      else
        reply_cluster(s, id, 200, rep);
      goto out;
    }
    if (rc != STORE_NOT_FOUND) {
      fail_store(rep, &err);
      goto out;
    }
  }
  im = store_image_get(s->st, q.image, &err);
  if (im == NULL) {
    if (err.code == STORE_NOT_FOUND)
      fail(rep, 422, NULL, "image '%s' is not registered: POST /v1/images first", q.image);
    else
      fail_store(rep, &err);
    goto out;
  }
  if (store_node_list(s->st, 0, take_node, &nv, &err) != STORE_OK) {
    fail_store(rep, &err);
    goto out;
  }
  struct sched_node *sn = calloc(nv.n ? nv.n : 1, sizeof *sn);
  place = calloc(q.count, sizeof *place);
  if (sn == NULL || place == NULL) {
    free(sn);
    fail(rep, 500, NULL, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < nv.n; i++) {
    const struct store_node *n = nv.v[i];
    sn[i] = (struct sched_node){
      .id = n->id, .rack = n->rack, .zone = n->zone,
      .ready = n->state == STORE_NODE_READY,
      .vcpus = n->vcpus, .memory_mib = n->memory_mib,
      .disk_bytes = n->disk_bytes, .used_vcpus = n->used_vcpus,
      .used_memory_mib = n->used_memory_mib,
      .used_disk_bytes = n->used_disk_bytes,
    };
  }
  struct sched_request sr = {
    .count = (uint32_t)q.count, .vcpus = (uint32_t)q.vcpus,
    .memory_mib = q.memory_mib,
    .disk_bytes = q.disk_gib ? q.disk_gib << 30 : im->size,
    .strategy = q.placement == STORE_PLACEMENT_PACK ? SCHED_PACK : SCHED_SPREAD,
    .nodes = q.n_nodes ? q.nodes : NULL, .n_nodes = q.n_nodes,
    .zone = q.zone, .rack = q.rack, .max_per_node = (uint32_t)q.max_per_node,
  };
  int pr = sched_place(sn, nv.n, &sr, place, msg, sizeof msg);
  free(sn);
  if (pr == SCHED_SHORT) {
    fail(rep, 409, "insufficient_capacity", "%s", msg);
    goto out;
  }
  if (pr == SCHED_NEVER) {
    fail(rep, 422, NULL, "%s", msg);
    goto out;
  }
  if (pr != 0) {
    fail(rep, 400, NULL, "%s", msg);
    goto out;
  }
  /* The distinct nodes, in the order of first use. */
  used = calloc(nv.n, sizeof *used);
  vm_nodes = calloc(q.count, sizeof *vm_nodes);
  bool *seen = calloc(nv.n, sizeof *seen);
  if (used == NULL || vm_nodes == NULL || seen == NULL) {
    free(seen);
    fail(rep, 500, NULL, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < q.count; i++) {
    vm_nodes[i] = nv.v[place[i]]->id;
    if (!seen[place[i]]) {
      seen[place[i]] = true;
      used[n_used++] = nv.v[place[i]];
    }
  }
  free(seen);
  cs.version = im->version;
  if (store_cluster_list(s->st, STORE_MASK(STORE_CLUSTER_RUNNING) |
                                    STORE_MASK(STORE_CLUSTER_PROVISIONING),
                         note_cluster, &cs, &err) != STORE_OK) {
    fail_store(rep, &err);
    goto out;
  }
  if (plan_tree(s, im, &q, used, n_used, &cs, &rows, msg, sizeof msg) == -1) {
    fail(rep, 500, NULL, "planning the relay tree: %s", msg);
    goto out;
  }
  struct store_cluster c = {
    .name = q.name, .image = q.image, .image_version = im->version,
    .count = (uint32_t)q.count, .vcpus = (uint32_t)q.vcpus,
    .memory_mib = q.memory_mib, .disk_gib = q.disk_gib,
    .placement = q.placement, .fanout = (uint32_t)q.fanout,
    .idempotency_key = key, .request_hash = hash,
  };
  bool replayed = false;
  if (store_cluster_create(s->st, &c, vm_nodes, rows, n_used, id, &replayed,
                           &err) != STORE_OK) {
    if (err.code == STORE_CONFLICT)
      fail(rep, 409, NULL, "%s", err.msg);
    else
      fail_store(rep, &err);
    goto out;
  }
  log_info(COMPONENT, "cluster %s (%s): %u VMs of %s on %zu nodes", id,
           q.name, (unsigned)q.count, q.image, n_used);
  reply_cluster(s, id, replayed ? 200 : 202, rep);
  snprintf(rep->location, sizeof rep->location, "/v1/clusters/%s", id);
  converger_kick(s->cv);
out:
  pthread_mutex_unlock(&s->lock);
  for (size_t i = 0; i < cs.n; i++)
    free(cs.ids[i]);
  free(cs.ids);
  rows_free(rows, n_used);
  free(im);
  free(vm_nodes);
  free(used);
  free(place);
  node_vec_free(&nv);
}

static bool
cluster_id_ok(const char *id)
{
  if (strlen(id) != STORE_ID_LEN)
    return false;
  for (const char *p = id; *p; p++)
    if (!(('0' <= *p && *p <= '9') || ('a' <= *p && *p <= 'f')))
      return false;
  return true;
}

static int
add_cluster(const struct store_cluster *c, void *opaque)
{
  void **a = opaque;
  struct api_server *s = a[0];
  json_object_array_add(a[1], cluster_json(c, converger_origin_bytes(s->cv, c->id)));
  return 0;
}

static void
cluster_list(struct api_server *s, const char *state, struct reply *rep)
{
  unsigned mask = 0;
  if (state) {
    enum store_cluster_state cs;
    if (store_cluster_state_from_name(state, &cs) == -1) {
      fail(rep, 400, NULL, "query 'state': '%.64s' is not a cluster state", state);
      return;
    }
    mask = STORE_MASK(cs);
  }
  struct store_err err;
  struct json_object *arr = json_object_new_array();
  void *a[2] = { s, arr };
  pthread_mutex_lock(&s->lock);
  int rc = store_cluster_list(s->st, mask, add_cluster, a, &err);
  pthread_mutex_unlock(&s->lock);
  finish_list(rep, "clusters", arr, rc, &err);
}

static void
cluster_get(struct api_server *s, const char *id, struct reply *rep)
{
  pthread_mutex_lock(&s->lock);
  reply_cluster(s, id, 200, rep);
  pthread_mutex_unlock(&s->lock);
}

static void
cluster_delete(struct api_server *s, const char *id, struct reply *rep)
{
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_cluster *c = store_cluster_get(s->st, id, &err);
  if (c == NULL) {
    fail_store(rep, &err);
  } else if (c->state == STORE_CLUSTER_DELETED) {
    reply_cluster(s, id, 200, rep);
  } else if (c->state == STORE_CLUSTER_DELETING) {
    reply_cluster(s, id, 202, rep);
  } else if (store_cluster_set_state(s->st, id, 0, STORE_CLUSTER_DELETING,
                                     NULL, &err) != STORE_OK) {
    fail_store(rep, &err);
  } else {
    log_info(COMPONENT, "cluster %s (%s): deleting", id, c->name);
    reply_cluster(s, id, 202, rep);
    converger_kick(s->cv);
  }
  pthread_mutex_unlock(&s->lock);
}

static int
add_row(const struct store_tree_row *row, void *opaque)
{
  void **a = opaque;
  struct json_object *arr = a[0];
  unsigned *depth = a[1], *origin_children = a[2], *fanout = a[3];
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "node", json_object_new_string(row->node_id));
  json_object_object_add(o, "parent", json_str_or_null(row->parent));
  json_object_object_add(o, "depth", json_object_new_int64(row->depth));
  struct json_object *ups = json_tokener_parse(row->upstreams_json);
  json_object_object_add(o, "upstreams", ups ? ups : json_object_new_array());
  json_object_array_add(arr, o);
  if (row->depth > *depth)
    *depth = row->depth;
  if (row->parent == NULL)
    (*origin_children)++;
  (void)fanout;
  return 0;
}

static void
cluster_tree(struct api_server *s, const char *id, struct reply *rep)
{
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_cluster *c = store_cluster_get(s->st, id, &err);
  CLEANUP_FREE struct store_image *im =
      c ? store_image_get(s->st, c->image, &err) : NULL;
  struct json_object *arr = json_object_new_array();
  unsigned depth = 0, origin_children = 0, fanout = 0;
  void *a[4] = { arr, &depth, &origin_children, &fanout };
  int rc = c ? store_tree_list(s->st, id, add_row, a, &err) : STORE_ERROR;
  pthread_mutex_unlock(&s->lock);
  if (c == NULL || rc != STORE_OK) {
    json_object_put(arr);
    fail_store(rep, &err);
    return;
  }
  /* The fan-out: the most children any node has (the origin's are
   * origin_children). */
  size_t n = json_object_array_length(arr);
  for (size_t i = 0; i < n; i++) {
    const char *nid = json_object_get_string(json_object_object_get(
        json_object_array_get_idx(arr, i), "node"));
    unsigned kids = 0;
    for (size_t j = 0; j < n; j++) {
      const char *p = json_object_get_string(json_object_object_get(
          json_object_array_get_idx(arr, j), "parent"));
      if (p && strcmp(p, nid) == 0)
        kids++;
    }
    if (kids > fanout)
      fanout = kids;
  }
  if (fanout == 0)
    fanout = 1; /* nobody relays: every node is a chain of one */
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "cluster", json_object_new_string(c->id));
  json_object_object_add(rep->json, "image", json_object_new_string(c->image));
  json_object_object_add(rep->json, "origin",
                         im ? json_object_new_string(im->origin_nbd) : NULL);
  json_object_object_add(rep->json, "fanout", json_object_new_int64(fanout));
  json_object_object_add(rep->json, "depth", json_object_new_int64(depth));
  json_object_object_add(rep->json, "origin_children",
                         json_object_new_int64(origin_children));
  json_object_object_add(rep->json, "nodes", arr);
}

/* ---- service routes -------------------------------------------------------- */

/* Stops at the first image: /healthz only asks whether the store reads. */
static int
first_image(const struct store_image *im, void *opaque)
{
  return 1;
}

static void
healthz(struct api_server *s, struct reply *rep)
{
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  int rc = store_image_list(s->st, first_image, NULL, &err);
  pthread_mutex_unlock(&s->lock);
  if (rc != STORE_OK) {
    fail(rep, 503, NULL, "the database cannot be read: %s", err.msg);
    return;
  }
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "status", json_object_new_string("ok"));
  json_object_object_add(rep->json, "db", json_object_new_string("ok"));
}

static void
metrics(struct api_server *s, struct reply *rep)
{
  pthread_mutex_lock(&s->lock);
  int rc = metrics_render(s->st, &rep->text, &rep->text_len);
  pthread_mutex_unlock(&s->lock);
  if (rc == -1) {
    fail(rep, 500, NULL, "cannot render the metrics");
    return;
  }
  rep->status = 200;
  rep->content_type = "text/plain; version=0.0.4";
}

/* ---- routing --------------------------------------------------------------- */

enum auth { AUTH_NONE, AUTH_OPERATOR, AUTH_NODE };

/* Which token the request carries. */
static enum auth
auth_of(const struct api_server *s, struct MHD_Connection *conn)
{
  const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_AUTHORIZATION);
  if (token_bearer_ok(h, s->token_digest))
    return AUTH_OPERATOR;
  if (token_bearer_ok(h, s->node_token_digest))
    return AUTH_NODE;
  return AUTH_NONE;
}

static bool
method_is(const char *m, const char *want)
{
  return strcmp(m, want) == 0;
}

/* Splits "/v1/RES[/ID[/SUB]]" (no empty parts, no more). */
static int
split_path(const char *url, char *res, char *id, char *sub, size_t len)
{
  res[0] = id[0] = sub[0] = '\0';
  if (strncmp(url, "/v1/", 4) != 0)
    return -1;
  const char *p = url + 4;
  char *parts[3] = { res, id, sub };
  for (int i = 0; i < 3 && *p; i++) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= len)
      return -1;
    memcpy(parts[i], p, n);
    parts[i][n] = '\0';
    p += n;
    if (*p == '/') {
      p++;
      if (*p == '\0')
        return -1;
    }
  }
  return *p ? -1 : 0;
}

static void
not_allowed(struct reply *rep, const char *allow)
{
  rep->allow = allow;
  fail(rep, 405, NULL, "method not allowed; allowed: %s", allow);
}

/* Parses the body as a JSON object with the limits.  NULL with rep set. */
static struct json_object *
parse_body(struct api_server *s, struct MHD_Connection *conn,
           const struct request *r, bool optional, struct reply *rep)
{
  if (r->len == 0) {
    if (optional)
      return json_object_new_object();
    fail(rep, 400, NULL, "a JSON body is required");
    return NULL;
  }
  const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONTENT_TYPE);
  if (ct && strncasecmp(ct, "application/json", 16) != 0) {
    fail(rep, 415, NULL, "Content-Type '%.64s': expected application/json", ct);
    return NULL;
  }
  if (memchr(r->body, '\0', r->len)) {
    fail(rep, 400, NULL, "the body contains a NUL byte");
    return NULL;
  }
  struct json_tokener *tok = json_tokener_new_ex((int)s->cfg->max_depth);
  if (tok == NULL) {
    fail(rep, 500, NULL, "out of memory");
    return NULL;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  struct json_object *o = json_tokener_parse_ex(tok, r->body, (int)r->len);
  enum json_tokener_error je = json_tokener_get_error(tok);
  size_t used = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (je != json_tokener_success || o == NULL) {
    json_object_put(o);
    if (je == json_tokener_error_depth)
      fail(rep, 400, NULL, "the body nests deeper than %u levels", s->cfg->max_depth);
    else
      fail(rep, 400, NULL, "the body is not valid JSON: %s",
           je == json_tokener_continue ? "it ends too early"
                                       : json_tokener_error_desc(je));
    return NULL;
  }
  for (size_t i = used; i < r->len; i++)
    if (!strchr(" \t\r\n", r->body[i])) {
      json_object_put(o);
      fail(rep, 400, NULL, "the body has data after its JSON value");
      return NULL;
    }
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    fail(rep, 400, NULL, "the body must be a JSON object");
    return NULL;
  }
  return o;
}

static void
route(struct api_server *s, struct MHD_Connection *conn, const char *url,
      const char *method, const struct request *r, struct reply *rep)
{
  bool get = method_is(method, "GET") || method_is(method, "HEAD");
  if (strcmp(url, "/healthz") == 0) {
    if (!get)
      not_allowed(rep, "GET, HEAD");
    else
      healthz(s, rep);
    return;
  }
  if (strcmp(url, "/metrics") == 0) {
    if (!get)
      not_allowed(rep, "GET, HEAD");
    else
      metrics(s, rep);
    return;
  }
  char res[64], id[300], sub[64];
  if (split_path(url, res, id, sub, sizeof res) == -1 &&
      split_path(url, res, id, sub, 64) == -1) {
    fail(rep, 404, NULL, "no such route: %.200s", url);
    return;
  }
  if (r->too_large) {
    fail(rep, 413, NULL, "the body is larger than %zu bytes", s->cfg->max_body);
    return;
  }
  enum auth a = auth_of(s, conn);
  bool node_route = strcmp(res, "nodes") == 0 && method_is(method, "POST");
  if (a == AUTH_NONE || (a == AUTH_NODE && !node_route)) {
    fail(rep, 401, NULL, a == AUTH_NONE
             ? "a valid 'Authorization: Bearer TOKEN' header is required"
             : "the node token may only register nodes and send heartbeats");
    return;
  }

  CLEANUP_JSON_PUT struct json_object *body = NULL;
  if (strcmp(res, "nodes") == 0) {
    if (id[0] == '\0') {
      if (get)
        node_list(s, rep);
      else if (method_is(method, "POST")) {
        if ((body = parse_body(s, conn, r, false, rep)))
          node_register(s, body, rep);
      } else
        not_allowed(rep, "GET, HEAD, POST");
    } else if (!name_ok(id, NODE_ID_MAX)) {
      fail(rep, 404, NULL, "no such node: '%.64s' is not a node name", id);
    } else if (sub[0] == '\0') {
      if (get)
        node_get(s, id, rep);
      else
        not_allowed(rep, "GET, HEAD");
    } else if (strcmp(sub, "heartbeat") == 0) {
      if (method_is(method, "POST")) {
        if ((body = parse_body(s, conn, r, true, rep)))
          node_heartbeat(s, id, rep);
      } else
        not_allowed(rep, "POST");
    } else {
      fail(rep, 404, NULL, "no such route: %.200s", url);
    }
    return;
  }
  if (strcmp(res, "images") == 0 && sub[0] == '\0') {
    if (id[0] == '\0') {
      if (get)
        image_list(s, rep);
      else if (method_is(method, "POST")) {
        if ((body = parse_body(s, conn, r, false, rep)))
          image_register(s, body, rep);
      } else
        not_allowed(rep, "GET, HEAD, POST");
    } else if (!manifest_name_valid(id)) {
      fail(rep, 404, NULL, "no such image: '%.64s' is not an image name", id);
    } else if (get) {
      image_get(s, id, rep);
    } else {
      not_allowed(rep, "GET, HEAD");
    }
    return;
  }
  if (strcmp(res, "clusters") == 0) {
    if (id[0] == '\0') {
      if (get)
        cluster_list(s, MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
                                                    "state"), rep);
      else if (method_is(method, "POST")) {
        if ((body = parse_body(s, conn, r, false, rep)))
          cluster_create(s, body,
                         MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     "Idempotency-Key"),
                         rep);
      } else
        not_allowed(rep, "GET, HEAD, POST");
    } else if (!cluster_id_ok(id)) {
      fail(rep, 404, NULL, "no such cluster: '%.64s' is not a cluster id", id);
    } else if (sub[0] == '\0') {
      if (get)
        cluster_get(s, id, rep);
      else if (method_is(method, "DELETE"))
        cluster_delete(s, id, rep);
      else
        not_allowed(rep, "GET, HEAD, DELETE");
    } else if (strcmp(sub, "tree") == 0) {
      if (get)
        cluster_tree(s, id, rep);
      else
        not_allowed(rep, "GET, HEAD");
    } else {
      fail(rep, 404, NULL, "no such route: %.200s", url);
    }
    return;
  }
  fail(rep, 404, NULL, "no such route: %.200s", url);
}

static enum MHD_Result
send_reply(struct MHD_Connection *conn, const char *method, struct reply *rep)
{
  struct MHD_Response *resp;
  if (rep->text) {
    resp = MHD_create_response_from_buffer(rep->text_len, rep->text,
                                           MHD_RESPMEM_MUST_FREE);
    rep->text = NULL;
  } else {
    const char *s = rep->json ? json_object_to_json_string_ext(
                                    rep->json, JSON_C_TO_STRING_PLAIN)
                              : "{}";
    size_t n = strlen(s);
    char *copy = malloc(n + 1);
    if (copy) {
      memcpy(copy, s, n);
      copy[n] = '\n';
    }
    resp = copy ? MHD_create_response_from_buffer(n + 1, copy,
                                                  MHD_RESPMEM_MUST_FREE)
                : NULL;
    if (resp == NULL)
      free(copy);
  }
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                          rep->content_type ? rep->content_type
                                            : "application/json");
  if (rep->location[0])
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, rep->location);
  if (rep->allow)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep->allow);
  if (rep->status == 401)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                            "Bearer realm=\"thunder-api\"");
  enum MHD_Result ret = MHD_queue_response(conn, rep->status, resp);
  MHD_destroy_response(resp);
  metrics_request(method, rep->status);
  return ret;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url,
       const char *method, const char *version, const char *upload_data,
       size_t *upload_size, void **req_cls)
{
  struct api_server *s = cls;
  struct request *r = *req_cls;
  if (r == NULL) {
    r = calloc(1, sizeof *r);
    if (r == NULL)
      return MHD_NO;
    *req_cls = r;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->cfg->max_body)
      r->too_large = true;
    return MHD_YES;
  }
  if (*upload_size > 0) {
    size_t n = *upload_size;
    *upload_size = 0;
    if (r->too_large || r->len + n > s->cfg->max_body) {
      r->too_large = true;
      free(r->body);
      r->body = NULL;
      r->len = 0;
      r->drained += n;
      return r->drained > DRAIN_MAX ? MHD_NO : MHD_YES;
    }
    char *nb = realloc(r->body, r->len + n + 1);
    if (nb == NULL)
      return MHD_NO;
    r->body = nb;
    memcpy(r->body + r->len, upload_data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return MHD_YES;
  }
  struct reply rep = { 0 };
  route(s, conn, url, method, r, &rep);
  if (rep.status == 0)
    fail(&rep, 500, NULL, "no reply");
  enum MHD_Result ret = send_reply(conn, method, &rep);
  json_object_put(rep.json);
  free(rep.text);
  (void)version;
  return ret;
}

static void
completed(void *cls, struct MHD_Connection *conn, void **req_cls,
          enum MHD_RequestTerminationCode toe)
{
  struct request *r = *req_cls;
  if (r) {
    free(r->body);
    free(r);
    *req_cls = NULL;
  }
}

/* Keeps the URL as sent: a %2F or %00 stays in the name, which is then
 * not a valid name (404), and cannot cut or split a path part. */
static size_t
no_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
  return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n > 0 && msg[n - 1] == '\n')
    msg[--n] = '\0';
  log_warn(COMPONENT, "libmicrohttpd: %s", msg);
}

struct api_server *
api_server_new(const struct api_config *cfg, struct converger *cv)
{
  struct api_server *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->cfg = cfg;
  s->cv = cv;
  pthread_mutex_init(&s->lock, NULL);
  digest_sha256(cfg->token, strlen(cfg->token), s->token_digest);
  const char *nt = cfg->node_token ? cfg->node_token : cfg->token;
  digest_sha256(nt, strlen(nt), s->node_token_digest);
  struct store_err err;
  s->st = store_open(cfg->db, &err);
  if (s->st == NULL) {
    log_error(COMPONENT, "%s", err.msg);
    goto fail;
  }
  int fd = netaddr_listen_tcp(cfg->listen, COMPONENT, &s->port);
  if (fd == -1)
    goto fail;
  s->mhd = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
      0, NULL, NULL, handle, s,
      MHD_OPTION_EXTERNAL_LOGGER, mhd_log, (void *)NULL,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->threads,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout_s,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
      MHD_OPTION_NOTIFY_COMPLETED, completed, (void *)s,
      MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, (void *)NULL,
      MHD_OPTION_END);
  if (s->mhd == NULL) {
    log_error(COMPONENT, "cannot start the HTTP server on %s", cfg->listen);
    close(fd);
    goto fail;
  }
  return s;
fail:
  store_close(s->st);
  pthread_mutex_destroy(&s->lock);
  free(s);
  return NULL;
}

unsigned
api_server_port(const struct api_server *s)
{
  return s->port;
}

void
api_server_free(struct api_server *s)
{
  if (s == NULL)
    return;
  MHD_stop_daemon(s->mhd);
  store_close(s->st);
  pthread_mutex_destroy(&s->lock);
  free(s);
}
