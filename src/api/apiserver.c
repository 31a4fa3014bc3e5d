/* thunder — thunder-api's HTTP routes (docs/api.md) on the service core
 * (common/httpsvc.h: tokens, body limits, strict JSON, error envelope).
 * Each route reads top-down: parse → validate (validate.c) → call (the
 * store, provision.c, originman_manifest) → render (render.c); a result
 * kind becomes a status here and nowhere else.
 *
 * Every request that touches the store takes s->lock: the routes are
 * short (a few SQLite statements), and one lock keeps placement honest —
 * two POST /v1/clusters cannot both take the last free capacity.  The
 * one slow route, POST /v1/images (it reads the manifest from the
 * origin), talks to the origin before it takes the lock.  The converger
 * has its own store connection (WAL: readers and one writer at a time).
 */
#include "apiserver.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "api.h"
#include "cleanup.h"
#include "converge.h"
#include "digest.h"
#include "enrol.h"
#include "httpsvc.h"
#include "log.h"
#include "manifest.h"
#include "metrics.h"
#include "promtext.h"
#include "thunder-build.h"
#include "token.h"
#include "ui.h"
#include "originman.h"
#include "provision.h"
#include "render.h"
#include "validate.h"

#define COMPONENT "api"
#define DRAIN_MAX (1024 * 1024)
#define MESSAGE_MAX 1024

struct api_server {
  const struct api_config *cfg;
  struct converger *cv;
  struct httpsvc *svc;
  pthread_mutex_t lock;      /* st */
  struct store *st;
  struct ui *ui;             /* the status page; NULL: not served */
};

/* The API's error codes (docs/api.md). */
static const char *
code_of(unsigned status)
{
  switch (status) {
  case 400: return "bad_request";
  case 401: return "unauthorized";
  case 403: return "forbidden";
  case 404: return "not_found";
  case 405: return "method_not_allowed";
  case 408: return "request_timeout";
  case 409: return "conflict";
  case 413: return "too_large";
  case 415: return "unsupported_media_type";
  case 422: return "unsatisfiable";
  case 502: return "bad_gateway";
  case 503: return "unavailable";
  default: return "internal";
  }
}

/* A store error as its HTTP status. */
static void
fail_store(struct httpsvc_reply *rep, const struct store_err *err)
{
  unsigned st = err->code == STORE_NOT_FOUND ? 404
              : err->code == STORE_CONFLICT ? 409
              : err->code == STORE_INVALID ? 400 : 500;
  if (st == 500)
    log_error(COMPONENT, "%s", err->msg);
  httpsvc_fail(rep, st, NULL, "%s", err->msg);
}

static int
add_vm(const struct store_vm *vm, void *opaque)
{
  return json_object_array_add(opaque, render_vm(vm)) == 0 ? 0 : -1;
}

/* Cluster id with its VMs into rep (status), or an error.  Under s->lock. */
static void
reply_cluster(struct api_server *s, const char *id, unsigned status,
              struct httpsvc_reply *rep)
{
  struct store_err err;
  CLEANUP_FREE struct store_cluster *c = store_cluster_get(s->st, id, &err);
  if (c == NULL) {
    fail_store(rep, &err);
    return;
  }
  struct json_object *o =
      render_cluster(c, converger_origin_bytes(s->cv, c->id));
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
finish_list(struct httpsvc_reply *rep, const char *key,
            struct json_object *arr, int rc, const struct store_err *err)
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

/* Whether the request may speak for node name: always without a client
 * certificate (tls off, or on without one: the token is all there is);
 * with one, only for the node its CN names.  false with rep failed (403). */
static bool
speaks_for(struct httpsvc_req *rq, const char *name, const char *what,
           struct httpsvc_reply *rep)
{
  const char *peer = httpsvc_peer_name(rq);
  if (peer == NULL || strcmp(peer, name) == 0)
    return true;
  log_warn(COMPONENT, "%s of node %s refused: the client certificate is %s's",
           what, name, peer);
  httpsvc_fail(rep, 403, NULL, "%s of node '%s': the client certificate names '%s'; a node may only speak for itself",
               what, name, peer);
  return false;
}

/* Whether the request may speak for node name by its bearer token
 * (enrol_decide: per-node enrolment tokens, the fleet token).  After
 * speaks_for.  Takes s->lock.  false with rep failed (401, 403, 500). */
static bool
token_speaks_for(struct api_server *s, struct httpsvc_req *rq,
                 const char *name, const char *what,
                 struct httpsvc_reply *rep)
{
  char bearer[TOKEN_MAX + 1] = "", owner[ENROL_NAME_MAX + 1];
  httpsvc_bearer(rq, bearer, sizeof bearer);
  struct enrol_record mine, owners;
  struct enrol_ask a = {
    .name = name, .bearer = bearer, .fleet = !httpsvc_by_app(rq),
    .certified = httpsvc_peer_name(rq) != NULL,
    .require = s->cfg->require_enrolment,
  };
  if (enrol_token_owner(bearer, owner))
    a.owner = owner;
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  int rc = store_enrolment_get(s->st, name, mine.salt, mine.hash, NULL, &err);
  if (rc == STORE_OK)
    a.mine = &mine;
  if ((rc == STORE_OK || rc == STORE_NOT_FOUND) && a.owner &&
      strcmp(a.owner, name) != 0) {
    rc = store_enrolment_get(s->st, a.owner, owners.salt, owners.hash, NULL,
                             &err);
    if (rc == STORE_OK)
      a.owners = &owners;
  }
  pthread_mutex_unlock(&s->lock);
  if (rc != STORE_OK && rc != STORE_NOT_FOUND) {
    fail_store(rep, &err);
    return false;
  }
  char msg[MESSAGE_MAX];
  enum enrol_verdict v = enrol_decide(&a, msg, sizeof msg);
  explicit_bzero(bearer, sizeof bearer);
  if (v == ENROL_OK)
    return true;
  log_warn_rl(COMPONENT, "%s of node %s refused: %s", what, name, msg);
  httpsvc_fail(rep, v == ENROL_FORBIDDEN ? 403 : 401, NULL, "%s of node '%s': %s",
               what, name, msg);
  return false;
}

static void
node_register(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  CLEANUP_JSON_PUT struct json_object *body = httpsvc_body_json(rq, false, rep);
  struct store_node n;
  char msg[MESSAGE_MAX];
  if (body == NULL)
    return;
  if (validate_node(body, &n, msg, sizeof msg) == -1) {
    httpsvc_fail(rep, 400, NULL, "%s", msg);
    return;
  }
  if (!speaks_for(rq, n.id, "registration", rep) ||
      !token_speaks_for(s, rq, n.id, "registration", rep))
    return;
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
  rep->json = render_node(got);
}

/* The NAME of /v1/nodes/NAME[/...], or NULL with rep failed (404). */
static const char *
node_param(struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  const char *name = httpsvc_param(rq, 0);
  if (!validate_node_name(name)) {
    httpsvc_fail(rep, 404, NULL, "no such node: '%.64s' is not a node name",
                 name);
    return NULL;
  }
  return name;
}

static void
node_heartbeat(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *name = node_param(rq, rep);
  if (name == NULL || !speaks_for(rq, name, "heartbeat", rep) ||
      !token_speaks_for(s, rq, name, "heartbeat", rep))
    return;
  CLEANUP_JSON_PUT struct json_object *body = httpsvc_body_json(rq, true, rep);
  if (body == NULL)
    return;
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
  return json_object_array_add(opaque, render_node(n)) == 0 ? 0 : -1;
}

static void
node_list(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  struct store_err err;
  struct json_object *arr = json_object_new_array();
  pthread_mutex_lock(&s->lock);
  int rc = store_node_list(s->st, 0, add_node, arr, &err);
  pthread_mutex_unlock(&s->lock);
  finish_list(rep, "nodes", arr, rc, &err);
}

static void
node_get(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *name = node_param(rq, rep);
  if (name == NULL)
    return;
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_node *n = store_node_get(s->st, name, &err);
  pthread_mutex_unlock(&s->lock);
  if (n == NULL) {
    fail_store(rep, &err);
    return;
  }
  rep->status = 200;
  rep->json = render_node(n);
}

/* POST /v1/nodes/NAME/enrolment[?rotate=true]: a new enrolment token,
 * shown once (201; 200 when it replaced one). */
static void
node_enrol(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *name = node_param(rq, rep);
  if (name == NULL)
    return;
  const char *r = httpsvc_query(rq, "rotate");
  bool rotate = r && strcmp(r, "true") == 0;
  if (r && !rotate && strcmp(r, "false") != 0) {
    httpsvc_fail(rep, 400, NULL, "query 'rotate': '%.16s' is not true or false",
                 r);
    return;
  }
  char token[ENROL_TOKEN_MAX];
  struct enrol_record rec;
  if (enrol_token_new(name, token, &rec) == -1) {
    log_error(COMPONENT, "enrol node %s: cannot make a token: %m", name);
    httpsvc_fail(rep, 500, NULL, "cannot make a token: %s", strerror(errno));
    return;
  }
  struct store_err err;
  bool created;
  pthread_mutex_lock(&s->lock);
  int rc = store_enrolment_put(s->st, name, rec.salt, rec.hash, rotate,
                               &created, &err);
  pthread_mutex_unlock(&s->lock);
  if (rc != STORE_OK) {
    explicit_bzero(token, sizeof token);
    fail_store(rep, &err);
    return;
  }
  log_info(COMPONENT, "node %s %s", name,
           created ? "enrolled" : "enrolled again: its previous token is revoked");
  rep->status = created ? 201 : 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "name", json_object_new_string(name));
  json_object_object_add(rep->json, "enrolled", json_object_new_boolean(1));
  json_object_object_add(rep->json, "token", json_object_new_string(token));
  explicit_bzero(token, sizeof token);
}

/* DELETE /v1/nodes/NAME/enrolment: revokes it (200). */
static void
node_revoke(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *name = node_param(rq, rep);
  if (name == NULL)
    return;
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  int rc = store_enrolment_delete(s->st, name, &err);
  pthread_mutex_unlock(&s->lock);
  if (rc != STORE_OK) {
    fail_store(rep, &err);
    return;
  }
  log_info(COMPONENT, "node %s: enrolment revoked", name);
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "name", json_object_new_string(name));
  json_object_object_add(rep->json, "enrolled", json_object_new_boolean(0));
}

/* ---- images --------------------------------------------------------------- */

static void
image_register(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  CLEANUP_JSON_PUT struct json_object *body = httpsvc_body_json(rq, false, rep);
  const char *name, *origin, *version;
  char msg[MESSAGE_MAX];
  if (body == NULL)
    return;
  if (validate_image(body, &name, &origin, &version, msg, sizeof msg) == -1) {
    httpsvc_fail(rep, 400, NULL, "%s", msg);
    return;
  }
  /* The origin first, without the lock: it may take a while. */
  char got[DIGEST_HEX_LEN + 1];
  uint64_t size;
  if (originman_manifest(origin, name, got, &size, msg, sizeof msg) == -1) {
    httpsvc_fail(rep, errno == ENOENT ? 422 : 502, NULL, "%s", msg);
    return;
  }
  if (version && strcmp(version, got) != 0) {
    httpsvc_fail(rep, 409, NULL, "the origin %s serves image '%s' in version %s, not %s",
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
  rep->json = render_image(row);
}

static int
add_image(const struct store_image *im, void *opaque)
{
  return json_object_array_add(opaque, render_image(im)) == 0 ? 0 : -1;
}

static void
image_list(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  struct store_err err;
  struct json_object *arr = json_object_new_array();
  pthread_mutex_lock(&s->lock);
  int rc = store_image_list(s->st, add_image, arr, &err);
  pthread_mutex_unlock(&s->lock);
  finish_list(rep, "images", arr, rc, &err);
}

static void
image_get(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *name = httpsvc_param(rq, 0);
  if (!manifest_name_valid(name)) {
    httpsvc_fail(rep, 404, NULL, "no such image: '%.64s' is not an image name",
                 name);
    return;
  }
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_image *im = store_image_get(s->st, name, &err);
  pthread_mutex_unlock(&s->lock);
  if (im == NULL) {
    fail_store(rep, &err);
    return;
  }
  rep->status = 200;
  rep->json = render_image(im);
}

/* ---- clusters --------------------------------------------------------------- */

/* Makes rep what provision_cluster decided.  Under s->lock. */
static void
reply_provision(struct api_server *s, enum provision_result r, const char *id,
                const struct store_err *serr, const char *msg,
                struct httpsvc_reply *rep)
{
  switch (r) {
  case PROVISION_CREATED:
  case PROVISION_REPLAYED:
    reply_cluster(s, id, r == PROVISION_CREATED ? 202 : 200, rep);
    snprintf(rep->location, sizeof rep->location, "/v1/clusters/%s", id);
    converger_kick(s->cv);
    return;
  case PROVISION_KEY_CONFLICT:
  case PROVISION_NAME_CONFLICT:
    httpsvc_fail(rep, 409, NULL, "%s", msg);
    return;
  case PROVISION_INSUFFICIENT_CAPACITY:
    httpsvc_fail(rep, 409, "insufficient_capacity", "%s", msg);
    return;
  case PROVISION_UNKNOWN_IMAGE:
  case PROVISION_NEVER_FITS:
    httpsvc_fail(rep, 422, NULL, "%s", msg);
    return;
  case PROVISION_INVALID:
    httpsvc_fail(rep, 400, NULL, "%s", msg);
    return;
  case PROVISION_STORE_ERROR:
    fail_store(rep, serr);
    return;
  case PROVISION_INTERNAL:
    break;
  }
  log_error(COMPONENT, "POST /v1/clusters: %s", msg);
  httpsvc_fail(rep, 500, NULL, "%s", msg);
}

static void
cluster_create(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  CLEANUP_JSON_PUT struct json_object *body = httpsvc_body_json(rq, false, rep);
  struct provision_request q;
  char msg[MESSAGE_MAX];
  if (body == NULL)
    return;
  if (validate_cluster(body, s->cfg->max_count, &q, msg, sizeof msg) == -1) {
    httpsvc_fail(rep, 400, NULL, "%s", msg);
    return;
  }
  q.key = httpsvc_header(rq, "Idempotency-Key");
  if (q.key && validate_idempotency_key(q.key, msg, sizeof msg) == -1) {
    httpsvc_fail(rep, 400, NULL, "%s", msg);
    return;
  }
  /* The request's digest: the body as parsed, serialised (as stored with
   * the key since the first release: keep the flags). */
  const char *canon = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
  uint8_t d[DIGEST_LEN];
  char hash[DIGEST_HEX_LEN + 1];
  digest_sha256(canon, strlen(canon), d);
  digest_to_hex(d, hash);
  q.hash = hash;

  const struct provision_params pp = {
    .link_bps = s->cfg->link_bps, .origin_bps = s->cfg->origin_bps,
    .origin_cap = s->cfg->origin_cap, .origin_copies = s->cfg->origin_copies,
    .working_set = s->cfg->working_set,
  };
  char id[STORE_ID_LEN + 1] = "";
  struct store_err serr = { 0 };
  pthread_mutex_lock(&s->lock);
  enum provision_result r =
      provision_cluster(s->st, &pp, &q, id, &serr, msg, sizeof msg);
  reply_provision(s, r, id, &serr, msg, rep);
  pthread_mutex_unlock(&s->lock);
}

/* The ID of /v1/clusters/ID[/...], or NULL with rep failed (404). */
static const char *
cluster_param(struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  const char *id = httpsvc_param(rq, 0);
  if (!validate_cluster_id(id)) {
    httpsvc_fail(rep, 404, NULL, "no such cluster: '%.64s' is not a cluster id",
                 id);
    return NULL;
  }
  return id;
}

struct cluster_list_ctx {
  struct api_server *s;
  struct json_object *arr;
};

static int
add_cluster(const struct store_cluster *c, void *opaque)
{
  struct cluster_list_ctx *x = opaque;
  struct json_object *o =
      render_cluster(c, converger_origin_bytes(x->s->cv, c->id));
  return json_object_array_add(x->arr, o) == 0 ? 0 : -1;
}

static void
cluster_list(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *state = httpsvc_query(rq, "state");
  unsigned mask = 0;
  if (state) {
    enum store_cluster_state cs;
    if (store_cluster_state_from_name(state, &cs) == -1) {
      httpsvc_fail(rep, 400, NULL, "query 'state': '%.64s' is not a cluster state",
                   state);
      return;
    }
    mask = STORE_MASK(cs);
  }
  struct store_err err;
  struct cluster_list_ctx x = { s, json_object_new_array() };
  pthread_mutex_lock(&s->lock);
  int rc = store_cluster_list(s->st, mask, add_cluster, &x, &err);
  pthread_mutex_unlock(&s->lock);
  finish_list(rep, "clusters", x.arr, rc, &err);
}

static void
cluster_get(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *id = cluster_param(rq, rep);
  if (id == NULL)
    return;
  pthread_mutex_lock(&s->lock);
  reply_cluster(s, id, 200, rep);
  pthread_mutex_unlock(&s->lock);
}

static void
cluster_delete(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *id = cluster_param(rq, rep);
  if (id == NULL)
    return;
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

struct tree_ctx {
  struct api_server *s;
  const char *id;
  struct json_object *arr;
};

/* One row of the tree, with what the node fetched from each upstream. */
static int
add_row(const struct store_tree_row *row, void *opaque)
{
  struct tree_ctx *x = opaque;
  uint64_t bytes[STORE_UPSTREAMS_MAX] = { 0 };
  for (size_t i = 0; i < row->n_upstreams && i < STORE_UPSTREAMS_MAX; i++)
    bytes[i] = converger_upstream_bytes(x->s->cv, x->id, row->node_id,
                                        row->upstreams[i]);
  return json_object_array_add(x->arr, render_tree_row(row, bytes)) == 0 ? 0
                                                                         : -1;
}

static void
cluster_tree(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *id = cluster_param(rq, rep);
  if (id == NULL)
    return;
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  CLEANUP_FREE struct store_cluster *c = store_cluster_get(s->st, id, &err);
  CLEANUP_FREE struct store_image *im =
      c ? store_image_get(s->st, c->image, &err) : NULL;
  struct json_object *arr = json_object_new_array();
  struct tree_ctx x = { s, id, arr };
  int rc = c ? store_tree_list(s->st, id, add_row, &x, &err) : STORE_ERROR;
  pthread_mutex_unlock(&s->lock);
  if (c == NULL || rc != STORE_OK) {
    json_object_put(arr);
    fail_store(rep, &err);
    return;
  }
  rep->status = 200;
  rep->json = render_tree(c->id, c->image, im ? im->origin_nbd : NULL, arr);
}

/* ---- service routes -------------------------------------------------------- */

/* Stops at the first image: /healthz only asks whether the store reads. */
static int
first_image(const struct store_image *im, void *opaque)
{
  return 1;
}

static void
healthz(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  struct store_err err;
  pthread_mutex_lock(&s->lock);
  int rc = store_image_list(s->st, first_image, NULL, &err);
  pthread_mutex_unlock(&s->lock);
  if (rc != STORE_OK) {
    httpsvc_fail(rep, 503, NULL, "the database cannot be read: %s", err.msg);
    return;
  }
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "status", json_object_new_string("ok"));
  json_object_object_add(rep->json, "db", json_object_new_string("ok"));
}

static void
metrics(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  pthread_mutex_lock(&s->lock);
  int rc = metrics_render(s->st, &rep->text, &rep->text_len);
  pthread_mutex_unlock(&s->lock);
  if (rc == -1) {
    httpsvc_fail(rep, 500, NULL, "cannot render the metrics");
    return;
  }
  rep->status = 200;
  rep->content_type = PROMTEXT_CONTENT_TYPE;
}

/* The status page (ui.h): /ui redirects to /ui/, which is index.html;
 * /ui/FILE is one of its files. */
static void
ui_page(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct api_server *s = app;
  const char *name = httpsvc_param(rq, 0), *type = NULL;
  size_t len = 0;
  const char *data = s->ui ? ui_file(s->ui, name, &len, &type) : NULL;

  if (s->ui == NULL) {
    httpsvc_fail(rep, 404, NULL, "the status page is not served here (thunder-api --ui-dir none)");
    return;
  }
  if (data == NULL) {
    httpsvc_fail(rep, 404, NULL, "no such file of the status page; see /ui/");
    return;
  }
  if ((rep->text = malloc(len ? len : 1)) == NULL) {
    httpsvc_fail(rep, 500, NULL, "out of memory");
    return;
  }
  memcpy(rep->text, data, len);
  rep->text_len = len;
  rep->content_type = type;
  rep->status = 200;
}

static void
ui_redirect(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  snprintf(rep->location, sizeof rep->location, "/ui/");
  rep->status = 301;
}

static void
count_reply(void *app, const char *method, unsigned status)
{
  metrics_request(method, status);
}

#define N HTTPSVC_AUTH_NONE
#define T HTTPSVC_AUTH_TOKEN
#define A HTTPSVC_AUTH_APP
static const struct httpsvc_route routes[] = {
  { "GET", "/healthz", N, false, healthz },
  { "GET", "/metrics", N, false, metrics },
  { "GET", "/ui", N, false, ui_redirect },
  { "GET", "/ui/", N, false, ui_page },
  { "GET", "/ui/{FILE}", N, false, ui_page },
  { "GET", "/v1/nodes", T, false, node_list },
  { "POST", "/v1/nodes", A, true, node_register },
  { "GET", "/v1/nodes/{NAME}", T, false, node_get },
  { "POST", "/v1/nodes/{NAME}/heartbeat", A, true, node_heartbeat },
  { "POST", "/v1/nodes/{NAME}/enrolment", T, false, node_enrol },
  { "DELETE", "/v1/nodes/{NAME}/enrolment", T, false, node_revoke },
  { "GET", "/v1/images", T, false, image_list },
  { "POST", "/v1/images", T, true, image_register },
  { "GET", "/v1/images/{NAME}", T, false, image_get },
  { "GET", "/v1/clusters", T, false, cluster_list },
  { "POST", "/v1/clusters", T, true, cluster_create },
  { "GET", "/v1/clusters/{ID}", T, false, cluster_get },
  { "DELETE", "/v1/clusters/{ID}", T, false, cluster_delete },
  { "GET", "/v1/clusters/{ID}/tree", T, false, cluster_tree },
};
#undef N
#undef T
#undef A

/* ---- public ----------------------------------------------------------------- */

struct api_server *
api_server_new(const struct api_config *cfg, struct converger *cv)
{
  struct api_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    log_error(COMPONENT, "calloc: server: %m");
    return NULL;
  }
  s->cfg = cfg;
  s->cv = cv;
  pthread_mutex_init(&s->lock, NULL);
  struct store_err err;
  s->st = store_open(cfg->db, &err);
  if (s->st == NULL) {
    log_error(COMPONENT, "%s", err.msg);
    goto cleanup;
  }
  /* The status page: a --ui-dir given must load; the installed default
   * may be missing (a build tree), and then /ui/ says so. */
  if (cfg->ui_dir == NULL) {
    if ((s->ui = ui_load(THUNDER_UI_DIR)) == NULL)
      log_warn(COMPONENT, "no status page at /ui/ (its files are not in " THUNDER_UI_DIR "; see --ui-dir)");
  } else if (strcmp(cfg->ui_dir, "none") != 0 &&
             (s->ui = ui_load(cfg->ui_dir)) == NULL) {
    goto cleanup;
  }
  struct httpsvc_config hc = {
    .name = COMPONENT,
    .realm = "thunder-api",
    .listen = cfg->listen,
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .token = cfg->token,
    .token2 = cfg->node_token ? cfg->node_token : cfg->token,
    .token2_refused = "the node token may only register nodes and send heartbeats",
    .code_of = code_of,
    .body_max = cfg->max_body,
    .drain_max = DRAIN_MAX,
    .json_depth = (int)cfg->max_depth,
    .json_content_type = true,
    .threads = cfg->threads ? cfg->threads : 1,
    .max_connections = cfg->max_connections,
    .per_ip_connections = cfg->max_connections,
    .timeout_s = cfg->connection_timeout_s,
    .request_timeout_s = cfg->connection_timeout_s,
    .connection_memory = 128 * 1024,
    .on_reply = count_reply,
    .app = s,
    .tls = cfg->tls,
    .tls_cert = cfg->tls_pem ? cfg->tls_pem->cert : NULL,
    .tls_key = cfg->tls_pem ? cfg->tls_pem->key : NULL,
    .tls_ca = cfg->tls_pem ? cfg->tls_pem->ca : NULL,
  };
  s->svc = httpsvc_start(&hc);
  if (s->svc != NULL)
    return s;
cleanup:
  store_close(s->st);
  pthread_mutex_destroy(&s->lock);
  free(s);
  return NULL;
}

unsigned
api_server_port(const struct api_server *s)
{
  return httpsvc_port(s->svc);
}

void
api_server_free(struct api_server *s)
{
  if (s == NULL)
    return;
  httpsvc_stop(s->svc);
  store_close(s->st);
  ui_free(s->ui);
  pthread_mutex_destroy(&s->lock);
  free(s);
}
