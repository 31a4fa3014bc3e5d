/* thunder — thunderctl's client of thunder-api (docs/api.md): JSON requests
 * over HTTP with libcurl and the operator's bearer token.
 *
 * A failed call does not print: it keeps one message, "WHAT: DETAIL", that
 * the caller prints with apiclient_error() (so that a live progress line can
 * be cleared first).  For an error reply the detail is
 * "STATUS CODE: MESSAGE" ("409 insufficient_capacity: only 4 VMs fit"),
 * with the server's text stripped of control characters and cut short.
 * Single-threaded.
 */
#ifndef THUNDER_APICLIENT_H
#define THUNDER_APICLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/* Defaults: the API's URL, and where its token is read from. */
#define APICLIENT_URL_DEFAULT "http://127.0.0.1:7080"
#define APICLIENT_URL_ENV "THUNDER_API"
#define APICLIENT_TOKEN_FILE "/etc/thunder/api.token"
#define APICLIENT_TOKEN_FILE_ENV "THUNDER_API_TOKEN_FILE"
/* Seconds to connect, and for a whole request (by default). */
#define APICLIENT_CONNECT_TIMEOUT 5
#define APICLIENT_TIMEOUT 60
/* Retries after a transport error or a 503 (by default). */
#define APICLIENT_RETRIES 2

/* What apiclient_call returns when it fails (a 2xx returns the status). */
enum {
  APICLIENT_FAILED = -1,    /* an error reply, or a reply that is not JSON */
  APICLIENT_TRANSPORT = -2, /* no reply: connect, timeout, I/O; or 503 */
};

struct apiclient;

/* A client of the API at url ("http://HOST:PORT", optionally with a path
 * prefix) with the operator token read from token_file: one line of 16-256
 * printable ASCII characters, not readable or writable by others
 * (common/token.h).  NULL with a message printed. */
struct apiclient *apiclient_new(const char *url, const char *token_file);

/* Per-request timeout in seconds (>= 1), and retries after a transport
 * error or a 503 (the same request is sent again, after 0.5 s, 1 s, ...). */
void apiclient_set_timeout(struct apiclient *ac, long seconds);
void apiclient_set_retries(struct apiclient *ac, unsigned retries);

/* Sends method on path ("/v1/clusters", already URL-safe) with body (NULL:
 * none) and, if idempotency_key is not NULL, an Idempotency-Key header.
 * On a 2xx reply returns its status and sets *reply to the parsed body,
 * which must be a JSON object (not empty).  On failure returns
 * APICLIENT_FAILED or APICLIENT_TRANSPORT, *reply NULL, and keeps a
 * message that starts with what ("cluster create"); the status of an error
 * reply (or 0) is in apiclient_status(). */
int apiclient_call(struct apiclient *ac, const char *method, const char *path,
                   struct json_object *body, const char *idempotency_key,
                   const char *what, struct json_object **reply);

/* The message of the last failed call ("" if none). */
const char *apiclient_error(const struct apiclient *ac);

/* The HTTP status of the last reply (0 if there was none). */
long apiclient_status(const struct apiclient *ac);

/* The API's URL, without a trailing '/'. */
const char *apiclient_url(const struct apiclient *ac);

void apiclient_free(struct apiclient *ac);

/* Copies s into buf (len bytes) with every control character (C0, DEL, and
 * C1 in UTF-8) replaced by '?', cut to fit with "..." at the end.
 * Returns buf. */
char *apiclient_sanitize(const char *s, char *buf, size_t len);

#endif
