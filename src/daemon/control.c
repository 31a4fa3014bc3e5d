/* thunder — thunderd's control endpoint; see control.h.
 *
 * The HTTP side (routing, the token, body limits and drain, strict JSON
 * parsing, the error envelope, libmicrohttpd) is the shared service core
 * (common/httpsvc.h).  This file holds what is the endpoint's own: the
 * route table and the mapping of what the ops return to HTTP; the attach
 * and VM bodies are validated by ctlbody.c.
 *
 * Threads: libmicrohttpd runs one thread per connection
 * (httpsvc threads 0), so an attach that blocks for seconds while a
 * manifest is fetched stalls only its own connection.  At most
 * CONTROL_CONNECTIONS_MAX connections at once, CONTROL_PER_IP_MAX from one
 * address; an idle one is closed after CONTROL_IDLE_TIMEOUT seconds, a
 * request that takes CONTROL_REQUEST_TIMEOUT seconds to arrive too.  struct control is read-only once started.
 *
 * Routes: /v1/images[/NAME] (attach, detach, state), /v1/vms[/NAME] (VMs
 * on the node's libvirt pool) and /v1/node.  The two NAME routes check
 * NAME by the image name rule (400 otherwise) before the body.
 */
#include "control.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "ctlbody.h"
#include "digest.h"
#include "httpsvc.h"
#include "jsonutil.h"
#include "log.h"
#include "promtext.h"
#include "manifest.h"
#include "token.h"

#define COMPONENT "control"

/* Connections at once, and seconds before an idle one is closed. */
#define CONTROL_CONNECTIONS_MAX 64
/* Connections from one address at once: half, so one peer cannot take
 * every slot (thunder-api pushes at most --push-parallel, 32, at once). */
#define CONTROL_PER_IP_MAX (CONTROL_CONNECTIONS_MAX / 2)
#define CONTROL_IDLE_TIMEOUT 30
/* Seconds from a request's first line to its last body byte. */
#define CONTROL_REQUEST_TIMEOUT 30
/* Body bytes read (and dropped) from a request that gets an error, before
 * the connection is closed instead. */
#define CONTROL_DRAIN_MAX (1024 * 1024)
/* JSON nesting limit of request bodies. */
#define CONTROL_JSON_DEPTH 8

struct control {
  struct httpsvc *svc;
  struct control_ops ops;
};

/* The endpoint's error codes (docs/control.md). */
static const char *
code_of(unsigned status)
{
  switch (status) {
  case MHD_HTTP_BAD_REQUEST: return "invalid";
  case MHD_HTTP_UNAUTHORIZED: return "unauthorized";
  case MHD_HTTP_FORBIDDEN: return "forbidden";
  case MHD_HTTP_NOT_FOUND: return "not_found";
  case MHD_HTTP_METHOD_NOT_ALLOWED: return "method_not_allowed";
  case MHD_HTTP_REQUEST_TIMEOUT: return "request_timeout";
  case MHD_HTTP_CONFLICT: return "conflict";
  case MHD_HTTP_CONTENT_TOO_LARGE: return "too_large";
  case MHD_HTTP_UNSUPPORTED_MEDIA_TYPE: return "unsupported_media_type";
  case MHD_HTTP_NOT_IMPLEMENTED: return "not_implemented";
  case MHD_HTTP_BAD_GATEWAY: return "bad_gateway";
  case MHD_HTTP_SERVICE_UNAVAILABLE: return "unavailable";
  case MHD_HTTP_GATEWAY_TIMEOUT: return "gateway_timeout";
  case MHD_HTTP_INSUFFICIENT_STORAGE: return "insufficient_storage";
  default: return status >= 500 ? "internal" : "error";
  }
}

/* ---- the ops' results ---------------------------------------------------- */

/* The HTTP status of an op's result. */
static unsigned
status_of(enum control_result r)
{
  switch (r) {
  case CONTROL_OK: return MHD_HTTP_OK;
  case CONTROL_CREATED: return MHD_HTTP_CREATED;
  case CONTROL_INVALID: return MHD_HTTP_BAD_REQUEST;
  case CONTROL_NOT_FOUND: return MHD_HTTP_NOT_FOUND;
  case CONTROL_CONFLICT: return MHD_HTTP_CONFLICT;
  case CONTROL_INTERNAL: return MHD_HTTP_INTERNAL_SERVER_ERROR;
  case CONTROL_UPSTREAM: return MHD_HTTP_BAD_GATEWAY;
  case CONTROL_UNAVAILABLE: return MHD_HTTP_SERVICE_UNAVAILABLE;
  case CONTROL_NO_SPACE: return MHD_HTTP_INSUFFICIENT_STORAGE;
  }
  return 0;
}

/* Makes rep what an op returned: res with o's reply (taken), or the
 * error.  (The op runs as an argument, so it is done before o is read.) */
struct op_out;
static void reply_op(struct httpsvc_reply *rep, const char *what,
                     enum control_result res, struct op_out *o);

/* 501 when the op is not there (an origin has no VMs). */
static bool
have_op(const void *op, struct httpsvc_reply *rep, const char *what)
{
  if (op == NULL)
    httpsvc_fail(rep, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                 "%s not supported here", what);
  return op != NULL;
}

/* ---- the routes ------------------------------------------------------------ */

/* The NAME of a /v1/images/NAME or /v1/vms/NAME route, or NULL with rep
 * failed (400) when it breaks the name rule. */
static const char *
name_param(struct httpsvc_req *rq, const char *kind, struct httpsvc_reply *rep)
{
  const char *name = httpsvc_param(rq, 0);
  if (!manifest_name_valid(name)) {
    char s[80];
    httpsvc_fail(rep, MHD_HTTP_BAD_REQUEST, NULL,
                 "%s name '%s' is not valid: use " MANIFEST_NAME_RULE, kind,
                 jsonutil_shown(name, strlen(name), s, sizeof s));
    return NULL;
  }
  return name;
}

static void
route_health(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  rep->status = MHD_HTTP_OK;
  rep->json = json_object_new_object();
  if (rep->json)
    json_object_object_add(rep->json, "status", json_object_new_string("ok"));
}

/* What an op hands back beside its result. */
struct op_out {
  struct json_object *reply;
  const char *code;
  char err[512];
};
#define OUT &o.reply, &o.code, o.err, sizeof o.err

static void
reply_op(struct httpsvc_reply *rep, const char *what, enum control_result res,
         struct op_out *o)
{
  unsigned status = status_of(res);
  if (status == 0) {
    log_error(COMPONENT, "%s: handler returned result %d", what, (int)res);
    json_object_put(o->reply);
    httpsvc_fail(rep, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                 "internal error: bad status from the handler");
    return;
  }
  if (status >= 400) {
    json_object_put(o->reply);
    if (status >= 500)
      log_warn(COMPONENT, "%s: %u: %s", what, status,
               o->err[0] ? o->err : "(no message)");
    httpsvc_fail(rep, status, o->code, "%s",
                 o->err[0] ? o->err : "request failed");
    return;
  }
  rep->status = status;
  rep->json = o->reply ? o->reply : json_object_new_object();
}

static void
route_image_list(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  if (have_op(c->ops.list, rep, "listing images is"))
    reply_op(rep, "list images", c->ops.list(c->ops.opaque, OUT), &o);
}

static void
route_image_get(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  const char *name = name_param(rq, "image", rep);
  if (name && have_op(c->ops.get, rep, "image state is"))
    reply_op(rep, "GET image", c->ops.get(c->ops.opaque, name, OUT), &o);
}

static void
route_image_put(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  const char *name = name_param(rq, "image", rep);
  if (name == NULL)
    return;
  CLEANUP_JSON_PUT struct json_object *root = httpsvc_body_json(rq, false, rep);
  const char *ups[CONTROL_UPSTREAMS_MAX];
  struct control_attach at;
  if (root == NULL)
    return;
  if (ctlbody_attach(root, name, ups, &at, o.err, sizeof o.err) < 0) {
    httpsvc_fail(rep, MHD_HTTP_BAD_REQUEST, NULL, "%s", o.err);
    return;
  }
  if (have_op(c->ops.attach, rep, "attaching images is"))
    reply_op(rep, "PUT image", c->ops.attach(c->ops.opaque, &at, OUT), &o);
}

static void
route_image_delete(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  const char *name = name_param(rq, "image", rep);
  if (name && have_op(c->ops.detach, rep, "detaching images is"))
    reply_op(rep, "DELETE image", c->ops.detach(c->ops.opaque, name, OUT), &o);
}

static void
route_vm_list(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  if (have_op(c->ops.vm_list, rep, "VMs are"))
    reply_op(rep, "list VMs", c->ops.vm_list(c->ops.opaque, OUT), &o);
}

static void
route_vm_get(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  const char *name = name_param(rq, "VM", rep);
  if (name && have_op(c->ops.vm_get, rep, "VMs are"))
    reply_op(rep, "GET VM", c->ops.vm_get(c->ops.opaque, name, OUT), &o);
}

static void
route_vm_put(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  const char *name = name_param(rq, "VM", rep);
  if (name == NULL)
    return;
  CLEANUP_JSON_PUT struct json_object *root = httpsvc_body_json(rq, false, rep);
  struct control_vm vm;
  if (root == NULL)
    return;
  if (ctlbody_vm(root, name, &vm, o.err, sizeof o.err) < 0) {
    httpsvc_fail(rep, MHD_HTTP_BAD_REQUEST, NULL, "%s", o.err);
    return;
  }
  if (have_op(c->ops.vm_put, rep, "VMs are"))
    reply_op(rep, "PUT VM", c->ops.vm_put(c->ops.opaque, &vm, OUT), &o);
}

static void
route_vm_delete(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  const char *name = name_param(rq, "VM", rep);
  if (name && have_op(c->ops.vm_delete, rep, "VMs are"))
    reply_op(rep, "DELETE VM", c->ops.vm_delete(c->ops.opaque, name, OUT), &o);
}

static void
route_node(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  if (have_op(c->ops.node_info, rep, "node information is"))
    reply_op(rep, "node information", c->ops.node_info(c->ops.opaque, OUT), &o);
}

static void
route_cache(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  if (have_op(c->ops.cache_get, rep, "a cache is"))
    reply_op(rep, "GET cache", c->ops.cache_get(c->ops.opaque, OUT), &o);
}

static void
route_cache_gc(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  struct op_out o = { 0 };
  if (have_op(c->ops.cache_gc, rep, "a cache is"))
    reply_op(rep, "cache gc", c->ops.cache_gc(c->ops.opaque, OUT), &o);
}

/* GET /metrics: text, not JSON (dmetrics.h). */
static void
route_metrics(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  struct control *c = app;
  const char *code = NULL;
  char err[256] = "";
  if (!have_op(c->ops.metrics, rep, "metrics are"))
    return;
  enum control_result r = c->ops.metrics(c->ops.opaque, &rep->text,
                                         &rep->text_len, &code, err,
                                         sizeof err);
  if (r != CONTROL_OK) {
    free(rep->text);
    rep->text = NULL;
    httpsvc_fail(rep, status_of(r), code, "%s", err[0] ? err : "metrics failed");
    return;
  }
  rep->status = MHD_HTTP_OK;
  rep->content_type = PROMTEXT_CONTENT_TYPE;
}

#define T HTTPSVC_AUTH_TOKEN
static const struct httpsvc_route routes[] = {
  { "GET", "/healthz", HTTPSVC_AUTH_NONE, false, route_health },
  { "GET", "/v1/images", T, false, route_image_list },
  { "GET", "/v1/images/{NAME}", T, false, route_image_get },
  { "PUT", "/v1/images/{NAME}", T, true, route_image_put },
  { "DELETE", "/v1/images/{NAME}", T, false, route_image_delete },
  { "GET", "/v1/vms", T, false, route_vm_list },
  { "GET", "/v1/vms/{NAME}", T, false, route_vm_get },
  { "PUT", "/v1/vms/{NAME}", T, true, route_vm_put },
  { "DELETE", "/v1/vms/{NAME}", T, false, route_vm_delete },
  { "GET", "/v1/node", T, false, route_node },
  { "GET", "/v1/cache", T, false, route_cache },
  { "POST", "/v1/cache/gc", T, false, route_cache_gc },
  { "GET", "/metrics", T, false, route_metrics },
};
#undef T

/* ---- public ------------------------------------------------------------- */

struct control *
control_new(const char *listen_spec, const char *token,
            const struct control_ops *ops)
{
  size_t tlen = token ? strlen(token) : 0;
  if (tlen < TOKEN_MIN || tlen > TOKEN_MAX) {
    log_error(COMPONENT, "token: must be %d to %d characters", TOKEN_MIN,
              TOKEN_MAX);
    return NULL;
  }
  struct control *c = calloc(1, sizeof *c);
  if (c == NULL) {
    log_error(COMPONENT, "calloc: control: %m");
    return NULL;
  }
  c->ops = *ops;
  struct httpsvc_config cfg = {
    .name = COMPONENT,
    .realm = "thunderd",
    .listen = listen_spec,
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .token = token,
    .code_of = code_of,
    .not_found_hint = "see /v1/images[/NAME], /v1/vms[/NAME], /v1/node, /v1/cache[/gc] and /metrics",
    .body_max = CONTROL_BODY_MAX,
    .drain_max = CONTROL_DRAIN_MAX,
    .json_depth = CONTROL_JSON_DEPTH,
    .threads = 0,
    .max_connections = CONTROL_CONNECTIONS_MAX,
    .per_ip_connections = CONTROL_PER_IP_MAX,
    .timeout_s = CONTROL_IDLE_TIMEOUT,
    .request_timeout_s = CONTROL_REQUEST_TIMEOUT,
    .app = c,
  };
  c->svc = httpsvc_start(&cfg);
  if (c->svc == NULL) {
    free(c);
    return NULL;
  }
  return c;
}

unsigned
control_port(const struct control *c)
{
  return httpsvc_port(c->svc);
}

void
control_free(struct control *c)
{
  if (c == NULL)
    return;
  httpsvc_stop(c->svc);
  free(c);
}

char *
control_read_token(const char *path)
{
  char err[512];
  char *token = token_read_file(path, err, sizeof err);
  if (token == NULL)
    log_error(COMPONENT, "%s", err);
  return token;
}
