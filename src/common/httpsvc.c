/* thunder — the JSON-over-HTTP service core; see httpsvc.h for the life
 * of a request.
 *
 * The listening socket: netaddr_listen_tcp makes it, then it is handed to
 * libmicrohttpd (MHD_OPTION_LISTEN_SOCKET) and MHD_stop_daemon closes it.
 * If MHD_start_daemon fails part way it may or may not have closed it
 * already, so it is left alone then rather than risk closing a descriptor
 * another thread has been given since (a failed start ends the program).
 */
#include "httpsvc.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>
#include <json-c/json.h>
#include <microhttpd.h>

#include "cleanup.h"
#include "clock.h"
#include "digest.h"
#include "jsonutil.h"
#include "log.h"
#include "netaddr.h"
#include "tlspeer.h"
#include "token.h"

#define PARAMS_MAX 4
#define ALLOW_MAX 96

struct httpsvc {
  struct MHD_Daemon *mhd;
  struct httpsvc_config cfg;
  uint8_t digest[DIGEST_LEN];   /* SHA-256 of the token */
  uint8_t digest2[DIGEST_LEN];  /* of token2 */
  bool has_token2;
  unsigned port;
};

struct httpsvc_req {
  struct httpsvc *s;
  bool started;             /* the handler's first call is done */
  int64_t deadline_ms;      /* CLOCK_MONOTONIC; 0: none */
  struct MHD_Connection *conn;
  const char *method, *url;
  const struct httpsvc_route *route; /* NULL until routed */
  char *param_buf;
  const char *params[PARAMS_MAX];
  bool by_token2;
  bool by_app;              /* AUTH_APP: no token of the service matched */
  bool has_peer;
  char peer[HTTPSVC_PEER_MAX + 1]; /* the client certificate's CN */
  /* An error decided before the body (status 0: none). */
  struct httpsvc_reply early;
  bool token_given;
  char allow[ALLOW_MAX];
  /* The body, while the route takes one and it is under body_max. */
  char *body;
  size_t len;
  bool too_large;
  size_t dropped;
};

/* ---- replies ------------------------------------------------------------- */

void
httpsvc_fail(struct httpsvc_reply *rep, unsigned status, const char *code,
             const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rep->message, sizeof rep->message, fmt, ap);
  va_end(ap);
  json_object_put(rep->json);
  rep->json = NULL;
  free(rep->text);
  rep->text = NULL;
  rep->status = status;
  rep->code = code;
}

/* A new {"error":{"code":code,"message":message}}, or NULL. */
static struct json_object *
error_body(const char *code, const char *message)
{
  struct json_object *o = json_object_new_object();
  struct json_object *e = json_object_new_object();
  if (o == NULL || e == NULL ||
      json_object_object_add(e, "code", json_object_new_string(code)) ||
      json_object_object_add(e, "message", json_object_new_string(message))) {
    json_object_put(o);
    json_object_put(e);
    return NULL;
  }
  if (json_object_object_add(o, "error", e)) {
    json_object_put(o);
    json_object_put(e);
    return NULL;
  }
  return o;
}

/* The body text of rep (malloc'ed, into *text and *len): the error
 * envelope, the text, or the JSON with a newline.  -1 on no memory. */
static int
reply_text(const struct httpsvc *s, struct httpsvc_reply *rep, char **text,
           size_t *len)
{
  *text = NULL;
  *len = 0;
  if (rep->status >= 400) {
    json_object_put(rep->json);
    rep->json = error_body(rep->code ? rep->code : s->cfg.code_of(rep->status),
                           rep->message);
    if (rep->json == NULL)
      return -1;
  } else if (rep->text) {
    *text = rep->text;
    *len = rep->text_len;
    rep->text = NULL;
    return 0;
  } else if (rep->status == MHD_HTTP_NO_CONTENT) {
    return 0;
  }
  const char *j = rep->json ? jsonutil_text(rep->json) : "{}";
  if (j == NULL || asprintf(text, "%s\n", j) < 0) {
    *text = NULL;
    return -1;
  }
  *len = strlen(*text);
  return 0;
}

/* Sends rep (its body taken) — the one place that queues a response. */
static enum MHD_Result
send_reply(struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  static const char oom[] =
      "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
  struct httpsvc *s = rq->s;
  char *text;
  size_t len;
  struct MHD_Response *resp;

  if (reply_text(s, rep, &text, &len) == 0)
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  else
    resp = NULL;
  if (resp == NULL) {
    free(text);
    rep->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    rep->content_type = NULL;
    resp = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom,
                                           MHD_RESPMEM_PERSISTENT);
  }
  json_object_put(rep->json);
  rep->json = NULL;
  free(rep->text);
  rep->text = NULL;
  if (resp == NULL) {
    log_error(s->cfg.name, "MHD_create_response_from_buffer failed");
    return MHD_NO;
  }
  char auth[160];
  snprintf(auth, sizeof auth, "Bearer realm=\"%s\"%s", s->cfg.realm,
           rq->token_given ? ", error=\"invalid_token\"" : "");
  enum MHD_Result r = MHD_YES;
  if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                              rep->content_type ? rep->content_type
                                                : "application/json") == MHD_NO ||
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                              "no-store") == MHD_NO ||
      (rep->status == MHD_HTTP_METHOD_NOT_ALLOWED &&
       MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rq->allow) == MHD_NO) ||
      (rep->status == MHD_HTTP_UNAUTHORIZED &&
       MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                               auth) == MHD_NO) ||
      (rep->location[0] &&
       MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION,
                               rep->location) == MHD_NO))
    r = MHD_NO;
  if (r == MHD_YES)
    r = MHD_queue_response(rq->conn, rep->status, resp);
  MHD_destroy_response(resp);
  if (s->cfg.on_reply)
    s->cfg.on_reply(s->cfg.app, rq->method, rep->status);
  return r;
}

/* ---- routing ----------------------------------------------------------------- */

/* Matches url against pattern; the {..} segments go into buf (strlen(url)
 * + 1 bytes) and params.  true on a match. */
static bool
match(const char *pattern, const char *url, char *buf, const char **params)
{
  const char *p = pattern, *u = url;
  unsigned n = 0;
  while (*p) {
    if (*p == '{') {
      const char *close = strchr(p, '}');
      size_t seg = strcspn(u, "/");
      if (close == NULL || seg == 0 || n == PARAMS_MAX)
        return false;
      memcpy(buf, u, seg);
      buf[seg] = '\0';
      params[n++] = buf;
      buf += seg + 1;
      u += seg;
      p = close + 1;
    } else if (*p++ != *u++) {
      return false;
    }
  }
  return *u == '\0';
}

static bool
method_is(const struct httpsvc_route *r, const char *method)
{
  return strcmp(r->method, method) == 0 ||
         (strcmp(r->method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

/* Records an error found before the body. */
static void __attribute__((format(printf, 3, 4)))
early_error(struct httpsvc_req *rq, unsigned status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rq->early.message, sizeof rq->early.message, fmt, ap);
  va_end(ap);
  rq->early.status = status;
}

/* The first call: routes the request and records any error (404, 401,
 * 405). */
static void
start_request(struct httpsvc_req *rq)
{
  struct httpsvc *s = rq->s;
  const struct httpsvc_route *found = NULL;
  bool path_known = false;
  enum httpsvc_auth auth = HTTPSVC_AUTH_NONE;
  char shown[80], *scratch = rq->param_buf;
  const char *pattern = NULL;

  for (size_t i = 0; i < s->cfg.n_routes; i++) {
    const struct httpsvc_route *r = &s->cfg.routes[i];
    const char *params[PARAMS_MAX] = { NULL };
    if (!match(r->pattern, rq->url, scratch, params))
      continue;
    if (!path_known || r->auth > auth)
      auth = r->auth;
    path_known = true;
    pattern = r->pattern;
    size_t n = strlen(rq->allow);
    snprintf(rq->allow + n, sizeof rq->allow - n, "%s%s%s", n ? ", " : "",
             r->method, strcmp(r->method, "GET") == 0 ? ", HEAD" : "");
    if (found == NULL && method_is(r, rq->method)) {
      found = r;
      memcpy(rq->params, params, sizeof params);
      scratch += strlen(rq->url) + 1; /* keep this match's segments */
    }
  }
  jsonutil_shown(rq->url, strlen(rq->url), shown, sizeof shown);
  if (!path_known) {
    early_error(rq, MHD_HTTP_NOT_FOUND, "no such path: %s%s%s", shown,
                s->cfg.not_found_hint ? "; " : "",
                s->cfg.not_found_hint ? s->cfg.not_found_hint : "");
    return;
  }
  if (found)
    auth = found->auth;
  if (auth != HTTPSVC_AUTH_NONE) {
    const char *h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    bool ok = token_bearer_ok(h, s->digest);
    rq->by_token2 = !ok && s->has_token2 && token_bearer_ok(h, s->digest2);
    rq->token_given = h != NULL;
    /* An AUTH_APP route checks any other bearer token itself. */
    rq->by_app = !ok && !rq->by_token2 && h != NULL &&
                 found && found->auth == HTTPSVC_AUTH_APP;
    if (!ok && !rq->by_token2 && !rq->by_app) {
      early_error(rq, MHD_HTTP_UNAUTHORIZED, "%s",
                  h ? "wrong bearer token"
                    : "missing 'Authorization: Bearer TOKEN' header");
      return;
    }
    if (rq->by_token2 && auth == HTTPSVC_AUTH_TOKEN) {
      early_error(rq, MHD_HTTP_UNAUTHORIZED, "%s",
                  s->cfg.token2_refused ? s->cfg.token2_refused
                                        : "wrong bearer token");
      return;
    }
  }
  if (found == NULL) {
    char m[80], path[128];
    size_t n = 0;
    for (const char *p = pattern; *p && n + 1 < sizeof path; p++)
      if (*p != '{' && *p != '}')
        path[n++] = *p;
    path[n] = '\0';
    early_error(rq, MHD_HTTP_METHOD_NOT_ALLOWED,
                "method %s not allowed on %s; allowed: %s",
                jsonutil_shown(rq->method, strlen(rq->method), m, sizeof m),
                path, rq->allow);
    return;
  }
  rq->route = found;
}

/* Takes in one piece of the body.  -1 to close the connection. */
static int
take_body(struct httpsvc_req *rq, const char *data, size_t size)
{
  const struct httpsvc_config *cfg = &rq->s->cfg;
  if (rq->route && rq->route->body && rq->early.status == 0 &&
      !rq->too_large) {
    if (rq->len + size <= cfg->body_max) {
      char *nb = realloc(rq->body, rq->len + size + 1);
      if (nb == NULL) {
        log_error(cfg->name, "realloc: request body: %m");
        return -1;
      }
      rq->body = nb;
      memcpy(rq->body + rq->len, data, size);
      rq->len += size;
      rq->body[rq->len] = '\0';
      return 0;
    }
    rq->too_large = true;
    rq->dropped = rq->len;
    free(rq->body);
    rq->body = NULL;
    rq->len = 0;
  }
  rq->dropped += size;
  if (rq->dropped > cfg->drain_max) {
    log_info(cfg->name, "closing a connection whose request body passed %zu bytes",
             cfg->drain_max);
    return -1;
  }
  if (rq->dropped > cfg->body_max)
    rq->too_large = true;
  return 0;
}

/* Logs a refused token with the client's address. */
static void
log_unauthorized(struct httpsvc_req *rq)
{
  char h[NI_MAXHOST] = "?", u[80];
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr)
    getnameinfo(ci->client_addr,
                ci->client_addr->sa_family == AF_INET6
                    ? sizeof(struct sockaddr_in6)
                    : sizeof(struct sockaddr_in),
                h, sizeof h, NULL, 0, NI_NUMERICHOST);
  log_info(rq->s->cfg.name, "%s %s from %s: 401 %s", rq->method,
           jsonutil_shown(rq->url, strlen(rq->url), u, sizeof u), h,
           rq->early.message);
}

/* The last call: replies the error found so far, 413, or the handler's. */
static enum MHD_Result
finish_request(struct httpsvc_req *rq)
{
  struct httpsvc *s = rq->s;
  struct httpsvc_reply rep;
  char u[80];

  jsonutil_shown(rq->url, strlen(rq->url), u, sizeof u);
  if (rq->early.status != 0) {
    if (rq->early.status == MHD_HTTP_UNAUTHORIZED)
      log_unauthorized(rq);
    rep = rq->early;
  } else if (rq->too_large) {
    memset(&rep, 0, sizeof rep);
    httpsvc_fail(&rep, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                 "body: larger than %zu bytes", s->cfg.body_max);
  } else {
    memset(&rep, 0, sizeof rep);
    rq->route->handler(s->cfg.app, rq, &rep);
    if (rep.status == 0)
      httpsvc_fail(&rep, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                   "internal error: the handler gave no reply");
  }
  log_debug(s->cfg.name, "%s %s: %u%s%s", rq->method, u, rep.status,
            rep.status >= 400 ? " " : "", rep.status >= 400 ? rep.message : "");
  return send_reply(rq, &rep);
}

/* The request line is in: the request's state, and its deadline, start
 * here (MHD_OPTION_URI_LOG_CALLBACK), before the headers. */
static void *
request_begins(void *cls, const char *uri, struct MHD_Connection *conn)
{
  struct httpsvc *s = cls;
  struct httpsvc_req *rq = calloc(1, sizeof *rq);
  (void)uri;
  if (rq == NULL)
    return NULL;
  rq->s = s;
  rq->conn = conn;
  if (s->cfg.request_timeout_s)
    rq->deadline_ms = clock_mono_ms() + (int64_t)s->cfg.request_timeout_s * 1000;
  return rq;
}

static bool
past_deadline(const struct httpsvc_req *rq)
{
  return rq->deadline_ms != 0 && clock_mono_ms() > rq->deadline_ms;
}

/* The client certificate of rq's connection: its CN into rq->peer when
 * one was presented and verifies against the service's CA with the TLS
 * client purpose.  -1 with rq's early error (403) when one was presented
 * and does not verify, or none was with TLSDIR_REQUIRE. */
static int
check_peer(struct httpsvc_req *rq)
{
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  gnutls_session_t session = ci ? ci->tls_session : NULL;
  char why[512];
  int r = session ? tlspeer_check_client(session, rq->peer, sizeof rq->peer,
                                         why, sizeof why)
                  : 0;
  if (r == 0) {
    if (rq->s->cfg.tls != TLSDIR_REQUIRE)
      return 0;
    early_error(rq, MHD_HTTP_FORBIDDEN, "a client certificate of the fleet CA is required (this service runs with tls = require)");
    return -1;
  }
  if (r == -1) {
    early_error(rq, MHD_HTTP_FORBIDDEN, "client certificate refused: %s",
                why);
    return -1;
  }
  rq->has_peer = true;
  return 0;
}

/* The first call: the headers are in. */
static enum MHD_Result
first_call(struct httpsvc_req *rq, const char *url, const char *method)
{
  struct httpsvc *s = rq->s;
  rq->started = true;
  rq->method = method;
  rq->url = url;
  if ((rq->param_buf = malloc(2 * strlen(url) + 2)) == NULL) {
    log_error(s->cfg.name, "malloc: request: %m");
    return MHD_NO;
  }
  if (past_deadline(rq)) {
    early_error(rq, MHD_HTTP_REQUEST_TIMEOUT,
                "the request's headers took longer than %u s",
                s->cfg.request_timeout_s);
    return finish_request(rq);
  }
  if (s->cfg.tls != TLSDIR_OFF && check_peer(rq) == -1)
    return finish_request(rq);
  start_request(rq);

  /* A declared body too large to read through: reply now, and
   * libmicrohttpd closes the connection after the reply. */
  const char *cl = MHD_lookup_connection_value(
      rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl) {
    errno = 0;
    char *end;
    unsigned long long n = strtoull(cl, &end, 10);
    if (end != cl && (errno == ERANGE || n > s->cfg.drain_max)) {
      rq->too_large = true;
      return finish_request(rq);
    }
  }
  return MHD_YES;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url,
       const char *method, const char *version, const char *upload_data,
       size_t *upload_data_size, void **req_cls)
{
  struct httpsvc_req *rq = *req_cls;
  (void)version;

  if (rq == NULL)
    rq = *req_cls = request_begins(cls, url, conn);
  if (rq == NULL) {
    log_error(((struct httpsvc *)cls)->cfg.name, "calloc: request: %m");
    return MHD_NO;
  }
  if (!rq->started)
    return first_call(rq, url, method);
  if (*upload_data_size > 0) {
    if (past_deadline(rq)) {
      log_info(rq->s->cfg.name, "closing a connection whose request took longer than %u s",
               rq->s->cfg.request_timeout_s);
      return MHD_NO;
    }
    if (take_body(rq, upload_data, *upload_data_size) < 0)
      return MHD_NO;
    *upload_data_size = 0;
    return MHD_YES;
  }
  return finish_request(rq);
}

static void
completed(void *cls, struct MHD_Connection *conn, void **req_cls,
          enum MHD_RequestTerminationCode toe)
{
  struct httpsvc_req *rq = *req_cls;
  (void)cls;
  (void)conn;
  (void)toe;
  if (rq == NULL)
    return;
  free(rq->body);
  free(rq->param_buf);
  free(rq);
  *req_cls = NULL;
}

/* ---- for handlers -------------------------------------------------------------- */

const char *
httpsvc_method(const struct httpsvc_req *rq)
{
  return rq->method;
}

const char *
httpsvc_url(const struct httpsvc_req *rq)
{
  return rq->url;
}

const char *
httpsvc_param(const struct httpsvc_req *rq, unsigned i)
{
  return i < PARAMS_MAX ? rq->params[i] : NULL;
}

const char *
httpsvc_header(const struct httpsvc_req *rq, const char *name)
{
  return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *
httpsvc_query(const struct httpsvc_req *rq, const char *name)
{
  return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
httpsvc_peer_name(const struct httpsvc_req *rq)
{
  return rq->has_peer ? rq->peer : NULL;
}

bool
httpsvc_by_token2(const struct httpsvc_req *rq)
{
  return rq->by_token2;
}

bool
httpsvc_by_app(const struct httpsvc_req *rq)
{
  return rq->by_app;
}

bool
httpsvc_bearer(const struct httpsvc_req *rq, char *buf, size_t len)
{
  const char *h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_AUTHORIZATION);
  if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
    return false;
  h += 7;
  while (*h == ' ' || *h == '\t')
    h++;
  size_t n = strlen(h);
  while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
    n--;
  if (n == 0 || n >= len)
    return false;
  memcpy(buf, h, n);
  buf[n] = '\0';
  return true;
}

struct json_object *
httpsvc_body_json(struct httpsvc_req *rq, bool optional,
                  struct httpsvc_reply *rep)
{
  const struct httpsvc_config *cfg = &rq->s->cfg;
  if (rq->len == 0 && optional)
    return json_object_new_object();
  const char *ct = httpsvc_header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);
  if (rq->len > 0 && cfg->json_content_type && ct &&
      strncasecmp(ct, "application/json", 16) != 0) {
    char s[80];
    httpsvc_fail(rep, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, NULL,
                 "Content-Type '%s': expected application/json",
                 jsonutil_shown(ct, strlen(ct), s, sizeof s));
    return NULL;
  }
  char err[HTTPSVC_MESSAGE_MAX];
  struct json_object *o =
      jsonutil_parse(rq->body ? rq->body : "", rq->len, cfg->json_depth,
                     JSONUTIL_OBJECT, "body", err, sizeof err);
  if (o == NULL)
    httpsvc_fail(rep, MHD_HTTP_BAD_REQUEST, NULL, "%s", err);
  return o;
}

/* ---- start and stop --------------------------------------------------------------- */

/* Decodes %HH escapes in place, except %00 and %2F: those stay as they
 * are, so a NUL cannot cut a name short and an encoded '/' is part of a
 * (then invalid) name instead of a path separator. */
static size_t
unescape(void *cls, struct MHD_Connection *conn, char *s)
{
  char *w = s;
  (void)cls;
  (void)conn;
  for (const char *r = s; *r;) {
    int hi, lo;
    if (r[0] == '%' && (hi = digest_hex_value(r[1])) >= 0 &&
        (lo = digest_hex_value(r[2])) >= 0 && hi * 16 + lo != 0 &&
        hi * 16 + lo != '/') {
      *w++ = (char)(hi * 16 + lo);
      r += 3;
    } else {
      *w++ = *r++;
    }
  }
  *w = '\0';
  return (size_t)(w - s);
}

/* libmicrohttpd's messages, into the log (cls: the service's name). */
static void mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
    msg[--n] = '\0';
  log_warn(cls, "libmicrohttpd: %s", msg);
}

struct httpsvc *
httpsvc_start(const struct httpsvc_config *cfg)
{
  struct httpsvc *s = calloc(1, sizeof *s);
  if (s == NULL) {
    log_error(cfg->name, "calloc: service: %m");
    return NULL;
  }
  s->cfg = *cfg;
  if (s->cfg.drain_max < s->cfg.body_max)
    s->cfg.drain_max = s->cfg.body_max;
  digest_sha256(cfg->token, strlen(cfg->token), s->digest);
  if (cfg->token2) {
    s->has_token2 = true;
    digest_sha256(cfg->token2, strlen(cfg->token2), s->digest2);
  }
  int fd = netaddr_listen_tcp(cfg->listen, cfg->name, &s->port);
  if (fd < 0) {
    free(s);
    return NULL;
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (cfg->tls != TLSDIR_OFF) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      log_error(cfg->name, "tls: this libmicrohttpd was built without TLS");
      free(s);
      return NULL;
    }
    flags |= MHD_USE_TLS;
  }
  flags |= cfg->threads == 0
               ? MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC
               : MHD_USE_EPOLL;
  struct MHD_OptionItem opts[20];
  size_t n = 0;
#define OPT(o, v, p) (opts[n++] = (struct MHD_OptionItem){ o, (intptr_t)(v), p })
  OPT(MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, (void *)cfg->name);
  OPT(MHD_OPTION_LISTEN_SOCKET, fd, NULL);
  OPT(MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL);
  OPT(MHD_OPTION_CONNECTION_TIMEOUT, cfg->timeout_s, NULL);
  OPT(MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed, s);
  OPT(MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)request_begins, s);
  OPT(MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape, NULL);
  if (cfg->threads > 0)
    OPT(MHD_OPTION_THREAD_POOL_SIZE, cfg->threads, NULL);
  if (cfg->per_ip_connections > 0)
    OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->per_ip_connections, NULL);
  if (cfg->connection_memory > 0)
    OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, cfg->connection_memory, NULL);
  if (cfg->tls != TLSDIR_OFF) {
    OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert);
    OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key);
    OPT(MHD_OPTION_HTTPS_MEM_TRUST, 0, (void *)cfg->tls_ca);
  }
  OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
  s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handle, s,
                            MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
  if (s->mhd == NULL) {
    log_error(cfg->name, "listen: '%s': libmicrohttpd failed to start",
              cfg->listen);
    free(s);
    return NULL;
  }
  return s;
}

unsigned
httpsvc_port(const struct httpsvc *s)
{
  return s->port;
}

void
httpsvc_stop(struct httpsvc *s)
{
  if (s == NULL)
    return;
  MHD_stop_daemon(s->mhd);
  free(s);
}
