/* thunder — the NBD listeners: sockets, the event loop, workers, limits.
 *
 * A server listens on a Unix socket (for local QEMU) and/or TCP (for
 * child nodes).  Connections of the two transports are two classes with
 * budgets of their own (slots, handshake slots, worker threads, bytes in
 * flight), so no number of TCP peers can refuse or slow a local client.
 * Each new connection negotiates on a short-lived thread under a
 * deadline; then a fixed pool of worker threads per class, waiting on
 * the class's epoll set, reads its requests and carries them out, and one
 * event-loop thread accepts, enforces the limits and timeouts and takes
 * the slow paths (design note in server.c).  Memory and threads are bounded by the
 * configuration, not by the number of connections.
 *
 * Threads: server_run() is the event loop; server_stop() may be called
 * from any thread.  The config is copied; nothing else is shared.
 */
#ifndef THUNDER_SERVER_H
#define THUNDER_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "export.h"
#include "tlsdir.h"

/* The budget of one class of connections (TCP peers, or the Unix
 * socket's local clients). */
struct server_class_limits {
  unsigned max_connections;   /* connections at once; more closed at accept */
  unsigned max_handshakes;    /* of them still negotiating */
  unsigned workers;           /* threads carrying out requests, >= 1 */
  uint64_t inflight_bytes;    /* reply data in flight, all connections */
};

struct server_config {
  const char *socket_path;    /* NULL: no Unix socket */
  const char *socket_group;   /* NULL: keep the process's group */
  bool socket_group_optional; /* a missing group is a warning, not an error */
  mode_t socket_mode;
  const char *tcp_listen;     /* "HOST:PORT", "[V6]:PORT", ":PORT"; NULL: none */
  struct server_class_limits tcp, local;
  unsigned conn_requests;     /* requests of one connection in flight, >= 1 */
  uint64_t conn_inflight_bytes; /* reply data in flight per connection,
                                 * >= NBDSRV_REQUEST_MAX */
  uint64_t addr_inflight_bytes; /* TCP: reply data in flight per remote
                                 * address, >= NBDSRV_REQUEST_MAX */
  unsigned max_connections_per_addr; /* TCP, per remote address */
  unsigned max_handshakes_per_addr;
  unsigned handshake_timeout_ms;     /* both classes */
  unsigned idle_timeout_ms;   /* TCP: close after this long without a
                               * request in flight; 0: never */
  unsigned send_timeout_ms;   /* TCP: close when a reply makes no progress
                               * for this long; 0: never */
  /* TCP congestion control of accepted TCP connections (TCP_CONGESTION,
   * e.g. "cubic"); NULL: the system's default.  The data of a relay
   * flows on these sockets: see server.c. */
  const char *tcp_congestion;
  /* NBD over TLS on the TCP listener (NBD_OPT_STARTTLS; nbdsrv.h says
   * what off, on and require allow) with the certificates of tls_pem,
   * which must be set unless tls is off (read in server_new).  The Unix
   * socket stays plaintext: its file mode guards it. */
  enum tlsdir_mode tls;
  const struct tlsdir_server *tls_pem;
};

struct server;

/* Creates the listening sockets.  NULL with a logged error. */
struct server *server_new(struct exports *reg, const struct server_config *cfg);

/* Accepts and serves connections until server_stop(); then stops reading
 * requests, lets the ones accepted finish and their replies go out (never
 * an error reply for a request it took), closes every connection, and
 * returns 0 (-1 when connections would not end within 5 s). */
int server_run(struct server *s);

/* Asks server_run() to return.  Async-signal-safe. */
void server_stop(struct server *s);

/* Connections at this moment, by kind, and reply counters since the
 * start (for /metrics). */
struct server_conn_counts {
  unsigned tcp;         /* TCP clients past the handshake */
  unsigned local;       /* Unix-socket clients past the handshake */
  unsigned handshaking; /* of both transports, still negotiating */
  /* Replies sent whole, and the send calls (sendmsg, or one TLS send of
   * several records) that carried reply bytes, of each class. */
  uint64_t tcp_replies, tcp_reply_sends;
  uint64_t local_replies, local_reply_sends;
};

/* Fills *c.  Any thread. */
void server_get_conn_counts(struct server *s, struct server_conn_counts *c);

/* Closes the listeners, removes the Unix socket file, frees s. */
void server_free(struct server *s);

#endif
