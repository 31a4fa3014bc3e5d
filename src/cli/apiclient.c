/* thunder — thunderctl's client of thunder-api; see apiclient.h.
 *
 * The shape follows nodeclient.c (one CURL handle, fixed headers, a capped
 * body buffer, a depth-limited parser) with what the API adds: an
 * Idempotency-Key header, retries of a request that got no reply, messages
 * kept rather than printed, and the API's error codes in them.
 */
#include "apiclient.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "token.h"

#define PROG "thunderctl"

/* Longest part of a server's text put in a message. */
#define SHOWN_MAX 400

struct apiclient {
  CURL *curl;
  char *url;                  /* without a trailing '/' */
  struct curl_slist *headers; /* Authorization, Content-Type, Accept */
  long timeout;               /* seconds per request */
  unsigned retries;
  long status;                /* of the last reply, 0 if none */
  char err[1024];             /* the last failure */
};

/* ---- the token ------------------------------------------------------------ */

char *
apiclient_token(const char *token_file)
{
  char err[512];
  char *t = token_read_file(token_file, err, sizeof err);
  if (t == NULL)
    fprintf(stderr, PROG ": %s; give --token-file FILE or set $" APICLIENT_TOKEN_FILE_ENV "\n",
            err);
  return t;
}

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

struct apiclient *
apiclient_new(const char *url, const char *token)
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
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, PROG ": curl_global_init failed\n");
    return NULL;
  }
  struct apiclient *ac = calloc(1, sizeof *ac);
  CLEANUP_FREE char *auth = NULL;
  if (ac == NULL || (ac->url = strdup(url)) == NULL ||
      asprintf(&auth, "Authorization: Bearer %s", token) < 0) {
    auth = NULL;
    fprintf(stderr, PROG ": out of memory\n");
    if (ac == NULL)
      curl_global_cleanup();
    apiclient_free(ac);
    return NULL;
  }
  ac->timeout = APICLIENT_TIMEOUT;
  ac->retries = APICLIENT_RETRIES;
  size_t n = strlen(ac->url);
  while (n > 0 && ac->url[n - 1] == '/')
    ac->url[--n] = '\0';

  static const char *const fixed[] = {
    "Content-Type: application/json",
    "Accept: application/json",
    "Expect:", /* no 100-continue round trip */
  };
  struct curl_slist *h = curl_slist_append(NULL, auth), *t;
  for (size_t i = 0; h && i < sizeof fixed / sizeof fixed[0]; i++) {
    if ((t = curl_slist_append(h, fixed[i])) == NULL) {
      curl_slist_free_all(h);
      h = NULL;
    } else {
      h = t;
    }
  }
  explicit_bzero(auth, strlen(auth));
  ac->headers = h;
  ac->curl = curl_easy_init();
  if (ac->headers == NULL || ac->curl == NULL) {
    fprintf(stderr, PROG ": out of memory setting up libcurl\n");
    apiclient_free(ac);
    return NULL;
  }
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
  return ac->url;
}

void
apiclient_free(struct apiclient *ac)
{
  if (ac == NULL)
    return;
  if (ac->curl)
    curl_easy_cleanup(ac->curl);
  /* The first header holds the token. */
  if (ac->headers && ac->headers->data)
    explicit_bzero(ac->headers->data, strlen(ac->headers->data));
  curl_slist_free_all(ac->headers);
  free(ac->url);
  free(ac);
  curl_global_cleanup();
}

/* ---- one request ------------------------------------------------------------- */

struct buffer {
  char *data;
  size_t len;
  bool too_large;
  bool no_memory;
};

static size_t
on_data(char *data, size_t size, size_t nmemb, void *opaque)
{
  struct buffer *b = opaque;
  size_t n = size * nmemb;
  if (n > APICLIENT_REPLY_MAX || b->len + n > APICLIENT_REPLY_MAX) {
    b->too_large = true;
    return 0;
  }
  char *p = realloc(b->data, b->len + n + 1);
  if (p == NULL) {
    b->no_memory = true;
    return 0;
  }
  memcpy(p + b->len, data, n);
  b->len += n;
  p[b->len] = '\0';
  b->data = p;
  return n;
}

/* Parses a reply body; NULL if it is not exactly one JSON value. */
static struct json_object *
parse_reply(const char *data, size_t len)
{
  if (len > APICLIENT_REPLY_MAX || memchr(data, '\0', len) != NULL)
    return NULL;
  struct json_tokener *tok = json_tokener_new_ex(APICLIENT_REPLY_DEPTH);
  if (tok == NULL)
    return NULL;
  struct json_object *o = json_tokener_parse_ex(tok, data, (int)len);
  if (o == NULL && json_tokener_get_error(tok) == json_tokener_continue)
    o = json_tokener_parse_ex(tok, "", 1);
  size_t end = json_tokener_get_parse_end(tok);
  bool ok = json_tokener_get_error(tok) == json_tokener_success;
  json_tokener_free(tok);
  for (size_t i = end; ok && i < len; i++)
    ok = data[i] == ' ' || data[i] == '\t' || data[i] == '\n' ||
         data[i] == '\r';
  if (!ok) {
    json_object_put(o);
    return NULL;
  }
  return o;
}

/* The start of a body as printable text, for a message. */
static const char *
shown(const struct buffer *b, char *buf, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; b->data && i < b->len && n + 1 < len && n < 200; i++) {
    unsigned char c = (unsigned char)b->data[i];
    buf[n++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
  }
  buf[n] = '\0';
  return buf;
}

/* Keeps the message of an error reply: "STATUS CODE: MESSAGE" when the body
 * is {"error":{"code":C,"message":M}}, else the status and the body's
 * start. */
static void
error_reply(struct apiclient *ac, const char *what, const struct buffer *b)
{
  CLEANUP_JSON_PUT struct json_object *o =
      b->data ? parse_reply(b->data, b->len) : NULL;
  struct json_object *e, *c, *m;
  if (o && json_object_is_type(o, json_type_object) &&
      json_object_object_get_ex(o, "error", &e) &&
      json_object_is_type(e, json_type_object) &&
      json_object_object_get_ex(e, "code", &c) &&
      json_object_is_type(c, json_type_string) &&
      json_object_object_get_ex(e, "message", &m) &&
      json_object_is_type(m, json_type_string)) {
    char code[64], msg[SHOWN_MAX];
    set_error(ac, what, "%ld %s: %s", ac->status,
              apiclient_sanitize(json_object_get_string(c), code, sizeof code),
              apiclient_sanitize(json_object_get_string(m), msg, sizeof msg));
    return;
  }
  char text[256];
  shown(b, text, sizeof text);
  set_error(ac, what, "%ld from %s without an API error body%s%s", ac->status,
            ac->url, text[0] ? ": " : "", text);
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
  CURL *h = ac->curl;
  char errbuf[CURL_ERROR_SIZE] = "";
  struct buffer b = { NULL, 0, false, false };
  CLEANUP_FREE char *data = NULL;

  ac->status = 0;
  curl_easy_reset(h);
  if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
                       (long)APICLIENT_CONNECT_TIMEOUT) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_TIMEOUT, ac->timeout) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                       (curl_off_t)APICLIENT_REPLY_MAX) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_WRITEDATA, &b) != CURLE_OK ||
      (strcmp(method, "GET") == 0 &&
       curl_easy_setopt(h, CURLOPT_HTTPGET, 1L) != CURLE_OK) ||
      (text && (curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE,
                                 (long)strlen(text)) != CURLE_OK ||
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, text) != CURLE_OK))) {
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
              ac->url, why);
    return APICLIENT_TRANSPORT;
  case CURLE_COULDNT_RESOLVE_HOST:
    set_error(ac, what, "cannot resolve the host of %s: %s", ac->url, why);
    return APICLIENT_TRANSPORT;
  case CURLE_OPERATION_TIMEDOUT:
    set_error(ac, what, "no reply from thunder-api at %s in time (%d s to connect, %ld s in all): %s",
              ac->url, APICLIENT_CONNECT_TIMEOUT, ac->timeout, why);
    return APICLIENT_TRANSPORT;
  case CURLE_FILESIZE_EXCEEDED:
  case CURLE_WRITE_ERROR:
    if (rc == CURLE_FILESIZE_EXCEEDED || b.too_large) {
      set_error(ac, what, "%s %s: reply larger than %d bytes", method, url,
                APICLIENT_REPLY_MAX);
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
              ac->status, ac->url);
    return APICLIENT_FAILED;
  }
  struct json_object *o = parse_reply(b.data, b.len);
  if (o == NULL) {
    set_error(ac, what, "HTTP %ld from %s but the reply is not JSON: %s",
              ac->status, ac->url, shown(&b, text_shown, sizeof text_shown));
    return APICLIENT_FAILED;
  }
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    set_error(ac, what, "HTTP %ld from %s but the reply is not a JSON object: %s",
              ac->status, ac->url, shown(&b, text_shown, sizeof text_shown));
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
  if (asprintf(&url, "%s%s", ac->url, path) < 0) {
    url = NULL;
    set_error(ac, what, "out of memory");
    return APICLIENT_FAILED;
  }
  /* The fixed headers, and the key for this request only. */
  struct curl_slist *headers = ac->headers, *own = NULL;
  if (idempotency_key) {
    if (asprintf(&key_header, "Idempotency-Key: %s", idempotency_key) < 0)
      key_header = NULL;
    bool ok = key_header != NULL;
    for (struct curl_slist *h = ac->headers; ok && h; h = h->next) {
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
  const char *text = NULL;
  if (body)
    text = json_object_to_json_string_ext(
        body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

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
