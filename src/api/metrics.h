/* thunder — thunder-api's counters for GET /metrics (Prometheus text,
 * written with promtext.h; docs/metrics.md).  Thread-safe: the counters
 * have their own lock. */
#ifndef THUNDER_METRICS_H
#define THUNDER_METRICS_H

#include <stddef.h>

struct store;

/* Counts a reply: method and status. */
void metrics_request(const char *method, unsigned status);
/* Counts a node registration or heartbeat. */
void metrics_heartbeat(void);
/* Counts a failed call to node (its name; the first METRICS_NODES_MAX
 * nodes get a series each, later ones share node="other"). */
void metrics_push_error(const char *node);
/* Records the seconds a cluster took from created to every VM running. */
void metrics_provisioned(double seconds);
/* Records one step of the converger on one cluster: kind "provision" or
 * "delete", and how long it took. */
void metrics_step(const char *kind, double seconds);
/* The Prometheus text of the counters, followed by the store's gauges
 * (clusters, VMs and nodes by state), into *buf (heap) and *len.  0 or
 * -1. */
int metrics_render(struct store *st, char **buf, size_t *len);

#endif
