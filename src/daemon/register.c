/* thunder — thunderd's registration with thunder-api; see register.h.
 *
 * The thread's states:
 *
 *   unregistered --POST /v1/nodes 200/201--> registered
 *   registered   --heartbeat 404----------> unregistered (at once)
 *
 * What each answer does, in either state:
 *   200/201           success; a problem logged before is logged as over
 *   4xx (not above)   the API refuses us (bad token, bad body, no such
 *                     route): logged as an error each time with the API's
 *                     message, retried every SLOW_RETRY_MS
 *   transport, 5xx,   an outage: logged once when it starts and once when
 *   anything else     it ends; unregistered retries back off from
 *                     BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS, heartbeats
 *                     keep their interval
 * Heartbeats keep their cadence: the next one is due an interval after
 * the previous one started.  The API's bodies are never trusted: only the
 * status decides; an error body is only shown, sanitised.
 *
 * Requests run on a curl multi handle so that register_stop can wake
 * curl_multi_poll (curl_multi_wakeup) and abort a request in flight; the
 * waits between requests are a condition variable on CLOCK_MONOTONIC.
 */
#include "register.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "cleanup.h"
#include "curlbuf.h"
#include "jsonutil.h"
#include "log.h"
#include "tlsdir.h"

#define COMPONENT "register"

#define REQUEST_TIMEOUT_MS 5000L
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define SLOW_RETRY_MS 30000
/* The most of a reply body kept (for its error message); the rest is
 * read and dropped. */
#define REPLY_MAX 16384
#define REPLY_JSON_DEPTH 4
#define ERROR_MESSAGE_MAX 300

#define NAME_RULE "1-64 characters of A-Z a-z 0-9 . _ -, not starting with" \
                  " '.' or '-'"

struct register_config {
  char *api;           /* without a trailing '/' */
  char *token;
  char *name;
  char *nbd_uri;
  char *control_url;
  char *rack, *zone;   /* NULL: none */
  uint64_t vcpus, memory_mib, disk_gib;
  unsigned interval_ms;
  char *cacert, *cert, *key; /* TLS files; NULL: none */
  struct curlbuf_tls tls;    /* pointing at them */
};

/* ---- checks -------------------------------------------------------------- */

int
register_check_name(const char *name, const char *what, char *err,
                    size_t errlen)
{
  size_t n = strlen(name);
  if (n == 0 || n > REGISTER_NAME_MAX || name[0] == '.' || name[0] == '-' ||
      strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-") != n) {
    snprintf(err, errlen, "%s: '%.80s%s': expected " NAME_RULE, what, name,
             n > 80 ? "..." : "");
    return -1;
  }
  return 0;
}

/* True when host (no brackets) is the wildcard address 0.0.0.0 or ::. */
static bool
is_wildcard(const char *host)
{
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1)
    return a4.s_addr == htonl(INADDR_ANY);
  if (inet_pton(AF_INET6, host, &a6) == 1)
    return memcmp(&a6, &in6addr_any, sizeof a6) == 0;
  return false;
}

/* True when host is a DNS name or an IPv4 address: dot-separated labels
 * of letters, digits and '-', none empty or starting or ending with '-'
 * (as schemas/api-node-register.schema.json has it). */
static bool
dns_name(const char *host)
{
  const char *label = host;
  for (;;) {
    size_t n = strspn(label, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "abcdefghijklmnopqrstuvwxyz0123456789-");
    if (n == 0 || n > 63 || label[0] == '-' || label[n - 1] == '-')
      return false;
    if (label[n] == '\0')
      return true;
    if (label[n] != '.')
      return false;
    label += n + 1;
  }
}

/* Splits s: "HOST:PORT", "[V6]:PORT" or ":PORT" (when empty_ok) into host
 * (without brackets; *v6 set when bracketed) and *port (0..65535).  The
 * host is a DNS name, an IPv4 address or, bracketed, an IPv6 address.
 * -1 when malformed. */
static int
split_hostport(const char *s, bool empty_ok, char *host, size_t hlen,
               bool *v6, unsigned *port)
{
  const char *colon;
  *v6 = s[0] == '[';
  if (*v6) {
    const char *close_ = strchr(s, ']');
    size_t n = close_ ? (size_t)(close_ - s - 1) : 0;
    if (close_ == NULL || close_[1] != ':' || n == 0 || n >= hlen)
      return -1;
    memcpy(host, s + 1, n);
    host[n] = '\0';
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) != 1)
      return -1;
    colon = close_ + 1;
  } else {
    colon = strchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : 0;
    if (colon == NULL || n >= hlen || (n == 0 && !empty_ok))
      return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    if (n > 253 || (n > 0 && !dns_name(host)))
      return -1;
  }
  const char *p = colon + 1;
  size_t n = strlen(p);
  if (n == 0 || n > 5 || strspn(p, "0123456789") != n ||
      (n > 1 && p[0] == '0'))
    return -1;
  unsigned long v = strtoul(p, NULL, 10);
  if (v > 65535)
    return -1;
  *port = (unsigned)v;
  return 0;
}

int
register_check_url(const char *url, const char *scheme, int wildcard_ok,
                   const char *what, char *err, size_t errlen)
{
  size_t sl = strlen(scheme);
  char host[256];
  bool v6;
  unsigned port;
  if (strncmp(url, scheme, sl) != 0 || strncmp(url + sl, "://", 3) != 0 ||
      split_hostport(url + sl + 3, false, host, sizeof host, &v6, &port) ==
          -1 ||
      port == 0) {
    snprintf(err, errlen, "%s: '%.200s': expected %s://HOST:PORT (HOST a"
             " name, an IPv4 address or an [IPv6] address; PORT 1-65535;"
             " nothing after it)", what, url, scheme);
    return -1;
  }
  if (!wildcard_ok && is_wildcard(host)) {
    snprintf(err, errlen, "%s: '%.200s': %s is the wildcard address: give"
             " the address other hosts reach", what, url, host);
    return -1;
  }
  return 0;
}

int
register_advertise(const char *scheme, const char *listen, unsigned port,
                   const char *what, char *out, size_t outlen, char *err,
                   size_t errlen)
{
  char host[256];
  bool v6;
  unsigned lport;
  if (split_hostport(listen, true, host, sizeof host, &v6, &lport) == -1) {
    snprintf(err, errlen, "%s: cannot tell from '%.200s' (expected HOST:PORT,"
             " [IPV6]:PORT or :PORT): set %s %s://HOST:PORT", what, listen,
             what, scheme);
    return -1;
  }
  if (host[0] == '\0' || is_wildcard(host)) {
    snprintf(err, errlen, "%s: '%.200s' listens on every address: set %s"
             " %s://HOST:PORT, the address other hosts reach", what, listen,
             what, scheme);
    return -1;
  }
  if (port == 0)
    port = lport;
  if (port == 0) {
    snprintf(err, errlen, "%s: '%.200s' has port 0 (any free port): set %s"
             " %s://HOST:PORT", what, listen, what, scheme);
    return -1;
  }
  if ((size_t)snprintf(out, outlen, "%s://%s%s%s:%u", scheme, v6 ? "[" : "",
                       host, v6 ? "]" : "", port) >= outlen) {
    snprintf(err, errlen, "%s: '%.200s': address too long", what, listen);
    return -1;
  }
  return 0;
}

/* ---- the host ------------------------------------------------------------- */

uint64_t
register_host_vcpus(void)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (uint64_t)n : 1;
}

uint64_t
register_host_memory_mib(void)
{
  FILE *f = fopen("/proc/meminfo", "re");
  if (f == NULL)
    return 0;
  char line[256];
  uint64_t kib = 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kib) == 1)
      break;
  }
  fclose(f);
  return kib / 1024;
}

int
register_host_disk_gib(const char *path, uint64_t *gib)
{
  struct statvfs st;
  if (statvfs(path, &st) == -1)
    return -1;
  *gib = (uint64_t)st.f_bavail * st.f_frsize >> 30;
  return 0;
}

/* ---- the configuration ----------------------------------------------------- */

void
register_config_free(struct register_config *c)
{
  if (c == NULL)
    return;
  free(c->api);
  if (c->token)
    explicit_bzero(c->token, strlen(c->token));
  free(c->token);
  free(c->name);
  free(c->nbd_uri);
  free(c->control_url);
  free(c->rack);
  free(c->zone);
  free(c->cacert);
  free(c->cert);
  free(c->key);
  free(c);
}

struct register_config *
register_config_new(const struct register_options *o, char *err,
                    size_t errlen)
{
  struct register_config *c = calloc(1, sizeof *c);
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  char buf[512];

  if (o->api == NULL || o->token == NULL) {
    snprintf(err, errlen, "--api: needs --api URL and a token (--token-file)");
    goto fail;
  }
  /* The API's URL: http(s)://HOST:PORT, a trailing '/' tolerated. */
  size_t alen = strlen(o->api);
  if (alen >= sizeof buf) {
    snprintf(err, errlen, "--api: longer than %zu bytes", sizeof buf - 1);
    goto fail;
  }
  if (alen > 0 && o->api[alen - 1] == '/')
    alen--;
  snprintf(buf, sizeof buf, "%.*s", (int)alen, o->api);
  if (register_check_url(buf, strncmp(buf, "https:", 6) ? "http" : "https",
                         false, "--api", err, errlen) == -1)
    goto fail;
  c->api = strdup(buf);
  c->token = strdup(o->token);

  if (o->name) {
    if (register_check_name(o->name, "--node-name", err, errlen) == -1)
      goto fail;
    c->name = strdup(o->name);
  } else {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) == -1) {
      snprintf(err, errlen, "--node-name: not set, and gethostname: %s",
               strerror(errno));
      goto fail;
    }
    char e[256];
    if (register_check_name(host, "host name", e, sizeof e) == -1) {
      snprintf(err, errlen, "--node-name: not set, and the %s: set"
               " --node-name", e);
      goto fail;
    }
    c->name = strdup(host);
  }

  /* The NBD scheme follows the listener: nbds:// (TLS) when it speaks
   * TLS; an advertisement the listener would refuse (nbd:// under
   * require) or cannot serve (nbds:// with TLS off) is an error. */
  const char *nscheme = o->nbd_tls != TLSDIR_OFF ? "nbds" : "nbd";
  if (o->advertise_nbd) {
    bool tls = strncmp(o->advertise_nbd, "nbds:", 5) == 0;
    if (register_check_url(o->advertise_nbd, tls ? "nbds" : "nbd", false,
                           "--advertise-nbd", err, errlen) == -1)
      goto fail;
    if (!tls && o->nbd_tls == TLSDIR_REQUIRE) {
      snprintf(err, errlen, "--advertise-nbd: '%.200s' is plaintext NBD,"
               " but --tls require refuses it: advertise nbds://HOST:PORT",
               o->advertise_nbd);
      goto fail;
    }
    if (tls && o->nbd_tls == TLSDIR_OFF) {
      snprintf(err, errlen, "--advertise-nbd: '%.200s' is NBD over TLS, but"
               " --tls is off: advertise nbd://HOST:PORT or set --tls",
               o->advertise_nbd);
      goto fail;
    }
    c->nbd_uri = strdup(o->advertise_nbd);
  } else if (o->listen == NULL) {
    snprintf(err, errlen, "--advertise-nbd: --listen is none, so other"
             " nodes cannot read from this one: give --listen HOST:PORT");
    goto fail;
  } else {
    if (register_advertise(nscheme, o->listen, 0, "--advertise-nbd", buf,
                           sizeof buf, err, errlen) == -1)
      goto fail;
    c->nbd_uri = strdup(buf);
  }

  const char *cscheme = o->control_https ? "https" : "http";
  if (o->advertise_control) {
    if (register_check_url(o->advertise_control, cscheme, false,
                           "--advertise-control", err, errlen) == -1)
      goto fail;
    c->control_url = strdup(o->advertise_control);
  } else if (o->control == NULL) {
    snprintf(err, errlen, "--api: needs --control HOST:PORT");
    goto fail;
  } else {
    if (register_advertise(cscheme, o->control, o->control_port,
                           "--advertise-control", buf, sizeof buf, err,
                           errlen) == -1)
      goto fail;
    c->control_url = strdup(buf);
  }

  if (o->tls) {
    if ((o->tls->cacert && (c->cacert = strdup(o->tls->cacert)) == NULL) ||
        (o->tls->cert && (c->cert = strdup(o->tls->cert)) == NULL) ||
        (o->tls->key && (c->key = strdup(o->tls->key)) == NULL)) {
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
  }
  c->tls = (struct curlbuf_tls){ c->cacert, c->cert, c->key };

  if (o->rack) {
    if (register_check_name(o->rack, "--rack", err, errlen) == -1)
      goto fail;
    c->rack = strdup(o->rack);
  }
  if (o->zone) {
    if (register_check_name(o->zone, "--zone", err, errlen) == -1)
      goto fail;
    c->zone = strdup(o->zone);
  }

  c->vcpus = o->vcpus ? o->vcpus : register_host_vcpus();
  if (c->vcpus > REGISTER_VCPUS_MAX) {
    snprintf(err, errlen, "--capacity-vcpus: %" PRIu64 " is more than the API"
             " takes (%d)", c->vcpus, REGISTER_VCPUS_MAX);
    goto fail;
  }
  c->memory_mib = o->memory_mib ? o->memory_mib : register_host_memory_mib();
  if (c->memory_mib < REGISTER_MEMORY_MIB_MIN ||
      c->memory_mib > REGISTER_MEMORY_MIB_MAX) {
    snprintf(err, errlen, "--capacity-memory-mib: %s%" PRIu64 " MiB is out of"
             " the API's range (%d to %" PRIu64 ")",
             o->memory_mib ? "" : "not set, and MemTotal of /proc/meminfo: ",
             c->memory_mib, REGISTER_MEMORY_MIB_MIN,
             (uint64_t)REGISTER_MEMORY_MIB_MAX);
    goto fail;
  }
  c->disk_gib = o->disk_gib;
  if (c->disk_gib > REGISTER_DISK_GIB_MAX) {
    snprintf(err, errlen, "--capacity-disk-gib: %" PRIu64 " is more than the"
             " API takes (%" PRIu64 ")", c->disk_gib,
             (uint64_t)REGISTER_DISK_GIB_MAX);
    goto fail;
  }
  if (c->disk_gib == 0 && o->disk_path == NULL)
    log_info(COMPONENT, "no libvirt pool: registering 0 GiB of disk, so the"
             " API places no VM here");
  else if (c->disk_gib == 0) {
    if (register_host_disk_gib(o->disk_path, &c->disk_gib) == -1)
      log_warn(COMPONENT, "capacity: statvfs: %s: %m; registering 0 GiB of"
               " disk (set --capacity-disk-gib)", o->disk_path);
    else if (c->disk_gib == 0)
      log_warn(COMPONENT, "capacity: %s has less than 1 GiB free: registering"
               " 0 GiB of disk (set --capacity-disk-gib)", o->disk_path);
    else if (c->disk_gib > REGISTER_DISK_GIB_MAX)
      c->disk_gib = REGISTER_DISK_GIB_MAX;
  }
  c->interval_ms = o->interval_ms ? (unsigned)o->interval_ms
                                  : REGISTER_DEFAULT_INTERVAL_MS;

  if (c->api == NULL || c->token == NULL || c->name == NULL ||
      c->nbd_uri == NULL || c->control_url == NULL ||
      (o->rack && c->rack == NULL) || (o->zone && c->zone == NULL)) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  return c;

fail:
  register_config_free(c);
  return NULL;
}

struct json_object *
register_body(const struct register_config *c)
{
  struct json_object *o = json_object_new_object();
  struct json_object *cap = json_object_new_object();
  struct json_object *labels = json_object_new_object();
  if (o == NULL || cap == NULL || labels == NULL) {
    json_object_put(o);
    json_object_put(cap);
    json_object_put(labels);
    return NULL;
  }
  bool ok = jsonutil_add(cap, "vcpus", json_object_new_uint64(c->vcpus));
  ok = jsonutil_add(cap, "memory_mib", json_object_new_uint64(c->memory_mib)) && ok;
  ok = jsonutil_add(cap, "disk_gib", json_object_new_uint64(c->disk_gib)) && ok;
  if (c->rack)
    ok = jsonutil_add(labels, "rack", json_object_new_string(c->rack)) && ok;
  if (c->zone)
    ok = jsonutil_add(labels, "zone", json_object_new_string(c->zone)) && ok;
  ok = jsonutil_add(o, "name", json_object_new_string(c->name)) && ok;
  ok = jsonutil_add(o, "nbd_uri", json_object_new_string(c->nbd_uri)) && ok;
  ok = jsonutil_add(o, "control_url", json_object_new_string(c->control_url)) && ok;
  ok = jsonutil_add(o, "capacity", cap) && ok;
  ok = jsonutil_add(o, "labels", labels) && ok;
  if (!ok) {
    json_object_put(o);
    return NULL;
  }
  return o;
}

void
register_config_describe(const struct register_config *c, char *out,
                         size_t outlen)
{
  snprintf(out, outlen, "node %s at %s, control %s, %" PRIu64 " vCPUs, %"
           PRIu64 " MiB, %" PRIu64 " GiB%s%s%s%s, heartbeat every %u ms to"
           " %s", c->name, c->nbd_uri, c->control_url, c->vcpus,
           c->memory_mib, c->disk_gib, c->rack ? ", rack " : "",
           c->rack ? c->rack : "", c->zone ? ", zone " : "",
           c->zone ? c->zone : "", c->interval_ms, c->api);
}

/* ---- the API's error bodies ------------------------------------------------ */

/* Appends s to out (at *pos) with anything not printable ASCII as '?'. */
static void
append_clean(char *out, size_t outlen, size_t *pos, const char *s)
{
  for (; *s && *pos + 1 < outlen; s++)
    out[(*pos)++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
  out[*pos] = '\0';
}

int
register_api_error(const char *body, size_t len, char *out, size_t outlen)
{
  snprintf(out, outlen, "no error message");
  if (body == NULL || len == 0)
    return -1;
  char perr[256];
  CLEANUP_JSON_PUT struct json_object *o =
      jsonutil_parse(body, len, REPLY_JSON_DEPTH, JSONUTIL_DUPS_OK, "reply",
                     perr, sizeof perr);
  struct json_object *error, *code, *message;
  if (o == NULL || !json_object_is_type(o, json_type_object) ||
      !json_object_object_get_ex(o, "error", &error) ||
      !json_object_is_type(error, json_type_object) ||
      !json_object_object_get_ex(error, "message", &message) ||
      !json_object_is_type(message, json_type_string))
    return -1;
  size_t pos = 0;
  out[0] = '\0';
  if (json_object_object_get_ex(error, "code", &code) &&
      json_object_is_type(code, json_type_string)) {
    append_clean(out, outlen, &pos, json_object_get_string(code));
    append_clean(out, outlen, &pos, ": ");
  }
  append_clean(out, outlen, &pos, json_object_get_string(message));
  return 0;
}

/* ---- the thread ------------------------------------------------------------- */

struct registrar {
  struct register_config *cfg;
  char *body;          /* the registration request, as text */
  char *register_url;  /* API/v1/nodes */
  char *heartbeat_url; /* API/v1/nodes/NAME/heartbeat */
  struct curl_slist *headers;
  CURLM *multi;
  CURL *easy;
  pthread_t thread;
  bool started;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* signalled when stop is set */
  bool stop;           /* under lock */
  atomic_bool stopping;
  /* The reply being read. */
  struct curlbuf reply;  /* its first REPLY_MAX bytes */
};

/* The result of one request. */
enum result {
  RESULT_STOPPED = -2,  /* register_stop aborted it */
  RESULT_TRANSPORT = -1 /* no HTTP status; message in msg */
  /* else the HTTP status */
};

/* POSTs body (application/json) to url; the status, or a result. */
static long
post(struct registrar *r, const char *url, const char *body, char *msg,
     size_t msglen)
{
  char errbuf[CURL_ERROR_SIZE] = "";
  CURL *h = r->easy;
  curlbuf_init(&r->reply, REPLY_MAX, true);
  msg[0] = '\0';
  curl_easy_reset(h);
  if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body)) !=
          CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, REQUEST_TIMEOUT_MS) !=
          CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS) !=
          CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
      curlbuf_tls(h, &r->cfg->tls) != CURLE_OK ||
      curlbuf_attach(h, &r->reply) != CURLE_OK) {
    snprintf(msg, msglen, "curl_easy_setopt failed");
    return RESULT_TRANSPORT;
  }
  if (curl_multi_add_handle(r->multi, h) != CURLM_OK) {
    snprintf(msg, msglen, "curl_multi_add_handle failed");
    return RESULT_TRANSPORT;
  }
  int running = 1;
  CURLMcode mc = CURLM_OK;
  while (!atomic_load(&r->stopping)) {
    mc = curl_multi_perform(r->multi, &running);
    if (mc != CURLM_OK || running == 0)
      break;
    mc = curl_multi_poll(r->multi, NULL, 0, 1000, NULL);
    if (mc != CURLM_OK)
      break;
  }
  CURLcode res = CURLE_OK;
  bool done = false;
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(r->multi, &left)) != NULL)
    if (m->msg == CURLMSG_DONE && m->easy_handle == h) {
      res = m->data.result;
      done = true;
    }
  curl_multi_remove_handle(r->multi, h);
  if (atomic_load(&r->stopping) && !done)
    return RESULT_STOPPED;
  if (mc != CURLM_OK) {
    snprintf(msg, msglen, "%s", curl_multi_strerror(mc));
    return RESULT_TRANSPORT;
  }
  if (!done || res != CURLE_OK) {
    snprintf(msg, msglen, "%s%s", errbuf[0] ? errbuf
                                  : curl_easy_strerror(done ? res
                                                            : CURLE_FAILED_INIT),
             curlbuf_tls_hint(res, &r->cfg->tls));
    return RESULT_TRANSPORT;
  }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status < 100 || status > 599) {
    snprintf(msg, msglen, "bad HTTP status %ld", status);
    return RESULT_TRANSPORT;
  }
  return status;
}

static uint64_t
now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits until the monotonic time deadline (ms); true when stopping. */
static bool
wait_until(struct registrar *r, uint64_t deadline)
{
  struct timespec ts = { .tv_sec = (time_t)(deadline / 1000),
                         .tv_nsec = (long)(deadline % 1000) * 1000000 };
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&r->lock);
  while (!r->stop && now_ms() < deadline)
    pthread_cond_timedwait(&r->cond, &r->lock, &ts);
  return r->stop;
}

/* What the thread remembers of the problems it logged. */
struct trouble {
  bool outage;        /* transport errors or 5xx, logged at start */
  uint64_t since;     /* when its first failed request started (ms) */
  unsigned failures;  /* requests failed in it */
  bool refused;       /* a 4xx was logged */
};

/* A success: log the end of any problem. */
static void
recovered(struct registrar *r, struct trouble *t)
{
  if (t->outage)
    log_info(COMPONENT, "%s reachable again after %u failed request%s in"
             " %.1f s", r->cfg->api, t->failures, t->failures == 1 ? "" : "s",
             (double)(now_ms() - t->since) / 1000);
  else if (t->refused)
    log_info(COMPONENT, "%s accepts node %s again", r->cfg->api,
             r->cfg->name);
  *t = (struct trouble){ 0 };
}

/* Transport errors, 5xx and any other unexpected answer. */
static void
outage(struct registrar *r, struct trouble *t, uint64_t start,
       const char *what, const char *url, long status, const char *msg)
{
  t->failures++;
  char why[512];
  if (status == RESULT_TRANSPORT)
    snprintf(why, sizeof why, "%s", msg);
  else {
    char apierr[ERROR_MESSAGE_MAX];
    register_api_error(r->reply.data ? r->reply.data : "", r->reply.len,
                       apierr, sizeof apierr);
    snprintf(why, sizeof why, "HTTP %ld (%s)", status, apierr);
  }
  if (!t->outage) {
    t->outage = true;
    t->since = start;
    log_warn(COMPONENT, "%s: POST %s: %s; retrying (logged again once it"
             " recovers)", what, url, why);
  } else
    log_debug(COMPONENT, "%s: POST %s: %s", what, url, why);
}

static void *
register_main(void *arg)
{
  struct registrar *r = arg;
  const struct register_config *c = r->cfg;
  struct trouble t = { 0 };
  bool registered = false;
  unsigned backoff = BACKOFF_MIN_MS;
  char msg[CURL_ERROR_SIZE + 64];

  while (!atomic_load(&r->stopping)) {
    uint64_t start = now_ms();
    const char *what = registered ? "heartbeat" : "register";
    const char *url = registered ? r->heartbeat_url : r->register_url;
    long status = post(r, url, registered ? "{}" : r->body, msg, sizeof msg);
    if (status == RESULT_STOPPED)
      break;
    uint64_t next;
    if (status == 200 || status == 201) {
      recovered(r, &t);
      if (!registered)
        log_info(COMPONENT, "registered with %s as node %s (%s)", c->api,
                 c->name, status == 201 ? "new" : "known");
      else
        log_debug(COMPONENT, "heartbeat: %ld", status);
      registered = true;
      backoff = BACKOFF_MIN_MS;
      next = start + c->interval_ms;
    } else if (registered && status == 404) {
      log_warn(COMPONENT, "heartbeat: %s does not know node %s: registering"
               " again", c->api, c->name);
      registered = false;
      continue;
    } else if (status >= 400 && status < 500) {
      char apierr[ERROR_MESSAGE_MAX];
      register_api_error(r->reply.data ? r->reply.data : "", r->reply.len,
                       apierr, sizeof apierr);
      log_error(COMPONENT, "%s: POST %s: HTTP %ld (%s)%s; retrying in %d s",
                what, url, status, apierr,
                status == 401 ? ": the API does not take this node's token"
                                " (--node-token-file, else --token-file)"
                : !registered ? ": the API refuses the registration"
                              : "",
                SLOW_RETRY_MS / 1000);
      t.refused = true;
      next = start + SLOW_RETRY_MS;
    } else {
      outage(r, &t, start, what, url, status, msg);
      if (registered)
        next = start + c->interval_ms;
      else {
        next = start + backoff;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      }
    }
    if (wait_until(r, next))
      break;
  }
  return NULL;
}

static void
registrar_free(struct registrar *r)
{
  if (r->easy)
    curl_easy_cleanup(r->easy);
  if (r->multi)
    curl_multi_cleanup(r->multi);
  curl_slist_free_all(r->headers);
  free(r->body);
  free(r->reply.data);
  free(r->register_url);
  free(r->heartbeat_url);
  register_config_free(r->cfg);
  pthread_cond_destroy(&r->cond);
  pthread_mutex_destroy(&r->lock);
  free(r);
  curl_global_cleanup();
}

/* a b c d, as a new string; NULL when out of memory. */
static char *
join4(const char *a, const char *b, const char *c, const char *d)
{
  char *s;
  if (asprintf(&s, "%s%s%s%s", a, b, c, d) == -1)
    return NULL;
  return s;
}

struct registrar *
register_start(struct register_config *c)
{
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    log_error(COMPONENT, "curl_global_init failed");
    register_config_free(c);
    return NULL;
  }
  struct registrar *r = calloc(1, sizeof *r);
  if (r == NULL) {
    log_error(COMPONENT, "out of memory");
    register_config_free(c);
    curl_global_cleanup();
    return NULL;
  }
  r->cfg = c;
  atomic_init(&r->stopping, false);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&r->lock, NULL);

  CLEANUP_FREE char *auth = NULL;
  CLEANUP_JSON_PUT struct json_object *body = register_body(c);
  const char *text = body ? json_object_to_json_string_ext(
                                body, JSON_C_TO_STRING_PLAIN |
                                          JSON_C_TO_STRING_NOSLASHESCAPE)
                          : NULL;
  if (text == NULL || (r->body = strdup(text)) == NULL ||
      (r->register_url = join4(c->api, "/v1/nodes", "", "")) == NULL ||
      (r->heartbeat_url = join4(c->api, "/v1/nodes/", c->name,
                                "/heartbeat")) == NULL ||
      (auth = join4("Authorization: Bearer ", c->token, "", "")) == NULL) {
    log_error(COMPONENT, "out of memory");
    goto fail;
  }
  struct curl_slist *h = curl_slist_append(NULL, auth);
  struct curl_slist *h2 = h ? curl_slist_append(h, "Content-Type:"
                                                   " application/json")
                            : NULL;
  struct curl_slist *h3 = h2 ? curl_slist_append(h2, "Accept:"
                                                     " application/json")
                             : NULL;
  /* No "Expect: 100-continue" round trip. */
  struct curl_slist *h4 = h3 ? curl_slist_append(h3, "Expect:") : NULL;
  /* curl_slist_append returns NULL and keeps the list on failure. */
  r->headers = h;
  explicit_bzero(auth, strlen(auth));
  if (h4 == NULL || (r->multi = curl_multi_init()) == NULL ||
      (r->easy = curl_easy_init()) == NULL) {
    log_error(COMPONENT, "out of memory");
    goto fail;
  }
  if ((errno = pthread_create(&r->thread, NULL, register_main, r)) != 0) {
    log_error(COMPONENT, "pthread_create: %m");
    goto fail;
  }
  r->started = true;
  pthread_setname_np(r->thread, "register");
  char desc[1024];
  register_config_describe(c, desc, sizeof desc);
  log_info(COMPONENT, "registering %s", desc);
  return r;

fail:
  registrar_free(r);
  return NULL;
}

void
register_cancel(struct registrar *r)
{
  if (r == NULL)
    return;
  atomic_store(&r->stopping, true);
  pthread_mutex_lock(&r->lock);
  r->stop = true;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);
  curl_multi_wakeup(r->multi);
}

void
register_stop(struct registrar *r)
{
  if (r == NULL)
    return;
  if (r->started) {
    register_cancel(r);
    pthread_join(r->thread, NULL);
  }
  registrar_free(r);
}
