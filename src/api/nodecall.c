/* thunder — thunder-api's parallel calls to node control endpoints (see
 * nodecall.h).  One curl multi handle per batch; a call waiting for its
 * retry sits out until its backoff has passed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "curlbuf.h"
#include "clock.h"
#include "jsonutil.h"
#include "log.h"
#include "nodecall.h"

#define COMPONENT "nodecall"
#define REPLY_DEPTH 16
#define BACKOFF_MS 200

struct slot {
  struct nodecall *call;
  CURL *easy;
  struct curl_slist *headers;
  struct curlbuf reply;  /* at most NODECALL_REPLY_MAX bytes */
  int64_t not_before;   /* ms; a retry waits until then */
  bool active, done;
  const struct curlbuf_tls *tls;
  char errbuf[CURL_ERROR_SIZE]; /* libcurl's message */
  char wrong_peer[NODECALL_ERR_MAX]; /* why pin_check refused the peer */
};

int
nodecall_global_init(void)
{
  CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    log_error(COMPONENT, "curl_global_init: %s", curl_easy_strerror(rc));
    return -1;
  }
  return 0;
}

int
nodecall_set(struct nodecall *call, const char *node, const char *method,
             const char *base, const char *path, struct json_object *json,
             void *user)
{
  memset(call, 0, sizeof *call);
  call->method = method;
  call->user = user;
  if (node && (call->node = strdup(node)) == NULL)
    return -1;
  if (asprintf(&call->url, "%s%s", base, path) == -1) {
    call->url = NULL;
    free(call->node);
    call->node = NULL;
    return -1;
  }
  if (json) {
    const char *s = json_object_to_json_string_ext(json, JSON_C_TO_STRING_PLAIN);
    call->body = s ? strdup(s) : NULL;
    if (call->body == NULL) {
      free(call->url);
      free(call->node);
      call->url = call->node = NULL;
      return -1;
    }
  }
  return 0;
}

void
nodecall_clear(struct nodecall *calls, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(calls[i].url);
    free(calls[i].body);
    free(calls[i].node);
    json_object_put(calls[i].reply);
    calls[i].url = calls[i].body = calls[i].node = NULL;
    calls[i].reply = NULL;
  }
}

const char *
nodecall_describe(const struct nodecall *call, char *buf, size_t len)
{
  if (call->status == 0)
    snprintf(buf, len, "no answer from %s %s: %s", call->method, call->url,
             call->err);
  else
    snprintf(buf, len, "%s %s: %ld%s%s", call->method, call->url,
             call->status, call->err[0] ? ": " : "", call->err);
  return buf;
}

static void
slot_reset(struct slot *s)
{
  if (s->easy)
    curl_easy_cleanup(s->easy);
  curl_slist_free_all(s->headers);
  curlbuf_init(&s->reply, NODECALL_REPLY_MAX, false);
  s->easy = NULL;
  s->headers = NULL;
  s->active = false;
}

/* The CN of a certificate subject as libcurl's CURLINFO_CERTINFO prints
 * it ("Subject:" then, with OpenSSL, "CN=x" or "O=y, CN=x" / "O=y; CN=x";
 * with GnuTLS "CN=x,O=y"), copied to buf; -1 if there is not exactly one
 * CN.  Hand-written: libcurl hands out only this text, and the fleet CA
 * (thunderctl pki) issues single-CN names of [A-Za-z0-9._-]. */
static int
subject_cn(const char *subject, char *buf, size_t len)
{
  int found = 0;
  for (const char *p = subject; *p; p++) {
    if (p != subject && p[-1] != ' ' && p[-1] != ',' && p[-1] != ';' &&
        p[-1] != '/')
      continue;
    const char *v = NULL;
    if (strncmp(p, "CN=", 3) == 0)
      v = p + 3;
    else if (strncmp(p, "CN = ", 5) == 0)
      v = p + 5;
    if (v == NULL)
      continue;
    size_t n = strcspn(v, ",;/+");
    while (n > 0 && v[n - 1] == ' ')
      n--;
    if (n >= len)
      return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    found++;
  }
  return found == 1 ? 0 : -1;
}

/* CURLOPT_PREREQFUNCTION of a pinned call: the connection is up and the
 * server's certificate verified against the fleet CA and the URL's host;
 * the request is not sent yet.  Its leaf certificate (CURLINFO_CERTINFO,
 * certificate 0) must name the call's node. */
static int
pin_check(void *clientp, char *conn_primary_ip, char *conn_local_ip,
          int conn_primary_port, int conn_local_port)
{
  (void)conn_primary_ip;
  (void)conn_local_ip;
  (void)conn_primary_port;
  (void)conn_local_port;
  struct slot *s = clientp;
  struct curl_certinfo *ci = NULL;
  char cn[256] = "";
  bool have = false;
  if (curl_easy_getinfo(s->easy, CURLINFO_CERTINFO, &ci) == CURLE_OK && ci &&
      ci->num_of_certs > 0) {
    for (struct curl_slist *l = ci->certinfo[0]; l && !have; l = l->next)
      if (strncmp(l->data, "Subject:", 8) == 0)
        have = subject_cn(l->data + 8, cn, sizeof cn) == 0;
  }
  if (have && strcmp(cn, s->call->node) == 0)
    return CURL_PREREQFUNC_OK;
  if (have)
    snprintf(s->wrong_peer, sizeof s->wrong_peer,
             "the control endpoint's certificate names node '%s', not '%s' "
             "(node '%s' registered another node's control URL?): request "
             "not sent", cn, s->call->node, s->call->node);
  else
    snprintf(s->wrong_peer, sizeof s->wrong_peer,
             "the control endpoint's certificate has no single CN to match "
             "node '%s': request not sent", s->call->node);
  return CURL_PREREQFUNC_ABORT;
}

static int
slot_start(CURLM *multi, struct slot *s, const struct nodecall_opts *o)
{
  struct nodecall *c = s->call;
  s->easy = curl_easy_init();
  if (s->easy == NULL)
    return -1;
  char auth[600];
  s->headers = curl_slist_append(NULL, "Accept: application/json");
  if (o->token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->token);
    s->headers = curl_slist_append(s->headers, auth);
  }
  if (c->body)
    s->headers = curl_slist_append(s->headers,
                                   "Content-Type: application/json");
  CURL *e = s->easy;
  curl_easy_setopt(e, CURLOPT_URL, c->url);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)(o->timeout_ms < 5000 ? o->timeout_ms : 5000));
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  s->errbuf[0] = '\0';
  s->tls = o->tls;
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
  if (curlbuf_tls(e, o->tls) != CURLE_OK)
    return -1;
  s->wrong_peer[0] = '\0';
  if (o->tls && c->node && strncasecmp(c->url, "https://", 8) == 0) {
    /* A fresh connection each time: a reused one has no handshake, so no
     * certificate to check (and may be another node's). */
    if (curl_easy_setopt(e, CURLOPT_CERTINFO, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, pin_check) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PREREQDATA, s) != CURLE_OK)
      return -1;
  }
  curlbuf_init(&s->reply, NODECALL_REPLY_MAX, false);
  curlbuf_attach(e, &s->reply);
  curl_easy_setopt(e, CURLOPT_PRIVATE, s);
  if (c->body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(c->body));
  } else if (strcmp(c->method, "GET") != 0) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
  }
  if (strcmp(c->method, "GET") == 0)
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  if (curl_multi_add_handle(multi, e) != CURLM_OK)
    return -1;
  s->active = true;
  c->attempts++;
  return 0;
}

static bool
retryable(long status)
{
  return status == 0 || status == 500 || status == 502 || status == 503 ||
         status == 504;
}

/* Reads the finished transfer of s into its call. */
static void
slot_finish(struct slot *s, CURLcode rc)
{
  struct nodecall *c = s->call;
  json_object_put(c->reply);
  c->reply = NULL;
  c->err[0] = '\0';
  c->status = 0;
  if (rc != CURLE_OK && s->wrong_peer[0]) {
    snprintf(c->err, sizeof c->err, "%s", s->wrong_peer);
    return;
  }
  if (rc != CURLE_OK) {
    snprintf(c->err, sizeof c->err, "%s%s",
             s->reply.too_large ? "reply larger than 4 MiB"
             : s->errbuf[0]     ? s->errbuf
                                : curl_easy_strerror(rc),
             curlbuf_tls_hint(rc, s->tls));
    return;
  }
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &c->status);
  if (s->reply.len > 0) {
    char err[256];
    c->reply = jsonutil_parse(s->reply.data, s->reply.len, REPLY_DEPTH,
                              JSONUTIL_DUPS_OK, "reply", err, sizeof err);
  }
  if (c->status >= 400) {
    struct json_object *e, *m;
    if (c->reply && json_object_object_get_ex(c->reply, "error", &e) &&
        json_object_object_get_ex(e, "message", &m) &&
        json_object_is_type(m, json_type_string))
      snprintf(c->err, sizeof c->err, "%s", json_object_get_string(m));
  }
}

void
nodecall_run(struct nodecall *calls, size_t n, const struct nodecall_opts *o)
{
  if (n == 0)
    return;
  struct slot *slots = calloc(n, sizeof *slots);
  CURLM *multi = curl_multi_init();
  if (slots == NULL || multi == NULL) {
    for (size_t i = 0; i < n; i++) {
      calls[i].status = 0;
      snprintf(calls[i].err, sizeof calls[i].err, "out of memory");
    }
    free(slots);
    if (multi)
      curl_multi_cleanup(multi);
    return;
  }
  unsigned parallel = o->parallel ? o->parallel : 1;
  for (size_t i = 0; i < n; i++) {
    slots[i].call = &calls[i];
    calls[i].attempts = 0;
  }

  size_t left = n;
  unsigned active = 0;
  while (left > 0) {
    int64_t now = clock_mono_ms();
    int64_t next_wake = INT64_MAX;
    for (size_t i = 0; i < n && active < parallel; i++) {
      struct slot *s = &slots[i];
      if (s->done || s->active)
        continue;
      if (s->not_before > now) {
        if (s->not_before < next_wake)
          next_wake = s->not_before;
        continue;
      }
      if (slot_start(multi, s, o) == -1) {
        slot_reset(s);
        s->call->status = 0;
        snprintf(s->call->err, sizeof s->call->err, "cannot start request");
        s->done = true;
        left--;
        continue;
      }
      active++;
    }
    if (left == 0)
      break;

    int running = 0;
    curl_multi_perform(multi, &running);
    CURLMsg *msg;
    int q;
    while ((msg = curl_multi_info_read(multi, &q))) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      struct slot *s;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      CURLcode rc = msg->data.result;
      curl_multi_remove_handle(multi, msg->easy_handle);
      slot_finish(s, rc);
      slot_reset(s);
      active--;
      struct nodecall *c = s->call;
      if (retryable(c->status) && c->attempts <= o->retries &&
          s->wrong_peer[0] == '\0') {
        char why[NODECALL_ERR_MAX + 128];
        log_debug(COMPONENT, "retrying %s", nodecall_describe(c, why, sizeof why));
        s->not_before = clock_mono_ms() + ((int64_t)BACKOFF_MS << (c->attempts - 1 < 6 ? c->attempts - 1 : 6));
      } else {
        s->done = true;
        left--;
      }
    }
    if (left == 0)
      break;
    int timeout = 100;
    if (next_wake != INT64_MAX) {
      int64_t d = next_wake - clock_mono_ms();
      if (d < timeout)
        timeout = d < 0 ? 0 : (int)d;
    }
    if (active > 0)
      curl_multi_poll(multi, NULL, 0, timeout, NULL);
    else if (timeout > 0) {
      struct timespec ts = { timeout / 1000, (long)(timeout % 1000) * 1000000 };
      nanosleep(&ts, NULL);
    }
  }
  for (size_t i = 0; i < n; i++)
    slot_reset(&slots[i]);
  curl_multi_cleanup(multi);
  free(slots);
}
