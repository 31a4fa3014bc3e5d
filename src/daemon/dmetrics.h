/* thunder — thunderd's GET /metrics: the Prometheus text exposition of
 * what the control endpoint reports as JSON, plus read latencies and the
 * process (docs/metrics.md lists every family).
 *
 * It is rendered from the same JSON as GET /v1/images (node_list_json or
 * origin_list_json) and GET /v1/cache (node_cache_json), so the two views
 * never disagree; only the latency histograms (node_image_histograms) and
 * the process gauges (/proc/self) come from elsewhere.  Label values are
 * bounded: an image, the first 16 hex digits of its version, an upstream
 * of its list (at most 16), a client class.
 */
#ifndef THUNDER_DMETRICS_H
#define THUNDER_DMETRICS_H

#include <stddef.h>

struct json_object;
struct node;
struct server_conn_counts;

/* The exposition: images is {"images": [...]} as the control endpoint
 * lists them; node (NULL on an origin) gives the latencies, and cache its
 * node_cache_json (NULL on an origin); conns the NBD server's connections
 * (NULL: none).  The body (heap) and *len, or NULL if out of memory. */
char *dmetrics_render(struct json_object *images, struct node *node,
                      struct json_object *cache,
                      const struct server_conn_counts *conns, size_t *len);

#endif
