/* thunder — thunderctl's client of thunder-api; see apiclient.h.
 *
 * The connection, the capped reply buffer and the depth-limited parser are
 * httpjson.c's, shared with nodeclient.c; what the API adds is here: an
 * Idempotency-Key header, retries of a request that got no reply, messages
 * kept rather than printed, and the API's error codes in them.
 */
#include "apiclient.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "httpjson.h"

#define PROG "thunderctl"

/* Longest part of a server's text put in a message. */
#define SHOWN_MAX 400

struct apiclient {
  struct httpjson http;
  long timeout;               /* seconds per request */
  unsigned retries;
  long status;                /* of the last reply, 0 if none */
  char err[1024];             /* the last failure */
};

/* ---- text from the server -------------------------------------------------- */

char *
apiclient_sanitize(const char *s, char *buf, size_t len)
{
  size_t n = 0;
  if (len == 0)
    return buf;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (n + 1 >= len) {
      if (len >= 4)
        memcpy(buf + len - 4, "...", 3), n = len - 1;
      break;
    }
    unsigned char c = *p;
    if (c == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) { /* C1 as UTF-8 */
      buf[n++] = '?';
      p++;
    } else if (c < 0x20 || c == 0x7f) {
      buf[n++] = '?';
    } else {
      buf[n++] = (char)c;
    }
  }
  buf[n] = '\0';
  return buf;
}

/* Keeps the message of a failure: what, then printf of fmt. */
static void __attribute__((format(printf, 3, 4)))
set_error(struct apiclient *ac, const char *what, const char *fmt, ...)
{
  int n = snprintf(ac->err, sizeof ac->err, "%s: ", what);
  if (n < 0 || (size_t)n >= sizeof ac->err)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ac->err + n, sizeof ac->err - (size_t)n, fmt, ap);
  va_end(ap);
}

/* ---- set-up ------------------------------------------------------------------ */

static struct apiclient *
new_client(const char *url, const char *token)
{
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
    fprintf(stderr, PROG ": --api '%s': expected http://HOST:PORT\n", url);
    return NULL;
  }
  for (const char *p = url; *p; p++) {
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' ||
        *p == '#') {
      fprintf(stderr, PROG ": --api '%s': a URL without spaces, control characters, '?' or '#' is expected\n",
              url);
      return NULL;
    }
  }
  struct apiclient *ac = calloc(1, sizeof *ac);
  if (ac == NULL) {
    fprintf(stderr, PROG ": out of memory\n");
    return NULL;
  }
  if (httpjson_init(&ac->http, url, token) < 0) {
    free(ac);
    return NULL;
  }
  ac->timeout = APICLIENT_TIMEOUT;
  ac->retries = APICLIENT_RETRIES;
  return ac;
}

struct apiclient *
apiclient_new(const char *url, const char *token_file)
{
  CLEANUP_FREE char *token =
      httpjson_token(NULL, token_file, APICLIENT_TOKEN_FILE_ENV);
  if (token == NULL)
    return NULL;
  struct apiclient *ac = new_client(url, token);
  explicit_bzero(token, strlen(token));
  return ac;
}

void
apiclient_set_timeout(struct apiclient *ac, long seconds)
{
  ac->timeout = seconds < 1 ? 1 : seconds;
}

void
apiclient_set_retries(struct apiclient *ac, unsigned retries)
{
  ac->retries = retries;
}

const char *
apiclient_error(const struct apiclient *ac)
{
  return ac->err;
}

long
apiclient_status(const struct apiclient *ac)
{
  return ac->status;
}

const char *
apiclient_url(const struct apiclient *ac)
{
  return ac->http.url;
}

void
apiclient_free(struct apiclient *ac)
{
  if (ac == NULL)
    return;
  httpjson_fini(&ac->http);
  free(ac);
}

/* ---- one request ------------------------------------------------------------- */

/* Keeps the message of an error reply: "STATUS CODE: MESSAGE" when the body
 * is {"error":{"code":C,"message":M}}, else the status and the body's
 * start. */
static void
error_reply(struct apiclient *ac, const char *what,
            const struct curlbuf *b)
{
  const char *code, *message;
  CLEANUP_JSON_PUT struct json_object *o =
      httpjson_error_body(b, &code, &message);
  (void)o; /* held for code and message, which point into it */
  if (code && message) {
    char c[64], m[SHOWN_MAX];
    set_error(ac, what, "%ld %s: %s", ac->status,
              apiclient_sanitize(code, c, sizeof c),
              apiclient_sanitize(message, m, sizeof m));
    return;
  }
  char text[256];
  httpjson_shown(b, text, sizeof text);
  set_error(ac, what, "%ld from %s without an API error body%s%s", ac->status,
            ac->http.url, text[0] ? ": " : "", text);
}

/* Sleeps ms milliseconds. */
static void
sleep_ms(long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* One attempt.  Returns as apiclient_call. */
static int
attempt(struct apiclient *ac, const char *method, const char *url,
        const char *text, struct curl_slist *headers, const char *what,
        struct json_object **reply)
{
  CURL *h = ac->http.curl;
  char errbuf[CURL_ERROR_SIZE] = "";
  struct curlbuf b = { 0 };
  CLEANUP_FREE char *data = NULL;

  ac->status = 0;
  if (httpjson_setup(&ac->http, method, url, headers,
                     APICLIENT_CONNECT_TIMEOUT, ac->timeout, errbuf, &b,
                     text) < 0 ||
      curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                       (curl_off_t)HTTPJSON_REPLY_MAX) != CURLE_OK ||
      (strcmp(method, "GET") == 0 &&
       curl_easy_setopt(h, CURLOPT_HTTPGET, 1L) != CURLE_OK)) {
    set_error(ac, what, "cannot set up the request to %s", url);
    return APICLIENT_FAILED;
  }

  CURLcode rc = curl_easy_perform(h);
  data = b.data;
  const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  switch (rc) {
  case CURLE_OK:
    break;
  case CURLE_COULDNT_CONNECT:
    set_error(ac, what, "cannot connect to thunder-api at %s: %s (is it running? give --api URL or set $" APICLIENT_URL_ENV ")",
              ac->http.url, why);
    return APICLIENT_TRANSPORT;
  case CURLE_COULDNT_RESOLVE_HOST:
    set_error(ac, what, "cannot resolve the host of %s: %s", ac->http.url, why);
    return APICLIENT_TRANSPORT;
  case CURLE_OPERATION_TIMEDOUT:
    set_error(ac, what, "no reply from thunder-api at %s in time (%d s to connect, %ld s in all): %s",
              ac->http.url, APICLIENT_CONNECT_TIMEOUT, ac->timeout, why);
    return APICLIENT_TRANSPORT;
  case CURLE_FILESIZE_EXCEEDED:
  case CURLE_WRITE_ERROR:
    if (rc == CURLE_FILESIZE_EXCEEDED || b.too_large) {
      set_error(ac, what, "%s %s: reply larger than %d bytes", method, url,
                HTTPJSON_REPLY_MAX);
      return APICLIENT_FAILED;
    }
    set_error(ac, what, "%s %s: %s", method, url,
              b.no_memory ? "out of memory for the reply" : why);
    return APICLIENT_FAILED;
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CONNECT_ERROR:
    set_error(ac, what, "%s %s: %s", method, url, why);
    return APICLIENT_FAILED;
  default:
    /* Sent or received part way: the same request is safe to send again
     * (GET, DELETE, or a POST with its Idempotency-Key). */
    set_error(ac, what, "%s %s: %s", method, url, why);
    return APICLIENT_TRANSPORT;
  }

  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ac->status);
  if (ac->status < 200 || ac->status > 299) {
    error_reply(ac, what, &b);
    return ac->status == 503 ? APICLIENT_TRANSPORT : APICLIENT_FAILED;
  }
  char text_shown[256];
  if (b.len == 0) {
    set_error(ac, what, "HTTP %ld from %s with an empty body; expected a JSON object",
              ac->status, ac->http.url);
    return APICLIENT_FAILED;
  }
  struct json_object *o = httpjson_parse(b.data, b.len);
  if (o == NULL) {
    set_error(ac, what, "HTTP %ld from %s but the reply is not JSON: %s",
              ac->status, ac->http.url, httpjson_shown(&b, text_shown, sizeof text_shown));
    return APICLIENT_FAILED;
  }
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    set_error(ac, what, "HTTP %ld from %s but the reply is not a JSON object: %s",
              ac->status, ac->http.url, httpjson_shown(&b, text_shown, sizeof text_shown));
    return APICLIENT_FAILED;
  }
  *reply = o;
  return (int)ac->status;
}

int
apiclient_call(struct apiclient *ac, const char *method, const char *path,
               struct json_object *body, const char *idempotency_key,
               const char *what, struct json_object **reply)
{
  CLEANUP_FREE char *url = NULL;
  CLEANUP_FREE char *key_header = NULL;

  *reply = NULL;
  ac->err[0] = '\0';
  ac->status = 0;
  if (asprintf(&url, "%s%s", ac->http.url, path) < 0) {
    url = NULL;
    set_error(ac, what, "out of memory");
    return APICLIENT_FAILED;
  }
  /* The fixed headers, and the key for this request only. */
  struct curl_slist *headers = ac->http.headers, *own = NULL;
  if (idempotency_key) {
    if (asprintf(&key_header, "Idempotency-Key: %s", idempotency_key) < 0)
      key_header = NULL;
    bool ok = key_header != NULL;
    for (struct curl_slist *h = ac->http.headers; ok && h; h = h->next) {
      struct curl_slist *t = curl_slist_append(own, h->data);
      if (t == NULL)
        ok = false;
      else
        own = t;
    }
    struct curl_slist *t = ok ? curl_slist_append(own, key_header) : NULL;
    if (t == NULL) {
      if (own) {
        explicit_bzero(own->data, strlen(own->data));
        curl_slist_free_all(own);
      }
      set_error(ac, what, "out of memory");
      return APICLIENT_FAILED;
    }
    headers = own = t;
  }
  const char *text = body ? httpjson_text(body) : NULL;

  int r;
  long backoff = 500;
  for (unsigned i = 0;; i++) {
    r = attempt(ac, method, url, text, headers, what, reply);
    if (r != APICLIENT_TRANSPORT || i >= ac->retries)
      break;
    sleep_ms(backoff);
    backoff *= 2;
  }
  if (own) {
    explicit_bzero(own->data, strlen(own->data)); /* the token */
    curl_slist_free_all(own);
  }
  return r;
}
