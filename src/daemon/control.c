/* thunder — thunderd's control endpoint; see control.h.
 *
 * Threads: libmicrohttpd runs one thread per connection
 * (MHD_USE_THREAD_PER_CONNECTION), so an attach that blocks for seconds
 * while a manifest is fetched stalls only its own connection.  At most
 * CONTROL_CONNECTIONS_MAX connections at once; an idle one is closed after
 * CONTROL_IDLE_TIMEOUT seconds.  struct control is read-only once started.
 *
 * Life of a request: libmicrohttpd calls handle_request several times.
 *
 *   first call     allocate struct request; route the URL, check the token
 *                  and the method and remember the verdict (an error, or
 *                  "go").  Nothing is replied yet, except to a declared body
 *                  over CONTROL_DRAIN_MAX (413 at once; the connection is
 *                  then closed).
 *   body calls     a PUT that is still "go" appends to req->body up to
 *                  CONTROL_BODY_MAX; any other body, and whatever is over
 *                  the cap, is read and dropped, up to CONTROL_DRAIN_MAX in
 *                  all (beyond, the connection is closed without a reply).
 *   last call      reply: the remembered error, 413, or the op's result.
 *   completed      request_completed frees struct request.
 *
 * Replying only once the body is read keeps the connection in step, so a
 * client reads the error instead of a reset.  Every reply goes through
 * reply_json, which sets Content-Type: application/json.
 *
 * Routes: /v1/images[/NAME] (attach, detach, state), /v1/vms[/NAME] (VMs
 * on the node's libvirt pool) and /v1/node.  The two NAME routes share
 * the checks (methods GET, HEAD, PUT, DELETE; NAME by the image name
 * rule); each PUT body has its own fields (struct body_fields) and
 * checker (check_attach, check_vm).
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "netaddr.h"
#include "token.h"
#include "digest.h"
#include "log.h"
#include "manifest.h"

#define COMPONENT "control"

/* Connections at once, and seconds before an idle one is closed. */
#define CONTROL_CONNECTIONS_MAX 64
#define CONTROL_IDLE_TIMEOUT 30
/* Body bytes read (and dropped) from a request that gets an error, before
 * the connection is closed instead. */
#define CONTROL_DRAIN_MAX (1024 * 1024)
/* JSON nesting limit of request bodies. */
#define CONTROL_JSON_DEPTH 8
/* Token length limits (control_read_token) and the largest token file. */

#define IMAGES_PATH "/v1/images"
#define VMS_PATH "/v1/vms"
#define NODE_PATH "/v1/node"
#define CACHE_PATH "/v1/cache"
#define CACHE_GC_PATH "/v1/cache/gc"
#define ALLOW_GET "GET, HEAD"
#define ALLOW_ITEM "GET, HEAD, PUT, DELETE"
#define NAME_RULE "1-255 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'"

struct control {
  struct MHD_Daemon *mhd;
  struct control_ops ops;
  uint8_t token_digest[DIGEST_LEN]; /* SHA-256 of the token */
  unsigned port;
};

enum route {
  ROUTE_HEALTH,
  ROUTE_LIST,  /* /v1/images */
  ROUTE_IMAGE, /* /v1/images/NAME */
  ROUTE_VMS,   /* /v1/vms */
  ROUTE_VM,    /* /v1/vms/NAME */
  ROUTE_NODE,  /* /v1/node */
  ROUTE_CACHE, /* /v1/cache */
  ROUTE_CACHE_GC, /* /v1/cache/gc (POST) */
};

/* Per-request state, allocated on the first call. */
struct request {
  enum route route;
  const char *name;     /* ROUTE_IMAGE, ROUTE_VM: points into the URL */
  bool is_put;
  /* An error decided on the first call (status 0: none). */
  unsigned status;
  const char *code;
  const char *allow;    /* 405: the Allow header */
  const char *www_auth; /* 401: the WWW-Authenticate header */
  char message[192];
  /* The body of a PUT, while under CONTROL_BODY_MAX. */
  char *body;
  size_t len;
  bool too_large;
  size_t dropped;       /* body bytes read and dropped */
};

/* ---- replies ---------------------------------------------------------- */

/* The error code for a status when the op gives none. */
static const char *
default_code(unsigned status)
{
  switch (status) {
  case MHD_HTTP_BAD_REQUEST: return "invalid";
  case MHD_HTTP_UNAUTHORIZED: return "unauthorized";
  case MHD_HTTP_FORBIDDEN: return "forbidden";
  case MHD_HTTP_NOT_FOUND: return "not_found";
  case MHD_HTTP_METHOD_NOT_ALLOWED: return "method_not_allowed";
  case MHD_HTTP_CONFLICT: return "conflict";
  case MHD_HTTP_CONTENT_TOO_LARGE: return "too_large";
  case MHD_HTTP_NOT_IMPLEMENTED: return "not_implemented";
  case MHD_HTTP_BAD_GATEWAY: return "bad_gateway";
  case MHD_HTTP_SERVICE_UNAVAILABLE: return "unavailable";
  case MHD_HTTP_GATEWAY_TIMEOUT: return "gateway_timeout";
  default: return status >= 500 ? "internal" : "error";
  }
}

/* Sends status with body (borrowed; NULL means no body, only for 204) and
 * the optional Allow and WWW-Authenticate headers.  The one place that
 * queues a response. */
static enum MHD_Result
reply_json(struct MHD_Connection *conn, unsigned status,
           struct json_object *body, const char *allow, const char *www_auth)
{
  static const char oom[] =
      "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
  char *text = NULL;
  size_t len = 0;

  if (body) {
    const char *s = json_object_to_json_string_ext(
        body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (s && asprintf(&text, "%s\n", s) >= 0)
      len = strlen(text);
    else
      text = NULL;
  }
  struct MHD_Response *resp;
  if (text) {
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
      free(text);
  } else if (body || status != MHD_HTTP_NO_CONTENT) {
    status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    allow = www_auth = NULL;
    resp = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom,
                                           MHD_RESPMEM_PERSISTENT);
  } else {
    resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
  }
  if (resp == NULL) {
    log_error(COMPONENT, "MHD_create_response_from_buffer failed");
    return MHD_NO;
  }
  enum MHD_Result r = MHD_YES;
  if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                              "application/json") == MHD_NO ||
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                              "no-store") == MHD_NO ||
      (allow && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                        allow) == MHD_NO) ||
      (www_auth && MHD_add_response_header(
                       resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                       www_auth) == MHD_NO))
    r = MHD_NO;
  if (r == MHD_YES)
    r = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return r;
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

/* Replies with an error body; code NULL picks the status's default. */
static enum MHD_Result
reply_error(struct MHD_Connection *conn, unsigned status, const char *code,
            const char *message, const char *allow, const char *www_auth)
{
  CLEANUP_JSON_PUT struct json_object *body =
      error_body(code ? code : default_code(status), message);
  return reply_json(conn, status, body, allow, www_auth);
}

/* Records an error for the last call to send. */
static void
set_error(struct request *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_error(struct request *req, unsigned status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(req->message, sizeof req->message, fmt, ap);
  va_end(ap);
  req->status = status;
  req->code = default_code(status);
}

/* Copies s for a message: at most 64 bytes, non-printable bytes as '?'. */
static const char *
shown(const char *s, size_t len, char *buf, size_t buflen)
{
  size_t n = 0;
  for (size_t i = 0; i < len && n + 4 < buflen; i++, n++) {
    if (n == 64) {
      memcpy(buf + n, "...", 3);
      n += 3;
      break;
    }
    unsigned char c = (unsigned char)s[i];
    buf[n] = c >= 0x20 && c < 0x7f ? (char)c : '?';
  }
  buf[n] = '\0';
  return buf;
}

/* ---- the ops' results ---------------------------------------------------- */

/* Sends what an op returned: status with reply (taken), or the error. */
static enum MHD_Result
reply_op(struct MHD_Connection *conn, const char *what, int status,
         struct json_object *reply, const char *code, const char *err)
{
  bool ok = status >= 200 && status <= 299;
  if (!ok && (status < 400 || status > 599)) {
    log_error(COMPONENT, "%s: handler returned status %d", what, status);
    json_object_put(reply);
    return reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                       "internal error: bad status from the handler", NULL,
                       NULL);
  }
  if (!ok) {
    json_object_put(reply);
    if (status >= 500)
      log_warn(COMPONENT, "%s: %d: %s", what, status,
               err[0] ? err : "(no message)");
    return reply_error(conn, (unsigned)status, code,
                       err[0] ? err : "request failed", NULL, NULL);
  }
  if (status == MHD_HTTP_NO_CONTENT) {
    json_object_put(reply);
    return reply_json(conn, (unsigned)status, NULL, NULL, NULL);
  }
  if (reply == NULL)
    reply = json_object_new_object();
  enum MHD_Result r = reply_json(conn, (unsigned)status, reply, NULL, NULL);
  json_object_put(reply);
  return r;
}

/* ---- request bodies ------------------------------------------------- */

/* The top-level fields a body may have. */
struct body_fields {
  const char *const *names;
  size_t n;              /* at most BODY_FIELDS_MAX */
  const char *expected;  /* for messages: "expected version and upstreams" */
};

#define BODY_FIELDS_MAX 8
#define COUNT(a) (sizeof (a) / sizeof (a)[0])

static const char *const attach_names[] = { "version", "upstreams" };
static const struct body_fields attach_fields = {
  attach_names, COUNT(attach_names), "expected version and upstreams",
};

static const char *const vm_names[] = {
  "image", "vcpus", "memory_mib", "disk_gib", "accel",
};
static const struct body_fields vm_fields = {
  vm_names, COUNT(vm_names),
  "expected image, vcpus, memory_mib, disk_gib and accel",
};

/* Checks the top-level keys of buf, a JSON object json-c has accepted:
 * each one of fields, none twice (json-c keeps the last of two silently).
 * A string at depth 1 followed by ':' is a key; keys are decoded with
 * json-c, so escapes are handled. */
static int
check_keys(const char *buf, size_t len, const struct body_fields *fields,
           char *err, size_t errlen)
{
  bool seen[BODY_FIELDS_MAX] = { false };
  int depth = 0;

  for (size_t i = 0; i < len; i++) {
    char c = buf[i];
    if (c == '{' || c == '[') {
      depth++;
      continue;
    }
    if (c == '}' || c == ']') {
      depth--;
      continue;
    }
    if (c != '"')
      continue;
    size_t start = i;
    for (i++; i < len && buf[i] != '"'; i++)
      if (buf[i] == '\\')
        i++;
    size_t end = i + 1; /* past the closing quote */
    if (depth != 1)
      continue;
    size_t j = end;
    while (j < len && (buf[j] == ' ' || buf[j] == '\t' || buf[j] == '\n' ||
                       buf[j] == '\r'))
      j++;
    if (j >= len || buf[j] != ':')
      continue;

    struct json_tokener *tok = json_tokener_new_ex(1);
    if (tok == NULL) {
      snprintf(err, errlen, "body: out of memory");
      return -1;
    }
    CLEANUP_JSON_PUT struct json_object *key =
        json_tokener_parse_ex(tok, buf + start, (int)(end - start));
    json_tokener_free(tok);
    if (key == NULL || !json_object_is_type(key, json_type_string)) {
      snprintf(err, errlen, "body: bad key at offset %zu", start);
      return -1;
    }
    const char *k = json_object_get_string(key);
    size_t klen = (size_t)json_object_get_string_len(key);
    int idx = -1;
    for (size_t f = 0; f < fields->n; f++)
      if (strlen(fields->names[f]) == klen &&
          memcmp(fields->names[f], k, klen) == 0)
        idx = (int)f;
    if (idx < 0) {
      char s[80];
      snprintf(err, errlen, "field '%s': unknown field; %s",
               shown(k, klen, s, sizeof s), fields->expected);
      return -1;
    }
    if (seen[idx]) {
      snprintf(err, errlen, "field '%s': appears more than once",
               fields->names[idx]);
      return -1;
    }
    seen[idx] = true;
  }
  return 0;
}

/* Parses body[0..len) strictly (nesting at most CONTROL_JSON_DEPTH) into a
 * JSON object with only the given fields; NULL with a message in err. */
static struct json_object *
parse_body(const char *body, size_t len, const struct body_fields *fields,
           char *err, size_t errlen)
{
  if (len == 0) {
    snprintf(err, errlen, "body: empty; expected a JSON object");
    return NULL;
  }
  const char *nul = memchr(body, '\0', len);
  if (nul) {
    snprintf(err, errlen, "body: not JSON: NUL byte at offset %td",
             nul - body);
    return NULL;
  }
  struct json_tokener *tok = json_tokener_new_ex(CONTROL_JSON_DEPTH);
  if (tok == NULL) {
    snprintf(err, errlen, "body: out of memory");
    return NULL;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  /* len <= CONTROL_BODY_MAX, well within json-c's int. */
  struct json_object *root = json_tokener_parse_ex(tok, body, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (root == NULL && jerr == json_tokener_continue) {
    /* A top-level scalar is only complete at a terminator. */
    root = json_tokener_parse_ex(tok, "", 1);
    jerr = json_tokener_get_error(tok);
    end = len;
  }
  json_tokener_free(tok);

  if (root == NULL) {
    if (jerr == json_tokener_success)
      snprintf(err, errlen, "body: expected a JSON object, not null");
    else if (jerr == json_tokener_error_depth)
      snprintf(err, errlen, "body: nested deeper than %d levels",
               CONTROL_JSON_DEPTH);
    else if (jerr == json_tokener_continue ||
             jerr == json_tokener_error_parse_eof)
      snprintf(err, errlen, "body: not JSON: ends early at offset %zu", len);
    else
      snprintf(err, errlen, "body: not JSON: %s at offset %zu",
               json_tokener_error_desc(jerr), end);
    return NULL;
  }
  for (size_t i = end; i < len; i++) {
    if (body[i] != ' ' && body[i] != '\t' && body[i] != '\n' &&
        body[i] != '\r') {
      snprintf(err, errlen, "body: not JSON: trailing data at offset %zu", i);
      json_object_put(root);
      return NULL;
    }
  }
  if (!json_object_is_type(root, json_type_object)) {
    snprintf(err, errlen, "body: expected a JSON object, not %s",
             json_type_to_name(json_object_get_type(root)));
    json_object_put(root);
    return NULL;
  }
  if (check_keys(body, end, fields, err, errlen) < 0) {
    json_object_put(root);
    return NULL;
  }
  return root;
}

/* Checks one upstream URI; field names it ("upstreams[2]"). */
static int
check_upstream(const char *field, const char *uri, size_t len, char *err,
               size_t errlen)
{
  static const char form[] =
      "expected nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH";
  char s[80];

  if (len > CONTROL_URI_MAX) {
    snprintf(err, errlen, "field '%s': %zu bytes; at most %d", field, len,
             CONTROL_URI_MAX);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)uri[i];
    if (c <= 0x20 || c >= 0x7f) {
      snprintf(err, errlen, "field '%s': byte 0x%02x at offset %zu; an NBD URI is printable ASCII without spaces (percent-encode the rest)",
               field, c, i);
      return -1;
    }
  }
  if (strncmp(uri, "nbd://", 6) == 0) {
    if (uri[6] == '\0' || uri[6] == '/' || uri[6] == '?') {
      snprintf(err, errlen, "field '%s': '%s' has no host; %s", field,
               shown(uri, len, s, sizeof s), form);
      return -1;
    }
    return 0;
  }
  if (strncmp(uri, "nbd+unix://", 11) == 0) {
    const char *q = strchr(uri, '?');
    if (q == NULL || (strncmp(q + 1, "socket=", 7) != 0 &&
                      strstr(q, "&socket=") == NULL)) {
      snprintf(err, errlen, "field '%s': '%s' has no socket=PATH; %s", field,
               shown(uri, len, s, sizeof s), form);
      return -1;
    }
    return 0;
  }
  snprintf(err, errlen, "field '%s': '%s' is not an NBD URI; %s", field,
           shown(uri, len, s, sizeof s), form);
  return -1;
}

/* Validates the attach body root into *out (pointers into root and ups,
 * which must outlive *out).  -1 with a message naming the field. */
static int
check_attach(struct json_object *root, const char *name,
             const char *ups[CONTROL_UPSTREAMS_MAX],
             struct control_attach *out, char *err, size_t errlen)
{
  struct json_object *v, *a;

  if (!json_object_object_get_ex(root, "version", &v)) {
    snprintf(err, errlen, "field 'version': missing; expected the image's version (64 lowercase hex digits)");
    return -1;
  }
  if (!json_object_is_type(v, json_type_string)) {
    snprintf(err, errlen, "field 'version': expected a string of 64 lowercase hex digits, not %s",
             json_type_to_name(json_object_get_type(v)));
    return -1;
  }
  const char *version = json_object_get_string(v);
  size_t vlen = (size_t)json_object_get_string_len(v);
  bool hex = vlen == DIGEST_HEX_LEN;
  for (size_t i = 0; hex && i < vlen; i++)
    hex = (version[i] >= '0' && version[i] <= '9') ||
          (version[i] >= 'a' && version[i] <= 'f');
  if (!hex) {
    snprintf(err, errlen, "field 'version': expected 64 lowercase hex digits (the manifest's SHA-256), got %zu characters",
             vlen);
    return -1;
  }

  if (!json_object_object_get_ex(root, "upstreams", &a)) {
    snprintf(err, errlen, "field 'upstreams': missing; expected 1 to %d NBD URIs, parent first, origin last",
             CONTROL_UPSTREAMS_MAX);
    return -1;
  }
  if (!json_object_is_type(a, json_type_array)) {
    snprintf(err, errlen, "field 'upstreams': expected an array of NBD URIs, not %s",
             json_type_to_name(json_object_get_type(a)));
    return -1;
  }
  size_t n = json_object_array_length(a);
  if (n == 0) {
    snprintf(err, errlen, "field 'upstreams': empty; expected 1 to %d NBD URIs, parent first, origin last",
             CONTROL_UPSTREAMS_MAX);
    return -1;
  }
  if (n > CONTROL_UPSTREAMS_MAX) {
    snprintf(err, errlen, "field 'upstreams': %zu entries; at most %d",
             n, CONTROL_UPSTREAMS_MAX);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    struct json_object *u = json_object_array_get_idx(a, i);
    char field[32];
    snprintf(field, sizeof field, "upstreams[%zu]", i);
    if (!json_object_is_type(u, json_type_string)) {
      snprintf(err, errlen, "field '%s': expected a string (an NBD URI), not %s",
               field, json_type_to_name(json_object_get_type(u)));
      return -1;
    }
    const char *uri = json_object_get_string(u);
    if (check_upstream(field, uri, (size_t)json_object_get_string_len(u),
                       err, errlen) < 0)
      return -1;
    for (size_t j = 0; j < i; j++) {
      if (strcmp(ups[j], uri) == 0) {
        snprintf(err, errlen, "field '%s': same as upstreams[%zu]", field, j);
        return -1;
      }
    }
    ups[i] = uri;
  }

  out->name = name;
  out->version = version;
  out->upstreams = ups;
  out->nupstreams = n;
  return 0;
}

/* Reads the integer field of root into *out: 0, 1 if absent and optional,
 * -1 with a message (missing, not an integer, out of [min, max]).  A
 * number with a zero fraction (2.0) is an integer, as in JSON Schema. */
static int
get_uint_field(struct json_object *root, const char *field, bool optional,
               unsigned min, unsigned max, unsigned *out, char *err,
               size_t errlen)
{
  struct json_object *v;
  if (!json_object_object_get_ex(root, field, &v)) {
    if (optional)
      return 1;
    snprintf(err, errlen, "field '%s': missing; expected an integer from %u to %u",
             field, min, max);
    return -1;
  }
  enum json_type t = json_object_get_type(v);
  bool in_range;
  if (t == json_type_int) {
    /* A number beyond int64 saturates, so stays out of range. */
    int64_t i = json_object_get_int64(v);
    in_range = i >= (int64_t)min && i <= (int64_t)max;
    if (in_range)
      *out = (unsigned)i;
  } else if (t == json_type_double) {
    double d = json_object_get_double(v);
    if (!(d >= -1e18 && d <= 1e18) || d != (double)(int64_t)d) {
      char s[80];
      const char *text = json_object_to_json_string(v);
      snprintf(err, errlen, "field '%s': %s is not an integer; expected an integer from %u to %u",
               field, shown(text, strlen(text), s, sizeof s), min, max);
      return -1;
    }
    in_range = d >= (double)min && d <= (double)max;
    if (in_range)
      *out = (unsigned)d;
  } else {
    snprintf(err, errlen, "field '%s': expected an integer from %u to %u, not %s",
             field, min, max, json_type_to_name(t));
    return -1;
  }
  if (!in_range) {
    char s[80];
    const char *text = json_object_to_json_string(v);
    snprintf(err, errlen, "field '%s': %s is out of range; expected %u to %u",
             field, shown(text, strlen(text), s, sizeof s), min, max);
    return -1;
  }
  return 0;
}

/* Validates the VM body root into *out (pointers into root, which must
 * outlive *out).  -1 with a message naming the field. */
static int
check_vm(struct json_object *root, const char *name, struct control_vm *out,
         char *err, size_t errlen)
{
  struct json_object *v;
  char s[80];

  memset(out, 0, sizeof *out);
  out->name = name;
  if (!json_object_object_get_ex(root, "image", &v)) {
    snprintf(err, errlen, "field 'image': missing; expected the name of an image attached on this node");
    return -1;
  }
  if (!json_object_is_type(v, json_type_string)) {
    snprintf(err, errlen, "field 'image': expected a string (an image name), not %s",
             json_type_to_name(json_object_get_type(v)));
    return -1;
  }
  out->image = json_object_get_string(v);
  size_t ilen = (size_t)json_object_get_string_len(v);
  if (ilen != strlen(out->image) || !manifest_name_valid(out->image)) {
    snprintf(err, errlen, "field 'image': '%s' is not a valid image name: use " NAME_RULE,
             shown(out->image, ilen, s, sizeof s));
    return -1;
  }
  if (get_uint_field(root, "vcpus", false, 1, CONTROL_VCPUS_MAX, &out->vcpus,
                     err, errlen) < 0 ||
      get_uint_field(root, "memory_mib", false, CONTROL_MEMORY_MIN_MIB,
                     CONTROL_MEMORY_MAX_MIB, &out->memory_mib, err,
                     errlen) < 0 ||
      get_uint_field(root, "disk_gib", true, 1, CONTROL_DISK_MAX_GIB,
                     &out->disk_gib, err, errlen) < 0)
    return -1;

  out->accel = CONTROL_ACCEL_AUTO;
  if (json_object_object_get_ex(root, "accel", &v)) {
    if (!json_object_is_type(v, json_type_string)) {
      snprintf(err, errlen, "field 'accel': expected \"auto\", \"kvm\" or \"tcg\", not %s",
               json_type_to_name(json_object_get_type(v)));
      return -1;
    }
    const char *a = json_object_get_string(v);
    size_t alen = (size_t)json_object_get_string_len(v);
    if (alen == 4 && strcmp(a, "auto") == 0)
      out->accel = CONTROL_ACCEL_AUTO;
    else if (alen == 3 && strcmp(a, "kvm") == 0)
      out->accel = CONTROL_ACCEL_KVM;
    else if (alen == 3 && strcmp(a, "tcg") == 0)
      out->accel = CONTROL_ACCEL_TCG;
    else {
      snprintf(err, errlen, "field 'accel': '%s' is not one of auto, kvm, tcg",
               shown(a, alen, s, sizeof s));
      return -1;
    }
  }
  return 0;
}

/* ---- routing and the request cycle ---------------------------------------- */

/* True if the request carries "Authorization: Bearer TOKEN" with the right
 * token.  Both sides are hashed and the digests compared in full, so the
 * time taken says nothing about the token. */
static bool
token_ok(const struct control *c, struct MHD_Connection *conn, bool *given)
{
  const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_AUTHORIZATION);
  *given = h != NULL;
  return token_bearer_ok(h, c->token_digest);
}

/* The NAME of a URL "PREFIX/NAME" (prefix with its final '/'; NAME not
 * empty, without '/'), or NULL. */
static const char *
name_of(const char *url, const char *prefix)
{
  size_t n = strlen(prefix);
  if (strncmp(url, prefix, n) != 0)
    return NULL;
  const char *name = url + n;
  if (name[0] == '\0' || strchr(name, '/') != NULL)
    return NULL;
  return name;
}

/* The first call: routes the request and records any error. */
static void
start_request(const struct control *c, struct MHD_Connection *conn,
              const char *url, const char *method, struct request *req)
{
  bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
             strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  char s[80];

  if (strcmp(url, "/healthz") == 0) {
    req->route = ROUTE_HEALTH;
    if (!get) {
      set_error(req, MHD_HTTP_METHOD_NOT_ALLOWED,
                "method %s not allowed on /healthz; allowed: " ALLOW_GET,
                shown(method, strlen(method), s, sizeof s));
      req->allow = ALLOW_GET;
    }
    return;
  }
  if (strcmp(url, IMAGES_PATH) == 0) {
    req->route = ROUTE_LIST;
  } else if ((req->name = name_of(url, IMAGES_PATH "/")) != NULL) {
    req->route = ROUTE_IMAGE;
  } else if (strcmp(url, VMS_PATH) == 0) {
    req->route = ROUTE_VMS;
  } else if ((req->name = name_of(url, VMS_PATH "/")) != NULL) {
    req->route = ROUTE_VM;
  } else if (strcmp(url, NODE_PATH) == 0) {
    req->route = ROUTE_NODE;
  } else if (strcmp(url, CACHE_PATH) == 0) {
    req->route = ROUTE_CACHE;
  } else if (strcmp(url, CACHE_GC_PATH) == 0) {
    req->route = ROUTE_CACHE_GC;
  } else {
    set_error(req, MHD_HTTP_NOT_FOUND,
              "no such path: %s; see /v1/images[/NAME], /v1/vms[/NAME], /v1/node and /v1/cache[/gc]",
              shown(url, strlen(url), s, sizeof s));
    return;
  }

  bool given;
  if (!token_ok(c, conn, &given)) {
    if (given) {
      set_error(req, MHD_HTTP_UNAUTHORIZED, "wrong bearer token");
      req->www_auth = "Bearer realm=\"thunderd\", error=\"invalid_token\"";
    } else {
      set_error(req, MHD_HTTP_UNAUTHORIZED,
                "missing 'Authorization: Bearer TOKEN' header");
      req->www_auth = "Bearer realm=\"thunderd\"";
    }
    return;
  }

  req->is_put = strcmp(method, MHD_HTTP_METHOD_PUT) == 0;
  bool del = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
  bool item = req->route == ROUTE_IMAGE || req->route == ROUTE_VM;
  const char *path = req->route == ROUTE_LIST    ? IMAGES_PATH
                     : req->route == ROUTE_IMAGE ? IMAGES_PATH "/NAME"
                     : req->route == ROUTE_VMS   ? VMS_PATH
                     : req->route == ROUTE_VM    ? VMS_PATH "/NAME"
                     : req->route == ROUTE_CACHE ? CACHE_PATH
                                                 : NODE_PATH;
  if (req->route == ROUTE_CACHE_GC) {
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
      set_error(req, MHD_HTTP_METHOD_NOT_ALLOWED,
                "method %s not allowed on " CACHE_GC_PATH "; allowed: POST",
                shown(method, strlen(method), s, sizeof s));
      req->allow = "POST";
    }
    req->is_put = false;
    return;
  }
  if (!item && !get) {
    set_error(req, MHD_HTTP_METHOD_NOT_ALLOWED,
              "method %s not allowed on %s; allowed: " ALLOW_GET,
              shown(method, strlen(method), s, sizeof s), path);
    req->allow = ALLOW_GET;
    req->is_put = false;
    return;
  }
  if (item && !get && !req->is_put && !del) {
    set_error(req, MHD_HTTP_METHOD_NOT_ALLOWED,
              "method %s not allowed on %s; allowed: " ALLOW_ITEM,
              shown(method, strlen(method), s, sizeof s), path);
    req->allow = ALLOW_ITEM;
    req->is_put = false;
    return;
  }
  if (item && !manifest_name_valid(req->name)) {
    set_error(req, MHD_HTTP_BAD_REQUEST, "%s name '%s' is not valid: use " NAME_RULE,
              req->route == ROUTE_IMAGE ? "image" : "VM",
              shown(req->name, strlen(req->name), s, sizeof s));
    req->is_put = false;
  }
}

/* Takes in one piece of the body.  -1 to close the connection. */
static int
take_body(struct request *req, const char *data, size_t size)
{
  if (req->is_put && req->status == 0 && !req->too_large) {
    if (req->len + size <= CONTROL_BODY_MAX) {
      if (req->body == NULL &&
          (req->body = malloc(CONTROL_BODY_MAX)) == NULL) {
        log_error(COMPONENT, "malloc: request body: %m");
        return -1;
      }
      memcpy(req->body + req->len, data, size);
      req->len += size;
      return 0;
    }
    req->too_large = true;
    req->dropped = req->len;
    free(req->body);
    req->body = NULL;
    req->len = 0;
  }
  req->dropped += size;
  if (req->dropped > CONTROL_DRAIN_MAX) {
    log_info(COMPONENT, "closing a connection whose request body passed %d bytes",
             CONTROL_DRAIN_MAX);
    return -1;
  }
  if (req->dropped > CONTROL_BODY_MAX)
    req->too_large = true;
  return 0;
}

/* The last call of a /v1/vms/NAME request that passed every check: does
 * what was asked and replies.  u is the URL as shown in log lines. */
static enum MHD_Result
finish_vm(struct control *c, struct MHD_Connection *conn, const char *method,
          const char *u, struct request *req)
{
  char err[512] = "";
  const char *code = NULL;
  struct json_object *reply = NULL;
  char what[320];
  int status;

  snprintf(what, sizeof what, "%s VM %s", method, req->name);
  if (req->is_put) {
    CLEANUP_JSON_PUT struct json_object *root =
        parse_body(req->body, req->len, &vm_fields, err, sizeof err);
    struct control_vm vm;
    if (root == NULL || check_vm(root, req->name, &vm, err, sizeof err) < 0) {
      log_debug(COMPONENT, "%s %s: 400 %s", method, u, err);
      return reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, err, NULL, NULL);
    }
    if (c->ops.vm_put == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "VMs are not supported here", NULL, NULL);
    status = c->ops.vm_put(c->ops.opaque, &vm, &reply, &code, err, sizeof err);
  } else if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) {
    if (c->ops.vm_delete == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "VMs are not supported here", NULL, NULL);
    status = c->ops.vm_delete(c->ops.opaque, req->name, &reply, &code, err,
                              sizeof err);
  } else {
    if (c->ops.vm_get == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "VMs are not supported here", NULL, NULL);
    status = c->ops.vm_get(c->ops.opaque, req->name, &reply, &code, err,
                           sizeof err);
  }
  log_debug(COMPONENT, "%s %s: %d", method, u, status);
  return reply_op(conn, what, status, reply, code, err);
}

/* The last call: does what was asked and replies. */
static enum MHD_Result
finish_request(struct control *c, struct MHD_Connection *conn,
               const char *method, const char *url, struct request *req)
{
  char err[512] = "";
  const char *code = NULL;
  struct json_object *reply = NULL;
  char what[320];
  int status;
  char u[80]; /* the URL, for log lines */

  shown(url, strlen(url), u, sizeof u);

  if (req->status == MHD_HTTP_UNAUTHORIZED) {
    char h[NI_MAXHOST] = "?";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr)
      getnameinfo(ci->client_addr,
                  ci->client_addr->sa_family == AF_INET6
                      ? sizeof(struct sockaddr_in6)
                      : sizeof(struct sockaddr_in),
                  h, sizeof h, NULL, 0, NI_NUMERICHOST);
    log_info(COMPONENT, "%s %s from %s: 401 %s", method, u, h, req->message);
  } else if (req->status != 0) {
    log_debug(COMPONENT, "%s %s: %u %s", method, u, req->status,
              req->message);
  }
  if (req->status != 0) {
    return reply_error(conn, req->status, req->code, req->message,
                       req->allow, req->www_auth);
  }
  if (req->too_large) {
    char msg[96];
    snprintf(msg, sizeof msg, "body: larger than %d bytes", CONTROL_BODY_MAX);
    log_debug(COMPONENT, "%s %s: 413", method, u);
    return reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL, msg, NULL, NULL);
  }

  switch (req->route) {
  case ROUTE_HEALTH: {
    CLEANUP_JSON_PUT struct json_object *ok = json_object_new_object();
    if (ok && json_object_object_add(ok, "status", json_object_new_string("ok"))) {
      json_object_put(ok);
      ok = NULL;
    }
    return reply_json(conn, MHD_HTTP_OK, ok, NULL, NULL);
  }
  case ROUTE_LIST:
    if (c->ops.list == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "listing images is not supported here", NULL, NULL);
    status = c->ops.list(c->ops.opaque, &reply, &code, err, sizeof err);
    log_debug(COMPONENT, "%s %s: %d", method, u, status);
    return reply_op(conn, "list images", status, reply, code, err);
  case ROUTE_VMS:
    if (c->ops.vm_list == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "VMs are not supported here", NULL, NULL);
    status = c->ops.vm_list(c->ops.opaque, &reply, &code, err, sizeof err);
    log_debug(COMPONENT, "%s %s: %d", method, u, status);
    return reply_op(conn, "list VMs", status, reply, code, err);
  case ROUTE_NODE:
    if (c->ops.node_info == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "node information is not supported here", NULL,
                         NULL);
    status = c->ops.node_info(c->ops.opaque, &reply, &code, err, sizeof err);
    log_debug(COMPONENT, "%s %s: %d", method, u, status);
    return reply_op(conn, "node information", status, reply, code, err);
  case ROUTE_CACHE:
  case ROUTE_CACHE_GC: {
    bool gc = req->route == ROUTE_CACHE_GC;
    int (*op)(void *, struct json_object **, const char **, char *, size_t) =
        gc ? c->ops.cache_gc : c->ops.cache_get;
    if (op == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "the cache is not supported here", NULL, NULL);
    status = op(c->ops.opaque, &reply, &code, err, sizeof err);
    log_debug(COMPONENT, "%s %s: %d", method, u, status);
    return reply_op(conn, gc ? "cache gc" : "cache", status, reply, code, err);
  }
  case ROUTE_VM:
    return finish_vm(c, conn, method, u, req);
  case ROUTE_IMAGE:
    break;
  }

  snprintf(what, sizeof what, "%s %s", method, req->name);
  if (req->is_put) {
    CLEANUP_JSON_PUT struct json_object *root =
        parse_body(req->body, req->len, &attach_fields, err, sizeof err);
    const char *ups[CONTROL_UPSTREAMS_MAX];
    struct control_attach at;
    if (root == NULL || check_attach(root, req->name, ups, &at, err,
                                     sizeof err) < 0) {
      log_debug(COMPONENT, "%s %s: 400 %s", method, u, err);
      return reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, err, NULL, NULL);
    }
    if (c->ops.attach == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "attaching images is not supported here", NULL, NULL);
    status = c->ops.attach(c->ops.opaque, &at, &reply, &code, err, sizeof err);
  } else if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) {
    if (c->ops.detach == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "detaching images is not supported here", NULL, NULL);
    status = c->ops.detach(c->ops.opaque, req->name, &reply, &code, err,
                           sizeof err);
  } else {
    if (c->ops.get == NULL)
      return reply_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
                         "image state is not supported here", NULL, NULL);
    status = c->ops.get(c->ops.opaque, req->name, &reply, &code, err,
                        sizeof err);
  }
  log_debug(COMPONENT, "%s %s: %d", method, u, status);
  return reply_op(conn, what, status, reply, code, err);
}

static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
               const char *method, const char *version,
               const char *upload_data, size_t *upload_data_size,
               void **req_cls)
{
  struct control *c = cls;
  struct request *req = *req_cls;

  if (req == NULL) {
    req = calloc(1, sizeof *req);
    if (req == NULL) {
      log_error(COMPONENT, "calloc: request: %m");
      return MHD_NO;
    }
    *req_cls = req;
    start_request(c, conn, url, method, req);

    /* A declared body too large to read through: reply now, and
     * libmicrohttpd closes the connection after the reply. */
    const char *cl = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
      errno = 0;
      char *end;
      unsigned long long n = strtoull(cl, &end, 10);
      if ((errno == ERANGE || n > CONTROL_DRAIN_MAX) && end != cl) {
        req->too_large = true;
        return finish_request(c, conn, method, url, req);
      }
    }
    return MHD_YES;
  }

  if (*upload_data_size > 0) {
    if (take_body(req, upload_data, *upload_data_size) < 0)
      return MHD_NO;
    *upload_data_size = 0;
    return MHD_YES;
  }
  return finish_request(c, conn, method, url, req);
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                  enum MHD_RequestTerminationCode toe)
{
  struct request *req = *req_cls;
  if (req == NULL)
    return;
  free(req->body);
  free(req);
  *req_cls = NULL;
}

static int
hex_value(char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* Decodes %HH escapes in the URL in place, except %00 and %2F: those stay
 * as they are, so a NUL cannot cut a name short and an encoded '/' is
 * part of a (then invalid) name instead of a path separator. */
static size_t
unescape(void *cls, struct MHD_Connection *conn, char *s)
{
  char *w = s;
  for (const char *r = s; *r;) {
    int hi, lo;
    if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 &&
        (lo = hex_value(r[2])) >= 0 && hi * 16 + lo != 0 &&
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

/* libmicrohttpd's messages, into the log. */
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
  log_warn(COMPONENT, "libmicrohttpd: %s", msg);
}

/* ---- the listening socket --------------------------------------------- */

/* Binds and listens on spec; returns the socket and sets *port_out, or -1
 * with a logged error.  With no host, the IPv6 wildcard (dual stack) is
 * tried first, then IPv4's. */
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
  digest_sha256(token, tlen, c->token_digest);

  int fd = netaddr_listen_tcp(listen_spec, COMPONENT, &c->port);
  if (fd < 0) {
    free(c);
    return NULL;
  }
  /* From here libmicrohttpd owns fd: MHD_stop_daemon closes it.  If the
   * start fails part way it may or may not have closed it already, so it
   * is left alone rather than risk closing a reused descriptor. */
  c->mhd = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
          MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG,
      0, NULL, NULL, handle_request, c,
      MHD_OPTION_EXTERNAL_LOGGER, mhd_log, (void *)NULL,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONTROL_CONNECTIONS_MAX,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONTROL_IDLE_TIMEOUT,
      MHD_OPTION_NOTIFY_COMPLETED, request_completed, (void *)c,
      MHD_OPTION_UNESCAPE_CALLBACK, unescape, (void *)NULL,
      MHD_OPTION_END);
  if (c->mhd == NULL) {
    log_error(COMPONENT, "listen: '%s': libmicrohttpd failed to start",
              listen_spec);
    free(c);
    return NULL;
  }
  return c;
}

unsigned
control_port(const struct control *c)
{
  return c->port;
}

void
control_free(struct control *c)
{
  if (c == NULL)
    return;
  MHD_stop_daemon(c->mhd);
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
