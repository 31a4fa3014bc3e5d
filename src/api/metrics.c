/* thunder — thunder-api's counters, rendered in the Prometheus text format
 * 0.0.4 for GET /metrics.  Counters live in memory (they restart at 0 with
 * the process, as Prometheus expects of counters); gauges of clusters, VMs
 * and nodes by state are read from the store at each scrape.
 */
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "store.h"

#define N_METHODS 6
#define STATUS_MAX 600

static const char *const methods[N_METHODS] = {
  "GET", "HEAD", "POST", "PUT", "DELETE", "other"
};
static const double buckets[] = { 1, 2, 5, 10, 20, 30, 60, 120, 300, 600 };
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t requests[N_METHODS][STATUS_MAX];
static uint64_t heartbeats, push_errors;
static uint64_t prov_bucket[N_BUCKETS], prov_count;
static double prov_sum;

void
metrics_request(const char *method, unsigned status)
{
  unsigned m = N_METHODS - 1;
  for (unsigned i = 0; i < N_METHODS - 1; i++)
    if (strcmp(method, methods[i]) == 0)
      m = i;
  if (status >= STATUS_MAX)
    status = 0;
  pthread_mutex_lock(&lock);
  requests[m][status]++;
  pthread_mutex_unlock(&lock);
}

void
metrics_heartbeat(void)
{
  pthread_mutex_lock(&lock);
  heartbeats++;
  pthread_mutex_unlock(&lock);
}

void
metrics_push_error(void)
{
  pthread_mutex_lock(&lock);
  push_errors++;
  pthread_mutex_unlock(&lock);
}

void
metrics_provisioned(double seconds)
{
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < N_BUCKETS; i++)
    if (seconds <= buckets[i])
      prov_bucket[i]++;
  prov_count++;
  prov_sum += seconds;
  pthread_mutex_unlock(&lock);
}

struct out {
  char *buf;
  size_t len, cap;
  bool failed;
};

static void __attribute__((format(printf, 2, 3)))
put(struct out *o, const char *fmt, ...)
{
  if (o->failed)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->failed = true;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = o->cap * 2 + (size_t)n + 1;
    char *nb = realloc(o->buf, cap);
    if (nb == NULL) {
      o->failed = true;
      return;
    }
    o->buf = nb;
    o->cap = cap;
  }
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

int
metrics_render(struct store *st, char **bufp, size_t *lenp)
{
  struct out o = { .cap = 4096 };
  o.buf = malloc(o.cap);
  if (o.buf == NULL)
    return -1;
  o.buf[0] = '\0';

  pthread_mutex_lock(&lock);
  put(&o, "# HELP thunder_api_requests_total HTTP requests answered, by method and status.\n"
          "# TYPE thunder_api_requests_total counter\n");
  for (unsigned m = 0; m < N_METHODS; m++)
    for (unsigned s = 0; s < STATUS_MAX; s++)
      if (requests[m][s])
        put(&o, "thunder_api_requests_total{method=\"%s\",code=\"%u\"} %llu\n",
            methods[m], s, (unsigned long long)requests[m][s]);
  put(&o, "# HELP thunder_api_node_heartbeats_total Heartbeats received from nodes.\n"
          "# TYPE thunder_api_node_heartbeats_total counter\n"
          "thunder_api_node_heartbeats_total %llu\n",
      (unsigned long long)heartbeats);
  put(&o, "# HELP thunder_api_push_errors_total Calls to node control endpoints that failed after their retries.\n"
          "# TYPE thunder_api_push_errors_total counter\n"
          "thunder_api_push_errors_total %llu\n",
      (unsigned long long)push_errors);
  put(&o, "# HELP thunder_api_provision_seconds Time from a cluster's creation until every VM ran or failed.\n"
          "# TYPE thunder_api_provision_seconds histogram\n");
  for (size_t i = 0; i < N_BUCKETS; i++)
    put(&o, "thunder_api_provision_seconds_bucket{le=\"%g\"} %llu\n",
        buckets[i], (unsigned long long)prov_bucket[i]);
  put(&o, "thunder_api_provision_seconds_bucket{le=\"+Inf\"} %llu\n"
          "thunder_api_provision_seconds_sum %.3f\n"
          "thunder_api_provision_seconds_count %llu\n",
      (unsigned long long)prov_count, prov_sum,
      (unsigned long long)prov_count);
  pthread_mutex_unlock(&lock);

  struct tally t = { 0 };
  int rc = 0;
  if (st) {
    struct store_err err;
    if (store_cluster_list(st, 0, count_cluster, &t, &err) != STORE_OK ||
        store_node_list(st, 0, count_node, &t, &err) != STORE_OK)
      rc = -1;
  }
  put(&o, "# HELP thunder_api_clusters Clusters by state.\n"
          "# TYPE thunder_api_clusters gauge\n");
  for (int s = 0; s < STORE_CLUSTER_STATES; s++)
    put(&o, "thunder_api_clusters{state=\"%s\"} %llu\n",
        store_cluster_state_name(s), (unsigned long long)t.clusters[s]);
  put(&o, "# HELP thunder_api_vms VMs by state.\n"
          "# TYPE thunder_api_vms gauge\n");
  for (int s = 0; s < STORE_VM_STATES; s++)
    put(&o, "thunder_api_vms{state=\"%s\"} %llu\n",
        store_vm_state_name(s), (unsigned long long)t.vms[s]);
  put(&o, "# HELP thunder_api_nodes Registered nodes by state.\n"
          "# TYPE thunder_api_nodes gauge\n");
  for (int s = 0; s < STORE_NODE_STATES; s++)
    put(&o, "thunder_api_nodes{state=\"%s\"} %llu\n",
        store_node_state_name(s), (unsigned long long)t.nodes[s]);
  if (o.failed || rc == -1) {
    free(o.buf);
    return -1;
  }
  *bufp = o.buf;
  *lenp = o.len;
  return 0;
}
