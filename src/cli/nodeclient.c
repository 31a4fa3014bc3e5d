/* thunder — thunderctl's client of thunderd's control endpoint; see
 * nodeclient.h. */
#include "nodeclient.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "token.h"

#define PROG "thunderctl"

/* Largest reply body accepted (a list of many images). */
#define REPLY_MAX (16 * 1024 * 1024)
/* JSON nesting accepted in replies. */
#define REPLY_DEPTH 32

struct nodeclient {
  CURL *curl;
  char *url;                  /* without a trailing '/' */
  struct curl_slist *headers; /* Authorization, Content-Type, Accept */
};

/* ---- the token --------------------------------------------------------- */

char *
nodeclient_token(const char *token_file)
{
  char err[512];
  const char *env = getenv(NODECLIENT_TOKEN_ENV);
  char *t = env ? token_parse(env, strlen(env), "$" NODECLIENT_TOKEN_ENV, err,
                              sizeof err)
                : token_read_file(token_file, err, sizeof err);
  if (t == NULL)
    fprintf(stderr, PROG ": %s%s\n", err,
            env ? "" : "; give --token-file FILE or set $" NODECLIENT_TOKEN_ENV);
  return t;
}

/* ---- requests ------------------------------------------------------------ */

struct nodeclient *
nodeclient_new(const char *url, const char *token)
{
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
    fprintf(stderr, PROG ": --node '%s': expected http://HOST:PORT\n", url);
    return NULL;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, PROG ": curl_global_init failed\n");
    return NULL;
  }
  struct nodeclient *nc = calloc(1, sizeof *nc);
  CLEANUP_FREE char *auth = NULL;
  if (nc == NULL || (nc->url = strdup(url)) == NULL ||
      asprintf(&auth, "Authorization: Bearer %s", token) < 0) {
    auth = NULL;
    fprintf(stderr, PROG ": out of memory\n");
    nodeclient_free(nc);
    if (nc == NULL)
      curl_global_cleanup();
    return NULL;
  }
  size_t n = strlen(nc->url);
  while (n > 0 && nc->url[n - 1] == '/')
    nc->url[--n] = '\0';

  struct curl_slist *h = NULL, *t;
  static const char *const fixed[] = {
    "Content-Type: application/json",
    "Accept: application/json",
    "Expect:", /* no 100-continue round trip */
  };
  h = curl_slist_append(NULL, auth);
  for (size_t i = 0; h && i < sizeof fixed / sizeof fixed[0]; i++) {
    if ((t = curl_slist_append(h, fixed[i])) == NULL) {
      curl_slist_free_all(h);
      h = NULL;
    } else {
      h = t;
    }
  }
  explicit_bzero(auth, strlen(auth));
  nc->headers = h;
  nc->curl = curl_easy_init();
  if (nc->headers == NULL || nc->curl == NULL) {
    fprintf(stderr, PROG ": out of memory setting up libcurl\n");
    nodeclient_free(nc);
    return NULL;
  }
  return nc;
}

void
nodeclient_free(struct nodeclient *nc)
{
  if (nc == NULL)
    return;
  if (nc->curl)
    curl_easy_cleanup(nc->curl);
  curl_slist_free_all(nc->headers);
  free(nc->url);
  free(nc);
  curl_global_cleanup();
}

struct buffer {
  char *data;
  size_t len;
  bool too_large;
};

static size_t
on_data(char *data, size_t size, size_t nmemb, void *opaque)
{
  struct buffer *b = opaque;
  size_t n = size * nmemb;
  if (b->len + n > REPLY_MAX) {
    b->too_large = true;
    return 0;
  }
  char *p = realloc(b->data, b->len + n + 1);
  if (p == NULL)
    return 0;
  memcpy(p + b->len, data, n);
  b->len += n;
  p[b->len] = '\0';
  b->data = p;
  return n;
}

/* Parses a reply body; NULL if it is not one JSON value. */
static struct json_object *
parse_reply(const char *data, size_t len)
{
  if (memchr(data, '\0', len) != NULL)
    return NULL;
  struct json_tokener *tok = json_tokener_new_ex(REPLY_DEPTH);
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

/* Prints an error reply: status, and the server's code and message when
 * the body is {"error":{"code":C,"message":M}}. */
static void
print_error_reply(const char *what, long status, const struct buffer *b)
{
  CLEANUP_JSON_PUT struct json_object *o =
      b->data ? parse_reply(b->data, b->len) : NULL;
  struct json_object *e, *c, *m;
  if (o && json_object_object_get_ex(o, "error", &e) &&
      json_object_object_get_ex(e, "message", &m) &&
      json_object_is_type(m, json_type_string)) {
    const char *code = "";
    if (json_object_object_get_ex(e, "code", &c) &&
        json_object_is_type(c, json_type_string))
      code = json_object_get_string(c);
    fprintf(stderr, PROG ": %s: HTTP %ld%s%s%s: %s\n", what, status,
            *code ? " (" : "", code, *code ? ")" : "",
            json_object_get_string(m));
    return;
  }
  /* Not thunderd's error shape (a proxy?): show the start of the body. */
  char shown[201];
  size_t n = 0;
  for (size_t i = 0; b->data && i < b->len && n < sizeof shown - 1; i++)
    shown[n++] = b->data[i] >= 0x20 && b->data[i] < 0x7f ? b->data[i] : ' ';
  shown[n] = '\0';
  fprintf(stderr, PROG ": %s: HTTP %ld%s%s\n", what, status, n ? ": " : "",
          shown);
}

int
nodeclient_call(struct nodeclient *nc, const char *method, const char *path,
                struct json_object *body, const char *what,
                struct json_object **reply)
{
  CURL *h = nc->curl;
  CLEANUP_FREE char *url = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  struct buffer b = { NULL, 0, false };

  *reply = NULL;
  if (asprintf(&url, "%s%s", nc->url, path) < 0) {
    url = NULL;
    fprintf(stderr, PROG ": %s: out of memory\n", what);
    return -1;
  }
  curl_easy_reset(h);
  const char *text = NULL;
  if (body)
    text = json_object_to_json_string_ext(
        body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, nc->headers) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
                       (long)NODECLIENT_CONNECT_TIMEOUT) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)NODECLIENT_TIMEOUT) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK ||
      curl_easy_setopt(h, CURLOPT_WRITEDATA, &b) != CURLE_OK ||
      (text && (curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE,
                                 (long)strlen(text)) != CURLE_OK ||
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, text) != CURLE_OK))) {
    fprintf(stderr, PROG ": %s: cannot set up the request to %s\n", what, url);
    return -1;
  }

  CURLcode rc = curl_easy_perform(h);
  const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  switch (rc) {
  case CURLE_OK:
    break;
  case CURLE_COULDNT_CONNECT:
    fprintf(stderr, PROG ": %s: cannot connect to thunderd at %s: %s (is thunderd running, with --control on that address?)\n",
            what, nc->url, why);
    free(b.data);
    return -1;
  case CURLE_COULDNT_RESOLVE_HOST:
    fprintf(stderr, PROG ": %s: cannot resolve the host of %s: %s\n", what,
            nc->url, why);
    free(b.data);
    return -1;
  case CURLE_OPERATION_TIMEDOUT:
    fprintf(stderr, PROG ": %s: no reply from thunderd at %s in time (%d s to connect, %d s in all): %s\n",
            what, nc->url, NODECLIENT_CONNECT_TIMEOUT, NODECLIENT_TIMEOUT, why);
    free(b.data);
    return -1;
  default:
    if (b.too_large)
      fprintf(stderr, PROG ": %s: %s %s: reply larger than %d bytes\n", what,
              method, url, REPLY_MAX);
    else
      fprintf(stderr, PROG ": %s: %s %s: %s\n", what, method, url, why);
    free(b.data);
    return -1;
  }

  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) {
    print_error_reply(what, status, &b);
    free(b.data);
    return -1;
  }
  if (b.len > 0) {
    *reply = parse_reply(b.data, b.len);
    if (*reply == NULL) {
      fprintf(stderr, PROG ": %s: HTTP %ld but the reply is not JSON\n", what,
              status);
      free(b.data);
      return -1;
    }
  }
  free(b.data);
  return (int)status;
}
