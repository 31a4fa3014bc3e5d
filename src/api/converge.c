/* thunder — thunder-api's background work (docs/api.md "Nodes as
 * thunder-api sees them").
 *
 * One thread, its own store connection.  Each round (every poll_ms, or at
 * once when kicked) it
 *   1. marks down the nodes whose heartbeats stopped, and handles each as
 *      a failed node (below);
 *   2. takes one step of every unfinished cluster:
 *      pending → provisioning, then per step:
 *        attach  PUT /v1/images/{image} {version, upstreams} on the tree's
 *                nodes not yet attached, level by level (parents first);
 *        create  PUT /v1/vms/{vm} for pending VMs on attached nodes:
 *                → volume_ready, or running if the node says so;
 *        follow  GET /v1/vms/{vm} for volume_ready VMs: running (or
 *                shutoff: it ran and stopped) → running; crashed, gone →
 *                failed;
 *        bytes   GET /v1/images/{image} of the tree's nodes (at most once
 *                a second): the bytes they fetched from the origin;
 *        done    no VM pending or volume_ready: running (one runs) or
 *                failed (none does);
 *      deleting: DELETE /v1/vms/{vm} of every VM not deleted, then deleted;
 *   3. detaches unused images (at most once a second): every attachment
 *      it made is in SQLite (store_attachment_put); one that nothing has
 *      used (no live VM of its version on the node or below it in a tree,
 *      no cluster of it being provisioned there) for detach_grace_s gets
 *      DELETE /v1/images/{image} on its node, so its blocks become the
 *      first the node evicts (docs/api.md "Detaching unused images").  The
 *      idle time is in SQLite, so a restart of thunder-api neither forgets
 *      nor restarts it.
 *
 * Everything it does to a node is idempotent (docs/control.md): after a
 * restart it simply runs the steps again — "attached" is kept in memory
 * only, and re-attaching with the same version answers 200.  VM names are
 * CLUSTER-NAME-IIII, so a PUT repeated after a kill -9 finds the VM made
 * before it and never makes a second one.
 *
 * A failed node (no heartbeat for node_timeout_s, or its control endpoint
 * failing every retry): marked down, its live VMs failed with the reason,
 * and in every cluster not deleting or deleted whose tree holds it (the
 * attachments of a failed cluster still relay until it is deleted), it is cut out of every
 * upstream list (its children then fetch from its parent, their lists
 * still ending at the origin); the changed lists are stored and pushed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "api.h"
#include "apiutil.h"
#include "converge.h"
#include "metrics.h"
#include "cleanup.h"
#include "clock.h"
#include "log.h"
#include "nodecall.h"

#define COMPONENT "converge"
#define BYTES_EVERY_MS 1000
#define VM_TRIES 5         /* steps a VM create may fail transiently */
#define ATTACH_TRIES 10    /* steps an attach may fail (404/502/503) */
#define DETACH_EVERY_MS 1000
#define DETACH_BATCH 256   /* detaches per round at most */

/* What the converger remembers of a cluster between steps. */
struct memo {
  char id[STORE_ID_LEN + 1];
  char *image;             /* the cluster's */
  char **attached;         /* node ids */
  size_t n_attached;
  unsigned *attach_fail;   /* by tree row index, resized as needed */
  size_t n_attach_fail;
  int64_t bytes_at;        /* monotonic ms of the last bytes poll */
  uint64_t origin_bytes;
  /* Bytes each node last reported fetching from each of its upstreams
   * (converger_upstream_bytes; under the converger's lock). */
  struct { char *node, *uri; uint64_t bytes; } *edges;
  size_t n_edges;
  struct { char *vm; unsigned fails; } *vm_fail;
  size_t n_vm_fail;
  bool seen;               /* in this round's list */
};

struct converger {
  const struct api_config *cfg;
  struct store *st;
  struct nodecall_opts opts;
  pthread_t thread;
  pthread_mutex_t lock;    /* kicked, stopping, memos' origin_bytes */
  pthread_cond_t cond;
  bool kicked, stopping;
  struct memo **memos;
  size_t n_memos;
  int64_t detach_at;       /* monotonic ms of the last detach step */
};

/* ---- memory ------------------------------------------------------------ */

static struct memo *
memo_get(struct converger *cv, const char *id)
{
  for (size_t i = 0; i < cv->n_memos; i++)
    if (strcmp(cv->memos[i]->id, id) == 0)
      return cv->memos[i];
  struct memo *m = calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  snprintf(m->id, sizeof m->id, "%s", id);
  /* converger_origin_bytes reads the array from other threads. */
  pthread_mutex_lock(&cv->lock);
  struct memo **v = realloc(cv->memos, (cv->n_memos + 1) * sizeof *v);
  if (v)
    cv->memos = v;
  if (v)
    cv->memos[cv->n_memos++] = m;
  pthread_mutex_unlock(&cv->lock);
  if (v == NULL) {
    free(m);
    return NULL;
  }
  return m;
}

static void
memo_free(struct memo *m)
{
  free(m->image);
  for (size_t i = 0; i < m->n_attached; i++)
    free(m->attached[i]);
  free(m->attached);
  free(m->attach_fail);
  for (size_t i = 0; i < m->n_vm_fail; i++)
    free(m->vm_fail[i].vm);
  free(m->vm_fail);
  for (size_t i = 0; i < m->n_edges; i++) {
    free(m->edges[i].node);
    free(m->edges[i].uri);
  }
  free(m->edges);
  free(m);
}

/* Records what node reported fetching from uri (the counter only grows;
 * a lower report, after a node restart, is kept as it is).  The caller
 * holds the converger's lock. */
static void
memo_edge(struct memo *m, const char *node, const char *uri, uint64_t bytes)
{
  for (size_t i = 0; i < m->n_edges; i++)
    if (strcmp(m->edges[i].node, node) == 0 &&
        strcmp(m->edges[i].uri, uri) == 0) {
      m->edges[i].bytes = bytes;
      return;
    }
  void *v = realloc(m->edges, (m->n_edges + 1) * sizeof *m->edges);
  if (v == NULL)
    return;
  m->edges = v;
  char *n = strdup(node), *u = strdup(uri);
  if (n == NULL || u == NULL) {
    free(n);
    free(u);
    return;
  }
  m->edges[m->n_edges].node = n;
  m->edges[m->n_edges].uri = u;
  m->edges[m->n_edges++].bytes = bytes;
}

static bool
memo_attached(const struct memo *m, const char *node)
{
  for (size_t i = 0; i < m->n_attached; i++)
    if (strcmp(m->attached[i], node) == 0)
      return true;
  return false;
}

static void
memo_set_attached(struct memo *m, const char *node, bool on)
{
  for (size_t i = 0; i < m->n_attached; i++)
    if (strcmp(m->attached[i], node) == 0) {
      if (!on) {
        free(m->attached[i]);
        m->attached[i] = m->attached[--m->n_attached];
      }
      return;
    }
  if (!on)
    return;
  char **v = realloc(m->attached, (m->n_attached + 1) * sizeof *v);
  if (v == NULL)
    return;
  m->attached = v;
  if ((m->attached[m->n_attached] = strdup(node)))
    m->n_attached++;
}

/* How many times VM vm's create failed transiently, counting this one. */
static unsigned
memo_vm_failed(struct memo *m, const char *vm)
{
  for (size_t i = 0; i < m->n_vm_fail; i++)
    if (strcmp(m->vm_fail[i].vm, vm) == 0)
      return ++m->vm_fail[i].fails;
  void *v = realloc(m->vm_fail, (m->n_vm_fail + 1) * sizeof *m->vm_fail);
  if (v == NULL)
    return VM_TRIES;
  m->vm_fail = v;
  m->vm_fail[m->n_vm_fail].vm = strdup(vm);
  m->vm_fail[m->n_vm_fail].fails = 1;
  if (m->vm_fail[m->n_vm_fail].vm == NULL)
    return VM_TRIES;
  return m->vm_fail[m->n_vm_fail++].fails;
}

uint64_t
converger_upstream_bytes(struct converger *cv, const char *id,
                         const char *node, const char *uri)
{
  if (cv == NULL)
    return 0;
  uint64_t b = 0;
  pthread_mutex_lock(&cv->lock);
  for (size_t i = 0; i < cv->n_memos; i++) {
    struct memo *m = cv->memos[i];
    if (strcmp(m->id, id) != 0)
      continue;
    for (size_t j = 0; j < m->n_edges; j++)
      if (strcmp(m->edges[j].node, node) == 0 &&
          strcmp(m->edges[j].uri, uri) == 0)
        b = m->edges[j].bytes;
  }
  pthread_mutex_unlock(&cv->lock);
  return b;
}

uint64_t
converger_origin_bytes(struct converger *cv, const char *id)
{
  if (cv == NULL)
    return 0;
  uint64_t b = 0;
  pthread_mutex_lock(&cv->lock);
  for (size_t i = 0; i < cv->n_memos; i++)
    if (strcmp(cv->memos[i]->id, id) == 0)
      b = cv->memos[i]->origin_bytes;
  pthread_mutex_unlock(&cv->lock);
  return b;
}

/* ---- copies of store rows (the callbacks' strings are borrowed) ---------- */

struct vm_copy {
  char *id, *name, *node;
  enum store_vm_state state;
  int64_t running_at;
};

struct vm_vec {
  struct vm_copy *v;
  size_t n;
};

static int
copy_vm(const struct store_vm *vm, void *opaque)
{
  struct vm_vec *vv = opaque;
  struct vm_copy *v = realloc(vv->v, (vv->n + 1) * sizeof *v);
  if (v == NULL)
    return -1;
  vv->v = v;
  v[vv->n] = (struct vm_copy){ strdup(vm->id), strdup(vm->name),
                               strdup(vm->node_id), vm->state,
                               vm->running_at };
  vv->n++;
  return 0;
}

static void
vm_vec_free(struct vm_vec *vv)
{
  for (size_t i = 0; i < vv->n; i++) {
    free(vv->v[i].id);
    free(vv->v[i].name);
    free(vv->v[i].node);
  }
  free(vv->v);
  vv->v = NULL;
  vv->n = 0;
}

struct row_copy {
  char *node, *parent;
  unsigned depth;
  char **ups;
  size_t n_ups;
};

struct row_vec {
  struct row_copy *v;
  size_t n;
};

static int
copy_row(const struct store_tree_row *r, void *opaque)
{
  struct row_vec *rv = opaque;
  struct row_copy *v = realloc(rv->v, (rv->n + 1) * sizeof *v);
  if (v == NULL)
    return -1;
  rv->v = v;
  struct row_copy *c = &v[rv->n++];
  memset(c, 0, sizeof *c);
  c->node = strdup(r->node_id);
  c->parent = r->parent ? strdup(r->parent) : NULL;
  c->depth = r->depth;
  size_t n = r->n_upstreams;
  c->ups = calloc(n ? n : 1, sizeof *c->ups);
  for (size_t i = 0; c->ups && i < n; i++)
    c->ups[c->n_ups++] = strdup(r->upstreams[i]);
  return 0;
}

static void
row_vec_free(struct row_vec *rv)
{
  for (size_t i = 0; i < rv->n; i++) {
    free(rv->v[i].node);
    free(rv->v[i].parent);
    for (size_t j = 0; j < rv->v[i].n_ups; j++)
      free(rv->v[i].ups[j]);
    free(rv->v[i].ups);
  }
  free(rv->v);
  rv->v = NULL;
  rv->n = 0;
}

/* ---- nodes ---------------------------------------------------------------- */

/* Node id's control URL if it is ready, else NULL; free() it. */
static char *
ready_control(struct converger *cv, const char *id)
{
  struct store_err err;
  CLEANUP_FREE struct store_node *n = store_node_get(cv->st, id, &err);
  if (n == NULL || n->state != STORE_NODE_READY)
    return NULL;
  return strdup(n->control_url);
}

static void node_failed(struct converger *cv, const char *node,
                        const char *reason);

/* ---- provisioning ------------------------------------------------------ */

static struct json_object *
attach_body(const char *version, const struct row_copy *r)
{
  struct json_object *o = json_object_new_object();
  struct json_object *ups = json_object_new_array();
  json_object_object_add(o, "version", json_object_new_string(version));
  for (size_t j = 0; j < r->n_ups; j++)
    json_object_array_add(ups, json_object_new_string(r->ups[j]));
  json_object_object_add(o, "upstreams", ups);
  return o;
}

static void
fail_vms_of_node(struct converger *cv, const struct vm_vec *vms,
                 const char *node, const char *reason)
{
  struct store_err err;
  for (size_t i = 0; i < vms->n; i++)
    if (strcmp(vms->v[i].node, node) == 0 &&
        (vms->v[i].state == STORE_VM_PENDING ||
         vms->v[i].state == STORE_VM_VOLUME_READY)) {
      if (store_vm_set_state(cv->st, vms->v[i].id,
                             STORE_MASK(STORE_VM_PENDING) |
                                 STORE_MASK(STORE_VM_VOLUME_READY),
                             STORE_VM_FAILED, reason, &err) == STORE_OK)
        log_warn(COMPONENT, "VM %s failed: %s", vms->v[i].name, reason);
      vms->v[i].state = STORE_VM_FAILED;
    }
}

/* Attaches the image on the tree's nodes not yet attached, level by level. */
static void
step_attach(struct converger *cv, const struct store_cluster *c,
            struct memo *m, const struct row_vec *rows,
            const struct vm_vec *vms)
{
  unsigned maxd = 0;
  for (size_t i = 0; i < rows->n; i++)
    if (rows->v[i].depth > maxd)
      maxd = rows->v[i].depth;
  if (m->n_attach_fail < rows->n) {
    unsigned *v = realloc(m->attach_fail, rows->n * sizeof *v);
    if (v == NULL)
      return;
    memset(v + m->n_attach_fail, 0,
           (rows->n - m->n_attach_fail) * sizeof *v);
    m->attach_fail = v;
    m->n_attach_fail = rows->n;
  }
  CLEANUP_FREE char *path = NULL;
  if (asprintf(&path, "/v1/images/%s", c->image) == -1)
    return;
  for (unsigned d = 1; d <= maxd; d++) {
    struct nodecall *calls = calloc(rows->n, sizeof *calls);
    size_t n = 0;
    if (calls == NULL)
      return;
    for (size_t i = 0; i < rows->n; i++) {
      const struct row_copy *r = &rows->v[i];
      if (r->depth != d || memo_attached(m, r->node))
        continue;
      CLEANUP_FREE char *ctl = ready_control(cv, r->node);
      if (ctl == NULL)
        continue;
      /* A node with no live VM of this cluster still relays for its
       * children, so it is attached all the same. */
      CLEANUP_JSON_PUT struct json_object *b = attach_body(c->image_version, r);
      if (nodecall_set(&calls[n], r->node, "PUT", ctl, path, b, (void *)(uintptr_t)i) == 0)
        n++;
    }
    nodecall_run(calls, n, &cv->opts);
    for (size_t k = 0; k < n; k++) {
      size_t i = (uintptr_t)calls[k].user;
      const struct row_copy *r = &rows->v[i];
      char why[NODECALL_ERR_MAX + 256];
      long st = calls[k].status;
      if (st == 200 || st == 201) {
        struct store_err err;
        memo_set_attached(m, r->node, true);
        if (store_attachment_put(cv->st, r->node, c->image, c->image_version,
                                 &err) != STORE_OK)
          log_warn(COMPONENT, "%s", err.msg);
        log_info(COMPONENT, "cluster %s: %s attached %s (upstream %s)",
                 c->id, r->node, c->image, r->ups[0]);
        continue;
      }
      metrics_push_error(r->node);
      nodecall_describe(&calls[k], why, sizeof why);
      if (st == 0) {
        node_failed(cv, r->node, why);
      } else if (st == 409 || st == 400 || st == 401 ||
                 ++m->attach_fail[i] >= ATTACH_TRIES) {
        char reason[NODECALL_ERR_MAX + 300];
        snprintf(reason, sizeof reason, "attaching image %s on node %s: %s",
                 c->image, r->node, why);
        fail_vms_of_node(cv, vms, r->node, reason);
        struct store_err err;
        store_event_add(cv->st, c->id, NULL, "attach_failed", reason, &err);
      } else {
        log_warn(COMPONENT, "cluster %s: will retry: %s", c->id, why);
      }
    }
    nodecall_clear(calls, n);
    free(calls);
  }
}

/* The state a node reports for a VM, as ours; -1 = no change. */
static int
vm_state_of(const struct json_object *reply)
{
  struct json_object *st;
  if (reply == NULL ||
      !json_object_object_get_ex(reply, "state", &st) ||
      !json_object_is_type(st, json_type_string))
    return -1;
  const char *s = json_object_get_string(st);
  if (strcmp(s, "running") == 0 || strcmp(s, "shutoff") == 0)
    return STORE_VM_RUNNING;
  if (strcmp(s, "crashed") == 0)
    return STORE_VM_FAILED;
  return -1;
}

static void
step_vms(struct converger *cv, const struct store_cluster *c, struct memo *m,
         struct vm_vec *vms)
{
  struct nodecall *calls = calloc(vms->n ? vms->n : 1, sizeof *calls);
  size_t n = 0;
  if (calls == NULL)
    return;
  for (size_t i = 0; i < vms->n; i++) {
    struct vm_copy *v = &vms->v[i];
    if (v->state != STORE_VM_PENDING && v->state != STORE_VM_VOLUME_READY)
      continue;
    if (v->state == STORE_VM_PENDING && !memo_attached(m, v->node))
      continue;
    CLEANUP_FREE char *ctl = ready_control(cv, v->node);
    if (ctl == NULL)
      continue;
    CLEANUP_FREE char *path = NULL;
    if (asprintf(&path, "/v1/vms/%s", v->name) == -1)
      continue;
    CLEANUP_JSON_PUT struct json_object *b = NULL;
    if (v->state == STORE_VM_PENDING) {
      b = json_object_new_object();
      json_object_object_add(b, "image", json_object_new_string(c->image));
      json_object_object_add(b, "vcpus", json_object_new_int64(c->vcpus));
      json_object_object_add(b, "memory_mib",
                             json_object_new_int64((int64_t)c->memory_mib));
      if (c->disk_gib)
        json_object_object_add(b, "disk_gib",
                               json_object_new_int64((int64_t)c->disk_gib));
    }
    if (nodecall_set(&calls[n], v->node, b ? "PUT" : "GET", ctl, path, b,
                     (void *)(uintptr_t)i) == 0)
      n++;
  }
  nodecall_run(calls, n, &cv->opts);
  struct store_err err;
  for (size_t k = 0; k < n; k++) {
    struct vm_copy *v = &vms->v[(uintptr_t)calls[k].user];
    long st = calls[k].status;
    char why[NODECALL_ERR_MAX + 256], reason[NODECALL_ERR_MAX + 300];
    nodecall_describe(&calls[k], why, sizeof why);
    if (st == 200 || st == 201) {
      int to = vm_state_of(calls[k].reply);
      if (to == STORE_VM_FAILED) {
        snprintf(reason, sizeof reason, "the domain crashed on node %s", v->node);
      } else if (to == STORE_VM_RUNNING ||
                 v->state == STORE_VM_PENDING) {
        enum store_vm_state ns = to == STORE_VM_RUNNING ? STORE_VM_RUNNING
                                                        : STORE_VM_VOLUME_READY;
        if (store_vm_set_state(cv->st, v->id, STORE_MASK(v->state), ns, NULL,
                               &err) == STORE_OK) {
          log_info(COMPONENT, "VM %s on %s: %s", v->name, v->node,
                   store_vm_state_name(ns));
          v->state = ns;
        }
        continue;
      } else {
        continue; /* still starting */
      }
    } else if (st == 0) {
      metrics_push_error(v->node);
      node_failed(cv, v->node, why);
      continue;
    } else if (st == 404 && v->state == STORE_VM_PENDING) {
      /* The node lost the attachment (restarted without it?): again. */
      memo_set_attached(m, v->node, false);
      if (memo_vm_failed(m, v->name) < VM_TRIES)
        continue;
      snprintf(reason, sizeof reason, "creating it on node %s: %s", v->node, why);
    } else if (st == 404) {
      snprintf(reason, sizeof reason, "it vanished from node %s", v->node);
    } else if (st >= 500 && memo_vm_failed(m, v->name) < VM_TRIES) {
      metrics_push_error(v->node);
      log_warn(COMPONENT, "VM %s: will retry: %s", v->name, why);
      continue;
    } else {
      metrics_push_error(v->node);
      snprintf(reason, sizeof reason, "%s on node %s: %s",
               v->state == STORE_VM_PENDING ? "creating it" : "following it",
               v->node, why);
    }
    if (store_vm_set_state(cv->st, v->id, STORE_MASK(v->state),
                           STORE_VM_FAILED, reason, &err) == STORE_OK)
      log_warn(COMPONENT, "VM %s failed: %s", v->name, reason);
    v->state = STORE_VM_FAILED;
  }
  nodecall_clear(calls, n);
  free(calls);
}

/* Sums the bytes the tree's nodes fetched from the origin. */
static void
step_bytes(struct converger *cv, const struct store_cluster *c,
           struct memo *m, const struct row_vec *rows)
{
  int64_t now = clock_mono_ms();
  if (now - m->bytes_at < BYTES_EVERY_MS)
    return;
  m->bytes_at = now;
  struct store_err err;
  CLEANUP_FREE struct store_image *im = store_image_get(cv->st, c->image, &err);
  if (im == NULL)
    return;
  CLEANUP_FREE char *origin = apiutil_export_uri(im->origin_nbd, c->image);
  CLEANUP_FREE char *path = NULL;
  if (origin == NULL || asprintf(&path, "/v1/images/%s", c->image) == -1)
    return;
  struct nodecall *calls = calloc(rows->n ? rows->n : 1, sizeof *calls);
  CLEANUP_FREE const char **who = calloc(rows->n ? rows->n : 1, sizeof *who);
  size_t n = 0;
  if (calls == NULL || who == NULL) {
    free(calls);
    return;
  }
  for (size_t i = 0; i < rows->n; i++) {
    if (!memo_attached(m, rows->v[i].node))
      continue;
    CLEANUP_FREE char *ctl = ready_control(cv, rows->v[i].node);
    if (ctl && nodecall_set(&calls[n], rows->v[i].node, "GET", ctl, path, NULL, NULL) == 0)
      who[n++] = rows->v[i].node;
  }
  struct nodecall_opts o = cv->opts;
  o.retries = 0;
  nodecall_run(calls, n, &o);
  uint64_t sum = 0;
  for (size_t k = 0; k < n; k++) {
    struct json_object *ups, *u, *uri, *bytes;
    if (calls[k].status != 200 || calls[k].reply == NULL ||
        !json_object_object_get_ex(calls[k].reply, "upstreams", &ups) ||
        !json_object_is_type(ups, json_type_array))
      continue;
    for (size_t j = 0; j < json_object_array_length(ups); j++) {
      u = json_object_array_get_idx(ups, j);
      if (!json_object_object_get_ex(u, "uri", &uri) ||
          !json_object_is_type(uri, json_type_string) ||
          !json_object_object_get_ex(u, "bytes", &bytes) ||
          !json_object_is_type(bytes, json_type_int) ||
          json_object_get_int64(bytes) < 0)
        continue;
      uint64_t b = (uint64_t)json_object_get_int64(bytes);
      if (strcmp(json_object_get_string(uri), origin) == 0)
        sum += b;
      pthread_mutex_lock(&cv->lock);
      memo_edge(m, who[k], json_object_get_string(uri), b);
      pthread_mutex_unlock(&cv->lock);
    }
  }
  nodecall_clear(calls, n);
  free(calls);
  pthread_mutex_lock(&cv->lock);
  if (sum > m->origin_bytes)
    m->origin_bytes = sum;
  pthread_mutex_unlock(&cv->lock);
}

static void
step_provision(struct converger *cv, const struct store_cluster *c,
               struct memo *m)
{
  struct store_err err;
  if (c->state == STORE_CLUSTER_PENDING &&
      store_cluster_set_state(cv->st, c->id, STORE_MASK(STORE_CLUSTER_PENDING),
                              STORE_CLUSTER_PROVISIONING, NULL, &err) != STORE_OK) {
    log_warn(COMPONENT, "%s", err.msg);
    return;
  }
  struct vm_vec vms = { 0 };
  struct row_vec rows = { 0 };
  if (store_vm_list_cluster(cv->st, c->id, copy_vm, &vms, &err) != STORE_OK ||
      store_tree_list(cv->st, c->id, copy_row, &rows, &err) != STORE_OK) {
    log_warn(COMPONENT, "%s", err.msg);
    goto out;
  }
  step_attach(cv, c, m, &rows, &vms);
  step_vms(cv, c, m, &vms);
  step_bytes(cv, c, m, &rows);

  size_t open = 0, running = 0, failed = 0;
  for (size_t i = 0; i < vms.n; i++) {
    if (vms.v[i].state == STORE_VM_PENDING ||
        vms.v[i].state == STORE_VM_VOLUME_READY)
      open++;
    else if (vms.v[i].state == STORE_VM_RUNNING)
      running++;
    else if (vms.v[i].state == STORE_VM_FAILED)
      failed++;
  }
  if (open == 0) {
    m->bytes_at = 0;
    step_bytes(cv, c, m, &rows);
    char msg[128];
    snprintf(msg, sizeof msg, "%zu of %zu VMs failed", failed, vms.n);
    enum store_cluster_state to = running ? STORE_CLUSTER_RUNNING
                                          : STORE_CLUSTER_FAILED;
    if (store_cluster_set_state(cv->st, c->id,
                                STORE_MASK(STORE_CLUSTER_PROVISIONING), to,
                                running ? NULL : msg, &err) == STORE_OK) {
      double secs = (double)(apiutil_now_ms() - c->created_at) / 1000.0;
      metrics_provisioned(secs);
      log_info(COMPONENT, "cluster %s (%s): %s after %.1f s: %zu running, %zu failed",
               c->id, c->name, store_cluster_state_name(to), secs, running,
               failed);
    }
  }
out:
  vm_vec_free(&vms);
  row_vec_free(&rows);
}

/* ---- deleting ------------------------------------------------------------ */

static void
step_delete(struct converger *cv, const struct store_cluster *c,
            struct memo *m)
{
  struct store_err err;
  struct vm_vec vms = { 0 };
  struct nodecall *calls = NULL;
  size_t n = 0;
  bool left = false;
  if (store_vm_list_cluster(cv->st, c->id, copy_vm, &vms, &err) != STORE_OK) {
    log_warn(COMPONENT, "%s", err.msg);
    goto out;
  }
  calls = calloc(vms.n + 1, sizeof *calls);
  if (calls == NULL)
    goto out;
  for (size_t i = 0; i < vms.n; i++) {
    struct vm_copy *v = &vms.v[i];
    if (v->state == STORE_VM_DELETED)
      continue;
    CLEANUP_FREE char *ctl = ready_control(cv, v->node);
    if (ctl == NULL) {
      store_vm_set_state(cv->st, v->id, 0, STORE_VM_DELETED,
                         "its node is down: not deleted there", &err);
      continue;
    }
    if (v->state != STORE_VM_DELETING)
      store_vm_set_state(cv->st, v->id, 0, STORE_VM_DELETING, NULL, &err);
    CLEANUP_FREE char *path = NULL;
    if (asprintf(&path, "/v1/vms/%s", v->name) != -1 &&
        nodecall_set(&calls[n], v->node, "DELETE", ctl, path, NULL, v) == 0)
      n++;
  }
  nodecall_run(calls, n, &cv->opts);
  for (size_t k = 0; k < n; k++) {
    struct vm_copy *v = calls[k].user;
    char why[NODECALL_ERR_MAX + 256];
    long st = calls[k].status;
    if (st == 200 || st == 404) {
      store_vm_set_state(cv->st, v->id, 0, STORE_VM_DELETED, NULL, &err);
      log_info(COMPONENT, "VM %s deleted on %s", v->name, v->node);
    } else if (st >= 400 && st < 500) {
      /* The node's final word (no pool there, a domain not thunder's):
       * nothing of ours to delete. */
      char reason[NODECALL_ERR_MAX + 300];
      snprintf(reason, sizeof reason, "not deleted on node %s: %s", v->node,
               nodecall_describe(&calls[k], why, sizeof why));
      store_vm_set_state(cv->st, v->id, 0, STORE_VM_DELETED, reason, &err);
      log_warn(COMPONENT, "VM %s: %s", v->name, reason);
    } else {
      metrics_push_error(v->node);
      log_warn(COMPONENT, "VM %s: %s", v->name,
               nodecall_describe(&calls[k], why, sizeof why));
      if (calls[k].status == 0)
        node_failed(cv, v->node, why);
      left = true;
    }
  }
  nodecall_clear(calls, n);
  if (left)
    goto out;

  /* The nodes keep the image attached: the detach step lets it go once
   * nothing has used it for detach_grace_s (a cluster made again soon
   * finds it attached). */
  if (store_cluster_set_state(cv->st, c->id,
                              STORE_MASK(STORE_CLUSTER_DELETING),
                              STORE_CLUSTER_DELETED, NULL, &err) == STORE_OK)
    log_info(COMPONENT, "cluster %s (%s): deleted", c->id, c->name);
out:
  free(calls);
  vm_vec_free(&vms);
}

/* ---- failed nodes ------------------------------------------------------------ */

struct id_vec {
  char **v;
  size_t n;
};

static int
copy_id(const char *id, void *opaque)
{
  struct id_vec *iv = opaque;
  char **v = realloc(iv->v, (iv->n + 1) * sizeof *v);
  if (v == NULL)
    return -1;
  iv->v = v;
  if ((v[iv->n] = strdup(id)))
    iv->n++;
  return 0;
}

static int
copy_cluster_id(const struct store_cluster *c, void *opaque)
{
  return copy_id(c->id, opaque);
}

static void
id_vec_free(struct id_vec *iv)
{
  for (size_t i = 0; i < iv->n; i++)
    free(iv->v[i]);
  free(iv->v);
  iv->v = NULL;
  iv->n = 0;
}

/* Cuts node out of cluster id's tree and pushes the changed lists. */
static void
reparent(struct converger *cv, const char *id, const char *node)
{
  struct store_err err;
  struct row_vec rows = { 0 };
  CLEANUP_FREE struct store_cluster *c = store_cluster_get(cv->st, id, &err);
  if (c == NULL ||
      store_tree_list(cv->st, id, copy_row, &rows, &err) != STORE_OK) {
    row_vec_free(&rows);
    return;
  }
  const struct row_copy *gone = NULL;
  for (size_t i = 0; i < rows.n; i++)
    if (strcmp(rows.v[i].node, node) == 0)
      gone = &rows.v[i];
  if (gone == NULL || gone->n_ups == 0) {
    row_vec_free(&rows);
    return;
  }
  /* The failed node's own URI is its children's first upstream. */
  CLEANUP_FREE char *gone_uri = NULL;   /* a copy: the lists lose theirs */
  for (size_t i = 0; i < rows.n && gone_uri == NULL; i++)
    if (rows.v[i].parent && strcmp(rows.v[i].parent, node) == 0)
      gone_uri = strdup(rows.v[i].ups[0]);
  struct store_tree_row *out = calloc(rows.n, sizeof *out);
  size_t n_out = 0;
  struct memo *m = memo_get(cv, id);
  struct nodecall *calls = calloc(rows.n, sizeof *calls);
  size_t n_calls = 0;
  CLEANUP_FREE char *path = NULL;
  if (out == NULL || calls == NULL || gone_uri == NULL ||
      asprintf(&path, "/v1/images/%s", c->image) == -1)
    goto done;
  for (size_t i = 0; i < rows.n; i++) {
    struct row_copy *r = &rows.v[i];
    size_t w = 0;
    bool changed = false;
    for (size_t j = 0; j < r->n_ups; j++) {
      if (strcmp(r->ups[j], gone_uri) == 0 && r->n_ups > 1) {
        free(r->ups[j]);
        changed = true;
        continue;
      }
      r->ups[w++] = r->ups[j];
    }
    if (!changed)
      continue;
    r->n_ups = w;
    if (r->parent && strcmp(r->parent, node) == 0) {
      free(r->parent);
      r->parent = gone->parent ? strdup(gone->parent) : NULL;
    }
    if (r->depth > 1)
      r->depth--;
    out[n_out++] = (struct store_tree_row){
      .node_id = r->node, .parent = r->parent, .depth = r->depth,
      .upstreams = (const char *const *)r->ups, .n_upstreams = r->n_ups,
    };
    CLEANUP_FREE char *ctl = ready_control(cv, r->node);
    CLEANUP_JSON_PUT struct json_object *b = attach_body(c->image_version, r);
    if (ctl && m && memo_attached(m, r->node) &&
        nodecall_set(&calls[n_calls], r->node, "PUT", ctl, path, b, r->node) == 0)
      n_calls++;
  }
  if (n_out && store_tree_update(cv->st, id, out, n_out, &err) != STORE_OK)
    log_warn(COMPONENT, "%s", err.msg);
  if (n_out) {
    char msg[256];
    snprintf(msg, sizeof msg, "node %s failed: %zu nodes re-parented", node,
             n_out);
    store_event_add(cv->st, id, NULL, "reparent", msg, &err);
    log_info(COMPONENT, "cluster %s: %s", id, msg);
  }
  nodecall_run(calls, n_calls, &cv->opts);
  for (size_t k = 0; k < n_calls; k++) {
    char why[NODECALL_ERR_MAX + 256];
    if (calls[k].status != 200 && calls[k].status != 201)
      log_warn(COMPONENT, "cluster %s: pushing the new upstreams: %s", id,
               nodecall_describe(&calls[k], why, sizeof why));
  }
  nodecall_clear(calls, n_calls);
done:
  free(calls);
  free(out);
  row_vec_free(&rows);
}

static void
node_failed(struct converger *cv, const char *node, const char *reason)
{
  struct store_err err;
  char why[NODECALL_ERR_MAX + 300];
  snprintf(why, sizeof why, "node %s failed: %s", node, reason);
  log_warn(COMPONENT, "%s", why);
  store_node_mark_down(cv->st, node, &err);
  size_t n = 0;
  store_vm_set_state_on_node(cv->st, node,
                             STORE_MASK(STORE_VM_PENDING) |
                                 STORE_MASK(STORE_VM_VOLUME_READY) |
                                 STORE_MASK(STORE_VM_RUNNING),
                             STORE_VM_FAILED, why, &n, &err);
  struct id_vec ids = { 0 };
  store_cluster_list(cv->st,
                     STORE_MASK(STORE_CLUSTER_PENDING) |
                         STORE_MASK(STORE_CLUSTER_PROVISIONING) |
                         STORE_MASK(STORE_CLUSTER_RUNNING) |
                         STORE_MASK(STORE_CLUSTER_FAILED),
                     copy_cluster_id, &ids, &err);
  for (size_t i = 0; i < ids.n; i++)
    reparent(cv, ids.v[i], node);
  id_vec_free(&ids);
}

/* ---- detaching unused images ------------------------------------------------ */

struct due {
  char *node, *image, *version;
  int64_t idle_since;
};

struct due_vec {
  struct due v[DETACH_BATCH];
  size_t n;
};

static int
copy_due(const struct store_attachment *a, void *opaque)
{
  struct due_vec *dv = opaque;
  struct due *d = &dv->v[dv->n];
  d->node = strdup(a->node_id);
  d->image = strdup(a->image);
  d->version = strdup(a->version);
  d->idle_since = a->idle_since;
  if (d->node && d->image && d->version)
    dv->n++;
  else
    free(d->node), free(d->image), free(d->version);
  return dv->n == DETACH_BATCH;
}

/* Detaches the attachments idle for the grace period (see the top). */
static void
step_detach(struct converger *cv)
{
  int64_t t = clock_mono_ms();
  if (t - cv->detach_at < DETACH_EVERY_MS)
    return;
  cv->detach_at = t;
  struct store_err err;
  int64_t now = apiutil_now_ms();
  struct due_vec *dv = calloc(1, sizeof *dv);
  struct nodecall *calls = calloc(DETACH_BATCH, sizeof *calls);
  size_t n = 0;
  if (dv == NULL || calls == NULL)
    goto out;
  if (store_attachments_age(cv->st, now,
                            (int64_t)cv->cfg->detach_grace_s * 1000, copy_due,
                            dv, &err) != STORE_OK) {
    log_warn(COMPONENT, "%s", err.msg);
    goto out;
  }
  for (size_t i = 0; i < dv->n; i++) {
    /* A node that is down is detached when it is back (it re-attaches
     * its images itself when it restarts). */
    CLEANUP_FREE char *ctl = ready_control(cv, dv->v[i].node);
    CLEANUP_FREE char *path = NULL;
    if (ctl && asprintf(&path, "/v1/images/%s", dv->v[i].image) != -1 &&
        nodecall_set(&calls[n], dv->v[i].node, "DELETE", ctl, path, NULL, &dv->v[i]) == 0)
      n++;
  }
  nodecall_run(calls, n, &cv->opts);
  for (size_t k = 0; k < n; k++) {
    struct due *d = calls[k].user;
    char why[NODECALL_ERR_MAX + 256];
    long st = calls[k].status;
    if (st == 200 || st == 404) {
      if (store_attachment_forget(cv->st, d->node, d->image, d->version,
                                  &err) != STORE_OK)
        log_warn(COMPONENT, "%s", err.msg);
      for (size_t i = 0; i < cv->n_memos; i++)
        if (cv->memos[i]->image && strcmp(cv->memos[i]->image, d->image) == 0)
          memo_set_attached(cv->memos[i], d->node, false);
      log_info(COMPONENT, "node %s: image %s version %.16s detached: unused"
               " for %" PRId64 " s", d->node, d->image, d->version,
               (now - d->idle_since) / 1000);
      continue;
    }
    /* Refused (409: volumes of VMs use it there) or failing: the grace
     * period starts again rather than a call every second. */
    log_warn(COMPONENT, "node %s: detaching image %s: %s; again in %u s",
             d->node, d->image,
             nodecall_describe(&calls[k], why, sizeof why),
             cv->cfg->detach_grace_s);
    if (store_attachment_retry(cv->st, d->node, d->image, d->version, now,
                               &err) != STORE_OK)
      log_warn(COMPONENT, "%s", err.msg);
  }
out:
  nodecall_clear(calls, n);
  free(calls);
  for (size_t i = 0; dv && i < dv->n; i++)
    free(dv->v[i].node), free(dv->v[i].image), free(dv->v[i].version);
  free(dv);
}

/* ---- the loop -------------------------------------------------------------- */

static void
round_once(struct converger *cv)
{
  struct store_err err;
  struct id_vec down = { 0 };
  int64_t before = apiutil_now_ms() - (int64_t)cv->cfg->node_timeout_s * 1000;
  if (store_nodes_expire(cv->st, before, copy_id, &down, NULL, &err) != STORE_OK)
    log_warn(COMPONENT, "%s", err.msg);
  for (size_t i = 0; i < down.n; i++)
    node_failed(cv, down.v[i], "no heartbeat");
  id_vec_free(&down);

  struct id_vec ids = { 0 };
  if (store_cluster_list(cv->st, STORE_CLUSTER_UNFINISHED, copy_cluster_id, &ids,
                         &err) != STORE_OK) {
    log_warn(COMPONENT, "%s", err.msg);
    return;
  }
  for (size_t i = 0; i < cv->n_memos; i++)
    cv->memos[i]->seen = false;
  for (size_t i = 0; i < ids.n; i++) {
    pthread_mutex_lock(&cv->lock);
    bool stop = cv->stopping;
    pthread_mutex_unlock(&cv->lock);
    if (stop)
      break;
    CLEANUP_FREE struct store_cluster *c = store_cluster_get(cv->st, ids.v[i], &err);
    struct memo *m = c ? memo_get(cv, c->id) : NULL;
    if (m == NULL)
      continue;
    m->seen = true;
    if (m->image == NULL)
      m->image = strdup(c->image);
    int64_t t0 = clock_mono_ms();
    if (c->state == STORE_CLUSTER_DELETING)
      step_delete(cv, c, m);
    else
      step_provision(cv, c, m);
    metrics_step(c->state == STORE_CLUSTER_DELETING ? "delete" : "provision",
                 (double)(clock_mono_ms() - t0) / 1000);
  }
  id_vec_free(&ids);
  step_detach(cv);
}

static void *
run(void *arg)
{
  struct converger *cv = arg;
  log_info(COMPONENT, "resuming the unfinished clusters");
  for (;;) {
    round_once(cv);
    pthread_mutex_lock(&cv->lock);
    if (!cv->kicked && !cv->stopping) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += cv->cfg->poll_ms / 1000;
      ts.tv_nsec += (long)(cv->cfg->poll_ms % 1000) * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&cv->cond, &cv->lock, &ts);
    }
    cv->kicked = false;
    bool stop = cv->stopping;
    pthread_mutex_unlock(&cv->lock);
    if (stop)
      break;
  }
  return NULL;
}

struct converger *
converger_new(const struct api_config *cfg)
{
  struct converger *cv = calloc(1, sizeof *cv);
  if (cv == NULL)
    return NULL;
  cv->cfg = cfg;
  cv->opts = (struct nodecall_opts){
    .token = cfg->node_token ? cfg->node_token : cfg->token,
    .timeout_ms = cfg->push_timeout_ms,
    .retries = cfg->push_retries,
    .parallel = cfg->push_parallel,
    .tls = cfg->node_tls,
  };
  struct store_err err;
  cv->st = store_open(cfg->db, &err);
  if (cv->st == NULL) {
    log_error(COMPONENT, "%s", err.msg);
    free(cv);
    return NULL;
  }
  pthread_mutex_init(&cv->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&cv->cond, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&cv->thread, NULL, run, cv) != 0) {
    log_error(COMPONENT, "pthread_create failed");
    store_close(cv->st);
    free(cv);
    return NULL;
  }
  return cv;
}

void
converger_kick(struct converger *cv)
{
  if (cv == NULL)
    return;
  pthread_mutex_lock(&cv->lock);
  cv->kicked = true;
  pthread_cond_signal(&cv->cond);
  pthread_mutex_unlock(&cv->lock);
}

void
converger_free(struct converger *cv)
{
  if (cv == NULL)
    return;
  pthread_mutex_lock(&cv->lock);
  cv->stopping = true;
  pthread_cond_signal(&cv->cond);
  pthread_mutex_unlock(&cv->lock);
  pthread_join(cv->thread, NULL);
  for (size_t i = 0; i < cv->n_memos; i++)
    memo_free(cv->memos[i]);
  free(cv->memos);
  store_close(cv->st);
  pthread_mutex_destroy(&cv->lock);
  pthread_cond_destroy(&cv->cond);
  free(cv);
}
