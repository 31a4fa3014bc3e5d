/* thunder — thunderctl's client of thunderd's control endpoint; see
 * nodeclient.h.  The connection, the reply buffer and the parser are
 * httpjson.c's, shared with apiclient.c. */
#include "nodeclient.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "httpjson.h"

#define PROG "thunderctl"

struct nodeclient {
  struct httpjson http;
};

/* ---- set-up ------------------------------------------------------------------- */

struct nodeclient *
nodeclient_new(const char *url, const char *token_file)
{
  CLEANUP_FREE char *token =
      httpjson_token(NODECLIENT_TOKEN_ENV, token_file, NODECLIENT_TOKEN_ENV);
  if (token == NULL)
    return NULL;
  struct nodeclient *nc = NULL;
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
    fprintf(stderr, PROG ": --node '%s': expected http://HOST:PORT\n", url);
  else if ((nc = calloc(1, sizeof *nc)) == NULL)
    fprintf(stderr, PROG ": out of memory\n");
  else if (httpjson_init(&nc->http, url, token) < 0) {
    free(nc);
    nc = NULL;
  }
  explicit_bzero(token, strlen(token));
  return nc;
}

void
nodeclient_free(struct nodeclient *nc)
{
  if (nc == NULL)
    return;
  httpjson_fini(&nc->http);
  free(nc);
}

/* ---- requests ------------------------------------------------------------ */

/* Prints an error reply: status, and the server's code and message when
 * the body is {"error":{"code":C,"message":M}}. */
static void
print_error_reply(const char *what, long status,
                  const struct curlbuf *b)
{
  const char *code, *message;
  CLEANUP_JSON_PUT struct json_object *o =
      httpjson_error_body(b, &code, &message);
  (void)o; /* held for code and message, which point into it */
  if (message) {
    if (code == NULL)
      code = "";
    fprintf(stderr, PROG ": %s: HTTP %ld%s%s%s: %s\n", what, status,
            *code ? " (" : "", code, *code ? ")" : "", message);
    return;
  }
  /* Not thunderd's error shape (a proxy?): show the start of the body. */
  char shown[HTTPJSON_SHOWN_MAX + 1];
  httpjson_shown(b, shown, sizeof shown);
  fprintf(stderr, PROG ": %s: HTTP %ld%s%s\n", what, status,
          shown[0] ? ": " : "", shown);
}

int
nodeclient_call(struct nodeclient *nc, const char *method, const char *path,
                struct json_object *body, const char *what,
                struct json_object **reply)
{
  const char *base = nc->http.url;
  CLEANUP_FREE char *url = NULL;
  char errbuf[CURL_ERROR_SIZE] = "";
  struct curlbuf b = { 0 };

  *reply = NULL;
  if (asprintf(&url, "%s%s", base, path) < 0) {
    url = NULL;
    fprintf(stderr, PROG ": %s: out of memory\n", what);
    return -1;
  }
  if (httpjson_setup(&nc->http, method, url, nc->http.headers,
                     NODECLIENT_CONNECT_TIMEOUT, NODECLIENT_TIMEOUT, errbuf,
                     &b, body ? httpjson_text(body) : NULL) < 0) {
    fprintf(stderr, PROG ": %s: cannot set up the request to %s\n", what, url);
    return -1;
  }

  CURLcode rc = curl_easy_perform(nc->http.curl);
  CLEANUP_FREE char *data = b.data; /* freed on every return */
  (void)data;
  const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  switch (rc) {
  case CURLE_OK:
    break;
  case CURLE_COULDNT_CONNECT:
    fprintf(stderr, PROG ": %s: cannot connect to thunderd at %s: %s (is thunderd running, with --control on that address?)\n",
            what, base, why);
    return -1;
  case CURLE_COULDNT_RESOLVE_HOST:
    fprintf(stderr, PROG ": %s: cannot resolve the host of %s: %s\n", what,
            base, why);
    return -1;
  case CURLE_OPERATION_TIMEDOUT:
    fprintf(stderr, PROG ": %s: no reply from thunderd at %s in time (%d s to connect, %d s in all): %s\n",
            what, base, NODECLIENT_CONNECT_TIMEOUT, NODECLIENT_TIMEOUT, why);
    return -1;
  default:
    if (b.too_large)
      fprintf(stderr, PROG ": %s: %s %s: reply larger than %d bytes\n", what,
              method, url, HTTPJSON_REPLY_MAX);
    else
      fprintf(stderr, PROG ": %s: %s %s: %s\n", what, method, url, why);
    return -1;
  }

  long status = 0;
  curl_easy_getinfo(nc->http.curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) {
    print_error_reply(what, status, &b);
    return -1;
  }
  if (b.len > 0) {
    *reply = httpjson_parse(b.data, b.len);
    if (*reply == NULL) {
      fprintf(stderr, PROG ": %s: HTTP %ld but the reply is not JSON\n", what,
              status);
      return -1;
    }
  }
  return (int)status;
}
