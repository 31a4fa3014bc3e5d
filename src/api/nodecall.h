/* thunder — thunder-api's calls to the nodes' control endpoints
 * (docs/control.md): batches of HTTP/JSON requests run in parallel on one
 * libcurl multi handle, each with a timeout and retries.
 *
 * A call is retried (up to retries more times, with a doubling backoff
 * from 200 ms) when the transport failed (no status) or the node answered
 * 500, 502, 503 or 504; any other status is the node's answer and final.
 * Replies are read up to NODECALL_REPLY_MAX bytes and parsed as JSON with
 * a nesting limit; a reply that is not JSON leaves reply NULL (the status
 * still counts).  For an error status the reply's {"error":{"message"}}
 * (if any) is copied into err.
 *
 * Threads: nodecall_run may run in several threads at once (each batch
 * has its own handles); call nodecall_global_init once before threads.
 */
#ifndef THUNDER_NODECALL_H
#define THUNDER_NODECALL_H

#include <stddef.h>

struct json_object;
struct curlbuf_tls;

#define NODECALL_REPLY_MAX (4 * 1024 * 1024)
#define NODECALL_ERR_MAX 512

struct nodecall {
  /* filled by the caller (nodecall_set) */
  char *node;                  /* owned: the node id the endpoint must
                                  prove (see nodecall_set); NULL = none */
  const char *method;          /* "GET", "PUT", "POST" or "DELETE" */
  char *url;                   /* owned */
  char *body;                  /* JSON text, owned; NULL = none */
  void *user;                  /* the caller's */
  /* filled by nodecall_run */
  long status;                 /* HTTP status; 0 = no answer */
  unsigned attempts;
  struct json_object *reply;   /* owned; NULL = none or not JSON */
  char err[NODECALL_ERR_MAX];  /* why, when status is 0 or >= 400 */
};

struct nodecall_opts {
  const char *token;           /* bearer token; NULL = none */
  unsigned timeout_ms;         /* per attempt */
  unsigned retries;            /* more attempts after the first */
  unsigned parallel;           /* requests in flight at once, >= 1 */
  const struct curlbuf_tls *tls; /* the fleet CA, thunder-api's client
                                    certificate; NULL: libcurl's defaults */
};

/* Initialises libcurl for the process.  0 or -1 (logged). */
int nodecall_global_init(void);

/* Fills call: node (the node whose endpoint base is; NULL = none),
 * method, url = base + path (path's name parts must already be safe:
 * thunder's names are), body = json (serialised; NULL = none).  The other
 * fields are cleared.  0 or -1 (ENOMEM).
 *
 * Node identity: when the batch runs with opts->tls (the fleet CA) and url
 * is https, the endpoint's certificate must name node (its CN), checked
 * after the handshake and before the request is sent; else the call fails
 * (status 0, not retried) with err naming both names.  A node registered
 * with another node's control URL so gets none of the calls meant for it:
 * the fleet CA's hostname check alone would pass (docs/security.md). */
int nodecall_set(struct nodecall *call, const char *node, const char *method,
                 const char *base, const char *path, struct json_object *json,
                 void *user);

/* Runs calls[0..n) to completion (every one ends with a status or an
 * error).  Never fails as a whole: each call says how it went. */
void nodecall_run(struct nodecall *calls, size_t n,
                  const struct nodecall_opts *opts);

/* Frees what calls[0..n) own (url, body, reply). */
void nodecall_clear(struct nodecall *calls, size_t n);

/* "status 409: MESSAGE", "no answer: MESSAGE": for logs and reasons. */
const char *nodecall_describe(const struct nodecall *call, char *buf,
                              size_t len);

#endif
