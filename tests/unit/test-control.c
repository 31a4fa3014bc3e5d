/* thunder — unit tests of the control endpoint (src/daemon/control.c).
 *
 * The suite starts control_new on 127.0.0.1:0 with a small in-memory
 * image table as its ops (the module's caller interface: attach, detach,
 * get and list with fixed replies) and drives it with libcurl over real
 * HTTP.  Every error reply is checked the same way (check_error): the
 * status, Content-Type: application/json, a body that parses as
 * {"error":{"code":C,"message":M}} with the expected code, and words of
 * the message (the field it names).  Requests that must not reach the ops
 * are checked with the table's call counter.
 *
 * The fake's special names: "slow" blocks in attach until the test
 * releases it; "broken" fails attach with CONTROL_UPSTREAM (502); "weird"
 * makes get return a value that is no control_result.
 *
 * The VM routes (/v1/vms, /v1/vms/NAME, /v1/node) have fakes too: the VM
 * ops copy the request they get (fake.vm) and answer from a fixed table:
 * PUT of "exists" is 200, of "nopool" 409 no_pool, anything else 201;
 * GET and DELETE know only "vm1".
 *
 * control_read_token is tested on files in a private temp directory,
 * with stderr captured to check that each refusal names the file.
 */
#include <CUnit/Basic.h>

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
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

#include "control.h"
#include "cunit-run.h"

#define TOKEN "t0ken-for-the-control-unit-test"
#define V1 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define V2 "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define UP0 "nbd://10.0.0.1:10809/img"
#define UP1 "nbd+unix:///img?socket=/run/thunder/origin.sock"

/* ---- the fake image table (struct control_ops) ----------------------- */

#define FAKE_MAX 8

struct fake_image {
  bool used;
  char name[256];
  char version[65];
  size_t nups;
  char *ups[CONTROL_UPSTREAMS_MAX];
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct fake_image img[FAKE_MAX];
  unsigned calls;        /* op calls of any kind */
  unsigned attach_calls;
  bool slow_entered;     /* "slow" is inside attach */
  bool slow_release;     /* the test lets it go */
  /* The last attach request, copied. */
  char last_name[256];
  char last_version[65];
  size_t last_nups;
  char last_ups[CONTROL_UPSTREAMS_MAX][64];
  /* The last VM request, copied. */
  unsigned vm_calls;
  char vm_name[256];
  char vm_image[256];
  struct control_vm vm;  /* name and image point to the copies above */
} fake = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void
fake_clear(void)
{
  pthread_mutex_lock(&fake.lock);
  for (size_t i = 0; i < FAKE_MAX; i++) {
    for (size_t j = 0; j < fake.img[i].nups; j++)
      free(fake.img[i].ups[j]);
    memset(&fake.img[i], 0, sizeof fake.img[i]);
  }
  fake.calls = fake.attach_calls = fake.vm_calls = 0;
  memset(&fake.vm, 0, sizeof fake.vm);
  fake.vm_name[0] = fake.vm_image[0] = '\0';
  fake.slow_entered = fake.slow_release = false;
  fake.last_name[0] = fake.last_version[0] = '\0';
  fake.last_nups = 0;
  pthread_mutex_unlock(&fake.lock);
}

/* The caller holds fake.lock. */
static struct fake_image *
fake_find(const char *name)
{
  for (size_t i = 0; i < FAKE_MAX; i++)
    if (fake.img[i].used && strcmp(fake.img[i].name, name) == 0)
      return &fake.img[i];
  return NULL;
}

/* Adds an image; the caller holds fake.lock. */
static struct fake_image *
fake_add(const char *name, const char *version, const char *const *ups,
         size_t nups)
{
  for (size_t i = 0; i < FAKE_MAX; i++) {
    struct fake_image *f = &fake.img[i];
    if (f->used)
      continue;
    f->used = true;
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->version, sizeof f->version, "%s", version);
    f->nups = nups;
    for (size_t j = 0; j < nups; j++)
      f->ups[j] = strdup(ups[j]);
    return f;
  }
  return NULL;
}

/* The node-mode GET reply (schemas/node-image.schema.json).  The caller
 * holds fake.lock. */
static struct json_object *
fake_json(const struct fake_image *f)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(f->name));
  json_object_object_add(o, "version", json_object_new_string(f->version));
  json_object_object_add(o, "state", json_object_new_string("attached"));
  json_object_object_add(o, "size", json_object_new_uint64(1048576));
  json_object_object_add(o, "block_size", json_object_new_uint64(65536));
  json_object_object_add(o, "blocks", json_object_new_uint64(16));
  struct json_object *ups = json_object_new_array();
  for (size_t i = 0; i < f->nups; i++) {
    struct json_object *u = json_object_new_object();
    json_object_object_add(u, "uri", json_object_new_string(f->ups[i]));
    json_object_object_add(u, "blocks", json_object_new_uint64(3));
    json_object_object_add(u, "bytes", json_object_new_uint64(196608));
    json_object_object_add(u, "verify_failures", json_object_new_uint64(0));
    json_object_object_add(u, "errors", json_object_new_uint64(0));
    json_object_object_add(u, "faulty", json_object_new_boolean(0));
    json_object_array_add(ups, u);
  }
  json_object_object_add(o, "upstreams", ups);
  struct json_object *c = json_object_new_object();
  static const char *const counters[] = {
    "served_local_bytes", "served_remote_bytes", "hits", "misses", "joined",
    "prefetches", "verify_failures", "failovers", "fetch_failures",
    "cache_corrupt_evicted", "valid_cache_bytes", "present_cache_bytes",
    "cached_blocks",
  };
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
    json_object_object_add(c, counters[i], json_object_new_uint64(i * 7));
  json_object_object_add(o, "counters", c);
  return o;
}

static enum control_result
fake_attach(void *opaque, const struct control_attach *req,
            struct json_object **reply, const char **code, char *err,
            size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  fake.attach_calls++;
  snprintf(fake.last_name, sizeof fake.last_name, "%s", req->name);
  snprintf(fake.last_version, sizeof fake.last_version, "%s", req->version);
  fake.last_nups = req->nupstreams;
  for (size_t i = 0; i < req->nupstreams; i++)
    snprintf(fake.last_ups[i], sizeof fake.last_ups[i], "%s",
             req->upstreams[i]);

  if (strcmp(req->name, "slow") == 0) {
    fake.slow_entered = true;
    pthread_cond_broadcast(&fake.cond);
    while (!fake.slow_release)
      pthread_cond_wait(&fake.cond, &fake.lock);
  }
  if (strcmp(req->name, "broken") == 0) {
    pthread_mutex_unlock(&fake.lock);
    *code = "bad_gateway";
    snprintf(err, errlen, "manifest: upstream %s: connection refused",
             req->upstreams[req->nupstreams - 1]);
    return CONTROL_UPSTREAM;
  }
  enum control_result status = CONTROL_CREATED;
  struct fake_image *f = fake_find(req->name);
  if (f && strcmp(f->version, req->version) != 0) {
    pthread_mutex_unlock(&fake.lock);
    *code = "conflict";
    snprintf(err, errlen, "image '%s' is attached with version %.12s; detach it first",
             req->name, f->version);
    return CONTROL_CONFLICT;
  }
  if (f)
    status = CONTROL_OK;
  else
    f = fake_add(req->name, req->version, req->upstreams, req->nupstreams);
  *reply = fake_json(f);
  pthread_mutex_unlock(&fake.lock);
  return status;
}

static enum control_result
fake_detach(void *opaque, const char *name, struct json_object **reply,
            const char **code, char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  struct fake_image *f = fake_find(name);
  if (f == NULL) {
    pthread_mutex_unlock(&fake.lock);
    *code = "not_found";
    snprintf(err, errlen, "no image '%s' attached", name);
    return CONTROL_NOT_FOUND;
  }
  for (size_t j = 0; j < f->nups; j++)
    free(f->ups[j]);
  memset(f, 0, sizeof *f);
  pthread_mutex_unlock(&fake.lock);
  *reply = json_object_new_object();
  return CONTROL_OK;
}

static enum control_result
fake_get(void *opaque, const char *name, struct json_object **reply,
         const char **code, char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  if (strcmp(name, "weird") == 0) {
    pthread_mutex_unlock(&fake.lock);
    *reply = json_object_new_object(); /* must not leak */
    return (enum control_result)302; /* no such result */
  }
  struct fake_image *f = fake_find(name);
  if (f == NULL) {
    pthread_mutex_unlock(&fake.lock);
    snprintf(err, errlen, "no image '%s' here", name); /* default code */
    return CONTROL_NOT_FOUND;
  }
  *reply = fake_json(f);
  pthread_mutex_unlock(&fake.lock);
  return CONTROL_OK;
}

static enum control_result
fake_list(void *opaque, struct json_object **reply, const char **code,
          char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  struct json_object *o = json_object_new_object();
  struct json_object *a = json_object_new_array();
  for (size_t i = 0; i < FAKE_MAX; i++)
    if (fake.img[i].used)
      json_object_array_add(a, fake_json(&fake.img[i]));
  json_object_object_add(o, "images", a);
  pthread_mutex_unlock(&fake.lock);
  *reply = o;
  return CONTROL_OK;
}

/* A VM's reply: {"name": name}. */
static struct json_object *
fake_vm_json(const char *name)
{
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(name));
  return o;
}

static enum control_result
fake_vm_put(void *opaque, const struct control_vm *req,
            struct json_object **reply, const char **code, char *err,
            size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  fake.vm_calls++;
  snprintf(fake.vm_name, sizeof fake.vm_name, "%s", req->name);
  snprintf(fake.vm_image, sizeof fake.vm_image, "%s", req->image);
  fake.vm = *req;
  fake.vm.name = fake.vm_name;
  fake.vm.image = fake.vm_image;
  pthread_mutex_unlock(&fake.lock);
  if (strcmp(req->name, "nopool") == 0) {
    *code = "no_pool";
    snprintf(err, errlen, "this node has no libvirt pool");
    return CONTROL_CONFLICT;
  }
  *reply = fake_vm_json(req->name);
  return strcmp(req->name, "exists") == 0 ? CONTROL_OK : CONTROL_CREATED;
}

static enum control_result
fake_vm_get(void *opaque, const char *name, struct json_object **reply,
            const char **code, char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  fake.vm_calls++;
  pthread_mutex_unlock(&fake.lock);
  if (strcmp(name, "vm1") != 0) {
    snprintf(err, errlen, "no VM %s here", name);
    return CONTROL_NOT_FOUND;
  }
  *reply = fake_vm_json(name);
  return CONTROL_OK;
}

static enum control_result
fake_vm_delete(void *opaque, const char *name, struct json_object **reply,
               const char **code, char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  fake.vm_calls++;
  pthread_mutex_unlock(&fake.lock);
  if (strcmp(name, "vm1") != 0) {
    snprintf(err, errlen, "no VM %s here", name);
    return CONTROL_NOT_FOUND;
  }
  return CONTROL_OK; /* no reply: {} */
}

static enum control_result
fake_vm_list(void *opaque, struct json_object **reply, const char **code,
             char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  fake.vm_calls++;
  pthread_mutex_unlock(&fake.lock);
  struct json_object *o = json_object_new_object();
  struct json_object *a = json_object_new_array();
  json_object_array_add(a, fake_vm_json("vm1"));
  json_object_object_add(o, "vms", a);
  *reply = o;
  return CONTROL_OK;
}

static enum control_result
fake_node_info(void *opaque, struct json_object **reply, const char **code,
               char *err, size_t errlen)
{
  pthread_mutex_lock(&fake.lock);
  fake.calls++;
  fake.vm_calls++;
  pthread_mutex_unlock(&fake.lock);
  struct json_object *o = json_object_new_object();
  json_object_object_add(o, "hostname", json_object_new_string("fake"));
  *reply = o;
  return CONTROL_OK;
}

static const struct control_ops fake_ops = {
  .attach = fake_attach,
  .detach = fake_detach,
  .get = fake_get,
  .list = fake_list,
  .vm_put = fake_vm_put,
  .vm_get = fake_vm_get,
  .vm_delete = fake_vm_delete,
  .vm_list = fake_vm_list,
  .node_info = fake_node_info,
};

static unsigned
fake_calls(void)
{
  pthread_mutex_lock(&fake.lock);
  unsigned n = fake.calls;
  pthread_mutex_unlock(&fake.lock);
  return n;
}

/* ---- HTTP over libcurl ----------------------------------------------- */

static struct control *t_ctl;
static char t_base[64];

struct reply {
  long status;
  char *body;
  size_t len;
  char content_type[128];
  char allow[128];
  char www_auth[256];
  bool failed;           /* curl could not complete the exchange */
};

static void
reply_free(struct reply *r)
{
  free(r->body);
  memset(r, 0, sizeof *r);
}

static size_t
on_body(char *data, size_t size, size_t n, void *opaque)
{
  struct reply *r = opaque;
  char *b = realloc(r->body, r->len + size * n + 1);
  if (b == NULL)
    return 0;
  memcpy(b + r->len, data, size * n);
  r->len += size * n;
  b[r->len] = '\0';
  r->body = b;
  return size * n;
}

/* Copies the value of header line "Name: value\r\n" into out if it is
 * named name. */
static void
header_value(const char *line, size_t len, const char *name, char *out,
             size_t outlen)
{
  size_t nl = strlen(name);
  if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
    return;
  const char *v = line + nl + 1;
  size_t vl = len - nl - 1;
  while (vl > 0 && *v == ' ')
    v++, vl--;
  while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
    vl--;
  snprintf(out, outlen, "%.*s", (int)vl, v);
}

static size_t
on_header(char *data, size_t size, size_t n, void *opaque)
{
  struct reply *r = opaque;
  header_value(data, size * n, "Content-Type", r->content_type,
               sizeof r->content_type);
  header_value(data, size * n, "Allow", r->allow, sizeof r->allow);
  header_value(data, size * n, "WWW-Authenticate", r->www_auth,
               sizeof r->www_auth);
  return size * n;
}

/* A chunked body: t_chunk_left bytes of 'x'. */
static size_t t_chunk_left;

static size_t
on_read(char *buf, size_t size, size_t n, void *opaque)
{
  size_t k = size * n < t_chunk_left ? size * n : t_chunk_left;
  memset(buf, ' ', k);
  t_chunk_left -= k;
  return k;
}

struct req {
  const char *method;
  const char *path;
  const char *auth;      /* the whole Authorization header; NULL: none */
  const char *body;
  size_t len;            /* body length (may hold NULs) */
  bool chunked;          /* send t_chunk_left bytes chunked instead */
  bool expect;           /* send "Expect: 100-continue" */
  CURL *h;               /* reuse this handle (keep-alive); NULL: new one */
};

#define AUTH "Authorization: Bearer " TOKEN

/* Sends q and fills *r. */
static void
http(const struct req *q, struct reply *r)
{
  memset(r, 0, sizeof *r);
  CURL *h = q->h ? q->h : curl_easy_init();
  CU_ASSERT_PTR_NOT_NULL_FATAL(h);
  char url[1024];
  snprintf(url, sizeof url, "%s%s", t_base, q->path);
  struct curl_slist *hdrs = NULL;
  if (q->auth)
    hdrs = curl_slist_append(hdrs, q->auth);
  hdrs = curl_slist_append(hdrs, q->expect ? "Expect: 100-continue" : "Expect:");
  if (q->chunked)
    hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 10000L);
  if (strcmp(q->method, "HEAD") == 0)
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  else
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
  if (q->chunked) {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
  } else if (q->body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)q->len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
  }
  CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    fprintf(stderr, "curl %s %s: %s\n", q->method, q->path,
            curl_easy_strerror(rc));
    r->failed = true;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  curl_slist_free_all(hdrs);
  if (q->h == NULL)
    curl_easy_cleanup(h);
  else
    curl_easy_reset(h);
}

/* Shorthands: with the right token, without a body. */
static void
get(const char *path, struct reply *r)
{
  http(&(struct req){ .method = "GET", .path = path, .auth = AUTH }, r);
}

static void
put(const char *name, const char *body, struct reply *r)
{
  char path[512];
  snprintf(path, sizeof path, "/v1/images/%s", name);
  http(&(struct req){ .method = "PUT", .path = path, .auth = AUTH,
                      .body = body, .len = strlen(body) }, r);
}

static void
put_vm(const char *name, const char *body, struct reply *r)
{
  char path[512];
  snprintf(path, sizeof path, "/v1/vms/%s", name);
  http(&(struct req){ .method = "PUT", .path = path, .auth = AUTH,
                      .body = body, .len = strlen(body) }, r);
}

/* Parses r's body as JSON (NULL if it is not). */
static struct json_object *
body_json(const struct reply *r)
{
  if (r->body == NULL)
    return NULL;
  return json_tokener_parse(r->body);
}

/* Checks that r is an error reply with status and code and that its
 * message contains each of the NULL-terminated words.  Frees r. */
static void
check_error_(struct reply *r, long status, const char *code, ...)
{
  CU_ASSERT_FALSE(r->failed);
  CU_ASSERT_EQUAL(r->status, status);
  if (r->status != status)
    fprintf(stderr, "status %ld, expected %ld: %s\n", r->status, status,
            r->body ? r->body : "(no body)");
  CU_ASSERT_STRING_EQUAL(r->content_type, "application/json");
  struct json_object *o = body_json(r), *e, *c, *m;
  CU_ASSERT_PTR_NOT_NULL(o);
  CU_ASSERT_TRUE(json_object_is_type(o, json_type_object));
  CU_ASSERT_EQUAL(json_object_object_length(o), 1);
  if (o && json_object_object_get_ex(o, "error", &e) &&
      json_object_object_length(e) == 2 &&
      json_object_object_get_ex(e, "code", &c) &&
      json_object_object_get_ex(e, "message", &m) &&
      json_object_is_type(c, json_type_string) &&
      json_object_is_type(m, json_type_string)) {
    CU_ASSERT_STRING_EQUAL(json_object_get_string(c), code);
    const char *msg = json_object_get_string(m);
    CU_ASSERT(strlen(msg) > 0);
    va_list ap;
    va_start(ap, code);
    for (const char *w; (w = va_arg(ap, const char *)) != NULL;) {
      CU_ASSERT_PTR_NOT_NULL(strstr(msg, w));
      if (strstr(msg, w) == NULL)
        fprintf(stderr, "message '%s' lacks '%s'\n", msg, w);
    }
    va_end(ap);
  } else {
    CU_FAIL("error body is not {\"error\":{\"code\":S,\"message\":S}}");
    fprintf(stderr, "body: %s\n", r->body ? r->body : "(none)");
  }
  json_object_put(o);
  reply_free(r);
}

#define check_error(r, status, ...) check_error_(r, status, __VA_ARGS__, NULL)

/* PUTs body to /v1/images/img and checks for a 400 naming words; the op
 * must not be called. */
#define check_bad_body(body, ...)                                              \
  do {                                                                         \
    struct reply r_;                                                           \
    unsigned calls_ = fake_calls();                                            \
    put("img", body, &r_);                                                     \
    check_error(&r_, 400, "invalid", __VA_ARGS__);                             \
    CU_ASSERT_EQUAL(fake_calls(), calls_);                                     \
  } while (0)

/* PUTs body to /v1/vms/vmx and checks for a 400 naming words; the op
 * must not be called. */
#define check_bad_vm(body, ...)                                                \
  do {                                                                         \
    struct reply r_;                                                           \
    unsigned calls_ = fake_calls();                                            \
    put_vm("vmx", body, &r_);                                                  \
    check_error(&r_, 400, "invalid", __VA_ARGS__);                             \
    CU_ASSERT_EQUAL(fake_calls(), calls_);                                     \
  } while (0)

/* PUTs body to /v1/vms/vmx and expects it to reach the op (201). */
static void
check_good_vm(const char *body)
{
  struct reply r;
  unsigned calls = fake_calls();
  put_vm("vmx", body, &r);
  CU_ASSERT_EQUAL(r.status, 201);
  if (r.status != 201)
    fprintf(stderr, "%s: %ld %s\n", body, r.status, r.body ? r.body : "");
  CU_ASSERT_EQUAL(fake_calls(), calls + 1);
  reply_free(&r);
}

/* A valid attach body with the given version and upstream list text. */
static char *
attach_body(const char *version, const char *ups_json)
{
  char *s;
  if (asprintf(&s, "{\"version\": \"%s\", \"upstreams\": %s}", version,
               ups_json) < 0)
    abort();
  return s;
}

/* ---- fixture ------------------------------------------------------------ */

static char t_dir[64];
static char t_file[128];
static char t_capture[128];
static char t_msg[4096];

static int
suite_init(void)
{
  signal(SIGPIPE, SIG_IGN);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return -1;
  t_ctl = control_new("127.0.0.1:0", TOKEN, &fake_ops);
  if (t_ctl == NULL || control_port(t_ctl) == 0)
    return -1;
  snprintf(t_base, sizeof t_base, "http://127.0.0.1:%u", control_port(t_ctl));
  snprintf(t_dir, sizeof t_dir, "/tmp/test-control.XXXXXX");
  if (mkdtemp(t_dir) == NULL)
    return -1;
  snprintf(t_file, sizeof t_file, "%s/token", t_dir);
  snprintf(t_capture, sizeof t_capture, "%s/capture", t_dir);
  return 0;
}

static int
suite_clean(void)
{
  control_free(t_ctl);
  fake_clear();
  curl_global_cleanup();
  unlink(t_file);
  unlink(t_capture);
  rmdir(t_dir);
  return 0;
}

/* Every test starts with one image, "ready", attached. */
static void
test_setup(void)
{
  fake_clear();
  const char *ups[] = { UP0, UP1 };
  pthread_mutex_lock(&fake.lock);
  fake_add("ready", V1, ups, 2);
  pthread_mutex_unlock(&fake.lock);
}

static void
test_teardown(void)
{
}

/* ---- routes and replies --------------------------------------------------- */

static void
test_healthz(void)
{
  struct reply r;
  http(&(struct req){ .method = "GET", .path = "/healthz" }, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  CU_ASSERT_STRING_EQUAL(r.body, "{\"status\":\"ok\"}\n");
  reply_free(&r);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_healthz_method(void)
{
  struct reply r;
  http(&(struct req){ .method = "POST", .path = "/healthz" }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD");
  check_error(&r, 405, "method_not_allowed", "POST", "GET");
}

static void
test_list(void)
{
  struct reply r;
  get("/v1/images", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  struct json_object *o = body_json(&r), *a;
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "images", &a));
  CU_ASSERT_EQUAL(json_object_array_length(a), 1);
  json_object_put(o);
  reply_free(&r);
}

static void
test_get(void)
{
  struct reply r;
  get("/v1/images/ready", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  struct json_object *o = body_json(&r), *v, *c;
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "version", &v));
  CU_ASSERT_STRING_EQUAL(json_object_get_string(v), V1);
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "counters", &c));
  CU_ASSERT_EQUAL(json_object_object_length(c), 13);
  json_object_put(o);
  reply_free(&r);
}

static void
test_head(void)
{
  struct reply r;
  http(&(struct req){ .method = "HEAD", .path = "/v1/images/ready",
                      .auth = AUTH }, &r);
  CU_ASSERT_FALSE(r.failed);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_EQUAL(r.len, 0);
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  reply_free(&r);
}

static void
test_get_unknown(void)
{
  struct reply r;
  get("/v1/images/nothere", &r);
  check_error(&r, 404, "not_found", "nothere");
}

static void
test_attach_created(void)
{
  struct reply r;
  char *body = attach_body(V2, "[\"" UP0 "\", \"" UP1 "\"]");
  put("img", body, &r);
  CU_ASSERT_EQUAL(r.status, 201);
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  struct json_object *o = body_json(&r), *n;
  CU_ASSERT_TRUE(json_object_object_get_ex(o, "name", &n));
  CU_ASSERT_STRING_EQUAL(json_object_get_string(n), "img");
  json_object_put(o);
  reply_free(&r);

  /* The op saw exactly the request. */
  CU_ASSERT_EQUAL(fake.attach_calls, 1);
  CU_ASSERT_STRING_EQUAL(fake.last_name, "img");
  CU_ASSERT_STRING_EQUAL(fake.last_version, V2);
  CU_ASSERT_EQUAL(fake.last_nups, 2);
  CU_ASSERT_STRING_EQUAL(fake.last_ups[0], UP0);
  CU_ASSERT_STRING_EQUAL(fake.last_ups[1], UP1);

  get("/v1/images/img", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);

  /* Again with the same version: 200; with another: the op's 409. */
  put("img", body, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);
  free(body);
  body = attach_body(V1, "[\"" UP0 "\"]");
  put("img", body, &r);
  check_error(&r, 409, "conflict", "detach it first");
  free(body);
}

static void
test_attach_16_upstreams(void)
{
  char ups[2048] = "[";
  for (int i = 0; i < CONTROL_UPSTREAMS_MAX; i++)
    snprintf(ups + strlen(ups), sizeof ups - strlen(ups), "%s\"nbd://n%d:10809/img\"",
             i ? ", " : "", i);
  strcat(ups, "]");
  char *body = attach_body(V1, ups);
  struct reply r;
  put("img", body, &r);
  CU_ASSERT_EQUAL(r.status, 201);
  CU_ASSERT_EQUAL(fake.last_nups, CONTROL_UPSTREAMS_MAX);
  CU_ASSERT_STRING_EQUAL(fake.last_ups[15], "nbd://n15:10809/img");
  reply_free(&r);
  free(body);
}

static void
test_attach_op_error(void)
{
  struct reply r;
  char *body = attach_body(V1, "[\"" UP0 "\", \"" UP1 "\"]");
  put("broken", body, &r);
  check_error(&r, 502, "bad_gateway", "upstream " UP1, "connection refused");
  free(body);
}

static void
test_detach(void)
{
  struct reply r;
  http(&(struct req){ .method = "DELETE", .path = "/v1/images/ready",
                      .auth = AUTH }, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{}\n");
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  reply_free(&r);
  get("/v1/images/ready", &r);
  check_error(&r, 404, "not_found", "ready");
  http(&(struct req){ .method = "DELETE", .path = "/v1/images/ready",
                      .auth = AUTH }, &r);
  check_error(&r, 404, "not_found", "no image 'ready' attached");
}

static void
test_op_bad_status(void)
{
  struct reply r;
  get("/v1/images/weird", &r);
  check_error(&r, 500, "internal", "bad status");
}

/* ---- authentication --------------------------------------------------- */

static void
test_no_token(void)
{
  static const char *const paths[] = { "/v1/images", "/v1/images/ready" };
  for (size_t i = 0; i < 2; i++) {
    struct reply r;
    http(&(struct req){ .method = "GET", .path = paths[i] }, &r);
    CU_ASSERT_STRING_EQUAL(r.www_auth, "Bearer realm=\"thunderd\"");
    check_error(&r, 401, "unauthorized", "Authorization: Bearer");
  }
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_wrong_token(void)
{
  static const char *const bad[] = {
    "Authorization: Bearer not-the-token-at-all-0123456789",
    "Authorization: Bearer " TOKEN "x",
    "Authorization: Bearer t0ken-for-the-control-unit-tes",
    "Authorization: Bearer ",
    "Authorization: Basic " TOKEN,
    "Authorization: " TOKEN,
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct reply r;
    http(&(struct req){ .method = "GET", .path = "/v1/images/ready",
                        .auth = bad[i] }, &r);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.www_auth, "Bearer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.www_auth, "invalid_token"));
    check_error(&r, 401, "unauthorized", "wrong bearer token");
  }
  /* A PUT with a body and a wrong token: refused before the body is
   * looked at. */
  struct reply r;
  char *body = attach_body(V1, "[\"" UP0 "\"]");
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img",
                      .auth = "Authorization: Bearer wrong-wrong-wrong-wrong",
                      .body = body, .len = strlen(body) }, &r);
  check_error(&r, 401, "unauthorized", "wrong bearer token");
  free(body);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_token_scheme_case(void)
{
  struct reply r;
  http(&(struct req){ .method = "GET", .path = "/v1/images/ready",
                      .auth = "Authorization: bearer " TOKEN }, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);
}

/* ---- paths, methods, names ------------------------------------------------ */

static void
test_unknown_path(void)
{
  static const char *const paths[] = {
    "/", "/v1", "/v1/", "/v1/images/", "/v1/images/a/b", "/v2/images",
    "/healthz/x", "/v1/imagesx",
  };
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    struct reply r;
    get(paths[i], &r);
    check_error(&r, 404, "not_found", "no such path");
  }
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_method_not_allowed(void)
{
  struct reply r;
  http(&(struct req){ .method = "PUT", .path = "/v1/images", .auth = AUTH,
                      .body = "{}", .len = 2 }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD");
  check_error(&r, 405, "method_not_allowed", "PUT");
  http(&(struct req){ .method = "POST", .path = "/v1/images/ready",
                      .auth = AUTH, .body = "{}", .len = 2 }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD, PUT, DELETE");
  check_error(&r, 405, "method_not_allowed", "POST");
  http(&(struct req){ .method = "PATCH", .path = "/v1/images/ready",
                      .auth = AUTH }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD, PUT, DELETE");
  check_error(&r, 405, "method_not_allowed", "PATCH");
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_bad_name(void)
{
  char longname[300];
  memset(longname, 'a', 256);
  longname[256] = '\0';
  const char *names[] = { ".hidden", "-dash", "a%20b", "a@manifest", "a%00b",
                          "a%2Fb", "caf%C3%A9", longname };
  char *body = attach_body(V1, "[\"" UP0 "\"]");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    struct reply r;
    char path[512];
    snprintf(path, sizeof path, "/v1/images/%s", names[i]);
    get(path, &r);
    check_error(&r, 400, "invalid", "image name", "not valid");
    put(names[i], body, &r);
    check_error(&r, 400, "invalid", "image name", "not valid");
  }
  free(body);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

/* ---- body limits ---------------------------------------------------------- */

static void
test_body_too_large(void)
{
  size_t n = CONTROL_BODY_MAX + 1;
  char *big = malloc(n);
  memset(big, ' ', n);
  memcpy(big, "{}", 2);
  struct reply r;
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img",
                      .auth = AUTH, .body = big, .len = n }, &r);
  check_error(&r, 413, "too_large", "65536");
  free(big);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_body_at_limit(void)
{
  /* A valid body padded with whitespace to exactly CONTROL_BODY_MAX. */
  char *body = attach_body(V1, "[\"" UP0 "\"]");
  size_t n = CONTROL_BODY_MAX, len = strlen(body);
  char *buf = malloc(n);
  memcpy(buf, body, len);
  memset(buf + len, '\n', n - len);
  struct reply r;
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img",
                      .auth = AUTH, .body = buf, .len = n }, &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
  free(buf);
  free(body);
}

static void
test_body_chunked_too_large(void)
{
  struct reply r;
  t_chunk_left = 3 * CONTROL_BODY_MAX;
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img",
                      .auth = AUTH, .chunked = true }, &r);
  check_error(&r, 413, "too_large");
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_body_huge_declared(void)
{
  /* Declared far over the cap, the client waiting for 100-continue: the
   * 413 comes at once and the body is never sent. */
  size_t n = 8 * 1024 * 1024;
  char *big = calloc(1, n);
  struct reply r;
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img",
                      .auth = AUTH, .body = big, .len = n, .expect = true },
       &r);
  check_error(&r, 413, "too_large");
  free(big);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_keepalive_after_errors(void)
{
  /* One connection: an error with a body left unread must not leave the
   * connection out of step for the next request. */
  CURL *h = curl_easy_init();
  struct reply r;
  char *body = attach_body(V1, "[\"" UP0 "\"]");
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img",
                      .auth = "Authorization: Bearer nope-nope-nope-nope",
                      .body = body, .len = strlen(body), .h = h }, &r);
  check_error(&r, 401, "unauthorized");
  http(&(struct req){ .method = "PUT", .path = "/v1/images/.bad",
                      .auth = AUTH, .body = body, .len = strlen(body), .h = h },
       &r);
  check_error(&r, 400, "invalid");
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img", .auth = AUTH,
                      .body = body, .len = strlen(body), .h = h }, &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
  http(&(struct req){ .method = "GET", .path = "/v1/images/img", .auth = AUTH,
                      .h = h }, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);
  long conns = -1;
  curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
  CU_ASSERT_EQUAL(conns, 0); /* the last request reused the connection */
  free(body);
  curl_easy_cleanup(h);
}

/* ---- JSON and the attach schema ------------------------------------------- */

static void
test_malformed_json(void)
{
  check_bad_body("", "body", "empty");
  check_bad_body("{", "body", "not JSON", "ends early");
  check_bad_body("{\"version\":}", "body", "not JSON");
  check_bad_body("{'version': 'x'}", "body", "not JSON");
  check_bad_body("{\"version\": \"" V1 "\", \"upstreams\": [\"" UP0 "\"],}",
                 "body", "not JSON");
  check_bad_body("{} {}", "body", "not JSON", "offset 3");
  check_bad_body("{}x", "body", "not JSON");
  check_bad_body("[]", "body", "expected a JSON object", "array");
  check_bad_body("null", "body", "expected a JSON object");
  check_bad_body("42", "body", "expected a JSON object");
  check_bad_body("\"x\"", "body", "expected a JSON object");
  check_bad_body("{\"version\": \"\xff\xfe\"}", "body", "not JSON");

  /* A NUL byte inside. */
  struct reply r;
  static const char nul[] = "{\"version\": \"a\0b\"}";
  http(&(struct req){ .method = "PUT", .path = "/v1/images/img", .auth = AUTH,
                      .body = nul, .len = sizeof nul - 1 }, &r);
  check_error(&r, 400, "invalid", "NUL byte");
}

static void
test_too_deep(void)
{
  check_bad_body("{\"version\": \"" V1 "\", \"upstreams\": [[[[[[[[[[\"x\"]]]]]]]]]]}",
                 "nested deeper than 8");
  check_bad_body("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                 "nested deeper than 8");
}

static void
test_fields(void)
{
  check_bad_body("{}", "field 'version'", "missing");
  check_bad_body("{\"version\": \"" V1 "\"}", "field 'upstreams'", "missing");
  check_bad_body("{\"upstreams\": [\"" UP0 "\"]}", "field 'version'",
                 "missing");
  check_bad_body("{\"version\": \"" V1 "\", \"upstreams\": [\"" UP0
                 "\"], \"force\": true}",
                 "field 'force'", "unknown field");
  check_bad_body("{\"version\": \"" V1 "\", \"upstreams\": [\"" UP0
                 "\"], \"version\": \"" V2 "\"}",
                 "field 'version'", "more than once");
  /* An escaped key is still the known field. */
  struct reply r;
  put("img", "{\"ver\\u0073ion\": \"" V1 "\", \"upstreams\": [\"" UP0 "\"]}",
      &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
}

static void
test_bad_version(void)
{
  check_bad_body("{\"version\": 12, \"upstreams\": [\"" UP0 "\"]}",
                 "field 'version'", "expected a string");
  check_bad_body("{\"version\": \"" "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef" "\", \"upstreams\": [\"" UP0 "\"]}",
                 "field 'version'", "64 lowercase hex");
  check_bad_body("{\"version\": \"" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde" "\", \"upstreams\": [\"" UP0 "\"]}",
                 "field 'version'", "64 lowercase hex", "63 characters");
  check_bad_body("{\"version\": \"" V1 "0\", \"upstreams\": [\"" UP0 "\"]}",
                 "field 'version'", "64 lowercase hex");
  check_bad_body("{\"version\": \"" "g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" "\", \"upstreams\": [\"" UP0 "\"]}",
                 "field 'version'");
  check_bad_body("{\"version\": \"\", \"upstreams\": [\"" UP0 "\"]}",
                 "field 'version'");
}

static void
test_bad_upstreams(void)
{
  char *b;
#define BAD_UPS(ups, ...)                                                      \
  do {                                                                         \
    b = attach_body(V1, ups);                                                  \
    check_bad_body(b, __VA_ARGS__);                                            \
    free(b);                                                                   \
  } while (0)

  BAD_UPS("[]", "field 'upstreams'", "empty");
  BAD_UPS("\"" UP0 "\"", "field 'upstreams'", "expected an array");
  BAD_UPS("{}", "field 'upstreams'", "expected an array");
  BAD_UPS("null", "field 'upstreams'", "expected an array");
  BAD_UPS("[\"" UP0 "\", 7]", "field 'upstreams[1]'", "expected a string");
  BAD_UPS("[\"" UP0 "\", \"" UP1 "\", \"http://origin/img\"]",
          "field 'upstreams[2]'", "not an NBD URI");
  BAD_UPS("[\"nbds://h:1/img\"]", "field 'upstreams[0]'", "not an NBD URI");
  BAD_UPS("[\"NBD://h:1/img\"]", "field 'upstreams[0]'", "not an NBD URI");
  BAD_UPS("[\"\"]", "field 'upstreams[0]'", "not an NBD URI");
  BAD_UPS("[\"nbd://\"]", "field 'upstreams[0]'", "no host");
  BAD_UPS("[\"nbd:///img\"]", "field 'upstreams[0]'", "no host");
  BAD_UPS("[\"nbd+unix:///img\"]", "field 'upstreams[0]'", "socket=");
  BAD_UPS("[\"nbd://h:1/i\\u0001mg\"]", "field 'upstreams[0]'", "0x01");
  BAD_UPS("[\"nbd://h:1/i\\nmg\"]", "field 'upstreams[0]'", "0x0a");
  BAD_UPS("[\"nbd://h:1/i mg\"]", "field 'upstreams[0]'", "0x20");
  BAD_UPS("[\"nbd://h:1/i\\u0000mg\"]", "field 'upstreams[0]'", "0x00");
  BAD_UPS("[\"nbd://h:1/caf\\u00e9\"]", "field 'upstreams[0]'", "0xc3");
  BAD_UPS("[\"" UP0 "\", \"" UP1 "\", \"" UP0 "\"]", "field 'upstreams[2]'",
          "same as upstreams[0]");

  /* 17 entries. */
  char ups[2048] = "[";
  for (int i = 0; i <= CONTROL_UPSTREAMS_MAX; i++)
    snprintf(ups + strlen(ups), sizeof ups - strlen(ups),
             "%s\"nbd://n%d:10809/img\"", i ? ", " : "", i);
  strcat(ups, "]");
  BAD_UPS(ups, "field 'upstreams'", "17 entries", "at most 16");

  /* An URI of CONTROL_URI_MAX bytes is fine, one more is not. */
  char *uri = malloc(CONTROL_URI_MAX + 8);
  char *list = malloc(CONTROL_URI_MAX + 64);
  strcpy(uri, "nbd://h:1/");
  memset(uri + 10, 'x', CONTROL_URI_MAX - 10);
  uri[CONTROL_URI_MAX] = '\0';
  snprintf(list, CONTROL_URI_MAX + 64, "[\"" UP0 "\", \"%s\"]", uri);
  b = attach_body(V1, list);
  struct reply r;
  put("img", b, &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
  free(b);
  strcat(uri, "x");
  snprintf(list, CONTROL_URI_MAX + 64, "[\"" UP0 "\", \"%s\"]", uri);
  BAD_UPS(list, "field 'upstreams[1]'", "4097 bytes", "at most 4096");
  free(list);
  free(uri);
#undef BAD_UPS
}

/* ---- the VM routes ----------------------------------------------------------- */

static void
test_vm_put_created(void)
{
  struct reply r;
  put_vm("vm-2.a_b", "{\"image\": \"debian12\", \"vcpus\": 4, \"memory_mib\": 2048,"
         " \"disk_gib\": 20, \"accel\": \"tcg\"}", &r);
  CU_ASSERT_EQUAL(r.status, 201);
  CU_ASSERT_STRING_EQUAL(r.content_type, "application/json");
  CU_ASSERT_STRING_EQUAL(r.body, "{\"name\":\"vm-2.a_b\"}\n");
  reply_free(&r);
  /* The op saw exactly the request. */
  CU_ASSERT_EQUAL(fake.vm_calls, 1);
  CU_ASSERT_STRING_EQUAL(fake.vm.name, "vm-2.a_b");
  CU_ASSERT_STRING_EQUAL(fake.vm.image, "debian12");
  CU_ASSERT_EQUAL(fake.vm.vcpus, 4);
  CU_ASSERT_EQUAL(fake.vm.memory_mib, 2048);
  CU_ASSERT_EQUAL(fake.vm.disk_gib, 20);
  CU_ASSERT_EQUAL(fake.vm.accel, CONTROL_ACCEL_TCG);

  /* Optional fields left out: disk 0, accel auto.  Keys in any order,
   * escaped keys are the same fields. */
  put_vm("vm3", "{\"memory_mib\": 16, \"vcp\\u0075s\": 1, \"image\": \"img\"}", &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
  CU_ASSERT_STRING_EQUAL(fake.vm.name, "vm3");
  CU_ASSERT_STRING_EQUAL(fake.vm.image, "img");
  CU_ASSERT_EQUAL(fake.vm.vcpus, 1);
  CU_ASSERT_EQUAL(fake.vm.memory_mib, 16);
  CU_ASSERT_EQUAL(fake.vm.disk_gib, 0);
  CU_ASSERT_EQUAL(fake.vm.accel, CONTROL_ACCEL_AUTO);

  put_vm("vm4", "{\"image\": \"img\", \"vcpus\": 256, \"memory_mib\": 4194304,"
         " \"disk_gib\": 65536, \"accel\": \"kvm\"}", &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
  CU_ASSERT_EQUAL(fake.vm.vcpus, 256);
  CU_ASSERT_EQUAL(fake.vm.memory_mib, 4194304);
  CU_ASSERT_EQUAL(fake.vm.disk_gib, 65536);
  CU_ASSERT_EQUAL(fake.vm.accel, CONTROL_ACCEL_KVM);

  put_vm("vm5", "{\"image\": \"img\", \"vcpus\": 2.0, \"memory_mib\": 1.6e1,"
         " \"accel\": \"auto\"}", &r);
  CU_ASSERT_EQUAL(r.status, 201);
  reply_free(&r);
  CU_ASSERT_EQUAL(fake.vm.vcpus, 2);
  CU_ASSERT_EQUAL(fake.vm.memory_mib, 16);
  CU_ASSERT_EQUAL(fake.vm.accel, CONTROL_ACCEL_AUTO);
}

static void
test_vm_put_op_replies(void)
{
  struct reply r;
  static const char body[] = "{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64}";
  put_vm("exists", body, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"name\":\"exists\"}\n");
  reply_free(&r);
  put_vm("nopool", body, &r);
  check_error(&r, 409, "no_pool", "no libvirt pool");
}

static void
test_vm_get_delete_list_node(void)
{
  struct reply r;
  get("/v1/vms/vm1", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"name\":\"vm1\"}\n");
  reply_free(&r);
  http(&(struct req){ .method = "HEAD", .path = "/v1/vms/vm1", .auth = AUTH },
       &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_EQUAL(r.len, 0);
  reply_free(&r);
  get("/v1/vms/vm2", &r);
  check_error(&r, 404, "not_found", "no VM vm2");

  http(&(struct req){ .method = "DELETE", .path = "/v1/vms/vm1", .auth = AUTH },
       &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{}\n");
  reply_free(&r);
  http(&(struct req){ .method = "DELETE", .path = "/v1/vms/vm2", .auth = AUTH },
       &r);
  check_error(&r, 404, "not_found", "vm2");

  get("/v1/vms", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"vms\":[{\"name\":\"vm1\"}]}\n");
  reply_free(&r);
  get("/v1/node", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_STRING_EQUAL(r.body, "{\"hostname\":\"fake\"}\n");
  reply_free(&r);
  http(&(struct req){ .method = "HEAD", .path = "/v1/node", .auth = AUTH },
       &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);
  CU_ASSERT_EQUAL(fake.vm_calls, 8);
}

static void
test_vm_no_token(void)
{
  static const char *const paths[] = { "/v1/vms", "/v1/vms/vm1", "/v1/node" };
  for (size_t i = 0; i < 3; i++) {
    struct reply r;
    http(&(struct req){ .method = "GET", .path = paths[i] }, &r);
    CU_ASSERT_STRING_EQUAL(r.www_auth, "Bearer realm=\"thunderd\"");
    check_error(&r, 401, "unauthorized", "Authorization: Bearer");
    http(&(struct req){ .method = "GET", .path = paths[i],
                        .auth = "Authorization: Bearer wrong-wrong-wrong-wrong" },
         &r);
    check_error(&r, 401, "unauthorized", "wrong bearer token");
  }
  /* A PUT with a wrong token: refused before the body is looked at. */
  struct reply r;
  static const char body[] = "{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64}";
  http(&(struct req){ .method = "PUT", .path = "/v1/vms/vm1", .body = body,
                      .len = strlen(body) }, &r);
  check_error(&r, 401, "unauthorized");
  http(&(struct req){ .method = "DELETE", .path = "/v1/vms/vm1",
                      .auth = "Authorization: Basic " TOKEN }, &r);
  check_error(&r, 401, "unauthorized", "wrong bearer token");
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_vm_paths_and_methods(void)
{
  static const char *const paths[] = {
    "/v1/vms/", "/v1/vms/a/b", "/v1/vmsx", "/v1/nodes", "/v1/node/x",
    "/v1/node/", "/v1/vm/vm1",
  };
  struct reply r;
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    get(paths[i], &r);
    check_error(&r, 404, "not_found", "no such path", "/v1/vms");
  }

  http(&(struct req){ .method = "POST", .path = "/v1/vms/vm1", .auth = AUTH,
                      .body = "{}", .len = 2 }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD, PUT, DELETE");
  check_error(&r, 405, "method_not_allowed", "POST", "/v1/vms/NAME");
  http(&(struct req){ .method = "PATCH", .path = "/v1/vms/vm1", .auth = AUTH },
       &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD, PUT, DELETE");
  check_error(&r, 405, "method_not_allowed", "PATCH");
  http(&(struct req){ .method = "PUT", .path = "/v1/vms", .auth = AUTH,
                      .body = "{}", .len = 2 }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD");
  check_error(&r, 405, "method_not_allowed", "PUT", "/v1/vms");
  http(&(struct req){ .method = "POST", .path = "/v1/vms", .auth = AUTH,
                      .body = "{}", .len = 2 }, &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD");
  check_error(&r, 405, "method_not_allowed", "POST");
  http(&(struct req){ .method = "DELETE", .path = "/v1/node", .auth = AUTH },
       &r);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD");
  check_error(&r, 405, "method_not_allowed", "DELETE", "/v1/node");
  http(&(struct req){ .method = "PUT", .path = "/v1/node", .auth = AUTH,
                      .body = "{}", .len = 2 }, &r);
  check_error(&r, 405, "method_not_allowed", "PUT");
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_vm_bad_name(void)
{
  char longname[300];
  memset(longname, 'v', 256);
  longname[256] = '\0';
  const char *names[] = { ".hidden", "-dash", "a%20b", "a@b", "a%00b",
                          "a%2Fb", "caf%C3%A9", longname };
  static const char body[] = "{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64}";
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    struct reply r;
    char path[512];
    snprintf(path, sizeof path, "/v1/vms/%s", names[i]);
    get(path, &r);
    check_error(&r, 400, "invalid", "VM name", "not valid");
    put_vm(names[i], body, &r);
    check_error(&r, 400, "invalid", "VM name", "not valid");
    http(&(struct req){ .method = "DELETE", .path = path, .auth = AUTH }, &r);
    check_error(&r, 400, "invalid", "VM name", "not valid");
  }
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_vm_malformed_json(void)
{
  check_bad_vm("", "body", "empty");
  check_bad_vm("{", "body", "not JSON", "ends early");
  check_bad_vm("{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64,}",
               "body", "not JSON");
  check_bad_vm("{\"image\": \"img\"} {}", "body", "not JSON");
  check_bad_vm("[]", "body", "expected a JSON object", "array");
  check_bad_vm("null", "body", "expected a JSON object");
  check_bad_vm("\"vm\"", "body", "expected a JSON object");
  check_bad_vm("{\"image\": {\"a\": [[[[[[[[[1]]]]]]]]]}}", "nested deeper than 8");

  struct reply r;
  static const char nul[] = "{\"image\": \"a\0b\"}";
  http(&(struct req){ .method = "PUT", .path = "/v1/vms/vmx", .auth = AUTH,
                      .body = nul, .len = sizeof nul - 1 }, &r);
  check_error(&r, 400, "invalid", "NUL byte");

  /* Over the size limit: 413. */
  size_t n = CONTROL_BODY_MAX + 1;
  char *big = malloc(n);
  memset(big, ' ', n);
  memcpy(big, "{}", 2);
  http(&(struct req){ .method = "PUT", .path = "/v1/vms/vmx", .auth = AUTH,
                      .body = big, .len = n }, &r);
  check_error(&r, 413, "too_large", "65536");
  free(big);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

static void
test_vm_fields(void)
{
  check_bad_vm("{}", "field 'image'", "missing");
  check_bad_vm("{\"image\": \"img\", \"memory_mib\": 64}", "field 'vcpus'",
               "missing", "1 to 256");
  check_bad_vm("{\"image\": \"img\", \"vcpus\": 1}", "field 'memory_mib'",
               "missing", "16 to 4194304");
  check_bad_vm("{\"vcpus\": 1, \"memory_mib\": 64}", "field 'image'", "missing");
  check_bad_vm("{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64, \"size\": 1}",
               "field 'size'", "unknown field", "image, vcpus, memory_mib, disk_gib and accel");
  /* An attach field is not a VM field. */
  check_bad_vm("{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64, \"version\": \"" V1 "\"}",
               "field 'version'", "unknown field");
  check_bad_vm("{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64, \"vcpus\": 2}",
               "field 'vcpus'", "more than once");
  check_bad_vm("{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64, \"accel\": \"kvm\","
               " \"acc\\u0065l\": \"tcg\"}",
               "field 'accel'", "more than once");
}

static void
test_vm_types(void)
{
#define VM(image, vcpus, mem, extra)                                           \
  "{\"image\": " image ", \"vcpus\": " vcpus ", \"memory_mib\": " mem extra "}"
  check_bad_vm(VM("7", "1", "64", ""), "field 'image'", "expected a string", "int");
  check_bad_vm(VM("null", "1", "64", ""), "field 'image'", "expected a string", "null");
  check_bad_vm(VM("[\"img\"]", "1", "64", ""), "field 'image'", "expected a string");
  check_bad_vm(VM("\"img\"", "\"2\"", "64", ""), "field 'vcpus'", "expected an integer", "string");
  check_bad_vm(VM("\"img\"", "true", "64", ""), "field 'vcpus'", "expected an integer", "boolean");
  check_bad_vm(VM("\"img\"", "null", "64", ""), "field 'vcpus'", "expected an integer", "null");
  check_bad_vm(VM("\"img\"", "1.5", "64", ""), "field 'vcpus'", "1.5 is not an integer");
  check_bad_vm(VM("\"img\"", "1", "[]", ""), "field 'memory_mib'", "expected an integer", "array");
  check_bad_vm(VM("\"img\"", "1", "{}", ""), "field 'memory_mib'", "expected an integer", "object");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"disk_gib\": null"), "field 'disk_gib'",
               "expected an integer", "null");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"disk_gib\": \"8G\""), "field 'disk_gib'",
               "expected an integer");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"accel\": 1"), "field 'accel'",
               "expected \"auto\", \"kvm\" or \"tcg\"", "int");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"accel\": null"), "field 'accel'", "null");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"accel\": \"fast\""), "field 'accel'",
               "'fast' is not one of auto, kvm, tcg");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"accel\": \"KVM\""), "field 'accel'",
               "not one of");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"accel\": \"\""), "field 'accel'",
               "not one of");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"accel\": \"kvm\\u0000\""), "field 'accel'",
               "not one of");
}

static void
test_vm_ranges(void)
{
  check_bad_vm(VM("\"img\"", "0", "64", ""), "field 'vcpus'", "0 is out of range", "1 to 256");
  check_bad_vm(VM("\"img\"", "257", "64", ""), "field 'vcpus'", "257 is out of range");
  check_bad_vm(VM("\"img\"", "-1", "64", ""), "field 'vcpus'", "-1 is out of range");
  check_bad_vm(VM("\"img\"", "4294967297", "64", ""), "field 'vcpus'", "out of range");
  check_bad_vm(VM("\"img\"", "99999999999999999999", "64", ""), "field 'vcpus'",
               "out of range");
  check_bad_vm(VM("\"img\"", "1e30", "64", ""), "field 'vcpus'");
  check_bad_vm(VM("\"img\"", "1", "15", ""), "field 'memory_mib'", "15 is out of range",
               "16 to 4194304");
  check_bad_vm(VM("\"img\"", "1", "4194305", ""), "field 'memory_mib'", "out of range");
  check_bad_vm(VM("\"img\"", "1", "0", ""), "field 'memory_mib'", "out of range");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"disk_gib\": 0"), "field 'disk_gib'",
               "0 is out of range", "1 to 65536");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"disk_gib\": 65537"), "field 'disk_gib'",
               "out of range");
  check_bad_vm(VM("\"img\"", "1", "64", ", \"disk_gib\": -8"), "field 'disk_gib'",
               "out of range");
  /* The edges are fine. */
  check_good_vm(VM("\"img\"", "1", "16", ", \"disk_gib\": 1"));
  check_good_vm(VM("\"img\"", "256", "4194304", ", \"disk_gib\": 65536"));
}

static void
test_vm_bad_image(void)
{
  char longname[300];
  memset(longname, 'i', 256);
  longname[256] = '\0';
  char body[512];
  snprintf(body, sizeof body, VM("\"%s\"", "1", "64", ""), longname);
  check_bad_vm(body, "field 'image'", "not a valid image name");
  check_bad_vm(VM("\".img\"", "1", "64", ""), "field 'image'", "'.img' is not a valid image name");
  check_bad_vm(VM("\"-img\"", "1", "64", ""), "field 'image'", "not a valid image name");
  check_bad_vm(VM("\"a/b\"", "1", "64", ""), "field 'image'", "not a valid image name");
  check_bad_vm(VM("\"a b\"", "1", "64", ""), "field 'image'", "not a valid image name");
  check_bad_vm(VM("\"\"", "1", "64", ""), "field 'image'", "not a valid image name");
  check_bad_vm(VM("\"caf\\u00e9\"", "1", "64", ""), "field 'image'", "not a valid image name");
  check_bad_vm(VM("\"img\\u0000x\"", "1", "64", ""), "field 'image'", "not a valid image name");
  snprintf(body, sizeof body, VM("\"%.255s\"", "1", "64", ""), longname);
  check_good_vm(body);
#undef VM
}

/* A control endpoint whose caller has no VM ops: 501. */
static void
test_vm_not_implemented(void)
{
  struct control_ops ops = fake_ops;
  ops.vm_put = NULL;
  ops.vm_get = NULL;
  ops.vm_delete = NULL;
  ops.vm_list = NULL;
  ops.node_info = NULL;
  struct control *c = control_new("127.0.0.1:0", TOKEN, &ops);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  char saved[64];
  snprintf(saved, sizeof saved, "%s", t_base);
  snprintf(t_base, sizeof t_base, "http://127.0.0.1:%u", control_port(c));
  struct reply r;
  get("/v1/vms", &r);
  check_error(&r, 501, "not_implemented");
  get("/v1/vms/vm1", &r);
  check_error(&r, 501, "not_implemented");
  get("/v1/node", &r);
  check_error(&r, 501, "not_implemented");
  put_vm("vm1", "{\"image\": \"img\", \"vcpus\": 1, \"memory_mib\": 64}", &r);
  check_error(&r, 501, "not_implemented");
  /* The body is still checked first. */
  put_vm("vm1", "{}", &r);
  check_error(&r, 400, "invalid", "field 'image'");
  http(&(struct req){ .method = "DELETE", .path = "/v1/vms/vm1", .auth = AUTH },
       &r);
  check_error(&r, 501, "not_implemented");
  snprintf(t_base, sizeof t_base, "%s", saved);
  control_free(c);
  CU_ASSERT_EQUAL(fake_calls(), 0);
}

/* ---- threads ------------------------------------------------------------ */

static void *
slow_attach(void *arg)
{
  struct reply *r = arg;
  char *body = attach_body(V1, "[\"" UP0 "\"]");
  put("slow", body, r);
  free(body);
  return NULL;
}

static void
test_slow_attach_does_not_stall(void)
{
  pthread_t th;
  struct reply slow;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, slow_attach, &slow), 0);
  pthread_mutex_lock(&fake.lock);
  while (!fake.slow_entered)
    pthread_cond_wait(&fake.cond, &fake.lock);
  pthread_mutex_unlock(&fake.lock);

  /* The attach is blocked inside the op; other requests still run. */
  struct reply r;
  http(&(struct req){ .method = "GET", .path = "/healthz" }, &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);
  get("/v1/images", &r);
  CU_ASSERT_EQUAL(r.status, 200);
  reply_free(&r);

  pthread_mutex_lock(&fake.lock);
  fake.slow_release = true;
  pthread_cond_broadcast(&fake.cond);
  pthread_mutex_unlock(&fake.lock);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(slow.status, 201);
  reply_free(&slow);
}

/* ---- control_new ---------------------------------------------------------- */

static void
test_new_errors(void)
{
  char busy[64];
  snprintf(busy, sizeof busy, "127.0.0.1:%u", control_port(t_ctl));
  /* (No unresolvable host name here: that could wait on DNS.) */
  const char *bad[] = { "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x",
                        "127.0.0.1:65536", "[::1:80", "[]:0", "1:2:3", busy };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct control *c = control_new(bad[i], TOKEN, &fake_ops);
    CU_ASSERT_PTR_NULL(c);
    if (c)
      fprintf(stderr, "control_new('%s') succeeded\n", bad[i]);
    control_free(c);
  }
  CU_ASSERT_PTR_NULL(control_new("127.0.0.1:0", "short", &fake_ops));
}

static void
test_new_ipv6(void)
{
  /* Skipped where the host has no IPv6 loopback. */
  int s = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a = { .sin6_family = AF_INET6,
                            .sin6_addr = IN6ADDR_LOOPBACK_INIT };
  bool have = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0;
  if (s >= 0)
    close(s);
  if (!have)
    return;
  struct control *c = control_new("[::1]:0", TOKEN, &fake_ops);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  CU_ASSERT(control_port(c) > 0);
  char url[64];
  snprintf(url, sizeof url, "http://[::1]:%u/healthz", control_port(c));
  CURL *h = curl_easy_init();
  struct reply r = { 0 };
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  CU_ASSERT_EQUAL(curl_easy_perform(h), CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  CU_ASSERT_EQUAL(r.status, 200);
  curl_easy_cleanup(h);
  reply_free(&r);
  control_free(c);
}

static void
test_new_any_address(void)
{
  /* ":PORT" listens on every address; 127.0.0.1 reaches it either way
   * (IPv6 dual stack, or IPv4). */
  struct control *c = control_new(":0", TOKEN, &fake_ops);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/healthz", control_port(c));
  CURL *h = curl_easy_init();
  struct reply r = { 0 };
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
  CU_ASSERT_EQUAL(curl_easy_perform(h), CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  CU_ASSERT_EQUAL(r.status, 200);
  curl_easy_cleanup(h);
  reply_free(&r);
  control_free(c);
}

/* ---- control_read_token -------------------------------------------------- */

static void
write_token(const char *text, size_t len, mode_t mode)
{
  unlink(t_file);
  int fd = open(t_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_EQUAL_FATAL(write(fd, text, len), (ssize_t)len);
  CU_ASSERT_EQUAL_FATAL(fchmod(fd, mode), 0);
  close(fd);
}

/* control_read_token(path) with stderr captured into t_msg. */
static char *
read_token(const char *path)
{
  fflush(stderr);
  int saved = dup(2);
  int cap = open(t_capture, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (saved == -1 || cap == -1 || dup2(cap, 2) == -1)
    abort();
  close(cap);
  char *t = control_read_token(path);
  fflush(stderr);
  if (dup2(saved, 2) == -1)
    abort();
  close(saved);
  FILE *fp = fopen(t_capture, "r");
  if (fp == NULL)
    abort();
  size_t n = fread(t_msg, 1, sizeof t_msg - 1, fp);
  t_msg[n] = '\0';
  fclose(fp);
  return t;
}

/* The token file holding text with mode must be refused with a message
 * naming the file and containing word. */
static void
check_token_refused(const char *text, size_t len, mode_t mode,
                    const char *word)
{
  write_token(text, len, mode);
  char *t = read_token(t_file);
  CU_ASSERT_PTR_NULL(t);
  free(t);
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, t_file));
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, word));
  if (strstr(t_msg, word) == NULL)
    fprintf(stderr, "message '%s' lacks '%s'\n", t_msg, word);
}

#define TOKEN_REFUSED(s, mode, word) check_token_refused(s, sizeof s - 1, mode, word)

static void
test_token_trimmed(void)
{
  static const char text[] = "  \t" TOKEN " \r\n\n";
  write_token(text, sizeof text - 1, 0600);
  char *t = read_token(t_file);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  CU_ASSERT_STRING_EQUAL(t, TOKEN);
  free(t);
  write_token(TOKEN, strlen(TOKEN), 0640);
  t = read_token(t_file);
  CU_ASSERT_PTR_NOT_NULL(t);
  free(t);
  write_token(TOKEN, strlen(TOKEN), 0400);
  t = read_token(t_file);
  CU_ASSERT_PTR_NOT_NULL(t);
  free(t);
}

static void
test_token_mode(void)
{
  TOKEN_REFUSED(TOKEN, 0644, "0644");
  TOKEN_REFUSED(TOKEN, 0604, "mode");
  TOKEN_REFUSED(TOKEN, 0602, "mode");
  TOKEN_REFUSED(TOKEN, 0601, "mode");
}

static void
test_token_length(void)
{
  TOKEN_REFUSED("0123456789abcde\n", 0600, "15 characters");
  TOKEN_REFUSED("", 0600, "0 characters");
  TOKEN_REFUSED(" \n \n", 0600, "0 characters");

  char buf[300];
  memset(buf, 'k', sizeof buf);
  write_token(buf, 16, 0600);
  char *t = read_token(t_file);
  CU_ASSERT_PTR_NOT_NULL(t);
  free(t);
  write_token(buf, 256, 0600);
  t = read_token(t_file);
  CU_ASSERT_PTR_NOT_NULL(t);
  CU_ASSERT_EQUAL(t ? strlen(t) : 0, 256);
  free(t);
  check_token_refused(buf, 257, 0600, "257 characters");
}

static void
test_token_characters(void)
{
  TOKEN_REFUSED("0123456789 abcdefgh\n", 0600, "0x20");
  TOKEN_REFUSED("0123456789abcdefgh\nsecond-line-here\n", 0600, "0x0a");
  TOKEN_REFUSED("0123456789\001abcdefgh", 0600, "0x01");
  TOKEN_REFUSED("0123456789\0abcdefgh", 0600, "0x00");
  TOKEN_REFUSED("0123456789\xc3\xa9" "abcdefgh", 0600, "0xc3");
}

static void
test_token_not_a_file(void)
{
  char missing[160];
  snprintf(missing, sizeof missing, "%s/missing", t_dir);
  char *t = read_token(missing);
  CU_ASSERT_PTR_NULL(t);
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, missing));
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "No such file"));
  chmod(t_dir, 0700);
  t = read_token(t_dir);
  CU_ASSERT_PTR_NULL(t);
  CU_ASSERT_PTR_NOT_NULL(strstr(t_msg, "not a regular file"));
}

#define T(name) { #name, test_##name }
static const struct cunit_test tests[] = {
  T(healthz),
  T(healthz_method),
  T(list),
  T(get),
  T(head),
  T(get_unknown),
  T(attach_created),
  T(attach_16_upstreams),
  T(attach_op_error),
  T(detach),
  T(op_bad_status),
  T(no_token),
  T(wrong_token),
  T(token_scheme_case),
  T(unknown_path),
  T(method_not_allowed),
  T(bad_name),
  T(body_too_large),
  T(body_at_limit),
  T(body_chunked_too_large),
  T(body_huge_declared),
  T(keepalive_after_errors),
  T(malformed_json),
  T(too_deep),
  T(fields),
  T(bad_version),
  T(bad_upstreams),
  T(vm_put_created),
  T(vm_put_op_replies),
  T(vm_get_delete_list_node),
  T(vm_no_token),
  T(vm_paths_and_methods),
  T(vm_bad_name),
  T(vm_malformed_json),
  T(vm_fields),
  T(vm_types),
  T(vm_ranges),
  T(vm_bad_image),
  T(vm_not_implemented),
  T(slow_attach_does_not_stall),
  T(new_errors),
  T(new_ipv6),
  T(new_any_address),
  T(token_trimmed),
  T(token_mode),
  T(token_length),
  T(token_characters),
  T(token_not_a_file),
};

int
main(void)
{
  static const struct cunit_suite suite = {
    "control", suite_init, suite_clean, test_setup, test_teardown,
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
