/* thunder — what thunderctl's two HTTP clients share: nodeclient.c (a
 * thunderd control endpoint) and apiclient.c (thunder-api).  One libcurl
 * handle with the bearer token and the fixed JSON headers, a capped reply
 * buffer (common/curlbuf.h), a depth-limited JSON parser, the error body
 * both servers send ({"error":{"code":C,"message":M}}), and reading the
 * token.
 *
 * Only the token reading and httpjson_init print (one "thunderctl: ..."
 * message); the rest returns what happened and the clients word their own
 * messages.  Single-threaded.
 */
#ifndef THUNDER_HTTPJSON_H
#define THUNDER_HTTPJSON_H

#include <curl/curl.h>

#include "curlbuf.h"
#include <stdbool.h>
#include <stddef.h>

struct json_object;

/* Largest reply body accepted, and the JSON nesting accepted in it. */
#define HTTPJSON_REPLY_MAX (16 * 1024 * 1024)
#define HTTPJSON_REPLY_DEPTH 32
/* Characters of a body shown in a message at the most. */
#define HTTPJSON_SHOWN_MAX 200

/* A connection to one server. */
struct httpjson {
  CURL *curl;
  char *url;                  /* without a trailing '/' */
  struct curl_slist *headers; /* Authorization (first), Content-Type, Accept */
};

/* Reads a token: from the environment variable env_name when it is set
 * (env_name NULL: never), else from token_file (common/token.h).  A failure
 * prints the reason, with "; give --token-file FILE or set $HINT_VAR" when
 * it was the file.  Returns a heap string, or NULL. */
char *httpjson_token(const char *env_name, const char *token_file,
                     const char *hint_var);

/* Sets up h for the server at url (its trailing '/' dropped) with the
 * bearer token.  -1 with a message printed, h then empty (httpjson_fini
 * may still be called).  Every successful call is paired with one
 * httpjson_fini (curl_global_init is counted). */
int httpjson_init(struct httpjson *h, const char *url, const char *token);

/* Frees what httpjson_init made, wiping the token. */
void httpjson_fini(struct httpjson *h);

/* Resets h->curl and sets it up for method on url (the whole URL) with
 * headers, the timeouts in seconds, curl's message into errbuf
 * (CURL_ERROR_SIZE bytes), the reply into b (emptied, at most
 * HTTPJSON_REPLY_MAX bytes; the caller frees b->data), and text as the
 * body (NULL: none).  -1 if libcurl refused an option. */
int httpjson_setup(struct httpjson *h, const char *method, const char *url,
                   struct curl_slist *headers, long connect_timeout,
                   long timeout, char *errbuf, struct curlbuf *b,
                   const char *text);

/* The compact JSON text of body, owned by body. */
const char *httpjson_text(struct json_object *body);

/* Parses a reply body, depth-limited; NULL if it is not exactly one JSON
 * value (or longer than HTTPJSON_REPLY_MAX, or holding a NUL). */
struct json_object *httpjson_parse(const char *data, size_t len);

/* The error body {"error":{"code":C,"message":M}} of b, parsed: returns
 * the body to put (NULL if it is not JSON) with *code and *message set to
 * its strings, each NULL where missing or not a string. */
struct json_object *httpjson_error_body(const struct curlbuf *b,
                                        const char **code,
                                        const char **message);

/* The start of b (HTTPJSON_SHOWN_MAX characters at the most, and what fits
 * in buf) with every byte that is not printable ASCII made a space.
 * Returns buf. */
const char *httpjson_shown(const struct curlbuf *b, char *buf,
                           size_t len);

#endif
