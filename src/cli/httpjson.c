/* thunder — what thunderctl's HTTP clients share; see httpjson.h. */
#include "httpjson.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "token.h"

#define PROG "thunderctl"

/* ---- the token ------------------------------------------------------------ */

char *
httpjson_token(const char *env_name, const char *token_file,
               const char *hint_var)
{
  char err[512], from[64];
  const char *env = env_name ? getenv(env_name) : NULL;
  char *t;
  if (env) {
    snprintf(from, sizeof from, "$%s", env_name);
    t = token_parse(env, strlen(env), from, err, sizeof err);
  } else {
    t = token_read_file(token_file, err, sizeof err);
  }
  if (t == NULL)
    fprintf(stderr, PROG ": %s%s%s\n", err,
            env ? "" : "; give --token-file FILE or set $",
            env ? "" : hint_var);
  return t;
}

/* ---- the connection ---------------------------------------------------------- */

int
httpjson_init(struct httpjson *h, const char *url, const char *token)
{
  memset(h, 0, sizeof *h);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, PROG ": curl_global_init failed\n");
    return -1;
  }
  char *auth = NULL;
  if ((h->url = strdup(url)) == NULL) {
    fprintf(stderr, PROG ": out of memory\n");
    curl_global_cleanup();
    return -1;
  }
  if (asprintf(&auth, "Authorization: Bearer %s", token) < 0) {
    fprintf(stderr, PROG ": out of memory\n");
    httpjson_fini(h);
    return -1;
  }
  size_t n = strlen(h->url);
  while (n > 0 && h->url[n - 1] == '/')
    h->url[--n] = '\0';

  static const char *const fixed[] = {
    "Content-Type: application/json",
    "Accept: application/json",
    "Expect:", /* no 100-continue round trip */
  };
  struct curl_slist *l = curl_slist_append(NULL, auth), *t;
  for (size_t i = 0; l && i < sizeof fixed / sizeof fixed[0]; i++) {
    if ((t = curl_slist_append(l, fixed[i])) == NULL) {
      explicit_bzero(l->data, strlen(l->data));
      curl_slist_free_all(l);
      l = NULL;
    } else {
      l = t;
    }
  }
  explicit_bzero(auth, strlen(auth));
  free(auth);
  h->headers = l;
  h->curl = curl_easy_init();
  if (h->headers == NULL || h->curl == NULL) {
    fprintf(stderr, PROG ": out of memory setting up libcurl\n");
    httpjson_fini(h);
    return -1;
  }
  return 0;
}

void
httpjson_fini(struct httpjson *h)
{
  bool inited = h->url != NULL;
  if (h->curl)
    curl_easy_cleanup(h->curl);
  /* The first header holds the token. */
  if (h->headers && h->headers->data)
    explicit_bzero(h->headers->data, strlen(h->headers->data));
  curl_slist_free_all(h->headers);
  free(h->url);
  memset(h, 0, sizeof *h);
  if (inited)
    curl_global_cleanup();
}

/* ---- one request --------------------------------------------------------------- */

int
httpjson_setup(struct httpjson *h, const char *method, const char *url,
               struct curl_slist *headers, long connect_timeout, long timeout,
               char *errbuf, struct curlbuf *b, const char *text)
{
  CURL *c = h->curl;
  curl_easy_reset(c);
  curlbuf_init(b, HTTPJSON_REPLY_MAX, false);
  if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, connect_timeout) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
      curlbuf_attach(c, b) != CURLE_OK ||
      (text && (curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE,
                                 (long)strlen(text)) != CURLE_OK ||
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, text) != CURLE_OK)))
    return -1;
  return 0;
}

const char *
httpjson_text(struct json_object *body)
{
  return json_object_to_json_string_ext(
      body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---- the reply --------------------------------------------------------------------- */

struct json_object *
httpjson_parse(const char *data, size_t len)
{
  char err[256];
  if (len > HTTPJSON_REPLY_MAX)
    return NULL;
  return jsonutil_parse(data, len, HTTPJSON_REPLY_DEPTH, JSONUTIL_DUPS_OK,
                        "reply", err, sizeof err);
}

/* Member key of o if it is a string, else NULL. */
static const char *
string_member(struct json_object *o, const char *key)
{
  struct json_object *v;
  if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
      !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

struct json_object *
httpjson_error_body(const struct curlbuf *b, const char **code,
                    const char **message)
{
  struct json_object *o = b->data ? httpjson_parse(b->data, b->len) : NULL;
  struct json_object *e = NULL;
  *code = *message = NULL;
  if (o && json_object_is_type(o, json_type_object) &&
      json_object_object_get_ex(o, "error", &e) &&
      json_object_is_type(e, json_type_object)) {
    *code = string_member(e, "code");
    *message = string_member(e, "message");
  }
  return o;
}

const char *
httpjson_shown(const struct curlbuf *b, char *buf, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; b->data && i < b->len && n + 1 < len &&
                     n < HTTPJSON_SHOWN_MAX; i++) {
    unsigned char c = (unsigned char)b->data[i];
    buf[n++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
  }
  buf[n] = '\0';
  return buf;
}
