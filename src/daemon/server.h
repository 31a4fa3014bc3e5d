/* thunder — the NBD listeners: sockets, connection threads and limits.
 *
 * A server listens on a Unix socket (for local QEMU) and/or TCP (for
 * child nodes).  Each accepted connection gets a thread that runs the
 * handshake under a deadline, then a small pool of threads serving its
 * requests (nbdsrv.h).  Connections past max_connections, or arriving
 * while max_handshakes others are still negotiating, are closed at once.
 */
#ifndef THUNDER_SERVER_H
#define THUNDER_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "export.h"

struct server_config {
  const char *socket_path;    /* NULL: no Unix socket */
  const char *socket_group;   /* NULL: keep the process's group */
  bool socket_group_optional; /* a missing group is a warning, not an error */
  mode_t socket_mode;
  const char *tcp_listen;     /* "HOST:PORT", "[V6]:PORT", ":PORT"; NULL: none */
  unsigned threads;           /* request threads per connection, >= 1 */
  unsigned max_connections;
  unsigned max_handshakes;
  unsigned handshake_timeout_ms;
  /* TCP congestion control of accepted TCP connections (TCP_CONGESTION,
   * e.g. "cubic"); NULL: the system's default.  The data of a relay
   * flows on these sockets: see server.c. */
  const char *tcp_congestion;
};

struct server;

/* Creates the listening sockets.  NULL with a logged error. */
struct server *server_new(struct exports *reg, const struct server_config *cfg);

/* Accepts and serves connections until server_stop(); then closes every
 * connection, waits for their threads and returns 0 (-1 on a fatal
 * error). */
int server_run(struct server *s);

/* Asks server_run() to return.  Async-signal-safe. */
void server_stop(struct server *s);

/* Closes the listeners, removes the Unix socket file, frees s. */
void server_free(struct server *s);

#endif
