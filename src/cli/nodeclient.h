/* thunder — thunderctl's client of thunderd's control endpoint
 * (docs/control.md): JSON requests over HTTP with libcurl, bearer token.
 *
 * Every function prints at most one message to stderr ("thunderctl: ...")
 * when it fails, naming the request and, for an error reply, the HTTP
 * status, the error code and the server's message.  Single-threaded.
 */
#ifndef THUNDER_NODECLIENT_H
#define THUNDER_NODECLIENT_H

#include <stdbool.h>

struct json_object;

/* Where thunderctl looks for the node token by default. */
#define NODECLIENT_TOKEN_FILE "/etc/thunder/node.token"
/* The environment variable that, when set, holds the token instead. */
#define NODECLIENT_TOKEN_ENV "THUNDER_TOKEN"
/* Upstreams per image, as thunderd's CONTROL_UPSTREAMS_MAX. */
#define NODECLIENT_UPSTREAMS_MAX 16
/* Seconds to connect, and for a whole request. */
#define NODECLIENT_CONNECT_TIMEOUT 5
#define NODECLIENT_TIMEOUT 60

struct nodeclient;

/* A client of the node at url ("http://HOST:PORT", no path) with the
 * token: $THUNDER_TOKEN if set, else token_file (one line, surrounding
 * whitespace ignored, not readable or writable by others).  NULL with a
 * message. */
struct nodeclient *nodeclient_new(const char *url, const char *token_file);

/* Sends method on path ("/v1/images/NAME") with body (NULL: none).  On a
 * 2xx reply returns its status and sets *reply to the parsed body (NULL
 * when empty).  On any failure returns -1 with a message: what names the
 * command for it ("image attach ubuntu"). */
int nodeclient_call(struct nodeclient *nc, const char *method,
                    const char *path, struct json_object *body,
                    const char *what, struct json_object **reply);

void nodeclient_free(struct nodeclient *nc);

#endif
