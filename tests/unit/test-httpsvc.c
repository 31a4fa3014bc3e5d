/* thunder — unit tests of the JSON-over-HTTP service core
 * (common/httpsvc.h) and the JSON helpers (common/jsonutil.h).
 *
 * The suite starts a service on 127.0.0.1:0 with a small route table and
 * drives it with libcurl over the real socket: routing (404, 405 with
 * Allow, path parameters), the two tokens (401 with WWW-Authenticate),
 * body limits (413, also chunked), strict JSON (duplicate keys, depth,
 * trailing data, 415), and that every error is the service's JSON
 * envelope with its codes.  The jsonutil getters are tested directly for
 * the field names in their messages.
 *
 * HTTPS: a fleet CA and a second CA made with common/pki.h in a temporary
 * directory; a service with tls on (a thread pool, as thunder-api) and one
 * with tls require (a thread per connection, as thunderd's control
 * endpoint).  The right CA verifies, a wrong one fails the handshake, a
 * client certificate's CN is the peer's name, one of another CA is
 * refused (403), and require refuses a client without one (403).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit-run.h"
#include "httpsvc.h"
#include "jsonutil.h"
#include "pki.h"

#define TOKEN "unit-test-token-0123456789"
#define TOKEN2 "unit-test-second-token-abcdef"
#define BODY_MAX 1024
#define DEPTH 4

static struct httpsvc *t_svc;
static char t_base[64];
static unsigned t_calls;

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
  case 413: return "too_large";
  case 415: return "unsupported_media_type";
  default: return "internal";
  }
}

/* POST /v1/echo: the body back; "fail" in it: 409 with a code. */
static void
echo(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  t_calls++;
  struct json_object *body = httpsvc_body_json(rq, false, rep);
  if (body == NULL)
    return;
  if (json_object_object_get_ex(body, "fail", NULL)) {
    json_object_put(body);
    httpsvc_fail(rep, 409, "custom", "asked to fail");
    return;
  }
  rep->status = 200;
  rep->json = body;
}

/* GET /v1/things/{ID}/sub: {"id": ID, "by2": token2?}. */
static void
thing(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  t_calls++;
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "id",
                         json_object_new_string(httpsvc_param(rq, 0)));
  json_object_object_add(rep->json, "by2",
                         json_object_new_boolean(httpsvc_by_token2(rq)));
}

/* GET /v1/app: {"app": whether the handler must check the token, "bearer":
 * the token it got}; the handler accepts "app-token-0123456789" only. */
static void
app_route(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  t_calls++;
  char bearer[300] = "";
  bool got = httpsvc_bearer(rq, bearer, sizeof bearer);
  if (httpsvc_by_app(rq) && strcmp(bearer, "app-token-0123456789") != 0) {
    httpsvc_fail(rep, 403, NULL, "not the app's token");
    return;
  }
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "app",
                         json_object_new_boolean(httpsvc_by_app(rq)));
  json_object_object_add(rep->json, "bearer",
                         got ? json_object_new_string(bearer) : NULL);
}

static void
health(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  rep->status = 200;
}

/* GET /whoami: {"peer": the client certificate's CN or null}. */
static void
whoami(void *app, struct httpsvc_req *rq, struct httpsvc_reply *rep)
{
  const char *peer = httpsvc_peer_name(rq);
  rep->status = 200;
  rep->json = json_object_new_object();
  json_object_object_add(rep->json, "peer",
                         peer ? json_object_new_string(peer) : NULL);
}

static const struct httpsvc_route routes[] = {
  { "GET", "/healthz", HTTPSVC_AUTH_NONE, false, health },
  { "GET", "/whoami", HTTPSVC_AUTH_NONE, false, whoami },
  { "POST", "/v1/echo", HTTPSVC_AUTH_TOKEN, true, echo },
  { "GET", "/v1/things/{ID}/sub", HTTPSVC_AUTH_EITHER, false, thing },
  { "DELETE", "/v1/things/{ID}/sub", HTTPSVC_AUTH_TOKEN, false, thing },
  { "GET", "/v1/app", HTTPSVC_AUTH_APP, false, app_route },
};

/* ---- HTTP over libcurl ------------------------------------------------ */

struct reply {
  long status;
  char body[8192];
  size_t len;
  char allow[128];
  char www_auth[256];
  char content_type[128];
};

static size_t
on_body(char *data, size_t size, size_t n, void *opaque)
{
  struct reply *r = opaque;
  size_t len = size * n;
  size_t keep = len < sizeof r->body - 1 - r->len ? len
                                                  : sizeof r->body - 1 - r->len;
  memcpy(r->body + r->len, data, keep);
  r->len += keep;
  r->body[r->len] = '\0';
  return len;
}

static void
header_value(const char *line, size_t len, const char *name, char *out,
             size_t outlen)
{
  size_t n = strlen(name);
  if (len <= n || strncasecmp(line, name, n) != 0)
    return;
  const char *v = line + n;
  size_t vl = len - n;
  while (vl > 0 && (*v == ' '))
    v++, vl--;
  while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
    vl--;
  snprintf(out, outlen, "%.*s", (int)vl, v);
}

static size_t
on_header(char *data, size_t size, size_t n, void *opaque)
{
  struct reply *r = opaque;
  size_t len = size * n;
  header_value(data, len, "Allow:", r->allow, sizeof r->allow);
  header_value(data, len, "WWW-Authenticate:", r->www_auth, sizeof r->www_auth);
  header_value(data, len, "Content-Type:", r->content_type,
               sizeof r->content_type);
  return len;
}

static size_t t_chunk_left;

static size_t
on_read(char *buf, size_t size, size_t n, void *opaque)
{
  size_t want = size * n < t_chunk_left ? size * n : t_chunk_left;
  memset(buf, ' ', want);
  t_chunk_left -= want;
  return want;
}

/* One request; token NULL: none.  chunked: a body of t_chunk_left
 * spaces in chunks. */
static void
http(const char *method, const char *path, const char *token,
     const char *body, const char *content_type, bool chunked, struct reply *r)
{
  char url[256], auth[256], ct[128];
  memset(r, 0, sizeof *r);
  snprintf(url, sizeof url, "%s%s", t_base, path);
  CURL *h = curl_easy_init();
  struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
  if (token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    hdrs = curl_slist_append(hdrs, auth);
  }
  snprintf(ct, sizeof ct, "Content-Type: %s",
           content_type ? content_type : "application/json");
  hdrs = curl_slist_append(hdrs, ct);
  if (chunked)
    hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  if (chunked) {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
  } else if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  CURLcode rc = curl_easy_perform(h);
  CU_ASSERT_EQUAL(rc, CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(h);
}

/* Checks r is status with the JSON error envelope {"error":{"code":code,
 * "message":M}} whose message contains word. */
static void
check_error(const struct reply *r, long status, const char *code,
            const char *word)
{
  CU_ASSERT_EQUAL(r->status, status);
  CU_ASSERT_STRING_EQUAL(r->content_type, "application/json");
  struct json_object *o = json_tokener_parse(r->body), *e, *c, *m;
  CU_ASSERT_FATAL(o != NULL);
  CU_ASSERT_FATAL(json_object_object_get_ex(o, "error", &e));
  CU_ASSERT_FATAL(json_object_object_get_ex(e, "code", &c));
  CU_ASSERT_FATAL(json_object_object_get_ex(e, "message", &m));
  CU_ASSERT_STRING_EQUAL(json_object_get_string(c), code);
  const char *msg = json_object_get_string(m);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, word));
  if (r->status != status || strstr(msg, word) == NULL)
    fprintf(stderr, "\n%ld %s (wanted %ld, '%s')\n", r->status, r->body,
            status, word);
  json_object_put(o);
}

/* ---- HTTPS over libcurl --------------------------------------------------- */

static char t_pki[64];              /* the temporary directory */
static struct httpsvc *t_tls_on, *t_tls_req;
static struct tlsdir_server t_srv;  /* the services' PEM texts */

/* GET path on port over HTTPS; the CA file, client cert and key are
 * files of t_pki's subdirectories ("fleet/ca-cert.pem"), NULL: none.
 * curl's result, with the reply in r and curl's message in msg. */
static CURLcode
https_get(unsigned port, const char *path, const char *ca, const char *cert,
          const char *key, struct reply *r, char msg[CURL_ERROR_SIZE])
{
  char url[256], caf[256], certf[256], keyf[256];
  memset(r, 0, sizeof *r);
  msg[0] = '\0';
  snprintf(url, sizeof url, "https://localhost:%u%s", port, path);
  CURL *h = curl_easy_init();
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, msg);
  if (ca) {
    snprintf(caf, sizeof caf, "%s/%s", t_pki, ca);
    curl_easy_setopt(h, CURLOPT_CAINFO, caf);
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
  }
  if (cert) {
    snprintf(certf, sizeof certf, "%s/%s", t_pki, cert);
    snprintf(keyf, sizeof keyf, "%s/%s", t_pki, key);
    curl_easy_setopt(h, CURLOPT_SSLCERT, certf);
    curl_easy_setopt(h, CURLOPT_SSLKEY, keyf);
  }
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  curl_easy_cleanup(h);
  return rc;
}

/* The fleet CA with host "node1" (server and client, SAN localhost and
 * 127.0.0.1), and another CA with a client "node1" of its own. */
static int
make_pki(void)
{
  char d[128], h[128];
  static const char *const dns[] = { "localhost" };
  static const char *const ips[] = { "127.0.0.1" };
  struct pki_host host = { .name = "node1", .dns = dns, .n_dns = 1,
                           .ips = ips, .n_ips = 1, .days = 1,
                           .role = PKI_ROLE_BOTH };
  snprintf(t_pki, sizeof t_pki, "/tmp/test-httpsvc-XXXXXX");
  if (mkdtemp(t_pki) == NULL)
    return -1;
  snprintf(d, sizeof d, "%s/fleet-ca", t_pki);
  snprintf(h, sizeof h, "%s/fleet", t_pki);
  if (pki_init_ca(d, "fleet", 1, false) || pki_issue(d, h, &host, false))
    return -1;
  snprintf(d, sizeof d, "%s/other-ca", t_pki);
  snprintf(h, sizeof h, "%s/other", t_pki);
  host.role = PKI_ROLE_CLIENT;
  if (pki_init_ca(d, "other", 1, false) || pki_issue(d, h, &host, false))
    return -1;
  char err[512];
  if (tlsdir_load_server(h, &t_srv, err, sizeof err) == 0) {
    fprintf(stderr, "a client-only directory has no server certificate\n");
    return -1;
  }
  snprintf(h, sizeof h, "%s/fleet", t_pki);
  if (tlsdir_load_server(h, &t_srv, err, sizeof err) == -1) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}

/* ---- fixture ------------------------------------------------------------ */

static int
suite_init(void)
{
  signal(SIGPIPE, SIG_IGN);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return -1;
  struct httpsvc_config cfg = {
    .name = "test",
    .realm = "unit",
    .listen = "127.0.0.1:0",
    .routes = routes,
    .n_routes = sizeof routes / sizeof routes[0],
    .token = TOKEN,
    .token2 = TOKEN2,
    .token2_refused = "the second token may only read things",
    .code_of = code_of,
    .body_max = BODY_MAX,
    .drain_max = 4 * BODY_MAX,
    .json_depth = DEPTH,
    .json_content_type = true,
    .threads = 0, /* one per connection, as thunderd's control endpoint */
    .max_connections = 16,
    .per_ip_connections = 4,
    .timeout_s = 10,
    .request_timeout_s = 2,
  };
  t_svc = httpsvc_start(&cfg);
  if (t_svc == NULL || httpsvc_port(t_svc) == 0)
    return -1;
  snprintf(t_base, sizeof t_base, "http://127.0.0.1:%u", httpsvc_port(t_svc));

  if (make_pki() == -1)
    return -1;
  cfg.tls_cert = t_srv.cert;
  cfg.tls_key = t_srv.key;
  cfg.tls_ca = t_srv.ca;
  cfg.tls = TLSDIR_REQUIRE;
  if ((t_tls_req = httpsvc_start(&cfg)) == NULL)
    return -1;
  cfg.tls = TLSDIR_ON;
  cfg.threads = 2; /* a pool, as thunder-api */
  if ((t_tls_on = httpsvc_start(&cfg)) == NULL)
    return -1;
  return 0;
}

static int
suite_clean(void)
{
  httpsvc_stop(t_tls_on);
  httpsvc_stop(t_tls_req);
  tlsdir_server_free(&t_srv);
  if (t_pki[0]) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t_pki);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", t_pki);
  }
  httpsvc_stop(t_svc);
  curl_global_cleanup();
  return 0;
}

/* ---- routes, methods, tokens ---------------------------------------------- */

static void
test_public(void)
{
  struct reply r;
  http("GET", "/healthz", NULL, NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{}\n");
}

static void
test_unknown_route(void)
{
  static const char *const paths[] = { "/", "/v1", "/v1/echo/x",
                                       "/v1/things//sub", "/v1/things/a",
                                       "/v1/things/a/sub/b", "/healthzz" };
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    struct reply r;
    http("GET", paths[i], TOKEN, NULL, NULL, false, &r);
    check_error(&r, 404, "not_found", "no such path");
  }
}

static void
test_method(void)
{
  struct reply r;
  http("PUT", "/v1/things/a/sub", TOKEN, NULL, NULL, false, &r);
  check_error(&r, 405, "method_not_allowed", "PUT");
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD, DELETE");
  http("POST", "/healthz", NULL, NULL, NULL, false, &r);
  check_error(&r, 405, "method_not_allowed", "/healthz");
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD");
}

static void
test_param(void)
{
  struct reply r;
  http("GET", "/v1/things/t-1/sub", TOKEN, NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"id\":\"t-1\",\"by2\":false}\n");
  /* %2F stays encoded: still one segment. */
  http("GET", "/v1/things/a%2Fb/sub", TOKEN, NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"id\":\"a%2Fb\",\"by2\":false}\n");
}

static void
test_missing_token(void)
{
  unsigned calls = t_calls;
  struct reply r;
  http("POST", "/v1/echo", NULL, "{}", NULL, false, &r);
  check_error(&r, 401, "unauthorized", "Authorization: Bearer");
  CU_ASSERT_STRING_EQUAL(r.www_auth, "Bearer realm=\"unit\"");
  CU_ASSERT_EQUAL(t_calls, calls);
}

static void
test_wrong_token(void)
{
  unsigned calls = t_calls;
  struct reply r;
  http("POST", "/v1/echo", "not-the-token-0123456789", "{}", NULL, false, &r);
  check_error(&r, 401, "unauthorized", "wrong bearer token");
  CU_ASSERT_PTR_NOT_NULL(strstr(r.www_auth, "invalid_token"));
  /* Unknown method on a token route: 401 before 405. */
  http("PATCH", "/v1/echo", NULL, NULL, NULL, false, &r);
  check_error(&r, 401, "unauthorized", "Authorization");
  CU_ASSERT_EQUAL(t_calls, calls);
}

static void
test_second_token(void)
{
  struct reply r;
  http("GET", "/v1/things/x/sub", TOKEN2, NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"id\":\"x\",\"by2\":true}\n");
  http("DELETE", "/v1/things/x/sub", TOKEN2, NULL, NULL, false, &r);
  check_error(&r, 401, "unauthorized", "second token");
  http("POST", "/v1/echo", TOKEN2, "{}", NULL, false, &r);
  check_error(&r, 401, "unauthorized", "second token");
}

/* An AUTH_APP route: the service's tokens pass as usual (the handler is
 * not asked to check them); any other bearer token reaches the handler,
 * which checks it; no token at all is the core's 401. */
static void
test_app_token(void)
{
  unsigned calls = t_calls;
  struct reply r;
  http("GET", "/v1/app", NULL, NULL, NULL, false, &r);
  check_error(&r, 401, "unauthorized", "Authorization: Bearer");
  CU_ASSERT_EQUAL(t_calls, calls);
  http("GET", "/v1/app", TOKEN, NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"app\":false,\"bearer\":\"" TOKEN "\"}\n");
  http("GET", "/v1/app", TOKEN2, NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"app\":false"));
  http("GET", "/v1/app", "app-token-0123456789", NULL, NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"app\":true,\"bearer\":\"app-token-0123456789\"}\n");
  http("GET", "/v1/app", "another-token-0123456789", NULL, NULL, false, &r);
  check_error(&r, 403, "forbidden", "not the app's token");
  CU_ASSERT_EQUAL(t_calls, calls + 4);
}

/* ---- bodies ------------------------------------------------------------------ */

static void
test_echo(void)
{
  struct reply r;
  http("POST", "/v1/echo", TOKEN, "{\"a\": [1, {\"b\": \"c\"}]}", NULL, false,
       &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"a\":[1,{\"b\":\"c\"}]}\n");
  http("POST", "/v1/echo", TOKEN, "{\"fail\": 1}", NULL, false, &r);
  check_error(&r, 409, "custom", "asked to fail");
}

static void
test_duplicate_keys(void)
{
  struct reply r;
  http("POST", "/v1/echo", TOKEN, "{\"a\": 1, \"a\": 2}", NULL, false, &r);
  check_error(&r, 400, "bad_request", "field 'a': appears more than once");
  http("POST", "/v1/echo", TOKEN, "{\"p\": {\"s\": 1, \"t\": 2, \"s\": 3}}",
       NULL, false, &r);
  check_error(&r, 400, "bad_request", "field 'p.s': appears more than once");
  /* An escaped key is the same key. */
  http("POST", "/v1/echo", TOKEN, "{\"ab\": 1, \"a\\u0062\": 2}", NULL, false,
       &r);
  check_error(&r, 400, "bad_request", "field 'ab'");
  http("POST", "/v1/echo", TOKEN, "{\"l\": [{\"x\": 1}, {\"x\": 1, \"x\": 2}]}",
       NULL, false, &r);
  check_error(&r, 400, "bad_request", "field 'l[1].x'");
  /* The same key in two objects is fine. */
  http("POST", "/v1/echo", TOKEN, "{\"a\": {\"x\": 1}, \"b\": {\"x\": 1}}",
       NULL, false, &r);
  CU_ASSERT_EQUAL(r.status, 200);
}

static void
test_depth(void)
{
  struct reply r;
  http("POST", "/v1/echo", TOKEN, "{\"a\": {\"b\": {\"c\": {}}}}", NULL, false,
       &r);
  CU_ASSERT_EQUAL(r.status, 200);
  http("POST", "/v1/echo", TOKEN, "{\"a\": {\"b\": {\"c\": {\"d\": {}}}}}",
       NULL, false, &r);
  check_error(&r, 400, "bad_request", "nested deeper than 4");
}

static void
test_not_json(void)
{
  struct reply r;
  http("POST", "/v1/echo", TOKEN, "{\"a\":", NULL, false, &r);
  check_error(&r, 400, "bad_request", "not valid JSON");
  http("POST", "/v1/echo", TOKEN, "{} {}", NULL, false, &r);
  check_error(&r, 400, "bad_request", "offset 3");
  http("POST", "/v1/echo", TOKEN, "[1]", NULL, false, &r);
  check_error(&r, 400, "bad_request", "not a JSON object but array");
  http("POST", "/v1/echo", TOKEN, "", NULL, false, &r);
  check_error(&r, 400, "bad_request", "empty");
  http("POST", "/v1/echo", TOKEN, "{}", "text/plain", false, &r);
  check_error(&r, 415, "unsupported_media_type", "Content-Type");
}

static void
test_too_large(void)
{
  unsigned calls = t_calls;
  char big[BODY_MAX + 64];
  memset(big, ' ', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  memcpy(big, "{}", 2);
  struct reply r;
  http("POST", "/v1/echo", TOKEN, big, NULL, false, &r);
  check_error(&r, 413, "too_large", "1024");
  /* Chunked, so no Content-Length tells. */
  t_chunk_left = 2 * BODY_MAX;
  http("POST", "/v1/echo", TOKEN, NULL, NULL, true, &r);
  check_error(&r, 413, "too_large", "larger than");
  /* Declared past what is ever read: at once. */
  char *huge = calloc(1, 64 * BODY_MAX + 1);
  memset(huge, ' ', 64 * BODY_MAX);
  http("POST", "/v1/echo", TOKEN, huge, NULL, false, &r);
  check_error(&r, 413, "too_large", "larger than");
  free(huge);
  CU_ASSERT_EQUAL(t_calls, calls);
}

static double
seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A plain TCP connection to the service, or -1. */
static int
raw_connect(void)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_port = htons((uint16_t)httpsvc_port(t_svc)) };
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* A client that trickles its body, one byte every 200 ms (each byte
 * resets the 10 s idle timeout): the 2 s request deadline closes it. */
static void
test_trickle(void)
{
  int fd = raw_connect();
  CU_ASSERT_FATAL(fd >= 0);
  static const char head[] = "POST /v1/echo HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer " TOKEN "\r\n"
                             "Content-Type: application/json\r\n"
                             "Content-Length: 200\r\n\r\n{";
  CU_ASSERT_EQUAL(send(fd, head, sizeof head - 1, MSG_NOSIGNAL),
                  (ssize_t)(sizeof head - 1));
  double t0 = seconds();
  bool closed = false;
  for (int i = 0; i < 60 && !closed; i++) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 200) == 1) {
      char buf[512];
      if (recv(fd, buf, sizeof buf, 0) <= 0)
        closed = true;
    } else if (send(fd, " ", 1, MSG_NOSIGNAL) != 1) {
      closed = true;
    }
  }
  double took = seconds() - t0;
  CU_ASSERT_TRUE(closed);
  CU_ASSERT(took >= 1.5 && took < 6);
  if (!closed || took >= 6)
    fprintf(stderr, "\ntrickle: closed %d after %.1f s\n", closed, took);
  close(fd);
}

/* Sends GET /healthz on a kept-alive connection: true when it answers 200. */
static bool
healthz_on(int fd)
{
  static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1))
    return false;
  /* Reads the whole reply (headers and Content-Length bytes), so that the
   * connection can be used again. */
  char buf[2048] = "";
  size_t n = 0;
  for (;;) {
    const char *end = strstr(buf, "\r\n\r\n");
    const char *cl = strcasestr(buf, "Content-Length:");
    if (end != NULL && cl != NULL &&
        n >= (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10))
      break;
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (n == sizeof buf - 1 || poll(&p, 1, 3000) != 1)
      return false;
    ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
    if (r <= 0)
      return false;
    n += (size_t)r;
    buf[n] = '\0';
  }
  return strncmp(buf, "HTTP/1.1 200", 12) == 0;
}

/* A fifth connection from one address is closed at once; the four others
 * stay usable. A connection the previous test closed may still hold its
 * slot until the server notices, so each of the four is retried until it
 * answers. */
static void
test_per_address(void)
{
  int fds[4];
  for (int i = 0; i < 4; i++) {
    fds[i] = -1;
    for (int try = 0; try < 30 && fds[i] < 0; try++) {
      fds[i] = raw_connect();
      if (fds[i] >= 0 && !healthz_on(fds[i])) {
        close(fds[i]);
        fds[i] = -1;
        usleep(100 * 1000);
      }
    }
    CU_ASSERT_FATAL(fds[i] >= 0);
  }
  int fd = raw_connect();
  bool closed = fd < 0;
  if (fd >= 0) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char c;
    closed = poll(&p, 1, 3000) == 1 && recv(fd, &c, 1, 0) <= 0;
    close(fd);
  }
  CU_ASSERT_TRUE(closed);
  CU_ASSERT_TRUE(healthz_on(fds[0]));
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  usleep(200 * 1000); /* the slots are free again for the next tests */
}

/* Headers trickled for longer than the deadline: 408 with the JSON
 * envelope once they are in. */
static void
test_slow_headers(void)
{
  int fd = raw_connect();
  CU_ASSERT_FATAL(fd >= 0);
  static const char line[] = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nX-Pad: ";
  static const char rest[] = "\r\nAuthorization: Bearer " TOKEN "\r\n"
                             "Content-Length: 2\r\n\r\n{}";
  send(fd, line, sizeof line - 1, MSG_NOSIGNAL);
  for (int i = 0; i < 13; i++) {
    usleep(200 * 1000);
    send(fd, "a", 1, MSG_NOSIGNAL);
  }
  send(fd, rest, sizeof rest - 1, MSG_NOSIGNAL);
  char buf[2048] = "";
  size_t n = 0;
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 5000) != 1)
      break;
    ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
    if (r <= 0)
      break;
    n += (size_t)r;
    buf[n] = '\0';
    if (strstr(buf, "}}"))
      break;
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "HTTP/1.1 408"));
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, "{\"error\":{\"code\":\"request_timeout\""));
  if (strstr(buf, "408") == NULL)
    fprintf(stderr, "\nslow headers: %s\n", buf);
  close(fd);
}

/* ---- jsonutil --------------------------------------------------------------- */

static struct json_object *
parse(const char *s, char *err, size_t errlen)
{
  return jsonutil_parse(s, strlen(s), 8, JSONUTIL_OBJECT, "body", err, errlen);
}

static void
test_getters(void)
{
  char err[512];
  struct json_object *o = parse(
      "{\"s\": \"str\", \"n\": 5, \"f\": 2.0, \"m\": -1.0, \"h\": 1.5, \"z\": null, "
      "\"o\": {\"k\": 1}, \"a\": [1]}", err, sizeof err);
  CU_ASSERT_FATAL(o != NULL);
  const char *s;
  uint64_t u;
  struct json_object *v;
  CU_ASSERT_EQUAL(jsonutil_get_string(o, "", "s", true, 8, &s, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(s, "str");
  CU_ASSERT_EQUAL(jsonutil_get_string(o, "", "x", false, 8, &s, err, sizeof err), 1);
  CU_ASSERT_EQUAL(jsonutil_get_string(o, "p.", "x", true, 8, &s, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'p.x': missing"));
  CU_ASSERT_EQUAL(jsonutil_get_string(o, "", "s", true, 2, &s, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 's'"));
  CU_ASSERT_EQUAL(jsonutil_get_string(o, "", "n", true, 8, &s, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "expected a string, not int"));
  CU_ASSERT_EQUAL(jsonutil_get_uint(o, "", "n", true, 1, 9, &u, err, sizeof err), 0);
  CU_ASSERT_EQUAL(u, 5);
  CU_ASSERT_EQUAL(jsonutil_get_uint(o, "", "f", true, 1, 9, &u, err, sizeof err), 0);
  CU_ASSERT_EQUAL(u, 2);
  /* A negative integer written as a double (fuzz-bodies found it cast to
   * uint64_t: undefined behaviour under UBSan). */
  CU_ASSERT_EQUAL(jsonutil_get_uint(o, "", "m", true, 1, 9, &u, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "out of range"));
  CU_ASSERT_EQUAL(jsonutil_get_uint(o, "placement.", "h", true, 1, 9, &u, err,
                                    sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'placement.h': 1.5 is not an integer"));
  CU_ASSERT_EQUAL(jsonutil_get_uint(o, "", "n", true, 6, 9, &u, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "5 is out of range"));
  /* A null is a value of the wrong type, not an absent field. */
  CU_ASSERT_EQUAL(jsonutil_get_uint(o, "", "z", false, 1, 9, &u, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not null"));
  CU_ASSERT_EQUAL(jsonutil_get_object(o, "", "o", true, &v, err, sizeof err), 0);
  CU_ASSERT_EQUAL(jsonutil_get_array(o, "", "o", true, &v, err, sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'o': expected an array, not object"));
  static const char *const known[] = { "s", "n", "f", "m", "h", "z", "o", NULL };
  CU_ASSERT_EQUAL(jsonutil_known_keys(o, "", known, "expected s and n", err,
                                      sizeof err), -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'a': unknown field; expected s and n"));
  json_object_put(o);
}

static void
test_parse(void)
{
  char err[512];
  CU_ASSERT_PTR_NULL(jsonutil_parse("{\"a\":1}\0", 8, 8, 0, "x", err, sizeof err));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "NUL byte"));
  struct json_object *o = jsonutil_parse("42 ", 3, 8, 0, "x", err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL(o);
  CU_ASSERT_EQUAL(json_object_get_int(o), 42);
  json_object_put(o);
  CU_ASSERT_PTR_NULL(parse("{\"a\":1,\"b\":{\"a\":2},\"a\":3}", err, sizeof err));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "field 'a': appears more than once"));
  o = jsonutil_parse("{\"a\":1,\"a\":2}", 13, 8, JSONUTIL_DUPS_OK, "x", err,
                     sizeof err);
  CU_ASSERT_PTR_NOT_NULL(o);
  json_object_put(o);
  /* Ill-formed UTF-8: overlong, surrogate, past U+10FFFF, cut short. */
  static const char *const bad[] = {
    "{\"a\": \"\xc0\xaf\"}", "{\"a\": \"\xe0\x80\xaf\"}",
    "{\"a\": \"\xed\xa0\x80\"}", "{\"a\": \"\xf4\x90\x80\x80\"}",
    "{\"a\": \"\xe2\x82\"}", "{\"a\": \"\xff\"}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_PTR_NULL(parse(bad[i], err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "invalid utf-8 at offset 7"));
  }
  o = parse("{\"a\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}", err,
            sizeof err);
  CU_ASSERT_PTR_NOT_NULL(o);
  json_object_put(o);
  /* json-c's strict mode takes single-quoted strings; we do not. */
  CU_ASSERT_PTR_NULL(parse("{'a': 1}", err, sizeof err));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "single-quoted string at offset 1"));
  CU_ASSERT_PTR_NULL(jsonutil_parse("{'a': 1}", 8, 8, JSONUTIL_DUPS_OK, "x",
                                    err, sizeof err));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "single-quoted"));
  CU_ASSERT_PTR_NULL(jsonutil_parse("[1, 'x']", 8, 8, 0, "x", err, sizeof err));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not JSON"));
  /* Strings that look like keys or brackets are not. */
  o = parse("{\"a\": \"\\\"a\\\": {[\", \"b\": [\"a\", \"a\"]}", err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL(o);
  json_object_put(o);
}

/* ---- HTTPS ------------------------------------------------------------------ */

/* Checks r is 200 {"peer": want} (want NULL: null). */
static void
check_peer(const struct reply *r, const char *want)
{
  CU_ASSERT_EQUAL(r->status, 200);
  struct json_object *o = json_tokener_parse(r->body), *p = NULL;
  CU_ASSERT_FATAL(o != NULL);
  CU_ASSERT_FATAL(json_object_object_get_ex(o, "peer", &p));
  if (want) {
    CU_ASSERT_STRING_EQUAL(json_object_get_string(p), want);
  } else {
    CU_ASSERT_PTR_NULL(p);
  }
  json_object_put(o);
}

static void
test_https_right_ca(void)
{
  struct reply r;
  char msg[CURL_ERROR_SIZE];
  CU_ASSERT_EQUAL(https_get(httpsvc_port(t_tls_on), "/whoami",
                            "fleet/ca-cert.pem", NULL, NULL, &r, msg),
                  CURLE_OK);
  check_peer(&r, NULL);
  /* Tokens work over it as over HTTP. */
  CU_ASSERT_EQUAL(https_get(httpsvc_port(t_tls_on), "/v1/things/7/sub",
                            "fleet/ca-cert.pem", NULL, NULL, &r, msg),
                  CURLE_OK);
  check_error(&r, 401, "unauthorized", "Authorization");
}

static void
test_https_wrong_ca(void)
{
  struct reply r;
  char msg[CURL_ERROR_SIZE];
  CURLcode rc = https_get(httpsvc_port(t_tls_on), "/whoami",
                          "other/ca-cert.pem", NULL, NULL, &r, msg);
  CU_ASSERT_EQUAL(rc, CURLE_PEER_FAILED_VERIFICATION);
  CU_ASSERT_EQUAL(r.status, 0);
  CU_ASSERT_EQUAL(r.len, 0);
}

static void
test_https_plain_client(void)
{
  /* Plain HTTP to the HTTPS port gets no reply. */
  struct reply r;
  char base[64];
  memcpy(base, t_base, sizeof base);
  snprintf(t_base, sizeof t_base, "http://127.0.0.1:%u",
           httpsvc_port(t_tls_on));
  CURL *h = curl_easy_init();
  char url[128];
  snprintf(url, sizeof url, "%s/healthz", t_base);
  memset(&r, 0, sizeof r);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
  CU_ASSERT_NOT_EQUAL(curl_easy_perform(h), CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  CU_ASSERT_NOT_EQUAL(r.status, 200);
  curl_easy_cleanup(h);
  memcpy(t_base, base, sizeof base);
}

static void
test_https_client_cert(void)
{
  struct reply r;
  char msg[CURL_ERROR_SIZE];
  for (int i = 0; i < 2; i++) {
    unsigned port = httpsvc_port(i ? t_tls_req : t_tls_on);
    CU_ASSERT_EQUAL(https_get(port, "/whoami", "fleet/ca-cert.pem",
                              "fleet/client-cert.pem", "fleet/client-key.pem",
                              &r, msg), CURLE_OK);
    check_peer(&r, "node1");
    /* Another CA's certificate with the same CN is refused. */
    CU_ASSERT_EQUAL(https_get(port, "/whoami", "fleet/ca-cert.pem",
                              "other/client-cert.pem", "other/client-key.pem",
                              &r, msg), CURLE_OK);
    check_error(&r, 403, "forbidden", "client certificate refused");
    /* A server certificate is no client certificate. */
    CU_ASSERT_EQUAL(https_get(port, "/whoami", "fleet/ca-cert.pem",
                              "fleet/server-cert.pem", "fleet/server-key.pem",
                              &r, msg), CURLE_OK);
    check_error(&r, 403, "forbidden", "client certificate refused");
  }
}

static void
test_https_require(void)
{
  struct reply r;
  char msg[CURL_ERROR_SIZE];
  /* No client certificate: 403 before routing and tokens. */
  CU_ASSERT_EQUAL(https_get(httpsvc_port(t_tls_req), "/healthz",
                            "fleet/ca-cert.pem", NULL, NULL, &r, msg),
                  CURLE_OK);
  check_error(&r, 403, "forbidden", "client certificate of the fleet CA is required");
  CU_ASSERT_EQUAL(https_get(httpsvc_port(t_tls_req), "/v1/things/1/sub",
                            "fleet/ca-cert.pem", NULL, NULL, &r, msg),
                  CURLE_OK);
  check_error(&r, 403, "forbidden", "required");
  /* With one, tokens are still checked. */
  CU_ASSERT_EQUAL(https_get(httpsvc_port(t_tls_req), "/v1/things/1/sub",
                            "fleet/ca-cert.pem", "fleet/client-cert.pem",
                            "fleet/client-key.pem", &r, msg), CURLE_OK);
  check_error(&r, 401, "unauthorized", "Authorization");
}

#define TEST(fn) { #fn, fn }
static const struct cunit_test tests[] = {
  TEST(test_public),
  TEST(test_unknown_route),
  TEST(test_method),
  TEST(test_param),
  TEST(test_missing_token),
  TEST(test_wrong_token),
  TEST(test_second_token),
  TEST(test_app_token),
  TEST(test_echo),
  TEST(test_duplicate_keys),
  TEST(test_depth),
  TEST(test_not_json),
  TEST(test_too_large),
  TEST(test_trickle),
  TEST(test_slow_headers),
  TEST(test_per_address),
  TEST(test_getters),
  TEST(test_parse),
  TEST(test_https_right_ca),
  TEST(test_https_wrong_ca),
  TEST(test_https_plain_client),
  TEST(test_https_client_cert),
  TEST(test_https_require),
};

int
main(void)
{
  static const struct cunit_suite suite = { "httpsvc", suite_init,
                                            suite_clean, NULL, NULL };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
