/* thunder — thunder-api's parts and what they share (docs/api.md).
 *
 *   thunder-api.c  options, signals, wiring
 *   server.c       HTTP (libmicrohttpd): auth, limits, routes, JSON
 *   converge.c     the background work: pushes trees and VMs to the
 *                  nodes, follows them, deletes, expires silent nodes
 *   sched.c        placement (pure)     tree.c  relay trees (pure)
 *   store.c        SQLite               nodecall.c  HTTP to the nodes
 *   metrics.c      counters for GET /metrics
 */
#ifndef THUNDER_API_H
#define THUNDER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct api_config {
  const char *listen;         /* HOST:PORT */
  const char *db;             /* SQLite file */
  const char *token;          /* the operator's */
  const char *node_token;     /* nodes' (register, heartbeat; calls to them) */
  unsigned node_timeout_s;    /* a node without heartbeat this long is down */
  unsigned poll_ms;           /* converger's pace */
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
};

/* ---- metrics.c ---- */

void metrics_request(const char *method, unsigned status);
void metrics_heartbeat(void);
void metrics_push_error(void);
void metrics_provisioned(double seconds);
/* Appends the Prometheus text of the counters to *buf (malloc'ed, grown),
 * followed by the store's gauges (clusters, VMs and nodes by state).
 * 0 or -1. */
int metrics_render(struct store *st, char **buf, size_t *len);

/* ---- converge.c ---- */

struct converger;

/* Starts the background work on its own store connection to cfg->db; it
 * resumes every unfinished cluster at once.  NULL (logged). */
struct converger *converger_new(const struct api_config *cfg);
/* Wakes it: a cluster was created or is to be deleted. */
void converger_kick(struct converger *cv);
/* Stops it (the work in progress ends at its next step) and frees it. */
void converger_free(struct converger *cv);
/* Bytes the nodes of cluster id last reported fetching from the origin;
 * 0 if none reported. */
uint64_t converger_origin_bytes(struct converger *cv, const char *id);

/* ---- server.c ---- */

struct api_server;

struct api_server *api_server_new(const struct api_config *cfg,
                                  struct converger *cv);
unsigned api_server_port(const struct api_server *s);
void api_server_free(struct api_server *s);

/* ---- shared helpers (server.c) ---- */

/* RFC 3339 UTC with milliseconds: 2026-11-25T06:00:00.000Z. */
void api_time(int64_t ms, char buf[32]);
/* UNIX ms now. */
int64_t api_now_ms(void);
/* The image's NBD URI on a node or origin base (nbd://H:P): BASE/IMAGE. */
char *api_export_uri(const char *base, const char *image);

#endif
