/* thunder — unit tests of thunderd's registration (src/daemon/register.c).
 *
 * The checks of names, URLs and advertised addresses, the API's error
 * bodies and the request body are tested directly.  The thread is tested
 * against a fake thunder-api: a libmicrohttpd server on 127.0.0.1:0 that
 * records every request (path, Authorization, Content-Type, body) and
 * answers from the test's script (struct fake).  A listening socket that
 * never accepts stands for an API that hangs, to check that
 * register_stop aborts a request in flight at once.
 */
#include <CUnit/Basic.h>

#include <arpa/inet.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cunit-run.h"
#include "register.h"
#include "tlsdir.h"

#define TOKEN "n0de-token-for-the-register-unit-test"

static uint64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- checks ---------------------------------------------------------------- */

static void
test_check_name(void)
{
  char err[256];
  CU_ASSERT_EQUAL(register_check_name("node1", "--node-name", err,
                                      sizeof err), 0);
  CU_ASSERT_EQUAL(register_check_name("a.b_c-D9", "x", err, sizeof err), 0);
  char max[REGISTER_NAME_MAX + 2];
  memset(max, 'a', REGISTER_NAME_MAX);
  max[REGISTER_NAME_MAX] = '\0';
  CU_ASSERT_EQUAL(register_check_name(max, "x", err, sizeof err), 0);
  max[REGISTER_NAME_MAX] = 'a';
  max[REGISTER_NAME_MAX + 1] = '\0';
  CU_ASSERT_EQUAL(register_check_name(max, "--node-name", err, sizeof err),
                  -1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "--node-name"));
  const char *bad[] = { "", ".a", "-a", "a b", "a/b", "é", "a:b" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CU_ASSERT_EQUAL(register_check_name(bad[i], "--rack", err, sizeof err),
                    -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--rack"));
  }
}

static void
test_check_url(void)
{
  char err[512];
  const char *good[] = { "http://10.0.0.5:7070", "http://api.example:1",
                         "http://[fd00::1]:65535", "http://localhost:80" };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    CU_ASSERT_EQUAL(register_check_url(good[i], "http", 0, "u", err,
                                       sizeof err), 0);
  const char *bad[] = { "http://10.0.0.5", "http://10.0.0.5:0",
                        "http://10.0.0.5:65536", "http://:7070",
                        "http://10.0.0.5:7070/", "http://10.0.0.5:7070/v1",
                        "nbd://10.0.0.5:7070", "http://fd00::1:7070",
                        "http://[zz]:7070", "http://a b:1", "http://-a:1",
                        "http://0.0.0.0:7070", "http://[::]:7070",
                        "http://a..b:1", "http://10.0.0.5:+70",
                        "http://10.0.0.5:7070?x", "http://a-.b:1",
                        "http://a.:1", "http://-a.b:1", "http://h:080",
                        "http://a_b:1", "http://[fe80::1%eth0]:1" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    if (register_check_url(bad[i], "http", 0, "--advertise-control", err,
                           sizeof err) != -1)
      fprintf(stderr, "accepted: %s\n", bad[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--advertise-control"));
  }
  CU_ASSERT_EQUAL(register_check_url("http://0.0.0.0:7070", "http", 1, "u",
                                     err, sizeof err), 0);
  CU_ASSERT_EQUAL(register_check_url("nbd://h:10809", "nbd", 0, "u", err,
                                     sizeof err), 0);
}

static void
test_advertise(void)
{
  char out[128], err[512];
  CU_ASSERT_EQUAL(register_advertise("nbd", "10.0.0.5:10809", 0, "--a", out,
                                     sizeof out, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(out, "nbd://10.0.0.5:10809");
  CU_ASSERT_EQUAL(register_advertise("http", "10.0.0.5:0", 41234, "--a", out,
                                     sizeof out, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(out, "http://10.0.0.5:41234");
  CU_ASSERT_EQUAL(register_advertise("nbd", "[fd00::5]:10809", 0, "--a", out,
                                     sizeof out, err, sizeof err), 0);
  CU_ASSERT_STRING_EQUAL(out, "nbd://[fd00::5]:10809");
  const char *bad[] = { "0.0.0.0:10809", ":10809", "[::]:10809",
                        "10.0.0.5:0", "10.0.0.5", "fd00::5:1" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CU_ASSERT_EQUAL(register_advertise("nbd", bad[i], 0, "--advertise-nbd",
                                       out, sizeof out, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "set --advertise-nbd nbd://"));
  }
}

static void
test_api_error(void)
{
  char out[64];
  const char *b = "{\"error\": {\"code\": \"unauthorized\", \"message\":"
                  " \"no or wrong token\"}}\n";
  CU_ASSERT_EQUAL(register_api_error(b, strlen(b), out, sizeof out), 0);
  CU_ASSERT_STRING_EQUAL(out, "unauthorized: no or wrong token");
  /* Control characters are replaced, long messages cut. */
  b = "{\"error\":{\"code\":\"x\",\"message\":\"a\\u001b[31mb\\nc\"}}";
  CU_ASSERT_EQUAL(register_api_error(b, strlen(b), out, sizeof out), 0);
  CU_ASSERT_STRING_EQUAL(out, "x: a?[31mb?c");
  char longb[512];
  snprintf(longb, sizeof longb, "{\"error\":{\"message\":\"%0300d\"}}", 0);
  CU_ASSERT_EQUAL(register_api_error(longb, strlen(longb), out, sizeof out),
                  0);
  CU_ASSERT_EQUAL(strlen(out), sizeof out - 1);
  const char *bad[] = { "", "not json", "{\"error\":\"x\"}", "[1]",
                        "{\"error\":{\"message\":5}}", "{\"error\":{}}",
                        "{\"error\":{\"message\":\"m\"}} trailing",
                        ("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{}}}}},"
                         "\"error\":{\"message\":\"deep\"}}") };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(register_api_error(bad[i], strlen(bad[i]), out,
                                       sizeof out), -1);
    CU_ASSERT_STRING_EQUAL(out, "no error message");
  }
}

/* Options of a node with everything given (nothing read from the host). */
static struct register_options
full_options(const char *api)
{
  return (struct register_options){
    .api = api, .token = TOKEN, .name = "node1",
    .advertise_nbd = "nbd://10.0.0.5:10809",
    .advertise_control = "http://10.0.0.5:7070",
    .rack = "r1", .zone = "z1", .vcpus = 16, .memory_mib = 65536,
    .disk_gib = 500, .interval_ms = 100,
    .listen = "0.0.0.0:10809", .control = "0.0.0.0:7070",
  };
}

static const char *
get_str(struct json_object *o, const char *key)
{
  struct json_object *v;
  return json_object_object_get_ex(o, key, &v) &&
         json_object_is_type(v, json_type_string)
             ? json_object_get_string(v) : NULL;
}

static int64_t
get_int(struct json_object *o, const char *key)
{
  struct json_object *v;
  return json_object_object_get_ex(o, key, &v) &&
         json_object_is_type(v, json_type_int) ? json_object_get_int64(v)
                                                : -1;
}

/* Checks that o is the registration body of full_options. */
static void
check_full_body(struct json_object *o)
{
  CU_ASSERT_EQUAL(json_object_object_length(o), 5);
  const char *s = get_str(o, "name");
  CU_ASSERT(s && strcmp(s, "node1") == 0);
  s = get_str(o, "nbd_uri");
  CU_ASSERT(s && strcmp(s, "nbd://10.0.0.5:10809") == 0);
  s = get_str(o, "control_url");
  CU_ASSERT(s && strcmp(s, "http://10.0.0.5:7070") == 0);
  struct json_object *cap = NULL, *labels = NULL;
  CU_ASSERT(json_object_object_get_ex(o, "capacity", &cap));
  CU_ASSERT(json_object_object_get_ex(o, "labels", &labels));
  if (cap) {
    CU_ASSERT_EQUAL(json_object_object_length(cap), 3);
    CU_ASSERT_EQUAL(get_int(cap, "vcpus"), 16);
    CU_ASSERT_EQUAL(get_int(cap, "memory_mib"), 65536);
    CU_ASSERT_EQUAL(get_int(cap, "disk_gib"), 500);
  }
  if (labels) {
    CU_ASSERT_EQUAL(json_object_object_length(labels), 2);
    s = get_str(labels, "rack");
    CU_ASSERT(s && strcmp(s, "r1") == 0);
    s = get_str(labels, "zone");
    CU_ASSERT(s && strcmp(s, "z1") == 0);
  }
}

static void
test_body(void)
{
  char err[512];
  struct register_options o = full_options("http://127.0.0.1:1/");
  struct register_config *c = register_config_new(&o, err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  struct json_object *b = register_body(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  check_full_body(b);
  json_object_put(b);
  register_config_free(c);

  /* Defaults: addresses from listen and control, capacity from the host,
   * no labels. */
  o = (struct register_options){
    .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n2",
    .listen = "10.1.2.3:10809", .control = "10.1.2.3:0",
    .control_port = 4242, .disk_path = "/",
  };
  c = register_config_new(&o, err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  b = register_body(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  const char *s = get_str(b, "nbd_uri");
  CU_ASSERT(s && strcmp(s, "nbd://10.1.2.3:10809") == 0);
  s = get_str(b, "control_url");
  CU_ASSERT(s && strcmp(s, "http://10.1.2.3:4242") == 0);
  struct json_object *cap = NULL, *labels = NULL;
  CU_ASSERT(json_object_object_get_ex(b, "capacity", &cap));
  CU_ASSERT(json_object_object_get_ex(b, "labels", &labels));
  uint64_t disk = 0;
  CU_ASSERT_EQUAL(register_host_disk_gib("/", &disk), 0);
  if (cap) {
    CU_ASSERT_EQUAL(get_int(cap, "vcpus"), (int64_t)register_host_vcpus());
    CU_ASSERT_EQUAL(get_int(cap, "memory_mib"),
                    (int64_t)register_host_memory_mib());
    CU_ASSERT(get_int(cap, "memory_mib") > 0);
    /* Free space moves: within a GiB of a second measurement. */
    CU_ASSERT(llabs(get_int(cap, "disk_gib") - (int64_t)disk) <= 1);
  }
  CU_ASSERT(labels && json_object_object_length(labels) == 0);
  json_object_put(b);
  register_config_free(c);

  /* No pool, or a pool directory that cannot be measured: 0 GiB (the
   * API then places no VM on the node). */
  const char *paths[] = { NULL, "/nonexistent/thunder" };
  for (size_t i = 0; i < 2; i++) {
    o = (struct register_options){
      .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n3",
      .listen = "10.1.2.3:10809", .control = "10.1.2.3:7070",
      .disk_path = paths[i],
    };
    c = register_config_new(&o, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    b = register_body(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT(json_object_object_get_ex(b, "capacity", &cap));
    CU_ASSERT_EQUAL(get_int(cap, "disk_gib"), 0);
    json_object_put(b);
    register_config_free(c);
  }

  /* A listener speaking TLS advertises nbds:// (the API hands it to
   * other nodes, whose fetchers then use TLS); under on, an nbd://
   * advertisement stays allowed (the listener takes both). */
  o = (struct register_options){
    .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n4",
    .listen = "10.1.2.4:10809", .control = "10.1.2.4:7070", .disk_gib = 1,
    .nbd_tls = TLSDIR_REQUIRE,
  };
  c = register_config_new(&o, err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  b = register_body(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  const char *u = get_str(b, "nbd_uri");
  CU_ASSERT(u && strcmp(u, "nbds://10.1.2.4:10809") == 0);
  json_object_put(b);
  register_config_free(c);
  o.nbd_tls = TLSDIR_ON;
  o.advertise_nbd = "nbd://10.1.2.4:10809";
  c = register_config_new(&o, err, sizeof err);
  CU_ASSERT_PTR_NOT_NULL(c);
  register_config_free(c);

  /* Refusals name the option. */
  struct {
    struct register_options o;
    const char *word;
  } bad[] = {
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "0.0.0.0:10809", .control = "10.0.0.1:7070",
        .disk_gib = 1 }, "set --advertise-nbd" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = NULL, .control = "10.0.0.1:7070", .disk_gib = 1 },
      "--listen is none" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = ":7070", .disk_gib = 1 },
      "set --advertise-control" },
    { { .api = "http://127.0.0.1:1/v1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070", .disk_gib = 1 },
      "--api" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070",
        .memory_mib = 8 }, "--capacity-memory-mib" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070",
        .vcpus = REGISTER_VCPUS_MAX + 1 }, "--capacity-vcpus" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070", .disk_gib = 1,
        .zone = ".z" }, "--zone" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070", .disk_gib = 1,
        .advertise_nbd = "nbd://10.0.0.1:1", .nbd_tls = TLSDIR_REQUIRE },
      "--advertise-nbd: 'nbd://10.0.0.1:1' is plaintext NBD, but --tls"
      " require refuses it" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070", .disk_gib = 1,
        .advertise_nbd = "nbds://10.0.0.1:1" }, "--tls is off" },
    { { .api = "http://127.0.0.1:1", .token = TOKEN, .name = "n",
        .listen = "10.0.0.1:1", .control = "10.0.0.1:7070", .disk_gib = 1,
        .advertise_nbd = "nbds://0.0.0.0:1", .nbd_tls = TLSDIR_ON },
      "wildcard" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    c = register_config_new(&bad[i].o, err, sizeof err);
    CU_ASSERT_PTR_NULL(c);
    register_config_free(c);
    if (strstr(err, bad[i].word) == NULL)
      fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err, bad[i].word);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].word));
  }
}

/* ---- the fake thunder-api -------------------------------------------------- */

#define REQ_MAX 64

struct req {
  char path[128];
  char auth[128];
  char ctype[64];
  char body[1024];
  uint64_t at; /* ms */
};

static struct fake {
  pthread_mutex_t lock;
  struct MHD_Daemon *mhd;
  unsigned port;
  struct req reqs[REQ_MAX];
  unsigned n;
  unsigned heartbeats;
  /* The script. */
  unsigned status_all;       /* when not 0: every answer */
  unsigned heartbeat_404_at; /* the heartbeat (1-based) answered 404 */
} fake = { .lock = PTHREAD_MUTEX_INITIALIZER };

struct conn {
  char body[1024];
  size_t len;
};

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *data,
           size_t *data_size, void **state)
{
  struct conn *cs = *state;
  if (cs == NULL) {
    *state = calloc(1, sizeof *cs);
    return *state ? MHD_YES : MHD_NO;
  }
  if (*data_size) {
    size_t keep = *data_size < sizeof cs->body - 1 - cs->len
                      ? *data_size : sizeof cs->body - 1 - cs->len;
    memcpy(cs->body + cs->len, data, keep);
    cs->len += keep;
    *data_size = 0;
    return MHD_YES;
  }
  unsigned status = 200;
  const char *reply = "{}";
  pthread_mutex_lock(&fake.lock);
  if (fake.n < REQ_MAX) {
    struct req *r = &fake.reqs[fake.n];
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                "Authorization");
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                "Content-Type");
    snprintf(r->path, sizeof r->path, "%s %s", method, url);
    snprintf(r->auth, sizeof r->auth, "%s", a ? a : "");
    snprintf(r->ctype, sizeof r->ctype, "%s", t ? t : "");
    snprintf(r->body, sizeof r->body, "%.*s", (int)cs->len, cs->body);
    r->at = now_ms();
    fake.n++;
  }
  bool heartbeat = strstr(url, "/heartbeat") != NULL;
  if (heartbeat)
    fake.heartbeats++;
  if (fake.status_all) {
    status = fake.status_all;
    reply = "{\"error\":{\"code\":\"unauthorized\",\"message\":\"no\"}}";
  } else if (heartbeat && fake.heartbeats == fake.heartbeat_404_at) {
    status = 404;
    reply = "{\"error\":{\"code\":\"not_found\",\"message\":\"who?\"}}";
  } else if (!heartbeat)
    status = 201;
  pthread_mutex_unlock(&fake.lock);
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      strlen(reply), (void *)reply, MHD_RESPMEM_PERSISTENT);
  if (resp == NULL)
    return MHD_NO;
  enum MHD_Result ret = MHD_queue_response(c, status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **state,
             enum MHD_RequestTerminationCode toe)
{
  free(*state);
  *state = NULL;
}

static int
fake_start(unsigned status_all, unsigned heartbeat_404_at)
{
  fake.n = fake.heartbeats = 0;
  fake.status_all = status_all;
  fake.heartbeat_404_at = heartbeat_404_at;
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  fake.mhd = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
      on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
  if (fake.mhd == NULL)
    return -1;
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(fake.mhd, MHD_DAEMON_INFO_BIND_PORT);
  fake.port = info ? info->port : 0;
  return fake.port ? 0 : -1;
}

/* Waits until the fake has n requests or timeout_ms passes. */
static unsigned
fake_wait(unsigned n, unsigned timeout_ms)
{
  uint64_t end = now_ms() + timeout_ms;
  for (;;) {
    pthread_mutex_lock(&fake.lock);
    unsigned have = fake.n;
    pthread_mutex_unlock(&fake.lock);
    if (have >= n || now_ms() >= end)
      return have;
    usleep(10000);
  }
}

static struct registrar *
start_node(unsigned port, unsigned interval_ms)
{
  char api[64], err[512];
  snprintf(api, sizeof api, "http://127.0.0.1:%u", port);
  struct register_options o = full_options(api);
  o.interval_ms = interval_ms;
  struct register_config *c = register_config_new(&o, err, sizeof err);
  if (c == NULL) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return register_start(c);
}

/* Registers, heartbeats every 300 ms with the token, and registers again
 * after a 404. */
static void
test_thread_heartbeats(void)
{
  CU_ASSERT_FATAL(fake_start(0, 3) == 0);
  struct registrar *r = start_node(fake.port, 300);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  unsigned n = fake_wait(7, 8000);
  uint64_t t0 = now_ms();
  register_stop(r);
  CU_ASSERT(now_ms() - t0 < 500);
  MHD_stop_daemon(fake.mhd);
  CU_ASSERT_FATAL(n >= 7);
  /* register, hb 1, hb 2, hb 3 (404), register, hb 4, ... */
  const char *want[] = { "POST /v1/nodes", "POST /v1/nodes/node1/heartbeat",
                         "POST /v1/nodes/node1/heartbeat",
                         "POST /v1/nodes/node1/heartbeat", "POST /v1/nodes",
                         "POST /v1/nodes/node1/heartbeat" };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    CU_ASSERT_STRING_EQUAL(fake.reqs[i].path, want[i]);
  for (unsigned i = 0; i < n && i < REQ_MAX; i++) {
    CU_ASSERT_STRING_EQUAL(fake.reqs[i].auth, "Bearer " TOKEN);
    CU_ASSERT_STRING_EQUAL(fake.reqs[i].ctype, "application/json");
  }
  for (unsigned i = 0; i <= 4; i += 4) {
    struct json_object *b = json_tokener_parse(fake.reqs[i].body);
    CU_ASSERT_PTR_NOT_NULL(b);
    if (b)
      check_full_body(b);
    json_object_put(b);
  }
  CU_ASSERT_STRING_EQUAL(fake.reqs[1].body, "{}");
  /* The cadence: heartbeats 300 ms apart (one interval after the start of
   * the previous request), the re-registration at once after the 404. */
  uint64_t gap = fake.reqs[2].at - fake.reqs[1].at;
  CU_ASSERT(gap >= 290 && gap < 700);
  CU_ASSERT(fake.reqs[4].at - fake.reqs[3].at < 150);
  gap = fake.reqs[5].at - fake.reqs[4].at;
  CU_ASSERT(gap >= 290 && gap < 700);
}

/* A 401 is retried slowly (30 s): one request in a second. */
static void
test_thread_refused(void)
{
  CU_ASSERT_FATAL(fake_start(401, 0) == 0);
  struct registrar *r = start_node(fake.port, 100);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  fake_wait(1, 2000);
  usleep(1000000);
  uint64_t t0 = now_ms();
  register_stop(r);
  CU_ASSERT(now_ms() - t0 < 500);
  MHD_stop_daemon(fake.mhd);
  CU_ASSERT_EQUAL(fake.n, 1);
  CU_ASSERT_STRING_EQUAL(fake.reqs[0].path, "POST /v1/nodes");
}

/* A 503 is an outage: registration backs off from 250 ms doubling
 * (requests at 0, 250, 750, 1750 ms, ...). */
static void
test_thread_backoff(void)
{
  CU_ASSERT_FATAL(fake_start(503, 0) == 0);
  struct registrar *r = start_node(fake.port, 100);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  unsigned n = fake_wait(4, 3000);
  register_stop(r);
  MHD_stop_daemon(fake.mhd);
  CU_ASSERT_FATAL(n >= 4);
  uint64_t g1 = fake.reqs[1].at - fake.reqs[0].at;
  uint64_t g2 = fake.reqs[2].at - fake.reqs[1].at;
  uint64_t g3 = fake.reqs[3].at - fake.reqs[2].at;
  CU_ASSERT(g1 >= 240 && g1 < 600);
  CU_ASSERT(g2 >= 490 && g2 < 850);
  CU_ASSERT(g3 >= 990 && g3 < 1400);
  for (unsigned i = 0; i < 4; i++)
    CU_ASSERT_STRING_EQUAL(fake.reqs[i].path, "POST /v1/nodes");
}

/* An API that takes the connection and never answers: register_stop
 * returns at once, not after the 5 s request timeout. */
static void
test_thread_stop_in_flight(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CU_ASSERT_FATAL(fd >= 0);
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CU_ASSERT_FATAL(listen(fd, 8) == 0);
  CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
  struct registrar *r = start_node(ntohs(sa.sin_port), 100);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  usleep(300000); /* connected (in the backlog) and waiting */
  uint64_t t0 = now_ms();
  register_stop(r);
  CU_ASSERT(now_ms() - t0 < 500); /* curl_multi_poll waits 1 s unwoken */
  close(fd);
}

int
main(void)
{
  static const struct cunit_suite suite = { "register" };
  static const struct cunit_test tests[] = {
    { "check_name", test_check_name },
    { "check_url", test_check_url },
    { "advertise", test_advertise },
    { "api_error", test_api_error },
    { "body", test_body },
    { "thread_heartbeats", test_thread_heartbeats },
    { "thread_refused", test_thread_refused },
    { "thread_backoff", test_thread_backoff },
    { "thread_stop_in_flight", test_thread_stop_in_flight },
  };
  return cunit_run(&suite, tests, sizeof tests / sizeof tests[0]);
}
