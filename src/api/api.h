/* thunder — thunder-api's parts (docs/api.md) and the configuration
 * they share.  Each part has its own header and one prefix:
 *
 *   thunder-api.c  options, signals, wiring
 *   apiserver.c    api_server_: the HTTP routes on the service core
 *                  (common/httpsvc.h): parse → validate → call → render
 *   validate.c     validate_: request bodies into plain structs (json-c)
 *   render.c       render_: store rows as JSON
 *   provision.c    provision_: POST /v1/clusters' decision (load nodes →
 *                  place → scan warm nodes → plan the tree → store); no
 *                  HTTP, no json-c; a result kind the route maps
 *   converge.c     converger_: the background work: pushes trees and VMs
 *                  to the nodes, follows them, deletes, expires nodes
 *   place.c        sched_ placement (pure)   tree.c  relay trees (pure)
 *   store.c        SQLite                    nodecall.c  HTTP to the nodes
 *   originman.c    an image's manifest on the origin (common/manclient.h)
 *   metrics.c      counters for GET /metrics
 *   enrol.c        enrol_: per-node enrolment tokens and the rule of
 *                  who may register or heartbeat as a node (pure)
 *   apiutil.c      the clock, time format, export URIs
 *
 * Includes go one way: apiserver → validate, render, provision, enrol,
 * converge, metrics; converge → nodecall, store, apiutil; nothing
 * includes apiserver.h but thunder-api.c.
 */
#ifndef THUNDER_API_H
#define THUNDER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "tlsdir.h"

struct curlbuf_tls;

struct api_config {
  const char *listen;         /* HOST:PORT */
  const char *db;             /* SQLite file */
  const char *token;          /* the operator's */
  const char *node_token;     /* nodes' (register, heartbeat; calls to them) */
  bool require_enrolment;     /* the fleet token registers no node: a node
                                 needs its enrolment token or a client
                                 certificate (enrol.h) */
  unsigned node_timeout_s;    /* a node without heartbeat this long is down */
  unsigned poll_ms;           /* converger's pace */
  unsigned detach_grace_s;    /* an image unused this long is detached */
  unsigned push_timeout_ms;
  unsigned push_retries;
  unsigned push_parallel;
  size_t max_body;
  unsigned max_depth;
  unsigned max_count;
  unsigned max_connections;
  unsigned connection_timeout_s;
  unsigned threads;           /* HTTP worker threads */
  double link_bps;            /* planner: a node's uplink, bytes/s */
  double origin_bps;          /* planner: the origin's uplink */
  unsigned origin_cap;        /* planner: most children of the origin */
  unsigned origin_copies;     /* planner: most image copies the origin sends */
  uint64_t working_set;       /* planner: W, bytes */
  const char *ui_dir;         /* the status page's files; NULL: the
                                 installed ones, "none": no page */
  enum tlsdir_mode tls;       /* HTTPS of the REST endpoint */
  const struct tlsdir_server *tls_pem; /* its certificates, with tls */
  const struct curlbuf_tls *node_tls;  /* calls to nodes' control
                                          endpoints; NULL: defaults */
};

#endif
