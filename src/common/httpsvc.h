/* thunder — one JSON-over-HTTP service core on libmicrohttpd, used by
 * thunderd's control endpoint (src/daemon/control.c) and thunder-api
 * (src/api/routes.c).
 *
 * A service is a table of routes {method, path pattern, auth, body,
 * handler}.  The core does everything around a handler, the same way for
 * both services:
 *
 *   first call   match the path (none: 404), check the bearer token of
 *                the route (constant time; 401 with WWW-Authenticate),
 *                the method (405 with Allow).  A declared body over
 *                drain_max is answered 413 at once (then closed).
 *   body calls   a route that takes a body keeps it up to body_max; the
 *                rest, and any other body, is read and dropped up to
 *                drain_max in all (beyond, the connection is closed).
 *   last call    reply the error found so far, or 413, or call the
 *                handler; every reply goes through one function that
 *                sets Content-Type, Cache-Control and the headers.
 *   completed    the request's state is freed.
 *
 * A request has request_timeout_s from its request line to its last body
 * byte: headers that took longer are answered 408 at the first call, a
 * body still coming then closes the connection (libmicrohttpd's own
 * timeout is idle time, which every byte resets).
 *
 * Replying only once the body is read keeps a keep-alive connection in
 * step.  A handler parses its body with httpsvc_body_json (strict,
 * depth-limited, duplicate keys refused: jsonutil_parse) and fails with
 * httpsvc_fail; every error is {"error":{"code":C,"message":M}}, C from
 * the service's code_of when the handler gives none.
 *
 * TLS (tls != TLSDIR_OFF): HTTPS with GnuTLS, the server's certificate
 * and key given as PEM text; tls_ca is the CA whose client certificates
 * are accepted (asked for on every connection).  At the first call, a
 * presented client certificate must verify against tls_ca with the TLS
 * client purpose, else 403; its subject's CN is the peer's name
 * (httpsvc_peer_name).  With TLSDIR_REQUIRE a request without one is
 * answered 403 too, before routing and tokens.
 *
 * Threads: handlers run on libmicrohttpd's threads, several at once.
 */
#ifndef THUNDER_HTTPSVC_H
#define THUNDER_HTTPSVC_H

#include <stdbool.h>
#include <stddef.h>

#include "tlsdir.h"

struct json_object;
struct httpsvc;
struct httpsvc_req;

/* Which token a route wants. */
enum httpsvc_auth {
  HTTPSVC_AUTH_NONE,   /* public (/healthz) */
  HTTPSVC_AUTH_APP,    /* the token, the second token, or another bearer
                          token that the handler checks itself
                          (httpsvc_by_app, httpsvc_bearer); no
                          Authorization header at all is 401 */
  HTTPSVC_AUTH_EITHER, /* the token or the second token */
  HTTPSVC_AUTH_TOKEN,  /* the token only */
};

#define HTTPSVC_MESSAGE_MAX 1024

/* What a handler answers. */
struct httpsvc_reply {
  unsigned status;
  struct json_object *json;  /* the body (taken); NULL: {} (none for 204) */
  char *text;                /* a non-JSON body (taken, malloc'ed) */
  size_t text_len;
  const char *content_type;  /* with text */
  char location[160];        /* a Location header when not empty */
  /* An error (status >= 400): code NULL takes the service's. */
  const char *code;
  char message[HTTPSVC_MESSAGE_MAX];
};

typedef void httpsvc_handler(void *app, struct httpsvc_req *rq,
                             struct httpsvc_reply *rep);

struct httpsvc_route {
  const char *method;   /* "GET" also answers HEAD */
  const char *pattern;  /* "/v1/images/{NAME}": a {..} is one non-empty
                           path segment, given by httpsvc_param; shown
                           without the braces in messages */
  enum httpsvc_auth auth;
  bool body;            /* takes a body */
  httpsvc_handler *handler;
};

struct httpsvc_config {
  const char *name;            /* log component ("control") */
  const char *realm;           /* WWW-Authenticate realm ("thunderd") */
  const char *listen;          /* HOST:PORT, [V6]:PORT; port 0 picks one */
  const struct httpsvc_route *routes;
  size_t n_routes;
  const char *token;           /* 16..256 characters */
  const char *token2;          /* NULL: none; accepted on AUTH_EITHER routes */
  const char *token2_refused;  /* the 401 message for token2 elsewhere */
  const char *(*code_of)(unsigned status); /* the service's error codes */
  const char *not_found_hint;  /* added to 404 "no such path" (may be NULL) */
  size_t body_max;             /* body bytes kept (413 beyond) */
  size_t drain_max;            /* body bytes read in all before closing */
  int json_depth;              /* nesting limit of bodies */
  bool json_content_type;      /* a body's Content-Type, if given, must be
                                  application/json (else 415) */
  unsigned threads;            /* worker threads; 0: one per connection */
  unsigned max_connections;
  unsigned per_ip_connections; /* 0: no limit per address */
  unsigned timeout_s;          /* idle connection timeout */
  unsigned request_timeout_s;  /* a whole request, from its first line to
                                  its last body byte (0: none); trickling
                                  bytes does not extend it */
  size_t connection_memory;    /* 0: libmicrohttpd's default */
  /* Called after every reply (metrics); may be NULL. */
  void (*on_reply)(void *app, const char *method, unsigned status);
  void *app;                   /* handlers' first argument */
  enum tlsdir_mode tls;        /* TLSDIR_OFF: plain HTTP */
  const char *tls_cert;        /* with tls: the server certificate (PEM) */
  const char *tls_key;         /* its key (PEM) */
  const char *tls_ca;          /* the CA of client certificates (PEM) */
};

/* The longest peer name (a certificate's CN) kept. */
#define HTTPSVC_PEER_MAX 64

/* Binds, listens and starts serving cfg (copied; the strings and the
 * route table must outlive the service).  NULL with a logged error. */
struct httpsvc *httpsvc_start(const struct httpsvc_config *cfg);

/* The TCP port it listens on. */
unsigned httpsvc_port(const struct httpsvc *s);

/* Stops it, waiting for requests in progress, and frees s. */
void httpsvc_stop(struct httpsvc *s);

/* ---- for handlers ---- */

/* The request's method and URL path (after %-decoding, where %00 and
 * %2F stay as they are). */
const char *httpsvc_method(const struct httpsvc_req *rq);
const char *httpsvc_url(const struct httpsvc_req *rq);

/* The i-th {..} segment of the route's pattern (0-based), or NULL. */
const char *httpsvc_param(const struct httpsvc_req *rq, unsigned i);

/* A request header or query argument, or NULL. */
const char *httpsvc_header(const struct httpsvc_req *rq, const char *name);
const char *httpsvc_query(const struct httpsvc_req *rq, const char *name);

/* The CN of the request's verified client certificate, or NULL when none
 * was presented (or the service is plain HTTP). */
const char *httpsvc_peer_name(const struct httpsvc_req *rq);

/* Whether a token2 (not the token) authenticated the request. */
bool httpsvc_by_token2(const struct httpsvc_req *rq);

/* On an HTTPSVC_AUTH_APP route: whether the request came with a bearer
 * token that is neither the token nor token2, which the handler must
 * check (it is not authenticated yet). */
bool httpsvc_by_app(const struct httpsvc_req *rq);

/* The request's bearer token ("Authorization: Bearer T", blanks around T
 * ignored) into buf (len bytes); false when there is none or it does not
 * fit. */
bool httpsvc_bearer(const struct httpsvc_req *rq, char *buf, size_t len);

/* The body parsed as a JSON object (jsonutil_parse with the service's
 * depth, duplicate keys refused).  With optional, an empty body is {}.
 * NULL with rep failed: 400 (the message says why), 415. */
struct json_object *httpsvc_body_json(struct httpsvc_req *rq, bool optional,
                                      struct httpsvc_reply *rep);

/* Makes rep the error status with code (NULL: the service's for status)
 * and a message; drops any body rep held. */
void httpsvc_fail(struct httpsvc_reply *rep, unsigned status,
                  const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
