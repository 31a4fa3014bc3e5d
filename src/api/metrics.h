/* thunder — thunder-api's counters for GET /metrics (Prometheus text).
 * Thread-safe: the counters have their own lock. */
#ifndef THUNDER_METRICS_H
#define THUNDER_METRICS_H

#include <stddef.h>

struct store;

/* Counts a reply: method and status. */
void metrics_request(const char *method, unsigned status);
/* Counts a node registration or heartbeat. */
void metrics_heartbeat(void);
/* Counts a failed push to a node. */
void metrics_push_error(void);
/* Records the seconds a cluster took from created to every VM running. */
void metrics_provisioned(double seconds);
/* Appends the Prometheus text of the counters to *buf (malloc'ed, grown),
 * followed by the store's gauges (clusters, VMs and nodes by state).
 * 0 or -1. */
int metrics_render(struct store *st, char **buf, size_t *len);

#endif
