/* thunder — thunder-api's counters, rendered in the Prometheus text format
 * 0.0.4 for GET /metrics.  Counters live in memory (they restart at 0 with
 * the process, as Prometheus expects of counters); gauges of clusters, VMs
 * and nodes by state are read from the store at each scrape.
 */
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "histogram.h"
#include "metrics.h"
#include "promtext.h"
#include "store.h"

#define N_METHODS 6
#define STATUS_MAX 600

static const char *const methods[N_METHODS] = {
  "GET", "HEAD", "POST", "PUT", "DELETE", "other"
};
static const double prov_bounds[] = { 1, 2, 5, 10, 20, 30, 60, 120, 300, 600 };
static const double step_bounds[] = { 0.001, 0.005, 0.01, 0.05, 0.1, 0.25,
                                      0.5, 1, 2.5, 5, 10, 30, 60 };
#define METRICS_NODES_MAX 1024

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t requests[N_METHODS][STATUS_MAX];
static uint64_t heartbeats;
/* Push errors by node: names (heap) and counts; "other" past the cap. */
static char **err_nodes;
static uint64_t *err_counts;
static size_t n_err_nodes;
static uint64_t err_other;
static bool hist_ready;
static struct histogram prov, step_provision, step_delete;

/* Sets the histograms up once; the caller holds lock. */
static void
hist_init(void)
{
  if (hist_ready)
    return;
  histogram_init(&prov, prov_bounds, sizeof prov_bounds / sizeof prov_bounds[0]);
  histogram_init(&step_provision, step_bounds,
                 sizeof step_bounds / sizeof step_bounds[0]);
  histogram_init(&step_delete, step_bounds,
                 sizeof step_bounds / sizeof step_bounds[0]);
  hist_ready = true;
}

void
metrics_request(const char *method, unsigned status)
{
  unsigned m = N_METHODS - 1;
  for (unsigned i = 0; i < N_METHODS - 1; i++)
    if (strcmp(method, methods[i]) == 0)
      m = i;
  if (status >= STATUS_MAX)
    status = 0;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&lock);
  requests[m][status]++;
}

void
metrics_heartbeat(void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&lock);
  heartbeats++;
}

void
metrics_push_error(const char *node)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&lock);
  for (size_t i = 0; i < n_err_nodes; i++)
    if (strcmp(err_nodes[i], node) == 0) {
      err_counts[i]++;
      return;
    }
  char *name = n_err_nodes < METRICS_NODES_MAX ? strdup(node) : NULL;
  char **nv = name ? realloc(err_nodes, (n_err_nodes + 1) * sizeof *nv) : NULL;
  if (nv)
    err_nodes = nv;
  uint64_t *cv = nv ? realloc(err_counts, (n_err_nodes + 1) * sizeof *cv)
                    : NULL;
  if (cv == NULL) {
    free(name);
    err_other++;
    return;
  }
  err_counts = cv;
  err_nodes[n_err_nodes] = name;
  err_counts[n_err_nodes++] = 1;
}

void
metrics_provisioned(double seconds)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&lock);
  hist_init();
  histogram_observe_ns(&prov, (uint64_t)(seconds * 1e9));
}

void
metrics_step(const char *kind, double seconds)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&lock);
  hist_init();
  histogram_observe_ns(strcmp(kind, "delete") == 0 ? &step_delete
                                                   : &step_provision,
                       (uint64_t)(seconds * 1e9));
}

struct tally {
  uint64_t clusters[STORE_CLUSTER_STATES];
  uint64_t vms[STORE_VM_STATES];
  uint64_t nodes[STORE_NODE_STATES];
};

static int
count_cluster(const struct store_cluster *c, void *opaque)
{
  struct tally *t = opaque;
  t->clusters[c->state]++;
  for (int s = 0; s < STORE_VM_STATES; s++)
    t->vms[s] += c->vms[s];
  return 0;
}

static int
count_node(const struct store_node *n, void *opaque)
{
  struct tally *t = opaque;
  t->nodes[n->state]++;
  return 0;
}

/* The counters kept here (the caller holds lock). */
static void
render_counters(struct promtext *p)
{
  char code[8];
  hist_init();
  promtext_family(p, "thunder_api_requests_total", "counter",
                  "HTTP requests answered, by method and status.");
  for (unsigned m = 0; m < N_METHODS; m++)
    for (unsigned s = 0; s < STATUS_MAX; s++)
      if (requests[m][s]) {
        snprintf(code, sizeof code, "%u", s);
        const struct promtext_label l[] = { { "method", methods[m] },
                                            { "code", code } };
        promtext_uint(p, "thunder_api_requests_total", l, 2, requests[m][s]);
      }
  promtext_family(p, "thunder_api_node_heartbeats_total", "counter",
                  "Heartbeats received from nodes.");
  promtext_uint(p, "thunder_api_node_heartbeats_total", NULL, 0, heartbeats);
  promtext_family(p, "thunder_api_push_errors_total", "counter",
                  "Calls to node control endpoints that failed, by node.");
  for (size_t i = 0; i < n_err_nodes; i++) {
    const struct promtext_label l = { "node", err_nodes[i] };
    promtext_uint(p, "thunder_api_push_errors_total", &l, 1, err_counts[i]);
  }
  if (err_other) {
    const struct promtext_label l = { "node", "other" };
    promtext_uint(p, "thunder_api_push_errors_total", &l, 1, err_other);
  }
  promtext_family(p, "thunder_api_provision_seconds", "histogram",
                  "Time from a cluster's creation until every VM ran or failed.");
  promtext_histogram(p, "thunder_api_provision_seconds", NULL, 0, &prov);
  promtext_family(p, "thunder_api_converge_step_seconds", "histogram",
                  "Time of one converger step on one cluster, by kind.");
  const struct promtext_label lp = { "kind", "provision" };
  const struct promtext_label ld = { "kind", "delete" };
  promtext_histogram(p, "thunder_api_converge_step_seconds", &lp, 1,
                     &step_provision);
  promtext_histogram(p, "thunder_api_converge_step_seconds", &ld, 1,
                     &step_delete);
}

int
metrics_render(struct store *st, char **bufp, size_t *lenp)
{
  struct promtext *p = promtext_new();
  if (p == NULL)
    return -1;
  pthread_mutex_lock(&lock);
  render_counters(p);
  pthread_mutex_unlock(&lock);

  struct tally t = { 0 };
  if (st) {
    struct store_err err;
    if (store_cluster_list(st, 0, count_cluster, &t, &err) != STORE_OK ||
        store_node_list(st, 0, count_node, &t, &err) != STORE_OK) {
      promtext_free(p);
      return -1;
    }
  }
  promtext_family(p, "thunder_api_clusters", "gauge", "Clusters by state.");
  for (int s = 0; s < STORE_CLUSTER_STATES; s++) {
    const struct promtext_label l = { "state", store_cluster_state_name(s) };
    promtext_uint(p, "thunder_api_clusters", &l, 1, t.clusters[s]);
  }
  promtext_family(p, "thunder_api_vms", "gauge", "VMs by state.");
  for (int s = 0; s < STORE_VM_STATES; s++) {
    const struct promtext_label l = { "state", store_vm_state_name(s) };
    promtext_uint(p, "thunder_api_vms", &l, 1, t.vms[s]);
  }
  promtext_family(p, "thunder_api_nodes", "gauge",
                  "Registered nodes by state.");
  for (int s = 0; s < STORE_NODE_STATES; s++) {
    const struct promtext_label l = { "state", store_node_state_name(s) };
    promtext_uint(p, "thunder_api_nodes", &l, 1, t.nodes[s]);
  }
  *bufp = promtext_finish(p, lenp);
  return *bufp ? 0 : -1;
}
